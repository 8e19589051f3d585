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
//!   answers. `UnicastRTP` channels come from `channels/externalMedia`; with
//!   `transport=websocket`, `encapsulation=none`, `connection_type=server`, a
//!   `WebSocket/INCOMING/…` channel that waits (Down) for the application's media socket
//!   ([`Sim::media_reserve`], [`Sim::media_connect`], [`MediaSignal`]); with
//!   `encapsulation=audiosocket` an `AudioSocket/<host>-<uuid>` channel whose TCP connection
//!   to the application the server makes ([`MediaSignal::AudioSocketConnect`]).
//! * **Media**: playbacks queue per channel/bridge, take their length from
//!   [`SimConfig::media_durations`] (`silence/N` is N s, `digits:`/`number:` 0.6 s a
//!   character, `tone:` plays until stopped, `recording:` the stored duration); an unknown
//!   sound fails (PlaybackStarted, PlaybackFinished `failed`) unless
//!   `unknown_media_duration` is set. Recordings store a WAV of silence of the recorded
//!   length; with `maxSilenceSeconds` they report talking/silence durations from the
//!   prompts played toward the recorded party.
//!
//! # Layout
//!
//! [`Sim`] is split by concern, each part with its own state: `timers` (simulated clock,
//! timer table, id counters), `routing` (applications, subscriptions, event filters, the
//! outgoing queue), `channels` (channel table and lifecycle), `bridges` (bridge table and
//! membership), `media` (playbacks and recordings), `exec` (dialplan execution and DTMF),
//! `vars` (variables and `${…}` substitution), `json` (the ARI representations), and
//! `rest/` with one module per REST resource. It never uses `ari-proto`'s types: it is the
//! oracle the client is tested against.
//!
//! Not modelled: audio itself (DTMF and "speech" are events and timers), `maxSilence`
//! auto-stop, dynamic configuration, connecting external media to its host, ChannelTalking
//! events, transfers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Map, Value};

mod bridges;
mod channels;
mod dialplan;
mod exec;
mod json;
mod media;
mod media_ws;
mod model;
mod outbound;
mod rest;
mod routing;
mod time;
mod timers;
mod vars;

mod regex;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use bridges::Bridges;
use channels::Channels;
use dialplan::Dialplan;
use media::Media;
use media_ws::MediaWs;
pub use media_ws::{MediaConnectError, MediaConnectInfo, MediaSignal};
use model::{
    App, Bridge, Channel, Exec, LiveRec, OnAnswer, PbState, Playback, Res, Script, StoredRec, Tech,
    Timer,
};
use routing::Routing;
use timers::{Clock, Ids};

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
    /// `silence/5` …). `silence/N` is N seconds unless listed. `beep` is also the beep of a
    /// recording made with `beep=true`, played after its `RecordingStarted` (as Asterisk
    /// does); the audio is recorded from its end.
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
    /// `res_ari_mailboxes` is loaded: `/mailboxes` works (default). Off, it answers 404
    /// `Resource not found`, as the recorded servers (built without it) did.
    pub mailboxes: bool,
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
            mailboxes: true,
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

/// A SIP `REFER` a phone sends on its call (see [`Sim::refer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refer {
    /// Blind transfer: the phone asks for its call to go to `destination` (the user part
    /// its user dialled, e.g. `2000`).
    Blind {
        /// The requested destination.
        destination: String,
    },
    /// Attended transfer: the phone asks for its call to replace its other call, the
    /// channel `replaces` (named in SIP by that call's Call-ID, its `protocol_id`).
    Attended {
        /// The channel of the phone's other call.
        replaces: String,
    },
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

/// The simulated Asterisk. See the module documentation.
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    dialplan: Dialplan,
    clock: Clock,
    ids: Ids,
    channels: Channels,
    bridges: Bridges,
    media: Media,
    media_ws: MediaWs,
    routing: Routing,
    system: System,
}

/// Asterisk-wide state: device states, global variables, endpoints, modules, logging.
#[derive(Debug)]
struct System {
    devices: BTreeMap<String, String>,
    globals: BTreeMap<String, String>,
    endpoints: BTreeSet<String>,
    /// name → (description, support level, running)
    modules: BTreeMap<String, (String, String, bool)>,
    log_channels: Vec<(String, String, String)>,
    /// External MWI mailboxes: name → (old messages, new messages).
    mailboxes: BTreeMap<String, (i64, i64)>,
}

