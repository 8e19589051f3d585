//! The resource tree of ARI (Asterisk master): which methods each path has, for `OPTIONS`
//! (`Allow`, CORS preflight). Path templates below `/ari/`; `{…}` matches one segment, a
//! literal segment wins over a parameter (`channels/create` over `channels/{channelId}`).

/// Path template and its methods, in Asterisk's method order (GET, POST, PUT, DELETE).
const ROUTES: &[(&str, &[&str])] = &[
    ("applications", &["GET"]),
    ("applications/{applicationName}", &["GET"]),
    (
        "applications/{applicationName}/subscription",
        &["POST", "DELETE"],
    ),
    ("applications/{applicationName}/eventFilter", &["PUT"]),
    (
        "asterisk/config/dynamic/{configClass}/{objectType}/{id}",
        &["GET", "PUT", "DELETE"],
    ),
    ("asterisk/info", &["GET"]),
    ("asterisk/ping", &["GET"]),
    ("asterisk/modules", &["GET"]),
    (
        "asterisk/modules/{moduleName}",
        &["GET", "POST", "PUT", "DELETE"],
    ),
    ("asterisk/logging", &["GET"]),
    ("asterisk/logging/{logChannelName}", &["POST", "DELETE"]),
    ("asterisk/logging/{logChannelName}/rotate", &["PUT"]),
    ("asterisk/variable", &["GET", "POST"]),
    ("bridges", &["GET", "POST"]),
    ("bridges/{bridgeId}", &["GET", "POST", "DELETE"]),
    ("bridges/{bridgeId}/variable", &["GET", "POST"]),
    ("bridges/{bridgeId}/variables", &["GET", "POST"]),
    ("bridges/{bridgeId}/addChannel", &["POST"]),
    ("bridges/{bridgeId}/removeChannel", &["POST"]),
    ("bridges/{bridgeId}/videoSource/{channelId}", &["POST"]),
    ("bridges/{bridgeId}/videoSource", &["DELETE"]),
    ("bridges/{bridgeId}/moh", &["POST", "DELETE"]),
    ("bridges/{bridgeId}/play", &["POST"]),
    ("bridges/{bridgeId}/play/{playbackId}", &["POST"]),
    ("bridges/{bridgeId}/record", &["POST"]),
    ("channels", &["GET", "POST"]),
    ("channels/create", &["POST"]),
    ("channels/{channelId}", &["GET", "POST", "DELETE"]),
    ("channels/{channelId}/continue", &["POST"]),
    ("channels/{channelId}/move", &["POST"]),
    ("channels/{channelId}/redirect", &["POST"]),
    ("channels/{channelId}/answer", &["POST"]),
    ("channels/{channelId}/ring", &["POST", "DELETE"]),
    ("channels/{channelId}/progress", &["POST"]),
    ("channels/{channelId}/progress", &["POST"]),
    ("channels/{channelId}/dtmf", &["POST"]),
    ("channels/{channelId}/mute", &["POST", "DELETE"]),
    ("channels/{channelId}/hold", &["POST", "DELETE"]),
    ("channels/{channelId}/moh", &["POST", "DELETE"]),
    ("channels/{channelId}/silence", &["POST", "DELETE"]),
    ("channels/{channelId}/play", &["POST"]),
    ("channels/{channelId}/play/{playbackId}", &["POST"]),
    ("channels/{channelId}/record", &["POST"]),
    ("channels/{channelId}/variable", &["GET", "POST"]),
    ("channels/{channelId}/variables", &["GET", "POST"]),
    ("channels/{channelId}/snoop", &["POST"]),
    ("channels/{channelId}/snoop/{snoopId}", &["POST"]),
    ("channels/{channelId}/dial", &["POST"]),
    ("channels/{channelId}/rtp_statistics", &["GET"]),
    ("channels/externalMedia", &["POST"]),
    ("channels/{channelId}/transfer_progress", &["POST"]),
    ("deviceStates", &["GET"]),
    ("deviceStates/{deviceName}", &["GET", "PUT", "DELETE"]),
    ("endpoints", &["GET"]),
    ("endpoints/sendMessage", &["PUT"]),
    ("endpoints/refer", &["POST"]),
    ("endpoints/{tech}", &["GET"]),
    ("endpoints/{tech}/{resource}", &["GET"]),
    ("endpoints/{tech}/{resource}/sendMessage", &["PUT"]),
    ("endpoints/{tech}/{resource}/refer", &["POST"]),
    ("events", &["GET"]),
    ("events/user/{eventName}", &["POST"]),
    ("events/claim", &["POST"]),
    ("mailboxes", &["GET"]),
    ("mailboxes/{mailboxName}", &["GET", "PUT", "DELETE"]),
    ("playbacks/{playbackId}", &["GET", "DELETE"]),
    ("playbacks/{playbackId}/control", &["POST"]),
    ("recordings/stored", &["GET"]),
    ("recordings/stored/{recordingName}", &["GET", "DELETE"]),
    ("recordings/stored/{recordingName}/file", &["GET"]),
    ("recordings/stored/{recordingName}/copy", &["POST"]),
    ("recordings/live/{recordingName}", &["GET", "DELETE"]),
    ("recordings/live/{recordingName}/stop", &["POST"]),
    ("recordings/live/{recordingName}/pause", &["POST", "DELETE"]),
    ("recordings/live/{recordingName}/mute", &["POST", "DELETE"]),
    ("sounds", &["GET"]),
    ("sounds/{soundId}", &["GET"]),
];

/// The methods `segments` (below `/ari/`) has, `None` for a path no resource has.
pub(in crate::sim) fn allowed_methods(segments: &[&str]) -> Option<&'static [&'static str]> {
    ROUTES
        .iter()
        .filter(|(t, _)| {
            let t: Vec<&str> = t.split('/').collect();
            t.len() == segments.len()
                && t.iter()
                    .zip(segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .max_by_key(|(t, _)| t.split('/').filter(|s| !s.starts_with('{')).count())
        .map(|(_, m)| *m)
}

#[cfg(test)]
mod tests {
    use super::allowed_methods;

    #[test]
    fn literal_segments_win_and_unknown_paths_have_none() {
        assert_eq!(allowed_methods(&["channels"]), Some(&["GET", "POST"][..]));
        assert_eq!(
            allowed_methods(&["channels", "create"]),
            Some(&["POST"][..])
        );
        assert_eq!(
            allowed_methods(&["channels", "abc"]),
            Some(&["GET", "POST", "DELETE"][..])
        );
        assert_eq!(
            allowed_methods(&["mailboxes", "m1"]),
            Some(&["GET", "PUT", "DELETE"][..])
        );
        assert_eq!(allowed_methods(&["channels", "abc", "nope"]), None);
        assert_eq!(allowed_methods(&["nope"]), None);
    }
}
