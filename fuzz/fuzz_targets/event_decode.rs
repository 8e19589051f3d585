//! Fuzz target `event_decode`: see `ari_fuzz::checks::event_decode` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ari_fuzz::checks::event_decode(data));
