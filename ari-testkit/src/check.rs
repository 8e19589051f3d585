//! Typed fidelity of recorded ARI traffic: `ari-mock check DIR`.
//!
//! [`check_dir`] reads every `*.jsonl` file below a directory of recordings (the format of
//! `ari-fixtures`, or what `ari-mock record` writes) and checks, with `ari-proto`'s types:
//!
//! * every event frame decodes into its typed event (not the unknown-event fallback), and
//!   the typed event encoded back to JSON keeps every field and value of the frame;
//! * every successful REST body (HTTP, or the `message_body` of a `RESTResponse` frame,
//!   paired with its `RESTRequest` by `request_id`) parses into the operation's declared
//!   result type, found in the catalog by method and path, and encodes back without losing
//!   a field;
//! * every error body becomes the typed error ([`ari_proto::AriError`]) with the status's
//!   kind and the body's `message`;
//! * every chan_websocket control message Asterisk sent (a `ws` text line that is not ARI
//!   JSON, `dir` `in`: what `ari-mock record` writes to `media.jsonl`, or the media
//!   fixtures) parses into its typed [`MediaEvent`]
//!   (not the unknown fallback) and writes back to the same message; every one the
//!   application sent (`dir` `out`) that parses as a
//!   [`Command`] is counted, the others skipped as
//!   `media-sent-other` (a deliberately bad command, say);
//! * every AudioSocket message line (`type` `audiosocket`: `kind`, `uuid`, `digit`, `len`,
//!   `head_hex`) decodes, rebuilt from its fields, into the typed message with the same
//!   values.
//!
//! Lines that carry no ARI or media control item (audio frames, notes, HTTP upgrade
//! requests …) are counted as skipped, by kind, never silently dropped.
//!
//! This module is the only part of the crate that uses `ari-proto` (feature `check`, on by
//! default): the simulator stays independent of the client's types.
//!
//! ```no_run
//! let report = ari_testkit::check::check_dir(std::path::Path::new("../shared/ari-fixtures"))?;
//! print!("{report}");
//! assert!(report.is_clean());
//! # Ok::<(), ari_testkit::check::CheckError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use ari_proto::catalog::OperationInfo;
use ari_proto::media::audiosocket;
use ari_proto::media::websocket::{Command, ControlFormat, MediaEvent};
use ari_proto::rest::{parse_response, ResponseError};
use ari_proto::{AriError, ErrorKind, Event};
use base64::Engine as _;
use serde_json::Value;

/// What was checked in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileSummary {
    /// The file, relative to the checked directory.
    pub file: PathBuf,
    /// Event frames decoded and re-encoded.
    pub events: usize,
    /// Successful REST bodies parsed into their operation's type (HTTP and over WebSocket).
    pub rest_ok: usize,
    /// Error bodies parsed into the typed error.
    pub rest_errors: usize,
    /// `RESTRequest` frames (used to pair the answers).
    pub requests: usize,
    /// Media control messages typed: chan_websocket events Asterisk sent (decoded and
    /// written back) and commands the application sent (parsed), and AudioSocket messages.
    pub media: usize,
    /// Lines that are not ARI JSON, by kind.
    pub skipped: BTreeMap<String, usize>,
    /// Problems found in this file.
    pub problems: usize,
}

/// One problem: a line that did not decode, or lost a field on re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The file, relative to the checked directory.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

/// The result of [`check_dir`]: a summary per file and every problem found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// One summary per file, in path order.
    pub files: Vec<FileSummary>,
    /// Every problem, in file and line order.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when nothing failed and at least one ARI item was checked.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.checked() > 0
    }

    /// How many ARI and media items (events, REST bodies, error bodies, media control and
    /// AudioSocket messages) were checked.
    pub fn checked(&self) -> usize {
        self.files
            .iter()
            .map(|f| f.events + f.rest_ok + f.rest_errors + f.media)
            .sum()
    }
}

