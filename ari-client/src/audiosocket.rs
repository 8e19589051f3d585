//! AudioSocket, application side: Asterisk connects to the application over TCP.
//!
//! With `POST /channels/externalMedia` (`encapsulation=audiosocket`, `transport=tcp`,
//! `external_host=<host:port>`, `data=<UUID>`), the `AudioSocket()` dialplan application or
//! a `Dial(AudioSocket/<host:port>/<UUID>)`, Asterisk dials `host:port`. An
//! [`AudioSocketServer`] listens there (on the runtime's [`Connector`]) and gives one
//! [`AudioSocketSession`] per connection, once its first message (the call's UUID, which
//! correlates it with the externalMedia request) has arrived.
//!
//! A session is a `Stream` of [`AudioSocketItem`]s (audio frames, DTMF digits, errors; the
//! last one is [`AudioSocketItem::Closed`]) plus an [`AudioSocketSender`] for audio and the
//! hangup. AudioSocket has no playout queue at Asterisk's side: what arrives is played at
//! once. So the sender cuts the application's audio (any chunk size) into 20 ms frames and
//! writes them at real-time pace, a little ahead ([`AudioSocketOptions::send_ahead`]); audio
//! that does not fit in its bounded queue is refused and counted, never dropped silently.
//! When the caller barges in, [`AudioSocketSender::flush`] drops the audio still queued.
//!
//! The wire format is [`ari_proto::media::audiosocket`]'s (sans-IO: typed messages and a
//! streaming decoder). Asterisk hangs the channel up when the application sends a hangup
//! ([`AudioSocketSender::hangup`]) or closes the connection (dropping the session and every
//! sender), and closes the connection itself when the call ends.
//!
//! ```no_run
//! # async fn demo<E: ari_client::Executor, C: ari_client::Connector>(runtime: ari_client::Stack<E, C>) -> Result<(), ari_client::Error> {
//! use ari_client::audiosocket::{AudioSocketItem, AudioSocketServer};
//! use futures_util::StreamExt;
//! let server = AudioSocketServer::bind(runtime, "0.0.0.0:9092".parse().unwrap()).await?;
//! // externalMedia with external_host=<this host>:9092 and data=<a UUID> dials it.
//! let mut call = server.accept().await?;
//! println!("call {}", call.uuid());
//! let tx = call.sender();
//! while let Some(item) = call.next().await {
//!     match item {
//!         AudioSocketItem::Audio { data, .. } => drop(tx.send_audio(data)), // an echo
//!         AudioSocketItem::Dtmf(d) => println!("DTMF {d}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ari_proto::media::audiosocket::{format_uuid, Decoder};
/// The protocol types a session's user meets: the rate of audio ([`AudioSocketItem::Audio`],
/// [`AudioSocketOptions::rate`]) and a message of an unexpected kind
/// ([`AudioSocketItem::Unexpected`]) (from `ari_proto::media::audiosocket`).
pub use ari_proto::media::audiosocket::{Message, Rate};
use ari_proto::media::websocket::Reframer;
use bytes::Bytes;
use futures_core::Stream;
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use futures_util::task::AtomicWaker;

use crate::error::Error;
use crate::runtime::{
    AsyncRead, AsyncWrite, Connector, Executor, Listener, TransportError, TransportErrorKind,
};
use crate::stack::Stack;

/// Options of an [`AudioSocketServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AudioSocketOptions {
    /// Time allowed for a new connection's UUID message (default 5 s).
    pub uuid_timeout: Duration,
    /// The rate the application's audio is labelled with (default [`Rate::Slin8`]; Asterisk
    /// labels non-slin audio as 8 kHz too).
    pub rate: Rate,
    /// Frames (20 ms) waiting to be sent before more audio is refused (default 500: 10 s).
    pub queue_frames: usize,
    /// How far ahead of real time audio is written (default 40 ms).
    pub send_ahead: Duration,
    /// How long a session waits, once the application's hangup is sent, for Asterisk to
    /// close the connection (it does at once) before it gives the connection up: a peer cut
    /// off by the network never closes it, and the session must still end (with
    /// [`AudioSocketItem::Closed`] and an error). Default 5 s.
    pub close_timeout: Duration,
}

