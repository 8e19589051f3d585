//! Audio in and out of a call over chan_websocket: [`Channel::media`](crate::Channel::media)
//! gives a [`MediaSession`].
//!
//! One call creates the external-media channel (`POST channels/externalMedia`,
//! `transport=websocket`, `encapsulation=none`, `connection_type=server`), connects to
//! Asterisk's `/media/<MEDIA_WEBSOCKET_CONNECTION_ID>` with the runtime's WebSocket, waits for
//! `MEDIA_START`, and bridges the media channel with the call (a call already in a bridge
//! keeps it: the media channel joins that bridge). The session is a `Stream` of
//! [`MediaItem`]s (audio frames and typed control events) plus a [`MediaSender`] for audio
//! ([`Bytes`], any chunk size: it goes out as whole frames at real-time pace) and commands. It
//! ends when the call leaves the application or the socket closes; [`MediaSession::close`]
//! (or dropping every handle) tears the media channel and the bridge it made down.
//!
//! The protocol work is [`ari_proto::media::websocket::MediaSession`]'s: flow control
//! (XOFF/XON), a bounded local queue whose overflow is reported ([`MediaItem::Overflow`]),
//! marks, buffering. Audio from Asterisk waits in a bounded queue too: a consumer that falls
//! behind loses the oldest frames, counted and announced with [`MediaItem::Lagged`].
//!
//! To play audio at real-time pace (speech synthesis, a voice model), attach the session to
//! a [`MediaPacer`] shared by every call: one task on the runtime hands each session one
//! frame per `ptime` at absolute times, sessions spread over the phases of the `ptime`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use ari_proto::media::websocket::Direction;
/// The protocol types a media session's user meets: its settings, events, commands, errors
/// and counters (from `ari_proto::media::websocket`).
pub use ari_proto::media::websocket::{
    Command, ControlFormat, MediaConfig, MediaEvent, MediaStart, MediaStats, SendError,
};
use ari_proto::media::websocket::{MediaOutput, MediaSession as Core, MediaState, Transmit};
use ari_proto::models::{
    ExternalMediaConnectionType, ExternalMediaDirection, ExternalMediaEncapsulation,
    ExternalMediaTransport,
};
use ari_proto::ops;
use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::task::AtomicWaker;

pub use crate::media_pacer::{
    MediaPacer, PaceError, PacedQueued, PacedSender, PacedStats, PacerConfig, PacerStats,
    PacerThread, PacingHistogram,
};
pub use crate::media_server::{MediaServer, MediaServerStats, TOKEN_PARAM};
use crate::runtime::{Runtime, TransportError, TransportErrorKind, WsClose, WsMessage};
use crate::{Channel, Client, Error};

/// How to open a media session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MediaOptions {
    /// The Stasis application the media channel enters (it must be one this client
    /// started).
    pub app: String,
    /// The media format (`ulaw`, `slin16`, …): the audio Asterisk sends and expects.
    pub format: String,
    /// Control messages in JSON (`transport_data=f(json)`, Asterisk 20.18+); plain text
    /// otherwise (works on every chan_websocket release).
    pub json: bool,
    /// The sans-IO session's settings (re-framing, send-ahead, local queue).
    pub config: MediaConfig,
    /// Audio frames and events waiting for the consumer before the oldest frames are dropped.
    pub inbox_frames: usize,
    /// Bridge the media channel with the call (default true): in the bridge the call is
    /// in, if it is in one (its other parties stay with it), or else in a mixing bridge the
    /// session makes and destroys at its end. When false, the application does it itself
    /// ([`MediaSession::media_channel_id`]).
    pub bridge: bool,
    /// Time allowed for `MEDIA_START` after connecting.
    pub start_timeout: Duration,
    /// Passthrough mode (dial option `p`): Asterisk queues each audio message as one frame,
    /// as-is, and refuses the queue commands (marks, buffering, flush, pause); the
    /// application frames and sizes its audio itself. For codecs whose frames cannot be cut
    /// on arbitrary bytes. Asterisk forces it for opus, speex and g729 (then
    /// `optimal_frame_size` is 0). Default false.
    pub passthrough: bool,
    /// The media direction from the application's point of view (externalMedia
    /// `direction`, Asterisk 20.19+): [`Direction::In`] receives only (Asterisk drops the
    /// application's audio), [`Direction::Out`] sends only. `None` (default): both, and the
    /// parameter is not sent (older servers reject it).
    pub direction: Option<Direction>,
    /// How long the session waits for the socket to close once it is closing (the
    /// application's close or `HANGUP` sent, the call gone) before it gives the socket up:
    /// Asterisk answers within milliseconds, but a peer cut off by the network never does,
    /// and the session must still end ([`MediaItem::Closed`] with no `code`). Default 5 s.
    pub close_timeout: Duration,
}

impl MediaOptions {
    /// Options for `app` and `format`, with the defaults: plain-text control, re-framing on,
    /// 200 ms send-ahead, 500-frame queues, bridged.
    pub fn new(app: impl Into<String>, format: impl Into<String>) -> MediaOptions {
        MediaOptions {
            app: app.into(),
            format: format.into(),
            json: false,
            config: MediaConfig::new(),
            inbox_frames: 500,
            bridge: true,
            start_timeout: Duration::from_secs(5),
            passthrough: false,
            direction: None,
            close_timeout: Duration::from_secs(5),
        }
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`passthrough`](Self::passthrough).
    pub fn passthrough(mut self, passthrough: bool) -> Self {
        self.passthrough = passthrough;
        self
    }

    /// Sets [`direction`](Self::direction).
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = Some(direction);
        self
    }

    /// Sets [`json`](Self::json).
    pub fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    /// Sets [`config`](Self::config).
    pub fn config(mut self, config: MediaConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets [`bridge`](Self::bridge).
    pub fn bridge(mut self, bridge: bool) -> Self {
        self.bridge = bridge;
        self
    }
}

/// What a [`MediaSession`] yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaItem {
    /// One audio frame from Asterisk (raw media in the session's format).
    Audio(Bytes),
    /// A control event (DTMF, status, XOFF/XON, marks, errors, unknown ones).
    Event(MediaEvent),
    /// Audio handed to [`MediaSender::send_audio`] did not fit in the local queue.
    Overflow {
        /// Frames dropped.
        dropped_frames: u64,
    },
    /// The consumer fell behind: this many audio frames from Asterisk were dropped.
    Lagged {
        /// Frames dropped.
        dropped_frames: u64,
    },
    /// `FLUSH_MEDIA` discarded markers whose events will never come.
    MarkersDiscarded {
        /// `MARK_MEDIA` correlation ids.
        marks: Vec<Option<String>>,
        /// `STOP_MEDIA_BUFFERING` correlation ids.
        buffering: Vec<Option<String>>,
    },
    /// `MARK_MEDIA` markers given up: their `MEDIA_MARK_PROCESSED` did not come within
    /// [`MediaConfig::mark_timeout`] of when Asterisk should have played everything before
    /// them. Asterisk before 20.18, 22.8, 23.2 ignores `MARK_MEDIA`: do not wait for these.
    /// Counted in [`MediaStats::marks_unanswered`].
    MarksUnanswered {
        /// `MARK_MEDIA` correlation ids, oldest first.
        marks: Vec<Option<String>>,
    },
    /// A `MEDIA_MARK_PROCESSED` answered a `MARK_MEDIA` marker already given up
    /// ([`MarksUnanswered`](Self::MarksUnanswered)). Asterisk answers markers in queue
    /// order, so it is matched to the given-up marker, never to a newer pending marker that
    /// reuses the id (whose own answer still comes as [`MediaItem::Event`]). Counted in
    /// [`MediaStats::marks_late`].
    MarkAnsweredLate {
        /// The `MARK_MEDIA` correlation id.
        mark: Option<String>,
    },
    /// A control message from Asterisk that could not be parsed.
    Malformed(String),
    /// Audio or a command the handles had accepted that the session refused when its turn
    /// came: a command that waits behind held-back audio when [`MediaConfig::queue_frames`]
    /// commands already wait there ([`SendError::QueueFull`]), audio handed over after [`MediaSender::close`]
    /// ([`SendError::Closed`]), or audio while the media direction is `in`
    /// ([`SendError::DirectionIn`]: Asterisk would drop it). Counted in [`MediaSessionStats::refused`].
    Refused {
        /// The command's name (`MARK_MEDIA`, …), or `None` for audio.
        command: Option<&'static str>,
        /// How many were refused in a row for the same reason (audio messages; 1 for a
        /// command).
        count: u64,
        /// Why.
        error: SendError,
    },
    /// The session ended (the last item).
    Closed {
        /// The status code of the WebSocket close that ended the session: Asterisk's (1000 at
        /// hangup, 1009 for a message it cannot read, 1001 when it shuts down), or the
        /// answer to the application's own close. `None` when the connection ended without
        /// a close frame (dropped, reset) or with one carrying no status.
        code: Option<u16>,
        /// The close frame's reason (usually empty; Asterisk sends none).
        reason: String,
        /// Frames the application handed over that were never sent.
        unsent_frames: usize,
        /// Bytes of a partial frame (less than one frame, held for the rest of it) that were
        /// never sent.
        unsent_bytes: usize,
    },
}

