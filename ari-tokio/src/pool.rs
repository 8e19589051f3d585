//! The pooled keep-alive HTTP/1.1 client over `hyper::client::conn::http1`.
//!
//! One connection carries one request at a time. After a response body has been read in full
//! the connection goes back to an idle list per (scheme, host, port); the next request takes
//! the most recently used idle connection that is still open and younger than the idle timeout.
//! A request that fails on a reused connection *before it was written* (the server closed the
//! idle connection meanwhile) is retried once more on another connection; nothing that may have
//! reached the server is ever retried.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ari_client::{TransportError, TransportErrorKind, TransportOptions};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::adapter::Shared;
use crate::net;
use ari_client::runtime::Target;

type Sender = SendRequest<Full<Bytes>>;

/// How many reused connections a request may try before opening a fresh one.
const MAX_REUSE_ATTEMPTS: usize = 3;

/// Idle connections per target.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<Target, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = self
            .idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0);
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Pool {
    /// The most recently returned usable idle connection for `target`, if any.
    fn checkout(&self, target: &Target, idle_timeout: Duration) -> Option<Sender> {
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(target)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.sender.is_closed() || now.duration_since(idle.since) >= idle_timeout {
                continue; // dropped: its connection task ends
            }
            found = Some(idle.sender);
            break;
        }
        if list.is_empty() {
            map.remove(target);
        }
        found
    }

    /// Returns a connection whose last response was read in full.
    fn checkin(&self, target: Target, sender: Sender, max_idle: usize) {
        if sender.is_closed() || max_idle == 0 {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(target).or_default();
        list.retain(|i| !i.sender.is_closed());
        if list.len() >= max_idle {
            list.remove(0); // the oldest goes
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

/// Sends `req` (absolute URI) and reads the whole body within `opts.max_body_bytes`.
pub(crate) async fn send(
    shared: Arc<Shared>,
    req: Request<Vec<u8>>,
    opts: TransportOptions,
) -> Result<Response<Bytes>, TransportError> {
    let target = Target::from_uri(req.uri(), false)?;
    let (mut parts, body) = req.into_parts();
    // HTTP/1.1 to an origin server: origin-form request target (`/ari/...`).
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !parts.headers.contains_key(HOST) {
        if let Some(v) = net::host_header(&parts.uri) {
            parts.headers.insert(HOST, v);
        }
    }
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    let mut req = Request::from_parts(parts, Full::new(Bytes::from(body)));

    let mut attempts = 0usize;
    let (sender, response) = loop {
        let pooled = if attempts < MAX_REUSE_ATTEMPTS {
            shared
                .pool
                .checkout(&target, shared.settings.pool_idle_timeout)
        } else {
            None
        };
        let reused = pooled.is_some();
        let mut sender = match pooled {
            Some(mut s) => {
                // Waits for the connection to finish the previous exchange; fails at once if
                // it was closed.
                if s.ready().await.is_err() {
                    attempts += 1;
                    continue;
                }
                s
            }
            None => open(&shared, &target, opts.connect_timeout).await?,
        };
        match sender.try_send_request(req).await {
            Ok(response) => break (sender, response),
            Err(mut e) => match e.take_message() {
                Some(back) if reused => {
                    tracing::debug!(%target, "pooled connection unusable; retrying on another");
                    req = back;
                    attempts += 1;
                }
                _ => return Err(hyper_error(&target, &e.into_error())),
            },
        }
    };

    let (parts, body) = response.into_parts();
    let max = opts.max_body_bytes;
    if let Some(len) = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > max as u64 {
            // Not reading the body: the connection is dropped, not pooled.
            return Err(too_large(&target, max));
        }
    }
    let body = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                return Err(too_large(&target, max));
            }
            return Err(match e.downcast_ref::<hyper::Error>() {
                Some(h) => hyper_error(&target, h),
                None => TransportError::new(
                    TransportErrorKind::Io,
                    format!("reading the response from {target} failed: {e}"),
                ),
            });
        }
    };
    // A closed connection (e.g. after `Connection: close`) is not kept.
    shared
        .pool
        .checkin(target, sender, shared.settings.pool_max_idle_per_host);
    Ok(Response::from_parts(parts, body))
}

/// Opens a new connection (TCP, TLS, HTTP/1.1 handshake) within `timeout` and spawns its task.
async fn open(
    shared: &Arc<Shared>,
    target: &Target,
    timeout: Duration,
) -> Result<Sender, TransportError> {
    let connecting = async {
        let io = net::connect(target, &shared.tls).await?;
        hyper::client::conn::http1::Builder::new()
            .handshake::<_, Full<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| hyper_error(target, &e))
    };
    let (sender, conn) = match tokio::time::timeout(timeout, connecting).await {
        Ok(result) => result?,
        Err(_) => return Err(net::connect_timeout_error(target, timeout)),
    };
    let shown = target.clone();
    shared.spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target = %shown, error = %e, "HTTP connection ended with an error");
        }
    });
    tracing::trace!(%target, "new HTTP connection");
    Ok(sender)
}

fn too_large(target: &Target, max: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::TooLarge,
        format!("the response body from {target} exceeds {max} bytes"),
    )
}

/// Maps a hyper error to a transport error. hyper's messages carry no header values.
fn hyper_error(target: &Target, e: &hyper::Error) -> TransportError {
    let kind = if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() || e.is_user() {
        TransportErrorKind::Protocol
    } else {
        TransportErrorKind::Io
    };
    let mut message = format!("HTTP exchange with {target}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    TransportError::new(kind, message)
}
