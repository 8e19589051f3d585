//! A cluster on loopback: nats-server, simulated Asterisks with their proxies, instances.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_client::events::StasisStart;
use ari_cluster::nats_server::NatsServer;
use ari_cluster::{Client, Cluster, Proxy, ProxyConfig};
use ari_testkit::MockServer;
use futures_util::StreamExt;

pub const APP: &str = "hello";

/// Starts nats-server, or fails the test saying how to install it.
pub fn nats() -> NatsServer {
    match NatsServer::start() {
        Ok(s) => s,
        Err(e) => panic!("these tests need nats-server: {e}"),
    }
}

pub fn node(id: &str) -> MockServer {
    MockServer::builder().asterisk_id(id).start()
}

/// A proxy of `server` for [`APP`], announcing itself every 100 ms, started and registered.
pub async fn proxy(server: &MockServer, nats: &str) -> Proxy {
    let mut config = proxy_config(server, nats);
    config.announce_interval = Duration::from_millis(100);
    start_proxy(server, config).await
}

/// The configuration of a proxy of `server` for [`APP`], otherwise the defaults.
pub fn proxy_config(server: &MockServer, nats: &str) -> ProxyConfig {
    ProxyConfig::new(
        &server.base_url(),
        server.username(),
        server.password(),
        nats,
        [APP],
    )
}

/// Starts a proxy of `server` with `config` and waits until it registered [`APP`].
pub async fn start_proxy(server: &MockServer, config: ProxyConfig) -> Proxy {
    let proxy = Proxy::start(config).await.expect("proxy starts");
    assert!(
        server.wait_for_app(APP, Duration::from_secs(10)),
        "the proxy registers {APP}"
    );
    proxy
}

/// What one instance saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Channels whose StasisStart this instance's handler ran for.
    pub handled: BTreeSet<String>,
    /// Channel ids named by each event received, with the event type.
    pub events: Vec<(String, Vec<String>)>,
    /// Calls whose handler finished (played, hung up).
    pub done: BTreeSet<String>,
    /// Handler errors, for the failure message.
    pub errors: Vec<String>,
}

/// One application instance: answers, plays a beep to its end, hangs up.
pub struct Instance {
    pub n: usize,
    pub cluster: Cluster,
    pub client: Client,
    pub seen: Arc<Mutex<Seen>>,
}

pub async fn instance(n: usize, nats: &str) -> Instance {
    let cluster = Cluster::connect(nats).await.expect("instance connects");
    let client = cluster.client().expect("client");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut all = client.event_stream();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(ev) = all.next().await {
            let Ok(ev) = ev else { continue };
            let channels: Vec<String> = ev
                .resources()
                .iter()
                .filter(|r| r.kind == ari_client::events::ResourceKind::Channel)
                .map(|r| r.id.to_string())
                .collect();
            s.lock()
                .unwrap()
                .events
                .push((ev.type_name().to_string(), channels));
        }
    });
    let s = seen.clone();
    client.on(move |_start: StasisStart, channel| {
        let s = s.clone();
        async move {
            let id = channel.id().to_string();
            s.lock().unwrap().handled.insert(id.clone());
            let run = async {
                channel.answer().await?;
                let playback = channel.play("sound:beep").await?;
                playback.finished().await?;
                channel.hangup().await?;
                Ok::<(), ari_client::Error>(())
            };
            match run.await {
                Ok(()) => s.lock().unwrap().done.insert(id),
                Err(e) => {
                    s.lock().unwrap().errors.push(format!("{id}: {e}"));
                    false
                }
            };
        }
    });
    client.start(&[APP]).await.expect("instance starts");
    Instance {
        n,
        cluster,
        client,
        seen,
    }
}

/// Places `n` calls into node `server` with channel ids `{prefix}-{i}`.
pub fn place_calls(server: &MockServer, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let mut call = ari_testkit::PlaceCall::new("PJSIP/alice", APP);
            call.channel_id = Some(id.clone());
            server.place_call(call).expect("call placed")
        })
        .collect()
}

/// Waits (bounded) until every call is done by some instance.
pub async fn wait_done(instances: &[&Instance], calls: &[String], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let done: BTreeSet<String> = instances
            .iter()
            .flat_map(|i| i.seen.lock().unwrap().done.clone())
            .collect();
        if calls.iter().all(|c| done.contains(c)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<&String> = calls.iter().filter(|c| !done.contains(*c)).collect();
            eprintln!("calls not done: {missing:?}");
            for i in instances {
                let seen = i.seen.lock().unwrap();
                eprintln!(
                    "instance {}: {:?}; errors {:?}",
                    i.n,
                    i.cluster.stats(),
                    seen.errors
                );
                for m in &missing {
                    let evs: Vec<&String> = seen
                        .events
                        .iter()
                        .filter(|(_, ch)| ch.contains(m))
                        .map(|(k, _)| k)
                        .collect();
                    if !evs.is_empty() {
                        eprintln!("  {m}: {evs:?}");
                    }
                }
            }
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which instance handled each call (panics if one was handled twice).
pub fn owners(instances: &[&Instance]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in instances {
        for c in &i.seen.lock().unwrap().handled {
            assert!(
                out.insert(c.clone(), i.n).is_none(),
                "call {c} handled by two instances"
            );
        }
    }
    out
}
