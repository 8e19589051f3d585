//! The runtime seam: what differs per runtime, and what is written once above it.
//!
//! A runtime is split in two:
//!
//! - an [`Executor`]: spawning tasks, timers, the monotonic clock and the wall clock (the
//!   only source of time in this crate);
//! - a [`Connector`]: byte streams (futures-io [`AsyncRead`] + [`AsyncWrite`]): outgoing TCP
//!   connections and, through [`Connector::bind`], a [`Listener`] accepting incoming ones.
//!
//! Everything above the bytes is written once, in [`crate::stack`]: TLS (rustls), the pooled
//! HTTP/1.1 client (hyper 1.x), the WebSocket client and server handshakes
//! (async-tungstenite). [`Stack`](crate::stack::Stack) joins an executor and a connector
//! into a [`Runtime`]; `ari-tokio` and `ari-smol` supply only the two halves.
//!
//! A transport that is not made of byte streams (a message bus, a browser's `fetch`)
//! implements the message-level [`Transport`] instead ("send this request, get the
//! response" and "open the events WebSocket") and pairs it with an executor in a
//! [`CustomRuntime`].

use bytes::Bytes;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use futures_io::{AsyncRead, AsyncWrite};
/// UTF-8 text backed by [`Bytes`]: the payload of [`WsMessage::Text`], handed from the socket
/// to the session without a copy. `From<String>`, `From<&'static str>` and
/// `TryFrom<Bytes>` (which checks the encoding) build one.
pub use tungstenite::Utf8Bytes;

/// A WebSocket message as the client sees it. Payloads are reference-counted buffers: a
/// frame read from the socket reaches the event parser without being copied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsMessage {
    /// A text frame (every ARI event is one).
    Text(Utf8Bytes),
    /// A binary frame (ARI sends none; ignored by the events connection).
    Binary(Bytes),
    /// A ping. The WebSocket layer answers it itself.
    Ping(Bytes),
    /// A pong. Only ever received: the WebSocket layer sends a pong solely in answer to a
    /// ping (an unsolicited pong crashes some Asterisk releases), so sending one is an error.
    Pong(Bytes),
    /// A close frame, with its status code and reason (`None`: a close frame without a
    /// status, or one sent without).
    Close(Option<WsClose>),
}

/// The status code and reason of a WebSocket close frame (RFC 6455 section 7.4): 1000 a
/// normal end, 1001 going away, 1009 a message too big, … Asterisk closes a media
/// socket with 1000 at hangup and 1009 for a frame over 65,535 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClose {
    /// The status code.
    pub code: u16,
    /// The reason (often empty).
    pub reason: Utf8Bytes,
}

impl WsClose {
    /// A close frame with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<Utf8Bytes>) -> WsClose {
        WsClose {
            code,
            reason: reason.into(),
        }
    }
}

/// Options a transport honours when it opens connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportOptions {
    /// Time allowed for TCP connect + TLS handshake (+ WebSocket upgrade).
    pub connect_timeout: Duration,
    /// Largest response body accepted (bytes); a larger one is [`TransportErrorKind::TooLarge`].
    pub max_body_bytes: usize,
    /// Largest WebSocket frame/message accepted (bytes).
    pub max_frame_bytes: usize,
    /// Most bytes a WebSocket reads from the socket at once (default 128 KiB). The WebSocket
    /// layer zero-fills this much of its buffer before every read, so a socket of small,
    /// frequent messages (media: a 20 ms frame is 160–1,920 bytes) wants a small one; a
    /// message larger than this still arrives whole.
    pub ws_read_buffer_bytes: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_secs(5),
            max_body_bytes: 16 * 1024 * 1024,
            max_frame_bytes: 4 * 1024 * 1024,
            ws_read_buffer_bytes: 128 * 1024,
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
    /// This build cannot do what was asked (e.g. an `https://` URL in a build without TLS:
    /// enable the adapter's `rustls-ring` or `rustls-aws-lc` feature).
    Unsupported,
}

/// A transport error: kind plus a message for people, and the underlying error as
/// [`source`](StdError::source). Never contains credentials.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// What happened.
    pub message: String,
    /// HTTP status, for a refused WebSocket upgrade.
    pub status: Option<u16>,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl PartialEq for TransportError {
    /// Kind, message and status (the sources are not compared).
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message && self.status == other.status
    }
}

