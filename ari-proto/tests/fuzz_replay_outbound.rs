//! Replays the corpora of the outbound WebSocket fuzz targets (`fuzz/corpus/upgrade_check/`,
//! `fuzz/corpus/accepted_session/`) through the same checks libFuzzer runs
//! (`fuzz/src/outbound.rs`), under plain `cargo test`.

#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/outbound.rs"]
mod outbound;

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
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = std::panic::catch_unwind(|| check(&bytes)) {
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
fn upgrade_check_corpus() {
    replay("upgrade_check", outbound::upgrade_check, 20);
}

#[test]
fn accepted_session_corpus() {
    replay("accepted_session", outbound::accepted_session, 6);
}
