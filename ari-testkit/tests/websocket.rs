//! The events WebSocket: auth, subprotocol, MissingParams, ApplicationReplaced, pings, and
//! REST over WebSocket checked against the recorded Asterisk frames.

mod common;

use ari_testkit::{MockServer, Transport};
use common::{basic, next_json, next_msg, next_text, send_text, ws_connect, ws_try, PATIENCE};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[tokio::test]
async fn connects_with_basic_auth_and_registers_apps() {
    let server = MockServer::start();
    let _ws = ws_connect(server.addr(), "app=a,b").await;
    // Registration happens before the handshake completes.
    assert_eq!(server.connected_apps(), vec!["a", "b"]);
    let conns = server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].user, "asterisk");
}

#[tokio::test]
async fn connects_with_api_key() {
    let server = MockServer::start();
    let _ws = ws_try(server.addr(), "app=a&api_key=asterisk%3Aasterisk", None)
        .await
        .expect("handshake");
    assert_eq!(server.connected_apps(), vec!["a"]);
    // The events_url helper builds the same thing.
    let (_ws2, _) = tokio_tungstenite::connect_async(server.events_url(&["b"]))
        .await
        .expect("events_url handshake");
    assert_eq!(server.connected_apps(), vec!["a", "b"]);
}

#[tokio::test]
async fn bad_credentials_fail_the_handshake_with_401() {
    let server = MockServer::start();
    for (query, auth) in [
        ("app=a", Some(basic("asterisk", "nope"))),
        ("app=a", None),
        ("app=a&api_key=asterisk:nope", None),
    ] {
        match ws_try(server.addr(), query, auth.as_deref()).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                let body: Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                        .expect("json body");
                assert_eq!(body, json!({"message": "Authentication required"}));
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
    assert!(server.connected_apps().is_empty());
}

#[tokio::test]
async fn subprotocol_ari_is_accepted() {
    let server = MockServer::start();
    let mut req = format!("ws://{}/ari/events?app=a", server.addr())
        .into_client_request()
        .expect("request");
    let h = req.headers_mut();
    h.insert(
        "authorization",
        basic("asterisk", "asterisk").parse().expect("hv"),
    );
    h.insert("sec-websocket-protocol", "ari".parse().expect("hv"));
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("ari")
    );
}

#[tokio::test]
async fn missing_app_sends_missing_params_and_closes() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "subscribeAll=true").await;
    let v = next_json(&mut ws).await;
    assert_eq!(v, json!({"type": "MissingParams", "params": ["app"]}));
    assert!(next_text(&mut ws).await.is_none());
    assert!(server.wait_for_closed(1, PATIENCE));
    assert_eq!(
        server.closed_connections()[0].reason,
        ari_testkit::CloseReason::MissingParams
    );
}

#[tokio::test]
async fn second_registration_replaces_the_first() {
    let server = MockServer::start();
    let mut first = ws_connect(server.addr(), "app=test,hello").await;
    let _second = ws_connect(server.addr(), "app=test").await;
    let v = next_json(&mut first).await;
    assert_eq!(v["type"], "ApplicationReplaced");
    assert_eq!(v["application"], "test");
    assert!(v["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with("+0000")));
    assert!(v["asterisk_id"].is_string());
    // Same keys as the recorded frame.
    let recorded: Value = serde_json::from_str(
        r#"{"type":"ApplicationReplaced","timestamp":"2026-11-26T12:14:40.168+0000","application":"test","asterisk_id":"02:fc:00:00:00:01"}"#,
    )
    .expect("json");
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&v), keys(&recorded));

    // Events for `test` now go to the second connection only; `hello` stays on the first.
    let conns = server.connections();
    assert_eq!(conns[0].apps, vec!["hello"]);
    assert_eq!(conns[1].apps, vec!["test"]);
    assert_eq!(server.push_frame("hello", r#"{"type":"X"}"#), 1);
    assert_eq!(next_json(&mut first).await["type"], "X");
}

#[tokio::test]
async fn pings_are_answered() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping");
    loop {
        match next_msg(&mut ws).await {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"hi");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_close_is_recorded_and_unregisters() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    ws.close(None).await.expect("close");
    assert!(server.wait_for_closed(1, PATIENCE));
    assert_eq!(
        server.closed_connections()[0].reason,
        ari_testkit::CloseReason::ClientClosed
    );
    assert!(server.connected_apps().is_empty());
}

/// Loads the recorded `RESTRequest` frames and their `RESTResponse` answers (run 1).
fn recorded_exchange() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/asterisk-master");
    let sent = std::fs::read_to_string(format!("{dir}/ws-sent.jsonl")).expect("ws-sent.jsonl");
    let events = std::fs::read_to_string(format!("{dir}/events.jsonl")).expect("events.jsonl");
    let frames = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["run"] == 1)
            .filter_map(|v| v["frame"].as_str().map(str::to_owned))
            .collect()
    };
    let responses: Vec<Value> = frames(&events)
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter(|v| v["type"] == "RESTResponse")
        .collect();
    let requests = frames(&sent);
    assert_eq!(requests.len(), responses.len());
    requests.into_iter().zip(responses).collect()
}

