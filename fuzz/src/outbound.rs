//! The checks behind the outbound WebSocket fuzz targets (`upgrade_check`,
//! `accepted_session`).
//!
//! Compiled twice, like `checks.rs`: as `ari_fuzz::outbound` and, through `#[path]`, inside
//! `ari-proto/tests/fuzz_replay_outbound.rs`. It may only use `ari_proto`, `serde_json` and
//! `http`. Each check panics when an invariant does not hold; `ari-proto` must never panic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ari_proto::outbound::{check_response, UpgradeCheck};
use ari_proto::rest::Credentials;
use ari_proto::session::{
    ConnectionEvent, ConnectionState, Filter, Keepalive, Limits, Output, Session, SessionConfig,
    Transmit,
};

/// The password of the fuzzed check; no refusal may ever show it.
const PASSWORD: &str = "Zq9-fuzz-secret";

/// `upgrade_check`: the first byte picks the check (bit 0: path `/ari-ob`, bit 1: the
/// credentials `obuser`/[`PASSWORD`], bit 2: `ari` required), the rest is a raw request head
/// for [`UpgradeCheck::check_head`]. Never panics; an accepted head gets an answer that
/// Asterisk's client check ([`check_response`]) accepts, with the key found in the head, and
/// only the four allowed headers; with credentials, only `obuser` is accepted; a refusal's
/// text and answer never show the password (unless the input itself carries it) and its
/// answer has the refusal's status.
pub fn upgrade_check(data: &[u8]) {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let mut check = UpgradeCheck::new().require_subprotocol(flags & 4 != 0);
    if flags & 1 != 0 {
        check = check.path("/ari-ob");
    }
    if flags & 2 != 0 {
        check = check.credentials(Credentials::new("obuser", PASSWORD).expect("credentials"));
    }
    match check.check_head(head) {
        Ok(None) => {}
        Ok(Some((accepted, len))) => {
            assert!(len <= head.len());
            let response = accepted.response();
            assert_eq!(response.status(), 101);
            assert!(response.headers().len() <= 4);
            assert_eq!(response.headers()["connection"], "Upgrade");
            assert!(!response.headers().contains_key("sec-websocket-extensions"));
            if flags & 1 != 0 {
                assert_eq!(accepted.path(), "/ari-ob");
            }
            if flags & 2 != 0 {
                assert_eq!(accepted.user(), Some("obuser"));
            }
            if flags & 4 != 0 {
                assert_eq!(accepted.subprotocol(), Some("ari"));
            }
            let key = header(&head[..len], "sec-websocket-key").expect("accepted without a key");
            let protocols = if accepted.subprotocol().is_some() {
                "ari"
            } else {
                ""
            };
            if let Err(e) = check_response(&accepted.response_bytes(), &key, protocols) {
                panic!("Asterisk would refuse our answer: {e}");
            }
        }
        Err(refused) => {
            let status = refused.status();
            assert!(status.is_client_error() || status.is_server_error());
            assert_eq!(refused.response().status(), status);
            assert_eq!(refused.is_unauthorized(), status == 401);
            let bytes = refused.response_bytes();
            assert!(bytes.starts_with(format!("HTTP/1.1 {}", status.as_u16()).as_bytes()));
            if !contains(head, PASSWORD.as_bytes()) {
                let shown = format!("{refused} {refused:?} {check:?}");
                assert!(!shown.contains(PASSWORD), "the password leaked: {shown}");
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The trimmed value of a header line in a raw head (first match, case-insensitive name).
fn header(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    // httparse accepts bare `\n` line ends too.
    text.split('\n').skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Reads the input of `accepted_session`.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn registered(app: &str, kind: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"{kind}","application":"{app}","timestamp":"2026-12-05T22:32:45.355+0000","asterisk_id":"02:fc:00:00:00:01"}}"#
    )
    .into_bytes()
}

fn response_frame(id: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"RESTResponse","transaction_id":"","request_id":"{id}","status_code":200,"reason_phrase":"OK","uri":"asterisk/ping","content_type":"application/json","message_body":"{{\"ping\":\"pong\",\"timestamp\":\"2026-12-05T22:32:45.357+0000\",\"asterisk_id\":\"02:fc:00:00:00:01\"}}","application":"obapp","timestamp":"2026-12-05T22:32:45.357+0000","asterisk_id":"02:fc:00:00:00:01"}}"#
    )
    .into_bytes()
}

