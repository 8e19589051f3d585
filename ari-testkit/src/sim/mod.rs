//! A stateful, sans-IO model of Asterisk as seen through ARI.
//!
//! [`Sim`] owns channels (Local pairs, simulated SIP phones, snoop and external-media
//! channels), bridges, playbacks, live and stored recordings, device states, global
//! variables and the registered Stasis applications with their subscriptions. The server
//! around it feeds it REST requests ([`Sim::handle_request`]), application connections,
//! and time ([`Sim::handle_timeout`]); after every input it collects the events produced
//! with [`Sim::drain_events`], each already addressed to one application.
//!
//! Behaviour follows what a real Asterisk (git master, ARI 12) emitted in the recorded
//! fixtures (`fixtures/asterisk-master`) and the scenarios restated from Asterisk's test
//! suite: payload shapes, event orders per application, routing (Stasis channels,
//! explicit subscriptions, bridges entered by an application's channels, `subscribeAll`),
//! and the status codes and `message` wording of errors.
//!
//! Time never comes from a clock: every entry point takes `now`, a [`Duration`] since the
//! server started, and timestamps are `SimConfig::wall_clock_base_ms + now`.
//!
//! # The run loop
//!
//! After every input (`handle_request`, `app_connected`, `place_call`, `handle_timeout` …)
//! drain [`Sim::drain_events`]; then sleep until [`Sim::poll_timeout`] and call
//! [`Sim::handle_timeout`] (a spurious or early call is a no-op; time never goes back).
//!
//! ```
//! use std::time::Duration;
//! use ari_testkit::sim::{PlaceCall, Sim, SimConfig, SimRequest};
//!
//! let mut sim = Sim::new(SimConfig::default());
//! let mut now = Duration::ZERO;
//! sim.app_connected(now, "ivr", false);
//! let mut call = PlaceCall::new("PJSIP/alice", "ivr");
//! call.dtmf = "1".to_string();
//! let chan = sim.place_call(now, call);
//! let segments = vec!["channels".to_string(), chan.clone(), "answer".to_string()];
//! let answer = SimRequest { method: "POST", segments: &segments, query: &[], body: None, read_only: false };
//! assert_eq!(sim.handle_request(now, &answer).status, 204);
//! let mut types = Vec::new();
//! loop {
//!     types.extend(sim.drain_events().into_iter().map(|o| o.event["type"].to_string()));
//!     match sim.poll_timeout() {
//!         Some(t) if t < Duration::from_secs(5) => { now = now.max(t); sim.handle_timeout(now); }
//!         _ => break,
//!     }
//! }
//! assert_eq!(types, ["\"StasisStart\"", "\"ChannelStateChange\"", "\"ChannelDtmfReceived\""]);
//! ```
//!
//! # Behaviour worth knowing
//!
//! * **Routing.** An application receives events for channels in its Stasis, channels it
//!   originated/created (both Local halves) or subscribed to, bridges its Stasis channels
//!   were added to (until removed through ARI), resources it subscribed to
//!   (`channel:`/`bridge:`/`endpoint:`/`deviceState:`, an empty id meaning all), and
//!   everything with `subscribeAll` — except `StasisStart`/`StasisEnd`, which go to the
//!   application itself only, and user events, which go to the named application. The
//!   Stasis-only subscription ends with `StasisEnd` (no `ChannelDestroyed` after it),
//!   exactly as in the recording. Event filters (`PUT applications/{app}/eventFilter`,
//!   body `{"allowed": […], "disallowed": […]}`) apply per application.
//! * **Local channels** come in `;1`/`;2` pairs (`channelId`, `otherChannelId` or
//!   `channelId;2`, else uniqueids `1795691627.N`). The `;2` half runs
//!   [`SimConfig::dialplan`] (NoOp, Answer — which waits up to 500 ms for media as
//!   `__ast_answer` does —, Wait, Playback, Set incl. `GLOBAL()`, `${…}`, `IF`/`$[…]`,
//!   Hangup, Echo, Stasis, UserEvent, SendDTMF, AMD, Goto, Ringing, Dial, Bridge,
//!   StasisBroadcast, the `h` extension). An unknown context/extension answers and stays
//!   up unless `unknown_extension_answers` is off (then both halves die with cause 0).
//! * **SIP**: [`Sim::place_call`] brings a ringing `PJSIP/…` call into an application;
//!   originating/dialing `PJSIP/…` rings for [`SimConfig::sip_answer_delay`] and
//!   answers. `UnicastRTP` channels come from `channels/externalMedia`.
//! * **Media**: playbacks queue per channel/bridge, take their length from
//!   [`SimConfig::media_durations`] (`silence/N` is N s, `digits:`/`number:` 0.6 s a
//!   character, `tone:` plays until stopped, `recording:` the stored duration); an unknown
//!   sound fails (PlaybackStarted, PlaybackFinished `failed`) unless
//!   `unknown_media_duration` is set. Recordings store a WAV of silence of the recorded
//!   length; with `maxSilenceSeconds` they report talking/silence durations from the
//!   prompts played toward the recorded party.
//!
//! Not modelled: audio itself (DTMF and "speech" are events and timers), `maxSilence`
//! auto-stop, mailboxes (404 like an Asterisk without `res_ari_mailboxes`), dynamic
//! configuration, external-media transport checks, ChannelTalking events, transfers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Map, Value};

mod dialplan;
mod rest;
mod time;

mod regex;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use dialplan::Dialplan;

/// Configuration of the simulated Asterisk.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// `asterisk_id` / `entity_id` carried by every event (a MAC-like string).
    pub asterisk_id: String,
    /// Wall-clock time, in milliseconds since the Unix epoch, at `now == 0`; all
    /// timestamps (`creationtime`, event `timestamp`) are derived from it.
    pub wall_clock_base_ms: u64,
    /// `system.version` reported by `GET asterisk/info`.
    pub version: String,
    /// Default channel language.
    pub language: String,
    /// Media durations by sound name without scheme (`hello-world`, `digits/1`,
    /// `silence/5` …). `silence/N` is N seconds unless listed.
    pub media_durations: BTreeMap<String, Duration>,
    /// Duration of a sound not in `media_durations`; `None` (default) makes such a
    /// playback fail like Asterisk does for a missing file (PlaybackStarted, then
    /// PlaybackFinished with state `failed`).
    pub unknown_media_duration: Option<Duration>,
    /// Dialplan in `extensions.conf` syntax, run by the `;2` half of Local channels and by
    /// channels continuing in the dialplan.
    pub dialplan: String,
    /// When a Local channel dials a context or extension the dialplan does not have:
    /// `true` (default) answers and keeps the channel up until hung up; `false` fails like
    /// Asterisk (both halves destroyed, cause 0).
    pub unknown_extension_answers: bool,
    /// How long a simulated SIP phone rings before answering an outbound call.
    pub sip_answer_delay: Duration,
    /// Duration reported in `duration_ms` of DTMF digits from callers.
    pub dtmf_duration_ms: u64,
    /// PJSIP endpoint resources known from the start (`alice` → `PJSIP/alice`).
    pub sip_endpoints: Vec<String>,
    /// Channel variables copied into every channel's `channelvars` (ari.conf `channelvars`).
    pub channelvars: Vec<String>,
    /// Recording formats that can be written.
    pub recording_formats: Vec<String>,
    /// With this many channels, new ones fail to allocate (originate answers 500
    /// `Allocation failed`, Dial() gives CHANUNAVAIL): stops runaway dialplans.
    pub max_channels: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        let mut media = BTreeMap::new();
        for (name, ms) in [
            ("hello-world", 2000u64),
            ("beep", 450),
            ("demo-congrats", 8000),
            ("demo-thanks", 2500),
            ("tt-monkeys", 9000),
            ("tt-weasels", 4000),
            ("tt-somethingwrong", 2500),
            ("vm-intro", 3000),
            ("vm-goodbye", 1000),
            ("goodbye", 800),
            ("conf-now-unmuted", 1200),
            ("conf-now-muted", 1200),
            ("pls-wait-connect-call", 2000),
            ("queue-periodic-announce", 3000),
            ("please-try-again", 1200),
            ("welcome", 1200),
            ("auth-thankyou", 1000),
            ("agent-pass", 1500),
            ("privacy-incorrect", 2000),
        ] {
            media.insert(name.to_string(), Duration::from_millis(ms));
        }
        for d in 0..=9 {
            media.insert(format!("digits/{d}"), Duration::from_millis(600));
        }
        for (name, ms) in [("digits/star", 600u64), ("digits/pound", 600)] {
            media.insert(name.to_string(), Duration::from_millis(ms));
        }
        SimConfig {
            asterisk_id: "02:fc:00:00:00:01".to_string(),
            wall_clock_base_ms: 1_795_691_627_914, // 2026-11-26T11:13:47.914Z
            version: "GIT-master-f0c1c1a7b7".to_string(),
            language: "en".to_string(),
            media_durations: media,
            unknown_media_duration: None,
            dialplan: String::new(),
            unknown_extension_answers: true,
            sip_answer_delay: Duration::from_secs(1),
            dtmf_duration_ms: 100,
            sip_endpoints: Vec::new(),
            channelvars: Vec::new(),
            recording_formats: ["wav", "gsm", "ulaw", "alaw", "sln", "g722", "slin", "wav49"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_channels: 50_000,
        }
    }
}

/// One REST request, already authenticated and parsed by the server.
#[derive(Debug, Clone, Copy)]
pub struct SimRequest<'a> {
    /// HTTP method (`GET`, `POST`, `PUT`, `DELETE`).
    pub method: &'a str,
    /// Path below `/ari/`, split on `/`, each segment percent-decoded.
    pub segments: &'a [String],
    /// Decoded query parameters, in order.
    pub query: &'a [(String, String)],
    /// JSON body, when one was sent.
    pub body: Option<&'a Value>,
    /// The user is read-only: writes answer 403 `Write access denied`.
    pub read_only: bool,
}

/// Answer to a [`SimRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimResponse {
    /// HTTP status.
    pub status: u16,
    /// Content type of `body` (`application/json`, `text/plain`, `audio/wav`, or empty for 204).
    pub content_type: &'static str,
    /// Body bytes (empty for 204).
    pub body: Vec<u8>,
}

impl SimResponse {
    /// 200 with a JSON body.
    pub fn json(status: u16, v: &Value) -> SimResponse {
        SimResponse {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }
    /// 204 No Content.
    pub fn no_content() -> SimResponse {
        SimResponse {
            status: 204,
            content_type: "",
            body: Vec::new(),
        }
    }
    /// A JSON error `{"message": ...}`.
    pub fn error(status: u16, message: &str) -> SimResponse {
        SimResponse::json(status, &json!({ "message": message }))
    }
    /// The plain-text 404 Asterisk gives for an unknown path.
    pub fn not_found_path() -> SimResponse {
        SimResponse {
            status: 404,
            content_type: "text/plain",
            body: b"404: Not Found".to_vec(),
        }
    }
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One event for one application.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The application (Stasis app name) the event is for.
    pub app: String,
    /// The event, with `application` set to `app`.
    pub event: Value,
}

/// A simulated inbound call placed into a Stasis application (see [`Sim::place_call`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceCall {
    /// `PJSIP/alice` (a simulated SIP phone) or `Local/exten@context` (a Local pair whose
    /// `;2` half enters the application).
    pub endpoint: String,
    /// Stasis application the call enters.
    pub app: String,
    /// Arguments of `Stasis(app,args…)`.
    pub args: Vec<String>,
    /// Channel id to use (default: a generated unique id).
    pub channel_id: Option<String>,
    /// Caller id name.
    pub caller_name: String,
    /// Caller id number.
    pub caller_number: String,
    /// Dialed extension shown in the channel's dialplan location.
    pub exten: String,
    /// Context shown in the channel's dialplan location.
    pub context: String,
    /// Digits the scripted caller presses once the call is answered.
    pub dtmf: String,
    /// Delay between answer and the first digit.
    pub dtmf_delay: Duration,
    /// Interval between digits.
    pub dtmf_interval: Duration,
    /// The caller hangs up this long after answer.
    pub hangup_after_answer: Option<Duration>,
    /// The caller gives up this long after placing the call if it was never answered.
    pub abandon_after: Option<Duration>,
}

