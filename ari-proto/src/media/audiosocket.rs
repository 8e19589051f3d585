//! AudioSocket: externalMedia `encapsulation=audiosocket`, `transport=tcp`.
//!
//! Asterisk connects over TCP to `external_host` while dialing. Both directions carry
//! messages of `kind` (1 byte) + `length` (2 bytes, big-endian) + `payload`. The first message
//! from Asterisk is the call's UUID (the externalMedia `data`); then audio (16-bit
//! little-endian PCM, kind `0x10` for 8 kHz) every 20 ms while there is audio, and DTMF
//! digits. The application sends audio, and [`Message::Hangup`] to hang up. Asterisk accepts
//! only audio and hangup: anything else hangs the channel up.
//!
//! ```
//! use ari_proto::media::audiosocket::{Decoder, Message, Rate};
//! use bytes::{Bytes, BytesMut};
//!
//! let mut wire = BytesMut::new();
//! Message::Uuid([0x11; 16]).encode(&mut wire)?;
//! Message::Audio { rate: Rate::Slin8, data: Bytes::from(vec![0; 320]) }.encode(&mut wire)?;
//! let mut decoder = Decoder::new();
//! decoder.push(&wire[..100]); // TCP delivers bytes in any pieces
//! assert!(matches!(decoder.next_message(), Ok(Some(Message::Uuid(_)))));
//! assert!(matches!(decoder.next_message(), Ok(None))); // audio incomplete
//! decoder.push(&wire[100..]);
//! assert!(matches!(decoder.next_message(), Ok(Some(Message::Audio { rate: Rate::Slin8, .. }))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The header length: kind (1) + length (2).
pub const HEADER_LEN: usize = 3;
/// The largest payload the 16-bit length can describe.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// The sample rate of an audio message (16-bit signed little-endian mono PCM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rate {
    /// `0x10`: 8 kHz (`slin`). Asterisk also labels non-slin audio with this kind.
    Slin8,
    /// `0x11`: 12 kHz.
    Slin12,
    /// `0x12`: 16 kHz.
    Slin16,
    /// `0x13`: 24 kHz.
    Slin24,
    /// `0x14`: 32 kHz.
    Slin32,
    /// `0x15`: 44.1 kHz.
    Slin44,
    /// `0x16`: 48 kHz.
    Slin48,
    /// `0x17`: 96 kHz.
    Slin96,
    /// `0x18`: 192 kHz.
    Slin192,
}

impl Rate {
    const ALL: [Rate; 9] = [
        Rate::Slin8,
        Rate::Slin12,
        Rate::Slin16,
        Rate::Slin24,
        Rate::Slin32,
        Rate::Slin44,
        Rate::Slin48,
        Rate::Slin96,
        Rate::Slin192,
    ];

    /// The message kind byte (`0x10`–`0x18`).
    pub fn kind(self) -> u8 {
        0x10 + Rate::ALL.iter().position(|r| *r == self).unwrap_or(0) as u8
    }

    /// The rate for a kind byte, if it is an audio kind.
    pub fn from_kind(kind: u8) -> Option<Rate> {
        Rate::ALL.get(usize::from(kind.checked_sub(0x10)?)).copied()
    }

    /// Samples per second (44,100 for `Slin44`).
    pub fn hz(self) -> u32 {
        match self {
            Rate::Slin8 => 8_000,
            Rate::Slin12 => 12_000,
            Rate::Slin16 => 16_000,
            Rate::Slin24 => 24_000,
            Rate::Slin32 => 32_000,
            Rate::Slin44 => 44_100,
            Rate::Slin48 => 48_000,
            Rate::Slin96 => 96_000,
            Rate::Slin192 => 192_000,
        }
    }

    /// The Asterisk format name (`slin`, `slin16`, …).
    pub fn format(self) -> &'static str {
        match self {
            Rate::Slin8 => "slin",
            Rate::Slin12 => "slin12",
            Rate::Slin16 => "slin16",
            Rate::Slin24 => "slin24",
            Rate::Slin32 => "slin32",
            Rate::Slin44 => "slin44",
            Rate::Slin48 => "slin48",
            Rate::Slin96 => "slin96",
            Rate::Slin192 => "slin192",
        }
    }

    /// Bytes in 20 ms of audio at this rate (320 for 8 kHz).
    pub fn frame_bytes_20ms(self) -> usize {
        (self.hz() as usize * 2) / 50
    }
}

