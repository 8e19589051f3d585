//! Instance objects: a resource's id (and the snapshot it came with) bound to the client, so
//! no id is repeated. The REST operations on them are generated (`channel.answer()`,
//! `bridge.add_channel(..)`, …); events and lifecycles are here.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use ari_proto::events::{EventType, ResourceKind};
use ari_proto::models;
use ari_proto::session::Filter;

use crate::listen::{
    typed_handler, ClientEvent, EventHandler, EventStream, Listener, Once, Start, TypedStream,
};
use crate::shared::{LatchOutcome, Watch};
use crate::{Client, Error, Runtime, Wrap};

/// A resource model with an instance object: where its id comes from.
trait InstanceModel {
    /// The id when it is a field of the model (`Channel.id`, `LiveRecording.name`, …); `None`
    /// when it is computed (an endpoint's `technology/resource`).
    fn own_id(&self) -> Option<&str>;
    /// The id when it is computed; only called when [`InstanceModel::own_id`] is `None`.
    fn computed_id(&self) -> Arc<str>;
}

/// An instance's id and snapshot. A snapshot whose own field is the id is kept alone, so an
/// instance built from an event's `Arc` snapshot costs a reference count, no allocation.
#[derive(Debug)]
enum Ident<M> {
    /// Only an id (no snapshot).
    Id(Arc<str>),
    /// A snapshot whose [`InstanceModel::own_id`] is the id.
    Snapshot(Arc<M>),
    /// An id and a snapshot (a computed id, or one given along with the snapshot).
    Both(Arc<str>, Arc<M>),
}

impl<M> Clone for Ident<M> {
    fn clone(&self) -> Self {
        match self {
            Ident::Id(id) => Ident::Id(id.clone()),
            Ident::Snapshot(m) => Ident::Snapshot(m.clone()),
            Ident::Both(id, m) => Ident::Both(id.clone(), m.clone()),
        }
    }
}

impl<M: InstanceModel> Ident<M> {
    /// From a snapshot alone: its id is read from it.
    fn from_snapshot(m: Arc<M>) -> Self {
        if m.own_id().is_some() {
            Ident::Snapshot(m)
        } else {
            Ident::Both(m.computed_id(), m)
        }
    }

    fn id(&self) -> &str {
        match self {
            Ident::Id(id) | Ident::Both(id, _) => id,
            // Always `Some` here (see `from_snapshot`).
            Ident::Snapshot(m) => m.own_id().unwrap_or_default(),
        }
    }

    fn data(&self) -> Option<&M> {
        match self {
            Ident::Id(_) => None,
            Ident::Snapshot(m) | Ident::Both(_, m) => Some(m),
        }
    }

    fn data_arc(&self) -> Option<Arc<M>> {
        match self {
            Ident::Id(_) => None,
            Ident::Snapshot(m) | Ident::Both(_, m) => Some(m.clone()),
        }
    }

    /// Replaces the snapshot, keeping the id.
    fn with_data(self, m: Arc<M>) -> Self {
        let id = match self {
            Ident::Id(id) | Ident::Both(id, _) => id,
            Ident::Snapshot(_) => Arc::from(self.id()),
        };
        Ident::Both(id, m)
    }
}

macro_rules! instance_common {
    ($(#[$doc:meta])* $name:ident, $model:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name<R: Runtime> {
            client: Client<R>,
            ident: Ident<models::$model>,
            #[allow(dead_code)]
            watch: Option<Arc<Watch>>,
        }

        impl<R: Runtime> $name<R> {
            /// The client it is bound to.
            pub fn client(&self) -> &Client<R> {
                &self.client
            }

            #[doc = concat!("The ", $what, ".")]
            pub fn id(&self) -> &str {
                self.ident.id()
            }

            /// The snapshot it came with (from a REST response or an event), if any. It is
            /// not updated: fetch a fresh one with the generated `get()`.
            pub fn data(&self) -> Option<&models::$model> {
                self.ident.data()
            }

            /// The snapshot, as an `Arc` shared with clones of this instance (and, for an
            /// instance built from an event, with the event's own field).
            pub fn data_arc(&self) -> Option<Arc<models::$model>> {
                self.ident.data_arc()
            }
        }

        impl<R: Runtime> fmt::Debug for $name<R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("id", &self.id())
                    .field("data", &self.data())
                    .finish()
            }
        }

        impl<R: Runtime> fmt::Display for $name<R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.id())
            }
        }

        /// Equal when they name the same resource.
        impl<R: Runtime> PartialEq for $name<R> {
            fn eq(&self, other: &Self) -> bool {
                self.id() == other.id()
            }
        }

        impl<R: Runtime> Eq for $name<R> {}

        impl<R: Runtime> std::hash::Hash for $name<R> {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.id().hash(state)
            }
        }

        impl<R: Runtime> From<&$name<R>> for String {
            fn from(i: &$name<R>) -> String {
                i.id().to_string()
            }
        }

        impl<R: Runtime> From<$name<R>> for String {
            fn from(i: $name<R>) -> String {
                i.id().to_string()
            }
        }

        impl<R: Runtime> AsRef<str> for $name<R> {
            fn as_ref(&self) -> &str {
                self.id()
            }
        }
    };
}

