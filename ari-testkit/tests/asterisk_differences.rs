//! Where the simulator used to differ from a real Asterisk (issue 17): CORS preflight and
//! `OPTIONS`, `OPTIONS` by a read-only user, `/mailboxes`, reloading a module without reload
//! support (HTTP and REST over WebSocket), and `channels/externalMedia` argument checks.
//! References: `../shared/ari-testsuite` (the `CORS`, `authentication`, `mailbox/baseline`,
//! `asterisk/modules/*` and `channels/external_media/off-nominal` scenarios) and the recorded
//! fixtures.

mod common;

use std::net::SocketAddr;

use ari_testkit::MockServer;
use common::{basic, get, next_json, request, send_text, ws_connect};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw HTTP/1.1 request with extra headers and `Connection: close`; status, headers
/// (lower-case names) and body.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(common::PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("answer within PATIENCE")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn access_control(h: &[(String, String)]) -> Vec<&str> {
    h.iter()
        .filter(|(k, _)| k.starts_with("access-control-"))
        .map(|(k, _)| k.as_str())
        .collect()
}

const KEY: &str = "api_key=asterisk:asterisk";

#[tokio::test]
async fn options_answers_204_with_allow_and_no_cors_headers_by_default() {
    let server = MockServer::start();
    let origin = [("Origin", "http://127.0.0.1")];
    let (status, h, body) = raw(
        server.addr(),
        "OPTIONS",
        &format!("/ari/channels?{KEY}"),
        &origin,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(body, "");
    assert_eq!(header(&h, "allow"), Some("OPTIONS,GET,POST"));
    assert!(access_control(&h).is_empty(), "{h:?}");
    // As the CORS scenario: a cross-origin GET is answered without them too.
    let (status, h, _) = raw(
        server.addr(),
        "GET",
        &format!("/ari/channels?{KEY}"),
        &origin,
    )
    .await;
    assert_eq!(status, 200);
    assert!(access_control(&h).is_empty(), "{h:?}");
    // A parameter segment and an unknown path.
    let (status, h, _) = raw(
        server.addr(),
        "OPTIONS",
        &format!("/ari/channels/abc/ring?{KEY}"),
        &[],
    )
    .await;
    assert_eq!(
        (status, header(&h, "allow")),
        (204, Some("OPTIONS,POST,DELETE"))
    );
    let (status, _, _) = raw(
        server.addr(),
        "OPTIONS",
        &format!("/ari/channels/abc/nope?{KEY}"),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    // Authentication still applies.
    let (status, _, _) = raw(server.addr(), "OPTIONS", "/ari/channels", &[]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn cors_preflight_and_requests_from_an_allowed_origin() {
    let server = MockServer::builder()
        .allowed_origin("http://app.example")
        .start();
    let (status, h, _) = raw(
        server.addr(),
        "OPTIONS",
        &format!("/ari/bridges/b1?{KEY}"),
        &[
            ("Origin", "http://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(header(&h, "allow"), Some("OPTIONS,GET,POST,DELETE"));
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&h, "access-control-allow-methods"),
        Some("OPTIONS,GET,POST,DELETE")
    );
    assert_eq!(
        header(&h, "access-control-allow-headers"),
        Some("content-type")
    );

    // A method the resource does not have: the origin headers only.
    let (_, h, _) = raw(
        server.addr(),
        "OPTIONS",
        &format!("/ari/channels?{KEY}"),
        &[
            ("Origin", "http://app.example"),
            ("Access-Control-Request-Method", "DELETE"),
        ],
    )
    .await;
    assert_eq!(
        access_control(&h),
        [
            "access-control-allow-origin",
            "access-control-allow-credentials"
        ]
    );

    // A plain request, even one refused for its credentials, carries the origin headers.
    let (status, h, _) = raw(
        server.addr(),
        "GET",
        &format!("/ari/asterisk/ping?{KEY}"),
        &[("Origin", "http://app.example")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("http://app.example")
    );
    let (status, h, _) = raw(
        server.addr(),
        "GET",
        "/ari/asterisk/ping",
        &[("Origin", "http://app.example")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));

    // Another origin: nothing.
    let (_, h, _) = raw(
        server.addr(),
        "OPTIONS",
        &format!("/ari/channels?{KEY}"),
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert!(access_control(&h).is_empty(), "{h:?}");
}

#[tokio::test]
async fn a_read_only_user_may_send_options() {
    let server = MockServer::builder()
        .read_only_user("viewer", "view")
        .start();
    let (status, h, _) = raw(
        server.addr(),
        "OPTIONS",
        "/ari/channels?api_key=viewer:view",
        &[],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(header(&h, "allow"), Some("OPTIONS,GET,POST"));
    let (status, _, body) = raw(
        server.addr(),
        "POST",
        "/ari/bridges?api_key=viewer:view",
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body, r#"{"message":"Write access denied"}"#);
}

#[tokio::test]
async fn mailboxes_are_created_read_listed_updated_and_deleted() {
    let server = MockServer::start();
    let auth = basic("asterisk", "asterisk");
    let put = |path: &'static str| {
        let auth = auth.clone();
        let addr = server.addr();
        async move { request(addr, "PUT", path, Some(&auth), None).await }
    };
    assert_eq!(get(server.addr(), "/ari/mailboxes").await.json(), json!([]));
    let r = put("/ari/mailboxes/alice?oldMessages=3&newMessages=4").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        put("/ari/mailboxes/bob?oldMessages=5&newMessages=6")
            .await
            .status,
        204
    );
    assert_eq!(
        get(server.addr(), "/ari/mailboxes/alice").await.json(),
        json!({"name": "alice", "old_messages": 3, "new_messages": 4})
    );
    assert_eq!(
        put("/ari/mailboxes/alice?oldMessages=11&newMessages=3")
            .await
            .status,
        204
    );
    let r = request(
        server.addr(),
        "DELETE",
        "/ari/mailboxes/bob",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        get(server.addr(), "/ari/mailboxes").await.json(),
        json!([{"name": "alice", "old_messages": 11, "new_messages": 3}])
    );
    let gone = get(server.addr(), "/ari/mailboxes/bob").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json(), json!({"message": "Mailbox is does not exist"}));
    let r = request(
        server.addr(),
        "DELETE",
        "/ari/mailboxes/bob",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = put("/ari/mailboxes/carol?oldMessages=1").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"message": "Missing parameter newMessages"})
    );
}

/// Sends one `RESTRequest` and returns the `RESTResponse`'s status and body.
async fn over_websocket(ws: &mut common::Ws, id: &str, method: &str, uri: &str) -> (u64, String) {
    send_text(
        ws,
        &json!({"type": "RESTRequest", "request_id": id, "method": method, "uri": uri}).to_string(),
    )
    .await;
    loop {
        let v: Value = next_json(ws).await;
        if v["type"] == "RESTResponse" && v["request_id"] == id {
            return (
                v["status_code"].as_u64().expect("status"),
                v["message_body"].as_str().unwrap_or("").to_owned(),
            );
        }
    }
}

#[tokio::test]
async fn module_load_and_reload_conflicts_over_http_and_websocket() {
    let server = MockServer::start();
    let auth = basic("asterisk", "asterisk");
    let http = |method: &'static str, path: &'static str| {
        let auth = auth.clone();
        let addr = server.addr();
        async move { request(addr, method, path, Some(&auth), None).await }
    };
    // Reloading a running module that has no reload callback is a conflict.
    let r = http("PUT", "/ari/asterisk/modules/app_page.so").await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"message": "Module does not support reloading"})
    );
    assert_eq!(
        http("PUT", "/ari/asterisk/modules/app_playback.so")
            .await
            .status,
        204
    );
    // Loading a loaded module, or one that does not exist.
    let r = http("POST", "/ari/asterisk/modules/app_playback.so").await;
    assert_eq!(
        (r.status, r.json()),
        (409, json!({"message": "Module is already loaded"}))
    );
    assert_eq!(
        http("POST", "/ari/asterisk/modules/blah.so").await.status,
        409
    );
    // Reloading one that is not running.
    assert_eq!(
        http("DELETE", "/ari/asterisk/modules/app_page.so")
            .await
            .status,
        204
    );
    assert_eq!(
        http("PUT", "/ari/asterisk/modules/app_page.so")
            .await
            .status,
        404
    );

    let mut ws = ws_connect(server.addr(), "app=a").await;
    let (status, body) = over_websocket(&mut ws, "1", "PUT", "asterisk/modules/app_echo.so").await;
    assert_eq!(status, 409);
    assert_eq!(body, r#"{"message":"Module does not support reloading"}"#);
    let (status, _) = over_websocket(&mut ws, "2", "POST", "asterisk/modules/app_echo.so").await;
    assert_eq!(status, 409);
    let (status, _) = over_websocket(&mut ws, "3", "POST", "asterisk/modules/app_page.so").await;
    assert_eq!(status, 204);
    let (status, _) = over_websocket(&mut ws, "4", "PUT", "asterisk/modules/pbx_config.so").await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn external_media_arguments_are_checked_as_asterisk_does() {
    let server = MockServer::start();
    let _ws = ws_connect(server.addr(), "app=em").await;
    let auth = basic("asterisk", "asterisk");
    let cases: [(&str, u16, Option<&str>); 10] = [
        ("external_host=127.0.0.1:5000&format=ulaw", 400, Some("app cannot be empty")),
        ("app=em&external_host=127.0.0.1:5000", 400, Some("format cannot be empty")),
        (
            "app=em&external_host=127.0.0.1:5000&format=ulaw&transport=XXX",
            501,
            None,
        ),
        (
            "app=em&external_host=127.0.0.1:5000&format=ulaw&encapsulation=YYY",
            501,
            None,
        ),
        (
            "app=em&transport=websocket&external_host=mc_media_client&format=ulaw",
            400,
            Some("encapsulation must be 'none' for websocket transport"),
        ),
        (
            "app=em&external_host=127.0.0.1:5000&format=ulaw&direction=sideways",
            400,
            Some("Invalid direction specified"),
        ),
        ("app=em&format=ulaw", 400, None),
        ("app=em&external_host=127.0.0.1:5000&format=XXX", 400, None),
        ("app=em&external_host=127.0.0.1&format=ulaw", 400, None),
        (
            "app=em&encapsulation=audiosocket&transport=tcp&external_host=127.0.0.1:5000&format=slin",
            400,
            Some("data can not be empty"),
        ),
    ];
    for (query, status, message) in cases {
        let r = request(
            server.addr(),
            "POST",
            &format!("/ari/channels/externalMedia?{query}"),
            Some(&auth),
            None,
        )
        .await;
        assert_eq!(r.status, status, "{query}: {}", r.text());
        if let Some(m) = message {
            assert_eq!(r.json(), json!({"message": m}), "{query}");
        }
    }
    // The nominal RTP case still creates the channel.
    let r = request(
        server.addr(),
        "POST",
        "/ari/channels/externalMedia?app=em&external_host=127.0.0.1:5000&format=ulaw&channelId=em1",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "em1");
}
