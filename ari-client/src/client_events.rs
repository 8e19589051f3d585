//! Events on the client: starting applications, handlers, awaitable events, streams,
//! connection events, counters; and the builder's event options.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ari_proto::events::Event;
use ari_proto::session::{
    ConnectionState, Filter, Keepalive, Limits, ReconnectPolicy, SubscriptionId, WsAuth,
};

use crate::client::{with_deadline, ClientBuilder};
use crate::listen::{
    any_handler, conn_handler, typed_handler, ClientEvent, ClientOnce, ClientStream,
    ConnectionStream, EventHandler, EventStream, HandlerOutput, Incoming, Listener, Start,
    StartWaiter,
};
use crate::shared::ConnSink;
use crate::{Client, Error, Runtime};

/// Counters of a client ([`Client::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Events dropped because a subscriber fell behind: a stream's full queue (announced to
    /// it as a `Lagged` item), a handler with too many calls still running (logged), or the
    /// session's own queue.
    pub dropped_events: u64,
    /// Live subscriptions (handlers, streams, awaited events, watched playbacks/recordings).
    pub live_subscriptions: usize,
    /// Event handler calls made.
    pub handler_calls: u64,
    /// Event handlers that returned an error.
    pub handler_errors: u64,
    /// REST requests sent over HTTP because the WebSocket transport was not available (not
    /// connected, saturated, or a server without REST over WebSocket).
    pub websocket_fallbacks: u64,
    /// Handler calls whose first poll (the code before the first `.await`, run on the task
    /// reading the events) took over 1 ms, holding up every event behind it; each handler's
    /// first few are also logged (`tracing` warning). Register such a handler with
    /// [`Client::on_spawned`].
    pub slow_first_polls: u64,
    /// Times the reader of the events WebSocket waited the whole
    /// [`ClientBuilder::stream_wait`](crate::ClientBuilder::stream_wait) for an event
    /// stream's consumer that did not drain its half-full queue, then read on (that
    /// stream's overflow is then dropped: counted in `dropped_events`, announced to it as a
    /// `Lagged` item). A consumer that keeps up on average never stalls.
    pub stream_stalls: u64,
    /// Binary frames received on the events WebSocket and ignored: Asterisk sends none on an
    /// ARI socket, so a peer that does is not Asterisk, or something between garbles the
    /// stream (the first one is also logged).
    pub binary_frames: u64,
    /// The session's counters (frames, events, reconnects, pings, requests…).
    pub session: ari_proto::session::Stats,
}

/// One Stasis application name or several, for [`Client::start`].
pub trait Apps {
    /// The names.
    fn into_apps(self) -> Vec<String>;
}

impl Apps for &str {
    fn into_apps(self) -> Vec<String> {
        vec![self.to_owned()]
    }
}

impl Apps for String {
    fn into_apps(self) -> Vec<String> {
        vec![self]
    }
}

