//! The session's connection machinery in simulated time: the WebSocket request, reconnect
//! schedules (as transcripts), stop, keepalive, request deadlines, bounds.

#[path = "session_util/mod.rs"]
mod util;

use std::time::{Duration, Instant};

use ari_proto::ops;
use ari_proto::session::{
    ConnectionEvent, ConnectionState, Filter, Keepalive, Limits, Output, ReconnectPolicy,
    RequestError, SendError, Session, SessionConfig, Transmit, Warning, WsAuth,
};
use util::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A line of transcript for everything the session said, with time relative to `t0`.
fn transcript(s: &mut Session, t0: Instant, now: Instant, out: &mut Vec<String>) {
    let at = now.duration_since(t0).as_millis();
    while let Some(t) = s.poll_transmit() {
        out.push(match t {
            Transmit::Connect(r) => format!("{at} connect {}", r.uri()),
            Transmit::Text(t) => format!("{at} text {t}"),
            Transmit::Ping(p) => format!("{at} ping {p:?}"),
            Transmit::Close => format!("{at} close"),
            other => format!("{at} {other:?}"),
        });
    }
    while let Some(o) = s.poll_output() {
        out.push(match o {
            Output::Connection(ConnectionEvent::Connected { reconnected, .. }) => {
                format!("{at} connected reconnected={reconnected}")
            }
            Output::Connection(ConnectionEvent::Reconnecting {
                attempt,
                delay,
                reason,
                ..
            }) => format!(
                "{at} reconnecting #{attempt} in {}ms ({reason})",
                delay.as_millis()
            ),
            Output::Connection(ConnectionEvent::MaxRetries {
                attempts, reason, ..
            }) => format!("{at} gave up after {attempts} ({reason})"),
            Output::Connection(ConnectionEvent::Closed) => format!("{at} closed"),
            Output::Response { id, result, .. } => format!("{at} response {id} {result:?}"),
            other => format!("{at} {other:?}"),
        });
    }
}

fn no_jitter() -> ReconnectPolicy {
    ReconnectPolicy::default()
        .initial_delay(ms(100))
        .multiplier(2.0)
        .max_delay(ms(1000))
        .jitter(0.0)
        .stable_after(secs(10))
}

#[test]
fn websocket_request_for_http_and_https() {
    let t0 = epoch();
    let mut s = Session::new(
        endpoint("http://pbx:8088"),
        SessionConfig::new(["hello", "x y"]).subscribe_all(true),
    );
    s.start(t0);
    let Some(Transmit::Connect(req)) = s.poll_transmit() else {
        panic!("connect expected")
    };
    assert_eq!(
        req.uri(),
        "ws://pbx:8088/ari/events?app=hello,x%20y&subscribeAll=true"
    );
    let h = req.headers();
    assert_eq!(h["host"], "pbx:8088");
    assert_eq!(h["authorization"], "Basic YXN0ZXJpc2s6czNjcmV0");
    assert!(h["authorization"].is_sensitive());
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["connection"], "Upgrade");
    assert_eq!(h["sec-websocket-version"], "13");
    assert_eq!(h["sec-websocket-key"].len(), 24);
    assert!(!h.contains_key("sec-websocket-protocol"));

    let mut s = Session::new(
        endpoint("https://pbx.example/asterisk/ari/"),
        SessionConfig::new(["hello"])
            .auth(WsAuth::ApiKey)
            .offer_subprotocol(true),
    );
    s.start(t0);
    let Some(Transmit::Connect(req)) = s.poll_transmit() else {
        panic!("connect expected")
    };
    assert_eq!(
        req.uri(),
        "wss://pbx.example/asterisk/ari/events?app=hello&api_key=asterisk%3As3cret"
    );
    assert!(!req.headers().contains_key("authorization"));
    assert_eq!(req.headers()["sec-websocket-protocol"], "ari");
}

