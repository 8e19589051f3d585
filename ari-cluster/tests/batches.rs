//! Event batches: the proxy publishes the frames it has read as batches per subject; an
//! instance splits them and feeds its session in order.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_client::events::ResourceKind;
use ari_cluster::wire::{self, BatchWriter, Subjects};
use ari_cluster::{Client, Cluster};
use bytes::Bytes;
use futures_util::StreamExt;

use common::*;

/// A channel as Asterisk sends it in events.
fn channel_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "name": format!("PJSIP/alice-{id}"), "state": "Up", "protocol_id": "",
        "caller": {"name": "Alice", "number": "100"}, "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {"context": "default", "exten": "s", "priority": 1, "app_name": "Stasis",
                     "app_data": ""},
        "creationtime": "2026-11-26T12:14:21.059+0000", "language": "en"
    })
}

fn varset(channel: &str, value: usize, padding: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "ChannelVarset", "application": APP, "variable": "SEQ",
        "value": value.to_string(), "channel": channel_json(channel),
        "padding": "x".repeat(padding),
    })
}

/// An instance that only records what it receives: (type, channel or device, value).
struct Recorder {
    cluster: Cluster,
    client: Client,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

async fn recorder(nats: &str) -> Recorder {
    let cluster = Cluster::connect(nats).await.expect("instance connects");
    let client = cluster.client().expect("client");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut all = client.event_stream();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(ev) = all.next().await {
            let Ok(ev) = ev else { continue };
            let v = serde_json::to_value(&ev).expect("event encodes");
            let what = v["channel"]["id"]
                .as_str()
                .or(v["device_state"]["name"].as_str())
                .unwrap_or("")
                .to_string();
            let value = v["value"].as_str().unwrap_or("").to_string();
            s.lock()
                .unwrap()
                .push((ev.type_name().to_string(), what, value));
        }
    });
    client.start(&[APP]).await.expect("instance starts");
    Recorder {
        cluster,
        client,
        seen,
    }
}

impl Recorder {
    fn count(&self, ty: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == ty)
            .count()
    }

    /// Values of the `ChannelVarset`s of `channel`, in arrival order.
    fn values(&self, channel: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, c, _)| t == "ChannelVarset" && c == channel)
            .map(|(_, _, v)| v.clone())
            .collect()
    }
}

