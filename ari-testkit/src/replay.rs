//! `ari-mock replay`: serves a recording made by [`record`](crate::record) back to the
//! program that made it, offline.
//!
//! - **REST** (HTTP, and `RESTRequest` frames over the events WebSocket): a request is
//!   answered with the first not yet used recorded exchange with the same method, path and
//!   parameters (query, and JSON body); ids are the recorded ones, so a program that takes
//!   its ids from the answers and events (and seeds its own client-side ids the same way)
//!   asks exactly what it asked when recorded. The answer comes after the recorded latency.
//! - **Events**: an events WebSocket is matched to a recorded one by its applications and
//!   `subscribeAll`; its recorded frames are pushed in order, each after its recorded gap
//!   (divided by the speed), and never before the requests that preceded it in the
//!   recording have been made: an event a request caused comes after that request.
//! - **Media** (chan_websocket, `media.jsonl`): a WebSocket outside `/ari/` is matched to a
//!   recorded one by its path (`/media/<id>`: the id is the recorded one, from the replayed
//!   `externalMedia` answer or `MEDIA_START`); what Asterisk sent (control messages, audio,
//!   its close) is pushed in order after its recorded gap, never before the control messages
//!   the client sent before it in the recording (a `STATUS` after its `GET_STATUS`); the
//!   client's control messages are compared in order with the recorded ones (a difference is
//!   unmatched), its audio frames counted.
//! - **Outbound** (Asterisk dialling the application, recorded with
//!   [`RecorderBuilder::outbound`](crate::record::RecorderBuilder::outbound)): with
//!   [`ReplayBuilder::outbound`], the replay dials the application as Asterisk did, each
//!   connection at its recorded time (and after the requests recorded before it) with its
//!   recorded path and query, subprotocol and the credentials given; then it is served like
//!   an events WebSocket (events pushed, `RESTRequest`s answered).
//! - **Unmatched** requests are answered `404` (nothing with that method and path was
//!   recorded) or `500` (recorded with other parameters, or used up), with a JSON body
//!   saying what the recording expected; they are counted in [`ReplayStats`] and logged.
//!   `GET /_replay/stats` answers the counts as JSON.
//!
//! Authentication is not checked (the recording holds no credentials); recorded `401`s are
//! replayed like any other answer.
//!
//! ```no_run
//! use ari_testkit::replay::{Recording, ReplayServer};
//! let recording = Recording::load(std::path::Path::new("/tmp/rec"))?;
//! let server = ReplayServer::builder(recording).speed(2.0).start()?;
//! // ... run the program against server.base_url() ...
//! let stats = server.stats();
//! assert_eq!(stats.unmatched, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::record::{body_json, query_json};
use crate::server_thread::ServerThread;
use crate::state::{lock, Logger};
use crate::util::parse_query;

/// Why a recording could not be loaded or served.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReplayError {
    /// A file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not what `ari-mock record` writes.
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The directory holds none of the recording files.
    Empty(PathBuf),
    /// The speed is not a positive finite number.
    Speed(f64),
    /// Binding the listener or starting its thread failed.
    Start(std::io::Error),
    /// The TLS client for a `wss://` application could not be made: a CA file of
    /// [`ReplayBuilder::outbound_ca`] unreadable or without a certificate, or a CA file
    /// given for no `wss://` application.
    Tls(String),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Io { path, .. } => write!(f, "cannot read {}", path.display()),
            ReplayError::Format {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            ReplayError::Empty(p) => write!(
                f,
                "no recording in {} (expected rest.jsonl / events.jsonl from `ari-mock record`)",
                p.display()
            ),
            ReplayError::Speed(s) => write!(f, "speed must be a positive number, got {s}"),
            ReplayError::Start(e) => write!(f, "cannot start the replay server: {e}"),
            ReplayError::Tls(e) => write!(f, "TLS for the application: {e}"),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Io { source, .. } => Some(source),
            ReplayError::Start(e) => Some(e),
            _ => None,
        }
    }
}

/// One recorded HTTP exchange.
#[derive(Debug, Clone)]
struct Exchange {
    t_ms: f64,
    ms: f64,
    method: String,
    path: String,
    query: Value,
    body: Value,
    status: u16,
    content_type: String,
    response: Vec<u8>,
}

impl Exchange {
    fn describe(&self) -> String {
        describe(&self.method, &self.path, &self.query, &self.body)
    }
}

fn describe(method: &str, path: &str, query: &Value, body: &Value) -> String {
    let mut s = format!("{method} {path}");
    if query.as_object().is_some_and(|q| !q.is_empty()) {
        s.push_str(&format!(" query {query}"));
    }
    if !body.is_null() {
        s.push_str(&format!(" body {body}"));
    }
    s
}

/// A recorded text frame.
#[derive(Debug, Clone)]
struct RecFrame {
    t_ms: f64,
    text: String,
    /// For a `RESTResponse`: the recorded `request_id` it answers.
    answers: Option<String>,
}

/// A recorded `RESTRequest` frame.
#[derive(Debug, Clone)]
struct SentRequest {
    t_ms: f64,
    request_id: String,
    method: String,
    path: String,
    query: Value,
    body: Value,
}

/// A recorded events WebSocket.
#[derive(Debug, Clone, Default)]
struct RecSocket {
    ws: u64,
    apps: BTreeSet<String>,
    subscribe_all: bool,
    t_open: f64,
    frames: Vec<RecFrame>,
    sent: Vec<SentRequest>,
    /// Closed by upstream at this time with this code.
    upstream_close: Option<(f64, u16)>,
    /// An outbound WebSocket (Asterisk dialled the application): its path and query, and
    /// the subprotocol the application chose.
    outbound: Option<(String, Option<String>)>,
}

/// A frame Asterisk sent on a media WebSocket.
#[derive(Debug, Clone)]
enum MediaMsg {
    Text(String),
    Binary(Bytes),
    Close(u16, String),
}

