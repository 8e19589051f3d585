//! The state machine of one chan_websocket media socket.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::control::{
    Command, CommandError, ControlFormat, Direction, MediaEvent, MediaStart, ParseError,
};
use super::reframe::Reframer;

/// Asterisk sends `MEDIA_XOFF` when its queue reaches this many frames.
pub const ASTERISK_XOFF_LEVEL: u32 = 900;
/// Asterisk sends `MEDIA_XON` when its queue falls below this many frames.
pub const ASTERISK_XON_LEVEL: u32 = 800;
/// A message arriving while Asterisk's queue holds this many frames is dropped whole.
pub const ASTERISK_QUEUE_LIMIT: u32 = 1000;
/// The largest audio message Asterisk reads: its WebSocket frame (8 header bytes for a
/// masked message of this size) must fit in 65,535 bytes, or Asterisk closes the socket with
/// 1009 and hangs the channel up.
pub const ASTERISK_MAX_MESSAGE: usize = 65_527;
/// The releases that answer `MARK_MEDIA` with `MEDIA_MARK_PROCESSED`; older ones ignore the
/// command without a reply.
pub const MARK_MEDIA_SINCE: &str = "20.18.0, 22.8.0, 23.2.0";

/// The settings of a [`MediaSession`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MediaConfig {
    /// The control format to use until `MEDIA_START` shows the one Asterisk speaks (it never
    /// mixes them). Default: plain text.
    pub control_format: ControlFormat,
    /// Frames the session holds locally while it may not send (flow control, pacing), and
    /// the bound on commands waiting behind them. Default 500 (10 s at 20 ms).
    pub queue_frames: usize,
    /// Cut the application's audio into frames of `optimal_frame_size` (default true). When
    /// false, each chunk is sent as one message, and a chunk shorter than one frame outside
    /// buffering mode is refused ([`SendError::ShortMessage`]), since Asterisk would drop it.
    pub reframe: bool,
    /// How many frames the session lets Asterisk's playout queue hold, by its own estimate
    /// (frames sent minus one per ptime played, frozen while paused). Frames beyond that wait
    /// locally, so the application may hand audio over as fast as it likes and it still goes
    /// out at real-time pace. Default 10 (200 ms ahead); at most 899, below Asterisk's XOFF
    /// level. A larger value lowers the risk of gaps, a smaller one the latency of marks.
    pub send_ahead: u32,
    /// Passthrough mode (the `p` dial option; forced by Asterisk for opus, speex and g729,
    /// whose `MEDIA_START` shows an `optimal_frame_size` of 0): Asterisk queues every binary
    /// message as one frame, as-is, and refuses every command but `ANSWER`, `HANGUP` and
    /// `GET_STATUS`. The session then sends each chunk the application hands over as one
    /// message (no re-framing; the application frames and sizes its media itself), counts
    /// it as one frame of Asterisk's queue, and refuses those commands locally
    /// ([`SendError::Passthrough`]). Default false; an `optimal_frame_size` of 0 turns it on.
    pub passthrough: bool,
    /// The media direction the channel was created with (externalMedia `direction`, dial
    /// option `d()`), from the application's point of view. While it is
    /// [`Direction::In`] (as created, or after [`Command::SetMediaDirection`]) Asterisk drops
    /// the application's audio, so the session refuses it ([`SendError::DirectionIn`]).
    /// Default [`Direction::Both`].
    pub direction: Direction,
    /// How long a `MARK_MEDIA` marker waits for its `MEDIA_MARK_PROCESSED` after the session
    /// estimates Asterisk has played everything queued before it. Asterisk before
    /// [`MARK_MEDIA_SINCE`] ignores the command without a reply: past this wait the marker
    /// is given up, counted ([`MediaStats::marks_unanswered`]) and reported
    /// ([`MediaOutput::MarksUnanswered`]), so the pending list never grows without bound.
    /// Its answer, if it still comes, is reported as [`MediaOutput::MarkAnsweredLate`]
    /// (never taken for a newer marker with the same id).
    /// Default 2 s (Asterisk answers within a tick of the playout reaching the marker).
    pub mark_timeout: Duration,
    /// Whether Asterisk answers `MARK_MEDIA` ([`MARK_MEDIA_SINCE`]). `None` (the default):
    /// yes unless `MEDIA_START` shows a release before 20.17 (no `channel_id`); ari-client
    /// sets it from the server's version. `Some(false)`: marks are refused at once
    /// ([`SendError::Unsupported`]). `Some(true)`: marks are sent whatever `MEDIA_START`
    /// shows (a release with the feature backported); [`mark_timeout`](Self::mark_timeout)
    /// still gives up the ones never answered.
    pub mark_media: Option<bool>,
    /// The most markers that may wait for their `MEDIA_MARK_PROCESSED` at once (e.g. while
    /// playout is paused and none can be processed): one more is refused
    /// ([`SendError::TooManyMarks`]). Default 1,000; at least 1.
    pub max_pending_marks: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            control_format: ControlFormat::PlainText,
            queue_frames: 500,
            reframe: true,
            send_ahead: 10,
            passthrough: false,
            direction: Direction::Both,
            mark_timeout: Duration::from_secs(2),
            mark_media: None,
            max_pending_marks: 1000,
        }
    }
}

impl MediaConfig {
    /// The defaults.
    pub fn new() -> MediaConfig {
        MediaConfig::default()
    }

    /// Sets [`control_format`](Self::control_format).
    pub fn control_format(mut self, format: ControlFormat) -> Self {
        self.control_format = format;
        self
    }

    /// Sets [`queue_frames`](Self::queue_frames) (at least 1).
    pub fn queue_frames(mut self, frames: usize) -> Self {
        self.queue_frames = frames.max(1);
        self
    }

    /// Sets [`reframe`](Self::reframe).
    pub fn reframe(mut self, reframe: bool) -> Self {
        self.reframe = reframe;
        self
    }

