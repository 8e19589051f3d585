//! Flood mode: a burst of realistic, pre-serialised events to measure how fast an ARI client
//! reads, decodes and routes them.
//!
//! The full contract, for benchmark clients in any language, is in
//! `ari-testkit/docs/BENCH-CONTRACT.md`:
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `POST /_bench/flood?n=N&channels=K&app=NAME&mode=bulk\|frame&mix=full\|stasis` | sends `N` events over `K` channels (`bench-0` … `bench-{K-1}`) to the connection holding `NAME`, then a `ChannelUserevent` named `bench-done`; the frames are built before the first one is written. Answers once the frames are queued, before they are written | `202 {"app", "mode", "mix", "n", "events", "channels", "frames", "bytes", "counts", "connections"}` |
//! | `GET /_bench/stats` | always answers | `200 {"apps", "rest_requests", "connections_accepted", "cpu_seconds", "peak_rss_bytes", "floods_total", "floods": [...]}` |
//!
//! Every channel goes through a realistic lifecycle: `StasisStart` first; then
//! `ChannelStateChange` (to `Up`), `ChannelVarset`, `ChannelDtmfReceived` in turn; then
//! `StasisEnd` and `ChannelDestroyed` last (with fewer than three events, `StasisStart` then
//! `ChannelDestroyed`; `mix=stasis` has no `ChannelDestroyed`, `StasisEnd` is last). Channels
//! are interleaved round-robin, so all `K` are live at once.
//! Every event carries a full `Channel` object shaped like the recorded fixtures.
//!
//! `mode=bulk` (default) writes frames back to back and flushes at the end (and whenever the
//! WebSocket write buffer is full); `mode=frame` flushes after every frame. A flood is not
//! held up by [`MockServer::pause_sends`](crate::MockServer::pause_sends) and does not count
//! for [`MockServer::drop_websocket_after`](crate::MockServer::drop_websocket_after). Each
//! write may block for up to [`FLOOD_WRITE_TIMEOUT`] (not the Asterisk-like write timeout),
//! so a briefly descheduled client is not dropped mid-measurement.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::http::response;
use crate::state::{lock, ConnCmd, Shared};
use crate::util::message_body;

/// How long one write of a flood may block before the connection is dropped.
pub const FLOOD_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `eventname` of the `ChannelUserevent` that ends every flood.
pub const FLOOD_DONE_EVENT: &str = "bench-done";

/// How a flood is written to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FloodMode {
    /// As fast as possible: frames are batched in the write buffer, flushed when it is full
    /// and at the end.
    #[default]
    Bulk,
    /// One flush (one `write` system call, roughly) per frame, as Asterisk writes.
    Frame,
}

impl FloodMode {
    /// `bulk` or `frame`.
    pub fn as_str(self) -> &'static str {
        match self {
            FloodMode::Bulk => "bulk",
            FloodMode::Frame => "frame",
        }
    }

    /// Parses `bulk` or `frame`.
    pub fn parse(s: &str) -> Option<FloodMode> {
        match s {
            "bulk" => Some(FloodMode::Bulk),
            "frame" => Some(FloodMode::Frame),
            _ => None,
        }
    }
}

/// Which events a flood's channels go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FloodMix {
    /// Every channel ends with `StasisEnd` then `ChannelDestroyed`, as an application
    /// subscribed to the channels (or with `subscribeAll`) sees it.
    #[default]
    Full,
    /// No `ChannelDestroyed`: every channel ends with `StasisEnd`, as an application that only
    /// has the channels in Stasis sees it (Asterisk ends that subscription with `StasisEnd`).
    Stasis,
}

impl FloodMix {
    /// `full` or `stasis`.
    pub fn as_str(self) -> &'static str {
        match self {
            FloodMix::Full => "full",
            FloodMix::Stasis => "stasis",
        }
    }

    /// Parses `full` or `stasis`.
    pub fn parse(s: &str) -> Option<FloodMix> {
        match s {
            "full" => Some(FloodMix::Full),
            "stasis" => Some(FloodMix::Stasis),
            _ => None,
        }
    }
}

