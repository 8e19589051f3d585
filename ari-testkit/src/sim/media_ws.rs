//! chan_websocket channels: `POST channels/externalMedia` with `transport=websocket`,
//! `encapsulation=none`, `connection_type=server` (the application connects) or `client`
//! (the simulator connects to a websocket_client's URI, [`Sim::set_websocket_client`]).
//!
//! The channel is created `Down` and not in Stasis; its `channelvars` carry
//! `MEDIA_WEBSOCKET_CONNECTION_ID`. When the application connects to `/media/<id>` (the
//! server's media socket, `crate::media_ws`), [`Sim::media_connect`] answers it and it enters
//! Stasis (after `MEDIA_START`, which the socket sends first). DTMF received by a channel
//! bridged with it becomes [`MediaSignal::Dtmf`]; its destruction [`MediaSignal::Close`].
//! Audio itself is the socket's business.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_json::json;

use super::model::{OnAnswer, Tech};
use super::{Sim, SimResponse};

/// The externalMedia parameters that matter for a WebSocket channel.
#[derive(Debug, Default)]
pub(super) struct WsRequest {
    pub(super) app: Option<String>,
    pub(super) encapsulation: Option<String>,
    pub(super) connection_type: Option<String>,
    pub(super) external_host: Option<String>,
    pub(super) format: Option<String>,
    pub(super) channel_id: Option<String>,
    pub(super) transport_data: Option<String>,
    pub(super) direction: Option<String>,
    pub(super) data: Option<String>,
    pub(super) vars: Vec<(String, String, bool)>,
}

/// What the simulator tells a media socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaSignal {
    /// A channel bridged with the media channel received this DTMF digit: `DTMF_END`.
    Dtmf {
        /// `MEDIA_WEBSOCKET_CONNECTION_ID`.
        connection_id: String,
        /// The digit.
        digit: char,
    },
    /// The media channel is gone: close the socket (1000) or the AudioSocket connection.
    Close {
        /// `MEDIA_WEBSOCKET_CONNECTION_ID`, or the AudioSocket UUID.
        connection_id: String,
    },
    /// Asterisk ends the media socket with this close status and hangs the channel up
    /// (`tech_cause` = `code`), as it does with 1001 when its keepalive PINGs go unanswered,
    /// 1003 for an opcode it does not take, 1009 for a frame it cannot read
    /// ([`crate::MockServer::close_media`]).
    CloseWith {
        /// `MEDIA_WEBSOCKET_CONNECTION_ID`.
        connection_id: String,
        /// The close status code.
        code: u16,
        /// The close reason (Asterisk sends none).
        reason: String,
    },
    /// The media socket goes silent, as over a network cut: nothing is read or written
    /// (a close is never answered) and the connection stays open until the channel goes
    /// ([`crate::MockServer::stall_media`]).
    Stall {
        /// `MEDIA_WEBSOCKET_CONNECTION_ID`.
        connection_id: String,
    },
    /// A chan_websocket channel in client mode was created: connect to `uri` (protocol
    /// `media`), then run the media socket as in server mode.
    WebSocketConnect {
        /// The simulator's key of the connection (unique per call).
        connection_id: String,
        /// The websocket_client's URI, with the `v()` parameters appended.
        uri: String,
    },
    /// An AudioSocket channel was created: connect to the application at `host` over TCP
    /// and send the UUID first.
    AudioSocketConnect {
        /// The AudioSocket UUID (the externalMedia `data`).
        connection_id: String,
        /// `external_host`, `host:port`.
        host: String,
        /// The channel id.
        channel_id: String,
    },
}

impl MediaSignal {
    /// The connection (media socket id or AudioSocket UUID) it concerns.
    pub fn connection_id(&self) -> &str {
        match self {
            MediaSignal::Dtmf { connection_id, .. }
            | MediaSignal::Close { connection_id }
            | MediaSignal::CloseWith { connection_id, .. }
            | MediaSignal::Stall { connection_id }
            | MediaSignal::AudioSocketConnect { connection_id, .. }
            | MediaSignal::WebSocketConnect { connection_id, .. } => connection_id,
        }
    }
}

