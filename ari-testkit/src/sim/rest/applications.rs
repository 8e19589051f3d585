//! `/applications`: list, get, subscribe, event filter.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // applications
    // -----------------------------------------------------------------------------------

    pub(super) fn r_applications(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let names: Vec<String> = self
                    .routing
                    .apps
                    .iter()
                    .filter(|(_, a)| a.connected)
                    .map(|(n, _)| n.clone())
                    .collect();
                let list: Vec<Value> = names.iter().map(|n| self.app_json(n)).collect();
                R::json(200, &Value::Array(list))
            }
            ("GET", [name]) => {
                if !self.app_is_connected(name) {
                    return R::error(404, "Application not found");
                }
                R::json(200, &self.app_json(name))
            }
            ("POST", [name, "subscription"]) | ("DELETE", [name, "subscription"]) => {
                self.r_subscription(m == "POST", name, p)
            }
            ("PUT", [name, "eventFilter"]) => {
                if !self.app_is_connected(name) {
                    return R::error(404, "Application not found");
                }
                // The body is the filter itself: {"allowed": [...], "disallowed": [...]}.
                let filter = p.body.cloned();
                let (allowed, disallowed) = match filter {
                    None | Some(Value::Null) => (Vec::new(), Vec::new()),
                    Some(Value::Object(f)) => {
                        let list = |k: &str| -> Result<Vec<Value>, ()> {
                            match f.get(k) {
                                None | Some(Value::Null) => Ok(Vec::new()),
                                Some(Value::Array(a)) if a.iter().all(|x| x.is_object()) => {
                                    Ok(a.clone())
                                }
                                _ => Err(()),
                            }
                        };
                        match (list("allowed"), list("disallowed")) {
                            (Ok(a), Ok(d)) => (a, d),
                            _ => return R::error(400, "Invalid format definition"),
                        }
                    }
                    Some(_) => return R::error(400, "Invalid format definition"),
                };
                if let Some(a) = self.routing.apps.get_mut(*name) {
                    a.allowed = allowed;
                    a.disallowed = disallowed;
                }
                R::json(200, &self.app_json(name))
            }
            (_, [_]) | (_, [_, "subscription"]) | (_, [_, "eventFilter"]) | (_, []) => {
                method_not_allowed()
            }
            _ => not_found_resource(),
        }
    }

    pub(super) fn r_subscription(&mut self, subscribe: bool, name: &str, p: &P<'_>) -> R {
        let Some(src) = p.nonempty("eventSource") else {
            return R::error(400, "Missing parameter eventSource");
        };
        if !self.app_is_connected(name) {
            return R::error(404, "Application not found");
        }
        let mut parsed = Vec::new();
        for one in src.split(',') {
            let Some((scheme, id)) = one.split_once(':') else {
                return R::error(400, "Invalid event source URI scheme");
            };
            if id.is_empty() && ["channel", "bridge", "endpoint", "deviceState"].contains(&scheme) {
                parsed.push((scheme.to_string(), String::new()));
                continue;
            }
            let ok = match scheme {
                "channel" => self.channels.by_id.contains_key(id),
                "bridge" => self.bridges.by_id.contains_key(id),
                "endpoint" => {
                    let (tech, res) = id.split_once('/').unwrap_or((id, ""));
                    if res.is_empty() {
                        self.system
                            .endpoints
                            .iter()
                            .any(|e| e.starts_with(&format!("{tech}/")))
                    } else {
                        self.system.endpoints.contains(id)
                    }
                }
                "deviceState" => !id.is_empty(),
                _ => return R::error(400, "Invalid event source URI scheme"),
            };
            if !ok {
                return R::error(422, "Event source does not exist");
            }
            parsed.push((scheme.to_string(), id.to_string()));
        }
        if let Some(a) = self.routing.apps.get_mut(name) {
            for (scheme, id) in parsed {
                if id.is_empty() {
                    if subscribe {
                        a.all_kinds.insert(scheme);
                    } else {
                        a.all_kinds.remove(&scheme);
                    }
                    continue;
                }
                let set = match scheme.as_str() {
                    "channel" => &mut a.channels,
                    "bridge" => &mut a.bridges,
                    "endpoint" => &mut a.endpoints,
                    _ => &mut a.devices,
                };
                if subscribe {
                    set.insert(id);
                } else {
                    set.remove(&id);
                }
            }
        }
        R::json(200, &self.app_json(name))
    }
}