impl Apps for &String {
    fn into_apps(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl<S: AsRef<str>> Apps for &[S] {
    fn into_apps(self) -> Vec<String> {
        self.iter().map(|a| a.as_ref().to_owned()).collect()
    }
}

impl<S: AsRef<str>, const N: usize> Apps for &[S; N] {
    fn into_apps(self) -> Vec<String> {
        self.iter().map(|a| a.as_ref().to_owned()).collect()
    }
}

impl<S: AsRef<str>, const N: usize> Apps for [S; N] {
    fn into_apps(self) -> Vec<String> {
        self.iter().map(|a| a.as_ref().to_owned()).collect()
    }
}

impl<S: AsRef<str>> Apps for Vec<S> {
    fn into_apps(self) -> Vec<String> {
        self.iter().map(|a| a.as_ref().to_owned()).collect()
    }
}

impl<S: AsRef<str>> Apps for &Vec<S> {
    fn into_apps(self) -> Vec<String> {
        self.iter().map(|a| a.as_ref().to_owned()).collect()
    }
}

impl<R: Runtime> Client<R> {
    /// Registers Stasis applications and opens the events WebSocket for them (several apps
    /// share one connection, like node's `start(apps)`). Completes when connected; fails
    /// after the reconnect policy's maximum attempts, or with [`Error::Timeout`] after the
    /// connect and request timeouts (the client keeps trying in the background until
    /// [`Client::stop`]).
    ///
    /// Calling it again with other applications reconnects with the new set.
    ///
    /// On the client of a connection Asterisk opened ([`OutboundServer`](crate::OutboundServer)),
    /// Asterisk decides the applications (`ari.conf` `apps`): `start` returns at once, `Ok`
    /// when every one of `apps` is among those it registered on the connection (its
    /// `ApplicationRegistered` frames), else [`Error::Build`]; the connection is left as it
    /// is.
    ///
    /// Takes one name or several: `client.start("hello")`, `client.start(&["a", "b"])`,
    /// `client.start(vec![name])`.
    pub async fn start(&self, apps: impl Apps) -> Result<(), Error> {
        let shared = &self.inner.shared;
        if shared.is_closed() {
            return Err(Error::closed("the client was closed"));
        }
        let apps: Vec<String> = apps.into_apps();
        ari_proto::session::check_apps(&apps)?;
        {
            // A connection Asterisk opened (an `OutboundServer`'s client) serves the
            // applications Asterisk registered on it: there is nothing to start, and
            // stopping it to "reconnect with the new set" would close it for good (Asterisk
            // dials again, at once, a client that no longer takes connections).
            let st = shared.lock();
            if st.session.is_accepted() {
                if st.session.state() == ConnectionState::Stopped {
                    return Err(Error::closed(
                        "the client of a connection Asterisk opened was stopped: it takes no \
                         connection again (the next one comes from OutboundServer::next)",
                    ));
                }
                let registered = st.session.applications();
                let missing: Vec<&String> =
                    apps.iter().filter(|a| !registered.contains(a)).collect();
                if missing.is_empty() {
                    return Ok(());
                }
                tracing::warn!(target: "ari_client", ?missing, ?registered, "start on a connection Asterisk opened: these applications are not among those Asterisk registered on it (ari.conf apps decides)");
                return Err(Error::Build(
                    ari_proto::rest::BuildError::invalid_parameter(
                        "app",
                        "a connection Asterisk opened serves the applications Asterisk registered \
                     on it (ari.conf `apps`); this one is not among them",
                    ),
                ));
            }
        }
        let waiter = StartWaiter::new();
        let already = {
            let mut st = shared.lock();
            let same = st.session.config().apps == apps;
            let state = st.session.state();
            if same && state == ConnectionState::Connected {
                true
            } else {
                if !same {
                    st.session.set_apps(&apps);
                    if !matches!(
                        state,
                        ConnectionState::Idle | ConnectionState::Stopped | ConnectionState::GaveUp
                    ) {
                        st.session.stop();
                    }
                }
                false
            }
        };
        if already {
            return Ok(());
        }
        let sink: Arc<dyn ConnSink> = waiter.clone();
        shared.add_conn_sink(sink.clone());
        shared.command(|s| s.start(self.inner.runtime.now()));
        let after = self
            .inner
            .transport
            .connect_timeout
            .saturating_add(self.inner.request_timeout);
        let deadline = self.deadline(after);
        let wait = std::future::poll_fn(|cx| waiter.poll_result(cx));
        let res = with_deadline(&self.inner.runtime, deadline, "start", after, wait).await;
        shared.remove_conn_sink(&sink);
        res?
    }

    /// Closes the events WebSocket and stops reconnecting (node's `stop()`). Pending
    /// REST-over-WebSocket requests fail; listeners stay registered for a later
    /// [`Client::start`]. Returns once the close frame is sent (or there was no open
    /// WebSocket).
    ///
    /// On the client of a connection Asterisk opened ([`OutboundServer`](crate::OutboundServer)),
    /// the connection is closed for good: the client takes no connection again (a later
    /// `start` fails with [`Error::Closed`]). Asterisk dials again at once; the server serves
    /// that connection as a new one ([`OutboundServer::next`](crate::OutboundServer::next),
    /// or per call [`OutboundServer::next_call`](crate::OutboundServer::next_call)).
    pub async fn stop(&self) {
        let shared = &self.inner.shared;
        shared.command(|s| s.stop());
        let n = shared.request_stop();
        shared.wake_driver();
        std::future::poll_fn(|cx| shared.poll_stop_done(n, cx)).await;
    }

    /// Closes the client: stops the events connection, ends every stream, listener and
    /// awaited event (with [`Error::Closed`]) and ends the background task; requests still
    /// in flight and later ones fail with [`Error::Closed`]. Returns once the close frame is sent (a peer that does
    /// not read gets one second) and the background task has exited.
    ///
    /// Live media sessions are shut down first, as
    /// [`MediaSession::shutdown`](crate::media::MediaSession::shutdown) does: each stream
    /// yields [`Closed`](crate::media::MediaItem::Closed), the media channel is hung up and
    /// the bridge destroyed (waiting at most about twice the request timeout in all).
    ///
    /// Dropping the last handle does the same, without waiting: handlers, streams and
    /// awaited events of the client do not keep it alive (instance objects such as a
    /// [`Channel`](crate::Channel) are handles: a handler still running with one keeps the
    /// client until it returns).
    pub async fn close(&self) {
        // The close handshake, the hang-up and the bridge's destruction: at most about two
        // request timeouts.
        let limit = self.inner.request_timeout * 2 + std::time::Duration::from_secs(1);
        self.inner
            .media
            .shutdown_all(&self.inner.runtime, limit)
            .await;
        let shared = &self.inner.shared;
        shared.shutdown();
        self.inner.deadlines.close();
        std::future::poll_fn(|cx| shared.poll_exited(cx)).await;
    }

    /// Whether the events WebSocket is open.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.lock().session.is_connected()
    }

    /// Where the events connection stands.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.shared.lock().session.state()
    }