impl Default for AudioSocketOptions {
    fn default() -> Self {
        AudioSocketOptions {
            uuid_timeout: Duration::from_secs(5),
            rate: Rate::Slin8,
            queue_frames: 500,
            send_ahead: Duration::from_millis(40),
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl AudioSocketOptions {
    /// The defaults.
    pub fn new() -> AudioSocketOptions {
        AudioSocketOptions::default()
    }

    /// Sets [`rate`](Self::rate).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = rate;
        self
    }

    /// Sets [`queue_frames`](Self::queue_frames) (at least 1).
    pub fn queue_frames(mut self, frames: usize) -> Self {
        self.queue_frames = frames.max(1);
        self
    }

    /// Sets [`send_ahead`](Self::send_ahead).
    pub fn send_ahead(mut self, ahead: Duration) -> Self {
        self.send_ahead = ahead;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`uuid_timeout`](Self::uuid_timeout).
    pub fn uuid_timeout(mut self, timeout: Duration) -> Self {
        self.uuid_timeout = timeout;
        self
    }
}

/// Listens for Asterisk's AudioSocket connections; see the [module docs](self).
pub struct AudioSocketServer<E: Executor, C: Connector> {
    local_addr: SocketAddr,
    options: AudioSocketOptions,
    accepted: Arc<Accepted>,
    _runtime: std::marker::PhantomData<Stack<E, C>>,
}

/// What the server's accept task hands to [`AudioSocketServer::accept`]: each connection's
/// session, or why it failed before its UUID, in the order their UUID waits ended. Each
/// connection waits for its UUID in a task of its own, so a silent one holds up no other.
struct Accepted {
    state: Mutex<AcceptedState>,
}

#[derive(Default)]
struct AcceptedState {
    ready: VecDeque<Result<AudioSocketSession, Error>>,
    /// Connections waiting for their UUID.
    waiting: usize,
    /// `accept` calls waiting for a result.
    accept_wakers: Vec<std::task::Waker>,
    /// The accept task, waiting for room or for the server to stop.
    task_waker: Option<std::task::Waker>,
    stopped: bool,
}

/// Connections accepted and not yet taken by [`AudioSocketServer::accept`] (waiting for
/// their UUID or ready); beyond, the accept task stops accepting until `accept` takes one.
const ACCEPTED_MAX: usize = 64;

impl Accepted {
    fn lock(&self) -> MutexGuard<'_, AcceptedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection's UUID wait ended: its result is ready for `accept`.
    fn push(&self, result: Result<AudioSocketSession, Error>, was_waiting: bool) {
        let wakers = {
            let mut st = self.lock();
            if was_waiting {
                st.waiting -= 1;
            }
            if st.stopped {
                return; // the server is gone: the session (if any) closes its connection
            }
            st.ready.push_back(result);
            std::mem::take(&mut st.accept_wakers)
        };
        wakers.into_iter().for_each(std::task::Waker::wake);
    }

    /// Ready when there is room for one more connection (`true`) or the server stopped
    /// (`false`).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut st = self.lock();
        if st.stopped {
            return Poll::Ready(false);
        }
        if st.ready.len() + st.waiting < ACCEPTED_MAX {
            return Poll::Ready(true);
        }
        st.task_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready when the server stopped.
    fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.stopped {
            return Poll::Ready(());
        }
        st.task_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Accepts connections while the server lives; each one waits for its UUID in a task of its
/// own ([`handshake`]).
async fn accept_loop<E: Executor, C: Connector>(
    runtime: Stack<E, C>,
    listener: C::Listener,
    local_addr: SocketAddr,
    options: AudioSocketOptions,
    accepted: Arc<Accepted>,
) {
    use futures_util::future::{poll_fn, select, Either};
    while poll_fn(|cx| accepted.poll_room(cx)).await {
        let accept = std::pin::pin!(listener.accept());
        let stop = std::pin::pin!(poll_fn(|cx| accepted.poll_stopped(cx)));
        match select(accept, stop).await {
            Either::Left((Ok((stream, peer)), _)) => {
                accepted.lock().waiting += 1;
                let task_runtime = runtime.clone();
                let options = options.clone();
                let accepted = Arc::clone(&accepted);
                runtime.spawn(async move {
                    let result = handshake(&task_runtime, &options, stream, peer).await;
                    accepted.push(result, true);
                });
            }
            Either::Left((Err(e), _)) => {
                accepted.push(Err(io_error(format!("accept on {local_addr}"), e)), false);
                // (A failing listener, e.g. out of descriptors: do not spin.)
                let at = runtime.now() + Duration::from_millis(10);
                runtime.sleep_until(at).await;
            }
            Either::Right(_) => return,
        }
    }
}

impl<E: Executor, C: Connector> Drop for AudioSocketServer<E, C> {
    fn drop(&mut self) {
        let (task, accepts) = {
            let mut st = self.accepted.lock();
            st.stopped = true;
            st.ready.clear();
            (st.task_waker.take(), std::mem::take(&mut st.accept_wakers))
        };
        task.into_iter()
            .chain(accepts)
            .for_each(std::task::Waker::wake);
    }
}

impl<E: Executor, C: Connector> fmt::Debug for AudioSocketServer<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioSocketServer")
            .field("local_addr", &self.local_addr)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::Transport(
        TransportError::new(TransportErrorKind::Io, format!("{what}: {e}")).with_source(e),
    )
}

fn protocol_error(message: String) -> Error {
    Error::Transport(TransportError::new(TransportErrorKind::Protocol, message))
}

impl<E: Executor, C: Connector> AudioSocketServer<E, C> {
    /// Binds `addr` with the default options.
    pub async fn bind(runtime: Stack<E, C>, addr: SocketAddr) -> Result<Self, Error> {
        Self::bind_with(runtime, addr, AudioSocketOptions::default()).await
    }

    /// Binds `addr` with `options`.
    pub async fn bind_with(
        runtime: Stack<E, C>,
        addr: SocketAddr,
        options: AudioSocketOptions,
    ) -> Result<Self, Error> {
        let listener = runtime
            .connector()
            .bind(addr)
            .await
            .map_err(|e| io_error(format!("bind {addr}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| io_error(format!("local address of {addr}"), e))?;
        let accepted = Arc::new(Accepted {
            state: Mutex::new(AcceptedState::default()),
        });
        runtime.spawn(accept_loop(
            runtime.clone(),
            listener,
            local_addr,
            options.clone(),
            Arc::clone(&accepted),
        ));
        Ok(AudioSocketServer {
            local_addr,
            options,
            accepted,
            _runtime: std::marker::PhantomData,
        })
    }

    /// The bound address (give it to Asterisk as `external_host`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the next connection whose UUID message has come.
    ///
    /// Connections wait for their UUID concurrently (a silent one holds up no other), and
    /// are handed out in the order their UUIDs came. A connection that fails before its
    /// UUID (closed, timed out, another first message) is closed and returned as an error
    /// naming the peer; keep calling `accept` after one.
    pub async fn accept(&self) -> Result<AudioSocketSession, Error> {
        futures_util::future::poll_fn(|cx| {
            let (result, task) = {
                let mut st = self.accepted.lock();
                match st.ready.pop_front() {
                    Some(r) => (r, st.task_waker.take()),
                    None => {
                        if !st.accept_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                            st.accept_wakers.push(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                }
            };
            if let Some(w) = task {
                w.wake(); // there is room again
            }
            Poll::Ready(result)
        })
        .await
    }
}

/// A new connection's UUID wait (within `options.uuid_timeout`), then its session.
async fn handshake<E: Executor, C: Connector>(
    runtime: &Stack<E, C>,
    options: &AudioSocketOptions,
    stream: C::Stream,
    peer: SocketAddr,
) -> Result<AudioSocketSession, Error> {
    let (mut reader, writer) = stream.split();
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 4096].into_boxed_slice();
    let first = {
        let read = async {
            loop {
                match decoder.next_message() {
                    Ok(Some(m)) => return Ok(m),
                    Ok(None) => {}
                    Err(e) => {
                        let message = format!("AudioSocket from {peer}: {e}");
                        return Err(Error::Transport(
                            TransportError::new(TransportErrorKind::Protocol, message)
                                .with_source(e),
                        ));
                    }
                }
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| io_error(format!("AudioSocket from {peer}"), e))?;
                if n == 0 {
                    return Err(protocol_error(format!(
                        "AudioSocket from {peer}: closed before its UUID"
                    )));
                }
                decoder.push(&buf[..n]);
            }
        };
        let deadline = runtime.now() + options.uuid_timeout;
        let sleep = runtime.sleep_until(deadline);
        match futures_util::future::select(std::pin::pin!(read), std::pin::pin!(sleep)).await {
            futures_util::future::Either::Left((r, _)) => r?,
            futures_util::future::Either::Right(_) => {
                return Err(Error::Timeout {
                    operation: "AudioSocket UUID",
                    after: options.uuid_timeout,
                })
            }
        }
    };
    let uuid = match first {
        Message::Uuid(u) => u,
        other => {
            return Err(protocol_error(format!(
                "AudioSocket from {peer}: the first message is kind {:#04x}, not the UUID",
                other.kind()
            )))
        }
    };
    let shared = Arc::new(SendShared {
        state: Mutex::new(SendState {
            queue: VecDeque::new(),
            reframer: Reframer::new(options.rate.frame_bytes_20ms()),
            hangup: false,
            closed: false,
            handles: 1, // the session's sender; each clone adds one
            stats: AudioSocketStats::default(),
        }),
        writer: AtomicWaker::new(),
        reader: AtomicWaker::new(),
        gave_up: std::sync::atomic::AtomicBool::new(false),
        queue_frames: options.queue_frames.max(1),
    });
    runtime.spawn(write_loop(
        runtime.clone(),
        Box::new(writer),
        shared.clone(),
        options.rate,
        options.send_ahead,
        options.close_timeout,
    ));
    Ok(AudioSocketSession {
        uuid,
        peer,
        rate: options.rate,
        reader: Box::pin(reader),
        decoder,
        buf,
        done: false,
        sender: AudioSocketSender { shared },
    })
}

/// What an [`AudioSocketSession`] yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioSocketItem {
    /// Audio from Asterisk: 16-bit signed little-endian PCM at `rate`.
    Audio {
        /// The rate the message's kind announces.
        rate: Rate,
        /// The samples.
        data: Bytes,
    },
    /// A DTMF digit (`0-9`, `*`, `#`, `A-D`).
    Dtmf(char),
    /// Asterisk reported an error (kind `0xff`); the payload is its error code, if any.
    Error(Bytes),
    /// A message of a kind Asterisk does not send to applications (kept as received).
    Unexpected(Message),
    /// The connection ended (the last item): Asterisk closed it (the call ended), or it
    /// failed (`error`). Audio still queued is dropped and counted in
    /// [`AudioSocketStats::unsent_frames`] and [`AudioSocketStats::unsent_bytes`].
    Closed {
        /// Why it failed (an I/O or protocol error), if it did.
        error: Option<String>,
        /// Bytes received from Asterisk and never delivered: a message cut off by the end
        /// of the connection (its header or payload incomplete), or what followed the
        /// message that failed the session (`error`). 0 when the connection ended between
        /// messages.
        truncated_bytes: usize,
    },
}

/// Counters of the sending side of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AudioSocketStats {
    /// Audio frames written.
    pub frames_sent: u64,
    /// Audio frames refused because the queue was full.
    pub overflow_frames: u64,
    /// Audio frames dropped by [`AudioSocketSender::flush`] (barge-in).
    pub flushed_frames: u64,
    /// Audio frames still queued when the connection ended (the call hung up, the
    /// connection failed), never sent. With [`frames_sent`](Self::frames_sent) and
    /// [`flushed_frames`](Self::flushed_frames), every frame accepted is accounted for.
    pub unsent_frames: u64,
    /// Bytes of a partial frame (less than 20 ms, held for the rest of it) still waiting
    /// when the connection ended, never sent. (A hangup sent by the application first sends
    /// such a tail as a short last frame: Asterisk plays audio messages of any length.)
    pub unsent_bytes: u64,
    /// Audio messages from Asterisk labelled with another rate than
    /// [`AudioSocketOptions::rate`] (the first one is also logged as a warning). The
    /// application's audio goes out framed, paced and labelled at that rate: on a call
    /// whose audio is at another (a `slin16` channel, kind `0x12`), Asterisk plays it at the
    /// wrong speed. Set the option to the rate of the calls' format.
    pub rate_mismatches: u64,
}

/// Why audio or a hangup was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioSocketSendError {
    /// The queue was full: this many frames of the chunk were refused (the ones before
    /// them are queued). Also counted in [`AudioSocketStats::overflow_frames`].
    Full {
        /// Frames refused.
        dropped_frames: u64,
    },
    /// The connection is closed, or a hangup was sent.
    Closed,
}

impl fmt::Display for AudioSocketSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioSocketSendError::Full { dropped_frames } => write!(
                f,
                "AudioSocket send queue full: {dropped_frames} frames refused (send at real-time \
                 pace or raise AudioSocketOptions::queue_frames)"
            ),
            AudioSocketSendError::Closed => f.write_str("the AudioSocket connection is closed"),
        }
    }
}

