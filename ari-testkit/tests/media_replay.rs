//! `ari-mock replay` of a media WebSocket (chan_websocket): what Asterisk sent is pushed in
//! recorded order, each frame after the client's control messages that preceded it in the
//! recording; the client's control messages are compared with the recorded ones; an unknown
//! media path is refused. The recording is written by hand in the format `ari-mock record`
//! writes (`connections.jsonl` + `media.jsonl`).

use std::path::PathBuf;
use std::time::Duration;

use ari_testkit::replay::{Recording, ReplayServer};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A bound on each wait (only a hang fails it).
const HANG: Duration = Duration::from_secs(10);

fn recording_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ari-media-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let write = |name: &str, lines: &[serde_json::Value]| {
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        std::fs::write(dir.join(name), text.join("\n") + "\n").expect("write");
    };
    let audio = base64::engine::general_purpose::STANDARD.encode([0x7fu8; 160]);
    write(
        "connections.jsonl",
        &[
            json!({"type": "ws-open", "t_ms": 10.0, "ws": 1, "conn": "media",
                "path": "/media/conn-1", "query": {}, "status": 101, "media": true,
                "protocol": "media"}),
            json!({"type": "ws-close", "t_ms": 90.0, "ws": 1, "conn": "media", "by": "client",
                "code": 1000}),
        ],
    );
    let frame = |t: f64, dir: &str, opcode: &str| json!({"t_ms": t, "ws": 1, "conn": "media", "dir": dir, "type": "ws", "opcode": opcode});
    let text = |t: f64, dir: &str, text: &str| {
        let mut l = frame(t, dir, "text");
        l["text"] = json!(text);
        l
    };
    let binary = |t: f64| {
        let mut l = frame(t, "in", "binary");
        l["len"] = json!(160);
        l["b64"] = json!(audio);
        l
    };
    write(
        "media.jsonl",
        &[
            text(11.0, "in", "MEDIA_START connection_id:conn-1 channel:c1 format:ulaw optimal_frame_size:160 ptime:20"),
            binary(20.0),
            binary(40.0),
            text(50.0, "out", "GET_STATUS"),
            // After GET_STATUS: never pushed before the client asks.
            text(51.0, "in", "STATUS queue_length:0 xon_level:800 xoff_level:900 queue_full:false bulk_media:false media_paused:false"),
            binary(60.0),
            text(70.0, "out", "MARK_MEDIA m1"),
            text(80.0, "in", "MEDIA_MARK_PROCESSED correlation_id:m1"),
        ],
    );
    dir
}

async fn next_message<S>(ws: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(HANG, ws.next())
        .await
        .expect("a frame within the bound")
        .expect("the socket is open")
        .expect("a frame")
}

#[tokio::test]
async fn a_media_websocket_is_replayed_in_order_and_its_commands_compared() {
    let dir = recording_dir();
    let recording = Recording::load(&dir).expect("loads");
    assert_eq!(recording.media_websockets(), 1);
    let replay = ReplayServer::builder(recording)
        .speed(4.0)
        .start()
        .expect("starts");
    let url = format!("ws://{}/media/conn-1", replay.addr());
    let mut request = url.as_str().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "media".parse().expect("header"));
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the recorded media path is served");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"media"[..])
    );
    let first = next_message(&mut ws).await;
    assert!(
        first.to_text().expect("text").starts_with("MEDIA_START"),
        "{first:?}"
    );
    for _ in 0..2 {
        let audio = next_message(&mut ws).await;
        assert_eq!(audio.into_data().len(), 160);
    }
    // The STATUS waits for the GET_STATUS that preceded it in the recording.
    let early = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(early.is_err(), "pushed before the client asked: {early:?}");
    ws.send(Message::text("GET_STATUS")).await.expect("send");
    let status = next_message(&mut ws).await;
    assert!(
        status.to_text().expect("text").starts_with("STATUS"),
        "{status:?}"
    );
    assert_eq!(next_message(&mut ws).await.into_data().len(), 160);
    ws.send(Message::binary(vec![0u8; 160]))
        .await
        .expect("send");
    // Not what the recording has: counted as unmatched; the frame after it still comes.
    ws.send(Message::text("MARK_MEDIA other"))
        .await
        .expect("send");
    let mark = next_message(&mut ws).await;
    assert_eq!(
        mark.to_text().expect("text"),
        "MEDIA_MARK_PROCESSED correlation_id:m1"
    );
    ws.close(None).await.expect("close");
    let stats = replay.stats();
    assert_eq!(stats.media_websockets_matched, 1);
    assert_eq!(stats.media_frames_sent, 6, "{stats:?}");
    assert_eq!(stats.media_commands_matched, 1, "{stats:?}");
    assert_eq!(stats.media_audio_received, 1, "{stats:?}");
    assert_eq!(stats.unmatched, 1, "{stats:?}");
    assert!(
        stats.unmatched_requests[0].contains("\"MARK_MEDIA other\"")
            && stats.unmatched_requests[0].contains("\"MARK_MEDIA m1\""),
        "{:?}",
        stats.unmatched_requests
    );

    // A media path the recording does not have (or one already used): refused, counted.
    for path in ["/media/conn-1", "/media/nope"] {
        let url = format!("ws://{}{path}", replay.addr());
        let refused = tokio_tungstenite::connect_async(url.as_str()).await;
        assert!(refused.is_err(), "{path} was accepted");
    }
    let stats = replay.stats();
    assert_eq!(stats.unmatched, 3, "{stats:?}");
    assert!(
        stats.unmatched_requests[2].contains("/media/nope"),
        "{:?}",
        stats.unmatched_requests
    );
    let _ = std::fs::remove_dir_all(&dir);
}
