//! Stream consumers under a flood: one `client.event_stream()` with the default queue
//! (1,024 events) whose consumer only counts, on a current-thread and a multi-thread tokio
//! runtime and on smol. The row reports the events the consumer lost (target 0: a consumer
//! that keeps up on average must not lose events to the reader filling its queue first) and
//! the CPU per event.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ari_client::events::Event;
use ari_client::{Client, Runtime};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::events::timeout;
use crate::util::{control, cpu_now, peak_rss_kb, USER};

/// The scenarios (child processes), in the order of the table.
pub(crate) const SCENARIOS: [&str; 3] = ["stream-tokio-ct", "stream-tokio-mt", "stream-smol"];

/// Longest wait for a flood to arrive.
const PATIENCE: Duration = Duration::from_secs(600);

/// Child: runs one scenario.
pub(crate) fn child(scenario: &str, addr: SocketAddr, n: usize, k: usize) -> Value {
    match scenario {
        "stream-tokio-ct" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(consume::<ari_tokio::TokioRuntime>(
                "tokio current-thread: event_stream",
                addr,
                n,
                k,
            )),
        "stream-tokio-mt" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(consume::<ari_tokio::TokioRuntime>(
                "tokio multi-thread (2 workers): event_stream",
                addr,
                n,
                k,
            )),
        "stream-smol" => smol::block_on(consume::<ari_smol::SmolRuntime>(
            "smol: event_stream",
            addr,
            n,
            k,
        )),
        other => panic!("unknown scenario {other}"),
    }
}

/// One client with one event stream; the consumer counts events and lag markers until the
/// flood's `bench-done`.
async fn consume<R: Runtime + Default>(name: &str, addr: SocketAddr, n: usize, k: usize) -> Value {
    let app = format!("bench-stream-{}", name.split(':').next().unwrap_or("x"))
        .replace([' ', '(', ')'], "-");
    let mut builder = Client::<R>::builder(&format!("http://{addr}"), USER, USER);
    // `ARI_BENCH_STREAM_WAIT_MS=0`: the reader never waits for the consumer (as before).
    if let Some(ms) = std::env::var("ARI_BENCH_STREAM_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.stream_wait(Duration::from_millis(ms));
    }
    let client = builder.connect().await.expect("connect");
    let mut stream = client.event_stream();
    client.start(&[app.as_str()]).await.expect("start");
    let cpu0 = cpu_now();
    let (status, body) = control(
        addr,
        "POST",
        &format!("/_bench/flood?n={n}&channels={k}&app={app}&mode=bulk"),
    )
    .expect("flood request");
    assert_eq!(status, 202, "flood refused: {body}");
    let t0 = Instant::now();
    let rt = client.runtime().clone();
    let (received, lagged) = timeout(&rt, PATIENCE, async {
        let (mut received, mut lagged) = (0u64, 0u64);
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::ChannelUserevent(e)) if e.eventname == "bench-done" => break,
                Ok(_) => received += 1,
                Err(l) => lagged += l.0,
            }
        }
        (received, lagged)
    })
    .await
    .expect("bench-done within patience");
    let (wall, cpu) = (t0.elapsed(), cpu_now() - cpu0);
    let stats = client.stats();
    let out = json!({
        "client": name,
        "events": n,
        "channels": k,
        "queue": 1024,
        "received": received,
        "lost": (n as u64).saturating_sub(received),
        "lagged": lagged,
        "dropped_events": stats.dropped_events,
        "stream_stalls": stats.stream_stalls,
        "seconds": wall.as_secs_f64(),
        "events_per_sec": n as f64 / wall.as_secs_f64().max(1e-9),
        "cpu_seconds": cpu.as_secs_f64(),
        "cpu_us_per_event": cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
        "peak_rss_kb": peak_rss_kb(),
    });
    drop(stream);
    client.close().await;
    out
}

/// Orchestrator: every scenario `repeat` times (interleaved); per scenario the run with the
/// most events lost is kept (the target is about the worst case), ties broken by least CPU.
pub(crate) fn run(repeat: usize, mut measure: impl FnMut(&str) -> Value) -> Value {
    let mut worst: Vec<Option<Value>> = vec![None; SCENARIOS.len()];
    for rep in 0..repeat {
        for (i, scenario) in SCENARIOS.iter().enumerate() {
            eprintln!("ari-bench: {scenario} (run {}) ...", rep + 1);
            let r = measure(scenario);
            let key = |v: &Value| {
                (
                    v["lost"].as_u64().unwrap_or(u64::MAX),
                    -v["cpu_seconds"].as_f64().unwrap_or(0.0),
                )
            };
            if worst[i]
                .as_ref()
                .is_none_or(|b| key(&r).partial_cmp(&key(b)) == Some(std::cmp::Ordering::Greater))
            {
                worst[i] = Some(r);
            }
        }
    }
    Value::Array(worst.into_iter().flatten().collect())
}

/// The rows as a table (empty without results).
pub(crate) fn table(r: &Value) -> String {
    let mut s = String::new();
    let Some(rows) = r["streams"].as_array() else {
        return s;
    };
    let _ = writeln!(
        s,
        "\nStream consumer under a flood (default queue 1,024; worst run kept; target: 0 lost)"
    );
    let _ = writeln!(
        s,
        "{:<46} {:>9} {:>9} {:>8} {:>7} {:>10} {:>9}",
        "client", "events", "lost", "dropped", "stalls", "CPU µs/ev", "ev/s"
    );
    for v in rows {
        let _ = writeln!(
            s,
            "{:<46} {:>9} {:>9} {:>8} {:>7} {:>10.2} {:>9.0}",
            v["client"].as_str().unwrap_or_default(),
            v["events"].as_u64().unwrap_or(0),
            v["lost"].as_u64().unwrap_or(0),
            v["dropped_events"].as_u64().unwrap_or(0),
            v["stream_stalls"].as_u64().unwrap_or(0),
            v["cpu_us_per_event"].as_f64().unwrap_or(f64::NAN),
            v["events_per_sec"].as_f64().unwrap_or(f64::NAN),
        );
    }
    s
}
