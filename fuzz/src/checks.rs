//! The checks behind every fuzz target, one public function per target.
//!
//! This file is compiled twice: as `ari_fuzz::checks` (the libFuzzer targets in
//! `fuzz/fuzz_targets/`) and, through `#[path]`, inside `ari-proto/tests/fuzz_replay.rs`, which
//! runs every file of `fuzz/corpus/<target>/` through the same function under plain
//! `cargo test`. It may therefore only use what both see: `ari_proto`, `serde_json`, `http`,
//! `bytes` and `arbitrary`.
//!
//! Every check panics (which libFuzzer reports as a crash) when an invariant does not hold;
//! `ari-proto` itself must never panic on any input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use ari_proto::catalog::OPERATIONS;
use ari_proto::events::{DecodeError, Event, ResourceKind};
use ari_proto::rest::{parse_response, AriError, BaseUrl, Credentials, ErrorKind, ResponseError};
use ari_proto::session::{
    ConnectionEvent, ConnectionState, EndReason, Filter, Keepalive, Limits, Output,
    ReconnectPolicy, RequestError, SendError, Session, SessionConfig, Stats, SubscriptionId,
    Transmit, WsAuth,
};
use ari_proto::Operation;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// event_decode
// ---------------------------------------------------------------------------------------------

/// `event_decode`: [`Event::decode`] never panics on any bytes; a decoded event answers its
/// getters without panicking, and re-encoding it with [`Event::to_json`] decodes again to an
/// equal event (numbers compared with a tolerance of a few ULPs, see [`json_close`]: serde_json
/// without `float_roundtrip` may parse the shortest representation of an `f64` one ULP off).
pub fn event_decode(data: &[u8]) {
    let decoded = Event::decode(data);
    // `decode_lenient` agrees with `decode`.
    match (&decoded, Event::decode_lenient(data)) {
        (Ok(a), Ok((b, false))) => assert_eq!(a, &b, "decode_lenient differs from decode"),
        (Err(DecodeError::Schema { type_name, .. }), Ok((Event::Unknown(u), true))) => {
            assert_eq!(&u.type_name, type_name)
        }
        // Any other error (malformed, too deep, …) is the same error from both.
        (Err(e), Err(f)) if !matches!(e, DecodeError::Schema { .. }) => assert_eq!(e, &f),
        (a, b) => panic!("decode {a:?} but decode_lenient {b:?}"),
    }
    check_depth_limit(data, &decoded);
    match decoded {
        Ok(event) => {
            exercise_event(&event);
            let json = event.to_json();
            assert!(
                json.is_object(),
                "to_json of {} is {json}",
                event.type_name()
            );
            assert_eq!(
                json.get("type").and_then(Value::as_str),
                Some(event.type_name()),
                "to_json keeps the type"
            );
            let bytes = serde_json::to_vec(&json).expect("a Value always serializes");
            let again = Event::decode(&bytes).unwrap_or_else(|e| {
                panic!(
                    "re-encoded {} does not decode: {e}\n{json}",
                    event.type_name()
                )
            });
            if again != event {
                // Only a float parsed a few ULPs off may differ, and then the JSON differs too;
                // equal JSON for unequal events means the encoding lost information.
                let again_json = again.to_json();
                assert!(
                    json != again_json && json_close(&json, &again_json),
                    "re-encoded {} decodes to a different event:\n{event:?}\n{again:?}",
                    event.type_name()
                );
            }
        }
        Err(e) => {
            // Display never panics and never is empty.
            assert!(!e.to_string().is_empty());
            if let DecodeError::Schema { type_name, .. } = &e {
                let u = e
                    .clone()
                    .into_unknown()
                    .expect("schema errors keep the message");
                assert_eq!(&u.type_name, type_name);
            }
        }
    }
}

/// The nesting limit: `json_depth_exceeds` is exact on valid JSON (the top-level object is
/// level 1), and `decode_with_max_depth` is `TooDeep` or exactly `decode`.
fn check_depth_limit(data: &[u8], decoded: &Result<Event, DecodeError>) {
    let actual = serde_json::from_slice::<Depth>(data).ok().map(|d| d.0);
    for max in [0, 1, 3, 4, 32] {
        let exceeds = ari_proto::events::json_depth_exceeds(data, max);
        if let Some(d) = actual {
            assert_eq!(exceeds, d > max, "depth {d} against the limit {max}");
        }
        match Event::decode_with_max_depth(data, max) {
            Err(DecodeError::TooDeep { max: m }) => {
                assert!(exceeds);
                assert_eq!(m, max);
            }
            other => {
                assert!(!exceeds, "a frame over the limit {max} was decoded");
                assert_eq!(&other, decoded, "decode_with_max_depth differs from decode");
            }
        }
    }
}

/// The nesting depth of a JSON text, counting every value (a `Value` would keep only the
/// last of duplicate keys and hide a deeper one).
struct Depth(usize);

impl<'de> serde::Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Depth;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_unit<E>(self) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Depth, A::Error> {
                let mut max = 0;
                while let Some(Depth(d)) = a.next_element()? {
                    max = max.max(d);
                }
                Ok(Depth(max + 1))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Depth, A::Error> {
                let mut max = 0;
                while let Some((serde::de::IgnoredAny, Depth(d))) = a.next_entry()? {
                    max = max.max(d);
                }
                Ok(Depth(max + 1))
            }
        }
        d.deserialize_any(V)
    }
}

/// Calls every getter of an event; checks the invariants of `resources` and `ended_resource`.
fn exercise_event(event: &Event) {
    let _ = event.application();
    let _ = format!("{event:?}");
    let resources = event.resources();
    assert!(resources.len() <= 8);
    let list: Vec<_> = resources.iter().collect();
    assert_eq!(list.len(), resources.len());
    for (i, r) in list.iter().enumerate() {
        assert!(
            !r.id.is_empty(),
            "empty resource id in {}",
            event.type_name()
        );
        assert!(!list[..i].contains(r), "duplicate resource {r}");
        let _ = r.to_string();
    }
    if let Some(r) = event.ended_resource() {
        assert!(
            event.is_final_for(r),
            "{} ends {r} but is not final",
            event.type_name()
        );
    }
}

/// Whether two JSON values are equal, numbers being compared as `f64` within 4 ULPs.
pub fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_close(v, w))
        }
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => f64_close(p, q),
                    _ => false,
                }
        }
        (x, y) => x == y,
    }
}

fn f64_close(p: f64, q: f64) -> bool {
    if p == q {
        return true;
    }
    if !p.is_finite() || !q.is_finite() || p.is_sign_negative() != q.is_sign_negative() {
        return false;
    }
    p.to_bits().abs_diff(q.to_bits()) <= 4
}

// ---------------------------------------------------------------------------------------------
// response_decode
// ---------------------------------------------------------------------------------------------

macro_rules! for_each_op {
    ($($kind:ident $module:ident :: $op:ident,)*) => {
        /// The name (`resource.nickname`) of every operation the dispatch covers, in order.
        pub const OP_NAMES: &[&str] = &[
            $(<ari_proto::ops::$module::$op as Operation>::NAME,)*
        ];

        /// Runs the response checks for the operation at `index` of [`OP_NAMES`].
        fn check_op_at(index: usize, status: u16, body: &[u8]) {
            let mut i = 0usize;
            $(
                if i == index {
                    return output::$kind::<ari_proto::ops::$module::$op>(status, body);
                }
                i += 1;
            )*
            let _ = i;
            panic!("operation index {index} out of range");
        }
    };
}

include!("ops_list.rs");

/// The checks per output kind: `json` (a model or a list), `unit` (`void`), `bytes` (`binary`).
mod output {
    use super::*;

    /// An operation whose output is a JSON model: a success either decodes, and then
    /// re-encodes and decodes to an equal value, or is a `Decode` error naming the operation.
    pub(super) fn json<O>(status: u16, body: &[u8])
    where
        O: Operation,
        O::Output: serde::Serialize + PartialEq + std::fmt::Debug,
    {
        let Some(result) = common::<O>(status, body) else {
            return;
        };
        match result {
            Ok(out) => {
                let json = serde_json::to_value(&out).expect("outputs serialize");
                let bytes = serde_json::to_vec(&json).expect("a Value serializes");
                let again = O::parse_output(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "{}: re-encoded output does not decode: {e}\n{json}",
                        O::NAME
                    )
                });
                if again != out {
                    // As for events: only floats may differ, and then the JSON differs too.
                    let again_json = serde_json::to_value(&again).expect("outputs serialize");
                    assert!(
                        json != again_json && json_close(&json, &again_json),
                        "{}: re-encoded output differs:\n{out:?}\n{again:?}",
                        O::NAME
                    );
                }
            }
            Err(ResponseError::Decode {
                operation,
                status: s,
                error,
            }) => {
                assert_eq!(operation, O::NAME);
                assert_eq!(s, status);
                assert!(!error.is_empty());
            }
            Err(e) => panic!("{}: a {status} became {e:?}", O::NAME),
        }
    }

    /// A `void` operation: every success status is `Ok(())`, whatever the body.
    pub(super) fn unit<O: Operation<Output = ()>>(status: u16, body: &[u8]) {
        if let Some(result) = common::<O>(status, body) {
            assert_eq!(result, Ok(()), "{}: void success", O::NAME);
        }
    }

    /// A `binary` operation: every success is the body, byte for byte.
    pub(super) fn bytes<O: Operation<Output = bytes::Bytes>>(status: u16, body: &[u8]) {
        if let Some(result) = common::<O>(status, body) {
            assert_eq!(result.as_deref(), Ok(body), "{}: binary success", O::NAME);
        }
    }

    /// Parses; checks the error path. `None` for an error status (fully checked here), the
    /// result for a success status.
    fn common<O: Operation>(status: u16, body: &[u8]) -> Option<Result<O::Output, ResponseError>> {
        let result = parse_response::<O>(status, body);
        if (200..300).contains(&status) {
            return Some(result);
        }
        match result {
            Err(ResponseError::Ari(e)) => check_ari_error(&e, status, body),
            Err(e) => panic!("{}: error status {status} became {e:?}", O::NAME),
            Ok(_) => panic!("{}: error status {status} parsed as a success", O::NAME),
        }
        None
    }
}

