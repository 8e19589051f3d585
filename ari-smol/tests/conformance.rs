//! The conformance suite of `ari-conformance` on `SmolRuntime` (smol's global executor runs
//! the client's tasks while `smol::block_on` runs the case).

ari_conformance::conformance_suite! {
    runtime: ari_smol::SmolRuntime::new,
    block_on: smol::block_on,
}

/// The operation and event cases again with the client of an outbound connection: the
/// simulated Asterisk dials the application and every request goes over that WebSocket.
mod over_outbound {
    ari_conformance::outbound_conformance_suite! {
        runtime: ari_smol::SmolRuntime::new,
        block_on: smol::block_on,
    }
}