/// Waits (bounded) until `done` holds.
async fn until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_batches_are_split_in_order_and_malformed_ones_counted() {
    let nats = nats();
    let server = node("node-a");
    let proxy = proxy(&server, &nats.url()).await;
    let inst = recorder(&nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );
    let bus = async_nats::connect(nats.url()).await.expect("NATS");
    let subject = Subjects::default().instance(inst.cluster.instance_id());
    let send = |headers: Vec<(&'static str, String)>, payload: Bytes| {
        let bus = bus.clone();
        let subject = subject.clone();
        async move {
            let mut h = async_nats::HeaderMap::new();
            for (k, v) in headers {
                h.insert(k, v.as_str());
            }
            bus.publish_with_headers(subject, h, payload)
                .await
                .expect("published");
            bus.flush().await.expect("flushed");
        }
    };
    let batch = |values: std::ops::Range<usize>, finals: bool| {
        let mut w = BatchWriter::new();
        let last = values.end - 1;
        for v in values {
            let frame = varset("x-1", v, 0).to_string();
            let fin = if finals && v == last { "c:x-1" } else { "" };
            w.push(frame.as_bytes(), "c:x-1", fin).expect("fits");
        }
        w.take()
    };
    let node = |n: &str| (wire::NODE_HEADER, n.to_string());

    let (n, first) = batch(0..3, false);
    send(
        vec![node("node-z"), (wire::BATCH_HEADER, n.to_string())],
        first,
    )
    .await;
    // Learnt from the batch's records: x-1 lives on node-z.
    assert!(until(|| inst.values("x-1").len() == 3).await);
    assert_eq!(
        inst.cluster
            .node_of(ResourceKind::Channel, "x-1")
            .as_deref(),
        Some("node-z")
    );
    // Malformed: cut short, a count that is no number, a count the payload does not hold.
    let (n, second) = batch(3..6, true);
    send(
        vec![node("node-z"), (wire::BATCH_HEADER, n.to_string())],
        second.slice(..second.len() - 2),
    )
    .await;
    send(
        vec![node("node-z"), (wire::BATCH_HEADER, "three".into())],
        second.clone(),
    )
    .await;
    send(
        vec![node("node-z"), (wire::BATCH_HEADER, "4".into())],
        second.clone(),
    )
    .await;
    // Then the same batch well formed (its last record ends x-1), then a single frame with
    // its resources in headers, as a message without batch header travels.
    send(
        vec![node("node-z"), (wire::BATCH_HEADER, n.to_string())],
        second,
    )
    .await;
    send(
        vec![node("node-y"), (wire::RESOURCES_HEADER, "c:x-2".into())],
        Bytes::from(varset("x-2", 6, 0).to_string()),
    )
    .await;

    assert!(until(|| inst.values("x-2").len() == 1).await);
    let want: Vec<String> = (0..6).map(|v| v.to_string()).collect();
    assert_eq!(
        inst.values("x-1"),
        want,
        "in order, the malformed batches dropped whole"
    );
    assert_eq!(inst.values("x-2"), vec!["6".to_string()]);
    let stats = inst.cluster.stats();
    assert_eq!(stats.malformed, 3, "{stats:?}");
    assert_eq!(stats.events, 7, "{stats:?}");
    assert_eq!(
        inst.cluster.node_of(ResourceKind::Channel, "x-1"),
        None,
        "ended"
    );
    assert_eq!(
        inst.cluster
            .node_of(ResourceKind::Channel, "x-2")
            .as_deref(),
        Some("node-y")
    );
    inst.client.close().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_each_owner_in_order_across_batch_boundaries() {
    const CALLS: usize = 20;
    const ROUNDS: usize = 40;
    let nats = nats();
    let server = node("node-a");
    let proxy = proxy(&server, &nats.url()).await;
    let one = recorder(&nats.url()).await;
    let two = recorder(&nats.url()).await;
    for i in [&one, &two] {
        assert!(i.cluster.wait_for_nodes(1, Duration::from_secs(10)).await);
    }
    let channels: Vec<String> = (0..CALLS).map(|i| format!("burst-{i}")).collect();
    for ch in &channels {
        server.push_event(
            APP,
            serde_json::json!({"type": "StasisStart", "args": [], "channel": channel_json(ch)}),
        );
    }
    assert!(until(|| one.count("StasisStart") + two.count("StasisStart") == CALLS).await);
    let before = proxy.stats();

    // A burst written at once: each call's variable set ROUNDS times (every 97th frame over
    // 64 KiB, so it closes its batch), a device state no call owns every 50th frame.
    server.pause_sends(APP);
    let mut frames = 0;
    let mut devices = 0;
    for round in 0..ROUNDS {
        for ch in &channels {
            let padding = if frames % 97 == 0 { 70_000 } else { 0 };
            server.push_event(APP, varset(ch, round, padding));
            frames += 1;
            if frames % 50 == 0 {
                server.push_event(
                    APP,
                    serde_json::json!({"type": "DeviceStateChanged", "application": APP,
                        "device_state": {"name": format!("dev-{devices}"), "state": "INUSE"}}),
                );
                devices += 1;
            }
        }
    }
    server.resume_sends(APP);
    let total = CALLS * ROUNDS;
    assert!(
        until(
            || one.count("ChannelVarset") + two.count("ChannelVarset") == total
                && one.count("DeviceStateChanged") == devices
                && two.count("DeviceStateChanged") == devices
        )
        .await,
        "every frame arrives"
    );

    let owner_of: BTreeMap<&String, &Recorder> = channels
        .iter()
        .map(|ch| {
            let takers: Vec<&Recorder> = [&one, &two]
                .into_iter()
                .filter(|r| {
                    r.seen
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(t, c, _)| t == "StasisStart" && c == ch)
                })
                .collect();
            assert_eq!(takers.len(), 1, "{ch} taken by exactly one instance");
            (ch, takers[0])
        })
        .collect();
    let want: Vec<String> = (0..ROUNDS).map(|v| v.to_string()).collect();
    for (ch, owner) in &owner_of {
        assert_eq!(
            owner.values(ch),
            want,
            "{ch}: every event, in order, at its owner"
        );
        let other = if std::ptr::eq(*owner, &one) {
            &two
        } else {
            &one
        };
        assert!(other.values(ch).is_empty(), "{ch}: nothing at the other");
    }
    // The unowned events reach both, in order.
    let want: Vec<String> = (0..devices).map(|d| format!("dev-{d}")).collect();
    for r in [&one, &two] {
        let got: Vec<String> = r
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == "DeviceStateChanged")
            .map(|(_, d, _)| d.clone())
            .collect();
        assert_eq!(got, want);
        assert_eq!(r.cluster.stats().malformed, 0);
    }
    let after = proxy.stats();
    let out = after.events_out - before.events_out;
    assert_eq!(out as usize, total + devices, "one frame out per frame in");
    let messages = after.event_messages - before.event_messages;
    assert!(
        messages >= 1 && messages <= out,
        "{messages} messages for {out} frames"
    );
    eprintln!("{out} frames in {messages} NATS messages");
    one.client.close().await;
    two.client.close().await;
    proxy.stop().await;
}

