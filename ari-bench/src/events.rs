//! Events: a flood of `n` events over `k` channels, read by the bare floor or by the client
//! with a per-instance listener on every channel.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_client::events::{
    ChannelDestroyed, ChannelDtmfReceived, ChannelStateChange, ChannelUserevent, ChannelVarset,
    StasisEnd, StasisStart,
};
use ari_client::{Client, Runtime};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::util::{control, cpu_now, peak_rss_kb, rss_kb, USER};

/// Longest wait for a flood to arrive.
const PATIENCE: Duration = Duration::from_secs(600);

/// Runs `fut` until `d` passes on the client's runtime.
pub(crate) async fn timeout<R: Runtime, F: Future>(
    rt: &R,
    d: Duration,
    fut: F,
) -> Option<F::Output> {
    let sleep = rt.sleep_until(Instant::now() + d);
    match select(pin!(fut), pin!(sleep)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
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

fn result(
    name: &str,
    n: usize,
    k: usize,
    received: u64,
    wall: Duration,
    cpu: Duration,
    extra: Value,
) -> Value {
    let mut v = json!({
        "client": name,
        "events": n,
        "channels": k,
        "received": received,
        "seconds": wall.as_secs_f64(),
        "events_per_sec": n as f64 / wall.as_secs_f64().max(1e-9),
        "cpu_seconds": cpu.as_secs_f64(),
        "cpu_us_per_event": cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
        "peak_rss_kb": peak_rss_kb(),
        "rss_kb": rss_kb(),
    });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// The floor: tokio-tungstenite reading frames and parsing each into `serde_json::Value`.
pub(crate) fn floor(addr: SocketAddr, n: usize, k: usize) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let app = "bench-floor";
        let url = format!("ws://{addr}/ari/events?app={app}&api_key={USER}:{USER}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        let rss_before = rss_kb();
        let cpu0 = cpu_now();
        flood(addr, app, n, k);
        let t0 = Instant::now();
        let mut received = 0u64;
        while let Some(m) = ws.next().await {
            if let Message::Text(t) = m.expect("frame") {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                received += 1;
                if v["type"] == "ChannelUserevent" && v["eventname"] == "bench-done" {
                    break;
                }
            }
        }
        let (wall, cpu) = (t0.elapsed(), cpu_now() - cpu0);
        result(
            "floor: tokio-tungstenite + serde_json::Value",
            n,
            k,
            received.saturating_sub(1),
            wall,
            cpu,
            json!({ "rss_before_kb": rss_before }),
        )
    })
}

macro_rules! count_on {
    ($ch:expr, $counter:expr, $listeners:expr, $($t:ty),* $(,)?) => {
        $(
            {
                let c = $counter.clone();
                $listeners.push($ch.on(move |_e: $t, _instances| {
                    c.fetch_add(1, Ordering::Relaxed);
                    std::future::ready(())
                }));
            }
        )*
    };
}

/// The client: one handler per event type on every channel instance (six per channel), each
/// counting; every flood event reaches exactly one handler. Ends on `bench-done`, once every
/// handler has run.
pub(crate) async fn client<R: Runtime + Default>(
    name: &str,
    addr: SocketAddr,
    n: usize,
    k: usize,
) -> Value {
    let app = format!("bench-{}", name.split(':').next().unwrap_or("client"));
    let client = Client::<R>::builder(&format!("http://{addr}"), USER, USER)
        .connect()
        .await
        .expect("connect");
    let handled = Arc::new(AtomicU64::new(0));
    let mut listeners = Vec::with_capacity(k * 6);
    for i in 0..k {
        let ch = client.channel(format!("bench-{i}"));
        count_on!(
            ch,
            handled,
            listeners,
            StasisStart,
            ChannelStateChange,
            ChannelVarset,
            ChannelDtmfReceived,
            StasisEnd,
            ChannelDestroyed,
        );
    }
    let done = client.once::<ChannelUserevent>();
    client.start(&[app.as_str()]).await.expect("start");
    let subs_before = client.live_subscriptions();
    let rss_before = rss_kb();
    let cpu0 = cpu_now();
    flood(addr, &app, n, k);
    let t0 = Instant::now();
    let rt = client.runtime().clone();
    let (ev, _) = timeout(&rt, PATIENCE, done)
        .await
        .expect("bench-done within patience")
        .expect("bench-done");
    assert_eq!(ev.eventname, "bench-done");
    // Handlers run as tasks: wait for the last ones.
    let deadline = Instant::now() + PATIENCE;
    while handled.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        rt.sleep_until(Instant::now() + Duration::from_micros(200))
            .await;
    }
    let (wall, cpu) = (t0.elapsed(), cpu_now() - cpu0);
    let stats = client.stats();
    let out = result(
        name,
        n,
        k,
        handled.load(Ordering::Relaxed),
        wall,
        cpu,
        json!({
            "rss_before_kb": rss_before,
            "listeners": listeners.len(),
            "live_subscriptions_before": subs_before,
            "live_subscriptions_after": client.live_subscriptions(),
            "dropped_events": stats.dropped_events,
            "handler_calls": stats.handler_calls,
        }),
    );
    drop(listeners);
    client.close().await;
    out
}
