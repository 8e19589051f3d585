//! WebSockets on async-tungstenite over the connector's streams: the client handshake, the
//! server handshake for accepted connections, and the message type the client reads.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_sink::Sink;
use http::{HeaderMap, Request, StatusCode, Uri};

use super::io::{connect, with_timeout, MaybeTlsStream};
use super::Stack;
use crate::runtime::{
    Connector, Executor, Target, TransportError, TransportErrorKind, TransportOptions, WsClose,
    WsMessage,
};

/// A WebSocket over a byte stream: a [`Stream`] of [`WsMessage`]s and a [`Sink`] for them.
///
/// Pings are answered by the WebSocket layer (and also yielded). A pong is sent only in
/// answer to a ping: sending [`WsMessage::Pong`] is refused with
/// [`TransportErrorKind::Protocol`], since an unsolicited pong crashes some Asterisk
/// releases (20.21, 22.11, 23.5). After the first error the stream ends (`None`).
pub struct WebSocket<S> {
    inner: WebSocketStream<S>,
    done: bool,
}

impl<S> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

fn config(opts: &TransportOptions) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(opts.max_frame_bytes))
        .max_message_size(Some(opts.max_frame_bytes))
        .read_buffer_size(opts.ws_read_buffer_bytes.max(1024))
}

/// Opens a WebSocket: TCP, TLS for `wss`, then the upgrade, all within the connect timeout.
pub(crate) async fn ws_connect<E: Executor, C: Connector>(
    stack: Stack<E, C>,
    req: Request<()>,
    opts: TransportOptions,
) -> Result<WebSocket<MaybeTlsStream<C::Stream>>, TransportError> {
    let target = Target::from_uri(req.uri(), true)?;
    let request = upgrade_request(req, &target)?;
    let open = async {
        let stream = connect(&stack.connector, &stack.inner.tls, &target).await?;
        handshake(stream, request, &target, &opts).await
    };
    let what = || format!("opening the WebSocket to {target}");
    with_timeout(&stack.executor, opts.connect_timeout, what, open).await
}

/// The client side of a WebSocket on a stream opened by the caller (plain TCP, or TLS over
/// it): sends the upgrade request for `req` and checks the server's answer (`101 Switching
/// Protocols` with `Upgrade: websocket`, `Connection: Upgrade` and the `Sec-WebSocket-Accept`
/// matching the key sent). `req`'s URI must be absolute (`ws://`, `wss://`, `http://` or
/// `https://`, with a host); its headers are sent as they are and win over the standard
/// ones (a `Sec-WebSocket-Key` of the caller's included). A refusal (any other status) fails
/// with [`TransportErrorKind::Rejected`] and the status in [`TransportError::status`]; errors
/// never show header values. Frames are
/// limited to [`TransportOptions::max_frame_bytes`]; the handshake has no timeout (wrap it in
/// one of your executor's).
///
/// [`Transport::ws_connect`](crate::runtime::Transport::ws_connect) of a [`Stack`] is this
/// function over a stream of its connector, within the connect timeout.
pub async fn connect_websocket<S>(
    stream: S,
    req: Request<()>,
    opts: &TransportOptions,
) -> Result<WebSocket<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = Target::from_uri(req.uri(), true)?;
    let request = upgrade_request(req, &target)?;
    handshake(stream, request, &target, opts).await
}

/// The client handshake of a prepared upgrade request.
async fn handshake<S>(
    stream: S,
    request: Request<()>,
    target: &Target,
    opts: &TransportOptions,
) -> Result<WebSocket<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (inner, _response) =
        async_tungstenite::client_async_with_config(request, stream, Some(config(opts)))
            .await
            .map_err(|e| handshake_error(target, e))?;
    tracing::trace!(%target, "WebSocket connected");
    Ok(WebSocket { inner, done: false })
}

