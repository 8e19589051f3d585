//! The cluster (issue 16): events and REST through `ari-proxy` + NATS beside the direct
//! client, and a bare NATS floor, all in one child process and one run so that the ratios
//! compare like with like.
//!
//! Each part runs on a thread of its own with a one-thread tokio runtime, and its CPU is read
//! from `/proc/self/task/<tid>/schedstat` (nanoseconds on CPU), so the proxy's and the
//! client's costs are stated separately; `nats-server`'s CPU is the sum over its threads.
//!
//! - events, the same flood (`N` events over `K` channels) three ways: the direct ari-tokio
//!   client (six per-instance handlers on every channel, as in the events table); the same
//!   client API over NATS ([`ari_cluster::Cluster`]) behind an [`ari_cluster::Proxy`]; and
//!   the NATS floor: a bare tokio-tungstenite reader publishing each frame as it came on a
//!   NATS subject, and a bare async-nats subscriber parsing each into `serde_json::Value`
//!   (the same hops with none of our code).
//! - REST: `channels.get`, 1 and 64 in flight, direct and through the cluster (added
//!   latency = cluster p50 − direct p50), and the NATS request/reply floor (a bare responder
//!   answering the same response bytes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_client::events::{
    ChannelDestroyed, ChannelDtmfReceived, ChannelStateChange, ChannelUserevent, ChannelVarset,
    StasisEnd, StasisStart,
};
use ari_cluster::nats_server::NatsServer;
use ari_cluster::{Cluster, Proxy, ProxyConfig, ProxyStats};
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::events::timeout;
use crate::util::{control, percentile, USER};

/// The application the proxy serves.
const APP: &str = "bench-cluster";
/// The application of the NATS floor's reader.
const FLOOR_APP: &str = "bench-natsfloor";
/// Longest wait for a flood.
const PATIENCE: Duration = Duration::from_secs(300);

