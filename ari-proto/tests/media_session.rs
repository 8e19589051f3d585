//! The chan_websocket state machine: framing, flow control, pacing, marks, buffering,
//! hangup/close, and a property test of the local queue.

use std::time::{Duration, Instant};

use ari_proto::media::websocket::{
    Command, CommandError, ControlFormat, Direction, MediaConfig, MediaEvent, MediaOutput,
    MediaSession, MediaState, SendError, Transmit, ASTERISK_MAX_MESSAGE,
};
use bytes::Bytes;
use proptest::prelude::*;

const START_ULAW: &str = "MEDIA_START connection_id:c1 channel:WebSocket/INCOMING/0x1 \
                          channel_id:em-1 format:ulaw optimal_frame_size:160 ptime:20";
/// The origin of simulated time; nothing here waits on the real clock.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

const MS20: Duration = Duration::from_millis(20);

fn started(config: MediaConfig) -> MediaSession {
    let mut m = MediaSession::new(config);
    m.handle_text(START_ULAW);
    assert!(matches!(
        m.poll_output(),
        Some(MediaOutput::Event(MediaEvent::MediaStart(_)))
    ));
    assert_eq!(m.state(), MediaState::Started);
    m
}

fn drain(m: &mut MediaSession, now: Instant) -> Vec<Transmit> {
    std::iter::from_fn(|| m.poll_transmit(now)).collect()
}

fn outputs(m: &mut MediaSession) -> Vec<MediaOutput> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn counting(len: usize, from: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| from.wrapping_add(i as u8))
            .collect::<Vec<_>>(),
    )
}

