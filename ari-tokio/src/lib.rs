//! # ari-tokio
//!
//! An Asterisk REST Interface (ARI) client for [tokio]: the typed API of [`ari_client`] with
//! its runtime filled in by [`TokioRuntime`] (tokio tasks and timers, a pooled keep-alive
//! HTTP/1.1 client on hyper 1.x, WebSockets on tokio-tungstenite, TLS with rustls and
//! certificate verification on by default).
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
//! Every REST operation is a method on a resource accessor (`client.channels()`,
//! `client.bridges()`, `client.asterisk()`, …) or on an instance (`channel.answer()`,
//! `bridge.add_channel(..)`); see [`ari_client`] for the full tour and a table mapping
//! node-ari-client calls to this API.
//!
//! ## A tokio runtime must be running
//!
//! The client spawns its background task (the events WebSocket) and HTTP connections with
//! `tokio::spawn`: create and use it inside a runtime with I/O and time enabled
//! (`#[tokio::main]`), or give the runtime's handle with [`TokioRuntimeBuilder::handle`].
//!
//! ## TLS
//!
//! `https://` URLs (and the `wss://` events WebSocket that goes with them) verify the server
//! certificate against the web PKI roots (`webpki-roots`). To trust your own CA or a
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
//! let client = Client::builder_with_runtime("https://pbx.example.com:8089", "asterisk", "secret", runtime)
//!     .connect()
//!     .await?;
//! # let _ = client;
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
mod ws;

pub use crate::adapter::{TokioRuntime, TokioRuntimeBuilder};
pub use crate::ws::TokioWs;
pub use ari_client::tls::TlsSetupError;

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

// Aliases of ari-client's generic types with `TokioRuntime` filled in. Being items of this
// crate, they shadow the generic names of the `ari_client::*` glob above.

/// The ARI client on tokio (see [`ari_client::Client`]).
pub type Client = ari_client::Client<TokioRuntime>;
/// Options for a [`Client`] (see [`ari_client::ClientBuilder`]).
pub type ClientBuilder = ari_client::ClientBuilder<TokioRuntime>;
/// A pending REST call, to `.await` (see [`ari_client::Call`]).
pub type Call<O> = ari_client::Call<TokioRuntime, O>;

/// A channel instance (see [`ari_client::Channel`]).
pub type Channel = ari_client::Channel<TokioRuntime>;
/// A bridge instance (see [`ari_client::Bridge`]).
pub type Bridge = ari_client::Bridge<TokioRuntime>;
/// A playback instance (see [`ari_client::Playback`]).
pub type Playback = ari_client::Playback<TokioRuntime>;
/// A live recording instance (see [`ari_client::LiveRecording`]).
pub type LiveRecording = ari_client::LiveRecording<TokioRuntime>;
/// A stored recording instance (see [`ari_client::StoredRecording`]).
pub type StoredRecording = ari_client::StoredRecording<TokioRuntime>;
/// An endpoint instance (see [`ari_client::Endpoint`]).
pub type Endpoint = ari_client::Endpoint<TokioRuntime>;
/// A device state instance (see [`ari_client::DeviceState`]).
pub type DeviceState = ari_client::DeviceState<TokioRuntime>;
/// A Stasis application instance (see [`ari_client::Application`]).
pub type Application = ari_client::Application<TokioRuntime>;

/// The two channels of a `Dial` event (see [`ari_client::DialParties`]).
pub type DialParties = ari_client::DialParties<TokioRuntime>;
/// A stream of client-wide events of one type with their instances (see
/// [`ari_client::ClientStream`]).
pub type ClientStream<T> = ari_client::ClientStream<TokioRuntime, T>;
/// The next client-wide event of one type with its instances (see
/// [`ari_client::ClientOnce`]).
pub type ClientOnce<T> = ari_client::ClientOnce<TokioRuntime, T>;

/// `client.asterisk()`: operations on the Asterisk system (see [`ari_client::Asterisk`]).
pub type Asterisk = ari_client::Asterisk<TokioRuntime>;
/// `client.endpoints()` (see [`ari_client::Endpoints`]).
pub type Endpoints = ari_client::Endpoints<TokioRuntime>;
/// `client.channels()` (see [`ari_client::Channels`]).
pub type Channels = ari_client::Channels<TokioRuntime>;
/// `client.bridges()` (see [`ari_client::Bridges`]).
pub type Bridges = ari_client::Bridges<TokioRuntime>;
/// `client.recordings()` (see [`ari_client::Recordings`]).
pub type Recordings = ari_client::Recordings<TokioRuntime>;
/// `client.sounds()` (see [`ari_client::Sounds`]).
pub type Sounds = ari_client::Sounds<TokioRuntime>;
/// `client.playbacks()` (see [`ari_client::Playbacks`]).
pub type Playbacks = ari_client::Playbacks<TokioRuntime>;
/// `client.device_states()` (see [`ari_client::DeviceStates`]).
pub type DeviceStates = ari_client::DeviceStates<TokioRuntime>;
/// `client.mailboxes()` (see [`ari_client::Mailboxes`]).
pub type Mailboxes = ari_client::Mailboxes<TokioRuntime>;
/// `client.events()`: user events and the event stream (see [`ari_client::Events`]).
pub type Events = ari_client::Events<TokioRuntime>;
/// `client.applications()` (see [`ari_client::Applications`]).
pub type Applications = ari_client::Applications<TokioRuntime>;
