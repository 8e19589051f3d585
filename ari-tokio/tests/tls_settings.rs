//! `TlsSettings`: what a client will trust, and roots that do not parse failing at build time
//! with a message naming the root.

use std::sync::Arc;

use ari_tokio::ari_client::tls::TlsSettings;

#[test]
fn the_defaults_trust_the_web_pki_and_speak_http_1_1() {
    let settings = TlsSettings::new();
    assert!(settings.uses_built_in_roots());
    assert_eq!(settings.extra_root_count(), 0);
    assert!(settings.custom_config().is_none());
    let config = settings.build().expect("the defaults build");
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
}

#[test]
fn a_root_that_does_not_parse_fails_with_its_index() {
    let mut der = TlsSettings::new();
    der.add_root_certificate_der(b"not a certificate".to_vec());
    assert_eq!(der.extra_root_count(), 1);
    let err = der.build().expect_err("garbage DER");
    assert!(
        err.to_string().contains("root certificate #0 (DER)"),
        "{err}"
    );

    let mut pem = TlsSettings::new();
    pem.built_in_roots(false)
        .add_root_certificate_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert!(!pem.uses_built_in_roots());
    let err = pem.build().expect_err("no certificate in the PEM");
    assert!(
        err.to_string()
            .contains("root certificate #0 (PEM): no CERTIFICATE section found"),
        "{err}"
    );
}

#[test]
fn a_whole_rustls_config_is_used_as_it_is() {
    let mut base = TlsSettings::new();
    base.built_in_roots(false);
    let custom = base.build().expect("an empty root store builds");
    let mut settings = TlsSettings::new();
    settings
        .add_root_certificate_der(b"ignored with a custom config".to_vec())
        .tls_config(Arc::clone(&custom));
    assert!(settings.custom_config().is_some());
    let built = settings
        .build()
        .expect("the custom config, not the extra roots");
    assert!(Arc::ptr_eq(&built, &custom));
}
