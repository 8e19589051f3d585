//! TLS client configuration (rustls with the `ring` provider, webpki roots).

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::sync::Arc;

/// Why a [`SmolRuntimeBuilder`](crate::SmolRuntimeBuilder) could not build its TLS
/// configuration (an added root certificate that does not parse, for instance).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSetupError {
    /// What went wrong.
    pub message: String,
}

impl TlsSetupError {
    fn new(message: impl Into<String>) -> Self {
        TlsSetupError {
            message: message.into(),
        }
    }
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS setup failed: {}", self.message)
    }
}

impl std::error::Error for TlsSetupError {}

/// An extra root certificate as the user handed it in.
#[derive(Clone)]
pub(crate) enum ExtraRoot {
    Pem(Vec<u8>),
    Der(Vec<u8>),
}

/// The client configuration: the webpki roots (unless disabled) plus `extra`, verification
/// on, no client certificate, ALPN `http/1.1`, the `ring` provider.
pub(crate) fn build_config(
    extra: &[ExtraRoot],
    built_in_roots: bool,
) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if built_in_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for (index, root) in extra.iter().enumerate() {
        let certs = match root {
            ExtraRoot::Der(der) => vec![CertificateDer::from(der.clone())],
            ExtraRoot::Pem(pem) => CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsSetupError::new(format!("root certificate #{index} (PEM): {e}")))?,
        };
        if certs.is_empty() {
            return Err(TlsSetupError::new(format!(
                "root certificate #{index} (PEM): no CERTIFICATE section found"
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| TlsSetupError::new(format!("root certificate #{index}: {e}")))?;
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::new(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS side of a runtime.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<ClientConfig>,
    connector: futures_rustls::TlsConnector,
}

impl Tls {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Tls {
        Tls {
            connector: futures_rustls::TlsConnector::from(config.clone()),
            config,
        }
    }

    pub(crate) fn config(&self) -> &Arc<ClientConfig> {
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