impl PlaceCall {
    /// A call from `endpoint` into `app` with no arguments and no scripted caller.
    pub fn new(endpoint: &str, app: &str) -> PlaceCall {
        PlaceCall {
            endpoint: endpoint.to_string(),
            app: app.to_string(),
            args: Vec::new(),
            channel_id: None,
            caller_name: String::new(),
            caller_number: String::new(),
            exten: "s".to_string(),
            context: "default".to_string(),
            dtmf: String::new(),
            dtmf_delay: Duration::from_millis(500),
            dtmf_interval: Duration::from_millis(300),
            hangup_after_answer: None,
            abandon_after: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Internal model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tech {
    /// Local channel half (1 or 2).
    Local(u8),
    Sip,
    Snoop,
    UnicastRtp,
}

/// What a channel does once the far end answers (originate / dial).
#[derive(Debug, Clone)]
enum OnAnswer {
    Nothing,
    Stasis(String, Vec<String>),
    Dialplan(String, String, i64),
    /// Dialed by the dialplan Dial() of that channel: bridge the two.
    BridgeWith(String),
}

/// Where a channel's dialplan execution is waiting.
#[derive(Debug, Clone, PartialEq)]
enum Exec {
    /// Not running dialplan.
    Idle,
    /// Waiting for a timer to run the next priority.
    Waiting,
    /// Running an application that never returns by itself (Echo, MusicOnHold…).
    Parked,
    /// Inside Stasis (resumes at the next priority on continue).
    InStasis,
    /// In Dial() or Bridge(): resumes at the next priority when its basic bridge ends.
    InApp,
}

#[derive(Debug, Clone)]
struct Script {
    dtmf: String,
    dtmf_delay: Duration,
    dtmf_interval: Duration,
    hangup_after_answer: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Channel {
    id: String,
    name: String,
    tech: Tech,
    state: &'static str,
    protocol_id: String,
    caller: (String, String),
    connected: (String, String),
    accountcode: String,
    language: String,
    context: String,
    exten: String,
    priority: i64,
    app_name: String,
    app_data: String,
    /// Dialplan location restored after Stasis (`AppDial2` for originated channels).
    base_app: (String, String),
    creation_ms: u64,
    vars: BTreeMap<String, String>,
    /// Variables set with `report_events`: shown in `channelvars`.
    reported: BTreeSet<String>,
    linkedid: String,
    peeraccount: String,
    hold_intercept: bool,
    /// The channel ran dialplan (so it runs the `h` extension when it hangs up).
    ran_pbx: bool,
    /// Offered by StasisBroadcast and not claimed yet.
    broadcast_open: bool,
    /// The channel that dials this one (dialplan Dial(), ARI dial with `caller`).
    dialed_by: Option<String>,
    /// Bridge(…,x): hang up instead of returning to the dialplan when the bridge ends.
    hangup_after_bridge: bool,
    stasis: Option<(String, Vec<String>)>,
    bridge: Option<String>,
    peer: Option<String>,
    endpoint: Option<String>,
    exec: Exec,
    /// Generation for dialplan timers; bumped whenever execution is redirected.
    exec_gen: u64,
    on_answer: OnAnswer,
    /// Created with `channels/create` and not dialed yet.
    created_only: bool,
    /// Being dialed (Dial events are published with `peer` = this channel).
    dialing: Option<String>,
    script: Option<Script>,
    /// Current and queued playbacks on this channel.
    playbacks: VecDeque<String>,
    recording: Option<String>,
    /// Snoop channels spying on this one.
    snoops: Vec<String>,
    /// For a snoop: the spied channel.
    snoop_target: Option<String>,
    hanging_up: bool,
}

#[derive(Debug, Clone)]
struct Bridge {
    id: String,
    /// `stasis` (ARI) or `basic` (Dial/Bridge in the dialplan; dissolves below two members).
    class: &'static str,
    creator: String,
    /// A basic bridge losing its last members.
    dissolving: bool,
    technology: String,
    bridge_type: String,
    name: String,
    channels: Vec<String>,
    creation_ms: u64,
    video_mode: String,
    video_source: Option<String>,
    playbacks: VecDeque<String>,
    recording: Option<String>,
    vars: BTreeMap<String, String>,
    reported: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PbState {
    Queued,
    Playing,
    Paused,
}

#[derive(Debug, Clone)]
struct Playback {
    id: String,
    media: Vec<String>,
    index: usize,
    target: String,
    language: String,
    state: PbState,
    /// Total length of the current media, `None` for endless media (tones).
    length: Option<Duration>,
    /// Position in the current media at `since`.
    offset: Duration,
    since: Duration,
    skip: Duration,
    gen: u64,
    failed: bool,
}

#[derive(Debug, Clone)]
struct LiveRec {
    name: String,
    format: String,
    target: String,
    state: &'static str,
    started: Duration,
    /// Recorded time before the current running segment.
    accumulated: Duration,
    max_duration: Option<Duration>,
    /// maxSilenceSeconds: silence detection on, talking/silence durations reported.
    max_silence: Option<Duration>,
    terminate_on: String,
    gen: u64,
    muted: bool,
}

#[derive(Debug, Clone)]
struct StoredRec {
    format: String,
    duration_s: u64,
}

#[derive(Debug, Clone, Default)]
struct App {
    connected: bool,
    subscribe_all: bool,
    channels: BTreeSet<String>,
    bridges: BTreeSet<String>,
    /// Bridges this app follows because its Stasis channels were added to them.
    bridge_refs: BTreeMap<String, usize>,
    endpoints: BTreeSet<String>,
    devices: BTreeSet<String>,
    /// `channel:` / `bridge:` / `endpoint:` / `deviceState:` with an empty id: all of them.
    all_kinds: BTreeSet<String>,
    allowed: Vec<Value>,
    disallowed: Vec<Value>,
}

/// A resource an event concerns, for routing.
#[derive(Debug, Clone)]
enum Res {
    Chan(String),
    Bridge(String),
    Device(String),
}

#[derive(Debug, Clone)]
enum Timer {
    /// Run the next dialplan priority of a channel.
    Dialplan(String, u64),
    /// Current media of a playback ends.
    MediaEnd(String, u64),
    /// A live recording reaches its maximum duration.
    RecMax(String, u64),
    /// A DTMF digit arrives on a channel.
    Dtmf(String, char, u64),
    /// The simulated SIP phone answers.
    SipAnswer(String),
    /// The scripted caller hangs up.
    CallerHangup(String),
    /// The scripted caller abandons an unanswered call.
    CallerAbandon(String),
    /// Start dialplan / dial progress of a Local pair (deferred so the REST answer goes first).
    LocalStart(String),
    /// Nobody answered a dial in time.
    DialTimeout(String),
    /// A recording's start (after the beep).
    RecStart(String, u64),
}

/// The simulated Asterisk. See the module documentation.
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    dialplan: Dialplan,
    now: Duration,
    seq: u64,
    uid: u64,
    local_seq: u64,
    snoop_seq: u64,
    gen: u64,
    channels: BTreeMap<String, Channel>,
    /// Channels in creation order (GET channels lists in this order).
    chan_order: Vec<String>,
    bridges: BTreeMap<String, Bridge>,
    bridge_order: Vec<String>,
    playbacks: BTreeMap<String, Playback>,
    live: BTreeMap<String, LiveRec>,
    stored: BTreeMap<String, StoredRec>,
    apps: BTreeMap<String, App>,
    devices: BTreeMap<String, String>,
    globals: BTreeMap<String, String>,
    endpoints: BTreeSet<String>,
    /// name → (description, support level, running)
    modules: BTreeMap<String, (String, String, bool)>,
    log_channels: Vec<(String, String, String)>,
    timers: BTreeMap<(Duration, u64), Timer>,
    out: Vec<Outgoing>,
    /// When prompts carried speech: (playback id, target uri, from, to). Prompts have
    /// 250 ms of silence at each end; `silence/N` carries none.
    talk_log: VecDeque<(String, String, Duration, Duration)>,
}

fn cause_txt(cause: i64) -> &'static str {
    match cause {
        1 => "Unallocated (unassigned) number",
        3 => "No route to destination",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "User alerting, no answer",
        21 => "Call Rejected",
        26 => "Answered elsewhere",
        27 => "Destination out of order",
        28 => "Invalid number format (incomplete number)",
        31 => "Normal, unspecified",
        34 => "Circuit/channel congestion",
        38 => "Network out of order",
        58 => "Bearer capability not available",
        127 => "Interworking, unspecified",
        _ => "Unknown",
    }
}

impl Sim {
    /// A fresh Asterisk with no channels, bridges or applications.
    pub fn new(cfg: SimConfig) -> Sim {
        let dialplan = Dialplan::parse(&cfg.dialplan);
        let endpoints = cfg
            .sip_endpoints
            .iter()
            .map(|r| format!("PJSIP/{r}"))
            .collect();
        let mut modules = BTreeMap::new();
        for line in include_str!("modules.txt").lines() {
            let mut f = line.split('|');
            if let (Some(n), Some(d), Some(sl), Some(st)) = (f.next(), f.next(), f.next(), f.next())
            {
                modules.insert(
                    n.to_string(),
                    (d.to_string(), sl.to_string(), st == "Running"),
                );
            }
        }
        Sim {
            dialplan,
            now: Duration::ZERO,
            seq: 0,
            uid: 0,
            local_seq: 0,
            snoop_seq: 0,
            gen: 0,
            channels: BTreeMap::new(),
            chan_order: Vec::new(),
            bridges: BTreeMap::new(),
            bridge_order: Vec::new(),
            playbacks: BTreeMap::new(),
            live: BTreeMap::new(),
            stored: BTreeMap::new(),
            apps: BTreeMap::new(),
            devices: BTreeMap::new(),
            globals: BTreeMap::new(),
            endpoints,
            modules,
            log_channels: vec![
                (
                    "/var/log/asterisk/messages.log".to_string(),
                    "File".to_string(),
                    "NOTICE WARNING ERROR ".to_string(),
                ),
                (
                    String::new(),
                    "Console".to_string(),
                    "NOTICE WARNING ERROR VERBOSE ".to_string(),
                ),
            ],
            timers: BTreeMap::new(),
            out: Vec::new(),
            talk_log: VecDeque::new(),
            cfg,
        }
    }

    /// The configuration this simulation runs with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Ids of the channels that currently exist, in creation order.
    pub fn channel_ids(&self) -> Vec<String> {
        self.chan_order.clone()
    }

    /// Ids of the bridges that currently exist, in creation order.
    pub fn bridge_ids(&self) -> Vec<String> {
        self.bridge_order.clone()
    }

    /// Whether `app` is registered and connected.
    pub fn app_is_connected(&self, app: &str) -> bool {
        self.apps.get(app).is_some_and(|a| a.connected)
    }

    /// An application connected its events WebSocket (`app=…&subscribeAll=…`): it is
    /// registered (or re-activated) and receives events from now on. Re-registering an
    /// already connected name keeps its subscriptions; the server is the one that tells
    /// the previous connection with `ApplicationReplaced`.
    pub fn app_connected(&mut self, now: Duration, app: &str, subscribe_all: bool) {
        self.advance(now);
        let a = self.apps.entry(app.to_string()).or_default();
        a.connected = true;
        a.subscribe_all = subscribe_all;
    }

    /// An application's WebSocket closed: it is unregistered and gets no more events.
    /// Channels still in its Stasis stay there (as in Asterisk) until hung up.
    pub fn app_disconnected(&mut self, now: Duration, app: &str) {
        self.advance(now);
        let in_use = self
            .channels
            .values()
            .any(|c| c.stasis.as_ref().is_some_and(|(a, _)| a == app));
        if in_use {
            if let Some(a) = self.apps.get_mut(app) {
                a.connected = false;
            }
        } else {
            self.apps.remove(app);
        }
    }

    /// When [`Sim::handle_timeout`] should next be called, if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(d, _)| *d)
    }

    /// Runs everything scheduled at or before `now` (media ends, dialplan waits, DTMF of
    /// scripted callers, recordings reaching their maximum duration …).
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        let mut guard = 0u32;
        while let Some((&key, _)) = self.timers.iter().next() {
            if key.0 > now || guard > 100_000 {
                break;
            }
            guard += 1;
            let Some(t) = self.timers.remove(&key) else {
                break;
            };
            self.now = key.0.max(self.now);
            self.fire(t);
        }
        self.now = now.max(self.now);
    }

    /// Events produced since the last call, in order, one per application.
    pub fn drain_events(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.out)
    }

    /// Places a simulated inbound call into `call.app` and returns the id of the channel
    /// that enters Stasis. A SIP call (`PJSIP/alice`) arrives ringing (state `Ring`) and
    /// waits for the application to answer; a `Local/…` call creates both halves and puts
    /// `;2` into Stasis. The scripted caller then presses `call.dtmf` and hangs up as told.
    pub fn place_call(&mut self, now: Duration, call: PlaceCall) -> String {
        self.advance(now);
        let script = Script {
            dtmf: call.dtmf.clone(),
            dtmf_delay: call.dtmf_delay,
            dtmf_interval: call.dtmf_interval,
            hangup_after_answer: call.hangup_after_answer,
        };
        let id = if let Some(rest) = call.endpoint.strip_prefix("Local/") {
            let (exten, ctx) = match rest.split_once('@') {
                Some((e, c)) => (e.to_string(), c.split('/').next().unwrap_or("").to_string()),
                None => (rest.to_string(), "default".to_string()),
            };
            let id1 = call.channel_id.clone().unwrap_or_else(|| self.next_uid());
            let id2 = self.next_uid();
            self.make_local_pair(&id1, &id2, &exten, &ctx, None);
            for id in [&id1, &id2] {
                if let Some(c) = self.channels.get_mut(id.as_str()) {
                    c.caller = (call.caller_name.clone(), call.caller_number.clone());
                    c.base_app = (String::new(), String::new());
                }
            }
            self.emit_created(&id1);
            self.emit_created(&id2);
            if let Some(c) = self.channels.get_mut(&id2) {
                c.script = Some(script);
                c.state = "Ring";
            }
            self.enter_stasis(&id2, &call.app, call.args.clone());
            id2
        } else {
            let resource = call
                .endpoint
                .split_once('/')
                .map(|(_, r)| r.to_string())
                .unwrap_or_else(|| call.endpoint.clone());
            let tech_name = call
                .endpoint
                .split_once('/')
                .map(|(t, _)| t.to_string())
                .unwrap_or_else(|| "PJSIP".to_string());
            let id = call.channel_id.clone().unwrap_or_else(|| self.next_uid());
            let mut c = self.new_sip_channel(&id, &format!("{tech_name}/{resource}"), "Ring");
            c.caller = (call.caller_name.clone(), call.caller_number.clone());
            c.context = call.context.clone();
            c.exten = call.exten.clone();
            c.script = Some(script);
            self.insert_channel(c);
            self.emit_created(&id);
            self.announce_stasis(&id, &call.app, &call.args);
            self.enter_stasis(&id, &call.app, call.args.clone());
            id
        };
        if let Some(d) = call.abandon_after {
            self.schedule(d, Timer::CallerAbandon(id.clone()));
        }
        id
    }

