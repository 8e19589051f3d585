//! `ari-mock`: the simulated Asterisk as a standalone ARI server.
//!
//! ```text
//! cargo run -p ari-testkit --bin ari-mock -- --port 8088
//! cargo run -p ari-testkit --bin ari-mock -- --port 8088 --api-docs ../shared/ari-spec/asterisk-master \
//!     --call-every 10 --call-app hello --call-dtmf '1*#'
//! ```
//!
//! With `--outbound-uri ws://HOST:PORT/PATH` the simulated Asterisk also dials the
//! application over an ARI outbound WebSocket (`--outbound-type persistent|per_call_config`,
//! `--outbound-apps`, `--outbound-credentials USER:PASSWORD`, reconnect and timing options:
//! see `--help`), as `websocket_client.conf` + `ari.conf` `type=outbound_websocket` do.
//!
//! Subcommands: `ari-mock check DIR` checks recorded traffic against ari-proto's types
//! (see `ari_testkit::check`; exits 1 on any problem); `ari-mock record --upstream URL
//! --port N --out DIR` records a client's traffic with a real Asterisk through a transparent
//! proxy (`ari_testkit::record`); `ari-mock replay DIR --port N [--speed X]` serves it back
//! offline (`ari_testkit::replay`); `ari-mock conform DIR` replays a recording's REST
//! exchanges against the simulator and compares status and body shape (`ari_testkit::conform`;
//! exits 1 on a difference not allowed). The format is `ari-testkit/docs/RECORDINGS.md`.
//!
//! It logs one line per request, connection, event sent and call placed, prints
//! `ari-mock listening on http://127.0.0.1:PORT/ari` once ready, and runs until killed.
//! Calls can also be placed on request: `curl -X POST 'http://127.0.0.1:8088/_sim/call?app=hello&dtmf=1%23'`
//! (see the `ari_testkit` crate docs for every `/_sim/` control).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ari_testkit::{MockServer, OutboundConfig, PlaceCall, SimConfig};
use clap::Parser;

