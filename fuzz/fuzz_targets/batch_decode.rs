//! Fuzz target `batch_decode`: the cluster client's reader of event batches (`ari-cluster`'s
//! `wire::decode_batch`). Input: the `Ari-Batch` header value, a newline, the payload. On any
//! input it must return, never panic; a batch it accepts must write back to the same bytes
//! (every frame and resource list read exactly as the proxy wrote it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = ari_cluster::fuzzing::batch_decode(data) {
        panic!("event batch read wrongly: {why}");
    }
});
