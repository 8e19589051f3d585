//! The server driving the simulated Asterisk: app registration, calls placed by the test or
//! over `/_sim/`, DTMF from scripted callers in real and simulated time, hangups.

mod common;

use std::time::Duration;

use ari_testkit::{MockServer, PlaceCall};
use common::{basic, next_json, request, ws_connect, Ws, PATIENCE};
use serde_json::Value;

/// Reads frames until one of type `ty` arrives.
async fn until(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

#[tokio::test]
async fn apps_are_registered_with_the_simulator_while_connected() {
    let server = MockServer::start();
    let connected = |s: &MockServer, app: &str| {
        s.with_sim(|sim, _| sim.app_is_connected(app))
            .expect("simulator")
    };
    assert!(!connected(&server, "hello"));
    let mut ws = ws_connect(server.addr(), "app=hello").await;
    assert!(connected(&server, "hello"));
    let r = common::get(server.addr(), "/ari/applications/hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "hello");
    ws.close(None).await.expect("close");
    assert!(server.wait_for_closed(1, PATIENCE));
    assert!(!connected(&server, "hello"));
}

#[tokio::test]
async fn placed_call_enters_the_app_and_hangs_up() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=hello").await;
    let mut call = PlaceCall::new("PJSIP/alice", "hello");
    call.args = vec!["a".into(), "b".into()];
    let id = server.place_call(call).expect("call placed");
    let start = until(&mut ws, "StasisStart").await;
    assert_eq!(start["channel"]["id"], id.as_str());
    assert_eq!(start["args"], serde_json::json!(["a", "b"]));
    assert_eq!(start["application"], "hello");
    server.hangup(&id).expect("hangup");
    until(&mut ws, "StasisEnd").await;
    assert!(server.hangup("no-such-channel").is_err());
    assert!(server.send_dtmf("no-such-channel", "1").is_err());
}

#[tokio::test]
async fn scripted_caller_presses_digits_in_simulated_time() {
    let server = MockServer::builder().simulated_time().start();
    let mut ws = ws_connect(server.addr(), "app=hello").await;
    let auth = basic("asterisk", "asterisk");
    let r = request(
        server.addr(),
        "POST",
        "/_sim/call?app=hello&args=x&dtmf=12%23&caller=Alice%20%3C100%3E",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_owned();
    let start = until(&mut ws, "StasisStart").await;
    assert_eq!(start["channel"]["id"], id.as_str());
    assert_eq!(start["channel"]["caller"]["name"], "Alice");
    assert_eq!(start["channel"]["caller"]["number"], "100");
    let r = request(
        server.addr(),
        "POST",
        &format!("/ari/channels/{id}/answer"),
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    // Nothing is pressed until time moves.
    assert_eq!(server.now(), Duration::ZERO);
    assert!(server.advance(Duration::from_secs(1)));
    let r = request(server.addr(), "POST", "/_sim/advance?ms=5000", None, None).await;
    assert_eq!(r.status, 204);
    assert_eq!(server.now(), Duration::from_secs(6));
    let mut digits = String::new();
    while digits.len() < 3 {
        let v = until(&mut ws, "ChannelDtmfReceived").await;
        assert_eq!(v["channel"]["id"], id.as_str());
        digits.push_str(v["digit"].as_str().expect("digit"));
    }
    assert_eq!(digits, "12#");
}

#[tokio::test]
async fn timers_run_in_real_time_by_default() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=hello").await;
    let mut call = PlaceCall::new("PJSIP/bob", "hello");
    call.dtmf = "5".into();
    call.dtmf_delay = Duration::from_millis(10);
    let id = server.place_call(call).expect("placed");
    until(&mut ws, "StasisStart").await;
    let auth = basic("asterisk", "asterisk");
    let r = request(
        server.addr(),
        "POST",
        &format!("/ari/channels/{id}/answer"),
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let v = until(&mut ws, "ChannelDtmfReceived").await;
    assert_eq!(v["digit"], "5");
    // advance() is for simulated time only.
    assert!(!server.advance(Duration::from_secs(1)));
    let r = request(server.addr(), "POST", "/_sim/advance?ms=1", None, None).await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn test_injected_dtmf_and_http_controls() {
    let server = MockServer::builder().simulated_time().start();
    let mut ws = ws_connect(server.addr(), "app=hello").await;
    let id = server
        .place_call(PlaceCall::new("PJSIP/carol", "hello"))
        .expect("placed");
    until(&mut ws, "StasisStart").await;
    let r = request(
        server.addr(),
        "POST",
        &format!("/_sim/dtmf?channel={id}&digits=9"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    server.advance(Duration::from_secs(2));
    assert_eq!(until(&mut ws, "ChannelDtmfReceived").await["digit"], "9");

    let r = request(server.addr(), "GET", "/_sim/connections", None, None).await;
    assert_eq!(r.json()[0]["apps"], serde_json::json!(["hello"]));
    let r = request(server.addr(), "GET", "/_sim/requests", None, None).await;
    assert_eq!(r.json()[0]["path"], "events");

    let r = request(
        server.addr(),
        "POST",
        &format!("/_sim/hangup?channel={id}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    until(&mut ws, "StasisEnd").await;
    let r = request(
        server.addr(),
        "POST",
        "/_sim/hangup?channel=gone",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = request(server.addr(), "POST", "/_sim/call", None, None).await;
    assert_eq!(r.status, 400);
    let r = request(server.addr(), "GET", "/_sim/nothing", None, None).await;
    assert_eq!(r.status, 404);
}
