//! [`MediaPacer`]: one timer that sends many media sessions' audio at real-time pace.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use ari_proto::media::websocket::{Reframer, SendError};
use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::task::AtomicWaker;

use crate::media::{Cmd, MediaSession, Shared};
use crate::runtime::Executor;

/// Width of one bucket of a [`PacingHistogram`].
const BUCKET: Duration = Duration::from_micros(50);
/// Buckets of a [`PacingHistogram`] below its overflow bucket (50 µs × 400 = 20 ms).
const BUCKETS: usize = 400;

/// The settings of a [`MediaPacer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PacerConfig {
    /// The frame duration: every attached session gets one frame per `ptime` (default 20 ms,
    /// the `ptime` of `MEDIA_START` for the usual codecs). Sessions of another `ptime` are
    /// refused ([`PaceError::Ptime`]).
    pub ptime: Duration,
    /// Sending phases within one `ptime` (default 20: 1 ms apart at 20 ms). Sessions are
    /// spread over them ([`phase_sessions`](Self::phase_sessions)), so a thousand sessions do
    /// not all write at the same instant: each phase's writes are a small burst the executor
    /// gets through before the next one. 1 sends every session's frame at the same tick.
    pub phases: u32,
    /// Frames each session may hold waiting for its turn (default 500: 10 s at 20 ms); the
    /// audio that does not fit is dropped and counted ([`PacedStats::overflow_frames`]).
    pub queue_frames: usize,
    /// Sessions a phase takes before the next phase is used (default 50): a few sessions
    /// share one tick (one wake-up of the pacer per `ptime`, not one per phase), many are
    /// spread over every phase, evenly spaced. Once every phase has this many, each new
    /// session goes to the least used.
    pub phase_sessions: usize,
    /// Where the ticks run (default [`PacerThread::Executor`]).
    pub thread: PacerThread,
}

/// Where a [`MediaPacer`]'s ticks run.
///
/// Every tick writes the due frames of its phase's sessions; a tick that starts late makes
/// each of those frames late. On a task of the executor (the default) a tick waits for a
/// worker thread, which on a busy machine may be running other work for the scheduler's
/// time slice (a few ms on Linux). A thread of its own waits only for a CPU, and at
/// real-time priority not even that: the usual setting for the media threads of a telephony
/// server (Asterisk's `-p`, FreeSWITCH's `-rp`) when many calls share few cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PacerThread {
    /// A task on the executor given to [`MediaPacer::with_config`].
    #[default]
    Executor,
    /// An OS thread of its own (named `ari-media-pacer`), sleeping between ticks on the
    /// executor's clock.
    Dedicated,
    /// An OS thread of its own at real-time priority (`SCHED_FIFO` at `priority`, 1 to 99, on
    /// Linux and other Unix systems). It needs the right to (root, `CAP_SYS_NICE`, or an
    /// `rtprio` limit for the user): without it, or elsewhere, the thread runs at normal
    /// priority, [`PacerStats::running_on`] says so and a warning is logged.
    Realtime {
        /// The `SCHED_FIFO` priority (1 to 99; Asterisk's `-p` uses 1–2 above normal).
        priority: u8,
    },
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig {
            ptime: Duration::from_millis(20),
            phases: 20,
            queue_frames: 500,
            phase_sessions: 50,
            thread: PacerThread::Executor,
        }
    }
}

impl PacerConfig {
    /// The defaults.
    pub fn new() -> PacerConfig {
        PacerConfig::default()
    }

    /// Sets [`ptime`](Self::ptime) (at least 1 ms).
    pub fn ptime(mut self, ptime: Duration) -> Self {
        self.ptime = ptime.max(Duration::from_millis(1));
        self
    }

    /// Sets [`phases`](Self::phases) (1 to 1,000).
    pub fn phases(mut self, phases: u32) -> Self {
        self.phases = phases.clamp(1, 1_000);
        self
    }

    /// Sets [`queue_frames`](Self::queue_frames) (at least 1).
    pub fn queue_frames(mut self, frames: usize) -> Self {
        self.queue_frames = frames.max(1);
        self
    }

    /// Sets [`phase_sessions`](Self::phase_sessions) (at least 1).
    pub fn phase_sessions(mut self, sessions: usize) -> Self {
        self.phase_sessions = sessions.max(1);
        self
    }

    /// Sets [`thread`](Self::thread).
    ///
    /// ```
    /// use ari_client::media::{PacerConfig, PacerThread};
    /// let config = PacerConfig::new().thread(PacerThread::Realtime { priority: 10 });
    /// assert_eq!(config.thread, PacerThread::Realtime { priority: 10 });
    /// ```
    pub fn thread(mut self, thread: PacerThread) -> Self {
        self.thread = thread;
        self
    }
}

/// The phases in the order they are taken into use: each next one as far as can be from
/// those before it (0, then the middle, then the quarters, …).
fn spread_order(phases: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(phases);
    // The circular distance of each phase to the nearest one taken.
    let mut distance = vec![usize::MAX; phases];
    let mut next = 0;
    for _ in 0..phases {
        order.push(next);
        distance[next] = 0;
        for (i, d) in distance.iter_mut().enumerate() {
            let gap = i.abs_diff(next);
            *d = (*d).min(gap.min(phases - gap));
        }
        // The farthest (the first of equals).
        next = (0..phases)
            .max_by_key(|&i| (distance[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
    }
    order
}

/// Why [`MediaPacer::attach`] refused a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaceError {
    /// The pacer was closed.
    Closed,
    /// The session's `ptime` (from `MEDIA_START`) is not the pacer's.
    Ptime {
        /// The pacer's `ptime`.
        pacer: Duration,
        /// The session's `ptime`.
        session: Duration,
    },
}

impl fmt::Display for PaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaceError::Closed => f.write_str("the media pacer is closed"),
            PaceError::Ptime { pacer, session } => write!(
                f,
                "the session's ptime is {} ms and the pacer's {} ms: use a pacer made with \
                 PacerConfig::ptime of the session's",
                session.as_millis(),
                pacer.as_millis()
            ),
        }
    }
}

impl std::error::Error for PaceError {}

/// What [`PacedSender::send`] did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PacedQueued {
    /// Whole frames queued.
    pub frames: usize,
    /// Frames dropped because the queue was full.
    pub dropped: usize,
}

/// Counters of one [`PacedSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PacedStats {
    /// Frames handed to the session at their tick.
    pub frames_sent: u64,
    /// Frames dropped because the queue was full.
    pub overflow_frames: u64,
    /// Ticks with nothing to send (after the first frame): gaps in the audio.
    pub underruns: u64,
    /// Ticks skipped because Asterisk said `MEDIA_XOFF` (the frames wait).
    pub paused_ticks: u64,
    /// Frames dropped by [`PacedSender::clear`] or left when the sender was closed.
    pub discarded_frames: u64,
    /// Bytes of a partial frame (less than one frame, held for the rest of it) dropped by
    /// [`PacedSender::clear`], or left when the sender was closed or its session ended.
    pub discarded_bytes: u64,
}

/// A distribution of durations in 50 µs buckets up to 20 ms (and one bucket above).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacingHistogram {
    /// Samples per bucket: bucket `i` holds `[i × 50 µs, (i + 1) × 50 µs)`; the last one
    /// everything from 20 ms.
    pub counts: Vec<u64>,
    /// The largest sample.
    pub max: Duration,
}

