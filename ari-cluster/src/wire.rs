//! What travels on NATS: subjects, headers and payloads shared by the proxy and the client.
//!
//! | subject | who publishes | payload |
//! |---|---|---|
//! | `{p}.announce` | each proxy, every `interval_ms` and when pinged | [`Announce`] JSON |
//! | `{p}.ping` | a client that wants announcements now | empty |
//! | `{p}.rest.{node}` (queue group `ari-proxy`) | a client, request/reply, to one node (one of its proxies, when a rolling deploy runs two) | Asterisk's `RESTRequest` → `RESTResponse` |
//! | `{p}.restapp.{app}` (queue group `ari-proxy`) | a client of `app`, request/reply, to any one node whose proxy serves `app` | the same |
//! | `{p}.rest` (queue group `ari-proxy`) | a client serving no application, request/reply, to any one node | the same |
//! | `{p}.claim.{app}` (queue group `{app}`) | a proxy, request/reply: who takes this new call? | the `StasisStart` frame (none, with [`TOO_LARGE_HEADER`], when it does not fit) → the instance id (or an empty answer with [`DECLINED_HEADER`]) |
//! | `{p}.inst.{instance}` | a proxy: events of resources the instance owns | a batch of event frames as Asterisk sent them (see below) |
//! | `{p}.event.{app}.{node}` | a proxy: events no instance owns | a batch of event frames as Asterisk sent them |
//! | `{p}.unclaimed.{app}.{node}` | a proxy: a new call no instance took (none running, none answered) | a batch holding its `StasisStart` frame |
//! | `{p}.health.{node}` | request/reply to one proxy | [`ProxyStats`] JSON |
//! | `{p}.owned` | a starting proxy, request with many replies: which of my node's resources do you own? | empty → the resources (see [`Subjects::owned`]) |
//!
//! Node ids (Asterisk's entity id, `02:fc:00:00:00:01`) and instance ids are made subject-safe
//! with [`token`]. `{p}` is the prefix, `ari` by default.
//!
//! ## Event batches
//!
//! The proxy groups the frames it has read from Asterisk and not yet published by subject,
//! and publishes each group as one NATS message with the header [`BATCH_HEADER`] (the number
//! of frames) and [`NODE_HEADER`]. Its payload is the frames in the order Asterisk sent them,
//! each as one record (integers big-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 4 | length of the frame |
//! | 2 | length of the resources (the [`RESOURCES_HEADER`] format) |
//! | 2 | length of the final resources (the [`FINAL_HEADER`] format) |
//! | … | the resources, the final resources, then the frame, byte for byte as received |
//!
//! A batch holds at most [`MAX_BATCH_FRAMES`] frames and about [`MAX_BATCH_BYTES`] bytes (a
//! larger frame travels alone), and never more than the NATS server's `max_payload` (a frame
//! larger than that is not published: [`ProxyStats::events_too_large`]); it is published as soon as the proxy has nothing more read, so
//! batching adds no wait. A message without [`BATCH_HEADER`] is one frame, its resources in
//! the headers. [`BatchWriter`] writes batches, [`decode_batch`] reads them.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Header naming the node (Asterisk entity id) a reply or an event comes from.
pub const NODE_HEADER: &str = "Ari-Node";
/// Header naming the application instance a REST request comes from; the proxy makes the
/// resources it creates belong to that instance.
pub const INSTANCE_HEADER: &str = "Ari-Instance";
/// Header on a `RESTResponse` whose `message_body` is base64 (a body that is not UTF-8, such as
/// a stored recording's file).
pub const BODY_ENCODING_HEADER: &str = "Ari-Body-Encoding";
/// Header on an event listing the resources it concerns (`c:ID b:ID p:ID r:ID`, space
/// separated), so an instance learns which node owns them without decoding the frame.
pub const RESOURCES_HEADER: &str = "Ari-Resources";
/// Header on an event listing the resources it ends (same format as [`RESOURCES_HEADER`]).
pub const FINAL_HEADER: &str = "Ari-Final";
/// Header on an event message whose payload is a batch of frames: their number (see the
/// module's documentation).
pub const BATCH_HEADER: &str = "Ari-Batch";

