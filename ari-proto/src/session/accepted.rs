//! Accepted mode: the session of a WebSocket that Asterisk opened (ARI outbound WebSocket,
//! `ari.conf` `type=outbound_websocket`).
//!
//! Everything but connecting is the same as for a session that dials: routing, instance
//! subscriptions, keepalive, bounds, REST over the WebSocket (the only way to reach Asterisk
//! here). What differs:
//!
//! - no [`Transmit::Connect`](super::Transmit::Connect) ever, and no reconnect timer:
//!   Asterisk connects, and reconnects by itself;
//! - the adapter reports each connection Asterisk opened with
//!   [`Session::handle_accepted`] (after checking its upgrade request with
//!   [`crate::outbound::UpgradeCheck`]); a lost one becomes
//!   [`ConnectionEvent::Disconnected`](super::ConnectionEvent::Disconnected) and the session
//!   waits in [`ConnectionState::AwaitingPeer`](super::ConnectionState::AwaitingPeer);
//! - the session learns the applications the connection serves (from `ApplicationRegistered`,
//!   e.g. `obpc:Local/12#@dtmf-00000152;1` on a per-call connection) and the Asterisk's
//!   `asterisk_id`.

use std::time::Instant;

use super::{RequestError, Session, SessionConfig, State};
use crate::events::Event;

/// What an accepted session learned about its peer from the frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PeerInfo {
    pub(super) asterisk_id: Option<String>,
    pub(super) applications: Vec<String>,
    /// The applications Asterisk unregistered on the current connection since one was last
    /// registered (its configuration removed: see [`Session::handle_closed`]).
    pub(super) unregistered: Vec<String>,
    /// The channels in Stasis of the connection's applications (a `StasisStart` came, no
    /// `StasisEnd` or `ChannelDestroyed` yet), with the connection (its number) they entered
    /// on: the calls the application serves.
    pub(super) in_stasis: std::collections::HashMap<String, u64>,
}

impl PeerInfo {
    /// Learns from `event`, routed on connection number `connection`.
    pub(super) fn learn(&mut self, event: &Event, connection: u64) {
        match event {
            Event::StasisStart(e) => {
                // A channel that took another's place in Stasis (a masquerade, e.g. an
                // attended transfer): the call goes on as this one.
                if let Some(replaced) = &e.replace_channel {
                    self.in_stasis.remove(replaced.id.as_str());
                }
                self.in_stasis
                    .insert(e.channel.id.as_str().to_owned(), connection);
            }
            Event::StasisEnd(e) => {
                self.in_stasis.remove(e.channel.id.as_str());
            }
            Event::ChannelDestroyed(e) => {
                self.in_stasis.remove(e.channel.id.as_str());
            }
            Event::ApplicationRegistered(e) => {
                self.unregistered.clear();
                if let Some(id) = &e.asterisk_id {
                    if self.asterisk_id.as_deref() != Some(id.as_str()) {
                        self.asterisk_id = Some(id.as_str().to_owned());
                    }
                }
                if !e.application.is_empty()
                    && !self.applications.iter().any(|a| *a == e.application)
                {
                    self.applications.push(e.application.as_str().to_owned());
                }
            }
            Event::ApplicationUnregistered(e) => {
                let before = self.applications.len();
                self.applications.retain(|a| *a != e.application);
                if self.applications.len() < before {
                    self.unregistered.push(e.application.as_str().to_owned());
                }
            }
            _ => {}
        }
    }
}

