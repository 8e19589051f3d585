//! TLS client configuration (rustls with the `ring` provider, webpki roots).

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::sync::Arc;

/// Why [`SmolRuntimeBuilder::build`](crate::SmolRuntimeBuilder::build) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// PEM input held no certificate, or could not be parsed.
    InvalidPem(String),
    /// A certificate could not be used as a trust anchor.
    InvalidCertificate(String),
    /// Extra root certificates were given together with a whole `rustls::ClientConfig`:
    /// add the roots to that configuration instead.
    RootsWithTlsConfig,
    /// rustls refused the configuration.
    Tls(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidPem(m) => write!(f, "invalid PEM certificate: {m}"),
            ConfigError::InvalidCertificate(m) => write!(f, "unusable root certificate: {m}"),
            ConfigError::RootsWithTlsConfig => f.write_str(
                "extra root certificates cannot be combined with a custom rustls::ClientConfig; \
                 add them to that configuration",
            ),
            ConfigError::Tls(m) => write!(f, "TLS configuration refused: {m}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses every certificate of a PEM document.
pub(crate) fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::InvalidPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(ConfigError::InvalidPem(
            "no CERTIFICATE section found".to_owned(),
        ));
    }
    Ok(certs)
}

/// The default client configuration: webpki roots plus `extra`, verification on, no
/// client certificate, the `ring` provider.
pub(crate) fn default_config(
    extra: &[CertificateDer<'static>],
) -> Result<ClientConfig, ConfigError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| ConfigError::InvalidCertificate(e.to_string()))?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(config)
}

/// The TLS side of a runtime.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: futures_rustls::TlsConnector,
}

impl Tls {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Tls {
        Tls {
            connector: futures_rustls::TlsConnector::from(config),
        }
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