impl Eq for TransportError {}

impl TransportError {
    /// A new error.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into(),
            status: None,
            source: None,
        }
    }

    /// A refused WebSocket upgrade with its status.
    pub fn rejected(status: u16, message: impl Into<String>) -> Self {
        TransportError {
            status: Some(status),
            ..TransportError::new(TransportErrorKind::Rejected, message)
        }
    }

    /// The same error with `source` as its cause (returned by [`StdError::source`]).
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
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
            TransportErrorKind::Unsupported => "not supported by this build",
        };
        write!(f, "{what}: {}", self.message)
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

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

/// Tasks and time: what the client needs from an async runtime besides sockets.
///
/// The client reads the time only through this trait (`Instant::now` and `SystemTime::now`
/// are disallowed elsewhere in this crate), so an executor for a target without a system
/// clock (WASM in a browser) or a test executor with a virtual clock supplies both.
pub trait Executor: Clone + Send + Sync + fmt::Debug + 'static {
    /// Runs a future in the background (detached).
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static;

    /// Completes at `deadline` (at once if it has passed, never before it by
    /// [`now`](Executor::now)), as soon after it as the executor can: the timer for the few
    /// deadlines whose lateness is heard, the [`MediaPacer`](crate::media::MediaPacer)'s ticks
    /// (a frame every 20 ms to each of up to thousands of sessions, sent 1 ms apart).
    ///
    /// The default is [`sleep_until`](Executor::sleep_until). An executor whose timers round
    /// deadlines to a coarse grid implements it with a finer timer: `ari-tokio`'s does (tokio's
    /// timer wheel has 1 ms ticks and wakes up to 2 ms after a deadline); `ari-smol`'s
    /// `sleep_until` is precise already. A wrapping executor forwards it.
    fn sleep_until_precise(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.sleep_until(deadline)
    }

    /// The current time of the clock [`sleep_until`](Executor::sleep_until) uses.
    fn now(&self) -> Instant;

    /// The wall-clock time (for timestamps people read).
    fn wall_clock(&self) -> SystemTime;
}

/// Byte streams: outgoing TCP connections and a listener for incoming ones.
///
/// TLS, HTTP and WebSocket are layered on these streams by [`crate::stack`]; a connector
/// moves bytes only. Connections should have `TCP_NODELAY` set (requests and responses are
/// small).
pub trait Connector: Clone + Send + Sync + fmt::Debug + 'static {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound TCP listener.
    type Listener: Listener<Stream = Self::Stream>;

    /// Connects to `host` (a name or an IP address, without brackets) and `port`.
    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static;

    /// Binds a listener to `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
    ///
    /// Accepting is how Asterisk reaches an application (an outbound WebSocket, a media
    /// connection): bind, then loop on [`Listener::accept`], spawning a task per connection
    /// that runs `stack::tls_accept` (for TLS, with the `rustls` feature) and
    /// [`accept_websocket`](crate::stack::accept_websocket) (for a WebSocket) on the stream:
    ///
    /// ```no_run
    /// # async fn demo<E: ari_client::runtime::Executor, C: ari_client::runtime::Connector>(
    /// #     executor: E, connector: C,
    /// # ) -> std::io::Result<()> {
    /// use ari_client::runtime::{Connector, Executor, Listener, TransportOptions};
    /// use futures_util::StreamExt;
    ///
    /// let listener = connector.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// println!("listening on {}", listener.local_addr()?);
    /// loop {
    ///     let (stream, peer) = listener.accept().await?;
    ///     executor.spawn(async move {
    ///         let accepted = ari_client::stack::accept_websocket(
    ///             stream,
    ///             &TransportOptions::default(),
    ///             |_request| Ok(http::HeaderMap::new()),
    ///         )
    ///         .await;
    ///         if let Ok((mut ws, request)) = accepted {
    ///             println!("{peer} opened {}", request.uri());
    ///             while let Some(Ok(message)) = ws.next().await {
    ///                 println!("{message:?}");
    ///             }
    ///         }
    ///     });
    /// }
    /// # }
    /// ```
    fn bind(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send + 'static;

    /// Called by the HTTP pool on a kept-alive connection's stream before it carries another
    /// request. A stream that skips reads it expects to fail (one that remembers the socket
    /// had no data, saving a system call) must try the socket at its next read: the pool
    /// relies on that read to see a close by the server while the connection sat idle before
    /// writing the request (a request never written is retried on another connection; one
    /// written is not). The default does nothing: a stream that always tries the socket, or
    /// whose readiness comes from a reactor that already saw the close, needs nothing.
    fn before_reuse(stream: &mut Self::Stream) {
        let _ = stream;
    }
}