impl fmt::Display for CheckReport {
    /// The table `ari-mock check` prints, then every problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .files
            .iter()
            .map(|s| s.file.display().to_string().len())
            .chain([4])
            .max()
            .unwrap_or(4);
        writeln!(
            f,
            "{:<width$}  {:>6}  {:>7}  {:>6}  {:>8}  {:>5}  {:>7}  {:>8}  skipped kinds",
            "file", "events", "rest-ok", "errors", "requests", "media", "skipped", "problems"
        )?;
        let mut total = FileSummary::default();
        for s in &self.files {
            let skipped: usize = s.skipped.values().sum();
            let kinds: Vec<String> = s.skipped.iter().map(|(k, n)| format!("{k}:{n}")).collect();
            writeln!(
                f,
                "{:<width$}  {:>6}  {:>7}  {:>6}  {:>8}  {:>5}  {:>7}  {:>8}  {}",
                s.file.display(),
                s.events,
                s.rest_ok,
                s.rest_errors,
                s.requests,
                s.media,
                skipped,
                s.problems,
                kinds.join(" ")
            )?;
            total.events += s.events;
            total.rest_ok += s.rest_ok;
            total.rest_errors += s.rest_errors;
            total.requests += s.requests;
            total.media += s.media;
            total.problems += s.problems;
            for (k, n) in &s.skipped {
                *total.skipped.entry(k.clone()).or_default() += n;
            }
        }
        writeln!(
            f,
            "{:<width$}  {:>6}  {:>7}  {:>6}  {:>8}  {:>5}  {:>7}  {:>8}",
            "total",
            total.events,
            total.rest_ok,
            total.rest_errors,
            total.requests,
            total.media,
            total.skipped.values().sum::<usize>(),
            total.problems
        )?;
        for p in &self.problems {
            writeln!(f, "PROBLEM {}:{}: {}", p.file.display(), p.line, p.message)?;
        }
        Ok(())
    }
}

/// Why a directory could not be checked at all.
#[derive(Debug)]
#[non_exhaustive]
pub enum CheckError {
    /// A file or directory could not be read.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No `*.jsonl` file below the directory.
    NoRecordings(PathBuf),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Io { path, .. } => write!(f, "cannot read {}", path.display()),
            CheckError::NoRecordings(p) => write!(
                f,
                "no *.jsonl recording below {} (expected the format of ari-fixtures)",
                p.display()
            ),
        }
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckError::Io { source, .. } => Some(source),
            CheckError::NoRecordings(_) => None,
        }
    }
}

/// Checks every `*.jsonl` file below `dir` (recursively). See the module documentation.
pub fn check_dir(dir: &Path) -> Result<CheckReport, CheckError> {
    let mut files = Vec::new();
    collect_jsonl(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(CheckError::NoRecordings(dir.to_path_buf()));
    }
    let mut parsed = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|source| CheckError::Io {
            path: path.clone(),
            source,
        })?;
        let rel = path.strip_prefix(dir).unwrap_or(path).to_path_buf();
        parsed.push((rel, text));
    }
    // First pass: every RESTRequest frame, to pair RESTResponse frames with their method.
    let mut requests: HashMap<RequestKey, String> = HashMap::new();
    for (rel, text) in &parsed {
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(frame) = frame_of(rel, &v).filter(|f| f.sent) {
                if let Ok(f) = serde_json::from_str::<Value>(&frame.text) {
                    if f["type"] == "RESTRequest" {
                        let key = RequestKey::new(rel, &v, &f);
                        let method = f["method"].as_str().unwrap_or("").to_ascii_uppercase();
                        requests.insert(key, method);
                    }
                }
            }
        }
    }
    let mut report = CheckReport::default();
    for (rel, text) in &parsed {
        let mut summary = FileSummary {
            file: rel.clone(),
            ..FileSummary::default()
        };
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut problem = |message: String| {
                problems.push(Problem {
                    file: rel.clone(),
                    line: i + 1,
                    message,
                })
            };
            let v: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => {
                    problem(format!("not a JSON line: {e}"));
                    continue;
                }
            };
            check_line(rel, &v, &requests, &mut summary, &mut problem);
        }
        summary.problems = problems.len();
        report.problems.extend(problems);
        report.files.push(summary);
    }
    Ok(report)
}