/// A mock Asterisk ARI server backed by a simulated Asterisk.
#[derive(Debug, Parser)]
#[command(
    name = "ari-mock",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Args,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check recorded ARI traffic (*.jsonl below DIR, the format of ari-fixtures) against
    /// ari-proto's types: prints a table, exits 1 on any problem.
    #[cfg(feature = "check")]
    Check {
        /// Directory of recordings.
        dir: PathBuf,
    },
    /// Conformance of the simulator to recordings of a real Asterisk (every directory with a
    /// rest.jsonl below DIR): sends each recorded REST exchange to a fresh simulator and
    /// compares status and body shape; prints a table, exits 1 on a difference not allowed.
    Conform {
        /// Directory of recordings.
        dir: PathBuf,
        /// The recorded Asterisk's extensions.conf, for recordings without their own.
        #[arg(long)]
        dialplan: Option<PathBuf>,
        /// Accepted differences, one a line: METHOD PATH-REGEX REASON (as a recording's own
        /// conform.allow).
        #[arg(long)]
        allow: Option<PathBuf>,
    },
    /// Record: a transparent proxy in front of a real Asterisk (or ari-mock) that writes
    /// every REST exchange and WebSocket frame, with timing, into DIR (credentials never).
    Record {
        /// Asterisk's base URL, as a client would use it (http://host:port or
        /// https://host:port).
        #[arg(long)]
        upstream: String,
        /// PEM file of certificates to trust for an https:// upstream (a private CA), besides
        /// the Mozilla roots.
        #[arg(long)]
        upstream_ca: Option<PathBuf>,
        /// User sent upstream when a client sends no credentials (a client's own are passed
        /// through).
        #[arg(long)]
        user: Option<String>,
        /// Password for --user (never written to DIR).
        #[arg(long)]
        password: Option<String>,
        /// TCP port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
        bind: IpAddr,
        /// Directory to write the recording into (created; its files are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Also record outbound WebSockets: Asterisk dials --outbound-port (its
        /// websocket_client.conf uri pointed there) and each connection is relayed to the
        /// application at this URL (ws://host:port or wss://host:port; Asterisk's path and query are kept).
        #[arg(long)]
        outbound_app: Option<String>,
        /// TCP port Asterisk's outbound connections come to (with --outbound-app; 0 picks a
        /// free one), on the --bind address.
        #[arg(long, default_value_t = 8090)]
        outbound_port: u16,
        /// Where chan_websocket's client-mode connections (Asterisk dialling the media
        /// server, subprotocol media) that arrive on --outbound-port go (ws:// or wss://host:port);
        /// without it, to --outbound-app.
        #[arg(long)]
        media_app: Option<String>,
        /// The address Asterisk reaches the recorder at for AudioSocket: each externalMedia
        /// with encapsulation=audiosocket gets a port of its own there, given to Asterisk as
        /// external_host, and the connection is relayed to the application's and recorded.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
        audiosocket_host: IpAddr,
        /// PEM file of certificates to trust for a wss:// --outbound-app or --media-app (a
        /// private CA, or the application's self-signed certificate), besides the Mozilla
        /// roots.
        #[arg(long)]
        outbound_ca: Option<PathBuf>,
        /// Print nothing but the "listening" line.
        #[arg(long)]
        quiet: bool,
    },
    /// Replay a recording made by `record` to the program that made it, offline.
    Replay {
        /// Directory of the recording.
        dir: PathBuf,
        /// TCP port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 8088)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
        bind: IpAddr,
        /// Recorded gaps and latencies are divided by this (2: twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Dial the recording's outbound WebSockets to the application at this URL
        /// (ws:// or wss://host:port), as Asterisk did.
        #[arg(long)]
        outbound_app: Option<String>,
        /// User the outbound connections present (HTTP Basic; the recording has none).
        #[arg(long)]
        outbound_user: Option<String>,
        /// Password for --outbound-user.
        #[arg(long)]
        outbound_password: Option<String>,
        /// Dial the recording's client-mode media WebSockets (Asterisk dialled the media
        /// server) to the media server at this URL (ws:// or wss://host:port).
        #[arg(long)]
        media_app: Option<String>,
        /// User the client-mode media connections present (HTTP Basic).
        #[arg(long)]
        media_user: Option<String>,
        /// Password for --media-user.
        #[arg(long)]
        media_password: Option<String>,
        /// PEM file of certificates to trust for a wss:// --outbound-app or --media-app (a
        /// private CA, or the application's self-signed certificate), besides the Mozilla
        /// roots.
        #[arg(long)]
        outbound_ca: Option<PathBuf>,
        /// Print nothing but the "listening" line and mismatches.
        #[arg(long)]
        quiet: bool,
    },
}

