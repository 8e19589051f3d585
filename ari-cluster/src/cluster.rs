//! The client side: the typed [`ari_client::Client`] with NATS as its transport.
//!
//! [`NatsRuntime`] implements [`Runtime`](ari_client::Runtime): tokio for tasks and time, and instead of HTTP and
//! a WebSocket, NATS. Its `http` turns each request into Asterisk's `RESTRequest` envelope and
//! sends it to the node owning the resource (learned from events and responses) or, for
//! creations and lists, to any node (the proxies' queue group); its events connection takes
//! new calls from the application's queue group and receives the events of the resources this
//! instance owns. Every operation of the generated API works, with no per-operation code.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use ari_client::{
    Executor, Transport, TransportError, TransportErrorKind, TransportOptions, WsMessage,
};
use base64::Engine as _;
use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use ari_proto::session::EndReason;

use crate::nodes::NodeTable;
use crate::wire::{self, Announce, RestRequest, RestResponse, Subjects};

/// The typed ARI client over NATS.
pub type Client = ari_client::Client<NatsRuntime>;
/// A channel of a [`Client`] over NATS.
pub type Channel = ari_client::Channel<NatsRuntime>;
/// A bridge of a [`Client`] over NATS.
pub type Bridge = ari_client::Bridge<NatsRuntime>;

/// The base URL the client over NATS is built with (never contacted: NATS carries
/// everything).
const PLACEHOLDER_URL: &str = "http://ari-cluster.invalid";

/// A live or lost node, as its announcements tell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node id (Asterisk's entity id).
    pub id: String,
    /// The applications its proxy serves.
    pub apps: Vec<String>,
    /// Asterisk's version.
    pub asterisk_version: String,
    /// Whether the proxy's events connection to Asterisk is up.
    pub connected: bool,
}

/// A node coming or going, from [`Cluster::node_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A node announced itself for the first time, or again after being down.
    Up(NodeInfo),
    /// A live node's proxy lost (`connected: false`) or regained its events connection to
    /// Asterisk. While lost, the node's events do not arrive; if Asterisk restarted
    /// meanwhile, its calls are gone without an event (waits on them do not end by
    /// themselves).
    Asterisk {
        /// The node id.
        id: String,
        /// Whether the proxy's events connection to Asterisk is up now.
        connected: bool,
    },
    /// A node's Asterisk restarted (its proxy read a new `startup_time` when its events
    /// connection came back, or announced one): every channel, bridge, playback and
    /// recording it had is gone without an event. The waits, streams and listeners of this
    /// instance's clients on those resources have ended (`Error::Ended`); the other nodes'
    /// are untouched.
    AsteriskRestarted {
        /// The node id.
        id: String,
        /// Resources of the node this instance knew, now ended.
        resources: usize,
    },
    /// A node stopped (its proxy said so) or stopped announcing (three intervals, at least
    /// [`ClusterBuilder::node_silence`]).
    Down {
        /// The node id.
        id: String,
        /// Why it is considered down.
        reason: String,
    },
    /// A node stayed down for [`ClusterBuilder::node_lost_after`]: its proxy did not come
    /// back, so the events of its resources will not come. The waits, streams and listeners
    /// of this instance's clients on the resources it knew there have ended
    /// ([`ari_client::Error::AsteriskGone`]); the other nodes' are untouched. Reported once
    /// per time down.
    Lost {
        /// The node id.
        id: String,
        /// Resources of the node this instance knew, now ended.
        resources: usize,
    },
}

/// Why an operation failed at once without being sent: the node that has its resource is
/// down (or, for a request in flight to it, why it failed without an answer: its proxy went
/// silent). It is the [`source`](std::error::Error::source) of the
/// [`ari_client::TransportError`] the operation returns (kind `Connect`: nothing was sent;
/// `Closed`: sent, and it may have run);
/// [`NodeDown::find`] gets it from an [`ari_client::Error`].
///
/// ```no_run
/// # async fn demo(client: ari_cluster::Client) {
/// use ari_cluster::NodeDown;
/// if let Err(e) = client.channels().get("1712345678.42").await {
///     match NodeDown::find(&e) {
///         Some(down) => println!("{} is down since {:?}: {}", down.node, down.since, down.reason),
///         None => println!("failed: {e}"),
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeDown {
    /// The node (Asterisk's entity id).
    pub node: String,
    /// When this instance saw it go down (its proxy's goodbye, the end of its announcements'
    /// silence limit, or the request nobody answered).
    pub since: SystemTime,
    /// Why it is considered down.
    pub reason: String,
}

impl fmt::Display for NodeDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ago = SystemTime::now()
            .duration_since(self.since)
            .unwrap_or_default();
        write!(
            f,
            "node {} is down ({}) since {} ms ago; its resources are unreachable until its proxy announces it again",
            self.node,
            self.reason,
            ago.as_millis()
        )
    }
}

impl std::error::Error for NodeDown {}

impl NodeDown {
    /// The [`NodeDown`] an error of a [`Client`] over NATS was caused by, if any (found in
    /// its [`source`](std::error::Error::source) chain).
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a NodeDown> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(down) = e.downcast_ref::<NodeDown>() {
                return Some(down);
            }
            cur = e.source();
        }
        None
    }

    /// This error as the transport error an operation returns.
    fn into_transport(self) -> TransportError {
        TransportError::new(TransportErrorKind::Connect, self.to_string()).with_source(self)
    }
}

/// Why [`Cluster::connect`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClusterError {
    /// NATS could not be reached.
    Nats(async_nats::ConnectError),
    /// A NATS subscription failed.
    Subscribe(async_nats::SubscribeError),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Nats(e) => write!(f, "cannot connect to NATS: {e}"),
            ClusterError::Subscribe(e) => write!(f, "NATS subscription failed: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Nats(e) => Some(e),
            ClusterError::Subscribe(e) => Some(e),
        }
    }
}

/// Counters of this instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// New calls this instance took from its application's queue group.
    pub calls_taken: u64,
    /// New calls offered to this instance after [`Cluster::stop_taking_calls`] (already on
    /// their way to it) and declined ([`wire::DECLINED_HEADER`]): their proxy offers them to
    /// another instance at once.
    pub claims_declined: u64,
    /// Event frames received (owned and unowned).
    pub events: u64,
    /// Frames received after the events connection was closed (not delivered).
    pub events_dropped: u64,
    /// Event messages dropped because they did not decode: a batch that does not parse
    /// (dropped whole: its frames cannot be told apart) or a frame that is not UTF-8.
    pub malformed: u64,
    /// Slow-consumer reports of NATS: messages dropped because this instance read them
    /// slower than they came, beyond its subscriptions' buffers.
    pub slow_consumer: u64,
    /// Event messages a proxy published for this instance that never arrived: a gap in the
    /// proxy's numbering ([`wire::SEQ_HEADER`]) of its messages on a subject, seen at the
    /// next message on it. Published while NATS was down or this instance was resubscribing
    /// after a NATS restart, or dropped by NATS, or an event the proxy did not publish
    /// because it is larger than the NATS server's `max_payload`
    /// ([`ProxyStats::events_too_large`](crate::ProxyStats::events_too_large)). Each may have
    /// carried many frames; waits on the events they carried do not end by themselves.
    pub event_messages_lost: u64,
    /// Resources ended because the Asterisk of their node restarted
    /// ([`NodeEvent::AsteriskRestarted`]).
    pub resources_gone: u64,
    /// Nodes lost: down for longer than [`ClusterBuilder::node_lost_after`]
    /// ([`NodeEvent::Lost`]).
    pub nodes_lost: u64,
    /// Resources ended because their node was lost ([`NodeEvent::Lost`]).
    pub resources_lost: u64,
    /// REST requests sent over NATS.
    pub rest_requests: u64,
    /// REST requests refused at once because their node is down.
    pub rest_node_down: u64,
    /// REST requests in flight to a node whose proxy went silent (down without a goodbye):
    /// failed then with a [`NodeDown`] error (kind `Closed`: sent, and maybe run) instead of
    /// waiting for their timeout.
    pub rest_lost_in_flight: u64,
    /// Creations under ids the application chose (an originate or `channels/create` with a
    /// channel id, a bridge, a playback, a recording…) that no proxy is known to have run: not
    /// sent (no proxy serves the subject, or their node is down), or sent to any node and
    /// neither answered nor announced by a proxy ([`wire::CREATING_HEADER`]) within
    /// [`ClusterBuilder::creation_pickup_timeout`] of their failure. The waits, streams and
    /// listeners on the ids they named (those whose node is still unknown) have ended
    /// ([`ari_client::Error::Ended`]): no event would have ended them.
    pub creations_not_taken: u64,
    /// Resources whose node is known.
    pub known_resources: u64,
    /// Resources not recorded because the table was full.
    pub resources_refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls_taken: AtomicU64,
    claims_declined: AtomicU64,
    events: AtomicU64,
    events_dropped: AtomicU64,
    malformed: AtomicU64,
    slow_consumer: Arc<AtomicU64>,
    event_messages_lost: AtomicU64,
    resources_gone: AtomicU64,
    nodes_lost: AtomicU64,
    resources_lost: AtomicU64,
    rest_requests: AtomicU64,
    rest_node_down: AtomicU64,
    rest_lost_in_flight: AtomicU64,
    creations_not_taken: AtomicU64,
    resources_refused: AtomicU64,
}