/// What to flood; see [`MockServer::flood`](crate::MockServer::flood).
///
/// Every channel (`bench-0` … `bench-{K-1}`) goes through a realistic lifecycle, each event
/// carrying a full `Channel` object shaped like the recorded fixtures: `StasisStart` first;
/// then `ChannelStateChange` (to `Up`), then `ChannelVarset` and `ChannelDtmfReceived` in
/// turn; then `StasisEnd` and `ChannelDestroyed` last (with two events, `StasisStart` then
/// `ChannelDestroyed`; with [`FloodMix::Stasis`] no `ChannelDestroyed`, `StasisEnd` last).
/// Channels are interleaved round-robin, so all of them are live at once. A final
/// `ChannelUserevent` whose `eventname` is [`FLOOD_DONE_EVENT`] ends the flood.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FloodSpec {
    /// The app whose connection receives the events.
    pub app: String,
    /// Number of events (the final `bench-done` event is not counted).
    pub events: usize,
    /// Number of channels (`bench-0` … `bench-{K-1}`) they are spread over (at least 1).
    pub channels: usize,
    /// How the frames are written.
    pub mode: FloodMode,
    /// Which events the channels go through.
    pub mix: FloodMix,
}

impl FloodSpec {
    /// `events` events over `channels` channels to `app`, in [`FloodMode::Bulk`].
    pub fn new(app: &str, events: usize, channels: usize) -> FloodSpec {
        FloodSpec {
            app: app.to_owned(),
            events,
            channels,
            mode: FloodMode::Bulk,
            mix: FloodMix::Full,
        }
    }

    /// Sets the event mix.
    pub fn mix(mut self, mix: FloodMix) -> FloodSpec {
        self.mix = mix;
        self
    }

    /// Sets the write mode.
    pub fn mode(mut self, mode: FloodMode) -> FloodSpec {
        self.mode = mode;
        self
    }
}

/// What a flood sent and how fast, as reported by `GET /_bench/stats`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FloodReport {
    /// The app flooded.
    pub app: String,
    /// How the frames were written.
    pub mode: FloodMode,
    /// Which events the channels went through.
    pub mix: FloodMix,
    /// Events per connection, without the final `bench-done` event.
    pub events: u64,
    /// Channels the events were spread over.
    pub channels: u64,
    /// Frames per connection, the final event included (`events + 1`).
    pub frames: u64,
    /// Connections flooded.
    pub connections: u64,
    /// WebSocket payload bytes written, all connections together.
    pub bytes: u64,
    /// From the first write to the last flush, the slowest connection.
    pub seconds: f64,
    /// `events / seconds` (per connection).
    pub events_per_sec: f64,
    /// `bytes / seconds`.
    pub bytes_per_sec: f64,
    /// Whether every connection has finished (or failed).
    pub done: bool,
    /// Frames per event type, per connection, the final `ChannelUserevent` included.
    pub counts: BTreeMap<String, u64>,
}

impl FloodReport {
    /// The report as JSON (one entry of `floods` in `GET /_bench/stats`).
    pub fn to_json(&self) -> Value {
        json!({
            "app": self.app,
            "mode": self.mode.as_str(),
            "mix": self.mix.as_str(),
            "n": self.events,
            "counts": self.counts,
            "send_seconds": self.seconds,
            "events": self.events,
            "channels": self.channels,
            "frames": self.frames,
            "connections": self.connections,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec,
            "bytes_per_sec": self.bytes_per_sec,
            "done": self.done,
        })
    }
}

/// Why a flood could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FloodError {
    /// No open connection holds the app.
    NoConnection(String),
    /// The server has stopped.
    Stopped,
}

impl fmt::Display for FloodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FloodError::NoConnection(app) => write!(f, "no connection holds app {app}"),
            FloodError::Stopped => f.write_str("the server has stopped"),
        }
    }
}

impl std::error::Error for FloodError {}

/// A flood being written by connection tasks; they report into it.
#[derive(Debug)]
pub(crate) struct FloodJob {
    pub(crate) frames: Vec<Utf8Bytes>,
    pub(crate) mode: FloodMode,
    state: std::sync::Mutex<JobState>,
    finished: std::sync::Condvar,
}

#[derive(Debug)]
struct JobState {
    report: FloodReport,
    pending: u64,
}

impl FloodJob {
    /// Called by a connection task when it has written (or failed to write) the flood.
    pub(crate) fn finish(&self, bytes: u64, elapsed: Duration) {
        let mut st = lock(&self.state);
        let r = &mut st.report;
        r.bytes += bytes;
        r.seconds = r.seconds.max(elapsed.as_secs_f64());
        if r.seconds > 0.0 {
            r.events_per_sec = r.events as f64 / r.seconds;
            r.bytes_per_sec = r.bytes as f64 / r.seconds;
        }
        st.pending = st.pending.saturating_sub(1);
        if st.pending == 0 {
            st.report.done = true;
            self.finished.notify_all();
        }
    }

    fn report(&self) -> FloodReport {
        lock(&self.state).report.clone()
    }

