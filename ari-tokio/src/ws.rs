//! The WebSocket over tokio-tungstenite, on the same TCP/TLS connections as HTTP.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ari_client::{TransportError, TransportErrorKind, TransportOptions, WsMessage};
use futures_core::Stream;
use futures_sink::Sink;
use http::header::{CONNECTION, HOST, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderValue, Request, Uri};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::adapter::Shared;
use crate::net::{self, MaybeTls};
use ari_client::runtime::Target;

/// A connected ARI WebSocket: a [`Stream`] of [`WsMessage`]s and a [`Sink`] for them.
///
/// Pings from the server are answered automatically (and also yielded). After the first error
/// the stream ends (`None`).
pub struct TokioWs {
    inner: WebSocketStream<MaybeTls>,
    done: bool,
}

impl fmt::Debug for TokioWs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioWs")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Opens the WebSocket: TCP (+ TLS) and the upgrade, all within `opts.connect_timeout`.
pub(crate) async fn connect(
    shared: Arc<Shared>,
    req: Request<()>,
    opts: TransportOptions,
) -> Result<TokioWs, TransportError> {
    let target = Target::from_uri(req.uri(), true)?;
    let req = prepare(req, &target)?;
    let config = WebSocketConfig::default()
        .max_frame_size(Some(opts.max_frame_bytes))
        .max_message_size(Some(opts.max_frame_bytes));
    let connecting = async {
        let io = net::connect(&target, &shared.tls).await?;
        tokio_tungstenite::client_async_with_config(req, io, Some(config))
            .await
            .map_err(|e| handshake_error(&target, e))
    };
    match tokio::time::timeout(opts.connect_timeout, connecting).await {
        Ok(Ok((inner, _response))) => {
            tracing::trace!(%target, "WebSocket connected");
            Ok(TokioWs { inner, done: false })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(net::connect_timeout_error(&target, opts.connect_timeout)),
    }
}

/// Fills in the headers of the upgrade that the caller did not set, and a `ws`/`wss` scheme.
fn prepare(req: Request<()>, target: &Target) -> Result<Request<()>, TransportError> {
    let (mut parts, ()) = req.into_parts();
    let scheme = if target.tls { "wss" } else { "ws" };
    if parts.uri.scheme_str() != Some(scheme) {
        let mut uri = parts.uri.clone().into_parts();
        uri.scheme = scheme.parse().ok();
        parts.uri = Uri::from_parts(uri).map_err(|_| {
            TransportError::new(TransportErrorKind::Protocol, "invalid WebSocket URI")
        })?;
    }
    let h = &mut parts.headers;
    if !h.contains_key(HOST) {
        if let Some(v) = net::host_header(&parts.uri) {
            h.insert(HOST, v);
        }
    }
    h.entry(CONNECTION)
        .or_insert(HeaderValue::from_static("Upgrade"));
    h.entry(UPGRADE)
        .or_insert(HeaderValue::from_static("websocket"));
    h.entry(SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
    if !h.contains_key(SEC_WEBSOCKET_KEY) {
        if let Ok(v) = HeaderValue::from_str(&generate_key()) {
            h.insert(SEC_WEBSOCKET_KEY, v);
        }
    }
    Ok(Request::from_parts(parts, ()))
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
        other => {
            let mut err = message_error(other);
            err.message = format!("WebSocket upgrade with {target}: {}", err.message);
            err
        }
    }
}

/// Maps a tungstenite error to a transport error.
fn message_error(e: WsError) -> TransportError {
    use TransportErrorKind as K;
    let (kind, message) = match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => (K::Closed, e.to_string()),
        WsError::Io(io) => (K::Io, io.to_string()),
        WsError::Capacity(c) => (K::TooLarge, c.to_string()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => (
            K::Io,
            "connection reset without closing handshake".to_owned(),
        ),
        WsError::Protocol(p) => (K::Protocol, p.to_string()),
        WsError::WriteBufferFull(_) => (K::Io, "write buffer is full".to_owned()),
        // tungstenite's UTF-8 messages may quote a header value: never show them.
        WsError::Utf8(_) => (
            K::Protocol,
            "invalid UTF-8 (in a frame or a header)".to_owned(),
        ),
        WsError::AttackAttempt => (K::Protocol, e.to_string()),
        WsError::Url(u) => (K::Protocol, format!("URL error: {u}")),
        WsError::Http(r) => (
            K::Protocol,
            format!("unexpected HTTP response {}", r.status().as_u16()),
        ),
        WsError::HttpFormat(_) => (K::Protocol, "invalid HTTP request or response".to_owned()),
        _ => (K::Io, "WebSocket error".to_owned()),
    };
    TransportError::new(kind, message)
}

fn to_tungstenite(msg: WsMessage) -> Result<Message, TransportError> {
    Ok(match msg {
        WsMessage::Text(s) => Message::Text(s.into()),
        WsMessage::Binary(b) => Message::Binary(b.into()),
        WsMessage::Ping(b) => Message::Ping(b.into()),
        WsMessage::Pong(b) => Message::Pong(b.into()),
        WsMessage::Close => Message::Close(None),
        _ => {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                "this WebSocket message kind is not supported by ari-tokio",
            ))
        }
    })
}

impl Stream for TokioWs {
    type Item = Result<WsMessage, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let item = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            let msg = match item {
                None => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(WsError::ConnectionClosed)) => {
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
                Message::Text(t) => WsMessage::Text(t.as_str().to_owned()),
                Message::Binary(b) => WsMessage::Binary(b.to_vec()),
                Message::Ping(b) => WsMessage::Ping(b.to_vec()),
                Message::Pong(b) => WsMessage::Pong(b.to_vec()),
                Message::Close(_) => WsMessage::Close,
                Message::Frame(_) => continue, // only produced when writing raw frames
            };
            return Poll::Ready(Some(Ok(out)));
        }
    }
}

impl Sink<WsMessage> for TokioWs {
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

    #[test]
    fn prepare_fills_in_missing_upgrade_headers_and_scheme() {
        let req = Request::get("https://h:8089/ari/events?app=a")
            .header("authorization", "Basic x")
            .body(())
            .expect("request");
        let target = Target::from_uri(req.uri(), true).expect("target");
        let req = prepare(req, &target).expect("prepared");
        assert_eq!(req.uri().to_string(), "wss://h:8089/ari/events?app=a");
        let h = req.headers();
        assert_eq!(h[HOST], "h:8089");
        assert_eq!(h[CONNECTION], "Upgrade");
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(h[SEC_WEBSOCKET_KEY].len(), 24);
        assert_eq!(h["authorization"], "Basic x");
    }

    #[test]
    fn prepare_keeps_the_callers_headers() {
        let req = Request::get("ws://h/ari/events")
            .header("host", "other:1")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("connection", "Upgrade")
            .body(())
            .expect("request");
        let target = Target::from_uri(req.uri(), true).expect("target");
        let req = prepare(req, &target).expect("prepared");
        let h = req.headers();
        assert_eq!(h.get_all(HOST).iter().count(), 1);
        assert_eq!(h[HOST], "other:1");
        assert_eq!(h[SEC_WEBSOCKET_KEY], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(h.get_all(CONNECTION).iter().count(), 1);
    }

    #[test]
    fn utf8_errors_never_show_their_text() {
        let e = message_error(WsError::Utf8(
            "header 'authorization' value: Basic c2VjcmV0".into(),
        ));
        assert_eq!(e.kind, TransportErrorKind::Protocol);
        assert!(!e.to_string().contains("c2VjcmV0"));
    }
}
