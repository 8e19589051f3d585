//! ARI outbound WebSocket: the simulated Asterisk (`MockServerBuilder::outbound`) dials an
//! [`OutboundServer`] of the adapter's runtime. Per-call calls with REST over the connection,
//! wrong credentials (401, counted), a persistent Asterisk reconnecting into the same client,
//! 100 concurrent per-call connections, and shutdown with calls live.
//!
//! These cases need the server side of the shared stack, so they take a
//! `Harness<Stack<E, C>>` (what every adapter's runtime is) rather than any [`Runtime`].
//!
//! [`Runtime`]: ari_client::Runtime

use std::future::IntoFuture;
use std::time::Duration;

use ari_client::runtime::{Connector, Executor};
use ari_client::{ConnectionType, OutboundOptions, OutboundServer, Stack};
use ari_testkit::{MockServer, OutboundConfig, PlaceCall, Transport};
use futures::future::join_all;
use futures::StreamExt;

use crate::Harness;

const USER: &str = "obuser";
const SECRET: &str = "obsecret";
const PATH: &str = "/ari-ob";

/// The options every case starts from: [`USER`]/[`SECRET`], [`PATH`] and the `ari`
/// subprotocol required, connection type `t`.
fn options<E: Executor, C: Connector>(
    runtime: &Stack<E, C>,
    t: ConnectionType,
) -> OutboundOptions<E, C> {
    OutboundOptions::new(runtime.clone())
        .credentials(USER, SECRET)
        .expect("valid credentials")
        .path(PATH)
        .require_subprotocol(true)
        .connection_type(t)
}

/// Binds `options` on a free loopback port with the harness's runtime.
async fn bind<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
    options: OutboundOptions<E, C>,
) -> OutboundServer<E, C> {
    h.live("bind", options.bind(loopback()))
        .await
        .expect("the outbound server binds")
}

/// An outbound server of the harness's runtime on a free loopback port (see [`options`]).
async fn server<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
    t: ConnectionType,
) -> OutboundServer<E, C> {
    bind(h, options(h.runtime(), t)).await
}

/// A per-call outbound server and a simulated Asterisk dialling it for each call of `hello`
/// (see [`per_call`]).
async fn per_call_setup<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) -> (OutboundServer<E, C>, MockServer) {
    let ob = server(h, ConnectionType::PerCall).await;
    let mock = MockServer::builder().outbound(per_call(&ob)).start();
    (ob, mock)
}

/// A persistent outbound server and a simulated Asterisk dialling it for `hello` with
/// `password`, retrying every 20 ms, 3 times.
async fn persistent_setup<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
    password: &str,
) -> (OutboundServer<E, C>, MockServer) {
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = MockServer::builder()
        .outbound(
            OutboundConfig::persistent(&uri(&ob), ["hello"])
                .credentials(USER, password)
                .reconnect(Duration::from_millis(20), 3),
        )
        .start();
    (ob, mock)
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

fn uri<E: Executor, C: Connector>(s: &OutboundServer<E, C>) -> String {
    format!("ws://{}{PATH}", s.local_addr())
}

/// A `websocket_client.conf` section dialling `s` once for the app `hello`, redialling a
/// dropped connection after 20 ms, 3 times at most.
fn persistent<E: Executor, C: Connector>(s: &OutboundServer<E, C>) -> OutboundConfig {
    OutboundConfig::persistent(&uri(s), ["hello"])
        .credentials(USER, SECRET)
        .reconnect(Duration::from_millis(20), 3)
}

/// A `per_call_config` section dialling `s` for the app `hello`, with short delays.
fn per_call<E: Executor, C: Connector>(s: &OutboundServer<E, C>) -> OutboundConfig {
    per_call_for(s, "hello")
}

/// A `per_call_config` section dialling `s` for the app `app`, with short delays.
fn per_call_for<E: Executor, C: Connector>(s: &OutboundServer<E, C>, app: &str) -> OutboundConfig {
    OutboundConfig::per_call(&uri(s), [app])
        .credentials(USER, SECRET)
        .stasis_start_delay(Duration::from_millis(20))
        .close_after_stasis_end(Duration::from_millis(50))
}

/// One call on a per-call connection: the call arrives as `(client, StasisStart, channel,
/// events)` with the application named `<app>:<channel name>`; answer, a REST GET and the
/// hangup all travel over the outbound socket (the simulator logs them as WebSocket
/// requests); the server counts one accepted connection and one call.
pub async fn outbound_per_call_connection_is_a_call_with_rest_over_it<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = per_call_setup(h).await;
    let channel_id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let call = h
        .live("the call", ob.next_call())
        .await
        .expect("a call before shutdown");
    assert!(
        call.start.application.starts_with("hello:PJSIP/alice-"),
        "{}",
        call.start.application
    );
    assert_eq!(call.channel.id(), channel_id);
    assert_eq!(call.start.channel.id, channel_id);
    assert!(call.peer.ip().is_loopback(), "{}", call.peer);
    h.live("answer", call.channel.answer())
        .await
        .expect("answer over the outbound socket");
    let info = h
        .live("asterisk info", call.client.asterisk().get_info())
        .await
        .expect("REST over the socket");
    assert!(info.system.is_some());
    h.live("hangup", call.channel.hangup())
        .await
        .expect("hangup");
    let requests = mock.requests();
    let answers: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/answer"))
        .collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].transport, Transport::WebSocket);
    assert!(
        requests.iter().all(|r| r.transport == Transport::WebSocket),
        "every request of the call went over the outbound socket: {requests:?}"
    );
    let stats = ob.stats();
    assert_eq!(
        (stats.accepted, stats.calls, stats.refused, stats.failed),
        (1, 1, 0, 0),
        "{stats:?}"
    );
}

/// Asterisk presenting the wrong password is answered 401 (Asterisk sees the status and
/// keeps retrying), each refusal counted as unauthorized; no connection is accepted.
pub async fn outbound_wrong_credentials_are_refused_with_401_and_counted<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = persistent_setup(h, "not-the-secret").await;
    h.eventually("two refusals counted", || ob.stats().unauthorized >= 2)
        .await;
    let stats = ob.stats();
    assert_eq!(stats.accepted, 0, "{stats:?}");
    assert!(stats.refused >= stats.unauthorized, "{stats:?}");
    // Asterisk saw the 401 answers: failed attempts, and it keeps retrying.
    h.eventually("Asterisk saw two refusals", || {
        mock.outbound_stats().refused >= 2
    })
    .await;
    let seen = mock.outbound_stats();
    assert_eq!(seen.last_refused_status, 401, "{seen:?}");
    assert_eq!(seen.connected, 0, "{seen:?}");
}

/// A persistent Asterisk that drops its connection reconnects into the same client: a call
/// placed while it was away reaches the client (queued by Asterisk, flushed on reconnect),
/// the server counts the replacement, and REST goes over the new socket.
pub async fn outbound_reconnecting_asterisk_goes_on_in_the_same_client<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = persistent_setup(h, SECRET).await;
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    assert_eq!(conn.user.as_deref(), Some(USER));
    assert_eq!(conn.path, PATH);
    let client = conn.client;
    let mut incoming = client.incoming();
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (first, _, _) = h.next_incoming("first call", &mut incoming).await;
    assert_eq!(first.application, "hello");
    assert_eq!(mock.drop_websocket("hello"), 1);
    let second = mock
        .place_call(PlaceCall::new("PJSIP/bob", "hello"))
        .expect("the simulator places the call");
    let (start, channel, _) = h.next_incoming("second call", &mut incoming).await;
    assert_eq!(start.channel.id, second);
    h.eventually("the reconnect replaced the connection", || {
        ob.stats().replaced >= 1
    })
    .await;
    h.live("answer", channel.answer())
        .await
        .expect("REST over the new socket");
    let stats = ob.stats();
    assert_eq!((stats.accepted, stats.replaced), (2, 1), "{stats:?}");
    // The reconnect was not yielded as a new Asterisk (the replacement is counted after
    // the socket went to the existing client, so the queue is final here).
    assert!(
        futures::FutureExt::now_or_never(ob.next()).is_none(),
        "a reconnect is not a new Asterisk"
    );
}

/// Two Asterisks on one host (or behind one NAT, proxy or load balancer: one address to the
/// application) with the same `websocket_client` settings both dial a persistent server:
/// each is a connection of its own with its own client — not one Asterisk "reconnecting"
/// over the other's live socket, which would close that socket and make the two take turns
/// for ever — and each one's calls reach its client and are answered over its own socket.
pub async fn outbound_two_asterisks_on_one_host_get_a_client_each<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let asterisk = |id: &str| {
        MockServer::builder()
            .asterisk_id(id)
            .outbound(persistent(&ob))
            .start()
    };
    let mock_a = asterisk("02:00:00:00:00:0a");
    let a = h
        .live("the first Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mock_b = asterisk("02:00:00:00:00:0b");
    let b = h
        .live("the second Asterisk is a connection of its own", ob.next())
        .await
        .expect("a connection");
    each_asterisk_serves_its_own_call(h, [(&mock_a, &a), (&mock_b, &b)]).await;
    let stats = ob.stats();
    assert_eq!((stats.accepted, stats.replaced), (2, 0), "{stats:?}");
    for mock in [&mock_a, &mock_b] {
        let seen = mock.outbound_stats();
        assert_eq!(seen.connected, 1, "connected once, never dropped: {seen:?}");
    }
}

/// The application starts (or restarts, a deploy) while a persistent Asterisk has calls
/// waiting for it: Asterisk queued their events while nobody listened and sends them first
/// thing on the new connection, before [`OutboundServer::next`] has handed its client out.
/// The calls are not lost: `client.incoming()` taken from the yielded connection gets the
/// waiting call, with its events from the `StasisStart` on, and answers it over the socket.
pub async fn outbound_persistent_calls_queued_before_the_app_started_are_not_lost<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    // A free port where the application is not listening yet.
    let port = std::net::TcpListener::bind(loopback())
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mock = MockServer::builder()
        .outbound(
            OutboundConfig::persistent(&format!("ws://{addr}{PATH}"), ["hello"])
                .credentials(USER, SECRET)
                .reconnect(Duration::from_millis(20), 3),
        )
        .start();
    let waiting = mock
        .place_call(PlaceCall {
            dtmf: "4".into(),
            dtmf_delay: Duration::from_millis(1),
            ..PlaceCall::new("PJSIP/alice", "hello")
        })
        .expect("the simulator places the call (the app is registered, not connected)");
    h.eventually("Asterisk tried and failed to connect", || {
        mock.outbound_stats().failed >= 1
    })
    .await;
    let ob = h
        .live(
            "bind",
            options(h.runtime(), ConnectionType::Persistent).bind(addr),
        )
        .await
        .expect("the outbound server binds");
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let in_stasis: Vec<_> = h
        .live("the calls in Stasis", conn.in_stasis.collect::<Vec<_>>())
        .await;
    assert!(
        in_stasis.is_empty(),
        "the waiting call comes with its StasisStart, not again as already in Stasis"
    );
    let mut incoming = conn.incoming;
    let (start, channel, mut events) = h.next_incoming("the call that waited", &mut incoming).await;
    assert_eq!(start.channel.id, waiting);
    h.live("answer", channel.answer())
        .await
        .expect("answer over the socket");
    let mut names = Vec::new();
    while !names.iter().any(|n| n == "ChannelStateChange") {
        let event = h
            .live("the call's events", events.next())
            .await
            .expect("the stream lives")
            .expect("no lag");
        names.push(event.type_name().to_string());
    }
}

