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
        if let Some(t) = parse_fast(s) {
            return Ok(Timestamp(t));
        }
        DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
            .or_else(|_| DateTime::parse_from_rfc3339(s))
            .map(Timestamp)
            .map_err(|_| TimestampError {
                input: s.chars().take(64).collect(),
            })
    }
}

/// Asterisk's exact layout `YYYY-MM-DDTHH:MM:SS.f+hhmm` read without chrono's format
/// interpreter; `None` for anything else (chrono then decides). Where it answers, the answer
/// is the one `%Y-%m-%dT%H:%M:%S%.f%z` gives: fraction digits past the ninth are ignored,
/// offset minutes above 59, leap seconds and out-of-range fields are left to chrono.
fn parse_fast(s: &str) -> Option<DateTime<FixedOffset>> {
    let b = s.as_bytes();
    if b.len() < 26
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 20;
    let mut nanos = 0u32;
    let mut digits = 0u32;
    while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        if digits < 9 {
            nanos = nanos * 10 + u32::from(c - b'0');
            digits += 1;
        }
        i += 1;
    }
    if digits == 0 || b.len() != i + 5 || sec > 59 {
        return None;
    }
    nanos *= 10u32.pow(9 - digits);
    let sign = match b[i] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (oh, om) = (num(i + 1..i + 3)?, num(i + 3..i + 5)?);
    if om > 59 {
        return None;
    }
    let off = FixedOffset::east_opt(sign * i32::try_from(oh * 3600 + om * 60).ok()?)?;
    let naive = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_nano_opt(h, m, sec, nanos)?;
    naive.and_local_timezone(off).single()
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

#[cfg(test)]
mod fast_parse_tests {
    use chrono::DateTime;

    /// The fixed-layout reader answers as chrono's format interpreter does, or leaves it to it.
    #[test]
    fn fast_parse_agrees_with_chrono() {
        let mut inputs = vec![
            "2026-11-26T11:14:38.299+0000",
            "2026-11-26T11:14:38.2+0000",
            "2026-11-26T11:14:38.123456789+0000",
            "2026-11-26T11:14:38.1234567891234+0130",
            "2026-11-26T11:14:38.299-0000",
            "2026-11-26T11:14:38.299-1145",
            "2026-11-26T11:14:38.299+2359",
            "2026-11-26T11:14:38.299+2400",
            "2026-11-26T11:14:38.299+0060",
            "2026-11-26T11:14:38.299+0099",
            "2026-11-26T11:14:60.299+0000",
            "2026-11-26T24:00:00.000+0000",
            "2026-02-29T11:14:38.299+0000",
            "2024-02-29T11:14:38.299+0000",
            "2026-13-26T11:14:38.299+0000",
            "0000-01-01T00:00:00.0+0000",
            "2026-11-26T11:14:38.+0000",
            "2026-11-26T11:14:38.299+00:00",
            "2026-11-26T11:14:38.299Z",
            "2026-11-26T11:14:38.299+000a",
            "2026-11-26T11:14:38.29x+0000",
        ];
        let extra: Vec<String> = (0..200u32)
            .map(|k| {
                format!(
                    "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}.{}{}{:02}{:02}",
                    k % 100,
                    k % 14,
                    k % 33,
                    k % 26,
                    (k * 7) % 62,
                    (k * 11) % 61,
                    k,
                    if k % 2 == 0 { '+' } else { '-' },
                    k % 25,
                    (k * 3) % 61
                )
            })
            .collect();
        inputs.extend(extra.iter().map(String::as_str));
        for s in inputs {
            let chrono = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok();
            if let Some(fast) = super::parse_fast(s) {
                assert_eq!(Some(fast), chrono, "{s}");
                assert_eq!(fast.offset(), chrono.unwrap().offset(), "{s}");
            }
        }
        assert!(super::parse_fast("2026-11-26T11:14:38.299+0000").is_some());
    }
}
