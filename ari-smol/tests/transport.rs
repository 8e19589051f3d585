//! Transport tests for `SmolRuntime` against small local servers (HTTP/1.1, WebSocket, TLS)
//! written with async-net, async-tungstenite and futures-rustls. Everything on 127.0.0.1.

use ari_smol::{
    Executor, SmolExecutor, SmolRuntime, Transport, TransportErrorKind, TransportOptions, WsMessage,
};
use async_net::{TcpListener, TcpStream};
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::Message;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Basic base64("user:secret").
const AUTH: &str = "Basic dXNlcjpzZWNyZXQ=";
/// Generous bound for liveness: a test that hangs fails instead.
const LIVENESS: Duration = Duration::from_secs(20);

fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(async {
        futures_lite::future::or(fut, async {
            async_io::Timer::after(LIVENESS).await;
            panic!("test did not finish within {LIVENESS:?}");
        })
        .await
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 server.

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Reply {
    bytes: Vec<u8>,
    /// Close the connection after writing (without saying so).
    close: bool,
    /// Wait this long before answering.
    delay: Option<Duration>,
}

fn reply(status: &str, content_type: &str, body: &[u8]) -> Reply {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    Reply {
        bytes,
        close: false,
        delay: None,
    }
}

fn ok_json(body: &str) -> Reply {
    reply("200 OK", "application/json", body.as_bytes())
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Connections the server has closed after an answer with `close: true`.
    closed: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    /// Waits until the server has closed `n` connections (no time limit of its own: the test
    /// harness's timeout bounds it).
    async fn wait_closed(&self, n: usize) {
        while self.closed.load(Ordering::SeqCst) < n {
            async_io::Timer::after(Duration::from_millis(1)).await;
        }
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }
}

async fn http_server(
    tls: Option<futures_rustls::TlsAcceptor>,
    handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        closed: Arc::default(),
        seen: Arc::default(),
    };
    let handler: Handler = Arc::new(handler);
    let s = server.clone();
    smol::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (handler, seen, tls) = (handler.clone(), s.seen.clone(), tls.clone());
            let closed = s.closed.clone();
            smol::spawn(async move {
                match tls {
                    None => serve_conn(tcp, handler, seen, closed).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_conn(stream, handler, seen, closed).await
                        }
                    }
                }
            })
            .detach();
        }
    })
    .detach();
    server
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        // Request head.
        let (consumed, mut req) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = parsed.parse(&buf) {
                let req = Seen {
                    method: parsed.method.unwrap_or("").to_owned(),
                    path: parsed.path.unwrap_or("").to_owned(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
                break (n, req);
            }
            let mut chunk = [0u8; 4096];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..consumed);
        let len: usize = req
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        req.body = buf.drain(..len).collect();
        let answer = handler(&req);
        seen.lock().unwrap().push(req);
        if let Some(delay) = answer.delay {
            async_io::Timer::after(delay).await;
        }
        if io.write_all(&answer.bytes).await.is_err() || io.flush().await.is_err() {
            return;
        }
        if answer.close {
            let _ = io.close().await;
            drop(io);
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Accepts TCP connections and never answers (holds them open).
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(async move {
        let mut held: Vec<TcpStream> = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    })
    .detach();
    addr
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

fn get(url: &str) -> http::Request<Vec<u8>> {
    http::Request::get(url)
        .header("Authorization", AUTH)
        .body(Vec::new())
        .unwrap()
}

fn opts() -> TransportOptions {
    TransportOptions::default()
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[test]
fn http_request_and_response_in_origin_form() {
    run(async {
        let server = http_server(None, |req| {
            ok_json(&format!(r#"{{"len":{}}}"#, req.body.len()))
        })
        .await;
        const BODY: &[u8] = br#"{"variables":{"CALLERID(name)":"Alice"}}"#;
        let rt = SmolRuntime::new();
        let url = server.url("http", "/ari/channels?endpoint=PJSIP%2F100&app=a,b");
        let req = http::Request::post(&url)
            .header("Host", format!("127.0.0.1:{}", server.addr.port()))
            .header("Authorization", AUTH)
            .header("Content-Type", "application/json")
            .body(BODY.to_vec())
            .unwrap();
        let resp = rt.http(req, &opts()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(
            &resp.body()[..],
            format!(r#"{{"len":{}}}"#, BODY.len()).as_bytes()
        );

        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/ari/channels?endpoint=PJSIP%2F100&app=a,b");
        assert_eq!(
            seen[0].header("host"),
            Some(format!("127.0.0.1:{}", server.addr.port()).as_str())
        );
        assert_eq!(seen[0].header("authorization"), Some(AUTH));
        assert_eq!(
            seen[0].header("content-length"),
            Some(BODY.len().to_string().as_str())
        );
        assert_eq!(seen[0].body, BODY);
    });
}

#[test]
fn http_host_header_added_when_missing_and_empty_post_has_length() {
    run(async {
        let server = http_server(None, |_| reply("204 No Content", "text/plain", b"")).await;
        let rt = SmolRuntime::new();
        let req = http::Request::post(server.url("http", "/ari/channels/c1/answer"))
            .body(Vec::new())
            .unwrap();
        let resp = rt.http(req, &opts()).await.unwrap();
        assert_eq!(resp.status(), 204);
        assert!(resp.body().is_empty());
        let seen = server.seen();
        assert_eq!(
            seen[0].header("host"),
            Some(format!("127.0.0.1:{}", server.addr.port()).as_str())
        );
        assert_eq!(seen[0].header("content-length"), Some("0"));
    });
}

#[test]
fn http_error_statuses_and_text_bodies_are_returned_as_responses() {
    run(async {
        let server = http_server(None, |_| {
            reply("404 Not Found", "text/plain", b"404: Not Found")
        })
        .await;
        let rt = SmolRuntime::new();
        let resp = rt
            .http(get(&server.url("http", "/ari/nope")), &opts())
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(&resp.body()[..], b"404: Not Found");
    });
}

#[test]
fn keep_alive_reuses_one_connection_for_sequential_requests() {
    run(async {
        let server = http_server(None, |req| {
            ok_json(&format!(r#"{{"path":"{}"}}"#, req.path))
        })
        .await;
        let rt = SmolRuntime::new();
        for i in 0..5 {
            let resp = rt
                .http(get(&server.url("http", &format!("/ari/x{i}"))), &opts())
                .await
                .unwrap();
            assert_eq!(
                &resp.body()[..],
                format!(r#"{{"path":"/ari/x{i}"}}"#).as_bytes()
            );
        }
        assert_eq!(server.connections(), 1);
        // Clones share the pool.
        let clone = rt.clone();
        clone
            .http(get(&server.url("http", "/ari/y")), &opts())
            .await
            .unwrap();
        assert_eq!(server.connections(), 1);
    });
}

/// A waker that counts its wake-ups.
struct CountWakes(AtomicUsize);

impl std::task::Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn handing_a_request_to_a_kept_alive_connection_does_not_wake_the_task() {
    // The hand-over of a request to hyper wakes the connection's future; the stack polls
    // that future in the same poll. Waking the task instead would poll the whole request
    // again through the executor (on async-io's `block_on`, a round of the reactor: five
    // system calls per request).
    run(async {
        let answered = Arc::new(AtomicUsize::new(0));
        let n = answered.clone();
        let server = http_server(None, move |_| {
            let mut r = ok_json("{}");
            if n.fetch_add(1, Ordering::SeqCst) > 0 {
                r.delay = Some(LIVENESS * 2); // the second request is never answered
            }
            r
        })
        .await;
        let rt = SmolRuntime::new();
        let url = server.url("http", "/ari/asterisk/info");
        rt.http(get(&url), &opts()).await.unwrap(); // opens the connection, pooled after
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut second = std::pin::pin!(rt.http(get(&url), &opts()));
        let polled = second
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending(), "the server does not answer");
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "a wake-up during the poll"
        );
        // That one poll wrote the request on the kept-alive connection.
        while server.seen().len() < 2 {
            async_io::Timer::after(Duration::from_millis(1)).await;
        }
        assert_eq!(server.connections(), 1);
    });
}

#[test]
fn concurrent_requests_open_more_connections_then_reuse_them() {
    run(async {
        let server = http_server(None, |_| Reply {
            delay: Some(Duration::from_millis(50)),
            ..ok_json("{}")
        })
        .await;
        let rt = SmolRuntime::new();
        let url = server.url("http", "/ari/slow");
        let (a, b, c) = futures_lite::future::zip(
            rt.http(get(&url), &opts()),
            futures_lite::future::zip(rt.http(get(&url), &opts()), rt.http(get(&url), &opts())),
        )
        .await
        .pipe(|(a, (b, c))| (a, b, c));
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(server.connections(), 3);
        for _ in 0..3 {
            rt.http(get(&url), &opts()).await.unwrap();
        }
        assert_eq!(server.connections(), 3);
    });
}

#[test]
fn max_connections_per_host_bounds_the_pool() {
    run(async {
        let server = http_server(None, |_| ok_json("{}")).await;
        let rt = SmolRuntime::builder()
            .pool_max_connections_per_host(1)
            .build()
            .unwrap();
        let url = server.url("http", "/ari/x");
        let o = opts();
        let results = futures_util::future::join_all((0..4).map(|_| rt.http(get(&url), &o))).await;
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(server.connections(), 1);
    });
}

#[test]
fn a_dropped_request_frees_its_connection_slot() {
    run(async {
        // The client applies request timeouts by dropping the future.
        let server = http_server(None, |req| {
            if req.path.ends_with("slow") {
                Reply {
                    delay: Some(Duration::from_secs(600)),
                    ..ok_json(r#"{"slow":true}"#)
                }
            } else {
                ok_json(r#"{"fast":true}"#)
            }
        })
        .await;
        let rt = SmolRuntime::builder()
            .pool_max_connections_per_host(1)
            .build()
            .unwrap();
        let slow = rt.http(get(&server.url("http", "/ari/slow")), &opts());
        let gave_up = futures_lite::future::or(async { slow.await.ok().map(|_| ()) }, async {
            async_io::Timer::after(Duration::from_millis(100)).await;
            None
        })
        .await;
        assert!(gave_up.is_none());
        // The slot is free again and the half-answered connection is not reused.
        let resp = rt
            .http(get(&server.url("http", "/ari/fast")), &opts())
            .await
            .unwrap();
        assert_eq!(&resp.body()[..], br#"{"fast":true}"#);
        assert_eq!(server.connections(), 2);
    });
}

#[test]
fn chunked_responses_are_decoded() {
    run(async {
        let server = http_server(None, |_| Reply {
            bytes: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
                .to_vec(),
            close: false,
            delay: None,
        })
        .await;
        let rt = SmolRuntime::new();
        for _ in 0..2 {
            let resp = rt
                .http(get(&server.url("http", "/ari/c")), &opts())
                .await
                .unwrap();
            assert_eq!(&resp.body()[..], b"hello world");
        }
        assert_eq!(server.connections(), 1);
    });
}

#[test]
fn interim_responses_are_skipped() {
    run(async {
        let server = http_server(None, |_| {
            let mut r = ok_json("{}");
            let mut bytes = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            bytes.append(&mut r.bytes);
            r.bytes = bytes;
            r
        })
        .await;
        let resp = SmolRuntime::new()
            .http(get(&server.url("http", "/ari/x")), &opts())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(&resp.body()[..], b"{}");
    });
}

#[test]
fn read_until_close_bodies_are_read() {
    run(async {
        let server = http_server(None, |_| Reply {
            bytes: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it".to_vec(),
            close: true,
            delay: None,
        })
        .await;
        let rt = SmolRuntime::new();
        for _ in 0..2 {
            let resp = rt
                .http(get(&server.url("http", "/ari/x")), &opts())
                .await
                .unwrap();
            assert_eq!(&resp.body()[..], b"all of it");
        }
        assert_eq!(server.connections(), 2);
    });
}

#[test]
fn body_over_the_limit_is_too_large() {
    run(async {
        let server = http_server(None, |req| {
            if req.path.ends_with("chunked") {
                let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for _ in 0..20 {
                    bytes.extend_from_slice(b"a\r\n0123456789\r\n");
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
                Reply {
                    bytes,
                    close: false,
                    delay: None,
                }
            } else if req.path.ends_with("until-close") {
                let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
                bytes.extend_from_slice(&[b'z'; 300]);
                Reply {
                    bytes,
                    close: true,
                    delay: None,
                }
            } else if req.path.ends_with("small") {
                ok_json("{}")
            } else {
                ok_json(&"x".repeat(1000))
            }
        })
        .await;
        let rt = SmolRuntime::new();
        let mut limited = opts();
        limited.max_body_bytes = 100;
        let err = rt
            .http(get(&server.url("http", "/ari/big")), &limited)
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::TooLarge, "{err}");
        let err = rt
            .http(get(&server.url("http", "/ari/chunked")), &limited)
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::TooLarge, "{err}");
        let err = rt
            .http(get(&server.url("http", "/ari/until-close")), &limited)
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::TooLarge, "{err}");
        // The runtime keeps working after an over-limit response.
        let resp = rt
            .http(get(&server.url("http", "/ari/small")), &limited)
            .await
            .unwrap();
        assert_eq!(&resp.body()[..], b"{}");
        // Exactly at the limit is fine.
        limited.max_body_bytes = 1000;
        let resp = rt
            .http(get(&server.url("http", "/ari/big")), &limited)
            .await
            .unwrap();
        assert_eq!(resp.body().len(), 1000);
    });
}

#[test]
fn malformed_responses_are_protocol_errors() {
    run(async {
        let server = http_server(None, |req| Reply {
            bytes: match req.path.as_str() {
                "/garbage" => b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
                "/length" => b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n".to_vec(),
                "/conflict" => {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".to_vec()
                }
                _ => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            },
            close: true,
            delay: None,
        })
        .await;
        let rt = SmolRuntime::new();
        for path in ["/garbage", "/length", "/conflict", "/chunk"] {
            let err = rt
                .http(get(&server.url("http", path)), &opts())
                .await
                .unwrap_err();
            assert_eq!(err.kind, TransportErrorKind::Protocol, "{path}: {err}");
        }
    });
}

#[test]
fn truncated_body_is_an_error() {
    run(async {
        let server = http_server(None, |_| Reply {
            bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec(),
            close: true,
            delay: None,
        })
        .await;
        let err = SmolRuntime::new()
            .http(get(&server.url("http", "/ari/x")), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Closed, "{err}");
    });
}

#[test]
fn connection_closed_by_the_server_while_idle_is_replaced() {
    run(async {
        // Closes after each answer without announcing it: the pooled connection goes stale.
        let server = http_server(None, |_| Reply {
            close: true,
            ..ok_json("{}")
        })
        .await;
        let rt = SmolRuntime::new();
        for i in 0..3 {
            let resp = rt
                .http(get(&server.url("http", "/ari/x")), &opts())
                .await
                .unwrap();
            assert_eq!(&resp.body()[..], b"{}");
            // "While idle": the next request starts only once the server has closed this
            // connection. Without the wait, a server thread starved between its answer and its
            // close can receive the next request on the old connection and then close it unread
            // (a race of the test's server, not of the pool: no client can tell that request
            // apart from one sent on a live connection).
            server.wait_closed(i + 1).await;
        }
        assert_eq!(server.connections(), 3);
    });
}

#[test]
fn connect_refused_is_a_connect_error_without_credentials() {
    run(async {
        let port = closed_port().await;
        let rt = SmolRuntime::new();
        let req = http::Request::get(format!(
            "http://user:secret@127.0.0.1:{port}/ari/asterisk/info?api_key=user:secret"
        ))
        .header("Authorization", AUTH)
        .body(Vec::new())
        .unwrap();
        let err = rt.http(req, &opts()).await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect, "{err}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("secret") && !text.contains(AUTH), "{text}");
    });
}

#[test]
fn unsupported_scheme_is_rejected() {
    run(async {
        let req = http::Request::get("ftp://127.0.0.1/x")
            .body(Vec::new())
            .unwrap();
        let err = SmolRuntime::new().http(req, &opts()).await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Protocol);
        let req = http::Request::get("/relative").body(Vec::new()).unwrap();
        let err = SmolRuntime::new().http(req, &opts()).await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Protocol);
    });
}

#[test]
fn connect_timeout_covers_the_tls_handshake() {
    run(async {
        let addr = silent_server().await;
        let rt = SmolRuntime::new();
        let mut short = opts();
        short.connect_timeout = Duration::from_millis(200);
        let req = get(&format!("https://127.0.0.1:{}/ari/x", addr.port()));
        let err = rt.http(req, &short).await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Timeout, "{err}");
    });
}

// ---------------------------------------------------------------------------------------------
// Runtime basics

#[test]
fn spawn_sleep_and_now() {
    run(async {
        let rt = SmolRuntime::new();
        let (tx, rx) = smol::channel::bounded(1);
        let rt2 = rt.clone();
        rt.spawn(async move {
            let start = rt2.now();
            rt2.sleep_until(start + Duration::from_millis(20)).await;
            let _ = tx
                .send(rt2.now() >= start + Duration::from_millis(20))
                .await;
        });
        assert!(rx.recv().await.unwrap());
        // A deadline in the past completes at once.
        rt.sleep_until(Instant::now() - Duration::from_millis(1))
            .await;
    });
}

#[test]
fn spawn_on_a_custom_executor() {
    let executor = Arc::new(smol::Executor::new());
    let rt = SmolRuntime::builder()
        .executor(SmolExecutor::with_executor(executor.clone()))
        .build()
        .unwrap();
    let (tx, rx) = smol::channel::bounded(1);
    rt.spawn(async move {
        let _ = tx.send(7).await;
    });
    let got = smol::block_on(executor.run(async { rx.recv().await.unwrap() }));
    assert_eq!(got, 7);
    assert!(format!("{rt:?}").contains("custom"));
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// An echo WebSocket server requiring `Authorization: AUTH`; sends `greeting` first if given.
async fn ws_server(
    tls: Option<futures_rustls::TlsAcceptor>,
    greeting: Option<String>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, greeting) = (tls.clone(), greeting.clone());
            smol::spawn(async move {
                match tls {
                    None => ws_echo(tcp, greeting).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            ws_echo(stream, greeting).await
                        }
                    }
                }
            })
            .detach();
        }
    })
    .detach();
    addr
}

async fn ws_echo<S: AsyncRead + AsyncWrite + Unpin>(io: S, greeting: Option<String>) {
    // The callback signature is async-tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(AUTH)
            && req.uri().path() == "/ari/events"
        {
            Ok(resp)
        } else {
            Err(http::Response::builder()
                .status(401)
                .body(Some(r#"{"message":"Authentication required"}"#.to_owned()))
                .unwrap())
        }
    };
    let Ok(mut ws) = async_tungstenite::accept_hdr_async(io, check).await else {
        return;
    };
    match greeting.as_deref() {
        Some("PING") => {
            // Ping, wait for the transport's automatic pong, report it.
            if ws.send(Message::Ping(b"p".to_vec().into())).await.is_err() {
                return;
            }
            loop {
                match ws.next().await {
                    Some(Ok(Message::Pong(p))) if &p[..] == b"p" => break,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            if ws.send(Message::text("got pong")).await.is_err() {
                return;
            }
        }
        Some(g) if ws.send(Message::text(g)).await.is_err() => return,
        _ => {}
    }
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_close() {
            break;
        }
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

fn ws_request(url: &str, auth: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::get(url);
    if let Some(auth) = auth {
        b = b.header("Authorization", auth);
    }
    b.body(()).unwrap()
}

#[test]
fn websocket_connect_echo_and_close() {
    run(async {
        let addr = ws_server(None, None).await;
        let rt = SmolRuntime::new();
        let url = format!("ws://127.0.0.1:{}/ari/events?app=hello", addr.port());
        let mut ws = rt
            .ws_connect(ws_request(&url, Some(AUTH)), &opts())
            .await
            .unwrap();
        ws.send(WsMessage::Text(r#"{"type":"Ping"}"#.into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            WsMessage::Text(r#"{"type":"Ping"}"#.into())
        );
        ws.send(WsMessage::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            WsMessage::Binary(vec![1, 2, 3].into())
        );
        ws.close().await.unwrap();
        // After the close handshake the stream ends.
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(WsMessage::Close(_))) => {}
                Some(Ok(other)) => panic!("unexpected {other:?}"),
            }
        }
    });
}

#[test]
fn websocket_pings_are_delivered_and_answered() {
    run(async {
        let addr = ws_server(None, Some("PING".into())).await;
        let rt = SmolRuntime::new();
        let url = format!("ws://127.0.0.1:{}/ari/events?app=x", addr.port());
        let mut ws = rt
            .ws_connect(ws_request(&url, Some(AUTH)), &opts())
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            WsMessage::Ping(b"p".to_vec().into())
        );
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            WsMessage::Text("got pong".into())
        );
    });
}

#[test]
fn ipv6_loopback_when_available() {
    run(async {
        // Machines without IPv6 on loopback have nothing to test here.
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        smol::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let handler: Handler = Arc::new(|_: &Seen| ok_json(r#"{"v6":true}"#));
                smol::spawn(serve_conn(tcp, handler, Arc::default(), Arc::default())).detach();
            }
        })
        .detach();
        let resp = SmolRuntime::new()
            .http(get(&format!("http://[::1]:{port}/ari/x")), &opts())
            .await
            .unwrap();
        assert_eq!(&resp.body()[..], br#"{"v6":true}"#);
    });
}

#[test]
fn websocket_request_with_upgrade_headers_and_http_scheme() {
    run(async {
        // As a session may build it: upgrade headers already there (lower-case names), and
        // an `http` scheme.
        let addr = ws_server(None, Some("hi".into())).await;
        let url = format!("http://127.0.0.1:{}/ari/events?app=x", addr.port());
        let mut req = ws_request(&url, Some(AUTH));
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
        let mut ws = SmolRuntime::new().ws_connect(req, &opts()).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            WsMessage::Text("hi".into())
        );
    });
}