/// An error status becomes an [`AriError`] with that status, its kind, and the message of a
/// `{"message": …}` body or else the body's text (trimmed, at most 512 characters).
fn check_ari_error(e: &AriError, status: u16, body: &[u8]) {
    assert_eq!(e.status, status);
    assert_eq!(e.kind, ErrorKind::from_status(status));
    let direct = AriError::from_body(status, body);
    assert_eq!(&direct, e);
    let text = String::from_utf8_lossy(body);
    let fallback: String = text.trim().chars().take(512).collect();
    // As lenient as the parser: other fields are skipped unvalidated (serde_json does not check
    // the UTF-8 of a string it ignores).
    #[derive(serde::Deserialize)]
    struct Msg {
        message: String,
    }
    let json_message = serde_json::from_slice::<Msg>(body).ok().map(|m| m.message);
    assert!(
        e.message == fallback || Some(&e.message) == json_message.as_ref(),
        "unexpected message {:?} for {:?}",
        e.message,
        text
    );
    let shown = e.to_string();
    assert!(shown.contains(&status.to_string()));
    let via_response = ResponseError::Ari(e.clone());
    assert_eq!(via_response.as_ari(), Some(e));
    let _ = via_response.to_string();
}

/// Picks an operation index from a name or, failing that, from the bytes.
fn op_index(name: &[u8]) -> usize {
    if let Some(i) = OP_NAMES.iter().position(|n| n.as_bytes() == name) {
        return i;
    }
    let h = name
        .iter()
        .fold(0usize, |h, &b| h.wrapping_mul(31).wrapping_add(b as usize));
    h % OP_NAMES.len()
}

/// `response_decode`: the input is `<operation name> <status>\n<body>` (e.g.
/// `channels.get 200\n{…}`; a name that is not an operation picks one from its bytes, a missing
/// status counts as 200). [`parse_response`] of that operation never panics; an error status
/// becomes `ResponseError::Ari` with the typed [`AriError`]; a success either decodes (and the
/// output re-encodes and decodes to an equal value) or is a `Decode` error.
pub fn response_decode(data: &[u8]) {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut parts = header.splitn(2, |&b| b == b' ');
    let name = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(200);
    check_op_at(op_index(name), status, body);
}

// ---------------------------------------------------------------------------------------------
// rest_response_frame
// ---------------------------------------------------------------------------------------------

