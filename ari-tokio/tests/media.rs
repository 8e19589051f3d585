//! `Channel::media` against the simulated Asterisk: the session opens (externalMedia over
//! WebSocket, `/media/<id>`, bridge), audio flows both ways (an echo the simulator plays and
//! recognises), DTMF and marks arrive typed, and shutdown removes the media channel and the
//! bridge.

use std::time::Duration;

use ari_testkit::{MockServer, PlaceCall};
use ari_tokio::media::{MediaItem, MediaOptions};
use ari_tokio::proto::media::websocket::MediaEvent;
use ari_tokio::Client;
use futures_util::StreamExt;

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_media_session_echoes_and_tears_down() {
    let server = MockServer::start();
    let client = Client::connect(&server.base_url(), server.username(), server.password())
        .await
        .expect("connect");
    let mut incoming = client.incoming();
    client.start(&["media"]).await.expect("start");
    let call = PlaceCall {
        channel_id: Some("caller".into()),
        dtmf: "5".into(),
        dtmf_delay: Duration::from_millis(600),
        ..PlaceCall::new("PJSIP/alice", "media")
    };
    server.place_call(call).expect("call");
    let (_, channel, _) = tokio::time::timeout(PATIENCE, incoming.next())
        .await
        .expect("a call")
        .expect("stream open")
        .expect("no lag");
    channel.answer().await.expect("answer");

    let mut media = channel
        .media(MediaOptions::new("media", "slin16"))
        .await
        .expect("media session");
    assert_eq!(media.format(), "slin16");
    assert_eq!(media.media_start().optimal_frame_size, 640);
    let bridge = media.bridge_id().expect("bridged").to_owned();
    let b = client.bridges().get(bridge.clone()).await.expect("bridge");
    let members = &b.data().expect("bridge snapshot").channels;
    assert_eq!(members.len(), 2);
    assert!(members.contains(&"caller".to_string()));
    assert!(members.contains(&media.media_channel_id().to_string()));

    let tx = media.sender();
    let mut echoed = 0u64;
    let mut dtmf = None;
    let mut marked = false;
    while echoed < 60 || dtmf.is_none() || !marked {
        let item = tokio::time::timeout(PATIENCE, media.next())
            .await
            .expect("media keeps flowing")
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
        match tokio::time::timeout(PATIENCE, media.next()).await {
            Ok(Some(_)) => {}
            other => panic!("the session ended early: {other:?}"),
        }
    }
    let stats = media.stats();
    assert_eq!(stats.lagged_frames, 0);
    assert_eq!(stats.protocol.overflow_frames, 0);
    assert_eq!(stats.protocol.frames_out, echoed);
    let media_channel = media.media_channel_id().to_owned();
    tokio::time::timeout(PATIENCE, media.shutdown())
        .await
        .expect("torn down");

    // The simulator played what we echoed: its own test signal, nothing dropped.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let report = loop {
        if let Some(r) = server.media_sessions().into_iter().next() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no media report");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(report.messages_received, echoed);
    assert_eq!(report.messages_dropped, 0);
    assert_eq!(report.remainder_bytes_dropped, 0);
    assert!(report.frames_played >= 30, "{report:?}");
    assert_eq!(report.frames_played, report.frames_played_test_signal);
    let err = client
        .bridges()
        .get(bridge)
        .await
        .expect_err("bridge destroyed");
    assert_eq!(err.status(), Some(404));
    let err = client
        .channels()
        .get(media_channel)
        .await
        .expect_err("media channel gone");
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn the_session_ends_when_the_caller_hangs_up() {
    let server = MockServer::start();
    let client = Client::connect(&server.base_url(), server.username(), server.password())
        .await
        .expect("connect");
    let mut incoming = client.incoming();
    client.start(&["media"]).await.expect("start");
    let call = PlaceCall {
        hangup_after_answer: Some(Duration::from_millis(800)),
        ..PlaceCall::new("PJSIP/alice", "media")
    };
    server.place_call(call).expect("call");
    let (_, channel, _) = tokio::time::timeout(PATIENCE, incoming.next())
        .await
        .expect("a call")
        .expect("stream open")
        .expect("no lag");
    channel.answer().await.expect("answer");
    let mut media = channel
        .media(MediaOptions::new("media", "ulaw").json(true))
        .await
        .expect("media session");
    assert_eq!(media.media_start().optimal_frame_size, 160);
    let mut frames = 0;
    let closed = loop {
        match tokio::time::timeout(PATIENCE, media.next())
            .await
            .expect("the session ends")
        {
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

/// AudioSocket against the simulator: it connects to our TCP address, sends the UUID first,
/// then 8 kHz slin frames and DTMF, plays what we send, and hangs up on kind 0x00. Decoded
/// with ari-proto's streaming decoder.
#[tokio::test]
async fn audiosocket_calls_the_application_and_hangs_up_on_0x00() {
    use ari_tokio::models::{ExternalMediaEncapsulation, ExternalMediaTransport};
    use ari_tokio::proto::media::audiosocket::{format_uuid, Decoder, Message, Rate};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = MockServer::start();
    let client = Client::connect(&server.base_url(), server.username(), server.password())
        .await
        .expect("connect");
    client.start(&["media"]).await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let uuid = "add79572-dd67-4767-bc41-af8b247685f9";
    let chan = client
        .channels()
        .external_media("media", "slin")
        .map(|op| {
            op.encapsulation(ExternalMediaEncapsulation::Audiosocket)
                .transport(ExternalMediaTransport::Tcp)
                .external_host(addr.to_string())
                .data(uuid)
                .channel_id("as-1")
        })
        .await
        .expect("externalMedia");
    assert_eq!(
        chan.data()
            .and_then(|c| c.channelvars.as_ref())
            .and_then(|v| v.get("AUDIOSOCKET_UUID"))
            .and_then(|v| v.as_str()),
        Some(uuid)
    );
    let (mut tcp, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("Asterisk connects")
        .expect("accept");

    // A caller in a bridge with the AudioSocket channel presses 7.
    server
        .place_call(PlaceCall {
            channel_id: Some("caller".into()),
            dtmf: "7".into(),
            dtmf_delay: Duration::from_millis(300),
            ..PlaceCall::new("PJSIP/alice", "media")
        })
        .expect("call");
    let bridge = client.new_bridge();
    bridge.create().await.expect("bridge");
    let caller = client.channel("caller");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while caller.answer().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bridge.add_channel(["as-1", "caller"]).await.expect("add");

    let mut decoder = Decoder::new();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let mut echoed = 0;
    let mut digit = None;
    while digit.is_none() || echoed < 20 {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("data")
            .expect("read");
        assert!(n > 0, "closed early");
        decoder.push(&buf[..n]);
        while let Some(m) = decoder.next_message().expect("valid AudioSocket") {
            match &m {
                Message::Audio { rate, data } => {
                    assert_eq!((*rate, data.len()), (Rate::Slin8, 320));
                    if echoed < 20 {
                        tcp.write_all(&m.to_bytes().expect("encodes"))
                            .await
                            .expect("write");
                        echoed += 1;
                    }
                }
                Message::Dtmf(d) => digit = Some(*d),
                _ => {}
            }
            messages.push(m);
        }
    }
    match &messages[0] {
        Message::Uuid(u) => assert_eq!(format_uuid(u), uuid, "the UUID comes first"),
        other => panic!("first message {other:?}"),
    }
    assert_eq!(digit, Some(b'7'));
    tcp.write_all(&Message::Hangup.to_bytes().expect("encodes"))
        .await
        .expect("hangup");
    // Asterisk hangs up and closes TCP.
    loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("closes")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let report = loop {
        if let Some(r) = server.media_sessions().into_iter().next() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no report");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(report.messages_received, 20);
    assert_eq!(report.frames_played_test_signal, 20);
    let err = client
        .channels()
        .get("as-1")
        .await
        .expect_err("channel hung up");
    assert_eq!(err.status(), Some(404));
}
