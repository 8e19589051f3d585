//! What travels on NATS: subjects, headers and payloads shared by the proxy and the client.
//!
//! | subject | who publishes | payload |
//! |---|---|---|
//! | `{p}.announce` | each proxy, every `interval_ms` and when pinged | [`Announce`] JSON |
//! | `{p}.ping` | a client that wants announcements now | empty |
//! | `{p}.rest.{node}` | a client, request/reply, to one node | Asterisk's `RESTRequest` → `RESTResponse` |
//! | `{p}.rest` (queue group `ari-proxy`) | a client, request/reply, to any one node | the same |
//! | `{p}.claim.{app}` (queue group `{app}`) | a proxy, request/reply: who takes this new call? | the `StasisStart` frame → the instance id |
//! | `{p}.inst.{instance}` | a proxy: events of resources the instance owns | the event frame as Asterisk sent it |
//! | `{p}.event.{app}.{node}` | a proxy: events no instance owns | the event frame as Asterisk sent it |
//! | `{p}.unclaimed.{app}.{node}` | a proxy: a new call no instance took (none running, none answered) | the `StasisStart` frame |
//! | `{p}.health.{node}` | request/reply to one proxy | [`ProxyStats`] JSON |
//!
//! Node ids (Asterisk's entity id, `02:fc:00:00:00:01`) and instance ids are made subject-safe
//! with [`token`]. `{p}` is the prefix, `ari` by default.

use serde::{Deserialize, Serialize};

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
/// The queue group of the proxies on `{p}.rest`.
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
    /// Event messages published (one per owning instance, or one unowned).
    pub events_out: u64,
    /// Event frames dropped because the proxy's queue was full.
    pub events_dropped: u64,
    /// Frames that did not decode (still published, unowned).
    pub undecodable: u64,
    /// New calls taken by an instance.
    pub calls_claimed: u64,
    /// New calls no instance took (no instance running, or none answered in time): published
    /// on `{p}.unclaimed.{app}.{node}`, which instances do not read.
    pub calls_unclaimed: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

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
