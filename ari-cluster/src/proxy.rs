//! The proxy beside one Asterisk: events out to NATS, REST in from NATS.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ari_cluster::ProxyError> {
//! use ari_cluster::{Proxy, ProxyConfig};
//! let config = ProxyConfig::new("http://localhost:8088", "asterisk", "secret", "nats://127.0.0.1:4222", ["hello"]);
//! let proxy = Proxy::start(config).await?;
//! println!("serving node {}", proxy.node());
//! proxy.stop().await;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ari_client::{Client, ConnectionEvent, RestTransport, Transport, TransportOptions};
use ari_proto::events::{ResourceKind, ResourceRef};
use ari_proto::rest::{BaseUrl, Credentials};
use ari_proto::Event;
use ari_tokio::TokioRuntime;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::owners::Owners;
use crate::scan;
use crate::tap::TapRuntime;
use crate::wire::{self, Announce, BatchWriter, ProxyStats, RestRequest, RestResponse, Subjects};

/// Query values are encoded as Asterisk decodes them: everything but unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a proxy needs; [`ProxyConfig::new`] fills in the defaults.
#[derive(Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Asterisk's HTTP server (`http://localhost:8088`).
    pub ari_url: String,
    /// ARI user.
    pub user: String,
    /// ARI password.
    pub password: String,
    /// NATS server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub nats_url: String,
    /// How to authenticate to NATS and check its TLS certificate (default: as the URL says).
    pub nats_security: crate::NatsSecurity,
    /// Applications to register on Asterisk and serve.
    pub apps: Vec<String>,
    /// Subject prefix (default `ari`).
    pub prefix: String,
    /// How often the proxy announces itself (default 1 s).
    pub announce_interval: Duration,
    /// How long one offer of a new call waits for an instance to take it (default 1 s).
    /// An offer is made up to [`ProxyConfig::claim_attempts`] times (the queue group may pick
    /// another instance); while no instance is subscribed at all (resubscribing after a NATS
    /// reconnect, starting), it is made again every few hundred milliseconds for up to
    /// `claim_timeout × claim_attempts` (counted in [`ProxyStats::claims_retried`]); then the
    /// call is published on `{p}.unclaimed.{app}.{node}` and counted in
    /// [`ProxyStats::calls_unclaimed`]. The call's events (and those of resources
    /// they name) wait meanwhile, so that they stay in order; other calls' events go on.
    pub claim_timeout: Duration,
    /// Offers of a new call at most (default 3).
    pub claim_attempts: u32,
    /// Deadline of one REST request to Asterisk (default 10 s).
    pub request_timeout: Duration,
    /// REST requests in flight at most (default 512); more are answered 503 at once.
    pub max_in_flight: usize,
    /// Event frames queued between Asterisk and NATS at most (default 65536); more are
    /// dropped and counted in [`ProxyStats::events_dropped`].
    pub queue_capacity: usize,
    /// Resources with an owner at most (default 1 000 000).
    pub max_owned: usize,
    /// Hand the calls of an instance found gone over to the other instances (default `true`):
    /// each of its channels still in the application (`Stasis`) is offered again to the
    /// application's queue group with a `StasisStart` the proxy makes from the channel's
    /// current state (`GET channels/{id}`: it may be answered, bridged, playing; its `args` are
    /// those of its `Stasis()` application data, its `timestamp` the handover's), and the
    /// instance that takes it receives the call's later events
    /// ([`ProxyStats::calls_handed_over`]). A call is never served by two instances: the gone
    /// instance, should it come back (a NATS partition rather than a crash), gets none of the
    /// call's events and its requests on the channel are answered 404
    /// ([`ProxyStats::rest_handed_over`]). A proxy that starts hands over likewise the calls in
    /// its applications that no instance claims when it asks, twice, at its start and after
    /// the time a gone instance is given (their instance died while the node had no proxy;
    /// [`ProxyStats::unowned_calls_handed_over`]). The bridges released with the calls follow
    /// them: each goes to the instance that takes the first of its handed-over calls
    /// ([`ProxyStats::bridges_handed_over`]); playbacks and recordings are only released. With
    /// `false`, the gone instance's resources are only released: their events go to every
    /// instance, and no handler runs for them.
    pub hand_over_calls: bool,
    /// Send REST requests to Asterisk as `RESTRequest` frames on the events WebSocket where
    /// Asterisk has REST over WebSocket (20.14, 21.9, 22.4 and later; default `true`): one
    /// connection for everything. Recordings' files, an older Asterisk and the moments the
    /// WebSocket is reconnecting use HTTP. Answers are the same either way.
    pub rest_over_websocket: bool,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("ari_url", &self.ari_url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("nats_url", &self.nats_url)
            .field("nats_security", &self.nats_security)
            .field("apps", &self.apps)
            .field("prefix", &self.prefix)
            .field("rest_over_websocket", &self.rest_over_websocket)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// A configuration with the defaults.
    pub fn new<S: AsRef<str>>(
        ari_url: &str,
        user: &str,
        password: &str,
        nats_url: &str,
        apps: impl IntoIterator<Item = S>,
    ) -> ProxyConfig {
        ProxyConfig {
            ari_url: ari_url.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            nats_url: nats_url.to_string(),
            nats_security: crate::NatsSecurity::default(),
            apps: apps.into_iter().map(|a| a.as_ref().to_string()).collect(),
            prefix: "ari".to_string(),
            announce_interval: Duration::from_secs(1),
            claim_timeout: Duration::from_secs(1),
            claim_attempts: 3,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 512,
            queue_capacity: 65_536,
            max_owned: 1_000_000,
            rest_over_websocket: true,
            hand_over_calls: true,
        }
    }
}

/// Why a proxy could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// The configuration is unusable (no application, a bad URL or credentials).
    Config(String),
    /// NATS could not be reached.
    Nats(async_nats::ConnectError),
    /// A NATS subscription failed.
    Subscribe(async_nats::SubscribeError),
    /// Asterisk could not be reached or refused the credentials.
    Ari(ari_client::Error),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Config(m) => write!(f, "invalid proxy configuration: {m}"),
            ProxyError::Nats(e) => write!(f, "cannot connect to NATS: {e}"),
            ProxyError::Subscribe(e) => write!(f, "NATS subscription failed: {e}"),
            ProxyError::Ari(e) => write!(f, "cannot use Asterisk's ARI: {e}"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Config(_) => None,
            ProxyError::Nats(e) => Some(e),
            ProxyError::Subscribe(e) => Some(e),
            ProxyError::Ari(e) => Some(e),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    events_in: AtomicU64,
    events_out: AtomicU64,
    event_messages: AtomicU64,
    events_held: AtomicU64,
    undecodable: AtomicU64,
    calls_claimed: AtomicU64,
    calls_unclaimed: AtomicU64,
    claims_retried: AtomicU64,
    asterisk_restarts: AtomicU64,
    events_to_lost_instances: AtomicU64,
    rest_requests: AtomicU64,
    rest_refused: AtomicU64,
    rest_failed: AtomicU64,
    rest_over_websocket: AtomicU64,
    publish_errors: AtomicU64,
    instances_lost: AtomicU64,
    resources_released: AtomicU64,
    resources_recovered: AtomicU64,
    apps_replaced: AtomicU64,
    rest_too_large: AtomicU64,
    events_too_large: AtomicU64,
    calls_handed_over: AtomicU64,
    unowned_calls_handed_over: AtomicU64,
    bridges_handed_over: AtomicU64,
    rest_handed_over: AtomicU64,
}

struct State {
    config: ProxyConfig,
    node: String,
    asterisk_version: String,
    /// Asterisk's `status.startup_time` as last read (empty if unknown).
    startup_time: Mutex<String>,
    subjects: Subjects,
    nats: async_nats::Client,
    runtime: TapRuntime,
    /// The client the events come through; with `ws_rest`, REST goes through it too.
    client: Client<TapRuntime>,
    /// REST over the events WebSocket (configured, and Asterisk has it).
    ws_rest: bool,
    endpoint: BaseUrl,
    transport: TransportOptions,
    owners: Mutex<Owners>,
    counters: Counters,
    connected: AtomicBool,
    in_flight: Arc<Semaphore>,
    /// `{p}.inst.{instance}` of the owners seen, built once each (instances are few; the
    /// cache is emptied past [`MAX_CACHED_SUBJECTS`]).
    /// The number of the last event message published on each subject ([`wire::SEQ_HEADER`]).
    seqs: Mutex<HashMap<String, u64>>,
    /// The applications Asterisk moved to another connection (`ApplicationReplaced`).
    replaced: Mutex<Vec<String>>,
    /// Set when every application moved: the proxy stops serving REST.
    retire: tokio::sync::watch::Sender<bool>,
    /// Whether the events connection to Asterisk is up, for the REST server: a proxy whose
    /// Asterisk is unreachable leaves the queue group of `{p}.rest` and `{p}.restapp.{app}`.
    link: tokio::sync::watch::Sender<bool>,
    /// Each owner's subject, how many probes in a row found nobody there, and since when.
    instance_subjects: Mutex<HashMap<Arc<str>, InstanceSubject>>,
    /// `StasisStart` frames of the calls handed over, for the events pump.
    handover: mpsc::Sender<Bytes>,
    /// Channel handed over → the bridges it is in that were released with it: they follow
    /// the instance that takes it; at most [`MAX_HANDED`] channels, emptied past it.
    follow: Mutex<HashMap<Box<str>, Vec<Box<str>>>>,
    /// Channel → the gone instance it was handed over from (whose requests on it are
    /// refused); at most [`MAX_HANDED`], emptied past it.
    handed: Mutex<HashMap<Box<str>, Arc<str>>>,
}

/// Channels handed over remembered at most (to refuse their previous owner's requests).
const MAX_HANDED: usize = 65_536;

/// An owner's subject, how many probes in a row found nobody there, since when, and the
/// event frames published there since the last probe it answered.
type InstanceSubject = (async_nats::Subject, u32, Option<Instant>, u64);

/// Messages each of the proxy's subscriptions (REST requests, pings, health) buffers.
const PROXY_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Instance subjects cached at most.
const MAX_CACHED_SUBJECTS: usize = 4096;