/// Counters of a media session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaSessionStats {
    /// The sans-IO session's counters (frames in/out, XOFF, overflow, …).
    pub protocol: MediaStats,
    /// Audio frames dropped because the consumer fell behind.
    pub lagged_frames: u64,
    /// Audio messages and commands the session refused after the handles had accepted them
    /// (each also reported as [`MediaItem::Refused`]).
    pub refused: u64,
}

pub(crate) enum Cmd {
    Audio(Bytes),
    /// One frame from a [`MediaPacer`], due at `due`: it goes out as soon as the driver
    /// runs (the pacer runs it at once, [`Shared::drive_now`]), and the driver records how
    /// late that was.
    Paced {
        frame: Bytes,
        due: Instant,
        metrics: Arc<crate::media_pacer::PaceMetrics>,
    },
    Command(Command),
    Close,
}

/// State shared by the driver task and the handles.
pub(crate) struct Shared {
    state: Mutex<SharedState>,
    /// Asterisk said `MEDIA_XOFF` (and not yet `MEDIA_XON`): a pacer holds the frames back.
    pub(crate) xoff: std::sync::atomic::AtomicBool,
    /// The session ended (`Closed` delivered): a pacer detaches it at its next tick, even
    /// with no frame to hand over.
    pub(crate) ended: std::sync::atomic::AtomicBool,
    /// Wakes the consumer of the inbox.
    consumer: AtomicWaker,
    /// Wakes the driver.
    driver: AtomicWaker,
    /// Set once the media channel and the bridge have been torn down.
    torn_down: std::sync::atomic::AtomicBool,
    /// Wakes [`MediaSession::shutdown`].
    teardown: AtomicWaker,
    /// The driver, polled by its task, or by a [`MediaPacer`] right after handing it a frame.
    inline: Mutex<Inline>,
}

/// The driver of a session and the waker of the task that runs it.
#[derive(Default)]
struct Inline {
    driver: Option<BoxFuture>,
    task: Option<std::task::Waker>,
}

impl Shared {
    /// The state of a new session, held by two handles: the session and its sender.
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(SharedState {
                handles: 2,
                ..SharedState::default()
            }),
            xoff: std::sync::atomic::AtomicBool::new(false),
            ended: std::sync::atomic::AtomicBool::new(false),
            consumer: AtomicWaker::new(),
            driver: AtomicWaker::new(),
            torn_down: std::sync::atomic::AtomicBool::new(false),
            teardown: AtomicWaker::new(),
            inline: Mutex::new(Inline::default()),
        })
    }

    /// Polls the driver for its task (ready once it ended).
    fn poll_driver(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut guard = self.inline.lock().unwrap_or_else(|p| p.into_inner());
        let Inline { driver, task } = &mut *guard;
        let Some(d) = driver.as_mut() else {
            return Poll::Ready(());
        };
        if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *task = Some(cx.waker().clone());
        }
        if d.as_mut().poll(cx).is_ready() {
            *driver = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Runs one pass of the driver now, on the caller's thread, as its task would (with the
    /// task's waker: whatever the pass waits for wakes the task): a paced frame handed over
    /// goes out without a task wake-up. If the task is running the driver, or has not yet,
    /// the task is woken instead.
    pub(crate) fn drive_now(&self) {
        let Ok(mut guard) = self.inline.try_lock() else {
            self.driver.wake();
            return;
        };
        let Inline { driver, task } = &mut *guard;
        let (Some(d), Some(waker)) = (driver.as_mut(), task.as_ref()) else {
            drop(guard);
            self.driver.wake();
            return;
        };
        if d.as_mut().poll(&mut Context::from_waker(waker)).is_ready() {
            // Ended: the task finishes the teardown.
            *driver = None;
            waker.wake_by_ref();
        }
    }
}

#[derive(Default)]
pub(crate) struct SharedState {
    inbox: VecDeque<MediaItem>,
    inbox_audio: usize,
    lagged: u64,
    pending_lagged: u64,
    commands: VecDeque<Cmd>,
    closed: bool,
    stats: MediaSessionStats,
    handles: usize,
}

/// The media sessions of a client (weak: a session's handles and driver own it), so that
/// [`Client::close`] can tear them down while it can still make requests.
#[derive(Default)]
pub(crate) struct LiveSessions(Mutex<Vec<std::sync::Weak<Shared>>>);

impl LiveSessions {
    fn add(&self, session: &Arc<Shared>) {
        let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|s| s.strong_count() > 0);
        live.push(Arc::downgrade(session));
    }

    /// Closes every live session and waits until each is torn down, or `limit` (a peer
    /// that never answers the close must not hold the client's close forever).
    pub(crate) async fn shutdown_all<R: Runtime>(&self, runtime: &R, limit: Duration) {
        let live: Vec<Arc<Shared>> = {
            let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let sessions = live.iter().filter_map(std::sync::Weak::upgrade).collect();
            live.clear();
            sessions
        };
        if live.is_empty() {
            return;
        }
        for session in &live {
            let _ = session.command(Cmd::Close);
        }
        let all = std::pin::pin!(async {
            for session in &live {
                std::future::poll_fn(|cx| session.poll_torn_down(cx)).await;
            }
        });
        let limit = std::pin::pin!(runtime.sleep_until(runtime.now() + limit));
        futures_util::future::select(all, limit).await;
    }
}

impl Shared {
    /// Ready once the media channel is hung up and the bridge destroyed.
    fn poll_torn_down(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.teardown.register(cx.waker());
        if self.torn_down.load(std::sync::atomic::Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn command(&self, cmd: Cmd) -> Result<(), SendError> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err(SendError::Closed);
            }
            st.commands.push_back(cmd);
        }
        self.driver.wake();
        Ok(())
    }

    /// Wakes the driver's task.
    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }

    /// Queues `cmd` for the driver without waking its task: the caller runs the driver
    /// ([`drive_now`](Self::drive_now)) or wakes its task ([`wake_driver`](Self::wake_driver)).
    pub(crate) fn hand_over(&self, cmd: Cmd) -> Result<(), SendError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SendError::Closed);
        }
        st.commands.push_back(cmd);
        Ok(())
    }
}

/// Sends audio and commands to a media session; cheap to clone.
pub struct MediaSender {
    shared: Arc<Shared>,
    pub(crate) format: ControlFormat,
    /// Asterisk takes only `ANSWER`, `HANGUP` and `GET_STATUS` on this socket.
    pub(crate) passthrough: bool,
    /// Asterisk answers `MARK_MEDIA` ([`MediaConfig::mark_media`]).
    pub(crate) marks: bool,
}

impl Clone for MediaSender {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        MediaSender {
            shared: self.shared.clone(),
            format: self.format,
            passthrough: self.passthrough,
            marks: self.marks,
        }
    }
}

impl Drop for MediaSender {
    fn drop(&mut self) {
        release(&self.shared);
    }
}

fn release(shared: &Shared) {
    let last = {
        let mut st = shared.lock();
        st.handles = st.handles.saturating_sub(1);
        st.handles == 0 && !st.closed
    };
    if last {
        let _ = shared.command(Cmd::Close);
    }
}

impl std::fmt::Debug for MediaSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSender").finish_non_exhaustive()
    }
}