/// A recorded media WebSocket.
#[derive(Debug, Clone, Default)]
struct MediaRec {
    ws: u64,
    path: String,
    protocol: Option<String>,
    t_open: f64,
    /// What Asterisk sent, each with how many of the client's control messages came before.
    frames: Vec<(f64, usize, MediaMsg)>,
    /// The client's control messages, in order, with their time.
    commands: Vec<(f64, String)>,
    /// Asterisk dialled the application (chan_websocket's client mode): the path and query
    /// it dialled, and the subprotocol the application chose.
    dial: Option<(String, Option<String>)>,
}

/// A recording loaded from a directory written by [`record`](crate::record).
#[derive(Debug, Clone, Default)]
pub struct Recording {
    rest: Vec<Exchange>,
    sockets: Vec<RecSocket>,
    media: Vec<MediaRec>,
    audiosockets: Vec<audiosocket::AsRec>,
}

#[path = "replay_audiosocket.rs"]
mod audiosocket;

impl Recording {
    /// Loads `rest.jsonl`, `events.jsonl`, `ws-sent.jsonl` and `connections.jsonl` from
    /// `dir` (each optional, at least one present). Lines without `t_ms` (the hand-made
    /// fixtures) replay without gaps.
    pub fn load(dir: &Path) -> Result<Recording, ReplayError> {
        let mut rec = Recording::default();
        let mut any = false;
        let mut read = |name: &str| -> Result<Vec<(usize, Value)>, ReplayError> {
            let path = dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => return Err(ReplayError::Io { path, source }),
            };
            any = true;
            let mut lines = Vec::new();
            for (i, l) in text.lines().enumerate() {
                if l.trim().is_empty() {
                    continue;
                }
                let v = serde_json::from_str(l).map_err(|e| ReplayError::Format {
                    path: path.clone(),
                    line: i + 1,
                    message: format!("not JSON: {e}"),
                })?;
                lines.push((i + 1, v));
            }
            Ok(lines)
        };
        let rest = read("rest.jsonl")?;
        let connections = read("connections.jsonl")?;
        let events = read("events.jsonl")?;
        let sent = read("ws-sent.jsonl")?;
        let media = read("media.jsonl")?;
        if !any {
            return Err(ReplayError::Empty(dir.to_path_buf()));
        }
        let bad = |file: &str, line: usize, message: String| ReplayError::Format {
            path: dir.join(file),
            line,
            message,
        };
        for (line, v) in rest {
            let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            let status = v["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| bad("rest.jsonl", line, "no status".to_owned()))?;
            let content_type = text("content_type");
            let raw = text("response");
            let response = if content_type.contains("json") || raw.is_empty() {
                raw.into_bytes()
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(&raw)
                    .map_err(|e| bad("rest.jsonl", line, format!("response not base64: {e}")))?
            };
            rec.rest.push(Exchange {
                t_ms: v["t_ms"].as_f64().unwrap_or(0.0),
                ms: v["ms"].as_f64().unwrap_or(0.0),
                method: text("method").to_ascii_uppercase(),
                path: text("path"),
                query: normalise_query(&v["query"]),
                body: v["body"].clone(),
                status,
                content_type,
                response,
            });
        }
        let socket = |rec: &mut Recording, v: &Value| -> usize {
            let ws = v["ws"].as_u64().unwrap_or(0);
            let conn = v["conn"].as_str().unwrap_or("");
            if let Some(i) = rec
                .sockets
                .iter()
                .position(|s| s.ws == ws && (ws != 0 || apps_of(conn) == s.apps))
            {
                return i;
            }
            rec.sockets.push(RecSocket {
                ws,
                apps: apps_of(conn),
                t_open: v["t_ms"].as_f64().unwrap_or(0.0),
                ..RecSocket::default()
            });
            rec.sockets.len() - 1
        };
        for (_, v) in connections {
            if audiosocket::load_connection(&mut rec.audiosockets, &v) {
                continue;
            }
            if v["media"] == true {
                if v["type"] == "ws-open" {
                    let path = v["path"].as_str().unwrap_or("").to_owned();
                    let protocol = v["protocol"].as_str().map(str::to_owned);
                    let dial = (v["outbound"] == true)
                        .then(|| (path.clone() + &query_string(&v["query"]), protocol.clone()));
                    rec.media.push(MediaRec {
                        ws: v["ws"].as_u64().unwrap_or(0),
                        path,
                        protocol,
                        t_open: v["t_ms"].as_f64().unwrap_or(0.0),
                        dial,
                        ..MediaRec::default()
                    });
                }
                continue;
            }
            if rec.media.iter().any(|m| Some(m.ws) == v["ws"].as_u64()) {
                continue;
            }
            if v["type"] == "ws-refused" {
                continue;
            }
            let i = socket(&mut rec, &v);
            let s = &mut rec.sockets[i];
            match v["type"].as_str() {
                Some("ws-open") => {
                    if v["outbound"] == true {
                        let path = v["path"].as_str().unwrap_or("/").to_owned();
                        let protocol = v["protocol"].as_str().map(str::to_owned);
                        s.outbound = Some((path + &query_string(&v["query"]), protocol));
                    }
                    s.t_open = v["t_ms"].as_f64().unwrap_or(0.0);
                    s.subscribe_all = v["query"]["subscribeAll"]
                        .as_str()
                        .is_some_and(crate::ws::ast_true);
                }
                Some("ws-close") if v["by"] == "upstream" => {
                    let code = v["code"].as_u64().and_then(|c| u16::try_from(c).ok());
                    s.upstream_close =
                        Some((v["t_ms"].as_f64().unwrap_or(0.0), code.unwrap_or(1000)));
                }
                _ => {}
            }
        }
        for (line, v) in events {
            let text = v["frame"]
                .as_str()
                .ok_or_else(|| bad("events.jsonl", line, "no frame".to_owned()))?
                .to_owned();
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let answers = (parsed["type"] == "RESTResponse")
                .then(|| parsed["request_id"].as_str().unwrap_or("").to_owned());
            let i = socket(&mut rec, &v);
            rec.sockets[i].frames.push(RecFrame {
                t_ms: v["t_ms"].as_f64().unwrap_or(0.0),
                text,
                answers,
            });
        }
        for (line, v) in sent {
            let frame = v["frame"]
                .as_str()
                .ok_or_else(|| bad("ws-sent.jsonl", line, "no frame".to_owned()))?;
            let parsed: Value = serde_json::from_str(frame).unwrap_or(Value::Null);
            if parsed["type"] != "RESTRequest" {
                continue;
            }
            let i = socket(&mut rec, &v);
            let (method, path, query, body) = ws_request_key(&parsed);
            rec.sockets[i].sent.push(SentRequest {
                t_ms: v["t_ms"].as_f64().unwrap_or(0.0),
                request_id: parsed["request_id"].as_str().unwrap_or("").to_owned(),
                method,
                path,
                query,
                body,
            });
        }
        for (line, v) in media {
            match audiosocket::load_message(&mut rec.audiosockets, &v) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(message) => return Err(bad("media.jsonl", line, message)),
            }
            let ws = v["ws"].as_u64();
            let m = rec
                .media
                .iter_mut()
                .find(|m| Some(m.ws) == ws)
                .ok_or_else(|| {
                    bad(
                        "media.jsonl",
                        line,
                        "a frame of no media WebSocket in connections.jsonl".to_owned(),
                    )
                })?;
            let t = v["t_ms"].as_f64().unwrap_or(0.0);
            let text = v["text"].as_str().map(str::to_owned);
            match (v["dir"].as_str(), v["opcode"].as_str()) {
                (Some("out"), Some("text")) => m.commands.push((t, text.unwrap_or_default())),
                (Some("in"), Some("text")) => {
                    let n = m.commands.len();
                    m.frames
                        .push((t, n, MediaMsg::Text(text.unwrap_or_default())));
                }
                (Some("in"), Some("binary")) => {
                    let audio = base64::engine::general_purpose::STANDARD
                        .decode(v["b64"].as_str().unwrap_or(""))
                        .map_err(|e| bad("media.jsonl", line, format!("b64: {e}")))?;
                    let n = m.commands.len();
                    m.frames.push((t, n, MediaMsg::Binary(audio.into())));
                }
                (Some("in"), Some("close")) => {
                    let code = v["code"].as_u64().and_then(|c| u16::try_from(c).ok());
                    let reason = v["reason"].as_str().unwrap_or("").to_owned();
                    let n = m.commands.len();
                    m.frames
                        .push((t, n, MediaMsg::Close(code.unwrap_or(1000), reason)));
                }
                _ => {}
            }
        }
        Ok(rec)
    }

    /// Recorded media WebSockets (chan_websocket).
    pub fn media_websockets(&self) -> usize {
        self.media.len()
    }

    /// Recorded AudioSocket sessions (the replay dials each one to the application).
    pub fn audiosockets(&self) -> usize {
        self.audiosockets.len()
    }

    /// Recorded HTTP exchanges.
    pub fn exchanges(&self) -> usize {
        self.rest.len()
    }

    /// Recorded events WebSockets (outbound ones included).
    pub fn websockets(&self) -> usize {
        self.sockets.len()
    }

    /// Recorded outbound WebSockets (Asterisk dialled the application).
    pub fn outbound_websockets(&self) -> usize {
        self.sockets.iter().filter(|s| s.outbound.is_some()).count()
    }

    /// Recorded frames pushed by the server (events; `RESTResponse` frames excluded).
    pub fn events(&self) -> usize {
        self.sockets
            .iter()
            .map(|s| s.frames.iter().filter(|f| f.answers.is_none()).count())
            .sum()
    }
}

