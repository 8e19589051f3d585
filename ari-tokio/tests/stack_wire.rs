//! The shared stack on the wire, through `TokioRuntime`: raw servers that record exactly what
//! the client sends, and adversarial HTTP responses.
//!
//! Servers listen on 127.0.0.1 and are started by the tests. Timeouts only prove that nothing
//! hangs (never a timing assertion).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_tokio::{TokioRuntime, Transport, TransportErrorKind, TransportOptions, WsMessage};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIVENESS: Duration = Duration::from_secs(30);

async fn live<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(LIVENESS, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Reads one client frame (masked): (opcode, payload).
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.expect("frame header");
    let opcode = head[0] & 0x0f;
    assert!(head[1] & 0x80 != 0, "client frames are masked");
    let len = match head[1] & 0x7f {
        126 => u64::from(s.read_u16().await.expect("len16")),
        127 => s.read_u64().await.expect("len64"),
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    s.read_exact(&mut mask).await.expect("mask");
    let mut payload = vec![0u8; usize::try_from(len).expect("len")];
    s.read_exact(&mut payload).await.expect("payload");
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (opcode, payload)
}

/// Writes one unmasked server frame.
async fn write_frame(s: &mut TcpStream, opcode: u8, payload: &[u8]) {
    let mut frame = vec![0x80 | opcode, u8::try_from(payload.len()).expect("short")];
    frame.extend_from_slice(payload);
    s.write_all(&frame).await.expect("write frame");
}

/// Answers the upgrade by hand.
async fn handshake(s: &mut TcpStream) {
    let mut buf = Vec::new();
    while !buf.ends_with(b"\r\n\r\n") {
        buf.push(s.read_u8().await.expect("request byte"));
    }
    let text = String::from_utf8(buf).expect("ascii");
    let key = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("a key");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    s.write_all(answer.as_bytes()).await.expect("101");
}

/// The client answers each ping with one pong carrying its payload, sends its own pings, and
/// never sends a pong of its own: an unsolicited pong crashes Asterisk 20.21, 22.11 and 23.5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_only_answer_pings_on_the_wire() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        handshake(&mut s).await;
        let mut seen = Vec::new();
        write_frame(&mut s, 0x9, b"p1").await; // ping
        seen.push(read_frame(&mut s).await);
        write_frame(&mut s, 0x1, b"t").await; // text
        loop {
            let frame = read_frame(&mut s).await;
            let close = frame.0 == 0x8;
            seen.push(frame);
            if close {
                write_frame(&mut s, 0x8, b"").await;
                return seen;
            }
        }
    });

    let rt = TokioRuntime::new();
    let req = http::Request::get(format!("ws://{addr}/ari/events"))
        .body(())
        .expect("request");
    let mut ws = live("connect", rt.ws_connect(req, &TransportOptions::default()))
        .await
        .expect("connected");
    assert_eq!(
        live("ping", ws.next()).await.expect("item").expect("ok"),
        WsMessage::Ping(Bytes::from_static(b"p1"))
    );
    // Reading on flushes the pong; the server sends the text only after reading it.
    assert_eq!(
        live("text", ws.next()).await.expect("item").expect("ok"),
        WsMessage::Text("t".into())
    );
    live(
        "own ping",
        ws.send(WsMessage::Ping(Bytes::from_static(b"c"))),
    )
    .await
    .expect("sent");
    let refused = live("pong", ws.send(WsMessage::Pong(Bytes::from_static(b"x"))))
        .await
        .expect_err("an unsolicited pong is refused");
    assert_eq!(refused.kind, TransportErrorKind::Protocol);
    live("close", ws.close()).await.expect("closed");

    let seen = live("server", server).await.expect("server task");
    let opcodes: Vec<(u8, &[u8])> = seen.iter().map(|(o, p)| (*o, p.as_slice())).collect();
    assert_eq!(opcodes.len(), 3, "{opcodes:?}");
    assert_eq!(opcodes[0], (0xA, &b"p1"[..]), "the pong answers the ping");
    assert_eq!(opcodes[1], (0x9, &b"c"[..]), "the client's own ping");
    assert_eq!(opcodes[2].0, 0x8, "then the close");
}

/// How the raw server answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A well-framed response with the request's id as the body.
    Ok,
    /// `100 Continue`, then the response.
    Interim,
    /// Both `Transfer-Encoding: chunked` and `Content-Length`, then a smuggled response.
    TeAndCl,
    /// A chunk size that is not hex.
    BadChunk,
    /// Fewer body bytes than `Content-Length`, then close.
    EarlyClose,
    /// A response, then a whole second response in the same write.
    ExtraResponse,
    /// `204` with a "body" that is a whole response.
    NoContentWithBody,
    /// `304` with a "body" that is a whole response.
    NotModifiedWithBody,
    /// An answer to `HEAD` with a "body" that is a whole response.
    HeadWithBody,
}

