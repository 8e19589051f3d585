//! Media sessions as a voice-bot author meets them: barge-in, overflow, passthrough, a call
//! gone before the session opens, handles dropped without `close`, the client closed with a
//! session live. Written once for every runtime, against the simulated Asterisk.

use ari_client::media::{
    MediaConfig, MediaEvent, MediaItem, MediaOptions, MediaServer, MediaSession, SendError,
};
use ari_client::runtime::{Connector, Executor};
use ari_client::{Channel, Client, Runtime, Stack};
use ari_testkit::PlaceCall;
use bytes::Bytes;
use futures::StreamExt;
use std::future::IntoFuture;

use crate::Harness;

/// An answered call into `media` and a media session on it (slin16, 640-byte frames).
pub(crate) async fn session<R: Runtime>(
    h: &Harness<R>,
    client: &Client<R>,
    options: MediaOptions,
) -> (Channel<R>, MediaSession) {
    session_on(h, client, PlaceCall::new("PJSIP/alice", "media"), options).await
}

/// [`session`] on a call placed as `call` says.
pub(crate) async fn session_on<R: Runtime>(
    h: &Harness<R>,
    client: &Client<R>,
    call: PlaceCall,
    options: MediaOptions,
) -> (Channel<R>, MediaSession) {
    let channel = h.incoming_call(client, call).await;
    h.live("answer", channel.answer()).await.expect("answer");
    let media = h
        .live("media", channel.media(options))
        .await
        .expect("media session");
    (channel, media)
}

/// `frames` frames of the simulator's test signal in one chunk.
pub(crate) fn audio(format: &str, frames: usize) -> Bytes {
    Bytes::from(ari_testkit::test_frame(format).repeat(frames))
}

/// Reads the session until `pick` returns something, failing if it ends first.
pub(crate) async fn next_matching<R: Runtime, T>(
    h: &Harness<R>,
    media: &mut MediaSession,
    what: &str,
    mut pick: impl FnMut(MediaItem) -> Option<T>,
) -> T {
    h.live(what, async {
        loop {
            let item = media
                .next()
                .await
                .unwrap_or_else(|| panic!("{what}: ended"));
            if let Some(t) = pick(item) {
                return t;
            }
        }
    })
    .await
}

/// Asserts the simulator no longer has the media channel nor the session's bridge.
async fn assert_torn_down<R: Runtime>(
    h: &Harness<R>,
    client: &Client<R>,
    media_channel: &str,
    bridge: &str,
) {
    let err = h
        .live(
            "channel get",
            client.channels().get(media_channel.to_owned()),
        )
        .await
        .expect_err("the media channel is gone");
    assert_eq!(err.status(), Some(404), "{err}");
    let err = h
        .live("bridge get", client.bridges().get(bridge.to_owned()))
        .await
        .expect_err("the bridge is gone");
    assert_eq!(err.status(), Some(404), "{err}");
}

