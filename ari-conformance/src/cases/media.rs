//! Media: chan_websocket sessions (`Channel::media`) and the application-side AudioSocket
//! server, against the simulated Asterisk, written once for every runtime.

use std::time::Duration;

use ari_client::audiosocket::{AudioSocketItem, AudioSocketOptions, AudioSocketServer};
use ari_client::media::{
    MediaItem, MediaOptions, MediaPacer, MediaServer, MediaSession, PacerConfig, PacerThread,
};
use ari_client::models::{ExternalMediaEncapsulation, ExternalMediaTransport};
use ari_client::runtime::{Connector, Executor};
use ari_client::{Channel, Client, Runtime, Stack};
use ari_proto::media::audiosocket::Rate;
use ari_proto::media::websocket::MediaEvent;
use ari_testkit::{MediaSessionReport, PlaceCall};
use futures::StreamExt;

use crate::Harness;

/// The simulator's report of its one media session, once the socket has closed.
async fn media_report<R: Runtime>(h: &Harness<R>) -> MediaSessionReport {
    h.eventually("the simulator's media report", || {
        !h.server().media_sessions().is_empty()
    })
    .await;
    h.server().media_sessions().remove(0)
}

/// A [`MediaServer`] for chan_websocket's client connections, on a free loopback port.
pub(crate) async fn bind_media_server<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) -> MediaServer<E, C> {
    h.live(
        "bind",
        MediaServer::bind(h.runtime().clone(), "127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("bind")
}

/// An answered incoming call whose media Asterisk sends to `server` through the
/// `websocket_client` entry (client mode).
pub(crate) async fn answered_call_media<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
    client: &ari_client::Client<Stack<E, C>>,
    server: &MediaServer<E, C>,
    websocket_client: &str,
) -> MediaSession {
    let channel = h
        .incoming_call(client, PlaceCall::new("PJSIP/alice", "media"))
        .await;
    h.live("answer", channel.answer()).await.expect("answer");
    h.live(
        "media (client mode)",
        server.open(
            &channel,
            websocket_client,
            MediaOptions::new("media", "ulaw"),
        ),
    )
    .await
    .expect("media session")
}

/// A chan_websocket session opens (externalMedia, `/media/<id>`, a bridge with the call),
/// audio flows both ways (the simulator plays our echo of its test signal and recognises
/// it), DTMF and a mark arrive typed, and shutdown removes the media channel and the bridge.
pub async fn media_session_echoes_and_tears_down<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let call = PlaceCall {
        channel_id: Some("caller".into()),
        dtmf: "5".into(),
        dtmf_delay: Duration::from_millis(600),
        ..PlaceCall::new("PJSIP/alice", "media")
    };
    let channel = h.incoming_call(&client, call).await;
    h.live("answer", channel.answer()).await.expect("answer");

    let mut media = h
        .live("media", channel.media(MediaOptions::new("media", "slin16")))
        .await
        .expect("media session");
    assert_eq!(media.format(), "slin16");
    assert_eq!(media.media_start().optimal_frame_size, 640);
    let bridge = media.bridge_id().expect("bridged").to_owned();
    let b = h
        .live("bridge", client.bridges().get(bridge.clone()))
        .await
        .expect("bridge");
    let members = &b.data().expect("bridge snapshot").channels;
    assert_eq!(members.len(), 2);
    assert!(members.iter().any(|m| m == "caller"));
    assert!(members.iter().any(|m| m == media.media_channel_id()));

    let tx = media.sender();
    let mut echoed = 0u64;
    let mut dtmf = None;
    let mut marked = false;
    while echoed < 60 || dtmf.is_none() || !marked {
        let item = h
            .live("media keeps flowing", media.next())
            .await
            .expect("session open");
        match item {
            MediaItem::Audio(frame) => {
                assert_eq!(frame.len(), 640);
                tx.send_audio(frame).expect("send");
                echoed += 1;
                if echoed == 30 {
                    tx.mark("half").expect("mark");
                }
            }
            MediaItem::Event(MediaEvent::DtmfEnd { digit, .. }) => dtmf = Some(digit),
            MediaItem::Event(MediaEvent::MediaMarkProcessed { correlation_id, .. }) => {
                assert_eq!(correlation_id.as_deref(), Some("half"));
                marked = true;
            }
            MediaItem::Event(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(dtmf, Some('5'));
    // Every echoed frame goes out (the driver hands them over as they come).
    while media.stats().protocol.frames_out < echoed {
        let item = h.live("the echo goes out", media.next()).await;
        assert!(item.is_some(), "the session ended early");
    }
    let stats = media.stats();
    assert_eq!(stats.lagged_frames, 0);
    assert_eq!(stats.protocol.overflow_frames, 0);
    assert_eq!(stats.protocol.frames_out, echoed);
    let media_channel = media.media_channel_id().to_owned();
    h.live("shutdown", media.shutdown()).await;

    // The simulator played what we echoed: its own test signal, nothing dropped.
    let report = media_report(h).await;
    assert_eq!(report.messages_received, echoed);
    assert_eq!(report.messages_dropped, 0);
    assert_eq!(report.remainder_bytes_dropped, 0);
    assert!(report.frames_played >= 30, "{report:?}");
    assert_eq!(report.frames_played, report.frames_played_test_signal);
    let err = h
        .live("bridge get", client.bridges().get(bridge))
        .await
        .expect_err("bridge destroyed");
    assert_eq!(err.status(), Some(404));
    let err = h
        .live("channel get", client.channels().get(media_channel))
        .await
        .expect_err("media channel gone");
    assert_eq!(err.status(), Some(404));
}

/// A `MediaPacer` plays audio handed over in one chunk (25 frames of the test signal): it
/// leaves as 25 whole frames, every one handed over at its tick and timed by the socket
/// task as it is written, and the simulator receives and plays them, nothing dropped.
pub async fn media_pacer_plays_audio_handed_over_at_once<R: Runtime>(h: &Harness<R>) {
    pacer_plays(h, PacerThread::Executor).await;
}

/// The same with the pacer's ticks on a thread of its own, at normal and at real-time
/// priority (where the system refuses the latter, the pacer says so in its stats and runs at
/// normal priority): the thread runs while the pacer does and ends with it.
pub async fn media_pacer_on_a_thread_of_its_own_plays_audio<R: Runtime>(h: &Harness<R>) {
    pacer_plays(h, PacerThread::Dedicated).await;
    pacer_plays(h, PacerThread::Realtime { priority: 5 }).await;
}

/// The threads of this process named as a pacer's thread (Linux only; `None` elsewhere).
fn pacer_threads() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "ari-media-pacer")
            .count(),
    )
}