impl MediaSender {
    /// Hands audio over, in any chunk size: it leaves as whole frames at real-time pace.
    /// Frames that do not fit in the local queue are dropped and reported
    /// ([`MediaItem::Overflow`]).
    ///
    /// In passthrough mode each chunk is one message: one longer than Asterisk reads
    /// ([`ASTERISK_MAX_MESSAGE`](ari_proto::media::websocket::ASTERISK_MAX_MESSAGE)) is
    /// refused at once ([`SendError::MessageTooLarge`]).
    pub fn send_audio(&self, audio: Bytes) -> Result<(), SendError> {
        let max = ari_proto::media::websocket::ASTERISK_MAX_MESSAGE;
        if self.passthrough && audio.len() > max {
            return Err(SendError::MessageTooLarge {
                len: audio.len(),
                max,
            });
        }
        self.shared.command(Cmd::Audio(audio))
    }

    /// Sends a command. Errors Asterisk would answer with silence (over 128 bytes, JSON-only
    /// commands in plain text) or with `ERROR` (in passthrough mode, every command but
    /// `ANSWER`, `HANGUP` and `GET_STATUS`: [`SendError::Passthrough`]) are refused here.
    pub fn command(&self, command: Command) -> Result<(), SendError> {
        if self.passthrough
            && !matches!(
                command,
                Command::Answer | Command::Hangup | Command::GetStatus
            )
        {
            return Err(SendError::Passthrough {
                command: command.name(),
            });
        }
        if !self.marks && matches!(command, Command::MarkMedia { .. }) {
            return Err(SendError::Unsupported {
                command: command.name(),
                since: ari_proto::media::websocket::MARK_MEDIA_SINCE,
            });
        }
        command.encode(self.format)?;
        self.shared.command(Cmd::Command(command))
    }

    /// `MARK_MEDIA`: [`MediaEvent::MediaMarkProcessed`] comes when everything sent before it
    /// has been played. Refused at once ([`SendError::Unsupported`]) when Asterisk is older
    /// than 20.18, 22.8, 23.2 (its version, [`MediaConfig::mark_media`]); one never answered
    /// is given up after [`MediaConfig::mark_timeout`] ([`MediaItem::MarksUnanswered`]).
    pub fn mark(&self, correlation_id: impl Into<String>) -> Result<(), SendError> {
        self.command(Command::MarkMedia {
            correlation_id: Some(correlation_id.into()),
        })
    }

    /// `FLUSH_MEDIA`: drops the audio queued here and at Asterisk (barge-in).
    pub fn flush(&self) -> Result<(), SendError> {
        self.command(Command::FlushMedia)
    }

    /// Ends the session: closes the socket (Asterisk hangs the media channel up) and
    /// destroys the bridge.
    pub fn close(&self) {
        let _ = self.shared.command(Cmd::Close);
    }
}

/// An open media session: a `Stream` of [`MediaItem`]s; see the [module docs](self).
pub struct MediaSession {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sender: MediaSender,
    pub(crate) start: MediaStart,
    media_channel_id: String,
    bridge_id: Option<String>,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("format", &self.start.format)
            .field("media_channel_id", &self.media_channel_id)
            .finish_non_exhaustive()
    }
}

impl MediaSession {
    /// A sender for audio and commands (clone it freely).
    pub fn sender(&self) -> MediaSender {
        self.sender.clone()
    }

    /// The `MEDIA_START` parameters: format, frame size, ptime, ids.
    pub fn media_start(&self) -> &MediaStart {
        &self.start
    }

    /// The negotiated format (`ulaw`, `slin16`, …).
    pub fn format(&self) -> &str {
        &self.start.format
    }

    /// The media channel's id.
    pub fn media_channel_id(&self) -> &str {
        &self.media_channel_id
    }

    /// The bridge joining the media channel and the call ([`MediaOptions::bridge`]): the
    /// bridge the call was already in, if it was in one (the session's end takes only the
    /// media channel out of it), or else the one the session made (destroyed at its end).
    pub fn bridge_id(&self) -> Option<&str> {
        self.bridge_id.as_deref()
    }

    /// The counters so far.
    pub fn stats(&self) -> MediaSessionStats {
        self.shared.lock().stats
    }

    /// Hands audio over (see [`MediaSender::send_audio`]).
    pub fn send_audio(&self, audio: Bytes) -> Result<(), SendError> {
        self.sender.send_audio(audio)
    }

    /// Ends the session (see [`MediaSender::close`]); the stream then yields what is left and
    /// [`MediaItem::Closed`].
    pub fn close(&self) {
        self.sender.close();
    }

    /// Ends the session and waits until the media channel is hung up and the bridge
    /// destroyed (each request bounded by the client's request timeout).
    pub async fn shutdown(self) {
        self.sender.close();
        let shared = self.shared.clone();
        drop(self);
        std::future::poll_fn(|cx| shared.poll_torn_down(cx)).await;
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        release(&self.shared);
    }
}

