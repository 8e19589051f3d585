//! Serving ARI outbound WebSockets: Asterisk dials the application.
//!
//! With `ari.conf` `type=outbound_websocket` (Asterisk 20.15+, 21.10+, 22.5+, 23), Asterisk
//! connects **to** the application, as set in `websocket_client.conf`, and REST travels over
//! that same WebSocket: the application needs no route to Asterisk's HTTP port. An
//! [`OutboundServer`] binds an address, checks each upgrade request
//! ([`ari_proto::outbound::UpgradeCheck`]: path, `ari` subprotocol, the Basic credentials of
//! the `websocket_client.conf` section compared in constant time; a wrong one is answered
//! `401` and counted, the password never logged), answers exactly as Asterisk requires, and
//! gives one [`Client`] per connection with the whole typed API; REST goes over the
//! connection.
//!
//! - **persistent** ([`ConnectionType::Persistent`]): one long-lived client per Asterisk,
//!   yielded once by [`OutboundServer::next`]. When that Asterisk reconnects (same address,
//!   user and path), the new socket replaces the old one in the same client: its
//!   subscriptions and instance objects go on, and connection listeners see
//!   `Connected { reconnected: true }`. Asterisk sends the events it queued meanwhile first.
//!   The server asks Asterisk's startup time over each persistent connection
//!   (`GET asterisk/info?only=status`): after a reconnect from an Asterisk that restarted
//!   meanwhile, the waits, streams and listeners of its previous run's channels, bridges,
//!   playbacks and recordings end ([`Error::Ended`]) instead of waiting for ever.
//! - **per_call_config** ([`ConnectionType::PerCall`]): one connection per channel; the unit
//!   is the call, [`OutboundServer::next_call`] gives `(client, StasisStart, channel,
//!   events)` as [`OutboundCall`]. The application is named `<app>:<channel name>`.
//!   When a per-call connection is lost while its channel is still in Stasis, Asterisk
//!   redials at once with the same request and names the same `<app>:<channel name>` in
//!   its first frame (recorded on 20 and master); the server reads that frame and hands the
//!   new socket to the call's existing client, so the call goes on: the same
//!   [`OutboundCall`], channel and event stream, connection listeners see
//!   `Connected { reconnected: true }`, requests in flight on the lost socket fail as
//!   disconnected and requests made before the redial as not connected (retry them), and
//!   the redial is not yielded as a new call
//!   ([`OutboundStats::resumed`] counts it). A per-call connection lost for good before its
//!   `StasisStart` (not redialled within the handshake timeout) is closed and counted in
//!   [`OutboundStats::failed`]. If Asterisk cannot reach the application within
//!   its `reconnect_attempts`, it takes the channel out of Stasis (the dialplan continues):
//!   that call is over for the application.
//!
//! When the application restarts with calls in Stasis, Asterisk dials the new instance and
//! sends no `StasisStart` for them again: the server asks Asterisk over the connection and
//! hands them out all the same — per call by [`OutboundServer::next_call`] with
//! [`OutboundCall::resumed`] (after [`OutboundOptions::resume_after`] without a
//! `StasisStart`), persistent in [`OutboundConnection::in_stasis`] — counted in
//! [`OutboundStats::adopted`]. When Asterisk never comes back after losing a connection,
//! the waits of that client's channels, bridges, playbacks and recordings fail with
//! [`Error::AsteriskGone`] after [`OutboundOptions::peer_timeout`] (60 s by default); per
//! call, after [`OutboundOptions::call_peer_timeout`] (5 s: a live Asterisk redials a call's
//! lost connection at once), counted in [`OutboundStats::calls_lost`].
//! When Asterisk unregisters every application of a persistent connection
//! (`ApplicationUnregistered`: its `outbound_websocket` configuration was removed and
//! reloaded) and then closes it with 1000, it will not dial again: those waits fail at once
//! with [`Error::ApplicationUnregistered`], connection listeners see
//! [`ConnectionEvent::ApplicationsUnregistered`](crate::ConnectionEvent::ApplicationsUnregistered),
//! counted in `session.applications_unregistered` of the client's [`Stats`](crate::Stats).
//!
//! [`OutboundServer::shutdown`] stops accepting, lets live calls finish up to a deadline,
//! then closes what is left.
//!
//! It runs on [`Stack`] (what `ari-tokio` and `ari-smol` are): the connector's listener,
//! TLS with `OutboundOptions::tls` (feature `rustls`), and the stack's server handshake.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use ari_proto::outbound::{
    call_channel_name, split_call_application, Accepted, Refused, UpgradeCheck,
};
use ari_proto::rest::Credentials;
use futures_util::future::{select, Either};
use futures_util::StreamExt;

use crate::client::{Client, ClientBuilder, Inner};
use crate::error::Error;
use crate::instances::Channel;
use crate::listen::{EventStream, Incoming};
use crate::runtime::{
    Connector, Executor, Listener, Runtime, TransportError, TransportErrorKind, TransportOptions,
    WsMessage,
};
use crate::stack::{accept_websocket, MaybeTlsStream, Stack, WebSocket};

/// Why an upgrade from Asterisk did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeFailure {
    /// The check refused it (and the refusal was answered).
    Refused(Refused),
    /// The connection failed before or during the upgrade.
    Transport(TransportError),
}

impl fmt::Display for UpgradeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeFailure::Refused(r) => write!(f, "upgrade refused: {r}"),
            UpgradeFailure::Transport(e) => write!(f, "upgrade failed: {e}"),
        }
    }
}

impl std::error::Error for UpgradeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeFailure::Refused(r) => Some(r),
            UpgradeFailure::Transport(e) => Some(e),
        }
    }
}

/// `connection_type` of the `websocket_client.conf` section that dials this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConnectionType {
    /// One long-lived connection per Asterisk (`persistent`). Should Asterisk dial per call
    /// anyway (`per_call_config` in its section), each call is a connection of its own,
    /// yielded by [`OutboundServer::next`] with its call on `incoming` (warned once).
    #[default]
    Persistent,
    /// One connection per call (`per_call_config`). Should Asterisk dial once for all calls
    /// anyway (`persistent` in its section), every call of that connection is yielded by
    /// [`OutboundServer::next_call`] (warned once).
    PerCall,
}

/// Default of [`OutboundOptions::peer_timeout`].
const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of [`OutboundOptions::call_peer_timeout`]: above Asterisk's default redial
/// window of a per-call connection (`reconnect_attempts` 4 × `reconnect_interval` 500 ms,
/// each attempt within `connection_timeout` 500 ms), under its fail-safe of 7 s.
const DEFAULT_CALL_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of [`OutboundOptions::resume_after`].
const DEFAULT_RESUME_AFTER: Duration = Duration::from_secs(1);

type Configure<E, C> =
    Arc<dyn Fn(ClientBuilder<Stack<E, C>>) -> ClientBuilder<Stack<E, C>> + Send + Sync>;

/// Options of an [`OutboundServer`].
///
/// ```
/// # fn demo<E: ari_client::runtime::Executor, C: ari_client::runtime::Connector>(runtime: ari_client::Stack<E, C>) -> Result<(), ari_client::Error> {
/// use std::time::Duration;
/// use ari_client::{ConnectionType, OutboundOptions};
/// let options = OutboundOptions::new(runtime)
///     .credentials("obuser", "obsecret")?
///     .path("/ari-ob/percall")
///     .connection_type(ConnectionType::PerCall)
///     .client(|b| b.request_timeout(Duration::from_secs(5)));
/// # let _ = options; Ok(()) }
/// ```
pub struct OutboundOptions<E: Executor, C: Connector> {
    runtime: Stack<E, C>,
    #[cfg(feature = "rustls")]
    tls: Option<Arc<rustls::ServerConfig>>,
    check: UpgradeCheck,
    connection_type: ConnectionType,
    handshake_timeout: Duration,
    peer_timeout: Option<Duration>,
    call_peer_timeout: Option<Duration>,
    resume_after: Duration,
    transport: TransportOptions,
    configure: Configure<E, C>,
}

impl<E: Executor, C: Connector> fmt::Debug for OutboundOptions<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundOptions")
            .field("check", &self.check)
            .field("connection_type", &self.connection_type)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("peer_timeout", &self.peer_timeout)
            .field("call_peer_timeout", &self.call_peer_timeout)
            .field("resume_after", &self.resume_after)
            .finish_non_exhaustive()
    }
}

impl<E: Executor, C: Connector> OutboundOptions<E, C> {
    /// Defaults: any path, no credentials required (set them!), persistent, upgrade within
    /// 5 s, calls given up 60 s after their connection was lost for good
    /// ([`OutboundOptions::peer_timeout`]; per call 5 s,
    /// [`OutboundOptions::call_peer_timeout`]), clients with the default options.
    pub fn new(runtime: Stack<E, C>) -> Self {
        OutboundOptions {
            runtime,
            #[cfg(feature = "rustls")]
            tls: None,
            check: UpgradeCheck::new(),
            connection_type: ConnectionType::Persistent,
            handshake_timeout: Duration::from_secs(5),
            peer_timeout: Some(DEFAULT_PEER_TIMEOUT),
            call_peer_timeout: Some(DEFAULT_CALL_PEER_TIMEOUT),
            resume_after: DEFAULT_RESUME_AFTER,
            transport: TransportOptions::default(),
            configure: Arc::new(|b| b),
        }
    }

    /// The credentials Asterisk must present: `username` and `password` of the
    /// `websocket_client.conf` section.
    pub fn credentials(mut self, user: &str, password: &str) -> Result<Self, Error> {
        self.check = self.check.credentials(Credentials::new(user, password)?);
        Ok(self)
    }

    /// Accepts only this path (the path of the section's `uri`).
    pub fn path(mut self, path: &str) -> Self {
        self.check = self.check.path(path);
        self
    }

    /// Requires `protocols = ari`.
    pub fn require_subprotocol(mut self, on: bool) -> Self {
        self.check = self.check.require_subprotocol(on);
        self
    }