/// Header of an event message: its number among the messages the proxy published on that
/// subject (from 1), so that a receiver sees a gap (messages lost: published while NATS was
/// down, or dropped by NATS). A receiver that sees a smaller number starts counting again
/// (the proxy restarted).
pub const SEQ_HEADER: &str = "Ari-Seq";

/// Header of a proxy's request on an instance's subject asking whether it is alive: the
/// instance answers it (an empty reply) and delivers nothing. A proxy that finds no
/// instance listening there three times in a row, over 2 s at least, releases that instance's resources (their
/// events go to `{p}.event.{app}.{node}` from then on).
pub const PROBE_HEADER: &str = "Ari-Probe";
/// Header of a proxy's message saying that its Asterisk restarted (its value: the new
/// `status.startup_time`): every channel, bridge, playback and recording the node had is gone
/// without an event. Published, before any event of the new run, on each instance's subject
/// it sent events to (the payload: the resources that instance owned on the node, in the
/// [`RESOURCES_HEADER`] format) and on `{p}.event.{app}.{node}` (empty payload). The
/// announcements carry the startup time too ([`Announce::startup_time`]), for an instance
/// that missed the message.
pub const RESTARTED_HEADER: &str = "Ari-Restarted";
/// Header of a starting proxy's question on `{p}.owned` ([`Subjects::owned`]): Asterisk's
/// `status.startup_time` as the proxy read it. An instance that knew another (older) one for
/// the node learns there that Asterisk restarted too (ends the node's resources, answers
/// nothing for them).
pub const STARTUP_HEADER: &str = "Ari-Startup";
/// Header of a proxy's message on an instance's subject saying that it took one of that
/// instance's creation requests sent to any node (`{p}.rest` or `{p}.restapp.{app}`), before it runs it: the
/// payload names the resources the request creates (the [`RESOURCES_HEADER`] format), with
/// [`NODE_HEADER`]. The instance then knows their node even if neither the answer nor an
/// event of theirs ever comes (the proxy or its Asterisk gone meanwhile), so their waits end
/// when that node's Asterisk restarts or the node is lost. Nothing is delivered.
pub const CREATING_HEADER: &str = "Ari-Creating";
/// Header of an instance's answer to a new call's offer (`{p}.claim.{app}`) that declines it
/// (its value: the instance id; the payload is empty): the instance stopped taking calls
/// ([`Cluster::stop_taking_calls`](crate::Cluster::stop_taking_calls)) and the offer was
/// already on its way. The proxy offers the call again at once.
pub const DECLINED_HEADER: &str = "Ari-Declined";
/// Header of a new call's offer (`{p}.claim.{app}`) sent without its `StasisStart` frame
/// because the frame is larger than the NATS server's `max_payload` allows (its value: the
/// frame's size in bytes). The call is offered and taken as any other; the frame is not
/// published ([`ProxyStats::events_too_large`]), so the instance that took the call sees a
/// lost event message instead of the `StasisStart`, then the call's later events.
pub const TOO_LARGE_HEADER: &str = "Ari-Too-Large";
/// Header of a proxy's 404 answer to a request of an instance on a channel that was handed
/// over to another instance after this one was found gone
/// ([`ProxyConfig::hand_over_calls`](crate::ProxyConfig::hand_over_calls)); its value: the
/// channel id. The instance ends its waits on the channel (it serves the call no more).
pub const HANDED_OVER_HEADER: &str = "Ari-Handed-Over";
/// Most frames a proxy puts in one batch.
pub const MAX_BATCH_FRAMES: usize = 256;
/// Bytes past which a proxy publishes its batch (a batch is at most this plus one record).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;
/// The queue group of the proxies on `{p}.rest` and `{p}.restapp.{app}`.
pub const PROXY_QUEUE: &str = "ari-proxy";