fn collect_jsonl(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CheckError> {
    let io = |source| CheckError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_jsonl(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "jsonl") {
            out.push(path);
        }
    }
    Ok(())
}

/// Identifies a `RESTRequest`: the recording (directory for the `run`/`conn`/`frame`
/// format, file for the `t_ms` format), run, connection and request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestKey(String, String, String, String);

impl RequestKey {
    fn new(rel: &Path, line: &Value, frame: &Value) -> RequestKey {
        let scope = if line.get("t_ms").is_some() && line.get("frame").is_none() {
            rel.display().to_string()
        } else {
            rel.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        RequestKey(
            scope,
            line.get("run").map(Value::to_string).unwrap_or_default(),
            line["conn"].as_str().unwrap_or("").to_string(),
            frame["request_id"].as_str().unwrap_or("").to_string(),
        )
    }
}

/// A WebSocket text frame found in a line, in either recording format.
struct Frame {
    text: String,
    /// Sent by the client (`ws-sent*.jsonl`, or `dir` `out`): requests, not events.
    sent: bool,
}

fn frame_of(rel: &Path, v: &Value) -> Option<Frame> {
    if let Some(text) = v.get("frame").and_then(Value::as_str) {
        let sent = rel
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("ws-sent"));
        return Some(Frame {
            text: text.to_string(),
            sent,
        });
    }
    if v["type"] == "ws" && v["opcode"] == "text" {
        let text = v["text"].as_str()?;
        // Only ARI JSON: chan_websocket's control messages are plain text or carry `event`.
        let parsed: Value = serde_json::from_str(text).ok()?;
        parsed.get("type").and_then(Value::as_str)?;
        return Some(Frame {
            text: text.to_string(),
            sent: v["dir"] == "out",
        });
    }
    None
}

fn skip_kind(v: &Value) -> String {
    match v.get("type").and_then(Value::as_str) {
        Some("ws") => format!(
            "ws-{}{}",
            v["opcode"].as_str().unwrap_or("?"),
            if v["opcode"] == "text" {
                "-not-ari"
            } else {
                ""
            }
        ),
        Some(t) => t.to_string(),
        None => "unknown-line".to_string(),
    }
}

