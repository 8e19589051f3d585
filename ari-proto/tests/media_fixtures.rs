//! Every media control message and AudioSocket message recorded from a real Asterisk (master
//! and 20, `fixtures/media/`) decodes into its typed form, and what the recordings sent
//! parses as the commands they are.

use ari_proto::media::audiosocket::{self, Decoder, Message, Rate};
use ari_proto::media::websocket::{
    Command, ControlFormat, MediaConfig, MediaEvent, MediaOutput, MediaSession, ParseError,
};
use bytes::Bytes;
use serde_json::Value;

const BRANCHES: [&str; 2] = ["master", "20"];

fn lines(name: &str) -> Vec<Value> {
    let full = format!("{}/../fixtures/media/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn is_media_conn(line: &Value) -> bool {
    let conn = line["conn"].as_str().unwrap_or("");
    conn == "media" || conn.starts_with("mc#")
}

/// The control messages Asterisk sent on media sockets, in order.
fn received_texts(name: &str) -> Vec<String> {
    lines(name)
        .into_iter()
        .filter(|l| {
            is_media_conn(l) && l["dir"] == "in" && l["type"] == "ws" && l["opcode"] == "text"
        })
        .map(|l| l["text"].as_str().expect("text").to_owned())
        .collect()
}

fn sent_texts(name: &str) -> Vec<String> {
    lines(name)
        .into_iter()
        .filter(|l| {
            is_media_conn(l) && l["dir"] == "out" && l["type"] == "ws" && l["opcode"] == "text"
        })
        .map(|l| l["text"].as_str().expect("text").to_owned())
        .collect()
}

/// Every recorded event parses into a known variant, and writes back to the same message.
fn check_file(name: &str) -> Vec<MediaEvent> {
    let mut events = Vec::new();
    for text in received_texts(name) {
        let event = MediaEvent::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        assert!(
            !matches!(event, MediaEvent::Unknown(_)),
            "{name}: {text} fell to Unknown"
        );
        let format = ControlFormat::detect(&text);
        let written = event.to_text(format);
        match format {
            ControlFormat::PlainText => assert_eq!(written, text, "{name}: plain-text round trip"),
            _ => {
                let a: Value = serde_json::from_str(&written).expect("json");
                let b: Value = serde_json::from_str(&text).expect("json");
                assert_eq!(a, b, "{name}: JSON round trip");
            }
        }
        assert_eq!(MediaEvent::parse(&written).as_ref(), Ok(&event));
        events.push(event);
    }
    events
}

#[test]
fn every_recorded_plain_text_event_is_typed() {
    for branch in BRANCHES {
        let events = check_file(&format!("server-plain-{branch}.jsonl"));
        let names: Vec<&str> = events.iter().map(MediaEvent::name).collect();
        for expected in [
            "MEDIA_START",
            "DTMF_END",
            "STATUS",
            "MEDIA_XOFF",
            "MEDIA_XON",
            "QUEUE_DRAINED",
            "MEDIA_BUFFERING_COMPLETED",
            "MEDIA_MARK_PROCESSED",
            "ERROR",
        ] {
            assert!(names.contains(&expected), "{branch}: no {expected}");
        }
        let MediaEvent::MediaStart(start) = &events[0] else {
            panic!("{branch}: MEDIA_START is not first")
        };
        assert_eq!(start.format, "ulaw");
        assert_eq!((start.optimal_frame_size, start.ptime), (160, 20));
        assert_eq!(start.channel_id.as_deref(), Some("mc-em-1"));
        assert!(start.channel.starts_with("WebSocket/INCOMING/"));
        assert_eq!(start.connection_id.len(), 36);
        assert!(start.channel_variables.is_empty());

        let digits: String = events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::DtmfEnd {
                    digit, channel_id, ..
                } => {
                    assert_eq!(channel_id.as_deref(), Some("mc-em-1"));
                    Some(*digit)
                }
                _ => None,
            })
            .collect();
        assert_eq!(digits, "123#");

        let full = events
            .iter()
            .find_map(|e| match e {
                MediaEvent::Status(s) if s.queue_full => Some(s.clone()),
                _ => None,
            })
            .expect("a STATUS with a full queue");
        assert_eq!(
            (full.queue_length, full.xon_level, full.xoff_level),
            (1000, 800, 900)
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, MediaEvent::Status(s) if s.bulk_media)));
        assert!(events
            .iter()
            .any(|e| matches!(e, MediaEvent::Status(s) if s.media_paused)));
        assert!(events.iter().any(|e| matches!(e,
            MediaEvent::MediaMarkProcessed { correlation_id: Some(id), .. } if id == "m1")));
        assert!(events.iter().any(|e| matches!(e,
            MediaEvent::MediaBufferingCompleted { correlation_id: Some(id), .. } if id == "b1")));
        let error = events
            .iter()
            .find_map(|e| match e {
                MediaEvent::Error(err) => Some(err.clone()),
                _ => None,
            })
            .expect("ERROR");
        assert_eq!(
            error.error_text, "SET_MEDIA_DIRECTION only supports JSON format.\n",
            "the trailing newline is kept"
        );
        assert_eq!(
            error.message(),
            "SET_MEDIA_DIRECTION only supports JSON format."
        );
        assert_eq!(error.channel_id.as_deref(), Some("mc-em-1"));
    }
}