/// A bound TCP listener (see [`Connector::bind`]).
pub trait Listener: Send + Sync + fmt::Debug + 'static {
    /// An accepted TCP stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection; returns it with the peer's address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_;

    /// The address the listener is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The message-level transport: HTTP exchanges and the events WebSocket.
///
/// [`Stack`](crate::stack::Stack) implements it for any [`Connector`]. Implement it yourself
/// for a transport that is not made of byte streams, and pair it with an [`Executor`] in a
/// [`CustomRuntime`].
///
/// Requests come fully built from `ari-proto` (absolute URI, `Host`, `Authorization`); the
/// transport sends them (HTTP/1.1 semantics), enforcing [`TransportOptions::max_body_bytes`].
/// Timeouts of whole requests are applied by the client with [`Executor::sleep_until`] (the
/// future is dropped when they pass), so a transport needs no timeout logic beyond connect.
pub trait Transport: Clone + Send + Sync + fmt::Debug + 'static {
    /// The WebSocket connection type.
    type Ws: WsConnection;

    /// Sends one HTTP request and reads the whole response body.
    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static;

    /// Opens a WebSocket with the given upgrade request (`ws://` or `wss://` URI, or `http`,
    /// `https`; headers to send). A non-101 answer is [`TransportErrorKind::Rejected`] with
    /// its status.
    fn ws_connect(
        &self,
        req: http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static;
}

/// What the client runs on: an [`Executor`] and a [`Transport`]. Implemented for every type
/// that is both: [`Stack`](crate::stack::Stack) (executor + connector, what `ari-tokio` and
/// `ari-smol` use) and [`CustomRuntime`] (executor + your own transport).
pub trait Runtime: Executor + Transport {}

impl<T: Executor + Transport> Runtime for T {}

/// An [`Executor`] paired with a custom [`Transport`]: a [`Runtime`] for a transport that is
/// not made of byte streams.
///
/// ```
/// # fn demo<E: ari_client::runtime::Executor, T: ari_client::runtime::Transport>(executor: E, transport: T) {
/// use ari_client::runtime::CustomRuntime;
///
/// let runtime = CustomRuntime::new(executor, transport);
/// let client = ari_client::Client::builder_with_runtime("http://pbx:8088", "user", "secret", runtime);
/// # let _ = client;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CustomRuntime<E, T> {
    executor: E,
    transport: T,
}

impl<E: Executor, T: Transport> CustomRuntime<E, T> {
    /// Pairs `executor` with `transport`.
    pub fn new(executor: E, transport: T) -> Self {
        CustomRuntime {
            executor,
            transport,
        }
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }
}

impl<E: Executor, T: Transport> Executor for CustomRuntime<E, T> {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.executor.spawn(fut);
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.executor.sleep_until(deadline)
    }

    fn sleep_until_precise(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.executor.sleep_until_precise(deadline)
    }

    fn now(&self) -> Instant {
        self.executor.now()
    }

    fn wall_clock(&self) -> SystemTime {
        self.executor.wall_clock()
    }
}

impl<E: Executor, T: Transport> Transport for CustomRuntime<E, T> {
    type Ws = T::Ws;

    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        self.transport.http(req, opts)
    }

    fn ws_connect(
        &self,
        req: http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        self.transport.ws_connect(req, opts)
    }
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
        let is = |name: &str| scheme.eq_ignore_ascii_case(name);
        let (tls, default_port) = if is("http") || (ws && is("ws")) {
            (false, 80)
        } else if is("https") || (ws && is("wss")) {
            (true, 443)
        } else {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                if ws {
                    "the WebSocket URI must be absolute with scheme ws or wss (or http, https)"
                } else {
                    "the request URI must be absolute with scheme http or https"
                },
            ));
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
