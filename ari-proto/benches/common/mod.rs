//! What the benches share: the recorded event frames.

/// Every frame of `fixtures/asterisk-master/events.jsonl`, as received from Asterisk.
pub(crate) fn recorded_frames() -> Vec<Vec<u8>> {
    let text = include_str!("../../../fixtures/asterisk-master/events.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["frame"].as_str().map(|s| s.as_bytes().to_vec()))
        .collect()
}