fn check_line(
    rel: &Path,
    v: &Value,
    requests: &HashMap<RequestKey, String>,
    summary: &mut FileSummary,
    problem: &mut dyn FnMut(String),
) {
    if let Some(frame) = frame_of(rel, v) {
        if frame.sent {
            let request = serde_json::from_str::<Value>(&frame.text)
                .is_ok_and(|p| p["type"] == "RESTRequest");
            if request {
                summary.requests += 1;
            } else {
                // Deliberately malformed frames a client sent (Asterisk answers them 400).
                *summary.skipped.entry("sent-other".to_string()).or_default() += 1;
            }
            return;
        }
        let parsed: Value = match serde_json::from_str(&frame.text) {
            Ok(p) => p,
            Err(e) => return problem(format!("frame is not JSON: {e}")),
        };
        match check_event(&frame.text, &parsed) {
            Ok(()) => summary.events += 1,
            Err(e) => return problem(e),
        }
        if parsed["type"] == "RESTResponse" {
            let key = RequestKey::new(rel, v, &parsed);
            let Some(method) = requests.get(&key) else {
                *summary
                    .skipped
                    .entry("RESTResponse-body-unpaired".to_string())
                    .or_default() += 1;
                return;
            };
            let uri = parsed["uri"].as_str().unwrap_or("");
            let path = uri.split('?').next().unwrap_or("");
            let status = parsed["status_code"].as_u64().unwrap_or(0);
            let body = parsed["message_body"].as_str().unwrap_or("").as_bytes();
            count_rest(
                check_rest(method, path, status, body),
                method,
                uri,
                status,
                summary,
                problem,
            );
        }
        return;
    }
    let is_rest = v.get("method").is_some()
        && v.get("path").is_some()
        && v.get("status").is_some()
        && (v["kind"] == "rest" || v["type"] == "ari-http" || v.get("type").is_none());
    if is_rest {
        let method = v["method"].as_str().unwrap_or("").to_ascii_uppercase();
        let path = v["path"].as_str().unwrap_or("").trim_start_matches('/');
        let status = v["status"].as_u64().unwrap_or(0);
        let body = match rest_body(v) {
            Ok(b) => b,
            Err(e) => return problem(format!("{method} {path}: {e}")),
        };
        let result = check_rest(&method, path, status, &body);
        count_rest(result, &method, path, status, summary, problem);
        return;
    }
    if v["type"] == "ws" && v["opcode"] == "text" {
        if let Some(text) = v["text"].as_str() {
            if v["dir"] == "out" {
                if Command::parse(text).is_ok() {
                    summary.media += 1;
                } else {
                    *summary
                        .skipped
                        .entry("media-sent-other".to_string())
                        .or_default() += 1;
                }
            } else {
                match check_media_event(text) {
                    Ok(()) => summary.media += 1,
                    Err(e) => problem(e),
                }
            }
            return;
        }
    }
    if v["type"] == "audiosocket" {
        match check_audiosocket(v) {
            Ok(()) => summary.media += 1,
            Err(e) => problem(format!("AudioSocket: {e}")),
        }
        return;
    }
    *summary.skipped.entry(skip_kind(v)).or_default() += 1;
}

/// A chan_websocket control message from Asterisk: typed (not the unknown fallback), and
/// written back in its own format to the same message (plain text byte for byte, JSON field
/// for field).
fn check_media_event(text: &str) -> Result<(), String> {
    let event = MediaEvent::parse(text).map_err(|e| format!("media control {text:?}: {e}"))?;
    if let MediaEvent::Unknown(u) = &event {
        return Err(format!(
            "media control {text:?}: {} fell to the unknown fallback",
            u.name
        ));
    }
    let format = ControlFormat::detect(text);
    let written = event.to_text(format);
    match format {
        ControlFormat::PlainText if written != text => Err(format!(
            "media control {text:?}: written back as {written:?}"
        )),
        ControlFormat::PlainText => Ok(()),
        _ => {
            let original: Value =
                serde_json::from_str(text).map_err(|e| format!("media control {text:?}: {e}"))?;
            let back: Value = serde_json::from_str(&written)
                .map_err(|e| format!("media control {text:?} written back: {e}"))?;
            lost_fields(&original, &back, event.name())
        }
    }
}

