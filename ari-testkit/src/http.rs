//! The HTTP side: one hyper service per connection, routing, authentication.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::fault::Refusal;
use crate::rest::{self, record, RestAnswer, RestRequest};
use crate::script::{RecordedRequest, Transport};
use crate::state::{lock, Shared, User};
use crate::util::{decode_basic, parse_query, split_segments};
use crate::{control, ws};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// Builds a response with an exact `Content-Length` (hyper adds it for a full body).
pub(crate) fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !content_type.is_empty() {
        if let Ok(v) = HeaderValue::from_str(content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
    }
    r.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static("Asterisk/ari-testkit"),
    );
    r
}

fn from_answer(a: RestAnswer) -> Response<Full<Bytes>> {
    response(a.status, &a.content_type, a.body)
}

/// Authenticates a request: the `api_key` query parameter (`user:password`, percent-decoded)
/// or HTTP Basic. Returns the user, or `None`.
pub(crate) fn authenticate(
    shared: &Shared,
    headers: &http::HeaderMap,
    query: &[(String, String)],
) -> Option<User> {
    if let Some((_, key)) = query.iter().find(|(k, _)| k == "api_key") {
        let (u, p) = key.split_once(':')?;
        return shared.find_user(u, p).cloned();
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (u, p) = decode_basic(value)?;
    shared.find_user(&u, &p).cloned()
}

/// The hyper service function.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if lock(&shared.faults).take_refusal(Refusal::ServiceUnavailable) {
        shared.log(|| {
            format!(
                "refused {} {} with 503 (fault)",
                req.method(),
                req.uri().path()
            )
        });
        let mut r = from_answer(RestAnswer::json_message(503, "Service Unavailable"));
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    let path = req.uri().path().to_owned();
    let query_text = req.uri().query().unwrap_or_default().to_owned();
    let query = parse_query(&query_text);
    let method = req.method().as_str().to_owned();

    if let Some(rest) = path.strip_prefix("/_sim/") {
        let rest = rest.to_owned();
        return Ok(control::handle(&shared, &method, &rest, &query).await);
    }

    if let Some(rest) = path.strip_prefix("/_bench/") {
        return Ok(crate::bench::handle(&shared, &method, rest, &query));
    }

    if let Some(id) = path.strip_prefix("/media/") {
        // chan_websocket server mode: no authentication, the connection id is the secret.
        return Ok(crate::media_ws::upgrade(&shared, req, id));
    }

    let rel = if path == "/ari" {
        Some(String::new())
    } else {
        path.strip_prefix("/ari/").map(str::to_owned)
    };
    let Some(rel) = rel else {
        record(
            &shared,
            RecordedRequest {
                transport: Transport::Http,
                method,
                path: path.clone(),
                segments: split_segments(&path),
                query,
                body: None,
                raw_body: Vec::new(),
                user: authenticate(&shared, req.headers(), &[]).map(|u| u.name),
                status: 404,
            },
        );
        return Ok(from_answer(RestAnswer::not_found_text()));
    };
    let segments = split_segments(&rel);
    let cors = Cors::of(&shared, req.headers());
    let user = authenticate(&shared, req.headers(), &query);
    let query: Vec<(String, String)> = query.into_iter().filter(|(k, _)| k != "api_key").collect();

    let Some(user) = user else {
        record(
            &shared,
            RecordedRequest {
                transport: Transport::Http,
                method,
                path: rel,
                segments,
                query,
                body: None,
                raw_body: Vec::new(),
                user: None,
                status: 401,
            },
        );
        let mut r = from_answer(RestAnswer::json_message(401, "Authentication required"));
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Asterisk REST Interface\""),
        );
        cors.apply(&mut r, None);
        return Ok(r);
    };

    if segments.len() == 1 && segments[0] == "events" && ws::is_upgrade(&req) {
        let r = ws::upgrade(&shared, req, user.clone(), &query);
        record(
            &shared,
            RecordedRequest {
                transport: Transport::Http,
                method,
                path: rel,
                segments,
                query,
                body: None,
                raw_body: Vec::new(),
                user: Some(user.name),
                status: r.status().as_u16(),
            },
        );
        return Ok(r);
    }

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let raw_body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => {
            // Too large, or the client went away mid-body.
            return Ok(from_answer(RestAnswer::json_message(
                413,
                "Request body too large",
            )));
        }
    };
    let options = method == "OPTIONS";
    let allow = crate::sim::allowed_methods(&segments);
    let answer = rest::handle(
        &shared,
        RestRequest {
            transport: Transport::Http,
            method,
            path: rel,
            segments,
            query,
            content_type,
            raw_body,
            user,
        },
        Box::new(|_| {}),
    )
    .await;
    let preflight = options && answer.status == 204;
    let mut r = from_answer(answer);
    let allow = allow.filter(|_| preflight);
    if let Some(methods) = allow {
        let value = std::iter::once("OPTIONS")
            .chain(methods.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(header::ALLOW, v);
        }
    }
    cors.apply(&mut r, allow);
    Ok(r)
}

/// The CORS headers of a request whose `Origin` is in `allowed_origins` (Asterisk's
/// `process_cors_request` and the preflight part of `handle_options`).
struct Cors {
    /// The allowed origin, `None` when absent or not allowed.
    origin: Option<HeaderValue>,
    request_method: Option<String>,
    request_headers: Option<HeaderValue>,
}

impl Cors {
    fn of(shared: &Shared, headers: &http::HeaderMap) -> Cors {
        let origin = headers.get(header::ORIGIN).filter(|o| {
            o.to_str()
                .is_ok_and(|o| shared.allowed_origins.iter().any(|a| a == "*" || a == o))
        });
        Cors {
            origin: origin.cloned(),
            request_method: headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            request_headers: headers
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .filter(|v| !v.is_empty())
                .cloned(),
        }
    }

    /// Adds the headers; `preflight` is the resource's methods for a successful `OPTIONS`.
    fn apply(&self, r: &mut Response<Full<Bytes>>, preflight: Option<&[&str]>) {
        let Some(origin) = &self.origin else {
            return;
        };
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        let (Some(methods), Some(asked)) = (preflight, &self.request_method) else {
            return;
        };
        if !methods.contains(&asked.as_str()) {
            return;
        }
        let value = std::iter::once("OPTIONS")
            .chain(methods.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Some(hs) = &self.request_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, hs.clone());
        }
    }
}
