//! ARI outbound WebSocket: the simulated Asterisk dials the application, as configured by
//! `websocket_client.conf` + `ari.conf` `type=outbound_websocket` (Asterisk 20.15+, 22.5+).
//!
//! - **persistent**: one connection per configuration, opened when the server starts; the
//!   apps are registered at once and stay registered while the socket is down; events for
//!   them are queued without limit meanwhile and sent first on reconnect, then
//!   `ApplicationRegistered` for each app. A closed or dropped connection is reopened at
//!   once; a failed attempt is retried every `reconnect_interval`, forever.
//! - **per_call_config**: nothing at start. A channel entering `Stasis(<app>)` gets its own
//!   connection and a temporary app `<app>:<channel name>` (first frame
//!   `ApplicationRegistered`, StasisStart `stasis_start_delay` later); the connection closes
//!   with 1000 `close_after_stasis_end` after StasisEnd. Dropped mid-call, it is reopened at
//!   once; when `reconnect_attempts` attempts fail, the channel leaves Stasis (failed) and is
//!   hung up.
//!
//! The upgrade request is Asterisk's, header for header (recorded in `fixtures/outbound/`),
//! and the answer is checked as Asterisk's client checks it: status line `HTTP/1.1 101`,
//! `Upgrade: websocket` and `Connection: Upgrade` as whole values, the accept key, a
//! subprotocol within `protocols`, no `Sec-WebSocket-Extensions`. A refused answer counts as
//! a failed attempt ([`OutboundStats::refused`], with the reason in the log).
//!
//! `ws://`, and `wss://` with the server certificate checked as Asterisk checks it: the
//! chain against the certificates of [`OutboundConfig::ca_list`] (Asterisk's
//! `ca_list_file`) unless [`OutboundConfig::verify_server_cert`] is off, the host name
//! against the certificate's common and DNS names unless
//! [`OutboundConfig::verify_server_hostname`] is off, and
//! [`OutboundConfig::client_certificate`] (`cert_file`, `priv_key_file`) presented when the
//! server asks for one (rustls with the `ring` provider). No proxy. With
//! [`OutboundConfig::pingpongs`] (`enable_pingpongs`, 20.21+), a PING every interval and a
//! close with 1001 once `probes` went unanswered.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::state::{lock, CloseReason, ConnCmd, Frame, Shared, User};
use crate::ws::{self, Io, Ws};

/// `connection_type` of a `websocket_client.conf` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionType {
    /// One long-lived connection per configuration.
    Persistent,
    /// One connection per channel entering Stasis (`per_call_config`).
    PerCall,
}

