//! What the proxy needs to route an event, read from the raw frame without building the typed
//! event: its type, application and the resources it concerns (channels, bridges, playbacks,
//! recordings), borrowed from the frame.
//!
//! Only the event types whose resources sit under the plain keys `channel`, `bridge`,
//! `replace_channel`, `playback` and `recording` are read this way (every frequent event of a
//! call); for them the resources come out in the order of
//! [`ari_proto::Event::resources`], and the final one as [`ari_proto::Event::is_final_for`]
//! tells. Any other type, or a frame this scan cannot read, is decoded fully by the caller.

use std::borrow::Cow;
use std::fmt;

use ari_proto::events::ResourceKind;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// A resource object of the frame: only its id (or a recording's name) and target.
#[derive(Debug, Default, Deserialize)]
struct Obj<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target_uri: Option<Cow<'a, str>>,
}

/// The top-level members the routing reads.
#[derive(Debug, Default)]
struct Members<'a> {
    ty: Option<Cow<'a, str>>,
    application: Option<Cow<'a, str>>,
    channel: Option<Obj<'a>>,
    replace_channel: Option<Obj<'a>>,
    bridge: Option<Obj<'a>>,
    playback: Option<Obj<'a>>,
    recording: Option<Obj<'a>>,
}

/// A string borrowed from the frame where it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(CowStr)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members<'de>, A::Error> {
                let mut out = Members::default();
                while let Some(CowStr(key)) = m.next_key::<CowStr<'de>>()? {
                    // A repeated member makes the frame one for the full decode.
                    let dup = || de::Error::custom("repeated member");
                    match &*key {
                        "type" => {
                            if out.ty.replace(m.next_value::<CowStr<'de>>()?.0).is_some() {
                                return Err(dup());
                            }
                        }
                        "application" => {
                            let v = m.next_value::<CowStr<'de>>()?.0;
                            if out.application.replace(v).is_some() {
                                return Err(dup());
                            }
                        }
                        "channel" | "replace_channel" | "bridge" | "playback" | "recording" => {
                            let slot = match &*key {
                                "channel" => &mut out.channel,
                                "replace_channel" => &mut out.replace_channel,
                                "bridge" => &mut out.bridge,
                                "playback" => &mut out.playback,
                                _ => &mut out.recording,
                            };
                            if slot.replace(m.next_value::<Obj<'de>>()?).is_some() {
                                return Err(dup());
                            }
                        }
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Which members carry the resources of a type, in [`ari_proto::Event::resources`] order,
/// and which one ends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `channel` (required unless noted by the type).
    Channel,
    /// `channel`, then `replace_channel` (`StasisStart`).
    Start,
    /// `bridge`.
    Bridge,
    /// `bridge`, then `channel`.
    BridgeChannel,
    /// `channel`, then `bridge` (`ChannelUserevent`; its endpoint is no owned kind).
    ChannelBridge,
    /// `playback`, then its target.
    Playback,
    /// `recording` (by name), then its target.
    Recording,
}

fn shape(ty: &str) -> Option<(Shape, bool)> {
    use Shape::*;
    Some(match ty {
        "ChannelDestroyed" => (Channel, true),
        "ApplicationMoveFailed"
        | "CallBroadcast"
        | "CallClaimed"
        | "ChannelCallerId"
        | "ChannelConnectedLine"
        | "ChannelCreated"
        | "ChannelDialplan"
        | "ChannelDtmfReceived"
        | "ChannelHangupRequest"
        | "ChannelHold"
        | "ChannelUnhold"
        | "ChannelStateChange"
        | "ChannelTalkingFinished"
        | "ChannelTalkingStarted"
        | "ChannelToneDetected"
        | "ChannelVarset"
        | "StasisEnd" => (Channel, false),
        "StasisStart" => (Start, false),
        "BridgeDestroyed" => (Bridge, true),
        "BridgeCreated" | "BridgeVideoSourceChanged" => (Bridge, false),
        "ChannelEnteredBridge" | "ChannelLeftBridge" => (BridgeChannel, false),
        "ChannelUserevent" => (ChannelBridge, false),
        "PlaybackFinished" => (Playback, true),
        "PlaybackStarted" | "PlaybackContinuing" => (Playback, false),
        "RecordingFinished" | "RecordingFailed" => (Recording, true),
        "RecordingStarted" => (Recording, false),
        _ => return None,
    })
}

/// An event read for routing.
#[derive(Debug)]
pub(crate) struct Scanned<'a> {
    /// The event's type.
    pub(crate) ty: Cow<'a, str>,
    /// Its application.
    pub(crate) application: Option<Cow<'a, str>>,
    /// The resources it concerns (owned kinds only), in `Event::resources` order, no
    /// repeats, no empty ids.
    pub(crate) resources: Vec<(ResourceKind, Cow<'a, str>)>,
    /// The resource this event is the last one of (`ChannelDestroyed` …), an index into
    /// `resources`.
    pub(crate) last_of: Option<usize>,
}