/// Failing connections back off 100, 200, 400, 800, 1000 (cap) ms; the fifth failure gives up.
#[test]
fn reconnect_schedule_transcript_until_max_retries() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"])
        .keepalive(None)
        .reconnect(no_jitter().max_attempts(Some(5)));
    let mut s = Session::new(endpoint("http://h:8088"), config);
    let mut out = Vec::new();
    let mut now = t0;
    s.start(now);
    transcript(&mut s, t0, now, &mut out);
    for _ in 0..10 {
        if s.state() != ConnectionState::Connecting {
            break;
        }
        s.handle_connect_failed(now, "refused");
        transcript(&mut s, t0, now, &mut out);
        let Some(next) = s.poll_timeout() else { break };
        // A spurious early wake-up changes nothing.
        s.handle_timeout(now);
        assert!(s.poll_transmit().is_none());
        now = next;
        s.handle_timeout(now);
        transcript(&mut s, t0, now, &mut out);
    }
    assert_eq!(
        out,
        [
            "0 connect ws://h:8088/ari/events?app=app",
            "0 reconnecting #1 in 100ms (refused)",
            "100 connect ws://h:8088/ari/events?app=app",
            "100 reconnecting #2 in 200ms (refused)",
            "300 connect ws://h:8088/ari/events?app=app",
            "300 reconnecting #3 in 400ms (refused)",
            "700 connect ws://h:8088/ari/events?app=app",
            "700 reconnecting #4 in 800ms (refused)",
            "1500 connect ws://h:8088/ari/events?app=app",
            "1500 reconnecting #5 in 1000ms (refused)",
            "2500 connect ws://h:8088/ari/events?app=app",
            "2500 gave up after 5 (refused)",
        ]
    );
    assert_eq!(s.state(), ConnectionState::GaveUp);
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.stats().reconnects, 5);
    // `start` tries again from scratch.
    s.start(now);
    assert!(matches!(s.poll_transmit(), Some(Transmit::Connect(_))));
}

/// A connection that drops early keeps counting attempts; one that lived `stable_after`
/// resets the count. Reconnections report `reconnected=true`.
#[test]
fn attempts_reset_after_a_stable_connection() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"])
        .keepalive(None)
        .reconnect(no_jitter());
    let mut s = Session::new(endpoint("http://h:8088"), config);
    let mut out = Vec::new();
    let mut now = t0;
    s.start(now);
    s.handle_connected(now);
    transcript(&mut s, t0, now, &mut out);
    now += secs(1);
    s.handle_disconnected(now, "eof");
    transcript(&mut s, t0, now, &mut out);
    now = s.poll_timeout().expect("reconnect");
    s.handle_timeout(now);
    s.handle_connected(now);
    transcript(&mut s, t0, now, &mut out);
    now += secs(1);
    s.handle_disconnected(now, "eof");
    transcript(&mut s, t0, now, &mut out);
    now = s.poll_timeout().expect("reconnect");
    s.handle_timeout(now);
    s.handle_connected(now);
    transcript(&mut s, t0, now, &mut out);
    now += secs(10);
    s.handle_disconnected(now, "eof");
    transcript(&mut s, t0, now, &mut out);
    assert_eq!(
        out,
        [
            "0 connect ws://h:8088/ari/events?app=app",
            "0 connected reconnected=false",
            "1000 reconnecting #1 in 100ms (eof)",
            "1100 connect ws://h:8088/ari/events?app=app",
            "1100 connected reconnected=true",
            "2100 reconnecting #2 in 200ms (eof)",
            "2300 connect ws://h:8088/ari/events?app=app",
            "2300 connected reconnected=true",
            "12300 reconnecting #1 in 100ms (eof)",
        ]
    );
}

/// `stop` closes, fails pending requests, emits Closed, and never reconnects: later socket
/// reports are stale, there is no deadline left.
#[test]
fn user_stop_never_reconnects() {
    let t0 = epoch();
    let mut s = connected(SessionConfig::new(["app"]).reconnect(no_jitter()), t0);
    let id = s
        .send_request(t0, &ops::asterisk::Ping::new())
        .expect("sent");
    drain_transmits(&mut s);
    s.stop();
    let mut out = Vec::new();
    transcript(&mut s, t0, t0, &mut out);
    assert_eq!(
        out,
        [
            "0 close".to_string(),
            format!("0 response {id} Err(Closed)"),
            "0 closed".to_string(),
        ]
    );
    assert_eq!(s.poll_timeout(), None);
    s.handle_disconnected(t0 + secs(1), "eof");
    s.handle_connect_failed(t0 + secs(1), "refused");
    s.handle_timeout(t0 + secs(100));
    s.stop();
    assert!(s.poll_transmit().is_none());
    assert!(s.poll_output().is_none());
    assert_eq!(s.state(), ConnectionState::Stopped);
    assert_eq!(s.stats().reconnects, 0);
    assert_eq!(
        s.send_request(t0, &ops::asterisk::Ping::new()),
        Err(SendError::NotConnected)
    );

    // Stop while waiting to reconnect cancels the reconnect.
    let mut s = connected(SessionConfig::new(["app"]).reconnect(no_jitter()), t0);
    s.handle_disconnected(t0, "eof");
    drain(&mut s);
    s.stop();
    assert!(s.poll_transmit().is_none(), "no socket to close");
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + secs(60));
    assert!(s.poll_transmit().is_none());
}