/// What the media socket needs to know about its channel (for `MEDIA_START`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaConnectInfo {
    /// `MEDIA_WEBSOCKET_CONNECTION_ID` as `MEDIA_START` shows it (the websocket_client's
    /// name in client mode).
    pub connection_id: String,
    /// The channel id.
    pub channel_id: String,
    /// The channel name, `WebSocket/INCOMING/0x…`.
    pub channel_name: String,
    /// The media format (`ulaw`, `slin16`, …).
    pub format: String,
    /// Bytes per 20 ms frame.
    pub optimal_frame_size: u32,
    /// Control messages in JSON (`transport_data` containing `f(json)`).
    pub json: bool,
    /// Answer on connect (no `n` dial option); otherwise the application's `ANSWER` does.
    pub auto_answer: bool,
    /// Passthrough mode (the `p` dial option, or forced for opus, speex and g729): every
    /// binary message is queued as one frame, as-is, and every command but `ANSWER`,
    /// `HANGUP` and `GET_STATUS` is refused with an `ERROR`.
    pub passthrough: bool,
    /// The media direction from the application's point of view (`d()`, externalMedia
    /// `direction`): `both`, `in` (Asterisk drops the application's media) or `out`
    /// (Asterisk sends none).
    pub direction: String,
    /// The channel's variables (JSON `MEDIA_START` carries them).
    pub variables: BTreeMap<String, String>,
}

/// Why [`Sim::media_connect`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaConnectError {
    /// No such connection id: HTTP 404 "WebSocket instance not found".
    NotFound,
    /// A socket is already connected for it: HTTP 409.
    Duplicate,
}

#[derive(Debug)]
pub(super) struct WsChan {
    channel: String,
    shown_id: String,
    auto_answer: bool,
    passthrough: bool,
    direction: String,
    format: String,
    frame_size: u32,
    json: bool,
    connected: bool,
    /// The channel is being hung up with this cause: it is destroyed once its socket is
    /// closed ([`Sim::media_hangup_done`]).
    closing: Option<i64>,
}

/// The chan_websocket channels, by connection id.
#[derive(Debug, Default)]
pub(super) struct MediaWs {
    by_conn: BTreeMap<String, WsChan>,
    signals: VecDeque<MediaSignal>,
    seq: u64,
    /// websocket_client.conf: id → URI.
    clients: BTreeMap<String, String>,
    /// The `v()` parameters last set on each websocket_client: Asterisk writes them into the
    /// shared client object and never clears them (bug B1), so every later connection
    /// through that client carries them, with or without `v()` of its own.
    client_params: BTreeMap<String, String>,
}

/// The dial options of `transport_data` (`c(slin16)nf(json)d(in)`): the argument of
/// option `letter`, and whether the bare flag `n` is present.
fn dial_option(transport_data: Option<&str>, letter: char) -> Option<String> {
    let mut rest = transport_data?;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        if let Some(inner) = rest.strip_prefix('(') {
            let (arg, after) = inner.split_once(')').unwrap_or((inner, ""));
            if c == letter {
                return Some(arg.to_owned());
            }
            rest = after;
        } else if c == letter {
            return Some(String::new());
        }
    }
    None
}

/// `uri` with the query `query` (the `v(n1=v1,n2=v2)` dial option's parameters as
/// `n1=v1&n2=v2`) appended (`?` or `&`), as chan_websocket does.
fn uri_with_params(uri: &str, query: Option<&str>) -> String {
    let Some(query) = query else {
        return uri.to_owned();
    };
    if query.is_empty() {
        uri.to_owned()
    } else if uri.contains('?') {
        format!("{uri}&{query}")
    } else {
        format!("{uri}?{query}")
    }
}

