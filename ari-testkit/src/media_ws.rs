//! The simulated chan_websocket media socket (server mode): `GET /media/<connection id>`.
//!
//! [`AsteriskMedia`] models Asterisk's side of one socket without I/O: the control commands
//! (plain text or JSON, 128-byte limit, errors as Asterisk words them), the playout queue
//! (one frame per 20 ms tick; `MEDIA_XOFF` at 900 frames, `MEDIA_XON` below 800, a message
//! arriving at 1,000 dropped whole; normal-mode remainders dropped, buffering mode joining
//! them), marks, pause, flush and drained reports. The socket task around it sends
//! `MEDIA_START`, then a frame of [`test_frame`] every 20 ms, and relays DTMF and hangups
//! from the simulator.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::http::response;
use crate::sim::{MediaConnectError, MediaConnectInfo, MediaSignal};
use crate::state::{lock, Shared};

/// Asterisk's XOFF level.
const XOFF: usize = 900;
/// Asterisk's XON level.
const XON: usize = 800;
/// A message arriving while the queue holds this many frames is dropped.
const LIMIT: usize = 1000;
/// Control messages longer than this are ignored.
const MAX_CONTROL: usize = 128;
/// The largest WebSocket frame Asterisk reads (header included): a larger one makes it close
/// the socket with 1009 and hang the channel up (res_http_websocket `MAXIMUM_FRAME_SIZE`).
const MAX_FRAME: usize = 65_535;

/// The size of the frame a client (masking) sends for a `payload`-byte message.
fn client_frame_len(payload: usize) -> usize {
    let length = match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    2 + length + 4 + payload
}

/// How long the simulator waits for the application's answer to its close: long enough
/// for a loaded test machine, and only spent by an application that keeps the connection
/// open without answering.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(5);

/// What one media socket did, kept after it closes ([`crate::MockServer::media_sessions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaSessionReport {
    /// `MEDIA_WEBSOCKET_CONNECTION_ID`.
    pub connection_id: String,
    /// The channel id.
    pub channel_id: String,
    /// The media format.
    pub format: String,
    /// Frames sent to the application.
    pub frames_sent: u64,
    /// Binary messages received from the application.
    pub messages_received: u64,
    /// Frames put in the playout queue (whole frames cut from the messages; one per
    /// message in passthrough mode).
    pub frames_queued: u64,
    /// Frames played out of the queue.
    pub frames_played: u64,
    /// Played frames equal to [`test_frame`] (an echo of what was sent).
    pub frames_played_test_signal: u64,
    /// Messages dropped whole because the queue was full.
    pub messages_dropped: u64,
    /// Bytes dropped as a normal-mode remainder (short messages).
    pub remainder_bytes_dropped: u64,
    /// `MEDIA_XOFF` sent.
    pub xoff_sent: u64,
    /// `MEDIA_XON` sent.
    pub xon_sent: u64,
    /// The most frames the playout queue held at once (Asterisk sends `MEDIA_XOFF` at 900
    /// and drops messages arriving at 1,000).
    pub max_queued_frames: u64,
    /// Control messages ignored (over 128 bytes, or unknown).
    pub ignored_commands: u64,
    /// The close code the simulator sent when it ended the socket itself, if it did: 1000
    /// for a hangup, 1009 for a message whose frame exceeds 65,535 bytes, or the code given
    /// to [`crate::MockServer::close_media`].
    pub close_code: Option<u16>,
    /// The close status of the application's answer to that close, if one came: RFC 6455
    /// requires the answer, and Asterisk waits for it before it drops the connection. `None`
    /// when the simulator did not close first, or the application went without answering.
    pub close_reply: Option<u16>,
}

/// The known test signal: 20 ms of a 1 kHz sine at amplitude 8000 (a whole number of periods,
/// so every frame is the same), in `format` (`ulaw`, `alaw`, `slin*`; zeros for others).
pub fn test_frame(format: &str) -> Vec<u8> {
    let (rate, bytes_per_sample) = match format {
        "ulaw" | "alaw" => (8000, 1),
        "slin" => (8000, 2),
        "slin16" => (16000, 2),
        "slin48" => (48000, 2),
        _ => return vec![0; 160],
    };
    let samples = rate / 50;
    let mut out = Vec::with_capacity(samples * bytes_per_sample);
    for n in 0..samples {
        let phase = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / rate as f64;
        let s = (8000.0 * phase.sin()).round() as i16;
        match format {
            "ulaw" => out.push(linear_to_ulaw(s)),
            "alaw" => out.push(linear_to_alaw(s)),
            _ => out.extend_from_slice(&s.to_le_bytes()),
        }
    }
    out
}

