//! The tokio runtime's transport on its own: HTTP (pool, limits, errors), WebSocket, TLS.
//!
//! Every server here listens on 127.0.0.1 and is started by the test itself. Operations that
//! must fail are wrapped in a generous `tokio::time::timeout` only to prove they do not hang.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ari_tokio::{
    Executor, TokioRuntime, Transport, TransportError, TransportErrorKind, TransportOptions,
    WsMessage,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A password that must never show up in an error.
const SECRET: &str = "s3cr3t-pa55";
/// `Basic base64("asterisk:s3cr3t-pa55")`.
const AUTH: &str = "Basic YXN0ZXJpc2s6czNjcjN0LXBhNTU=";
/// Generous bound for liveness checks (never a timing assertion).
const LIVENESS: Duration = Duration::from_secs(30);

fn opts() -> TransportOptions {
    let mut o = TransportOptions::default();
    o.connect_timeout = Duration::from_secs(5);
    o
}

fn get(url: &str) -> http::Request<Vec<u8>> {
    let uri: http::Uri = url.parse().expect("test URI");
    let host = uri.authority().expect("authority").to_string();
    http::Request::get(uri)
        .header(http::header::HOST, host)
        .header(http::header::AUTHORIZATION, AUTH)
        .body(Vec::new())
        .expect("test request")
}

fn ws_request(url: &str) -> http::Request<()> {
    let uri: http::Uri = url.parse().expect("test URI");
    let host = uri.authority().expect("authority").to_string();
    http::Request::get(uri)
        .header(http::header::HOST, host)
        .header(http::header::AUTHORIZATION, AUTH)
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, "ari")
        .body(())
        .expect("test request")
}

/// The error text and Debug output carry no credential.
fn assert_no_secret(e: &TransportError) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(!text.contains(AUTH), "auth header leaked: {text}");
        assert!(!text.contains("YXN0ZXJpc2s6"), "auth header leaked: {text}");
        assert!(!text.contains("api_key"), "query leaked: {text}");
    }
}

async fn expect_err<T: std::fmt::Debug>(
    fut: impl std::future::Future<Output = Result<T, TransportError>>,
) -> TransportError {
    match tokio::time::timeout(LIVENESS, fut).await {
        Ok(Err(e)) => e,
        Ok(Ok(v)) => panic!("expected an error, got {v:?}"),
        Err(_) => panic!("the operation hung"),
    }
}