    /// DTMF pressed by the party on `channel_id` (digits `0-9*#A-D`), received by the
    /// channel one after the other (ChannelDtmfReceived with `duration_ms`).
    pub fn send_dtmf(
        &mut self,
        now: Duration,
        channel_id: &str,
        digits: &str,
    ) -> Result<(), String> {
        self.advance(now);
        if !self.channels.contains_key(channel_id) {
            return Err(format!("channel {channel_id} not found"));
        }
        if let Some(bad) = digits.chars().find(|c| !is_dtmf(*c)) {
            return Err(format!("invalid DTMF digit {bad:?}"));
        }
        let step = Duration::from_millis(self.cfg.dtmf_duration_ms.saturating_add(100));
        for (i, d) in digits.chars().enumerate() {
            let at = Duration::from_millis(self.cfg.dtmf_duration_ms)
                .saturating_add(step.saturating_mul(i.min(u32::MAX as usize) as u32));
            self.schedule(
                at,
                Timer::Dtmf(channel_id.to_string(), d, self.cfg.dtmf_duration_ms),
            );
        }
        Ok(())
    }

    /// The party on `channel_id` hangs up (cause 16, Normal Clearing).
    pub fn hangup(&mut self, now: Duration, channel_id: &str) -> Result<(), String> {
        self.advance(now);
        if !self.channels.contains_key(channel_id) {
            return Err(format!("channel {channel_id} not found"));
        }
        self.remote_hangup(channel_id, 16);
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // time, ids, timers
    // -----------------------------------------------------------------------------------

    fn advance(&mut self, now: Duration) {
        if now > self.now {
            self.now = now;
        }
    }

    fn wall_ms(&self) -> u64 {
        self.cfg
            .wall_clock_base_ms
            .saturating_add(self.now.as_millis() as u64)
    }

    fn ts(&self) -> String {
        time::format_ms(self.wall_ms())
    }

    fn next_uid(&mut self) -> String {
        let id = format!("{}.{}", self.wall_ms() / 1000, self.uid);
        self.uid += 1;
        id
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    fn schedule(&mut self, after: Duration, t: Timer) {
        self.seq += 1;
        self.timers
            .insert((self.now.saturating_add(after), self.seq), t);
    }

    fn fire(&mut self, t: Timer) {
        match t {
            Timer::Dialplan(id, g) => {
                if self
                    .channels
                    .get(&id)
                    .is_some_and(|c| c.exec_gen == g && !c.hanging_up)
                {
                    self.advance_priority(&id);
                    self.run_dialplan(&id);
                }
            }
            Timer::MediaEnd(pb, g) => {
                if self.playbacks.get(&pb).is_some_and(|p| p.gen == g) {
                    self.media_done(&pb);
                }
            }
            Timer::RecMax(name, g) => {
                if self.live.get(&name).is_some_and(|r| r.gen == g) {
                    self.finish_recording(&name, "done");
                }
            }
            Timer::RecStart(name, g) => {
                if self.live.get(&name).is_some_and(|r| r.gen == g) {
                    self.recording_started(&name);
                }
            }
            Timer::Dtmf(id, d, dur) => self.dtmf_received(&id, d, dur),
            Timer::SipAnswer(id) => {
                if self
                    .channels
                    .get(&id)
                    .is_some_and(|c| c.state != "Up" && !c.hanging_up)
                {
                    self.answer(&id);
                }
            }
            Timer::CallerHangup(id) => {
                if self.channels.contains_key(&id) {
                    self.remote_hangup(&id, 16);
                }
            }
            Timer::CallerAbandon(id) => {
                if self.channels.get(&id).is_some_and(|c| c.state != "Up") {
                    self.remote_hangup(&id, 16);
                }
            }
            Timer::LocalStart(id) => self.local_start(&id),
            Timer::DialTimeout(id) => {
                let ringing = self
                    .channels
                    .get(&id)
                    .is_some_and(|c| c.dialing.is_some() && c.state != "Up" && !c.hanging_up);
                if ringing {
                    self.emit_dial(&id, "NOANSWER");
                    if let Some(c) = self.channels.get_mut(&id) {
                        c.dialing = None;
                    }
                    let caller = self.channels.get(&id).and_then(|c| c.dialed_by.clone());
                    self.remote_hangup(&id, 19);
                    if let Some(x) = caller {
                        self.resume_after_app(&x, "NOANSWER");
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // JSON
    // -----------------------------------------------------------------------------------

    fn chan_json(&self, id: &str) -> Value {
        let Some(c) = self.channels.get(id) else {
            return Value::Null;
        };
        let mut v = json!({
            "id": c.id,
            "name": c.name,
            "state": c.state,
            "protocol_id": c.protocol_id,
            "caller": {"name": c.caller.0, "number": c.caller.1},
            "connected": {"name": c.connected.0, "number": c.connected.1},
            "accountcode": c.accountcode,
            "dialplan": {
                "context": c.context,
                "exten": c.exten,
                "priority": c.priority,
                "app_name": c.app_name,
                "app_data": c.app_data,
            },
            "creationtime": time::format_ms(c.creation_ms),
            "language": c.language,
        });
        if !self.cfg.channelvars.is_empty() || !c.reported.is_empty() {
            let mut cv = Map::new();
            for n in self.cfg.channelvars.iter().chain(c.reported.iter()) {
                let val = self.read_chan_var(c, n).unwrap_or_default();
                cv.insert(n.clone(), Value::String(val));
            }
            v["channelvars"] = Value::Object(cv);
        }
        v
    }

    fn bridge_json(&self, id: &str) -> Value {
        let Some(b) = self.bridges.get(id) else {
            return Value::Null;
        };
        let mut v = json!({
            "id": b.id,
            "technology": b.technology,
            "bridge_type": b.bridge_type,
            "bridge_class": b.class,
            "creator": b.creator,
            "name": b.name,
            "channels": b.channels,
            "creationtime": time::format_ms(b.creation_ms),
            "video_mode": b.video_mode,
        });
        if let Some(s) = &b.video_source {
            v["video_source_id"] = json!(s);
        }
        if !b.reported.is_empty() {
            let m: Map<String, Value> = b
                .reported
                .iter()
                .map(|k| (k.clone(), json!(b.vars.get(k).cloned().unwrap_or_default())))
                .collect();
            v["bridgevars"] = Value::Object(m);
        }
        v
    }

    fn playback_json(&self, id: &str) -> Value {
        let Some(p) = self.playbacks.get(id) else {
            return Value::Null;
        };
        let mut v = json!({
            "id": p.id,
            "media_uri": p.media.get(p.index).cloned().unwrap_or_default(),
        });
        if let Some(n) = p.media.get(p.index + 1) {
            v["next_media_uri"] = json!(n);
        }
        v["target_uri"] = json!(p.target);
        v["language"] = json!(p.language);
        v["state"] = json!(match p.state {
            PbState::Queued => "queued",
            PbState::Playing => "playing",
            PbState::Paused => "paused",
        });
        v
    }

    fn live_json(&self, name: &str) -> Value {
        let Some(r) = self.live.get(name) else {
            return Value::Null;
        };
        json!({"name": r.name, "format": r.format, "state": r.state, "target_uri": r.target})
    }

    fn app_json(&self, name: &str) -> Value {
        let Some(a) = self.apps.get(name) else {
            return Value::Null;
        };
        if a.subscribe_all {
            return json!({
                "name": name,
                "channel_ids": ["__AST_CHANNEL_ALL_TOPIC"],
                "bridge_ids": ["__AST_BRIDGE_ALL_TOPIC"],
                "endpoint_ids": ["__AST_ENDPOINT_ALL_TOPIC"],
                "device_names": ["__AST_DEVICE_STATE_ALL_TOPIC"],
                "events_allowed": a.allowed,
                "events_disallowed": a.disallowed,
            });
        }
        let mut chans: BTreeSet<String> = a.channels.clone();
        for c in self.channels.values() {
            if c.stasis.as_ref().is_some_and(|(s, _)| s == name) {
                chans.insert(c.id.clone());
            }
        }
        json!({
            "name": name,
            "channel_ids": chans.into_iter().collect::<Vec<_>>(),
            "bridge_ids": a
                .bridges
                .iter()
                .chain(a.bridge_refs.iter().filter(|(_, n)| **n > 0).map(|(b, _)| b))
                .collect::<BTreeSet<_>>(),
            "endpoint_ids": a.endpoints.iter().collect::<Vec<_>>(),
            "device_names": a.devices.iter().collect::<Vec<_>>(),
            "events_allowed": a.allowed,
            "events_disallowed": a.disallowed,
        })
    }

    fn endpoint_json(&self, ep: &str) -> Value {
        let (tech, res) = ep.split_once('/').unwrap_or((ep, ""));
        let ids: Vec<&String> = self
            .chan_order
            .iter()
            .filter(|id| {
                self.channels
                    .get(id.as_str())
                    .is_some_and(|c| c.endpoint.as_deref() == Some(ep))
            })
            .collect();
        json!({"technology": tech, "resource": res, "state": "online", "channel_ids": ids})
    }

    // -----------------------------------------------------------------------------------
    // Event emission and routing
    // -----------------------------------------------------------------------------------

    fn event(&self, ty: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".to_string(), json!(ty));
        m.insert("timestamp".to_string(), json!(self.ts()));
        m
    }

    /// Emits `ev` (type + fields) to every application subscribed to one of `res`, and
    /// to every `subscribeAll` application.
    fn emit(&mut self, mut ev: Map<String, Value>, res: &[Res]) {
        ev.insert("asterisk_id".to_string(), json!(self.cfg.asterisk_id));
        let targets: Vec<String> = self
            .apps
            .iter()
            .filter(|(name, a)| a.connected && (a.subscribe_all || self.app_sees(name, a, res)))
            .map(|(n, _)| n.clone())
            .collect();
        for t in targets {
            self.deliver(&t, ev.clone());
        }
    }

    /// Delivers one event to one application, through its event filter.
    fn deliver(&mut self, app: &str, mut ev: Map<String, Value>) {
        let Some(a) = self.apps.get(app) else { return };
        if !a.connected {
            return;
        }
        ev.insert("application".to_string(), json!(app));
        if !ev.contains_key("asterisk_id") {
            ev.insert("asterisk_id".to_string(), json!(self.cfg.asterisk_id));
        }
        let v = Value::Object(ev);
        let matches = |f: &Value| filter_matches(f, &v);
        if !a.allowed.is_empty() && !a.allowed.iter().any(matches) {
            return;
        }
        if a.disallowed.iter().any(matches) {
            return;
        }
        self.out.push(Outgoing {
            app: app.to_string(),
            event: v,
        });
    }

    fn app_sees(&self, name: &str, a: &App, res: &[Res]) -> bool {
        res.iter().any(|r| match r {
            Res::Chan(id) => {
                a.all_kinds.contains("channel")
                    || a.channels.contains(id)
                    || self.channels.get(id).is_some_and(|c| {
                        c.stasis.as_ref().is_some_and(|(s, _)| s == name)
                            || c.endpoint.as_ref().is_some_and(|e| a.endpoints.contains(e))
                    })
            }
            Res::Bridge(id) => {
                a.all_kinds.contains("bridge")
                    || a.bridges.contains(id)
                    || a.bridge_refs.get(id).is_some_and(|n| *n > 0)
            }
            Res::Device(d) => a.all_kinds.contains("deviceState") || a.devices.contains(d),
        })
    }

    fn chan_event(&mut self, ty: &str, id: &str, extra: Value) {
        let mut ev = self.event(ty);
        if let Value::Object(m) = extra {
            ev.extend(m);
        }
        ev.insert("channel".to_string(), self.chan_json(id));
        self.emit(ev, &[Res::Chan(id.to_string())]);
    }

    fn emit_created(&mut self, id: &str) {
        self.chan_event("ChannelCreated", id, json!({}));
    }

    fn emit_dialplan(&mut self, id: &str) {
        let (app, data) = match self.channels.get(id) {
            Some(c) => (c.app_name.clone(), c.app_data.clone()),
            None => return,
        };
        self.chan_event(
            "ChannelDialplan",
            id,
            json!({"dialplan_app": app, "dialplan_app_data": data}),
        );
    }

    fn emit_state(&mut self, id: &str) {
        self.chan_event("ChannelStateChange", id, json!({}));
    }

    fn emit_varset(&mut self, id: Option<&str>, var: &str, value: &str) {
        match id {
            Some(id) => self.chan_event(
                "ChannelVarset",
                id,
                json!({"variable": var, "value": value}),
            ),
            None => {
                let mut ev = self.event("ChannelVarset");
                ev.insert("variable".to_string(), json!(var));
                ev.insert("value".to_string(), json!(value));
                self.emit(ev, &[]);
            }
        }
    }

    fn set_chan_var(&mut self, id: &str, var: &str, value: &str) {
        match var {
            "CALLERID(name)" | "CALLERID(num)" | "CALLERID(number)" | "CALLERID(all)" => {
                if let Some(c) = self.channels.get_mut(id) {
                    match var {
                        "CALLERID(name)" => c.caller.0 = value.to_string(),
                        "CALLERID(all)" => {
                            let (n, num) = parse_callerid(value);
                            c.caller = (n, num);
                        }
                        _ => c.caller.1 = value.to_string(),
                    }
                }
                self.chan_event(
                    "ChannelCallerId",
                    id,
                    json!({"caller_presentation": 0, "caller_presentation_txt": "Presentation Allowed, Not Screened"}),
                );
            }
            "CHANNEL(accountcode)" => {
                if let Some(c) = self.channels.get_mut(id) {
                    c.accountcode = value.to_string();
                }
            }
            "HOLD_INTERCEPT(set)" | "HOLD_INTERCEPT(remove)" => {
                if let Some(c) = self.channels.get_mut(id) {
                    c.hold_intercept = var.ends_with("(set)");
                }
            }
            "CONNECTEDLINE(name)"
            | "CONNECTEDLINE(num)"
            | "CONNECTEDLINE(number)"
            | "CONNECTEDLINE(all)" => {
                if let Some(c) = self.channels.get_mut(id) {
                    match var {
                        "CONNECTEDLINE(name)" => c.connected.0 = value.to_string(),
                        "CONNECTEDLINE(all)" => c.connected = parse_callerid(value),
                        _ => c.connected.1 = value.to_string(),
                    }
                }
                self.chan_event("ChannelConnectedLine", id, json!({}));
            }
            _ => {
                if let Some(g) = var
                    .strip_prefix("GLOBAL(")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    self.globals.insert(g.to_string(), value.to_string());
                    self.emit_varset(None, g, value);
                    return;
                }
                if let Some(c) = self.channels.get_mut(id) {
                    c.vars.insert(var.to_string(), value.to_string());
                }
                self.emit_varset(Some(id), var, value);
            }
        }
    }

    fn read_chan_var(&self, c: &Channel, var: &str) -> Option<String> {
        match var {
            "CALLERID(name)" => Some(c.caller.0.clone()),
            "CALLERID(num)" | "CALLERID(number)" => Some(c.caller.1.clone()),
            "CALLERID(all)" => Some(format!("\"{}\" <{}>", c.caller.0, c.caller.1)),
            "CONNECTEDLINE(name)" => Some(c.connected.0.clone()),
            "CONNECTEDLINE(num)" => Some(c.connected.1.clone()),
            "CHANNEL(name)" | "CHANNEL" => Some(c.name.clone()),
            "CHANNEL(language)" => Some(c.language.clone()),
            "CHANNEL(state)" => Some(c.state.to_string()),
            "UNIQUEID" | "CHANNEL(uniqueid)" => Some(c.id.clone()),
            "CHANNEL(linkedid)" => Some(c.linkedid.clone()),
            "CHANNEL(accountcode)" => Some(c.accountcode.clone()),
            "CHANNEL(peeraccount)" => Some(c.peeraccount.clone()),
            "CONNECTEDLINE(all)" => Some(format!("\"{}\" <{}>", c.connected.0, c.connected.1)),
            "EXTEN" => Some(c.exten.clone()),
            "CONTEXT" => Some(c.context.clone()),
            "PRIORITY" => Some(c.priority.to_string()),
            _ => {
                if let Some(g) = var
                    .strip_prefix("GLOBAL(")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    return self.globals.get(g).cloned();
                }
                c.vars
                    .get(var)
                    .cloned()
                    .or_else(|| self.globals.get(var).cloned())
            }
        }
    }

    /// `${...}` substitution for dialplan application data.
    fn substitute(&self, id: &str, data: &str) -> String {
        let Some(c) = self.channels.get(id) else {
            return data.to_string();
        };
        let mut out = String::new();
        let mut rest = data;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let mut depth = 1;
            let mut end = None;
            for (j, ch) in after.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                out.push_str(&rest[i..]);
                return out;
            };
            let name = eval_brackets(&self.substitute(id, &after[..end]));
            let if_val = name
                .strip_prefix("IF(")
                .and_then(|x| x.strip_suffix(')'))
                .map(|x| {
                    let (cond, rest) = x.split_once('?').unwrap_or((x, ""));
                    let (a, b) = rest.split_once(':').unwrap_or((rest, ""));
                    let t = cond.trim();
                    if !t.is_empty() && t != "0" {
                        a.to_string()
                    } else {
                        b.to_string()
                    }
                });
            let val = if let Some(v) = if_val {
                v
            } else {
                match name
                    .strip_prefix("SHELL(")
                    .and_then(|x| x.strip_suffix(')'))
                {
                    // The only shell the simulation runs: `echo [-n] text`.
                    Some(cmd) => match cmd.strip_prefix("echo -n ") {
                        Some(t) => t.to_string(),
                        None => cmd
                            .strip_prefix("echo ")
                            .map(|t| format!("{t}\n"))
                            .unwrap_or_default(),
                    },
                    None => self.read_chan_var(c, &name).unwrap_or_default(),
                }
            };
            out.push_str(&val);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        eval_brackets(&out)
    }

    // -----------------------------------------------------------------------------------
    // Channels
    // -----------------------------------------------------------------------------------

    fn new_channel(&self, id: &str, name: &str, tech: Tech, state: &'static str) -> Channel {
        Channel {
            id: id.to_string(),
            name: name.to_string(),
            tech,
            state,
            protocol_id: String::new(),
            caller: (String::new(), String::new()),
            connected: (String::new(), String::new()),
            accountcode: String::new(),
            language: self.cfg.language.clone(),
            context: "default".to_string(),
            exten: "s".to_string(),
            priority: 1,
            app_name: String::new(),
            app_data: String::new(),
            base_app: (String::new(), String::new()),
            creation_ms: self.wall_ms(),
            vars: BTreeMap::new(),
            reported: BTreeSet::new(),
            linkedid: id.to_string(),
            peeraccount: String::new(),
            hold_intercept: false,
            ran_pbx: false,
            broadcast_open: false,
            dialed_by: None,
            hangup_after_bridge: false,
            stasis: None,
            bridge: None,
            peer: None,
            endpoint: None,
            exec: Exec::Idle,
            exec_gen: 0,
            on_answer: OnAnswer::Nothing,
            created_only: false,
            dialing: None,
            script: None,
            playbacks: VecDeque::new(),
            recording: None,
            snoops: Vec::new(),
            snoop_target: None,
            hanging_up: false,
        }
    }

    /// A channel of the simulated SIP phone `endpoint` (`PJSIP/alice`), which becomes known.
    fn new_sip_channel(&mut self, id: &str, endpoint: &str, state: &'static str) -> Channel {
        self.endpoints.insert(endpoint.to_string());
        self.local_seq += 1;
        let name = format!("{endpoint}-{:08x}", self.local_seq);
        let mut c = self.new_channel(id, &name, Tech::Sip, state);
        c.endpoint = Some(endpoint.to_string());
        c.protocol_id = format!(
            "{:016x}@127.0.0.1",
            self.local_seq.wrapping_mul(0x9e37_79b9)
        );
        c
    }

    /// The channel's dialplan location becomes `Stasis(app,args…)` (ChannelDialplan).
    fn announce_stasis(&mut self, id: &str, app: &str, args: &[String]) {
        self.set_dialplan_app(id, "Stasis", &stasis_app_data(app, args));
        self.emit_dialplan(id);
    }

    fn insert_channel(&mut self, c: Channel) {
        self.chan_order.push(c.id.clone());
        self.channels.insert(c.id.clone(), c);
    }

    fn set_dialplan_app(&mut self, id: &str, app: &str, data: &str) {
        if let Some(c) = self.channels.get_mut(id) {
            c.app_name = app.to_string();
            c.app_data = data.to_string();
        }
    }

    /// Creates both halves of `Local/exten@ctx` (not yet announced).
    fn make_local_pair(
        &mut self,
        id1: &str,
        id2: &str,
        exten: &str,
        ctx: &str,
        _app: Option<&str>,
    ) {
        self.local_seq += 1;
        let base = format!("Local/{exten}@{ctx}-{:08x}", self.local_seq);
        let mut c1 = self.new_channel(id1, &format!("{base};1"), Tech::Local(1), "Down");
        let mut c2 = self.new_channel(id2, &format!("{base};2"), Tech::Local(2), "Ring");
        for c in [&mut c1, &mut c2] {
            c.context = ctx.to_string();
            c.exten = exten.to_string();
        }
        c1.peer = Some(id2.to_string());
        c2.peer = Some(id1.to_string());
        c2.linkedid = id1.to_string();
        c1.endpoint = Some(format!("Local/{exten}@{ctx}"));
        self.insert_channel(c1);
        self.insert_channel(c2);
    }

    /// The `;2` half starts its dialplan; the `;1` half is being dialed.
    fn local_start(&mut self, id1: &str) {
        let Some(id2) = self.channels.get(id1).and_then(|c| c.peer.clone()) else {
            return;
        };
        let (ctx, exten) = match self.channels.get(&id2) {
            Some(c) => (c.context.clone(), c.exten.clone()),
            None => return,
        };
        let dialstring = format!("{exten}@{ctx}");
        let exists = self.dialplan.resolve_exten(&ctx, &exten).is_some();
        if exists || self.cfg.unknown_extension_answers {
            if let Some(c) = self.channels.get_mut(id1) {
                c.dialing = Some(dialstring.clone());
            }
            self.emit_dial(id1, "");
        }
        if exists {
            if let Some(c) = self.channels.get_mut(&id2) {
                c.priority = 1;
            }
            self.run_dialplan(&id2);
        } else if self.cfg.unknown_extension_answers {
            // A Local channel into an unknown context answers and stays up.
            self.set_dialplan_app(&id2, "Answer", "");
            self.emit_dialplan(&id2);
            self.answer(&id2);
            if self.channels.contains_key(&id2) {
                self.set_dialplan_app(&id2, "Wait", "");
                if let Some(c) = self.channels.get_mut(&id2) {
                    c.exec = Exec::Parked;
                }
            }
        } else {
            // Real Asterisk: no such extension, the pair is torn down and the Local device
            // reads INVALID. A created channel waiting in Stasis leaves it first and is
            // destroyed with cause 16; an originated one goes with cause 0.
            let device = format!("Local/{exten}@{ctx}");
            let in_stasis = self.channels.get(id1).is_some_and(|c| c.stasis.is_some());
            if in_stasis {
                // the failed half inherits the Stasis variables before it goes
                self.emit_varset(Some(&id2), "STASISSTATUS", "");
                self.leave_stasis(id1);
                self.destroy_quiet(&id2, 0);
                self.destroy_quiet(id1, 16);
                self.device_state_named(&device, "INVALID");
                self.device_state_named(&device, "INVALID");
            } else {
                self.destroy_quiet(&id2, 0);
                self.device_state_named(&device, "INVALID");
                self.destroy_quiet(id1, 0);
                self.device_state_named(&device, "INVALID");
            }
        }
    }

    /// Ids of the channels in bridge `b` (none if it does not exist).
    fn members(&self, b: &str) -> Vec<String> {
        self.bridges
            .get(b)
            .map(|br| br.channels.clone())
            .unwrap_or_default()
    }

    fn device_state_named(&mut self, name: &str, state: &str) {
        let mut ev = self.event("DeviceStateChanged");
        ev.insert(
            "device_state".to_string(),
            json!({"name": name, "state": state}),
        );
        self.emit(ev, &[Res::Device(name.to_string())]);
    }

    fn emit_dial(&mut self, peer: &str, status: &str) {
        let Some(ds) = self.channels.get(peer).and_then(|c| c.dialing.clone()) else {
            return;
        };
        let caller = self
            .channels
            .get(peer)
            .and_then(|c| c.dialed_by.clone())
            .filter(|c| self.channels.contains_key(c));
        let mut ev = self.event("Dial");
        ev.insert("dialstatus".to_string(), json!(status));
        ev.insert("forward".to_string(), json!(""));
        ev.insert("dialstring".to_string(), json!(ds));
        let mut res = vec![Res::Chan(peer.to_string())];
        if let Some(c) = caller {
            ev.insert("caller".to_string(), self.chan_json(&c));
            res.push(Res::Chan(c));
        }
        ev.insert("peer".to_string(), self.chan_json(peer));
        self.emit(ev, &res);
    }

    /// Answers a channel (and, for Local channels, its other half).
    fn answer(&mut self, id: &str) {
        let Some(c) = self.channels.get_mut(id) else {
            return;
        };
        if c.state == "Up" {
            return;
        }
        c.state = "Up";
        let peer = c.peer.clone();
        let script = c.script.clone();
        let is_sip_dialed = c.tech == Tech::Sip && c.dialing.is_some();
        self.emit_state(id);
        self.device_state_for(id, "INUSE");
        if is_sip_dialed {
            self.dial_answered(id);
        }
        if let Some(s) = script {
            self.start_script(id, &s);
        }
        if let Some(p) = peer {
            let needs = self.channels.get(&p).is_some_and(|c| c.state != "Up");
            if needs {
                if let Some(c) = self.channels.get_mut(&p) {
                    c.state = "Up";
                }
                self.emit_state(&p);
                self.device_state_for(&p, "INUSE");
                self.dial_answered(&p);
            }
        }
    }

    /// The far end of a dialed channel answered: Dial ANSWER and what comes next.
    fn dial_answered(&mut self, id: &str) {
        let dialing = self.channels.get(id).and_then(|c| c.dialing.clone());
        if dialing.is_none() {
            return;
        }
        self.emit_dial(id, "ANSWER");
        if let Some(c) = self.channels.get_mut(id) {
            c.dialing = None;
        }
        let on = self
            .channels
            .get_mut(id)
            .map(|c| std::mem::replace(&mut c.on_answer, OnAnswer::Nothing))
            .unwrap_or(OnAnswer::Nothing);
        match on {
            OnAnswer::Nothing => {}
            OnAnswer::Stasis(app, args) => self.enter_stasis(id, &app, args),
            OnAnswer::Dialplan(ctx, exten, prio) => {
                if let Some(c) = self.channels.get_mut(id) {
                    c.context = ctx;
                    c.exten = exten;
                    c.priority = prio;
                }
                self.run_dialplan(id);
            }
            OnAnswer::BridgeWith(caller) => {
                if !self.channels.contains_key(&caller) {
                    return;
                }
                if let Some(c) = self.channels.get_mut(&caller) {
                    c.vars
                        .insert("DIALSTATUS".to_string(), "ANSWER".to_string());
                }
                self.answer(&caller);
                self.basic_bridge(&[id.to_string(), caller], "Dial");
            }
        }
    }

    fn start_script(&mut self, id: &str, s: &Script) {
        let mut at = s.dtmf_delay;
        for d in s.dtmf.chars().filter(|c| is_dtmf(*c)) {
            self.schedule(
                at,
                Timer::Dtmf(id.to_string(), d, self.cfg.dtmf_duration_ms),
            );
            at = at.saturating_add(s.dtmf_interval);
        }
        if let Some(h) = s.hangup_after_answer {
            self.schedule(h, Timer::CallerHangup(id.to_string()));
        }
    }

    /// Puts a channel into Stasis(app, args): STASISSTATUS, StasisStart.
    fn enter_stasis(&mut self, id: &str, app: &str, args: Vec<String>) {
        let active = self.apps.get(app).is_some_and(|a| a.connected);
        if !self.channels.contains_key(id) {
            return;
        }
        self.set_dialplan_app(id, "Stasis", &stasis_app_data(app, &args));
        if !active {
            // Stasis() fails for an unregistered application and the dialplan goes on.
            if let Some(c) = self.channels.get_mut(id) {
                c.vars
                    .insert("STASISSTATUS".to_string(), "FAILED".to_string());
            }
            self.emit_varset(Some(id), "STASISSTATUS", "FAILED");
            let in_dialplan = self.channels.get(id).is_some_and(|c| {
                self.dialplan
                    .find(&c.context, &c.exten, c.priority)
                    .is_some()
            });
            if in_dialplan {
                self.advance_priority(id);
                self.run_dialplan(id);
            } else {
                self.remote_hangup(id, 16);
            }
            return;
        }
        if let Some(c) = self.channels.get_mut(id) {
            c.vars.insert("STASISSTATUS".to_string(), String::new());
        }
        self.emit_varset(Some(id), "STASISSTATUS", "");
        if let Some(c) = self.channels.get_mut(id) {
            c.stasis = Some((app.to_string(), args.clone()));
            c.exec = Exec::InStasis;
            c.exec_gen += 1;
        }
        // StasisStart/StasisEnd go to the application itself only (app_send), never to
        // other subscribers or subscribeAll connections.
        let mut ev = self.event("StasisStart");
        ev.insert("args".to_string(), json!(args));
        ev.insert("channel".to_string(), self.chan_json(id));
        self.deliver(app, ev);
    }

    /// Leaves Stasis (StasisEnd, STASISSTATUS=SUCCESS); the caller decides what follows.
    fn leave_stasis(&mut self, id: &str) {
        let Some(c) = self.channels.get(id) else {
            return;
        };
        let Some(app) = c.stasis.as_ref().map(|(a, _)| a.clone()) else {
            return;
        };
        if let Some(b) = c.bridge.clone() {
            self.bridge_remove(&b, id);
        }
        self.stop_channel_media(id);
        let mut ev = self.event("StasisEnd");
        ev.insert("channel".to_string(), self.chan_json(id));
        self.deliver(&app, ev);
        if let Some(c) = self.channels.get_mut(id) {
            c.stasis = None;
            c.vars
                .insert("STASISSTATUS".to_string(), "SUCCESS".to_string());
        }
        self.emit_varset(Some(id), "STASISSTATUS", "SUCCESS");
    }

    fn stop_channel_media(&mut self, id: &str) {
        let pbs: Vec<String> = self
            .channels
            .get(id)
            .map(|c| c.playbacks.iter().cloned().collect())
            .unwrap_or_default();
        for pb in pbs {
            self.finish_playback(&pb, "done");
        }
        if let Some(r) = self.channels.get(id).and_then(|c| c.recording.clone()) {
            self.finish_recording(&r, "done");
        }
    }

    /// Hangup requested through ARI (DELETE channels/{id}) with a Q.850 cause.
    fn ari_hangup(&mut self, id: &str, cause: i64) {
        if self.channels.get(id).is_none_or(|c| c.hanging_up) {
            return;
        }
        self.chan_event(
            "ChannelHangupRequest",
            id,
            json!({"cause": 32, "soft": true}),
        );
        let lingering_snoop = self.channels.get(id).is_some_and(|c| {
            c.tech == Tech::Snoop
                && c.snoop_target
                    .as_ref()
                    .is_some_and(|t| self.channels.contains_key(t))
        });
        if lingering_snoop {
            // A snoop channel leaves Stasis at once but is only destroyed when the channel
            // it spies on goes away (as the recording shows).
            if let Some(c) = self.channels.get_mut(id) {
                c.hanging_up = true;
            }
            self.leave_everything(id);
            return;
        }
        self.teardown(id, cause, true);
    }

    /// The party on a channel (or its dialplan) hangs up.
    fn remote_hangup(&mut self, id: &str, cause: i64) {
        if self.channels.get(id).is_none_or(|c| c.hanging_up) {
            return;
        }
        let is_local = matches!(self.channels.get(id).map(|c| c.tech), Some(Tech::Local(_)));
        if !is_local {
            self.chan_event("ChannelHangupRequest", id, json!({"cause": cause}));
        }
        self.teardown(id, cause, false);
    }

    /// Tears a channel down: leaves bridge/Stasis, the Local peer goes too, ChannelDestroyed.
    fn teardown(&mut self, id: &str, cause: i64, peer_after: bool) {
        let Some(c) = self.channels.get_mut(id) else {
            return;
        };
        c.hanging_up = true;
        c.exec_gen += 1;
        let peer = c.peer.clone();
        let snoops = c.snoops.clone();
        let is_local = matches!(c.tech, Tech::Local(_));
        let peer_alive = peer
            .as_ref()
            .is_some_and(|p| self.channels.get(p).is_some_and(|pc| !pc.hanging_up));
        if is_local && peer_alive && !peer_after {
            // The far end learns first (queued hangup), then this half goes away.
            if let Some(p) = &peer {
                self.chan_event("ChannelHangupRequest", p, json!({"cause": cause}));
            }
            self.leave_everything(id);
            self.destroy(id, cause);
            if let Some(p) = &peer {
                if let Some(pc) = self.channels.get_mut(p) {
                    pc.hanging_up = true;
                    pc.exec_gen += 1;
                }
                self.leave_everything(p);
                // The other half takes over the hangup cause (an empty one reads as 16).
                self.destroy(p, if cause == 0 { 16 } else { cause });
            }
        } else {
            self.leave_everything(id);
            if is_local && peer_alive {
                if let Some(p) = &peer {
                    self.chan_event("ChannelHangupRequest", p, json!({"cause": 16}));
                    self.chan_event(
                        "ChannelHangupRequest",
                        p,
                        json!({"cause": 16, "soft": true}),
                    );
                    if let Some(pc) = self.channels.get_mut(p) {
                        pc.hanging_up = true;
                        pc.exec_gen += 1;
                    }
                    self.leave_everything(p);
                    self.destroy_local_half(p, 16);
                }
            }
            self.destroy(id, cause);
        }
        let _ = snoops;
    }

    fn leave_everything(&mut self, id: &str) {
        self.run_h_exten(id);
        if self.channels.get(id).is_some_and(|c| c.stasis.is_some()) {
            self.leave_stasis(id);
        } else {
            if let Some(b) = self.channels.get(id).and_then(|c| c.bridge.clone()) {
                self.bridge_remove(&b, id);
            }
            self.stop_channel_media(id);
        }
        if let Some(c) = self.channels.get_mut(id) {
            let (a, d) = c.base_app.clone();
            c.app_name = a;
            c.app_data = d;
        }
    }

    fn destroy(&mut self, id: &str, cause: i64) {
        if !self.channels.contains_key(id) {
            return;
        }
        self.hangup_snoops(id);
        // A callee that goes away unanswered ends its caller's Dial().
        let unanswered_caller = self
            .channels
            .get(id)
            .filter(|c| c.state != "Up")
            .and_then(|c| c.dialed_by.clone());
        if let Some(x) = unanswered_caller {
            let status = match cause {
                17 => "BUSY",
                34 => "CONGESTION",
                1 | 3 | 27 | 38 => "CHANUNAVAIL",
                _ => "NOANSWER",
            };
            self.resume_after_app(&x, status);
        }
        if self.channels.get(id).is_some_and(|c| c.state == "Up") {
            let st = match self.channels.get(id).map(|c| c.tech) {
                Some(Tech::UnicastRtp) => "UNKNOWN",
                _ => "NOT_INUSE",
            };
            self.device_state_for(id, st);
        }
        self.chan_event(
            "ChannelDestroyed",
            id,
            json!({"cause": cause, "cause_txt": cause_txt(cause)}),
        );
        self.remove_channel(id);
    }

    /// Destroys the far half of a Local pair: ChannelDestroyed, then the caller id update
    /// Asterisk publishes while the channel is being freed.
    fn destroy_local_half(&mut self, id: &str, cause: i64) {
        if !self.channels.contains_key(id) {
            return;
        }
        self.hangup_snoops(id);
        if let Some(c) = self.channels.get_mut(id) {
            c.caller = (String::new(), String::new());
        }
        self.chan_event(
            "ChannelDestroyed",
            id,
            json!({"cause": cause, "cause_txt": cause_txt(cause)}),
        );
        self.chan_event(
            "ChannelCallerId",
            id,
            json!({"caller_presentation": 67, "caller_presentation_txt": "Number Unavailable"}),
        );
        self.remove_channel(id);
    }

    /// Snoop channels go away with the channel they spy on.
    fn hangup_snoops(&mut self, id: &str) {
        let snoops = self
            .channels
            .get(id)
            .map(|c| c.snoops.clone())
            .unwrap_or_default();
        for s in snoops {
            match self.channels.get(&s).map(|c| c.hanging_up) {
                Some(false) => {
                    self.chan_event("ChannelHangupRequest", &s, json!({"cause": 16}));
                    self.teardown(&s, 16, true);
                }
                // hung up through ARI earlier and lingering: gone now
                Some(true) => self.destroy(&s, 16),
                None => {}
            }
        }
    }

    /// Destroys without hangup requests (failed dial into a missing extension).
    fn destroy_quiet(&mut self, id: &str, cause: i64) {
        if let Some(c) = self.channels.get_mut(id) {
            c.hanging_up = true;
        }
        self.leave_everything(id);
        self.destroy(id, cause);
    }

    fn remove_channel(&mut self, id: &str) {
        if let Some(c) = self.channels.remove(id) {
            if let Some(t) = c.snoop_target {
                if let Some(tc) = self.channels.get_mut(&t) {
                    tc.snoops.retain(|s| s != id);
                }
            }
        }
        self.chan_order.retain(|c| c != id);
        for a in self.apps.values_mut() {
            a.channels.remove(id);
        }
        let stale: Vec<String> = self
            .apps
            .iter()
            .filter(|(n, a)| {
                !a.connected
                    && !self
                        .channels
                        .values()
                        .any(|c| c.stasis.as_ref().is_some_and(|(s, _)| s == *n))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in stale {
            self.apps.remove(&n);
        }
    }

    // -----------------------------------------------------------------------------------
    // Dialplan execution
    // -----------------------------------------------------------------------------------

    fn advance_priority(&mut self, id: &str) {
        if let Some(c) = self.channels.get_mut(id) {
            c.priority += 1;
        }
    }

    /// Runs dialplan priorities from the channel's current location until one blocks.
    fn run_dialplan(&mut self, id: &str) {
        for _ in 0..1000 {
            let Some(c) = self.channels.get(id) else {
                return;
            };
            if c.hanging_up {
                return;
            }
            let line = self
                .dialplan
                .find(&c.context, &c.exten, c.priority)
                .cloned();
            let Some(line) = line else {
                // Ran off the end of the dialplan.
                if let Some(c) = self.channels.get_mut(id) {
                    c.app_name.clear();
                    c.app_data.clear();
                    c.exec = Exec::Idle;
                }
                self.remote_hangup(id, 0);
                return;
            };
            let data = self.substitute(id, &line.data);
            self.set_dialplan_app(id, &line.app, &data);
            if let Some(c) = self.channels.get_mut(id) {
                c.exec = Exec::Idle;
                c.ran_pbx = true;
            }
            self.emit_dialplan(id);
            let args = dialplan::split_args(&data);
            let arg0 = args.first().cloned().unwrap_or_default();
            match line.app.to_ascii_lowercase().as_str() {
                "answer" => {
                    let was_up = self.channels.get(id).is_some_and(|c| c.state == "Up");
                    self.answer(id);
                    if !was_up && self.channels.contains_key(id) {
                        // __ast_answer waits up to 500 ms for media to start flowing.
                        self.wait_then_continue(id, Duration::from_millis(500));
                        return;
                    }
                }
                "hangup" => {
                    let cause = arg0.trim().parse::<i64>().unwrap_or(16);
                    self.remote_hangup(id, cause);
                    return;
                }
                "ringing" => {
                    if let Some(c) = self.channels.get_mut(id) {
                        if c.state != "Up" {
                            c.state = "Ringing";
                        }
                    }
                    self.emit_state(id);
                    let peer = self.channels.get(id).and_then(|c| c.peer.clone());
                    if let Some(p) = peer {
                        if self
                            .channels
                            .get(&p)
                            .is_some_and(|pc| pc.dialing.is_some() && pc.state != "Up")
                        {
                            if let Some(pc) = self.channels.get_mut(&p) {
                                pc.state = "Ringing";
                            }
                            self.emit_state(&p);
                            self.emit_dial(&p, "RINGING");
                        }
                    }
                }
                "set" | "msetvar" => {
                    if let Some((k, v)) = data.split_once('=') {
                        self.set_chan_var(id, k.trim(), v);
                    }
                }
                "userevent" => {
                    let mut ue = Map::new();
                    for kv in args.iter().skip(1) {
                        if let Some((k, v)) = kv.split_once(':') {
                            ue.insert(k.trim().to_string(), json!(v.trim()));
                        }
                    }
                    ue.insert("eventname".to_string(), json!(arg0));
                    let mut ev = self.event("ChannelUserevent");
                    ev.insert("eventname".to_string(), json!(arg0));
                    ev.insert("userevent".to_string(), Value::Object(ue));
                    ev.insert("channel".to_string(), self.chan_json(id));
                    self.emit(ev, &[Res::Chan(id.to_string())]);
                }
                "wait" => {
                    let secs = arg0.trim().parse::<f64>().unwrap_or(0.0).max(0.0);
                    self.wait_then_continue(id, Duration::from_secs_f64(secs.min(1e9)));
                    return;
                }
                "playback" | "background" => {
                    let total = arg0
                        .split('&')
                        .map(|s| self.media_duration(s).unwrap_or(Duration::ZERO))
                        .fold(Duration::ZERO, Duration::saturating_add);
                    self.wait_then_continue(id, total);
                    return;
                }
                "amd" => {
                    let (status, cause) = self.amd_verdict(id);
                    if let Some(c) = self.channels.get_mut(id) {
                        c.vars.insert("AMDSTATUS".to_string(), status.to_string());
                        c.vars.insert("AMDCAUSE".to_string(), cause);
                    }
                    self.wait_then_continue(id, Duration::from_secs(2));
                    return;
                }
                "senddtmf" => {
                    let peer = self.channels.get(id).and_then(|c| c.peer.clone());
                    let digits: Vec<char> = arg0.chars().filter(|c| is_dtmf(*c)).collect();
                    let dur = args
                        .get(2)
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(self.cfg.dtmf_duration_ms);
                    let between = args
                        .get(1)
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(250);
                    let step = Duration::from_millis(dur.saturating_add(between));
                    if let Some(p) = peer {
                        for (i, d) in digits.iter().enumerate() {
                            let at = Duration::from_millis(dur.saturating_mul(2)).saturating_add(
                                step.saturating_mul(i.min(u32::MAX as usize) as u32),
                            );
                            self.schedule(at, Timer::Dtmf(p.clone(), *d, dur));
                        }
                    }
                    self.wait_then_continue(
                        id,
                        step.saturating_mul(digits.len().min(u32::MAX as usize) as u32),
                    );
                    return;
                }
                "goto" => {
                    let (ctx, exten, prio) = match args.len() {
                        3 => (args[0].clone(), args[1].clone(), args[2].clone()),
                        2 => (
                            self.channels
                                .get(id)
                                .map(|c| c.context.clone())
                                .unwrap_or_default(),
                            args[0].clone(),
                            args[1].clone(),
                        ),
                        _ => (
                            self.channels
                                .get(id)
                                .map(|c| c.context.clone())
                                .unwrap_or_default(),
                            self.channels
                                .get(id)
                                .map(|c| c.exten.clone())
                                .unwrap_or_default(),
                            arg0.clone(),
                        ),
                    };
                    let p = prio
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .or_else(|| self.dialplan.label(&ctx, &exten, prio.trim()))
                        .unwrap_or(1);
                    if let Some(c) = self.channels.get_mut(id) {
                        c.context = ctx;
                        c.exten = exten;
                        c.priority = p;
                    }
                    continue;
                }
                "stasis" => {
                    let app = arg0.clone();
                    let rest: Vec<String> = args.iter().skip(1).cloned().collect();
                    self.enter_stasis(id, &app, rest);
                    return;
                }
                "stasisbroadcast" => {
                    // StasisBroadcast(timeout_ms[,app_filter]): offer the call (CallBroadcast)
                    // to every matching application; the first claim takes it.
                    let timeout = arg0.trim().parse::<u64>().unwrap_or(500);
                    let filter = args.get(1).cloned().unwrap_or_default();
                    let targets: Vec<String> = self
                        .apps
                        .iter()
                        .filter(|(n, a)| {
                            a.connected
                                && (filter.is_empty()
                                    || regex::re_match(filter.trim_start_matches('^'), n))
                        })
                        .map(|(n, _)| n.clone())
                        .collect();
                    if let Some(c) = self.channels.get_mut(id) {
                        c.vars
                            .insert("STASISSTATUS".to_string(), "TIMEOUT".to_string());
                        c.broadcast_open = true;
                    }
                    let (caller, called) = self
                        .channels
                        .get(id)
                        .map(|c| (c.caller.1.clone(), c.exten.clone()))
                        .unwrap_or_default();
                    for t in targets {
                        let mut ev = self.event("CallBroadcast");
                        ev.insert("channel".to_string(), self.chan_json(id));
                        ev.insert("caller".to_string(), json!(caller));
                        ev.insert("called".to_string(), json!(called));
                        self.deliver(&t, ev);
                    }
                    self.wait_then_continue(id, Duration::from_millis(timeout));
                    return;
                }
                "dial" => {
                    let timeout = args.get(1).and_then(|t| t.trim().parse::<u64>().ok());
                    if self.dialplan_dial(id, &arg0, timeout) {
                        return;
                    }
                }
                "bridge" => {
                    let target = arg0.replace("\\;", ";");
                    let x = args.get(1).is_some_and(|o| o.contains('x'));
                    if self.dialplan_bridge(id, &target, x) {
                        return;
                    }
                }
                "echo" | "musiconhold" | "bridgewait" | "park" | "confbridge" | "waitexten" => {
                    if let Some(c) = self.channels.get_mut(id) {
                        c.exec = Exec::Parked;
                    }
                    return;
                }
                _ => {}
            }
            if self.channels.get(id).is_none_or(|c| c.hanging_up) {
                return;
            }
            self.advance_priority(id);
        }
    }

    /// What AMD() decides from the audio reaching the channel: a long greeting is a
    /// MACHINE, a short word followed by silence is a HUMAN, silence is a MACHINE.
    fn amd_verdict(&self, id: &str) -> (&'static str, String) {
        let media = self.heard_media(id);
        let mut t = Duration::ZERO;
        let mut speech = Duration::ZERO;
        let mut initial_silence = Duration::ZERO;
        for m in &media {
            let d = self.media_duration(m).unwrap_or(Duration::ZERO);
            if m.contains("silence/") {
                if speech.is_zero() {
                    initial_silence += d;
                } else if speech < Duration::from_millis(1500) && d >= Duration::from_millis(800) {
                    return ("HUMAN", format!("HUMAN-{}-800", speech.as_millis()));
                }
            } else {
                speech += d;
                if speech >= Duration::from_millis(1500) {
                    return (
                        "MACHINE",
                        format!("MAXWORDLENGTH-{}-1500", speech.as_millis()),
                    );
                }
            }
            t += d;
        }
        if !speech.is_zero() {
            return ("HUMAN", format!("HUMAN-{}-800", speech.as_millis()));
        }
        let _ = (t, initial_silence);
        ("MACHINE", "INITIALSILENCE-2500-2500".to_string())
    }

    /// Media another party is playing toward this channel (through its Local peer's
    /// bridge, a snoop, or the peer's own dialplan Playback).
    fn heard_media(&self, id: &str) -> Vec<String> {
        let mut sources: Vec<String> = Vec::new();
        let Some(c) = self.channels.get(id) else {
            return Vec::new();
        };
        let mut near = vec![id.to_string()];
        if let Some(p) = &c.peer {
            near.push(p.clone());
        }
        for n in &near {
            if let Some(b) = self.channels.get(n).and_then(|x| x.bridge.clone()) {
                for m in self.members(&b) {
                    if !near.contains(&m) {
                        sources.push(m);
                    }
                }
            }
        }
        let mut media = Vec::new();
        for s in sources {
            // a snoop hears its target; a Local half hears its peer's dialplan
            let who = self
                .channels
                .get(&s)
                .and_then(|x| x.snoop_target.clone())
                .unwrap_or(s);
            let mut cands = vec![who.clone()];
            if let Some(p) = self.channels.get(&who).and_then(|x| x.peer.clone()) {
                cands.push(p);
            }
            for w in cands {
                let Some(x) = self.channels.get(&w) else {
                    continue;
                };
                if x.app_name.eq_ignore_ascii_case("Playback") {
                    media.extend(x.app_data.split('&').map(|m| format!("sound:{m}")));
                }
                for pb in &x.playbacks {
                    if let Some(p) = self.playbacks.get(pb) {
                        media.extend(p.media.iter().cloned());
                    }
                }
            }
        }
        media
    }

    /// Dial(Local/…|PJSIP/…): creates the callee, which is bridged with the caller once it
    /// answers. Returns false (dialplan goes on, DIALSTATUS=CHANUNAVAIL) when it cannot.
    fn dialplan_dial(&mut self, caller: &str, target: &str, timeout: Option<u64>) -> bool {
        let first = target.split('&').next().unwrap_or("").trim().to_string();
        let (tech, rest) = first.split_once('/').unwrap_or((first.as_str(), ""));
        let tech = if self.channels.len() >= self.cfg.max_channels {
            "" // out of resources: the dial fails like an allocation failure
        } else {
            tech
        };
        let callee = self.next_uid();
        match tech {
            "Local" => {
                let t = rest.split('/').next().unwrap_or("");
                let (exten, ctx) = t.split_once('@').unwrap_or((t, "default"));
                let other = self.next_uid();
                self.make_local_pair(&callee, &other, exten, ctx, None);
                self.emit_created(&callee);
                self.emit_created(&other);
            }
            "PJSIP" | "SIP" if !rest.is_empty() => {
                let ep = format!("{tech}/{}", rest.split('@').next().unwrap_or(rest));
                let c = self.new_sip_channel(&callee, &ep, "Down");
                self.insert_channel(c);
                self.emit_created(&callee);
            }
            _ => {
                if let Some(c) = self.channels.get_mut(caller) {
                    c.vars
                        .insert("DIALSTATUS".to_string(), "CHANUNAVAIL".to_string());
                }
                return false;
            }
        }
        if let Some(c) = self.channels.get_mut(&callee) {
            c.base_app = ("AppDial".to_string(), "(Outgoing Line)".to_string());
            c.app_name = c.base_app.0.clone();
            c.app_data = c.base_app.1.clone();
            c.dialed_by = Some(caller.to_string());
            c.on_answer = OnAnswer::BridgeWith(caller.to_string());
        }
        if let Some(c) = self.channels.get_mut(caller) {
            c.exec = Exec::InApp;
            c.exec_gen += 1;
        }
        if tech == "Local" {
            self.schedule(Duration::ZERO, Timer::LocalStart(callee.clone()));
        } else {
            if let Some(c) = self.channels.get_mut(&callee) {
                c.dialing = Some(rest.to_string());
            }
            self.emit_dial(&callee, "");
            if let Some(c) = self.channels.get_mut(&callee) {
                c.state = "Ringing";
            }
            self.emit_state(&callee);
            self.emit_dial(&callee, "RINGING");
            let d = self.cfg.sip_answer_delay;
            self.schedule(d, Timer::SipAnswer(callee.clone()));
        }
        if let Some(t) = timeout.filter(|t| *t > 0) {
            self.schedule(Duration::from_secs(t), Timer::DialTimeout(callee));
        }
        true
    }

    /// Bridge(channel[,x]): takes `target` out of wherever it is (its Stasis bridge, its
    /// Stasis application) into a basic bridge with `me`.
    fn dialplan_bridge(&mut self, me: &str, target: &str, hangup_after: bool) -> bool {
        if target == me || !self.channels.contains_key(target) {
            if let Some(c) = self.channels.get_mut(me) {
                c.vars
                    .insert("BRIDGERESULT".to_string(), "NONEXISTENT".to_string());
            }
            return false;
        }
        if let Some(b) = self.channels.get(target).and_then(|c| c.bridge.clone()) {
            self.bridge_remove(&b, target);
        }
        if self
            .channels
            .get(target)
            .is_some_and(|c| c.stasis.is_some())
        {
            self.leave_stasis(target);
        }
        if let Some(c) = self.channels.get_mut(target) {
            c.exec = Exec::InApp;
            c.exec_gen += 1;
            c.hangup_after_bridge = hangup_after;
        }
        if let Some(c) = self.channels.get_mut(me) {
            c.exec = Exec::InApp;
            c.exec_gen += 1;
        }
        self.answer(me);
        self.basic_bridge(&[me.to_string(), target.to_string()], "Bridge");
        true
    }

    /// Runs the `h` extension of a channel that ran dialplan and is hanging up.
    fn run_h_exten(&mut self, id: &str) {
        let ctx = match self.channels.get_mut(id) {
            Some(c) if c.ran_pbx => {
                c.ran_pbx = false;
                c.context.clone()
            }
            _ => return,
        };
        if self.dialplan.resolve_exten(&ctx, "h").as_deref() != Some("h") {
            return;
        }
        for prio in 1..100 {
            let Some(line) = self.dialplan.find(&ctx, "h", prio).cloned() else {
                break;
            };
            let data = self.substitute(id, &line.data);
            if let Some(c) = self.channels.get_mut(id) {
                c.exten = "h".to_string();
                c.priority = prio;
            }
            self.set_dialplan_app(id, &line.app, &data);
            self.emit_dialplan(id);
            if line.app.eq_ignore_ascii_case("set") {
                if let Some((k, v)) = data.split_once('=') {
                    self.set_chan_var(id, k.trim(), v);
                }
            }
            if line.app.eq_ignore_ascii_case("hangup") {
                break;
            }
        }
    }

    fn wait_then_continue(&mut self, id: &str, d: Duration) {
        let g = match self.channels.get_mut(id) {
            Some(c) => {
                c.exec = Exec::Waiting;
                c.exec_gen += 1;
                c.exec_gen
            }
            None => return,
        };
        self.schedule(d, Timer::Dialplan(id.to_string(), g));
    }

    // -----------------------------------------------------------------------------------
    // DTMF
    // -----------------------------------------------------------------------------------

    fn dtmf_received(&mut self, id: &str, digit: char, dur: u64) {
        if self.channels.get(id).is_none_or(|c| c.hanging_up) {
            return;
        }
        self.chan_event(
            "ChannelDtmfReceived",
            id,
            json!({"digit": digit.to_string(), "duration_ms": dur}),
        );
        // terminateOn of a recording on this channel
        if let Some(r) = self.channels.get(id).and_then(|c| c.recording.clone()) {
            let stop = self
                .live
                .get(&r)
                .is_some_and(|l| match l.terminate_on.as_str() {
                    "any" => true,
                    "none" | "" => false,
                    t => t.contains(digit),
                });
            if stop {
                self.finish_recording(&r, "done");
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Playbacks
    // -----------------------------------------------------------------------------------

    fn media_duration(&self, uri: &str) -> Option<Duration> {
        let uri = uri.trim();
        let (scheme, rest) = uri.split_once(':').unwrap_or(("sound", uri));
        match scheme {
            "sound" => {
                if let Some(d) = self.cfg.media_durations.get(rest) {
                    return Some(*d);
                }
                if let Some(n) = rest.strip_prefix("silence/") {
                    if let Ok(s) = n.parse::<u64>() {
                        return Some(Duration::from_secs(s));
                    }
                }
                self.cfg.unknown_media_duration
            }
            "recording" => self
                .stored
                .get(rest)
                .map(|r| Duration::from_secs(r.duration_s.max(1))),
            "digits" | "number" | "characters" => Some(Duration::from_millis(
                600 * rest.chars().count().max(1) as u64,
            )),
            "tone" => None,
            _ => Some(Duration::ZERO).filter(|_| false),
        }
    }

    fn media_exists(&self, uri: &str) -> bool {
        let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
        match scheme {
            "tone" => !rest.is_empty(),
            "sound" | "recording" | "digits" | "number" | "characters" => {
                self.media_duration(uri).is_some()
            }
            _ => false,
        }
    }

    /// Creates a playback on a channel (`channel:ID`) or bridge (`bridge:ID`).
    fn start_playback(
        &mut self,
        pb_id: &str,
        target: &str,
        media: Vec<String>,
        lang: &str,
        skip: Duration,
    ) {
        let pb = Playback {
            id: pb_id.to_string(),
            media,
            index: 0,
            target: target.to_string(),
            language: lang.to_string(),
            state: PbState::Queued,
            length: None,
            offset: Duration::ZERO,
            since: self.now,
            skip,
            gen: 0,
            failed: false,
        };
        self.playbacks.insert(pb_id.to_string(), pb);
        let first = match target.split_once(':') {
            Some(("channel", c)) => self.channels.get_mut(c).map(|ch| {
                ch.playbacks.push_back(pb_id.to_string());
                ch.playbacks.len() == 1
            }),
            Some(("bridge", b)) => self.bridges.get_mut(b).map(|br| {
                br.playbacks.push_back(pb_id.to_string());
                br.playbacks.len() == 1
            }),
            _ => None,
        };
        if first == Some(true) {
            self.play_current(pb_id);
        }
    }

    fn playback_res(&self, pb: &str) -> Vec<Res> {
        match self
            .playbacks
            .get(pb)
            .and_then(|p| p.target.split_once(':'))
        {
            Some(("channel", c)) => vec![Res::Chan(c.to_string())],
            Some(("bridge", b)) => vec![Res::Bridge(b.to_string())],
            _ => vec![],
        }
    }

    fn emit_playback(&mut self, ty: &str, pb: &str, state_override: Option<&str>) {
        let mut ev = self.event(ty);
        let mut p = self.playback_json(pb);
        if let Some(s) = state_override {
            p["state"] = json!(s);
        }
        ev.insert("playback".to_string(), p);
        let res = self.playback_res(pb);
        self.emit(ev, &res);
    }

    /// Starts playing the current media item of a playback.
    fn play_current(&mut self, pb: &str) {
        let (first_on_bridge, bridge_target) = match self.playbacks.get(pb) {
            Some(p) => (
                p.index == 0,
                p.target.strip_prefix("bridge:").map(|b| b.to_string()),
            ),
            None => return,
        };
        let g = self.next_gen();
        let now = self.now;
        let Some(p) = self.playbacks.get(pb) else {
            return;
        };
        let uri = p.media.get(p.index).cloned().unwrap_or_default();
        let exists = self.media_exists(&uri);
        let len = self.media_duration(&uri);
        let Some(p) = self.playbacks.get_mut(pb) else {
            return;
        };
        p.state = PbState::Playing;
        p.gen = g;
        p.offset = Duration::ZERO;
        p.since = now;
        p.length = len;
        if !exists {
            p.failed = true;
        }
        if p.index == 0 || !exists {
            // continuing media announce themselves through PlaybackContinuing + Started
        }
        if first_on_bridge {
            if let Some(b) = bridge_target {
                let n = self.announcer_name("ARI");
                self.announcer(&b, Some(&n));
            }
        }
        self.emit_playback("PlaybackStarted", pb, None);
        if !exists {
            self.finish_playback(pb, "failed");
            return;
        }
        if let Some(l) = len {
            self.schedule(l, Timer::MediaEnd(pb.to_string(), g));
        }
        self.talk_open(pb, Duration::ZERO);
    }

    /// Records when the current media of `pb`, playing from `pos`, carries speech.
    pub(super) fn talk_open(&mut self, pb: &str, pos: Duration) {
        self.talk_close(pb);
        let Some(p) = self.playbacks.get(pb) else {
            return;
        };
        let uri = p.media.get(p.index).cloned().unwrap_or_default();
        let (Some(len), false) = (p.length, uri.contains("silence/")) else {
            return;
        };
        let pad = Duration::from_millis(250);
        let from = pos.max(pad);
        let to = len.saturating_sub(pad);
        if to > from {
            let start = self.now + (from - pos);
            let end = self.now + (to - pos);
            let target = p.target.clone();
            self.talk_log
                .push_back((pb.to_string(), target, start, end));
            if self.talk_log.len() > 10_000 {
                self.talk_log.pop_front();
            }
        }
    }

    /// The playback stopped or paused: its speech ends now.
    pub(super) fn talk_close(&mut self, pb: &str) {
        let now = self.now;
        for e in self.talk_log.iter_mut().filter(|e| e.0 == pb && e.3 > now) {
            e.3 = now.max(e.2);
        }
    }

    /// Speech heard by a recording of `target` between `from` and now.
    fn talk_heard(&self, target: &str, from: Duration) -> Duration {
        let mut sources: BTreeSet<String> = BTreeSet::new();
        let mut near: Vec<String> = Vec::new();
        match target.split_once(':') {
            Some(("channel", c)) => {
                near.push(c.to_string());
                if let Some(p) = self.channels.get(c).and_then(|x| x.peer.clone()) {
                    sources.insert(format!("channel:{p}"));
                    near.push(p);
                }
            }
            Some(("bridge", b)) => {
                sources.insert(format!("bridge:{b}"));
                for m in self.members(b) {
                    if let Some(p) = self.channels.get(&m).and_then(|x| x.peer.clone()) {
                        sources.insert(format!("channel:{p}"));
                    }
                }
            }
            _ => {}
        }
        for n in &near {
            if let Some(b) = self.channels.get(n).and_then(|x| x.bridge.clone()) {
                sources.insert(format!("bridge:{b}"));
                for m in self.members(&b) {
                    if near.contains(&m) {
                        continue;
                    }
                    if let Some(p) = self.channels.get(&m).and_then(|x| x.peer.clone()) {
                        sources.insert(format!("channel:{p}"));
                    }
                }
            }
        }
        self.talk_log
            .iter()
            .filter(|e| sources.contains(&e.1))
            .map(|e| {
                let s = e.2.max(from);
                let t = e.3.min(self.now);
                t.saturating_sub(s)
            })
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    fn media_done(&mut self, pb: &str) {
        let Some(p) = self.playbacks.get(pb) else {
            return;
        };
        if p.index + 1 < p.media.len() {
            self.emit_playback("PlaybackContinuing", pb, Some("continuing"));
            if let Some(p) = self.playbacks.get_mut(pb) {
                p.index += 1;
            }
            self.play_current(pb);
        } else {
            self.finish_playback(pb, "done");
        }
    }

    /// Ends a playback (`done`, `failed`, `canceled`) and starts the next queued one.
    fn finish_playback(&mut self, pb: &str, state: &str) {
        let Some(p) = self.playbacks.get(pb) else {
            return;
        };
        let was_queued = p.state == PbState::Queued;
        let target = p.target.clone();
        let st = if was_queued && state == "done" {
            "canceled"
        } else {
            state
        };
        self.emit_playback("PlaybackFinished", pb, Some(st));
        self.talk_close(pb);
        self.playbacks.remove(pb);
        if !was_queued {
            if let Some(b) = target.strip_prefix("bridge:") {
                self.announcer(b, None);
            }
        }
        let next = match target.split_once(':') {
            Some(("channel", c)) => self.channels.get_mut(c).and_then(|ch| {
                let head = ch.playbacks.front().map(|h| h == pb).unwrap_or(false);
                ch.playbacks.retain(|x| x != pb);
                if head {
                    ch.playbacks.front().cloned()
                } else {
                    None
                }
            }),
            Some(("bridge", b)) => self.bridges.get_mut(b).and_then(|br| {
                let head = br.playbacks.front().map(|h| h == pb).unwrap_or(false);
                br.playbacks.retain(|x| x != pb);
                if head {
                    br.playbacks.front().cloned()
                } else {
                    None
                }
            }),
            _ => None,
        };
        if let Some(n) = next {
            self.play_current(&n);
        }
    }

    /// Position in the current media.
    fn pb_position(&self, p: &Playback) -> Duration {
        match p.state {
            PbState::Playing => p.offset.saturating_add(self.now.saturating_sub(p.since)),
            _ => p.offset,
        }
    }

    /// Re-arms the media-end timer from a new position.
    fn pb_seek(&mut self, pb: &str, pos: Duration) {
        let g = self.next_gen();
        let now = self.now;
        let Some(p) = self.playbacks.get_mut(pb) else {
            return;
        };
        p.offset = pos;
        p.since = now;
        p.gen = g;
        if p.state == PbState::Playing {
            if let Some(l) = p.length {
                let left = l.saturating_sub(pos);
                self.schedule(left, Timer::MediaEnd(pb.to_string(), g));
            }
            self.talk_open(pb, pos);
        } else {
            self.talk_close(pb);
        }
    }

    // -----------------------------------------------------------------------------------
    // Recordings
    // -----------------------------------------------------------------------------------

    fn rec_res(&self, name: &str) -> Vec<Res> {
        match self.live.get(name).and_then(|r| r.target.split_once(':')) {
            Some(("channel", c)) => vec![Res::Chan(c.to_string())],
            Some(("bridge", b)) => vec![Res::Bridge(b.to_string())],
            _ => vec![],
        }
    }

    fn recording_started(&mut self, name: &str) {
        let g = self.next_gen();
        let now = self.now;
        let Some(r) = self.live.get_mut(name) else {
            return;
        };
        r.state = "recording";
        r.started = now;
        r.gen = g;
        let max = r.max_duration;
        let mut ev = self.event("RecordingStarted");
        ev.insert("recording".to_string(), self.live_json(name));
        let res = self.rec_res(name);
        self.emit(ev, &res);
        if let Some(m) = max {
            self.schedule(m, Timer::RecMax(name.to_string(), g));
        }
    }

    fn rec_elapsed(&self, r: &LiveRec) -> Duration {
        match r.state {
            "recording" => r.accumulated + self.now.saturating_sub(r.started),
            _ => r.accumulated,
        }
    }

    /// Ends a live recording; `done` stores it, `canceled` discards it.
    fn finish_recording(&mut self, name: &str, state: &'static str) {
        let Some(r) = self.live.get(name) else { return };
        // Ended before it could start (the channel hung up during the beep): failed.
        let state = if r.state == "queued" && state == "done" {
            "failed"
        } else {
            state
        };
        let elapsed = self.rec_elapsed(r);
        let dur = elapsed.as_secs();
        let format = r.format.clone();
        let target = r.target.clone();
        let mut rj = self.live_json(name);
        rj["state"] = json!(state);
        let ty = if state == "failed" {
            "RecordingFailed"
        } else {
            "RecordingFinished"
        };
        if state == "done" {
            rj["duration"] = json!(dur);
            if r.max_silence.is_some() {
                let from = self.now.saturating_sub(elapsed);
                let talk = self.talk_heard(&target, from).min(elapsed).as_secs();
                rj["talking_duration"] = json!(talk);
                rj["silence_duration"] = json!(dur.saturating_sub(talk));
            }
        }
        if state == "failed" {
            rj["cause"] = json!("Channel hung up before recording started");
        }
        let mut ev = self.event(ty);
        ev.insert("recording".to_string(), rj);
        let res = self.rec_res(name);
        self.emit(ev, &res);
        self.live.remove(name);
        if state == "done" {
            self.stored.insert(
                name.to_string(),
                StoredRec {
                    format,
                    duration_s: dur,
                },
            );
        }
        match target.split_once(':') {
            Some(("channel", c)) => {
                if let Some(ch) = self.channels.get_mut(c) {
                    if ch.recording.as_deref() == Some(name) {
                        ch.recording = None;
                    }
                }
            }
            Some(("bridge", b)) => {
                if let Some(br) = self.bridges.get_mut(b) {
                    if br.recording.as_deref() == Some(name) {
                        br.recording = None;
                    }
                }
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------------------
    // Bridges
    // -----------------------------------------------------------------------------------

    fn bridge_event(&mut self, ty: &str, b: &str, chan: Option<&str>, extra: Value) {
        let mut ev = self.event(ty);
        if let Value::Object(m) = extra {
            ev.extend(m);
        }
        ev.insert("bridge".to_string(), self.bridge_json(b));
        let mut res = vec![Res::Bridge(b.to_string())];
        if let Some(c) = chan {
            ev.insert("channel".to_string(), self.chan_json(c));
            res.push(Res::Chan(c.to_string()));
        }
        self.emit(ev, &res);
    }

    fn update_technology(&mut self, b: &str) {
        if let Some(br) = self.bridges.get_mut(b) {
            if br.bridge_type == "mixing" && br.channels.len() > 2 {
                br.technology = "softmix".to_string();
            }
        }
    }

    fn set_bridgepeers(&mut self, b: &str) {
        let members: Vec<String> = self.members(b);
        if members.len() < 2 {
            return;
        }
        for m in &members {
            let others: Vec<String> = members
                .iter()
                .filter(|o| *o != m)
                .filter_map(|o| self.channels.get(o).map(|c| c.name.clone()))
                .collect();
            let v = others.join(",");
            if self.channels.get(m).and_then(|c| c.vars.get("BRIDGEPEER")) == Some(&v) {
                continue;
            }
            if let Some(c) = self.channels.get_mut(m) {
                c.vars.insert("BRIDGEPEER".to_string(), v.clone());
            }
            self.emit_varset(Some(m), "BRIDGEPEER", &v);
        }
    }

    fn bridge_add(&mut self, b: &str, c: &str) {
        if let Some(old) = self.channels.get(c).and_then(|ch| ch.bridge.clone()) {
            if old == b {
                return;
            }
            self.bridge_remove(&old, c);
        }
        let app = self
            .channels
            .get(c)
            .and_then(|ch| ch.stasis.as_ref().map(|(a, _)| a.clone()));
        if let Some(a) = app.and_then(|a| self.apps.get_mut(&a)) {
            *a.bridge_refs.entry(b.to_string()).or_insert(0) += 1;
        }
        if let Some(br) = self.bridges.get_mut(b) {
            br.channels.push(c.to_string());
        }
        if let Some(ch) = self.channels.get_mut(c) {
            ch.bridge = Some(b.to_string());
        }
        self.update_technology(b);
        self.bridge_event("ChannelEnteredBridge", b, Some(c), json!({}));
        self.set_bridgepeers(b);
        let members: Vec<String> = self.members(b);
        let mixing = self
            .bridges
            .get(b)
            .is_some_and(|br| br.bridge_type == "mixing");
        if mixing && members.len() >= 2 {
            // linkedid: the oldest wins; peeraccount: the other party's accountcode.
            let oldest = members
                .iter()
                .filter_map(|m| self.channels.get(m))
                .min_by_key(|c| (c.creation_ms, c.linkedid.clone()))
                .map(|c| c.linkedid.clone());
            let accts: Vec<(String, String)> = members
                .iter()
                .filter_map(|m| {
                    self.channels
                        .get(m)
                        .map(|c| (m.clone(), c.accountcode.clone()))
                })
                .collect();
            for m in &members {
                let peer_acct = accts
                    .iter()
                    .filter(|(id, _)| id != m)
                    .map(|(_, a)| a.clone())
                    .next()
                    .unwrap_or_default();
                if let Some(c) = self.channels.get_mut(m) {
                    if let Some(l) = &oldest {
                        c.linkedid = l.clone();
                    }
                    c.peeraccount = peer_acct;
                }
            }
        }
        if members.len() == 2 {
            // Two-party bridge: each side learns who it is connected to.
            let (a, z) = (members[0].clone(), members[1].clone());
            let (an, zn) = match (self.channels.get(&a), self.channels.get(&z)) {
                (Some(x), Some(y)) => (x.caller.clone(), y.caller.clone()),
                _ => return,
            };
            if let Some(x) = self.channels.get_mut(&z) {
                x.connected = an;
            }
            self.chan_event("ChannelConnectedLine", &z, json!({}));
            if let Some(x) = self.channels.get_mut(&a) {
                x.connected = zn;
            }
            self.chan_event("ChannelConnectedLine", &a, json!({}));
        }
    }

    /// An announcer channel (`Announcer/ARI…;2`) joins or leaves a bridge for a bridge
    /// playback or music on hold: members see BRIDGEPEER change.
    fn announcer(&mut self, b: &str, name: Option<&str>) {
        let members: Vec<String> = self.members(b);
        for m in &members {
            let mut peers: Vec<String> = members
                .iter()
                .filter(|o| *o != m)
                .filter_map(|o| self.channels.get(o).map(|c| c.name.clone()))
                .collect();
            if let Some(n) = name {
                peers.insert(0, n.to_string());
            } else if peers.is_empty() {
                continue;
            }
            let v = peers.join(",");
            if let Some(c) = self.channels.get_mut(m) {
                c.vars.insert("BRIDGEPEER".to_string(), v.clone());
            }
            self.emit_varset(Some(m), "BRIDGEPEER", &v);
        }
    }

    fn announcer_name(&mut self, kind: &str) -> String {
        self.local_seq += 1;
        format!("Announcer/{kind}-{:08x};2", self.local_seq)
    }

    fn bridge_remove(&mut self, b: &str, c: &str) {
        let present = self
            .bridges
            .get(b)
            .is_some_and(|br| br.channels.iter().any(|x| x == c));
        if !present {
            return;
        }
        if let Some(br) = self.bridges.get_mut(b) {
            br.channels.retain(|x| x != c);
        }
        if let Some(ch) = self.channels.get_mut(c) {
            ch.bridge = None;
        }
        let had_peer = self
            .channels
            .get(c)
            .and_then(|ch| ch.vars.get("BRIDGEPEER"))
            .is_some_and(|v| !v.is_empty());
        if had_peer {
            if let Some(ch) = self.channels.get_mut(c) {
                ch.vars.insert("BRIDGEPEER".to_string(), String::new());
            }
            self.emit_varset(Some(c), "BRIDGEPEER", "");
        }
        let vs = self.bridges.get(b).and_then(|br| br.video_source.clone());
        if vs.as_deref() == Some(c) {
            if let Some(br) = self.bridges.get_mut(b) {
                br.video_source = None;
                br.video_mode = "talker".to_string();
            }
            self.bridge_event(
                "BridgeVideoSourceChanged",
                b,
                None,
                json!({"old_video_source_id": c}),
            );
        }
        self.bridge_event("ChannelLeftBridge", b, Some(c), json!({}));
        let dissolve = self
            .bridges
            .get(b)
            .is_some_and(|br| br.class == "basic" && !br.dissolving && br.channels.len() < 2);
        if dissolve {
            let rest: Vec<String> = self.members(b);
            if let Some(br) = self.bridges.get_mut(b) {
                br.dissolving = true;
            }
            for m in &rest {
                self.bridge_remove(b, m);
            }
            self.bridge_event("BridgeDestroyed", b, None, json!({}));
            self.bridges.remove(b);
            self.bridge_order.retain(|x| x != b);
            for m in rest.iter().chain(std::iter::once(&c.to_string())) {
                self.resume_after_app(m, "ANSWER");
            }
        }
    }

    /// A channel whose Dial()/Bridge() ended goes on in the dialplan (or hangs up for
    /// Bridge(…,x)).
    fn resume_after_app(&mut self, id: &str, dialstatus: &str) {
        let Some(c) = self.channels.get_mut(id) else {
            return;
        };
        if c.hanging_up || c.exec != Exec::InApp {
            return;
        }
        c.exec = Exec::Waiting;
        c.exec_gen += 1;
        let g = c.exec_gen;
        if c.app_name.eq_ignore_ascii_case("Dial") {
            c.vars
                .insert("DIALSTATUS".to_string(), dialstatus.to_string());
        }
        if c.hangup_after_bridge {
            self.schedule(Duration::ZERO, Timer::CallerHangup(id.to_string()));
        } else {
            self.schedule(Duration::ZERO, Timer::Dialplan(id.to_string(), g));
        }
    }

    /// A basic bridge (dialplan Dial()/Bridge()) holding `members`.
    fn basic_bridge(&mut self, members: &[String], creator: &str) {
        let id = rest::uuid_like(self.next_gen(), self.cfg.wall_clock_base_ms);
        self.bridges.insert(
            id.clone(),
            Bridge {
                id: id.clone(),
                class: "basic",
                creator: creator.to_string(),
                dissolving: false,
                technology: "simple_bridge".to_string(),
                bridge_type: "mixing".to_string(),
                name: String::new(),
                channels: Vec::new(),
                creation_ms: self.wall_ms(),
                video_mode: "talker".to_string(),
                video_source: None,
                playbacks: VecDeque::new(),
                recording: None,
                vars: BTreeMap::new(),
                reported: BTreeSet::new(),
            },
        );
        self.bridge_order.push(id.clone());
        self.bridge_event("BridgeCreated", &id, None, json!({}));
        for m in members {
            self.bridge_add(&id, m);
        }
    }

    /// DeviceStateChanged for the device behind a channel (`Local/exten@ctx` twice, as
    /// Asterisk publishes it for both halves; `PJSIP/alice`; `UnicastRTP/host`).
    fn device_state_for(&mut self, id: &str, state: &str) {
        let Some(c) = self.channels.get(id) else {
            return;
        };
        let (name, times) = match c.tech {
            Tech::Local(1) => (format!("Local/{}@{}", c.exten, c.context), 2),
            Tech::Local(_) => return,
            Tech::Sip => match &c.endpoint {
                Some(e) => (e.clone(), 1),
                None => return,
            },
            Tech::UnicastRtp => (
                c.name
                    .rsplit_once('-')
                    .map(|(a, _)| a.to_string())
                    .unwrap_or_else(|| c.name.clone()),
                1,
            ),
            Tech::Snoop => return,
        };
        // Local channels are named after where they were dialed, not where they are now.
        let name = match (c.tech, c.name.rsplit_once('-')) {
            (Tech::Local(_), Some((base, _))) => base.to_string(),
            _ => name,
        };
        for _ in 0..times {
            self.device_state_named(&name, state);
        }
    }

    /// A channel taken out of a bridge through ARI (removeChannel, bridge destroyed): its
    /// application drops the bridge subscription that adding the channel took.
    fn bridge_remove_by_ari(&mut self, b: &str, c: &str) {
        let app = self
            .channels
            .get(c)
            .and_then(|ch| ch.stasis.as_ref().map(|(a, _)| a.clone()));
        self.bridge_remove(b, c);
        if let Some(a) = app.and_then(|a| self.apps.get_mut(&a)) {
            if let Some(n) = a.bridge_refs.get_mut(b) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn destroy_bridge(&mut self, b: &str) {
        let members: Vec<String> = self.members(b);
        for m in members {
            self.bridge_remove_by_ari(b, &m);
        }
        let pbs: Vec<String> = self
            .bridges
            .get(b)
            .map(|br| br.playbacks.iter().cloned().collect())
            .unwrap_or_default();
        for pb in pbs {
            self.finish_playback(&pb, "done");
        }
        if let Some(r) = self.bridges.get(b).and_then(|br| br.recording.clone()) {
            self.finish_recording(&r, "done");
        }
        self.bridge_event("BridgeDestroyed", b, None, json!({}));
        self.bridges.remove(b);
        self.bridge_order.retain(|x| x != b);
        for a in self.apps.values_mut() {
            a.bridges.remove(b);
            a.bridge_refs.remove(b);
        }
    }
}

/// `app,arg1,arg2`: the data of `Stasis()`.
fn stasis_app_data(app: &str, args: &[String]) -> String {
    std::iter::once(app)
        .chain(args.iter().map(|a| a.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Evaluates `$[a = b]` / `$[a != b]` expressions (1 or 0); other expressions yield their text.
fn eval_brackets(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$[") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find(']') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let expr = &after[..end];
        let v = if let Some((a, b)) = expr.split_once("!=") {
            if a.trim() != b.trim() { "1" } else { "0" }.to_string()
        } else if let Some((a, b)) = expr.split_once('=') {
            if a.trim() == b.trim() { "1" } else { "0" }.to_string()
        } else {
            expr.trim().to_string()
        };
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A' | 'B' | 'C' | 'D' | 'a' | 'b' | 'c' | 'd')
}

/// `"Alice" <100>` / `Alice <100>` / `100`.
fn parse_callerid(s: &str) -> (String, String) {
    let s = s.trim();
    if let (Some(l), Some(r)) = (s.find('<'), s.rfind('>')) {
        if l < r {
            let name = s[..l].trim().trim_matches('"').to_string();
            return (name, s[l + 1..r].trim().to_string());
        }
    }
    if s.chars().all(|c| c.is_ascii_digit() || c == '+') {
        (String::new(), s.to_string())
    } else {
        (s.trim_matches('"').to_string(), String::new())
    }
}

/// Whether an event filter object (`{"type": "StasisStart"}`) matches an event.
fn filter_matches(filter: &Value, ev: &Value) -> bool {
    match filter {
        Value::Object(m) => m.iter().all(|(k, v)| match ev.get(k) {
            Some(e) => filter_matches(v, e),
            None => false,
        }),
        other => other == ev,
    }
}
