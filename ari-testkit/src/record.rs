//! `ari-mock record`: a transparent recording proxy between an ARI client and Asterisk.
//!
//! [`Recorder`] listens on loopback and forwards every request to the upstream Asterisk (or
//! the simulated one) unchanged: same paths, the client's own credentials passed through,
//! `api-docs` included; WebSocket upgrades on `/ari/events` are forwarded too, and every
//! frame is relayed both ways. Clients connect to it exactly as to Asterisk. Meanwhile it
//! writes each exchange and each frame, with its time, into a directory in the format of
//! `ari-fixtures` (see `ari-testkit/docs/RECORDINGS.md`):
//!
//! | file | lines |
//! |---|---|
//! | `rest.jsonl` | one HTTP exchange: `kind` `rest`, `t_ms`, `ms`, `method`, `path` (below `/ari/`), `query`, `body`, `status`, `content_type`, `response`, `response_len` |
//! | `events.jsonl` | one text frame Asterisk sent on an events WebSocket: `t_ms`, `ws`, `conn`, `frame` |
//! | `ws-sent.jsonl` | one text frame the client sent on it (`RESTRequest`): same fields |
//! | `connections.jsonl` | `ws-open` / `ws-close` of each WebSocket (a media one with `media: true` and its `path`) |
//! | `media.jsonl` | one frame of a WebSocket outside `/ari/` (chan_websocket's `/media/<id>`), in the format of `ari-fixtures/media`: `t_ms`, `ws`, `conn` `media`, `dir` (`in` from Asterisk, `out` from the client), `type` `ws`, `opcode`; `text` for a control message, `len`/`head_hex`/`b64` (the whole payload) for audio, `code`/`reason` for a close |
//!
//! **AudioSocket** (`externalMedia` with `encapsulation=audiosocket`): the recorder listens
//! for Asterisk's TCP connection itself ([`RecorderBuilder::audiosocket_host`]), relays it to
//! the application's `external_host`, and writes each message both ways to `media.jsonl`
//! (`conn` `as`, `type` `audiosocket`, the fields of `ari-fixtures/media/audiosocket-*.jsonl`
//! and `b64`), with `as-open` / `as-close` lines in `connections.jsonl`.
//!
//! **Outbound WebSockets** (Asterisk dials the application): with
//! [`RecorderBuilder::outbound`], a second listener ([`Recorder::outbound_url`]: point
//! `websocket_client.conf`'s `uri` at it) takes Asterisk's connections and dials the
//! application at the given address with the same path, query and headers (Asterisk's
//! credentials passed through, never written). Each such connection is written like an
//! events WebSocket (`connections.jsonl` with `outbound: true` and `conn` `ob#N`, Asterisk's
//! frames in `events.jsonl`, the application's `RESTRequest`s in `ws-sent.jsonl`); a refused
//! upgrade is a `ws-refused` line with the application's status. chan_websocket's client
//! connection type (Asterisk dials the application's media server, offering the `media`
//! subprotocol) arrives on the same listener: relayed to [`RecorderBuilder::media_app`] (or
//! the outbound application) and written like a media WebSocket (`media.jsonl`, `ws-open`
//! with `media: true` and `outbound: true`).
//!
//! Credentials are never written: no header is recorded, `api_key` is removed from every
//! recorded query, and the upstream URL is not written.
//!
//! The upstream may be `https://` (and the events WebSocket then `wss://`): rustls, trusting
//! the Mozilla roots of `webpki-roots` and the certificates of
//! [`RecorderBuilder::upstream_ca`] (a private CA, PEM).
//!
//! ```no_run
//! use ari_testkit::record::Recorder;
//! let asterisk = ari_testkit::MockServer::start();
//! let recorder = Recorder::builder(&asterisk.base_url(), "/tmp/rec").start()?;
//! // ... point the client under test at recorder.base_url() ...
//! let stats = recorder.finish();
//! assert_eq!(stats.write_errors, 0);
//! # Ok::<(), ari_testkit::record::RecordError>(())
//! ```

use std::convert::Infallible;
use std::fmt;
use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::server_thread::ServerThread;
use crate::state::{lock, Logger};
use crate::util::parse_query;

/// Files a recording consists of.
pub const RECORDING_FILES: [&str; 5] = [
    "rest.jsonl",
    "events.jsonl",
    "ws-sent.jsonl",
    "connections.jsonl",
    "media.jsonl",
];

