//! TLS settings: the rustls client configuration used for `https://` and `wss://`.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Why a [`crate::TokioRuntimeBuilder`] could not build its TLS configuration.
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

/// Builds the client configuration: the built-in web PKI roots (unless disabled) plus the extra
/// roots, certificate verification on, ALPN `http/1.1`, the `ring` crypto provider.
pub(crate) fn build_config(
    extra: &[ExtraRoot],
    built_in_roots: bool,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if built_in_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for (index, root) in extra.iter().enumerate() {
        match root {
            ExtraRoot::Der(der) => {
                roots.add(CertificateDer::from(der.clone())).map_err(|e| {
                    TlsSetupError::new(format!("root certificate #{index} (DER): {e}"))
                })?;
            }
            ExtraRoot::Pem(pem) => {
                let mut found = 0usize;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| {
                        TlsSetupError::new(format!("root certificate #{index} (PEM): {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        TlsSetupError::new(format!("root certificate #{index} (PEM): {e}"))
                    })?;
                    found += 1;
                }
                if found == 0 {
                    return Err(TlsSetupError::new(format!(
                        "root certificate #{index} (PEM): no CERTIFICATE section found"
                    )));
                }
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::new(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
