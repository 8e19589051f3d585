//! ARI JSON representations of the simulated resources.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // JSON
    // -----------------------------------------------------------------------------------

    pub(super) fn chan_json(&self, id: &str) -> Value {
        let Some(c) = self.channels.by_id.get(id) else {
            return Value::Null;
        };
        let mut v = json!({
            "id": c.id,
            "name": c.name,
            "state": c.state,
            "protocol_id": c.protocol_id,
            "caller": {"name": c.caller.0, "number": c.caller.1},
            "connected": {"name": c.connected.0, "number": c.connected.1},
            "accountcode": c.accountcode,
            "dialplan": {
                "context": c.context,
                "exten": c.exten,
                "priority": c.priority,
                "app_name": c.app_name,
                "app_data": c.app_data,
            },
            "creationtime": time::format_ms(c.creation_ms),
            "language": c.language,
        });
        if !self.cfg.channelvars.is_empty() || !c.reported.is_empty() {
            let mut cv = Map::new();
            for n in self.cfg.channelvars.iter().chain(c.reported.iter()) {
                let val = self.read_chan_var(c, n).unwrap_or_default();
                cv.insert(n.clone(), Value::String(val));
            }
            v["channelvars"] = Value::Object(cv);
        }
        v
    }

    pub(super) fn bridge_json(&self, id: &str) -> Value {
        let Some(b) = self.bridges.by_id.get(id) else {
            return Value::Null;
        };
        let mut v = json!({
            "id": b.id,
            "technology": b.technology,
            "bridge_type": b.bridge_type,
            "bridge_class": b.class,
            "creator": b.creator,
            "name": b.name,
            "channels": b.channels,
            "creationtime": time::format_ms(b.creation_ms),
            "video_mode": b.video_mode,
        });
        if let Some(s) = &b.video_source {
            v["video_source_id"] = json!(s);
        }
        if !b.reported.is_empty() {
            let m: Map<String, Value> = b
                .reported
                .iter()
                .map(|k| (k.clone(), json!(b.vars.get(k).cloned().unwrap_or_default())))
                .collect();
            v["bridgevars"] = Value::Object(m);
        }
        v
    }

    pub(super) fn playback_json(&self, id: &str) -> Value {
        let Some(p) = self.media.playbacks.get(id) else {
            return Value::Null;
        };
        let mut v = json!({
            "id": p.id,
            "media_uri": p.media.get(p.index).cloned().unwrap_or_default(),
        });
        if let Some(n) = p.media.get(p.index + 1) {
            v["next_media_uri"] = json!(n);
        }
        v["target_uri"] = json!(p.target);
        v["language"] = json!(p.language);
        v["state"] = json!(match p.state {
            PbState::Queued => "queued",
            PbState::Playing => "playing",
            PbState::Paused => "paused",
            // `state_to_string`: canceled "really just means 'done'".
            PbState::Canceled => "done",
        });
        v
    }

    pub(super) fn live_json(&self, name: &str) -> Value {
        let Some(r) = self.media.live.get(name) else {
            return Value::Null;
        };
        json!({"name": r.name, "format": r.format, "state": r.state, "target_uri": r.target})
    }

    pub(super) fn app_json(&self, name: &str) -> Value {
        let Some(a) = self.routing.apps.get(name) else {
            return Value::Null;
        };
        if a.subscribe_all {
            return json!({
                "name": name,
                "channel_ids": ["__AST_CHANNEL_ALL_TOPIC"],
                "bridge_ids": ["__AST_BRIDGE_ALL_TOPIC"],
                "endpoint_ids": ["__AST_ENDPOINT_ALL_TOPIC"],
                "device_names": ["__AST_DEVICE_STATE_ALL_TOPIC"],
                "events_allowed": a.allowed,
                "events_disallowed": a.disallowed,
            });
        }
        let mut chans: BTreeSet<String> = a.channels.clone();
        for c in self.channels.by_id.values() {
            if c.stasis.as_ref().is_some_and(|(s, _)| s == name) {
                chans.insert(c.id.clone());
            }
        }
        json!({
            "name": name,
            "channel_ids": chans.into_iter().collect::<Vec<_>>(),
            "bridge_ids": a
                .bridges
                .iter()
                .chain(a.bridge_refs.iter().filter(|(_, n)| **n > 0).map(|(b, _)| b))
                .collect::<BTreeSet<_>>(),
            "endpoint_ids": a.endpoints.iter().collect::<Vec<_>>(),
            "device_names": a.devices.iter().collect::<Vec<_>>(),
            "events_allowed": a.allowed,
            "events_disallowed": a.disallowed,
        })
    }

    pub(super) fn endpoint_json(&self, ep: &str) -> Value {
        let (tech, res) = ep.split_once('/').unwrap_or((ep, ""));
        let ids: Vec<&String> = self
            .channels
            .order
            .iter()
            .filter(|id| {
                self.channels
                    .by_id
                    .get(id.as_str())
                    .is_some_and(|c| c.endpoint.as_deref() == Some(ep))
            })
            .collect();
        json!({"technology": tech, "resource": res, "state": "online", "channel_ids": ids})
    }
}
