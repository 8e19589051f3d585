//! # ari-client
//!
//! The typed async API of the Asterisk REST Interface (ARI) client, written once. It is
//! generic over a [`Runtime`] (spawning, time, HTTP, WebSocket) that an adapter supplies: use
//! `ari-tokio` or `ari-smol`, which re-export everything here with their runtime filled in.
//!
//! - [`Client`]: connect, then every REST operation as a generated method returning a
//!   [`Call`] to `.await` (`client.channels().list().await?`).
//! - Instance objects ([`Channel`], [`Bridge`], [`Playback`], [`LiveRecording`],
//!   [`StoredRecording`], [`Endpoint`], [`DeviceState`], [`Application`]) carry the resource's
//!   id and bound operations (`channel.answer().await?`), plus events: [`Channel::on`],
//!   [`Channel::once`], [`Channel::events`].
//! - Events: [`Client::start`] registers applications on the events WebSocket; handlers
//!   ([`Client::on`]) receive the typed event and the live instance objects it concerns
//!   ([`ClientEvent`]); streams ([`Client::event_stream`], [`Client::stream`]) are bounded and
//!   report drops ([`Lagged`]).
//! - Errors: one [`Error`]; no request outlives its timeout.
//!
//! ```no_run
//! use ari_client::events::{ChannelDtmfReceived, StasisStart};
//! use ari_client::{Client, Runtime};
//! use futures_util::StreamExt;
//!
//! // `R` is the adapter's runtime: `ari_tokio::Client` / `ari_smol::Client` fill it in.
//! async fn hello<R: Runtime + Default>() -> Result<(), ari_client::Error> {
//!     let client = Client::<R>::connect("http://localhost:8088", "asterisk", "secret").await?;
//!     client.on::<StasisStart>(|_event, channel| async move {
//!         // Every key press, in order, until the caller hangs up (the stream then ends).
//!         // Subscribed now, so keys pressed during the greeting are not lost.
//!         let mut keys = channel.stream::<ChannelDtmfReceived>();
//!         channel.answer().await?;
//!         channel.play("sound:hello-world").await?.finished().await?;
//!         while let Some(dtmf) = keys.next().await {
//!             let dtmf = dtmf?; // Err(Lagged) if this consumer fell far behind
//!             println!("{} pressed {}", channel.id(), dtmf.digit);
//!             if dtmf.digit == "#" {
//!                 channel.play("sound:vm-goodbye").await?.finished().await?;
//!                 channel.hangup().await?;
//!                 break;
//!             }
//!             channel.play(format!("sound:digits/{}", dtmf.digit)).await?;
//!         }
//!         Ok(())
//!     });
//!     client.start(&["hello"]).await?;
//!     Ok(())
//! }
//! ```
//!
//! # From node-ari-client
//!
//! | node-ari-client | ari-client |
//! |---|---|
//! | `client.connect(url, user, pass)` | `Client::connect(url, user, pass).await?` |
//! | `ari.channels.list()` | `client.channels().list().await?` |
//! | `ari.bridges.get({bridgeId})` | `client.bridges().get(id).await?` |
//! | `bridge.addChannel({channel})` | `bridge.add_channel([&channel]).await?` |
//! | `ari.Channel()`, `ari.Bridge()`, `ari.Playback()`, `ari.LiveRecording()` | `client.new_channel()`, `client.new_bridge()`, `client.new_playback()`, `client.new_live_recording()` |
//! | `ari.Channel(id)`, `ari.Bridge(id)`, … (an existing resource) | `client.channel(id)`, `client.bridge(id)`, … (see [`Client::channel`]) |
//! | `channel.originate({endpoint, app})` | `channel.originate(endpoint).app("hello").await?` |
//! | `channel.play({media}, playback)` | `channel.play_with_id(&playback, [media]).await?` |
//! | play, then `playback.once('PlaybackFinished')` | `channel.play(media).await?.finished().await?` |
//! | `ari.on('StasisStart', (event, channel) => …)` | `client.on::<StasisStart>(\|event, channel\| async move { … })` |
//! | `ari.once('StasisStart', …)` | `let (event, channel) = client.once::<StasisStart>().await?` |
//! | `channel.on('ChannelDtmfReceived', …)` | `channel.on::<ChannelDtmfReceived>(\|event, channel\| async move { … })` |
//! | `channel.once('ChannelHangupRequest', …)` | `channel.once::<ChannelHangupRequest>().await?` |
//! | `ari.removeListener(type, handler)` | `listener.remove()` |
//! | `ari.start(['a', 'b'])`, `ari.stop()` | `client.start(&["a", "b"]).await?`, `client.stop().await` |
//! | `WebSocketConnected`, `WebSocketReconnecting`, `WebSocketMaxRetries` | [`ConnectionEvent::Connected`], [`ConnectionEvent::Reconnecting`], [`ConnectionEvent::MaxRetries`] via [`Client::on_connection`] or [`Client::connection_events`] |
//!
//! # How events flow
//!
//! A background task (spawned on the runtime) owns the events WebSocket and drives the sans-IO
//! [`ari_proto::Session`], which decodes each frame once and routes it by type and resource id
//! through hash maps. Each subscription has a bounded queue (streams, awaited events) or calls
//! its handler per event (a call that waits continues as its own task): the socket is always
//! read, a slow consumer loses its oldest queued events (counted in [`Stats::dropped_events`]
//! and announced with [`Lagged`]) rather than stalling the connection. Listeners on an instance
//! end by themselves after its final event (`ChannelDestroyed`, `BridgeDestroyed`,
//! `PlaybackFinished`, `RecordingFinished`/`RecordingFailed`, or `StasisEnd` of a channel the
//! application no longer follows, or the application's own successful `DELETE` of a bridge
//! whose `BridgeDestroyed` it is not sent: see [`ClientBuilder::stasis_end_linger`]), so
//! [`Client::live_subscriptions`] returns to its baseline after every call.
//!
//! Credentials never appear in logs (`tracing`), `Debug` output or errors.
//!
//! # Features
//!
//! - `rustls` (off by default): TLS for `https://` and `wss://` in [`stack`], and
//!   `tls::TlsSettings` (web PKI roots, extra roots, a custom configuration). Pick a crypto
//!   provider with `rustls-ring` or `rustls-aws-lc` (the adapters enable `rustls-ring` by
//!   default); `native-roots` adds the operating system's roots (`rustls-native-certs`).
//!   Without TLS, `https://` fails with [`TransportErrorKind::Unsupported`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod aliases;
pub mod audiosocket;
mod call;
mod client;
mod client_events;
mod deadlines;
mod driver;
mod error;
mod generated;
mod instances;
mod listen;
#[cfg(test)]
mod manual_executor;
pub mod media;
mod media_pacer;
mod media_server;
mod outbound;
mod recording_stop;
pub mod runtime;