/// This thread's id, as `/proc/self/task/<tid>` names it.
fn tid() -> String {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// CPU time of one thread of this process (scheduler statistics, nanoseconds).
fn thread_cpu(tid: &str) -> Duration {
    schedstat(&format!("/proc/self/task/{tid}/schedstat"))
}

fn schedstat(path: &str) -> Duration {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// CPU time of every thread of another process.
fn process_cpu(pid: u32) -> Duration {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    dir.flatten()
        .map(|t| schedstat(&format!("{}/schedstat", t.path().display())))
        .sum()
}

fn nats_pid(nats: &NatsServer) -> Option<u32> {
    // The server listens on its port; find it by the command line we started it with.
    let port = nats.port().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"nats-server"))
                    && args.contains(&port.as_bytes())
            })
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` on a thread of its own with a one-thread runtime; its tid and a value it sends
/// once ready come back.
fn spawn_part<T, F, Fut>(name: &str, f: F) -> (String, T)
where
    T: Send + 'static,
    F: FnOnce(std::sync::mpsc::Sender<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tid_tx.send(tid());
            runtime().block_on(f(tx));
        })
        .expect("spawn a thread");
    let tid = tid_rx.recv().expect("thread id");
    let v = rx.recv().expect("part ready");
    (tid, v)
}

/// CPU of the parts over one measurement.
struct Meter {
    parts: Vec<(&'static str, String)>,
    nats: Option<u32>,
    start: Vec<Duration>,
    nats_start: Duration,
}

impl Meter {
    fn start(parts: Vec<(&'static str, String)>, nats: Option<u32>) -> Meter {
        let start = parts.iter().map(|(_, t)| thread_cpu(t)).collect();
        let nats_start = nats.map_or(Duration::ZERO, process_cpu);
        Meter {
            parts,
            nats,
            start,
            nats_start,
        }
    }

    /// `{"<part>_cpu_seconds": …, "nats_server_cpu_seconds": …}`.
    fn stop(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        for ((name, t), s) in self.parts.iter().zip(&self.start) {
            m.insert(
                format!("{name}_cpu_seconds"),
                json!((thread_cpu(t) - *s).as_secs_f64()),
            );
        }
        if let Some(pid) = self.nats {
            m.insert(
                "nats_server_cpu_seconds".into(),
                json!((process_cpu(pid) - self.nats_start).as_secs_f64()),
            );
        }
        m
    }
}

fn flood(addr: SocketAddr, app: &str, n: usize, k: usize) {
    let (status, body) = control(
        addr,
        "POST",
        &format!("/_bench/flood?n={n}&channels={k}&app={app}&mode=bulk"),
    )
    .expect("flood request");
    assert_eq!(status, 202, "flood refused: {body}");
}

fn events_row(
    name: &str,
    n: usize,
    k: usize,
    received: u64,
    wall: Duration,
    cpu: serde_json::Map<String, Value>,
    extra: Value,
) -> Value {
    let mut v = json!({
        "client": name,
        "events": n,
        "channels": k,
        "received": received,
        "seconds": wall.as_secs_f64(),
        "events_per_sec": n as f64 / wall.as_secs_f64().max(1e-9),
    });
    if let Some(o) = v.as_object_mut() {
        for (key, val) in cpu {
            if let Some(s) = val.as_f64() {
                o.insert(
                    key.replace("_cpu_seconds", "_cpu_us_per_event"),
                    json!(s * 1e6 / n.max(1) as f64),
                );
            }
            o.insert(key, val);
        }
        if let Value::Object(e) = extra {
            o.extend(e);
        }
    }
    v
}

/// Registers six counting handlers on every flood channel (one per event type of the
/// lifecycle): every flood event reaches exactly one.
fn count_handlers<R: ari_client::Runtime>(
    client: &ari_client::Client<R>,
    k: usize,
    handled: &Arc<AtomicU64>,
) -> Vec<ari_client::Listener> {
    fn on<R: ari_client::Runtime, E: ari_client::ClientEvent<R>>(
        ch: &ari_client::Channel<R>,
        c: &Arc<AtomicU64>,
        out: &mut Vec<ari_client::Listener>,
    ) {
        let c = c.clone();
        out.push(ch.on(move |_e: E, _i: E::Instances| {
            c.fetch_add(1, Ordering::Relaxed);
            std::future::ready(())
        }));
    }
    let mut subs = Vec::with_capacity(k * 6);
    for i in 0..k {
        let ch = client.channel(format!("bench-{i}"));
        on::<R, StasisStart>(&ch, handled, &mut subs);
        on::<R, ChannelStateChange>(&ch, handled, &mut subs);
        on::<R, ChannelVarset>(&ch, handled, &mut subs);
        on::<R, ChannelDtmfReceived>(&ch, handled, &mut subs);
        on::<R, StasisEnd>(&ch, handled, &mut subs);
        on::<R, ChannelDestroyed>(&ch, handled, &mut subs);
    }
    subs
}

/// Waits for `bench-done`, then for the handlers to have counted `n` (they run as tasks).
/// Gives up when nothing more is handled for 10 s (events lost): `false`.
async fn finish<R: ari_client::Runtime>(
    client: &ari_client::Client<R>,
    done: ari_client::ClientOnce<R, ChannelUserevent>,
    handled: &AtomicU64,
    n: usize,
) -> bool {
    let rt = client.runtime().clone();
    let mut done = std::pin::pin!(done);
    let mut last = (0u64, Instant::now());
    let started = Instant::now();
    loop {
        if timeout(&rt, Duration::from_millis(200), done.as_mut())
            .await
            .is_some()
        {
            break;
        }
        let now = handled.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) || started.elapsed() > PATIENCE {
            eprintln!("ari-bench: bench-done did not arrive ({now} of {n} events handled)");
            return false;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    handled.load(Ordering::Relaxed) == n as u64
}

/// The direct client, as in the events table (on this thread).
async fn events_direct(addr: SocketAddr, n: usize, k: usize, meter: impl Fn() -> Meter) -> Value {
    let client = ari_tokio::Client::builder(&format!("http://{addr}"), USER, USER)
        .connect()
        .await
        .expect("connect");
    let handled = Arc::new(AtomicU64::new(0));
    let subs = count_handlers(&client, k, &handled);
    let done = client.once::<ChannelUserevent>();
    client.start(&["bench-direct"]).await.expect("start");
    let m = meter();
    flood(addr, "bench-direct", n, k);
    let t0 = Instant::now();
    let complete = finish(&client, done, &handled, n).await;
    let (wall, cpu) = (t0.elapsed(), m.stop());
    let stats = client.stats();
    drop(subs);
    client.close().await;
    events_row(
        "direct: ari-tokio client",
        n,
        k,
        handled.load(Ordering::Relaxed),
        wall,
        cpu,
        json!({ "dropped_events": stats.dropped_events, "complete": complete }),
    )
}

/// The same client API over NATS, behind the proxy (on this thread).
async fn events_cluster(
    addr: SocketAddr,
    nats: &str,
    node: &str,
    n: usize,
    k: usize,
    meter: impl Fn() -> Meter,
) -> Value {
    let cluster = Cluster::connect(nats).await.expect("cluster");
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(10)).await);
    let client = cluster.client().expect("client");
    let handled = Arc::new(AtomicU64::new(0));
    let subs = count_handlers(&client, k, &handled);
    let done = client.once::<ChannelUserevent>();
    client.start(&[APP]).await.expect("start");
    let before = proxy_stats(&cluster, nats, node).await;
    let m = meter();
    flood(addr, APP, n, k);
    let t0 = Instant::now();
    let complete = finish(&client, done, &handled, n).await;
    let (wall, cpu) = (t0.elapsed(), m.stop());
    let after = proxy_stats(&cluster, nats, node).await;
    let stats = client.stats();
    let cstats = cluster.stats();
    drop(subs);
    client.close().await;
    cluster.close().await;
    events_row(
        "cluster: ari-proxy + NATS + ari-cluster client",
        n,
        k,
        handled.load(Ordering::Relaxed),
        wall,
        cpu,
        json!({
            "complete": complete,
            "dropped_events": stats.dropped_events,
            "cluster_events_dropped": cstats.events_dropped,
            "nats_slow_consumer": cstats.slow_consumer,
            "proxy_events_dropped": after.events_dropped - before.events_dropped,
            "proxy_publish_errors": after.publish_errors - before.publish_errors,
            "calls_claimed": after.calls_claimed - before.calls_claimed,
            "proxy_nats_messages": after.event_messages - before.event_messages,
            "nats_messages_per_event":
                (after.event_messages - before.event_messages) as f64 / n.max(1) as f64,
            "cluster_malformed": cstats.malformed,
        }),
    )
}

async fn proxy_stats(_cluster: &Cluster, nats: &str, node: &str) -> ProxyStats {
    let c = async_nats::connect(nats).await.expect("NATS");
    let subject = ari_cluster::wire::Subjects::default().health(node);
    let reply = c.request(subject, "".into()).await.expect("proxy health");
    serde_json::from_slice(&reply.payload).expect("proxy stats")
}

/// The NATS floor: a bare reader publishing each frame as it came (on its own thread), a
/// bare subscriber parsing each into `serde_json::Value` (on this thread).
async fn events_floor(
    addr: SocketAddr,
    nats: &str,
    n: usize,
    k: usize,
    meter: impl Fn(Vec<(&'static str, String)>) -> Meter,
) -> Value {
    let subject = "bench.floor.events";
    let sub_client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(nats)
        .await
        .expect("NATS");
    let mut sub = sub_client.subscribe(subject).await.expect("subscribe");
    sub_client.flush().await.expect("flush");
    let url = nats.to_string();
    let (pub_tid, ()) = spawn_part("floor-pub", move |ready| async move {
        let nc = async_nats::connect(&url).await.expect("NATS");
        let ws_url = format!("ws://{addr}/ari/events?app={FLOOR_APP}&api_key={USER}:{USER}");
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("websocket");
        let _ = ready.send(());
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let bytes: bytes::Bytes = t.into();
                if nc.publish(subject, bytes).await.is_err() {
                    break;
                }
            }
        }
    });
    let m = meter(vec![("publisher", pub_tid)]);
    flood(addr, FLOOR_APP, n, k);
    let t0 = Instant::now();
    let mut received = 0u64;
    let rt = ari_tokio::TokioRuntime::default();
    let _ = timeout(&rt, PATIENCE, async {
        while let Some(msg) = sub.next().await {
            let v: Value = serde_json::from_slice(&msg.payload).expect("JSON");
            if v["type"] == "ChannelUserevent" && v["eventname"] == "bench-done" {
                break;
            }
            received += 1;
        }
    })
    .await;
    let (wall, cpu) = (t0.elapsed(), m.stop());
    events_row(
        "floor: tungstenite reader → NATS → async-nats subscriber + serde_json::Value",
        n,
        k,
        received,
        wall,
        cpu,
        json!({}),
    )
}

fn rest_row(
    name: &str,
    in_flight: usize,
    mut lat: Vec<Duration>,
    wall: Duration,
    cpu: serde_json::Map<String, Value>,
) -> Value {
    lat.sort_unstable();
    let n = lat.len();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut v = json!({
        "client": name,
        "op": "channels.get",
        "in_flight": in_flight,
        "ops": n,
        "ops_per_sec": n as f64 / wall.as_secs_f64().max(1e-9),
        "p50_us": us(percentile(&lat, 50.0)),
        "p99_us": us(percentile(&lat, 99.0)),
    });
    if let Some(o) = v.as_object_mut() {
        for (key, val) in cpu {
            if let Some(s) = val.as_f64() {
                o.insert(
                    key.replace("_cpu_seconds", "_cpu_us_per_op"),
                    json!(s * 1e6 / n.max(1) as f64),
                );
            }
        }
    }
    v
}

/// `per` rounds of `in_flight` concurrent calls of `op`; the latencies.
async fn rest_loop<F, Fut>(ids: &[String], in_flight: usize, per: usize, op: F) -> Vec<Duration>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let op = &op;
    join_all((0..in_flight).map(|w| async move {
        let mut lat = Vec::with_capacity(per);
        for i in 0..per {
            let id = ids[(w + i * in_flight) % ids.len()].clone();
            let s = Instant::now();
            op(id).await;
            lat.push(s.elapsed());
        }
        lat
    }))
    .await
    .concat()
}

/// REST: direct, through the cluster, and the NATS request/reply floor.
async fn rest(
    addr: SocketAddr,
    nats: &str,
    ops: usize,
    meter: impl Fn(Vec<(&'static str, String)>) -> Meter,
) -> Vec<Value> {
    let cluster = Cluster::connect(nats).await.expect("cluster");
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(10)).await);
    let via = cluster.client().expect("client");
    via.start(&[APP]).await.expect("start");
    let ids: Vec<String> = (0..64)
        .map(|_| {
            let (status, body) =
                control(addr, "POST", &format!("/_sim/call?app={APP}")).expect("call");
            assert_eq!(status, 200, "place call: {body}");
            let v: Value = serde_json::from_str(&body).expect("call JSON");
            v["channel_id"].as_str().expect("channel_id").to_owned()
        })
        .collect();
    // The instance took the calls: the client knows their node.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.iter().any(|id| {
        cluster
            .node_of(ari_client::events::ResourceKind::Channel, id)
            .is_none()
    }) {
        assert!(Instant::now() < deadline, "calls not taken by the instance");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let direct = ari_tokio::Client::builder(&format!("http://{addr}"), USER, USER)
        .build()
        .expect("client");
    // The floor's responder answers the proxy's own reply to the same request.
    let requester = async_nats::connect(nats).await.expect("NATS");
    let request_bytes = bytes::Bytes::from(
        serde_json::to_vec(&json!({
            "type": "RESTRequest",
            "method": "GET",
            "uri": format!("channels/{}", ids[0]),
        }))
        .expect("JSON"),
    );
    let reply_bytes = requester
        .request(
            ari_cluster::wire::Subjects::default().rest_any(),
            request_bytes.clone(),
        )
        .await
        .expect("proxy answers")
        .payload;
    let url = nats.to_string();
    let (responder_tid, ()) = spawn_part("floor-responder", move |ready| async move {
        let nc = async_nats::connect(&url).await.expect("NATS");
        let mut sub = nc.subscribe("bench.floor.rest").await.expect("subscribe");
        nc.flush().await.expect("flush");
        let _ = ready.send(());
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = nc.publish(reply, reply_bytes.clone()).await;
            }
        }
    });
    let mut out = Vec::new();
    for in_flight in [1usize, 64] {
        let per = (ops / in_flight).max(1);
        // Warm-up of each.
        for id in &ids {
            direct.channels().get(id).await.expect("get");
            via.channels().get(id).await.expect("get");
        }
        let m = meter(vec![]);
        let t0 = Instant::now();
        let lat = rest_loop(&ids, in_flight, per, |id| {
            let c = &direct;
            async move {
                c.channels().get(&id).await.expect("direct get");
            }
        })
        .await;
        out.push(rest_row(
            "direct: ari-tokio client",
            in_flight,
            lat,
            t0.elapsed(),
            m.stop(),
        ));

        let m = meter(vec![]);
        let t0 = Instant::now();
        let lat = rest_loop(&ids, in_flight, per, |id| {
            let c = &via;
            async move {
                c.channels().get(&id).await.expect("cluster get");
            }
        })
        .await;
        out.push(rest_row(
            "cluster: ari-cluster client → NATS → ari-proxy → Asterisk",
            in_flight,
            lat,
            t0.elapsed(),
            m.stop(),
        ));

        let m = meter(vec![("responder", responder_tid.clone())]);
        let t0 = Instant::now();
        let lat = rest_loop(&ids, in_flight, per, |_id| {
            let c = &requester;
            let body = request_bytes.clone();
            async move {
                let r = c
                    .request("bench.floor.rest", body)
                    .await
                    .expect("floor reply");
                let env: Value = serde_json::from_slice(&r.payload).expect("JSON");
                let _: Value = serde_json::from_str(env["message_body"].as_str().unwrap_or("null"))
                    .expect("JSON body");
            }
        })
        .await;
        out.push(rest_row(
            "floor: async-nats request/reply, same envelopes",
            in_flight,
            lat,
            t0.elapsed(),
            m.stop(),
        ));
    }
    via.close().await;
    cluster.close().await;
    out
}

/// The proxy on a thread of its own, for ever (the process ends after the measurements): its
/// thread id and node.
fn spawn_proxy(addr: SocketAddr, url: &str) -> (String, String) {
    let url = url.to_string();
    spawn_part("proxy", move |ready| async move {
        let config = ProxyConfig::new(&format!("http://{addr}"), USER, USER, &url, [APP]);
        let proxy = Proxy::start(config).await.expect("proxy starts");
        let _ = ready.send(proxy.node().to_string());
        std::future::pending::<()>().await;
        drop(proxy);
    })
}

/// The scenario `cluster-events`: only the events through the cluster (the proxy on its
/// thread `proxy`, the client on the main thread), for counting each thread's instructions
/// with a profiler (`perf record -e instructions:u` sorted by thread name, or callgrind).
pub(crate) fn run_events(addr: SocketAddr, n: usize, k: usize) -> Value {
    let nats = match NatsServer::start() {
        Ok(s) => s,
        Err(e) => return json!({ "skipped": e.to_string() }),
    };
    let url = nats.url();
    let pid = nats_pid(&nats);
    let me = tid();
    let (proxy_tid, node) = spawn_proxy(addr, &url);
    let meter = || {
        Meter::start(
            vec![("client", me.clone()), ("proxy", proxy_tid.clone())],
            pid,
        )
    };
    runtime().block_on(events_cluster(addr, &url, &node, n, k, meter))
}

/// The child's work: every measurement once, in one process. `{"skipped": why}` without
/// `nats-server`.
pub(crate) fn run(addr: SocketAddr, n: usize, k: usize, rest_ops: usize) -> Value {
    let nats = match NatsServer::start() {
        Ok(s) => s,
        Err(e) => return json!({ "skipped": e.to_string() }),
    };
    let url = nats.url();
    let pid = nats_pid(&nats);
    let me = tid();

    let (proxy_tid, node) = spawn_proxy(addr, &url);

    let rt = runtime();
    let proxy_part = ("proxy", proxy_tid.clone());
    let client_meter = || Meter::start(vec![("client", me.clone())], pid);
    let cluster_meter = || Meter::start(vec![("client", me.clone()), proxy_part.clone()], pid);
    let floor_meter = |mut extra: Vec<(&'static str, String)>| {
        extra.insert(0, ("client", me.clone()));
        Meter::start(extra, pid)
    };
    rt.block_on(async {
        let floor = events_floor(addr, &url, n, k, floor_meter).await;
        let direct = events_direct(addr, n, k, client_meter).await;
        let cluster = events_cluster(addr, &url, &node, n, k, cluster_meter).await;
        let rest_meter = |mut extra: Vec<(&'static str, String)>| {
            extra.insert(0, ("client", me.clone()));
            extra.push(proxy_part.clone());
            Meter::start(extra, pid)
        };
        let rest = rest(addr, &url, rest_ops, rest_meter).await;
        json!({
            "events": [floor, direct, cluster],
            "rest": rest,
        })
    })
}

/// The ratios the issue asks about, from one child's results.
pub(crate) fn ratios(v: &Value) -> Value {
    let eps = |i: usize| v["events"][i]["events_per_sec"].as_f64().unwrap_or(0.0);
    let p50 = |client: &str, inf: u64| {
        v["rest"]
            .as_array()
            .and_then(|rows| {
                rows.iter().find(|r| {
                    r["client"].as_str().is_some_and(|c| c.starts_with(client))
                        && r["in_flight"].as_u64() == Some(inf)
                })
            })
            .and_then(|r| r["p50_us"].as_f64())
            .unwrap_or(0.0)
    };
    let us = |i: usize, part: &str| {
        v["events"][i][format!("{part}_cpu_us_per_event")]
            .as_f64()
            .unwrap_or(0.0)
    };
    json!({
        "cluster_events_per_sec_vs_direct": eps(2) / eps(1).max(1e-9),
        "direct_client_cpu_us_per_event": us(1, "client"),
        "cluster_client_cpu_us_per_event": us(2, "client"),
        "cluster_proxy_cpu_us_per_event": us(2, "proxy"),
        "cluster_nats_server_cpu_us_per_event": us(2, "nats_server"),
        "cluster_nats_messages_per_event": v["events"][2]["nats_messages_per_event"]
            .as_f64()
            .unwrap_or(0.0),
        "cluster_events_lost": v["events"][2]["events"].as_u64().unwrap_or(0)
            .saturating_sub(v["events"][2]["received"].as_u64().unwrap_or(0)),
        "floor_events_per_sec_vs_direct": eps(0) / eps(1).max(1e-9),
        "cluster_events_per_sec_vs_floor": eps(2) / eps(0).max(1e-9),
        "rest_added_p50_us_1_in_flight": p50("cluster", 1) - p50("direct", 1),
        "rest_added_p50_us_64_in_flight": p50("cluster", 64) - p50("direct", 64),
        "floor_rest_p50_us_1_in_flight": p50("floor", 1),
    })
}

/// A table of the best run (least cluster CPU) and the ratios of every run.
pub(crate) fn table(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let Some(best) = v.get("best") else {
        return s;
    };
    if let Some(why) = best.get("skipped") {
        let _ = writeln!(s, "\nCluster: skipped ({why})");
        return s;
    }
    let _ = writeln!(
        s,
        "\nCluster (issue 16): events and REST through ari-proxy + NATS, one process per run"
    );
    let _ = writeln!(
        s,
        "{:<78} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "events", "events/s", "lost", "client µs", "proxy µs", "pub µs", "nats µs"
    );
    for r in best["events"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
        let _ = writeln!(
            s,
            "{:<78} {:>10.0} {:>8} {:>9} {:>9} {:>9} {:>9}",
            r["client"].as_str().unwrap_or(""),
            r["events_per_sec"].as_f64().unwrap_or(0.0),
            r["events"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(r["received"].as_u64().unwrap_or(0)),
            f("client_cpu_us_per_event"),
            f("proxy_cpu_us_per_event"),
            f("publisher_cpu_us_per_event"),
            f("nats_server_cpu_us_per_event"),
        );
    }
    let _ = writeln!(
        s,
        "{:<60} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "REST channels.get", "inf", "p50 µs", "p99 µs", "client µs", "proxy µs", "nats µs"
    );
    for r in best["rest"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
        let _ = writeln!(
            s,
            "{:<60} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r["client"].as_str().unwrap_or(""),
            r["in_flight"],
            f("p50_us"),
            f("p99_us"),
            f("client_cpu_us_per_op"),
            f("proxy_cpu_us_per_op"),
            f("nats_server_cpu_us_per_op"),
        );
    }
    for (i, r) in v["ratios"].as_array().into_iter().flatten().enumerate() {
        let ratio = r["cluster_events_per_sec_vs_direct"]
            .as_f64()
            .unwrap_or(0.0);
        let _ = writeln!(
            s,
            "run {}: events through the cluster {:.2}× direct events/s: target ≥ 0.50× {}; {} lost; {:.3} NATS messages per event; CPU per event: direct client {:.2} µs, cluster client {:.2} µs, proxy {:.2} µs, nats-server {:.2} µs",
            i + 1,
            ratio,
            if ratio >= 0.5 { "met" } else { "MISSED" },
            r["cluster_events_lost"].as_u64().unwrap_or(0),
            r["cluster_nats_messages_per_event"].as_f64().unwrap_or(0.0),
            r["direct_client_cpu_us_per_event"].as_f64().unwrap_or(0.0),
            r["cluster_client_cpu_us_per_event"].as_f64().unwrap_or(0.0),
            r["cluster_proxy_cpu_us_per_event"].as_f64().unwrap_or(0.0),
            r["cluster_nats_server_cpu_us_per_event"].as_f64().unwrap_or(0.0),
        );
        let _ = writeln!(
            s,
            "run {}: cluster/direct events/s {:.2} (target ≥ 0.50), floor/direct {:.2}, cluster/floor {:.2}; REST added p50 {:.0} µs at 1 in flight (target < 300), {:.0} µs at 64; NATS request/reply floor p50 {:.0} µs",
            i + 1,
            r["cluster_events_per_sec_vs_direct"].as_f64().unwrap_or(0.0),
            r["floor_events_per_sec_vs_direct"].as_f64().unwrap_or(0.0),
            r["cluster_events_per_sec_vs_floor"].as_f64().unwrap_or(0.0),
            r["rest_added_p50_us_1_in_flight"].as_f64().unwrap_or(0.0),
            r["rest_added_p50_us_64_in_flight"].as_f64().unwrap_or(0.0),
            r["floor_rest_p50_us_1_in_flight"].as_f64().unwrap_or(0.0),
        );
    }
    s
}

/// Runs the cluster child `repeat` times; keeps every run's ratios and the run with the
/// least cluster CPU per event as `best`.
pub(crate) fn orchestrate(mut measure: impl FnMut() -> Value, repeat: usize) -> Value {
    let mut best: Option<Value> = None;
    let mut ratios = Vec::new();
    let cost = |v: &Value| {
        let e = &v["events"][2];
        e["client_cpu_seconds"].as_f64().unwrap_or(f64::MAX)
            + e["proxy_cpu_seconds"].as_f64().unwrap_or(0.0)
    };
    for rep in 0..repeat {
        eprintln!("ari-bench: cluster (run {}) ...", rep + 1);
        let r = measure();
        if r.get("skipped").is_some() {
            return json!({ "best": r });
        }
        ratios.push(self::ratios(&r));
        if best.as_ref().is_none_or(|b| cost(&r) < cost(b)) {
            best = Some(r);
        }
    }
    json!({ "best": best, "ratios": ratios })
}
