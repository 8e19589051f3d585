//! Routing: the sans-IO session alone (no socket, no handler), decoding and routing a flood
//! of `ChannelDtmfReceived` frames spread round-robin over `k` live channels, each holding
//! six typed subscriptions (as the events run's handlers). Measured at 100 and at 10,000
//! channels in the same child process, beside a decode-only pass over the same frames, so
//! the routing cost (decode + route minus decode) and its growth with the number of live
//! channels are both visible.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ari_proto::events::Event;
use ari_proto::rest::{BaseUrl, Credentials};
use ari_proto::session::{Filter, Limits, Output, Session, SessionConfig};
use serde_json::{json, Value};

use crate::util::{cpu_now, USER};

/// The subscriptions of every channel, one per event type (the events run's handlers).
const TYPES: [&str; 6] = [
    "StasisStart",
    "ChannelStateChange",
    "ChannelVarset",
    "ChannelDtmfReceived",
    "StasisEnd",
    "ChannelDestroyed",
];

/// A `ChannelDtmfReceived` frame of channel `id`, shaped like Asterisk's.
fn frame(id: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"ChannelDtmfReceived","timestamp":"2026-11-26T11:14:38.299+0000","digit":"5","duration_ms":100,"channel":{{"id":"{id}","name":"PJSIP/bench-{id}","state":"Up","protocol_id":"{id}@127.0.0.1","caller":{{"name":"Bench","number":"1000"}},"connected":{{"name":"","number":""}},"accountcode":"","dialplan":{{"context":"default","exten":"100","priority":1,"app_name":"Stasis","app_data":"bench"}},"creationtime":"2026-11-26T11:14:38.000+0000","language":"en"}},"asterisk_id":"00:00:00:00:00:01","application":"bench"}}"#
    )
    .into_bytes()
}

/// A connected session with six typed subscriptions on each of `k` channels.
fn session(ids: &[String], now: Instant) -> Session {
    let credentials = Credentials::new(USER, USER).expect("credentials");
    let endpoint = BaseUrl::new("http://127.0.0.1:8088", credentials).expect("endpoint");
    let config = SessionConfig::new(["bench"])
        .keepalive(None)
        .limits(Limits::default());
    let mut s = Session::new(endpoint, config);
    s.start(now);
    while s.poll_transmit().is_some() {}
    s.handle_connected(now);
    while s.poll_output().is_some() {}
    for id in ids {
        for t in TYPES {
            s.subscribe(Filter::channel(id.as_str()).with_type(t));
        }
    }
    s
}

/// CPU time of `f`.
fn cpu_of(f: impl FnOnce()) -> Duration {
    let c0 = cpu_now();
    f();
    cpu_now() - c0
}

/// One measurement: decode-only and decode + route of `n` frames over each channel count.
pub(crate) fn run(n: usize, channel_counts: &[usize], repeat: usize) -> Value {
    let now = Instant::now();
    let mut rows = Vec::new();
    for &k in channel_counts {
        let k = k.max(1);
        let ids: Vec<String> = (0..k).map(|i| format!("1700000000.{i}")).collect();
        let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(&ids[i % k])).collect();
        let mut s = session(&ids, now);
        let mut best_route = Duration::MAX;
        let mut best_decode = Duration::MAX;
        let mut delivered = 0usize;
        // Interleaved repeats, least CPU kept; the first pass also warms the state.
        for _ in 0..repeat.max(1) + 1 {
            let mut got = 0usize;
            let route = cpu_of(|| {
                for f in &frames {
                    s.handle_frame(now, f);
                    while let Some(o) = s.poll_output() {
                        if let Output::Event(d) = o {
                            got += d.subscribers.len();
                        }
                    }
                }
            });
            delivered = got;
            let decode = cpu_of(|| {
                for f in &frames {
                    let _ = black_box(Event::decode(black_box(f)));
                }
            });
            best_route = best_route.min(route);
            best_decode = best_decode.min(decode);
        }
        // Every frame reaches exactly its channel's DTMF subscription.
        assert_eq!(
            delivered, n,
            "every event routed to exactly one subscription"
        );
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        rows.push(json!({
            "channels": k,
            "events": n,
            "subscriptions": s.live_subscriptions(),
            "decode_route_us_per_event": per(best_route),
            "decode_us_per_event": per(best_decode),
            "route_us_per_event": (per(best_route) - per(best_decode)).max(0.0),
        }));
    }
    Value::Array(rows)
}