/// [`ClusterBuilder::creation_pickup_timeout`] by default.
const DEFAULT_PICKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node stays down before it is lost, by default.
const DEFAULT_NODE_LOST_AFTER: Duration = Duration::from_secs(60);
/// Largest resource → node table.
const MAX_RESOURCES: usize = 1_000_000;
/// Event messages each subscription of an instance buffers by default.
const DEFAULT_EVENTS_BUFFER: usize = 262_144;
/// Frames queued between NATS and the client's session.
const EVENTS_QUEUE: usize = 65_536;

struct Shared {
    nats: async_nats::Client,
    subjects: Subjects,
    instance: String,
    nodes: Mutex<NodeTable>,
    /// Resource id (`c:ID`) → node, and whether this instance owns it (its events came on
    /// this instance's subject, or this instance created it): a proxy restarting asks
    /// ([`Subjects::owned`]).
    resources: Mutex<HashMap<String, (Arc<str>, bool)>>,
    node_tx: broadcast::Sender<NodeEvent>,
    nats_up: watch::Receiver<bool>,
    /// The applications this instance's events connection serves (its creations and lists
    /// go to the proxies of the first, or of the one a request names).
    apps: Mutex<Vec<String>>,
    /// Whether this instance takes new calls ([`Cluster::stop_taking_calls`]).
    taking: watch::Sender<bool>,
    counters: Counters,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The last [`wire::SEQ_HEADER`] seen per proxy and subject.
    seqs: Mutex<HashMap<String, u64>>,
    /// Each node's Asterisk `startup_time`, as last announced or told.
    startups: Mutex<HashMap<String, String>>,
    /// The clients made from this cluster, whose waits end when a node's Asterisk restarts.
    clients: Mutex<Vec<ari_client::WeakClient<NatsRuntime>>>,
    /// [`ClusterBuilder::creation_pickup_timeout`].
    pickup_timeout: Duration,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn node_of(&self, key: &str) -> Option<Arc<str>> {
        lock(&self.resources).get(key).map(|(n, _)| n.clone())
    }

    fn learn(&self, key: String, node: &Arc<str>, owned: bool) {
        let mut map = lock(&self.resources);
        Shared::learn_in(&mut map, &self.counters, key, node, owned);
    }