    /// Serves `wss://` with this certificate and key (feature `rustls`).
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The section's `connection_type`.
    pub fn connection_type(mut self, t: ConnectionType) -> Self {
        self.connection_type = t;
        self
    }

    /// How long a connection may take to send its upgrade request (default 5 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// How long a client waits for Asterisk to open a new connection after losing its one
    /// (default 60 s; `None`: for ever).
    ///
    /// Asterisk redials at once: a persistent connection, and a per-call one while its
    /// channel is in Stasis. When nothing comes back within this delay (Asterisk stopped,
    /// crashed for good, or is cut off), no event will ever end the calls of the lost
    /// connection: the waits of every channel, bridge, playback and recording of that client
    /// fail with [`Error::AsteriskGone`], their streams and listeners end, connection
    /// listeners see [`ConnectionEvent::PeerGone`](crate::ConnectionEvent::PeerGone), and
    /// the client's [`Stats`](crate::Stats) count it in `session.peers_gone`. The client
    /// stays usable: a connection Asterisk opens later is served as usual. Time is the
    /// executor's.
    pub fn peer_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// Per call: how long the client of a per-call connection waits for Asterisk to redial
    /// the call after losing its connection (default 5 s; the shorter of this and
    /// [`OutboundOptions::peer_timeout`] applies; `None`: `peer_timeout` alone).
    ///
    /// A live Asterisk redials a lost per-call connection at once while the channel is in
    /// Stasis (recorded: within 1–2 ms), and when it cannot reach the application within
    /// `reconnect_attempts` attempts `reconnect_interval` apart it gives the channel back to
    /// the dialplan. So when nothing came back within this delay, the call is over for the
    /// application either way: Asterisk crashed, stopped or is cut off (the TCP connection
    /// was reset or closed without a close frame, or Asterisk stopped answering the
    /// client's keepalive pings), or it took the channel out of Stasis. The call's waits
    /// then fail with [`Error::AsteriskGone`] and its event stream ends, as after
    /// `peer_timeout`, and the server counts it in [`OutboundStats::calls_lost`] (warned).
    /// Keep it above `(connection_timeout + reconnect_interval) × reconnect_attempts` of
    /// the `websocket_client.conf` section (4 s with Asterisk's defaults).
    pub fn call_peer_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_peer_timeout = timeout;
        self
    }

    /// Per call: how long a connection naming a call this server does not know waits for
    /// its `StasisStart` before the server asks Asterisk, over the connection, whether the
    /// call is already in Stasis (default 1 s; Asterisk sends `StasisStart` about 500 ms
    /// after the connection).
    ///
    /// Asterisk redials a per-call connection at once while its channel is in Stasis, also
    /// when the application restarted meanwhile, and then sends no `StasisStart` (only
    /// `ApplicationRegistered`): such a call is found with `GET applications` (the
    /// connection's application lists the channel once it is in Stasis) and
    /// `GET channels/{id}`, and yielded by [`OutboundServer::next_call`] with
    /// [`OutboundCall::resumed`] set, counted in [`OutboundStats::adopted`].
    pub fn resume_after(mut self, d: Duration) -> Self {
        self.resume_after = d;
        self
    }

    /// Options of each connection's client (request timeout, keepalive, limits, …); the URL
    /// and credentials of the builder are not used.
    pub fn client(
        mut self,
        f: impl Fn(ClientBuilder<Stack<E, C>>) -> ClientBuilder<Stack<E, C>> + Send + Sync + 'static,
    ) -> Self {
        self.configure = Arc::new(f);
        self
    }

    /// Binds `addr` and starts accepting.
    pub async fn bind(self, addr: SocketAddr) -> Result<OutboundServer<E, C>, Error> {
        OutboundServer::bind(self, addr).await
    }
}

/// A connection Asterisk opened, with its client.
#[derive(Debug)]
#[non_exhaustive]
pub struct OutboundConnection<R: Runtime> {
    /// The client of the connection: the whole typed API, REST over this connection.
    pub client: Client<R>,
    /// The calls entering Stasis on this connection (see [`Client::incoming`]), subscribed
    /// before Asterisk's first frame. Asterisk sends the events it queued while the
    /// application was away (calls that entered Stasis meanwhile) first thing on the new
    /// connection, before [`OutboundServer::next`] hands the client out: a subscription made
    /// on `client` afterwards misses them, this one has them. Drop it if you take calls
    /// otherwise (its queue is bounded like any stream's; calls nobody takes are dropped
    /// and counted).
    pub incoming: Incoming<R>,
    /// The calls already in Stasis of the connection's applications that no `StasisStart`
    /// on `incoming` announces: the application restarted while they were in Stasis, and
    /// Asterisk, reconnecting, sends no `StasisStart` for them again. Found by asking
    /// Asterisk over the connection (`GET applications`: the channels of its applications,
    /// then `GET channels/{id}` for each, all at once) once the events it queued were read;
    /// each comes as [`Incoming`] gives a call, with a `StasisStart` made up from the
    /// channel as it is now (no `args`: Asterisk does not send them again), and is counted
    /// in [`OutboundStats::adopted`]. A stream that ends once Asterisk answered: the
    /// connection is handed out without waiting for it, so calls on `incoming` are not held
    /// up by the lookup. It ends at once on a first start with nothing in Stasis.
    pub in_stasis: InStasis<R>,
    /// Asterisk's address.
    pub peer: SocketAddr,
    /// The user of its Basic credentials, if it sent any.
    pub user: Option<String>,
    /// The request path.
    pub path: String,
}

/// The calls already in Stasis when a persistent connection came
/// ([`OutboundConnection::in_stasis`]): a stream of `(StasisStart, channel, events)`, as
/// [`Incoming`] gives calls, that ends once Asterisk answered the lookup (at once when
/// nothing was in Stasis). Dropped before it ended, the calls it would have given are left
/// to nobody: warned, with their number.
pub struct InStasis<R: Runtime> {
    slot: Arc<Mutex<InStasisSlot<R>>>,
}

/// A call already in Stasis: its made-up `StasisStart`, channel and events.
type InStasisCall<R> = (crate::events::StasisStart, Channel<R>, EventStream);

struct InStasisSlot<R: Runtime> {
    calls: VecDeque<InStasisCall<R>>,
    done: bool,
    waker: Option<Waker>,
    dropped: bool,
}

