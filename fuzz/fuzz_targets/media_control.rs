//! Fuzz target `media_control`: see `ari_fuzz::media_checks::media_control`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ari_fuzz::media_checks::media_control(data));