impl State {
    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        // A panic while holding the lock leaves a consistent table (plain inserts/removes).
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subject of the events `owner` owns.
    fn instance_subject(&self, owner: &Arc<str>) -> async_nats::Subject {
        let mut cache = self
            .instance_subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((s, _, _, sent)) = cache.get_mut(owner) {
            *sent += 1;
            return s.clone();
        }
        if cache.len() >= MAX_CACHED_SUBJECTS {
            cache.clear();
        }
        let s = async_nats::Subject::from(self.subjects.instance(owner));
        cache.insert(owner.clone(), (s.clone(), 0, None, 1));
        s
    }

    fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let (owned, refused) = {
            let o = self.owners();
            (o.len() as u64, o.refused)
        };
        ProxyStats {
            node: self.node.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            events_in: c.events_in.load(Ordering::Relaxed),
            events_out: c.events_out.load(Ordering::Relaxed),
            event_messages: c.event_messages.load(Ordering::Relaxed),
            events_held: c.events_held.load(Ordering::Relaxed),
            events_dropped: self.runtime.tap().dropped.load(Ordering::Relaxed),
            undecodable: c.undecodable.load(Ordering::Relaxed),
            calls_claimed: c.calls_claimed.load(Ordering::Relaxed),
            calls_unclaimed: c.calls_unclaimed.load(Ordering::Relaxed),
            claims_retried: c.claims_retried.load(Ordering::Relaxed),
            asterisk_restarts: c.asterisk_restarts.load(Ordering::Relaxed),
            events_to_lost_instances: c.events_to_lost_instances.load(Ordering::Relaxed),
            rest_requests: c.rest_requests.load(Ordering::Relaxed),
            rest_refused: c.rest_refused.load(Ordering::Relaxed),
            rest_failed: c.rest_failed.load(Ordering::Relaxed),
            rest_over_websocket: c.rest_over_websocket.load(Ordering::Relaxed),
            publish_errors: c.publish_errors.load(Ordering::Relaxed),
            instances_lost: c.instances_lost.load(Ordering::Relaxed),
            resources_released: c.resources_released.load(Ordering::Relaxed),
            resources_recovered: c.resources_recovered.load(Ordering::Relaxed),
            apps_replaced: c.apps_replaced.load(Ordering::Relaxed),
            rest_too_large: c.rest_too_large.load(Ordering::Relaxed),
            events_too_large: c.events_too_large.load(Ordering::Relaxed),
            calls_handed_over: c.calls_handed_over.load(Ordering::Relaxed),
            unowned_calls_handed_over: c.unowned_calls_handed_over.load(Ordering::Relaxed),
            bridges_handed_over: c.bridges_handed_over.load(Ordering::Relaxed),
            rest_handed_over: c.rest_handed_over.load(Ordering::Relaxed),
            owned_resources: owned,
            ownership_refused: refused,
        }
    }

    fn announcement(&self, up: bool) -> Bytes {
        let a = Announce {
            node: self.node.clone(),
            apps: self.config.apps.clone(),
            asterisk_version: self.asterisk_version.clone(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            interval_ms: self.config.announce_interval.as_millis() as u64,
            connected: self.connected.load(Ordering::Relaxed),
            up,
            startup_time: self
                .startup_time
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        Bytes::from(serde_json::to_vec(&a).unwrap_or_default())
    }

    /// Publishes a batch of `frames` frames ([`wire::BATCH_HEADER`]).
    async fn publish_batch(&self, subject: async_nats::Subject, frames: usize, payload: Bytes) {
        let mut h = async_nats::HeaderMap::new();
        h.insert(wire::NODE_HEADER, self.node.as_str());
        h.insert(wire::BATCH_HEADER, frames.to_string().as_str());
        self.publish(subject, h, payload, frames).await;
    }

    /// The number of the next event message on `subject` ([`wire::SEQ_HEADER`]). A number
    /// taken and not published is a gap the receivers count as a lost message.
    fn next_seq(&self, subject: &async_nats::Subject) -> u64 {
        let mut seqs = self.seqs.lock().unwrap_or_else(|p| p.into_inner());
        match seqs.get_mut(subject.as_str()) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                if seqs.len() >= MAX_CACHED_SUBJECTS {
                    // Receivers see the numbers start again, as after a restart.
                    seqs.clear();
                }
                seqs.insert(subject.to_string(), 1);
                1
            }
        }
    }

    /// Publishes an event message carrying `frames` frames.
    async fn publish(
        &self,
        subject: async_nats::Subject,
        headers: async_nats::HeaderMap,
        payload: Bytes,
        frames: usize,
    ) {
        let mut headers = headers;
        let seq = self.next_seq(&subject);
        headers.insert(wire::SEQ_HEADER, seq.to_string().as_str());
        match self
            .nats
            .publish_with_headers(subject, headers, payload)
            .await
        {
            Ok(()) => {
                self.counters
                    .events_out
                    .fetch_add(frames as u64, Ordering::Relaxed);
                self.counters.event_messages.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "publish failed");
            }
        }
    }
}

/// A running proxy. Dropping it stops it without a goodbye (as a crash would); prefer
/// [`Proxy::stop`].
pub struct Proxy {
    state: Arc<State>,
    client: Client<TapRuntime>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("node", &self.state.node)
            .field("config", &self.state.config)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Connects to NATS and to Asterisk (reads its entity id: the node id), registers the
    /// applications and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        if config.apps.is_empty() {
            return Err(ProxyError::Config(
                "at least one application (--app)".into(),
            ));
        }
        ari_proto::session::check_apps(&config.apps)
            .map_err(|e| ProxyError::Config(e.to_string()))?;
        let credentials = Credentials::new(config.user.clone(), config.password.clone())
            .map_err(|e| ProxyError::Config(e.to_string()))?;
        let endpoint = BaseUrl::new(&config.ari_url, credentials)
            .map_err(|e| ProxyError::Config(e.to_string()))?;
        let (runtime, frames) = TapRuntime::new(TokioRuntime::new(), config.queue_capacity);
        let client = Client::builder_with_runtime(
            &config.ari_url,
            &config.user,
            &config.password,
            runtime.clone(),
        )
        .request_timeout(config.request_timeout)
        .build()
        .map_err(ProxyError::Ari)?;
        let info = client
            .asterisk()
            .get_info()
            .await
            .map_err(ProxyError::Ari)?;
        let startup_time = info
            .status
            .as_ref()
            .map(|s| s.startup_time.to_string())
            .unwrap_or_default();
        let (node, version) = match info.system {
            Some(system) if !system.entity_id.is_empty() => {
                (String::from(system.entity_id), String::from(system.version))
            }
            _ => {
                return Err(ProxyError::Config(
                    "Asterisk reported no entity id (system.entity_id of GET asterisk/info)".into(),
                ))
            }
        };
        let ws_rest = config.rest_over_websocket && rest_over_websocket_available(&version);
        let client = if ws_rest {
            Client::builder_with_runtime(
                &config.ari_url,
                &config.user,
                &config.password,
                runtime.clone(),
            )
            .request_timeout(config.request_timeout)
            .rest_transport(RestTransport::WebSocket)
            .build()
            .map_err(ProxyError::Ari)?
        } else {
            client
        };
        let nats = crate::connect_nats(
            &config.nats_url,
            &config.nats_security,
            &format!("ari-proxy {node}"),
            None,
            Arc::default(),
            PROXY_SUBSCRIPTION_CAPACITY,
        )
        .await
        .map_err(ProxyError::Nats)?;
        let (handover, handed_over) = mpsc::channel(MAX_HELD);
        let state = Arc::new(State {
            handover,
            handed: Mutex::new(HashMap::new()),
            follow: Mutex::new(HashMap::new()),
            subjects: Subjects::new(&config.prefix),
            node,
            asterisk_version: version,
            startup_time: Mutex::new(startup_time),
            nats,
            runtime,
            client: client.clone(),
            ws_rest,
            endpoint,
            transport: TransportOptions::default(),
            owners: Mutex::new(Owners::new(config.max_owned)),
            counters: Counters::default(),
            connected: AtomicBool::new(false),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            instance_subjects: Mutex::new(HashMap::new()),
            replaced: Mutex::new(Vec::new()),
            retire: tokio::sync::watch::Sender::new(false),
            link: tokio::sync::watch::Sender::new(false),
            seqs: Mutex::new(HashMap::new()),
            config,
        });
        let s = &state.subjects;
        let nats = &state.nats;
        let rest_node = nats
            .queue_subscribe(s.rest_node(&state.node), wire::PROXY_QUEUE.to_string())
            .await
            .map_err(ProxyError::Subscribe)?;
        let rest_any = join_rest_queue(&state)
            .await
            .map_err(ProxyError::Subscribe)?;
        let ping = nats
            .subscribe(s.ping())
            .await
            .map_err(ProxyError::Subscribe)?;
        let health = nats
            .subscribe(s.health(&state.node))
            .await
            .map_err(ProxyError::Subscribe)?;
        // Requests sent once this returns find the proxy: its subscriptions are in effect at
        // the server (a message of its own came back through it after them).
        confirm_subscriptions(nats).await?;
        // A restarted proxy: the instances say which of the node's resources they own, before
        // any event is routed.
        recover_owners(&state, None).await;
        // Before the applications are registered, no new call is being offered: the calls in
        // them that nobody owns now are those whose instance did not answer.
        let unowned = if state.config.hand_over_calls {
            unowned_channels(&state).await
        } else {
            Vec::new()
        };

        let mut tasks = vec![
            tokio::spawn(watch_connection(state.clone(), client.connection_events())),
            tokio::spawn(pump_events(state.clone(), frames, handed_over)),
            tokio::spawn(serve_rest(state.clone(), rest_node, rest_any)),
            tokio::spawn(announce(state.clone(), ping)),
            tokio::spawn(serve_health(state.clone(), health)),
            tokio::spawn(watch_instances(state.clone())),
        ];
        client
            .start(&state.config.apps)
            .await
            .map_err(ProxyError::Ari)?;
        if !unowned.is_empty() {
            tasks.push(tokio::spawn(hand_over_unowned(state.clone(), unowned)));
        }
        tracing::info!(node = %state.node, apps = ?state.config.apps, "ari-proxy serving");
        Ok(Proxy {
            state,
            client,
            tasks,
        })
    }

    /// The node id (Asterisk's entity id).
    pub fn node(&self) -> &str {
        &self.state.node
    }

    /// The counters (also answered on `{prefix}.health.{node}`).
    pub fn stats(&self) -> ProxyStats {
        self.state.stats()
    }

    /// Announces the node down, unregisters the applications and stops (each step bounded to
    /// a second: NATS or Asterisk may be gone).
    pub async fn stop(mut self) {
        // The tasks first: a periodic announcement sent after the goodbye would bring the
        // node back up.
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let s = &self.state;
        let bye = async {
            let _ = s
                .nats
                .publish(s.subjects.announce(), s.announcement(false))
                .await;
            let _ = s.nats.flush().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.stop()).await;
        // Unsubscribes: requests to the node are refused by NATS at once from now on.
        let _ = tokio::time::timeout(Duration::from_secs(1), s.nats.drain()).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Waits until nats-server has handled this connection's subscriptions (it handles a
/// connection's commands in order: a message of its own coming back shows it), 10 s at most.
async fn confirm_subscriptions(nats: &async_nats::Client) -> Result<(), ProxyError> {
    let inbox = nats.new_inbox();
    let mut echo = nats
        .subscribe(inbox.clone())
        .await
        .map_err(ProxyError::Subscribe)?;
    let sent = async {
        nats.publish(inbox, Bytes::new()).await.ok()?;
        nats.flush().await.ok()?;
        echo.next().await
    };
    match tokio::time::timeout(Duration::from_secs(10), sent).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(ProxyError::Config(
            "NATS did not confirm the proxy's subscriptions within 10 s".into(),
        )),
    }
}