#[test]
fn audio_goes_out_in_whole_frames_and_the_tail_waits() {
    let now = epoch();
    let mut m = started(MediaConfig::new());
    let q = m.send_audio(counting(100, 0)).expect("queued");
    assert_eq!((q.frames, q.dropped), (0, 0));
    assert!(drain(&mut m, now).is_empty(), "a short frame is never sent");
    let q = m.send_audio(counting(250, 100)).expect("queued");
    assert_eq!(q.frames, 2);
    let sent = drain(&mut m, now);
    let bytes: Vec<u8> = sent
        .iter()
        .flat_map(|t| match t {
            Transmit::Binary(b) => {
                assert_eq!(b.len(), 160);
                b.to_vec()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bytes, counting(320, 0).to_vec(), "in order, nothing lost");
    assert_eq!(m.stats().frames_out, 2);
}

#[test]
fn audio_before_media_start_and_after_hangup_is_refused() {
    let now = epoch();
    let mut m = MediaSession::new(MediaConfig::new());
    assert_eq!(m.send_audio(counting(160, 0)), Err(SendError::NotStarted));
    m.handle_text(START_ULAW);
    m.send_audio(counting(1600, 0)).expect("queued");
    m.send_command(Command::Hangup).expect("hangup");
    assert_eq!(m.state(), MediaState::Closing);
    assert_eq!(drain(&mut m, now), [Transmit::Text("HANGUP".into())]);
    assert_eq!(m.send_audio(counting(160, 0)), Err(SendError::Closed));
    m.handle_close(Some(1000), "");
    let out = outputs(&mut m);
    assert!(matches!(
        out.last(),
        Some(MediaOutput::Closed {
            code: Some(1000),
            unsent_frames: 10,
            ..
        })
    ));
    assert_eq!(m.state(), MediaState::Closed);
    assert!(drain(&mut m, now).is_empty());
}

#[test]
fn the_control_format_follows_media_start() {
    let mut m = MediaSession::new(MediaConfig::new());
    m.handle_text(
        r#"{"event":"MEDIA_START","connection_id":"c","channel":"WebSocket/INCOMING/0x1","channel_id":"e","format":"slin16","optimal_frame_size":640,"ptime":20,"channel_variables":{"A":"b"}}"#,
    );
    assert_eq!(m.control_format(), ControlFormat::Json);
    assert_eq!(m.frame_size(), 640);
    m.send_command(Command::GetStatus).expect("ok");
    m.send_command(Command::SetMediaDirection(Direction::In))
        .expect("json only, and this is json");
    assert_eq!(
        drain(&mut m, epoch()),
        [
            Transmit::Text(r#"{"command":"GET_STATUS"}"#.into()),
            Transmit::Text(r#"{"command":"SET_MEDIA_DIRECTION","direction":"in"}"#.into())
        ]
    );
}

#[test]
fn commands_asterisk_would_ignore_are_typed_errors() {
    let mut m = started(MediaConfig::new());
    assert_eq!(
        m.send_command(Command::SetMediaDirection(Direction::Out)),
        Err(SendError::Command(CommandError::JsonOnly {
            command: "SET_MEDIA_DIRECTION"
        }))
    );
    let long = Command::MarkMedia {
        correlation_id: Some("x".repeat(118)),
    };
    assert_eq!(
        long.encode(ControlFormat::PlainText),
        Err(CommandError::TooLong {
            command: "MARK_MEDIA",
            len: 129
        })
    );
    assert!(matches!(
        m.send_command(long),
        Err(SendError::Command(CommandError::TooLong { len: 129, .. }))
    ));
    let fits = Command::MarkMedia {
        correlation_id: Some("x".repeat(117)),
    };
    assert_eq!(
        fits.encode(ControlFormat::PlainText).map(|s| s.len()),
        Ok(128)
    );
    assert!(matches!(
        Command::StopMediaBuffering {
            correlation_id: Some("a b".into())
        }
        .encode(ControlFormat::PlainText),
        Err(CommandError::InvalidCorrelationId { .. })
    ));
    // JSON escapes count: a quote becomes two bytes.
    let quoted = Command::MarkMedia {
        correlation_id: Some("\"".repeat(50)),
    };
    assert!(matches!(
        quoted.encode(ControlFormat::Json),
        Err(CommandError::TooLong { .. })
    ));
    let e = m
        .send_command(Command::SetMediaDirection(Direction::Both))
        .unwrap_err();
    assert!(std::error::Error::source(&e).is_some());
    assert!(drain(&mut m, epoch()).is_empty(), "nothing was sent");
}

#[test]
fn xoff_stops_audio_and_xon_resumes_it() {
    let mut now = epoch();
    let mut m = started(MediaConfig::new().send_ahead(899));
    m.send_audio(counting(160 * 5, 0)).expect("queued");
    m.handle_text("MEDIA_XOFF");
    assert!(m.is_xoff());
    assert!(drain(&mut m, now).is_empty());
    assert_eq!(m.poll_timeout(), None, "nothing waits for time under XOFF");
    now += Duration::from_secs(5);
    assert!(drain(&mut m, now).is_empty());
    m.handle_text("MEDIA_XON");
    assert_eq!(drain(&mut m, now).len(), 5);
    assert_eq!(m.stats().xoff, 1);
}

#[test]
fn overflow_is_counted_and_signalled() {
    let now = epoch();
    let mut m = started(MediaConfig::new().queue_frames(4).send_ahead(899));
    m.handle_text("MEDIA_XOFF");
    let q = m
        .send_audio(counting(160 * 6 + 10, 0))
        .expect("partly queued");
    assert_eq!((q.frames, q.dropped), (4, 2));
    let q = m.send_audio(counting(150, 0)).expect("queued");
    assert_eq!((q.frames, q.dropped), (0, 1));
    assert_eq!(m.stats().overflow_frames, 3);
    let out = outputs(&mut m);
    assert!(matches!(
        out[0],
        MediaOutput::Event(MediaEvent::MediaXoff { .. })
    ));
    assert_eq!(
        out.last(),
        Some(&MediaOutput::Overflow { dropped_frames: 3 })
    );
    m.handle_text("MEDIA_XON");
    assert_eq!(drain(&mut m, now).len(), 4);
}

#[test]
fn marks_wait_behind_audio_and_flush_discards_them() {
    let now = epoch();
    let mut m = started(MediaConfig::new().send_ahead(2));
    m.send_audio(counting(160 * 4, 0)).expect("queued");
    m.send_command(Command::MarkMedia {
        correlation_id: Some("m1".into()),
    })
    .expect("mark");
    m.send_command(Command::GetStatus).expect("status");
    let sent = drain(&mut m, now);
    assert_eq!(sent[0], Transmit::Text("GET_STATUS".into()), "not queued");
    assert_eq!(sent.len(), 3, "two frames, then pacing holds the rest");
    assert!(sent[1..].iter().all(|t| matches!(t, Transmit::Binary(_))));
    // The mark must not overtake the two frames still held.
    let later = now + MS20 * 2;
    let sent = drain(&mut m, later);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2], Transmit::Text("MARK_MEDIA m1".into()));
    assert_eq!(m.pending_marks().collect::<Vec<_>>(), [Some("m1")]);

    // A second mark still queued locally behind audio; then FLUSH_MEDIA.
    m.send_audio(counting(160 * 10, 0)).expect("queued");
    m.send_command(Command::MarkMedia {
        correlation_id: None,
    })
    .expect("mark");
    m.send_command(Command::ReportQueueDrained).expect("report");
    m.send_command(Command::FlushMedia).expect("flush");
    assert_eq!(m.queued_frames(), 0);
    assert_eq!(m.stats().flushed_frames, 10);
    let out = outputs(&mut m);
    assert_eq!(
        out,
        [MediaOutput::MarkersDiscarded {
            marks: vec![Some("m1".into()), None],
            buffering: vec![]
        }]
    );
    assert_eq!(
        drain(&mut m, later),
        [
            Transmit::Text("FLUSH_MEDIA".into()),
            Transmit::Text("REPORT_QUEUE_DRAINED".into())
        ],
        "the drain report survives the flush"
    );
    assert_eq!(m.remote_queue_estimate(), 0);
}

#[test]
fn a_processed_mark_leaves_the_pending_list() {
    let mut m = started(MediaConfig::new());
    for id in ["a", "b"] {
        m.send_command(Command::MarkMedia {
            correlation_id: Some(id.into()),
        })
        .expect("mark");
    }
    m.handle_text("MEDIA_MARK_PROCESSED a");
    assert_eq!(m.pending_marks().collect::<Vec<_>>(), [Some("b")]);
}

/// In JSON an empty correlation id is allowed, and Asterisk answers it with
/// `"correlation_id":""` exactly as a mark without one: either way the mark is processed
/// and leaves the pending list (it stayed there for the life of the call, and a later
/// `FLUSH_MEDIA` reported it discarded although it had been played).
#[test]
fn a_mark_with_an_empty_id_is_processed_like_one_without() {
    const START_JSON: &str = r#"{"event":"MEDIA_START","connection_id":"c1","channel":"WebSocket/INCOMING/0x1","channel_id":"em-1","format":"ulaw","optimal_frame_size":160,"ptime":20}"#;
    let mut m = MediaSession::new(MediaConfig::new());
    m.handle_text(START_JSON);
    for id in [Some(""), None, Some(""), Some("x")] {
        m.send_command(Command::MarkMedia {
            correlation_id: id.map(Into::into),
        })
        .expect("mark");
    }
    // Three marks without an id at once: the second and third go out as "#2" and "#3"
    // (never two ids an answer may come for), and are answered so.
    for id in ["", "#2", "#3"] {
        m.handle_text(&format!(
            r#"{{"event":"MEDIA_MARK_PROCESSED","channel_id":"em-1","correlation_id":"{id}"}}"#
        ));
    }
    assert_eq!(m.pending_marks().collect::<Vec<_>>(), [Some("x")]);
    m.send_command(Command::StartMediaBuffering).expect("start");
    m.send_command(Command::StopMediaBuffering {
        correlation_id: Some(String::new()),
    })
    .expect("stop");
    m.send_command(Command::FlushMedia).expect("flush");
    let discarded: Vec<_> = outputs(&mut m)
        .into_iter()
        .filter_map(|o| match o {
            MediaOutput::MarkersDiscarded { marks, buffering } => Some((marks, buffering)),
            _ => None,
        })
        .collect();
    assert_eq!(
        discarded,
        [(vec![Some("x".to_owned())], vec![Some(String::new())])],
        "only the mark still pending is discarded"
    );
}

#[test]
fn stop_buffering_sends_the_tail_as_a_short_frame_then_the_command() {
    let now = epoch();
    let mut m = started(MediaConfig::new().send_ahead(899));
    m.send_command(Command::StartMediaBuffering).expect("start");
    assert!(m.is_buffering());
    m.send_audio(counting(8050, 0)).expect("queued");
    m.send_command(Command::StopMediaBuffering {
        correlation_id: Some("b1".into()),
    })
    .expect("stop");
    let sent = drain(&mut m, now);
    assert_eq!(sent[0], Transmit::Text("START_MEDIA_BUFFERING".into()));
    let lens: Vec<usize> = sent[1..sent.len() - 1]
        .iter()
        .map(|t| match t {
            Transmit::Binary(b) => b.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lens.len(), 51);
    assert!(lens[..50].iter().all(|l| *l == 160));
    assert_eq!(lens[50], 50, "the tail is sent at the end of the block");
    assert_eq!(
        sent.last(),
        Some(&Transmit::Text("STOP_MEDIA_BUFFERING b1".into()))
    );
    assert!(!m.is_buffering());
}

#[test]
fn without_reframing_a_short_message_is_refused_outside_buffering() {
    let mut m = started(MediaConfig::new().reframe(false));
    assert_eq!(
        m.send_audio(counting(100, 0)),
        Err(SendError::ShortMessage {
            len: 100,
            frame_size: 160
        })
    );
    assert_eq!(m.send_audio(counting(480, 0)).map(|q| q.frames), Ok(1));
    m.send_command(Command::StartMediaBuffering).expect("start");
    assert_eq!(m.send_audio(counting(100, 0)).map(|q| q.frames), Ok(1));
    let sent = drain(&mut m, epoch());
    assert!(matches!(&sent[0], Transmit::Binary(b) if b.len() == 480));
    assert!(matches!(&sent[2], Transmit::Binary(b) if b.len() == 100));
    assert_eq!(
        m.remote_queue_estimate(),
        4,
        "480 bytes are 3 frames at Asterisk, a short buffered one 1"
    );
}

#[test]
fn without_reframing_a_chunk_longer_than_asterisk_reads_goes_out_as_several_messages() {
    // Almost 19 seconds of ulaw handed over at once, as a text-to-speech engine returns
    // them: in one message Asterisk would close the socket (1009) and hang up.
    let mut m = started(MediaConfig::new().reframe(false).send_ahead(899));
    let audio = counting(150_000, 0);
    let q = m.send_audio(audio.clone()).expect("queued");
    assert_eq!((q.frames, q.dropped), (3, 0), "messages");
    let sent: Vec<Bytes> = drain(&mut m, epoch())
        .into_iter()
        .map(|t| match t {
            Transmit::Binary(b) => b,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let lens: Vec<usize> = sent.iter().map(Bytes::len).collect();
    assert_eq!(lens, [65_440, 65_440, 19_120], "whole 160-byte frames");
    assert!(lens.iter().all(|&l| l <= ASTERISK_MAX_MESSAGE));
    assert_eq!(sent.concat(), audio, "nothing lost, in order");
    assert_eq!(m.remote_queue_estimate(), 409 + 409 + 119);

    // In buffering mode too (Asterisk joins the pieces; the tail of the last is kept).
    let mut m = started(MediaConfig::new().reframe(false).send_ahead(899));
    m.send_command(Command::StartMediaBuffering).expect("start");
    m.send_audio(counting(70_050, 0)).expect("queued");
    let lens: Vec<usize> = drain(&mut m, epoch())
        .into_iter()
        .filter_map(|t| match t {
            Transmit::Binary(b) => Some(b.len()),
            _ => None,
        })
        .collect();
    assert_eq!(lens, [65_440, 4_610]);
}

#[test]
fn audio_is_refused_while_the_direction_is_in() {
    let mut m = MediaSession::new(MediaConfig::new().direction(Direction::In));
    m.handle_text(
        r#"{"event":"MEDIA_START","connection_id":"c1","channel":"WebSocket/INCOMING/0x1","channel_id":"em-1","format":"ulaw","optimal_frame_size":160,"ptime":20}"#,
    );
    assert_eq!(m.send_audio(counting(160, 0)), Err(SendError::DirectionIn));
    m.send_command(Command::SetMediaDirection(Direction::Out))
        .expect("json");
    assert_eq!(m.send_audio(counting(160, 0)).map(|q| q.frames), Ok(1));
    m.send_command(Command::SetMediaDirection(Direction::In))
        .expect("json");
    assert_eq!(m.send_audio(counting(160, 0)), Err(SendError::DirectionIn));
    assert_eq!(m.stats().overflow_frames, 0);
}

#[test]
fn passthrough_refuses_a_message_longer_than_asterisk_reads() {
    let mut m = started(MediaConfig::new().passthrough(true));
    let err = m
        .send_audio(counting(ASTERISK_MAX_MESSAGE + 1, 0))
        .expect_err("refused");
    assert_eq!(
        err,
        SendError::MessageTooLarge {
            len: ASTERISK_MAX_MESSAGE + 1,
            max: ASTERISK_MAX_MESSAGE
        }
    );
    assert!(err.to_string().contains("1009"), "{err}");
    assert_eq!(
        m.send_audio(counting(ASTERISK_MAX_MESSAGE, 0))
            .map(|q| q.frames),
        Ok(1),
        "the largest message Asterisk reads is taken"
    );
}

#[test]
fn passthrough_sends_each_chunk_as_one_message_and_refuses_queue_commands() {
    let now = epoch();
    // The `p` option: MEDIA_START still shows the codec's frame size.
    let mut m = started(MediaConfig::new().passthrough(true));
    assert!(m.is_passthrough());
    for len in [100, 250, 480] {
        assert_eq!(m.send_audio(counting(len, 0)).map(|q| q.frames), Ok(1));
    }
    let sent: Vec<usize> = drain(&mut m, now)
        .iter()
        .map(|t| match t {
            Transmit::Binary(b) => b.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sent,
        [100, 250, 480],
        "as-is: no re-framing, nothing held back"
    );
    assert_eq!(m.remote_queue_estimate(), 3, "one frame per message");
    for command in [
        Command::MarkMedia {
            correlation_id: Some("m1".into()),
        },
        Command::FlushMedia,
        Command::PauseMedia,
        Command::StartMediaBuffering,
        Command::ReportQueueDrained,
    ] {
        let name = command.name();
        assert_eq!(
            m.send_command(command),
            Err(SendError::Passthrough { command: name })
        );
    }
    m.send_command(Command::GetStatus)
        .expect("GET_STATUS works");
    m.send_command(Command::Answer).expect("ANSWER works");
    assert_eq!(
        drain(&mut m, now),
        [
            Transmit::Text("GET_STATUS".into()),
            Transmit::Text("ANSWER".into())
        ]
    );
}

#[test]
fn a_zero_optimal_frame_size_is_forced_passthrough() {
    let mut m = MediaSession::new(MediaConfig::new());
    m.handle_text(
        "MEDIA_START connection_id:c1 channel:WebSocket/INCOMING/0x1 channel_id:em-1 \
         format:opus optimal_frame_size:0 ptime:20",
    );
    assert!(m.is_passthrough());
    assert_eq!(m.send_audio(counting(37, 0)).map(|q| q.frames), Ok(1));
    assert!(matches!(&drain(&mut m, epoch())[..], [Transmit::Binary(b)] if b.len() == 37));
    assert!(matches!(
        m.send_command(Command::FlushMedia),
        Err(SendError::Passthrough { .. })
    ));
}

#[test]
fn pacing_keeps_asterisk_queue_near_send_ahead_in_simulated_time() {
    let start = epoch();
    let mut now = start;
    let mut m = started(MediaConfig::new().send_ahead(5));
    m.send_audio(counting(160 * 100, 0)).expect("queued");
    let mut sent = drain(&mut m, now).len() as u64;
    assert_eq!(sent, 5);
    while sent < 100 {
        let next = m
            .poll_timeout()
            .expect("frames wait for the queue to drain");
        assert!(next > now);
        now = next;
        let n = drain(&mut m, now).len() as u64;
        assert!(n >= 1);
        sent += n;
        let ticks = ((now - start).as_millis() / 20) as u64;
        assert!(sent <= 5 + ticks, "sent {sent} after {ticks} ticks");
        assert!(m.remote_queue_estimate() <= 5);
    }
    assert_eq!(now - start, MS20 * 95);
    assert_eq!(m.poll_timeout(), None);

    // Paused playout does not drain: nothing more goes out until CONTINUE_MEDIA.
    m.send_command(Command::PauseMedia).expect("pause");
    assert_eq!(drain(&mut m, now), [Transmit::Text("PAUSE_MEDIA".into())]);
    m.send_audio(counting(160 * 10, 0)).expect("queued");
    now += Duration::from_secs(10);
    assert!(drain(&mut m, now).is_empty());
    assert_eq!(m.poll_timeout(), None);
    m.send_command(Command::ContinueMedia).expect("continue");
    assert_eq!(
        drain(&mut m, now),
        [Transmit::Text("CONTINUE_MEDIA".into())]
    );
    assert!(m.poll_timeout().is_some());
    now += MS20 * 5;
    assert_eq!(drain(&mut m, now).len(), 5);
}

#[test]
fn a_pong_only_ever_answers_a_ping() {
    let now = epoch();
    let mut m = started(MediaConfig::new());
    m.send_audio(counting(1600, 0)).expect("queued");
    m.send_command(Command::GetStatus).expect("ok");
    m.handle_text("STATUS channel_id:em-1 queue_length:0 xon_level:800 xoff_level:900 queue_full:false bulk_media:false media_paused:false");
    m.handle_binary(counting(160, 0));
    let sent = drain(&mut m, now + Duration::from_secs(1));
    assert!(!sent.iter().any(|t| matches!(t, Transmit::Pong(_))));
    m.handle_ping(Bytes::from_static(b"app-ping"));
    assert_eq!(
        drain(&mut m, now + Duration::from_secs(1)),
        [Transmit::Pong(Bytes::from_static(b"app-ping"))]
    );
}

#[test]
fn close_sends_one_close_frame_and_ends_sending() {
    let now = epoch();
    let mut m = started(MediaConfig::new());
    m.close(1000, "done");
    m.close(1000, "again");
    assert_eq!(
        drain(&mut m, now),
        [Transmit::Close {
            code: 1000,
            reason: "done".into()
        }]
    );
    m.handle_ping(Bytes::new());
    assert!(drain(&mut m, now).is_empty(), "nothing after CLOSE");
    assert_eq!(m.send_command(Command::GetStatus), Err(SendError::Closed));
    m.handle_close(Some(1000), "");
    m.handle_close(None, "");
    let closes = outputs(&mut m)
        .into_iter()
        .filter(|o| matches!(o, MediaOutput::Closed { .. }))
        .count();
    assert_eq!(closes, 1);
}

#[test]
fn unknown_and_malformed_messages_are_reported_not_dropped() {
    let mut m = started(MediaConfig::new());
    m.handle_text("MEDIA_FUTURE something:1");
    m.handle_text("STATUS queue_length:lots");
    m.handle_text(r#"{"event":"NEW_THING","x":[1,2]}"#);
    m.handle_text(r#"{"event":"#);
    let out = outputs(&mut m);
    assert!(
        matches!(&out[0], MediaOutput::Event(MediaEvent::Unknown(u)) if u.name == "MEDIA_FUTURE")
    );
    assert!(matches!(&out[1], MediaOutput::Malformed(_)));
    assert!(matches!(&out[2], MediaOutput::Event(MediaEvent::Unknown(u)) if u.name == "NEW_THING"));
    assert!(matches!(&out[3], MediaOutput::Malformed(_)));
    assert_eq!((m.stats().unknown_events, m.stats().malformed), (2, 2));
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Xoff,
    Xon,
    Advance(u64),
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..1200).prop_map(Op::Send),
        1 => Just(Op::Xoff),
        1 => Just(Op::Xon),
        2 => (0u64..120).prop_map(Op::Advance),
        3 => Just(Op::Poll),
    ]
}

proptest! {
    /// The local queue never loses or reorders a frame while it has room; every frame that
    /// did not fit is counted exactly, in the return value, the stats and the Overflow
    /// outputs; nothing goes out under XOFF; pacing never lets the estimate pass send_ahead.
    #[test]
    fn the_flow_control_queue_loses_nothing_while_it_has_room(
        ops in proptest::collection::vec(op(), 1..120),
        capacity in 1usize..40,
        ahead in 1u32..20,
    ) {
        let mut now = epoch();
        let mut m = started(MediaConfig::new().queue_frames(capacity).send_ahead(ahead));
        let mut counter = 0u8;
        // Model: a tail, a queue of frame contents, and what must come out.
        let mut tail: Vec<u8> = Vec::new();
        let mut queued: std::collections::VecDeque<Vec<u8>> = Default::default();
        let mut dropped = 0u64;
        let mut xoff = false;
        let mut overflow_outputs = 0u64;
        for op in ops {
            match op {
                Op::Send(len) => {
                    let chunk = counting(len, counter);
                    counter = counter.wrapping_add(len as u8);
                    tail.extend_from_slice(&chunk);
                    let mut want = (0usize, 0usize);
                    while tail.len() >= 160 {
                        let frame: Vec<u8> = tail.drain(..160).collect();
                        if queued.len() < capacity {
                            queued.push_back(frame);
                            want.0 += 1;
                        } else {
                            want.1 += 1;
                            dropped += 1;
                        }
                    }
                    let q = m.send_audio(chunk).expect("started");
                    prop_assert_eq!((q.frames, q.dropped), want);
                }
                Op::Xoff => { m.handle_text("MEDIA_XOFF"); xoff = true; }
                Op::Xon => { m.handle_text("MEDIA_XON"); xoff = false; }
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Poll => {}
            }
            while let Some(t) = m.poll_transmit(now) {
                prop_assert!(m.remote_queue_estimate() <= ahead, "{} queued at Asterisk", m.remote_queue_estimate());
                let Transmit::Binary(frame) = t else {
                    return Err(TestCaseError::fail(format!("unexpected {t:?}")));
                };
                prop_assert!(!xoff, "audio went out under XOFF");
                let expected = queued.pop_front().expect("a frame the model queued");
                prop_assert_eq!(frame.to_vec(), expected, "lost or reordered");
            }
            prop_assert_eq!(m.queued_frames(), queued.len());
            while let Some(o) = m.poll_output() {
                if let MediaOutput::Overflow { dropped_frames } = o {
                    overflow_outputs += dropped_frames;
                }
            }
        }
        prop_assert_eq!(m.stats().overflow_frames, dropped);
        prop_assert_eq!(overflow_outputs, dropped);
    }
}

fn mark(id: &str) -> Command {
    Command::MarkMedia {
        correlation_id: Some(id.into()),
    }
}

/// Asterisk before 20.18 (22.8, 23.2) ignores `MARK_MEDIA` without a reply. A bot that marks
/// every prompt must not grow the pending list for the life of the call, and must learn the
/// marks will not come: each is given up `mark_timeout` after the estimated playout reached
/// it, counted and reported. (Before, `pending_marks` grew by one per prompt, for ever.)
#[test]
fn marks_asterisk_never_answers_are_given_up_counted_and_reported() {
    let t0 = epoch();
    let mut m = started(MediaConfig::new());
    m.send_audio(counting(160 * 5, 0)).expect("queued");
    m.send_command(mark("m1")).expect("mark");
    let sent = drain(&mut m, t0);
    assert_eq!(sent.len(), 6, "five frames and the mark: {sent:?}");
    outputs(&mut m);
    // Playout reaches the mark after the five frames (100 ms), then it waits 2 s.
    let deadline = t0 + MS20 * 5 + Duration::from_secs(2);
    assert_eq!(m.poll_timeout(), Some(deadline));
    drain(&mut m, deadline - Duration::from_millis(1));
    assert!(outputs(&mut m).is_empty(), "not yet given up");
    assert_eq!(m.pending_marks().count(), 1);
    drain(&mut m, deadline);
    assert_eq!(
        outputs(&mut m),
        [MediaOutput::MarksUnanswered {
            marks: vec![Some("m1".into())]
        }]
    );
    assert_eq!(m.pending_marks().count(), 0);
    assert_eq!(m.stats().marks_unanswered, 1);
    assert_eq!(m.poll_timeout(), None, "nothing left to wait for");

    // A prompt and a mark every second for an hour: the list stays short, every mark is
    // accounted for.
    let mut now = deadline;
    let mut given_up = 0;
    for i in 0..3600 {
        m.send_audio(counting(160 * 10, 0)).expect("queued");
        m.send_command(mark(&format!("p{i}"))).expect("mark");
        for _ in 0..50 {
            drain(&mut m, now);
            now += MS20;
        }
        for out in outputs(&mut m) {
            if let MediaOutput::MarksUnanswered { marks } = out {
                given_up += marks.len();
            }
        }
        assert!(m.pending_marks().count() <= 3, "bounded at {i}");
    }
    now += Duration::from_secs(3);
    drain(&mut m, now);
    for out in outputs(&mut m) {
        if let MediaOutput::MarksUnanswered { marks } = out {
            given_up += marks.len();
        }
    }
    assert_eq!(given_up, 3600);
    assert_eq!(m.stats().marks_unanswered, 3601);
    assert_eq!(m.pending_marks().count(), 0);
}

/// Asterisk answers markers in queue order, and a marker given up is older than every
/// pending one. A `MEDIA_MARK_PROCESSED` arriving after its marker was given up must not
/// consume a newer pending marker that reuses the id: it is reported as a late answer and
/// counted, and the newer marker's own answer is the ordinary event. (Before, the late
/// answer removed the newer "m", whose real answer then matched nothing.)
#[test]
fn a_late_answer_to_a_given_up_mark_does_not_consume_a_newer_one_with_its_id() {
    let t0 = epoch();
    let mut m = started(MediaConfig::new());
    m.send_command(mark("m")).expect("mark");
    drain(&mut m, t0);
    let given_up = t0 + Duration::from_secs(2);
    drain(&mut m, given_up);
    assert_eq!(
        outputs(&mut m),
        [MediaOutput::MarksUnanswered {
            marks: vec![Some("m".into())]
        }]
    );
    // The application marks again with the same id: it goes out as "m#2", since the
    // answer to the first "m" may still come.
    m.send_command(mark("m")).expect("mark");
    assert_eq!(
        drain(&mut m, given_up),
        [Transmit::Text("MARK_MEDIA m#2".into())]
    );
    assert_eq!(m.pending_marks().collect::<Vec<_>>(), [Some("m")]);

    // The late answer to the first "m": the second still waits for its own.
    m.handle_text("MEDIA_MARK_PROCESSED m");
    assert_eq!(
        outputs(&mut m),
        [MediaOutput::MarkAnsweredLate {
            mark: Some("m".into())
        }]
    );
    assert_eq!(m.stats().marks_late, 1);
    assert_eq!(m.pending_marks().collect::<Vec<_>>(), [Some("m")]);

    // The real answer to the second "m", handed over with the application's id.
    m.handle_text("MEDIA_MARK_PROCESSED m#2");
    assert!(matches!(
        outputs(&mut m).as_slice(),
        [MediaOutput::Event(MediaEvent::MediaMarkProcessed { correlation_id: Some(id), .. })]
            if id == "m"
    ));
    assert_eq!(m.pending_marks().count(), 0);
    drain(&mut m, given_up + Duration::from_secs(60));
    assert!(
        outputs(&mut m).is_empty(),
        "the second mark is not given up"
    );
    assert_eq!(m.stats().marks_unanswered, 1);
    assert_eq!(m.stats().marks_late, 1);
    // A third answer matches nothing: an ordinary (unmatched) event, not a late one.
    m.handle_text("MEDIA_MARK_PROCESSED m");
    assert!(matches!(
        outputs(&mut m).as_slice(),
        [MediaOutput::Event(MediaEvent::MediaMarkProcessed { .. })]
    ));
    assert_eq!(m.stats().marks_late, 1);
}

/// The in-order rule: a late answer to "b" means Asterisk is past "a" (given up before it),
/// so "a" is forgotten and a newer pending "a" gets its own answer. An answer to a pending
/// marker forgets every marker given up; so does `FLUSH_MEDIA` (Asterisk drops its markers).
#[test]
fn given_up_marks_are_forgotten_in_queue_order() {
    let t0 = epoch();
    let mut m = started(MediaConfig::new());
    m.send_command(mark("a")).expect("mark");
    m.send_command(mark("b")).expect("mark");
    drain(&mut m, t0);
    let t1 = t0 + Duration::from_secs(2);
    drain(&mut m, t1);
    assert_eq!(m.stats().marks_unanswered, 2);
    outputs(&mut m);
    m.send_command(mark("a")).expect("mark");
    assert_eq!(drain(&mut m, t1), [Transmit::Text("MARK_MEDIA a#2".into())]);
    m.handle_text("MEDIA_MARK_PROCESSED b");
    assert_eq!(
        outputs(&mut m),
        [MediaOutput::MarkAnsweredLate {
            mark: Some("b".into())
        }]
    );
    m.handle_text("MEDIA_MARK_PROCESSED a#2");
    assert!(matches!(
        outputs(&mut m).as_slice(),
        [MediaOutput::Event(MediaEvent::MediaMarkProcessed { correlation_id: Some(id), .. })]
            if id == "a"
    ));
    assert_eq!(m.pending_marks().count(), 0, "the pending a was answered");
    assert_eq!(m.stats().marks_late, 1);

    // Given up, then an answer to a pending marker: the given-up one is forgotten.
    m.send_command(mark("c")).expect("mark");
    drain(&mut m, t1);
    let t2 = t1 + Duration::from_secs(2);
    drain(&mut m, t2);
    outputs(&mut m);
    m.send_command(mark("d")).expect("mark");
    m.send_command(mark("c")).expect("mark");
    drain(&mut m, t2);
    m.handle_text("MEDIA_MARK_PROCESSED d");
    m.handle_text("MEDIA_MARK_PROCESSED c#2");
    assert_eq!(m.pending_marks().count(), 0, "both pending marks answered");
    assert_eq!(m.stats().marks_late, 1);

    // Given up, then FLUSH_MEDIA: its answer may still be on its way, so the new e goes
    // out as e#2 and the old answer is a late one.
    m.send_command(mark("e")).expect("mark");
    drain(&mut m, t2);
    let t3 = t2 + Duration::from_secs(2);
    drain(&mut m, t3);
    outputs(&mut m);
    m.send_command(Command::FlushMedia).expect("flush");
    drain(&mut m, t3);
    m.send_command(mark("e")).expect("mark");
    assert_eq!(drain(&mut m, t3), [Transmit::Text("MARK_MEDIA e#2".into())]);
    m.handle_text("MEDIA_MARK_PROCESSED e");
    assert_eq!(m.pending_marks().count(), 1, "the new e still waits");
    assert_eq!(m.stats().marks_late, 2);
    m.handle_text("MEDIA_MARK_PROCESSED e#2");
    assert_eq!(m.pending_marks().count(), 0, "the new e was answered");
}

/// `FLUSH_MEDIA` while the answer to a marker Asterisk already processed is on its way
/// (Asterisk drops only the markers still queued): a new marker with the same id must not
/// be taken as answered by it. Whether the marker was given up or still pending when the
/// flush went out, it keeps its id reserved: the new marker goes out as `id#2`, the old
/// answer is reported late, and the new marker's own answer comes with the application's
/// id. A marker the flush dropped before it went out reserves nothing. (Before, the flush
/// forgot the given-up marker and the in-flight answer completed the new one at once.)
#[test]
fn an_answer_in_flight_at_a_flush_is_never_taken_for_a_new_mark_with_its_id() {
    let t0 = epoch();
    let late = |id: &str| MediaOutput::MarkAnsweredLate {
        mark: Some(id.into()),
    };
    let answered = |outs: &[MediaOutput], want: &str| {
        matches!(
            outs,
            [MediaOutput::Event(MediaEvent::MediaMarkProcessed { correlation_id: Some(id), .. })]
                if id == want
        )
    };

    // Given up, then flushed.
    let mut m = started(MediaConfig::new());
    m.send_command(mark("m")).expect("mark");
    drain(&mut m, t0);
    let t1 = t0 + Duration::from_secs(2);
    drain(&mut m, t1);
    assert_eq!(
        outputs(&mut m),
        [MediaOutput::MarksUnanswered {
            marks: vec![Some("m".into())]
        }]
    );
    m.send_command(Command::FlushMedia).expect("flush");
    drain(&mut m, t1);
    m.send_command(mark("m")).expect("mark");
    assert_eq!(drain(&mut m, t1), [Transmit::Text("MARK_MEDIA m#2".into())]);
    m.handle_text("MEDIA_MARK_PROCESSED m");
    assert_eq!(outputs(&mut m), [late("m")]);
    assert_eq!(m.pending_marks().collect::<Vec<_>>(), [Some("m")]);
    m.handle_text("MEDIA_MARK_PROCESSED m#2");
    assert!(answered(&outputs(&mut m), "m"));
    assert_eq!(m.pending_marks().count(), 0);

    // Pending (sent, not given up), then flushed: discarded, and its id reserved.
    let mut m = started(MediaConfig::new());
    m.send_command(mark("p")).expect("mark");
    drain(&mut m, t0);
    m.send_command(Command::FlushMedia).expect("flush");
    drain(&mut m, t0);
    assert_eq!(
        outputs(&mut m),
        [MediaOutput::MarkersDiscarded {
            marks: vec![Some("p".into())],
            buffering: vec![]
        }]
    );
    m.send_command(mark("p")).expect("mark");
    assert_eq!(drain(&mut m, t0), [Transmit::Text("MARK_MEDIA p#2".into())]);
    m.handle_text("MEDIA_MARK_PROCESSED p");
    assert_eq!(outputs(&mut m), [late("p")]);
    assert_eq!(m.stats().marks_late, 1);
    m.handle_text("MEDIA_MARK_PROCESSED p#2");
    assert!(answered(&outputs(&mut m), "p"));
    assert_eq!(m.pending_marks().count(), 0);
    // Answered: the id is free again.
    m.send_command(mark("p")).expect("mark");
    assert_eq!(drain(&mut m, t0), [Transmit::Text("MARK_MEDIA p".into())]);

    // Still queued behind audio when flushed: it never went out, so nothing is reserved.
    let mut m = started(MediaConfig::new());
    m.send_audio(counting(160 * 30, 0)).expect("queued");
    m.send_command(mark("q")).expect("mark");
    drain(&mut m, t0);
    m.send_command(Command::FlushMedia).expect("flush");
    drain(&mut m, t0);
    outputs(&mut m);
    m.send_command(mark("q")).expect("mark");
    assert_eq!(drain(&mut m, t0), [Transmit::Text("MARK_MEDIA q".into())]);
}

/// A mark Asterisk answers is never given up, even one answered late in the queue.
#[test]
fn a_mark_answered_in_time_is_not_given_up() {
    let t0 = epoch();
    let mut m = started(MediaConfig::new());
    m.send_command(mark("a")).expect("mark");
    drain(&mut m, t0);
    m.handle_text("MEDIA_MARK_PROCESSED a");
    outputs(&mut m);
    assert_eq!(m.poll_timeout(), None);
    drain(&mut m, t0 + Duration::from_secs(60));
    assert!(outputs(&mut m).is_empty());
    assert_eq!(m.stats().marks_unanswered, 0);
}

/// A `MEDIA_START` without `channel_id` comes from Asterisk before 20.17: it has no
/// `MARK_MEDIA`, so the mark is refused at once with a typed error naming the releases.
#[test]
fn marks_are_refused_by_an_asterisk_older_than_20_17() {
    let mut m = MediaSession::new(MediaConfig::new());
    m.handle_text(
        "MEDIA_START connection_id:c1 channel:WebSocket/INCOMING/0x1 format:ulaw \
         optimal_frame_size:160 ptime:20",
    );
    assert_eq!(
        m.send_command(mark("m")),
        Err(SendError::Unsupported {
            command: "MARK_MEDIA",
            since: ari_proto::media::websocket::MARK_MEDIA_SINCE,
        })
    );
    assert_eq!(m.pending_marks().count(), 0);
    m.send_command(Command::GetStatus)
        .expect("other commands go");
}

/// While playout is paused no mark can be processed: none is given up, and the pending list
/// is bounded by `max_pending_marks` (one more is refused, typed). After `CONTINUE_MEDIA`
/// each gets its full wait again.
#[test]
fn paused_playout_holds_marks_within_their_bound() {
    let t0 = epoch();
    let mut m = started(MediaConfig::new().max_pending_marks(3));
    m.send_command(Command::PauseMedia).expect("pause");
    for id in ["a", "b", "c"] {
        m.send_command(mark(id)).expect("mark");
    }
    assert_eq!(
        m.send_command(mark("d")),
        Err(SendError::TooManyMarks { pending: 3 })
    );
    drain(&mut m, t0);
    assert_eq!(m.poll_timeout(), None, "nothing is due while paused");
    drain(&mut m, t0 + Duration::from_secs(600));
    assert!(outputs(&mut m)
        .iter()
        .all(|o| !matches!(o, MediaOutput::MarksUnanswered { .. })));
    let t1 = t0 + Duration::from_secs(601);
    m.send_command(Command::ContinueMedia).expect("continue");
    drain(&mut m, t1);
    assert_eq!(m.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    drain(&mut m, t1 + Duration::from_secs(2));
    assert_eq!(
        outputs(&mut m),
        [MediaOutput::MarksUnanswered {
            marks: vec![Some("a".into()), Some("b".into()), Some("c".into())]
        }]
    );
}

/// `mark_media` overrides what `MEDIA_START` shows: `Some(false)` (the client knows the
/// release lacks `MARK_MEDIA`) refuses marks at once; `Some(true)` sends them even to a
/// `MEDIA_START` without `channel_id`.
#[test]
fn mark_media_setting_overrides_media_start() {
    let mut m = started(MediaConfig::new().mark_media(Some(false)));
    assert!(!m.marks_supported());
    assert!(matches!(
        m.send_command(mark("m")),
        Err(SendError::Unsupported { .. })
    ));
    let mut m = MediaSession::new(MediaConfig::new().mark_media(Some(true)));
    m.handle_text(
        "MEDIA_START connection_id:c1 channel:WebSocket/INCOMING/0x1 format:ulaw \
         optimal_frame_size:160 ptime:20",
    );
    assert!(m.marks_supported());
    m.send_command(mark("m")).expect("sent");
    assert_eq!(
        drain(&mut m, epoch()),
        [Transmit::Text("MARK_MEDIA m".into())]
    );
}

/// A `MEDIA_XOFF` that crosses the application's `FLUSH_MEDIA` (Asterisk sent it before it
/// took the flush): Asterisk's queue is empty, and its `MEDIA_XON` follows at its next tick
/// (chan_websocket keeps its XOFF state through the flush). Flow control pauses until that
/// XON, then the estimate of Asterisk's queue is what was sent since the flush, not 799:
/// new audio goes out at once. (Before, the XOFF raised the estimate to 900 and the XON
/// left it at 799: the next prompt was held back as if Asterisk still had 16 s to play.)
#[test]
fn an_xoff_crossing_a_flush_does_not_hold_the_next_audio_back() {
    let t0 = epoch();
    let mut m = started(MediaConfig::new().send_ahead(899).reframe(false));
    m.send_command(Command::PauseMedia).expect("pause");
    for _ in 0..19 {
        m.send_audio(counting(160 * 50, 0)).expect("a chunk");
    }
    let sent = drain(&mut m, t0);
    assert_eq!(
        sent.len(),
        1 + 18,
        "PAUSE_MEDIA and 900 frames: {}",
        sent.len()
    );
    // Barge-in: the application flushes; Asterisk's XOFF (for those 900 frames) crosses it.
    m.send_command(Command::ContinueMedia).expect("continue");
    m.send_command(Command::FlushMedia).expect("flush");
    drain(&mut m, t0);
    m.handle_text("MEDIA_XOFF");
    assert!(m.is_xoff(), "paused until Asterisk's XON");
    assert_eq!(
        m.remote_queue_estimate(),
        0,
        "nothing was sent since the flush"
    );
    for _ in 0..6 {
        m.send_audio(counting(160 * 50, 0))
            .expect("the next prompt");
    }
    assert!(drain(&mut m, t0).is_empty(), "nothing under XOFF");
    // Asterisk's next tick: XON (its queue is empty).
    let t1 = t0 + MS20;
    m.handle_text("MEDIA_XON");
    assert!(!m.is_xoff());
    assert_eq!(
        drain(&mut m, t1).len(),
        6,
        "the whole prompt goes out at once (300 frames, within the send-ahead)"
    );
    assert_eq!(m.remote_queue_estimate(), 300);

    // An XOFF after the flush that Asterisk's queue did reach is taken at its word.
    let mut m = started(MediaConfig::new().send_ahead(899).reframe(false));
    m.send_command(Command::PauseMedia).expect("pause");
    m.send_command(Command::FlushMedia).expect("flush");
    for _ in 0..19 {
        m.send_audio(counting(160 * 50, 0)).expect("a chunk");
    }
    drain(&mut m, t0);
    m.handle_text("MEDIA_XOFF");
    assert_eq!(m.remote_queue_estimate(), 900);
}
