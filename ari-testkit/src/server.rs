//! The [`MockServer`] handle, its builder, and the server thread.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, Notify};

use crate::bench::{FloodError, FloodReport, FloodSpec};
use crate::fault::{Faults, Refusal};
use crate::script::{unmet, ExpectBuilder, RecordedRequest};
use crate::server_thread::ServerThread;
use crate::sim::{PlaceCall, Sim, SimConfig};
use crate::state::{lock, Clock, ClosedConnection, ConnCmd, Frame, Logger, Registry, Shared, User};

/// Default user name and password.
pub const DEFAULT_USER: &str = "asterisk";

/// Asterisk's default `websocket_write_timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// Which WebSocket connection(s) a fault or push applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target<'a> {
    /// The connection currently holding this app.
    App(&'a str),
    /// Every open connection.
    All,
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(app: &'a str) -> Self {
        Target::App(app)
    }
}

impl<'a> From<&'a String> for Target<'a> {
    fn from(app: &'a String) -> Self {
        Target::App(app)
    }
}

/// Why [`MockServerBuilder::try_start`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// Binding the listener or starting the runtime or thread failed.
    Io(std::io::Error),
    /// The `--api-docs` directory could not be read or holds invalid JSON.
    ApiDocs(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "cannot start the mock ARI server: {e}"),
            StartError::ApiDocs(e) => write!(f, "cannot load the API docs: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Io(e) => Some(e),
            StartError::ApiDocs(_) => None,
        }
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

/// An open events WebSocket connection, as listed by [`MockServer::connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Connection number (1 for the first one).
    pub id: u64,
    /// Apps it currently holds (apps moved to a newer connection are gone from this list).
    pub apps: Vec<String>,
    /// The apps it asked for.
    pub requested_apps: Vec<String>,
    /// The authenticated user.
    pub user: String,
    /// Whether that user is read-only.
    pub read_only: bool,
}

/// Configures and starts a [`MockServer`].
///
/// ```no_run
/// use std::time::Duration;
/// let server = ari_testkit::MockServer::builder()
///     .user("alice", "secret")
///     .read_only_user("viewer", "view")
///     .simulated_time()
///     .write_timeout(Duration::from_millis(100))
///     .start();
/// ```
pub struct MockServerBuilder {
    addr: SocketAddr,
    users: Vec<User>,
    allowed_origins: Vec<String>,
    api_docs: Option<PathBuf>,
    simulated_time: bool,
    simulator: bool,
    sim_config: Option<SimConfig>,
    write_timeout: Duration,
    send_buffer_size: Option<u32>,
    logger: Option<Logger>,
    asterisk_id: Option<String>,
    asterisk_version: Option<crate::version::Pretend>,
    outbound: Vec<crate::outbound::OutboundConfig>,
    session_limit: usize,
}

impl fmt::Debug for MockServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServerBuilder")
            .field("addr", &self.addr)
            .field("users", &self.users)
            .field("api_docs", &self.api_docs)
            .field("simulated_time", &self.simulated_time)
            .field("simulator", &self.simulator)
            .field("write_timeout", &self.write_timeout)
            .field("send_buffer_size", &self.send_buffer_size)
            .finish_non_exhaustive()
    }
}

impl Default for MockServerBuilder {
    fn default() -> Self {
        MockServerBuilder {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            users: Vec::new(),
            allowed_origins: Vec::new(),
            api_docs: None,
            simulated_time: false,
            simulator: true,
            sim_config: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            send_buffer_size: None,
            logger: None,
            asterisk_id: None,
            asterisk_version: None,
            outbound: Vec::new(),
            session_limit: DEFAULT_SESSION_LIMIT,
        }
    }
}

impl MockServerBuilder {
    /// Listen on `127.0.0.1:port` (default: an ephemeral port).
    pub fn port(mut self, port: u16) -> Self {
        self.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self
    }

