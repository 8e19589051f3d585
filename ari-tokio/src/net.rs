//! TCP (+ TLS) connections shared by the HTTP pool and the WebSocket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ari_client::{TransportError, TransportErrorKind};
use http::Uri;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Where to connect: host, port and whether TLS is spoken. Printing it never shows the path or
/// the query of the URI (a query may carry an `api_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    /// Host without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    /// Reads scheme, host and port from an absolute URI. `http`/`ws` are plain, `https`/`wss`
    /// are TLS.
    pub(crate) fn from_uri(uri: &Uri) -> Result<Target, TransportError> {
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") => false,
            Some(s) if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") => true,
            Some(_) => {
                return Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    "unsupported URI scheme (expected http, https, ws or wss)",
                ))
            }
            None => {
                return Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    "the request URI is not absolute (no scheme)",
                ))
            }
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| {
            TransportError::new(TransportErrorKind::Protocol, "the request URI has no host")
        })?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { host, port, tls })
    }
}

/// The `Host` header value for `uri` (its authority without any `user:password@`).
pub(crate) fn host_header(uri: &Uri) -> Option<http::HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host = authority.rsplit('@').next().unwrap_or(authority);
    http::HeaderValue::from_str(host).ok()
}

/// A plain or TLS-wrapped TCP stream.
#[derive(Debug)]
pub(crate) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Opens TCP to `target` and, for TLS targets, completes the handshake. No deadline here: the
/// caller wraps the whole connect (and upgrade) in its timeout.
pub(crate) async fn connect(
    target: &Target,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<MaybeTls, TransportError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| TransportError::new(TransportErrorKind::Connect, format!("{target}: {e}")))?;
    // Small request/response exchanges: do not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return Ok(MaybeTls::Plain(tcp));
    }
    let name = ServerName::try_from(target.host.clone()).map_err(|_| {
        TransportError::new(
            TransportErrorKind::Tls,
            format!("{target}: the host is not a valid TLS server name"),
        )
    })?;
    let stream = TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(target, &e))?;
    Ok(MaybeTls::Tls(Box::new(stream)))
}

/// A failed TLS handshake, with rustls' reason when there is one.
fn tls_error(target: &Target, e: &io::Error) -> TransportError {
    let reason = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    };
    TransportError::new(
        TransportErrorKind::Tls,
        format!("handshake with {target}: {reason}"),
    )
}

/// The error for a connect (or upgrade) that did not finish within `timeout`.
pub(crate) fn connect_timeout_error(target: &Target, timeout: Duration) -> TransportError {
    TransportError::new(
        TransportErrorKind::Timeout,
        format!(
            "connecting to {target} took longer than the connect timeout ({} ms)",
            timeout.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Result<Target, TransportError> {
        Target::from_uri(&uri.parse().expect("uri"))
    }

    #[test]
    fn targets_from_uris() {
        let t = target("http://127.0.0.1:8088/ari/x?api_key=u:p").expect("ok");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 8088, false));
        assert_eq!(t.to_string(), "127.0.0.1:8088");
        let t = target("https://pbx.example.com/ari").expect("ok");
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("pbx.example.com", 443, true)
        );
        let t = target("ws://[::1]:8088/ari/events").expect("ok");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 8088, false));
        assert_eq!(t.to_string(), "[::1]:8088");
        let t = target("WSS://h/ari/events").expect("ok");
        assert_eq!((t.port, t.tls), (443, true));
        let t = target("http://h/").expect("ok");
        assert_eq!(t.port, 80);
        for bad in ["/ari/x", "ftp://h/x", "unix://h/x"] {
            let e = target(bad).expect_err(bad);
            assert_eq!(e.kind, TransportErrorKind::Protocol);
        }
    }

    #[test]
    fn host_header_never_carries_userinfo() {
        let uri: Uri = "http://user:pw@h:8088/ari".parse().expect("uri");
        assert_eq!(host_header(&uri).expect("host"), "h:8088");
        let uri: Uri = "http://h/ari".parse().expect("uri");
        assert_eq!(host_header(&uri).expect("host"), "h");
        let uri: Uri = "/ari".parse().expect("uri");
        assert!(host_header(&uri).is_none());
    }
}
