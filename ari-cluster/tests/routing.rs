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

/// An instance of the application `queue` that records the calls it takes and waits for a
/// digit on each.
async fn queue_instance(
    nats: &str,
) -> (
    ari_cluster::Cluster,
    ari_cluster::Client,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use ari_client::events::{ChannelDtmfReceived, StasisStart};
    let cluster = ari_cluster::Cluster::connect(nats)
        .await
        .expect("instance connects");
    let client = cluster.client().expect("client");
    let taken: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let t = taken.clone();
    client.on(move |_s: StasisStart, channel| {
        let t = t.clone();
        async move {
            t.lock().unwrap().push(channel.id().to_string());
            let _ = channel.once::<ChannelDtmfReceived>().await;
        }
    });
    client.start(&["queue"]).await.expect("instance starts");
    (cluster, client, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_calls_go_to_an_instance_of_its_own_application() {
    let nats = nats();
    let a = node("node-a");
    let mut config = ari_cluster::ProxyConfig::new(
        &a.base_url(),
        a.username(),
        a.password(),
        &nats.url(),
        [APP, "queue"],
    );
    config.announce_interval = Duration::from_millis(100);
    let pa = ari_cluster::Proxy::start(config).await.expect("proxy");
    assert!(a.wait_for_app("queue", Duration::from_secs(10)));
    assert!(a.wait_for_app(APP, Duration::from_secs(10)));
    // An instance of the other application on the same NATS, and two of `queue`.
    let hello = instance(1, &nats.url()).await;
    let (q1, q1_client, q1_taken) = queue_instance(&nats.url()).await;
    let calls: Vec<String> = (0..2)
        .map(|i| {
            let mut call = ari_testkit::PlaceCall::new("PJSIP/alice", "queue");
            call.channel_id = Some(format!("q-{i}"));
            a.place_call(call).expect("call placed")
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while q1_taken.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", pa.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_q2, _q2_client, q2_taken) = queue_instance(&nats.url()).await;
    q1.close().await;
    drop(q1_client);

    // Handed over to the other instance of `queue`, never to `hello`'s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut got = q2_taken.lock().unwrap().clone();
        got.sort();
        if got == calls {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "q2 took {got:?}; {:?}",
            pa.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hello.seen.lock().unwrap().handled.is_empty());
    let stats = pa.stats();
    assert_eq!(stats.calls_handed_over, 2, "{stats:?}");
    assert_eq!(stats.calls_unclaimed, 0, "{stats:?}");
}