/// One outbound WebSocket configuration: a `websocket_client.conf` section and the
/// `ari.conf` `outbound_websocket` using it. Defaults are Asterisk's, except
/// `stasis_start_delay` and `close_after_stasis_end`, which tests may shorten.
///
/// ```
/// use std::time::Duration;
/// use ari_testkit::OutboundConfig;
/// let cfg = OutboundConfig::per_call("ws://127.0.0.1:9099/ari-ob/percall", ["obpc"])
///     .credentials("obuser", "obsecret")
///     .reconnect(Duration::from_millis(500), 3)
///     .stasis_start_delay(Duration::from_millis(50));
/// assert_eq!(cfg.apps, ["obpc"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboundConfig {
    /// `uri`: `ws://host:port/path?query` or `wss://…` (path and query sent as they are). A
    /// `user:password@` before the host is sent as the Basic credentials, ahead of
    /// [`username`](OutboundConfig::username) and [`password`](OutboundConfig::password).
    pub uri: String,
    /// `ca_list_file`: the DER certificates a `wss://` server's chain must lead to (the
    /// certificate itself for a self-signed one). Required for `wss://` while
    /// [`verify_server_cert`](OutboundConfig::verify_server_cert) is on.
    pub ca_list: Vec<Vec<u8>>,
    /// `verify_server_cert` (default yes): the server's chain must lead to `ca_list`. Off,
    /// Asterisk checks nothing of the server's certificate (neither chain nor name).
    pub verify_server_cert: bool,
    /// `verify_server_hostname` (default yes; only while `verify_server_cert` is on): the
    /// uri's host must equal, ignoring case, a common name or a DNS subject alternative
    /// name of the server's certificate, as Asterisk's `tcptls.c` compares them: exactly
    /// (no wildcard), and never against an IP address entry (`wss://127.0.0.1` needs a
    /// certificate naming `127.0.0.1` as its common name or a DNS name).
    pub verify_server_hostname: bool,
    /// `cert_file` and `priv_key_file`: the client certificate (DER chain, leaf first) and
    /// its PKCS#8 key (DER) Asterisk presents when the application's TLS server asks for
    /// one. `None`: none presented.
    pub client_certificate: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// `username` (sent as Basic credentials when both it and `password` are set).
    pub username: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `protocols` (default `ari`; empty: no `Sec-WebSocket-Protocol` header).
    pub protocols: String,
    /// `connection_type`.
    pub connection_type: ConnectionType,
    /// `apps` of the `outbound_websocket`.
    pub apps: Vec<String>,
    /// `subscribe_all`.
    pub subscribe_all: bool,
    /// `connection_timeout` (TCP connect; the answer must come within twice this). 500 ms.
    pub connection_timeout: Duration,
    /// `reconnect_interval`: between failed attempts. 500 ms.
    pub reconnect_interval: Duration,
    /// `reconnect_attempts`: per-call attempts before giving up (persistent retries
    /// forever). 4.
    pub reconnect_attempts: u32,
    /// Per-call: from `ApplicationRegistered` to the rest (StasisStart). Asterisk: ~500 ms.
    pub stasis_start_delay: Duration,
    /// Per-call: from StasisEnd to the close frame. Asterisk: ~3.5 s.
    pub close_after_stasis_end: Duration,
    /// Fault: wait this long after the TCP connect before sending the upgrade request (an
    /// application's handshake timeout should fire).
    pub handshake_delay: Option<Duration>,
    /// `enable_pingpongs` with `pingpong_interval` and `pingpong_probes` (20.21+): a PING
    /// (payload `WS_CLIENT_PING`) every interval; once that many PINGs in a row went
    /// unanswered, the connection is closed with 1001 (then redialled like any lost one).
    /// `None` (the default): no PINGs.
    pub pingpongs: Option<(Duration, u32)>,
}

impl OutboundConfig {
    fn new(uri: &str, connection_type: ConnectionType, apps: Vec<String>) -> Self {
        OutboundConfig {
            uri: uri.to_string(),
            ca_list: Vec::new(),
            verify_server_cert: true,
            verify_server_hostname: true,
            client_certificate: None,
            username: None,
            password: None,
            protocols: "ari".to_string(),
            connection_type,
            apps,
            subscribe_all: false,
            connection_timeout: Duration::from_millis(500),
            reconnect_interval: Duration::from_millis(500),
            reconnect_attempts: 4,
            stasis_start_delay: Duration::from_millis(500),
            close_after_stasis_end: Duration::from_millis(3500),
            handshake_delay: None,
            pingpongs: None,
        }
    }

    /// A `persistent` connection to `uri` for `apps`.
    pub fn persistent<I: IntoIterator<Item = S>, S: Into<String>>(uri: &str, apps: I) -> Self {
        Self::new(
            uri,
            ConnectionType::Persistent,
            apps.into_iter().map(Into::into).collect(),
        )
    }

    /// A `per_call_config` connection to `uri` for `apps`.
    pub fn per_call<I: IntoIterator<Item = S>, S: Into<String>>(uri: &str, apps: I) -> Self {
        Self::new(
            uri,
            ConnectionType::PerCall,
            apps.into_iter().map(Into::into).collect(),
        )
    }