/// 100 calls at once, each on its own connection: every one is yielded once, answered and
/// hung up over its own socket; the simulator is left with no channel.
pub async fn outbound_hundred_concurrent_per_call_connections<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = per_call_setup(h).await;
    let mut placed = std::collections::HashSet::new();
    for i in 0..100 {
        placed.insert(
            mock.place_call(PlaceCall::new(&format!("PJSIP/c{i}"), "hello"))
                .expect("the simulator places the call"),
        );
    }
    let mut calls = Vec::new();
    for _ in 0..100 {
        calls.push(
            h.live("a call", ob.next_call())
                .await
                .expect("a call before shutdown"),
        );
    }
    let yielded: std::collections::HashSet<String> =
        calls.iter().map(|c| c.channel.id().to_string()).collect();
    assert_eq!(yielded, placed, "each call yielded exactly once");
    let handled = calls.iter().map(|call| async move {
        call.channel.answer().await?;
        call.channel.hangup().await
    });
    for r in h
        .live("answer and hang up 100 calls", join_all(handled))
        .await
    {
        r.expect("answer and hang up");
    }
    let stats = ob.stats();
    assert_eq!(
        (stats.accepted, stats.calls, stats.failed),
        (100, 100, 0),
        "{stats:?}"
    );
    assert!(mock
        .with_sim(|sim, _| sim.channel_ids().is_empty())
        .expect("the simulator runs"));
}

/// Shutdown with two calls: the one that ended has its connection closed by Asterisk (after
/// StasisEnd) within the grace period; the live one is closed by the server at the
/// deadline (counted); no call is yielded afterwards.
pub async fn outbound_shutdown_closes_live_calls_at_the_deadline<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = per_call_setup(h).await;
    mock.place_call(PlaceCall::new("PJSIP/done", "hello"))
        .expect("the simulator places the call");
    mock.place_call(PlaceCall::new("PJSIP/live", "hello"))
        .expect("the simulator places the call");
    let mut calls = Vec::new();
    for _ in 0..2 {
        calls.push(
            h.live("a call", ob.next_call())
                .await
                .expect("a call before shutdown"),
        );
    }
    let done = calls
        .iter()
        .find(|c| c.start.channel.name.starts_with("PJSIP/done"))
        .expect("the call that ends");
    h.live("hangup", done.channel.hangup())
        .await
        .expect("hangup");
    let closed = h
        .live(
            "shutdown",
            ob.shutdown(Duration::from_millis(500)).into_future(),
        )
        .await;
    assert_eq!(closed, 1, "only the live call was closed by the shutdown");
    assert!(
        h.live("next_call after shutdown", ob.next_call())
            .await
            .is_none(),
        "no calls after shutdown"
    );
}

/// A per-call connection Asterisk loses mid-call is redialled at once for the same channel
/// (`<app>:<channel name>` in its first frame): the server hands it to the call's client,
/// so the same [`OutboundCall`](ari_client::OutboundCall) goes on — its connection
/// listeners see `Connected { reconnected: true }`, REST goes over the new socket, the
/// call's event stream gets the `StasisEnd` of the hangup — and no new call is yielded.
pub async fn outbound_per_call_redial_mid_call_goes_on_in_the_same_call<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = per_call_setup(h).await;
    let channel_id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let mut call = h
        .live("the call", ob.next_call())
        .await
        .expect("a call before shutdown");
    h.live("answer", call.channel.answer())
        .await
        .expect("answer over the first socket");
    let mut connection = call.client.connection_events();
    assert_eq!(
        mock.drop_websocket(call.start.application.as_str()),
        1,
        "the call's connection is dropped"
    );
    h.live("Connected { reconnected: true }", async {
        loop {
            match connection.next().await {
                Some(Ok(ari_client::ConnectionEvent::Connected { reconnected, .. })) => {
                    assert!(reconnected, "the redial is a reconnection of the call");
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(lagged)) => panic!("connection events lagged: {lagged:?}"),
                None => panic!("the client closed instead of going on"),
            }
        }
    })
    .await;
    let stats = ob.stats();
    assert_eq!(
        (stats.accepted, stats.resumed, stats.calls, stats.failed),
        (2, 1, 1, 0),
        "{stats:?}"
    );
    assert!(
        futures::FutureExt::now_or_never(ob.next_call()).is_none(),
        "the redial is not a new call"
    );
    let info = h
        .live("asterisk info", call.client.asterisk().get_info())
        .await
        .expect("REST over the redialled socket");
    assert!(info.system.is_some());
    h.live("hangup", call.channel.hangup())
        .await
        .expect("hangup over the redialled socket");
    h.live("StasisEnd on the call's stream", async {
        loop {
            match call.events.next().await {
                Some(Ok(ari_client::Event::StasisEnd(end))) => {
                    assert_eq!(end.channel.id, channel_id);
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(lagged)) => panic!("the call's events lagged: {lagged:?}"),
                None => panic!("the call's events ended before StasisEnd"),
            }
        }
    })
    .await;
    let requests = mock.requests();
    assert!(
        requests.iter().all(|r| r.transport == Transport::WebSocket),
        "{requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method == "DELETE" && r.path.contains(&channel_id))
            .count(),
        1
    );
    assert_eq!(mock.outbound_stats().gave_up, 0);
}

/// A self-signed certificate for `127.0.0.1` and `localhost`: the server's TLS
/// configuration and the certificate (DER) a client must trust. Its common name is
/// `127.0.0.1`: Asterisk checks the host of a `wss://` uri against the common name and the
/// DNS names of the certificate only, never an IP address entry.
fn self_signed() -> (std::sync::Arc<ari_client::rustls::ServerConfig>, Vec<u8>) {
    use ari_client::rustls;
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate parameters");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let signing_key = rcgen::KeyPair::generate().expect("a key");
    let cert = params
        .self_signed(&signing_key)
        .expect("a self-signed certificate");
    let ck = rcgen::CertifiedKey { cert, signing_key };
    let der = ck.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("a server configuration");
    (std::sync::Arc::new(config), der)
}

/// `wss://`: an outbound server with a rustls configuration (a self-signed certificate made
/// here); Asterisk dialling `ws://` to it fails the handshake (counted, nothing accepted);
/// Asterisk dialling `wss://` and trusting the certificate completes a call with REST over
/// the TLS socket.
pub async fn outbound_tls_call_with_rest_over_wss<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let (tls, der) = self_signed();
    let ob = bind(h, options(h.runtime(), ConnectionType::PerCall).tls(tls)).await;

    // Plain WebSocket to a TLS server: no upgrade.
    let plain = MockServer::builder()
        .outbound(per_call(&ob).reconnect(Duration::from_millis(10), 1))
        .start();
    plain
        .place_call(PlaceCall::new("PJSIP/plain", "hello"))
        .expect("the simulator places the call");
    h.eventually("Asterisk gives the plain call up", || {
        plain.outbound_stats().gave_up == 1
    })
    .await;
    h.eventually("the failed handshake is counted", || ob.stats().failed >= 1)
        .await;
    assert_eq!(ob.stats().accepted, 0, "{:?}", ob.stats());
    assert_eq!(plain.outbound_stats().connected, 0);

    let wss = format!("wss://{}{PATH}", ob.local_addr());
    let mock = MockServer::builder()
        .outbound(
            OutboundConfig::per_call(&wss, ["hello"])
                .credentials(USER, SECRET)
                .trust_certificate(der)
                .stasis_start_delay(Duration::from_millis(20))
                .close_after_stasis_end(Duration::from_millis(50)),
        )
        .start();
    let channel_id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let call = h
        .live("the call over wss", ob.next_call())
        .await
        .expect("a call before shutdown");
    assert_eq!(call.channel.id(), channel_id);
    assert!(call.start.application.starts_with("hello:PJSIP/alice-"));
    h.live("answer", call.channel.answer())
        .await
        .expect("answer over wss");
    let info = h
        .live("asterisk info", call.client.asterisk().get_info())
        .await
        .expect("REST over wss");
    assert!(info.system.is_some());
    h.live("hangup", call.channel.hangup())
        .await
        .expect("hangup over wss");
    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests.iter().all(|r| r.transport == Transport::WebSocket));
    let seen = mock.outbound_stats();
    assert_eq!(
        (seen.connected, seen.failed, seen.refused),
        (1, 0, 0),
        "{seen:?}"
    );
    assert_eq!((ob.stats().accepted, ob.stats().calls), (1, 1));
}

/// Every application the cases run [`Harness::over_outbound`] use.
pub const OUTBOUND_SUITE_APPS: &[&str] = &[
    "conf-apps",
    "conf-channels",
    "conf-bridges",
    "conf-playbacks",
    "conf-recordings",
    "conf-userevent",
    "conf-instances",
    "conf-early",
    "conf-errors",
    "conf-panics",
    "conf-ended",
    "conf-late-handle",
    "conf-release",
    "hello",
];

impl<E: Executor, C: Connector> Harness<Stack<E, C>> {
    /// A harness whose simulated Asterisk dials the application over a persistent
    /// outbound WebSocket (`websocket_client.conf` + `ari.conf` `type=outbound_websocket`)
    /// registering [`OUTBOUND_SUITE_APPS`]; [`Harness::client`] and [`Harness::started`]
    /// then hand out that connection's client (with the fast options of
    /// [`Harness::builder_for`]), so a case written for a client that connected itself runs
    /// unchanged with REST over the outbound socket.
    pub async fn over_outbound(runtime: Stack<E, C>) -> Self {
        let options = options(&runtime, ConnectionType::Persistent).client(|b| {
            b.request_timeout(Duration::from_secs(5))
                .keepalive(None::<ari_client::Keepalive>)
                .stasis_end_linger(Some(Duration::from_millis(500)))
        });
        let ob = options
            .bind(loopback())
            .await
            .expect("the outbound server binds");
        let server = MockServer::builder()
            .sim_config(crate::fast_sim_config())
            .outbound(
                OutboundConfig::persistent(&uri(&ob), OUTBOUND_SUITE_APPS.iter().copied())
                    .credentials(USER, SECRET)
                    .reconnect(Duration::from_millis(20), 50),
            )
            .start();
        let mut h = Harness::with_server(runtime, server);
        let conn = h
            .live("Asterisk connects to the application", ob.next())
            .await
            .expect("a connection");
        assert_eq!(conn.user.as_deref(), Some(USER));
        // The lookup of calls already in Stasis ends (nothing is) before the case counts
        // subscriptions or requests.
        let in_stasis: Vec<_> = h
            .live(
                "the calls already in Stasis",
                conn.in_stasis.collect::<Vec<_>>(),
            )
            .await;
        assert!(in_stasis.is_empty(), "nothing in Stasis at start");
        h.set_outbound(conn.client, OUTBOUND_SUITE_APPS, Box::new(ob));
        h
    }