/// A subject-safe token: `.`, `*`, `>` and whitespace become `_`.
pub fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The subjects under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix` (`ari` by default).
    pub fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.trim_end_matches('.').to_string(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{p}.announce`.
    pub fn announce(&self) -> String {
        format!("{}.announce", self.prefix)
    }

    /// `{p}.ping`.
    pub fn ping(&self) -> String {
        format!("{}.ping", self.prefix)
    }

    /// `{p}.rest.{node}`.
    pub fn rest_node(&self, node: &str) -> String {
        format!("{}.rest.{}", self.prefix, token(node))
    }

    /// `{p}.rest` (queue group [`PROXY_QUEUE`]).
    pub fn rest_any(&self) -> String {
        format!("{}.rest", self.prefix)
    }

    /// `{p}.restapp.{app}` (queue group [`PROXY_QUEUE`]): creations and lists of an
    /// application's instances, served by the proxies of that application only (so that two
    /// applications sharing one NATS do not run each other's originates on their nodes).
    pub fn rest_app(&self, app: &str) -> String {
        format!("{}.restapp.{}", self.prefix, token(app))
    }

    /// The subjects of the REST queue group a proxy of `apps` serves: [`Subjects::rest_any`]
    /// and one [`Subjects::rest_app`] per application.
    pub fn rest_queue<S: AsRef<str>>(&self, apps: &[S]) -> Vec<String> {
        let mut v = vec![self.rest_any()];
        v.extend(apps.iter().map(|a| self.rest_app(a.as_ref())));
        v
    }

    /// `{p}.claim.{app}` (queue group `{app}`).
    pub fn claim(&self, app: &str) -> String {
        format!("{}.claim.{}", self.prefix, token(app))
    }

    /// `{p}.inst.{instance}`.
    pub fn instance(&self, instance: &str) -> String {
        format!("{}.inst.{}", self.prefix, token(instance))
    }

    /// `{p}.event.{app}.{node}`.
    pub fn event(&self, app: &str, node: &str) -> String {
        format!("{}.event.{}.{}", self.prefix, token(app), token(node))
    }

    /// `{p}.event.{app}.*`: the unowned events of every node.
    pub fn event_any_node(&self, app: &str) -> String {
        format!("{}.event.{}.*", self.prefix, token(app))
    }

    /// `{p}.unclaimed.{app}.{node}`: new calls no instance took (instances do not subscribe:
    /// a call must not be handled twice).
    pub fn unclaimed(&self, app: &str, node: &str) -> String {
        format!("{}.unclaimed.{}.{}", self.prefix, token(app), token(node))
    }

    /// `{p}.owned`: a proxy starting asks every instance which of its node's resources it
    /// owns (request with [`NODE_HEADER`], its node; many replies). Each instance answers with
    /// its id ([`INSTANCE_HEADER`]) and, as payload, the node's resources it owns (their events
    /// came on its subject, or it created them) in the [`RESOURCES_HEADER`] format. The proxy
    /// gives them back to their owners before it registers its applications, so that a
    /// restarted proxy keeps sending each call's events to its instance only.
    pub fn owned(&self) -> String {
        format!("{}.owned", self.prefix)
    }

    /// `{p}.health.{node}`.
    pub fn health(&self, node: &str) -> String {
        format!("{}.health.{}", self.prefix, token(node))
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new("ari")
    }
}

/// A proxy's announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Announce {
    /// The node: Asterisk's entity id.
    pub node: String,
    /// The applications the proxy registered.
    pub apps: Vec<String>,
    /// Asterisk's version (`system.version` of `GET asterisk/info`).
    pub asterisk_version: String,
    /// The proxy's version.
    pub proxy_version: String,
    /// How often the proxy announces itself; a node silent for three intervals is down.
    pub interval_ms: u64,
    /// Whether the proxy's events WebSocket to Asterisk is up.
    pub connected: bool,
    /// `false` in the last announcement of a proxy that stops: the node is down at once.
    pub up: bool,
    /// Asterisk's `status.startup_time` as the proxy last read it (empty if unknown): a new
    /// one means Asterisk restarted and the node's resources are gone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub startup_time: String,
}

