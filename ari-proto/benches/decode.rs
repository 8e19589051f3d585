//! Typed event decoding of the recorded event mix, beside parsing the same frames into
//! `serde_json::Value` (the untyped floor), in the same run.

use ari_proto::events::Event;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

mod common;
use common::recorded_frames as frames;

fn decode(c: &mut Criterion) {
    let frames = frames();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("event_mix");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for f in &frames {
                let v: serde_json::Value = serde_json::from_slice(black_box(f)).expect("json");
                black_box(v);
            }
        })
    });
    g.bench_function("typed_event", |b| {
        b.iter(|| {
            for f in &frames {
                let e = Event::decode(black_box(f)).expect("decodes");
                black_box(e);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
