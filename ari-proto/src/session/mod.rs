//! The sans-IO session: the events WebSocket, routing of events to subscriptions, per-instance
//! subscriptions that end by themselves, reconnects, keepalive, and REST over WebSocket.
//!
//! A [`Session`] owns no socket, reads no clock and spawns nothing: an adapter (`ari-tokio`,
//! `ari-smol`, a test) moves the bytes and passes the time in. Methods fall in four groups,
//! as in quinn-proto:
//!
//! - **commands**: [`start`](Session::start), [`stop`](Session::stop),
//!   [`subscribe`](Session::subscribe), [`unsubscribe`](Session::unsubscribe),
//!   [`send_request`](Session::send_request), [`new_resource_id`](Session::new_resource_id);
//! - **inputs** `handle_*(now, …)` (and [`handle_pong`](Session::handle_pong)): what happened
//!   on the WebSocket, and [`handle_timeout`](Session::handle_timeout) when the deadline passed;
//! - **outputs** `poll_*`: [`poll_transmit`](Session::poll_transmit) (what to send),
//!   [`poll_output`](Session::poll_output) (what to deliver), and
//!   [`poll_timeout`](Session::poll_timeout) (when to wake);
//! - **getters**: [`stats`](Session::stats), [`live_subscriptions`](Session::live_subscriptions),
//!   [`state`](Session::state).
//!
//! # The drive loop
//!
//! After every command or input, the adapter drains [`poll_transmit`](Session::poll_transmit)
//! until `None` (performing each [`Transmit`] in order), then
//! [`poll_output`](Session::poll_output) until `None` (handing each [`Output`] to the
//! application), then sleeps until [`poll_timeout`](Session::poll_timeout) or the next socket
//! event, whichever comes first. When the deadline passes it calls
//! [`handle_timeout`](Session::handle_timeout) (a call before the deadline is a harmless
//! no-op). `now` must never go backwards.
//!
//! [`Transmit::Connect`] means "open a WebSocket with this request, replacing any previous
//! one", [`Transmit::Close`] "close the current WebSocket". After either, the adapter reports
//! nothing more about the old socket: the session has already accounted for it.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ari_proto::rest::{Credentials, BaseUrl};
//! use ari_proto::session::{ConnectionEvent, Filter, Output, Session, SessionConfig, Transmit};
//!
//! let base_url = BaseUrl::new("http://pbx:8088", Credentials::new("asterisk", "secret")?)?;
//! let mut now = Instant::now(); // the adapter's clock; the session never reads one
//! let mut session = Session::new(base_url, SessionConfig::new(["hello"]).rng_seed(42));
//!
//! // Client-side id: subscribe before the channel exists, then originate with this id.
//! let chan = session.new_resource_id();
//! let sub = session.subscribe(Filter::channel(chan.clone()));
//!
//! session.start(now);
//! let Some(Transmit::Connect(request)) = session.poll_transmit() else { unreachable!() };
//! assert_eq!(request.uri(), "ws://pbx:8088/ari/events?app=hello");
//! // … the adapter opens the WebSocket, then:
//! session.handle_connected(now);
//! assert!(matches!(
//!     session.poll_output(),
//!     Some(Output::Connection(ConnectionEvent::Connected { reconnected: false, .. }))
//! ));
//!
//! // A text frame arrives.
//! let frame = format!(r#"{{"type":"ChannelDestroyed","timestamp":"2026-11-26T11:14:38.299+0000",
//!   "application":"hello","cause":16,"cause_txt":"Normal Clearing",
//!   "channel":{{"id":"{chan}","name":"PJSIP/alice-1","state":"Up","protocol_id":"",
//!     "caller":{{"name":"","number":""}},"connected":{{"name":"","number":""}},"accountcode":"",
//!     "dialplan":{{"context":"default","exten":"s","priority":1,"app_name":"","app_data":""}},
//!     "creationtime":"2026-11-26T11:14:30.000+0000","language":"en"}}}}"#);
//! session.handle_frame(now, frame.as_bytes());
//! while let Some(output) = session.poll_output() {
//!     match output {
//!         Output::Event(delivery) => {
//!             assert_eq!(delivery.event.type_name(), "ChannelDestroyed");
//!             assert_eq!(&delivery.subscribers[..], &[sub]);
//!         }
//!         // The channel is gone: its subscription ended by itself.
//!         Output::SubscriptionEnded { id, .. } => assert_eq!(id, sub),
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! assert_eq!(session.live_subscriptions(), 0);
//!
//! // Sleep until the next deadline (the keepalive ping), then tell the session.
//! now = session.poll_timeout().expect("a ping is due");
//! session.handle_timeout(now);
//! assert!(matches!(session.poll_transmit(), Some(Transmit::Ping(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Delivery
//!
//! Every decoded event frame becomes exactly one [`Output::Event`], in arrival order, carrying
//! the [`Subscribers`] it matched (in subscription order, each at most once, even when it
//! matches through several resources), possibly none: an adapter that only wants matched
//! events skips those with an empty list. `RESTResponse` frames answering a pending request
//! are not events: they become [`Output::Response`]. A `RESTResponse` matching no pending
//! request (late, after its deadline) is counted in [`Stats::unmatched_responses`] and
//! delivered as an ordinary event.
//!
//! A session made with [`Session::with_subscription_data`] keeps a value with each
//! subscription ([`Session::subscribe_with`]), typically the adapter's handler or queue: each
//! [`Delivery`] carries a clone of it per subscriber ([`Subscribers::into_data`]), and
//! [`Output::SubscriptionEnded`] gives it back, so an adapter never looks a handler up by id.
//! Routing reads it from the same index entry as the subscription itself.
//!
//! # Bounds and overflow
//!
//! Undelivered events and warnings are bounded by [`Limits::max_queued_outputs`]: when the
//! queue is full the *oldest* of them is dropped, counted in [`Stats::dropped_outputs`], and the
//! next [`poll_output`](Session::poll_output) returns [`Output::Overflow`] with the number
//! dropped since the previous marker, before anything else. Subscription bookkeeping (one-shot
//! and ended instances) happens when the frame is handled, so a dropped event never leaks a
//! subscription. Control outputs (connection events, responses, ended subscriptions) are never
//! dropped; they are bounded by the pending-request limit, the number of subscriptions, and a
//! constant number per input. Pending requests are bounded by
//! [`Limits::max_pending_requests`]. Frames are bounded by [`Limits::max_frame_bytes`].
//!
//! # Fuzzing
//!
//! Everything is reachable through the public API with arbitrary bytes and instants: a fuzz
//! target can build a `Vec` of operations (`start`, `stop`, `handle_frame(bytes)`,
//! `handle_timeout(now + d)`, …) and apply them in order. No input panics.

mod accepted;
mod config;
mod departed;
mod ended;
mod linger;
mod rng;
mod routing;

pub use config::{Keepalive, Limits, ReconnectPolicy, SessionConfig, WsAuth};
pub use routing::{EndReason, Filter, SubscriptionId};

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::events::{DecodeError, Event, ResourceKind};
use crate::rest::{self, BaseUrl, BuildError, Operation, RequestParts, ResponseError};
use rng::Rng;
use routing::{Matches, Router};
use smallvec::SmallVec;

const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Identifies a REST-over-WebSocket request; on the wire it is the `request_id` `r<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl RequestId {
    /// The number behind the id.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    fn parse_wire(s: &str) -> Option<RequestId> {
        let digits = s.strip_prefix('r')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(RequestId)
    }
}

impl fmt::Display for RequestId {
    /// The wire form, `r<n>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// What the adapter must do on the network.
///
/// Its `Debug` output never shows credentials: the `api_key` of a [`WsAuth::ApiKey`] request
/// and the `Authorization` header are redacted.
#[non_exhaustive]
pub enum Transmit {
    /// Open the events WebSocket with this request (replacing any previous socket). It carries
    /// the full URI (`ws://`/`wss://`), `Host`, the WebSocket upgrade headers
    /// (`Connection`, `Upgrade`, `Sec-WebSocket-Version`, `Sec-WebSocket-Key`),
    /// `Authorization` for [`WsAuth::Basic`] (marked sensitive), and
    /// `Sec-WebSocket-Protocol: ari` when offered. Answer with
    /// [`Session::handle_connected`] or [`Session::handle_connect_failed`].
    Connect(http::Request<()>),
    /// Send this text frame.
    Text(String),
    /// Send a ping with this payload; report its pong with [`Session::handle_pong`].
    Ping(Vec<u8>),
    /// Close the WebSocket (or abandon the connection attempt). Report nothing more about it.
    Close,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transmit::Connect(req) => {
                let uri = req.uri().to_string();
                let shown = match uri.find("api_key=") {
                    Some(at) => {
                        let end = uri[at..].find('&').map_or(uri.len(), |e| at + e);
                        format!("{}api_key=<redacted>{}", &uri[..at], &uri[end..])
                    }
                    None => uri,
                };
                let headers: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
                f.debug_struct("Connect")
                    .field("method", req.method())
                    .field("uri", &shown)
                    .field("headers", &headers)
                    .finish()
            }
            Transmit::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Transmit::Ping(p) => f.debug_tuple("Ping").field(p).finish(),
            Transmit::Close => f.write_str("Close"),
        }
    }
}

/// Checks that a Stasis application name can be sent on the events WebSocket: not empty, no
/// `,` (Asterisk splits the `app` parameter on commas after decoding it), no control
/// characters (NUL would cut it short).
pub fn check_app_name(name: &str) -> Result<(), BuildError> {
    let reason = if name.is_empty() {
        "an application name must not be empty"
    } else if name.contains(',') {
        "an application name must not contain ',' (Asterisk would read two applications)"
    } else if name.chars().any(char::is_control) {
        "an application name must not contain control characters"
    } else {
        return Ok(());
    };
    Err(BuildError::InvalidParameter {
        name: "app",
        reason,
    })
}

/// Checks a set of application names for the events WebSocket: at least one, each passing
/// [`check_app_name`].
pub fn check_apps<S: AsRef<str>>(apps: &[S]) -> Result<(), BuildError> {
    if apps.is_empty() {
        return Err(BuildError::InvalidParameter {
            name: "app",
            reason: "at least one application name is needed",
        });
    }
    apps.iter().try_for_each(|a| check_app_name(a.as_ref()))
}

