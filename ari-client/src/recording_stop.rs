//! A stop (or cancel) of a live recording that Asterisk disregarded is sent again once the
//! recording starts.
//!
//! Asterisk answers 204 to `POST recordings/live/{name}/stop` and `DELETE
//! recordings/live/{name}` of a recording whose command has not run yet (queued behind the
//! channel's playbacks, or in its first milliseconds) and does nothing else
//! (`res_stasis_recording`'s `recording_disregard`: the state turns `canceled`); the recording
//! then starts (`RecordingStarted`) and runs to its own end. The application asked for it to
//! end: when no wait of the client had seen it started (its `RecordingStarted`) before the
//! request, the client asks Asterisk where it stands after the 204, before the request
//! returns: running, the request is sent again at once; `canceled`, it is sent again once the
//! recording starts, in the background. The background follower stops when the recording
//! ends, or when its channel or bridge does (a recording whose channel goes away before it
//! starts is dropped by Asterisk without an event), and asks Asterisk again every
//! [`RECHECK`] (the events may not reach this client's applications).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};

use ari_proto::events::ResourceKind;
use ari_proto::models::LiveRecordingState;
use ari_proto::rest::{self, RequestParts};
use ari_proto::session::Filter;
use ari_proto::Event;

use crate::client::{Client, Inner};
use crate::listen::EventStream;
use crate::runtime::Runtime;

/// How often a follower asks Asterisk where a disregarded recording stands.
const RECHECK: Duration = Duration::from_secs(5);

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

    /// The request of `restop` was answered with success: if Asterisk disregarded it, it is
    /// sent again now (the recording has started meanwhile) or once the recording starts
    /// (in the background, holding no reference that keeps the client open).
    pub(crate) async fn follow_stop(&self, restop: Box<Restop>) {
        let Restop {
            name,
            parts,
            mut events,
        } = *restop;
        let target = match standing(self, &name).await {
            Standing::Over => return,
            Standing::Running => return resend(self, &name, parts).await,
            Standing::Canceled(target) => target,
        };
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
        let target_events = target
            .as_ref()
            .map(|(kind, id)| EventStream::new(&self.inner.shared, Filter::resource(*kind, id)));
        let follower = Follower {
            name,
            parts,
            events,
            target,
            target_events,
            started,
        };
        let client = Arc::downgrade(&self.inner);
        self.inner.runtime.spawn(follower.run(client));
    }
}

/// A disregarded stop or cancel, waiting for its recording to start.
struct Follower {
    name: String,
    parts: RequestParts,
    events: EventStream,
    /// The recording's channel or bridge, and its events.
    target: Option<(ResourceKind, String)>,
    target_events: Option<EventStream>,
    /// A `RecordingStarted` came before Asterisk answered (a cancel of a running one).
    started: bool,
}

impl Follower {
    async fn run<R: Runtime>(mut self, client: Weak<Inner<R>>) {
        let upgrade = || client.upgrade().map(|inner| Client { inner });
        let Some(rt) = upgrade().map(|c| c.inner.runtime.clone()) else {
            return;
        };
        let mut recheck = Box::pin(rt.sleep_until(rt.now() + RECHECK));
        loop {
            let target_events = &mut self.target_events;
            let next_target = async {
                match target_events.as_mut() {
                    Some(t) => t.next().await,
                    None => std::future::pending().await,
                }
            };
            let next_target = std::pin::pin!(next_target);
            let next_rec = self.events.next();
            let either = futures_util::future::select(next_rec, next_target);
            let ask = match futures_util::future::select(either, recheck.as_mut()).await {
                futures_util::future::Either::Left((which, _)) => match which {
                    futures_util::future::Either::Left((item, _)) => match item {
                        // A cancel of a running recording: its `RecordingStarted` came first.
                        Some(Ok(Event::RecordingStarted(_))) if !self.started => {
                            if let Some(c) = upgrade() {
                                resend(&c, &self.name, self.parts).await;
                            }
                            return;
                        }
                        Some(Ok(_)) => false,
                        // Fell behind: ask Asterisk.
                        Some(Err(_)) => true,
                        // Its final event, or the client closed.
                        None => return,
                    },
                    futures_util::future::Either::Right((item, _)) => match item {
                        // The channel left the application or went away, or the bridge did:
                        // Asterisk drops a recording that has not started.
                        Some(Ok(Event::StasisEnd(_))) | None => return,
                        Some(Ok(ev)) if ends(&ev, self.target.as_ref()) => return,
                        Some(_) => false,
                    },
                },
                futures_util::future::Either::Right(((), _)) => {
                    recheck = Box::pin(rt.sleep_until(rt.now() + RECHECK));
                    true
                }
            };
            if ask {
                let Some(c) = upgrade() else {
                    return;
                };
                match standing(&c, &self.name).await {
                    Standing::Over => return,
                    Standing::Running => return resend(&c, &self.name, self.parts).await,
                    Standing::Canceled(_) => {}
                }
            }
        }
    }
}

/// Whether `ev` ends the target itself (not another resource it names).
fn ends(ev: &Event, target: Option<&(ResourceKind, String)>) -> bool {
    ev.ended_resource()
        .is_some_and(|r| target.is_some_and(|(kind, id)| r.kind == *kind && r.id == id.as_str()))
}

/// Where the live recording `name` stands (`GET recordings/live/{name}`).
async fn standing<R: Runtime>(c: &Client<R>, name: &str) -> Standing {
    use ari_proto::ops::recordings::GetLive;
    let op = GetLive::new(name);
    // Sent with `transmit` (not `execute`): this runs inside a request's own future.
    let answer = match rest::request_parts(&op) {
        Ok(parts) => {
            c.transmit("recordings.getLive", false, Box::new(parts))
                .await
        }
        Err(e) => Err(e.into()),
    };
    let live =
        answer.and_then(|(status, body)| Ok(rest::parse_response::<GetLive>(status, &body)?));
    match live {
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