mod shared;
pub mod stack;
pub mod tls;

pub use call::{Call, Wrap};
pub use client::{Client, ClientBuilder, RestTransport, WeakClient};
pub use client_events::{Apps, ConnectionListener, Stats, DEFAULT_REQUEST_TIMEOUT};
pub use error::{Error, Lagged};
pub use generated::*;
pub use instances::{
    Application, Bridge, Channel, DeviceState, Endpoint, LiveRecording, Playback, StoredRecording,
};
pub use listen::{
    ClientEvent, ClientOnce, ClientStream, ConnectionStream, DialParties, EventHandler,
    EventStream, HandlerOutput, Incoming, Listener, Once, TypedStream,
};
pub use outbound::{
    ConnectionType, InStasis, OutboundCall, OutboundConnection, OutboundOptions, OutboundServer,
    OutboundStats, UpgradeFailure,
};
pub use runtime::{
    Connector, CustomRuntime, Executor, Runtime, Transport, TransportError, TransportErrorKind,
    TransportOptions, WsClose, WsConnection, WsMessage,
};
pub use stack::{Stack, StackBuilder};

/// The rustls crate the TLS layer is built on, for
/// [`StackBuilder::tls_config`] and [`stack::tls_accept`].
#[cfg(feature = "rustls")]
pub use rustls;

pub use ari_proto::session::{
    ConnectionEvent, ConnectionState, Filter, Keepalive, Limits, ReconnectPolicy, SubscriptionId,
    WsAuth,
};
pub use ari_proto::version::AsteriskVersion;
pub use ari_proto::{self as proto, events, models, AriError, CompactString, ErrorKind, Event};