    fn learn_in(
        map: &mut HashMap<String, (Arc<str>, bool)>,
        counters: &Counters,
        key: String,
        node: &Arc<str>,
        owned: bool,
    ) {
        if map.len() >= MAX_RESOURCES && !map.contains_key(&key) {
            counters.resources_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        map.insert(key, (node.clone(), owned));
    }

    /// The resources this instance owns on `node` (the [`wire::RESOURCES_HEADER`] format).
    fn owned_on(&self, node: &str) -> String {
        let map = lock(&self.resources);
        let mut out = String::new();
        for (key, (n, owned)) in map.iter() {
            if *owned && &**n == node {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(key);
            }
        }
        out
    }

    /// Records what one frame's resource lists say (the [`wire::RESOURCES_HEADER`] format):
    /// its resources live on `node` (`node_arc` caches it as an `Arc`); the final ones end.
    fn learn_refs_in(
        map: &mut HashMap<String, (Arc<str>, bool)>,
        counters: &Counters,
        node: &str,
        node_arc: &mut Option<Arc<str>>,
        resources: &str,
        finals: &str,
        own: bool,
    ) {
        // Most events concern resources already known on this node: a lookup, no
        // allocation.
        for key in resources.split(' ').filter(|k| !k.is_empty()) {
            match map.get_mut(key) {
                Some((n, owned)) if &**n == node => *owned |= own,
                _ => {
                    let node = node_arc.get_or_insert_with(|| Arc::from(node)).clone();
                    Shared::learn_in(map, counters, key.to_string(), &node, own);
                }
            }
        }
        for key in finals.split(' ').filter(|k| !k.is_empty()) {
            map.remove(key);
        }
    }

    /// Records what a single event's headers say.
    fn learn_headers(&self, headers: Option<&async_nats::HeaderMap>, own: bool) {
        let Some(h) = headers else { return };
        let Some(node) = h.get(wire::NODE_HEADER) else {
            return;
        };
        let text = |name| h.get(name).map(|v| v.as_str()).unwrap_or("");
        Shared::learn_refs_in(
            &mut lock(&self.resources),
            &self.counters,
            node.as_str(),
            &mut None,
            text(wire::RESOURCES_HEADER),
            text(wire::FINAL_HEADER),
            own,
        );
    }

    /// Records what a batch's records say (one lock for the batch).
    fn learn_batch(&self, node: &str, records: &[wire::BatchRecord<'_>], own: bool) {
        let mut map = lock(&self.resources);
        let mut node_arc = None;
        for r in records {
            Shared::learn_refs_in(
                &mut map,
                &self.counters,
                node,
                &mut node_arc,
                r.resources,
                r.finals,
                own,
            );
        }
    }

    /// Counts the messages missing before this one on its subject from its proxy.
    fn check_seq(&self, msg: &async_nats::Message) {
        let Some(h) = msg.headers.as_ref() else {
            return;
        };
        let (Some(node), Some(seq)) = (h.get(wire::NODE_HEADER), h.get(wire::SEQ_HEADER)) else {
            return;
        };
        let Ok(seq) = seq.as_str().parse::<u64>() else {
            return;
        };
        let key = format!("{} {}", node.as_str(), msg.subject.as_str());
        let mut seqs = lock(&self.seqs);
        let own = msg.subject.as_str() == self.subjects.instance(&self.instance);
        let missing = missing_before(seqs.get(&key).copied(), seq, own);
        seqs.insert(key, seq);
        drop(seqs);
        if missing > 0 {
            self.counters
                .event_messages_lost
                .fetch_add(missing, Ordering::Relaxed);
            tracing::warn!(node = %node, subject = %msg.subject, missing, "event messages lost");
        }
    }

    /// Node `node`'s Asterisk has the startup time `startup`: when it is another one than
    /// known (`known_only`: and one was known), Asterisk restarted and the resources on that
    /// node are gone: those this instance maps to the node and those `listed` (the
    /// [`wire::RESOURCES_HEADER`] format) end in every client of this cluster.
    fn asterisk_startup(&self, node: &str, startup: &str, listed: &str, known_only: bool) {
        if startup.is_empty() {
            return;
        }
        {
            let mut startups = lock(&self.startups);
            match startups.get(node) {
                // The same run, or an announcement older than the restart's message (a
                // restart's startup time is later; one Asterisk writes them alike).
                Some(s) if s.as_str() >= startup => return,
                None if known_only => {
                    startups.insert(node.to_string(), startup.to_string());
                    return;
                }
                _ => {}
            }
            startups.insert(node.to_string(), startup.to_string());
        }
        let gone = self.end_node_resources(node, listed, EndReason::ResourceEnded);
        self.counters
            .resources_gone
            .fetch_add(gone as u64, Ordering::Relaxed);
        tracing::warn!(
            node,
            startup,
            resources = gone,
            "the node's Asterisk restarted: its resources are gone"
        );
        let _ = self.node_tx.send(NodeEvent::AsteriskRestarted {
            id: node.to_string(),
            resources: gone,
        });
    }

    /// Node `node` was down for longer than the lost limit: the resources this instance
    /// knows there end ([`EndReason::PeerGone`]: their waits fail with
    /// [`ari_client::Error::AsteriskGone`]).
    fn node_lost(&self, node: &str) {
        let gone = self.end_node_resources(node, "", EndReason::PeerGone);
        self.counters.nodes_lost.fetch_add(1, Ordering::Relaxed);
        self.counters
            .resources_lost
            .fetch_add(gone as u64, Ordering::Relaxed);
        tracing::warn!(
            node,
            resources = gone,
            "node lost: its proxy stayed down past the lost limit; its resources' waits end"
        );
        let _ = self.node_tx.send(NodeEvent::Lost {
            id: node.to_string(),
            resources: gone,
        });
    }

    /// Ends, in every client of this cluster, the resources this instance maps to `node` and
    /// those `listed` (the [`wire::RESOURCES_HEADER`] format), forgetting them; how many.
    fn end_node_resources(&self, node: &str, listed: &str, reason: EndReason) -> usize {
        let mut keys: Vec<String> = listed
            .split(' ')
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect();
        {
            let mut map = lock(&self.resources);
            map.retain(|key, (n, _)| {
                if &**n == node {
                    keys.push(key.clone());
                    false
                } else {
                    true
                }
            });
        }
        self.end_keys(keys, reason)
    }

    /// Ends, in every client of this cluster, the resources `keys` (`c:ID`); how many.
    fn end_keys(&self, mut keys: Vec<String>, reason: EndReason) -> usize {
        keys.sort_unstable();
        keys.dedup();
        let gone: Vec<(ari_proto::events::ResourceKind, &str)> = keys
            .iter()
            .filter_map(|k| {
                let (l, id) = k.split_once(':')?;
                Some((wire::kind_of_letter(l)?, id))
            })
            .collect();
        let clients: Vec<Client> = {
            let mut clients = lock(&self.clients);
            clients.retain(|c| c.upgrade().is_some());
            clients.iter().filter_map(|c| c.upgrade()).collect()
        };
        let mut ended = 0;
        for c in &clients {
            ended += c.end_resources(gone.iter().copied(), reason);
        }
        tracing::debug!(subscriptions = ended, "subscriptions ended");
        gone.len()
    }

    /// A creation naming `keys` was not run by any proxy as far as this instance knows
    /// (`sent`: it was sent to any node and neither answered nor announced; else it was not
    /// sent): the waits on those of its ids whose node is unknown (on all of them when it was
    /// not sent) end, as for a creation Asterisk refused.
    fn not_taken(&self, keys: &[String], sent: bool) {
        let unplaced: Vec<String> = {
            let mut map = lock(&self.resources);
            let unplaced: Vec<String> = keys
                .iter()
                .filter(|k| !sent || !map.contains_key(k.as_str()))
                .cloned()
                .collect();
            for k in &unplaced {
                map.remove(k);
            }
            unplaced
        };
        if unplaced.is_empty() {
            return;
        }
        self.counters
            .creations_not_taken
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(resources = ?unplaced, sent, "a creation no proxy ran: the waits on its ids end");
        self.end_keys(unplaced, EndReason::NotCreated);
    }

    /// The application whose proxies take a request sent to any node: the one it names
    /// (`app=`: an originate's Stasis application), else the first this instance serves;
    /// `None` (every proxy) for an instance that serves none.
    fn app_of(&self, uri: &str) -> Option<String> {
        let named = uri.split_once('?').and_then(|(_, q)| {
            q.split('&').find_map(|kv| {
                let v = kv.strip_prefix("app=")?;
                let v = percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned();
                // `app=a,b` (a list) names no single one.
                (!v.is_empty() && !v.contains(',')).then_some(v)
            })
        });
        named.or_else(|| lock(&self.apps).first().cloned())
    }

    /// Keeps `client` to end its waits when a node's Asterisk restarts.
    fn track(&self, client: &Client) {
        let mut clients = lock(&self.clients);
        clients.retain(|c| c.upgrade().is_some());
        clients.push(client.downgrade());
    }

    /// The nodes up now, by id.
    fn up_nodes(&self) -> Vec<Arc<str>> {
        lock(&self.nodes)
            .up()
            .into_iter()
            .map(|n| Arc::from(n.id.as_str()))
            .collect()
    }

    fn is_down(&self, node: &str) -> Option<NodeDown> {
        let (since, reason) = lock(&self.nodes).down(node)?;
        Some(NodeDown {
            node: node.to_string(),
            since,
            reason,
        })
    }

    fn handle_announce(&self, a: Announce, now: Instant) {
        if a.up {
            // A proxy (maybe a new one) reading another startup time than this instance
            // knew: the restart's message was missed.
            self.asterisk_startup(&a.node, &a.startup_time, "", true);
        }
        let events = lock(&self.nodes).announce(&a, now, SystemTime::now());
        for e in events {
            let _ = self.node_tx.send(e);
        }
    }

    fn expire_nodes(&self, now: Instant) {
        let (events, lost) = lock(&self.nodes).expire(now, SystemTime::now());
        for e in events {
            let _ = self.node_tx.send(e);
        }
        for node in lost {
            self.node_lost(&node);
        }
    }
}

/// A connection to the cluster: nodes, and typed clients over NATS.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use ari_cluster::Cluster;
/// use ari_client::events::StasisStart;
///
/// let cluster = Cluster::connect("nats://127.0.0.1:4222").await?;
/// let client = cluster.client()?;
/// client.on(|_start: StasisStart, channel| async move {
///     channel.answer().await?;
///     channel.play("sound:hello-world").await?.finished().await?;
///     channel.hangup().await?;
///     Ok(())
/// });
/// // This instance now takes its share of the new calls of `hello` on every node.
/// client.start(&["hello"]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    runtime: NatsRuntime,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.runtime.shared.instance)
            .field("prefix", &self.runtime.shared.subjects.prefix())
            .finish_non_exhaustive()
    }
}

/// Options of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nats_url: String,
    prefix: String,
    instance: Option<String>,
    min_silence: Duration,
    lost_after: Option<Duration>,
    events_buffer: usize,
    pickup_timeout: Duration,
    security: crate::NatsSecurity,
}

impl ClusterBuilder {
    /// Subject prefix (default `ari`; the proxies' `--prefix`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// A node is down when it has not announced itself for three of its intervals, and at
    /// least this long (default 2 s, so that a loaded machine delaying one announcement does
    /// not take a node down).
    pub fn node_silence(mut self, min: Duration) -> Self {
        self.min_silence = min;
        self
    }

    /// A node down for this long (its proxy said goodbye or stopped announcing, and no
    /// proxy of it came back) is lost (default 60 s; `None`: never): the waits, streams and
    /// listeners of this instance's clients on its resources end with
    /// [`ari_client::Error::AsteriskGone`] ([`NodeEvent::Lost`], [`ClusterStats::nodes_lost`],
    /// [`ClusterStats::resources_lost`]), as they would if its Asterisk had restarted. Its
    /// calls may still live in its Asterisk, but this instance hears nothing of them; a
    /// proxy coming back later serves new calls and requests as before.
    pub fn node_lost_after(mut self, after: Option<Duration>) -> Self {
        self.lost_after = after;
        self
    }