/// G.711 µ-law encoding of one sample.
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// G.711 A-law encoding of one sample.
fn linear_to_alaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
    let mut pcm = i32::from(sample) >> 3;
    let mask = if pcm >= 0 {
        0xd5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let Some(seg) = SEG_END.iter().position(|end| pcm <= *end) else {
        return (0x7f ^ mask) as u8;
    };
    let shift = if seg < 2 { 1 } else { seg };
    let aval = ((seg as i32) << 4) | ((pcm >> shift) & 0x0f);
    (aval ^ mask) as u8
}

#[derive(Debug)]
enum Queued {
    Frame(bool),
    Mark(Option<String>),
    BufferEnd(Option<String>),
}

/// What the model wants done besides sending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Text(String),
    Answer,
    Hangup,
}

/// Asterisk's side of one media socket, sans-IO.
#[derive(Debug)]
pub(crate) struct AsteriskMedia {
    frame_size: usize,
    json: bool,
    channel_id: String,
    /// The test signal's frame, shared by every tick (a reference count, no copy).
    test: Bytes,
    queue: VecDeque<Queued>,
    frames: usize,
    leftover: Vec<u8>,
    buffering: bool,
    paused: bool,
    xoff: bool,
    report_drained: bool,
    /// Passthrough: messages queued as-is, queue commands refused.
    passthrough: bool,
    /// `both`, `in` (app only receives) or `out` (app only sends).
    direction: &'static str,
    /// No media flows before the answer (dial option `n`).
    answered: bool,
    /// The release knows `MARK_MEDIA` (20.18+); before, it is an unknown command.
    marks: bool,
    /// The plain-text `MEDIA_START` carries `channel_id` (20.17+).
    start_channel_id: bool,
    actions: VecDeque<Action>,
    pub(crate) report: MediaSessionReport,
}

impl AsteriskMedia {
    pub(crate) fn new(info: &MediaConnectInfo) -> AsteriskMedia {
        AsteriskMedia {
            frame_size: info.optimal_frame_size as usize,
            json: info.json,
            channel_id: info.channel_id.clone(),
            test: Bytes::from(test_frame(&info.format)),
            queue: VecDeque::new(),
            frames: 0,
            leftover: Vec::new(),
            buffering: false,
            paused: false,
            xoff: false,
            report_drained: false,
            passthrough: info.passthrough,
            direction: match info.direction.as_str() {
                "in" => "in",
                "out" => "out",
                _ => "both",
            },
            answered: info.auto_answer,
            marks: true,
            start_channel_id: true,
            actions: VecDeque::new(),
            report: MediaSessionReport {
                connection_id: info.connection_id.clone(),
                channel_id: info.channel_id.clone(),
                format: info.format.clone(),
                ..MediaSessionReport::default()
            },
        }
    }

    /// Behaves as chan_websocket of the release the server pretends to be (the newest when
    /// `None`): `MEDIA_START` without `channel_id` before 20.17, `MARK_MEDIA` ignored before
    /// 20.18.
    pub(crate) fn release(&mut self, pretend: Option<&crate::version::Pretend>) {
        if let Some(p) = pretend {
            self.marks = p.mark_media();
            self.start_channel_id = p.media_channel_id();
        }
    }

    /// The `MEDIA_START` text.
    pub(crate) fn media_start(&self, info: &MediaConnectInfo) -> String {
        if self.json {
            json!({
                "event": "MEDIA_START",
                "connection_id": self.report.connection_id,
                "channel": info.channel_name,
                "channel_id": info.channel_id,
                "format": info.format,
                "optimal_frame_size": info.optimal_frame_size,
                "ptime": 20,
                "channel_variables": info.variables,
            })
            .to_string()
        } else {
            let channel_id = if self.start_channel_id {
                format!(" channel_id:{}", info.channel_id)
            } else {
                String::new()
            };
            format!(
                "MEDIA_START connection_id:{} channel:{}{channel_id} format:{} optimal_frame_size:{} ptime:20",
                self.report.connection_id, info.channel_name, info.format, info.optimal_frame_size
            )
        }
    }

