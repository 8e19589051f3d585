//! TLS settings (feature `rustls`): the rustls client configuration used for `https://`
//! and `wss://`, and [`TlsSetupError`] (always present: [`StackBuilder::build`] returns it).
//!
//! [`StackBuilder`] keeps a `TlsSettings` and offers its methods
//! (`add_root_certificate_pem`, `built_in_roots`, `tls_config`, …).
//!
//! The crypto provider: `ring` with the `rustls-ring` feature (the adapters' default),
//! `aws-lc-rs` with `rustls-aws-lc` (`ring` wins if both are on); with neither, the process
//! default installed with `rustls::crypto::CryptoProvider::install_default`.
//!
//! [`StackBuilder`]: crate::stack::StackBuilder
//! [`StackBuilder::build`]: crate::stack::StackBuilder::build
//!
#![cfg_attr(
    feature = "rustls",
    doc = r##"
```
# fn demo(my_ca_pem: &[u8]) -> Result<(), ari_client::tls::TlsSetupError> {
use ari_client::tls::TlsSettings;

let mut settings = TlsSettings::new();
settings.add_root_certificate_pem(my_ca_pem); // e.g. the certificate of your Asterisk
let config = settings.build()?; // an `Arc<rustls::ClientConfig>`
# let _ = config;
# Ok(())
# }
```
"##
)]

use std::fmt;
#[cfg(feature = "rustls")]
use std::sync::Arc;

#[cfg(feature = "rustls")]
use rustls::RootCertStore;
#[cfg(feature = "rustls")]
use rustls_pki_types::pem::PemObject;
#[cfg(feature = "rustls")]
use rustls_pki_types::CertificateDer;

/// The rustls client configuration type (a re-export), as taken by
/// [`TlsSettings::tls_config`] and returned by [`TlsSettings::build`].
#[cfg(feature = "rustls")]
pub use rustls::ClientConfig;

/// Why a [`StackBuilder`](crate::stack::StackBuilder) (or `TlsSettings::build`) could not build the TLS configuration (an added root certificate
/// that does not parse, for instance).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSetupError {
    /// What went wrong.
    pub message: String,
}

impl TlsSetupError {
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
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

#[cfg(feature = "rustls")]
/// An extra root certificate as the user handed it in.
#[derive(Clone)]
enum ExtraRoot {
    Pem(Vec<u8>),
    Der(Vec<u8>),
}

#[cfg(feature = "rustls")]
/// What a runtime trusts for `https://` and `wss://`: the built-in web PKI roots
/// (`webpki-roots`, unless disabled), extra roots, or a whole [`ClientConfig`] handed over
/// as it is.
///
/// The default: the built-in roots, no extra roots, no custom configuration.
#[derive(Clone)]
pub struct TlsSettings {
    extra_roots: Vec<ExtraRoot>,
    built_in_roots: bool,
    platform_roots: bool,
    config: Option<Arc<ClientConfig>>,
}

#[cfg(feature = "rustls")]
impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            extra_roots: Vec::new(),
            built_in_roots: true,
            platform_roots: false,
            config: None,
        }
    }
}

#[cfg(feature = "rustls")]
impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("extra_roots", &self.extra_roots.len())
            .field("built_in_roots", &self.built_in_roots)
            .field("custom_tls_config", &self.config.is_some())
            .finish()
    }
}

#[cfg(feature = "rustls")]
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

    /// Whether the operating system's trusted roots are trusted too (default `false`; feature
    /// `native-roots`, through `rustls-native-certs`). Loaded by [`build`](Self::build).
    #[cfg(feature = "native-roots")]
    pub fn platform_roots(&mut self, enabled: bool) -> &mut Self {
        self.platform_roots = enabled;
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
        if self.platform_roots {
            load_platform_roots(&mut roots)?;
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
        let provider = crypto_provider()?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::new(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(all(test, feature = "rustls-ring"))]
mod tests {
    use super::*;

    #[test]
    fn default_config_trusts_the_web_pki_and_speaks_http1() {
        let config = TlsSettings::default().build().expect("the default builds");
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
        let custom = TlsSettings::default().build().expect("the default builds");
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

/// The crypto provider (see the module documentation).
#[cfg(feature = "rustls")]
fn crypto_provider() -> Result<Arc<rustls::crypto::CryptoProvider>, TlsSetupError> {
    // rustls 0.23.48 deprecates `ring::default_provider` (ring has no post-quantum key
    // exchange); it still works, and `rustls-aws-lc` is there for those who want one.
    #[cfg(feature = "rustls-ring")]
    #[allow(deprecated)]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(all(feature = "rustls-aws-lc", not(feature = "rustls-ring")))]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(not(any(feature = "rustls-ring", feature = "rustls-aws-lc")))]
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| {
            TlsSetupError::new(
                "no crypto provider: enable the `rustls-ring` or `rustls-aws-lc` feature, or \
                 install a process default with `CryptoProvider::install_default`",
            )
        })
}

/// Adds the operating system's trusted roots; fails only if none could be loaded.
#[cfg(feature = "rustls")]
fn load_platform_roots(roots: &mut RootCertStore) -> Result<(), TlsSetupError> {
    #[cfg(feature = "native-roots")]
    {
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none found".to_owned(), ToString::to_string);
            return Err(TlsSetupError::new(format!(
                "the platform's root certificates could not be loaded: {why}"
            )));
        }
        Ok(())
    }
    #[cfg(not(feature = "native-roots"))]
    {
        let _ = roots;
        Ok(())
    }
}
