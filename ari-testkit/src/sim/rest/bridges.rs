//! `/bridges`: create, destroy, per-bridge operations.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // bridges
    // -----------------------------------------------------------------------------------

    pub(super) fn r_bridges(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
                    .bridges
                    .order
                    .iter()
                    .map(|b| self.bridge_json(b))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("POST", []) => {
                let id = p
                    .nonempty("bridgeId")
                    .unwrap_or_else(|| uuid_like(self.next_gen(), self.cfg.wall_clock_base_ms));
                self.create_bridge(&id, p)
            }
            ("GET", [id]) => match self.bridges.by_id.contains_key(*id) {
                true => R::json(200, &self.bridge_json(id)),
                false => R::error(404, "Bridge not found"),
            },
            ("POST", [id]) => self.create_bridge(id, p),
            ("DELETE", [id]) => {
                if !self.bridges.by_id.contains_key(*id) {
                    return R::error(404, "Bridge not found");
                }
                self.destroy_bridge(id);
                R::no_content()
            }
            (_, [id, op]) => self.bridge_op(m, id, op, None, p),
            (_, [id, op, sub]) => self.bridge_op(m, id, op, Some(sub), p),
            _ => not_found_resource(),
        }
    }

    pub(super) fn create_bridge(&mut self, id: &str, p: &P<'_>) -> R {
        let types: Vec<String> = p
            .get("type")
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        for t in &types {
            if ![
                "mixing",
                "holding",
                "dtmf_events",
                "proxy_media",
                "video_sfu",
                "video_single",
                "sdp_label",
            ]
            .contains(&t.as_str())
            {
                return R::error(400, "Invalid bridge type");
            }
        }
        let name = p.get("name").unwrap_or_default();
        if let Some(b) = self.bridges.by_id.get(id) {
            // POST bridges/{id} on an existing bridge: Asterisk refuses any change.
            let _ = b;
            return R::error(409, "Bridge with id already exists");
        }
        let holding = types.iter().any(|t| t == "holding");
        let sfu = types.iter().any(|t| t == "video_sfu");
        let (tech, btype, video) = if holding {
            ("holding_bridge", "holding", "none")
        } else if sfu {
            ("softmix", "mixing", "sfu")
        } else {
            ("simple_bridge", "mixing", "talker")
        };
        let video = if types.iter().any(|t| t == "video_single") {
            "single"
        } else {
            video
        };
        self.bridges.by_id.insert(
            id.to_string(),
            crate::sim::Bridge {
                id: id.to_string(),
                class: "stasis",
                creator: "Stasis".to_string(),
                dissolving: false,
                technology: tech.to_string(),
                bridge_type: btype.to_string(),
                name,
                channels: Vec::new(),
                creation_ms: self.wall_ms(),
                video_mode: video.to_string(),
                video_source: None,
                playbacks: Default::default(),
                recording: None,
                vars: Default::default(),
                reported: Default::default(),
            },
        );
        self.bridges.order.push(id.to_string());
        for (k, v, rep) in p.vars() {
            if let Some(b) = self.bridges.by_id.get_mut(id) {
                b.vars.insert(k.clone(), v);
                if rep {
                    b.reported.insert(k);
                }
            }
        }
        self.bridge_event("BridgeCreated", id, None, json!({}));
        R::json(200, &self.bridge_json(id))
    }

    pub(super) fn bridge_op(
        &mut self,
        m: &str,
        id: &str,
        op: &str,
        sub: Option<&str>,
        p: &P<'_>,
    ) -> R {
        if !self.bridges.by_id.contains_key(id) {
            return R::error(404, "Bridge not found");
        }
        match (m, op, sub) {
            ("POST", "addChannel", None) => {
                let Some(list) = p.nonempty("channel") else {
                    return R::error(400, "Missing parameter channel");
                };
                let ids: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
                for c in &ids {
                    let Some(ch) = self.channels.by_id.get(c) else {
                        return R::error(400, "Channel not found");
                    };
                    if ch.stasis.is_none() {
                        return R::error(422, "Channel not in Stasis application");
                    }
                    if ch.recording.is_some() {
                        return R::error(409, "Channel currently recording");
                    }
                }
                if self
                    .bridges
                    .by_id
                    .get(id)
                    .is_some_and(|b| b.bridge_type == "holding")
                {
                    if let Some(r) = p.get("role") {
                        if !["participant", "announcer", ""].contains(&r.as_str()) {
                            return R::error(400, "Invalid role");
                        }
                    }
                }
                for c in ids {
                    self.bridge_add(id, &c);
                }
                R::no_content()
            }
            ("POST", "removeChannel", None) => {
                let Some(list) = p.nonempty("channel") else {
                    return R::error(400, "Missing parameter channel");
                };
                let ids: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
                for c in &ids {
                    let Some(ch) = self.channels.by_id.get(c) else {
                        return R::error(400, "Channel not found");
                    };
                    if ch.stasis.is_none() {
                        return R::error(422, "Channel not in Stasis application");
                    }
                    if ch.bridge.as_deref() != Some(id) {
                        return R::error(422, "Channel not in this bridge");
                    }
                }
                for c in ids {
                    self.bridge_remove_by_ari(id, &c);
                }
                R::no_content()
            }
            ("POST", "play", sub) => self.play(&format!("bridge:{id}"), sub, p),
            ("POST", "record", None) => self.record(&format!("bridge:{id}"), p),
            ("POST", "moh", None) | ("DELETE", "moh", None) => {
                let empty = self
                    .bridges
                    .by_id
                    .get(id)
                    .is_some_and(|b| b.channels.is_empty());
                if m == "DELETE" && empty {
                    return R::error(409, "Bridge isn't playing music on hold");
                }
                if m == "POST" {
                    let n = self.announcer_name("ARI_MOH");
                    self.announcer(id, Some(&n));
                } else {
                    self.announcer(id, None);
                }
                R::no_content()
            }
            ("POST", "videoSource", Some(c)) => {
                if !self.channels.by_id.contains_key(c) {
                    return R::error(404, "Channel not found");
                }
                if self
                    .bridges
                    .by_id
                    .get(id)
                    .is_some_and(|b| !b.channels.iter().any(|x| x == c))
                {
                    return R::error(422, "Channel not in this bridge");
                }
                let old = self.bridges.by_id.get_mut(id).and_then(|b| {
                    b.video_mode = "single".to_string();
                    b.video_source.replace(c.to_string())
                });
                let extra = match old {
                    Some(o) => json!({ "old_video_source_id": o }),
                    None => json!({}),
                };
                self.bridge_event("BridgeVideoSourceChanged", id, None, extra);
                R::no_content()
            }
            ("DELETE", "videoSource", None) => {
                let old = self.bridges.by_id.get_mut(id).and_then(|b| {
                    b.video_mode = "talker".to_string();
                    b.video_source.take()
                });
                if let Some(o) = old {
                    self.bridge_event(
                        "BridgeVideoSourceChanged",
                        id,
                        None,
                        json!({"old_video_source_id": o}),
                    );
                }
                R::no_content()
            }
            ("GET", "variable", None) => {
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                match self.bridges.by_id.get(id).and_then(|b| b.vars.get(&v)) {
                    Some(val) => R::json(200, &json!({ "value": val })),
                    None => R::error(404, "Provided variable was not found"),
                }
            }
            ("POST", "variable", None) => {
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                let val = p.get("value").unwrap_or_default();
                let rep = p.bool("report_events").ok().flatten() == Some(true);
                if let Some(b) = self.bridges.by_id.get_mut(id) {
                    if rep {
                        b.reported.insert(v.clone());
                    }
                    b.vars.insert(v, val);
                }
                R::no_content()
            }
            ("POST", "variables", None) => {
                let vars = p.vars();
                if vars.is_empty() {
                    return R::error(400, "Variables are required");
                }
                if let Some(b) = self.bridges.by_id.get_mut(id) {
                    for (k, v, rep) in vars {
                        if rep {
                            b.reported.insert(k.clone());
                        }
                        b.vars.insert(k, v);
                    }
                }
                R::no_content()
            }
            ("GET", "variables", None) => {
                let Some(list) = p.nonempty("variables") else {
                    return R::error(400, "Variables are required");
                };
                let mut out = Map::new();
                for n in list.split(',').map(|x| x.trim()).filter(|x| !x.is_empty()) {
                    match self.bridges.by_id.get(id).and_then(|b| b.vars.get(n)) {
                        Some(v) => {
                            out.insert(n.to_string(), json!(v));
                        }
                        None => return R::error(404, "Provided variable was not found"),
                    }
                }
                R::json(200, &json!({ "variables": out }))
            }
            _ => not_found_resource(),
        }
    }
}