const ANSWERS: [Answer; 9] = [
    Answer::Ok,
    Answer::Interim,
    Answer::TeAndCl,
    Answer::BadChunk,
    Answer::EarlyClose,
    Answer::ExtraResponse,
    Answer::NoContentWithBody,
    Answer::NotModifiedWithBody,
    Answer::HeadWithBody,
];

const EVIL: &str = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nid=EVIL!";

impl Answer {
    fn bytes(self, id: &str) -> (Vec<u8>, bool) {
        let body = format!("id={id}");
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (text, close) = match self {
            Answer::Ok => (ok, false),
            Answer::Interim => (format!("HTTP/1.1 100 Continue\r\n\r\n{ok}"), false),
            Answer::TeAndCl => (
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                     {:x}\r\n{body}\r\n0\r\n\r\n{EVIL}",
                    body.len()
                ),
                false,
            ),
            Answer::BadChunk => (
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n"),
                false,
            ),
            Answer::EarlyClose => (
                format!("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{body}"),
                true,
            ),
            Answer::ExtraResponse => (format!("{ok}{EVIL}"), false),
            Answer::NoContentWithBody => (format!("HTTP/1.1 204 No Content\r\n\r\n{EVIL}"), false),
            Answer::NotModifiedWithBody => {
                (format!("HTTP/1.1 304 Not Modified\r\n\r\n{EVIL}"), false)
            }
            Answer::HeadWithBody => (
                format!("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{EVIL}"),
                false,
            ),
        };
        (text.into_bytes(), close)
    }

    /// Whether the connection must not carry another request after this answer.
    fn must_close(self) -> bool {
        !matches!(self, Answer::Ok | Answer::Interim)
    }
}

/// What the raw server saw: per connection, the answers given in order.
type Seen = Arc<Mutex<Vec<Vec<Answer>>>>;

/// A raw server answering `/r/<id>/<answer index>` as told.
async fn adversarial_server() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let index = {
                let mut all = record.lock().expect("lock");
                all.push(Vec::new());
                all.len() - 1
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut byte = [0u8; 1];
                    match s.read(&mut byte).await {
                        Ok(1) => buf.push(byte[0]),
                        _ => return,
                    }
                    if !buf.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    buf.clear();
                    let path = head.split(' ').nth(1).unwrap_or("");
                    let mut parts = path.trim_start_matches("/r/").split('/');
                    let id = parts.next().unwrap_or("").to_owned();
                    let answer = ANSWERS[parts.next().and_then(|a| a.parse().ok()).unwrap_or(0)];
                    record.lock().expect("lock")[index].push(answer);
                    let (bytes, close) = answer.bytes(&id);
                    if s.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn run_script(script: &[usize]) {
    let rt_tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt_tokio.block_on(async {
        let (addr, seen) = adversarial_server().await;
        // One connection at a time: every reuse is tested.
        let rt = TokioRuntime::builder()
            .pool_max_connections_per_host(1)
            .build()
            .expect("runtime");
        for (n, &a) in script.iter().enumerate() {
            let answer = ANSWERS[a];
            let method = if answer == Answer::HeadWithBody {
                http::Method::HEAD
            } else {
                http::Method::GET
            };
            let req = http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}/r/{n}/{a}"))
                .body(Vec::new())
                .expect("request");
            let result = live("request", rt.http(req, &TransportOptions::default())).await;
            if let Ok(response) = result {
                let body = String::from_utf8_lossy(response.body()).into_owned();
                match answer {
                    Answer::NoContentWithBody
                    | Answer::NotModifiedWithBody
                    | Answer::HeadWithBody => {
                        assert!(body.is_empty(), "#{n} {answer:?}: body {body:?}")
                    }
                    _ => assert_eq!(
                        body,
                        format!("id={n}"),
                        "#{n} {answer:?}: paired with another response"
                    ),
                }
            } else if matches!(answer, Answer::Ok | Answer::Interim) {
                panic!("#{n} {answer:?} failed: {result:?}");
            }
        }
        // One more request, on whatever connection the pool holds.
        live("last", async {
            let _ = rt
                .http(
                    http::Request::get(format!("http://{addr}/r/end/0"))
                        .body(Vec::new())
                        .expect("req"),
                    &TransportOptions::default(),
                )
                .await;
        })
        .await;
        let seen = seen.lock().expect("lock").clone();
        for conn in &seen {
            for pair in conn.windows(2) {
                assert!(
                    !pair[0].must_close(),
                    "a request came on a connection after {:?}: {conn:?}",
                    pair[0]
                );
            }
        }
    });
}

#[test]
fn every_adversarial_answer_once() {
    run_script(&(0..ANSWERS.len()).collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of answers over one pooled connection: never a panic, never a response
    /// paired with another request, never a connection reused after ambiguous framing.
    #[test]
    fn adversarial_responses_never_pair_wrongly(script in proptest::collection::vec(0..ANSWERS.len(), 1..12)) {
        run_script(&script);
    }
}