/// An AudioSocket message line, rebuilt as bytes from its fields (the kind, then the UUID,
/// the digit, or `len` bytes of audio starting with `head_hex`) and decoded.
fn check_audiosocket(v: &Value) -> Result<(), String> {
    let kind_text = v["kind"].as_str().ok_or("no kind")?;
    let kind = u8::from_str_radix(kind_text.trim_start_matches("0x"), 16)
        .map_err(|e| format!("kind {kind_text:?}: {e}"))?;
    let payload: Vec<u8> = match kind {
        audiosocket::kind::UUID => {
            let text = v["uuid"].as_str().ok_or("a UUID message without uuid")?;
            audiosocket::parse_uuid(text)
                .ok_or_else(|| format!("uuid {text:?} is not a UUID"))?
                .to_vec()
        }
        audiosocket::kind::DTMF => {
            let digit = v["digit"].as_str().ok_or("a DTMF message without digit")?;
            digit.as_bytes().to_vec()
        }
        _ => {
            let len = v["len"].as_u64().ok_or("no len")?;
            let len = usize::try_from(len).map_err(|_| format!("len {len} too large"))?;
            let head = hex_bytes(v["head_hex"].as_str().unwrap_or(""))?;
            if head.len() > len {
                return Err(format!("head_hex longer than len {len}"));
            }
            match v["b64"].as_str() {
                // A recording keeps the whole payload: it must be `len` bytes starting with
                // `head_hex`.
                Some(b64) => {
                    use base64::Engine as _;
                    let whole = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("b64: {e}"))?;
                    if whole.len() != len || !whole.starts_with(&head) {
                        return Err(format!(
                            "b64 is {} bytes, len says {len}, or does not start with head_hex",
                            whole.len()
                        ));
                    }
                    whole
                }
                None => {
                    let mut payload = head;
                    payload.resize(len, 0);
                    payload
                }
            }
        }
    };
    let len = u16::try_from(payload.len()).map_err(|_| "payload over 65535 bytes")?;
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&payload);
    let mut decoder = audiosocket::Decoder::new();
    decoder.push(&bytes);
    let message = decoder
        .next_message()
        .map_err(|e| format!("{kind_text}: {e}"))?
        .ok_or_else(|| format!("{kind_text}: not decoded from a whole message"))?;
    if decoder.buffered() != 0 {
        return Err(format!("{kind_text}: bytes left after the message"));
    }
    let typed = match &message {
        audiosocket::Message::Uuid(u) => {
            v["uuid"].as_str() == Some(audiosocket::format_uuid(u).as_str())
        }
        audiosocket::Message::Dtmf(d) => v["digit"].as_str() == Some(&*char::from(*d).to_string()),
        audiosocket::Message::Audio { data, .. } => data[..] == payload[..],
        audiosocket::Message::Error(_) => kind == audiosocket::kind::ERROR,
        audiosocket::Message::Hangup => kind == audiosocket::kind::HANGUP,
        _ => false,
    };
    if typed {
        Ok(())
    } else {
        Err(format!("{kind_text} decoded as {message:?}"))
    }
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("head_hex {text:?} has an odd length"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("head_hex {text:?} is not hex"))
        })
        .collect()
}

fn count_rest(
    result: Result<bool, String>,
    method: &str,
    path: &str,
    status: u64,
    summary: &mut FileSummary,
    problem: &mut dyn FnMut(String),
) {
    match result {
        Ok(true) => summary.rest_ok += 1,
        Ok(false) => summary.rest_errors += 1,
        Err(e) => problem(format!("{method} {path} ({status}): {e}")),
    }
}

/// The response body of a REST line: `rest.jsonl` keeps the text (base64 of the first
/// 64 bytes for non-JSON bodies), `ari-http` lines keep the parsed JSON (absent for 204).
fn rest_body(v: &Value) -> Result<Vec<u8>, String> {
    match v.get("response") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if v.get("content_type").is_some() => {
            let json = v["content_type"].as_str().unwrap_or("").contains("json");
            if json {
                Ok(s.as_bytes().to_vec())
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| format!("non-JSON body is not base64: {e}"))
            }
        }
        Some(other) => serde_json::to_vec(other).map_err(|e| e.to_string()),
    }
}

fn check_event(text: &str, original: &Value) -> Result<(), String> {
    let ty = original["type"].as_str().unwrap_or("");
    let event = Event::decode(text.as_bytes()).map_err(|e| format!("{ty}: {e}"))?;
    if matches!(event, Event::Unknown(_)) {
        return Err(format!("{ty}: decoded to the unknown-event fallback"));
    }
    if event.type_name() != ty {
        return Err(format!("{ty}: decoded as {}", event.type_name()));
    }
    lost_fields(original, &event.to_json(), ty)
}

/// Every field of `expected` is in `actual` with the same value (numbers compared as f64).
fn lost_fields(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let av = a
                    .get(k)
                    .ok_or_else(|| format!("{at}.{k} lost when encoded back to JSON"))?;
                lost_fields(v, av, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{at}: {} elements, {} when encoded back",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                lost_fields(x, y, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => Ok(()),
        (x, y) if x == y => Ok(()),
        (x, y) => Err(format!("{at}: {x} became {y} when encoded back")),
    }
}

