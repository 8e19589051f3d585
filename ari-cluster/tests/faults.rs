//! The three faults: a proxy killed, an instance killed, NATS restarted.

mod common;

use std::time::Duration;

use ari_client::{ConnectionEvent, TransportErrorKind};
use ari_cluster::NodeEvent;
use common::*;
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_is_reported_down_and_the_other_node_goes_on() {
    let nats = nats();
    let a = node("node-a");
    let b = node("node-b");
    let pa = proxy(&a, &nats.url()).await;
    let pb = proxy(&b, &nats.url()).await;
    let inst = instance(1, &nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(2, Duration::from_secs(10))
            .await
    );
    let mut node_events = inst.cluster.node_events();

    // A bridge on node b, made there on purpose.
    let on_b = inst.cluster.client_on("node-b").expect("client for node b");
    let bridge = on_b.bridges().create().await.expect("bridge on b");
    assert_eq!(
        inst.cluster
            .node_of(ari_client::events::ResourceKind::Bridge, bridge.id())
            .as_deref(),
        Some("node-b")
    );

    drop(pb); // killed: no goodbye, its announcements just stop
    let down = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match node_events.recv().await {
                Ok(NodeEvent::Down { id, .. }) => return id,
                Ok(_) => continue,
                Err(e) => panic!("node events ended: {e}"),
            }
        }
    })
    .await
    .expect("node b reported down");
    assert_eq!(down, "node-b");
    assert_eq!(
        inst.cluster
            .nodes()
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>(),
        vec!["node-a"]
    );

    // Its resources fail at once with a typed error naming the node (no timeout).
    let err = inst
        .client
        .bridges()
        .get(bridge.id())
        .await
        .expect_err("node b is down");
    match &err {
        ari_client::Error::Transport(t) => {
            assert_eq!(t.kind, TransportErrorKind::Closed);
            assert!(t.message.contains("node-b"), "{t}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(inst.cluster.stats().rest_node_down, 1);

    // Calls on node a go on.
    let calls = place_calls(&a, "a", 10);
    assert!(wait_done(&[&inst], &calls, Duration::from_secs(30)).await);
    assert_eq!(pa.stats().calls_claimed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_new_calls_to_the_others() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let i1 = instance(1, &nats.url()).await;
    let i2 = instance(2, &nats.url()).await;
    let first = place_calls(&a, "first", 20);
    assert!(wait_done(&[&i1, &i2], &first, Duration::from_secs(30)).await);
    assert_eq!(owners(&[&i1, &i2]).len(), 20);

    // Gone: its NATS connection closes (as a killed process's does), and with it its queue
    // subscription.
    i1.cluster.close().await;
    drop(i1);
    let second = place_calls(&a, "second", 20);
    assert!(
        wait_done(&[&i2], &second, Duration::from_secs(30)).await,
        "the remaining instance takes every new call"
    );
    let stats = pa.stats();
    assert_eq!(stats.calls_claimed, 40);
    assert_eq!(stats.calls_unclaimed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_reconnects_and_resubscribes() {
    let mut nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let inst = instance(1, &nats.url()).await;
    let mut conn = inst.client.connection_events();
    let before = place_calls(&a, "before", 5);
    assert!(wait_done(&[&inst], &before, Duration::from_secs(30)).await);

    nats.restart().expect("nats-server restarts");
    // The instance's events connection went down with NATS and came back.
    let reconnected = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = conn.next().await {
            if let Ok(ConnectionEvent::Connected {
                reconnected: true, ..
            }) = ev
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("reconnected within 20 s");
    assert!(reconnected);
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );

    let after = place_calls(&a, "after", 5);
    assert!(
        wait_done(&[&inst], &after, Duration::from_secs(30)).await,
        "calls after the restart are taken and served"
    );
    assert_eq!(pa.stats().calls_claimed, 10);
}
