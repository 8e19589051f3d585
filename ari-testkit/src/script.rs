//! Scripted mode: canned responses for expected requests, and the log of every request received.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::state::{lock, Shared};
use crate::util::normalise_script_path;

/// How a REST request reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// A plain HTTP request.
    Http,
    /// A `RESTRequest` frame on the events WebSocket.
    WebSocket,
}

/// One request the server received (HTTP request, WebSocket upgrade, or `RESTRequest` frame),
/// as recorded in the request log ([`MockServer::requests`](crate::MockServer::requests)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// How the request arrived.
    pub transport: Transport,
    /// HTTP method, upper case as sent (`GET`, `POST`, ...).
    pub method: String,
    /// The path below `/ari/`, still percent-encoded as sent, without the query string
    /// (`channels/abc/answer`). For requests outside `/ari/` it is the full path, starting with `/`.
    pub path: String,
    /// `path` split on `/`, each segment percent-decoded.
    pub segments: Vec<String>,
    /// Decoded query parameters in order, `api_key` removed.
    pub query: Vec<(String, String)>,
    /// The body parsed as JSON, when there was a JSON body.
    pub body: Option<Value>,
    /// The raw body bytes (empty when there was none).
    pub raw_body: Vec<u8>,
    /// The authenticated user, `None` when authentication failed or was absent.
    pub user: Option<String>,
    /// The status the server answered with.
    pub status: u16,
}

impl RecordedRequest {
    /// The value of the first query parameter named `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response a scripted expectation answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Canned {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Expectation {
    pub(crate) method: String,
    pub(crate) segments: Vec<String>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
    pub(crate) response: Canned,
    pub(crate) delay: Option<Duration>,
    /// `None`: answers forever.
    pub(crate) times: Option<usize>,
    pub(crate) hits: Arc<AtomicUsize>,
    pub(crate) description: String,
}

impl Expectation {
    fn exhausted(&self) -> bool {
        matches!(self.times, Some(n) if self.hits.load(Ordering::SeqCst) >= n)
    }

    pub(crate) fn matches(
        &self,
        method: &str,
        segments: &[String],
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> bool {
        if !self.method.eq_ignore_ascii_case(method) || self.exhausted() {
            return false;
        }
        if self.segments.len() != segments.len()
            || !self
                .segments
                .iter()
                .zip(segments)
                .all(|(want, got)| want == "*" || want == got)
        {
            return false;
        }
        if !self.query.iter().all(|q| query.contains(q)) {
            return false;
        }
        match &self.body {
            Some(want) => body == Some(want),
            None => true,
        }
    }
}

/// Finds the first live expectation matching the request, counts the hit and returns its answer.
pub(crate) fn take_match(
    shared: &Shared,
    method: &str,
    segments: &[String],
    query: &[(String, String)],
    body: Option<&Value>,
) -> Option<(Canned, Option<Duration>)> {
    let script = lock(&shared.script);
    let e = script
        .iter()
        .find(|e| e.matches(method, segments, query, body))?;
    e.hits.fetch_add(1, Ordering::SeqCst);
    Some((e.response.clone(), e.delay))
}

/// Builder for a scripted expectation, returned by [`MockServer::expect`](crate::MockServer::expect).
///
/// Nothing is registered until one of the `respond*` methods is called. By default an
/// expectation answers exactly once; see [`times`](Self::times) and [`always`](Self::always).
/// A path segment `*` matches any single segment.
#[derive(Debug)]
#[must_use = "an expectation is registered only by a respond* method"]
pub struct ExpectBuilder {
    pub(crate) shared: Arc<Shared>,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
    pub(crate) delay: Option<Duration>,
    pub(crate) times: Option<usize>,
}

impl ExpectBuilder {
    /// Only match requests carrying this query parameter (decoded value); others may be present.
    pub fn with_query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Only match requests whose JSON body equals `body`.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Wait this long (real time) before answering.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// Answer the first `n` matching requests (then the expectation is used up).
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Answer every matching request, forever. Such an expectation is never reported as unmet.
    pub fn always(mut self) -> Self {
        self.times = None;
        self
    }

    /// Answer with `status` and a JSON body.
    pub fn respond(self, status: u16, body: Value) -> ExpectationHandle {
        let bytes = body.to_string().into_bytes();
        self.respond_raw(status, "application/json", bytes)
    }

    /// Answer with `status` and no body (use 204 for a `void` operation).
    pub fn respond_empty(self, status: u16) -> ExpectationHandle {
        self.respond_raw(status, "", Vec::new())
    }

    /// Answer with `status`, an arbitrary content type and raw bytes.
    pub fn respond_raw(
        self,
        status: u16,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> ExpectationHandle {
        let hits = Arc::new(AtomicUsize::new(0));
        let description = format!("{} {}", self.method, self.path);
        let e = Expectation {
            method: self.method,
            segments: normalise_script_path(&self.path),
            query: self.query,
            body: self.body,
            response: Canned {
                status,
                content_type: content_type.to_owned(),
                body: body.into(),
            },
            delay: self.delay,
            times: self.times,
            hits: hits.clone(),
            description: description.clone(),
        };
        lock(&self.shared.script).push(e);
        ExpectationHandle { hits, description }
    }
}

/// A registered expectation: tells how often it answered.
#[derive(Debug, Clone)]
pub struct ExpectationHandle {
    hits: Arc<AtomicUsize>,
    description: String,
}

impl ExpectationHandle {
    /// How many requests this expectation has answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// `METHOD path` as given to [`MockServer::expect`](crate::MockServer::expect).
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Descriptions (`METHOD path (hits/times)`) of expectations that answered fewer times than
/// they were set up for.
pub(crate) fn unmet(shared: &Shared) -> Vec<String> {
    lock(&shared.script)
        .iter()
        .filter_map(|e| {
            let n = e.times?;
            let hits = e.hits.load(Ordering::SeqCst);
            (hits < n).then(|| format!("{} ({hits}/{n} answered)", e.description))
        })
        .collect()
}
