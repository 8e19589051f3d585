//! `ari-mock record` / `check` / `replay` of an AudioSocket session (externalMedia
//! `encapsulation=audiosocket`, Asterisk dialling the application over TCP): a program
//! recorded through the recorder against the simulated Asterisk, the recording checked
//! clean, then replayed offline to the same program, which must see what it saw.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use ari_testkit::record::Recorder;
use ari_testkit::replay::{Recording, ReplayServer};
use ari_testkit::{test_frame, MockServer};
use common::{basic, next_json, request, ws_connect, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UUID: &str = "6f1d2a8e-3b7c-4e59-8a1f-0c2d4e6f8a10";
/// Audio messages the program waits for, and sends back.
const FRAMES: usize = 5;

async fn read_message(s: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 3];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut head))
        .await
        .expect("no AudioSocket message within PATIENCE")
        .ok()?;
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes([head[1], head[2]]))];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut payload))
        .await
        .expect("no payload within PATIENCE")
        .ok()?;
    Some((head[0], payload))
}

fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// An AudioSocket bot: externalMedia to its own TCP port, then the UUID, five audio
/// messages in and five back, its hangup (`0x00`), Asterisk's end of the connection and
/// the channel's destruction. Returns what it saw.
async fn conversation(ari: SocketAddr, port: u16) -> Vec<String> {
    let mut seen = Vec::new();
    let mut events = ws_connect(ari, "app=media").await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the bot's AudioSocket port");
    let r = request(
        ari,
        "POST",
        &format!(
            "/ari/channels/externalMedia?app=media&encapsulation=audiosocket&transport=tcp\
             &external_host=127.0.0.1:{port}&format=slin&data={UUID}&channelId=as-rec"
        ),
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    let created = r.json();
    seen.push(format!(
        "externalMedia {} {}",
        r.status, created["channelvars"]["AUDIOSOCKET_SERVICE"]
    ));
    let (mut s, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("Asterisk connects within PATIENCE")
        .expect("accept");
    let (kind, uuid) = read_message(&mut s).await.expect("the UUID");
    seen.push(format!("first kind 0x{kind:02x} {} bytes", uuid.len()));
    let mut audio = 0;
    while audio < FRAMES {
        let (kind, payload) = read_message(&mut s).await.expect("audio");
        seen.push(format!("in 0x{kind:02x} {}", payload.len()));
        audio += usize::from(kind == 0x10);
    }
    let frame = test_frame("slin");
    for _ in 0..FRAMES {
        s.write_all(&message(0x10, &frame))
            .await
            .expect("audio out");
    }
    s.write_all(&message(0x00, &[])).await.expect("hangup");
    // Asterisk ends the connection (its last audio may come before).
    while read_message(&mut s).await.is_some() {}
    seen.push("eof".to_owned());
    loop {
        let ev = next_json(&mut events).await;
        if ev["channel"]["id"] == "as-rec" {
            let ty = ev["type"].as_str().unwrap_or("").to_owned();
            if ty == "ChannelDestroyed" {
                seen.push(format!("ChannelDestroyed cause {}", ev["cause"]));
                break;
            }
        }
    }
    seen
}

fn lines(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(name))
        .expect(name)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audiosocket_session_is_recorded_checked_and_replayed() {
    let dir = std::env::temp_dir().join(format!("ari-record-as-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The bot's port: the same on both runs (its externalMedia carries it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sim = MockServer::start();
    let recorder = Recorder::builder(&sim.base_url(), &dir)
        .start()
        .expect("the recorder starts");
    let recorded = conversation(recorder.addr(), port).await;
    let stats = recorder.finish();
    drop(sim);
    assert_eq!(
        recorded[0],
        format!("externalMedia 200 \"127.0.0.1:{port}\""),
        "the answer names the bot's address, not the recorder's: {recorded:#?}"
    );
    assert_eq!(recorded[1], "first kind 0x01 16 bytes");
    assert_eq!(
        recorded.last().map(String::as_str),
        Some("ChannelDestroyed cause 16")
    );
    assert_eq!(stats.audiosocket_sessions, 1, "{stats:?}");

    // Every message both ways, in the fixtures' format, the payload whole.
    let media = lines(&dir, "media.jsonl");
    assert_eq!(media.len() as u64, stats.audiosocket_messages, "{stats:?}");
    assert!(media
        .iter()
        .all(|l| l["type"] == "audiosocket" && l["conn"] == "as"));
    assert_eq!(media[0]["dir"], "in");
    assert_eq!(media[0]["kind"], "0x01");
    assert_eq!(media[0]["uuid"], UUID);
    let out: Vec<&str> = media
        .iter()
        .filter(|l| l["dir"] == "out")
        .map(|l| l["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        out,
        ["0x10"; FRAMES]
            .iter()
            .copied()
            .chain(["0x00"])
            .collect::<Vec<_>>()
    );
    let sent_by_asterisk = media.iter().filter(|l| l["dir"] == "in").count();
    assert!(sent_by_asterisk > FRAMES, "{sent_by_asterisk}");
    let connections = lines(&dir, "connections.jsonl");
    let open = connections
        .iter()
        .find(|l| l["type"] == "as-open")
        .expect("as-open");
    assert_eq!(open["external_host"], format!("127.0.0.1:{port}"));
    let close = connections
        .iter()
        .find(|l| l["type"] == "as-close")
        .expect("as-close");
    assert_eq!(
        close["by"], "upstream-eof",
        "Asterisk ended it after the hangup"
    );
    // Recorded as the bot asked.
    let rest = lines(&dir, "rest.jsonl");
    let em = rest
        .iter()
        .find(|l| l["path"] == "channels/externalMedia")
        .expect("the externalMedia exchange");
    assert_eq!(em["query"]["external_host"], format!("127.0.0.1:{port}"));

    // `ari-mock check` decodes every AudioSocket message, its whole payload.
    let report = ari_testkit::check::check_dir(&dir).expect("readable");
    assert!(report.problems.is_empty(), "{report}");
    let checked = report
        .files
        .iter()
        .find(|f| f.file == Path::new("media.jsonl"))
        .expect("media.jsonl checked");
    assert_eq!(checked.media, media.len(), "{report}");

    // Replayed offline: the bot sees what it saw; its hangup is compared, its audio counted.
    let recording = Recording::load(&dir).expect("loads");
    assert_eq!(recording.audiosockets(), 1);
    let replay = ReplayServer::builder(recording)
        .speed(2.0)
        .start()
        .expect("the replay starts");
    let replayed = conversation(replay.addr(), port).await;
    assert_eq!(recorded, replayed);
    let s = replay.stats();
    assert_eq!(s.unmatched, 0, "{:#?}", s.unmatched_requests);
    assert_eq!(s.audiosocket_dialed, 1, "{s:?}");
    assert_eq!(s.audiosocket_messages_matched, 1, "the hangup: {s:?}");
    assert_eq!(s.audiosocket_audio_received, FRAMES as u64, "{s:?}");
    assert!(
        s.audiosocket_messages_sent > FRAMES as u64
            && s.audiosocket_messages_sent <= sent_by_asterisk as u64,
        "{s:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
