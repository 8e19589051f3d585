//! chan_websocket control messages: the events Asterisk sends and the commands it accepts, in
//! both forms (plain text and JSON).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Asterisk ignores (and only logs) a control message longer than this many bytes: no reply,
/// no error. [`Command::encode`] refuses to build one.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 128;

/// The form of the control messages on one media socket.
///
/// Asterisk never mixes the two on one socket. Plain text is the default of
/// `chan_websocket.conf` (and deprecated); JSON is chosen per call with the dial option
/// `f(json)` (externalMedia `transport_data=f(json)`, Asterisk 20.18+, 22.8+, 23.2+). Some
/// commands exist in JSON only ([`Command::SetMediaDirection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ControlFormat {
    /// `NAME key:value …` events, `COMMAND [argument]` commands.
    #[default]
    PlainText,
    /// `{"event":…}` events, `{"command":…}` commands.
    Json,
}

impl ControlFormat {
    /// The form a received control message is in: JSON when its first non-blank character is
    /// `{`, plain text otherwise.
    pub fn detect(text: &str) -> ControlFormat {
        if text.trim_start().starts_with('{') {
            ControlFormat::Json
        } else {
            ControlFormat::PlainText
        }
    }
}

/// `MEDIA_START`: the first message on a media socket, with the negotiated media parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaStart {
    /// `MEDIA_WEBSOCKET_CONNECTION_ID` in server mode; the `websocket_client` name in client
    /// mode (not unique per call). Empty if Asterisk did not send it.
    pub connection_id: String,
    /// The channel name, `WebSocket/<connection>/<pointer>`. Empty if not sent.
    pub channel: String,
    /// The channel id (Asterisk 20.17+, 22.7+, 23.1+).
    pub channel_id: Option<String>,
    /// The media format for the life of the channel: `ulaw`, `alaw`, `slin`, `slin16`, …
    pub format: String,
    /// The bytes in one frame of `ptime` ms (`ulaw` 160, `slin16` 640); 0 in passthrough mode.
    pub optimal_frame_size: u32,
    /// Milliseconds per frame (20 for the usual codecs; 20 if Asterisk did not say).
    pub ptime: u32,
    /// The channel's variables (JSON form only; empty in plain text).
    pub channel_variables: BTreeMap<String, String>,
}

/// `STATUS`: the answer to [`Command::GetStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The channel id (Asterisk 20.17+).
    pub channel_id: Option<String>,
    /// Frames in Asterisk's playout queue.
    pub queue_length: u32,
    /// `MEDIA_XON` is sent when the queue falls below this (800).
    pub xon_level: u32,
    /// `MEDIA_XOFF` is sent when the queue reaches this (900).
    pub xoff_level: u32,
    /// The queue is at its hard limit (1,000): a message arriving now is dropped whole.
    pub queue_full: bool,
    /// Buffering mode is on ([`Command::StartMediaBuffering`]).
    pub bulk_media: bool,
    /// Playout is paused ([`Command::PauseMedia`]).
    pub media_paused: bool,
}

/// `ERROR` (Asterisk 20.18+): a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaError {
    /// The channel id.
    pub channel_id: Option<String>,
    /// The text exactly as sent; some end with a newline (see [`message`](Self::message)).
    pub error_text: String,
}

impl MediaError {
    /// The error text without its trailing whitespace.
    pub fn message(&self) -> &str {
        self.error_text.trim_end()
    }
}

/// A control event this crate does not know, kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownMediaEvent {
    /// The event name (`NAME` of plain text, `"event"` of JSON).
    pub name: String,
    /// The whole message.
    pub raw: String,
}