/// Asks the instances which of this node's resources they own ([`Subjects::owned`]) and
/// records their answers for `claim_timeout` (at most 1 s): a proxy restarted while calls
/// were in progress keeps sending their events to their instances instead of to all.
async fn recover_owners(state: &State, only: Option<&HashSet<&str>>) {
    let inbox = state.nats.new_inbox();
    let Ok(mut answers) = state.nats.subscribe(inbox.clone()).await else {
        return;
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::NODE_HEADER, state.node.as_str());
    let startup = state
        .startup_time
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !startup.is_empty() {
        headers.insert(wire::STARTUP_HEADER, startup.as_str());
    }
    if state
        .nats
        .publish_with_reply_and_headers(state.subjects.owned(), inbox, headers, Bytes::new())
        .await
        .is_err()
    {
        return;
    }
    let window = state.config.claim_timeout.min(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        let Some(owner) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(wire::INSTANCE_HEADER))
            .map(|v| Arc::<str>::from(v.as_str()))
        else {
            continue;
        };
        let Ok(list) = std::str::from_utf8(&msg.payload) else {
            continue;
        };
        let mut n = 0;
        {
            let mut table = state.owners();
            for key in list.split(' ').filter(|k| !k.is_empty()) {
                let Some((kind, id)) = key
                    .split_once(':')
                    .and_then(|(l, id)| Some((wire::kind_of_letter(l)?, id)))
                else {
                    continue;
                };
                if only.is_some_and(|only| kind != ResourceKind::Channel || !only.contains(id)) {
                    continue;
                }
                if table.get(kind, id).is_none() {
                    table.claim(kind, id, &owner);
                    n += 1;
                }
            }
        }
        if n > 0 {
            // Known as an owner: probed, and its lost events counted, as any other.
            let mut cache = state
                .instance_subjects
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if cache.len() < MAX_CACHED_SUBJECTS {
                let subject = async_nats::Subject::from(state.subjects.instance(&owner));
                cache.entry(owner).or_insert((subject, 0, None, 0));
            }
            drop(cache);
            state
                .counters
                .resources_recovered
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}

async fn watch_connection(state: Arc<State>, mut events: ari_client::ConnectionStream) {
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else { continue };
        let up = matches!(ev, ConnectionEvent::Connected { .. });
        let was = state.connected.swap(up, Ordering::Relaxed);
        if was != up {
            tracing::info!(node = %state.node, connected = up, "Asterisk events connection");
            state.link.send_replace(up);
            let _ = state
                .nats
                .publish(state.subjects.announce(), state.announcement(true))
                .await;
        }
    }
}

async fn announce(state: Arc<State>, mut ping: async_nats::Subscriber) {
    let mut tick = tokio::time::interval(state.config.announce_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reply = tokio::select! {
            _ = tick.tick() => None,
            msg = ping.next() => match msg {
                Some(m) => m.reply,
                None => return,
            },
        };
        let payload = state.announcement(true);
        let _ = state
            .nats
            .publish(state.subjects.announce(), payload.clone())
            .await;
        if let Some(reply) = reply {
            let _ = state.nats.publish(reply, payload).await;
        }
    }
}

/// Probes missed in a row before an instance counts as gone...
const PROBES_MISSED: u32 = 3;
/// ... over at least this long (an instance resubscribing after a NATS reconnect on a loaded
/// machine is not gone).
pub(crate) const MIN_ABSENCE: Duration = Duration::from_secs(2);

/// Asks each instance the proxy sends events to whether it is still there, once per
/// announcement interval. One with nothing listening on its subject three times in a row and
/// for at least 2 s (NATS answers "no responders" at once) is gone: its resources are released, so that their
/// later events reach the application's other instances instead of nobody, counted in
/// [`ProxyStats::instances_lost`] and [`ProxyStats::resources_released`]. (Not at the first miss: an
/// instance resubscribing after a NATS reconnect is briefly absent.)
async fn watch_instances(state: Arc<State>) {
    let mut tick = tokio::time::interval(state.config.announce_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let instances: Vec<(Arc<str>, async_nats::Subject)> = state
            .instance_subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, (s, _, _, _))| (id.clone(), s.clone()))
            .collect();
        let probes = instances.into_iter().map(|(id, subject)| {
            let state = state.clone();
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(wire::PROBE_HEADER, "1");
                let request = async_nats::Request::new()
                    .headers(headers)
                    .timeout(Some(state.config.claim_timeout));
                let absent = matches!(
                    state.nats.send_request(subject, request).await,
                    Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders
                );
                (id, absent)
            }
        });
        for (id, absent) in futures_util::future::join_all(probes).await {
            let gone = {
                let mut cache = state
                    .instance_subjects
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let Some((_, missed, since, sent)) = cache.get_mut(&id) else {
                    continue;
                };
                if absent {
                    *missed += 1;
                    since.get_or_insert_with(Instant::now);
                } else {
                    // Everything published there so far reached a live instance.
                    (*missed, *since, *sent) = (0, None, 0);
                }
                let gone =
                    *missed >= PROBES_MISSED && since.is_some_and(|t| t.elapsed() >= MIN_ABSENCE);
                let lost = *sent;
                if gone {
                    cache.remove(&id);
                }
                gone.then_some(lost)
            };
            if let Some(lost) = gone {
                // Published to nobody since the last probe it answered.
                state
                    .counters
                    .events_to_lost_instances
                    .fetch_add(lost, Ordering::Relaxed);
                let crate::owners::Released {
                    n: released,
                    channels,
                    bridges,
                } = state.owners().release(&id);
                if state.config.hand_over_calls && !channels.is_empty() {
                    tokio::spawn(hand_over(
                        state.clone(),
                        Some(id.clone()),
                        channels,
                        bridges,
                    ));
                }
                if released > 0 {
                    state
                        .counters
                        .instances_lost
                        .fetch_add(1, Ordering::Relaxed);
                    state
                        .counters
                        .resources_released
                        .fetch_add(released as u64, Ordering::Relaxed);
                }
                tracing::warn!(node = %state.node, instance = %id, released, lost, "instance gone; its resources' events now go to the other instances");
            }
        }
    }
}

/// Offers the calls of the gone instance `from` (its channels; `None`: an owner the proxy
/// never knew, see [`hand_over_unowned`]) to the other instances: each channel still in one
/// of the proxy's applications gets a `StasisStart` made from its current state, routed as a
/// new call's ([`ProxyConfig::hand_over_calls`]). Each of `bridges` (released with the
/// channels) follows the instance that takes the first of those channels in it
/// ([`ProxyStats::bridges_handed_over`]).
async fn hand_over(
    state: Arc<State>,
    from: Option<Arc<str>>,
    channels: Vec<Box<str>>,
    bridges: Vec<Box<str>>,
) {
    for id in bridges {
        let uri = format!("bridges/{}", utf8_percent_encode(&id, QUERY));
        let req = RestRequest {
            kind: "RESTRequest".into(),
            method: "GET".into(),
            uri: uri.clone(),
            ..RestRequest::default()
        };
        let Ok((200, _, body)) = over_http(&state, http::Method::GET, &uri, &req, None).await
        else {
            continue;
        };
        let Ok(bridge) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        let members = bridge.get("channels").and_then(|c| c.as_array());
        let mut follow = state.follow.lock().unwrap_or_else(|p| p.into_inner());
        if follow.len() >= MAX_HANDED {
            follow.clear();
        }
        for member in members.into_iter().flatten().filter_map(|c| c.as_str()) {
            if channels.iter().any(|c| **c == *member) {
                follow.entry(member.into()).or_default().push(id.clone());
            }
        }
    }
    for id in channels {
        let uri = format!("channels/{}", utf8_percent_encode(&id, QUERY));
        let req = RestRequest {
            kind: "RESTRequest".into(),
            method: "GET".into(),
            uri: uri.clone(),
            ..RestRequest::default()
        };
        let channel = match over_http(&state, http::Method::GET, &uri, &req, None).await {
            Ok((200, _, body)) => serde_json::from_slice::<serde_json::Value>(&body).ok(),
            // Gone (404), or Asterisk unreachable: nothing to hand over.
            _ => None,
        };
        let Some(frame) = channel.and_then(|c| handover_start(&state, c)) else {
            tracing::debug!(node = %state.node, channel = %id, "not handed over: no longer in the application");
            continue;
        };
        if let Some(from) = &from {
            let mut handed = state.handed.lock().unwrap_or_else(|p| p.into_inner());
            if handed.len() >= MAX_HANDED {
                handed.clear();
            }
            handed.insert(id.clone(), from.clone());
        } else {
            state
                .counters
                .unowned_calls_handed_over
                .fetch_add(1, Ordering::Relaxed);
        }
        state
            .counters
            .calls_handed_over
            .fetch_add(1, Ordering::Relaxed);
        let from = from.as_deref().unwrap_or("(no instance claimed it)");
        tracing::warn!(node = %state.node, channel = %id, from, "call of a gone instance offered to the others");
        if state.handover.send(frame).await.is_err() {
            return;
        }
    }
}

