//! Events received on the events WebSocket.
//!
//! ```
//! use ari_proto::events::{Event, ResourceKind};
//! let frame = br#"{"type":"ChannelDtmfReceived","timestamp":"2026-11-26T11:14:38.299+0000",
//!   "application":"hello","digit":"5","duration_ms":120,
//!   "channel":{"id":"c1","name":"PJSIP/alice-1","state":"Up","protocol_id":"",
//!     "caller":{"name":"","number":""},"connected":{"name":"","number":""},"accountcode":"",
//!     "dialplan":{"context":"default","exten":"s","priority":1,"app_name":"","app_data":""},
//!     "creationtime":"2026-11-26T11:14:30.000+0000","language":"en"}}"#;
//! let event = Event::decode(frame)?;
//! let Event::ChannelDtmfReceived(dtmf) = &event else { unreachable!() };
//! assert_eq!(dtmf.digit, "5");
//! let r: Vec<_> = event.resources().iter().collect();
//! assert_eq!(r[0].kind, ResourceKind::Channel);
//! assert_eq!(r[0].id, "c1");
//! # Ok::<(), ari_proto::events::DecodeError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

pub use crate::generated::events::*;
use crate::models::{Bridge, Channel, DeviceState, Endpoint, LiveRecording, Playback};

/// Implemented by every event struct: its wire type and conversions from [`Event`].
pub trait EventType: Sized {
    /// The wire `type`.
    const TYPE: &'static str;
    /// Takes the struct out of the event, or gives the event back.
    #[allow(clippy::result_large_err)]
    fn from_event(event: Event) -> Result<Self, Event>;
    /// Borrows the struct from the event when it is of this type.
    fn from_ref(event: &Event) -> Option<&Self>;
    /// Wraps the struct in [`Event`].
    fn into_event(self) -> Event;
}

/// An event whose `type` this version does not know: the type name and the whole JSON.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UnknownEvent {
    /// The `type` field.
    pub type_name: String,
    /// The whole message.
    pub raw: serde_json::Value,
}

impl UnknownEvent {
    /// Builds an unknown event from its type name and JSON.
    pub fn new(type_name: impl Into<String>, raw: serde_json::Value) -> Self {
        UnknownEvent {
            type_name: type_name.into(),
            raw,
        }
    }
}

/// Why a frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a JSON object with a string `type`.
    Malformed {
        /// What the JSON parser said.
        error: String,
    },
    /// The JSON nests deeper than the allowed depth (see [`Event::decode_with_max_depth`]).
    TooDeep {
        /// The allowed depth.
        max: usize,
    },
    /// A known event type whose fields do not match its description (a required field missing
    /// or of the wrong type). The message is still available as an [`UnknownEvent`] through
    /// [`DecodeError::into_unknown`].
    Schema {
        /// The event type.
        type_name: String,
        /// What did not match.
        error: String,
        /// The message as JSON.
        raw: Box<serde_json::Value>,
    },
}

impl DecodeError {
    /// For a schema mismatch, the message as an [`UnknownEvent`] so it is not lost.
    pub fn into_unknown(self) -> Option<UnknownEvent> {
        match self {
            DecodeError::Schema { type_name, raw, .. } => Some(UnknownEvent {
                type_name,
                raw: *raw,
            }),
            DecodeError::Malformed { .. } | DecodeError::TooDeep { .. } => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed { error } => {
                write!(
                    f,
                    "event frame is not a JSON object with a \"type\": {error}"
                )
            }
            DecodeError::TooDeep { max } => write!(
                f,
                "event frame nests JSON deeper than {max} levels; refused unparsed"
            ),
            DecodeError::Schema {
                type_name, error, ..
            } => write!(
                f,
                "{type_name} event does not match its description: {error}"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

#[derive(serde::Deserialize)]
struct TypeTag<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
}

/// A frame's JSON text, as UTF-8 checked once (`&str`) or as bytes: what
/// `Event::decode_known` (generated) parses the event's struct from.
pub(crate) trait JsonInput: Copy {
    /// Parses the whole input as `T`.
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error>;
}

impl JsonInput for &str {
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self)
    }
}

impl JsonInput for &[u8] {
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self)
    }
}

