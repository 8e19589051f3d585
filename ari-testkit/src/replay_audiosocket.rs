//! Replaying AudioSocket sessions recorded by the recorder (`conn` `as` in `media.jsonl`,
//! `as-open` / `as-close` in `connections.jsonl`): the replay dials the application's
//! `external_host` over TCP as Asterisk did, at the session's recorded time and after the
//! requests recorded before it (the `externalMedia`), sends Asterisk's messages in order,
//! each after the application's non-audio messages (a hangup) that preceded it and after its
//! recorded gap, and ends the connection where Asterisk did; the application's non-audio
//! messages are compared in order with the recorded ones, its audio messages counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{lock, ReplayState};

/// A recorded AudioSocket session.
#[derive(Debug, Clone, Default)]
pub(super) struct AsRec {
    ws: u64,
    /// The application's address (`external_host`).
    host: String,
    t_open: f64,
    /// Asterisk's messages (whole, header included), each with how many of the
    /// application's non-audio messages came before it.
    frames: Vec<(f64, usize, Vec<u8>)>,
    /// The application's non-audio messages, whole, in order, with their time.
    app: Vec<(f64, Vec<u8>)>,
    /// When Asterisk ended the connection.
    close: Option<f64>,
}

/// Whether `kind` is audio (`0x10`–`0x18`).
fn is_audio(kind: u8) -> bool {
    (0x10..=0x18).contains(&kind)
}

/// Takes a `connections.jsonl` line of an AudioSocket session; false for any other line.
pub(super) fn load_connection(recs: &mut Vec<AsRec>, v: &Value) -> bool {
    let ws = v["ws"].as_u64().unwrap_or(0);
    match v["type"].as_str() {
        Some("as-open") => {
            recs.push(AsRec {
                ws,
                host: v["external_host"].as_str().unwrap_or("").to_owned(),
                t_open: v["t_ms"].as_f64().unwrap_or(0.0),
                ..AsRec::default()
            });
            true
        }
        Some("as-close") => {
            if let Some(r) = recs.iter_mut().find(|r| r.ws == ws) {
                if v["by"] == "upstream-eof" {
                    r.close = Some(v["t_ms"].as_f64().unwrap_or(0.0));
                }
            }
            true
        }
        Some("as-refused") => true,
        _ => false,
    }
}

/// Takes a `media.jsonl` line of an AudioSocket session (`Ok(false)`: another line).
pub(super) fn load_message(recs: &mut [AsRec], v: &Value) -> Result<bool, String> {
    if v["type"] != "audiosocket" || v["conn"] != "as" {
        return Ok(false);
    }
    let ws = v["ws"].as_u64();
    let r = recs
        .iter_mut()
        .find(|r| Some(r.ws) == ws)
        .ok_or("an AudioSocket message of no session in connections.jsonl")?;
    let kind_text = v["kind"].as_str().unwrap_or("");
    let kind = u8::from_str_radix(kind_text.trim_start_matches("0x"), 16)
        .map_err(|e| format!("kind {kind_text:?}: {e}"))?;
    let payload = match (v["b64"].as_str(), v["uuid"].as_str(), v["digit"].as_str()) {
        (Some(b64), _, _) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("b64: {e}"))?,
        (None, Some(uuid), _) => ari_proto::media::audiosocket::parse_uuid(uuid)
            .ok_or_else(|| format!("uuid {uuid:?}"))?
            .to_vec(),
        (None, None, Some(digit)) => digit.as_bytes().to_vec(),
        _ => Vec::new(),
    };
    let len = u16::try_from(payload.len()).map_err(|_| "payload over 65535 bytes")?;
    let mut whole = vec![kind];
    whole.extend_from_slice(&len.to_be_bytes());
    whole.extend_from_slice(&payload);
    let t = v["t_ms"].as_f64().unwrap_or(0.0);
    match v["dir"].as_str() {
        Some("in") => {
            let after = r.app.len();
            r.frames.push((t, after, whole));
        }
        Some("out") if !is_audio(kind) => r.app.push((t, whole)),
        _ => {}
    }
    Ok(true)
}