    pub(crate) fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// An event: `fields` in plain-text order; `bare` events carry nothing in plain text.
    fn event(&mut self, name: &str, fields: &[(&str, Value)], bare: bool) {
        let text = if self.json {
            let mut m = serde_json::Map::new();
            m.insert("event".into(), json!(name));
            m.insert("channel_id".into(), json!(self.channel_id));
            for (k, v) in fields {
                m.insert((*k).to_owned(), v.clone());
            }
            Value::Object(m).to_string()
        } else if bare {
            match fields.first() {
                Some((_, Value::String(id))) if !id.is_empty() => format!("{name} {id}"),
                _ => name.to_owned(),
            }
        } else {
            let mut s = format!("{name} channel_id:{}", self.channel_id);
            for (k, v) in fields {
                match v {
                    Value::String(x) => s.push_str(&format!(" {k}:{x}")),
                    other => s.push_str(&format!(" {k}:{other}")),
                }
            }
            s
        };
        self.actions.push_back(Action::Text(text));
    }

    fn error(&mut self, text: &str) {
        self.event("ERROR", &[("error_text", json!(text))], false);
    }

    /// `DTMF_END` for a digit received by a bridged channel.
    pub(crate) fn dtmf(&mut self, digit: char) {
        if self.json {
            self.event("DTMF_END", &[("digit", json!(digit.to_string()))], false);
        } else {
            let text = format!("DTMF_END digit:{digit} channel_id:{}", self.channel_id);
            self.actions.push_back(Action::Text(text));
        }
    }

