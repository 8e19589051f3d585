//! Everything above the bytes, written once for every runtime: TLS (rustls), the pooled
//! HTTP/1.1 client (hyper 1.x), WebSockets (async-tungstenite), over the streams of a
//! [`Connector`].
//!
//! [`Stack`] joins an [`Executor`] and a [`Connector`] into a [`Runtime`](crate::Runtime):
//! `ari_tokio::TokioRuntime` is `Stack<TokioExecutor, TokioConnector>`, `ari_smol::SmolRuntime`
//! is `Stack<SmolExecutor, SmolConnector>`; a runtime of your own needs only the two halves.
//!
//! # The connection pool
//!
//! One keep-alive pool per [`Stack`] (clones share it), per target (scheme, host, port):
//!
//! - **A cap on connections** ([`StackBuilder::pool_max_connections_per_host`], default
//!   [`DEFAULT_MAX_CONNECTIONS_PER_HOST`] = 32). Asterisk's HTTP server accepts at most
//!   `sessionlimit` sessions (100 by default, `http.conf`) *for all its clients together*
//!   (other applications, the events WebSockets, AMI over HTTP, monitoring) and refuses the
//!   rest, so a client that opens a connection per request in flight fails under load. 32
//!   keeps room for two more such clients; at a few milliseconds per request it still carries
//!   thousands of requests per second.
//! - **Requests beyond the cap wait** in a first-come queue for a connection to be handed
//!   back; never a new connection. The wait counts against the request timeout
//!   ([`ClientBuilder::request_timeout`](crate::ClientBuilder::request_timeout)).
//! - **Idle connections are kept up to the cap** (default; see
//!   [`StackBuilder::pool_max_idle_per_host`]) for [`StackBuilder::pool_idle_timeout`]
//!   (default 10 s, under Asterisk's `session_keep_alive` of 15 s), so a burst after a burst
//!   opens no new connection.
//! - **Only requests never written are retried**: a reused connection the server closed
//!   meanwhile. A response with ambiguous framing (`Transfer-Encoding` and `Content-Length`),
//!   an unread body or a cancelled request closes its connection.
//!
//! # Accepting connections
//!
//! [`Connector::bind`] gives a listener; `tls_accept` (feature `rustls`) and [`accept_websocket`] turn an
//! accepted stream into a TLS stream and a [`WebSocket`] (see [`Connector::bind`] for an
//! example).

mod http;
mod io;
mod ws;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use self::http::{Pool, PoolSettings};
#[cfg(feature = "rustls")]
pub use self::io::tls_accept;
pub use self::io::MaybeTlsStream;
use self::io::TlsClient;
pub use self::ws::{accept_websocket, connect_websocket, WebSocket};
use crate::runtime::{Connector, Executor, Transport, TransportError, TransportOptions};
#[cfg(feature = "rustls")]
use crate::tls::TlsSettings;
use crate::tls::TlsSetupError;

/// The default cap on connections per host (see [the pool](self#the-connection-pool)).
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 32;

/// The default time an idle connection may be reused.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// An [`Executor`] and a [`Connector`] with the HTTP, WebSocket and TLS layers on top: a
/// [`Runtime`](crate::Runtime). Cheap to clone; clones share the connection pool.
pub struct Stack<E, C> {
    executor: E,
    connector: C,
    inner: Arc<Inner>,
}

struct Inner {
    tls: TlsClient,
    pool: Arc<Pool>,
}

impl<E: Clone, C: Clone> Clone for Stack<E, C> {
    fn clone(&self) -> Self {
        Stack {
            executor: self.executor.clone(),
            connector: self.connector.clone(),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E: fmt::Debug, C: fmt::Debug> fmt::Debug for Stack<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("executor", &self.executor)
            .field("connector", &self.connector)
            .field("pool", &self.inner.pool)
            .finish_non_exhaustive()
    }
}

impl<E: Executor + Default, C: Connector + Default> Default for Stack<E, C> {
    fn default() -> Self {
        Stack::new()
    }
}

impl<E: Executor + Default, C: Connector + Default> Stack<E, C> {
    /// The defaults: the executor's and connector's defaults, the built-in web PKI roots, a
    /// cap of 32 connections per host, idle connections kept up to the cap for 10 s.
    pub fn new() -> Self {
        Stack::builder().build_default()
    }

    /// A builder for TLS roots, pool limits, and the executor and connector.
    pub fn builder() -> StackBuilder<E, C> {
        StackBuilder::new(E::default(), C::default())
    }
}

impl<E: Executor, C: Connector> Stack<E, C> {
    /// A builder starting from this executor and connector.
    pub fn builder_with(executor: E, connector: C) -> StackBuilder<E, C> {
        StackBuilder::new(executor, connector)
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// The connector.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// The rustls configuration used for `https://` and `wss://` (`None` if the default one
    /// could not be built: no crypto provider).
    #[cfg(feature = "rustls")]
    pub fn tls_config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.inner.tls.config.as_ref()
    }
}

/// Builds a [`Stack`] (see [`Stack::builder`]).
///
/// ```
/// # fn demo<E: ari_client::runtime::Executor + Default, C: ari_client::runtime::Connector + Default>() -> Result<(), ari_client::tls::TlsSetupError> {
/// use ari_client::stack::Stack;
///
/// let runtime = Stack::<E, C>::builder()
///     .pool_max_connections_per_host(16) // two such clients fit in Asterisk's 100 sessions
///     .pool_idle_timeout(std::time::Duration::from_secs(5))
///     .build()?;
/// # let _ = runtime;
/// # Ok(())
/// # }
/// ```
pub struct StackBuilder<E, C> {
    executor: E,
    connector: C,
    #[cfg(feature = "rustls")]
    tls: TlsSettings,
    pool: PoolSettings,
    idle_set: bool,
}

impl<E: fmt::Debug, C: fmt::Debug> fmt::Debug for StackBuilder<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StackBuilder");
        d.field("executor", &self.executor)
            .field("connector", &self.connector);
        #[cfg(feature = "rustls")]
        d.field("tls", &self.tls);
        d.field("pool", &self.pool).finish()
    }
}

