//! [`TokioRuntime`]: the [`ari_client::Runtime`] for tokio.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_client::tls::{TlsSettings, TlsSetupError};
use ari_client::{Runtime, TransportError, TransportOptions};
use bytes::Bytes;
use tokio::runtime::Handle;

use crate::pool::Pool;
use crate::ws::TokioWs;

/// The tokio runtime and transport for the ARI client: tokio tasks and timers, a pooled
/// keep-alive HTTP/1.1 client on hyper 1.x, WebSockets on tokio-tungstenite, TLS with rustls
/// (certificate verification on, web PKI roots from `webpki-roots`).
///
/// Cloning is cheap and clones share the connection pool.
///
/// # A tokio runtime must be running
///
/// [`Runtime::spawn`] uses `tokio::spawn` (or the [`Handle`] given to
/// [`TokioRuntimeBuilder::handle`]), and timers and sockets need tokio's time and I/O drivers:
/// use the client from inside a tokio runtime built with `enable_all()` (`#[tokio::main]` does
/// this). Without a handle, spawning outside a runtime panics, as `tokio::spawn` does.
///
/// ```
/// # fn main() -> Result<(), ari_tokio::TlsSetupError> {
/// use ari_tokio::TokioRuntime;
///
/// let default = TokioRuntime::new();
/// let custom = TokioRuntime::builder()
///     .pool_idle_timeout(std::time::Duration::from_secs(5))
///     .build()?;
/// # let _ = (default, custom);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokioRuntime {
    shared: Arc<Shared>,
}

/// What every clone of a [`TokioRuntime`] shares.
pub(crate) struct Shared {
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) pool: Pool,
    pub(crate) settings: Settings,
    handle: Option<Handle>,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) pool_max_idle_per_host: usize,
}

impl Shared {
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.handle {
            Some(h) => drop(h.spawn(fut)),
            None => drop(tokio::spawn(fut)),
        }
    }
}

impl fmt::Debug for TokioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioRuntime")
            .field("pool", &self.shared.pool)
            .field("pool_idle_timeout", &self.shared.settings.pool_idle_timeout)
            .field(
                "pool_max_idle_per_host",
                &self.shared.settings.pool_max_idle_per_host,
            )
            .field("handle", &self.shared.handle.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for TokioRuntime {
    fn default() -> Self {
        TokioRuntime::new()
    }
}

impl TokioRuntime {
    /// The defaults: built-in web PKI roots, connections idle at most 10 s, at most 16 idle
    /// connections per host, tasks spawned with `tokio::spawn`.
    pub fn new() -> Self {
        TokioRuntime::from_parts(
            TlsSettings::default_config(),
            TokioRuntimeBuilder::default(),
        )
    }

    /// A builder for TLS roots, a custom rustls configuration, pool settings and a runtime
    /// handle.
    pub fn builder() -> TokioRuntimeBuilder {
        TokioRuntimeBuilder::default()
    }

    fn from_parts(tls: Arc<rustls::ClientConfig>, b: TokioRuntimeBuilder) -> Self {
        TokioRuntime {
            shared: Arc::new(Shared {
                tls,
                pool: Pool::default(),
                settings: Settings {
                    pool_idle_timeout: b.pool_idle_timeout,
                    pool_max_idle_per_host: b.pool_max_idle_per_host,
                },
                handle: b.handle,
            }),
        }
    }

    /// The rustls configuration used for `https://` and `wss://`.
    pub fn tls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.shared.tls
    }
}

/// Builds a [`TokioRuntime`] (see [`TokioRuntime::builder`]).
///
/// ```
/// # fn demo(my_ca_pem: &[u8]) -> Result<(), ari_tokio::TlsSetupError> {
/// let runtime = ari_tokio::TokioRuntime::builder()
///     .add_root_certificate_pem(my_ca_pem) // e.g. the certificate of your Asterisk
///     .build()?;
/// # let _ = runtime;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokioRuntimeBuilder {
    tls: TlsSettings,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    handle: Option<Handle>,
}

impl Default for TokioRuntimeBuilder {
    fn default() -> Self {
        TokioRuntimeBuilder {
            tls: TlsSettings::default(),
            pool_idle_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 16,
            handle: None,
        }
    }
}

impl fmt::Debug for TokioRuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioRuntimeBuilder")
            .field("extra_roots", &self.tls.extra_root_count())
            .field("built_in_roots", &self.tls.uses_built_in_roots())
            .field("custom_tls_config", &self.tls.custom_config().is_some())
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("handle", &self.handle.is_some())
            .finish()
    }
}

impl TokioRuntimeBuilder {
    ari_client::tls_builder_methods!(tls);

    /// How long an idle keep-alive connection may be reused (default 10 s; Asterisk closes
    /// idle HTTP sessions after `session_keep_alive`, 15 s by default).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per host (default 16; 0 disables reuse).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Spawns tasks on this tokio runtime instead of the current one, so the client may be
    /// used from threads outside the runtime.
    pub fn handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Builds the runtime; fails if an added root certificate cannot be parsed.
    pub fn build(self) -> Result<TokioRuntime, TlsSetupError> {
        let tls = self.tls.build()?;
        Ok(TokioRuntime::from_parts(tls, self))
    }
}

impl Runtime for TokioRuntime {
    type Ws = TokioWs;

    /// `tokio::spawn` (or [`Handle::spawn`] with [`TokioRuntimeBuilder::handle`]); the task is
    /// detached.
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.spawn(fut);
    }

    /// `tokio::time::sleep_until`; completes at once if `deadline` has passed.
    #[allow(clippy::manual_async_fn)] // an `async fn` would borrow `self`; this is `'static`
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        async move {
            if tokio::time::Instant::now().into_std() >= deadline {
                return;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
        }
    }

    /// tokio's clock (`tokio::time::Instant::now()`), which is `Instant::now()` unless tokio's
    /// test clock is paused, so [`sleep_until`](Runtime::sleep_until) and `now` always agree.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        crate::pool::send(Arc::clone(&self.shared), req, opts.clone())
    }

    fn ws_connect(
        &self,
        req: http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        crate::ws::connect(Arc::clone(&self.shared), req, opts.clone())
    }
}