/// The catalog operation for a method and a path below `/ari/` (the template with the most
/// literal segments wins: `channels/create` over `channels/{channelId}`).
fn find_op(method: &str, path: &str) -> Option<&'static OperationInfo> {
    let segs: Vec<&str> = path.split('/').collect();
    ari_proto::catalog::OPERATIONS
        .iter()
        .filter(|o| {
            let t: Vec<&str> = o.path.trim_start_matches('/').split('/').collect();
            o.method == method
                && t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .max_by_key(|o| o.path.split('/').filter(|t| !t.starts_with('{')).count())
}

/// `Ok(true)`: a success body parsed and re-encoded; `Ok(false)`: an error body became the
/// typed error; `Err`: what failed.
fn check_rest(method: &str, path: &str, status: u64, body: &[u8]) -> Result<bool, String> {
    let status = u16::try_from(status).map_err(|_| format!("status {status} out of range"))?;
    let success = (200..300).contains(&status);
    let Some(op) = find_op(method, path) else {
        if success {
            return Err("no operation in the catalog has this method and path".to_string());
        }
        // Asterisk's plain-text 404 for a path no operation has.
        return check_error(AriError::from_body(status, body), status, body);
    };
    if !success {
        return match parse_typed(op.response, status, body) {
            Err(ResponseError::Ari(e)) => check_error(e, status, body),
            Err(other) => Err(format!("error status gave {other}")),
            Ok(_) => Err("an error status parsed as a success".to_string()),
        };
    }
    let encoded = parse_typed(op.response, status, body)
        .map_err(|e| format!("{}.{} ({}): {e}", op.resource, op.nickname, op.response))?;
    if let Some(encoded) = encoded {
        let original: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{} body is not JSON: {e}", op.response))?;
        lost_fields(&original, &encoded, op.response)?;
    }
    Ok(true)
}

fn check_error(e: AriError, status: u16, body: &[u8]) -> Result<bool, String> {
    if e.status != status || e.kind != ErrorKind::from_status(status) {
        return Err(format!("typed error {e:?} does not match status {status}"));
    }
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
        if m.get("message").and_then(Value::as_str) != Some(e.message.as_str()) {
            return Err(format!(
                "typed error lost the message of {}",
                Value::Object(m)
            ));
        }
        if let Some(extra) = m.keys().find(|k| *k != "message") {
            return Err(format!(
                "error body field `{extra}` has no place in the typed error"
            ));
        }
    } else if e.message.is_empty() && !body.is_empty() {
        return Err("a non-empty error body gave an empty message".to_string());
    }
    Ok(false)
}

/// An operation whose output is `T`, to run [`parse_response`] with any result type.
struct Typed<T>(std::marker::PhantomData<T>);

