//! A mock ARI (Asterisk REST Interface) server for tests, on real sockets.
//!
//! [`MockServer`] serves real HTTP/1.1 and a real WebSocket on `127.0.0.1` (an ephemeral port by
//! default), on its own thread with its own tokio runtime, so tests of any async runtime can
//! use it; dropping it stops the thread and closes every socket. It behaves like Asterisk at
//! the edges, as checked against a live Asterisk and the traffic recorded in `fixtures/`:
//!
//! - everything lives under `/ari/`; HTTP Basic auth or `?api_key=user:password`; a wrong
//!   password answers `401 {"message":"Authentication required"}`, a `read_only` user writing
//!   `403 {"message":"Write access denied"}`; a path outside the known resources answers `404`
//!   with the `text/plain` body `404: Not Found`; `void` operations answer `204` without body;
//!   every response has a `Content-Length`, connections are kept alive; `OPTIONS` (any user,
//!   read-only too) answers `204` with `Allow`, and CORS headers are sent only for origins
//!   added with [`MockServerBuilder::allowed_origin`], as Asterisk's `allowed_origins`;
//! - the events WebSocket at `/ari/events?app=a,b&subscribeAll=true` (subprotocol `ari`
//!   accepted): an app registered by a second connection moves there and the first one gets
//!   `ApplicationReplaced`; text frames `{"type":"RESTRequest",...}` are answered by
//!   `RESTResponse` events, bad frames with status 400; pings are answered.
//!
//! Behind the edges, each REST request is answered, in this order, by an injected fault
//! ([`MockServer::fail_requests`], [`MockServer::set_response_delay`]), a scripted
//! expectation ([`MockServer::expect`]), or the simulated Asterisk ([`sim::Sim`]), whose
//! events are delivered to the connections holding their app. Every request is logged
//! ([`MockServer::requests`]). Simulator timers run in real time, or in simulated time moved by
//! [`MockServer::advance`].
//!
//! ```no_run
//! use ari_testkit::{MockServer, Refusal};
//! use serde_json::json;
//!
//! let server = MockServer::start();
//! // Scripted answer, checked afterwards.
//! let ping = server.expect("GET", "asterisk/ping").respond(200, json!({"ping": "pong"}));
//! // ... point the client under test at server.base_url() with server.username() /
//! // server.password(), and let it connect to server.ws_url() with ?app=hello ...
//! server.push_event("hello", json!({"type": "StasisStart", "args": []}));
//! server.drop_websocket("hello");
//! server.refuse_connections(2, Refusal::ServiceUnavailable);
//! assert_eq!(ping.hits(), 1);
//! ```
//!
//! The simulated Asterisk can also dial the application, as an ARI outbound WebSocket does
//! (`websocket_client.conf` + `ari.conf` `type=outbound_websocket`):
//! [`MockServerBuilder::outbound`] with an [`OutboundConfig`], `persistent` or per call
//! (`<app>:<channel name>` applications), with Asterisk's reconnects, queued events and
//! timings, and faults (an unreachable app, a slow handshake; drops with
//! [`MockServer::drop_websocket`]).
//!
//! The `ari-mock` binary runs the same server standalone (see `src/bin/ari-mock.rs`), with
//! test controls over HTTP under `/_sim/` (see [HTTP controls](#http-controls)).
//!
//! [`record`] records a client's traffic with a real Asterisk through a transparent proxy,
//! [`replay`] serves such a recording back offline, and [`check`] checks a recording against
//! the typed API (`ari-mock record`, `ari-mock replay`, `ari-mock check`; the format is
//! `ari-testkit/docs/RECORDINGS.md`).
//!
//! # HTTP controls
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `POST /_sim/call?app=hello&args=a,b&dtmf=1%23&endpoint=PJSIP/alice&caller=Alice%20<100>` | places a call into `app` (only `app` is required); with `dtmf`, a scripted caller presses those digits after the channel is answered | `200 {"channel_id": "..."}` |
//! | `POST /_sim/dtmf?channel=ID&digits=12` | the caller presses digits | `204` |
//! | `POST /_sim/hangup?channel=ID` | the far end hangs up | `204` |
//! | `POST /_sim/advance?ms=N` | simulated time only: moves the clock | `204` (`409` in real time) |
//! | `GET /_sim/requests` | the request log | `200 [...]` |
//! | `GET /_sim/connections` | open events WebSockets | `200 [...]` |
//! | `POST /_bench/flood?n=N&channels=K&app=NAME&mode=bulk\|frame&mix=full\|stasis` | floods the connection holding `NAME` with `N` realistic events over `K` channels, then a `ChannelUserevent` named `bench-done` (see [`MockServer::flood`]) | `202 {"n", "frames", "bytes", "counts", ...}` |
//! | `GET /_bench/stats` | always: connected apps, REST requests, accepted connections, the server's CPU and peak RSS, the floods | `200 {"apps", "rest_requests", "connections_accepted", "cpu_seconds", "peak_rss_bytes", "floods", ...}` |
//!
//! The `/_bench/` contract, for benchmark clients in any language, is
//! `ari-testkit/docs/BENCH-CONTRACT.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

mod bench;
#[cfg(feature = "check")]
pub mod check;
pub mod conform;
mod control;
mod fault;
mod http;
mod media_ws;
mod outbound;
pub mod record;
pub mod replay;
mod rest;
mod script;
mod server;
mod server_thread;
pub mod sim;
mod state;
mod util;
mod version;
mod ws;

pub use bench::{
    FloodError, FloodMix, FloodMode, FloodReport, FloodSpec, FLOOD_DONE_EVENT, FLOOD_WRITE_TIMEOUT,
};
pub use fault::Refusal;
pub use media_ws::{test_frame, MediaSessionReport};
pub use outbound::{ConnectionType, OutboundConfig, OutboundStats};
pub use script::{ExpectBuilder, ExpectationHandle, RecordedRequest, Transport};
pub use server::{
    ConnectionInfo, MockServer, MockServerBuilder, StartError, Target, DEFAULT_SESSION_LIMIT,
    DEFAULT_USER, DEFAULT_WRITE_TIMEOUT,
};
pub use sim::{PlaceCall, Refer, SimConfig};
pub use state::{CloseReason, ClosedConnection};