macro_rules! instance_events {
    ($name:ident, $kind:expr) => {
        impl<R: Runtime> $name<R> {
            fn filter(&self) -> Filter {
                Filter::resource($kind, self.id())
            }

            fn source(&self) -> String {
                format!("{}:{}", $kind.as_str(), self.id())
            }

            /// Calls `handler(event, instances)` for every event of type `T` concerning this
            /// resource (node's `instance.on(type, handler)`). Registered before this returns,
            /// so attach it before creating the resource. Each call runs as with
            /// [`Client::on`](crate::Client::on): a call that waits continues as its own task.
            /// Removed by itself after the resource's final event, or with
            /// [`Listener::remove`].
            pub fn on<T: ClientEvent<R>>(
                &self,
                handler: impl EventHandler<T, T::Instances>,
            ) -> Listener {
                let shared = self.client.inner.shared.clone();
                let sink = typed_handler::<R, T, _>(&self.client, handler, Start::Inline);
                let id = shared.subscribe(self.filter().with_type(T::TYPE), sink);
                Listener::new(shared, id)
            }

            /// As `on`, but each call is a task of its own from the start (see
            /// [`Client::on_spawned`](crate::Client::on_spawned)).
            pub fn on_spawned<T: ClientEvent<R>>(
                &self,
                handler: impl EventHandler<T, T::Instances>,
            ) -> Listener {
                let shared = self.client.inner.shared.clone();
                let sink = typed_handler::<R, T, _>(&self.client, handler, Start::Spawn);
                let id = shared.subscribe(self.filter().with_type(T::TYPE), sink);
                Listener::new(shared, id)
            }

            /// The next event of type `T` concerning this resource, awaitable (node's
            /// `once`). Subscribed when called: create it before the action that causes the
            /// event. Fails with [`Error::Ended`] if the resource ends first, at once if it
            /// has already ended (see [`Client::channel`](crate::Client::channel)).
            pub fn once<T: EventType + Clone>(&self) -> Once<T> {
                Once::new(
                    &self.client.inner.shared,
                    self.filter(),
                    Some(self.source()),
                )
            }

            /// Every event concerning this resource, as a stream that ends after its final
            /// event (at once if the resource has already ended). Dropping it unsubscribes.
            pub fn events(&self) -> EventStream {
                EventStream::new(&self.client.inner.shared, self.filter())
            }

            /// The events of type `T` concerning this resource, as a stream.
            pub fn stream<T: EventType + Clone>(&self) -> TypedStream<T> {
                TypedStream::new(&self.client.inner.shared, self.filter())
            }
        }
    };
}

macro_rules! instance_wrap {
    ($name:ident, $model:ident, own: |$m:ident| $own:expr) => {
        instance_wrap!(@impl $name, $model, |$m| Some($own), |$m| Arc::from($own));
    };
    ($name:ident, $model:ident, computed: |$m:ident| $computed:expr) => {
        instance_wrap!(@impl $name, $model, |$m| { let _ = $m; None }, |$m| Arc::from($computed));
    };
    (@impl $name:ident, $model:ident, |$m:ident| $own:expr, |$m2:ident| $computed:expr) => {
        impl InstanceModel for models::$model {
            fn own_id(&self) -> Option<&str> {
                let $m = self;
                $own
            }
            fn computed_id(&self) -> Arc<str> {
                let $m2 = self;
                $computed
            }
        }

        /// Shares the snapshot: the instance holds this `Arc` (an event's field, for
        /// instance), and its id is read from it.
        impl<R: Runtime> Wrap<R> for Arc<models::$model> {
            type Out = $name<R>;
            fn wrap(self, client: &Client<R>) -> $name<R> {
                $name::from_ident(client.clone(), Ident::from_snapshot(self))
            }
        }

        impl<R: Runtime> Wrap<R> for models::$model {
            type Out = $name<R>;
            fn wrap(self, client: &Client<R>) -> $name<R> {
                Arc::new(self).wrap(client)
            }
        }
    };
}

