//! Test controls over HTTP under `/_sim/` (no authentication), and simulated-time advance.
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `POST /_sim/call?app=hello&args=a,b&dtmf=1%23&endpoint=PJSIP/alice&caller=Alice%20<100>` | places a call into `app` (only `app` is required); with `dtmf`, a scripted caller presses those digits one by one after the channel is answered | `200 {"channel_id": "..."}` |
//! | `POST /_sim/dtmf?channel=ID&digits=12` | the caller presses digits | `204` |
//! | `POST /_sim/hangup?channel=ID` | the far end hangs up | `204` |
//! | `POST /_sim/refer?channel=ID&destination=2000` or `&replaces=ID2` | the phone on the channel sends a SIP REFER, blind to `destination` or attended replacing its call `ID2`: `ChannelTransfer` | `204` |
//! | `POST /_sim/advance?ms=N` | simulated time only: moves the clock | `204` (`409` in real time) |
//! | `GET /_sim/requests` | the request log | `200 [{"method", "path", "query", "body", "user", "status", "transport"}, ...]` |
//! | `GET /_sim/connections` | open events WebSockets | `200 [{"id", "apps", "user"}, ...]` |
//!
//! Errors answer `400`/`404` with `{"message": "..."}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde_json::{json, Value};

use crate::http::response;
use crate::script::Transport;
use crate::sim::PlaceCall;
use crate::state::{lock, Clock, Shared};
use crate::util::message_body;

fn json_answer(status: u16, v: &Value) -> Response<Full<Bytes>> {
    response(status, "application/json", v.to_string().into_bytes())
}

fn error(status: u16, msg: &str) -> Response<Full<Bytes>> {
    response(status, "application/json", message_body(msg))
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Default endpoint of calls placed through `/_sim/call`: a simulated SIP phone.
pub(crate) const DEFAULT_CALL_ENDPOINT: &str = "PJSIP/caller";

/// Builds a [`PlaceCall`] from `/_sim/call` query parameters: `app` (required), `endpoint`
/// (default `PJSIP/caller`), `args` (comma-separated), `dtmf`, `caller` (`Name <number>`),
/// `channel_id`, `exten`, `context`, `dtmf_delay_ms`, `dtmf_interval_ms`, `hangup_after_ms`,
/// `abandon_after_ms`.
pub(crate) fn place_call_from_query(query: &[(String, String)]) -> Result<PlaceCall, String> {
    let app = param(query, "app")
        .filter(|a| !a.is_empty())
        .ok_or("missing parameter: app")?;
    let endpoint = param(query, "endpoint").unwrap_or(DEFAULT_CALL_ENDPOINT);
    let mut call = PlaceCall::new(endpoint, app);
    if let Some(args) = param(query, "args") {
        call.args = args
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
    }
    if let Some(d) = param(query, "dtmf") {
        call.dtmf = d.to_owned();
    }
    if let Some(c) = param(query, "caller") {
        let (name, number) = parse_caller(c);
        call.caller_name = name;
        call.caller_number = number;
    }
    if let Some(v) = param(query, "channel_id") {
        call.channel_id = Some(v.to_owned());
    }
    if let Some(v) = param(query, "exten") {
        call.exten = v.to_owned();
    }
    if let Some(v) = param(query, "context") {
        call.context = v.to_owned();
    }
    let ms = |name: &str| -> Result<Option<Duration>, String> {
        param(query, name)
            .map(|v| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("invalid parameter {name}: {v:?}"))
            })
            .transpose()
    };
    if let Some(d) = ms("dtmf_delay_ms")? {
        call.dtmf_delay = d;
    }
    if let Some(d) = ms("dtmf_interval_ms")? {
        call.dtmf_interval = d;
    }
    if let Some(d) = ms("hangup_after_ms")? {
        call.hangup_after_answer = Some(d);
    }
    if let Some(d) = ms("abandon_after_ms")? {
        call.abandon_after = Some(d);
    }
    Ok(call)
}

/// Splits `Alice <100>` into (`Alice`, `100`); a bare number or name goes to both as given.
pub(crate) fn parse_caller(c: &str) -> (String, String) {
    match c.split_once('<') {
        Some((name, rest)) => (
            name.trim().to_owned(),
            rest.trim_end_matches('>').trim().to_owned(),
        ),
        None if c.chars().all(|ch| ch.is_ascii_digit() || ch == '+') => {
            (String::new(), c.to_owned())
        }
        None => (c.trim().to_owned(), String::new()),
    }
}

