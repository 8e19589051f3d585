//! NATS authentication and TLS of the proxies and instances: an NKey, a private certificate
//! authority, a client certificate (mutual TLS), a credentials file (a user JWT of a server in
//! operator mode).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use ari_cluster::nats_server::NatsServer;
use ari_cluster::{Cluster, ClusterError, NatsSecurity, Proxy, ProxyError};
use common::*;

fn nats_with(config: &str) -> NatsServer {
    match NatsServer::start_with_config(config) {
        Ok(s) => s,
        Err(e) => panic!("these tests need nats-server: {e}"),
    }
}

/// A file of this test's in the temporary directory (removed by the caller's guard).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "ari-cluster-security-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("temporary file written");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Connects an instance with `security`; the error if it fails (bounded).
async fn connect(url: &str, security: NatsSecurity) -> Result<Cluster, ClusterError> {
    tokio::time::timeout(
        Duration::from_secs(20),
        Cluster::builder(url).nats_security(security).connect(),
    )
    .await
    .expect("connecting ends")
}

/// A proxy and an instance both authenticated with `security` see each other.
async fn proxy_and_instance_meet(url: &str, security: NatsSecurity) {
    let a = node("node-a");
    let mut config = proxy_config(&a, url);
    config.announce_interval = Duration::from_millis(100);
    config.nats_security = security.clone();
    let proxy = start_proxy(&a, config).await;
    let cluster = connect(url, security).await.expect("instance connects");
    assert!(cluster.wait_for_nodes(1, Duration::from_secs(20)).await);
    let client = cluster.client().expect("client");
    let info = client
        .asterisk()
        .get_info()
        .await
        .expect("REST through the proxy");
    assert!(info.system.is_some());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_authenticates_the_proxy_and_the_instances() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let nats = nats_with(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    ));
    // Without the key, refused.
    let refused = connect(&nats.url(), NatsSecurity::default()).await;
    assert!(matches!(refused, Err(ClusterError::Nats(_))), "{refused:?}");
    let a = node("node-a");
    let err = Proxy::start(proxy_config(&a, &nats.url()))
        .await
        .expect_err("a proxy without the key is refused");
    assert!(matches!(err, ProxyError::Nats(_)), "{err}");

    let mut security = NatsSecurity::default();
    security.nkey_seed = Some(seed.clone());
    assert!(
        !format!("{security:?}").contains(&seed),
        "the seed is not logged"
    );
    proxy_and_instance_meet(&nats.url(), security).await;
    // The builder's shortcut too.
    let cluster = Cluster::builder(&nats.url())
        .nats_nkey_seed(&seed)
        .connect()
        .await
        .expect("connects with the seed");
    assert!(cluster.wait_for_nodes(0, Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_certificate_authority_is_trusted_for_nats_tls() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a certificate");
    let cert = TempFile::new("cert.pem", &ck.cert.pem());
    let key = TempFile::new("key.pem", &ck.signing_key.serialize_pem());
    let nats = nats_with(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        cert.0.display(),
        key.0.display()
    ));
    let url = format!("tls://127.0.0.1:{}", nats.port());
    // The system's authorities do not know it.
    let refused = connect(&url, NatsSecurity::default()).await;
    assert!(matches!(refused, Err(ClusterError::Nats(_))), "{refused:?}");

    let mut security = NatsSecurity::default();
    security.root_certificates = Some(cert.0.clone());
    security.require_tls = true;
    proxy_and_instance_meet(&url, security).await;
    let cluster = Cluster::builder(&url)
        .nats_root_certificates(cert.0.clone())
        .connect()
        .await
        .expect("connects trusting the authority");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credentials_file_fails_the_connection_naming_it() {
    let nats = nats_with("");
    let path = std::env::temp_dir().join("ari-cluster-no-such.creds");
    let err = Cluster::builder(&nats.url())
        .nats_credentials_file(&path)
        .connect()
        .await
        .expect_err("no credentials");
    assert!(matches!(err, ClusterError::Nats(_)), "{err}");
    let chain = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(chain.contains("ari-cluster-no-such.creds"), "{chain}");

    let a = node("node-a");
    let mut config = proxy_config(&a, &nats.url());
    config.nats_security.credentials_file = Some(path);
    let err = Proxy::start(config).await.expect_err("no credentials");
    assert!(matches!(err, ProxyError::Nats(_)), "{err}");
}

/// The `ari-proxy` binary of this build serving `server` on `url`, with `extra` arguments
/// (killed on drop).
struct ProxyProcess(std::process::Child);

impl ProxyProcess {
    fn start(
        server: &ari_testkit::MockServer,
        url: &str,
        extra: &[&std::ffi::OsStr],
    ) -> ProxyProcess {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ari-proxy"));
        for var in [
            "NATS_URL",
            "NATS_CREDS",
            "NATS_NKEY",
            "NATS_CA",
            "NATS_CERT",
            "NATS_KEY",
            "NATS_TLS",
            "ARI_APP",
        ] {
            command.env_remove(var);
        }
        let child = command
            .args(["--ari-url", &server.base_url(), "--user", server.username()])
            .args(["--password", server.password(), "--nats", url, "--app", APP])
            .args(["--announce-secs", "0.1"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ari-proxy runs");
        ProxyProcess(child)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until `cluster` sees node `id` announced.
async fn sees_node(cluster: &Cluster, id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if cluster.nodes().iter().any(|n| n.id == id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A NATS JWT (`ed25519-nkey`, version 2) saying `nats` about `subject`, signed by `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{name}-{iat}"),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("signed");
    format!("{signed}.{}", b64.encode(signature))
}

/// A `.creds` file's text, as `nsc` writes it.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_authenticates_to_a_server_in_operator_mode() {
    // An operator, its account, and a user of the account with its credentials file.
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "ari",
        serde_json::json!({
            "type": "account", "version": 2,
            "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                       "wildcards": true, "conn": -1, "leaf": -1},
        }),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "ari-user",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
                           "subs": -1, "data": -1, "payload": -1}),
    );
    let operator_file = TempFile::new("operator.jwt", &operator_jwt);
    let creds_file = TempFile::new("user.creds", &creds(&user_jwt, &user.seed().expect("seed")));
    let nats = nats_with(&format!(
        "operator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n}}\n",
        operator_file.0.display(),
        account.public_key(),
        account_jwt
    ));
    // Without credentials, refused.
    let refused = connect(&nats.url(), NatsSecurity::default()).await;
    assert!(matches!(refused, Err(ClusterError::Nats(_))), "{refused:?}");
    let a = node("node-a");
    let err = Proxy::start(proxy_config(&a, &nats.url()))
        .await
        .expect_err("a proxy without credentials is refused");
    assert!(matches!(err, ProxyError::Nats(_)), "{err}");
    // A user JWT the account did not sign, refused too.
    let stranger = nkeys::KeyPair::new_account();
    let forged = TempFile::new(
        "forged.creds",
        &creds(
            &nats_jwt(
                &stranger,
                &user.public_key(),
                "ari-user",
                serde_json::json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1}),
            ),
            &user.seed().expect("seed"),
        ),
    );
    let mut security = NatsSecurity::default();
    security.credentials_file = Some(forged.0.clone());
    let refused = connect(&nats.url(), security).await;
    assert!(matches!(refused, Err(ClusterError::Nats(_))), "{refused:?}");

    let mut security = NatsSecurity::default();
    security.credentials_file = Some(creds_file.0.clone());
    proxy_and_instance_meet(&nats.url(), security).await;
    // The builder's shortcut too, and the binary's --nats-creds.
    let cluster = Cluster::builder(&nats.url())
        .nats_credentials_file(&creds_file.0)
        .connect()
        .await
        .expect("connects with the credentials file");
    let b = node("node-b");
    let _proxy = ProxyProcess::start(
        &b,
        &nats.url(),
        &["--nats-creds".as_ref(), creds_file.0.as_os_str()],
    );
    assert!(
        sees_node(&cluster, "node-b").await,
        "ari-proxy --nats-creds connects"
    );
}

/// A certificate authority and, signed by it, a certificate for `names` (PEM: certificate,
/// key).
struct Authority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Authority {
    fn new() -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ari-cluster test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        Authority {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, names: &[&str], purpose: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![purpose];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_authenticates_to_a_server_verifying_clients() {
    let ca = Authority::new();
    let (server_cert, server_key) = ca.sign(
        &["127.0.0.1", "localhost"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        ca.sign(&["ari-proxy"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let ca_file = TempFile::new("mtls-ca.pem", &ca.pem());
    let server_cert = TempFile::new("mtls-server.pem", &server_cert);
    let server_key = TempFile::new("mtls-server-key.pem", &server_key);
    let client_cert = TempFile::new("mtls-client.pem", &client_cert);
    let client_key = TempFile::new("mtls-client-key.pem", &client_key);
    // A client certificate of another authority.
    let other = Authority::new();
    let (other_cert, other_key) =
        other.sign(&["intruder"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let other_cert = TempFile::new("mtls-other.pem", &other_cert);
    let other_key = TempFile::new("mtls-other-key.pem", &other_key);
    let nats = nats_with(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        server_cert.0.display(),
        server_key.0.display(),
        ca_file.0.display()
    ));
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let trusting = || {
        let mut security = NatsSecurity::default();
        security.root_certificates = Some(ca_file.0.clone());
        security.require_tls = true;
        security
    };
    // Trusting the server but without a certificate of its own: refused.
    let refused = connect(&url, trusting()).await;
    assert!(matches!(refused, Err(ClusterError::Nats(_))), "{refused:?}");
    let a = node("node-a");
    let mut config = proxy_config(&a, &url);
    config.nats_security = trusting();
    let err = Proxy::start(config)
        .await
        .expect_err("a proxy without a client certificate is refused");
    assert!(matches!(err, ProxyError::Nats(_)), "{err}");
    // With a certificate another authority signed: refused.
    let mut security = trusting();
    security.client_certificate = Some((other_cert.0.clone(), other_key.0.clone()));
    let refused = connect(&url, security).await;
    assert!(matches!(refused, Err(ClusterError::Nats(_))), "{refused:?}");

    let mut security = trusting();
    security.client_certificate = Some((client_cert.0.clone(), client_key.0.clone()));
    proxy_and_instance_meet(&url, security.clone()).await;
    // The binary's --nats-ca, --nats-cert, --nats-key and --nats-tls.
    let cluster = connect(&url, security).await.expect("instance connects");
    let b = node("node-b");
    let _proxy = ProxyProcess::start(
        &b,
        &url,
        &[
            "--nats-ca".as_ref(),
            ca_file.0.as_os_str(),
            "--nats-cert".as_ref(),
            client_cert.0.as_os_str(),
            "--nats-key".as_ref(),
            client_key.0.as_os_str(),
            "--nats-tls".as_ref(),
        ],
    );
    assert!(
        sees_node(&cluster, "node-b").await,
        "ari-proxy with a client certificate connects"
    );
}
