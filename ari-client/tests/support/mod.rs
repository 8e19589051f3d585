//! A fake, deterministic `Runtime` for tests: a tiny executor polled by the test, a virtual
//! clock advanced by the test, scripted HTTP answers and in-memory WebSockets.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use ari_client::{
    Executor, Transport, TransportError, TransportErrorKind, TransportOptions, WsMessage,
};
use bytes::Bytes;
use futures_util::task::{waker, ArcWake};

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

struct Task {
    fut: Mutex<Option<BoxFut>>,
    woken: AtomicBool,
}

impl ArcWake for Task {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::SeqCst);
    }
}

/// What the fake HTTP server answers.
pub enum Reply {
    /// A response.
    Respond(u16, String),
    /// A transport error.
    Fail(TransportError),
    /// Nothing, ever (an unreachable host that swallows packets).
    Hang,
}

type Responder = Box<dyn FnMut(&http::Request<Vec<u8>>) -> Reply + Send>;

#[derive(Default)]
struct Inner {
    tasks: Mutex<Vec<Arc<Task>>>,
    offset: Mutex<Duration>,
    timers: Mutex<Vec<(Instant, Waker)>>,
    responder: Mutex<Option<Responder>>,
    requests: Mutex<Vec<http::Request<Vec<u8>>>>,
    sockets: Mutex<Vec<WsHandle>>,
    ws_upgrades: Mutex<Vec<http::Request<()>>>,
    refuse_ws: AtomicBool,
    hang_ws: AtomicBool,
}

#[derive(Clone)]
pub struct FakeRt {
    inner: Arc<Inner>,
    base: Instant,
}

impl fmt::Debug for FakeRt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FakeRt")
    }
}

impl Default for FakeRt {
    fn default() -> Self {
        FakeRt {
            inner: Arc::new(Inner::default()),
            #[allow(clippy::disallowed_methods)] // the fake clock's origin
            base: Instant::now(),
        }
    }
}

impl FakeRt {
    /// Answers every request with `f`.
    pub fn respond(&self, f: impl FnMut(&http::Request<Vec<u8>>) -> Reply + Send + 'static) {
        *self.inner.responder.lock().unwrap() = Some(Box::new(f));
    }

    /// The requests sent so far.
    pub fn requests(&self) -> Vec<(http::Method, String, Vec<u8>)> {
        self.inner
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.method().clone(), r.uri().to_string(), r.body().clone()))
            .collect()
    }

    /// WebSocket connects never complete (a firewall dropping packets).
    pub fn hang_websockets(&self, on: bool) {
        self.inner.hang_ws.store(on, Ordering::SeqCst);
    }

    pub fn refuse_websockets(&self, on: bool) {
        self.inner.refuse_ws.store(on, Ordering::SeqCst);
    }

    /// The WebSocket upgrade requests so far.
    pub fn upgrades(&self) -> Vec<http::Request<()>> {
        self.inner
            .ws_upgrades
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let mut b = http::Request::builder().method(r.method()).uri(r.uri());
                for (k, v) in r.headers() {
                    b = b.header(k, v);
                }
                b.body(()).unwrap()
            })
            .collect()
    }

    /// The server side of the `n`th WebSocket opened.
    pub fn socket(&self, n: usize) -> WsHandle {
        self.inner.sockets.lock().unwrap()[n].clone()
    }

    pub fn sockets(&self) -> usize {
        self.inner.sockets.lock().unwrap().len()
    }

    /// Polls every task until none is woken (bounded).
    pub fn run(&self) {
        for _ in 0..100_000 {
            let ready: Vec<Arc<Task>> = self
                .inner
                .tasks
                .lock()
                .unwrap()
                .iter()
                .filter(|t| t.woken.swap(false, Ordering::SeqCst))
                .cloned()
                .collect();
            if ready.is_empty() {
                return;
            }
            for t in ready {
                let w = waker(t.clone());
                let mut cx = Context::from_waker(&w);
                let mut slot = t.fut.lock().unwrap();
                if let Some(f) = slot.as_mut() {
                    if f.as_mut().poll(&mut cx).is_ready() {
                        *slot = None;
                    }
                }
            }
            self.inner
                .tasks
                .lock()
                .unwrap()
                .retain(|t| t.fut.lock().unwrap().is_some());
        }
        panic!("the fake runtime did not settle");
    }

    /// Runs `fut` with every other task until it completes; `None` if everything stalls
    /// first.
    pub fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let out = Arc::new(Mutex::new(None));
        let o = out.clone();
        self.spawn(async move {
            let v = fut.await;
            *o.lock().unwrap() = Some(v);
        });
        self.run();
        let v = out.lock().unwrap().take();
        v
    }

    /// Spawns `fut` and returns a handle to its result.
    pub fn start<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Pending<T> {
        let out = Arc::new(Mutex::new(None));
        let o = out.clone();
        self.spawn(async move {
            let v = fut.await;
            *o.lock().unwrap() = Some(v);
        });
        self.run();
        Pending(out)
    }

    /// Moves the virtual clock forward without running anything: time spent by the code
    /// running now (a handler doing synchronous work).
    #[allow(dead_code)]
    pub fn spend(&self, d: Duration) {
        *self.inner.offset.lock().unwrap() += d;
    }

    /// Moves the virtual clock forward, fires due timers, runs.
    pub fn advance(&self, d: Duration) {
        *self.inner.offset.lock().unwrap() += d;
        let now = self.now();
        let due: Vec<Waker> = {
            let mut timers = self.inner.timers.lock().unwrap();
            let (due, rest): (Vec<_>, Vec<_>) = timers.drain(..).partition(|(t, _)| *t <= now);
            *timers = rest;
            due.into_iter().map(|(_, w)| w).collect()
        };
        for w in due {
            w.wake();
        }
        self.run();
    }
}

