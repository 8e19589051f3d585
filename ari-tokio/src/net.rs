//! TCP (+ TLS) connections shared by the HTTP pool and the WebSocket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ari_client::runtime::Target;
use ari_client::{TransportError, TransportErrorKind};
use http::Uri;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

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
