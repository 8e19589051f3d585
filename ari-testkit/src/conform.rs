//! Conformance of the simulated Asterisk to a recording of a real one: `ari-mock conform DIR`.
//!
//! [`conform_dir`] finds every recording below a directory (a directory holding a
//! `rest.jsonl`, in the format `ari-mock record` writes and `ari-fixtures` uses). For each, it
//! starts a simulator configured like the recorded Asterisk, opens the recorded events
//! WebSockets (their applications registered, their frames drained), then sends every
//! recorded HTTP exchange, in recorded order (all runs, one after the other, as they were made
//! on one Asterisk), and compares:
//!
//! * the **status code**;
//! * the **shape of the body**: its JSON type and, for objects, the set of fields, compared
//!   recursively (array elements merged into one shape; an empty array matches any array).
//!   Values are not compared: ids, timestamps, names differ between two Asterisks and do not
//!   count. A body that is not JSON (a recording's audio, a plain-text 404) only has to be
//!   non-JSON (or empty) as recorded.
//!
//! The simulator is configured from the recording: the version of the recorded
//! `GET asterisk/info` (a branch head `GIT-20-…` as the branch's newest release), mailboxes
//! only if the recorded `GET asterisk/modules` lists `res_ari_mailboxes.so`, the dialplan of
//! the recording's `extensions.conf` (or [`ConformOptions::dialplan`]), and a Local channel
//! into an extension the dialplan lacks failing, as in Asterisk. It runs in simulated time:
//! between two exchanges the clock moves by the recorded gap (`t_ms`, `ms`), or by
//! [`DEFAULT_GAP`] for recordings without timing.
//!
//! Ids come from the recording: the recorded requests name the channels, bridges, playbacks
//! they create (`channelId`, `playbackId` … or the id in the path), so the simulator, fed the
//! same creation requests first, holds the same ids when they are used.
//!
//! The recording has no credentials: an exchange recorded as `401` is sent without
//! credentials, one recorded as `403 Write access denied` as a read-only user, every other one
//! as a read-write user. A request the simulator refuses (4xx) where the recording has another
//! status is sent again, the simulated clock moved 20 ms each time, for up to [`RETRY_FOR`]:
//! the recorded program may have waited for an event, and a refused request changes nothing.
//!
//! Every difference is a [`Mismatch`]. Differences explained by the recording rather than by
//! the simulator are accepted with a reason, one a line (`METHOD PATH-REGEX REASON`), in the
//! recording's `conform.allow` or with [`ConformOptions::allow`]: they are listed but do not
//! fail the check. The REST-over-WebSocket requests (`ws-sent.jsonl`) are sent as recorded
//! on the events WebSocket of their connection, just before their run's HTTP `DELETE` of the
//! resource they name, else after the run's HTTP exchanges (the fixtures carry no timing
//! between the two), and compared with the `RESTResponse` recorded
//! for their `request_id` (status and message body shape). Exchanges not sent (`api-docs`, a
//! request without a recorded answer) are counted as skipped.
//!
//! ```no_run
//! let report = ari_testkit::conform::conform_dir(std::path::Path::new("../shared/ari-fixtures"))?;
//! print!("{report}");
//! assert!(report.is_clean());
//! # Ok::<(), ari_testkit::conform::ConformError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1 as client_http1;
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use regex::Regex;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::{MockServer, SimConfig};

/// How long (simulated) a request the simulator refused is sent again while its answer differs
/// from the recorded one (see the [module documentation](self)).
pub const RETRY_FOR: Duration = Duration::from_secs(2);

/// The simulated time between two exchanges of a recording without timing (`t_ms`).
pub const DEFAULT_GAP: Duration = Duration::from_millis(50);

/// The simulated time between two sends of a refused request.
const RETRY_STEP: Duration = Duration::from_millis(20);

/// The read-only user exchanges recorded as `403 Write access denied` are sent as.
const READ_ONLY: (&str, &str) = ("conform-ro", "conform-ro");

/// A difference accepted by [`ConformOptions::allow`] or a recording's `conform.allow`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Allowance {
    /// The HTTP method (`*` for any).
    pub method: String,
    /// The path relative to `/ari/`, matched whole.
    pub path: Regex,
    /// Why the simulator differs there.
    pub reason: String,
}

impl Allowance {
    fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method)) && self.path.is_match(path)
    }
}

/// Options of [`conform_dir_with`]; the default accepts no difference.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConformOptions {
    allow: Vec<Allowance>,
    dialplan: Option<String>,
}

