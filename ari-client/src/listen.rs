//! Events: handlers, awaitable events and streams, on the client and on instance objects.
//!
//! Routing by event type and by resource happens in the session (hash maps); a listener only
//! ever sees the events it subscribed to. Every subscription has a bounded queue (streams,
//! awaited events) or spawns its handler per event; nothing here ever blocks the task that
//! reads the WebSocket.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use ari_proto::events::{self as ev, Event, EventType};
use ari_proto::session::{ConnectionEvent, EndReason, Filter, SubscriptionId};
use futures_core::Stream;
use futures_util::FutureExt;

use crate::client::Inner;
use crate::error::{Error, Lagged};
use crate::instances::{Bridge, Channel, DeviceState, Endpoint, LiveRecording, Playback};
use crate::shared::{CloseReason, ConnSink, QueueSub, Shared, Sink, Slot, SubGuard};
use crate::{Client, Runtime, Wrap};

/// A client reference that does not keep the client alive: what handler sinks, client streams
/// and client awaited events hold, so dropping the last user handle shuts the client down
/// whatever is still registered (as the connection handlers already did).
pub(crate) struct WeakClient<R: Runtime>(Weak<Inner<R>>);

impl<R: Runtime> WeakClient<R> {
    pub(crate) fn new(client: &Client<R>) -> Self {
        WeakClient(Arc::downgrade(&client.inner))
    }

    /// The client, while some user handle keeps it alive.
    pub(crate) fn upgrade(&self) -> Option<Client<R>> {
        self.0.upgrade().map(|inner| Client { inner })
    }
}

/// An event type handlers and streams can be typed with, and the live instance objects it
/// hands to handlers next to the event, as node-ari-client's `function (event, channel)`.
///
/// | event | instances |
/// |---|---|
/// | `StasisStart`, `StasisEnd`, `ChannelDtmfReceived`, `ChannelHangupRequest`, `ChannelStateChange`, other `Channel*` events with one channel | [`Channel`] |
/// | `ChannelVarset` | `Option<Channel>` (none for a global variable) |
/// | `ChannelEnteredBridge` | `(Bridge, Option<Channel>)` |
/// | `ChannelLeftBridge` | `(Bridge, Channel)` |
/// | `BridgeCreated`, `BridgeDestroyed`, `BridgeVideoSourceChanged` | [`Bridge`] |
/// | `BridgeMerged` | `(Bridge, Bridge)` (`bridge`, `bridge_from`) |
/// | `BridgeBlindTransfer` | `(Channel, Option<Bridge>)` |
/// | `BridgeAttendedTransfer` | `(Channel, Channel)` (first and second leg of the transferer) |
/// | `PlaybackStarted`, `PlaybackContinuing`, `PlaybackFinished` | [`Playback`] |
/// | `RecordingStarted`, `RecordingFinished`, `RecordingFailed` | [`LiveRecording`] |
/// | `EndpointStateChange`, `PeerStatusChange`, `ContactStatusChange` | [`Endpoint`] |
/// | `TextMessageReceived` | `Option<Endpoint>` |
/// | `DeviceStateChanged` | [`DeviceState`] |
/// | `Dial` | [`DialParties`] |
/// | `ChannelUserevent` | `(Option<Channel>, Option<Bridge>, Option<Endpoint>)` |
/// | application events, `ChannelTransfer`, `MissingParams`, `RESTResponse` | `()` |
pub trait ClientEvent<R: Runtime>: EventType + Clone + Send + Sync + 'static {
    /// The instance objects handed to handlers.
    type Instances: Send + 'static;
    /// Builds them from the event's snapshots, which they share (no copy).
    fn instances(&self, client: &Client<R>) -> Self::Instances;
}

macro_rules! client_event {
    ($inst:ident . $field:ident : $($t:ident),* $(,)?) => {
        $(
            impl<R: Runtime> ClientEvent<R> for ev::$t {
                type Instances = $inst<R>;
                fn instances(&self, client: &Client<R>) -> $inst<R> {
                    self.$field.clone().wrap(client)
                }
            }
        )*
    };
    (() : $($t:ident),* $(,)?) => {
        $(
            impl<R: Runtime> ClientEvent<R> for ev::$t {
                type Instances = ();
                fn instances(&self, _client: &Client<R>) {}
            }
        )*
    };
}

client_event!(Channel.channel: ApplicationMoveFailed, CallBroadcast, CallClaimed, ChannelCallerId,
    ChannelConnectedLine, ChannelCreated, ChannelDestroyed, ChannelDialplan, ChannelDtmfReceived,
    ChannelHangupRequest, ChannelHold, ChannelStateChange, ChannelTalkingFinished,
    ChannelTalkingStarted, ChannelToneDetected, ChannelUnhold, StasisEnd, StasisStart);