#[test]
fn every_recorded_json_event_is_typed() {
    for branch in BRANCHES {
        let events = check_file(&format!("server-json-{branch}.jsonl"));
        let MediaEvent::MediaStart(start) = &events[0] else {
            panic!("{branch}: MEDIA_START is not first")
        };
        assert_eq!(start.format, "slin16");
        assert_eq!(start.optimal_frame_size, 640);
        assert_eq!(start.channel_variables["MYVAR"], "hello");
        assert_eq!(
            start.channel_variables["MEDIA_WEBSOCKET_CONNECTION_ID"],
            start.connection_id
        );
        let digits: String = events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::DtmfEnd { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, "45#");
        assert!(events.iter().any(|e| matches!(e,
            MediaEvent::MediaMarkProcessed { correlation_id: Some(id), channel_id: Some(c), .. }
                if id == "m-json-1" && c == "mc-emj-1")));
        assert!(events.iter().any(|e| matches!(e,
            MediaEvent::MediaBufferingCompleted { correlation_id: Some(id), .. } if id == "b-json-1")));
        let errors: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Error(err) => Some(err.error_text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.contains(
            &"'sideways' is not a valid direction for SET_MEDIA_DIRECTION.\n".to_owned()
        ));
        assert!(errors.contains(&"Unable to parse JSON command".to_owned()));
        assert!(events.iter().all(|e| e.channel_id() == Some("mc-emj-1")));
    }
}

#[test]
fn every_recorded_client_mode_event_is_typed() {
    for branch in BRANCHES {
        let events = check_file(&format!("client-{branch}.jsonl"));
        let starts: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::MediaStart(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[0].connection_id, "mc_media_client");
        assert_eq!(
            (starts[0].format.as_str(), starts[0].optimal_frame_size),
            ("slin", 320)
        );
        assert_eq!(
            (starts[1].format.as_str(), starts[1].optimal_frame_size),
            ("ulaw", 160)
        );
        assert!(events.iter().any(|e| matches!(e, MediaEvent::Status(_))));
    }
}

#[test]
fn every_recorded_command_parses_and_plain_ones_encode_verbatim() {
    for branch in BRANCHES {
        for file in [
            format!("server-plain-{branch}.jsonl"),
            format!("client-{branch}.jsonl"),
        ] {
            for text in sent_texts(&file) {
                match Command::parse(&text) {
                    Ok(command) => assert_eq!(
                        command.encode(ControlFormat::PlainText).as_deref(),
                        Ok(text.as_str())
                    ),
                    Err(ParseError::UnknownCommand { name }) => assert_eq!(name, "NO_SUCH_COMMAND"),
                    Err(ParseError::Malformed { name, .. }) => {
                        assert_eq!(name, "SET_MEDIA_DIRECTION")
                    }
                    Err(e) => panic!("{file}: {text}: {e}"),
                }
            }
        }
        let mut parsed = 0;
        for text in sent_texts(&format!("server-json-{branch}.jsonl")) {
            if ControlFormat::detect(&text) != ControlFormat::Json {
                continue; // the plain GET_STATUS sent to provoke an ERROR
            }
            let Ok(command) = Command::parse(&text) else {
                assert!(text.contains("sideways"), "{text}");
                continue;
            };
            parsed += 1;
            if text.len() > 128 {
                // The 186-byte GET_STATUS padded to be ignored: ours is short.
                assert_eq!(command, Command::GetStatus);
                continue;
            }
            let ours = command.encode(ControlFormat::Json).expect("encodes");
            let a: Value = serde_json::from_str(&ours).expect("json");
            let b: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(a, b, "{text}");
        }
        assert!(parsed >= 10, "{parsed}");
    }
}