/// The subscriptions an event goes to, in subscription order, each once, with each one's
/// data (see [`Session::with_subscription_data`]; `()` for a plain [`Session`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Subscribers<T = ()> {
    ids: SmallVec<[SubscriptionId; 4]>,
    data: SmallVec<[T; 4]>,
}

impl<T> Default for Subscribers<T> {
    fn default() -> Self {
        Subscribers {
            ids: SmallVec::new(),
            data: SmallVec::new(),
        }
    }
}

impl<T> Subscribers<T> {
    fn from_matches(matches: Matches<T>) -> Self {
        let (ids, data) = matches.into_iter().unzip();
        Subscribers { ids, data }
    }

    /// As a slice.
    pub fn as_slice(&self) -> &[SubscriptionId] {
        &self.ids
    }

    /// The data of each subscription, in the same order as the ids.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Each subscription with its data.
    pub fn iter_with_data(&self) -> impl Iterator<Item = (SubscriptionId, &T)> + '_ {
        self.ids.iter().copied().zip(self.data.iter())
    }

    /// Takes the data of each subscription, in the same order as the ids.
    pub fn into_data(self) -> impl Iterator<Item = T> {
        self.data.into_iter()
    }
}

impl<T> std::ops::Deref for Subscribers<T> {
    type Target = [SubscriptionId];
    fn deref(&self) -> &[SubscriptionId] {
        &self.ids
    }
}

impl<T> fmt::Debug for Subscribers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ids.iter()).finish()
    }
}

impl<'a, T> IntoIterator for &'a Subscribers<T> {
    type Item = &'a SubscriptionId;
    type IntoIter = std::slice::Iter<'a, SubscriptionId>;
    fn into_iter(self) -> Self::IntoIter {
        self.ids.iter()
    }
}

/// One event and the subscriptions it matched.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery<T = ()> {
    /// The event, decoded once and shared.
    pub event: Arc<Event>,
    /// The matching subscriptions; may be empty.
    pub subscribers: Subscribers<T>,
}

/// The state of the events connection, as reported to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The WebSocket is open. `reconnected` is true when an earlier connection existed:
    /// events may have been missed in between.
    #[non_exhaustive]
    Connected {
        /// Whether this is not the session's first connection.
        reconnected: bool,
    },
    /// The connection failed or was lost; attempt `attempt` (1-based, since the last stable
    /// connection) starts after `delay`.
    #[non_exhaustive]
    Reconnecting {
        /// Attempt number.
        attempt: u32,
        /// Delay before the attempt.
        delay: Duration,
        /// Why the previous connection ended.
        reason: String,
    },
    /// The reconnect policy's maximum number of attempts was reached; the session is
    /// inactive until [`Session::start`].
    #[non_exhaustive]
    MaxRetries {
        /// Attempts made.
        attempts: u32,
        /// Why the last connection ended.
        reason: String,
    },
    /// [`Session::stop`] closed the session; it does not reconnect.
    Closed,
    /// An [accepted](Session::accepted) session lost the connection Asterisk opened. The
    /// session does not reconnect (Asterisk does): it waits for the next
    /// [`Session::handle_accepted`]. A persistent outbound connection comes back by itself
    /// and Asterisk sends the events it queued meanwhile first; a per-call one comes back
    /// only while the channel is still in Stasis.
    #[non_exhaustive]
    Disconnected {
        /// Why the connection ended.
        reason: String,
    },
    /// An [accepted](Session::accepted) session's connection stayed down for
    /// [`SessionConfig::peer_timeout`]: the subscriptions of every channel, bridge, playback
    /// and recording ended ([`EndReason::PeerGone`]). A later connection from Asterisk is
    /// still served.
    #[non_exhaustive]
    PeerGone {
        /// How long the session waited.
        waited: Duration,
        /// How many subscriptions ended.
        ended: usize,
    },
    /// Asterisk unregistered every application of an [accepted](Session::accepted)
    /// session's connection (`ApplicationUnregistered` for each: its `outbound_websocket`
    /// configuration was removed and reloaded), then closed it with 1000
    /// ([`Session::handle_closed`]). Asterisk does not dial again, so the subscriptions of
    /// every channel, bridge, playback and recording ended at once
    /// ([`EndReason::ApplicationUnregistered`]), counted in
    /// [`Stats::applications_unregistered`]. (An ordinary close, after which Asterisk dials
    /// again at once, is [`ConnectionEvent::Disconnected`] only.) A later connection from
    /// Asterisk is still served.
    #[non_exhaustive]
    ApplicationsUnregistered {
        /// The applications Asterisk unregistered, in the order it did.
        applications: Vec<String>,
        /// How many subscriptions ended.
        ended: usize,
    },
}

/// A REST-over-WebSocket response, as Asterisk sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawResponse {
    /// HTTP status code (0 if Asterisk sent none or an invalid one).
    pub status: u16,
    /// HTTP reason phrase.
    pub reason_phrase: String,
    /// `Content-Type` of the body.
    pub content_type: Option<String>,
    /// The body (empty for 204).
    pub body: Bytes,
}

impl RawResponse {
    /// Parses the response as operation `O`'s result, with the same parser as HTTP
    /// ([`rest::parse_response`]).
    pub fn parse<O: Operation>(&self) -> Result<O::Output, ResponseError> {
        rest::parse_response::<O>(self.status, &self.body)
    }
}

/// Why a REST-over-WebSocket request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// No response within [`SessionConfig::request_timeout`]. The request may still have
    /// been executed by Asterisk.
    Timeout,
    /// The WebSocket closed before the response; the request may or may not have been
    /// executed. Retry once reconnected if the operation is idempotent.
    Disconnected {
        /// Why the connection ended.
        reason: String,
    },
    /// [`Session::stop`] was called while the request was pending.
    Closed,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Timeout => f.write_str(
                "no REST-over-WebSocket response within the request timeout; \
                 Asterisk may still have executed it (raise SessionConfig::request_timeout?)",
            ),
            RequestError::Disconnected { reason } => write!(
                f,
                "the events WebSocket closed before the response ({reason}); \
                 retry after reconnecting if the operation is idempotent"
            ),
            RequestError::Closed => f.write_str("the session was stopped before the response"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Why a request could not be sent over the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The events WebSocket is not open; wait for [`ConnectionEvent::Connected`] or send the
    /// request over HTTP.
    NotConnected,
    /// [`Limits::max_pending_requests`] requests are already awaiting their response.
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// The operation's request could not be built.
    Build(BuildError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotConnected => {
                f.write_str("the events WebSocket is not connected; wait for Connected or use HTTP")
            }
            SendError::TooManyPending { limit } => write!(
                f,
                "{limit} REST-over-WebSocket requests are already pending; \
                 wait for responses or raise Limits::max_pending_requests"
            ),
            SendError::Build(e) => write!(f, "could not build the request: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Build(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BuildError> for SendError {
    fn from(e: BuildError) -> Self {
        SendError::Build(e)
    }
}

/// Something went wrong with incoming data; the session carried on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A frame exceeded [`Limits::max_frame_bytes`] and was discarded.
    #[non_exhaustive]
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame was not a JSON object with a `type` and was discarded.
    #[non_exhaustive]
    Malformed {
        /// The decoder's message.
        error: String,
    },
    /// A known event type did not match its description; it is delivered as
    /// [`Event::Unknown`] (with the whole JSON) right after this warning.
    #[non_exhaustive]
    SchemaMismatch {
        /// The event type.
        type_name: String,
        /// The decoder's message.
        error: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::FrameTooLarge { len, max } => write!(
                f,
                "discarded a {len}-byte frame larger than Limits::max_frame_bytes ({max})"
            ),
            Warning::Malformed { error } => write!(f, "discarded a malformed frame: {error}"),
            Warning::SchemaMismatch { type_name, error } => write!(
                f,
                "{type_name} does not match its description ({error}); delivered as an unknown event"
            ),
        }
    }
}

/// What the session tells the application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Output<T = ()> {
    /// An event and the subscriptions it goes to (see the module docs, "Delivery").
    Event(Delivery<T>),
    /// The connection changed state.
    Connection(ConnectionEvent),
    /// The outcome of a REST-over-WebSocket request. Parse a success with
    /// [`RawResponse::parse`].
    #[non_exhaustive]
    Response {
        /// The request.
        id: RequestId,
        /// The response, or why there is none.
        result: Result<RawResponse, RequestError>,
    },
    /// The session removed a subscription by itself (after delivering its last event).
    #[non_exhaustive]
    SubscriptionEnded {
        /// The subscription.
        id: SubscriptionId,
        /// Why.
        reason: EndReason,
        /// Its data, given back.
        data: T,
    },
    /// `dropped` undelivered events/warnings were discarded (oldest first) because the queue
    /// was full; returned before the oldest remaining output.
    #[non_exhaustive]
    Overflow {
        /// How many since the previous marker.
        dropped: u64,
    },
    /// A problem with incoming data.
    Warning(Warning),
}