/// Handles `/_sim/{rest}`.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    method: &str,
    rest: &str,
    query: &[(String, String)],
) -> Response<Full<Bytes>> {
    shared.log(|| format!("control {method} /_sim/{rest}"));
    match (method, rest.trim_end_matches('/')) {
        ("POST", "call") => {
            let call = match place_call_from_query(query) {
                Ok(c) => c,
                Err(e) => return error(400, &e),
            };
            match shared.with_sim(|sim, now| sim.place_call(now, call)) {
                Some(Ok(id)) => {
                    shared.log(|| format!("placed call {id}"));
                    json_answer(200, &json!({ "channel_id": id }))
                }
                Some(Err(p)) => error(500, &p),
                None => error(404, "the server runs without simulator"),
            }
        }
        ("POST", "dtmf") => {
            let (Some(ch), Some(digits)) = (param(query, "channel"), param(query, "digits")) else {
                return error(400, "missing parameter: channel and digits are required");
            };
            sim_result(shared.with_sim(|sim, now| sim.send_dtmf(now, ch, digits)))
        }
        ("POST", "hangup") => {
            let Some(ch) = param(query, "channel") else {
                return error(400, "missing parameter: channel");
            };
            sim_result(shared.with_sim(|sim, now| sim.hangup(now, ch)))
        }
        ("POST", "refer") => {
            let Some(ch) = param(query, "channel") else {
                return error(400, "missing parameter: channel");
            };
            let refer = match (param(query, "destination"), param(query, "replaces")) {
                (Some(d), None) => crate::Refer::Blind {
                    destination: d.to_owned(),
                },
                (None, Some(r)) => crate::Refer::Attended {
                    replaces: r.to_owned(),
                },
                _ => return error(400, "exactly one of destination and replaces is required"),
            };
            sim_result(shared.with_sim(|sim, now| sim.refer(now, ch, refer)))
        }
        ("POST", "advance") => {
            let Some(ms) = param(query, "ms").and_then(|m| m.parse::<u64>().ok()) else {
                return error(400, "missing or invalid parameter: ms");
            };
            if advance(shared, Duration::from_millis(ms)) {
                response(204, "", Vec::new())
            } else {
                error(409, "the server runs in real time")
            }
        }
        ("GET", "requests") => {
            let log: Vec<Value> = lock(&shared.log)
                .iter()
                .map(|r| {
                    json!({
                        "transport": match r.transport { Transport::Http => "http", Transport::WebSocket => "websocket" },
                        "method": r.method,
                        "path": r.path,
                        "query": r.query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                        "body": r.body,
                        "user": r.user,
                        "status": r.status,
                    })
                })
                .collect();
            json_answer(200, &Value::Array(log))
        }
        ("POST", "outbound/remove") => {
            let told = crate::outbound::remove_persistent(shared);
            json_answer(200, &json!({ "connections": told }))
        }
        ("GET", "connections") => {
            let reg = lock(&shared.registry);
            let mut v: Vec<(u64, Value)> = reg
                .conns
                .iter()
                .map(|(id, c)| (*id, json!({ "id": id, "apps": c.apps, "user": c.user })))
                .collect();
            v.sort_by_key(|(id, _)| *id);
            json_answer(200, &Value::Array(v.into_iter().map(|(_, v)| v).collect()))
        }
        _ => response(404, "text/plain", b"404: Not Found".to_vec()),
    }
}

fn sim_result(r: Option<Result<Result<(), String>, String>>) -> Response<Full<Bytes>> {
    match r {
        Some(Ok(Ok(()))) => response(204, "", Vec::new()),
        Some(Ok(Err(e))) => error(404, &e),
        Some(Err(p)) => error(500, &p),
        None => error(404, "the server runs without simulator"),
    }
}

/// Simulated time: moves the clock forward by `d`, firing every due timer in order.
/// Returns `false` in real-time mode.
pub(crate) fn advance(shared: &Shared, d: Duration) -> bool {
    let Clock::Simulated(now) = &shared.clock else {
        return false;
    };
    let target = *lock(now) + d;
    if let Some(sim) = shared.sim.as_ref() {
        // Bounded, in case a timer keeps asking to fire at the same instant.
        for _ in 0..100_000 {
            let next =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock(sim).poll_timeout()))
                    .unwrap_or(None);
            match next {
                Some(t) if t <= target => {
                    {
                        let mut n = lock(now);
                        *n = (*n).max(t);
                    }
                    shared.with_sim(|sim, now| sim.handle_timeout(now));
                }
                _ => break,
            }
        }
    }
    *lock(now) = target;
    shared.log(|| format!("time advanced to {:?}", target));
    true
}