instance_common!(
    /// A channel: `channel.answer()`, `channel.play(..)`, `channel.on::<ChannelDtmfReceived>(..)`.
    Channel, Channel, "channel id"
);
instance_common!(
    /// A bridge: `bridge.add_channel(..)`, `bridge.play(..)`, `bridge.on::<ChannelEnteredBridge>(..)`.
    ///
    /// Its listeners, streams and awaited events end with its `BridgeDestroyed`. Asterisk
    /// sends that event only to applications subscribed to the bridge, so after the
    /// application's own [`Bridge::destroy`] they end within the linger
    /// ([`ClientBuilder::stasis_end_linger`](crate::ClientBuilder::stasis_end_linger)) even
    /// when it does not come (an awaited event then fails with [`Error::Ended`](crate::Error::Ended)).
    Bridge, Bridge, "bridge id"
);
instance_common!(
    /// A playback: control it, await its end with [`Playback::finished`].
    Playback, Playback, "playback id"
);
instance_common!(
    /// A live recording (named by its recording name): stop, pause, mute; await its end with
    /// [`LiveRecording::finished`].
    LiveRecording, LiveRecording, "recording name"
);
instance_common!(
    /// A stored recording (named by its recording name).
    StoredRecording, StoredRecording, "recording name"
);
instance_common!(
    /// An endpoint (`PJSIP/alice`): its id is `technology/resource`.
    Endpoint, Endpoint, "`technology/resource`"
);
instance_common!(
    /// A device state (named by its device name, `Stasis:foo`).
    DeviceState, DeviceState, "device name"
);
instance_common!(
    /// A Stasis application (named by its app name).
    Application, Application, "application name"
);

instance_events!(Channel, ResourceKind::Channel);
instance_events!(Bridge, ResourceKind::Bridge);
instance_events!(Playback, ResourceKind::Playback);
instance_events!(LiveRecording, ResourceKind::Recording);
instance_events!(Endpoint, ResourceKind::Endpoint);
instance_events!(DeviceState, ResourceKind::DeviceState);

instance_wrap!(Channel, Channel, own: |m| m.id.as_str());
instance_wrap!(Bridge, Bridge, own: |m| m.id.as_str());
instance_wrap!(Playback, Playback, own: |m| m.id.as_str());
instance_wrap!(LiveRecording, LiveRecording, own: |m| m.name.as_str());
instance_wrap!(StoredRecording, StoredRecording, own: |m| m.name.as_str());
instance_wrap!(Endpoint, Endpoint, computed: |m| format!("{}/{}", m.technology, m.resource));
instance_wrap!(DeviceState, DeviceState, own: |m| m.name.as_str());
instance_wrap!(Application, Application, own: |m| m.name.as_str());

macro_rules! plain_from_parts {
    ($($name:ident),*) => {
        $(
            impl<R: Runtime> $name<R> {
                pub(crate) fn from_parts(client: Client<R>, id: impl Into<Arc<str>>) -> Self {
                    Self::from_ident(client, Ident::Id(id.into()))
                }

                fn from_ident(client: Client<R>, ident: Ident<models::$name>) -> Self {
                    $name { client, ident, watch: None }
                }
            }
        )*
    };
}

plain_from_parts!(
    Channel,
    Bridge,
    StoredRecording,
    Endpoint,
    DeviceState,
    Application
);

impl<R: Runtime> Playback<R> {
    fn from_ident(client: Client<R>, ident: Ident<models::Playback>) -> Self {
        // Share the early watch of a playback made with `client.new_playback()`, if it still
        // exists (a `playWithId` response for it).
        let watch = client
            .inner
            .shared
            .find_watch(ResourceKind::Playback, ident.id());
        Playback {
            client,
            ident,
            watch,
        }
    }

    pub(crate) fn new_watched(client: Client<R>, id: String) -> Self {
        let watch = Some(client.inner.shared.watch(ResourceKind::Playback, &id));
        Playback {
            client,
            ident: Ident::Id(id.into()),
            watch,
        }
    }