async fn expect_ok<T>(fut: impl std::future::Future<Output = Result<T, TransportError>>) -> T {
    match tokio::time::timeout(LIVENESS, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("unexpected error: {e}"),
        Err(_) => panic!("the operation hung"),
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny hyper server counting its connections.

/// Answers `/big?n=N` with N bytes (Content-Length), anything else with a text describing the
/// request as received: `<method> <request-target> host=<host> auth=<yes|no> body=<len>`.
async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let target = req.uri().to_string();
    let method = req.method().to_string();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let auth = req.headers().get(http::header::AUTHORIZATION).is_some();
    if req.uri().path() == "/big" {
        let n: usize = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return Ok(hyper::Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
    let text = format!(
        "{method} {target} host={host} auth={} body={}",
        if auth { "yes" } else { "no" },
        body.unwrap_or(0)
    );
    Ok(hyper::Response::new(Full::new(Bytes::from(text))))
}

/// Serves `handle` over plain HTTP/1.1 (or TLS with `tls`), counting accepted connections.
async fn http_server(tls: Option<tokio_rustls::TlsAcceptor>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_http(tcp).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_http(stream).await;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) {
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service_fn(handle))
        .await;
}

/// A raw server answering every request on a connection with `response` (bytes as given).
async fn raw_server(response: &'static [u8]) -> SocketAddr {
    raw_server_counting(response, false).await.0
}

/// [`raw_server`], counting connections; with `close`, each connection is closed after its
/// first response.
async fn raw_server_counting(
    response: &'static [u8],
    close: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if tcp.write_all(response).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_keep_alive_reuses_one_connection() {
    let (addr, accepted) = http_server(None).await;
    let rt = TokioRuntime::new();
    for i in 0..5 {
        let url = format!("http://{addr}/ari/channels/{i}?app=a%2Cb");
        let resp = expect_ok(rt.http(get(&url), &opts())).await;
        assert_eq!(resp.status(), 200);
        let text = String::from_utf8(resp.body().to_vec()).expect("utf-8");
        // Origin-form on the wire, Host and Authorization passed through.
        assert_eq!(
            text,
            format!("GET /ari/channels/{i}?app=a%2Cb host={addr} auth=yes body=0")
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connection_close_is_not_reused() {
    let (addr, accepted) = raw_server_counting(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        true,
    )
    .await;
    let rt = TokioRuntime::new();
    for _ in 0..3 {
        let resp = expect_ok(rt.http(get(&format!("http://{addr}/ari/x")), &opts())).await;
        assert_eq!(&resp.body()[..], b"ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pool_settings_limit_reuse() {
    let (addr, accepted) = http_server(None).await;
    // Idle connections expire at once: every request opens a new one.
    let rt = TokioRuntime::builder()
        .pool_idle_timeout(Duration::ZERO)
        .build()
        .expect("runtime");
    for _ in 0..3 {
        expect_ok(rt.http(get(&format!("http://{addr}/ari/x")), &opts())).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    // No idle connections kept at all.
    let rt = TokioRuntime::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("runtime");
    for _ in 0..3 {
        expect_ok(rt.http(get(&format!("http://{addr}/ari/x")), &opts())).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sends_body_and_method() {
    let (addr, _) = http_server(None).await;
    let rt = TokioRuntime::new();
    let req = http::Request::post(format!("http://{addr}/ari/channels/x/variable"))
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(br#"{"variables":{"A":"1"}}"#.to_vec())
        .expect("request");
    let resp = expect_ok(rt.http(req, &opts())).await;
    let text = String::from_utf8(resp.body().to_vec()).expect("utf-8");
    assert_eq!(
        text,
        format!("POST /ari/channels/x/variable host={addr} auth=no body=23")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_concurrent_requests_all_complete() {
    let (addr, accepted) = http_server(None).await;
    let rt = TokioRuntime::new();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            let url = format!("http://{addr}/ari/bridges/{i}");
            rt.http(get(&url), &opts()).await
        }));
    }
    for t in tasks {
        let resp = expect_ok(async { t.await.expect("task") }).await;
        assert_eq!(resp.status(), 200);
    }
    // At most one connection per concurrent request; afterwards they are pooled.
    let after_burst = accepted.load(Ordering::SeqCst);
    assert!((1..=8).contains(&after_burst), "{after_burst} connections");
    for i in 0..4 {
        let url = format!("http://{addr}/ari/bridges/again{i}");
        expect_ok(rt.http(get(&url), &opts())).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), after_burst, "pooled reuse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_body_limit_is_too_large() {
    let (addr, accepted) = http_server(None).await;
    let rt = TokioRuntime::new();
    let mut o = opts();
    o.max_body_bytes = 100;
    // Exactly at the limit: fine.
    let ok = expect_ok(rt.http(get(&format!("http://{addr}/big?n=100")), &o)).await;
    assert_eq!(ok.body().len(), 100);
    // Over the limit (Content-Length announced).
    let e = expect_err(rt.http(get(&format!("http://{addr}/big?n=101")), &o)).await;
    assert_eq!(e.kind, TransportErrorKind::TooLarge, "{e}");
    assert_no_secret(&e);
    // The connection that carried the oversized body is not reused.
    let before = accepted.load(Ordering::SeqCst);
    expect_ok(rt.http(get(&format!("http://{addr}/big?n=1")), &o)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_chunked_body_limit_is_too_large() {
    // No Content-Length: the limit applies while reading.
    let addr = raw_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          40\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\
          40\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\
          0\r\n\r\n",
    )
    .await;
    let rt = TokioRuntime::new();
    let mut o = opts();
    o.max_body_bytes = 100;
    let e = expect_err(rt.http(get(&format!("http://{addr}/ari/x")), &o)).await;
    assert_eq!(e.kind, TransportErrorKind::TooLarge, "{e}");
    o.max_body_bytes = 128;
    let ok = expect_ok(rt.http(get(&format!("http://{addr}/ari/x")), &o)).await;
    assert_eq!(ok.body().len(), 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_read_until_close_body_limit() {
    // Neither Content-Length nor chunked: the body runs until the server closes.
    let (addr, _) = raw_server_counting(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n\
          0123456789012345678901234567890123456789012345678901234567890123456789",
        true,
    )
    .await;
    let rt = TokioRuntime::new();
    let mut o = opts();
    o.max_body_bytes = 50;
    let e = expect_err(rt.http(get(&format!("http://{addr}/ari/x")), &o)).await;
    assert_eq!(e.kind, TransportErrorKind::TooLarge, "{e}");
    o.max_body_bytes = 70;
    let ok = expect_ok(rt.http(get(&format!("http://{addr}/ari/x")), &o)).await;
    assert_eq!(ok.body().len(), 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_with_connection_close() {
    let (addr, accepted) = http_server(None).await;
    let rt = TokioRuntime::new();
    for _ in 0..2 {
        let mut req = get(&format!("http://{addr}/ari/x"));
        req.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        expect_ok(rt.http(req, &opts())).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_request_closes_its_connection() {
    // A server that reads the request, never answers, and reports when the client hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let mut buf = [0u8; 1024];
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let rt = TokioRuntime::new();
    // The caller gives up (as the client's request timeout does): the future is dropped.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        rt.http(get(&format!("http://{addr}/ari/x")), &opts()),
    )
    .await;
    assert!(gave_up.is_err(), "the server never answers");
    tokio::time::timeout(LIVENESS, closed_rx)
        .await
        .expect("the connection was closed")
        .expect("reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_garbage_response_is_protocol_error() {
    let addr = raw_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let rt = TokioRuntime::new();
    let e = expect_err(rt.http(
        get(&format!("http://{addr}/ari/x?api_key=a:{SECRET}")),
        &opts(),
    ))
    .await;
    assert_eq!(e.kind, TransportErrorKind::Protocol, "{e}");
    assert_no_secret(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connection_refused_is_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let rt = TokioRuntime::new();
    let url = format!("http://{addr}/ari/asterisk/info?api_key=asterisk:{SECRET}");
    let e = expect_err(rt.http(get(&url), &opts())).await;
    assert_eq!(e.kind, TransportErrorKind::Connect, "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_no_secret(&e);
    // The WebSocket too.
    let e = expect_err(rt.ws_connect(
        ws_request(&format!("ws://{addr}/ari/events?app=a")),
        &opts(),
    ))
    .await;
    assert_eq!(e.kind, TransportErrorKind::Connect, "{e}");
    assert_no_secret(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_when_the_server_never_answers() {
    // The kernel completes the TCP handshake but nothing is ever read or written: the TLS
    // handshake and the WebSocket upgrade cannot finish, so the connect timeout applies.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut o = opts();
    o.connect_timeout = Duration::from_millis(200);
    let rt = TokioRuntime::new();

    let url = format!("https://{addr}/ari/asterisk/info?api_key=asterisk:{SECRET}");
    let e = expect_err(rt.http(get(&url), &o)).await;
    assert_eq!(e.kind, TransportErrorKind::Timeout, "{e}");
    assert_no_secret(&e);

    let url = format!("ws://{addr}/ari/events?app=a&api_key=asterisk:{SECRET}");
    let e = expect_err(rt.ws_connect(ws_request(&url), &o)).await;
    assert_eq!(e.kind, TransportErrorKind::Timeout, "{e}");
    assert_no_secret(&e);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uris_are_errors_not_panics() {
    let rt = TokioRuntime::new();
    let relative = http::Request::get("/ari/asterisk/info")
        .body(Vec::new())
        .expect("request");
    let e = expect_err(rt.http(relative, &opts())).await;
    assert_eq!(e.kind, TransportErrorKind::Protocol);
    let ftp = http::Request::get("ftp://127.0.0.1/ari")
        .body(Vec::new())
        .expect("request");
    let e = expect_err(rt.http(ftp, &opts())).await;
    assert_eq!(e.kind, TransportErrorKind::Protocol);
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// A WebSocket server: requires [`AUTH`] (401 otherwise), answers subprotocol `ari`, then on
/// connect sends a ping `hi` and, once the pong came back, `pong-ok`; afterwards it echoes text
/// frames and answers the text `big` with a frame of 10,000 bytes.
async fn ws_server(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_ws(tcp).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_ws(stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[allow(clippy::result_large_err)] // the callback type is tungstenite's
async fn serve_ws<S: AsyncRead + AsyncWrite + Unpin>(io: S) {
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let authorized = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v == AUTH);
        if !authorized {
            let mut err =
                ErrorResponse::new(Some(r#"{"message":"Authentication required"}"#.into()));
            *err.status_mut() = http::StatusCode::UNAUTHORIZED;
            return Err(err);
        }
        if req
            .headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .is_some()
        {
            resp.headers_mut().insert(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                http::HeaderValue::from_static("ari"),
            );
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(io, check).await else {
        return;
    };
    if ws
        .send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Pong(p) if &p[..] == b"hi" => Message::text("pong-ok"),
            Message::Text(t) if t.as_str() == "big" => Message::text("y".repeat(10_000)),
            Message::Text(t) => Message::Text(t),
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

/// The next message that is not a ping or pong.
async fn next_data(ws: &mut ari_tokio::TokioWs) -> Result<WsMessage, TransportError> {
    loop {
        match tokio::time::timeout(LIVENESS, ws.next()).await {
            Err(_) => panic!("the WebSocket hung"),
            Ok(None) => return Err(TransportError::new(TransportErrorKind::Closed, "ended")),
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(other)) => return other,
        }
    }
}

/// Connect, answer the server's ping, echo text, ping the server.
async fn ws_exchange(rt: &TokioRuntime, url: &str) {
    let mut ws = expect_ok(rt.ws_connect(ws_request(url), &opts())).await;
    // The server's ping comes first and is yielded; the pong goes back by itself.
    match tokio::time::timeout(LIVENESS, ws.next()).await {
        Ok(Some(Ok(WsMessage::Ping(p)))) => assert_eq!(p, &b"hi"[..]),
        other => panic!("expected the server's ping, got {other:?}"),
    }
    assert_eq!(
        next_data(&mut ws).await.expect("message"),
        WsMessage::Text("pong-ok".into())
    );
    expect_ok(ws.send(WsMessage::Text("hello ARI".into()))).await;
    assert_eq!(
        next_data(&mut ws).await.expect("echo"),
        WsMessage::Text("hello ARI".into())
    );
    // Our ping is answered by the server's WebSocket layer.
    expect_ok(ws.send(WsMessage::Ping(Bytes::from_static(b"p1")))).await;
    let pong = loop {
        match tokio::time::timeout(LIVENESS, ws.next()).await {
            Ok(Some(Ok(WsMessage::Pong(p)))) => break p,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    };
    assert_eq!(pong, &b"p1"[..]);
    expect_ok(ws.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_connect_echo_ping_pong() {
    let addr = ws_server(None).await;
    ws_exchange(
        &TokioRuntime::new(),
        &format!("ws://{addr}/ari/events?app=hello"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_wrong_credentials_are_rejected_with_401() {
    let addr = ws_server(None).await;
    let rt = TokioRuntime::new();
    let url = format!("ws://{addr}/ari/events?app=hello");
    let mut req = ws_request(&url);
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Basic YXN0ZXJpc2s6czNjcjN0LXBhNTU6d3Jvbmc="),
    );
    let e = expect_err(rt.ws_connect(req, &opts())).await;
    assert_eq!(e.kind, TransportErrorKind::Rejected, "{e}");
    assert_eq!(e.status, Some(401));
    assert_no_secret(&e);
    assert!(!e
        .to_string()
        .contains("YXN0ZXJpc2s6czNjcjN0LXBhNTU6d3Jvbmc="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_frame_over_the_limit_is_too_large() {
    let addr = ws_server(None).await;
    let rt = TokioRuntime::new();
    let mut o = opts();
    o.max_frame_bytes = 1_000;
    let mut ws = expect_ok(rt.ws_connect(ws_request(&format!("ws://{addr}/ari/events")), &o)).await;
    expect_ok(ws.send(WsMessage::Text("big".into()))).await;
    let e = next_data(&mut ws).await.expect_err("oversized frame");
    assert_eq!(e.kind, TransportErrorKind::TooLarge, "{e}");
    // After an error the stream ends.
    let end = tokio::time::timeout(LIVENESS, ws.next())
        .await
        .expect("no hang");
    assert!(end.is_none());
}

// ---------------------------------------------------------------------------------------------
// TLS

struct SelfSigned {
    pem: String,
    der: Vec<u8>,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn self_signed() -> SelfSigned {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let der = ck.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("server config");
    SelfSigned {
        pem: ck.cert.pem(),
        der,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_untrusted_certificate_fails_then_added_root_succeeds() {
    let cert = self_signed();
    let (addr, _) = http_server(Some(cert.acceptor.clone())).await;
    let url = format!("https://{addr}/ari/asterisk/info?api_key=asterisk:{SECRET}");

    let e = expect_err(TokioRuntime::new().http(get(&url), &opts())).await;
    assert_eq!(e.kind, TransportErrorKind::Tls, "{e}");
    assert_no_secret(&e);

    let trusting = TokioRuntime::builder()
        .add_root_certificate_pem(&cert.pem)
        .build()
        .expect("runtime");
    for _ in 0..2 {
        let resp = expect_ok(trusting.http(get(&url), &opts())).await;
        assert_eq!(resp.status(), 200);
        let text = String::from_utf8(resp.body().to_vec()).expect("utf-8");
        assert!(
            text.starts_with("GET /ari/asterisk/info?api_key="),
            "{text}"
        );
    }

    // DER, by host name.
    let by_name = format!("https://localhost:{}/ari/asterisk/info", addr.port());
    let der = TokioRuntime::builder()
        .built_in_roots(false)
        .add_root_certificate_der(cert.der.clone())
        .build()
        .expect("runtime");
    let resp = expect_ok(der.http(get(&by_name), &opts())).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_whole_rustls_config() {
    let cert = self_signed();
    let (addr, _) = http_server(Some(cert.acceptor.clone())).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let rt = TokioRuntime::builder()
        .tls_config(config)
        .build()
        .expect("runtime");
    let resp = expect_ok(rt.http(get(&format!("https://{addr}/ari/x")), &opts())).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_untrusted_certificate_fails_then_added_root_succeeds() {
    let cert = self_signed();
    let addr = ws_server(Some(cert.acceptor.clone())).await;
    let url = format!("wss://{addr}/ari/events?app=hello&api_key=asterisk:{SECRET}");

    let e = expect_err(TokioRuntime::new().ws_connect(ws_request(&url), &opts())).await;
    assert_eq!(e.kind, TransportErrorKind::Tls, "{e}");
    assert_no_secret(&e);

    let trusting = TokioRuntime::builder()
        .add_root_certificate_pem(cert.pem.as_bytes())
        .build()
        .expect("runtime");
    ws_exchange(&trusting, &url).await;
}

#[test]
fn invalid_root_certificates_are_build_errors() {
    let e = TokioRuntime::builder()
        .add_root_certificate_pem("not a certificate")
        .build()
        .expect_err("no PEM section");
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    let e = TokioRuntime::builder()
        .add_root_certificate_der(vec![0x30, 0x03, 0x01, 0x02, 0x03])
        .build()
        .expect_err("bad DER");
    assert!(e.to_string().contains("DER"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_sleep_and_now_agree() {
    let rt = TokioRuntime::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let deadline = rt.now() + Duration::from_millis(20);
    let sleeper = rt.sleep_until(deadline);
    let clock = rt.clone();
    rt.spawn(async move {
        sleeper.await;
        let _ = tx.send(clock.now() >= deadline);
    });
    let reached = tokio::time::timeout(LIVENESS, rx)
        .await
        .expect("no hang")
        .expect("sent");
    assert!(reached, "sleep_until returned before its deadline");
    // A deadline in the past completes at once.
    tokio::time::timeout(
        LIVENESS,
        rt.sleep_until(rt.now() - Duration::from_millis(1)),
    )
    .await
    .expect("no hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_request_with_upgrade_headers_already_set() {
    // As `ari_proto::session` builds it: every upgrade header present (lower-case names), an
    // `http` scheme is accepted as well.
    let addr = ws_server(None).await;
    let mut req = ws_request(&format!("http://{addr}/ari/events?app=hello"));
    let h = req.headers_mut();
    h.insert("connection", http::HeaderValue::from_static("Upgrade"));
    h.insert("upgrade", http::HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-version",
        http::HeaderValue::from_static("13"),
    );
    h.insert(
        "sec-websocket-key",
        http::HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    let mut ws = expect_ok(TokioRuntime::new().ws_connect(req, &opts())).await;
    assert_eq!(
        next_data(&mut ws).await.expect("message"),
        WsMessage::Text("pong-ok".into())
    );
}

/// The future of one HTTP exchange fits the allocator's per-thread cache (glibc's tcache
/// serves blocks up to 1,032 bytes): the client boxes it for every request, and when it was
/// 2.5 KiB every request paid for cold memory (see the README, Performance). A size, not a
/// timing.
#[test]
fn an_http_exchange_future_fits_the_allocators_thread_cache() {
    let rt = TokioRuntime::new();
    let fut = rt.http(get("http://127.0.0.1:8088/ari/channels/1"), &opts());
    let size = std::mem::size_of_val(&fut);
    assert!(size <= 1032, "the HTTP exchange's future is {size} bytes");
}
