//! The proxy's hook on the raw event frames: a [`Runtime`](ari_client::Runtime) wrapping [`TokioRuntime`] whose
//! WebSocket hands every text frame, exactly as received, to a bounded queue. Nothing in
//! ari-client changes: the proxy's client keeps its reconnects, keepalive and REST (the
//! `RESTResponse` frames still reach its session); the proxy publishes the frames, and only
//! the proxy's routing decodes an event (once).
//!
//! Each new connection puts an empty frame in the queue before its first frame ([`NEW_CONNECTION`]).
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

/// The queue's marker of a new events connection (before its first frame): an empty frame.
pub(crate) const NEW_CONNECTION: &[u8] = b"";

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

/// Frames read in one poll at most before yielding to the other tasks.
const FRAMES_PER_POLL: usize = 64;

/// Whether a frame may be Asterisk's answer to one of the proxy's own requests (REST over
/// the WebSocket): it holds `RESTResponse`. An event holding that text somewhere (a variable's
/// value) is only decoded once more by the session, which delivers it to nobody.
pub(crate) fn may_be_response(frame: &[u8]) -> bool {
    static NEEDLE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"RESTResponse"));
    NEEDLE.find(frame).is_some()
}

impl<W> Stream for TapWs<W>
where
    W: Stream<Item = Result<WsMessage, TransportError>> + Unpin,
{
    type Item = Result<WsMessage, TransportError>;

    /// Every text frame goes to the tap. Only the frames that may be a `RESTResponse` go on
    /// to the client's session as well: the proxy's client delivers events to nobody, and
    /// its session would otherwise decode and route every event a second time.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        for _ in 0..FRAMES_PER_POLL {
            // Room for the copy first; the reader gone (the proxy stopping) reads on.
            if self.tx.poll_reserve(cx).is_pending() {
                return Poll::Pending;
            }
            let item = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => return Poll::Pending,
            };
            let Some(Ok(WsMessage::Text(text))) = item else {
                return Poll::Ready(item);
            };
            let response = may_be_response(text.as_bytes());
            // The frame's own bytes, shared (no copy).
            let copy = Bytes::from(text.clone());
            if self.tx.send_item(copy).is_err() {
                self.tap.dropped.fetch_add(1, Ordering::Relaxed);
            }
            if response {
                return Poll::Ready(Some(Ok(WsMessage::Text(text))));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
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
            let inner = fut.await?;
            // An empty frame (Asterisk sends none) before the new connection's first: the
            // proxy checks there, in order, whether Asterisk restarted meanwhile.
            let _ = tap.tx.send(Bytes::new()).await;
            Ok(TapWs {
                inner,
                tx: PollSender::new(tap.tx.clone()),
                tap,
            })
        }
    }
}