client_event!(Bridge.bridge: BridgeCreated, BridgeDestroyed, BridgeVideoSourceChanged);
client_event!(Playback.playback: PlaybackStarted, PlaybackContinuing, PlaybackFinished);
client_event!(LiveRecording.recording: RecordingStarted, RecordingFinished, RecordingFailed);
client_event!(Endpoint.endpoint: EndpointStateChange, PeerStatusChange, ContactStatusChange);
client_event!(DeviceState.device_state: DeviceStateChanged);
client_event!((): ApplicationRegistered, ApplicationReplaced, ApplicationUnregistered,
    ChannelTransfer, MissingParams, RESTResponse);

impl<R: Runtime> ClientEvent<R> for ev::ChannelVarset {
    type Instances = Option<Channel<R>>;
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        self.channel.clone().map(|c| c.wrap(client))
    }
}

impl<R: Runtime> ClientEvent<R> for ev::ChannelEnteredBridge {
    type Instances = (Bridge<R>, Option<Channel<R>>);
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        (
            self.bridge.clone().wrap(client),
            self.channel.clone().map(|c| c.wrap(client)),
        )
    }
}

impl<R: Runtime> ClientEvent<R> for ev::ChannelLeftBridge {
    type Instances = (Bridge<R>, Channel<R>);
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        (
            self.bridge.clone().wrap(client),
            self.channel.clone().wrap(client),
        )
    }
}

impl<R: Runtime> ClientEvent<R> for ev::BridgeMerged {
    type Instances = (Bridge<R>, Bridge<R>);
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        (
            self.bridge.clone().wrap(client),
            self.bridge_from.clone().wrap(client),
        )
    }
}

impl<R: Runtime> ClientEvent<R> for ev::BridgeBlindTransfer {
    type Instances = (Channel<R>, Option<Bridge<R>>);
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        (
            self.channel.clone().wrap(client),
            self.bridge.clone().map(|b| b.wrap(client)),
        )
    }
}

impl<R: Runtime> ClientEvent<R> for ev::BridgeAttendedTransfer {
    type Instances = (Channel<R>, Channel<R>);
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        (
            self.transferer_first_leg.clone().wrap(client),
            self.transferer_second_leg.clone().wrap(client),
        )
    }
}

impl<R: Runtime> ClientEvent<R> for ev::TextMessageReceived {
    type Instances = Option<Endpoint<R>>;
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        self.endpoint.clone().map(|e| e.wrap(client))
    }
}

impl<R: Runtime> ClientEvent<R> for ev::ChannelUserevent {
    type Instances = (Option<Channel<R>>, Option<Bridge<R>>, Option<Endpoint<R>>);
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        (
            self.channel.clone().map(|c| c.wrap(client)),
            self.bridge.clone().map(|b| b.wrap(client)),
            self.endpoint.clone().map(|e| e.wrap(client)),
        )
    }
}

/// The channels of a `Dial` event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DialParties<R: Runtime> {
    /// The calling channel, if any.
    pub caller: Option<Channel<R>>,
    /// The dialed channel.
    pub peer: Channel<R>,
    /// The channel the call was forwarded to, if any.
    pub forwarded: Option<Channel<R>>,
}

impl<R: Runtime> ClientEvent<R> for ev::Dial {
    type Instances = DialParties<R>;
    fn instances(&self, client: &Client<R>) -> Self::Instances {
        DialParties {
            caller: self.caller.clone().map(|c| c.wrap(client)),
            peer: self.peer.clone().wrap(client),
            forwarded: self.forwarded.clone().map(|c| c.wrap(client)),
        }
    }
}

// ---- handlers ------------------------------------------------------------------------------

/// What an event handler's future may return: `()`, or `Result<(), Error>` so handlers can use
/// `?`. An error is logged (`tracing` warning) and counted in
/// [`Stats::handler_errors`](crate::Stats::handler_errors).
pub trait HandlerOutput: Send + 'static {
    /// Reports the outcome; `Err` is the error's text.
    fn into_outcome(self) -> Result<(), String>;
}

impl HandlerOutput for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl HandlerOutput for Result<(), Error> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// An event handler: any `Fn(event, instances) -> impl Future` (an `async move` closure
/// body) that is `Send + Sync + 'static` and whose future returns `()` or
/// `Result<(), Error>`. Implemented for every such closure; it exists so that
/// `client.on::<StasisStart>(|event, channel| async move { … })` needs only the event type.
pub trait EventHandler<T, I>:
    Fn(T, I) -> <Self as EventHandler<T, I>>::Future + Send + Sync + 'static
{
    /// What the handler's future returns.
    type Out: HandlerOutput;
    /// The handler's future.
    type Future: Future<Output = Self::Out> + Send + 'static;
}

