//! The server's version, and which operations and parameters it has.
//!
//! A client learns the version once (`system.version` of `GET /asterisk/info`), then checks
//! each request against the catalog's since-tags before sending it: an operation or a
//! parameter newer than the server fails at once with [`BuildError::Unsupported`] naming
//! it, the first branch that has it and the server's version, instead of a timeout or a
//! bare 404 from Asterisk.
//!
//! ```
//! use ari_proto::version::AsteriskVersion;
//! use ari_proto::Since;
//! let v = AsteriskVersion::parse("18.20.2");
//! assert_eq!(v.branch(), Since::Asterisk18);
//! assert!(!v.has_rest_over_websocket());
//! assert!(AsteriskVersion::parse("20.14.0").has_rest_over_websocket());
//! assert!(AsteriskVersion::parse("GIT-master-f0c1c1a7b7").has_rest_over_websocket());
//! ```

use std::fmt;

use crate::catalog::{self, Since};
use crate::rest::{BuildError, RequestParts};

/// An Asterisk version as `GET /asterisk/info` reports it (`system.version`): a release
/// (`18.20.2`, `20.14.0-rc1`, `certified-20.7-cert5`) or a development build
/// (`GIT-master-f0c1c1a7b7`, `GIT-20-516d2c60ac`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsteriskVersion {
    raw: String,
    /// Major, minor, patch; `None` when the string holds no number (a master build).
    numbers: Option<(u32, u32, u32)>,
}

impl AsteriskVersion {
    /// Parses a version string; never fails (an unknown form counts as the development
    /// branch, which has everything the crate knows).
    pub fn parse(s: &str) -> AsteriskVersion {
        let raw = s.trim().to_owned();
        // The first run of digits and dots: `certified-20.7-cert5` → 20.7, `GIT-20-…` → 20.
        let start = raw.find(|c: char| c.is_ascii_digit());
        let numbers = start.and_then(|i| {
            if raw.starts_with("GIT-master") {
                return None;
            }
            let run: &str = raw[i..]
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()
                .unwrap_or("");
            let mut it = run.split('.').map(|p| p.parse::<u32>().ok());
            let major = it.next().flatten()?;
            let minor = it.next().flatten().unwrap_or(0);
            let patch = it.next().flatten().unwrap_or(0);
            Some((major, minor, patch))
        });
        AsteriskVersion { raw, numbers }
    }

    /// The string as the server reported it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Major version (`18`); `None` for a master build.
    pub fn major(&self) -> Option<u32> {
        self.numbers.map(|n| n.0)
    }

    /// `(major, minor, patch)`; `None` for a master build. A branch head (`GIT-20-…`)
    /// counts as the newest release of its branch.
    pub fn numbers(&self) -> Option<(u32, u32, u32)> {
        let (major, minor, patch) = self.numbers?;
        if self.raw.starts_with("GIT-") {
            return Some((major, u32::MAX, u32::MAX));
        }
        Some((major, minor, patch))
    }

    /// The branch of the crate's API descriptions this server is checked against: the
    /// newest one not newer than it (18 and 19 → Asterisk 18; 20 and 21 → 20; 22; 23; later
    /// releases and master builds → master).
    pub fn branch(&self) -> Since {
        match self.major() {
            None => Since::Master,
            Some(m) if m < 20 => Since::Asterisk18,
            Some(20 | 21) => Since::Asterisk20,
            Some(22) => Since::Asterisk22,
            Some(23) => Since::Asterisk23,
            Some(_) => Since::Master,
        }
    }

    /// Whether the server answers REST requests over the events WebSocket (`RESTRequest`):
    /// Asterisk 20.14+, 22.4+, 23 and later.
    pub fn has_rest_over_websocket(&self) -> bool {
        match self.numbers() {
            None => true,
            Some((major, minor, _)) => match major {
                0..=19 | 21 => false,
                20 => minor >= 14,
                22 => minor >= 4,
                _ => true,
            },
        }
    }
}

impl AsteriskVersion {
    /// Whether chan_websocket answers `MARK_MEDIA` (with `MEDIA_MARK_PROCESSED`): Asterisk
    /// 20.18+, 22.8+, 23.2+ and later (older releases ignore the command without a reply).
    pub fn has_mark_media(&self) -> bool {
        match self.numbers() {
            None => true,
            Some((major, minor, _)) => match major {
                0..=19 | 21 => false,
                20 => minor >= 18,
                22 => minor >= 8,
                23 => minor >= 2,
                _ => true,
            },
        }
    }
}

impl fmt::Display for AsteriskVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Asterisk {}", self.raw)
    }
}

/// The versions that answer REST over the events WebSocket, for error messages.
pub const REST_OVER_WEBSOCKET_VERSIONS: &str = "Asterisk 20.14+, 22.4+ or 23+";