/// The upgrade request: the standard WebSocket headers, then the caller's headers (which
/// win), with a `ws`/`wss` scheme.
fn upgrade_request(req: Request<()>, target: &Target) -> Result<Request<()>, TransportError> {
    let invalid = || TransportError::new(TransportErrorKind::Protocol, "invalid WebSocket URI");
    let (parts, ()) = req.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(
        if target.tls { "wss" } else { "ws" }
            .parse()
            .map_err(|_| invalid())?,
    );
    let uri = Uri::from_parts(uri).map_err(|_| invalid())?;
    let mut request = uri.into_client_request().map_err(|_| invalid())?;
    for name in parts.headers.keys() {
        request.headers_mut().remove(name);
    }
    for (name, value) in &parts.headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    Ok(request)
}

/// The server side of a WebSocket on an accepted stream (plain, or after
/// `tls_accept`, feature `rustls`): reads the upgrade request, asks `check` whether to
/// accept it, answers `101 Switching Protocols` (with the headers `check` returned, e.g. a
/// `Sec-WebSocket-Protocol`) or the status `check` returned, and hands back the WebSocket with
/// the request (path, query, headers). Frames are limited to
/// [`TransportOptions::max_frame_bytes`]; the handshake itself has no timeout (wrap it in one
/// of your executor's).
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
pub async fn accept_websocket<S, F>(
    stream: S,
    opts: &TransportOptions,
    check: F,
) -> Result<(WebSocket<S>, Request<()>), TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request<()>) -> Result<HeaderMap, StatusCode> + Unpin,
{
    let mut seen = None;
    let callback = |req: &WsRequest, mut resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        let mut copy = Request::new(());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.headers_mut() = req.headers().clone();
        let verdict = check(&copy);
        seen = Some(copy);
        match verdict {
            Ok(headers) => {
                resp.headers_mut().extend(headers);
                Ok(resp)
            }
            Err(status) => {
                let mut refusal = ErrorResponse::new(None);
                *refusal.status_mut() = status;
                Err(refusal)
            }
        }
    };
    let inner =
        async_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config(opts)))
            .await
            .map_err(|e| {
                message_error(e).context("the WebSocket handshake with a client failed")
            })?;
    let request = seen.unwrap_or_else(|| Request::new(()));
    Ok((WebSocket { inner, done: false }, request))
}

impl<S> WebSocket<S> {
    /// Wraps a WebSocket that async-tungstenite already opened.
    pub fn from_tungstenite(inner: WebSocketStream<S>) -> Self {
        WebSocket { inner, done: false }
    }
}

/// An error of the opening handshake. Never shows header values or the URI.
fn handshake_error(target: &Target, e: WsError) -> TransportError {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            TransportError::rejected(
                status.as_u16(),
                format!(
                    "{target} answered HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
                .trim_end()
                .to_owned(),
            )
        }
        other => message_error(other).context(&format!("WebSocket upgrade with {target}")),
    }
}

impl TransportError {
    fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// Maps a tungstenite error to a transport error. tungstenite's UTF-8 and HTTP-format
/// messages may quote a header value: they are never shown (nor kept as the source).
fn message_error(e: WsError) -> TransportError {
    use TransportErrorKind as K;
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            TransportError::new(K::Closed, e.to_string())
        }
        WsError::Io(io) => {
            let kind = match io.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe => K::Closed,
                _ => K::Io,
            };
            TransportError::new(kind, io.to_string()).with_source(io)
        }
        WsError::Capacity(c) => TransportError::new(K::TooLarge, c.to_string()).with_source(c),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            TransportError::new(K::Closed, "connection reset without closing handshake")
        }
        WsError::Protocol(p) => TransportError::new(K::Protocol, p.to_string()).with_source(p),
        WsError::WriteBufferFull(_) => TransportError::new(K::Io, "write buffer is full"),
        WsError::Utf8(_) => {
            TransportError::new(K::Protocol, "invalid UTF-8 (in a frame or a header)")
        }
        WsError::AttackAttempt => TransportError::new(K::Protocol, e.to_string()),
        WsError::Url(u) => TransportError::new(K::Protocol, format!("URL error: {u}")),
        WsError::Http(r) => TransportError::rejected(
            r.status().as_u16(),
            format!("unexpected HTTP response {}", r.status().as_u16()),
        ),
        WsError::HttpFormat(_) => {
            TransportError::new(K::Protocol, "invalid HTTP request or response")
        }
        _ => TransportError::new(K::Io, "WebSocket error"),
    }
}

