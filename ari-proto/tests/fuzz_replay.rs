//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`) through the same checks
//! the libFuzzer targets run (`fuzz/src/checks.rs`), so `cargo test` keeps them honest without
//! libFuzzer or a nightly compiler.

#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8]), at_least: usize) {
    let files = corpus(target);
    assert!(
        files.len() >= at_least,
        "{target}: {} corpus files, expected at least {at_least}",
        files.len()
    );
    for (path, bytes) in &files {
        let result = std::panic::catch_unwind(|| check(bytes));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!("{target}: {} fails: {msg}", path.display());
        }
    }
}

#[test]
fn event_decode_corpus() {
    replay("event_decode", checks::event_decode, 100);
}

#[test]
fn response_decode_corpus() {
    replay("response_decode", checks::response_decode, 100);
}

#[test]
fn rest_response_frame_corpus() {
    replay("rest_response_frame", checks::rest_response_frame, 20);
}

#[test]
fn session_actions_corpus() {
    replay("session_actions", checks::session_actions, 10);
}

/// The session corpus is worth replaying: together its inputs reach every path that matters.
#[test]
fn session_corpus_reaches_every_interesting_path() {
    let mut total = ari_proto::session::Stats::default();
    let mut runs = 0;
    for (_, bytes) in corpus("session_actions") {
        if let Some(s) = checks::run_session(&bytes) {
            runs += 1;
            total.connects += s.connects;
            total.events += s.events;
            total.responses += s.responses;
            total.request_timeouts += s.request_timeouts;
            total.requests_failed += s.requests_failed;
            total.unmatched_responses += s.unmatched_responses;
            total.subscriptions_ended += s.subscriptions_ended;
            total.dropped_outputs += s.dropped_outputs;
            total.keepalive_timeouts += s.keepalive_timeouts;
            total.reconnects += s.reconnects;
            total.schema_errors += s.schema_errors;
            total.decode_errors += s.decode_errors;
            total.oversized_frames += s.oversized_frames;
            total.queued_untracked += s.queued_untracked;
        }
    }
    assert!(runs > 0);
    let reached = [
        ("connects", total.connects),
        ("events", total.events),
        ("responses", total.responses),
        ("request_timeouts", total.request_timeouts),
        ("requests_failed", total.requests_failed),
        ("unmatched_responses", total.unmatched_responses),
        ("subscriptions_ended", total.subscriptions_ended),
        ("dropped_outputs", total.dropped_outputs),
        ("keepalive_timeouts", total.keepalive_timeouts),
        ("reconnects", total.reconnects),
        ("schema_errors", total.schema_errors),
        ("decode_errors", total.decode_errors),
        ("oversized_frames", total.oversized_frames),
        ("queued_untracked", total.queued_untracked),
    ];
    for (name, n) in reached {
        assert!(n > 0, "no session corpus input reaches {name}: {total:?}");
    }
}

#[test]
fn the_dispatch_covers_every_operation_of_the_catalog() {
    for op in ari_proto::catalog::OPERATIONS {
        let name = format!("{}.{}", op.resource, op.nickname);
        assert!(
            checks::OP_NAMES.contains(&name.as_str()),
            "{name} missing from fuzz/src/ops_list.rs: run cargo run -p xtask -- codegen"
        );
    }
    assert_eq!(checks::OP_NAMES.len(), ari_proto::catalog::OPERATIONS.len());
}

/// Found by `rest_response_frame`: serde's derived structs accept a JSON array (fields by
/// position), so `["X"]` decoded as an event of type `X`.
#[test]
fn arrays_are_not_events() {
    use ari_proto::events::{DecodeError, Event};
    for frame in [
        &br#"["p&"]"#[..],
        br#"["ApplicationReplaced",null,"app","2026-11-26T11:14:38.299+0000"]"#,
        br#"  ["StasisStart"]"#,
    ] {
        assert!(
            matches!(Event::decode(frame), Err(DecodeError::Malformed { .. })),
            "{}",
            String::from_utf8_lossy(frame)
        );
    }
    assert!(Event::decode(b" \r\n\t{\"type\":\"X\"}").is_ok());
}

/// The seeds written for actions behind a marker byte (fuzz/seed_session_*.py) decode to those
/// actions: a change of the action encoding that turned them into other actions would leave
/// the fuzzer without its starting points and pass every replay.
#[test]
fn marker_seeds_decode_to_their_actions() {
    let expected = [
        ("seed-bridge-", "Bridge("),
        ("seed-notcreated-", "NotCreated("),
        ("seed-endresources-", "EndResources("),
        ("seed-queued-", "Queued("),
    ];
    for (prefix, action) in expected {
        let seeds: Vec<_> = corpus("session_actions")
            .into_iter()
            .filter(|(p, _)| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .collect();
        assert!(!seeds.is_empty(), "no {prefix}* seed in the corpus");
        for (path, bytes) in seeds {
            let described = checks::describe_session(&bytes);
            assert!(
                described.contains(action),
                "{} decodes to no {action}…: {described}",
                path.display()
            );
            let stats = checks::run_session(&bytes).expect("a configuration");
            assert!(
                stats.subscriptions_ended > 0,
                "{} ends no subscription",
                path.display()
            );
        }
    }
}