impl<E: Executor, C: Connector> StackBuilder<E, C> {
    fn new(executor: E, connector: C) -> Self {
        StackBuilder {
            executor,
            connector,
            #[cfg(feature = "rustls")]
            tls: TlsSettings::default(),
            pool: PoolSettings {
                max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
                max_idle_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
                idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            },
            idle_set: false,
        }
    }

    /// Uses this executor.
    pub fn executor(mut self, executor: E) -> Self {
        self.executor = executor;
        self
    }

    /// Uses this connector.
    pub fn connector(mut self, connector: C) -> Self {
        self.connector = connector;
        self
    }

    /// How many connections may be open at once per (scheme, host, port) (default 32, at
    /// least 1); further requests wait for one (see [the pool](self#the-connection-pool)).
    /// Keep it well under Asterisk's `sessionlimit` (`http.conf`, 100 by default), which all
    /// its HTTP clients share.
    pub fn pool_max_connections_per_host(mut self, max: usize) -> Self {
        self.pool.max_connections_per_host = max.max(1);
        if !self.idle_set {
            self.pool.max_idle_per_host = self.pool.max_connections_per_host;
        }
        self
    }

    /// How many idle connections are kept per host (default: the connection cap; 0 disables
    /// reuse).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool.max_idle_per_host = max;
        self.idle_set = true;
        self
    }

    /// How long an idle keep-alive connection may be reused (default 10 s; Asterisk closes
    /// idle HTTP sessions after `session_keep_alive`, 15 s by default).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool.idle_timeout = timeout;
        self
    }

    /// Builds the stack; fails if the TLS configuration cannot be built (an added root
    /// certificate that does not parse, no crypto provider).
    pub fn build(self) -> Result<Stack<E, C>, TlsSetupError> {
        #[cfg(feature = "rustls")]
        let tls = TlsClient {
            config: Some(self.tls.build()?),
        };
        #[cfg(not(feature = "rustls"))]
        let tls = TlsClient {};
        Ok(self.finish(tls))
    }

    /// Builds with the default TLS settings. They build with the `rustls-ring` or
    /// `rustls-aws-lc` feature; should they not, `https://` and `wss://` fail per request.
    fn build_default(self) -> Stack<E, C> {
        #[cfg(feature = "rustls")]
        let tls = TlsClient {
            config: self.tls.build().ok(),
        };
        #[cfg(not(feature = "rustls"))]
        let tls = TlsClient {};
        self.finish(tls)
    }

    fn finish(self, tls: TlsClient) -> Stack<E, C> {
        Stack {
            executor: self.executor,
            connector: self.connector,
            inner: Arc::new(Inner {
                tls,
                pool: Arc::new(Pool::new(self.pool)),
            }),
        }
    }
}

#[cfg(feature = "rustls")]
impl<E: Executor, C: Connector> StackBuilder<E, C> {
    /// Trusts the certificates of a PEM file's content (one or more `CERTIFICATE` sections)
    /// as extra roots, besides the built-in ones. Parsed by [`build`](Self::build).
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls.add_root_certificate_pem(pem);
        self
    }

    /// Trusts one DER-encoded certificate as an extra root. Parsed by [`build`](Self::build).
    pub fn add_root_certificate_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.tls.add_root_certificate_der(der);
        self
    }

    /// Whether the built-in web PKI roots (`webpki-roots`) are trusted (default `true`). With
    /// `false` only the added roots (and the platform's, with `platform_roots` and the
    /// `native-roots` feature) are.
    pub fn built_in_roots(mut self, enabled: bool) -> Self {
        self.tls.built_in_roots(enabled);
        self
    }

    /// Whether the operating system's trusted roots are trusted too (default `false`; feature
    /// `native-roots`, through `rustls-native-certs`).
    #[cfg(feature = "native-roots")]
    pub fn platform_roots(mut self, enabled: bool) -> Self {
        self.tls.platform_roots(enabled);
        self
    }

    /// Uses this rustls configuration as it is (roots, client certificates, verifier, ALPN)
    /// for `https://` and `wss://`; added roots and [`built_in_roots`](Self::built_in_roots)
    /// are then ignored. Its ALPN list must not offer `h2` (this client speaks HTTP/1.1).
    pub fn tls_config(mut self, config: impl Into<Arc<rustls::ClientConfig>>) -> Self {
        self.tls.tls_config(config);
        self
    }
}

impl<E: Executor, C: Connector> Executor for Stack<E, C> {
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

impl<E: Executor, C: Connector> Transport for Stack<E, C> {
    type Ws = WebSocket<MaybeTlsStream<C::Stream>>;

    /// HTTP/1.1 on hyper over a pooled keep-alive connection (see
    /// [the pool](self#the-connection-pool)); the body is read whole, up to
    /// [`TransportOptions::max_body_bytes`].
    fn http(
        &self,
        req: ::http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<::http::Response<Bytes>, TransportError>> + Send + 'static
    {
        self::http::send(self.clone(), req, opts.clone())
    }

    /// TCP, TLS for `wss://`, then the upgrade, all within
    /// [`TransportOptions::connect_timeout`]; messages and frames are limited to
    /// [`TransportOptions::max_frame_bytes`].
    fn ws_connect(
        &self,
        req: ::http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        self::ws::ws_connect(self.clone(), req, opts.clone())
    }
}
