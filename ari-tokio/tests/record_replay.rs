//! `ari-mock record` / `ari-mock replay` with the tokio client: a program recorded against
//! the simulated Asterisk (fixed seed, the recording proxy in front), the recording checked
//! with `ari-mock check`, then replayed offline to the same program with the same client
//! seed, which must see exactly what it saw when recorded.
//!
//! Servers listen on ephemeral loopback ports and are started by the tests themselves. The
//! child process guard (`HANG_GUARD`) only stops a hung example; it asserts nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_testkit::record::{Recorder, RECORDING_FILES};
use ari_testkit::replay::{Recording, ReplayServer};
use ari_testkit::{MockServer, PlaceCall, SimConfig};
use ari_tokio::{Client, Event, RestTransport, WsAuth};
use futures_util::StreamExt;

/// The simulated Asterisk's seed: its wall clock starts here, ids and timestamps derive from it.
const SIM_SEED_MS: u64 = 1_767_225_600_000;
/// The client's seed (`ARI_SEED` for the example): its client-side ids derive from it.
const CLIENT_SEED: u64 = 17;
const USER: &str = "recorder-user";
/// A password that must never reach the recording.
const PASSWORD: &str = "Rec0rd-s3cr3t-pw";
/// A hung example is killed after this long (a liveness bound, not a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The simulated Asterisk of the examples (`examples/support`): short sounds, quick answer.
fn sim_config() -> SimConfig {
    let mut sim = SimConfig {
        sip_answer_delay: Duration::from_millis(300),
        wall_clock_base_ms: SIM_SEED_MS,
        ..SimConfig::default()
    };
    for (sound, ms) in [
        ("hello-world", 1000),
        ("tt-monkeys", 800),
        ("vm-goodbye", 500),
        ("beep", 200),
    ] {
        sim.media_durations
            .insert(sound.to_string(), Duration::from_millis(ms));
    }
    for digit in 0..=9 {
        sim.media_durations
            .insert(format!("digits/{digit}"), Duration::from_millis(250));
    }
    sim
}

fn simulated_asterisk() -> Arc<MockServer> {
    Arc::new(
        MockServer::builder()
            .user(USER, PASSWORD)
            .sim_config(sim_config())
            .start(),
    )
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ari-record-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Once `app` is registered with the simulator, a caller calls it (and presses `dtmf`).
fn call_when_registered(
    sim: &Arc<MockServer>,
    app: &str,
    dtmf: &str,
) -> std::thread::JoinHandle<()> {
    let (sim, app, dtmf) = (sim.clone(), app.to_string(), dtmf.to_string());
    std::thread::spawn(move || {
        let start = Instant::now();
        while sim.with_sim(|s, _| s.app_is_connected(&app)) != Some(true) {
            assert!(start.elapsed() < HANG_GUARD, "{app} never registered");
            std::thread::sleep(Duration::from_millis(10));
        }
        let call = PlaceCall {
            dtmf,
            dtmf_delay: Duration::from_millis(1300),
            dtmf_interval: Duration::from_millis(600),
            ..PlaceCall::new("PJSIP/alice", &app)
        };
        sim.place_call(call).expect("the simulator places the call");
    })
}

/// Nothing in the recording carries the credentials.
fn assert_no_credentials(dir: &Path) {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for name in RECORDING_FILES {
        let text = std::fs::read_to_string(dir.join(name)).expect("recording file");
        for secret in [
            PASSWORD,
            basic.as_str(),
            "api_key",
            "Authorization",
            "authorization",
        ] {
            assert!(!text.contains(secret), "{name} contains {secret:?}");
        }
    }
}

fn assert_checks_clean(dir: &Path) -> ari_testkit::check::CheckReport {
    let report = ari_testkit::check::check_dir(dir).expect("the recording is readable");
    assert!(report.problems.is_empty(), "ari-mock check:\n{report}");
    assert!(
        report.is_clean(),
        "ari-mock check found nothing to check:\n{report}"
    );
    report
}

// ---- the hello example ------------------------------------------------------------------

/// Builds the hello example (a no-op when up to date) and returns its path.
fn hello_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(cargo);
    // The variables cargo sets for this test's package would make the build scripts of the
    // dependencies look changed (and rebuild them): the nested build gets the outer
    // environment without them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
            .iter()
            .any(|p| name.starts_with(p))
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if per_package {
            command.env_remove(name.as_ref());
        }
    }
    let out = command
        .args([
            "build",
            "-p",
            "ari-tokio",
            "--example",
            "hello",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&workspace)
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo build --example hello failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "hello")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the hello executable")
}