impl std::error::Error for AudioSocketSendError {}

struct SendState {
    queue: VecDeque<Bytes>,
    reframer: Reframer,
    hangup: bool,
    closed: bool,
    handles: usize,
    stats: AudioSocketStats,
}

struct SendShared {
    state: Mutex<SendState>,
    writer: AtomicWaker,
    /// Wakes the session's reader when [`gave_up`](Self::gave_up) is set.
    reader: AtomicWaker,
    /// The hangup was sent and the connection did not close within `close_timeout`.
    gave_up: std::sync::atomic::AtomicBool,
    queue_frames: usize,
}

impl SendShared {
    fn lock(&self) -> MutexGuard<'_, SendState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SendState {
    /// The connection ended: nothing more goes out; the frames still queued are counted as
    /// unsent.
    fn close(&mut self) {
        self.closed = true;
        self.stats.unsent_frames += self.queue.len() as u64;
        self.stats.unsent_bytes += self.reframer.clear() as u64;
        self.queue.clear();
    }
}

/// Sends audio and the hangup on an AudioSocket connection; cheap to clone.
pub struct AudioSocketSender {
    shared: Arc<SendShared>,
}

impl fmt::Debug for AudioSocketSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioSocketSender")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Clone for AudioSocketSender {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        AudioSocketSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for AudioSocketSender {
    fn drop(&mut self) {
        self.shared.lock().handles -= 1;
        self.shared.writer.wake();
    }
}