/// Pings every interval; a pong keeps the connection; a missing pong closes it, fails
/// pending requests at once and reconnects.
#[test]
fn keepalive_transcript() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"])
        .keepalive(Some(Keepalive::new(secs(20), secs(5))))
        .reconnect(no_jitter())
        .request_timeout(secs(60));
    let mut s = connected(config, t0);
    let mut out = Vec::new();
    // First ping answered.
    let mut now = s.poll_timeout().expect("ping due");
    s.handle_timeout(now);
    transcript(&mut s, t0, now, &mut out);
    now += ms(30);
    s.handle_pong();
    // Second ping unanswered; a request is pending when the connection is declared dead.
    now = s.poll_timeout().expect("ping due");
    s.handle_timeout(now);
    let id = s
        .send_request(now, &ops::asterisk::Ping::new())
        .expect("sent");
    transcript(&mut s, t0, now, &mut out);
    now = s.poll_timeout().expect("pong deadline");
    s.handle_timeout(now);
    transcript(&mut s, t0, now, &mut out);
    assert_eq!(
        out,
        [
            "20000 ping [0, 0, 0, 0, 0, 0, 0, 1]".to_string(),
            "40000 ping [0, 0, 0, 0, 0, 0, 0, 2]".to_string(),
            format!(
                "40000 text {{\"type\":\"RESTRequest\",\"request_id\":\"{id}\",\"method\":\"GET\",\"uri\":\"asterisk/ping\"}}"
            ),
            "45000 close".to_string(),
            format!("45000 response {id} Err(Disconnected {{ reason: \"keepalive: no pong within 5s\" }})"),
            "45000 reconnecting #1 in 100ms (keepalive: no pong within 5s)".to_string(),
        ]
    );
    assert_eq!(s.stats().keepalive_timeouts, 1);
    assert_eq!(s.stats().pings, 2);
    assert_eq!(s.pending_requests(), 0);
    assert_eq!(s.poll_timeout(), Some(now + ms(100)));
}

/// Each pending request has a deadline; it fails with Timeout exactly then, a late
/// response is then an ordinary (counted) event; a disconnect fails all the others at once.
#[test]
fn pending_requests_time_out_and_fail_on_disconnect() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"])
        .keepalive(None)
        .request_timeout(secs(2))
        .reconnect(no_jitter());
    let mut s = connected(config, t0);
    let r1 = s.send_request(t0, &ops::asterisk::Ping::new()).expect("r1");
    let r2 = s
        .send_request(t0 + secs(1), &ops::asterisk::Ping::new())
        .expect("r2");
    let r3 = s
        .send_request(t0 + secs(1), &ops::asterisk::Ping::new())
        .expect("r3");
    drain_transmits(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(2)));
    s.handle_timeout(t0 + ms(1999));
    assert!(s.poll_output().is_none());
    s.handle_timeout(t0 + secs(2));
    let outs = drain(&mut s);
    assert!(
        matches!(&outs[..], [Output::Response { id, result: Err(RequestError::Timeout), .. }] if *id == r1)
    );
    // The late answer to r1.
    let late = r#"{"type":"RESTResponse","request_id":"r1","status_code":200,"reason_phrase":"OK","uri":"asterisk/ping","application":"app","timestamp":"2026-11-26T11:14:38.299+0000"}"#;
    s.handle_frame(t0 + secs(2), late.as_bytes());
    let outs = drain(&mut s);
    assert!(matches!(&outs[..], [Output::Event(d)] if d.event.type_name() == "RESTResponse"));
    assert_eq!(s.stats().unmatched_responses, 1);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(3)));
    s.handle_disconnected(t0 + ms(2500), "reset");
    let outs = drain(&mut s);
    let failed: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Response {
                id,
                result: Err(RequestError::Disconnected { reason }),
                ..
            } => Some((*id, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [(r2, "reset".into()), (r3, "reset".into())]);
    assert_eq!(s.pending_requests(), 0);
    assert_eq!(s.stats().request_timeouts, 1);
    assert_eq!(s.stats().requests_failed, 2);
    // Only the reconnect remains scheduled.
    assert_eq!(s.poll_timeout(), Some(t0 + ms(2600)));
    // Not connected: refused at once.
    assert_eq!(
        s.send_request(t0, &ops::asterisk::Ping::new()),
        Err(SendError::NotConnected)
    );
}