async fn pacer_plays<R: Runtime>(h: &Harness<R>, thread: PacerThread) {
    let client = h.started(&["media"]).await;
    // Only this case's pacers have threads of their own (other cases may run meanwhile).
    let threads_before = pacer_threads().filter(|_| thread != PacerThread::Executor);
    let channel = h
        .incoming_call(&client, PlaceCall::new("PJSIP/alice", "media"))
        .await;
    h.live("answer", channel.answer()).await.expect("answer");
    let media = h
        .live("media", channel.media(MediaOptions::new("media", "slin16")))
        .await
        .expect("media session");
    let pacer = MediaPacer::with_config(client.runtime(), PacerConfig::new().thread(thread));
    let running_on = pacer.stats().running_on;
    match thread {
        // Real-time priority needs a right the test may not have.
        PacerThread::Realtime { .. } => assert!(
            running_on == thread || running_on == PacerThread::Dedicated,
            "{running_on:?}"
        ),
        _ => assert_eq!(running_on, thread),
    }
    if let (Some(before), Some(now)) = (threads_before, pacer_threads()) {
        assert_eq!(now, before + 1, "the pacer's own thread runs");
    }
    let paced = pacer.attach(&media).expect("attach");
    let frame = ari_testkit::test_frame("slin16");
    let q = paced
        .send(bytes::Bytes::from(frame.repeat(25)))
        .expect("send");
    assert_eq!((q.frames, q.dropped), (25, 0));
    h.eventually("the pacer hands every frame over", || {
        paced.stats().frames_sent == 25
    })
    .await;
    h.eventually("the socket task writes them", || {
        media.stats().protocol.frames_out == 25
    })
    .await;
    let stats = pacer.stats();
    assert_eq!(stats.frames_sent, 25);
    assert_eq!(stats.overflow_frames, 0);
    assert_eq!(stats.sessions, 1);
    // Every frame written at once is timed (one held back by flow control would not be).
    assert!(
        stats.frames_timed > 0 && stats.frames_timed <= 25,
        "{stats:?}"
    );
    assert_eq!(stats.send_lateness.count(), stats.frames_timed);
    assert!(stats.send_jitter.count() < stats.frames_timed);
    assert_eq!(paced.queued_frames(), 0);
    assert_eq!(media.stats().protocol.overflow_frames, 0);
    drop(paced);
    pacer.close();
    h.live("shutdown", media.shutdown()).await;
    h.eventually("the pacer's task ends", || pacer.is_closed())
        .await;
    if let Some(before) = threads_before {
        h.eventually("the pacer's thread ends", || {
            pacer_threads() == Some(before)
        })
        .await;
    }

    let report = media_report(h).await;
    assert_eq!(report.messages_received, 25);
    assert_eq!(report.frames_queued, 25);
    assert_eq!(report.messages_dropped, 0);
    assert_eq!(report.remainder_bytes_dropped, 0);
    assert_eq!(report.frames_played, report.frames_played_test_signal);
}

