//! State shared by the client handles and the driver task: the sans-IO session, the sinks of
//! the subscriptions, pending REST-over-WebSocket requests and connection listeners.
//!
//! Locking: one mutex around [`State`]. The driver drains the session's outputs under it into
//! a local list, releases it, then delivers (sinks never block and never call back into the
//! state while the lock is held). Anything that may run user code or drop a [`crate::Client`]
//! (handler sinks hold one) is dropped after the lock is released.

use std::collections::{HashMap, VecDeque};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ari_proto::events::{Event, ResourceKind};
use ari_proto::rest::{BaseUrl, RequestParts};
use ari_proto::session::{
    ConnectionEvent, EndReason, Filter, Keepalive, Limits, Output, RawResponse, ReconnectPolicy,
    RequestError, RequestId, SendError, Session, SessionConfig, SubscriptionId, Transmit, WsAuth,
};
use futures_util::task::AtomicWaker;

use crate::error::{Error, Lagged};

/// Options of the events side, set on the builder.
#[derive(Debug, Clone)]
pub(crate) struct EventOptions {
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) limits: Limits,
    pub(crate) ws_auth: WsAuth,
    pub(crate) subscribe_all: bool,
    pub(crate) rng_seed: Option<u64>,
    pub(crate) queue_capacity: usize,
    pub(crate) stasis_end_linger: Option<Duration>,
    pub(crate) max_running_handlers: usize,
    pub(crate) stream_wait: Duration,
}

/// How long the reader waits by default for a stream consumer whose queue is half full
/// (half of Asterisk's 100 ms write timeout).
pub(crate) const DEFAULT_STREAM_WAIT: Duration = Duration::from_millis(50);

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            reconnect: ReconnectPolicy::default(),
            keepalive: Some(Keepalive::default()),
            limits: Limits::default(),
            ws_auth: WsAuth::Basic,
            subscribe_all: false,
            rng_seed: None,
            queue_capacity: 1024,
            stasis_end_linger: Some(Duration::from_secs(2)),
            max_running_handlers: 100_000,
            stream_wait: DEFAULT_STREAM_WAIT,
        }
    }
}

/// A seed from the OS: `RandomState` keys come from the OS's randomness.
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish()
}

/// Why a sink was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The session ended the subscription (one-shot fired, or the resource ended).
    Ended(EndReason),
    /// The client was closed.
    Shutdown,
}

/// Where the events of one subscription go. Never blocks.
pub(crate) trait Sink: Send + Sync {
    /// Takes the event's `Arc` by value: the last subscriber of an event then holds the only
    /// reference and can take the event out of it without cloning. Takes the sink's own `Arc`
    /// too (the one routing handed out), which a handler keeps while its call waits.
    ///
    /// `clock` is the runtime's time when the previous call on the reader ended (the frame
    /// was read, or the last handler's first poll returned), if known: a handler's first
    /// poll is timed from it and leaves its own end there, so each handler call reads the
    /// clock once.
    fn deliver(self: Arc<Self>, event: Arc<Event>, clock: &mut Option<Instant>);
    fn close(&self, reason: CloseReason);
}

/// Where connection events go.
pub(crate) trait ConnSink: Send + Sync {
    /// Returns false when the sink wants no more events.
    fn deliver(&self, event: &ConnectionEvent) -> bool;
    fn close(&self);
}

/// A subscription's sink, kept by the session with the subscription: routing hands it out
/// with each event, no lookup by id.
#[derive(Clone)]
pub(crate) struct SinkRef(pub(crate) Arc<dyn Sink>);

impl std::fmt::Debug for SinkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkRef")
    }
}

/// The session as the client drives it: each subscription carries its sink.
pub(crate) type ClientSession = Session<SinkRef>;

pub(crate) struct State {
    pub(crate) session: ClientSession,
    pending: HashMap<RequestId, Arc<Slot<Result<RawResponse, RequestError>>>>,
    conn_sinks: Vec<Arc<dyn ConnSink>>,
    closed: bool,
}

/// Counters the client keeps besides the session's.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dropped_events: AtomicU64,
    pub(crate) session_dropped: AtomicU64,
    pub(crate) handler_calls: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) ws_fallbacks: AtomicU64,
    pub(crate) slow_first_polls: AtomicU64,
    pub(crate) stream_stalls: AtomicU64,
    pub(crate) binary_frames: AtomicU64,
}

