//! The background task that owns the events WebSocket and drives the session.
//!
//! A hand-written future (as quinn's connection driver), polled in a fixed order on every
//! wake: the pending connect → the socket (read as long as frames are there, in bounded
//! batches) → timers → the session's commands and outputs → the socket's send side. Events
//! are delivered to bounded per-subscription queues or spawned handlers, never awaited, so
//! reading the socket never waits on a consumer (Asterisk drops a WebSocket whose reader
//! stalls).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ari_proto::session::Transmit;
use futures_core::Stream;
use futures_sink::Sink as _;

use crate::client::Client;
use crate::runtime::{Runtime, TransportError, TransportOptions, WsMessage};
use crate::shared::{ClientSession, Dispatch, Shared};

/// Frames read per wake before yielding to other tasks (the driver re-wakes itself).
const MAX_FRAMES_PER_WAKE: usize = 256;
/// Rounds of the whole loop per wake.
const MAX_ROUNDS_PER_WAKE: usize = 64;
/// How long a closing client waits for its close frame to be sent (a peer that stopped
/// reading cannot hold the task longer).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Spawns the driver of `client` on its runtime.
pub(crate) fn spawn<R: Runtime>(client: &Client<R>) {
    let inner = &client.inner;
    let driver = Driver {
        shared: inner.shared.clone(),
        runtime: inner.runtime.clone(),
        opts: inner.transport.clone(),
        ws: None,
        connecting: None,
        outbox: VecDeque::new(),
        needs_flush: false,
        close_after_flush: false,
        timer: None,
        scratch: Vec::new(),
        tx_scratch: Vec::new(),
        stops_acked: 0,
        close_grace: None,
        consumer_wait: None,
        waited: Duration::ZERO,
        frames_since_wait: 0,
        endpoint: (!inner.accepted).then(|| inner.endpoint.clone()),
        connects: 0,
        restart_check: None,
        answering: None,
    };
    inner.runtime.spawn(driver);
}

struct Driver<R: Runtime> {
    shared: Arc<Shared>,
    runtime: R,
    opts: TransportOptions,
    ws: Option<R::Ws>,
    connecting: Option<BoxFuture<Result<R::Ws, TransportError>>>,
    outbox: VecDeque<WsMessage>,
    needs_flush: bool,
    close_after_flush: bool,
    timer: Option<(Instant, BoxFuture<()>)>,
    scratch: Vec<Dispatch>,
    tx_scratch: Vec<Transmit>,
    /// The last `stop` whose close frame was sent.
    stops_acked: u64,
    /// The deadline of the close frame once the client is closed.
    close_grace: Option<BoxFuture<()>>,
    /// While a stream queue presses: when the reader began waiting for its consumer, and
    /// the end of that wait.
    consumer_wait: Option<(Instant, BoxFuture<()>)>,
    /// Time spent waiting for consumers since the reader last read the socket empty or read
    /// [`MAX_FRAMES_PER_WAKE`] frames without waiting: at most `stream_wait`.
    waited: Duration,
    /// Frames read since the last wait ended.
    frames_since_wait: usize,
    /// Where the restart check asks (`None` in accepted mode: Asterisk dials, and a
    /// restarted Asterisk dials again).
    endpoint: Option<ari_proto::rest::BaseUrl>,
    /// WebSockets opened so far.
    connects: u64,
    /// After a reconnect: `GET /asterisk/info?only=status`, Asterisk's startup time.
    restart_check: Option<BoxFuture<Option<ari_proto::Timestamp>>>,
    /// A socket Asterisk closed, kept until the close answer RFC 6455 requires is written
    /// (or [`CLOSE_GRACE`] passed), while the session goes on (reconnects).
    answering: Option<(R::Ws, BoxFuture<()>)>,
}

impl<R: Runtime> Drop for Driver<R> {
    fn drop(&mut self) {
        // Exited, or dropped by a runtime shutting down: `close` waits no more.
        self.shared.driver_exited();
    }
}

// Every field is either `Unpin` or boxed; the runtime value is only cloned and called.
impl<R: Runtime> Unpin for Driver<R> {}