/// `?k=v&…` from a recorded query (empty when there is none).
fn query_string(q: &Value) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    // What cannot stand as itself in a query's key or value (as a client writes it: `-`,
    // `_`, `.`, `~` and the like stay as they are).
    const QUERY: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'&')
        .add(b'+')
        .add(b'<')
        .add(b'=')
        .add(b'>')
        .add(b'?')
        .add(b'[')
        .add(b']')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'|');
    let Some(map) = q.as_object() else {
        return String::new();
    };
    let mut pairs = Vec::new();
    for (k, v) in map {
        let values = match v {
            Value::Array(a) => a.clone(),
            v => vec![v.clone()],
        };
        for v in values {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            pairs.push(format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(&v, QUERY)
            ));
        }
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn apps_of(conn: &str) -> BTreeSet<String> {
    conn.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Query values as strings (the fixtures hold some numbers and booleans).
fn normalise_query(q: &Value) -> Value {
    let Some(map) = q.as_object() else {
        return json!({});
    };
    let one = |v: &Value| match v {
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    };
    Value::Object(
        map.iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Array(a) => Value::Array(a.iter().map(one).collect()),
                    v => one(v),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// Method, path, query and body of a `RESTRequest` frame, in the form HTTP exchanges use.
fn ws_request_key(f: &Value) -> (String, String, Value, Value) {
    let method = f["method"].as_str().unwrap_or("").to_ascii_uppercase();
    let uri = f["uri"].as_str().unwrap_or("");
    let (path, q) = uri.split_once('?').unwrap_or((uri, ""));
    let mut pairs = parse_query(q);
    if let Some(list) = f["query_strings"].as_array() {
        for p in list {
            pairs.push((
                p["name"].as_str().unwrap_or("").to_owned(),
                p["value"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    let body = match f.get("message_body") {
        Some(Value::String(s)) => body_json(s.as_bytes()),
        _ => Value::Null,
    };
    (
        method,
        path.trim_start_matches('/').to_owned(),
        query_json(&pairs),
        body,
    )
}

/// Counts of a replay so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayStats {
    /// HTTP requests answered from the recording.
    pub rest_matched: u64,
    /// `RESTRequest` frames answered from the recording.
    pub ws_requests_matched: u64,
    /// Events WebSockets matched to a recorded one.
    pub websockets_matched: u64,
    /// Recorded events pushed.
    pub events_sent: u64,
    /// Media WebSockets matched to a recorded one.
    pub media_websockets_matched: u64,
    /// Recorded media frames (control messages and audio) pushed.
    pub media_frames_sent: u64,
    /// The client's media control messages that matched the recorded ones.
    pub media_commands_matched: u64,
    /// Audio frames the client sent on media WebSockets.
    pub media_audio_received: u64,
    /// Outbound WebSockets dialled to the application and accepted.
    pub outbound_dialed: u64,
    /// chan_websocket client-mode media WebSockets dialled to the application's media
    /// server and accepted (also counted in `media_websockets_matched`).
    pub media_dialed: u64,
    /// AudioSocket sessions dialled to the application (its recorded `external_host`).
    pub audiosocket_dialed: u64,
    /// Recorded AudioSocket messages of Asterisk sent to the application.
    pub audiosocket_messages_sent: u64,
    /// The application's non-audio AudioSocket messages (a hangup) that matched the
    /// recorded ones.
    pub audiosocket_messages_matched: u64,
    /// Audio messages the application sent on AudioSocket sessions.
    pub audiosocket_audio_received: u64,
    /// Requests (HTTP, WebSocket upgrades, `RESTRequest` frames) the recording had no
    /// answer for.
    pub unmatched: u64,
    /// One line per unmatched request: what came, and what the recording expected.
    pub unmatched_requests: Vec<String>,
    /// Recorded HTTP exchanges not asked for (yet).
    pub rest_remaining: u64,
    /// Recorded events not pushed (yet).
    pub events_remaining: u64,
}

/// Configures and starts a [`ReplayServer`].
pub struct ReplayBuilder {
    recording: Recording,
    addr: SocketAddr,
    speed: f64,
    logger: Option<Logger>,
    outbound: Option<String>,
    outbound_credentials: Option<(String, String)>,
    media_app: Option<String>,
    media_credentials: Option<(String, String)>,
    outbound_ca: Vec<PathBuf>,
}

impl fmt::Debug for ReplayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBuilder")
            .field("addr", &self.addr)
            .field("speed", &self.speed)
            .finish_non_exhaustive()
    }
}

impl ReplayBuilder {
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

    /// Recorded gaps and latencies are divided by `speed` (default 1: real time).
    pub fn speed(mut self, speed: f64) -> Self {
        self.speed = speed;
        self
    }

    /// Called with one line per request, WebSocket and mismatch.
    pub fn on_log(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.logger = Some(Arc::new(f));
        self
    }

    /// Dial the recording's outbound WebSockets to the application at `app`
    /// (`ws://` or `wss://host:port`, see [`outbound_ca`](Self::outbound_ca); each connection's recorded path and query are appended), as
    /// Asterisk did. Without it they are not replayed.
    pub fn outbound(mut self, app: &str) -> Self {
        self.outbound = Some(app.trim_end_matches('/').to_owned());
        self
    }

    /// The credentials (HTTP Basic) the outbound connections present: the recording has
    /// none (Asterisk's `websocket_client.conf` `username`/`password`).
    pub fn outbound_credentials(mut self, user: &str, password: &str) -> Self {
        self.outbound_credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Dial the recording's client-mode media WebSockets (chan_websocket: Asterisk dialled
    /// the application's media server) to `app` (`ws://` or `wss://host:port`; the recorded path and
    /// query are appended), each after the requests recorded before it (the `externalMedia`
    /// that asked for it). Without it they are not replayed.
    pub fn media_app(mut self, app: &str) -> Self {
        self.media_app = Some(app.trim_end_matches('/').to_owned());
        self
    }

    /// The credentials (HTTP Basic) the client-mode media connections present (the
    /// websocket_client's `username`/`password`; the recording has none).
    pub fn media_credentials(mut self, user: &str, password: &str) -> Self {
        self.media_credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Also trust the certificates in this PEM file when dialling a `wss://` outbound or
    /// media application (its private CA, or its own self-signed certificate); the Mozilla
    /// roots stay trusted. [`start`](Self::start) fails ([`ReplayError::Tls`]) if neither
    /// application is `wss://`.
    pub fn outbound_ca(mut self, pem_file: impl AsRef<Path>) -> Self {
        self.outbound_ca.push(pem_file.as_ref().to_path_buf());
        self
    }

    /// Binds and serves on its own thread with its own tokio runtime.
    pub fn start(self) -> Result<ReplayServer, ReplayError> {
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(ReplayError::Speed(self.speed));
        }
        let wss = self
            .outbound
            .iter()
            .chain(&self.media_app)
            .any(|a| crate::record::is_wss(a));
        let tls =
            match (wss, self.outbound_ca.is_empty()) {
                (true, _) => Some(
                    crate::record::tls_connector(&self.outbound_ca).map_err(ReplayError::Tls)?,
                ),
                (false, true) => None,
                (false, false) => return Err(ReplayError::Tls(
                    "an outbound CA file is only used with a wss:// outbound or media application"
                        .to_owned(),
                )),
            };
        // Every request, in recorded order: the gates of the events.
        let mut requests: Vec<(f64, ReqRef)> = Vec::new();
        for (i, e) in self.recording.rest.iter().enumerate() {
            requests.push((e.t_ms, ReqRef::Rest(i)));
        }
        for (s, sock) in self.recording.sockets.iter().enumerate() {
            for (j, r) in sock.sent.iter().enumerate() {
                requests.push((r.t_ms, ReqRef::Sent(s, j)));
            }
        }
        requests.sort_by(|a, b| a.0.total_cmp(&b.0));
        let state = Arc::new(ReplayState {
            inner: Mutex::new(Inner {
                rest_used: vec![false; self.recording.rest.len()],
                sockets_used: vec![false; self.recording.sockets.len()],
                media_used: vec![false; self.recording.media.len()],
                media_commands: vec![0; self.recording.media.len()],
                sent_used: self
                    .recording
                    .sockets
                    .iter()
                    .map(|s| vec![false; s.sent.len()])
                    .collect(),
                consumed: vec![None; requests.len()],
                stats: ReplayStats {
                    rest_remaining: self.recording.rest.len() as u64,
                    events_remaining: self.recording.events() as u64,
                    ..ReplayStats::default()
                },
            }),
            requests,
            recording: self.recording,
            speed: self.speed,
            changed: Notify::new(),
            logger: self.logger,
        });
        let thread_state = state.clone();
        let dial_outbound = self.outbound.map(|app| (app, self.outbound_credentials));
        let dial_media = self.media_app.map(|app| (app, self.media_credentials));
        let (addr, thread) = ServerThread::spawn(
            format!("ari-replay-{}", self.addr.port()),
            TcpListener::bind(self.addr),
            move |listener, stop| async move {
                if let Some((app, credentials)) = dial_outbound {
                    let started = Instant::now();
                    for (i, sock) in thread_state.recording.sockets.iter().enumerate() {
                        if sock.outbound.is_some() {
                            tokio::spawn(dial(
                                thread_state.clone(),
                                Dialled::Outbound(i),
                                started,
                                app.clone(),
                                credentials.clone(),
                                tls.clone(),
                            ));
                        }
                    }
                }
                if let Some((app, credentials)) = dial_media {
                    let started = Instant::now();
                    for (i, m) in thread_state.recording.media.iter().enumerate() {
                        if m.dial.is_some() {
                            tokio::spawn(dial(
                                thread_state.clone(),
                                Dialled::Media(i),
                                started,
                                app.clone(),
                                credentials.clone(),
                                tls.clone(),
                            ));
                        }
                    }
                }
                let started = Instant::now();
                for i in 0..thread_state.recording.audiosockets.len() {
                    tokio::spawn(audiosocket::dial(thread_state.clone(), i, started));
                }
                accept_loop(thread_state, listener, stop).await
            },
        )
        .map_err(ReplayError::Start)?;
        Ok(ReplayServer {
            addr,
            state,
            _thread: thread,
        })
    }
}

/// A running replay (see the [module documentation](self)); dropping it stops it.
pub struct ReplayServer {
    addr: SocketAddr,
    state: Arc<ReplayState>,
    _thread: ServerThread,
}

impl fmt::Debug for ReplayServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ReplayServer {
    /// A replay of `recording`.
    pub fn builder(recording: Recording) -> ReplayBuilder {
        ReplayBuilder {
            recording,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            speed: 1.0,
            logger: None,
            outbound: None,
            outbound_credentials: None,
            media_app: None,
            media_credentials: None,
            outbound_ca: Vec::new(),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL the program uses.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counts so far.
    pub fn stats(&self) -> ReplayStats {
        lock(&self.state.inner).stats.clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ReqRef {
    Rest(usize),
    Sent(usize, usize),
}

struct ReplayState {
    recording: Recording,
    /// Every recorded request by time.
    requests: Vec<(f64, ReqRef)>,
    speed: f64,
    inner: Mutex<Inner>,
    /// Signalled whenever a request is consumed.
    changed: Notify,
    logger: Option<Logger>,
}

struct Inner {
    rest_used: Vec<bool>,
    sockets_used: Vec<bool>,
    /// Media WebSockets used, and how many control messages each has had from the client.
    media_used: Vec<bool>,
    media_commands: Vec<usize>,
    sent_used: Vec<Vec<bool>>,
    /// When each request of `ReplayState::requests` was made in this replay.
    consumed: Vec<Option<Instant>>,
    stats: ReplayStats,
}

impl ReplayState {
    fn log(&self, line: impl FnOnce() -> String) {
        if let Some(l) = &self.logger {
            l(&line());
        }
    }

    fn scaled(&self, ms: f64) -> Duration {
        Duration::try_from_secs_f64((ms / self.speed / 1000.0).max(0.0)).unwrap_or(Duration::ZERO)
    }

    fn consume(&self, inner: &mut Inner, r: ReqRef) {
        if let Some(i) = self.requests.iter().position(|(_, x)| *x == r) {
            inner.consumed[i] = Some(Instant::now());
        }
        self.changed.notify_waiters();
    }

    fn unmatched(&self, inner: &mut Inner, line: String) {
        self.log(|| format!("UNMATCHED {line}"));
        inner.stats.unmatched += 1;
        inner.stats.unmatched_requests.push(line);
    }

    /// Waits until every request recorded before `t_ms` was made; then the latest of them
    /// (recorded time, replay instant), if any.
    async fn gated(&self, t_ms: f64) -> Option<(f64, Instant)> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(latest) = self.gate(t_ms) {
                return latest;
            }
            changed.await;
        }
    }

    /// Whether every request recorded before `t_ms` was made; if so, the latest of them
    /// (recorded time, replay instant).
    fn gate(&self, t_ms: f64) -> Option<Option<(f64, Instant)>> {
        let inner = lock(&self.inner);
        let mut latest = None;
        for (i, (t, _)) in self.requests.iter().enumerate() {
            if *t >= t_ms {
                break;
            }
            let at = inner.consumed[i]?;
            latest = Some((*t, at));
        }
        Some(latest)
    }
}

async fn accept_loop(
    state: Arc<ReplayState>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(state.clone(), req));
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

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    crate::http::response(status, "application/json", body.to_string().into_bytes())
}

async fn serve(
    state: Arc<ReplayState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/_replay/stats" {
        let s = lock(&state.inner).stats.clone();
        return Ok(json_response(
            200,
            &json!({
                "rest_matched": s.rest_matched, "ws_requests_matched": s.ws_requests_matched,
                "websockets_matched": s.websockets_matched, "events_sent": s.events_sent,
                "media_websockets_matched": s.media_websockets_matched,
                "media_frames_sent": s.media_frames_sent,
                "media_commands_matched": s.media_commands_matched,
                "media_audio_received": s.media_audio_received,
                "outbound_dialed": s.outbound_dialed,
                "media_dialed": s.media_dialed,
                "audiosocket_dialed": s.audiosocket_dialed,
                "audiosocket_messages_sent": s.audiosocket_messages_sent,
                "audiosocket_messages_matched": s.audiosocket_messages_matched,
                "audiosocket_audio_received": s.audiosocket_audio_received,
                "unmatched": s.unmatched, "unmatched_requests": s.unmatched_requests,
                "rest_remaining": s.rest_remaining, "events_remaining": s.events_remaining,
            }),
        ));
    }
    let rel = if path == "/ari" {
        String::new()
    } else if let Some(r) = path.strip_prefix("/ari/") {
        r.to_owned()
    } else if crate::ws::is_upgrade(&req) {
        return Ok(media_upgrade(&state, req, &path));
    } else {
        let mut inner = lock(&state.inner);
        state.unmatched(
            &mut inner,
            format!("{} {path}: outside /ari/", req.method()),
        );
        return Ok(json_response(
            404,
            &json!({"message": format!("ari-mock replay: {path} is outside /ari/")}),
        ));
    };
    let query = query_json(&parse_query(req.uri().query().unwrap_or("")));
    if rel == "events" && crate::ws::is_upgrade(&req) {
        return Ok(upgrade(&state, req, &query));
    }
    let method = req.method().as_str().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => body_json(&b.to_bytes()),
        Err(_) => Value::Null,
    };
    let found = {
        let mut inner = lock(&state.inner);
        let hit = state.recording.rest.iter().enumerate().position(|(i, e)| {
            !inner.rest_used[i]
                && e.method == method
                && e.path == rel
                && e.query == query
                && e.body == body
        });
        match hit {
            Some(i) => {
                inner.rest_used[i] = true;
                inner.stats.rest_matched += 1;
                inner.stats.rest_remaining -= 1;
                state.consume(&mut inner, ReqRef::Rest(i));
                Ok(state.recording.rest[i].clone())
            }
            None => {
                let asked = describe(&method, &rel, &query, &body);
                let same_path: Vec<&Exchange> = state
                    .recording
                    .rest
                    .iter()
                    .filter(|e| e.method == method && e.path == rel)
                    .collect();
                let next = state
                    .recording
                    .rest
                    .iter()
                    .enumerate()
                    .find(|(i, _)| !inner.rest_used[*i])
                    .map(|(_, e)| e.describe());
                let (status, why) = if same_path.is_empty() {
                    (
                        404,
                        format!(
                            "{asked}: no {method} {rel} in the recording; the next recorded request not yet made is {}",
                            next.as_deref().unwrap_or("(none: every recorded request was made)")
                        ),
                    )
                } else {
                    let recorded: Vec<String> = same_path.iter().map(|e| e.describe()).collect();
                    (
                        500,
                        format!(
                            "{asked}: does not match the recording (used up, or recorded with other parameters); recorded: {}",
                            recorded.join(" | ")
                        ),
                    )
                };
                state.unmatched(&mut inner, why.clone());
                Err((status, why, next))
            }
        }
    };
    match found {
        Ok(e) => {
            tokio::time::sleep(state.scaled(e.ms)).await;
            state.log(|| format!("{} {} → {}", e.method, e.path, e.status));
            Ok(crate::http::response(e.status, &e.content_type, e.response))
        }
        Err((status, why, next)) => Ok(json_response(
            status,
            &json!({"message": format!("ari-mock replay: {why}"), "expected": next}),
        )),
    }
}

fn upgrade(
    state: &Arc<ReplayState>,
    mut req: Request<Incoming>,
    query: &Value,
) -> Response<Full<Bytes>> {
    let apps = query["app"].as_str().map(apps_of).unwrap_or_default();
    let subscribe_all = query["subscribeAll"]
        .as_str()
        .is_some_and(crate::ws::ast_true);
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return json_response(400, &json!({"message": "Missing Sec-WebSocket-Key"}));
    };
    let i = {
        let mut inner = lock(&state.inner);
        let hit = state
            .recording
            .sockets
            .iter()
            .enumerate()
            .position(|(i, s)| {
                !inner.sockets_used[i]
                    && s.outbound.is_none()
                    && s.apps == apps
                    && s.subscribe_all == subscribe_all
            });
        match hit {
            Some(i) => {
                inner.sockets_used[i] = true;
                inner.stats.websockets_matched += 1;
                i
            }
            None => {
                let recorded: Vec<String> = state
                    .recording
                    .sockets
                    .iter()
                    .map(|s| {
                        format!(
                            "app={}{}",
                            s.apps.iter().cloned().collect::<Vec<_>>().join(","),
                            if s.subscribe_all {
                                "&subscribeAll=true"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                let line = format!(
                    "events WebSocket app={} subscribeAll={subscribe_all}: no such WebSocket left in the recording (recorded: {})",
                    apps.iter().cloned().collect::<Vec<_>>().join(","),
                    if recorded.is_empty() { "none".to_owned() } else { recorded.join(" | ") }
                );
                state.unmatched(&mut inner, line.clone());
                return json_response(500, &json!({"message": format!("ari-mock replay: {line}")}));
            }
        }
    };
    let offers_ari = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim() == "ari"))
        });
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_state = state.clone();
    let opened = Instant::now();
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            run_socket(task_state, i, opened, ws).await;
        }
    });
    state.log(|| {
        format!(
            "ws open: app={}",
            apps.iter().cloned().collect::<Vec<_>>().join(",")
        )
    });
    switching_protocols(&key, offers_ari.then_some("ari"))
}

/// A WebSocket Asterisk dialled in the recording: an outbound one (index into the events
/// sockets) or a client-mode media one (index into the media sockets).
#[derive(Debug, Clone, Copy)]
enum Dialled {
    Outbound(usize),
    Media(usize),
}

/// Dials `what` to the application at `app` as Asterisk did, at its recorded time (from
/// `started`) and after the requests recorded before it, then serves it.
async fn dial(
    state: Arc<ReplayState>,
    what: Dialled,
    started: Instant,
    app: String,
    credentials: Option<(String, String)>,
    tls: Option<tokio_rustls::TlsConnector>,
) {
    let (t_open, target, kind) = match what {
        Dialled::Outbound(i) => {
            let s = &state.recording.sockets[i];
            (s.t_open, s.outbound.as_ref(), "outbound")
        }
        Dialled::Media(i) => {
            let m = &state.recording.media[i];
            (m.t_open, m.dial.as_ref(), "media")
        }
    };
    let Some((path, protocol)) = target else {
        return;
    };
    let anchor = state.gated(t_open).await.unwrap_or((0.0, started));
    tokio::time::sleep_until((anchor.1 + state.scaled(t_open - anchor.0)).into()).await;
    let url = format!("{app}{path}");
    match dial_like_asterisk(
        &url,
        protocol.as_deref(),
        credentials.as_ref(),
        tls.as_ref(),
    )
    .await
    {
        Ok(ws) => {
            {
                let mut inner = lock(&state.inner);
                match what {
                    Dialled::Outbound(i) => {
                        inner.sockets_used[i] = true;
                        inner.stats.outbound_dialed += 1;
                    }
                    Dialled::Media(i) => {
                        inner.media_used[i] = true;
                        inner.stats.media_websockets_matched += 1;
                        inner.stats.media_dialed += 1;
                    }
                }
            }
            state.log(|| format!("{kind} ws dialled: {url}"));
            match what {
                Dialled::Outbound(i) => run_socket(state.clone(), i, Instant::now(), ws).await,
                Dialled::Media(i) => run_media_socket(state.clone(), i, Instant::now(), ws).await,
            }
        }
        Err(why) => {
            let mut inner = lock(&state.inner);
            state.unmatched(&mut inner, format!("{kind} WebSocket {url}: {why}"));
        }
    }
}

/// A byte stream to a dialled application: TCP, or TLS over it.
trait AppIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AppIo for T {}

/// Opens a WebSocket to `url` (`ws://` or `wss://`, through `tls`) as Asterisk does:
/// offering `protocol`, with Basic `credentials`.
async fn dial_like_asterisk(
    url: &str,
    protocol: Option<&str>,
    credentials: Option<&(String, String)>,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<WebSocketStream<Box<dyn AppIo>>, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        if let Ok(v) = HeaderValue::from_str(&format!("Basic {token}")) {
            request.headers_mut().insert(header::AUTHORIZATION, v);
        }
    }
    if let Some(v) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("ws") => false,
        Some(s) if s.eq_ignore_ascii_case("wss") => true,
        other => return Err(format!("{url}: scheme {other:?} (ws:// or wss://)")),
    };
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn AppIo> = match (secure, tls) {
        (false, _) => Box::new(tcp),
        (true, Some(tls)) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {url} failed: {e}"))?,
            )
        }
        (true, None) => return Err(format!("{url}: no TLS client configured")),
    };
    tokio_tungstenite::client_async(request, io)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| format!("the application refused or failed: {e}"))
}