/// Serving options (no subcommand).
#[derive(Debug, clap::Args)]
struct Args {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8088)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// HTTP sessions open at once at most (keep-alive connections and WebSockets), like
    /// Asterisk's `sessionlimit` in `http.conf`; one more is closed at once.
    #[arg(long = "session-limit", value_name = "N", default_value_t = ari_testkit::DEFAULT_SESSION_LIMIT)]
    session_limit: usize,
    /// ARI user name.
    #[arg(long, default_value = "asterisk")]
    user: String,
    /// ARI password.
    #[arg(long, default_value = "asterisk")]
    password: String,
    /// An extra read-only user, as NAME:PASSWORD (repeatable).
    #[arg(long = "read-only-user", value_name = "NAME:PASSWORD")]
    read_only_users: Vec<String>,
    /// An origin allowed for CORS, as ari.conf's allowed_origins (repeatable; `*` allows any).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Serve /ari/api-docs/*.json from this spec directory (resources.json + api-docs/).
    #[arg(long, value_name = "DIR")]
    api_docs: Option<PathBuf>,
    /// Pretend to be this Asterisk release (`18`, `20.13.0`, `22.4.0`): its version in
    /// asterisk/info, its branch's apiVersion, REST over WebSocket only from 20.14, 22.4 and
    /// 23, 404 for the routes its branch lacks.
    #[arg(long, value_name = "VERSION")]
    asterisk_version: Option<String>,
    /// Dialplan (extensions.conf syntax) for Local channels.
    #[arg(long, value_name = "FILE")]
    dialplan: Option<PathBuf>,
    /// Place a simulated call every SECS seconds.
    #[arg(long, value_name = "SECS")]
    call_every: Option<f64>,
    /// App the timed calls enter.
    #[arg(long, default_value = "hello")]
    call_app: String,
    /// Endpoint of the timed calls.
    #[arg(long, default_value = "PJSIP/caller")]
    call_endpoint: String,
    /// Stasis arguments of the timed calls, comma-separated.
    #[arg(long, default_value = "")]
    call_args: String,
    /// Digits the caller presses once answered.
    #[arg(long, default_value = "")]
    call_dtmf: String,
    /// The caller hangs up this many seconds after being answered.
    #[arg(long, value_name = "SECS")]
    call_hangup_after: Option<f64>,
    /// Print nothing but the "listening" line.
    #[arg(long)]
    quiet: bool,
    /// Fixed seed: the simulated wall clock starts at this many milliseconds since the Unix
    /// epoch, and every id and timestamp derives from it (default: now). Two runs with the
    /// same seed and the same requests at the same times answer the same.
    #[arg(long, value_name = "MS")]
    seed: Option<u64>,
    /// ARI outbound WebSocket: the simulated Asterisk dials the application at this
    /// `ws://host:port/path` (websocket_client.conf `uri`).
    #[arg(long, value_name = "URI")]
    outbound_uri: Option<String>,
    /// `connection_type`: `persistent` or `per_call_config`.
    #[arg(long, default_value = "persistent", value_parser = ["persistent", "per_call_config"])]
    outbound_type: String,
    /// `apps` of the outbound_websocket, comma-separated.
    #[arg(long, default_value = "hello")]
    outbound_apps: String,
    /// `username` and `password` sent as Basic credentials, as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD")]
    outbound_credentials: Option<String>,
    /// `protocols` (empty: no Sec-WebSocket-Protocol header).
    #[arg(long, default_value = "ari")]
    outbound_protocols: String,
    /// `connection_timeout` in milliseconds.
    #[arg(long, default_value_t = 500)]
    outbound_connection_timeout_ms: u64,
    /// `reconnect_interval` in milliseconds.
    #[arg(long, default_value_t = 500)]
    outbound_reconnect_interval_ms: u64,
    /// `reconnect_attempts` (per call; persistent retries forever).
    #[arg(long, default_value_t = 4)]
    outbound_reconnect_attempts: u32,
    /// Per call: milliseconds from ApplicationRegistered to StasisStart (Asterisk: ~500).
    #[arg(long, default_value_t = 500)]
    outbound_stasis_start_delay_ms: u64,
    /// Per call: milliseconds from StasisEnd to the close frame (Asterisk: ~3500).
    #[arg(long, default_value_t = 3500)]
    outbound_close_after_ms: u64,
    /// Fault: milliseconds between TCP connect and the upgrade request.
    #[arg(long, value_name = "MS")]
    outbound_handshake_delay_ms: Option<u64>,
    /// `enable_pingpongs` with this `pingpong_interval` in milliseconds (20.21+).
    #[arg(long, value_name = "MS")]
    outbound_pingpong_interval_ms: Option<u64>,
    /// `pingpong_probes`: unanswered PINGs before the close (1001).
    #[arg(long, default_value_t = 3)]
    outbound_pingpong_probes: u32,
}