impl ConformOptions {
    /// The dialplan (`extensions.conf` syntax) of the recorded Asterisk, for recordings
    /// without an `extensions.conf` of their own.
    pub fn dialplan(mut self, extensions_conf: &str) -> Self {
        self.dialplan = Some(extensions_conf.to_owned());
        self
    }

    /// Accepts a difference on `method` (`*`: any) and `path` (a regex over the recorded path
    /// relative to `/ari/`, matched whole), for `reason`.
    ///
    /// # Errors
    /// The pattern is not a valid regex.
    pub fn allow(mut self, method: &str, path: &str, reason: &str) -> Result<Self, regex::Error> {
        let path = Regex::new(&format!("^(?:{path})$"))?;
        self.allow.push(Allowance {
            method: method.to_owned(),
            path,
            reason: reason.to_owned(),
        });
        Ok(self)
    }

    /// Accepts the differences listed in `text`, one a line: `METHOD PATH-REGEX REASON…`
    /// (`#` starts a comment line) — the format of a recording's `conform.allow` and of
    /// `ari-mock conform --allow FILE`.
    ///
    /// # Errors
    /// The 1-based line that is not `METHOD PATH-REGEX REASON`, or whose regex is invalid.
    pub fn allow_lines(mut self, text: &str) -> Result<Self, (usize, String)> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, char::is_whitespace);
            let (Some(method), Some(path), Some(reason)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err((i + 1, "expected: METHOD PATH-REGEX REASON".to_owned()));
            };
            self = self
                .allow(method, path, reason.trim())
                .map_err(|e| (i + 1, format!("invalid path pattern: {e}")))?;
        }
        Ok(self)
    }

    /// The accepted differences.
    pub fn allowances(&self) -> &[Allowance] {
        &self.allow
    }
}

/// One exchange where the simulator answered differently from the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mismatch {
    /// The recording's `rest.jsonl`, relative to the checked directory.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The recorded `run`.
    pub run: u64,
    /// The request's method.
    pub method: String,
    /// The request's path, relative to `/ari/`.
    pub path: String,
    /// The recorded status.
    pub recorded: u16,
    /// The simulator's status.
    pub simulated: u16,
    /// What differs: the status, and each field missing, added or of another type
    /// (`$.channel.caller: missing`).
    pub differences: Vec<String>,
    /// The reason, when the difference is accepted.
    pub allowed: Option<String>,
}

/// What was sent from one recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordingSummary {
    /// The recording's directory, relative to the checked directory.
    pub dir: PathBuf,
    /// The version the simulator pretended to be (`None`: the newest).
    pub version: Option<String>,
    /// Runs replayed, each on a fresh simulator.
    pub runs: usize,
    /// Exchanges sent.
    pub exchanges: usize,
    /// Exchanges whose status and shape matched.
    pub matched: usize,
    /// Exchanges that differ, accepted.
    pub allowed: usize,
    /// Exchanges that differ, not accepted.
    pub mismatched: usize,
    /// Lines not sent, by kind.
    pub skipped: BTreeMap<String, usize>,
}

/// The result of [`conform_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConformReport {
    /// One summary per recording, in path order.
    pub recordings: Vec<RecordingSummary>,
    /// Every exchange that differs (accepted ones included), in recording and line order.
    pub mismatches: Vec<Mismatch>,
}

impl ConformReport {
    /// No difference that is not accepted.
    pub fn is_clean(&self) -> bool {
        self.mismatches.iter().all(|m| m.allowed.is_some())
    }
}

