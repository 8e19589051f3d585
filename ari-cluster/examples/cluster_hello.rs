//! The hello IVR on a cluster: two Asterisk nodes, a proxy beside each, two instances of the
//! application sharing the calls over NATS.
//!
//! ```text
//! cargo run -p ari-cluster --example cluster_hello
//!     # starts nats-server (apt-get install nats-server) on a free loopback port, two
//!     # simulated Asterisks (node-a, node-b) with a proxy each, two instances; four calls
//! NATS_URL=nats://10.0.0.5:4222 ARI_APP=hello ARI_CALLS=10 cargo run -p ari-cluster --example cluster_hello
//!     # one instance against a running cluster (ari-proxy beside each Asterisk)
//! ```
//!
//! Each call: answer, `sound:hello-world`, each key plays `sound:digits/<key>`, `#` plays
//! `sound:vm-goodbye` and hangs up. One line per call: `call <channel> node <node> handled by
//! instance <n>`.

use std::error::Error;
use std::time::Duration;

use ari_client::events::{ChannelDtmfReceived, StasisStart};
use ari_cluster::nats_server::NatsServer;
use ari_cluster::{Channel, Client, Cluster, Proxy, ProxyConfig};
use ari_testkit::{MockServer, PlaceCall};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Runs the hello IVR for every call this instance takes; sends one line per finished call.
fn hello(client: &Client, instance: usize, done: mpsc::UnboundedSender<String>) {
    client.on(move |start: StasisStart, channel: Channel| {
        let done = done.clone();
        async move {
            // Subscribed before answering: no key is missed.
            let mut keys = channel.stream::<ChannelDtmfReceived>();
            channel.answer().await?;
            channel.play("sound:hello-world").await?.finished().await?;
            while let Some(dtmf) = keys.next().await {
                let digit = dtmf?.digit;
                if digit == "#" {
                    channel.play("sound:vm-goodbye").await?.finished().await?;
                    break;
                }
                channel
                    .play(format!("sound:digits/{digit}"))
                    .await?
                    .finished()
                    .await?;
            }
            channel.hangup().await?;
            let node = start.asterisk_id.as_deref().unwrap_or("?");
            let _ = done.send(format!(
                "call {} node {node} handled by instance {instance}",
                channel.id()
            ));
            Ok::<(), ari_client::Error>(())
        }
    });
}

async fn one_instance(nats_url: &str) -> Result<(), Box<dyn Error>> {
    let app = std::env::var("ARI_APP").unwrap_or_else(|_| "hello".into());
    let calls: usize = match std::env::var("ARI_CALLS") {
        Ok(n) => n.parse()?,
        Err(_) => 1,
    };
    let cluster = Cluster::connect(nats_url).await?;
    let client = cluster.client()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    hello(&client, 1, tx);
    client.start(&[&app]).await?;
    println!(
        "instance {} serving {app} on {} node(s)",
        cluster.instance_id(),
        cluster.nodes().len()
    );
    for _ in 0..calls {
        let line = rx.recv().await.ok_or("the client closed")?;
        println!("{line}");
    }
    cluster.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    if let Ok(url) = std::env::var("NATS_URL") {
        return one_instance(&url).await;
    }
    let nats = NatsServer::start()?;
    println!("nats-server at {}", nats.url());
    let nodes = [
        MockServer::builder().asterisk_id("node-a").start(),
        MockServer::builder().asterisk_id("node-b").start(),
    ];
    let mut proxies = Vec::new();
    for server in &nodes {
        let config = ProxyConfig::new(
            &server.base_url(),
            server.username(),
            server.password(),
            &nats.url(),
            ["hello"],
        );
        let proxy = Proxy::start(config).await?;
        println!("proxy for node {} up", proxy.node());
        proxies.push(proxy);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut instances = Vec::new();
    for n in 1..=2 {
        let cluster = Cluster::connect(&nats.url()).await?;
        let client = cluster.client()?;
        hello(&client, n, tx.clone());
        client.start(&["hello"]).await?;
        if !cluster.wait_for_nodes(2, Duration::from_secs(10)).await {
            return Err("the instances did not see both nodes within 10 s".into());
        }
        instances.push((cluster, client));
    }
    println!("2 instances see {} nodes", instances[0].0.nodes().len());

    for (server, name) in nodes.iter().zip(["node-a", "node-b"]) {
        for i in 1..=2 {
            let mut call = PlaceCall::new("PJSIP/alice", "hello");
            call.channel_id = Some(format!("{name}-call-{i}"));
            call.dtmf = "1#".into();
            server.place_call(call)?;
        }
    }
    let mut lines = Vec::new();
    for _ in 0..4 {
        let line = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .map_err(|_| "a call did not finish within 60 s")?
            .ok_or("the instances closed")?;
        lines.push(line);
    }
    lines.sort();
    for line in &lines {
        println!("{line}");
    }
    for proxy in proxies {
        proxy.stop().await;
    }
    for (cluster, _) in &instances {
        cluster.close().await;
    }
    println!("4 calls done");
    Ok(())
}