#[test]
fn http_request_asking_for_close_is_not_reused() {
    run(async {
        let server = http_server(None, |_| ok_json("{}")).await;
        let rt = SmolRuntime::new();
        for _ in 0..2 {
            let req = http::Request::get(server.url("http", "/ari/x"))
                .header("Connection", "close")
                .body(Vec::new())
                .unwrap();
            rt.http(req, &opts()).await.unwrap();
        }
        assert_eq!(server.connections(), 2);
    });
}

#[test]
fn websocket_refused_upgrade_is_rejected_with_status() {
    run(async {
        let addr = ws_server(None, None).await;
        let rt = SmolRuntime::new();
        let url = format!(
            "ws://127.0.0.1:{}/ari/events?app=x&api_key=user:secret",
            addr.port()
        );
        let err = rt
            .ws_connect(ws_request(&url, Some("Basic d3Jvbmc6d3Jvbmc=")), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Rejected, "{err}");
        assert_eq!(err.status, Some(401));
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("secret") && !text.contains("d3Jvbmc6d3Jvbmc="),
            "{text}"
        );
    });
}

#[test]
fn websocket_message_over_the_limit_is_too_large() {
    run(async {
        let addr = ws_server(None, Some("y".repeat(5000))).await;
        let rt = SmolRuntime::new();
        let mut small = opts();
        small.max_frame_bytes = 1000;
        let url = format!("ws://127.0.0.1:{}/ari/events?app=x", addr.port());
        let mut ws = rt
            .ws_connect(ws_request(&url, Some(AUTH)), &small)
            .await
            .unwrap();
        let err = ws.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::TooLarge, "{err}");
    });
}