fn to_tungstenite(msg: WsMessage) -> Result<Message, TransportError> {
    Ok(match msg {
        WsMessage::Text(s) => Message::Text(s),
        WsMessage::Binary(b) => Message::Binary(b),
        WsMessage::Ping(b) => Message::Ping(b),
        WsMessage::Close(None) => Message::Close(None),
        WsMessage::Close(Some(c)) => {
            Message::Close(Some(async_tungstenite::tungstenite::protocol::CloseFrame {
                code: c.code.into(),
                reason: c.reason,
            }))
        }
        WsMessage::Pong(_) => {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                "a pong is sent only in answer to a ping (by the WebSocket layer): an \
                 unsolicited pong crashes some Asterisk releases",
            ))
        }
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<WsMessage, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let msg = match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None | Some(Err(WsError::ConnectionClosed)) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(message_error(e))));
                }
                Some(Ok(m)) => m,
            };
            let out = match msg {
                Message::Text(t) => WsMessage::Text(t),
                Message::Binary(b) => WsMessage::Binary(b),
                Message::Ping(b) => WsMessage::Ping(b),
                Message::Pong(b) => WsMessage::Pong(b),
                Message::Close(frame) => WsMessage::Close(frame.map(|f| WsClose {
                    code: f.code.into(),
                    reason: f.reason,
                })),
                Message::Frame(_) => continue, // only produced when writing raw frames
            };
            return Poll::Ready(Some(Ok(out)));
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<WsMessage> for WebSocket<S> {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(message_error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        let msg = to_tungstenite(item)?;
        Pin::new(&mut self.inner)
            .start_send(msg)
            .map_err(message_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(message_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match Pin::new(&mut self.inner).poll_close(cx) {
            Poll::Ready(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                Poll::Ready(Ok(()))
            }
            other => other.map_err(message_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HOST, SEC_WEBSOCKET_KEY};

    #[test]
    fn upgrade_requests_keep_the_callers_headers_and_get_a_ws_scheme() {
        let req = Request::get("https://h:8089/ari/events?app=a")
            .header("authorization", "Basic x")
            .header("host", "other:1")
            .body(())
            .expect("request");
        let target = Target::from_uri(req.uri(), true).expect("target");
        let req = upgrade_request(req, &target).expect("prepared");
        assert_eq!(req.uri().to_string(), "wss://h:8089/ari/events?app=a");
        let h = req.headers();
        assert_eq!(h.get_all(HOST).iter().count(), 1);
        assert_eq!(h[HOST], "other:1");
        assert_eq!(h["authorization"], "Basic x");
        assert_eq!(h[SEC_WEBSOCKET_KEY].len(), 24);
    }

    #[test]
    fn utf8_errors_never_show_their_text() {
        let e = message_error(WsError::Utf8(
            "header 'authorization' value: Basic c2VjcmV0".into(),
        ));
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        assert!(!e.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn close_frames_keep_their_code_and_reason() {
        let sent =
            to_tungstenite(WsMessage::Close(Some(WsClose::new(1009, "too big")))).expect("a close");
        let Message::Close(Some(frame)) = sent else {
            panic!("{sent:?}")
        };
        assert_eq!(u16::from(frame.code), 1009);
        assert_eq!(frame.reason.as_str(), "too big");
        assert!(matches!(
            to_tungstenite(WsMessage::Close(None)),
            Ok(Message::Close(None))
        ));
    }

    #[test]
    fn pongs_are_never_sent_unsolicited() {
        let e =
            to_tungstenite(WsMessage::Pong(bytes::Bytes::from_static(b"x"))).expect_err("refused");
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        assert!(matches!(
            to_tungstenite(WsMessage::Ping(bytes::Bytes::new())),
            Ok(Message::Ping(_))
        ));
    }
}
