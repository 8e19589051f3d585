//! The one way the testkit's servers run: a named thread with its own current-thread tokio
//! runtime, bound before the caller gets the address, stopped by a oneshot and joined on drop.
//! Used by the simulated Asterisk ([`crate::MockServer`]), the recorder and the replay.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running server thread. Dropping it (or [`stop`](ServerThread::stop)) asks the accept loop
/// to end, then joins the thread; dropping its runtime closes every connection.
#[derive(Debug)]
pub(crate) struct ServerThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Spawns thread `name`, builds its runtime, awaits `bind` on it (the caller's runtime, if
    /// any, is never entered) and hands the listener's address back once it listens; then runs
    /// `serve(listener, stop)` until it returns. An error building the runtime, binding or
    /// spawning is returned here.
    pub(crate) fn spawn<B, S, F>(
        name: String,
        bind: B,
        serve: S,
    ) -> io::Result<(SocketAddr, ServerThread)>
    where
        B: Future<Output = io::Result<TcpListener>> + Send + 'static,
        S: FnOnce(TcpListener, oneshot::Receiver<()>) -> F + Send + 'static,
        F: Future<Output = ()>,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let listener = match rt.block_on(bind).and_then(|l| Ok((l.local_addr()?, l))) {
                Ok((addr, l)) => {
                    let _ = ready_tx.send(Ok(addr));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(serve(listener, stop_rx));
            // Dropping the runtime cancels every connection task, closing their sockets.
            drop(rt);
        })?;
        match ready_rx.recv() {
            Ok(Ok(addr)) => Ok((
                addr,
                ServerThread {
                    stop: Some(stop_tx),
                    thread: Some(thread),
                },
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("server thread ended early"))
            }
        }
    }

    /// Stops the accept loop and joins the thread (idempotent).
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop();
    }
}