/// Checks a request against the server's version: the operation and every parameter it
/// carries (query parameters by name; a JSON body for its body parameter) must be in the
/// server's branch ([`AsteriskVersion::branch`]). Operations the catalog does not know
/// pass.
///
/// ```
/// use ari_proto::{ops, rest, version::{self, AsteriskVersion}, Since};
/// let parts = rest::request_parts(&ops::channels::Progress::new("chan-1")).unwrap();
/// let err = version::check(&parts, &AsteriskVersion::parse("18.20.2")).unwrap_err();
/// assert!(matches!(
///     err,
///     rest::BuildError::Unsupported { operation: "channels.progress", parameter: None, since: Since::Asterisk20, .. }
/// ));
/// assert!(version::check(&parts, &AsteriskVersion::parse("20.14.0")).is_ok());
/// ```
pub fn check(parts: &RequestParts, server: &AsteriskVersion) -> Result<(), BuildError> {
    let branch = server.branch();
    if branch >= newest_since() {
        // The server has everything the catalog knows (the common case): no lookup.
        return Ok(());
    }
    let Some((resource, nickname)) = parts.operation.split_once('.') else {
        return Ok(());
    };
    let Some(op) = catalog::operation(resource, nickname) else {
        return Ok(());
    };
    let unsupported = |parameter: Option<&'static str>, since: Since| BuildError::Unsupported {
        operation: parts.operation,
        parameter,
        since,
        server: server.as_str().to_owned(),
    };
    if op.since > branch {
        return Err(unsupported(None, op.since));
    }
    for p in op.params.iter().filter(|p| p.since > branch) {
        let sent = match p.location {
            "query" => parts.query.iter().any(|(name, _)| *name == p.name),
            "body" => parts.body.is_some(),
            // Path parameters come with the operation.
            _ => false,
        };
        if sent {
            return Err(unsupported(Some(p.name), p.since));
        }
    }
    Ok(())
}

/// The newest branch that any operation or parameter of the catalog needs (computed once).
fn newest_since() -> Since {
    static NEWEST: std::sync::OnceLock<Since> = std::sync::OnceLock::new();
    *NEWEST.get_or_init(|| {
        catalog::OPERATIONS
            .iter()
            .flat_map(|op| std::iter::once(op.since).chain(op.params.iter().map(|p| p.since)))
            .max()
            .unwrap_or(Since::Asterisk18)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_into_branches() {
        let cases = [
            ("18.20.2", Some((18, 20, 2)), Since::Asterisk18, false),
            ("16.30.0", Some((16, 30, 0)), Since::Asterisk18, false),
            ("20.13.0", Some((20, 13, 0)), Since::Asterisk20, false),
            ("20.14.0-rc1", Some((20, 14, 0)), Since::Asterisk20, true),
            (
                "certified-20.7-cert5",
                Some((20, 7, 0)),
                Since::Asterisk20,
                false,
            ),
            ("21.9.0", Some((21, 9, 0)), Since::Asterisk20, false),
            ("22.3.0", Some((22, 3, 0)), Since::Asterisk22, false),
            ("22.4.0", Some((22, 4, 0)), Since::Asterisk22, true),
            ("23.0.0", Some((23, 0, 0)), Since::Asterisk23, true),
            ("24.1.0", Some((24, 1, 0)), Since::Master, true),
            ("GIT-master-f0c1c1a7b7", None, Since::Master, true),
            (
                "GIT-20-516d2c60ac",
                Some((20, u32::MAX, u32::MAX)),
                Since::Asterisk20,
                true,
            ),
            ("", None, Since::Master, true),
        ];
        for (s, numbers, branch, ws) in cases {
            let v = AsteriskVersion::parse(s);
            assert_eq!(v.numbers(), numbers, "{s}");
            assert_eq!(v.branch(), branch, "{s}");
            assert_eq!(v.has_rest_over_websocket(), ws, "{s}");
            assert_eq!(v.as_str(), s);
        }
    }

    #[test]
    fn mark_media_by_release() {
        for (s, has) in [
            ("20.16.0", false),
            ("20.17.3", false),
            ("20.18.0", true),
            ("21.10.0", false),
            ("22.7.0", false),
            ("22.8.0", true),
            ("23.1.0", false),
            ("23.2.0", true),
            ("24.0.0", true),
            ("GIT-20-516d2c60ac", true),
            ("GIT-master-f0c1c1a7b7", true),
        ] {
            assert_eq!(AsteriskVersion::parse(s).has_mark_media(), has, "{s}");
        }
    }

    #[test]
    fn parameters_newer_than_the_server_are_refused_by_name() {
        let op = crate::ops::channels::SetChannelVar::new("c1", "X").report_events(true);
        let parts = crate::rest::request_parts(&op).unwrap();
        let v18 = AsteriskVersion::parse("18.20.2");
        match check(&parts, &v18) {
            Err(BuildError::Unsupported {
                operation,
                parameter,
                since,
                server,
            }) => {
                assert_eq!(operation, "channels.setChannelVar");
                assert_eq!(parameter, Some("report_events"));
                assert_eq!(since, Since::Asterisk20);
                assert_eq!(server, "18.20.2");
            }
            other => panic!("{other:?}"),
        }
        let err = check(&parts, &v18).unwrap_err().to_string();
        assert!(err.contains("report_events"), "{err}");
        assert!(err.contains("Asterisk 20"), "{err}");
        assert!(err.contains("18.20.2"), "{err}");
        // Without the new parameter it goes through; on 20 with it too.
        let plain =
            crate::rest::request_parts(&crate::ops::channels::SetChannelVar::new("c1", "X"))
                .unwrap();
        assert!(check(&plain, &v18).is_ok());
        assert!(check(&parts, &AsteriskVersion::parse("20.1.0")).is_ok());
    }

    #[test]
    fn body_parameters_are_checked_when_a_body_is_sent() {
        let with = crate::ops::bridges::Create::new().variable("A", "1");
        let parts = crate::rest::request_parts(&with).unwrap();
        let v18 = AsteriskVersion::parse("18.9.0");
        assert!(matches!(
            check(&parts, &v18),
            Err(BuildError::Unsupported {
                parameter: Some("variables"),
                ..
            })
        ));
        let without = crate::rest::request_parts(&crate::ops::bridges::Create::new()).unwrap();
        assert!(check(&without, &v18).is_ok());
    }
}