/// Decodes a snapshot shared by `Arc` (an event's `channel`, `bridge`, …) straight into its
/// allocation: serde's own `Arc<T>` decodes a `Box<T>` and copies it into a new one.
pub(crate) fn decode_arc<'de, D, T>(de: D) -> Result<std::sync::Arc<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(de).map(std::sync::Arc::new)
}

/// [`decode_arc`] for an optional snapshot.
pub(crate) fn decode_option_arc<'de, D, T>(de: D) -> Result<Option<std::sync::Arc<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize<'de>>::deserialize(de).map(|o| o.map(std::sync::Arc::new))
}

/// The `"type"`.
const TYPE_KEY: &[u8] = b"\"type\"";

/// Where the text's only `"type"` starts; `None` when it has none, more than one, or any
/// backslash (an escape could spell another `type` key). A second `type` key needs a second
/// `"type"` or an escape somewhere in the text; one vectorised pass finds both: every `"type"`
/// has a `y` two bytes in, so looking at each `y` (a rare letter in ARI's JSON) finds every
/// `"type"`, and every backslash is a hit too.
fn sole_type_key(bytes: &[u8]) -> Option<usize> {
    let mut first = None;
    for i in memchr::memchr2_iter(b'\\', b'y', bytes) {
        if bytes.get(i) == Some(&b'\\') {
            return None;
        }
        let Some(start) = i.checked_sub(2) else {
            continue;
        };
        if bytes.get(start..start + TYPE_KEY.len()) == Some(TYPE_KEY) {
            if first.is_some() {
                return None;
            }
            first = Some(start);
        }
    }
    first
}

/// The top-level `type` of a frame, found without parsing; `None` when a quick look cannot be
/// sure of it, and the caller then takes the full path.
///
/// Sure means: the text holds no escape (`\`) and exactly one `"type"`, which is a key of the
/// outermost object (depth 1, outside strings: with no escapes every `"` opens or closes a
/// string) with a string value. If the text is valid JSON that key is its only top-level `type`,
/// so the full path would read the same value; if it is not, decoding the event's struct fails
/// and the caller takes the full path anyway. Only the bytes before the key are walked, and no
/// parse error is built (a partial serde pass ends on one: ~1,000 instructions per frame).
fn find_type_fast(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let first = sole_type_key(bytes)?;
    let after = first + TYPE_KEY.len();
    let mut depth = 0usize;
    let mut in_string = false;
    for &b in bytes.get(..first)? {
        match b {
            b'"' => in_string = !in_string,
            b'{' | b'[' if !in_string => depth += 1,
            b'}' | b']' if !in_string => depth = depth.checked_sub(1)?,
            _ => {}
        }
    }
    if in_string || depth != 1 {
        return None;
    }
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let rest = bytes.get(after..)?;
    let colon = rest.iter().position(|b| !is_ws(b))?;
    if rest.get(colon) != Some(&b':') {
        return None;
    }
    let value = colon + 1 + rest.get(colon + 1..)?.iter().position(|b| !is_ws(b))?;
    if rest.get(value) != Some(&b'"') {
        return None;
    }
    let len = memchr::memchr(b'"', rest.get(value + 1..)?)?;
    // Both ends are ASCII quotes: character boundaries.
    text.get(after + value + 1..after + value + 1 + len)
}

impl Event {
    /// Decodes one WebSocket text frame.
    ///
    /// Never panics: a type this version does not know becomes [`Event::Unknown`], malformed
    /// JSON is [`DecodeError::Malformed`], a known type with missing required fields is
    /// [`DecodeError::Schema`] (which keeps the JSON). The frame's UTF-8 is checked once, its
    /// `type` is read from the members before it (without allocating), and the frame is then
    /// decoded straight into the event's struct.
    pub fn decode(frame: &[u8]) -> Result<Event, DecodeError> {
        Event::refuse_non_object(frame)?;
        if let Ok(text) = std::str::from_utf8(frame) {
            if let Some(ev) = Event::decode_fast(text) {
                return Ok(ev);
            }
        }
        Event::decode_full(frame)
    }