/// Pushes the recorded frames of socket `i` and answers `RESTRequest` frames.
async fn run_socket<S>(state: Arc<ReplayState>, i: usize, opened: Instant, ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    };
    let timeline_tx = tx.clone();
    let timeline_state = state.clone();
    let timeline = async move {
        let state = timeline_state;
        let sock = &state.recording.sockets[i];
        let mut prev = (sock.t_open, opened);
        for f in sock.frames.iter().filter(|f| f.answers.is_none()) {
            let latest = state.gated(f.t_ms).await;
            let anchor = match latest {
                Some(req) if req.0 > prev.0 => req,
                _ => prev,
            };
            tokio::time::sleep_until((anchor.1 + state.scaled(f.t_ms - anchor.0)).into()).await;
            if timeline_tx.send(Message::text(f.text.clone())).is_err() {
                return;
            }
            {
                let mut inner = lock(&state.inner);
                inner.stats.events_sent += 1;
                inner.stats.events_remaining -= 1;
            }
            prev = (f.t_ms, Instant::now());
        }
        if let Some((t, code)) = sock.upstream_close {
            tokio::time::sleep_until((prev.1 + state.scaled(t - prev.0)).into()).await;
            let _ = timeline_tx.send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            })));
        }
        // Keep the connection until the client ends it.
        std::future::pending::<()>().await;
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Text(t) => answer_request(&state, i, t.as_str(), &tx),
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = timeline => {}
        () = reader => {}
    }
}