/// Asterisk's `RESTRequest` envelope (REST over the events WebSocket), the payload of the
/// REST subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RestRequest {
    /// Always `RESTRequest`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Correlates the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Correlates the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `GET`, `POST`, `PUT`, `DELETE`.
    pub method: String,
    /// Path below `/ari/`, without leading slash; may carry `?a=b`.
    pub uri: String,
    /// More query parameters (unencoded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_strings: Vec<QueryString>,
    /// Body content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Body text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
}

/// One query parameter of a [`RestRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryString {
    /// Name.
    pub name: String,
    /// Value (unencoded).
    pub value: String,
}

/// Asterisk's `RESTResponse` envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RestResponse {
    /// Always `RESTResponse`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// HTTP status.
    pub status_code: u16,
    /// HTTP reason phrase.
    #[serde(default)]
    pub reason_phrase: String,
    /// The request's URI.
    #[serde(default)]
    pub uri: String,
    /// Body content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Body text (base64 with the [`BODY_ENCODING_HEADER`] header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
}

impl RestResponse {
    /// A response made by the proxy itself (Asterisk unreachable, a bad envelope).
    pub fn local(status: u16, uri: &str, message: &str) -> RestResponse {
        RestResponse {
            kind: "RESTResponse".into(),
            status_code: status,
            reason_phrase: http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .to_string(),
            uri: uri.to_string(),
            content_type: Some("application/json".into()),
            message_body: Some(serde_json::json!({ "message": message }).to_string()),
            ..RestResponse::default()
        }
    }
}