/// A control event from Asterisk (a text message on the media socket).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// `MEDIA_START`: the media parameters; the first message.
    MediaStart(MediaStart),
    /// `DTMF_END`: the caller pressed a key (only the end of a digit is reported).
    #[non_exhaustive]
    DtmfEnd {
        /// The channel id (20.17+).
        channel_id: Option<String>,
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
    },
    /// `STATUS`: the answer to `GET_STATUS`.
    Status(Status),
    /// `MEDIA_XOFF`: Asterisk's queue reached 900 frames; stop sending audio.
    #[non_exhaustive]
    MediaXoff {
        /// The channel id (JSON form only).
        channel_id: Option<String>,
    },
    /// `MEDIA_XON`: the queue fell below 800 frames; sending may resume.
    #[non_exhaustive]
    MediaXon {
        /// The channel id (JSON form only).
        channel_id: Option<String>,
    },
    /// `QUEUE_DRAINED`: the answer to `REPORT_QUEUE_DRAINED`, once the queue is empty.
    #[non_exhaustive]
    QueueDrained {
        /// The channel id (JSON form only).
        channel_id: Option<String>,
    },
    /// `MEDIA_BUFFERING_COMPLETED`: playout reached the end of a buffered block
    /// (`STOP_MEDIA_BUFFERING`).
    #[non_exhaustive]
    MediaBufferingCompleted {
        /// The channel id (JSON form only).
        channel_id: Option<String>,
        /// The id given to `STOP_MEDIA_BUFFERING`, if any.
        correlation_id: Option<String>,
    },
    /// `MEDIA_MARK_PROCESSED`: everything queued before a `MARK_MEDIA` has been played.
    #[non_exhaustive]
    MediaMarkProcessed {
        /// The channel id (JSON form only).
        channel_id: Option<String>,
        /// The id given to `MARK_MEDIA`, if any.
        correlation_id: Option<String>,
    },
    /// `ERROR` (20.18+): a command was refused.
    Error(MediaError),
    /// An event this crate does not know yet.
    Unknown(UnknownMediaEvent),
}

/// Why a control message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Empty, or only whitespace.
    Empty,
    /// A JSON message that is not a JSON object with a string `"event"` (or `"command"`).
    NotAnObject {
        /// What the JSON parser said.
        reason: String,
    },
    /// A known event or command with a missing or invalid field.
    Malformed {
        /// The event or command name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A command name Asterisk does not know (commands only; unknown events are
    /// [`MediaEvent::Unknown`]).
    UnknownCommand {
        /// The name.
        name: String,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty media control message"),
            ParseError::NotAnObject { reason } => {
                write!(
                    f,
                    "media control message is not a JSON object with a name: {reason}"
                )
            }
            ParseError::Malformed { name, reason } => {
                write!(f, "malformed {name} media control message: {reason}")
            }
            ParseError::UnknownCommand { name } => write!(f, "unknown media command {name:?}"),
        }
    }
}

impl std::error::Error for ParseError {}

fn malformed(name: &str, reason: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// The JSON form of every event, all fields optional; which are required depends on the name.
#[derive(Deserialize, Serialize, Default)]
struct JsonEvent {
    event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    optimal_frame_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ptime: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_variables: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xon_level: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xoff_level: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_full: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bulk_media: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_paused: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_text: Option<String>,
}

#[derive(Deserialize)]
struct JsonName {
    event: String,
}

/// The fields of a plain-text event: `key:value` tokens, split on the first `:`.
struct PlainFields<'a> {
    name: &'a str,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> PlainFields<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn required(&self, key: &str) -> Result<&'a str, ParseError> {
        self.get(key)
            .ok_or_else(|| malformed(self.name, format!("no {key}")))
    }

    fn number(&self, key: &str) -> Result<u32, ParseError> {
        let v = self.required(key)?;
        v.parse()
            .map_err(|_| malformed(self.name, format!("{key}:{v} is not a number")))
    }

    fn boolean(&self, key: &str) -> Result<bool, ParseError> {
        match self.required(key)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(malformed(
                self.name,
                format!("{key}:{v} is not true or false"),
            )),
        }
    }
}

