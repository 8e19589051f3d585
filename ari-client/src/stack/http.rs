//! The HTTP/1.1 client: `hyper::client::conn::http1` over the connector's streams, and one
//! keep-alive pool.
//!
//! Pool semantics (per target: scheme, host, port):
//! - at most `max_connections_per_host` connections are open at once (in use or idle);
//! - a request takes the most recently used idle connection that is still open and younger
//!   than the idle timeout, else opens one if under the cap, else waits in a FIFO queue for a
//!   connection to be handed back (bounded by the client's request timeout, which drops the
//!   waiting request): never a connection beyond the cap;
//! - a connection goes back to the pool only after its response was read in full and its
//!   framing was unambiguous; a response with both `Transfer-Encoding` and `Content-Length`,
//!   an unread or failed body, or a cancelled request closes it;
//! - a request is retried (on another connection) only if it was never written: a reused
//!   connection that the server had closed meanwhile.
//!
//! No task per connection: hyper's connection future is polled by the request that holds the
//! connection (an HTTP/1.1 connection carries one exchange at a time), so a request costs no
//! wake-up of another task, nor of another thread on executors with several (smol's global
//! executor runs its tasks on threads of its own). An idle connection is not polled; a
//! request that takes it notices a close by the server when it polls it (and, the request
//! being unwritten, retries on another).

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::header::{Entry, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1::SendRequest;

use super::io::{before_reuse, connect, with_timeout, HyperIo};
use super::Stack;
use crate::runtime::TransportOptions;
use crate::runtime::{Connector, Executor, Target, TransportError, TransportErrorKind};

type Sender = SendRequest<Full<Bytes>>;

/// hyper's connection future (reads and writes the bytes), boxed: the pool holds connections
/// of any connector's stream type.
type ConnIo = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A connection of the pool: the request side and the connection future, which whoever holds
/// the connection polls (see [`Driver::drive`]).
struct Conn {
    sender: Sender,
    driver: Driver,
    /// Makes the stream's next read try the socket (see [`Connector::before_reuse`]).
    reused: Arc<AtomicBool>,
}

impl Conn {
    /// Whether the connection is known to be closed.
    fn is_closed(&self) -> bool {
        self.driver.io.is_none() || self.sender.is_closed()
    }
}

/// hyper's connection future with a waker of its own, so that it is polled only when it asked
/// to be: polling it otherwise would try the socket again (a system call on runtimes whose
/// streams do not remember readiness, async-io's among them).
///
/// The request's own future (sending, reading the body) is polled with a waker of the driver
/// too: an exchange wakes itself as it goes (sending a request wakes the connection, the
/// connection reading the response wakes the request), and a wake-up while [`Driver::drive`]
/// is polling is answered by polling again at once, not by waking the task (which would run
/// the whole request's future again through the executor; on async-io's `block_on`, a
/// wake-up during a poll costs a round of the reactor, five system calls).
struct Driver {
    /// `None` once the connection future has ended (closed or failed).
    io: Option<ConnIo>,
    wake: Arc<DriveState>,
    /// Wakers noting that the connection future, or the request's future, asked to be
    /// polled (made once per connection).
    conn_waker: Waker,
    fut_waker: Waker,
}

/// The connection future asked to be polled.
const CONN: u8 = 1;
/// The request's future asked to be polled.
const FUT: u8 = 2;
/// [`Driver::drive`] is polling: a wake-up is seen there, the task needs none.
const POLLING: u8 = 4;

/// What the driver's wakers share: who asked to be polled, and the task of the request
/// holding the connection.
struct DriveState {
    state: AtomicU8,
    task: AtomicWaker,
}

impl DriveState {
    fn wake(&self, who: u8) {
        if self.state.fetch_or(who, Ordering::AcqRel) & POLLING == 0 {
            self.task.wake();
        }
    }
}

/// The connection future's waker.
struct ConnWake(Arc<DriveState>);

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.0.wake(CONN);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake(CONN);
    }
}

/// The request's future's waker.
struct FutWake(Arc<DriveState>);

impl Wake for FutWake {
    fn wake(self: Arc<Self>) {
        self.0.wake(FUT);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake(FUT);
    }
}

/// Rounds of [`Driver::drive`] within one poll before it lets the executor run other tasks.
const DRIVE_ROUNDS: usize = 8;

