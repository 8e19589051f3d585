//! HTTP/1.1 client: a small codec (httparse for response heads) and a keep-alive pool.
//!
//! Requests are written with `Content-Length` framing in origin form; responses are read with
//! `Content-Length`, chunked, or read-until-close framing. One connection carries one request
//! at a time; idle connections are pooled per (scheme, host, port).

use crate::io::{connect, with_timeout, Stream, Tls};
use ari_client::runtime::Target;
use ari_client::{TransportError, TransportErrorKind, TransportOptions};
use bytes::Bytes;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use smol::lock::Semaphore;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest response head (status line + headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest number of response headers accepted.
const MAX_HEADERS: usize = 128;
/// Largest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// Read granularity.
const READ_CHUNK: usize = 16 * 1024;

/// An idle connection is checked (a non-blocking read: no EOF, no stray bytes) before reuse
/// when it has been idle this long. A server closes a kept-alive connection after seconds of
/// idleness, not within milliseconds of a response, so a busy pool skips the check (a system
/// call per request); a connection closed in that window fails like one closed while the
/// request is under way.
const PROBE_AFTER: Duration = Duration::from_millis(50);

/// Pool limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolOptions {
    pub(crate) max_idle_per_host: usize,
    pub(crate) max_connections_per_host: usize,
    pub(crate) idle_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_idle_per_host: 16,
            max_connections_per_host: 64,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Debug)]
struct HostPool {
    idle: Vec<Idle>,
    permits: Arc<Semaphore>,
}

/// Idle connections per target, and a bound on connections in use per target.
#[derive(Debug)]
pub(crate) struct Pool {
    hosts: Mutex<HashMap<Target, HostPool>>,
    opts: PoolOptions,
}

impl Pool {
    pub(crate) fn new(opts: PoolOptions) -> Pool {
        Pool {
            hosts: Mutex::new(HashMap::new()),
            opts,
        }
    }

    fn permits(&self, target: &Target) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(target.clone())
            .or_insert_with(|| HostPool {
                idle: Vec::new(),
                permits: Arc::new(Semaphore::new(self.opts.max_connections_per_host.max(1))),
            })
            .permits
            .clone()
    }

    /// The most recently used idle connection that has not expired, and whether it has been
    /// idle long enough to be probed before use (see [`PROBE_AFTER`]).
    fn take_idle(&self, target: &Target) -> Option<(Conn, bool)> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let host = hosts.get_mut(target)?;
        while let Some(idle) = host.idle.pop() {
            let idle_for = idle.since.elapsed();
            if idle_for < self.opts.idle_timeout {
                return Some((idle.conn, idle_for >= PROBE_AFTER));
            }
        }
        None
    }

    fn put_idle(&self, target: &Target, conn: Conn) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(host) = hosts.get_mut(target) {
            let now = Instant::now();
            host.idle
                .retain(|i| now.duration_since(i.since) < self.opts.idle_timeout);
            if host.idle.len() < self.opts.max_idle_per_host {
                host.idle.push(Idle { conn, since: now });
            }
        }
    }

    /// Number of idle connections to `target` (tests and diagnostics).
    #[cfg(test)]
    fn idle_count(&self, target: &Target) -> usize {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.get(target).map_or(0, |h| h.idle.len())
    }
}

/// Sends `req` through the pool.
pub(crate) async fn send(
    pool: &Pool,
    tls: &Tls,
    req: Request<Vec<u8>>,
    opts: &TransportOptions,
) -> Result<Response<Bytes>, TransportError> {
    let target = Target::from_uri(req.uri(), false)?;
    let head = encode_head(&req, &target)?;
    let is_head = req.method() == Method::HEAD;
    let close_requested = req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    });
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let body = req.into_body();

    let permits = pool.permits(&target);
    let _permit = permits.acquire_arc().await;

    let mut fresh_only = false;
    loop {
        let (mut conn, reused) = match (!fresh_only).then(|| pool.take_idle(&target)).flatten() {
            Some((mut conn, probe)) => {
                if probe && !conn.is_alive().await {
                    continue; // dead: dropped, try the next idle one
                }
                (conn, true)
            }
            None => {
                let stream =
                    with_timeout(opts.connect_timeout, "connecting", connect(&target, tls)).await?;
                (Conn::new(stream), false)
            }
        };
        match conn
            .roundtrip(&head, &body, is_head, opts.max_body_bytes)
            .await
        {
            Ok((resp, reusable)) => {
                if reusable && !close_requested {
                    pool.put_idle(&target, conn);
                }
                return Ok(resp);
            }
            // A kept-alive connection the server had closed: the request never reached it
            // (write failed), or nothing came back and repeating is harmless.
            Err(failure)
                if reused
                    && (failure.stage == Stage::Write
                        || (failure.stage == Stage::NothingRead && idempotent)) =>
            {
                tracing::debug!(peer = %target, "stale pooled connection; retrying on a new one");
                fresh_only = true;
            }
            Err(failure) => return Err(failure.error),
        }
    }
}

