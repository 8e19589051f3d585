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
}

impl PeerInfo {
    pub(super) fn learn(&mut self, event: &Event) {
        match event {
            Event::ApplicationRegistered(e) => {
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
                self.applications.retain(|a| *a != e.application);
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
