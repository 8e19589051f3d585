//! Fault injection: dropped/closed WebSockets, refused connections, delays, failures,
//! malformed/oversized/binary frames, paused sends, and the slow-client drop.

mod common;

use std::time::{Duration, Instant};

use ari_testkit::{CloseReason, MockServer, Refusal, Target};
use common::{
    basic, get, next_json, next_msg, next_text, send_text, ws_connect, ws_try, Http, PATIENCE,
};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The stream ends without a close frame.
async fn assert_ends_abruptly(ws: &mut common::Ws) {
    loop {
        match next_msg(ws).await {
            None | Some(Err(_)) => return,
            Some(Ok(Message::Close(f))) => panic!("got a close frame {f:?}, expected none"),
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn drop_websocket_now_closes_without_close_frame() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    let mut other = ws_connect(server.addr(), "app=b").await;
    assert_eq!(server.drop_websocket("a"), 1);
    assert_ends_abruptly(&mut ws).await;
    assert!(server.wait_for_closed(1, PATIENCE));
    assert_eq!(server.closed_connections()[0].reason, CloseReason::Dropped);
    assert_eq!(server.closed_connections()[0].apps, vec!["a"]);
    assert_eq!(server.connected_apps(), vec!["b"]);
    // The other connection is untouched.
    server.push_frame("b", r#"{"type":"Still"}"#);
    assert_eq!(next_json(&mut other).await["type"], "Still");
    // Dropping all.
    assert_eq!(server.drop_websocket(Target::All), 1);
    assert_ends_abruptly(&mut other).await;
}

#[tokio::test]
async fn close_websocket_sends_a_close_frame_with_the_code() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    assert_eq!(server.close_websocket("a", 1001), 1);
    match next_msg(&mut ws).await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn drop_after_n_events() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    assert_eq!(server.drop_websocket_after("a", 2), 1);
    for i in 0..4 {
        server.push_event("a", json!({"type": "E", "n": i}));
    }
    assert_eq!(next_json(&mut ws).await["n"], 0);
    assert_eq!(next_json(&mut ws).await["n"], 1);
    assert_ends_abruptly(&mut ws).await;
    assert!(server.wait_for_closed(1, PATIENCE));
    assert_eq!(server.closed_connections()[0].reason, CloseReason::Dropped);
}

#[tokio::test]
async fn refuse_by_closing_tcp_connections() {
    let server = MockServer::start();
    server.refuse_connections(2, Refusal::Close);
    let auth = basic("asterisk", "asterisk");
    let mut c = Http::connect(server.addr())
        .await
        .expect("tcp connect is accepted");
    assert!(
        c.send("GET", "/ari/asterisk/ping", Some(&auth), None)
            .await
            .is_err(),
        "the refused connection must not answer"
    );
    assert!(ws_try(server.addr(), "app=a", Some(&auth)).await.is_err());
    // Refusals used up: both work again.
    assert_eq!(get(server.addr(), "/ari/asterisk/ping").await.status, 200);
    let _ws = ws_connect(server.addr(), "app=a").await;
    // Refused connections never got as far as a request.
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["asterisk/ping", "events"]);
}

#[tokio::test]
async fn refuse_with_503() {
    let server = MockServer::start();
    server.refuse_connections(2, Refusal::ServiceUnavailable);
    let r = get(server.addr(), "/ari/asterisk/ping").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json(), json!({"message": "Service Unavailable"}));
    assert_eq!(r.header("connection"), Some("close"));
    match ws_try(server.addr(), "app=a", Some(&basic("asterisk", "asterisk"))).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(get(server.addr(), "/ari/asterisk/ping").await.status, 200);
    let _ws = ws_connect(server.addr(), "app=a").await;
}

#[tokio::test]
async fn delayed_responses_take_at_least_the_delay() {
    let server = MockServer::start();
    let delay = Duration::from_millis(300);
    server.set_response_delay(Some(delay));
    let t = Instant::now();
    assert_eq!(get(server.addr(), "/ari/asterisk/ping").await.status, 200);
    assert!(t.elapsed() >= delay);

    let mut ws = ws_connect(server.addr(), "app=a").await;
    let t = Instant::now();
    send_text(
        &mut ws,
        r#"{"type":"RESTRequest","request_id":"d","method":"GET","uri":"asterisk/ping"}"#,
    )
    .await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["status_code"], 200);
    assert!(t.elapsed() >= delay);

    server.set_response_delay(None);
    // A scripted expectation can carry its own delay.
    server
        .expect("GET", "channels")
        .delay(delay)
        .respond(200, json!([]));
    let t = Instant::now();
    assert_eq!(get(server.addr(), "/ari/channels").await.status, 200);
    assert!(t.elapsed() >= delay);
}

