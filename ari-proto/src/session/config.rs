//! Configuration of a [`Session`](super::Session).

use std::time::Duration;

/// How the events WebSocket authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WsAuth {
    /// `Authorization: Basic …` header with the base URL's credentials (the default).
    #[default]
    Basic,
    /// `api_key=user:password` (percent-encoded) in the query string, for WebSocket stacks
    /// that cannot set headers. The password then appears in the URL: prefer [`WsAuth::Basic`].
    ApiKey,
}

/// When and how often the session reopens a lost events WebSocket.
///
/// The delay before reconnect attempt `n` (1-based) is
/// `base(n) = min(initial_delay × multiplierⁿ⁻¹, max_delay)`, reduced by a random fraction of at
/// most `jitter`: the delay lies in `[base(n) × (1 − jitter), base(n)]`, so it never exceeds
/// `max_delay`. See [`ReconnectPolicy::delay_bounds`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay before the first attempt (default 500 ms).
    pub initial_delay: Duration,
    /// Growth factor per attempt (default 2.0; values below 1 or not finite count as 1).
    pub multiplier: f64,
    /// Cap on any delay (default 30 s).
    pub max_delay: Duration,
    /// Fraction in `[0, 1]` by which a delay is randomly shortened (default 0.2).
    pub jitter: f64,
    /// Attempts after which the session gives up ([`ConnectionEvent::MaxRetries`]);
    /// `None` (the default) retries forever, `Some(0)` never reconnects.
    ///
    /// [`ConnectionEvent::MaxRetries`]: super::ConnectionEvent::MaxRetries
    pub max_attempts: Option<u32>,
    /// A connection that lived at least this long resets the attempt count (default 10 s).
    pub stable_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(500),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.2,
            max_attempts: None,
            stable_after: Duration::from_secs(10),
        }
    }
}

impl ReconnectPolicy {
    /// A policy that never reconnects: the first failure ends the session with
    /// [`ConnectionEvent::MaxRetries`](super::ConnectionEvent::MaxRetries).
    pub fn never() -> Self {
        ReconnectPolicy {
            max_attempts: Some(0),
            ..ReconnectPolicy::default()
        }
    }

    /// Sets the initial delay.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// Sets the multiplier.
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// Sets the cap.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Sets the jitter fraction (clamped to `[0, 1]`).
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j;
        self
    }

    /// Sets the maximum number of attempts (`None`: unlimited).
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the stability time.
    pub fn stable_after(mut self, d: Duration) -> Self {
        self.stable_after = d;
        self
    }

    fn jitter_fraction(&self) -> f64 {
        if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    fn base_secs(&self, attempt: u32) -> f64 {
        let m = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exp = attempt.saturating_sub(1).min(i32::MAX as u32) as i32;
        let base = self.initial_delay.as_secs_f64() * m.powi(exp);
        let cap = self.max_delay.as_secs_f64();
        if base.is_finite() {
            base.min(cap)
        } else {
            cap
        }
    }

    /// The `(shortest, longest)` delay attempt `attempt` (1-based) can wait.
    pub fn delay_bounds(&self, attempt: u32) -> (Duration, Duration) {
        let base = self.base_secs(attempt);
        let low = base * (1.0 - self.jitter_fraction());
        (
            secs(low).min(self.max_delay),
            secs(base).min(self.max_delay),
        )
    }

    /// The delay for `attempt` given a uniform random `unit` in `[0, 1)`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_secs(attempt);
        let d = base * (1.0 - self.jitter_fraction() * unit.clamp(0.0, 1.0));
        let (low, high) = self.delay_bounds(attempt);
        secs(d).clamp(low, high)
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// WebSocket keepalive: a ping every `interval`; no pong within `timeout` of a ping means the
/// connection is dead (it is closed and, per the [`ReconnectPolicy`], reopened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Time between pings (default 20 s).
    pub interval: Duration,
    /// How long a ping may wait for its pong (default 10 s).
    pub timeout: Duration,
}

impl Keepalive {
    /// A keepalive with this interval and pong timeout.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive { interval, timeout }
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive::new(Duration::from_secs(20), Duration::from_secs(10))
    }
}