impl Scanned<'_> {
    /// Whether this event is the last one of its `i`-th resource.
    pub(crate) fn is_final_for(&self, i: usize) -> bool {
        self.last_of == Some(i)
    }
}

/// Reads what routing needs from `frame`, or `None`: a type this scan does not read, a
/// required resource member missing, or a frame that is not one JSON object (the caller
/// decodes it fully).
pub(crate) fn scan<'a>(frame: &'a [u8]) -> Option<Scanned<'a>> {
    let text = std::str::from_utf8(frame).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let m = Members::deserialize(&mut de).ok()?;
    de.end().ok()?;
    let ty = m.ty?;
    let (shape, ends) = shape(&ty)?;
    let mut resources: Vec<(ResourceKind, Cow<'a, str>)> = Vec::with_capacity(2);
    let mut push = |kind: ResourceKind, id: Option<Cow<'a, str>>| -> bool {
        match id.filter(|i| !i.is_empty()) {
            Some(id) => {
                if !resources.iter().any(|(k, i)| *k == kind && *i == id) {
                    resources.push((kind, id));
                }
                true
            }
            None => false,
        }
    };
    let id = |o: Option<Obj<'a>>| o.and_then(|o| o.id);
    // Whether the event's own resource (the one it may end) is first in the list.
    let own = match shape {
        Shape::Channel => {
            // Required by every type of this shape but `ChannelVarset`.
            if m.channel.is_none() && ty != "ChannelVarset" {
                return None;
            }
            push(ResourceKind::Channel, id(m.channel))
        }
        Shape::Start => {
            m.channel.as_ref()?;
            let own = push(ResourceKind::Channel, id(m.channel));
            push(ResourceKind::Channel, id(m.replace_channel));
            own
        }
        Shape::Bridge => {
            m.bridge.as_ref()?;
            push(ResourceKind::Bridge, id(m.bridge))
        }
        Shape::BridgeChannel => {
            m.bridge.as_ref()?;
            if m.channel.is_none() && ty == "ChannelLeftBridge" {
                return None;
            }
            let own = push(ResourceKind::Bridge, id(m.bridge));
            push(ResourceKind::Channel, id(m.channel));
            own
        }
        Shape::ChannelBridge => {
            push(ResourceKind::Channel, id(m.channel));
            push(ResourceKind::Bridge, id(m.bridge));
            false
        }
        Shape::Playback | Shape::Recording => {
            let (kind, obj) = if shape == Shape::Playback {
                (ResourceKind::Playback, m.playback?)
            } else {
                (ResourceKind::Recording, m.recording?)
            };
            let name = if kind == ResourceKind::Recording {
                obj.name
            } else {
                obj.id
            };
            let own = push(kind, name);
            let target = obj.target_uri.as_deref().and_then(|t| t.split_once(':'));
            match target {
                Some(("channel", t)) => push(ResourceKind::Channel, Some(Cow::Owned(t.into()))),
                Some(("bridge", t)) => push(ResourceKind::Bridge, Some(Cow::Owned(t.into()))),
                _ => false,
            };
            own
        }
    };
    Some(Scanned {
        ty,
        application: m.application,
        resources,
        last_of: (ends && own).then_some(0),
    })
}

/// Type, application (`None` when missing or empty: the proxy routes both as its default
/// application's), and the owned-kind resources with whether each is final: what routing
/// uses, from either reading of a frame.
type View = (String, Option<String>, Vec<(ResourceKind, String, bool)>);

/// The typed event's view, as the proxy used it before the scan.
fn typed_view(e: &ari_proto::Event) -> View {
    let res = e
        .resources()
        .iter()
        .filter(|r| crate::wire::kind_letter(r.kind).is_some())
        .map(|r| (r.kind, r.id.to_string(), e.is_final_for(r)))
        .collect();
    (
        e.type_name().to_string(),
        e.application()
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        res,
    )
}

/// The scan's view of `frame`, where it reads one.
fn scanned_view(frame: &[u8]) -> Option<View> {
    let s = scan(frame)?;
    let res = s
        .resources
        .iter()
        .enumerate()
        .map(|(i, (k, id))| (*k, id.to_string(), s.is_final_for(i)))
        .collect();
    Some((
        s.ty.to_string(),
        s.application
            .as_deref()
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        res,
    ))
}