/// The channels in one of the proxy's applications on Asterisk (`GET channels`) that no
/// instance owns: at the proxy's start, before it registers its applications, these are the
/// calls whose owner did not answer [`recover_owners`] (it died while the node had no proxy:
/// the previous proxy, which knew it, is gone) or that no instance ever took.
async fn unowned_channels(state: &State) -> Vec<Box<str>> {
    let req = RestRequest {
        kind: "RESTRequest".into(),
        method: "GET".into(),
        uri: "channels".into(),
        ..RestRequest::default()
    };
    let list = match over_http(state, http::Method::GET, "channels", &req, None).await {
        Ok((200, _, body)) => serde_json::from_slice::<Vec<serde_json::Value>>(&body).ok(),
        _ => None,
    };
    let Some(list) = list else {
        tracing::warn!(node = %state.node, "could not list Asterisk's channels: calls no instance claimed are not handed over");
        return Vec::new();
    };
    let table = state.owners();
    list.iter()
        .filter(|c| stasis_app(state, c).is_some())
        .filter_map(|c| c.get("id")?.as_str())
        .filter(|id| table.get(ResourceKind::Channel, id).is_none())
        .map(Box::from)
        .collect()
}

/// Hands over the channels `candidates` ([`unowned_channels`] at the proxy's start) that still
/// have no owner once an instance that was slow to answer [`recover_owners`] has had the time
/// a gone instance is given ([`MIN_ABSENCE`], three announcement intervals, and a new call's
/// offers): asked again then, those an instance claims keep it; the others are offered to the
/// application's instances like a gone instance's ([`ProxyStats::unowned_calls_handed_over`]).
/// Their former owner is not known here, so its requests are not refused should it come back.
async fn hand_over_unowned(state: Arc<State>, candidates: Vec<Box<str>>) {
    let grace = MIN_ABSENCE
        .max(state.config.announce_interval * PROBES_MISSED)
        .max(state.config.claim_timeout * state.config.claim_attempts.max(1));
    tokio::time::sleep(grace).await;
    let only: HashSet<&str> = candidates.iter().map(|c| &**c).collect();
    recover_owners(&state, Some(&only)).await;
    let unowned: Vec<Box<str>> = {
        let table = state.owners();
        candidates
            .iter()
            .filter(|id| table.get(ResourceKind::Channel, id).is_none())
            .cloned()
            .collect()
    };
    if !unowned.is_empty() {
        tracing::warn!(node = %state.node, calls = unowned.len(), "calls in the application that no instance claims (their instance died while the node had no proxy): handed over");
        let bridges = unowned_bridges(&state).await;
        hand_over(state, None, unowned, bridges).await;
    }
}

/// The bridges on Asterisk (`GET bridges`) that no instance owns.
async fn unowned_bridges(state: &State) -> Vec<Box<str>> {
    let req = RestRequest {
        kind: "RESTRequest".into(),
        method: "GET".into(),
        uri: "bridges".into(),
        ..RestRequest::default()
    };
    let list = match over_http(state, http::Method::GET, "bridges", &req, None).await {
        Ok((200, _, body)) => serde_json::from_slice::<Vec<serde_json::Value>>(&body).ok(),
        _ => None,
    };
    let table = state.owners();
    list.iter()
        .flatten()
        .filter_map(|b| b.get("id")?.as_str())
        .filter(|id| table.get(ResourceKind::Bridge, id).is_none())
        .map(Box::from)
        .collect()
}

/// The `Stasis()` application a channel (as Asterisk describes it) is in, with its arguments,
/// when it is one of the proxy's.
fn stasis_app(state: &State, channel: &serde_json::Value) -> Option<(String, Vec<String>)> {
    let dialplan = channel.get("dialplan")?;
    if dialplan.get("app_name")?.as_str()? != "Stasis" {
        return None;
    }
    let data = dialplan.get("app_data")?.as_str()?;
    let mut parts = crate::dialplan::stasis_args(data).into_iter();
    let app = parts.next()?;
    if !state.config.apps.contains(&app) {
        return None;
    }
    Some((app, parts.collect()))
}

/// The `StasisStart` of a handed-over call, from its channel as Asterisk describes it now;
/// `None` when the channel is not in one of the proxy's applications.
fn handover_start(state: &State, channel: serde_json::Value) -> Option<Bytes> {
    let (app, args) = stasis_app(state, &channel)?;
    let timestamp = asterisk_timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let frame = serde_json::json!({
        "type": "StasisStart",
        "application": app,
        "timestamp": timestamp,
        "args": args,
        "channel": channel,
        "asterisk_id": state.node,
    });
    serde_json::to_vec(&frame).ok().map(Bytes::from)
}