impl AudioSocketSender {
    /// Hands audio over, in any chunk size: it leaves as 20 ms frames at real-time pace (a
    /// partial frame waits for the rest). Frames beyond the queue's room are refused,
    /// counted, and reported as [`AudioSocketSendError::Full`].
    pub fn send_audio(&self, audio: Bytes) -> Result<(), AudioSocketSendError> {
        let dropped = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            if st.closed || st.hangup {
                return Err(AudioSocketSendError::Closed);
            }
            let room = self.shared.queue_frames;
            let mut dropped = 0u64;
            let queue = &mut st.queue;
            st.reframer.push(audio, |frame| {
                if queue.len() < room {
                    queue.push_back(frame);
                } else {
                    dropped += 1;
                }
            });
            st.stats.overflow_frames += dropped;
            dropped
        };
        self.shared.writer.wake();
        if dropped > 0 {
            Err(AudioSocketSendError::Full {
                dropped_frames: dropped,
            })
        } else {
            Ok(())
        }
    }

    /// Sends the hangup (kind `0x00`) after the audio already queued: Asterisk hangs the
    /// channel up and closes the connection.
    pub fn hangup(&self) -> Result<(), AudioSocketSendError> {
        {
            let mut st = self.shared.lock();
            if st.closed || st.hangup {
                return Err(AudioSocketSendError::Closed);
            }
            // The end of the audio handed over, shorter than a frame, goes out before the
            // hangup as a short last frame (Asterisk plays any length).
            if let Some(tail) = st.reframer.take_tail() {
                st.queue.push_back(tail);
            }
            st.hangup = true;
        }
        self.shared.writer.wake();
        Ok(())
    }

    /// Barge-in: drops the audio waiting to be sent (and a partial frame), so that the
    /// next audio handed over follows at once; returns how many frames were dropped (also
    /// counted in [`AudioSocketStats::flushed_frames`]). Asterisk plays what it receives at
    /// once, so only the frame being written (at most
    /// [`send_ahead`](AudioSocketOptions::send_ahead) ahead) still plays. A hangup already
    /// asked for stays asked for.
    pub fn flush(&self) -> usize {
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        let n = st.queue.len();
        st.queue.clear();
        st.reframer.clear();
        st.stats.flushed_frames += n as u64;
        n
    }

    /// Frames waiting to be sent.
    pub fn queued_frames(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> AudioSocketStats {
        self.shared.lock().stats
    }
}