    fn wait(&self) -> FloodReport {
        let mut st = lock(&self.state);
        while st.pending > 0 {
            st = match self.finished.wait(st) {
                Ok(g) => g,
                Err(e) => e.into_inner(),
            };
        }
        st.report.clone()
    }
}

/// Floods kept for `GET /_bench/stats`.
const FLOODS_KEPT: usize = 64;

/// The floods, for `GET /_bench/stats`: the last [`FLOODS_KEPT`], and how many there were.
#[derive(Debug, Default)]
pub(crate) struct BenchState {
    floods: VecDeque<Arc<FloodJob>>,
    total: u64,
}

/// Builds the frames of a flood: `spec.events` events, then the `bench-done` event; and the
/// number of frames of each type.
pub(crate) fn build_frames(
    spec: &FloodSpec,
    timestamp: &str,
    asterisk_id: &str,
) -> (Vec<String>, BTreeMap<String, u64>) {
    let channels = spec.channels.max(1);
    let n = spec.events;
    let app = Value::from(spec.app.as_str()).to_string();
    let ts = Value::from(timestamp).to_string();
    let aid = Value::from(asterisk_id).to_string();
    // Common tail of every event.
    let tail = format!(",\"asterisk_id\":{aid},\"application\":{app}}}");
    let base = n / channels;
    let extra = n % channels;
    let count = |k: usize| base + usize::from(k < extra);
    let rounds = count(0);
    let channel_json = |k: usize, state: &str| -> String {
        format!(
            "{{\"id\":\"bench-{k}\",\"name\":\"PJSIP/bench-{k:08x}\",\"state\":\"{state}\",\"protocol_id\":\"{k:016x}@127.0.0.1\",\"caller\":{{\"name\":\"Bench {k}\",\"number\":\"{num}\"}},\"connected\":{{\"name\":\"\",\"number\":\"\"}},\"accountcode\":\"\",\"dialplan\":{{\"context\":\"default\",\"exten\":\"100\",\"priority\":1,\"app_name\":\"Stasis\",\"app_data\":{app_data}}},\"creationtime\":{ts},\"language\":\"en\"}}",
            num = 1000 + k,
            app_data = app,
        )
    };
    let mut frames = Vec::with_capacity(n + 1);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let stasis_only = spec.mix == FloodMix::Stasis;
    for r in 0..rounds {
        for k in 0..channels {
            let c = count(k);
            if r >= c {
                // Channels are sorted by decreasing count: none further has this round.
                break;
            }
            let kind = if r == 0 {
                0
            } else if r + 1 == c && stasis_only {
                usize::MAX - 1 // StasisEnd
            } else if r + 1 == c {
                usize::MAX // ChannelDestroyed
            } else if r + 2 == c && c >= 3 && !stasis_only {
                usize::MAX - 1 // StasisEnd
            } else {
                r
            };
            let frame = match kind {
                0 => format!(
                    "{{\"type\":\"StasisStart\",\"timestamp\":{ts},\"args\":[\"bench\"],\"channel\":{}{tail}",
                    channel_json(k, "Ring")
                ),
                usize::MAX => format!(
                    "{{\"type\":\"ChannelDestroyed\",\"timestamp\":{ts},\"cause\":16,\"cause_txt\":\"Normal Clearing\",\"channel\":{}{tail}",
                    channel_json(k, "Up")
                ),
                m if m == usize::MAX - 1 => format!(
                    "{{\"type\":\"StasisEnd\",\"timestamp\":{ts},\"channel\":{}{tail}",
                    channel_json(k, "Up")
                ),
                1 => format!(
                    "{{\"type\":\"ChannelStateChange\",\"timestamp\":{ts},\"channel\":{}{tail}",
                    channel_json(k, "Up")
                ),
                m => match m % 2 {
                    0 => format!(
                        "{{\"variable\":\"BENCH_VAR\",\"value\":\"{m}\",\"type\":\"ChannelVarset\",\"timestamp\":{ts},\"channel\":{}{tail}",
                        channel_json(k, "Up")
                    ),
                    _ => format!(
                        "{{\"type\":\"ChannelDtmfReceived\",\"timestamp\":{ts},\"digit\":\"{}\",\"duration_ms\":100,\"channel\":{}{tail}",
                        (b'0' + (m % 10) as u8) as char,
                        channel_json(k, "Up")
                    ),
                },
            };
            let ty = match kind {
                0 => "StasisStart",
                usize::MAX => "ChannelDestroyed",
                m if m == usize::MAX - 1 => "StasisEnd",
                1 => "ChannelStateChange",
                m if m % 2 == 0 => "ChannelVarset",
                _ => "ChannelDtmfReceived",
            };
            *counts.entry(ty.to_owned()).or_default() += 1;
            frames.push(frame);
        }
    }
    frames.push(format!(
        "{{\"type\":\"ChannelUserevent\",\"timestamp\":{ts},\"eventname\":\"{FLOOD_DONE_EVENT}\",\"userevent\":{{\"eventname\":\"{FLOOD_DONE_EVENT}\",\"events\":{n}}}{tail}"
    ));
    *counts.entry("ChannelUserevent".to_owned()).or_default() += 1;
    (frames, counts)
}

