//! The outbound WebSocket server (Asterisk dials the application) against connections that
//! go wrong before they become a client: silence, bytes that are not HTTP, a per-call
//! connection that closes or says nothing after its upgrade. Each one is counted as failed
//! and the server goes on serving. A plain TCP socket or tokio-tungstenite plays Asterisk.
//!
//! Waits are bounded by a generous limit only so that a hang fails the test (never a timing
//! assertion).

use std::time::Duration;

use ari_tokio::{ConnectionType, OutboundOptions, OutboundServer, OutboundStats};
use ari_tokio::{TokioConnector, TokioExecutor, TokioRuntime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Generous bound for liveness checks (never a timing assertion).
const LIVENESS: Duration = Duration::from_secs(30);

type Server = OutboundServer<TokioExecutor, TokioConnector>;

async fn server(t: ConnectionType) -> Server {
    OutboundOptions::new(TokioRuntime::new())
        .credentials("asterisk", "s3cret")
        .expect("credentials")
        .path("/ari/events")
        .connection_type(t)
        .handshake_timeout(Duration::from_millis(100))
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
}

/// Waits until the server's counters satisfy `done`.
async fn stats_until(server: &Server, what: &str, done: impl Fn(&OutboundStats) -> bool) {
    let end = tokio::time::Instant::now() + LIVENESS;
    loop {
        let s = server.stats();
        if done(&s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: not within {LIVENESS:?} ({s:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The server closes `socket` (end of stream, or a reset).
async fn closed_by_server(socket: &mut TcpStream) {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIVENESS, socket.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection");
}

async fn upgrade(
    server: &Server,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let mut req = format!("ws://{}/ari/events", server.local_addr())
        .into_client_request()
        .expect("request");
    let headers = req.headers_mut();
    headers.insert(
        "authorization",
        // Basic base64("asterisk:s3cret")
        "Basic YXN0ZXJpc2s6czNjcmV0".parse().expect("header"),
    );
    headers.insert("sec-websocket-protocol", "ari".parse().expect("header"));
    let (ws, resp) = tokio::time::timeout(LIVENESS, tokio_tungstenite::connect_async(req))
        .await
        .expect("the upgrade is answered")
        .expect("accepted");
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test]
async fn silence_and_garbage_before_the_upgrade_are_counted_as_failed() {
    let server = server(ConnectionType::Persistent).await;
    let dbg = format!("{server:?}");
    assert!(dbg.contains(&server.local_addr().to_string()), "{dbg}");
    assert!(!dbg.contains("s3cret"), "{dbg}");

    // Connects and says nothing: cut at the handshake timeout.
    let mut silent = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    closed_by_server(&mut silent).await;
    stats_until(&server, "the silent connection fails", |s| s.failed == 1).await;

    // Bytes that are no HTTP request.
    let mut garbage = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    garbage
        .write_all(b"\x16\x03\x01\x02\x00 not an upgrade\r\n\r\n")
        .await
        .expect("write");
    closed_by_server(&mut garbage).await;
    stats_until(&server, "the garbage connection fails", |s| s.failed == 2).await;

    // The server still accepts a proper connection afterwards.
    let _ws = upgrade(&server).await;
    let conn = tokio::time::timeout(LIVENESS, server.next())
        .await
        .expect("a connection")
        .expect("the server is open");
    let s = server.stats();
    assert_eq!(
        (s.connections, s.accepted, s.failed, s.refused),
        (3, 1, 2, 0)
    );
    drop(conn);
}

#[tokio::test]
async fn a_per_call_connection_without_its_first_frame_is_counted_as_failed() {
    let server = server(ConnectionType::PerCall).await;

    // Upgraded, then closed before naming its call.
    let ws = upgrade(&server).await;
    drop(ws);
    stats_until(&server, "closed before the first frame", |s| s.failed == 1).await;

    // Upgraded, then silent: cut at the handshake timeout.
    let mut ws = upgrade(&server).await;
    {
        use futures_util::StreamExt;
        let end = tokio::time::timeout(LIVENESS, ws.next())
            .await
            .expect("the server ends the silent connection");
        assert!(
            !matches!(
                end,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))
            ),
            "{end:?}"
        );
    }
    stats_until(&server, "no first frame in time", |s| s.failed == 2).await;
    let s = server.stats();
    assert_eq!((s.accepted, s.calls), (2, 0), "no call was handed out");
}

/// A per-call connection that names its call (`ApplicationRegistered` for
/// `<app>:<channel name>`) and then ends for good before the call's `StasisStart` (the
/// channel left Stasis while Asterisk set the connection up, or Asterisk gave up
/// redialling): the server stops waiting for the call, counts the connection as failed, and
/// no client or task stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_call_connection_lost_before_its_call_leaves_nothing() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let tasks = ari_conformance::CountedRuntime::new(TokioExecutor::default());
    let runtime = ari_tokio::ari_client::Stack::builder_with(tasks.clone(), TokioConnector)
        .build()
        .expect("a stack");
    let server = OutboundOptions::new(runtime)
        .credentials("asterisk", "s3cret")
        .expect("credentials")
        .path("/ari/events")
        .connection_type(ConnectionType::PerCall)
        .handshake_timeout(Duration::from_millis(100))
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let mut ws = {
        let mut req = format!("ws://{addr}/ari/events")
            .into_client_request()
            .expect("request");
        let headers = req.headers_mut();
        headers.insert(
            "authorization",
            "Basic YXN0ZXJpc2s6czNjcmV0".parse().expect("header"),
        );
        headers.insert("sec-websocket-protocol", "ari".parse().expect("header"));
        tokio::time::timeout(LIVENESS, tokio_tungstenite::connect_async(req))
            .await
            .expect("the upgrade is answered")
            .expect("accepted")
            .0
    };
    ws.send(Message::text(
        r#"{"type":"ApplicationRegistered","timestamp":"2026-12-05T22:44:38.796+0000","application":"hello:PJSIP/alice-00000001","asterisk_id":"02:fc:00:00:00:01"}"#,
    ))
    .await
    .expect("the first frame");
    drop(ws);
    let end = tokio::time::Instant::now() + LIVENESS;
    loop {
        let s = server.stats();
        if s.failed == 1 && tasks.alive() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "not counted as failed, or tasks left ({} alive): {s:?}",
            tasks.alive()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.stats().calls, 0);
    drop(server);
    let end = tokio::time::Instant::now() + LIVENESS;
    while tasks.alive() > 0 {
        assert!(
            tokio::time::Instant::now() < end,
            "{} tasks left",
            tasks.alive()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A per-call connection whose first frame names no application (bytes that are not an ARI
/// frame: a misrouted client, a broken proxy) and that then stays open: no call will ever
/// come on it, so the server closes it and counts it as failed instead of keeping a client
/// waiting for a `StasisStart` as long as the peer likes; the server goes on serving.
#[tokio::test]
async fn a_per_call_connection_whose_first_frame_is_not_ari_is_closed_and_counted() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = server(ConnectionType::PerCall).await;
    for garbage in ["not json at all", r#"{"type":"Hello","greeting":"hi"}"#] {
        let mut ws = upgrade(&server).await;
        ws.send(Message::text(garbage)).await.expect("the frame");
        let end = tokio::time::timeout(LIVENESS, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the server closes the connection ({garbage})");
    }
    stats_until(&server, "both counted as failed", |s| s.failed == 2).await;
    let s = server.stats();
    assert_eq!((s.accepted, s.calls), (2, 0), "{s:?}");
}

/// Counts the WARN events of this thread whose fields mention `needle`.
struct Warnings {
    needle: &'static str,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        if text.0.contains(self.needle) {
            self.count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// An Asterisk with the wrong password retries for ever (every `reconnect_interval`, 500 ms
/// by default): every refusal is answered 401 and counted, but the log is not flooded with a
/// warning per attempt — warned at the 1st, 2nd, 4th, 8th… refusal (with the count), the
/// rest at debug.
#[tokio::test] // one thread: the server's tasks log to this thread's subscriber
async fn refused_upgrades_are_all_counted_and_warned_at_powers_of_two() {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _log = tracing::subscriber::set_default(Warnings {
        needle: "flood",
        count: count.clone(),
    });
    let server = server(ConnectionType::Persistent).await;
    for attempt in 1..=64u64 {
        let mut req = format!("ws://{}/ari/events", server.local_addr())
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            // Basic base64("flood:guess")
            "Basic Zmxvb2Q6Z3Vlc3M=".parse().expect("header"),
        );
        let answer = tokio::time::timeout(LIVENESS, tokio_tungstenite::connect_async(req))
            .await
            .expect("the upgrade is answered");
        match answer {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401)
            }
            other => panic!("refused with 401, not {other:?}"),
        }
        stats_until(&server, "the refusal counted", |s| {
            s.unauthorized == attempt
        })
        .await;
    }
    let s = server.stats();
    assert_eq!(
        (s.refused, s.unauthorized, s.accepted),
        (64, 64, 0),
        "{s:?}"
    );
    assert_eq!(
        count.load(std::sync::atomic::Ordering::Relaxed),
        7,
        "warned at refusals 1, 2, 4, 8, 16, 32 and 64"
    );
}

/// A `wss://` listener dialled with `ws://` (Asterisk's `uri` says `ws://`, or its TLS
/// settings fail): the handshake fails every attempt, counted in `failed`, and — the
/// operator's only clue on the application's side — warned, at the 1st, 2nd, 4th…
/// failure (Asterisk retries for ever), not only logged at debug.
#[tokio::test] // one thread: the server's tasks log to this thread's subscriber
async fn plain_websocket_to_a_tls_listener_is_counted_and_warned() {
    use ari_tokio::ari_client::rustls;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _log = tracing::subscriber::set_default(Warnings {
        needle: "upgrade failed",
        count: count.clone(),
    });
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("a certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("a server configuration");
    let server = OutboundOptions::new(TokioRuntime::new())
        .credentials("asterisk", "s3cret")
        .expect("credentials")
        .tls(std::sync::Arc::new(tls))
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    for attempt in 1..=4u64 {
        let req = format!("ws://{}/ari/events", server.local_addr())
            .into_client_request()
            .expect("request");
        let answer = tokio::time::timeout(LIVENESS, tokio_tungstenite::connect_async(req))
            .await
            .expect("the attempt ends");
        assert!(answer.is_err(), "no plain upgrade on a TLS listener");
        stats_until(&server, "the failure counted", |s| s.failed == attempt).await;
    }
    assert_eq!(server.stats().accepted, 0);
    assert_eq!(
        count.load(std::sync::atomic::Ordering::Relaxed),
        3,
        "warned at failures 1, 2 and 4"
    );
}

/// A connection that sends binary frames among its ARI frames (Asterisk sends none: a peer
/// that is not Asterisk, or something between that garbles the stream): each one is
/// ignored and counted in the client's `Stats::binary_frames` — not dropped unseen — and the
/// text frames around them are handled as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_on_an_accepted_connection_are_counted() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = OutboundOptions::new(TokioRuntime::new())
        .credentials("asterisk", "s3cret")
        .expect("credentials")
        .path("/ari/events")
        // Nobody answers the server's own requests here: let them fail fast.
        .client(|b| b.request_timeout(Duration::from_millis(100)))
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let mut ws = upgrade(&server).await;
    let frame = |ty: &str| {
        format!(
            r#"{{"type":"{ty}","timestamp":"2026-12-05T22:32:45.355+0000","application":"hello","asterisk_id":"02:fc:00:00:00:01"}}"#
        )
    };
    ws.send(Message::text(frame("ApplicationRegistered")))
        .await
        .expect("the first frame");
    let conn = tokio::time::timeout(LIVENESS, server.next())
        .await
        .expect("the connection is handed out")
        .expect("a connection");
    for _ in 0..3 {
        ws.send(Message::binary(vec![0xde, 0xad, 0xbe, 0xef]))
            .await
            .expect("a binary frame");
    }
    ws.send(Message::text(frame("ApplicationReplaced")))
        .await
        .expect("a text frame");
    let end = tokio::time::Instant::now() + LIVENESS;
    loop {
        let s = conn.client.stats();
        if s.binary_frames == 3 && s.session.frames >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "not counted: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