impl Stream for MediaSession {
    type Item = MediaItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MediaItem>> {
        self.shared.consumer.register(cx.waker());
        let mut st = self.shared.lock();
        if st.pending_lagged > 0 {
            let dropped_frames = std::mem::take(&mut st.pending_lagged);
            return Poll::Ready(Some(MediaItem::Lagged { dropped_frames }));
        }
        match st.inbox.pop_front() {
            Some(item) => {
                if matches!(item, MediaItem::Audio(_)) {
                    st.inbox_audio -= 1;
                }
                // (The driver never waits for room in the inbox: no wake-up for it.)
                Poll::Ready(Some(item))
            }
            None if st.closed => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

fn media_error(message: String) -> Error {
    Error::Transport(TransportError::new(TransportErrorKind::Protocol, message))
}

impl<R: Runtime> Channel<R> {
    /// Opens a media session on this call (chan_websocket, server connection type): see
    /// [`crate::media`].
    ///
    /// ```no_run
    /// # async fn echo<R: ari_client::Runtime>(channel: ari_client::Channel<R>) -> Result<(), ari_client::Error> {
    /// use ari_client::media::{MediaItem, MediaOptions};
    /// use futures_util::StreamExt;
    /// let mut media = channel.media(MediaOptions::new("media", "slin16")).await?;
    /// let tx = media.sender();
    /// while let Some(item) = media.next().await {
    ///     if let MediaItem::Audio(frame) = item {
    ///         let _ = tx.send_audio(frame); // an echo
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn media(&self, options: MediaOptions) -> Result<MediaSession, Error> {
        open(self.client().clone(), self.clone(), options, None).await
    }
}

/// Completes with a media socket that has seen `MEDIA_START`, and its session.
pub(crate) type SocketFuture<R> = Pin<Box<dyn Future<Output = Result<Started<R>, Error>> + Send>>;

/// Client connection type: Asterisk dials the application's media server, which hands the
/// socket over once `MEDIA_START` has come.
pub(crate) struct Dialled<R: Runtime> {
    /// The id of the media channel to create: the server recognises its socket by the
    /// `channel_id` of `MEDIA_START`.
    pub(crate) media_id: String,
    /// The websocket_client id (`external_host`).
    pub(crate) websocket_client: String,
    /// `transport_data` options that let the server recognise the socket (`v(…)`).
    pub(crate) transport_data: String,
    /// Completes with the socket and the session that has seen `MEDIA_START`.
    pub(crate) socket: SocketFuture<R>,
}

pub(crate) async fn open<R: Runtime>(
    client: Client<R>,
    call: Channel<R>,
    options: MediaOptions,
    dialled: Option<Dialled<R>>,
) -> Result<MediaSession, Error> {
    let media_id = match &dialled {
        Some(d) => d.media_id.clone(),
        None => client.new_resource_id(),
    };
    // Follow the call before anything can end it.
    let call_ended = call.once::<ari_proto::events::StasisEnd>();
    let media_channel = client.channel(media_id.clone());
    let mut media_destroyed = Box::pin(media_channel.once::<ari_proto::events::ChannelDestroyed>());
    let mut op = ops::channels::ExternalMedia::new(options.app.clone(), options.format.clone())
        .channel_id(media_id.clone())
        .transport(ExternalMediaTransport::Websocket)
        .encapsulation(ExternalMediaEncapsulation::None);
    let mut transport_data = String::new();
    if options.json {
        transport_data.push_str("f(json)");
    }
    if options.passthrough {
        transport_data.push('p');
    }
    if let Some(direction) = options.direction {
        op = op.direction(ExternalMediaDirection::from_wire(direction.as_str()));
    }
    let socket = match dialled {
        None => {
            op = op.connection_type(ExternalMediaConnectionType::Server);
            None
        }
        Some(d) => {
            transport_data.push_str(&d.transport_data);
            op = op
                .connection_type(ExternalMediaConnectionType::Client)
                .external_host(d.websocket_client.clone());
            Some((d.socket, d.websocket_client))
        }
    };
    if !transport_data.is_empty() {
        op = op.transport_data(transport_data);
    }
    // From here on, an abandoned opening (this future dropped) hangs the media channel up.
    let mut abandoned = Abandoned {
        client: client.clone(),
        media_id: Some(media_id.clone()),
        bridge_id: None,
    };
    let created = client.send(&op).await?;
    let connection_id = created
        .channelvars
        .as_ref()
        .and_then(|v| v.get("MEDIA_WEBSOCKET_CONNECTION_ID"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            media_error(
                "the externalMedia answer has no MEDIA_WEBSOCKET_CONNECTION_ID (is chan_websocket \
                 loaded? Asterisk 20.16+, 22.6+, 23.0+)"
                    .to_owned(),
            )
        })?;
    let result = match socket {
        None => connect_and_start(&client, &options, &connection_id).await,
        Some((socket, websocket_client)) => {
            let destroyed = media_destroyed.as_mut();
            wait_dialled(&client, &options, socket, &websocket_client, destroyed).await
        }
    };
    let result = match result {
        Ok((ws, core)) => bridge(&client, &call, &options, &media_id, &mut abandoned)
            .await
            .map(|b| (ws, core, b)),
        Err(e) => Err(e),
    };
    let (ws, core, (bridge_id, own_bridge)) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = media_channel.hangup().await;
            abandoned.media_id = None;
            return Err(e);
        }
    };
    let start = core
        .media_start()
        .cloned()
        .ok_or_else(|| media_error("no MEDIA_START".to_owned()))?;
    // The driver's task tears the session down from now on.
    abandoned.media_id = None;
    abandoned.bridge_id = None;
    let shared = Shared::new();
    client.inner.media.add(&shared);
    let format = core.control_format();
    let passthrough = core.is_passthrough();
    let marks = core.marks_supported();
    let ended = Box::pin(async move {
        let a = std::pin::pin!(call_ended);
        let b = std::pin::pin!(media_destroyed);
        let _ = futures_util::future::select(a, b).await;
    });
    let driver = Driver::new(
        client.runtime().clone(),
        ws,
        core,
        shared.clone(),
        &options,
        Some(ended),
    );
    let teardown_shared = shared.clone();
    let teardown_client = client.clone();
    // A bridge the call was already in is the call's: only the media channel leaves it.
    let teardown_bridge = bridge_id.clone().filter(|_| own_bridge);
    let teardown_media = media_id.clone();
    shared
        .inline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .driver = Some(Box::pin(driver));
    client.runtime().spawn(async move {
        std::future::poll_fn(|cx| teardown_shared.poll_driver(cx)).await;
        // The socket is closed: Asterisk hangs the media channel up; make sure of it, and
        // remove the bridge.
        let _ = teardown_client.channel(teardown_media).hangup().await;
        if let Some(b) = teardown_bridge {
            let _ = teardown_client.bridge(b).destroy().await;
        }
        teardown_shared
            .torn_down
            .store(true, std::sync::atomic::Ordering::Release);
        teardown_shared.teardown.wake();
    });
    Ok(MediaSession {
        sender: MediaSender {
            shared: shared.clone(),
            format,
            passthrough,
            marks,
        },
        shared,
        start,
        media_channel_id: media_id,
        bridge_id,
    })
}

type Started<R> = (<R as crate::runtime::Transport>::Ws, Core);

/// Client mode: waits (up to `start_timeout`) for the media server to hand the socket over,
/// and fails at once if Asterisk gives the media channel up first (it could not connect).
async fn wait_dialled<R: Runtime>(
    client: &Client<R>,
    options: &MediaOptions,
    socket: SocketFuture<R>,
    websocket_client: &str,
    destroyed: Pin<&mut crate::Once<ari_proto::events::ChannelDestroyed>>,
) -> Result<Started<R>, Error> {
    use futures_util::future::{select, Either};
    let runtime = client.runtime();
    let sleep = runtime.sleep_until(runtime.now() + options.start_timeout);
    match select(socket, select(destroyed, std::pin::pin!(sleep))).await {
        Either::Left((r, _)) => r,
        Either::Right((Either::Left((Ok(gone), _)), _)) => Err(media_error(format!(
            "Asterisk could not connect to the media server: it hung the media channel up \
             (cause {} {}) before a connection came; check that the uri of websocket_client \
             '{websocket_client}' (websocket_client.conf) reaches this MediaServer",
            gone.cause, gone.cause_txt
        ))),
        Either::Right((Either::Left((Err(e), _)), _)) => Err(e),
        Either::Right((Either::Right(_), _)) => Err(Error::Timeout {
            operation: "media connection from Asterisk",
            after: options.start_timeout,
        }),
    }
}

async fn connect_and_start<R: Runtime>(
    client: &Client<R>,
    options: &MediaOptions,
    connection_id: &str,
) -> Result<Started<R>, Error> {
    let base = client.base_url();
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base
    };
    // `/media/` hangs off the HTTP server's prefix (http.conf), not off `/ari`.
    let http_prefix = ws_base.strip_suffix("/ari").unwrap_or(&ws_base);
    let uri = format!(
        "{}/media/{connection_id}",
        http_prefix.trim_end_matches('/')
    );
    let req = http::Request::get(uri)
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, "media")
        .body(())
        .map_err(|e| {
            Error::Transport(
                TransportError::new(
                    TransportErrorKind::Protocol,
                    format!("media socket request: {e}"),
                )
                .with_source(e),
            )
        })?;
    let opts = media_transport_options();
    let runtime = client.runtime().clone();
    let mut ws = runtime
        .ws_connect(req, &opts)
        .await
        .map_err(Error::Transport)?;
    let mut core = Core::new(
        options
            .config
            .clone()
            .control_format(if options.json {
                ControlFormat::Json
            } else {
                ControlFormat::PlainText
            })
            .passthrough(options.passthrough || options.config.passthrough)
            .mark_media(mark_media(client, options))
            .direction(options.direction.unwrap_or(options.config.direction)),
    );
    // MEDIA_START is the first message.
    let deadline = runtime.now() + options.start_timeout;
    let first = {
        let next = futures_util::StreamExt::next(&mut ws);
        let sleep = runtime.sleep_until(deadline);
        let next = std::pin::pin!(next);
        let sleep = std::pin::pin!(sleep);
        match futures_util::future::select(next, sleep).await {
            futures_util::future::Either::Left((msg, _)) => msg,
            futures_util::future::Either::Right(_) => {
                return Err(Error::Timeout {
                    operation: "MEDIA_START",
                    after: options.start_timeout,
                })
            }
        }
    };
    match first {
        Some(Ok(WsMessage::Text(text))) => core.handle_text(&text),
        Some(Err(e)) => return Err(Error::Transport(e)),
        other => {
            return Err(media_error(format!(
                "expected MEDIA_START as the first media message, got {other:?}"
            )))
        }
    }
    if core.media_start().is_none() {
        return Err(media_error(
            "the first media message is not MEDIA_START".to_owned(),
        ));
    }
    Ok((ws, core))
}

/// [`MediaConfig::mark_media`] for a session of `client`: as the options set it, or else
/// `false` when the server's version lacks `MARK_MEDIA` (refused at once, not waited for).
pub(crate) fn mark_media<R: Runtime>(client: &Client<R>, options: &MediaOptions) -> Option<bool> {
    options.config.mark_media.or_else(|| {
        client
            .server_version()
            .filter(|v| !v.has_mark_media())
            .map(|_| false)
    })
}

/// Bytes a media socket reads at once: a few frames (a 20 ms frame is 160–1,920 bytes). The
/// WebSocket layer zero-fills its read buffer before every read, and the 128 KiB default
/// made that fill most of the CPU a frame cost.
const MEDIA_READ_BUFFER: usize = 4096;

/// The transport options of a media socket.
pub(crate) fn media_transport_options() -> crate::runtime::TransportOptions {
    crate::runtime::TransportOptions {
        ws_read_buffer_bytes: MEDIA_READ_BUFFER,
        ..Default::default()
    }
}

