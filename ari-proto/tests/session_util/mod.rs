//! Helpers shared by the session tests (included with `#[path]`, not a test target of its own).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ari_proto::events::Event;
use ari_proto::rest::{BaseUrl, Credentials};
use ari_proto::session::{Output, Session, SessionConfig, Transmit};

/// One recorded frame.
pub(crate) struct Recorded {
    pub(crate) run: u64,
    pub(crate) conn: String,
    pub(crate) frame: String,
}

pub(crate) fn recorded_events() -> Vec<Recorded> {
    let text = include_str!("../../../fixtures/asterisk-master/events.jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("fixture line is JSON");
            Recorded {
                run: v["run"].as_u64().expect("run"),
                conn: v["conn"].as_str().expect("conn").to_string(),
                frame: v["frame"].as_str().expect("frame").to_string(),
            }
        })
        .collect()
}

pub(crate) fn recorded_sent() -> Vec<Recorded> {
    let text = include_str!("../../../fixtures/asterisk-master/ws-sent.jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("fixture line is JSON");
            Recorded {
                run: v["run"].as_u64().expect("run"),
                conn: v["conn"].as_str().expect("conn").to_string(),
                frame: v["frame"].as_str().expect("frame").to_string(),
            }
        })
        .collect()
}

pub(crate) fn frames_of(run: u64, conn: &str) -> Vec<String> {
    recorded_events()
        .into_iter()
        .filter(|r| r.run == run && r.conn == conn)
        .map(|r| r.frame)
        .collect()
}

pub(crate) fn endpoint(base: &str) -> BaseUrl {
    BaseUrl::new(
        base,
        Credentials::new("asterisk", "s3cret").expect("credentials"),
    )
    .expect("endpoint")
}

/// A session that has connected once at `t0` (its outputs drained).
pub(crate) fn connected(config: SessionConfig, t0: Instant) -> Session {
    let mut s = Session::new(endpoint("http://127.0.0.1:8088"), config);
    s.start(t0);
    assert!(matches!(s.poll_transmit(), Some(Transmit::Connect(_))));
    s.handle_connected(t0);
    drain(&mut s);
    s
}

pub(crate) fn drain(s: &mut Session) -> Vec<Output> {
    let mut v = Vec::new();
    while let Some(o) = s.poll_output() {
        v.push(o);
    }
    v
}

pub(crate) fn drain_transmits(s: &mut Session) -> Vec<Transmit> {
    let mut v = Vec::new();
    while let Some(t) = s.poll_transmit() {
        v.push(t);
    }
    v
}

pub(crate) fn decode(frame: &str) -> Event {
    Event::decode(frame.as_bytes()).expect("recorded frame decodes")
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The origin of simulated time. Only differences from it matter; nothing in the tests
/// waits on the real clock.
#[allow(clippy::disallowed_methods)]
pub(crate) fn epoch() -> Instant {
    Instant::now()
}