    /// Sets `username` and `password`.
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.username = Some(username.to_string());
        self.password = Some(password.to_string());
        self
    }

    /// Trusts this DER certificate for a `wss://` uri (adds to `ca_list`).
    pub fn trust_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.ca_list.push(der.into());
        self
    }

    /// Sets `verify_server_cert` (see [`OutboundConfig::verify_server_cert`]).
    pub fn verify_server_cert(mut self, on: bool) -> Self {
        self.verify_server_cert = on;
        self
    }

    /// Sets `verify_server_hostname` (see [`OutboundConfig::verify_server_hostname`]).
    pub fn verify_server_hostname(mut self, on: bool) -> Self {
        self.verify_server_hostname = on;
        self
    }

    /// Sets `cert_file` and `priv_key_file`: the client certificate chain (DER, leaf first)
    /// and its PKCS#8 private key (DER).
    pub fn client_certificate(mut self, chain: Vec<Vec<u8>>, pkcs8_key: Vec<u8>) -> Self {
        self.client_certificate = Some((chain, pkcs8_key));
        self
    }

    /// Sets `protocols`.
    pub fn protocols(mut self, protocols: &str) -> Self {
        self.protocols = protocols.to_string();
        self
    }

    /// Sets `subscribe_all`.
    pub fn subscribe_all(mut self, on: bool) -> Self {
        self.subscribe_all = on;
        self
    }

    /// Sets `connection_timeout`.
    pub fn connection_timeout(mut self, d: Duration) -> Self {
        self.connection_timeout = d;
        self
    }

    /// Sets `reconnect_interval` and `reconnect_attempts`.
    pub fn reconnect(mut self, interval: Duration, attempts: u32) -> Self {
        self.reconnect_interval = interval;
        self.reconnect_attempts = attempts;
        self
    }

    /// Sets the per-call delay before StasisStart.
    pub fn stasis_start_delay(mut self, d: Duration) -> Self {
        self.stasis_start_delay = d;
        self
    }

    /// Sets the per-call delay between StasisEnd and the close frame.
    pub fn close_after_stasis_end(mut self, d: Duration) -> Self {
        self.close_after_stasis_end = d;
        self
    }

    /// Fault: a slow handshake (see [`OutboundConfig::handshake_delay`]).
    pub fn handshake_delay(mut self, d: Duration) -> Self {
        self.handshake_delay = Some(d);
        self
    }

    /// Sets `enable_pingpongs = yes` with `pingpong_interval` and `pingpong_probes` (see
    /// [`OutboundConfig::pingpongs`]).
    pub fn pingpongs(mut self, interval: Duration, probes: u32) -> Self {
        self.pingpongs = Some((interval, probes));
        self
    }
}

/// Counters of the outbound connections since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboundStats {
    /// Connection attempts (TCP connects tried).
    pub attempts: u64,
    /// Upgrades accepted.
    pub connected: u64,
    /// Attempts that failed before an answer (refused, timeout).
    pub failed: u64,
    /// Answers Asterisk's client would refuse (non-101, bad headers), e.g. a 401.
    pub refused: u64,
    /// Status of the last refused answer (0 when it was not a status problem).
    pub last_refused_status: u16,
    /// Per-call connections given up after `reconnect_attempts` (the channel left Stasis).
    pub gave_up: u64,
    /// Persistent configurations removed by a reload ([`MockServer::remove_persistent_outbound`](crate::MockServer::remove_persistent_outbound)).
    pub removed: u64,
    /// PINGs sent ([`OutboundConfig::pingpongs`]).
    pub pings: u64,
    /// PONGs received.
    pub pongs: u64,
    /// Connections closed (1001) because their PINGs went unanswered.
    pub pong_timeouts: u64,
}

/// Runtime state of the outbound side, kept in the server's shared state.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) configs: Vec<OutboundConfig>,
    stats: std::sync::Mutex<OutboundStats>,
    /// Per-call apps (`<app>:<channel>`) whose StasisEnd was seen: their close is not a drop.
    ended: std::sync::Mutex<HashSet<String>>,
    keys: AtomicU64,
    /// The persistent configurations were removed by a reload: their tasks stop redialling.
    removed: AtomicBool,
    /// The task on the server's runtime that starts per-call connections and delayed closes
    /// (the dispatcher may run on a test's thread, outside that runtime).
    manager: mpsc::UnboundedSender<PerCallCmd>,
    /// Taken by [`start`]: the manager's queue, and the persistent connections registered
    /// when the server was made (their tasks start with the server's runtime).
    to_start: std::sync::Mutex<Option<ToStart>>,
}

#[derive(Debug)]
struct ToStart {
    manager: mpsc::UnboundedReceiver<PerCallCmd>,
    persistent: Vec<(
        OutboundConfig,
        u64,
        mpsc::UnboundedSender<ConnCmd>,
        mpsc::UnboundedReceiver<ConnCmd>,
    )>,
}

