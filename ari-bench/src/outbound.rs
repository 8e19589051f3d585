//! ARI outbound WebSocket (Asterisk dials the application): the same event flood read by the
//! client over an inbound connection and over an outbound (persistent) one, and per-call
//! connections handled one after another.
//!
//! The simulated Asterisk runs in the orchestrator's process, configured with two
//! `websocket_client.conf` sections: a persistent one for the app `bench-ob` and a
//! `per_call_config` one for `bench-pc`, each dialling a loopback port that a measuring
//! child binds with an [`ari_client::OutboundServer`]. CPU time and RSS are the child's alone.
//!
//! - events: `N` events over `K` channels, six per-instance handlers on every channel (the
//!   handlers of the `events` part), read by the client over an inbound connection
//!   (`/ari/events`) and over the outbound one; the same code measures both; CPU per event.
//! - per call: calls placed one after another (`POST /_sim/call`); each is taken with
//!   `next_call`, answered and hung up over its own connection, its events read to
//!   `StasisEnd`, then dropped. CPU per call and RSS after the first tenth and after all,
//!   and the call clients' live subscriptions once each call ended (must be 0).

use std::future::IntoFuture;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_client::events::{
    ChannelDestroyed, ChannelDtmfReceived, ChannelStateChange, ChannelUserevent, ChannelVarset,
    StasisEnd, StasisStart,
};
use ari_client::runtime::{Connector, Executor};
use ari_client::{Client, ConnectionType, Event, Listener, OutboundOptions, Runtime, Stack};
use ari_testkit::{MockServer, OutboundConfig, SimConfig};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::events::timeout;
use crate::util::{control, cpu_now, peak_rss_kb, rss_kb, USER};

/// The persistent outbound application.
const APP_OB: &str = "bench-ob";
/// The per-call outbound application.
const APP_PC: &str = "bench-pc";
/// Credentials Asterisk presents to the application.
const OB_USER: &str = "obuser";
const OB_SECRET: &str = "obsecret";
const PATH: &str = "/ari-ob";
/// Longest wait for one step.
const PATIENCE: Duration = Duration::from_secs(600);

/// A free loopback port (bound and released; the child binds it again).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn listen_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Orchestrator: the simulated Asterisk dialling out, the measuring children (interleaved
/// repeats, the run with the least CPU kept), and the table.
pub(crate) fn run(args: &crate::Args) -> Value {
    let sizes = crate::Sizes::of(args);
    let (ob_port, pc_port) = (free_port(), free_port());
    let sim = SimConfig {
        sip_answer_delay: Duration::ZERO,
        ..SimConfig::default()
    };
    let mock = MockServer::builder()
        .sim_config(sim)
        .write_timeout(Duration::from_secs(10))
        .outbound(
            OutboundConfig::persistent(&format!("ws://127.0.0.1:{ob_port}{PATH}"), [APP_OB])
                .credentials(OB_USER, OB_SECRET)
                .reconnect(Duration::from_millis(20), 4),
        )
        .outbound(
            OutboundConfig::per_call(&format!("ws://127.0.0.1:{pc_port}{PATH}"), [APP_PC])
                .credentials(OB_USER, OB_SECRET)
                .stasis_start_delay(Duration::ZERO)
                .close_after_stasis_end(Duration::ZERO),
        )
        .start();
    let port = mock.port();
    let scenarios = [
        ("outbound-events-inbound-tokio", ob_port),
        ("outbound-events-outbound-tokio", ob_port),
        ("outbound-events-inbound-smol", ob_port),
        ("outbound-events-outbound-smol", ob_port),
    ];
    let mut best: Vec<Option<Value>> = vec![None; scenarios.len()];
    for rep in 0..sizes.repeat {
        for (i, (scenario, listen)) in scenarios.iter().enumerate() {
            eprintln!("ari-bench: {scenario} (run {}) ...", rep + 1);
            let extra = vec!["--listen".to_owned(), listen.to_string()];
            let r = crate::measure(args, port, scenario, &extra);
            let cpu = |v: &Value| v["cpu_seconds"].as_f64().unwrap_or(f64::MAX);
            if best[i].as_ref().is_none_or(|b| cpu(&r) < cpu(b)) {
                best[i] = Some(r);
            }
        }
    }
    let events: Vec<Value> = best.into_iter().flatten().collect();
    let us = |v: &Value| v["cpu_us_per_event"].as_f64().unwrap_or(f64::NAN);
    let ratios = json!({
        "tokio": us(&events[1]) / us(&events[0]),
        "smol": us(&events[3]) / us(&events[2]),
    });
    let mut per_call = Vec::new();
    for scenario in ["outbound-per-call-tokio", "outbound-per-call-smol"] {
        eprintln!("ari-bench: {scenario} ...");
        let extra = vec!["--listen".to_owned(), pc_port.to_string()];
        per_call.push(crate::measure(args, port, scenario, &extra));
    }
    let out = json!({
        "events": events,
        "outbound_over_inbound_cpu_per_event": ratios,
        "per_call": per_call,
        "simulator": {
            "outbound": {
                "connected": mock.outbound_stats().connected,
                "failed_attempts": mock.outbound_stats().failed,
                "gave_up": mock.outbound_stats().gave_up,
            },
        },
    });
    print!("{}", table(&out));
    out
}

