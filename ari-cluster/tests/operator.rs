//! What an operator running several nodes and instances meets: NATS restarting with calls in
//! flight, an instance joining mid-call, a proxy restarting, REST while a node fails over.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_client::events::{ChannelDtmfReceived, StasisStart};
use ari_cluster::Cluster;
use common::*;

/// Per instance: how each call's wait for a digit ended, and every digit event its client
/// saw (any channel).
#[derive(Default, Debug)]
struct Log {
    outcomes: BTreeMap<String, String>,
    digits_seen: Vec<String>,
}

struct Waiter {
    cluster: Cluster,
    client: ari_cluster::Client,
    log: Arc<Mutex<Log>>,
}

/// An instance whose handler waits for one digit on each call; its client also logs every
/// digit event it receives (as an application's global handler would).
async fn waiter(nats: &str) -> Waiter {
    let cluster = Cluster::connect(nats).await.expect("instance connects");
    let client = cluster.client().expect("client");
    let log: Arc<Mutex<Log>> = Arc::default();
    let l = log.clone();
    client.on(move |_s: StasisStart, channel| {
        let l = l.clone();
        async move {
            let id = channel.id().to_string();
            l.lock()
                .unwrap()
                .outcomes
                .insert(id.clone(), "waiting".into());
            let how = match channel.once::<ChannelDtmfReceived>().await {
                Ok(d) => format!("digit {}", d.digit),
                Err(ari_client::Error::Ended { .. }) => "ended".to_string(),
                Err(e) => format!("error: {e}"),
            };
            l.lock().unwrap().outcomes.insert(id, how);
        }
    });
    let l = log.clone();
    client.on(move |d: ChannelDtmfReceived, _channel| {
        let l = l.clone();
        async move {
            l.lock().unwrap().digits_seen.push(d.channel.id.to_string());
        }
    });
    client.start(&[APP]).await.expect("instance starts");
    Waiter {
        cluster,
        client,
        log,
    }
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outcome(w: &Waiter, call: &str) -> Option<String> {
    w.log.lock().unwrap().outcomes.get(call).cloned()
}

fn waiting_on<'a>(ws: &'a [&'a Waiter], call: &str) -> Vec<&'a Waiter> {
    ws.iter()
        .copied()
        .filter(|w| outcome(w, call).is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_survive_a_nats_restart() {
    let mut nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let w1 = waiter(&nats.url()).await;
    let w2 = waiter(&nats.url()).await;
    let calls = place_calls(&a, "n", 6);
    wait_until("every call waits", Duration::from_secs(30), || {
        calls.iter().all(|c| waiting_on(&[&w1, &w2], c).len() == 1)
    })
    .await;

    nats.restart().expect("nats-server restarts");
    assert!(w1.cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    // Both instances resubscribed: a probe-free signal is a new call being taken.
    let after = place_calls(&a, "after", 2);
    wait_until(
        "calls after the restart are taken",
        Duration::from_secs(30),
        || after.iter().all(|c| waiting_on(&[&w1, &w2], c).len() == 1),
    )
    .await;

    for c in &calls {
        a.send_dtmf(c, "3").expect("dtmf");
    }
    wait_until(
        "the calls in flight get their digit after the restart",
        Duration::from_secs(30),
        || {
            calls.iter().all(|c| {
                waiting_on(&[&w1, &w2], c)
                    .iter()
                    .any(|w| outcome(w, c).as_deref() == Some("digit 3"))
            })
        },
    )
    .await;
    assert_eq!(pa.stats().instances_lost, 0, "{:?}", pa.stats());
    // Each digit reached its call's instance only.
    for c in &calls {
        let seen = [&w1, &w2]
            .iter()
            .filter(|w| w.log.lock().unwrap().digits_seen.contains(c))
            .count();
        assert_eq!(seen, 1, "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joining_mid_call_does_not_get_the_calls_of_the_others() {
    let nats = nats();
    let a = node("node-a");
    let _pa = proxy(&a, &nats.url()).await;
    let w1 = waiter(&nats.url()).await;
    let calls = place_calls(&a, "j", 3);
    wait_until(
        "instance 1 waits on every call",
        Duration::from_secs(30),
        || {
            calls
                .iter()
                .all(|c| outcome(&w1, c).as_deref() == Some("waiting"))
        },
    )
    .await;
    let w2 = waiter(&nats.url()).await;
    for c in &calls {
        a.send_dtmf(c, "4").expect("dtmf");
    }
    wait_until(
        "instance 1 gets its digits",
        Duration::from_secs(30),
        || {
            calls
                .iter()
                .all(|c| outcome(&w1, c).as_deref() == Some("digit 4"))
        },
    )
    .await;
    assert!(
        w2.log.lock().unwrap().digits_seen.is_empty(),
        "{:?}",
        w2.log.lock().unwrap()
    );
    // New calls are shared between both.
    let more = place_calls(&a, "m", 8);
    wait_until("new calls are taken", Duration::from_secs(30), || {
        more.iter().all(|c| waiting_on(&[&w1, &w2], c).len() == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_keeps_sending_each_calls_events_to_its_instance() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let w1 = waiter(&nats.url()).await;
    let w2 = waiter(&nats.url()).await;
    let calls = place_calls(&a, "p", 6);
    wait_until("every call waits", Duration::from_secs(30), || {
        calls.iter().all(|c| waiting_on(&[&w1, &w2], c).len() == 1)
    })
    .await;

    // The proxy process restarts (a deploy): a new one for the same Asterisk.
    pa.stop().await;
    let pa2 = proxy(&a, &nats.url()).await;
    assert!(
        pa2.stats().resources_recovered >= 6,
        "the instances gave back their calls: {:?}",
        pa2.stats()
    );
    assert!(w1.cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    for c in &calls {
        a.send_dtmf(c, "6").expect("dtmf");
    }
    wait_until(
        "each call's wait gets its digit",
        Duration::from_secs(30),
        || {
            calls.iter().all(|c| {
                waiting_on(&[&w1, &w2], c)
                    .iter()
                    .any(|w| outcome(w, c).as_deref() == Some("digit 6"))
            })
        },
    )
    .await;
    // Each digit reached its call's instance only, not every instance.
    for c in &calls {
        let seen: Vec<usize> = [&w1, &w2]
            .iter()
            .enumerate()
            .filter(|(_, w)| w.log.lock().unwrap().digits_seen.contains(c))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(seen.len(), 1, "{c} seen by instances {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_an_instance_that_dies_while_its_proxy_restarts_are_handed_over() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    // Instance 1 takes three calls, instance 2 three others.
    let w1 = waiter(&nats.url()).await;
    let of_w1 = place_calls(&a, "orphan", 3);
    wait_until(
        "instance 1 takes its calls",
        Duration::from_secs(30),
        || of_w1.iter().all(|c| outcome(&w1, c).is_some()),
    )
    .await;
    let w2 = waiter(&nats.url()).await;
    w1.cluster.stop_taking_calls();
    let of_w2 = place_calls(&a, "kept", 3);
    wait_until(
        "instance 2 takes its calls",
        Duration::from_secs(30),
        || of_w2.iter().all(|c| outcome(&w2, c).is_some()),
    )
    .await;
    let calls: Vec<String> = of_w1.iter().chain(&of_w2).cloned().collect();

    // The node's proxy restarts (a deploy) and, while it is away, instance 1 crashes: the
    // new proxy never learns who owned instance 1's calls.
    pa.stop().await;
    w1.cluster.close().await;
    let pa2 = proxy(&a, &nats.url()).await;
    let w3 = waiter(&nats.url()).await;

    // Instance 1's calls are handed over to a live instance; instance 2's stay with it.
    wait_until(
        "instance 1's calls are handed over",
        Duration::from_secs(30),
        || {
            of_w1.iter().all(|c| {
                waiting_on(&[&w2, &w3], c)
                    .iter()
                    .any(|w| outcome(w, c).as_deref() == Some("waiting"))
            })
        },
    )
    .await;
    for c in &calls {
        a.send_dtmf(c, "3").expect("dtmf");
    }
    wait_until(
        "each call's digit reaches the live instance serving it",
        Duration::from_secs(30),
        || {
            calls.iter().all(|c| {
                waiting_on(&[&w2, &w3], c)
                    .iter()
                    .any(|w| outcome(w, c).as_deref() == Some("digit 3"))
            })
        },
    )
    .await;
    for c in &calls {
        let seen = [&w2, &w3]
            .iter()
            .filter(|w| w.log.lock().unwrap().digits_seen.contains(c))
            .count();
        assert_eq!(seen, 1, "{c}: its digit reached one instance");
        let serving = waiting_on(&[&w2, &w3], c).len();
        assert_eq!(serving, 1, "{c}: served by one live instance");
    }
    let stats = pa2.stats();
    assert_eq!(stats.calls_handed_over, of_w1.len() as u64, "{stats:?}");
    assert_eq!(
        stats.unowned_calls_handed_over,
        of_w1.len() as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.resources_recovered as usize,
        calls.len() - of_w1.len(),
        "instance 2 kept its calls: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_on_the_live_node_works_while_the_other_fails_over() {
    let nats = nats();
    let a = node("node-a");
    let b = node("node-b");
    let pa = proxy(&a, &nats.url()).await;
    let pb = proxy(&b, &nats.url()).await;
    let w = waiter(&nats.url()).await;
    assert!(w.cluster.wait_for_nodes(2, Duration::from_secs(30)).await);
    let on_a = place_calls(&a, "fa", 1);
    let on_b = place_calls(&b, "fb", 1);
    wait_until("both calls wait", Duration::from_secs(30), || {
        outcome(&w, &on_a[0]).is_some() && outcome(&w, &on_b[0]).is_some()
    })
    .await;

    // Node b's proxy dies; while it is being found down, REST goes on.
    drop(pb);
    let ch_a = w.client.channels().get(&on_a[0]).await.expect("a's call");
    assert_eq!(ch_a.id(), on_a[0]);
    let err = w
        .client
        .channels()
        .get(&on_b[0])
        .await
        .expect_err("b's call is unreachable");
    assert!(
        ari_cluster::NodeDown::find(&err).is_some()
            || matches!(&err, ari_client::Error::Transport(_)),
        "{err}"
    );
    // Creations go to the live node.
    for _ in 0..5 {
        let bridge = w.client.bridges().create().await.expect("bridge on a");
        assert_eq!(
            w.cluster
                .node_of(ari_client::events::ResourceKind::Bridge, bridge.id())
                .as_deref(),
            Some("node-a")
        );
    }
    // Node b's proxy comes back: its call is reachable again.
    let _pb2 = proxy(&b, &nats.url()).await;
    assert!(w.cluster.wait_for_nodes(2, Duration::from_secs(30)).await);
    let ch_b = w
        .client
        .channels()
        .get(&on_b[0])
        .await
        .expect("b's call again");
    assert_eq!(ch_b.id(), on_b[0]);
    drop(pa);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_of_one_node_during_a_rolling_deploy_run_each_request_once() {
    let nats = nats();
    let a = node("node-a");
    // The new proxy starts before the old one stops (a rolling deploy).
    let old = proxy(&a, &nats.url()).await;
    let w = waiter(&nats.url()).await;
    assert!(w.cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    // The application moves to the new proxy's connection (Asterisk sends the old one
    // ApplicationReplaced): that is the proxies' business, not the instances'.
    let replaced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = replaced.clone();
    w.client
        .on(move |_e: ari_client::events::ApplicationReplaced, ()| {
            let r = r.clone();
            async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    let new = proxy(&a, &nats.url()).await;
    // Asterisk moved the application to the new proxy: the old one stops serving REST, so
    // that the proxy that gets the events learns what each request creates.
    wait_until(
        "the old proxy loses the application",
        Duration::from_secs(30),
        || old.stats().apps_replaced == 1,
    )
    .await;
    // It has left REST once the requests NATS had already sent it are read (answered, not
    // dropped): from then on none reaches it.
    wait_until(
        "the old proxy has left REST",
        Duration::from_secs(30),
        || old.stats().rest_retired,
    )
    .await;
    assert!(!new.stats().rest_retired);
    let old_rest = old.stats().rest_requests;
    a.clear_requests();
    let on_a = w.cluster.client_on("node-a").expect("client on node a");
    for _ in 0..10 {
        on_a.bridges().create().await.expect("bridge");
        w.client.bridges().create().await.expect("bridge");
    }
    let created = a
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "bridges")
        .count();
    assert_eq!(created, 20, "each creation reached Asterisk once");
    assert_eq!(
        old.stats().rest_requests,
        old_rest,
        "the replaced proxy served no request"
    );
    assert!(new.stats().owned_resources >= 20, "{:?}", new.stats());

    let calls = place_calls(&a, "d", 3);
    wait_until("the calls are served", Duration::from_secs(30), || {
        calls
            .iter()
            .all(|c| outcome(&w, c).as_deref() == Some("waiting"))
    })
    .await;
    // The old proxy stops: the new one keeps the application.
    let old_stats = old.stats();
    old.stop().await;
    for c in &calls {
        a.send_dtmf(c, "2").expect("dtmf");
    }
    wait_until("the digits arrive", Duration::from_secs(30), || {
        calls
            .iter()
            .all(|c| outcome(&w, c).as_deref() == Some("digit 2"))
    })
    .await;
    let more = place_calls(&a, "e", 2);
    wait_until(
        "new calls after the old proxy stopped",
        Duration::from_secs(30),
        || {
            more.iter()
                .all(|c| outcome(&w, c).as_deref() == Some("waiting"))
        },
    )
    .await;
    assert_eq!(replaced.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(old_stats.apps_replaced, 1, "{old_stats:?}");
    assert!(new.stats().events_in > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_go_to_a_node_whose_asterisk_is_up() {
    let nats = nats();
    let a = node("node-a");
    let b = node("node-b");
    let _pa = proxy(&a, &nats.url()).await;
    let _pb = proxy(&b, &nats.url()).await;
    let w = waiter(&nats.url()).await;
    assert!(w.cluster.wait_for_nodes(2, Duration::from_secs(30)).await);

    // Node b's Asterisk stops; its proxy stays up (and says so in its announcements).
    let port_b = b.port();
    drop(b);
    wait_until(
        "node b's link is reported down",
        Duration::from_secs(30),
        || {
            w.cluster
                .nodes()
                .iter()
                .any(|n| n.id == "node-b" && !n.connected)
        },
    )
    .await;
    for i in 0..10 {
        let bridge = w
            .client
            .bridges()
            .create()
            .await
            .unwrap_or_else(|e| panic!("creation {i} failed: {e}"));
        assert_eq!(
            w.cluster
                .node_of(ari_client::events::ResourceKind::Bridge, bridge.id())
                .as_deref(),
            Some("node-a")
        );
    }

    // Back: node b takes creations again.
    let b2 = ari_testkit::MockServer::builder()
        .asterisk_id("node-b")
        .port(port_b)
        .start();
    assert!(b2.wait_for_app(APP, Duration::from_secs(30)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let bridge = w.client.bridges().create().await.expect("bridge");
        if w.cluster
            .node_of(ari_client::events::ResourceKind::Bridge, bridge.id())
            .as_deref()
            == Some("node-b")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node b serves creations again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_separated_list_of_nats_servers_is_accepted() {
    let nats = nats();
    // The servers of a NATS cluster, one of them down (nothing listens on its port).
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let down_port = down.local_addr().expect("port").port();
    drop(down);
    let list = format!("nats://127.0.0.1:{down_port}, {}", nats.url());
    let a = node("node-a");
    let _pa = proxy(&a, &list).await;
    let inst = instance(1, &list).await;
    assert!(
        inst.cluster
            .wait_for_nodes(1, Duration::from_secs(30))
            .await
    );
    let calls = place_calls(&a, "list", 2);
    assert!(wait_done(&[&inst], &calls, Duration::from_secs(30)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_answer_larger_than_nats_max_payload_fails_at_once_saying_why() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let cluster = Cluster::connect(&nats.url())
        .await
        .expect("instance connects");
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    // A client whose requests would wait an hour for an answer that never comes.
    let client = ari_client::Client::builder_with_runtime(
        "http://ari-cluster.invalid",
        "cluster",
        "cluster",
        cluster.runtime().clone(),
    )
    .request_timeout(Duration::from_secs(3600))
    .build()
    .expect("client");
    // A recording's file of 1.5 MB (over a minute of 8 kHz wav): more than NATS's default
    // max_payload of 1 MB once in its RESTResponse.
    let _big = a.expect("GET", "recordings/stored/long/file").respond_raw(
        200,
        "audio/wav",
        vec![7u8; 1_500_000],
    );
    let _small = a.expect("GET", "recordings/stored/short/file").respond_raw(
        200,
        "audio/wav",
        vec![7u8; 100_000],
    );
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        client.recordings().get_stored_file("long"),
    )
    .await
    .expect("answered, not left to its timeout")
    .expect_err("too large for NATS");
    assert_eq!(err.status(), Some(502), "{err}");
    assert!(err.to_string().contains("max_payload"), "{err}");
    assert_eq!(pa.stats().rest_too_large, 1);
    // A file that fits arrives whole.
    let file = client
        .recordings()
        .get_stored_file("short")
        .await
        .expect("a file under max_payload");
    assert_eq!(file.len(), 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_call_not_taken_yet_does_not_make_the_reader_its_owner() {
    let nats = nats();
    let a = node("node-a");
    let mut config = proxy_config(&a, &nats.url());
    config.announce_interval = Duration::from_millis(100);
    // The call waits for an instance (offered again for up to 9 s).
    config.claim_timeout = Duration::from_secs(3);
    let pa = start_proxy(&a, config).await;
    // A dashboard: an instance that only reads (it takes no calls).
    let dashboard = Cluster::connect(&nats.url()).await.expect("connects");
    let rest = dashboard.client().expect("client");
    assert!(dashboard.wait_for_nodes(1, Duration::from_secs(30)).await);

    // A new call no instance has taken yet; the dashboard looks at it.
    let call = place_calls(&a, "seen", 1).remove(0);
    let (status, _) = rest
        .send_raw(http::Method::GET, &format!("channels/{call}"), None)
        .await
        .expect("the channel");
    assert_eq!(status, 200);

    // The application's instance starts: it takes the call and gets its events.
    let w = waiter(&nats.url()).await;
    wait_until(
        "the call's StasisStart reaches the instance that takes it",
        Duration::from_secs(30),
        || outcome(&w, &call).as_deref() == Some("waiting"),
    )
    .await;
    a.send_dtmf(&call, "4").expect("dtmf");
    wait_until("its later events too", Duration::from_secs(30), || {
        outcome(&w, &call).as_deref() == Some("digit 4")
    })
    .await;
    let stats = pa.stats();
    assert_eq!(stats.calls_claimed, 1, "{stats:?}");
    assert_eq!(stats.instances_lost, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_crashing_instances_keeps_each_call_served_by_one_live_instance() {
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let w1 = waiter(&nats.url()).await;
    let w2 = waiter(&nats.url()).await;
    let calls = place_calls(&a, "roll", 6);
    wait_until("every call waits", Duration::from_secs(30), || {
        calls.iter().all(|c| waiting_on(&[&w1, &w2], c).len() == 1)
    })
    .await;

    // Each instance in turn is replaced by a new one, without a graceful stop (a crash, an
    // OOM kill): its calls go on with a live instance, each with one.
    // The proxy counts a lost instance when it owned something: which calls each one takes
    // is decided by their claims (all six may go to one).
    let serves = |w: &Waiter| {
        calls
            .iter()
            .any(|c| outcome(w, c).as_deref() == Some("waiting"))
    };
    let mut owners_lost = u64::from(serves(&w1));
    let w3 = waiter(&nats.url()).await;
    w1.cluster.close().await;
    wait_until(
        "the first instance's calls are handed over",
        Duration::from_secs(30),
        || calls.iter().all(|c| waiting_on(&[&w2, &w3], c).len() == 1),
    )
    .await;
    let w4 = waiter(&nats.url()).await;
    owners_lost += u64::from(serves(&w2));
    w2.cluster.close().await;
    wait_until(
        "the second instance's calls are handed over",
        Duration::from_secs(30),
        || {
            calls.iter().all(|c| {
                waiting_on(&[&w3, &w4], c)
                    .iter()
                    .filter(|w| outcome(w, c).as_deref() == Some("waiting"))
                    .count()
                    == 1
            })
        },
    )
    .await;

    for c in &calls {
        a.send_dtmf(c, "5").expect("dtmf");
    }
    wait_until(
        "each call's digit reaches the live instance serving it",
        Duration::from_secs(30),
        || {
            calls.iter().all(|c| {
                waiting_on(&[&w3, &w4], c)
                    .iter()
                    .any(|w| outcome(w, c).as_deref() == Some("digit 5"))
            })
        },
    )
    .await;
    for c in &calls {
        let seen = [&w3, &w4]
            .iter()
            .filter(|w| w.log.lock().unwrap().digits_seen.contains(c))
            .count();
        assert_eq!(seen, 1, "{c}: its digit reached one instance");
    }
    let stats = pa.stats();
    assert_eq!(stats.instances_lost, owners_lost, "{stats:?}");
    assert!(owners_lost >= 1);
    assert_eq!(stats.calls_unclaimed, 0, "{stats:?}");
    assert!(stats.calls_handed_over >= 6, "{stats:?}");
}

/// A TCP relay to NATS that can cut its connections and refuse new ones for a while: a
/// network partition of the instances connected through it.
struct Relay {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn to(port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay listens");
        let relay = Relay {
            port: listener.local_addr().expect("address").port(),
            cut: Arc::default(),
            conns: Arc::default(),
        };
        let (cut, conns) = (relay.cut.clone(), relay.conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns.lock().unwrap().push(task);
            }
        });
        relay
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn partition(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_by_a_partition_gets_its_calls_back_never() {
    use futures_util::StreamExt;
    let nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let relay = Relay::to(nats.port()).await;
    let w1 = waiter(&relay.url()).await;
    let calls = place_calls(&a, "part", 2);
    wait_until(
        "instance 1 takes the calls",
        Duration::from_secs(30),
        || calls.iter().all(|c| outcome(&w1, c).is_some()),
    )
    .await;
    let w2 = waiter(&nats.url()).await;
    let mut w1_connection = w1.client.connection_events();

    // Instance 1 is cut off from NATS long enough for the proxy to find it gone: its calls
    // go to instance 2.
    relay.partition();
    wait_until(
        "instance 1's calls are handed over to instance 2",
        Duration::from_secs(30),
        || calls.iter().all(|c| outcome(&w2, c).is_some()),
    )
    .await;
    // Instance 1 comes back.
    relay.heal();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = w1_connection.next().await {
            if let Ok(ari_client::ConnectionEvent::Connected { .. }) = ev {
                break;
            }
        }
    })
    .await
    .expect("instance 1 reconnects");

    // The calls' digits reach instance 2 only; instance 1's requests on them are refused.
    for c in &calls {
        a.send_dtmf(c, "7").expect("dtmf");
    }
    wait_until(
        "instance 2 gets the digits",
        Duration::from_secs(30),
        || {
            calls
                .iter()
                .all(|c| outcome(&w2, c).as_deref() == Some("digit 7"))
        },
    )
    .await;
    for c in &calls {
        assert!(
            !w1.log.lock().unwrap().digits_seen.contains(c),
            "{c}: instance 1 still gets the call's events"
        );
        let err = w1
            .client
            .channel(c)
            .answer()
            .await
            .expect_err("instance 1 controls the call no more");
        assert!(err.to_string().contains("handed over"), "{err}");
    }
    // Refused, instance 1 stops serving them: its handler's waits on them end.
    wait_until(
        "instance 1's waits on the calls end",
        Duration::from_secs(30),
        || {
            calls
                .iter()
                .all(|c| outcome(&w1, c).as_deref() == Some("ended"))
        },
    )
    .await;
    let stats = pa.stats();
    assert_eq!(stats.calls_handed_over, 2, "{stats:?}");
    assert_eq!(stats.rest_handed_over, 2, "{stats:?}");

    // The node's proxy restarts and asks the instances which calls they own: instance 1,
    // back from the partition, claims none of them (it was cut off long enough to have been
    // found gone), so their events keep going to instance 2.
    drop(pa);
    let _pa2 = proxy(&a, &nats.url()).await;
    for c in &calls {
        a.send_dtmf(c, "9").expect("dtmf");
    }
    wait_until(
        "instance 2 gets the digits after the proxy's restart",
        Duration::from_secs(30),
        || {
            let seen = w2.log.lock().unwrap().digits_seen.clone();
            calls
                .iter()
                .all(|c| seen.iter().filter(|s| *s == c).count() == 2)
        },
    )
    .await;
    for c in &calls {
        assert!(
            !w1.log.lock().unwrap().digits_seen.contains(c),
            "{c}: the restarted proxy gave the call back to instance 1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_longer_than_the_absence_limit_hands_no_call_over() {
    let mut nats = nats();
    let a = node("node-a");
    let pa = proxy(&a, &nats.url()).await;
    let w1 = waiter(&nats.url()).await;
    let w2 = waiter(&nats.url()).await;
    let calls = place_calls(&a, "outage", 6);
    wait_until("every call waits", Duration::from_secs(30), || {
        calls.iter().all(|c| waiting_on(&[&w1, &w2], c).len() == 1)
    })
    .await;

    // NATS is down for longer than a proxy needs to find an instance gone (2 s): everyone
    // was away together, so nobody is gone.
    nats.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.restart().expect("nats-server restarts");
    assert!(w1.cluster.wait_for_nodes(1, Duration::from_secs(30)).await);
    let after = place_calls(&a, "after-outage", 2);
    wait_until(
        "calls after the outage are taken",
        Duration::from_secs(30),
        || after.iter().all(|c| waiting_on(&[&w1, &w2], c).len() == 1),
    )
    .await;
    for c in &calls {
        a.send_dtmf(c, "4").expect("dtmf");
    }
    wait_until(
        "the calls in flight get their digit at their instance",
        Duration::from_secs(30),
        || {
            calls.iter().all(|c| {
                waiting_on(&[&w1, &w2], c)
                    .iter()
                    .any(|w| outcome(w, c).as_deref() == Some("digit 4"))
            })
        },
    )
    .await;
    for c in &calls {
        assert_eq!(waiting_on(&[&w1, &w2], c).len(), 1, "{c} served once");
    }
    let stats = pa.stats();
    assert_eq!(stats.instances_lost, 0, "{stats:?}");
    assert_eq!(stats.calls_handed_over, 0, "{stats:?}");
}