impl<R: Runtime> Driver<R> {
    /// Runs `f` on the session (which passes it the time, read once per frame), then drains
    /// its transmits and outputs and delivers them. Returns whether the session had anything
    /// to perform or deliver.
    ///
    /// `now`: the time just read, if any (handlers called inline are timed from it).
    fn with_session(&mut self, now: Option<Instant>, f: impl FnOnce(&mut ClientSession)) -> bool {
        let mut transmits = std::mem::take(&mut self.tx_scratch);
        {
            let mut st = self.shared.lock();
            f(&mut st.session);
            while let Some(t) = Shared::take_transmit(&mut st) {
                transmits.push(t);
            }
            self.shared.drain_outputs(&mut st, &mut self.scratch);
        }
        let busy = !transmits.is_empty() || !self.scratch.is_empty();
        for t in transmits.drain(..) {
            self.perform(t);
        }
        self.tx_scratch = transmits;
        let mut items = std::mem::take(&mut self.scratch);
        self.shared.dispatch(&mut items, now);
        self.scratch = items;
        busy
    }

    fn perform(&mut self, t: Transmit) {
        match t {
            Transmit::Connect(req) => {
                tracing::debug!(target: "ari_client", uri = %redact_uri(req.uri()), "opening the events WebSocket");
                self.ws = None;
                self.outbox.clear();
                self.needs_flush = false;
                self.close_after_flush = false;
                // The adapter applies the connect timeout; this deadline makes sure a connect
                // attempt can never hang the session whatever the adapter does.
                let connect = self.runtime.ws_connect(req, &self.opts);
                let limit = self.opts.connect_timeout;
                let now = self.runtime.now();
                let deadline = now
                    .checked_add(limit)
                    .or_else(|| now.checked_add(std::time::Duration::from_secs(3600)))
                    .unwrap_or(now);
                let sleep = self.runtime.sleep_until(deadline);
                self.connecting = Some(Box::pin(async move {
                    let connect = std::pin::pin!(connect);
                    let sleep = std::pin::pin!(sleep);
                    match futures_util::future::select(connect, sleep).await {
                        futures_util::future::Either::Left((res, _)) => res,
                        futures_util::future::Either::Right(_) => Err(TransportError::new(
                            crate::TransportErrorKind::Timeout,
                            format!("WebSocket connect took longer than {limit:?}"),
                        )),
                    }
                }));
            }
            Transmit::Text(text) => self.outbox.push_back(WsMessage::Text(text.into())),
            Transmit::Ping(payload) => self.outbox.push_back(WsMessage::Ping(payload.into())),
            Transmit::Close => {
                self.connecting = None;
                if self.ws.is_some() {
                    self.outbox.clear();
                    self.outbox.push_back(WsMessage::Close(None));
                    self.close_after_flush = true;
                }
            }
            _ => {}
        }
    }

    fn socket_failed(&mut self, now: Instant, reason: String) {
        self.socket_closed(now, None, reason);
    }

    /// The socket ended; `code` is the status of the peer's close frame, if it sent one.
    fn socket_closed(&mut self, now: Instant, code: Option<u16>, reason: String) {
        self.ws = None;
        self.outbox.clear();
        self.needs_flush = false;
        if self.close_after_flush {
            // We were closing it anyway; the session has accounted for it.
            self.close_after_flush = false;
            return;
        }
        self.with_session(Some(now), |s| match code {
            Some(_) => s.handle_closed(now, code, &reason),
            None => s.handle_disconnected(now, &reason),
        });
    }

    /// Polls the pending connect. Returns whether something happened.
    fn poll_connecting(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(fut) = self.connecting.as_mut() else {
            return false;
        };
        let Poll::Ready(res) = fut.as_mut().poll(cx) else {
            return false;
        };
        self.connecting = None;
        let now = self.runtime.now();
        match res {
            Ok(ws) => {
                self.ws = Some(ws);
                self.with_session(Some(now), |s| s.handle_connected(now));
                self.connects += 1;
                if self.connects > 1 {
                    self.restart_check = self.start_restart_check();
                }
            }
            Err(e) => {
                let reason = e.to_string();
                self.with_session(Some(now), |s| s.handle_connect_failed(now, &reason));
            }
        }
        true
    }

