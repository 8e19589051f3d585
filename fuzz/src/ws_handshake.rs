//! The checks behind the fuzz target `ws_handshake`: the WebSocket opening handshake of the
//! shared stack (`ari_client::stack`), both sides, over an in-memory stream.
//!
//! Compiled twice: as `ari_fuzz::ws_handshake` and, through `#[path]`, inside
//! `ari-client/tests/ws_handshake_fuzz_replay.rs`. It may only use `ari_client`,
//! `async_tungstenite`, `futures_io`, `futures_util` and `http`. Each check panics when an
//! invariant does not hold; the stack must never panic on what the network sends.
//!
//! Input: the first byte picks the side (bit 0: the server accepting a client's request,
//! else the client reading a server's answer) and a frame limit (bit 1: 64 bytes, else
//! 4 MiB); the second byte is the size of each read (1 to 256 bytes: the bytes arrive cut
//! anywhere); the rest is what the peer sends: the answer to (or the request of) the upgrade,
//! then any frames.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use ari_client::runtime::{TransportErrorKind, TransportOptions, WsMessage};
use ari_client::stack::{accept_websocket, connect_websocket, WebSocket};
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Request, StatusCode};

/// The key the client sends (its own `Sec-WebSocket-Key`, so that an answer can match it).
pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The client's credentials (`asterisk:asterisk`); never shown by an error.
pub const CLIENT_AUTH: &str = "Basic YXN0ZXJpc2s6YXN0ZXJpc2s=";

/// Messages read after a handshake, at most.
const MAX_MESSAGES: usize = 64;

/// The peer's side of a connection: reads return `input` in pieces of `chunk` bytes, then
/// the end of the stream; writes are kept.
struct Wire<'a> {
    input: &'a [u8],
    chunk: usize,
    written: Vec<u8>,
}

impl AsyncRead for Wire<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = self.chunk.min(buf.len()).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `fut` to completion. The wire is always ready, so a future still pending after many
/// polls is stuck: that is a failure.
fn run<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100_000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("the handshake stalled on an always-ready stream");
}

/// How an input ended (the replay test checks that the corpus reaches every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Under two bytes: nothing run.
    Skipped,
    /// The client accepted the server's answer.
    ClientAccepted,
    /// The client's handshake failed.
    ClientFailed,
    /// The server accepted the client's request.
    ServerAccepted,
    /// The server's handshake failed (refused by the check, or a bad request).
    ServerFailed,
}

/// The fuzz target: see the module documentation.
pub fn ws_handshake(data: &[u8]) -> Outcome {
    let [flags, chunk, input @ ..] = data else {
        return Outcome::Skipped;
    };
    let mut opts = TransportOptions::default();
    if flags & 2 != 0 {
        opts.max_frame_bytes = 64;
    }
    let wire = Wire {
        input,
        chunk: usize::from(*chunk) + 1,
        written: Vec::new(),
    };
    if flags & 1 == 0 {
        client(wire, &opts)
    } else {
        server(wire, &opts)
    }
}

/// The head of an HTTP message without any empty lines before it: up to the first empty
/// line (`\n\n` or `\n\r\n`: parsers accept bare newlines), if there is one.
fn head(bytes: &[u8]) -> Option<&[u8]> {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let bytes = &bytes[start..];
    (0..bytes.len()).find_map(|i| {
        if bytes[i] != b'\n' {
            return None;
        }
        match &bytes[i + 1..] {
            [b'\n', ..] => Some(&bytes[..i + 2]),
            [b'\r', b'\n', ..] => Some(&bytes[..i + 3]),
            _ => None,
        }
    })
}

/// The status code of a response head (`HTTP/1.x NNN ...`).
fn status_of(head: &[u8]) -> Option<u16> {
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a header line `name: value` (name case-insensitive, value trimmed) is in `head`.
fn has_header(head: &[u8], name: &str, value: &str) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        line[..colon].eq_ignore_ascii_case(name.as_bytes())
            && line[colon + 1..].trim_ascii() == value.as_bytes()
    })
}

/// The values of every `name:` header line of `head` (name case-insensitive, trimmed).
fn header_values<'a>(head: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|&b| b == b'\n').filter_map(move |line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// Reads what follows the handshake: never a panic, never a data message over the frame
/// limit, never anything after the end or an error.
fn read_messages<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    opts: &TransportOptions,
) {
    for _ in 0..MAX_MESSAGES {
        match run(ws.next()) {
            None => {
                assert!(run(ws.next()).is_none(), "a message after the end");
                return;
            }
            Some(Err(_)) => {
                assert!(run(ws.next()).is_none(), "a message after an error");
                return;
            }
            Some(Ok(WsMessage::Text(t))) => assert!(t.len() <= opts.max_frame_bytes),
            Some(Ok(WsMessage::Binary(b))) => assert!(b.len() <= opts.max_frame_bytes),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Close(_))) => {}
            Some(Ok(_)) => {}
        }
    }
}

