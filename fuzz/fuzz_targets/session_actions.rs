//! Fuzz target `session_actions`: see `ari_fuzz::checks::session_actions` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ari_fuzz::checks::session_actions(data));