/// The outbound section of the report.
fn table(v: &Value) -> String {
    let mut s = String::from("\n## Outbound WebSocket\n\n");
    s.push_str("| client | connection | events | CPU µs/event | events/s | received |\n");
    s.push_str("|---|---|---:|---:|---:|---:|\n");
    for r in v["events"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.0} | {} |\n",
            r["client"].as_str().unwrap_or("?"),
            r["connection"].as_str().unwrap_or("?"),
            r["events"],
            r["cpu_us_per_event"].as_f64().unwrap_or(f64::NAN),
            r["events_per_sec"].as_f64().unwrap_or(f64::NAN),
            r["received"],
        ));
    }
    let ratio = &v["outbound_over_inbound_cpu_per_event"];
    s.push_str(&format!(
        "\noutbound / inbound CPU per event: tokio {:.3}x, smol {:.3}x (target <= 1.05x)\n\n",
        ratio["tokio"].as_f64().unwrap_or(f64::NAN),
        ratio["smol"].as_f64().unwrap_or(f64::NAN),
    ));
    s.push_str("| client | calls | CPU µs/call (first) | CPU µs/call (rest) | RSS KiB (first) | RSS KiB (all) | RSS growth | live subscriptions after |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in v["per_call"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} / {} | {:.1} | {:.1} | {} | {} | {:+.1}% | {} |\n",
            r["client"].as_str().unwrap_or("?"),
            r["first"],
            r["calls"],
            r["cpu_us_per_call_first"].as_f64().unwrap_or(f64::NAN),
            r["cpu_us_per_call_rest"].as_f64().unwrap_or(f64::NAN),
            r["rss_kb_first"],
            r["rss_kb_all"],
            r["rss_growth_pct"].as_f64().unwrap_or(f64::NAN),
            r["max_live_subscriptions_after_call"],
        ));
    }
    s
}

