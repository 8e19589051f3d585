//! [`SmolExecutor`] and [`SmolConnector`]: the two halves of [`SmolRuntime`](crate::SmolRuntime).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use ari_client::runtime::{Connector, Executor, Listener};
use async_net::{TcpListener, TcpStream};

/// Tasks and timers on smol: tasks on smol's global executor (or an [`smol::Executor`] you
/// pass to [`SmolExecutor::with_executor`]), timers from async-io.
#[derive(Clone, Default)]
pub struct SmolExecutor {
    executor: Option<Arc<smol::Executor<'static>>>,
}

impl fmt::Debug for SmolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.executor.is_some() {
            "custom"
        } else {
            "smol global"
        };
        f.debug_tuple("SmolExecutor").field(&which).finish()
    }
}

impl SmolExecutor {
    /// Spawns on smol's global executor (`smol::spawn`).
    pub fn new() -> Self {
        SmolExecutor::default()
    }

    /// Spawns on this executor instead. Something must drive it (`executor.run(..)` on some
    /// thread), or nothing the client spawns runs.
    pub fn with_executor(executor: Arc<smol::Executor<'static>>) -> Self {
        SmolExecutor {
            executor: Some(executor),
        }
    }
}

impl Executor for SmolExecutor {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.executor {
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

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// TCP on async-net (async-io's reactor), with `TCP_NODELAY`.
#[derive(Debug, Clone, Default)]
pub struct SmolConnector;

impl Connector for SmolConnector {
    type Stream = TcpStream;
    type Listener = SmolListener;

    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static {
        let host = host.to_owned();
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp)
        }
    }

    #[allow(clippy::manual_async_fn)] // an `async fn` would borrow `self`; this is `'static`
    fn bind(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send + 'static {
        async move { Ok(SmolListener(TcpListener::bind(addr).await?)) }
    }
}

/// A bound async-net TCP listener (see [`Connector::bind`]).
#[derive(Debug)]
pub struct SmolListener(TcpListener);

impl Listener for SmolListener {
    type Stream = TcpStream;

    #[allow(clippy::manual_async_fn)] // the trait spells out the `Send` bound
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_ {
        async move {
            let (tcp, peer) = self.0.accept().await?;
            tcp.set_nodelay(true)?;
            Ok((tcp, peer))
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
