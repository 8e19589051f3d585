//! Media flow as a voice-bot author meets it: why a session ended (the close status
//! Asterisk sent), Asterisk's flow control (`MEDIA_XOFF` / `MEDIA_XON`) holding the
//! application's audio back without losing any, and AudioSocket messages cut off at the end
//! of a connection. Written once for every runtime, against the simulated Asterisk.

use std::io::{Read, Write};
use std::time::Duration;

use ari_client::audiosocket::{AudioSocketItem, AudioSocketOptions, AudioSocketServer, Rate};
use ari_client::media::{Command, MediaConfig, MediaEvent, MediaItem, MediaOptions, MediaPacer};
use ari_client::runtime::{Connector, Executor};
use ari_client::{Runtime, Stack};
use bytes::Bytes;
use futures::StreamExt;

use super::media::{answered_call_media, bind_media_server};
use super::media_edges::{audio, next_matching, session};
use crate::Harness;

/// Asterisk gives a media socket up with a close status other than 1000 (1001 when its
/// keepalive PINGs go unanswered, 1009 for a frame it cannot read; a proxy in front of it
/// may add a reason): the session's `Closed` carries that status and reason, so the bot can
/// tell a hangup from a failure, and the channel's hangup has it as `tech_cause`.
pub async fn media_close_status_from_asterisk_reaches_the_application<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    for (code, reason) in [(1001u16, ""), (1009, ""), (4000, "proxy: idle")] {
        let (_call, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
        let id = media.media_start().connection_id.clone();
        assert!(
            h.server().close_media(&id, code, reason),
            "the socket {id} is live"
        );
        let (got, why) = next_matching(h, &mut media, "Closed", |item| match item {
            MediaItem::Closed { code, reason, .. } => Some((code, reason)),
            _ => None,
        })
        .await;
        assert_eq!(got, Some(code), "the close status Asterisk sent");
        assert_eq!(why, reason);
        assert!(h.live("the end", media.next()).await.is_none());
        h.live("shutdown", media.shutdown()).await;
        let report = h
            .server()
            .media_sessions()
            .into_iter()
            .find(|r| r.connection_id == id)
            .expect("the socket's report");
        assert_eq!(report.close_code, Some(code));
    }
    // A hangup is a normal close.
    let (call, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    h.live("hangup", call.hangup()).await.expect("hangup");
    let got = next_matching(h, &mut media, "Closed", |item| match item {
        MediaItem::Closed { code, reason, .. } => Some((code, reason)),
        _ => None,
    })
    .await;
    assert_eq!(got, (Some(1000), String::new()));
    h.live("shutdown", media.shutdown()).await;
}

/// The network cuts the media socket off just as the bot ends the session (or the call
/// ends): the close is never answered and the connection stays open. The session still
/// ends, after `close_timeout`, with `Closed` and no close status, and `shutdown` tears
/// the media channel and the bridge down (before, it waited for ever, with its socket,
/// driver and task).
pub async fn media_close_never_answered_ends_the_session_after_its_timeout<R: Runtime>(
    h: &Harness<R>,
) {
    let client = h.started(&["media"]).await;
    let options = MediaOptions::new("media", "slin16").close_timeout(Duration::from_millis(300));
    let (_call, mut media) = session(h, &client, options).await;
    let id = media.media_start().connection_id.clone();
    assert!(h.server().stall_media(&id), "the socket {id} is live");
    media.send_audio(audio("slin16", 3)).expect("audio");
    media.close();
    let code = next_matching(h, &mut media, "Closed", |item| match item {
        MediaItem::Closed { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code, None, "no close status ever came");
    assert!(h.live("the end", media.next()).await.is_none());
    h.live("shutdown", media.shutdown()).await;
    h.eventually("the simulator's socket ends", || {
        h.server()
            .media_sessions()
            .iter()
            .any(|r| r.connection_id == id)
    })
    .await;
}

/// A bot has handed a pacer five seconds of speech and half a frame when the caller hangs
/// up: every frame is accounted for (played out by the pacer and then sent, refused or
/// unsent by the session; or discarded by the pacer), and the half frame the pacer held is
/// counted too, not dropped silently.
pub async fn media_pacer_full_when_the_call_hangs_up_accounts_for_every_byte<R: Runtime>(
    h: &Harness<R>,
) {
    const FRAMES: u64 = 250;
    let client = h.started(&["media"]).await;
    let (channel, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    let pacer = MediaPacer::new(client.runtime());
    let paced = pacer.attach(&media).expect("attach");
    paced
        .send(audio("slin16", FRAMES as usize))
        .expect("speech");
    paced
        .send(audio("slin16", 1).slice(..320))
        .expect("half a frame");
    // The caller hangs up now (a hangup timed from the answer raced a slow opening).
    h.server()
        .hangup(channel.id())
        .expect("the caller hangs up");
    let unsent = next_matching(h, &mut media, "Closed", |item| match item {
        MediaItem::Closed { unsent_frames, .. } => Some(unsent_frames as u64),
        _ => None,
    })
    .await;
    assert!(h.live("the end", media.next()).await.is_none());
    h.eventually("the pacer lets the ended call go", || {
        paced.send(audio("slin16", 1)).is_err()
    })
    .await;
    let p = paced.stats();
    assert_eq!(p.frames_sent + p.discarded_frames, FRAMES, "{p:?}");
    assert!(
        p.discarded_frames > 0,
        "five seconds cannot have played: {p:?}"
    );
    assert_eq!(p.discarded_bytes, 320, "the half frame is counted: {p:?}");
    let s = media.stats();
    assert_eq!(
        s.protocol.frames_out + unsent + s.refused,
        p.frames_sent,
        "every frame the pacer handed over: {s:?}"
    );
}

/// A text-to-speech bot pushes a long prompt in big chunks (`reframe(false)`, 50 frames a
/// message) with a send-ahead of 899 frames while playout is paused: Asterisk's queue
/// reaches its XOFF level (900) and it says `MEDIA_XOFF`. From then on nothing goes out —
/// neither the session's chunks nor the frames of a pacer on the same call, whose ticks are
/// counted as paused — until `MEDIA_XON` (below 800, once playout resumes); then everything
/// goes out, nothing is dropped by Asterisk, and the counters say one XOFF (the number the
/// `media_echo` example prints as `xoff=`).
pub async fn media_xoff_holds_the_audio_back_until_xon_and_nothing_is_lost<R: Runtime>(
    h: &Harness<R>,
) {
    // 18 chunks reach the XOFF level; the 19th and the paced frames wait for XON (and stay
    // well below the XOFF level after it: 799 + 60 frames).
    const CHUNKS: u64 = 19;
    const PACED: u64 = 10;
    let client = h.started(&["media"]).await;
    let config = MediaConfig::new().reframe(false).send_ahead(899);
    let options = MediaOptions::new("media", "slin16").config(config);
    let (_call, mut media) = session(h, &client, options).await;
    let id = media.media_start().connection_id.clone();
    let tx = media.sender();
    tx.command(Command::PauseMedia).expect("pause");
    for _ in 0..CHUNKS {
        tx.send_audio(audio("slin16", 50)).expect("a chunk");
    }
    next_matching(h, &mut media, "MEDIA_XOFF", |item| {
        matches!(item, MediaItem::Event(MediaEvent::MediaXoff { .. })).then_some(())
    })
    .await;
    let pacer = MediaPacer::new(client.runtime());
    let paced = pacer.attach(&media).expect("attach");
    paced.send(audio("slin16", PACED as usize)).expect("paced");
    h.eventually("the pacer holds its frames back", || {
        paced.stats().paused_ticks >= 3
    })
    .await;
    assert_eq!(paced.stats().frames_sent, 0, "nothing is paced during XOFF");
    assert_eq!(
        media.stats().protocol.frames_out,
        18,
        "900 frames, then XOFF"
    );
    tx.command(Command::ContinueMedia).expect("continue");
    next_matching(h, &mut media, "MEDIA_XON", |item| {
        matches!(item, MediaItem::Event(MediaEvent::MediaXon { .. })).then_some(())
    })
    .await;
    h.eventually("everything goes out after XON", || {
        media.stats().protocol.frames_out == CHUNKS + PACED
    })
    .await;
    let stats = media.stats().protocol;
    assert_eq!(stats.xoff, 1, "{stats:?}");
    assert_eq!(stats.overflow_frames + stats.flushed_frames, 0, "{stats:?}");
    let paced_stats = paced.stats();
    assert_eq!(paced_stats.frames_sent, PACED, "{paced_stats:?}");
    assert_eq!(
        paced_stats.overflow_frames + paced_stats.discarded_frames,
        0
    );
    h.live("shutdown", media.shutdown()).await;
    let report = h
        .server()
        .media_sessions()
        .into_iter()
        .find(|r| r.connection_id == id)
        .expect("the socket's report");
    assert_eq!(report.messages_received, CHUNKS + PACED, "{report:?}");
    assert_eq!(report.messages_dropped, 0, "{report:?}");
    assert_eq!(report.frames_queued, CHUNKS * 50 + PACED, "{report:?}");
    assert_eq!((report.xoff_sent, report.xon_sent), (1, 1), "{report:?}");
    assert!(
        report.max_queued_frames < 900 + 50,
        "a chunk went out during XOFF: {report:?}"
    );
}

/// AudioSocket bytes that never make a whole message are counted, never dropped silently:
/// Asterisk's connection ends in the middle of a message (its audio arriving in arbitrary
/// TCP pieces before that), and the bot had handed over a frame and a half. The whole
/// messages arrive intact; `Closed` counts the cut-off message's bytes; the half frame that
/// never left is in `unsent_bytes`.
pub async fn audiosocket_a_message_cut_off_at_either_end_is_counted<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let server = h
        .live(
            "bind",
            AudioSocketServer::bind(h.runtime().clone(), "127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("bind");
    let addr = server.local_addr();
    let frame = ari_testkit::test_frame("slin");
    let mut wire = message(0x01, &[0x5a; 16]);
    wire.extend(message(0x10, &frame));
    wire.extend(message(0x03, b"5"));
    wire.extend(message(0x10, &frame));
    let cut = message(0x10, &frame);
    wire.extend_from_slice(&cut[..103]);
    // Asterisk, on a thread of its own (any runtime): its messages in 7-byte pieces, then it
    // reads the application's audio and hangs up in the middle of its last message.
    let asterisk = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        for piece in wire.chunks(7) {
            s.write_all(piece)?;
        }
        let mut got = vec![0u8; 3 + 320];
        s.read_exact(&mut got)?;
        Ok(got)
    });
    let mut session = h
        .live("Asterisk connects", server.accept())
        .await
        .expect("a session");
    assert_eq!(session.uuid_bytes(), [0x5a; 16]);
    let tx = session.sender();
    tx.send_audio(Bytes::from(vec![7u8; 480]))
        .expect("a frame and a half");
    let mut items = Vec::new();
    let truncated = loop {
        match h.live("the connection ends", session.next()).await {
            Some(AudioSocketItem::Closed {
                error,
                truncated_bytes,
            }) => {
                assert_eq!(error, None);
                break truncated_bytes;
            }
            Some(item) => items.push(item),
            None => panic!("ended without Closed"),
        }
    };
    assert_eq!(truncated, 103, "the cut-off message is counted");
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(matches!(&items[0], AudioSocketItem::Audio { data, .. } if data[..] == frame[..]));
    assert_eq!(items[1], AudioSocketItem::Dtmf('5'));
    assert!(matches!(&items[2], AudioSocketItem::Audio { data, .. } if data[..] == frame[..]));
    let got = asterisk
        .join()
        .expect("the Asterisk thread")
        .expect("Asterisk's socket");
    assert_eq!(got, message(0x10, &[7; 320]), "one whole frame left");
    h.eventually("the frame written is counted", || {
        let s = tx.stats();
        s.frames_sent + s.unsent_frames == 1
    })
    .await;
    let stats = tx.stats();
    assert_eq!(stats.frames_sent, 1, "{stats:?}");
    assert_eq!(
        stats.unsent_bytes, 160,
        "the half frame is counted: {stats:?}"
    );
    assert_eq!(stats.unsent_frames + stats.overflow_frames, 0, "{stats:?}");
}

/// One AudioSocket message: kind, 16-bit big-endian length, payload.
fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(0).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// The bot hangs an AudioSocket call up just as the network cuts Asterisk off: the hangup
/// goes out but the connection is never closed (Asterisk closes it at once when it can).
/// The session still ends, after `close_timeout`, with `Closed` and an error saying so
/// (before, `next()` waited for ever).
pub async fn audiosocket_hangup_never_answered_ends_the_session<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let options = AudioSocketOptions::new().close_timeout(Duration::from_millis(300));
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
    let addr = server.local_addr();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // Asterisk, cut off: it takes the hangup in, then neither answers nor closes until the
    // test lets it go.
    let asterisk = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(&message(0x01, &[0x6b; 16]))?;
        let mut got = vec![0u8; 3];
        s.read_exact(&mut got)?;
        let _ = released.recv();
        Ok(got)
    });
    let mut session = h
        .live("Asterisk connects", server.accept())
        .await
        .expect("a session");
    session.hangup().expect("hangup");
    let error = loop {
        match h.live("the session ends", session.next()).await {
            Some(AudioSocketItem::Closed { error, .. }) => break error,
            Some(_) => {}
            None => panic!("ended without Closed"),
        }
    };
    let error = error.expect("an error: the connection never closed");
    assert!(error.contains("close_timeout"), "{error}");
    assert!(h.live("the end", session.next()).await.is_none());
    let _ = release.send(());
    let got = asterisk
        .join()
        .expect("the Asterisk thread")
        .expect("Asterisk's socket");
    assert_eq!(got, message(0x00, &[]), "the hangup went out");
}