/// Answers a `RESTRequest` frame with the recorded `RESTResponse` (ids replaced by the
/// request's), after the recorded latency.
fn answer_request(
    state: &Arc<ReplayState>,
    i: usize,
    text: &str,
    tx: &mpsc::UnboundedSender<Message>,
) {
    let parsed: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let (method, path, query, body) = ws_request_key(&parsed);
    let sock = &state.recording.sockets[i];
    let hit = {
        let mut inner = lock(&state.inner);
        let hit = sock.sent.iter().enumerate().position(|(j, r)| {
            !inner.sent_used[i][j]
                && r.method == method
                && r.path == path
                && r.query == query
                && r.body == body
        });
        match hit {
            Some(j) => {
                inner.sent_used[i][j] = true;
                inner.stats.ws_requests_matched += 1;
                state.consume(&mut inner, ReqRef::Sent(i, j));
                Some(j)
            }
            None => {
                let asked = describe(&method, &path, &query, &body);
                state.unmatched(
                    &mut inner,
                    format!("RESTRequest {asked}: not in the recording of this WebSocket"),
                );
                None
            }
        }
    };
    let request_id = parsed["request_id"].clone();
    let transaction_id = parsed["transaction_id"].clone();
    let answer = hit.and_then(|j| {
        let r = &sock.sent[j];
        let f = sock
            .frames
            .iter()
            .find(|f| f.answers.as_deref() == Some(r.request_id.as_str()))?;
        let mut v: Value = serde_json::from_str(&f.text).ok()?;
        v["request_id"] = request_id.clone();
        if !transaction_id.is_null() {
            v["transaction_id"] = transaction_id.clone();
        }
        Some((v.to_string(), state.scaled(f.t_ms - r.t_ms)))
    });
    let (text, delay) = answer.unwrap_or_else(|| {
        let message = format!(
            "ari-mock replay: RESTRequest {} does not match the recording",
            describe(&method, &path, &query, &body)
        );
        let v = json!({
            "type": "RESTResponse", "transaction_id": transaction_id, "request_id": request_id,
            "status_code": 500, "reason_phrase": "Internal Server Error",
            "uri": parsed["uri"], "content_type": "application/json",
            "message_body": json!({"message": message}).to_string(),
        });
        (v.to_string(), Duration::ZERO)
    });
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(Message::text(text));
    });
}

