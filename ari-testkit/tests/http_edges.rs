//! Asterisk-like HTTP edges: auth, read-only, 404s, 204, Content-Length, keep-alive.

mod common;

use ari_testkit::{MockServer, Transport};
use common::{basic, get, request, Http};
use serde_json::json;

#[tokio::test]
async fn basic_auth_is_accepted() {
    let server = MockServer::start();
    let r = get(server.addr(), "/ari/asterisk/ping").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ping"], "pong");
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn api_key_is_accepted_and_percent_decoded() {
    let server = MockServer::builder().user("al ice", "p@ss:w/rd").start();
    let r = request(
        server.addr(),
        "GET",
        "/ari/asterisk/ping?api_key=al%20ice%3Ap%40ss%3Aw%2Frd",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // api_key is not passed on as a parameter.
    let logged = server.requests();
    assert_eq!(logged.len(), 1);
    assert!(logged[0].query.is_empty(), "{:?}", logged[0].query);
    assert_eq!(logged[0].user.as_deref(), Some("al ice"));
}

#[tokio::test]
async fn wrong_or_missing_credentials_answer_401_json() {
    let server = MockServer::start();
    for auth in [
        None,
        Some(basic("asterisk", "wrong")),
        Some("Basic !!!".to_owned()),
    ] {
        let r = request(server.addr(), "GET", "/ari/channels", auth.as_deref(), None).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json(), json!({"message": "Authentication required"}));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = request(
        server.addr(),
        "GET",
        "/ari/channels?api_key=asterisk:nope",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(server
        .requests()
        .iter()
        .all(|r| r.user.is_none() && r.status == 401));
}

#[tokio::test]
async fn read_only_user_may_read_but_not_write() {
    let server = MockServer::builder()
        .read_only_user("viewer", "view")
        .start();
    let auth = basic("viewer", "view");
    let r = request(
        server.addr(),
        "GET",
        "/ari/asterisk/ping",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(server.addr(), "POST", "/ari/bridges", Some(&auth), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), json!({"message": "Write access denied"}));
    // The default user still exists and may write.
    let r = request(
        server.addr(),
        "POST",
        "/ari/asterisk/variable?variable=X&value=1",
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn unknown_path_is_404_text_plain() {
    let server = MockServer::start();
    for path in ["/nothing/here", "/ari/nonsense", "/ari", "/favicon.ico"] {
        let r = get(server.addr(), path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("content-type"), Some("text/plain"), "{path}");
        assert_eq!(r.text(), "404: Not Found", "{path}");
        assert_eq!(r.header("content-length"), Some("14"), "{path}");
    }
}

#[tokio::test]
async fn void_operation_answers_204_without_body() {
    let server = MockServer::start();
    let r = request(
        server.addr(),
        "POST",
        "/ari/asterisk/variable?variable=GLOBALX&value=v1",
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);
}

#[tokio::test]
async fn content_length_always_and_keep_alive() {
    let server = MockServer::start();
    let auth = basic("asterisk", "asterisk");
    let mut c = Http::connect(server.addr()).await.expect("connect");
    for path in [
        "/ari/asterisk/ping",
        "/ari/channels",
        "/ari/channels/nope",
        "/nope",
    ] {
        let r = c
            .send("GET", path, Some(&auth), None)
            .await
            .expect("same connection");
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str()),
            "{path}"
        );
        assert_eq!(r.header("transfer-encoding"), None, "{path}");
        assert_ne!(r.header("connection"), Some("close"), "{path}");
    }
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn json_body_and_query_reach_the_log() {
    let server = MockServer::start();
    server
        .expect("POST", "channels/abc/variable")
        .respond_empty(204);
    let r = request(
        server.addr(),
        "POST",
        "/ari/channels/abc/variable?variable=CALLERID%28name%29&value=A+b",
        Some(&basic("asterisk", "asterisk")),
        Some(("application/json", br#"{"variables":{"x":"y"}}"#.to_vec())),
    )
    .await;
    assert_eq!(r.status, 204);
    let log = server.requests();
    assert_eq!(log.len(), 1);
    let l = &log[0];
    assert_eq!(l.transport, Transport::Http);
    assert_eq!(l.method, "POST");
    assert_eq!(l.path, "channels/abc/variable");
    assert_eq!(l.segments, vec!["channels", "abc", "variable"]);
    assert_eq!(l.query_param("variable"), Some("CALLERID(name)"));
    assert_eq!(l.query_param("value"), Some("A b"));
    assert_eq!(l.body, Some(json!({"variables": {"x": "y"}})));
    assert_eq!(l.user.as_deref(), Some("asterisk"));
    assert_eq!(l.status, 204);
}

#[tokio::test]
async fn invalid_json_body_is_400() {
    let server = MockServer::start();
    let r = request(
        server.addr(),
        "POST",
        "/ari/channels",
        Some(&basic("asterisk", "asterisk")),
        Some(("application/json", b"{not json".to_vec())),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"message": "Error parsing request body"}));
}

#[tokio::test]
async fn encoded_slash_stays_in_one_segment() {
    let server = MockServer::start();
    server
        .expect("GET", "recordings/stored/sub%2Fdir-rec")
        .respond(200, json!({"name": "sub/dir-rec", "format": "wav"}));
    let r = get(server.addr(), "/ari/recordings/stored/sub%2Fdir-rec").await;
    assert_eq!(r.status, 200);
    let log = server.requests();
    assert_eq!(log[0].segments, vec!["recordings", "stored", "sub/dir-rec"]);
}