#[tokio::test]
async fn fail_next_requests_with_5xx() {
    let server = MockServer::start();
    server.fail_requests(2, 500);
    for _ in 0..2 {
        let r = get(server.addr(), "/ari/asterisk/ping").await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json(), json!({"message": "Internal Server Error"}));
    }
    assert_eq!(get(server.addr(), "/ari/asterisk/ping").await.status, 200);

    server.fail_requests(1, 503);
    let mut ws = ws_connect(server.addr(), "app=a").await;
    send_text(
        &mut ws,
        r#"{"type":"RESTRequest","request_id":"f","method":"GET","uri":"asterisk/ping"}"#,
    )
    .await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["status_code"], 503);
    assert_eq!(v["reason_phrase"], "Service Unavailable");
}

#[tokio::test]
async fn malformed_binary_and_oversized_frames() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    server.push_malformed_frame("a");
    let t = next_text(&mut ws).await.expect("frame");
    assert!(serde_json::from_str::<Value>(&t).is_err(), "{t}");

    server.push_binary_frame("a", b"\x00\x01");
    match next_msg(&mut ws).await {
        Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"\x00\x01"),
        other => panic!("expected binary, got {other:?}"),
    }

    server.push_oversized_frame("a", 100_000);
    let t = next_text(&mut ws).await.expect("frame");
    assert_eq!(t.len(), 100_000);
    let v: Value = serde_json::from_str(&t).expect("valid JSON");
    assert_eq!(v["type"], "Oversized");

    // A client with a small frame limit fails on it.
    let mut req = format!("ws://{}/ari/events?app=small", server.addr())
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        basic("asterisk", "asterisk").parse().expect("hv"),
    );
    let config = WebSocketConfig::default().max_message_size(Some(10_000));
    let (mut small, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
        .await
        .expect("handshake");
    server.push_oversized_frame("small", 100_000);
    match next_msg(&mut small).await {
        Some(Err(WsError::Capacity(_))) => {}
        other => panic!("expected a capacity error, got {other:?}"),
    }
}

#[tokio::test]
async fn paused_sends_are_held_until_resumed() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    assert_eq!(server.pause_sends("a"), 1);
    server.push_event("a", json!({"type": "First"}));
    server.push_event("a", json!({"type": "Second"}));
    // The connection is still alive and reading: a ping is answered while events are held,
    // so the pong arrives before them.
    ws.send(Message::Ping(b"p".to_vec().into()))
        .await
        .expect("ping");
    match next_msg(&mut ws).await {
        Some(Ok(Message::Pong(_))) => {}
        other => panic!("expected only a pong while paused, got {other:?}"),
    }
    assert_eq!(server.resume_sends("a"), 1);
    server.push_event("a", json!({"type": "Third"}));
    assert_eq!(next_json(&mut ws).await["type"], "First");
    assert_eq!(next_json(&mut ws).await["type"], "Second");
    assert_eq!(next_json(&mut ws).await["type"], "Third");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_after_the_write_timeout() {
    let server = MockServer::builder()
        .send_buffer_size(4096)
        .write_timeout(Duration::from_millis(50))
        .start();
    // A client with a small receive buffer that never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(server.addr()).await.expect("connect");
    let mut req = format!("ws://{}/ari/events?app=slow", server.addr())
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        basic("asterisk", "asterisk").parse().expect("hv"),
    );
    let (_ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("handshake");
    let big = "x".repeat(256 * 1024);
    for _ in 0..64 {
        server.push_event("slow", json!({"type": "Big", "padding": big}));
    }
    assert!(
        server.wait_for_closed(1, PATIENCE),
        "the slow client was not dropped"
    );
    assert_eq!(
        server.closed_connections()[0].reason,
        CloseReason::WriteTimeout
    );
    assert!(server.connected_apps().is_empty());
}
