//! [`TokioExecutor`] and [`TokioConnector`]: the two halves of [`TokioRuntime`](crate::TokioRuntime).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use ari_client::runtime::{Connector, Executor, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// Tasks and `tokio::time` timers on the runtime it was made in (or given with
/// [`TokioExecutor::with_handle`]), from any thread (a `MediaPacer`'s own thread too). The
/// runtime needs time and I/O (`enable_all()`, as `#[tokio::main]`). Made outside any runtime
/// with no handle, it uses the one current at each call (panics outside one, as `tokio::spawn`).
#[derive(Debug, Clone)]
pub struct TokioExecutor {
    handle: Option<Handle>,
}

impl Default for TokioExecutor {
    fn default() -> Self {
        TokioExecutor {
            handle: Handle::try_current().ok(),
        }
    }
}

impl TokioExecutor {
    /// On the current runtime, if any (see above).
    pub fn new() -> Self {
        TokioExecutor::default()
    }

    /// Spawns on this runtime, so the client may be used from threads outside it.
    pub fn with_handle(handle: Handle) -> Self {
        TokioExecutor {
            handle: Some(handle),
        }
    }
}

impl Executor for TokioExecutor {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.handle {
            Some(h) => drop(h.spawn(fut)),
            None => drop(tokio::spawn(fut)),
        }
    }

    /// `tokio::time::sleep_until`; completes at once if `deadline` has passed.
    #[allow(clippy::manual_async_fn)] // an `async fn` would borrow `self`; this is `'static`
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        let handle = self.handle.clone();
        async move {
            if tokio::time::Instant::now().into_std() < deadline {
                let sleep = {
                    let _in = handle.as_ref().map(Handle::enter); // from a thread outside it
                    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline))
                };
                sleep.await;
            }
        }
    }

    /// Within tens of µs on Linux (tokio's timer wakes 0–2 ms late): a `timerfd` per sleep on
    /// the runtime's reactor; elsewhere, under tokio's test clock or without a descriptor,
    /// `sleep_until`. For the media pacer's ticks.
    fn sleep_until_precise(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        crate::precise::sleep_until(deadline)
    }

    /// tokio's clock (`tokio::time::Instant::now()`), which is `Instant::now()` unless tokio's
    /// test clock is paused, so `sleep_until` and `now` always agree.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// TCP on tokio (`tokio::net`), as futures-io streams (`tokio_util::compat`), with
/// `TCP_NODELAY`.
#[derive(Debug, Clone, Default)]
pub struct TokioConnector;

impl Connector for TokioConnector {
    type Stream = Compat<TcpStream>;
    type Listener = TokioListener;

    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static {
        let host = host.to_owned();
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp.compat())
        }
    }

    #[allow(clippy::manual_async_fn)] // an `async fn` would borrow `self`; this is `'static`
    fn bind(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send + 'static {
        async move { Ok(TokioListener(TcpListener::bind(addr).await?)) }
    }
}

/// A bound tokio TCP listener (see [`Connector::bind`]).
#[derive(Debug)]
pub struct TokioListener(TcpListener);

impl Listener for TokioListener {
    type Stream = Compat<TcpStream>;

    #[allow(clippy::manual_async_fn)] // the trait spells out the `Send` bound
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_ {
        async move {
            let (tcp, peer) = self.0.accept().await?;
            tcp.set_nodelay(true)?;
            Ok((tcp.compat(), peer))
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