    /// Completes when the playback has finished (`PlaybackFinished`), at once if it already
    /// has (for a handle made from Asterisk's answer or event; see below for ids). A playback
    /// Asterisk could not play (its final state is `failed`: a sound file that does not exist,
    /// a bad media URI) fails with [`Error::PlaybackFailed`]; one that played, or that was
    /// stopped, is `Ok`. One cut off by a restart of Asterisk (the client learns it when it
    /// reconnects) fails with [`Error::Ended`]: it did not finish. (A playback whose end this client did not see — it ended before a
    /// handle made with a server-side id asked Asterisk, whose 404 says only that it is over —
    /// is `Ok`.)
    ///
    /// A playback made with [`Client::new_playback`] is watched from its creation (before
    /// `playWithId` is sent), so its end cannot be missed; one made with [`Client::playback`]
    /// is watched from that call on (an end before it is not seen). For one created by Asterisk (with
    /// a server-side id) this subscribes, then asks Asterisk for the playback: a 404 means it
    /// has already finished.
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>, channel: ari_client::Channel<R>) -> Result<(), ari_client::Error> {
    /// let playback = client.new_playback(); // watched from here on
    /// channel.play_with_id(&playback, ["sound:hello-world"]).await?;
    /// playback.finished().await?;
    /// // Or in one line:
    /// channel.play("sound:hello-world").await?.finished().await?;
    /// # Ok(()) }
    /// ```
    pub fn finished(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let this = self.clone();
        let early = this.watch.clone();
        let late = if early.is_none() {
            Some(this.once::<ari_proto::events::PlaybackFinished>())
        } else {
            None
        };
        async move {
            if let Some(w) = early {
                return wait_watch(&w).await;
            }
            if let Some(once) = late {
                let op = ari_proto::ops::playbacks::Get::new(this.id());
                match this.client.execute(&op).await {
                    Err(e) if e.is_not_found() => return Ok(()),
                    Err(e) => return Err(e),
                    Ok(pb) if pb.state == models::PlaybackState::Queued => {
                        // Queued behind the channel's (or bridge's) other commands: if the
                        // channel leaves first, Asterisk drops it without an event, and the
                        // wait ends then (at once if it has left already).
                        let target = match pb.target_uri.split_once(':') {
                            Some(("channel", t)) => Some((ResourceKind::Channel, t)),
                            Some(("bridge", t)) => Some((ResourceKind::Bridge, t)),
                            _ => None,
                        };
                        if let Some((kind, target)) = target {
                            this.client.inner.shared.command(|s| {
                                s.queued_on(ResourceKind::Playback, this.id(), kind, target)
                            });
                        }
                    }
                    Ok(_) => {}
                }
                once.await.and_then(|e| playback_outcome(&e.playback))
            } else {
                Ok(())
            }
        }
    }
}

impl<R: Runtime> LiveRecording<R> {
    fn from_ident(client: Client<R>, ident: Ident<models::LiveRecording>) -> Self {
        let watch = client
            .inner
            .shared
            .find_watch(ResourceKind::Recording, ident.id());
        LiveRecording {
            client,
            ident,
            watch,
        }
    }

    pub(crate) fn new_watched(client: Client<R>, id: String) -> Self {
        let watch = Some(client.inner.shared.watch(ResourceKind::Recording, &id));
        LiveRecording {
            client,
            ident: Ident::Id(id.into()),
            watch,
        }
    }

    /// The recording name (same as [`LiveRecording::id`]).
    pub fn name(&self) -> &str {
        self.id()
    }