/// Work for the per-call manager task.
#[derive(Debug)]
enum PerCallCmd {
    Start {
        cfg: Box<OutboundConfig>,
        id: u64,
        app: String,
        tx: mpsc::UnboundedSender<ConnCmd>,
        rx: mpsc::UnboundedReceiver<ConnCmd>,
        user: User,
    },
    CloseLater {
        app: String,
        delay: Duration,
    },
}

impl Outbound {
    pub(crate) fn new(configs: Vec<OutboundConfig>) -> Self {
        let (manager, rx) = mpsc::unbounded_channel();
        Outbound {
            configs,
            stats: Default::default(),
            ended: Default::default(),
            keys: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            manager,
            to_start: std::sync::Mutex::new(Some(ToStart {
                manager: rx,
                persistent: Vec::new(),
            })),
        }
    }

    pub(crate) fn stats(&self) -> OutboundStats {
        *lock(&self.stats)
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut OutboundStats)) {
        f(&mut lock(&self.stats));
    }

    /// The per-call configuration serving `app` (`<app>:<channel name>`), if any. `<app>`
    /// may hold `:` (`tenant:ivr`): the configured app is the whole name before the
    /// `:<channel name>`.
    fn per_call_config(&self, app: &str) -> Option<&OutboundConfig> {
        self.configs.iter().find(|c| {
            c.connection_type == ConnectionType::PerCall
                && c.apps.iter().any(|a| call_channel_name(app, a).is_some())
        })
    }

    /// The per-call apps of every configuration (for the simulator).
    pub(crate) fn per_call_apps(&self) -> Vec<String> {
        self.configs
            .iter()
            .filter(|c| c.connection_type == ConnectionType::PerCall)
            .flat_map(|c| c.apps.iter().cloned())
            .collect()
    }
}

/// The user REST requests on an outbound socket run as (`local_ari_user`): the first
/// configured user that may write.
fn local_user(shared: &Shared) -> User {
    shared
        .users
        .iter()
        .find(|u| !u.read_only)
        .or(shared.users.first())
        .cloned()
        .unwrap_or(User {
            name: crate::server::DEFAULT_USER.to_string(),
            password: crate::server::DEFAULT_USER.to_string(),
            read_only: false,
        })
}

/// Registers the apps of the persistent connections, as Asterisk does at config load (events
/// for them are queued from now on, `ApplicationRegistered` first). Called once, when the
/// server is made.
pub(crate) fn load(shared: &Arc<Shared>) {
    let configs: Vec<OutboundConfig> = shared
        .outbound
        .configs
        .iter()
        .filter(|c| c.connection_type == ConnectionType::Persistent)
        .cloned()
        .collect();
    for cfg in configs {
        let id = shared.next_conn_id();
        let (tx, rx) = mpsc::unbounded_channel();
        ws::register(shared, id, &cfg.apps, tx.clone(), &local_user(shared));
        // Registered at load: events are queued from now on, ApplicationRegistered first.
        for app in &cfg.apps {
            shared.with_sim(|sim, now| sim.app_connected(now, app, cfg.subscribe_all));
            let _ = tx.send(ConnCmd::Send(Frame::Event(registered(shared, app))));
        }
        if let Some(t) = lock(&shared.outbound.to_start).as_mut() {
            t.persistent.push((cfg, id, tx, rx));
        }
    }
}

/// Starts the connection tasks (on the server's runtime).
pub(crate) fn start(shared: &Arc<Shared>) {
    let Some(ToStart {
        manager: mut mrx,
        persistent: conns,
    }) = lock(&shared.outbound.to_start).take()
    else {
        return;
    };
    for (cfg, id, tx, rx) in conns {
        tokio::spawn(persistent(shared.clone(), cfg, id, tx, rx));
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some(cmd) = mrx.recv().await {
            match cmd {
                PerCallCmd::Start {
                    cfg,
                    id,
                    app,
                    tx,
                    rx,
                    user,
                } => {
                    tokio::spawn(per_call(shared.clone(), *cfg, id, app, tx, rx, user));
                }
                PerCallCmd::CloseLater { app, delay } => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        shared.command(Some(&app), || ConnCmd::Close {
                            abrupt: false,
                            code: 1000,
                        });
                    });
                }
            }
        }
    });
}

