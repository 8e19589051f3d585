//! A `nats-server` child process on a free loopback port, for tests and examples.
//!
//! ```no_run
//! let server = ari_cluster::nats_server::NatsServer::start()?;
//! println!("NATS at {}", server.url());
//! # Ok::<(), ari_cluster::nats_server::NatsServerError>(())
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum NatsServerError {
    /// `nats-server` is not installed.
    NotFound,
    /// It could not be run.
    Spawn(std::io::Error),
    /// It did not accept connections within 10 s.
    NotListening(u16),
}

impl fmt::Display for NatsServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsServerError::NotFound => write!(
                f,
                "nats-server not found on PATH (nor in /usr/sbin, /usr/bin): install it with \
                 `apt-get install nats-server` (Debian/Ubuntu) or set NATS_SERVER to its path"
            ),
            NatsServerError::Spawn(e) => write!(f, "cannot run nats-server: {e}"),
            NatsServerError::NotListening(p) => {
                write!(f, "nats-server did not listen on 127.0.0.1:{p} within 10 s")
            }
        }
    }
}

impl std::error::Error for NatsServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NatsServerError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// A running `nats-server`; dropping it kills the process.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The configuration file given with `-c`, removed on drop.
    config: Option<PathBuf>,
}

/// The `nats-server` binary: `$NATS_SERVER`, else `PATH`, else the Debian locations.
fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

impl NatsServer {
    /// Starts `nats-server` on a free port of 127.0.0.1 and waits until it accepts
    /// connections.
    pub fn start() -> Result<NatsServer, NatsServerError> {
        NatsServer::start_with_config("")
    }

    /// Starts `nats-server` as [`NatsServer::start`] does, with a `max_payload` (the largest
    /// message it accepts, headers included) of `bytes` instead of its default of 1 MB.
    pub fn start_with_max_payload(bytes: usize) -> Result<NatsServer, NatsServerError> {
        NatsServer::start_with_config(&format!("max_payload: {bytes}\n"))
    }

    /// Starts `nats-server` as [`NatsServer::start`] does, with `config` as its configuration
    /// file's text (none if empty): an `authorization` block, a `tls` block… (the port and
    /// address are given on the command line).
    pub fn start_with_config(config: &str) -> Result<NatsServer, NatsServerError> {
        let binary = find_binary().ok_or(NatsServerError::NotFound)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(NatsServerError::Spawn)?
            .port();
        let mut server = NatsServer {
            binary,
            port,
            child: None,
            config: None,
        };
        if !config.is_empty() {
            let path = std::env::temp_dir().join(format!(
                "ari-cluster-nats-{}-{port}.conf",
                std::process::id()
            ));
            std::fs::write(&path, config).map_err(NatsServerError::Spawn)?;
            server.config = Some(path);
        }
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), NatsServerError> {
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(NatsServerError::Spawn)?;
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(NatsServerError::NotListening(self.port))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (clients see the connection drop).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts it again on the same port (clients reconnect).
    pub fn restart(&mut self) -> Result<(), NatsServerError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(config) = self.config.take() {
            let _ = std::fs::remove_file(config);
        }
    }
}