    /// Event messages buffered between NATS and this instance at most (default 262,144, in
    /// each of the instance's event subscriptions). Core NATS does not slow a publisher down
    /// for a slow subscriber: a proxy publishing a burst faster than the application handles
    /// it is absorbed here, and beyond it NATS drops messages, counted in
    /// [`ClusterStats::slow_consumer`]. Memory is only used while a backlog lasts.
    pub fn events_buffer(mut self, messages: usize) -> Self {
        self.events_buffer = messages;
        self
    }

    /// How long after a creation sent to any node failed without an answer (its request
    /// timed out or its connection was lost) a proxy may still say that it runs it (default
    /// 10 s). A creation under ids the application chose (`originate_with_id`, a bridge, a
    /// playback…) has no node until a proxy takes it ([`wire::CREATING_HEADER`]) or answers;
    /// if none did within this time, the waits, streams and listeners on those ids end with
    /// [`ari_client::Error::Ended`] ([`ClusterStats::creations_not_taken`]) instead of waiting
    /// for ever. A creation not sent at all (no proxy serves the subject) ends them at once.
    pub fn creation_pickup_timeout(mut self, after: Duration) -> Self {
        self.pickup_timeout = after;
        self
    }

    /// How to authenticate to NATS and check its TLS certificate (all of it at once; the
    /// methods below set one part each).
    pub fn nats_security(mut self, security: crate::NatsSecurity) -> Self {
        self.security = security;
        self
    }

    /// Authenticates with a NATS credentials file (a user JWT and its NKey seed:
    /// [`NatsSecurity::credentials_file`](crate::NatsSecurity::credentials_file)).
    pub fn nats_credentials_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.security.credentials_file = Some(path.into());
        self
    }

    /// Authenticates with an NKey seed ([`NatsSecurity::nkey_seed`](crate::NatsSecurity::nkey_seed)).
    pub fn nats_nkey_seed(mut self, seed: &str) -> Self {
        self.security.nkey_seed = Some(seed.to_string());
        self
    }

    /// Trusts only the certificate authorities of this PEM file for the NATS server's TLS
    /// certificate ([`NatsSecurity::root_certificates`](crate::NatsSecurity::root_certificates)).
    pub fn nats_root_certificates(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.security.root_certificates = Some(path.into());
        self
    }

    /// This instance's id (default: a fresh unique id). Two live instances must not share one.
    pub fn instance_id(mut self, id: &str) -> Self {
        self.instance = Some(id.to_string());
        self
    }

    /// Connects to NATS, listens to the nodes' announcements and asks them to announce now.
    /// Must run inside a tokio runtime.
    pub async fn connect(self) -> Result<Cluster, ClusterError> {
        let instance = self.instance.unwrap_or_else(|| nuid::next().to_string());
        let (up_tx, up_rx) = watch::channel(false);
        let counters = Counters::default();
        let nats = crate::connect_nats(
            &self.nats_url,
            &self.security,
            &format!("ari-cluster {instance}"),
            Some(up_tx),
            counters.slow_consumer.clone(),
            self.events_buffer,
        )
        .await
        .map_err(ClusterError::Nats)?;
        let subjects = Subjects::new(&self.prefix);
        let announce = nats
            .subscribe(subjects.announce())
            .await
            .map_err(ClusterError::Subscribe)?;
        let owned = nats
            .subscribe(subjects.owned())
            .await
            .map_err(ClusterError::Subscribe)?;
        let (node_tx, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            nats,
            subjects,
            instance,
            nodes: Mutex::new(NodeTable::new(self.min_silence, self.lost_after)),
            resources: Mutex::new(HashMap::new()),
            node_tx,
            nats_up: up_rx,
            apps: Mutex::new(Vec::new()),
            taking: watch::channel(true).0,
            counters,
            tasks: Mutex::new(Vec::new()),
            seqs: Mutex::new(HashMap::new()),
            startups: Mutex::new(HashMap::new()),
            clients: Mutex::new(Vec::new()),
            pickup_timeout: self.pickup_timeout,
        });
        let weak = Arc::downgrade(&shared);
        let task = tokio::spawn(watch_link(weak.clone(), shared.nats_up.clone()));
        lock(&shared.tasks).push(task);
        let task = tokio::spawn(watch_nodes(weak.clone(), announce));
        lock(&shared.tasks).push(task);
        let task = tokio::spawn(answer_owned(weak, owned));
        lock(&shared.tasks).push(task);
        let _ = shared
            .nats
            .publish(shared.subjects.ping(), Bytes::new())
            .await;
        Ok(Cluster {
            runtime: NatsRuntime { shared, pin: None },
        })
    }
}

/// Watches this instance's NATS connection: back after being away long enough for the
/// proxies to find this instance gone (and hand its calls over to other instances: see
/// [`ProxyConfig::hand_over_calls`](crate::ProxyConfig::hand_over_calls)), it no longer
/// claims to own its resources when a restarting proxy asks ([`Subjects::owned`]), so a
/// call handed over is not given back to it. A proxy that kept it as the owner still sends
/// it the events, which make it the owner again.
async fn watch_link(shared: std::sync::Weak<Shared>, mut up: watch::Receiver<bool>) {
    let mut down_since: Option<Instant> = None;
    while up.changed().await.is_ok() {
        let now_up = *up.borrow_and_update();
        match (now_up, down_since) {
            (false, None) => down_since = Some(Instant::now()),
            (true, Some(since)) => {
                down_since = None;
                if since.elapsed() < crate::proxy::MIN_ABSENCE {
                    continue;
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let mut given_up = 0;
                for (_, owned) in lock(&shared.resources).values_mut() {
                    given_up += usize::from(std::mem::take(owned));
                }
                tracing::warn!(
                    resources = given_up,
                    away_ms = since.elapsed().as_millis() as u64,
                    "NATS back after a long absence: this instance claims its resources no more \
                     (the proxies may have handed its calls over)"
                );
            }
            _ => {}
        }
    }
}

/// Answers a starting proxy's question: which of its node's resources this instance owns
/// (its table of owners was lost with the previous proxy).
async fn answer_owned(shared: std::sync::Weak<Shared>, mut asks: async_nats::Subscriber) {
    while let Some(msg) = asks.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (Some(reply), Some(node)) = (
            msg.reply,
            msg.headers.as_ref().and_then(|h| h.get(wire::NODE_HEADER)),
        ) else {
            continue;
        };
        if let Some(startup) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::STARTUP_HEADER))
        {
            // Asterisk restarted with its proxy (a host rebooted): the node's resources
            // this instance knew are gone, and none is given to the new proxy.
            shared.asterisk_startup(node.as_str(), startup.as_str(), "", true);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(wire::INSTANCE_HEADER, shared.instance.as_str());
        let owned = shared.owned_on(node.as_str());
        let _ = shared
            .nats
            .publish_with_headers(reply, headers, Bytes::from(owned))
            .await;
    }
}

async fn watch_nodes(shared: std::sync::Weak<Shared>, mut announce: async_nats::Subscriber) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = announce.next() => {
                let Some(msg) = msg else { return };
                let Some(shared) = shared.upgrade() else { return };
                match serde_json::from_slice::<Announce>(&msg.payload) {
                    Ok(a) => shared.handle_announce(a, Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "bad announcement ignored"),
                }
            }
            _ = tick.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                shared.expire_nodes(Instant::now());
            }
        }
    }
}

impl Cluster {
    /// Connects with the defaults (prefix `ari`, a fresh instance id). `nats_url` may list
    /// the servers of a NATS cluster, comma-separated (`nats://a:4222,nats://b:4222`).
    pub async fn connect(nats_url: &str) -> Result<Cluster, ClusterError> {
        Cluster::builder(nats_url).connect().await
    }