/// The methods ARI (Asterisk master) has for a path below `/ari/`, in Asterisk's order
/// (`GET`, `POST`, `PUT`, `DELETE`): what an `OPTIONS` answer's `Allow` header lists after
/// `OPTIONS`. `None` for a path no resource has.
///
/// ```
/// let segs = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
/// assert_eq!(ari_testkit::sim::allowed_methods(&segs("channels/abc/ring")), Some(&["POST", "DELETE"][..]));
/// assert_eq!(ari_testkit::sim::allowed_methods(&segs("channels/abc/nope")), None);
/// ```
pub fn allowed_methods(segments: &[String]) -> Option<&'static [&'static str]> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    rest::allowed_methods(&s)
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
            clock: Clock::default(),
            ids: Ids::default(),
            channels: Channels::default(),
            bridges: Bridges::default(),
            media: Media::default(),
            media_ws: MediaWs::default(),
            routing: Routing::default(),
            system: System {
                devices: BTreeMap::new(),
                globals: BTreeMap::new(),
                endpoints,
                modules,
                mailboxes: BTreeMap::new(),
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
            },
            cfg,
        }
    }

    /// The configuration this simulation runs with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Ids of the channels that currently exist, in creation order.
    pub fn channel_ids(&self) -> Vec<String> {
        self.channels.order.clone()
    }

    /// Ids of the bridges that currently exist, in creation order.
    pub fn bridge_ids(&self) -> Vec<String> {
        self.bridges.order.clone()
    }

    /// Whether `app` is registered and connected.
    pub fn app_is_connected(&self, app: &str) -> bool {
        self.routing.apps.get(app).is_some_and(|a| a.connected)
    }

    /// An application connected its events WebSocket (`app=…&subscribeAll=…`): it is
    /// registered (or re-activated) and receives events from now on. Re-registering an
    /// already connected name keeps its subscriptions; the server is the one that tells
    /// the previous connection with `ApplicationReplaced`.
    pub fn app_connected(&mut self, now: Duration, app: &str, subscribe_all: bool) {
        self.advance(now);
        let a = self.routing.apps.entry(app.to_string()).or_default();
        a.connected = true;
        a.subscribe_all = subscribe_all;
    }

    /// An application's WebSocket closed: it is unregistered and gets no more events.
    /// Channels still in its Stasis stay there (as in Asterisk) until hung up.
    pub fn app_disconnected(&mut self, now: Duration, app: &str) {
        self.advance(now);
        let in_use = self
            .channels
            .by_id
            .values()
            .any(|c| c.stasis.as_ref().is_some_and(|(a, _)| a == app));
        if in_use {
            if let Some(a) = self.routing.apps.get_mut(app) {
                a.connected = false;
            }
        } else {
            self.routing.apps.remove(app);
        }
    }

    /// When [`Sim::handle_timeout`] should next be called, if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.clock.timers.keys().next().map(|(d, _)| *d)
    }

    /// Runs everything scheduled at or before `now` (media ends, dialplan waits, DTMF of
    /// scripted callers, recordings reaching their maximum duration …).
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        let mut guard = 0u32;
        while let Some((&key, _)) = self.clock.timers.iter().next() {
            if key.0 > now || guard > 100_000 {
                break;
            }
            guard += 1;
            let Some(t) = self.clock.timers.remove(&key) else {
                break;
            };
            self.clock.now = key.0.max(self.clock.now);
            self.fire(t);
        }
        self.clock.now = now.max(self.clock.now);
    }

    /// Events produced since the last call, in order, one per application.
    pub fn drain_events(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.routing.out)
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
                if let Some(c) = self.channels.by_id.get_mut(id.as_str()) {
                    c.caller = (call.caller_name.clone(), call.caller_number.clone());
                    c.base_app = (String::new(), String::new());
                }
            }
            self.emit_created(&id1);
            self.emit_created(&id2);
            if let Some(c) = self.channels.by_id.get_mut(&id2) {
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
        if !self.channels.by_id.contains_key(channel_id) {
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
        if !self.channels.by_id.contains_key(channel_id) {
            return Err(format!("channel {channel_id} not found"));
        }
        self.remote_hangup(channel_id, 16);
        Ok(())
    }
}