/// A time (since the Unix epoch) as Asterisk writes event timestamps
/// (`2026-11-26T12:14:21.059+0000`, UTC).
fn asterisk_timestamp(now: Duration) -> String {
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

async fn serve_health(state: Arc<State>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            let body = serde_json::to_vec(&state.stats()).unwrap_or_default();
            let _ = state.nats.publish(reply, body.into()).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// Frames at most waiting for new calls' offers (see [`Holding`]); past it the proxy stops
/// reading from Asterisk until offers are answered.
const MAX_HELD: usize = 65_536;

/// Reads the frames of the events WebSocket in bursts: every frame already read joins its
/// subject's batch ([`Outbox`]); the batches are published as soon as nothing more is ready
/// (or one is full), so batching adds no wait. New calls are offered to the instances without
/// stopping the other calls' events ([`Holding`]).
async fn pump_events(
    state: Arc<State>,
    mut frames: mpsc::Receiver<Bytes>,
    mut handed_over: mpsc::Receiver<Bytes>,
) {
    let (claims_tx, mut claims) = mpsc::channel(MAX_HELD);
    let mut out = Outbox::default();
    let mut holding = Holding::new(claims_tx);
    let mut connections = 0u64;
    loop {
        tokio::select! {
            biased;
            Some((id, owner)) = claims.recv() => {
                holding.resolved.insert(id, owner);
                while let Ok((id, owner)) = claims.try_recv() {
                    holding.resolved.insert(id, owner);
                }
                holding.release(&state, &mut out).await;
            }
            // A gone instance's call: offered again as a new one, after the frames read
            // before it (the channel's later frames wait for the offer's answer).
            Some(frame) = handed_over.recv(), if holding.held.len() < MAX_HELD => {
                route_event(&state, frame, &mut out, Some(&mut holding), None).await;
            }
            frame = frames.recv(), if holding.held.len() < MAX_HELD => {
                let Some(mut frame) = frame else { break };
                loop {
                    if frame[..] == *crate::tap::NEW_CONNECTION {
                        connections += 1;
                        if connections > 1 {
                            // The previous connection's frames go out first.
                            out.flush_all(&state).await;
                            check_restart(&state).await;
                        }
                    } else {
                        route_event(&state, frame, &mut out, Some(&mut holding), None).await;
                    }
                    if holding.held.len() >= MAX_HELD {
                        break;
                    }
                    let Ok(next) = frames.try_recv() else { break };
                    frame = next;
                }
            }
        }
        out.flush_all(&state).await;
    }
}

/// Asterisk's `status.startup_time` now, over HTTP (`None` if it could not be read).
async fn read_startup_time(state: &State) -> Option<String> {
    let req = RestRequest {
        kind: "RESTRequest".into(),
        method: "GET".into(),
        uri: "asterisk/info?only=status".into(),
        ..RestRequest::default()
    };
    let (status, _, body) = over_http(
        state,
        http::Method::GET,
        "asterisk/info?only=status",
        &req,
        None,
    )
    .await
    .ok()?;
    if !(200..300).contains(&status) {
        return None;
    }
    let info: ari_proto::models::AsteriskInfo = serde_json::from_slice(&body).ok()?;
    Some(info.status?.startup_time.to_string())
}

/// The events connection came back: if Asterisk restarted meanwhile (a new startup time),
/// its resources are gone without an event. Before any frame of the new connection is routed,
/// the owners table is emptied and the instances are told ([`wire::RESTARTED_HEADER`]).
async fn check_restart(state: &Arc<State>) {
    let Some(now) = read_startup_time(state).await else {
        tracing::warn!(node = %state.node, "could not ask Asterisk whether it restarted");
        return;
    };
    let before = std::mem::replace(
        &mut *state.startup_time.lock().unwrap_or_else(|p| p.into_inner()),
        now.clone(),
    );
    if before.is_empty() || before == now {
        return;
    }
    state
        .counters
        .asterisk_restarts
        .fetch_add(1, Ordering::Relaxed);
    let owned = state.owners().take_all();
    tracing::warn!(node = %state.node, startup_time = %now, resources = owned.len(), "Asterisk restarted: its resources are gone");
    // Each instance the proxy sent events to, with the resources it owned here.
    let mut lists: HashMap<Arc<str>, String> = state
        .instance_subjects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .map(|id| (id.clone(), String::new()))
        .collect();
    for (kind, id, owner) in owned {
        let Some(l) = wire::kind_letter(kind) else {
            continue;
        };
        let list = lists.entry(owner).or_default();
        if !list.is_empty() {
            list.push(' ');
        }
        list.push(l);
        list.push(':');
        list.push_str(&id);
    }
    let headers = || {
        let mut h = async_nats::HeaderMap::new();
        h.insert(wire::NODE_HEADER, state.node.as_str());
        h.insert(wire::RESTARTED_HEADER, now.as_str());
        h
    };
    for (instance, list) in lists {
        let subject = async_nats::Subject::from(state.subjects.instance(&instance));
        state
            .publish(subject, headers(), Bytes::from(list), 0)
            .await;
    }
    for app in &state.config.apps {
        let subject = async_nats::Subject::from(state.subjects.event(app, &state.node));
        state.publish(subject, headers(), Bytes::new(), 0).await;
    }
    let _ = state
        .nats
        .publish(state.subjects.announce(), state.announcement(true))
        .await;
}

/// The frames waiting for new calls' offers. A new call's `StasisStart` is offered to the
/// application's instances at once and waits here for the answer, with every later frame
/// naming a resource of a waiting frame (so each resource's frames keep their order); the
/// other calls' frames go on meanwhile. Frames leave in the order they came, each as soon as
/// the offers before it are answered.
struct Holding {
    held: VecDeque<Held>,
    /// Resource id → frames held that name it (ids only: a channel and a bridge with the
    /// same id would only make a frame wait that need not).
    ids: HashMap<String, usize>,
    /// Answered offers not yet at the front.
    resolved: HashMap<u64, Option<Arc<str>>>,
    next: u64,
    claims_tx: mpsc::Sender<(u64, Option<Arc<str>>)>,
}

struct Held {
    frame: Bytes,
    ids: Vec<String>,
    /// The offer of a new call's `StasisStart`.
    offer: Option<u64>,
}

impl Holding {
    fn new(claims_tx: mpsc::Sender<(u64, Option<Arc<str>>)>) -> Holding {
        Holding {
            held: VecDeque::new(),
            ids: HashMap::new(),
            resolved: HashMap::new(),
            next: 0,
            claims_tx,
        }
    }

    /// Whether `r` names a resource of a frame held.
    fn holds(&self, r: &Routing<'_>) -> bool {
        !self.held.is_empty() && r.ids().any(|id| self.ids.contains_key(id))
    }

    fn hold(&mut self, state: &State, frame: Bytes, r: &Routing<'_>, offer: Option<u64>) {
        state.counters.events_held.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<String> = r.ids().map(str::to_string).collect();
        for id in &ids {
            *self.ids.entry(id.clone()).or_default() += 1;
        }
        self.held.push_back(Held { frame, ids, offer });
    }

    /// Offers the new call of `frame` to the instances (answered through `claims_tx`) and
    /// holds the frame meanwhile.
    fn offer(&mut self, state: &Arc<State>, frame: Bytes, r: &Routing<'_>) {
        let id = self.next;
        self.next += 1;
        let (state2, app, frame2, tx) = (
            state.clone(),
            r.app.to_string(),
            frame.clone(),
            self.claims_tx.clone(),
        );
        tokio::spawn(async move {
            let owner = claim(&state2, &app, &frame2).await;
            let _ = tx.send((id, owner)).await;
        });
        self.hold(state, frame, r, Some(id));
    }

    /// Routes the frames at the front whose offers (and the offers before them) are answered.
    async fn release(&mut self, state: &Arc<State>, out: &mut Outbox) {
        while let Some(front) = self.held.front() {
            let taken = match front.offer {
                Some(id) => match self.resolved.remove(&id) {
                    Some(owner) => Some(owner),
                    None => break,
                },
                None => None,
            };
            let Some(h) = self.held.pop_front() else {
                break;
            };
            for id in &h.ids {
                if let Some(n) = self.ids.get_mut(id.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        self.ids.remove(id.as_str());
                    }
                }
            }
            route_event(state, h.frame, out, None, taken).await;
        }
    }
}

/// The batches being filled, one per subject (a burst names few: the owning instances and
/// the unowned events' subject), in the order their subjects first came.
#[derive(Default)]
struct Outbox {
    batches: Vec<(async_nats::Subject, BatchWriter)>,
    /// Scratch for a frame's resource lists (kept to spare an allocation per frame).
    resources: String,
    finals: String,
    /// The NATS server's max_payload, read once per burst (0: not read yet).
    max_payload: usize,
}

impl Outbox {
    /// Adds `frame` to `subject`'s batch (publishing the batch when full, or first when the
    /// frame would take it past the NATS server's max_payload); a frame that does not fit a
    /// record is published alone, its resources in headers. A frame that cannot fit any
    /// message is dropped alone ([`ProxyStats::events_too_large`]): the batch is not lost
    /// with it.
    async fn add(&mut self, state: &State, subject: async_nats::Subject, frame: &[u8]) {
        let i = match self.batches.iter().position(|(s, _)| *s == subject) {
            Some(i) => i,
            None => {
                self.batches.push((subject, BatchWriter::new()));
                self.batches.len() - 1
            }
        };
        let (subject, batch) = &mut self.batches[i];
        // NATS refuses a message larger than its max_payload (the headers count too): one
        // such frame in a batch would lose the whole batch.
        if self.max_payload == 0 {
            self.max_payload = match state.nats.server_info().max_payload {
                0 => DEFAULT_MAX_PAYLOAD,
                m => m,
            };
        }
        let max = self.max_payload;
        let room = max.saturating_sub(EVENT_HEADROOM.saturating_add(state.node.len()));
        let record =
            BatchWriter::record_bytes(frame.len(), self.resources.len(), self.finals.len());
        if record > room {
            // After what the subject's batch holds, so that the gap comes where it was.
            if !batch.is_empty() {
                let (n, payload) = batch.take();
                state.publish_batch(subject.clone(), n, payload).await;
            }
            // Its number is skipped: the instance counts a lost message.
            state.next_seq(subject);
            state
                .counters
                .events_too_large
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                node = %state.node,
                subject = %subject,
                event = %frame_type(frame),
                bytes = frame.len(),
                max_payload = max,
                "event larger than the NATS server's max_payload dropped; raise max_payload in nats-server's configuration"
            );
            return;
        }
        if !batch.is_empty() && batch.bytes().saturating_add(record) > room {
            let (n, payload) = batch.take();
            state.publish_batch(subject.clone(), n, payload).await;
        }
        if batch.push(frame, &self.resources, &self.finals).is_err() {
            // After what the subject's batch holds, to keep the order.
            if !batch.is_empty() {
                let (n, payload) = batch.take();
                state.publish_batch(subject.clone(), n, payload).await;
            }
            let headers = event_headers(&state.node, &self.resources, &self.finals);
            state
                .publish(subject.clone(), headers, Bytes::copy_from_slice(frame), 1)
                .await;
            return;
        }
        if batch.is_full() {
            let (n, payload) = batch.take();
            state.publish_batch(subject.clone(), n, payload).await;
        }
    }

    /// Publishes every batch not empty, in the order their subjects first came.
    async fn flush_all(&mut self, state: &State) {
        // Read again at the next burst (a reconnection may reach another server).
        self.max_payload = 0;
        for (subject, mut batch) in self.batches.drain(..) {
            if !batch.is_empty() {
                let (n, payload) = batch.take();
                state.publish_batch(subject, n, payload).await;
            }
        }
    }
}

/// The NATS server's max_payload assumed while it is not known (nats-server's default).
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Bytes kept under the NATS server's max_payload for an event message's headers (node,
/// sequence, batch count; a frame published alone has its resources in headers too, counted
/// with the frame).
const EVENT_HEADROOM: usize = 256;

/// The type of an event frame, for a log line (`?` when it has none).
fn frame_type(frame: &[u8]) -> String {
    if let Some(s) = scan::scan(frame) {
        return s.ty.into_owned();
    }
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        ty: String,
    }
    serde_json::from_slice::<Typed>(frame)
        .map(|t| t.ty)
        .unwrap_or_else(|_| "?".to_string())
}

/// `c:ID b:ID …` (the [`wire::RESOURCES_HEADER`] format) into `out`.
fn refs_header<'a>(out: &mut String, refs: impl Iterator<Item = ResourceRef<'a>>) {
    out.clear();
    for r in refs {
        if let Some(l) = wire::kind_letter(r.kind) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push(l);
            out.push(':');
            out.push_str(r.id);
        }
    }
}

fn event_headers(node: &str, resources: &str, finals: &str) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(wire::NODE_HEADER, node);
    if !resources.is_empty() {
        h.insert(wire::RESOURCES_HEADER, resources);
    }
    if !finals.is_empty() {
        h.insert(wire::FINAL_HEADER, finals);
    }
    h
}

/// What routing needs of one event: from the raw frame ([`scan`]) for the frequent types,
/// else from the typed event.
struct Routing<'a> {
    /// A `StasisStart`: a new call (its channel), offered to the application's instances
    /// when nothing it names has an owner.
    start: Option<&'a str>,
    /// A `StasisEnd`: its channel.
    end: Option<&'a str>,
    /// The application.
    app: &'a str,
    /// The resources the event concerns (owned kinds only, in `Event::resources` order),
    /// and whether the event is their last.
    resources: Vec<(ResourceKind, &'a str, bool)>,
}

impl<'a> Routing<'a> {
    /// The ids of the resources it names (the new or ended channel among them).
    fn ids(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.resources
            .iter()
            .map(|(_, id, _)| *id)
            .chain(self.start)
            .chain(self.end)
    }

    fn from_scan(s: &'a scan::Scanned<'a>, default_app: &'a str) -> Routing<'a> {
        let first = s.resources.first().map(|(_, id)| &**id);
        Routing {
            start: (s.ty == "StasisStart").then_some(first.unwrap_or("")),
            end: (s.ty == "StasisEnd").then_some(first.unwrap_or("")),
            app: s
                .application
                .as_deref()
                .filter(|a| !a.is_empty())
                .unwrap_or(default_app),
            resources: s
                .resources
                .iter()
                .enumerate()
                .map(|(i, (k, id))| (*k, &**id, s.is_final_for(i)))
                .collect(),
        }
    }

    fn from_event(event: &'a Event, default_app: &'a str) -> Routing<'a> {
        Routing {
            start: match event {
                Event::StasisStart(e) => Some(&e.channel.id),
                _ => None,
            },
            end: match event {
                Event::StasisEnd(e) => Some(&e.channel.id),
                _ => None,
            },
            // A frame without one (the typed event then holds "") is the default app's, as
            // in `from_scan`.
            app: event
                .application()
                .filter(|a| !a.is_empty())
                .unwrap_or(default_app),
            resources: event
                .resources()
                .iter()
                .filter(|r| wire::kind_letter(r.kind).is_some())
                .map(|r| (r.kind, r.id, event.is_final_for(r)))
                .collect(),
        }
    }
}

