//! The proxy's hook on the raw event frames: a [`Runtime`](ari_client::Runtime) wrapping [`TokioRuntime`] whose
//! WebSocket hands a copy of every text frame, exactly as received, to a bounded queue before
//! the client's session decodes it. Nothing in ari-client changes: the proxy's client keeps
//! its reconnects, keepalive and REST; the proxy publishes the copies.
//!
//! A frame is read from Asterisk only once the queue has room for it: a proxy publishing
//! slower than Asterisk sends holds Asterisk back as a slow client would (TCP backpressure),
//! instead of dropping events. The copy shares the frame's bytes (no copy).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use ari_client::{Executor, Transport, TransportError, TransportOptions, WsMessage};
use ari_tokio::TokioRuntime;
use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Where the copies go; a frame read while the queue's reader is gone is counted in
/// `dropped`.
#[derive(Debug)]
pub(crate) struct Tap {
    tx: mpsc::Sender<Bytes>,
    pub(crate) dropped: AtomicU64,
}

/// [`TokioRuntime`] whose WebSockets copy their text frames to a [`Tap`].
#[derive(Debug, Clone)]
pub(crate) struct TapRuntime {
    inner: TokioRuntime,
    tap: Arc<Tap>,
}

impl TapRuntime {
    /// A runtime whose frames go to a queue of `capacity` frames, and that queue's reader.
    pub(crate) fn new(inner: TokioRuntime, capacity: usize) -> (TapRuntime, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let tap = Arc::new(Tap {
            tx,
            dropped: AtomicU64::new(0),
        });
        (TapRuntime { inner, tap }, rx)
    }

    pub(crate) fn tap(&self) -> &Arc<Tap> {
        &self.tap
    }
}

/// A WebSocket whose text frames are copied to the tap.
#[derive(Debug)]
pub(crate) struct TapWs<W> {
    inner: W,
    tap: Arc<Tap>,
    tx: PollSender<Bytes>,
}

impl<W> Stream for TapWs<W>
where
    W: Stream<Item = Result<WsMessage, TransportError>> + Unpin,
{
    type Item = Result<WsMessage, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Room for the copy first; the reader gone (the proxy stopping) reads on.
        if self.tx.poll_reserve(cx).is_pending() {
            return Poll::Pending;
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(WsMessage::Text(text)))) = &item {
            let copy = Bytes::from(text.clone());
            if self.tx.send_item(copy).is_err() {
                self.tap.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        item
    }
}

impl<W> Sink<WsMessage> for TapWs<W>
where
    W: Sink<WsMessage, Error = TransportError> + Unpin,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        Pin::new(&mut self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl Executor for TapRuntime {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.spawn(fut)
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.inner.sleep_until(deadline)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn wall_clock(&self) -> SystemTime {
        self.inner.wall_clock()
    }
}

impl Transport for TapRuntime {
    type Ws = TapWs<<TokioRuntime as Transport>::Ws>;

    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        self.inner.http(req, opts)
    }

    fn ws_connect(
        &self,
        req: http::Request<()>,
        opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        let fut = self.inner.ws_connect(req, opts);
        let tap = self.tap.clone();
        async move {
            fut.await.map(|inner| TapWs {
                inner,
                tx: PollSender::new(tap.tx.clone()),
                tap,
            })
        }
    }
}