/// Bytes per 20 ms frame of a format, as chan_websocket computes `optimal_frame_size`: 0 for
/// the codecs whose minimum frame is 10 bytes or less (opus, speex, g729), which Asterisk
/// always runs in passthrough mode.
pub(super) fn frame_size(format: &str) -> Option<u32> {
    Some(match format {
        "ulaw" | "alaw" | "g722" => 160,
        "slin" => 320,
        "slin16" => 640,
        "slin48" => 1920,
        "opus" | "speex" | "speex16" | "speex32" | "g729" => 0,
        _ => return None,
    })
}

impl Sim {
    /// Configures a websocket_client (`websocket_client.conf`): externalMedia with
    /// `connection_type=client` and `external_host=<id>` makes the simulator connect to
    /// `uri` (a `ws://` URI) for each call.
    pub fn set_websocket_client(&mut self, id: &str, uri: &str) {
        self.media_ws.clients.insert(id.to_owned(), uri.to_owned());
        self.media_ws.client_params.remove(id);
    }

    /// The URI a client-mode connection (`key`, from its [`MediaSignal::WebSocketConnect`])
    /// dials now: its websocket_client's URI with the `v()` parameters last set on that
    /// client, whichever call set them (bug B1).
    pub fn websocket_client_uri(&self, key: &str) -> Option<String> {
        let (name, _) = key.rsplit_once('/')?;
        let uri = self.media_ws.clients.get(name)?;
        Some(uri_with_params(
            uri,
            self.media_ws.client_params.get(name).map(String::as_str),
        ))
    }