/// Undoes a half-opened session when [`open`] is abandoned (its future dropped before it
/// completed): the media channel would wait in Asterisk, unanswered, for a connection that
/// never comes, and the bridge would stay. Disarmed once the session's own task owns them.
struct Abandoned<R: Runtime> {
    client: Client<R>,
    media_id: Option<String>,
    bridge_id: Option<String>,
}

impl<R: Runtime> Drop for Abandoned<R> {
    fn drop(&mut self) {
        let media_id = self.media_id.take();
        let bridge_id = self.bridge_id.take();
        if media_id.is_none() && bridge_id.is_none() {
            return;
        }
        let client = self.client.clone();
        self.client.runtime().spawn(async move {
            if let Some(id) = media_id {
                let _ = client.channel(id).hangup().await;
            }
            if let Some(id) = bridge_id {
                let _ = client.bridge(id).destroy().await;
            }
        });
    }
}

/// How many times [`bridge`] looks for the call's bridge when the one it found is gone by
/// the time the media channel is added to it.
const BRIDGE_LOOKUPS: u32 = 3;

/// Bridges the media channel with the call (when asked to): the bridge, and whether the
/// session made it.
///
/// A call already in a bridge (with another party, a conference) joins the media channel
/// to that bridge: adding the call to a bridge of its own would take it out of the one it is
/// in (Asterisk moves a channel between bridges), cutting it off from the other parties.
async fn bridge<R: Runtime>(
    client: &Client<R>,
    call: &Channel<R>,
    options: &MediaOptions,
    media_id: &str,
    abandoned: &mut Abandoned<R>,
) -> Result<(Option<String>, bool), Error> {
    if !options.bridge {
        return Ok((None, false));
    }
    // The lookup and the add are two requests: the bridge may be destroyed in between (the
    // other party's leg tearing it down, a transfer moving the call). Asterisk then answers
    // the add with 404: look again, the call is now in another bridge or in none.
    let mut lookups = 0;
    loop {
        lookups += 1;
        let bridges = client.bridges().list().await?;
        let Some(existing) = bridges.iter().find(|b| {
            b.data()
                .is_some_and(|d| d.channels.iter().any(|c| c == call.id()))
        }) else {
            break;
        };
        match existing.add_channel([media_id.to_owned()]).await {
            Ok(()) => {}
            Err(e) if e.status() == Some(404) && lookups < BRIDGE_LOOKUPS => {
                tracing::debug!(target: "ari_client", bridge = existing.id(), error = %e,
                    "the call's bridge went away before the media channel joined it: looking again");
                continue;
            }
            Err(e) => return Err(e),
        }
        // The call may have left that bridge meanwhile, the bridge staying (the other
        // parties still in it): the media channel would hear them and not the call.
        let joined = match client.bridges().get(existing.id()).await {
            Ok(b) => b
                .data()
                .is_some_and(|d| d.channels.iter().any(|c| c == call.id())),
            Err(e) if e.status() == Some(404) => false,
            Err(e) => return Err(e),
        };
        if joined {
            return Ok((Some(existing.id().to_owned()), false));
        }
        let _ = existing.remove_channel([media_id.to_owned()]).await;
        if lookups >= BRIDGE_LOOKUPS {
            return Err(media_error(format!(
                "the call {} kept leaving its bridge while the media channel joined it \
                 ({BRIDGE_LOOKUPS} tries); open the session once the call stays in a bridge, \
                 or with MediaOptions::bridge(false) and bridge it yourself",
                call.id()
            )));
        }
        tracing::debug!(target: "ari_client", bridge = existing.id(),
            "the call left its bridge before the media channel joined it: looking again");
    }
    let bridge_id = {
        let bridge = client.new_bridge();
        bridge
            .create()
            .map(|op| op.bridge_type("mixing"))
            .await
            .map_err(|e| {
                tracing::debug!(target: "ari_client", error = %e, "media bridge");
                e
            })?;
        abandoned.bridge_id = Some(bridge.id().to_owned());
        if let Err(e) = bridge
            .add_channel([call.id().to_owned(), media_id.to_owned()])
            .await
        {
            // The call is gone (or cannot be bridged): the bridge made for it must not stay
            // behind in Asterisk.
            let _ = bridge.destroy().await;
            abandoned.bridge_id = None;
            return Err(e);
        }
        Some(bridge.id().to_owned())
    };
    Ok((bridge_id, true))
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Messages the driver holds for a socket that takes none: beyond that, audio waits in the
/// session's bounded queue (its overflow counted and reported), not in memory without bound.
const OUTBOX_LIMIT: usize = 16;

/// The task that owns the media socket and drives the sans-IO session.
struct Driver<R: Runtime> {
    runtime: R,
    ws: R::Ws,
    core: Core,
    shared: Arc<Shared>,
    inbox_frames: usize,
    ended: Option<BoxFuture>,
    sleep: Option<BoxFuture>,
    /// [`MediaOptions::close_timeout`].
    close_timeout: Duration,
    /// Runs from when the session starts closing: the socket is given up when it fires.
    close_wait: Option<BoxFuture>,
    sleep_at: Option<Instant>,
    outbox: VecDeque<WsMessage>,
    /// Audio messages dropped from the outbox when the socket closed, never written.
    outbox_unsent: usize,
    ws_open: bool,
    /// The peer closed the socket: the WebSocket layer queued the close answer RFC 6455
    /// requires (Asterisk waits for it), which still has to be written before the socket
    /// is dropped.
    answer_close: bool,
    /// Messages written since the last completed flush.
    unflushed: bool,
    /// The handles' commands, swapped out of the shared state.
    commands: VecDeque<Cmd>,
    /// The counters last published to the handles.
    published: MediaStats,
    /// `Closed` was delivered: the driver ends.
    closed: bool,
    /// The due time and lateness of the last paced frame written.
    last_paced: Option<(Instant, Duration)>,
    /// Paced frames handed to the session in this pass, to time when they go out.
    paced: Vec<(Instant, Arc<crate::media_pacer::PaceMetrics>)>,
    /// Audio and commands refused in this pass ([`MediaItem::Refused`]), not yet delivered.
    refused: Vec<MediaItem>,
}

impl<R: Runtime> Driver<R> {
    /// The driver of a started session `core` over `ws`, nothing sent or pending yet.
    fn new(
        runtime: R,
        ws: R::Ws,
        core: Core,
        shared: Arc<Shared>,
        options: &MediaOptions,
        ended: Option<BoxFuture>,
    ) -> Self {
        Driver {
            runtime,
            ws,
            core,
            shared,
            inbox_frames: options.inbox_frames.max(1),
            ended,
            close_timeout: options.close_timeout,
            close_wait: None,
            sleep: None,
            sleep_at: None,
            outbox: VecDeque::new(),
            outbox_unsent: 0,
            ws_open: true,
            answer_close: false,
            unflushed: false,
            commands: VecDeque::new(),
            published: MediaStats::default(),
            closed: false,
            last_paced: None,
            paced: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Hands the session's outputs to the consumer and publishes the counters. Takes the
    /// lock only when there is something new, and wakes the consumer only for new items.
    fn deliver(&mut self) {
        let first = self.core.poll_output();
        let stats = self.core.stats();
        if first.is_none() && stats == self.published && self.refused.is_empty() {
            return;
        }
        self.published = stats;
        let mut delivered = false;
        let mut st = self.shared.lock();
        // Refusals come first: they happened in this pass, before `Closed` can be delivered.
        for item in self.refused.drain(..) {
            if let MediaItem::Refused { count, .. } = &item {
                st.stats.refused += count;
            }
            st.inbox.push_back(item);
            delivered = true;
        }
        let mut next = first;
        while let Some(out) = next.take() {
            next = self.core.poll_output();
            let item = match out {
                MediaOutput::Audio(a) => {
                    if st.inbox_audio >= self.inbox_frames {
                        // Drop the oldest frame: the consumer is behind.
                        if let Some(i) = st
                            .inbox
                            .iter()
                            .position(|x| matches!(x, MediaItem::Audio(_)))
                        {
                            st.inbox.remove(i);
                            st.inbox_audio -= 1;
                            st.lagged += 1;
                            st.pending_lagged += 1;
                            st.stats.lagged_frames += 1;
                        }
                    }
                    st.inbox_audio += 1;
                    MediaItem::Audio(a)
                }
                MediaOutput::Event(e) => MediaItem::Event(e),
                MediaOutput::Overflow { dropped_frames } => MediaItem::Overflow { dropped_frames },
                MediaOutput::Malformed(e) => MediaItem::Malformed(e.to_string()),
                MediaOutput::MarkersDiscarded { marks, buffering } => {
                    MediaItem::MarkersDiscarded { marks, buffering }
                }
                MediaOutput::MarksUnanswered { marks } => MediaItem::MarksUnanswered { marks },
                MediaOutput::MarkAnsweredLate { mark } => MediaItem::MarkAnsweredLate { mark },
                MediaOutput::Closed {
                    code,
                    reason,
                    unsent_frames,
                    unsent_bytes,
                    ..
                } => {
                    st.closed = true;
                    // What the handles handed over since this pass took the commands found
                    // the session closing: refused, never dropped silently (from here on,
                    // `closed` refuses it at once).
                    let mut late = Vec::new();
                    for cmd in st.commands.drain(..) {
                        match cmd {
                            Cmd::Audio(_) | Cmd::Paced { .. } => {
                                refuse(&mut late, None, SendError::Closed)
                            }
                            Cmd::Command(c) => refuse(&mut late, Some(c.name()), SendError::Closed),
                            Cmd::Close => {}
                        }
                    }
                    for item in late {
                        if let MediaItem::Refused { count, .. } = &item {
                            st.stats.refused += count;
                        }
                        st.inbox.push_back(item);
                    }
                    self.shared
                        .ended
                        .store(true, std::sync::atomic::Ordering::Release);
                    self.closed = true;
                    MediaItem::Closed {
                        code,
                        reason,
                        unsent_frames: unsent_frames + std::mem::take(&mut self.outbox_unsent),
                        unsent_bytes,
                    }
                }
                _ => continue,
            };
            st.inbox.push_back(item);
            delivered = true;
        }
        // The counters of items delivered before are final: publish them with the items.
        st.stats.protocol = self.core.stats();
        self.published = st.stats.protocol;
        drop(st);
        if delivered {
            self.shared.consumer.wake();
        }
    }

    /// Fails the socket: the session ends with `Closed`.
    fn socket_failed(&mut self) {
        self.core.handle_close(None, "");
        self.ws_open = false;
    }
}

/// Records a refusal; consecutive refusals of audio for the same reason make one item.
fn refuse(refused: &mut Vec<MediaItem>, command: Option<&'static str>, error: SendError) {
    if command.is_none() {
        if let Some(MediaItem::Refused {
            command: None,
            count,
            error: last,
        }) = refused.last_mut()
        {
            if *last == error {
                *count += 1;
                return;
            }
        }
    }
    refused.push(MediaItem::Refused {
        command,
        count: 1,
        error,
    });
}

// Nothing in the driver is pinned structurally (the futures it holds are boxed).
impl<R: Runtime> Unpin for Driver<R> {}

impl<R: Runtime> Future for Driver<R> {
    type Output = ();

    /// One pass does everything that is ready: the socket is read until it would block
    /// (bounded), the handles' commands and audio are taken in one swap, what may go out is
    /// written and flushed once, and the outputs are delivered. Every source registered the
    /// waker when it said `Pending`, so a pass ends the poll unless the pacing timer fired
    /// or the read budget ran out.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.shared.driver.register(cx.waker());
        for _ in 0..64 {
            let mut again = false;
            let now = this.runtime.now();
            // Incoming messages (bounded per pass).
            let mut budget = 32;
            while this.ws_open {
                if budget == 0 {
                    again = true;
                    break;
                }
                budget -= 1;
                match Pin::new(&mut this.ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(msg))) => match msg {
                        WsMessage::Text(t) => this.core.handle_text(&t),
                        WsMessage::Binary(b) => this.core.handle_binary(b),
                        WsMessage::Close(frame) => {
                            match frame {
                                Some(c) => this.core.handle_close(Some(c.code), &c.reason),
                                None => this.core.handle_close(None, ""),
                            }
                            this.ws_open = false;
                            this.answer_close = true;
                        }
                        // The WebSocket library answers pings itself; never a PONG of our
                        // own (an unsolicited PONG crashes Asterisk 20.21/22.11/23.5).
                        _ => {}
                    },
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.socket_failed(),
                    Poll::Pending => break,
                }
            }
            // Audio and commands from the handles, all at once (the buffers keep their
            // capacity: no allocation per frame).
            {
                let mut st = this.shared.lock();
                if !st.commands.is_empty() {
                    std::mem::swap(&mut st.commands, &mut this.commands);
                }
            }
            this.shared
                .xoff
                .store(this.core.is_xoff(), std::sync::atomic::Ordering::Relaxed);
            for cmd in this.commands.drain(..) {
                match cmd {
                    Cmd::Audio(a) => {
                        if let Err(e) = this.core.send_audio(a) {
                            refuse(&mut this.refused, None, e);
                        }
                    }
                    Cmd::Paced {
                        frame,
                        due,
                        metrics,
                    } => match this.core.send_audio(frame) {
                        Ok(_) => this.paced.push((due, metrics)),
                        Err(e) => refuse(&mut this.refused, None, e),
                    },
                    Cmd::Command(c) => {
                        let name = c.name();
                        if let Err(e) = this.core.send_command(c) {
                            refuse(&mut this.refused, Some(name), e);
                        }
                    }
                    Cmd::Close => this.core.close(1000, ""),
                }
            }
            // The call left the application, or the media channel is gone.
            if let Some(ended) = this.ended.as_mut() {
                if ended.as_mut().poll(cx).is_ready() {
                    this.ended = None;
                    this.core.close(1000, "");
                }
            }
            // Outgoing: everything that may go out now, then one flush. While the socket
            // takes nothing (the peer stopped reading, a cut network), at most
            // `OUTBOX_LIMIT` messages wait here: the rest waits in the session's bounded
            // queue, whose overflow is counted and reported.
            while this.outbox.len() < OUTBOX_LIMIT {
                let Some(t) = this.core.poll_transmit(now) else {
                    break;
                };
                match t {
                    Transmit::Text(s) => this.outbox.push_back(WsMessage::Text(s.into())),
                    Transmit::Binary(b) => this.outbox.push_back(WsMessage::Binary(b)),
                    Transmit::Pong(p) => this.outbox.push_back(WsMessage::Pong(p)),
                    Transmit::Close { code, reason } => this
                        .outbox
                        .push_back(WsMessage::Close(Some(WsClose::new(code, reason)))),
                    _ => {}
                }
            }
            // Paced frames are timed when they go out in this pass (nothing held back by flow
            // control): the time is read once, just before the writes.
            if !this.paced.is_empty() {
                if this.core.queued_frames() == 0 && this.ws_open {
                    let now = this.runtime.now();
                    let ptime = this.core.ptime();
                    for (due, metrics) in this.paced.drain(..) {
                        let late = now.saturating_duration_since(due);
                        let prev = this
                            .last_paced
                            .filter(|(d, _)| due.checked_duration_since(*d) == Some(ptime));
                        metrics.record(late, prev.map(|(_, l)| l));
                        this.last_paced = Some((due, late));
                    }
                } else {
                    this.paced.clear();
                }
            }
            while this.ws_open && !this.outbox.is_empty() {
                match Pin::new(&mut this.ws).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let msg = this.outbox.pop_front().expect("not empty");
                        if Pin::new(&mut this.ws).start_send(msg).is_err() {
                            this.socket_failed();
                        } else {
                            this.unflushed = true;
                        }
                    }
                    Poll::Ready(Err(_)) => this.socket_failed(),
                    Poll::Pending => break,
                }
            }
            if this.ws_open && this.unflushed {
                match Pin::new(&mut this.ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => this.unflushed = false,
                    Poll::Ready(Err(_)) => this.socket_failed(),
                    Poll::Pending => {}
                }
            }
            // Closing (close or HANGUP sent, the call gone): a peer that never answers (cut
            // off by the network) must not keep the session for ever.
            if this.ws_open && this.core.state() == MediaState::Closing {
                if this.close_wait.is_none() {
                    let now = this.runtime.now();
                    let at = now.checked_add(this.close_timeout).unwrap_or(now);
                    this.close_wait = Some(Box::pin(this.runtime.sleep_until(at)));
                }
                if let Some(wait) = this.close_wait.as_mut() {
                    if wait.as_mut().poll(cx).is_ready() {
                        this.socket_failed();
                    }
                }
            }
            if !this.ws_open {
                // Audio that never reached the socket: reported as unsent with `Closed`.
                this.outbox_unsent += this
                    .outbox
                    .drain(..)
                    .filter(|m| matches!(m, WsMessage::Binary(_)))
                    .count();
            }
            // The peer closed: write the close answer out (closing our side) before the
            // socket is dropped, within the close timeout (a peer that stops reading).
            if this.answer_close {
                match Pin::new(&mut this.ws).poll_close(cx) {
                    Poll::Ready(_) => this.answer_close = false,
                    Poll::Pending => {
                        let wait = this.close_wait.get_or_insert_with(|| {
                            let now = this.runtime.now();
                            let at = now.checked_add(this.close_timeout).unwrap_or(now);
                            Box::pin(this.runtime.sleep_until(at))
                        });
                        if wait.as_mut().poll(cx).is_ready() {
                            this.answer_close = false;
                        }
                    }
                }
            }
            this.deliver();
            if this.closed && !this.answer_close {
                return Poll::Ready(());
            }
            // Pacing timer (none while the socket takes nothing: its readiness wakes the
            // driver, and a due frame could not go anyway).
            let timeout = if this.outbox.len() < OUTBOX_LIMIT {
                this.core.poll_timeout()
            } else {
                None
            };
            match timeout {
                Some(at) => {
                    if this.sleep_at != Some(at) {
                        this.sleep_at = Some(at);
                        this.sleep = Some(Box::pin(this.runtime.sleep_until(at)));
                    }
                    if let Some(s) = this.sleep.as_mut() {
                        if s.as_mut().poll(cx).is_ready() {
                            this.sleep = None;
                            this.sleep_at = None;
                            again = true;
                        }
                    }
                }
                None => {
                    this.sleep = None;
                    this.sleep_at = None;
                }
            }
            if !again {
                return Poll::Pending;
            }
        }
        // Work remains: yield and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A media session without a socket: the commands its driver would get are inspected.

    use super::*;

    /// A started session of `frame_size`-byte frames every `ptime_ms`, and its shared state.
    pub(crate) fn session(frame_size: u32, ptime_ms: u32) -> (MediaSession, Arc<Shared>) {
        let text = format!(
            "MEDIA_START connection_id:c1 channel:WebSocket/INCOMING/0x1 channel_id:em-1 \
             format:slin optimal_frame_size:{frame_size} ptime:{ptime_ms}"
        );
        let Ok(MediaEvent::MediaStart(start)) = MediaEvent::parse(&text) else {
            panic!("MEDIA_START parses")
        };
        let shared = Shared::new();
        let session = MediaSession {
            sender: MediaSender {
                shared: shared.clone(),
                format: ControlFormat::PlainText,
                passthrough: false,
                marks: true,
            },
            shared: shared.clone(),
            start,
            media_channel_id: "em-1".to_owned(),
            bridge_id: None,
        };
        (session, shared)
    }

    /// The paced frames handed to the session's driver since the last call: (due, frame).
    pub(crate) fn paced(shared: &Shared) -> Vec<(Instant, Bytes)> {
        let mut st = shared.lock();
        let mut out = Vec::new();
        st.commands.retain(|c| match c {
            Cmd::Paced { frame, due, .. } => {
                out.push((*due, frame.clone()));
                false
            }
            _ => true,
        });
        out
    }

    /// Everything handed to the session's driver since the last call, in order: `frame <first
    /// byte>` for audio, `mark <id>` for a `MARK_MEDIA`, `command <name>` for the others.
    pub(crate) fn taken(shared: &Shared) -> Vec<String> {
        let mut st = shared.lock();
        st.commands
            .drain(..)
            .map(|c| match c {
                Cmd::Audio(f) | Cmd::Paced { frame: f, .. } => format!("frame {}", f[0]),
                Cmd::Command(Command::MarkMedia { correlation_id }) => {
                    format!("mark {}", correlation_id.unwrap_or_default())
                }
                Cmd::Command(c) => format!("command {}", c.name()),
                Cmd::Close => "close".to_owned(),
            })
            .collect()
    }

    /// Marks the session ended, as its driver does when the socket closes.
    pub(crate) fn end(shared: &Shared) {
        shared.lock().closed = true;
        shared
            .ended
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Gives the session a stand-in driver that takes the paced frames off its queue, as the
    /// socket driver writes them; returns the first byte of each frame taken, in order.
    /// `on_write` runs whenever it takes frames.
    pub(crate) fn stand_in_driver(
        shared: &Arc<Shared>,
        mut on_write: impl FnMut() + Send + 'static,
    ) -> Arc<Mutex<Vec<u8>>> {
        let taken = Arc::new(Mutex::new(Vec::new()));
        let (t, s) = (taken.clone(), shared.clone());
        let driver = std::future::poll_fn(move |cx| {
            s.driver.register(cx.waker());
            let frames = paced(&s);
            if !frames.is_empty() {
                on_write();
            }
            t.lock()
                .expect("not poisoned")
                .extend(frames.into_iter().map(|(_, f)| f[0]));
            Poll::Pending
        });
        shared.inline.lock().expect("not poisoned").driver = Some(Box::pin(driver));
        taken
    }

    /// Polls the session's driver as its task does.
    pub(crate) fn poll_task(shared: &Shared, cx: &mut Context<'_>) -> Poll<()> {
        shared.poll_driver(cx)
    }

    /// Holds the driver, as its task does while it runs it.
    pub(crate) fn hold_driver(shared: &Shared) -> MutexGuard<'_, impl Sized> {
        shared.inline.lock().expect("not poisoned")
    }
}