    /// Sets [`passthrough`](Self::passthrough).
    pub fn passthrough(mut self, passthrough: bool) -> Self {
        self.passthrough = passthrough;
        self
    }

    /// Sets [`direction`](Self::direction).
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Sets [`mark_timeout`](Self::mark_timeout).
    pub fn mark_timeout(mut self, timeout: Duration) -> Self {
        self.mark_timeout = timeout;
        self
    }

    /// Sets [`mark_media`](Self::mark_media).
    pub fn mark_media(mut self, supported: Option<bool>) -> Self {
        self.mark_media = supported;
        self
    }

    /// Sets [`max_pending_marks`](Self::max_pending_marks) (at least 1).
    pub fn max_pending_marks(mut self, marks: usize) -> Self {
        self.max_pending_marks = marks.max(1);
        self
    }

    /// Sets [`send_ahead`](Self::send_ahead) (clamped to 1..=899).
    pub fn send_ahead(mut self, frames: u32) -> Self {
        self.send_ahead = frames.clamp(1, ASTERISK_XOFF_LEVEL - 1);
        self
    }
}

/// Where a media socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaState {
    /// Connected, `MEDIA_START` not seen yet.
    AwaitingStart,
    /// `MEDIA_START` seen: audio flows.
    Started,
    /// The application sent `HANGUP` or a CLOSE: no more audio goes out.
    Closing,
    /// The socket is closed.
    Closed,
}

/// Something to send on the media socket, in the order [`MediaSession::poll_transmit`] hands
/// them out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transmit {
    /// A text (control) message.
    Text(String),
    /// A binary (audio) message.
    Binary(Bytes),
    /// A PONG answering a PING (only ever in reply: an unsolicited PONG crashes Asterisk
    /// 20.21, 22.11 and 23.5).
    Pong(Bytes),
    /// A CLOSE frame; nothing follows it.
    Close {
        /// The status code (1000: normal).
        code: u16,
        /// The reason text.
        reason: String,
    },
}

/// What the session hands to the application, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaOutput {
    /// A control event from Asterisk (every one, unknown ones included, except a
    /// `MEDIA_MARK_PROCESSED` that answers a marker already given up: that one comes as
    /// [`MarkAnsweredLate`](Self::MarkAnsweredLate)).
    Event(MediaEvent),
    /// One audio message from Asterisk: raw media in the negotiated format (no header).
    Audio(Bytes),
    /// Audio the application handed over did not fit in the local queue: this many frames
    /// were dropped since the previous `Overflow` (also counted in
    /// [`MediaStats::overflow_frames`]).
    Overflow {
        /// Frames dropped.
        dropped_frames: u64,
    },
    /// A text message from Asterisk that could not be parsed (counted in
    /// [`MediaStats::malformed`]).
    Malformed(ParseError),
    /// `FLUSH_MEDIA` discarded markers: their `MEDIA_MARK_PROCESSED` /
    /// `MEDIA_BUFFERING_COMPLETED` events will never come.
    MarkersDiscarded {
        /// Correlation ids of the discarded `MARK_MEDIA` markers, oldest first.
        marks: Vec<Option<String>>,
        /// Correlation ids of the discarded `STOP_MEDIA_BUFFERING` markers.
        buffering: Vec<Option<String>>,
    },
    /// `MARK_MEDIA` markers given up: no `MEDIA_MARK_PROCESSED` came within
    /// [`MediaConfig::mark_timeout`] of the session's estimate of when Asterisk played
    /// everything queued before them. Asterisk before [`MARK_MEDIA_SINCE`] ignores
    /// `MARK_MEDIA`: do not wait for these (counted in [`MediaStats::marks_unanswered`]).
    MarksUnanswered {
        /// Correlation ids of the markers given up, oldest first.
        marks: Vec<Option<String>>,
    },
    /// A `MEDIA_MARK_PROCESSED` answered a `MARK_MEDIA` marker already given up
    /// ([`MarksUnanswered`](Self::MarksUnanswered)), counted in [`MediaStats::marks_late`].
    ///
    /// Also an answer to a marker `FLUSH_MEDIA` discarded after it went out
    /// ([`MarkersDiscarded`](Self::MarkersDiscarded)): Asterisk may have processed it, and
    /// sent its answer, before it took the flush.
    ///
    /// The session never sends a correlation id that an answer may still come for: a new
    /// marker whose id is pending, given up or discarded that way goes out as `id#2` (`#3`,
    /// … the first free one), and its answer is handed over with the application's id. So
    /// an answer is never taken for another marker than the one it answers. Asterisk
    /// answers markers in queue order: the markers given up before the one answered are
    /// then forgotten (Asterisk is past them), and an answer to a pending marker forgets
    /// every marker given up. At most [`MediaConfig::max_pending_marks`] markers given up
    /// are remembered.
    MarkAnsweredLate {
        /// The correlation id of the marker answered.
        mark: Option<String>,
    },
    /// The socket closed (the last output).
    Closed {
        /// The close code Asterisk sent, if any (1000 after `HANGUP`).
        code: Option<u16>,
        /// The close reason.
        reason: String,
        /// Frames still queued locally, never sent.
        unsent_frames: usize,
        /// Bytes of a partial frame held by the re-framer, never sent.
        unsent_bytes: usize,
    },
}