pub struct Pending<T>(Arc<Mutex<Option<T>>>);

impl<T> Pending<T> {
    pub fn take(&self) -> Option<T> {
        self.0.lock().unwrap().take()
    }
    pub fn is_done(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
}

struct Sleep {
    rt: FakeRt,
    deadline: Instant,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.rt.now() >= self.deadline {
            return Poll::Ready(());
        }
        self.rt
            .inner
            .timers
            .lock()
            .unwrap()
            .push((self.deadline, cx.waker().clone()));
        Poll::Pending
    }
}

impl Executor for FakeRt {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let t = Arc::new(Task {
            fut: Mutex::new(Some(Box::pin(fut))),
            woken: AtomicBool::new(true),
        });
        self.inner.tasks.lock().unwrap().push(t);
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        Sleep {
            rt: self.clone(),
            deadline,
        }
    }

    fn now(&self) -> Instant {
        self.base + *self.inner.offset.lock().unwrap()
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_700_000_000)
            + *self.inner.offset.lock().unwrap()
    }
}

impl Transport for FakeRt {
    type Ws = FakeWs;

    fn http(
        &self,
        req: http::Request<Vec<u8>>,
        _opts: &TransportOptions,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send + 'static {
        let reply = match self.inner.responder.lock().unwrap().as_mut() {
            Some(f) => f(&req),
            None => Reply::Fail(TransportError::new(TransportErrorKind::Connect, "refused")),
        };
        self.inner.requests.lock().unwrap().push(req);
        async move {
            match reply {
                Reply::Respond(status, body) => Ok(http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Bytes::from(body))
                    .unwrap()),
                Reply::Fail(e) => Err(e),
                Reply::Hang => std::future::pending().await,
            }
        }
    }

    fn ws_connect(
        &self,
        req: http::Request<()>,
        _opts: &TransportOptions,
    ) -> impl Future<Output = Result<Self::Ws, TransportError>> + Send + 'static {
        self.inner.ws_upgrades.lock().unwrap().push(req);
        let hang = self.inner.hang_ws.load(Ordering::SeqCst);
        let res = if self.inner.refuse_ws.load(Ordering::SeqCst) {
            Err(TransportError::new(TransportErrorKind::Connect, "refused"))
        } else {
            let shared = Arc::new(Mutex::new(WsState::default()));
            self.inner
                .sockets
                .lock()
                .unwrap()
                .push(WsHandle(shared.clone()));
            Ok(FakeWs(shared))
        };
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            res
        }
    }
}

#[derive(Default)]
struct WsState {
    incoming: VecDeque<Option<WsMessage>>,
    waker: Option<Waker>,
    outgoing: Vec<WsMessage>,
    dropped: bool,
}

/// The client's side of a fake WebSocket.
pub struct FakeWs(Arc<Mutex<WsState>>);

impl Drop for FakeWs {
    fn drop(&mut self) {
        self.0.lock().unwrap().dropped = true;
    }
}