impl Driver {
    fn new(io: ConnIo) -> Self {
        let wake = Arc::new(DriveState {
            state: AtomicU8::new(CONN), // polled first thing
            task: AtomicWaker::new(),
        });
        Driver {
            io: Some(io),
            conn_waker: Waker::from(Arc::new(ConnWake(Arc::clone(&wake)))),
            fut_waker: Waker::from(Arc::new(FutWake(Arc::clone(&wake)))),
            wake,
        }
    }

    /// Runs `f` (handing a request to the connection) as if within a [`Driver::drive`]: a
    /// wake-up of the connection future it causes wakes no task; the next drive polls that
    /// future first thing.
    fn quietly<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let state = &self.wake.state;
        state.fetch_or(POLLING, Ordering::AcqRel);
        let out = f();
        state.fetch_and(!POLLING, Ordering::AcqRel);
        out
    }

    /// Runs `fut` while polling the connection future when it asked for it (first, so that
    /// a response it reads is seen by `fut` in the same poll), again while either asks to be
    /// polled during the poll. The connection future is dropped once it ends: its pending
    /// exchanges then fail, so `fut` cannot wait forever.
    fn drive<'a, F: Future>(&'a mut self, target: &'a Target, fut: F) -> Drive<'a, F> {
        Drive {
            driver: self,
            target,
            fut,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Driver::drive`]'s future. A type of its own rather than an `async fn`: that would
    /// hold `fut` twice (as its argument and pinned), and every request's future holds this.
    struct Drive<'a, F> {
        driver: &'a mut Driver,
        target: &'a Target,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Drive<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut fut = this.fut;
        let Driver {
            io,
            wake,
            conn_waker,
            fut_waker,
        } = &mut **this.driver;
        let target = *this.target;
        let state = &wake.state;
        wake.task.register(cx.waker());
        state.fetch_or(POLLING, Ordering::AcqRel);
        for _ in 0..DRIVE_ROUNDS {
            let asked = state.fetch_and(!(CONN | FUT), Ordering::AcqRel);
            if asked & CONN != 0 {
                poll_conn(io, conn_waker, target);
            }
            if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(fut_waker)) {
                // A later request on this connection polls it if it asked meanwhile.
                state.fetch_and(!POLLING, Ordering::AcqRel);
                return Poll::Ready(out);
            }
            if state.load(Ordering::Acquire) & (CONN | FUT) == 0 {
                if state.fetch_and(!POLLING, Ordering::AcqRel) & (CONN | FUT) == 0 {
                    return Poll::Pending; // a wake-up from now on wakes the task
                }
                state.fetch_or(POLLING, Ordering::AcqRel); // asked just now: again
            }
        }
        // Still asked after many rounds: give the executor a turn, then go on.
        state.fetch_and(!POLLING, Ordering::AcqRel);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls the connection future (if it has not ended) with its waker; drops it once it ends.
fn poll_conn(io: &mut Option<ConnIo>, waker: &Waker, target: &Target) {
    let Some(conn) = io else {
        return;
    };
    if let Poll::Ready(res) = conn.as_mut().poll(&mut Context::from_waker(waker)) {
        *io = None;
        match res {
            Ok(()) => tracing::trace!(%target, "HTTP connection closed"),
            Err(e) => tracing::debug!(
                %target,
                error = %e,
                "HTTP connection ended with an error"
            ),
        }
    }
}

/// Pool limits (see [`StackBuilder`](super::StackBuilder)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub(crate) max_connections_per_host: usize,
    pub(crate) max_idle_per_host: usize,
    pub(crate) idle_timeout: Duration,
}

/// The keep-alive pool.
pub(crate) struct Pool {
    settings: PoolSettings,
    /// One entry per target (a client talks to one or a few): found by the request URI's
    /// scheme and authority as written, without parsing or hashing per request; a request's
    /// slot refers to its entry by the shared target.
    hosts: Mutex<Vec<Host>>,
}

struct Host {
    target: Arc<Target>,
    /// The scheme and authority of the URIs that led here (the lookup key).
    scheme: Box<str>,
    authority: Box<str>,
    /// Connections open (in use, idle or being opened).
    open: usize,
    /// Idle connections, most recently used last.
    idle: Vec<(Conn, Instant)>,
    /// Requests waiting for a connection, oldest first (keys into `waits`; keys of requests
    /// that gave up are skipped when popped).
    waiters: VecDeque<WaitKey>,
    /// The waiting requests' places: a slab reused from wait to wait, so waiting allocates
    /// nothing once it has grown, and a freed connection is handed over under the lock the
    /// pool takes anyway (no channel per wait).
    waits: Vec<Wait>,
    /// Free places in `waits`.
    free_waits: Vec<u32>,
}

/// A place in [`Host::waits`] and its generation (bumped when the place is freed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WaitKey {
    index: u32,
    generation: u32,
}

#[derive(Default)]
struct Wait {
    generation: u32,
    state: WaitState,
}

#[derive(Default)]
enum WaitState {
    #[default]
    Free,
    /// Waiting, with the task to wake (once polled).
    Waiting(Option<Waker>),
    /// Handed a connection (or the right to open one) it has not taken yet; for a connection,
    /// when it was released (to keep it idle should the request have given up).
    Granted(Grant, Option<Instant>),
}

/// What a waiting request is handed.
enum Grant {
    /// An idle connection.
    Reuse(Conn, Slot),
    /// Permission to open a connection.
    Open(Slot),
}

/// One of a target's `open` connections. Dropping it frees the place (and hands it to the
/// oldest waiting request).
struct Slot {
    pool: Option<Arc<Pool>>,
    target: Arc<Target>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = self.lock();
        let open: usize = hosts.iter().map(|h| h.open).sum();
        let idle: usize = hosts.iter().map(|h| h.idle.len()).sum();
        f.debug_struct("Pool")
            .field("settings", &self.settings)
            .field("open", &open)
            .field("idle", &idle)
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(settings: PoolSettings) -> Self {
        Pool {
            settings,
            hosts: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Host>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The target of an absolute request URI, shared with its pool entry (made if new).
    #[cfg(test)]
    fn target(&self, uri: &Uri) -> Result<Arc<Target>, TransportError> {
        let mut hosts = self.lock();
        let i = host_of_uri(&mut hosts, uri)?;
        Ok(Arc::clone(&hosts[i].target))
    }

    /// The target of an absolute request URI (its pool entry made if new).
    fn target_of(&self, uri: &Uri) -> Result<Arc<Target>, TransportError> {
        let mut hosts = self.lock();
        let i = host_of_uri(&mut hosts, uri)?;
        Ok(Arc::clone(&hosts[i].target))
    }

    /// An idle connection, or the right to open one, waiting for it if the target is at its
    /// cap.
    async fn acquire(self: &Arc<Self>, target: &Arc<Target>, now: Instant) -> Grant {
        let key = {
            let mut hosts = self.lock();
            match self.take_or_wait(host_mut(&mut hosts, target), target, now) {
                Ok(grant) => return grant,
                Err(key) => key,
            }
        };
        Waiting::new(self, target, key).await
    }

    /// An idle connection still open and young enough, or the right to open one if under the
    /// cap, else a place in the line (see [`Pool::wait`]).
    fn take_or_wait(
        self: &Arc<Self>,
        host: &mut Host,
        target: &Arc<Target>,
        now: Instant,
    ) -> Result<Grant, WaitKey> {
        while let Some((conn, since)) = host.idle.pop() {
            if !conn.is_closed()
                && now.saturating_duration_since(since) < self.settings.idle_timeout
            {
                return Ok(Grant::Reuse(conn, Slot::new(self, target)));
            }
            host.open -= 1; // dropped: its connection task ends
        }
        if host.open < self.settings.max_connections_per_host {
            host.open += 1;
            return Ok(Grant::Open(Slot::new(self, target)));
        }
        Err(host.wait())
    }

    /// Hands a connection whose response was read in full to the oldest waiting request, or
    /// keeps it idle.
    fn release(&self, conn: Conn, slot: Slot, now: Instant) {
        let mut hosts = self.lock();
        let host = host_mut(&mut hosts, &slot.target);
        let (conn, slot) = match host.hand_over(Grant::Reuse(conn, slot), Some(now)) {
            Ok(task) => {
                drop(hosts);
                task.into_iter().for_each(Waker::wake);
                return;
            }
            Err(Grant::Reuse(conn, slot)) => (conn, slot),
            Err(Grant::Open(slot)) => {
                // Not reached: handed back as given.
                drop(hosts);
                drop(slot);
                return;
            }
        };
        if !conn.is_closed() && host.idle.len() < self.settings.max_idle_per_host {
            host.idle.push((conn, now));
            slot.keep(); // the idle entry holds the place
            return;
        }
        drop(hosts);
        drop(conn);
        drop(slot); // frees the place
    }
}

/// A request waiting for a connection (see [`Pool::acquire`]). Dropped before it took what it
/// was handed (the request gave up: its timeout, or the caller dropped it), it passes that on:
/// a connection to the next waiting request or the idle list, a place to the next request.
struct Waiting<'a> {
    pool: &'a Arc<Pool>,
    target: &'a Arc<Target>,
    key: WaitKey,
    /// Its grant was taken.
    done: bool,
}

impl<'a> Waiting<'a> {
    /// Waits in line (place `key`, taken by [`Pool::take_or_wait`]).
    fn new(pool: &'a Arc<Pool>, target: &'a Arc<Target>, key: WaitKey) -> Self {
        Waiting {
            pool,
            target,
            key,
            done: false,
        }
    }
}

impl Future for Waiting<'_> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        let (pool, target) = (self.pool, self.target);
        let mut hosts = pool.lock();
        let host = host_mut(&mut hosts, target);
        match host.take_grant(self.key, cx.waker()) {
            Some(Some(grant)) => {
                self.done = true;
                Poll::Ready(grant)
            }
            Some(None) => Poll::Pending,
            None => {
                // Not reached: a waiting request's place is freed only by itself. Should it
                // happen, it opens a connection (counted), as a request under the cap does.
                self.done = true;
                host.open += 1;
                Poll::Ready(Grant::Open(Slot::new(pool, target)))
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let granted = {
            let mut hosts = self.pool.lock();
            let Some((_, host)) = host_of(&mut hosts, self.target) else {
                return;
            };
            host.remove_wait(self.key)
        };
        // Outside the lock: passing it on takes it again.
        match granted {
            Some((Grant::Reuse(conn, slot), Some(at))) => self.pool.release(conn, slot, at),
            Some((grant, _)) => drop(grant), // a place: its slot passes it on
            None => {}
        }
    }
}

impl Host {
    fn new(target: Arc<Target>, scheme: &str, authority: &str) -> Host {
        Host {
            target,
            scheme: scheme.into(),
            authority: authority.into(),
            open: 0,
            idle: Vec::new(),
            waiters: VecDeque::new(),
            waits: Vec::new(),
            free_waits: Vec::new(),
        }
    }

    /// A new waiting request, last in line.
    fn wait(&mut self) -> WaitKey {
        let index = match self.free_waits.pop() {
            Some(i) => i,
            None => {
                self.waits.push(Wait::default());
                u32::try_from(self.waits.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let w = &mut self.waits[index as usize];
        w.state = WaitState::Waiting(None);
        let key = WaitKey {
            index,
            generation: w.generation,
        };
        self.waiters.push_back(key);
        key
    }

    fn wait_mut(&mut self, key: WaitKey) -> Option<&mut Wait> {
        self.waits
            .get_mut(key.index as usize)
            .filter(|w| w.generation == key.generation)
    }

    /// Hands `grant` to the oldest request still waiting (out of the line); returns its task,
    /// to wake outside the lock, or the grant if no request waits.
    fn hand_over(&mut self, grant: Grant, at: Option<Instant>) -> Result<Option<Waker>, Grant> {
        while let Some(key) = self.waiters.pop_front() {
            if let Some(w) = self.wait_mut(key) {
                if let WaitState::Waiting(task) = &mut w.state {
                    let task = task.take();
                    w.state = WaitState::Granted(grant, at);
                    return Ok(task);
                }
            }
        }
        Err(grant)
    }

    /// What request `key` was handed (`Some(Some(_))`, its place freed), or `Some(None)` if
    /// it is still waiting (`task` noted to be woken); `None` if `key` has no place.
    fn take_grant(&mut self, key: WaitKey, task: &Waker) -> Option<Option<Grant>> {
        let w = self.wait_mut(key)?;
        match &mut w.state {
            WaitState::Waiting(t) => {
                match t {
                    Some(t) if t.will_wake(task) => {}
                    _ => *t = Some(task.clone()),
                }
                Some(None)
            }
            WaitState::Granted(..) => self.remove_wait(key).map(|(grant, _)| Some(grant)),
            WaitState::Free => None,
        }
    }

    /// Frees the place of request `key` (its key left in the line is skipped); returns what it
    /// had been handed and not taken.
    fn remove_wait(&mut self, key: WaitKey) -> Option<(Grant, Option<Instant>)> {
        let w = self.wait_mut(key)?;
        let state = std::mem::take(&mut w.state);
        w.generation = w.generation.wrapping_add(1);
        self.free_waits.push(key.index);
        match state {
            WaitState::Granted(grant, at) => Some((grant, at)),
            _ => None,
        }
    }
}

/// The entry of `target` (made by [`Pool::target`]; made again should it have been removed).
fn host_mut<'a>(hosts: &'a mut Vec<Host>, target: &Arc<Target>) -> &'a mut Host {
    let i = match hosts.iter().position(|h| Arc::ptr_eq(&h.target, target)) {
        Some(i) => i,
        None => {
            let authority = target.to_string();
            hosts.push(Host::new(Arc::clone(target), "", &authority));
            hosts.len() - 1
        }
    };
    &mut hosts[i]
}

/// The index of the entry of an absolute request URI's target (made if new): found by the
/// URI's scheme and authority as written, without parsing or hashing per request.
fn host_of_uri(hosts: &mut Vec<Host>, uri: &Uri) -> Result<usize, TransportError> {
    let scheme = uri.scheme_str().unwrap_or("");
    let authority = uri.authority().map_or("", |a| a.as_str());
    if let Some(i) = hosts
        .iter()
        .position(|h| *h.authority == *authority && *h.scheme == *scheme)
    {
        return Ok(i);
    }
    // New, or the same target written another way (`LOCALHOST`, `:80`): parsed.
    let target = Target::from_uri(uri, false)?;
    if let Some(i) = hosts.iter().position(|h| *h.target == target) {
        let h = &mut hosts[i];
        if h.scheme.is_empty() {
            // Made again by `host_mut`: give it its key back.
            h.scheme = scheme.into();
            h.authority = authority.into();
        }
        return Ok(i);
    }
    hosts.push(Host::new(Arc::new(target), scheme, authority));
    Ok(hosts.len() - 1)
}

/// The entry of `target`, if it has one.
fn host_of<'a>(hosts: &'a mut [Host], target: &Arc<Target>) -> Option<(usize, &'a mut Host)> {
    hosts
        .iter_mut()
        .enumerate()
        .find(|(_, h)| Arc::ptr_eq(&h.target, target))
}

impl Slot {
    fn new(pool: &Arc<Pool>, target: &Arc<Target>) -> Slot {
        Slot {
            pool: Some(Arc::clone(pool)),
            target: Arc::clone(target),
        }
    }

    /// Keeps the place counted without this slot (an idle entry holds it).
    fn keep(mut self) {
        self.pool = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let mut hosts = pool.lock();
        let Some((i, host)) = host_of(&mut hosts, &self.target) else {
            return;
        };
        if host.waiters.is_empty() {
            host.open = host.open.saturating_sub(1);
            if host.open == 0 && host.idle.is_empty() {
                hosts.swap_remove(i);
            }
            return;
        }
        // The place goes to the oldest waiting request, which opens a connection (should it
        // give up before, it passes the place on).
        match host.hand_over(Grant::Open(Slot::new(&pool, &self.target)), None) {
            Ok(task) => {
                drop(hosts);
                task.into_iter().for_each(Waker::wake);
            }
            Err(grant) => {
                // Only requests that gave up were in line: the place is free.
                host.open = host.open.saturating_sub(1);
                if host.open == 0 && host.idle.is_empty() {
                    hosts.swap_remove(i);
                }
                drop(hosts);
                if let Grant::Open(slot) = grant {
                    slot.keep(); // made for the hand-over, not counted: nothing to free
                }
            }
        }
    }
}

/// Sends `req` (absolute URI) and reads the whole body within `opts.max_body_bytes`.
///
/// A function returning an `async move` block rather than an `async fn`, which would keep a
/// second copy of its arguments (a few hundred bytes) in every request's future.
pub(crate) fn send<E: Executor, C: Connector>(
    stack: Stack<E, C>,
    req: Request<Vec<u8>>,
    opts: TransportOptions,
) -> impl Future<Output = Result<Response<Bytes>, TransportError>> + Send + 'static {
    // The target (from the absolute URI), then the request in origin form: made here, so
    // that the future holds the request once.
    // (Its error boxed: a place in the future as small as the target's.)
    let target = stack.inner.pool.target_of(req.uri()).map_err(Box::new);
    let mut req = origin_form(req);
    async move {
        let target = target.map_err(|e| *e)?;
        let pool = &stack.inner.pool;
        let (mut conn, slot, response) = loop {
            let (mut conn, slot, reused) = match pool.acquire(&target, stack.executor.now()).await {
                Grant::Reuse(conn, slot) => {
                    // A close by the server while it sat idle is seen by the first read, before
                    // the request is written.
                    conn.reused.store(true, Ordering::Release);
                    (conn, slot, true)
                }
                // Boxed: opening (TCP, TLS, handshake) is rare and its future large; inline, it
                // would be copied with this future at every move, for every request.
                Grant::Open(slot) => (
                    Box::pin(open(&stack, &target, opts.connect_timeout)).await?,
                    slot,
                    false,
                ),
            };
            let Conn { sender, driver, .. } = &mut conn;
            let ready = std::future::poll_fn(|cx| sender.poll_ready(cx));
            if reused && driver.drive(&target, ready).await.is_err() {
                continue; // closed meanwhile; its slot is freed
            }
            // The hand-over wakes the connection future: quietly, so that the drive polls it in
            // its first poll (a wake-up of this task would cost a round of the executor; on
            // async-io's `block_on`, of the reactor).
            let sending = driver.quietly(|| sender.try_send_request(req));
            match driver.drive(&target, sending).await {
                Ok(response) => break (conn, slot, response),
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => {
                        tracing::debug!(%target, "pooled connection unusable; retrying on another");
                        req = back;
                    }
                    _ => return Err(hyper_error(&target, e.into_error())),
                },
            }
        };

        let (parts, body) = response.into_parts();
        let max = opts.max_body_bytes;
        let content_length = parts.headers.get(CONTENT_LENGTH);
        let has_content_length = content_length.is_some();
        let declared = content_length
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max as u64) {
            // Not reading the body: the connection is dropped, not pooled.
            return Err(too_large(&target, max));
        }
        let collecting = Limited::new(body, max).collect();
        let body = match conn.driver.drive(&target, collecting).await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    return Err(too_large(&target, max));
                }
                return Err(match e.downcast::<hyper::Error>() {
                    Ok(h) => hyper_error(&target, *h),
                    Err(e) => TransportError::new(
                        TransportErrorKind::Io,
                        format!("reading the response from {target} failed: {e}"),
                    ),
                });
            }
        };
        // RFC 9112 §6.3: with both, the framing is ambiguous; never reuse such a connection.
        let ambiguous = has_content_length && parts.headers.contains_key(TRANSFER_ENCODING);
        if ambiguous {
            tracing::debug!(%target, "response with Transfer-Encoding and Content-Length: closing");
            drop((conn, slot));
        } else {
            pool.release(conn, slot, stack.executor.now());
        }
        Ok(Response::from_parts(parts, body))
    }
}

/// The request with an origin-form target (`/ari/...`), a `Host` header and HTTP/1.1.
fn origin_form(req: Request<Vec<u8>>) -> Request<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    // One lookup per header whether it is there or not.
    if let Entry::Vacant(slot) = parts.headers.entry(HOST) {
        if let Some(v) = host_header(&parts.uri) {
            slot.insert(v);
        }
    }
    // Moved out, not cloned: a clone of the path's buffer may allocate.
    let path = std::mem::take(&mut parts.uri)
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    // hyper sends no length for an empty body; say it (Asterisk reads bodies by length).
    let sends_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if sends_body && body.is_empty() {
        parts
            .headers
            .entry(CONTENT_LENGTH)
            .or_insert(http::HeaderValue::from_static("0"));
    }
    Request::from_parts(parts, Full::new(Bytes::from(body)))
}

/// The `Host` header value for `uri` (its authority without any `user:password@`).
pub(crate) fn host_header(uri: &Uri) -> Option<http::HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host = authority.rsplit('@').next().unwrap_or(authority);
    http::HeaderValue::from_str(host).ok()
}

/// Opens a new connection (TCP, TLS, HTTP/1.1 handshake) within `timeout`.
async fn open<E: Executor, C: Connector>(
    stack: &Stack<E, C>,
    target: &Target,
    timeout: Duration,
) -> Result<Conn, TransportError> {
    let connecting = async {
        let io = connect(&stack.connector, &stack.inner.tls, target).await?;
        let (shim, reused) = HyperIo::new(io, before_reuse::<C>);
        let (sender, io) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Full<Bytes>>(shim)
            .await
            .map_err(|e| hyper_error(target, e))?;
        Ok((sender, io, reused))
    };
    let what = || format!("connecting to {target}");
    let (sender, io, reused) = with_timeout(&stack.executor, timeout, what, connecting).await?;
    tracing::trace!(%target, "new HTTP connection");
    Ok(Conn {
        sender,
        driver: Driver::new(Box::pin(io)),
        reused,
    })
}

fn too_large(target: &Target, max: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::TooLarge,
        format!(
            "the response body from {target} exceeds {max} bytes (raise \
             ClientBuilder::max_body_bytes / TransportOptions::max_body_bytes)"
        ),
    )
}

/// Maps a hyper error to a transport error, keeping it as the source. hyper's messages carry
/// no header values.
fn hyper_error(target: &Target, e: hyper::Error) -> TransportError {
    let mut io_kind = None;
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
            break;
        }
        cause = c.source();
    }
    let kind = if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_parse() || e.is_parse_status() || e.is_user() {
        TransportErrorKind::Protocol
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        TransportErrorKind::Closed
    } else {
        use std::io::ErrorKind as K;
        match io_kind {
            // A bad chunk size line, say.
            Some(K::InvalidData | K::InvalidInput) => TransportErrorKind::Protocol,
            Some(K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe) => {
                TransportErrorKind::Closed
            }
            _ => TransportErrorKind::Io,
        }
    };
    let mut message = format!("HTTP exchange with {target}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    TransportError::new(kind, message).with_source(e)
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A waker counting its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task's waker that counts its wake-ups.
    fn counting_waker() -> (Arc<Count>, Waker) {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&task));
        (task, waker)
    }

    type Acquiring<'a> = Pin<Box<dyn Future<Output = Grant> + 'a>>;

    /// A request for a connection and the waker it is polled with.
    struct Request<'a> {
        fut: Acquiring<'a>,
        woken: Arc<Count>,
    }

    impl<'a> Request<'a> {
        fn new(pool: &'a Arc<Pool>, target: &'a Arc<Target>, now: Instant) -> Self {
            Request {
                fut: Box::pin(pool.acquire(target, now)),
                woken: Arc::new(Count(AtomicUsize::new(0))),
            }
        }

        fn poll(&mut self) -> Poll<Grant> {
            let waker = Waker::from(Arc::clone(&self.woken));
            self.fut.as_mut().poll(&mut Context::from_waker(&waker))
        }

        fn wakes(&self) -> usize {
            self.woken.0.load(Ordering::SeqCst)
        }
    }

    fn pool_of_one() -> (Arc<Pool>, Arc<Target>) {
        let pool = Arc::new(Pool::new(PoolSettings {
            max_connections_per_host: 1,
            max_idle_per_host: 1,
            idle_timeout: Duration::from_secs(10),
        }));
        let uri: Uri = "http://asterisk.example:8088/ari/channels".parse().unwrap();
        let target = pool.target(&uri).unwrap();
        (pool, target)
    }

    /// Any instant: the pool only compares the ones it is given.
    #[allow(clippy::disallowed_methods)]
    fn now() -> Instant {
        Instant::now()
    }

    fn open(pool: &Pool) -> usize {
        pool.lock().iter().map(|h| h.open).sum()
    }

    fn opened(p: Poll<Grant>) -> Slot {
        match p {
            Poll::Ready(Grant::Open(slot)) => slot,
            Poll::Ready(Grant::Reuse(..)) => panic!("no connection was released"),
            Poll::Pending => panic!("still waiting"),
        }
    }

    /// A stand-in for hyper's connection future: counts its polls, keeps its waker, wakes
    /// itself on the polls listed.
    #[derive(Default)]
    struct FakeConn {
        polls: AtomicUsize,
        waker: Mutex<Option<Waker>>,
        wake_itself_on: Vec<usize>,
    }

    fn driver_of(conn: &Arc<FakeConn>) -> Driver {
        let conn = Arc::clone(conn);
        Driver::new(Box::pin(std::future::poll_fn(move |cx| {
            let n = conn.polls.fetch_add(1, Ordering::SeqCst) + 1;
            *conn.waker.lock().unwrap() = Some(cx.waker().clone());
            if conn.wake_itself_on.contains(&n) {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })))
    }

    fn target() -> Target {
        Target::from_uri(&"http://asterisk.example:8088/".parse().unwrap(), false).unwrap()
    }

    /// A request's readiness: answered once the connection was polled twice (the response
    /// read).
    fn answered(conn: &FakeConn) -> Poll<()> {
        if conn.polls.load(Ordering::SeqCst) >= 2 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    #[test]
    fn wake_ups_during_a_drive_poll_are_answered_in_that_poll_without_waking_the_task() {
        let conn = Arc::new(FakeConn {
            wake_itself_on: vec![1], // as sending a request does
            ..FakeConn::default()
        });
        let mut driver = driver_of(&conn);
        let target = target();
        // The request: wakes itself once (as hyper's response callback does), then is
        // ready once the connection was polled twice.
        let mut fut_polls = 0;
        let request = std::future::poll_fn(|cx| {
            fut_polls += 1;
            if fut_polls == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            answered(&conn).map(|()| "response")
        });
        let (task, waker) = counting_waker();
        let mut drive = pin!(driver.drive(&target, request));
        let out = drive.as_mut().poll(&mut Context::from_waker(&waker));
        assert_eq!(out, Poll::Ready("response"), "one poll of the task");
        assert_eq!(task.0.load(Ordering::SeqCst), 0, "no wake-up of the task");
        assert_eq!(conn.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wake_up_after_the_drive_poll_wakes_the_task_and_polls_the_connection() {
        let conn = Arc::new(FakeConn::default());
        let mut driver = driver_of(&conn);
        let target = target();
        let request = std::future::poll_fn(|_| answered(&conn));
        let (task, waker) = counting_waker();
        let mut drive = pin!(driver.drive(&target, request));
        assert!(drive
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(conn.polls.load(Ordering::SeqCst), 1);
        // The socket becomes readable: the connection's waker is called (the reactor's).
        let conn_waker = conn.waker.lock().unwrap().take().unwrap();
        conn_waker.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(drive
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
        assert_eq!(conn.polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_request_that_keeps_asking_lets_the_executor_run() {
        let conn = Arc::new(FakeConn::default());
        let mut driver = driver_of(&conn);
        let target = target();
        let request = std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        });
        let (task, waker) = counting_waker();
        let mut drive = pin!(driver.drive(&target, request));
        assert!(drive
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "woken to be polled again later"
        );
    }

    #[test]
    fn a_freed_place_goes_to_the_oldest_request_still_waiting() {
        let (pool, target) = pool_of_one();
        let now = now();
        let first = opened(Request::new(&pool, &target, now).poll());
        let mut waiting: Vec<Request<'_>> =
            (0..3).map(|_| Request::new(&pool, &target, now)).collect();
        for r in &mut waiting {
            assert!(r.poll().is_pending(), "at the cap: waits");
        }
        let [second, third, fourth] = <[Request<'_>; 3]>::try_from(waiting).ok().unwrap();
        // The oldest gives up while waiting: it leaves the line.
        drop(second);
        // The place goes to the next in line, and only its task is woken.
        drop(first);
        assert_eq!((third.wakes(), fourth.wakes()), (1, 0));
        assert_eq!(open(&pool), 1, "the place is handed over, not freed");
        // Handed the place, it gives up before taking it: the place goes on to the next.
        drop(third);
        assert_eq!(fourth.wakes(), 1);
        let mut fourth = fourth;
        let last = opened(fourth.poll());
        assert_eq!(open(&pool), 1);
        drop(last);
        assert_eq!(open(&pool), 0, "nobody waits: the place is freed");
    }

    #[test]
    fn waiting_reuses_its_places() {
        let (pool, target) = pool_of_one();
        let now = now();
        let mut held = opened(Request::new(&pool, &target, now).poll());
        for _ in 0..10 {
            let mut next = Request::new(&pool, &target, now);
            assert!(next.poll().is_pending());
            drop(held);
            assert_eq!(next.wakes(), 1);
            held = opened(next.poll());
        }
        let hosts = pool.lock();
        assert_eq!(hosts[0].waits.len(), 1, "one place, reused by every wait");
        assert!(hosts[0].waiters.is_empty());
        assert_eq!(hosts[0].open, 1);
        drop(hosts);
        drop(held);
        assert_eq!(open(&pool), 0);
    }
}