fn one_char(name: &str, digit: &str) -> Result<char, ParseError> {
    let mut chars = digit.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(malformed(
            name,
            format!("digit {digit:?} is not one character"),
        )),
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl MediaEvent {
    /// Parses one text message from Asterisk, in either form ([`ControlFormat::detect`]).
    ///
    /// An event this crate does not know is [`MediaEvent::Unknown`], never an error; an error
    /// means a known event with a missing or invalid field, or text that is neither form.
    ///
    /// ```
    /// use ari_proto::media::websocket::MediaEvent;
    /// let e = MediaEvent::parse("MEDIA_START connection_id:61af channel:WebSocket/INCOMING/0x7f \
    ///     channel_id:em-1 format:ulaw optimal_frame_size:160 ptime:20")?;
    /// let MediaEvent::MediaStart(start) = e else { unreachable!() };
    /// assert_eq!((start.format.as_str(), start.optimal_frame_size), ("ulaw", 160));
    ///
    /// let e = MediaEvent::parse(r#"{"event":"DTMF_END","channel_id":"em-1","digit":"4"}"#)?;
    /// assert!(matches!(e, MediaEvent::DtmfEnd { digit: '4', .. }));
    /// # Ok::<(), ari_proto::media::websocket::ParseError>(())
    /// ```
    pub fn parse(text: &str) -> Result<MediaEvent, ParseError> {
        match ControlFormat::detect(text) {
            ControlFormat::Json => Self::parse_json(text),
            ControlFormat::PlainText => Self::parse_plain(text),
        }
    }

    fn parse_plain(text: &str) -> Result<MediaEvent, ParseError> {
        let body = text.trim_start();
        let (name, rest) = match body.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&body[..i], &body[i..]),
            None => (body, ""),
        };
        if name.is_empty() {
            return Err(ParseError::Empty);
        }
        // ERROR: `error_text:` runs to the end of the message, spaces and newline included.
        let (rest, error_text) = if name == "ERROR" {
            match rest.find("error_text:") {
                Some(i) => (&rest[..i], Some(&rest[i + "error_text:".len()..])),
                None => (rest, None),
            }
        } else {
            (rest, None)
        };
        let fields = PlainFields {
            name,
            fields: rest
                .split_ascii_whitespace()
                .map(|t| t.split_once(':').unwrap_or((t, "")))
                .collect(),
        };
        let channel_id = fields.get("channel_id").map(str::to_owned);
        let correlation = || {
            let id = rest.trim();
            (!id.is_empty()).then(|| id.to_owned())
        };
        Ok(match name {
            "MEDIA_START" => MediaEvent::MediaStart(MediaStart {
                connection_id: fields.get("connection_id").unwrap_or("").to_owned(),
                channel: fields.get("channel").unwrap_or("").to_owned(),
                channel_id,
                format: fields.required("format")?.to_owned(),
                optimal_frame_size: fields.number("optimal_frame_size")?,
                ptime: if fields.get("ptime").is_some() {
                    fields.number("ptime")?
                } else {
                    20
                },
                channel_variables: BTreeMap::new(),
            }),
            "DTMF_END" => MediaEvent::DtmfEnd {
                channel_id,
                digit: one_char(name, fields.required("digit")?)?,
            },
            "STATUS" => MediaEvent::Status(Status {
                channel_id,
                queue_length: fields.number("queue_length")?,
                xon_level: fields.number("xon_level")?,
                xoff_level: fields.number("xoff_level")?,
                queue_full: fields.boolean("queue_full")?,
                bulk_media: fields.boolean("bulk_media")?,
                media_paused: fields.boolean("media_paused")?,
            }),
            "MEDIA_XOFF" => MediaEvent::MediaXoff { channel_id },
            "MEDIA_XON" => MediaEvent::MediaXon { channel_id },
            "QUEUE_DRAINED" => MediaEvent::QueueDrained { channel_id },
            "MEDIA_BUFFERING_COMPLETED" => MediaEvent::MediaBufferingCompleted {
                channel_id: None,
                correlation_id: correlation(),
            },
            "MEDIA_MARK_PROCESSED" => MediaEvent::MediaMarkProcessed {
                channel_id: None,
                correlation_id: correlation(),
            },
            "ERROR" => MediaEvent::Error(MediaError {
                channel_id,
                error_text: error_text.unwrap_or("").to_owned(),
            }),
            _ => MediaEvent::Unknown(UnknownMediaEvent {
                name: name.to_owned(),
                raw: text.to_owned(),
            }),
        })
    }

    fn parse_json(text: &str) -> Result<MediaEvent, ParseError> {
        let raw: JsonEvent = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                // An unknown event may carry fields of other types: keep it as unknown.
                return match serde_json::from_str::<JsonName>(text) {
                    Ok(JsonName { event }) if !is_known_event(&event) => {
                        Ok(MediaEvent::Unknown(UnknownMediaEvent {
                            name: event,
                            raw: text.to_owned(),
                        }))
                    }
                    Ok(JsonName { event }) => Err(malformed(&event, e.to_string())),
                    Err(_) => Err(ParseError::NotAnObject {
                        reason: e.to_string(),
                    }),
                };
            }
        };
        let name = raw.event.as_str();
        let need =
            |v: Option<u32>, key: &str| v.ok_or_else(|| malformed(name, format!("no {key}")));
        let flag =
            |v: Option<bool>, key: &str| v.ok_or_else(|| malformed(name, format!("no {key}")));
        Ok(match name {
            "MEDIA_START" => MediaEvent::MediaStart(MediaStart {
                connection_id: raw.connection_id.unwrap_or_default(),
                channel: raw.channel.unwrap_or_default(),
                format: raw.format.ok_or_else(|| malformed(name, "no format"))?,
                optimal_frame_size: need(raw.optimal_frame_size, "optimal_frame_size")?,
                ptime: raw.ptime.unwrap_or(20),
                channel_variables: raw.channel_variables.unwrap_or_default(),
                channel_id: raw.channel_id,
            }),
            "DTMF_END" => MediaEvent::DtmfEnd {
                digit: one_char(
                    name,
                    raw.digit
                        .as_deref()
                        .ok_or_else(|| malformed(name, "no digit"))?,
                )?,
                channel_id: raw.channel_id,
            },
            "STATUS" => MediaEvent::Status(Status {
                queue_length: need(raw.queue_length, "queue_length")?,
                xon_level: need(raw.xon_level, "xon_level")?,
                xoff_level: need(raw.xoff_level, "xoff_level")?,
                queue_full: flag(raw.queue_full, "queue_full")?,
                bulk_media: flag(raw.bulk_media, "bulk_media")?,
                media_paused: flag(raw.media_paused, "media_paused")?,
                channel_id: raw.channel_id,
            }),
            "MEDIA_XOFF" => MediaEvent::MediaXoff {
                channel_id: raw.channel_id,
            },
            "MEDIA_XON" => MediaEvent::MediaXon {
                channel_id: raw.channel_id,
            },
            "QUEUE_DRAINED" => MediaEvent::QueueDrained {
                channel_id: raw.channel_id,
            },
            "MEDIA_BUFFERING_COMPLETED" => MediaEvent::MediaBufferingCompleted {
                channel_id: raw.channel_id,
                correlation_id: non_empty(raw.correlation_id),
            },
            "MEDIA_MARK_PROCESSED" => MediaEvent::MediaMarkProcessed {
                channel_id: raw.channel_id,
                correlation_id: non_empty(raw.correlation_id),
            },
            "ERROR" => MediaEvent::Error(MediaError {
                channel_id: raw.channel_id,
                error_text: raw.error_text.unwrap_or_default(),
            }),
            _ => MediaEvent::Unknown(UnknownMediaEvent {
                name: raw.event,
                raw: text.to_owned(),
            }),
        })
    }

    /// The event name as Asterisk writes it (`MEDIA_START`, …; an unknown event's own name).
    pub fn name(&self) -> &str {
        match self {
            MediaEvent::MediaStart(_) => "MEDIA_START",
            MediaEvent::DtmfEnd { .. } => "DTMF_END",
            MediaEvent::Status(_) => "STATUS",
            MediaEvent::MediaXoff { .. } => "MEDIA_XOFF",
            MediaEvent::MediaXon { .. } => "MEDIA_XON",
            MediaEvent::QueueDrained { .. } => "QUEUE_DRAINED",
            MediaEvent::MediaBufferingCompleted { .. } => "MEDIA_BUFFERING_COMPLETED",
            MediaEvent::MediaMarkProcessed { .. } => "MEDIA_MARK_PROCESSED",
            MediaEvent::Error(_) => "ERROR",
            MediaEvent::Unknown(u) => &u.name,
        }
    }

    /// The channel id the event carries, if any.
    pub fn channel_id(&self) -> Option<&str> {
        match self {
            MediaEvent::MediaStart(MediaStart { channel_id, .. })
            | MediaEvent::DtmfEnd { channel_id, .. }
            | MediaEvent::Status(Status { channel_id, .. })
            | MediaEvent::MediaXoff { channel_id }
            | MediaEvent::MediaXon { channel_id }
            | MediaEvent::QueueDrained { channel_id }
            | MediaEvent::MediaBufferingCompleted { channel_id, .. }
            | MediaEvent::MediaMarkProcessed { channel_id, .. }
            | MediaEvent::Error(MediaError { channel_id, .. }) => channel_id.as_deref(),
            MediaEvent::Unknown(_) => None,
        }
    }

    /// The event as Asterisk would write it in `format` (what a simulated Asterisk sends).
    ///
    /// The plain-text form has no place for `channel_variables` (MEDIA_START), nor for the
    /// channel id of `MEDIA_BUFFERING_COMPLETED`/`MEDIA_MARK_PROCESSED`: they are left out,
    /// as Asterisk does (Asterisk sends the bare `MEDIA_XOFF`/`MEDIA_XON`/`QUEUE_DRAINED`;
    /// a channel id is written only if the event has one). An unknown event is written back
    /// as received.
    pub fn to_text(&self, format: ControlFormat) -> String {
        match format {
            ControlFormat::Json => self.to_json(),
            ControlFormat::PlainText => self.to_plain(),
        }
    }

    fn to_plain(&self) -> String {
        let with_id = |name: &str, id: &Option<String>| match id {
            Some(id) => format!("{name} channel_id:{id}"),
            None => name.to_owned(),
        };
        let with_corr = |name: &str, id: &Option<String>| match id {
            Some(id) => format!("{name} {id}"),
            None => name.to_owned(),
        };
        match self {
            MediaEvent::MediaStart(s) => {
                let mut out = format!(
                    "MEDIA_START connection_id:{} channel:{}",
                    s.connection_id, s.channel
                );
                if let Some(id) = &s.channel_id {
                    out.push_str(" channel_id:");
                    out.push_str(id);
                }
                out.push_str(&format!(
                    " format:{} optimal_frame_size:{} ptime:{}",
                    s.format, s.optimal_frame_size, s.ptime
                ));
                out
            }
            MediaEvent::DtmfEnd { channel_id, digit } => match channel_id {
                Some(id) => format!("DTMF_END digit:{digit} channel_id:{id}"),
                None => format!("DTMF_END digit:{digit}"),
            },
            MediaEvent::Status(s) => {
                let mut out = with_id("STATUS", &s.channel_id);
                out.push_str(&format!(
                    " queue_length:{} xon_level:{} xoff_level:{} queue_full:{} bulk_media:{} media_paused:{}",
                    s.queue_length, s.xon_level, s.xoff_level, s.queue_full, s.bulk_media, s.media_paused
                ));
                out
            }
            MediaEvent::MediaXoff { channel_id } => with_id("MEDIA_XOFF", channel_id),
            MediaEvent::MediaXon { channel_id } => with_id("MEDIA_XON", channel_id),
            MediaEvent::QueueDrained { channel_id } => with_id("QUEUE_DRAINED", channel_id),
            MediaEvent::MediaBufferingCompleted { correlation_id, .. } => {
                with_corr("MEDIA_BUFFERING_COMPLETED", correlation_id)
            }
            MediaEvent::MediaMarkProcessed { correlation_id, .. } => {
                with_corr("MEDIA_MARK_PROCESSED", correlation_id)
            }
            MediaEvent::Error(e) => {
                let mut out = with_id("ERROR", &e.channel_id);
                out.push_str(" error_text:");
                out.push_str(&e.error_text);
                out
            }
            MediaEvent::Unknown(u) => u.raw.clone(),
        }
    }

    fn to_json(&self) -> String {
        let mut raw = JsonEvent {
            event: self.name().to_owned(),
            channel_id: self.channel_id().map(str::to_owned),
            ..JsonEvent::default()
        };
        match self {
            MediaEvent::MediaStart(s) => {
                raw.connection_id = Some(s.connection_id.clone());
                raw.channel = Some(s.channel.clone());
                raw.format = Some(s.format.clone());
                raw.optimal_frame_size = Some(s.optimal_frame_size);
                raw.ptime = Some(s.ptime);
                raw.channel_variables = Some(s.channel_variables.clone());
            }
            MediaEvent::DtmfEnd { digit, .. } => raw.digit = Some(digit.to_string()),
            MediaEvent::Status(s) => {
                raw.queue_length = Some(s.queue_length);
                raw.xon_level = Some(s.xon_level);
                raw.xoff_level = Some(s.xoff_level);
                raw.queue_full = Some(s.queue_full);
                raw.bulk_media = Some(s.bulk_media);
                raw.media_paused = Some(s.media_paused);
            }
            MediaEvent::MediaBufferingCompleted { correlation_id, .. }
            | MediaEvent::MediaMarkProcessed { correlation_id, .. } => {
                raw.correlation_id = Some(correlation_id.clone().unwrap_or_default());
            }
            MediaEvent::Error(e) => raw.error_text = Some(e.error_text.clone()),
            MediaEvent::Unknown(u) => return u.raw.clone(),
            _ => {}
        }
        serde_json::to_string(&raw).unwrap_or_default()
    }
}