/// The operations whose path template matches `uri` (a `RESTResponse`'s `uri`: path below
/// `/ari`, maybe with a query), most literal segments first.
fn ops_for_uri(uri: &str) -> Vec<usize> {
    let path = uri.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut found: Vec<(usize, usize)> = OPERATIONS
        .iter()
        .filter(|o| {
            let t: Vec<&str> = o.path.trim_start_matches('/').split('/').collect();
            t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
        .filter_map(|o| {
            let name = format!("{}.{}", o.resource, o.nickname);
            let literal = o.path.split('/').filter(|t| !t.starts_with('{')).count();
            OP_NAMES
                .iter()
                .position(|n| *n == name)
                .map(|i| (literal, i))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    found.into_iter().map(|(_, i)| i).take(4).collect()
}

/// `rest_response_frame`: a WebSocket frame, usually a `RESTResponse`. The frame gets every
/// check of [`event_decode`]; a `RESTResponse`'s `message_body` is then parsed, with its status,
/// by the operations its `uri` names (or one picked from the uri's bytes), with every check of
/// [`response_decode`], exactly as `RawResponse::parse` does for a REST-over-WebSocket answer.
pub fn rest_response_frame(data: &[u8]) {
    event_decode(data);
    let Ok(Event::RESTResponse(r)) = Event::decode(data) else {
        return;
    };
    let status = u16::try_from(r.status_code).unwrap_or(0);
    let body = r.message_body.as_deref().unwrap_or_default().as_bytes();
    let mut ops = ops_for_uri(&r.uri);
    if ops.is_empty() {
        ops.push(op_index(r.uri.as_bytes()));
    }
    for i in ops {
        check_op_at(i, status, body);
    }
}

// ---------------------------------------------------------------------------------------------
// session_actions
// ---------------------------------------------------------------------------------------------

/// Ids the generated events and subscriptions draw from, so that they meet.
const IDS: &[&str] = &[
    "c1",
    "c2",
    "1700000000.1",
    "b1",
    "p1",
    "rec-1",
    "PJSIP/alice",
    "alice",
    "..",
    "a/b?c#d",
    "%2F",
    "é",
];

/// Event types subscriptions filter on.
const TYPES: &[&str] = &[
    "StasisStart",
    "ChannelDestroyed",
    "ChannelDtmfReceived",
    "BridgeDestroyed",
    "PlaybackFinished",
    "RecordingFinished",
    "EndpointStateChange",
    "DeviceStateChanged",
    "ChannelTeleported",
    "RESTResponse",
];

fn id(i: u8) -> &'static str {
    IDS[i as usize % IDS.len()]
}

/// The session's configuration, small so that limits and timers are reached.
#[derive(Debug, Arbitrary)]
struct Config {
    keepalive: Option<(u16, u16)>,
    max_attempts: Option<u8>,
    initial_delay_ms: u16,
    max_delay_ms: u16,
    jitter_percent: u8,
    multiplier_tenths: u8,
    stable_after_ms: u16,
    request_timeout_ms: u16,
    max_frame_bytes: u16,
    max_pending: u8,
    max_queued: u8,
    subscribe_all: bool,
    api_key: bool,
    seed: u64,
}

impl Config {
    /// One input in 16 gets a small nesting limit (0 to 7). Taken from the seed's top bits
    /// rather than a field of its own, so the committed corpus keeps decoding as it did.
    fn max_json_depth(&self) -> usize {
        if self.seed >> 60 == 0 {
            ((self.seed >> 56) & 7) as usize
        } else {
            32
        }
    }

    /// One input in 16 remembers few ended resources and tracks few channels and bridges
    /// with queued playbacks or recordings (3 to 6: `Limits::max_ended_ids`), so that the
    /// limit is reached; from other bits of the seed, which the hand-written seeds leave clear
    /// (they keep the default).
    fn max_ended_ids(&self) -> usize {
        if (self.seed >> 36) & 0xf == 0xf {
            3 + ((self.seed >> 32) & 3) as usize
        } else {
            Limits::default().max_ended_ids
        }
    }

    /// The StasisEnd linger, from other bits of the seed (for the same reason): none in one
    /// input of 16, otherwise 0 to 4 s.
    fn stasis_end_linger(&self) -> Option<Duration> {
        if (self.seed >> 52) & 0xf == 0 {
            None
        } else {
            Some(Duration::from_millis((self.seed >> 40) & 0xfff))
        }
    }

    fn build(&self) -> SessionConfig {
        let ms = |v: u16| Duration::from_millis(u64::from(v));
        let policy = ReconnectPolicy::default()
            .initial_delay(ms(self.initial_delay_ms))
            .max_delay(ms(self.max_delay_ms))
            .jitter(f64::from(self.jitter_percent) / 100.0)
            .multiplier(f64::from(self.multiplier_tenths) / 10.0)
            .max_attempts(self.max_attempts.map(u32::from))
            .stable_after(ms(self.stable_after_ms));
        SessionConfig::new(["app", "second app"])
            .subscribe_all(self.subscribe_all)
            .auth(if self.api_key {
                WsAuth::ApiKey
            } else {
                WsAuth::Basic
            })
            .reconnect(policy)
            .keepalive(self.keepalive.map(|(i, t)| Keepalive::new(ms(i), ms(t))))
            .request_timeout(ms(self.request_timeout_ms))
            .limits(
                Limits::default()
                    .max_frame_bytes(usize::from(self.max_frame_bytes).max(64) * 4)
                    .max_pending_requests(usize::from(self.max_pending % 16))
                    .max_queued_outputs(usize::from(self.max_queued % 32))
                    .max_json_depth(self.max_json_depth())
                    .max_ended_ids(self.max_ended_ids()),
            )
            .stasis_end_linger(self.stasis_end_linger())
            .rng_seed(self.seed)
    }
}

/// An event frame built from a template, with ids from [`IDS`].
#[derive(Debug, Arbitrary)]
enum Template {
    StasisStart(u8),
    ChannelDestroyed(u8),
    Dtmf(u8),
    BridgeDestroyed(u8),
    ChannelEnteredBridge(u8, u8),
    PlaybackStarted {
        playback: u8,
        target: u8,
        bridge: bool,
    },
    PlaybackFinished(u8),
    RecordingFinished(u8),
    EndpointStateChange(u8, u8),
    DeviceStateChanged(u8),
    Unknown(u8),
    /// A known type without its required fields.
    SchemaMismatch,
    /// A `RESTResponse` whose request id is not pending.
    StrayResponse(u16),
    /// The channel leaves Stasis (its subscriptions linger, then end).
    StasisEnd(u8),
}

/// More bridge events, in an enum of their own so that adding them left the decoding of
/// [`Template`] (and of the committed corpus) as it was.
#[derive(Debug, Arbitrary)]
enum BridgeTemplate {
    /// A channel leaves a bridge (restarts the linger of a bridge the application destroyed).
    ChannelLeftBridge(u8, u8),
    /// The bridge is created (again): it no longer counts as ended, and stops lingering.
    BridgeCreated(u8),
    /// The bridge is destroyed (ends its subscriptions and its linger).
    BridgeDestroyed(u8),
}

impl BridgeTemplate {
    fn frame(&self) -> Vec<u8> {
        let mut v = match self {
            BridgeTemplate::ChannelLeftBridge(b, c) => serde_json::json!({
                "type": "ChannelLeftBridge", "bridge": bridge_json(id(*b)),
                "channel": channel_json(id(*c))
            }),
            BridgeTemplate::BridgeCreated(b) => serde_json::json!({
                "type": "BridgeCreated", "bridge": bridge_json(id(*b))
            }),
            BridgeTemplate::BridgeDestroyed(b) => serde_json::json!({
                "type": "BridgeDestroyed", "bridge": bridge_json(id(*b))
            }),
        };
        if let Value::Object(m) = &mut v {
            m.insert("application".into(), "app".into());
            m.insert("timestamp".into(), "2026-11-26T11:14:38.299+0000".into());
        }
        serde_json::to_vec(&v).expect("a Value serializes")
    }
}

fn channel_json(id: &str) -> Value {
    serde_json::json!({
        "id": id, "name": "PJSIP/alice-1", "state": "Up", "protocol_id": "",
        "caller": {"name": "", "number": ""}, "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {"context": "default", "exten": "s", "priority": 1,
                     "app_name": "", "app_data": ""},
        "creationtime": "2026-11-26T11:14:30.000+0000", "language": "en"
    })
}

fn bridge_json(id: &str) -> Value {
    serde_json::json!({
        "id": id, "technology": "simple_bridge", "bridge_type": "mixing",
        "bridge_class": "stasis", "creator": "app", "name": "", "channels": [],
        "creationtime": "2026-11-26T11:14:30.000+0000", "video_mode": "none"
    })
}

impl Template {
    fn frame(&self) -> Vec<u8> {
        let mut v = match self {
            Template::StasisStart(c) => serde_json::json!({
                "type": "StasisStart", "args": [], "channel": channel_json(id(*c))
            }),
            Template::ChannelDestroyed(c) => serde_json::json!({
                "type": "ChannelDestroyed", "cause": 16, "cause_txt": "Normal Clearing",
                "channel": channel_json(id(*c))
            }),
            Template::Dtmf(c) => serde_json::json!({
                "type": "ChannelDtmfReceived", "digit": "5", "duration_ms": 120,
                "channel": channel_json(id(*c))
            }),
            Template::BridgeDestroyed(b) => serde_json::json!({
                "type": "BridgeDestroyed", "bridge": bridge_json(id(*b))
            }),
            Template::ChannelEnteredBridge(b, c) => serde_json::json!({
                "type": "ChannelEnteredBridge", "bridge": bridge_json(id(*b)),
                "channel": channel_json(id(*c))
            }),
            Template::PlaybackStarted {
                playback,
                target,
                bridge,
            } => serde_json::json!({
                "type": "PlaybackStarted",
                "playback": {
                    "id": id(*playback), "media_uri": "sound:hello", "state": "playing",
                    "target_uri": format!("{}:{}", if *bridge { "bridge" } else { "channel" },
                                          id(*target)),
                    "language": "en"
                }
            }),
            Template::PlaybackFinished(p) => serde_json::json!({
                "type": "PlaybackFinished",
                "playback": {"id": id(*p), "media_uri": "sound:hello", "state": "done",
                             "target_uri": "channel:c1", "language": "en"}
            }),
            Template::RecordingFinished(r) => serde_json::json!({
                "type": "RecordingFinished",
                "recording": {"name": id(*r), "format": "wav", "state": "done",
                              "target_uri": "channel:c1"}
            }),
            Template::EndpointStateChange(t, r) => serde_json::json!({
                "type": "EndpointStateChange",
                "endpoint": {"technology": id(*t), "resource": id(*r), "state": "online",
                             "channel_ids": []}
            }),
            Template::DeviceStateChanged(d) => serde_json::json!({
                "type": "DeviceStateChanged",
                "device_state": {"name": id(*d), "state": "INUSE"}
            }),
            Template::Unknown(c) => serde_json::json!({
                "type": "ChannelTeleported", "channel": {"id": id(*c)}
            }),
            Template::StasisEnd(c) => serde_json::json!({
                "type": "StasisEnd", "channel": channel_json(id(*c))
            }),
            Template::SchemaMismatch => serde_json::json!({"type": "StasisStart"}),
            Template::StrayResponse(n) => serde_json::json!({
                "type": "RESTResponse", "request_id": format!("r{}", 100_000 + u32::from(*n)),
                "status_code": 200, "reason_phrase": "OK", "uri": "asterisk/ping",
                "message_body": ""
            }),
        };
        if let Value::Object(m) = &mut v {
            m.insert("application".into(), "app".into());
            m.insert("timestamp".into(), "2026-11-26T11:14:38.299+0000".into());
        }
        serde_json::to_vec(&v).expect("a Value serializes")
    }
}

/// What a subscription filters on.
#[derive(Debug, Arbitrary)]
struct SubSpec {
    /// 0: every event, otherwise a resource kind.
    kind: u8,
    id: u8,
    event_type: Option<u8>,
    once: bool,
}

impl SubSpec {
    fn filter(&self) -> Filter {
        let kinds = [
            ResourceKind::Channel,
            ResourceKind::Bridge,
            ResourceKind::Playback,
            ResourceKind::Recording,
            ResourceKind::Endpoint,
            ResourceKind::DeviceState,
        ];
        let mut f = match self.kind % 7 {
            0 => Filter::all(),
            k => Filter::resource(kinds[usize::from(k - 1)], id(self.id)),
        };
        if let Some(t) = self.event_type {
            f = f.with_type(TYPES[usize::from(t) % TYPES.len()]);
        }
        if self.once {
            f = f.once();
        }
        f
    }
}

/// A REST-over-WebSocket request.
#[derive(Debug, Arbitrary)]
enum Request {
    Answer(u8),
    GetChannel(u8),
    SetChannelVar {
        channel: u8,
        name: String,
        value: String,
    },
    ListBridges,
    GetStoredRecording(String),
    Ping,
}

/// The operation a request used, to parse its response with.
#[derive(Debug, Clone, Copy)]
enum OpKind {
    Answer,
    GetChannel,
    SetChannelVar,
    ListBridges,
    GetStoredRecording,
    Ping,
}

impl OpKind {
    fn parse(self, status: u16, body: &[u8], raw: &ari_proto::session::RawResponse) {
        use ari_proto::ops::{asterisk, bridges, channels, recordings};
        let index = |name: &str| {
            OP_NAMES
                .iter()
                .position(|n| *n == name)
                .expect("operation in the list")
        };
        let name = match self {
            OpKind::Answer => {
                let _ = raw.parse::<channels::Answer>();
                <channels::Answer as Operation>::NAME
            }
            OpKind::GetChannel => {
                let _ = raw.parse::<channels::Get>();
                <channels::Get as Operation>::NAME
            }
            OpKind::SetChannelVar => {
                let _ = raw.parse::<channels::SetChannelVar>();
                <channels::SetChannelVar as Operation>::NAME
            }
            OpKind::ListBridges => {
                let _ = raw.parse::<bridges::List>();
                <bridges::List as Operation>::NAME
            }
            OpKind::GetStoredRecording => {
                let _ = raw.parse::<recordings::GetStored>();
                <recordings::GetStored as Operation>::NAME
            }
            OpKind::Ping => {
                let _ = raw.parse::<asterisk::Ping>();
                <asterisk::Ping as Operation>::NAME
            }
        };
        check_op_at(index(name), status, body);
    }
}

/// One step of the session fuzz target.
#[derive(Debug, Arbitrary)]
enum Action {
    Start,
    Stop,
    Connected,
    ConnectFailed,
    /// Arbitrary bytes as a text frame.
    Frame(Vec<u8>),
    /// A well-formed event frame.
    Event(Template),
    Pong,
    Disconnected,
    AdvanceTime(u16),
    /// Jump to `poll_timeout` and handle it.
    FireTimer,
    Subscribe(SubSpec),
    Unsubscribe(u8),
    SendRequest(Request),
    /// A `RESTResponse` for the `n`-th pending request.
    Respond {
        request: u8,
        status: u16,
        body: String,
    },
    /// `NewResourceId`, or an action added later (see [`More`]).
    More(More),
}

/// The last variant of [`Action`]: `NewResourceId`, unless the next byte is
/// [`BRIDGE_ACTION`], then a [`BridgeAction`], or [`NOT_CREATED_ACTION`], then a
/// [`NotCreated`]. Adding actions as variants of their own would have changed how every input
/// decodes (the derived `Arbitrary` picks a variant by scaling a `u32` by their count); this
/// way an input decodes as it did unless a `NewResourceId` of it is followed by one of those
/// bytes, so the committed corpus keeps its meaning (no committed input had either byte there
/// when its action was added).
#[derive(Debug)]
enum More {
    NewResourceId,
    Bridge(BridgeAction),
    NotCreated(NotCreated),
    EndResources(EndResources),
    Queued(QueuedAction),
}

/// The byte after [`Action::More`]'s discriminant that makes it a [`BridgeAction`].
const BRIDGE_ACTION: u8 = 0xb7;

/// The byte after [`Action::More`]'s discriminant that makes it a [`NotCreated`].
const NOT_CREATED_ACTION: u8 = 0x9c;

/// The byte after [`Action::More`]'s discriminant that makes it an [`EndResources`].
const END_RESOURCES_ACTION: u8 = 0xe3;

/// The byte after [`Action::More`]'s discriminant that makes it a [`QueuedAction`].
const QUEUED_ACTION: u8 = 0x5a;

impl<'a> Arbitrary<'a> for More {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        match u.peek_bytes(1) {
            Some(&[BRIDGE_ACTION]) => {
                u.bytes(1)?;
                Ok(More::Bridge(BridgeAction::arbitrary(u)?))
            }
            Some(&[NOT_CREATED_ACTION]) => {
                u.bytes(1)?;
                Ok(More::NotCreated(NotCreated::arbitrary(u)?))
            }
            Some(&[END_RESOURCES_ACTION]) => {
                u.bytes(1)?;
                Ok(More::EndResources(EndResources::arbitrary(u)?))
            }
            Some(&[QUEUED_ACTION]) => {
                u.bytes(1)?;
                Ok(More::Queued(QueuedAction::arbitrary(u)?))
            }
            _ => Ok(More::NewResourceId),
        }
    }
}

/// Asterisk refused a request that would have created a resource under the application's id
/// (`RequestParts::created_resource`): `Session::not_created` of a channel, bridge, playback or
/// recording of [`IDS`].
#[derive(Debug, Arbitrary)]
struct NotCreated {
    kind: u8,
    id: u8,
}

impl NotCreated {
    fn resource(&self) -> (ResourceKind, &'static str) {
        let kinds = [
            ResourceKind::Channel,
            ResourceKind::Bridge,
            ResourceKind::Playback,
            ResourceKind::Recording,
        ];
        (kinds[usize::from(self.kind) % kinds.len()], id(self.id))
    }
}

/// Resources gone without an event (a cluster node's Asterisk restarted):
/// `Session::end_resources` of up to three resources of [`IDS`] (each as a [`NotCreated`]
/// picks it), with `EndReason::ResourceEnded`.
#[derive(Debug, Arbitrary)]
struct EndResources {
    resources: [NotCreated; 3],
    count: u8,
}

impl EndResources {
    fn resources(&self) -> Vec<(ResourceKind, &'static str)> {
        let n = usize::from(self.count) % (self.resources.len() + 1);
        self.resources[..n]
            .iter()
            .map(NotCreated::resource)
            .collect()
    }
}

/// Playbacks and recordings queued on a channel or bridge, and the refusals of ids decided
/// late.
#[derive(Debug, Arbitrary)]
enum QueuedAction {
    /// A play with an id or a record on a channel or bridge of [`IDS`] succeeded: its
    /// `RequestParts::queued_on`, then `Session::queued_on`.
    QueuedOn {
        recording: bool,
        id: u8,
        bridge: bool,
        target: u8,
    },
    /// `Session::not_created_before` with a mark: one of the known subscription ids, in
    /// order (`mark` modulo their count plus one), or `Session::next_subscription_id`.
    NotCreatedBefore { resource: NotCreated, mark: u8 },
    /// `RequestParts::stopped_recording` of a stop, cancel, pause or get of a live recording
    /// (`op` modulo 4) named by [`IDS`] or by `name`.
    StoppedRecording {
        op: u8,
        id: u8,
        name: Option<String>,
    },
}

/// Bridges the application destroys or creates again, and their events.
#[derive(Debug, Arbitrary)]
enum BridgeAction {
    /// The application's `DELETE /bridges/{id}` succeeded: `Session::bridge_destroyed`.
    Destroyed(u8),
    /// A bridge is created again with this id: `Session::forget_ended` of a bridge.
    Forget(u8),
    /// A bridge event for the ids the other actions use.
    Event(BridgeTemplate),
}

/// What the test knows the session must hold.
#[derive(Default)]
struct Model {
    /// `Limits::max_ended_ids`: how many channels and bridges `queued_on` tracks at once.
    max_queued_targets: usize,
    /// Playbacks and recordings `queued_on` left untracked (`Stats::queued_untracked`).
    queued_untracked: u64,
    /// Live subscriptions and their filters (ids are creation order).
    subs: BTreeMap<SubscriptionId, Filter>,
    /// Every subscription ever ended or removed.
    gone: BTreeSet<SubscriptionId>,
    /// Requests sent and not answered yet, with their operation.
    pending: BTreeMap<u64, OpKind>,
    /// Requests answered.
    answered: BTreeSet<u64>,
    /// Outputs delivered of each droppable kind and the sum of `Overflow` markers.
    events: u64,
    warnings: u64,
    dropped: u64,
    /// The previous request id.
    last_request: u64,
    /// Whether a `Connect` transmit is outstanding (not yet answered or closed).
    connecting: bool,
    /// The first `StasisEnd` frame of each channel: a subscription ended by a timeout (the
    /// linger) follows a channel whose first `StasisEnd` came at least the linger ago.
    stasis_ends: BTreeMap<String, Instant>,
    /// A subscription made to a resource that had already ended, whose end is due now.
    ended_at_subscribe: Option<SubscriptionId>,
    /// Bridges the application destroyed (`Action::DestroyBridge`) that linger, and when
    /// their linger is over (each routed event of the bridge restarts it; its
    /// `BridgeDestroyed` or `BridgeCreated`, or `forget_ended`, stops it).
    bridges: BTreeMap<String, Instant>,
    /// Bridges whose linger the last `handle_timeout` ended: their subscriptions end without
    /// an event, and they count as ended.
    bridges_due: BTreeSet<String>,
    /// The subscriptions the last `not_created` ended, in subscription order: each ends with
    /// `EndReason::NotCreated` in the next drain, in that order, and no other does.
    not_created: std::collections::VecDeque<SubscriptionId>,
    /// The subscriptions the last `end_resources` ended, in its order: each ends with
    /// `EndReason::ResourceEnded` in the next drain, in that order, before any other.
    ended_resources: std::collections::VecDeque<SubscriptionId>,
    /// What `queued_on` queued on each channel or bridge, in order, and did not start or end
    /// yet: the live subscriptions of each end with `EndReason::NeverStarted` when the
    /// channel leaves the application or the bridge is destroyed.
    queued: BTreeMap<(ResourceKind, String), Vec<(ResourceKind, String)>>,
    /// The subscriptions the last routed event ended as never started, in order: each ends
    /// with `EndReason::NeverStarted` in the next drain, in that order, and no other does.
    never_started: std::collections::VecDeque<SubscriptionId>,
    /// Channels that left the application (`StasisEnd`, `ChannelDestroyed`) and bridges
    /// destroyed (`BridgeDestroyed`) since they were last (re)created (`StasisStart`,
    /// `ChannelCreated`, `BridgeCreated`), and their departure order (at most
    /// `max_ended_ids`, the oldest forgotten first): a later `queued_on` on one ends the
    /// resource's live subscriptions at once, unless it was seen.
    departed: BTreeSet<(ResourceKind, String)>,
    departed_order: std::collections::VecDeque<(ResourceKind, String)>,
    /// Every resource a subscription ever followed (for the `has_seen` checks).
    followed: BTreeSet<(ResourceKind, String)>,
    /// The followed resources a frame may have been routed for since their first live
    /// subscription was made (every followed one for a frame the model cannot decode).
    may_be_seen: BTreeSet<(ResourceKind, String)>,
}

/// `session_actions`: the input is a [`Config`] followed by a sequence of [`Action`]s (both
/// decoded with `arbitrary`). The actions drive a [`Session`] in simulated time; after each,
/// `poll_transmit` and `poll_output` are drained and the invariants checked: no panic;
/// subscriptions live in the session are exactly those of the model (created, minus
/// unsubscribed, minus those the session ended, each ended at most once); every event goes to
/// exactly the live subscriptions whose filter matches it, in subscription order; every
/// request gets exactly one response and pending requests stay within the limit; undelivered
/// events stay within the limit and every drop is announced; `Text`/`Ping` only go to an open
/// socket; after `handle_timeout(now)`, `poll_timeout` is in the future; the subscriptions
/// of a bridge the application destroyed (`bridge_destroyed`) end without an event only when
/// its linger is over (each routed event of it restarting it; its `BridgeDestroyed` or
/// `BridgeCreated`, or `forget_ended`, stopping it), it counts as ended only then, and
/// `poll_timeout` wakes up for it; `not_created` ends exactly the live subscriptions of its
/// resource, in order, with `EndReason::NotCreated`, without changing whether it counts as
/// ended (`not_created_before`: only those older than the mark); a playback or recording
/// `queued_on` a channel or bridge, not started or ended yet, has exactly its live
/// subscriptions ended with `EndReason::NeverStarted`, in queue then subscription order, when
/// the channel's `StasisEnd` or `ChannelDestroyed` or the bridge's `BridgeDestroyed` is routed,
/// or at once when it is queued on one that already departed (and was not seen) (at most
/// `Limits::max_ended_ids` channels and bridges tracked, one more counted in
/// `queued_untracked`);
/// `subscribe` returns `next_subscription_id`; `has_seen` holds only for a resource some live
/// subscription follows, and always for one an event was routed for while it was followed;
/// and the stats agree.
pub fn session_actions(data: &[u8]) {
    let _ = run_session(data);
}

/// The configuration and actions an input of [`session_actions`] decodes to, for debugging a
/// crash (`cargo test … describe` or a scratch `main`).
pub fn describe_session(data: &[u8]) -> String {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else {
        return "too short for a configuration".into();
    };
    let actions = Vec::<Action>::arbitrary_take_rest(u);
    format!("{config:#?}\n{actions:#?}")
}

/// Runs [`session_actions`] and returns the session's counters before the final `stop` (the
/// replay test checks that the corpus reaches every interesting path), or `None` when the
/// bytes are too short for a configuration.
pub fn run_session(data: &[u8]) -> Option<Stats> {
    let mut u = Unstructured::new(data);
    let config = Config::arbitrary(&mut u).ok()?;
    let actions = Vec::<Action>::arbitrary_take_rest(u).ok()?;
    let mut model = Model {
        max_queued_targets: config.max_ended_ids(),
        ..Model::default()
    };
    let config = config.build();
    let endpoint = BaseUrl::new(
        "http://127.0.0.1:8088",
        Credentials::new("asterisk", "fuzz-secret").expect("credentials"),
    )
    .expect("endpoint");
    #[allow(clippy::disallowed_methods)] // the harness is the adapter: it owns the clock
    let start = Instant::now();
    let mut now = start;
    let mut session = Session::new(endpoint, config.clone());
    for action in actions.into_iter().take(512) {
        let mut event_frame = None;
        let routed_before = session.stats().events;
        let mut after_timeout = false;
        match action {
            Action::Start => session.start(now),
            Action::Stop => session.stop(),
            Action::Connected => session.handle_connected(now),
            Action::ConnectFailed => session.handle_connect_failed(now, "refused"),
            Action::Frame(bytes) => {
                event_frame = Some(bytes.clone());
                session.handle_frame(now, &bytes);
            }
            Action::Event(t) => {
                let bytes = t.frame();
                event_frame = Some(bytes.clone());
                session.handle_frame(now, &bytes);
            }
            Action::More(More::Bridge(BridgeAction::Event(t))) => {
                let bytes = t.frame();
                event_frame = Some(bytes.clone());
                session.handle_frame(now, &bytes);
            }
            Action::Pong => session.handle_pong(),
            Action::Disconnected => session.handle_disconnected(now, "reset"),
            Action::AdvanceTime(ms) => {
                now += Duration::from_millis(u64::from(ms));
                timeout(&mut session, &mut model, now);
                after_timeout = true;
            }
            Action::FireTimer => {
                if let Some(t) = session.poll_timeout() {
                    now = now.max(t);
                }
                timeout(&mut session, &mut model, now);
                after_timeout = true;
            }
            Action::Subscribe(spec) => {
                let filter = spec.filter();
                // A subscription to a resource the session remembers as ended ends at once
                // (its `SubscriptionEnded` is the next output).
                let ended = filter
                    .resource_ref()
                    .is_some_and(|(kind, rid)| session.has_ended(kind, rid));
                let next = session.next_subscription_id();
                let id = session.subscribe(filter.clone());
                assert_eq!(id, next, "next_subscription_id");
                assert!(
                    session.next_subscription_id() > id,
                    "next_subscription_id after {id}"
                );
                assert!(
                    model.subs.keys().chain(&model.gone).all(|&old| old < id),
                    "subscription ids grow"
                );
                assert_eq!(session.is_subscribed(id), !ended);
                if let Some((kind, rid)) = filter.resource_ref() {
                    model.followed.insert((kind, rid.to_owned()));
                }
                model.subs.insert(id, filter);
                if ended {
                    model.ended_at_subscribe = Some(id);
                }
            }
            Action::Unsubscribe(n) => {
                let known: Vec<SubscriptionId> =
                    model.subs.keys().chain(&model.gone).copied().collect();
                if !known.is_empty() {
                    let id = known[usize::from(n) % known.len()];
                    let live = model.subs.remove(&id).is_some();
                    assert_eq!(session.unsubscribe(id), live, "unsubscribe {id}");
                    model.gone.insert(id);
                    assert!(!session.is_subscribed(id));
                }
            }
            Action::SendRequest(req) => send(&mut session, &mut model, now, req, &config),
            Action::Respond {
                request,
                status,
                body,
            } => {
                let ids: Vec<u64> = model.pending.keys().copied().collect();
                let n = if ids.is_empty() {
                    u64::from(request)
                } else {
                    ids[usize::from(request) % ids.len()]
                };
                let frame = serde_json::json!({
                    "type": "RESTResponse", "application": "app",
                    "timestamp": "2026-11-26T11:14:38.299+0000",
                    "request_id": format!("r{n}"), "status_code": status,
                    "reason_phrase": "", "uri": "x", "message_body": body,
                });
                let bytes = serde_json::to_vec(&frame).expect("serializes");
                event_frame = Some(bytes.clone());
                session.handle_frame(now, &bytes);
            }
            Action::More(More::NewResourceId) => {
                let id = session.new_resource_id();
                assert!(!id.is_empty() && id.is_ascii());
            }
            Action::More(More::Bridge(BridgeAction::Destroyed(b))) => {
                // Lingers unless already lingering (its deadline stays), recorded as ended,
                // or the linger is off; nothing ends now.
                let b = id(b);
                let ended = session.has_ended(ResourceKind::Bridge, b);
                session.bridge_destroyed(now, b);
                if let Some(linger) = config.stasis_end_linger {
                    if !ended && !model.bridges.contains_key(b) {
                        model.bridges.insert(b.into(), now + linger);
                    }
                }
                assert_eq!(session.has_ended(ResourceKind::Bridge, b), ended);
            }
            Action::More(More::NotCreated(nc)) => {
                // Ends the resource's live subscriptions (in the next drain, with NotCreated);
                // does not change whether it counts as ended, nor a bridge's linger.
                let (kind, rid) = nc.resource();
                let ended = session.has_ended(kind, rid);
                let following: Vec<SubscriptionId> = model
                    .subs
                    .iter()
                    .filter(|(_, f)| f.resource_ref() == Some((kind, rid)))
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(
                    session.not_created(kind, rid),
                    following.len(),
                    "not_created({kind:?}, {rid})"
                );
                assert_eq!(
                    session.has_ended(kind, rid),
                    ended,
                    "not_created changed whether {kind:?} {rid} ended"
                );
                model.not_created.extend(following);
            }
            Action::More(More::EndResources(er)) => {
                // Ends the resources' live subscriptions (in the next drain, in the order
                // given, subscription order per resource), records each as ended, and stops
                // a destroyed bridge's linger.
                let resources = er.resources();
                let mut following: Vec<SubscriptionId> = Vec::new();
                for &(kind, rid) in &resources {
                    following.extend(
                        model
                            .subs
                            .iter()
                            .filter(|(id, f)| {
                                f.resource_ref() == Some((kind, rid)) && !following.contains(id)
                            })
                            .map(|(id, _)| *id)
                            .collect::<Vec<_>>(),
                    );
                }
                assert_eq!(
                    session.end_resources(resources.iter().copied(), EndReason::ResourceEnded),
                    following.len(),
                    "end_resources({resources:?})"
                );
                for &(kind, rid) in &resources {
                    assert!(session.has_ended(kind, rid), "{kind:?} {rid} ended");
                    if kind == ResourceKind::Bridge {
                        model.bridges.remove(rid);
                    }
                }
                model.ended_resources.extend(following);
            }
            Action::More(More::Queued(q)) => queued_action(&mut session, &mut model, q),
            Action::More(More::Bridge(BridgeAction::Forget(b))) => {
                // Forgets the end, or stops the linger (the bridge's subscriptions stay).
                let b = id(b);
                let ended = session.has_ended(ResourceKind::Bridge, b);
                let lingered = model.bridges.remove(b).is_some();
                assert!(!(ended && lingered), "{b} lingers and counts as ended");
                assert_eq!(
                    session.forget_ended(ResourceKind::Bridge, b),
                    ended || lingered,
                    "forget_ended of bridge {b}"
                );
                assert!(!session.has_ended(ResourceKind::Bridge, b));
            }
        }
        if let Some(frame) = event_frame.as_deref() {
            let followed: Vec<(ResourceKind, String)> = model
                .subs
                .values()
                .filter_map(|f| f.resource_ref().map(|(k, r)| (k, r.to_owned())))
                .collect();
            match Event::decode_lenient(frame) {
                Ok((e, _)) => {
                    for r in e.resources().iter() {
                        let r = (r.kind, String::from(r.id));
                        if followed.contains(&r) {
                            model.may_be_seen.insert(r);
                        }
                    }
                }
                Err(_) => model.may_be_seen.extend(followed),
            }
        }
        if session.stats().events > routed_before {
            // The frame was routed (as the event `decode_lenient` gives).
            if let Some(Ok((e, _))) = event_frame.as_deref().map(Event::decode_lenient) {
                track_queued(&mut model, &e);
            }
        }
        if let Some(Ok((Event::StasisEnd(e), _))) =
            event_frame.as_deref().map(Event::decode_lenient)
        {
            model
                .stasis_ends
                .entry(String::from(e.channel.id.as_str()))
                .or_insert(now);
        }
        drain(
            &mut session,
            &mut model,
            event_frame.as_deref(),
            now,
            &config,
        );
        if after_timeout {
            // Never in the past; a deadline at `now` itself (a zero reconnect delay set by the
            // timeout just handled) is due at once, and handling it must make progress: a few
            // more calls at the same instant leave nothing due, or the driver would spin.
            let mut spins = 0;
            while let Some(t) = session.poll_timeout() {
                assert!(t >= now, "poll_timeout {:?} in the past", t - start);
                if t > now {
                    break;
                }
                spins += 1;
                assert!(
                    spins <= 3,
                    "poll_timeout stays at now: the driver would spin"
                );
                timeout(&mut session, &mut model, now);
                drain(&mut session, &mut model, None, now, &config);
            }
        }
        check_state(&session, &model, &config);
    }
    let stats = session.stats();
    // Stopping fails every pending request and leaves nothing scheduled but the linger of
    // channels that left Stasis and of bridges the application destroyed, which still ends
    // their subscriptions.
    session.stop();
    drain(&mut session, &mut model, None, now, &config);
    assert_eq!(session.pending_requests(), 0);
    assert!(model.pending.is_empty(), "requests never answered");
    let mut lingering = session.lingering_channels() + model.bridges.len();
    while let Some(t) = session.poll_timeout() {
        assert!(lingering > 0, "timers after stop");
        now = now.max(t);
        timeout(&mut session, &mut model, now);
        drain(&mut session, &mut model, None, now, &config);
        let left = session.lingering_channels() + model.bridges.len();
        assert!(left < lingering, "a due linger did not end");
        lingering = left;
    }
    assert_eq!(session.lingering_channels(), 0);
    assert!(
        model.bridges.is_empty(),
        "bridges still linger: {:?}",
        model.bridges
    );
    check_state(&session, &model, &config);
    Some(stats)
}

/// A [`QueuedAction`]: drives the session and checks the result against the model.
fn queued_action(session: &mut Session, model: &mut Model, q: QueuedAction) {
    use ari_proto::ops::{bridges, channels, recordings};
    use ari_proto::rest::request_parts;
    match q {
        QueuedAction::QueuedOn {
            recording,
            id: r,
            bridge,
            target,
        } => {
            let (rid, tid) = (id(r), id(target));
            let kind = if recording {
                ResourceKind::Recording
            } else {
                ResourceKind::Playback
            };
            let target_kind = if bridge {
                ResourceKind::Bridge
            } else {
                ResourceKind::Channel
            };
            let parts = match (recording, bridge) {
                (false, false) => {
                    request_parts(&channels::PlayWithId::new(tid, rid, ["sound:hello"]))
                }
                (false, true) => {
                    request_parts(&bridges::PlayWithId::new(tid, rid, ["sound:hello"]))
                }
                (true, false) => request_parts(&channels::Record::new(tid, rid, "wav")),
                (true, true) => request_parts(&bridges::Record::new(tid, rid, "wav")),
            };
            // The request names what it queues on what (ids decoded back), and it stops no
            // recording.
            let parts = parts.expect("the ids of IDS make a request");
            assert_eq!(
                parts.queued_on(),
                Some(((kind, rid.to_owned()), (target_kind, tid.to_owned()))),
                "queued_on of {parts:?}"
            );
            assert_eq!(parts.stopped_recording(), None);
            let seen = session.has_seen(kind, rid) || session.has_ended(kind, rid);
            session.queued_on(kind, rid, target_kind, tid);
            if model.departed.contains(&(target_kind, tid.to_owned())) {
                // Answered after its channel left or its bridge went: dropped by Asterisk,
                // its live subscriptions end now (in subscription order), unless it ran.
                if !seen {
                    let ids: Vec<SubscriptionId> = model
                        .subs
                        .iter()
                        .filter(|(_, f)| f.resource_ref() == Some((kind, rid)))
                        .map(|(id, _)| *id)
                        .collect();
                    model.never_started.extend(ids);
                }
                return;
            }
            if seen {
                // Started or ended already: not tracked.
                return;
            }
            // At most `max_ended_ids` channels and bridges are tracked; one more is counted.
            let key = (target_kind, tid.to_owned());
            if !model.queued.contains_key(&key) && model.queued.len() >= model.max_queued_targets {
                model.queued_untracked += 1;
            } else {
                let list = model.queued.entry(key).or_default();
                if !list.iter().any(|(k, i)| *k == kind && i == rid) {
                    list.push((kind, rid.to_owned()));
                }
            }
            assert_eq!(
                session.stats().queued_untracked,
                model.queued_untracked,
                "queued_untracked"
            );
        }
        QueuedAction::NotCreatedBefore { resource, mark } => {
            // Ends the resource's live subscriptions older than the mark (in the next drain,
            // with NotCreated, in order), no other; does not change whether it counts as
            // ended.
            let (kind, rid) = resource.resource();
            let known: BTreeSet<SubscriptionId> =
                model.subs.keys().chain(&model.gone).copied().collect();
            let known: Vec<SubscriptionId> = known.into_iter().collect();
            let n = usize::from(mark) % (known.len() + 1);
            let before = known
                .get(n)
                .copied()
                .unwrap_or_else(|| session.next_subscription_id());
            let ended = session.has_ended(kind, rid);
            let following: Vec<SubscriptionId> = model
                .subs
                .iter()
                .filter(|(id, f)| **id < before && f.resource_ref() == Some((kind, rid)))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(
                session.not_created_before(kind, rid, before),
                following.len(),
                "not_created_before({kind:?}, {rid}, {before})"
            );
            assert_eq!(session.has_ended(kind, rid), ended);
            model.not_created.extend(following);
        }
        QueuedAction::StoppedRecording { op, id: r, name } => {
            let name = name.unwrap_or_else(|| id(r).to_owned());
            let stops = op % 4 < 2;
            let parts = match op % 4 {
                0 => request_parts(&recordings::Stop::new(name.clone())),
                1 => request_parts(&recordings::Cancel::new(name.clone())),
                2 => request_parts(&recordings::Pause::new(name.clone())),
                _ => request_parts(&recordings::GetLive::new(name.clone())),
            };
            match parts {
                Ok(parts) => {
                    assert_eq!(
                        parts.stopped_recording(),
                        stops.then_some(name),
                        "stopped_recording of {parts:?}"
                    );
                    assert_eq!(parts.queued_on(), None);
                }
                Err(_) => assert!(name.is_empty() || name.contains('\0'), "{name:?} refused"),
            }
        }
    }
}

/// After `event` was routed: a queued playback or recording that started or ended is no
/// longer queued; the live subscriptions of those queued on a channel that left the
/// application or a destroyed bridge end (`EndReason::NeverStarted`, in queue order, then
/// subscription order).
fn track_queued(model: &mut Model, event: &Event) {
    track_departed(model, event);
    let (target, kind, rid, uri) = match event {
        Event::StasisEnd(e) => ((ResourceKind::Channel, e.channel.id.as_str()), None, "", ""),
        Event::ChannelDestroyed(e) => {
            ((ResourceKind::Channel, e.channel.id.as_str()), None, "", "")
        }
        Event::BridgeDestroyed(e) => ((ResourceKind::Bridge, e.bridge.id.as_str()), None, "", ""),
        Event::PlaybackStarted(e) => (
            (ResourceKind::Channel, ""),
            Some(ResourceKind::Playback),
            e.playback.id.as_str(),
            e.playback.target_uri.as_str(),
        ),
        Event::PlaybackFinished(e) => (
            (ResourceKind::Channel, ""),
            Some(ResourceKind::Playback),
            e.playback.id.as_str(),
            e.playback.target_uri.as_str(),
        ),
        Event::RecordingStarted(e) => (
            (ResourceKind::Channel, ""),
            Some(ResourceKind::Recording),
            e.recording.name.as_str(),
            e.recording.target_uri.as_str(),
        ),
        Event::RecordingFinished(e) => (
            (ResourceKind::Channel, ""),
            Some(ResourceKind::Recording),
            e.recording.name.as_str(),
            e.recording.target_uri.as_str(),
        ),
        Event::RecordingFailed(e) => (
            (ResourceKind::Channel, ""),
            Some(ResourceKind::Recording),
            e.recording.name.as_str(),
            e.recording.target_uri.as_str(),
        ),
        _ => return,
    };
    let Some(kind) = kind else {
        let Some(list) = model.queued.remove(&(target.0, target.1.to_owned())) else {
            return;
        };
        for (k, i) in list {
            let ids: Vec<SubscriptionId> = model
                .subs
                .iter()
                .filter(|(_, f)| f.resource_ref() == Some((k, i.as_str())))
                .map(|(id, _)| *id)
                .collect();
            model.never_started.extend(ids);
        }
        return;
    };
    let target = match uri.split_once(':') {
        Some(("channel", t)) => (ResourceKind::Channel, t.to_owned()),
        Some(("bridge", t)) => (ResourceKind::Bridge, t.to_owned()),
        _ => return,
    };
    if let Some(list) = model.queued.get_mut(&target) {
        list.retain(|(k, i)| !(*k == kind && i == rid));
        if list.is_empty() {
            model.queued.remove(&target);
        }
    }
}

/// After `event` was routed: a channel that left the application or was destroyed, or a
/// bridge destroyed, departs; one (re)created or back in Stasis is present again.
fn track_departed(model: &mut Model, event: &Event) {
    let (key, gone) = match event {
        Event::StasisEnd(e) => ((ResourceKind::Channel, e.channel.id.as_str()), true),
        Event::ChannelDestroyed(e) => ((ResourceKind::Channel, e.channel.id.as_str()), true),
        Event::BridgeDestroyed(e) => ((ResourceKind::Bridge, e.bridge.id.as_str()), true),
        Event::StasisStart(e) => ((ResourceKind::Channel, e.channel.id.as_str()), false),
        Event::ChannelCreated(e) => ((ResourceKind::Channel, e.channel.id.as_str()), false),
        Event::BridgeCreated(e) => ((ResourceKind::Bridge, e.bridge.id.as_str()), false),
        _ => return,
    };
    let key = (key.0, key.1.to_owned());
    if !gone {
        model.departed.remove(&key);
        return;
    }
    if model.departed.contains(&key) {
        return;
    }
    let cap = model.max_queued_targets;
    while model.departed_order.len() >= cap {
        if let Some(old) = model.departed_order.pop_front() {
            model.departed.remove(&old);
        }
    }
    model.departed.insert(key.clone());
    model.departed_order.push_back(key);
}

/// `handle_timeout(now)`, and the model's bridges whose linger is over by `now` become due:
/// their subscriptions end in the next drain.
fn timeout(session: &mut Session, model: &mut Model, now: Instant) {
    session.handle_timeout(now);
    let due: Vec<String> = model
        .bridges
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(b, _)| b.clone())
        .collect();
    for b in due {
        model.bridges.remove(&b);
        model.bridges_due.insert(b);
    }
}