    /// A builder for the options.
    pub fn builder(nats_url: &str) -> ClusterBuilder {
        ClusterBuilder {
            nats_url: nats_url.to_string(),
            prefix: "ari".to_string(),
            instance: None,
            min_silence: Duration::from_secs(2),
            lost_after: Some(DEFAULT_NODE_LOST_AFTER),
            events_buffer: DEFAULT_EVENTS_BUFFER,
            pickup_timeout: DEFAULT_PICKUP_TIMEOUT,
            security: crate::NatsSecurity::default(),
        }
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.runtime.shared.instance
    }

    /// The runtime: give it to [`ari_client::Client::builder_with_runtime`] for more options.
    pub fn runtime(&self) -> &NatsRuntime {
        &self.runtime
    }

    /// A typed client over NATS: operations on a resource go to its node, creations and
    /// lists to any node; [`ari_client::Client::start`] makes this instance take its share
    /// of the application's new calls. Keep the default `RestTransport::Http` (requests
    /// already travel as `RESTRequest` envelopes; `RestTransport::WebSocket` is not supported
    /// over NATS).
    pub fn client(&self) -> Result<Client, ari_client::Error> {
        let client = ari_client::Client::builder_with_runtime(
            PLACEHOLDER_URL,
            "cluster",
            "cluster",
            self.runtime.clone(),
        )
        .build()?;
        self.track(&client);
        Ok(client)
    }

    /// Makes a client built from [`Cluster::runtime`] with
    /// [`ari_client::Client::builder_with_runtime`] end its waits, streams and listeners on a
    /// node's resources when that node's Asterisk restarts ([`NodeEvent::AsteriskRestarted`]),
    /// as those of [`Cluster::client`] and [`Cluster::client_on`] do. Holds no reference to
    /// it.
    pub fn track(&self, client: &Client) {
        self.runtime.shared.track(client);
    }

    /// A typed client whose every request goes to `node` (originate there, list its
    /// channels). Its events connection is the same as [`Cluster::client`]'s.
    pub fn client_on(&self, node: &str) -> Result<Client, ari_client::Error> {
        let runtime = NatsRuntime {
            shared: self.runtime.shared.clone(),
            pin: Some(Arc::from(node)),
        };
        let client = ari_client::Client::builder_with_runtime(
            PLACEHOLDER_URL,
            "cluster",
            "cluster",
            runtime,
        )
        .build()?;
        self.track(&client);
        Ok(client)
    }

    /// The nodes up now.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        lock(&self.runtime.shared.nodes).up()
    }

    /// Nodes coming up and going down, from now on (bounded: a receiver far behind gets
    /// [`broadcast::error::RecvError::Lagged`]).
    pub fn node_events(&self) -> broadcast::Receiver<NodeEvent> {
        self.runtime.shared.node_tx.subscribe()
    }

    /// Waits until at least `n` nodes are up, or `timeout` passes; whether they are.
    pub async fn wait_for_nodes(&self, n: usize, timeout: Duration) -> bool {
        let mut events = self.node_events();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.nodes().len() >= n {
                return true;
            }
            let _ = self
                .runtime
                .shared
                .nats
                .publish(self.runtime.shared.subjects.ping(), Bytes::new())
                .await;
            let wait = tokio::time::sleep(Duration::from_millis(200));
            tokio::select! {
                _ = events.recv() => {}
                _ = wait => {}
                _ = tokio::time::sleep_until(deadline) => return self.nodes().len() >= n,
            }
        }
    }

    /// This instance takes no new calls from now on, for a graceful scale-down or
    /// deploy: it leaves its applications' queue groups, so new calls go to the other
    /// instances; an offer already on its way to it is declined (counted in
    /// [`ClusterStats::claims_declined`]; its proxy offers it to another instance at once,
    /// never to none). Its calls in progress keep their events and
    /// operations: wait for them to end, then [`close`](Self::close). For this
    /// [`Cluster`] for good (a new one takes calls again).
    ///
    /// ```no_run
    /// # async fn demo(cluster: ari_cluster::Cluster, client: ari_cluster::Client) {
    /// cluster.stop_taking_calls();
    /// // ... wait until this instance's calls have ended ...
    /// cluster.close().await;
    /// # }
    /// ```
    pub fn stop_taking_calls(&self) {
        self.runtime.shared.taking.send_replace(false);
    }

    /// Stops this instance's share of the cluster: unsubscribes everything (new calls go to
    /// the other instances at once) and closes the NATS connection after what is in flight.
    /// Clients made from this cluster fail their requests afterwards.
    pub async fn close(&self) {
        if let Err(e) = self.runtime.shared.nats.drain().await {
            tracing::debug!(error = %e, "NATS drain");
        }
    }

    /// This instance's counters.
    pub fn stats(&self) -> ClusterStats {
        let s = &self.runtime.shared;
        let c = &s.counters;
        ClusterStats {
            calls_taken: c.calls_taken.load(Ordering::Relaxed),
            claims_declined: c.claims_declined.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            events_dropped: c.events_dropped.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            slow_consumer: c.slow_consumer.load(Ordering::Relaxed),
            event_messages_lost: c.event_messages_lost.load(Ordering::Relaxed),
            resources_gone: c.resources_gone.load(Ordering::Relaxed),
            nodes_lost: c.nodes_lost.load(Ordering::Relaxed),
            resources_lost: c.resources_lost.load(Ordering::Relaxed),
            rest_requests: c.rest_requests.load(Ordering::Relaxed),
            rest_node_down: c.rest_node_down.load(Ordering::Relaxed),
            rest_lost_in_flight: c.rest_lost_in_flight.load(Ordering::Relaxed),
            creations_not_taken: c.creations_not_taken.load(Ordering::Relaxed),
            known_resources: lock(&s.resources).len() as u64,
            resources_refused: c.resources_refused.load(Ordering::Relaxed),
        }
    }

    /// The node a resource lives on, if known (`kind` as in events: channel, bridge, …).
    pub fn node_of(&self, kind: ari_proto::events::ResourceKind, id: &str) -> Option<String> {
        let l = wire::kind_letter(kind)?;
        self.runtime
            .shared
            .node_of(&format!("{l}:{id}"))
            .map(|n| n.to_string())
    }
}

/// The [`Runtime`](ari_client::Runtime) of a client over NATS (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct NatsRuntime {
    shared: Arc<Shared>,
    pin: Option<Arc<str>>,
}

impl fmt::Debug for NatsRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsRuntime")
            .field("instance", &self.shared.instance)
            .field("pinned_node", &self.pin)
            .finish_non_exhaustive()
    }
}

/// Where a request goes.
enum Route {
    Node(Arc<str>),
    /// The REST queue group: of the proxies of an application (creations and lists of an
    /// application's instance), or of every proxy.
    Any(Option<String>),
}

/// The resource a REST path addresses (`c:ID`), if it addresses an existing one.
fn addressed_resource(method: &http::Method, segs: &[String]) -> Option<String> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let creation = method == http::Method::POST && s.len() == 2;
    match s.as_slice() {
        ["channels", "create" | "externalMedia", ..] => None,
        ["channels", id, ..] if !(creation) => Some(format!("c:{id}")),
        ["bridges", id, ..] if !(creation) => Some(format!("b:{id}")),
        ["playbacks", id, ..] => Some(format!("p:{id}")),
        ["recordings", "live", name, ..] => Some(format!("r:{name}")),
        _ => None,
    }
}

impl NatsRuntime {
    /// Where a request goes, and the resource it addresses when its node is not known (the
    /// request then goes to any node, and to the others if that one does not have it).
    fn route(
        &self,
        method: &http::Method,
        uri: &str,
    ) -> Result<(Route, Option<String>), TransportError> {
        let path = uri.split('?').next().unwrap_or("");
        let node = match &self.pin {
            Some(node) => node.clone(),
            None => {
                let segs: Vec<String> = path
                    .split('/')
                    .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
                    .collect();
                let any = || Route::Any(self.shared.app_of(uri));
                let Some(key) = addressed_resource(method, &segs) else {
                    return Ok((any(), None));
                };
                match self.shared.node_of(&key) {
                    Some(node) => node,
                    None => return Ok((any(), Some(key))),
                }
            }
        };
        if let Some(down) = self.shared.is_down(&node) {
            self.shared
                .counters
                .rest_node_down
                .fetch_add(1, Ordering::Relaxed);
            return Err(down.into_transport());
        }
        Ok((Route::Node(node), None))
    }