impl PacingHistogram {
    /// The width of a bucket (50 µs).
    pub const BUCKET: Duration = BUCKET;

    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// An upper bound of the `p`-th percentile (0–100): the upper edge of the bucket that
    /// holds it (at most [`max`](Self::max)); zero without samples.
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        // The rank of the sample, 1-based (nearest rank).
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                if i == BUCKETS {
                    return self.max;
                }
                let edge = BUCKET * u32::try_from(i + 1).unwrap_or(u32::MAX);
                return edge.min(self.max);
            }
        }
        self.max
    }

    /// The samples recorded since `earlier` (a snapshot of the same histogram), for
    /// a measurement window. Its [`max`](Self::max) is an upper bound: the upper edge of the
    /// highest bucket with a sample (the latest maximum if that is the overflow bucket).
    pub fn since(&self, earlier: &PacingHistogram) -> PacingHistogram {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
            .collect();
        let max = match counts.iter().rposition(|&c| c > 0) {
            None => Duration::ZERO,
            Some(i) if i >= BUCKETS => self.max,
            Some(i) => (BUCKET * u32::try_from(i + 1).unwrap_or(u32::MAX)).min(self.max),
        };
        PacingHistogram { counts, max }
    }
}

struct Histogram {
    counts: Box<[AtomicU64]>,
    max_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, d: Duration) {
        let i = usize::try_from(d.as_nanos() / BUCKET.as_nanos())
            .unwrap_or(usize::MAX)
            .min(BUCKETS);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PacingHistogram {
        PacingHistogram {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            max: Duration::from_nanos(self.max_ns.load(Ordering::Relaxed)),
        }
    }
}

/// The timing of paced frames, recorded by the sessions' socket tasks as they write them.
pub(crate) struct PaceMetrics {
    lateness: Histogram,
    jitter: Histogram,
    written: AtomicU64,
}

impl PaceMetrics {
    /// A paced frame went out `late` after its tick; `previous` is the lateness of the same
    /// session's frame of the tick before, if that one went out too.
    pub(crate) fn record(&self, late: Duration, previous: Option<Duration>) {
        self.written.fetch_add(1, Ordering::Relaxed);
        self.lateness.record(late);
        if let Some(p) = previous {
            self.jitter.record(late.abs_diff(p));
        }
    }
}

/// Counters and timing of a [`MediaPacer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacerStats {
    /// Sessions attached now.
    pub sessions: usize,
    /// Ticks (phases) the pacer ran.
    pub ticks: u64,
    /// Ticks that ran more than one `ptime` after their time (the executor was overloaded).
    pub late_ticks: u64,
    /// Frames handed to sessions.
    pub frames_sent: u64,
    /// Ticks a session had nothing to send (after its first frame): gaps in its audio.
    pub underruns: u64,
    /// Ticks a session skipped because Asterisk said `MEDIA_XOFF`.
    pub paused_ticks: u64,
    /// Frames the sessions' socket tasks wrote at once (the timed ones; frames held back by
    /// flow control are not timed).
    pub frames_timed: u64,
    /// Frames dropped because a session's queue was full (all sessions).
    pub overflow_frames: u64,
    /// How late each timed frame was written: the write's time minus the frame's scheduled
    /// time (the session's phase plus a whole number of `ptime`s), by the executor's clock.
    pub send_lateness: PacingHistogram,
    /// Send-time jitter: for consecutive frames of one session, the difference of their
    /// lateness (the distance of the gap between their writes from `ptime`).
    pub send_jitter: PacingHistogram,
    /// Where the ticks run: [`PacerConfig::thread`], or what it fell back to (a thread
    /// refused real-time priority runs as [`PacerThread::Dedicated`]; a thread that could not
    /// be started leaves the ticks to the executor).
    pub running_on: PacerThread,
}

/// One attached session.
struct Paced {
    session: Arc<Shared>,
    /// The session's control format and passthrough mode, to check a mark as its sender does.
    format: ari_proto::media::websocket::ControlFormat,
    passthrough: bool,
    /// Asterisk answers `MARK_MEDIA` (the sender's knowledge).
    marks: bool,
    state: Mutex<PacedState>,
}

struct PacedState {
    queue: VecDeque<Bytes>,
    reframer: Reframer,
    capacity: usize,
    /// Detached (the sender closed or dropped) or the session ended.
    closed: bool,
    /// A frame has been sent: later empty ticks are underruns.
    started: bool,
    stats: PacedStats,
    /// Marks waiting for their audio: each goes to the session once `stats.frames_sent`
    /// reaches its count (right after the last frame queued before it).
    marks: VecDeque<(u64, ari_proto::media::websocket::Command)>,
}

impl Paced {
    fn lock(&self) -> MutexGuard<'_, PacedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct PacerState {
    /// The sessions of each phase.
    phases: Vec<Vec<Arc<Paced>>>,
    sessions: usize,
    closed: bool,
    /// `MediaPacer` handles alive.
    handles: usize,
    ticks: u64,
    late_ticks: u64,
    frames_sent: u64,
    underruns: u64,
    paused_ticks: u64,
}

struct PacerInner {
    config: PacerConfig,
    /// The phases in the order they are taken into use.
    order: Vec<usize>,
    /// One phase's duration (`ptime / phases`).
    step: Duration,
    state: Mutex<PacerState>,
    /// Something changed (a session attached, the pacer closed): the task looks again.
    changed: AtomicBool,
    task: AtomicWaker,
    overflow_frames: AtomicU64,
    metrics: Arc<PaceMetrics>,
    /// The pacer's task ended.
    ended: AtomicBool,
    /// Where the ticks run (see [`PacerStats::running_on`]).
    running_on: Mutex<PacerThread>,
}