    pub(crate) fn handle_text(&mut self, text: &str) {
        if text.len() > MAX_CONTROL {
            self.report.ignored_commands += 1;
            return;
        }
        let text = text.trim();
        let (name, arg, direction) = if self.json {
            let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
                self.error("Unable to parse JSON command");
                return;
            };
            let get = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            let Some(name) = get("command") else {
                self.error("Unable to parse JSON command");
                return;
            };
            (name, get("correlation_id"), get("direction"))
        } else {
            let (n, a) = match text.split_once(' ') {
                Some((n, a)) => (n, Some(a.trim().to_owned())),
                None => (text, None),
            };
            (n.to_owned(), a.filter(|a| !a.is_empty()), None)
        };
        const REFUSED_IN_PASSTHROUGH: [&str; 8] = [
            "START_MEDIA_BUFFERING",
            "STOP_MEDIA_BUFFERING",
            "MARK_MEDIA",
            "FLUSH_MEDIA",
            "PAUSE_MEDIA",
            "CONTINUE_MEDIA",
            "REPORT_QUEUE_DRAINED",
            "SET_MEDIA_DIRECTION",
        ];
        if self.passthrough && REFUSED_IN_PASSTHROUGH.contains(&name.as_str()) {
            self.error(&format!("{name} not supported in passthrough mode"));
            return;
        }
        match name.as_str() {
            "ANSWER" => {
                if !self.answered {
                    self.answered = true;
                    self.actions.push_back(Action::Answer);
                }
            }
            "HANGUP" => self.actions.push_back(Action::Hangup),
            "GET_STATUS" => {
                let fields = [
                    ("queue_length", json!(self.frames)),
                    ("xon_level", json!(XON)),
                    ("xoff_level", json!(XOFF)),
                    // Asterisk's `queue_full` is its XOFF state: set at 900, cleared by
                    // `MEDIA_XON` (recorded: true at 1,000 frames, false at 798).
                    ("queue_full", json!(self.xoff)),
                    ("bulk_media", json!(self.buffering)),
                    ("media_paused", json!(self.paused)),
                ];
                self.event("STATUS", &fields, false);
            }
            "START_MEDIA_BUFFERING" if self.direction == "in" => {
                self.error("START_MEDIA_BUFFERING not supported while media direction is 'in'");
            }
            "START_MEDIA_BUFFERING" => self.buffering = true,
            "STOP_MEDIA_BUFFERING" => {
                if !self.leftover.is_empty() {
                    let short = std::mem::take(&mut self.leftover);
                    self.push_frame(&short);
                }
                self.buffering = false;
                self.queue.push_back(Queued::BufferEnd(arg));
            }
            // Before 20.18 an unknown command: only logged.
            "MARK_MEDIA" if !self.marks => self.report.ignored_commands += 1,
            "MARK_MEDIA" => self.queue.push_back(Queued::Mark(arg)),
            "FLUSH_MEDIA" => {
                self.queue.clear();
                self.frames = 0;
                self.leftover.clear();
                self.buffering = false;
            }
            "PAUSE_MEDIA" => self.paused = true,
            "CONTINUE_MEDIA" => self.paused = false,
            "REPORT_QUEUE_DRAINED" => self.report_drained = true,
            "SET_MEDIA_DIRECTION" if !self.json => {
                self.error("SET_MEDIA_DIRECTION only supports JSON format.\n");
            }
            "SET_MEDIA_DIRECTION" => match direction.as_deref() {
                Some("both") => self.direction = "both",
                Some("in") => self.direction = "in",
                Some("out") => self.direction = "out",
                other => {
                    let d = other.unwrap_or("");
                    self.error(&format!(
                        "'{d}' is not a valid direction for SET_MEDIA_DIRECTION.\n"
                    ));
                }
            },
            _ => self.report.ignored_commands += 1,
        }
    }

    fn push_frame(&mut self, frame: &[u8]) {
        self.queue.push_back(Queued::Frame(frame == &self.test[..]));
        self.frames += 1;
        self.report.frames_queued += 1;
        self.report.max_queued_frames = self.report.max_queued_frames.max(self.frames as u64);
    }

    pub(crate) fn handle_binary(&mut self, data: &[u8]) {
        self.report.messages_received += 1;
        if self.direction == "in" {
            return;
        }
        if self.frames >= LIMIT {
            self.report.messages_dropped += 1;
            return;
        }
        let fs = self.frame_size.max(1);
        if self.passthrough {
            // One frame per message, whatever its size.
            self.push_frame(data);
        } else if self.buffering {
            let mut joined = std::mem::take(&mut self.leftover);
            joined.extend_from_slice(data);
            let whole = joined.len() / fs * fs;
            for f in joined[..whole].chunks(fs) {
                self.push_frame(f);
            }
            self.leftover = joined[whole..].to_vec();
        } else {
            let whole = data.len() / fs * fs;
            for f in data[..whole].chunks(fs) {
                self.push_frame(f);
            }
            self.report.remainder_bytes_dropped += (data.len() - whole) as u64;
        }
        if self.frames >= XOFF && !self.xoff {
            self.xoff = true;
            self.report.xoff_sent += 1;
            self.event("MEDIA_XOFF", &[], true);
        }
    }

    fn pop_markers(&mut self) {
        while let Some(Queued::Mark(_) | Queued::BufferEnd(_)) = self.queue.front() {
            match self.queue.pop_front() {
                Some(Queued::Mark(id)) => self.event(
                    "MEDIA_MARK_PROCESSED",
                    &[("correlation_id", json!(id.unwrap_or_default()))],
                    true,
                ),
                Some(Queued::BufferEnd(id)) => self.event(
                    "MEDIA_BUFFERING_COMPLETED",
                    &[("correlation_id", json!(id.unwrap_or_default()))],
                    true,
                ),
                _ => {}
            }
        }
    }

    /// One 20 ms tick: plays one queued frame, and returns the frame to send the application
    /// (none while the direction is `out`).
    pub(crate) fn tick(&mut self) -> Option<Bytes> {
        if !self.paused {
            // As chan_websocket's `dequeue_frame`: `MEDIA_XON` is decided before the tick's
            // frame is taken (recorded: `STATUS queue_length:798` right after it), and only
            // while playout runs. `FLUSH_MEDIA` empties the queue but leaves the XOFF state
            // (`queue_full`) set: `MEDIA_XON` follows at the next tick of running playout
            // (after `CONTINUE_MEDIA` if paused).
            if self.xoff && self.frames < XON {
                self.xoff = false;
                self.report.xon_sent += 1;
                self.event("MEDIA_XON", &[], true);
            }
            self.pop_markers();
            if let Some(Queued::Frame(test)) = self.queue.pop_front() {
                self.frames -= 1;
                self.report.frames_played += 1;
                self.report.frames_played_test_signal += u64::from(test);
            }
            self.pop_markers();
        }
        if self.report_drained && self.frames == 0 {
            self.report_drained = false;
            self.event("QUEUE_DRAINED", &[], true);
        }
        (self.answered && self.direction != "out").then(|| {
            self.report.frames_sent += 1;
            self.test.clone()
        })
    }
}

/// A media socket reads a few frames at a time: tungstenite zero-fills its read buffer
/// before every read, and its 128 KiB default made that most of the simulator's CPU per frame.
fn media_ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

