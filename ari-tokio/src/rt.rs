//! [`TokioExecutor`] and [`TokioConnector`]: the two halves of [`TokioRuntime`](crate::TokioRuntime).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use ari_client::runtime::{Connector, Executor, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// Tasks and timers on tokio: `tokio::spawn` (or [`Handle::spawn`] with
/// [`TokioExecutor::with_handle`]) and `tokio::time`.
///
/// Timers and sockets need tokio's time and I/O drivers: use it inside a tokio runtime built
/// with `enable_all()` (`#[tokio::main]` does this). Without a handle, spawning outside a
/// runtime panics, as `tokio::spawn` does.
#[derive(Debug, Clone, Default)]
pub struct TokioExecutor {
    handle: Option<Handle>,
}

impl TokioExecutor {
    /// Spawns on the current runtime (`tokio::spawn`).
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
        async move {
            if tokio::time::Instant::now().into_std() < deadline {
                tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
            }
        }
    }

    /// At `deadline` within tens of microseconds on Linux, where tokio's timer
    /// (`sleep_until`) rounds to its 1 ms ticks and wakes 0 to 2 ms late: a `timerfd` armed
    /// for the deadline and registered with the runtime's reactor wakes the task (one
    /// descriptor per sleep, closed when it ends or is dropped; no thread). tokio's
    /// `sleep_until` on other systems, under tokio's test clock once paused or advanced
    /// (`tokio::time::pause`), and if a descriptor cannot be had. Used by the media pacer's
    /// ticks.
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