/// Removes every persistent configuration and reloads, as `module reload res_ari` after
/// the `outbound_websocket` objects were deleted (recorded): each connection gets
/// `ApplicationUnregistered` for each of its apps, then CLOSE 1000, and is not redialled.
/// Returns how many connections were told.
pub(crate) fn remove_persistent(shared: &Shared) -> usize {
    shared.outbound.removed.store(true, Ordering::SeqCst);
    let mut told = 0;
    for cfg in shared
        .outbound
        .configs
        .iter()
        .filter(|c| c.connection_type == ConnectionType::Persistent)
    {
        shared.outbound.count(|s| s.removed += 1);
        for app in &cfg.apps {
            let frame = format!(
                "{{\"type\":\"ApplicationUnregistered\",\"timestamp\":{},\"application\":{},\"asterisk_id\":{}}}",
                Value::from(shared.timestamp()),
                Value::from(app.as_str()),
                Value::from(shared.asterisk_id.as_str()),
            );
            shared.command(Some(app), || ConnCmd::Send(Frame::Event(frame.clone())));
        }
        if let Some(app) = cfg.apps.first() {
            told += shared.command(Some(app), || ConnCmd::Close {
                abrupt: false,
                code: 1000,
            });
        }
    }
    told
}

fn registered(shared: &Shared, app: &str) -> String {
    format!(
        "{{\"type\":\"ApplicationRegistered\",\"timestamp\":{},\"application\":{},\"asterisk_id\":{}}}",
        Value::from(shared.timestamp()),
        Value::from(app),
        Value::from(shared.asterisk_id.as_str()),
    )
}

async fn persistent(
    shared: Arc<Shared>,
    cfg: OutboundConfig,
    id: u64,
    tx: mpsc::UnboundedSender<ConnCmd>,
    mut rx: mpsc::UnboundedReceiver<ConnCmd>,
) {
    let user = local_user(&shared);
    let mut first = true;
    loop {
        if shared.outbound.removed.load(Ordering::SeqCst) {
            // Removed by a reload: no reconnect, and the apps are unregistered.
            shared.log(|| format!("outbound ob#{id}: configuration removed; not redialling"));
            shared.connection_closed(id, CloseReason::Dropped);
            return;
        }
        let ws = loop {
            match dial(&shared, &cfg).await {
                Ok(ws) => break ws,
                Err(_) if shared.outbound.removed.load(Ordering::SeqCst) => {
                    shared.connection_closed(id, CloseReason::Dropped);
                    return;
                }
                Err(e) => {
                    shared.log(|| {
                        format!(
                            "outbound ob#{id}: {e}; retrying in {:?}",
                            cfg.reconnect_interval
                        )
                    });
                    tokio::time::sleep(cfg.reconnect_interval).await;
                }
            }
        };
        if !first {
            // After the queued events: ApplicationRegistered for each app, in name order.
            let mut apps = cfg.apps.clone();
            apps.sort();
            for app in &apps {
                let _ = tx.send(ConnCmd::Send(Frame::Event(registered(&shared, app))));
            }
        }
        first = false;
        shared.log(|| format!("outbound ob#{id} connected to {}", cfg.uri));
        let pinger = pinger(&cfg, &tx);
        let (reason, back) = ws::run(
            shared.clone(),
            id,
            ws,
            rx,
            tx.clone(),
            cfg.apps.first().cloned(),
            user.clone(),
        )
        .await;
        rx = back;
        if let Some(p) = pinger {
            p.abort();
        }
        shared.log(|| format!("outbound ob#{id} ended ({reason:?}); reconnecting at once"));
    }
}

/// A frame for a per-call app nobody holds yet: opens its connection (`ApplicationRegistered`
/// is the first event of such an app). Called by the dispatcher with the registry locked.
/// Returns whether the frame was taken.
pub(crate) fn unrouted(
    shared: &Shared,
    reg: &mut crate::state::Registry,
    app: &str,
    ty: &str,
    frame: String,
) -> bool {
    let Some(cfg) = shared.outbound.per_call_config(app).cloned() else {
        return false;
    };
    if ty != "ApplicationRegistered" {
        return false;
    }
    let manager = &shared.outbound.manager;
    let id = shared.next_conn_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let user = local_user(shared);
    reg.apps.insert(app.to_string(), id);
    reg.conns.insert(
        id,
        crate::state::ConnEntry {
            tx: tx.clone(),
            apps: vec![app.to_string()],
            requested: vec![app.to_string()],
            user: user.name.clone(),
            read_only: user.read_only,
        },
    );
    shared.registry_changed.notify_all();
    let _ = tx.send(ConnCmd::Send(Frame::Event(frame)));
    let app = app.to_string();
    let _ = manager.send(PerCallCmd::Start {
        cfg: Box::new(cfg),
        id,
        app,
        tx,
        rx,
        user,
    });
    true
}

