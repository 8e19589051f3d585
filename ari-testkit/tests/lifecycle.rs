//! Start, api-docs serving, and clean shutdown.

mod common;

use ari_testkit::{MockServer, StartError};
use common::{get, next_msg, ws_connect, Http};
use serde_json::Value;

#[tokio::test]
async fn drop_closes_sockets_and_frees_the_port() {
    let server = MockServer::start();
    let addr = server.addr();
    let mut ws = ws_connect(addr, "app=a").await;
    let mut keep_alive = Http::connect(addr).await.expect("connect");
    let auth = common::basic("asterisk", "asterisk");
    assert_eq!(
        keep_alive
            .send("GET", "/ari/asterisk/ping", Some(&auth), None)
            .await
            .expect("first request")
            .status,
        200
    );
    drop(server);
    // The WebSocket ends.
    loop {
        match next_msg(&mut ws).await {
            None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => {
                break
            }
            Some(Ok(_)) => continue,
        }
    }
    // The kept-alive connection is closed.
    assert!(keep_alive
        .send("GET", "/ari/asterisk/ping", Some(&auth), None)
        .await
        .is_err());
    // Nobody listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The port can be bound again.
    let again = MockServer::builder().port(addr.port()).start();
    assert_eq!(again.addr(), addr);
    assert_eq!(get(addr, "/ari/asterisk/ping").await.status, 200);
}

#[test]
fn start_and_drop_without_a_runtime() {
    let server = MockServer::start();
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(
        server.ws_url(),
        format!("ws://{}/ari/events", server.addr())
    );
    assert_eq!(server.ari_url(), format!("{}/ari", server.base_url()));
    assert_eq!(
        (server.username(), server.password()),
        ("asterisk", "asterisk")
    );
    drop(server);
}

#[test]
fn binding_a_busy_port_is_an_error() {
    let first = MockServer::start();
    let second = MockServer::builder().port(first.port()).try_start();
    assert!(matches!(second, Err(StartError::Io(_))), "{second:?}");
}

#[test]
fn configured_users_replace_the_default() {
    let server = MockServer::builder().user("alice", "secret").start();
    assert_eq!((server.username(), server.password()), ("alice", "secret"));
}

fn spec_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ari-testkit-spec-{}-{}",
        std::process::id(),
        std::thread::current()
            .name()
            .unwrap_or("t")
            .replace("::", "_")
    ));
    std::fs::create_dir_all(dir.join("api-docs")).expect("mkdir");
    std::fs::write(
        dir.join("resources.json"),
        r#"{"apiVersion":"12.0.0","swaggerVersion":"1.1","basePath":"http://localhost:8088/ari",
           "apis":[{"path":"/api-docs/channels.{format}","description":"Channel resources"}]}"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("api-docs/channels.json"),
        r#"{"apiVersion":"2.0.0","swaggerVersion":"1.1","basePath":"http://localhost:8088/ari",
           "resourcePath":"/api-docs/channels.{format}","apis":[],"models":{}}"#,
    )
    .expect("write");
    dir
}

#[tokio::test]
async fn api_docs_are_served_with_base_path_rewritten() {
    let dir = spec_dir();
    let server = MockServer::builder().api_docs(&dir).start();
    let base = format!("http://{}/ari", server.addr());
    let r = get(server.addr(), "/ari/api-docs/resources.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = r.json();
    assert_eq!(v["basePath"], base.as_str());
    assert_eq!(v["apis"][0]["path"], "/api-docs/channels.{format}");
    let r = get(server.addr(), "/ari/api-docs/channels.json").await;
    assert_eq!(r.json()["basePath"], base.as_str());
    assert_eq!(r.json()["resourcePath"], "/api-docs/channels.{format}");
    let r = get(server.addr(), "/ari/api-docs/nope.json").await;
    assert_eq!(r.status, 404);
    let r = get(server.addr(), "/ari/api-docs/..%2Fresources.json").await;
    assert_eq!(r.status, 404);
    // Auth applies as to every /ari/ path.
    let r = common::request(
        server.addr(),
        "GET",
        "/ari/api-docs/resources.json",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_api_docs_directory_is_a_start_error() {
    let r = MockServer::builder()
        .api_docs("/nonexistent/ari-spec")
        .try_start();
    assert!(matches!(r, Err(StartError::ApiDocs(_))), "{r:?}");
}

#[test]
fn log_lines_describe_what_happens() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let server = MockServer::builder()
        .on_log(move |l| sink.lock().expect("lock").push(l.to_owned()))
        .start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        get(server.addr(), "/ari/asterisk/ping").await;
    });
    drop(server);
    let lines = lines.lock().expect("lock");
    assert!(
        lines.iter().any(|l| l.contains("listening on")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("GET asterisk/ping") && l.contains("200")),
        "{lines:?}"
    );
}