/// Why a recorder could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecordError {
    /// The upstream URL is not `http(s)://host[:port][/prefix]`, or its CA file cannot be
    /// read.
    Upstream(String),
    /// A recording file could not be created.
    Output {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Binding the listener or starting its thread failed.
    Io(std::io::Error),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Upstream(why) => write!(f, "bad upstream URL: {why}"),
            RecordError::Output { path, .. } => write!(f, "cannot create {}", path.display()),
            RecordError::Io(e) => write!(f, "cannot start the recorder: {e}"),
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecordError::Upstream(_) => None,
            RecordError::Output { source, .. } => Some(source),
            RecordError::Io(e) => Some(e),
        }
    }
}

/// Counts of what a [`Recorder`] relayed and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordStats {
    /// HTTP exchanges written to `rest.jsonl` (api-docs included).
    pub rest: u64,
    /// Events WebSockets opened through the recorder.
    pub websockets: u64,
    /// Text frames from upstream written to `events.jsonl`.
    pub events: u64,
    /// Text frames from the client written to `ws-sent.jsonl`.
    pub sent: u64,
    /// Binary frames relayed (audio of media WebSockets, written to `media.jsonl`).
    pub binary_frames: u64,
    /// WebSockets outside `/ari/` (chan_websocket media) opened through the recorder.
    pub media_websockets: u64,
    /// Frames of media WebSockets written to `media.jsonl` (both directions).
    pub media_frames: u64,
    /// Requests outside `/ari/` (other than WebSocket upgrades) relayed without being
    /// written.
    pub not_ari: u64,
    /// Outbound WebSockets (Asterisk dialling the application) relayed.
    pub outbound_websockets: u64,
    /// Outbound upgrades the application refused (its answer relayed to Asterisk).
    pub outbound_refused: u64,
    /// chan_websocket client-mode connections (Asterisk dialling the application's media
    /// server) relayed; also counted in `media_websockets`.
    pub outbound_media_websockets: u64,
    /// Requests answered `502` because upstream could not be reached or failed mid-way.
    pub upstream_errors: u64,
    /// Lines that could not be written (disk full …); each one is logged.
    pub write_errors: u64,
    /// AudioSocket connections (Asterisk dialling the application over TCP) relayed.
    pub audiosocket_sessions: u64,
    /// AudioSocket messages written to `media.jsonl` (both directions).
    pub audiosocket_messages: u64,
}

/// Configures and starts a [`Recorder`].
pub struct RecorderBuilder {
    upstream: String,
    out: PathBuf,
    addr: SocketAddr,
    credentials: Option<(String, String)>,
    upstream_ca: Vec<PathBuf>,
    logger: Option<Logger>,
    outbound: Option<(String, SocketAddr)>,
    media_app: Option<String>,
    audiosocket_host: IpAddr,
    outbound_ca: Vec<PathBuf>,
}

