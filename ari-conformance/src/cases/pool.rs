//! The HTTP connection pool against Asterisk's session limit: a cap per host, requests beyond
//! it wait, idle connections are kept for the next burst.

use std::future::IntoFuture;
use std::time::Duration;

use ari_client::stack::DEFAULT_MAX_CONNECTIONS_PER_HOST;
use ari_client::Runtime;
use ari_testkit::MockServer;
use futures::future::join_all;

use crate::harness::fast_sim_config;
use crate::Harness;

/// A server with Asterisk's default `sessionlimit` (100) and a client with a request timeout
/// long enough for a loaded machine (the queue's wait counts against it).
async fn pool_setup<R: Runtime>(h: &Harness<R>) -> (MockServer, ari_client::Client<R>) {
    let server = MockServer::builder()
        .sim_config(fast_sim_config())
        .session_limit(100)
        .start();
    let client = h
        .live(
            "connect",
            h.builder_for(&server)
                .request_timeout(Duration::from_secs(120))
                .connect(),
        )
        .await
        .expect("connects");
    (server, client)
}

/// 1,000 requests at once: all succeed, and the server never had more sessions open than the
/// client's cap (so none was refused, unlike a connection per request in flight).
pub async fn thousand_concurrent_requests_stay_under_the_session_limit<R: Runtime>(h: &Harness<R>) {
    let (server, client) = pool_setup(h).await;
    let requests = (0..1000).map(|_| client.asterisk().ping().into_future());
    let results = h.live("1000 pings", join_all(requests)).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(server.sessions_refused(), 0);
    assert!(
        server.sessions_peak() <= DEFAULT_MAX_CONNECTIONS_PER_HOST,
        "{} sessions open at once",
        server.sessions_peak()
    );
    assert!(server.connections_accepted() <= DEFAULT_MAX_CONNECTIONS_PER_HOST as u64);
}

/// After a burst of 64 requests, a second burst of 64 reuses the idle connections: the
/// server accepts no new one.
pub async fn a_second_burst_opens_no_new_connection<R: Runtime>(h: &Harness<R>) {
    let (server, client) = pool_setup(h).await;
    let burst = || join_all((0..64).map(|_| client.asterisk().ping().into_future()));
    for r in h.live("first burst", burst()).await {
        r.expect("ping");
    }
    let after_first = server.connections_accepted();
    assert!(after_first >= 1 && after_first <= DEFAULT_MAX_CONNECTIONS_PER_HOST as u64);
    for r in h.live("second burst", burst()).await {
        r.expect("ping");
    }
    assert_eq!(server.connections_accepted(), after_first);
    assert_eq!(server.sessions_refused(), 0);
}