impl<F, Fut, T, I> EventHandler<T, I> for F
where
    F: Fn(T, I) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    type Out = Fut::Output;
    type Future = Fut;
}

/// Bounds the calls of one handler running at once, and counts its slow first polls.
///
/// 12 bytes (the limit is at most `u32::MAX`, see `Shared::max_running_handlers`), so a
/// sink's hot fields and a small handler share one cache line more often (see
/// [`TypedSink`]).
#[derive(Default)]
#[repr(C)]
pub(crate) struct InFlight {
    running: AtomicU32,
    /// Counts to warn at powers of two (wrapping after 2^32 slow polls of one handler only
    /// spaces the warnings; `Stats::slow_first_polls` counts them all).
    slow_first_polls: AtomicU32,
    overflowing: AtomicBool,
}

/// How a handler's call starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Polled once on the task routing the events, a task of its own only if it waits.
    Inline,
    /// A task of its own at once ([`Client::on_spawned`]).
    Spawn,
}

/// A first poll longer than this holds up the reading of the socket: warned and counted.
pub(crate) const SLOW_FIRST_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// A sink that counts its handler's waiting calls.
pub(crate) trait HasInFlight: Send + Sync + 'static {
    fn in_flight(&self) -> &InFlight;
}

/// Decrements the waiting count when the handler's task ends (or is dropped).
struct InFlightGuard<S: HasInFlight>(Arc<S>);

impl<S: HasInFlight> Drop for InFlightGuard<S> {
    fn drop(&mut self) {
        self.0.in_flight().running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reports a handler's outcome: an error or a panic is counted in `handler_errors` and logged.
fn report_outcome(shared: &Shared, event_type: &'static str, outcome: Result<(), String>) {
    if let Err(e) = outcome {
        shared
            .counters
            .handler_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "ari_client", event = event_type, error = %e, "event handler failed");
    }
}

/// The text of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic payload");
    format!("the handler panicked: {text}")
}

/// Counts a first poll that held up the reading of the socket; warns on the first few of each
/// handler (then at every power of two, so a handler that is always slow cannot flood the log).
fn slow_first_poll(
    shared: &Shared,
    in_flight: &InFlight,
    event_type: &'static str,
    took: std::time::Duration,
) {
    shared
        .counters
        .slow_first_polls
        .fetch_add(1, Ordering::Relaxed);
    let n = in_flight.slow_first_polls.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(
            target: "ari_client",
            event = event_type,
            took_us = took.as_micros() as u64,
            slow_calls = n,
            "event handler: its first poll (the code before its first .await) took over 1 ms \
             on the task reading the events; move blocking work out of it or register it \
             with on_spawned (counted in Stats::slow_first_polls)"
        );
    }
}