/// Dials recorded session `i` to the application as Asterisk did, then serves it.
pub(super) async fn dial(state: Arc<ReplayState>, i: usize, started: Instant) {
    let rec = &state.recording.audiosockets[i];
    let anchor = state.gated(rec.t_open).await.unwrap_or((0.0, started));
    tokio::time::sleep_until((anchor.1 + state.scaled(rec.t_open - anchor.0)).into()).await;
    let stream = match tokio::net::TcpStream::connect(&rec.host).await {
        Ok(s) => s,
        Err(e) => {
            let mut inner = lock(&state.inner);
            state.unmatched(
                &mut inner,
                format!(
                    "AudioSocket to {}: the application cannot be reached: {e}",
                    rec.host
                ),
            );
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    lock(&state.inner).stats.audiosocket_dialed += 1;
    state.log(|| format!("AudioSocket dialled: {}", rec.host));
    let opened = Instant::now();
    let (mut from_app, mut to_app) = stream.into_split();
    // The application's non-audio messages so far, and when each came.
    let arrived = Arc::new(AtomicUsize::new(0));
    let when: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let timeline = async {
        let mut prev = (rec.t_open, opened);
        // After the application's messages recorded before it.
        let close = rec
            .close
            .map(|t| (t, rec.app.iter().filter(|(at, _)| *at <= t).count(), None));
        let steps = rec
            .frames
            .iter()
            .map(|(t, after, bytes)| (*t, *after, Some(bytes)))
            .chain(close);
        for (t, after, bytes) in steps {
            while arrived.load(Ordering::Acquire) < after {
                let changed = state.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if arrived.load(Ordering::Acquire) >= after {
                    break;
                }
                changed.await;
            }
            if after > 0 {
                let came = lock(&when).get(after - 1).copied();
                if let (Some(at), Some((recorded, _))) = (came, rec.app.get(after - 1)) {
                    // Timed from the application's message that preceded it.
                    if *recorded > prev.0 {
                        prev = (*recorded, at);
                    }
                }
            }
            tokio::time::sleep_until((prev.1 + state.scaled(t - prev.0)).into()).await;
            match bytes {
                Some(bytes) => {
                    if to_app.write_all(bytes).await.is_err() {
                        return;
                    }
                    lock(&state.inner).stats.audiosocket_messages_sent += 1;
                }
                None => {
                    let _ = to_app.shutdown().await;
                    return;
                }
            }
            prev = (t, Instant::now());
        }
    };
    let reader = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 8192];
        loop {
            let n = match from_app.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 3 {
                let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
                if buf.len() < 3 + len {
                    break;
                }
                let whole: Vec<u8> = buf.drain(..3 + len).collect();
                if is_audio(whole[0]) {
                    lock(&state.inner).stats.audiosocket_audio_received += 1;
                    continue;
                }
                let n = arrived.load(Ordering::Acquire);
                {
                    let mut inner = lock(&state.inner);
                    match rec.app.get(n).map(|(_, e)| e) {
                        Some(expected) if *expected == whole => {
                            inner.stats.audiosocket_messages_matched += 1;
                        }
                        expected => {
                            let line = format!(
                                "AudioSocket message of kind 0x{:02x} ({} bytes) to {}: the recording has {}",
                                whole[0],
                                whole.len() - 3,
                                rec.host,
                                expected.map_or("no more".to_owned(), |e| format!(
                                    "kind 0x{:02x} ({} bytes)",
                                    e[0],
                                    e.len() - 3
                                ))
                            );
                            state.unmatched(&mut inner, line);
                        }
                    }
                }
                lock(&when).push(Instant::now());
                arrived.store(n + 1, Ordering::Release);
                state.changed.notify_waiters();
            }
        }
    };
    tokio::pin!(timeline, reader);
    // The application's end of the connection ends the session; the end of Asterisk's
    // timeline leaves it to the application.
    tokio::select! {
        () = &mut reader => {}
        () = async { (&mut timeline).await; std::future::pending::<()>().await } => {}
    }
}