/// Counters since the session was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Text frames handled (including discarded ones).
    pub frames: u64,
    /// Bytes of those frames.
    pub frame_bytes: u64,
    /// Events delivered as [`Output::Event`] (queued, before any overflow drop).
    pub events: u64,
    /// Events of a type this version does not know.
    pub unknown_events: u64,
    /// Malformed frames discarded.
    pub decode_errors: u64,
    /// Known events that did not match their description (delivered as unknown).
    pub schema_errors: u64,
    /// Frames over [`Limits::max_frame_bytes`].
    pub oversized_frames: u64,
    /// Events and warnings dropped because the output queue was full.
    pub dropped_outputs: u64,
    /// Inputs that did not fit the current state (e.g. a frame while not connected).
    pub stale_inputs: u64,
    /// Successful connections.
    pub connects: u64,
    /// Reconnect attempts scheduled.
    pub reconnects: u64,
    /// Connections declared dead for lack of a pong.
    pub keepalive_timeouts: u64,
    /// Pings sent.
    pub pings: u64,
    /// REST-over-WebSocket requests sent.
    pub requests_sent: u64,
    /// Responses matched to a pending request.
    pub responses: u64,
    /// Requests that timed out.
    pub request_timeouts: u64,
    /// Requests failed by a disconnect or stop.
    pub requests_failed: u64,
    /// `RESTResponse` frames that matched no pending request.
    pub unmatched_responses: u64,
    /// Subscriptions the session ended by itself.
    pub subscriptions_ended: u64,
    /// Connections of an [accepted](Session::accepted) session replaced by a newer one from
    /// Asterisk while still open ([`Session::handle_accepted`]).
    pub replaced_connections: u64,
    /// Times an [accepted](Session::accepted) session gave its lost connection's calls up:
    /// Asterisk did not come back within [`SessionConfig::peer_timeout`]
    /// ([`ConnectionEvent::PeerGone`]).
    pub peers_gone: u64,
    /// Times an [accepted](Session::accepted) session's connection was closed by Asterisk
    /// after every application was unregistered (configuration removed): its calls' waits
    /// ended ([`ConnectionEvent::ApplicationsUnregistered`]).
    pub applications_unregistered: u64,
    /// Playbacks and recordings [`Session::queued_on`] left untracked because
    /// [`Limits::max_ended_ids`] channels and bridges already had some queued: if their
    /// channel leaves or their bridge goes before they start, their subscriptions are not
    /// ended with [`EndReason::NeverStarted`] (they wait for their own events or are
    /// dropped by the application).
    pub queued_untracked: u64,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Never started.
    Idle,
    /// A [`Transmit::Connect`] is out; waiting for its outcome.
    Connecting,
    /// The WebSocket is open.
    Connected,
    /// Waiting for the reconnect delay.
    WaitingToReconnect,
    /// Stopped by the user.
    Stopped,
    /// Gave up after the maximum number of attempts.
    GaveUp,
    /// An [accepted](Session::accepted) session without a connection: waiting for Asterisk
    /// to connect (again).
    AwaitingPeer,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    Connecting,
    Connected {
        since: Instant,
    },
    Waiting,
    Stopped,
    GaveUp,
    /// Accepted mode, no connection: Asterisk owns (re)connecting.
    AwaitingPeer,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Reconnect = 0,
    Ping = 1,
    Pong = 2,
    /// Accepted mode: the end of the wait for Asterisk's next connection.
    PeerGone = 3,
}

const TIMERS: [Timer; 4] = [Timer::Reconnect, Timer::Ping, Timer::Pong, Timer::PeerGone];

#[derive(Debug, Default)]
struct TimerTable([Option<Instant>; 4]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Option<Instant>) {
        self.0[t as usize] = at;
    }
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn expired(&mut self, t: Timer, now: Instant) -> bool {
        match self.get(t) {
            Some(at) if at <= now => {
                self.stop(t);
                true
            }
            _ => false,
        }
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

#[derive(Debug)]
struct Pending {
    deadline: Option<Instant>,
}

#[derive(serde::Serialize)]
struct RestRequestFrame<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    request_id: String,
    method: &'a str,
    uri: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    query_strings: Vec<QueryString<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_body: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct QueryString<'a> {
    name: &'a str,
    value: &'a str,
}