#[cfg(test)]
mod driver_tests {
    //! The driver over a socket played by the test, on the hand-driven executor: what
    //! happens within one pass, and timers, without a network or a real clock.

    use super::*;
    use crate::manual_executor::Manual;
    use crate::runtime::{CustomRuntime, Transport, TransportOptions};
    use futures_util::task::noop_waker_ref;

    type Hook = Box<dyn FnMut() + Send>;

    /// A socket that yields `incoming` (then nothing) and fails every write if
    /// `fail_writes` (a connection cut), after running `on_write` (what another thread does
    /// meanwhile). `poll_close` counts its calls in `closes` and, if `close_blocks`, never
    /// completes (a peer that no longer reads).
    #[derive(Default)]
    struct FakeWs {
        on_write: Option<Hook>,
        fail_writes: bool,
        incoming: Option<WsMessage>,
        /// Yielded once the socket has had nothing to read (after a `Pending`).
        later: Option<WsMessage>,
        idle_seen: bool,
        closes: Arc<std::sync::atomic::AtomicUsize>,
        close_blocks: bool,
    }

    impl Stream for FakeWs {
        type Item = Result<WsMessage, TransportError>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.incoming.take() {
                Some(msg) => Poll::Ready(Some(Ok(msg))),
                None if self.idle_seen && self.later.is_some() => {
                    Poll::Ready(self.later.take().map(Ok))
                }
                None => {
                    self.idle_seen = true;
                    Poll::Pending
                }
            }
        }
    }

    impl Sink<WsMessage> for FakeWs {
        type Error = TransportError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, _: WsMessage) -> Result<(), Self::Error> {
            if let Some(hook) = self.on_write.as_mut() {
                hook();
            }
            if self.fail_writes {
                return Err(TransportError::new(TransportErrorKind::Io, "cut"));
            }
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.closes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.close_blocks {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
    }

    #[derive(Clone, Debug)]
    struct NoTransport;

    impl Transport for NoTransport {
        type Ws = FakeWs;
        fn http(
            &self,
            _: http::Request<Vec<u8>>,
            _: &TransportOptions,
        ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static
        {
            std::future::ready(Err(TransportError::new(
                TransportErrorKind::Unsupported,
                "none",
            )))
        }
        fn ws_connect(
            &self,
            _: http::Request<()>,
            _: &TransportOptions,
        ) -> impl Future<Output = Result<FakeWs, TransportError>> + Send + 'static {
            std::future::ready(Err(TransportError::new(
                TransportErrorKind::Unsupported,
                "none",
            )))
        }
    }

    type TestDriver = Driver<CustomRuntime<Manual, NoTransport>>;

    /// A driver of a started session (slin, 320-byte frames) over `ws`.
    fn driver(manual: &Manual, ws: FakeWs, shared: &Arc<Shared>) -> TestDriver {
        driver_ending(manual, ws, shared, None)
    }

    /// A driver whose session also ends when `ended` completes (the call's `StasisEnd` or
    /// the media channel's `ChannelDestroyed`).
    fn driver_ending(
        manual: &Manual,
        ws: FakeWs,
        shared: &Arc<Shared>,
        ended: Option<BoxFuture>,
    ) -> TestDriver {
        let mut core = Core::new(MediaConfig::new());
        core.handle_text(
            "MEDIA_START connection_id:c1 channel:WebSocket/INCOMING/0x1 channel_id:em-1 \
             format:slin optimal_frame_size:320 ptime:20",
        );
        while core.poll_output().is_some() {}
        let options = MediaOptions {
            inbox_frames: 100,
            ..MediaOptions::new("app", "slin")
        };
        Driver::new(
            CustomRuntime::new(manual.clone(), NoTransport),
            ws,
            core,
            shared.clone(),
            &options,
            ended,
        )
    }

    fn poll(d: &mut TestDriver) -> Poll<()> {
        Pin::new(d).poll(&mut Context::from_waker(noop_waker_ref()))
    }

    fn inbox(shared: &Shared) -> Vec<MediaItem> {
        shared.lock().inbox.drain(..).collect()
    }

    /// Audio a handle hands over while the driver's pass is under way (after it took the
    /// commands, before it delivers `Closed`: here while it writes to a socket that fails)
    /// was accepted (`Ok`) and then found nobody: it is reported refused, never lost.
    #[test]
    fn audio_handed_over_as_the_session_closes_is_refused_not_lost() {
        let manual = Manual::new();
        let shared = Shared::new();
        let late = shared.clone();
        let ws = FakeWs {
            on_write: Some(Box::new(move || {
                let _ = late.hand_over(Cmd::Audio(Bytes::from(vec![0u8; 320])));
            })),
            fail_writes: true,
            ..FakeWs::default()
        };
        let mut d = driver(&manual, ws, &shared);
        shared
            .hand_over(Cmd::Audio(Bytes::from(vec![0u8; 320])))
            .expect("open");
        assert_eq!(poll(&mut d), Poll::Ready(()), "the socket failed");
        let items = inbox(&shared);
        assert!(
            matches!(
                items.as_slice(),
                [
                    MediaItem::Refused {
                        command: None,
                        count: 1,
                        error: SendError::Closed
                    },
                    MediaItem::Closed { code: None, .. }
                ]
            ),
            "{items:?}"
        );
        let st = shared.lock();
        assert!(st.commands.is_empty());
        assert_eq!(st.stats.refused, 1);
    }

    /// The session closes and the peer never answers (the socket stays open, silent): at
    /// `close_timeout` by the executor's clock the driver gives the socket up and the
    /// session ends with `Closed` and no code.
    #[test]
    fn a_close_never_answered_ends_the_session_at_its_timeout() {
        let manual = Manual::new();
        let shared = Shared::new();
        let mut d = driver(&manual, FakeWs::default(), &shared);
        shared.command(Cmd::Close).expect("open");
        assert_eq!(poll(&mut d), Poll::Pending);
        manual.advance(Duration::from_millis(4_999));
        assert_eq!(poll(&mut d), Poll::Pending, "before the timeout");
        assert!(inbox(&shared).is_empty());
        manual.advance(Duration::from_millis(1));
        assert_eq!(poll(&mut d), Poll::Ready(()));
        let items = inbox(&shared);
        assert!(
            matches!(items.as_slice(), [MediaItem::Closed { code: None, .. }]),
            "{items:?}"
        );
    }

    /// Asterisk closes the socket: the session ends with `Closed` (its status) at once, and
    /// the driver closes its side, which writes the answer the WebSocket layer queued (RFC
    /// 6455; Asterisk waits for it), before it drops the socket. It dropped it unanswered.
    /// A peer that no longer reads keeps the driver at most `close_timeout`.
    #[test]
    fn a_close_from_the_peer_is_answered_before_the_socket_is_dropped() {
        let close = || Some(WsMessage::Close(Some(WsClose::new(1000, ""))));
        let manual = Manual::new();
        let shared = Shared::new();
        let ws = FakeWs {
            incoming: close(),
            ..FakeWs::default()
        };
        let closes = ws.closes.clone();
        let mut d = driver(&manual, ws, &shared);
        assert_eq!(poll(&mut d), Poll::Ready(()));
        assert_eq!(
            closes.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "the answer is written out"
        );
        let items = inbox(&shared);
        assert!(
            matches!(
                items.as_slice(),
                [MediaItem::Closed {
                    code: Some(1000),
                    ..
                }]
            ),
            "{items:?}"
        );

        // The peer reads no more: the answer waits, within the close timeout.
        let shared = Shared::new();
        let ws = FakeWs {
            incoming: close(),
            close_blocks: true,
            ..FakeWs::default()
        };
        let mut d = driver(&manual, ws, &shared);
        assert_eq!(
            poll(&mut d),
            Poll::Pending,
            "the answer waits for the socket"
        );
        let items = inbox(&shared);
        assert!(
            matches!(
                items.as_slice(),
                [MediaItem::Closed {
                    code: Some(1000),
                    ..
                }]
            ),
            "the session ended at once: {items:?}"
        );
        manual.advance(Duration::from_millis(4_999));
        assert_eq!(poll(&mut d), Poll::Pending, "before the timeout");
        manual.advance(Duration::from_millis(1));
        assert_eq!(poll(&mut d), Poll::Ready(()));
        assert!(inbox(&shared).is_empty());
    }

    /// The media channel is hung up (an ARI `DELETE`): the session sees Asterisk's CLOSE
    /// and the media channel's `ChannelDestroyed` in either order, depending on which
    /// socket is read first (Asterisk writes the close first; the events travel on another
    /// socket). Either way it ends once, with `Closed` and Asterisk's 1000, and answers or
    /// sends exactly one close.
    #[test]
    fn the_media_channel_destroyed_and_the_close_end_the_session_in_either_order() {
        let close = || Some(WsMessage::Close(Some(WsClose::new(1000, ""))));
        // The session's one output: `Closed` with Asterisk's 1000.
        let closed_with_1000 = |shared: &Shared| {
            let items = inbox(shared);
            assert!(
                matches!(
                    items.as_slice(),
                    [MediaItem::Closed {
                        code: Some(1000),
                        ..
                    }]
                ),
                "{items:?}"
            );
        };
        let manual = Manual::new();
        let ended_now: fn() -> Option<BoxFuture> = || Some(Box::pin(std::future::ready(())));

        // The close first (as Asterisk writes them); `ChannelDestroyed` never needed.
        let shared = Shared::new();
        let ws = FakeWs {
            incoming: close(),
            ..FakeWs::default()
        };
        let closes = ws.closes.clone();
        let pending: BoxFuture = Box::pin(std::future::pending());
        let mut d = driver_ending(&manual, ws, &shared, Some(pending));
        assert_eq!(poll(&mut d), Poll::Ready(()));
        closed_with_1000(&shared);
        assert_eq!(closes.load(std::sync::atomic::Ordering::Relaxed), 1);

        // `ChannelDestroyed` first: the session closes its side (1000), and Asterisk's
        // close, crossing it, ends the session.
        let shared = Shared::new();
        let ws = FakeWs {
            later: close(),
            ..FakeWs::default()
        };
        let closes = ws.closes.clone();
        let mut d = driver_ending(&manual, ws, &shared, ended_now());
        assert_eq!(
            poll(&mut d),
            Poll::Pending,
            "its close waits for the answer"
        );
        assert!(inbox(&shared).is_empty());
        assert_eq!(poll(&mut d), Poll::Ready(()));
        closed_with_1000(&shared);
        assert_eq!(closes.load(std::sync::atomic::Ordering::Relaxed), 1);

        // Both at once (the close read in the same pass as `ChannelDestroyed`).
        let shared = Shared::new();
        let ws = FakeWs {
            incoming: close(),
            ..FakeWs::default()
        };
        let mut d = driver_ending(&manual, ws, &shared, ended_now());
        assert_eq!(poll(&mut d), Poll::Ready(()));
        closed_with_1000(&shared);
    }
}
