//! The conformance suite of `ari-conformance` on `TokioRuntime`.

/// A multi-threaded runtime per test: the client's tasks run on its workers while the case
/// runs on the test thread.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(fut)
}

ari_conformance::conformance_suite! {
    runtime: ari_tokio::TokioRuntime::new,
    block_on: block_on,
}

/// The operation and event cases again with the client of an outbound connection: the
/// simulated Asterisk dials the application and every request goes over that WebSocket.
mod over_outbound {
    use super::block_on;

    ari_conformance::outbound_conformance_suite! {
        runtime: ari_tokio::TokioRuntime::new,
        block_on: block_on,
    }
}