enum Work {
    Frame(Bytes),
    Hangup,
    Done,
}

type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Writes the queued frames at real-time pace, then the hangup; ends when the connection
/// fails, after a hangup, or when every handle is gone and the queue is empty.
async fn write_loop<E: Executor, C: Connector>(
    runtime: Stack<E, C>,
    mut writer: BoxWrite,
    shared: Arc<SendShared>,
    rate: Rate,
    ahead: Duration,
    close_timeout: Duration,
) {
    let bytes_per_second = rate.hz() as u64 * 2;
    let mut hung_up = false;
    let mut next_at: Option<Instant> = None;
    loop {
        let work = std::future::poll_fn(|cx| {
            shared.writer.register(cx.waker());
            let mut st = shared.lock();
            if st.closed {
                Poll::Ready(Work::Done)
            } else if let Some(frame) = st.queue.pop_front() {
                Poll::Ready(Work::Frame(frame))
            } else if st.hangup {
                Poll::Ready(Work::Hangup)
            } else if st.handles == 0 {
                Poll::Ready(Work::Done)
            } else {
                Poll::Pending
            }
        })
        .await;
        let ok = match work {
            Work::Done => break,
            Work::Frame(data) => {
                let now = runtime.now();
                // After a pause in the audio, start again from now.
                let at = next_at.filter(|t| *t > now).unwrap_or(now);
                if at > now + ahead {
                    runtime.sleep_until(at - ahead).await;
                }
                let micros = data.len() as u64 * 1_000_000 / bytes_per_second;
                next_at = Some(at + Duration::from_micros(micros));
                let wire = Message::Audio { rate, data }.to_bytes();
                match wire {
                    Ok(w) => {
                        let ok = writer.write_all(&w).await.is_ok() && writer.flush().await.is_ok();
                        let mut st = shared.lock();
                        if ok {
                            st.stats.frames_sent += 1;
                        } else {
                            st.stats.unsent_frames += 1;
                        }
                        ok
                    }
                    // A 20 ms frame always fits in one message.
                    Err(_) => {
                        shared.lock().stats.unsent_frames += 1;
                        false
                    }
                }
            }
            Work::Hangup => {
                if let Ok(w) = Message::Hangup.to_bytes() {
                    let _ = writer.write_all(&w).await;
                    let _ = writer.flush().await;
                }
                hung_up = true;
                false
            }
        };
        if !ok {
            break;
        }
    }
    shared.lock().close();
    let _ = writer.close().await;
    if hung_up {
        // Asterisk closes the connection at once; one cut off by the network never does,
        // and the session's reader must not wait for it for ever.
        let now = runtime.now();
        runtime
            .sleep_until(now.checked_add(close_timeout).unwrap_or(now))
            .await;
        shared
            .gave_up
            .store(true, std::sync::atomic::Ordering::Release);
        shared.reader.wake();
    }
}