    /// After a reconnect, when `connect()` learnt Asterisk's startup time: asks for it again
    /// (a restarted Asterisk lost every channel and bridge without an event saying so).
    fn start_restart_check(&self) -> Option<BoxFuture<Option<ari_proto::Timestamp>>> {
        let endpoint = self.endpoint.as_ref()?;
        self.shared
            .startup_time
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?;
        let op =
            ari_proto::ops::asterisk::GetInfo::new().only([ari_proto::models::InfoSection::Status]);
        let req = ari_proto::rest::build_request(endpoint, &op).ok()?;
        let http = self.runtime.http(req, &self.opts);
        Some(Box::pin(async move {
            let resp = match http.await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::warn!(target: "ari_client", error = %e, "after the reconnect: could not ask whether Asterisk restarted");
                    return None;
                }
            };
            let info = ari_proto::rest::parse_response::<ari_proto::ops::asterisk::GetInfo>(
                resp.status().as_u16(),
                resp.body(),
            )
            .ok()?;
            info.status.map(|s| s.startup_time)
        }))
    }

    /// The restart check's answer: a new startup time ends the subscriptions of the
    /// resources Asterisk had before (see `Session::handle_asterisk_restarted`).
    fn poll_restart_check(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(check) = self.restart_check.as_mut() else {
            return false;
        };
        let Poll::Ready(startup) = check.as_mut().poll(cx) else {
            return false;
        };
        self.restart_check = None;
        let Some(startup) = startup else {
            return true;
        };
        let before = self
            .shared
            .startup_time
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(startup);
        if before.is_some_and(|b| b != startup) {
            let mut ended = 0;
            self.with_session(None, |s| ended = s.handle_asterisk_restarted());
            tracing::warn!(
                target: "ari_client",
                ended,
                "Asterisk restarted while the events WebSocket was down: the subscriptions of its \
                 previous channels, bridges, playbacks and recordings ended"
            );
        }
        true
    }

    /// Accepted mode: takes a socket Asterisk opened (replacing the current one, which is
    /// dropped and so closed). Returns whether one was taken.
    fn poll_attached(&mut self) -> bool {
        let Some(attached) = self.shared.take_attached() else {
            return false;
        };
        let n = attached.n;
        let Ok(ws) = attached.ws.downcast::<R::Ws>() else {
            tracing::warn!(target: "ari_client", "an attached socket of another runtime was ignored");
            self.shared.attach_done(n);
            return false;
        };
        self.ws = Some(*ws);
        self.outbox.clear();
        self.needs_flush = false;
        self.close_after_flush = false;
        let now = self.runtime.now();
        self.with_session(Some(now), |s| s.handle_accepted(now));
        for text in attached.first {
            let now = self.runtime.now();
            self.with_session(Some(now), |s| s.handle_text_frame(now, &text));
        }
        self.shared.attach_done(n);
        true
    }

    /// Whether the reader waits for a stream consumer now: a stream queue is past its
    /// high-water mark and the budget (`stream_wait` on the runtime's clock, shared by every
    /// wait until the socket is read empty or [`MAX_FRAMES_PER_WAKE`] frames are read without
    /// waiting) is not spent. When it runs out, the queues still pressing are stalled
    /// consumers: they press no more until drained (their overflow is counted and
    /// signalled as before) and the socket is read on.
    fn waits_for_consumers(&mut self, cx: &mut Context<'_>) -> bool {
        let budget = self.shared.stream_wait;
        if !self.shared.under_pressure() {
            if let Some((start, _)) = self.consumer_wait.take() {
                // The consumers drained their queues in time.
                let now = self.runtime.now();
                self.waited += now.saturating_duration_since(start);
                self.frames_since_wait = 0;
            }
            return false;
        }
        if self.waited >= budget {
            return false;
        }
        let left = budget - self.waited;
        let (_, wait) = self.consumer_wait.get_or_insert_with(|| {
            let now = self.runtime.now();
            let at = now.checked_add(left).unwrap_or(now);
            (now, Box::pin(self.runtime.sleep_until(at)))
        });
        if wait.as_mut().poll(cx).is_pending() {
            return true;
        }
        self.consumer_wait = None;
        self.waited = budget;
        self.frames_since_wait = 0;
        let stalled = self.shared.stall_pressing();
        if stalled > 0 {
            tracing::warn!(
                target: "ari_client",
                streams = stalled,
                "event stream consumers did not keep up within {:?}: reading on, their overflow \
                 is dropped (counted in Stats::dropped_events and Stats::stream_stalls)",
                self.shared.stream_wait
            );
        }
        false
    }

    /// Reads what the socket has (bounded). Returns whether something was read and whether
    /// the budget ran out.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> (bool, bool) {
        let mut read = false;
        for _ in 0..MAX_FRAMES_PER_WAKE {
            if self.ws.is_none() {
                return (read, false);
            }
            if self.waits_for_consumers(cx) {
                // Woken when a consumer drains its queue, or when the wait runs out.
                return (read, false);
            }
            let Some(ws) = self.ws.as_mut() else {
                return (read, false);
            };
            let item = match Pin::new(ws).poll_next(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => {
                    // Read empty: the budget of waits for consumers starts afresh.
                    self.waited = Duration::ZERO;
                    return (read, false);
                }
            };
            read = true;
            self.frames_since_wait += 1;
            if self.frames_since_wait >= MAX_FRAMES_PER_WAKE {
                self.waited = Duration::ZERO;
            }
            let now = self.runtime.now();
            match item {
                Some(Ok(WsMessage::Text(text))) => {
                    self.with_session(Some(now), |s| s.handle_text_frame(now, &text));
                }
                Some(Ok(WsMessage::Pong(_))) => {
                    self.with_session(Some(now), |s| s.handle_pong());
                }
                Some(Ok(WsMessage::Ping(_))) => {}
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let before = self
                        .shared
                        .counters
                        .binary_frames
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if before == 0 {
                        tracing::warn!(target: "ari_client", bytes = bytes.len(), "a binary frame on the events WebSocket (Asterisk sends none): ignored, counted in Stats::binary_frames");
                    }
                }
                Some(Ok(WsMessage::Close(close))) => {
                    // The answer to the close is queued by the WebSocket layer: written out
                    // before the socket is dropped (see `poll_answering`).
                    if let Some(ws) = self.ws.take() {
                        let at = now.checked_add(CLOSE_GRACE).unwrap_or(now);
                        self.answering = Some((ws, Box::pin(self.runtime.sleep_until(at))));
                    }
                    let code = close.as_ref().map(|c| c.code);
                    let reason = match close {
                        Some(c) if c.reason.is_empty() => {
                            format!("closed by Asterisk ({})", c.code)
                        }
                        Some(c) => format!("closed by Asterisk ({} {})", c.code, c.reason.as_str()),
                        None => "closed by Asterisk".to_string(),
                    };
                    self.socket_closed(now, code, reason);
                }
                Some(Err(e)) => self.socket_failed(now, e.to_string()),
                None => self.socket_failed(now, "connection ended".into()),
            }
        }
        (read, true)
    }

    /// Sends queued frames. Returns whether something was sent.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut sent = false;
        loop {
            let Some(ws) = self.ws.as_mut() else {
                return sent;
            };
            if self.outbox.is_empty() {
                break;
            }
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    let now = self.runtime.now();
                    self.socket_failed(now, e.to_string());
                    return true;
                }
                Poll::Pending => return sent,
            }
            let Some(msg) = self.outbox.pop_front() else {
                break;
            };
            if let Err(e) = Pin::new(&mut *ws).start_send(msg) {
                let now = self.runtime.now();
                self.socket_failed(now, e.to_string());
                return true;
            }
            sent = true;
            self.needs_flush = true;
        }
        if self.needs_flush {
            if let Some(ws) = self.ws.as_mut() {
                match Pin::new(ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.needs_flush = false;
                        if self.close_after_flush {
                            self.close_after_flush = false;
                            self.ws = None;
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        let now = self.runtime.now();
                        self.socket_failed(now, e.to_string());
                    }
                    Poll::Pending => {}
                }
            }
        } else if self.close_after_flush && self.outbox.is_empty() {
            self.close_after_flush = false;
            self.ws = None;
        }
        sent
    }

    /// Handles a due deadline and arms the timer for the next one. Returns whether a deadline
    /// was handled.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let next = {
            let st = self.shared.lock();
            st.session.poll_timeout()
        };
        let Some(deadline) = next else {
            self.timer = None;
            return false;
        };
        let now = self.runtime.now();
        if now >= deadline {
            self.timer = None;
            self.with_session(Some(now), |s| s.handle_timeout(now));
            return true;
        }
        if self.timer.as_ref().map(|(d, _)| *d) != Some(deadline) {
            self.timer = Some((deadline, Box::pin(self.runtime.sleep_until(deadline))));
        }
        if let Some((_, sleep)) = self.timer.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                self.timer = None;
                let now = self.runtime.now().max(deadline);
                self.with_session(Some(now), |s| s.handle_timeout(now));
                return true;
            }
        }
        false
    }
}