    /// After a case run over [`Harness::over_outbound`]: Asterisk connected once (the
    /// connection never dropped) and every ARI request of the case travelled over the
    /// outbound socket, none over HTTP.
    pub fn assert_everything_went_over_the_outbound_socket(&self) {
        let stats = self.server().outbound_stats();
        assert_eq!(stats.connected, 1, "one outbound connection: {stats:?}");
        let requests = self.server().requests();
        let http: Vec<_> = requests
            .iter()
            .filter(|r| r.transport != Transport::WebSocket && !r.path.starts_with("/_"))
            .collect();
        assert!(http.is_empty(), "requests over HTTP: {http:?}");
    }
}

/// The harness's runtime with its executor wrapped in a [`CountedRuntime`]: the tasks the
/// outbound server and its clients spawn are counted while alive.
///
/// [`CountedRuntime`]: crate::CountedRuntime
fn counted<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) -> (crate::CountedRuntime<E>, Stack<crate::CountedRuntime<E>, C>) {
    let counted = crate::CountedRuntime::new(h.runtime().executor().clone());
    let stack = Stack::builder_with(counted.clone(), h.runtime().connector().clone())
        .build()
        .expect("a stack");
    (counted, stack)
}

/// Two Asterisks, each with its own connection: a call placed on each reaches that
/// Asterisk's client, and its answer goes back to that Asterisk only.
async fn each_asterisk_serves_its_own_call<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
    asterisks: [(&MockServer, &ari_client::OutboundConnection<Stack<E, C>>); 2],
) {
    for ((mock, conn), caller) in asterisks.into_iter().zip(["PJSIP/alice", "PJSIP/bob"]) {
        let mut incoming = conn.client.incoming();
        let id = mock
            .place_call(PlaceCall::new(caller, "hello"))
            .expect("the simulator places the call");
        let (start, channel, _) = h
            .next_incoming("the call reaches that Asterisk's client", &mut incoming)
            .await;
        assert_eq!(start.channel.id, id);
        h.live("answer", channel.answer())
            .await
            .expect("answer over that Asterisk's socket");
        let answers = mock
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/answer"))
            .count();
        assert_eq!(answers, 1, "the answer reached the Asterisk of the call");
    }
}

/// A simulated Asterisk ([`crate::fast_sim_config`], started `base_ms` after the epoch)
/// dialling `cfg`.
fn asterisk(cfg: OutboundConfig, base_ms: Option<u64>) -> MockServer {
    let mut sim = crate::fast_sim_config();
    if let Some(base) = base_ms {
        sim.wall_clock_base_ms = base;
    }
    MockServer::builder().sim_config(sim).outbound(cfg).start()
}

/// Asterisk restarts (a crash, `core restart now`) while a persistent application has a
/// call: the restarted Asterisk has none of the old calls and no event will ever say so,
/// then dials the application again — same address, credentials and `asterisk_id`, so the
/// new socket goes on in the same client. A wait on the old call ends with
/// [`Error::Ended`](ari_client::Error::Ended) instead of hanging (an IVR task per call would
/// leak), its event stream ends, and a call on the restarted Asterisk is served as usual.
pub async fn outbound_persistent_asterisk_restart_ends_the_previous_runs_calls<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    const BOOT: u64 = 1_795_691_627_914;
    let ob = server(h, ConnectionType::Persistent).await;
    let config = persistent(&ob);
    let first = asterisk(config.clone(), Some(BOOT));
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let client = conn.client;
    let mut incoming = conn.incoming;
    first
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, old, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", old.answer())
        .await
        .expect("answer over the socket");
    let hangup = old.once::<ari_client::events::ChannelHangupRequest>();
    let mut old_events = old.events();

    // Asterisk restarts: a new startup time, none of the old calls; it dials again.
    drop(first);
    let second = asterisk(config, Some(BOOT + 3_600_000));
    let err = h
        .live("the old call's wait ends", hangup.into_future())
        .await
        .expect_err("the old call cannot hang up any more");
    assert!(
        matches!(err, ari_client::Error::Ended { .. }),
        "the old call's wait: {err}"
    );
    let end = h
        .live("the old call's stream ends", async {
            loop {
                match old_events.next().await {
                    Some(Ok(_)) => {}
                    other => return other,
                }
            }
        })
        .await;
    assert!(end.is_none(), "the stream ended: {end:?}");
    let stats = ob.stats();
    assert_eq!((stats.accepted, stats.replaced), (2, 1), "{stats:?}");

    // The restarted Asterisk's calls are served as usual.
    let id = second
        .place_call(PlaceCall::new("PJSIP/bob", "hello"))
        .expect("the simulator places the call");
    let (start, new, _) = h.next_incoming("the new run's call", &mut incoming).await;
    assert_eq!(start.channel.id, id);
    h.live("answer the new call", new.answer())
        .await
        .expect("answer over the new socket");
    drop(client);
}

/// The application is redeployed: [`OutboundServer::shutdown`] with a call still going
/// (closed at the deadline), then the new version binds the same port at once — the port
/// is free once `shutdown` returned — and takes Asterisk's next call.
pub async fn outbound_shutdown_frees_the_port_for_the_next_run<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::PerCall).await;
    let addr = ob.local_addr();
    let mock = asterisk(per_call(&ob), None);
    let alice = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let call = h
        .live("the call", ob.next_call())
        .await
        .expect("a call before shutdown");
    h.live("answer", call.channel.answer())
        .await
        .expect("answer");
    let closed = h
        .live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    // (Asterisk may have given the first call back to the dialplan already.)
    let _ = mock.hangup(&alice);
    assert_eq!(closed, 1, "the live call was closed at the deadline");
    let again = h
        .live(
            "bind the same port",
            options(h.runtime(), ConnectionType::PerCall).bind(addr),
        )
        .await
        .expect("the port is free once shutdown returned");
    assert_eq!(again.local_addr(), addr);
    drop(ob);
    let id = mock
        .place_call(PlaceCall::new("PJSIP/bob", "hello"))
        .expect("the simulator places the call");
    let next = h
        .live("the next run's call", async {
            loop {
                let call = again.next_call().await.expect("a call");
                if call.channel.id() == id {
                    return call;
                }
            }
        })
        .await;
    h.live("answer", next.channel.answer())
        .await
        .expect("answer on the next run");
    h.live("hangup", next.channel.hangup())
        .await
        .expect("hangup on the next run");
    h.eventually("Asterisk closes the call's connection", || {
        !next.client.is_connected()
    })
    .await;
    // Shut down again and again, with nothing or little left to close (Asterisk may have
    // redialled the first call here): the port is free each time shutdown returns.
    let mut run = again;
    for _ in 0..20 {
        h.live("shutdown", run.shutdown(Duration::ZERO).into_future())
            .await;
        run = h
            .live(
                "bind the same port",
                options(h.runtime(), ConnectionType::PerCall).bind(addr),
            )
            .await
            .expect("the port is free once shutdown returned");
    }
}

/// A call that arrives while the application shuts down (its connection accepted, its
/// upgrade still in progress when `shutdown` is called) is not taken on: the server serves
/// no connection once stopping — nobody would handle the call, and Asterisk must get it
/// back (its attempts fail, the channel leaves Stasis and the dialplan goes on) — and
/// counts it as failed; no task is left behind.
pub async fn outbound_a_call_arriving_during_shutdown_is_handed_back_to_asterisk<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (tasks, stack) = counted(h);
    let ob = options(&stack, ConnectionType::PerCall)
        .bind(loopback())
        .await
        .expect("the outbound server binds");
    let mock = asterisk(
        per_call(&ob)
            // Long enough that shutdown comes first even on a loaded machine.
            .handshake_delay(Duration::from_millis(1500))
            .reconnect(Duration::from_millis(20), 2),
        None,
    );
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    h.eventually("the connection is accepted", || ob.stats().connections >= 1)
        .await;
    let closed = h
        .live(
            "shutdown",
            ob.shutdown(Duration::from_millis(100)).into_future(),
        )
        .await;
    assert_eq!(closed, 0, "no call was live");
    h.eventually("Asterisk gets the call back", || {
        mock.outbound_stats().gave_up == 1
    })
    .await;
    assert!(
        h.live("next_call after shutdown", ob.next_call())
            .await
            .is_none(),
        "no call is handed out after shutdown"
    );
    let stats = ob.stats();
    assert_eq!(stats.calls, 0, "{stats:?}");
    assert!(
        !mock
            .with_sim(|sim, _| sim.channel_ids())
            .expect("the simulator runs")
            .contains(&id),
        "the channel left Stasis and the dialplan hung it up"
    );
    drop(ob);
    h.eventually("no task is left", || tasks.alive() == 0).await;
}

/// Hundreds of calls at once, each on its own connection, each answered, played to and
/// hung up by the application's task for the call, which then drops it: afterwards nothing
/// is left — every connection closed on both sides, no channel, no task but the accept
/// loop; after `shutdown`, none at all.
pub async fn outbound_hundreds_of_per_call_calls_leave_nothing_behind<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    const CALLS: usize = 300;
    let (tasks, stack) = counted(h);
    let ob = options(&stack, ConnectionType::PerCall)
        .bind(loopback())
        .await
        .expect("the outbound server binds");
    let mock = asterisk(per_call(&ob), None);
    for i in 0..CALLS {
        mock.place_call(PlaceCall::new(&format!("PJSIP/c{i}"), "hello"))
            .expect("the simulator places the call");
    }
    let serve = async {
        let mut handled = Vec::new();
        for _ in 0..CALLS {
            let call = ob.next_call().await.expect("a call before shutdown");
            handled.push(async move {
                call.channel.answer().await?;
                let playback = call.channel.play("sound:hello-world").await?;
                playback.finished().await?;
                call.channel.hangup().await?;
                let mut events = call.events;
                while let Some(event) = events.next().await {
                    if matches!(event, Ok(ari_client::Event::StasisEnd(_))) {
                        break;
                    }
                }
                Ok::<_, ari_client::Error>(())
            });
        }
        join_all(handled).await
    };
    for r in h.live("serve the calls", serve).await {
        r.expect("answer, play, hang up");
    }
    let stats = ob.stats();
    // (On a starved machine Asterisk may drop a connection whose reader stalls past its
    // write timeout and redial it: a resumed call, still one call.)
    assert_eq!(
        (stats.accepted, stats.calls, stats.failed),
        (CALLS as u64 + stats.resumed, CALLS as u64, 0),
        "{stats:?}"
    );
    h.eventually("every channel is gone", || {
        mock.with_sim(|sim, _| sim.channel_ids().is_empty())
            .expect("the simulator runs")
    })
    .await;
    h.eventually("Asterisk closed every connection", || {
        mock.connected_apps().is_empty()
    })
    .await;
    h.eventually("only the accept loop is left", || tasks.alive() == 1)
        .await;
    assert_eq!(mock.outbound_stats().gave_up, 0);
    assert_eq!(
        h.live("shutdown", ob.shutdown(Duration::ZERO).into_future())
            .await,
        0,
        "no connection left to close"
    );
    drop(ob);
    h.eventually("no task is left", || tasks.alive() == 0).await;
}