fn send(session: &mut Session, model: &mut Model, now: Instant, req: Request, c: &SessionConfig) {
    use ari_proto::ops::{asterisk, bridges, channels, recordings};
    let connected = session.is_connected();
    let pending = session.pending_requests();
    // Whether the request must be refused: an empty id, or a NUL anywhere (see
    // `BuildError::InvalidParameter`).
    let refused = |values: &[&str], id: Option<&str>| {
        id.is_some_and(str::is_empty) || values.iter().chain(&id).any(|v| v.contains('\0'))
    };
    let (result, kind, must_refuse) = match req {
        Request::Answer(c) => (
            session.send_request(now, &channels::Answer::new(id(c))),
            OpKind::Answer,
            false,
        ),
        Request::GetChannel(c) => (
            session.send_request(now, &channels::Get::new(id(c))),
            OpKind::GetChannel,
            false,
        ),
        Request::SetChannelVar {
            channel,
            name,
            value,
        } => {
            let bad = refused(&[&name, &value], None);
            (
                session.send_request(
                    now,
                    &channels::SetChannelVar::new(id(channel), name).value(value),
                ),
                OpKind::SetChannelVar,
                bad,
            )
        }
        Request::ListBridges => (
            session.send_request(now, &bridges::List::new()),
            OpKind::ListBridges,
            false,
        ),
        Request::GetStoredRecording(name) => {
            let bad = refused(&[], Some(&name));
            (
                session.send_request(now, &recordings::GetStored::new(name)),
                OpKind::GetStoredRecording,
                bad,
            )
        }
        Request::Ping => (
            session.send_request(now, &asterisk::Ping::new()),
            OpKind::Ping,
            false,
        ),
    };
    match result {
        Ok(id) => {
            assert!(connected, "request accepted while not connected");
            assert!(pending < c.limits.max_pending_requests);
            assert!(!must_refuse);
            assert!(id.as_u64() > model.last_request, "request ids grow");
            model.last_request = id.as_u64();
            model.pending.insert(id.as_u64(), kind);
            assert_eq!(session.pending_requests(), pending + 1);
        }
        Err(SendError::NotConnected) => assert!(!connected),
        Err(SendError::TooManyPending { limit }) => {
            assert!(connected);
            assert_eq!(limit, c.limits.max_pending_requests);
            assert!(pending >= limit);
        }
        Err(SendError::Build(e)) => {
            assert!(must_refuse, "unexpected build error {e}");
        }
        Err(e) => panic!("unexpected send error {e}"),
    }
}

