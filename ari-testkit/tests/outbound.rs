//! The simulated Asterisk dialing the application (ARI outbound WebSocket): the upgrade
//! request as Asterisk sends it, persistent connections (ApplicationRegistered first,
//! reconnect at once, events queued while away and flushed before ApplicationRegistered),
//! per-call connections (`<app>:<channel>`, StasisStart after the delay, close after
//! StasisEnd, giving up when unreachable), REST over the socket, and an answer Asterisk
//! refuses.

use std::time::Duration;

use ari_testkit::{MockServer, OutboundConfig, PlaceCall};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

const WAIT: Duration = Duration::from_secs(10);

/// Accepts one connection and answers its upgrade with `answer` (given the accept key);
/// returns the request head and the WebSocket (when the answer was a 101).
async fn accept(listener: &TcpListener, answer: impl Fn(&str) -> String) -> (String, Option<Ws>) {
    let (mut tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("Asterisk connects")
        .expect("accept");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the request");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8(buf).expect("utf-8");
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("key")
        .trim()
        .to_string();
    let reply = answer(&derive_accept_key(key.as_bytes()));
    tcp.write_all(reply.as_bytes()).await.expect("write");
    if reply.starts_with("HTTP/1.1 101") {
        let ws = WebSocketStream::from_raw_socket(tcp, Role::Server, None).await;
        (head, Some(ws))
    } else {
        (head, None)
    }
}

fn ok(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: ari\r\n\r\n"
    )
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

/// Frames until one of type `ty` (included).
async fn until(ws: &mut Ws, ty: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = next_json(ws).await;
        let done = v["type"] == ty;
        out.push(v);
        if done {
            return out;
        }
    }
}

fn server(cfg: OutboundConfig) -> MockServer {
    MockServer::builder()
        .outbound(cfg)
        .on_log(|l| eprintln!("[mock] {l}"))
        .start()
}

#[tokio::test]
async fn persistent_connection_registers_reconnects_and_flushes_queued_events_first() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let uri = format!("ws://127.0.0.1:{port}/ari-ob/persistent?token=abc123");
    let server = server(
        OutboundConfig::persistent(&uri, ["obapp"])
            .credentials("obuser", "obsecret")
            .reconnect(Duration::from_millis(50), 3),
    );
    let (head, ws) = accept(&listener, ok).await;
    // The request Asterisk sends, header for header and in its order.
    let names: Vec<&str> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect();
    assert_eq!(
        names,
        [
            "Sec-WebSocket-Version",
            "Upgrade",
            "Connection",
            "Host",
            "Authorization",
            "Sec-WebSocket-Protocol",
            "Sec-WebSocket-Key"
        ]
    );
    assert!(head.starts_with("GET /ari-ob/persistent?token=abc123 HTTP/1.1\r\n"));
    assert!(head.contains("Authorization: Basic b2J1c2VyOm9ic2VjcmV0\r\n"));
    let mut ws = ws.expect("upgraded");
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "ApplicationRegistered");
    assert_eq!(first["application"], "obapp");

    // REST over the socket.
    ws.send(Message::text(
        r#"{"type":"RESTRequest","request_id":"r1","method":"GET","uri":"asterisk/ping"}"#,
    ))
    .await
    .unwrap();
    let resp = next_json(&mut ws).await;
    assert_eq!(resp["type"], "RESTResponse");
    assert_eq!(resp["request_id"], "r1");
    assert_eq!(resp["status_code"], 200);
    assert_eq!(resp["application"], "obapp");

    // The app goes away; a call enters Stasis meanwhile; its events wait for the reconnect
    // and come before ApplicationRegistered.
    drop(ws);
    drop(listener);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let channel = server
        .place_call(PlaceCall::new("PJSIP/alice", "obapp"))
        .expect("call placed");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (_, ws) = accept(&listener, ok).await;
    let mut ws = ws.expect("upgraded");
    let frames = until(&mut ws, "ApplicationRegistered").await;
    let start = frames
        .iter()
        .position(|f| f["type"] == "StasisStart")
        .expect("the queued StasisStart");
    assert_eq!(frames[start]["channel"]["id"], channel.as_str());
    assert_eq!(frames.last().unwrap()["application"], "obapp");
    let stats = server.outbound_stats();
    assert!(stats.connected >= 2, "{stats:?}");
    assert!(
        stats.failed >= 1,
        "attempts while the port was closed: {stats:?}"
    );

    // The app closes cleanly: Asterisk reconnects at once.
    ws.close(None).await.unwrap();
    // As the server side, the app ends the TCP connection after the close handshake.
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let (_, ws) = accept(&listener, ok).await;
    let mut ws = ws.expect("upgraded");
    assert_eq!(next_json(&mut ws).await["type"], "ApplicationRegistered");
}

#[tokio::test]
async fn an_answer_asterisk_would_refuse_is_a_failed_attempt() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("ws://{}/", listener.local_addr().unwrap());
    let server =
        server(OutboundConfig::persistent(&uri, ["obapp"]).reconnect(Duration::from_millis(20), 3));
    let (_, ws) = accept(&listener, |_| {
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_string()
    })
    .await;
    assert!(ws.is_none());
    let (_, ws) = accept(&listener, |a| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Accept: {a}\r\n\r\n"
        )
    })
    .await;
    drop(ws);
    let (_, ws) = accept(&listener, |a| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {a}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
    })
    .await;
    drop(ws);
    // Then a good answer is taken.
    let (_, ws) = accept(&listener, ok).await;
    let mut ws = ws.expect("upgraded");
    assert_eq!(next_json(&mut ws).await["type"], "ApplicationRegistered");
    let stats = server.outbound_stats();
    assert_eq!(stats.refused, 3, "{stats:?}");
    assert_eq!(stats.connected, 1, "{stats:?}");
}