/// The client options of an outbound server apply to its clients: with
/// `stasis_end_linger(Some(Duration::ZERO))`, a channel that left Stasis counts as ended at
/// once, so a wait taken on it after its `StasisEnd` (and one more round trip on the
/// socket) fails at once with [`Error::Ended`](ari_client::Error::Ended) instead of
/// lingering the default 2 s.
pub async fn outbound_clients_follow_the_stasis_end_linger_option<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = bind(
        h,
        options(h.runtime(), ConnectionType::PerCall)
            .client(|b| b.stasis_end_linger(Some(Duration::ZERO))),
    )
    .await;
    let mock = asterisk(per_call(&ob), None);
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let mut call = h
        .live("the call", ob.next_call())
        .await
        .expect("a call before shutdown");
    mock.hangup(&id).expect("the caller hangs up");
    h.live("StasisEnd", async {
        loop {
            match call.events.next().await {
                Some(Ok(ari_client::Event::StasisEnd(_))) => return,
                Some(Ok(_)) => {}
                other => panic!("the call's events ended before StasisEnd: {other:?}"),
            }
        }
    })
    .await;
    h.live("a round trip", call.client.asterisk().ping())
        .await
        .expect("REST over the socket");
    let late = call.client.channel(&id);
    let wait = late.once::<ari_client::events::ChannelHangupRequest>();
    match futures::FutureExt::now_or_never(wait.into_future()) {
        Some(Err(ari_client::Error::Ended { resource })) => {
            assert!(resource.contains(&id), "{resource}")
        }
        other => panic!("the wait on the ended channel: {other:?}"),
    }
}

/// A persistent server (the default connection type) that Asterisk dials per call (its
/// `websocket_client.conf` section says `per_call_config`): every call's connection comes
/// from the same address with the same credentials and path, but it is not a reconnect of
/// the previous one. Each call is a connection of its own with its call on its `incoming`,
/// answered over its own socket; none replaces another (which would close a live call's
/// socket and make Asterisk redial it, the calls taking turns for ever).
pub async fn outbound_persistent_server_dialled_per_call_keeps_each_call<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(per_call(&ob), None);
    let mut placed = std::collections::HashSet::new();
    for caller in ["PJSIP/alice", "PJSIP/bob", "PJSIP/carol"] {
        placed.insert(
            mock.place_call(PlaceCall::new(caller, "hello"))
                .expect("the simulator places the call"),
        );
    }
    let mut answered = std::collections::HashSet::new();
    let mut calls = Vec::new();
    for _ in 0..placed.len() {
        let mut conn = h
            .live("a connection per call", ob.next())
            .await
            .expect("a connection");
        let (start, channel, _) = h.next_incoming("its call", &mut conn.incoming).await;
        h.live("answer", channel.answer())
            .await
            .expect("answer over the call's socket");
        answered.insert(start.channel.id.to_string());
        calls.push((conn, channel));
    }
    assert_eq!(answered, placed);
    let stats = ob.stats();
    assert_eq!((stats.accepted, stats.replaced), (3, 0), "{stats:?}");
    assert_eq!(mock.outbound_stats().connected, 3, "no call was redialled");
}

/// A per-call connection lost while a request is on it (Asterisk is slow to answer, and the
/// network drops the socket): the request fails at once with a typed transport error
/// (`Closed`: the request may or may not have run) instead of waiting for its timeout;
/// Asterisk redials the call, and the same request made again goes over the new socket.
pub async fn outbound_per_call_request_in_flight_when_the_connection_drops_fails_typed<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = bind(
        h,
        options(h.runtime(), ConnectionType::PerCall)
            .client(|b| b.request_timeout(Duration::from_secs(600))),
    )
    .await;
    let mock = asterisk(per_call(&ob), None);
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let call = h
        .live("the call", ob.next_call())
        .await
        .expect("a call before shutdown");
    let mut connection = call.client.connection_events();
    mock.set_response_delay(Some(Duration::from_secs(600)));
    let answer = call.channel.answer().into_future();
    let mut answer = std::pin::pin!(answer);
    assert!(
        futures::FutureExt::now_or_never(answer.as_mut()).is_none(),
        "sent, not answered"
    );
    // (Whether it reached Asterisk or still waits to be written, it is on the socket.)
    h.sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.drop_websocket(call.start.application.as_str()), 1);
    let err = h
        .live("the request in flight ends", answer)
        .await
        .expect_err("no answer came");
    match &err {
        ari_client::Error::Transport(t) => {
            assert_eq!(t.kind, ari_client::TransportErrorKind::Closed, "{err}")
        }
        other => panic!("a transport error, not {other:?}"),
    }
    mock.set_response_delay(None);
    h.live("Connected { reconnected: true }", async {
        loop {
            if let Some(Ok(ari_client::ConnectionEvent::Connected {
                reconnected: true, ..
            })) = connection.next().await
            {
                return;
            }
        }
    })
    .await;
    h.live("answer again", call.channel.answer())
        .await
        .expect("answer over the redialled socket");
    assert_eq!(ob.stats().resumed, 1);
}

/// A per-call server that Asterisk dials once for all calls (its `websocket_client.conf`
/// section says `persistent`): every call on that connection is yielded by `next_call` and
/// answered over it — not only the first one, the others left in Stasis unseen.
pub async fn outbound_per_call_server_dialled_persistent_yields_every_call<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::PerCall).await;
    let mock = asterisk(persistent(&ob), None);
    let mut placed = std::collections::HashSet::new();
    for caller in ["PJSIP/alice", "PJSIP/bob", "PJSIP/carol"] {
        placed.insert(
            mock.place_call(PlaceCall::new(caller, "hello"))
                .expect("the simulator places the call"),
        );
    }
    let mut answered = std::collections::HashSet::new();
    let mut calls = Vec::new();
    for _ in 0..placed.len() {
        let call = h
            .live("every call of the connection", ob.next_call())
            .await
            .expect("a call before shutdown");
        h.live("answer", call.channel.answer())
            .await
            .expect("answer over the connection");
        answered.insert(call.channel.id().to_string());
        calls.push(call);
    }
    assert_eq!(answered, placed);
    let stats = ob.stats();
    assert_eq!((stats.accepted, stats.calls), (1, 3), "{stats:?}");
}

/// Asterisk drops and redials a persistent connection in the middle of a call: the call's
/// wait taken before the drop is not ended by it and gets the key the caller pressed
/// meanwhile (Asterisk queues it, or sends it on the new socket), and the call is hung up
/// over the new socket as usual.
pub async fn outbound_persistent_redial_mid_call_keeps_the_calls_waits<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the socket");
    let key = channel.once::<ari_client::events::ChannelDtmfReceived>();
    let mut ended = channel.once::<ari_client::events::StasisEnd>();
    assert_eq!(mock.drop_websocket("hello"), 1);
    mock.send_dtmf(&id, "5").expect("the caller presses 5");
    let dtmf = h
        .live("the key pressed across the redial", key.into_future())
        .await
        .expect("the wait survives the redial");
    assert_eq!(dtmf.digit, "5");
    assert!(
        futures::FutureExt::now_or_never(&mut ended).is_none(),
        "the call's other wait goes on"
    );
    h.eventually("the redial replaced the connection", || {
        ob.stats().replaced == 1
    })
    .await;
    h.live("hangup", channel.hangup())
        .await
        .expect("hangup over the new socket");
    h.live("StasisEnd", ended.into_future())
        .await
        .expect("StasisEnd of the hangup");
    drop(conn.client);
}

/// The application restarts (a deploy, a crash) while a per-call call is in Stasis:
/// Asterisk redials the call's connection to the new instance at once, sending only
/// `ApplicationRegistered` for `<app>:<channel name>` — no `StasisStart`, the channel is
/// already in Stasis (recorded on 20 and master). The new instance's `next_call` hands the
/// call out all the same (`resumed`, counted as adopted), found by asking Asterisk over the
/// connection, and controls it: the caller's key reaches its event stream, and its hangup
/// goes over the new socket.
pub async fn outbound_per_call_call_redialled_to_a_restarted_application_is_handed_out<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    redialled_to_a_restarted_application(h, "hello").await;
}

/// An application whose name holds `:` (`tenant:ivr`) served per call: Asterisk names the
/// call's application `tenant:ivr:PJSIP/alice-…` (`<app>:<channel name>`), which splits at
/// the `:` before the channel name, not the first. The simulated Asterisk dials the call
/// (its per-call configuration lists `tenant:ivr`), and after the application restarts the
/// redialled call — no `StasisStart` — is found in Stasis and handed out as in
/// [`outbound_per_call_call_redialled_to_a_restarted_application_is_handed_out`].
pub async fn outbound_per_call_application_with_a_colon_is_served_and_found_after_a_restart<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    redialled_to_a_restarted_application(h, "tenant:ivr").await;
}

/// An application whose name holds `:<technology>/` (`tenant:sales/ivr`, `sales` being a
/// valid channel technology name) served per call: its per-call application
/// `tenant:sales/ivr:PJSIP/alice-…` splits ambiguously without the configured names
/// (`ari_proto::outbound::split_call_application` takes the first split). Asterisk knows
/// its configuration, and the application knows the `Stasis()` application of each
/// channel: both compare the name whole (`call_channel_name`). The simulated Asterisk
/// dials the call, and after the application restarts the redialled call is found in
/// Stasis and handed out.
pub async fn outbound_per_call_application_with_a_technology_after_a_colon_is_found_after_a_restart<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    redialled_to_a_restarted_application(h, "tenant:sales/ivr").await;
}

