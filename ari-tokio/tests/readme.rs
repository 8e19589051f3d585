//! The README's Rust snippets, run as a user would paste them: each one is copied here between
//! `// README` markers (inside a function that provides the variables the snippet assumes) and
//! run against the simulated Asterisk; `every_readme_snippet_is_tested_here` fails when the
//! README and this file drift apart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ari_testkit::{MockServer, PlaceCall};
use futures_util::StreamExt;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The snippet under "Using it". Asterisk (simulated) at `url`, an endpoint `PJSIP/1000` that
/// answers.
async fn using_it(url: &str) -> Result {
    // README begin: using-it
    use ari_tokio::{events::StasisStart, Client};

    let client = Client::connect(url, "asterisk", "secret").await?;
    client.start(&["hello"]).await?; // the application's events (none reach the client before)

    // Every resource and operation of ARI, typed: `ari.channels.list()` in node.
    let channels = client.channels().list().await?;
    let info = client.asterisk().get_info().await?;

    // Listeners attached before the resource exists see its very first event.
    let channel = client.new_channel();
    let started = channel.once::<StasisStart>();
    channel.originate("PJSIP/1000").app("hello").await?;
    started.await?;

    // Instances carry their id: no id is repeated.
    let bridge = client.new_bridge(); // fresh client-side id, like node's ari.Bridge()
    bridge.create().await?;
    bridge.add_channel([&channel]).await?;

    // README end
    assert!(channels.is_empty(), "{channels:?}");
    assert!(info.system.is_some(), "{info:?}");
    let members = client.bridges().get(bridge.id()).await?;
    let members = &members.data().ok_or("a bridge snapshot")?.channels;
    assert_eq!(members, &vec![channel.id().to_string()]);
    Ok(())
}

fn server_for_using_it() -> MockServer {
    let sim = ari_testkit::SimConfig {
        sip_endpoints: vec!["1000".to_string()],
        ..ari_testkit::SimConfig::default()
    };
    MockServer::builder()
        .user("asterisk", "secret")
        .sim_config(sim)
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn using_it_runs_as_written() {
    let server = server_for_using_it();
    tokio::time::timeout(Duration::from_secs(20), using_it(&server.base_url()))
        .await
        .expect("the snippet finishes (a StasisStart it waits for must come)")
        .expect("the snippet succeeds");
}

// ---- TLS -------------------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1 and a TLS front (like Asterisk's `tlsenable` on
/// 8089) that forwards each connection to the simulated Asterisk. Returns the front's
/// `https://` URL, the certificate's PEM and the number of TLS handshakes completed.
async fn tls_front(server: &MockServer) -> (String, String, Arc<AtomicUsize>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("rcgen");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let front = listener.local_addr().expect("addr");
    let upstream = server.addr();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // an untrusting client gave up
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut plain = tokio::net::TcpStream::connect(upstream)
                    .await
                    .expect("the simulated Asterisk");
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("https://{front}"), ck.cert.pem(), handshakes)
}