impl<R: Runtime> Driver<R> {
    /// Writes the answer to Asterisk's close frame, then drops that socket; at most
    /// [`CLOSE_GRACE`] (a peer that stopped reading). Returns whether it is done with it.
    fn poll_answering(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((ws, grace)) = self.answering.as_mut() else {
            return false;
        };
        if Pin::new(ws).poll_close(cx).is_pending() && grace.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.answering = None;
        true
    }

    /// Whether a closed client's driver may finish: its close frame is out, or the grace
    /// period passed.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> bool {
        if self.ws.is_none() || (self.outbox.is_empty() && !self.close_after_flush) {
            return true;
        }
        let grace = self.close_grace.get_or_insert_with(|| {
            let now = self.runtime.now();
            let at = now.checked_add(CLOSE_GRACE).unwrap_or(now);
            Box::pin(self.runtime.sleep_until(at))
        });
        if grace.as_mut().poll(cx).is_ready() {
            tracing::debug!(target: "ari_client", "the close frame could not be sent in time");
            return true;
        }
        false
    }
}

impl<R: Runtime> Future for Driver<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.driver.register(cx.waker());
        // `stop` numbers its call after giving the session its command: the commands of the
        // calls counted here are performed in this poll.
        let stops = this.shared.stops_requested();
        for _ in 0..MAX_ROUNDS_PER_WAKE {
            let mut progress = false;
            progress |= this.poll_attached();
            progress |= this.poll_connecting(cx);
            let (read, exhausted) = this.poll_read(cx);
            progress |= read;
            progress |= this.poll_timer(cx);
            progress |= this.poll_restart_check(cx);
            progress |= this.poll_answering(cx);
            // Commands issued by client handles since the last round (start, stop,
            // REST-over-WebSocket requests) left transmits and outputs in the session.
            progress |= this.with_session(None, |_| {});
            progress |= this.poll_write(cx);
            if stops > this.stops_acked && !this.close_after_flush {
                // The close frame of those stops is out (or there was no socket to close).
                this.stops_acked = stops;
                this.shared.stops_done(stops);
            }
            // Closed: finish once the close frame is out, or after a grace period (a peer
            // that stopped reading cannot hold the task).
            if this.shared.shutdown.load(Ordering::Acquire) && this.poll_closed(cx) {
                this.connecting = None;
                this.ws = None;
                this.timer = None;
                this.close_grace = None;
                this.answering = None;
                tracing::debug!(target: "ari_client", "driver finished");
                this.shared.driver_exited();
                return Poll::Ready(());
            }
            if exhausted {
                // More frames are waiting: let other tasks run, then come back.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The URI without its query (which may carry an `api_key`).
fn redact_uri(uri: &http::Uri) -> String {
    let mut s = String::new();
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(a) = uri.authority() {
        s.push_str(a.host());
        if let Some(p) = a.port_u16() {
            s.push(':');
            s.push_str(&p.to_string());
        }
    }
    s.push_str(uri.path());
    s
}