/// The client reads the server's answer. Accepted only with a `101` whose
/// `Sec-WebSocket-Accept` matches the key sent; a refusal carries the status; no error shows
/// the credentials.
fn client(mut wire: Wire<'_>, opts: &TransportOptions) -> Outcome {
    let input = wire.input;
    let req = Request::get("ws://127.0.0.1:8088/ari/events?app=fuzz")
        .header("authorization", CLIENT_AUTH)
        .header("sec-websocket-key", CLIENT_KEY)
        .body(())
        .expect("request");
    let outcome = match run(connect_websocket(&mut wire, req, opts)) {
        Ok(mut ws) => {
            let answer = head(input).expect("accepted without a complete answer head");
            assert_eq!(
                status_of(answer),
                Some(101),
                "accepted without 101: {:?}",
                String::from_utf8_lossy(answer)
            );
            assert!(
                has_header(
                    answer,
                    "sec-websocket-accept",
                    &derive_accept_key(CLIENT_KEY.as_bytes())
                ),
                "accepted with a wrong or missing Sec-WebSocket-Accept"
            );
            read_messages(&mut ws, opts);
            drop(ws);
            Outcome::ClientAccepted
        }
        Err(e) => {
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains(CLIENT_AUTH),
                "the credentials leaked: {shown}"
            );
            if e.kind == TransportErrorKind::Rejected {
                let status = e.status.expect("a refusal has its status");
                assert_ne!(status, 101);
                let answer = head(input).expect("refused without a complete answer head");
                assert_eq!(status_of(answer), Some(status));
            }
            Outcome::ClientFailed
        }
    };
    // Whatever the answer, the request went out first, with the caller's key.
    assert!(wire
        .written
        .starts_with(b"GET /ari/events?app=fuzz HTTP/1.1\r\n"));
    let sent = head(&wire.written).expect("a complete request head");
    assert!(has_header(sent, "sec-websocket-key", CLIENT_KEY));
    assert!(has_header(sent, "authorization", CLIENT_AUTH));
    outcome
}

/// The server reads a client's request. The check refuses (401) a request without
/// [`CLIENT_AUTH`] and offers the `ari` subprotocol when asked for it. Accepted: the answer is
/// `101` with the accept key of the request's key and the subprotocol; refused by the check:
/// the answer has its status; no error shows an `Authorization` value of the request.
fn server(mut wire: Wire<'_>, opts: &TransportOptions) -> Outcome {
    let input = wire.input;
    let chunk = wire.chunk;
    let mut checked = None;
    let check = |req: &Request<()>| {
        let authorized =
            req.headers().get("authorization") == Some(&HeaderValue::from_static(CLIENT_AUTH));
        checked = Some(authorized);
        if !authorized {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let mut headers = HeaderMap::new();
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "ari");
        if offered {
            headers.insert("sec-websocket-protocol", HeaderValue::from_static("ari"));
        }
        Ok(headers)
    };
    match run(accept_websocket(&mut wire, opts, check)) {
        Ok((mut ws, req)) => {
            assert_eq!(checked, Some(true), "accepted without the check's consent");
            assert_eq!(req.method(), http::Method::GET);
            let key = req
                .headers()
                .get("sec-websocket-key")
                .expect("accepted without a key");
            let accept = derive_accept_key(key.as_bytes());
            read_messages(&mut ws, opts);
            drop(ws);
            let answer = head(&wire.written).expect("accepted without an answer");
            assert!(answer.starts_with(b"HTTP/1.1 101 "));
            assert!(
                has_header(answer, "sec-websocket-accept", &accept),
                "answered with a wrong or missing Sec-WebSocket-Accept"
            );
            Outcome::ServerAccepted
        }
        Err(e) => {
            let shown = format!("{e} {e:?}");
            let request = head(input).unwrap_or(input);
            for value in header_values(request, "authorization").filter(|v| v.len() >= 4) {
                if !contains(shown.as_bytes(), value) {
                    continue;
                }
                // The value is in the message: a leak, unless the message says the same
                // with the value masked in the request (then it is the message's own text,
                // e.g. a value of `erValue))` against `HttparseError(HeaderValue))`).
                let at = value.as_ptr() as usize - input.as_ptr() as usize;
                let mut masked = input.to_vec();
                masked[at..at + value.len()].fill(b'x');
                let again = server_error_text(&masked, chunk, opts);
                assert!(
                    contains(again.as_bytes(), value),
                    "an Authorization value leaked: {shown}"
                );
            }
            if checked == Some(false) {
                assert_eq!(e.kind, TransportErrorKind::Rejected);
                assert_eq!(e.status, Some(401));
                assert!(wire.written.starts_with(b"HTTP/1.1 401"));
            }
            Outcome::ServerFailed
        }
    }
}

/// What the server side says when it fails on `input` (empty when it accepts): the text the
/// leak check compares with.
fn server_error_text(input: &[u8], chunk: usize, opts: &TransportOptions) -> String {
    let mut wire = Wire {
        input,
        chunk,
        written: Vec::new(),
    };
    let check = |_: &Request<()>| Err::<HeaderMap, _>(StatusCode::UNAUTHORIZED);
    match run(accept_websocket(&mut wire, opts, check)) {
        Ok(_) => String::new(),
        Err(e) => format!("{e} {e:?}"),
    }
}
