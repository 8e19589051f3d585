//! `ari-proxy`: bridges one Asterisk's ARI to NATS (see the `ari_cluster` crate docs).
//!
//! ```text
//! ari-proxy --ari-url http://localhost:8088 --user asterisk --password secret \
//!           --nats nats://127.0.0.1:4222 --app hello [--app other] [--prefix ari]
//! ```
//!
//! Every flag can be given as an environment variable instead (`ARI_URL`, `ARI_USER`,
//! `ARI_PASSWORD`, `NATS_URL`, `ARI_APP` (comma-separated), `ARI_PREFIX`). Counters are
//! answered on `{prefix}.health.{node}`; SIGINT (ctrl-c) or SIGTERM announces the node down and
//! stops.

use std::process::ExitCode;
use std::time::Duration;

use ari_cluster::{Proxy, ProxyConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "ari-proxy",
    version,
    about = "Bridges one Asterisk's ARI to NATS"
)]
struct Args {
    /// Asterisk's HTTP server.
    #[arg(long, env = "ARI_URL", default_value = "http://localhost:8088")]
    ari_url: String,
    /// ARI user (ari.conf).
    #[arg(long, env = "ARI_USER", default_value = "asterisk")]
    user: String,
    /// ARI password.
    #[arg(long, env = "ARI_PASSWORD", hide_env_values = true)]
    password: String,
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// NATS credentials file (a user JWT and its NKey seed, for a server in operator mode).
    #[arg(long, env = "NATS_CREDS")]
    nats_creds: Option<std::path::PathBuf>,
    /// NATS NKey seed (`SU…`; prefer the environment variable to the command line).
    #[arg(long, env = "NATS_NKEY", hide_env_values = true)]
    nats_nkey: Option<String>,
    /// PEM file of the certificate authorities to trust for the NATS server's TLS certificate
    /// (instead of the system's).
    #[arg(long, env = "NATS_CA")]
    nats_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for a NATS server that verifies its clients'; with --nats-key.
    #[arg(long, env = "NATS_CERT", requires = "nats_key")]
    nats_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --nats-cert.
    #[arg(long, env = "NATS_KEY", requires = "nats_cert")]
    nats_key: Option<std::path::PathBuf>,
    /// Use TLS to NATS even if the server does not ask for it.
    #[arg(long, env = "NATS_TLS")]
    nats_tls: bool,
    /// Stasis application(s) to serve (repeat, or comma-separate).
    #[arg(long = "app", env = "ARI_APP", value_delimiter = ',', required = true)]
    apps: Vec<String>,
    /// Subject prefix.
    #[arg(long, env = "ARI_PREFIX", default_value = "ari")]
    prefix: String,
    /// Seconds between announcements.
    #[arg(long, env = "ARI_ANNOUNCE_SECS", default_value_t = 1.0)]
    announce_secs: f64,
    /// Send REST to Asterisk over HTTP only, even where it has REST over the events WebSocket.
    #[arg(long, env = "ARI_REST_OVER_HTTP")]
    rest_over_http: bool,
    /// Do not hand the calls of an instance found gone over to the other instances (only
    /// release them: their events then go to every instance, and no handler runs for them).
    #[arg(long, env = "ARI_NO_HAND_OVER")]
    no_hand_over: bool,
}

/// SIGINT (ctrl-c) or SIGTERM (service managers, containers).
async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = ProxyConfig::new(
        &args.ari_url,
        &args.user,
        &args.password,
        &args.nats,
        &args.apps,
    );
    config.prefix = args.prefix;
    config.nats_security.credentials_file = args.nats_creds;
    config.nats_security.nkey_seed = args.nats_nkey;
    config.nats_security.root_certificates = args.nats_ca;
    config.nats_security.client_certificate = args.nats_cert.zip(args.nats_key);
    config.nats_security.require_tls = args.nats_tls;
    config.rest_over_websocket = !args.rest_over_http;
    config.hand_over_calls = !args.no_hand_over;
    config.announce_interval = Duration::from_secs_f64(args.announce_secs.clamp(0.05, 3600.0));
    let proxy = match Proxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ari-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "ari-proxy: serving node {} for {:?}",
        proxy.node(),
        args.apps
    );
    wait_for_stop_signal().await;
    let stats = proxy.stats();
    proxy.stop().await;
    eprintln!(
        "ari-proxy: stopped ({} events in, {} out, {} dropped, {} REST requests)",
        stats.events_in, stats.events_out, stats.events_dropped, stats.rest_requests
    );
    ExitCode::SUCCESS
}