/// Why audio or a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Audio before `MEDIA_START`: the frame size is not known yet.
    NotStarted,
    /// The session is closing or closed.
    Closed,
    /// With re-framing off, a message shorter than one frame outside buffering mode: Asterisk
    /// would drop it.
    ShortMessage {
        /// The message length.
        len: usize,
        /// The frame size.
        frame_size: usize,
    },
    /// The command could not be built.
    Command(CommandError),
    /// Too many commands wait behind held-back audio ([`MediaConfig::queue_frames`]).
    QueueFull,
    /// In passthrough mode Asterisk refuses every command but `ANSWER`, `HANGUP` and
    /// `GET_STATUS` (it would answer `ERROR "<command> not supported in passthrough mode"`).
    Passthrough {
        /// The command name.
        command: &'static str,
    },
    /// In passthrough mode, an audio message longer than Asterisk reads
    /// ([`ASTERISK_MAX_MESSAGE`]): it would close the socket with 1009 and hang the call up.
    /// (Outside passthrough mode long chunks are split into several messages.)
    MessageTooLarge {
        /// The message length.
        len: usize,
        /// The largest message Asterisk reads.
        max: usize,
    },
    /// The media direction is `in` (the application only receives): Asterisk would drop
    /// the audio.
    DirectionIn,
    /// The command is newer than the Asterisk on the other end, as its version or its
    /// `MEDIA_START` shows (one without `channel_id` comes from a release before 20.17, 22.7,
    /// 23.1; see [`MediaConfig::mark_media`]): it would ignore the command without a reply.
    Unsupported {
        /// The command name.
        command: &'static str,
        /// The releases that have it.
        since: &'static str,
    },
    /// [`MediaConfig::max_pending_marks`] markers already wait for their
    /// `MEDIA_MARK_PROCESSED` (playout paused, or an Asterisk that does not answer).
    TooManyMarks {
        /// The markers waiting.
        pending: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotStarted => {
                f.write_str("media not started yet: wait for MEDIA_START before sending audio")
            }
            SendError::Closed => f.write_str("the media session is closed"),
            SendError::ShortMessage { len, frame_size } => write!(
                f,
                "a {len}-byte audio message is shorter than one {frame_size}-byte frame: \
                 Asterisk would drop it (enable re-framing or use buffering mode)"
            ),
            SendError::Command(_) => f.write_str("invalid media command"),
            SendError::QueueFull => f.write_str(
                "too many media commands wait behind held-back audio (the local queue is full)",
            ),
            SendError::Passthrough { command } => write!(
                f,
                "{command} is not supported in passthrough mode (only ANSWER, HANGUP and \
                 GET_STATUS are; create the channel without the p option and with a codec \
                 other than opus, speex or g729)"
            ),
            SendError::DirectionIn => f.write_str(
                "the media direction is 'in' (the application only receives): Asterisk would \
                 drop this audio; send SET_MEDIA_DIRECTION with 'both' or 'out' first",
            ),
            SendError::Unsupported { command, since } => write!(
                f,
                "{command} needs Asterisk {since} or later; this one would ignore it without a \
                 reply"
            ),
            SendError::TooManyMarks { pending } => write!(
                f,
                "{pending} MARK_MEDIA markers already wait for MEDIA_MARK_PROCESSED (is \
                 playout paused?); wait for them or flush"
            ),
            SendError::MessageTooLarge { len, max } => write!(
                f,
                "a {len}-byte audio message is longer than the {max} bytes Asterisk reads: it \
                 would close the media socket (1009) and hang the call up; in passthrough \
                 mode send one frame per message"
            ),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Command(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CommandError> for SendError {
    fn from(e: CommandError) -> Self {
        SendError::Command(e)
    }
}

/// What [`MediaSession::send_audio`] did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Queued {
    /// Frames (messages) queued for sending.
    pub frames: usize,
    /// Frames dropped because the local queue was full.
    pub dropped: usize,
}

/// Counters of a [`MediaSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MediaStats {
    /// Audio messages received.
    pub frames_in: u64,
    /// Audio bytes received.
    pub bytes_in: u64,
    /// Audio messages handed out to send.
    pub frames_out: u64,
    /// Audio bytes handed out to send.
    pub bytes_out: u64,
    /// Control events received (unknown ones included).
    pub events: u64,
    /// Unknown control events received.
    pub unknown_events: u64,
    /// Text messages that could not be parsed.
    pub malformed: u64,
    /// `MEDIA_XOFF` events received.
    pub xoff: u64,
    /// Frames dropped because the local queue was full.
    pub overflow_frames: u64,
    /// Frames dropped locally by `FLUSH_MEDIA`.
    pub flushed_frames: u64,
    /// Commands handed out to send.
    pub commands: u64,
    /// `MARK_MEDIA` markers given up without their `MEDIA_MARK_PROCESSED`
    /// ([`MediaOutput::MarksUnanswered`]).
    pub marks_unanswered: u64,
    /// `MEDIA_MARK_PROCESSED` answers to markers already given up
    /// ([`MediaOutput::MarkAnsweredLate`]).
    pub marks_late: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    Pause,
    Continue,
    Flush,
}

/// A `MARK_MEDIA` marker waiting for its `MEDIA_MARK_PROCESSED`.
#[derive(Debug)]
struct PendingMark {
    id: Option<String>,
    /// The correlation id sent: the application's, or that id with a `#<n>` suffix while
    /// an answer to an earlier marker with the same id may still come.
    wire: Option<String>,
    /// The estimated played-frame count at which Asterisk's playout reaches it, once sent.
    at: Option<u64>,
    /// When the estimated playout reached it.
    reached: Option<Instant>,
}

#[derive(Debug)]
enum Item {
    Frame(Bytes),
    Command(Command, String),
}