    /// Completes when the recording has ended: `Ok(())` if it finished
    /// (`RecordingFinished`), [`Error::RecordingFailed`] with the cause Asterisk gave if it
    /// failed (`RecordingFailed`, e.g. its channel was in a bridge when it would start). Like
    /// [`Playback::finished`], a recording made with [`Client::new_live_recording`] is
    /// watched from its creation; otherwise this subscribes and then asks Asterisk for the
    /// live recording.
    ///
    /// When it had already ended (Asterisk answers 404), the outcome comes from what this
    /// client saw: its end if routed meanwhile, or the client's record of the latest
    /// [`Limits::max_ended_ids`](ari_proto::session::Limits::max_ended_ids) ends, which keeps
    /// failures and their causes. If the client did not see the end (it came before the
    /// client connected, or is no longer remembered), a stored recording of that name means
    /// it finished (`Ok`); without one, and no final event within a second (it may still be
    /// on its way: the events and the REST answer travel on different connections), the
    /// outcome cannot be known and this fails with [`Error::RecordingOutcomeUnknown`] rather
    /// than report a success it cannot vouch for.
    /// (A stored recording left by an earlier recording of the same name counts as
    /// finished: give recordings fresh names.) A recording Asterisk refused to start (the
    /// `record` request failed, e.g. 422 for a format it cannot write) fails with
    /// [`Error::Ended`], as does one that never started because its channel left the
    /// application first (queued behind a prompt when the caller hung up: Asterisk drops it
    /// without an event).
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>, channel: ari_client::Channel<R>) -> Result<(), ari_client::Error> {
    /// use ari_client::Error;
    /// let rec = client.new_live_recording(); // watched from here on
    /// channel.record(&rec, "wav").beep(true).await?;
    /// match rec.finished().await {
    ///     Ok(()) => println!("stored as {}", rec.name()),
    ///     Err(Error::RecordingFailed { cause, .. }) => println!("failed: {cause:?}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn finished(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let this = self.clone();
        let early = this.watch.clone();
        let late = if early.is_none() {
            Some(this.events())
        } else {
            None
        };
        async move {
            use futures_util::{FutureExt, StreamExt};
            if let Some(w) = early {
                let outcome = std::future::poll_fn(|cx| w.latch.poll_outcome(cx)).await;
                return match outcome {
                    LatchOutcome::Final(ev) => recording_outcome(&ev, this.id()).unwrap_or(Ok(())),
                    LatchOutcome::Closed(crate::shared::CloseReason::Shutdown) => {
                        Err(Error::closed("the client was closed"))
                    }
                    // Asterisk refused to start it (`record` failed): it never existed, and
                    // a stored recording of that name is not this one.
                    // Or it was queued on a channel that left before it started: Asterisk
                    // dropped it.
                    LatchOutcome::Closed(crate::shared::CloseReason::Ended(
                        ari_proto::session::EndReason::NotCreated
                        | ari_proto::session::EndReason::NeverStarted,
                    )) => Err(Error::Ended {
                        resource: format!("recording:{}", this.id()),
                    }),
                    // Asterisk's outbound connection is gone: nothing more will be known.
                    LatchOutcome::Closed(crate::shared::CloseReason::Ended(
                        ari_proto::session::EndReason::PeerGone,
                    )) => Err(Error::AsteriskGone {
                        resource: format!("recording:{}", this.id()),
                    }),
                    LatchOutcome::Closed(crate::shared::CloseReason::Ended(
                        ari_proto::session::EndReason::ApplicationUnregistered,
                    )) => Err(Error::ApplicationUnregistered {
                        resource: format!("recording:{}", this.id()),
                    }),
                    // Ended without its final event reaching the watch.
                    LatchOutcome::Closed(_) => this.unseen_outcome().await,
                };
            }
            let Some(mut events) = late else {
                return Ok(());
            };
            let op = ari_proto::ops::recordings::GetLive::new(this.id());
            match this.client.execute(&op).await {
                Err(e) if e.is_not_found() => {
                    // Already over: its end may have been routed while we asked.
                    while let Some(Some(item)) = events.next().now_or_never() {
                        if let Some(r) = item.ok().and_then(|ev| recording_outcome(&ev, this.id()))
                        {
                            return r;
                        }
                    }
                    let outcome = this.unseen_outcome().await;
                    if !matches!(outcome, Err(Error::RecordingOutcomeUnknown { .. })) {
                        return outcome;
                    }
                    // Or its final event is still on its way: it and this answer travel on
                    // different connections. Wait for it a little before giving up.
                    let rt = this.client.runtime().clone();
                    let grace = rt.sleep_until(rt.now() + END_IN_FLIGHT);
                    let end = async {
                        while let Some(item) = events.next().await {
                            if let Some(r) =
                                item.ok().and_then(|ev| recording_outcome(&ev, this.id()))
                            {
                                return Some(r);
                            }
                        }
                        None
                    };
                    let (end, grace) = (std::pin::pin!(end), std::pin::pin!(grace));
                    let seen = match futures_util::future::select(end, grace).await {
                        futures_util::future::Either::Left((seen, _)) => seen,
                        futures_util::future::Either::Right(_) => None,
                    };
                    if let Some(r) = seen {
                        return r;
                    }
                    return this.unseen_outcome().await;
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            while let Some(item) = events.next().await {
                if let Some(r) = item.ok().and_then(|ev| recording_outcome(&ev, this.id())) {
                    return r;
                }
            }
            // The stream ended without the final event (the end was already remembered, or
            // Asterisk restarted, or the client closed: then the request below says so).
            this.unseen_outcome().await
        }
    }

    /// The outcome of a recording whose final event this wait did not receive: the client's
    /// record of ended resources, else whether a stored recording has its name.
    async fn unseen_outcome(&self) -> Result<(), Error> {
        match self.client.inner.shared.recording_end(self.id()) {
            Some(None) => return Ok(()),
            Some(Some(cause)) => return Err(recording_failed(self.id(), &cause)),
            None => {}
        }
        let op = ari_proto::ops::recordings::GetStored::new(self.id());
        match self.client.execute(&op).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(Error::RecordingOutcomeUnknown {
                name: self.id().to_string(),
            }),
            Err(e) => Err(e),
        }
    }
}

/// How long [`LiveRecording::finished`] waits for a recording's final event after Asterisk
/// answered that it is no longer live and the client has not seen its end.
const END_IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(1);

fn recording_failed(name: &str, cause: &str) -> Error {
    Error::RecordingFailed {
        name: name.to_string(),
        cause: (!cause.is_empty()).then(|| cause.to_string()),
    }
}