    /// Listen on this address (default `127.0.0.1:0`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Adds a user with read and write access. When no user is added, the server has one:
    /// `asterisk` / `asterisk`. The first user added is the one [`MockServer::username`] reports.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push(User {
            name: name.to_owned(),
            password: password.to_owned(),
            read_only: false,
        });
        self
    }

    /// Adds a `read_only` user: any method other than `GET` answers
    /// `403 {"message":"Write access denied"}`. If it is the only user added, the default
    /// `asterisk` / `asterisk` user is kept as well.
    pub fn read_only_user(mut self, name: &str, password: &str) -> Self {
        self.users.push(User {
            name: name.to_owned(),
            password: password.to_owned(),
            read_only: true,
        });
        self
    }

    /// Adds an origin to `allowed_origins` (as in `ari.conf` `[general]`; `*` allows any).
    /// A request whose `Origin` is allowed gets `Access-Control-Allow-Origin` (that origin)
    /// and `Access-Control-Allow-Credentials: true`; a CORS preflight (`OPTIONS` with
    /// `Access-Control-Request-Method` naming a method of the resource) also gets
    /// `Access-Control-Allow-Methods` and, when requested, `Access-Control-Allow-Headers`.
    /// Without any, as in a default Asterisk, no `Access-Control-*` header is ever sent;
    /// `OPTIONS` answers 204 with `Allow` either way.
    pub fn allowed_origin(mut self, origin: &str) -> Self {
        self.allowed_origins.push(origin.to_owned());
        self
    }

    /// Serves `/ari/api-docs/resources.json` (from `dir/resources.json`) and
    /// `/ari/api-docs/{name}.json` (from `dir/api-docs/{name}.json`), with `basePath` rewritten
    /// to `http://127.0.0.1:PORT/ari`.
    pub fn api_docs(mut self, dir: impl AsRef<Path>) -> Self {
        self.api_docs = Some(dir.as_ref().to_owned());
        self
    }

    /// Simulated time: the simulator's clock starts at zero and moves only through
    /// [`MockServer::advance`] (or `POST /_sim/advance?ms=N`). Injected delays still use real time.
    pub fn simulated_time(mut self) -> Self {
        self.simulated_time = true;
        self
    }

    /// Configuration for the simulated Asterisk. Without it, the default configuration is
    /// used with `wall_clock_base_ms` set to the real time at start, so event timestamps are
    /// current.
    pub fn sim_config(mut self, cfg: SimConfig) -> Self {
        self.sim_config = Some(cfg);
        self
    }

    /// Pure scripted mode: no simulator. REST requests that no expectation matches answer
    /// `404 {"message":"Resource not found"}`.
    pub fn without_simulator(mut self) -> Self {
        self.simulator = false;
        self
    }

    /// How long one WebSocket write may block before the server drops the client, as
    /// Asterisk's `sessionlimit` (`http.conf`, default [`DEFAULT_SESSION_LIMIT`] = 100): HTTP
    /// sessions (keep-alive connections and WebSockets) open at once. A connection beyond it
    /// is closed at once without an answer, as Asterisk does ("HTTP session count exceeded");
    /// counted in [`MockServer::sessions_refused`].
    pub fn session_limit(mut self, limit: usize) -> Self {
        self.session_limit = limit;
        self
    }

    /// Asterisk's `websocket_write_timeout` (default 100 ms).
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d;
        self
    }

    /// Sets `SO_SNDBUF` on the listening socket (inherited by accepted connections), so that a
    /// client that stops reading fills the send buffer quickly — useful to test the
    /// slow-client drop without pushing megabytes.
    pub fn send_buffer_size(mut self, bytes: u32) -> Self {
        self.send_buffer_size = Some(bytes);
        self
    }

    /// Receives one human-readable line per request, connection, event sent, and fault.
    pub fn on_log(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.logger = Some(Arc::new(f));
        self
    }

    /// The `asterisk_id` carried by events and by the frames the server builds itself
    /// (default: the simulator configuration's, `02:fc:00:00:00:01`).
    pub fn asterisk_id(mut self, id: &str) -> Self {
        self.asterisk_id = Some(id.to_owned());
        self
    }

    /// Pretends to be this Asterisk release (`"18"`, `"20.13.0"`, `"22.4.0"`): `GET
    /// /asterisk/info` reports it as `system.version`, `/ari/api-docs/resources.json` has its
    /// branch's `apiVersion` (6.0.1 for 18, 8.0.0 for 20, 10.0.0 for 22, 11.0.0 for 23),
    /// `RESTRequest` frames on the events WebSocket are ignored as those releases do before
    /// 20.14, 22.4 and 23 (no `RESTResponse` ever comes), and the REST routes its branch
    /// lacks answer 404 (before 20: `channels/{id}/progress`, `channels/{id}/variables`,
    /// `channels/{id}/transfer_progress`, `bridges/{id}/variable(s)`, `events/claim`).
    /// chan_websocket follows the release too: its plain-text `MEDIA_START` has no
    /// `channel_id` before 20.17, 22.7 and 23.1, and `MARK_MEDIA` is an unknown command,
    /// ignored without a reply, before 20.18, 22.8 and 23.2.
    /// A string that does not start with a number is ignored. `ari-mock --asterisk-version`.
    pub fn asterisk_version(mut self, version: &str) -> Self {
        self.asterisk_version = crate::version::Pretend::parse(version);
        self
    }

    /// Makes the simulated Asterisk dial the application over an ARI outbound WebSocket, as
    /// `websocket_client.conf` + `ari.conf` `type=outbound_websocket` do (see
    /// [`OutboundConfig`](crate::OutboundConfig)); may be called several times. Persistent
    /// connections are opened when the server starts; per-call ones when a channel enters
    /// Stasis for one of their apps.
    pub fn outbound(mut self, cfg: crate::outbound::OutboundConfig) -> Self {
        self.outbound.push(cfg);
        self
    }

    /// Starts the server.
    ///
    /// # Panics
    /// If it cannot start (see [`try_start`](Self::try_start)); meant for tests.
    pub fn start(self) -> MockServer {
        match self.try_start() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts the server: binds, then runs it on its own thread with its own tokio runtime.
    pub fn try_start(self) -> Result<MockServer, StartError> {
        let mut users = self.users;
        if users.iter().all(|u| u.read_only) {
            users.insert(
                0,
                User {
                    name: DEFAULT_USER.to_owned(),
                    password: DEFAULT_USER.to_owned(),
                    read_only: false,
                },
            );
        }
        // Bind on the server thread (its runtime must not be entered from the caller, which
        // may itself be inside a runtime), then hand the listener's address back.
        let (shared_tx, shared_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
        let (addr, thread) = ServerThread::spawn(
            format!("ari-testkit-{}", self.addr.port()),
            bind(self.addr, self.send_buffer_size),
            move |listener, stop| {
                // The shared state needs the bound address: it comes once the caller has it.
                let shared = shared_rx.recv().ok();
                async move {
                    if let Some(shared) = shared {
                        accept_loop(shared, listener, stop).await;
                    }
                }
            },
        )
        .map_err(StartError::Io)?;
        // On an early return `shared_tx` must be dropped before `thread` (whose drop joins the
        // thread, waiting in `recv`): locals drop in reverse order, so move it after `thread`.
        let shared_tx = shared_tx;
        let api_docs = match &self.api_docs {
            Some(dir) => load_api_docs(dir, addr).map_err(StartError::ApiDocs)?,
            None => HashMap::new(),
        };
        let clock = if self.simulated_time {
            Clock::Simulated(Mutex::new(Duration::ZERO))
        } else {
            Clock::Real(Instant::now())
        };
        let start_wall = SystemTime::now();
        let mut sim_config = self.sim_config.unwrap_or_else(|| SimConfig {
            wall_clock_base_ms: start_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ..SimConfig::default()
        });
        if let Some(id) = self.asterisk_id {
            sim_config.asterisk_id = id;
        }
        if let Some(p) = &self.asterisk_version {
            sim_config.version = p.version.clone();
        }
        let start_wall =
            SystemTime::UNIX_EPOCH + Duration::from_millis(sim_config.wall_clock_base_ms);
        let asterisk_id = sim_config.asterisk_id.clone();
        let per_call_apps = crate::outbound::Outbound::new(self.outbound.clone()).per_call_apps();
        let sim = self.simulator.then(|| {
            let mut sim = Sim::new(sim_config);
            sim.set_per_call_apps(&per_call_apps);
            Mutex::new(sim)
        });
        let shared = Arc::new(Shared {
            addr,
            users,
            allowed_origins: self.allowed_origins,
            asterisk_id,
            api_docs,
            pretend: self.asterisk_version,
            clock,
            start_wall,
            sim,
            sim_notify: Notify::new(),
            registry: Mutex::new(Registry::default()),
            registry_changed: Condvar::new(),
            script: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            log_changed: Condvar::new(),
            faults: Mutex::new(Faults::new(self.write_timeout)),
            logger: self.logger,
            next_conn: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            session_limit: self.session_limit,
            sessions: Sessions::default(),
            rest_requests: AtomicU64::new(0),
            close_replies: AtomicU64::new(0),
            bench: Mutex::new(Default::default()),
            media_conns: Mutex::new(HashMap::new()),
            media_done: Mutex::new(Vec::new()),
            audiosocket_tx: Mutex::new(None),
            media_hold: tokio::sync::watch::Sender::new(false),
            media_held: std::sync::atomic::AtomicUsize::new(0),
            outbound: crate::outbound::Outbound::new(self.outbound),
        });
        shared.log(|| format!("listening on http://{addr}/ari"));
        crate::outbound::load(&shared);
        if shared_tx.send(shared.clone()).is_err() {
            drop(thread);
            return Err(StartError::Io(std::io::Error::other(
                "server thread ended early",
            )));
        }
        Ok(MockServer {
            shared,
            _thread: thread,
        })
    }
}

async fn bind(addr: SocketAddr, send_buffer: Option<u32>) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(n) = send_buffer {
        socket.set_send_buffer_size(n)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Reads the spec directory, rewriting `basePath` to this server's address. The files are
/// otherwise served as they are, in their own key order (as Asterisk does): a generator reading
/// them (`xtask codegen --from-url`) gets the same structs, fields and operations, in the same
/// order, as from the files on disk.
fn load_api_docs(dir: &Path, addr: SocketAddr) -> Result<HashMap<String, Vec<u8>>, String> {
    let base = format!("http://{addr}/ari");
    let base_path =
        regex::Regex::new(r#""basePath"\s*:\s*"(?:[^"\\]|\\.)*""#).map_err(|e| e.to_string())?;
    let load = |path: &Path| -> Result<Vec<u8>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if base_path.is_match(&text) {
            let replaced =
                base_path.replace(&text, regex::NoExpand(&format!("\"basePath\": \"{base}\"")));
            return Ok(replaced.into_owned().into_bytes());
        }
        if let Some(obj) = v.as_object_mut() {
            obj.insert("basePath".to_owned(), Value::from(base.as_str()));
        }
        serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())
    };
    let mut docs = HashMap::new();
    docs.insert(
        "resources.json".to_owned(),
        load(&dir.join("resources.json"))?,
    );
    let sub = dir.join("api-docs");
    let entries = std::fs::read_dir(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            docs.insert(name, load(&entry.path())?);
        }
    }
    Ok(docs)
}