    /// Calls `handler(event, instances)` for every event of type `T` (node's
    /// `client.on(type, handler)`), with the live instance objects the event concerns
    /// (see [`ClientEvent`]):
    ///
    /// ```no_run
    /// # fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>) {
    /// use ari_client::events::{ChannelDtmfReceived, StasisStart};
    /// client.on::<StasisStart>(|event, channel| async move {
    ///     println!("{} entered {}", channel.id(), event.application);
    ///     channel.answer().await?;
    ///     Ok(())
    /// });
    /// // Or with the type on the closure's first parameter:
    /// client.on(|dtmf: ChannelDtmfReceived, channel| async move {
    ///     println!("{} pressed {}", channel.id(), dtmf.digit);
    /// });
    /// # }
    /// ```
    ///
    /// Each call's future is polled once at once, on the task reading the events, before the
    /// next event is routed: what the handler subscribes to before its first `.await` (e.g.
    /// `channel.once::<ChannelDtmfReceived>()`) receives the very next event. If it is not
    /// done (it awaits a request, an event, a timer) it continues as its own task, so a
    /// handler that lasts a whole call never holds up the next event; for strictly ordered
    /// processing use [`Client::stream`]. Keep blocking work out of handlers (as in any
    /// async code): it would delay the reading of the socket (a first poll over 1 ms is
    /// logged and counted in [`Stats::slow_first_polls`]; [`Client::on_spawned`] runs every
    /// call as a task of its own). A panicking handler is caught,
    /// counted in [`Stats::handler_errors`] and logged. The handler
    /// may return `()` or `Result<(), Error>` (errors are logged and counted). At most
    /// [`ClientBuilder::max_running_handlers`] calls of one handler wait at once (default
    /// 100 000, far above any switch's concurrent calls); events beyond that are dropped for
    /// it, counted in [`Stats::dropped_events`] and logged.
    pub fn on<T: ClientEvent<R>>(&self, handler: impl EventHandler<T, T::Instances>) -> Listener {
        let shared = self.inner.shared.clone();
        let sink = typed_handler::<R, T, _>(self, handler, Start::Inline);
        let id = shared.subscribe(Filter::of::<T>(), sink);
        Listener::new(shared, id)
    }

