//! REST handling shared by plain HTTP and REST over WebSocket: read-only check, injected
//! faults, scripted expectations, api-docs, then the simulator.

use std::sync::Arc;

use serde_json::Value;

use crate::script::{take_match, RecordedRequest, Transport};
use crate::sim::SimRequest;
use crate::state::{lock, Shared, User};
use crate::util::{message_body, parse_query, reason_phrase};

/// The first path segments below `/ari/` that Asterisk's router knows. Anything else is an
/// unknown path: `404` with a `text/plain` body.
const RESOURCES: &[&str] = &[
    "asterisk",
    "endpoints",
    "channels",
    "bridges",
    "recordings",
    "sounds",
    "playbacks",
    "deviceStates",
    "mailboxes",
    "events",
    "applications",
    "api-docs",
];

/// The body Asterisk's HTTP server sends for a path it has no handler for.
pub(crate) const NOT_FOUND_TEXT: &str = "404: Not Found";

/// An authenticated REST request, from HTTP or a `RESTRequest` frame.
#[derive(Debug)]
pub(crate) struct RestRequest {
    pub(crate) transport: Transport,
    pub(crate) method: String,
    /// Path below `/ari/`, still encoded, no query.
    pub(crate) path: String,
    pub(crate) segments: Vec<String>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) content_type: Option<String>,
    pub(crate) raw_body: Vec<u8>,
    pub(crate) user: User,
}

/// The answer to a REST request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestAnswer {
    pub(crate) status: u16,
    /// Empty when there is no body.
    pub(crate) content_type: String,
    pub(crate) body: Vec<u8>,
}

impl RestAnswer {
    pub(crate) fn json_message(status: u16, message: &str) -> Self {
        RestAnswer {
            status,
            content_type: "application/json".into(),
            body: message_body(message),
        }
    }

    pub(crate) fn not_found_text() -> Self {
        RestAnswer {
            status: 404,
            content_type: "text/plain".into(),
            body: NOT_FOUND_TEXT.as_bytes().to_vec(),
        }
    }
}

/// Appends to the request log.
pub(crate) fn record(shared: &Shared, r: RecordedRequest) {
    shared
        .rest_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.log(|| {
        format!(
            "{} {} {}{}{} -> {} ({})",
            match r.transport {
                Transport::Http => "http",
                Transport::WebSocket => "ws-rest",
            },
            r.method,
            r.path,
            if r.query.is_empty() { "" } else { "?" },
            r.query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
            r.status,
            r.user.as_deref().unwrap_or("no user"),
        )
    });
    lock(&shared.log).push(r);
    shared.log_changed.notify_all();
}

/// Called with the answer before the events the request caused are delivered (REST over
/// WebSocket sends its `RESTResponse` first, as Asterisk does).
pub(crate) type Respond<'a> = Box<dyn FnOnce(&RestAnswer) + Send + 'a>;

/// Handles an authenticated REST request and records it in the request log. `respond` is
/// called exactly once with the answer: for a request the simulator answers, while it still
/// holds back the events the request caused.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    mut req: RestRequest,
    respond: Respond<'_>,
) -> RestAnswer {
    // Form bodies carry parameters, as Asterisk accepts them.
    let is_form = req
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let mut body_json = None;
    let mut body_error = false;
    if !req.raw_body.is_empty() {
        if is_form {
            let text = String::from_utf8_lossy(&req.raw_body).into_owned();
            req.query.extend(parse_query(&text));
        } else {
            match serde_json::from_slice::<Value>(&req.raw_body) {
                Ok(v) => body_json = Some(v),
                Err(_) => body_error = true,
            }
        }
    }
    let mut respond = Some(respond);
    let answer = answer(shared, &req, body_json.as_ref(), body_error, &mut respond).await;
    if let Some(r) = respond.take() {
        r(&answer);
    }
    record(
        shared,
        RecordedRequest {
            transport: req.transport,
            method: req.method,
            path: req.path,
            segments: req.segments,
            query: req.query,
            body: body_json,
            raw_body: req.raw_body,
            user: Some(req.user.name),
            status: answer.status,
        },
    );
    answer
}

async fn answer(
    shared: &Arc<Shared>,
    req: &RestRequest,
    body: Option<&Value>,
    body_error: bool,
    respond: &mut Option<Respond<'_>>,
) -> RestAnswer {
    if req.user.read_only && req.method != "GET" && req.method != "OPTIONS" {
        return RestAnswer::json_message(403, "Write access denied");
    }
    let mut held = lock(&shared.faults).held.subscribe();
    // A closed channel cannot happen (the sender lives in the server): answer then.
    let _ = held.wait_for(|held| !*held).await;
    let (failure, delay) = {
        let mut f = lock(&shared.faults);
        (f.take_failure(), f.delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = failure {
        return RestAnswer::json_message(status, reason_phrase(status));
    }
    if body_error {
        return RestAnswer::json_message(400, "Error parsing request body");
    }
    if let Some((canned, delay)) = take_match(shared, &req.method, &req.segments, &req.query, body)
    {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        return RestAnswer {
            status: canned.status,
            content_type: canned.content_type,
            body: canned.body,
        };
    }
    let Some(first) = req.segments.first() else {
        return RestAnswer::not_found_text();
    };
    if !RESOURCES.contains(&first.as_str()) {
        return RestAnswer::not_found_text();
    }
    if first == "api-docs" {
        return api_docs(shared, req);
    }
    if shared
        .pretend
        .as_ref()
        .is_some_and(|p| p.lacks(&req.segments))
    {
        return RestAnswer::json_message(404, "Resource not found");
    }
    let sim_req = SimRequest {
        method: &req.method,
        segments: &req.segments,
        query: &req.query,
        body,
        read_only: req.user.read_only,
    };
    let result = shared.with_sim(|sim, now| {
        let r = sim.handle_request(now, &sim_req);
        let a = RestAnswer {
            status: r.status,
            content_type: if r.body.is_empty() {
                String::new()
            } else {
                r.content_type.to_owned()
            },
            body: r.body,
        };
        if let Some(cb) = respond.take() {
            cb(&a);
        }
        a
    });
    let mut answers_held = lock(&shared.faults).answers_held.subscribe();
    // A closed channel cannot happen (the sender lives in the server): answer then.
    let _ = answers_held.wait_for(|held| !*held).await;
    match result {
        Some(Ok(a)) => a,
        Some(Err(panic)) => {
            shared.log(|| format!("simulator panicked: {panic}"));
            RestAnswer::json_message(500, "Internal Server Error")
        }
        None => RestAnswer::json_message(404, "Resource not found"),
    }
}

fn api_docs(shared: &Shared, req: &RestRequest) -> RestAnswer {
    if req.method != "GET" {
        return RestAnswer::json_message(405, "Method Not Allowed");
    }
    let name = match req.segments.as_slice() {
        [_, name] => name.as_str(),
        _ => return RestAnswer::json_message(404, "Resource not found"),
    };
    let pretended = || {
        let p = shared.pretend.as_ref()?;
        (name == "resources.json").then(|| p.resources_json(&format!("http://{}/ari", shared.addr)))
    };
    match shared.api_docs.get(name).cloned().or_else(pretended) {
        Some(doc) => RestAnswer {
            status: 200,
            content_type: "application/json".into(),
            body: doc,
        },
        None => RestAnswer::json_message(404, "Resource not found"),
    }
}
