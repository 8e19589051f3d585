//! # ari-tokio
//!
//! An Asterisk REST Interface (ARI) client for [tokio]: the typed API of [`ari_client`] with
//! its runtime filled in by [`TokioRuntime`]. This crate supplies only tokio's half (tasks
//! and timers in [`TokioExecutor`], TCP in [`TokioConnector`]); the HTTP/1.1 client (hyper
//! 1.x, one keep-alive pool), the WebSockets (async-tungstenite) and TLS (rustls,
//! certificate verification on) are [`ari_client::stack`]'s, shared with `ari-smol`.
//!
//! Depend on this crate only: it re-exports the whole client API, the generated models,
//! events and operations of [`ari_proto`] ([`models`], [`events`], [`ops`]), and aliases
//! such as [`Client`], [`Channel`] and [`Bridge`] with the runtime type filled in.
//!
//! ## Quick start
//!
//! The node-ari-client IVR: answer, greet, read back each key, hang up on `#`.
//!
//! ```no_run
//! use ari_tokio::events::{ChannelDtmfReceived, StasisStart};
//! use ari_tokio::Client;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ari_tokio::Error> {
//!     let client = Client::connect("http://localhost:8088", "asterisk", "secret").await?;
//!     client.on(|_event: StasisStart, channel| async move {
//!         // Listening before answering: no key press is missed.
//!         channel.on(|dtmf: ChannelDtmfReceived, channel| async move {
//!             if dtmf.digit == "#" {
//!                 channel.play("sound:vm-goodbye").await?.finished().await?;
//!                 channel.hangup().await?;
//!             } else {
//!                 channel.play(format!("sound:digits/{}", dtmf.digit)).await?;
//!             }
//!             Ok(())
//!         });
//!         channel.answer().await?;
//!         channel.play("sound:hello-world").await?;
//!         Ok(())
//!     });
//!     client.start(&["hello"]).await?;
//!     std::future::pending::<()>().await; // handlers run in the background
//!     Ok(())
//! }
//! ```
//!
//! Every REST operation is a method on a resource accessor or an instance; [`ari_client`] has
//! the tour and a node-ari-client table.
//!
//! ## A tokio runtime must be running
//!
//! The client's tasks run on the runtime its [`TokioExecutor`] was made in (`#[tokio::main]`,
//! with I/O and time), or pass a handle: `TokioExecutor::with_handle(handle)`.
//!
//! ## TLS
//!
//! `https://` URLs (and the `wss://` events WebSocket that goes with them) verify the server
//! certificate with rustls (feature `rustls-ring`, the default, or `rustls-aws-lc`; without
//! either, `https://` fails with [`TransportErrorKind::Unsupported`]) against the web PKI roots
//! (`webpki-roots`; feature `native-roots` adds the system's). To trust your own CA or a
//! self-signed Asterisk certificate, add it as a root; for anything else (client
//! certificates, a custom verifier) hand over a whole [`rustls::ClientConfig`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ari_tokio::{Client, TokioRuntime};
//!
//! let pem = std::fs::read("asterisk.pem")?;
//! let runtime = TokioRuntime::builder()
//!     .add_root_certificate_pem(&pem)
//!     .build()?;
//! let _client = Client::builder_with_runtime("https://pbx.example.com:8089", "asterisk", "secret", runtime)
//!     .connect()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`TokioRuntime`] also implements [`Transport`]: its `http` and `ws_connect` can be used alone.
//!
//! [tokio]: https://tokio.rs
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod precise;
mod rt;

pub use crate::rt::{TokioConnector, TokioExecutor, TokioListener};

/// The tokio runtime for the ARI client: [`TokioExecutor`] (tokio tasks and timers) and
/// [`TokioConnector`] (tokio TCP) under [`ari_client::stack`]'s HTTP/1.1 pool, WebSockets and
/// TLS. `TokioRuntime::new()` gives the defaults; `TokioRuntime::builder()` a
/// [`StackBuilder`] (TLS roots, pool limits, a runtime handle).
///
/// Cloning is cheap and clones share the connection pool.
///
/// ```
/// use ari_tokio::{TokioExecutor, TokioRuntime};
///
/// let default = TokioRuntime::new();
/// let custom = TokioRuntime::builder()
///     .pool_max_connections_per_host(16)
///     .pool_idle_timeout(std::time::Duration::from_secs(5))
///     .build()
///     .expect("no extra roots to parse");
/// # let _ = (default, custom);
/// ```
pub type TokioRuntime = ari_client::Stack<TokioExecutor, TokioConnector>;

/// A WebSocket opened by [`TokioRuntime`].
pub type TokioWs = ari_client::stack::WebSocket<
    ari_client::stack::MaybeTlsStream<tokio_util::compat::Compat<tokio::net::TcpStream>>,
>;

pub use ari_client::tls::TlsSetupError;

/// The runtime-generic client crate, for the generic types these aliases fill in.
pub use ari_client;
/// The sans-IO core: models, events, operations, request building and response parsing.
pub use ari_proto;

#[doc(no_inline)]
pub use ari_client::*;
#[doc(no_inline)]
pub use ari_proto::{events, models, ops, AriError, ErrorKind, Event, EventType, Operation};

// Aliases of ari-client's generic types with `TokioRuntime` filled in. Being items of this crate,
// they shadow the generic names of the `ari_client::*` glob above.
ari_client::runtime_aliases!(TokioRuntime);
