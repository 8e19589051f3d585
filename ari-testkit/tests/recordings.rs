//! The simulator against recordings of a real Asterisk (`ari_testkit::conform`): every
//! directory below `tests/recordings/` holding a `rest.jsonl` (what `ari-mock record` writes)
//! (with its `extensions.conf`, and a `conform.allow` for differences the recording explains)
//! is replayed against a simulator configured like the recorded Asterisk and must answer every
//! exchange with the recorded status and body shape. Drop a new recording there and
//! `cargo test` checks it.

use std::path::{Path, PathBuf};

use ari_testkit::conform::{conform_dir, conform_dir_with, ConformOptions};

fn recordings() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings")
}

#[test]
fn the_simulator_answers_every_recorded_exchange_as_the_real_asterisk() {
    let report = conform_dir(&recordings()).expect("the recordings load and the simulator runs");
    print!("{report}");
    assert!(!report.recordings.is_empty(), "no recording found");
    for r in &report.recordings {
        assert!(r.exchanges > 0, "{}: no exchange sent", r.dir.display());
        assert_eq!(r.exchanges, r.matched + r.allowed + r.mismatched);
        // Every line was sent: the HTTP exchanges and the REST-over-WebSocket requests.
        assert!(
            r.skipped.is_empty(),
            "{}: skipped {:?}",
            r.dir.display(),
            r.skipped
        );
        let dir = recordings().join(&r.dir);
        let lines = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
        };
        assert_eq!(
            r.exchanges,
            lines("rest.jsonl") + lines("ws-sent.jsonl"),
            "{}",
            r.dir.display()
        );
    }
    assert!(report.is_clean(), "{report}");
}

/// A REST-over-WebSocket request is sent on the events WebSocket of its connection and its
/// answer compared with the `RESTResponse` recorded for its `request_id`; one whose recorded
/// answer differs from the simulator's is a mismatch located in `ws-sent.jsonl`.
#[test]
fn rest_over_websocket_requests_are_replayed_and_compared() {
    let dir = recording(
        "ws",
        &[exchange(
            "GET",
            "asterisk/ping",
            200,
            r#"{"ping":"pong","timestamp":"2020-01-01T00:00:00.000+0000","asterisk_id":"x"}"#,
        )],
    );
    let request = |id: &str, uri: &str| {
        serde_json::json!({"run": 1, "conn": "test", "frame": serde_json::json!({
            "type": "RESTRequest", "request_id": id, "method": "GET", "uri": uri
        }).to_string()})
    };
    let answer = |id: &str, status: u16, body: &str| {
        serde_json::json!({"run": 1, "conn": "test", "frame": serde_json::json!({
            "type": "RESTResponse", "request_id": id, "status_code": status,
            "reason_phrase": "", "uri": "", "content_type": "application/json",
            "message_body": body
        }).to_string()})
    };
    let sent = [
        request("r1", "asterisk/ping"),
        request("r2", "channels/nope"),
    ];
    let events = [
        answer(
            "r1",
            200,
            r#"{"ping":"pong","timestamp":"2020-01-01T00:00:00.000+0000","asterisk_id":"x"}"#,
        ),
        // Asterisk answers 404 for a channel it does not have; recorded here as 200.
        answer("r2", 200, r#"{"id":"nope"}"#),
    ];
    let write = |f: &str, lines: &[serde_json::Value]| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join("rec").join(f), text).expect("written");
    };
    write("ws-sent.jsonl", &sent);
    write("events.jsonl", &events);
    let report = conform_dir(&dir).expect("the recording loads");
    print!("{report}");
    let r = &report.recordings[0];
    assert_eq!(r.exchanges, 3, "{report}");
    assert_eq!(r.matched, 2, "{report}");
    assert_eq!(r.mismatched, 1, "{report}");
    let m = &report.mismatches[0];
    assert!(m.file.ends_with("ws-sent.jsonl"), "{}", m.file.display());
    assert_eq!((m.recorded, m.simulated), (200, 404), "{report}");
    assert_eq!(m.path, "channels/nope");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory holding one recording with these `rest.jsonl` lines.
fn recording(name: &str, lines: &[serde_json::Value]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ari-conform-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rec")).expect("a scratch directory");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("rec/rest.jsonl"), text).expect("rest.jsonl written");
    dir
}

fn exchange(method: &str, path: &str, status: u16, response: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "rest", "run": 1, "method": method, "path": path, "query": {},
        "body": null, "status": status, "content_type": "application/json",
        "response": response, "response_len": response.len()
    })
}

#[test]
fn a_different_status_or_shape_is_a_mismatch_and_an_allowance_accepts_it() {
    let dir = recording(
        "mismatch",
        &[
            // As the simulator answers: ids and timestamps differ, the shape does not.
            exchange(
                "GET",
                "asterisk/ping",
                200,
                r#"{"ping":"pong","timestamp":"2020-01-01T00:00:00.000+0000","asterisk_id":"x"}"#,
            ),
            // Wrong status.
            exchange("GET", "channels", 404, r#"{"message":"nope"}"#),
            // Wrong shape: a field the simulator does not send, one missing.
            exchange(
                "GET",
                "asterisk/ping",
                200,
                r#"{"ping":"pong","timestamp":"t","extra":1}"#,
            ),
            // No credentials were sent: 401 as recorded.
            exchange(
                "GET",
                "channels",
                401,
                r#"{"message":"Authentication required"}"#,
            ),
        ],
    );
    let report = conform_dir_with(&dir, &ConformOptions::default()).expect("runs");
    print!("{report}");
    assert!(!report.is_clean());
    assert_eq!(report.recordings.len(), 1);
    assert_eq!(
        (
            report.recordings[0].matched,
            report.recordings[0].mismatched
        ),
        (2, 2)
    );
    let status = &report.mismatches[0];
    assert_eq!(
        (status.line, status.recorded, status.simulated),
        (2, 404, 200)
    );
    assert!(status.differences[0].contains("status 200"), "{status:?}");
    let shape = &report.mismatches[1];
    assert_eq!(shape.line, 3);
    assert_eq!(
        shape.differences,
        vec![
            "$.extra: missing".to_owned(),
            "$.asterisk_id: not in the recording".to_owned()
        ]
    );
    let text = report.to_string();
    assert!(text.contains("rec/rest.jsonl:2"), "{text}");
    assert!(text.contains("2 exchange(s) differ"), "{text}");

    let allowed = ConformOptions::default()
        .allow("GET", "channels|asterisk/ping", "a test")
        .expect("a valid pattern");
    let report = conform_dir_with(&dir, &allowed).expect("runs");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.recordings[0].allowed, 2);
    assert!(report
        .mismatches
        .iter()
        .all(|m| m.allowed.as_deref() == Some("a test")));

    // The same accepted by the recording's own conform.allow.
    std::fs::write(
        dir.join("rec/conform.allow"),
        "# reasons\nGET channels recorded elsewhere\nGET asterisk/ping another build\n",
    )
    .expect("conform.allow written");
    let report = conform_dir(&dir).expect("runs");
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.mismatches[0].allowed.as_deref(),
        Some("recorded elsewhere")
    );
    std::fs::write(dir.join("rec/conform.allow"), "GET\n").expect("conform.allow written");
    let err = conform_dir(&dir).expect_err("a malformed line");
    assert!(err.to_string().contains("conform.allow:1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_directory_without_recording_is_an_error() {
    let dir = std::env::temp_dir().join(format!("ari-conform-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let err = conform_dir(&dir).expect_err("nothing to conform");
    assert!(err.to_string().contains("no recording below"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