/// A proxy's counters, answered on `{p}.health.{node}` and carried by nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProxyStats {
    /// The node.
    pub node: String,
    /// Whether the events WebSocket to Asterisk is up.
    pub connected: bool,
    /// Event frames received from Asterisk.
    pub events_in: u64,
    /// Event frames published (one per owning instance, or one unowned).
    pub events_out: u64,
    /// NATS messages those frames travelled in (batches: see [`BatchWriter`]).
    #[serde(default)]
    pub event_messages: u64,
    /// Event frames that waited for a new call's offer to be answered: the `StasisStart`
    /// and the frames after it naming its resources (the other calls' frames do not wait).
    #[serde(default)]
    pub events_held: u64,
    /// Event frames dropped because the proxy's queue was full.
    pub events_dropped: u64,
    /// Frames that did not decode (still published, unowned).
    pub undecodable: u64,
    /// New calls taken by an instance (handed-over calls included: see
    /// [`ProxyStats::calls_handed_over`]).
    pub calls_claimed: u64,
    /// New calls no instance took (no instance running, or none answered in time): published
    /// on `{p}.unclaimed.{app}.{node}`, which instances do not read.
    pub calls_unclaimed: u64,
    /// Offers of a new call made again because no instance was subscribed (NATS answered
    /// "no responders": the instances resubscribing after a NATS reconnect, or starting);
    /// each call is offered again for up to `claim_timeout × claim_attempts` before it is
    /// unclaimed.
    #[serde(default)]
    pub claims_retried: u64,
    /// Times the proxy found that Asterisk restarted (a new `status.startup_time` after its
    /// events connection came back): the instances were told its resources are gone
    /// ([`RESTARTED_HEADER`]).
    #[serde(default)]
    pub asterisk_restarts: u64,
    /// REST requests served.
    pub rest_requests: u64,
    /// REST requests refused because too many were in flight (answered 503).
    pub rest_refused: u64,
    /// REST requests that failed to reach Asterisk (answered 502/504).
    pub rest_failed: u64,
    /// REST requests sent to Asterisk as `RESTRequest` frames on the events WebSocket (the
    /// others went over HTTP: an Asterisk without REST over WebSocket, a recording's file,
    /// the WebSocket reconnecting).
    #[serde(default)]
    pub rest_over_websocket: u64,
    /// NATS publishes that failed.
    pub publish_errors: u64,
    /// Instances found gone (nothing listening on their subject, three probes in a row over
    /// 2 s at least)
    /// while they owned resources of this node.
    #[serde(default)]
    pub instances_lost: u64,
    /// Resources released because their owner was found gone: their later events are
    /// published unowned (`{p}.event.{app}.{node}`, which every instance reads) instead of
    /// to nobody.
    #[serde(default)]
    pub resources_released: u64,
    /// Event frames published to an instance after the last probe it answered, when it was
    /// then found gone: lost with it (nobody listened; some may have arrived before it
    /// died). Counted when the instance is found gone.
    #[serde(default)]
    pub events_to_lost_instances: u64,
    /// Resources given back to their owners at the proxy's start (their instances answered
    /// [`Subjects::owned`]): a restarted proxy's table of owners.
    #[serde(default)]
    pub resources_recovered: u64,
    /// Applications another connection took from this proxy (Asterisk's
    /// `ApplicationReplaced`: a second proxy started for the same Asterisk, as in a rolling
    /// deploy). Not published (it concerns the proxy's connection, not the application); this
    /// proxy receives no more events for that application, the other one does.
    #[serde(default)]
    pub apps_replaced: u64,
    /// REST answers larger than the NATS server's `max_payload` (1 MB by default: a
    /// recording's file, a long list): answered 502 saying so instead (they could not be
    /// published, and the request would have waited for its timeout).
    #[serde(default)]
    pub rest_too_large: u64,
    /// Event frames not published because they are larger than the NATS server's
    /// `max_payload` (1 MB by default; a channel with a huge variable, a large user event),
    /// one per subject the frame was for. Each is dropped alone (the frames around it are
    /// published), with a warning naming its type and size; the instance it was for sees it
    /// as a lost event message (a gap in [`SEQ_HEADER`]'s numbering). Raise `max_payload` in
    /// nats-server's configuration to have them published.
    #[serde(default)]
    pub events_too_large: u64,
    /// Calls of instances found gone offered again to the other instances
    /// ([`ProxyConfig::hand_over_calls`](crate::ProxyConfig::hand_over_calls)): channels still in
    /// the application, each with a `StasisStart` made from its current state (counted in
    /// [`ProxyStats::events_in`] too), offered as a new call is.
    #[serde(default)]
    pub calls_handed_over: u64,
    /// Among [`ProxyStats::calls_handed_over`], calls found at the proxy's start in one of its
    /// applications with no instance claiming them, still unclaimed when asked again after
    /// the time a gone instance is given (at least 2 s): their instance died while the node
    /// had no proxy (or no instance ever took them).
    #[serde(default)]
    pub unowned_calls_handed_over: u64,
    /// Bridges of a gone instance (or with no owner, at the proxy's start) given to the
    /// instance that took a handed-over call in them: their later events go to it alone
    /// instead of to every instance.
    #[serde(default)]
    pub bridges_handed_over: u64,
    /// REST requests on a handed-over channel from the instance it was taken from (back after
    /// it was found gone: a NATS partition), answered 404 so that two instances never control
    /// one call.
    #[serde(default)]
    pub rest_handed_over: u64,
    /// Resources with an owning instance now.
    pub owned_resources: u64,
    /// Ownerships not recorded because the table was full.
    pub ownership_refused: u64,
}

/// A resource reference in the [`RESOURCES_HEADER`] format: `c:ID`, `b:ID`, `p:ID`, `r:ID`.
pub(crate) fn kind_letter(kind: ari_proto::events::ResourceKind) -> Option<char> {
    use ari_proto::events::ResourceKind as K;
    match kind {
        K::Channel => Some('c'),
        K::Bridge => Some('b'),
        K::Playback => Some('p'),
        K::Recording => Some('r'),
        _ => None,
    }
}

