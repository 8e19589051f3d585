//! Pretending to be an older Asterisk ([`MockServerBuilder::asterisk_version`]): the
//! `system.version` and `apiVersion` it reports, REST over WebSocket (ignored before 20.14,
//! 22.4 and 23, as those releases ignore text frames from the client), and the REST
//! resources its branch lacks (404). Written from the release notes and the branches' API
//! descriptions, independently of `ari-proto`'s catalog (this is the oracle the client's
//! own checks are tested against).
//!
//! [`MockServerBuilder::asterisk_version`]: crate::MockServerBuilder::asterisk_version

/// The Asterisk release the server pretends to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pretend {
    /// `system.version` (`18.26.4`).
    pub(crate) version: String,
    major: u32,
    minor: u32,
}

impl Pretend {
    /// `18` → `18.0.0`; `20.14.1` as given. `None` if it does not start with a number.
    pub(crate) fn parse(s: &str) -> Option<Pretend> {
        let s = s.trim();
        let mut parts = s.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = match parts.next() {
            Some(m) => m
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?,
            None => 0,
        };
        let version = if s.contains('.') {
            s.to_owned()
        } else {
            format!("{major}.0.0")
        };
        Some(Pretend {
            version,
            major,
            minor,
        })
    }

    /// The `apiVersion` of the branch's `resources.json`.
    pub(crate) fn api_version(&self) -> &'static str {
        match self.major {
            0..=19 => "6.0.1",
            20 | 21 => "8.0.0",
            22 => "10.0.0",
            23 => "11.0.0",
            _ => "12.0.0",
        }
    }

    /// Whether `RESTRequest` frames are answered (20.14+, 22.4+, 23+).
    pub(crate) fn rest_over_websocket(&self) -> bool {
        match self.major {
            0..=19 | 21 => false,
            20 => self.minor >= 14,
            22 => self.minor >= 4,
            _ => true,
        }
    }

    /// Whether chan_websocket's plain-text `MEDIA_START` carries `channel_id` (20.17+, 22.7+,
    /// 23.1+).
    pub(crate) fn media_channel_id(&self) -> bool {
        self.since(17, 7, 1)
    }

    /// Whether chan_websocket knows `MARK_MEDIA` (20.18+, 22.8+, 23.2+); before, it is an
    /// unknown command, ignored without a reply.
    pub(crate) fn mark_media(&self) -> bool {
        self.since(18, 8, 2)
    }

    /// Whether this is at least 20.`m20`, 22.`m22` or 23.`m23` (chan_websocket exists on
    /// those branches only; every later major has it all).
    fn since(&self, m20: u32, m22: u32, m23: u32) -> bool {
        match self.major {
            0..=19 | 21 => false,
            20 => self.minor >= m20,
            22 => self.minor >= m22,
            23 => self.minor >= m23,
            _ => true,
        }
    }

    /// Whether the branch has no route for this request (path segments below `/ari/`):
    /// before 20, `channels/{id}/progress`, `channels/{id}/variables`,
    /// `channels/{id}/transfer_progress`, `bridges/{id}/variable`, `bridges/{id}/variables`
    /// and `events/claim` do not exist.
    pub(crate) fn lacks(&self, segments: &[String]) -> bool {
        if self.major >= 20 {
            return false;
        }
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        matches!(
            s.as_slice(),
            [
                "channels",
                _,
                "progress" | "variables" | "transfer_progress"
            ] | ["bridges", _, "variable" | "variables"]
                | ["events", "claim"]
        )
    }

    /// A `resources.json` with the branch's `apiVersion` (no API files listed), for a
    /// server started without [`crate::MockServerBuilder::api_docs`].
    pub(crate) fn resources_json(&self, base: &str) -> Vec<u8> {
        serde_json::json!({
            "_copyright": "Copyright (C) 2012 - 2013, Digium, Inc.",
            "_author": "David M. Lee, II <dlee@digium.com>",
            "apiVersion": self.api_version(),
            "swaggerVersion": "1.1",
            "basePath": base,
            "apis": [],
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::Pretend;

    #[test]
    fn releases_and_what_they_have() {
        let p = Pretend::parse("18").unwrap();
        assert_eq!(p.version, "18.0.0");
        assert_eq!(p.api_version(), "6.0.1");
        assert!(!p.rest_over_websocket());
        let seg = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert!(p.lacks(&seg("channels/c1/progress")));
        assert!(p.lacks(&seg("events/claim")));
        assert!(!p.lacks(&seg("channels/c1/answer")));
        let p = Pretend::parse("20.13.0").unwrap();
        assert_eq!(p.api_version(), "8.0.0");
        assert!(!p.rest_over_websocket());
        assert!(!p.lacks(&seg("channels/c1/progress")));
        assert!(Pretend::parse("20.14.0").unwrap().rest_over_websocket());
        assert!(!Pretend::parse("22.3.1").unwrap().rest_over_websocket());
        assert!(Pretend::parse("22.4.0").unwrap().rest_over_websocket());
        assert!(Pretend::parse("23").unwrap().rest_over_websocket());
        assert!(Pretend::parse("x").is_none());
    }

    #[test]
    fn chan_websocket_features_by_release() {
        let has = |v: &str| {
            let p = Pretend::parse(v).unwrap();
            (p.media_channel_id(), p.mark_media())
        };
        assert_eq!(has("20.16.0"), (false, false));
        assert_eq!(has("20.17.0"), (true, false));
        assert_eq!(has("20.18.0"), (true, true));
        assert_eq!(has("21.10.0"), (false, false));
        assert_eq!(has("22.7.0"), (true, false));
        assert_eq!(has("22.8.0"), (true, true));
        assert_eq!(has("23.1.0"), (true, false));
        assert_eq!(has("23.2.0"), (true, true));
        assert_eq!(has("24"), (true, true));
    }
}
