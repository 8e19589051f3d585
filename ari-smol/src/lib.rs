//! # ari-smol
//!
//! The ARI (Asterisk REST Interface) client on [smol](https://docs.rs/smol), with no tokio in
//! the dependency tree. The typed API is `ari-client`'s, re-exported here with the runtime
//! filled in ([`SmolRuntime`]); `ari-tokio` offers the same names on tokio.
//!
//! This crate supplies only smol's half: tasks and timers in [`SmolExecutor`] (smol's global
//! executor, or one you pass to [`SmolExecutor::with_executor`]; async-io timers) and TCP in
//! [`SmolConnector`] (async-net). The HTTP/1.1 client (hyper 1.x over futures-io, one
//! keep-alive pool), the WebSockets (async-tungstenite) and TLS (rustls, certificate
//! verification on, Mozilla's roots from webpki-roots) are [`ari_client::stack`]'s, shared
//! with `ari-tokio`. No tokio runtime runs: hyper depends on the `tokio` crate for its `sync`
//! primitives only (no reactor, no threads, no timers; CI checks it).
//!
//! ## Features
//!
//! - `rustls-ring` (default): TLS with rustls and the `ring` provider;
//!   `rustls-aws-lc`: with `aws-lc-rs` instead. Without either, `https://` fails with
//!   [`TransportErrorKind::Unsupported`].
//! - `native-roots`: the operating system's roots too (`StackBuilder::platform_roots`).
//!
//! Depend on this crate only: it re-exports the whole client API, the generated models,
//! events and operations of [`ari_proto`] ([`models`], [`events`], [`ops`]), and aliases
//! such as [`Client`] and [`Channel`] with the runtime type filled in.
//!
//! ## Quick start
//!
//! ```no_run
//! use ari_smol::events::StasisStart;
//! use ari_smol::{Channel, Client};
//!
//! fn main() -> Result<(), ari_smol::Error> {
//!     smol::block_on(async {
//!         let client = Client::connect("http://localhost:8088", "asterisk", "secret").await?;
//!         client.on::<StasisStart>(|event, channel: Channel| async move {
//!             println!("{} entered {}", channel.id(), event.application);
//!             Ok(())
//!         });
//!         client.start(&["hello"]).await?;
//!         // Events are handled in background tasks on smol's executor until the end.
//!         smol::future::pending::<()>().await;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! ## TLS
//!
//! `https://` and `wss://` URLs verify the server certificate against the web PKI roots
//! (`webpki-roots`). To trust your own CA or a self-signed Asterisk certificate, add it as a
//! root; for anything else (client certificates, a custom verifier) hand over a whole
//! `rustls::ClientConfig` with [`StackBuilder::tls_config`]:
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pem = std::fs::read("asterisk.pem")?;
//! let runtime = ari_smol::SmolRuntime::builder()
//!     .add_root_certificate_pem(&pem)
//!     .build()?;
//! let client = ari_smol::Client::builder_with_runtime(
//!     "https://pbx.example.com:8089",
//!     "asterisk",
//!     "secret",
//!     runtime,
//! );
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! ## The transport alone
//!
//! [`SmolRuntime`] implements [`Transport`]; its `http` and `ws_connect` can be used directly:
//!
//! ```no_run
//! use ari_smol::{SmolRuntime, Transport, TransportOptions};
//!
//! smol::block_on(async {
//!     let runtime = SmolRuntime::new();
//!     let req = http::Request::get("http://127.0.0.1:8088/ari/asterisk/info")
//!         .header("Authorization", "Basic YXN0ZXJpc2s6c2VjcmV0")
//!         .body(Vec::new())
//!         .expect("a valid request");
//!     match runtime.http(req, &TransportOptions::default()).await {
//!         Ok(resp) => println!("{} {} bytes", resp.status(), resp.body().len()),
//!         Err(e) => eprintln!("{e}"),
//!     }
//! });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod rt;

pub use crate::rt::{SmolConnector, SmolExecutor, SmolListener, SmolStream};

/// The smol runtime for the ARI client: [`SmolExecutor`] (smol tasks, async-io timers) and
/// [`SmolConnector`] (async-net TCP) under [`ari_client::stack`]'s HTTP/1.1 pool, WebSockets
/// and TLS. `SmolRuntime::new()` gives the defaults; `SmolRuntime::builder()` a
/// [`StackBuilder`] (TLS roots, pool limits, an executor).
///
/// Cheap to clone: clones share the connection pool and TLS configuration.
///
/// ```
/// # fn demo(my_ca_pem: &[u8]) -> Result<(), ari_smol::TlsSetupError> {
/// let runtime = ari_smol::SmolRuntime::builder()
///     .add_root_certificate_pem(my_ca_pem) // e.g. the certificate of your Asterisk
///     .build()?;
/// # let _ = runtime;
/// # Ok(())
/// # }
/// ```
pub type SmolRuntime = ari_client::Stack<SmolExecutor, SmolConnector>;

/// A WebSocket opened by [`SmolRuntime`].
pub type SmolWs = ari_client::stack::WebSocket<ari_client::stack::MaybeTlsStream<SmolStream>>;

pub use ari_client::tls::TlsSetupError;

/// The runtime-generic client crate, for the generic types these aliases fill in.
pub use ari_client;
/// The sans-IO core: models, events, operations, request building and response parsing.
pub use ari_proto;

#[doc(no_inline)]
pub use ari_client::*;
#[doc(no_inline)]
pub use ari_proto::{events, models, ops, AriError, ErrorKind, Event, EventType, Operation};

// Aliases of ari-client's generic types with `SmolRuntime` filled in. Being items of this crate,
// they shadow the generic names of the `ari_client::*` glob above.
ari_client::runtime_aliases!(SmolRuntime);