/// Child: one outbound measurement.
pub(crate) fn client(
    scenario: &str,
    addr: SocketAddr,
    listen: Option<u16>,
    n: usize,
    k: usize,
    calls: usize,
) -> Value {
    let listen = listen_addr(listen.expect("--listen"));
    let tokio_rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    };
    let first = (calls / 10).max(1);
    match scenario {
        "outbound-events-inbound-tokio" => tokio_rt().block_on(inbound::<ari_tokio::TokioRuntime>(
            "tokio: ari-tokio client",
            addr,
            n,
            k,
        )),
        "outbound-events-outbound-tokio" => tokio_rt().block_on(outbound(
            ari_tokio::TokioRuntime::new(),
            "tokio: ari-tokio client",
            addr,
            listen,
            n,
            k,
        )),
        "outbound-events-inbound-smol" => smol::block_on(inbound::<ari_smol::SmolRuntime>(
            "smol: ari-smol client",
            addr,
            n,
            k,
        )),
        "outbound-events-outbound-smol" => smol::block_on(outbound(
            ari_smol::SmolRuntime::new(),
            "smol: ari-smol client",
            addr,
            listen,
            n,
            k,
        )),
        "outbound-per-call-tokio" => tokio_rt().block_on(per_call(
            ari_tokio::TokioRuntime::new(),
            "tokio: ari-tokio client",
            addr,
            listen,
            first,
            calls,
        )),
        "outbound-per-call-smol" => smol::block_on(per_call(
            ari_smol::SmolRuntime::new(),
            "smol: ari-smol client",
            addr,
            listen,
            first,
            calls,
        )),
        other => panic!("unknown scenario {other}"),
    }
}

async fn within<R: Runtime, F: IntoFuture>(rt: &R, what: &str, fut: F) -> F::Output {
    timeout(rt, PATIENCE, fut.into_future())
        .await
        .unwrap_or_else(|| panic!("{what}: not within {PATIENCE:?}"))
}

/// The inbound side: the client connects to `/ari/events` and starts its app.
async fn inbound<R: Runtime + Default>(name: &str, addr: SocketAddr, n: usize, k: usize) -> Value {
    let app = format!("bench-ib-{}", name.split(':').next().unwrap_or("client"));
    let client = Client::<R>::builder(&format!("http://{addr}"), USER, USER)
        .connect()
        .await
        .expect("connect");
    flood(name, "inbound", client, addr, &app, true, n, k).await
}

/// The outbound side: the simulated Asterisk dials the child's server; its persistent
/// connection's client reads the flood.
async fn outbound<E: Executor, C: Connector>(
    rt: Stack<E, C>,
    name: &str,
    addr: SocketAddr,
    listen: SocketAddr,
    n: usize,
    k: usize,
) -> Value {
    let server = OutboundOptions::new(rt.clone())
        .credentials(OB_USER, OB_SECRET)
        .expect("credentials")
        .path(PATH)
        .connection_type(ConnectionType::Persistent)
        .bind(listen)
        .await
        .expect("bind the outbound server");
    let conn = within(&rt, "Asterisk connects", server.next())
        .await
        .expect("a connection");
    drop(conn.incoming); // the flood's handlers take the events
    flood(name, "outbound", conn.client, addr, APP_OB, false, n, k).await
}