/// Adds one frame to the batches of the instances owning a resource it names, else to the
/// unowned events' batch; a new call is first offered to the application's queue group. The
/// frequent event types are routed from the raw frame ([`scan`], no typed event built); the
/// others are decoded. A frame just read (`holding` given) waits in it when it is a new call
/// or names a resource of a frame waiting there; `taken` is the answer to a held new call's
/// offer.
async fn route_event(
    state: &Arc<State>,
    frame: Bytes,
    out: &mut Outbox,
    holding: Option<&mut Holding>,
    taken: Option<Option<Arc<str>>>,
) {
    let default_app = state.config.apps.first().map(String::as_str).unwrap_or("");
    let scanned;
    let event;
    let routing = match scan::scan(&frame) {
        Some(s) => {
            scanned = s;
            Routing::from_scan(&scanned, default_app)
        }
        None => match Event::decode(&frame) {
            // The answer to one of the proxy's own requests (REST over the WebSocket): the
            // client's session takes it; it is no event to publish.
            Ok(Event::RESTResponse(_)) => return,
            // About this proxy's connection, not the application: another connection (a
            // second proxy for this Asterisk, as in a rolling deploy) took the application;
            // Asterisk sends this one nothing more for it.
            Ok(Event::ApplicationReplaced(e)) => {
                state.counters.apps_replaced.fetch_add(1, Ordering::Relaxed);
                retire_if_replaced(state, &e.application);
                tracing::warn!(node = %state.node, app = %e.application, "another connection took the application from this proxy (ApplicationReplaced): it receives no more of its events");
                return;
            }
            Ok(e) => {
                event = e;
                Routing::from_event(&event, default_app)
            }
            Err(e) => {
                state.counters.events_in.fetch_add(1, Ordering::Relaxed);
                state.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "undecodable frame published unowned");
                let subject = state.subjects.event(default_app, &state.node);
                out.resources.clear();
                out.finals.clear();
                out.add(state, subject.into(), &frame).await;
                return;
            }
        },
    };
    if let Some(holding) = holding {
        if holding.holds(&routing) {
            holding.hold(state, frame.clone(), &routing, None);
            return;
        }
        if routing.start.is_some() && !has_owner(state, &routing) {
            holding.offer(state, frame.clone(), &routing);
            return;
        }
    }
    route(state, &frame, routing, taken, out).await;
}

/// Whether a resource `r` names has an owning instance.
fn has_owner(state: &State, r: &Routing<'_>) -> bool {
    let table = state.owners();
    r.resources
        .iter()
        .any(|(kind, id, _)| table.get(*kind, id).is_some())
}

/// Routes one frame; `taken` is the answer to its offer when it is a new call already offered.
async fn route(
    state: &Arc<State>,
    frame: &Bytes,
    r: Routing<'_>,
    taken: Option<Option<Arc<str>>>,
    out: &mut Outbox,
) {
    state.counters.events_in.fetch_add(1, Ordering::Relaxed);
    let refs = |finals: bool| {
        r.resources
            .iter()
            .filter(move |(_, _, last)| !finals || *last)
            .map(|(k, id, _)| ResourceRef::new(*k, id))
    };

    // Owners of the resources named, in order, without repeats.
    let mut owners: Vec<Arc<str>> = Vec::new();
    {
        let mut table = state.owners();
        table.expire(Instant::now());
        for (kind, id, _) in &r.resources {
            if let Some(o) = table.get(*kind, id) {
                if !owners.contains(o) {
                    owners.push(o.clone());
                }
            }
        }
    }

    if owners.is_empty() {
        if let Some(channel) = r.start {
            let taken = match taken {
                Some(taken) => taken,
                // A new call that waited behind another (it names a resource of a held
                // frame) and is offered only now.
                None => claim(state, r.app, frame).await,
            };
            match taken {
                Some(owner) => {
                    state.counters.calls_claimed.fetch_add(1, Ordering::Relaxed);
                    let bridges = {
                        let mut follow = state.follow.lock().unwrap_or_else(|p| p.into_inner());
                        if follow.is_empty() {
                            None
                        } else {
                            follow.remove(channel)
                        }
                    };
                    {
                        let mut table = state.owners();
                        for (kind, id, _) in &r.resources {
                            table.claim(*kind, id, &owner);
                        }
                        table.claim(ResourceKind::Channel, channel, &owner);
                        // A handed-over call's bridges follow it, unless another call in them
                        // took them first.
                        for bridge in bridges.into_iter().flatten() {
                            if table.get(ResourceKind::Bridge, &bridge).is_none() {
                                table.claim(ResourceKind::Bridge, &bridge, &owner);
                                state
                                    .counters
                                    .bridges_handed_over
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    owners.push(owner);
                }
                None => {
                    state
                        .counters
                        .calls_unclaimed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    } else {
        // Resources paired with an owned one follow it (a Dial's peer, a bridge entered).
        let mut table = state.owners();
        for (kind, id, last) in &r.resources {
            if !last {
                table.claim(*kind, id, &owners[0]);
            }
        }
    }

    refs_header(&mut out.resources, refs(false));
    refs_header(&mut out.finals, refs(true));
    if owners.is_empty() {
        let subject = if r.start.is_some() {
            state.subjects.unclaimed(r.app, &state.node)
        } else {
            state.subjects.event(r.app, &state.node)
        };
        out.add(state, subject.into(), frame).await;
    } else {
        for owner in &owners {
            let subject = state.instance_subject(owner);
            out.add(state, subject, frame).await;
        }
    }

    let mut table = state.owners();
    for (kind, id, last) in &r.resources {
        if *last {
            table.remove(*kind, id);
        }
    }
    if let Some(channel) = r.end {
        table.ending(Instant::now(), channel);
    }
}

/// Offers a new call to the application's queue group; the instance that takes it answers
/// with its id.
async fn claim(state: &Arc<State>, app: &str, frame: &Bytes) -> Option<Arc<str>> {
    let subject = state.subjects.claim(app);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::NODE_HEADER, state.node.as_str());
    // NATS refuses a message larger than its max_payload: an offer carrying such a frame
    // would fail every attempt and leave the call unclaimed. The offer goes without it (the
    // instances do not need it); the frame itself is then dropped alone on its way to the
    // instance that took the call (`events_too_large`, a lost message there).
    let max = match state.nats.server_info().max_payload {
        0 => DEFAULT_MAX_PAYLOAD,
        m => m,
    };
    let frame = if frame
        .len()
        .saturating_add(EVENT_HEADROOM + state.node.len())
        > max
    {
        headers.insert(wire::TOO_LARGE_HEADER, frame.len().to_string().as_str());
        tracing::warn!(node = %state.node, app, bytes = frame.len(), max_payload = max, "a new call's StasisStart is larger than the NATS server's max_payload: offered without it");
        Bytes::new()
    } else {
        frame.clone()
    };
    let attempts = state.config.claim_attempts.max(1);
    // No instance subscribed (NATS answers "no responders" at once) may be a moment of
    // resubscription: the offer is made again until the time the offers would have taken.
    let deadline = tokio::time::Instant::now() + state.config.claim_timeout * attempts;
    let mut attempt = 0;
    let mut pause = NO_RESPONDERS_PAUSE;
    while attempt < attempts {
        let request = async_nats::Request::new()
            .payload(frame.clone())
            .headers(headers.clone())
            .timeout(Some(state.config.claim_timeout));
        match state.nats.send_request(subject.clone(), request).await {
            Ok(reply)
                if reply
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(wire::DECLINED_HEADER).is_some()) =>
            {
                // An instance that stopped taking calls: offered again at once (it left the
                // queue group).
                tracing::debug!(app, attempt, "a new call was declined");
            }
            Ok(reply) => match std::str::from_utf8(&reply.payload) {
                Ok(id) if !id.is_empty() => return Some(Arc::from(id)),
                _ => tracing::warn!("an instance answered a claim without its id"),
            },
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    tracing::warn!(app, "no instance of the application is running");
                    return None;
                }
                state
                    .counters
                    .claims_retried
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep_until((now + pause).min(deadline)).await;
                pause = (pause * 2).min(MAX_NO_RESPONDERS_PAUSE);
                // Not an attempt: nobody was asked.
                continue;
            }
            Err(e) => tracing::warn!(app, attempt, error = %e, "a new call was not taken"),
        }
        attempt += 1;
    }
    None
}

/// First pause before a new call is offered again when no instance was subscribed...
const NO_RESPONDERS_PAUSE: Duration = Duration::from_millis(25);
/// ... doubled each time up to this.
const MAX_NO_RESPONDERS_PAUSE: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------

/// Serves the REST requests of its node's subject and of the queue group. While the events
/// connection to Asterisk is down (Asterisk stopped or unreachable), the proxy leaves the
/// queue group (`{p}.rest`, `{p}.restapp.{app}`: creations and lists then go to the nodes
/// whose Asterisk is up instead of failing here with 502), and joins it again when the connection is back; requests to its own node still
/// come (and fail: only that node has their resource). Once the proxy is retired (another
/// proxy took every application from it: see [`retire_if_replaced`]) it unsubscribes both, so
/// that the requests go to the proxy Asterisk sends the events to. Requests already received
/// are answered.
/// The REST queue group's subscriptions: `{p}.rest` and `{p}.restapp.{app}` for each
/// application ([`Subjects::rest_queue`]).
type RestQueue = futures_util::stream::SelectAll<async_nats::Subscriber>;

/// Joins the REST queue group on each of its subjects.
async fn join_rest_queue(state: &State) -> Result<RestQueue, async_nats::SubscribeError> {
    let mut subs = Vec::new();
    for subject in state.subjects.rest_queue(&state.config.apps) {
        subs.push(
            state
                .nats
                .queue_subscribe(subject, wire::PROXY_QUEUE.to_string())
                .await?,
        );
    }
    Ok(futures_util::stream::select_all(subs))
}

async fn serve_rest(state: Arc<State>, node: async_nats::Subscriber, any: RestQueue) {
    /// The next message of a subscription, if there is one (never, if not).
    async fn next<S>(sub: &mut Option<S>) -> Option<async_nats::Message>
    where
        S: futures_util::Stream<Item = async_nats::Message> + Unpin,
    {
        match sub {
            Some(s) => s.next().await,
            None => std::future::pending().await,
        }
    }
    /// Unsubscribes, draining: the requests NATS sent before it took the unsubscription are
    /// still read and answered (then `None`). (A plain unsubscribe makes the NATS client drop
    /// those still on their way unseen: their requesters waited for their timeout.)
    async fn leave(sub: &mut Option<async_nats::Subscriber>) {
        if let Some(s) = sub {
            let _ = s.drain().await;
        }
    }
    /// Leaves the REST queue group on each of its subjects (as [`leave`]).
    async fn leave_queue(queue: &mut Option<RestQueue>) {
        if let Some(q) = queue {
            for s in q.iter_mut() {
                let _ = s.drain().await;
            }
        }
    }
    let mut retire = state.retire.subscribe();
    let mut link = state.link.subscribe();
    let (mut node, mut any) = (Some(node), Some(any));
    // The queue group's subscriptions left while Asterisk is unreachable, being read to their
    // end.
    let mut leaving: Option<RestQueue> = None;
    let mut retired = false;
    // The queue group is left only after the connection was up once (at the start, `start`
    // returns once it is).
    let mut was_up = *link.borrow();
    while node.is_some() || any.is_some() || leaving.is_some() || !retired {
        let msg = tokio::select! {
            m = next(&mut node) => match m {
                Some(m) => m,
                None => { node = None; continue; }
            },
            m = next(&mut any) => match m {
                Some(m) => m,
                None => { any = None; continue; }
            },
            m = next(&mut leaving) => match m {
                Some(m) => m,
                None => { leaving = None; continue; }
            },
            ok = futures_util::FutureExt::map(retire.wait_for(|r| *r), |r| r.is_ok()), if !retired => {
                retired = true;
                if ok {
                    tracing::warn!(node = %state.node, "every application moved to another proxy: this one stops serving REST");
                    leave(&mut node).await;
                    leave_queue(&mut any).await;
                }
                continue;
            }
            changed = link.changed(), if !retired => {
                if changed.is_err() {
                    retired = true;
                    continue;
                }
                let up = *link.borrow_and_update();
                if !up && was_up && any.is_some() {
                    tracing::warn!(node = %state.node, "Asterisk unreachable: this proxy leaves the cluster's REST queue group until it is back");
                    leave_queue(&mut any).await;
                    leaving = any.take();
                } else if up && any.is_none() {
                    match join_rest_queue(&state).await {
                        Ok(s) => any = Some(s),
                        Err(e) => tracing::warn!(error = %e, "could not join the REST queue group again"),
                    }
                }
                was_up |= up;
                continue;
            }
        };
        serve_one(&state, msg).await;
    }
}

async fn serve_one(state: &Arc<State>, msg: async_nats::Message) {
    let Some(reply) = msg.reply.clone() else {
        return;
    };
    match state.in_flight.clone().try_acquire_owned() {
        Ok(permit) => {
            let state = state.clone();
            tokio::spawn(async move {
                match fenced(&state, &msg) {
                    Some((resp, channel)) => {
                        respond(&state, reply, resp, false, Some(&channel)).await;
                    }
                    None => {
                        let (resp, binary) = forward(&state, &msg).await;
                        respond(&state, reply, resp, binary, None).await;
                    }
                }
                drop(permit);
            });
        }
        Err(_) => {
            state.counters.rest_refused.fetch_add(1, Ordering::Relaxed);
            let resp = RestResponse::local(503, "", "ari-proxy: too many requests in flight");
            respond(state, reply, resp, false, None).await;
        }
    }
}

/// Bytes kept for a REST answer's headers under the NATS server's max_payload.
const REPLY_HEADROOM: usize = 1024;

/// Asterisk moved `app` to another connection: once every application of this proxy has
/// moved (a second proxy for this Asterisk took over), this one is retired from REST.
fn retire_if_replaced(state: &State, app: &str) {
    let mut replaced = state.replaced.lock().unwrap_or_else(|p| p.into_inner());
    if state.config.apps.iter().any(|a| a == app) && !replaced.iter().any(|a| a == app) {
        replaced.push(app.to_string());
    }
    if replaced.len() >= state.config.apps.len() {
        let _ = state.retire.send(true);
    }
}

/// Answers a REST request with `resp` (`binary`: its body is base64; `handed_over`: the
/// channel of a request refused because it was handed over, see [`fenced`]).
async fn respond(
    state: &State,
    reply: async_nats::Subject,
    resp: RestResponse,
    binary: bool,
    handed_over: Option<&str>,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::NODE_HEADER, state.node.as_str());
    if let Some(channel) = handed_over {
        headers.insert(wire::HANDED_OVER_HEADER, channel);
    }
    let mut body = serde_json::to_vec(&resp).unwrap_or_default();
    // NATS refuses a message larger than its max_payload (the headers count too): the
    // requester would wait for its timeout. It gets a 502 saying why at once.
    let max = state.nats.server_info().max_payload;
    if max > 0 && body.len().saturating_add(REPLY_HEADROOM) > max {
        state
            .counters
            .rest_too_large
            .fetch_add(1, Ordering::Relaxed);
        let message = format!(
            "ari-proxy: Asterisk's answer ({} bytes as a RESTResponse) is larger than the NATS \
             server's max_payload ({max} bytes); raise max_payload in nats-server's configuration",
            body.len()
        );
        tracing::warn!(uri = %resp.uri, bytes = body.len(), max_payload = max, "REST answer too large for NATS");
        body =
            serde_json::to_vec(&RestResponse::local(502, &resp.uri, &message)).unwrap_or_default();
    } else if binary {
        headers.insert(wire::BODY_ENCODING_HEADER, "base64");
    }
    if let Err(e) = state
        .nats
        .publish_with_headers(reply, headers, body.into())
        .await
    {
        state
            .counters
            .publish_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "REST reply not sent");
    }
}