    fn rest(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        let this = self.clone();
        async move {
            let (parts, body) = req.into_parts();
            let full = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            // Everything below the `/ari/` prefix.
            let uri = match full.find("/ari/") {
                Some(i) => &full[i + 5..],
                None => full.trim_start_matches('/'),
            };
            // What the request creates under ids the application chose (both halves of a
            // Local channel, a snoop, a playback, a recording, a bridge): this instance owns
            // them on the node that runs the request, known before it is sent when the
            // request goes to one node, else from the proxy's answer. Their waits then end
            // when that node's Asterisk restarts or its proxy is lost, even if no event of
            // theirs ever came.
            let created = created_keys(&parts.method, uri);
            let (route, unknown) = match this.route(&parts.method, uri) {
                Ok(r) => r,
                Err(e) => {
                    // Not sent: nothing will come for its ids.
                    this.shared.not_taken(&created, false);
                    return Err(e);
                }
            };
            if let Route::Node(n) = &route {
                for key in &created {
                    this.shared.learn(key.clone(), n, true);
                }
            }
            let envelope = RestRequest {
                kind: "RESTRequest".into(),
                method: parts.method.as_str().to_string(),
                uri: uri.to_string(),
                content_type: (!body.is_empty()).then(|| {
                    parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/json")
                        .to_string()
                }),
                message_body: (!body.is_empty())
                    .then(|| String::from_utf8_lossy(&body).into_owned()),
                ..RestRequest::default()
            };
            let shared = &this.shared;
            shared
                .counters
                .rest_requests
                .fetch_add(1, Ordering::Relaxed);
            let payload: Bytes = serde_json::to_vec(&envelope)
                .map_err(|e| TransportError::new(TransportErrorKind::Protocol, e.to_string()))?
                .into();
            let mut pickup = Pickup {
                shared: shared.clone(),
                keys: created.clone(),
                armed: matches!(route, Route::Any(_)),
            };
            let answer = exchange(shared, &route, payload.clone()).await;
            match &answer {
                Ok(_) => pickup.armed = false,
                // Not sent (no proxy serves the subject, or the node is down).
                Err(e) if e.kind == TransportErrorKind::Connect => {
                    pickup.armed = false;
                    shared.not_taken(&created, false);
                }
                // Maybe taken by a proxy that did not answer: decided after the pickup
                // timeout (as when the request is abandoned at its timeout).
                Err(_) => {}
            }
            drop(pickup);
            let (mut resp, mut node, mut body) = answer?;
            if let (Some(key), 404) = (&unknown, resp.status_code) {
                // Sent to any node, which does not have it: ask the others, one at a time
                // (a 404 did nothing there, so an operation is not done twice).
                for other in shared.up_nodes() {
                    if node.as_deref() == Some(&*other) {
                        continue;
                    }
                    let route = Route::Node(other);
                    match exchange(shared, &route, payload.clone()).await {
                        Ok((r, n, b)) if r.status_code != 404 => {
                            (resp, node, body) = (r, n, b);
                            break;
                        }
                        // Not there either, or gone meanwhile: the next one.
                        Ok(_) | Err(_) => {}
                    }
                }
                if let (Some(n), true) = (&node, (200..300).contains(&resp.status_code)) {
                    if parts.method != http::Method::DELETE {
                        shared.learn(key.clone(), n, false);
                    }
                }
            }
            if let Some(n) = &node {
                match resp.status_code {
                    200..=299 => {
                        for key in &created {
                            shared.learn(key.clone(), n, true);
                        }
                    }
                    // Refused: nothing was created (a 409 names a live one: kept).
                    400..=408 | 410.. => {
                        let mut map = lock(&shared.resources);
                        for key in &created {
                            if map.get(key).is_some_and(|(at, _)| at == n) {
                                map.remove(key);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(node), true) = (&node, (200..300).contains(&resp.status_code)) {
                if body.first() == Some(&b'{') {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                        if let Some((kind, id)) = crate::proxy::created_resource(&v) {
                            if let Some(l) = wire::kind_letter(kind) {
                                // The proxy gave it to this instance (it sent the request).
                                shared.learn(format!("{l}:{id}"), node, true);
                            }
                        }
                    }
                }
            }
            let mut builder = http::Response::builder().status(resp.status_code);
            if let Some(ct) = &resp.content_type {
                builder = builder.header(http::header::CONTENT_TYPE, ct.as_str());
            }
            builder
                .body(body)
                .map_err(|e| TransportError::new(TransportErrorKind::Protocol, e.to_string()))
        }
    }

    /// Opens the events "connection": subscriptions for the apps of the upgrade request.
    async fn events(shared: Arc<Shared>, uri: http::Uri) -> Result<NatsWs, TransportError> {
        let mut up = shared.nats_up.clone();
        if !*up.borrow() {
            tokio::time::timeout(Duration::from_secs(5), up.wait_for(|u| *u))
                .await
                .map_err(|_| {
                    TransportError::new(TransportErrorKind::Connect, "NATS is not connected")
                })?
                .map_err(|_| TransportError::new(TransportErrorKind::Closed, "NATS closed"))?;
        }
        let apps: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.strip_prefix("app="))
            .flat_map(|v| {
                percent_decode_str(v)
                    .decode_utf8_lossy()
                    .split(',')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|a| !a.is_empty())
            .collect();
        *lock(&shared.apps) = apps.clone();
        let sub_err = |e: async_nats::SubscribeError| {
            TransportError::new(TransportErrorKind::Io, e.to_string())
        };
        let nats = &shared.nats;
        let s = &shared.subjects;
        let mut subs = Vec::new();
        subs.push((
            false,
            nats.subscribe(s.instance(&shared.instance))
                .await
                .map_err(sub_err)?,
        ));
        let mut claims = Vec::new();
        for app in &apps {
            if *shared.taking.borrow() {
                claims.push(
                    nats.queue_subscribe(s.claim(app), wire::token(app))
                        .await
                        .map_err(sub_err)?,
                );
            }
            subs.push((
                false,
                nats.subscribe(s.event_any_node(app))
                    .await
                    .map_err(sub_err)?,
            ));
        }
        // A flush only writes the subscriptions out; a message of our own coming back through
        // the server shows that it has them (it handles a connection's commands in order), so
        // a call offered once this returns finds this instance in the queue group.
        let io = |e: &dyn fmt::Display| TransportError::new(TransportErrorKind::Io, e.to_string());
        let inbox = nats.new_inbox();
        let mut echo = nats.subscribe(inbox.clone()).await.map_err(sub_err)?;
        nats.publish(inbox, Bytes::new())
            .await
            .map_err(|e| io(&e))?;
        nats.flush().await.map_err(|e| io(&e))?;
        match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
            Ok(Some(_)) => {}
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::Connect,
                    "NATS did not confirm this instance's subscriptions within 10 s",
                ))
            }
        }
        drop(echo);
        let (tx, rx) = mpsc::channel(EVENTS_QUEUE);
        let events = subs
            .into_iter()
            .map(|(claim, sub)| sub.map(move |m| (claim, m)).boxed());
        let claims = claims.into_iter().map(|sub| {
            until_stopped(sub, shared.taking.subscribe())
                .map(|m| (true, m))
                .boxed()
        });
        let merged = futures_util::stream::select_all(events.chain(claims));
        let task = tokio::spawn(feed(shared.clone(), merged, tx.clone(), up));
        Ok(NatsWs {
            rx,
            tx,
            shared,
            task,
        })
    }
}