impl Sim {
    /// The phone on `channel_id` (a SIP channel) sends a `REFER` and the channel's transfers
    /// are handed to ARI (`TRANSFER_HANDLING(ari-only)=1`, Asterisk 20+): Asterisk accepts it
    /// and emits `ChannelTransfer`, and does nothing else: the application carries the
    /// transfer out (bridges, originate, hangups) and reports its progress to the phone with
    /// `POST channels/{id}/transfer_progress`.
    ///
    /// The event names what Asterisk resolves: `refer_to.requested_destination` holds the
    /// blind transfer's `destination` or the attended transfer's Call-ID (`protocol_id`),
    /// with `destination_channel` (the replaced channel), and `connected_channel` and
    /// `bridge` (its bridge and the one other channel in it); `referred_by` holds
    /// `source_channel` (`channel_id`) and likewise its bridge and peer. Fields that do not
    /// resolve are left out, as Asterisk does.
    pub fn refer(&mut self, now: Duration, channel_id: &str, refer: Refer) -> Result<(), String> {
        self.advance(now);
        let Some(ch) = self.channels.by_id.get(channel_id) else {
            return Err(format!("channel {channel_id} not found"));
        };
        if ch.tech != Tech::Sip {
            return Err(format!("channel {channel_id} is not a SIP channel"));
        }
        let mut res = vec![Res::Chan(channel_id.to_string())];
        let mut refer_to = Map::new();
        match &refer {
            Refer::Blind { destination } => {
                refer_to.insert(
                    "requested_destination".to_string(),
                    json!({ "destination": destination }),
                );
            }
            Refer::Attended { replaces } => {
                let Some(other) = self.channels.by_id.get(replaces) else {
                    return Err(format!("channel {replaces} not found"));
                };
                refer_to.insert(
                    "requested_destination".to_string(),
                    json!({ "protocol_id": other.protocol_id }),
                );
                refer_to.insert("destination_channel".to_string(), self.chan_json(replaces));
                self.transfer_party(replaces, &mut refer_to);
                res.push(Res::Chan(replaces.clone()));
            }
        }
        let mut referred_by = Map::new();
        referred_by.insert("source_channel".to_string(), self.chan_json(channel_id));
        self.transfer_party(channel_id, &mut referred_by);
        let mut ev = self.event("ChannelTransfer");
        ev.insert("refer_to".to_string(), Value::Object(refer_to));
        ev.insert("referred_by".to_string(), Value::Object(referred_by));
        self.emit(ev, &res);
        Ok(())
    }

    /// `bridge` and `connected_channel` of a transfer party: the bridge `id` is in, and the
    /// one other channel in it.
    fn transfer_party(&self, id: &str, into: &mut Map<String, Value>) {
        let Some(b) = self
            .channels
            .by_id
            .get(id)
            .and_then(|c| c.bridge.as_ref())
            .and_then(|b| self.bridges.by_id.get(b))
        else {
            return;
        };
        let others: Vec<&String> = b.channels.iter().filter(|c| *c != id).collect();
        if let [peer] = others.as_slice() {
            into.insert("connected_channel".to_string(), self.chan_json(peer));
        }
        into.insert("bridge".to_string(), self.bridge_json(&b.id));
    }
}

/// `app,arg1,arg2`: the data of `Stasis()`, as the dialplan would write it for Asterisk to
/// give these arguments: the characters its argument parser takes specially (`,`, `\`, `"`,
/// parentheses, square brackets) escaped with a backslash (`Stasis(hello,a\,b)` gives `a,b`).
fn stasis_app_data(app: &str, args: &[String]) -> String {
    let mut data = app.to_string();
    for arg in args {
        data.push(',');
        for c in arg.chars() {
            if matches!(c, ',' | '\\' | '"' | '(' | ')' | '[' | ']') {
                data.push('\\');
            }
            data.push(c);
        }
    }
    data
}

/// The arguments `Stasis()` gets from `data` (what follows the application's name), split as
/// Asterisk's `AST_STANDARD_APP_ARGS` does: no split inside double quotes, parentheses or
/// square brackets; double quotes removed; a backslash removed and the character after it
/// kept as it is; a trailing comma gives an empty argument; past 128 arguments (with the
/// name) the rest is the last one, unsplit.
fn stasis_args(data: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut parens, mut brackets, mut quoted) = (0u32, 0u32, false);
    let mut chars = data.char_indices();
    while let Some((at, c)) = chars.next() {
        if out.len() == 127 {
            // 127 arguments (128 fields with the name): the rest is the last one.
            out.push(data[at..].to_string());
            return out;
        }
        match c {
            '(' => parens += 1,
            ')' => parens = parens.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '"' => {
                quoted = !quoted;
                continue;
            }
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    cur.push(next);
                }
                continue;
            }
            ',' if parens == 0 && brackets == 0 && !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !data.is_empty() {
        out.push(cur);
    }
    out
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