#[test]
fn websocket_connect_refused_and_timeout() {
    run(async {
        let rt = SmolRuntime::new();
        let port = closed_port().await;
        let url = format!("ws://127.0.0.1:{port}/ari/events?app=x&api_key=user:secret");
        let err = rt
            .ws_connect(ws_request(&url, Some(AUTH)), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect, "{err}");
        assert!(!err.to_string().contains("secret"));

        let addr = silent_server().await;
        let mut short = opts();
        short.connect_timeout = Duration::from_millis(200);
        let url = format!("ws://127.0.0.1:{}/ari/events?app=x", addr.port());
        let err = rt
            .ws_connect(ws_request(&url, Some(AUTH)), &short)
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Timeout, "{err}");
    });
}

#[test]
fn websocket_requires_ws_scheme() {
    run(async {
        let err = SmolRuntime::new()
            .ws_connect(ws_request("ftp://127.0.0.1:1/ari/events", None), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Protocol);
    });
}

// ---------------------------------------------------------------------------------------------
// TLS with a self-signed certificate

struct SelfSigned {
    pem: String,
    der: Vec<u8>,
    acceptor: futures_rustls::TlsAcceptor,
}

fn self_signed() -> SelfSigned {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    SelfSigned {
        pem: cert.pem(),
        der: cert.der().to_vec(),
        acceptor: futures_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

#[test]
fn https_untrusted_by_default_trusted_with_extra_root() {
    run(async {
        let cert = self_signed();
        let server = http_server(Some(cert.acceptor.clone()), |_| ok_json(r#"{"tls":true}"#)).await;

        let err = SmolRuntime::new()
            .http(get(&server.url("https", "/ari/x")), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Tls, "{err}");
        // The message says what to do about it.
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        assert!(
            err.to_string().contains("add_root_certificate_pem"),
            "{err}"
        );

        let rt = SmolRuntime::builder()
            .add_root_certificate_pem(&cert.pem)
            .build()
            .unwrap();
        for _ in 0..3 {
            let resp = rt
                .http(get(&server.url("https", "/ari/x")), &opts())
                .await
                .unwrap();
            assert_eq!(&resp.body()[..], br#"{"tls":true}"#);
        }
        // Host name verification too, and the keep-alive pool over TLS.
        let url = format!("https://localhost:{}/ari/y", server.addr.port());
        rt.http(get(&url), &opts()).await.unwrap();
        assert_eq!(server.connections(), 1 + 1 + 1);
    });
}

#[test]
fn https_with_a_whole_client_config() {
    run(async {
        let cert = self_signed();
        let server = http_server(Some(cert.acceptor.clone()), |_| ok_json("{}")).await;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(cert.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let rt = SmolRuntime::builder().tls_config(config).build().unwrap();
        rt.http(get(&server.url("https", "/ari/x")), &opts())
            .await
            .unwrap();
    });
}

#[test]
fn wss_untrusted_by_default_trusted_with_extra_root() {
    run(async {
        let cert = self_signed();
        let addr = ws_server(Some(cert.acceptor.clone()), Some("hi".into())).await;
        let url = format!("wss://127.0.0.1:{}/ari/events?app=x", addr.port());

        let err = SmolRuntime::new()
            .ws_connect(ws_request(&url, Some(AUTH)), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Tls, "{err}");

        let rt = SmolRuntime::builder()
            .add_root_certificate_pem(cert.pem.as_bytes())
            .build()
            .unwrap();
        let mut ws = rt
            .ws_connect(ws_request(&url, Some(AUTH)), &opts())
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            WsMessage::Text("hi".into())
        );
        ws.send(WsMessage::Text("echo".into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            WsMessage::Text("echo".into())
        );

        let err = rt
            .ws_connect(ws_request(&url, None), &opts())
            .await
            .unwrap_err();
        assert_eq!(err.status, Some(401), "{err}");
    });
}

#[test]
fn builder_reports_unparsable_roots() {
    let err = SmolRuntime::builder()
        .add_root_certificate_pem("not a certificate")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    let err = SmolRuntime::builder()
        .add_root_certificate_der(vec![1, 2, 3])
        .build()
        .unwrap_err();
    assert!(!err.message.is_empty());
}

#[test]
fn only_added_roots_without_built_in_ones() {
    run(async {
        let cert = self_signed();
        let server = http_server(Some(cert.acceptor.clone()), |_| ok_json("{}")).await;
        let rt = SmolRuntime::builder()
            .built_in_roots(false)
            .add_root_certificate_der(cert.der.clone())
            .build()
            .unwrap();
        assert_eq!(
            rt.tls_config().expect("built").alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
        rt.http(get(&server.url("https", "/ari/x")), &opts())
            .await
            .unwrap();
    });
}

/// `x.pipe(f)`: a tiny helper to restructure tuples inline.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<S> Pipe for S {}

// ---------------------------------------------------------------------------------------------
// Robustness: mutated responses never panic or hang

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(out.len() + 1);
                let b = *b"0123456789abcdefABCDEF:;\r\n -\t\0\xff"
                    .get(rng.below(32))
                    .unwrap_or(&b'x');
                out.insert(i, b);
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.remove(i);
            }
            3 => {
                let i = rng.below(out.len() + 1);
                out.truncate(i);
            }
            _ => {
                // Duplicate a slice (repeated headers, doubled chunks).
                if !out.is_empty() {
                    let a = rng.below(out.len());
                    let b = (a + rng.below(40)).min(out.len());
                    let piece = out[a..b].to_vec();
                    let at = rng.below(out.len() + 1);
                    out.splice(at..at, piece);
                }
            }
        }
    }
    out
}

#[test]
fn mutated_responses_are_answered_or_rejected_never_panic_or_hang() {
    const SEEDS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":[1,2]}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nServer: Asterisk\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n404: Not Found",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
    ];
    run(async {
        let cases = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for i in 0..400 {
            let seed = SEEDS[i % SEEDS.len()];
            cases.lock().unwrap().push(mutate(&mut rng, seed));
        }
        let next = Arc::new(AtomicUsize::new(0));
        let (c, n) = (cases.clone(), next.clone());
        let server = http_server(None, move |_| Reply {
            // A stale pooled connection makes the client retry, so there may be more
            // requests than cases: wrap around.
            bytes: {
                let cases = c.lock().unwrap();
                cases[n.fetch_add(1, Ordering::SeqCst) % cases.len()].clone()
            },
            close: true,
            delay: None,
        })
        .await;
        let rt = SmolRuntime::new();
        let mut limited = opts();
        limited.max_body_bytes = 64 * 1024;
        let (mut ok, mut err) = (0, 0);
        for _ in 0..400 {
            match rt.http(get(&server.url("http", "/ari/x")), &limited).await {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        assert_eq!(ok + err, 400);
        assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
    });
}

/// The future of one HTTP exchange fits the allocator's per-thread cache (glibc's tcache
/// serves blocks up to 1,032 bytes): the client boxes it for every request, and when it was
/// 2.5 KiB every request paid for cold memory (see the README, Performance). A size, not a
/// timing.
#[test]
fn an_http_exchange_future_fits_the_allocators_thread_cache() {
    let rt = SmolRuntime::new();
    let fut = rt.http(get("http://127.0.0.1:8088/ari/channels/1"), &opts());
    let size = std::mem::size_of_val(&fut);
    assert!(size <= 1032, "the HTTP exchange's future is {size} bytes");
}
