//! REST through the cluster reaches Asterisk as `RESTRequest` frames on the proxy's events
//! WebSocket where Asterisk has it, and over HTTP when the proxy is told so.

mod common;

use std::time::Duration;

use ari_testkit::Transport;
use common::*;

/// The requests to `path` (below `/ari/`) that reached the node, by transport.
fn transports(server: &ari_testkit::MockServer, path: &str) -> Vec<Transport> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.transport)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_through_the_cluster_travels_on_the_proxys_events_websocket() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let inst = instance(1, &nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );
    let client = &inst.client;

    // A query value that needs encoding, a creation, an operation routed to its node.
    client
        .asterisk()
        .set_global_var("CLUSTER_WS")
        .value("42 & /?#")
        .await
        .expect("set over the WebSocket");
    let v = client
        .asterisk()
        .get_global_var("CLUSTER_WS")
        .await
        .expect("get over the WebSocket");
    assert_eq!(v.value, "42 & /?#");
    let bridge = client.bridges().create().await.expect("bridge");
    let got = client.bridges().get(bridge.id()).await.expect("bridge get");
    assert_eq!(got.id(), bridge.id());
    // An error keeps its status and Asterisk's message.
    let err = client
        .channels()
        .get("no-such-channel")
        .await
        .expect_err("404");
    assert!(err.is_not_found(), "{err}");

    assert_eq!(
        transports(&a, "asterisk/variable"),
        vec![Transport::WebSocket, Transport::WebSocket]
    );
    assert_eq!(transports(&a, "bridges"), vec![Transport::WebSocket]);
    assert_eq!(
        transports(&a, &format!("bridges/{}", bridge.id())),
        vec![Transport::WebSocket]
    );
    let set = a
        .requests()
        .into_iter()
        .find(|r| r.path == "asterisk/variable" && r.method == "POST")
        .expect("the set request");
    assert_eq!(set.query_param("variable"), Some("CLUSTER_WS"));
    assert_eq!(set.query_param("value"), Some("42 & /?#"));

    let stats = pa.stats();
    assert_eq!(stats.rest_over_websocket, 5, "{stats:?}");
    assert_eq!(stats.rest_failed, 0);
    // The answers to the proxy's requests are not events.
    assert_eq!(stats.undecodable, 0);
    assert!(inst
        .seen
        .lock()
        .unwrap()
        .events
        .iter()
        .all(|(ty, _)| ty != "RESTResponse"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_told_to_use_http_sends_rest_over_http() {
    let nats = nats();
    let a = node("node-a");
    let mut config = proxy_config(&a, &nats.url());
    config.rest_over_websocket = false;
    let pa = start_proxy(&a, config).await;
    let inst = instance(1, &nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );
    let bridge = inst.client.bridges().create().await.expect("bridge");
    inst.client
        .bridges()
        .get(bridge.id())
        .await
        .expect("bridge get");
    assert_eq!(transports(&a, "bridges"), vec![Transport::Http]);
    assert_eq!(
        transports(&a, &format!("bridges/{}", bridge.id())),
        vec![Transport::Http]
    );
    let stats = pa.stats();
    assert_eq!(stats.rest_over_websocket, 0);
    assert_eq!(stats.rest_requests, 2);
}
