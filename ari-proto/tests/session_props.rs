//! Property tests of the session: routing against a naive model over random resource
//! lifecycles and subscriptions, backoff bounds, and arbitrary input sequences.

#[path = "session_util/mod.rs"]
mod util;

use std::time::Duration;

use ari_proto::events::{Event, ResourceKind};
use ari_proto::session::{
    ConnectionEvent, ConnectionState, EndReason, Filter, Keepalive, Limits, Output,
    ReconnectPolicy, Session, SessionConfig, SubscriptionId, Transmit,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use util::*;

/// A connected session of app `app` without keepalive whose channels (and destroyed bridges)
/// linger for `linger`.
fn lingering(linger: Duration, t0: std::time::Instant) -> ari_proto::session::Session {
    connected(
        SessionConfig::new(["app"])
            .keepalive(None)
            .stasis_end_linger(Some(linger)),
        t0,
    )
}

// ---- a small world of resources -----------------------------------------------------------

const CHANNELS: usize = 4;
const BRIDGES: usize = 2;
const PLAYBACKS: usize = 2;
const RECORDINGS: usize = 2;

fn cid(i: usize) -> String {
    format!("chan-{i}")
}
fn bid(i: usize) -> String {
    format!("bridge-{i}")
}
fn pid(i: usize) -> String {
    format!("pb-{i}")
}
fn rid(i: usize) -> String {
    format!("rec/{i}")
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Channel(usize),
    Bridge(usize),
}

impl Target {
    fn uri(self) -> String {
        match self {
            Target::Channel(c) => format!("channel:{}", cid(c)),
            Target::Bridge(b) => format!("bridge:{}", bid(b)),
        }
    }
    fn resource(self) -> (ResourceKind, String) {
        match self {
            Target::Channel(c) => (ResourceKind::Channel, cid(c)),
            Target::Bridge(b) => (ResourceKind::Bridge, bid(b)),
        }
    }
}

/// An event of the world; the test knows independently which resources it concerns.
#[derive(Debug, Clone)]
enum Ev {
    StasisStart(usize),
    StasisEnd(usize),
    Dtmf(usize),
    Entered(usize, usize),
    Left(usize, usize),
    Dial(Option<usize>, usize),
    Merged(usize, usize),
    PlaybackStarted(usize, Target),
    PlaybackFinished(usize, Target),
    RecordingStarted(usize, Target),
    RecordingFinished(usize, Target),
    RecordingFailed(usize, Target),
    DeviceState,
    EndpointState,
    ChannelDestroyed(usize),
    BridgeDestroyed(usize),
    BridgeCreated(usize),
    UserEvent,
}

struct Templates {
    channel: Value,
    bridge: Value,
    playback: Value,
    recording: Value,
}

fn templates() -> Templates {
    let mut channel = None;
    let mut bridge = None;
    let mut playback = None;
    let mut recording = None;
    for r in recorded_events() {
        let v: Value = serde_json::from_str(&r.frame).expect("json");
        if channel.is_none() && v["channel"].is_object() {
            channel = Some(v["channel"].clone());
        }
        if bridge.is_none() && v["bridge"].is_object() {
            bridge = Some(v["bridge"].clone());
        }
        if playback.is_none() && v["playback"].is_object() {
            playback = Some(v["playback"].clone());
        }
        if recording.is_none() && v["recording"].is_object() {
            recording = Some(v["recording"].clone());
        }
    }
    Templates {
        channel: channel.expect("channel"),
        bridge: bridge.expect("bridge"),
        playback: playback.expect("playback"),
        recording: recording.expect("recording"),
    }
}

impl Ev {
    fn type_name(&self) -> &'static str {
        match self {
            Ev::StasisStart(_) => "StasisStart",
            Ev::StasisEnd(_) => "StasisEnd",
            Ev::Dtmf(_) => "ChannelDtmfReceived",
            Ev::Entered(..) => "ChannelEnteredBridge",
            Ev::Left(..) => "ChannelLeftBridge",
            Ev::Dial(..) => "Dial",
            Ev::Merged(..) => "BridgeMerged",
            Ev::PlaybackStarted(..) => "PlaybackStarted",
            Ev::PlaybackFinished(..) => "PlaybackFinished",
            Ev::RecordingStarted(..) => "RecordingStarted",
            Ev::RecordingFinished(..) => "RecordingFinished",
            Ev::RecordingFailed(..) => "RecordingFailed",
            Ev::DeviceState => "DeviceStateChanged",
            Ev::EndpointState => "EndpointStateChange",
            Ev::ChannelDestroyed(_) => "ChannelDestroyed",
            Ev::BridgeDestroyed(_) => "BridgeDestroyed",
            Ev::BridgeCreated(_) => "BridgeCreated",
            Ev::UserEvent => "ChannelUserevent",
        }
    }

    /// The resources, as the test (not the library) sees them.
    fn resources(&self) -> Vec<(ResourceKind, String)> {
        use ResourceKind::*;
        match self {
            Ev::StasisStart(c) | Ev::StasisEnd(c) | Ev::Dtmf(c) | Ev::ChannelDestroyed(c) => {
                vec![(Channel, cid(*c))]
            }
            Ev::Entered(b, c) | Ev::Left(b, c) => vec![(Bridge, bid(*b)), (Channel, cid(*c))],
            Ev::Dial(caller, peer) => {
                let mut v: Vec<_> = caller.iter().map(|c| (Channel, cid(*c))).collect();
                v.push((Channel, cid(*peer)));
                v
            }
            Ev::Merged(a, b) => vec![(Bridge, bid(*a)), (Bridge, bid(*b))],
            Ev::PlaybackStarted(p, t) | Ev::PlaybackFinished(p, t) => {
                vec![(Playback, pid(*p)), t.resource()]
            }
            Ev::RecordingStarted(r, t)
            | Ev::RecordingFinished(r, t)
            | Ev::RecordingFailed(r, t) => {
                vec![(Recording, rid(*r)), t.resource()]
            }
            Ev::DeviceState => vec![(DeviceState, "Stasis:dev".into())],
            Ev::EndpointState => vec![(Endpoint, "PJSIP/alice".into())],
            Ev::BridgeDestroyed(b) | Ev::BridgeCreated(b) => vec![(Bridge, bid(*b))],
            Ev::UserEvent => vec![],
        }
    }

    fn ends(&self) -> Option<(ResourceKind, String)> {
        match self {
            Ev::ChannelDestroyed(c) => Some((ResourceKind::Channel, cid(*c))),
            Ev::BridgeDestroyed(b) => Some((ResourceKind::Bridge, bid(*b))),
            Ev::PlaybackFinished(p, _) => Some((ResourceKind::Playback, pid(*p))),
            Ev::RecordingFinished(r, _) | Ev::RecordingFailed(r, _) => {
                Some((ResourceKind::Recording, rid(*r)))
            }
            _ => None,
        }
    }

    /// The resource this event creates (again, when its id was used before).
    fn creates(&self) -> Option<(ResourceKind, String)> {
        match self {
            Ev::StasisStart(c) => Some((ResourceKind::Channel, cid(*c))),
            Ev::BridgeCreated(b) => Some((ResourceKind::Bridge, bid(*b))),
            Ev::PlaybackStarted(p, _) => Some((ResourceKind::Playback, pid(*p))),
            Ev::RecordingStarted(r, _) => Some((ResourceKind::Recording, rid(*r))),
            _ => None,
        }
    }

    fn frame(&self, t: &Templates) -> String {
        let chan = |i: usize| {
            let mut c = t.channel.clone();
            c["id"] = json!(cid(i));
            c
        };
        let bridge = |i: usize| {
            let mut b = t.bridge.clone();
            b["id"] = json!(bid(i));
            b
        };
        let playback = |i: usize, target: Target| {
            let mut p = t.playback.clone();
            p["id"] = json!(pid(i));
            p["target_uri"] = json!(target.uri());
            p
        };
        let recording = |i: usize, target: Target| {
            let mut r = t.recording.clone();
            r["name"] = json!(rid(i));
            r["target_uri"] = json!(target.uri());
            r
        };
        let mut v = json!({
            "type": self.type_name(),
            "timestamp": "2026-11-26T11:14:38.299+0000",
            "application": "app",
        });
        let o = v.as_object_mut().expect("object");
        match self {
            Ev::StasisStart(c) => {
                o.insert("channel".into(), chan(*c));
                o.insert("args".into(), json!([]));
            }
            Ev::StasisEnd(c) => {
                o.insert("channel".into(), chan(*c));
            }
            Ev::Dtmf(c) => {
                o.insert("channel".into(), chan(*c));
                o.insert("digit".into(), json!("5"));
                o.insert("duration_ms".into(), json!(100));
            }
            Ev::Entered(b, c) | Ev::Left(b, c) => {
                o.insert("bridge".into(), bridge(*b));
                o.insert("channel".into(), chan(*c));
            }
            Ev::Dial(caller, peer) => {
                if let Some(c) = caller {
                    o.insert("caller".into(), chan(*c));
                }
                o.insert("peer".into(), chan(*peer));
                o.insert("dialstatus".into(), json!("ANSWER"));
            }
            Ev::Merged(a, b) => {
                o.insert("bridge".into(), bridge(*a));
                o.insert("bridge_from".into(), bridge(*b));
            }
            Ev::PlaybackStarted(p, tg) | Ev::PlaybackFinished(p, tg) => {
                o.insert("playback".into(), playback(*p, *tg));
            }
            Ev::RecordingStarted(r, tg)
            | Ev::RecordingFinished(r, tg)
            | Ev::RecordingFailed(r, tg) => {
                o.insert("recording".into(), recording(*r, *tg));
            }
            Ev::DeviceState => {
                o.insert(
                    "device_state".into(),
                    json!({"name": "Stasis:dev", "state": "INUSE"}),
                );
            }
            Ev::EndpointState => {
                o.insert(
                    "endpoint".into(),
                    json!({"technology": "PJSIP", "resource": "alice", "state": "online", "channel_ids": []}),
                );
            }
            Ev::ChannelDestroyed(c) => {
                o.insert("channel".into(), chan(*c));
                o.insert("cause".into(), json!(16));
                o.insert("cause_txt".into(), json!("Normal Clearing"));
            }
            Ev::BridgeDestroyed(b) | Ev::BridgeCreated(b) => {
                o.insert("bridge".into(), bridge(*b));
            }
            Ev::UserEvent => {
                o.insert("eventname".into(), json!("custom"));
                o.insert("userevent".into(), json!({}));
            }
        }
        v.to_string()
    }
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0..CHANNELS).prop_map(Target::Channel),
        (0..BRIDGES).prop_map(Target::Bridge)
    ]
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        (0..CHANNELS).prop_map(Ev::StasisStart),
        (0..CHANNELS).prop_map(Ev::StasisEnd),
        (0..CHANNELS).prop_map(Ev::Dtmf),
        (0..BRIDGES, 0..CHANNELS).prop_map(|(b, c)| Ev::Entered(b, c)),
        (0..BRIDGES, 0..CHANNELS).prop_map(|(b, c)| Ev::Left(b, c)),
        (proptest::option::of(0..CHANNELS), 0..CHANNELS).prop_map(|(a, b)| Ev::Dial(a, b)),
        (0..BRIDGES, 0..BRIDGES).prop_map(|(a, b)| Ev::Merged(a, b)),
        (0..PLAYBACKS, target()).prop_map(|(p, t)| Ev::PlaybackStarted(p, t)),
        (0..PLAYBACKS, target()).prop_map(|(p, t)| Ev::PlaybackFinished(p, t)),
        (0..RECORDINGS, target()).prop_map(|(r, t)| Ev::RecordingStarted(r, t)),
        (0..RECORDINGS, target()).prop_map(|(r, t)| Ev::RecordingFinished(r, t)),
        (0..RECORDINGS, target()).prop_map(|(r, t)| Ev::RecordingFailed(r, t)),
        Just(Ev::DeviceState),
        Just(Ev::EndpointState),
        (0..CHANNELS).prop_map(Ev::ChannelDestroyed),
        (0..BRIDGES).prop_map(Ev::BridgeDestroyed),
        (0..BRIDGES).prop_map(Ev::BridgeCreated),
        Just(Ev::UserEvent),
    ]
}