/// Six counting handlers on every channel `bench-{i}`, the flood, and the figures. The
/// same code for both connections.
#[allow(clippy::too_many_arguments)]
async fn flood<R: Runtime>(
    name: &str,
    connection: &str,
    client: Client<R>,
    addr: SocketAddr,
    app: &str,
    start: bool,
    n: usize,
    k: usize,
) -> Value {
    let handled = Arc::new(AtomicU64::new(0));
    let mut listeners: Vec<Listener> = Vec::with_capacity(k * 6);
    fn count<R: Runtime, T: ari_client::ClientEvent<R>>(
        ch: &ari_client::Channel<R>,
        handled: &Arc<AtomicU64>,
        listeners: &mut Vec<Listener>,
    ) {
        let c = handled.clone();
        listeners.push(ch.on(move |_e: T, _instances: T::Instances| {
            c.fetch_add(1, Ordering::Relaxed);
            std::future::ready(())
        }));
    }
    for i in 0..k {
        let ch = client.channel(format!("bench-{i}"));
        count::<R, StasisStart>(&ch, &handled, &mut listeners);
        count::<R, ChannelStateChange>(&ch, &handled, &mut listeners);
        count::<R, ChannelVarset>(&ch, &handled, &mut listeners);
        count::<R, ChannelDtmfReceived>(&ch, &handled, &mut listeners);
        count::<R, StasisEnd>(&ch, &handled, &mut listeners);
        count::<R, ChannelDestroyed>(&ch, &handled, &mut listeners);
    }
    let done = client.once::<ChannelUserevent>();
    if start {
        client.start(&[app]).await.expect("start");
    }
    let rt = client.runtime().clone();
    let rss_before = rss_kb();
    let cpu0 = cpu_now();
    let (status, body) = control(
        addr,
        "POST",
        &format!("/_bench/flood?n={n}&channels={k}&app={app}&mode=bulk"),
    )
    .expect("flood request");
    assert_eq!(status, 202, "flood refused: {body}");
    let t0 = Instant::now();
    let (ev, _) = within(&rt, "bench-done", done).await.expect("bench-done");
    assert_eq!(ev.eventname, "bench-done");
    let deadline = Instant::now() + PATIENCE;
    while handled.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        rt.sleep_until(Instant::now() + Duration::from_micros(200))
            .await;
    }
    let (wall, cpu) = (t0.elapsed(), cpu_now() - cpu0);
    let stats = client.stats();
    let out = json!({
        "client": name,
        "connection": connection,
        "events": n,
        "channels": k,
        "received": handled.load(Ordering::Relaxed),
        "seconds": wall.as_secs_f64(),
        "events_per_sec": n as f64 / wall.as_secs_f64().max(1e-9),
        "cpu_seconds": cpu.as_secs_f64(),
        "cpu_us_per_event": cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
        "rss_before_kb": rss_before,
        "peak_rss_kb": peak_rss_kb(),
        "dropped_events": stats.dropped_events,
    });
    drop(listeners);
    client.close().await;
    out
}

/// Per-call connections, one call after another.
async fn per_call<E: Executor, C: Connector>(
    rt: Stack<E, C>,
    name: &str,
    addr: SocketAddr,
    listen: SocketAddr,
    first: usize,
    calls: usize,
) -> Value {
    let server = OutboundOptions::new(rt.clone())
        .credentials(OB_USER, OB_SECRET)
        .expect("credentials")
        .path(PATH)
        .connection_type(ConnectionType::PerCall)
        .bind(listen)
        .await
        .expect("bind the outbound server");
    let mut max_live = 0usize;
    let cpu0 = cpu_now();
    let mut at_first = (Duration::ZERO, 0u64);
    for i in 0..calls {
        let (status, body) = control(
            addr,
            "POST",
            &format!("/_sim/call?app={APP_PC}&endpoint=PJSIP/pc{i}"),
        )
        .expect("place a call");
        assert_eq!(status, 200, "place a call: {body}");
        let mut call = within(&rt, "the call", server.next_call())
            .await
            .expect("a call");
        within(&rt, "answer", call.channel.answer())
            .await
            .expect("answer");
        within(&rt, "hangup", call.channel.hangup())
            .await
            .expect("hangup");
        within(&rt, "StasisEnd", async {
            while let Some(e) = call.events.next().await {
                if matches!(e, Ok(Event::StasisEnd(_))) {
                    return;
                }
            }
        })
        .await;
        drop(call.events);
        max_live = max_live.max(call.client.live_subscriptions());
        drop(call.client);
        if i + 1 == first {
            at_first = (cpu_now() - cpu0, rss_kb());
        }
    }
    let cpu_all = cpu_now() - cpu0;
    let rss_all = rss_kb();
    let stats = server.stats();
    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    json!({
        "client": name,
        "calls": calls,
        "first": first,
        "cpu_us_per_call_first": per(at_first.0, first),
        "cpu_us_per_call_rest": per(cpu_all.saturating_sub(at_first.0), calls - first),
        "rss_kb_first": at_first.1,
        "rss_kb_all": rss_all,
        "rss_growth_pct": (rss_all as f64 / at_first.1.max(1) as f64 - 1.0) * 100.0,
        "max_live_subscriptions_after_call": max_live,
        "accepted": stats.accepted,
        "calls_yielded": stats.calls,
        "failed": stats.failed,
        "peak_rss_kb": peak_rss_kb(),
    })
}
