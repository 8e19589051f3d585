//! The harness every case gets: a runtime, a mock server, fast client options, and
//! runtime-agnostic helpers (sleep, liveness bounds, waiting for a condition).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::time::Duration;

use ari_client::events::StasisStart;
use ari_client::{
    Channel, Client, ClientBuilder, EventStream, Incoming, Keepalive, ReconnectPolicy, Runtime,
};
use ari_testkit::{MockServer, PlaceCall, SimConfig};
use futures::StreamExt;

/// Liveness bound for one awaited step of a case: a step that takes longer fails the case
/// instead of hanging it. Generous on purpose: it is not a timing assertion.
pub const LIVENESS: Duration = Duration::from_secs(30);

/// Liveness bound for a whole case.
pub const CASE_LIVENESS: Duration = Duration::from_secs(120);

/// The simulator's dialplan: `wait@conformance` answers and waits (a channel outside
/// Stasis); `back@conformance` plays a prompt and hands the call back to the application
/// `conf-back` (arguments `again`).
pub const DIALPLAN: &str = "[conformance]\nexten => wait,1,Answer()\n same => n,Wait(600)\n\
    exten => back,1,Playback(beep)\n same => n,Stasis(conf-back,again)\n same => n,Hangup()\n";

/// A simulated Asterisk tuned for fast tests: short media (every sound 40 ms, digits
/// 30 ms), SIP phones that answer after 20 ms, the PJSIP endpoints `alice` and `bob`, and
/// [`DIALPLAN`].
pub fn fast_sim_config() -> SimConfig {
    let mut cfg = SimConfig {
        sip_answer_delay: Duration::from_millis(20),
        sip_endpoints: vec!["alice".to_string(), "bob".to_string()],
        dialplan: DIALPLAN.to_string(),
        ..SimConfig::default()
    };
    for d in cfg.media_durations.values_mut() {
        *d = Duration::from_millis(40);
    }
    for k in ["digits/0", "digits/1", "digits/2", "digits/3", "digits/4"] {
        cfg.media_durations
            .insert(k.to_string(), Duration::from_millis(30));
    }
    // Long enough to be controlled (paused, restarted) before it ends.
    cfg.media_durations
        .insert("tt-monkeys".to_string(), Duration::from_secs(20));
    cfg.wall_clock_base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(cfg.wall_clock_base_ms);
    cfg
}

/// What a case runs with: the adapter's runtime and a [`MockServer`] (simulated Asterisk
/// with [`fast_sim_config`]), plus helpers that only use [`Runtime`] so they work the same
/// on every adapter.
pub struct Harness<R: Runtime> {
    runtime: R,
    server: MockServer,
    /// Set by [`Harness::over_outbound`]: the client of the connection the simulated
    /// Asterisk opened, handed out by [`Harness::client`] and [`Harness::started`].
    outbound: Option<Client<R>>,
    /// The applications Asterisk registers on that connection.
    outbound_apps: Vec<String>,
    /// What must live as long as the harness (the outbound server).
    keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl<R: Runtime> fmt::Debug for Harness<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("runtime", &self.runtime)
            .field("server", &self.server)
            .field("outbound", &self.outbound.is_some())
            .finish()
    }
}

impl<R: Runtime> Harness<R> {
    /// A harness with a fresh mock server (simulator on, real time, [`fast_sim_config`]).
    pub fn new(runtime: R) -> Self {
        let server = MockServer::builder().sim_config(fast_sim_config()).start();
        Harness::with_server(runtime, server)
    }

    /// A harness around a mock server of the caller's (e.g. one that dials the application).
    pub(crate) fn with_server(runtime: R, server: MockServer) -> Self {
        Harness {
            runtime,
            server,
            outbound: None,
            outbound_apps: Vec::new(),
            keep: None,
        }
    }

    /// Makes [`Harness::client`] and [`Harness::started`] hand out `client` (a client the
    /// application did not connect itself) on which Asterisk registered `apps`, keeping `keep` alive as long as the harness.
    pub(crate) fn set_outbound(
        &mut self,
        client: Client<R>,
        apps: &[&str],
        keep: Box<dyn std::any::Any + Send + Sync>,
    ) {
        self.outbound = Some(client);
        self.outbound_apps = apps.iter().map(|a| a.to_string()).collect();
        self.keep = Some(keep);
    }

    /// Whether the harness's client is one the simulated Asterisk dialled (see
    /// [`Harness::over_outbound`]).
    pub fn is_outbound(&self) -> bool {
        self.outbound.is_some()
    }

    /// The mock server.
    pub fn server(&self) -> &MockServer {
        &self.server
    }

    /// The adapter's runtime.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// A client builder for `server` with fast options: 5 s request timeout, 2 s connect
    /// timeout, reconnects after 20 ms doubling to 200 ms (no jitter, unlimited), keepalive
    /// off, channel listeners lingering 500 ms after `StasisEnd` (long enough that a
    /// starved reader on a loaded machine does not end them before a `ChannelDestroyed` already
    /// sent).
    pub fn builder_for(&self, server: &MockServer) -> ClientBuilder<R> {
        self.builder_with(&server.base_url(), server.username(), server.password())
    }

    /// A client builder with the fast options of [`Harness::builder_for`] for any URL.
    pub fn builder_with(&self, url: &str, user: &str, password: &str) -> ClientBuilder<R> {
        Client::builder_with_runtime(url, user, password, self.runtime.clone())
            .request_timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .reconnect(Self::fast_reconnect(None))
            .keepalive(None::<Keepalive>)
            .stasis_end_linger(Some(Duration::from_millis(500)))
    }