    /// Decodes one WebSocket text frame whose UTF-8 was already checked (a WebSocket library
    /// validates every text frame): as [`Event::decode`] without checking it again.
    ///
    /// ```
    /// use ari_proto::Event;
    /// let text = r#"{"type":"ChannelUserevent","eventname":"ping","userevent":{},
    ///     "timestamp":"2026-12-05T22:32:45.355+0000","application":"app"}"#;
    /// let ev = Event::decode_str(text).unwrap();
    /// assert_eq!(ev, Event::decode(text.as_bytes()).unwrap());
    /// assert_eq!(ev.type_name(), "ChannelUserevent");
    /// ```
    pub fn decode_str(text: &str) -> Result<Event, DecodeError> {
        Event::refuse_non_object(text.as_bytes())?;
        if let Some(ev) = Event::decode_fast(text) {
            return Ok(ev);
        }
        Event::decode_full(text.as_bytes())
    }

    /// serde's derived structs also accept a JSON array (fields by position): `["X"]` would
    /// otherwise decode as an event of type `X`.
    fn refuse_non_object(frame: &[u8]) -> Result<(), DecodeError> {
        if frame
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            != Some(&b'{')
        {
            return Err(DecodeError::Malformed {
                error: "not a JSON object".into(),
            });
        }
        Ok(())
    }

    /// The fast path: an event of a known type that decodes. A decoded struct means the whole
    /// text is JSON without trailing characters, so the full path would have read the same
    /// `type` (it is the only top-level one) and decoded the same struct.
    fn decode_fast(text: &str) -> Option<Event> {
        let ty = find_type_fast(text)?;
        Event::decode_known(ty, text)?.ok()
    }

