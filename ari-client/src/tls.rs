//! TLS settings shared by the runtime adapters (feature `rustls`): the rustls client
//! configuration used for `https://` and `wss://`.
//!
//! `ari-tokio`'s `TokioRuntimeBuilder` and `ari-smol`'s `SmolRuntimeBuilder` keep a
//! [`TlsSettings`] and delegate their `add_root_certificate_pem`, `add_root_certificate_der`,
//! `built_in_roots` and `tls_config` methods to it; their `build` fails with a
//! [`TlsSetupError`].
//!
//! ```
//! # fn demo(my_ca_pem: &[u8]) -> Result<(), ari_client::tls::TlsSetupError> {
//! use ari_client::tls::TlsSettings;
//!
//! let mut settings = TlsSettings::new();
//! settings.add_root_certificate_pem(my_ca_pem); // e.g. the certificate of your Asterisk
//! let config = settings.build()?; // an `Arc<rustls::ClientConfig>`
//! # let _ = config;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The rustls client configuration type (a re-export), as taken by
/// [`TlsSettings::tls_config`] and returned by [`TlsSettings::build`].
pub use rustls::ClientConfig;

/// Writes a runtime builder's TLS methods (`add_root_certificate_pem`,
/// `add_root_certificate_der`, `built_in_roots`, `tls_config`), each delegating to the
/// builder's [`TlsSettings`] field named by the argument, so that every adapter offers the
/// same methods with the same documentation. Use it inside the builder's `impl` block:
/// `ari_client::tls_builder_methods!(tls);`.
#[doc(hidden)]
#[macro_export]
macro_rules! tls_builder_methods {
    ($field:ident) => {
        /// Trusts the certificates of a PEM file's content (one or more `CERTIFICATE`
        /// sections) as extra roots, besides the built-in ones. Parsed by
        /// [`build`](Self::build).
        pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
            self.$field.add_root_certificate_pem(pem);
            self
        }

        /// Trusts one DER-encoded certificate as an extra root. Parsed by
        /// [`build`](Self::build).
        pub fn add_root_certificate_der(mut self, der: impl Into<Vec<u8>>) -> Self {
            self.$field.add_root_certificate_der(der);
            self
        }

        /// Whether the built-in web PKI roots (`webpki-roots`) are trusted (default `true`).
        /// With `false` only the added roots are.
        pub fn built_in_roots(mut self, enabled: bool) -> Self {
            self.$field.built_in_roots(enabled);
            self
        }

        /// Uses this rustls configuration as it is (roots, client certificates, verifier,
        /// ALPN) for `https://` and `wss://`; added roots and
        /// [`built_in_roots`](Self::built_in_roots) are then ignored. Its ALPN list must not
        /// offer `h2` (this client speaks HTTP/1.1).
        pub fn tls_config(
            mut self,
            config: impl Into<::std::sync::Arc<$crate::tls::ClientConfig>>,
        ) -> Self {
            self.$field.tls_config(config);
            self
        }
    };
}

/// Why a runtime builder (`TokioRuntimeBuilder`, `SmolRuntimeBuilder`) or
/// [`TlsSettings::build`] could not build the TLS configuration (an added root certificate
/// that does not parse, for instance).
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
enum ExtraRoot {
    Pem(Vec<u8>),
    Der(Vec<u8>),
}

/// What a runtime trusts for `https://` and `wss://`: the built-in web PKI roots
/// (`webpki-roots`, unless disabled), extra roots, or a whole [`ClientConfig`] handed over
/// as it is.
///
/// The default: the built-in roots, no extra roots, no custom configuration.
#[derive(Clone)]
pub struct TlsSettings {
    extra_roots: Vec<ExtraRoot>,
    built_in_roots: bool,
    config: Option<Arc<ClientConfig>>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            extra_roots: Vec::new(),
            built_in_roots: true,
            config: None,
        }
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("extra_roots", &self.extra_roots.len())
            .field("built_in_roots", &self.built_in_roots)
            .field("custom_tls_config", &self.config.is_some())
            .finish()
    }
}

impl TlsSettings {
    /// The defaults (see [`TlsSettings`]).
    pub fn new() -> Self {
        TlsSettings::default()
    }

    /// Trusts the certificates of a PEM file's content (one or more `CERTIFICATE` sections) as
    /// extra roots, besides the built-in ones. Parsed by [`build`](Self::build).
    pub fn add_root_certificate_pem(&mut self, pem: impl AsRef<[u8]>) -> &mut Self {
        self.extra_roots.push(ExtraRoot::Pem(pem.as_ref().to_vec()));
        self
    }