/// The answer to a request of an instance on a channel handed over from it to another
/// instance (it was found gone, and is back: a NATS partition), and the channel: 404, so that
/// two instances never control one call ([`ProxyStats::rest_handed_over`]). `None` for every
/// other request.
fn fenced(state: &State, msg: &async_nats::Message) -> Option<(RestResponse, String)> {
    let handed = state.handed.lock().unwrap_or_else(|p| p.into_inner());
    if handed.is_empty() {
        return None;
    }
    let owner = msg.headers.as_ref()?.get(wire::INSTANCE_HEADER)?;
    let req: RestRequest = serde_json::from_slice(&msg.payload).ok()?;
    let (path, _) = split_uri(&req.uri);
    let channel = handed_channel(&path)?;
    if handed.get(channel.as_str()).map(|f| &**f) != Some(owner.as_str()) {
        return None;
    }
    drop(handed);
    state
        .counters
        .rest_handed_over
        .fetch_add(1, Ordering::Relaxed);
    let message = format!(
        "ari-proxy: channel {channel} was handed over to another instance of the application \
         (this instance was found gone)"
    );
    Some((RestResponse::local(404, &req.uri, &message), channel))
}

/// Sends one `RESTRequest` to Asterisk; the `RESTResponse` and whether its body is base64.
async fn forward(state: &Arc<State>, msg: &async_nats::Message) -> (RestResponse, bool) {
    state.counters.rest_requests.fetch_add(1, Ordering::Relaxed);
    let mut req: RestRequest = match serde_json::from_slice(&msg.payload) {
        Ok(r) => r,
        Err(e) => {
            return (
                RestResponse::local(400, "", &format!("not a RESTRequest: {e}")),
                false,
            )
        }
    };
    let instance: Option<Arc<str>> = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::INSTANCE_HEADER))
        .map(|v| Arc::from(v.as_str()));
    let (path, mut query) = split_uri(&req.uri);
    query.extend(req.query_strings.drain(..).map(|q| (q.name, q.value)));
    if let Some(owner) = &instance {
        if req.method.eq_ignore_ascii_case("POST") {
            let created = preassign(state, &path, &mut query, owner);
            // Sent to the queue group (not to this node by name): the instance does not know
            // where it runs.
            if !created.is_empty() && msg.subject.as_str() != state.subjects.rest_node(&state.node)
            {
                tell_creating(state, owner, &created).await;
            }
        }
    }
    let mut path_and_query = path.clone();
    for (i, (name, value)) in query.iter().enumerate() {
        path_and_query.push(if i == 0 { '?' } else { '&' });
        path_and_query.extend(utf8_percent_encode(name, QUERY));
        path_and_query.push('=');
        path_and_query.extend(utf8_percent_encode(value, QUERY));
    }
    let method = match http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => return (RestResponse::local(400, &req.uri, "bad method"), false),
    };
    let body = req.message_body.take().filter(|b| !b.is_empty());
    // Only a creation gives its resource to the requester: a read (`GET channels/{id}`) of
    // a call not taken yet, or released, must not make the reader its owner.
    let creation = method == http::Method::POST;
    // A recording's file is binary: HTTP only. Bodies are JSON in ARI; another content type
    // goes over HTTP as sent.
    let file = method == http::Method::GET
        && path.starts_with("recordings/stored/")
        && path.ends_with("/file");
    let json = req
        .content_type
        .as_deref()
        .is_none_or(|c| c.starts_with("application/json"));
    let sent = if state.ws_rest && !file && json {
        match state.client.send_raw(method, &path_and_query, body).await {
            Ok((status, body)) => {
                state
                    .counters
                    .rest_over_websocket
                    .fetch_add(1, Ordering::Relaxed);
                let content_type = (!body.is_empty()).then(|| "application/json".to_string());
                Ok((status, content_type, body))
            }
            Err(e) if e.is_timeout() => Err((504, "Asterisk did not answer in time".to_string())),
            Err(e) => Err((502, format!("Asterisk: {e}"))),
        }
    } else {
        over_http(state, method, &path_and_query, &req, body).await
    };
    let (status, content_type, body) = match sent {
        Ok(r) => r,
        Err((code, message)) => {
            state.counters.rest_failed.fetch_add(1, Ordering::Relaxed);
            return (
                RestResponse::local(code, &req.uri, &format!("ari-proxy: {message}")),
                false,
            );
        }
    };
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    if let (Some(owner), true, true) = (&instance, status.is_success(), creation) {
        learn_from_response(state, &body, owner);
    }
    let (message_body, binary) = if body.is_empty() {
        (None, false)
    } else {
        match std::str::from_utf8(&body) {
            Ok(s) => (Some(s.to_string()), false),
            Err(_) => (
                Some(base64::engine::general_purpose::STANDARD.encode(&body)),
                true,
            ),
        }
    };
    (
        RestResponse {
            kind: "RESTResponse".into(),
            request_id: req.request_id,
            transaction_id: req.transaction_id,
            status_code: status.as_u16(),
            reason_phrase: status.canonical_reason().unwrap_or("").to_string(),
            uri: req.uri,
            content_type,
            message_body,
        },
        binary,
    )
}