/// What a subscription follows, as the model sees it.
#[derive(Debug, Clone)]
struct Spec {
    resource: Option<(ResourceKind, String)>,
    ty: Option<&'static str>,
    once: bool,
}

impl Spec {
    fn filter(&self) -> Filter {
        let f = match &self.resource {
            None => Filter::all(),
            Some((k, id)) => Filter::resource(*k, id.clone()),
        };
        let f = match self.ty {
            Some(t) => f.with_type(t),
            None => f,
        };
        if self.once {
            f.once()
        } else {
            f
        }
    }

    fn matches(&self, ev: &Ev) -> bool {
        self.ty.is_none_or(|t| t == ev.type_name())
            && self
                .resource
                .as_ref()
                .is_none_or(|r| ev.resources().contains(r))
    }
}

fn resource() -> impl Strategy<Value = (ResourceKind, String)> {
    prop_oneof![
        (0..CHANNELS).prop_map(|i| (ResourceKind::Channel, cid(i))),
        (0..BRIDGES).prop_map(|i| (ResourceKind::Bridge, bid(i))),
        (0..PLAYBACKS).prop_map(|i| (ResourceKind::Playback, pid(i))),
        (0..RECORDINGS).prop_map(|i| (ResourceKind::Recording, rid(i))),
        Just((ResourceKind::DeviceState, "Stasis:dev".to_string())),
        Just((ResourceKind::Endpoint, "PJSIP/alice".to_string())),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let ty = proptest::option::weighted(
        0.3,
        prop_oneof![
            Just("StasisStart"),
            Just("ChannelDtmfReceived"),
            Just("PlaybackStarted"),
            Just("ChannelDestroyed"),
            Just("ChannelEnteredBridge"),
        ],
    );
    (
        proptest::option::weighted(0.8, resource()),
        ty,
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(resource, ty, once)| Spec { resource, ty, once })
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe(Spec),
    Unsubscribe(usize),
    Event(Ev),
    /// Time passes by this many milliseconds (lingers may end), then `handle_timeout`.
    Advance(u64),
    /// The application's `DELETE /bridges/{id}` succeeded: `Session::bridge_destroyed`.
    DestroyBridge(usize),
    /// The application creates a bridge with this id again: `Session::forget_ended`.
    ForgetBridge(usize),
    /// Asterisk refused a request that would have created this resource under the
    /// application's id (`RequestParts::created_resource`): `Session::not_created`.
    NotCreated(ResourceKind, String),
    /// `end_resources(.., ResourceEnded)`: gone without an event (a cluster node's Asterisk
    /// restarted).
    EndResources(Vec<(ResourceKind, String)>),
}

/// A resource the application may create under an id of its own (a bridge too: the session
/// takes any kind).
fn creatable() -> impl Strategy<Value = (ResourceKind, String)> {
    prop_oneof![
        (0..CHANNELS).prop_map(|i| (ResourceKind::Channel, cid(i))),
        (0..BRIDGES).prop_map(|i| (ResourceKind::Bridge, bid(i))),
        (0..PLAYBACKS).prop_map(|i| (ResourceKind::Playback, pid(i))),
        (0..RECORDINGS).prop_map(|i| (ResourceKind::Recording, rid(i))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => spec().prop_map(Op::Subscribe),
        1 => any::<usize>().prop_map(Op::Unsubscribe),
        6 => event().prop_map(Op::Event),
        1 => (0u64..1500).prop_map(Op::Advance),
        1 => (0..BRIDGES).prop_map(Op::DestroyBridge),
        1 => (0..BRIDGES).prop_map(Op::ForgetBridge),
        1 => creatable().prop_map(|(k, id)| Op::NotCreated(k, id)),
        1 => proptest::collection::vec(creatable(), 0..4).prop_map(Op::EndResources),
    ]
}

/// The linger of [`routing_matches_naive_model`] (for channels that left Stasis and bridges
/// the application destroyed).
const ROUTING_LINGER: Duration = Duration::from_millis(1000);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Each subscription receives exactly the events that match it, in order, at most once
    /// each; one-shot and instance subscriptions end exactly when the model says (one made
    /// after its resource ended, at once); once every
    /// resource has ended, the live count is back to the baseline (subscriptions that follow
    /// no ending resource).
    ///
    /// With time and the linger: a channel that left Stasis and a bridge the application
    /// destroyed (`bridge_destroyed`) linger, each event of them restarting it (a
    /// `StasisStart`/`ChannelDestroyed`, a `BridgeDestroyed`/`BridgeCreated` or
    /// `forget_ended` stopping it); when it is over the resource counts as ended and its
    /// subscriptions end, without an event. `has_ended`, `forget_ended`'s answer,
    /// `lingering_channels` and `poll_timeout` agree with the model after every step.
    ///
    /// A resource Asterisk refused to create under the application's id (`not_created`): its
    /// subscriptions end at once with `NotCreated` and no event, it does not count as ended
    /// (a subscription to it afterwards lives), and its lingers go on as after an unsubscribe.
    ///
    /// Resources gone without an event (`end_resources`, a cluster node's Asterisk
    /// restarted): their subscriptions end at once with the reason given, they count as
    /// ended, and their lingers stop; the other resources' subscriptions are untouched.
    #[test]
    fn routing_matches_naive_model(ops in proptest::collection::vec(op(), 0..120)) {
        use std::collections::BTreeMap;
        use std::time::Instant;
        let t = templates();
        let t0 = epoch();
        let config = SessionConfig::new(["app"])
            .keepalive(None)
            .stasis_end_linger(Some(ROUTING_LINGER));
        let mut s = connected(config, t0);
        let mut now = t0;
        let mut model: Vec<(SubscriptionId, Spec)> = Vec::new();
        let mut created: Vec<SubscriptionId> = Vec::new();
        let mut received: std::collections::HashMap<SubscriptionId, Vec<usize>> = Default::default();
        let mut expected_received: std::collections::HashMap<SubscriptionId, Vec<usize>> = Default::default();
        // Resources that ended and were not created again (the session remembers far more
        // than this test ends).
        let mut gone: std::collections::HashSet<(ResourceKind, String)> = Default::default();
        // Lingers, with their deadlines: channels that left Stasis and are followed (their
        // subscriptions end with it), or not followed (only recorded as ended then); bridges
        // the application destroyed.
        let mut followed: BTreeMap<String, Instant> = BTreeMap::new();
        let mut unfollowed: BTreeMap<String, Instant> = BTreeMap::new();
        let mut bridges: BTreeMap<String, Instant> = BTreeMap::new();
        let follows = |model: &[(SubscriptionId, Spec)], c: &str| {
            model.iter().any(|(_, sp)| {
                sp.resource.as_ref().is_some_and(|(k, id)| *k == ResourceKind::Channel && id == c)
            })
        };

        // Finally every resource that can end, ends.
        let mut all_ops = ops.clone();
        all_ops.extend((0..PLAYBACKS).map(|p| Op::Event(Ev::PlaybackFinished(p, Target::Channel(0)))));
        all_ops.extend((0..RECORDINGS).map(|r| Op::Event(Ev::RecordingFinished(r, Target::Bridge(0)))));
        all_ops.extend((0..CHANNELS).map(|c| Op::Event(Ev::ChannelDestroyed(c))));
        all_ops.extend((0..BRIDGES).map(|b| Op::Event(Ev::BridgeDestroyed(b))));

        for (n, op) in all_ops.iter().enumerate() {
            match op {
                Op::Subscribe(spec) => {
                    let id = s.subscribe(spec.filter());
                    created.push(id);
                    // A subscription to a resource that ended (and was not created again)
                    // ends at once.
                    let outs = drain(&mut s);
                    if spec.resource.as_ref().is_some_and(|r| gone.contains(r)) {
                        prop_assert!(matches!(
                            outs.as_slice(),
                            [Output::SubscriptionEnded { id: e, reason: EndReason::ResourceEnded, .. }] if *e == id
                        ), "{:?} after its end: {:?}", spec, outs);
                    } else {
                        prop_assert!(outs.is_empty(), "{:?}", outs);
                        model.push((id, spec.clone()));
                        // A channel taken up again during its linger: it ends with it.
                        if let Some((ResourceKind::Channel, c)) = &spec.resource {
                            if let Some(at) = unfollowed.remove(c) {
                                followed.insert(c.clone(), at);
                            }
                        }
                    }
                }
                Op::Unsubscribe(i) => {
                    if created.is_empty() { continue; }
                    let id = created[i % created.len()];
                    let removed = model.iter().find(|(m, _)| *m == id).map(|(_, sp)| sp.clone());
                    prop_assert_eq!(s.unsubscribe(id), removed.is_some());
                    model.retain(|(m, _)| *m != id);
                    // A lingering channel's last subscription gone: it keeps its deadline.
                    if let Some((ResourceKind::Channel, c)) = removed.and_then(|sp| sp.resource) {
                        if !follows(&model, &c) {
                            if let Some(at) = followed.remove(&c) {
                                unfollowed.insert(c, at);
                            }
                        }
                    }
                    prop_assert!(drain(&mut s).is_empty());
                }
                Op::Event(ev) => {
                    if let Some(r) = ev.ends() {
                        gone.insert(r);
                    } else if let Some(r) = ev.creates() {
                        gone.remove(&r);
                    }
                    let frame = ev.frame(&t);
                    let decoded = Event::decode(frame.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(decoded.type_name(), ev.type_name());
                    s.handle_frame(now, frame.as_bytes());
                    let matching: Vec<SubscriptionId> = model.iter().filter(|(_, sp)| sp.matches(ev)).map(|(id, _)| *id).collect();
                    for id in &matching {
                        expected_received.entry(*id).or_default().push(n);
                    }
                    let mut expected_end: Vec<(SubscriptionId, EndReason)> = model.iter()
                        .filter(|(id, sp)| sp.once && matching.contains(id))
                        .map(|(id, _)| (*id, EndReason::Once)).collect();
                    model.retain(|(id, sp)| !(sp.once && matching.contains(id)));
                    if let Some(r) = ev.ends() {
                        model.retain(|(id, sp)| {
                            let ends = sp.resource.as_ref() == Some(&r);
                            if ends { expected_end.push((*id, EndReason::ResourceEnded)); }
                            !ends
                        });
                    }
                    // The lingers after the event.
                    let until = now + ROUTING_LINGER;
                    match ev {
                        Ev::StasisEnd(c) if follows(&model, &cid(*c)) => {
                            unfollowed.remove(&cid(*c));
                            followed.insert(cid(*c), until);
                        }
                        Ev::StasisEnd(c) => {
                            followed.remove(&cid(*c));
                            unfollowed.insert(cid(*c), until);
                        }
                        Ev::StasisStart(c) | Ev::ChannelDestroyed(c) => {
                            followed.remove(&cid(*c));
                            unfollowed.remove(&cid(*c));
                        }
                        _ => {
                            for (_, c) in ev.resources().into_iter().filter(|(k, _)| *k == ResourceKind::Channel) {
                                if follows(&model, &c) {
                                    if let Some(at) = followed.get_mut(&c) {
                                        *at = until;
                                    }
                                } else if followed.remove(&c).is_some() {
                                    // Its one-shot subscriptions ended with this event.
                                    unfollowed.insert(c, until);
                                }
                            }
                        }
                    }
                    match ev {
                        Ev::BridgeDestroyed(b) | Ev::BridgeCreated(b) => {
                            bridges.remove(&bid(*b));
                        }
                        _ => {
                            for (_, b) in ev.resources().into_iter().filter(|(k, _)| *k == ResourceKind::Bridge) {
                                if let Some(at) = bridges.get_mut(&b) {
                                    *at = until;
                                }
                            }
                        }
                    }
                    let mut ended = Vec::new();
                    let mut events = 0;
                    for o in drain(&mut s) {
                        match o {
                            Output::Event(d) => {
                                events += 1;
                                for id in d.subscribers.iter() {
                                    received.entry(*id).or_default().push(n);
                                }
                            }
                            Output::SubscriptionEnded { id, reason, .. } => ended.push((id, reason)),
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    prop_assert_eq!(events, 1);
                    prop_assert_eq!(ended, expected_end);
                }
                Op::Advance(ms) => {
                    now += Duration::from_millis(*ms);
                    s.handle_timeout(now);
                    let mut expected_end: Vec<SubscriptionId> = Vec::new();
                    let due = |m: &BTreeMap<String, Instant>| -> Vec<String> {
                        m.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect()
                    };
                    for c in due(&unfollowed) {
                        unfollowed.remove(&c);
                        gone.insert((ResourceKind::Channel, c));
                    }
                    for (kind, lingering) in [(ResourceKind::Channel, &mut followed), (ResourceKind::Bridge, &mut bridges)] {
                        for r in due(lingering) {
                            lingering.remove(&r);
                            let r = (kind, r);
                            model.retain(|(id, sp)| {
                                let ends = sp.resource.as_ref() == Some(&r);
                                if ends { expected_end.push(*id); }
                                !ends
                            });
                            gone.insert(r);
                        }
                    }
                    let mut ended = Vec::new();
                    for o in drain(&mut s) {
                        match o {
                            Output::SubscriptionEnded { id, reason: EndReason::ResourceEnded, .. } => ended.push(id),
                            other => prop_assert!(false, "unexpected {:?} at the end of a linger", other),
                        }
                    }
                    ended.sort_unstable();
                    expected_end.sort_unstable();
                    prop_assert_eq!(ended, expected_end);
                }
                Op::DestroyBridge(b) => {
                    // Lingers unless it already does (its deadline stays) or counts as ended.
                    let r = (ResourceKind::Bridge, bid(*b));
                    s.bridge_destroyed(now, &r.1);
                    if !gone.contains(&r) && !bridges.contains_key(&r.1) {
                        bridges.insert(r.1, now + ROUTING_LINGER);
                    }
                    prop_assert!(drain(&mut s).is_empty());
                }
                Op::ForgetBridge(b) => {
                    // Forgets its end, or stops its linger (its subscriptions stay).
                    let r = (ResourceKind::Bridge, bid(*b));
                    let ended = gone.remove(&r);
                    let lingered = bridges.remove(&r.1).is_some();
                    prop_assert_eq!(s.forget_ended(r.0, &r.1), ended || lingered, "forget_ended({:?})", r);
                    prop_assert!(drain(&mut s).is_empty());
                }
                Op::NotCreated(kind, id) => {
                    // Its subscriptions end now, in subscription order, with NotCreated; it is
                    // not recorded as ended (nor forgotten if it was), and a bridge's linger
                    // stays. A lingering channel left with no subscription keeps its deadline,
                    // as when its last one is removed.
                    let r = (*kind, id.clone());
                    let mut expected_end: Vec<SubscriptionId> = Vec::new();
                    model.retain(|(sid, sp)| {
                        let ends = sp.resource.as_ref() == Some(&r);
                        if ends { expected_end.push(*sid); }
                        !ends
                    });
                    if r.0 == ResourceKind::Channel {
                        if let Some(at) = followed.remove(&r.1) {
                            unfollowed.insert(r.1.clone(), at);
                        }
                    }
                    let counted = s.stats().subscriptions_ended;
                    prop_assert_eq!(s.not_created(r.0, &r.1), expected_end.len(), "not_created({:?})", r);
                    let mut ended = Vec::new();
                    for o in drain(&mut s) {
                        match o {
                            Output::SubscriptionEnded { id, reason: EndReason::NotCreated, .. } => ended.push(id),
                            other => prop_assert!(false, "unexpected {:?} after not_created", other),
                        }
                    }
                    let n = expected_end.len() as u64;
                    prop_assert_eq!(ended, expected_end);
                    prop_assert_eq!(s.stats().subscriptions_ended, counted + n);
                }
                Op::EndResources(rs) => {
                    // Their subscriptions end now (resource by resource, each in
                    // subscription order) with the reason given; each counts as ended and
                    // stops lingering.
                    let mut expected_end: Vec<SubscriptionId> = Vec::new();
                    for r in rs {
                        model.retain(|(sid, sp)| {
                            let ends = sp.resource.as_ref() == Some(r);
                            if ends { expected_end.push(*sid); }
                            !ends
                        });
                        match r.0 {
                            ResourceKind::Channel => {
                                followed.remove(&r.1);
                                unfollowed.remove(&r.1);
                            }
                            ResourceKind::Bridge => {
                                bridges.remove(&r.1);
                            }
                            _ => {}
                        }
                        gone.insert(r.clone());
                    }
                    let counted = s.stats().subscriptions_ended;
                    let given = rs.iter().map(|(k, id)| (*k, id.as_str()));
                    prop_assert_eq!(s.end_resources(given, EndReason::ResourceEnded), expected_end.len());
                    let mut ended = Vec::new();
                    for o in drain(&mut s) {
                        match o {
                            Output::SubscriptionEnded { id, reason: EndReason::ResourceEnded, .. } => ended.push(id),
                            other => prop_assert!(false, "unexpected {:?} after end_resources", other),
                        }
                    }
                    let n = expected_end.len() as u64;
                    prop_assert_eq!(ended, expected_end);
                    prop_assert_eq!(s.stats().subscriptions_ended, counted + n);
                }
            }
            prop_assert_eq!(s.live_subscriptions(), model.len());
            prop_assert_eq!(s.lingering_channels(), followed.len() + unfollowed.len());
            prop_assert_eq!(
                s.poll_timeout(),
                followed.values().chain(unfollowed.values()).chain(bridges.values()).min().copied(),
                "after {:?}", op
            );
            let world = (0..CHANNELS).map(|i| (ResourceKind::Channel, cid(i)))
                .chain((0..BRIDGES).map(|i| (ResourceKind::Bridge, bid(i))))
                .chain((0..PLAYBACKS).map(|i| (ResourceKind::Playback, pid(i))))
                .chain((0..RECORDINGS).map(|i| (ResourceKind::Recording, rid(i))));
            for r in world {
                prop_assert_eq!(s.has_ended(r.0, &r.1), gone.contains(&r), "has_ended({:?}) after {:?}", r, op);
            }
        }
        prop_assert_eq!(&received, &expected_received);
        // Baseline: what is left follows no resource that ends.
        for (_, sp) in &model {
            prop_assert!(matches!(
                sp.resource.as_ref().map(|r| r.0),
                None | Some(ResourceKind::DeviceState) | Some(ResourceKind::Endpoint)
            ), "{:?} outlived its resource", sp);
        }
        prop_assert_eq!(s.live_subscriptions_for(ResourceKind::Channel), 0);
        prop_assert_eq!(s.live_subscriptions_for(ResourceKind::Bridge), 0);
        prop_assert_eq!(s.live_subscriptions_for(ResourceKind::Playback), 0);
        prop_assert_eq!(s.live_subscriptions_for(ResourceKind::Recording), 0);
        // Every resource ended, so nothing lingers any more.
        prop_assert_eq!(s.poll_timeout(), None);
    }

    /// Backoff: every delay lies within the policy's jitter bounds, never exceeds the cap,
    /// the timer fires exactly after it, attempts count up by one, and the session gives up
    /// after exactly `max_attempts`.
    #[test]
    fn backoff_respects_cap_jitter_and_max_attempts(
        initial_ms in 0u64..5_000,
        multiplier in 0.5f64..4.0,
        max_ms in 0u64..60_000,
        jitter in 0.0f64..1.0,
        max_attempts in proptest::option::of(0u32..25),
        seed in any::<u64>(),
    ) {
        let policy = ReconnectPolicy::default()
            .initial_delay(Duration::from_millis(initial_ms))
            .multiplier(multiplier)
            .max_delay(Duration::from_millis(max_ms))
            .jitter(jitter)
            .max_attempts(max_attempts);
        let cap = policy.max_delay;
        let config = SessionConfig::new(["app"]).reconnect(policy.clone()).keepalive(None).rng_seed(seed);
        let t0 = epoch();
        let mut s = Session::new(endpoint("http://h:8088"), config);
        let mut now = t0;
        s.start(now);
        let mut attempts = 0u32;
        let mut gave_up = None;
        let mut last_high = Duration::ZERO;
        for _ in 0..40 {
            prop_assert!(matches!(s.poll_transmit(), Some(Transmit::Connect(_))));
            s.handle_connect_failed(now, "refused");
            match s.poll_output() {
                Some(Output::Connection(ConnectionEvent::Reconnecting { attempt, delay, .. })) => {
                    attempts += 1;
                    prop_assert_eq!(attempt, attempts);
                    prop_assert!(delay <= cap);
                    let (low, high) = policy.delay_bounds(attempt);
                    prop_assert!(low <= delay && delay <= high, "{:?} not in [{:?}, {:?}]", delay, low, high);
                    prop_assert!(high >= last_high, "upper bound never shrinks");
                    last_high = high;
                    prop_assert_eq!(s.poll_timeout(), Some(now + delay));
                    now += delay;
                    s.handle_timeout(now);
                }
                Some(Output::Connection(ConnectionEvent::MaxRetries { attempts: a, .. })) => {
                    gave_up = Some(a);
                    break;
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        match max_attempts {
            Some(m) if m < 40 => {
                prop_assert_eq!(gave_up, Some(m));
                prop_assert_eq!(attempts, m);
                prop_assert_eq!(s.state(), ConnectionState::GaveUp);
                prop_assert_eq!(s.poll_timeout(), None);
            }
            _ => prop_assert_eq!(gave_up, None),
        }
    }

    /// The StasisEnd linger against a model: a followed channel that leaves Stasis loses its
    /// subscriptions once no event of it came for the linger (each event restarts it, a
    /// `StasisStart` or `ChannelDestroyed` cancels it); a channel nobody follows then (or
    /// whose last subscription goes away meanwhile) keeps its deadline, and is taken up
    /// again by a subscription made before it; either way the channel counts as ended when
    /// the linger is over. `poll_timeout` is exactly the next linger deadline.
    #[test]
    fn stasis_end_linger_matches_model(ops in proptest::collection::vec(linger_op(), 0..150)) {
        const LINGER: Duration = Duration::from_millis(1000);
        let t = templates();
        let t0 = epoch();
        let config = SessionConfig::new(["app"]).keepalive(None).stasis_end_linger(Some(LINGER));
        let mut s = connected(config, t0);
        let mut now = t0;
        let mut subs: Vec<(SubscriptionId, usize)> = Vec::new();
        let mut created: Vec<SubscriptionId> = Vec::new();
        let mut lingering: std::collections::BTreeMap<usize, std::time::Instant> = Default::default();
        let mut unfollowed: std::collections::BTreeMap<usize, std::time::Instant> = Default::default();
        let mut destroyed: std::collections::BTreeSet<usize> = Default::default();
        let follows = |subs: &[(SubscriptionId, usize)], c: usize| subs.iter().any(|(_, x)| *x == c);
        for op in ops {
            let mut expected_end: Vec<SubscriptionId> = Vec::new();
            match op {
                LingerOp::Subscribe(c, typed) => {
                    let f = Filter::channel(cid(c));
                    let f = if typed { f.with_type("ChannelDtmfReceived") } else { f };
                    let id = s.subscribe(f);
                    created.push(id);
                    if destroyed.contains(&c) {
                        // Subscribed after the channel's end: ends at once.
                        expected_end.push(id);
                    } else {
                        subs.push((id, c));
                        if let Some(at) = unfollowed.remove(&c) {
                            lingering.insert(c, at);
                        }
                    }
                }
                LingerOp::Unsubscribe(i) => {
                    if created.is_empty() { continue; }
                    let id = created[i % created.len()];
                    let gone = subs.iter().find(|(m, _)| *m == id).map(|(_, c)| *c);
                    prop_assert_eq!(s.unsubscribe(id), gone.is_some());
                    subs.retain(|(m, _)| *m != id);
                    if let Some(c) = gone {
                        if !follows(&subs, c) {
                            if let Some(at) = lingering.remove(&c) {
                                unfollowed.insert(c, at);
                            }
                        }
                    }
                }
                LingerOp::Event(ev) => {
                    s.handle_frame(now, ev.frame(&t).as_bytes());
                    match ev {
                        Ev::ChannelDestroyed(c) => { destroyed.insert(c); }
                        Ev::StasisStart(c) => { destroyed.remove(&c); }
                        _ => {}
                    }
                    if let Ev::ChannelDestroyed(c) = ev {
                        expected_end.extend(subs.iter().filter(|(_, x)| *x == c).map(|(id, _)| *id));
                        subs.retain(|(_, x)| *x != c);
                    }
                    let channels: Vec<usize> = (0..CHANNELS)
                        .filter(|c| ev.resources().contains(&(ResourceKind::Channel, cid(*c))))
                        .collect();
                    match ev {
                        Ev::StasisEnd(c) if follows(&subs, c) => {
                            unfollowed.remove(&c);
                            lingering.insert(c, now + LINGER);
                        }
                        Ev::StasisEnd(c) => {
                            lingering.remove(&c);
                            unfollowed.insert(c, now + LINGER);
                        }
                        Ev::StasisStart(c) | Ev::ChannelDestroyed(c) => {
                            lingering.remove(&c);
                            unfollowed.remove(&c);
                        }
                        _ => {
                            for c in channels {
                                if !follows(&subs, c) {
                                    if lingering.remove(&c).is_some() {
                                        unfollowed.insert(c, now + LINGER);
                                    }
                                } else if let Some(at) = lingering.get_mut(&c) {
                                    *at = now + LINGER;
                                }
                            }
                        }
                    }
                }
                LingerOp::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    s.handle_timeout(now);
                    let due: Vec<usize> = lingering.iter().filter(|(_, at)| **at <= now).map(|(c, _)| *c).collect();
                    for c in due {
                        lingering.remove(&c);
                        // Over as if destroyed: later subscriptions end at once.
                        destroyed.insert(c);
                        expected_end.extend(subs.iter().filter(|(_, x)| *x == c).map(|(id, _)| *id));
                        subs.retain(|(_, x)| *x != c);
                    }
                    let due: Vec<usize> = unfollowed.iter().filter(|(_, at)| **at <= now).map(|(c, _)| *c).collect();
                    for c in due {
                        unfollowed.remove(&c);
                        destroyed.insert(c);
                    }
                }
            }
            let mut ended: Vec<SubscriptionId> = Vec::new();
            for o in drain(&mut s) {
                if let Output::SubscriptionEnded { id, reason, .. } = o {
                    prop_assert_eq!(reason, EndReason::ResourceEnded);
                    ended.push(id);
                }
            }
            ended.sort_unstable();
            expected_end.sort_unstable();
            prop_assert_eq!(ended, expected_end);
            prop_assert_eq!(s.live_subscriptions(), subs.len());
            prop_assert_eq!(s.lingering_channels(), lingering.len() + unfollowed.len());
            prop_assert_eq!(
                s.poll_timeout(),
                lingering.values().chain(unfollowed.values()).min().copied()
            );
            for c in 0..CHANNELS {
                prop_assert_eq!(s.has_ended(ResourceKind::Channel, &cid(c)), destroyed.contains(&c), "channel {}", c);
            }
        }
    }

    /// Arbitrary inputs in arbitrary order never panic, never leave a due deadline behind,
    /// and keep every queue within its bound.
    #[test]
    fn arbitrary_inputs_keep_invariants(
        inputs in proptest::collection::vec(input(), 0..200),
        frames_first in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
    ) {
        let t = templates();
        let limits = Limits::default().max_pending_requests(3).max_queued_outputs(5).max_frame_bytes(4096);
        let config = SessionConfig::new(["app"])
            .limits(limits)
            .keepalive(Some(Keepalive::new(Duration::from_millis(700), Duration::from_millis(300))))
            .request_timeout(Duration::from_millis(900))
            .reconnect(ReconnectPolicy::default().initial_delay(Duration::from_millis(50)).max_attempts(Some(6)));
        let t0 = epoch();
        let mut s = Session::new(endpoint("http://h:8088"), config);
        let mut now = t0;
        for f in &frames_first {
            s.handle_frame(now, f);
        }
        for input in inputs {
            match input {
                Input::Start => s.start(now),
                Input::Stop => s.stop(),
                Input::Connected => s.handle_connected(now),
                Input::ConnectFailed => s.handle_connect_failed(now, "x"),
                Input::Disconnected => s.handle_disconnected(now, "x"),
                Input::Pong => s.handle_pong(),
                Input::Bytes(b) => s.handle_frame(now, &b),
                Input::Event(ev) => s.handle_frame(now, ev.frame(&t).as_bytes()),
                Input::Response(n) => {
                    let f = format!(r#"{{"type":"RESTResponse","request_id":"r{n}","status_code":200,"reason_phrase":"OK","uri":"x","application":"app","timestamp":"2026-11-26T11:14:38.299+0000","message_body":"{{}}"}}"#);
                    s.handle_frame(now, f.as_bytes());
                }
                Input::Request => { let _ = s.send_request(now, &ari_proto::ops::asterisk::Ping::new()); }
                Input::Subscribe(spec) => { s.subscribe(spec.filter()); }
                Input::Advance(ms) => now += Duration::from_millis(ms),
                Input::Timeout => {
                    if let Some(at) = s.poll_timeout() {
                        now = now.max(at);
                    }
                    s.handle_timeout(now);
                    prop_assert!(s.poll_timeout().is_none_or(|at| at > now), "a due deadline was left");
                }
                Input::Drain => {
                    while s.poll_transmit().is_some() {}
                    while s.poll_output().is_some() {}
                }
            }
            prop_assert!(s.pending_requests() <= 3);
        }
        let mut droppable = 0;
        while let Some(o) = s.poll_output() {
            if matches!(o, Output::Event(_) | Output::Warning(_)) { droppable += 1; }
        }
        prop_assert!(droppable <= 5);
    }
}

#[derive(Debug, Clone)]
enum LingerOp {
    Subscribe(usize, bool),
    Unsubscribe(usize),
    Event(Ev),
    Advance(u64),
}

fn linger_op() -> impl Strategy<Value = LingerOp> {
    let ev = prop_oneof![
        1 => (0..CHANNELS).prop_map(Ev::StasisStart),
        2 => (0..CHANNELS).prop_map(Ev::StasisEnd),
        1 => (0..CHANNELS).prop_map(Ev::Dtmf),
        1 => (0..CHANNELS).prop_map(Ev::ChannelDestroyed),
        1 => (0..BRIDGES, 0..CHANNELS).prop_map(|(b, c)| Ev::Entered(b, c)),
        1 => (proptest::option::of(0..CHANNELS), 0..CHANNELS).prop_map(|(a, b)| Ev::Dial(a, b)),
    ];
    prop_oneof![
        3 => (0..CHANNELS, any::<bool>()).prop_map(|(c, t)| LingerOp::Subscribe(c, t)),
        1 => any::<usize>().prop_map(LingerOp::Unsubscribe),
        5 => ev.prop_map(LingerOp::Event),
        3 => (0u64..1500).prop_map(LingerOp::Advance),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    Start,
    Stop,
    Connected,
    ConnectFailed,
    Disconnected,
    Pong,
    Bytes(Vec<u8>),
    Event(Ev),
    Response(u8),
    Request,
    Subscribe(Spec),
    Advance(u64),
    Timeout,
    Drain,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        1 => Just(Input::Start),
        1 => Just(Input::Stop),
        2 => Just(Input::Connected),
        1 => Just(Input::ConnectFailed),
        1 => Just(Input::Disconnected),
        1 => Just(Input::Pong),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(Input::Bytes),
        3 => event().prop_map(Input::Event),
        1 => (0u8..8).prop_map(Input::Response),
        2 => Just(Input::Request),
        1 => spec().prop_map(Input::Subscribe),
        2 => (0u64..1500).prop_map(Input::Advance),
        2 => Just(Input::Timeout),
        1 => Just(Input::Drain),
    ]
}

fn ended_at_once(outs: &[Output], sub: SubscriptionId) -> bool {
    matches!(
        outs,
        [Output::SubscriptionEnded { id, reason: EndReason::ResourceEnded, .. }] if *id == sub
    )
}

/// A handle obtained after the hangup: subscribing to a channel whose `ChannelDestroyed` was
/// already routed ends the subscription at once instead of leaving it waiting for ever. The
/// id counts as alive again once `StasisStart` creates it again (a reused client-side id), or
/// after `forget_ended`.
#[test]
fn a_subscription_made_after_the_resource_ended_ends_at_once() {
    let t = templates();
    let t0 = epoch();
    let mut s = connected(SessionConfig::new(["app"]), t0);
    s.handle_frame(t0, Ev::StasisStart(1).frame(&t).as_bytes());
    s.handle_frame(t0, Ev::ChannelDestroyed(1).frame(&t).as_bytes());
    drain(&mut s);
    assert!(s.has_ended(ResourceKind::Channel, &cid(1)));
    assert!(!s.has_ended(ResourceKind::Channel, &cid(2)));
    assert!(!s.has_ended(ResourceKind::Bridge, &cid(1)));

    let late = s.subscribe(
        Filter::channel(cid(1))
            .with_type("ChannelHangupRequest")
            .once(),
    );
    assert!(ended_at_once(&drain(&mut s), late));
    assert!(!s.is_subscribed(late));
    // Another channel is not concerned.
    let other = s.subscribe(Filter::channel(cid(2)));
    assert!(drain(&mut s).is_empty() && s.is_subscribed(other));

    // The application reuses the id: forgetting the end makes subscriptions wait again.
    assert!(s.forget_ended(ResourceKind::Channel, &cid(1)));
    let reused = s.subscribe(Filter::channel(cid(1)).with_type("StasisStart"));
    assert!(drain(&mut s).is_empty() && s.is_subscribed(reused));
    s.handle_frame(t0, Ev::StasisStart(1).frame(&t).as_bytes());
    let outs = drain(&mut s);
    assert!(
        matches!(outs.as_slice(), [Output::Event(d)] if d.subscribers.to_vec().contains(&reused)),
        "{outs:?}"
    );

    // Ended again, then created again by an event (reused without forget_ended).
    s.handle_frame(t0, Ev::ChannelDestroyed(1).frame(&t).as_bytes());
    drain(&mut s);
    assert!(s.has_ended(ResourceKind::Channel, &cid(1)));
    s.handle_frame(t0, Ev::StasisStart(1).frame(&t).as_bytes());
    drain(&mut s);
    assert!(!s.has_ended(ResourceKind::Channel, &cid(1)));
    let live = s.subscribe(Filter::channel(cid(1)));
    assert!(drain(&mut s).is_empty() && s.is_subscribed(live));
}

/// The record of ended resources keeps the latest `max_ended_ids` ends, no more.
#[test]
fn the_record_of_ended_resources_is_bounded() {
    let t = templates();
    let t0 = epoch();
    let config = SessionConfig::new(["app"]).limits(Limits::default().max_ended_ids(2));
    let mut s = connected(config, t0);
    for c in 0..3 {
        s.handle_frame(t0, Ev::ChannelDestroyed(c).frame(&t).as_bytes());
    }
    drain(&mut s);
    assert!(
        !s.has_ended(ResourceKind::Channel, &cid(0)),
        "the oldest end is forgotten"
    );
    assert!(s.has_ended(ResourceKind::Channel, &cid(1)));
    assert!(s.has_ended(ResourceKind::Channel, &cid(2)));
    let forgotten = s.subscribe(Filter::channel(cid(0)));
    assert!(drain(&mut s).is_empty() && s.is_subscribed(forgotten));

    let none = SessionConfig::new(["app"]).limits(Limits::default().max_ended_ids(0));
    let mut s = connected(none, t0);
    s.handle_frame(t0, Ev::ChannelDestroyed(0).frame(&t).as_bytes());
    drain(&mut s);
    assert!(!s.has_ended(ResourceKind::Channel, &cid(0)));
}

/// An incoming call that hung up gets no `ChannelDestroyed` to the application, only
/// `StasisEnd`: once its linger is over, it counts as ended like a destroyed channel, so a
/// handle obtained later does not wait for ever; a `StasisStart` brings it back.
#[test]
fn a_channel_whose_stasis_end_linger_ended_counts_as_ended() {
    let t = templates();
    let t0 = epoch();
    let config = SessionConfig::new(["app"])
        .keepalive(None)
        .stasis_end_linger(Some(Duration::from_secs(1)));
    let mut s = connected(config, t0);
    let call = s.subscribe(Filter::channel(cid(1)));
    s.handle_frame(t0, Ev::StasisStart(1).frame(&t).as_bytes());
    s.handle_frame(t0, Ev::StasisEnd(1).frame(&t).as_bytes());
    drain(&mut s);
    assert!(
        !s.has_ended(ResourceKind::Channel, &cid(1)),
        "still lingering"
    );
    s.handle_timeout(t0 + Duration::from_secs(2));
    assert!(ended_at_once(&drain(&mut s), call));
    assert!(s.has_ended(ResourceKind::Channel, &cid(1)));
    let late = s.subscribe(Filter::channel(cid(1)).with_type("ChannelHangupRequest"));
    assert!(ended_at_once(&drain(&mut s), late));
    s.handle_frame(t0, Ev::StasisStart(1).frame(&t).as_bytes());
    drain(&mut s);
    let back = s.subscribe(Filter::channel(cid(1)));
    assert!(drain(&mut s).is_empty() && s.is_subscribed(back));
}

/// A channel nobody followed when its `StasisEnd` came (an incoming call that hung up before
/// the application took a handle on it): once its linger is over it counts as ended like a
/// followed one, so a handle taken later (in a `StasisEnd` handler, or by code that learnt
/// the id after the hangup) does not wait for ever. A handle taken during the linger waits
/// and ends with it; a `StasisStart` during the linger cancels it.
#[test]
fn a_channel_nobody_followed_at_its_stasis_end_counts_as_ended_after_its_linger() {
    let t = templates();
    let t0 = epoch();
    let linger = Duration::from_secs(1);
    let mut s = lingering(linger, t0);
    for c in [1, 2, 3] {
        s.handle_frame(t0, Ev::StasisStart(c).frame(&t).as_bytes());
        s.handle_frame(t0, Ev::StasisEnd(c).frame(&t).as_bytes());
    }
    drain(&mut s);
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + linger),
        "the linger is scheduled"
    );
    // Taken during the linger (in a `StasisEnd` handler): waits, and ends with the linger.
    let during = s.subscribe(Filter::channel(cid(1)).with_type("ChannelHangupRequest"));
    assert!(drain(&mut s).is_empty() && s.is_subscribed(during));
    assert_eq!(s.lingering_channels(), 3);
    // Channel 3 comes back to Stasis (moved to another application of this connection).
    s.handle_frame(t0, Ev::StasisStart(3).frame(&t).as_bytes());
    drain(&mut s);
    for c in [1, 2, 3] {
        assert!(!s.has_ended(ResourceKind::Channel, &cid(c)), "{c} lingers");
    }
    s.handle_timeout(t0 + linger);
    assert!(ended_at_once(&drain(&mut s), during));
    assert!(s.has_ended(ResourceKind::Channel, &cid(1)));
    assert!(s.has_ended(ResourceKind::Channel, &cid(2)));
    assert!(
        !s.has_ended(ResourceKind::Channel, &cid(3)),
        "back in Stasis"
    );
    assert_eq!(s.poll_timeout(), None, "nothing left to wait for");
    // Taken after the linger: ends at once.
    let late = s.subscribe(
        Filter::channel(cid(2))
            .with_type("ChannelHangupRequest")
            .once(),
    );
    assert!(ended_at_once(&drain(&mut s), late));
    let live = s.subscribe(Filter::channel(cid(3)));
    assert!(drain(&mut s).is_empty() && s.is_subscribed(live));
}

/// A channel whose last subscription went away during its linger (a one-shot wait that got
/// its event, a handle dropped) is still recorded as ended when the linger is over.
#[test]
fn a_channel_unfollowed_during_its_linger_still_counts_as_ended() {
    let t = templates();
    let t0 = epoch();
    let linger = Duration::from_secs(1);
    let mut s = lingering(linger, t0);
    let dropped = s.subscribe(Filter::channel(cid(1)));
    let dtmf = s.subscribe(
        Filter::channel(cid(2))
            .with_type("ChannelDtmfReceived")
            .once(),
    );
    for c in [1, 2] {
        s.handle_frame(t0, Ev::StasisStart(c).frame(&t).as_bytes());
        s.handle_frame(t0, Ev::StasisEnd(c).frame(&t).as_bytes());
    }
    assert!(s.unsubscribe(dropped));
    s.handle_frame(t0, Ev::Dtmf(2).frame(&t).as_bytes());
    drain(&mut s);
    assert!(!s.is_subscribed(dtmf));
    s.handle_timeout(t0 + linger);
    drain(&mut s);
    assert!(s.has_ended(ResourceKind::Channel, &cid(1)));
    assert!(s.has_ended(ResourceKind::Channel, &cid(2)));
}

/// `not_created` of a channel that lingers (it left Stasis while followed) ends its
/// subscriptions and leaves it unfollowed, as removing its last subscription would: its
/// deadline stays (a later event of it does not restart it), and it counts as ended then.
/// Found by `routing_matches_naive_model` (a `Dial` after it restarted the linger).
#[test]
fn a_lingering_channel_not_created_keeps_its_deadline() {
    let t = templates();
    let t0 = epoch();
    let linger = Duration::from_secs(1);
    let mut s = lingering(linger, t0);
    let sub = s.subscribe(Filter::channel(cid(1)));
    s.handle_frame(t0, Ev::StasisEnd(1).frame(&t).as_bytes());
    drain(&mut s);
    assert_eq!(s.not_created(ResourceKind::Channel, &cid(1)), 1);
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Output::SubscriptionEnded { id, reason: EndReason::NotCreated, .. }] if *id == sub
    ));
    assert_eq!(s.lingering_channels(), 1);
    let later = t0 + Duration::from_millis(500);
    s.handle_frame(later, Ev::Dtmf(1).frame(&t).as_bytes());
    drain(&mut s);
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + linger),
        "the event restarted the linger"
    );
    assert!(!s.has_ended(ResourceKind::Channel, &cid(1)));
    s.handle_timeout(t0 + linger);
    assert!(drain(&mut s).is_empty());
    assert!(s.has_ended(ResourceKind::Channel, &cid(1)));
    assert_eq!(s.lingering_channels(), 0);
}