impl fmt::Display for ConformReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<32} {:>8} {:>4} {:>9} {:>7} {:>7} {:>10}  skipped",
            "recording", "version", "runs", "exchanges", "matched", "allowed", "mismatched"
        )?;
        for r in &self.recordings {
            let skipped: Vec<String> = r.skipped.iter().map(|(k, n)| format!("{k}={n}")).collect();
            writeln!(
                f,
                "{:<32} {:>8} {:>4} {:>9} {:>7} {:>7} {:>10}  {}",
                r.dir.display().to_string(),
                r.version.as_deref().unwrap_or("newest"),
                r.runs,
                r.exchanges,
                r.matched,
                r.allowed,
                r.mismatched,
                if skipped.is_empty() {
                    "-".to_owned()
                } else {
                    skipped.join(" ")
                }
            )?;
        }
        if !self.mismatches.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<40} {:>3} {:<44} {:>8} {:>9}  difference",
                "where", "run", "request", "recorded", "simulated"
            )?;
            for m in &self.mismatches {
                let place = format!("{}:{}", m.file.display(), m.line);
                let request = format!("{} {}", m.method, m.path);
                let mut first = true;
                for d in &m.differences {
                    if first {
                        writeln!(
                            f,
                            "{place:<40} {:>3} {request:<44} {:>8} {:>9}  {d}",
                            m.run, m.recorded, m.simulated
                        )?;
                        first = false;
                    } else {
                        writeln!(
                            f,
                            "{:<40} {:>3} {:<44} {:>8} {:>9}  {d}",
                            "", "", "", "", ""
                        )?;
                    }
                }
                if let Some(reason) = &m.allowed {
                    writeln!(
                        f,
                        "{:<40} {:>3} {:<44} {:>8} {:>9}  allowed: {reason}",
                        "", "", "", "", ""
                    )?;
                }
            }
        }
        let failing = self
            .mismatches
            .iter()
            .filter(|m| m.allowed.is_none())
            .count();
        writeln!(
            f,
            "{}",
            if failing == 0 && self.mismatches.is_empty() {
                "conform: the simulator answered every exchange as recorded".to_owned()
            } else if failing == 0 {
                format!(
                    "conform: no difference besides {} accepted one(s)",
                    self.mismatches.len()
                )
            } else {
                format!("conform: {failing} exchange(s) differ from the recording")
            }
        )
    }
}

/// Why [`conform_dir`] could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConformError {
    /// A file could not be read.
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of `rest.jsonl` is not a recorded exchange.
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The directory holds no recording (no `rest.jsonl` below it).
    NoRecording(PathBuf),
    /// The simulator or the client's runtime could not start.
    Start(std::io::Error),
}

impl fmt::Display for ConformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConformError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ConformError::Format {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            ConformError::NoRecording(p) => write!(
                f,
                "no recording below {} (a recording is a directory with a rest.jsonl)",
                p.display()
            ),
            ConformError::Start(e) => write!(f, "cannot start the simulator: {e}"),
        }
    }
}

impl std::error::Error for ConformError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConformError::Read { source, .. } | ConformError::Start(source) => Some(source),
            _ => None,
        }
    }
}

/// Replays every recording below `dir` against the simulator, each recording's own
/// `conform.allow` accepted (see the [module documentation](self)).
///
/// # Errors
/// A file cannot be read or is not a recording, or the simulator cannot start. Differences
/// are not errors: they are in the report.
pub fn conform_dir(dir: &Path) -> Result<ConformReport, ConformError> {
    conform_dir_with(dir, &ConformOptions::default())
}

