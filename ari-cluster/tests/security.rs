//! NATS authentication and TLS of the proxies and instances: an NKey, a private certificate
//! authority, a credentials file.

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
