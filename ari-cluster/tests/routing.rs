//! REST on a resource this instance has not seen yet reaches the node that has it.

mod common;

use std::time::Duration;

use ari_client::events::ResourceKind;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_on_another_node_is_found_there_and_an_unknown_one_is_a_404() {
    let nats = nats();
    let a = node("node-a");
    let b = node("node-b");
    let _pa = proxy(&a, &nats.url()).await;
    let _pb = proxy(&b, &nats.url()).await;
    let i1 = instance(1, &nats.url()).await;
    let i2 = instance(2, &nats.url()).await;
    for i in [&i1, &i2] {
        assert!(i.cluster.wait_for_nodes(2, Duration::from_secs(10)).await);
    }

    // Bridges made on node b by instance 2: instance 1 never saw them (their events go to
    // their creator), so it does not know where they live.
    let on_b = i2.cluster.client_on("node-b").expect("client for node b");
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(
            on_b.bridges()
                .create()
                .await
                .expect("bridge on b")
                .id()
                .to_string(),
        );
    }
    for id in &ids {
        assert_eq!(i1.cluster.node_of(ResourceKind::Bridge, id), None);
        let got =
            i1.client.bridges().get(id).await.unwrap_or_else(|e| {
                panic!("bridge {id} on node b, asked through the cluster: {e}")
            });
        assert_eq!(got.id(), id.as_str());
        // Learned: the next operations go straight to node b.
        assert_eq!(
            i1.cluster.node_of(ResourceKind::Bridge, id).as_deref(),
            Some("node-b")
        );
    }
    // An operation (not a read) on one instance 1 does not know reaches it the same way.
    let id = on_b
        .bridges()
        .create()
        .await
        .expect("bridge on b")
        .id()
        .to_string();
    i1.client
        .bridges()
        .destroy(&id)
        .await
        .unwrap_or_else(|e| panic!("destroy {id} on node b through the cluster: {e}"));
    let err = on_b
        .bridges()
        .get(&id)
        .await
        .expect_err("destroyed on node b");
    assert!(err.is_not_found(), "{err}");

    // A resource no node has: a typed 404, at once (not a timeout).
    let err = i1
        .client
        .bridges()
        .get("no-such-bridge")
        .await
        .expect_err("no node has it");
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applications_sharing_one_nats_create_on_their_own_nodes() {
    let nats = nats();
    // Node a serves this application; node b another one, on the same NATS and prefix.
    let a = node("node-a");
    let b = node("node-b");
    let _pa = proxy(&a, &nats.url()).await;
    let mut config = ari_cluster::ProxyConfig::new(
        &b.base_url(),
        b.username(),
        b.password(),
        &nats.url(),
        ["queue"],
    );
    config.announce_interval = Duration::from_millis(100);
    let _pb = ari_cluster::Proxy::start(config).await.expect("proxy b");
    assert!(b.wait_for_app("queue", Duration::from_secs(10)));
    let inst = instance(1, &nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(2, Duration::from_secs(30))
            .await
    );

    // Its originates and bridges are made where its application is (node b's Asterisk would
    // send their events to an application nobody serves there).
    for _ in 0..10 {
        let ch = inst
            .client
            .channels()
            .originate("PJSIP/bob")
            .app(APP)
            .await
            .expect("originate");
        assert_eq!(
            inst.cluster
                .node_of(ResourceKind::Channel, ch.id())
                .as_deref(),
            Some("node-a"),
            "channel {}",
            ch.id()
        );
        let bridge = inst.client.bridges().create().await.expect("bridge");
        assert_eq!(
            inst.cluster
                .node_of(ResourceKind::Bridge, bridge.id())
                .as_deref(),
            Some("node-a"),
            "bridge {}",
            bridge.id()
        );
    }
    assert!(b
        .with_sim(|sim, _| sim.bridge_ids().is_empty())
        .unwrap_or(false));
}
