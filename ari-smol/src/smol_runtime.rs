//! [`SmolRuntime`]: the [`Runtime`] for smol.

use crate::h1::{Pool, PoolOptions};
use crate::io::Tls;
use crate::ws::SmolWs;
use ari_client::tls::{TlsSettings, TlsSetupError};
use ari_client::{Runtime, TransportError, TransportOptions};
use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The [`Runtime`] on smol: tasks on smol's global executor (or an [`smol::Executor`] you
/// pass), timers from async-io, HTTP/1.1 with a keep-alive pool and WebSocket
/// (async-tungstenite) over async-net, TLS through futures-rustls (rustls, `ring`).
///
/// Cheap to clone: clones share the connection pool and TLS configuration.
///
/// TLS verification is on: servers must present a certificate that chains to the webpki
/// roots (Mozilla's) or to a root added with
/// [`SmolRuntimeBuilder::add_root_certificate_pem`].
#[derive(Clone)]
pub struct SmolRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Option<Arc<smol::Executor<'static>>>,
    tls: Tls,
    pool: Pool,
}

impl fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolRuntime")
            .field(
                "executor",
                &if self.inner.executor.is_some() {
                    "custom"
                } else {
                    "smol global"
                },
            )
            .finish_non_exhaustive()
    }
}

impl Default for SmolRuntime {
    fn default() -> Self {
        SmolRuntime::new()
    }
}

impl SmolRuntime {
    /// A runtime with the defaults: smol's global executor, the webpki roots, the default
    /// pool limits.
    pub fn new() -> SmolRuntime {
        SmolRuntime::from_parts(TlsSettings::default_config(), SmolRuntimeBuilder::default())
    }

    /// A builder for extra root certificates, a custom TLS configuration, an executor and
    /// pool limits.
    pub fn builder() -> SmolRuntimeBuilder {
        SmolRuntimeBuilder::default()
    }

    /// The rustls configuration used for `https://` and `wss://`.
    pub fn tls_config(&self) -> &Arc<rustls::ClientConfig> {
        self.inner.tls.config()
    }

    fn from_parts(tls: Arc<rustls::ClientConfig>, builder: SmolRuntimeBuilder) -> SmolRuntime {
        SmolRuntime {
            inner: Arc::new(Inner {
                executor: builder.executor,
                tls: Tls::new(tls),
                pool: Pool::new(builder.pool),
            }),
        }
    }
}

impl Runtime for SmolRuntime {
    type Ws = SmolWs;

    /// `smol::spawn` (or [`smol::Executor::spawn`] with [`SmolRuntimeBuilder::executor`]);
    /// the task is detached.
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.inner.executor {
            Some(executor) => executor.spawn(fut).detach(),
            None => smol::spawn(fut).detach(),
        }
    }

    /// `async_io::Timer::at`; completes at once if `deadline` has passed.
    #[allow(clippy::manual_async_fn)] // an `async fn` would borrow `self`; this is `'static`
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        async move {
            if Instant::now() < deadline {
                async_io::Timer::at(deadline).await;
            }
        }
    }

    /// `Instant::now()` (the clock async-io's timers use).
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// HTTP/1.1 over a pooled keep-alive connection (origin-form request line,
    /// `Content-Length` framing); the body is read whole, up to
    /// [`TransportOptions::max_body_bytes`].
    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        let inner = self.inner.clone();
        let opts = opts.clone();
        async move { crate::h1::send(&inner.pool, &inner.tls, req, &opts).await }
    }

    /// TCP, TLS for `wss://`, then the upgrade, all within
    /// [`TransportOptions::connect_timeout`]; messages and frames are limited to
    /// [`TransportOptions::max_frame_bytes`].
    fn ws_connect(
        &self,
        req: http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        let inner = self.inner.clone();
        let opts = opts.clone();
        async move { crate::ws::ws_connect(&inner.tls, req, &opts).await }
    }
}

/// Builds a [`SmolRuntime`]; see [`SmolRuntime::builder`].
///
/// ```
/// # fn demo(my_ca_pem: &[u8]) -> Result<(), ari_smol::TlsSetupError> {
/// let runtime = ari_smol::SmolRuntime::builder()
///     .add_root_certificate_pem(my_ca_pem) // e.g. the certificate of your Asterisk
///     .build()?;
/// # let _ = runtime;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct SmolRuntimeBuilder {
    tls: TlsSettings,
    executor: Option<Arc<smol::Executor<'static>>>,
    pool: PoolOptions,
}

impl fmt::Debug for SmolRuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolRuntimeBuilder")
            .field("extra_roots", &self.tls.extra_root_count())
            .field("built_in_roots", &self.tls.uses_built_in_roots())
            .field("custom_tls_config", &self.tls.custom_config().is_some())
            .field("custom_executor", &self.executor.is_some())
            .field("pool_idle_timeout", &self.pool.idle_timeout)
            .field("pool_max_idle_per_host", &self.pool.max_idle_per_host)
            .field(
                "pool_max_connections_per_host",
                &self.pool.max_connections_per_host,
            )
            .finish()
    }
}

impl SmolRuntimeBuilder {
    ari_client::tls_builder_methods!(tls);

    /// How long an idle keep-alive connection may be reused (default 10 s; Asterisk closes
    /// idle HTTP sessions after `session_keep_alive`, 15 s by default).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool.idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per (scheme, host, port) (default 16; 0 disables
    /// reuse).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool.max_idle_per_host = max;
        self
    }

    /// How many requests may be in flight at once per (scheme, host, port), one connection
    /// each (default 64, at least 1); further requests wait for a connection to be free
    /// (the client's request timeout still applies).
    pub fn pool_max_connections_per_host(mut self, max: usize) -> Self {
        self.pool.max_connections_per_host = max.max(1);
        self
    }

    /// Spawns background tasks on this executor instead of smol's global one. Something must
    /// drive it (`executor.run(..)` on some thread), or nothing the client spawns runs.
    pub fn executor(mut self, executor: Arc<smol::Executor<'static>>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Builds the runtime; fails if an added root certificate cannot be parsed.
    pub fn build(self) -> Result<SmolRuntime, TlsSetupError> {
        let tls = self.tls.build()?;
        Ok(SmolRuntime::from_parts(tls, self))
    }
}