fn error_page(status: u16, title: &str, text: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n<html><head>\r\n<title>{status} {title}</title>\r\n</head><body>\r\n<h1>{title}</h1>\r\n<p>{text}</p>\r\n<hr />\r\n</body></html>\r\n"
    );
    response(status, "text/html", body.into_bytes())
}

/// Answers `GET /media/<connection_id>`: 404 for an unknown id, 409 for a second socket,
/// else 101 and a task running the socket.
pub(crate) fn upgrade(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    connection_id: &str,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return error_page(400, "Bad Request", "Not a WebSocket upgrade");
    };
    let reserved = shared.with_sim(|sim, now| sim.media_reserve(now, connection_id));
    let info = match reserved {
        Some(Ok(Ok(info))) => info,
        Some(Ok(Err(MediaConnectError::Duplicate))) => {
            return error_page(
                409,
                "Conflict",
                "Another websocket connection exists for this connection id",
            )
        }
        _ => return error_page(404, "Not found", "WebSocket instance not found"),
    };
    let offers_media = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "media"));
    let (tx, rx) = mpsc::unbounded_channel();
    lock(&shared.media_conns).insert(connection_id.to_owned(), tx);
    shared.log(|| format!("media socket {connection_id} connected ({})", info.format));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_shared = shared.clone();
    let id = connection_id.to_owned();
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(media_ws_config()),
            )
            .await;
            run(&task_shared, &id, info, ws, rx).await;
        } else {
            task_shared.with_sim(|sim, now| sim.media_hangup(now, &id, 1001));
        }
        lock(&task_shared.media_conns).remove(&id);
    });
    let mut r = response(101, "", Vec::new());
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if offers_media {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("media"),
        );
    }
    r
}

async fn run<S>(
    shared: &Arc<Shared>,
    id: &str,
    info: MediaConnectInfo,
    mut ws: WebSocketStream<S>,
    mut rx: mpsc::UnboundedReceiver<MediaSignal>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut model = AsteriskMedia::new(&info);
    model.release(shared.pretend.as_ref());
    if ws
        .send(Message::Text(model.media_start(&info).into()))
        .await
        .is_err()
    {
        shared.with_sim(|sim, now| sim.media_hangup(now, id, 1001));
        return;
    }
    shared.with_sim(|sim, now| sim.media_connect(now, id));
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.tick().await;
    let mut app_closed = false;
    let mut too_big = false;
    let mut close_with: Option<(u16, String)> = None;
    let mut hangup = false;
    'run: loop {
        tokio::select! {
            // Signals first: what the test or the simulator asked for before a message the
            // application sent afterwards is acted on first (a stall before a close).
            biased;
            signal = rx.recv() => match signal {
                Some(MediaSignal::Dtmf { digit, .. }) => model.dtmf(digit),
                Some(MediaSignal::CloseWith { code, reason, .. }) => {
                    close_with = Some((code, reason));
                    break 'run;
                }
                Some(MediaSignal::Stall { .. }) => {
                    // A network cut: nothing read or written until the channel goes.
                    while let Some(signal) = rx.recv().await {
                        if let MediaSignal::Close { .. } | MediaSignal::CloseWith { .. } = signal {
                            break;
                        }
                    }
                    break 'run;
                }
                Some(MediaSignal::Close { .. }) | None => break 'run,
                Some(MediaSignal::AudioSocketConnect { .. } | MediaSignal::WebSocketConnect { .. }) => {}
            },
            _ = ticker.tick() => {
                if let Some(frame) = model.tick() {
                    if ws.feed(Message::Binary(frame)).await.is_err() {
                        app_closed = true;
                        break 'run;
                    }
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => model.handle_text(t.as_str()),
                Some(Ok(Message::Binary(b))) if client_frame_len(b.len()) > MAX_FRAME => {
                    // Asterisk cannot read the frame: it closes with 1009 and hangs up.
                    shared.log(|| format!("media socket {id}: {}-byte message, too big", b.len()));
                    too_big = true;
                    break 'run;
                }
                Some(Ok(Message::Binary(b))) => model.handle_binary(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued the CLOSE answer: send it, as Asterisk does.
                    let _ = ws.flush().await;
                    app_closed = true;
                    break 'run;
                }
                Some(Err(_)) | None => {
                    app_closed = true;
                    break 'run;
                }
            },
        }
        while let Some(action) = model.next_action() {
            match action {
                Action::Text(t) => {
                    if ws.feed(Message::Text(t.into())).await.is_err() {
                        app_closed = true;
                        break 'run;
                    }
                }
                Action::Answer => {
                    shared.with_sim(|sim, now| sim.media_answer(now, id));
                }
                Action::Hangup => {
                    hangup = true;
                    break 'run;
                }
            }
        }
        if ws.flush().await.is_err() {
            app_closed = true;
            break;
        }
    }
    if app_closed {
        shared.with_sim(|sim, now| sim.media_hangup(now, id, 1001));
    } else {
        // The WebSocket close status is the hangup's tech_cause (as in Asterisk).
        let (code, reason, hangup_cause) = if too_big {
            (CloseCode::Size, String::new(), Some(1009))
        } else if let Some((code, reason)) = close_with {
            (CloseCode::from(code), reason, Some(i64::from(code)))
        } else if hangup {
            (CloseCode::Normal, String::new(), Some(1000))
        } else {
            // The channel is gone already (a hangup through ARI).
            (CloseCode::Normal, String::new(), None)
        };
        model.report.close_code = Some(code.into());
        if let Some(cause) = hangup_cause {
            shared.with_sim(|sim, now| sim.media_hangup_request(now, id, cause));
        }
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        // Let the application's close answer arrive, as Asterisk does (bounded: an
        // application that neither answers nor drops the connection).
        let reply = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(frame) = msg {
                    return Some(frame.map_or(1005, |f| u16::from(f.code)));
                }
            }
            None
        })
        .await;
        model.report.close_reply = reply.ok().flatten();
        // Asterisk asks for the hangup, ends Stasis (`ChannelLeftBridge`, `StasisEnd`: done
        // by `media_hangup_request`, or by the ARI hangup that sent `Close`), closes the
        // socket, then destroys the channel (recorded: `ChannelHangupRequest`, the close
        // and its answer, `ChannelDestroyed`): the application sees the close first, and
        // its answer cannot be a close of its own on the channel's end. (Nothing is left
        // to destroy when the channel went first, as with a channel it was bridged to.)
        shared.with_sim(|sim, now| sim.media_hangup_done(now, id));
    }
    shared.log(|| {
        format!(
            "media socket {id} closed: sent {} played {} (test signal {}) dropped {} xoff {}",
            model.report.frames_sent,
            model.report.frames_played,
            model.report.frames_played_test_signal,
            model.report.messages_dropped,
            model.report.xoff_sent
        )
    });
    lock(&shared.media_done).push(model.report);
}