/// Runs the example against `url` with the fixed client seed; returns its output lines.
fn run_hello(bin: &Path, url: &str) -> Vec<String> {
    let mut child = Command::new(bin)
        .env("ARI_URL", url)
        .env("ARI_USER", USER)
        .env("ARI_PASSWORD", PASSWORD)
        .env("ARI_SEED", CLIENT_SEED.to_string())
        .env_remove("ARI_APP")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        status.success(),
        "hello against {url} failed ({status}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

#[test]
fn hello_recorded_against_the_simulator_replays_line_for_line() {
    let bin = hello_binary();
    let dir = fresh_dir("hello");

    // Record: the example → the recording proxy → the simulated Asterisk.
    let sim = simulated_asterisk();
    let recorder = Recorder::builder(&sim.base_url(), &dir)
        .start()
        .expect("the recorder starts");
    let caller = call_when_registered(&sim, "hello", "1*#");
    let recorded = run_hello(&bin, &recorder.base_url());
    caller.join().expect("the caller thread");
    let stats = recorder.finish();
    drop(sim);
    assert_eq!(stats.websockets, 1, "{stats:?}");
    assert!(
        stats.rest >= 6,
        "connect, answer, four plays, hangup: {stats:?}"
    );
    assert!(stats.events >= 10, "{stats:?}");
    assert_eq!(
        (stats.upstream_errors, stats.write_errors),
        (0, 0),
        "{stats:?}"
    );

    // The conversation took place as the example's own check expects.
    for line in [
        "→ answer",
        "→ play sound:hello-world",
        "← ChannelDtmfReceived digit=1",
        "→ play sound:digits/1",
        "← ChannelDtmfReceived digit=*",
        "→ play sound:tt-monkeys",
        "← ChannelDtmfReceived digit=#",
        "→ play sound:vm-goodbye",
        "→ hangup",
        "← StasisEnd",
    ] {
        assert!(
            recorded.iter().any(|l| l == line),
            "no {line:?} in {recorded:#?}"
        );
    }

    let report = assert_checks_clean(&dir);
    assert!(report.checked() >= 16, "{report}");
    assert_no_credentials(&dir);

    // Replay, offline: the same example, the same client seed, no simulator.
    let recording = Recording::load(&dir).expect("the recording loads");
    let replay = ReplayServer::builder(recording)
        .start()
        .expect("the replay starts");
    let replayed = run_hello(&bin, &replay.base_url());
    let stats = replay.stats();
    assert_eq!(stats.unmatched, 0, "{:#?}", stats.unmatched_requests);
    assert_eq!(
        stats.rest_remaining, 0,
        "every recorded request was made again"
    );
    assert_eq!(stats.websockets_matched, 1);

    // Line for line; the first line names the server's URL, which differs.
    let banner = "hello on tokio · http://127.0.0.1:";
    assert!(recorded[0].starts_with(banner), "{}", recorded[0]);
    assert!(replayed[0].starts_with(banner), "{}", replayed[0]);
    assert_eq!(recorded[1..], replayed[1..]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the tokio client, REST over HTTP and over the WebSocket ------------------------------

/// A short conversation; returns what the program saw.
async fn conversation(url: &str) -> Result<Vec<String>, ari_tokio::Error> {
    let client = Client::builder(url, USER, PASSWORD)
        .rng_seed(CLIENT_SEED)
        .rest_transport(RestTransport::WebSocket)
        .ws_auth(WsAuth::ApiKey)
        .connect()
        .await?;
    let mut seen = Vec::new();
    let info = client.asterisk().get_info().await?;
    seen.push(format!(
        "version {:?}",
        info.system.as_ref().map(|s| s.version.clone())
    ));
    let mut incoming = client.incoming();
    client.start(&["rt"]).await?;
    let Some(call) = incoming.next().await else {
        return Ok(seen);
    };
    let (start, channel, mut events) = call?;
    seen.push(format!("StasisStart {channel} args={:?}", start.args));
    let missing = client.channel("no-such-channel").answer().await;
    seen.push(format!(
        "answer no-such-channel: {:?}",
        missing.err().map(|e| e.to_string())
    ));
    channel.answer().await?;
    let playback = channel.play("sound:beep").await?;
    seen.push(format!(
        "playback {} {:?}",
        playback.id(),
        playback.data().map(|p| p.media_uri.clone())
    ));
    playback.finished().await?;
    seen.push("playback finished".to_string());
    let channels = client.channels().list().await?;
    seen.push(format!("channels {}", channels.len()));
    channel.hangup().await?;
    seen_until_stasis_end(&mut events, &mut seen).await?;
    Ok(seen)
}

/// The type of each event of a call up to its `StasisEnd`, into `seen`.
async fn seen_until_stasis_end(
    events: &mut ari_tokio::EventStream,
    seen: &mut Vec<String>,
) -> Result<(), ari_tokio::Error> {
    while let Some(event) = events.next().await {
        let event = event?;
        seen.push(event.type_name().to_string());
        if matches!(event, Event::StasisEnd(_)) {
            break;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_conversation_records_checks_and_replays() {
    let dir = fresh_dir("client");
    let sim = simulated_asterisk();
    let recorder = Recorder::builder(&sim.base_url(), &dir)
        .start()
        .expect("the recorder starts");
    let caller = call_when_registered(&sim, "rt", "");
    let recorded = conversation(&recorder.base_url())
        .await
        .expect("the recorded conversation");
    caller.join().expect("the caller thread");
    let stats = recorder.finish();
    drop(sim);
    assert!(
        stats.sent >= 4,
        "REST over the WebSocket was recorded: {stats:?}"
    );
    assert!(stats.events >= stats.sent, "{stats:?}");
    assert!(recorded.iter().any(|l| l == "StasisEnd"), "{recorded:#?}");
    assert!(
        recorded
            .iter()
            .any(|l| l.contains("no-such-channel") && l.contains("Some(")),
        "the 404 was seen: {recorded:#?}"
    );
    let report = assert_checks_clean(&dir);
    assert!(report.files.iter().any(|f| f.requests >= 4), "{report}");
    assert_no_credentials(&dir);

    let replay = ReplayServer::builder(Recording::load(&dir).expect("loads"))
        .speed(4.0)
        .start()
        .expect("the replay starts");
    let replayed = conversation(&replay.base_url())
        .await
        .expect("the replayed conversation");
    assert_eq!(recorded, replayed);
    let stats = replay.stats();
    assert_eq!(stats.unmatched, 0, "{:#?}", stats.unmatched_requests);
    assert!(stats.ws_requests_matched >= 4, "{stats:?}");
    assert_eq!(stats.rest_remaining, 0, "{stats:?}");

    // A request the recording does not have: a clear answer, counted.
    let replay = ReplayServer::builder(Recording::load(&dir).expect("loads"))
        .start()
        .expect("the replay starts");
    let client = Client::builder(&replay.base_url(), USER, PASSWORD)
        .connect()
        .await
        .expect("GET asterisk/info is in the recording");
    let err = client
        .channel("never-recorded")
        .hangup()
        .await
        .expect_err("not in the recording");
    let stats = replay.stats();
    assert_eq!(stats.unmatched, 1, "{stats:?}");
    assert!(
        stats.unmatched_requests[0].starts_with("DELETE channels/never-recorded"),
        "{:?}",
        stats.unmatched_requests
    );
    assert!(
        err.to_string()
            .contains("no DELETE channels/never-recorded in the recording"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- a media session (chan_websocket) ------------------------------------------------------

/// A call with a media session: every frame Asterisk sends is echoed, a mark is set; returns
/// what the program saw (the format, the control events, how many audio frames came).
async fn media_conversation(url: &str) -> Result<Vec<String>, ari_tokio::Error> {
    use ari_tokio::media::MediaOptions;
    let client = Client::builder(url, USER, PASSWORD)
        .rng_seed(CLIENT_SEED)
        .connect()
        .await?;
    let mut incoming = client.incoming();
    client.start(&["rm"]).await?;
    let mut seen = Vec::new();
    let Some(call) = incoming.next().await else {
        return Ok(seen);
    };
    let (_start, channel, _events) = call?;
    channel.answer().await?;
    let media = channel.media(MediaOptions::new("rm", "ulaw")).await?;
    seen.push(format!("media format={}", media.format()));
    echo_until_closed(media, &mut seen).await;
    Ok(seen)
}

/// Once `app` is registered with the simulator, a caller calls it and hangs up 1.5 s after
/// the answer.
fn call_and_hang_up_when_registered(
    sim: &Arc<MockServer>,
    app: &str,
) -> std::thread::JoinHandle<()> {
    let (sim, app) = (sim.clone(), app.to_string());
    std::thread::spawn(move || {
        let start = Instant::now();
        while sim.with_sim(|s, _| s.app_is_connected(&app)) != Some(true) {
            assert!(start.elapsed() < HANG_GUARD, "{app} never registered");
            std::thread::sleep(Duration::from_millis(10));
        }
        let call = PlaceCall {
            hangup_after_answer: Some(Duration::from_millis(1500)),
            ..PlaceCall::new("PJSIP/alice", &app)
        };
        sim.place_call(call).expect("the simulator places the call");
    })
}

/// Echoes every audio frame and sets a mark after the fifth, noting the events, until the
/// session closes; then shuts it down.
async fn echo_until_closed(mut media: ari_tokio::media::MediaSession, seen: &mut Vec<String>) {
    use ari_tokio::media::MediaItem;
    let tx = media.sender();
    let mut frames = 0usize;
    while let Some(item) = media.next().await {
        match item {
            MediaItem::Audio(frame) => {
                frames += 1;
                if frames == 5 {
                    seen.push(format!("mark m5 sent: {}", tx.mark("m5").is_ok()));
                }
                drop(tx.send_audio(frame));
            }
            MediaItem::Event(event) => seen.push(format!("event {}", event.name())),
            MediaItem::Closed { .. } => break,
            _ => {}
        }
    }
    seen.push(format!("audio frames {}", frames > 0));
    media.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_session_is_recorded_and_checked_typed() {
    let dir = fresh_dir("media");
    let sim = simulated_asterisk();
    let recorder = Recorder::builder(&sim.base_url(), &dir)
        .start()
        .expect("the recorder starts");
    let caller = call_and_hang_up_when_registered(&sim, "rm");
    let recorded = media_conversation(&recorder.base_url())
        .await
        .expect("the recorded media conversation");
    caller.join().expect("the caller thread");
    let stats = recorder.finish();
    drop(sim);
    assert_eq!(recorded[0], "media format=ulaw", "{recorded:#?}");
    assert!(
        recorded.iter().any(|l| l == "audio frames true"),
        "{recorded:#?}"
    );
    assert!(
        recorded.iter().any(|l| l == "mark m5 sent: true"),
        "{recorded:#?}"
    );
    assert_eq!(stats.media_websockets, 1, "{stats:?}");
    assert_eq!(stats.websockets, 1, "the events WebSocket: {stats:?}");
    assert!(stats.binary_frames >= 10, "{stats:?}");
    assert!(stats.media_frames > stats.binary_frames, "{stats:?}");

    // Every frame both ways, in the fixtures' format, the audio whole.
    let text = std::fs::read_to_string(dir.join("media.jsonl")).expect("media.jsonl");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len() as u64, stats.media_frames);
    let texts = |dir: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["dir"] == dir && l["opcode"] == "text")
            .map(|l| l["text"].as_str().expect("text").to_owned())
            .collect()
    };
    assert!(
        texts("in")[0].starts_with("MEDIA_START"),
        "{:?}",
        texts("in")
    );
    assert!(
        texts("out").iter().any(|t| t == "MARK_MEDIA m5"),
        "{:?}",
        texts("out")
    );
    use base64::Engine as _;
    for l in lines.iter().filter(|l| l["opcode"] == "binary") {
        let audio = base64::engine::general_purpose::STANDARD
            .decode(l["b64"].as_str().expect("b64"))
            .expect("base64");
        assert_eq!(audio.len() as u64, l["len"].as_u64().expect("len"));
    }
    assert!(lines
        .iter()
        .any(|l| l["dir"] == "out" && l["opcode"] == "binary"));
    let connections = std::fs::read_to_string(dir.join("connections.jsonl")).expect("connections");
    let open = connections
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|l| l["type"] == "ws-open" && l["media"] == true)
        .expect("the media WebSocket's ws-open");
    assert!(
        open["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/media/")),
        "{open}"
    );

    // `ari-mock check` types every control message both ways.
    let report = assert_checks_clean(&dir);
    let media = report
        .files
        .iter()
        .find(|f| f.file == Path::new("media.jsonl"))
        .expect("media.jsonl checked");
    assert_eq!(
        media.media,
        texts("in").len() + texts("out").len(),
        "{report}"
    );
    assert_no_credentials(&dir);

    // Replayed offline, the program sees what it saw: the media session's control messages
    // and audio come from the recording, its own are compared with the recorded ones.
    let recording = Recording::load(&dir).expect("loads");
    assert_eq!(recording.media_websockets(), 1);
    let replay = ReplayServer::builder(recording)
        .speed(2.0)
        .start()
        .expect("the replay starts");
    let replayed = media_conversation(&replay.base_url())
        .await
        .expect("the replayed media conversation");
    assert_eq!(recorded, replayed);
    let stats = replay.stats();
    assert_eq!(stats.unmatched, 0, "{:#?}", stats.unmatched_requests);
    assert_eq!(stats.media_websockets_matched, 1, "{stats:?}");
    // Every control message Asterisk sent came (the program saw the same events); the last
    // audio frames may not have: the program ends the session when the call's events say
    // the caller hung up, and the two sockets' timelines are replayed independently.
    let sent_by_asterisk = lines.iter().filter(|l| l["dir"] == "in").count() as u64;
    assert!(
        stats.media_frames_sent >= texts("in").len() as u64 + 5
            && stats.media_frames_sent <= sent_by_asterisk,
        "{stats:?}"
    );
    assert_eq!(
        stats.media_commands_matched,
        texts("out").len() as u64,
        "{stats:?}"
    );
    assert!(stats.media_audio_received > 0, "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- an outbound WebSocket (Asterisk dials the application) --------------------------------

const OB_USER: &str = "obuser";
/// Asterisk's outbound password: never written.
const OB_PASSWORD: &str = "Ob-s3cr3t-pw";

/// A per-call outbound server of the tokio client on a free loopback port.
async fn outbound_server(
) -> ari_tokio::OutboundServer<ari_tokio::TokioExecutor, ari_tokio::TokioConnector> {
    outbound_server_on(None).await
}

/// [`outbound_server`], over TLS with `tls` when given.
async fn outbound_server_on(
    tls: Option<Arc<ari_tokio::ari_client::rustls::ServerConfig>>,
) -> ari_tokio::OutboundServer<ari_tokio::TokioExecutor, ari_tokio::TokioConnector> {
    let mut options = ari_tokio::OutboundOptions::new(ari_tokio::TokioRuntime::new())
        .credentials(OB_USER, OB_PASSWORD)
        .expect("credentials")
        .path("/ari-ob")
        .require_subprotocol(true)
        .connection_type(ari_tokio::ConnectionType::PerCall);
    if let Some(tls) = tls {
        options = options.tls(tls);
    }
    options
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the outbound server binds")
}

/// A self-signed certificate for `127.0.0.1`: the server configuration, and the PEM file a
/// client must trust (written to `pem`).
fn self_signed_app(pem: &Path) -> Arc<ari_tokio::ari_client::rustls::ServerConfig> {
    use ari_tokio::ari_client::rustls;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("a certificate");
    std::fs::write(pem, ck.cert.pem()).expect("write the PEM file");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("a server configuration");
    Arc::new(config)
}

/// Asterisk (the simulator) dials `recorder`'s outbound listener for one call, relayed to
/// `app`: the program's conversation, and the recorder's counts once the connection closed.
async fn record_outbound_call(
    recorder: Recorder,
    app: &ari_tokio::OutboundServer<ari_tokio::TokioExecutor, ari_tokio::TokioConnector>,
    dir: &Path,
) -> (Vec<String>, ari_testkit::record::RecordStats) {
    let ob_url = format!("{}/ari-ob", recorder.outbound_url().expect("outbound"));
    let sim = Arc::new(
        MockServer::builder()
            .user(USER, PASSWORD)
            .sim_config(sim_config())
            .outbound(
                ari_testkit::OutboundConfig::per_call(&ob_url, ["hello"])
                    .credentials(OB_USER, OB_PASSWORD)
                    .stasis_start_delay(Duration::from_millis(20))
                    .close_after_stasis_end(Duration::from_millis(50)),
            )
            .start(),
    );
    sim.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let recorded = outbound_conversation(app)
        .await
        .expect("the recorded conversation");
    // Until Asterisk's close is relayed (a bounded wait; the close ends the recording).
    let start = Instant::now();
    while !std::fs::read_to_string(dir.join("connections.jsonl"))
        .expect("connections")
        .contains("ws-close")
    {
        assert!(start.elapsed() < HANG_GUARD, "the connection never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = recorder.finish();
    drop(sim);
    (recorded, stats)
}

/// One call on a per-call outbound connection: answer, a REST read, the hangup, all over the
/// connection; returns what the program saw.
async fn outbound_conversation(
    server: &ari_tokio::OutboundServer<ari_tokio::TokioExecutor, ari_tokio::TokioConnector>,
) -> Result<Vec<String>, ari_tokio::Error> {
    let mut seen = Vec::new();
    let Some(mut call) = tokio::time::timeout(HANG_GUARD, server.next_call())
        .await
        .expect("a call within the bound")
    else {
        return Ok(seen);
    };
    seen.push(format!(
        "call {} {}",
        call.channel.id(),
        call.start.application
    ));
    call.channel.answer().await?;
    let channel = call.client.channels().get(call.channel.id()).await?;
    seen.push(format!(
        "state {:?}",
        channel.data().map(|c| c.state.to_string())
    ));
    call.channel.hangup().await?;
    seen_until_stasis_end(&mut call.events, &mut seen).await?;
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_is_recorded_checked_and_replayed_by_dialling_the_app() {
    let dir = fresh_dir("outbound");
    let app = outbound_server().await;
    let app_url = format!("ws://{}", app.local_addr());
    // Asterisk dials the recorder, which dials the application.
    let recorder = Recorder::builder("http://127.0.0.1:9", &dir)
        .outbound(&app_url, "127.0.0.1:0".parse().expect("addr"))
        .start()
        .expect("the recorder starts");
    let (recorded, stats) = record_outbound_call(recorder, &app, &dir).await;
    assert_eq!(stats.outbound_websockets, 1, "{stats:?}");
    assert_eq!(stats.websockets, 0, "{stats:?}");
    assert!(
        stats.sent >= 3,
        "answer, get and hangup over the socket: {stats:?}"
    );
    assert!(
        recorded.iter().any(|l| l == "state Some(\"Up\")"),
        "{recorded:#?}"
    );
    assert!(recorded.iter().any(|l| l == "StasisEnd"), "{recorded:#?}");
    let connections = std::fs::read_to_string(dir.join("connections.jsonl")).expect("read");
    assert!(connections.contains(r#""outbound":true"#), "{connections}");
    assert!(connections.contains(r#""path":"/ari-ob""#), "{connections}");
    let report = assert_checks_clean(&dir);
    assert!(report.files.iter().any(|f| f.requests >= 3), "{report}");
    // Neither Asterisk's credentials nor the client's are written.
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{OB_USER}:{OB_PASSWORD}"));
    for name in RECORDING_FILES {
        let text = std::fs::read_to_string(dir.join(name)).expect("recording file");
        for secret in [
            OB_PASSWORD,
            basic.as_str(),
            "authorization",
            "Authorization",
        ] {
            assert!(!text.contains(secret), "{name} contains {secret:?}");
        }
    }

    // Offline: the replay dials a fresh application as Asterisk did; the program sees the
    // same call and answers.
    let recording = Recording::load(&dir).expect("loads");
    assert_eq!(recording.outbound_websockets(), 1);
    let app = outbound_server().await;
    let replay = ReplayServer::builder(recording)
        .speed(2.0)
        .outbound(&format!("ws://{}", app.local_addr()))
        .outbound_credentials(OB_USER, OB_PASSWORD)
        .start()
        .expect("the replay starts");
    let replayed = outbound_conversation(&app)
        .await
        .expect("the replayed conversation");
    assert_eq!(recorded, replayed);
    let stats = replay.stats();
    assert_eq!(stats.outbound_dialed, 1, "{stats:?}");
    assert_eq!(stats.unmatched, 0, "{:#?}", stats.unmatched_requests);
    assert!(stats.ws_requests_matched >= 3, "{stats:?}");

    // Without the application's credentials the replay's dial is refused, and says so.
    let app = outbound_server().await;
    let replay = ReplayServer::builder(Recording::load(&dir).expect("loads"))
        .outbound(&format!("ws://{}", app.local_addr()))
        .start()
        .expect("the replay starts");
    let start = Instant::now();
    while replay.stats().unmatched == 0 {
        assert!(start.elapsed() < HANG_GUARD, "the refusal was not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = replay.stats();
    assert_eq!(stats.outbound_dialed, 0, "{stats:?}");
    assert!(
        stats.unmatched_requests[0].contains("/ari-ob")
            && stats.unmatched_requests[0].contains("401"),
        "{:?}",
        stats.unmatched_requests
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- chan_websocket's client mode (Asterisk dials the application's media server) ----------

type TokioMediaServer =
    ari_tokio::media::MediaServer<ari_tokio::TokioExecutor, ari_tokio::TokioConnector>;

async fn media_server() -> TokioMediaServer {
    ari_tokio::media::MediaServer::bind(
        ari_tokio::TokioRuntime::new(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("the media server binds")
}

/// A call whose media Asterisk sends to `server` (websocket_client `media_app`): frames
/// echoed, a mark set; returns what the program saw.
async fn client_mode_conversation(
    url: &str,
    server: &TokioMediaServer,
) -> Result<Vec<String>, ari_tokio::Error> {
    use ari_tokio::media::MediaOptions;
    let client = Client::builder(url, USER, PASSWORD)
        .rng_seed(CLIENT_SEED)
        .connect()
        .await?;
    let mut incoming = client.incoming();
    client.start(&["rmc"]).await?;
    let mut seen = Vec::new();
    let Some(call) = incoming.next().await else {
        return Ok(seen);
    };
    let (_start, channel, _events) = call?;
    channel.answer().await?;
    let media = server
        .open(&channel, "media_app", MediaOptions::new("rmc", "ulaw"))
        .await?;
    seen.push(format!(
        "media {} format={}",
        media.media_start().connection_id,
        media.format()
    ));
    echo_until_closed(media, &mut seen).await;
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_media_is_recorded_and_replayed_by_dialling_the_media_server() {
    let dir = fresh_dir("media-client");
    let sim = simulated_asterisk();
    let server = media_server().await;
    let recorder = Recorder::builder(&sim.base_url(), &dir)
        .outbound(
            &format!("ws://{}", server.local_addr()),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .start()
        .expect("the recorder starts");
    // websocket_client.conf [media_app]: uri = the recorder's outbound listener.
    sim.set_websocket_client(
        "media_app",
        &format!(
            "{}/media-in?static=1",
            recorder.outbound_url().expect("outbound")
        ),
    );
    let caller = call_and_hang_up_when_registered(&sim, "rmc");
    let recorded = client_mode_conversation(&recorder.base_url(), &server)
        .await
        .expect("the recorded conversation");
    caller.join().expect("the caller thread");
    let stats = recorder.finish();
    drop(sim);
    assert_eq!(recorded[0], "media media_app format=ulaw", "{recorded:#?}");
    assert!(
        recorded.iter().any(|l| l == "audio frames true"),
        "{recorded:#?}"
    );
    assert!(
        recorded.iter().any(|l| l == "mark m5 sent: true"),
        "{recorded:#?}"
    );
    assert_eq!(stats.outbound_media_websockets, 1, "{stats:?}");
    assert_eq!(stats.media_websockets, 1, "{stats:?}");
    assert_eq!(stats.outbound_websockets, 0, "{stats:?}");
    let text = std::fs::read_to_string(dir.join("media.jsonl")).expect("media.jsonl");
    assert!(text.contains("MEDIA_START"), "{text}");
    assert!(text.contains("MARK_MEDIA m5"), "{text}");
    let report = assert_checks_clean(&dir);
    assert!(
        report
            .files
            .iter()
            .any(|f| f.file == Path::new("media.jsonl") && f.media >= 2),
        "{report}"
    );
    assert_no_credentials(&dir);

    // Offline: the replay dials a fresh media server as Asterisk did (after the replayed
    // externalMedia that asked for it, with the token the seeded client issued again).
    let recording = Recording::load(&dir).expect("loads");
    assert_eq!(recording.media_websockets(), 1);
    let server = media_server().await;
    let replay = ReplayServer::builder(recording)
        .speed(2.0)
        .media_app(&format!("ws://{}", server.local_addr()))
        .start()
        .expect("the replay starts");
    let replayed = client_mode_conversation(&replay.base_url(), &server)
        .await
        .expect("the replayed conversation");
    assert_eq!(recorded, replayed);
    let stats = replay.stats();
    assert_eq!(stats.unmatched, 0, "{:#?}", stats.unmatched_requests);
    assert_eq!(stats.media_dialed, 1, "{stats:?}");
    assert_eq!(stats.media_commands_matched, 1, "{stats:?}");
    assert!(stats.media_audio_received > 0, "{stats:?}");
    assert_eq!(server.stats().sessions, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- an AudioSocket session (Asterisk dials the application over TCP) ----------------------

const AS_UUID: &str = "9b2f6c1e-4d3a-4f5b-8c7d-2e1f0a9b8c7d";

/// A bot with the tokio client's `AudioSocketServer` on `port`: an externalMedia
/// (AudioSocket) channel to it, the UUID, five audio frames echoed, its hangup, Asterisk's
/// end of the connection. Returns what it saw.
async fn audiosocket_conversation(url: &str, port: u16) -> Result<Vec<String>, ari_tokio::Error> {
    use ari_tokio::audiosocket::{AudioSocketItem, AudioSocketServer};
    use ari_tokio::models::{ExternalMediaEncapsulation, ExternalMediaTransport};
    let client = Client::builder(url, USER, PASSWORD)
        .rng_seed(CLIENT_SEED)
        .connect()
        .await?;
    client.start(&["ras"]).await?;
    let server =
        AudioSocketServer::bind(client.runtime().clone(), ([127, 0, 0, 1], port).into()).await?;
    let destroyed = client
        .channel("ras-1")
        .once::<ari_tokio::events::ChannelDestroyed>();
    let created = client
        .channels()
        .external_media("ras", "slin")
        .encapsulation(ExternalMediaEncapsulation::Audiosocket)
        .transport(ExternalMediaTransport::Tcp)
        .external_host(format!("127.0.0.1:{port}"))
        .data(AS_UUID)
        .channel_id("ras-1")
        .await?;
    let mut seen = vec![format!("externalMedia {}", created.id())];
    let mut session = server.accept().await?;
    seen.push(format!("uuid {}", session.uuid()));
    let tx = session.sender();
    let mut frames = 0;
    while let Some(item) = session.next().await {
        match item {
            AudioSocketItem::Audio { data, .. } => {
                frames += 1;
                if frames <= 5 {
                    seen.push(format!("audio {}", data.len()));
                    drop(tx.send_audio(data));
                }
                if frames == 5 {
                    seen.push(format!("hangup sent: {}", tx.hangup().is_ok()));
                }
            }
            AudioSocketItem::Closed { error, .. } => {
                seen.push(format!("closed error={error:?}"));
                break;
            }
            other => seen.push(format!("{other:?}")),
        }
    }
    let gone = destroyed.await?;
    seen.push(format!("ChannelDestroyed cause {}", gone.cause));
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiosocket_session_is_recorded_checked_and_replayed() {
    let dir = fresh_dir("audiosocket");
    // The bot's AudioSocket port: the same on both runs (its externalMedia carries it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sim = simulated_asterisk();
    let recorder = Recorder::builder(&sim.base_url(), &dir)
        .start()
        .expect("the recorder starts");
    let recorded = audiosocket_conversation(&recorder.base_url(), port)
        .await
        .expect("the recorded AudioSocket conversation");
    let stats = recorder.finish();
    drop(sim);
    assert_eq!(recorded[0], "externalMedia ras-1", "{recorded:#?}");
    assert_eq!(recorded[1], format!("uuid {AS_UUID}"), "{recorded:#?}");
    assert!(
        recorded.iter().any(|l| l == "hangup sent: true"),
        "{recorded:#?}"
    );
    assert_eq!(stats.audiosocket_sessions, 1, "{stats:?}");

    let text = std::fs::read_to_string(dir.join("media.jsonl")).expect("media.jsonl");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len() as u64, stats.audiosocket_messages);
    assert_eq!(lines[0]["kind"], "0x01");
    assert_eq!(lines[0]["uuid"], AS_UUID);
    let out: Vec<&str> = lines
        .iter()
        .filter(|l| l["dir"] == "out")
        .map(|l| l["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(out, ["0x10", "0x10", "0x10", "0x10", "0x10", "0x00"]);
    let report = assert_checks_clean(&dir);
    let media = report
        .files
        .iter()
        .find(|f| f.file == Path::new("media.jsonl"))
        .expect("media.jsonl checked");
    assert_eq!(media.media, lines.len(), "{report}");
    assert_no_credentials(&dir);

    let recording = Recording::load(&dir).expect("loads");
    assert_eq!(recording.audiosockets(), 1);
    let replay = ReplayServer::builder(recording)
        .speed(2.0)
        .start()
        .expect("the replay starts");
    let replayed = audiosocket_conversation(&replay.base_url(), port)
        .await
        .expect("the replayed AudioSocket conversation");
    assert_eq!(recorded, replayed);
    let s = replay.stats();
    assert_eq!(s.unmatched, 0, "{:#?}", s.unmatched_requests);
    assert_eq!(s.audiosocket_dialed, 1, "{s:?}");
    assert_eq!(s.audiosocket_messages_matched, 1, "the hangup: {s:?}");
    assert_eq!(s.audiosocket_audio_received, 5, "{s:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The application behind `wss://` with a self-signed certificate (as an application
/// reached across hosts is): the recorder relays Asterisk's outbound connection to it and
/// the replay dials it, both trusting the certificate with `outbound_ca`; the program sees
/// the same call. Without the certificate the replay's dial fails on it, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_to_a_wss_application_is_recorded_and_replayed() {
    let dir = fresh_dir("outbound-wss");
    let pem = std::env::temp_dir().join(format!("ari-record-app-ca-{}.pem", std::process::id()));
    let tls = self_signed_app(&pem);
    let app = outbound_server_on(Some(tls.clone())).await;
    // A CA file with no wss:// application is refused, with a message that says so.
    let refused = Recorder::builder("http://127.0.0.1:9", &dir)
        .outbound(
            &format!("ws://{}", app.local_addr()),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .outbound_ca(&pem)
        .start();
    assert!(
        refused.is_err_and(|e| e.to_string().contains("wss://")),
        "a CA file for a ws:// application"
    );
    let recorder = Recorder::builder("http://127.0.0.1:9", &dir)
        .outbound(
            &format!("wss://{}", app.local_addr()),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .outbound_ca(&pem)
        .start()
        .expect("the recorder starts");
    let (recorded, stats) = record_outbound_call(recorder, &app, &dir).await;
    assert_eq!(stats.outbound_websockets, 1, "{stats:?}");
    assert!(stats.sent >= 3, "answer, get and hangup: {stats:?}");
    assert!(recorded.iter().any(|l| l == "StasisEnd"), "{recorded:#?}");
    assert_checks_clean(&dir);

    // Offline, over TLS again.
    let app = outbound_server_on(Some(tls.clone())).await;
    let replay = ReplayServer::builder(Recording::load(&dir).expect("loads"))
        .speed(2.0)
        .outbound(&format!("wss://{}", app.local_addr()))
        .outbound_credentials(OB_USER, OB_PASSWORD)
        .outbound_ca(&pem)
        .start()
        .expect("the replay starts");
    let replayed = outbound_conversation(&app)
        .await
        .expect("the replayed conversation");
    assert_eq!(recorded, replayed);
    let stats = replay.stats();
    assert_eq!(stats.outbound_dialed, 1, "{stats:?}");
    assert_eq!(stats.unmatched, 0, "{:#?}", stats.unmatched_requests);

    // Without the certificate trusted, the dial fails on it and is reported.
    let app = outbound_server_on(Some(tls)).await;
    let replay = ReplayServer::builder(Recording::load(&dir).expect("loads"))
        .outbound(&format!("wss://{}", app.local_addr()))
        .outbound_credentials(OB_USER, OB_PASSWORD)
        .start()
        .expect("the replay starts");
    let start = Instant::now();
    while replay.stats().unmatched == 0 {
        assert!(
            start.elapsed() < HANG_GUARD,
            "the failed dial was not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = replay.stats();
    assert_eq!(stats.outbound_dialed, 0, "{stats:?}");
    assert!(
        stats.unmatched_requests[0].contains("TLS handshake"),
        "{:?}",
        stats.unmatched_requests
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&pem);
}