fn outbound_config(args: &Args) -> Result<Option<OutboundConfig>, String> {
    let Some(uri) = &args.outbound_uri else {
        return Ok(None);
    };
    let apps: Vec<&str> = args
        .outbound_apps
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let mut cfg = if args.outbound_type == "per_call_config" {
        OutboundConfig::per_call(uri, apps)
    } else {
        OutboundConfig::persistent(uri, apps)
    };
    if let Some(c) = &args.outbound_credentials {
        let (u, p) = c
            .split_once(':')
            .ok_or_else(|| format!("--outbound-credentials wants USER:PASSWORD, got {c:?}"))?;
        cfg = cfg.credentials(u, p);
    }
    cfg = cfg
        .protocols(&args.outbound_protocols)
        .connection_timeout(Duration::from_millis(args.outbound_connection_timeout_ms))
        .reconnect(
            Duration::from_millis(args.outbound_reconnect_interval_ms),
            args.outbound_reconnect_attempts,
        )
        .stasis_start_delay(Duration::from_millis(args.outbound_stasis_start_delay_ms))
        .close_after_stasis_end(Duration::from_millis(args.outbound_close_after_ms));
    if let Some(ms) = args.outbound_handshake_delay_ms {
        cfg = cfg.handshake_delay(Duration::from_millis(ms));
    }
    if let Some(ms) = args.outbound_pingpong_interval_ms {
        cfg = cfg.pingpongs(Duration::from_millis(ms), args.outbound_pingpong_probes);
    }
    Ok(Some(cfg))
}

fn stamp() -> String {
    let now: chrono::DateTime<chrono::Utc> = SystemTime::now().into();
    now.format("%H:%M:%S%.3f").to_string()
}

fn secs(s: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(s).ok()
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        #[cfg(feature = "check")]
        Some(Command::Check { dir }) => check(&dir),
        Some(Command::Conform {
            dir,
            dialplan,
            allow,
        }) => conform(&dir, dialplan.as_deref(), allow.as_deref()),
        Some(Command::Record {
            upstream,
            upstream_ca,
            user,
            password,
            port,
            bind,
            out,
            outbound_app,
            outbound_port,
            media_app,
            audiosocket_host,
            outbound_ca,
            quiet,
        }) => record(
            &upstream,
            upstream_ca.as_deref(),
            (user, password),
            (SocketAddr::new(bind, port), audiosocket_host),
            (
                outbound_app.map(|app| (app, SocketAddr::new(bind, outbound_port))),
                media_app,
                outbound_ca,
            ),
            &out,
            quiet,
        ),
        Some(Command::Replay {
            dir,
            port,
            bind,
            speed,
            outbound_app,
            outbound_user,
            outbound_password,
            media_app,
            media_user,
            media_password,
            outbound_ca,
            quiet,
        }) => {
            let dial = |app: Option<String>, user, password, what: &str| {
                app.map(|app| match (user, password) {
                    (Some(u), Some(p)) => (app, Some((u, p))),
                    (None, None) => (app, None),
                    _ => {
                        eprintln!(
                            "ari-mock replay: --{what}-user and --{what}-password go together"
                        );
                        std::process::exit(2);
                    }
                })
            };
            let outbound = (
                dial(outbound_app, outbound_user, outbound_password, "outbound"),
                dial(media_app, media_user, media_password, "media"),
            );
            let ca = outbound_ca.as_deref();
            replay(
                &dir,
                SocketAddr::new(bind, port),
                speed,
                outbound,
                ca,
                quiet,
            )
        }
        None => serve(cli.serve),
    }
}