fn deadline(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// Keepalive and request deadlines are at least this far out, so a zero in the
/// configuration never makes an adapter spin on a deadline that is always due. (A zero
/// reconnect delay is honoured: it changes the state, so it cannot spin.)
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// The sans-IO ARI session. See the [module docs](self) for the drive loop.
///
/// `T` is data the application keeps with each subscription
/// ([`Session::subscribe_with`]) and gets back with each delivery
/// ([`Subscribers::into_data`]) and when the subscription ends: an adapter stores its
/// handler there instead of looking it up by id for every event. `()` by default
/// ([`Session::new`]).
#[derive(Debug)]
pub struct Session<T = ()> {
    /// `None` for an [accepted](Session::accepted) session.
    base_url: Option<BaseUrl>,
    /// Accepted mode: the connection comes from Asterisk (outbound WebSocket).
    accepted: bool,
    /// What the frames of an accepted session told about the peer.
    peer: accepted::PeerInfo,
    config: SessionConfig,
    state: State,
    ever_connected: bool,
    /// The first subscription id made after the latest connect.
    connect_mark: SubscriptionId,
    attempts: u32,
    rng: Rng,
    timers: TimerTable,
    router: Router<T>,
    next_request: u64,
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    transmits: VecDeque<Transmit>,
    outputs: VecDeque<Output<T>>,
    queued_droppable: usize,
    overflow: u64,
    ping_seq: u64,
    ended_scratch: Vec<(SubscriptionId, EndReason, T)>,
    /// Followed channels that left Stasis (see [`SessionConfig::stasis_end_linger`]).
    linger: linger::Linger,
    /// Channels that left Stasis while nobody followed them (or whose last subscription went
    /// away while they lingered): recorded as ended when their linger is over.
    unfollowed: linger::Linger,
    /// Bridges the application destroyed ([`Session::bridge_destroyed`]) whose
    /// `BridgeDestroyed` has not come: recorded as ended, and their subscriptions ended,
    /// when their linger is over.
    bridges: linger::Linger,
    /// Resources that recently received their final event.
    ended: ended::EndedIds,
    /// Playbacks and recordings the application queued on a channel or bridge, not seen
    /// started yet, by target ([`Session::queued_on`]).
    queued: std::collections::HashMap<ResourceKey, Vec<ResourceKey>>,
    /// Channels that left the application and bridges destroyed ([`Session::queued_on`]).
    departed: departed::Departed,
    stats: Stats,
}

impl Session {
    /// A session talking to `base_url`, not connected yet (call [`Session::start`]).
    pub fn new(base_url: BaseUrl, config: SessionConfig) -> Session {
        Session::with_subscription_data(base_url, config)
    }
}

/// A resource by kind and id.
type ResourceKey = (ResourceKind, Box<str>);

impl<T: Clone> Session<T> {
    /// A session whose subscriptions each carry data of type `T`
    /// ([`Session::subscribe_with`]), not connected yet (call [`Session::start`]).
    ///
    /// ```
    /// use ari_proto::rest::{Credentials, BaseUrl};
    /// use ari_proto::session::{Filter, Session, SessionConfig};
    /// let credentials = Credentials::new("u", "p").unwrap();
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", credentials).unwrap();
    /// let mut s = Session::<&'static str>::with_subscription_data(base_url, SessionConfig::default());
    /// let id = s.subscribe_with(Filter::channel("1700000000.1"), "the call's handler");
    /// assert_eq!(s.remove_subscription(id), Some("the call's handler"));
    /// ```
    pub fn with_subscription_data(base_url: BaseUrl, config: SessionConfig) -> Session<T> {
        Session::build(Some(base_url), false, config)
    }

    fn build(base_url: Option<BaseUrl>, accepted: bool, config: SessionConfig) -> Session<T> {
        let rng = Rng::new(config.rng_seed);
        Session {
            base_url,
            accepted,
            peer: accepted::PeerInfo::default(),
            config,
            state: State::Idle,
            ever_connected: false,
            connect_mark: SubscriptionId(0),
            attempts: 0,
            rng,
            timers: TimerTable::default(),
            router: Router::default(),
            next_request: 0,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
            queued_droppable: 0,
            overflow: 0,
            ping_seq: 0,
            ended_scratch: Vec::new(),
            linger: linger::Linger::default(),
            unfollowed: linger::Linger::default(),
            bridges: linger::Linger::default(),
            ended: ended::EndedIds::default(),
            queued: std::collections::HashMap::new(),
            departed: departed::Departed::default(),
            stats: Stats::default(),
        }
    }

    // ---- getters -------------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The base URL and credentials; `None` for an [accepted](Session::accepted) session.
    pub fn base_url(&self) -> Option<&BaseUrl> {
        self.base_url.as_ref()
    }

    /// Where the connection stands.
    pub fn state(&self) -> ConnectionState {
        match self.state {
            State::Idle => ConnectionState::Idle,
            State::Connecting => ConnectionState::Connecting,
            State::Connected { .. } => ConnectionState::Connected,
            State::Waiting => ConnectionState::WaitingToReconnect,
            State::Stopped => ConnectionState::Stopped,
            State::GaveUp => ConnectionState::GaveUp,
            State::AwaitingPeer => ConnectionState::AwaitingPeer,
        }
    }

    /// Whether the WebSocket is open (REST over WebSocket possible).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of live subscriptions.
    pub fn live_subscriptions(&self) -> usize {
        self.router.live()
    }

    /// Number of live subscriptions following a resource of this kind.
    pub fn live_subscriptions_for(&self, kind: ResourceKind) -> usize {
        self.router.live_for_kind(kind)
    }

    /// Whether some live subscription follows the resource `kind`/`id` (an endpoint: never).
    /// An adapter asks before checking whether a resource Asterisk refused to create under an
    /// id already in use is live ([`Session::not_created`]): without a subscription following
    /// it, there is nothing to end.
    ///
    /// ```
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{Filter, Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let mut s = Session::new(base_url, SessionConfig::new(["vm"]));
    /// assert!(!s.follows(ResourceKind::Recording, "vm/1"));
    /// let sub = s.subscribe(Filter::recording("vm/1"));
    /// assert!(s.follows(ResourceKind::Recording, "vm/1"));
    /// s.unsubscribe(sub);
    /// assert!(!s.follows(ResourceKind::Recording, "vm/1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn follows(&self, kind: ResourceKind, id: &str) -> bool {
        kind != ResourceKind::Endpoint && self.router.follows(kind, id)
    }

    /// Whether the subscriptions following this resource (not an endpoint) have seen it: an
    /// event naming it was routed since the first of them was made (their set is forgotten
    /// with its last subscription, and when the resource's final event ends them all). Such
    /// subscriptions follow a resource that exists, or that ended and whose final event is
    /// on its way: an adapter told by Asterisk that a request refused under that id created
    /// nothing (even on a 404 of the live check after a 409, the resource may have ended in
    /// between, its final event published before the 404 but not yet read) leaves them to
    /// that event rather than call [`Session::not_created`].
    ///
    /// ```
    /// use std::time::Instant;
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{Filter, Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let mut s = Session::new(base_url, SessionConfig::new(["vm"]));
    /// let now = Instant::now();
    /// s.start(now);
    /// let _connect = s.poll_transmit();
    /// s.handle_connected(now);
    /// let sub = s.subscribe(Filter::recording("vm-1").with_type("RecordingFinished"));
    /// assert!(!s.has_seen(ResourceKind::Recording, "vm-1"));
    /// s.handle_text_frame(now, r#"{"type":"RecordingStarted","application":"vm",
    ///     "timestamp":"2026-11-26T11:14:02.546+0000",
    ///     "recording":{"name":"vm-1","format":"wav","state":"recording","target_uri":"channel:c1"}}"#);
    /// assert!(s.has_seen(ResourceKind::Recording, "vm-1"));
    /// s.unsubscribe(sub);
    /// assert!(!s.has_seen(ResourceKind::Recording, "vm-1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn has_seen(&self, kind: ResourceKind, id: &str) -> bool {
        kind != ResourceKind::Endpoint && self.router.seen(kind, id)
    }

    /// Whether a subscription is live.
    pub fn is_subscribed(&self, id: SubscriptionId) -> bool {
        self.router.is_live(id)
    }

    /// Number of REST-over-WebSocket requests awaiting their response.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    // ---- commands ------------------------------------------------------------------------

    /// Opens the events WebSocket ([`Transmit::Connect`]) for [`SessionConfig::apps`]. On a
    /// stopped session (or one that gave up) it starts over with a fresh attempt count. While
    /// connecting, connected or waiting to reconnect, it does nothing.
    ///
    /// At least one application name is needed: Asterisk refuses a connection without one.
    ///
    /// An [accepted](Session::accepted) session never connects: `start` does nothing there.
    pub fn start(&mut self, now: Instant) {
        if self.accepted {
            return;
        }
        match self.state {
            State::Idle | State::Stopped | State::GaveUp => {
                self.attempts = 0;
                self.connect(now);
            }
            State::Connecting | State::Connected { .. } | State::Waiting | State::AwaitingPeer => {}
        }
    }

    /// Replaces the application names; they apply from the next connection (to apply them
    /// now, [`stop`](Session::stop) then [`start`](Session::start)).
    pub fn set_apps<S: AsRef<str>>(&mut self, apps: &[S]) {
        self.config.apps = apps.iter().map(|s| s.as_ref().to_string()).collect();
    }

    /// Closes the session for good: [`Transmit::Close`] if a socket is open or opening,
    /// every pending request fails with [`RequestError::Closed`], no reconnect, and
    /// [`ConnectionEvent::Closed`]. Calling it again does nothing; [`start`](Session::start)
    /// reopens.
    pub fn stop(&mut self) {
        match self.state {
            State::Stopped => return,
            State::Connected { .. } | State::Connecting => {
                self.clear_socket_transmits();
                self.transmits.push_back(Transmit::Close);
            }
            State::Idle | State::Waiting | State::GaveUp | State::AwaitingPeer => {}
        }
        self.state = State::Stopped;
        for t in TIMERS {
            self.timers.stop(t);
        }
        self.fail_pending(|| RequestError::Closed);
        self.push_control(Output::Connection(ConnectionEvent::Closed));
    }

    /// Adds a subscription; it receives the events matching `filter` from now on.
    pub fn subscribe(&mut self, filter: Filter) -> SubscriptionId
    where
        T: Default,
    {
        self.subscribe_with(filter, T::default())
    }

    /// Adds a subscription carrying `data`, handed back with each event it receives
    /// ([`Delivery::subscribers`]) and when it ends ([`Output::SubscriptionEnded`],
    /// [`Session::remove_subscription`]).
    ///
    /// A subscription to a resource that has already received its final event (one of the
    /// latest [`Limits::max_ended_ids`], see [`Session::has_ended`]) ends at once: the next
    /// output is its [`Output::SubscriptionEnded`] with [`EndReason::ResourceEnded`].
    pub fn subscribe_with(&mut self, filter: Filter, data: T) -> SubscriptionId {
        let ended = filter
            .resource_ref()
            .is_some_and(|(kind, id)| self.ended.contains(kind, id));
        if !ended && !self.unfollowed.is_empty() {
            if let Some((ResourceKind::Channel, c)) = filter.resource_ref() {
                // A handle taken while the channel lingers: its subscriptions end with it.
                if let Some(at) = self.unfollowed.take(c) {
                    self.linger.set(c, at);
                }
            }
        }
        let id = self.router.subscribe(filter, data);
        if ended {
            if let Some(data) = self.router.unsubscribe(id) {
                self.stats.subscriptions_ended += 1;
                self.push_control(Output::SubscriptionEnded {
                    id,
                    reason: EndReason::ResourceEnded,
                    data,
                });
            }
        }
        id
    }

    /// Whether this resource received its final event (`ChannelDestroyed`,
    /// `BridgeDestroyed`, `PlaybackFinished`, `RecordingFinished`, `RecordingFailed`) and has
    /// not been created again since (a channel that left Stasis counts as ended once its
    /// [linger](SessionConfig::stasis_end_linger) is over, whether or not a subscription
    /// followed it, and so does a bridge the application destroyed,
    /// [`Session::bridge_destroyed`], when no `BridgeDestroyed` came during its linger):
    /// the session remembers the latest
    /// [`Limits::max_ended_ids`] such resources. An id counts as created again when an event
    /// creating it is routed (`StasisStart`, `ChannelCreated`, `BridgeCreated`,
    /// `PlaybackStarted`, `RecordingStarted`) or after [`Session::forget_ended`].
    ///
    /// ```
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let s = Session::new(base_url, SessionConfig::new(["hello"]));
    /// assert!(!s.has_ended(ResourceKind::Channel, "1700000000.1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn has_ended(&self, kind: ResourceKind, id: &str) -> bool {
        self.ended.contains(kind, id)
    }

    /// If the live recording `name` is remembered as ended ([`Session::has_ended`]) by a
    /// `RecordingFailed`: the cause Asterisk gave (empty if it gave none). `None` if it is
    /// not remembered as ended, or ended with `RecordingFinished`.
    ///
    /// ```
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let s = Session::new(base_url, SessionConfig::new(["hello"]));
    /// assert_eq!(s.recording_failure("greeting"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recording_failure(&self, name: &str) -> Option<&str> {
        self.ended.failure(ResourceKind::Recording, name)
    }

    /// Forgets that this resource ended, before creating a new resource with the same
    /// client-side id (`originateWithId`, `createWithId`, `playWithId`, a recording name):
    /// subscriptions to it made from now on wait for its events again. A bridge the
    /// application destroyed that is still lingering ([`Session::bridge_destroyed`]) stops
    /// lingering: it is not recorded as ended and its subscriptions stay. Whether the id was
    /// remembered as ended (or, for a bridge, lingering).
    pub fn forget_ended(&mut self, kind: ResourceKind, id: &str) -> bool {
        let lingered = kind == ResourceKind::Bridge && self.bridges.take(id).is_some();
        self.ended.forget(kind, id) || lingered
    }

    /// The application's own `DELETE /bridges/{id}` succeeded (a 2xx response, over HTTP or
    /// the events WebSocket; [`RequestParts::destroyed_bridge`] recognizes the request): the
    /// bridge is gone. The adapter calls this when the response arrives.
    ///
    /// Asterisk sends `BridgeDestroyed` only to the applications subscribed to the bridge
    /// (`applications/{app}/subscription` with `bridge:{id}`, or `subscribeAll`): an
    /// application that followed the bridge only through its channels gets the
    /// `ChannelLeftBridge` of each channel and nothing more, so without this the bridge's
    /// subscriptions would live for ever. The bridge lingers for
    /// [`SessionConfig::stasis_end_linger`]: a `BridgeDestroyed` arriving meanwhile (it
    /// travels on the events connection, the response possibly on another) is delivered and
    /// ends the subscriptions as usual; otherwise, when the linger is over (each event of the
    /// bridge restarting it), the bridge is recorded as ended ([`Session::has_ended`]) and
    /// each of its subscriptions ends ([`Output::SubscriptionEnded`] with
    /// [`EndReason::ResourceEnded`]), on the session's timers
    /// ([`poll_timeout`](Session::poll_timeout)). No event is made up.
    ///
    /// Nothing changes for a bridge already recorded as ended or already lingering, nor
    /// when the linger is off (`None`: its subscriptions last until `BridgeDestroyed` or
    /// removal). A `BridgeCreated` of the id, or [`Session::forget_ended`], stops the linger;
    /// an adapter calls the latter when the application creates a bridge with the same id
    /// again ([`RequestParts::created_bridge`]), as Asterisk sends `BridgeCreated` only to
    /// applications subscribed to every bridge.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{EndReason, Filter, Output, Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let config = SessionConfig::new(["hello"]).stasis_end_linger(Some(Duration::from_secs(2)));
    /// let mut s = Session::new(base_url, config);
    /// let now = Instant::now();
    /// let sub = s.subscribe(Filter::bridge("conference").with_type("BridgeDestroyed").once());
    /// // `DELETE /bridges/conference` answered 204:
    /// s.bridge_destroyed(now, "conference");
    /// assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(2)));
    /// // No `BridgeDestroyed` came (the application was not subscribed to the bridge).
    /// s.handle_timeout(now + Duration::from_secs(2));
    /// assert!(matches!(
    ///     s.poll_output(),
    ///     Some(Output::SubscriptionEnded { id, reason: EndReason::ResourceEnded, .. }) if id == sub
    /// ));
    /// assert!(s.has_ended(ResourceKind::Bridge, "conference"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bridge_destroyed(&mut self, now: Instant, id: &str) {
        if self.bridges.contains(id) || self.ended.contains(ResourceKind::Bridge, id) {
            return;
        }
        if let Some(at) = self
            .config
            .stasis_end_linger
            .and_then(|after| deadline(now, after))
        {
            self.bridges.set(id, at);
        }
    }

    /// Asterisk refused a request that would have created the resource `kind`/`id` under an
    /// id the application chose ([`RequestParts::created_resources`](crate::rest::RequestParts::created_resources)),
    /// and it does not exist (an error other than 409; for a channel or bridge, 409 says the id
    /// belongs to a live one; for a playback or recording, whether one is live under that id
    /// is to be checked): nothing will ever come for the subscriptions made for it
    /// beforehand (listeners attached before `originateWithId` on either half of a Local
    /// channel, a bridge's creation, `playWithId` or `record`). Each ends
    /// now ([`Output::SubscriptionEnded`] with [`EndReason::NotCreated`], counted in
    /// [`Stats::subscriptions_ended`]). The id is not recorded as ended: a new attempt under
    /// it is followed as usual. Returns how many ended.
    ///
    /// ```
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{EndReason, Filter, Output, Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let mut s = Session::new(base_url, SessionConfig::new(["queue"]));
    /// let started = s.subscribe(Filter::channel("agent-7").with_type("StasisStart").once());
    /// // `POST /channels/agent-7?endpoint=Bogus/7` answered 400:
    /// assert_eq!(s.not_created(ResourceKind::Channel, "agent-7"), 1);
    /// assert!(matches!(
    ///     s.poll_output(),
    ///     Some(Output::SubscriptionEnded { id, reason: EndReason::NotCreated, .. }) if id == started
    /// ));
    /// assert!(!s.has_ended(ResourceKind::Channel, "agent-7"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn not_created(&mut self, kind: ResourceKind, id: &str) -> usize {
        let ended = self.router.unsubscribe_resource(kind, id);
        self.end_not_created(kind, id, ended)
    }

    /// [`Session::not_created`] for the subscriptions made before `before` only (a mark
    /// taken with [`Session::next_subscription_id`]): an adapter that decides later that a
    /// refused id created nothing leaves the waits made meanwhile (a new attempt's) alone.
    ///
    /// ```
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{Filter, Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let mut s = Session::new(base_url, SessionConfig::new(["vm"]));
    /// let old = s.subscribe(Filter::recording("vm-1"));
    /// let mark = s.next_subscription_id();
    /// let new = s.subscribe(Filter::recording("vm-1"));
    /// assert_eq!(s.not_created_before(ResourceKind::Recording, "vm-1", mark), 1);
    /// assert!(!s.is_subscribed(old));
    /// assert!(s.is_subscribed(new));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn not_created_before(
        &mut self,
        kind: ResourceKind,
        id: &str,
        before: SubscriptionId,
    ) -> usize {
        let ended = self.router.unsubscribe_resource_before(kind, id, before);
        let still_followed = self.router.follows(kind, id);
        if still_followed {
            // Only the older waits end: the channel is still followed.
            let n = ended.len();
            self.push_not_created(ended);
            return n;
        }
        self.end_not_created(kind, id, ended)
    }

    /// The application queued the playback or recording `kind`/`id` on the channel or bridge
    /// `target` (`play` with an id, `record`: [`RequestParts::queued_on`](crate::rest::RequestParts::queued_on)),
    /// and Asterisk accepted it. A channel runs its commands in order, so it may wait behind
    /// others; if the channel leaves the application (`StasisEnd`, `ChannelDestroyed`), or
    /// the bridge is destroyed, before it started (its `PlaybackStarted`/`RecordingStarted`,
    /// or its end, was routed), Asterisk drops it without an event: its subscriptions end
    /// then ([`Output::SubscriptionEnded`] with [`EndReason::NeverStarted`]). When the
    /// channel had already left (or the bridge gone) by the time this is called (Asterisk's
    /// answer came after the events socket told of the hangup), they end now, unless the
    /// resource's own events came (its command ran before the channel left). At most
    /// [`Limits::max_ended_ids`] targets are tracked at once (a resource queued beyond that is
    /// not, counted in [`Stats::queued_untracked`]), and as many departures remembered.
    ///
    /// ```
    /// use std::time::Instant;
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{EndReason, Filter, Output, Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let mut s = Session::new(base_url, SessionConfig::new(["vm"]));
    /// let now = Instant::now();
    /// s.start(now);
    /// let _connect = s.poll_transmit();
    /// s.handle_connected(now);
    /// let rec = s.subscribe(Filter::recording("msg-1"));
    /// // `POST channels/c1/record?name=msg-1` answered 201 while a prompt plays:
    /// s.queued_on(ResourceKind::Recording, "msg-1", ResourceKind::Channel, "c1");
    /// // The caller hangs up during the prompt.
    /// s.handle_text_frame(now, r#"{"type":"StasisEnd","application":"vm",
    ///     "timestamp":"2026-11-26T11:14:02.546+0000",
    ///     "channel":{"id":"c1","name":"PJSIP/alice-1","state":"Up","protocol_id":"",
    ///     "caller":{"name":"","number":""},"connected":{"name":"","number":""},
    ///     "accountcode":"","dialplan":{"context":"default","exten":"s","priority":1,
    ///     "app_name":"","app_data":""},"creationtime":"2026-11-26T11:14:00.000+0000",
    ///     "language":"en"}}"#);
    /// let mut ended = None;
    /// while let Some(out) = s.poll_output() {
    ///     if let Output::SubscriptionEnded { id, reason, .. } = out {
    ///         ended = Some((id, reason));
    ///     }
    /// }
    /// assert_eq!(ended, Some((rec, EndReason::NeverStarted)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queued_on(
        &mut self,
        kind: ResourceKind,
        id: &str,
        target_kind: ResourceKind,
        target: &str,
    ) {
        // Its own events came already (it started, or ended): nothing to track.
        let seen = self.router.seen(kind, id) || self.ended.contains(kind, id);
        if self.departed.contains(target_kind, target) {
            // Asterisk's answer was handled after the channel left (or the bridge went): the
            // command was dropped with the channel's queue, unless it ran before (its events
            // came).
            if !seen {
                for (sub, data) in self.router.unsubscribe_resource(kind, id) {
                    self.stats.subscriptions_ended += 1;
                    self.push_control(Output::SubscriptionEnded {
                        id: sub,
                        reason: EndReason::NeverStarted,
                        data,
                    });
                }
            }
            return;
        }
        if seen {
            return;
        }
        let key = (target_kind, Box::<str>::from(target));
        if !self.queued.contains_key(&key) && self.queued.len() >= self.config.limits.max_ended_ids
        {
            self.stats.queued_untracked += 1;
            return;
        }
        let list = self.queued.entry(key).or_default();
        if !list.iter().any(|(k, i)| *k == kind && **i == *id) {
            list.push((kind, id.into()));
        }
    }

    /// After routing `event`: a queued playback or recording that started or ended is no
    /// longer tracked; the ones still queued on a channel that left the application, or on
    /// a destroyed bridge, never will start: their subscriptions end.
    fn track_queued(&mut self, event: &Event, ended: &mut Vec<(SubscriptionId, EndReason, T)>) {
        let (kind, id, target) = match event {
            Event::StasisEnd(e) => {
                return self.drop_queued_on(ResourceKind::Channel, e.channel.id.as_str(), ended)
            }
            Event::ChannelDestroyed(e) => {
                return self.drop_queued_on(ResourceKind::Channel, e.channel.id.as_str(), ended)
            }
            Event::BridgeDestroyed(e) => {
                return self.drop_queued_on(ResourceKind::Bridge, e.bridge.id.as_str(), ended)
            }
            Event::PlaybackStarted(e) => (
                ResourceKind::Playback,
                &e.playback.id,
                &e.playback.target_uri,
            ),
            Event::PlaybackFinished(e) => (
                ResourceKind::Playback,
                &e.playback.id,
                &e.playback.target_uri,
            ),
            Event::RecordingStarted(e) => (
                ResourceKind::Recording,
                &e.recording.name,
                &e.recording.target_uri,
            ),
            Event::RecordingFinished(e) => (
                ResourceKind::Recording,
                &e.recording.name,
                &e.recording.target_uri,
            ),
            Event::RecordingFailed(e) => (
                ResourceKind::Recording,
                &e.recording.name,
                &e.recording.target_uri,
            ),
            _ => return,
        };
        let target = match target.split_once(':') {
            Some(("channel", t)) => (ResourceKind::Channel, t),
            Some(("bridge", t)) => (ResourceKind::Bridge, t),
            _ => return,
        };
        let key = (target.0, Box::<str>::from(target.1));
        if let Some(list) = self.queued.get_mut(&key) {
            list.retain(|(k, i)| !(*k == kind && **i == **id));
            if list.is_empty() {
                self.queued.remove(&key);
            }
        }
    }

    fn drop_queued_on(
        &mut self,
        target_kind: ResourceKind,
        target: &str,
        ended: &mut Vec<(SubscriptionId, EndReason, T)>,
    ) {
        let Some(list) = self.queued.remove(&(target_kind, Box::<str>::from(target))) else {
            return;
        };
        for (kind, id) in list {
            for (sub, data) in self.router.unsubscribe_resource(kind, &id) {
                ended.push((sub, EndReason::NeverStarted, data));
            }
        }
    }

    /// The id the next subscription will get: every subscription made so far has a smaller
    /// one ([`Session::not_created_before`]).
    pub fn next_subscription_id(&self) -> SubscriptionId {
        self.router.next_id()
    }

    fn end_not_created(
        &mut self,
        kind: ResourceKind,
        id: &str,
        ended: Vec<(SubscriptionId, T)>,
    ) -> usize {
        let n = ended.len();
        if kind == ResourceKind::Channel {
            // A lingering channel no longer followed: its deadline stays, as after the removal
            // of its last subscription (later events of it do not restart it).
            self.stop_following(id);
        }
        self.push_not_created(ended);
        n
    }

    fn push_not_created(&mut self, ended: Vec<(SubscriptionId, T)>) {
        for (id, data) in ended {
            self.stats.subscriptions_ended += 1;
            self.push_control(Output::SubscriptionEnded {
                id,
                reason: EndReason::NotCreated,
                data,
            });
        }
    }

    /// The resources `resources` are gone without an event saying so, for `reason`: for
    /// example every resource an application instance knows on one node of a cluster whose
    /// Asterisk restarted (the other nodes' resources are untouched, unlike
    /// [`Session::handle_asterisk_restarted`], which ends every resource of the previous run).
    /// Each subscription following one of them ends now ([`Output::SubscriptionEnded`] with
    /// `reason`, counted in [`Stats::subscriptions_ended`]), in subscription order per
    /// resource. Unless `reason` is [`EndReason::NotCreated`] (see [`Session::not_created`]),
    /// each resource is recorded as ended (a later subscription to it ends at once, as after
    /// its final event) and a channel or bridge lingering after its end stops lingering.
    /// Returns how many subscriptions ended. Endpoints and device states are ended as given
    /// (a caller that knows they outlive the cause leaves them out).
    ///
    /// ```
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{EndReason, Filter, Output, Session, SessionConfig};
    /// let base_url = BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p")?)?;
    /// let mut s = Session::new(base_url, SessionConfig::new(["ivr"]));
    /// let on_a = s.subscribe(Filter::channel("node-a.1"));
    /// let on_b = s.subscribe(Filter::channel("node-b.1"));
    /// // Node A's Asterisk restarted: its call is gone.
    /// let gone = [(ResourceKind::Channel, "node-a.1")];
    /// assert_eq!(s.end_resources(gone, EndReason::ResourceEnded), 1);
    /// assert!(matches!(
    ///     s.poll_output(),
    ///     Some(Output::SubscriptionEnded { id, reason: EndReason::ResourceEnded, .. }) if id == on_a
    /// ));
    /// assert!(s.is_subscribed(on_b));
    /// assert!(s.has_ended(ResourceKind::Channel, "node-a.1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn end_resources<I, S>(&mut self, resources: I, reason: EndReason) -> usize
    where
        I: IntoIterator<Item = (ResourceKind, S)>,
        S: AsRef<str>,
    {
        let cap = self.config.limits.max_ended_ids;
        let mut n = 0;
        for (kind, id) in resources {
            let id = id.as_ref();
            let record = reason != EndReason::NotCreated;
            if record {
                self.ended.record(kind, id, cap);
                match kind {
                    ResourceKind::Channel => {
                        // Gone now: no linger left to wait for.
                        self.linger.remove(id);
                        self.unfollowed.remove(id);
                    }
                    ResourceKind::Bridge => self.bridges.remove(id),
                    _ => {}
                }
            } else if kind == ResourceKind::Channel {
                self.stop_following(id);
            }
            for (sub, data) in self.router.unsubscribe_resource(kind, id) {
                n += 1;
                self.stats.subscriptions_ended += 1;
                self.push_control(Output::SubscriptionEnded {
                    id: sub,
                    reason,
                    data,
                });
            }
        }
        n
    }

    /// Removes a subscription; false if it was not live (already ended or removed).
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> bool {
        self.remove_subscription(id).is_some()
    }

    /// Removes a subscription and gives its data back; `None` if it was not live.
    pub fn remove_subscription(&mut self, id: SubscriptionId) -> Option<T> {
        let channel = if self.linger.is_empty() {
            None
        } else {
            self.router
                .channel_of(id)
                .map(|c| Box::<str>::from(c.to_owned()))
        };
        let data = self.router.unsubscribe(id);
        if let Some(c) = channel {
            if !self.router.follows(ResourceKind::Channel, &c) {
                // Its last subscription is gone: nothing left to end, but it is still
                // recorded as ended when its linger is over.
                self.stop_following(&c);
            }
        }
        data
    }

    /// Removes every subscription, giving back their data in subscription order.
    pub fn remove_all_subscriptions(&mut self) -> Vec<(SubscriptionId, T)> {
        for (c, at) in self.linger.drain() {
            self.unfollowed.set(&c, at);
        }
        self.router.unsubscribe_all()
    }

    /// Channels that left Stasis and are not recorded as ended yet: their
    /// [`SessionConfig::stasis_end_linger`] is not over (for a followed channel, unless another
    /// event of it comes; its subscriptions end with the linger).
    pub fn lingering_channels(&self) -> usize {
        self.linger.len() + self.unfollowed.len()
    }

    /// A fresh client-side id (UUID-v4 text from the session's PRNG) for a resource created
    /// with an id (`originateWithId`, `bridges.createWithId`, `playWithId`, `snoopWithId`,
    /// a recording name…). Subscribe with it before creating the resource so the very first
    /// event (e.g. `StasisStart`) is routed.
    pub fn new_resource_id(&mut self) -> String {
        self.rng.uuid_v4()
    }

    /// Sends a typed operation as a `RESTRequest` frame over the events WebSocket. Its
    /// outcome arrives as [`Output::Response`] with the returned id: the response, or
    /// [`RequestError::Timeout`] after [`SessionConfig::request_timeout`], or
    /// [`RequestError::Disconnected`] at once if the socket closes first.
    pub fn send_request<O: Operation>(
        &mut self,
        now: Instant,
        op: &O,
    ) -> Result<RequestId, SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let parts = rest::request_parts(op)?;
        self.send_request_parts(now, &parts)
    }

    /// [`send_request`](Session::send_request) for already split parts (untyped requests).
    pub fn send_request_parts(
        &mut self,
        now: Instant,
        parts: &RequestParts,
    ) -> Result<RequestId, SendError> {
        if !self.is_connected() {
            return Err(SendError::NotConnected);
        }
        let limit = self.config.limits.max_pending_requests;
        if self.pending.len() >= limit {
            return Err(SendError::TooManyPending { limit });
        }
        self.next_request += 1;
        let n = self.next_request;
        let id = RequestId(n);
        let query_strings = parts
            .query
            .iter()
            .map(|(name, value)| QueryString { name, value })
            .collect();
        let frame = RestRequestFrame {
            ty: "RESTRequest",
            request_id: id.to_string(),
            method: parts.method.as_str(),
            uri: &parts.path,
            query_strings,
            content_type: parts.body.as_ref().map(|_| "application/json"),
            message_body: parts.body.as_deref(),
        };
        let text = serde_json::to_string(&frame).map_err(|e| {
            SendError::Build(BuildError::Http(format!("encoding RESTRequest: {e}")))
        })?;
        let dl = deadline(now, self.config.request_timeout.max(MIN_PERIOD));
        if let Some(d) = dl {
            self.deadlines.insert((d, n));
        }
        self.pending.insert(n, Pending { deadline: dl });
        self.transmits.push_back(Transmit::Text(text));
        self.stats.requests_sent += 1;
        Ok(id)
    }

    // ---- inputs --------------------------------------------------------------------------

    /// The WebSocket opened (answer to [`Transmit::Connect`]).
    pub fn handle_connected(&mut self, now: Instant) {
        if self.accepted || !matches!(self.state, State::Connecting) {
            self.stats.stale_inputs += 1;
            return;
        }
        self.open(now);
    }

    /// The socket is open: start the keepalive and tell the application.
    fn open(&mut self, now: Instant) {
        self.state = State::Connected { since: now };
        let reconnected = self.ever_connected;
        self.ever_connected = true;
        self.connect_mark = self.router.next_id();
        self.peer.unregistered.clear();
        self.stats.connects += 1;
        self.timers.stop(Timer::Pong);
        self.timers.stop(Timer::PeerGone);
        self.timers.set(
            Timer::Ping,
            self.config
                .keepalive
                .and_then(|k| deadline(now, k.interval.max(MIN_PERIOD))),
        );
        self.push_control(Output::Connection(ConnectionEvent::Connected {
            reconnected,
        }));
    }

    /// Asterisk restarted while the events WebSocket was down: the adapter learnt it after a
    /// reconnect (for example `status.startup_time` of `GET /asterisk/info` changed). Every
    /// channel, bridge, playback and live recording of the previous run is gone and no event
    /// will say so, so each subscription made before the latest connect that follows one of
    /// them ends ([`Output::SubscriptionEnded`] with [`EndReason::ResourceEnded`], counted in
    /// [`Stats::subscriptions_ended`]). Endpoints and device states outlive a restart: their
    /// subscriptions stay, as do subscriptions made since the connect (new calls). Returns how
    /// many ended.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::rest::{BaseUrl, Credentials};
    /// use ari_proto::session::{EndReason, Filter, Output, Session, SessionConfig, Transmit};
    ///
    /// let base_url = BaseUrl::new("http://pbx:8088", Credentials::new("asterisk", "secret")?)?;
    /// let mut now = Instant::now();
    /// let mut s = Session::new(base_url, SessionConfig::new(["ivr"]).rng_seed(7));
    /// s.start(now);
    /// assert!(matches!(s.poll_transmit(), Some(Transmit::Connect(_))));
    /// s.handle_connected(now);
    /// let old_call = s.subscribe(Filter::channel("1700000000.1"));
    /// let trunk = s.subscribe(Filter::resource(ResourceKind::Endpoint, "PJSIP/trunk"));
    /// // The socket drops (Asterisk restarts); the session reconnects.
    /// s.handle_disconnected(now, "connection reset");
    /// now += Duration::from_secs(60);
    /// s.handle_timeout(now);
    /// assert!(matches!(s.poll_transmit(), Some(Transmit::Connect(_))));
    /// s.handle_connected(now);
    /// let new_call = s.subscribe(Filter::channel("1700000100.1"));
    /// while s.poll_output().is_some() {}
    /// // The adapter saw a new `startup_time`:
    /// assert_eq!(s.handle_asterisk_restarted(), 1);
    /// assert!(matches!(
    ///     s.poll_output(),
    ///     Some(Output::SubscriptionEnded { id, reason: EndReason::ResourceEnded, .. }) if id == old_call
    /// ));
    /// assert!(s.is_subscribed(trunk) && s.is_subscribed(new_call));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_asterisk_restarted(&mut self) -> usize {
        // The calls of the previous run are gone (those that entered on this connection stay).
        let connection = self.stats.connects;
        self.peer.in_stasis.retain(|_, c| *c >= connection);
        self.end_resource_subscriptions_before(self.connect_mark, EndReason::ResourceEnded)
    }

    /// Ends the subscriptions to a channel, bridge, playback or recording made before the
    /// subscription id `mark` (every one: the router's next id), all with `reason`; returns
    /// how many ended.
    fn end_resource_subscriptions_before(
        &mut self,
        mark: SubscriptionId,
        reason: EndReason,
    ) -> usize {
        const GONE: [ResourceKind; 4] = [
            ResourceKind::Channel,
            ResourceKind::Bridge,
            ResourceKind::Playback,
            ResourceKind::Recording,
        ];
        let ended = self.router.unsubscribe_kinds_before(&GONE, mark);
        let n = ended.len();
        for (id, filter, data) in ended {
            if let Some((ResourceKind::Channel, c)) = filter.resource_ref() {
                if !self.router.follows(ResourceKind::Channel, c) {
                    self.stop_following(c);
                }
            }
            self.stats.subscriptions_ended += 1;
            self.push_control(Output::SubscriptionEnded { id, reason, data });
        }
        n
    }

    /// Accepted mode: Asterisk did not come back within [`SessionConfig::peer_timeout`].
    fn peer_gone(&mut self) {
        self.peer.in_stasis.clear();
        let n = self.end_resource_subscriptions_before(self.router.next_id(), EndReason::PeerGone);
        self.stats.peers_gone += 1;
        let waited = self.config.peer_timeout.unwrap_or_default();
        self.push_control(Output::Connection(ConnectionEvent::PeerGone {
            waited,
            ended: n,
        }));
    }

    /// Opening the WebSocket failed (refused, TLS, 401, …): a reconnect is scheduled per the
    /// policy.
    pub fn handle_connect_failed(&mut self, now: Instant, reason: &str) {
        if !matches!(self.state, State::Connecting) {
            self.stats.stale_inputs += 1;
            return;
        }
        self.connection_lost(now, reason);
    }

    /// One text frame from the WebSocket. Decoded once, then a response to a pending request
    /// or an event routed to its subscriptions. Frames are only accepted while connected
    /// (others count as [`Stats::stale_inputs`]). Asterisk sends no binary frames; an adapter
    /// ignores them, and answers pings itself (most WebSocket libraries do).
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        self.handle_input(now, frame, None);
    }

    /// As [`handle_frame`](Session::handle_frame), for a text frame whose UTF-8 the WebSocket
    /// library already checked (as every library does for text frames): it is not checked
    /// again.
    pub fn handle_text_frame(&mut self, now: Instant, text: &str) {
        self.handle_input(now, text.as_bytes(), Some(text));
    }

    /// A frame, with its text when its UTF-8 is known to be valid.
    fn handle_input(&mut self, now: Instant, frame: &[u8], text: Option<&str>) {
        self.stats.frames += 1;
        self.stats.frame_bytes += frame.len() as u64;
        if !self.is_connected() {
            self.stats.stale_inputs += 1;
            return;
        }
        let max = self.config.limits.max_frame_bytes;
        if frame.len() > max {
            self.stats.oversized_frames += 1;
            self.push_droppable(Output::Warning(Warning::FrameTooLarge {
                len: frame.len(),
                max,
            }));
            return;
        }
        let max_depth = self.config.limits.max_json_depth;
        let decoded = if crate::events::json_depth_exceeds(frame, max_depth) {
            Err(DecodeError::TooDeep { max: max_depth })
        } else {
            match text {
                Some(text) => Event::decode_str(text),
                None => Event::decode(frame),
            }
        };
        let event = match decoded {
            Ok(e) => e,
            Err(e @ DecodeError::Schema { .. }) => {
                self.stats.schema_errors += 1;
                let (type_name, error) = match &e {
                    DecodeError::Schema {
                        type_name, error, ..
                    } => (type_name.clone(), error.clone()),
                    other => (String::new(), other.to_string()),
                };
                self.push_droppable(Output::Warning(Warning::SchemaMismatch {
                    type_name,
                    error,
                }));
                match e.into_unknown() {
                    Some(u) => Event::Unknown(u),
                    None => return,
                }
            }
            Err(e) => {
                self.stats.decode_errors += 1;
                let error = match e {
                    DecodeError::Malformed { error } => error,
                    other => other.to_string(),
                };
                self.push_droppable(Output::Warning(Warning::Malformed { error }));
                return;
            }
        };
        let event = match event {
            Event::RESTResponse(r) => {
                let pending = RequestId::parse_wire(&r.request_id)
                    .filter(|id| self.pending.contains_key(&id.0));
                match pending {
                    Some(id) => {
                        self.complete(id, r);
                        return;
                    }
                    None => {
                        self.stats.unmatched_responses += 1;
                        Event::RESTResponse(r)
                    }
                }
            }
            other => other,
        };
        self.deliver(now, event);
    }

    /// A pong arrived: the connection is alive.
    pub fn handle_pong(&mut self) {
        if self.is_connected() {
            self.timers.stop(Timer::Pong);
        } else {
            self.stats.stale_inputs += 1;
        }
    }

    /// The peer closed the WebSocket with a close frame (`code`: its status code, `None` if
    /// the frame had none). The same as [`handle_disconnected`](Session::handle_disconnected),
    /// except for an [accepted](Session::accepted) session whose applications were all
    /// unregistered on this connection (`ApplicationUnregistered`, none registered again)
    /// and closed with 1000: Asterisk removed the configuration and will not dial again, so
    /// the calls' subscriptions end at once
    /// ([`ConnectionEvent::ApplicationsUnregistered`]).
    ///
    /// ```
    /// use std::time::Instant;
    /// use ari_proto::session::{ConnectionEvent, EndReason, Filter, Output, Session, SessionConfig};
    /// let now = Instant::now();
    /// let mut s = Session::accepted(SessionConfig::default());
    /// s.handle_accepted(now);
    /// s.handle_frame(now, br#"{"type":"ApplicationRegistered","application":"obapp",
    ///     "timestamp":"2026-12-05T22:32:45.355+0000"}"#);
    /// let call = s.subscribe(Filter::channel("1700000000.1"));
    /// s.handle_frame(now, br#"{"type":"ApplicationUnregistered","application":"obapp",
    ///     "timestamp":"2026-12-05T22:33:52.511+0000"}"#);
    /// s.handle_closed(now, Some(1000), "closed by Asterisk (1000)");
    /// let out: Vec<_> = std::iter::from_fn(|| s.poll_output()).collect();
    /// assert!(out.iter().any(|o| matches!(o,
    ///     Output::SubscriptionEnded { id, reason: EndReason::ApplicationUnregistered, .. } if *id == call)));
    /// assert!(out.iter().any(|o| matches!(o,
    ///     Output::Connection(ConnectionEvent::ApplicationsUnregistered { ended: 1, .. }))));
    /// assert_eq!(s.stats().applications_unregistered, 1);
    /// ```
    pub fn handle_closed(&mut self, now: Instant, code: Option<u16>, reason: &str) {
        let unregistered = self.accepted
            && code == Some(1000)
            && self.is_connected()
            && self.peer.applications.is_empty()
            && !self.peer.unregistered.is_empty();
        self.handle_disconnected(now, reason);
        if unregistered {
            self.peer.in_stasis.clear();
            let applications = std::mem::take(&mut self.peer.unregistered);
            let ended = self.end_resource_subscriptions_before(
                self.router.next_id(),
                EndReason::ApplicationUnregistered,
            );
            self.stats.applications_unregistered += 1;
            self.push_control(Output::Connection(
                ConnectionEvent::ApplicationsUnregistered {
                    applications,
                    ended,
                },
            ));
        }
    }

    /// The WebSocket closed or failed (not after [`Transmit::Close`]): pending requests fail
    /// with [`RequestError::Disconnected`] and a reconnect is scheduled per the policy.
    pub fn handle_disconnected(&mut self, now: Instant, reason: &str) {
        match self.state {
            State::Connected { since } => {
                if now.saturating_duration_since(since) >= self.config.reconnect.stable_after {
                    self.attempts = 0;
                }
                self.connection_lost(now, reason);
            }
            State::Connecting => self.connection_lost(now, reason),
            _ => self.stats.stale_inputs += 1,
        }
    }

    /// The deadline of [`poll_timeout`](Session::poll_timeout) passed. Anything not due yet
    /// is left alone, so an early or repeated call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.expired(Timer::Reconnect, now) && matches!(self.state, State::Waiting) {
            self.connect(now);
        }
        if self.timers.expired(Timer::Pong, now) && self.is_connected() {
            self.stats.keepalive_timeouts += 1;
            self.clear_socket_transmits();
            self.transmits.push_back(Transmit::Close);
            let reason = match self.config.keepalive {
                Some(k) => format!("keepalive: no pong within {:?}", k.timeout),
                None => "keepalive: no pong".to_string(),
            };
            self.connection_lost(now, &reason);
        }
        if self.timers.expired(Timer::Ping, now) && self.is_connected() {
            if let Some(k) = self.config.keepalive {
                self.ping_seq += 1;
                self.stats.pings += 1;
                self.transmits
                    .push_back(Transmit::Ping(self.ping_seq.to_be_bytes().to_vec()));
                if self.timers.get(Timer::Pong).is_none() {
                    self.timers
                        .set(Timer::Pong, deadline(now, k.timeout.max(MIN_PERIOD)));
                }
                self.timers
                    .set(Timer::Ping, deadline(now, k.interval.max(MIN_PERIOD)));
            }
        }
        if self.timers.expired(Timer::PeerGone, now) && matches!(self.state, State::AwaitingPeer) {
            self.peer_gone();
        }
        self.expire_linger(now);
        while let Some(&(at, n)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if self.pending.remove(&n).is_some() {
                self.stats.request_timeouts += 1;
                self.push_control(Output::Response {
                    id: RequestId(n),
                    result: Err(RequestError::Timeout),
                });
            }
        }
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next thing to do on the network.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`handle_timeout`](Session::handle_timeout) is next due (reconnect, ping, pong
    /// deadline, request deadlines, the end of a channel's
    /// [linger](SessionConfig::stasis_end_linger) or of a destroyed bridge's
    /// ([`Session::bridge_destroyed`])), if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.next(),
            self.deadlines.first().map(|&(at, _)| at),
            self.linger.next(),
            self.unfollowed.next(),
            self.bridges.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing to tell the application.
    pub fn poll_output(&mut self) -> Option<Output<T>> {
        if self.overflow > 0 {
            let dropped = std::mem::take(&mut self.overflow);
            return Some(Output::Overflow { dropped });
        }
        let out = self.outputs.pop_front()?;
        if is_droppable(&out) {
            self.queued_droppable -= 1;
        }
        Some(out)
    }

    // ---- internals -----------------------------------------------------------------------

    fn connect(&mut self, now: Instant) {
        match self.connect_request() {
            Ok(req) => {
                self.state = State::Connecting;
                self.transmits.push_back(Transmit::Connect(req));
            }
            Err(e) => {
                self.state = State::Connecting;
                self.connection_lost(now, &format!("cannot build the WebSocket request: {e}"));
            }
        }
    }

    /// The WebSocket upgrade request.
    fn connect_request(&mut self) -> Result<http::Request<()>, BuildError> {
        check_apps(&self.config.apps)?;
        let ep = self.base_url.as_ref().ok_or(BuildError::InvalidParameter {
            name: "base_url",
            reason: "an accepted session has no base URL to connect to",
        })?;
        let scheme = if ep.is_tls() { "wss" } else { "ws" };
        let mut uri = format!("{scheme}://{}{}/events?app=", ep.authority(), ep.prefix());
        for (i, app) in self.config.apps.iter().enumerate() {
            if i > 0 {
                uri.push(',');
            }
            uri.extend(utf8_percent_encode(app, ENCODE));
        }
        if self.config.subscribe_all {
            uri.push_str("&subscribeAll=true");
        }
        if self.config.auth == WsAuth::ApiKey {
            uri.push_str("&api_key=");
            uri.push_str(&ep.credentials().api_key_query_value());
        }
        let mut key = [0u8; 16];
        self.rng.fill(&mut key);
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let mut b = http::Request::builder()
            .method(http::Method::GET)
            .uri(uri)
            .header(
                HOST,
                HeaderValue::from_str(ep.authority().as_str())
                    .map_err(|_| BuildError::InvalidBaseUrl(ep.authority().to_string()))?,
            )
            .header(CONNECTION, HeaderValue::from_static("Upgrade"))
            .header(UPGRADE, HeaderValue::from_static("websocket"))
            .header("sec-websocket-version", HeaderValue::from_static("13"))
            .header(
                "sec-websocket-key",
                HeaderValue::from_str(&key).map_err(|e| BuildError::Http(e.to_string()))?,
            );
        if self.config.auth == WsAuth::Basic {
            b = b.header(AUTHORIZATION, ep.credentials().basic_header());
        }
        if self.config.offer_subprotocol {
            b = b.header("sec-websocket-protocol", HeaderValue::from_static("ari"));
        }
        b.body(()).map_err(|e| BuildError::Http(e.to_string()))
    }

    /// The socket is gone (or never came): fail pending requests, then back off or give up.
    fn connection_lost(&mut self, now: Instant, reason: &str) {
        self.timers.stop(Timer::Ping);
        self.timers.stop(Timer::Pong);
        self.timers.stop(Timer::Reconnect);
        self.clear_socket_transmits();
        self.fail_pending(|| RequestError::Disconnected {
            reason: reason.to_string(),
        });
        if self.accepted {
            self.state = State::AwaitingPeer;
            let give_up = self.config.peer_timeout.and_then(|d| deadline(now, d));
            self.timers.set(Timer::PeerGone, give_up);
            self.push_control(Output::Connection(ConnectionEvent::Disconnected {
                reason: reason.to_string(),
            }));
            return;
        }
        let policy = &self.config.reconnect;
        if policy.max_attempts.is_some_and(|max| self.attempts >= max) {
            self.state = State::GaveUp;
            let attempts = self.attempts;
            self.push_control(Output::Connection(ConnectionEvent::MaxRetries {
                attempts,
                reason: reason.to_string(),
            }));
            return;
        }
        self.attempts = self.attempts.saturating_add(1);
        let delay = policy.delay(self.attempts, self.rng.next_unit());
        self.stats.reconnects += 1;
        self.state = State::Waiting;
        self.timers.set(Timer::Reconnect, deadline(now, delay));
        let attempt = self.attempts;
        self.push_control(Output::Connection(ConnectionEvent::Reconnecting {
            attempt,
            delay,
            reason: reason.to_string(),
        }));
    }

    /// Frames and pings queued for a socket that is going away are pointless.
    fn clear_socket_transmits(&mut self) {
        self.transmits
            .retain(|t| !matches!(t, Transmit::Text(_) | Transmit::Ping(_)));
    }

    fn fail_pending(&mut self, err: impl Fn() -> RequestError) {
        if self.pending.is_empty() {
            return;
        }
        let mut ids: Vec<u64> = self.pending.drain().map(|(n, _)| n).collect();
        ids.sort_unstable();
        self.deadlines.clear();
        for n in ids {
            self.stats.requests_failed += 1;
            self.push_control(Output::Response {
                id: RequestId(n),
                result: Err(err()),
            });
        }
    }

    fn complete(&mut self, id: RequestId, r: crate::events::RESTResponse) {
        if let Some(p) = self.pending.remove(&id.0) {
            if let Some(d) = p.deadline {
                self.deadlines.remove(&(d, id.0));
            }
        }
        self.stats.responses += 1;
        let status = u16::try_from(r.status_code).unwrap_or(0);
        let body = r
            .message_body
            .map(|b| Bytes::from(b.into_string().into_bytes()))
            .unwrap_or_default();
        self.push_control(Output::Response {
            id,
            result: Ok(RawResponse {
                status,
                reason_phrase: r.reason_phrase.into(),
                content_type: r.content_type.map(String::from),
                body,
            }),
        });
    }

    fn deliver(&mut self, now: Instant, event: Event) {
        if matches!(event, Event::Unknown(_)) {
            self.stats.unknown_events += 1;
        }
        if self.accepted {
            self.peer.learn(&event, self.stats.connects);
        }
        self.stats.events += 1;
        self.ended.observe(&event, self.config.limits.max_ended_ids);
        self.departed
            .observe(&event, self.config.limits.max_ended_ids);
        let mut ended = std::mem::take(&mut self.ended_scratch);
        let subscribers = Subscribers::from_matches(self.router.route(&event, &mut ended));
        if !self.queued.is_empty() {
            self.track_queued(&event, &mut ended);
        }
        if let Some(after) = self.config.stasis_end_linger {
            self.track_linger(&event, now, after);
            if !self.bridges.is_empty() {
                self.track_bridge_linger(&event, now, after);
            }
        }
        self.push_droppable(Output::Event(Delivery {
            event: Arc::new(event),
            subscribers,
        }));
        for (id, reason, data) in ended.drain(..) {
            self.stats.subscriptions_ended += 1;
            self.push_control(Output::SubscriptionEnded { id, reason, data });
        }
        self.ended_scratch = ended;
    }

    /// After routing `event`: a channel that left Stasis starts lingering (followed: its
    /// subscriptions end with the linger; nobody following it: it is only recorded as ended
    /// then), one back in Stasis or destroyed stops, and any other event of a followed
    /// lingering channel restarts its linger (the channel is still followed, e.g. originated
    /// by the application). Routing costs nothing here unless the event is a `StasisStart`,
    /// `StasisEnd` or `ChannelDestroyed` or a followed channel lingers.
    fn track_linger(&mut self, event: &Event, now: Instant, after: Duration) {
        match event {
            Event::StasisEnd(e) => {
                let id = e.channel.id.as_str();
                match deadline(now, after) {
                    Some(at) if self.router.follows(ResourceKind::Channel, id) => {
                        self.unfollowed.remove(id);
                        self.linger.set(id, at);
                    }
                    Some(at) => {
                        self.linger.remove(id);
                        self.unfollowed.set(id, at);
                    }
                    None => {
                        self.linger.remove(id);
                        self.unfollowed.remove(id);
                    }
                }
            }
            Event::StasisStart(e) => {
                self.linger.remove(e.channel.id.as_str());
                self.unfollowed.remove(e.channel.id.as_str());
            }
            Event::ChannelDestroyed(e) => {
                // Recorded as ended already; its subscriptions ended with it.
                self.linger.remove(e.channel.id.as_str());
                self.unfollowed.remove(e.channel.id.as_str());
            }
            _ if self.linger.is_empty() => {}
            _ => {
                for r in event.resources().iter() {
                    if r.kind != ResourceKind::Channel {
                        continue;
                    }
                    match deadline(now, after) {
                        Some(at) if self.router.follows(ResourceKind::Channel, r.id) => {
                            self.linger.touch(r.id, at)
                        }
                        // Its one-shot subscriptions ended with this event: it is recorded as
                        // ended a linger from now unless it comes back.
                        Some(at) => {
                            if self.linger.take(r.id).is_some() {
                                self.unfollowed.set(r.id, at);
                            }
                        }
                        None => self.linger.remove(r.id),
                    }
                }
            }
        }
    }

    /// After routing `event` while destroyed bridges linger: a bridge's `BridgeDestroyed`
    /// (which ended its subscriptions) or `BridgeCreated` (the id is used again) stops its
    /// linger, any other event of it (a `ChannelLeftBridge` of the destruction, late on the
    /// events connection) restarts it.
    fn track_bridge_linger(&mut self, event: &Event, now: Instant, after: Duration) {
        match event {
            Event::BridgeDestroyed(e) => self.bridges.remove(e.bridge.id.as_str()),
            Event::BridgeCreated(e) => self.bridges.remove(e.bridge.id.as_str()),
            _ => {
                for r in event.resources().iter() {
                    if r.kind != ResourceKind::Bridge {
                        continue;
                    }
                    match deadline(now, after) {
                        Some(at) => self.bridges.touch(r.id, at),
                        None => self.bridges.remove(r.id),
                    }
                }
            }
        }
    }

    /// A lingering channel lost its last subscription: it keeps its deadline, to be recorded
    /// as ended then.
    fn stop_following(&mut self, channel: &str) {
        if let Some(at) = self.linger.take(channel) {
            self.unfollowed.set(channel, at);
        }
    }

    /// Ends the subscriptions of the channels whose linger is over and records them as ended
    /// (as if destroyed: a later subscription ends at once, until a `StasisStart` brings the
    /// channel back), followed or not; and likewise the bridges the application destroyed
    /// whose `BridgeDestroyed` did not come.
    fn expire_linger(&mut self, now: Instant) {
        let cap = self.config.limits.max_ended_ids;
        while let Some(c) = self.unfollowed.pop_due(now) {
            self.ended.record(ResourceKind::Channel, &c, cap);
        }
        while let Some(c) = self.linger.pop_due(now) {
            self.end_resource(ResourceKind::Channel, &c, cap);
        }
        while let Some(b) = self.bridges.pop_due(now) {
            self.end_resource(ResourceKind::Bridge, &b, cap);
        }
    }

    /// Records `kind`/`id` as ended and ends its subscriptions, without an event.
    fn end_resource(&mut self, kind: ResourceKind, id: &str, cap: usize) {
        self.ended.record(kind, id, cap);
        for (id, data) in self.router.unsubscribe_resource(kind, id) {
            self.stats.subscriptions_ended += 1;
            self.push_control(Output::SubscriptionEnded {
                id,
                reason: EndReason::ResourceEnded,
                data,
            });
        }
    }

    fn push_control(&mut self, out: Output<T>) {
        self.outputs.push_back(out);
    }

    fn push_droppable(&mut self, out: Output<T>) {
        let max = self.config.limits.max_queued_outputs.max(1);
        while self.queued_droppable >= max {
            match self.outputs.iter().position(is_droppable) {
                Some(i) => {
                    self.outputs.remove(i);
                    self.queued_droppable -= 1;
                    self.overflow += 1;
                    self.stats.dropped_outputs += 1;
                }
                None => {
                    // Unreachable by construction; keep the count honest anyway.
                    self.queued_droppable = 0;
                }
            }
        }
        self.queued_droppable += 1;
        self.outputs.push_back(out);
    }
}

fn is_droppable<T>(o: &Output<T>) -> bool {
    matches!(o, Output::Event(_) | Output::Warning(_))
}