/// Asterisk's default `sessionlimit` (`http.conf`).
pub const DEFAULT_SESSION_LIMIT: usize = 100;

/// HTTP sessions: open now, the most open at once, refused at the limit.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Arc<AtomicUsize>,
    pub(crate) peak: AtomicUsize,
    pub(crate) refused: AtomicU64,
}

impl Sessions {
    /// A session if fewer than `limit` are open, as Asterisk's `httpd_helper_thread` counts.
    fn open(&self, limit: usize) -> Option<SessionGuard> {
        let live = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        if live > limit {
            self.live.fetch_sub(1, Ordering::SeqCst);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.peak.fetch_max(live, Ordering::Relaxed);
        Some(SessionGuard(Arc::clone(&self.live)))
    }
}

/// One open session; closing the socket (dropping it, also after a WebSocket upgrade) ends it.
#[derive(Debug)]
struct SessionGuard(Arc<AtomicUsize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's stream holding its session: the session lasts as long as the socket, through
/// a WebSocket upgrade too.
#[derive(Debug)]
struct SessionStream {
    stream: tokio::net::TcpStream,
    _session: SessionGuard,
}

impl tokio::io::AsyncRead for SessionStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SessionStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    if matches!(shared.clock, Clock::Real(_)) && shared.sim.is_some() {
        tokio::spawn(sim_timer(shared.clone()));
    }
    crate::outbound::start(&shared);
    crate::media_ws::start(&shared);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of file descriptors or similar: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                shared.connections_accepted.fetch_add(1, Ordering::Relaxed);
                let Some(session) = shared.sessions.open(shared.session_limit) else {
                    shared.log(|| format!(
                        "refused connection from {peer}: HTTP session count exceeded {} sessions",
                        shared.session_limit
                    ));
                    drop(stream);
                    continue;
                };
                if lock(&shared.faults).take_refusal(Refusal::Close) {
                    shared.log(|| format!("refused connection from {peer} (fault: close)"));
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let conn_shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| crate::http::serve(conn_shared.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(SessionStream { stream, _session: session }), svc)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
    shared.log(|| "shutting down".to_owned());
}

/// Real-time mode: calls the simulator's `handle_timeout` whenever its `poll_timeout` is due.
async fn sim_timer(shared: Arc<Shared>) {
    let Clock::Real(start) = shared.clock else {
        return;
    };
    let Some(sim) = shared.sim.as_ref() else {
        return;
    };
    loop {
        let deadline =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock(sim).poll_timeout()))
                .unwrap_or(None);
        match deadline {
            Some(d) => {
                let at = start + d;
                if Instant::now() >= at {
                    shared.with_sim(|sim, now| sim.handle_timeout(now));
                    tokio::task::yield_now().await;
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = shared.sim_notify.notified() => {}
                }
            }
            None => shared.sim_notify.notified().await,
        }
    }
}