fn is_known_event(name: &str) -> bool {
    matches!(
        name,
        "MEDIA_START"
            | "DTMF_END"
            | "STATUS"
            | "MEDIA_XOFF"
            | "MEDIA_XON"
            | "QUEUE_DRAINED"
            | "MEDIA_BUFFERING_COMPLETED"
            | "MEDIA_MARK_PROCESSED"
            | "ERROR"
    )
}

/// The media direction of [`Command::SetMediaDirection`], from the application's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// Audio both ways (the default).
    Both,
    /// The application only receives: Asterisk drops the application's audio.
    In,
    /// The application only sends: Asterisk sends no audio.
    Out,
}

impl Direction {
    /// `both`, `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A command to Asterisk (a text message on the media socket).
///
/// Commands that act on Asterisk's playout queue ([`MarkMedia`](Command::MarkMedia),
/// [`StartMediaBuffering`](Command::StartMediaBuffering),
/// [`StopMediaBuffering`](Command::StopMediaBuffering),
/// [`ReportQueueDrained`](Command::ReportQueueDrained)) take effect at their place among the
/// audio messages; [`MediaSession`](super::MediaSession) keeps them in order with the audio it
/// holds back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// `ANSWER`: answer a channel created with the `n` (no auto-answer) option.
    Answer,
    /// `HANGUP`: hang the channel up (cause 16); Asterisk then closes the socket.
    Hangup,
    /// `GET_STATUS`: Asterisk answers [`MediaEvent::Status`].
    GetStatus,
    /// `START_MEDIA_BUFFERING`: audio messages of any size are joined and cut into frames by
    /// Asterisk, until `STOP_MEDIA_BUFFERING`.
    StartMediaBuffering,
    /// `STOP_MEDIA_BUFFERING [id]`: the leftover partial frame is queued, then a marker;
    /// [`MediaEvent::MediaBufferingCompleted`] comes when playout reaches it.
    StopMediaBuffering {
        /// Echoed in the completion event. Plain text: no whitespace.
        correlation_id: Option<String>,
    },
    /// `MARK_MEDIA [id]` (20.18+): a marker in the queue;
    /// [`MediaEvent::MediaMarkProcessed`] comes when everything before it has been played.
    MarkMedia {
        /// Echoed in the processed event. Plain text: no whitespace.
        correlation_id: Option<String>,
    },
    /// `FLUSH_MEDIA`: drop the queued audio and markers (their events never come), end
    /// buffering mode.
    FlushMedia,
    /// `PAUSE_MEDIA`: stop playout; the queue keeps filling.
    PauseMedia,
    /// `CONTINUE_MEDIA`: resume playout.
    ContinueMedia,
    /// `REPORT_QUEUE_DRAINED`: one [`MediaEvent::QueueDrained`] when the queue is next empty.
    ReportQueueDrained,
    /// `SET_MEDIA_DIRECTION` (JSON only, 20.19+).
    SetMediaDirection(Direction),
}