/// The state machine of one chan_websocket media socket (sans-IO).
///
/// The adapter owns the WebSocket. It reports what arrives
/// ([`handle_text`](Self::handle_text), [`handle_binary`](Self::handle_binary),
/// [`handle_ping`](Self::handle_ping), [`handle_close`](Self::handle_close)); the application
/// hands over audio ([`send_audio`](Self::send_audio)) and commands
/// ([`send_command`](Self::send_command), [`close`](Self::close)). After each of those the
/// adapter drains [`poll_transmit`](Self::poll_transmit) (sending each [`Transmit`] in order)
/// and [`poll_output`](Self::poll_output), then waits for the socket or for
/// [`poll_timeout`](Self::poll_timeout), whichever comes first, and polls again. `now` never
/// goes backwards.
///
/// **Flow control.** Audio goes out as binary messages of exactly `optimal_frame_size` bytes
/// (a sub-frame tail waits for more audio: Asterisk would drop a short message). The session
/// keeps Asterisk's queue near [`MediaConfig::send_ahead`] frames by its own estimate, stops
/// handing out audio on `MEDIA_XOFF` and resumes on `MEDIA_XON`. Audio that cannot go out
/// waits in a bounded local queue ([`MediaConfig::queue_frames`]); what does not fit is
/// dropped, counted ([`MediaStats::overflow_frames`]), reported by `send_audio` and signalled
/// with [`MediaOutput::Overflow`]: never silently. Commands that act on Asterisk's queue
/// (marks, buffering, `REPORT_QUEUE_DRAINED`) wait in order with the audio; the others go out
/// at once. `FLUSH_MEDIA` empties the local queue as well as Asterisk's.
///
/// ```
/// use std::time::{Duration, Instant};
/// use ari_proto::media::websocket::{MediaConfig, MediaEvent, MediaOutput, MediaSession, Transmit};
/// use bytes::Bytes;
///
/// let mut now = Instant::now(); // the adapter's clock
/// let mut media = MediaSession::new(MediaConfig::new());
/// media.handle_text("MEDIA_START connection_id:c1 channel:WebSocket/INCOMING/0x1 \
///     channel_id:em-1 format:ulaw optimal_frame_size:160 ptime:20");
/// assert!(matches!(media.poll_output(), Some(MediaOutput::Event(MediaEvent::MediaStart(_)))));
///
/// // Audio in: hand it to the application.
/// media.handle_binary(Bytes::from(vec![0xff; 160]));
/// let Some(MediaOutput::Audio(frame)) = media.poll_output() else { unreachable!() };
///
/// // Audio out, in any chunk size: it leaves as whole 160-byte frames.
/// media.send_audio(Bytes::from(vec![0x7f; 400]))?;
/// while let Some(t) = media.poll_transmit(now) {
///     assert!(matches!(t, Transmit::Binary(ref b) if b.len() == 160));
/// }
/// assert_eq!(media.stats().frames_out, 2); // 80 bytes wait for more audio
///
/// // Audio beyond `send_ahead` waits for Asterisk's queue to drain.
/// media.send_audio(Bytes::from(vec![0x7f; 160 * 30]))?;
/// while media.poll_transmit(now).is_some() {}
/// now = media.poll_timeout().expect("frames wait");
/// assert!(media.poll_transmit(now).is_some());
/// # Ok::<(), ari_proto::media::websocket::SendError>(())
/// ```
#[derive(Debug)]
pub struct MediaSession {
    config: MediaConfig,
    state: MediaState,
    format: ControlFormat,
    start: Option<MediaStart>,
    frame_size: usize,
    ptime: Duration,
    reframer: Reframer,
    buffering: bool,
    xoff: bool,
    /// Commands that go out at once (and PONG/CLOSE).
    immediate: VecDeque<(Transmit, Effect)>,
    /// Audio and queue-ordered commands, in order.
    queue: VecDeque<Item>,
    queued_frames: usize,
    queued_commands: usize,
    /// Markers submitted and not yet processed (local or at Asterisk).
    pending_marks: VecDeque<PendingMark>,
    /// Markers sent and no longer pending (given up, or discarded by `FLUSH_MEDIA` after
    /// they went out) whose answer may still come, oldest first (at most
    /// `max_pending_marks`): (the application's id, the id sent).
    given_up_marks: VecDeque<(Option<String>, Option<String>)>,
    /// Frames Asterisk has played since the start, by the session's estimate.
    played: u64,
    /// Frames `MEDIA_XON` showed played, not yet in `played`.
    played_unaccounted: u64,
    pending_buffering: VecDeque<Option<String>>,
    /// Estimate of Asterisk's playout queue, in frames.
    remote_frames: u32,
    /// Frames sent since the last `FLUSH_MEDIA` went out (or since the start): Asterisk's
    /// queue holds at most these.
    sent_since_flush: u64,
    remote_paused: bool,
    drain_base: Option<Instant>,
    outputs: VecDeque<MediaOutput>,
    pending_overflow: u64,
    close_sent: bool,
    stats: MediaStats,
}

impl MediaSession {
    /// A session for a socket that has just connected.
    pub fn new(config: MediaConfig) -> MediaSession {
        let config = MediaConfig {
            queue_frames: config.queue_frames.max(1),
            send_ahead: config.send_ahead.clamp(1, ASTERISK_XOFF_LEVEL - 1),
            ..config
        };
        MediaSession {
            format: config.control_format,
            config,
            state: MediaState::AwaitingStart,
            start: None,
            frame_size: 0,
            ptime: Duration::from_millis(20),
            reframer: Reframer::new(0),
            buffering: false,
            xoff: false,
            immediate: VecDeque::new(),
            queue: VecDeque::new(),
            queued_frames: 0,
            queued_commands: 0,
            pending_marks: VecDeque::new(),
            given_up_marks: VecDeque::new(),
            played: 0,
            played_unaccounted: 0,
            pending_buffering: VecDeque::new(),
            remote_frames: 0,
            sent_since_flush: 0,
            remote_paused: false,
            drain_base: None,
            outputs: VecDeque::new(),
            pending_overflow: 0,
            close_sent: false,
            stats: MediaStats::default(),
        }
    }

    // ---- getters ----

    /// Where the socket is in its life.
    pub fn state(&self) -> MediaState {
        self.state
    }

    /// The `MEDIA_START` parameters, once received.
    pub fn media_start(&self) -> Option<&MediaStart> {
        self.start.as_ref()
    }

    /// The control format in use (the one `MEDIA_START` came in, once it has).
    pub fn control_format(&self) -> ControlFormat {
        self.format
    }