/// Barge-in: `flush` drops the audio still held locally (counted in `flushed_frames`),
/// reports the mark queued behind it as discarded (its `MediaMarkProcessed` never comes),
/// and the session goes on: audio and a mark sent afterwards are played and processed.
/// Every frame handed over is accounted for: sent or flushed.
pub async fn media_flush_is_a_barge_in_that_discards_pending_marks<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let (_call, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    let tx = media.sender();
    // Two seconds of speech: at most ten frames go out at once (send-ahead), the rest wait
    // here.
    tx.send_audio(audio("slin16", 100)).expect("send");
    tx.mark("sentence-end").expect("mark");
    tx.flush().expect("flush");
    let (marks, buffering) = next_matching(h, &mut media, "MarkersDiscarded", |item| match item {
        MediaItem::MarkersDiscarded { marks, buffering } => Some((marks, buffering)),
        MediaItem::Event(MediaEvent::MediaMarkProcessed { correlation_id, .. }) => {
            panic!("the flushed mark was processed: {correlation_id:?}")
        }
        _ => None,
    })
    .await;
    assert_eq!(marks, vec![Some("sentence-end".to_owned())]);
    assert!(buffering.is_empty());
    let flushed = media.stats().protocol.flushed_frames;
    assert!((90..=100).contains(&flushed), "flushed {flushed}");

    // The answer after the barge-in plays, and its mark comes back.
    tx.send_audio(audio("slin16", 3)).expect("send");
    tx.mark("answer-end").expect("mark");
    let id = next_matching(
        h,
        &mut media,
        "the mark after the flush",
        |item| match item {
            MediaItem::Event(MediaEvent::MediaMarkProcessed { correlation_id, .. }) => {
                Some(correlation_id)
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(id.as_deref(), Some("answer-end"));
    let stats = media.stats().protocol;
    assert_eq!(stats.frames_out + stats.flushed_frames, 103, "{stats:?}");
    assert_eq!(stats.overflow_frames, 0);
    h.live("shutdown", media.shutdown()).await;
    let report = h.server().media_sessions().remove(0);
    assert_eq!(report.messages_received, stats.frames_out);
    assert_eq!(report.messages_dropped, 0);
}

/// Audio handed over faster than the local queue holds is dropped, counted exactly in
/// `overflow_frames` and announced with `MediaItem::Overflow`; what fitted goes out whole.
pub async fn media_overflow_is_counted_and_announced<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let options = MediaOptions::new("media", "slin16").config(MediaConfig::new().queue_frames(20));
    let (_call, mut media) = session(h, &client, options).await;
    let tx = media.sender();
    tx.send_audio(audio("slin16", 50)).expect("send");
    let dropped = next_matching(h, &mut media, "Overflow", |item| match item {
        MediaItem::Overflow { dropped_frames } => Some(dropped_frames),
        _ => None,
    })
    .await;
    assert_eq!(dropped, 30);
    h.eventually("what fitted goes out", || {
        media.stats().protocol.frames_out == 20
    })
    .await;
    assert_eq!(media.stats().protocol.overflow_frames, 30);
    h.live("shutdown", media.shutdown()).await;
    let report = h.server().media_sessions().remove(0);
    assert_eq!(report.messages_received, 20);
    assert_eq!(report.frames_played_test_signal, report.frames_played);
}

/// Commands the sender accepted but the session cannot queue (more than `queue_frames` wait
/// behind held-back audio) and audio handed over after `close()` are never dropped
/// silently: each comes back as `MediaItem::Refused` and is counted, before `Closed`.
pub async fn media_commands_refused_after_acceptance_are_reported<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    // One frame ahead at Asterisk: ten frames are held here for about 200 ms, and marks wait
    // behind them; at most ten commands may wait.
    let options = MediaOptions::new("media", "slin16")
        .config(MediaConfig::new().queue_frames(10).send_ahead(1));
    let (_call, mut media) = session(h, &client, options).await;
    let tx = media.sender();
    tx.send_audio(audio("slin16", 10)).expect("audio");
    for i in 0..30 {
        tx.mark(format!("m{i}"))
            .expect("the sender accepts the mark");
    }
    let mut refused = 0;
    while refused < 20 {
        let (command, count, error) = next_matching(h, &mut media, "Refused", |item| match item {
            MediaItem::Refused {
                command,
                count,
                error,
            } => Some((command, count, error)),
            _ => None,
        })
        .await;
        assert_eq!(command, Some("MARK_MEDIA"));
        assert_eq!(error, SendError::QueueFull);
        assert!(error.to_string().contains("queue is full"), "{error}");
        refused += count;
    }
    assert_eq!(refused, 20, "ten marks fit behind the audio, twenty do not");
    assert_eq!(media.stats().refused, 20);
    // The ten accepted marks are played after the audio.
    let mut processed = 0;
    while processed < 10 {
        next_matching(h, &mut media, "MediaMarkProcessed", |item| match item {
            MediaItem::Event(MediaEvent::MediaMarkProcessed { .. }) => Some(()),
            _ => None,
        })
        .await;
        processed += 1;
    }
    // Audio after close(): refused at the sender or reported before Closed, never lost.
    tx.close();
    let refused_at_once = tx.send_audio(audio("slin16", 1)).is_err();
    let mut reported = 0;
    let unsent = next_matching(h, &mut media, "Closed", |item| match item {
        MediaItem::Refused {
            command: None,
            count,
            error: SendError::Closed,
        } => {
            reported += count;
            None
        }
        MediaItem::Closed { unsent_frames, .. } => Some(unsent_frames),
        _ => None,
    })
    .await;
    assert_eq!(unsent, 0);
    assert_eq!(
        u64::from(refused_at_once) + reported,
        1,
        "the audio after close() is refused exactly once"
    );
    assert_eq!(media.stats().refused, 20 + reported);
}

/// In passthrough mode Asterisk refuses every command but ANSWER, HANGUP and GET_STATUS:
/// the sender refuses them at once with a typed error (a mark that Asterisk would answer
/// with `ERROR` must not look sent), and audio still flows.
pub async fn media_passthrough_refuses_commands_at_the_sender<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let options = MediaOptions::new("media", "slin16").passthrough(true);
    let (_call, mut media) = session(h, &client, options).await;
    let tx = media.sender();
    let err = tx
        .mark("m1")
        .expect_err("MARK_MEDIA is refused in passthrough");
    assert!(
        matches!(
            err,
            SendError::Passthrough {
                command: "MARK_MEDIA"
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("passthrough"), "{err}");
    let err = tx
        .flush()
        .expect_err("FLUSH_MEDIA is refused in passthrough");
    assert!(matches!(err, SendError::Passthrough { .. }), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_none(),
        "a refusal has no cause"
    );
    let frame = Bytes::from(ari_testkit::test_frame("slin16"));
    for _ in 0..5 {
        tx.send_audio(frame.clone()).expect("audio");
    }
    h.eventually("the audio goes out", || {
        media.stats().protocol.frames_out == 5
    })
    .await;
    // Asterisk never had to refuse anything.
    while let Some(item) = futures::FutureExt::now_or_never(media.next()).flatten() {
        assert!(
            !matches!(item, MediaItem::Event(MediaEvent::Error { .. })),
            "{item:?}"
        );
    }
    h.live("shutdown", media.shutdown()).await;
    let report = h.server().media_sessions().remove(0);
    assert_eq!(report.messages_received, 5);
    assert_eq!(report.ignored_commands, 0);
}

/// `channel.media(…)` on a call that hung up meanwhile fails, and leaves nothing behind in
/// Asterisk: no media channel, no bridge.
pub async fn media_on_a_call_gone_meanwhile_fails_and_leaves_nothing_behind<R: Runtime>(
    h: &Harness<R>,
) {
    let client = h.started(&["media"]).await;
    let channel = h
        .incoming_call(&client, PlaceCall::new("PJSIP/alice", "media"))
        .await;
    h.live("answer", channel.answer()).await.expect("answer");
    h.live("hangup", channel.hangup()).await.expect("hangup");
    let err = h
        .live("media", channel.media(MediaOptions::new("media", "slin16")))
        .await
        .expect_err("no call to bridge with");
    assert_eq!(err.status(), Some(400), "{err}");
    let bridges = h
        .live("bridges", client.bridges().list())
        .await
        .expect("list");
    assert!(bridges.is_empty(), "a bridge was left behind: {bridges:?}");
    let channels = h
        .live("channels", client.channels().list())
        .await
        .expect("list");
    assert!(
        channels.is_empty(),
        "channels were left behind: {channels:?}"
    );
}

/// Dropping the session and every sender without `close` ends it as `close` would: the
/// socket closes, the media channel is hung up and the bridge destroyed; the call goes on.
pub async fn media_handles_dropped_without_close_tear_the_session_down<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let (call, media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    let media_channel = media.media_channel_id().to_owned();
    let bridge = media.bridge_id().expect("bridged").to_owned();
    let tx = media.sender();
    let tx2 = tx.clone();
    drop(media);
    tx.send_audio(audio("slin16", 1))
        .expect("a sender outlives the session");
    drop(tx);
    drop(tx2);
    h.eventually("the media socket closes", || {
        !h.server().media_sessions().is_empty()
    })
    .await;
    let deadline = h.runtime().now() + crate::LIVENESS;
    loop {
        let bridges = h
            .live("bridges", client.bridges().list())
            .await
            .expect("list");
        if bridges.is_empty() {
            break;
        }
        assert!(
            h.runtime().now() < deadline,
            "the bridge stays: {bridges:?}"
        );
        h.sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_torn_down(h, &client, &media_channel, &bridge).await;
    let live = h
        .live("the call", call.get())
        .await
        .expect("the call goes on");
    assert_eq!(live.data().expect("snapshot").id, call.id());
}

/// Closing the client with a media session live shuts the session down first: its stream
/// yields `Closed` and then ends, the media socket is closed, the media channel hung up and
/// the session's bridge destroyed (while the client could still make the requests).
pub async fn client_close_ends_live_media_sessions<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let (_call, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    let media_channel = media.media_channel_id().to_owned();
    let bridge = media.bridge_id().expect("a bridge").to_owned();
    h.live("close", client.close()).await;
    let unsent = next_matching(
        h,
        &mut media,
        "Closed after client.close()",
        |item| match item {
            MediaItem::Closed { unsent_frames, .. } => Some(unsent_frames),
            _ => None,
        },
    )
    .await;
    assert_eq!(unsent, 0, "nothing was handed over to send");
    assert!(h.live("the end", media.next()).await.is_none());
    h.eventually("the media socket closes", || {
        h.server()
            .media_sessions()
            .iter()
            .any(|r| r.channel_id == media_channel)
    })
    .await;
    // Torn down by the time close() returned: no waiting here.
    let other = h.client().await;
    assert_torn_down(h, &other, &media_channel, &bridge).await;
}

/// `channel.media(…)` abandoned half-way (a `select!` on the caller's hangup, a timeout of
/// the application's own) leaves nothing behind: the media channel it created (which would
/// wait unanswered in Asterisk for a connection that never comes) is hung up, and no bridge
/// stays.
pub async fn media_open_abandoned_midway_leaves_nothing_behind<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let call = h.answered_call(&client, "media").await;
    let channels = || {
        h.server()
            .with_sim(|sim, _| sim.channel_ids())
            .expect("a simulator")
    };
    assert_eq!(channels(), vec![call.id().to_owned()]);
    let mut open = Box::pin(call.media(MediaOptions::new("media", "slin16")));
    // Drive the opening by hand until Asterisk has the media channel, then give up on it.
    h.live("externalMedia reaches Asterisk", async {
        while channels().len() < 2 {
            if let std::task::Poll::Ready(r) = futures::poll!(open.as_mut()) {
                panic!(
                    "opened before the media channel showed: {:?}",
                    r.map(|_| ())
                );
            }
            h.sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
    drop(open);
    h.eventually("the media channel is hung up", || {
        channels() == vec![call.id().to_owned()]
    })
    .await;
    let bridges = h
        .live("bridges", client.bridges().list())
        .await
        .expect("list");
    assert!(bridges.is_empty(), "a bridge was left behind: {bridges:?}");
    let live = h
        .live("the call", call.get())
        .await
        .expect("the call goes on");
    assert_eq!(live.data().expect("snapshot").id, call.id());
}

/// The caller hangs up while the application's audio is still queued (two seconds and half
/// a frame handed over at once): the session ends with `Closed`, whose `unsent_frames`
/// counts exactly the frames that never left (with the frames sent, that is every frame
/// handed over) and `unsent_bytes` the half frame held for the rest of it.
pub async fn media_caller_hangup_mid_stream_counts_the_unsent_audio<R: Runtime>(h: &Harness<R>) {
    let client = h.started(&["media"]).await;
    let (channel, mut media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
    media.send_audio(audio("slin16", 100)).expect("send");
    media
        .send_audio(audio("slin16", 1).slice(..320))
        .expect("half a frame");
    // The caller hangs up now (a hangup timed from the answer raced a slow opening).
    h.server()
        .hangup(channel.id())
        .expect("the caller hangs up");
    let (unsent, unsent_bytes) = next_matching(h, &mut media, "Closed", |item| match item {
        MediaItem::Closed {
            unsent_frames,
            unsent_bytes,
            ..
        } => Some((unsent_frames, unsent_bytes)),
        _ => None,
    })
    .await;
    assert_eq!(unsent_bytes, 320, "the half frame never left");
    assert!(h.live("the end", media.next()).await.is_none());
    let stats = media.stats().protocol;
    assert!(
        unsent > 0,
        "two seconds cannot have left before the hangup: {stats:?}"
    );
    assert_eq!(stats.frames_out + unsent as u64, 100, "{stats:?}");
    assert_eq!(stats.overflow_frames + stats.flushed_frames, 0);
    assert_eq!(
        media.send_audio(audio("slin16", 1)),
        Err(SendError::Closed),
        "audio after the end is refused"
    );
}

/// Client mode with a `websocket_client` entry Asterisk cannot reach (it points to a port
/// nobody listens on): Asterisk gives the media channel up at once, and so does `open` —
/// with an error naming the entry, not a timeout long after Asterisk stopped trying
/// (`start_timeout` is set far beyond the case's liveness bound).
pub async fn media_client_mode_fails_at_once_when_asterisk_cannot_connect<
    E: Executor,
    C: Connector,
>(
    h: &Harness<Stack<E, C>>,
) {
    let client = h.started(&["media"]).await;
    let server = h
        .live(
            "bind",
            MediaServer::bind(h.runtime().clone(), "127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("bind");
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let elsewhere = nobody.local_addr().expect("its address");
    drop(nobody);
    h.server()
        .set_websocket_client("media_elsewhere", &format!("ws://{elsewhere}/media-in"));
    let call = h.answered_call(&client, "media").await;
    let mut options = MediaOptions::new("media", "ulaw");
    options.start_timeout = std::time::Duration::from_secs(3600);
    let err = h
        .live(
            "open while Asterisk cannot connect",
            server.open(&call, "media_elsewhere", options),
        )
        .await
        .expect_err("no connection can come");
    assert!(!err.is_timeout(), "{err}");
    let text = err.to_string();
    assert!(text.contains("media_elsewhere"), "{text}");
    assert!(text.contains("could not connect"), "{text}");
    let channels = h
        .server()
        .with_sim(|sim, _| sim.channel_ids())
        .expect("a simulator");
    assert_eq!(channels, vec![call.id().to_owned()]);
    let bridges = h
        .live("bridges", client.bridges().list())
        .await
        .expect("list");
    assert!(bridges.is_empty(), "{bridges:?}");
    assert_eq!(server.stats().sessions, 0);
}

/// A voice bot shutting down: a media session streaming audio and its client are dropped
/// (no `close`, no `shutdown`): the media socket closes, the media channel and the bridge
/// are removed, the events WebSocket closes, and no task spawned through the client's
/// runtime is left.
pub async fn media_session_and_client_dropped_leave_no_task_behind<R: Runtime>(h: &Harness<R>) {
    let hc = Harness::new(crate::CountedRuntime::new(h.runtime().clone()));
    let rt = hc.runtime().clone();
    let client = hc.started(&["media"]).await;
    let (call, mut media) = session(&hc, &client, MediaOptions::new("media", "slin16")).await;
    let tx = media.sender();
    tx.send_audio(audio("slin16", 50)).expect("send");
    let frame = next_matching(&hc, &mut media, "audio", |item| match item {
        MediaItem::Audio(frame) => Some(frame),
        _ => None,
    })
    .await;
    assert_eq!(frame.len(), 640);
    let media_channel = media.media_channel_id().to_owned();
    assert!(rt.alive() > 0);
    drop(media);
    drop(tx);
    drop(call);
    drop(client);
    let server = hc.server();
    h.eventually("the media socket closes", || {
        server
            .media_sessions()
            .iter()
            .any(|r| r.channel_id == media_channel)
    })
    .await;
    h.eventually("no task of the client is left", || rt.alive() == 0)
        .await;
    h.eventually("the events WebSocket is closed", || {
        server.connected_apps().is_empty()
    })
    .await;
    let channels = server
        .with_sim(|sim, _| sim.channel_ids())
        .expect("a simulator");
    assert!(
        !channels.contains(&media_channel),
        "the media channel stays: {channels:?}"
    );
    let bridges = server
        .with_sim(|sim, _| sim.bridge_ids())
        .expect("a simulator");
    assert!(bridges.is_empty(), "a bridge stays: {bridges:?}");
}

/// A text-to-speech bot in buffering mode without re-framing (`reframe(false)`: each chunk
/// one message, Asterisk joins them): the engine returns 2.1 s of slin16 (67,200 bytes) at
/// once. Asterisk cannot read a WebSocket frame over 65,535 bytes (it would close the socket
/// with 1009 and hang up): the session sends it as two messages, every frame is played, and
/// the block's `MEDIA_BUFFERING_COMPLETED` comes. In passthrough mode such a chunk is
/// refused at the sender with a typed error.
pub async fn media_a_chunk_longer_than_asterisk_reads_is_split_or_refused<R: Runtime>(
    h: &Harness<R>,
) {
    use ari_client::media::Command;
    let client = h.started(&["media"]).await;
    let options = MediaOptions::new("media", "slin16").config(MediaConfig::new().reframe(false));
    let (_call, mut media) = session(h, &client, options).await;
    let tx = media.sender();
    tx.command(Command::StartMediaBuffering).expect("start");
    tx.send_audio(audio("slin16", 105)).expect("speech");
    tx.command(Command::StopMediaBuffering {
        correlation_id: Some("tts-1".into()),
    })
    .expect("stop");
    let id = next_matching(
        h,
        &mut media,
        "MEDIA_BUFFERING_COMPLETED",
        |item| match item {
            MediaItem::Event(MediaEvent::MediaBufferingCompleted { correlation_id, .. }) => {
                Some(correlation_id)
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(id.as_deref(), Some("tts-1"));
    let stats = media.stats().protocol;
    assert_eq!(stats.frames_out, 2, "two messages: {stats:?}");
    assert_eq!(stats.bytes_out, 105 * 640);
    h.live("shutdown", media.shutdown()).await;
    let report = h.server().media_sessions().remove(0);
    assert_ne!(report.close_code, Some(1009), "{report:?}");
    assert_eq!(report.messages_received, 2);
    assert_eq!(report.frames_played_test_signal, 105);

    // Passthrough: one chunk is one frame at Asterisk; one this long is refused at once.
    let options = MediaOptions::new("media", "slin16").passthrough(true);
    let (_call, media) = session(h, &client, options).await;
    let err = media
        .send_audio(audio("slin16", 105))
        .expect_err("too long for one message");
    assert!(
        matches!(err, SendError::MessageTooLarge { len: 67_200, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("1009"), "{err}");
    assert_eq!(media.stats().refused, 0, "refused at the sender, not later");
    h.live("shutdown", media.shutdown()).await;
}

/// Eight calls, each with a bot speaking (two seconds queued), all end at once (the callers
/// hang up together, as when a trunk drops): every session yields `Closed` accounting for
/// each frame (sent or unsent), and Asterisk is left with no media channel, no bridge and no
/// media socket.
pub async fn media_many_sessions_ending_at_once_leave_nothing_behind<R: Runtime>(h: &Harness<R>) {
    const CALLS: usize = 8;
    let client = h.started(&["media"]).await;
    let mut calls = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..CALLS {
        let (call, media) = session(h, &client, MediaOptions::new("media", "slin16")).await;
        media.send_audio(audio("slin16", 100)).expect("speech");
        calls.push(call);
        sessions.push(media);
    }
    let hangups = futures::future::join_all(calls.iter().map(|c| c.hangup().into_future()));
    for r in h.live("the callers hang up", hangups).await {
        r.expect("hangup");
    }
    let ends = futures::future::join_all(sessions.iter_mut().map(|media| async move {
        loop {
            match media.next().await {
                Some(MediaItem::Closed { unsent_frames, .. }) => break unsent_frames,
                Some(_) => {}
                None => panic!("ended without Closed"),
            }
        }
    }));
    let unsent = h.live("every session ends", ends).await;
    for (media, unsent) in sessions.iter_mut().zip(unsent) {
        let stats = media.stats().protocol;
        assert_eq!(stats.frames_out + unsent as u64, 100, "{stats:?}");
        assert!(h.live("the end", media.next()).await.is_none());
    }
    drop(sessions);
    let deadline = h.runtime().now() + crate::LIVENESS;
    loop {
        let channels = h
            .live("channels", client.channels().list())
            .await
            .expect("list");
        let bridges = h
            .live("bridges", client.bridges().list())
            .await
            .expect("list");
        if channels.is_empty() && bridges.is_empty() {
            break;
        }
        assert!(
            h.runtime().now() < deadline,
            "left behind: {channels:?} {bridges:?}"
        );
        h.sleep(std::time::Duration::from_millis(10)).await;
    }
    h.eventually("every media socket closed", || {
        h.server().media_sessions().len() == CALLS
    })
    .await;
}

/// A transcription bot that listens first (`direction(In)`: Asterisk drops the
/// application's audio) and speaks later: audio handed over while listening is not dropped
/// silently but refused (`MediaItem::Refused` with `SendError::DirectionIn`, counted); after
/// `SET_MEDIA_DIRECTION both` it is played.
pub async fn media_audio_while_the_direction_is_in_is_refused_not_lost<R: Runtime>(h: &Harness<R>) {
    use ari_client::media::{Command, Direction};
    let client = h.started(&["media"]).await;
    let options = MediaOptions::new("media", "slin16")
        .json(true)
        .direction(Direction::In);
    let (_call, mut media) = session(h, &client, options).await;
    let tx = media.sender();
    tx.send_audio(audio("slin16", 5)).expect("handed over");
    let (count, error) = next_matching(h, &mut media, "Refused", |item| match item {
        MediaItem::Refused {
            command: None,
            count,
            error,
        } => Some((count, error)),
        _ => None,
    })
    .await;
    assert_eq!((count, error.clone()), (1, SendError::DirectionIn));
    assert!(error.to_string().contains("SET_MEDIA_DIRECTION"), "{error}");
    assert_eq!(media.stats().refused, 1);
    assert_eq!(media.stats().protocol.frames_out, 0);

    tx.command(Command::SetMediaDirection(Direction::Both))
        .expect("direction");
    tx.send_audio(audio("slin16", 5)).expect("speech");
    tx.mark("spoken").expect("mark");
    let id = next_matching(h, &mut media, "the mark", |item| match item {
        MediaItem::Event(MediaEvent::MediaMarkProcessed { correlation_id, .. }) => {
            Some(correlation_id)
        }
        MediaItem::Refused { error, .. } => panic!("refused: {error}"),
        _ => None,
    })
    .await;
    assert_eq!(id.as_deref(), Some("spoken"));
    h.live("shutdown", media.shutdown()).await;
    let report = h.server().media_sessions().remove(0);
    assert_eq!(report.messages_received, 5, "{report:?}");
    assert_eq!(report.frames_played_test_signal, 5);
}

/// A bot listens in on a call already bridged with another party (an agent assist, a
/// transcriber): the media channel joins the call's own bridge, the two parties stay
/// together, and the session's end takes only the media channel out. Before, the session
/// put the call in a bridge of its own, which takes a channel out of the bridge it is in
/// (Asterisk moves it): the caller lost the agent for as long as the bot listened, and for
/// good once the session destroyed its bridge.
pub async fn media_on_a_bridged_call_joins_its_bridge_and_keeps_the_parties_together<R: Runtime>(
    h: &Harness<R>,
) {
    let client = h.started(&["media"]).await;
    let caller = h
        .incoming_call(&client, PlaceCall::new("PJSIP/alice", "media"))
        .await;
    let agent = h
        .incoming_call(&client, PlaceCall::new("PJSIP/bob", "media"))
        .await;
    h.live("answer", caller.answer()).await.expect("answer");
    h.live("answer", agent.answer()).await.expect("answer");
    let bridge = client.new_bridge();
    h.live("bridge", bridge.create().map(|op| op.bridge_type("mixing")))
        .await
        .expect("bridge");
    h.live("add", bridge.add_channel([caller.id(), agent.id()]))
        .await
        .expect("add");
    let members = || async {
        let mut ids: Vec<String> = h
            .live("bridge get", client.bridges().get(bridge.id()))
            .await
            .expect("the call's bridge is there")
            .data()
            .expect("a snapshot")
            .channels
            .iter()
            .map(|c| c.to_string())
            .collect();
        ids.sort();
        ids
    };
    let media = h
        .live("media", caller.media(MediaOptions::new("media", "slin16")))
        .await
        .expect("media session");
    assert_eq!(
        media.bridge_id(),
        Some(bridge.id()),
        "the call's own bridge"
    );
    let mut all = vec![
        caller.id().to_owned(),
        agent.id().to_owned(),
        media.media_channel_id().to_owned(),
    ];
    all.sort();
    assert_eq!(members().await, all, "the parties stay together");
    h.live("shutdown", media.shutdown()).await;
    let mut parties = vec![caller.id().to_owned(), agent.id().to_owned()];
    parties.sort();
    h.eventually("the media channel leaves", || {
        h.server().with_sim(|sim, _| sim.channel_ids().len()) == Some(2)
    })
    .await;
    assert_eq!(
        members().await,
        parties,
        "the call's bridge stays, with both"
    );
}

/// The bridge lookup of `channel.media()` and the add to that bridge are two requests: the
/// call's bridge may be destroyed in between (a transfer moving the parties to another
/// bridge). The simulator answers the lookup with the list as it was just before (the call
/// in a bridge destroyed since, whose add answers 404): the session looks again, finds the
/// bridge the parties are in now and joins it, and nothing is left behind. Before, the
/// open failed with the 404 and the call had no media.
pub async fn media_on_a_call_whose_bridge_is_destroyed_meanwhile_joins_its_new_bridge<
    R: Runtime,
>(
    h: &Harness<R>,
) {
    let client = h.started(&["media"]).await;
    let caller = h
        .incoming_call(&client, PlaceCall::new("PJSIP/alice", "media"))
        .await;
    let agent = h
        .incoming_call(&client, PlaceCall::new("PJSIP/bob", "media"))
        .await;
    h.live("answer", caller.answer()).await.expect("answer");
    h.live("answer", agent.answer()).await.expect("answer");
    let old = client.new_bridge();
    h.live("bridge", old.create().map(|op| op.bridge_type("mixing")))
        .await
        .expect("bridge");
    h.live("add", old.add_channel([caller.id(), agent.id()]))
        .await
        .expect("add");
    let before: Vec<serde_json::Value> = h
        .live("bridges", client.bridges().list())
        .await
        .expect("list")
        .iter()
        .filter_map(|b| b.data().map(|d| serde_json::to_value(d).expect("json")))
        .collect();
    assert_eq!(before.len(), 1);
    // The transfer: the old bridge goes, the parties meet in a new one.
    h.live("destroy", old.destroy()).await.expect("destroy");
    let new = client.new_bridge();
    h.live("bridge", new.create().map(|op| op.bridge_type("mixing")))
        .await
        .expect("bridge");
    h.live("add", new.add_channel([caller.id(), agent.id()]))
        .await
        .expect("add");
    // The session's lookup sees the list from before the transfer.
    let stale = h
        .server()
        .expect("GET", "bridges")
        .respond(200, serde_json::Value::Array(before));
    let media = h
        .live("media", caller.media(MediaOptions::new("media", "slin16")))
        .await
        .expect("the session opens on the call's new bridge");
    assert_eq!(stale.hits(), 1, "the stale list was served");
    assert_eq!(
        media.bridge_id(),
        Some(new.id()),
        "the bridge the call is in"
    );
    let mut members: Vec<String> = h
        .live("bridge get", client.bridges().get(new.id()))
        .await
        .expect("the new bridge")
        .data()
        .expect("a snapshot")
        .channels
        .iter()
        .map(|c| c.to_string())
        .collect();
    members.sort();
    let mut all = vec![
        caller.id().to_owned(),
        agent.id().to_owned(),
        media.media_channel_id().to_owned(),
    ];
    all.sort();
    assert_eq!(members, all, "the parties and the media channel together");
    h.live("shutdown", media.shutdown()).await;
    // The call's bridge is the call's: it stays; nothing else does.
    let bridges = h
        .live("bridges", client.bridges().list())
        .await
        .expect("list");
    let ids: Vec<&str> = bridges.iter().map(|b| b.id()).collect();
    assert_eq!(ids, [new.id()]);
}

/// A voice bot marks the end of each prompt to know when it was played. Asterisk before
/// 20.18 ignores `MARK_MEDIA` without a reply. On 20.17 and 20.16 (the client knows the
/// version from its connect; 20.16's `MEDIA_START` has no `channel_id` either) the mark is
/// refused at once with a typed error, so the bot knows not to wait. Told the release has the
/// feature anyway (`mark_media(Some(true))`, a backport that is not there), the mark goes out
/// and is given up `mark_timeout` after its audio was played: reported
/// (`MediaItem::MarksUnanswered`) and counted. (Before, the bot waited for ever and every
/// mark stayed pending for the life of the call.)
pub async fn media_marks_on_an_asterisk_without_mark_media_are_given_up_and_reported<R: Runtime>(
    h: &Harness<R>,
) {
    for (version, forced) in [("20.17.0", false), ("20.16.0", false), ("20.17.0", true)] {
        let server = ari_testkit::MockServer::builder()
            .sim_config(crate::fast_sim_config())
            .asterisk_version(version)
            .start();
        let client = h
            .live("connect", h.builder_for(&server).connect())
            .await
            .expect("connect");
        h.live("start", client.start(&["media"]))
            .await
            .expect("start");
        let channel = h
            .incoming_call_on(&server, &client, PlaceCall::new("PJSIP/alice", "media"))
            .await;
        h.live("answer", channel.answer()).await.expect("answer");
        let mut config = MediaConfig::new().mark_timeout(std::time::Duration::from_millis(200));
        if forced {
            config = config.mark_media(Some(true));
        }
        let options = MediaOptions::new("media", "slin16").config(config);
        let mut media = h
            .live("media", channel.media(options))
            .await
            .expect("media session");
        let tx = media.sender();
        tx.send_audio(audio("slin16", 5)).expect("prompt");
        if !forced {
            let err = tx.mark("prompt-1").expect_err(version);
            assert!(
                matches!(
                    err,
                    SendError::Unsupported {
                        command: "MARK_MEDIA",
                        ..
                    }
                ),
                "{version}: {err:?}"
            );
            // A pacer's mark too, at once.
            let pacer = ari_client::media::MediaPacer::new(client.runtime());
            let paced = pacer.attach(&media).expect("attach");
            paced.send(audio("slin16", 5)).expect("prompt");
            let err = paced.mark("prompt-2").expect_err(version);
            assert!(
                matches!(
                    err,
                    SendError::Unsupported {
                        command: "MARK_MEDIA",
                        ..
                    }
                ),
                "{version}: {err:?}"
            );
            drop(paced);
            pacer.close();
        } else {
            tx.mark("prompt-1").expect("handed over");
            let marks = next_matching(h, &mut media, "the mark given up", |item| match item {
                MediaItem::MarksUnanswered { marks } => Some(marks),
                MediaItem::Event(MediaEvent::MediaMarkProcessed { .. }) => {
                    panic!("20.17 has no MARK_MEDIA")
                }
                _ => None,
            })
            .await;
            assert_eq!(marks, [Some("prompt-1".to_owned())]);
            assert_eq!(media.stats().protocol.marks_unanswered, 1);
        }
        h.live("shutdown", media.shutdown()).await;
        client.close().await;
    }
}

/// The other side of the same race: the call leaves its bridge between the lookup and the
/// add, the bridge staying with the other party (the call moved to a bridge of its own).
/// The session checks the call is still in the bridge it joined; it is not, so the media
/// channel leaves it and the session joins the call where it is now. Before, the media
/// channel stayed in the old bridge: the bot heard the other party, never the call.
pub async fn media_on_a_call_moved_out_of_its_bridge_meanwhile_follows_the_call<R: Runtime>(
    h: &Harness<R>,
) {
    let client = h.started(&["media"]).await;
    let caller = h
        .incoming_call(&client, PlaceCall::new("PJSIP/alice", "media"))
        .await;
    let agent = h
        .incoming_call(&client, PlaceCall::new("PJSIP/bob", "media"))
        .await;
    h.live("answer", caller.answer()).await.expect("answer");
    h.live("answer", agent.answer()).await.expect("answer");
    let old = client.new_bridge();
    h.live("bridge", old.create().map(|op| op.bridge_type("mixing")))
        .await
        .expect("bridge");
    h.live("add", old.add_channel([caller.id(), agent.id()]))
        .await
        .expect("add");
    let before: Vec<serde_json::Value> = h
        .live("bridges", client.bridges().list())
        .await
        .expect("list")
        .iter()
        .filter_map(|b| b.data().map(|d| serde_json::to_value(d).expect("json")))
        .collect();
    // The caller moves to a bridge of its own; the agent stays in the old one.
    let new = client.new_bridge();
    h.live("bridge", new.create().map(|op| op.bridge_type("mixing")))
        .await
        .expect("bridge");
    h.live("move", new.add_channel([caller.id()]))
        .await
        .expect("move");
    let members = |bridge: String| async {
        let mut ids: Vec<String> = h
            .live("bridge get", client.bridges().get(bridge))
            .await
            .expect("the bridge")
            .data()
            .expect("a snapshot")
            .channels
            .iter()
            .map(|c| c.to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(members(old.id().to_owned()).await, [agent.id().to_owned()]);
    let stale = h
        .server()
        .expect("GET", "bridges")
        .respond(200, serde_json::Value::Array(before));
    let media = h
        .live("media", caller.media(MediaOptions::new("media", "slin16")))
        .await
        .expect("the session opens where the call is");
    assert_eq!(stale.hits(), 1, "the stale list was served");
    assert_eq!(
        media.bridge_id(),
        Some(new.id()),
        "the call's bridge of now"
    );
    let mut with_call = vec![caller.id().to_owned(), media.media_channel_id().to_owned()];
    with_call.sort();
    assert_eq!(members(new.id().to_owned()).await, with_call);
    assert_eq!(
        members(old.id().to_owned()).await,
        [agent.id().to_owned()],
        "the agent's bridge has no media channel"
    );
    h.live("shutdown", media.shutdown()).await;
}
