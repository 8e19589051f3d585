//! Fuzz targets for `ari-proto` (and, in [`ws_handshake`], the WebSocket handshake of
//! `ari-client`'s shared stack): the checks live in [`checks`] (one function per target) so
//! that `ari-proto/tests/fuzz_replay.rs` runs every corpus file through the very same code
//! under plain `cargo test`, without libFuzzer.
#![forbid(unsafe_code)]

#[path = "checks.rs"]
pub mod checks;

#[path = "media_checks.rs"]
pub mod media_checks;
#[path = "outbound.rs"]
pub mod outbound;
#[path = "ws_handshake.rs"]
pub mod ws_handshake;
