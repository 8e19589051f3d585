//! Memory: simulated call lifecycles (originate → StasisStart → hangup → ChannelDestroyed),
//! each with per-instance listeners, and the RSS after a first batch and after all of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_client::events::{
    ChannelDestroyed, ChannelHangupRequest, ChannelStateChange, StasisEnd, StasisStart,
};
use ari_client::{Client, Runtime};
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::events::timeout;
use crate::util::{cpu_now, rss_kb, USER};

/// Calls in flight at once.
const CONCURRENCY: usize = 32;

/// Longest wait for one event of a lifecycle.
const PATIENCE: Duration = Duration::from_secs(30);

async fn lifecycle<R: Runtime>(client: &Client<R>, app: &str, seen: &Arc<AtomicU64>) {
    let rt = client.runtime();
    let ch = client.new_channel();
    for l in [
        {
            let s = seen.clone();
            ch.on(move |_: ChannelStateChange, _| {
                s.fetch_add(1, Ordering::Relaxed);
                std::future::ready(())
            })
        },
        {
            let s = seen.clone();
            ch.on(move |_: ChannelHangupRequest, _| {
                s.fetch_add(1, Ordering::Relaxed);
                std::future::ready(())
            })
        },
        {
            let s = seen.clone();
            ch.on(move |_: StasisEnd, _| {
                s.fetch_add(1, Ordering::Relaxed);
                std::future::ready(())
            })
        },
    ] {
        // Ended by ChannelDestroyed, not by hand.
        drop(l);
    }
    let started = ch.once::<StasisStart>();
    ch.originate("PJSIP/bench")
        .map(|op| op.app(app))
        .await
        .expect("originate");
    timeout(rt, PATIENCE, started)
        .await
        .expect("StasisStart in time")
        .expect("StasisStart");
    let destroyed = ch.once::<ChannelDestroyed>();
    ch.hangup().await.expect("hangup");
    timeout(rt, PATIENCE, destroyed)
        .await
        .expect("ChannelDestroyed in time")
        .expect("ChannelDestroyed");
}

/// Runs `first` lifecycles, measures, then up to `total`, measures again.
pub(crate) async fn client<R: Runtime + Default>(
    name: &str,
    addr: SocketAddr,
    first: usize,
    total: usize,
) -> Value {
    let app = format!("bench-life-{}", name.split(':').next().unwrap_or("client"));
    let client = Client::<R>::builder(&format!("http://{addr}"), USER, USER)
        .connect()
        .await
        .expect("connect");
    client.start(&[app.as_str()]).await.expect("start");
    let baseline = client.live_subscriptions();
    let seen = Arc::new(AtomicU64::new(0));
    let next = AtomicUsize::new(0);
    let cpu0 = cpu_now();
    let t0 = Instant::now();
    let mut checkpoints = Vec::new();
    for target in [first, total] {
        join_all((0..CONCURRENCY).map(|_| async {
            while next.fetch_add(1, Ordering::Relaxed) < target {
                lifecycle(&client, &app, &seen).await;
            }
        }))
        .await;
        next.store(target, Ordering::Relaxed);
        // Let the last handler tasks finish before measuring.
        client
            .runtime()
            .sleep_until(Instant::now() + Duration::from_millis(200))
            .await;
        checkpoints.push(json!({
            "lifecycles": target,
            "rss_kb": rss_kb(),
            "live_subscriptions": client.live_subscriptions(),
            "seconds": t0.elapsed().as_secs_f64(),
        }));
    }
    let cpu = cpu_now() - cpu0;
    let stats = client.stats();
    let out = json!({
        "client": name,
        "baseline_subscriptions": baseline,
        "checkpoints": checkpoints,
        "handler_calls": seen.load(Ordering::Relaxed),
        "dropped_events": stats.dropped_events,
        "cpu_us_per_lifecycle": cpu.as_secs_f64() * 1e6 / total.max(1) as f64,
        "lifecycles_per_sec": total as f64 / t0.elapsed().as_secs_f64().max(1e-9),
    });
    client.close().await;
    out
}