/// The next offer of a new call.
async fn next_offer(offers: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(30), offers.next())
        .await
        .expect("an offer within 30 s")
        .expect("subscribed")
}

/// The frames of the next event messages, until at least `n` have come.
async fn at_least_frames(
    sub: &mut async_nats::Subscriber,
    n: usize,
) -> Vec<(String, String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        got.extend(next_frames(sub).await);
    }
    got
}

/// The frames of the next event message on `sub` (a batch or a single frame), as
/// (type, channel id, value).
async fn next_frames(sub: &mut async_nats::Subscriber) -> Vec<(String, String, String)> {
    let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("an event message within 30 s")
        .expect("subscribed");
    let frames: Vec<Bytes> = match msg.headers.as_ref().and_then(|h| h.get(wire::BATCH_HEADER)) {
        Some(n) => wire::decode_batch(n.as_str(), &msg.payload)
            .expect("a batch")
            .into_iter()
            .map(|r| r.frame)
            .collect(),
        None => vec![msg.payload.clone()],
    };
    frames
        .iter()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_slice(f).expect("JSON frame");
            let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_string();
            (s(&v["type"]), s(&v["channel"]["id"]), s(&v["value"]))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_holds_only_its_own_call() {
    let nats = nats();
    let server = node("node-a");
    let mut config = proxy_config(&server, &nats.url());
    // Long enough that a proxy holding every event behind an offer would show it.
    config.claim_timeout = Duration::from_secs(120);
    let proxy = start_proxy(&server, config).await;

    // A hand-driven instance "raw-1": it takes offers when this test answers them.
    let bus = async_nats::connect(nats.url()).await.expect("NATS");
    let subjects = Subjects::default();
    let mut offers = bus
        .queue_subscribe(subjects.claim(APP), wire::token(APP))
        .await
        .expect("offers");
    let mut mine = bus
        .subscribe(subjects.instance("raw-1"))
        .await
        .expect("events");
    bus.flush().await.expect("flushed");
    server.push_event(
        APP,
        serde_json::json!({"type": "StasisStart", "args": [], "channel": channel_json("call-a")}),
    );
    let a = next_offer(&mut offers).await;
    bus.publish(a.reply.expect("reply subject"), "raw-1".into())
        .await
        .expect("answered");
    assert_eq!(
        next_frames(&mut mine).await,
        vec![("StasisStart".into(), "call-a".into(), String::new())]
    );

    // Call B is offered and not answered; call A's events go on meanwhile, B's wait.
    server.push_event(
        APP,
        serde_json::json!({"type": "StasisStart", "args": [], "channel": channel_json("call-b")}),
    );
    let b = next_offer(&mut offers).await;
    server.push_event(APP, varset("call-b", 1, 0));
    server.push_event(APP, varset("call-a", 1, 0));
    server.push_event(APP, varset("call-a", 2, 0));
    let got = at_least_frames(&mut mine, 2).await;
    assert_eq!(
        got,
        vec![
            ("ChannelVarset".into(), "call-a".into(), "1".into()),
            ("ChannelVarset".into(), "call-a".into(), "2".into()),
        ],
        "only call A's events, while B's offer is unanswered"
    );
    assert_eq!(
        proxy.stats().events_held,
        3,
        "A's StasisStart, B's and B's event"
    );

    // Answered: B's StasisStart, then its event.
    bus.publish(b.reply.expect("reply subject"), "raw-1".into())
        .await
        .expect("answered");
    let got = at_least_frames(&mut mine, 2).await;
    assert_eq!(
        got,
        vec![
            ("StasisStart".into(), "call-b".into(), String::new()),
            ("ChannelVarset".into(), "call-b".into(), "1".into()),
        ]
    );
    let stats = proxy.stats();
    assert_eq!((stats.calls_claimed, stats.calls_unclaimed), (2, 0));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_nats_is_dropped_alone_and_the_others_arrive() {
    // Smaller than the proxy's batches (64 KiB) and than one of the events.
    const MAX_PAYLOAD: usize = 48 * 1024;
    const EVENTS: usize = 120;
    const BIG: usize = 60;
    let nats = match ari_cluster::nats_server::NatsServer::start_with_max_payload(MAX_PAYLOAD) {
        Ok(s) => s,
        Err(e) => panic!("these tests need nats-server: {e}"),
    };
    let server = node("node-a");
    let proxy = proxy(&server, &nats.url()).await;
    let inst = recorder(&nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );
    server.push_event(
        APP,
        serde_json::json!({"type": "StasisStart", "args": [], "channel": channel_json("big-1")}),
    );
    assert!(until(|| inst.count("StasisStart") == 1).await);

    // A burst for the one instance: ~2 KB events (more than one max_payload together), one
    // of them twice max_payload in the middle, the next one just under max_payload (it
    // travels in a message of its own).
    server.pause_sends(APP);
    for v in 0..EVENTS {
        let padding = match v {
            BIG => 2 * MAX_PAYLOAD,
            v if v == BIG + 1 => MAX_PAYLOAD - 2_000,
            _ => 1_000,
        };
        server.push_event(APP, varset("big-1", v, padding));
    }
    server.resume_sends(APP);
    let want: Vec<String> = (0..EVENTS)
        .filter(|v| *v != BIG)
        .map(|v| v.to_string())
        .collect();
    assert!(
        until(|| inst.values("big-1").len() >= want.len()).await,
        "every other event arrives: got {:?}; proxy {:?}",
        inst.values("big-1"),
        proxy.stats()
    );
    assert_eq!(
        inst.values("big-1"),
        want,
        "in order, only the large one missing"
    );
    let stats = proxy.stats();
    assert_eq!(stats.events_too_large, 1, "{stats:?}");
    assert_eq!(stats.publish_errors, 0, "{stats:?}");
    // The instance sees the dropped event as a lost message.
    assert!(
        until(|| inst.cluster.stats().event_messages_lost == 1).await,
        "{:?}",
        inst.cluster.stats()
    );
    assert_eq!(inst.cluster.stats().malformed, 0);
    inst.client.close().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_call_whose_stasis_start_is_too_large_for_nats_is_still_taken_by_one_instance() {
    const MAX_PAYLOAD: usize = 16 * 1024;
    let nats = match ari_cluster::nats_server::NatsServer::start_with_max_payload(MAX_PAYLOAD) {
        Ok(s) => s,
        Err(e) => panic!("these tests need nats-server: {e}"),
    };
    let server = node("node-a");
    let proxy = proxy(&server, &nats.url()).await;
    let inst = recorder(&nats.url()).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(10))
            .await
    );
    // A StasisStart with twice max_payload of arguments, then a small event of its channel.
    server.push_event(
        APP,
        serde_json::json!({"type": "StasisStart", "args": ["x".repeat(2 * MAX_PAYLOAD)],
                           "channel": channel_json("huge-1")}),
    );
    server.push_event(APP, varset("huge-1", 1, 0));
    assert!(
        until(|| inst.values("huge-1") == ["1"]).await,
        "the call's next event arrives: {:?}; proxy {:?}",
        inst.seen.lock().unwrap(),
        proxy.stats()
    );
    // Taken by the instance (its later events go to it alone), not left unclaimed; the
    // oversized StasisStart itself is dropped alone, counted on both sides.
    let stats = proxy.stats();
    assert_eq!(
        (stats.calls_claimed, stats.calls_unclaimed),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.events_too_large, 1, "{stats:?}");
    assert_eq!(inst.cluster.stats().calls_taken, 1);
    assert!(
        until(|| inst.cluster.stats().event_messages_lost == 1).await,
        "{:?}",
        inst.cluster.stats()
    );
    assert_eq!(inst.count("StasisStart"), 0);
    inst.client.close().await;
    proxy.stop().await;
}