/// Runs one call of a handler, reporting its outcome.
///
/// The handler's future is polled once right here, on the task that reads the events: a
/// call that completes at once (counting, sending on a channel, spawning work of its own)
/// costs no task of its own; a call that waits (a REST request, an awaited event, a timer)
/// continues as its own task, so a handler that lasts a whole call never holds up the next
/// event. A panic, in that first poll or later, is caught, counted as a handler error and
/// logged: it never reaches the task reading the socket.
///
/// At most `max_running_handlers` calls of one handler wait at once: beyond that the event
/// is dropped for this handler, counted in `dropped_events` and logged (once per overflow
/// episode), so a stuck handler cannot grow memory without bound and never slows the socket
/// reader.
pub(crate) fn spawn_handler<R, S, Fut>(
    client: &Client<R>,
    sink: &Arc<S>,
    event_type: &'static str,
    start: Start,
    clock: &mut Option<std::time::Instant>,
    make: impl FnOnce() -> Option<Fut>,
) where
    R: Runtime,
    S: HasInFlight,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    let shared = &client.inner.shared;
    let in_flight = sink.in_flight();
    if in_flight.running.load(Ordering::Acquire) as usize >= shared.max_running_handlers {
        shared
            .counters
            .dropped_events
            .fetch_add(1, Ordering::Relaxed);
        if !in_flight.overflowing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                target: "ari_client",
                event = event_type,
                limit = shared.max_running_handlers,
                "event handler overloaded: its calls still running reached the limit; \
                 dropping events for it (counted in Stats::dropped_events)"
            );
        }
        return;
    }
    if in_flight.overflowing.load(Ordering::Relaxed) {
        in_flight.overflowing.store(false, Ordering::Release);
    }
    let fut = match start {
        Start::Spawn => match catch_unwind(AssertUnwindSafe(make)) {
            Ok(Some(fut)) => Box::pin(fut),
            Ok(None) => return,
            Err(payload) => {
                shared
                    .counters
                    .handler_calls
                    .fetch_add(1, Ordering::Relaxed);
                report_outcome(shared, event_type, Err(panic_text(&*payload)));
                return;
            }
        },
        Start::Inline => {
            // Timed from the end of the reader's previous step (see `Sink::deliver`): one
            // clock read per call.
            let started = match *clock {
                Some(t) => t,
                None => client.inner.runtime.now(),
            };
            // The first poll uses a waker that does nothing: if the future is not done it is
            // moved into a task, whose first poll registers the task's waker (futures
            // re-register theirs on every poll), so no wake-up is lost.
            let first = catch_unwind(AssertUnwindSafe(|| {
                let mut fut = Box::pin(make()?);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                Some(match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(out) => Ok(out.into_outcome()),
                    Poll::Pending => Err(fut),
                })
            }));
            let ended = client.inner.runtime.now();
            *clock = Some(ended);
            let took = ended.saturating_duration_since(started);
            if took > SLOW_FIRST_POLL {
                slow_first_poll(shared, in_flight, event_type, took);
            }
            match first {
                Ok(None) => return,
                Ok(Some(Ok(outcome))) => {
                    shared
                        .counters
                        .handler_calls
                        .fetch_add(1, Ordering::Relaxed);
                    report_outcome(shared, event_type, outcome);
                    return;
                }
                Ok(Some(Err(fut))) => fut,
                Err(payload) => {
                    shared
                        .counters
                        .handler_calls
                        .fetch_add(1, Ordering::Relaxed);
                    report_outcome(shared, event_type, Err(panic_text(&*payload)));
                    return;
                }
            }
        }
    };
    shared
        .counters
        .handler_calls
        .fetch_add(1, Ordering::Relaxed);
    in_flight.running.fetch_add(1, Ordering::AcqRel);
    let guard = InFlightGuard(sink.clone());
    let shared = shared.clone();
    client.inner.runtime.spawn(async move {
        let _guard = guard;
        let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(out) => out.into_outcome(),
            Err(payload) => Err(panic_text(&*payload)),
        };
        report_outcome(&shared, event_type, outcome);
    });
}

/// A typed handler as a sink: the client, the handler and the count of its waiting calls in
/// one allocation (the one routing hands out), so delivering an event reads no other.
///
/// Laid out in declaration order, what every delivery reads first (after the `Arc`'s
/// counts): with a handler that captures one pointer the allocation is 48 bytes, read whole
/// by a delivery, so it lies in one cache line at half the 16-byte-aligned places the
/// allocator may put it (a 64-byte one, at a quarter of them). With 10,000 channels of six
/// handlers each, the sinks do not stay in the CPU's caches: every line a delivery reads is
/// a miss.
#[repr(C)]
struct TypedSink<R: Runtime, T, H> {
    client: WeakClient<R>,
    in_flight: InFlight,
    start: Start,
    handler: H,
    _event: PhantomData<fn(T)>,
}

impl<R: Runtime, T: 'static, H: Send + Sync + 'static> HasInFlight for TypedSink<R, T, H> {
    fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }
}

impl<R, T, H> Sink for TypedSink<R, T, H>
where
    R: Runtime,
    T: ClientEvent<R>,
    H: EventHandler<T, T::Instances>,
{
    fn deliver(self: Arc<Self>, event: Arc<Event>, clock: &mut Option<std::time::Instant>) {
        // Every user handle gone: the client is shutting down, no more calls.
        let Some(client) = self.client.upgrade() else {
            return;
        };
        spawn_handler(&client, &self, T::TYPE, self.start, clock, || {
            // The last subscriber of the event takes it out of the `Arc`; others clone.
            let t = match Arc::try_unwrap(event) {
                Ok(event) => T::from_event(event).ok()?,
                Err(event) => T::from_ref(&event)?.clone(),
            };
            let instances = t.instances(&client);
            Some((self.handler)(t, instances))
        });
    }
    fn close(&self, _reason: CloseReason) {}
}

/// A typed handler as a sink: each matching event is converted, its instances built, and the
/// handler called through [`spawn_handler`] (a call that waits continues as its own task, so
/// a long handler, e.g. a whole call, never holds up the next event; use a stream to process
/// events strictly one after another).
pub(crate) fn typed_handler<R, T, H>(client: &Client<R>, handler: H, start: Start) -> Arc<dyn Sink>
where
    R: Runtime,
    T: ClientEvent<R>,
    H: EventHandler<T, T::Instances>,
{
    Arc::new(TypedSink {
        client: WeakClient::new(client),
        handler,
        start,
        in_flight: InFlight::default(),
        _event: PhantomData::<fn(T)>,
    })
}

/// A handler of every event as a sink (see [`TypedSink`]).
struct AnySink<R: Runtime, F> {
    client: WeakClient<R>,
    handler: F,
    in_flight: InFlight,
}

