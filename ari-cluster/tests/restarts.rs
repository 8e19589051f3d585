//! Asterisk restarting under one node of a cluster, and calls offered while no instance is
//! subscribed.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_client::events::{ChannelDtmfReceived, ResourceKind, StasisStart};
use ari_cluster::{Cluster, NodeEvent};
use ari_testkit::MockServer;
use common::*;

/// How each call's wait for a digit ended, by channel id.
type Outcomes = Arc<Mutex<BTreeMap<String, String>>>;

/// An instance whose handler waits for one digit on each call and records how that ended.
async fn waiting_instance(nats: &str) -> (Cluster, ari_cluster::Client, Outcomes) {
    let cluster = Cluster::connect(nats).await.expect("instance connects");
    waiting_on(cluster).await
}

/// [`waiting_instance`] on a cluster connected with other options.
async fn waiting_on(cluster: Cluster) -> (Cluster, ari_cluster::Client, Outcomes) {
    let client = cluster.client().expect("client");
    let outcomes: Outcomes = Arc::default();
    let o = outcomes.clone();
    client.on(move |_s: StasisStart, channel| {
        let o = o.clone();
        async move {
            let id = channel.id().to_string();
            o.lock().unwrap().insert(id.clone(), "waiting".into());
            let how = match channel.once::<ChannelDtmfReceived>().await {
                Ok(d) => format!("digit {}", d.digit),
                Err(ari_client::Error::Ended { .. }) => "ended".to_string(),
                Err(ari_client::Error::AsteriskGone { .. }) => "gone".to_string(),
                Err(e) => format!("error: {e}"),
            };
            o.lock().unwrap().insert(id, how);
        }
    });
    client.start(&[APP]).await.expect("instance starts");
    (cluster, client, outcomes)
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_restarting_under_one_node_ends_only_that_nodes_calls() {
    let nats = nats();
    let a = node("node-a");
    let b = node("node-b");
    let port_a = a.port();
    let pa = proxy(&a, &nats.url()).await;
    let _pb = proxy(&b, &nats.url()).await;
    let (cluster, client, outcomes) = waiting_instance(&nats.url()).await;
    assert!(cluster.wait_for_nodes(2, Duration::from_secs(30)).await);
    let mut node_events = cluster.node_events();

    let on_a = place_calls(&a, "a", 3);
    let on_b = place_calls(&b, "b", 3);
    let all: Vec<String> = on_a.iter().chain(&on_b).cloned().collect();
    wait_until(
        "every call waits for a digit",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            all.iter()
                .all(|c| o.get(c).map(String::as_str) == Some("waiting"))
        },
    )
    .await;
    let live_before = client.live_subscriptions();

    // Asterisk under node a restarts on the same address: a new startup time, none of the
    // old calls; the proxy's events connection comes back to it.
    drop(a);
    let a2 = MockServer::builder()
        .asterisk_id("node-a")
        .port(port_a)
        .start();
    assert!(
        a2.wait_for_app(APP, Duration::from_secs(30)),
        "the proxy reconnects to the restarted Asterisk"
    );

    let restarted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match node_events.recv().await {
                Ok(NodeEvent::AsteriskRestarted { id, resources }) => return (id, resources),
                Ok(_) => continue,
                Err(e) => panic!("node events ended: {e}"),
            }
        }
    })
    .await
    .expect("the restart is reported");
    assert_eq!(restarted.0, "node-a");
    assert!(restarted.1 >= 3, "node a's calls at least: {restarted:?}");
    wait_until("node a's calls' waits end", Duration::from_secs(30), || {
        let o = outcomes.lock().unwrap();
        on_a.iter()
            .all(|c| o.get(c).map(String::as_str) == Some("ended"))
    })
    .await;
    assert_eq!(pa.stats().asterisk_restarts, 1);
    assert!(cluster.stats().resources_gone >= 3, "{:?}", cluster.stats());
    assert!(
        client.live_subscriptions() < live_before,
        "node a's calls' subscriptions were released"
    );

    // Node b's calls were untouched: still waiting, and their digits arrive.
    {
        let o = outcomes.lock().unwrap();
        for c in &on_b {
            assert_eq!(o.get(c).map(String::as_str), Some("waiting"), "{c}: {o:?}");
        }
    }
    for c in &on_b {
        b.send_dtmf(c, "5").expect("dtmf");
    }
    wait_until(
        "node b's calls get their digit",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            on_b.iter()
                .all(|c| o.get(c).map(String::as_str) == Some("digit 5"))
        },
    )
    .await;

    // The restarted node takes new calls as before.
    let again = place_calls(&a2, "a2", 2);
    wait_until(
        "new calls on node a are served",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            again
                .iter()
                .all(|c| o.get(c).map(String::as_str) == Some("waiting"))
        },
    )
    .await;
    for c in &again {
        a2.send_dtmf(c, "7").expect("dtmf");
    }
    wait_until(
        "the new calls get their digit",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            again
                .iter()
                .all(|c| o.get(c).map(String::as_str) == Some("digit 7"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_offered_while_no_instance_is_subscribed_is_offered_again() {
    let nats = nats();
    let a = node("node-a");
    let mut config = proxy_config(&a, &nats.url());
    config.announce_interval = Duration::from_millis(100);
    // Offers for up to 3 × 3 s while nobody is subscribed.
    config.claim_timeout = Duration::from_secs(3);
    let pa = start_proxy(&a, config).await;

    // No instance yet (as while the instances resubscribe after a NATS reconnect).
    let calls = place_calls(&a, "early", 1);
    wait_until("the proxy offers the call", Duration::from_secs(30), || {
        pa.stats().claims_retried > 0 || pa.stats().calls_unclaimed > 0
    })
    .await;
    let inst = instance(1, &nats.url()).await;
    assert!(
        wait_done(&[&inst], &calls, Duration::from_secs(30)).await,
        "the call is taken once an instance subscribes: {:?}",
        pa.stats()
    );
    let stats = pa.stats();
    assert_eq!(stats.calls_claimed, 1);
    assert_eq!(stats.calls_unclaimed, 0);
    assert!(stats.claims_retried > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rebooted_with_its_proxy_ends_its_calls_and_hands_none_back() {
    let nats = nats();
    let a = node("node-a");
    let port_a = a.port();
    let pa = proxy(&a, &nats.url()).await;
    let (cluster, _client, outcomes) = waiting_instance(&nats.url()).await;
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    let calls = place_calls(&a, "r", 3);
    wait_until("every call waits", Duration::from_secs(30), || {
        let o = outcomes.lock().unwrap();
        calls
            .iter()
            .all(|c| o.get(c).map(String::as_str) == Some("waiting"))
    })
    .await;

    // The host reboots: the proxy and Asterisk stop, both start again.
    drop(pa);
    drop(a);
    let a2 = MockServer::builder()
        .asterisk_id("node-a")
        .port(port_a)
        .start();
    let pa2 = proxy(&a2, &nats.url()).await;
    wait_until("the old calls' waits end", Duration::from_secs(30), || {
        let o = outcomes.lock().unwrap();
        calls
            .iter()
            .all(|c| o.get(c).map(String::as_str) == Some("ended"))
    })
    .await;
    let stats = pa2.stats();
    assert_eq!(
        stats.resources_recovered, 0,
        "the previous run's calls are not given to the new proxy: {stats:?}"
    );
    assert_eq!(stats.owned_resources, 0, "{stats:?}");
}

/// Records how a wait for `id`'s `StasisStart` ends, under `id` in `outcomes`.
fn wait_for_start(client: &ari_cluster::Client, id: &str, outcomes: &Outcomes) {
    let channel = client.channel(id);
    let o = outcomes.clone();
    let id = id.to_string();
    o.lock().unwrap().insert(id.clone(), "waiting".into());
    tokio::spawn(async move {
        let how = match channel.once::<StasisStart>().await {
            Ok(_) => "started".to_string(),
            Err(ari_client::Error::Ended { .. }) => "ended".to_string(),
            Err(ari_client::Error::AsteriskGone { .. }) => "gone".to_string(),
            Err(e) => format!("error: {e}"),
        };
        o.lock().unwrap().insert(id, how);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_in_flight_when_their_node_reboots_end_their_waits() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let (cluster, client, outcomes) = waiting_instance(&nats.url()).await;
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    let on_a = cluster.client_on("node-a").expect("client on node a");

    // Asterisk takes the originates but never answers them (it hangs, then the host
    // reboots): no answer, no event. One goes to node a by name, one to any node.
    a.set_response_delay(Some(Duration::from_secs(3600)));
    let before = pa.stats().rest_requests;
    for (c, id) in [(&on_a, "pinned-1"), (&client, "any-1")] {
        // The wait on the started client (`on_a` sends only).
        wait_for_start(&client, id, &outcomes);
        let c = c.clone();
        tokio::spawn(async move {
            let _ = c
                .channels()
                .originate_with_id(id, "PJSIP/bob")
                .app(APP)
                .await;
        });
    }
    wait_until(
        "the proxy takes both originates",
        Duration::from_secs(30),
        || pa.stats().rest_requests >= before + 2,
    )
    .await;
    wait_until(
        "the instance knows their node",
        Duration::from_secs(30),
        || {
            ["pinned-1", "any-1"]
                .iter()
                .all(|id| cluster.node_of(ResourceKind::Channel, id).as_deref() == Some("node-a"))
        },
    )
    .await;

    // The host reboots: the proxy dies with the requests in flight (never answered), and
    // Asterisk and a proxy start again (the hung Asterisk stays behind, out of the cluster,
    // so that nothing answers the requests).
    drop(pa);
    let a2 = MockServer::builder().asterisk_id("node-a").start();
    let _pa2 = proxy(&a2, &nats.url()).await;
    wait_until(
        "the waits on the creations never answered end",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            ["pinned-1", "any-1"]
                .iter()
                .all(|c| o.get(*c).map(String::as_str) == Some("ended"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_originates_second_half_is_known_on_its_node_from_the_answer() {
    let nats = nats();
    let a = node("node-a");
    let mut config = proxy_config(&a, &nats.url());
    config.announce_interval = Duration::from_millis(100);
    // REST over HTTP: the events connection can be held back alone.
    config.rest_over_websocket = false;
    let _pa = start_proxy(&a, config).await;
    let (cluster, client, _outcomes) = waiting_instance(&nats.url()).await;
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    // Its events are held back: only the answer can tell where the halves live.
    a.pause_sends(APP);
    client
        .channels()
        .originate_with_id("loc-1", "Local/100@default")
        .app(APP)
        .await
        .expect("originated");
    for id in ["loc-1", "loc-1;2"] {
        assert_eq!(
            cluster.node_of(ResourceKind::Channel, id).as_deref(),
            Some("node-a"),
            "{id}"
        );
    }
    a.resume_sends(APP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_proxy_never_returns_ends_its_calls_waits_after_the_lost_limit() {
    let nats = nats();
    let a = node("node-a");
    let b = node("node-b");
    let pa = proxy(&a, &nats.url()).await;
    let _pb = proxy(&b, &nats.url()).await;
    let instance = Cluster::builder(&nats.url())
        .node_silence(Duration::from_millis(500))
        .node_lost_after(Some(Duration::from_secs(1)))
        .connect()
        .await
        .expect("instance connects");
    let (cluster, _client, outcomes) = waiting_on(instance).await;
    assert!(cluster.wait_for_nodes(2, Duration::from_secs(30)).await);
    let mut node_events = cluster.node_events();
    let on_a = place_calls(&a, "a", 3);
    let on_b = place_calls(&b, "b", 3);
    let all: Vec<String> = on_a.iter().chain(&on_b).cloned().collect();
    wait_until(
        "every call waits for a digit",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            all.iter()
                .all(|c| o.get(c).map(String::as_str) == Some("waiting"))
        },
    )
    .await;

    // Node a's proxy dies (no goodbye) and never comes back; its Asterisk lives on.
    drop(pa);
    let (mut down, mut lost) = (false, None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while lost.is_none() {
            match node_events.recv().await {
                Ok(NodeEvent::Down { id, .. }) if id == "node-a" => down = true,
                Ok(NodeEvent::Lost { id, resources }) => lost = Some((id, resources)),
                Ok(_) => continue,
                Err(e) => panic!("node events ended: {e}"),
            }
        }
    })
    .await
    .expect("node a is reported lost");
    assert!(down, "down before lost");
    let (id, resources) = lost.expect("lost");
    assert_eq!(id, "node-a");
    assert!(resources >= 3, "node a's calls at least: {resources}");
    wait_until("node a's calls' waits end", Duration::from_secs(30), || {
        let o = outcomes.lock().unwrap();
        on_a.iter()
            .all(|c| o.get(c).map(String::as_str) == Some("gone"))
    })
    .await;
    let stats = cluster.stats();
    assert_eq!(stats.nodes_lost, 1, "{stats:?}");
    assert!(stats.resources_lost >= 3, "{stats:?}");

    // Node b's calls were untouched: their digits arrive.
    for c in &on_b {
        b.send_dtmf(c, "5").expect("dtmf");
    }
    wait_until(
        "node b's calls get their digit",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            on_b.iter()
                .all(|c| o.get(c).map(String::as_str) == Some("digit 5"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_no_proxy_took_end_their_waits_after_the_pickup_timeout() {
    use futures_util::StreamExt;
    let nats = nats();
    let cluster = Cluster::builder(&nats.url())
        .creation_pickup_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("instance connects");
    let client = ari_client::Client::builder_with_runtime(
        "http://x.invalid",
        "u",
        "p",
        cluster.runtime().clone(),
    )
    .request_timeout(Duration::from_millis(500))
    .build()
    .expect("client");
    cluster.track(&client);
    client.start(&[APP]).await.expect("instance starts");
    let outcomes: Outcomes = Arc::default();

    // No proxy at all: the originate is not sent, and its wait ends at once.
    wait_for_start(&client, "nobody-1", &outcomes);
    let err = client
        .channels()
        .originate_with_id("nobody-1", "PJSIP/bob")
        .app(APP)
        .await
        .expect_err("no proxy");
    assert!(err.to_string().contains("no ari-proxy"), "{err}");

    // A "proxy" that takes the application's requests and never answers: for `told-1` it
    // says that it runs it (as a proxy does before running a creation), for `lost-1`
    // nothing (as if it never took it: lost with a NATS outage, or a proxy that died first).
    let hole = async_nats::connect(nats.url().as_str())
        .await
        .expect("NATS");
    let mut requests = hole
        .queue_subscribe(
            ari_cluster::wire::Subjects::new("ari").rest_app(APP),
            ari_cluster::wire::PROXY_QUEUE.to_string(),
        )
        .await
        .expect("subscribe");
    // In effect at the server once a message of the same connection came back after it.
    let inbox = hole.new_inbox();
    let mut echo = hole.subscribe(inbox.clone()).await.expect("subscribe");
    hole.publish(inbox, "".into()).await.expect("publish");
    tokio::time::timeout(Duration::from_secs(10), echo.next())
        .await
        .expect("the subscriptions are in effect");
    let hole2 = hole.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let uri = String::from_utf8_lossy(&msg.payload).to_string();
            let instance = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(ari_cluster::wire::INSTANCE_HEADER))
                .map(|v| v.to_string())
                .unwrap_or_default();
            if uri.contains("told-1") {
                let mut h = async_nats::HeaderMap::new();
                h.insert(ari_cluster::wire::NODE_HEADER, "node-x");
                h.insert(ari_cluster::wire::CREATING_HEADER, "1");
                let subject = ari_cluster::wire::Subjects::new("ari").instance(&instance);
                let _ = hole2
                    .publish_with_headers(subject, h, "c:told-1".into())
                    .await;
            }
        }
    });
    for id in ["lost-1", "told-1"] {
        wait_for_start(&client, id, &outcomes);
        let err = client
            .channels()
            .originate_with_id(id, "PJSIP/bob")
            .app(APP)
            .await
            .expect_err("never answered");
        assert!(err.is_timeout(), "{err}");
    }
    wait_until(
        "the waits on the creations no proxy took end",
        Duration::from_secs(30),
        || {
            let o = outcomes.lock().unwrap();
            ["nobody-1", "lost-1"]
                .iter()
                .all(|c| o.get(*c).map(String::as_str) == Some("ended"))
        },
    )
    .await;
    assert_eq!(
        cluster.stats().creations_not_taken,
        2,
        "{:?}",
        cluster.stats()
    );
    // The one a proxy said it runs keeps its wait (it ends with its node).
    assert_eq!(
        cluster.node_of(ResourceKind::Channel, "told-1").as_deref(),
        Some("node-x")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        outcomes.lock().unwrap().get("told-1").map(String::as_str),
        Some("waiting")
    );
    assert_eq!(cluster.stats().creations_not_taken, 2);
}