/// The kind of a resource letter of the [`RESOURCES_HEADER`] format.
pub(crate) fn kind_of_letter(letter: &str) -> Option<ari_proto::events::ResourceKind> {
    use ari_proto::events::ResourceKind as K;
    match letter {
        "c" => Some(K::Channel),
        "b" => Some(K::Bridge),
        "p" => Some(K::Playback),
        "r" => Some(K::Recording),
        _ => None,
    }
}

/// Bytes of a record's lengths.
const RECORD_HEAD: usize = 8;

/// Writes an event batch (see the module's documentation).
#[derive(Debug, Default)]
pub struct BatchWriter {
    buf: BytesMut,
    frames: usize,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> BatchWriter {
        BatchWriter::default()
    }

    /// Appends one frame with the resources it concerns and those it ends (both in the
    /// [`RESOURCES_HEADER`] format). Refused (nothing appended) when a length does not fit its
    /// field: the frame then travels alone, its resources in headers.
    pub fn push(&mut self, frame: &[u8], resources: &str, finals: &str) -> Result<(), BatchError> {
        let (Ok(f), Ok(r), Ok(x)) = (
            u32::try_from(frame.len()),
            u16::try_from(resources.len()),
            u16::try_from(finals.len()),
        ) else {
            return Err(BatchError::TooLarge);
        };
        self.buf
            .reserve(RECORD_HEAD + resources.len() + finals.len() + frame.len());
        self.buf.put_u32(f);
        self.buf.put_u16(r);
        self.buf.put_u16(x);
        self.buf.put_slice(resources.as_bytes());
        self.buf.put_slice(finals.as_bytes());
        self.buf.put_slice(frame);
        self.frames += 1;
        Ok(())
    }

    /// Bytes the record of a frame with these lengths takes in a batch.
    pub(crate) fn record_bytes(frame: usize, resources: usize, finals: usize) -> usize {
        RECORD_HEAD
            .saturating_add(resources)
            .saturating_add(finals)
            .saturating_add(frame)
    }

    /// Frames in the batch.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Bytes of the batch so far.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Whether the batch should be published before more is added ([`MAX_BATCH_FRAMES`],
    /// [`MAX_BATCH_BYTES`]).
    pub fn is_full(&self) -> bool {
        self.frames >= MAX_BATCH_FRAMES || self.buf.len() >= MAX_BATCH_BYTES
    }

    /// Takes the batch (its number of frames and payload), leaving this one empty.
    pub fn take(&mut self) -> (usize, Bytes) {
        let frames = std::mem::take(&mut self.frames);
        (frames, self.buf.split().freeze())
    }
}

/// One frame of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchRecord<'a> {
    /// The resources the frame concerns ([`RESOURCES_HEADER`] format).
    pub resources: &'a str,
    /// The resources it ends ([`FINAL_HEADER`] format).
    pub finals: &'a str,
    /// The frame as Asterisk sent it (a slice of the payload, not a copy).
    pub frame: Bytes,
}

