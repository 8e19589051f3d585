//! The simulator's internal model of channels, bridges, playbacks, recordings and applications.

use super::*;

// ---------------------------------------------------------------------------------------
// Internal model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tech {
    /// Local channel half (1 or 2).
    Local(u8),
    Sip,
    Snoop,
    UnicastRtp,
    /// chan_websocket (externalMedia `transport=websocket`).
    WebSocket,
}

/// What a channel does once the far end answers (originate / dial).
#[derive(Debug, Clone)]
pub(super) enum OnAnswer {
    Nothing,
    Stasis(String, Vec<String>),
    Dialplan(String, String, i64),
    /// Dialed by the dialplan Dial() of that channel: bridge the two.
    BridgeWith(String),
}

/// Where a channel's dialplan execution is waiting.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Exec {
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
pub(super) struct Script {
    pub(super) dtmf: String,
    pub(super) dtmf_delay: Duration,
    pub(super) dtmf_interval: Duration,
    pub(super) hangup_after_answer: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(super) struct Channel {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) tech: Tech,
    pub(super) state: &'static str,
    pub(super) protocol_id: String,
    pub(super) caller: (String, String),
    pub(super) connected: (String, String),
    pub(super) accountcode: String,
    pub(super) language: String,
    pub(super) context: String,
    pub(super) exten: String,
    pub(super) priority: i64,
    pub(super) app_name: String,
    pub(super) app_data: String,
    /// Dialplan location restored after Stasis (`AppDial2` for originated channels).
    pub(super) base_app: (String, String),
    pub(super) creation_ms: u64,
    pub(super) vars: BTreeMap<String, String>,
    /// Variables set with `report_events`: shown in `channelvars`.
    pub(super) reported: BTreeSet<String>,
    pub(super) linkedid: String,
    pub(super) peeraccount: String,
    pub(super) hold_intercept: bool,
    /// The channel ran dialplan (so it runs the `h` extension when it hangs up).
    pub(super) ran_pbx: bool,
    /// Offered by StasisBroadcast and not claimed yet.
    pub(super) broadcast_open: bool,
    /// The channel that dials this one (dialplan Dial(), ARI dial with `caller`).
    pub(super) dialed_by: Option<String>,
    /// Bridge(…,x): hang up instead of returning to the dialplan when the bridge ends.
    pub(super) hangup_after_bridge: bool,
    pub(super) stasis: Option<(String, Vec<String>)>,
    pub(super) bridge: Option<String>,
    pub(super) peer: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) exec: Exec,
    /// Generation for dialplan timers; bumped whenever execution is redirected.
    pub(super) exec_gen: u64,
    pub(super) on_answer: OnAnswer,
    /// Created with `channels/create` and not dialed yet.
    pub(super) created_only: bool,
    /// Being dialed (Dial events are published with `peer` = this channel).
    pub(super) dialing: Option<String>,
    pub(super) script: Option<Script>,
    /// Current and queued playbacks on this channel.
    pub(super) playbacks: VecDeque<String>,
    pub(super) recording: Option<String>,
    /// Snoop channels spying on this one.
    pub(super) snoops: Vec<String>,
    /// For a snoop: the spied channel.
    pub(super) snoop_target: Option<String>,
    pub(super) hanging_up: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Bridge {
    pub(super) id: String,
    /// `stasis` (ARI) or `basic` (Dial/Bridge in the dialplan; dissolves below two members).
    pub(super) class: &'static str,
    pub(super) creator: String,
    /// A basic bridge losing its last members.
    pub(super) dissolving: bool,
    pub(super) technology: String,
    pub(super) bridge_type: String,
    pub(super) name: String,
    pub(super) channels: Vec<String>,
    pub(super) creation_ms: u64,
    pub(super) video_mode: String,
    pub(super) video_source: Option<String>,
    pub(super) playbacks: VecDeque<String>,
    pub(super) recording: Option<String>,
    pub(super) vars: BTreeMap<String, String>,
    pub(super) reported: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PbState {
    Queued,
    Playing,
    Paused,
    /// Stopped while queued: it finishes (`PlaybackFinished`, state `done`) when its turn
    /// comes, as `res_stasis_playback`'s `playback_first_update` reports a canceled one.
    Canceled,
}

#[derive(Debug, Clone)]
pub(super) struct Playback {
    pub(super) id: String,
    pub(super) media: Vec<String>,
    pub(super) index: usize,
    pub(super) target: String,
    pub(super) language: String,
    pub(super) state: PbState,
    /// Total length of the current media, `None` for endless media (tones).
    pub(super) length: Option<Duration>,
    /// Position in the current media at `since`.
    pub(super) offset: Duration,
    pub(super) since: Duration,
    pub(super) skip: Duration,
    pub(super) gen: u64,
    pub(super) failed: bool,
}

#[derive(Debug, Clone)]
pub(super) struct LiveRec {
    pub(super) name: String,
    pub(super) format: String,
    pub(super) target: String,
    pub(super) state: &'static str,
    pub(super) started: Duration,
    /// Recorded time before the current running segment.
    pub(super) accumulated: Duration,
    pub(super) max_duration: Option<Duration>,
    /// maxSilenceSeconds: silence detection on, talking/silence durations reported.
    pub(super) max_silence: Option<Duration>,
    pub(super) terminate_on: String,
    pub(super) gen: u64,
    pub(super) muted: bool,
    /// The channel's playbacks queued before the `record`: its commands run in order, so
    /// the recording starts once they are over.
    pub(super) ahead: Vec<String>,
    /// Its start came while playbacks were ahead: it starts (after `start_delay`) once they
    /// are over.
    pub(super) blocked: bool,
    /// From the command's turn to `RecordingStarted` (the command being picked up).
    pub(super) start_delay: Duration,
    /// The beep played after `RecordingStarted` (zero without `beep=true`): not recorded.
    pub(super) beep: Duration,
}

#[derive(Debug, Clone)]
pub(super) struct StoredRec {
    pub(super) format: String,
    pub(super) duration_s: u64,
}

#[derive(Debug, Clone, Default)]
pub(super) struct App {
    pub(super) connected: bool,
    pub(super) subscribe_all: bool,
    pub(super) channels: BTreeSet<String>,
    pub(super) bridges: BTreeSet<String>,
    /// Bridges this app follows because its Stasis channels were added to them.
    pub(super) bridge_refs: BTreeMap<String, usize>,
    pub(super) endpoints: BTreeSet<String>,
    pub(super) devices: BTreeSet<String>,
    /// `channel:` / `bridge:` / `endpoint:` / `deviceState:` with an empty id: all of them.
    pub(super) all_kinds: BTreeSet<String>,
    pub(super) allowed: Vec<Value>,
    pub(super) disallowed: Vec<Value>,
}

/// A resource an event concerns, for routing.
#[derive(Debug, Clone)]
pub(super) enum Res {
    Chan(String),
    Bridge(String),
    Device(String),
}

#[derive(Debug, Clone)]
pub(super) enum Timer {
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
    /// A recording's start (`RecordingStarted`, then the beep).
    RecStart(String, u64),
}