/// When the caller hangs up, the session (JSON control, ulaw) yields `Closed` with
/// Asterisk's close code as its last item.
pub async fn media_session_ends_when_the_caller_hangs_up<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let call = PlaceCall {
        hangup_after_answer: Some(Duration::from_millis(800)),
        ..PlaceCall::new("PJSIP/alice", "media")
    };
    let channel = h.incoming_call(&client, call).await;
    h.live("answer", channel.answer()).await.expect("answer");
    let mut media = h
        .live(
            "media",
            channel.media(MediaOptions::new("media", "ulaw").json(true)),
        )
        .await
        .expect("media session");
    assert_eq!(media.media_start().optimal_frame_size, 160);
    let mut frames = 0;
    let closed = loop {
        match h.live("the session ends", media.next()).await {
            Some(MediaItem::Audio(_)) => frames += 1,
            Some(MediaItem::Closed { code, .. }) => break code,
            Some(_) => {}
            None => panic!("ended without Closed"),
        }
    };
    assert_eq!(closed, Some(1000));
    assert!(frames > 10, "{frames}");
    assert!(media.next().await.is_none(), "Closed is the last item");
}

/// A connection that says nothing (a load balancer's or a monitor's health check holding the
/// port open, a scanner) holds up no call: the AudioSocket server takes the call Asterisk
/// dials meanwhile at once, not after the silent connection's UUID timeout.
pub async fn audiosocket_a_silent_connection_holds_up_no_call<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let client = h.started(&["media"]).await;
    // A UUID timeout far beyond the harness's liveness bound.
    let options = AudioSocketOptions::default().uuid_timeout(Duration::from_secs(3600));
    let server = h
        .live(
            "bind",
            AudioSocketServer::bind_with(
                h.runtime().clone(),
                "127.0.0.1:0".parse().expect("addr"),
                options,
            ),
        )
        .await
        .expect("bind");
    let _health_check = std::net::TcpStream::connect(server.local_addr()).expect("connect");
    let uuid = "0b9d2c1e-7f3a-4e5b-9c8d-1a2b3c4d5e6f";
    audiosocket_channel(h, &client, server.local_addr(), uuid, "as-probe").await;
    let session = h
        .live(
            "the call, while the health check says nothing",
            server.accept(),
        )
        .await
        .expect("a session");
    assert_eq!(session.uuid(), uuid);
    h.live("hangup", client.channels().hangup("as-probe"))
        .await
        .expect("hangup");
}