    /// The full path (unknown types, mismatches, malformed frames): the whole frame is read for
    /// its `type`, then decoded.
    #[cold]
    fn decode_full(frame: &[u8]) -> Result<Event, DecodeError> {
        let tag: TypeTag<'_> =
            serde_json::from_slice(frame).map_err(|e| DecodeError::Malformed {
                error: e.to_string(),
            })?;
        match Event::decode_known(&tag.ty, frame) {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let raw = serde_json::from_slice(frame).unwrap_or(serde_json::Value::Null);
                Err(DecodeError::Schema {
                    type_name: tag.ty.into_owned(),
                    error: e.to_string(),
                    raw: Box::new(raw),
                })
            }
            None => {
                let raw = serde_json::from_slice(frame).map_err(|e| DecodeError::Malformed {
                    error: e.to_string(),
                })?;
                Ok(Event::Unknown(UnknownEvent {
                    type_name: tag.ty.into_owned(),
                    raw,
                }))
            }
        }
    }

    /// Like [`Event::decode`], but first refuses (without parsing) a frame whose JSON nests
    /// deeper than `max_depth` objects/arrays. ARI events nest four levels at most; the
    /// session's default limit is 32. (`serde_json` itself stops at 128.)
    pub fn decode_with_max_depth(frame: &[u8], max_depth: usize) -> Result<Event, DecodeError> {
        if json_depth_exceeds(frame, max_depth) {
            return Err(DecodeError::TooDeep { max: max_depth });
        }
        Event::decode(frame)
    }

    /// Decodes a frame, turning a schema mismatch into [`Event::Unknown`] (so nothing is lost)
    /// and reporting whether that happened.
    pub fn decode_lenient(frame: &[u8]) -> Result<(Event, bool), DecodeError> {
        match Event::decode(frame) {
            Ok(e) => Ok((e, false)),
            Err(e @ DecodeError::Schema { .. }) => match e.into_unknown() {
                Some(u) => Ok((Event::Unknown(u), true)),
                None => Err(DecodeError::Malformed {
                    error: "unreachable".into(),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Encodes the event back to JSON (with its `type`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Borrows the event as type `T`.
    pub fn as_type<T: EventType>(&self) -> Option<&T> {
        T::from_ref(self)
    }

    /// Whether this event is the last one `resource` will ever get: `ChannelDestroyed` for its
    /// channel, `BridgeDestroyed` for its bridge, `PlaybackFinished` for its playback,
    /// `RecordingFinished`/`RecordingFailed` for its recording.
    pub fn is_final_for(&self, resource: ResourceRef<'_>) -> bool {
        match (self, resource.kind) {
            (Event::ChannelDestroyed(e), ResourceKind::Channel) => e.channel.id == resource.id,
            (Event::BridgeDestroyed(e), ResourceKind::Bridge) => e.bridge.id == resource.id,
            (Event::PlaybackFinished(e), ResourceKind::Playback) => e.playback.id == resource.id,
            (Event::RecordingFinished(e), ResourceKind::Recording) => {
                e.recording.name == resource.id
            }
            (Event::RecordingFailed(e), ResourceKind::Recording) => e.recording.name == resource.id,
            _ => false,
        }
    }

    /// The resources whose final event this is (see [`Event::is_final_for`]).
    pub fn ended_resource(&self) -> Option<ResourceRef<'_>> {
        match self {
            Event::ChannelDestroyed(e) => {
                Some(ResourceRef::new(ResourceKind::Channel, &e.channel.id))
            }
            Event::BridgeDestroyed(e) => Some(ResourceRef::new(ResourceKind::Bridge, &e.bridge.id)),
            Event::PlaybackFinished(e) => {
                Some(ResourceRef::new(ResourceKind::Playback, &e.playback.id))
            }
            Event::RecordingFinished(e) => {
                Some(ResourceRef::new(ResourceKind::Recording, &e.recording.name))
            }
            Event::RecordingFailed(e) => {
                Some(ResourceRef::new(ResourceKind::Recording, &e.recording.name))
            }
            _ => None,
        }
    }
}

/// Whether the JSON text nests objects/arrays deeper than `max` (strings are skipped; the
/// text is not validated otherwise). One pass, no allocation.
pub fn json_depth_exceeds(text: &[u8], max: usize) -> bool {
    // Each level needs its own `{` or `[`: with no more of them in the whole text (strings
    // included) than `max`, the depth cannot exceed it. A vectorised search (memchr) that
    // stops at the `max + 1`-th opening bracket; ARI events have a handful.
    if memchr::memchr2_iter(b'{', b'[', text)
        .take(max.saturating_add(1))
        .count()
        <= max
    {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                // Skip the string: jump to the next quote or backslash (an escape skips the
                // byte after the backslash). An unterminated string ends the scan.
                i += 1;
                loop {
                    let Some(rest) = text.get(i..) else {
                        return false;
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(j) if rest[j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j + 1;
                            break;
                        }
                        None => return false,
                    }
                }
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_tagged(s)
    }
}

#[derive(serde::Serialize)]
pub(crate) struct Tagged<'a, T> {
    #[serde(rename = "type")]
    pub(crate) ty: &'a str,
    #[serde(flatten)]
    pub(crate) inner: &'a T,
}

/// The kinds of resources events concern and subscriptions can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ResourceKind {
    /// A channel (`Channel.id`).
    Channel,
    /// A bridge (`Bridge.id`).
    Bridge,
    /// A playback (`Playback.id`).
    Playback,
    /// A live recording (`LiveRecording.name`).
    Recording,
    /// An endpoint (`technology/resource`).
    Endpoint,
    /// A device state (`DeviceState.name`).
    DeviceState,
}

impl ResourceKind {
    /// The prefix ARI uses in `eventSource` and `target_uri` (`channel`, `bridge`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Channel => "channel",
            ResourceKind::Bridge => "bridge",
            ResourceKind::Playback => "playback",
            ResourceKind::Recording => "recording",
            ResourceKind::Endpoint => "endpoint",
            ResourceKind::DeviceState => "deviceState",
        }
    }
}

/// A resource an event concerns: its kind and id.
///
/// For an endpoint, `id` is the resource name and `technology` its technology (`PJSIP`); for
/// every other kind `technology` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ResourceRef<'a> {
    /// Kind.
    pub kind: ResourceKind,
    /// Id (`Channel.id`, `Bridge.id`, `Playback.id`, `LiveRecording.name`, endpoint resource,
    /// `DeviceState.name`).
    pub id: &'a str,
    /// The endpoint's technology; empty for other kinds.
    pub technology: &'a str,
}

impl<'a> ResourceRef<'a> {
    /// A reference to a resource that is not an endpoint.
    pub fn new(kind: ResourceKind, id: &'a str) -> Self {
        ResourceRef {
            kind,
            id,
            technology: "",
        }
    }

    /// A reference to an endpoint.
    pub fn endpoint(technology: &'a str, resource: &'a str) -> Self {
        ResourceRef {
            kind: ResourceKind::Endpoint,
            id: resource,
            technology,
        }
    }
}