type BoxRead = Pin<Box<dyn AsyncRead + Send>>;

/// One AudioSocket connection: a `Stream` of [`AudioSocketItem`]s; see the
/// [module docs](self).
pub struct AudioSocketSession {
    uuid: [u8; 16],
    peer: SocketAddr,
    /// [`AudioSocketOptions::rate`].
    rate: Rate,
    reader: BoxRead,
    decoder: Decoder,
    buf: Box<[u8]>,
    done: bool,
    sender: AudioSocketSender,
}

impl fmt::Debug for AudioSocketSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioSocketSession")
            .field("uuid", &self.uuid())
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl AudioSocketSession {
    /// The call's UUID (the externalMedia `data`), formatted `8-4-4-4-12`.
    pub fn uuid(&self) -> String {
        format_uuid(&self.uuid)
    }

    /// The UUID's 16 raw bytes.
    pub fn uuid_bytes(&self) -> [u8; 16] {
        self.uuid
    }

    /// Asterisk's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// A sender for audio and the hangup (clone it freely).
    pub fn sender(&self) -> AudioSocketSender {
        self.sender.clone()
    }

    /// Hands audio over (see [`AudioSocketSender::send_audio`]).
    pub fn send_audio(&self, audio: Bytes) -> Result<(), AudioSocketSendError> {
        self.sender.send_audio(audio)
    }

    /// Sends the hangup (see [`AudioSocketSender::hangup`]).
    pub fn hangup(&self) -> Result<(), AudioSocketSendError> {
        self.sender.hangup()
    }

    /// The sending side's counters.
    pub fn stats(&self) -> AudioSocketStats {
        self.sender.stats()
    }

    /// Counts audio from Asterisk at `rate`, not the session's; warns at the first.
    fn rate_mismatch(&self, rate: Rate) {
        let first = {
            let mut st = self.sender.shared.lock();
            st.stats.rate_mismatches += 1;
            st.stats.rate_mismatches == 1
        };
        if first {
            tracing::warn!(
                target: "ari_client",
                uuid = %self.uuid(),
                received = rate.format(),
                sending = self.rate.format(),
                "AudioSocket: Asterisk sends audio at another rate than AudioSocketOptions::rate; \
                 the application's audio goes out at the option's rate and plays at the wrong \
                 speed (counted in AudioSocketStats::rate_mismatches)"
            );
        }
    }

    fn finish(&mut self, error: Option<String>) -> Poll<Option<AudioSocketItem>> {
        self.done = true;
        self.sender.shared.lock().close();
        self.sender.shared.writer.wake();
        let truncated_bytes = self.decoder.buffered();
        Poll::Ready(Some(AudioSocketItem::Closed {
            error,
            truncated_bytes,
        }))
    }
}

