//! Measuring helpers: process CPU time, RSS, a tiny blocking HTTP client for control
//! requests, percentiles.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;

/// User name and password of the mock server.
pub(crate) const USER: &str = "asterisk";

fn tv(t: TimeVal) -> Duration {
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(t.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// User + system CPU time of this process so far (every thread, ended ones included).
pub(crate) fn cpu_now() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => tv(u.user_time()) + tv(u.system_time()),
        Err(_) => Duration::ZERO,
    }
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB; 0 if unavailable.
pub(crate) fn status_kb(field: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Current RSS in KiB.
pub(crate) fn rss_kb() -> u64 {
    status_kb("VmRSS")
}

/// Peak RSS in KiB.
pub(crate) fn peak_rss_kb() -> u64 {
    status_kb("VmHWM")
}

/// One blocking HTTP/1.1 request with `Connection: close`, for control requests
/// (`/_bench/flood`, `/_sim/call`). Returns the status and body.
pub(crate) fn control(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad response: {head}"))?;
    Ok((status, body.to_owned()))
}

/// The `p`-th percentile (0..=100) of sorted values.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median of sorted values (the mean of the two middle ones for an even count); `None`
/// for none.
pub(crate) fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `Basic ...` header value for the mock server's user.
pub(crate) fn basic_auth() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{USER}"))
    )
}