/// A WebSocket upgrade outside `/ari/`: a recorded media WebSocket with this path.
fn media_upgrade(
    state: &Arc<ReplayState>,
    mut req: Request<Incoming>,
    path: &str,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return json_response(400, &json!({"message": "Missing Sec-WebSocket-Key"}));
    };
    let i = {
        let mut inner = lock(&state.inner);
        let hit = state
            .recording
            .media
            .iter()
            .enumerate()
            .position(|(i, m)| !inner.media_used[i] && m.dial.is_none() && m.path == path);
        match hit {
            Some(i) => {
                inner.media_used[i] = true;
                inner.stats.media_websockets_matched += 1;
                i
            }
            None => {
                let recorded: Vec<&str> = state
                    .recording
                    .media
                    .iter()
                    .map(|m| m.path.as_str())
                    .collect();
                let line = format!(
                    "media WebSocket {path}: no such WebSocket left in the recording (recorded: {})",
                    if recorded.is_empty() { "none".to_owned() } else { recorded.join(" | ") }
                );
                state.unmatched(&mut inner, line.clone());
                return json_response(404, &json!({"message": format!("ari-mock replay: {line}")}));
            }
        }
    };
    let rec = &state.recording.media[i];
    let offered = |p: &str| {
        req.headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.split(',').any(|t| t.trim() == p))
            })
    };
    let protocol = rec.protocol.clone().filter(|p| offered(p));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_state = state.clone();
    let opened = Instant::now();
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            run_media_socket(task_state, i, opened, ws).await;
        }
    });
    state.log(|| format!("media ws open: {path}"));
    switching_protocols(&key, protocol.as_deref())
}

