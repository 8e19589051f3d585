//! Connecting: TCP (async-net), optional TLS (futures-rustls), connect timeout.

use ari_client::runtime::Target;
use ari_client::{TransportError, TransportErrorKind};
use async_net::TcpStream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls_pki_types::ServerName;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The TLS side of a runtime: the rustls configuration (built by
/// [`ari_client::tls::TlsSettings`]) and its futures-rustls connector.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<rustls::ClientConfig>,
    connector: futures_rustls::TlsConnector,
}

impl Tls {
    pub(crate) fn new(config: Arc<rustls::ClientConfig>) -> Tls {
        Tls {
            connector: futures_rustls::TlsConnector::from(config.clone()),
            config,
        }
    }

    pub(crate) fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    pub(crate) fn connector(&self) -> &futures_rustls::TlsConnector {
        &self.connector
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// A connection, plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Runs `fut`, failing with [`TransportErrorKind::Timeout`] once `timeout` has passed.
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let deadline = Instant::now().checked_add(timeout);
    let timer = async move {
        match deadline {
            Some(deadline) => {
                async_io::Timer::at(deadline).await;
            }
            None => futures_lite::future::pending::<()>().await,
        }
        Err(TransportError::new(
            TransportErrorKind::Timeout,
            format!("{what} did not complete within {timeout:?}"),
        ))
    };
    futures_lite::future::or(fut, timer).await
}

/// Opens TCP to `target` and, for TLS targets, performs the handshake. No timeout here.
pub(crate) async fn connect(target: &Target, tls: &Tls) -> Result<Stream, TransportError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Connect,
                format!("could not connect to {target}: {e}"),
            )
        })?;
    // Small request/response exchanges: do not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return Ok(Stream::Plain(tcp));
    }
    let name = ServerName::try_from(target.host.clone()).map_err(|_| {
        TransportError::new(
            TransportErrorKind::Tls,
            format!("{target} is not a valid TLS server name"),
        )
    })?;
    let stream = tls.connector().connect(name, tcp).await.map_err(|e| {
        TransportError::new(
            TransportErrorKind::Tls,
            format!("TLS handshake with {target} failed: {e}"),
        )
    })?;
    Ok(Stream::Tls(Box::new(stream)))
}
