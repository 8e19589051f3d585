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