/// A socket Asterisk opened, handed to the driver with the text frames already read from it.
pub(crate) struct Attached {
    /// The runtime's `Ws`, type-erased.
    pub(crate) ws: Box<dyn std::any::Any + Send>,
    /// Text frames read before the handover, handled first.
    pub(crate) first: Vec<String>,
    /// The handover's number (see [`Shared::poll_attached`]).
    pub(crate) n: u64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) driver: AtomicWaker,
    pub(crate) shutdown: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) queue_capacity: usize,
    pub(crate) max_running_handlers: usize,
    /// How long the reader waits for stream consumers under pressure (zero: never).
    pub(crate) stream_wait: Duration,
    /// Stream queues past their high-water mark whose consumer the reader waits for.
    pressure: Mutex<Vec<Weak<Queue>>>,
    /// `pressure.len()`, read by the reader before each frame without the lock.
    pressing: AtomicUsize,
    watches: Mutex<HashMap<(ResourceKind, String), Weak<Watch>>>,
    /// What `stop` and `close` wait for: the driver's progress on closing.
    lifecycle: Mutex<Lifecycle>,
    /// Accepted mode (outbound WebSocket): a socket Asterisk opened, waiting for the driver
    /// (the runtime's `Ws`, type-erased: `Shared` is not generic).
    attach: Mutex<Option<Attached>>,
    /// Asterisk's `status.startup_time`, learnt by `connect()`: a reconnect that finds
    /// another one means Asterisk restarted (see [`Session::handle_asterisk_restarted`]).
    pub(crate) startup_time: Mutex<Option<ari_proto::Timestamp>>,
}

/// The driver's progress on stopping and closing, and who waits for it.
#[derive(Default)]
struct Lifecycle {
    /// Sockets handed to the driver in accepted mode (each one numbered).
    attaches_requested: u64,
    /// The last handover the driver has completed (socket taken, session told).
    attaches_done: u64,
    /// `stop` calls made (each one numbered).
    stops_requested: u64,
    /// The last `stop` whose close frame the driver has sent (or that had no socket to close).
    stops_done: u64,
    /// The driver has exited (or was dropped by its runtime).
    exited: bool,
    wakers: Vec<Waker>,
}

impl Shared {
    pub(crate) fn new(
        endpoint: BaseUrl,
        opts: EventOptions,
        request_timeout: Duration,
    ) -> Arc<Shared> {
        let config = SessionConfig::default()
            .subscribe_all(opts.subscribe_all)
            .auth(opts.ws_auth)
            .reconnect(opts.reconnect.clone())
            .keepalive(opts.keepalive)
            .request_timeout(request_timeout)
            .limits(opts.limits)
            .stasis_end_linger(opts.stasis_end_linger)
            .rng_seed(opts.rng_seed.unwrap_or_else(os_seed));
        let session = Session::with_subscription_data(endpoint, config);
        Shared::from_session(session, opts)
    }

    /// The state of a client whose connection Asterisk opens (outbound WebSocket): an
    /// accepted session, which never dials.
    pub(crate) fn new_accepted(
        opts: EventOptions,
        request_timeout: Duration,
        peer_timeout: Option<Duration>,
    ) -> Arc<Shared> {
        let config = SessionConfig::default()
            .peer_timeout(peer_timeout)
            .subscribe_all(opts.subscribe_all)
            .keepalive(opts.keepalive)
            .request_timeout(request_timeout)
            .limits(opts.limits)
            .stasis_end_linger(opts.stasis_end_linger)
            .rng_seed(opts.rng_seed.unwrap_or_else(os_seed));
        let session = Session::accepted_with_subscription_data(config);
        Shared::from_session(session, opts)
    }