/// A per-call call of `app` on `PJSIP/alice`, its application restarted while it is in
/// Stasis: the redialled call is handed out to the new instance, which controls it.
async fn redialled_to_a_restarted_application<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
    app: &str,
) {
    let restartable = |runtime: &Stack<E, C>| {
        options(runtime, ConnectionType::PerCall).resume_after(Duration::from_millis(50))
    };
    let ob = bind(h, restartable(h.runtime())).await;
    let addr = ob.local_addr();
    // Asterisk retries for 2 s, long enough for the new instance to bind.
    let mock = asterisk(
        per_call_for(&ob, app).reconnect(Duration::from_millis(50), 40),
        None,
    );
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", app))
        .expect("the simulator places the call");
    let first = h
        .live("the call", ob.next_call())
        .await
        .expect("a call before shutdown");
    assert!(!first.resumed, "a call with its StasisStart");
    assert_eq!(
        first.start.application,
        format!("{app}:{}", first.start.channel.name),
        "the call's application is `<app>:<channel name>`"
    );
    assert!(
        first.start.channel.name.starts_with("PJSIP/alice-"),
        "{}",
        first.start.channel.name
    );
    h.live("answer", first.channel.answer())
        .await
        .expect("answer over the first instance's socket");
    let application = first.start.application.to_string();

    // The first instance goes away with the call in Stasis; the next one binds the port.
    let closed = h
        .live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    assert_eq!(closed, 1, "the live call's connection was closed");
    drop(first);
    drop(ob);
    let again = h
        .live("bind the same port", restartable(h.runtime()).bind(addr))
        .await
        .expect("the port is free once shutdown returned");
    let mut call = h
        .live("the redialled call is handed out", again.next_call())
        .await
        .expect("a call before shutdown");
    assert!(call.resumed, "the call was already in Stasis");
    assert_eq!(call.channel.id(), id);
    assert_eq!(call.start.channel.id, id);
    assert_eq!(call.start.application, application);
    let stats = again.stats();
    assert_eq!(
        (stats.accepted, stats.calls, stats.adopted, stats.resumed),
        (1, 1, 1, 0),
        "{stats:?}"
    );

    // The new instance controls the call.
    mock.send_dtmf(&id, "7").expect("the caller presses 7");
    h.live("the key on the call's stream", async {
        loop {
            match call.events.next().await {
                Some(Ok(ari_client::Event::ChannelDtmfReceived(k))) => {
                    assert_eq!(k.digit, "7");
                    return;
                }
                Some(Ok(_)) => {}
                other => panic!("the call's events ended: {other:?}"),
            }
        }
    })
    .await;
    h.live("hangup", call.channel.hangup())
        .await
        .expect("hangup over the redialled socket");
    h.live("StasisEnd on the call's stream", async {
        loop {
            match call.events.next().await {
                Some(Ok(ari_client::Event::StasisEnd(end))) => {
                    assert_eq!(end.channel.id, id);
                    return;
                }
                Some(Ok(_)) => {}
                other => panic!("the call's events ended before StasisEnd: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(mock.outbound_stats().gave_up, 0);
}

/// Asterisk goes away and never comes back (stopped, crashed for good, cut off) under a
/// persistent connection with a call: after the server's `peer_timeout` the call's wait
/// fails with [`Error::AsteriskGone`](ari_client::Error::AsteriskGone), its event stream
/// ends, connection listeners see `PeerGone`, and the client counts it — instead of all of
/// them waiting for ever.
pub async fn outbound_persistent_asterisk_gone_for_good_ends_the_calls_waits<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = bind(
        h,
        options(h.runtime(), ConnectionType::Persistent)
            .peer_timeout(Some(Duration::from_millis(200))),
    )
    .await;
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let client = conn.client;
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the socket");
    let hangup = channel.once::<ari_client::events::ChannelHangupRequest>();
    let mut events = channel.events();
    let mut connection = client.connection_events();

    drop(mock);
    let err = h
        .live("the call's wait ends", hangup.into_future())
        .await
        .expect_err("Asterisk is gone");
    assert!(
        matches!(&err, ari_client::Error::AsteriskGone { resource } if resource.contains(channel.id())),
        "the call's wait: {err}"
    );
    let end = h
        .live("the call's stream ends", async {
            loop {
                match events.next().await {
                    Some(Ok(_)) => {}
                    other => return other,
                }
            }
        })
        .await;
    assert!(end.is_none(), "the stream ended: {end:?}");
    h.live("PeerGone", async {
        loop {
            match connection.next().await {
                Some(Ok(ari_client::ConnectionEvent::PeerGone { ended, .. })) => {
                    assert!(ended >= 2, "the wait and the stream ended: {ended}");
                    return;
                }
                Some(Ok(_)) => {}
                other => panic!("connection events ended: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(client.stats().session.peers_gone, 1);
    // The application-wide stream is still there for an Asterisk that comes back.
    assert!(futures::FutureExt::now_or_never(incoming.next()).is_none());
}

/// The persistent connection's configuration is removed and Asterisk reloads (recorded):
/// `ApplicationUnregistered` for each app, then CLOSE 1000, and Asterisk never dials again.
/// The call's wait fails at once with
/// [`Error::ApplicationUnregistered`](ari_client::Error::ApplicationUnregistered) — not
/// after the server's `peer_timeout` (60 s, the default) — its event stream ends,
/// connection listeners see `ApplicationsUnregistered`, and the client counts it. An
/// ordinary CLOSE 1000 before that, which Asterisk answers by dialling again at once,
/// keeps the call's wait.
pub async fn outbound_persistent_configuration_removed_ends_the_calls_waits_at_once<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let client = conn.client;
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the socket");
    let mut hangup = channel.once::<ari_client::events::ChannelHangupRequest>();
    let mut events = channel.events();
    let mut connection = client.connection_events();

    // An ordinary close: Asterisk dials again at once, the call's wait goes on.
    assert_eq!(mock.close_websocket("hello", 1000), 1);
    h.live("Asterisk dials again", async {
        loop {
            match connection.next().await {
                Some(Ok(ari_client::ConnectionEvent::Connected { reconnected, .. })) => {
                    assert!(reconnected);
                    return;
                }
                Some(Ok(ari_client::ConnectionEvent::ApplicationsUnregistered { .. })) => {
                    panic!("an ordinary close is not an unregistration")
                }
                Some(Ok(_)) => {}
                other => panic!("connection events ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(
        futures::FutureExt::now_or_never(&mut hangup).is_none(),
        "the wait survives an ordinary close"
    );
    h.live("answer over the new socket", channel.answer())
        .await
        .expect("served over the new socket");

    // The configuration removed and reloaded.
    assert_eq!(mock.remove_persistent_outbound(), 1);
    let err = h
        .live("the call's wait ends", hangup)
        .await
        .expect_err("the application was unregistered");
    assert!(
        matches!(&err, ari_client::Error::ApplicationUnregistered { resource } if resource.contains(channel.id())),
        "the call's wait: {err}"
    );
    let end = h
        .live("the call's stream ends", async {
            loop {
                match events.next().await {
                    Some(Ok(_)) => {}
                    other => return other,
                }
            }
        })
        .await;
    assert!(end.is_none(), "the stream ended: {end:?}");
    h.live("ApplicationsUnregistered", async {
        loop {
            match connection.next().await {
                Some(Ok(ari_client::ConnectionEvent::ApplicationsUnregistered {
                    applications,
                    ended,
                    ..
                })) => {
                    assert_eq!(applications, ["hello"]);
                    assert!(ended >= 2, "the wait and the stream ended: {ended}");
                    return;
                }
                Some(Ok(_)) => {}
                other => panic!("connection events ended: {other:?}"),
            }
        }
    })
    .await;
    let stats = client.stats().session;
    assert_eq!(
        (stats.applications_unregistered, stats.peers_gone),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(mock.outbound_stats().removed, 1);
}

/// Two Asterisks behind one address (one host, a NAT, a proxy) with the same
/// `websocket_client` settings dial a per-call server, and each places a call from
/// `PJSIP/alice`: both channels are named `PJSIP/alice-00000001`-alike (each Asterisk numbers
/// its own), so both connections name the same `<app>:<channel name>`. Each is a call of its
/// own — not the second taken for a redial of the first, which would close the first call's
/// live socket and make the two calls take turns for ever — and each is answered over its
/// own socket.
pub async fn outbound_per_call_calls_of_two_asterisks_with_the_same_channel_name_are_two_calls<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::PerCall).await;
    let asterisk = |id: &str| {
        MockServer::builder()
            .sim_config(crate::fast_sim_config())
            .asterisk_id(id)
            .outbound(per_call(&ob))
            .start()
    };
    let mocks = [asterisk("02:00:00:00:00:0a"), asterisk("02:00:00:00:00:0b")];
    let mut calls = Vec::new();
    for mock in &mocks {
        let id = mock
            .place_call(PlaceCall::new("PJSIP/alice", "hello"))
            .expect("the simulator places the call");
        let call = h
            .live("each Asterisk's call", ob.next_call())
            .await
            .expect("a call before shutdown");
        assert_eq!(call.channel.id(), id);
        calls.push(call);
    }
    assert_eq!(
        calls[0].start.application, calls[1].start.application,
        "both connections name the same call"
    );
    for (mock, call) in mocks.iter().zip(&calls) {
        h.live("answer", call.channel.answer())
            .await
            .expect("answer over the call's own socket");
        let answers = mock
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/answer"))
            .count();
        assert_eq!(answers, 1, "the answer reached the Asterisk of the call");
    }
    let stats = ob.stats();
    assert_eq!(
        (stats.accepted, stats.calls, stats.resumed),
        (2, 2, 0),
        "{stats:?}"
    );
    for mock in &mocks {
        let seen = mock.outbound_stats();
        assert_eq!(seen.connected, 1, "connected once, never dropped: {seen:?}");
    }
}

/// Credentials written into the `websocket_client.conf` `uri` (`ws://user:pass@host/…`) are
/// what Asterisk sends, ahead of the section's `username`/`password` (here wrong): the
/// connection is accepted as that user, nothing is refused, and a call is answered over it.
pub async fn outbound_credentials_in_the_uri_take_precedence<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let uri = format!("ws://{USER}:{SECRET}@{}{PATH}", ob.local_addr());
    let mock = asterisk(
        OutboundConfig::persistent(&uri, ["hello"])
            .credentials(USER, "not-the-secret")
            .reconnect(Duration::from_millis(20), 3),
        None,
    );
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    assert_eq!(conn.user.as_deref(), Some(USER));
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the socket");
    let stats = ob.stats();
    assert_eq!((stats.accepted, stats.refused), (1, 0), "{stats:?}");
    assert_eq!(mock.outbound_stats().refused, 0);
}

/// Asterisk comes back with another `asterisk_id` (its `entityid` changed, or it moved to
/// another machine behind the same address) while a persistent application has a call: the
/// new connection cannot be told from a second Asterisk, so it gets a client of its own and
/// its calls are served there; the previous client's call, whose Asterisk never comes back
/// under its old id, has its wait ended after the server's `peer_timeout` instead of
/// waiting for ever.
pub async fn outbound_persistent_asterisk_id_change_serves_the_new_and_ends_the_old<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = bind(
        h,
        options(h.runtime(), ConnectionType::Persistent)
            .peer_timeout(Some(Duration::from_millis(200))),
    )
    .await;
    let asterisk = |id: &str| {
        MockServer::builder()
            .sim_config(crate::fast_sim_config())
            .asterisk_id(id)
            .outbound(persistent(&ob))
            .start()
    };
    let before = asterisk("02:00:00:00:00:0a");
    let old = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut old_incoming = old.incoming;
    before
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, old_call, _) = h.next_incoming("the call", &mut old_incoming).await;
    let hangup = old_call.once::<ari_client::events::ChannelHangupRequest>();

    drop(before);
    let after = asterisk("02:00:00:00:00:0b");
    let new = h
        .live("the Asterisk with its new id connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = new.incoming;
    let id = after
        .place_call(PlaceCall::new("PJSIP/bob", "hello"))
        .expect("the simulator places the call");
    let (start, channel, _) = h.next_incoming("the new call", &mut incoming).await;
    assert_eq!(start.channel.id, id);
    h.live("answer", channel.answer())
        .await
        .expect("answer over the new connection");
    let err = h
        .live("the old call's wait ends", hangup.into_future())
        .await
        .expect_err("the old Asterisk is gone");
    assert!(
        matches!(err, ari_client::Error::AsteriskGone { .. }),
        "the old call's wait: {err}"
    );
    assert_eq!(old.client.stats().session.peers_gone, 1);
    assert_eq!(new.client.stats().session.peers_gone, 0);
    let stats = ob.stats();
    assert_eq!((stats.accepted, stats.replaced), (2, 0), "{stats:?}");
}

/// The application restarts (a deploy, a crash) while a persistent Asterisk has a call in
/// its Stasis: Asterisk reconnects to the new instance and sends no `StasisStart` for the
/// call again — it is in Stasis already. The new instance gets it all the same, in
/// [`OutboundConnection::in_stasis`](ari_client::OutboundConnection::in_stasis) (counted as
/// adopted), and controls it: the caller's key reaches its event stream and the hangup goes
/// over the new socket. A call placed afterwards comes on `incoming` as usual.
pub async fn outbound_persistent_calls_in_stasis_across_an_application_restart_are_handed_out<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let addr = ob.local_addr();
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let first: Vec<_> = h
        .live("the calls in Stasis", conn.in_stasis.collect::<Vec<_>>())
        .await;
    assert!(first.is_empty(), "nothing in Stasis yet");
    let mut incoming = conn.incoming;
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the first instance's socket");

    // The first instance goes away with the call in Stasis; the next one binds the port.
    h.live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    drop((channel, incoming, conn.client, ob));
    let again = h
        .live(
            "bind the same port",
            options(h.runtime(), ConnectionType::Persistent).bind(addr),
        )
        .await
        .expect("the port is free once shutdown returned");
    let conn = h
        .live("Asterisk connects to the new instance", again.next())
        .await
        .expect("a connection");
    let mut in_stasis: Vec<_> = h
        .live("the calls in Stasis", conn.in_stasis.collect::<Vec<_>>())
        .await;
    assert_eq!(in_stasis.len(), 1, "the call in Stasis is handed out");
    let (start, channel, mut events) = in_stasis.remove(0);
    assert_eq!(channel.id(), id);
    assert_eq!(start.channel.id, id);
    assert_eq!(start.application, "hello");
    assert_eq!(again.stats().adopted, 1);

    mock.send_dtmf(&id, "7").expect("the caller presses 7");
    h.live("the key on the call's stream", async {
        loop {
            match events.next().await {
                Some(Ok(ari_client::Event::ChannelDtmfReceived(k))) => {
                    assert_eq!(k.digit, "7");
                    return;
                }
                Some(Ok(_)) => {}
                other => panic!("the call's events ended: {other:?}"),
            }
        }
    })
    .await;
    h.live("hangup", channel.hangup())
        .await
        .expect("hangup over the new socket");
    let mut incoming = conn.incoming;
    let next = mock
        .place_call(PlaceCall::new("PJSIP/bob", "hello"))
        .expect("the simulator places the call");
    let (start, _, _) = h.next_incoming("a new call", &mut incoming).await;
    assert_eq!(start.channel.id, next);
    assert_eq!(again.stats().adopted, 1, "a new call is not adopted");
}

/// An application slower to take calls than Asterisk sends them (its loop on `next_call`
/// is busy elsewhere): the calls wait in the server's queue, none lost, and how many wait
/// is visible in `OutboundStats::waiting`, down again as they are taken.
pub async fn outbound_calls_waiting_for_a_slow_application_are_visible<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = per_call_setup(h).await;
    let mut placed = std::collections::HashSet::new();
    for caller in ["PJSIP/alice", "PJSIP/bob", "PJSIP/carol"] {
        placed.insert(
            mock.place_call(PlaceCall::new(caller, "hello"))
                .expect("the simulator places the call"),
        );
    }
    h.eventually("three calls wait", || ob.stats().waiting == 3)
        .await;
    let mut taken = std::collections::HashSet::new();
    for left in (0..3).rev() {
        let call = h
            .live("a waiting call", ob.next_call())
            .await
            .expect("a call before shutdown");
        assert_eq!(ob.stats().waiting, left);
        h.live("answer", call.channel.answer())
            .await
            .expect("a call that waited is still served");
        taken.insert(call.channel.id().to_string());
    }
    assert_eq!(taken, placed);
    let stats = ob.stats();
    assert_eq!((stats.calls, stats.failed), (3, 0), "{stats:?}");
}

/// The application shuts down with calls it never took (its loop on `next_call` had
/// stopped): `shutdown` closes their connections at the deadline (counted in what it
/// returns; Asterisk gets the calls back), and `next_call` afterwards gives `None` — not a
/// call whose connection is already closed.
pub async fn outbound_shutdown_with_calls_never_taken_hands_out_none_afterwards<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (ob, mock) = per_call_setup(h).await;
    for caller in ["PJSIP/alice", "PJSIP/bob"] {
        mock.place_call(PlaceCall::new(caller, "hello"))
            .expect("the simulator places the call");
    }
    h.eventually("two calls wait", || ob.stats().waiting == 2)
        .await;
    let closed = h
        .live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    assert_eq!(closed, 2, "both calls' connections were closed");
    let next = h.live("next_call after shutdown", ob.next_call()).await;
    assert!(
        next.is_none(),
        "no call after shutdown, got one: {:?}",
        next.map(|c| c.client.is_connected())
    );
    assert_eq!(ob.stats().waiting, 0);
}

/// The application restarts while a persistent Asterisk has in its Stasis a call the
/// application originated through a Local channel: `;1` is in Stasis, `;2` runs the
/// dialplan (Answer, Wait). Asterisk subscribes the application to both halves of an
/// originated Local channel (recorded: the `;2` half's `ChannelDialplan` events reach the
/// application), so `GET applications` lists both; only `;1` is a call of the application.
/// The new instance gets `;1` in `in_stasis`, and not `;2`, which is in the dialplan.
pub async fn outbound_persistent_restart_hands_out_only_the_channels_in_stasis<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let addr = ob.local_addr();
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    let placed = conn.client.new_channel();
    h.live(
        "originate a Local channel into the application",
        placed.originate("Local/wait@conformance").app("hello"),
    )
    .await
    .expect("originate over the socket");
    let (start, _, _) = h.next_incoming("the call", &mut incoming).await;
    assert_eq!(start.channel.id, placed.id());
    let listed = h
        .live(
            "the application's channels",
            conn.client.applications().get("hello"),
        )
        .await
        .expect("GET applications/hello");
    let listed = listed.data().map(|a| a.channel_ids.len());
    assert!(
        listed >= Some(2),
        "both halves are the application's: {listed:?} channels"
    );

    // The first instance goes away with the call in Stasis; the next one binds the port.
    h.live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    drop((placed, incoming, conn.client, ob));
    let again = h
        .live(
            "bind the same port",
            options(h.runtime(), ConnectionType::Persistent).bind(addr),
        )
        .await
        .expect("the port is free once shutdown returned");
    let conn = h
        .live("Asterisk connects to the new instance", again.next())
        .await
        .expect("a connection");
    let in_stasis: Vec<_> = h
        .live("the calls in Stasis", conn.in_stasis.collect::<Vec<_>>())
        .await;
    let ids: Vec<String> = in_stasis
        .iter()
        .map(|(start, channel, _)| {
            assert_eq!(start.channel.id, channel.id());
            channel.id().to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [start.channel.id.to_string()],
        "only the channel in Stasis is handed out"
    );
    assert_eq!(again.stats().adopted, 1);
    drop(mock);
}

/// The application (a persistent server) restarts with a call in Stasis, and Asterisk is
/// slow to answer REST from then on (`hold_responses`): the simulator, the new server (bound
/// on the same port, not yet dialled), and the call's channel id.
async fn restart_with_a_call_in_stasis<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) -> (MockServer, OutboundServer<E, C>, String) {
    let ob = server(h, ConnectionType::Persistent).await;
    let addr = ob.local_addr();
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (start, _, _) = h.next_incoming("the call", &mut incoming).await;
    assert_eq!(start.channel.id, id);

    // The first instance goes away with the call in Stasis; Asterisk's REST side is slow.
    h.live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    drop((incoming, conn.client, ob));
    mock.hold_responses(true);
    let again = h
        .live(
            "bind the same port",
            options(h.runtime(), ConnectionType::Persistent).bind(addr),
        )
        .await
        .expect("the port is free once shutdown returned");
    (mock, again, id)
}

/// The application restarts with a call in Stasis, and Asterisk is slow to answer REST (busy:
/// the lookup of the calls already in Stasis, `GET applications`, waits). The new
/// connection is handed out at once all the same, and a call entering Stasis meanwhile
/// comes on `incoming` without waiting for the lookup; once Asterisk answers,
/// `in_stasis` gives the call of the previous run (not the new one) and ends.
pub async fn outbound_persistent_calls_are_not_held_up_by_the_in_stasis_lookup<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (mock, again, id) = restart_with_a_call_in_stasis(h).await;
    let conn = h
        .live(
            "the connection is handed out before Asterisk answers the lookup",
            again.next(),
        )
        .await
        .expect("a connection");
    assert!(!conn.in_stasis.is_done(), "Asterisk has not answered yet");
    let mut incoming = conn.incoming;
    let next = mock
        .place_call(PlaceCall::new("PJSIP/bob", "hello"))
        .expect("the simulator places the call");
    let (start, _, _) = h
        .next_incoming("a new call while the lookup waits", &mut incoming)
        .await;
    assert_eq!(start.channel.id, next);

    mock.hold_responses(false);
    let in_stasis: Vec<_> = h
        .live("the calls in Stasis", conn.in_stasis.collect::<Vec<_>>())
        .await;
    let ids: Vec<String> = in_stasis
        .iter()
        .map(|(_, channel, _)| channel.id().to_string())
        .collect();
    assert_eq!(ids, [id], "the previous run's call, not the new one");
    assert_eq!(again.stats().adopted, 1);
}

/// Two Asterisks with the same identity dial one persistent server: same address (one host,
/// a NAT, a proxy), same `websocket_client` settings and the same `asterisk_id` (cloned
/// hosts sharing an `entityid`). The second one is not a reconnect of the first (whose
/// connection is open): each gets a client of its own, yielded by `next()`, each call goes
/// to the client of its Asterisk, and neither loses its connection (they took each other's
/// socket, for ever). Counted in `OutboundStats::duplicates` (and warned).
pub async fn outbound_two_asterisks_with_the_same_id_behind_one_address_get_a_client_each<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let asterisk = || {
        MockServer::builder()
            .sim_config(crate::fast_sim_config())
            .asterisk_id("02:00:00:00:00:0c")
            .outbound(persistent(&ob))
            .start()
    };
    let mock_a = asterisk();
    let a = h
        .live("the first Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mock_b = asterisk();
    let b = h
        .live("the second Asterisk is a connection of its own", ob.next())
        .await
        .expect("a connection");
    each_asterisk_serves_its_own_call(h, [(&mock_a, &a), (&mock_b, &b)]).await;
    let stats = ob.stats();
    assert_eq!(
        (stats.accepted, stats.replaced, stats.duplicates),
        (2, 0, 1),
        "{stats:?}"
    );
    for mock in [&mock_a, &mock_b] {
        let seen = mock.outbound_stats();
        assert_eq!(seen.connected, 1, "connected once, never dropped: {seen:?}");
    }
}

/// The application restarts while a persistent Asterisk with `subscribe_all = yes` has a
/// call in its Stasis. Such an application is subscribed to every channel at once:
/// `GET applications` lists `__AST_CHANNEL_ALL_TOPIC` and no channel of its own (Asterisk
/// subscribes it to no channel one by one). The new instance gets the call all the same, in
/// `in_stasis`, found among Asterisk's channels (`GET channels`: those in its Stasis).
pub async fn outbound_persistent_subscribe_all_restart_hands_out_the_calls_in_stasis<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let addr = ob.local_addr();
    let mock = asterisk(persistent(&ob).subscribe_all(true), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (start, _, _) = h.next_incoming("the call", &mut incoming).await;
    assert_eq!(start.channel.id, id);

    h.live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    drop((incoming, conn.client, ob));
    let again = h
        .live(
            "bind the same port",
            options(h.runtime(), ConnectionType::Persistent).bind(addr),
        )
        .await
        .expect("the port is free once shutdown returned");
    let conn = h
        .live("Asterisk connects to the new instance", again.next())
        .await
        .expect("a connection");
    let in_stasis: Vec<_> = h
        .live("the calls in Stasis", conn.in_stasis.collect::<Vec<_>>())
        .await;
    let ids: Vec<String> = in_stasis
        .iter()
        .map(|(start, channel, _)| {
            assert_eq!(start.application, "hello");
            channel.id().to_string()
        })
        .collect();
    assert_eq!(ids, [id], "the call in Stasis is handed out");
    assert_eq!(again.stats().adopted, 1);
}

/// A per-call call whose application also controls another channel: it originated a Local
/// channel into its own (per-call) application, so `GET applications` lists that channel
/// (both halves) beside the call's, and the `;1` half is in the application's Stasis too.
/// The application restarts; Asterisk redials the call's connection: the redialled call is
/// the channel the connection names (`<app>:<channel name>`), not whichever channel the
/// application lists first.
pub async fn outbound_per_call_redialled_call_is_the_channel_its_connection_names<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let restartable = |runtime: &Stack<E, C>| {
        options(runtime, ConnectionType::PerCall).resume_after(Duration::from_millis(50))
    };
    let ob = bind(h, restartable(h.runtime())).await;
    let addr = ob.local_addr();
    let mock = asterisk(per_call(&ob).reconnect(Duration::from_millis(50), 40), None);
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let first = h
        .live("the call", ob.next_call())
        .await
        .expect("a call before shutdown");
    let application = first.start.application.to_string();
    let mut incoming = first.client.incoming();
    // Listed before the call's own id ("0…" < the simulator's "1…" ids).
    let other = first.client.channel("0-other-leg");
    h.live(
        "originate a Local channel into the call's application",
        other.originate("Local/wait@conformance").app(&application),
    )
    .await
    .expect("originate over the call's socket");
    let (start, _, _) = h
        .next_incoming("the other leg in Stasis", &mut incoming)
        .await;
    assert_eq!(start.channel.id, "0-other-leg");

    h.live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    drop((incoming, other, first, ob));
    let again = h
        .live("bind the same port", restartable(h.runtime()).bind(addr))
        .await
        .expect("the port is free once shutdown returned");
    let call = h
        .live("the redialled call is handed out", again.next_call())
        .await
        .expect("a call before shutdown");
    assert!(call.resumed, "the call was already in Stasis");
    assert_eq!(call.channel.id(), id, "the channel the connection names");
    assert_eq!(call.start.channel.id, id);
    assert_eq!(call.start.application, application);
}

/// A persistent application shuts down gracefully (a deploy) with a call going on: Asterisk
/// keeps the connection open after every call, so the connection ending is not the sign —
/// the calls ending is. [`OutboundServer::shutdown`] with an hour of grace returns once the
/// live call hung up during the grace (nothing left: the connection is closed then, none
/// counted as closed at the deadline), not an hour later; shut down again with nothing in
/// Stasis, it returns at once. A call still live at the deadline is closed there, counted.
pub async fn outbound_persistent_shutdown_ends_when_the_last_call_ends<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    const HOUR: Duration = Duration::from_secs(3600);
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer()).await.expect("answer");
    // The call ends while the shutdown waits for it.
    let hangup = async {
        h.sleep(Duration::from_millis(50)).await;
        channel.hangup().await
    };
    let (closed, hung_up) = h
        .live(
            "shutdown with an hour of grace ends with the last call",
            futures::future::join(ob.shutdown(HOUR), hangup),
        )
        .await;
    hung_up.expect("hangup during the grace");
    assert_eq!(closed, 0, "nothing was left at the deadline");
    h.eventually("the connection is closed", || !conn.client.is_connected())
        .await;

    // Another instance: a call still live at the deadline is closed there, counted.
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/bob", "hello"))
        .expect("the simulator places the call");
    let (_, _channel, _) = h.next_incoming("the call", &mut incoming).await;
    let closed = h
        .live(
            "shutdown with a call live",
            ob.shutdown(Duration::from_millis(200)).into_future(),
        )
        .await;
    assert_eq!(
        closed, 1,
        "the connection with a live call closed at the deadline"
    );
}

/// A call moved into the persistent application from another one (an inbound `ivr` does
/// `POST channels/{id}/move?app=hello`): the persistent connection gets its `StasisStart`
/// (args from the move) on `incoming`. Asterisk moves a channel inside the `Stasis()` it
/// runs, so its `dialplan.app_data` still names `ivr`; when the application restarts with
/// the moved call in Stasis, the new instance still gets it in
/// [`OutboundConnection::in_stasis`](ari_client::OutboundConnection::in_stasis) (it was
/// left to nobody: only channels whose `Stasis()` named `hello` were taken) and controls it.
/// A call `ivr` keeps, which `hello` only subscribed to, is not handed out.
pub async fn outbound_persistent_call_moved_in_from_another_application_is_served<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let addr = ob.local_addr();
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    let ivr = h
        .live("the ivr client connects", h.builder_for(&mock).connect())
        .await
        .expect("a client");
    h.live("ivr starts", ivr.start(&["ivr"]))
        .await
        .expect("the application starts");

    // A call the ivr moves to hello.
    let moved = h
        .incoming_call_on(&mock, &ivr, PlaceCall::new("PJSIP/alice", "ivr"))
        .await;
    h.live("move", moved.r#move("hello").app_args("from-ivr"))
        .await
        .expect("move to hello");
    let (start, channel, _) = h.next_incoming("the moved call", &mut incoming).await;
    assert_eq!(start.channel.id, moved.id());
    assert_eq!(start.application, "hello");
    assert_eq!(start.args, ["from-ivr"]);
    h.live("answer", channel.answer())
        .await
        .expect("answer over the persistent socket");
    // A call the ivr keeps; hello only watches it.
    let kept = h
        .incoming_call_on(&mock, &ivr, PlaceCall::new("PJSIP/bob", "ivr"))
        .await;
    h.live(
        "hello subscribes to the ivr's call",
        conn.client
            .applications()
            .subscribe("hello", [format!("channel:{}", kept.id())]),
    )
    .await
    .expect("subscribed");

    // The application restarts with the moved call in its Stasis.
    h.live("shutdown", ob.shutdown(Duration::ZERO).into_future())
        .await;
    drop((channel, incoming, conn.client, ob));
    let again = h
        .live(
            "bind the same port",
            options(h.runtime(), ConnectionType::Persistent).bind(addr),
        )
        .await
        .expect("the port is free once shutdown returned");
    let conn = h
        .live("Asterisk connects to the new instance", again.next())
        .await
        .expect("a connection");
    let mut in_stasis: Vec<_> = h
        .live("the calls in Stasis", conn.in_stasis.collect::<Vec<_>>())
        .await;
    let ids: Vec<String> = in_stasis
        .iter()
        .map(|(s, _, _)| s.channel.id.to_string())
        .collect();
    assert_eq!(
        ids,
        [moved.id().to_string()],
        "only the moved call is hello's"
    );
    let (start, channel, _) = in_stasis.remove(0);
    assert_eq!(start.application, "hello");
    assert_eq!(again.stats().adopted, 1);
    h.live("hangup", channel.hangup())
        .await
        .expect("hangup over the new socket");
    h.live("the ivr's call goes on", kept.ring())
        .await
        .expect("the ivr still controls its call");
}

/// A TCP relay in front of the application whose first `slow` connections hold the
/// application's first bytes (its upgrade answer) back for `hold`: a slow application, as
/// Asterisk sees it. Threads of its own (runtime-independent); each connection's relay
/// ends when either side closes.
struct SlowRelay {
    addr: std::net::SocketAddr,
}

impl SlowRelay {
    fn start(to: std::net::SocketAddr, slow: usize, hold: Duration) -> SlowRelay {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind(loopback()).expect("a free port");
        let addr = listener.local_addr().expect("its address");
        let left = std::sync::Arc::new(AtomicUsize::new(slow));
        std::thread::spawn(move || {
            for from in listener.incoming() {
                let Ok(from) = from else { return };
                let Ok(app) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                let held = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let pipe = |mut a: std::net::TcpStream, mut b: std::net::TcpStream, hold| {
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 4096];
                        let mut first = true;
                        loop {
                            let n = match a.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if std::mem::take(&mut first) {
                                if let Some(hold) = hold {
                                    std::thread::sleep(hold);
                                }
                            }
                            if b.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = a.shutdown(std::net::Shutdown::Both);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (Ok(from2), Ok(app2)) = (from.try_clone(), app.try_clone()) else {
                    continue;
                };
                pipe(from, app, None);
                pipe(app2, from2, held.then_some(hold));
            }
        });
        SlowRelay { addr }
    }
}

/// The application answers Asterisk's upgrade later than Asterisk waits for it (twice its
/// `connection_timeout`, 20.21+): Asterisk drops that attempt and dials again after
/// `reconnect_interval`. The attempts it dropped leave nothing behind in the application
/// (no client handed out for them: counted in `OutboundStats::failed`), and the attempt
/// answered in time is the one connection, which serves a call.
pub async fn outbound_an_answer_slower_than_connection_timeout_is_dropped_and_redialled<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    // The first two answers come 600 ms late; Asterisk waits 2 × 100 ms.
    let relay = SlowRelay::start(ob.local_addr(), 2, Duration::from_millis(600));
    let mock = asterisk(
        OutboundConfig::persistent(&format!("ws://{}{PATH}", relay.addr), ["hello"])
            .credentials(USER, SECRET)
            .connection_timeout(Duration::from_millis(100))
            .reconnect(Duration::from_millis(20), 3),
        None,
    );
    let conn = h
        .live("Asterisk connects at its third attempt", ob.next())
        .await
        .expect("a connection");
    let seen = mock.outbound_stats();
    assert_eq!((seen.connected, seen.failed), (1, 2), "{seen:?}");
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the connection answered in time");
    h.eventually("the dropped attempts are counted as failed", || {
        let s = ob.stats();
        s.accepted == 3 && s.failed == 2
    })
    .await;
    let stats = ob.stats();
    assert_eq!(
        (stats.waiting, stats.replaced, stats.duplicates),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// Asterisk 20.21+ with `enable_pingpongs`: it PINGs every interval and closes with 1001
/// (then redials) once `pingpong_probes` PINGs went unanswered. The client answers them on
/// its own, also while the application takes nothing from it (busy elsewhere, a call
/// waiting on `incoming`): after many PINGs, none went unanswered, the connection was never
/// dropped, and the waiting call is served.
pub async fn outbound_asterisk_pings_are_answered_while_the_application_is_busy<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(
        persistent(&ob).pingpongs(Duration::from_millis(20), 2),
        None,
    );
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    h.eventually("twenty PINGs answered", || {
        mock.outbound_stats().pongs >= 20
    })
    .await;
    let (_, channel, _) = h.next_incoming("the call that waited", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the same connection");
    let seen = mock.outbound_stats();
    assert_eq!((seen.pong_timeouts, seen.connected), (0, 1), "{seen:?}");
    assert_eq!(ob.stats().replaced, 0);
}

/// Code written for an inbound client calls `client.start(app)` on the client an
/// [`OutboundServer`] hands out. Asterisk registered the applications of the connection
/// itself (`ari.conf` `apps`): `start` with one of them succeeds at once, with another name
/// (a typo, an application of another connection) fails typed, and either way the
/// connection stays as it was — no close, no redial by Asterisk — and serves the next call.
pub async fn outbound_start_on_an_outbound_client_leaves_its_connection_alone<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    let client = conn.client;
    h.live("start hello", client.start("hello"))
        .await
        .expect("hello is the connection's application");
    let err = h
        .live("start helo", client.start("helo"))
        .await
        .expect_err("not an application of the connection");
    assert!(
        matches!(err, ari_client::Error::Build(_)),
        "a typed refusal: {err}"
    );
    let mut incoming = conn.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the same connection");
    assert!(client.is_connected());
    let seen = mock.outbound_stats();
    assert_eq!(seen.connected, 1, "never closed nor redialled: {seen:?}");
    assert_eq!(ob.stats().replaced, 0);
}

/// The application stops the client of a persistent connection (`Client::stop`, as it
/// would an inbound one: "close the events WebSocket and stop reconnecting"). Asterisk,
/// seeing its connection closed, dials again at once; that connection is not forced into
/// the stopped client (which takes none: Asterisk's redial went nowhere, for ever) but
/// served as a new one, yielded by [`OutboundServer::next`], and it serves the next call.
pub async fn outbound_a_stopped_persistent_client_leaves_the_next_connection_to_a_new_one<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::Persistent).await;
    let mock = asterisk(persistent(&ob), None);
    let conn = h
        .live("Asterisk connects", ob.next())
        .await
        .expect("a connection");
    h.live("stop", conn.client.stop()).await;
    let again = h
        .live("Asterisk's next connection is a new one", ob.next())
        .await
        .expect("a connection");
    let mut incoming = again.incoming;
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let (_, channel, _) = h.next_incoming("the call", &mut incoming).await;
    h.live("answer", channel.answer())
        .await
        .expect("answer over the new connection");
    assert!(
        !conn.client.is_connected(),
        "the stopped client stays stopped"
    );
    assert_eq!(mock.outbound_stats().connected, 2);
    let err = h
        .live("start the stopped client", conn.client.start("hello"))
        .await
        .expect_err("a stopped outbound client takes no connection again");
    assert!(matches!(err, ari_client::Error::Closed { .. }), "{err}");
}

