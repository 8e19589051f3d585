//! [`SmolExecutor`] and [`SmolConnector`]: the two halves of [`SmolRuntime`](crate::SmolRuntime).

use std::fmt;
use std::future::Future;
use std::io::{self, Read as _};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime};

use ari_client::runtime::{Connector, Executor, Listener};
use async_io::Async;
use async_net::{TcpListener, TcpStream};
use smol::io::{AsyncRead, AsyncWrite};

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

/// TCP on async-net (async-io's reactor), with `TCP_NODELAY`; streams are [`SmolStream`]s.
#[derive(Debug, Clone, Default)]
pub struct SmolConnector;

impl Connector for SmolConnector {
    type Stream = SmolStream;
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
            Ok(SmolStream::from(tcp))
        }
    }

    #[allow(clippy::manual_async_fn)] // an `async fn` would borrow `self`; this is `'static`
    fn bind(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send + 'static {
        async move { Ok(SmolListener(TcpListener::bind(addr).await?)) }
    }

    /// Forgets that the socket had no data: the next read tries it.
    fn before_reuse(stream: &mut SmolStream) {
        stream.dry = false;
    }
}

/// A bound async-net TCP listener (see [`Connector::bind`]).
#[derive(Debug)]
pub struct SmolListener(TcpListener);

impl Listener for SmolListener {
    type Stream = SmolStream;

    #[allow(clippy::manual_async_fn)] // the trait spells out the `Send` bound
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_ {
        async move {
            let (tcp, peer) = self.0.accept().await?;
            tcp.set_nodelay(true)?;
            Ok((SmolStream::from(tcp), peer))
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream of [`SmolConnector`]: an async-io socket that remembers it had no data.
///
/// async-net's stream tries the socket at every read, and a connection polled for another
/// reason (its request written, a timer) makes a system call that fails. This one, once a
/// read found the socket empty (it would block, or gave less than asked), waits for the
/// reactor to report it readable before trying again; the HTTP pool makes it try the socket
/// once before reusing a kept-alive connection
/// ([`Connector::before_reuse`](ari_client::runtime::Connector::before_reuse)), so that a
/// close by the server while it sat idle is seen before a request is written.
pub struct SmolStream {
    io: Arc<Async<std::net::TcpStream>>,
    /// The last read found the socket drained; the reactor's readiness is awaited first.
    dry: bool,
}

impl fmt::Debug for SmolStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolStream")
            .field("peer", &self.io.get_ref().peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl SmolStream {
    /// The async-io socket.
    pub fn get_ref(&self) -> &Async<std::net::TcpStream> {
        &self.io
    }
}

impl From<TcpStream> for SmolStream {
    fn from(tcp: TcpStream) -> Self {
        SmolStream {
            io: tcp.into(),
            dry: false,
        }
    }
}

impl AsyncRead for SmolStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.dry {
                // Registers for readiness; ready once the reactor saw data (or a close) after
                // the registration.
                ready!(this.io.poll_readable(cx))?;
                this.dry = false;
            }
            match this.io.get_ref().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.dry = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(n) => {
                    // Less than asked: the socket's buffer was drained (as tokio assumes).
                    this.dry = n > 0 && n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SmolStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(Shutdown::Write))
    }
}