/// Why a command could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The message would be longer than [`MAX_CONTROL_MESSAGE_BYTES`]: Asterisk would ignore
    /// it without a word. Use a shorter correlation id.
    TooLong {
        /// The command name.
        command: &'static str,
        /// The length of the message it would make.
        len: usize,
    },
    /// The command exists in the JSON form only (`transport_data=f(json)`).
    JsonOnly {
        /// The command name.
        command: &'static str,
    },
    /// A correlation id that the plain-text form cannot carry (empty, whitespace or control
    /// characters).
    InvalidCorrelationId {
        /// The command name.
        command: &'static str,
        /// The id.
        id: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::TooLong { command, len } => write!(
                f,
                "{command} would be {len} bytes; Asterisk ignores control messages over \
                 {MAX_CONTROL_MESSAGE_BYTES} bytes (use a shorter correlation id)"
            ),
            CommandError::JsonOnly { command } => write!(
                f,
                "{command} exists only in the JSON control format (create the channel with \
                 transport_data=f(json))"
            ),
            CommandError::InvalidCorrelationId { command, id } => write!(
                f,
                "{command}: correlation id {id:?} cannot be sent in the plain-text format \
                 (it must be non-empty, without whitespace or control characters)"
            ),
        }
    }
}

impl std::error::Error for CommandError {}

