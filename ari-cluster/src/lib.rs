//! # ari-cluster
//!
//! ARI over NATS: many Asterisk nodes, several instances of one application, the same typed
//! client API.
//!
//! ```text
//!  Asterisk A ── ari-proxy A ─┐                  ┌─ instance 1 (ari_cluster::Client)
//!                             ├──── NATS ────────┤
//!  Asterisk B ── ari-proxy B ─┘                  └─ instance 2 (ari_cluster::Client)
//! ```
//!
//! - [`Proxy`] (binary `ari-proxy`) runs beside one Asterisk. It publishes every event frame
//!   as Asterisk sent it, answers REST requests carried in Asterisk's own `RESTRequest`
//!   envelope (so every operation of every Asterisk version works with no per-operation
//!   code), and announces its node (Asterisk's entity id).
//! - [`Cluster`] gives an application instance the typed [`ari_client::Client`] over NATS
//!   ([`Client`]): instance objects, `on`/`once`/streams, every operation. Operations on a
//!   resource go to the node that has it; creations and lists to any node (or to one picked
//!   with [`Cluster::client_on`]).
//! - Several instances of one application share its calls: each new call (`StasisStart`) is
//!   offered to the application's NATS queue group and taken by exactly one instance, and
//!   every later event of that call's resources (its channel, the playbacks, recordings,
//!   bridges and channels it creates or dials) goes to that instance only.
//!
//! The subjects and payloads are in [`wire`]. A node that stops announcing itself is reported
//! down ([`NodeEvent::Down`]) and operations on its resources fail at once with a
//! [`NodeDown`] error (the node, since when, why), the source of the
//! [`ari_client::TransportError`] they return.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod cluster;
mod dialplan;
pub mod nats_server;
mod nodes;
mod owners;
mod proxy;
mod scan;
mod tap;
pub mod wire;

pub use cluster::{
    Bridge, Channel, Client, Cluster, ClusterBuilder, ClusterError, ClusterStats, NatsRuntime,
    NatsWs, NodeDown, NodeEvent, NodeInfo,
};
pub use proxy::{Proxy, ProxyConfig, ProxyError};

/// How a proxy or an instance authenticates to NATS and checks its server's TLS certificate,
/// beyond what the NATS URL carries (a user and password or a token:
/// `nats://user:secret@host:4222`; `tls://host:4222` for TLS). The default: nothing more
/// (the system's certificate authorities for TLS).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use ari_cluster::{Cluster, NatsSecurity};
/// let mut security = NatsSecurity::default();
/// security.credentials_file = Some("/etc/ari/app.creds".into());
/// security.root_certificates = Some("/etc/ari/nats-ca.pem".into());
/// let cluster = Cluster::builder("tls://nats.internal:4222")
///     .nats_security(security)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsSecurity {
    /// A credentials file (`.creds`: a user JWT and its NKey seed, as `nsc` writes it), for a
    /// NATS server in operator (decentralized JWT) mode. Read once, when the proxy or the
    /// instance connects: reconnections present the same JWT (a rotated file takes effect
    /// at the next start).
    pub credentials_file: Option<std::path::PathBuf>,
    /// An NKey seed (`SU…`), for a server whose `authorization` lists the user's public NKey
    /// (`U…`). Never logged.
    pub nkey_seed: Option<String>,
    /// A PEM file of the certificate authorities (one or more) that signed the server's TLS
    /// certificate: only those are trusted then (not the system's).
    pub root_certificates: Option<std::path::PathBuf>,
    /// A client certificate and its private key (PEM files), for a server that verifies its
    /// clients' TLS certificates (`verify: true`).
    pub client_certificate: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Use TLS even if the server does not ask for it (a `nats://` URL); a server without TLS
    /// is then refused.
    pub require_tls: bool,
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSecurity")
            .field("credentials_file", &self.credentials_file)
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "<redacted>"))
            .field("root_certificates", &self.root_certificates)
            .field("client_certificate", &self.client_certificate)
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