#[test]
fn pending_requests_are_bounded() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"]).limits(Limits::default().max_pending_requests(2));
    let mut s = connected(config, t0);
    s.send_request(t0, &ops::asterisk::Ping::new()).expect("1");
    s.send_request(t0, &ops::asterisk::Ping::new()).expect("2");
    let e = s
        .send_request(t0, &ops::asterisk::Ping::new())
        .expect_err("full");
    assert_eq!(e, SendError::TooManyPending { limit: 2 });
    assert!(e.to_string().contains("max_pending_requests"));
    let e = s
        .send_request(t0, &ops::channels::Get::new(""))
        .expect_err("empty id");
    assert!(matches!(e, SendError::Build(_)));
}

/// With room for 3 events, 5 unread events drop the 2 oldest; the next output is the
/// Overflow marker, then the 3 newest events in order. Control outputs are never dropped.
#[test]
fn output_queue_overflow_drops_oldest_with_a_marker() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"]).limits(Limits::default().max_queued_outputs(3));
    let mut s = connected(config, t0);
    let frames = frames_of(1, "test,hello");
    let r = s
        .send_request(t0, &ops::asterisk::Ping::new())
        .expect("sent");
    for f in &frames[..5] {
        s.handle_frame(t0, f.as_bytes());
    }
    s.handle_disconnected(t0, "eof");
    let outs = drain(&mut s);
    assert!(
        matches!(outs[0], Output::Overflow { dropped: 2, .. }),
        "{:?}",
        outs[0]
    );
    let types: Vec<String> = outs[1..]
        .iter()
        .map(|o| match o {
            Output::Event(d) => d.event.type_name().to_string(),
            Output::Response { id, .. } => format!("response {id}"),
            Output::Connection(_) => "connection".to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    let expected: Vec<String> = frames[2..5]
        .iter()
        .map(|f| decode(f).type_name().to_string())
        .chain([format!("response {r}"), "connection".to_string()])
        .collect();
    assert_eq!(types, expected);
    assert_eq!(s.stats().dropped_outputs, 2);
    assert_eq!(s.stats().events, 5);
}

#[test]
fn oversized_malformed_and_mismatched_frames_are_signalled() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"]).limits(Limits::default().max_frame_bytes(64));
    let mut s = connected(config, t0);
    let all = s.subscribe(Filter::all());
    s.handle_frame(t0, &[b' '; 65]);
    s.handle_frame(t0, b"{not json");
    s.handle_frame(t0, b"\xff\xfe");
    s.handle_frame(t0, br#"{"type":"StasisStart"}"#);
    s.handle_frame(t0, br#"{"type":"BrandNew","x":1}"#);
    let outs = drain(&mut s);
    assert!(matches!(
        outs[0],
        Output::Warning(Warning::FrameTooLarge {
            len: 65,
            max: 64,
            ..
        })
    ));
    assert!(matches!(
        outs[1],
        Output::Warning(Warning::Malformed { .. })
    ));
    assert!(matches!(
        outs[2],
        Output::Warning(Warning::Malformed { .. })
    ));
    assert!(
        matches!(&outs[3], Output::Warning(Warning::SchemaMismatch { type_name, .. }) if type_name == "StasisStart")
    );
    assert!(
        matches!(&outs[4], Output::Event(d) if d.event.type_name() == "StasisStart" && d.subscribers[..] == [all])
    );
    assert!(matches!(&outs[5], Output::Event(d) if d.event.type_name() == "BrandNew"));
    assert_eq!(outs.len(), 6);
    for o in &outs[..4] {
        let Output::Warning(w) = o else {
            unreachable!()
        };
        assert!(!w.to_string().is_empty());
    }
    let st = s.stats();
    assert_eq!(
        (
            st.frames,
            st.oversized_frames,
            st.decode_errors,
            st.schema_errors,
            st.unknown_events,
            st.events
        ),
        (5, 1, 2, 1, 2, 2)
    );
    // Frames while not connected are stale, not events.
    s.stop();
    drain(&mut s);
    s.handle_frame(t0, br#"{"type":"BrandNew"}"#);
    assert!(s.poll_output().is_none());
    assert_eq!(s.stats().stale_inputs, 1);
}

#[test]
fn client_side_ids_are_deterministic_uuids() {
    let mk = || Session::new(endpoint("http://h"), SessionConfig::new(["a"]).rng_seed(99));
    let (mut a, mut b) = (mk(), mk());
    let ids: Vec<String> = (0..100).map(|_| a.new_resource_id()).collect();
    let again: Vec<String> = (0..100).map(|_| b.new_resource_id()).collect();
    assert_eq!(ids, again);
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 100);
    for id in &ids {
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
    }
    let mut c = Session::new(
        endpoint("http://h"),
        SessionConfig::new(["a"]).rng_seed(100),
    );
    assert_ne!(c.new_resource_id(), ids[0]);
}

/// Zero durations in the configuration never make the session ask to be woken at `now`
/// over and over.
#[test]
fn zero_durations_do_not_spin() {
    let t0 = epoch();
    let config = SessionConfig::new(["app"])
        .keepalive(Some(Keepalive::new(Duration::ZERO, Duration::ZERO)))
        .request_timeout(Duration::ZERO)
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::ZERO)
                .max_delay(Duration::ZERO),
        );
    let mut s = connected(config, t0);
    let mut now = t0;
    let mut wakeups = 0;
    let mut same_instant = 0;
    while let Some(at) = s.poll_timeout() {
        if at > t0 + ms(10) || wakeups > 1000 {
            break;
        }
        assert!(at >= now);
        same_instant = if at == now { same_instant + 1 } else { 0 };
        assert!(
            same_instant <= 2,
            "woken again and again at the same instant"
        );
        now = at;
        s.handle_timeout(now);
        // The adapter answers pings and connects instantly.
        for t in drain_transmits(&mut s) {
            match t {
                Transmit::Connect(_) => s.handle_connected(now),
                Transmit::Ping(_) => {}
                _ => {}
            }
        }
        drain(&mut s);
        wakeups += 1;
    }
    assert!(wakeups <= 1000);
    assert!(s.stats().pings > 0);
    assert!(
        s.stats().keepalive_timeouts > 0,
        "a zero pong timeout still waits a little"
    );
}

