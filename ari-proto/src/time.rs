//! Asterisk's timestamps.

use chrono::{DateTime, FixedOffset};
use std::fmt;

/// A point in time as Asterisk writes it: `2026-11-26T11:14:38.299+0000`.
///
/// The offset has no colon, so strict RFC 3339 parsers reject it; this type accepts that form
/// (and RFC 3339), keeps the offset, and writes it back the way Asterisk does.
///
/// ```
/// use ari_proto::Timestamp;
/// let t: Timestamp = "2026-11-26T11:14:38.299+0000".parse().unwrap();
/// assert_eq!(t.to_string(), "2026-11-26T11:14:38.299+0000");
/// assert_eq!(t.as_datetime().timestamp_millis() % 1000, 299);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<FixedOffset>);

/// A timestamp that is not in a form Asterisk uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError {
    input: String,
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid timestamp {:?}: expected the form 2026-11-26T11:14:38.299+0000",
            self.input
        )
    }
}

impl std::error::Error for TimestampError {}

impl Timestamp {
    /// Wraps a `chrono` date-time.
    pub fn new(dt: DateTime<FixedOffset>) -> Self {
        Timestamp(dt)
    }

    /// The date-time with its offset.
    pub fn as_datetime(&self) -> &DateTime<FixedOffset> {
        &self.0
    }

    /// Parses Asterisk's form (`%Y-%m-%dT%H:%M:%S%.f%z`), also accepting RFC 3339.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
            .or_else(|_| DateTime::parse_from_rfc3339(s))
            .map(Timestamp)
            .map_err(|_| TimestampError {
                input: s.chars().take(64).collect(),
            })
    }
}

impl From<DateTime<FixedOffset>> for Timestamp {
    fn from(dt: DateTime<FixedOffset>) -> Self {
        Timestamp(dt)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl fmt::Display for Timestamp {
    /// Asterisk's form, with milliseconds. A finer fraction (from a timestamp that did not come
    /// from Asterisk) is written in full, so that parsing the text gives the same instant.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.timestamp_subsec_nanos() % 1_000_000 == 0 {
            write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3f%z"))
        } else {
            write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.f%z"))
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = crate::macros::deserialize_cow_str(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn writing_and_parsing_keeps_the_instant() {
        for text in [
            "2026-11-26T11:14:38.299+0000",
            "2026-11-26T11:14:38.000+0000",
            "2026-11-26T11:14:38.2991+0000",
            "2026-11-26T11:14:38.123456789-0130",
            "2026-11-26T11:14:38Z",
        ] {
            let t: Timestamp = text.parse().expect(text);
            let again: Timestamp = t.to_string().parse().expect("own output parses");
            assert_eq!(again, t, "{text} -> {t}");
        }
        let t: Timestamp = "2026-11-26T11:14:38.2991+0000".parse().expect("parses");
        assert_eq!(t.to_string(), "2026-11-26T11:14:38.299100+0000");
    }
}