    fn from_session(session: ClientSession, opts: EventOptions) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                session,
                pending: HashMap::new(),
                conn_sinks: Vec::new(),
                closed: false,
            }),
            driver: AtomicWaker::new(),
            shutdown: AtomicBool::new(false),
            counters: Counters::default(),
            queue_capacity: opts.queue_capacity.max(1),
            // A handler's count of running calls is 32 bits (`InFlight`).
            max_running_handlers: opts.max_running_handlers.clamp(1, u32::MAX as usize),
            stream_wait: opts.stream_wait,
            pressure: Mutex::new(Vec::new()),
            pressing: AtomicUsize::new(0),
            watches: Mutex::new(HashMap::new()),
            lifecycle: Mutex::new(Lifecycle::default()),
            attach: Mutex::new(None),
            startup_time: Mutex::new(None),
        })
    }

    /// Hands a socket Asterisk opened to the driver (accepted mode); a socket not taken yet
    /// is replaced (dropped, which closes it). `first` holds text frames already read from
    /// it (the adapter may read the first one to learn which call it belongs to): the
    /// session handles them before anything else the socket brings.
    ///
    /// Returns the handover's number: [`Shared::poll_attached`] with it is ready once the
    /// driver uses the socket (requests made from then on go over it).
    pub(crate) fn attach(&self, ws: Box<dyn std::any::Any + Send>, first: Vec<String>) -> u64 {
        let n = {
            let mut g = self.lifecycle();
            g.attaches_requested += 1;
            g.attaches_requested
        };
        *self.attach.lock().unwrap_or_else(|p| p.into_inner()) = Some(Attached { ws, first, n });
        self.driver.wake();
        n
    }

    /// Whether a socket handed over with [`Shared::attach`] is not used by the driver yet.
    pub(crate) fn attach_pending(&self) -> bool {
        let g = self.lifecycle();
        g.attaches_requested > g.attaches_done
    }

    /// The driver has taken over handover `n` (and every earlier one).
    pub(crate) fn attach_done(&self, n: u64) {
        let wakers = {
            let mut g = self.lifecycle();
            if n <= g.attaches_done {
                return;
            }
            g.attaches_done = n;
            std::mem::take(&mut g.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ready once the driver uses the socket of handover `n` (or a later one), or has exited.
    pub(crate) fn poll_attached(&self, n: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_lifecycle(cx, |g| g.attaches_done >= n)
    }

    /// The socket waiting for the driver, if any.
    pub(crate) fn take_attached(&self) -> Option<Attached> {
        self.attach.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn lifecycle(&self) -> MutexGuard<'_, Lifecycle> {
        self.lifecycle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers a `stop` whose command was just given to the session; wait for it with
    /// [`Shared::poll_stop_done`].
    pub(crate) fn request_stop(&self) -> u64 {
        let mut g = self.lifecycle();
        g.stops_requested += 1;
        g.stops_requested
    }

    /// The `stop` calls the driver has seen so far (read before it processes commands).
    pub(crate) fn stops_requested(&self) -> u64 {
        self.lifecycle().stops_requested
    }

    /// The driver has sent the close frame of every `stop` up to `n` (or had no socket).
    pub(crate) fn stops_done(&self, n: u64) {
        let wakers = {
            let mut g = self.lifecycle();
            if n <= g.stops_done {
                return;
            }
            g.stops_done = n;
            std::mem::take(&mut g.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The driver is gone: every waiter completes.
    pub(crate) fn driver_exited(&self) {
        let wakers = {
            let mut g = self.lifecycle();
            g.exited = true;
            std::mem::take(&mut g.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    fn poll_lifecycle(&self, cx: &mut Context<'_>, done: impl Fn(&Lifecycle) -> bool) -> Poll<()> {
        let mut g = self.lifecycle();
        if g.exited || done(&g) {
            return Poll::Ready(());
        }
        if !g.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            g.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Ready once stop `n`'s close frame is sent, or the driver has exited.
    pub(crate) fn poll_stop_done(&self, n: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_lifecycle(cx, |g| g.stops_done >= n)
    }

    /// Ready once the driver has exited.
    pub(crate) fn poll_exited(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_lifecycle(cx, |_| false)
    }

    /// Locks the state; a poisoned lock (a panic elsewhere) is recovered: the state is only
    /// ever mutated through the session's panic-free methods and map operations.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }

    pub(crate) fn new_resource_id(&self) -> String {
        self.lock().session.new_resource_id()
    }

    pub(crate) fn live_subscriptions(&self) -> usize {
        self.lock().session.live_subscriptions()
    }

    /// Registers `sink` for `filter`. Synchronous: an event handled after this returns is
    /// routed to it.
    pub(crate) fn subscribe(&self, filter: Filter, sink: Arc<dyn Sink>) -> SubscriptionId {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            sink.close(CloseReason::Shutdown);
            // A subscription that is already over; never live.
            return self.dead_subscription(sink);
        }
        if filter
            .resource_ref()
            .is_some_and(|(kind, id)| st.session.has_ended(kind, id))
        {
            // Its resource already received its final event: over at once, not waiting
            // for events that will never come.
            drop(st);
            sink.close(CloseReason::Ended(EndReason::ResourceEnded));
            return self.dead_subscription(sink);
        }
        st.session.subscribe_with(filter, SinkRef(sink))
    }

    /// See [`Session::forget_ended`](ari_proto::session::Session::forget_ended).
    pub(crate) fn forget_ended(&self, kind: ResourceKind, id: &str) -> bool {
        self.lock().session.forget_ended(kind, id)
    }

    /// The application's `DELETE /bridges/{id}` succeeded: see
    /// [`Session::bridge_destroyed`](ari_proto::session::Session::bridge_destroyed). Wakes
    /// the driver, whose next deadline may now be the bridge's linger.
    pub(crate) fn bridge_destroyed(&self, now: Instant, id: &str) {
        self.command(|s| s.bridge_destroyed(now, id));
    }

    fn dead_subscription(&self, sink: Arc<dyn Sink>) -> SubscriptionId {
        // Subscribe and unsubscribe at once so the id is valid and never reused.
        let (id, sink) = {
            let mut st = self.lock();
            let id = st
                .session
                .subscribe_with(Filter::event_type("\u{0}closed"), SinkRef(sink));
            (id, st.session.remove_subscription(id))
        };
        drop(sink);
        id
    }

    /// Removes a subscription (no-op if it already ended).
    pub(crate) fn unsubscribe(&self, id: SubscriptionId) {
        let sink = {
            let mut st = self.lock();
            st.session.remove_subscription(id)
        };
        drop(sink);
    }

    pub(crate) fn is_subscribed(&self, id: SubscriptionId) -> bool {
        self.lock().session.is_subscribed(id)
    }

    pub(crate) fn add_conn_sink(&self, sink: Arc<dyn ConnSink>) {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            sink.close();
            return;
        }
        st.conn_sinks.push(sink);
    }

    pub(crate) fn remove_conn_sink(&self, sink: &Arc<dyn ConnSink>) {
        let removed = {
            let mut st = self.lock();
            let before = st.conn_sinks.len();
            let mut removed = Vec::new();
            st.conn_sinks.retain(|s| {
                if Arc::ptr_eq(s, sink) {
                    removed.push(s.clone());
                    false
                } else {
                    true
                }
            });
            debug_assert!(before >= st.conn_sinks.len());
            removed
        };
        drop(removed);
    }

    /// Sends a REST request over the WebSocket. `Ok(None)`: not possible now (not connected,
    /// or too many pending), use HTTP.
    pub(crate) fn send_request(
        &self,
        now: Instant,
        parts: &RequestParts,
    ) -> Result<Option<SlotFuture<Result<RawResponse, RequestError>>>, Error> {
        let mut st = self.lock();
        if st.closed {
            return Err(Error::closed("the client is closed"));
        }
        match st.session.send_request_parts(now, parts) {
            Ok(id) => {
                let slot = Arc::new(Slot::new());
                st.pending.insert(id, slot.clone());
                drop(st);
                self.wake_driver();
                Ok(Some(SlotFuture { slot }))
            }
            Err(SendError::NotConnected) | Err(SendError::TooManyPending { .. }) => {
                self.counters.ws_fallbacks.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Err(SendError::Build(e)) => Err(Error::Build(e)),
            Err(e) => Err(Error::Transport(crate::TransportError::new(
                crate::TransportErrorKind::Closed,
                e.to_string(),
            ))),
        }
    }

    /// Runs a command on the session and wakes the driver to perform what it emits.
    pub(crate) fn command<T>(&self, f: impl FnOnce(&mut ClientSession) -> T) -> T {
        let out = f(&mut self.lock().session);
        self.wake_driver();
        out
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Closes everything: stops the session, ends every subscription and listener. The driver
    /// performs the final close and exits.
    pub(crate) fn shutdown(&self) {
        let (sinks, conns, pending) = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.session.stop();
            let sinks: Vec<Arc<dyn Sink>> = st
                .session
                .remove_all_subscriptions()
                .into_iter()
                .map(|(_, s)| s.0)
                .collect();
            let conns = std::mem::take(&mut st.conn_sinks);
            let pending: Vec<_> = st.pending.drain().map(|(_, s)| s).collect();
            (sinks, conns, pending)
        };
        self.shutdown.store(true, Ordering::Release);
        for s in &sinks {
            s.close(CloseReason::Shutdown);
        }
        for c in &conns {
            c.deliver(&ConnectionEvent::Closed);
            c.close();
        }
        for p in &pending {
            p.fill(Err(RequestError::Closed));
        }
        drop((sinks, conns, pending));
        self.wake_driver();
    }

    /// Drains the session's outputs into deliveries; call with the lock held, deliver after
    /// releasing it.
    pub(crate) fn drain_outputs(&self, st: &mut State, out: &mut Vec<Dispatch>) {
        while let Some(o) = st.session.poll_output() {
            match o {
                Output::Event(delivery) => {
                    let event = delivery.event;
                    for sink in delivery.subscribers.into_data() {
                        out.push(Dispatch::Event(sink.0, event.clone()));
                    }
                }
                Output::Connection(ev) => {
                    out.push(Dispatch::Connection(st.conn_sinks.clone(), ev));
                }
                Output::Response { id, result, .. } => {
                    if let Some(slot) = st.pending.remove(&id) {
                        out.push(Dispatch::Response(slot, result));
                    }
                }
                Output::SubscriptionEnded { reason, data, .. } => {
                    out.push(Dispatch::Ended(data.0, reason));
                }
                Output::Overflow { dropped, .. } => {
                    self.counters
                        .session_dropped
                        .fetch_add(dropped, Ordering::Relaxed);
                    self.counters
                        .dropped_events
                        .fetch_add(dropped, Ordering::Relaxed);
                    out.push(Dispatch::Log(format!(
                        "{dropped} events dropped: the session's output queue was full"
                    )));
                }
                Output::Warning(w) => out.push(Dispatch::Log(w.to_string())),
                _ => {}
            }
        }
    }

    /// Delivers drained outputs (without the lock).
    /// `now` is the time the driver read (see [`Sink::deliver`]).
    pub(crate) fn dispatch(&self, items: &mut Vec<Dispatch>, now: Option<Instant>) {
        let mut dead_conns: Vec<Arc<dyn ConnSink>> = Vec::new();
        let mut clock = now;
        for item in items.drain(..) {
            match item {
                Dispatch::Event(sink, event) => sink.deliver(event, &mut clock),
                Dispatch::Ended(sink, reason) => sink.close(CloseReason::Ended(reason)),
                Dispatch::Response(slot, result) => slot.fill(result),
                Dispatch::Connection(sinks, ev) => {
                    log_connection(&ev);
                    for s in sinks {
                        if !s.deliver(&ev) {
                            dead_conns.push(s);
                        }
                    }
                }
                Dispatch::Log(msg) => tracing::warn!(target: "ari_client", "{msg}"),
            }
        }
        for s in dead_conns {
            self.remove_conn_sink(&s);
        }
    }

    // ---- backpressure: the reader waits (boundedly) for stream consumers ---------------------

    /// Whether a stream queue is past its high-water mark with a consumer the reader should
    /// wait for.
    pub(crate) fn under_pressure(&self) -> bool {
        self.pressing.load(Ordering::SeqCst) > 0
    }

    fn pressure_list(&self) -> MutexGuard<'_, Vec<Weak<Queue>>> {
        self.pressure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader's wait ran out: every queue still under pressure has a consumer that truly
    /// stalls. They press no more until drained (their overflow is counted as before).
    /// Returns how many there were.
    pub(crate) fn stall_pressing(&self) -> usize {
        // The queues are dropped after the lock is released (a queue's drop takes it).
        let stalled: Vec<Arc<Queue>> = {
            let mut list = self.pressure_list();
            let queues: Vec<Arc<Queue>> = list.drain(..).filter_map(|w| w.upgrade()).collect();
            for q in &queues {
                let _ = q.pressure.compare_exchange(
                    PRESSING,
                    STALLED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
            self.pressing.store(0, Ordering::SeqCst);
            queues
        };
        let n = stalled.len();
        drop(stalled);
        self.counters
            .stream_stalls
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn press(&self, q: &Arc<Queue>) {
        let mut list = self.pressure_list();
        if q.pressure
            .compare_exchange(NO_PRESSURE, PRESSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        // The consumer may have drained it meanwhile (seeing no pressure yet): then it does
        // not press.
        if q.len() <= q.low {
            q.pressure.store(NO_PRESSURE, Ordering::SeqCst);
            return;
        }
        list.push(Arc::downgrade(q));
        self.pressing.store(list.len(), Ordering::SeqCst);
    }

    /// `q` was drained below its low-water mark (or ended): it presses no more. Returns
    /// whether the reader was waiting for it.
    fn release(&self, q: &Queue) -> bool {
        let mut list = self.pressure_list();
        if q.pressure.swap(NO_PRESSURE, Ordering::SeqCst) != PRESSING {
            return false;
        }
        list.retain(|w| !std::ptr::eq(w.as_ptr(), q));
        self.pressing.store(list.len(), Ordering::SeqCst);
        true
    }

    pub(crate) fn take_transmit(st: &mut State) -> Option<Transmit> {
        st.session.poll_transmit()
    }

    // ---- watches: early subscriptions of playbacks and recordings --------------------------

    /// The watch of a resource's end, creating it (and its subscription) if needed.
    pub(crate) fn watch(self: &Arc<Self>, kind: ResourceKind, id: &str) -> Arc<Watch> {
        let key = (kind, id.to_string());
        let mut map = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        let latch = Arc::new(Latch::default());
        let sub = self.subscribe(Filter::resource(kind, id), latch.clone());
        let w = Arc::new(Watch {
            shared: Arc::downgrade(self),
            key: key.clone(),
            sub,
            latch,
        });
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(key, Arc::downgrade(&w));
        w
    }

    /// Whether the session remembers the resource as ended (its final event was routed).
    pub(crate) fn has_ended(&self, kind: ResourceKind, id: &str) -> bool {
        self.lock().session.has_ended(kind, id)
    }

    /// How the live recording `name` ended, as far as the session remembers: `None` if it
    /// is not remembered as ended, `Some(None)` if it finished, `Some(Some(cause))` if it
    /// failed (`cause` empty when Asterisk gave none).
    pub(crate) fn recording_end(&self, name: &str) -> Option<Option<String>> {
        let st = self.lock();
        if !st.session.has_ended(ResourceKind::Recording, name) {
            return None;
        }
        Some(st.session.recording_failure(name).map(str::to_string))
    }

    /// The existing watch of a resource, if any.
    pub(crate) fn find_watch(&self, kind: ResourceKind, id: &str) -> Option<Arc<Watch>> {
        let map = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(kind, id.to_string())).and_then(Weak::upgrade)
    }
}

fn log_connection(ev: &ConnectionEvent) {
    match ev {
        ConnectionEvent::Connected { reconnected, .. } => {
            tracing::info!(target: "ari_client", reconnected, "events WebSocket connected")
        }
        ConnectionEvent::Reconnecting {
            attempt,
            delay,
            reason,
            ..
        } => tracing::warn!(
            target: "ari_client",
            attempt,
            delay_ms = delay.as_millis() as u64,
            %reason,
            "events WebSocket lost; reconnecting"
        ),
        ConnectionEvent::MaxRetries {
            attempts, reason, ..
        } => tracing::error!(
            target: "ari_client",
            attempts,
            %reason,
            "events WebSocket: giving up reconnecting"
        ),
        ConnectionEvent::Closed => tracing::info!(target: "ari_client", "events WebSocket closed"),
        ConnectionEvent::PeerGone { waited, ended, .. } => tracing::warn!(
            target: "ari_client",
            waited_ms = waited.as_millis() as u64,
            ended,
            "Asterisk did not open a new connection in time: the waits of the lost \
             connection's calls ended"
        ),
        ConnectionEvent::ApplicationsUnregistered {
            applications,
            ended,
            ..
        } => tracing::warn!(
            target: "ari_client",
            ?applications,
            ended,
            "Asterisk unregistered the applications (configuration removed) and closed the \
             connection: the waits of its calls ended"
        ),
        _ => tracing::info!(target: "ari_client", event = ?ev, "events WebSocket"),
    }
}

/// One thing to deliver after the lock is released.
pub(crate) enum Dispatch {
    Event(Arc<dyn Sink>, Arc<Event>),
    Ended(Arc<dyn Sink>, EndReason),
    Response(
        Arc<Slot<Result<RawResponse, RequestError>>>,
        Result<RawResponse, RequestError>,
    ),
    Connection(Vec<Arc<dyn ConnSink>>, ConnectionEvent),
    Log(String),
}

// ---- one-shot slot ------------------------------------------------------------------------

/// A value filled once, awaited once.
pub(crate) struct Slot<T> {
    inner: Mutex<(Option<T>, Option<Waker>)>,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot {
            inner: Mutex::new((None, None)),
        }
    }

    pub(crate) fn fill(&self, v: T) {
        let waker = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if g.0.is_none() {
                g.0 = Some(v);
            }
            g.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Awaits a [`Slot`].
pub(crate) struct SlotFuture<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Slot<T> {
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    pub(crate) fn is_filled(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .is_some()
    }
}

impl<T> Future for SlotFuture<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.slot.poll_take(cx)
    }
}

// ---- bounded queue --------------------------------------------------------------------------

/// One item of a [`Queue`]: an event, or the number of events dropped before it.
pub(crate) enum QueueItem {
    Event(Arc<Event>),
    Lagged(u64),
}

/// The bounded queue behind a stream or an awaited event.
///
/// Overflow policy (as tokio's broadcast channel): when `capacity` events are queued and
/// another arrives, the *oldest* queued event is dropped, counted in the client's
/// `dropped_events`, and the consumer's next item is a [`Lagged`] with the number dropped
/// since it last read; then it continues with the oldest event kept. The newest events,
/// including a resource's final one, are always kept. The reader of the socket is never
/// blocked.
pub(crate) struct Queue {
    inner: Mutex<QueueInner>,
    capacity: usize,
    shared: Weak<Shared>,
    /// Past `high` events the queue presses: the reader waits (boundedly) for its consumer
    /// to drain it to `low` before reading on. Zero: never presses (one-shot queues).
    high: usize,
    low: usize,
    /// [`NO_PRESSURE`], [`PRESSING`] or [`STALLED`]; changed under `Shared::pressure`.
    pressure: AtomicU8,
}

/// The queue is below its high-water mark (or was drained back to its low-water mark).
const NO_PRESSURE: u8 = 0;
/// Past the high-water mark: the reader waits for the consumer.
const PRESSING: u8 = 1;
/// The consumer did not drain it within the reader's wait: the reader no longer waits for
/// it until it is drained to the low-water mark.
const STALLED: u8 = 2;

struct QueueInner {
    items: VecDeque<Arc<Event>>,
    lagged: u64,
    closed: Option<CloseReason>,
    waker: Option<Waker>,
}

impl Queue {
    /// A queue of the client's capacity; `backpressure`: the reader waits for its consumer
    /// when it is half full (not for one-shot queues, which hold one event).
    pub(crate) fn new(shared: &Arc<Shared>, backpressure: bool) -> Arc<Queue> {
        let capacity = shared.queue_capacity;
        let high = if backpressure && !shared.stream_wait.is_zero() {
            capacity.div_ceil(2)
        } else {
            0
        };
        Arc::new(Queue {
            inner: Mutex::new(QueueInner {
                items: VecDeque::new(),
                lagged: 0,
                closed: None,
                waker: None,
            }),
            capacity,
            shared: Arc::downgrade(shared),
            high,
            low: capacity / 4,
            pressure: AtomicU8::new(NO_PRESSURE),
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next item; `Err(reason)` once closed and drained.
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<QueueItem, Option<CloseReason>>> {
        let mut g = self.lock();
        if g.lagged > 0 {
            let n = std::mem::take(&mut g.lagged);
            return Poll::Ready(Ok(QueueItem::Lagged(n)));
        }
        if let Some(e) = g.items.pop_front() {
            let drained = g.items.len() <= self.low;
            drop(g);
            if drained {
                self.drained();
            }
            return Poll::Ready(Ok(QueueItem::Event(e)));
        }
        if let Some(reason) = g.closed {
            return Poll::Ready(Err(Some(reason)));
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Drained to the low-water mark: presses no more; wakes the reader if it waited.
    fn drained(&self) {
        if self.pressure.load(Ordering::SeqCst) == NO_PRESSURE {
            return;
        }
        if let Some(s) = self.shared.upgrade() {
            if s.release(self) {
                s.wake_driver();
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

impl Sink for Queue {
    fn deliver(self: Arc<Self>, event: Arc<Event>, _clock: &mut Option<Instant>) {
        let waker = {
            let mut g = self.lock();
            if g.closed.is_some() {
                return;
            }
            if g.items.len() >= self.capacity {
                g.items.pop_front();
                g.lagged += 1;
                if let Some(s) = self.shared.upgrade() {
                    s.counters.dropped_events.fetch_add(1, Ordering::Relaxed);
                }
            }
            g.items.push_back(event);
            let press = self.high > 0
                && g.items.len() >= self.high
                && self.pressure.load(Ordering::SeqCst) == NO_PRESSURE;
            (g.waker.take(), press)
        };
        let (waker, press) = waker;
        if press {
            if let Some(s) = self.shared.upgrade() {
                s.press(&self);
            }
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn close(&self, reason: CloseReason) {
        let waker = {
            let mut g = self.lock();
            g.closed.get_or_insert(reason);
            g.waker.take()
        };
        // Nothing more arrives: the reader need not wait for this consumer.
        self.drained();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // A stream dropped while pressing: the reader must not wait for it.
        self.drained();
    }
}

/// An event or a lag marker; or the end of the subscription (with its reason, if known).
pub(crate) type QueuePoll = Result<Result<Arc<Event>, Lagged>, Option<CloseReason>>;

/// Removes its subscription when dropped.
pub(crate) struct SubGuard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: SubscriptionId,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.id);
    }
}

/// A subscription feeding a queue, removed when dropped.
pub(crate) struct QueueSub {
    pub(crate) queue: Arc<Queue>,
    pub(crate) guard: SubGuard,
}

impl QueueSub {
    pub(crate) fn new(shared: &Arc<Shared>, filter: Filter) -> QueueSub {
        let backpressure = !filter.is_once();
        let queue = Queue::new(shared, backpressure);
        let id = shared.subscribe(filter, queue.clone());
        QueueSub {
            queue,
            guard: SubGuard {
                shared: shared.clone(),
                id,
            },
        }
    }

    /// Next event or lag marker; `Err(reason)` at the end.
    pub(crate) fn poll_item(&self, cx: &mut Context<'_>) -> Poll<QueuePoll> {
        match self.queue.poll_next(cx) {
            Poll::Ready(Ok(QueueItem::Event(e))) => Poll::Ready(Ok(Ok(e))),
            Poll::Ready(Ok(QueueItem::Lagged(n))) => Poll::Ready(Ok(Err(Lagged(n)))),
            Poll::Ready(Err(r)) => Poll::Ready(Err(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}

// ---- latch: a resource's final event -------------------------------------------------------

/// Records the final event of a resource (or that it cannot come any more) for any number of
/// waiters.
#[derive(Default)]
pub(crate) struct Latch {
    inner: Mutex<LatchInner>,
}

#[derive(Default)]
struct LatchInner {
    outcome: Option<LatchOutcome>,
    wakers: Vec<Waker>,
}

#[derive(Clone)]
pub(crate) enum LatchOutcome {
    /// The final event.
    Final(Arc<Event>),
    /// The subscription ended without it.
    Closed(CloseReason),
}

impl Latch {
    fn set(&self, outcome: LatchOutcome) {
        let wakers = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if g.outcome.is_some() {
                return;
            }
            g.outcome = Some(outcome);
            std::mem::take(&mut g.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<LatchOutcome> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &g.outcome {
            Some(o) => Poll::Ready(o.clone()),
            None => {
                if !g.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    g.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Sink for Latch {
    fn deliver(self: Arc<Self>, event: Arc<Event>, _clock: &mut Option<Instant>) {
        if event.ended_resource().is_some() {
            // Routed to this resource's subscription and final: it is this resource's end
            // (the session checks the id; other resources' final events, e.g. a playback's
            // channel being destroyed, do not end it).
            self.set(LatchOutcome::Final(event));
        }
    }

    fn close(&self, reason: CloseReason) {
        self.set(LatchOutcome::Closed(reason));
    }
}

/// An early subscription to a playback's or recording's end, shared by every instance object
/// of that resource; removed when the last one is dropped.
pub(crate) struct Watch {
    pub(crate) shared: Weak<Shared>,
    pub(crate) key: (ResourceKind, String),
    sub: SubscriptionId,
    pub(crate) latch: Arc<Latch>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.unsubscribe(self.sub);
            let mut map = shared.watches.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&self.key);
            }
        }
    }
}
