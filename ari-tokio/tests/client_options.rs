//! Client options as an application sets them, against the simulated Asterisk.

use ari_testkit::MockServer;
use ari_tokio::{Client, Error, TokioRuntime, TransportErrorKind};

#[tokio::test]
async fn a_response_over_max_body_bytes_is_refused_and_names_the_option() {
    let server = MockServer::start();
    let url = format!("http://{}", server.addr());
    // `connect()` reads /asterisk/info: far more than 16 bytes.
    let err = Client::builder(&url, "asterisk", "asterisk")
        .runtime(TokioRuntime::new())
        .max_body_bytes(16)
        .connect()
        .await
        .expect_err("the answer is larger than allowed");
    let Error::Transport(t) = &err else {
        panic!("a transport error expected, got {err:?}");
    };
    assert_eq!(t.kind, TransportErrorKind::TooLarge);
    let text = err.to_string();
    assert!(text.contains("exceeds 16 bytes"), "{text}");
    assert!(
        text.contains("max_body_bytes"),
        "the message says which option to raise: {text}"
    );

    // With room for it, the same server is fine.
    let client = Client::builder(&url, "asterisk", "asterisk")
        .max_body_bytes(1 << 20)
        .connect()
        .await
        .expect("connects");
    assert!(client.server_version().is_some());
    client.close().await;
}