/// A mock ARI server on loopback: real HTTP/1.1 and WebSocket, a simulated Asterisk behind
/// it, scripted responses and fault injection. Dropping it stops its thread and closes
/// every socket.
///
/// ```no_run
/// let server = ari_testkit::MockServer::start();
/// server.expect("GET", "asterisk/ping").respond(200, serde_json::json!({"ping": "pong"}));
/// println!("connect to {} as {}:{}", server.base_url(), server.username(), server.password());
/// ```
pub struct MockServer {
    shared: Arc<Shared>,
    /// Stopped and joined when the server is dropped.
    _thread: ServerThread,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Starts a server with the defaults: ephemeral port, user `asterisk`/`asterisk`,
    /// simulator on, real time.
    ///
    /// # Panics
    /// If the server cannot start (no free port, no thread).
    pub fn start() -> MockServer {
        MockServerBuilder::default().start()
    }

    /// A builder to configure the server.
    pub fn builder() -> MockServerBuilder {
        MockServerBuilder::default()
    }

    // ----- addresses and credentials -----

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// `http://127.0.0.1:PORT` (ARI lives under `/ari/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// `http://127.0.0.1:PORT/ari`.
    pub fn ari_url(&self) -> String {
        format!("http://{}/ari", self.shared.addr)
    }