/// The reports of closed media sockets, and the variables a test may want.
pub(crate) fn reports(shared: &Shared) -> Vec<MediaSessionReport> {
    lock(&shared.media_done).clone()
}

/// Starts the AudioSocket dialer: the simulated Asterisk connects to the application's TCP
/// address for each AudioSocket channel.
pub(crate) fn start(shared: &Arc<Shared>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    *lock(&shared.audiosocket_tx) = Some(tx);
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some(signal) = rx.recv().await {
            match signal {
                MediaSignal::AudioSocketConnect {
                    connection_id,
                    host,
                    channel_id,
                } => {
                    tokio::spawn(audiosocket_run(
                        shared.clone(),
                        connection_id,
                        host,
                        channel_id,
                    ));
                }
                MediaSignal::WebSocketConnect { connection_id, uri } => {
                    tokio::spawn(websocket_client_run(shared.clone(), connection_id, uri));
                }
                _ => {}
            }
        }
    });
}

/// Client mode: connects to the application's media WebSocket server (protocol `media`),
/// then runs the socket as in server mode. An unreachable application gets the channel
/// destroyed with cause 3.
async fn websocket_client_run(shared: Arc<Shared>, key: String, uri: String) {
    let mut hold = shared.media_hold.subscribe();
    if *hold.borrow() {
        shared
            .media_held
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = hold.wait_for(|held| !held).await;
        shared
            .media_held
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
    // The URI as the client object has it when dialing (B1: another call's `v()` may have
    // changed its parameters since this channel was dialed).
    let uri = shared
        .with_sim(|sim, _| sim.websocket_client_uri(&key))
        .and_then(Result::ok)
        .flatten()
        .unwrap_or(uri);
    let reserved = shared.with_sim(|sim, now| sim.media_reserve(now, &key));
    let Some(Ok(Ok(info))) = reserved else {
        return;
    };
    // `ws://user:password@host/…`: Asterisk sends the userinfo as Basic credentials (it
    // takes precedence over the entry's username/password).
    let (uri, authorization) = split_userinfo(&uri);
    let mut request = http::Request::get(&uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request
        .header(header::HOST, host_of(&uri))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(
            header::SEC_WEBSOCKET_KEY,
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, "media")
        .body(());
    let connected = match request {
        Ok(req) => tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async_with_config(req, Some(media_ws_config()), false),
        )
        .await
        .ok()
        .and_then(Result::ok),
        Err(_) => None,
    };
    let Some((ws, _)) = connected else {
        shared.log(|| format!("media client {key}: cannot connect to {uri}"));
        shared.with_sim(|sim, now| sim.media_unreachable(now, &key));
        return;
    };
    let (tx, rx) = mpsc::unbounded_channel();
    lock(&shared.media_conns).insert(key.clone(), tx);
    shared.log(|| format!("media client {key} connected to {uri} ({})", info.format));
    run(&shared, &key, info, ws, rx).await;
    lock(&shared.media_conns).remove(&key);
}

/// `uri` without its `user:password@`, and the `Basic …` header value made of it.
fn split_userinfo(uri: &str) -> (String, Option<String>) {
    use base64::Engine as _;
    let Some((scheme, rest)) = uri.split_once("://") else {
        return (uri.to_owned(), None);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..authority_end].rsplit_once('@') else {
        return (uri.to_owned(), None);
    };
    let basic = base64::engine::general_purpose::STANDARD.encode(userinfo);
    (
        format!("{scheme}://{host}{}", &rest[authority_end..]),
        Some(format!("Basic {basic}")),
    )
}

/// `host[:port]` of a `ws://` URI.
fn host_of(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or_default().to_owned()
}

/// Hands an AudioSocket connection to the dialer.
pub(crate) fn audiosocket_connect(shared: &Shared, signal: MediaSignal) {
    if let Some(tx) = lock(&shared.audiosocket_tx).as_ref() {
        let _ = tx.send(signal);
    }
}

fn parse_uuid(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        out[i] = std::str::from_utf8(pair)
            .ok()
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .unwrap_or(0);
    }
    out
}