#[tokio::test]
async fn rest_over_websocket_matches_the_recording() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=test,hello").await;
    for (request, recorded) in recorded_exchange() {
        let req: Value = serde_json::from_str(&request).expect("json");
        // r2/r3 name a channel that existed in the recording: answers differ by state.
        if req["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("channels/cap-"))
        {
            continue;
        }
        send_text(&mut ws, &request).await;
        let got = next_json(&mut ws).await;
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        let mut got_keys = keys(&got).expect("object");
        let mut want_keys = keys(&recorded).expect("object");
        got_keys.sort();
        want_keys.sort();
        assert_eq!(got_keys, want_keys, "fields of the answer to {request}");
        for k in [
            "type",
            "transaction_id",
            "request_id",
            "status_code",
            "reason_phrase",
            "uri",
            "content_type",
            "application",
        ] {
            assert_eq!(
                got.get(k),
                recorded.get(k),
                "{k} in the answer to {request}"
            );
        }
        if let Some(body) = recorded["message_body"].as_str() {
            let want: Value = serde_json::from_str(body).expect("recorded body");
            let got_body: Value =
                serde_json::from_str(got["message_body"].as_str().expect("message_body"))
                    .expect("body is JSON");
            if want.get("message").is_some() {
                assert_eq!(got_body, want, "body of the answer to {request}");
            } else {
                assert_eq!(got_body["ping"], want["ping"]);
            }
        }
        assert!(got["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with("+0000")));
        if req["request_id"] == "r5" {
            // The user event follows its RESTResponse, as recorded.
            let ev = next_json(&mut ws).await;
            assert_eq!(ev["type"], "ChannelUserevent");
            assert_eq!(ev["eventname"], "wsEvent");
            assert_eq!(ev["userevent"], json!({"a": "b", "eventname": "wsEvent"}));
        }
    }
    let ws_logged: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.transport == Transport::WebSocket)
        .collect();
    // Bad frames are answered but are not requests.
    let paths: Vec<&str> = ws_logged.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["asterisk/ping", "channels/nope", "events/user/wsEvent"]
    );
    assert_eq!(ws_logged[2].query_param("application"), Some("test"));
    assert_eq!(ws_logged[2].body, Some(json!({"variables": {"a": "b"}})));
    assert_eq!(ws_logged[2].status, 204);
}

#[tokio::test]
async fn non_json_frame_answers_400() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    send_text(&mut ws, "this is not json").await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["type"], "RESTResponse");
    assert_eq!(v["status_code"], 400);
    assert_eq!(v["reason_phrase"], "Bad request");
    assert_eq!(v["application"], "a");
    let body: Value =
        serde_json::from_str(v["message_body"].as_str().expect("body")).expect("json");
    assert_eq!(body, json!({"message": "Unknown request type."}));
}

#[tokio::test]
async fn rest_over_websocket_honours_read_only_and_query_strings() {
    let server = MockServer::builder().read_only_user("ro", "ro").start();
    let mut ws = common::ws_try(server.addr(), "app=a", Some(&basic("ro", "ro")))
        .await
        .expect("handshake");
    send_text(
        &mut ws,
        r#"{"type":"RESTRequest","request_id":"w","method":"POST","uri":"asterisk/variable","query_strings":[{"name":"variable","value":"X"}]}"#,
    )
    .await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["status_code"], 403);
    assert_eq!(v["request_id"], "w");
    assert_eq!(v["transaction_id"], "");
    let body: Value =
        serde_json::from_str(v["message_body"].as_str().expect("body")).expect("json");
    assert_eq!(body, json!({"message": "Write access denied"}));
    let log = server.requests();
    let last = log.last().expect("logged");
    assert_eq!(last.transport, Transport::WebSocket);
    assert_eq!(last.user.as_deref(), Some("ro"));
    assert_eq!(last.query_param("variable"), Some("X"));
    assert_eq!(last.status, 403);
}

#[tokio::test]
async fn events_for_an_app_reach_its_connection() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=a").await;
    assert_eq!(
        server.push_event("a", json!({"type": "StasisStart", "args": []})),
        1
    );
    let v = next_json(&mut ws).await;
    assert_eq!(v["type"], "StasisStart");
    assert_eq!(v["application"], "a");
    assert!(v["timestamp"].is_string());
    assert_eq!(server.push_frame("nobody", "{}"), 0);
    // Not delivered anywhere, so nothing else arrives: the next frame is the one pushed next.
    server.push_frame("a", r#"{"type":"Second"}"#);
    assert_eq!(next_json(&mut ws).await["type"], "Second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once() {
    // 20 WebSockets and 100 connections at once: over Asterisk's default `sessionlimit`.
    let server = MockServer::builder().session_limit(200).start();
    let addr = server.addr();
    let mut sockets = Vec::new();
    for i in 0..20 {
        sockets.push(ws_connect(addr, &format!("app=app{i}")).await);
    }
    let mut requests = Vec::new();
    for i in 0..100 {
        requests.push(tokio::spawn(async move {
            let path = if i % 2 == 0 {
                "/ari/asterisk/ping"
            } else {
                "/ari/channels"
            };
            common::get(addr, path).await.status
        }));
    }
    for i in 0..20 {
        assert_eq!(
            server.push_event(format!("app{i}").as_str(), json!({"type": "Hello", "n": i})),
            1
        );
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        let v = next_json(ws).await;
        assert_eq!(v["n"], i);
        assert_eq!(v["application"], format!("app{i}"));
    }
    for r in requests {
        assert_eq!(r.await.expect("task"), 200);
    }
    assert_eq!(server.connections().len(), 20);
}