impl<R: Runtime, F: Send + Sync + 'static> HasInFlight for AnySink<R, F> {
    fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }
}

impl<R, F, Fut> Sink for AnySink<R, F>
where
    R: Runtime,
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    fn deliver(self: Arc<Self>, event: Arc<Event>, clock: &mut Option<std::time::Instant>) {
        let Some(client) = self.client.upgrade() else {
            return;
        };
        spawn_handler(&client, &self, "event", Start::Inline, clock, || {
            let e: Event = Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone());
            Some((self.handler)(e))
        });
    }
    fn close(&self, _reason: CloseReason) {}
}

pub(crate) fn any_handler<R, F, Fut>(client: &Client<R>, handler: F) -> Arc<dyn Sink>
where
    R: Runtime,
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    Arc::new(AnySink {
        client: WeakClient::new(client),
        handler,
        in_flight: InFlight::default(),
    })
}

/// A registered handler. Dropping it keeps the handler (as in node, a listener stays until
/// removed); [`Listener::remove`] removes it. Handlers on an instance are removed by
/// themselves after the resource's final event (`ChannelDestroyed`, `BridgeDestroyed`,
/// `PlaybackFinished`, `RecordingFinished`/`RecordingFailed`; for a channel that leaves
/// Stasis without `ChannelDestroyed`, after its `StasisEnd`, and for a bridge the
/// application destroyed without a `BridgeDestroyed` reaching it, after its `DELETE`: see
/// [`ClientBuilder::stasis_end_linger`](crate::ClientBuilder::stasis_end_linger)).
pub struct Listener {
    shared: Arc<Shared>,
    id: SubscriptionId,
}

impl Listener {
    pub(crate) fn new(shared: Arc<Shared>, id: SubscriptionId) -> Self {
        Listener { shared, id }
    }

    /// Removes the handler (node's `removeListener`). No-op if it already ended.
    pub fn remove(self) {
        self.shared.unsubscribe(self.id);
    }

    /// Whether the handler is still registered.
    pub fn is_active(&self) -> bool {
        self.shared.is_subscribed(self.id)
    }

    /// The session's subscription id.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("id", &self.id).finish()
    }
}

// ---- streams ---------------------------------------------------------------------------

fn end_error(reason: Option<CloseReason>, resource: &Option<String>) -> Error {
    match reason {
        Some(CloseReason::Ended(
            EndReason::ResourceEnded | EndReason::NotCreated | EndReason::NeverStarted,
        )) => Error::Ended {
            resource: resource.clone().unwrap_or_default(),
        },
        Some(CloseReason::Ended(EndReason::PeerGone)) => Error::AsteriskGone {
            resource: resource.clone().unwrap_or_default(),
        },
        Some(CloseReason::Ended(EndReason::ApplicationUnregistered)) => {
            Error::ApplicationUnregistered {
                resource: resource.clone().unwrap_or_default(),
            }
        }
        Some(CloseReason::Shutdown) => Error::closed("the client was closed"),
        _ => Error::closed("the subscription ended"),
    }
}

/// A stream of events: every event of the client, or of one instance
/// ([`Channel::events`]). Yields `Err(Lagged(n))` where `n` events were dropped because the
/// consumer fell behind (see [`Lagged`]); ends after an instance's final event or when the
/// client is closed. Dropping it removes its subscription.
pub struct EventStream {
    sub: QueueSub,
}