/// One node's resources gone (its Asterisk restarted under a cluster): only their
/// subscriptions end, with the reason given; the other node's stay and still receive events;
/// a lingering channel among them stops lingering (nothing left to time out); with
/// `NotCreated` nothing is recorded as ended.
#[test]
fn ending_a_set_of_resources_leaves_the_others() {
    let t = templates();
    let t0 = epoch();
    let mut s = lingering(Duration::from_secs(1), t0);
    let a_call = s.subscribe(Filter::channel(cid(1)));
    let a_play = s.subscribe(Filter::playback(pid(0)));
    let a_ending = s.subscribe(Filter::channel(cid(2)));
    let b_call = s.subscribe(Filter::channel(cid(3)));
    let b_bridge = s.subscribe(Filter::bridge(bid(0)));
    let everything = s.subscribe(Filter::all());
    s.handle_frame(t0, Ev::StasisEnd(2).frame(&t).as_bytes());
    drain(&mut s);
    assert_eq!(s.lingering_channels(), 1);
    let gone = [
        (ResourceKind::Channel, cid(1)),
        (ResourceKind::Playback, pid(0)),
        (ResourceKind::Channel, cid(2)),
    ];
    assert_eq!(s.end_resources(gone.clone(), EndReason::ResourceEnded), 3);
    let ended: Vec<SubscriptionId> = drain(&mut s)
        .into_iter()
        .map(|o| match o {
            Output::SubscriptionEnded {
                id,
                reason: EndReason::ResourceEnded,
                ..
            } => id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ended, vec![a_call, a_play, a_ending]);
    assert_eq!(s.lingering_channels(), 0);
    assert_eq!(s.poll_timeout(), None);
    for (k, id) in &gone {
        assert!(s.has_ended(*k, id));
    }
    for sub in [b_call, b_bridge, everything] {
        assert!(s.is_subscribed(sub));
    }
    s.handle_frame(t0, Ev::Dtmf(3).frame(&t).as_bytes());
    let outs = drain(&mut s);
    assert!(
        matches!(
            outs.as_slice(),
            [Output::Event(d)] if d.subscribers.as_slice() == [b_call, everything]
        ),
        "{outs:?}"
    );
    // A subscription made afterwards to a gone resource ends at once.
    let late = s.subscribe(Filter::channel(cid(1)));
    assert!(ended_at_once(&drain(&mut s), late));
    // NotCreated: ended, not recorded.
    let c4 = s.subscribe(Filter::channel(cid(4)));
    assert_eq!(
        s.end_resources(
            [(ResourceKind::Channel, cid(4).as_str())],
            EndReason::NotCreated
        ),
        1
    );
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Output::SubscriptionEnded { id, reason: EndReason::NotCreated, .. }] if *id == c4
    ));
    assert!(!s.has_ended(ResourceKind::Channel, &cid(4)));
}