#[derive(Serialize, Deserialize)]
struct JsonCommand<'a> {
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    correlation_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'a str>,
}

impl Command {
    /// The command name (`MARK_MEDIA`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Answer => "ANSWER",
            Command::Hangup => "HANGUP",
            Command::GetStatus => "GET_STATUS",
            Command::StartMediaBuffering => "START_MEDIA_BUFFERING",
            Command::StopMediaBuffering { .. } => "STOP_MEDIA_BUFFERING",
            Command::MarkMedia { .. } => "MARK_MEDIA",
            Command::FlushMedia => "FLUSH_MEDIA",
            Command::PauseMedia => "PAUSE_MEDIA",
            Command::ContinueMedia => "CONTINUE_MEDIA",
            Command::ReportQueueDrained => "REPORT_QUEUE_DRAINED",
            Command::SetMediaDirection(_) => "SET_MEDIA_DIRECTION",
        }
    }

    /// Whether the command takes effect at its place in Asterisk's playout queue, so must not
    /// overtake audio sent before it.
    pub fn is_queued(&self) -> bool {
        matches!(
            self,
            Command::StartMediaBuffering
                | Command::StopMediaBuffering { .. }
                | Command::MarkMedia { .. }
                | Command::ReportQueueDrained
        )
    }

    fn correlation_id(&self) -> Option<&str> {
        match self {
            Command::StopMediaBuffering { correlation_id }
            | Command::MarkMedia { correlation_id } => correlation_id.as_deref(),
            _ => None,
        }
    }

    /// The text message for this command in `format`.
    ///
    /// ```
    /// use ari_proto::media::websocket::{Command, CommandError, ControlFormat};
    /// let mark = Command::MarkMedia { correlation_id: Some("m1".into()) };
    /// assert_eq!(mark.encode(ControlFormat::PlainText)?, "MARK_MEDIA m1");
    /// assert_eq!(mark.encode(ControlFormat::Json)?,
    ///            r#"{"command":"MARK_MEDIA","correlation_id":"m1"}"#);
    /// let long = Command::MarkMedia { correlation_id: Some("x".repeat(200)) };
    /// assert!(matches!(long.encode(ControlFormat::Json), Err(CommandError::TooLong { .. })));
    /// # Ok::<(), CommandError>(())
    /// ```
    pub fn encode(&self, format: ControlFormat) -> Result<String, CommandError> {
        let command = self.name();
        let text = match format {
            ControlFormat::PlainText => {
                if let Command::SetMediaDirection(_) = self {
                    return Err(CommandError::JsonOnly { command });
                }
                match self.correlation_id() {
                    Some(id) => {
                        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(CommandError::InvalidCorrelationId {
                                command,
                                id: id.to_owned(),
                            });
                        }
                        format!("{command} {id}")
                    }
                    None => command.to_owned(),
                }
            }
            ControlFormat::Json => {
                let direction = match self {
                    Command::SetMediaDirection(d) => Some(d.as_str()),
                    _ => None,
                };
                serde_json::to_string(&JsonCommand {
                    command,
                    correlation_id: self.correlation_id().map(Into::into),
                    direction,
                })
                .map_err(|_| CommandError::InvalidCorrelationId {
                    command,
                    id: self.correlation_id().unwrap_or("").to_owned(),
                })?
            }
        };
        if text.len() > MAX_CONTROL_MESSAGE_BYTES {
            return Err(CommandError::TooLong {
                command,
                len: text.len(),
            });
        }
        Ok(text)
    }

    /// Parses a command as Asterisk does (leading and trailing whitespace stripped, names
    /// case-sensitive); what a simulated Asterisk needs. A plain-text `SET_MEDIA_DIRECTION`
    /// is [`ParseError::Malformed`] (Asterisk answers it with an `ERROR`).
    pub fn parse(text: &str) -> Result<Command, ParseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        let (name, arg) = match ControlFormat::detect(text) {
            ControlFormat::Json => {
                let raw: JsonCommand<'_> =
                    serde_json::from_str(text).map_err(|e| ParseError::NotAnObject {
                        reason: e.to_string(),
                    })?;
                if raw.command == "SET_MEDIA_DIRECTION" {
                    let direction = match raw.direction {
                        Some("both") => Direction::Both,
                        Some("in") => Direction::In,
                        Some("out") => Direction::Out,
                        other => {
                            return Err(malformed(
                                raw.command,
                                format!("{other:?} is not a valid direction"),
                            ))
                        }
                    };
                    return Ok(Command::SetMediaDirection(direction));
                }
                (
                    raw.command.to_owned(),
                    raw.correlation_id
                        .map(|c| c.into_owned())
                        .filter(|c| !c.is_empty()),
                )
            }
            ControlFormat::PlainText => {
                let (name, arg) = match text.split_once(|c: char| c.is_ascii_whitespace()) {
                    Some((n, a)) => (n, Some(a.trim().to_owned())),
                    None => (text, None),
                };
                if name == "SET_MEDIA_DIRECTION" {
                    return Err(malformed(name, "only supports JSON format"));
                }
                (name.to_owned(), arg.filter(|a| !a.is_empty()))
            }
        };
        Ok(match name.as_str() {
            "ANSWER" => Command::Answer,
            "HANGUP" => Command::Hangup,
            "GET_STATUS" => Command::GetStatus,
            "START_MEDIA_BUFFERING" => Command::StartMediaBuffering,
            "STOP_MEDIA_BUFFERING" => Command::StopMediaBuffering {
                correlation_id: arg,
            },
            "MARK_MEDIA" => Command::MarkMedia {
                correlation_id: arg,
            },
            "FLUSH_MEDIA" => Command::FlushMedia,
            "PAUSE_MEDIA" => Command::PauseMedia,
            "CONTINUE_MEDIA" => Command::ContinueMedia,
            "REPORT_QUEUE_DRAINED" => Command::ReportQueueDrained,
            _ => return Err(ParseError::UnknownCommand { name }),
        })
    }
}