/// The recorded server-plain session replayed into a `MediaSession`: every message becomes an
/// output in order, and flow control follows the XOFF/XON Asterisk sent.
#[test]
fn replaying_a_recorded_session_tracks_its_state() {
    for branch in BRANCHES {
        let mut media = MediaSession::new(MediaConfig::new());
        let mut audio = 0u64;
        let mut xoff_seen = false;
        for line in lines(&format!("server-plain-{branch}.jsonl")) {
            if !is_media_conn(&line) || line["dir"] != "in" || line["type"] != "ws" {
                continue;
            }
            match line["opcode"].as_str() {
                Some("text") => media.handle_text(line["text"].as_str().expect("text")),
                Some("binary") => {
                    let len = line["len"].as_u64().expect("len") as usize;
                    media.handle_binary(Bytes::from(vec![0xffu8; len]));
                }
                Some("close") => media.handle_close(
                    line["code"].as_u64().map(|c| c as u16),
                    line["reason"].as_str().unwrap_or(""),
                ),
                _ => {}
            }
            while let Some(out) = media.poll_output() {
                match out {
                    MediaOutput::Audio(a) => {
                        assert_eq!(a.len(), 160);
                        audio += 1;
                    }
                    MediaOutput::Event(MediaEvent::MediaXoff { .. }) => {
                        assert!(media.is_xoff());
                        xoff_seen = true;
                    }
                    MediaOutput::Event(MediaEvent::MediaXon { .. }) => assert!(!media.is_xoff()),
                    MediaOutput::Event(_) => {}
                    MediaOutput::Closed { code, .. } => assert_eq!(code, Some(1000)),
                    other => panic!("{branch}: unexpected {other:?}"),
                }
            }
        }
        assert!(xoff_seen);
        assert_eq!(media.stats().frames_in, audio);
        assert!(audio > 300, "{audio}");
        assert_eq!(media.stats().xoff, 1);
        assert_eq!(media.stats().malformed, 0);
        assert_eq!(media.frame_size(), 160);
        assert_eq!(
            media.state(),
            ari_proto::media::websocket::MediaState::Closed
        );
    }
}

/// The AudioSocket byte stream of a recording, rebuilt from what was logged (audio payloads
/// are the logged head, zero-padded to the logged length).
fn audiosocket_stream(name: &str) -> (Vec<u8>, Vec<Value>) {
    let mut wire = bytes::BytesMut::new();
    let mut logged = Vec::new();
    for line in lines(name) {
        if line["type"] != "audiosocket" || line["dir"] != "in" {
            continue;
        }
        let kind = u8::from_str_radix(
            line["kind"]
                .as_str()
                .expect("kind")
                .trim_start_matches("0x"),
            16,
        )
        .expect("hex kind");
        let msg = match kind {
            0x01 => Message::Uuid(
                audiosocket::parse_uuid(line["uuid"].as_str().expect("uuid")).expect("uuid"),
            ),
            0x03 => Message::Dtmf(line["digit"].as_str().expect("digit").as_bytes()[0]),
            _ => {
                let len = line["len"].as_u64().expect("len") as usize;
                let head = line["head_hex"].as_str().unwrap_or("");
                let mut data: Vec<u8> = (0..head.len() / 2)
                    .map(|i| u8::from_str_radix(&head[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                data.resize(len, 0);
                Message::from_parts(kind, Bytes::from(data)).expect("valid")
            }
        };
        msg.encode(&mut wire).expect("encodes");
        logged.push(line);
    }
    (wire.to_vec(), logged)
}

#[test]
fn every_recorded_audiosocket_message_decodes_in_any_split() {
    for branch in BRANCHES {
        let (wire, logged) = audiosocket_stream(&format!("audiosocket-{branch}.jsonl"));
        assert!(logged.len() > 70);
        for chunk in [1usize, 2, 3, 7, 320, 323, 4096] {
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push(piece);
                while let Some(m) = decoder.next_message().expect("valid stream") {
                    got.push(m);
                }
            }
            assert_eq!(decoder.buffered(), 0);
            assert_eq!(got.len(), logged.len(), "{branch} chunk {chunk}");
            for (m, line) in got.iter().zip(&logged) {
                match m {
                    Message::Uuid(u) => {
                        assert_eq!(audiosocket::format_uuid(u), line["uuid"].as_str().unwrap())
                    }
                    Message::Dtmf(d) => {
                        assert_eq!((*d as char).to_string(), line["digit"].as_str().unwrap())
                    }
                    Message::Audio { rate, data } => {
                        assert_eq!(*rate, Rate::Slin8);
                        assert_eq!(data.len() as u64, line["len"].as_u64().unwrap());
                        assert_eq!(data.len(), Rate::Slin8.frame_bytes_20ms());
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(matches!(got[0], Message::Uuid(_)), "the UUID comes first");
            let digits: String = got
                .iter()
                .filter_map(|m| match m {
                    Message::Dtmf(d) => Some(*d as char),
                    _ => None,
                })
                .collect();
            assert_eq!(digits, "9#");
        }
    }
}

#[test]
fn the_recorded_hangup_is_three_bytes() {
    for branch in BRANCHES {
        let sent = lines(&format!("audiosocket-{branch}.jsonl"))
            .into_iter()
            .find(|l| l["type"] == "audiosocket" && l["dir"] == "out")
            .expect("the app's hangup");
        assert_eq!(sent["kind"], "0x00");
        assert_eq!(
            Message::Hangup.to_bytes().expect("encodes")[..],
            [0x00, 0x00, 0x00]
        );
        let batch = lines(&format!("audiosocket-{branch}.jsonl"))
            .into_iter()
            .find(|l| l["type"] == "audiosocket-batch")
            .expect("the app's audio");
        let frame = Message::Audio {
            rate: Rate::from_kind(0x10).expect("audio kind"),
            data: Bytes::from(vec![0; batch["len_each"].as_u64().unwrap() as usize]),
        };
        assert_eq!(frame.to_bytes().expect("encodes")[..3], [0x10, 0x01, 0x40]);
    }
}