fn destroyed(channel: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"ChannelDestroyed","timestamp":"2026-12-05T22:32:46.000+0000","application":"obapp","cause":16,"cause_txt":"Normal Clearing","channel":{{"id":"{channel}","name":"PJSIP/a-1","state":"Up","protocol_id":"","caller":{{"name":"","number":""}},"connected":{{"name":"","number":""}},"accountcode":"","dialplan":{{"context":"default","exten":"s","priority":1,"app_name":"","app_data":""}},"creationtime":"2026-12-05T22:32:40.000+0000","language":"en"}}}}"#
    )
    .into_bytes()
}

/// `accepted_session`: the first byte configures an [accepted](Session::accepted) session
/// (bit 0: keepalive 20 s/10 s, bit 1: at most 4 pending requests, bit 2: at most 3 queued
/// outputs, bit 3: a peer timeout of 3 s); then one operation per byte (modulo 15), some
/// followed by arguments: 0
/// `handle_accepted`, 1 a raw frame (u16 length, bytes), 2 `handle_disconnected`, 3
/// `handle_pong`, 4 advance the clock by a u16 of ms and `handle_timeout`, 5 jump to
/// `poll_timeout`, 6 `send_request`, 7 the `RESTResponse` for a pending request (u8 picks
/// it), 8 `stop`, 9 `start`, 10 subscribe to channel `c<u8 % 4>`, 11 `ApplicationRegistered`
/// for app `a<u8 % 4>`, 12 `ApplicationUnregistered`, 13 `ChannelDestroyed` of `c<n>`, and 14
/// `handle_closed` with a close code (u8: 0 none, 1 1000, 2 1001, else the u8 itself).
///
/// Invariants after each operation, with outputs drained: never a `Connect` (Asterisk
/// connects); never a reconnect timer or state (`Connecting`, `WaitingToReconnect`);
/// `Text`/`Ping` only while connected; each accepted connection (not after `stop`) gives
/// exactly one `Connected`, with `reconnected` false only the first time; every request gets
/// exactly one `Response`, and pending ones stay within the limit; after `handle_timeout(now)`
/// the next deadline lies in the future; the learned applications are exactly those
/// registered and not unregistered, in order; every drop of an event is announced; `PeerGone`
/// only with a peer timeout, while no connection is open, at least the timeout after the last
/// one was lost (or Asterisk never came), leaving no subscription to a channel;
/// `ApplicationsUnregistered` exactly when an open connection closes with 1000 after every
/// application it had was unregistered on it (none registered again), naming those
/// applications in order, ending every channel subscription, counted in the stats.
pub fn accepted_session(data: &[u8]) {
    let mut input = Input(data);
    let Some(flags) = input.byte() else {
        return;
    };
    let keepalive =
        (flags & 1 != 0).then(|| Keepalive::new(Duration::from_secs(20), Duration::from_secs(10)));
    let mut limits = Limits::default();
    if flags & 2 != 0 {
        limits = limits.max_pending_requests(4);
    }
    if flags & 4 != 0 {
        limits = limits.max_queued_outputs(3);
    }
    let max_pending = limits.max_pending_requests;
    let peer_timeout = (flags & 8 != 0).then_some(Duration::from_secs(3));
    let config = SessionConfig::default()
        .keepalive(keepalive)
        .limits(limits)
        .request_timeout(Duration::from_secs(5))
        .peer_timeout(peer_timeout);
    #[allow(clippy::disallowed_methods)] // the harness is the adapter: it owns the clock
    let mut now = Instant::now();
    let mut s = Session::accepted(config);
    let mut accepted = 0u64;
    let mut stopped = false;
    let mut connected_events = 0u64;
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    let mut answered: BTreeSet<u64> = BTreeSet::new();
    let mut apps: Vec<String> = Vec::new();
    let mut sent_events = 0u64;
    let mut seen_events = 0u64;
    let mut dropped = 0u64;
    let mut subs = BTreeMap::new();
    // When the last open connection was lost (while none is open).
    let mut lost_at: Option<Instant> = None;
    // The applications unregistered on the open connection since one was last registered.
    let mut unregistered: Vec<String> = Vec::new();
    let mut unregistered_closes = 0u64;
    for _ in 0..2048 {
        let Some(op) = input.byte() else { break };
        let mut after_timeout = false;
        // Whether this operation must end the calls with `ApplicationsUnregistered`.
        let mut expect_unregistered = false;
        match op % 15 {
            0 => {
                if !stopped {
                    accepted += 1;
                }
                s.handle_accepted(now);
            }
            1 => {
                let n = usize::from(input.u16().unwrap_or(0));
                let frame = input.bytes(n).to_vec();
                s.handle_frame(now, &frame);
                // Learning is checked below only for generated frames: drop the model
                // when a raw frame could have (un)registered anything.
                if frame.windows(11).any(|w| w == b"Application") {
                    return;
                }
            }
            2 => s.handle_disconnected(now, "fuzz: gone"),
            3 => s.handle_pong(),
            4 => {
                now += Duration::from_millis(u64::from(input.u16().unwrap_or(0)));
                s.handle_timeout(now);
                after_timeout = true;
            }
            5 => {
                if let Some(t) = s.poll_timeout() {
                    now = now.max(t);
                }
                s.handle_timeout(now);
                after_timeout = true;
            }
            6 => match s.send_request(now, &ari_proto::ops::asterisk::Ping::new()) {
                Ok(id) => {
                    assert!(pending.insert(id.as_u64()), "request id reused");
                    assert!(!answered.contains(&id.as_u64()), "request id reused");
                }
                Err(_) => assert!(!s.is_connected() || pending.len() >= max_pending),
            },
            7 => {
                let k = usize::from(input.byte().unwrap_or(0));
                let id = match pending.iter().nth(k % pending.len().max(1)) {
                    Some(n) => format!("r{n}"),
                    None => format!("r{k}"),
                };
                if s.is_connected() {
                    sent_events += u64::from(!pending.iter().any(|n| format!("r{n}") == id));
                }
                s.handle_frame(now, &response_frame(&id));
            }
            8 => {
                stopped = true;
                s.stop();
            }
            9 => s.start(now),
            10 => {
                let c = format!("c{}", input.byte().unwrap_or(0) % 4);
                let id = s.subscribe(Filter::channel(c.clone()));
                subs.insert(id, c);
            }
            11 | 12 => {
                let app = format!("a{}", input.byte().unwrap_or(0) % 4);
                let kind = if op % 15 == 11 {
                    "ApplicationRegistered"
                } else {
                    "ApplicationUnregistered"
                };
                if s.is_connected() {
                    sent_events += 1;
                    if kind == "ApplicationRegistered" {
                        unregistered.clear();
                        if !apps.contains(&app) {
                            apps.push(app.clone());
                        }
                    } else if apps.contains(&app) {
                        apps.retain(|a| *a != app);
                        unregistered.push(app.clone());
                    }
                }
                s.handle_frame(now, &registered(&app, kind));
            }
            13 => {
                let c = format!("c{}", op % 4);
                sent_events += u64::from(s.is_connected());
                s.handle_frame(now, &destroyed(&c));
            }
            _ => {
                let code = match input.byte().unwrap_or(0) {
                    0 => None,
                    1 => Some(1000),
                    2 => Some(1001),
                    n => Some(u16::from(n)),
                };
                expect_unregistered = code == Some(1000)
                    && s.is_connected()
                    && apps.is_empty()
                    && !unregistered.is_empty();
                s.handle_closed(now, code, "fuzz: closed");
            }
        }
        let connected = s.is_connected();
        if connected {
            lost_at = None;
        } else if lost_at.is_none() {
            lost_at = Some(now);
        }
        while let Some(t) = s.poll_transmit() {
            match t {
                Transmit::Connect(_) => panic!("an accepted session dialed"),
                Transmit::Text(_) | Transmit::Ping(_) => {
                    assert!(connected, "a frame for a socket that is not open")
                }
                _ => {}
            }
        }
        let mut saw_unregistered = false;
        while let Some(o) = s.poll_output() {
            match o {
                Output::Connection(ConnectionEvent::Connected { reconnected, .. }) => {
                    assert_eq!(reconnected, connected_events > 0);
                    connected_events += 1;
                    unregistered.clear();
                }
                Output::Connection(ConnectionEvent::ApplicationsUnregistered {
                    applications,
                    ..
                }) => {
                    assert!(
                        expect_unregistered,
                        "ApplicationsUnregistered without its close"
                    );
                    assert!(!saw_unregistered, "a second ApplicationsUnregistered");
                    saw_unregistered = true;
                    assert_eq!(applications, unregistered, "the applications unregistered");
                    unregistered.clear();
                    unregistered_closes += 1;
                }
                Output::Response { id, .. } => {
                    assert!(pending.remove(&id.as_u64()), "a response to no request");
                    answered.insert(id.as_u64());
                }
                Output::Event(_) => seen_events += 1,
                Output::Overflow { dropped: n, .. } => dropped += n,
                Output::Connection(ConnectionEvent::PeerGone { waited, .. }) => {
                    let timeout = peer_timeout.expect("PeerGone without a peer timeout");
                    assert_eq!(waited, timeout);
                    assert!(!connected, "PeerGone while connected");
                    let lost = lost_at.expect("PeerGone while connected");
                    assert!(
                        now.duration_since(lost) >= timeout,
                        "PeerGone {:?} after the connection was lost",
                        now.duration_since(lost)
                    );
                    assert_eq!(
                        s.live_subscriptions_for(ari_proto::events::ResourceKind::Channel),
                        0,
                        "a channel subscription outlived PeerGone"
                    );
                }
                _ => {}
            }
        }
        assert_eq!(
            connected_events, accepted,
            "one Connected per accepted connection"
        );
        assert_eq!(
            saw_unregistered, expect_unregistered,
            "a close after every application was unregistered ends the calls"
        );
        if saw_unregistered {
            assert_eq!(
                s.live_subscriptions_for(ari_proto::events::ResourceKind::Channel),
                0,
                "a channel subscription outlived the applications' removal"
            );
        }
        assert_eq!(s.stats().applications_unregistered, unregistered_closes);
        assert!(!matches!(
            s.state(),
            ConnectionState::Connecting | ConnectionState::WaitingToReconnect
        ));
        assert_eq!(s.pending_requests(), pending.len());
        assert!(pending.len() <= max_pending);
        assert_eq!(s.applications(), &apps[..], "learned applications");
        assert!(
            seen_events + dropped >= sent_events,
            "a generated event was neither delivered nor announced as dropped"
        );
        if after_timeout {
            if let Some(t) = s.poll_timeout() {
                assert!(t > now, "a deadline already due after handle_timeout");
            }
        }
    }
    s.stop();
    while s.poll_transmit().is_some() {}
    while let Some(o) = s.poll_output() {
        if let Output::Response { id, .. } = o {
            assert!(pending.remove(&id.as_u64()));
        }
    }
    assert!(
        pending.is_empty(),
        "requests left without a response: {pending:?}"
    );
    assert!(s.live_subscriptions() <= subs.len());
}