/// The record of ended resources keeps how a live recording ended: `RecordingFailed` with
/// Asterisk's cause (empty when it gave none), `RecordingFinished` as no failure; a recording
/// created again (`RecordingStarted`, the same name reused) is no longer remembered.
#[test]
fn a_failed_recording_is_remembered_with_its_cause() {
    let t = templates();
    let t0 = epoch();
    let mut s = connected(SessionConfig::new(["app"]), t0);
    let frame = |ev: Ev, cause: Option<&str>| {
        let mut v: serde_json::Value = serde_json::from_str(&ev.frame(&t)).expect("json");
        match cause {
            Some(c) => v["recording"]["cause"] = json!(c),
            None => {
                if let Some(r) = v["recording"].as_object_mut() {
                    r.remove("cause");
                }
            }
        }
        serde_json::to_vec(&v).expect("serializes")
    };
    let on = Target::Channel(1);
    s.handle_frame(
        t0,
        &frame(
            Ev::RecordingFailed(1, on),
            Some("Channel hung up before recording started"),
        ),
    );
    s.handle_frame(t0, &frame(Ev::RecordingFailed(2, on), None));
    s.handle_frame(t0, &frame(Ev::RecordingFinished(3, on), None));
    drain(&mut s);
    assert_eq!(
        s.recording_failure(&rid(1)),
        Some("Channel hung up before recording started")
    );
    assert_eq!(s.recording_failure(&rid(2)), Some(""));
    assert!(s.has_ended(ResourceKind::Recording, &rid(3)));
    assert_eq!(s.recording_failure(&rid(3)), None, "finished, not failed");
    assert_eq!(s.recording_failure(&rid(4)), None, "never seen");
    s.handle_frame(t0, &frame(Ev::RecordingStarted(1, on), None));
    drain(&mut s);
    assert_eq!(s.recording_failure(&rid(1)), None, "the name was reused");
    s.handle_frame(t0, &frame(Ev::RecordingFinished(1, on), None));
    drain(&mut s);
    assert_eq!(s.recording_failure(&rid(1)), None, "the new one finished");
}