/// Asterisk ends a media socket (the bot's `HANGUP`, a close status of its own, in server
/// and in client mode, where Asterisk dialled the application): the session answers the
/// close, as RFC 6455 requires and Asterisk waits for, before it drops the connection. It
/// dropped the socket with the answer still queued in the WebSocket layer, so Asterisk only
/// ever saw the connection cut.
pub async fn media_close_from_asterisk_is_answered<E: Executor, C: Connector>(
    h: &Harness<Stack<E, C>>,
) {
    let client = h.started(&["media"]).await;
    // The bot's HANGUP: Asterisk closes with 1000.
    let (_call, mut media) = session(h, &client, MediaOptions::new("media", "ulaw")).await;
    media.sender().command(Command::Hangup).expect("HANGUP");
    let reply = answered(h, media.media_channel_id().to_owned(), &mut media).await;
    assert_eq!(reply, Some(1000), "the answer to HANGUP's close");
    h.live("shutdown", media.shutdown()).await;
    // A close status of Asterisk's own (unanswered keepalives).
    let (_call, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    let id = media.media_start().connection_id.clone();
    assert!(
        h.server().close_media(&id, 1001, ""),
        "the socket {id} is live"
    );
    let reply = answered(h, media.media_channel_id().to_owned(), &mut media).await;
    assert_eq!(reply, Some(1001), "the answer echoes the status");
    h.live("shutdown", media.shutdown()).await;
    // Client mode: the application is the WebSocket server of the connection.
    let server = bind_media_server(h).await;
    let uri = format!("ws://{}/media-in", server.local_addr());
    h.server().set_websocket_client("media_app", &uri);
    let mut media = answered_call_media(h, &client, &server, "media_app").await;
    media.sender().command(Command::Hangup).expect("HANGUP");
    let reply = answered(h, media.media_channel_id().to_owned(), &mut media).await;
    assert_eq!(reply, Some(1000), "the answer in client mode");
    h.live("shutdown", media.shutdown()).await;
}

/// Reads `media` to its end, then the simulator's report of the socket of the media channel
/// `channel_id`: the close status of the application's answer to Asterisk's close.
async fn answered<R: Runtime>(
    h: &Harness<R>,
    channel_id: String,
    media: &mut ari_client::media::MediaSession,
) -> Option<u16> {
    next_matching(h, media, "Closed", |item| match item {
        MediaItem::Closed { .. } => Some(()),
        _ => None,
    })
    .await;
    assert!(h.live("the end", media.next()).await.is_none());
    let report = || {
        h.server()
            .media_sessions()
            .into_iter()
            .find(|r| r.channel_id == channel_id)
    };
    h.eventually("the socket's report", || report().is_some())
        .await;
    let report = report().expect("the socket's report");
    assert!(
        report.close_code.is_some(),
        "Asterisk closed first: {report:?}"
    );
    report.close_reply
}

/// An AudioSocket server left at the default rate (8 kHz) serves a `slin16` call: Asterisk
/// labels its audio 16 kHz (kind `0x12`) while the bot's audio goes out framed, paced and
/// labelled 8 kHz, which Asterisk plays at half speed. Nothing said so: the mismatch is now
/// counted (`AudioSocketStats::rate_mismatches`, one per message) and warned once.
pub async fn audiosocket_audio_at_another_rate_than_the_senders_is_counted<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let server = h
        .live(
            "bind",
            AudioSocketServer::bind(h.runtime().clone(), "127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("bind");
    let addr = server.local_addr();
    // Asterisk on a slin16 call: the UUID, two 20 ms messages of 16 kHz audio, one of 8 kHz.
    let asterisk = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(&message(0x01, &[0x5a; 16]))?;
        s.write_all(&message(0x12, &[0u8; 640]))?;
        s.write_all(&message(0x12, &[0u8; 640]))?;
        s.write_all(&message(0x10, &[0u8; 320]))?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(())
    });
    let mut session = h
        .live("Asterisk connects", server.accept())
        .await
        .expect("a session");
    let mut rates = Vec::new();
    while rates.len() < 3 {
        match h.live("audio", session.next()).await {
            Some(AudioSocketItem::Audio { rate, data }) => rates.push((rate, data.len())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        rates,
        [(Rate::Slin16, 640), (Rate::Slin16, 640), (Rate::Slin8, 320)]
    );
    assert_eq!(
        session.stats().rate_mismatches,
        2,
        "the two 16 kHz messages"
    );
    session.hangup().expect("hangup");
    drop(session);
    asterisk
        .join()
        .expect("the Asterisk thread")
        .expect("Asterisk's socket");
}

/// A network cut stalls the media socket while a bot streams speech (Asterisk reads
/// nothing, the connection stays open). Once the kernel's buffers are full the socket takes
/// no more, and the audio must wait in the session's bounded queue, whose overflow is
/// reported, and not in memory without bound. When the session ends, every message that
/// never reached the socket is counted as unsent. (Before, the driver kept taking paced
/// frames out of the session into a list of its own for as long as the socket stayed
/// stalled: memory grew at the audio's rate, no overflow was ever reported, and those
/// frames were dropped uncounted at the end.)
pub async fn media_socket_that_takes_nothing_holds_its_audio_in_the_bounded_queue<R: Runtime>(
    h: &Harness<R>,
) {
    let client = h.started(&["media"]).await;
    // Passthrough: each 60 kB message counts as one frame, so the buffers fill in seconds.
    let options = MediaOptions::new("media", "slin16")
        .passthrough(true)
        .config(MediaConfig::new().queue_frames(20))
        .close_timeout(Duration::from_millis(300));
    let (_call, mut media) = session(h, &client, options).await;
    let id = media.media_start().connection_id.clone();
    assert!(h.server().stall_media(&id), "the socket {id} is live");
    let tx = media.sender();
    let chunk = Bytes::from(vec![0x11u8; 60_000]);
    let dropped = h
        .live("the overflow", async {
            loop {
                for _ in 0..5 {
                    tx.send_audio(chunk.clone()).expect("audio");
                }
                h.sleep(Duration::from_millis(100)).await;
                while let Some(item) = futures::FutureExt::now_or_never(media.next()) {
                    match item {
                        Some(MediaItem::Overflow { dropped_frames }) => return dropped_frames,
                        Some(MediaItem::Closed { .. }) | None => panic!("the session ended"),
                        Some(_) => {}
                    }
                }
            }
        })
        .await;
    assert!(dropped > 0);
    media.close();
    let unsent = next_matching(h, &mut media, "Closed", |item| match item {
        MediaItem::Closed { unsent_frames, .. } => Some(unsent_frames),
        _ => None,
    })
    .await;
    // The session's full queue, and the messages that waited for the socket.
    assert!(
        unsent > 20,
        "{unsent} unsent: the ones held for the socket are counted"
    );
    h.live("shutdown", media.shutdown()).await;
}

/// A bot busy elsewhere (a slow speech recogniser) stops reading its session while the
/// caller keys digits: the oldest audio is dropped and announced (`Lagged`), the DTMF is
/// never dropped and comes in order, and every audio message Asterisk sent is accounted for:
/// read, or counted as lagged.
pub async fn media_slow_consumer_loses_audio_counted_but_never_a_digit<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let mut options = MediaOptions::new("media", "slin16");
    options.inbox_frames = 5;
    let (call, mut media) = session(h, &client, options).await;
    h.server()
        .send_dtmf(call.id(), "1#9")
        .expect("the caller keys digits");
    // Busy: 40 frames come meanwhile, the inbox holds 5.
    h.sleep(Duration::from_millis(800)).await;
    let mut digits = String::new();
    let mut audio_read = 0u64;
    let mut lagged = 0u64;
    let mut closed = false;
    while let Some(item) = h.live("the session", media.next()).await {
        match item {
            MediaItem::Audio(_) => audio_read += 1,
            MediaItem::Lagged { dropped_frames } => lagged += dropped_frames,
            MediaItem::Event(MediaEvent::DtmfEnd { digit, .. }) => {
                digits.push(digit);
                if digits.len() == 3 {
                    media.close();
                }
            }
            MediaItem::Closed { .. } => closed = true,
            _ => {}
        }
    }
    assert!(closed);
    assert_eq!(digits, "1#9", "every digit, in order");
    let stats = media.stats();
    assert!(lagged > 0, "the consumer fell behind");
    assert_eq!(lagged, stats.lagged_frames);
    assert_eq!(
        audio_read + lagged,
        stats.protocol.frames_in,
        "every frame accounted for"
    );
    h.live("shutdown", media.shutdown()).await;
}

/// The bot hangs its media channel up through ARI (`DELETE channels/{id}`), as a voice bot
/// does to stop listening while the call goes on: Asterisk closes the media socket (1000)
/// before it destroys the channel (recorded), and the session ends with that close, once;
/// the call itself stays. The media channel's `ChannelDestroyed` follows.
pub async fn media_channel_hung_up_through_ari_ends_the_session_with_asterisks_close<R: Runtime>(
    h: &Harness<R>,
) {
    let client = h.started(&["media"]).await;
    let (call, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    let media_channel = client.channel(media.media_channel_id().to_owned());
    let destroyed = media_channel.once::<ari_client::events::ChannelDestroyed>();
    h.live("hangup", media_channel.hangup())
        .await
        .expect("the media channel is hung up");
    let code = next_matching(h, &mut media, "Closed", |item| match item {
        MediaItem::Closed { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code, Some(1000), "Asterisk's close");
    assert!(h.live("the end", media.next()).await.is_none());
    let gone = h
        .live("ChannelDestroyed", destroyed)
        .await
        .expect("destroyed");
    assert_eq!(gone.cause, 16);
    h.live("the call", call.get())
        .await
        .expect("the call stays in the application");
}

/// Barge-in during XOFF: the bot had pushed a long prompt while playout was paused
/// (Asterisk's queue reached 900 frames: `MEDIA_XOFF`), then drops it (`FLUSH_MEDIA`) and
/// resumes. Asterisk keeps its XOFF state through the flush and says `MEDIA_XON` at its next
/// tick of running playout (none while paused); the session's flow control resumes there
/// and the next prompt goes out whole. It must never stay paused for ever.
pub async fn media_flush_during_xoff_resumes_at_the_next_xon<R: Runtime>(h: &Harness<R>) {
    const NEXT: u64 = 5;
    let client = h.started(&["media"]).await;
    let config = MediaConfig::new().reframe(false).send_ahead(899);
    let options = MediaOptions::new("media", "slin16").config(config);
    let (_call, mut media) = session(h, &client, options).await;
    let id = media.media_start().connection_id.clone();
    let tx = media.sender();
    tx.command(Command::PauseMedia).expect("pause");
    for _ in 0..19 {
        tx.send_audio(audio("slin16", 50)).expect("a chunk");
    }
    next_matching(h, &mut media, "MEDIA_XOFF", |item| {
        matches!(item, MediaItem::Event(MediaEvent::MediaXoff { .. })).then_some(())
    })
    .await;
    tx.command(Command::FlushMedia).expect("flush");
    tx.command(Command::ContinueMedia).expect("continue");
    for _ in 0..NEXT {
        tx.send_audio(audio("slin16", 50)).expect("the next prompt");
    }
    next_matching(h, &mut media, "MEDIA_XON", |item| {
        matches!(item, MediaItem::Event(MediaEvent::MediaXon { .. })).then_some(())
    })
    .await;
    h.eventually("the next prompt goes out after XON", || {
        media.stats().protocol.frames_out == 18 + NEXT
    })
    .await;
    let stats = media.stats().protocol;
    assert_eq!(stats.xoff, 1, "{stats:?}");
    assert_eq!(
        stats.flushed_frames, 1,
        "the 19th chunk never left: {stats:?}"
    );
    h.live("shutdown", media.shutdown()).await;
    let report = h
        .server()
        .media_sessions()
        .into_iter()
        .find(|r| r.connection_id == id)
        .expect("the socket's report");
    assert_eq!(report.messages_received, 18 + NEXT, "{report:?}");
    assert_eq!(report.messages_dropped, 0, "{report:?}");
    assert_eq!((report.xoff_sent, report.xon_sent), (1, 1), "{report:?}");
}
