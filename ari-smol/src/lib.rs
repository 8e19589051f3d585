//! # ari-smol
//!
//! The ARI (Asterisk REST Interface) client on [smol](https://docs.rs/smol), with no tokio in
//! the dependency tree. The typed API is `ari-client`'s, re-exported here with the runtime
//! filled in ([`SmolRuntime`]); `ari-tokio` offers the same names on tokio.
//!
//! The transport: HTTP/1.1 with a keep-alive connection pool (a small client codec over
//! async-net), WebSocket through async-tungstenite, TLS through futures-rustls (rustls with
//! the `ring` provider, certificate verification on, Mozilla's roots from webpki-roots),
//! timers from async-io, background tasks on smol's global executor (or one you pass to
//! [`SmolRuntimeBuilder::executor`]).
//!
//! ## Runtime only
//!
//! ```no_run
//! use ari_smol::{Runtime, SmolRuntime, TransportOptions};
//!
//! smol::block_on(async {
//!     let runtime = SmolRuntime::new();
//!     let req = http::Request::get("http://127.0.0.1:8088/ari/asterisk/info")
//!         .header("Authorization", "Basic YXN0ZXJpc2s6YXN0ZXJpc2s=")
//!         .body(Vec::new())
//!         .unwrap();
//!     let resp = runtime.http(req, &TransportOptions::default()).await.unwrap();
//!     println!("{}", String::from_utf8_lossy(resp.body()));
//! });
//! ```
//!
//! ## TLS with a private CA
//!
//! ```no_run
//! # fn main() -> Result<(), ari_smol::TlsSetupError> {
//! let pem = std::fs::read("/etc/asterisk/keys/ca.crt").unwrap_or_default();
//! let runtime = ari_smol::SmolRuntime::builder()
//!     .add_root_certificate_pem(pem)
//!     .build()?;
//! # let _ = runtime; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod h1;
mod io;
mod smol_runtime;
mod tls;
mod ws;

pub use crate::smol_runtime::{SmolRuntime, SmolRuntimeBuilder};
pub use crate::tls::TlsSetupError;
pub use crate::ws::SmolWs;

/// The runtime-generic client crate, for the generic types these aliases fill in.
pub use ari_client;
/// The sans-IO core: models, events, operations, request building and response parsing.
pub use ari_proto;

#[doc(no_inline)]
pub use ari_client::*;
#[doc(no_inline)]
pub use ari_proto::{events, models, ops, AriError, ErrorKind, Event, EventType, Operation};

/// The rustls crate this adapter is built on, for [`SmolRuntimeBuilder::tls_config`].
pub use rustls;