/// A bridge the application destroyed (`DELETE /bridges/{id}` answered 204) while it only
/// followed it through its channels: Asterisk sends it the `ChannelLeftBridge` of each
/// channel and no `BridgeDestroyed` (recorded traffic: `asterisk-20` run 1, `asterisk-master`
/// run 2). Its subscriptions end when the linger is over (each event of the bridge restarting
/// it), it counts as ended, and `poll_timeout` wakes the adapter for it. Another bridge is
/// untouched.
#[test]
fn a_bridge_the_application_destroyed_ends_its_subscriptions_after_the_linger() {
    let t = templates();
    let t0 = epoch();
    let linger = Duration::from_secs(1);
    let mut s = lingering(linger, t0);
    let wait = s.subscribe(Filter::bridge(bid(0)).with_type("BridgeDestroyed").once());
    let stream = s.subscribe(Filter::bridge(bid(0)));
    let other_wait = s.subscribe(Filter::bridge(bid(1)).with_type("BridgeDestroyed").once());
    let other = s.subscribe(Filter::bridge(bid(1)));
    s.handle_frame(t0, Ev::Entered(0, 1).frame(&t).as_bytes());
    s.handle_frame(t0, Ev::Entered(1, 2).frame(&t).as_bytes());
    drain(&mut s);
    assert_eq!(
        s.poll_timeout(),
        None,
        "nothing scheduled before the DELETE"
    );

    s.bridge_destroyed(t0, &bid(0));
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + linger),
        "the linger wakes the adapter"
    );
    assert!(!s.has_ended(ResourceKind::Bridge, &bid(0)), "lingering");
    // The channel's `ChannelLeftBridge`, late on the events connection: delivered, and the
    // linger starts again.
    let left_at = t0 + Duration::from_millis(300);
    s.handle_frame(left_at, Ev::Left(0, 1).frame(&t).as_bytes());
    match &drain(&mut s)[..] {
        [Output::Event(d)] => assert_eq!(d.subscribers.as_slice(), &[stream]),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.poll_timeout(), Some(left_at + linger));
    s.handle_timeout(t0 + linger);
    assert!(drain(&mut s).is_empty(), "not over yet");
    assert!(s.is_subscribed(wait) && s.is_subscribed(stream));

    s.handle_timeout(left_at + linger);
    let outs = drain(&mut s);
    let ended: Vec<SubscriptionId> = outs
        .iter()
        .map(|o| match o {
            Output::SubscriptionEnded {
                id,
                reason: EndReason::ResourceEnded,
                ..
            } => *id,
            other => panic!("only ends, no made-up event: {other:?}"),
        })
        .collect();
    assert_eq!(ended, vec![wait, stream]);
    assert!(s.has_ended(ResourceKind::Bridge, &bid(0)));
    assert_eq!(s.poll_timeout(), None, "nothing left to wait for");
    // The other bridge is untouched.
    assert!(s.is_subscribed(other_wait) && s.is_subscribed(other));
    assert!(!s.has_ended(ResourceKind::Bridge, &bid(1)));
    // A handle taken later ends at once; telling the session again changes nothing.
    let late = s.subscribe(Filter::bridge(bid(0)));
    assert!(ended_at_once(&drain(&mut s), late));
    s.bridge_destroyed(left_at + linger, &bid(0));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.live_subscriptions(), 2);
}

