//! # ari-proto
//!
//! The sans-IO core of an Asterisk REST Interface (ARI) client: the whole API as typed Rust
//! (generated from the API description Asterisk ships), request building, response and event
//! parsing, and the session state machine. No sockets, no clock, no runtime: an adapter
//! (`ari-tokio`, `ari-smol`, or your own) moves the bytes and passes the time in.
//!
//! - [`models`]: every model (`Channel`, `Bridge`, `Playback`, …) and enum of allowed values.
//! - [`events`]: [`Event`], one variant per event type, decoded from a frame with
//!   [`Event::decode`].
//! - [`ops`]: one struct per REST operation; [`rest::build_request`] turns one into an
//!   `http::Request`, [`rest::parse_response`] turns the response into its typed result.
//! - [`catalog`]: the API description as data, with the first Asterisk branch of each item.
//! - [`session`]: the session state machine, dialing Asterisk ([`Session::new`]) or serving a
//!   WebSocket Asterisk opened ([`Session::accepted`]).
//! - [`outbound`]: the upgrade check and answer for Asterisk's outbound WebSocket
//!   (`ari.conf` `type=outbound_websocket`).
//! - [`media`]: audio in and out of calls: chan_websocket and AudioSocket, sans-IO.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

#[macro_use]
pub mod macros;
pub mod catalog;
pub mod events;
mod generated;
pub mod media;
pub mod outbound;
pub mod rest;
pub mod session;
mod time;
pub mod version;

/// Every model of the ARI API description and the enums of their allowed values.
pub mod models {
    pub use crate::generated::models::*;
}

/// One struct per REST operation, grouped by resource (`ops::channels::Originate`, …).
///
/// ```
/// use ari_proto::ops::channels::Originate;
/// let op = Originate::new("PJSIP/alice").app("hello").app_args("a,b").variable("CALLERID(name)", "Alice");
/// assert_eq!(op.endpoint, "PJSIP/alice");
/// ```
pub mod ops {
    pub use crate::generated::ops::*;
}

pub use catalog::Since;
/// The string type of every decoded model and event field (`channel.id`, `caller.number`, …):
/// stored inline up to 24 bytes, so decoding allocates nothing for the short strings Asterisk
/// sends. It derefs to `&str` and compares with `&str` and `String`; `.as_str()`,
/// `String::from(s)` and `s.into()` convert.
///
/// ```
/// use ari_proto::CompactString;
/// let id = CompactString::from("1700000000.42");
/// assert_eq!(id, "1700000000.42");
/// let owned: String = id.clone().into();
/// assert_eq!(id.as_str(), owned);
/// ```
pub use compact_str::CompactString;
pub use events::{Event, EventType};
pub use rest::{AriError, ErrorKind, Operation};
pub use session::{Session, SessionConfig};
pub use time::{Timestamp, TimestampError};