/// The channel name of the per-call app `app` (`<app>:<channel name>`, as Asterisk names it;
/// recorded: `obpc:Local/12#@dtmf-00000152;1`) of the configured application `configured`,
/// compared whole: `configured` may hold `:` and `/` (`tenant:ivr`, `tenant:sales/ivr`).
/// A channel name is `<technology>/<resource>`, the technology a channel driver's name.
fn call_channel_name<'a>(app: &'a str, configured: &str) -> Option<&'a str> {
    let channel = app.strip_prefix(configured)?.strip_prefix(':')?;
    let (tech, _) = channel.split_once('/')?;
    let is_tech = !tech.is_empty()
        && tech
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!configured.is_empty() && is_tech).then_some(channel)
}

/// A StasisEnd went to a per-call app: its connection closes (1000) after the configured
/// delay.
pub(crate) fn stasis_end(shared: &Shared, app: &str) {
    let Some(cfg) = shared.outbound.per_call_config(app) else {
        return;
    };
    let delay = cfg.close_after_stasis_end;
    lock(&shared.outbound.ended).insert(app.to_string());
    let _ = shared.outbound.manager.send(PerCallCmd::CloseLater {
        app: app.to_string(),
        delay,
    });
}

async fn per_call(
    shared: Arc<Shared>,
    cfg: OutboundConfig,
    id: u64,
    app: String,
    tx: mpsc::UnboundedSender<ConnCmd>,
    mut rx: mpsc::UnboundedReceiver<ConnCmd>,
    user: User,
) {
    let mut first = true;
    loop {
        let mut ws = None;
        for attempt in 1..=cfg.reconnect_attempts.max(1) {
            match dial(&shared, &cfg).await {
                Ok(w) => {
                    ws = Some(w);
                    break;
                }
                Err(e) => {
                    shared.log(|| format!("outbound pc#{id} ({app}) attempt {attempt}: {e}"));
                    if attempt < cfg.reconnect_attempts {
                        tokio::time::sleep(cfg.reconnect_interval).await;
                    }
                }
            }
        }
        let Some(mut ws) = ws else {
            shared
                .log(|| format!("outbound pc#{id} ({app}): giving up; the channel leaves Stasis"));
            shared.outbound.count(|s| s.gave_up += 1);
            {
                let mut reg = lock(&shared.registry);
                reg.conns.remove(&id);
                if reg.apps.get(&app) == Some(&id) {
                    reg.apps.remove(&app);
                }
            }
            shared.with_sim(|sim, now| sim.per_call_failed(now, &app));
            return;
        };
        if first {
            // ApplicationRegistered at once, the rest (StasisStart) after Stasis()'s poll.
            if let Ok(ConnCmd::Send(Frame::Event(t))) = rx.try_recv() {
                let _ = ws.send(Message::text(t)).await;
            }
            tokio::time::sleep(cfg.stasis_start_delay).await;
        } else {
            let _ = tx.send(ConnCmd::Send(Frame::Event(registered(&shared, &app))));
        }
        first = false;
        shared.log(|| format!("outbound pc#{id} ({app}) connected to {}", cfg.uri));
        let pinger = pinger(&cfg, &tx);
        let (reason, back) = ws::run(
            shared.clone(),
            id,
            ws,
            rx,
            tx.clone(),
            Some(app.clone()),
            user.clone(),
        )
        .await;
        rx = back;
        if let Some(p) = pinger {
            p.abort();
        }
        if lock(&shared.outbound.ended).remove(&app) {
            shared.connection_closed(id, reason);
            return;
        }
        shared
            .log(|| format!("outbound pc#{id} ({app}) ended mid-call ({reason:?}); reconnecting"));
    }
}

