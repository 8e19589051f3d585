//! Fuzz target `route_scan`: the cluster proxy routes frequent events from the raw frame
//! without decoding them (`ari-cluster`'s scan). On any input, where the typed event decodes
//! and the scan reads the frame, both must name the same type, application, resources (in
//! order) and the resource the event ends. A disagreement is an event the proxy would send to
//! the wrong instance (a frame the scan does not read is decoded instead: slower, not wrong).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = ari_cluster::fuzzing::route_scan(data) {
        panic!("route scan disagrees with the typed event: {why}");
    }
});
