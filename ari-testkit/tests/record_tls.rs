//! `ari-mock record --upstream https://… [--upstream-ca FILE]`: the recorder in front of the
//! simulated Asterisk served over TLS (a rustls terminator with a certificate made here, in
//! front of the plain simulator). REST and the events WebSocket go through and are recorded
//! when the certificate is trusted; without the CA the upstream is refused (502, counted).

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ari_testkit::record::{RecordError, Recorder};
use ari_testkit::MockServer;
use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// A self-signed certificate for `127.0.0.1`: the server configuration and the PEM a client
/// must trust.
fn self_signed() -> (Arc<rustls::ServerConfig>, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("a server configuration");
    (Arc::new(config), ck.cert.pem())
}

/// Serves `backend` over TLS on a free loopback port: each TLS connection relayed to it.
async fn tls_front(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ari-record-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// One HTTP/1.1 GET through the recorder, on a blocking socket: (status line, body).
fn get(recorder: SocketAddr, path: &str, user: &str, password: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(recorder).expect("connect to the recorder");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {recorder}\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("request written");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

fn lines(path: PathBuf) -> Vec<Value> {
    std::fs::read_to_string(&path)
        .expect("recording file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_its_ca_is_recorded_rest_and_websocket() {
    let asterisk = MockServer::start();
    let (config, pem) = self_signed();
    let front = tls_front(config, asterisk.addr()).await;
    let dir = scratch("trusted");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pem).expect("CA written");
    let out = dir.join("rec");
    let recorder = Recorder::builder(&format!("https://127.0.0.1:{}", front.port()), &out)
        .upstream_ca(&ca)
        .start()
        .expect("the recorder starts");
    let addr = recorder.addr();
    let (user, password) = (
        asterisk.username().to_owned(),
        asterisk.password().to_owned(),
    );

    let (status, body) =
        tokio::task::spawn_blocking(move || get(addr, "/ari/asterisk/ping", &user, &password))
            .await
            .expect("the request ran");
    assert!(status.contains(" 200 "), "{status}");
    let ping: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(ping["ping"], "pong");

    // The events WebSocket is relayed over wss upstream.
    let url = format!(
        "ws://{addr}/ari/events?app=hello&api_key={}:{}",
        asterisk.username(),
        asterisk.password()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade goes through the recorder");
    let mut pushed = false;
    for _ in 0..500 {
        if asterisk.push_event(
            "hello",
            json!({"type": "ChannelUserevent", "eventname": "over-tls"}),
        ) > 0
        {
            pushed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(pushed, "the application registered through the recorder");
    let frame = loop {
        match ws.next().await.expect("a frame").expect("a frame") {
            tokio_tungstenite::tungstenite::Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert!(frame.contains("over-tls"), "{frame}");
    drop(ws);
    let stats = recorder.finish();
    assert_eq!(stats.upstream_errors, 0, "{stats:?}");

    let rest = lines(out.join("rest.jsonl"));
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(
        (rest[0]["path"].as_str(), rest[0]["status"].as_u64()),
        (Some("asterisk/ping"), Some(200))
    );
    let events = lines(out.join("events.jsonl"));
    assert!(
        events
            .iter()
            .any(|e| e["frame"].as_str().unwrap_or("").contains("over-tls")),
        "{events:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_an_untrusted_certificate_is_a_counted_502() {
    let asterisk = MockServer::start();
    let (config, _) = self_signed();
    let front = tls_front(config, asterisk.addr()).await;
    let dir = scratch("untrusted");
    let recorder = Recorder::builder(
        &format!("https://127.0.0.1:{}", front.port()),
        dir.join("rec"),
    )
    .start()
    .expect("the recorder starts");
    let addr = recorder.addr();
    let (status, body) = tokio::task::spawn_blocking(move || {
        get(addr, "/ari/asterisk/ping", "asterisk", "asterisk")
    })
    .await
    .expect("the request ran");
    assert!(status.contains(" 502 "), "{status}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    let message = body["message"].as_str().unwrap_or("");
    assert!(message.contains("TLS handshake failed"), "{message}");
    assert_eq!(recorder.finish().upstream_errors, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_ca_file_without_certificate_or_with_plain_http_is_refused() {
    let dir = scratch("bad-ca");
    let ca = dir.join("empty.pem");
    std::fs::write(&ca, "not a certificate\n").expect("written");
    let err = Recorder::builder("https://127.0.0.1:1", dir.join("rec"))
        .upstream_ca(&ca)
        .start()
        .expect_err("no certificate in the CA file");
    assert!(matches!(err, RecordError::Upstream(_)), "{err:?}");
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = Recorder::builder("http://127.0.0.1:1", dir.join("rec"))
        .upstream_ca(&ca)
        .start()
        .expect_err("a CA file with http://");
    assert!(err.to_string().contains("only used with an https"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