    /// `ws://127.0.0.1:PORT/ari/events` (add `?app=...`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ari/events", self.shared.addr)
    }

    /// `ws://127.0.0.1:PORT/ari/events?app=a,b&api_key=user:password` for the first user,
    /// percent-encoded.
    pub fn events_url(&self, apps: &[&str]) -> String {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "{}?app={}&api_key={}",
            self.ws_url(),
            enc(&apps.join(",")),
            enc(&format!("{}:{}", self.username(), self.password()))
        )
    }

    /// The first configured user's name (default `asterisk`).
    pub fn username(&self) -> &str {
        self.shared
            .users
            .first()
            .map_or(DEFAULT_USER, |u| u.name.as_str())
    }

    /// The first configured user's password (default `asterisk`).
    pub fn password(&self) -> &str {
        self.shared
            .users
            .first()
            .map_or(DEFAULT_USER, |u| u.password.as_str())
    }

    // ----- scripted mode -----

    /// Scripts a canned answer for `method path`. `path` is relative to `/ari/`
    /// (`channels/abc/answer`; a leading `/` or `/ari/` is accepted, a query string ignored;
    /// a segment `*` matches any segment). Expectations apply to HTTP and REST over WebSocket
    /// alike, are tried in the order they were added, and take precedence over the simulator.
    ///
    /// ```no_run
    /// # let server = ari_testkit::MockServer::start();
    /// let h = server
    ///     .expect("POST", "channels/*/answer")
    ///     .times(2)
    ///     .respond_empty(204);
    /// // ... run the client ...
    /// assert_eq!(h.hits(), 2);
    /// ```
    pub fn expect(&self, method: &str, path: &str) -> ExpectBuilder {
        ExpectBuilder {
            shared: self.shared.clone(),
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query: Vec::new(),
            body: None,
            delay: None,
            times: Some(1),
        }
    }

    /// Expectations that answered fewer times than set up (`METHOD path (hits/times answered)`).
    pub fn unmet_expectations(&self) -> Vec<String> {
        unmet(&self.shared)
    }

    /// Panics, listing them, if some expectation answered fewer times than set up.
    ///
    /// # Panics
    /// When [`unmet_expectations`](Self::unmet_expectations) is not empty.
    pub fn verify(&self) {
        let unmet = self.unmet_expectations();
        assert!(unmet.is_empty(), "unmet expectations: {unmet:?}");
    }

    /// Removes every expectation.
    pub fn clear_expectations(&self) {
        lock(&self.shared.script).clear();
    }

    /// Every request received so far, in order: HTTP requests (including rejected ones and
    /// WebSocket upgrades) and `RESTRequest` frames. `/_sim/` control requests are not logged.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Blocks until a logged request satisfies `pred` (including requests logged before the
    /// call), or `timeout` passes. Returns the first such request.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # let server = ari_testkit::MockServer::start();
    /// let answered = server.wait_for_request(Duration::from_secs(5), |r| {
    ///     r.method == "POST" && r.path.ends_with("/answer")
    /// });
    /// assert!(answered.is_some());
    /// ```
    pub fn wait_for_request(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&RecordedRequest) -> bool,
    ) -> Option<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        let mut log = lock(&self.shared.log);
        loop {
            if let Some(r) = log.iter().find(|r| pred(r)) {
                return Some(r.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            log = match self.shared.log_changed.wait_timeout(log, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    // ----- pushing frames -----

    /// Sends a text frame, verbatim, to the connection(s) selected. Returns how many
    /// connections it was queued for. It counts as an event for
    /// [`drop_websocket_after`](Self::drop_websocket_after).
    pub fn push_frame<'a>(&self, to: impl Into<Target<'a>>, text: &str) -> usize {
        self.command(to.into(), || ConnCmd::Send(Frame::Event(text.to_owned())))
    }

    /// Sends an event: `application`, `timestamp` and `asterisk_id` are filled in when the
    /// object lacks them (`application` only when the target is an app).
    pub fn push_event<'a>(&self, to: impl Into<Target<'a>>, mut event: Value) -> usize {
        let to = to.into();
        if let Some(obj) = event.as_object_mut() {
            if let Target::App(app) = to {
                obj.entry("application").or_insert_with(|| Value::from(app));
            }
            obj.entry("timestamp")
                .or_insert_with(|| Value::from(self.shared.timestamp()));
            obj.entry("asterisk_id")
                .or_insert_with(|| Value::from(self.shared.asterisk_id.as_str()));
        }
        self.push_frame(to, &event.to_string())
    }

    /// Fault: sends a frame that is not JSON.
    pub fn push_malformed_frame<'a>(&self, to: impl Into<Target<'a>>) -> usize {
        self.push_frame(to, "{\"type\": \"StasisStart\", \"application\": ")
    }

    /// Fault: sends a valid JSON event frame of exactly `size` bytes (at least 64), padded
    /// in a `padding` field, to exceed a client's frame size limit.
    pub fn push_oversized_frame<'a>(&self, to: impl Into<Target<'a>>, size: usize) -> usize {
        let head = "{\"type\":\"Oversized\",\"padding\":\"";
        let tail = "\"}";
        let pad = size.saturating_sub(head.len() + tail.len()).max(1);
        let text = format!("{head}{}{tail}", "x".repeat(pad));
        self.push_frame(to, &text)
    }

    /// Fault: sends a binary frame (Asterisk only sends text frames).
    pub fn push_binary_frame<'a>(&self, to: impl Into<Target<'a>>, bytes: &[u8]) -> usize {
        self.command(to.into(), || ConnCmd::Send(Frame::Binary(bytes.to_vec())))
    }

    // ----- faults -----

    fn command(&self, to: Target<'_>, make: impl FnMut() -> ConnCmd) -> usize {
        match to {
            Target::App(app) => self.shared.command(Some(app), make),
            Target::All => self.shared.command(None, make),
        }
    }

    /// Fault: closes the WebSocket connection(s) now, abruptly (TCP close, no close frame).
    /// Returns how many connections it applies to.
    pub fn drop_websocket<'a>(&self, to: impl Into<Target<'a>>) -> usize {
        self.command(to.into(), || ConnCmd::Close {
            abrupt: true,
            code: 1006,
        })
    }

    /// Closes the WebSocket connection(s) now with a close frame carrying `code`
    /// (e.g. 1001 "going away", as a restarting Asterisk would).
    pub fn close_websocket<'a>(&self, to: impl Into<Target<'a>>, code: u16) -> usize {
        self.command(to.into(), || ConnCmd::Close {
            abrupt: false,
            code,
        })
    }

    /// Fault: closes the connection(s) abruptly after `n` more events have been written
    /// (`RESTResponse` frames do not count; `n == 0` drops now).
    pub fn drop_websocket_after<'a>(&self, to: impl Into<Target<'a>>, n: usize) -> usize {
        self.command(to.into(), || ConnCmd::DropAfter(n))
    }

    /// Fault (slow server): stop writing to the connection(s); frames queue up until
    /// [`resume_sends`](Self::resume_sends).
    pub fn pause_sends<'a>(&self, to: impl Into<Target<'a>>) -> usize {
        self.command(to.into(), || ConnCmd::Pause)
    }

    /// Writes every frame queued since [`pause_sends`](Self::pause_sends), then resumes.
    pub fn resume_sends<'a>(&self, to: impl Into<Target<'a>>) -> usize {
        self.command(to.into(), || ConnCmd::Resume)
    }

    /// Fault: refuses the next `n` connections or requests; see [`Refusal`] for what each
    /// kind refuses. Replaces any refusal still pending; `n == 0` cancels.
    pub fn refuse_connections(&self, n: usize, how: Refusal) {
        lock(&self.shared.faults).refuse = (n > 0).then_some((how, n));
    }

    /// Fault: waits `delay` (real time) before answering every REST request, HTTP or
    /// WebSocket; `None` turns it off.
    pub fn set_response_delay(&self, delay: Option<Duration>) {
        lock(&self.shared.faults).delay = delay;
    }

    /// Fault: while `true`, REST requests (HTTP or WebSocket) are read but not answered;
    /// `false` answers those held, then every request as usual. Events flow meanwhile (an
    /// Asterisk busy on its REST side while its event stream goes on).
    pub fn hold_responses(&self, hold: bool) {
        lock(&self.shared.faults).held.send_replace(hold);
    }

    /// Fault: while `true`, REST requests over HTTP take effect at once (the simulator acts
    /// on them, its events flow) but their answers wait; `false` sends the answers held, then
    /// answers as usual. (REST over WebSocket answers before the events, as Asterisk does,
    /// and is not held.) An answer that reaches the application after the
    /// events it caused, or after what happened next (the caller hung up meanwhile).
    pub fn hold_answers(&self, hold: bool) {
        lock(&self.shared.faults).answers_held.send_replace(hold);
    }

    /// Fault: answers the next `n` REST requests (HTTP or WebSocket, after authentication)
    /// with `status` and `{"message": <reason phrase>}` instead of handling them.
    pub fn fail_requests(&self, n: usize, status: u16) {
        lock(&self.shared.faults).fail = (n > 0).then_some((status, n));
    }

    /// Changes the WebSocket write timeout (see [`MockServerBuilder::write_timeout`]).
    pub fn set_write_timeout(&self, d: Duration) {
        lock(&self.shared.faults).write_timeout = d;
    }

    // ----- connections -----

    /// The open events WebSocket connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let reg = lock(&self.shared.registry);
        let mut v: Vec<ConnectionInfo> = reg
            .conns
            .iter()
            .map(|(id, c)| ConnectionInfo {
                id: *id,
                apps: c.apps.clone(),
                requested_apps: c.requested.clone(),
                user: c.user.clone(),
                read_only: c.read_only,
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// The apps currently held by some connection, sorted.
    pub fn connected_apps(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.shared.registry).apps.keys().cloned().collect();
        v.sort();
        v
    }

    /// How many of the close frames sent by [`close_websocket`](Self::close_websocket) (and
    /// by the simulated Asterisk closing an outbound connection) the client answered with its
    /// own, as RFC 6455 requires (the server waits up to a second for it, then closes TCP).
    pub fn close_replies(&self) -> u64 {
        self.shared.close_replies.load(Ordering::Relaxed)
    }

    /// WebSocket connections that have ended, in the order they ended, with the reason.
    pub fn closed_connections(&self) -> Vec<ClosedConnection> {
        lock(&self.shared.registry).closed.clone()
    }

    /// Blocks until some connection holds `app`, or `timeout` passes. Returns whether it does.
    pub fn wait_for_app(&self, app: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if !self.wait_registry(timeout, |r| r.apps.contains_key(app)) {
            return false;
        }
        // The connection is registered before the simulator hears of the app: wait for both,
        // so a call placed right after this returns reaches the app.
        loop {
            match self.with_sim(|sim, _| sim.app_is_connected(app)) {
                None | Some(true) => return true,
                Some(false) if Instant::now() >= deadline => return false,
                Some(false) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Blocks until at least `n` connections have ended, or `timeout` passes.
    pub fn wait_for_closed(&self, n: usize, timeout: Duration) -> bool {
        self.wait_registry(timeout, |r| r.closed.len() >= n)
    }

    fn wait_registry(&self, timeout: Duration, mut cond: impl FnMut(&Registry) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut reg = lock(&self.shared.registry);
        loop {
            if cond(&reg) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            reg = match self.shared.registry_changed.wait_timeout(reg, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    // ----- simulator -----

    /// Configures a websocket_client (`websocket_client.conf` `[id]`, `uri = ...`): an
    /// externalMedia channel with `connection_type=client` and `external_host=<id>` makes the
    /// simulated Asterisk connect to `uri` (chan_websocket client mode), with the `v()` dial
    /// option's parameters appended. Does nothing without the simulator.
    pub fn set_websocket_client(&self, id: &str, uri: &str) {
        let _ = self.with_sim(|sim, _| sim.set_websocket_client(id, uri));
    }

    /// Holds (`true`) or releases chan_websocket client connections: while held, the
    /// connections Asterisk is to make wait before dialing; released, they dial (in no set
    /// order). A connection's URI is read when it dials, with the `v()`
    /// parameters last set on its websocket_client (Asterisk keeps them in the shared client
    /// object: bug B1), so holding two calls' connections makes both carry the second call's
    /// parameters, as concurrent calls can in Asterisk.
    pub fn hold_media_connections(&self, hold: bool) {
        self.shared.media_hold.send_replace(hold);
    }

    /// Client connections waiting while [`hold_media_connections`](Self::hold_media_connections)
    /// holds them.
    pub fn held_media_connections(&self) -> usize {
        self.shared
            .media_held
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes the simulated Asterisk end the live media socket `connection_id` (its
    /// `MEDIA_WEBSOCKET_CONNECTION_ID`, `MediaStart::connection_id`) with the close status
    /// `code` and `reason`, and hang its channel up with `tech_cause` = `code`, as Asterisk
    /// does when it gives a socket up (1001 after unanswered keepalive PINGs, 1003 for an
    /// opcode it does not take). Returns whether such a socket was live.
    pub fn close_media(&self, connection_id: &str, code: u16, reason: &str) -> bool {
        let conns = crate::state::lock(&self.shared.media_conns);
        conns.get(connection_id).is_some_and(|tx| {
            tx.send(crate::sim::MediaSignal::CloseWith {
                connection_id: connection_id.to_owned(),
                code,
                reason: reason.to_owned(),
            })
            .is_ok()
        })
    }

    /// Makes the live media socket `connection_id` go silent, as over a network cut: the
    /// simulated Asterisk neither reads nor writes it (the application's close is never
    /// answered) and keeps the connection open until the channel is hung up. Returns
    /// whether such a socket was live.
    pub fn stall_media(&self, connection_id: &str) -> bool {
        let conns = crate::state::lock(&self.shared.media_conns);
        conns.get(connection_id).is_some_and(|tx| {
            tx.send(crate::sim::MediaSignal::Stall {
                connection_id: connection_id.to_owned(),
            })
            .is_ok()
        })
    }

    /// Reports of the chan_websocket media sockets (`/media/<id>`) that have closed, in
    /// closing order: frames sent and played, drops, XOFFs.
    pub fn media_sessions(&self) -> Vec<crate::MediaSessionReport> {
        crate::media_ws::reports(&self.shared)
    }

    /// Runs `f` on the simulated Asterisk with the current time, then delivers the events it
    /// produced. Returns `None` when the server runs without simulator.
    ///
    /// # Panics
    /// Re-raises (as a panic with its message) a panic of the simulator.
    pub fn with_sim<R>(&self, f: impl FnOnce(&mut Sim, Duration) -> R) -> Option<R> {
        self.shared
            .with_sim(f)
            .map(|r| r.unwrap_or_else(|msg| panic!("simulator panicked: {msg}")))
    }

    /// Places a simulated call into an app; returns the new channel's id.
    pub fn place_call(&self, call: PlaceCall) -> Result<String, String> {
        self.with_sim(|sim, now| sim.place_call(now, call))
            .ok_or_else(no_sim)
    }

    /// The caller on `channel_id` presses `digits`.
    pub fn send_dtmf(&self, channel_id: &str, digits: &str) -> Result<(), String> {
        self.with_sim(|sim, now| sim.send_dtmf(now, channel_id, digits))
            .ok_or_else(no_sim)?
    }

    /// The far end hangs up `channel_id`.
    pub fn hangup(&self, channel_id: &str) -> Result<(), String> {
        self.with_sim(|sim, now| sim.hangup(now, channel_id))
            .ok_or_else(no_sim)?
    }

    /// The phone on `channel_id` sends a SIP `REFER` (a blind or attended transfer) that
    /// Asterisk hands to ARI: `ChannelTransfer` (see [`Sim::refer`]).
    pub fn refer(&self, channel_id: &str, refer: crate::Refer) -> Result<(), String> {
        self.with_sim(|sim, now| sim.refer(now, channel_id, refer))
            .ok_or_else(no_sim)?
    }

    /// Time since the server started, on the simulator's clock (real or simulated).
    pub fn now(&self) -> Duration {
        self.shared.clock.now()
    }

    /// Simulated time only: moves the clock forward by `d`, firing every simulator timer
    /// that falls due on the way, in order, and delivering its events. Returns `false` (and
    /// does nothing) in real-time mode.
    pub fn advance(&self, d: Duration) -> bool {
        crate::control::advance(&self.shared, d)
    }
}

impl MockServer {
    // ----- flood -----

    /// Sends `spec.events` realistic events over `spec.channels` channels to the connection
    /// holding `spec.app`, then a `ChannelUserevent` named `bench-done`, and blocks until
    /// they have been written (so the client must be reading on another thread). The frames
    /// are built before the first write. See [`FloodSpec`] for the event sequence;
    /// `POST /_bench/flood` does the same over HTTP without blocking.
    ///
    /// ```no_run
    /// use ari_testkit::{FloodSpec, MockServer};
    /// let server = MockServer::start();
    /// // ... a client connects with ?app=bench and reads on another thread ...
    /// let report = server.flood(FloodSpec::new("bench", 200_000, 10_000))?;
    /// println!("{:.0} events/s", report.events_per_sec);
    /// # Ok::<(), ari_testkit::FloodError>(())
    /// ```
    pub fn flood(&self, spec: FloodSpec) -> Result<FloodReport, FloodError> {
        crate::bench::run_blocking(&self.shared, &spec)
    }

    /// TCP connections accepted so far (also those then refused by a fault), as in
    /// `GET /_bench/stats`.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections_accepted.load(Ordering::Relaxed)
    }

    /// HTTP sessions open at once at most so far (keep-alive connections and WebSockets), as
    /// in `GET /_bench/stats` (`sessions_peak`).
    pub fn sessions_peak(&self) -> usize {
        self.shared.sessions.peak.load(Ordering::Relaxed)
    }

    /// Connections closed at once because [`MockServerBuilder::session_limit`] sessions were
    /// open (`GET /_bench/stats`: `sessions_refused`).
    pub fn sessions_refused(&self) -> u64 {
        self.shared.sessions.refused.load(Ordering::Relaxed)
    }

    /// REST requests answered so far, over HTTP and over WebSocket (`GET /_bench/stats`).
    pub fn rest_requests(&self) -> u64 {
        self.shared.rest_requests.load(Ordering::Relaxed)
    }

    /// Removes every persistent outbound configuration and reloads (`module reload res_ari`
    /// after deleting the `outbound_websocket` objects, recorded): each connection gets
    /// `ApplicationUnregistered` for each of its apps, then CLOSE 1000, and Asterisk does not
    /// dial again. Also `POST /_sim/outbound/remove`. Returns how many connections were told.
    pub fn remove_persistent_outbound(&self) -> usize {
        crate::outbound::remove_persistent(&self.shared)
    }

    /// Counters of the outbound connections (see [`MockServerBuilder::outbound`]).
    pub fn outbound_stats(&self) -> crate::outbound::OutboundStats {
        self.shared.outbound.stats()
    }

    /// The last flood's report (`GET /_bench/stats`), `done` or still being written.
    pub fn flood_stats(&self) -> Option<FloodReport> {
        crate::bench::last_report(&self.shared)
    }
}

fn no_sim() -> String {
    "the server runs without simulator".to_owned()
}