    /// A client builder for the harness's server (see [`Harness::builder_for`]).
    pub fn builder(&self) -> ClientBuilder<R> {
        self.builder_for(&self.server)
    }

    /// The reconnect policy of the fast options, with at most `max_attempts` attempts.
    pub fn fast_reconnect(max_attempts: Option<u32>) -> ReconnectPolicy {
        ReconnectPolicy::default()
            .initial_delay(Duration::from_millis(20))
            .multiplier(2.0)
            .max_delay(Duration::from_millis(200))
            .jitter(0.0)
            .max_attempts(max_attempts)
    }

    /// A connected client of the harness's server.
    ///
    /// Over an outbound connection ([`Harness::over_outbound`]) this is the client of the
    /// connection the simulated Asterisk opened.
    pub async fn client(&self) -> Client<R> {
        if let Some(client) = &self.outbound {
            return client.clone();
        }
        let b = self.builder();
        self.within("connect", LIVENESS, b.connect())
            .await
            .expect("the client connects to the mock server")
    }

    /// A connected client with `apps` started (events WebSocket open).
    ///
    /// Over an outbound connection ([`Harness::over_outbound`]) Asterisk registered the
    /// applications of its configuration when it connected: `apps` must be among them.
    pub async fn started(&self, apps: &[&str]) -> Client<R> {
        if let Some(client) = &self.outbound {
            let registered = &self.outbound_apps;
            for app in apps {
                assert!(
                    registered.iter().any(|r| r == app),
                    "{app} is not among the applications Asterisk dials for: {registered:?}"
                );
            }
            return client.clone();
        }
        let client = self.client().await;
        self.within("start", LIVENESS, client.start(apps))
            .await
            .expect("the applications start");
        client
    }

    /// Sleeps on the adapter's timers.
    pub async fn sleep(&self, d: Duration) {
        let at = self.runtime.now() + d;
        self.runtime.sleep_until(at).await;
    }

    /// Runs `fut` (a future or anything `.await`able, such as a `Call`), failing the case with `what` if it takes longer than `limit` (a liveness
    /// bound: the case must not hang).
    pub async fn within<F: IntoFuture>(&self, what: &str, limit: Duration, fut: F) -> F::Output {
        let fut = fut.into_future();
        let timer = self.runtime.sleep_until(self.runtime.now() + limit);
        let fut = std::pin::pin!(fut);
        let timer = std::pin::pin!(timer);
        match futures::future::select(fut, timer).await {
            futures::future::Either::Left((out, _)) => out,
            futures::future::Either::Right(((), _)) => {
                panic!("{what}: did not complete within {limit:?} (liveness)")
            }
        }
    }

    /// Runs `fut` within [`LIVENESS`].
    pub async fn live<F: IntoFuture>(&self, what: &str, fut: F) -> F::Output {
        self.within(what, LIVENESS, fut).await
    }

    /// Runs a whole case within [`CASE_LIVENESS`].
    pub async fn run_case<F: Future<Output = ()>>(&self, name: &str, case: F) {
        self.within(name, CASE_LIVENESS, case).await
    }

    /// Waits until `cond()` holds, checking every 5 ms, failing with `what` after
    /// [`LIVENESS`].
    pub async fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        self.within(what, LIVENESS, async {
            while !cond() {
                self.sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// Runs blocking `f` (e.g. a blocking [`MockServer`] call) on its own thread and awaits
    /// its result without blocking the runtime.
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        self.live("blocking call", rx)
            .await
            .expect("the blocking call completes")
    }

    /// Places a simulated inbound call into `call.app` and returns its channel once the
    /// client has seen its `StasisStart` (the client must have started the app).
    pub async fn incoming_call(&self, client: &Client<R>, call: PlaceCall) -> Channel<R> {
        self.incoming_call_on(&self.server, client, call).await
    }

    /// [`Harness::incoming_call`] on another simulated Asterisk than the harness's own (one a
    /// case started itself, e.g. a restarted one).
    pub async fn incoming_call_on(
        &self,
        server: &MockServer,
        client: &Client<R>,
        call: PlaceCall,
    ) -> Channel<R> {
        let mut starts = client.stream::<StasisStart>();
        let id = server
            .place_call(call)
            .expect("the simulator places the call");
        self.live("StasisStart of the incoming call", async {
            loop {
                let (event, channel) = starts
                    .next()
                    .await
                    .expect("the stream lives")
                    .expect("no lag");
                if event.channel.id == id {
                    return channel;
                }
            }
        })
        .await
    }

    /// The next call `incoming` hands out, within the liveness bound.
    pub async fn next_incoming(
        &self,
        what: &str,
        incoming: &mut Incoming<R>,
    ) -> (StasisStart, Channel<R>, EventStream) {
        self.live(what, incoming.next())
            .await
            .expect("the stream lives")
            .expect("no lag")
    }

    /// [`Harness::incoming_call`] from `PJSIP/alice`, then answered.
    pub async fn answered_call(&self, client: &Client<R>, app: &str) -> Channel<R> {
        let channel = self
            .incoming_call(client, PlaceCall::new("PJSIP/alice", app))
            .await;
        self.live("answer", channel.answer())
            .await
            .expect("the call is answered");
        channel
    }
}