/// Serializes the request line and headers (origin form, `Content-Length` framing).
fn encode_head(req: &Request<Vec<u8>>, target: &Target) -> Result<Vec<u8>, TransportError> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let mut out = Vec::with_capacity(256 + path.len());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers().contains_key(header::HOST) {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(host_header(target).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.headers() {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        if value
            .as_bytes()
            .iter()
            .any(|&b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                format!("header {name} has a value that cannot be sent"),
            ));
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body_len = req.body().len();
    if body_len > 0 || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

fn host_header(target: &Target) -> String {
    let default = if target.tls { 443 } else { 80 };
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    if target.port == default {
        host
    } else {
        format!("{host}:{}", target.port)
    }
}

/// How far a failed exchange got (decides whether a retry is safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Writing the request failed.
    Write,
    /// The request was written; the connection ended before any response byte.
    NothingRead,
    /// Part of a response arrived.
    Reading,
}

#[derive(Debug)]
struct Failure {
    stage: Stage,
    error: TransportError,
}

fn fail(stage: Stage, kind: TransportErrorKind, message: impl Into<String>) -> Failure {
    Failure {
        stage,
        error: TransportError::new(kind, message),
    }
}

fn io_fail(stage: Stage, what: &str, e: &io::Error) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::UnexpectedEof => TransportErrorKind::Closed,
        io::ErrorKind::InvalidData => TransportErrorKind::Protocol,
        _ => TransportErrorKind::Io,
    };
    fail(stage, kind, format!("{what}: {e}"))
}

/// Framing of a response body.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// One HTTP/1.1 connection with its read buffer.
#[derive(Debug)]
struct Conn {
    io: Stream,
    /// Bytes read and not consumed yet.
    buf: Vec<u8>,
    /// Where the socket is read into (zeroed once, when the connection opens; `buf` takes
    /// what each read brought).
    scratch: Vec<u8>,
}

impl Conn {
    fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: Vec::new(),
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Whether an idle connection still looks usable: no EOF, no error, no stray bytes.
    async fn is_alive(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        futures_lite::future::poll_once(self.io.read(&mut probe))
            .await
            .is_none()
    }

    /// Reads more bytes into the buffer; `Ok(false)` at EOF.
    async fn fill(&mut self) -> io::Result<bool> {
        let n = self.io.read(&mut self.scratch).await?;
        self.buf
            .extend_from_slice(self.scratch.get(..n).unwrap_or_default());
        Ok(n > 0)
    }

    async fn roundtrip(
        &mut self,
        head: &[u8],
        body: &[u8],
        is_head: bool,
        max_body: usize,
    ) -> Result<(Response<Bytes>, bool), Failure> {
        let write = async {
            self.io.write_all(head).await?;
            if !body.is_empty() {
                self.io.write_all(body).await?;
            }
            self.io.flush().await
        };
        write
            .await
            .map_err(|e| io_fail(Stage::Write, "sending the request failed", &e))?;

        let (parts, framing, keep_alive) = self.read_head(is_head).await?;
        let mut reusable = keep_alive;
        let body = match framing {
            Framing::None => Vec::new(),
            Framing::Length(len) => {
                if len > max_body as u64 {
                    return Err(fail(
                        Stage::Reading,
                        TransportErrorKind::TooLarge,
                        format!("response body of {len} bytes exceeds the limit of {max_body}"),
                    ));
                }
                // Bounded by max_body above.
                self.read_exact_body(len as usize).await?
            }
            Framing::Chunked => self.read_chunked(max_body).await?,
            Framing::UntilClose => {
                reusable = false;
                self.read_to_close(max_body).await?
            }
        };
        if !self.buf.is_empty() {
            // Bytes beyond the response: the connection is out of step.
            reusable = false;
        }
        Ok((Response::from_parts(parts, Bytes::from(body)), reusable))
    }