impl EventStream {
    pub(crate) fn new(shared: &Arc<Shared>, filter: Filter) -> Self {
        EventStream {
            sub: QueueSub::new(shared, filter),
        }
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.sub.queue.len()
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("subscription", &self.sub.guard.id)
            .finish()
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Lagged>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.sub.poll_item(cx) {
            Poll::Ready(Ok(Ok(e))) => Poll::Ready(Some(Ok(
                Arc::try_unwrap(e).unwrap_or_else(|a| (*a).clone())
            ))),
            Poll::Ready(Ok(Err(l))) => Poll::Ready(Some(Err(l))),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A stream of the events of type `T` of one instance ([`Channel::stream`]); like
/// [`EventStream`] otherwise.
pub struct TypedStream<T> {
    sub: QueueSub,
    _t: PhantomData<fn() -> T>,
}

impl<T: EventType> TypedStream<T> {
    pub(crate) fn new(shared: &Arc<Shared>, filter: Filter) -> Self {
        TypedStream {
            sub: QueueSub::new(shared, filter.with_type(T::TYPE)),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for TypedStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedStream")
            .field("subscription", &self.sub.guard.id)
            .finish()
    }
}

fn take<T: EventType + Clone>(e: Arc<Event>) -> Option<T> {
    match Arc::try_unwrap(e) {
        Ok(e) => T::from_event(e).ok(),
        Err(a) => T::from_ref(&a).cloned(),
    }
}

impl<T: EventType + Clone> Stream for TypedStream<T> {
    type Item = Result<T, Lagged>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match self.sub.poll_item(cx) {
                Poll::Ready(Ok(Ok(e))) => match take::<T>(e) {
                    Some(t) => Poll::Ready(Some(Ok(t))),
                    None => continue,
                },
                Poll::Ready(Ok(Err(l))) => Poll::Ready(Some(Err(l))),
                Poll::Ready(Err(_)) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// A stream of the events of type `T` of the whole client, with their instance objects
/// ([`Client::stream`]): `Ok((event, instances))` or `Err(Lagged(n))`.
pub struct ClientStream<R: Runtime, T> {
    inner: TypedStream<T>,
    client: WeakClient<R>,
}

impl<R: Runtime, T> fmt::Debug for ClientStream<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStream")
            .field("subscription", &self.inner.sub.guard.id)
            .finish()
    }
}

impl<R: Runtime, T: ClientEvent<R>> Stream for ClientStream<R, T> {
    type Item = Result<(T, T::Instances), Lagged>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(t))) => match self.client.upgrade() {
                Some(client) => {
                    let i = t.instances(&client);
                    Poll::Ready(Some(Ok((t, i))))
                }
                // Every client handle was dropped: the client is shut down.
                None => Poll::Ready(None),
            },
            Poll::Ready(Some(Err(l))) => Poll::Ready(Some(Err(l))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R: Runtime, T: ClientEvent<R>> ClientStream<R, T> {
    pub(crate) fn new(client: &Client<R>, filter: Filter) -> Self {
        ClientStream {
            inner: TypedStream::new(&client.inner.shared, filter),
            client: WeakClient::new(client),
        }
    }
}

// ---- incoming calls ------------------------------------------------------------------------

/// One call waiting in an [`Incoming`] stream: its `StasisStart` and the event stream of its
/// channel, subscribed while the `StasisStart` was routed.
struct IncomingItem {
    start: ev::StasisStart,
    events: EventStream,
}

struct IncomingQueue {
    items: std::collections::VecDeque<IncomingItem>,
    lagged: u64,
    closed: bool,
    waker: Option<std::task::Waker>,
}

/// The sink behind [`Incoming`]: on each `StasisStart` it subscribes the channel's event
/// stream at once, on the task routing the event, so no later event of the channel can be
/// routed before the subscription exists.
struct IncomingSink {
    shared: Weak<Shared>,
    capacity: usize,
    queue: std::sync::Mutex<IncomingQueue>,
}

impl IncomingSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, IncomingQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sink for IncomingSink {
    fn deliver(self: Arc<Self>, event: Arc<Event>, _clock: &mut Option<std::time::Instant>) {
        let Some(start) = take::<ev::StasisStart>(event) else {
            return;
        };
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        // Subscribed before this returns: the driver routes the channel's next event after.
        let events = EventStream::new(
            &shared,
            Filter::resource(ev::ResourceKind::Channel, start.channel.id.as_str()),
        );
        let (dropped, waker) = {
            let mut g = self.lock();
            if g.closed {
                return;
            }
            let dropped = if g.items.len() >= self.capacity {
                g.lagged += 1;
                shared
                    .counters
                    .dropped_events
                    .fetch_add(1, Ordering::Relaxed);
                g.items.pop_front()
            } else {
                None
            };
            g.items.push_back(IncomingItem { start, events });
            (dropped, g.waker.take())
        };
        // Its channel subscription is removed outside the queue's lock.
        drop(dropped);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn close(&self, _reason: CloseReason) {
        let (items, waker) = {
            let mut g = self.lock();
            g.closed = true;
            // Calls not taken yet: their streams end with the client (they hold its state).
            (std::mem::take(&mut g.items), g.waker.take())
        };
        drop(items);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The calls entering Stasis ([`Client::incoming`]): for each `StasisStart`, the event, its
/// channel and the channel's event stream, subscribed while the `StasisStart` was routed, so
/// the stream has every later event of the channel however soon it comes (a `StasisEnd`
/// right after the `StasisStart` included) and ends with the channel.
///
/// Bounded like the other streams (the client's queue capacity): if calls are not taken fast
/// enough the oldest waiting call is dropped (counted in `dropped_events`) and the stream
/// yields `Err(Lagged(n))`. Ends when the client is closed or every client handle is dropped.
/// Dropping it removes its subscription and those of the calls not taken yet.
pub struct Incoming<R: Runtime> {
    sink: Arc<IncomingSink>,
    guard: SubGuard,
    client: WeakClient<R>,
}

impl<R: Runtime> Incoming<R> {
    pub(crate) fn new(client: &Client<R>) -> Self {
        let shared = &client.inner.shared;
        let sink = Arc::new(IncomingSink {
            shared: Arc::downgrade(shared),
            capacity: shared.queue_capacity,
            queue: std::sync::Mutex::new(IncomingQueue {
                items: Default::default(),
                lagged: 0,
                closed: false,
                waker: None,
            }),
        });
        let id = shared.subscribe(Filter::of::<ev::StasisStart>(), sink.clone());
        Incoming {
            sink,
            guard: SubGuard {
                shared: shared.clone(),
                id,
            },
            client: WeakClient::new(client),
        }
    }

    /// Calls waiting to be taken.
    pub fn queued(&self) -> usize {
        self.sink.lock().items.len()
    }
}

impl<R: Runtime> fmt::Debug for Incoming<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("subscription", &self.guard.id)
            .field("queued", &self.queued())
            .finish()
    }
}

impl<R: Runtime> Stream for Incoming<R> {
    type Item = Result<(ev::StasisStart, Channel<R>, EventStream), Lagged>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = {
            let mut g = self.sink.lock();
            if g.lagged > 0 {
                let n = std::mem::take(&mut g.lagged);
                return Poll::Ready(Some(Err(Lagged(n))));
            }
            match g.items.pop_front() {
                Some(item) => item,
                None if g.closed => return Poll::Ready(None),
                None => {
                    g.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        let Some(client) = self.client.upgrade() else {
            return Poll::Ready(None);
        };
        let channel = item.start.channel.clone().wrap(&client);
        Poll::Ready(Some(Ok((item.start, channel, item.events))))
    }
}

// ---- awaitable events ----------------------------------------------------------------------

/// The next event of type `T` of an instance ([`Channel::once`]), awaitable. Subscribed when
/// created, so create it before the action that causes the event:
///
/// ```no_run
/// # async fn demo<R: ari_client::Runtime>(channel: ari_client::Channel<R>) -> Result<(), ari_client::Error> {
/// use ari_proto::events::ChannelDtmfReceived;
/// let dtmf = channel.once::<ChannelDtmfReceived>().await?;
/// println!("pressed {}", dtmf.digit);
/// # Ok(()) }
/// ```
///
/// Fails with [`Error::Ended`] if the resource ends first (at once if it had already ended
/// when `once` was called, see [`Client::forget_ended`](crate::Client::forget_ended)),
/// [`Error::Closed`] if the client is closed. Dropping it removes the subscription.
///
/// One event only: to follow a sequence (every key press), use a stream
/// ([`Channel::stream`]), which keeps its subscription between events so none is missed.
#[must_use = "an awaited event does nothing unless awaited"]
pub struct Once<T> {
    sub: QueueSub,
    resource: Option<String>,
    _t: PhantomData<fn() -> T>,
}

impl<T: EventType> Once<T> {
    pub(crate) fn new(shared: &Arc<Shared>, filter: Filter, resource: Option<String>) -> Self {
        Once {
            sub: QueueSub::new(shared, filter.with_type(T::TYPE).once()),
            resource,
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Once<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Once")
            .field("subscription", &self.sub.guard.id)
            .field("resource", &self.resource)
            .finish()
    }
}

impl<T: EventType + Clone> Future for Once<T> {
    type Output = Result<T, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            return match self.sub.poll_item(cx) {
                Poll::Ready(Ok(Ok(e))) => match take::<T>(e) {
                    Some(t) => Poll::Ready(Ok(t)),
                    None => continue,
                },
                // A one-shot queue holds at most one event; a lag marker cannot precede it.
                Poll::Ready(Ok(Err(_))) => continue,
                Poll::Ready(Err(reason)) => Poll::Ready(Err(end_error(reason, &self.resource))),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// The next event of type `T` of the whole client with its instance objects
/// ([`Client::once`]).
#[must_use = "an awaited event does nothing unless awaited"]
pub struct ClientOnce<R: Runtime, T> {
    inner: Once<T>,
    client: WeakClient<R>,
}

impl<R: Runtime, T: ClientEvent<R>> ClientOnce<R, T> {
    pub(crate) fn new(client: &Client<R>) -> Self {
        ClientOnce {
            inner: Once::new(&client.inner.shared, Filter::all(), None),
            client: WeakClient::new(client),
        }
    }
}

impl<R: Runtime, T> fmt::Debug for ClientOnce<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<R: Runtime, T: ClientEvent<R>> Future for ClientOnce<R, T> {
    type Output = Result<(T, T::Instances), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(Ok(t)) => match self.client.upgrade() {
                Some(client) => {
                    let i = t.instances(&client);
                    Poll::Ready(Ok((t, i)))
                }
                None => Poll::Ready(Err(Error::closed("the client was closed"))),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

// ---- connection events ---------------------------------------------------------------------

struct ConnHandler<F> {
    call: F,
}

impl<F: Fn(&ConnectionEvent) + Send + Sync> ConnSink for ConnHandler<F> {
    fn deliver(&self, event: &ConnectionEvent) -> bool {
        (self.call)(event);
        true
    }
    fn close(&self) {}
}

pub(crate) fn conn_handler<R, F, Fut>(client: &Client<R>, handler: F) -> Arc<dyn ConnSink>
where
    R: Runtime,
    F: Fn(ConnectionEvent) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    // Holds only the runtime and the counters: a connection listener does not keep the client
    // alive.
    let runtime = client.inner.runtime.clone();
    let shared = Arc::downgrade(&client.inner.shared);
    Arc::new(ConnHandler {
        call: move |ev: &ConnectionEvent| {
            let fut = handler(ev.clone());
            let shared = shared.clone();
            runtime.spawn(async move {
                if let Err(e) = fut.await.into_outcome() {
                    if let Some(s) = shared.upgrade() {
                        s.counters.handler_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(target: "ari_client", error = %e, "connection handler failed");
                }
            });
        },
    })
}

/// A bounded queue of connection events.
pub(crate) struct ConnQueue {
    inner: std::sync::Mutex<ConnQueueInner>,
}

struct ConnQueueInner {
    items: std::collections::VecDeque<ConnectionEvent>,
    lagged: u64,
    closed: bool,
    waker: Option<std::task::Waker>,
}

const CONN_QUEUE: usize = 256;

impl ConnQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnQueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ConnSink for ConnQueue {
    fn deliver(&self, event: &ConnectionEvent) -> bool {
        let waker = {
            let mut g = self.lock();
            if g.closed {
                return false;
            }
            if g.items.len() >= CONN_QUEUE {
                g.items.pop_front();
                g.lagged += 1;
            }
            g.items.push_back(event.clone());
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }
    fn close(&self) {
        let waker = {
            let mut g = self.lock();
            g.closed = true;
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The connection events of the client as a stream ([`Client::connection_events`]):
/// `Connected` (node's `WebSocketConnected`), `Reconnecting { attempt, delay, .. }`
/// (`WebSocketReconnecting`), `MaxRetries { attempts, .. }` (`WebSocketMaxRetries`) and
/// `Closed`. Ends when the client is closed. Bounded (256, oldest dropped first); after an
/// overflow yields `Err(Lagged(n))` before the events it kept.
pub struct ConnectionStream {
    queue: Arc<ConnQueue>,
    sink: Arc<dyn ConnSink>,
    shared: Arc<Shared>,
}

impl ConnectionStream {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        let queue = Arc::new(ConnQueue {
            inner: std::sync::Mutex::new(ConnQueueInner {
                items: Default::default(),
                lagged: 0,
                closed: false,
                waker: None,
            }),
        });
        let sink: Arc<dyn ConnSink> = queue.clone();
        shared.add_conn_sink(sink.clone());
        ConnectionStream {
            queue,
            sink,
            shared: shared.clone(),
        }
    }
}

impl Drop for ConnectionStream {
    fn drop(&mut self) {
        self.shared.remove_conn_sink(&self.sink);
    }
}

impl fmt::Debug for ConnectionStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionStream").finish_non_exhaustive()
    }
}

impl Stream for ConnectionStream {
    type Item = Result<ConnectionEvent, Lagged>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut g = self.queue.lock();
        if g.lagged > 0 {
            let n = std::mem::take(&mut g.lagged);
            return Poll::Ready(Some(Err(Lagged(n))));
        }
        if let Some(e) = g.items.pop_front() {
            return Poll::Ready(Some(Ok(e)));
        }
        if g.closed {
            return Poll::Ready(None);
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A one-shot waiter for the outcome of `start`.
pub(crate) struct StartWaiter {
    slot: Slot<Result<(), Error>>,
}

impl StartWaiter {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(StartWaiter { slot: Slot::new() })
    }

    fn set(&self, r: Result<(), Error>) -> bool {
        self.slot.fill(r);
        false
    }

    pub(crate) fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.slot.poll_take(cx)
    }
}

impl ConnSink for StartWaiter {
    fn deliver(&self, event: &ConnectionEvent) -> bool {
        match event {
            ConnectionEvent::Connected { .. } => self.set(Ok(())),
            ConnectionEvent::MaxRetries { reason, .. } => self.set(Err(Error::Transport(
                crate::TransportError::new(crate::TransportErrorKind::Connect, reason.clone()),
            ))),
            _ => !self.slot.is_filled(),
        }
    }
    fn close(&self) {
        self.set(Err(Error::closed("the client was closed")));
    }
}