impl fmt::Debug for RecorderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecorderBuilder")
            .field("upstream", &self.upstream)
            .field("out", &self.out)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RecorderBuilder {
    /// Listen on `127.0.0.1:port` (default: an ephemeral port).
    pub fn port(mut self, port: u16) -> Self {
        self.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self
    }

    /// Listen on this address.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Credentials sent upstream (HTTP Basic) when a client sends none. A client's own
    /// `Authorization` header or `api_key` is always passed through unchanged. Never written.
    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Also trust the certificates in this PEM file for an `https://` upstream (a private
    /// CA, or the server's own self-signed certificate); the Mozilla roots stay trusted.
    pub fn upstream_ca(mut self, pem_file: impl AsRef<Path>) -> Self {
        self.upstream_ca.push(pem_file.as_ref().to_path_buf());
        self
    }

    /// Called with one line per exchange, WebSocket and problem.
    pub fn on_log(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.logger = Some(Arc::new(f));
        self
    }

    /// Also record outbound WebSockets: a second listener on `listen` (port 0: an ephemeral
    /// one; see [`Recorder::outbound_url`]) takes Asterisk's connections and relays each one
    /// to the application at `app` (`ws://host:port` or `wss://`, see [`outbound_ca`](Self::outbound_ca); the path and query are Asterisk's own).
    ///
    /// ```no_run
    /// use ari_testkit::record::Recorder;
    /// let asterisk = ari_testkit::MockServer::start();
    /// let recorder = Recorder::builder(&asterisk.base_url(), "/tmp/rec")
    ///     .outbound("ws://127.0.0.1:8090", "127.0.0.1:0".parse()?)
    ///     .start()?;
    /// // websocket_client.conf: uri = {recorder.outbound_url()}/ari-ob
    /// println!("{}", recorder.outbound_url().expect("configured"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outbound(mut self, app: &str, listen: SocketAddr) -> Self {
        self.outbound = Some((app.to_owned(), listen));
        self
    }

    /// Where chan_websocket's client-mode connections (Asterisk dialling the application's
    /// media server, subprotocol `media`) that arrive on the [outbound](Self::outbound)
    /// listener go (`ws://` or `wss://host:port`; Asterisk's path and query are kept). Without it they go
    /// to the outbound application.
    pub fn media_app(mut self, app: &str) -> Self {
        self.media_app = Some(app.to_owned());
        self
    }

    /// The address Asterisk reaches the recorder at for AudioSocket (default `127.0.0.1`):
    /// for each `externalMedia` with `encapsulation=audiosocket` the recorder listens on an
    /// ephemeral port of it, gives Asterisk that address as `external_host`, and relays
    /// Asterisk's connection to the application's `external_host`, recording every
    /// message (`media.jsonl`, `conn` `as`).
    pub fn audiosocket_host(mut self, host: IpAddr) -> Self {
        self.audiosocket_host = host;
        self
    }

    /// Also trust the certificates in this PEM file for a `wss://` outbound or media
    /// application (its private CA, or its own self-signed certificate); the Mozilla roots
    /// stay trusted. [`start`](Self::start) fails if neither application is `wss://`.
    pub fn outbound_ca(mut self, pem_file: impl AsRef<Path>) -> Self {
        self.outbound_ca.push(pem_file.as_ref().to_path_buf());
        self
    }

    /// Creates the directory and its files (truncating a previous recording), binds, and
    /// runs the proxy on its own thread with its own tokio runtime.
    pub fn start(self) -> Result<Recorder, RecordError> {
        let upstream = Upstream::parse(&self.upstream, &self.upstream_ca)?;
        let apps = self.outbound.iter().map(|(a, _)| a).chain(&self.media_app);
        if !self.outbound_ca.is_empty() && !apps.clone().any(|a| is_wss(a)) {
            return Err(RecordError::Upstream(
                "an outbound CA file is only used with a wss:// outbound or media application"
                    .to_owned(),
            ));
        }
        let app_ca = |app: &str| {
            if is_wss(app) {
                &self.outbound_ca[..]
            } else {
                &[]
            }
        };
        let outbound = match &self.outbound {
            Some((app, listen)) => {
                let mut app = Upstream::parse(app, app_ca(app))?;
                app.prefix.clear();
                let listener = std::net::TcpListener::bind(listen)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(RecordError::Io)?;
                let addr = listener.local_addr().map_err(RecordError::Io)?;
                Some((app, listener, addr))
            }
            None => None,
        };
        let media_app = match &self.media_app {
            Some(app) => {
                let mut app = Upstream::parse(app, app_ca(app))?;
                app.prefix.clear();
                Some(app)
            }
            None => None,
        };
        let (outbound_app, outbound_listener) = match outbound {
            Some((app, listener, addr)) => (Some(app), Some((listener, addr))),
            None => (None, None),
        };
        let outbound_addr = outbound_listener.as_ref().map(|(_, a)| *a);
        let output = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError::Output { path, source }
        };
        std::fs::create_dir_all(&self.out).map_err(output(&self.out))?;
        let mut files = Vec::new();
        for name in RECORDING_FILES {
            let path = self.out.join(name);
            files.push(File::create(&path).map_err(output(&path))?);
        }
        let default_auth = self.credentials.as_ref().and_then(|(u, p)| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            HeaderValue::from_str(&format!("Basic {token}")).ok()
        });
        let state = Arc::new(RecState {
            upstream,
            outbound: outbound_app,
            media_app,
            audiosocket_host: self.audiosocket_host,
            start: Instant::now(),
            files: Mutex::new(files),
            next_ws: AtomicU64::new(0),
            stats: Mutex::new(RecordStats::default()),
            default_auth,
            logger: self.logger,
        });
        let thread_state = state.clone();
        let (addr, thread) = ServerThread::spawn(
            format!("ari-record-{}", self.addr.port()),
            TcpListener::bind(self.addr),
            move |listener, stop| async move {
                let Some((ob, _)) = outbound_listener else {
                    return accept_loop(thread_state, listener, stop).await;
                };
                let (stop_ob, stopped_ob) = oneshot::channel();
                let main = async {
                    accept_loop(thread_state.clone(), listener, stop).await;
                    let _ = stop_ob.send(());
                };
                let outbound = async {
                    match TcpListener::from_std(ob) {
                        Ok(l) => outbound_accept_loop(thread_state.clone(), l, stopped_ob).await,
                        Err(e) => thread_state.log(|| format!("outbound listener: {e}")),
                    }
                };
                tokio::join!(main, outbound);
            },
        )
        .map_err(RecordError::Io)?;
        Ok(Recorder {
            addr,
            outbound_addr,
            state,
            thread,
        })
    }
}

