//! The three faults: a proxy killed, an instance killed, NATS restarted.

mod common;

use std::time::Duration;

use ari_client::{ConnectionEvent, TransportErrorKind};
use ari_cluster::{NodeDown, NodeEvent};
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

    let killed_at = std::time::SystemTime::now();
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
    let down = NodeDown::find(&err).expect("a NodeDown error");
    assert_eq!(down.node, "node-b");
    assert!(
        down.reason.contains("no announcement"),
        "the reason says why: {down}"
    );
    assert!(
        down.since >= killed_at && down.since <= std::time::SystemTime::now(),
        "down since after the kill"
    );
    match &err {
        ari_client::Error::Transport(t) => {
            assert_eq!(t.kind, TransportErrorKind::Connect, "nothing was sent");
            assert!(t.message.contains("node-b"), "{t}");
            let source = std::error::Error::source(t).expect("the NodeDown is kept as source");
            assert_eq!(source.downcast_ref::<NodeDown>(), Some(down));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(inst.cluster.stats().rest_node_down, 1);
    // A client pinned to the node is refused the same way, creations included.
    let err = on_b.bridges().create().await.expect_err("node b is down");
    assert_eq!(
        NodeDown::find(&err).map(|d| d.node.as_str()),
        Some("node-b")
    );
    assert_eq!(inst.cluster.stats().rest_node_down, 2);

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
    // The instance, absent while it resubscribed, was not taken for gone.
    assert_eq!(pa.stats().instances_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_proxy_or_an_unserved_node_fails_with_node_down() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let inst = instance(1, &nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );
    let on_a = inst.cluster.client_on("node-a").expect("client for node a");
    let bridge = on_a.bridges().create().await.expect("bridge on a");
    let mut node_events = inst.cluster.node_events();

    // A goodbye: the node is down at once, the reason says the proxy stopped.
    let stopped_at = std::time::SystemTime::now();
    pa.stop().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match node_events.recv().await {
                Ok(NodeEvent::Down { id, reason }) => {
                    assert_eq!(id, "node-a");
                    assert!(reason.contains("stopped"), "{reason}");
                    return;
                }
                Ok(_) => continue,
                Err(e) => panic!("node events ended: {e}"),
            }
        }
    })
    .await
    .expect("node a reported down");
    let err = inst
        .client
        .bridges()
        .get(bridge.id())
        .await
        .expect_err("node a is down");
    let down = NodeDown::find(&err).unwrap_or_else(|| panic!("not a NodeDown: {err:?}"));
    assert_eq!(down.node, "node-a");
    assert!(down.reason.contains("its proxy stopped"), "{down}");
    assert!(down.since >= stopped_at, "down since the goodbye");
    assert!(err.to_string().contains("node node-a is down"), "{err}");

    // A node nobody serves (never announced): refused by NATS at once, the same error.
    let nowhere = inst.cluster.client_on("node-z").expect("client for node z");
    let err = nowhere
        .asterisk()
        .get_info()
        .await
        .expect_err("no proxy serves node z");
    let down = NodeDown::find(&err).expect("a NodeDown error");
    assert_eq!(down.node, "node-z");
    assert!(down.reason.contains("no ari-proxy serves it"), "{down}");

    // An error of another cause is not one.
    let err = inst
        .client
        .timeout(Duration::ZERO, std::future::pending::<()>())
        .await
        .expect_err("times out");
    assert!(NodeDown::find(&err).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_in_a_nats_outage_are_counted() {
    use ari_client::events::{ChannelHangupRequest, StasisStart};
    use std::sync::{Arc, Mutex};

    let mut nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let cluster = ari_cluster::Cluster::connect(&nats.url())
        .await
        .expect("instance connects");
    let client = cluster.client().expect("client");
    let ended: Arc<Mutex<Vec<String>>> = Arc::default();
    let e = ended.clone();
    client.on(move |_s: StasisStart, channel| {
        let e = e.clone();
        async move {
            // Ends when the hangup arrives (or the channel's events end).
            let _ = channel.once::<ChannelHangupRequest>().await;
            e.lock().unwrap().push(channel.id().to_string());
        }
    });
    client.start(&[APP]).await.expect("instance starts");
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    let calls = place_calls(&a, "x", 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cluster.stats().calls_taken < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls taken: {:?} {:?}",
            cluster.stats(),
            pa.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The calls hang up while NATS is down: the proxy publishes their events to nobody.
    let mut conn = client.connection_events();
    nats.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for call in &calls {
        a.hangup(call).expect("hangup");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart().expect("nats-server restarts");
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = conn.next().await {
            if let Ok(ConnectionEvent::Connected {
                reconnected: true, ..
            }) = ev
            {
                return;
            }
        }
    })
    .await
    .expect("the instance reconnects");

    // The next message from the proxy on the instance's subject shows the gap: a new call
    // (placed again until one is taken: one offered while the instance resubscribes is
    // unclaimed, counted by the proxy).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut placed = 0;
    loop {
        let arrived = ended.lock().unwrap().len() == calls.len();
        let s = cluster.stats();
        if s.calls_taken > 3 && (arrived || s.event_messages_lost > 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hangups arrive or their loss is counted: {s:?}, waits ended {:?}, {:?}",
            ended.lock().unwrap(),
            pa.stats()
        );
        if s.calls_taken == 3 && pa.stats().calls_unclaimed >= placed {
            place_calls(&a, &format!("y{placed}"), 1);
            placed += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_losing_asterisk_is_reported_to_the_instances() {
    let nats = nats();
    let a = node("node-a");
    let _pa = proxy(&a, &nats.url()).await;
    let inst = instance(1, &nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(30))
            .await
    );
    let mut node_events = inst.cluster.node_events();

    // The proxy's events WebSocket drops; it reconnects.
    assert_eq!(a.drop_websocket(APP), 1);
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match node_events.recv().await {
                Ok(NodeEvent::Asterisk { id, connected }) => {
                    assert_eq!(id, "node-a");
                    seen.push(connected);
                    if connected {
                        return;
                    }
                }
                Ok(_) => continue,
                Err(e) => panic!("node events ended: {e}"),
            }
        }
    })
    .await
    .expect("the link's loss and return are reported");
    assert_eq!(seen, vec![false, true]);
    assert!(inst.cluster.nodes()[0].connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_to_a_node_whose_proxy_dies_fails_with_node_down() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let cluster = ari_cluster::Cluster::builder(&nats.url())
        .node_silence(Duration::from_millis(500))
        .connect()
        .await
        .expect("instance connects");
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    // Requests that would wait an hour for their answer.
    let on_a = ari_client::Client::builder_with_runtime(
        "http://ari-cluster.invalid",
        "cluster",
        "cluster",
        cluster.runtime().clone(),
    )
    .request_timeout(Duration::from_secs(3600))
    .build()
    .expect("client");
    let bridge = on_a.bridges().create().await.expect("bridge on a");
    // Asterisk hangs with the request, then the proxy dies (no goodbye): no answer ever.
    a.set_response_delay(Some(Duration::from_secs(3600)));
    let before = pa.stats().rest_requests;
    let id = bridge.id().to_string();
    let c = on_a.clone();
    let request = tokio::spawn(async move { c.bridges().get(&id).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pa.stats().rest_requests == before {
        assert!(tokio::time::Instant::now() < deadline, "the proxy takes it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(pa);
    let err = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .expect("the request ends when node a goes silent, not at its timeout")
        .expect("task")
        .expect_err("no answer");
    let down = NodeDown::find(&err).unwrap_or_else(|| panic!("not a NodeDown: {err:?}"));
    assert_eq!(down.node, "node-a");
    assert!(down.reason.contains("in flight"), "{down}");
    assert_eq!(cluster.stats().rest_lost_in_flight, 1);
}