impl Session {
    /// A session for a WebSocket that Asterisk opens to the application (outbound
    /// WebSocket), waiting for its first connection ([`Session::handle_accepted`]).
    ///
    /// [`SessionConfig::apps`] may be empty: Asterisk decides which applications the
    /// connection serves (see [`Session::applications`]). The reconnect policy and
    /// [`SessionConfig::auth`] are not used.
    ///
    /// ```
    /// use std::time::Instant;
    /// use ari_proto::session::{ConnectionEvent, ConnectionState, Output, Session, SessionConfig};
    /// let now = Instant::now();
    /// let mut s = Session::accepted(SessionConfig::default());
    /// s.start(now); // does nothing: Asterisk connects
    /// assert!(s.poll_transmit().is_none());
    /// s.handle_accepted(now);
    /// assert!(matches!(
    ///     s.poll_output(),
    ///     Some(Output::Connection(ConnectionEvent::Connected { reconnected: false, .. }))
    /// ));
    /// s.handle_frame(now, br#"{"type":"ApplicationRegistered","application":"obapp",
    ///     "timestamp":"2026-12-05T22:32:45.355+0000","asterisk_id":"02:fc:00:00:00:01"}"#);
    /// assert_eq!(s.applications(), ["obapp"]);
    /// assert_eq!(s.asterisk_id(), Some("02:fc:00:00:00:01"));
    /// s.handle_disconnected(now, "closed by Asterisk");
    /// assert_eq!(s.state(), ConnectionState::AwaitingPeer);
    /// assert!(s.poll_transmit().is_none()); // no reconnect: Asterisk does that
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accepted(config: SessionConfig) -> Session {
        Session::accepted_with_subscription_data(config)
    }
}

impl<T: Clone> Session<T> {
    /// [`Session::accepted`] with data kept per subscription, as
    /// [`Session::with_subscription_data`].
    pub fn accepted_with_subscription_data(config: SessionConfig) -> Session<T> {
        Session::build(None, true, config)
    }

    /// Whether the session serves connections Asterisk opens ([`Session::accepted`]).
    pub fn is_accepted(&self) -> bool {
        self.accepted
    }

    /// The `asterisk_id` of the peer, from its `ApplicationRegistered` frames (accepted
    /// sessions; `None` until one arrived, or if Asterisk sent none).
    pub fn asterisk_id(&self) -> Option<&str> {
        self.peer.asterisk_id.as_deref()
    }

    /// The applications the connection serves, in the order Asterisk registered them
    /// (accepted sessions: from `ApplicationRegistered`, minus `ApplicationUnregistered`).
    /// A per-call connection serves one, named `<app>:<channel name>`.
    pub fn applications(&self) -> &[String] {
        &self.peer.applications
    }

    /// The calls of an accepted session: the channels in Stasis of the connection's
    /// applications (a `StasisStart` came on it and no `StasisEnd` or `ChannelDestroyed`
    /// since), with those counted by [`Session::note_in_stasis`]. The channels of Asterisk's
    /// previous run leave it with [`Session::handle_asterisk_restarted`], all of them when
    /// Asterisk is gone for good or unregistered the applications. Always 0 for a session that
    /// dials.
    ///
    /// ```
    /// use std::time::Instant;
    /// use ari_proto::session::{Session, SessionConfig};
    /// let now = Instant::now();
    /// let mut s = Session::accepted(SessionConfig::default());
    /// s.handle_accepted(now);
    /// let channel = r#"{"id":"c1","name":"PJSIP/a-1","state":"Up","protocol_id":"",
    ///     "caller":{"name":"","number":""},"connected":{"name":"","number":""},
    ///     "accountcode":"","dialplan":{"context":"c","exten":"s","priority":1,
    ///     "app_name":"Stasis","app_data":"obapp"},"creationtime":"2026-12-05T22:32:45.355+0000",
    ///     "language":"en"}"#;
    /// let at = r#""timestamp":"2026-12-05T22:32:45.355+0000","application":"obapp""#;
    /// s.handle_frame(now, format!(r#"{{"type":"StasisStart",{at},"args":[],
    ///     "channel":{channel}}}"#).as_bytes());
    /// assert_eq!(s.calls_in_stasis(), 1);
    /// s.handle_frame(now, format!(r#"{{"type":"StasisEnd",{at},"channel":{channel}}}"#)
    ///     .as_bytes());
    /// assert_eq!(s.calls_in_stasis(), 0);
    /// ```
    pub fn calls_in_stasis(&self) -> usize {
        self.peer.in_stasis.len()
    }