impl PacerInner {
    fn lock(&self) -> MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One timer that sends many media sessions' audio at real-time pace: the library's way for
/// an application that produces audio (text-to-speech, a voice model, a file) to play it
/// without a timer of its own per call.
///
/// [`attach`](Self::attach) a [`MediaSession`] to get a [`PacedSender`]; audio handed to it
/// (any chunk size, any amount ahead) is cut into the session's frames and handed to the
/// session one frame per `ptime`, at absolute times of the executor's clock (no drift). One
/// task on the executor serves every attached session: the sessions are spread over up to
/// [`PacerConfig::phases`] phases of the `ptime` ([`PacerConfig::phase_sessions`] on a phase
/// before the next is used), so each tick writes a small share of the sessions' frames, and
/// a few sessions share one tick. The pacer's task writes the frames itself, one session
/// after the other in a fixed order (it runs each session's socket driver, as the session's
/// task would): no task wake-up per frame; a session whose task is busy at that moment gets
/// its frame through its task, and so do the sessions left when writing took half a phase
/// (an overloaded machine: their tasks write in parallel on the executor's threads). With
/// [`PacerConfig::thread`] the ticks run on an OS thread of its own instead, at real-time
/// priority if allowed: the way to keep 1,000 calls' pacing within a millisecond on a busy
/// machine of few cores. On the executor the ticks wait on its precise timer
/// ([`Executor::sleep_until_precise`]: on tokio a `timerfd`, as tokio's own timer rounds to
/// whole milliseconds). While Asterisk says `MEDIA_XOFF` a session's frames wait (none is
/// lost); frames beyond [`PacerConfig::queue_frames`] are dropped and counted. The timing of
/// every frame as written is in [`stats`](Self::stats).
///
/// ```no_run
/// # async fn play<R: ari_client::Runtime>(channel: ari_client::Channel<R>, pacer: ari_client::media::MediaPacer, speech: Vec<bytes::Bytes>) -> Result<(), Box<dyn std::error::Error>> {
/// use ari_client::media::MediaOptions;
/// // let pacer = MediaPacer::new(client.runtime()); // one for the whole application
/// let media = channel.media(MediaOptions::new("media", "slin16")).await?;
/// let paced = pacer.attach(&media)?;
/// for chunk in speech {
///     paced.send(chunk)?; // leaves as 20 ms frames, one per 20 ms
/// }
/// # Ok(()) }
/// ```
pub struct MediaPacer {
    inner: Arc<PacerInner>,
}

impl fmt::Debug for MediaPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPacer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Clone for MediaPacer {
    fn clone(&self) -> Self {
        self.inner.lock().handles += 1;
        MediaPacer {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for MediaPacer {
    fn drop(&mut self) {
        self.inner.lock().handles -= 1;
        self.inner.notify();
    }
}

impl MediaPacer {
    /// A pacer with the default settings (20 ms, 20 phases), its task spawned on `executor`
    /// (the client's runtime: [`Client::runtime`](crate::Client::runtime)).
    pub fn new<E: Executor>(executor: &E) -> MediaPacer {
        MediaPacer::with_config(executor, PacerConfig::new())
    }

    /// A pacer with `config`.
    pub fn with_config<E: Executor>(executor: &E, config: PacerConfig) -> MediaPacer {
        MediaPacer::start(executor, config, realtime::raise)
    }

    /// [`with_config`](Self::with_config), `raise` putting a thread at real-time priority.
    fn start<E: Executor>(
        executor: &E,
        config: PacerConfig,
        raise: fn(u8) -> Result<(), String>,
    ) -> MediaPacer {
        let phases = config.phases.clamp(1, 1_000);
        let config = PacerConfig { phases, ..config };
        let inner = Arc::new(PacerInner {
            order: spread_order(phases as usize),
            step: config.ptime / phases,
            state: Mutex::new(PacerState {
                phases: (0..phases).map(|_| Vec::new()).collect(),
                sessions: 0,
                closed: false,
                handles: 1,
                ticks: 0,
                late_ticks: 0,
                frames_sent: 0,
                underruns: 0,
                paused_ticks: 0,
            }),
            config,
            changed: AtomicBool::new(false),
            task: AtomicWaker::new(),
            overflow_frames: AtomicU64::new(0),
            metrics: Arc::new(PaceMetrics {
                lateness: Histogram::new(),
                jitter: Histogram::new(),
                written: AtomicU64::new(0),
            }),
            ended: AtomicBool::new(false),
            running_on: Mutex::new(PacerThread::Executor),
        });
        if inner.config.thread == PacerThread::Executor || !spawn_thread(executor, &inner, raise) {
            executor.spawn(run(executor.clone(), inner.clone(), false));
        }
        MediaPacer { inner }
    }

    /// Paces `session`'s audio: the returned sender's audio leaves one frame per `ptime`.
    /// Give the session its audio only through it (audio sent with
    /// [`MediaSender::send_audio`](crate::media::MediaSender::send_audio) besides goes out
    /// at once, between the paced frames).
    pub fn attach(&self, session: &MediaSession) -> Result<PacedSender, PaceError> {
        let ptime = Duration::from_millis(u64::from(session.start.ptime));
        if ptime != self.inner.config.ptime {
            return Err(PaceError::Ptime {
                pacer: self.inner.config.ptime,
                session: ptime,
            });
        }
        let paced = Arc::new(Paced {
            session: session.shared.clone(),
            format: session.sender.format,
            passthrough: session.sender.passthrough,
            marks: session.sender.marks,
            state: Mutex::new(PacedState {
                queue: VecDeque::new(),
                reframer: Reframer::new(session.start.optimal_frame_size as usize),
                capacity: self.inner.config.queue_frames,
                closed: false,
                started: false,
                stats: PacedStats::default(),
                marks: VecDeque::new(),
            }),
        });
        {
            let mut st = self.inner.lock();
            if st.closed {
                return Err(PaceError::Closed);
            }
            let fill = self.inner.config.phase_sessions.max(1);
            let phase = self
                .inner
                .order
                .iter()
                .copied()
                .find(|&i| st.phases[i].len() < fill)
                .unwrap_or_else(|| {
                    // Every phase is full: the least used, in spread order.
                    self.inner
                        .order
                        .iter()
                        .copied()
                        .min_by_key(|&i| st.phases[i].len())
                        .unwrap_or(0)
                });
            st.phases[phase].push(paced.clone());
            st.sessions += 1;
        }
        self.inner.notify();
        Ok(PacedSender {
            paced,
            pacer: self.inner.clone(),
        })
    }

    /// The counters and the timing of the frames written so far.
    pub fn stats(&self) -> PacerStats {
        let st = self.inner.lock();
        PacerStats {
            sessions: st.sessions,
            ticks: st.ticks,
            late_ticks: st.late_ticks,
            frames_sent: st.frames_sent,
            underruns: st.underruns,
            paused_ticks: st.paused_ticks,
            frames_timed: self.inner.metrics.written.load(Ordering::Relaxed),
            overflow_frames: self.inner.overflow_frames.load(Ordering::Relaxed),
            send_lateness: self.inner.metrics.lateness.snapshot(),
            send_jitter: self.inner.metrics.jitter.snapshot(),
            running_on: *self
                .inner
                .running_on
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Stops the pacer: its task ends, its senders refuse audio ([`SendError::Closed`]) and
    /// their queued frames are dropped (counted in [`PacedStats::discarded_frames`]). The
    /// sessions stay open.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.inner.notify();
    }

    /// Whether the pacer's task has ended (after [`close`](Self::close)).
    pub fn is_closed(&self) -> bool {
        self.inner.ended.load(Ordering::Acquire)
    }
}

/// Audio for one session, sent one frame per `ptime` by a [`MediaPacer`]. Dropping it
/// detaches the session from the pacer.
pub struct PacedSender {
    paced: Arc<Paced>,
    pacer: Arc<PacerInner>,
}

impl fmt::Debug for PacedSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacedSender")
            .field("queued_frames", &self.queued_frames())
            .finish_non_exhaustive()
    }
}

impl PacedSender {
    /// Queues audio, in any chunk size: it is cut into the session's frames (a sub-frame tail
    /// waits for the next chunk) which leave one per `ptime`. Frames that do not fit in the
    /// queue are dropped and counted ([`PacedQueued::dropped`],
    /// [`PacedStats::overflow_frames`]).
    pub fn send(&self, audio: Bytes) -> Result<PacedQueued, SendError> {
        let mut st = self.paced.lock();
        if !st.closed && self.paced.session.ended.load(Ordering::Acquire) {
            close_paced(&mut st);
        }
        if st.closed {
            return Err(SendError::Closed);
        }
        let mut queued = PacedQueued::default();
        let PacedState {
            queue,
            reframer,
            capacity,
            ..
        } = &mut *st;
        reframer.push(audio, |frame| {
            if queue.len() < *capacity {
                queue.push_back(frame);
                queued.frames += 1;
            } else {
                queued.dropped += 1;
            }
        });
        if queued.dropped > 0 {
            st.stats.overflow_frames += queued.dropped as u64;
            self.pacer
                .overflow_frames
                .fetch_add(queued.dropped as u64, Ordering::Relaxed);
        }
        Ok(queued)
    }

    /// `MARK_MEDIA` after the audio queued here so far: the mark goes to the session right
    /// after that audio's last frame, so [`MediaEvent::MediaMarkProcessed`] comes when it has
    /// been played (the end of a prompt). A mark sent with
    /// [`MediaSender::mark`](crate::media::MediaSender::mark) would pass the frames still
    /// waiting here and come back at once. Refused as the sender refuses it (passthrough
    /// mode, an Asterisk without `MARK_MEDIA`, an id the control format cannot carry) and once the session ended. After
    /// [`clear`](Self::clear) the marks waiting go to the session at once.
    ///
    /// [`MediaEvent::MediaMarkProcessed`]: crate::media::MediaEvent::MediaMarkProcessed
    pub fn mark(&self, correlation_id: impl Into<String>) -> Result<(), SendError> {
        use ari_proto::media::websocket::Command;
        let command = Command::MarkMedia {
            correlation_id: Some(correlation_id.into()),
        };
        if self.paced.passthrough {
            return Err(SendError::Passthrough {
                command: command.name(),
            });
        }
        if !self.paced.marks {
            return Err(SendError::Unsupported {
                command: command.name(),
                since: ari_proto::media::websocket::MARK_MEDIA_SINCE,
            });
        }
        command.encode(self.paced.format)?;
        let mut st = self.paced.lock();
        if !st.closed && self.paced.session.ended.load(Ordering::Acquire) {
            close_paced(&mut st);
        }
        if st.closed {
            return Err(SendError::Closed);
        }
        if st.queue.is_empty() && st.marks.is_empty() {
            // Nothing waits here: the mark goes now, behind what the session holds.
            drop(st);
            return self.paced.session.command(Cmd::Command(command));
        }
        let due = st.stats.frames_sent + st.queue.len() as u64;
        st.marks.push_back((due, command));
        Ok(())
    }

    /// Frames waiting for their tick.
    pub fn queued_frames(&self) -> usize {
        self.paced.lock().queue.len()
    }

    /// Drops the frames waiting (and a sub-frame tail), for barge-in; returns how many
    /// frames. Audio already handed to the session is not recalled
    /// ([`MediaSender::flush`](crate::media::MediaSender::flush) does that at Asterisk).
    pub fn clear(&self) -> usize {
        let mut st = self.paced.lock();
        let n = st.queue.len();
        st.queue.clear();
        st.stats.discarded_bytes += st.reframer.clear() as u64;
        st.stats.discarded_frames += n as u64;
        // Their audio is gone: the marks waiting go now (a `flush` of the session then
        // reports them discarded).
        hand_over_marks(&self.paced, &mut st, u64::MAX);
        drop(st);
        self.paced.session.wake_driver();
        n
    }

    /// The counters so far.
    pub fn stats(&self) -> PacedStats {
        self.paced.lock().stats
    }

    /// Detaches the session from the pacer: queued frames are dropped (counted in
    /// [`PacedStats::discarded_frames`]) and later audio refused. The session stays open.
    pub fn close(&self) {
        let mut st = self.paced.lock();
        if !st.closed {
            // The session goes on: the marks waiting go to it (their audio is dropped).
            hand_over_marks(&self.paced, &mut st, u64::MAX);
            close_paced(&mut st);
            drop(st);
            self.paced.session.wake_driver();
        }
    }
}

impl Drop for PacedSender {
    fn drop(&mut self) {
        self.close();
        self.pacer.notify();
    }
}

/// Hands the session the marks due once `frames_sent` frames have gone (in order). A
/// session that ended refuses them: its marks would never be processed anyway.
fn hand_over_marks(paced: &Paced, st: &mut PacedState, frames_sent: u64) {
    while st.marks.front().is_some_and(|(due, _)| *due <= frames_sent) {
        if let Some((_, command)) = st.marks.pop_front() {
            let _ = paced.session.hand_over(Cmd::Command(command));
        }
    }
}

fn close_paced(st: &mut PacedState) {
    st.closed = true;
    st.marks.clear();
    st.stats.discarded_frames += st.queue.len() as u64;
    st.queue.clear();
    st.stats.discarded_bytes += st.reframer.clear() as u64;
}

/// What one phase's tick did.
#[derive(Default)]
struct Tick {
    sent: u64,
    detached: usize,
    underruns: u64,
    paused: u64,
}

/// Hands each session of `list` its next frame, due at `due`; drops the sessions that ended.
/// The sessions handed a frame are put in `drive`, in `list`'s order, for their drivers to
/// run (once the sessions' locks are released).
fn tick(
    list: &mut Vec<Arc<Paced>>,
    due: Instant,
    metrics: &Arc<PaceMetrics>,
    drive: &mut Vec<Arc<Shared>>,
) -> Tick {
    let mut t = Tick::default();
    list.retain(|p| {
        let mut st = p.lock();
        if !st.closed && p.session.ended.load(Ordering::Acquire) {
            // The call ended while its queue was empty: detach it now, not at its next
            // frame (its empty ticks are no underruns, and later audio is refused).
            close_paced(&mut st);
        }
        if st.closed {
            t.detached += 1;
            return false;
        }
        if p.session.xoff.load(Ordering::Relaxed) {
            st.stats.paused_ticks += 1;
            t.paused += 1;
            return true;
        }
        let Some(frame) = st.queue.pop_front() else {
            if st.started {
                st.stats.underruns += 1;
                t.underruns += 1;
            }
            return true;
        };
        let cmd = Cmd::Paced {
            frame,
            due,
            metrics: metrics.clone(),
        };
        if p.session.hand_over(cmd).is_err() {
            // The session ended: nothing more goes out.
            st.stats.discarded_frames += 1;
            close_paced(&mut st);
            t.detached += 1;
            return false;
        }
        drive.push(p.session.clone());
        st.started = true;
        st.stats.frames_sent += 1;
        t.sent += 1;
        let sent = st.stats.frames_sent;
        hand_over_marks(p, &mut st, sent);
        true
    });
    t
}

/// Completes when something changed (or at once if it has).
fn changed(inner: &PacerInner) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        inner.task.register(cx.waker());
        if inner.changed.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Starts the pacer's own thread (`config.thread` is `Dedicated` or `Realtime`); `false`
/// if the system refused a thread (the ticks then run on the executor).
fn spawn_thread<E: Executor>(
    executor: &E,
    inner: &Arc<PacerInner>,
    raise: fn(u8) -> Result<(), String>,
) -> bool {
    let (executor, inner2) = (executor.clone(), inner.clone());
    // Until the thread says otherwise (real-time priority refused).
    *inner.running_on.lock().unwrap_or_else(|p| p.into_inner()) = inner.config.thread;
    let (ready, started) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("ari-media-pacer".into())
        .spawn(move || {
            if let PacerThread::Realtime { priority } = inner2.config.thread {
                if let Err(why) = raise(priority) {
                    *inner2.running_on.lock().unwrap_or_else(|p| p.into_inner()) =
                        PacerThread::Dedicated;
                    tracing::warn!(
                        target: "ari_client",
                        priority,
                        "media pacer: real-time priority refused ({why}); its thread runs at \
                         normal priority (grant CAP_SYS_NICE or an rtprio limit to the process)"
                    );
                }
            }
            // `running_on` is settled: `with_config` may return.
            let _ = ready.send(());
            parked::block_on(&executor.clone(), run(executor, inner2, true));
        });
    match spawned {
        Ok(_) => {
            // A few microseconds: the thread only tries its priority first.
            let _ = started.recv();
            true
        }
        Err(e) => {
            *inner.running_on.lock().unwrap_or_else(|p| p.into_inner()) = PacerThread::Executor;
            tracing::warn!(
                target: "ari_client",
                error = %e,
                "media pacer: no thread of its own could be started; its ticks run on the executor"
            );
            false
        }
    }
}

/// Running the pacer on a thread of its own: a future driven by parking the thread until
/// its next deadline or a wake-up.
mod parked {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Instant;

    use crate::runtime::Executor;

    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    thread_local! {
        /// The clock as [`block_on`] read it before its current poll.
        static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
        /// The earliest deadline a pending [`sleep_until`] of this poll waits for.
        static NEXT: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// Completes at `due` by the executor's clock, on a thread run by [`block_on`].
    pub(super) fn sleep_until(due: Instant) -> impl Future<Output = ()> {
        std::future::poll_fn(move |_| {
            if NOW.with(Cell::get).is_some_and(|now| now >= due) {
                return Poll::Ready(());
            }
            NEXT.with(|n| n.set(Some(n.get().map_or(due, |t| t.min(due)))));
            Poll::Pending
        })
    }

    /// Runs `fut` to completion on this thread, parked between polls until the earliest
    /// deadline of its sleeps or a wake-up.
    pub(super) fn block_on<E: Executor>(executor: &E, fut: impl Future<Output = ()>) {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            NEXT.with(|n| n.set(None));
            NOW.with(|n| n.set(Some(executor.now())));
            if fut.as_mut().poll(&mut cx).is_ready() {
                return;
            }
            match NEXT.with(Cell::get) {
                Some(due) => {
                    let now = executor.now();
                    if due > now {
                        std::thread::park_timeout(due - now);
                    }
                }
                None => std::thread::park(),
            }
        }
    }
}

/// Real-time priority for the pacer's thread.
mod realtime {
    /// Puts the calling thread in `SCHED_FIFO` at `priority` (1 to 99).
    #[cfg(unix)]
    pub(super) fn raise(priority: u8) -> Result<(), String> {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        use thread_priority::{ThreadPriority, ThreadPriorityValue};
        let value = ThreadPriorityValue::try_from(priority.clamp(1, 99))
            .map_err(|e| format!("priority {priority}: {e}"))?;
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(value),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .map_err(|e| format!("{e:?}"))
    }

    /// No real-time scheduling here.
    #[cfg(not(unix))]
    pub(super) fn raise(_priority: u8) -> Result<(), String> {
        Err("real-time priority is only set on Unix systems".into())
    }
}

/// The pacer's task: phase `k` runs at `origin + k × step`. `parked`: it runs on a thread of
/// its own (driven by [`parked::block_on`]), not on the executor.
async fn run<E: Executor>(executor: E, inner: Arc<PacerInner>, parked: bool) {
    let phases = inner.config.phases as u64;
    let step = inner.step;
    let origin = executor.now();
    let index_of = |t: Instant| -> u64 {
        let since = t.saturating_duration_since(origin).as_nanos();
        u64::try_from(since.div_ceil(step.as_nanos().max(1))).unwrap_or(u64::MAX)
    };
    let step_ns = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    let due_of = |k: u64| origin + Duration::from_nanos(step_ns.saturating_mul(k));
    // The next phase to run.
    let mut k: u64 = 0;
    // The sessions of a tick whose drivers write their frames (the allocation is kept).
    let mut drive: Vec<Arc<Shared>> = Vec::new();
    loop {
        // The next phase with sessions, within one ptime.
        let next = {
            let st = inner.lock();
            if st.closed || (st.handles == 0 && st.sessions == 0) {
                break;
            }
            (k..k + phases).find(|j| !st.phases[(j % phases) as usize].is_empty())
        };
        let Some(j) = next else {
            // No session: wait for one, then start from the present.
            changed(&inner).await;
            k = k.max(index_of(executor.now()));
            continue;
        };
        let due = due_of(j);
        {
            let sleep = pin!(if parked {
                Either::Left(parked::sleep_until(due))
            } else {
                Either::Right(executor.sleep_until_precise(due))
            });
            let notified = pin!(changed(&inner));
            if let Either::Right(_) = select(sleep, notified).await {
                // Look again (a session may have come on an earlier phase, or the end), from
                // the present: the phases passed meanwhile had no session.
                k = k.max(index_of(executor.now()));
                continue;
            }
        }
        let mut st = inner.lock();
        if st.closed {
            break;
        }
        let slot = (j % phases) as usize;
        let mut list = std::mem::take(&mut st.phases[slot]);
        drop(st);
        let late = executor.now().saturating_duration_since(due) > inner.config.ptime;
        let t = tick(&mut list, due, &inner.metrics, &mut drive);
        // Each frame goes out from here, in the phase's order: no task wake-up per frame (a
        // session whose task is busy gets it through its task). For half a phase at most:
        // past that (an overloaded machine) the other sessions' tasks write theirs, in
        // parallel on the executor's threads, so that the pacer keeps its ticks.
        let started = executor.now();
        let mut inline = true;
        for session in drive.drain(..) {
            inline = inline && executor.now().saturating_duration_since(started) < step / 2;
            if inline {
                session.drive_now();
            } else {
                session.wake_driver();
            }
        }
        let mut st = inner.lock();
        // Sessions attached meanwhile on this phase join the list.
        list.append(&mut st.phases[slot]);
        st.phases[slot] = list;
        st.sessions -= t.detached;
        st.ticks += 1;
        st.late_ticks += u64::from(late);
        st.frames_sent += t.sent;
        st.underruns += t.underruns;
        st.paused_ticks += t.paused;
        drop(st);
        k = j + 1;
    }
    // Closed: the senders refuse audio from now on.
    let mut st = inner.lock();
    st.closed = true;
    for list in &mut st.phases {
        for p in list.drain(..) {
            let mut ps = p.lock();
            if !ps.closed {
                hand_over_marks(&p, &mut ps, u64::MAX);
                close_paced(&mut ps);
                p.session.wake_driver();
            }
        }
    }
    st.sessions = 0;
    drop(st);
    inner.ended.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::{end, paced, session, taken};

    use crate::manual_executor::Manual;

    const MS: Duration = Duration::from_millis(1);
    const PTIME: Duration = Duration::from_millis(20);

    /// `n` frames of 160 bytes, frame `i` filled with byte `first + i`.
    fn frames(first: u8, n: u8) -> Bytes {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend(std::iter::repeat_n(first + i, 160));
        }
        Bytes::from(v)
    }

    /// A pacer of one phase with one attached session.
    fn one_session_pacer(ex: &Manual) -> (MediaPacer, PacedSender, Arc<Shared>) {
        let pacer = MediaPacer::with_config(ex, PacerConfig::new().phases(1));
        let (a, a_shared) = session(160, 20);
        let pa = pacer.attach(&a).expect("attach");
        (pacer, pa, a_shared)
    }

    /// [`one_session_pacer`] with `n` frames handed over and the first tick run.
    fn one_session_sending(ex: &Manual, n: u8) -> (MediaPacer, PacedSender, Arc<Shared>) {
        let (pacer, pa, a_shared) = one_session_pacer(ex);
        pa.send(frames(1, n)).expect("send");
        ex.settle();
        (pacer, pa, a_shared)
    }

    fn first_bytes(sent: &[(Instant, Bytes)]) -> Vec<u8> {
        sent.iter().map(|(_, f)| f[0]).collect()
    }

    #[test]
    fn frames_leave_in_order_one_per_ptime_at_their_ticks() {
        let ex = Manual::new();
        let origin = ex.now();
        // One session per phase: the second session goes to the middle phase (10 ms later).
        let pacer = MediaPacer::with_config(&ex, PacerConfig::new().phase_sessions(1));
        let (a, a_shared) = session(160, 20);
        let (b, b_shared) = session(160, 20);
        let pa = pacer.attach(&a).expect("attach a");
        let pb = pacer.attach(&b).expect("attach b");
        // Any chunk size: 3.5 frames, then the other half.
        let mut chunk = frames(1, 4).to_vec();
        chunk.truncate(160 * 3 + 80);
        let q = pa.send(Bytes::from(chunk)).expect("send");
        assert_eq!((q.frames, q.dropped), (3, 0));
        assert_eq!(pa.send(frames(4, 1).slice(80..)).expect("send").frames, 1);
        pb.send(frames(10, 2)).expect("send");
        assert_eq!(pa.queued_frames(), 4);

        let mut got_a = Vec::new();
        let mut got_b = Vec::new();
        for _ in 0..(6 * 20) {
            ex.settle();
            got_a.extend(paced(&a_shared));
            got_b.extend(paced(&b_shared));
            ex.advance(MS);
        }
        // In order, whole frames, one per ptime at absolute ticks; the second session on the
        // middle phase.
        assert_eq!(first_bytes(&got_a), [1, 2, 3, 4]);
        assert!(got_a.iter().all(|(_, f)| f.len() == 160));
        let due_a: Vec<Instant> = got_a.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            due_a,
            (0..4).map(|k| origin + PTIME * k).collect::<Vec<_>>()
        );
        assert_eq!(first_bytes(&got_b), [10, 11]);
        let due_b: Vec<Instant> = got_b.iter().map(|(d, _)| *d).collect();
        assert_eq!(due_b, [origin + MS * 10, origin + MS * 10 + PTIME]);
        // Nothing before its time: each frame was taken at the millisecond it was due.
        assert_eq!(pa.stats().frames_sent, 4);
        assert_eq!(pa.stats().underruns, 2, "two empty ticks after the audio");
        assert_eq!(pb.stats().underruns, 4);
        assert_eq!(pacer.stats().underruns, 6, "both sessions' empty ticks");
        assert_eq!(pb.stats().frames_sent, 2);
        let st = pacer.stats();
        assert_eq!((st.sessions, st.frames_sent, st.late_ticks), (2, 6, 0));
        assert_eq!(pa.queued_frames(), 0);
    }