    /// As [`Client::on`], but each call is a task of its own from the start: nothing of the
    /// handler runs on the task reading the events. For a handler that does synchronous work
    /// before its first `.await` (a [`Stats::slow_first_polls`] warning names it). What it
    /// subscribes to may then miss events routed before the task first runs.
    pub fn on_spawned<T: ClientEvent<R>>(
        &self,
        handler: impl EventHandler<T, T::Instances>,
    ) -> Listener {
        let shared = self.inner.shared.clone();
        let sink = typed_handler::<R, T, _>(self, handler, Start::Spawn);
        let id = shared.subscribe(Filter::of::<T>(), sink);
        Listener::new(shared, id)
    }

    /// Calls `handler(event)` for every event of every type.
    pub fn on_any<F, Fut>(&self, handler: F) -> Listener
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let shared = self.inner.shared.clone();
        let sink = any_handler(self, handler);
        let id = shared.subscribe(Filter::all(), sink);
        Listener::new(shared, id)
    }

    /// The next event of type `T`, with its instance objects, awaitable (node's `once`):
    /// `let (start, channel) = client.once::<StasisStart>().await?;`. Subscribed when called.
    pub fn once<T: ClientEvent<R>>(&self) -> ClientOnce<R, T> {
        ClientOnce::new(self)
    }

    /// The calls entering Stasis, each with its channel and the channel's event stream,
    /// subscribed while its `StasisStart` is routed: the race-free way to take calls. Every
    /// event of the channel after its `StasisStart` is in its stream, however soon it comes
    /// (awaiting `client.once::<StasisStart>()` and then calling `channel.events()` misses
    /// those routed in between), and the stream ends with the channel (after its
    /// `ChannelDestroyed`, or [`ClientBuilder::stasis_end_linger`] after its `StasisEnd`).
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>) -> Result<(), ari_client::Error> {
    /// use futures_util::StreamExt;
    /// let mut incoming = client.incoming(); // before start: no call is missed
    /// client.start("hello").await?;
    /// while let Some(call) = incoming.next().await {
    ///     let Ok((start, channel, mut events)) = call else { continue }; // Lagged: calls dropped
    ///     println!("{} called {}", start.channel.caller.number, start.application);
    ///     channel.answer().await?;
    ///     while let Some(event) = events.next().await {
    ///         println!("{}", event?.type_name());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn incoming(&self) -> Incoming<R> {
        Incoming::new(self)
    }

    /// Every event, as a stream (bounded; see [`crate::Lagged`]). Dropping it unsubscribes.
    pub fn event_stream(&self) -> EventStream {
        EventStream::new(&self.inner.shared, Filter::all())
    }

    /// The events matching a session [`Filter`](ari_proto::session::Filter) (a resource, a
    /// type, both, one-shot), as a stream: the general form of the other streams.
    ///
    /// ```no_run
    /// # fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>) {
    /// use ari_client::Filter;
    /// let _alice = client.subscribe(Filter::resource(ari_client::events::ResourceKind::Endpoint, "PJSIP/alice"));
    /// # }
    /// ```
    pub fn subscribe(&self, filter: Filter) -> EventStream {
        EventStream::new(&self.inner.shared, filter)
    }

    /// The events of type `T` with their instance objects, as a stream:
    /// `Ok((event, instances))` or `Err(Lagged(n))`.
    pub fn stream<T: ClientEvent<R>>(&self) -> ClientStream<R, T> {
        ClientStream::new(self, Filter::all())
    }

    /// Calls `handler(event)` on every connection event: `Connected { reconnected }` (node's
    /// `WebSocketConnected`), `Reconnecting { attempt, delay, .. }`
    /// (`WebSocketReconnecting`), `MaxRetries { attempts, .. }` (`WebSocketMaxRetries`),
    /// `Closed`. Each call runs as its own task.
    pub fn on_connection<F, Fut>(&self, handler: F) -> ConnectionListener
    where
        F: Fn(crate::ConnectionEvent) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let sink = conn_handler(self, handler);
        self.inner.shared.add_conn_sink(sink.clone());
        ConnectionListener {
            shared: self.inner.shared.clone(),
            sink,
        }
    }

    /// The connection events as a stream (see [`Client::on_connection`]).
    pub fn connection_events(&self) -> ConnectionStream {
        ConnectionStream::new(&self.inner.shared)
    }

    /// Live subscriptions: handlers, streams, awaited events and watched playbacks and
    /// recordings. Instance subscriptions end with their resource, so this returns to its
    /// baseline after calls end.
    pub fn live_subscriptions(&self) -> usize {
        self.inner.shared.live_subscriptions()
    }

    /// Whether a subscription is live.
    pub fn is_subscribed(&self, id: SubscriptionId) -> bool {
        self.inner.shared.is_subscribed(id)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let shared = &self.inner.shared;
        let (session, live) = {
            let st = shared.lock();
            (st.session.stats(), st.session.live_subscriptions())
        };
        let c = &shared.counters;
        Stats {
            dropped_events: c.dropped_events.load(Ordering::Relaxed),
            live_subscriptions: live,
            handler_calls: c.handler_calls.load(Ordering::Relaxed),
            handler_errors: c.handler_errors.load(Ordering::Relaxed),
            websocket_fallbacks: c.ws_fallbacks.load(Ordering::Relaxed),
            slow_first_polls: c.slow_first_polls.load(Ordering::Relaxed),
            stream_stalls: c.stream_stalls.load(Ordering::Relaxed),
            binary_frames: c.binary_frames.load(Ordering::Relaxed),
            session,
        }
    }
}