impl<R: Runtime> InStasis<R> {
    fn new(done: bool) -> Self {
        InStasis {
            slot: Arc::new(Mutex::new(InStasisSlot {
                calls: VecDeque::new(),
                done,
                waker: None,
                dropped: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InStasisSlot<R>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether Asterisk answered the lookup: every call found is queued, and the stream
    /// ends once they are taken.
    pub fn is_done(&self) -> bool {
        self.lock().done
    }

    /// Calls found and not taken yet.
    pub fn queued(&self) -> usize {
        self.lock().calls.len()
    }
}

/// The lookup's side of an [`InStasis`].
struct InStasisTx<R: Runtime> {
    slot: Weak<Mutex<InStasisSlot<R>>>,
}

impl<R: Runtime> InStasisTx<R> {
    /// Whether the application dropped the stream.
    fn dropped(&self) -> bool {
        self.slot
            .upgrade()
            .is_none_or(|s| s.lock().unwrap_or_else(|p| p.into_inner()).dropped)
    }

    /// Hands out `calls` and ends the stream. Returns the calls nobody will take (the
    /// stream was dropped).
    fn finish(self, calls: Vec<InStasisCall<R>>) -> usize {
        let Some(slot) = self.slot.upgrade() else {
            return calls.len();
        };
        let waker = {
            let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
            if g.dropped {
                return calls.len();
            }
            g.calls.extend(calls);
            g.done = true;
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        0
    }
}

impl<R: Runtime> Drop for InStasisTx<R> {
    fn drop(&mut self) {
        // Ended however the lookup went (a task dropped midway included).
        if let Some(slot) = self.slot.upgrade() {
            let waker = {
                let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
                g.done = true;
                g.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<R: Runtime> Drop for InStasis<R> {
    fn drop(&mut self) {
        let mut g = self.lock();
        g.dropped = true;
        if !g.calls.is_empty() {
            tracing::warn!(target: "ari_client", calls = g.calls.len(), "outbound: OutboundConnection::in_stasis dropped with calls already in Stasis never taken: nobody controls them");
        }
    }
}

impl<R: Runtime> fmt::Debug for InStasis<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.lock();
        f.debug_struct("InStasis")
            .field("queued", &g.calls.len())
            .field("done", &g.done)
            .finish()
    }
}

impl<R: Runtime> futures_util::Stream for InStasis<R> {
    type Item = InStasisCall<R>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let mut g = self.lock();
        if let Some(call) = g.calls.pop_front() {
            return Poll::Ready(Some(call));
        }
        if g.done {
            return Poll::Ready(None);
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// One call of a per-call connection: its client, the `StasisStart` that began it, the
/// channel, and its events.
#[derive(Debug)]
#[non_exhaustive]
pub struct OutboundCall<R: Runtime> {
    /// The client of the call's connection.
    pub client: Client<R>,
    /// The `StasisStart` (its `application` is `<app>:<channel name>`).
    pub start: crate::events::StasisStart,
    /// The channel.
    pub channel: Channel<R>,
    /// The channel's events from the StasisStart on.
    pub events: EventStream,
    /// Asterisk's address.
    pub peer: SocketAddr,
    /// The call was already in Stasis when this server got it: Asterisk redialled its
    /// connection after the application restarted (see [`OutboundOptions::resume_after`]),
    /// sending no `StasisStart`. `start` is made up from the channel as it was then (its
    /// `args` are empty: Asterisk does not send them again) and `events` run from then on.
    pub resumed: bool,
}

/// Counters of an [`OutboundServer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboundStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Upgrades accepted.
    pub accepted: u64,
    /// Upgrades refused (any reason).
    pub refused: u64,
    /// Of those, refused for missing or wrong credentials (401).
    pub unauthorized: u64,
    /// Persistent connections that replaced an earlier one of the same Asterisk (same
    /// address, user, path and query, and `asterisk_id` in its first frame).
    pub replaced: u64,
    /// Persistent connections that came while a connection of the same identity (address,
    /// user, path and query, `asterisk_id`) was open and stayed open: another Asterisk
    /// (cloned hosts sharing an `entityid` behind one address, or two `outbound_websocket`
    /// objects of one Asterisk with the same `websocket_client` URI), yielded by
    /// [`OutboundServer::next`] with a client of its own, and warned (set `entityid`, or
    /// make the URIs differ). They took each other's socket before, for ever.
    pub duplicates: u64,
    /// Per-call connections Asterisk redialled after losing one mid-call (same
    /// `<app>:<channel>`), handed to that call's client: the call went on.
    pub resumed: u64,
    /// Connections that failed or timed out before completing the upgrade, came while the
    /// server was shutting down, or (per call) ended before their call's `StasisStart`.
    pub failed: u64,
    /// Calls yielded by [`OutboundServer::next_call`]'s queue.
    pub calls: u64,
    /// Per-call connections lost with their call going on (subscriptions of its channel,
    /// bridges, … still live) and not redialled within
    /// [`OutboundOptions::call_peer_timeout`]: Asterisk crashed, stopped or is cut off, or
    /// gave the channel back to the dialplan. Their waits failed with
    /// [`Error::AsteriskGone`].
    pub calls_lost: u64,
    /// Calls already in Stasis when Asterisk dialled this server (the application restarted
    /// with calls in Stasis), found by asking Asterisk: per call, yielded by `next_call` with
    /// [`OutboundCall::resumed`] (also counted in `calls`); persistent, handed out in
    /// [`OutboundConnection::in_stasis`].
    pub adopted: u64,
    /// Calls and connections handed out but not taken yet: waiting in the queues of
    /// [`OutboundServer::next_call`] and [`OutboundServer::next`]. Each is in Stasis with
    /// nobody controlling it; a number that grows means the application takes them too
    /// slowly (nothing is dropped: the queues hold what Asterisk sends).
    pub waiting: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    unauthorized: AtomicU64,
    replaced: AtomicU64,
    duplicates: AtomicU64,
    resumed: AtomicU64,
    failed: AtomicU64,
    calls: AtomicU64,
    adopted: AtomicU64,
    /// Shared with the per-call clients' [`CallLost`] sinks.
    calls_lost: Arc<AtomicU64>,
}

struct Queues<R: Runtime> {
    connections: VecDeque<OutboundConnection<R>>,
    calls: VecDeque<OutboundCall<R>>,
    conn_waker: Option<Waker>,
    call_waker: Option<Waker>,
    /// Persistent clients by Asterisk (address, user, path and query, and the `asterisk_id`
    /// of its first frame) and, for a connection Asterisk made per call although the server
    /// expects persistent ones, the call (`<app>:<channel name>`).
    /// Several when Asterisks with the same identity are connected at once (cloned hosts
    /// sharing an `entityid` behind one address): each has a client of its own.
    persistent: HashMap<PersistentKey, Vec<Weak<Inner<R>>>>,
    /// Per-call clients by Asterisk (address, user, path and query, and the `asterisk_id`
    /// of the first frame: two Asterisks behind one address name their channels alike) and
    /// call (`<app>:<channel name>`).
    per_call: HashMap<(PeerKey, Option<String>, String), Weak<Inner<R>>>,
    /// Every client made, for shutdown.
    live: Vec<Weak<Inner<R>>>,
    /// Persistent clients whose calls already in Stasis are being looked up (by address):
    /// a shutdown waits for them as for calls in Stasis.
    looking_up: std::collections::HashSet<usize>,
    /// `live` and the maps are rid of dropped clients when `live` reaches this length.
    prune_at: usize,
    stop_waker: Option<Waker>,
}

/// Which Asterisk a connection comes from: its address, the user of its credentials, and
/// the request path (with query).
type PeerKey = (std::net::IpAddr, Option<String>, String);

/// A persistent connection's Asterisk: [`PeerKey`], the `asterisk_id` of its first frame,
/// and the call it names if Asterisk dialled per call (`<app>:<channel name>`).
type PersistentKey = (PeerKey, Option<String>, Option<String>);

impl<R: Runtime> Queues<R> {
    /// Forgets dropped clients, amortised: `live` and the maps stay proportional to the
    /// clients alive, however many calls came and went.
    fn prune(&mut self) {
        if self.live.len() < self.prune_at {
            return;
        }
        self.live.retain(|w| w.strong_count() > 0);
        self.persistent.retain(|_, v| {
            v.retain(|w| w.strong_count() > 0);
            !v.is_empty()
        });
        self.per_call.retain(|_, w| w.strong_count() > 0);
        self.prune_at = self.live.len().saturating_mul(2).max(PRUNE_MIN);
    }
}

const PRUNE_MIN: usize = 64;

struct ServerShared<E: Executor, C: Connector> {
    runtime: Stack<E, C>,
    #[cfg(feature = "rustls")]
    tls: Option<Arc<rustls::ServerConfig>>,
    check: Arc<UpgradeCheck>,
    connection_type: ConnectionType,
    handshake_timeout: Duration,
    peer_timeout: Option<Duration>,
    call_peer_timeout: Option<Duration>,
    resume_after: Duration,
    transport: TransportOptions,
    configure: Configure<E, C>,
    counters: Counters,
    queues: Mutex<Queues<Stack<E, C>>>,
    stopping: AtomicBool,
    /// A persistent server dialled per call warned about it.
    warned_per_call: AtomicBool,
    /// A per-call server dialled once for all calls warned about it.
    warned_persistent: AtomicBool,
}

impl<E: Executor, C: Connector> ServerShared<E, C> {
    fn queues(&self) -> std::sync::MutexGuard<'_, Queues<Stack<E, C>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Accepts the ARI outbound WebSockets Asterisk opens (`ari.conf` `type=outbound_websocket`):
/// checks each upgrade (credentials in constant time, 401 counted, the password never
/// logged), answers exactly as Asterisk requires, and gives one [`Client`] per connection
/// with REST over it. Persistent: [`OutboundServer::next`] yields each Asterisk once; its
/// reconnects replace the socket inside the same client (`Connected { reconnected: true }`).
/// An Asterisk is known by its address, the user of its credentials, the path and query, and
/// the `asterisk_id` of the frame it sends first, so Asterisks behind one address (a NAT, a
/// proxy) with the same settings get a client each.
/// Per call: [`OutboundServer::next_call`] yields each call; Asterisk redialling a call it
/// lost mid-call goes on in that call's client. [`OutboundServer::shutdown`]
/// stops accepting, lets live calls finish up to a deadline, then closes the rest.
///
/// ```no_run
/// # async fn demo<E: ari_client::runtime::Executor, C: ari_client::runtime::Connector>(runtime: ari_client::Stack<E, C>) -> Result<(), ari_client::Error> {
/// use ari_client::{ConnectionType, OutboundOptions};
/// let server = OutboundOptions::new(runtime)
///     .credentials("obuser", "obsecret")?
///     .connection_type(ConnectionType::PerCall)
///     .bind("0.0.0.0:8765".parse().unwrap())
///     .await?;
/// while let Some(call) = server.next_call().await {
///     call.channel.answer().await?;
///     call.channel.hangup().await?;
/// }
/// # Ok(()) }
/// ```
pub struct OutboundServer<E: Executor, C: Connector> {
    shared: Arc<ServerShared<E, C>>,
    local_addr: SocketAddr,
    listening: Arc<Listening>,
}

/// Whether the accept loop still holds the listening socket, and who waits for it to let go.
#[derive(Default)]
struct Listening {
    closed: AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

/// Held by the accept loop: dropped after the listener (loop ended, or task dropped by its
/// executor), it tells [`OutboundServer::shutdown`] that the port is free.
struct ListenerGuard(Arc<Listening>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

impl<E: Executor, C: Connector> fmt::Debug for OutboundServer<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundServer")
            .field("local_addr", &self.local_addr)
            .field("connection_type", &self.shared.connection_type)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<E: Executor, C: Connector> OutboundServer<E, C> {
    async fn bind(options: OutboundOptions<E, C>, addr: SocketAddr) -> Result<Self, Error> {
        let io = |what: &str, e: std::io::Error| {
            Error::Transport(
                TransportError::new(TransportErrorKind::Io, format!("{what} {addr}: {e}"))
                    .with_source(e),
            )
        };
        let listener = options
            .runtime
            .connector()
            .bind(addr)
            .await
            .map_err(|e| io("binding", e))?;
        let local_addr = listener.local_addr().map_err(|e| io("binding", e))?;
        let listener = Arc::new(listener);
        let listening = Arc::new(Listening::default());
        let shared = Arc::new(ServerShared {
            runtime: options.runtime,
            #[cfg(feature = "rustls")]
            tls: options.tls,
            check: Arc::new(options.check),
            connection_type: options.connection_type,
            handshake_timeout: options.handshake_timeout,
            peer_timeout: options.peer_timeout,
            call_peer_timeout: options.call_peer_timeout,
            resume_after: options.resume_after,
            transport: options.transport,
            configure: options.configure,
            counters: Counters::default(),
            queues: Mutex::new(Queues {
                connections: VecDeque::new(),
                calls: VecDeque::new(),
                conn_waker: None,
                call_waker: None,
                persistent: HashMap::new(),
                per_call: HashMap::new(),
                live: Vec::new(),
                looking_up: std::collections::HashSet::new(),
                prune_at: PRUNE_MIN,
                stop_waker: None,
            }),
            stopping: AtomicBool::new(false),
            warned_per_call: AtomicBool::new(false),
            warned_persistent: AtomicBool::new(false),
        });
        shared.runtime.spawn(accept_loop(
            Arc::downgrade(&shared),
            listener,
            ListenerGuard(listening.clone()),
        ));
        Ok(OutboundServer {
            shared,
            local_addr,
            listening,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters.
    pub fn stats(&self) -> OutboundStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        OutboundStats {
            connections: get(&c.connections),
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            unauthorized: get(&c.unauthorized),
            replaced: get(&c.replaced),
            duplicates: get(&c.duplicates),
            resumed: get(&c.resumed),
            failed: get(&c.failed),
            calls: get(&c.calls),
            calls_lost: get(&c.calls_lost),
            adopted: get(&c.adopted),
            waiting: {
                let q = self.shared.queues();
                (q.calls.len() + q.connections.len()) as u64
            },
        }
    }

    /// The next new Asterisk of a persistent server (its reconnects go to the same client
    /// and are not yielded again). A per-call server yields its calls with
    /// [`OutboundServer::next_call`] instead. `None` once shut down.
    pub async fn next(&self) -> Option<OutboundConnection<Stack<E, C>>> {
        futures_util::future::poll_fn(|cx| {
            let mut q = self.shared.queues();
            if let Some(c) = q.connections.pop_front() {
                return Poll::Ready(Some(c));
            }
            if self.shared.stopping.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            q.conn_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next call of a per-call server (its connection, StasisStart, channel and
    /// events). `None` once shut down.
    pub async fn next_call(&self) -> Option<OutboundCall<Stack<E, C>>> {
        futures_util::future::poll_fn(|cx| {
            let mut q = self.shared.queues();
            if let Some(c) = q.calls.pop_front() {
                return Poll::Ready(Some(c));
            }
            if self.shared.stopping.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            q.call_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Stops accepting (the listening socket is closed: once this returns, the port can be
    /// bound again; connections whose upgrade was still in progress are not served, a failed
    /// attempt for Asterisk), waits until every call has ended or `grace` passed, then closes
    /// the clients still open. A call has ended when Asterisk closed its per-call connection
    /// (it does after the call's StasisEnd); a persistent connection, which Asterisk keeps
    /// open for the next calls, is done once none of its channels is in Stasis (a
    /// `StasisStart`, or a call handed out in [`OutboundConnection::in_stasis`], without its
    /// `StasisEnd` or `ChannelDestroyed` yet), and not while the calls already in Stasis of a
    /// new connection are still being looked up (those found are its calls, waited for like
    /// the others): once nothing is left, the persistent
    /// connections are closed at once, without waiting for the rest of `grace`.
    /// Returns how many clients were closed at the deadline (0 when nothing was left by
    /// then). Calls and connections still queued (never taken
    /// by [`OutboundServer::next_call`] or [`OutboundServer::next`]) are handed out during
    /// the grace period, and dropped when it returns (warned): afterwards both give `None`.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.shared.stopping.store(true, Ordering::Release);
        let wakers: Vec<Waker> = {
            let mut q = self.shared.queues();
            [
                q.conn_waker.take(),
                q.call_waker.take(),
                q.stop_waker.take(),
            ]
            .into_iter()
            .flatten()
            .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        // The accept loop lets the listening socket go: the port is free once this returns
        // (a new run of the application can bind it at once).
        futures_util::future::poll_fn(|cx| {
            if self.listening.closed.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.listening.waker.register(cx.waker());
            if self.listening.closed.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        let rt = &self.shared.runtime;
        let deadline = rt.now().checked_add(grace).unwrap_or_else(|| rt.now());
        loop {
            let open = self.open_clients();
            // A persistent connection stays open after its calls ended (Asterisk keeps it
            // for the next ones): nothing is left once none of them has a call in Stasis
            // (per call, Asterisk closes each connection after its call).
            // Nor while the calls already in Stasis of a new one are being looked up: those
            // found are its calls.
            let busy = open.iter().any(|(c, persistent)| {
                !persistent
                    || c.inner.shared.lock().session.calls_in_stasis() > 0
                    || self.is_looking_up(c)
            });
            if !busy {
                for (c, _) in open {
                    c.close().await;
                }
                self.forget_waiting();
                return 0;
            }
            if rt.now() >= deadline {
                let n = open.len();
                for (c, _) in open {
                    c.close().await;
                }
                self.forget_waiting();
                return n;
            }
            let step = rt
                .now()
                .checked_add(Duration::from_millis(20))
                .unwrap_or(deadline)
                .min(deadline);
            rt.sleep_until(step).await;
        }
    }

    /// Once shut down, calls and connections never taken are dropped from the queues (their
    /// clients are closed by now: counted in what `shutdown` returned, or closed by
    /// Asterisk), so that `next_call` and `next` give `None` rather than a dead call.
    fn forget_waiting(&self) {
        let (calls, connections) = {
            let mut q = self.shared.queues();
            (
                std::mem::take(&mut q.calls),
                std::mem::take(&mut q.connections),
            )
        };
        if !calls.is_empty() || !connections.is_empty() {
            tracing::warn!(target: "ari_client", calls = calls.len(), connections = connections.len(), "outbound: shut down with calls never taken by the application");
        }
    }

    /// Whether the calls already in Stasis of `client`'s new persistent connection are
    /// being looked up.
    fn is_looking_up(&self, client: &Client<Stack<E, C>>) -> bool {
        let key = Arc::as_ptr(&client.inner) as usize;
        self.shared.queues().looking_up.contains(&key)
    }

    /// Clients whose connection is open, each with whether it is a persistent connection
    /// (one for all the calls of an Asterisk, not one Asterisk made per call).
    fn open_clients(&self) -> Vec<(Client<Stack<E, C>>, bool)> {
        let mut q = self.shared.queues();
        q.live.retain(|w| w.strong_count() > 0);
        let persistent: std::collections::HashSet<*const Inner<Stack<E, C>>> = q
            .persistent
            .iter()
            .filter(|((_, _, one_call), _)| one_call.is_none())
            .flat_map(|(_, v)| v.iter().map(Weak::as_ptr))
            .collect();
        q.live
            .iter()
            .filter_map(|w| Some((w.upgrade()?, persistent.contains(&w.as_ptr()))))
            .map(|(inner, persistent)| (Client { inner }, persistent))
            .filter(|(c, _)| {
                !c.inner.shared.is_closed() && c.inner.shared.lock().session.is_connected()
            })
            .collect()
    }
}

impl<E: Executor, C: Connector> Drop for OutboundServer<E, C> {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(w) = self.shared.queues().stop_waker.take() {
            w.wake();
        }
    }
}

async fn accept_loop<E: Executor, C: Connector>(
    shared: Weak<ServerShared<E, C>>,
    listener: Arc<C::Listener>,
    guard: ListenerGuard,
) {
    // Dropped in reverse order: the listener, then the guard saying the port is free.
    let _guard = guard;
    let listener = listener;
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.stopping.load(Ordering::Acquire) {
            return;
        }
        let accept = std::pin::pin!(listener.accept());
        let stop = std::pin::pin!(stopped(&s));
        let accepted = match select(accept, stop).await {
            Either::Left((res, _)) => res,
            Either::Right(_) => return,
        };
        match accepted {
            Ok((conn, peer)) => {
                s.counters.connections.fetch_add(1, Ordering::Relaxed);
                let runtime = s.runtime.clone();
                runtime.spawn(handshake(s.clone(), conn, peer));
            }
            Err(e) => {
                tracing::warn!(target: "ari_client", error = %e, "outbound: accept failed");
                let _ = &e;
                let at = s
                    .runtime
                    .now()
                    .checked_add(Duration::from_millis(10))
                    .unwrap_or_else(|| s.runtime.now());
                s.runtime.sleep_until(at).await;
            }
        }
    }
}

/// Completes when the server stops.
fn stopped<E: Executor, C: Connector>(s: &ServerShared<E, C>) -> impl Future<Output = ()> + '_ {
    futures_util::future::poll_fn(move |cx| {
        if s.stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        s.queues().stop_waker = Some(cx.waker().clone());
        if s.stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    })
}

/// TLS (when configured), then the WebSocket upgrade answered as the check decides.
async fn upgrade<E: Executor, C: Connector>(
    s: &ServerShared<E, C>,
    conn: C::Stream,
) -> Result<(WebSocket<MaybeTlsStream<C::Stream>>, Accepted), UpgradeFailure> {
    #[cfg(feature = "rustls")]
    let stream = match &s.tls {
        Some(config) => crate::stack::tls_accept(conn, config.clone())
            .await
            .map_err(UpgradeFailure::Transport)?,
        None => MaybeTlsStream::Plain(conn),
    };
    #[cfg(not(feature = "rustls"))]
    let stream = MaybeTlsStream::Plain(conn);
    let mut verdict: Option<Result<Accepted, Refused>> = None;
    let mut stopping = false;
    let check = &s.check;
    let answered = accept_websocket(stream, &s.transport, |request| {
        if s.stopping.load(Ordering::Acquire) {
            // Shutting down: nobody would serve the connection. A failed attempt for
            // Asterisk, which gives a per-call channel back to the dialplan.
            stopping = true;
            return Err(http::StatusCode::SERVICE_UNAVAILABLE);
        }
        let v = check.check(request);
        let answer = match &v {
            Ok(accepted) => {
                // tungstenite writes Upgrade, Connection: Upgrade and the accept key; the
                // subprotocol is the one header to add. It negotiates no extension.
                let mut headers = http::HeaderMap::new();
                if let Some(p) = accepted.response().headers().get("sec-websocket-protocol") {
                    headers.insert("sec-websocket-protocol", p.clone());
                }
                Ok(headers)
            }
            Err(refused) => Err(refused.status()),
        };
        verdict = Some(v);
        answer
    })
    .await;
    if stopping {
        return Err(UpgradeFailure::Transport(shutting_down()));
    }
    match (answered, verdict) {
        (Ok((ws, _)), Some(Ok(accepted))) => Ok((ws, accepted)),
        (_, Some(Err(refused))) => Err(UpgradeFailure::Refused(refused)),
        (Err(e), _) => Err(UpgradeFailure::Transport(e)),
        (Ok(_), None) => Err(UpgradeFailure::Transport(TransportError::new(
            TransportErrorKind::Protocol,
            "the upgrade completed without a request",
        ))),
    }
}

async fn handshake<E: Executor, C: Connector>(
    s: Arc<ServerShared<E, C>>,
    conn: C::Stream,
    peer: SocketAddr,
) {
    let upgrade = std::pin::pin!(upgrade(&s, conn));
    let deadline = s
        .runtime
        .now()
        .checked_add(s.handshake_timeout)
        .unwrap_or_else(|| s.runtime.now());
    let timeout = std::pin::pin!(s.runtime.sleep_until(deadline));
    let result = match select(upgrade, timeout).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(UpgradeFailure::Transport(TransportError::new(
            TransportErrorKind::Timeout,
            format!("no upgrade request within {:?}", s.handshake_timeout),
        ))),
    };
    let (ws, accepted) = match result {
        Ok(ok) => ok,
        Err(UpgradeFailure::Refused(r)) => {
            let refused = s.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if r.is_unauthorized() {
                s.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            }
            // The refusal names the user at most, never the password. A misconfigured
            // Asterisk retries every `reconnect_interval`, for ever: warned at the 1st,
            // 2nd, 4th, 8th… refusal (with the count so far), the others at debug.
            if refused.is_power_of_two() {
                tracing::warn!(target: "ari_client", %peer, reason = %r, refused, "outbound: upgrade refused (warned at refusal 1, 2, 4, 8, …; all are counted in OutboundStats::refused)");
            } else {
                tracing::debug!(target: "ari_client", %peer, reason = %r, refused, "outbound: upgrade refused");
            }
            return;
        }
        Err(UpgradeFailure::Transport(e)) => {
            // A TLS listener dialled with `ws://` (or a certificate Asterisk does not trust),
            // a peer that never sends its request: visible, but not once per attempt (a
            // misconfigured Asterisk retries for ever): at the 1st, 2nd, 4th… failure.
            let failed = s.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
            if failed.is_power_of_two() {
                tracing::warn!(target: "ari_client", %peer, error = %e, failed, "outbound: upgrade failed (warned at failure 1, 2, 4, 8, …; all are counted in OutboundStats::failed)");
            } else {
                tracing::debug!(target: "ari_client", %peer, error = %e, failed, "outbound: upgrade failed");
            }
            return;
        }
    };
    s.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let user = accepted.user().map(str::to_string);
    let path = match accepted.query() {
        Some(q) => format!("{}?{q}", accepted.path()),
        None => accepted.path().to_string(),
    };
    let key: PeerKey = (peer.ip(), user.clone(), path.clone());
    let mut ws = ws;
    // Asterisk sends a frame at once on every connection (`ApplicationRegistered`, or the
    // events it queued while away). Per call, it names the call (`<app>:<channel name>`): a
    // connection Asterisk redials after losing one mid-call names a call already going on.
    // Persistent, its `asterisk_id` tells a reconnecting Asterisk from another one at the
    // same address with the same settings (a second node behind one NAT or proxy), which
    // must not take over the first one's live client.
    let (mut first, call_app, asterisk_id, first_registered) = match first_frame(&s, &mut ws).await
    {
        Ok(first) => {
            let (app, asterisk_id) = names_of(&first);
            let registered = registered_of(&first);
            (vec![first], app, asterisk_id, registered)
        }
        // A persistent peer that sends nothing (not Asterisk's way) is still served, keyed
        // by its address and settings alone.
        Err(e)
            if s.connection_type == ConnectionType::Persistent
                && e.kind == TransportErrorKind::Timeout =>
        {
            (Vec::new(), None, None, None)
        }
        Err(e) => {
            s.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "ari_client", %peer, error = %e, "outbound: no first frame");
            return;
        }
    };
    // Per call, a first frame naming no application is not Asterisk's (it names the call,
    // `<app>:<channel name>`, or for a persistent section the app): no call would ever come
    // on it, and a client would wait for one as long as the peer keeps it open.
    if s.connection_type == ConnectionType::PerCall && call_app.is_none() {
        s.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "ari_client", %peer, "outbound: a per-call connection's first frame names no application (not an ARI frame from Asterisk): closed");
        return;
    }
    // A persistent server that Asterisk dials per call (its section says
    // `per_call_config`): each call's connection is one of its own, never a reconnect of
    // another call's (which it would close: Asterisk would redial that call, for ever).
    let one_call = match (s.connection_type, call_app.as_deref()) {
        (ConnectionType::Persistent, Some(app)) if is_call_app(app) => {
            if !s.warned_per_call.swap(true, Ordering::Relaxed) {
                tracing::warn!(target: "ari_client", %peer, app, "outbound: Asterisk dials this persistent server per call (per_call_config): each call is served as a connection of its own; use ConnectionType::PerCall and next_call()");
            }
            Some(app.to_string())
        }
        _ => None,
    };
    // A per-call server that Asterisk dials once for all calls (its section says
    // `persistent`): the connection carries every call, each one yielded by `next_call`.
    let many_calls = match (s.connection_type, call_app.as_deref()) {
        (ConnectionType::PerCall, Some(app)) if !is_call_app(app) => {
            if !s.warned_persistent.swap(true, Ordering::Relaxed) {
                tracing::warn!(target: "ari_client", %peer, app, "outbound: Asterisk dials this per-call server once for all calls (persistent): every call of the connection is yielded by next_call(); use ConnectionType::Persistent and next()");
            }
            true
        }
        _ => false,
    };
    if s.stopping.load(Ordering::Acquire) {
        // The server stopped during the upgrade: the connection is dropped (closed), a
        // failed attempt for Asterisk.
        s.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ari_client", %peer, error = %shutting_down(), "outbound: connection not served");
        return;
    }
    if s.connection_type == ConnectionType::Persistent {
        let pkey = (key.clone(), asterisk_id.clone(), one_call.clone());
        match reconnect(&s, &pkey, ws, first).await {
            Reconnect::Attached(inner, handover) => {
                s.counters.replaced.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "ari_client", %peer, "outbound: Asterisk reconnected");
                if one_call.is_none() {
                    futures_util::future::poll_fn(|cx| inner.shared.poll_attached(handover, cx))
                        .await;
                    check_startup(&Client { inner }).await;
                }
                return;
            }
            Reconnect::New {
                ws: w,
                first: f,
                open,
            } => {
                if open {
                    let n = s.counters.duplicates.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(target: "ari_client", %peer, asterisk_id = ?asterisk_id, duplicates = n, "outbound: a persistent connection came from an Asterisk with the same address, credentials, path and asterisk_id as one whose connection is open: served as another Asterisk with a client of its own (cloned hosts sharing an entityid? set entityid in asterisk.conf; warned at 1, 2, 4, 8, …, all counted in OutboundStats::duplicates)");
                    }
                }
                ws = w;
                first = f;
                if s.stopping.load(Ordering::Acquire) {
                    // The server stopped meanwhile (up to `SETTLE`): not served, as above.
                    s.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(target: "ari_client", %peer, error = %shutting_down(), "outbound: connection not served");
                    return;
                }
            }
        }
    }
    let existing = match (&s.connection_type, &call_app) {
        (ConnectionType::PerCall, Some(app)) => s
            .queues()
            .per_call
            .get(&(key.clone(), asterisk_id.clone(), app.clone()))
            .and_then(Weak::upgrade),
        _ => None,
    };
    if let Some(inner) = existing.filter(|i| takes_connections(i)) {
        s.counters.resumed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ari_client", %peer, app = ?call_app, "outbound: call resumed on a new connection");
        inner.shared.attach(Box::new(ws), first);
        return;
    }
    let builder = (s.configure)(Client::builder_with_runtime(
        "http://127.0.0.1",
        "asterisk",
        "",
        s.runtime.clone(),
    ));
    // A connection naming one call: Asterisk redials it at once while the call goes on,
    // so a loss not redialled within the call's (shorter) timeout ends it.
    let names_a_call = call_app.as_deref().is_some_and(is_call_app);
    let peer_timeout = match (names_a_call, s.call_peer_timeout, s.peer_timeout) {
        (true, Some(call), Some(peer)) => Some(call.min(peer)),
        (true, Some(call), None) => Some(call),
        (_, _, peer) => peer,
    };
    let client = match builder.build_accepted(peer, peer_timeout) {
        Ok(c) => c,
        Err(e) => {
            s.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "ari_client", %peer, error = %e, "outbound: no client");
            return;
        }
    };
    if names_a_call {
        let sink: Arc<dyn crate::shared::ConnSink> = Arc::new(CallLost {
            lost: s.counters.calls_lost.clone(),
            peer,
            app: call_app.clone().unwrap_or_default(),
        });
        client.inner.shared.add_conn_sink(sink);
    }
    // Subscribed before the socket is attached: the first StasisStart cannot be missed (per
    // call, the call's; persistent, those Asterisk queued while the application was away).
    let incoming = client.incoming();
    // Persistent: the StasisStarts of this connection, to tell the calls already in Stasis
    // that none announced (the application restarted while they were in Stasis).
    let persistent_new = s.connection_type == ConnectionType::Persistent && one_call.is_none();
    let started = persistent_new.then(|| {
        EventStream::new(
            &client.inner.shared,
            ari_proto::session::Filter::all().with_type("StasisStart"),
        )
    });
    // Per call: tells a connection lost for good before its StasisStart.
    let states = (s.connection_type == ConnectionType::PerCall).then(|| client.connection_events());
    let handover = client.inner.shared.attach(Box::new(ws), first);
    // Handed out only once the driver uses the socket: a request made right away goes
    // over it instead of failing as "not connected".
    futures_util::future::poll_fn(|cx| client.inner.shared.poll_attached(handover, cx)).await;
    // Persistent: the calls already in Stasis are looked up while the application has the
    // connection (calls on `incoming` are not held up by the round trips). The listing is
    // sent before the connection is handed out: Asterisk answers requests in order, so it
    // is answered before any request the application makes (an originate's channel, in
    // Stasis by the time of a later answer, is announced by its StasisStart).
    let in_stasis = InStasis::new(started.is_none());
    let lookup = match started {
        Some(started) => {
            let tx = InStasisTx {
                slot: Arc::downgrade(&in_stasis.slot),
            };
            Some(Lookup::start(&client, started, call_app.clone(), tx).await)
        }
        None => None,
    };
    let (connection, incoming) = if s.connection_type == ConnectionType::Persistent {
        let connection = OutboundConnection {
            client: client.clone(),
            incoming,
            in_stasis,
            peer,
            user: user.clone(),
            path: path.clone(),
        };
        (Some(connection), None)
    } else {
        (None, Some(incoming))
    };
    let waker = {
        let mut q = s.queues();
        q.prune();
        q.live.push(Arc::downgrade(&client.inner));
        if lookup.is_some() {
            q.looking_up.insert(Arc::as_ptr(&client.inner) as usize);
        }
        match (s.connection_type, call_app.clone()) {
            (ConnectionType::Persistent, _) => {
                q.persistent
                    .entry((key, asterisk_id, one_call.clone()))
                    .or_default()
                    .push(Arc::downgrade(&client.inner));
            }
            (ConnectionType::PerCall, Some(app)) => {
                q.per_call
                    .insert((key, asterisk_id, app), Arc::downgrade(&client.inner));
            }
            (ConnectionType::PerCall, None) => {}
        }
        match connection {
            Some(connection) => {
                q.connections.push_back(connection);
                q.conn_waker.take()
            }
            None => None,
        }
    };
    if let Some(w) = waker {
        w.wake();
    }
    // Asterisk's startup time is learnt alongside the lookup of the calls in Stasis, not
    // after it: a restart while a slow lookup ran would otherwise go unnoticed.
    let lookup = async {
        if let Some(lookup) = lookup {
            // Until the calls found are noted in Stasis (or the lookup ends otherwise, this
            // task dropped included), a shutdown counts the connection as busy.
            let _looking_up = LookingUp {
                s: &s,
                key: Arc::as_ptr(&client.inner) as usize,
            };
            let (found, unseen) = lookup.finish(&client, &s.counters.adopted).await;
            if found > 0 {
                tracing::info!(target: "ari_client", %peer, calls = found, "outbound: calls already in Stasis (the application restarted) are handed out in OutboundConnection::in_stasis");
            }
            if unseen > 0 {
                tracing::warn!(target: "ari_client", %peer, calls = unseen, "outbound: calls already in Stasis found after OutboundConnection::in_stasis was dropped: nobody controls them");
            }
        }
    };
    let startup = async {
        if s.connection_type == ConnectionType::Persistent && one_call.is_none() {
            // Learn Asterisk's startup time, so that a reconnect tells a restart.
            check_startup(&client).await;
        }
    };
    futures_util::future::join(lookup, startup).await;
    if let (Some(mut incoming), Some(mut states)) = (incoming, states) {
        // The call: its first StasisStart (every one, if the connection carries all calls).
        // A connection naming one call may be Asterisk redialling a call already in Stasis
        // (the application restarted): no StasisStart comes, Asterisk is asked.
        let probe = match (&call_app, many_calls) {
            (Some(app), false) if is_call_app(app) => Some(Probe {
                client: &client,
                app: app.as_str(),
                registered: first_registered.as_ref(),
            }),
            _ => None,
        };
        let mut yielded = false;
        loop {
            let Some((start, channel, events, resumed)) =
                first_call(&s, &mut incoming, &mut states, probe.as_ref()).await
            else {
                if !yielded {
                    s.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(target: "ari_client", %peer, "outbound: per-call connection ended before its StasisStart");
                    client.close().await;
                }
                return;
            };
            yielded = true;
            s.counters.calls.fetch_add(1, Ordering::Relaxed);
            if resumed {
                s.counters.adopted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: "ari_client", %peer, app = ?call_app, "outbound: a call already in Stasis (redialled by Asterisk after the application restarted) is handed out");
            }
            let waker = {
                let mut q = s.queues();
                q.calls.push_back(OutboundCall {
                    client: client.clone(),
                    start,
                    channel,
                    events,
                    peer,
                    resumed,
                });
                q.call_waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
            if !many_calls {
                return;
            }
        }
    }
}

/// Persistent, a new client: its calls already in Stasis are being looked up while this
/// lives ([`Queues::looking_up`]).
struct LookingUp<'a, E: Executor, C: Connector> {
    s: &'a ServerShared<E, C>,
    key: usize,
}

impl<E: Executor, C: Connector> Drop for LookingUp<'_, E, C> {
    fn drop(&mut self) {
        self.s.queues().looking_up.remove(&self.key);
    }
}

/// Per call: counts (and warns about) the call whose connection was lost and not redialled
/// within the client's peer timeout while something of it was still followed.
struct CallLost {
    lost: Arc<AtomicU64>,
    peer: SocketAddr,
    app: String,
}

impl crate::shared::ConnSink for CallLost {
    fn deliver(&self, event: &crate::ConnectionEvent) -> bool {
        match event {
            crate::ConnectionEvent::PeerGone { waited, ended, .. } if *ended > 0 => {
                let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(target: "ari_client", peer = %self.peer, app = %self.app, ?waited, ended, lost, "outbound: a call's per-call connection was lost and Asterisk did not redial it (crashed, stopped, cut off, or gave the channel back to the dialplan): its waits ended with Error::AsteriskGone (counted in OutboundStats::calls_lost)");
                false
            }
            _ => true,
        }
    }

    fn close(&self) {}
}

/// How long a persistent connection from an Asterisk whose previous connection still looks
/// open waits for that one to close before it is taken for another Asterisk with the same
/// identity: Asterisk redials within milliseconds of closing (recorded: 1–5 ms), maybe
/// before its close was read.
const SETTLE: Duration = Duration::from_secs(1);

/// What became of a new persistent connection.
enum Reconnect<R: Runtime, W> {
    /// Handed to the client of the same Asterisk whose connection was lost (handover number).
    Attached(Arc<Inner<R>>, u64),
    /// For a new client; `open`: clients of the same identity have their connection open
    /// (another Asterisk with the same identity).
    New {
        ws: W,
        first: Vec<String>,
        open: bool,
    },
}

/// Persistent: hands `ws` to the client of `key` whose connection was lost (Asterisk
/// reconnecting), picked and handed over under the queues' lock (two connections never take
/// the same client). While every client of `key` has its connection open, waits up to
/// [`SETTLE`] for one to close; when none does, the connection is another Asterisk's.
async fn reconnect<E: Executor, C: Connector, W: Send + 'static>(
    s: &ServerShared<E, C>,
    key: &PersistentKey,
    ws: W,
    first: Vec<String>,
) -> Reconnect<Stack<E, C>, W> {
    let rt = &s.runtime;
    let deadline = rt.now().checked_add(SETTLE).unwrap_or_else(|| rt.now());
    loop {
        {
            let q = s.queues();
            let clients: Vec<Arc<Inner<Stack<E, C>>>> = q
                .persistent
                .get(key)
                .map(|v| v.iter().filter_map(Weak::upgrade).collect())
                .unwrap_or_default();
            let clients: Vec<_> = clients
                .into_iter()
                .filter(|i| takes_connections(i))
                .collect();
            let lost = clients
                .iter()
                .find(|i| !i.shared.attach_pending() && !i.shared.lock().session.is_connected());
            if let Some(inner) = lost {
                let handover = inner.shared.attach(Box::new(ws), first);
                return Reconnect::Attached(inner.clone(), handover);
            }
            let now = rt.now();
            if clients.is_empty() || now >= deadline || s.stopping.load(Ordering::Acquire) {
                let open = !clients.is_empty();
                return Reconnect::New { ws, first, open };
            }
        }
        let step = rt
            .now()
            .checked_add(Duration::from_millis(10))
            .unwrap_or(deadline)
            .min(deadline);
        rt.sleep_until(step).await;
    }
}

/// Whether a client takes the connections Asterisk opens again for it: not closed, and not
/// stopped by the application ([`Client::stop`]: it takes none; Asterisk's next connection
/// is served as a new one).
fn takes_connections<R: Runtime>(inner: &Inner<R>) -> bool {
    !inner.shared.is_closed()
        && inner.shared.lock().session.state() != ari_proto::session::ConnectionState::Stopped
}

/// Whether `app` is the application of a per-call connection: Asterisk names it
/// `<app>:<channel name>`, and a channel name is `<technology>/<resource>` (see
/// [`split_call_application`]).
fn is_call_app(app: &str) -> bool {
    split_call_application(app).is_some()
}

/// Whether the channel whose `Stasis()` names `first` belongs to the application `app`:
/// `app` itself, or the per-call application `<first>:<channel name>` (exactly, whatever
/// `first` holds: `tenant:ivr`, `tenant:sales/ivr`).
fn serves(app: &str, first: &str) -> bool {
    app == first || call_channel_name(app, first).is_some()
}

fn shutting_down() -> TransportError {
    TransportError::new(
        TransportErrorKind::Closed,
        "the outbound server is shutting down",
    )
}

/// What a per-call connection needs to find a call Asterisk redialled without a
/// `StasisStart`: its client, its application (`<app>:<channel name>`), and its first frame
/// when that was an `ApplicationRegistered`.
struct Probe<'a, R: Runtime> {
    client: &'a Client<R>,
    app: &'a str,
    registered: Option<&'a serde_json::Value>,
}

/// A call found: its `StasisStart` (made up from the channel for a call already in Stasis),
/// channel, events, and whether it was already in Stasis.
type Found<R> = (crate::events::StasisStart, Channel<R>, EventStream, bool);

/// Per call: the call's `StasisStart` (Asterisk sends it about 500 ms after the first frame).
/// With a `probe`, when none came within [`OutboundOptions::resume_after`], Asterisk is asked
/// whether the connection's call is already in Stasis (redialled after the application
/// restarted: no `StasisStart` will come), and again after each such delay.
/// `None` if the client closes first (the server's shutdown closes it), or if the connection
/// is lost and Asterisk does not redial within the handshake timeout (it redials at once
/// while the channel is in Stasis: the channel left Stasis, or Asterisk gave up).
async fn first_call<E: Executor, C: Connector>(
    s: &ServerShared<E, C>,
    incoming: &mut Incoming<Stack<E, C>>,
    connection: &mut crate::listen::ConnectionStream,
    probe: Option<&Probe<'_, Stack<E, C>>>,
) -> Option<Found<Stack<E, C>>> {
    type Sleep = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
    type Asking<'a, R> = std::pin::Pin<Box<dyn Future<Output = Option<Found<R>>> + Send + 'a>>;
    let mut gone: Option<Sleep> = None;
    let after = |d: Duration| -> Sleep {
        let now = s.runtime.now();
        Box::pin(s.runtime.sleep_until(now.checked_add(d).unwrap_or(now)))
    };
    let mut ask_at: Option<Sleep> = probe.map(|_| after(s.resume_after));
    let mut asking: Option<Asking<'_, Stack<E, C>>> = None;
    futures_util::future::poll_fn(|cx| {
        if let Poll::Ready(item) = incoming.poll_next_unpin(cx) {
            return Poll::Ready(
                item.and_then(Result::ok)
                    .map(|(start, channel, events)| (start, channel, events, false)),
            );
        }
        while let Poll::Ready(event) = connection.poll_next_unpin(cx) {
            match event {
                Some(Ok(crate::ConnectionEvent::Disconnected { .. })) => {
                    gone = Some(after(s.handshake_timeout));
                }
                Some(Ok(crate::ConnectionEvent::Connected { .. })) => gone = None,
                Some(_) => {}
                None => return Poll::Ready(None),
            }
        }
        if let Some(a) = asking.as_mut() {
            if let Poll::Ready(found) = a.as_mut().poll(cx) {
                asking = None;
                match found {
                    Some(found) => return Poll::Ready(Some(found)),
                    None => ask_at = Some(after(s.resume_after)),
                }
            }
        }
        if let (Some(at), Some(p)) = (ask_at.as_mut(), probe) {
            if at.as_mut().poll(cx).is_ready() {
                ask_at = None;
                let mut a: Asking<'_, Stack<E, C>> = Box::pin(in_stasis(p));
                if let Poll::Ready(found) = a.as_mut().poll(cx) {
                    match found {
                        Some(found) => return Poll::Ready(Some(found)),
                        None => {
                            ask_at = Some(after(s.resume_after));
                            let _ = ask_at.as_mut().map(|at| at.as_mut().poll(cx));
                        }
                    }
                } else {
                    asking = Some(a);
                }
            }
        }
        match gone.as_mut().map(|g| g.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Whether the call of a per-call connection is already in Stasis (Asterisk redialled it
/// after the application restarted): `GET applications` over the connection lists the
/// channel under the connection's application once the channel is in Stasis (not while
/// Stasis() still waits for the connection). The channel is then subscribed to before
/// `GET channels/{id}`, and its `StasisStart` made up from the answer: the application, the
/// channel as it is now, the time and `asterisk_id` of the connection's
/// `ApplicationRegistered`, no `args` (Asterisk does not send them again).
async fn in_stasis<R: Runtime>(p: &Probe<'_, R>) -> Option<Found<R>> {
    let apps = match p
        .client
        .execute(&ari_proto::ops::applications::List::new())
        .await
    {
        Ok(apps) => apps,
        Err(e) => {
            tracing::debug!(target: "ari_client", app = p.app, error = %e, "outbound: could not ask whether the call is in Stasis");
            return None;
        }
    };
    // The application's channels are also those it controls besides its call (a channel
    // it originated into itself, both halves of a Local one): the call is the channel the
    // connection names (`<app>:<channel name>`, with `<app>` its `Stasis()` application:
    // split where the channel's name begins, as the first split of an application holding
    // `:<technology>/` is not its own), in Stasis.
    split_call_application(p.app)?;
    let ids = apps.into_iter().find(|a| a.name == p.app)?.channel_ids;
    let apps = [p.app.to_string()];
    for id in ids.into_iter().filter(|id| !id.starts_with("__AST_")) {
        let channel = p.client.channel(id.as_str());
        let events = channel.events();
        let snapshot = match p
            .client
            .execute(&ari_proto::ops::channels::Get::new(id.as_str()))
            .await
        {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::debug!(target: "ari_client", app = p.app, error = %e, "outbound: a channel of the call's application could not be read");
                continue;
            }
        };
        // Split where the channel's own name begins: exact whatever `<app>` holds.
        let names_it = p
            .app
            .strip_suffix(snapshot.name.as_str())
            .and_then(|base| base.strip_suffix(':'))
            .is_some_and(|base| {
                let first = stasis_app_of(&snapshot);
                !base.is_empty() && (first == base || first == p.app)
            });
        if !names_it || !in_stasis_of(&snapshot, &apps) {
            continue;
        }
        let start = made_up_start(p.app, &snapshot, p.registered)?;
        return Some((start, channel, events, true));
    }
    None
}

/// A `StasisStart` for a call already in Stasis, from its channel as it is now: the
/// application, no `args`, the time and `asterisk_id` of `registered` (the connection's
/// `ApplicationRegistered`) or else the channel's creation time.
fn made_up_start(
    app: &str,
    snapshot: &ari_proto::models::Channel,
    registered: Option<&serde_json::Value>,
) -> Option<crate::events::StasisStart> {
    let field = |name: &str| registered.and_then(|r| r.get(name)).cloned();
    let mut start = serde_json::json!({
        "type": "StasisStart",
        "application": app,
        "args": [],
        "channel": serde_json::to_value(snapshot).ok()?,
    });
    start["timestamp"] = field("timestamp").unwrap_or_else(|| {
        serde_json::to_value(snapshot.creationtime).unwrap_or(serde_json::Value::Null)
    });
    if let Some(id) = field("asterisk_id") {
        start["asterisk_id"] = id;
    }
    match serde_json::from_value(start) {
        Ok(start) => Some(start),
        Err(e) => {
            tracing::debug!(target: "ari_client", app, error = %e, "outbound: a call in Stasis could not be described");
            None
        }
    }
}

/// How many `GET channels/{id}` the lookup of the calls already in Stasis has pending at
/// most.
const READ_AT_ONCE: usize = 64;

/// Persistent, a new client: the lookup of the channels in Stasis of the connection's
/// applications (its first frame's, and those it registered) that no `StasisStart` on the
/// connection announced, for [`OutboundConnection::in_stasis`].
struct Lookup<R: Runtime> {
    started: EventStream,
    first_app: Option<String>,
    tx: InStasisTx<R>,
    listing: ListingResult,
}

/// What `GET applications` answered, or the request still going (sent already).
type ListingResult = Either<
    Result<Vec<ari_proto::models::Application>, Error>,
    std::pin::Pin<
        Box<dyn Future<Output = Result<Vec<ari_proto::models::Application>, Error>> + Send>,
    >,
>;

impl<R: Runtime> Lookup<R> {
    /// Sends `GET applications` (polled once: the request is on its way when this returns).
    async fn start(
        client: &Client<R>,
        started: EventStream,
        first_app: Option<String>,
        tx: InStasisTx<R>,
    ) -> Self {
        let c = client.clone();
        let mut going: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(async move { c.execute(&ari_proto::ops::applications::List::new()).await });
        let mut answered = None;
        futures_util::future::poll_fn(|cx| {
            if let Poll::Ready(r) = going.as_mut().poll(cx) {
                answered = Some(r);
            }
            Poll::Ready(())
        })
        .await;
        let listing = match answered {
            Some(r) => Either::Left(r),
            None => Either::Right(going),
        };
        Lookup {
            started,
            first_app,
            tx,
            listing,
        }
    }

    /// Waits for the listing (answered after the events Asterisk queued, so `started` holds
    /// every StasisStart among them by then), reads the channels not announced, all at
    /// once, and hands out those in Stasis, counted in `adopted`. Returns how many were
    /// handed out, and how many were found after the application dropped the stream.
    async fn finish(self, client: &Client<R>, adopted: &AtomicU64) -> (usize, usize) {
        let Lookup {
            mut started,
            first_app,
            tx,
            listing,
        } = self;
        let apps = match listing {
            Either::Left(r) => r,
            Either::Right(going) => going.await,
        };
        let apps = match apps {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(target: "ari_client", error = %e, "outbound: could not ask Asterisk for the calls already in Stasis (those of a previous run of the application stay unseen)");
                // The subscription goes before the stream ends (whoever waits for the end
                // finds the client's subscriptions as they stay).
                drop(started);
                drop(tx);
                return (0, 0);
            }
        };
        if tx.dropped() {
            drop(started);
            drop(tx);
            return (0, 0);
        }
        let mut names: Vec<String> = client.inner.shared.lock().session.applications().to_vec();
        names.extend(first_app);
        let mut seen = std::collections::HashSet::new();
        let mut drain = |seen: &mut std::collections::HashSet<String>| {
            while let Some(Some(Ok(event))) = futures_util::FutureExt::now_or_never(started.next())
            {
                if let crate::Event::StasisStart(start) = event {
                    seen.insert(start.channel.id.to_string());
                }
            }
        };
        drain(&mut seen);
        let mut wanted: Vec<(String, String)> = Vec::new();
        let mut asked = std::collections::HashSet::new();
        let mut subscribed_to_all = false;
        for app in apps.iter().filter(|a| names.iter().any(|n| *n == a.name)) {
            for id in &app.channel_ids {
                // `__AST_CHANNEL_ALL_TOPIC`: subscribed to every channel (`subscribe_all`);
                // Asterisk then lists no channel of the application one by one.
                if id.starts_with("__AST_") {
                    subscribed_to_all |= id.starts_with("__AST_CHANNEL_ALL");
                    continue;
                }
                if !seen.contains(id.as_str()) && asked.insert(id.to_string()) {
                    wanted.push((app.name.to_string(), id.to_string()));
                }
            }
        }
        if subscribed_to_all {
            // The channels in Stasis of the applications are among all of Asterisk's
            // (read again below, once subscribed to, as the others).
            match client.execute(&ari_proto::ops::channels::List::new()).await {
                Ok(channels) => {
                    for snapshot in channels {
                        let id = snapshot.id.to_string();
                        if seen.contains(&id)
                            || asked.contains(&id)
                            || !in_stasis_of(&snapshot, &names)
                        {
                            continue;
                        }
                        let first = stasis_app_of(&snapshot);
                        let Some(app) = names.iter().find(|n| serves(n, first)) else {
                            continue;
                        };
                        asked.insert(id.clone());
                        wanted.push((app.clone(), id));
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "ari_client", error = %e, "outbound: could not list Asterisk's channels for the calls already in Stasis of an application subscribed to all (those of a previous run of the application stay unseen)");
                }
            }
        }
        // Many channels asked at once (Asterisk answers them in order): a round trip per
        // READ_AT_ONCE calls in Stasis, not per call, and well under the requests a
        // connection may have pending (the application's own go on meanwhile).
        let reads = wanted.into_iter().map(|(app, id)| {
            let channel = client.channel(id.as_str());
            let events = channel.events();
            let client = client.clone();
            let read: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
                let snapshot = client
                    .execute(&ari_proto::ops::channels::Get::new(id.as_str()))
                    .await;
                (app, id, channel, events, snapshot)
            });
            read
        });
        let read: Vec<_> = futures_util::stream::iter(reads)
            .buffered(READ_AT_ONCE)
            .collect()
            .await;
        // A StasisStart that came meanwhile announces its call on `incoming`.
        drain(&mut seen);
        // Unsubscribed before the stream ends: whoever waits for its end finds the client's
        // subscriptions as they stay.
        drop(started);
        let mut found = Vec::new();
        for (app, id, channel, events, snapshot) in read {
            // Gone meanwhile.
            let Ok(snapshot) = snapshot else { continue };
            // An application's channels are also those it only watches: the other half of
            // a Local channel it originated (in the dialplan), a channel ringing before it
            // enters Stasis, one it subscribed to. Only a channel in Stasis of one of the
            // connection's applications is a call of the application.
            if seen.contains(id.as_str())
                || !(in_stasis_of(&snapshot, &names)
                    || moved_in(client, &apps, &snapshot, &names).await)
            {
                tracing::debug!(target: "ari_client", channel = %id, app = %app, "outbound: a channel of the application not in its Stasis is not handed out");
                continue;
            }
            if let Some(start) = made_up_start(&app, &snapshot, None) {
                found.push((start, channel, events));
            }
        }
        // Calls of the connection from now on: a shutdown waits for them as for those a
        // StasisStart announced.
        client.inner.shared.command(|s| {
            for (start, _, _) in &found {
                let id = start.channel.id.as_str();
                if !s.has_ended(ari_proto::events::ResourceKind::Channel, id) {
                    s.note_in_stasis(id);
                }
            }
        });
        // Counted before they are handed out: whoever takes them sees them counted.
        let n = found.len();
        adopted.fetch_add(n as u64, Ordering::Relaxed);
        let unseen = tx.finish(found);
        adopted.fetch_sub(unseen as u64, Ordering::Relaxed);
        (n - unseen, unseen)
    }
}

/// Whether a channel listed by one of the connection's applications `names`, running
/// `Stasis()` for another application, was moved into the connection's application
/// (`POST channels/{id}/move`, or a `move` by the other application): Asterisk moves it
/// inside the same `Stasis()`, so its `dialplan.app_data` still names the first application.
/// It is in that one's Stasis only if that application lists it too (`listing`, the answer of
/// `GET applications`, or else `GET applications/{name}`; not registered: the channel
/// cannot be in its Stasis). A channel the connection's application only watches while it
/// is in another's Stasis (subscribed to it) is listed by both, and not taken.
async fn moved_in<R: Runtime>(
    client: &Client<R>,
    listing: &[ari_proto::models::Application],
    snapshot: &ari_proto::models::Channel,
    names: &[String],
) -> bool {
    if !snapshot.dialplan.app_name.eq_ignore_ascii_case("Stasis") {
        return false;
    }
    let first = stasis_app_of(snapshot);
    if first.is_empty() || names.iter().any(|n| n == first) {
        return false;
    }
    let id = snapshot.id.as_str();
    let lists = |a: &ari_proto::models::Application| a.channel_ids.iter().any(|c| c == id);
    if let Some(other) = listing.iter().find(|a| a.name == first) {
        return !lists(other);
    }
    match client
        .execute(&ari_proto::ops::applications::Get::new(first))
        .await
    {
        Ok(other) => !lists(&other),
        Err(e) if e.status() == Some(404) => true,
        Err(e) => {
            tracing::debug!(target: "ari_client", channel = id, app = first, error = %e, "outbound: could not tell whether a channel was moved into the application");
            false
        }
    }
}

/// Whether the channel runs `Stasis()` for one of `apps` (its dialplan application is
/// `Stasis`, and the first argument of it names the application; recorded: `app_data`
/// `obapp,a1,a2` for an originate into `obapp` with arguments, `obpc` for a per-call
/// `obpc:<channel>`). A channel moved to another application keeps its first `Stasis()`
/// argument: it is taken only when that application is one of `apps`.
fn in_stasis_of(snapshot: &ari_proto::models::Channel, apps: &[String]) -> bool {
    if !snapshot.dialplan.app_name.eq_ignore_ascii_case("Stasis") {
        return false;
    }
    let first = stasis_app_of(snapshot);
    apps.iter().any(|a| serves(a, first))
}

/// The first argument of the channel's dialplan application (for `Stasis()`, the
/// application).
fn stasis_app_of(snapshot: &ari_proto::models::Channel) -> &str {
    snapshot
        .dialplan
        .app_data
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
}

/// Persistent: asks Asterisk's startup time over the connection (`GET
/// asterisk/info?only=status`). The first answer is remembered; a different one after a
/// reconnect means Asterisk restarted while the connection was down (same address,
/// credentials and `asterisk_id`): every channel, bridge, playback and recording of its
/// previous run is gone and no event will say so, so their subscriptions made before this
/// connection end ([`Error::Ended`] for their waits) instead of waiting for ever.
/// Attempts at asking a reconnected Asterisk's startup time, and the pause between them.
const STARTUP_ATTEMPTS: u32 = 3;
const STARTUP_RETRY: Duration = Duration::from_millis(100);

async fn check_startup<R: Runtime>(client: &Client<R>) {
    let op =
        ari_proto::ops::asterisk::GetInfo::new().only([ari_proto::models::InfoSection::Status]);
    // Asked again when the answer is lost with a connection (a failure of the socket this
    // one replaced can reach a request sent at once): a restart must not go unnoticed.
    let mut attempt = 0;
    let startup = loop {
        attempt += 1;
        match client.execute(&op).await {
            Ok(info) => match info.status {
                Some(status) => break status.startup_time,
                None => return,
            },
            Err(Error::Transport(e))
                if e.kind == TransportErrorKind::Closed && attempt < STARTUP_ATTEMPTS =>
            {
                tracing::debug!(target: "ari_client", error = %e, attempt, "outbound: asking Asterisk's startup time again");
                let now = client.inner.runtime.now();
                let at = now.checked_add(STARTUP_RETRY).unwrap_or(now);
                client.inner.runtime.sleep_until(at).await;
            }
            Err(e) => {
                tracing::warn!(target: "ari_client", error = %e, "outbound: could not ask Asterisk's startup time (a restart of Asterisk would go unnoticed)");
                return;
            }
        }
    };
    let shared = &client.inner.shared;
    let before = shared
        .startup_time
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(startup);
    if before.is_some_and(|b| b != startup) {
        let ended = shared.command(|s| s.handle_asterisk_restarted());
        tracing::warn!(
            target: "ari_client",
            ended,
            "outbound: Asterisk restarted while its connection was down: the subscriptions of \
             its previous channels, bridges, playbacks and recordings ended"
        );
    }
}

/// The first text frame of a connection (Asterisk sends `ApplicationRegistered`, or what it
/// queued, at once), within the handshake timeout. Pings and pongs before it are skipped.
async fn first_frame<E: Executor, C: Connector>(
    s: &ServerShared<E, C>,
    ws: &mut WebSocket<MaybeTlsStream<C::Stream>>,
) -> Result<String, TransportError> {
    let read = std::pin::pin!(async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => return Ok(text.to_string()),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Binary(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => {
                    return Err(TransportError::new(
                        TransportErrorKind::Closed,
                        "closed before its first frame",
                    ))
                }
                Some(Err(e)) => return Err(e),
            }
        }
    });
    let deadline = s
        .runtime
        .now()
        .checked_add(s.handshake_timeout)
        .unwrap_or_else(|| s.runtime.now());
    let timeout = std::pin::pin!(s.runtime.sleep_until(deadline));
    match select(read, timeout).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(TransportError::new(
            TransportErrorKind::Timeout,
            format!("no first frame within {:?}", s.handshake_timeout),
        )),
    }
}

/// The first frame, when it is an `ApplicationRegistered` (a per-call connection's, naming
/// its call).
fn registered_of(frame: &str) -> Option<serde_json::Value> {
    let value = serde_json::from_str::<serde_json::Value>(frame).ok()?;
    (value.get("type")?.as_str()? == "ApplicationRegistered").then_some(value)
}

/// The `application` and the `asterisk_id` of a frame (every frame Asterisk sends on an ARI
/// socket names both).
fn names_of(frame: &str) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(frame) else {
        return (None, None);
    };
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    (field("application"), field("asterisk_id"))
}