/// [`conform_dir`] with options.
///
/// # Errors
/// As [`conform_dir`].
pub fn conform_dir_with(
    dir: &Path,
    options: &ConformOptions,
) -> Result<ConformReport, ConformError> {
    let mut recordings = Vec::new();
    find_recordings(dir, &mut recordings)?;
    recordings.sort();
    if recordings.is_empty() {
        return Err(ConformError::NoRecording(dir.to_owned()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ConformError::Start)?;
    let mut report = ConformReport::default();
    for rec in recordings {
        let rel = rec.strip_prefix(dir).unwrap_or(&rec).to_owned();
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        let loaded = load(&rec, &rel)?;
        let (summary, mismatches) = rt.block_on(conform_recording(loaded, options))?;
        report.recordings.push(summary);
        report.mismatches.extend(mismatches);
    }
    Ok(report)
}

fn find_recordings(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ConformError> {
    let read = |source| ConformError::Read {
        path: dir.to_owned(),
        source,
    };
    if dir.join("rest.jsonl").is_file() {
        out.push(dir.to_owned());
    }
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        if entry.file_type().map_err(read)?.is_dir() {
            find_recordings(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// One recorded HTTP exchange to send.
#[derive(Debug)]
struct Exchange {
    /// `rest.jsonl` or `ws-sent.jsonl`.
    file: &'static str,
    line: usize,
    run: u64,
    /// Sent as a `RESTRequest` frame on the events WebSocket of these applications (the
    /// recording's `conn`), not over HTTP.
    ws: Option<WsRequest>,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Value,
    status: u16,
    response: Body,
    /// When the request was received and how long the answer took (recorder's `t_ms`, `ms`).
    at: Option<(f64, f64)>,
}

/// A recorded REST-over-WebSocket request.
#[derive(Debug)]
struct WsRequest {
    /// The applications of its WebSocket, comma-separated (the recording's `conn`).
    conn: String,
    /// The frame, as sent.
    frame: String,
    /// Its `request_id`, which the answer carries.
    request_id: String,
}

/// A body, as far as its shape goes.
#[derive(Debug)]
enum Body {
    Empty,
    Json(Value),
    Opaque,
}

impl Body {
    fn of_text(text: &str) -> Body {
        if text.is_empty() {
            Body::Empty
        } else {
            serde_json::from_str(text).map_or(Body::Opaque, Body::Json)
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Body::Empty => "no body",
            Body::Json(_) => "a JSON body",
            Body::Opaque => "a non-JSON body",
        }
    }
}

struct Loaded {
    rel: PathBuf,
    version: Option<String>,
    exchanges: Vec<Exchange>,
    /// The events WebSockets to open: their query (`app=…`, `subscribeAll=…`).
    websockets: BTreeSet<Vec<(String, String)>>,
    skipped: BTreeMap<String, usize>,
    /// The recording's `extensions.conf`, if it has one.
    dialplan: Option<String>,
    /// Whether the recorded `GET asterisk/modules` lists `res_ari_mailboxes.so`.
    mailboxes: Option<bool>,
    /// The recording's own `conform.allow`.
    allow: Vec<Allowance>,
}

fn read_lines(path: &Path) -> Result<Option<Vec<(usize, Value)>>, ConformError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConformError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| ConformError::Format {
            path: path.to_owned(),
            line: i + 1,
            message: format!("not JSON: {e}"),
        })?;
        out.push((i + 1, v));
    }
    Ok(Some(out))
}

fn load(dir: &Path, rel: &Path) -> Result<Loaded, ConformError> {
    let rest_path = dir.join("rest.jsonl");
    let mut loaded = Loaded {
        rel: rel.to_owned(),
        version: None,
        exchanges: Vec::new(),
        websockets: BTreeSet::new(),
        skipped: BTreeMap::new(),
        dialplan: None,
        mailboxes: None,
        allow: Vec::new(),
    };
    let allow_path = dir.join("conform.allow");
    if allow_path.is_file() {
        let text = std::fs::read_to_string(&allow_path).map_err(|source| ConformError::Read {
            path: allow_path.clone(),
            source,
        })?;
        loaded.allow = ConformOptions::default()
            .allow_lines(&text)
            .map_err(|(line, message)| ConformError::Format {
                path: allow_path.clone(),
                line,
                message,
            })?
            .allow;
    }
    let conf = dir.join("extensions.conf");
    if conf.is_file() {
        loaded.dialplan =
            Some(
                std::fs::read_to_string(&conf).map_err(|source| ConformError::Read {
                    path: conf.clone(),
                    source,
                })?,
            );
    }
    for (line, v) in read_lines(&rest_path)?.unwrap_or_default() {
        let bad = |message: &str| ConformError::Format {
            path: rest_path.clone(),
            line,
            message: message.to_owned(),
        };
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("rest");
        if kind != "rest" {
            *loaded.skipped.entry(kind.to_owned()).or_default() += 1;
            continue;
        }
        let method = v
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no method"))?
            .to_owned();
        let path = v
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no path"))?
            .to_owned();
        let status = v
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| bad("no status"))?;
        let query = recorded_query(&v);
        let response = Body::of_text(v.get("response").and_then(Value::as_str).unwrap_or(""));
        if loaded.version.is_none() && method == "GET" && path == "asterisk/info" {
            if let Body::Json(info) = &response {
                loaded.version = info
                    .pointer("/system/version")
                    .and_then(Value::as_str)
                    .and_then(pretend_version);
            }
        }
        if loaded.mailboxes.is_none() && method == "GET" && path == "asterisk/modules" {
            if let Body::Json(Value::Array(modules)) = &response {
                loaded.mailboxes = Some(modules.iter().any(|m| {
                    m.get("name").and_then(Value::as_str) == Some("res_ari_mailboxes.so")
                }));
            }
        }
        loaded.exchanges.push(Exchange {
            line,
            run: v.get("run").and_then(Value::as_u64).unwrap_or(1),
            file: "rest.jsonl",
            ws: None,
            method,
            path,
            query,
            body: v.get("body").cloned().unwrap_or(Value::Null),
            status,
            response,
            at: v
                .get("t_ms")
                .and_then(Value::as_f64)
                .map(|t| (t, v.get("ms").and_then(Value::as_f64).unwrap_or(0.0))),
        });
    }
    // The events WebSockets: from connections.jsonl when the recorder wrote it, else one per
    // recorded `conn` (its applications, comma-separated).
    if let Some(lines) = read_lines(&dir.join("connections.jsonl"))? {
        for (_, v) in lines {
            if v.get("type").and_then(Value::as_str) != Some("ws-open") {
                continue;
            }
            let mut query = recorded_query(&v);
            query.retain(|(k, _)| k != "api_key");
            loaded.websockets.insert(query);
        }
    } else if let Some(lines) = read_lines(&dir.join("events.jsonl"))? {
        for (_, v) in lines {
            if let Some(conn) = v.get("conn").and_then(Value::as_str) {
                loaded
                    .websockets
                    .insert(vec![("app".to_owned(), conn.to_owned())]);
            }
        }
    }
    load_ws_requests(dir, &mut loaded)?;
    Ok(loaded)
}

/// The REST-over-WebSocket requests (`ws-sent.jsonl`) with their recorded answers (the
/// `RESTResponse` frames of `events.jsonl` with the same run, connection and `request_id`).
/// Where they go among the HTTP exchanges: [`in_order`]. A request without a recorded answer is counted as skipped.
fn load_ws_requests(dir: &Path, loaded: &mut Loaded) -> Result<(), ConformError> {
    let Some(sent) = read_lines(&dir.join("ws-sent.jsonl"))? else {
        return Ok(());
    };
    let mut answers: BTreeMap<(u64, String, String), Value> = BTreeMap::new();
    for (_, v) in read_lines(&dir.join("events.jsonl"))?.unwrap_or_default() {
        let Some(frame) = v.get("frame").and_then(Value::as_str) else {
            continue;
        };
        let Ok(f) = serde_json::from_str::<Value>(frame) else {
            continue;
        };
        if f.get("type").and_then(Value::as_str) != Some("RESTResponse") {
            continue;
        }
        let key = (
            v.get("run").and_then(Value::as_u64).unwrap_or(1),
            v.get("conn")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            f.get("request_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        );
        answers.entry(key).or_insert(f);
    }
    let path = dir.join("ws-sent.jsonl");
    for (line, v) in sent {
        let bad = |message: &str| ConformError::Format {
            path: path.clone(),
            line,
            message: message.to_owned(),
        };
        let frame = v
            .get("frame")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no frame"))?
            .to_owned();
        let f: Value = serde_json::from_str(&frame).map_err(|e| bad(&e.to_string()))?;
        let run = v.get("run").and_then(Value::as_u64).unwrap_or(1);
        let conn = v
            .get("conn")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let request_id = f
            .get("request_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(answer) = answers.get(&(run, conn.clone(), request_id.clone())) else {
            *loaded
                .skipped
                .entry("RESTRequest without a recorded answer".to_owned())
                .or_default() += 1;
            continue;
        };
        let status = answer
            .get("status_code")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| bad("its recorded RESTResponse has no status_code"))?;
        let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        loaded.exchanges.push(Exchange {
            file: "ws-sent.jsonl",
            line,
            run,
            ws: Some(WsRequest {
                conn,
                frame,
                request_id,
            }),
            method: text("method"),
            path: text("uri"),
            query: Vec::new(),
            body: Value::Null,
            status,
            response: Body::of_text(
                answer
                    .get("message_body")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            ),
            at: None,
        });
    }
    Ok(())
}

/// The `query` object of a recorded line as name/value pairs (a repeated parameter recorded
/// as an array gives one pair per value), in recorded order.
fn recorded_query(v: &Value) -> Vec<(String, String)> {
    let mut query = Vec::new();
    if let Some(q) = v.get("query").and_then(Value::as_object) {
        for (k, value) in q {
            match value {
                Value::Array(items) => {
                    query.extend(items.iter().map(|i| (k.clone(), scalar_text(i))));
                }
                other => query.push((k.clone(), scalar_text(other))),
            }
        }
    }
    query
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The version to pretend for a recorded `system.version`: a release (`20.14.1`) as it is;
/// a branch head (`GIT-20-516d2c60ac`) as the branch's newest release; `None` (the newest
/// Asterisk) for master or anything else.
fn pretend_version(v: &str) -> Option<String> {
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(v.to_owned());
    }
    let branch = v.strip_prefix("GIT-")?.split('-').next()?;
    branch
        .parse::<u32>()
        .ok()
        .map(|major| format!("{major}.99.0"))
}

async fn conform_recording(
    loaded: Loaded,
    options: &ConformOptions,
) -> Result<(RecordingSummary, Vec<Mismatch>), ConformError> {
    let mut summary = RecordingSummary {
        dir: loaded.rel.clone(),
        version: loaded.version.clone(),
        skipped: loaded.skipped.clone(),
        ..RecordingSummary::default()
    };
    let mut mismatches = Vec::new();
    let runs: BTreeSet<u64> = loaded.exchanges.iter().map(|e| e.run).collect();
    summary.runs = runs.len();
    // One simulator for the whole recording: the runs were made one after the other on the
    // same Asterisk (a recording stored by the first run is still there in the second).
    let config = SimConfig {
        wall_clock_base_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        dialplan: loaded
            .dialplan
            .clone()
            .or_else(|| options.dialplan.clone())
            .unwrap_or_default(),
        // A real Asterisk fails a Local channel into an extension it does not have.
        unknown_extension_answers: false,
        mailboxes: loaded.mailboxes.unwrap_or(true),
        ..SimConfig::default()
    };
    let mut builder = MockServer::builder()
        .simulated_time()
        .sim_config(config)
        .read_only_user(READ_ONLY.0, READ_ONLY.1);
    if let Some(v) = &loaded.version {
        builder = builder.asterisk_version(v);
    }
    let server = builder
        .try_start()
        .map_err(|e| ConformError::Start(std::io::Error::other(e.to_string())))?;
    let client = Client {
        server: &server,
        authority: server.addr().to_string(),
        user: (server.username().to_owned(), server.password().to_owned()),
    };
    let mut sockets: BTreeMap<String, EventsSocket> = BTreeMap::new();
    for query in &loaded.websockets {
        if let Some(ws) = client.open_events(query).await {
            sockets.insert(apps_of(query), ws);
        }
    }
    for run in runs {
        let mut previous: Option<&Exchange> = None;
        for ex in in_order(&loaded.exchanges, run) {
            summary.exchanges += 1;
            server.advance(gap(previous, ex));
            previous = Some(ex);
            let (status, body) = match &ex.ws {
                None => client.send_until_like(ex).await,
                Some(w) => match sockets.get_mut(&w.conn) {
                    Some(socket) => socket.request(w).await,
                    None => (0, Body::Opaque),
                },
            };
            let mut differences = Vec::new();
            if status != ex.status {
                differences.push(format!(
                    "status {} where {} was recorded",
                    status, ex.status
                ));
            }
            compare_bodies(&ex.response, &body, &mut differences);
            if differences.is_empty() {
                summary.matched += 1;
                continue;
            }
            let allowed = options
                .allow
                .iter()
                .chain(&loaded.allow)
                .find(|a| a.matches(&ex.method, &ex.path))
                .map(|a| a.reason.clone());
            if allowed.is_some() {
                summary.allowed += 1;
            } else {
                summary.mismatched += 1;
            }
            mismatches.push(Mismatch {
                file: loaded.rel.join(ex.file),
                line: ex.line,
                run,
                method: ex.method.clone(),
                path: ex.path.clone(),
                recorded: ex.status,
                simulated: status,
                differences,
                allowed,
            });
        }
    }
    for ws in sockets.into_values() {
        ws.reader.abort();
    }
    drop(client);
    drop(server);
    Ok((summary, mismatches))
}

/// The exchanges of `run` in the order to send them: the HTTP ones as recorded, each
/// REST-over-WebSocket one just before the run's first HTTP `DELETE` of the resource its URI
/// names (`channels/<id>` …), where the resource was still there, else after the HTTP ones
/// (the fixtures carry no timing between the two; a resource the recording shows gone before
/// that is a difference to allow with its reason).
fn in_order(exchanges: &[Exchange], run: u64) -> Vec<&Exchange> {
    let http: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| e.run == run && e.ws.is_none())
        .collect();
    let mut ws: Vec<(usize, &Exchange)> = exchanges
        .iter()
        .filter(|e| e.run == run && e.ws.is_some())
        .map(|e| {
            let resource: Vec<&str> = e.path.split(['/', '?']).take(2).collect();
            let before = http
                .iter()
                .position(|h| {
                    resource.len() == 2
                        && h.method == "DELETE"
                        && h.path.split('/').collect::<Vec<_>>() == resource
                })
                .unwrap_or(http.len());
            (before, e)
        })
        .collect();
    ws.sort_by_key(|(before, _)| *before);
    let mut out = Vec::with_capacity(http.len() + ws.len());
    let mut pending = ws.into_iter().peekable();
    for (i, h) in http.into_iter().enumerate() {
        while let Some((_, e)) = pending.next_if(|(before, _)| *before == i) {
            out.push(e);
        }
        out.push(h);
    }
    out.extend(pending.map(|(_, e)| e));
    out
}

/// The simulated time to let pass before sending `ex`: the recorded time between the end of
/// the previous exchange and `ex`, or [`DEFAULT_GAP`] without timing.
fn gap(previous: Option<&Exchange>, ex: &Exchange) -> Duration {
    match (previous.and_then(|p| p.at), ex.at) {
        (Some((t0, ms)), Some((t1, _))) => {
            Duration::try_from_secs_f64(((t1 - t0 - ms) / 1000.0).max(0.0)).unwrap_or_default()
        }
        (None, None) if previous.is_none() => Duration::ZERO,
        _ => DEFAULT_GAP,
    }
}

/// Compares the recorded body's shape with the simulator's.
fn compare_bodies(recorded: &Body, simulated: &Body, out: &mut Vec<String>) {
    match (recorded, simulated) {
        (Body::Json(r), Body::Json(s)) => compare_shape("$", r, s, out),
        (Body::Empty, Body::Empty) | (Body::Opaque, Body::Opaque) => {}
        (r, s) => out.push(format!(
            "{} where {} was recorded",
            s.describe(),
            r.describe()
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Type and field set of `s` against `r`, recursively; values ignored.
fn compare_shape(at: &str, r: &Value, s: &Value, out: &mut Vec<String>) {
    match (r, s) {
        (Value::Object(ro), Value::Object(so)) => {
            for (k, rv) in ro {
                match so.get(k) {
                    Some(sv) => compare_shape(&format!("{at}.{k}"), rv, sv, out),
                    None => out.push(format!("{at}.{k}: missing")),
                }
            }
            for k in so.keys().filter(|k| !ro.contains_key(*k)) {
                out.push(format!("{at}.{k}: not in the recording"));
            }
        }
        (Value::Array(ra), Value::Array(sa)) => {
            if let (Some(rm), Some(sm)) = (merged(ra), merged(sa)) {
                compare_shape(&format!("{at}[]"), &rm, &sm, out);
            }
        }
        _ if kind(r) == kind(s) => {}
        _ => out.push(format!("{at}: {} where {} was recorded", kind(s), kind(r))),
    }
}

/// The elements of an array merged into one shape: objects by the union of their fields.
fn merged(items: &[Value]) -> Option<Value> {
    let mut it = items.iter();
    let mut acc = it.next()?.clone();
    for v in it {
        merge(&mut acc, v);
    }
    Some(acc)
}

fn merge(acc: &mut Value, v: &Value) {
    match (acc, v) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, bv) in b {
                match a.get_mut(k) {
                    Some(av) => merge(av, bv),
                    None => {
                        a.insert(k.clone(), bv.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (a @ Value::Null, b) => *a = b.clone(),
        _ => {}
    }
}

/// The HTTP side of the replay: one connection a request (the simulator's keep-alive is not
/// what is checked).
struct Client<'a> {
    server: &'a MockServer,
    authority: String,
    user: (String, String),
}

impl Client<'_> {
    async fn open_events(&self, query: &[(String, String)]) -> Option<EventsSocket> {
        let mut q = encode_query(query);
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(&format!(
            "api_key={}",
            utf8_percent_encode(
                &format!("{}:{}", self.user.0, self.user.1),
                NON_ALPHANUMERIC
            )
        ));
        let url = format!("ws://{}/ari/events?{q}", self.authority);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        let (sink, mut stream) = ws.split();
        let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
        // Read the simulator's events for as long as the run lasts; hand on the answers to
        // REST-over-WebSocket requests.
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                if v.get("type").and_then(Value::as_str) == Some("RESTResponse") {
                    let _ = tx.send(v);
                }
            }
        });
        Some(EventsSocket {
            sink,
            answers,
            reader,
        })
    }

    /// Sends `ex`; a 4xx answer where the recording has another status is sent again until
    /// [`RETRY_FOR`] has passed.
    async fn send_until_like(&self, ex: &Exchange) -> (u16, Body) {
        let mut waited = Duration::ZERO;
        loop {
            let (status, body) = self.send(ex).await;
            if status == ex.status || !(400..500).contains(&status) || waited >= RETRY_FOR {
                return (status, body);
            }
            self.server.advance(RETRY_STEP);
            waited += RETRY_STEP;
        }
    }

    async fn send(&self, ex: &Exchange) -> (u16, Body) {
        match self.try_send(ex).await {
            Ok(r) => r,
            // No answer at all: reported as status 0 with the error as an opaque body.
            Err(_) => (0, Body::Opaque),
        }
    }

    async fn try_send(&self, ex: &Exchange) -> Result<(u16, Body), String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = client_http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let query = encode_query(&ex.query);
        let uri = if query.is_empty() {
            format!("/ari/{}", ex.path)
        } else {
            format!("/ari/{}?{query}", ex.path)
        };
        let mut req = Request::builder()
            .method(ex.method.as_str())
            .uri(uri)
            .header(header::HOST, self.authority.as_str());
        let credentials = match (ex.status, &ex.response) {
            (401, _) => None,
            (403, Body::Json(b))
                if b.get("message").and_then(Value::as_str) == Some("Write access denied") =>
            {
                Some((READ_ONLY.0, READ_ONLY.1))
            }
            _ => Some((self.user.0.as_str(), self.user.1.as_str())),
        };
        if let Some((u, p)) = credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req = req.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        let body = match &ex.body {
            Value::Null => Bytes::new(),
            Value::String(text) => {
                req = req.header(header::CONTENT_TYPE, "text/plain");
                Bytes::from(text.clone())
            }
            json => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
        };
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        conn.abort();
        let body = if bytes.is_empty() {
            Body::Empty
        } else {
            serde_json::from_slice(&bytes).map_or(Body::Opaque, Body::Json)
        };
        Ok((status, body))
    }
}

/// The applications of an events WebSocket's query, as the recorder names its connection.
fn apps_of(query: &[(String, String)]) -> String {
    query
        .iter()
        .filter(|(k, _)| k == "app")
        .flat_map(|(_, v)| v.split(',').map(str::trim))
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    tokio_tungstenite::tungstenite::Message,
>;

/// An events WebSocket of the replay: its reader task, and the answers to the
/// REST-over-WebSocket requests sent on it.
struct EventsSocket {
    sink: WsSink,
    answers: tokio::sync::mpsc::UnboundedReceiver<Value>,
    reader: tokio::task::JoinHandle<()>,
}

impl EventsSocket {
    /// Sends the recorded frame and waits (up to [`WS_ANSWER_WAIT`]) for the answer with its
    /// `request_id`: its status and message body. No answer: status 0.
    async fn request(&mut self, w: &WsRequest) -> (u16, Body) {
        let sent = self
            .sink
            .send(tokio_tungstenite::tungstenite::Message::text(
                w.frame.clone(),
            ))
            .await;
        if sent.is_err() {
            return (0, Body::Opaque);
        }
        let wait = async {
            while let Some(v) = self.answers.recv().await {
                if v.get("request_id").and_then(Value::as_str) != Some(w.request_id.as_str()) {
                    continue;
                }
                let status = v
                    .get("status_code")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0);
                let body =
                    Body::of_text(v.get("message_body").and_then(Value::as_str).unwrap_or(""));
                return (status, body);
            }
            (0, Body::Opaque)
        };
        tokio::time::timeout(WS_ANSWER_WAIT, wait)
            .await
            .unwrap_or((0, Body::Opaque))
    }
}

/// How long a REST-over-WebSocket request waits for its answer (real time).
const WS_ANSWER_WAIT: Duration = Duration::from_secs(10);

fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(r: Value, s: Value) -> Vec<String> {
        let mut out = Vec::new();
        compare_shape("$", &r, &s, &mut out);
        out
    }

    #[test]
    fn values_do_not_count_fields_and_types_do() {
        assert!(diff(
            json!({"id": "a", "n": 1, "t": "2026-01-01"}),
            json!({"id": "b", "n": 2.5, "t": "x"})
        )
        .is_empty());
        assert_eq!(
            diff(
                json!({"a": 1, "b": {"c": true}}),
                json!({"b": {"c": "x"}, "d": null})
            ),
            vec![
                "$.a: missing".to_owned(),
                "$.b.c: string where boolean was recorded".to_owned(),
                "$.d: not in the recording".to_owned()
            ]
        );
    }

    #[test]
    fn array_elements_merge_and_empty_arrays_match_any() {
        assert!(diff(json!([]), json!([{"a": 1}])).is_empty());
        assert!(diff(json!([{"a": 1}, {"b": 1}]), json!([{"a": 2, "b": 3}])).is_empty());
        assert_eq!(
            diff(json!([{"a": 1}]), json!([{"a": 1}, {"x": 1}])),
            vec!["$[].x: not in the recording".to_owned()]
        );
    }

    #[test]
    fn branch_heads_pretend_the_branch() {
        assert_eq!(
            pretend_version("GIT-20-516d2c60ac").as_deref(),
            Some("20.99.0")
        );
        assert_eq!(pretend_version("20.14.1").as_deref(), Some("20.14.1"));
        assert_eq!(pretend_version("GIT-master-f0c1c1a7b7"), None);
    }
}