fn record(
    upstream: &str,
    upstream_ca: Option<&std::path::Path>,
    (user, password): (Option<String>, Option<String>),
    (addr, audiosocket_host): (SocketAddr, IpAddr),
    (outbound, media_app, outbound_ca): OutboundRecord,
    out: &std::path::Path,
    quiet: bool,
) -> ! {
    let mut builder = ari_testkit::record::Recorder::builder(upstream, out)
        .bind(addr)
        .audiosocket_host(audiosocket_host);
    if let Some((app, listen)) = &outbound {
        builder = builder.outbound(app, *listen);
    }
    if let Some(app) = &media_app {
        if outbound.is_none() {
            eprintln!("ari-mock record: --media-app needs --outbound-app (its listener)");
            std::process::exit(2);
        }
        builder = builder.media_app(app);
    }
    if let Some(ca) = upstream_ca {
        builder = builder.upstream_ca(ca);
    }
    if let Some(ca) = outbound_ca {
        builder = builder.outbound_ca(ca);
    }
    match (&user, &password) {
        (Some(u), Some(p)) => builder = builder.credentials(u, p),
        (None, None) => {}
        _ => {
            eprintln!("ari-mock record: --user and --password go together");
            std::process::exit(2);
        }
    }
    if !quiet {
        builder = builder.on_log(|line| println!("{} {line}", stamp()));
    }
    match builder.start() {
        Ok(recorder) => {
            println!(
                "ari-mock record listening on {}/ari → {upstream}, writing {}",
                recorder.base_url(),
                out.display()
            );
            if let (Some(url), Some((app, _))) = (recorder.outbound_url(), &outbound) {
                println!("ari-mock record: Asterisk's outbound WebSockets to {url}/… → {app}/…");
            }
            // Every line is written as it happens: the recording is complete when killed.
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("ari-mock record: {e}{cause}");
            std::process::exit(2);
        }
    }
}

/// What `record` relays outbound WebSockets to: the outbound application and the listener,
/// the media application, a CA file for `wss://` ones.
type OutboundRecord = (
    Option<(String, SocketAddr)>,
    Option<String>,
    Option<PathBuf>,
);

/// An application to dial the recording's outbound (or client-mode media) WebSockets to,
/// and their credentials.
type OutboundDial = (String, Option<(String, String)>);

fn replay(
    dir: &std::path::Path,
    addr: SocketAddr,
    speed: f64,
    (outbound, media): (Option<OutboundDial>, Option<OutboundDial>),
    outbound_ca: Option<&std::path::Path>,
    quiet: bool,
) -> ! {
    use ari_testkit::replay::{Recording, ReplayServer};
    let started = Recording::load(dir).and_then(|rec| {
        let summary = format!(
            "{} REST exchanges, {} WebSockets ({} outbound), {} events, {} media WebSockets",
            rec.exchanges(),
            rec.websockets(),
            rec.outbound_websockets(),
            rec.events(),
            rec.media_websockets()
        );
        let mut builder = ReplayServer::builder(rec).bind(addr).speed(speed);
        if let Some((app, credentials)) = &outbound {
            builder = builder.outbound(app);
            if let Some((u, p)) = credentials {
                builder = builder.outbound_credentials(u, p);
            }
        }
        if let Some((app, credentials)) = &media {
            builder = builder.media_app(app);
            if let Some((u, p)) = credentials {
                builder = builder.media_credentials(u, p);
            }
        }
        if let Some(ca) = outbound_ca {
            builder = builder.outbound_ca(ca);
        }
        builder = if quiet {
            builder.on_log(|line| {
                if line.starts_with("UNMATCHED") {
                    eprintln!("{} {line}", stamp());
                }
            })
        } else {
            builder.on_log(|line| println!("{} {line}", stamp()))
        };
        builder.start().map(|s| (s, summary))
    });
    match started {
        Ok((server, summary)) => {
            println!(
                "ari-mock replay listening on {}/ari · {} · {summary} · speed {speed} · counts at /_replay/stats",
                server.base_url(),
                dir.display()
            );
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("ari-mock replay: {e}{cause}");
            std::process::exit(2);
        }
    }
}

#[cfg(feature = "check")]
fn check(dir: &std::path::Path) -> ! {
    match ari_testkit::check::check_dir(dir) {
        Ok(report) => {
            print!("{report}");
            if report.is_clean() {
                println!(
                    "ari-mock check: {} items checked, no problem",
                    report.checked()
                );
                std::process::exit(0);
            }
            println!(
                "ari-mock check: {} problem(s) in {} items",
                report.problems.len(),
                report.checked()
            );
            std::process::exit(1);
        }
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("ari-mock check: {e}{cause}");
            std::process::exit(2);
        }
    }
}