impl Stream for AudioSocketSession {
    type Item = AudioSocketItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AudioSocketItem>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let shared = &this.sender.shared;
        shared.reader.register(cx.waker());
        if shared.gave_up.load(std::sync::atomic::Ordering::Acquire) {
            let peer = this.peer;
            return this.finish(Some(format!(
                "AudioSocket from {peer}: the connection was not closed after the hangup \
                 (AudioSocketOptions::close_timeout)"
            )));
        }
        loop {
            match this.decoder.next_message() {
                Ok(Some(m)) => {
                    let item = match m {
                        Message::Audio { rate, data } => {
                            if rate != this.rate {
                                this.rate_mismatch(rate);
                            }
                            AudioSocketItem::Audio { rate, data }
                        }
                        Message::Dtmf(d) => AudioSocketItem::Dtmf(char::from(d)),
                        Message::Error(e) => AudioSocketItem::Error(e),
                        other => AudioSocketItem::Unexpected(other),
                    };
                    return Poll::Ready(Some(item));
                }
                Ok(None) => {}
                Err(e) => {
                    let peer = this.peer;
                    return this.finish(Some(format!("AudioSocket from {peer}: {e}")));
                }
            }
            match this.reader.as_mut().poll_read(cx, &mut this.buf) {
                Poll::Ready(Ok(0)) => return this.finish(None),
                Poll::Ready(Ok(n)) => this.decoder.push(&this.buf[..n]),
                Poll::Ready(Err(e)) => {
                    let peer = this.peer;
                    return this.finish(Some(format!("AudioSocket from {peer}: {e}")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// The reader half is only used through `Pin<Box<_>>`.
impl Unpin for AudioSocketSession {}