/// A `BridgeDestroyed` arriving during the linger (the application subscribed to the bridge,
/// or `subscribeAll`) is delivered once to every subscription of the bridge and ends them as
/// usual; the linger is over with it. One arriving before the response leaves nothing to
/// linger.
#[test]
fn a_bridge_destroyed_arriving_during_the_linger_is_delivered_once_and_ends_it() {
    let t = templates();
    let t0 = epoch();
    let linger = Duration::from_secs(1);
    let mut s = lingering(linger, t0);
    let wait = s.subscribe(Filter::bridge(bid(0)).with_type("BridgeDestroyed").once());
    let stream = s.subscribe(Filter::bridge(bid(0)));
    let other = s.subscribe(Filter::bridge(bid(1)));
    s.bridge_destroyed(t0, &bid(0));
    assert_eq!(s.poll_timeout(), Some(t0 + linger), "lingering");
    let at = t0 + Duration::from_millis(100);
    s.handle_frame(at, Ev::BridgeDestroyed(0).frame(&t).as_bytes());
    let outs = drain(&mut s);
    let events: Vec<&Output> = outs
        .iter()
        .filter(|o| matches!(o, Output::Event(_)))
        .collect();
    match &events[..] {
        [Output::Event(d)] => {
            assert_eq!(d.event.type_name(), "BridgeDestroyed");
            assert_eq!(d.subscribers.as_slice(), &[wait, stream]);
        }
        other => panic!("one delivery: {other:?}"),
    }
    let ended: Vec<(SubscriptionId, EndReason)> = outs
        .iter()
        .filter_map(|o| match o {
            Output::SubscriptionEnded { id, reason, .. } => Some((*id, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![(wait, EndReason::Once), (stream, EndReason::ResourceEnded)]
    );
    assert_eq!(s.poll_timeout(), None, "the linger is over with the event");
    s.handle_timeout(at + linger * 2);
    assert!(drain(&mut s).is_empty(), "nothing ends twice");
    assert!(s.has_ended(ResourceKind::Bridge, &bid(0)));
    assert!(s.is_subscribed(other));

    // The event before the response: the bridge is already recorded as ended.
    s.handle_frame(at, Ev::BridgeDestroyed(1).frame(&t).as_bytes());
    drain(&mut s);
    s.bridge_destroyed(at, &bid(1));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.live_subscriptions(), 0);
}

/// Without a linger (`None`) a destroyed bridge's subscriptions last until its
/// `BridgeDestroyed` or removal, as before; `forget_ended` (the id reused for a new bridge)
/// stops a linger.
#[test]
fn a_destroyed_bridge_lingers_only_with_a_linger_and_until_its_id_is_reused() {
    let t0 = epoch();
    let linger = Duration::from_secs(1);
    let mut off = connected(
        SessionConfig::new(["app"])
            .keepalive(None)
            .stasis_end_linger(None),
        t0,
    );
    let kept = off.subscribe(Filter::bridge(bid(0)));
    off.bridge_destroyed(t0, &bid(0));
    assert_eq!(off.poll_timeout(), None);
    off.handle_timeout(t0 + linger * 10);
    assert!(drain(&mut off).is_empty() && off.is_subscribed(kept));

    let mut s = lingering(linger, t0);
    let sub = s.subscribe(Filter::bridge(bid(0)));
    s.bridge_destroyed(t0, &bid(0));
    assert!(s.forget_ended(ResourceKind::Bridge, &bid(0)), "it lingered");
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + linger);
    assert!(drain(&mut s).is_empty() && s.is_subscribed(sub));
    assert!(!s.has_ended(ResourceKind::Bridge, &bid(0)));
}

/// The bridge's linger is one of the session's deadlines: the earliest of it and the others
/// (a channel's linger, a request's deadline) is `poll_timeout`.
#[test]
fn poll_timeout_includes_the_linger_of_a_destroyed_bridge() {
    let t = templates();
    let t0 = epoch();
    let linger = Duration::from_secs(2);
    let config = SessionConfig::new(["app"])
        .keepalive(None)
        .request_timeout(Duration::from_secs(10))
        .stasis_end_linger(Some(linger));
    let mut s = connected(config, t0);
    let _call = s.subscribe(Filter::channel(cid(1)));
    s.handle_frame(t0, Ev::StasisStart(1).frame(&t).as_bytes());
    s.send_request(t0, &ari_proto::ops::asterisk::Ping::new())
        .expect("sent");
    drain(&mut s);
    drain_transmits(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    let t1 = t0 + Duration::from_secs(1);
    s.bridge_destroyed(t1, &bid(0));
    assert_eq!(
        s.poll_timeout(),
        Some(t1 + linger),
        "before the request's deadline"
    );
    let t2 = t0 + Duration::from_millis(1500);
    s.handle_frame(t2, Ev::StasisEnd(1).frame(&t).as_bytes());
    drain(&mut s);
    assert_eq!(
        s.poll_timeout(),
        Some(t1 + linger),
        "the earlier of the two lingers"
    );
    s.handle_timeout(t1 + linger);
    drain(&mut s);
    assert!(s.has_ended(ResourceKind::Bridge, &bid(0)));
    assert_eq!(
        s.poll_timeout(),
        Some(t2 + linger),
        "the channel's linger is next"
    );
}

/// `Session::has_seen`: set by the first event routed for a followed resource (whatever
/// type its subscriptions take), for the subscriptions following it; never by an event of
/// another resource, nor by one routed before any subscription; forgotten when the
/// resource's final event ends them (a later subscription starts unseen).
#[test]
fn has_seen_follows_the_events_routed_for_a_followed_resource() {
    let t = templates();
    let t0 = epoch();
    let mut s = lingering(Duration::from_secs(1), t0);
    let (kind, id) = (ResourceKind::Recording, rid(1));
    let frame = |e: Ev| e.frame(&t);
    s.handle_frame(
        t0,
        frame(Ev::RecordingStarted(1, Target::Channel(1))).as_bytes(),
    );
    let sub = s.subscribe(Filter::recording(id.clone()).with_type("RecordingFinished"));
    assert!(!s.has_seen(kind, &id), "routed before the subscription");
    s.handle_frame(
        t0,
        frame(Ev::RecordingStarted(2, Target::Channel(1))).as_bytes(),
    );
    assert!(!s.has_seen(kind, &id), "another recording's event");
    s.handle_frame(
        t0,
        frame(Ev::RecordingStarted(1, Target::Channel(1))).as_bytes(),
    );
    assert!(s.has_seen(kind, &id));
    drain(&mut s);
    s.handle_frame(
        t0,
        frame(Ev::RecordingFinished(1, Target::Channel(1))).as_bytes(),
    );
    drain(&mut s);
    assert!(!s.is_subscribed(sub));
    assert!(!s.has_seen(kind, &id), "forgotten with its subscriptions");
    let _again = s.subscribe(Filter::recording(id.clone()));
    assert!(!s.has_seen(kind, &id));
}

/// At most `max_ended_ids` channels and bridges have playbacks or recordings tracked as
/// queued: one queued beyond that is counted, and its subscription is not ended when its
/// channel goes (the tracked one's is, `NeverStarted`).
#[test]
fn playbacks_queued_beyond_the_tracking_limit_are_counted() {
    let t = templates();
    let t0 = epoch();
    let config = SessionConfig::new(["app"]).limits(Limits::default().max_ended_ids(1));
    let mut s = connected(config, t0);
    let tracked = s.subscribe(Filter::playback("p-tracked"));
    let untracked = s.subscribe(Filter::playback("p-untracked"));
    s.queued_on(
        ResourceKind::Playback,
        "p-tracked",
        ResourceKind::Channel,
        &cid(0),
    );
    assert_eq!(s.stats().queued_untracked, 0);
    // A second playback on the same channel shares its entry.
    s.queued_on(
        ResourceKind::Playback,
        "p-2",
        ResourceKind::Channel,
        &cid(0),
    );
    assert_eq!(s.stats().queued_untracked, 0);
    s.queued_on(
        ResourceKind::Playback,
        "p-untracked",
        ResourceKind::Channel,
        &cid(1),
    );
    assert_eq!(s.stats().queued_untracked, 1);
    for c in 0..2 {
        s.handle_frame(t0, Ev::ChannelDestroyed(c).frame(&t).as_bytes());
    }
    let ended: Vec<_> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::SubscriptionEnded { id, reason, .. } => Some((id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![(tracked, EndReason::NeverStarted)]);
    assert!(s.is_subscribed(untracked));
    // The entry is gone with its channel: another channel's playback is tracked again.
    s.queued_on(
        ResourceKind::Playback,
        "p-3",
        ResourceKind::Channel,
        &cid(2),
    );
    assert_eq!(s.stats().queued_untracked, 1);
}
