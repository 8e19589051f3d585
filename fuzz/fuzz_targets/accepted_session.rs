//! Fuzz target `accepted_session`: see `ari_fuzz::outbound::accepted_session` for what it
//! asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ari_fuzz::outbound::accepted_session(data));