impl fmt::Display for ResourceRef<'_> {
    /// The form ARI uses for `eventSource`: `channel:ID`, `endpoint:PJSIP/alice`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ResourceKind::Endpoint {
            write!(f, "endpoint:{}/{}", self.technology, self.id)
        } else {
            write!(f, "{}:{}", self.kind.as_str(), self.id)
        }
    }
}

const MAX_RESOURCES: usize = 8;

/// The resources one event concerns (at most eight; no allocation).
#[derive(Debug, Clone, Copy)]
pub struct Resources<'a> {
    items: [Option<ResourceRef<'a>>; MAX_RESOURCES],
    len: usize,
}

impl<'a> Resources<'a> {
    pub(crate) fn new() -> Self {
        Resources {
            items: [None; MAX_RESOURCES],
            len: 0,
        }
    }

    fn push_ref(&mut self, r: ResourceRef<'a>) {
        if r.id.is_empty() || self.items[..self.len].contains(&Some(r)) {
            return;
        }
        if self.len < MAX_RESOURCES {
            self.items[self.len] = Some(r);
            self.len += 1;
        }
    }

    fn push(&mut self, kind: ResourceKind, id: &'a str) {
        self.push_ref(ResourceRef::new(kind, id));
    }

    fn target(&mut self, uri: &'a str) {
        if let Some((kind, id)) = uri.split_once(':') {
            match kind {
                "channel" => self.push(ResourceKind::Channel, id),
                "bridge" => self.push(ResourceKind::Bridge, id),
                _ => {}
            }
        }
    }

    pub(crate) fn channel(&mut self, c: &'a Channel) {
        self.push(ResourceKind::Channel, &c.id);
    }

    pub(crate) fn bridge(&mut self, b: &'a Bridge) {
        self.push(ResourceKind::Bridge, &b.id);
    }

    pub(crate) fn playback(&mut self, p: &'a Playback) {
        self.push(ResourceKind::Playback, &p.id);
        self.target(&p.target_uri);
    }

    pub(crate) fn recording(&mut self, r: &'a LiveRecording) {
        self.push(ResourceKind::Recording, &r.name);
        self.target(&r.target_uri);
    }

    pub(crate) fn endpoint(&mut self, e: &'a Endpoint) {
        self.push_ref(ResourceRef::endpoint(&e.technology, &e.resource));
    }

    pub(crate) fn device_state(&mut self, d: &'a DeviceState) {
        self.push(ResourceKind::DeviceState, &d.name);
    }

    pub(crate) fn raw(&mut self, raw: &'a serde_json::Value) {
        let id = |field: &str, key: &str| {
            raw.get(field)
                .and_then(|v| v.get(key))
                .and_then(|v| v.as_str())
        };
        if let Some(i) = id("channel", "id") {
            self.push(ResourceKind::Channel, i);
        }
        if let Some(i) = id("bridge", "id") {
            self.push(ResourceKind::Bridge, i);
        }
        if let Some(i) = id("playback", "id") {
            self.push(ResourceKind::Playback, i);
        }
        if let Some(i) = id("recording", "name") {
            self.push(ResourceKind::Recording, i);
        }
    }

    /// Iterates over the references.
    pub fn iter(&self) -> impl Iterator<Item = ResourceRef<'a>> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }

    /// How many resources.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> IntoIterator for Resources<'a> {
    type Item = ResourceRef<'a>;
    type IntoIter =
        std::iter::Flatten<std::array::IntoIter<Option<ResourceRef<'a>>, MAX_RESOURCES>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().flatten()
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use std::mem::size_of;

