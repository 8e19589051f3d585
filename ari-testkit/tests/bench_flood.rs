//! Flood mode: `POST /_bench/flood`, `GET /_bench/stats` and `MockServer::flood`.
//! Counts and order only; no timing is asserted.

mod common;

use std::collections::HashMap;

use ari_testkit::{FloodMode, FloodSpec, MockServer, FLOOD_DONE_EVENT};
use common::{next_json, request, ws_connect, Ws};
use serde_json::Value;

/// Reads frames until the `bench-done` event; returns them (the final one included).
async fn read_flood(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = next_json(ws).await;
        let done = v["type"] == "ChannelUserevent" && v["eventname"] == FLOOD_DONE_EVENT;
        out.push(v);
        if done {
            return out;
        }
    }
}

/// Checks counts, per-channel lifecycle order and the full channel objects.
fn check(frames: &[Value], app: &str, n: usize, k: usize) {
    assert_eq!(frames.len(), n + 1);
    let last = frames.last().expect("frames");
    assert_eq!(last["userevent"]["eventname"], FLOOD_DONE_EVENT);
    assert_eq!(last["userevent"]["events"], n);
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for f in &frames[..n] {
        assert_eq!(f["application"], app);
        assert!(f["timestamp"].is_string() && f["asterisk_id"].is_string());
        let ch = &f["channel"];
        for field in [
            "id",
            "name",
            "state",
            "caller",
            "connected",
            "dialplan",
            "creationtime",
        ] {
            assert!(!ch[field].is_null(), "channel.{field} missing in {f}");
        }
        per.entry(ch["id"].as_str().expect("id").to_owned())
            .or_default()
            .push(f["type"].as_str().expect("type").to_owned());
    }
    assert_eq!(per.len(), k.min(n));
    for (id, types) in &per {
        assert!(id.starts_with("bench-"));
        assert_eq!(types[0], "StasisStart", "{id}: {types:?}");
        let l = types.len();
        if l >= 3 {
            assert_eq!(types[l - 2], "StasisEnd", "{id}: {types:?}");
        }
        if l >= 2 {
            assert_eq!(types[l - 1], "ChannelDestroyed", "{id}: {types:?}");
        }
    }
    let kinds: std::collections::HashSet<&str> = frames[..n]
        .iter()
        .filter_map(|f| f["type"].as_str())
        .collect();
    if n >= 5 * k {
        for t in [
            "StasisStart",
            "ChannelStateChange",
            "ChannelVarset",
            "ChannelDtmfReceived",
            "StasisEnd",
            "ChannelDestroyed",
        ] {
            assert!(kinds.contains(t), "{t} missing");
        }
    }
}