impl NatsSecurity {
    /// `options` with these settings.
    async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, async_nats::ConnectError> {
        if let Some(path) = &self.credentials_file {
            options = options.credentials_file(path).await.map_err(|e| {
                let e = std::io::Error::new(
                    e.kind(),
                    format!("NATS credentials file {}: {e}", path.display()),
                );
                async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, e)
            })?;
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(path) = &self.root_certificates {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}
pub use wire::ProxyStats;

/// Entry points for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Checks the proxy's raw-frame routing scan against the typed decode on one frame: `Err`
    /// describes a disagreement (an event the proxy would route differently from its type).
    pub fn route_scan(frame: &[u8]) -> Result<(), String> {
        crate::scan::check(frame)
    }

    /// Decodes an event batch: the input's first line is the [`crate::wire::BATCH_HEADER`]
    /// value, the rest the payload. Never panics; `Err` describes a batch that decoded but does
    /// not write back to the same bytes (a frame or resource list read wrongly).
    pub fn batch_decode(data: &[u8]) -> Result<(), String> {
        let (count, payload) = match data.iter().position(|b| *b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        let count = String::from_utf8_lossy(count);
        let payload = bytes::Bytes::copy_from_slice(payload);
        let Ok(records) = crate::wire::decode_batch(&count, &payload) else {
            return Ok(());
        };
        let mut w = crate::wire::BatchWriter::new();
        for r in &records {
            w.push(&r.frame, r.resources, r.finals)
                .map_err(|e| format!("a decoded record does not write back: {e}"))?;
        }
        let (n, again) = w.take();
        if n != records.len() || again != payload {
            return Err(format!(
                "{} records decoded from {} bytes write back as {n} records, {} bytes",
                records.len(),
                payload.len(),
                again.len()
            ));
        }
        Ok(())
    }
}

/// Connects to NATS with what both sides need: reconnect forever, report the connection state
/// to `up` when given, count the slow-consumer reports (messages NATS dropped) in `slow`;
/// each subscription buffers `capacity` messages at most. `url` may list several servers of
/// a NATS cluster, comma-separated (`nats://a:4222,nats://b:4222`): the first reachable one
/// is used, the others on reconnect.
pub(crate) async fn connect_nats(
    url: &str,
    security: &NatsSecurity,
    name: &str,
    up: Option<tokio::sync::watch::Sender<bool>>,
    slow: std::sync::Arc<std::sync::atomic::AtomicU64>,
    capacity: usize,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let up = up.map(std::sync::Arc::new);
    let cb_up = up.clone();
    let options = security.apply(async_nats::ConnectOptions::new()).await?;
    let client = options
        .name(name)
        .subscription_capacity(capacity.max(1))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis((50 * attempts as u64).min(1000))
        })
        .event_callback(move |event| {
            let up = cb_up.clone();
            let slow = slow.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected");
                        if let Some(up) = &up {
                            let _ = up.send(true);
                        }
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting");
                        if let Some(up) = &up {
                            let _ = up.send(false);
                        }
                    }
                    async_nats::Event::SlowConsumer(sid) => {
                        slow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(sid, "NATS slow consumer: messages dropped");
                    }
                    other => tracing::debug!(event = %other, "NATS"),
                }
            }
        })
        .connect(nats_servers(url))
        .await?;
    if let Some(up) = &up {
        let _ = up.send(true);
    }
    Ok(client)
}

/// The servers of a comma-separated list of NATS URLs (spaces around them ignored).
fn nats_servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_urls_are_split_on_commas() {
        assert_eq!(
            super::nats_servers("nats://a:4222, nats://b:4222,"),
            ["nats://a:4222", "nats://b:4222"]
        );
        assert_eq!(super::nats_servers("nats://a:4222"), ["nats://a:4222"]);
    }
}