    /// Every move of an `Event` (into its `Arc`, through queues) copies its largest variant:
    /// resource snapshots are `Arc`s and only the two transfer events that carry several
    /// resources by value are boxed, so an `Event` stays about the size of its common events.
    #[test]
    fn an_event_is_as_small_as_its_common_variants() {
        let common = size_of::<StasisStart>().max(size_of::<ChannelVarset>());
        assert!(
            size_of::<Event>() <= common + 128,
            "Event is {} bytes, its common variants {common}",
            size_of::<Event>()
        );
        for (name, size) in [
            ("Dial", size_of::<Dial>()),
            ("BridgeBlindTransfer", size_of::<BridgeBlindTransfer>()),
            ("ChannelUserevent", size_of::<ChannelUserevent>()),
        ] {
            assert!(
                size < size_of::<Event>(),
                "{name} ({size} bytes) must fit in an Event unboxed"
            );
        }
        assert!(size_of::<BridgeAttendedTransfer>() > size_of::<Event>());
        assert!(size_of::<ChannelTransfer>() > size_of::<Event>());
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::{json_depth_exceeds, sole_type_key, Event};
    use std::path::PathBuf;

    /// The byte-by-byte depth scan the memchr one replaced.
    fn depth_exceeds_reference(text: &[u8], max: usize) -> bool {
        let mut depth = 0usize;
        let (mut in_string, mut escaped) = (false, false);
        for &b in text {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    /// The fuzz corpus of event frames, the recorded fixtures' frames, and hand-made edge cases.
    fn frames() -> Vec<Vec<u8>> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out: Vec<Vec<u8>> = Vec::new();
        if let Ok(dir) = std::fs::read_dir(root.join("fuzz/corpus/event_decode")) {
            for entry in dir.flatten() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    out.push(bytes);
                }
            }
        }
        for version in ["asterisk-20", "asterisk-master"] {
            let path = root.join("fixtures").join(version).join("events.jsonl");
            for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if let Some(f) = v.get("frame").and_then(|f| f.as_str()) {
                        out.push(f.as_bytes().to_vec());
                    }
                }
            }
        }
        let dtmf = r#"{"type":"ChannelDtmfReceived","timestamp":"2026-11-26T11:14:38.299+0000","application":"a","digit":"5","duration_ms":1,"channel":{"id":"c1","name":"n","state":"Up","protocol_id":"","caller":{"name":"","number":""},"connected":{"name":"","number":""},"accountcode":"","dialplan":{"context":"d","exten":"s","priority":1,"app_name":"","app_data":""},"creationtime":"2026-11-26T11:14:30.000+0000","language":"en"}}"#;
        let tail = &dtmf[r#"{"type":"ChannelDtmfReceived""#.len()..];
        for edge in [
            dtmf.to_owned(),
            format!(r#"{{"type":"ChannelDtmfReceived","type":"Other"{tail}"#),
            format!(r#"{{"type":"ChannelDtmfReceived","typ\u0065":"Other"{tail}"#),
            format!(r#"{{"typ\u0065":"ChannelDtmfReceived"{tail}"#),
            format!("{dtmf} x"),
            format!("{dtmf}}}"),
            dtmf[..dtmf.len() - 1].to_owned(),
            format!(r#"{{"type":"Nope"{tail}"#),
            format!(r#"{{"type":5{tail}"#),
            r#"{"type":"ChannelDtmfReceived"}"#.to_owned(),
            r#"{"type":"ChannelDtmfReceived","#.to_owned(),
            r#"["ChannelDtmfReceived"]"#.to_owned(),
            r#"{}"#.to_owned(),
            format!(r#"{{"x":1e400,"type":"ChannelDtmfReceived"{tail}"#),
            // The one `"type"` nested, not top-level: the full path finds no type.
            format!(r#"{{"wrap":{{"type":"ChannelDtmfReceived"}}{tail}"#),
            format!(r#"{{"wrap":[{{"type":"ChannelDtmfReceived"}}]{tail}"#),
            // Brackets and braces inside strings, containers before the key, spaces around it.
            format!(r#"{{"a":"}}{{][","b":[1,{{"c":[]}}],"type":"ChannelDtmfReceived"{tail}"#),
            format!("{{\"type\" :\n \"ChannelDtmfReceived\"{tail}"),
            format!(r#"{{"a":"type","type":"ChannelDtmfReceived"{tail}"#),
            format!(r#"{{"a":"x"type":"ChannelDtmfReceived"{tail}"#),
            format!(r#"{{"type":"ChannelDtmfReceived{tail}"#),
            format!(r#"{{}},"type":"ChannelDtmfReceived"{tail}"#),
            format!(r#"{{"type":"ChannelDtmfReceived" "x"{tail}"#),
        ] {
            out.push(edge.into_bytes());
        }
        let mut bad = dtmf.as_bytes().to_vec();
        bad[r#"{"type":"ChannelDtmfReceived","timestamp":"2026-11-26T11:14:38.299+0000","application":""#.len()] = 0xff;
        out.push(bad);
        let mut extra = dtmf.as_bytes().to_vec();
        extra.pop();
        extra.extend_from_slice(b",\"zz\":\"\xff\"}");
        out.push(extra);
        out
    }

    /// The fast path answers exactly as the full path (the former `decode`) does, on every frame.
    #[test]
    fn fast_decode_agrees_with_the_full_path() {
        let frames = frames();
        assert!(frames.len() > 100, "{} frames", frames.len());
        let mut fast = 0;
        for f in &frames {
            let full = if f
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                == Some(&b'{')
            {
                Event::decode_full(f)
            } else {
                Event::decode(f)
            };
            assert_eq!(Event::decode(f), full, "{}", String::from_utf8_lossy(f));
            assert_eq!(
                sole_type_key(f),
                type_key_reference(f),
                "{}",
                String::from_utf8_lossy(f)
            );
            if let Ok(text) = std::str::from_utf8(f) {
                assert_eq!(Event::decode_str(text), full, "{text}");
            }
            fast += usize::from(full.is_ok());
            for max in [0, 1, 2, 3, 4, 8, 32] {
                assert_eq!(
                    json_depth_exceeds(f, max),
                    depth_exceeds_reference(f, max),
                    "max {max}: {}",
                    String::from_utf8_lossy(f)
                );
            }
        }
        assert!(fast > 50);
    }

    /// The former key search of [`find_type_fast`] (two searches for `"type"`, one for a
    /// backslash), which [`sole_type_key`]'s single pass must agree with.
    fn type_key_reference(bytes: &[u8]) -> Option<usize> {
        let finder = memchr::memmem::Finder::new(b"\"type\"");
        let first = finder.find(bytes)?;
        if finder.find(bytes.get(first + 1..)?).is_some() || memchr::memchr(b'\\', bytes).is_some()
        {
            return None;
        }
        Some(first)
    }

    /// What [`mutated_frames_decode_as_the_full_path_does`] inserts or writes into frames.
    const PIECES: &[&[u8]] = &[
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\\",
        b" ",
        b"x",
        b"\"type\"",
        b"\"type\":\"StasisStart\",",
        b"{\"type\":\"ChannelVarset\"}",
        b"\"a\":{\"type\":\"Dial\"},",
        b"{\"a\":",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4_000))]

        /// The fast path (the `type` read from the members before it) decodes every frame as
        /// the full path does: recorded frames with a few bytes replaced, or JSON-significant
        /// pieces inserted (quotes, braces, brackets, colons, commas, backslashes, `type` keys
        /// and whole objects carrying one), so the `type` key lands in nested objects, in
        /// strings, after broken members, twice, or is renamed while another one stays.
        #[test]
        fn mutated_frames_decode_as_the_full_path_does(
            pick in proptest::prelude::any::<proptest::sample::Index>(),
            edits in proptest::collection::vec(
                (
                    proptest::prelude::any::<proptest::sample::Index>(),
                    proptest::sample::select(PIECES),
                    proptest::prelude::any::<bool>(),
                ),
                1..4,
            ),
        ) {
            static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
            let frames = FRAMES.get_or_init(frames);
            let mut f = frames[pick.index(frames.len())].clone();
            for (at, piece, insert) in edits {
                let i = at.index(f.len() + 1);
                if insert || i >= f.len() {
                    f.splice(i..i, piece.iter().copied());
                } else {
                    // Replaced: one byte by the piece's first.
                    f[i] = piece[0];
                }
            }
            // `decode` refuses a frame not starting with `{` before either path runs.
            if f.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                let full = Event::decode_full(&f);
                proptest::prop_assert_eq!(
                    sole_type_key(&f),
                    type_key_reference(&f),
                    "{}",
                    String::from_utf8_lossy(&f)
                );
                if let Ok(text) = std::str::from_utf8(&f) {
                    proptest::prop_assert_eq!(&Event::decode_str(text), &full, "{}", text);
                }
                proptest::prop_assert_eq!(
                    Event::decode(&f),
                    full,
                    "{}",
                    String::from_utf8_lossy(&f)
                );
            }
        }
    }
}