/// With jitter, the schedule is a function of the seed: the same seed replays it exactly,
/// another seed gives other delays, all within the policy's bounds.
#[test]
fn jittered_schedule_is_reproducible_from_the_seed() {
    let schedule = |seed: u64| -> Vec<Duration> {
        let t0 = epoch();
        let policy = ReconnectPolicy::default()
            .initial_delay(ms(500))
            .multiplier(2.0)
            .max_delay(secs(30))
            .jitter(0.5);
        let config = SessionConfig::new(["app"])
            .keepalive(None)
            .reconnect(policy.clone())
            .rng_seed(seed);
        let mut s = Session::new(endpoint("http://h:8088"), config);
        let mut now = t0;
        s.start(now);
        let mut delays = Vec::new();
        for attempt in 1..=10 {
            drain_transmits(&mut s);
            s.handle_connect_failed(now, "refused");
            let outs = drain(&mut s);
            let Some(Output::Connection(ConnectionEvent::Reconnecting { delay, .. })) =
                outs.first()
            else {
                panic!("{outs:?}")
            };
            let (low, high) = policy.delay_bounds(attempt);
            assert!(low <= *delay && *delay <= high);
            delays.push(*delay);
            now = s.poll_timeout().expect("reconnect timer");
            s.handle_timeout(now);
        }
        delays
    };
    let a = schedule(7);
    assert_eq!(a, schedule(7));
    assert_ne!(a, schedule(8));
    assert!(a.iter().all(|d| *d <= secs(30)));
    // The cap is reached: the last delays are in [15 s, 30 s].
    assert!(a[9] >= secs(15));
}

#[test]
fn application_names_that_cannot_be_sent_are_refused() {
    use ari_proto::session::{check_app_name, check_apps};
    assert!(check_app_name("hello").is_ok());
    assert!(check_app_name("a,b").is_err());
    assert!(check_app_name("").is_err());
    assert!(check_app_name("x\0y").is_err());
    assert!(check_apps::<&str>(&[]).is_err());
    assert!(check_apps(&["a", "b"]).is_ok());
    let err = check_app_name("a,b").unwrap_err().to_string();
    assert!(err.contains("app"), "{err}");
}

