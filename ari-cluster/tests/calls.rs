//! Calls through proxies and NATS, against simulated Asterisks.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_one_instance_rest_and_events() {
    let nats = nats();
    let server = node("node-a");
    let proxy = proxy(&server, &nats.url()).await;
    assert_eq!(proxy.node(), "node-a");
    let inst = instance(1, &nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );
    let nodes = inst.cluster.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, "node-a");
    assert_eq!(nodes[0].apps, vec![APP.to_string()]);

    // REST over NATS: a read, a creation, an operation on the created resource, an error.
    let info = inst.client.asterisk().get_info().await.expect("info");
    assert_eq!(info.system.expect("system").entity_id, "node-a");
    let bridge = inst
        .client
        .bridges()
        .create()
        .await
        .expect("bridge created");
    assert_eq!(
        inst.cluster
            .node_of(ari_client::events::ResourceKind::Bridge, bridge.id())
            .as_deref(),
        Some("node-a")
    );
    let got = inst
        .client
        .bridges()
        .get(bridge.id())
        .await
        .expect("bridge read back");
    assert_eq!(got.id(), bridge.id());
    bridge.destroy().await.expect("bridge destroyed");
    let err = inst
        .client
        .channels()
        .get("no-such-channel")
        .await
        .expect_err("404");
    assert_eq!(err.status(), Some(404), "{err}");

    // Calls: the instance takes them, answers, plays, hangs up.
    let calls = place_calls(&server, "a", 5);
    assert!(wait_done(&[&inst], &calls, Duration::from_secs(30)).await);
    let owners = owners(&[&inst]);
    assert_eq!(owners.len(), 5);
    assert_eq!(inst.cluster.stats().calls_taken, 5);
    let stats = proxy.stats();
    assert_eq!(stats.calls_claimed, 5);
    assert_eq!(stats.calls_unclaimed, 0);
    assert_eq!(stats.events_dropped, 0);
    assert!(stats.rest_requests >= 5 * 3 + 4, "{stats:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_300_calls_of_two_nodes() {
    let nats = nats();
    let a = node("node-a");
    let b = node("node-b");
    let pa = proxy(&a, &nats.url()).await;
    let pb = proxy(&b, &nats.url()).await;
    let i1 = instance(1, &nats.url()).await;
    let i2 = instance(2, &nats.url()).await;
    let i3 = instance(3, &nats.url()).await;
    let all = [&i1, &i2, &i3];
    for i in all {
        assert!(i.cluster.wait_for_nodes(2, Duration::from_secs(10)).await);
    }

    let mut calls = place_calls(&a, "a", 150);
    calls.extend(place_calls(&b, "b", 150));
    assert!(
        wait_done(&all, &calls, Duration::from_secs(120)).await,
        "every call is answered, played to and hung up"
    );
    let owners = owners(&all);
    assert_eq!(
        owners.len(),
        300,
        "each call handled by exactly one instance"
    );
    for i in all {
        let n = owners.values().filter(|o| **o == i.n).count();
        assert!(n > 0, "instance {} took no call", i.n);
    }

    // Nothing lost, nothing duplicated: what the proxies read is what the instances got
    // (waited for: the StasisEnds follow the hangups that ended the handlers).
    let read = || -> u64 { [&pa, &pb].iter().map(|p| p.stats().events_in).sum() };
    let got = || -> u64 {
        all.iter()
            .map(|i| i.seen.lock().unwrap().events.len() as u64)
            .sum()
    };
    let ended = || -> usize {
        all.iter()
            .map(|i| {
                i.seen
                    .lock()
                    .unwrap()
                    .events
                    .iter()
                    .filter(|(kind, _)| kind == "StasisEnd")
                    .count()
            })
            .sum()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (ended() < calls.len() || got() < read()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got(), read());

    // Every event naming a call's channel reached its instance and no other.
    let mut received: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for i in all {
        for (kind, channels) in &i.seen.lock().unwrap().events {
            for c in channels {
                received
                    .entry(c.clone())
                    .or_default()
                    .push((i.n, kind.clone()));
            }
        }
    }
    for call in &calls {
        let owner = owners[call];
        let evs = received.get(call).expect("events of the call");
        for (n, kind) in evs {
            assert_eq!(
                *n, owner,
                "{kind} of {call} reached instance {n}, not {owner}"
            );
        }
        let kinds: Vec<&str> = evs.iter().map(|(_, k)| k.as_str()).collect();
        for expected in [
            "StasisStart",
            "PlaybackStarted",
            "PlaybackFinished",
            "StasisEnd",
        ] {
            assert_eq!(
                kinds.iter().filter(|k| **k == expected).count(),
                1,
                "{call}: {expected} once in {kinds:?}"
            );
        }
    }
    for p in [&pa, &pb] {
        let s = p.stats();
        assert_eq!(s.calls_claimed, 150);
        assert_eq!(
            (s.calls_unclaimed, s.events_dropped, s.publish_errors),
            (0, 0, 0)
        );
    }
}