    pub(super) fn external_media_websocket(&mut self, p: WsRequest) -> SimResponse {
        let Some(app) = p.app else {
            return SimResponse::error(400, "app cannot be empty");
        };
        if p.encapsulation.as_deref() != Some("none") {
            return SimResponse::error(400, "encapsulation must be 'none' for websocket transport");
        }
        // `client` is the default.
        let client = match p.connection_type.as_deref() {
            Some("server") => None,
            _ => match p.external_host.as_ref().and_then(|h| {
                self.media_ws
                    .clients
                    .get(h)
                    .map(|uri| (h.clone(), uri.clone()))
            }) {
                Some(c) => Some(c),
                None => {
                    return SimResponse::error(
                        400,
                        "external_host must be a valid websocket_client connection id.",
                    )
                }
            },
        };
        let Some(format) = p.format else {
            return SimResponse::error(400, "format cannot be empty");
        };
        let Some(frame) = frame_size(&format) else {
            return SimResponse::error(400, "format not found");
        };
        let id = p.channel_id.unwrap_or_else(|| self.next_uid());
        if self.channels.by_id.contains_key(&id) {
            return SimResponse::error(409, "Channel with given unique ID already exists");
        }
        let options = p.transport_data.as_deref();
        let json_control = dial_option(options, 'f').as_deref() == Some("json");
        let auto_answer = dial_option(options, 'n').is_none();
        // `p`, or forced: the codec's frames are too small to cut.
        let passthrough = dial_option(options, 'p').is_some() || frame == 0;
        let direction = p
            .direction
            .clone()
            .or_else(|| dial_option(options, 'd'))
            .unwrap_or_else(|| "both".to_owned());
        if !["both", "in", "out"].contains(&direction.as_str()) {
            return SimResponse::error(400, "Invalid direction specified");
        }
        self.media_ws.seq += 1;
        let seq = self.media_ws.seq;
        // Server mode: a fresh UUID. Client mode: the client's name is what Asterisk shows;
        // the simulator keys the connection by name and sequence.
        let (key, connection_id, dialing) = match &client {
            None => {
                let id = format!("5e6d1a2b-{:04x}-4000-8000-{:012x}", seq & 0xffff, seq);
                (id.clone(), id, "INCOMING".to_owned())
            }
            Some((name, _)) => (format!("{name}/{seq}"), name.clone(), name.clone()),
        };
        self.ids.local_seq += 1;
        let name = format!("WebSocket/{dialing}/0x7f6ab80{:05x}", self.ids.local_seq);
        let mut c = self.new_channel(&id, &name, Tech::WebSocket, "Down");
        c.base_app = ("AppDial2".to_string(), "(Outgoing Line)".to_string());
        c.app_name = c.base_app.0.clone();
        c.app_data = c.base_app.1.clone();
        c.dialing = Some(dialing);
        c.vars.insert(
            "MEDIA_WEBSOCKET_CONNECTION_ID".to_string(),
            connection_id.clone(),
        );
        c.vars.insert(
            "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE".to_string(),
            frame.to_string(),
        );
        let args: Vec<String> = p.data.into_iter().collect();
        c.on_answer = OnAnswer::Stasis(app.clone(), args);
        self.insert_channel(c);
        self.emit_created(&id);
        self.apply_caller_and_vars(&id, None, &p.vars, false);
        self.emit_varset(Some(&id), "MEDIA_WEBSOCKET_CONNECTION_ID", &connection_id);
        self.emit_varset(
            Some(&id),
            "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE",
            &frame.to_string(),
        );
        if let Some(ap) = self.routing.apps.get_mut(&app) {
            ap.channels.insert(id.clone());
        }
        let mut resp = self.chan_json(&id);
        resp["channelvars"] = json!({
            "MEDIA_WEBSOCKET_CONNECTION_ID": connection_id,
            "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": frame.to_string(),
        });
        self.emit_dial(&id, "");
        self.media_ws.by_conn.insert(
            key.clone(),
            WsChan {
                channel: id,
                shown_id: connection_id,
                auto_answer,
                passthrough,
                direction,
                format,
                frame_size: frame,
                json: json_control,
                connected: false,
                closing: None,
            },
        );
        if let Some((name, _)) = client {
            // B1: `v()` writes its parameters into the shared websocket_client object.
            if let Some(params) = dial_option(p.transport_data.as_deref(), 'v') {
                self.media_ws
                    .client_params
                    .insert(name.clone(), params.replace(',', "&"));
            }
            // Asterisk connects while dialing: the socket may open before this answer.
            let uri = self.websocket_client_uri(&key).unwrap_or_default();
            self.media_ws
                .signals
                .push_back(MediaSignal::WebSocketConnect {
                    connection_id: key,
                    uri,
                });
        }
        SimResponse::json(200, &resp)
    }

