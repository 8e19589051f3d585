//! The checks behind the media fuzz targets (`media_control`, `audiosocket_decode`).
//!
//! Compiled twice, like `checks.rs`: as `ari_fuzz::media_checks` for libFuzzer and, through
//! `#[path]`, inside `ari-proto/tests/media_fuzz_replay.rs`, which replays the corpora under
//! plain `cargo test`. Only `ari_proto` and `bytes` are used.

use ari_proto::media::audiosocket::{AudioSocketError, Decoder, Message, HEADER_LEN};
use ari_proto::media::websocket::{
    Command, ControlFormat, MediaConfig, MediaEvent, MediaOutput, MediaSession, ParseError,
    MAX_CONTROL_MESSAGE_BYTES,
};
use bytes::Bytes;

/// `media_control`: any text parses as an event and as a command without panicking. A parsed
/// event written back in the form it came in parses to an equal event; a parsed command that
/// encodes fits in 128 bytes and parses back to itself. A session fed the text reports it
/// (an event or a `Malformed`), never drops it.
pub fn media_control(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let format = ControlFormat::detect(&text);
    match MediaEvent::parse(&text) {
        Ok(event) => {
            let written = event.to_text(format);
            assert_eq!(
                MediaEvent::parse(&written).as_ref(),
                Ok(&event),
                "event does not survive a round trip: {text:?} -> {written:?}"
            );
            let _ = event.name();
            let _ = event.channel_id();
        }
        Err(ParseError::Empty) => {
            assert!(text.trim().is_empty() || format == ControlFormat::PlainText)
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(command) = Command::parse(&text) {
        for f in [ControlFormat::PlainText, ControlFormat::Json] {
            if let Ok(encoded) = command.encode(f) {
                assert!(encoded.len() <= MAX_CONTROL_MESSAGE_BYTES);
                assert_eq!(
                    Command::parse(&encoded).as_ref(),
                    Ok(&command),
                    "command does not survive a round trip: {text:?} -> {encoded:?}"
                );
            }
        }
    }
    let mut session = MediaSession::new(MediaConfig::new());
    session.handle_text(&text);
    let outputs: Vec<MediaOutput> = std::iter::from_fn(|| session.poll_output()).collect();
    assert_eq!(outputs.len(), 1, "one output per text message: {outputs:?}");
    assert!(matches!(
        outputs[0],
        MediaOutput::Event(_) | MediaOutput::Malformed(_)
    ));
    let stats = session.stats();
    assert_eq!(stats.events + stats.malformed, 1);
}

/// `audiosocket_decode`: the first byte chooses a chunk size; the rest is fed to a
/// [`Decoder`] in chunks of that size. Decoding never panics; every decoded message encodes
/// back to exactly the bytes it was decoded from (errors consume exactly their message), and
/// what stays buffered is less than one whole message.
pub fn audiosocket_decode(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = Decoder::new();
    let mut consumed = 0usize;
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            let before = decoder.buffered();
            match decoder.next_message() {
                Ok(None) => break,
                Ok(Some(message)) => {
                    let used = before - decoder.buffered();
                    let bytes = message.to_bytes().expect("a decoded message re-encodes");
                    assert_eq!(&bytes[..], &stream[consumed..consumed + used]);
                    consumed += used;
                    if let Message::Audio { data, .. } = &message {
                        assert_eq!(data.len() + HEADER_LEN, used);
                    }
                }
                Err(AudioSocketError::BadLength { kind, len }) => {
                    let used = before - decoder.buffered();
                    assert_eq!(used, HEADER_LEN + len);
                    assert_eq!(stream[consumed], kind);
                    consumed += used;
                }
                Err(e) => panic!("decoding produced {e}"),
            }
        }
    }
    assert_eq!(consumed + decoder.buffered(), stream.len());
    if decoder.buffered() >= HEADER_LEN {
        let rest = &stream[consumed..];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        assert!(
            rest.len() < HEADER_LEN + len,
            "a whole message was left in the decoder"
        );
    }
    // Building: any payload up to 65,535 bytes encodes; longer ones are refused.
    let payload = Bytes::copy_from_slice(stream);
    let built = Message::Other {
        kind: 0x42,
        payload: payload.clone(),
    }
    .to_bytes();
    assert_eq!(built.is_ok(), payload.len() <= usize::from(u16::MAX));
}
