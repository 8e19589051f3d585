//! WebSocket client: async-tungstenite over the connection from [`crate::io`].

use crate::io::{connect, with_timeout, Stream, Tls};
use ari_client::runtime::Target;
use ari_client::{TransportError, TransportErrorKind, TransportOptions, WsMessage};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_util::{Sink, Stream as FuturesStream};
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// A WebSocket connected by [`SmolRuntime`](crate::SmolRuntime): a `Stream` of incoming
/// [`WsMessage`]s and a `Sink` for outgoing ones. Pings are answered by the transport.
pub struct SmolWs {
    inner: WebSocketStream<Stream>,
}

impl fmt::Debug for SmolWs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolWs").finish_non_exhaustive()
    }
}

/// Opens a WebSocket: TCP, TLS for `wss`, then the upgrade, all within the connect timeout.
pub(crate) async fn ws_connect(
    tls: &Tls,
    req: http::Request<()>,
    opts: &TransportOptions,
) -> Result<SmolWs, TransportError> {
    let target = Target::from_uri(req.uri(), true)?;
    let request = upgrade_request(req)?;
    let max = opts.max_frame_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let open = async {
        let stream = connect(&target, tls).await?;
        let (inner, _response) =
            async_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| map_error(e, "the WebSocket upgrade failed"))?;
        Ok(SmolWs { inner })
    };
    with_timeout(opts.connect_timeout, "opening the WebSocket", open).await
}

/// The upgrade request: the standard WebSocket headers, then the caller's headers (which win).
fn upgrade_request(req: http::Request<()>) -> Result<http::Request<()>, TransportError> {
    let (parts, ()) = req.into_parts();
    let uri = with_ws_scheme(&parts.uri)?;
    let mut request = uri
        .into_client_request()
        .map_err(|_| TransportError::new(TransportErrorKind::Protocol, "invalid WebSocket URI"))?;
    for name in parts.headers.keys() {
        request.headers_mut().remove(name);
    }
    for (name, value) in &parts.headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    Ok(request)
}

/// The URI with `http`/`https` replaced by `ws`/`wss` (tungstenite wants the latter).
fn with_ws_scheme(uri: &http::Uri) -> Result<http::Uri, TransportError> {
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => "ws",
        Some("https") => "wss",
        _ => return Ok(uri.clone()),
    };
    let mut parts = uri.clone().into_parts();
    parts.scheme =
        Some(scheme.parse().map_err(|_| {
            TransportError::new(TransportErrorKind::Protocol, "invalid WebSocket URI")
        })?);
    http::Uri::from_parts(parts)
        .map_err(|_| TransportError::new(TransportErrorKind::Protocol, "invalid WebSocket URI"))
}

/// Maps a tungstenite error without echoing URIs or header values.
fn map_error(e: WsError, context: &str) -> TransportError {
    use TransportErrorKind as K;
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            TransportError::new(K::Closed, "the WebSocket is closed")
        }
        WsError::Io(e) => {
            let kind = match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe => K::Closed,
                _ => K::Io,
            };
            TransportError::new(kind, format!("{context}: {e}"))
        }
        WsError::Tls(e) => TransportError::new(K::Tls, format!("{context}: {e}")),
        WsError::Capacity(e) => TransportError::new(K::TooLarge, format!("{context}: {e}")),
        WsError::Protocol(e) => TransportError::new(K::Protocol, format!("{context}: {e}")),
        WsError::Utf8(_) => TransportError::new(K::Protocol, format!("{context}: invalid UTF-8")),
        WsError::AttackAttempt => {
            TransportError::new(K::Protocol, format!("{context}: attack attempt detected"))
        }
        WsError::Url(_) => TransportError::new(K::Protocol, "invalid WebSocket URI"),
        WsError::Http(resp) => {
            let status = resp.status();
            TransportError::rejected(
                status.as_u16(),
                format!("the server answered {status} instead of 101 Switching Protocols"),
            )
        }
        WsError::HttpFormat(_) => {
            TransportError::new(K::Protocol, format!("{context}: invalid HTTP"))
        }
        WsError::WriteBufferFull(_) => {
            TransportError::new(K::Io, format!("{context}: write buffer full"))
        }
    }
}

fn from_message(msg: Message) -> Option<WsMessage> {
    Some(match msg {
        Message::Text(t) => WsMessage::Text(t.as_str().to_owned()),
        Message::Binary(b) => WsMessage::Binary(b.to_vec()),
        Message::Ping(b) => WsMessage::Ping(b.to_vec()),
        Message::Pong(b) => WsMessage::Pong(b.to_vec()),
        Message::Close(_) => WsMessage::Close,
        Message::Frame(_) => return None,
    })
}

fn to_message(msg: WsMessage) -> Message {
    match msg {
        WsMessage::Text(t) => Message::text(t),
        WsMessage::Binary(b) => Message::binary(b),
        WsMessage::Ping(b) => Message::Ping(b.into()),
        WsMessage::Pong(b) => Message::Pong(b.into()),
        // WsMessage is non_exhaustive upstream; anything else closes.
        _ => Message::Close(None),
    }
}

impl FuturesStream for SmolWs {
    type Item = Result<WsMessage, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(msg)) => {
                    if let Some(msg) = from_message(msg) {
                        return Poll::Ready(Some(Ok(msg)));
                    }
                }
                Some(Err(WsError::ConnectionClosed)) => return Poll::Ready(None),
                Some(Err(e)) => {
                    return Poll::Ready(Some(Err(map_error(e, "reading the WebSocket failed"))))
                }
            }
        }
    }
}

impl Sink<WsMessage> for SmolWs {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(|e| map_error(e, "writing the WebSocket failed"))
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        Pin::new(&mut self.inner)
            .start_send(to_message(item))
            .map_err(|e| map_error(e, "writing the WebSocket failed"))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(|e| map_error(e, "writing the WebSocket failed"))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(|e| map_error(e, "closing the WebSocket failed"))
    }
}