/// Drains transmits then outputs, checking each against the model.
fn drain(
    session: &mut Session,
    model: &mut Model,
    frame: Option<&[u8]>,
    now: Instant,
    c: &SessionConfig,
) {
    let mut texts = 0;
    let mut last_socket = None;
    while let Some(t) = session.poll_transmit() {
        match t {
            Transmit::Connect(req) => {
                let uri = req.uri().to_string();
                assert!(uri.starts_with("ws://127.0.0.1:8088/ari/events?app=app,second%20app"));
                // With WsAuth::ApiKey the password is in the URI by design (documented), and
                // http::Request's Debug prints the URI; with Basic it must not show anywhere.
                if c.auth == WsAuth::Basic {
                    let dbg = format!("{req:?}");
                    assert!(!dbg.contains("fuzz-secret"), "password in {dbg}");
                }
                model.connecting = true;
                last_socket = Some("connect");
            }
            Transmit::Close => {
                model.connecting = false;
                last_socket = Some("close");
            }
            Transmit::Text(text) => {
                texts += 1;
                let v: Value = serde_json::from_str(&text).expect("RESTRequest is JSON");
                assert_eq!(v["type"], "RESTRequest");
            }
            Transmit::Ping(_) => texts += 1,
            other => panic!("unknown transmit {other:?}"),
        }
    }
    if texts > 0 {
        assert!(
            session.is_connected(),
            "text or ping without an open socket"
        );
    }
    if last_socket == Some("connect") {
        assert_eq!(session.state(), ConnectionState::Connecting);
    }
    let event = frame
        .and_then(|f| Event::decode_lenient(f).ok())
        .map(|(e, _)| e);
    let mut droppable = 0usize;
    let mut ended_now: Vec<(SubscriptionId, EndReason)> = Vec::new();
    // The resources of the events delivered now: each was routed to its followers.
    let mut routed: Vec<(ResourceKind, String)> = Vec::new();
    while let Some(out) = session.poll_output() {
        match out {
            Output::Event(d) => {
                droppable += 1;
                model.events += 1;
                let expected: Vec<SubscriptionId> = model
                    .subs
                    .iter()
                    .filter(|(_, f)| f.matches(&d.event))
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(
                    d.subscribers.as_slice(),
                    &expected[..],
                    "subscribers of {}",
                    d.event.type_name()
                );
                if let Some(e) = &event {
                    assert_eq!(e.type_name(), d.event.type_name());
                }
                track_bridges(model, &d.event, now, c);
                routed.extend(
                    d.event
                        .resources()
                        .iter()
                        .map(|r| (r.kind, String::from(r.id))),
                );
            }
            Output::Warning(w) => {
                droppable += 1;
                model.warnings += 1;
                assert!(!w.to_string().is_empty());
            }
            Output::Overflow { dropped, .. } => {
                assert!(dropped > 0);
                model.dropped += dropped;
            }
            Output::SubscriptionEnded { id, reason, .. } => {
                let filter = model
                    .subs
                    .remove(&id)
                    .unwrap_or_else(|| panic!("{id} ended but was not live"));
                model.gone.insert(id);
                match reason {
                    EndReason::Once => assert!(filter.is_once(), "{id} is not one-shot"),
                    EndReason::ResourceEnded if model.ended_resources.front() == Some(&id) => {
                        model.ended_resources.pop_front();
                    }
                    EndReason::NeverStarted => assert_eq!(
                        model.never_started.pop_front(),
                        Some(id),
                        "{id} ended with NeverStarted"
                    ),
                    EndReason::NotCreated => assert_eq!(
                        model.not_created.pop_front(),
                        Some(id),
                        "{id} ended with NotCreated"
                    ),
                    EndReason::ResourceEnded if model.ended_at_subscribe == Some(id) => {
                        let (kind, rid) = filter.resource_ref().expect("a resource filter");
                        assert!(event.is_none(), "{id} ended at its subscription");
                        assert!(session.has_ended(kind, rid));
                        model.ended_at_subscribe = None;
                    }
                    EndReason::ResourceEnded => {
                        let (kind, rid) = filter.resource_ref().expect("a resource filter");
                        match event.as_ref() {
                            Some(e) => {
                                let r = e.ended_resource().expect("a final event");
                                assert_eq!(r.kind, kind);
                                assert_eq!(r.id, rid);
                            }
                            None if kind == ResourceKind::Bridge => {
                                // A timeout: the linger of a bridge the application destroyed.
                                assert!(
                                    model.bridges_due.contains(rid),
                                    "{id} ended: bridge {rid} was not due"
                                );
                            }
                            None => {
                                // A timeout: the linger of a channel that left Stasis.
                                assert_eq!(kind, ResourceKind::Channel, "{id} lingered");
                                let linger = c.stasis_end_linger.expect("a linger is set");
                                let left = model
                                    .stasis_ends
                                    .get(rid)
                                    .unwrap_or_else(|| panic!("{rid} never left Stasis"));
                                assert!(*left + linger <= now, "{rid} ended before its linger");
                            }
                        }
                    }
                    _ => {}
                }
                ended_now.push((id, reason));
            }
            Output::Response { id, result, .. } => {
                let n = id.as_u64();
                let kind = model
                    .pending
                    .remove(&n)
                    .unwrap_or_else(|| panic!("response to {id} which is not pending"));
                assert!(model.answered.insert(n), "second response to {id}");
                match result {
                    Ok(raw) => kind.parse(raw.status, &raw.body, &raw),
                    Err(RequestError::Timeout) => {}
                    Err(RequestError::Disconnected { reason }) => assert!(!reason.is_empty()),
                    Err(RequestError::Closed) => {
                        assert_eq!(session.state(), ConnectionState::Stopped)
                    }
                    Err(e) => panic!("unexpected request error {e}"),
                }
            }
            Output::Connection(ev) => match ev {
                ConnectionEvent::Connected { .. } => {
                    assert!(model.connecting, "connected without a Connect");
                    model.connecting = false;
                }
                ConnectionEvent::Reconnecting { attempt, delay, .. } => {
                    let (low, high) = c.reconnect.delay_bounds(attempt);
                    assert!(
                        low <= delay && delay <= high,
                        "delay {delay:?} outside {low:?}..={high:?}"
                    );
                    model.connecting = false;
                }
                ConnectionEvent::MaxRetries { attempts, .. } => {
                    assert!(c.reconnect.max_attempts.is_some_and(|m| attempts >= m));
                    assert_eq!(session.state(), ConnectionState::GaveUp);
                    model.connecting = false;
                }
                ConnectionEvent::Closed => {
                    assert_eq!(session.state(), ConnectionState::Stopped);
                    model.connecting = false;
                }
                other => panic!("unknown connection event {other:?}"),
            },
            other => panic!("unknown output {other:?}"),
        }
    }
    assert!(
        droppable <= c.limits.max_queued_outputs.max(1),
        "{droppable} events/warnings queued over the limit"
    );
    assert_eq!(
        model.ended_at_subscribe, None,
        "a subscription to an ended resource did not end at once"
    );
    assert!(
        model.not_created.is_empty(),
        "not_created left {:?} live",
        model.not_created
    );
    assert!(
        model.never_started.is_empty(),
        "queued_on left {:?} live",
        model.never_started
    );
    assert!(
        model.ended_resources.is_empty(),
        "end_resources left {:?} live",
        model.ended_resources
    );
    // `has_seen`: only a resource some live subscription follows, and always one an event
    // was routed for since (its followers still live).
    let follows = |kind: ResourceKind, rid: &str| {
        model
            .subs
            .values()
            .any(|f| f.resource_ref() == Some((kind, rid)))
    };
    for (kind, rid) in &model.followed {
        if session.has_seen(*kind, rid) {
            assert!(follows(*kind, rid), "{kind:?} {rid} seen but not followed");
            assert!(
                model.may_be_seen.contains(&(*kind, rid.clone())),
                "{kind:?} {rid} seen but no event of it came while it was followed"
            );
        }
    }
    for (kind, rid) in &routed {
        if *kind != ResourceKind::Endpoint && follows(*kind, rid) {
            assert!(
                session.has_seen(*kind, rid),
                "an event of {kind:?} {rid} was routed but it is not seen"
            );
        }
    }
    let subs = &model.subs;
    model.may_be_seen.retain(|(kind, rid)| {
        subs.values()
            .any(|f| f.resource_ref() == Some((*kind, rid.as_str())))
    });
    let mut ids: Vec<_> = ended_now.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    assert_eq!(ids.len(), ended_now.len(), "a subscription ended twice");
    // A bridge whose linger is over counts as ended, and none of its subscriptions is left.
    // (More bridges due at once than `max_ended_ids` ends remembered: the oldest forgotten.)
    let remembered = model.bridges_due.len() <= model.max_queued_targets;
    for b in std::mem::take(&mut model.bridges_due) {
        assert!(
            !remembered || session.has_ended(ResourceKind::Bridge, &b),
            "bridge {b} lingered but does not count as ended"
        );
        let left: Vec<_> = model
            .subs
            .iter()
            .filter(|(_, f)| f.resource_ref() == Some((ResourceKind::Bridge, b.as_str())))
            .map(|(id, _)| *id)
            .collect();
        assert!(left.is_empty(), "{left:?} outlived bridge {b}'s linger");
    }
}