impl futures_core::Stream for FakeWs {
    type Item = Result<WsMessage, TransportError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.0.lock().unwrap();
        match s.incoming.pop_front() {
            Some(Some(m)) => Poll::Ready(Some(Ok(m))),
            Some(None) => Poll::Ready(None),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl futures_sink::Sink<WsMessage> for FakeWs {
    type Error = TransportError;
    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        self.0.lock().unwrap().outgoing.push(item);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// The server's side of a fake WebSocket.
#[derive(Clone)]
pub struct WsHandle(Arc<Mutex<WsState>>);

impl WsHandle {
    fn push(&self, m: Option<WsMessage>) {
        let w = {
            let mut s = self.0.lock().unwrap();
            s.incoming.push_back(m);
            s.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Sends a text frame to the client.
    pub fn send(&self, text: impl Into<String>) {
        self.push(Some(WsMessage::Text(text.into().into())));
    }

    /// Ends the connection (as a lost TCP connection).
    pub fn end(&self) {
        self.push(None);
    }

    /// What the client sent.
    pub fn sent(&self) -> Vec<WsMessage> {
        self.0.lock().unwrap().outgoing.clone()
    }

    /// Whether the client dropped its side.
    pub fn is_dropped(&self) -> bool {
        self.0.lock().unwrap().dropped
    }
}

// ---- ARI JSON ------------------------------------------------------------------------------

pub const TS: &str = "2026-11-26T12:14:21.059+0000";

pub fn channel_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":"PJSIP/alice-1","state":"Up","protocol_id":"","caller":{{"name":"","number":""}},"connected":{{"name":"","number":""}},"accountcode":"","dialplan":{{"context":"default","exten":"s","priority":1,"app_name":"","app_data":""}},"creationtime":"{TS}","language":"en"}}"#
    )
}

pub fn bridge_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","technology":"simple_bridge","bridge_type":"mixing","bridge_class":"stasis","creator":"Stasis","name":"","channels":[],"creationtime":"{TS}","video_mode":"talker"}}"#
    )
}

pub fn playback_json(id: &str, target: &str, state: &str) -> String {
    format!(
        r#"{{"id":"{id}","media_uri":"sound:hello-world","target_uri":"channel:{target}","language":"en","state":"{state}"}}"#
    )
}

pub fn event(ty: &str, fields: &str) -> String {
    format!(
        r#"{{"type":"{ty}","timestamp":"{TS}","application":"hello","asterisk_id":"02:fc:00:00:00:01"{}{fields}}}"#,
        if fields.is_empty() { "" } else { "," }
    )
}

pub fn stasis_start(chan: &str) -> String {
    event(
        "StasisStart",
        &format!(r#""args":["a"],"channel":{}"#, channel_json(chan)),
    )
}

pub fn dtmf(chan: &str, digit: &str) -> String {
    event(
        "ChannelDtmfReceived",
        &format!(
            r#""digit":"{digit}","duration_ms":100,"channel":{}"#,
            channel_json(chan)
        ),
    )
}

pub fn destroyed(chan: &str) -> String {
    event(
        "ChannelDestroyed",
        &format!(
            r#""cause":16,"cause_txt":"Normal Clearing","channel":{}"#,
            channel_json(chan)
        ),
    )
}

pub fn hangup_request(chan: &str) -> String {
    event(
        "ChannelHangupRequest",
        &format!(r#""cause":16,"channel":{}"#, channel_json(chan)),
    )
}

pub fn playback_finished(id: &str, chan: &str) -> String {
    event(
        "PlaybackFinished",
        &format!(r#""playback":{}"#, playback_json(id, chan, "done")),
    )
}

pub fn entered_bridge(bridge: &str, chan: &str) -> String {
    event(
        "ChannelEnteredBridge",
        &format!(
            r#""bridge":{},"channel":{}"#,
            bridge_json(bridge),
            channel_json(chan)
        ),
    )
}

/// A release with REST over WebSocket (20.14+).
pub const INFO: &str = r#"{"system":{"version":"20.14.0","entity_id":"02:fc:00:00:00:01"}}"#;

pub fn stasis_end(chan: &str) -> String {
    event("StasisEnd", &format!(r#""channel":{}"#, channel_json(chan)))
}

pub fn state_change(chan: &str) -> String {
    event(
        "ChannelStateChange",
        &format!(r#""channel":{}"#, channel_json(chan)),
    )
}

pub fn recording_json(name: &str, state: &str) -> String {
    format!(
        r#"{{"name":"{name}","format":"wav","target_uri":"channel:c1","state":"{state}","cause":"{}"}}"#,
        if state == "failed" { "disk full" } else { "" }
    )
}

pub fn recording_event(ty: &str, name: &str, state: &str) -> String {
    event(
        ty,
        &format!(r#""recording":{}"#, recording_json(name, state)),
    )
}

/// The client over the fake runtime.
pub type C = ari_client::Client<FakeRt>;

/// Answers `GET /asterisk/info` with [`INFO`], everything else with 404.
pub fn info_only(rt: &FakeRt) {
    rt.respond(|req| {
        if req.uri().path().ends_with("/asterisk/info") {
            Reply::Respond(200, INFO.into())
        } else {
            Reply::Respond(404, r#"{"message":"Not found"}"#.into())
        }
    });
}

/// A connected client (no keepalive, a fixed seed).
pub fn connect(rt: &FakeRt) -> C {
    let b = ari_client::Client::builder_with_runtime(
        "http://pbx:8088",
        "asterisk",
        "s3cret",
        rt.clone(),
    )
    .rng_seed(7)
    .keepalive(None);
    rt.block_on(b.connect())
        .expect("settles")
        .expect("connects")
}

/// A connected client with `start(["hello"])` done; returns the server side of its socket.
pub fn started(rt: &FakeRt) -> (C, WsHandle) {
    info_only(rt);
    let client = connect(rt);
    let c = client.clone();
    let start = rt.start(async move { c.start(&["hello"]).await });
    assert!(rt.sockets() >= 1);
    start.take().expect("start completed").expect("started");
    (client, rt.socket(rt.sockets() - 1))
}