fn recording_outcome(ev: &ari_proto::Event, name: &str) -> Option<Result<(), Error>> {
    use ari_proto::Event;
    match ev {
        Event::RecordingFinished(e) if e.recording.name == name => Some(Ok(())),
        Event::RecordingFailed(e) if e.recording.name == name => Some(Err(recording_failed(
            name,
            e.recording.cause.as_deref().unwrap_or(""),
        ))),
        _ => None,
    }
}

/// How a playback ended, from its final `PlaybackFinished`: state `failed` (Asterisk could
/// not play the media) is [`Error::PlaybackFailed`]; `done` (played, stopped, or cancelled
/// before it started) is `Ok`.
fn playback_outcome(p: &models::Playback) -> Result<(), Error> {
    match p.state {
        models::PlaybackState::Failed => Err(Error::PlaybackFailed {
            id: p.id.to_string(),
            media_uri: p.media_uri.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A playback's watch: over once it has ended, however that was learnt.
async fn wait_watch(w: &Arc<Watch>) -> Result<(), Error> {
    let outcome = std::future::poll_fn(|cx| w.latch.poll_outcome(cx)).await;
    match outcome {
        LatchOutcome::Final(ev) => match &*ev {
            ari_proto::Event::PlaybackFinished(e) => playback_outcome(&e.playback),
            _ => Ok(()),
        },
        LatchOutcome::Closed(crate::shared::CloseReason::Shutdown) => {
            Err(Error::closed("the client was closed"))
        }
        // Asterisk refused to create it (`play_with_id` failed): it never played.
        // Or it was queued on a channel that left before it started: Asterisk dropped it.
        LatchOutcome::Closed(crate::shared::CloseReason::Ended(
            ari_proto::session::EndReason::NotCreated | ari_proto::session::EndReason::NeverStarted,
        )) => Err(Error::Ended {
            resource: format!("playback:{}", w.key.1),
        }),
        LatchOutcome::Closed(crate::shared::CloseReason::Ended(
            ari_proto::session::EndReason::PeerGone,
        )) => Err(Error::AsteriskGone {
            resource: format!("playback:{}", w.key.1),
        }),
        LatchOutcome::Closed(crate::shared::CloseReason::Ended(
            ari_proto::session::EndReason::ApplicationUnregistered,
        )) => Err(Error::ApplicationUnregistered {
            resource: format!("playback:{}", w.key.1),
        }),
        LatchOutcome::Closed(_) => {
            // Over without its final event reaching this watch. If the session saw it (the
            // handle was made after it, or its delivery was dropped), the playback finished;
            // otherwise it was cut off (Asterisk restarted): it did not finish.
            let seen = w
                .shared
                .upgrade()
                .is_some_and(|s| s.has_ended(w.key.0, &w.key.1));
            if seen {
                Ok(())
            } else {
                Err(Error::Ended {
                    resource: format!("playback:{}", w.key.1),
                })
            }
        }
    }
}

impl<R: Runtime> Endpoint<R> {
    /// The technology (`PJSIP`).
    pub fn technology(&self) -> &str {
        self.id()
            .split_once('/')
            .map(|(t, _)| t)
            .unwrap_or(self.id())
    }

    /// The resource (`alice`).
    pub fn resource(&self) -> &str {
        self.id().split_once('/').map(|(_, r)| r).unwrap_or("")
    }
}

impl<R: Runtime> Application<R> {
    /// The application name (same as [`Application::id`]).
    pub fn name(&self) -> &str {
        self.id()
    }
}

impl<R: Runtime> StoredRecording<R> {
    /// The recording name (same as [`StoredRecording::id`]).
    pub fn name(&self) -> &str {
        self.id()
    }
}

impl<R: Runtime> DeviceState<R> {
    /// The device name (same as [`DeviceState::id`]).
    pub fn name(&self) -> &str {
        self.id()
    }
}

// ---- factories -----------------------------------------------------------------------------

/// Instance factories: see "Instance factories" on [`Client`].
impl<R: Runtime> Client<R> {
    /// A channel with a fresh client-side id, not created yet: attach listeners, then
    /// `channel.originate(..)` (which uses `originateWithId` with this id), so even its
    /// `StasisStart` reaches them.
    pub fn new_channel(&self) -> Channel<R> {
        let id = self.inner.shared.new_resource_id();
        Channel::from_parts(self.clone(), id)
    }

    /// The channel with this id (no request is sent).
    ///
    /// If the channel already ended (its `ChannelDestroyed` was routed before; the client
    /// remembers the latest 1,024 ends, [`Limits::max_ended_ids`](crate::Limits::max_ended_ids)),
    /// its `once` fails at once with [`Error::Ended`](crate::Error::Ended) and its streams
    /// end at once. To originate a new channel under an id used before, call
    /// [`Client::forget_ended`] first.
    pub fn channel(&self, id: impl Into<String>) -> Channel<R> {
        Channel::from_parts(self.clone(), id.into())
    }

    /// Forgets that the resource with this id ended, before creating a new one under the
    /// same client-side id (`client.channel(id).originate(..)`, `client.bridge(id).create()`,
    /// `play_with_id`, a recording name): listeners attached from now on wait for the new
    /// resource's events. Without it, waits on a resource whose end the client remembers fail
    /// at once with [`Error::Ended`](crate::Error::Ended). An event creating the resource
    /// again (`StasisStart`, `ChannelCreated`, `BridgeCreated`, `PlaybackStarted`,
    /// `RecordingStarted`) forgets the end too, but listeners attached before it have ended.
    /// Returns whether the end was remembered.
    ///
    /// ```no_run
    /// # async fn f<R: ari_client::Runtime>(client: ari_client::Client<R>) -> Result<(), ari_client::Error> {
    /// use ari_client::events::{ResourceKind, StasisStart};
    /// // "agent-7" was the id of an earlier call, now hung up.
    /// client.forget_ended(ResourceKind::Channel, "agent-7");
    /// let channel = client.channel("agent-7");
    /// let started = channel.once::<StasisStart>();
    /// channel.originate("PJSIP/agent7").app("hello").await?;
    /// started.await?;
    /// # Ok(()) }
    /// ```
    pub fn forget_ended(&self, kind: ResourceKind, id: &str) -> bool {
        self.inner.shared.forget_ended(kind, id)
    }

    /// A bridge with a fresh client-side id, for `bridge.create()` (`createWithId`).
    pub fn new_bridge(&self) -> Bridge<R> {
        let id = self.inner.shared.new_resource_id();
        Bridge::from_parts(self.clone(), id)
    }

    /// The bridge with this id (no request is sent).
    pub fn bridge(&self, id: impl Into<String>) -> Bridge<R> {
        Bridge::from_parts(self.clone(), id.into())
    }

    /// A playback with a fresh client-side id, for `channel.play_with_id(&playback, media)`.
    /// Its end is watched from now on, so [`Playback::finished`] cannot miss it.
    pub fn new_playback(&self) -> Playback<R> {
        let id = self.inner.shared.new_resource_id();
        Playback::new_watched(self.clone(), id)
    }

    /// The playback with this id (no request is sent). If it is not created yet, its end is
    /// watched from now on.
    ///
    /// Its [`Playback::finished`] waits for the end seen from now on, or returns at once if
    /// the client remembers the playback's `PlaybackFinished` (see [`Client::channel`]; to
    /// reuse a playback id, call [`Client::forget_ended`] first). For a playback that may
    /// have ended longer ago (an id from an earlier event), ask Asterisk instead —
    /// `client.playbacks().get(id)` answers 404 once it has ended, and the handle it returns
    /// checks that in its `finished()`. Asterisk's 404 cannot tell "ended" from "not created yet",
    /// which is why this handle, meant for ids about to be used, does not ask.
    pub fn playback(&self, id: impl Into<String>) -> Playback<R> {
        Playback::new_watched(self.clone(), id.into())
    }

    /// A live recording with a fresh client-side name, for `channel.record(&recording, ..)`.
    /// Its end is watched from now on.
    pub fn new_live_recording(&self) -> LiveRecording<R> {
        let id = self.inner.shared.new_resource_id();
        LiveRecording::new_watched(self.clone(), id)
    }

    /// The live recording with this name (its id; no request is sent). If it is not created
    /// yet, its end is watched from now on.
    ///
    /// As for [`Client::playback`], its [`LiveRecording::finished`] waits for the end seen from
    /// now on; for a recording that may already have ended, use the handle returned by
    /// `client.recordings().get_live(name)`, whose `finished()` asks Asterisk first.
    pub fn live_recording(&self, name: impl Into<String>) -> LiveRecording<R> {
        LiveRecording::new_watched(self.clone(), name.into())
    }

    /// The stored recording with this name (its id; no request is sent).
    pub fn stored_recording(&self, name: impl Into<String>) -> StoredRecording<R> {
        StoredRecording::from_parts(self.clone(), name.into())
    }

    /// The endpoint `technology/resource` (no request is sent).
    pub fn endpoint(&self, technology: &str, resource: &str) -> Endpoint<R> {
        Endpoint::from_parts(self.clone(), format!("{technology}/{resource}"))
    }

    /// The device state of this device (`Stasis:foo`; no request is sent).
    pub fn device_state(&self, name: impl Into<String>) -> DeviceState<R> {
        DeviceState::from_parts(self.clone(), name.into())
    }

    /// The Stasis application with this name (no request is sent).
    pub fn application(&self, name: impl Into<String>) -> Application<R> {
        Application::from_parts(self.clone(), name.into())
    }

    /// Wraps a model into what operations return: a resource model (e.g. the `channel` of
    /// an event from [`Client::event_stream`]) into its instance object. Wrapping an event's
    /// `Arc` snapshot (`client.wrap(event.channel.clone())`) shares it with the instance.
    pub fn wrap<M: Wrap<R>>(&self, model: M) -> M::Out {
        model.wrap(self)
    }
}

// ---- one-line playback ---------------------------------------------------------------------

/// Media for [`Channel::play`] and [`Bridge::play`]: one URI (`"sound:hello-world"`) or
/// several, played in order (`["sound:vm-goodbye", "digits:42"]`).
pub trait IntoMedia {
    /// The media URIs.
    fn into_media(self) -> Vec<String>;
}

impl IntoMedia for &str {
    fn into_media(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl IntoMedia for String {
    fn into_media(self) -> Vec<String> {
        vec![self]
    }
}

impl IntoMedia for &String {
    fn into_media(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl<T: Into<String>> IntoMedia for Vec<T> {
    fn into_media(self) -> Vec<String> {
        self.into_iter().map(Into::into).collect()
    }
}

impl<T: Into<String>, const N: usize> IntoMedia for [T; N] {
    fn into_media(self) -> Vec<String> {
        self.into_iter().map(Into::into).collect()
    }
}

impl<T: AsRef<str>> IntoMedia for &[T] {
    fn into_media(self) -> Vec<String> {
        self.iter().map(|t| t.as_ref().to_string()).collect()
    }
}

/// A playback being started ([`Channel::play`], [`Bridge::play`]): `.await` it for the
/// [`Playback`], whose end is watched from before the request was sent.
///
/// ```no_run
/// # async fn demo<R: ari_client::Runtime>(channel: ari_client::Channel<R>) -> Result<(), ari_client::Error> {
/// channel.play("sound:hello-world").await?.finished().await?;
/// // Optional parameters of `playWithId`:
/// channel.play("sound:tt-monkeys").map(|op| op.lang("en").skipms(3000)).await?;
/// # Ok(()) }
/// ```
#[must_use = "a Play does nothing until it is awaited"]
pub struct Play<R: Runtime, O> {
    playback: Playback<R>,
    call: crate::Call<R, O>,
}

impl<R: Runtime, O> Play<R, O> {
    /// Sets optional parameters of the operation (`lang`, `offsetms`, `skipms`).
    pub fn map(self, f: impl FnOnce(O) -> O) -> Self {
        Play {
            playback: self.playback,
            call: self.call.map(f),
        }
    }

    /// The playback (its id is client-side; it exists once the request succeeded).
    pub fn playback(&self) -> &Playback<R> {
        &self.playback
    }

    /// The operation that will be sent.
    pub fn op(&self) -> &O {
        self.call.op()
    }
}

impl<R: Runtime, O: fmt::Debug> fmt::Debug for Play<R, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Play")
            .field("playback", &self.playback.id())
            .field("op", self.call.op())
            .finish()
    }
}

impl<R, O> std::future::IntoFuture for Play<R, O>
where
    R: Runtime,
    O: ari_proto::Operation<Output = models::Playback> + Send + 'static,
{
    type Output = Result<Playback<R>, Error>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        let (client, op) = self.call.into_parts();
        let playback = self.playback;
        Box::pin(client.execute_then(&op, move |model, _| Playback {
            ident: playback.ident.with_data(Arc::new(model)),
            ..playback
        }))
    }
}

impl<R: Runtime> Channel<R> {
    /// Plays media to the channel (`playWithId` with a fresh client-side playback id, watched
    /// before the request is sent): `channel.play("sound:hello-world").await?.finished().await?`.
    pub fn play(&self, media: impl IntoMedia) -> Play<R, ari_proto::ops::channels::PlayWithId> {
        let playback = self.client.new_playback();
        let op =
            ari_proto::ops::channels::PlayWithId::new(self.id(), playback.id(), media.into_media());
        Play {
            call: crate::Call::new(self.client.clone(), op),
            playback,
        }
    }
}

impl<R: Runtime> Bridge<R> {
    /// Plays media to everyone in the bridge (`playWithId`, like [`Channel::play`]).
    pub fn play(&self, media: impl IntoMedia) -> Play<R, ari_proto::ops::bridges::PlayWithId> {
        let playback = self.client.new_playback();
        let op =
            ari_proto::ops::bridges::PlayWithId::new(self.id(), playback.id(), media.into_media());
        Play {
            call: crate::Call::new(self.client.clone(), op),
            playback,
        }
    }
}