#[test]
fn connect_request_debug_never_shows_the_api_key() {
    use ari_proto::rest::{BaseUrl, Credentials};
    use ari_proto::session::{Session, SessionConfig, Transmit, WsAuth};
    let ep = BaseUrl::new(
        "http://pbx:8088",
        Credentials::new("asterisk", "s3cr3t-pw").unwrap(),
    )
    .unwrap();
    let t0 = epoch();
    let mut config = SessionConfig::default();
    config.apps = vec!["hello".into()];
    config.auth = WsAuth::ApiKey;
    let mut s = Session::new(ep, config);
    s.start(t0);
    let mut seen = false;
    while let Some(t) = s.poll_transmit() {
        if let Transmit::Connect(req) = &t {
            assert!(
                req.uri().to_string().contains("api_key="),
                "the key is sent"
            );
            let shown = format!("{t:?}");
            assert!(!shown.contains("s3cr3t-pw"), "{shown}");
            assert!(shown.contains("api_key=<redacted>"), "{shown}");
            seen = true;
        }
    }
    assert!(seen);
}

/// A `StasisEnd` frame for channel `id` of application `app`.
fn stasis_end(app: &str, id: &str) -> String {
    format!(
        r#"{{"type":"StasisEnd","application":"{app}","timestamp":"2026-11-26T11:14:02.546+0000",
        "channel":{{"id":"{id}","name":"PJSIP/alice-1","state":"Up","protocol_id":"",
        "caller":{{"name":"","number":""}},"connected":{{"name":"","number":""}},
        "accountcode":"","dialplan":{{"context":"default","exten":"s","priority":1,
        "app_name":"","app_data":""}},"creationtime":"2026-11-26T11:14:00.000+0000",
        "language":"en"}}}}"#
    )
}

/// The subscriptions ended (id, reason) among the session's outputs.
fn ended_subscriptions(
    s: &mut Session,
) -> Vec<(
    ari_proto::session::SubscriptionId,
    ari_proto::session::EndReason,
)> {
    let mut ended = Vec::new();
    while let Some(out) = s.poll_output() {
        if let Output::SubscriptionEnded { id, reason, .. } = out {
            ended.push((id, reason));
        }
    }
    ended
}

/// The caller hangs up just as the application queues a prompt: Asterisk answers 201 to the
/// `play`, then drops the queued command with the channel, and the `StasisEnd` (events
/// socket) reaches the session before the 201 (HTTP) is handled. The playback's waits end
/// with `NeverStarted` when the answer is handled (they waited for ever: `queued_on` then
/// tracked a channel that had already left). A playback whose events came before the
/// `StasisEnd` (it ran) is not ended; a channel back in Stasis is present again.
#[test]
fn a_play_answered_after_its_channel_left_ends_its_waits() {
    use ari_proto::events::ResourceKind::{Channel, Playback};
    use ari_proto::session::EndReason;
    let t0 = epoch();
    let mut s = connected(SessionConfig::new(["app"]), t0);
    let pb = s.subscribe(Filter::playback("pb-1"));
    s.handle_text_frame(t0, &stasis_end("app", "c1"));
    assert!(ended_subscriptions(&mut s).is_empty());
    s.queued_on(Playback, "pb-1", Channel, "c1");
    assert_eq!(ended_subscriptions(&mut s), [(pb, EndReason::NeverStarted)]);
    assert!(!s.is_subscribed(pb));

    // It ran before the channel left: its final event comes (or came); not ended here.
    let pb2 = s.subscribe(Filter::playback("pb-2"));
    s.handle_text_frame(
        t0,
        r#"{"type":"PlaybackStarted","application":"app","timestamp":"2026-11-26T11:14:02.546+0000",
        "playback":{"id":"pb-2","media_uri":"sound:hello","target_uri":"channel:c2","language":"en","state":"playing"}}"#,
    );
    s.handle_text_frame(t0, &stasis_end("app", "c2"));
    let _ = ended_subscriptions(&mut s);
    s.queued_on(Playback, "pb-2", Channel, "c2");
    assert!(ended_subscriptions(&mut s).is_empty());
    assert!(s.is_subscribed(pb2));
}