    /// Reads the status line and headers, skipping interim (1xx) responses.
    async fn read_head(
        &mut self,
        is_head: bool,
    ) -> Result<(http::response::Parts, Framing, bool), Failure> {
        let mut got_any = false;
        loop {
            if let Some((consumed, parts, keep_alive)) = self.parse_head()? {
                self.buf.drain(..consumed);
                got_any = true;
                let status = parts.status;
                if status.is_informational() {
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(fail(
                            Stage::Reading,
                            TransportErrorKind::Protocol,
                            "unexpected 101 Switching Protocols on a plain request",
                        ));
                    }
                    continue;
                }
                let framing = framing(&parts, is_head)?;
                return Ok((parts, framing, keep_alive));
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(fail(
                    Stage::Reading,
                    TransportErrorKind::Protocol,
                    format!("response head larger than {MAX_HEAD_BYTES} bytes"),
                ));
            }
            let stage = if got_any || !self.buf.is_empty() {
                Stage::Reading
            } else {
                Stage::NothingRead
            };
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(fail(
                        stage,
                        TransportErrorKind::Closed,
                        "the server closed the connection before answering",
                    ))
                }
                Err(e) => return Err(io_fail(stage, "reading the response failed", &e)),
            }
        }
    }

    /// Parses a complete head from the buffer, if there is one.
    #[allow(clippy::type_complexity)]
    fn parse_head(&self) -> Result<Option<(usize, http::response::Parts, bool)>, Failure> {
        let protocol = |m: String| fail(Stage::Reading, TransportErrorKind::Protocol, m);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let consumed = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(protocol(format!("invalid response head: {e}"))),
        };
        let code = resp
            .code
            .ok_or_else(|| protocol("response without status".to_owned()))?;
        let status = StatusCode::from_u16(code)
            .map_err(|_| protocol(format!("invalid status code {code}")))?;
        let version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut builder = Response::builder().status(status).version(version);
        let mut connection_close = version == Version::HTTP_10;
        for h in resp.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| protocol("invalid response header name".to_owned()))?;
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| protocol(format!("invalid value of response header {name}")))?;
            if name == header::CONNECTION {
                for token in value.to_str().unwrap_or("").split(',') {
                    let token = token.trim();
                    if token.eq_ignore_ascii_case("close") {
                        connection_close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive")
                        && version == Version::HTTP_10
                    {
                        connection_close = false;
                    }
                }
            }
            builder = builder.header(name, value);
        }
        let parts = builder
            .body(())
            .map_err(|e| protocol(format!("invalid response: {e}")))?
            .into_parts()
            .0;
        Ok(Some((consumed, parts, !connection_close)))
    }

    async fn read_exact_body(&mut self, len: usize) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::with_capacity(len);
        self.read_exact_into(&mut out, len).await?;
        Ok(out)
    }

    async fn read_exact_into(&mut self, out: &mut Vec<u8>, len: usize) -> Result<(), Failure> {
        let from_buf = len.min(self.buf.len());
        out.extend(self.buf.drain(..from_buf));
        let rest = len - from_buf;
        if rest > 0 {
            let start = out.len();
            out.resize(start + rest, 0);
            self.io
                .read_exact(&mut out[start..])
                .await
                .map_err(|e| io_fail(Stage::Reading, "reading the response body failed", &e))?;
        }
        Ok(())
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE_BYTES {
                return Err(fail(
                    Stage::Reading,
                    TransportErrorKind::Protocol,
                    "chunked body line too long",
                ));
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(fail(
                        Stage::Reading,
                        TransportErrorKind::Closed,
                        "the connection closed in the middle of the response body",
                    ))
                }
                Err(e) => {
                    return Err(io_fail(
                        Stage::Reading,
                        "reading the response body failed",
                        &e,
                    ))
                }
            }
        }
    }

    async fn read_chunked(&mut self, max_body: usize) -> Result<Vec<u8>, Failure> {
        let protocol = |m: &str| fail(Stage::Reading, TransportErrorKind::Protocol, m);
        let mut out = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size_part = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let size_str = std::str::from_utf8(size_part)
                .map_err(|_| protocol("invalid chunk size"))?
                .trim_matches(|c| c == ' ' || c == '\t');
            if size_str.is_empty() || !size_str.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(protocol("invalid chunk size"));
            }
            let size =
                u64::from_str_radix(size_str, 16).map_err(|_| protocol("chunk size too large"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                let mut trailer_bytes = 0usize;
                loop {
                    let line = self.read_line().await?;
                    if line.is_empty() {
                        return Ok(out);
                    }
                    trailer_bytes += line.len();
                    if trailer_bytes > MAX_HEAD_BYTES {
                        return Err(protocol("chunked trailers too large"));
                    }
                }
            }
            if (out.len() as u64).saturating_add(size) > max_body as u64 {
                return Err(fail(
                    Stage::Reading,
                    TransportErrorKind::TooLarge,
                    format!("response body exceeds the limit of {max_body} bytes"),
                ));
            }
            // Bounded by max_body above.
            self.read_exact_into(&mut out, size as usize).await?;
            if !self.read_line().await?.is_empty() {
                return Err(protocol("missing CRLF after chunk"));
            }
        }
    }

    async fn read_to_close(&mut self, max_body: usize) -> Result<Vec<u8>, Failure> {
        let mut out = std::mem::take(&mut self.buf);
        loop {
            if out.len() > max_body {
                return Err(fail(
                    Stage::Reading,
                    TransportErrorKind::TooLarge,
                    format!("response body exceeds the limit of {max_body} bytes"),
                ));
            }
            // `fill` appends to the (now empty) buffer; `out` takes it over below, so the
            // limit is checked after every read, including the last one before EOF.
            match self.fill().await {
                Ok(true) => out.append(&mut self.buf),
                Ok(false) => return Ok(out),
                Err(e) => {
                    return Err(io_fail(
                        Stage::Reading,
                        "reading the response body failed",
                        &e,
                    ))
                }
            }
        }
    }
}