    /// Accepted sessions: counts `channel` among the [calls in
    /// Stasis](Session::calls_in_stasis) although no `StasisStart` announced it on this
    /// connection (a call already in Stasis when the application started, found by asking
    /// Asterisk), until its `StasisEnd` or `ChannelDestroyed`. Ignored by a session that
    /// dials.
    pub fn note_in_stasis(&mut self, channel: &str) {
        if self.accepted {
            self.peer
                .in_stasis
                .insert(channel.to_owned(), self.stats.connects);
        }
    }

    /// Asterisk opened a WebSocket to the application and its upgrade was accepted: it is
    /// the session's connection from now on. Accepted sessions only (otherwise counted in
    /// [`Stats::stale_inputs`](super::Stats::stale_inputs)), and not after
    /// [`Session::stop`].
    ///
    /// If the previous connection is still open, it is replaced (a reconnecting Asterisk
    /// whose old socket has not been seen closing yet): the adapter closes the old socket
    /// itself and reports nothing more about it; requests pending on it fail with
    /// [`RequestError::Disconnected`], counted in
    /// [`Stats::replaced_connections`](super::Stats::replaced_connections). Then
    /// [`ConnectionEvent::Connected`](super::ConnectionEvent::Connected) (with
    /// `reconnected: true` after the first connection).
    pub fn handle_accepted(&mut self, now: Instant) {
        if !self.accepted || matches!(self.state, State::Stopped) {
            self.stats.stale_inputs += 1;
            return;
        }
        if let State::Connected { .. } = self.state {
            self.stats.replaced_connections += 1;
            self.clear_socket_transmits();
            self.fail_pending(|| RequestError::Disconnected {
                reason: "replaced by a newer connection from Asterisk".to_string(),
            });
        }
        self.open(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::events::ResourceKind;
    use crate::session::{
        ConnectionEvent, ConnectionState, EndReason, Filter, Output, Session, SessionConfig,
    };

    fn drain(s: &mut Session) -> Vec<Output<()>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn channel_frame(ty: &str, id: &str, extra: &str) -> String {
        let channel = |id: &str| {
            format!(
                r#"{{"id":"{id}","name":"PJSIP/a-{id}","state":"Up","protocol_id":"",
                "caller":{{"name":"","number":""}},"connected":{{"name":"","number":""}},
                "accountcode":"","dialplan":{{"context":"c","exten":"s","priority":1,
                "app_name":"Stasis","app_data":"obapp"}},
                "creationtime":"2026-12-05T22:32:45.355+0000","language":"en"}}"#
            )
        };
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(r#","replace_channel":{}"#, channel(extra))
        };
        format!(
            r#"{{"type":"{ty}","timestamp":"2026-12-05T22:32:45.355+0000","application":"obapp",
            "args":[],"channel":{}{extra}}}"#,
            channel(id)
        )
    }

    /// The calls in Stasis of an accepted session: a channel replacing another in Stasis
    /// takes its place; an Asterisk restart drops those of its previous run (not those that
    /// entered on the current connection); Asterisk gone for good drops them all; a call
    /// noted without its StasisStart counts until its StasisEnd.
    #[test]
    fn calls_in_stasis_follow_replacements_restarts_and_a_peer_gone() {
        #[allow(clippy::disallowed_methods)] // the test's clock: only a base for `now`
        let mut now = Instant::now();
        let mut s =
            Session::accepted(SessionConfig::default().peer_timeout(Some(Duration::from_secs(60))));
        s.handle_accepted(now);
        s.handle_frame(now, channel_frame("StasisStart", "a", "").as_bytes());
        s.handle_frame(now, channel_frame("StasisStart", "b", "a").as_bytes());
        assert_eq!(s.calls_in_stasis(), 1, "b took a's place");
        s.note_in_stasis("adopted");
        assert_eq!(s.calls_in_stasis(), 2);
        s.handle_frame(now, channel_frame("StasisEnd", "adopted", "").as_bytes());
        assert_eq!(s.calls_in_stasis(), 1);

        // Asterisk restarts while the connection is down; a new call comes on the next one
        // before the restart is known.
        s.handle_disconnected(now, "gone");
        s.handle_accepted(now);
        s.handle_frame(now, channel_frame("StasisStart", "c", "").as_bytes());
        s.handle_asterisk_restarted();
        assert_eq!(s.calls_in_stasis(), 1, "only c, of the new run");

        // Gone for good.
        s.handle_disconnected(now, "gone");
        now += Duration::from_secs(61);
        s.handle_timeout(now);
        assert_eq!(s.calls_in_stasis(), 0);
        drain(&mut s);
    }

    /// Asterisk never comes back: after `peer_timeout` (the session's own clock, passed in)
    /// the calls' subscriptions end with `PeerGone`, counted; the application-wide ones stay,
    /// and a later connection is served as usual. Without a timeout nothing ends.
    #[test]
    fn a_peer_that_never_comes_back_ends_the_calls_after_the_timeout() {
        #[allow(clippy::disallowed_methods)] // the test's clock: only a base for `now`
        let t0 = Instant::now();
        let mut s = Session::accepted(
            SessionConfig::default()
                .keepalive(None)
                .peer_timeout(Some(Duration::from_secs(60))),
        );
        s.start(t0);
        s.handle_accepted(t0);
        let call = s.subscribe(Filter::channel("1700000000.1"));
        let bridge = s.subscribe(Filter::resource(ResourceKind::Bridge, "b1"));
        let all = s.subscribe(Filter::all());
        drain(&mut s);
        s.handle_disconnected(t0, "connection reset");
        assert_eq!(s.state(), ConnectionState::AwaitingPeer);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        s.handle_timeout(t0 + Duration::from_secs(59));
        assert!(s.is_subscribed(call));
        s.handle_timeout(t0 + Duration::from_secs(60));
        let out = drain(&mut s);
        let ended: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::SubscriptionEnded { id, reason, .. } => Some((*id, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            ended,
            [(call, EndReason::PeerGone), (bridge, EndReason::PeerGone)]
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Connection(ConnectionEvent::PeerGone { ended: 2, .. })
        )));
        assert!(s.is_subscribed(all));
        assert_eq!(s.stats().peers_gone, 1);
        assert_eq!(s.poll_timeout(), None);
        // Asterisk comes back after all: served as usual, nothing more ends.
        s.handle_accepted(t0 + Duration::from_secs(120));
        assert!(s.is_connected());
        let later = s.subscribe(Filter::channel("1700000000.2"));
        s.handle_disconnected(t0 + Duration::from_secs(121), "reset");
        s.handle_accepted(t0 + Duration::from_secs(122));
        s.handle_timeout(t0 + Duration::from_secs(400));
        assert!(s.is_subscribed(later), "a peer back in time ends nothing");
        assert_eq!(s.stats().peers_gone, 1);
    }

    fn registered(s: &mut Session, now: Instant, app: &str, ty: &str) {
        let frame = format!(
            r#"{{"type":"{ty}","application":"{app}","timestamp":"2026-12-05T22:33:52.511+0000","asterisk_id":"02:fc:00:00:00:01"}}"#
        );
        s.handle_frame(now, frame.as_bytes());
    }

    /// The configuration removed and reloaded (recorded): `ApplicationUnregistered` for each
    /// app, then CLOSE 1000, and Asterisk never dials again. The calls' subscriptions end at
    /// once (no `peer_timeout` wait), counted; an ordinary close (Asterisk redials), a close
    /// after only some apps went or after an app came back, or another code ends nothing.
    #[test]
    fn every_app_unregistered_then_close_1000_ends_the_calls_at_once() {
        #[allow(clippy::disallowed_methods)] // the test's clock: only a base for `now`
        let t0 = Instant::now();
        let mut s = Session::accepted(
            SessionConfig::default()
                .keepalive(None)
                .peer_timeout(Some(Duration::from_secs(60))),
        );
        s.start(t0);
        s.handle_accepted(t0);
        registered(&mut s, t0, "a", "ApplicationRegistered");
        registered(&mut s, t0, "b", "ApplicationRegistered");
        let call = s.subscribe(Filter::channel("1700000000.1"));
        let all = s.subscribe(Filter::all());
        // An ordinary close: Asterisk redials at once; the call waits.
        s.handle_closed(t0, Some(1000), "closed by Asterisk (1000)");
        s.handle_accepted(t0);
        // Only one app removed, then a close: the other app is still served.
        registered(&mut s, t0, "a", "ApplicationUnregistered");
        s.handle_closed(t0, Some(1000), "closed");
        s.handle_accepted(t0);
        // Apps changed on the live socket: unregistered, then registered again.
        registered(&mut s, t0, "b", "ApplicationUnregistered");
        registered(&mut s, t0, "c", "ApplicationRegistered");
        s.handle_closed(t0, Some(1000), "closed");
        s.handle_accepted(t0);
        // Every app unregistered, but a going-away close (1001).
        registered(&mut s, t0, "c", "ApplicationUnregistered");
        s.handle_closed(t0, Some(1001), "going away");
        assert!(s.is_subscribed(call));
        assert_eq!(s.stats().applications_unregistered, 0);
        // Unregistered on an earlier connection does not count on the next one.
        s.handle_accepted(t0);
        s.handle_closed(t0, Some(1000), "closed");
        assert!(s.is_subscribed(call));
        s.handle_accepted(t0);
        registered(&mut s, t0, "a", "ApplicationRegistered");
        registered(&mut s, t0, "b", "ApplicationRegistered");
        let bridge = s.subscribe(Filter::resource(ResourceKind::Bridge, "b1"));
        drain(&mut s);
        // The configuration removed: both apps unregistered, then CLOSE 1000.
        registered(&mut s, t0, "b", "ApplicationUnregistered");
        registered(&mut s, t0, "a", "ApplicationUnregistered");
        drain(&mut s);
        s.handle_closed(t0, Some(1000), "closed by Asterisk (1000)");
        assert_eq!(s.state(), ConnectionState::AwaitingPeer);
        let out = drain(&mut s);
        let ended: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::SubscriptionEnded { id, reason, .. } => Some((*id, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            ended,
            [
                (call, EndReason::ApplicationUnregistered),
                (bridge, EndReason::ApplicationUnregistered)
            ]
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Connection(ConnectionEvent::ApplicationsUnregistered { applications, ended: 2 })
                if *applications == ["b", "a"]
        )));
        assert!(s.is_subscribed(all));
        assert_eq!(s.stats().applications_unregistered, 1);
        assert_eq!(s.stats().peers_gone, 0);
        // A stale close afterwards changes nothing.
        s.handle_closed(t0, Some(1000), "again");
        assert_eq!(s.stats().applications_unregistered, 1);
    }

    #[test]
    fn without_a_peer_timeout_the_calls_wait_for_ever() {
        #[allow(clippy::disallowed_methods)] // the test's clock: only a base for `now`
        let t0 = Instant::now();
        let mut s = Session::accepted(SessionConfig::default().keepalive(None));
        s.start(t0);
        s.handle_accepted(t0);
        let call = s.subscribe(Filter::channel("1700000000.1"));
        s.handle_disconnected(t0, "connection reset");
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t0 + Duration::from_secs(86_400));
        assert!(s.is_subscribed(call));
        assert_eq!(s.stats().peers_gone, 0);
    }
}