/// An externalMedia channel `channel_id` (`audiosocket` over `tcp`, slin) that makes the
/// simulator dial the AudioSocket server at `server` with `uuid`.
async fn audiosocket_channel<R: Runtime>(
    h: &Harness<R>,
    client: &Client<R>,
    server: std::net::SocketAddr,
    uuid: &str,
    channel_id: &str,
) -> Channel<R> {
    h.live(
        "externalMedia",
        client.channels().external_media("media", "slin").map(|op| {
            op.encapsulation(ExternalMediaEncapsulation::Audiosocket)
                .transport(ExternalMediaTransport::Tcp)
                .external_host(server.to_string())
                .data(uuid)
                .channel_id(channel_id)
        }),
    )
    .await
    .expect("externalMedia")
}

/// The application-side AudioSocket server: externalMedia (`audiosocket`, `tcp`) makes the
/// simulator dial it; the session starts with the call's UUID, yields 8 kHz frames and the
/// caller's DTMF, sends our echo back (played by the simulator as its own test signal), and
/// the hangup ends the call and the connection.
pub async fn audiosocket_server_serves_a_call<E: Executor, C: Connector>(h: &Harness<Stack<E, C>>) {
    let client = h.started(&["media"]).await;
    let server = h
        .live(
            "bind",
            AudioSocketServer::bind(h.runtime().clone(), "127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("bind");
    let uuid = "add79572-dd67-4767-bc41-af8b247685f9";
    let created = audiosocket_channel(h, &client, server.local_addr(), uuid, "as-1").await;
    assert_eq!(created.id(), "as-1");
    let mut session = h
        .live("Asterisk connects", server.accept())
        .await
        .expect("a session");
    assert_eq!(session.uuid(), uuid, "the UUID comes first");

    // A caller in a bridge with the AudioSocket channel presses 7.
    let caller = h
        .incoming_call(
            &client,
            PlaceCall {
                channel_id: Some("caller".into()),
                dtmf: "7".into(),
                dtmf_delay: Duration::from_millis(300),
                ..PlaceCall::new("PJSIP/alice", "media")
            },
        )
        .await;
    h.live("answer", caller.answer()).await.expect("answer");
    let bridge = client.new_bridge();
    h.live("bridge", bridge.create()).await.expect("bridge");
    h.live("add", bridge.add_channel(["as-1", "caller"]))
        .await
        .expect("add");

    let tx = session.sender();
    let mut echoed = 0u64;
    let mut digit = None;
    while digit.is_none() || echoed < 20 {
        match h.live("AudioSocket data", session.next()).await {
            Some(AudioSocketItem::Audio { rate, data }) => {
                assert_eq!((rate, data.len()), (Rate::Slin8, 320));
                if echoed < 20 {
                    tx.send_audio(data).expect("send");
                    echoed += 1;
                }
            }
            Some(AudioSocketItem::Dtmf(d)) => digit = Some(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(digit, Some('7'));
    tx.hangup().expect("hangup");
    assert_eq!(
        tx.send_audio(bytes::Bytes::from_static(&[0; 320])),
        Err(ari_client::audiosocket::AudioSocketSendError::Closed),
        "nothing is accepted after the hangup"
    );
    // Asterisk hangs up and closes the connection: Closed is the last item.
    loop {
        match h.live("the connection closes", session.next()).await {
            Some(AudioSocketItem::Audio { .. }) => {}
            Some(AudioSocketItem::Closed { error, .. }) => {
                assert_eq!(error, None);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(session.next().await.is_none(), "Closed is the last item");
    assert_eq!(session.stats().frames_sent, echoed);
    assert_eq!(session.stats().overflow_frames, 0);
    let report = media_report(h).await;
    assert_eq!(report.messages_received, echoed);
    assert_eq!(report.frames_played_test_signal, echoed);
    let err = h
        .live("channel get", client.channels().get("as-1"))
        .await
        .expect_err("channel hung up");
    assert_eq!(err.status(), Some(404));
}

/// chan_websocket's client connection type: the simulated Asterisk dials the application's
/// [`MediaServer`](ari_client::media::MediaServer) (websocket_client `media_app`); the
/// session carries the client's name as connection id, audio flows both ways, and a
/// connection without a known token is refused (404) and counted, its channel destroyed.
pub async fn media_client_mode_asterisk_dials_the_app<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let client = h.started(&["media"]).await;
    let server = bind_media_server(h).await;
    let uri = format!("ws://{}/media-in?static=1", server.local_addr());
    h.server().set_websocket_client("media_app", &uri);

    let mut media = answered_call_media(h, &client, &server, "media_app").await;
    assert_eq!(media.media_start().connection_id, "media_app");
    assert_eq!(media.media_start().optimal_frame_size, 160);
    assert!(media.bridge_id().is_some());
    let tx = media.sender();
    let mut echoed = 0u64;
    while echoed < 25 {
        match h.live("media keeps flowing", media.next()).await {
            Some(MediaItem::Audio(frame)) => {
                assert_eq!(frame.len(), 160);
                tx.send_audio(frame).expect("send");
                echoed += 1;
            }
            Some(MediaItem::Event(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    while media.stats().protocol.frames_out < echoed {
        let item = h.live("the echo goes out", media.next()).await;
        assert!(item.is_some(), "the session ended early");
    }
    let media_channel = media.media_channel_id().to_owned();
    h.live("shutdown", media.shutdown()).await;
    let report = media_report(h).await;
    assert_eq!(report.connection_id, "media_app");
    assert_eq!(report.messages_received, echoed);
    assert_eq!(report.frames_played_test_signal, report.frames_played);
    let err = h
        .live("channel get", client.channels().get(media_channel))
        .await
        .expect_err("media channel gone");
    assert_eq!(err.status(), Some(404));
    let stats = server.stats();
    assert_eq!((stats.sessions, stats.unknown), (1, 0));

    // A media channel nobody asked the server for: refused, and Asterisk gives up on it.
    let stray = h
        .live(
            "externalMedia (client mode, no token)",
            client.channels().external_media("media", "ulaw").map(|op| {
                op.transport(ExternalMediaTransport::Websocket)
                    .encapsulation(ExternalMediaEncapsulation::None)
                    .connection_type(ari_client::models::ExternalMediaConnectionType::Client)
                    .external_host("media_app")
                    .channel_id("stray")
            }),
        )
        .await
        .expect("externalMedia");
    assert_eq!(stray.id(), "stray");
    h.eventually("the stray connection is refused", || {
        server.stats().unknown == 1
    })
    .await;
    h.eventually("the stray channel is destroyed", || {
        h.server()
            .with_sim(|sim, _| sim.channel_ids().iter().any(|c| c == "stray"))
            == Some(false)
    })
    .await;
    assert_eq!(server.stats().sessions, 1);
}

/// A [`MediaServer`](ari_client::media::MediaServer) that requires Basic credentials (the
/// `username`/`password` of the websocket_client entry): connections with wrong or no
/// credentials are refused with 401 before their token is looked at, counted, and
/// Asterisk gives their channels up; the right ones get a session.
pub async fn media_server_checks_basic_credentials<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    use ari_client::models::ExternalMediaConnectionType;
    let client = h.started(&["media"]).await;
    let server = bind_media_server(h)
        .await
        .credentials("media", "s3cret")
        .expect("credentials");
    let addr = server.local_addr();
    h.server()
        .set_websocket_client("media_wrong", &format!("ws://media:wrong@{addr}/media-in"));
    h.server()
        .set_websocket_client("media_none", &format!("ws://{addr}/media-in"));
    h.server()
        .set_websocket_client("media_ok", &format!("ws://media:s3cret@{addr}/media-in"));

    for (n, websocket_client) in [(1, "media_wrong"), (2, "media_none")] {
        let id = format!("refused-{n}");
        h.live(
            "externalMedia (client mode)",
            client.channels().external_media("media", "ulaw").map(|op| {
                op.transport(ExternalMediaTransport::Websocket)
                    .encapsulation(ExternalMediaEncapsulation::None)
                    .connection_type(ExternalMediaConnectionType::Client)
                    .external_host(websocket_client)
                    .channel_id(id.clone())
            }),
        )
        .await
        .expect("externalMedia");
        h.eventually("the connection is refused with 401", || {
            server.stats().unauthorized == n
        })
        .await;
        h.eventually("its channel is destroyed", || {
            h.server()
                .with_sim(|sim, _| sim.channel_ids().contains(&id))
                == Some(false)
        })
        .await;
    }

    let mut media = answered_call_media(h, &client, &server, "media_ok").await;
    loop {
        match h.live("audio arrives", media.next()).await {
            Some(MediaItem::Audio(frame)) => {
                assert_eq!(frame.len(), 160);
                break;
            }
            Some(MediaItem::Event(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    h.live("shutdown", media.shutdown()).await;
    let stats = server.stats();
    assert_eq!(
        (stats.sessions, stats.unauthorized, stats.unknown),
        (1, 2, 0),
        "{stats:?}"
    );
}

/// An AudioSocket voice bot: it hands five seconds of speech over at once; the caller barges
/// in, and `flush` drops what waits (counted), so the answer handed over next follows at
/// once; every frame is accounted for (sent or flushed) and the simulator received exactly
/// the frames sent. On a second call the caller hangs up mid-speech: the session ends with
/// `Closed`, the frames that never left are counted in `unsent_frames`, and later audio is
/// refused.
pub async fn audiosocket_barge_in_and_hangup_mid_speech_account_for_every_frame<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    use ari_client::audiosocket::AudioSocketSendError;
    let client = h.started(&["media"]).await;
    let server = h
        .live(
            "bind",
            AudioSocketServer::bind(h.runtime().clone(), "127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("bind");
    let speech = || bytes::Bytes::from(ari_testkit::test_frame("slin").repeat(250));
    let uuid = "0b5b3bd6-52f4-4a49-9d4e-2c1f5a3c7e01";
    audiosocket_channel(h, &client, server.local_addr(), uuid, "as-barge").await;
    let mut session = h
        .live("Asterisk connects", server.accept())
        .await
        .expect("a session");
    let tx = session.sender();
    tx.send_audio(speech()).expect("speech");
    h.eventually("the speech starts", || tx.stats().frames_sent >= 3)
        .await;
    let flushed = tx.flush();
    assert!(flushed > 0, "five seconds cannot all have left");
    assert_eq!(tx.queued_frames(), 0);
    assert_eq!(tx.stats().flushed_frames, flushed as u64);
    tx.send_audio(bytes::Bytes::from(
        ari_testkit::test_frame("slin").repeat(2),
    ))
    .expect("the answer");
    h.eventually("the answer goes out", || {
        let s = tx.stats();
        s.frames_sent + s.flushed_frames == 252
    })
    .await;
    tx.hangup().expect("hangup");
    loop {
        match h.live("the connection closes", session.next()).await {
            Some(AudioSocketItem::Audio { .. }) => {}
            Some(AudioSocketItem::Closed { error, .. }) => {
                assert_eq!(error, None);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let stats = tx.stats();
    assert_eq!(
        (stats.overflow_frames, stats.unsent_frames),
        (0, 0),
        "{stats:?}"
    );
    let report = media_report(h).await;
    assert_eq!(report.messages_received, stats.frames_sent);

    // The caller hangs up while the bot speaks.
    let uuid = "6f1d2a8e-3b7c-4e59-8a1f-0c2d4e6f8a10";
    let media = audiosocket_channel(h, &client, server.local_addr(), uuid, "as-gone").await;
    let mut session = h
        .live("Asterisk connects", server.accept())
        .await
        .expect("a session");
    let tx = session.sender();
    tx.send_audio(speech()).expect("speech");
    h.eventually("the speech starts", || tx.stats().frames_sent >= 3)
        .await;
    h.live("hangup", media.hangup()).await.expect("hangup");
    loop {
        match h.live("the connection closes", session.next()).await {
            Some(AudioSocketItem::Audio { .. }) => {}
            Some(AudioSocketItem::Closed { .. }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(h.live("the end", session.next()).await.is_none());
    h.eventually("every frame is accounted for", || {
        let s = tx.stats();
        s.frames_sent + s.unsent_frames == 250
    })
    .await;
    let stats = tx.stats();
    assert!(stats.unsent_frames > 0, "{stats:?}");
    assert_eq!(stats.flushed_frames + stats.overflow_frames, 0);
    assert_eq!(
        tx.send_audio(bytes::Bytes::from(ari_testkit::test_frame("slin"))),
        Err(AudioSocketSendError::Closed)
    );
}

/// Two calls open media sessions through the same websocket_client at once. Asterisk keeps
/// the `v()` parameters in the shared client object (bug B1), so both connections can carry
/// the second call's token: each session must still get its own call's media channel (the
/// `channel_id` of `MEDIA_START`), never the other call's audio.
pub async fn media_client_mode_concurrent_opens_each_get_their_own_channel<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let client = h.started(&["media"]).await;
    let server = bind_media_server(h).await;
    let uri = format!("ws://{}/media-in", server.local_addr());
    h.server().set_websocket_client("media_app", &uri);
    let mut calls = Vec::new();
    for _ in 0..2 {
        let call = h
            .incoming_call(&client, PlaceCall::new("PJSIP/alice", "media"))
            .await;
        h.live("answer", call.answer()).await.expect("answer");
        calls.push(call);
    }
    // Both channels are dialed before either connection is made.
    h.server().hold_media_connections(true);
    // Boxed: two opens side by side overflowed a test thread's stack in a debug build.
    let opens = futures::future::join(
        Box::pin(server.open(&calls[0], "media_app", MediaOptions::new("media", "ulaw"))),
        Box::pin(server.open(&calls[1], "media_app", MediaOptions::new("media", "ulaw"))),
    );
    let release = async {
        h.eventually("both connections wait", || {
            h.server().held_media_connections() == 2
        })
        .await;
        h.server().hold_media_connections(false);
    };
    let ((a, b), ()) = h
        .live("both sessions open", futures::future::join(opens, release))
        .await;
    let a = a.expect("the first call's session");
    let b = b.expect("the second call's session");
    assert_ne!(a.media_channel_id(), b.media_channel_id());
    for media in [&a, &b] {
        assert_eq!(
            media.media_start().channel_id.as_deref(),
            Some(media.media_channel_id()),
            "the socket is the session's own media channel's"
        );
    }
    // (The server counts a session just after handing its socket over.)
    h.eventually("both sessions counted", || server.stats().sessions == 2)
        .await;
    let stats = server.stats();
    assert_eq!((stats.unknown, stats.failed), (0, 0), "{stats:?}");
    h.live("shutdown", a.shutdown()).await;
    h.live("shutdown", b.shutdown()).await;
}

/// A voice bot plays a prompt through a `MediaPacer` and marks its end with
/// `PacedSender::mark`: the `MEDIA_MARK_PROCESSED` comes once the whole prompt has gone out
/// and been played (the simulator played all 25 frames before the mark), not at once.
pub async fn media_pacer_mark_comes_after_the_prompt_is_played<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let channel = h
        .incoming_call(&client, PlaceCall::new("PJSIP/alice", "media"))
        .await;
    h.live("answer", channel.answer()).await.expect("answer");
    let mut media = h
        .live("media", channel.media(MediaOptions::new("media", "slin16")))
        .await
        .expect("media session");
    let pacer = MediaPacer::new(client.runtime());
    let paced = pacer.attach(&media).expect("attach");
    let frame = ari_testkit::test_frame("slin16");
    paced
        .send(bytes::Bytes::from(frame.repeat(25)))
        .expect("prompt");
    paced.mark("prompt-end").expect("mark");
    let id = loop {
        match h.live("the mark", media.next()).await {
            Some(MediaItem::Event(MediaEvent::MediaMarkProcessed { correlation_id, .. })) => {
                break correlation_id
            }
            Some(MediaItem::Closed { .. }) | None => panic!("ended"),
            Some(_) => {}
        }
    };
    assert_eq!(id.as_deref(), Some("prompt-end"));
    assert_eq!(
        media.stats().protocol.frames_out,
        25,
        "the whole prompt went out before the mark came back"
    );
    drop(paced);
    pacer.close();
    h.live("shutdown", media.shutdown()).await;
    let report = media_report(h).await;
    assert_eq!(report.frames_played_test_signal, 25);
}
