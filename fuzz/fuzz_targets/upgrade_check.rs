//! Fuzz target `upgrade_check`: see `ari_fuzz::outbound::upgrade_check` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ari_fuzz::outbound::upgrade_check(data));