/// The resources (`c:ID`, the [`wire::RESOURCES_HEADER`] format) a request creates under
/// ids the application chose ([`ari_proto::rest::RequestParts::created_resources`]).
fn created_keys(method: &http::Method, uri: &str) -> Vec<String> {
    if method != http::Method::POST {
        return Vec::new();
    }
    ari_proto::rest::RequestParts::raw(method.clone(), uri, None)
        .created_resources()
        .into_iter()
        .filter_map(|(kind, id)| Some(format!("{}:{id}", wire::kind_letter(kind)?)))
        .collect()
}

/// The messages of a claim subscription until the instance stops taking calls; then it
/// leaves the queue group and gives what was already delivered (to be declined).
fn until_stopped(
    sub: async_nats::Subscriber,
    taking: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = async_nats::Message> + Send {
    futures_util::stream::unfold(
        (sub, taking, false),
        |(mut sub, mut taking, mut left)| async move {
            if !left {
                let next = tokio::select! {
                    m = sub.next() => Some(m),
                    _ = wait_stopped(&mut taking) => None,
                };
                match next {
                    Some(m) => return m.map(|m| (m, (sub, taking, false))),
                    None => {
                        // Drained, not unsubscribed: the offers NATS sent before it took the
                        // unsubscription still arrive (to be declined) instead of being
                        // dropped unseen by the NATS client.
                        if let Err(e) = sub.drain().await {
                            tracing::warn!(error = %e, "leaving a claim queue group");
                        }
                        left = true;
                    }
                }
            }
            sub.next().await.map(|m| (m, (sub, taking, left)))
        },
    )
}

/// Waits until the instance stops taking calls (for ever if the cluster is gone).
async fn wait_stopped(taking: &mut watch::Receiver<bool>) {
    if taking.wait_for(|t| !*t).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits until `node`'s proxy goes silent (down without a goodbye); the error the request
/// in flight to it then fails with: a [`NodeDown`] (kind `Closed`: it was sent, and may
/// have run).
async fn went_silent(
    shared: &Shared,
    events: &mut broadcast::Receiver<NodeEvent>,
    node: &str,
) -> TransportError {
    loop {
        match events.recv().await {
            Ok(NodeEvent::Down { id, .. }) if id == node => {}
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
        if lock(&shared.nodes).went_silent(node) {
            shared
                .counters
                .rest_lost_in_flight
                .fetch_add(1, Ordering::Relaxed);
            let down = NodeDown {
                node: node.to_string(),
                since: SystemTime::now(),
                reason: "its proxy went silent with this request in flight (it may have run)"
                    .into(),
            };
            return TransportError::new(TransportErrorKind::Closed, down.to_string())
                .with_source(down);
        }
    }
}

/// Sends one `RESTRequest` envelope where `route` says; the answer, the node that gave it
/// and its body.
async fn exchange(
    shared: &Shared,
    route: &Route,
    payload: Bytes,
) -> Result<(RestResponse, Option<Arc<str>>, Bytes), TransportError> {
    let subject = match route {
        Route::Node(n) => shared.subjects.rest_node(n),
        Route::Any(Some(app)) => shared.subjects.rest_app(app),
        Route::Any(None) => shared.subjects.rest_any(),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::INSTANCE_HEADER, shared.instance.as_str());
    let request = async_nats::Request::new()
        .payload(payload)
        .headers(headers)
        .timeout(None);
    let sent = shared.nats.send_request(subject, request);
    let sent = match route {
        // A node whose proxy goes silent with the request in flight will not answer it.
        Route::Node(n) => {
            let mut events = shared.node_tx.subscribe();
            tokio::select! {
                r = sent => r,
                down = went_silent(shared, &mut events, n) => return Err(down),
            }
        }
        Route::Any(_) => sent.await,
    };
    let reply = sent.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => match route {
                // Gone before its silence limit: down all the same.
                Route::Node(n) => NodeDown {
                    node: n.to_string(),
                    since: SystemTime::now(),
                    reason: "no ari-proxy serves it (stopped, or not started)".into(),
                }
                .into_transport(),
                Route::Any(Some(app)) => TransportError::new(
                    TransportErrorKind::Connect,
                    format!("no ari-proxy of application {app} is running with its Asterisk connected (none serves its REST subject)"),
                ),
                Route::Any(None) => TransportError::new(
                    TransportErrorKind::Connect,
                    "no ari-proxy is running with its Asterisk connected (none serves the cluster's REST subject)",
                ),
            },
            async_nats::RequestErrorKind::TimedOut => {
                TransportError::new(TransportErrorKind::Timeout, e.to_string())
            }
            async_nats::RequestErrorKind::Other => {
                TransportError::new(TransportErrorKind::Io, e.to_string())
            }
        })?;
    let mut resp: RestResponse = serde_json::from_slice(&reply.payload).map_err(|e| {
        TransportError::new(
            TransportErrorKind::Protocol,
            format!("the proxy's answer is not a RESTResponse: {e}"),
        )
    })?;
    let headers = reply.headers.as_ref();
    if let Some(channel) = headers.and_then(|h| h.get(wire::HANDED_OVER_HEADER)) {
        // The call was handed over to another instance while this one was away: it serves
        // it no more (its waits on the channel end; it claims it no more).
        let key = format!("c:{}", channel.as_str());
        lock(&shared.resources).remove(&key);
        let ended = shared.end_keys(vec![key], EndReason::ResourceEnded);
        tracing::warn!(channel = %channel, ended, "the call was handed over to another instance");
    }
    let binary = headers
        .and_then(|h| h.get(wire::BODY_ENCODING_HEADER))
        .is_some_and(|v| v.as_str() == "base64");
    let node: Option<Arc<str>> = headers
        .and_then(|h| h.get(wire::NODE_HEADER))
        .map(|v| Arc::from(v.as_str()));
    let body = match resp.message_body.take() {
        Some(b) if binary => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| TransportError::new(TransportErrorKind::Protocol, e.to_string()))?,
        ),
        Some(b) => Bytes::from(b),
        None => Bytes::new(),
    };
    Ok((resp, node, body))
}

