//! Fuzz target `rest_response_frame`: see `ari_fuzz::checks::rest_response_frame` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ari_fuzz::checks::rest_response_frame(data));
