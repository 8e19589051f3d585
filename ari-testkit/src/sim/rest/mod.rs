//! REST request handling of the simulated Asterisk.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{
    time, Channel, Exec, LiveRec, OnAnswer, PbState, Sim, SimRequest, SimResponse, Tech, Timer,
};

mod applications;
mod asterisk;
mod bridges;
mod channels;
mod mailboxes;
mod misc;
mod playbacks;
mod recordings;
mod routes;

pub(in crate::sim) use routes::allowed_methods;

type R = SimResponse;

/// Request parameters: the query string, then top-level fields of a JSON body (Asterisk
/// accepts any parameter in the body too).
struct P<'a> {
    q: &'a [(String, String)],
    body: Option<&'a Value>,
}

impl P<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.q.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        match self.body.and_then(|b| b.get(name)) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        o => o.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some(o) => Some(o.to_string()),
        }
    }
    fn nonempty(&self, name: &str) -> Option<String> {
        self.get(name).filter(|s| !s.is_empty())
    }
    fn int(&self, name: &str) -> Result<Option<i64>, R> {
        match self.get(name) {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| R::error(400, &format!("{name}: Invalid integer value"))),
        }
    }
    fn bool(&self, name: &str) -> Result<Option<bool>, R> {
        match self.get(name).as_deref() {
            None => Ok(None),
            Some("true") | Some("yes") | Some("1") => Ok(Some(true)),
            Some("false") | Some("no") | Some("0") => Ok(Some(false)),
            Some(_) => Err(R::error(400, &format!("{name}: Invalid boolean value"))),
        }
    }
    /// `appArgs` as `Stasis()` gets them: Asterisk appends them to the application's name as
    /// its application data (`app,appArgs`), which `Stasis()` splits on commas that are not
    /// escaped, quoted or in parentheses or brackets.
    fn app_args(&self) -> Vec<String> {
        self.get("appArgs")
            .filter(|s| !s.is_empty())
            .map(|s| super::stasis_args(&s))
            .unwrap_or_default()
    }
    /// `appArgs` of a move, split at every comma (a move runs no `Stasis()` application: its
    /// arguments are not application data; Asterisk's own split is not checked here).
    fn move_app_args(&self) -> Vec<String> {
        self.get("appArgs")
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(|a| a.to_string()).collect())
            .unwrap_or_default()
    }

    /// The body's `variables`: name (trimmed) → value, and whether it has `report_events`.
    fn vars(&self) -> Vec<(String, String, bool)> {
        match self.body.and_then(|b| b.get("variables")) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::Object(o) => (
                        k.trim().to_string(),
                        o.get("value")
                            .map(|x| match x {
                                Value::String(s) => s.clone(),
                                o => o.to_string(),
                            })
                            .unwrap_or_default(),
                        o.get("report_events") == Some(&Value::Bool(true)),
                    ),
                    Value::String(s) => (k.trim().to_string(), s.clone(), false),
                    o => (k.trim().to_string(), o.to_string(), false),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `variables` (or `fields`) object of the body.
    fn object(&self, name: &str) -> Vec<(String, String)> {
        match self.body.and_then(|b| b.get(name)) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        match v {
                            Value::String(s) => s.clone(),
                            o => o.to_string(),
                        },
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn not_found_resource() -> R {
    R::error(404, "Resource not found")
}

fn method_not_allowed() -> R {
    R::error(405, "Invalid method")
}

impl Sim {
    /// Answers one REST request (path below `/ari/`), mutating the model and queueing the
    /// events it causes. Never panics: bad input gets the error Asterisk gives.
    pub fn handle_request(&mut self, now: Duration, req: &SimRequest<'_>) -> SimResponse {
        self.advance(now);
        if req.read_only && req.method != "GET" && req.method != "OPTIONS" {
            return R::error(403, "Write access denied");
        }
        let p = P {
            q: req.query,
            body: req.body,
        };
        let s: Vec<&str> = req.segments.iter().map(|s| s.as_str()).collect();
        let m = req.method;
        if m == "OPTIONS" {
            // The `Allow` header (and CORS) are the server's; see `allowed_methods`.
            return match allowed_methods(&s) {
                Some(_) => R::no_content(),
                None => not_found_resource(),
            };
        }
        match s.first().copied() {
            Some("asterisk") => self.r_asterisk(m, &s[1..], &p),
            Some("applications") => self.r_applications(m, &s[1..], &p),
            Some("channels") => self.r_channels(m, &s[1..], &p),
            Some("bridges") => self.r_bridges(m, &s[1..], &p),
            Some("playbacks") => self.r_playbacks(m, &s[1..], &p),
            Some("recordings") => self.r_recordings(m, &s[1..], &p),
            Some("sounds") => self.r_sounds(m, &s[1..]),
            Some("endpoints") => self.r_endpoints(m, &s[1..], &p),
            Some("deviceStates") => self.r_device_states(m, &s[1..], &p),
            Some("events") => self.r_events(m, &s[1..], &p),
            Some("mailboxes") if self.cfg.mailboxes => self.r_mailboxes(m, &s[1..], &p),
            _ => not_found_resource(),
        }
    }
}

fn hangup_cause(p: &P<'_>) -> Result<i64, R> {
    if let Some(code) = p.nonempty("reason_code") {
        return code
            .parse::<i64>()
            .map_err(|_| R::error(400, "Invalid reason for hangup provided"));
    }
    match p.get("reason").as_deref() {
        None | Some("normal") => Ok(16),
        Some("busy") => Ok(17),
        Some("congestion") => Ok(34),
        Some("no_answer") => Ok(19),
        Some("timeout") => Ok(18),
        Some("rejected") => Ok(21),
        Some("unallocated") => Ok(1),
        Some("normal_unspecified") => Ok(31),
        Some("number_incomplete") => Ok(28),
        Some("codec_mismatch") => Ok(58),
        Some("interworking") => Ok(127),
        Some("failure") => Ok(38),
        Some("answered_elsewhere") => Ok(26),
        Some(_) => Err(R::error(400, "Invalid reason for hangup provided")),
    }
}

fn rtp_stats(c: &Channel) -> Value {
    json!({"txcount": 0, "rxcount": 0, "txploss": 0, "rxploss": 0, "remote_maxjitter": 0.0,
           "remote_minjitter": 0.0, "remote_normdevjitter": 0.0, "remote_stdevjitter": 0.0,
           "local_maxjitter": 0.0, "local_minjitter": 0.0, "local_normdevjitter": 0.0,
           "local_stdevjitter": 0.0, "txjitter": 0.0, "rxjitter": 0.0, "rtt": 0.0,
           "maxrtt": 0.0, "minrtt": 0.0, "normdevrtt": 0.0, "stdevrtt": 0.0,
           "local_ssrc": 1, "remote_ssrc": 2, "txoctetcount": 0, "rxoctetcount": 0,
           "channel_uniqueid": c.id})
}

fn content_type_for(format: &str) -> &'static str {
    match format {
        "wav" | "wav49" => "audio/wav",
        "gsm" => "audio/x-gsm",
        "ulaw" => "audio/basic",
        "alaw" => "audio/x-alaw-basic",
        "g722" => "audio/G722",
        _ => "application/octet-stream",
    }
}

/// A valid file of `secs` seconds of silence (8 kHz, 16-bit mono WAV for `wav`).
fn audio_bytes(format: &str, secs: u64) -> Vec<u8> {
    let data_len = (secs.min(600) * 16_000) as u32;
    if format != "wav" {
        return vec![0u8; data_len as usize / 2];
    }
    let mut v = Vec::with_capacity(44 + data_len as usize);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&16000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    v.resize(44 + data_len as usize, 0);
    v
}

/// A UUID-shaped id, deterministic from a counter (Asterisk generates UUIDs).
pub(super) fn uuid_like(n: u64, seed: u64) -> String {
    let a = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(n.wrapping_mul(1_442_695_040_888_963_407));
    let b = a.rotate_left(17) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        (b >> 52) as u16 & 0xfff,
        b & 0xffff_ffff_ffff
    )
}