impl<T: serde::de::DeserializeOwned> ari_proto::Operation for Typed<T> {
    type Output = T;
    const NAME: &'static str = "check.typed";
    const METHOD: http::Method = http::Method::GET;
    const PATH: &'static str = "/";
    const SINCE: ari_proto::Since = ari_proto::Since::Asterisk18;
    fn write_path(&self, _: &mut ari_proto::rest::PathWriter) {}
    fn write_query(&self, _: &mut ari_proto::rest::QueryWriter) {}
    fn body(&self) -> Option<Value> {
        None
    }
    fn parse_output(body: &[u8]) -> Result<T, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// Parses a body with the declared response class; a JSON result comes back re-encoded.
fn parse_typed(class: &str, status: u16, body: &[u8]) -> Result<Option<Value>, ResponseError> {
    use ari_proto::models::*;
    use ari_proto::ops;
    macro_rules! typed {
        ($t:ty) => {
            parse_response::<Typed<$t>>(status, body).and_then(|v| {
                serde_json::to_value(&v)
                    .map(Some)
                    .map_err(|e| ResponseError::Decode {
                        operation: "check.typed",
                        status,
                        error: format!("re-encoding failed: {e}"),
                    })
            })
        };
    }
    match class {
        "void" => parse_response::<ops::channels::Answer>(status, body).map(|()| None),
        "binary" => parse_response::<ops::recordings::GetStoredFile>(status, body).map(|_| None),
        "Channel" => typed!(Channel),
        "List[Channel]" => typed!(Vec<Channel>),
        "Bridge" => typed!(Bridge),
        "List[Bridge]" => typed!(Vec<Bridge>),
        "Playback" => typed!(Playback),
        "LiveRecording" => typed!(LiveRecording),
        "StoredRecording" => typed!(StoredRecording),
        "List[StoredRecording]" => typed!(Vec<StoredRecording>),
        "Application" => typed!(Application),
        "List[Application]" => typed!(Vec<Application>),
        "AsteriskInfo" => typed!(AsteriskInfo),
        "AsteriskPing" => typed!(AsteriskPing),
        "Module" => typed!(Module),
        "List[Module]" => typed!(Vec<Module>),
        "List[LogChannel]" => typed!(Vec<LogChannel>),
        "Variable" => typed!(Variable),
        "Variables" => typed!(Variables),
        "List[ConfigTuple]" => typed!(Vec<ConfigTuple>),
        "Endpoint" => typed!(Endpoint),
        "List[Endpoint]" => typed!(Vec<Endpoint>),
        "DeviceState" => typed!(DeviceState),
        "List[DeviceState]" => typed!(Vec<DeviceState>),
        "Sound" => typed!(Sound),
        "List[Sound]" => typed!(Vec<Sound>),
        "Mailbox" => typed!(Mailbox),
        "List[Mailbox]" => typed!(Vec<Mailbox>),
        "RTPstat" => typed!(RTPstat),
        other => Err(ResponseError::Decode {
            operation: "check.typed",
            status,
            error: format!("response class {other} is not known to the checker"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[Value]) {
        let text: Vec<String> = lines.iter().map(Value::to_string).collect();
        std::fs::write(dir.join(name), text.join("\n") + "\n").expect("write");
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ari-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn the_repository_fixtures_are_clean() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let report = check_dir(&dir).expect("fixtures readable");
        assert!(report.is_clean(), "{report}");
        let master = report
            .files
            .iter()
            .find(|f| f.file == Path::new("asterisk-master/events.jsonl"))
            .expect("master events");
        assert!(master.events > 300, "{report}");
        // RESTResponse bodies were paired with ws-sent.jsonl and checked too.
        let rest: usize = report.files.iter().map(|f| f.rest_ok + f.rest_errors).sum();
        assert!(rest > 150, "{report}");
        assert!(report.to_string().contains("total"));
        // Media control messages and AudioSocket messages are typed too, not skipped.
        let media = |name: &str| {
            report
                .files
                .iter()
                .find(|f| f.file == Path::new("media").join(name))
                .unwrap_or_else(|| panic!("{name} in {report}"))
                .clone()
        };
        let plain = media("server-plain-master.jsonl");
        assert!(plain.media >= 35, "{report}");
        assert_eq!(plain.skipped.get("ws-text-not-ari"), None, "{report}");
        // NO_SUCH_COMMAND and a plain-text SET_MEDIA_DIRECTION without its direction.
        assert_eq!(plain.skipped.get("media-sent-other"), Some(&2), "{report}");
        assert!(media("server-json-20.jsonl").media >= 20, "{report}");
        assert!(media("client-master.jsonl").media >= 8, "{report}");
        let audiosocket = media("audiosocket-master.jsonl");
        assert_eq!(audiosocket.skipped.get("audiosocket"), None, "{report}");
        assert!(audiosocket.media >= 70, "{report}");
    }

    #[test]
    fn media_control_and_audiosocket_lines_that_do_not_decode_are_reported() {
        let dir = tempdir("media");
        let ws = |dir: &str, text: &str| {
            serde_json::json!({"t_ms": 1.0, "dir": dir, "conn": "media", "type": "ws",
                "opcode": "text", "text": text})
        };
        let audiosocket = |fields: serde_json::Value| {
            let mut line = serde_json::json!({"t_ms": 2.0, "dir": "in", "conn": "as",
                "type": "audiosocket"});
            for (k, v) in fields.as_object().expect("fields") {
                line[k] = v.clone();
            }
            line
        };
        write(
            &dir,
            "media.jsonl",
            &[
                ws("in", "MEDIA_XOFF"),
                ws("in", "SOMETHING_NEW x:1"),
                ws("in", r#"{"event":"MEDIA_XON","channel_id":"c1"}"#),
                ws("out", "GET_STATUS"),
                ws("out", "NO_SUCH_COMMAND"),
                audiosocket(serde_json::json!({"kind": "0x01", "len": 16,
                    "uuid": "add79572-dd67-4767-bc41-af8b247685f9"})),
                audiosocket(serde_json::json!({"kind": "0x03", "len": 1, "digit": "9"})),
                audiosocket(serde_json::json!({"kind": "0x10", "len": 4, "head_hex": "0102"})),
                audiosocket(serde_json::json!({"kind": "0x01", "len": 16, "uuid": "not-a-uuid"})),
                audiosocket(serde_json::json!({"kind": "0x10", "len": 1, "head_hex": "0102"})),
            ],
        );
        let report = check_dir(&dir).expect("readable");
        let lines: Vec<usize> = report.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 9, 10], "{report}");
        assert!(
            report.problems[0].message.contains("unknown fallback"),
            "{report}"
        );
        let file = &report.files[0];
        assert_eq!(file.media, 6, "{report}");
        assert_eq!(file.skipped.get("media-sent-other"), Some(&1), "{report}");
        assert!(!report.is_clean());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lost_field_a_bad_body_and_a_foreign_line_are_reported() {
        let dir = tempdir("bad");
        let ping =
            r#"{"ping":"pong","timestamp":"2026-11-26T11:13:59.477+0000","asterisk_id":"x"}"#;
        write(
            &dir,
            "rest.jsonl",
            &[
                serde_json::json!({"kind": "rest", "method": "GET", "path": "asterisk/ping",
                    "query": {}, "status": 200, "content_type": "application/json",
                    "response": ping}),
                // A channel without its required `state`.
                serde_json::json!({"kind": "rest", "method": "GET", "path": "channels/c1",
                    "query": {}, "status": 200, "content_type": "application/json",
                    "response": "{\"id\":\"c1\"}"}),
                serde_json::json!({"kind": "rest", "method": "GET", "path": "channels/c1",
                    "query": {}, "status": 404, "content_type": "application/json",
                    "response": "{\"message\":\"Channel not found\",\"hint\":\"x\"}"}),
                serde_json::json!({"t_ms": 1.0, "dir": "-", "type": "step", "what": "note"}),
            ],
        );
        write(
            &dir,
            "events.jsonl",
            &[serde_json::json!({"run": 1, "conn": "a", "frame":
                "{\"type\":\"StasisStart\",\"application\":\"a\"}"})],
        );
        let report = check_dir(&dir).expect("readable");
        assert!(!report.is_clean());
        let lines: Vec<(String, usize)> = report
            .problems
            .iter()
            .map(|p| (p.file.display().to_string(), p.line))
            .collect();
        assert_eq!(
            lines,
            [
                ("events.jsonl".to_string(), 1),
                ("rest.jsonl".to_string(), 2),
                ("rest.jsonl".to_string(), 3)
            ]
        );
        assert!(report.problems[2].message.contains("`hint`"), "{report}");
        let rest = &report.files[1];
        assert_eq!((rest.rest_ok, rest.rest_errors), (1, 0));
        assert_eq!(rest.skipped.get("step"), Some(&1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let dir = tempdir("empty");
        assert!(matches!(check_dir(&dir), Err(CheckError::NoRecordings(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