#[tokio::test]
async fn http_flood_then_stats() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=bench").await;
    // Self-describing before any flood: the connected app, no flood yet.
    let before = request(server.addr(), "GET", "/_bench/stats", None, None).await;
    assert_eq!(before.status, 200);
    let before = before.json();
    assert_eq!(before["apps"], serde_json::json!(["bench"]));
    assert_eq!(before["floods"], serde_json::json!([]));
    assert_eq!(before["floods_total"], 0);
    // The WebSocket and this request so far.
    assert!(before["connections_accepted"].as_u64().expect("accepted") >= 2);
    let rest_before = before["rest_requests"].as_u64().expect("rest_requests");
    assert!(before["cpu_seconds"].as_f64().expect("cpu") > 0.0);
    assert!(before["peak_rss_bytes"].as_u64().expect("rss") > 1 << 20);
    let ping = common::get(server.addr(), "/ari/asterisk/ping").await;
    assert_eq!(ping.status, 200);

    let r = request(
        server.addr(),
        "POST",
        "/_bench/flood?n=2000&channels=100&app=bench&mode=frame",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let accepted = r.json();
    assert_eq!(accepted["events"], 2000);
    assert_eq!(accepted["n"], 2000);
    assert_eq!(accepted["frames"], 2001);
    assert_eq!(accepted["connections"], 1);
    assert_eq!(accepted["mix"], "full");

    let frames = read_flood(&mut ws).await;
    check(&frames, "bench", 2000, 100);
    // The announced counts and bytes are what arrived.
    let mut seen: HashMap<String, u64> = HashMap::new();
    for f in &frames {
        *seen
            .entry(f["type"].as_str().expect("type").to_owned())
            .or_default() += 1;
    }
    let announced: HashMap<String, u64> =
        serde_json::from_value(accepted["counts"].clone()).expect("counts");
    assert_eq!(announced, seen);
    assert_eq!(seen["ChannelDestroyed"], 100);

    // The stats are final once the connection task has flushed; poll until done.
    let (all, stats) = loop {
        let s = request(server.addr(), "GET", "/_bench/stats", None, None)
            .await
            .json();
        let last = s["floods"][0].clone();
        if last["done"] == true {
            break (s, last);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(all["floods_total"], 1);
    assert_eq!(
        all["rest_requests"].as_u64().expect("rest_requests"),
        rest_before + 1
    );
    assert_eq!(stats["counts"], accepted["counts"]);
    assert_eq!(stats["bytes"], accepted["bytes"]);
    assert_eq!(stats["n"], 2000);
    assert!(stats["send_seconds"].as_f64().expect("send_seconds") >= 0.0);
    assert_eq!(stats["events"], 2000);
    assert_eq!(stats["frames"], 2001);
    assert_eq!(stats["mode"], "frame");
    assert_eq!(stats["app"], "bench");
    let bytes: u64 = frames.iter().map(|f| f.to_string().len() as u64).sum();
    // Re-serialising may reorder nothing but may not be byte-identical: compare loosely.
    let reported = stats["bytes"].as_u64().expect("bytes");
    assert!(
        reported > bytes / 2 && reported < bytes * 2,
        "{reported} vs {bytes}"
    );
    assert!(stats["seconds"].as_f64().expect("seconds") >= 0.0);
    assert!(stats["events_per_sec"].as_f64().is_some());
}

#[tokio::test]
async fn rust_api_flood_bulk_uneven_split() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=bench").await;
    // Blocks until written: run it off the test's runtime while this task reads.
    let reader = tokio::spawn(async move { read_flood(&mut ws).await });
    let report = {
        let server = &server;
        std::thread::scope(|s| {
            s.spawn(|| server.flood(FloodSpec::new("bench", 1003, 10).mode(FloodMode::Bulk)))
                .join()
                .expect("flood thread")
        })
    }
    .expect("flood");
    let frames = reader.await.expect("reader");
    check(&frames, "bench", 1003, 10);
    assert!(report.done);
    assert_eq!(report.events, 1003);
    assert_eq!(report.frames, 1004);
    assert_eq!(report.connections, 1);
    assert_eq!(report.mode, FloodMode::Bulk);
    assert!(report.bytes > 1003 * 300);
    assert_eq!(server.flood_stats(), Some(report));
}

#[tokio::test]
async fn more_channels_than_events_and_errors() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=bench").await;
    let r = request(
        server.addr(),
        "POST",
        "/_bench/flood?n=5&channels=8&app=bench",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 202);
    let frames = read_flood(&mut ws).await;
    check(&frames, "bench", 5, 8);
    assert!(frames[..5].iter().all(|f| f["type"] == "StasisStart"));

    for (q, status) in [
        ("n=5&channels=2&app=nobody", 404),
        ("n=5&channels=2", 400),
        ("n=x&app=bench", 400),
        ("n=5&app=bench&mode=fast", 400),
    ] {
        let r = request(
            server.addr(),
            "POST",
            &format!("/_bench/flood?{q}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, status, "{q}: {}", r.text());
    }
    assert!(server
        .flood(FloodSpec::new("nobody", 1, 1))
        .is_err_and(|e| e.to_string().contains("nobody")));
    // The connection is still usable afterwards.
    server.push_event("bench", serde_json::json!({"type": "Ping"}));
    assert_eq!(next_json(&mut ws).await["type"], "Ping");
}

#[tokio::test]
async fn stasis_mix_has_no_channel_destroyed() {
    let server = MockServer::start();
    let mut ws = ws_connect(server.addr(), "app=bench").await;
    let r = request(
        server.addr(),
        "POST",
        "/_bench/flood?n=40&channels=4&app=bench&mix=stasis",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["mix"], "stasis");
    let frames = read_flood(&mut ws).await;
    assert_eq!(frames.len(), 41);
    let mut last: HashMap<String, String> = HashMap::new();
    for f in &frames[..40] {
        assert_ne!(f["type"], "ChannelDestroyed");
        last.insert(
            f["channel"]["id"].as_str().expect("id").to_owned(),
            f["type"].as_str().expect("type").to_owned(),
        );
    }
    assert_eq!(last.len(), 4);
    assert!(last.values().all(|t| t == "StasisEnd"), "{last:?}");
    assert_eq!(r.json()["counts"]["StasisEnd"], 4);
    let bad = request(
        server.addr(),
        "POST",
        "/_bench/flood?n=4&app=bench&mix=odd",
        None,
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
}