/// With [`OutboundConfig::pingpongs`]: a task asking the connection for a PING every
/// interval (the connection closes with 1001 once `probes` went unanswered).
fn pinger(
    cfg: &OutboundConfig,
    tx: &mpsc::UnboundedSender<ConnCmd>,
) -> Option<tokio::task::JoinHandle<()>> {
    let (every, probes) = cfg.pingpongs?;
    let every = every.max(Duration::from_millis(1));
    let tx = tx.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // One PING per interval, as Asterisk: ticks missed (the process paused) are not sent
        // in a burst, which would count as PINGs unanswered.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.send(ConnCmd::Ping { probes }).is_err() {
                return;
            }
        }
    }))
}

/// Opens one connection as Asterisk's websocket client does.
async fn dial(shared: &Shared, cfg: &OutboundConfig) -> Result<Ws, String> {
    let ob = &shared.outbound;
    ob.count(|s| s.attempts += 1);
    let fail = |e: String| {
        ob.count(|s| s.failed += 1);
        e
    };
    let (tls, rest) = match (
        cfg.uri.strip_prefix("ws://"),
        cfg.uri.strip_prefix("wss://"),
    ) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => {
            return Err(fail(format!(
                "unsupported uri {:?} (ws:// or wss://)",
                cfg.uri
            )))
        }
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    // `ws://user:pass@host:port/…`: the user info is not part of the address, and Asterisk
    // sends it as the Basic credentials, ahead of `username`/`password`.
    let (userinfo, authority) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let connect = TcpStream::connect(authority);
    let tcp = match tokio::time::timeout(cfg.connection_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(format!("connect to {authority}: {e}"))),
        Err(_) => return Err(fail(format!("connect to {authority}: timed out"))),
    };
    let _ = tcp.set_nodelay(true);
    let mut tcp: Box<dyn Io> = if tls {
        let handshake = tls_connect(cfg, authority, tcp);
        match tokio::time::timeout(cfg.connection_timeout, handshake).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => return Err(fail(format!("TLS with {authority}: {e}"))),
            Err(_) => return Err(fail(format!("TLS with {authority}: timed out"))),
        }
    } else {
        Box::new(tcp)
    };
    if let Some(d) = cfg.handshake_delay {
        tokio::time::sleep(d).await;
    }
    let n = ob.keys.fetch_add(1, Ordering::Relaxed);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&n.to_le_bytes());
    key[8..].copy_from_slice(&(shared.clock.now().as_nanos() as u64).to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nHost: {authority}\r\n"
    );
    let credentials = match (userinfo, &cfg.username, &cfg.password) {
        (Some(userinfo), _, _) => Some(userinfo.to_string()),
        (None, Some(u), Some(p)) => Some(format!("{u}:{p}")),
        _ => None,
    };
    if let Some(credentials) = credentials {
        let auth = base64::engine::general_purpose::STANDARD.encode(credentials);
        req.push_str(&format!("Authorization: Basic {auth}\r\n"));
    }
    if !cfg.protocols.is_empty() {
        req.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", cfg.protocols));
    }
    req.push_str(&format!("Sec-WebSocket-Key: {key}\r\n\r\n"));
    if let Err(e) = tcp.write_all(req.as_bytes()).await {
        return Err(fail(format!("sending the upgrade request: {e}")));
    }
    let answer_within = cfg.connection_timeout.saturating_mul(2);
    let mut buf = Vec::with_capacity(512);
    let head_end = tokio::time::timeout(answer_within, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(i + 4);
            }
            if buf.len() > 8192 {
                return Err("answer head over 8 KiB".to_string());
            }
            match tcp.read(&mut chunk).await {
                Ok(0) => return Err("connection closed before the answer".to_string()),
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e) => return Err(format!("reading the answer: {e}")),
            }
        }
    })
    .await
    .map_err(|_| format!("no answer within {answer_within:?}"))
    .and_then(|r| r);
    let head_end = head_end.map_err(fail)?;
    if let Err((status, why)) = check_answer(&buf[..head_end], &key, &cfg.protocols) {
        ob.count(|s| {
            s.refused += 1;
            s.last_refused_status = status;
        });
        return Err(format!("answer refused: {why}"));
    }
    ob.count(|s| s.connected += 1);
    let leftover = buf[head_end..].to_vec();
    Ok(WebSocketStream::from_partially_read(tcp, leftover, Role::Client, None).await)
}

