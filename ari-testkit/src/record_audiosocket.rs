//! AudioSocket sessions opened through the recorder (`externalMedia` with
//! `encapsulation=audiosocket`): Asterisk dials the application over TCP at the request's
//! `external_host`. The recorder puts itself on that path: it listens on a port of its own
//! ([`RecorderBuilder::audiosocket_host`](super::RecorderBuilder::audiosocket_host), an
//! ephemeral port per request), sends Asterisk that address instead, and relays the
//! connection byte for byte to the application's address, writing every message both ways
//! to `media.jsonl` in the format of `ari-fixtures/media/audiosocket-*.jsonl` (`conn` `as`,
//! `type` `audiosocket`, `kind`, `len`, `uuid` / `digit`, `head_hex`, and `b64`: the whole
//! payload), with `ws` numbering the session, and `as-open` / `as-close` lines in
//! `connections.jsonl`. The request is recorded as the application made it, and the
//! recorder's address is replaced by the application's in the answer (`channelvars`
//! `AUDIOSOCKET_SERVICE`, the channel's name); events still show the recorder's address in
//! the channel's name.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::{Forward, Out, RecState};

/// How long the recorder waits for Asterisk's connection after an `externalMedia`: Asterisk
/// connects while it dials, within milliseconds (recorded 3–8 ms).
const ACCEPT_WAIT: Duration = Duration::from_secs(30);
/// Once one side has ended, how long the other may take to end too.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// An `externalMedia` the recorder put itself into.
pub(super) struct Intercept {
    /// The recorder's address Asterisk was given.
    pub(super) listen: String,
    /// The application's `external_host`.
    pub(super) original: String,
    task: tokio::task::JoinHandle<()>,
}

impl Intercept {
    /// Asterisk refused the request: no connection will come.
    pub(super) fn refused(self) {
        self.task.abort();
    }
}

/// For a `POST channels/externalMedia` with `encapsulation=audiosocket`: binds the
/// recorder's listener for it, rewrites the upstream request's `external_host` to it, and
/// starts the task that takes Asterisk's connection and relays it.
pub(super) async fn intercept(state: &Arc<RecState>, fwd: &mut Forward) -> Option<Intercept> {
    if fwd.method != "POST" || fwd.rel.as_deref() != Some("channels/externalMedia") {
        return None;
    }
    let get = |key: &str| {
        fwd.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    if get("encapsulation").as_deref() != Some("audiosocket") {
        return None;
    }
    let original = get("external_host")?;
    let listener = match TcpListener::bind((state.audiosocket_host, 0)).await {
        Ok(l) => l,
        Err(e) => {
            state.log(|| format!("AudioSocket: cannot listen for Asterisk ({e}): not recorded"));
            return None;
        }
    };
    let listen = listener.local_addr().ok()?.to_string();
    let path = fwd.upstream_uri.path().to_owned();
    let query: Vec<String> = fwd
        .upstream_uri
        .query()
        .unwrap_or("")
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("external_host", _)) => format!("external_host={listen}"),
            _ => pair.to_owned(),
        })
        .collect();
    fwd.upstream_uri = format!("{path}?{}", query.join("&")).parse().ok()?;
    state.log(|| format!("AudioSocket for {original}: Asterisk dials the recorder at {listen}"));
    let task = tokio::spawn(session(state.clone(), listener, original.clone()));
    Some(Intercept {
        listen,
        original,
        task,
    })
}

