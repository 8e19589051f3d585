//! Streams: the futures-io → hyper shim, plain-or-TLS streams, connecting with a timeout,
//! TLS accept.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};

use crate::runtime::{Connector, Executor, Target, TransportError, TransportErrorKind};

/// A connection as the stack uses it: plain TCP, or TLS over TCP (client or server side).
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream<S> {
    /// Plain TCP.
    Plain(S),
    /// TLS (a client connection, or one accepted with [`tls_accept`](super::tls_accept)).
    #[cfg(feature = "rustls")]
    Tls(Box<futures_rustls::TlsStream<S>>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTlsStream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            #[cfg(feature = "rustls")]
            MaybeTlsStream::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_close(cx))
    }
}

/// Size of the shim's read buffer (hyper's own buffer starts at 8 KiB).
const SHIM_BUF: usize = 8 * 1024;

/// A futures-io stream as hyper's `rt::Read` + `rt::Write`.
///
/// Reading goes through a buffer owned by the shim (allocated once per connection): hyper's
/// read cursor is uninitialised memory, which safe code may only fill with `put_slice`.
pub(crate) struct HyperIo<S> {
    io: S,
    buf: Box<[u8]>,
    /// Set by the pool when the connection is handed to another request: the next read
    /// first calls `before_reuse` on the stream.
    reused: Arc<AtomicBool>,
    before_reuse: fn(&mut S),
}

impl<S> HyperIo<S> {
    /// The shim, and the flag that makes its next read call `before_reuse` (see
    /// [`Connector::before_reuse`]).
    pub(crate) fn new(io: S, before_reuse: fn(&mut S)) -> (Self, Arc<AtomicBool>) {
        let reused = Arc::new(AtomicBool::new(false));
        let shim = HyperIo {
            io,
            buf: vec![0; SHIM_BUF].into_boxed_slice(),
            reused: Arc::clone(&reused),
            before_reuse,
        };
        (shim, reused)
    }
}

impl<S> MaybeTlsStream<S> {
    /// The TCP stream (under TLS, if any).
    fn tcp_mut(&mut self) -> &mut S {
        match self {
            MaybeTlsStream::Plain(s) => s,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::Tls(s) => s.get_mut().0,
        }
    }
}

/// [`Connector::before_reuse`] on the TCP stream under a [`MaybeTlsStream`].
pub(crate) fn before_reuse<C: Connector>(stream: &mut MaybeTlsStream<C::Stream>) {
    C::before_reuse(stream.tcp_mut());
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reused.load(Ordering::Acquire) {
            this.reused.store(false, Ordering::Relaxed);
            (this.before_reuse)(&mut this.io);
        }
        let want = cursor.remaining().min(this.buf.len());
        let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.buf[..want]))?;
        cursor.put_slice(&this.buf[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// Runs `fut`, failing with [`TransportErrorKind::Timeout`] once `timeout` has passed.
pub(crate) async fn with_timeout<E: Executor, T>(
    executor: &E,
    timeout: Duration,
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let Some(deadline) = executor.now().checked_add(timeout) else {
        return fut.await;
    };
    let sleep = std::pin::pin!(executor.sleep_until(deadline));
    let fut = std::pin::pin!(fut);
    match futures_util::future::select(fut, sleep).await {
        futures_util::future::Either::Left((res, _)) => res,
        futures_util::future::Either::Right(_) => Err(TransportError::new(
            TransportErrorKind::Timeout,
            format!("{} did not complete within {timeout:?}", what()),
        )),
    }
}

/// The TLS client side of a stack: a connector, or nothing in a build without TLS.
#[derive(Clone)]
pub(crate) struct TlsClient {
    #[cfg(feature = "rustls")]
    pub(crate) config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Opens TCP to `target` and, for TLS targets, performs the handshake. No timeout here.
pub(crate) async fn connect<C: Connector>(
    connector: &C,
    tls: &TlsClient,
    target: &Target,
) -> Result<MaybeTlsStream<C::Stream>, TransportError> {
    if target.tls && cfg!(not(feature = "rustls")) {
        return Err(no_tls(target));
    }
    let tcp = connector
        .connect(&target.host, target.port)
        .await
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Connect,
                format!("could not connect to {target}: {e}"),
            )
            .with_source(e)
        })?;
    if !target.tls {
        return Ok(MaybeTlsStream::Plain(tcp));
    }
    #[cfg(feature = "rustls")]
    {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
            TransportError::new(
                TransportErrorKind::Tls,
                format!("{target} is not a valid TLS server name"),
            )
            .with_source(e)
        })?;
        let Some(config) = &tls.config else {
            return Err(TransportError::new(
                TransportErrorKind::Unsupported,
                format!(
                    "{target} needs TLS, and the default TLS configuration did not build (no \
                     crypto provider: enable `rustls-ring` or `rustls-aws-lc`)"
                ),
            ));
        };
        let stream = futures_rustls::TlsConnector::from(std::sync::Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Tls,
                    format!(
                        "TLS handshake with {target} failed: {e}{}",
                        tls_hint(&e, target)
                    ),
                )
                .with_source(e)
            })?;
        Ok(MaybeTlsStream::Tls(Box::new(
            futures_rustls::TlsStream::Client(stream),
        )))
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = tls;
        Err(no_tls(target))
    }
}

/// What to do about the usual reasons a handshake fails (empty when there is nothing to add):
/// a certificate the client does not trust or that names another host, or a server that does
/// not speak TLS on that port.
#[cfg(feature = "rustls")]
fn tls_hint(e: &std::io::Error, target: &Target) -> String {
    use rustls::{CertificateError, Error, InvalidMessage};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => " (to trust a \
            private CA or a self-signed certificate, add it with `add_root_certificate_pem` or \
            `add_root_certificate_der` on the runtime's builder: `TokioRuntime::builder()`, \
            `SmolRuntime::builder()`, `Stack::builder()`)"
            .to_string(),
        Some(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            " (the certificate does not name {}: connect with a host name the certificate \
             names, or issue one that names it)",
            target.host
        ),
        Some(Error::InvalidMessage(InvalidMessage::InvalidContentType)) => format!(
            " (nothing speaks TLS on port {}: Asterisk serves TLS on its `tlsbindaddr` port \
             (http.conf `tlsenable = yes`, commonly 8089); use `http://` for its plain port)",
            target.port
        ),
        _ => String::new(),
    }
}

/// `https://` or `wss://` in a build without TLS.
fn no_tls(target: &Target) -> TransportError {
    TransportError::new(
        TransportErrorKind::Unsupported,
        format!(
            "{target} needs TLS, and this build has none: enable the `rustls-ring` (or \
             `rustls-aws-lc`) feature of ari-tokio / ari-smol"
        ),
    )
}

/// The server side of TLS on an accepted stream (see
/// [`Connector::bind`](crate::runtime::Connector::bind)): the handshake with `config` (its
/// certificate and key). Feature `rustls`.
#[cfg(feature = "rustls")]
pub async fn tls_accept<S>(
    stream: S,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> Result<MaybeTlsStream<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = futures_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Tls,
                format!("TLS handshake with a client failed: {e}"),
            )
            .with_source(e)
        })?;
    Ok(MaybeTlsStream::Tls(Box::new(
        futures_rustls::TlsStream::Server(stream),
    )))
}