/// Prepares a flood and queues it on the connection holding the app; returns the job.
pub(crate) fn start(shared: &Shared, spec: &FloodSpec) -> Result<Arc<FloodJob>, FloodError> {
    let (frames, counts) = build_frames(spec, &shared.timestamp(), &shared.asterisk_id);
    let frames: Vec<Utf8Bytes> = frames.into_iter().map(Utf8Bytes::from).collect();
    let frame_count = frames.len() as u64;
    let job = Arc::new(FloodJob {
        frames,
        mode: spec.mode,
        state: std::sync::Mutex::new(JobState {
            report: FloodReport {
                app: spec.app.clone(),
                mode: spec.mode,
                mix: spec.mix,
                events: spec.events as u64,
                channels: spec.channels.max(1) as u64,
                frames: frame_count,
                connections: 0,
                bytes: 0,
                seconds: 0.0,
                events_per_sec: 0.0,
                bytes_per_sec: 0.0,
                done: false,
                counts,
            },
            pending: 1,
        }),
        finished: std::sync::Condvar::new(),
    });
    // Queue it while holding the job's state, so that a connection finishing at once cannot
    // see `pending` reach zero before every connection is counted.
    {
        let mut st = lock(&job.state);
        let sent = shared.command(Some(&spec.app), || ConnCmd::Flood(job.clone())) as u64;
        if sent == 0 {
            return Err(FloodError::NoConnection(spec.app.clone()));
        }
        st.report.connections = sent;
        st.pending = sent;
    }
    shared.log(|| {
        format!(
            "flood of {} events over {} channels to {} ({})",
            spec.events,
            spec.channels.max(1),
            spec.app,
            spec.mode.as_str()
        )
    });
    let mut bench = lock(&shared.bench);
    if bench.floods.len() == FLOODS_KEPT {
        bench.floods.pop_front();
    }
    bench.floods.push_back(job.clone());
    bench.total += 1;
    Ok(job)
}

/// Runs a flood and blocks until it has been written.
pub(crate) fn run_blocking(shared: &Shared, spec: &FloodSpec) -> Result<FloodReport, FloodError> {
    Ok(start(shared, spec)?.wait())
}

/// The last flood's report.
pub(crate) fn last_report(shared: &Shared) -> Option<FloodReport> {
    lock(&shared.bench).floods.back().map(|j| j.report())
}

/// The body of `GET /_bench/stats`.
pub(crate) fn stats_json(shared: &Shared) -> Value {
    let (floods, total): (Vec<Value>, u64) = {
        let bench = lock(&shared.bench);
        (
            bench.floods.iter().map(|j| j.report().to_json()).collect(),
            bench.total,
        )
    };
    let mut apps: Vec<String> = lock(&shared.registry).apps.keys().cloned().collect();
    apps.sort();
    let usage = crate::util::process_usage();
    json!({
        "apps": apps,
        "rest_requests": shared.rest_requests.load(Ordering::Relaxed),
        "connections_accepted": shared.connections_accepted.load(Ordering::Relaxed),
        "sessions_peak": shared.sessions.peak.load(Ordering::Relaxed),
        "sessions_refused": shared.sessions.refused.load(Ordering::Relaxed),
        "cpu_seconds": usage.map(|u| u.cpu_seconds),
        "peak_rss_bytes": usage.map(|u| u.peak_rss_bytes),
        "floods_total": total,
        "floods": floods,
    })
}

fn error(status: u16, msg: &str) -> Response<Full<Bytes>> {
    response(status, "application/json", message_body(msg))
}

