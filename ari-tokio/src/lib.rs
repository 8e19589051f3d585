//! # ari-tokio
//!
//! An Asterisk REST Interface (ARI) client for [tokio]: the typed API of [`ari_client`] with
//! its runtime filled in by [`TokioRuntime`] (tokio tasks and timers, a pooled keep-alive
//! HTTP/1.1 client on hyper 1.x, WebSockets on tokio-tungstenite, TLS with rustls and
//! certificate verification on by default).
//!
//! Depend on this crate only: it re-exports the whole client API, the generated models,
//! events and operations of [`ari_proto`] ([`models`], [`events`], [`ops`]), and aliases
//! such as `Client` and `Channel` with the runtime type filled in.
//!
//! ## TLS
//!
//! `https://` and `wss://` URLs verify the server certificate against the web PKI roots
//! (`webpki-roots`). To trust your own CA or a self-signed Asterisk certificate, add it as a
//! root; for anything else (client certificates, a custom verifier) hand over a whole
//! `rustls::ClientConfig`:
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pem = std::fs::read("asterisk.pem")?;
//! let runtime = ari_tokio::TokioRuntime::builder()
//!     .add_root_certificate_pem(&pem)
//!     .build()?;
//! # let _ = runtime;
//! # Ok(())
//! # }
//! ```
//!
//! ## The transport alone
//!
//! [`TokioRuntime`] implements [`Runtime`]; its `http` and `ws_connect` can be used directly:
//!
//! ```no_run
//! use ari_tokio::{Runtime, TokioRuntime, TransportOptions};
//!
//! # async fn demo() -> Result<(), ari_tokio::TransportError> {
//! let runtime = TokioRuntime::new();
//! let request = http::Request::get("http://127.0.0.1:8088/ari/asterisk/info")
//!     .header("host", "127.0.0.1:8088")
//!     .body(Vec::new())
//!     .expect("a valid request");
//! let response = runtime.http(request, &TransportOptions::default()).await?;
//! println!("{} {} bytes", response.status(), response.body().len());
//! # Ok(())
//! # }
//! ```
//!
//! [tokio]: https://tokio.rs
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod adapter;
mod net;
mod pool;
mod tls;
mod ws;

pub use crate::adapter::{TokioRuntime, TokioRuntimeBuilder};
pub use crate::tls::TlsSetupError;
pub use crate::ws::TokioWs;

/// The runtime-generic client crate, for the generic types these aliases fill in.
pub use ari_client;
/// The sans-IO core: models, events, operations, request building and response parsing.
pub use ari_proto;

#[doc(no_inline)]
pub use ari_client::*;
#[doc(no_inline)]
pub use ari_proto::{events, models, ops, AriError, ErrorKind, Event, EventType, Operation};

/// The rustls crate this adapter is built on, for [`TokioRuntimeBuilder::tls_config`].
pub use rustls;
