//! Replays the media fuzz corpora (`fuzz/corpus/media_control`, `…/audiosocket_decode`)
//! through the same checks the libFuzzer targets run (`fuzz/src/media_checks.rs`).

#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/media_checks.rs"]
mod media_checks;

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8]), at_least: usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= at_least,
        "{target}: {} corpus files, expected at least {at_least}",
        files.len()
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            panic!("{target}: {} fails", path.display());
        }
    }
}

#[test]
fn media_control_corpus() {
    replay("media_control", media_checks::media_control, 40);
}

#[test]
fn audiosocket_decode_corpus() {
    replay("audiosocket_decode", media_checks::audiosocket_decode, 5);
}

/// Inputs that exercise the edges of both parsers, checked on every test run.
#[test]
fn edge_inputs_hold_the_invariants() {
    for text in [
        "",
        " ",
        "ERROR error_text:",
        "ERROR channel_id:error_text:x error_text:y\n",
        "MEDIA_START format:ulaw optimal_frame_size:4294967296",
        "MEDIA_START format:ulaw optimal_frame_size:0 ptime:0",
        "DTMF_END digit:",
        "DTMF_END digit:12",
        "MEDIA_MARK_PROCESSED   a  b  ",
        "{\"event\":\"MEDIA_START\",\"format\":\"x\",\"optimal_frame_size\":-1}",
        "{\"event\":5}",
        "{\"command\":\"MARK_MEDIA\",\"correlation_id\":\"\\u0000\"}",
        "{\"command\":\"SET_MEDIA_DIRECTION\",\"direction\":\"sideways\"}",
        "[\"MEDIA_XOFF\"]",
        "STOP_MEDIA_BUFFERING \u{2003}x",
    ] {
        media_checks::media_control(text.as_bytes());
    }
    for data in [
        &b""[..],
        b"\x01",
        b"\x01\x01\x00\x03",
        b"\x05\x01\x00\x03abc\x03\x00\x01#\x00\x00\x00\xff\x00\x01\x02",
        b"\x01\x10\xff\xff",
    ] {
        media_checks::audiosocket_decode(data);
    }
}

mod generated {
    use super::media_checks;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "MEDIA_START",
            "DTMF_END",
            "STATUS",
            "MEDIA_XOFF",
            "MEDIA_XON",
            "QUEUE_DRAINED",
            "MEDIA_BUFFERING_COMPLETED",
            "MEDIA_MARK_PROCESSED",
            "ERROR",
            "MARK_MEDIA",
            "STOP_MEDIA_BUFFERING",
            "SET_MEDIA_DIRECTION",
            "GET_STATUS",
            " ",
            "  ",
            "\n",
            "\t",
            ":",
            "format:",
            "optimal_frame_size:",
            "ptime:",
            "digit:",
            "channel_id:",
            "error_text:",
            "queue_length:",
            "queue_full:",
            "true",
            "false",
            "0",
            "160",
            "99999999999",
            "-1",
            "x",
            "é",
            "\u{2003}",
            "{",
            "}",
            "\"",
            "\"event\"",
            "\"command\"",
            "\"correlation_id\"",
            "\"direction\"",
            "\"in\"",
            ",",
            "[",
            "]",
            "null",
            "\\",
            "\"channel_variables\"",
            "{\"A\":\"b\"}",
            "\\u0000",
        ])
    }

    proptest! {
        #[test]
        fn generated_control_messages_hold_the_invariants(
            tokens in prop::collection::vec(token(), 0..24)
        ) {
            media_checks::media_control(tokens.concat().as_bytes());
        }

        #[test]
        fn generated_audiosocket_streams_hold_the_invariants(
            data in prop::collection::vec(any::<u8>(), 0..400)
        ) {
            media_checks::audiosocket_decode(&data);
        }
    }
}
