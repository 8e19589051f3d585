//! Decode + route of the recorded event mix (every frame of `fixtures/asterisk-master`)
//! through a connected [`Session`], with 100 and with 10,000 live channels each holding two
//! subscriptions (all events of the channel, and its DTMF only), in the same run. Routing
//! is hash lookups per resource an event names, so the two figures should be the same.
//!
//! Each iteration subscribes to every resource the recording names (as an application would
//! while following its calls), feeds all frames, drains the outputs, and unsubscribes what
//! did not end by itself, so the state is the same at the start of every iteration.

use std::hint::black_box;
use std::time::Instant;

use ari_proto::events::{Event, ResourceKind};
use ari_proto::rest::{Credentials, Endpoint};
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
    let ep = Endpoint::new(
        "http://127.0.0.1:8088",
        Credentials::new("asterisk", "asterisk").expect("credentials"),
    )
    .expect("endpoint");
    let config = SessionConfig::new(["test", "hello"])
        .keepalive(None)
        .limits(Limits::default().max_queued_outputs(1 << 20));
    let mut s = Session::new(ep, config, now);
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

criterion_group!(benches, route);
criterion_main!(benches);
