//! Fuzz target `ws_handshake`: see `ari_fuzz::ws_handshake::ws_handshake` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ari_fuzz::ws_handshake::ws_handshake(data);
});