/// Why a batch did not decode (or a frame did not fit one).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// The [`BATCH_HEADER`] is not a number.
    BadCount,
    /// The payload ends inside a record (at this offset).
    Truncated {
        /// Offset of the record.
        at: usize,
    },
    /// A record's resources are not UTF-8 (the record at this offset).
    NotUtf8 {
        /// Offset of the record.
        at: usize,
    },
    /// The payload holds another number of frames than its header says.
    CountMismatch {
        /// Frames the header announces.
        declared: usize,
        /// Frames found (counting stops past the announced number).
        found: usize,
    },
    /// A frame or its resources are too long for a record (writing only).
    TooLarge,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::BadCount => {
                write!(f, "event batch: the {BATCH_HEADER} header is not a number")
            }
            BatchError::Truncated { at } => {
                write!(
                    f,
                    "event batch: the payload ends inside the record at byte {at}"
                )
            }
            BatchError::NotUtf8 { at } => {
                write!(
                    f,
                    "event batch: the resources of the record at byte {at} are not UTF-8"
                )
            }
            BatchError::CountMismatch { declared, found } => write!(
                f,
                "event batch: {BATCH_HEADER} announces {declared} frames, the payload holds {found}"
            ),
            BatchError::TooLarge => {
                write!(
                    f,
                    "event batch: a frame or its resource list is too long for a record"
                )
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// Reads a batch: `count` is the value of its [`BATCH_HEADER`]. The whole payload is checked
/// before anything is returned, so a malformed batch yields no frame at all.
pub fn decode_batch<'a>(
    count: &str,
    payload: &'a Bytes,
) -> Result<Vec<BatchRecord<'a>>, BatchError> {
    let declared: usize = count.trim().parse().map_err(|_| BatchError::BadCount)?;
    // Every record takes at least its head: a count the payload cannot hold is refused before
    // anything is allocated for it.
    if declared > payload.len() / RECORD_HEAD {
        return Err(BatchError::CountMismatch {
            declared,
            found: payload.len() / RECORD_HEAD,
        });
    }
    let mut out = Vec::with_capacity(declared);
    let mut at = 0;
    while at < payload.len() {
        if out.len() == declared {
            return Err(BatchError::CountMismatch {
                declared,
                found: declared + 1,
            });
        }
        let head = payload
            .get(at..at + RECORD_HEAD)
            .ok_or(BatchError::Truncated { at })?;
        let f = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let r = u16::from_be_bytes([head[4], head[5]]) as usize;
        let x = u16::from_be_bytes([head[6], head[7]]) as usize;
        let start = at + RECORD_HEAD;
        let end = start
            .checked_add(r + x)
            .and_then(|e| e.checked_add(f))
            .filter(|e| *e <= payload.len())
            .ok_or(BatchError::Truncated { at })?;
        let text = |from: usize, len: usize| {
            std::str::from_utf8(&payload[from..from + len]).map_err(|_| BatchError::NotUtf8 { at })
        };
        out.push(BatchRecord {
            resources: text(start, r)?,
            finals: text(start + r, x)?,
            frame: payload.slice(start + r + x..end),
        });
        at = end;
    }
    if out.len() != declared {
        return Err(BatchError::CountMismatch {
            declared,
            found: out.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_in_order() {
        let mut w = BatchWriter::new();
        assert!(w.is_empty());
        let frames: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"type":"ChannelVarset","n":{i}}}"#))
            .collect();
        for (i, f) in frames.iter().enumerate() {
            let finals = if i == 4 { "c:1" } else { "" };
            w.push(f.as_bytes(), "c:1 b:2", finals).expect("fits");
        }
        w.push(b"", "", "").expect("an empty frame fits");
        assert_eq!(w.frames(), 6);
        let (n, payload) = w.take();
        assert!(w.is_empty() && w.bytes() == 0);
        let records = decode_batch(&n.to_string(), &payload).expect("decodes");
        assert_eq!(records.len(), 6);
        for (i, r) in records.iter().take(5).enumerate() {
            assert_eq!(&r.frame[..], frames[i].as_bytes());
            assert_eq!(r.resources, "c:1 b:2");
            assert_eq!(r.finals, if i == 4 { "c:1" } else { "" });
        }
        assert_eq!((records[5].frame.len(), records[5].resources), (0, ""));
        assert_eq!(decode_batch("0", &Bytes::new()).expect("empty"), vec![]);
    }

    #[test]
    fn batches_fill_up_by_frames_and_by_bytes() {
        let mut w = BatchWriter::new();
        for _ in 0..MAX_BATCH_FRAMES - 1 {
            w.push(b"{}", "", "").expect("fits");
        }
        assert!(!w.is_full());
        w.push(b"{}", "", "").expect("fits");
        assert!(w.is_full());
        w.take();
        w.push(&vec![b'x'; MAX_BATCH_BYTES], "", "").expect("fits");
        assert!(w.is_full());
        assert_eq!(
            w.push(b"{}", &"c".repeat(70_000), ""),
            Err(BatchError::TooLarge)
        );
        assert_eq!(w.frames(), 1, "a refused frame is not appended");
    }

    #[test]
    fn malformed_batches_are_refused_whole() {
        let mut w = BatchWriter::new();
        w.push(b"{\"type\":\"A\"}", "c:1", "").expect("fits");
        w.push(b"{\"type\":\"B\"}", "c:2", "").expect("fits");
        let (_, payload) = w.take();
        assert_eq!(decode_batch("two", &payload), Err(BatchError::BadCount));
        assert_eq!(
            decode_batch("3", &payload),
            Err(BatchError::CountMismatch {
                declared: 3,
                found: 2
            })
        );
        assert_eq!(
            decode_batch("1", &payload),
            Err(BatchError::CountMismatch {
                declared: 1,
                found: 2
            })
        );
        assert_eq!(
            decode_batch("99999999999", &payload).map(|_| ()),
            Err(BatchError::CountMismatch {
                declared: 99_999_999_999,
                found: payload.len() / 8
            })
        );
        let cut = payload.slice(..payload.len() - 1);
        assert_eq!(
            decode_batch("2", &cut),
            Err(BatchError::Truncated { at: 23 })
        );
        let mut bad = payload.to_vec();
        bad[8] = 0xff; // first byte of the first record's resources
        assert_eq!(
            decode_batch("2", &Bytes::from(bad)),
            Err(BatchError::NotUtf8 { at: 0 })
        );
        let mut huge = payload.to_vec();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_batch("2", &Bytes::from(huge)),
            Err(BatchError::Truncated { at: 0 })
        );
        assert!(BatchError::Truncated { at: 23 }
            .to_string()
            .contains("byte 23"));
    }

    /// The seed corpus of the fuzz target `batch_decode` (valid batches of recorded frames,
    /// malformed ones): every seed returns, and the valid ones write back byte for byte.
    #[test]
    fn the_batch_decode_fuzz_corpus_round_trips() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/batch_decode");
        let (mut seeds, mut valid) = (0, 0);
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/batch_decode") {
            let data = std::fs::read(entry.expect("entry").path()).expect("seed");
            crate::fuzzing::batch_decode(&data).expect("round trip");
            let nl = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
            let payload = Bytes::copy_from_slice(data.get(nl + 1..).unwrap_or(&[]));
            let count = String::from_utf8_lossy(&data[..nl]).into_owned();
            valid += usize::from(decode_batch(&count, &payload).is_ok());
            seeds += 1;
        }
        assert!(seeds >= 9 && valid >= 4, "{seeds} seeds, {valid} valid");
    }

    #[test]
    fn tokens_are_subject_safe() {
        assert_eq!(token("02:fc:00:00:00:01"), "02:fc:00:00:00:01");
        assert_eq!(token("a.b*c>d e"), "a_b_c_d_e");
        let s = Subjects::new("ari.");
        assert_eq!(s.rest_node("n.1"), "ari.rest.n_1");
        assert_eq!(s.event("hello", "n1"), "ari.event.hello.n1");
        assert_eq!(s.event_any_node("hello"), "ari.event.hello.*");
        assert_eq!(s.claim("hello"), "ari.claim.hello");
    }

    #[test]
    fn envelopes_match_asterisk() {
        let req: RestRequest = serde_json::from_str(
            r#"{"type":"RESTRequest","request_id":"r1","method":"POST","uri":"channels/1/variable",
                "query_strings":[{"name":"variable","value":"X"}]}"#,
        )
        .expect("decodes");
        assert_eq!(req.method, "POST");
        assert_eq!(req.query_strings[0].value, "X");
        let resp = RestResponse::local(502, "channels", "Asterisk unreachable");
        let v: serde_json::Value = serde_json::to_value(&resp).expect("encodes");
        assert_eq!(v["type"], "RESTResponse");
        assert_eq!(v["status_code"], 502);
        assert_eq!(v["reason_phrase"], "Bad Gateway");
        assert!(v.get("request_id").is_none());
    }
}
