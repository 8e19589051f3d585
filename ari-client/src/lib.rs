//! # ari-client
//!
//! The typed async API of the ARI client, written once. It is generic over a [`Runtime`]
//! (spawning, time, HTTP, WebSocket) that an adapter supplies: use `ari-tokio` or `ari-smol`,
//! which re-export everything here with their runtime filled in.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

pub mod runtime;

pub use runtime::{Runtime, TransportError, TransportErrorKind, TransportOptions, WsConnection, WsMessage};