fn conform(
    dir: &std::path::Path,
    dialplan: Option<&std::path::Path>,
    allow: Option<&std::path::Path>,
) -> ! {
    use ari_testkit::conform::{conform_dir_with, ConformOptions};
    let mut options = ConformOptions::default();
    if let Some(path) = dialplan {
        match std::fs::read_to_string(path) {
            Ok(text) => options = options.dialplan(&text),
            Err(e) => {
                eprintln!("ari-mock conform: cannot read {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    }
    if let Some(path) = allow {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                options
                    .clone()
                    .allow_lines(&text)
                    .map_err(|(line, e)| format!("line {line}: {e}"))
            });
        match parsed {
            Ok(o) => options = o,
            Err(e) => {
                eprintln!("ari-mock conform: {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    }
    match conform_dir_with(dir, &options) {
        Ok(report) => {
            print!("{report}");
            std::process::exit(if report.is_clean() { 0 } else { 1 });
        }
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("ari-mock conform: {e}{cause}");
            std::process::exit(2);
        }
    }
}

fn serve(args: Args) {
    let mut builder = MockServer::builder()
        .bind(SocketAddr::new(args.bind, args.port))
        .session_limit(args.session_limit)
        .user(&args.user, &args.password);
    for ro in &args.read_only_users {
        match ro.split_once(':') {
            Some((n, p)) => builder = builder.read_only_user(n, p),
            None => {
                eprintln!("ari-mock: --read-only-user wants NAME:PASSWORD, got {ro:?}");
                std::process::exit(2);
            }
        }
    }
    for origin in &args.allowed_origins {
        builder = builder.allowed_origin(origin);
    }
    if let Some(dir) = &args.api_docs {
        builder = builder.api_docs(dir);
    }
    if let Some(v) = &args.asterisk_version {
        builder = builder.asterisk_version(v);
    }
    if let Some(seed) = args.seed {
        builder = builder.sim_config(SimConfig {
            wall_clock_base_ms: seed,
            ..SimConfig::default()
        });
    }
    if let Some(file) = &args.dialplan {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let now_ms = args.seed.unwrap_or_else(|| {
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                });
                builder = builder.sim_config(SimConfig {
                    dialplan: text,
                    wall_clock_base_ms: now_ms,
                    ..SimConfig::default()
                });
            }
            Err(e) => {
                eprintln!("ari-mock: cannot read {}: {e}", file.display());
                std::process::exit(2);
            }
        }
    }
    match outbound_config(&args) {
        Ok(Some(cfg)) => builder = builder.outbound(cfg),
        Ok(None) => {}
        Err(e) => {
            eprintln!("ari-mock: {e}");
            std::process::exit(2);
        }
    }
    if !args.quiet {
        builder = builder.on_log(|line| println!("{} {line}", stamp()));
    }
    let server = match builder.try_start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ari-mock: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "ari-mock listening on {} (user {} / password {})",
        server.ari_url(),
        args.user,
        args.password
    );

    let every = args.call_every.and_then(secs);
    loop {
        match every {
            Some(d) if !d.is_zero() => {
                std::thread::sleep(d);
                let mut call = PlaceCall::new(&args.call_endpoint, &args.call_app);
                call.args = args
                    .call_args
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                call.dtmf = args.call_dtmf.clone();
                call.hangup_after_answer = args.call_hangup_after.and_then(secs);
                match server.place_call(call) {
                    Ok(id) => println!("{} placed call {id} into {}", stamp(), args.call_app),
                    Err(e) => eprintln!("{} cannot place call: {e}", stamp()),
                }
            }
            _ => std::thread::park(),
        }
    }
}