/// The TLS client handshake of a `wss://` uri, checked as Asterisk's `tcptls.c` checks it
/// (see [`OutboundConfig::verify_server_cert`] and
/// [`OutboundConfig::verify_server_hostname`]), presenting
/// [`OutboundConfig::client_certificate`] when the server asks for one.
async fn tls_connect(
    cfg: &OutboundConfig,
    authority: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use tokio_rustls::rustls;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let roots = if cfg.verify_server_cert {
        if cfg.ca_list.is_empty() {
            return Err("wss:// needs a certificate to trust (ca_list)".to_string());
        }
        let mut roots = rustls::RootCertStore::empty();
        for der in &cfg.ca_list {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| format!("ca_list: {e}"))?;
        }
        Some(Arc::new(roots))
    } else {
        None
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AsteriskVerifier {
        roots,
        host: cfg.verify_server_hostname.then(|| host.to_string()),
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &cfg.client_certificate {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain
                    .iter()
                    .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
                    .collect(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.clone().into()),
            )
            .map_err(|e| format!("cert_file/priv_key_file: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    // SNI as Asterisk sends it: the uri's host when it is a name (none for an address).
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("server name {host:?}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// Asterisk's checks of a server certificate (`tcptls.c`, client side): none without
/// `verify_server_cert` (`roots` is `None`); else the chain must lead to `roots` and, with
/// `verify_server_hostname` (`host` set), `host` must equal a common name or a DNS subject
/// alternative name, ignoring case — no wildcard, no IP address entry. The handshake's
/// signatures are always checked (OpenSSL does).
#[derive(Debug)]
struct AsteriskVerifier {
    roots: Option<Arc<tokio_rustls::rustls::RootCertStore>>,
    host: Option<String>,
    provider: Arc<tokio_rustls::rustls::crypto::CryptoProvider>,
}

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AsteriskVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        use tokio_rustls::rustls;
        let Some(roots) = &self.roots else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if let Some(host) = &self.host {
            let names = certificate_names(end_entity.as_ref());
            if !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
                return Err(rustls::Error::General(format!(
                    "certificate common name did not match ({host}; the certificate names {names:?})"
                )));
            }
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The names Asterisk compares the host with: the subject's common names, then the DNS
/// subject alternative names (an IP address entry is not one of them). None when the
/// certificate does not parse.
fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        }));
    }
    names
}

/// Asterisk's client checks of the upgrade answer; `Err((status, why))`.
fn check_answer(head: &[u8], key: &str, protocols: &str) -> Result<(), (u16, String)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 101") {
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return Err((status, format!("status line {status_line:?}")));
    }
    let get = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let refuse = |why: String| Err((101, why));
    if !get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return refuse("Upgrade is not websocket".into());
    }
    if !get("connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")) {
        return refuse(format!(
            "Connection is {:?}, not Upgrade",
            get("connection")
        ));
    }
    if get("sec-websocket-accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return refuse("Sec-WebSocket-Accept wrong or missing".into());
    }
    if let Some(p) = get("sec-websocket-protocol") {
        if !protocols.contains(p.as_str()) {
            return refuse(format!("subprotocol {p:?} not offered"));
        }
    }
    if get("sec-websocket-extensions").is_some() {
        return refuse("Sec-WebSocket-Extensions present".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::call_channel_name;

    #[test]
    fn a_per_call_app_is_matched_whole_against_the_configured_ones() {
        assert_eq!(
            call_channel_name("obpc:Local/12#@dtmf-00000152;1", "obpc"),
            Some("Local/12#@dtmf-00000152;1")
        );
        assert_eq!(
            call_channel_name("tenant:ivr:PJSIP/alice-00000001", "tenant:ivr"),
            Some("PJSIP/alice-00000001")
        );
        assert_eq!(
            call_channel_name("tenant:sales/ivr:PJSIP/alice-00000001", "tenant:sales/ivr"),
            Some("PJSIP/alice-00000001")
        );
        assert_eq!(
            call_channel_name("app:SIP/10.0.0.1:5060-00000001", "app"),
            Some("SIP/10.0.0.1:5060-00000001")
        );
        assert_eq!(call_channel_name("tenant:ivr", "tenant"), None);
        assert_eq!(call_channel_name(":PJSIP/alice", ""), None);
        assert_eq!(call_channel_name("hello:/alice", "hello"), None);
    }
}