    /// Waits (up to 10 s of real time) for `cond`, which a pacer's own thread makes true.
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            std::thread::sleep(MS);
        }
        panic!("{what}: not within 10 s");
    }

    #[test]
    fn a_thread_of_its_own_hands_frames_over_in_order_at_their_ticks() {
        let ex = Manual::new();
        let origin = ex.now();
        let config = PacerConfig::new().phases(1).thread(PacerThread::Dedicated);
        let pacer = MediaPacer::with_config(&ex, config);
        assert_eq!(pacer.stats().running_on, PacerThread::Dedicated);
        let (a, a_shared) = session(160, 20);
        let pa = pacer.attach(&a).expect("attach");
        // The thread's tick at the executor's present time may run before the audio is
        // handed over (it runs on its own): wait for it, then hand the audio over; the
        // frames go out at the next ticks, one each.
        wait_for("the first tick", || pacer.stats().ticks == 1);
        assert!(
            paced(&a_shared).is_empty(),
            "nothing to send at the first tick"
        );
        pa.send(frames(1, 3)).expect("send");
        let mut got = Vec::new();
        for k in 1..=3 {
            // The thread sleeps by the executor's clock: each tick waits for the clock.
            ex.advance(PTIME);
            wait_for("the tick", || pacer.stats().ticks == k + 1);
            got.extend(paced(&a_shared));
            assert_eq!(got.len() as u64, k, "one frame per tick");
        }
        assert_eq!(first_bytes(&got), [1, 2, 3]);
        let due: Vec<Instant> = got.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            due,
            [origin + PTIME, origin + PTIME * 2, origin + PTIME * 3]
        );
        assert_eq!(ex.sleeps(), (0, 0), "no timer of the executor's was used");
        assert_eq!(ex.run(), 0, "no task on the executor");
        pacer.close();
        wait_for("the thread ends", || pacer.is_closed());
        assert!(
            pa.send(frames(4, 1)).is_err(),
            "a closed pacer takes no audio"
        );
    }

    #[test]
    fn a_thread_refused_real_time_priority_runs_at_normal_priority_and_says_so() {
        let ex = Manual::new();
        let config = PacerConfig::new().thread(PacerThread::Realtime { priority: 3 });
        let refused = MediaPacer::start(&ex, config.clone(), |_| Err("not permitted".into()));
        assert_eq!(refused.stats().running_on, PacerThread::Dedicated);
        let granted = MediaPacer::start(&ex, config, |p| {
            assert_eq!(p, 3, "the priority asked for");
            Ok(())
        });
        assert_eq!(
            granted.stats().running_on,
            PacerThread::Realtime { priority: 3 }
        );
        for pacer in [refused, granted] {
            pacer.close();
            wait_for("the thread ends", || pacer.is_closed());
        }
    }

    #[test]
    fn dropping_the_last_handle_ends_the_pacers_thread() {
        let ex = Manual::new();
        let pacer = MediaPacer::with_config(&ex, PacerConfig::new().thread(PacerThread::Dedicated));
        let inner = pacer.inner.clone();
        let (a, _a_shared) = session(160, 20);
        let pa = pacer.attach(&a).expect("attach");
        drop(pacer);
        assert!(
            !inner.ended.load(Ordering::Acquire),
            "a sender still uses it"
        );
        drop(pa);
        // The detached session leaves at its next tick; the thread ends then.
        wait_for("the thread ends", || {
            ex.advance(PTIME);
            inner.ended.load(Ordering::Acquire)
        });
    }

    /// A waker that counts its wake-ups.
    struct Count(AtomicU64);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_pacer_writes_due_frames_itself_without_waking_the_sessions_task() {
        use crate::media::testing::{hold_driver, poll_task, stand_in_driver};
        let ex = Manual::new();
        let pacer = MediaPacer::with_config(&ex, PacerConfig::new().phases(1));
        let (a, a_shared) = session(160, 20);
        let taken = stand_in_driver(&a_shared, || {});
        let written = || taken.lock().expect("not poisoned").clone();
        // The session's task has run its driver once (it waits for its socket).
        let count = Arc::new(Count(AtomicU64::new(0)));
        let task = std::task::Waker::from(count.clone());
        assert!(poll_task(&a_shared, &mut std::task::Context::from_waker(&task)).is_pending());
        let pa = pacer.attach(&a).expect("attach");
        pa.send(frames(1, 4)).expect("send");
        ex.settle();
        assert_eq!(written(), [1], "written by the pacer's tick");
        ex.advance(PTIME);
        ex.settle();
        assert_eq!(written(), [1, 2]);
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "the task was not woken");
        // While the task runs its driver, the frame goes through the task: it is woken.
        let held = hold_driver(&a_shared);
        ex.advance(PTIME);
        ex.settle();
        drop(held);
        assert_eq!(written(), [1, 2], "not written by the pacer");
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "the task was woken");
        assert!(poll_task(&a_shared, &mut std::task::Context::from_waker(&task)).is_pending());
        assert_eq!(written(), [1, 2, 3], "written by the task, in order");
        assert_eq!(pa.stats().frames_sent, 3);
    }

    #[test]
    fn writes_past_half_a_phase_go_through_the_sessions_tasks() {
        use crate::media::testing::{poll_task, stand_in_driver};
        let ex = Manual::new();
        // One phase: 20 ms; the pacer writes for 10 ms at most.
        let pacer = MediaPacer::with_config(&ex, PacerConfig::new().phases(1));
        let (a, a_shared) = session(160, 20);
        let (b, b_shared) = session(160, 20);
        // Writing a's frame takes 11 ms.
        let slow = ex.clone();
        let taken_a = stand_in_driver(&a_shared, move || slow.advance(MS * 11));
        let taken_b = stand_in_driver(&b_shared, || {});
        let count = Arc::new(Count(AtomicU64::new(0)));
        let task = std::task::Waker::from(count.clone());
        for s in [&a_shared, &b_shared] {
            assert!(poll_task(s, &mut std::task::Context::from_waker(&task)).is_pending());
        }
        let pa = pacer.attach(&a).expect("attach a");
        let pb = pacer.attach(&b).expect("attach b");
        pa.send(frames(1, 2)).expect("send");
        pb.send(frames(5, 2)).expect("send");
        ex.settle();
        assert_eq!(*taken_a.lock().expect("a"), [1], "a written by the pacer");
        assert!(taken_b.lock().expect("b").is_empty(), "b left to its task");
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "b's task woken");
        assert!(poll_task(&b_shared, &mut std::task::Context::from_waker(&task)).is_pending());
        assert_eq!(*taken_b.lock().expect("b"), [5], "written by its task");
    }

    #[test]
    fn the_ticks_wait_on_the_executors_precise_timer() {
        let ex = Manual::new();
        let (_pacer, _pa, a_shared) = one_session_sending(&ex, 3);
        assert_eq!(paced(&a_shared).len(), 1);
        let (plain, precise) = ex.sleeps();
        for _ in 0..2 {
            ex.advance(PTIME);
            ex.settle();
        }
        assert_eq!(paced(&a_shared).len(), 2);
        // A precise sleep for each tick waited for, none of the plain timer.
        let (plain_after, precise_after) = ex.sleeps();
        assert_eq!(plain_after, plain);
        assert!(precise_after >= precise + 2);
    }

    #[test]
    fn a_frame_is_not_handed_over_before_its_tick() {
        let ex = Manual::new();
        let (_pacer, _pa, a_shared) = one_session_sending(&ex, 3);
        assert_eq!(paced(&a_shared).len(), 1, "the first at once");
        ex.advance(PTIME - Duration::from_nanos(1));
        ex.settle();
        assert!(paced(&a_shared).is_empty(), "not a nanosecond early");
        ex.advance(Duration::from_nanos(1));
        ex.settle();
        assert_eq!(first_bytes(&paced(&a_shared)), [2]);
    }

    #[test]
    fn xoff_pauses_the_pacer_without_losing_frames() {
        let ex = Manual::new();
        let (pacer, pa, a_shared) = one_session_sending(&ex, 5);
        assert_eq!(first_bytes(&paced(&a_shared)), [1]);
        a_shared.xoff.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            ex.advance(PTIME);
            ex.settle();
        }
        assert!(paced(&a_shared).is_empty(), "nothing while XOFF");
        assert_eq!(pa.stats().paused_ticks, 3);
        assert_eq!(pacer.stats().paused_ticks, 3);
        assert_eq!(pa.queued_frames(), 4);
        a_shared.xoff.store(false, Ordering::Relaxed);
        let mut got = Vec::new();
        for _ in 0..6 {
            ex.advance(PTIME);
            ex.settle();
            got.extend(paced(&a_shared));
        }
        assert_eq!(first_bytes(&got), [2, 3, 4, 5], "all of them, in order");
        let st = pa.stats();
        assert_eq!(
            (st.frames_sent, st.overflow_frames, st.discarded_frames),
            (5, 0, 0)
        );
    }

    #[test]
    fn overflow_is_counted_and_the_rest_goes_out() {
        let ex = Manual::new();
        let pacer = MediaPacer::with_config(&ex, PacerConfig::new().phases(1).queue_frames(3));
        let (a, a_shared) = session(160, 20);
        let pa = pacer.attach(&a).expect("attach");
        let q = pa.send(frames(1, 5)).expect("send");
        assert_eq!((q.frames, q.dropped), (3, 2));
        assert_eq!(pa.stats().overflow_frames, 2);
        assert_eq!(pacer.stats().overflow_frames, 2);
        let mut got = Vec::new();
        for _ in 0..4 {
            ex.settle();
            got.extend(paced(&a_shared));
            ex.advance(PTIME);
        }
        assert_eq!(
            first_bytes(&got),
            [1, 2, 3],
            "the first three, the rest counted"
        );
    }

    #[test]
    fn close_stops_the_pacer_and_its_senders() {
        let ex = Manual::new();
        let (pacer, pa, a_shared) = one_session_pacer(&ex);
        pa.send(frames(1, 4)).expect("send");
        assert_eq!(ex.settle(), 1, "the pacer's task runs");
        assert_eq!(paced(&a_shared).len(), 1);
        pacer.close();
        assert_eq!(ex.settle(), 0, "closed: the task ended");
        assert!(pacer.is_closed());
        ex.advance(PTIME * 5);
        ex.settle();
        assert!(paced(&a_shared).is_empty(), "nothing after close");
        assert_eq!(pa.send(frames(9, 1)), Err(SendError::Closed));
        assert_eq!(pa.stats().discarded_frames, 3, "the queued frames, counted");
        let (b, _) = session(160, 20);
        assert_eq!(pacer.attach(&b).err(), Some(PaceError::Closed));
    }

    #[test]
    fn a_session_that_ends_or_a_dropped_sender_is_detached() {
        let ex = Manual::new();
        let pacer = MediaPacer::with_config(&ex, PacerConfig::new().phases(1));
        let (a, a_shared) = session(160, 20);
        let (b, b_shared) = session(160, 20);
        let pa = pacer.attach(&a).expect("attach");
        let pb = pacer.attach(&b).expect("attach");
        pa.send(frames(1, 3)).expect("send");
        pb.send(frames(1, 3)).expect("send");
        ex.settle();
        assert_eq!(paced(&a_shared).len() + paced(&b_shared).len(), 2);
        end(&a_shared);
        drop(pb);
        ex.advance(PTIME);
        ex.settle();
        assert!(paced(&a_shared).is_empty() && paced(&b_shared).is_empty());
        assert_eq!(pacer.stats().sessions, 0);
        let st = pa.stats();
        assert_eq!((st.frames_sent, st.discarded_frames), (1, 2));
        assert_eq!(pa.send(frames(1, 1)), Err(SendError::Closed));
        // The last handle gone and no session: the task ends.
        drop(pacer);
        assert_eq!(ex.settle(), 0);
    }

    /// A voice bot between two answers (nothing queued) when the caller hangs up: the
    /// pacer detaches the session at its next tick (no underruns counted for a call that is
    /// gone), and audio handed over afterwards is refused, not accepted and discarded later.
    #[test]
    fn a_session_that_ends_while_idle_is_detached_and_refuses_audio() {
        let ex = Manual::new();
        let (pacer, pa, a_shared) = one_session_sending(&ex, 1);
        assert_eq!(paced(&a_shared).len(), 1);
        ex.advance(PTIME);
        ex.settle();
        assert_eq!(
            pa.stats().underruns,
            1,
            "one empty tick while the call lives"
        );
        end(&a_shared);
        for _ in 0..3 {
            ex.advance(PTIME);
            ex.settle();
        }
        assert_eq!(pacer.stats().sessions, 0, "detached");
        let st = pa.stats();
        assert_eq!((st.underruns, st.discarded_frames), (1, 0), "{st:?}");
        assert_eq!(pacer.stats().underruns, 1);
        assert_eq!(pa.send(frames(1, 2)), Err(SendError::Closed));
        assert_eq!(pa.stats().discarded_frames, 0, "refused, not discarded");
    }

    /// A voice bot marks the end of a prompt it hands to the pacer: the mark reaches the
    /// session right after the prompt's last frame (so Asterisk reports it when the prompt
    /// has been played), not before the frames still waiting in the pacer. A mark with
    /// nothing waiting goes at once; after `clear` (barge-in) the waiting marks go at once.
    #[test]
    fn a_mark_follows_the_audio_queued_before_it() {
        let ex = Manual::new();
        let (_pacer, pa, a_shared) = one_session_pacer(&ex);
        // (The test's session handle is gone: its close is not what is looked at.)
        let take = || -> Vec<String> {
            taken(&a_shared)
                .into_iter()
                .filter(|c| c != "close")
                .collect()
        };
        pa.mark("before").expect("mark");
        assert_eq!(take(), ["mark before"], "nothing waits: at once");
        pa.send(frames(1, 3)).expect("prompt");
        pa.mark("prompt-end").expect("mark");
        pa.send(frames(7, 1)).expect("more");
        pa.mark("more-end").expect("mark");
        let mut seen = Vec::new();
        for _ in 0..5 {
            ex.settle();
            seen.extend(take());
            ex.advance(PTIME);
        }
        assert_eq!(
            seen,
            [
                "frame 1",
                "frame 2",
                "frame 3",
                "mark prompt-end",
                "frame 7",
                "mark more-end"
            ]
        );
        // Barge-in: the frames waiting are dropped, their mark goes at once.
        pa.send(frames(1, 5)).expect("prompt");
        pa.mark("cut").expect("mark");
        ex.settle();
        assert_eq!(take(), ["frame 1"]);
        assert_eq!(pa.clear(), 4);
        assert_eq!(take(), ["mark cut"]);
        // Refused as the sender refuses it.
        assert!(matches!(pa.mark("two words"), Err(SendError::Command(_))));
        end(&a_shared);
        assert_eq!(pa.mark("late"), Err(SendError::Closed));
    }

    #[test]
    fn phases_fill_up_then_spread_evenly() {
        assert_eq!(spread_order(4), [0, 2, 1, 3]);
        assert_eq!(&spread_order(20)[..4], [0, 10, 5, 15]);
        let mut all = spread_order(20);
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());

        let ex = Manual::new();
        let origin = ex.now();
        let pacer = MediaPacer::with_config(&ex, PacerConfig::new().phases(4).phase_sessions(2));
        let mut sessions = Vec::new();
        for _ in 0..10 {
            let (m, shared) = session(160, 20);
            let p = pacer.attach(&m).expect("attach");
            p.send(frames(1, 1)).expect("send");
            sessions.push((m, shared, p));
        }
        for _ in 0..20 {
            ex.settle();
            ex.advance(MS);
        }
        let due: Vec<Duration> = sessions
            .iter()
            .map(|(_, shared, _)| paced(shared)[0].0 - origin)
            .collect();
        // Two per phase in spread order (0, 10, 5, 15 ms), then the least used.
        assert_eq!(due, [0, 0, 10, 10, 5, 5, 15, 15, 0, 10].map(|ms| MS * ms));
    }

    #[test]
    fn a_session_of_another_ptime_is_refused() {
        let ex = Manual::new();
        let pacer = MediaPacer::new(&ex);
        let (a, _) = session(240, 30);
        let e = pacer.attach(&a).expect_err("30 ms");
        assert_eq!(
            e,
            PaceError::Ptime {
                pacer: PTIME,
                session: Duration::from_millis(30)
            }
        );
        assert!(e.to_string().contains("30 ms"));
    }

    #[test]
    fn late_ticks_catch_up_in_order_and_are_counted() {
        let ex = Manual::new();
        let (pacer, _pa, a_shared) = one_session_sending(&ex, 5);
        assert_eq!(first_bytes(&paced(&a_shared)), [1]);
        // The executor stalls for 65 ms: the three ticks missed run at once, in order, with
        // their own due times, and count as late (more than one ptime after their time).
        ex.advance(Duration::from_millis(65));
        ex.settle();
        let got = paced(&a_shared);
        assert_eq!(first_bytes(&got), [2, 3, 4]);
        assert_eq!(got[2].0 - got[0].0, PTIME * 2);
        assert_eq!(pacer.stats().late_ticks, 2);
    }

    #[test]
    fn the_histograms_bound_their_percentiles() {
        let m = PaceMetrics {
            lateness: Histogram::new(),
            jitter: Histogram::new(),
            written: AtomicU64::new(0),
        };
        for us in 0..99 {
            m.record(Duration::from_micros(us * 10), Some(Duration::ZERO));
        }
        m.record(Duration::from_millis(30), None);
        let h = m.lateness.snapshot();
        assert_eq!(h.count(), 100);
        assert_eq!(h.max, Duration::from_millis(30));
        // 99 of 100 are below 1 ms (980 µs at most): the p99's bucket ends at 1 ms.
        assert_eq!(h.percentile(99.0), Duration::from_micros(1_000));
        assert_eq!(h.percentile(100.0), Duration::from_millis(30));
        assert_eq!(h.percentile(50.0), Duration::from_micros(500));
        assert_eq!(
            m.jitter.snapshot().count(),
            99,
            "no jitter without a previous frame"
        );
        assert_eq!(m.written.load(Ordering::Relaxed), 100);
        // A window: only what came after the snapshot.
        let before = m.lateness.snapshot();
        m.record(Duration::from_micros(120), None);
        let w = m.lateness.snapshot().since(&before);
        assert_eq!(w.count(), 1);
        assert_eq!(w.max, Duration::from_micros(150), "the bucket's upper edge");
        assert_eq!(w.percentile(99.0), Duration::from_micros(150));
        assert_eq!(
            PacingHistogram {
                counts: vec![0; 3],
                max: Duration::ZERO
            }
            .percentile(99.0),
            Duration::ZERO
        );
    }
}