/// Moves messages from the subscriptions to the events connection; answers claims.
async fn feed(
    shared: Arc<Shared>,
    mut merged: impl futures_util::Stream<Item = (bool, async_nats::Message)> + Unpin,
    tx: mpsc::Sender<Result<WsMessage, TransportError>>,
    mut up: watch::Receiver<bool>,
) {
    let own_subject = shared.subjects.instance(&shared.instance);
    loop {
        tokio::select! {
            changed = up.changed() => {
                if changed.is_err() || !*up.borrow() {
                    let _ = tx
                        .send(Err(TransportError::new(TransportErrorKind::Io, "NATS connection lost")))
                        .await;
                    return;
                }
            }
            msg = merged.next() => {
                let Some((claim, msg)) = msg else { return };
                if claim && !*shared.taking.borrow() {
                    // Stopped taking calls: declined, so the proxy offers it to another
                    // instance at once (not after its claim timeout).
                    shared.counters.claims_declined.fetch_add(1, Ordering::Relaxed);
                    if let Some(reply) = msg.reply {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(wire::DECLINED_HEADER, shared.instance.as_str());
                        let _ = shared
                            .nats
                            .publish_with_headers(reply, headers, Bytes::new())
                            .await;
                    }
                    continue;
                }
                if claim {
                    // Taken: the proxy now sends this call's events (the StasisStart first)
                    // to this instance's subject.
                    if let Some(reply) = msg.reply {
                        if shared
                            .nats
                            .publish(reply, Bytes::from(shared.instance.clone()))
                            .await
                            .is_ok()
                        {
                            shared.counters.calls_taken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                let headers = msg.headers.as_ref();
                if headers.is_some_and(|h| h.get(wire::PROBE_HEADER).is_some()) {
                    // A proxy asking whether this instance is still there.
                    if let Some(reply) = msg.reply {
                        let _ = shared.nats.publish(reply, Bytes::new()).await;
                    }
                    continue;
                }
                if headers.is_some_and(|h| h.get(wire::CREATING_HEADER).is_some()) {
                    // A proxy runs a creation of this instance's: its resources' node.
                    if let Some(node) = headers.and_then(|h| h.get(wire::NODE_HEADER)) {
                        let listed = std::str::from_utf8(&msg.payload).unwrap_or("");
                        let node: Arc<str> = Arc::from(node.as_str());
                        for key in listed.split(' ').filter(|k| !k.is_empty()) {
                            shared.learn(key.to_string(), &node, true);
                        }
                    }
                    continue;
                }
                shared.check_seq(&msg);
                if let Some(startup) = headers.and_then(|h| h.get(wire::RESTARTED_HEADER)) {
                    // The node's Asterisk restarted: its resources are gone.
                    if let Some(node) = headers.and_then(|h| h.get(wire::NODE_HEADER)) {
                        let listed = std::str::from_utf8(&msg.payload).unwrap_or("");
                        shared.asterisk_startup(node.as_str(), startup.as_str(), listed, false);
                    }
                    continue;
                }
                let batch = headers.and_then(|h| h.get(wire::BATCH_HEADER));
                let Some(count) = batch else {
                    // One frame, its resources in headers.
                    shared.counters.events.fetch_add(1, Ordering::Relaxed);
                    shared.learn_headers(headers, msg.subject.as_str() == own_subject);
                    if !deliver(&shared, &tx, msg.payload).await {
                        return;
                    }
                    continue;
                };
                let records = match wire::decode_batch(count.as_str(), &msg.payload) {
                    Ok(records) => records,
                    Err(e) => {
                        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(subject = %msg.subject, error = %e, "event batch dropped");
                        continue;
                    }
                };
                shared
                    .counters
                    .events
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                if let Some(node) = headers.and_then(|h| h.get(wire::NODE_HEADER)) {
                    shared.learn_batch(
                        node.as_str(),
                        &records,
                        msg.subject.as_str() == own_subject,
                    );
                }
                for r in records {
                    if !deliver(&shared, &tx, r.frame).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Hands one frame to the client's session, waiting for room (the subscriptions' own buffers
/// take the burst meanwhile; beyond them NATS counts the drops as a slow consumer). `false`
/// when the events connection is closed.
async fn deliver(
    shared: &Shared,
    tx: &mpsc::Sender<Result<WsMessage, TransportError>>,
    frame: Bytes,
) -> bool {
    // Checked once, not copied: the session reads the payload's own bytes.
    let Ok(text) = ari_client::runtime::Utf8Bytes::try_from(frame) else {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        return true;
    };
    if tx.send(Ok(WsMessage::Text(text))).await.is_err() {
        shared
            .counters
            .events_dropped
            .fetch_add(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// A creation sent to any node, until a proxy is known to have taken it (its answer came):
/// dropped armed (the request failed or was abandoned at its timeout without an answer), it
/// gives the proxies [`Shared::pickup_timeout`] to say they run it, then ends the waits on its
/// ids whose node is still unknown ([`Shared::not_taken`]).
struct Pickup {
    shared: Arc<Shared>,
    keys: Vec<String>,
    armed: bool,
}

impl Drop for Pickup {
    fn drop(&mut self) {
        if !self.armed || self.keys.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        let after = self.shared.pickup_timeout;
        let shared = Arc::downgrade(&self.shared);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(shared) = shared.upgrade() {
                        shared.not_taken(&keys, true);
                    }
                });
            }
            // No runtime to wait on (dropped outside one): decided now.
            Err(_) => self.shared.not_taken(&keys, true),
        }
    }
}

/// The events connection over NATS (the client's "WebSocket").
pub struct NatsWs {
    rx: mpsc::Receiver<Result<WsMessage, TransportError>>,
    tx: mpsc::Sender<Result<WsMessage, TransportError>>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for NatsWs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsWs")
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsWs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for NatsWs {
    type Item = Result<WsMessage, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Sink<WsMessage> for NatsWs {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        match item {
            WsMessage::Ping(p) => {
                // Keepalive: NATS has its own; answer as a WebSocket peer would.
                let _ = self.tx.try_send(Ok(WsMessage::Pong(p)));
                Ok(())
            }
            WsMessage::Close(_) => Ok(()),
            WsMessage::Text(_) | WsMessage::Binary(_) | WsMessage::Pong(_) => {
                // REST over the events connection is not used over NATS: the client's HTTP
                // path already travels as RESTRequest envelopes.
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.task.abort();
        Poll::Ready(Ok(()))
    }
}

impl Executor for NatsRuntime {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(fut);
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep_until(deadline.into())
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl Transport for NatsRuntime {
    type Ws = NatsWs;

    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        _opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        self.rest(req)
    }

    fn ws_connect(
        &self,
        req: http::Request<()>,
        _opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        NatsRuntime::events(self.shared.clone(), req.uri().clone())
    }
}

/// Event messages missing before the one numbered `seq` ([`wire::SEQ_HEADER`]) on a subject
/// whose last message seen was numbered `last`; `own`: the instance's own subject (every
/// message there was for it, from 1). The number comes from the network: any value is
/// counted without overflow (0, or a number not above the last, counts nothing).
fn missing_before(last: Option<u64>, seq: u64, own: bool) -> u64 {
    match last {
        Some(last) if seq > last => seq - last - 1,
        // Numbered again from 1: the proxy restarted.
        Some(_) => 0,
        // The first on this instance's own subject: every message there was for it.
        None if own => seq.saturating_sub(1),
        // The first on a subject every instance reads: it may have started late.
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').map(str::to_string).collect()
    }

    #[test]
    fn paths_name_their_resource() {
        let get = http::Method::GET;
        let post = http::Method::POST;
        assert_eq!(
            addressed_resource(&post, &segs("channels/1.2/answer")),
            Some("c:1.2".into())
        );
        assert_eq!(
            addressed_resource(&get, &segs("channels/1.2")),
            Some("c:1.2".into())
        );
        assert_eq!(addressed_resource(&post, &segs("channels/1.2")), None);
        assert_eq!(addressed_resource(&post, &segs("channels")), None);
        assert_eq!(addressed_resource(&post, &segs("channels/create")), None);
        assert_eq!(
            addressed_resource(&post, &segs("bridges/b1/addChannel")),
            Some("b:b1".into())
        );
        assert_eq!(addressed_resource(&post, &segs("bridges/b1")), None);
        assert_eq!(
            addressed_resource(&post, &segs("playbacks/p/control")),
            Some("p:p".into())
        );
        assert_eq!(
            addressed_resource(&post, &segs("recordings/live/r/stop")),
            Some("r:r".into())
        );
        assert_eq!(addressed_resource(&get, &segs("recordings/stored")), None);
        assert_eq!(addressed_resource(&get, &segs("asterisk/info")), None);
    }

    #[test]
    fn missing_messages_are_counted_from_any_number_without_overflow() {
        assert_eq!(missing_before(Some(4), 5, true), 0);
        assert_eq!(missing_before(Some(4), 8, false), 3);
        assert_eq!(missing_before(Some(9), 1, true), 0, "the proxy restarted");
        assert_eq!(missing_before(Some(9), 9, true), 0, "the same number again");
        assert_eq!(missing_before(None, 3, true), 2);
        assert_eq!(missing_before(None, 3, false), 0);
        // Numbers a broken or hostile peer may send.
        assert_eq!(missing_before(None, 0, true), 0);
        assert_eq!(missing_before(Some(0), 0, true), 0);
        assert_eq!(missing_before(None, u64::MAX, true), u64::MAX - 1);
        assert_eq!(missing_before(Some(0), u64::MAX, true), u64::MAX - 1);
        assert_eq!(missing_before(Some(u64::MAX), 0, true), 0);
    }
}