/// Bounds on what the session holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// A text frame longer than this is not decoded: it is counted
    /// ([`Stats::oversized_frames`](super::Stats::oversized_frames)) and reported with
    /// [`Warning::FrameTooLarge`](super::Warning::FrameTooLarge). Default 4 MiB. (`ari-client`
    /// lets its transport read frames up to twice this size, so that such a frame is skipped
    /// and counted; a larger one resets the connection.)
    pub max_frame_bytes: usize,
    /// REST-over-WebSocket requests awaiting their response; one more is refused with
    /// [`SendError::TooManyPending`](super::SendError::TooManyPending). Default 1024.
    pub max_pending_requests: usize,
    /// Undelivered events and warnings waiting in [`Session::poll_output`](super::Session::poll_output).
    /// When full, the oldest of them is dropped, counted and announced with
    /// [`Output::Overflow`](super::Output::Overflow). Default 10 000.
    pub max_queued_outputs: usize,
    /// A frame whose JSON nests objects/arrays deeper than this is refused before parsing,
    /// counted ([`Stats::decode_errors`](super::Stats::decode_errors)) and reported with
    /// [`Warning::Malformed`](super::Warning::Malformed). ARI events nest four levels at
    /// most. Default 32.
    pub max_json_depth: usize,
    /// How many resources that received their final event (`ChannelDestroyed`,
    /// `BridgeDestroyed`, `PlaybackFinished`, `RecordingFinished`, `RecordingFailed`) the
    /// session remembers, the latest ones, so that a subscription to one of them made after
    /// its end ends at once ([`Session::subscribe_with`](super::Session::subscribe_with)).
    /// Default 1024; 0 remembers none.
    pub max_ended_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 4 << 20,
            max_pending_requests: 1024,
            max_queued_outputs: 10_000,
            max_json_depth: 32,
            max_ended_ids: 1024,
        }
    }
}

impl Limits {
    /// Sets the maximum frame size.
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }

    /// Sets the maximum JSON nesting depth of a frame.
    pub fn max_json_depth(mut self, n: usize) -> Self {
        self.max_json_depth = n;
        self
    }

    /// Sets the maximum number of pending requests.
    pub fn max_pending_requests(mut self, n: usize) -> Self {
        self.max_pending_requests = n;
        self
    }

    /// Sets how many ended resources are remembered.
    pub fn max_ended_ids(mut self, n: usize) -> Self {
        self.max_ended_ids = n;
        self
    }

    /// Sets the maximum number of queued events and warnings (at least 1 is used).
    pub fn max_queued_outputs(mut self, n: usize) -> Self {
        self.max_queued_outputs = n;
        self
    }
}

/// Everything a [`Session`](super::Session) needs besides the base URL ([`BaseUrl`](crate::rest::BaseUrl)).
///
/// ```
/// use std::time::Duration;
/// use ari_proto::session::{Keepalive, ReconnectPolicy, SessionConfig, WsAuth};
/// let config = SessionConfig::new(["hello", "test"])
///     .subscribe_all(false)
///     .auth(WsAuth::Basic)
///     .reconnect(ReconnectPolicy::default().max_attempts(Some(10)))
///     .keepalive(Some(Keepalive::new(Duration::from_secs(15), Duration::from_secs(5))))
///     .request_timeout(Duration::from_secs(5))
///     .rng_seed(0x5eed);
/// assert_eq!(config.apps, ["hello", "test"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Stasis application names registered on the connection (`app=a,b`).
    pub apps: Vec<String>,
    /// `subscribeAll=true`: receive every event of the system, not only the apps' own.
    pub subscribe_all: bool,
    /// How the WebSocket authenticates.
    pub auth: WsAuth,
    /// Whether to offer the `ari` WebSocket subprotocol (`Sec-WebSocket-Protocol: ari`).
    /// Default `false`.
    pub offer_subprotocol: bool,
    /// Reconnect policy.
    pub reconnect: ReconnectPolicy,
    /// Keepalive pings (default on, see [`Keepalive::default`]); `None` disables them.
    pub keepalive: Option<Keepalive>,
    /// Deadline of a REST-over-WebSocket request (default 10 s).
    pub request_timeout: Duration,
    /// Bounds.
    pub limits: Limits,
    /// Seed of the session's PRNG (client-side ids, jitter, `Sec-WebSocket-Key`).
    ///
    /// The default is a fixed constant, so two sessions with the default seed create the same
    /// ids: an adapter must seed it from OS randomness (`getrandom`, `RandomState`, …).
    pub rng_seed: u64,
    /// How long the subscriptions of a channel outlive its `StasisEnd` when no other event
    /// of it comes (default 2 s; `None`: until `ChannelDestroyed` or removal), and those of a
    /// bridge the application destroyed outlive the `DELETE` when no `BridgeDestroyed` comes.
    /// See [`SessionConfig::stasis_end_linger`].
    pub stasis_end_linger: Option<Duration>,
    /// [Accepted](super::Session::accepted) sessions: how long the session waits for
    /// Asterisk to open a new connection after losing one before it gives the previous
    /// connection's calls up (default `None`: for ever). See [`SessionConfig::peer_timeout`].
    pub peer_timeout: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            apps: Vec::new(),
            subscribe_all: false,
            auth: WsAuth::Basic,
            offer_subprotocol: false,
            reconnect: ReconnectPolicy::default(),
            keepalive: Some(Keepalive::default()),
            request_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            rng_seed: 0x0A21_5E55_1011_D5EE,
            stasis_end_linger: Some(Duration::from_secs(2)),
            peer_timeout: None,
        }
    }
}