/// After `event` was routed at `now`: a lingering bridge's `BridgeDestroyed` (which ended its
/// subscriptions) or `BridgeCreated` stops its linger, any other event of it restarts it.
fn track_bridges(model: &mut Model, event: &Event, now: Instant, c: &SessionConfig) {
    let Some(linger) = c.stasis_end_linger else {
        return;
    };
    match event {
        Event::BridgeDestroyed(e) => {
            model.bridges.remove(e.bridge.id.as_str());
        }
        Event::BridgeCreated(e) => {
            model.bridges.remove(e.bridge.id.as_str());
        }
        other => {
            for r in other.resources().iter() {
                if r.kind == ResourceKind::Bridge {
                    if let Some(at) = model.bridges.get_mut(r.id) {
                        *at = now + linger;
                    }
                }
            }
        }
    }
}

fn check_state(session: &Session, model: &Model, c: &SessionConfig) {
    assert_eq!(
        session.live_subscriptions(),
        model.subs.len(),
        "live subscriptions"
    );
    for id in model.subs.keys() {
        assert!(session.is_subscribed(*id), "{id} should be live");
    }
    for id in &model.gone {
        assert!(!session.is_subscribed(*id), "{id} should be gone");
    }
    assert_eq!(
        session.pending_requests(),
        model.pending.len(),
        "pending requests"
    );
    assert!(session.pending_requests() <= c.limits.max_pending_requests);
    let stats = session.stats();
    assert_eq!(
        stats.dropped_outputs, model.dropped,
        "every drop is announced"
    );
    assert_eq!(
        model.events + model.warnings + model.dropped,
        stats.events + stats.oversized_frames + stats.decode_errors + stats.schema_errors,
        "events and warnings are delivered or counted as dropped"
    );
    if !session.is_connected() {
        assert_eq!(
            session.pending_requests(),
            0,
            "pending requests without a socket"
        );
    }
    // A lingering bridge does not count as ended yet, and the session wakes up for it.
    for b in model.bridges.keys() {
        assert!(
            !session.has_ended(ResourceKind::Bridge, b),
            "bridge {b} counts as ended while it lingers"
        );
    }
    if let Some(next) = model.bridges.values().min() {
        assert!(
            session.poll_timeout().is_some_and(|t| t <= *next),
            "no timer for the linger of a destroyed bridge"
        );
    }
}