/// Sends one request to Asterisk over HTTP: the status, content type and body, or the status
/// and message to answer with when Asterisk could not be asked.
async fn over_http(
    state: &State,
    method: http::Method,
    path_and_query: &str,
    req: &RestRequest,
    body: Option<String>,
) -> Result<(u16, Option<String>, Bytes), (u16, String)> {
    let uri = format!(
        "{}://{}{}/{}",
        state.endpoint.scheme(),
        state.endpoint.authority(),
        state.endpoint.prefix(),
        path_and_query
    );
    let mut builder = http::Request::builder()
        .method(method)
        .uri(&uri)
        .header(http::header::HOST, state.endpoint.authority().as_str())
        .header(
            http::header::AUTHORIZATION,
            state.endpoint.credentials().basic_header(),
        );
    if body.is_some() {
        builder = builder.header(
            http::header::CONTENT_TYPE,
            req.content_type.as_deref().unwrap_or("application/json"),
        );
    }
    let http_req = builder
        .body(body.map(String::into_bytes).unwrap_or_default())
        .map_err(|e| (400, format!("bad request: {e}")))?;
    let sent = tokio::time::timeout(
        state.config.request_timeout,
        state.runtime.http(http_req, &state.transport),
    )
    .await;
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err((502, format!("Asterisk: {e}"))),
        Err(_) => return Err((504, "Asterisk did not answer in time".to_string())),
    };
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), content_type, resp.into_body()))
}

/// Whether an Asterisk of this version (`system.version`) has REST over the events WebSocket:
/// 20.14, 21.9, 22.4 and later, and development builds (`GIT-master-…`).
fn rest_over_websocket_available(version: &str) -> bool {
    if version.starts_with("GIT-master") {
        return true;
    }
    let mut nums = version
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (nums.next(), nums.next()) else {
        return false;
    };
    match major {
        20 => minor >= 14,
        21 => minor >= 9,
        22 => minor >= 4,
        m => m >= 23,
    }
}

/// The channel a request path operates on (`channels/{id}…`), decoded.
fn handed_channel(path: &str) -> Option<String> {
    let mut segs = path.split('/');
    if segs.next()? != "channels" {
        return None;
    }
    let id = segs.next().filter(|s| !s.is_empty())?;
    Some(percent_decode_str(id).decode_utf8_lossy().into_owned())
}

/// `channels/x?a=b` → (`channels/x`, [(a, b)]), values decoded.
fn split_uri(uri: &str) -> (String, Vec<(String, String)>) {
    let uri = uri.trim_start_matches('/');
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, q),
        None => (uri, ""),
    };
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let pairs = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect();
    (path.to_string(), pairs)
}

/// Tells the instance `owner` that this node runs its request creating `created`
/// ([`wire::CREATING_HEADER`]).
async fn tell_creating(state: &State, owner: &Arc<str>, created: &[(ResourceKind, String)]) {
    let mut list = String::new();
    for (kind, id) in created {
        if let Some(l) = wire::kind_letter(*kind) {
            if !list.is_empty() {
                list.push(' ');
            }
            list.push(l);
            list.push(':');
            list.push_str(id);
        }
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::NODE_HEADER, state.node.as_str());
    headers.insert(wire::CREATING_HEADER, "1");
    let subject = state.subjects.instance(owner);
    if let Err(e) = state
        .nats
        .publish_with_headers(subject, headers, Bytes::from(list))
        .await
    {
        state
            .counters
            .publish_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "creation notice not sent");
    }
}

/// Gives the resources a creation will make to `owner` before it is sent, so their first
/// events (a `StasisStart` right after an originate) reach it. Where Asterisk would pick the
/// id itself, the proxy picks one (`channelId`, `playbackId`, `bridgeId`, `snoopId`).
/// Returns them.
fn preassign(
    state: &State,
    path: &str,
    query: &mut Vec<(String, String)>,
    owner: &Arc<str>,
) -> Vec<(ResourceKind, String)> {
    let segs: Vec<String> = path
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let ensure = |query: &mut Vec<(String, String)>, name: &str| -> String {
        if let Some((_, v)) = query.iter().find(|(k, v)| k == name && !v.is_empty()) {
            return v.clone();
        }
        let id = nuid::next().to_string();
        query.push((name.to_string(), id.clone()));
        id
    };
    let mut owned: Vec<(ResourceKind, String)> = Vec::new();
    match segs.as_slice() {
        ["channels"] | ["channels", "create"] | ["channels", "externalMedia"] => {
            let id = ensure(query, "channelId");
            if segs[..] != ["channels", "externalMedia"] {
                owned.extend(other_half(query, &id));
            }
            owned.push((ResourceKind::Channel, id));
        }
        ["channels", id] => {
            owned.extend(other_half(query, id));
            owned.push((ResourceKind::Channel, id.to_string()));
        }
        ["bridges"] => owned.push((ResourceKind::Bridge, ensure(query, "bridgeId"))),
        ["bridges", id] => owned.push((ResourceKind::Bridge, id.to_string())),
        ["channels" | "bridges", _, "play"] => {
            owned.push((ResourceKind::Playback, ensure(query, "playbackId")))
        }
        ["channels" | "bridges", _, "play", pid] => {
            owned.push((ResourceKind::Playback, pid.to_string()))
        }
        ["channels" | "bridges", _, "record"] => {
            if let Some((_, v)) = query.iter().find(|(k, _)| k == "name") {
                owned.push((ResourceKind::Recording, v.clone()));
            }
        }
        ["channels", _, "snoop"] => owned.push((ResourceKind::Channel, ensure(query, "snoopId"))),
        ["channels", _, "snoop", sid] => owned.push((ResourceKind::Channel, sid.to_string())),
        _ => {}
    }
    if !owned.is_empty() {
        let mut table = state.owners();
        for (kind, id) in &owned {
            table.claim(*kind, id, owner);
        }
    }
    owned
}

/// The second half of a Local channel an originate (or `channels/create`) with the channel id
/// `id` makes: `otherChannelId`, or without it, for a `Local/` endpoint, `{id};2` (the id
/// Asterisk gives that half).
fn other_half(query: &[(String, String)], id: &str) -> Option<(ResourceKind, String)> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let other = match param("otherChannelId") {
        Some(other) => other.to_string(),
        None if param("endpoint")
            .and_then(|e| e.get(..6))
            .is_some_and(|t| t.eq_ignore_ascii_case("local/")) =>
        {
            format!("{id};2")
        }
        None => return None,
    };
    (other != id).then_some((ResourceKind::Channel, other))
}

/// A created resource in a response body (a Channel, Bridge, Playback or LiveRecording
/// object) becomes the requester's.
fn learn_from_response(state: &State, body: &[u8], owner: &Arc<str>) {
    if body.first() != Some(&b'{') {
        return;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    if let Some((kind, id)) = created_resource(&v) {
        state.owners().claim(kind, id, owner);
    }
}

/// The kind and id of a resource object, told by its fields.
pub(crate) fn created_resource(v: &serde_json::Value) -> Option<(ResourceKind, &str)> {
    let obj = v.as_object()?;
    let id = obj.get("id").and_then(|v| v.as_str());
    if let Some(id) = id {
        if obj.contains_key("caller") && obj.contains_key("state") {
            return Some((ResourceKind::Channel, id));
        }
        if obj.contains_key("bridge_type") {
            return Some((ResourceKind::Bridge, id));
        }
        if obj.contains_key("media_uri") {
            return Some((ResourceKind::Playback, id));
        }
    }
    let name = obj.get("name").and_then(|v| v.as_str())?;
    if obj.contains_key("format") && obj.contains_key("target_uri") {
        return Some((ResourceKind::Recording, name));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_asterisk_writes_them() {
        assert_eq!(
            asterisk_timestamp(Duration::ZERO),
            "1970-01-01T00:00:00.000+0000"
        );
        assert_eq!(
            asterisk_timestamp(Duration::from_millis(1_764_159_261_059)),
            "2025-11-26T12:14:21.059+0000"
        );
        assert_eq!(
            asterisk_timestamp(Duration::from_secs(1_709_251_199)),
            "2024-02-29T23:59:59.000+0000"
        );
    }

    #[test]
    fn handed_over_channels_are_read_from_paths() {
        assert_eq!(
            handed_channel("channels/a%3Bb/answer").as_deref(),
            Some("a;b")
        );
        assert_eq!(handed_channel("channels/1.2").as_deref(), Some("1.2"));
        assert_eq!(handed_channel("channels"), None);
        assert_eq!(handed_channel("bridges/1.2"), None);
    }

    #[test]
    fn uris_split_and_decode() {
        let (p, q) = split_uri("channels/a%2Fb/variable?variable=CALLERID%28name%29&x");
        assert_eq!(p, "channels/a%2Fb/variable");
        assert_eq!(
            q,
            vec![
                ("variable".to_string(), "CALLERID(name)".to_string()),
                ("x".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn rest_over_websocket_by_version() {
        for v in [
            "20.14.0",
            "20.15.1",
            "21.9.0",
            "22.4.0",
            "22.5.2",
            "23.0.0",
            "24.1.0",
            "GIT-master-f0c1c1a7b7",
            "certified/22.8-cert1",
        ] {
            assert!(rest_over_websocket_available(v), "{v}");
        }
        for v in [
            "18.26.0",
            "20.13.0",
            "21.8.1",
            "22.3.0",
            "",
            "SVN-trunk",
            "certified/20.7-cert5",
        ] {
            assert!(!rest_over_websocket_available(v), "{v}");
        }
    }

    #[test]
    fn created_resources_are_recognised() {
        let ch = serde_json::json!({"id": "1.1", "caller": {}, "state": "Up", "name": "PJSIP/a"});
        assert_eq!(created_resource(&ch), Some((ResourceKind::Channel, "1.1")));
        let br = serde_json::json!({"id": "b", "bridge_type": "mixing"});
        assert_eq!(created_resource(&br), Some((ResourceKind::Bridge, "b")));
        let pb = serde_json::json!({"id": "p", "media_uri": "sound:x", "state": "queued"});
        assert_eq!(created_resource(&pb), Some((ResourceKind::Playback, "p")));
        let rec = serde_json::json!({"name": "r", "format": "wav", "target_uri": "channel:1", "state": "queued"});
        assert_eq!(created_resource(&rec), Some((ResourceKind::Recording, "r")));
        assert_eq!(created_resource(&serde_json::json!({"ping": "pong"})), None);
    }
}
