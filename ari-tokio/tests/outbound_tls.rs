//! The simulated Asterisk dialling a `wss://` outbound server honours the TLS options of
//! `websocket_client.conf` as Asterisk's `tcptls.c` does: `verify_server_cert` (the chain
//! must lead to `ca_list_file`), `verify_server_hostname` (the uri's host must be a common
//! name or a DNS name of the certificate — never an IP address entry), and the client
//! certificate (`cert_file`, `priv_key_file`) presented to a server that asks for one.
//! Certificates are made here with rcgen; the application's server is rustls.
//!
//! Waits are bounded by a generous limit only so that a hang fails the test (never a timing
//! assertion).

use std::sync::Arc;
use std::time::Duration;

use ari_testkit::{MockServer, OutboundConfig, PlaceCall};
use ari_tokio::ari_client::rustls;
use ari_tokio::{ConnectionType, OutboundOptions, OutboundServer};
use ari_tokio::{TokioConnector, TokioExecutor, TokioRuntime};

/// Generous bound for liveness checks (never a timing assertion).
const LIVENESS: Duration = Duration::from_secs(30);

type Server = OutboundServer<TokioExecutor, TokioConnector>;

/// A self-signed certificate for `names` (IP addresses become IP address entries, other
/// names DNS entries) with the common name `cn`: its DER and PKCS#8 key.
fn certificate(names: &[&str], cn: &str) -> (Vec<u8>, Vec<u8>) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate parameters");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("a certificate");
    (cert.der().to_vec(), key.serialize_der())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The application's TLS configuration with `cert`, asking for a client certificate that
/// leads to `client_root` when one is given.
fn server_tls(
    (der, key): &(Vec<u8>, Vec<u8>),
    client_root: Option<&[u8]>,
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_root {
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
                .expect("the client root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(der.clone())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.clone().into()),
        )
        .expect("a server configuration");
    Arc::new(config)
}

async fn server(tls: Arc<rustls::ServerConfig>) -> Server {
    OutboundOptions::new(TokioRuntime::new())
        .credentials("obuser", "obsecret")
        .expect("credentials")
        .connection_type(ConnectionType::PerCall)
        .tls(tls)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
}

/// A per-call section dialling `host` (with the server's port) that gives a call up after
/// one failed attempt.
fn section(server: &Server, host: &str) -> OutboundConfig {
    let uri = format!("wss://{host}:{}/ari-ob", server.local_addr().port());
    OutboundConfig::per_call(&uri, ["hello"])
        .credentials("obuser", "obsecret")
        .reconnect(Duration::from_millis(10), 1)
        .stasis_start_delay(Duration::from_millis(20))
        .close_after_stasis_end(Duration::from_millis(50))
}

/// Places a call on a simulated Asterisk with `cfg` and says whether it reached the
/// application (`true`: the call came out of `next_call`; `false`: Asterisk gave it up
/// after its failed attempt, nothing accepted).
async fn call_reaches_the_application(server: &Server, cfg: OutboundConfig) -> bool {
    let accepted = server.stats().accepted;
    let mock = MockServer::builder().outbound(cfg).start();
    mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
        .expect("the simulator places the call");
    let end = tokio::time::Instant::now() + LIVENESS;
    loop {
        if let Some(call) = tokio::time::timeout(Duration::from_millis(5), server.next_call())
            .await
            .ok()
            .flatten()
        {
            assert!(call.start.application.starts_with("hello:PJSIP/alice-"));
            tokio::time::timeout(LIVENESS, call.channel.hangup())
                .await
                .expect("the hangup ends")
                .expect("hangup over wss");
            assert_eq!(mock.outbound_stats().connected, 1);
            return true;
        }
        let seen = mock.outbound_stats();
        if seen.gave_up == 1 {
            assert_eq!(seen.connected, 0, "{seen:?}");
            assert_eq!(server.stats().accepted, accepted, "nothing accepted");
            return false;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the call neither came nor was given up ({seen:?})"
        );
    }
}

/// `verify_server_cert` and `verify_server_hostname`, as Asterisk checks them: a
/// certificate naming `127.0.0.1` only as an IP address entry (what rcgen and most tools
/// make for an address) fails the host name check of `wss://127.0.0.1` — Asterisk compares
/// the host with the common name and the DNS names only — yet passes with
/// `verify_server_hostname = no`, and `wss://localhost` (a DNS name of it) passes; a
/// certificate with the common name `127.0.0.1` passes; a certificate not in `ca_list`
/// fails unless `verify_server_cert = no`, which checks neither chain nor name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_asterisk_checks_the_server_certificate_as_asterisk_does() {
    let ip_entry = certificate(&["127.0.0.1", "localhost"], "ari app");
    let other = certificate(&["localhost"], "someone else");
    let app = server(server_tls(&ip_entry, None)).await;
    let trusted = |host: &str| section(&app, host).trust_certificate(ip_entry.0.clone());

    assert!(
        !call_reaches_the_application(&app, trusted("127.0.0.1")).await,
        "an IP address entry does not name the host for Asterisk"
    );
    assert!(
        call_reaches_the_application(&app, trusted("127.0.0.1").verify_server_hostname(false))
            .await,
        "verify_server_hostname = no: the chain alone"
    );
    assert!(
        call_reaches_the_application(&app, trusted("localhost")).await,
        "a DNS name of the certificate"
    );
    assert!(
        !call_reaches_the_application(
            &app,
            section(&app, "localhost")
                .trust_certificate(other.0.clone())
                .verify_server_hostname(false)
        )
        .await,
        "a certificate not in ca_list"
    );
    assert!(
        call_reaches_the_application(
            &app,
            section(&app, "127.0.0.1")
                .trust_certificate(other.0.clone())
                .verify_server_cert(false)
        )
        .await,
        "verify_server_cert = no: neither chain nor name"
    );
    assert!(
        call_reaches_the_application(&app, section(&app, "127.0.0.1").verify_server_cert(false))
            .await,
        "verify_server_cert = no needs no ca_list"
    );

    let common_name = certificate(&["localhost"], "127.0.0.1");
    let app = server(server_tls(&common_name, None)).await;
    assert!(
        call_reaches_the_application(
            &app,
            section(&app, "127.0.0.1").trust_certificate(common_name.0.clone())
        )
        .await,
        "the common name names the host"
    );
}

/// An application whose TLS server asks for a client certificate (mutual TLS): Asterisk
/// without `cert_file`/`priv_key_file` fails the handshake (counted on both sides), with
/// a certificate the application does not trust too, and with the trusted one the call
/// comes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_asterisk_presents_its_client_certificate() {
    let server_cert = certificate(&["localhost"], "ari app");
    let asterisk = certificate(&["pbx.example"], "pbx.example");
    let stranger = certificate(&["pbx.example"], "pbx.example");
    let app = server(server_tls(&server_cert, Some(&asterisk.0))).await;
    let trusted = || section(&app, "localhost").trust_certificate(server_cert.0.clone());

    assert!(
        !call_reaches_the_application(&app, trusted()).await,
        "no client certificate"
    );
    assert!(
        !call_reaches_the_application(
            &app,
            trusted().client_certificate(vec![stranger.0.clone()], stranger.1.clone())
        )
        .await,
        "a client certificate the application does not trust"
    );
    assert!(app.stats().failed >= 2, "{:?}", app.stats());
    assert!(
        call_reaches_the_application(
            &app,
            trusted().client_certificate(vec![asterisk.0.clone()], asterisk.1.clone())
        )
        .await,
        "the trusted client certificate"
    );
}