impl SessionConfig {
    /// A configuration for these applications, defaults otherwise.
    pub fn new<I, S>(apps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SessionConfig {
            apps: apps.into_iter().map(Into::into).collect(),
            ..SessionConfig::default()
        }
    }

    /// Sets `subscribeAll`.
    pub fn subscribe_all(mut self, on: bool) -> Self {
        self.subscribe_all = on;
        self
    }

    /// Sets the authentication.
    pub fn auth(mut self, auth: WsAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Offers the `ari` subprotocol.
    pub fn offer_subprotocol(mut self, on: bool) -> Self {
        self.offer_subprotocol = on;
        self
    }

    /// Sets the reconnect policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Sets (or with `None` disables) the keepalive.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Sets the REST-over-WebSocket request deadline.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// How long the subscriptions of a channel outlive its `StasisEnd` (default 2 s; `None`:
    /// until `ChannelDestroyed` or removal).
    ///
    /// Asterisk sends no `ChannelDestroyed` to an application for a channel it only followed
    /// because the channel was in its Stasis (an incoming call that hung up or went back to
    /// the dialplan): its last event is `StasisEnd`. So once a followed channel has left
    /// Stasis and no event of it came for this long, the session ends its subscriptions
    /// ([`Output::SubscriptionEnded`](super::Output::SubscriptionEnded) with
    /// [`EndReason::ResourceEnded`](super::EndReason::ResourceEnded)), on its timers
    /// ([`Session::poll_timeout`](super::Session::poll_timeout)). A channel the application
    /// still follows (originated by it, or subscribed) keeps sending events, each restarting
    /// the delay, and ends with `ChannelDestroyed` as usual; one that re-enters Stasis
    /// (moved to another application of this connection) stops lingering.
    ///
    /// Every channel that left Stasis counts as ended once its linger is over
    /// ([`Session::has_ended`](super::Session::has_ended)), followed or not: a subscription
    /// to it made later ends at once, one made during the linger (a handle taken in a
    /// `StasisEnd` handler) ends with it. The linger of a channel nobody follows is not
    /// restarted by its later events (routing looks nothing up for them): an originated
    /// channel sent back to the dialplan without a subscription counts as ended after this
    /// delay; subscribe before it leaves Stasis, or call
    /// [`Session::forget_ended`](super::Session::forget_ended), to follow it further.
    ///
    /// A bridge the application destroyed (`DELETE /bridges/{id}` succeeded,
    /// [`Session::bridge_destroyed`](super::Session::bridge_destroyed)) lingers as long: its
    /// `BridgeDestroyed` reaches only applications subscribed to the bridge, so without it
    /// the bridge's subscriptions end, and the bridge counts as ended, when this delay is over.
    pub fn stasis_end_linger(mut self, linger: Option<Duration>) -> Self {
        self.stasis_end_linger = linger;
        self
    }

    /// [Accepted](super::Session::accepted) sessions: how long to wait for Asterisk to open
    /// a new connection after losing one (default `None`: for ever).
    ///
    /// Asterisk redials a persistent outbound connection at once, and retries every
    /// `reconnect_interval` while the application is unreachable; a per-call one is redialled
    /// at once while its channel is in Stasis. When no connection comes back within this
    /// delay (Asterisk is gone: stopped, crashed for good, cut off by the network), nothing
    /// will ever end the calls of the lost connection: the session ends the subscriptions of
    /// every channel, bridge, playback and recording
    /// ([`Output::SubscriptionEnded`](super::Output::SubscriptionEnded) with
    /// [`EndReason::PeerGone`](super::EndReason::PeerGone)), reports
    /// [`ConnectionEvent::PeerGone`](super::ConnectionEvent::PeerGone) and counts it in
    /// [`Stats::peers_gone`](super::Stats::peers_gone). Subscriptions not tied to one such
    /// resource (every event, an application's calls, endpoints) stay: a connection that
    /// comes later is served as usual. The time is the `now` of
    /// [`Session::handle_disconnected`](super::Session::handle_disconnected) and
    /// [`Session::handle_timeout`](super::Session::handle_timeout).
    pub fn peer_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// Sets the bounds.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the PRNG seed.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }
}