/// Per call, the application stops a call's client (`Client::stop`) with the call still in
/// Stasis. Asterisk redials the call at once, naming the same `<app>:<channel>`; the
/// stopped client takes no connection, so the redial is served as a call already in Stasis:
/// yielded again by [`OutboundServer::next_call`] with `resumed` set, the same channel,
/// which the new client controls.
pub async fn outbound_per_call_stopped_client_call_redialled_is_handed_out_again<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = bind(
        h,
        options(h.runtime(), ConnectionType::PerCall).resume_after(Duration::from_millis(50)),
    )
    .await;
    let mock = asterisk(per_call(&ob).reconnect(Duration::from_millis(20), 5), None);
    let id = mock
        .place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let call = h.live("the call", ob.next_call()).await.expect("a call");
    assert!(!call.resumed);
    h.live("stop the call's client", call.client.stop()).await;
    let again = h
        .live("the redialled call", ob.next_call())
        .await
        .expect("the call again");
    assert!(again.resumed, "already in Stasis");
    assert_eq!(again.channel.id(), id);
    h.live("answer", again.channel.answer())
        .await
        .expect("answer over the redialled connection");
    assert!(!call.client.is_connected());
    assert_eq!(ob.stats().resumed, 0, "not handed to the stopped client");
}

/// Asterisk crashes under a per-call call (its process, sockets and listener gone at once:
/// the connection ends with no close frame, and nothing redials it), with the server's
/// default options: the call's wait fails with
/// [`Error::AsteriskGone`](ari_client::Error::AsteriskGone) and its event stream ends after
/// [`OutboundOptions::call_peer_timeout`] (5 s by default: a live Asterisk redials a lost
/// per-call connection within milliseconds) — not after the 60 s of `peer_timeout` —
/// connection listeners see `PeerGone`, and the server counts the call in
/// `OutboundStats::calls_lost`.
pub async fn outbound_per_call_asterisk_crash_ends_the_call_promptly<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let ob = server(h, ConnectionType::PerCall).await;
    let mock = asterisk(per_call(&ob), None);
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let call = h.live("the call", ob.next_call()).await.expect("a call");
    h.live("answer", call.channel.answer())
        .await
        .expect("answer over the socket");
    let hangup = call
        .channel
        .once::<ari_client::events::ChannelHangupRequest>();
    let mut events = call.events;
    let mut connection = call.client.connection_events();

    // The crash: the simulated Asterisk's runtime and every socket of it dropped at once.
    drop(mock);
    let err = h
        .live("the call's wait ends", hangup.into_future())
        .await
        .expect_err("Asterisk is gone");
    assert!(
        matches!(&err, ari_client::Error::AsteriskGone { resource } if resource.contains(call.channel.id())),
        "the call's wait: {err}"
    );
    let end = h
        .live("the call's stream ends", async {
            loop {
                match events.next().await {
                    Some(Ok(_)) => {}
                    other => return other,
                }
            }
        })
        .await;
    assert!(end.is_none(), "the stream ended: {end:?}");
    h.live("Disconnected, then PeerGone", async {
        let mut disconnected = false;
        loop {
            match connection.next().await {
                Some(Ok(ari_client::ConnectionEvent::Disconnected { .. })) => disconnected = true,
                Some(Ok(ari_client::ConnectionEvent::PeerGone { ended, waited, .. })) => {
                    assert!(disconnected, "PeerGone after Disconnected");
                    assert!(ended >= 2, "the wait and the stream ended: {ended}");
                    assert!(
                        waited < Duration::from_secs(60),
                        "the call's timeout: {waited:?}"
                    );
                    return;
                }
                Some(Ok(_)) => {}
                other => panic!("connection events ended: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(call.client.stats().session.peers_gone, 1);
    h.eventually("the server counts the lost call", || {
        ob.stats().calls_lost == 1
    })
    .await;
    let stats = ob.stats();
    assert_eq!((stats.calls, stats.calls_lost), (1, 1), "{stats:?}");
}

/// A shutdown comes while a new persistent connection's calls already in Stasis are being
/// looked up (the application restarted with a call in Stasis; Asterisk is slow to answer
/// `GET applications`): the connection is not closed as idle — the shutdown waits for the
/// lookup, then for the call it found, and returns 0 (nothing closed at the deadline) once
/// the application hung that call up.
pub async fn outbound_persistent_shutdown_during_the_in_stasis_lookup_waits_for_its_calls<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let (mock, again, id) = restart_with_a_call_in_stasis(h).await;
    let conn = h
        .live("the connection is handed out", again.next())
        .await
        .expect("a connection");
    assert!(!conn.in_stasis.is_done(), "Asterisk has not answered yet");

    let mut shutdown = Box::pin(again.shutdown(Duration::from_secs(25)).into_future());
    let early =
        futures::future::select(&mut shutdown, Box::pin(h.sleep(Duration::from_millis(300)))).await;
    assert!(
        matches!(early, futures::future::Either::Right(_)),
        "the shutdown closed the connection as idle while its calls were looked up"
    );
    assert!(conn.client.is_connected(), "the connection is still open");

    mock.hold_responses(false);
    let (in_stasis, closed) = h
        .live("the lookup, the call's hangup, the shutdown", async {
            let mut found: Vec<_> = conn.in_stasis.collect::<Vec<_>>().await;
            assert_eq!(found.len(), 1, "the call in Stasis is handed out");
            let (_, channel, _) = found.remove(0);
            assert_eq!(channel.id(), id);
            channel.hangup().await.expect("hangup over the connection");
            (channel, (&mut shutdown).await)
        })
        .await;
    assert_eq!(in_stasis.id(), id);
    assert_eq!(
        closed, 0,
        "the shutdown ended with the last call, not at its deadline"
    );
    assert_eq!(again.stats().adopted, 1);
}
