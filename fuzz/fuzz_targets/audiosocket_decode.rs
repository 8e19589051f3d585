//! Fuzz target `audiosocket_decode`: see `ari_fuzz::media_checks::audiosocket_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ari_fuzz::media_checks::audiosocket_decode(data));
