//! An instance that dies in the middle of its calls.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_client::events::{ChannelDtmfReceived, StasisStart};
use ari_cluster::Cluster;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_a_dead_instance_reach_the_others_instead_of_nobody() {
    let nats = nats();
    let a = node("node-a");
    // Released only (their events to every instance), not handed over.
    let mut config = proxy_config(&a, &nats.url());
    config.announce_interval = Duration::from_millis(100);
    config.hand_over_calls = false;
    let pa = start_proxy(&a, config).await;

    // Instance 1 takes three calls and waits for a digit on each.
    let (c1, cl1) = instance_waiting_for_digits(&nats.url()).await;
    let calls = place_calls(&a, "k", 3);
    wait_for_calls_taken(&c1, 3).await;

    // Instance 2 starts while those calls are in progress; then instance 1 dies.
    let i2 = instance(2, &nats.url()).await;
    c1.close().await;
    drop(cl1);
    drop(c1);

    // The proxy finds it gone (three probes at its 100 ms announcement interval, over 2 s) and releases
    // its calls: counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pa.stats().instances_lost == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead instance is noticed: {:?}",
            pa.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = pa.stats();
    assert_eq!(stats.instances_lost, 1);
    assert!(stats.resources_released >= 3, "{stats:?}");

    // The calls' later events reach the live instance instead of nobody.
    for c in &calls {
        a.hangup(c).expect("hangup");
    }
    let seen = |kind: &str, call: &str| {
        i2.seen
            .lock()
            .unwrap()
            .events
            .iter()
            .any(|(k, ch)| k == kind && ch.iter().any(|c| c == call))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !calls
        .iter()
        .all(|c| seen("ChannelHangupRequest", c) && seen("StasisEnd", c))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance 2 gets the dead instance's calls' events: {:?}",
            i2.seen.lock().unwrap().events
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A live instance is not released.
    assert_eq!(pa.stats().instances_lost, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_calls_are_handed_over_to_another_instance_once() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;

    // Instance 1 takes three calls and waits for a digit on each.
    let (c1, cl1) = instance_waiting_for_digits(&nats.url()).await;
    let calls = place_calls(&a, "h", 3);
    wait_for_calls_taken(&c1, 3).await;
    let gone = c1.instance_id().to_string();

    // Instance 2 starts while those calls are in progress; then instance 1 dies.
    let i2 = instance(2, &nats.url()).await;
    c1.close().await;
    drop(cl1);
    drop(c1);

    // Once the proxy finds it gone, its calls are offered again: instance 2's handler runs
    // for each (answers, plays, hangs up), once.
    assert!(
        wait_done(&[&i2], &calls, Duration::from_secs(30)).await,
        "instance 2 serves the dead instance's calls: {:?}",
        pa.stats()
    );
    let by = owners(&[&i2]);
    assert_eq!(by.len(), 3, "{by:?}");
    let stats = pa.stats();
    assert_eq!(stats.instances_lost, 1, "{stats:?}");
    assert_eq!(stats.calls_handed_over, 3, "{stats:?}");
    assert_eq!(stats.calls_claimed, 6, "{stats:?}");
    assert_eq!(i2.cluster.stats().calls_taken, 3);

    // The dead instance, were it back (a NATS partition), controls none of them.
    let raw = async_nats::connect(nats.url()).await.expect("nats");
    let subject = ari_cluster::wire::Subjects::default().rest_node("node-a");
    let ask = |from: &str| {
        let mut h = async_nats::HeaderMap::new();
        h.insert(ari_cluster::wire::INSTANCE_HEADER, from);
        let body = serde_json::json!({"type": "RESTRequest", "method": "POST",
                                      "uri": format!("channels/{}/answer", calls[0])});
        let raw = raw.clone();
        let subject = subject.clone();
        async move {
            let reply = raw
                .request_with_headers(subject, h, body.to_string().into())
                .await
                .expect("answered");
            serde_json::from_slice::<serde_json::Value>(&reply.payload).expect("RESTResponse")
        }
    };
    let refused = ask(&gone).await;
    assert_eq!(refused["status_code"], 404, "{refused}");
    assert!(
        refused["message_body"]
            .as_str()
            .unwrap_or("")
            .contains("handed over"),
        "{refused}"
    );
    assert_eq!(pa.stats().rest_handed_over, 1);
    // Another instance's request goes to Asterisk (the call has ended there).
    let other = ask("someone-else").await;
    assert!(
        !other["message_body"]
            .as_str()
            .unwrap_or("")
            .contains("handed over"),
        "{other}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_call_keeps_its_arguments_with_escaped_commas_quotes_and_parentheses() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let (c1, cl1) = instance_waiting_for_digits(&nats.url()).await;
    // Arguments with the characters Asterisk's parser takes specially: the channel's
    // `Stasis()` data has them escaped, as a dialplan giving these arguments would.
    let args: Vec<String> = ["a,b", "c,d", "f(x,y)", "back\\slash", "say \"hi\""]
        .map(String::from)
        .to_vec();
    let mut call = ari_testkit::PlaceCall::new("PJSIP/alice", APP);
    call.channel_id = Some("args-1".into());
    call.args = args.clone();
    a.place_call(call).expect("call placed");
    wait_for_calls_taken(&c1, 1).await;

    // Instance 2 records the arguments of the calls it takes; instance 1 dies.
    let cluster = Cluster::connect(&nats.url()).await.expect("instance 2");
    let client = cluster.client().expect("client");
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    client.on(move |s: StasisStart, _channel| {
        let g = g.clone();
        async move {
            *g.lock().unwrap() = Some(s.args.clone());
        }
    });
    client.start(&[APP]).await.expect("instance 2 starts");
    c1.close().await;
    drop(cl1);
    drop(c1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call is handed over: {:?}",
            pa.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got: Vec<String> = got
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(got, args, "the arguments Asterisk gave the call");
}

/// An instance whose handler waits for a digit on each call it takes, recording the calls
/// it took and the type of every event it receives.
async fn recording_instance(
    nats: &str,
) -> (
    Cluster,
    ari_cluster::Client,
    Arc<Mutex<(Vec<String>, Vec<String>)>>,
) {
    let cluster = Cluster::connect(nats).await.expect("instance connects");
    let client = cluster.client().expect("client");
    let log: Arc<Mutex<(Vec<String>, Vec<String>)>> = Arc::default();
    let l = log.clone();
    client.on(move |_s: StasisStart, channel| {
        let l = l.clone();
        async move {
            l.lock().unwrap().0.push(channel.id().to_string());
            let _ = channel.once::<ChannelDtmfReceived>().await;
        }
    });
    let mut all = client.event_stream();
    let l = log.clone();
    tokio::spawn(async move {
        while let Some(ev) = futures_util::StreamExt::next(&mut all).await {
            if let Ok(ev) = ev {
                l.lock().unwrap().1.push(ev.type_name().to_string());
            }
        }
    });
    client.start(&[APP]).await.expect("instance starts");
    (cluster, client, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_bridge_follows_its_handed_over_call() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;

    // Instance 1 puts each call it takes in a bridge of its own, then waits for a digit.
    let c1 = Cluster::connect(&nats.url()).await.expect("instance 1");
    let cl1 = c1.client().expect("client");
    let bridged: Arc<Mutex<Vec<String>>> = Arc::default();
    let (b, client) = (bridged.clone(), cl1.clone());
    cl1.on(move |_s: StasisStart, channel| {
        let (b, client) = (b.clone(), client.clone());
        async move {
            let bridge = client.new_bridge();
            if bridge.create().await.is_ok() && bridge.add_channel([&channel]).await.is_ok() {
                b.lock().unwrap().push(bridge.id().to_string());
            }
            let _ = channel.once::<ChannelDtmfReceived>().await;
        }
    });
    cl1.start(&[APP]).await.expect("instance 1 starts");
    let calls = place_calls(&a, "bridged", 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while bridged.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance 1 bridges the call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bridge = bridged.lock().unwrap()[0].clone();

    // Instances 2 and 3 start; instance 1 dies; its call is handed over to one of them.
    let (_c2, _cl2, log2) = recording_instance(&nats.url()).await;
    let (_c3, _cl3, log3) = recording_instance(&nats.url()).await;
    c1.close().await;
    drop(cl1);
    drop(c1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (owner, other) = loop {
        if log2.lock().unwrap().0.contains(&calls[0]) {
            break (log2.clone(), log3.clone());
        }
        if log3.lock().unwrap().0.contains(&calls[0]) {
            break (log3.clone(), log2.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call is handed over: {:?}",
            pa.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pa.stats().bridges_handed_over, 1, "{:?}", pa.stats());

    // The bridge's own events (its video source set) reach the call's new instance only.
    let raw = async_nats::connect(nats.url()).await.expect("nats");
    let subject = ari_cluster::wire::Subjects::default().rest_node("node-a");
    let body = serde_json::json!({"type": "RESTRequest", "method": "POST",
                                  "uri": format!("bridges/{bridge}/videoSource/{}", calls[0])});
    let reply = raw
        .request(subject, body.to_string().into())
        .await
        .expect("answered");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("RESTResponse");
    assert_eq!(reply["status_code"], 204, "{reply}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !owner
        .lock()
        .unwrap()
        .1
        .iter()
        .any(|t| t == "BridgeVideoSourceChanged")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call's instance gets BridgeVideoSourceChanged: {:?}",
            owner.lock().unwrap().1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Published after the owner's (one subject each, in order): a message to every
    // instance would have arrived by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = other.lock().unwrap().1.clone();
    assert!(
        !seen.iter().any(|t| t.starts_with("Bridge")),
        "the other instance gets the bridge's events: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_arriving_as_start_returns_is_taken() {
    let nats = nats();
    let a = node("node-a");
    // Each instance closes once it took its call, maybe before its handler hung it up: such
    // a call would be handed over to the next round's instance (counted as claimed again).
    // Only new calls are counted here.
    let mut config = proxy_config(&a, &nats.url());
    config.announce_interval = Duration::from_millis(100);
    config.hand_over_calls = false;
    let pa = start_proxy(&a, config).await;
    for round in 0..20u64 {
        let cluster = Cluster::connect(&nats.url()).await.expect("instance");
        let client = cluster.client().expect("client");
        client.on(|_s: StasisStart, channel| async move {
            let _ = channel.hangup().await;
        });
        client.start(&[APP]).await.expect("instance starts");
        // At once: start() returned, so this instance is in the queue group.
        place_calls(&a, &format!("r{round}"), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = pa.stats();
            assert_eq!(
                s.calls_unclaimed, 0,
                "round {round}: a call offered after start() returned found no instance"
            );
            if s.calls_claimed == round + 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cluster.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_to_an_instance_before_it_is_found_gone_are_counted() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;

    // The only instance takes two calls and waits for digits on them.
    let (c1, cl1) = instance_waiting_for_digits(&nats.url()).await;
    let calls = place_calls(&a, "d", 2);
    wait_for_calls_taken(&c1, 2).await;
    let published = pa.stats().events_out;

    // It dies; its calls' digits are published to its subject, nobody listening, in the
    // seconds before the proxy finds it gone.
    let subject = ari_cluster::wire::Subjects::default().instance(c1.instance_id());
    c1.close().await;
    drop(cl1);
    drop(c1);
    // Gone for NATS too (nobody subscribed to its subject) before the digits come.
    let raw = async_nats::connect(nats.url()).await.expect("nats");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let probe = async_nats::Request::new().timeout(Some(Duration::from_secs(1)));
        match raw.send_request(subject.clone(), probe).await {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => break,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance 1 unsubscribes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &calls {
        a.send_dtmf(c, "1").expect("dtmf");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pa.stats().events_out < published + 2 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", pa.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pa.stats().instances_lost == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead instance is noticed: {:?}",
            pa.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = pa.stats();
    assert!(
        stats.events_to_lost_instances >= 2,
        "the digits sent to nobody are counted: {stats:?}"
    );
}

/// An instance whose handler waits for a digit on each call it takes.
async fn instance_waiting_for_digits(nats: &str) -> (Cluster, ari_cluster::Client) {
    let cluster = Cluster::connect(nats).await.expect("instance 1");
    let client = cluster.client().expect("client");
    client.on(|_s: StasisStart, channel| async move {
        let _ = channel.once::<ChannelDtmfReceived>().await;
    });
    client.start(&[APP]).await.expect("instance 1 starts");
    (cluster, client)
}

/// Waits (20 s at most) until `cluster` took `n` calls.
async fn wait_for_calls_taken(cluster: &Cluster, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cluster.stats().calls_taken < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance 1 takes the calls"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_and_up_under_load_loses_and_doubles_no_call() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let i1 = instance(1, &nats.url()).await;
    let i2 = instance(2, &nats.url()).await;
    let mut i3 = None;
    let mut calls = Vec::new();
    let mut after_stop = Vec::new();
    for k in 0..36 {
        let call = place_calls(&a, &format!("load{k}"), 1);
        if k > 12 {
            after_stop.extend(call.iter().cloned());
        }
        calls.extend(call);
        if k == 12 {
            // Instance 2 is scaled down: it takes no new call, finishes its own.
            i2.cluster.stop_taking_calls();
        }
        if k == 24 {
            // A new instance is scaled up meanwhile.
            i3 = Some(instance(3, &nats.url()).await);
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let i3 = i3.expect("instance 3");
    assert!(
        wait_done(&[&i1, &i2, &i3], &calls, Duration::from_secs(60)).await,
        "every call is served: {:?}",
        pa.stats()
    );
    // Each call by exactly one instance (owners panics on a call handled twice).
    let by = owners(&[&i1, &i2, &i3]);
    assert_eq!(by.len(), calls.len());
    for c in &after_stop {
        assert_ne!(
            by.get(c),
            Some(&2),
            "{c} went to the instance that stopped taking calls"
        );
    }
    let stats = pa.stats();
    assert_eq!(stats.calls_claimed, calls.len() as u64, "{stats:?}");
    assert_eq!(stats.calls_unclaimed, 0, "{stats:?}");
    // Instance 2 served its calls to their end, then leaves.
    assert!(i2.seen.lock().unwrap().errors.is_empty());
    i2.cluster.close().await;
}

/// An offer already in an instance's connection when it stops taking calls is declined
/// (counted in `claims_declined`; it was dropped unseen by the NATS client when the instance
/// unsubscribed), not taken: the proxy offers the call again at once (it waited its claim
/// timeout), and another instance serves it, once.
#[test]
fn an_offer_reaching_an_instance_that_stopped_taking_calls_is_declined_and_served_elsewhere() {
    use futures_util::StreamExt;
    let nats = nats();
    let url = nats.url();
    let a = node("node-a");
    // The proxy, a watcher of the offers and instance 2 run on their own runtime; instance 1
    // on one that runs only while the test drives it, so that an offer can wait unread in its
    // connection.
    let others = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let one = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (pa, mut offers, _watcher) = others.block_on(async {
        let mut config = proxy_config(&a, &url);
        config.announce_interval = Duration::from_millis(100);
        // Longer than the test waits: the call is offered again at once when declined, not
        // after this.
        config.claim_timeout = Duration::from_secs(120);
        config.claim_attempts = 2;
        let pa = start_proxy(&a, config).await;
        let watcher = async_nats::connect(url.as_str()).await.expect("watcher");
        // Not in the queue group: it sees every offer and answers none.
        let offers = watcher
            .subscribe(ari_cluster::wire::Subjects::new("ari").claim(APP))
            .await
            .expect("subscribe");
        watcher.flush().await.expect("flush");
        (pa, offers, watcher)
    });
    let i1 = one.block_on(instance(1, &url));

    // Instance 1, the only one in the queue group, is offered the call but does not read it
    // yet (its runtime is idle); it stops taking calls meanwhile.
    let calls = place_calls(&a, "declined", 1);
    others.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), offers.next())
            .await
            .expect("the call is offered")
            .expect("an offer");
    });
    i1.cluster.stop_taking_calls();
    let i2 = others.block_on(instance(2, &url));

    one.block_on(async {
        assert!(
            wait_done(&[&i1, &i2], &calls, Duration::from_secs(60)).await,
            "the declined call is served before the claim timeout: {:?}",
            pa.stats()
        );
        let by = owners(&[&i1, &i2]);
        assert_eq!(by.get(&calls[0]), Some(&2), "served by instance 2");
        let s1 = i1.cluster.stats();
        assert!(s1.claims_declined >= 1, "{s1:?}");
        assert_eq!(s1.calls_taken, 0, "{s1:?}");
        assert_eq!(i2.cluster.stats().calls_taken, 1);
        let stats = pa.stats();
        assert_eq!(
            (stats.calls_claimed, stats.calls_unclaimed),
            (1, 0),
            "{stats:?}"
        );
    });
    // Dropped where a runtime runs (a NATS subscription unsubscribes on a task).
    one.block_on(async move { drop(i1) });
    others.block_on(async move { drop((i2, pa, offers, _watcher)) });
}
