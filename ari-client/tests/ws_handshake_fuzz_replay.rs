//! Replays the corpus of the fuzz target `ws_handshake` (`fuzz/corpus/ws_handshake/`: the
//! WebSocket opening handshake of the shared stack, client and server side) through the same
//! checks libFuzzer runs (`fuzz/src/ws_handshake.rs`), under plain `cargo test`.

#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/ws_handshake.rs"]
mod ws_handshake;

use std::collections::HashSet;
use std::path::PathBuf;

use ws_handshake::Outcome;

#[test]
fn ws_handshake_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ws_handshake");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 40,
        "{} corpus files, expected at least 40",
        files.len()
    );
    let mut seen = HashSet::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match std::panic::catch_unwind(|| ws_handshake::ws_handshake(&bytes)) {
            Ok(outcome) => {
                seen.insert(outcome);
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("(non-string panic)");
                panic!("{} fails: {msg}", path.display());
            }
        }
    }
    // The corpus reaches both sides' acceptance and failure, not only the early exits.
    for outcome in [
        Outcome::ClientAccepted,
        Outcome::ClientFailed,
        Outcome::ServerAccepted,
        Outcome::ServerFailed,
    ] {
        assert!(
            seen.contains(&outcome),
            "no corpus input ends in {outcome:?}"
        );
    }
}