#[tokio::test]
async fn per_call_connection_per_channel_with_its_own_app_name() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("ws://{}/ari-ob/percall", listener.local_addr().unwrap());
    let server = server(
        OutboundConfig::per_call(&uri, ["obpc"])
            .stasis_start_delay(Duration::from_millis(30))
            .close_after_stasis_end(Duration::from_millis(60)),
    );
    assert_eq!(
        server.outbound_stats().attempts,
        0,
        "nothing connects at load"
    );
    let channel = server
        .place_call(PlaceCall::new("PJSIP/alice", "obpc"))
        .expect("call placed");
    let (head, ws) = accept(&listener, ok).await;
    assert!(head.starts_with("GET /ari-ob/percall HTTP/1.1\r\n"));
    let mut ws = ws.expect("upgraded");
    let reg = next_json(&mut ws).await;
    assert_eq!(reg["type"], "ApplicationRegistered");
    let app = reg["application"].as_str().unwrap().to_string();
    assert!(app.starts_with("obpc:PJSIP/alice-"), "{app}");
    let start = next_json(&mut ws).await;
    assert_eq!(start["type"], "StasisStart");
    assert_eq!(start["application"], app.as_str());
    assert_eq!(start["channel"]["id"], channel.as_str());
    // The app drops the connection mid-call: Asterisk reconnects at once, registers again.
    drop(ws);
    let (_, ws) = accept(&listener, ok).await;
    let mut ws = ws.expect("upgraded");
    assert_eq!(next_json(&mut ws).await["type"], "ApplicationRegistered");
    // Hang up over the socket: StasisEnd, then a close frame 1000.
    ws.send(Message::text(format!(
        r#"{{"type":"RESTRequest","request_id":"r1","method":"DELETE","uri":"channels/{channel}"}}"#
    )))
    .await
    .unwrap();
    let frames = until(&mut ws, "StasisEnd").await;
    assert!(frames
        .iter()
        .any(|f| f["type"] == "RESTResponse" && f["status_code"] == 204));
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1000));
    // A second call gets a connection of its own.
    server
        .place_call(PlaceCall::new("PJSIP/bob", "obpc"))
        .expect("call placed");
    let (_, ws) = accept(&listener, ok).await;
    let mut ws = ws.expect("upgraded");
    let reg = next_json(&mut ws).await;
    assert!(reg["application"]
        .as_str()
        .unwrap()
        .starts_with("obpc:PJSIP/bob-"));
}

#[tokio::test]
async fn per_call_gives_up_when_the_app_is_unreachable_and_the_channel_leaves_stasis() {
    // A port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let server = server(
        OutboundConfig::per_call(&format!("ws://127.0.0.1:{port}/"), ["obpc"])
            .reconnect(Duration::from_millis(20), 3),
    );
    let channel = server
        .place_call(PlaceCall::new("PJSIP/alice", "obpc"))
        .expect("call placed");
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.outbound_stats().gave_up == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never gave up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = server.outbound_stats();
    assert_eq!(stats.attempts, 3, "{stats:?}");
    assert_eq!(stats.failed, 3, "{stats:?}");
    let gone = server
        .with_sim(|sim, _| !sim.channel_ids().contains(&channel))
        .unwrap();
    assert!(gone, "the channel was hung up");
}

#[tokio::test]
async fn a_slow_handshake_is_visible_to_the_app() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("ws://{}/", listener.local_addr().unwrap());
    let _server = server(
        OutboundConfig::persistent(&uri, ["obapp"]).handshake_delay(Duration::from_millis(300)),
    );
    let (mut tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    // Nothing arrives during the delay.
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut byte)).await;
    assert!(early.is_err(), "the request was not held back");
}

/// `enable_pingpongs`: Asterisk PINGs every interval with `WS_CLIENT_PING`. An application
/// that reads (tungstenite answers each PING) keeps its connection; one that stops reading
/// leaves the PINGs unanswered, and after `probes` of them Asterisk closes with 1001 and
/// dials again.
#[tokio::test]
async fn unanswered_pings_close_the_connection_with_1001_and_asterisk_redials() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = server(
        OutboundConfig::persistent(&format!("ws://127.0.0.1:{port}/ari-ob"), ["obapp"])
            .reconnect(Duration::from_millis(20), 3)
            .pingpongs(Duration::from_millis(20), 2),
    );
    let (_, ws) = accept(&listener, ok).await;
    let mut ws = ws.expect("upgraded");
    // Reading: every PING is answered.
    let mut pings = 0;
    while pings < 5 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Ping(payload) = msg {
            assert_eq!(&payload[..], b"WS_CLIENT_PING");
            pings += 1;
        }
    }
    // The answer to the last one goes out with the next read or flush.
    ws.flush().await.unwrap();
    tokio::time::timeout(WAIT, async {
        while server.outbound_stats().pongs < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the PONGs reach Asterisk");
    assert_eq!(server.outbound_stats().pong_timeouts, 0);

    // Not reading any more: the PINGs go unanswered, Asterisk closes and dials again.
    let (_, again) = accept(&listener, ok).await;
    assert!(again.is_some(), "Asterisk dialled again");
    tokio::time::timeout(WAIT, async {
        while server.outbound_stats().connected < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the second connection completes");
    assert_eq!(server.outbound_stats().pong_timeouts, 1);
}