/// Handles `/_bench/{rest}`.
pub(crate) fn handle(
    shared: &Shared,
    method: &str,
    rest: &str,
    query: &[(String, String)],
) -> Response<Full<Bytes>> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match (method, rest.trim_end_matches('/')) {
        ("POST", "flood") => {
            let Some(app) = param("app").filter(|a| !a.is_empty()) else {
                return error(400, "missing parameter: app");
            };
            let num = |name: &str, default: usize| -> Result<usize, String> {
                match param(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse::<usize>()
                        .map_err(|_| format!("invalid parameter {name}: {v:?}")),
                }
            };
            let (n, k) = match (num("n", 10_000), num("channels", 100)) {
                (Ok(n), Ok(k)) => (n, k),
                (Err(e), _) | (_, Err(e)) => return error(400, &e),
            };
            // Bounds the memory a request can make the server allocate.
            if n > 50_000_000 || k > 10_000_000 {
                return error(400, "n or channels too large");
            }
            let mode = match param("mode").map(FloodMode::parse) {
                None => FloodMode::Bulk,
                Some(Some(m)) => m,
                Some(None) => return error(400, "invalid parameter mode: bulk or frame"),
            };
            let mix = match param("mix").map(FloodMix::parse) {
                None => FloodMix::Full,
                Some(Some(m)) => m,
                Some(None) => return error(400, "invalid parameter mix: full or stasis"),
            };
            let spec = FloodSpec::new(app, n, k).mode(mode).mix(mix);
            match start(shared, &spec) {
                Ok(job) => {
                    let r = job.report();
                    let bytes: u64 = job.frames.iter().map(|f| f.len() as u64).sum();
                    response(
                        202,
                        "application/json",
                        json!({
                            "app": r.app,
                            "mode": r.mode.as_str(),
                            "mix": r.mix.as_str(),
                            "n": r.events,
                            "events": r.events,
                            "channels": r.channels,
                            "frames": r.frames,
                            "bytes": bytes,
                            "counts": r.counts,
                            "connections": r.connections,
                        })
                        .to_string()
                        .into_bytes(),
                    )
                }
                Err(e) => error(404, &e.to_string()),
            }
        }
        ("GET", "stats") => response(
            200,
            "application/json",
            stats_json(shared).to_string().into_bytes(),
        ),
        _ => response(404, "text/plain", b"404: Not Found".to_vec()),
    }
}

/// Writes a flood on one connection, reports into the job, and returns whether it completed.
pub(crate) async fn write<S>(sink: &mut S, job: &FloodJob) -> bool
where
    S: futures_util::Sink<tokio_tungstenite::tungstenite::Message> + Unpin,
{
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut ok = true;
    for f in &job.frames {
        let msg = Message::Text(f.clone());
        let res = match job.mode {
            FloodMode::Bulk => tokio::time::timeout(FLOOD_WRITE_TIMEOUT, sink.feed(msg)).await,
            FloodMode::Frame => tokio::time::timeout(FLOOD_WRITE_TIMEOUT, sink.send(msg)).await,
        };
        if !matches!(res, Ok(Ok(()))) {
            ok = false;
            break;
        }
        bytes += f.len() as u64;
    }
    if ok
        && !matches!(
            tokio::time::timeout(FLOOD_WRITE_TIMEOUT, sink.flush()).await,
            Ok(Ok(()))
        )
    {
        ok = false;
    }
    job.finish(bytes, started.elapsed());
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(frames: &[String]) -> Vec<(String, String)> {
        frames
            .iter()
            .map(|f| {
                let v: Value = serde_json::from_str(f).expect("valid JSON");
                (
                    v["type"].as_str().unwrap_or_default().to_owned(),
                    v["channel"]["id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn lifecycle_order_per_channel() {
        for (n, k) in [(20, 2), (7, 3), (5, 5), (3, 5), (100, 7), (0, 3)] {
            let (frames, counts) = build_frames(&FloodSpec::new("a\"pp", n, k), "T", "id");
            assert_eq!(counts.values().sum::<u64>(), n as u64 + 1);
            assert_eq!(frames.len(), n + 1);
            let t = types(&frames);
            assert_eq!(t.last().map(|x| x.0.as_str()), Some("ChannelUserevent"));
            for c in 0..k {
                let id = format!("bench-{c}");
                let mine: Vec<&str> = t
                    .iter()
                    .filter(|(_, ch)| *ch == id)
                    .map(|(ty, _)| ty.as_str())
                    .collect();
                let expect = n / k + usize::from(c < n % k);
                assert_eq!(mine.len(), expect, "{n} over {k}: {id}");
                if expect == 0 {
                    continue;
                }
                assert_eq!(mine[0], "StasisStart");
                if expect >= 2 {
                    assert_eq!(mine[expect - 1], "ChannelDestroyed");
                }
                if expect >= 3 {
                    assert_eq!(mine[expect - 2], "StasisEnd");
                    assert!(mine[1..expect - 2].iter().all(|x| ![
                        "StasisStart",
                        "StasisEnd",
                        "ChannelDestroyed"
                    ]
                    .contains(x)));
                }
            }
        }
    }
}