fn audiosocket_message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(3 + payload.len());
    m.push(kind);
    m.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// One AudioSocket call: connect, UUID first, a slin frame of the test signal every 20 ms,
/// DTMF of bridged channels as kind 0x03; the application's audio is counted, its kind 0x00
/// (or any kind Asterisk does not accept, or EOF) hangs the channel up; the channel's end
/// closes TCP.
async fn audiosocket_run(shared: Arc<Shared>, uuid: String, host: String, channel_id: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = mpsc::unbounded_channel();
    lock(&shared.media_conns).insert(uuid.clone(), tx);
    let mut report = MediaSessionReport {
        connection_id: uuid.clone(),
        channel_id,
        format: "slin".to_owned(),
        ..MediaSessionReport::default()
    };
    let Ok(mut stream) = tokio::net::TcpStream::connect(&host).await else {
        shared.log(|| format!("AudioSocket {uuid}: cannot connect to {host}"));
        shared.with_sim(|sim, now| sim.audiosocket_hangup(now, &uuid));
        lock(&shared.media_conns).remove(&uuid);
        return;
    };
    let frame = test_frame("slin");
    let mut hang_up = stream
        .write_all(&audiosocket_message(0x01, &parse_uuid(&uuid)))
        .await
        .is_err();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.tick().await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !hang_up {
        tokio::select! {
            _ = ticker.tick() => {
                report.frames_sent += 1;
                if stream.write_all(&audiosocket_message(0x10, &frame)).await.is_err() {
                    hang_up = true;
                }
            }
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => hang_up = true,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    while buf.len() >= 3 {
                        let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
                        if buf.len() < 3 + len {
                            break;
                        }
                        let kind = buf[0];
                        let payload: Vec<u8> = buf.drain(..3 + len).skip(3).collect();
                        match kind {
                            0x10..=0x18 => {
                                report.messages_received += 1;
                                report.frames_played += 1;
                                report.frames_played_test_signal += u64::from(payload == frame);
                            }
                            // 0x00, or a kind Asterisk does not accept: the channel hangs up.
                            _ => hang_up = true,
                        }
                    }
                }
            },
            signal = rx.recv() => match signal {
                Some(MediaSignal::Dtmf { digit, .. }) => {
                    let mut d = [0u8; 4];
                    let digit = digit.encode_utf8(&mut d);
                    if stream.write_all(&audiosocket_message(0x03, digit.as_bytes())).await.is_err() {
                        hang_up = true;
                    }
                }
                _ => break,
            },
        }
    }
    if hang_up {
        shared.with_sim(|sim, now| sim.audiosocket_hangup(now, &uuid));
    }
    let _ = stream.shutdown().await;
    lock(&shared.media_conns).remove(&uuid);
    shared.log(|| {
        format!(
            "AudioSocket {uuid} closed: sent {} received {}",
            report.frames_sent, report.messages_received
        )
    });
    lock(&shared.media_done).push(report);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> AsteriskMedia {
        AsteriskMedia::new(&MediaConnectInfo {
            connection_id: "c1".into(),
            channel_id: "em-1".into(),
            channel_name: "WebSocket/INCOMING/0x1".into(),
            format: "ulaw".into(),
            optimal_frame_size: 160,
            json: false,
            auto_answer: true,
            passthrough: false,
            direction: "both".into(),
            variables: Default::default(),
        })
    }

    fn texts(m: &mut AsteriskMedia) -> Vec<String> {
        std::iter::from_fn(|| m.next_action())
            .filter_map(|a| match a {
                Action::Text(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn status(m: &mut AsteriskMedia) -> String {
        m.handle_text("GET_STATUS");
        texts(m).pop().unwrap_or_default()
    }

    /// `MEDIA_XON` as chan_websocket decides it (`dequeue_frame`): before the tick's frame is
    /// taken, so the queue holds 798 right after it as recorded (fixture
    /// `media/server-plain-*`: `MEDIA_XON`, then `STATUS queue_length:798`); the simulator
    /// took the frame first (799).
    #[test]
    fn xon_comes_before_the_ticks_frame_is_taken() {
        let mut m = model();
        m.handle_binary(&vec![0u8; 160 * 900]);
        assert_eq!(texts(&mut m), ["MEDIA_XOFF"]);
        assert!(status(&mut m)
            .contains("queue_length:900 xon_level:800 xoff_level:900 queue_full:true"));
        let mut ticks = 0;
        let xon = loop {
            m.tick();
            ticks += 1;
            let t = texts(&mut m);
            if !t.is_empty() {
                break t;
            }
            assert!(ticks < 200, "no MEDIA_XON");
        };
        assert_eq!(xon, ["MEDIA_XON"]);
        assert_eq!(
            status(&mut m),
            "STATUS channel_id:em-1 queue_length:798 xon_level:800 xoff_level:900 \
             queue_full:false bulk_media:false media_paused:false"
        );
    }

    /// `FLUSH_MEDIA` during XOFF: the queue is emptied but Asterisk's XOFF state stays
    /// (`queue_full:true`), and `MEDIA_XON` comes at the next tick of running playout:
    /// none while playout is paused, then the first tick after `CONTINUE_MEDIA`. (The
    /// simulator sent it while paused.)
    #[test]
    fn flush_during_xoff_brings_xon_at_the_next_tick_of_running_playout() {
        let mut m = model();
        m.handle_text("PAUSE_MEDIA");
        m.handle_binary(&vec![0u8; 160 * 950]);
        assert_eq!(texts(&mut m), ["MEDIA_XOFF"]);
        m.handle_text("FLUSH_MEDIA");
        assert_eq!(
            status(&mut m),
            "STATUS channel_id:em-1 queue_length:0 xon_level:800 xoff_level:900 \
             queue_full:true bulk_media:false media_paused:true"
        );
        for _ in 0..10 {
            m.tick();
        }
        assert!(texts(&mut m).is_empty(), "no MEDIA_XON while paused");
        m.handle_text("CONTINUE_MEDIA");
        m.tick();
        assert_eq!(texts(&mut m), ["MEDIA_XON"]);
        m.tick();
        assert!(texts(&mut m).is_empty(), "one MEDIA_XON");
        assert_eq!((m.report.xoff_sent, m.report.xon_sent), (1, 1));

        // Unpaused: the next tick.
        let mut m = model();
        m.handle_binary(&vec![0u8; 160 * 950]);
        assert_eq!(texts(&mut m), ["MEDIA_XOFF"]);
        m.handle_text("FLUSH_MEDIA");
        m.tick();
        assert_eq!(texts(&mut m), ["MEDIA_XON"]);
    }
}