    /// The bytes per frame (0 before `MEDIA_START`, and when Asterisk forces passthrough).
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Whether the socket is in passthrough mode ([`MediaConfig::passthrough`], or an
    /// `optimal_frame_size` of 0 in `MEDIA_START`).
    pub fn is_passthrough(&self) -> bool {
        self.config.passthrough
    }

    /// The frame duration (20 ms until `MEDIA_START` says otherwise).
    pub fn ptime(&self) -> Duration {
        self.ptime
    }

    /// Whether Asterisk said `MEDIA_XOFF` (and not yet `MEDIA_XON`): no audio goes out.
    pub fn is_xoff(&self) -> bool {
        self.xoff
    }

    /// Whether buffering mode is on (as requested by this side).
    pub fn is_buffering(&self) -> bool {
        self.buffering
    }

    /// Frames waiting in the local queue.
    pub fn queued_frames(&self) -> usize {
        self.queued_frames
    }

    /// Frames the local queue can still take before it overflows.
    pub fn queue_room(&self) -> usize {
        self.config.queue_frames.saturating_sub(self.queued_frames)
    }

    /// The session's estimate of Asterisk's playout queue, in frames.
    pub fn remote_queue_estimate(&self) -> u32 {
        self.remote_frames
    }

    /// Whether Asterisk answers `MARK_MEDIA`, as far as the session knows
    /// ([`MediaConfig::mark_media`], the `MEDIA_START` seen): when not, a mark is refused
    /// ([`SendError::Unsupported`]).
    pub fn marks_supported(&self) -> bool {
        self.config
            .mark_media
            .unwrap_or_else(|| self.start.as_ref().is_none_or(|s| s.channel_id.is_some()))
    }

    /// `MARK_MEDIA` markers submitted and not yet reported processed, oldest first.
    pub fn pending_marks(&self) -> impl Iterator<Item = Option<&str>> {
        self.pending_marks.iter().map(|m| m.id.as_deref())
    }

    /// The counters.
    pub fn stats(&self) -> MediaStats {
        self.stats
    }

    // ---- inputs ----

    /// A text message arrived.
    pub fn handle_text(&mut self, text: &str) {
        if self.state == MediaState::Closed {
            return;
        }
        let event = match MediaEvent::parse(text) {
            Ok(event) => event,
            Err(e) => {
                self.stats.malformed += 1;
                self.outputs.push_back(MediaOutput::Malformed(e));
                return;
            }
        };
        self.stats.events += 1;
        // The id the application gave the pending marker this event answers.
        let mut answered: Option<Option<String>> = None;
        match &event {
            MediaEvent::MediaStart(start) => {
                self.format = ControlFormat::detect(text);
                self.frame_size = start.optimal_frame_size as usize;
                self.ptime = Duration::from_millis(u64::from(start.ptime.clamp(1, 1000)));
                if self.frame_size == 0 {
                    // Asterisk forces passthrough for codecs with tiny frames.
                    self.config.passthrough = true;
                }
                let reframe_size = if self.config.reframe && !self.config.passthrough {
                    self.frame_size
                } else {
                    0
                };
                if self.reframer.frame_size() != reframe_size {
                    self.reframer = Reframer::new(reframe_size);
                }
                self.start = Some(start.clone());
                if self.state == MediaState::AwaitingStart {
                    self.state = MediaState::Started;
                }
            }
            MediaEvent::MediaXoff { .. } => {
                self.stats.xoff += 1;
                self.xoff = true;
                // Asterisk's queue reached 900 frames, but it holds at most what was sent
                // since the last FLUSH_MEDIA: an XOFF it sent before it took the flush
                // (crossing it) says nothing of its queue now. (Taken at its word, the
                // estimate stayed at 799 after the XON, and audio was held back for up to
                // 16 s while Asterisk's queue was empty.) Its XOFF state stays until the
                // XON, which Asterisk sends at its next tick of running playout once its
                // queue is below 800, flushed or not.
                let bound = u32::try_from(self.sent_since_flush).unwrap_or(u32::MAX);
                self.remote_frames = self.remote_frames.max(ASTERISK_XOFF_LEVEL).min(bound);
            }
            MediaEvent::MediaXon { .. } => {
                self.xoff = false;
                let below = self.remote_frames.min(ASTERISK_XON_LEVEL - 1);
                // Played since the estimate: counted at the next `poll_transmit` (its `now`).
                self.played_unaccounted += u64::from(self.remote_frames - below);
                self.remote_frames = below;
            }
            MediaEvent::MediaMarkProcessed { correlation_id, .. } => {
                // Ids sent are never shared by two markers whose answers may both still
                // come, so the id tells which marker is answered. Asterisk answers in queue
                // order, and every marker given up is older than every pending one.
                let id = correlation_id.as_deref().unwrap_or("");
                if let Some(i) = self
                    .given_up_marks
                    .iter()
                    .position(|(_, wire)| wire.as_deref().unwrap_or("") == id)
                {
                    // The ones before it will never be answered: forget them too.
                    let mark = self
                        .given_up_marks
                        .drain(..=i)
                        .next_back()
                        .and_then(|(app, _)| app);
                    self.stats.marks_late += 1;
                    self.outputs
                        .push_back(MediaOutput::MarkAnsweredLate { mark });
                    return;
                }
                if let Some(i) = self
                    .pending_marks
                    .iter()
                    .position(|m| m.wire.as_deref().unwrap_or("") == id)
                {
                    answered = self.pending_marks.remove(i).map(|m| m.id);
                    // Asterisk is past every marker given up.
                    self.given_up_marks.clear();
                }
            }
            MediaEvent::MediaBufferingCompleted { correlation_id, .. } => {
                remove_marker(&mut self.pending_buffering, correlation_id);
            }
            MediaEvent::Unknown(_) => self.stats.unknown_events += 1,
            _ => {}
        }
        let mut event = event;
        if let (Some(app_id), MediaEvent::MediaMarkProcessed { correlation_id, .. }) =
            (answered, &mut event)
        {
            // The application's id, as it marked (the one sent may carry a `#<n>` suffix).
            *correlation_id = app_id;
        }
        self.outputs.push_back(MediaOutput::Event(event));
    }

    /// A binary (audio) message arrived.
    pub fn handle_binary(&mut self, audio: Bytes) {
        if self.state == MediaState::Closed {
            return;
        }
        self.stats.frames_in += 1;
        self.stats.bytes_in += audio.len() as u64;
        self.outputs.push_back(MediaOutput::Audio(audio));
    }

    /// A PING arrived: the session answers it with a PONG carrying the same payload. (An
    /// adapter whose WebSocket library answers pings itself, as tungstenite does, need not
    /// call this. Nothing else ever produces a PONG.)
    pub fn handle_ping(&mut self, payload: Bytes) {
        if self.state != MediaState::Closed && !self.close_sent {
            self.immediate
                .push_back((Transmit::Pong(payload), Effect::None));
        }
    }

    /// The socket closed: a CLOSE arrived (`code` and `reason` from it) or the connection
    /// dropped (`None`). Ends the session; [`MediaOutput::Closed`] is the last output.
    pub fn handle_close(&mut self, code: Option<u16>, reason: &str) {
        if self.state == MediaState::Closed {
            return;
        }
        self.state = MediaState::Closed;
        self.flush_overflow();
        let unsent_frames = self.queued_frames;
        self.queue.clear();
        self.queued_frames = 0;
        self.queued_commands = 0;
        self.immediate.clear();
        self.outputs.push_back(MediaOutput::Closed {
            code,
            reason: reason.to_owned(),
            unsent_frames,
            unsent_bytes: self.reframer.clear(),
        });
    }

    // ---- commands ----

    /// Hands audio over to send. With re-framing (the default) any chunk size is fine:
    /// whole frames are queued, a sub-frame tail waits for the next chunk.
    ///
    /// Frames that do not fit in the local queue are dropped and counted
    /// ([`Queued::dropped`], [`MediaStats::overflow_frames`], [`MediaOutput::Overflow`]).
    pub fn send_audio(&mut self, audio: Bytes) -> Result<Queued, SendError> {
        match self.state {
            MediaState::AwaitingStart => return Err(SendError::NotStarted),
            MediaState::Closing | MediaState::Closed => return Err(SendError::Closed),
            MediaState::Started => {}
        }
        if self.reframer.frame_size() == 0
            && self.frame_size > 0
            && !self.config.passthrough
            && !self.buffering
            && audio.len() < self.frame_size
        {
            return Err(SendError::ShortMessage {
                len: audio.len(),
                frame_size: self.frame_size,
            });
        }
        if self.config.direction == Direction::In {
            return Err(SendError::DirectionIn);
        }
        if self.config.passthrough && audio.len() > ASTERISK_MAX_MESSAGE {
            return Err(SendError::MessageTooLarge {
                len: audio.len(),
                max: ASTERISK_MAX_MESSAGE,
            });
        }
        let mut queued = Queued::default();
        let capacity = self.config.queue_frames;
        let queue = &mut self.queue;
        let queued_frames = &mut self.queued_frames;
        let mut push = |frame: Bytes| {
            if *queued_frames < capacity {
                queue.push_back(Item::Frame(frame));
                *queued_frames += 1;
                queued.frames += 1;
            } else {
                queued.dropped += 1;
            }
        };
        if self.reframer.frame_size() == 0 && audio.len() > ASTERISK_MAX_MESSAGE {
            // Without re-framing a chunk is one message, and Asterisk cannot read one this
            // long: split it on frame boundaries, which Asterisk cuts and joins the same way.
            let piece = match ASTERISK_MAX_MESSAGE / self.frame_size.max(1) * self.frame_size {
                0 => ASTERISK_MAX_MESSAGE,
                n => n,
            };
            let mut rest = audio;
            while rest.len() > ASTERISK_MAX_MESSAGE {
                push(rest.split_to(piece));
            }
            push(rest);
        } else {
            self.reframer.push(audio, push);
        }
        if queued.dropped > 0 {
            self.stats.overflow_frames += queued.dropped as u64;
            self.pending_overflow += queued.dropped as u64;
        }
        Ok(queued)
    }

    /// Sends a command. Commands that act on Asterisk's queue wait in order behind the audio
    /// held locally ([`Command::is_queued`]); the others go out at the next
    /// [`poll_transmit`](Self::poll_transmit). `FLUSH_MEDIA` also empties the local queue
    /// and the re-framer's tail; `STOP_MEDIA_BUFFERING` first queues that tail (Asterisk plays
    /// a short final frame in buffering mode). `HANGUP` ends the sending side: audio still
    /// queued is dropped (reported in [`MediaOutput::Closed`]).
    ///
    /// A `MARK_MEDIA` whose correlation id an answer may still come for (a marker pending,
    /// given up, or discarded by `FLUSH_MEDIA` after it went out) goes out as `id#2` (`#3`,
    /// …): its `MEDIA_MARK_PROCESSED` is handed over with `id`, and an earlier marker's
    /// answer is never taken for it ([`MediaOutput::MarkAnsweredLate`]).
    pub fn send_command(&mut self, command: Command) -> Result<(), SendError> {
        if matches!(self.state, MediaState::Closing | MediaState::Closed) {
            return Err(SendError::Closed);
        }
        if self.config.passthrough
            && !matches!(
                command,
                Command::Answer | Command::Hangup | Command::GetStatus
            )
        {
            return Err(SendError::Passthrough {
                command: command.name(),
            });
        }
        let text = command.encode(self.format)?;
        if command.is_queued() {
            if self.queued_commands >= self.config.queue_frames {
                return Err(SendError::QueueFull);
            }
            match &command {
                Command::StartMediaBuffering => self.buffering = true,
                Command::StopMediaBuffering { correlation_id } => {
                    if let Some(tail) = self.reframer.take_tail() {
                        // The tail is part of the buffered block: it is never dropped.
                        self.queue.push_back(Item::Frame(tail));
                        self.queued_frames += 1;
                    }
                    self.buffering = false;
                    self.pending_buffering.push_back(correlation_id.clone());
                }
                Command::MarkMedia { correlation_id } => {
                    if !self.marks_supported() {
                        return Err(SendError::Unsupported {
                            command: command.name(),
                            since: MARK_MEDIA_SINCE,
                        });
                    }
                    if self.pending_marks.len() >= self.config.max_pending_marks {
                        return Err(SendError::TooManyMarks {
                            pending: self.pending_marks.len(),
                        });
                    }
                    let wire = self.wire_mark_id(correlation_id);
                    if wire != *correlation_id {
                        let renamed = Command::MarkMedia {
                            correlation_id: wire.clone(),
                        };
                        let text = renamed.encode(self.format)?;
                        self.pending_marks.push_back(PendingMark {
                            id: correlation_id.clone(),
                            wire,
                            at: None,
                            reached: None,
                        });
                        self.queued_commands += 1;
                        self.queue.push_back(Item::Command(renamed, text));
                        return Ok(());
                    }
                    self.pending_marks.push_back(PendingMark {
                        id: correlation_id.clone(),
                        wire,
                        at: None,
                        reached: None,
                    });
                }
                _ => {}
            }
            self.queued_commands += 1;
            self.queue.push_back(Item::Command(command, text));
            return Ok(());
        }
        let effect = match command {
            Command::PauseMedia => Effect::Pause,
            Command::ContinueMedia => Effect::Continue,
            Command::FlushMedia => Effect::Flush,
            _ => Effect::None,
        };
        if effect == Effect::Flush {
            self.flush_local();
        }
        if let Command::SetMediaDirection(direction) = command {
            self.config.direction = direction;
        }
        let is_hangup = command == Command::Hangup;
        self.immediate.push_back((Transmit::Text(text), effect));
        if is_hangup {
            self.state = MediaState::Closing;
        }
        Ok(())
    }

    /// Closes the socket (CLOSE with `code`, 1000 for a normal end). Asterisk answers with a
    /// CLOSE and hangs the channel up; report that with [`handle_close`](Self::handle_close).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state == MediaState::Closed || self.close_sent {
            return;
        }
        self.state = MediaState::Closing;
        self.close_sent = true;
        self.immediate.push_back((
            Transmit::Close {
                code,
                reason: reason.to_owned(),
            },
            Effect::None,
        ));
    }

    fn flush_local(&mut self) {
        let mut drained_reports = 0usize;
        let mut flushed = 0u64;
        for item in self.queue.drain(..) {
            match item {
                Item::Frame(_) => flushed += 1,
                Item::Command(Command::ReportQueueDrained, _) => drained_reports += 1,
                Item::Command(..) => {}
            }
        }
        self.stats.flushed_frames += flushed;
        self.queued_frames = 0;
        self.queued_commands = 0;
        self.reframer.clear();
        self.buffering = false;
        // Asterisk drops its queued markers, but the answer to one it processed before it
        // takes the FLUSH_MEDIA may be on its way: a marker that went out (like one given
        // up) keeps its id reserved until it is answered or forgotten, so a new marker with
        // the same id is never taken for it.
        let mut discarded = Vec::new();
        for m in self.pending_marks.drain(..) {
            if m.at.is_some() {
                self.given_up_marks.push_back((m.id.clone(), m.wire));
            }
            discarded.push(m.id);
        }
        self.trim_given_up();
        if !discarded.is_empty() || !self.pending_buffering.is_empty() {
            self.outputs.push_back(MediaOutput::MarkersDiscarded {
                marks: discarded,
                buffering: self.pending_buffering.drain(..).collect(),
            });
        }
        // A REPORT_QUEUE_DRAINED that waited behind flushed audio still wants its answer: it
        // goes out right after the FLUSH_MEDIA (immediate commands go first).
        for _ in 0..drained_reports {
            if let Ok(text) = Command::ReportQueueDrained.encode(self.format) {
                self.queue
                    .push_back(Item::Command(Command::ReportQueueDrained, text));
                self.queued_commands += 1;
            }
        }
    }

    // ---- outputs ----

    /// The next message to send, if one may go out at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.drain(now);
        self.expire_marks(now);
        if let Some((transmit, effect)) = self.immediate.pop_front() {
            match effect {
                Effect::Pause => self.remote_paused = true,
                Effect::Continue => {
                    self.remote_paused = false;
                    // Playout resumes now: a marker it had reached gets its full wait.
                    for m in self.pending_marks.iter_mut() {
                        if m.reached.is_some() {
                            m.reached = Some(now);
                        }
                    }
                }
                Effect::Flush => {
                    self.played += u64::from(self.remote_frames);
                    self.remote_frames = 0;
                    self.sent_since_flush = 0;
                }
                Effect::None => {}
            }
            if let Transmit::Text(_) = transmit {
                self.stats.commands += 1;
            }
            return Some(transmit);
        }
        if self.state != MediaState::Started {
            return None;
        }
        match self.queue.front()? {
            Item::Command(..) => {
                let Some(Item::Command(command, text)) = self.queue.pop_front() else {
                    return None;
                };
                if let Command::MarkMedia { .. } = command {
                    // Asterisk's playout reaches it once what it holds now is played.
                    let at = self.played + u64::from(self.remote_frames);
                    let reached = (self.remote_frames == 0).then_some(now);
                    if let Some(m) = self.pending_marks.iter_mut().find(|m| m.at.is_none()) {
                        m.at = Some(at);
                        m.reached = reached;
                    }
                }
                self.queued_commands -= 1;
                self.stats.commands += 1;
                Some(Transmit::Text(text))
            }
            Item::Frame(frame) => {
                if self.xoff || self.remote_frames >= self.config.send_ahead {
                    return None;
                }
                let frames = self.frames_in_message(frame.len());
                let Some(Item::Frame(frame)) = self.queue.pop_front() else {
                    return None;
                };
                self.queued_frames -= 1;
                if self.remote_frames == 0 {
                    self.drain_base = Some(now);
                }
                self.remote_frames = self.remote_frames.saturating_add(frames);
                self.sent_since_flush += u64::from(frames);
                self.stats.frames_out += 1;
                self.stats.bytes_out += frame.len() as u64;
                Some(Transmit::Binary(frame))
            }
        }
    }

    /// The next output for the application.
    pub fn poll_output(&mut self) -> Option<MediaOutput> {
        self.flush_overflow();
        self.outputs.pop_front()
    }

    /// When [`poll_transmit`](Self::poll_transmit) may next have audio to hand out (held back
    /// by pacing), or `None` if nothing waits for time (empty queue, XOFF, paused playout, or
    /// something to send right now).
    ///
    /// It is also when the oldest `MARK_MEDIA` marker Asterisk should have processed is
    /// given up ([`MediaConfig::mark_timeout`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.immediate.is_empty() || self.state != MediaState::Started {
            return None;
        }
        let pacing = match self.queue.front() {
            Some(Item::Frame(_))
                if !self.xoff
                    && !self.remote_paused
                    && self.remote_frames >= self.config.send_ahead =>
            {
                self.drain_base.map(|base| base + self.ptime)
            }
            _ => None,
        };
        match (pacing, self.mark_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the oldest marker sent is given up: [`MediaConfig::mark_timeout`] after the
    /// estimated playout reaches it (none while playout is paused).
    fn mark_deadline(&self) -> Option<Instant> {
        if self.remote_paused {
            return None;
        }
        let first = self.pending_marks.iter().find(|m| m.at.is_some())?;
        let reached = match (first.reached, first.at) {
            (Some(t), _) => t,
            (None, Some(at)) => {
                let ahead = at.saturating_sub(self.played);
                let ahead = u32::try_from(ahead).unwrap_or(u32::MAX);
                self.drain_base? + self.ptime.saturating_mul(ahead)
            }
            _ => return None,
        };
        reached.checked_add(self.config.mark_timeout)
    }

    /// Counts `frames` more played (the last one at `when`), and dates the markers the
    /// playout reached.
    fn played_until(&mut self, frames: u64, when: Instant) {
        if frames == 0 {
            return;
        }
        self.played += frames;
        let played = self.played;
        for m in self.pending_marks.iter_mut() {
            if m.reached.is_none() && m.at.is_some_and(|a| a <= played) {
                m.reached = Some(when);
            }
        }
    }

    /// Gives up the markers whose deadline passed.
    fn expire_marks(&mut self, now: Instant) {
        let timeout = self.config.mark_timeout;
        if self.remote_paused
            || !self
                .pending_marks
                .iter()
                .any(|m| m.reached.is_some_and(|r| r + timeout <= now))
        {
            return;
        }
        let mut marks = Vec::new();
        let mut given_up = Vec::new();
        self.pending_marks.retain(|m| match m.reached {
            Some(r) if r + timeout <= now => {
                marks.push(m.id.clone());
                given_up.push((m.id.clone(), m.wire.clone()));
                false
            }
            _ => true,
        });
        self.stats.marks_unanswered += marks.len() as u64;
        self.given_up_marks.extend(given_up);
        self.trim_given_up();
        self.outputs
            .push_back(MediaOutput::MarksUnanswered { marks });
    }

    /// Keeps at most `max_pending_marks` markers given up (the newest).
    fn trim_given_up(&mut self) {
        let excess = self
            .given_up_marks
            .len()
            .saturating_sub(self.config.max_pending_marks);
        self.given_up_marks.drain(..excess);
    }

    /// The correlation id to send for a new marker `id`: `id` itself, unless a marker sent
    /// with it may still be answered (pending, given up, or discarded by `FLUSH_MEDIA` after
    /// it went out); then `id#2`, `id#3`, … the first such id that is free. An answer in
    /// flight for an earlier marker can then never be taken for the new one.
    fn wire_mark_id(&self, id: &Option<String>) -> Option<String> {
        let taken = |wire: &str| {
            self.pending_marks
                .iter()
                .map(|m| m.wire.as_deref().unwrap_or(""))
                .chain(
                    self.given_up_marks
                        .iter()
                        .map(|(_, w)| w.as_deref().unwrap_or("")),
                )
                .any(|w| w == wire)
        };
        let base = id.as_deref().unwrap_or("");
        if !taken(base) {
            return id.clone();
        }
        (2u64..).map(|n| format!("{base}#{n}")).find(|w| !taken(w))
    }

    fn flush_overflow(&mut self) {
        if self.pending_overflow > 0 {
            let dropped_frames = std::mem::take(&mut self.pending_overflow);
            self.outputs
                .push_back(MediaOutput::Overflow { dropped_frames });
        }
    }

    fn frames_in_message(&self, len: usize) -> u32 {
        if self.config.passthrough {
            return 1;
        }
        match len.checked_div(self.frame_size) {
            None => 1,
            Some(n) => u32::try_from(n.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Advances the estimate of Asterisk's queue: one frame played per ptime, none while
    /// paused.
    fn drain(&mut self, now: Instant) {
        let unaccounted = std::mem::take(&mut self.played_unaccounted);
        self.played_until(unaccounted, now);
        let Some(base) = self.drain_base else {
            self.drain_base = Some(now);
            return;
        };
        if now <= base {
            return;
        }
        if self.remote_paused || self.remote_frames == 0 {
            self.drain_base = Some(now);
            return;
        }
        let ticks = (now - base).as_nanos() / self.ptime.as_nanos().max(1);
        let played = u32::try_from(ticks)
            .unwrap_or(u32::MAX)
            .min(self.remote_frames);
        self.remote_frames -= played;
        let when = base + self.ptime * played;
        self.played_until(u64::from(played), when);
        self.drain_base = Some(if self.remote_frames == 0 {
            now
        } else {
            base + self.ptime * played
        });
    }
}

/// Removes the first pending marker `id` answers. Asterisk does not tell an empty id from
/// none (JSON `"correlation_id":""` for both), so neither does this.
fn remove_marker(pending: &mut VecDeque<Option<String>>, id: &Option<String>) {
    let id = id.as_deref().unwrap_or("");
    if let Some(i) = pending
        .iter()
        .position(|p| p.as_deref().unwrap_or("") == id)
    {
        pending.remove(i);
    }
}