/// A registered connection handler ([`Client::on_connection`]); dropping it keeps the
/// handler, [`ConnectionListener::remove`] removes it.
pub struct ConnectionListener {
    shared: Arc<crate::shared::Shared>,
    sink: Arc<dyn ConnSink>,
}

impl ConnectionListener {
    /// Removes the handler.
    pub fn remove(self) {
        self.shared.remove_conn_sink(&self.sink);
    }
}

impl std::fmt::Debug for ConnectionListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionListener").finish_non_exhaustive()
    }
}

impl<R: Runtime> ClientBuilder<R> {
    /// When and how often the events WebSocket is reopened (default: forever, 0.5 s doubling
    /// to 30 s, 20 % jitter).
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.events.reconnect = policy;
        self
    }

    /// WebSocket keepalive pings (default every 20 s, 10 s pong timeout); `None` disables.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.events.keepalive = keepalive;
        self
    }

    /// Bounds on frames, pending REST-over-WebSocket requests and queued events.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.events.limits = limits;
        self
    }

    /// How the events WebSocket authenticates (default: `Authorization` header).
    pub fn ws_auth(mut self, auth: WsAuth) -> Self {
        self.events.ws_auth = auth;
        self
    }

    /// `subscribeAll=true`: receive every event of the system, not only the apps' own.
    pub fn subscribe_all(mut self, on: bool) -> Self {
        self.events.subscribe_all = on;
        self
    }

    /// Seeds the generator of client-side ids and reconnect jitter (default: from the OS).
    /// For reproducible tests only.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.events.rng_seed = Some(seed);
        self
    }

    /// How long the listeners of a channel outlive its `StasisEnd` (default 2 s; `None`:
    /// until `ChannelDestroyed` or removal).
    ///
    /// Asterisk sends no `ChannelDestroyed` to an application for a channel it only followed
    /// because the channel was in its Stasis (an incoming call that hung up or went back to
    /// the dialplan): its last event is `StasisEnd`. So a channel's listeners, streams and
    /// awaited events end once it has left Stasis and no event of it came for this long
    /// (an awaited event then fails with [`Error::Ended`]). A channel the application still
    /// follows (originated by it, or subscribed) keeps sending events, each restarting the
    /// delay, and ends with `ChannelDestroyed` as usual; one that re-enters Stasis (moved to
    /// another application of this connection) is no longer lingering. A followed channel
    /// that stays silent for longer than this after leaving Stasis (waiting in the dialplan)
    /// loses its listeners: raise the delay, or set `None` when you follow channels outside
    /// Stasis. Every channel that left Stasis counts as ended once its linger is over,
    /// whether or not the application followed it then: a handle taken later (by code that
    /// learnt the id after the hangup) fails its waits at once with [`Error::Ended`]; one
    /// taken during the linger (in a `StasisEnd` handler) ends with it. The later events of
    /// a channel nobody followed when it left Stasis do not restart its linger: to follow an
    /// originated channel you send back to the dialplan, attach a listener before, or call
    /// [`Client::forget_ended`](crate::Client::forget_ended).
    ///
    /// A bridge the application destroys (`bridge.destroy()` or any other
    /// `DELETE /bridges/{id}` answered with success) lingers as long: Asterisk sends its
    /// `BridgeDestroyed` only to applications subscribed to the bridge
    /// (`applications/{app}/subscription` with `bridge:{id}`, or `subscribeAll`), so when
    /// none arrives within the delay the bridge's listeners, streams and awaited events end
    /// (an awaited `BridgeDestroyed` fails with [`Error::Ended`]) and the bridge counts as
    /// ended. With `None` they last until `BridgeDestroyed` or removal. (The session applies
    /// it: [`SessionConfig::stasis_end_linger`](ari_proto::session::SessionConfig::stasis_end_linger).)
    pub fn stasis_end_linger(mut self, linger: Option<Duration>) -> Self {
        self.events.stasis_end_linger = linger;
        self
    }

    /// How many calls of one handler may wait at once (default 100 000; a call that
    /// completes in its first poll does not count). A handler that
    /// never finishes cannot grow memory without bound: beyond this, events are dropped for
    /// it, counted in [`Stats::dropped_events`] and logged. Keep it above the number of
    /// concurrent calls when a handler lasts a whole call.
    pub fn max_running_handlers(mut self, n: usize) -> Self {
        self.events.max_running_handlers = n.max(1);
        self
    }

    /// Capacity of each stream's and awaited event's queue (default 1024 events). When full,
    /// its oldest events are dropped and counted, and the stream yields [`crate::Lagged`]
    /// before the events it kept (see [`ClientBuilder::stream_wait`] for how the reader
    /// gives consumers time first).
    pub fn event_queue_capacity(mut self, n: usize) -> Self {
        self.events.queue_capacity = n.max(1);
        self
    }

    /// How long the reader of the events WebSocket waits for an event stream's consumer
    /// when the stream's queue is half full (default 50 ms, on the runtime's clock).
    ///
    /// Events arrive faster than a consumer task is scheduled (a flood fills a queue of
    /// 1,024 in well under a millisecond, before a task on the same thread runs): the reader
    /// stops reading until the consumer has drained the queue to a quarter, which costs a
    /// consumer that keeps up on average nothing. A consumer that does not drain it within
    /// this wait truly stalls: the reader reads on (until the socket is empty before it
    /// waits again, so it never stops reading for longer than this; Asterisk drops a client
    /// whose socket is not read for about 100 ms), counts the stall in
    /// [`Stats::stream_stalls`], and that stream's overflow is dropped as without a wait.
    /// `Duration::ZERO` never waits. Handlers, awaited events and connection streams never
    /// hold the reader.
    ///
    /// ```no_run
    /// # fn demo<R: ari_client::Runtime>(b: ari_client::ClientBuilder<R>) -> ari_client::ClientBuilder<R> {
    /// b.stream_wait(std::time::Duration::from_millis(20))
    /// # }
    /// ```
    pub fn stream_wait(mut self, wait: Duration) -> Self {
        self.events.stream_wait = wait;
        self
    }
}

/// The default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
