//! Small helpers shared by the HTTP and WebSocket sides: decoding, timestamps, reason phrases.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use percent_encoding::percent_decode_str;

/// Percent-decodes one path segment (`+` stays a `+`).
pub(crate) fn decode_segment(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Percent-decodes one query component, `+` meaning a space (form encoding, as Asterisk's
/// legacy URI decoding does).
pub(crate) fn decode_query_component(s: &str) -> String {
    let replaced = s.replace('+', " ");
    percent_decode_str(&replaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses `a=b&c=d` into decoded pairs; a key without `=` gets an empty value.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode_query_component(k), decode_query_component(v)),
            None => (decode_query_component(p), String::new()),
        })
        .collect()
}

/// Splits a path relative to `/ari/` into decoded segments. Empty segments from a trailing
/// slash are dropped, as Asterisk's router does.
pub(crate) fn split_segments(rel: &str) -> Vec<String> {
    rel.split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect()
}

/// Decodes an HTTP `Authorization: Basic ...` header value into `(user, password)`.
pub(crate) fn decode_basic(value: &str) -> Option<(String, String)> {
    let rest = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Formats a wall-clock time the way Asterisk does: `2026-11-26T11:14:38.299+0000`.
pub(crate) fn asterisk_timestamp(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

/// The wall-clock time corresponding to `now` (time since server start).
pub(crate) fn wall_time(start: SystemTime, now: Duration) -> SystemTime {
    start.checked_add(now).unwrap_or(start)
}

/// The reason phrase Asterisk puts in a `RESTResponse` (and its status lines).
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown"),
    }
}

/// `{"message": "..."}` as bytes.
pub(crate) fn message_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "message": message })
        .to_string()
        .into_bytes()
}

/// Normalises a scripted path: accepts `channels/x`, `/channels/x`, `/ari/channels/x` and
/// `ari/channels/x`, strips a query string, and returns the decoded segments below `/ari/`.
pub(crate) fn normalise_script_path(path: &str) -> Vec<String> {
    let path = path.split('?').next().unwrap_or_default();
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("ari/").unwrap_or(path);
    let path = if path == "ari" { "" } else { path };
    split_segments(path)
}

/// The server process's own resource use, for `GET /_bench/stats`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessUsage {
    /// User plus system CPU time of the whole process.
    pub(crate) cpu_seconds: f64,
    /// Peak resident set size.
    pub(crate) peak_rss_bytes: u64,
}

/// `getrusage(RUSAGE_SELF)`; `None` where it is not available.
#[cfg(unix)]
pub(crate) fn process_usage() -> Option<ProcessUsage> {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let micros = u.user_time().num_microseconds() + u.system_time().num_microseconds();
    // ru_maxrss is in KiB on Linux and the BSDs, in bytes on macOS.
    let max_rss = u64::try_from(u.max_rss()).unwrap_or(0);
    let peak_rss_bytes = if cfg!(target_os = "macos") {
        max_rss
    } else {
        max_rss.saturating_mul(1024)
    };
    Some(ProcessUsage {
        cpu_seconds: micros as f64 / 1e6,
        peak_rss_bytes,
    })
}

/// `getrusage(RUSAGE_SELF)`; `None` where it is not available.
#[cfg(not(unix))]
pub(crate) fn process_usage() -> Option<ProcessUsage> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("app=a%2Cb&api_key=u%3Ap&dtmf=1%23&x&y=a+b"),
            vec![
                ("app".into(), "a,b".into()),
                ("api_key".into(), "u:p".into()),
                ("dtmf".into(), "1#".into()),
                ("x".into(), String::new()),
                ("y".into(), "a b".into()),
            ]
        );
    }

    #[test]
    fn segments_keep_encoded_slash() {
        assert_eq!(
            split_segments("recordings/stored/sub%2Fdir-rec/"),
            vec!["recordings", "stored", "sub/dir-rec"]
        );
    }

    #[test]
    fn basic_decoding() {
        assert_eq!(
            decode_basic("Basic YXN0ZXJpc2s6YXN0ZXJpc2s="),
            Some(("asterisk".into(), "asterisk".into()))
        );
        assert_eq!(decode_basic("Basic !!!"), None);
        assert_eq!(decode_basic("Bearer x"), None);
    }

    #[test]
    fn timestamp_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_299);
        let s = asterisk_timestamp(t);
        assert!(s.ends_with(".299+0000"), "{s}");
    }

    #[test]
    fn script_paths() {
        for p in [
            "channels/x",
            "/channels/x",
            "/ari/channels/x",
            "ari/channels/x?a=b",
        ] {
            assert_eq!(normalise_script_path(p), vec!["channels", "x"]);
        }
    }
}
