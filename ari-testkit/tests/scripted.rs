//! Scripted mode: canned answers, matching rules, precedence over the simulator, the log.

mod common;

use ari_testkit::{MockServer, Transport};
use common::{basic, get, next_json, request, send_text, ws_connect};
use serde_json::json;

#[tokio::test]
async fn expectation_answers_then_falls_back_to_the_simulator() {
    let server = MockServer::start();
    let h = server
        .expect("GET", "/ari/asterisk/ping")
        .respond(200, json!({"ping": "scripted"}));
    assert_eq!(server.unmet_expectations().len(), 1);
    let r = get(server.addr(), "/ari/asterisk/ping").await;
    assert_eq!(r.json(), json!({"ping": "scripted"}));
    assert_eq!(h.hits(), 1);
    assert!(server.unmet_expectations().is_empty());
    server.verify();
    // Used up (default: once): the simulator answers now.
    let r = get(server.addr(), "/ari/asterisk/ping").await;
    assert_eq!(r.json()["ping"], "pong");
    assert_eq!(h.hits(), 1);
}

#[test]
fn wait_for_request_sees_requests_made_by_another_thread() {
    let server = MockServer::start();
    let addr = server.addr();
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            request(
                addr,
                "DELETE",
                "/ari/channels/x",
                Some(&basic("asterisk", "asterisk")),
                None,
            )
            .await
            .status
        })
    });
    let r = server
        .wait_for_request(common::PATIENCE, |r| r.method == "DELETE")
        .expect("request seen");
    assert_eq!(r.segments, vec!["channels", "x"]);
    assert_eq!(client.join().expect("client thread"), 404);
    assert!(server
        .wait_for_request(std::time::Duration::from_millis(1), |r| r.method == "PUT")
        .is_none());
}

#[tokio::test]
async fn times_always_wildcards_query_and_body_matching() {
    let server = MockServer::builder().without_simulator().start();
    let twice = server
        .expect("POST", "channels/*/answer")
        .times(2)
        .respond_empty(204);
    let q = server
        .expect("GET", "channels/x/variable")
        .with_query("variable", "FOO")
        .always()
        .respond(200, json!({"value": "bar"}));
    let b = server
        .expect("POST", "events/user/ev")
        .with_body(json!({"variables": {"k": "v"}}))
        .respond_raw(500, "text/plain", "boom");
    let auth = basic("asterisk", "asterisk");
    for id in ["c1", "c2", "c3"] {
        let r = request(
            server.addr(),
            "POST",
            &format!("/ari/channels/{id}/answer"),
            Some(&auth),
            None,
        )
        .await;
        if id == "c3" {
            // Not scripted any more, and no simulator.
            assert_eq!(r.status, 404);
        } else {
            assert_eq!(r.status, 204);
            assert!(r.body.is_empty());
        }
    }
    assert_eq!(twice.hits(), 2);
    for _ in 0..3 {
        let r = get(
            server.addr(),
            "/ari/channels/x/variable?variable=FOO&other=1",
        )
        .await;
        assert_eq!(r.json(), json!({"value": "bar"}));
    }
    assert_eq!(
        get(server.addr(), "/ari/channels/x/variable?variable=BAR")
            .await
            .status,
        404
    );
    assert_eq!(q.hits(), 3);

    let r = request(
        server.addr(),
        "POST",
        "/ari/events/user/ev",
        Some(&auth),
        Some(("application/json", br#"{"variables":{"k":"w"}}"#.to_vec())),
    )
    .await;
    assert_eq!(r.status, 404, "different body must not match");
    let r = request(
        server.addr(),
        "POST",
        "/ari/events/user/ev",
        Some(&auth),
        Some(("application/json", br#"{"variables":{"k":"v"}}"#.to_vec())),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.text(), "boom");
    assert_eq!(b.hits(), 1);
    server.verify();
}

#[tokio::test]
async fn unmet_expectations_are_reported() {
    let server = MockServer::start();
    server
        .expect("DELETE", "bridges/b1")
        .times(2)
        .respond_empty(204);
    let unmet = server.unmet_expectations();
    assert_eq!(unmet, vec!["DELETE bridges/b1 (0/2 answered)"]);
    let verified = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.verify()));
    assert!(verified.is_err());
    server.clear_expectations();
    server.verify();
}

#[tokio::test]
async fn expectations_answer_rest_over_websocket_and_everything_is_logged() {
    let server = MockServer::start();
    server
        .expect("GET", "channels/abc")
        .respond(200, json!({"id": "abc", "name": "PJSIP/x"}));
    let mut ws = ws_connect(server.addr(), "app=test").await;
    send_text(
        &mut ws,
        r#"{"type":"RESTRequest","request_id":"1","transaction_id":"t","method":"GET","uri":"channels/abc?x=1"}"#,
    )
    .await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["status_code"], 200);
    assert_eq!(v["transaction_id"], "t");
    assert_eq!(v["uri"], "channels/abc");
    let body: serde_json::Value =
        serde_json::from_str(v["message_body"].as_str().expect("body")).expect("json");
    assert_eq!(body["name"], "PJSIP/x");

    let _ = request(server.addr(), "GET", "/ari/channels", None, None).await;
    let log = server.requests();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[0].transport, Transport::Http);
    assert_eq!(log[0].path, "events");
    assert_eq!(log[0].status, 101);
    assert_eq!(log[0].query_param("app"), Some("test"));
    assert_eq!(log[1].transport, Transport::WebSocket);
    assert_eq!(log[1].path, "channels/abc");
    assert_eq!(log[1].query_param("x"), Some("1"));
    assert_eq!(log[1].user.as_deref(), Some("asterisk"));
    assert_eq!(log[2].status, 401);
    assert_eq!(log[2].user, None);
    let found = server.wait_for_request(common::PATIENCE, |r| r.path == "channels/abc");
    assert_eq!(found.map(|r| r.transport), Some(Transport::WebSocket));
    server.clear_requests();
    assert!(server.requests().is_empty());
}
