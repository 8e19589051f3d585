//! A runtime wrapper that counts the tasks spawned through it that are still alive, so a case
//! can assert that a client leaves no task behind.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use ari_client::{Executor, Runtime, Transport, TransportError, TransportOptions};

/// Wraps an adapter's runtime: every future spawned through it holds a guard that counts it
/// alive until the future is dropped (finished, or dropped by the executor).
#[derive(Clone)]
pub struct CountedRuntime<R> {
    inner: R,
    alive: Arc<AtomicUsize>,
    spawned: Arc<AtomicUsize>,
}

impl<R: fmt::Debug> fmt::Debug for CountedRuntime<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedRuntime")
            .field("inner", &self.inner)
            .field("alive", &self.alive())
            .finish()
    }
}

impl<R> CountedRuntime<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        CountedRuntime {
            inner,
            alive: Arc::default(),
            spawned: Arc::default(),
        }
    }

    /// Tasks spawned through this runtime (and its clones) not dropped yet.
    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    /// Tasks spawned through it so far.
    pub fn spawned(&self) -> usize {
        self.spawned.load(Ordering::SeqCst)
    }
}

/// Counts its task alive until dropped.
struct AliveGuard(Arc<AtomicUsize>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<R: Executor> Executor for CountedRuntime<R> {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.alive.fetch_add(1, Ordering::SeqCst);
        self.spawned.fetch_add(1, Ordering::SeqCst);
        let guard = AliveGuard(self.alive.clone());
        self.inner.spawn(async move {
            let _guard = guard;
            fut.await
        });
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.inner.sleep_until(deadline)
    }

    fn sleep_until_precise(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.inner.sleep_until_precise(deadline)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn wall_clock(&self) -> SystemTime {
        self.inner.wall_clock()
    }
}

impl<R: Runtime> Transport for CountedRuntime<R> {
    type Ws = R::Ws;

    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<bytes::Bytes>, TransportError>> + Send + 'static
    {
        self.inner.http(req, opts)
    }

    fn ws_connect(
        &self,
        req: http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        self.inner.ws_connect(req, opts)
    }
}
