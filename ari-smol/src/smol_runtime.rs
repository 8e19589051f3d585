//! [`SmolRuntime`]: the [`Runtime`] for smol.

use crate::h1::{Pool, PoolOptions};
use crate::tls::{default_config, parse_pem, ConfigError, Tls};
use crate::ws::SmolWs;
use ari_client::{Runtime, TransportError, TransportOptions};
use bytes::Bytes;
use rustls_pki_types::CertificateDer;
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
    /// A runtime with the defaults: smol's global executor, webpki roots, default pool.
    pub fn new() -> SmolRuntime {
        // The default configuration uses only the built-in roots and safe protocol versions;
        // rustls accepts it. Should that ever change, fall back to an empty root store
        // (every TLS connection then fails verification) rather than panic.
        let config = default_config(&[]).unwrap_or_else(|_| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map(|b| {
                b.with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
        });
        SmolRuntime::from_parts(None, Arc::new(config), PoolOptions::default())
    }

    /// A builder for extra root certificates, a custom TLS configuration, an executor and
    /// pool limits.
    pub fn builder() -> SmolRuntimeBuilder {
        SmolRuntimeBuilder::default()
    }

    fn from_parts(
        executor: Option<Arc<smol::Executor<'static>>>,
        tls: Arc<rustls::ClientConfig>,
        pool: PoolOptions,
    ) -> SmolRuntime {
        SmolRuntime {
            inner: Arc::new(Inner {
                executor,
                tls: Tls::new(tls),
                pool: Pool::new(pool),
            }),
        }
    }
}

impl Runtime for SmolRuntime {
    type Ws = SmolWs;

    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.inner.executor {
            Some(executor) => executor.spawn(fut).detach(),
            None => smol::spawn(fut).detach(),
        }
    }

    // Not `async fn`: the future must not borrow `self` ('static).
    #[allow(clippy::manual_async_fn)]
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        async move {
            if Instant::now() < deadline {
                async_io::Timer::at(deadline).await;
            }
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        let inner = self.inner.clone();
        let opts = opts.clone();
        async move { crate::h1::send(&inner.pool, &inner.tls, req, &opts).await }
    }

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
/// ```no_run
/// # fn main() -> Result<(), ari_smol::ConfigError> {
/// let pem = std::fs::read("/etc/asterisk/keys/ca.pem").unwrap_or_default();
/// let runtime = ari_smol::SmolRuntime::builder()
///     .add_root_certificate_pem(pem)
///     .build()?;
/// # let _ = runtime; Ok(()) }
/// ```
#[derive(Default)]
pub struct SmolRuntimeBuilder {
    extra_roots: Vec<CertificateDer<'static>>,
    error: Option<ConfigError>,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    executor: Option<Arc<smol::Executor<'static>>>,
    pool: PoolOptions,
}

impl fmt::Debug for SmolRuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolRuntimeBuilder")
            .field("extra_roots", &self.extra_roots.len())
            .field("custom_tls_config", &self.tls_config.is_some())
            .field("custom_executor", &self.executor.is_some())
            .field("max_idle_per_host", &self.pool.max_idle_per_host)
            .field(
                "max_connections_per_host",
                &self.pool.max_connections_per_host,
            )
            .field("idle_timeout", &self.pool.idle_timeout)
            .finish()
    }
}

impl SmolRuntimeBuilder {
    /// Trusts the certificates of a PEM document (e.g. a private CA or a self-signed
    /// Asterisk certificate) besides the webpki roots. A parse error is reported by
    /// [`build`](Self::build).
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        match parse_pem(pem.as_ref()) {
            Ok(certs) => self.extra_roots.extend(certs),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Trusts a DER-encoded certificate besides the webpki roots.
    pub fn add_root_certificate_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(CertificateDer::from(der.into()));
        self
    }

    /// Uses this rustls configuration for every TLS connection (`https`, `wss`) instead of
    /// the default one. Cannot be combined with the `add_root_certificate_*` methods.
    pub fn tls_config(mut self, config: impl Into<Arc<rustls::ClientConfig>>) -> Self {
        self.tls_config = Some(config.into());
        self
    }

    /// Spawns background tasks on this executor instead of smol's global one. Something must
    /// drive it (`executor.run(..)` on some thread), or nothing the client spawns will run.
    pub fn executor(mut self, executor: Arc<smol::Executor<'static>>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Idle keep-alive connections kept per (scheme, host, port). Default 8.
    pub fn max_idle_connections_per_host(mut self, n: usize) -> Self {
        self.pool.max_idle_per_host = n;
        self
    }

    /// Connections in use at once per (scheme, host, port); further requests wait for one to
    /// be free. Default 32 (at least 1).
    pub fn max_connections_per_host(mut self, n: usize) -> Self {
        self.pool.max_connections_per_host = n.max(1);
        self
    }

    /// How long an idle connection is kept for reuse. Default 10 s (Asterisk closes idle
    /// HTTP sessions after 15 s by default).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool.idle_timeout = timeout;
        self
    }

    /// Builds the runtime.
    pub fn build(self) -> Result<SmolRuntime, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let tls = match self.tls_config {
            Some(config) => {
                if !self.extra_roots.is_empty() {
                    return Err(ConfigError::RootsWithTlsConfig);
                }
                config
            }
            None => Arc::new(default_config(&self.extra_roots)?),
        };
        Ok(SmolRuntime::from_parts(self.executor, tls, self.pool))
    }
}