/// How the body of a response with these parts is delimited (RFC 9112 §6.3).
fn framing(parts: &http::response::Parts, is_head: bool) -> Result<Framing, Failure> {
    let protocol = |m: &str| fail(Stage::Reading, TransportErrorKind::Protocol, m);
    if is_head || parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::None);
    }
    let te: Vec<&HeaderValue> = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .collect();
    if !te.is_empty() {
        let last = te
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_ascii_lowercase());
        return Ok(if last.as_deref() == Some("chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut length: Option<u64> = None;
    for value in parts.headers.get_all(header::CONTENT_LENGTH) {
        let value = value
            .to_str()
            .map_err(|_| protocol("invalid Content-Length"))?;
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(protocol("invalid Content-Length"));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| protocol("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(protocol("conflicting Content-Length headers"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::from_uri(&http::Uri::from_static("http://127.0.0.1:8088/"), false).unwrap()
    }

    #[test]
    fn head_is_origin_form_with_length() {
        let req = Request::post("http://127.0.0.1:8088/ari/channels?endpoint=PJSIP%2F1")
            .header("Authorization", "Basic eDp5")
            .header("Content-Length", "999")
            .body(b"{}".to_vec())
            .unwrap();
        let head = String::from_utf8(encode_head(&req, &target()).unwrap()).unwrap();
        assert!(head.starts_with("POST /ari/channels?endpoint=PJSIP%2F1 HTTP/1.1\r\n"));
        assert!(
            head.contains("host: 127.0.0.1:8088\r\n") || head.contains("Host: 127.0.0.1:8088\r\n")
        );
        assert!(head.contains("Content-Length: 2\r\n"));
        assert!(!head.contains("999"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn empty_post_has_zero_length() {
        let req = Request::post("http://h/ari/x").body(Vec::new()).unwrap();
        let head = String::from_utf8(encode_head(&req, &target()).unwrap()).unwrap();
        assert!(head.contains("Content-Length: 0\r\n"));
        let req = Request::get("http://h/ari/x").body(Vec::new()).unwrap();
        let head = String::from_utf8(encode_head(&req, &target()).unwrap()).unwrap();
        assert!(!head.contains("Content-Length"));
    }

    #[test]
    fn pool_counts_idle() {
        let pool = Pool::new(PoolOptions::default());
        assert_eq!(pool.idle_count(&target()), 0);
    }
}
