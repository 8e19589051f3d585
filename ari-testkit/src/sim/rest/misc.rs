//! `/sounds`, `/endpoints`, `/deviceStates`, `/events`.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // sounds, endpoints, device states, user events
    // -----------------------------------------------------------------------------------

    pub(super) fn r_sounds(&mut self, m: &str, s: &[&str]) -> R {
        let sound = |id: &str| {
            json!({"id": id, "formats": [
                {"language": "en_US_f_Allison", "format": "gsm"},
                {"language": "en_US", "format": "gsm"},
                {"language": "en", "format": "gsm"}]})
        };
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self.cfg.media_durations.keys().map(|k| sound(k)).collect();
                R::json(200, &Value::Array(list))
            }
            ("GET", rest) if !rest.is_empty() => {
                let id = rest.join("/");
                if self.cfg.media_durations.contains_key(&id) {
                    R::json(200, &sound(&id))
                } else {
                    R::error(404, "Sound not found")
                }
            }
            _ => not_found_resource(),
        }
    }

    pub(super) fn r_endpoints(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
                    .system
                    .endpoints
                    .iter()
                    .map(|e| self.endpoint_json(e))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("PUT", ["sendMessage"]) => self.send_message(p, None),
            ("POST", ["refer"]) => R::no_content(),
            ("GET", [tech]) => {
                let prefix = format!("{tech}/");
                let list: Vec<Value> = self
                    .system
                    .endpoints
                    .iter()
                    .filter(|e| e.starts_with(&prefix))
                    .map(|e| self.endpoint_json(e))
                    .collect();
                if list.is_empty() && !["PJSIP", "Local", "SIP"].contains(tech) {
                    return R::error(404, "No Endpoints found - invalid tech");
                }
                R::json(200, &Value::Array(list))
            }
            ("GET", [tech, res]) => {
                let e = format!("{tech}/{res}");
                if self.system.endpoints.contains(&e) {
                    R::json(200, &self.endpoint_json(&e))
                } else {
                    R::error(404, "Endpoint not found")
                }
            }
            ("PUT", [tech, res, "sendMessage"]) => {
                let e = format!("{tech}/{res}");
                if !self.system.endpoints.contains(&e) {
                    return R::error(404, "Endpoint not found");
                }
                self.send_message(p, Some(&e))
            }
            _ => not_found_resource(),
        }
    }

    pub(super) fn send_message(&mut self, p: &P<'_>, ep: Option<&str>) -> R {
        if ep.is_none() && p.nonempty("to").is_none() {
            return R::error(400, "To URI must be specified");
        }
        if p.nonempty("from").is_none() {
            return R::error(400, "From URI must be specified");
        }
        R {
            status: 202,
            content_type: "",
            body: Vec::new(),
        }
    }

    pub(super) fn r_device_states(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        const STATES: [&str; 9] = [
            "NOT_INUSE",
            "INUSE",
            "BUSY",
            "INVALID",
            "UNAVAILABLE",
            "RINGING",
            "RINGINUSE",
            "ONHOLD",
            "UNKNOWN",
        ];
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
                    .system
                    .devices
                    .iter()
                    .map(|(n, st)| json!({"name": n, "state": st}))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("GET", [name]) => match self.system.devices.get(*name) {
                Some(st) => R::json(200, &json!({"name": name, "state": st})),
                None => R::json(200, &json!({"name": name, "state": "UNKNOWN"})),
            },
            ("PUT", [name]) => {
                let Some(st) = p.nonempty("deviceState") else {
                    return R::error(400, "Missing parameter deviceState");
                };
                if !STATES.contains(&st.as_str()) {
                    return R::error(400, "deviceState: Invalid enum value");
                }
                let Some(rest) = name.strip_prefix("Stasis:") else {
                    return R::error(409, "Cannot modify device state of non-Stasis device");
                };
                if rest.is_empty() {
                    return R::error(404, "Device not found");
                }
                self.system.devices.insert(name.to_string(), st.clone());
                self.device_state_named(name, &st);
                R::no_content()
            }
            ("DELETE", [name]) => {
                if !name.starts_with("Stasis:") {
                    return R::error(409, "Cannot delete device state of non-Stasis device");
                }
                match self.system.devices.remove(*name) {
                    Some(_) => R::no_content(),
                    None => R::error(404, "Device not found"),
                }
            }
            _ => not_found_resource(),
        }
    }

    pub(super) fn r_events(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("POST", ["user", name]) => self.user_event(name, p),
            ("POST", ["claim"]) => {
                let Some(chan) = p.nonempty("channelId") else {
                    return R::error(400, "Missing parameter channelId");
                };
                let Some(app) = p.nonempty("application") else {
                    return R::error(400, "Missing parameter application");
                };
                let Some(c) = self.channels.by_id.get(&chan) else {
                    return R::error(404, "Channel not found");
                };
                if !c.broadcast_open {
                    return R::error(409, "Channel has already been claimed");
                }
                if !self.app_is_connected(&app) {
                    return R::error(404, "Application not found");
                }
                if let Some(c) = self.channels.by_id.get_mut(&chan) {
                    c.broadcast_open = false;
                }
                let others: Vec<String> = self
                    .routing
                    .apps
                    .iter()
                    .filter(|(n, a)| a.connected && **n != app)
                    .map(|(n, _)| n.clone())
                    .collect();
                for o in others {
                    let mut ev = self.event("CallClaimed");
                    ev.insert("channel".to_string(), self.chan_json(&chan));
                    ev.insert("winner_app".to_string(), json!(app));
                    self.deliver(&o, ev);
                }
                self.enter_stasis(&chan, &app, Vec::new());
                R::no_content()
            }
            _ => not_found_resource(),
        }
    }

    pub(super) fn user_event(&mut self, name: &str, p: &P<'_>) -> R {
        let Some(app) = p.nonempty("application") else {
            return R::error(400, "Missing parameter application");
        };
        if !self.app_is_connected(&app) {
            return R::error(404, "Application not found");
        }
        let mut ev = self.event("ChannelUserevent");
        ev.insert("eventname".to_string(), json!(name));
        if let Some(src) = p.nonempty("source") {
            for one in src.split(',') {
                let Some((scheme, id)) = one.split_once(':') else {
                    return R::error(400, "Invalid scheme for event source");
                };
                let (key, val) = match scheme {
                    "channel" => (
                        "channel",
                        self.channels
                            .by_id
                            .contains_key(id)
                            .then(|| self.chan_json(id)),
                    ),
                    "bridge" => (
                        "bridge",
                        self.bridges
                            .by_id
                            .contains_key(id)
                            .then(|| self.bridge_json(id)),
                    ),
                    "endpoint" => (
                        "endpoint",
                        self.system
                            .endpoints
                            .contains(id)
                            .then(|| self.endpoint_json(id)),
                    ),
                    "deviceState" => (
                        "device_state",
                        self.system
                            .devices
                            .get(id)
                            .map(|st| json!({"name": id, "state": st})),
                    ),
                    _ => return R::error(400, "Invalid scheme for event source"),
                };
                match val {
                    Some(v) => {
                        ev.insert(key.to_string(), v);
                    }
                    None => return R::error(422, "Event source was not found"),
                }
            }
        }
        let mut ue = Map::new();
        for (k, v) in p.object("variables") {
            ue.insert(k, json!(v));
        }
        ue.insert("eventname".to_string(), json!(name));
        ev.insert("userevent".to_string(), Value::Object(ue));
        ev.insert("asterisk_id".to_string(), json!(self.cfg.asterisk_id));
        self.deliver(&app, ev);
        R::no_content()
    }
}
