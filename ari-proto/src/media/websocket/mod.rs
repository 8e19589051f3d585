//! chan_websocket: media over a WebSocket (`POST /channels/externalMedia` with
//! `transport=websocket`, `encapsulation=none`; Asterisk 20.16+, 22.6+, 23.0+).
//!
//! Audio travels in binary messages: raw media in the channel's format (`ulaw`/`alaw` 8-bit,
//! `slin*` 16-bit little-endian), no header. Control travels in text messages, plain text
//! or JSON ([`ControlFormat`]): events from Asterisk ([`MediaEvent`]) and commands to it
//! ([`Command`]). [`MediaSession`] is the state machine of one socket.
//!
//! In server mode (`connection_type=server`) the application connects to Asterisk's HTTP
//! server at `/media/<MEDIA_WEBSOCKET_CONNECTION_ID>` (the id is in the externalMedia answer's
//! `channelvars`); in client mode Asterisk connects to the application (a
//! `websocket_client.conf` entry). Either way `MEDIA_START` is the first message.
//!
//! Things to know, all handled here:
//! - Outside buffering mode Asterisk cuts each binary message into `optimal_frame_size`
//!   chunks and drops the remainder: a message shorter than one frame is lost. The session
//!   sends whole frames only ([`Reframer`]).
//! - Asterisk's queue sends `MEDIA_XOFF` at 900 frames, `MEDIA_XON` below 800, and drops a
//!   message whole while it holds 1,000. The session paces audio and honours XOFF.
//! - A message whose WebSocket frame exceeds 65,535 bytes makes Asterisk close the socket
//!   (1009) and hang up: longer chunks go out as several messages
//!   ([`ASTERISK_MAX_MESSAGE`]).
//! - A control message over 128 bytes is ignored without a reply: [`Command::encode`]
//!   refuses to build one.
//! - An unsolicited WebSocket PONG crashes Asterisk 20.21, 22.11 and 23.5: the session only
//!   produces a PONG in answer to a PING.

mod control;
mod reframe;
mod session;

pub use control::{
    Command, CommandError, ControlFormat, Direction, MediaError, MediaEvent, MediaStart,
    ParseError, Status, UnknownMediaEvent, MAX_CONTROL_MESSAGE_BYTES,
};
pub use reframe::Reframer;
pub use session::{
    MediaConfig, MediaOutput, MediaSession, MediaState, MediaStats, Queued, SendError, Transmit,
    ASTERISK_MAX_MESSAGE, ASTERISK_QUEUE_LIMIT, ASTERISK_XOFF_LEVEL, ASTERISK_XON_LEVEL,
    MARK_MEDIA_SINCE,
};
