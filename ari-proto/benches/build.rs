//! Request building for the common operations: the typed operation, then the full HTTP
//! request (`build_request`: path encoding, query, JSON body, `Host`, Basic auth), and the
//! transport-neutral parts alone (`request_parts`, what REST over WebSocket sends).

use std::hint::black_box;

use ari_proto::ops::{bridges, channels};
use ari_proto::rest::{build_request, request_parts, BaseUrl, Credentials};
use ari_proto::Operation;
use criterion::{criterion_group, criterion_main, Criterion};

const CHANNEL: &str = "1732612345.42";
const BRIDGE: &str = "3f0a6c1e-6a5b-4a8e-9d55-0c2f5a3c1b7e";

fn bench_op<O: Operation>(c: &mut Criterion, name: &str, ep: &BaseUrl, make: impl Fn() -> O) {
    let mut g = c.benchmark_group(name);
    g.bench_function("build_request", |b| {
        b.iter(|| build_request(ep, &make()).map(|r| black_box(r.into_body().len())))
    });
    g.bench_function("request_parts", |b| {
        b.iter(|| request_parts(&make()).map(|p| black_box(p.path.len())))
    });
    g.finish();
}

fn build(c: &mut Criterion) {
    let ep = BaseUrl::new(
        "http://127.0.0.1:8088",
        Credentials::new("asterisk", "asterisk").expect("credentials"),
    )
    .expect("endpoint");
    bench_op(c, "originate", &ep, || {
        channels::Originate::new("PJSIP/alice")
            .app("hello")
            .app_args("inbound,queue=sales")
            .caller_id("\"Bench\" <100>")
            .timeout(30)
            .channel_id(CHANNEL)
            .variable("CALLERID(name)", "Alice")
            .variable("X_TRACE", "abc123")
    });
    bench_op(c, "answer", &ep, || channels::Answer::new(CHANNEL));
    bench_op(c, "play", &ep, || {
        channels::Play::new(CHANNEL, ["sound:hello-world", "digits:42"]).lang("en")
    });
    bench_op(c, "addChannel", &ep, || {
        bridges::AddChannel::new(BRIDGE, [CHANNEL, "1732612345.43"]).role("participant")
    });
    bench_op(c, "getChannelVar", &ep, || {
        channels::GetChannelVar::new(CHANNEL, "CALLERID(name)")
    });
}

criterion_group!(benches, build);
criterion_main!(benches);