/// A running recording proxy (see the [module documentation](self)). Dropping it (or
/// [`finish`](Recorder::finish)) stops it and closes every connection; each line is written
/// as it happens, so the files are complete at any time.
pub struct Recorder {
    addr: SocketAddr,
    outbound_addr: Option<SocketAddr>,
    state: Arc<RecState>,
    thread: ServerThread,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder forwarding to `upstream` (`http://host:port` or `https://host:port`, as a
    /// client's base URL; a trailing `/ari` is ignored) and writing into `out`.
    pub fn builder(upstream: &str, out: impl AsRef<Path>) -> RecorderBuilder {
        RecorderBuilder {
            upstream: upstream.to_owned(),
            out: out.as_ref().to_path_buf(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            credentials: None,
            upstream_ca: Vec::new(),
            logger: None,
            outbound: None,
            media_app: None,
            audiosocket_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            outbound_ca: Vec::new(),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL a client uses instead of Asterisk's.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT`: where Asterisk dials instead of the application (append the
    /// application's path), when [`RecorderBuilder::outbound`] was set.
    pub fn outbound_url(&self) -> Option<String> {
        self.outbound_addr.map(|a| format!("ws://{a}"))
    }

    /// What was relayed and written so far.
    pub fn stats(&self) -> RecordStats {
        lock(&self.state.stats).clone()
    }

    /// Stops the proxy (closing every connection) and returns the final counts.
    pub fn finish(mut self) -> RecordStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.thread.stop();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where requests go: `host:port` to connect to, TLS (https) or not, and a path prefix put
/// before `/ari/...`.
struct Upstream {
    authority: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    prefix: String,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Whether `url` is a `wss://` one.
pub(crate) fn is_wss(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
}

/// A rustls client trusting the Mozilla roots and the certificates of `ca_files` (PEM); the
/// error says which file is wrong and why.
pub(crate) fn tls_connector(ca_files: &[PathBuf]) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for file in ca_files {
        let bad = |e: String| format!("CA file {}: {e}", file.display());
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate in it".to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Upstream {
    fn parse(url: &str, ca_files: &[PathBuf]) -> Result<Upstream, RecordError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| RecordError::Upstream(format!("{url:?}: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("http" | "ws") => false,
            Some("https" | "wss") => true,
            Some(other) => {
                return Err(RecordError::Upstream(format!(
                    "scheme {other:?} is not supported (http:// or https://)"
                )))
            }
            None => {
                return Err(RecordError::Upstream(format!(
                    "{url:?} has no scheme (expected http://host:port)"
                )))
            }
        };
        let auth = uri
            .authority()
            .ok_or_else(|| RecordError::Upstream(format!("{url:?} has no host")))?;
        if auth.as_str().contains('@') {
            return Err(RecordError::Upstream(
                "credentials in the URL are not accepted: use --user/--password".to_owned(),
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let authority = format!(
            "{}:{}",
            auth.host(),
            auth.port_u16().unwrap_or(default_port)
        );
        let tls = if tls {
            let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                RecordError::Upstream(format!("{host:?} is not a TLS server name: {e}"))
            })?;
            Some((
                tls_connector(ca_files).map_err(RecordError::Upstream)?,
                name,
            ))
        } else {
            if !ca_files.is_empty() {
                return Err(RecordError::Upstream(
                    "a CA file is only used with an https:// upstream".to_owned(),
                ));
            }
            None
        };
        let mut prefix = uri.path().trim_end_matches('/').to_owned();
        if prefix.ends_with("/ari") {
            prefix.truncate(prefix.len() - 4);
        }
        Ok(Upstream {
            authority,
            tls,
            prefix,
        })
    }
}

struct RecState {
    upstream: Upstream,
    /// The application outbound WebSockets are relayed to.
    outbound: Option<Upstream>,
    /// Where client-mode media WebSockets go (else to `outbound`).
    media_app: Option<Upstream>,
    /// Where the recorder listens for Asterisk's AudioSocket connections.
    audiosocket_host: IpAddr,
    start: Instant,
    /// In the order of [`RECORDING_FILES`].
    files: Mutex<Vec<File>>,
    next_ws: AtomicU64,
    stats: Mutex<RecordStats>,
    default_auth: Option<HeaderValue>,
    logger: Option<Logger>,
}

#[derive(Clone, Copy)]
enum Out {
    Rest = 0,
    Events = 1,
    Sent = 2,
    Connections = 3,
    Media = 4,
}

impl RecState {
    fn t_ms(&self) -> f64 {
        (self.start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
    }

    fn log(&self, line: impl FnOnce() -> String) {
        if let Some(l) = &self.logger {
            l(&line());
        }
    }

    fn write(&self, out: Out, line: &Value) {
        let mut text = line.to_string();
        text.push('\n');
        let result = lock(&self.files)[out as usize].write_all(text.as_bytes());
        if let Err(e) = result {
            lock(&self.stats).write_errors += 1;
            self.log(|| format!("cannot write {}: {e}", RECORDING_FILES[out as usize]));
        }
    }

    fn count(&self, f: impl FnOnce(&mut RecordStats)) {
        f(&mut lock(&self.stats));
    }
}

async fn accept_loop(state: Arc<RecState>, listener: TcpListener, stop: oneshot::Receiver<()>) {
    serve_loop(listener, stop, move || {
        let state = state.clone();
        // One upstream connection per client connection, opened on first use.
        let conn = Arc::new(tokio::sync::Mutex::new(None));
        service_fn(move |req| proxy(state.clone(), conn.clone(), req))
    })
    .await;
}

/// Accepts connections until `stop`, serving each (HTTP/1.1 with upgrades) with a service
/// `service` makes for it.
async fn serve_loop<S>(
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
    service: impl Fn() -> S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Full<Bytes>>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = service();
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
}

type Sender = client_http1::SendRequest<Full<Bytes>>;

fn bad_gateway(state: &RecState, why: String) -> Response<Full<Bytes>> {
    state.count(|s| s.upstream_errors += 1);
    state.log(|| format!("502: {why}"));
    let body = json!({ "message": format!("ari-mock record: {why}") }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the framing
/// headers hyper sets itself for a full body.
fn strip_hop_headers(h: &mut HeaderMap, keep_upgrade: bool) {
    for name in [
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(name);
    }
    h.remove("keep-alive");
    if !keep_upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

async fn connect(state: &RecState, upgrades: bool) -> Result<Sender, String> {
    connect_to(&state.upstream, upgrades).await
}

async fn connect_to(upstream: &Upstream, upgrades: bool) -> Result<Sender, String> {
    let stream = TcpStream::connect(&upstream.authority)
        .await
        .map_err(|e| format!("cannot connect to upstream: {e}"))?;
    let _ = stream.set_nodelay(true);
    match &upstream.tls {
        None => handshake(stream, upgrades).await,
        Some((connector, name)) => {
            let stream = connector
                .connect(name.clone(), stream)
                .await
                .map_err(|e| format!("upstream TLS handshake failed: {e}"))?;
            handshake(stream, upgrades).await
        }
    }
}

async fn handshake<I>(io: I, upgrades: bool) -> Result<Sender, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = client_http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("upstream handshake failed: {e}"))?;
    if upgrades {
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    Ok(sender)
}

/// The part of a request that is recorded, and the upstream request built from it.
struct Forward {
    method: String,
    /// Raw path below `/ari/` (`None`: outside `/ari/`).
    rel: Option<String>,
    /// The raw path.
    path: String,
    query: Vec<(String, String)>,
    upstream_method: http::Method,
    upstream_uri: Uri,
    upstream_headers: HeaderMap,
    body: Bytes,
}

impl Forward {
    fn upstream(&self) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.upstream_method.clone();
        *r.uri_mut() = self.upstream_uri.clone();
        *r.headers_mut() = self.upstream_headers.clone();
        r
    }
}

fn forward(state: &RecState, parts: http::request::Parts, body: Bytes, upgrade: bool) -> Forward {
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().map(str::to_owned);
    let query = parse_query(raw_query.as_deref().unwrap_or(""));
    let rel = if path == "/ari" {
        Some(String::new())
    } else {
        path.strip_prefix("/ari/").map(str::to_owned)
    };
    let target = match &raw_query {
        Some(q) => format!("{}{path}?{q}", state.upstream.prefix),
        None => format!("{}{path}", state.upstream.prefix),
    };
    let mut headers = parts.headers;
    strip_hop_headers(&mut headers, upgrade);
    let has_key = query.iter().any(|(k, _)| k == "api_key");
    if !headers.contains_key(header::AUTHORIZATION) && !has_key {
        if let Some(auth) = &state.default_auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
    }
    Forward {
        method: parts.method.as_str().to_owned(),
        rel,
        path,
        query,
        upstream_method: parts.method,
        upstream_uri: target.parse().unwrap_or_else(|_| Uri::from_static("/")),
        upstream_headers: headers,
        body,
    }
}

/// The recorded `query`: decoded pairs without `api_key`; a repeated key becomes an array.
pub(crate) fn query_json(query: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (k, v) in query.iter().filter(|(k, _)| k != "api_key") {
        match map.get_mut(k) {
            None => {
                map.insert(k.clone(), Value::String(v.clone()));
            }
            Some(Value::Array(a)) => a.push(Value::String(v.clone())),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, Value::String(v.clone())]);
            }
        }
    }
    Value::Object(map)
}

/// The recorded request body: its JSON, its text, or `null` when empty.
pub(crate) fn body_json(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn proxy(
    state: Arc<RecState>,
    conn: Arc<tokio::sync::Mutex<Option<Sender>>>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let upgrade = crate::ws::is_upgrade(&req);
    let t_ms = state.t_ms();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(bad_gateway(
                &state,
                format!("reading the request body: {e}"),
            ))
        }
    };
    let mut fwd = forward(&state, parts, body, upgrade);
    let audiosocket = if upgrade {
        None
    } else {
        audiosocket::intercept(&state, &mut fwd).await
    };
    let sent = Instant::now();
    let response = if upgrade {
        match connect(&state, true).await {
            Ok(mut s) => s
                .send_request(fwd.upstream())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        }
    } else {
        let mut guard = conn.lock().await;
        let mut result = Err(String::new());
        // A kept-alive upstream connection may have been closed meanwhile: retry once on a
        // fresh one when the old one is not ready.
        for _ in 0..2 {
            let ready = match guard.as_mut() {
                Some(s) => s.ready().await.is_ok(),
                None => false,
            };
            if !ready {
                match connect(&state, false).await {
                    Ok(s) => *guard = Some(s),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if let Some(s) = guard.as_mut() {
                result = s
                    .send_request(fwd.upstream())
                    .await
                    .map_err(|e| format!("upstream request failed: {e}"));
                break;
            }
        }
        result
    };
    let mut response = match response {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(&state, e)),
    };
    if let (Some(client_upgrade), true) = (
        client_upgrade,
        response.status() == StatusCode::SWITCHING_PROTOCOLS,
    ) {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        strip_hop_headers(&mut parts.headers, true);
        let ws = state.next_ws.fetch_add(1, Ordering::Relaxed) + 1;
        let media = fwd.rel.is_none();
        let apps: Vec<String> = fwd
            .query
            .iter()
            .filter(|(k, _)| k == "app")
            .flat_map(|(_, v)| v.split(',').map(|a| a.trim().to_owned()))
            .filter(|a| !a.is_empty())
            .collect();
        let conn_name = if media {
            "media".to_owned()
        } else {
            apps.join(",")
        };
        let mut open = json!({
            "type": "ws-open", "t_ms": t_ms, "ws": ws, "conn": conn_name,
            "path": fwd.rel.clone().unwrap_or_else(|| fwd.path.clone()),
            "query": query_json(&fwd.query), "status": 101,
        });
        if media {
            open["media"] = Value::Bool(true);
            set_protocol(&mut open, &parts.headers);
        }
        state.write(Out::Connections, &open);
        state.count(|s| {
            if media {
                s.media_websockets += 1;
            } else {
                s.websockets += 1;
            }
        });
        state.log(|| format!("ws#{ws} open: {conn_name}"));
        spawn_relay(
            state.clone(),
            (ws, conn_name, media),
            (client_upgrade, Role::Server),
            (upstream_upgrade, Role::Client),
        );
        let mut r = Response::from_parts(parts, Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        return Ok(r);
    }
    let ms = (sent.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let (mut parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(bad_gateway(
                &state,
                format!("reading the upstream body: {e}"),
            ))
        }
    };
    strip_hop_headers(&mut parts.headers, false);
    let status = parts.status.as_u16();
    let body = match audiosocket {
        Some(a) if parts.status.is_success() => {
            // The application's address where Asterisk named the recorder's.
            let text = String::from_utf8_lossy(&body).replace(&a.listen, &a.original);
            parts.headers.remove(header::CONTENT_LENGTH);
            Bytes::from(text)
        }
        Some(a) => {
            a.refused();
            body
        }
        None => body,
    };
    match &fwd.rel {
        Some(rel) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let api_docs = rel.starts_with("api-docs");
            let response = if content_type.contains("json") || body.is_empty() {
                String::from_utf8_lossy(&body).into_owned()
            } else {
                base64::engine::general_purpose::STANDARD.encode(&body)
            };
            let mut line = json!({
                "kind": if api_docs { "api-docs" } else { "rest" },
                "run": 1, "t_ms": t_ms, "ms": ms,
                "method": fwd.method, "path": rel, "query": query_json(&fwd.query),
                "body": body_json(&fwd.body), "status": status, "content_type": content_type,
                "response": response, "response_len": body.len(),
            });
            if api_docs {
                line["type"] = Value::String("api-docs".to_owned());
            }
            state.write(Out::Rest, &line);
            state.count(|s| s.rest += 1);
            state.log(|| format!("{} /ari/{rel} → {status}", fwd.method));
        }
        None => {
            state.count(|s| s.not_ari += 1);
            state.log(|| format!("{} outside /ari/ relayed, not recorded", fwd.method));
        }
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

#[path = "record_audiosocket.rs"]
mod audiosocket;

/// Takes Asterisk's outbound connections (see [`RecorderBuilder::outbound`]).
async fn outbound_accept_loop(
    state: Arc<RecState>,
    listener: TcpListener,
    stop: oneshot::Receiver<()>,
) {
    serve_loop(listener, stop, move || {
        let state = state.clone();
        service_fn(move |req| outbound_proxy(state.clone(), req))
    })
    .await;
}

/// Relays one outbound WebSocket upgrade from Asterisk to the application, then its frames.
async fn outbound_proxy(
    state: Arc<RecState>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let media = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|p| p.trim() == "media"))
        });
    let app = if media {
        state.media_app.as_ref().or(state.outbound.as_ref())
    } else {
        state.outbound.as_ref()
    };
    let Some(app) = app else {
        return Ok(bad_gateway(&state, "no outbound application".to_owned()));
    };
    if !crate::ws::is_upgrade(&req) {
        let body = json!({"message": "ari-mock record: the outbound listener takes WebSocket upgrades only"});
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(r);
    }
    let t_ms = state.t_ms();
    let asterisk_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let target = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let mut headers = parts.headers;
    strip_hop_headers(&mut headers, true);
    let mut upstream_req = Request::new(Full::new(Bytes::new()));
    *upstream_req.uri_mut() = target.parse().unwrap_or_else(|_| Uri::from_static("/"));
    *upstream_req.headers_mut() = headers;
    if let Ok(host) = HeaderValue::from_str(&app.authority) {
        upstream_req.headers_mut().insert(header::HOST, host);
    }
    let response = match connect_to(app, true).await {
        Ok(mut s) => s
            .send_request(upstream_req)
            .await
            .map_err(|e| format!("the application's upgrade failed: {e}")),
        Err(e) => Err(e),
    };
    let mut response = match response {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(&state, e)),
    };
    let ws = state.next_ws.fetch_add(1, Ordering::Relaxed) + 1;
    let conn = if media {
        "media".to_owned()
    } else {
        format!("ob#{ws}")
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        state.write(
            Out::Connections,
            &json!({"type": "ws-refused", "t_ms": t_ms, "ws": ws, "conn": conn,
                "path": path, "query": query_json(&query), "status": status, "outbound": true}),
        );
        state.count(|s| s.outbound_refused += 1);
        state.log(|| format!("{conn}: the application answered {status}"));
        let (mut parts, body) = response.into_parts();
        strip_hop_headers(&mut parts.headers, false);
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Response::from_parts(parts, Full::new(body)));
    }
    let app_upgrade = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    strip_hop_headers(&mut parts.headers, true);
    let mut open = json!({
        "type": "ws-open", "t_ms": t_ms, "ws": ws, "conn": conn, "path": path,
        "query": query_json(&query), "status": 101, "outbound": true,
    });
    if media {
        open["media"] = Value::Bool(true);
    }
    set_protocol(&mut open, &parts.headers);
    state.write(Out::Connections, &open);
    state.count(|s| {
        if media {
            s.media_websockets += 1;
            s.outbound_media_websockets += 1;
        } else {
            s.outbound_websockets += 1;
        }
    });
    state.log(|| format!("{conn} (ws#{ws}) open: {path}"));
    // The application plays the client (its frames are the requests, or `out` on a media
    // socket), Asterisk the upstream (its frames are the events, or `in`; a close "by
    // upstream" is Asterisk's).
    spawn_relay(
        state.clone(),
        (ws, conn, media),
        (app_upgrade, Role::Client),
        (asterisk_upgrade, Role::Server),
    );
    let mut r = Response::from_parts(parts, Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    Ok(r)
}

/// Adds to a `ws-open` line the subprotocol the answer chose, if any.
fn set_protocol(open: &mut Value, answer: &HeaderMap) {
    if let Some(p) = answer
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
    {
        open["protocol"] = Value::String(p.to_owned());
    }
}

/// Once both sides of WebSocket `ws` (named `conn`, a media one or not) have switched
/// protocols, relays its frames (see [`relay`]); `client` and `upstream` are each side's
/// upgrade and the role this proxy plays on it.
fn spawn_relay(
    state: Arc<RecState>,
    (ws, conn, media): (u64, String, bool),
    client: (hyper::upgrade::OnUpgrade, Role),
    upstream: (hyper::upgrade::OnUpgrade, Role),
) {
    tokio::spawn(async move {
        let (c, u) = match tokio::join!(client.0, upstream.0) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                let why = c
                    .err()
                    .or(u.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                state.log(|| format!("{conn} (ws#{ws}): upgrade failed: {why}"));
                return;
            }
        };
        let c = WebSocketStream::from_raw_socket(TokioIo::new(c), client.1, None);
        let u = WebSocketStream::from_raw_socket(TokioIo::new(u), upstream.1, None);
        let (c, u) = tokio::join!(c, u);
        relay(state, ws, conn, media, c, u).await;
    });
}

/// One frame of a media WebSocket, as `media.jsonl` keeps it (`None`: a pong, not written).
fn media_line(t_ms: f64, ws: u64, dir: &str, msg: &Message) -> Option<Value> {
    let mut line = json!({"t_ms": t_ms, "ws": ws, "conn": "media", "dir": dir, "type": "ws"});
    match msg {
        Message::Text(t) => {
            line["opcode"] = json!("text");
            line["text"] = json!(t.as_str());
        }
        Message::Binary(b) | Message::Ping(b) => {
            let opcode = if matches!(msg, Message::Binary(_)) {
                "binary"
            } else {
                "ping"
            };
            line["opcode"] = json!(opcode);
            line["len"] = json!(b.len());
            let head: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
            line["head_hex"] = json!(head);
            line["b64"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
        }
        Message::Close(f) => {
            line["opcode"] = json!("close");
            line["code"] = json!(f.as_ref().map(|f| u16::from(f.code)));
            line["reason"] = json!(f.as_ref().map(|f| f.reason.as_str()).unwrap_or(""));
        }
        Message::Pong(_) | Message::Frame(_) => return None,
    }
    Some(line)
}

/// Relays frames both ways until either side closes, writing text frames (every frame of a
/// media WebSocket, to `media.jsonl`).
async fn relay(state: Arc<RecState>, ws: u64, conn: String, media: bool, client: Ws, upstream: Ws) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let closed = |by: &str, code: Option<u16>| {
        state.write(
            Out::Connections,
            &json!({"type": "ws-close", "t_ms": state.t_ms(), "ws": ws, "conn": conn, "by": by, "code": code}),
        );
        state.log(|| format!("ws#{ws} closed by {by}"));
    };
    let up = async {
        let mut saw_close = false;
        while let Some(msg) = from_client.next().await {
            let Ok(msg) = msg else { break };
            if media {
                if let Some(line) = media_line(state.t_ms(), ws, "out", &msg) {
                    state.write(Out::Media, &line);
                    state.count(|s| s.media_frames += 1);
                }
            }
            match &msg {
                Message::Text(_) if media => {}
                Message::Text(t) => {
                    state.write(
                        Out::Sent,
                        &json!({"run": 1, "t_ms": state.t_ms(), "ws": ws, "conn": conn, "frame": t.as_str()}),
                    );
                    state.count(|s| s.sent += 1);
                }
                Message::Binary(_) => state.count(|s| s.binary_frames += 1),
                // Each hop answers pings itself.
                Message::Pong(_) => continue,
                Message::Close(f) => {
                    saw_close = true;
                    closed("client", f.as_ref().map(|f| u16::from(f.code)));
                }
                _ => {}
            }
            let close = matches!(msg, Message::Close(_));
            if to_upstream.send(msg).await.is_err() || close {
                break;
            }
        }
        if !saw_close {
            closed("client-eof", None);
        }
        let _ = to_upstream.close().await;
    };
    let down = async {
        let mut saw_close = false;
        while let Some(msg) = from_upstream.next().await {
            let Ok(msg) = msg else { break };
            if media {
                if let Some(line) = media_line(state.t_ms(), ws, "in", &msg) {
                    state.write(Out::Media, &line);
                    state.count(|s| s.media_frames += 1);
                }
            }
            match &msg {
                Message::Text(_) if media => {}
                Message::Text(t) => {
                    state.write(
                        Out::Events,
                        &json!({"run": 1, "t_ms": state.t_ms(), "ws": ws, "conn": conn, "frame": t.as_str()}),
                    );
                    state.count(|s| s.events += 1);
                }
                Message::Binary(_) => state.count(|s| s.binary_frames += 1),
                Message::Pong(_) => continue,
                Message::Close(f) => {
                    saw_close = true;
                    closed("upstream", f.as_ref().map(|f| u16::from(f.code)));
                }
                _ => {}
            }
            let close = matches!(msg, Message::Close(_));
            if to_client.send(msg).await.is_err() || close {
                break;
            }
        }
        if !saw_close {
            closed("upstream-eof", None);
        }
        let _ = to_client.close().await;
    };
    // Either side ending ends the relay (the other one is closed above).
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