/// The snippet under "TLS", then a call whose events come over `wss://`.
async fn tls(https_url: &str, ca_file: &std::path::Path, server: &MockServer) -> Result {
    // README begin: tls
    let runtime = ari_tokio::TokioRuntime::builder()
        .add_root_certificate_pem(&std::fs::read(ca_file)?)
        .build()?;
    let client = ari_tokio::Client::builder(https_url, "asterisk", "secret")
        .runtime(runtime)
        .connect()
        .await?;
    // README end
    let mut incoming = client.incoming();
    client.start(&["hello"]).await?;
    server.place_call(PlaceCall::new("PJSIP/alice", "hello"))?;
    let (_, channel, mut events) = incoming.next().await.ok_or("the client closed")??;
    channel.answer().await?;
    channel.play("sound:beep").await?.finished().await?;
    channel.hangup().await?;
    while let Some(event) = events.next().await {
        if let ari_tokio::Event::StasisEnd(_) = event? {
            return Ok(());
        }
    }
    Err("the call's events ended before its StasisEnd".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_runs_as_written_with_events_over_wss() {
    let server = server_for_using_it();
    let (url, pem, handshakes) = tls_front(&server).await;
    let dir = std::env::temp_dir().join(format!("ari-readme-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_file = dir.join("asterisk-ca.pem");
    std::fs::write(&ca_file, &pem).expect("write the CA");

    // Without the certificate: a TLS error that says what to do.
    let err = ari_tokio::Client::connect(&url, "asterisk", "secret")
        .await
        .expect_err("an untrusted self-signed certificate");
    let ari_tokio::Error::Transport(transport) = &err else {
        panic!("a transport error, got {err:?}");
    };
    assert_eq!(transport.kind, ari_tokio::TransportErrorKind::Tls, "{err}");
    let message = err.to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("add_root_certificate_pem"), "{message}");

    // `https://` to Asterisk's plain port: says so, instead of a bare "corrupt message".
    let plain = server.base_url().replace("http://", "https://");
    let err = ari_tokio::Client::connect(&plain, "asterisk", "secret")
        .await
        .expect_err("no TLS on the plain port");
    let message = err.to_string();
    assert!(message.contains("nothing speaks TLS on port"), "{message}");

    tokio::time::timeout(Duration::from_secs(20), tls(&url, &ca_file, &server))
        .await
        .expect("the call ends")
        .expect("the snippet and the call succeed over TLS");
    // The REST connection(s) and the events WebSocket all went through the TLS front.
    assert!(handshakes.load(Ordering::SeqCst) >= 2);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Media -----------------------------------------------------------------------------------

/// The simulated Asterisk with a caller in the `media` application who hangs up
/// `hangup_after` after the answer; the client, the answered channel.
async fn media_call(
    hangup_after: Option<Duration>,
) -> (MockServer, ari_tokio::Client, ari_tokio::Channel) {
    let server = MockServer::builder().start();
    let client =
        ari_tokio::Client::connect(&server.base_url(), server.username(), server.password())
            .await
            .expect("connect");
    let mut incoming = client.incoming();
    client.start(&["media"]).await.expect("start");
    let call = PlaceCall {
        hangup_after_answer: hangup_after,
        ..PlaceCall::new("PJSIP/alice", "media")
    };
    server.place_call(call).expect("place the call");
    let (_, channel, _) = incoming
        .next()
        .await
        .expect("a call")
        .expect("its StasisStart");
    channel.answer().await.expect("answer");
    (server, client, channel)
}

/// The echo under "Media: audio in and out of calls".
async fn media_echo(channel: &ari_tokio::Channel) -> Result {
    // README begin: media-echo
    use ari_tokio::media::{MediaItem, MediaOptions};
    let mut media = channel.media(MediaOptions::new("media", "slin16")).await?;
    let tx = media.sender();
    while let Some(item) = media.next().await {
        match item {
            MediaItem::Audio(frame) => drop(tx.send_audio(frame)), // straight back
            MediaItem::Closed { .. } => break,                     // the caller hung up
            _ => {}
        }
    }
    media.shutdown().await;
    // README end
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_echo_runs_as_written() {
    let (server, _client, channel) = media_call(Some(Duration::from_millis(1500))).await;
    tokio::time::timeout(Duration::from_secs(20), media_echo(&channel))
        .await
        .expect("the echo ends when the caller hangs up")
        .expect("the echo succeeds");
    let report = server.media_sessions().remove(0);
    assert!(report.messages_received > 10, "{report:?}");
    assert_eq!(report.messages_dropped, 0, "{report:?}");
    assert_eq!(report.remainder_bytes_dropped, 0, "{report:?}");
    assert!(report.frames_played > 0, "{report:?}");
    assert_eq!(
        report.frames_played, report.frames_played_test_signal,
        "Asterisk played its own signal back: {report:?}"
    );
}

/// The pacer under "Playing audio at real-time pace".
async fn media_pacer(
    client: &ari_tokio::Client,
    channel: &ari_tokio::Channel,
    speech_chunk: bytes::Bytes,
) -> Result<(
    ari_tokio::media::MediaSession,
    ari_tokio::media::MediaPacer,
    usize,
)> {
    // README begin: media-pacer
    use ari_tokio::media::{MediaOptions, MediaPacer};
    let pacer = MediaPacer::new(client.runtime()); // one for the whole application

    // for each call:
    let media = channel.media(MediaOptions::new("media", "slin16")).await?;
    let paced = pacer.attach(&media)?;
    paced.send(speech_chunk)?; // any size, any amount ahead: leaves as 20 ms frames, one per 20 ms
    paced.mark("prompt-end")?; // MediaMarkProcessed once everything queued before it has played
    paced.clear(); // barge-in: drop what has not left yet (and `sender().flush()` at Asterisk)
                   // README end
    let left = paced.stats().frames_sent as usize;
    assert_eq!(paced.queued_frames(), 0, "the barge-in left nothing queued");
    Ok((media, pacer, left))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_pacer_runs_as_written() {
    let (server, client, channel) = media_call(None).await;
    // 10 s of the test signal, far more than can leave before the barge-in.
    let frame = ari_testkit::test_frame("slin16");
    let chunk = bytes::Bytes::from(frame.repeat(500));
    let (media, pacer, left) = media_pacer(&client, &channel, chunk)
        .await
        .expect("the snippet succeeds");
    assert!(
        left < 500,
        "the barge-in cut the speech short ({left} of 500 left)"
    );
    let stats = pacer.stats();
    assert_eq!(stats.overflow_frames, 0, "{stats:?}");
    pacer.close();
    media.shutdown().await;
    let report = server.media_sessions().remove(0);
    assert_eq!(report.messages_received, left as u64, "{report:?}");
    assert_eq!(report.messages_dropped, 0, "{report:?}");
}

/// The real-time pacer under "Many calls on few cores".
fn media_pacer_realtime(client: &ari_tokio::Client) -> ari_tokio::media::MediaPacer {
    // README begin: media-pacer-realtime
    use ari_tokio::media::{MediaPacer, PacerConfig, PacerThread};
    let pacer = MediaPacer::with_config(
        client.runtime(),
        PacerConfig::new().thread(PacerThread::Realtime { priority: 10 }),
    );
    // README end
    pacer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_pacer_realtime_runs_as_written() {
    use ari_tokio::media::PacerThread;
    let (server, client, channel) = media_call(None).await;
    let pacer = media_pacer_realtime(&client);
    // Root or CAP_SYS_NICE gets real-time priority; otherwise the stats say what it got.
    let on = pacer.stats().running_on;
    assert!(
        on == PacerThread::Realtime { priority: 10 } || on == PacerThread::Dedicated,
        "{on:?}"
    );
    let media = channel
        .media(ari_tokio::media::MediaOptions::new("media", "slin16"))
        .await
        .expect("media session");
    let paced = pacer.attach(&media).expect("attach");
    let frame = ari_testkit::test_frame("slin16");
    paced
        .send(bytes::Bytes::from(frame.repeat(5)))
        .expect("send");
    for _ in 0..1_000 {
        if media.stats().protocol.frames_out == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(paced.stats().frames_sent, 5);
    assert_eq!(
        media.stats().protocol.frames_out,
        5,
        "written by the pacer's thread"
    );
    pacer.close();
    media.shutdown().await;
    let report = server.media_sessions().remove(0);
    assert_eq!(report.messages_received, 5, "{report:?}");
    assert_eq!(report.messages_dropped, 0, "{report:?}");
}

/// The AudioSocket echo server: `addr` is where it listens (the README's `0.0.0.0:9092`). It
/// serves calls until it fails.
async fn audiosocket_echo(addr: String) -> Result {
    let addr = addr.as_str();
    // README begin: audiosocket
    use ari_tokio::audiosocket::{AudioSocketItem, AudioSocketServer};
    use ari_tokio::TokioRuntime;
    let server = AudioSocketServer::bind(TokioRuntime::new(), addr.parse()?).await?;
    loop {
        // Each call: externalMedia external_host=<this host>:9092, data=<uuid>
        let mut call = match server.accept().await {
            Ok(call) => call,
            Err(e) => {
                // One connection failed before its UUID (closed, timed out, not AudioSocket):
                // the server goes on with the next.
                eprintln!("AudioSocket connection failed: {e}");
                continue;
            }
        };
        tokio::spawn(async move {
            let tx = call.sender();
            while let Some(item) = call.next().await {
                if let AudioSocketItem::Audio { data, .. } = item {
                    drop(tx.send_audio(data)); // an echo
                }
            }
        });
    }
    // README end
}

/// The README's AudioSocket server survives a connection that fails before its UUID (a port
/// scan, a health check) and echoes the call that comes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiosocket_echo_runs_as_written() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = MockServer::builder().start();
    let client =
        ari_tokio::Client::connect(&server.base_url(), server.username(), server.password())
            .await
            .expect("connect");
    client.start(&["media"]).await.expect("start");
    // A free port for the snippet's server.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut echo = tokio::spawn(audiosocket_echo(addr.to_string()));
    // Asterisk dials once the snippet listens (binding the port again fails from then on).
    while std::net::TcpListener::bind(addr).is_ok() {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A connection that says nothing and closes: it fails before its UUID. The server closes
    // its side once it has handed the failure to `accept`.
    let mut bad = tokio::net::TcpStream::connect(addr).await.expect("connect");
    bad.shutdown().await.expect("close the writing side");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), bad.read_to_end(&mut rest))
        .await
        .expect("the server closes the failed connection (liveness)")
        .expect("read to the end");
    assert!(rest.is_empty(), "{rest:?}");

    use ari_tokio::models::{ExternalMediaEncapsulation, ExternalMediaTransport};
    client
        .channels()
        .external_media("media", "slin")
        .map(|op| {
            op.encapsulation(ExternalMediaEncapsulation::Audiosocket)
                .transport(ExternalMediaTransport::Tcp)
                .external_host(addr.to_string())
                .data("add79572-dd67-4767-bc41-af8b247685f9")
                .channel_id("as-1")
        })
        .await
        .expect("externalMedia");
    // A second of audio each way, then the channel hangs up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.channels().hangup("as-1").await.expect("hang up");
    // The simulator files its report once its side of the socket is closed.
    let report = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if echo.is_finished() {
                panic!("the AudioSocket server stopped: {:?}", (&mut echo).await);
            }
            if let Some(report) = server.media_sessions().pop() {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the simulator's report of the call (liveness)");
    // Frames still in flight when the channel hung up are not read (nor played).
    assert!(report.messages_received > 0, "{report:?}");
    assert!(report.frames_played > 0, "{report:?}");
    assert_eq!(
        report.frames_played, report.frames_played_test_signal,
        "Asterisk got its own signal back: {report:?}"
    );
    assert!(!echo.is_finished(), "the server serves on");
    echo.abort();
}

// ---- The hello IVR ---------------------------------------------------------------------------

/// Where the hello IVR connects (the example's `support::ari`).
struct Ari {
    url: String,
    user: String,
    password: String,
    app: String,
}

/// The IVR under "The hello IVR" (the example's `main` without its seeding option).
async fn hello(ari: &Ari) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use ari_tokio::{Client, Event};
    // README begin: hello
    let client = Client::connect(&ari.url, &ari.user, &ari.password).await?;
    let mut incoming = client.incoming(); // each call with its events, none missed
    client.start(&[&ari.app]).await?;
    let (start, channel, mut events) = incoming.next().await.ok_or("the client closed")??;
    println!("← StasisStart channel={channel} args={:?}", start.args);
    println!("→ answer");
    channel.answer().await?;
    play(&channel, "sound:hello-world").await?;
    while let Some(event) = events.next().await {
        let event = event?;
        println!("← {}", show(&event));
        match event {
            Event::ChannelDtmfReceived(e) => match e.digit.as_str() {
                "#" => play(&channel, "sound:vm-goodbye").await?,
                "*" => play(&channel, "sound:tt-monkeys").await?,
                digit => play(&channel, &format!("sound:digits/{digit}")).await?,
            },
            Event::PlaybackFinished(e) if e.playback.media_uri == "sound:vm-goodbye" => {
                println!("→ hangup");
                channel.hangup().await?;
            }
            Event::StasisEnd(_) => return Ok(()),
            _ => {}
        }
    }
    Err("the events connection closed".into())
    // README end
}

/// The example's printing helper, which the README leaves out.
async fn play(
    channel: &ari_tokio::Channel,
    media: &str,
) -> std::result::Result<(), ari_tokio::Error> {
    println!("→ play {media}");
    channel.play(media).await.map(drop)
}

/// The example's other printing helper (shorter).
fn show(event: &ari_tokio::Event) -> String {
    event.type_name().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_ivr_runs_as_written() {
    let server = MockServer::start();
    let ari = Ari {
        url: server.base_url(),
        user: server.username().to_string(),
        password: server.password().to_string(),
        app: "hello".to_string(),
    };
    let ivr = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(30), hello(&ari))
            .await
            .map(|done| done.map_err(|e| e.to_string()))
    });
    while server.with_sim(|sim, _| sim.app_is_connected("hello")) != Some(true) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let call = PlaceCall {
        dtmf: "1*#".to_string(),
        dtmf_delay: Duration::from_millis(200),
        dtmf_interval: Duration::from_millis(300),
        ..PlaceCall::new("PJSIP/alice", "hello")
    };
    server.place_call(call).expect("place the call");
    ivr.await
        .expect("the IVR's task")
        .expect("the IVR ends with the call")
        .expect("the IVR succeeds");
    let plays: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.segments.get(2).is_some_and(|s| s == "play"))
        .flat_map(|r| {
            r.query
                .iter()
                .filter(|(k, _)| k == "media")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        plays,
        [
            "sound:hello-world",
            "sound:digits/1",
            "sound:tt-monkeys",
            "sound:vm-goodbye"
        ]
    );
    let last = server.requests().pop().expect("requests");
    assert_eq!(last.method, "DELETE", "the IVR hangs up last: {last:?}");
}

// ---- README and this file --------------------------------------------------------------------

/// What the snippets say that a test cannot use as it is (a fixed host or port, a file), and
/// what stands for it here.
const STAND_INS: &[(&str, &str)] = &[
    ("\"http://localhost:8088\"", "url"),
    ("\"https://pbx:8089\"", "https_url"),
    (
        "std::fs::read(\"asterisk-ca.pem\")",
        "std::fs::read(ca_file)",
    ),
    ("\"0.0.0.0:9092\".parse()", "addr.parse()"),
];

/// Lines without indentation and blank lines, and without rustdoc's hidden `# ` lines.
fn normalized(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "#" && !l.starts_with("# "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_readme_snippet_is_tested_here() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let this =
        std::fs::read_to_string(format!("{root}/ari-tokio/tests/readme.rs")).expect("this file");
    let tested: Vec<Vec<String>> = this
        .split("\n    // README begin: ")
        .skip(1)
        .map(|part| {
            let body = part.split_once('\n').expect("a marker line").1;
            normalized(body.split("// README end").next().expect("an end marker"))
        })
        .collect();
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("\n```rust") {
        let after = &rest[start + 1..];
        let body_start = after.find('\n').expect("a fence line") + 1;
        let end = after[body_start..].find("\n```").expect("a closing fence");
        let mut block = after[body_start..body_start + end].to_string();
        rest = &after[body_start + end + 4..];
        if block.contains("use ari_cluster::") {
            continue; // the cluster's snippet: ari-cluster's doc test of `Cluster`
        }
        for (said, stand_in) in STAND_INS {
            block = block.replace(said, stand_in);
        }
        let block = normalized(&block);
        assert!(
            tested.contains(&block),
            "this README snippet is not the one tested in ari-tokio/tests/readme.rs (copy it \
             between `// README begin` and `// README end` and run it):\n{}",
            block.join("\n")
        );
        blocks += 1;
    }
    assert_eq!(
        blocks,
        tested.len(),
        "every snippet tested here is in the README"
    );
}