    /// Trusts one DER-encoded certificate as an extra root. Parsed by [`build`](Self::build).
    pub fn add_root_certificate_der(&mut self, der: impl Into<Vec<u8>>) -> &mut Self {
        self.extra_roots.push(ExtraRoot::Der(der.into()));
        self
    }

    /// Whether the built-in web PKI roots (`webpki-roots`) are trusted (default `true`). With
    /// `false` only the added roots are.
    pub fn built_in_roots(&mut self, enabled: bool) -> &mut Self {
        self.built_in_roots = enabled;
        self
    }

    /// Uses this rustls configuration as it is (roots, client certificates, verifier, ALPN);
    /// added roots and [`built_in_roots`](Self::built_in_roots) are then ignored.
    pub fn tls_config(&mut self, config: impl Into<Arc<ClientConfig>>) -> &mut Self {
        self.config = Some(config.into());
        self
    }

    /// How many extra roots were added (not yet parsed).
    pub fn extra_root_count(&self) -> usize {
        self.extra_roots.len()
    }

    /// Whether the built-in web PKI roots are trusted (see
    /// [`built_in_roots`](Self::built_in_roots)).
    pub fn uses_built_in_roots(&self) -> bool {
        self.built_in_roots
    }

    /// The configuration given to [`tls_config`](Self::tls_config), if any.
    pub fn custom_config(&self) -> Option<&Arc<ClientConfig>> {
        self.config.as_ref()
    }

    /// The client configuration: the one given to [`tls_config`](Self::tls_config) if any;
    /// otherwise the built-in web PKI roots (unless disabled) plus the extra roots,
    /// certificate verification on, no client certificate, ALPN `http/1.1`, the `ring`
    /// crypto provider. Fails if an extra root does not parse.
    pub fn build(&self) -> Result<Arc<ClientConfig>, TlsSetupError> {
        if let Some(config) = &self.config {
            return Ok(Arc::clone(config));
        }
        let mut roots = RootCertStore::empty();
        if self.built_in_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for (index, root) in self.extra_roots.iter().enumerate() {
            match root {
                ExtraRoot::Der(der) => {
                    roots.add(CertificateDer::from(der.clone())).map_err(|e| {
                        TlsSetupError::new(format!("root certificate #{index} (DER): {e}"))
                    })?;
                }
                ExtraRoot::Pem(pem) => {
                    let mut found = 0usize;
                    for cert in CertificateDer::pem_slice_iter(pem) {
                        let pem_error =
                            |e: &dyn fmt::Display| format!("root certificate #{index} (PEM): {e}");
                        let cert = cert.map_err(|e| TlsSetupError::new(pem_error(&e)))?;
                        roots
                            .add(cert)
                            .map_err(|e| TlsSetupError::new(pem_error(&e)))?;
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

    /// The default configuration ([`TlsSettings::default`] built), which cannot fail: there
    /// are no extra roots to parse, and the `ring` provider supports the default protocol
    /// versions.
    pub fn default_config() -> Arc<ClientConfig> {
        #[allow(clippy::expect_used)]
        TlsSettings::default()
            .build()
            .expect("the default TLS configuration builds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_trusts_the_web_pki_and_speaks_http1() {
        let config = TlsSettings::default_config();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn bad_roots_are_reported_by_index() {
        let mut settings = TlsSettings::new();
        settings
            .add_root_certificate_pem("not a certificate")
            .add_root_certificate_der(vec![1, 2, 3]);
        let e = settings.build().expect_err("no CERTIFICATE section");
        assert_eq!(
            e.message,
            "root certificate #0 (PEM): no CERTIFICATE section found"
        );
        let mut settings = TlsSettings::new();
        settings.add_root_certificate_der(vec![1, 2, 3]);
        let e = settings.build().expect_err("not DER");
        assert!(e.message.starts_with("root certificate #0 (DER): "), "{e}");
    }

    #[test]
    fn a_custom_config_is_used_as_it_is() {
        let custom = TlsSettings::default_config();
        let mut settings = TlsSettings::new();
        settings
            .add_root_certificate_pem("ignored")
            .built_in_roots(false)
            .tls_config(Arc::clone(&custom));
        assert!(Arc::ptr_eq(&settings.build().expect("custom"), &custom));
        assert_eq!(
            format!("{settings:?}"),
            "TlsSettings { extra_roots: 1, built_in_roots: false, custom_tls_config: true }"
        );
    }
}