    /// Whether a media socket may connect to `connection_id` (the HTTP answer before the
    /// upgrade): reserves it, so a second attempt gets [`MediaConnectError::Duplicate`].
    pub fn media_reserve(
        &mut self,
        now: Duration,
        connection_id: &str,
    ) -> Result<MediaConnectInfo, MediaConnectError> {
        self.advance(now);
        let Some(w) = self.media_ws.by_conn.get_mut(connection_id) else {
            return Err(MediaConnectError::NotFound);
        };
        if w.connected {
            return Err(MediaConnectError::Duplicate);
        }
        w.connected = true;
        let Some(c) = self.channels.by_id.get(&w.channel) else {
            return Err(MediaConnectError::NotFound);
        };
        Ok(MediaConnectInfo {
            connection_id: w.shown_id.clone(),
            channel_id: w.channel.clone(),
            channel_name: c.name.clone(),
            format: w.format.clone(),
            optimal_frame_size: w.frame_size,
            json: w.json,
            auto_answer: w.auto_answer,
            passthrough: w.passthrough,
            direction: w.direction.clone(),
            variables: c.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
    }

    /// The media socket sent `MEDIA_START`: the channel is answered and enters Stasis,
    /// unless the dial options had `n` (then [`Sim::media_answer`] does it).
    pub fn media_connect(&mut self, now: Duration, connection_id: &str) {
        let auto = self
            .media_ws
            .by_conn
            .get(connection_id)
            .is_some_and(|w| w.auto_answer);
        if auto {
            self.media_answer(now, connection_id);
        } else {
            self.advance(now);
        }
    }

    /// The application sent `ANSWER` (or the channel auto-answers): it goes `Up` and enters
    /// Stasis. Nothing happens when it is already up.
    pub fn media_answer(&mut self, now: Duration, connection_id: &str) {
        self.advance(now);
        let Some(id) = self
            .media_ws
            .by_conn
            .get(connection_id)
            .map(|w| w.channel.clone())
        else {
            return;
        };
        match self.channels.by_id.get_mut(&id) {
            Some(c) if c.state != "Up" => c.state = "Up",
            _ => return,
        }
        self.emit_state(&id);
        self.dial_answered(&id);
    }

    /// The media socket ended the call: `HANGUP` (`tech_cause` 1000) or a CLOSE or dropped
    /// connection (1001).
    pub fn media_hangup(&mut self, now: Duration, connection_id: &str, tech_cause: i64) {
        self.media_hangup_request(now, connection_id, tech_cause);
        self.media_hangup_done(now, connection_id);
    }

    /// Asterisk hangs the media channel up because of its socket (`HANGUP`, a close status
    /// of its own: `tech_cause`): `ChannelHangupRequest`, then the channel leaves its bridge
    /// and the application (`ChannelLeftBridge`, `StasisEnd`), all before it closes the
    /// socket: the close is written by the channel's hangup, which runs once Stasis is done
    /// with it (recorded: `StasisEnd` before the CLOSE frame, or within 0.2 ms of it, on the
    /// other socket). [`Sim::media_hangup_done`] destroys the channel once the socket is
    /// closed.
    pub fn media_hangup_request(&mut self, now: Duration, connection_id: &str, tech_cause: i64) {
        self.advance(now);
        let hanging_up =
            |sim: &Sim, id: &str| sim.channels.by_id.get(id).is_some_and(|c| c.hanging_up);
        if let Some(id) = self
            .media_channel_alive(connection_id)
            .filter(|id| !hanging_up(self, id))
        {
            self.chan_event(
                "ChannelHangupRequest",
                &id,
                json!({"cause": 16, "tech_cause": tech_cause}),
            );
            self.leave_everything(&id);
        }
    }

    /// The media channel's socket is closed: the channel is destroyed (after the close and
    /// its answer, as recorded), with the cause of its hangup (16 when the socket ended it).
    pub fn media_hangup_done(&mut self, now: Duration, connection_id: &str) {
        self.advance(now);
        if let Some(id) = self.media_channel_alive(connection_id) {
            let cause = self
                .media_ws
                .by_conn
                .get(connection_id)
                .and_then(|w| w.closing)
                .unwrap_or(16);
            self.teardown(&id, cause, false);
        }
    }

    /// Asterisk hangs up a chan_websocket channel whose socket is open (an ARI `DELETE`, or
    /// the far end): the channel leaves its bridge and the application, its hangup closes
    /// the socket (CLOSE 1000), and it is destroyed only once that close is answered
    /// ([`Sim::media_hangup_done`], called by the socket). Recorded after `DELETE
    /// channels/{id}`: `ChannelHangupRequest`, `StasisEnd`, the CLOSE and its answer, then
    /// `ChannelDestroyed`. Returns false (destroy it now) for any other channel, and for
    /// one whose socket is not connected.
    pub(super) fn media_ws_hangup_closes_first(&mut self, id: &str, cause: i64) -> bool {
        if self
            .channels
            .by_id
            .get(id)
            .is_none_or(|c| c.tech != Tech::WebSocket)
        {
            return false;
        }
        let Some((connection_id, w)) = self
            .media_ws
            .by_conn
            .iter_mut()
            .find(|(_, w)| w.channel == id && w.connected && w.closing.is_none())
        else {
            return false;
        };
        w.closing = Some(cause);
        let connection_id = connection_id.clone();
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.hanging_up = true;
            c.exec_gen += 1;
        }
        self.leave_everything(id);
        self.media_ws
            .signals
            .push_back(MediaSignal::Close { connection_id });
        true
    }

    /// The media channel of `connection_id`, if it still exists.
    fn media_channel_alive(&self, connection_id: &str) -> Option<String> {
        let id = self
            .media_ws
            .by_conn
            .get(connection_id)
            .map(|w| w.channel.clone())?;
        self.channels.by_id.contains_key(&id).then_some(id)
    }

    /// The websocket_client could not be reached: the channel is destroyed with cause 3
    /// ("No route to destination"), as Asterisk does after its reconnect attempts.
    pub fn media_unreachable(&mut self, now: Duration, connection_id: &str) {
        self.advance(now);
        let Some(id) = self
            .media_ws
            .by_conn
            .get(connection_id)
            .map(|w| w.channel.clone())
        else {
            return;
        };
        if !self.channels.by_id.contains_key(&id) {
            return;
        }
        self.chan_event("ChannelHangupRequest", &id, json!({"cause": 3}));
        self.teardown(&id, 3, false);
    }

    pub(super) fn audiosocket_created(&mut self, id: &str, host: &str, uuid: &str) {
        self.media_ws.by_conn.insert(
            uuid.to_owned(),
            WsChan {
                channel: id.to_owned(),
                shown_id: uuid.to_owned(),
                auto_answer: true,
                passthrough: false,
                direction: "both".to_owned(),
                format: "slin".to_owned(),
                frame_size: 320,
                json: false,
                connected: true,
                closing: None,
            },
        );
        self.media_ws
            .signals
            .push_back(MediaSignal::AudioSocketConnect {
                connection_id: uuid.to_owned(),
                host: host.to_owned(),
                channel_id: id.to_owned(),
            });
    }

    /// The AudioSocket application sent a hangup (kind 0x00) or closed TCP: the channel
    /// is hung up (cause 16).
    pub fn audiosocket_hangup(&mut self, now: Duration, uuid: &str) {
        self.advance(now);
        let Some(id) = self.media_ws.by_conn.get(uuid).map(|w| w.channel.clone()) else {
            return;
        };
        if !self.channels.by_id.contains_key(&id) {
            return;
        }
        self.chan_event("ChannelHangupRequest", &id, json!({"cause": 16}));
        self.teardown(&id, 16, false);
    }

    /// What the media sockets must do, in order; drain after every input.
    pub fn drain_media_signals(&mut self) -> Vec<MediaSignal> {
        self.media_ws.signals.drain(..).collect()
    }

    /// Hook: a channel was destroyed.
    pub(super) fn media_ws_destroyed(&mut self, id: &str) {
        let gone: Vec<String> = self
            .media_ws
            .by_conn
            .iter()
            .filter(|(_, w)| w.channel == id)
            .map(|(k, _)| k.clone())
            .collect();
        for connection_id in gone {
            self.media_ws.by_conn.remove(&connection_id);
            self.media_ws
                .signals
                .push_back(MediaSignal::Close { connection_id });
        }
    }

    /// Hook: a channel received a DTMF digit; media channels bridged with it report it.
    pub(super) fn media_ws_dtmf(&mut self, id: &str, digit: char) {
        if self.media_ws.by_conn.is_empty() {
            return;
        }
        let Some(bridge) = self.channels.by_id.get(id).and_then(|c| c.bridge.clone()) else {
            return;
        };
        let members: Vec<String> = self
            .bridges
            .by_id
            .get(&bridge)
            .map(|b| b.channels.to_vec())
            .unwrap_or_default();
        for (conn, w) in &self.media_ws.by_conn {
            if w.connected && w.channel != id && members.contains(&w.channel) {
                self.media_ws.signals.push_back(MediaSignal::Dtmf {
                    connection_id: conn.clone(),
                    digit,
                });
            }
        }
    }
}
