//! Decode + route of the recorded event mix (every frame of `fixtures/asterisk-master`)
//! through a connected [`Session`], with 100 and with 10,000 live channels each holding two
//! subscriptions (all events of the channel, and its DTMF only), in the same run. Routing
//! is hash lookups per resource an event names, so the two figures should be the same.
//!
//! Each iteration subscribes to every resource the recording names (as an application would
//! while following its calls), feeds all frames, drains the outputs, and unsubscribes what
//! did not end by itself, so the state is the same at the start of every iteration.
//!
//! A second group, `decode_route_active`, makes every live channel busy: 10,000
//! `ChannelDtmfReceived` frames spread evenly over 100 or over 10,000 channels, each channel
//! holding six typed subscriptions and one for all its events (as `ari-bench` does end to
//! end). With 10,000 channels every event touches the routing state of a channel not seen
//! for 9,999 events, so the difference between the two figures is what the routing state
//! costs in cache misses.

use std::hint::black_box;
use std::time::Instant;

use ari_proto::events::{Event, ResourceKind};
use ari_proto::rest::{BaseUrl, Credentials};
use ari_proto::session::{Filter, Limits, Session, SessionConfig, Transmit};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod common;
use common::recorded_frames as frames;

fn resources(frames: &[Vec<u8>]) -> Vec<(ResourceKind, String)> {
    let mut out = std::collections::BTreeSet::new();
    for f in frames {
        if let Ok(ev) = Event::decode(f) {
            for r in ev.resources().iter() {
                let id = if r.kind == ResourceKind::Endpoint {
                    format!("{}/{}", r.technology, r.id)
                } else {
                    r.id.to_string()
                };
                out.insert((r.kind, id));
            }
        }
    }
    out.into_iter().collect()
}

#[allow(clippy::disallowed_methods)] // the origin of simulated time; never read again
fn epoch() -> Instant {
    Instant::now()
}

fn session(live_channels: usize, now: Instant) -> Session {
    let ep = BaseUrl::new(
        "http://127.0.0.1:8088",
        Credentials::new("asterisk", "asterisk").expect("credentials"),
    )
    .expect("endpoint");
    let config = SessionConfig::new(["test", "hello"])
        .keepalive(None)
        .limits(Limits::default().max_queued_outputs(1 << 20));
    let mut s = Session::new(ep, config);
    s.start(now);
    while let Some(t) = s.poll_transmit() {
        assert!(matches!(t, Transmit::Connect(_)));
    }
    s.handle_connected(now);
    while s.poll_output().is_some() {}
    // The application's global listeners.
    s.subscribe(Filter::all());
    s.subscribe(Filter::event_type("StasisStart"));
    s.subscribe(Filter::event_type("StasisEnd"));
    // Live channels, each followed twice, none of which the recorded traffic names.
    for i in 0..live_channels {
        let id = format!("live-{i:08}");
        s.subscribe(Filter::channel(id.clone()));
        s.subscribe(Filter::channel(id).with_type("ChannelDtmfReceived"));
    }
    s
}

fn route(c: &mut Criterion) {
    let frames = frames();
    let followed = resources(&frames);
    let mut g = c.benchmark_group("decode_route");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.sample_size(40);
    for live in [100usize, 10_000] {
        let now = epoch();
        let mut s = session(live, now);
        let baseline = s.live_subscriptions();
        g.bench_with_input(BenchmarkId::new("live_channels", live), &live, |b, _| {
            b.iter(|| {
                let ids: Vec<_> = followed
                    .iter()
                    .map(|(k, id)| s.subscribe(Filter::resource(*k, id.as_str())))
                    .collect();
                for f in &frames {
                    s.handle_frame(now, f);
                }
                while let Some(o) = s.poll_output() {
                    black_box(o);
                }
                for id in ids {
                    s.unsubscribe(id);
                }
            })
        });
        assert_eq!(
            s.live_subscriptions(),
            baseline,
            "no leak across iterations"
        );
    }
    g.finish();
}

/// A `ChannelDtmfReceived` frame of channel `id`, shaped like Asterisk's.
fn dtmf_frame(id: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"ChannelDtmfReceived","timestamp":"2026-11-26T11:14:38.299+0000","digit":"5","duration_ms":100,"channel":{{"id":"{id}","name":"PJSIP/{id}","state":"Up","protocol_id":"{id}@127.0.0.1","caller":{{"name":"Bench","number":"1000"}},"connected":{{"name":"","number":""}},"accountcode":"","dialplan":{{"context":"default","exten":"100","priority":1,"app_name":"Stasis","app_data":"test"}},"creationtime":"2026-11-26T11:14:38.000+0000","language":"en"}},"asterisk_id":"00:00:00:00:00:01","application":"test"}}"#
    )
    .into_bytes()
}

fn route_active(c: &mut Criterion) {
    const EVENTS: usize = 10_000;
    const TYPES: [&str; 6] = [
        "StasisStart",
        "ChannelStateChange",
        "ChannelVarset",
        "ChannelDtmfReceived",
        "StasisEnd",
        "ChannelDestroyed",
    ];
    let mut g = c.benchmark_group("decode_route_active");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(30);
    for live in [100usize, 10_000] {
        let now = epoch();
        let mut s = session(0, now);
        let ids: Vec<String> = (0..live)
            .map(|i| format!("{:010}.{i}", 1_700_000_000))
            .collect();
        for id in &ids {
            for t in TYPES {
                s.subscribe(Filter::channel(id.as_str()).with_type(t));
            }
            s.subscribe(Filter::channel(id.as_str()));
        }
        // Round-robin over the channels, so consecutive events concern different channels.
        let frames: Vec<Vec<u8>> = (0..EVENTS).map(|i| dtmf_frame(&ids[i % live])).collect();
        g.bench_with_input(BenchmarkId::new("live_channels", live), &live, |b, _| {
            b.iter(|| {
                for f in &frames {
                    s.handle_frame(now, f);
                }
                let mut delivered = 0usize;
                while let Some(o) = s.poll_output() {
                    if let ari_proto::session::Output::Event(d) = o {
                        delivered += d.subscribers.len();
                    }
                }
                // Each event reaches its channel's DTMF subscription, the channel's catch-all
                // and the global catch-all.
                assert_eq!(delivered, EVENTS * 3);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, route, route_active);
criterion_main!(benches);
