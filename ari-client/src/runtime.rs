//! What an adapter supplies: spawning, time, HTTP and WebSocket transport. Nothing else.
//!
//! `ari-tokio` implements [`Runtime`] with tokio + hyper, `ari-smol` with smol + async-io +
//! async-tungstenite; a custom transport (a proxy, WASM) implements it too and gets the whole
//! typed client.

use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// A WebSocket message as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsMessage {
    /// A text frame (every ARI event is one).
    Text(String),
    /// A binary frame (ARI sends none; ignored).
    Binary(Vec<u8>),
    /// A ping; the transport may answer it itself.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame.
    Close,
}

/// Options an adapter honours when it opens connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportOptions {
    /// Time allowed for TCP connect + TLS handshake (+ WebSocket upgrade).
    pub connect_timeout: Duration,
    /// Largest response body accepted (bytes); a larger one is [`TransportErrorKind::TooLarge`].
    pub max_body_bytes: usize,
    /// Largest WebSocket frame/message accepted (bytes).
    pub max_frame_bytes: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_secs(5),
            max_body_bytes: 16 * 1024 * 1024,
            max_frame_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What went wrong in the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Could not connect (refused, unreachable, DNS).
    Connect,
    /// TLS failed (e.g. untrusted certificate).
    Tls,
    /// The connection broke.
    Io,
    /// The peer violated HTTP or WebSocket.
    Protocol,
    /// A body or frame exceeded its limit.
    TooLarge,
    /// The WebSocket upgrade was refused (the status is in the message).
    Rejected,
    /// The connection is closed.
    Closed,
    /// A deadline passed.
    Timeout,
}

/// A transport error: kind plus a message for people. Never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// What happened.
    pub message: String,
    /// HTTP status, for a refused WebSocket upgrade.
    pub status: Option<u16>,
}

impl TransportError {
    /// A new error.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into(),
            status: None,
        }
    }

    /// A refused WebSocket upgrade with its status.
    pub fn rejected(status: u16, message: impl Into<String>) -> Self {
        TransportError {
            kind: TransportErrorKind::Rejected,
            message: message.into(),
            status: Some(status),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            TransportErrorKind::Connect => "could not connect",
            TransportErrorKind::Tls => "TLS failed",
            TransportErrorKind::Io => "connection error",
            TransportErrorKind::Protocol => "protocol error",
            TransportErrorKind::TooLarge => "message too large",
            TransportErrorKind::Rejected => "WebSocket upgrade refused",
            TransportErrorKind::Closed => "connection closed",
            TransportErrorKind::Timeout => "timed out",
        };
        write!(f, "{what}: {}", self.message)
    }
}

impl std::error::Error for TransportError {}

/// A connected WebSocket: a stream of incoming messages and a sink for outgoing ones.
pub trait WsConnection:
    futures_core::Stream<Item = Result<WsMessage, TransportError>>
    + futures_sink::Sink<WsMessage, Error = TransportError>
    + Send
    + Unpin
    + 'static
{
}

impl<T> WsConnection for T where
    T: futures_core::Stream<Item = Result<WsMessage, TransportError>>
        + futures_sink::Sink<WsMessage, Error = TransportError>
        + Send
        + Unpin
        + 'static
{
}

/// The runtime and transport an adapter supplies.
///
/// Requests come fully built from `ari-proto` (absolute URI, `Host`, `Authorization`); the
/// adapter sends them (HTTP/1.1, keep-alive, pooled), enforcing
/// [`TransportOptions::max_body_bytes`]. Timeouts of whole requests are applied by the client
/// with [`Runtime::sleep_until`], so an adapter needs no timeout logic beyond connect.
pub trait Runtime: Clone + Send + Sync + fmt::Debug + 'static {
    /// The WebSocket connection type.
    type Ws: WsConnection;

    /// Runs a future in the background.
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static;

    /// The current time.
    fn now(&self) -> Instant;

    /// Sends one HTTP request and reads the whole response body.
    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static;

    /// Opens a WebSocket with the given upgrade request (`ws://` or `wss://` URI, headers to
    /// send). A non-101 answer is [`TransportErrorKind::Rejected`] with its status.
    fn ws_connect(
        &self,
        req: http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static;
}

/// Where a transport connects, read from a request's absolute URI: host, port and whether TLS
/// is spoken. For adapters (connection pools key on it); printing it (`host:port`, an IPv6
/// host in brackets) never shows the path or the query of the URI, which may carry an
/// `api_key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Target {
    /// The host, without IPv6 brackets.
    pub host: String,
    /// The port: the URI's, or 80 (plain) / 443 (TLS).
    pub port: u16,
    /// Whether the scheme is `https` (or `wss`).
    pub tls: bool,
}

impl Target {
    /// Reads the target from an absolute URI: `http` is plain, `https` is TLS; with `ws` (a
    /// WebSocket upgrade) `ws` and `wss` are accepted as well. Schemes are case-insensitive.
    /// Anything else, or no host, is a [`TransportErrorKind::Protocol`] error.
    pub fn from_uri(uri: &http::Uri, ws: bool) -> Result<Target, TransportError> {
        let scheme = uri.scheme_str().unwrap_or("");
        let (tls, default_port) = match (ws, scheme.to_ascii_lowercase().as_str()) {
            (_, "http") | (true, "ws") => (false, 80),
            (_, "https") | (true, "wss") => (true, 443),
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    if ws {
                        "the WebSocket URI must be absolute with scheme ws or wss (or http, https)"
                    } else {
                        "the request URI must be absolute with scheme http or https"
                    },
                ))
            }
        };
        let host = uri.host().unwrap_or("");
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                "the request URI has no host",
            ));
        }
        Ok(Target {
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(default_port),
            tls,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str, ws: bool) -> Result<Target, TransportError> {
        Target::from_uri(&uri.parse().expect("uri"), ws)
    }

    #[test]
    fn targets_from_uris() {
        let t = target("http://127.0.0.1:8088/ari/x?api_key=u:p", false).expect("ok");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 8088, false));
        assert_eq!(t.to_string(), "127.0.0.1:8088");
        let t = target("https://pbx.example.com/ari", false).expect("ok");
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("pbx.example.com", 443, true)
        );
        let t = target("ws://[::1]:8088/ari/events", true).expect("ok");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 8088, false));
        assert_eq!(t.to_string(), "[::1]:8088");
        let t = target("WSS://h/ari/events", true).expect("ok");
        assert_eq!((t.port, t.tls), (443, true));
        let t = target("https://h/ari/events", true).expect("ok");
        assert_eq!((t.port, t.tls), (443, true));
        let t = target("http://h/", false).expect("ok");
        assert_eq!(t.port, 80);
        for (bad, ws) in [
            ("/ari/x", false),
            ("/ari/x", true),
            ("ftp://h/x", true),
            ("unix://h/x", false),
            ("ws://h/x", false),
        ] {
            let e = target(bad, ws).expect_err(bad);
            assert_eq!(e.kind, TransportErrorKind::Protocol);
        }
    }
}