/// The `101` answer to an upgrade with `key`, choosing `protocol`.
fn switching_protocols(key: &HeaderValue, protocol: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = crate::http::response(101, "", Vec::new());
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(v) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    r
}

/// Pushes what Asterisk sent on media WebSocket `i` (each frame after its recorded gap and
/// after the client's control messages that preceded it) and compares the client's.
async fn run_media_socket<S>(
    state: Arc<ReplayState>,
    i: usize,
    opened: Instant,
    ws: WebSocketStream<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    };
    let rec = &state.recording.media[i];
    // When each of the client's control messages came, in this replay.
    let arrived: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let timeline_tx = tx.clone();
    let timeline_arrived = arrived.clone();
    let timeline = async {
        let mut prev = (rec.t_open, opened);
        for (t, after, msg) in &rec.frames {
            if *after > 0 {
                loop {
                    let changed = state.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    let came = lock(&timeline_arrived).get(after - 1).copied();
                    if let Some(at) = came {
                        let recorded = rec.commands[after - 1].0;
                        if recorded > prev.0 {
                            prev = (recorded, at);
                        }
                        break;
                    }
                    changed.await;
                }
            }
            tokio::time::sleep_until((prev.1 + state.scaled(t - prev.0)).into()).await;
            let frame = match msg {
                MediaMsg::Text(text) => Message::text(text.clone()),
                MediaMsg::Binary(audio) => Message::binary(audio.clone()),
                MediaMsg::Close(code, reason) => Message::Close(Some(CloseFrame {
                    code: CloseCode::from(*code),
                    reason: reason.as_str().into(),
                })),
            };
            if timeline_tx.send(frame).is_err() {
                return;
            }
            lock(&state.inner).stats.media_frames_sent += 1;
            prev = (*t, Instant::now());
        }
        std::future::pending::<()>().await;
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Text(t) => {
                    let mut inner = lock(&state.inner);
                    let n = inner.media_commands[i];
                    inner.media_commands[i] += 1;
                    match rec.commands.get(n) {
                        Some((_, expected)) if expected == t.as_str() => {
                            inner.stats.media_commands_matched += 1;
                        }
                        expected => {
                            let line = format!(
                                "media control message {:?} on {}: the recording has {}",
                                t.as_str(),
                                rec.path,
                                expected.map_or("no more".to_owned(), |(_, e)| format!("{e:?}"))
                            );
                            state.unmatched(&mut inner, line);
                        }
                    }
                    drop(inner);
                    lock(&arrived).push(Instant::now());
                    state.changed.notify_waiters();
                }
                Message::Binary(_) => lock(&state.inner).stats.media_audio_received += 1,
                Message::Close(_) => {
                    // Answered (tungstenite queued the answer; the writer sends it).
                    let _ = tx.send(Message::Close(None));
                    break;
                }
                _ => {}
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = writer => {}
        () = timeline => {}
        () = reader => {}
    }
}
