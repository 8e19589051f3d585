//! Audio in and out of calls, sans-IO: the two external-media protocols Asterisk speaks over a
//! byte stream the application owns.
//!
//! - [`websocket`]: `chan_websocket` (`POST /channels/externalMedia` with
//!   `transport=websocket`, Asterisk 20.16+, 22.6+, 23.0+). Audio travels in binary WebSocket
//!   messages, control in text messages. [`websocket::MediaEvent`] and
//!   [`websocket::Command`] are the control messages in both forms Asterisk knows (plain text
//!   and JSON); [`websocket::MediaSession`] is the state machine of one media socket
//!   (negotiated format, frame size and ptime, flow control with a bounded local queue,
//!   buffering mode, marks, hangup and close) and [`websocket::Reframer`] cuts the
//!   application's audio into whole frames.
//! - [`audiosocket`]: AudioSocket (`encapsulation=audiosocket`, `transport=tcp`): a
//!   kind + length + payload framing over TCP, with a streaming [`audiosocket::Decoder`].
//!
//! Like the events [`Session`](crate::Session), nothing here owns a socket or reads a clock:
//! the adapter moves the bytes and passes the time in.
//!
//! RTP (`encapsulation=rtp`, the default of externalMedia) is plain RTP over UDP; it needs no
//! control protocol and is not modelled here.

pub mod audiosocket;
pub mod websocket;
