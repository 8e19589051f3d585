//! A stop (or cancel) of a live recording that Asterisk disregarded is sent again once the
//! recording starts.
//!
//! Asterisk answers 204 to `POST recordings/live/{name}/stop` and `DELETE
//! recordings/live/{name}` of a recording whose command has not run yet (queued behind the
//! channel's playbacks, or in its first milliseconds) and does nothing else
//! (`res_stasis_recording`'s `recording_disregard`: the state turns `canceled`); the recording
//! then starts (`RecordingStarted`) and runs to its own end. The application asked for it to
//! end: when no wait of the client had seen it started (its `RecordingStarted`) before the
//! request, the client asks Asterisk where it stands after the 204 and, if the request was
//! disregarded, sends it again once the recording starts. It stops following it when the
//! recording ends, or when its channel or bridge does (a recording whose channel goes away
//! before it starts is dropped by Asterisk without an event).

use std::sync::{Arc, Weak};

use futures_util::{FutureExt, StreamExt};

use ari_proto::events::ResourceKind;
use ari_proto::models::LiveRecordingState;
use ari_proto::rest::RequestParts;
use ari_proto::session::Filter;
use ari_proto::Event;

use crate::client::{Client, Inner};
use crate::listen::EventStream;
use crate::runtime::Runtime;

/// A stop or cancel of a recording not seen started, followed from before it was sent.
pub(crate) struct Restop {
    name: String,
    parts: RequestParts,
    /// The recording's events from before the request on.
    events: EventStream,
}

/// Where a live recording stands after a stop or cancel was answered with success.
enum Standing {
    /// Over, or ending (`done`), or unknown (an error): nothing to do.
    Over,
    /// Recording or paused: the request did not take effect.
    Running,
    /// `canceled` (a disregarded request, or a cancel under way) on this target
    /// (`channel:ID`, `bridge:ID`).
    Canceled(String),
}

impl<R: Runtime> Client<R> {
    /// Before `parts` is sent: when it stops or cancels a live recording that no wait has
    /// seen started, its events are followed from now on.
    pub(crate) fn watch_stop(&self, parts: &RequestParts) -> Option<Box<Restop>> {
        let name = parts.stopped_recording()?;
        if self
            .inner
            .shared
            .lock()
            .session
            .has_seen(ResourceKind::Recording, &name)
        {
            // Its `RecordingStarted` was seen: the request takes effect.
            return None;
        }
        let events = EventStream::new(&self.inner.shared, Filter::recording(name.clone()));
        Some(Box::new(Restop {
            name,
            parts: parts.clone(),
            events,
        }))
    }

    /// The request of `restop` was answered with success: it is sent again if Asterisk
    /// disregarded it, in the background (holding no reference that keeps the client open).
    pub(crate) fn follow_stop(&self, restop: Box<Restop>) {
        let client = Arc::downgrade(&self.inner);
        // Boxed until here: the request's future holds a pointer, not the follower.
        self.inner.runtime.spawn(Restop::run(restop, client));
    }
}

impl Restop {
    async fn run<R: Runtime>(this: Box<Self>, client: Weak<Inner<R>>) {
        let Restop {
            name,
            parts,
            mut events,
        } = *this;
        let upgrade = || client.upgrade().map(|inner| Client { inner });
        let Some(c) = upgrade() else {
            return;
        };
        let target = match standing(&c, &name).await {
            Standing::Over => return,
            Standing::Running => return resend(&c, &name, parts).await,
            Standing::Canceled(target) => target,
        };
        drop(c);
        // Events routed before the answer came before it: the recording had not started
        // then (or it would not read `canceled` after a stop), or it was running and is
        // being canceled (its final event follows).
        let mut started = false;
        while let Some(Some(item)) = events.next().now_or_never() {
            match item {
                Ok(Event::RecordingStarted(_)) => started = true,
                Ok(ev) if ev.ended_resource().is_some() => return,
                _ => {}
            }
        }
        let target = match target.split_once(':') {
            Some(("channel", id)) => Some((ResourceKind::Channel, id.to_string())),
            Some(("bridge", id)) => Some((ResourceKind::Bridge, id.to_string())),
            _ => None,
        };
        let mut target_events = match (&target, client.upgrade()) {
            (Some((kind, id)), Some(inner)) => Some(EventStream::new(
                &inner.shared,
                Filter::resource(*kind, id.clone()),
            )),
            (_, None) => return,
            (None, Some(_)) => None,
        };
        // The target's own end (not that of another resource an event of it names).
        let target_ended = |ev: &Event| {
            ev.ended_resource().is_some_and(|r| {
                target
                    .as_ref()
                    .is_some_and(|(kind, id)| r.kind == *kind && r.id == id.as_str())
            })
        };
        loop {
            let next_target = async {
                match target_events.as_mut() {
                    Some(t) => t.next().await,
                    None => std::future::pending().await,
                }
            };
            let next_target = std::pin::pin!(next_target);
            let next_rec = std::pin::pin!(events.next());
            match futures_util::future::select(next_rec, next_target).await {
                futures_util::future::Either::Left((item, _)) => match item {
                    // A cancel of a running recording: its `RecordingStarted` was read first.
                    Some(Ok(Event::RecordingStarted(_))) if !started => {
                        if let Some(c) = upgrade() {
                            resend(&c, &name, parts).await;
                        }
                        return;
                    }
                    Some(Ok(_)) => {}
                    // Fell behind: ask Asterisk.
                    Some(Err(_)) => {
                        let Some(c) = upgrade() else {
                            return;
                        };
                        match standing(&c, &name).await {
                            Standing::Over => return,
                            Standing::Running => return resend(&c, &name, parts).await,
                            Standing::Canceled(_) => {}
                        }
                    }
                    // Its final event, or the client closed.
                    None => return,
                },
                futures_util::future::Either::Right((item, _)) => match item {
                    // The channel left the application or went away, or the bridge did:
                    // Asterisk drops a recording that has not started.
                    Some(Ok(Event::StasisEnd(_))) | None => return,
                    Some(Ok(ev)) if target_ended(&ev) => return,
                    Some(_) => {}
                },
            }
        }
    }
}

/// Where the live recording `name` stands (`GET recordings/live/{name}`).
async fn standing<R: Runtime>(c: &Client<R>, name: &str) -> Standing {
    let op = ari_proto::ops::recordings::GetLive::new(name);
    match c.execute(&op).await {
        Ok(r) => match r.state {
            LiveRecordingState::Recording | LiveRecordingState::Paused => Standing::Running,
            LiveRecordingState::Canceled | LiveRecordingState::Queued => {
                Standing::Canceled(r.target_uri.to_string())
            }
            _ => Standing::Over,
        },
        Err(e) if e.is_not_found() => Standing::Over,
        Err(e) => {
            tracing::warn!(recording = name, error = %e,
                "could not learn whether Asterisk disregarded a stop of this recording");
            Standing::Over
        }
    }
}

/// Sends the stop or cancel again; a 404 or 409 means the recording ended meanwhile.
async fn resend<R: Runtime>(c: &Client<R>, name: &str, parts: RequestParts) {
    tracing::debug!(
        recording = name,
        "a stop Asterisk disregarded (the recording had not started): sent again"
    );
    let operation = parts.operation;
    match c.transmit(operation, false, Box::new(parts)).await {
        Ok((200..=299 | 404 | 409, _)) => {}
        Ok((status, _)) => {
            tracing::warn!(
                recording = name,
                status,
                "the repeated stop of a recording failed"
            )
        }
        Err(e) => {
            tracing::warn!(recording = name, error = %e, "the repeated stop of a recording failed")
        }
    }
}