/// One AudioSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `0x00` (application → Asterisk): hang the channel up.
    Hangup,
    /// `0x01` (Asterisk → application, first): the call's UUID, the 16 raw bytes.
    Uuid([u8; 16]),
    /// `0x03` (Asterisk → application): a DTMF digit (ASCII).
    Dtmf(u8),
    /// `0x10`–`0x18`: audio, both directions.
    Audio {
        /// The sample rate the kind announces.
        rate: Rate,
        /// 16-bit signed little-endian PCM.
        data: Bytes,
    },
    /// `0xff` (Asterisk → application): an error; the payload is Asterisk's error code, if any.
    Error(Bytes),
    /// Any other kind, kept as received.
    Other {
        /// The kind byte.
        kind: u8,
        /// The payload.
        payload: Bytes,
    },
}

/// Kind bytes.
pub mod kind {
    /// Hangup.
    pub const HANGUP: u8 = 0x00;
    /// UUID.
    pub const UUID: u8 = 0x01;
    /// DTMF.
    pub const DTMF: u8 = 0x03;
    /// 8 kHz audio (the first audio kind).
    pub const AUDIO: u8 = 0x10;
    /// Error.
    pub const ERROR: u8 = 0xff;
}

/// An AudioSocket protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioSocketError {
    /// A message whose payload length does not fit its kind (UUID must be 16 bytes, DTMF 1,
    /// hangup 0). The message was consumed; decoding can go on with the next one.
    BadLength {
        /// The kind byte.
        kind: u8,
        /// The payload length.
        len: usize,
    },
    /// A payload too large for the 16-bit length field (encoding).
    TooLarge {
        /// The payload length.
        len: usize,
    },
}

impl fmt::Display for AudioSocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioSocketError::BadLength { kind, len } => write!(
                f,
                "AudioSocket message of kind {kind:#04x} with a {len}-byte payload (wrong length for its kind)"
            ),
            AudioSocketError::TooLarge { len } => write!(
                f,
                "AudioSocket payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit; split the audio"
            ),
        }
    }
}

impl std::error::Error for AudioSocketError {}

impl Message {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hangup => kind::HANGUP,
            Message::Uuid(_) => kind::UUID,
            Message::Dtmf(_) => kind::DTMF,
            Message::Audio { rate, .. } => rate.kind(),
            Message::Error(_) => kind::ERROR,
            Message::Other { kind, .. } => *kind,
        }
    }

    /// Decodes one message from its kind and payload.
    pub fn from_parts(kind: u8, payload: Bytes) -> Result<Message, AudioSocketError> {
        let bad = || AudioSocketError::BadLength {
            kind,
            len: payload.len(),
        };
        Ok(match kind {
            kind::HANGUP if payload.is_empty() => Message::Hangup,
            kind::HANGUP => return Err(bad()),
            kind::UUID => Message::Uuid(payload[..].try_into().map_err(|_| bad())?),
            kind::DTMF => match payload[..] {
                [digit] => Message::Dtmf(digit),
                _ => return Err(bad()),
            },
            kind::ERROR => Message::Error(payload),
            k => match Rate::from_kind(k) {
                Some(rate) => Message::Audio {
                    rate,
                    data: payload,
                },
                None => Message::Other { kind: k, payload },
            },
        })
    }

    /// Appends the message to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), AudioSocketError> {
        let payload: &[u8] = match self {
            Message::Hangup => &[],
            Message::Uuid(u) => u,
            Message::Dtmf(d) => std::slice::from_ref(d),
            Message::Audio { data, .. } => data,
            Message::Error(p) | Message::Other { payload: p, .. } => p,
        };
        let len = u16::try_from(payload.len())
            .map_err(|_| AudioSocketError::TooLarge { len: payload.len() })?;
        out.reserve(HEADER_LEN + payload.len());
        out.put_u8(self.kind());
        out.put_u16(len);
        out.put_slice(payload);
        Ok(())
    }

    /// The message as bytes.
    pub fn to_bytes(&self) -> Result<Bytes, AudioSocketError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

/// Formats a UUID's 16 bytes the usual way (`add79572-dd67-4767-bc41-af8b247685f9`).
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses a UUID in the usual text form (hyphens optional, either case).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A streaming decoder: push bytes as they arrive, take whole messages out.
///
/// Memory is bounded by one message (3 + 65,535 bytes) plus what was pushed and not taken.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. An error consumes its
    /// message, so the next call continues with the one after.
    pub fn next_message(&mut self) -> Result<Option<Message>, AudioSocketError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[1], self.buf[2]]));
        if self.buf.len() < HEADER_LEN + len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        let kind = self.buf.get_u8();
        self.buf.advance(2);
        let payload = self.buf.split_to(len).freeze();
        Message::from_parts(kind, payload).map(Some)
    }
}