/// Checks the scan against the typed decode on one frame (any bytes): where the typed event
/// decodes and the scan reads the frame, both must route it the same way (type, application,
/// resources in order, which one ends). A frame the scan does not read is decoded by the proxy
/// (slower, never wrong), so it is no disagreement; that the scan reads every recorded frame of
/// the types it knows is a test of its own. `Err` describes the disagreement. Used by the fuzz
/// target `route_scan` (through [`crate::fuzzing`]) and the tests.
pub(crate) fn check(frame: &[u8]) -> Result<(), String> {
    let Some(s) = scanned_view(frame) else {
        return Ok(());
    };
    let Ok(event) = ari_proto::Event::decode(frame) else {
        return Ok(());
    };
    let t = typed_view(&event);
    if s == t {
        Ok(())
    } else {
        Err(format!("scan read {s:?}, the typed event says {t:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ari_proto::Event;

    fn typed(frame: &str) -> View {
        typed_view(&Event::decode(frame.as_bytes()).expect("fixture decodes"))
    }

    fn scanned(frame: &str) -> Option<View> {
        scanned_view(frame.as_bytes())
    }

    /// Every recorded frame of Asterisk 20 and master: where the scan reads one, it says what
    /// the typed event says; and it reads every frame of a type it knows.
    #[test]
    fn the_scan_agrees_with_the_typed_event_on_recorded_traffic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let mut read = 0;
        for version in ["asterisk-20", "asterisk-master"] {
            let text = std::fs::read_to_string(root.join(version).join("events.jsonl"))
                .expect("recorded events");
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                let frame = v["frame"].as_str().expect("frame");
                assert_eq!(check(frame.as_bytes()), Ok(()), "{frame}");
                let Ok(event) = Event::decode(frame.as_bytes()) else {
                    continue;
                };
                match scanned(frame) {
                    Some(s) => {
                        assert_eq!(s, typed(frame), "{frame}");
                        read += 1;
                    }
                    None => assert!(
                        shape(event.type_name()).is_none(),
                        "a {} frame was not read: {frame}",
                        event.type_name()
                    ),
                }
            }
        }
        assert!(read > 200, "only {read} frames read by the scan");
    }

    /// The first recorded frame of type `ty`, as JSON to alter.
    fn recorded(ty: &str) -> serde_json::Value {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let text = std::fs::read_to_string(root.join("asterisk-master/events.jsonl"))
            .expect("recorded events");
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| serde_json::from_str(v["frame"].as_str()?).ok())
            .find(|f: &serde_json::Value| f["type"] == ty)
            .expect("a recorded frame of the type")
    }

    #[test]
    fn edge_cases_agree_or_fall_back() {
        // An escaped id is unescaped; an empty own id is not final, its target still counts;
        // a recording's target bridge counts.
        let mut destroyed = recorded("ChannelDestroyed");
        destroyed["channel"]["id"] = "x\"y\\z".into();
        let mut finished = recorded("PlaybackFinished");
        finished["playback"]["id"] = "".into();
        finished["playback"]["target_uri"] = "channel:c1".into();
        let mut recording = recorded("RecordingStarted");
        recording["recording"]["target_uri"] = "bridge:b1".into();
        let mut entered = recorded("ChannelEnteredBridge");
        if let Some(o) = entered.as_object_mut() {
            o.remove("channel");
        }
        for frame in [destroyed, finished, recording, entered] {
            let frame = frame.to_string();
            assert_eq!(scanned(&frame), Some(typed(&frame)), "{frame}");
        }
        let destroyed = scanned(&recorded("ChannelDestroyed").to_string()).expect("read");
        assert!(destroyed.2[0].2, "ChannelDestroyed ends its channel");
        // The typed path takes: another type, a repeated member, trailing text, not an
        // object, a missing required resource.
        for frame in [
            r#"{"type":"RESTResponse","request_id":"1","status_code":200,"reason_phrase":"OK","uri":"x"}"#,
            r#"{"type":"Dial","peer":{"id":"p"},"dialstatus":""}"#,
            r#"{"type":"StasisEnd","channel":{"id":"a"},"channel":{"id":"b"}}"#,
            r#"{"type":"StasisEnd","channel":{"id":"a"}} x"#,
            r#"["StasisEnd"]"#,
            r#"{"type":"StasisEnd"}"#,
            r#"{"type":"StasisEnd","channel":null}"#,
        ] {
            assert!(scan(frame.as_bytes()).is_none(), "{frame}");
        }
    }

    /// The seed corpus of the fuzz target `route_scan` (recorded frames and altered ones):
    /// the scan and the typed decode agree on every input.
    #[test]
    fn the_route_scan_fuzz_corpus_agrees() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/route_scan");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/route_scan") {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            assert_eq!(check(&data), Ok(()), "{}", path.display());
            n += 1;
        }
        assert!(n >= 20, "only {n} seeds in {}", dir.display());
    }
}