/// Takes Asterisk's connection, dials the application and relays until both ended.
async fn session(state: Arc<RecState>, listener: TcpListener, app: String) {
    let asterisk = match tokio::time::timeout(ACCEPT_WAIT, listener.accept()).await {
        Ok(Ok((s, _))) => s,
        _ => {
            state.log(|| format!("AudioSocket for {app}: Asterisk never connected"));
            return;
        }
    };
    drop(listener);
    let ws = state
        .next_ws
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let application = match TcpStream::connect(&app).await {
        Ok(s) => s,
        Err(e) => {
            state.write(
                Out::Connections,
                &json!({"type": "as-refused", "t_ms": state.t_ms(), "ws": ws, "conn": "as",
                        "external_host": app, "error": e.to_string()}),
            );
            state.log(|| format!("AudioSocket as#{ws}: cannot reach {app}: {e}"));
            return;
        }
    };
    let _ = asterisk.set_nodelay(true);
    let _ = application.set_nodelay(true);
    state.write(
        Out::Connections,
        &json!({"type": "as-open", "t_ms": state.t_ms(), "ws": ws, "conn": "as",
                "external_host": app}),
    );
    state.count(|s| s.audiosocket_sessions += 1);
    state.log(|| format!("AudioSocket as#{ws} open to {app}"));
    let (from_asterisk, to_asterisk) = asterisk.into_split();
    let (from_app, to_app) = application.into_split();
    let down = pump(&state, ws, "in", from_asterisk, to_app);
    let up = pump(&state, ws, "out", from_app, to_asterisk);
    tokio::pin!(down, up);
    let closed = |by: &str| {
        state.write(
            Out::Connections,
            &json!({"type": "as-close", "t_ms": state.t_ms(), "ws": ws, "conn": "as", "by": by}),
        );
        state.log(|| format!("AudioSocket as#{ws} closed ({by})"));
    };
    // The side that ends first is the close written (at once); the other gets a moment to
    // end too.
    tokio::select! {
        () = &mut down => {
            closed("upstream-eof");
            let _ = tokio::time::timeout(CLOSE_WAIT, up).await;
        }
        () = &mut up => {
            closed("client-eof");
            let _ = tokio::time::timeout(CLOSE_WAIT, down).await;
        }
    }
}

/// Relays one direction until its end of stream, writing each whole message (`dir` `in`:
/// Asterisk's), then ends the other side's writing.
async fn pump(
    state: &RecState,
    ws: u64,
    dir: &str,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some((kind, payload)) = next_message(&mut buf) {
            state.write(Out::Media, &line(state.t_ms(), ws, dir, kind, &payload));
            state.count(|s| s.audiosocket_messages += 1);
        }
        if to.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    if !buf.is_empty() {
        state.log(|| {
            format!(
                "AudioSocket as#{ws} {dir}: {} bytes of a message cut off at the end",
                buf.len()
            )
        });
    }
    let _ = to.shutdown().await;
}

/// Takes one whole message (kind, 2-byte big-endian length, payload) off `buf`.
fn next_message(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 3 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
    if buf.len() < 3 + len {
        return None;
    }
    let kind = buf[0];
    let payload = buf.drain(..3 + len).skip(3).collect();
    Some((kind, payload))
}

/// One AudioSocket message as `media.jsonl` keeps it (the fixtures' fields, and the whole
/// payload in `b64`).
pub(crate) fn line(t_ms: f64, ws: u64, dir: &str, kind: u8, payload: &[u8]) -> Value {
    use base64::Engine as _;
    let mut line = json!({"t_ms": t_ms, "ws": ws, "conn": "as", "dir": dir,
                          "type": "audiosocket", "kind": format!("0x{kind:02x}"),
                          "len": payload.len()});
    match (kind, <[u8; 16]>::try_from(payload)) {
        (ari_proto::media::audiosocket::kind::UUID, Ok(uuid)) => {
            line["uuid"] = json!(ari_proto::media::audiosocket::format_uuid(&uuid));
        }
        (ari_proto::media::audiosocket::kind::DTMF, _) => {
            line["digit"] = json!(String::from_utf8_lossy(payload));
        }
        _ => {}
    }
    if !payload.is_empty() {
        let head: String = payload
            .iter()
            .take(32)
            .map(|x| format!("{x:02x}"))
            .collect();
        line["head_hex"] = json!(head);
        line["b64"] = json!(base64::engine::general_purpose::STANDARD.encode(payload));
    }
    line
}
