//! REST request handling of the simulated Asterisk.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{
    time, Channel, Exec, LiveRec, OnAnswer, PbState, Sim, SimRequest, SimResponse, Tech, Timer,
};

type R = SimResponse;

/// Request parameters: the query string, then top-level fields of a JSON body (Asterisk
/// accepts any parameter in the body too).
struct P<'a> {
    q: &'a [(String, String)],
    body: Option<&'a Value>,
}

impl P<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.q.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        match self.body.and_then(|b| b.get(name)) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        o => o.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some(o) => Some(o.to_string()),
        }
    }
    fn nonempty(&self, name: &str) -> Option<String> {
        self.get(name).filter(|s| !s.is_empty())
    }
    fn int(&self, name: &str) -> Result<Option<i64>, R> {
        match self.get(name) {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| R::error(400, &format!("{name}: Invalid integer value"))),
        }
    }
    fn bool(&self, name: &str) -> Result<Option<bool>, R> {
        match self.get(name).as_deref() {
            None => Ok(None),
            Some("true") | Some("yes") | Some("1") => Ok(Some(true)),
            Some("false") | Some("no") | Some("0") => Ok(Some(false)),
            Some(_) => Err(R::error(400, &format!("{name}: Invalid boolean value"))),
        }
    }
    /// `appArgs`, comma-separated.
    fn app_args(&self) -> Vec<String> {
        self.get("appArgs")
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(|a| a.to_string()).collect())
            .unwrap_or_default()
    }

    /// The body's `variables`: name (trimmed) → value, and whether it has `report_events`.
    fn vars(&self) -> Vec<(String, String, bool)> {
        match self.body.and_then(|b| b.get("variables")) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::Object(o) => (
                        k.trim().to_string(),
                        o.get("value")
                            .map(|x| match x {
                                Value::String(s) => s.clone(),
                                o => o.to_string(),
                            })
                            .unwrap_or_default(),
                        o.get("report_events") == Some(&Value::Bool(true)),
                    ),
                    Value::String(s) => (k.trim().to_string(), s.clone(), false),
                    o => (k.trim().to_string(), o.to_string(), false),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `variables` (or `fields`) object of the body.
    fn object(&self, name: &str) -> Vec<(String, String)> {
        match self.body.and_then(|b| b.get(name)) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        match v {
                            Value::String(s) => s.clone(),
                            o => o.to_string(),
                        },
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn not_found_resource() -> R {
    R::error(404, "Resource not found")
}

fn method_not_allowed() -> R {
    R::error(405, "Invalid method")
}

impl Sim {
    /// Answers one REST request (path below `/ari/`), mutating the model and queueing the
    /// events it causes. Never panics: bad input gets the error Asterisk gives.
    pub fn handle_request(&mut self, now: Duration, req: &SimRequest<'_>) -> SimResponse {
        self.advance(now);
        if req.read_only && req.method != "GET" {
            return R::error(403, "Write access denied");
        }
        let p = P {
            q: req.query,
            body: req.body,
        };
        let s: Vec<&str> = req.segments.iter().map(|s| s.as_str()).collect();
        let m = req.method;
        match s.first().copied() {
            Some("asterisk") => self.r_asterisk(m, &s[1..], &p),
            Some("applications") => self.r_applications(m, &s[1..], &p),
            Some("channels") => self.r_channels(m, &s[1..], &p),
            Some("bridges") => self.r_bridges(m, &s[1..], &p),
            Some("playbacks") => self.r_playbacks(m, &s[1..], &p),
            Some("recordings") => self.r_recordings(m, &s[1..], &p),
            Some("sounds") => self.r_sounds(m, &s[1..]),
            Some("endpoints") => self.r_endpoints(m, &s[1..], &p),
            Some("deviceStates") => self.r_device_states(m, &s[1..], &p),
            Some("events") => self.r_events(m, &s[1..], &p),
            _ => not_found_resource(),
        }
    }

    // -----------------------------------------------------------------------------------
    // asterisk
    // -----------------------------------------------------------------------------------

    fn r_asterisk(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", ["info"]) => {
                let start = time::format_ms(self.cfg.wall_clock_base_ms);
                let all = json!({
                    "build": {"os": "Linux", "kernel": "6.18.44-sim", "machine": "x86_64",
                              "options": "OPTIONAL_API",
                              "date": time::format_plain(self.cfg.wall_clock_base_ms.saturating_sub(467_914)),
                              "user": "root"},
                    "system": {"version": self.cfg.version, "entity_id": self.cfg.asterisk_id},
                    "config": {"name": "", "default_language": self.cfg.language,
                               "setid": {"user": "", "group": ""}},
                    "status": {"startup_time": start, "last_reload_time": start},
                });
                match p.get("only") {
                    Some(only) => {
                        let mut out = Map::new();
                        for k in only.split(',') {
                            let k = k.trim();
                            match all.get(k) {
                                Some(v) => {
                                    out.insert(k.to_string(), v.clone());
                                }
                                None => {
                                    return R::error(
                                        400,
                                        &format!("only: Invalid enum value '{k}'"),
                                    )
                                }
                            }
                        }
                        R::json(200, &Value::Object(out))
                    }
                    None => R::json(200, &all),
                }
            }
            ("GET", ["ping"]) => R::json(
                200,
                &json!({"ping": "pong", "timestamp": self.ts(), "asterisk_id": self.cfg.asterisk_id}),
            ),
            ("GET", ["variable"]) => {
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                if v.starts_with("SHELL(") {
                    return R::error(500, "Unable to read provided function");
                }
                let val = v
                    .strip_prefix("GLOBAL(")
                    .and_then(|x| x.strip_suffix(')'))
                    .map(|g| self.globals.get(g).cloned())
                    .unwrap_or_else(|| self.globals.get(&v).cloned())
                    .unwrap_or_default();
                R::json(200, &json!({ "value": val }))
            }
            ("POST", ["variable"]) => {
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                let val = p.get("value").unwrap_or_default();
                self.globals.insert(v.clone(), val.clone());
                self.emit_varset(None, &v, &val);
                R::no_content()
            }
            ("GET", ["modules"]) => {
                let list: Vec<Value> = self.modules.keys().map(|n| self.module_json(n)).collect();
                R::json(200, &Value::Array(list))
            }
            (_, ["modules", name]) => self.r_module(m, name),
            ("GET", ["logging"]) => {
                let list: Vec<Value> = self
                    .log_channels
                    .iter()
                    .map(|(c, t, conf)| {
                        json!({"channel": c, "type": t, "status": "Enabled", "configuration": conf})
                    })
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("POST", ["logging", name]) => {
                let Some(conf) = p.nonempty("configuration") else {
                    return R::error(400, "Missing parameter configuration");
                };
                if self.log_channels.iter().any(|(c, _, _)| c.ends_with(name)) {
                    return R::error(409, "Log channel already exists");
                }
                let levels: String = conf
                    .split(',')
                    .map(|l| format!("{} ", l.trim().to_ascii_uppercase()))
                    .collect();
                self.log_channels.push((
                    format!("/var/log/asterisk/{name}"),
                    "File".to_string(),
                    levels,
                ));
                R::no_content()
            }
            ("DELETE", ["logging", name]) => {
                let before = self.log_channels.len();
                self.log_channels.retain(|(c, _, _)| !c.ends_with(name));
                if self.log_channels.len() == before {
                    R::error(404, "Log channel does not exist")
                } else {
                    R::no_content()
                }
            }
            ("PUT", ["logging", name, "rotate"]) => {
                if self.log_channels.iter().any(|(c, _, _)| c.ends_with(name)) {
                    R::no_content()
                } else {
                    R::error(404, "Log channel does not exist")
                }
            }
            (_, ["config", "dynamic", class, _kind, _id]) => {
                R::error(404, &format!("configClass '{class}' not found"))
            }
            _ => not_found_resource(),
        }
    }

    fn r_module(&mut self, m: &str, name: &str) -> R {
        let entry = self.modules.get(name).cloned();
        let running = entry.as_ref().is_some_and(|e| e.2);
        match m {
            "GET" => match entry {
                Some(e) if e.2 => R::json(200, &self.module_json(name)),
                _ => R::error(404, "Module could not be found in running modules"),
            },
            "POST" => match entry {
                Some(_) if running => R::error(409, "Module is already loaded"),
                Some(e) => {
                    self.modules.insert(name.to_string(), (e.0, e.1, true));
                    R::no_content()
                }
                None => R::error(409, "Module could not be loaded properly"),
            },
            "DELETE" => match entry {
                Some(_) if running && (name == "res_stasis.so" || name.starts_with("res_ari")) => {
                    R::error(409, "Module could not be unloaded")
                }
                Some(e) if running => {
                    self.modules.insert(name.to_string(), (e.0, e.1, false));
                    R::no_content()
                }
                _ => R::error(404, "Module not found in running modules"),
            },
            "PUT" => match entry {
                Some(_) if running => R::no_content(),
                _ => R::error(404, "Module not found in running modules"),
            },
            _ => method_not_allowed(),
        }
    }

    fn module_json(&self, name: &str) -> Value {
        let (d, sl, running) = self.modules.get(name).cloned().unwrap_or_default();
        let use_count = match name {
            "app_echo.so" => self
                .channels
                .values()
                .filter(|c| c.app_name == "Echo")
                .count(),
            "res_stasis.so" | "app_stasis.so" => self
                .channels
                .values()
                .filter(|c| c.stasis.is_some())
                .count(),
            _ => 0,
        };
        json!({"name": name, "description": d, "use_count": use_count,
               "status": if running { "Running" } else { "Not Running" }, "support_level": sl})
    }

    // -----------------------------------------------------------------------------------
    // applications
    // -----------------------------------------------------------------------------------

    fn r_applications(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let names: Vec<String> = self
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
                if let Some(a) = self.apps.get_mut(*name) {
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

    fn r_subscription(&mut self, subscribe: bool, name: &str, p: &P<'_>) -> R {
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
                "channel" => self.channels.contains_key(id),
                "bridge" => self.bridges.contains_key(id),
                "endpoint" => {
                    let (tech, res) = id.split_once('/').unwrap_or((id, ""));
                    if res.is_empty() {
                        self.endpoints
                            .iter()
                            .any(|e| e.starts_with(&format!("{tech}/")))
                    } else {
                        self.endpoints.contains(id)
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
        if let Some(a) = self.apps.get_mut(name) {
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

    // -----------------------------------------------------------------------------------
    // channels
    // -----------------------------------------------------------------------------------

    fn r_channels(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
                    .chan_order
                    .iter()
                    .map(|id| self.chan_json(id))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("POST", []) => self.originate(None, p),
            ("POST", ["create"]) => self.create(p),
            ("POST", ["externalMedia"]) => self.external_media(p),
            ("GET", [id]) => match self.channels.contains_key(*id) {
                true => R::json(200, &self.chan_json(id)),
                false => R::error(404, "Channel not found"),
            },
            ("POST", [id]) => self.originate(Some(id), p),
            ("DELETE", [id]) => {
                if !self.channels.contains_key(*id) {
                    return R::error(404, "Channel not found");
                }
                let cause = match hangup_cause(p) {
                    Ok(c) => c,
                    Err(e) => return e,
                };
                self.ari_hangup(id, cause);
                R::no_content()
            }
            (_, [id, op]) => self.channel_op(m, id, op, None, p),
            (_, [id, op, sub]) => self.channel_op(m, id, op, Some(sub), p),
            _ => not_found_resource(),
        }
    }

    fn new_ids(&mut self, p: &P<'_>, path_id: Option<&str>) -> Result<(String, String), R> {
        if self.channels.len() >= self.cfg.max_channels {
            return Err(R::error(500, "Allocation failed"));
        }
        let id1 = path_id
            .map(|s| s.to_string())
            .or_else(|| p.nonempty("channelId"))
            .unwrap_or_else(|| self.next_uid());
        let id2 = p.nonempty("otherChannelId").unwrap_or_else(|| {
            if path_id.is_some() || p.nonempty("channelId").is_some() {
                format!("{id1};2")
            } else {
                self.next_uid()
            }
        });
        if self.channels.contains_key(&id1) || self.channels.contains_key(&id2) || id1 == id2 {
            return Err(R::error(409, "Channel with given unique ID already exists"));
        }
        Ok((id1, id2))
    }

    fn originate(&mut self, path_id: Option<&str>, p: &P<'_>) -> R {
        let Some(endpoint) = p.nonempty("endpoint") else {
            return R::error(400, "Endpoint must be specified");
        };
        let app = p.nonempty("app");
        let ext = p.nonempty("extension");
        if app.is_none() && ext.is_none() && p.nonempty("context").is_none() {
            return R::error(400, "Application or extension must be specified");
        }
        let timeout = match p.int("timeout") {
            Ok(t) => t.unwrap_or(30),
            Err(e) => return e,
        };
        let priority = match p.int("priority") {
            Ok(v) => v,
            Err(e) => return e,
        };
        let label = p.nonempty("label");
        let (id1, id2) = match self.new_ids(p, path_id) {
            Ok(x) => x,
            Err(e) => return e,
        };
        let args = p.app_args();
        let on_answer = match &app {
            Some(a) => OnAnswer::Stasis(a.clone(), args),
            None => {
                let ctx = p
                    .nonempty("context")
                    .unwrap_or_else(|| "default".to_string());
                let ex = ext.clone().unwrap_or_else(|| "s".to_string());
                let prio = match &label {
                    Some(l) => self.dialplan.label(&ctx, &ex, l).unwrap_or(1),
                    None => priority.unwrap_or(1),
                };
                OnAnswer::Dialplan(ctx, ex, prio)
            }
        };
        let (tech, rest) = endpoint.split_once('/').unwrap_or((endpoint.as_str(), ""));
        let caller = p.nonempty("callerId").map(|c| super::parse_callerid(&c));
        let vars = p.vars();
        match tech {
            "Local" | "local" => {
                let target = rest.split('/').next().unwrap_or("");
                let (exten, ctx) = match target.split_once('@') {
                    Some((e, c)) => (e.to_string(), c.to_string()),
                    None => (target.to_string(), "default".to_string()),
                };
                if exten.is_empty() {
                    return R::error(400, "Invalid endpoint specified");
                }
                self.make_local_pair(&id1, &id2, &exten, &ctx, app.as_deref());
                let linked = p
                    .nonempty("originator")
                    .and_then(|o| self.channels.get(&o).map(|c| c.linkedid.clone()));
                if let Some(l) = linked {
                    for id in [&id1, &id2] {
                        if let Some(c) = self.channels.get_mut(id.as_str()) {
                            c.linkedid = l.clone();
                        }
                    }
                }
                if let Some(c) = self.channels.get_mut(&id1) {
                    c.base_app = ("AppDial2".to_string(), "(Outgoing Line)".to_string());
                    c.app_name = "AppDial2".to_string();
                    c.app_data = "(Outgoing Line)".to_string();
                    c.on_answer = on_answer;
                }
                self.emit_created(&id1);
                self.emit_created(&id2);
                self.emit_dialplan(&id1);
                self.apply_caller_and_vars(&id1, caller.as_ref(), &vars, true);
                if let Some(a) = &app {
                    if let Some(ap) = self.apps.get_mut(a) {
                        ap.channels.insert(id1.clone());
                        ap.channels.insert(id2.clone());
                    }
                }
                self.apply_caller_and_vars(&id2, caller.as_ref(), &vars, false);
                let resp = self.chan_json(&id1);
                self.schedule(Duration::ZERO, Timer::LocalStart(id1.clone()));
                if timeout > 0 {
                    self.schedule(
                        Duration::from_secs(timeout as u64),
                        Timer::DialTimeout(id1.clone()),
                    );
                }
                R::json(200, &resp)
            }
            "PJSIP" | "SIP" | "IAX2" | "DAHDI" => {
                let resource = rest.split('@').next().unwrap_or("");
                if resource.is_empty() {
                    return R::error(400, "Invalid endpoint specified");
                }
                let mut c = self.new_sip_channel(&id1, &format!("{tech}/{resource}"), "Down");
                c.base_app = ("AppDial2".to_string(), "(Outgoing Line)".to_string());
                c.app_name = c.base_app.0.clone();
                c.app_data = c.base_app.1.clone();
                c.on_answer = on_answer;
                c.dialing = Some(rest.to_string());
                self.insert_channel(c);
                self.emit_created(&id1);
                if let Some(a) = &app {
                    if let Some(ap) = self.apps.get_mut(a) {
                        ap.channels.insert(id1.clone());
                    }
                }
                self.apply_caller_and_vars(&id1, caller.as_ref(), &vars, true);
                let resp = self.chan_json(&id1);
                self.emit_dial(&id1, "");
                if let Some(c) = self.channels.get_mut(&id1) {
                    c.state = "Ringing";
                }
                self.emit_state(&id1);
                self.emit_dial(&id1, "RINGING");
                let d = self.cfg.sip_answer_delay;
                self.schedule(d, Timer::SipAnswer(id1.clone()));
                if timeout > 0 {
                    self.schedule(
                        Duration::from_secs(timeout as u64),
                        Timer::DialTimeout(id1.clone()),
                    );
                }
                R::json(200, &resp)
            }
            _ => R::error(400, "Invalid endpoint specified"),
        }
    }

    /// Caller id (`callerId`, `CALLERID(…)` variables) and channel variables of an
    /// originate. The `;1` half announces its caller id before its variables, the `;2`
    /// half after them (as the recording shows).
    fn apply_caller_and_vars(
        &mut self,
        id: &str,
        caller: Option<&(String, String)>,
        vars: &[(String, String, bool)],
        caller_first: bool,
    ) {
        if caller_first {
            self.apply_caller(id, caller, vars);
            self.apply_vars(id, vars);
        } else {
            self.apply_vars(id, vars);
            self.apply_caller(id, caller, vars);
        }
    }

    fn apply_vars(&mut self, id: &str, vars: &[(String, String, bool)]) {
        for (k, v, rep) in vars {
            if k.starts_with("CALLERID(") {
                continue;
            }
            if let Some(c) = self.channels.get_mut(id) {
                if *rep {
                    c.reported.insert(k.clone());
                }
                c.vars.insert(k.clone(), v.clone());
            }
            self.emit_varset(Some(id), k, v);
        }
    }

    fn apply_caller(
        &mut self,
        id: &str,
        caller: Option<&(String, String)>,
        vars: &[(String, String, bool)],
    ) {
        let mut cid_var = false;
        if let Some((n, num)) = caller {
            if let Some(c) = self.channels.get_mut(id) {
                c.caller = (n.clone(), num.clone());
            }
        }
        for (k, v, _) in vars {
            if let Some(c) = self.channels.get_mut(id) {
                match k.as_str() {
                    "CALLERID(name)" => c.caller.0 = v.clone(),
                    "CALLERID(num)" | "CALLERID(number)" => c.caller.1 = v.clone(),
                    "CALLERID(all)" => c.caller = super::parse_callerid(v),
                    _ => continue,
                }
                cid_var = true;
            }
        }
        if caller.is_some() || cid_var {
            if let Some(c) = self.channels.get_mut(id) {
                c.connected = c.caller.clone();
            }
            self.chan_event(
                "ChannelCallerId",
                id,
                json!({"caller_presentation": 0, "caller_presentation_txt": "Presentation Allowed, Not Screened"}),
            );
            self.chan_event("ChannelConnectedLine", id, json!({}));
        }
    }

    fn create(&mut self, p: &P<'_>) -> R {
        let Some(endpoint) = p.nonempty("endpoint") else {
            return R::error(400, "Endpoint must be specified");
        };
        let Some(app) = p.nonempty("app") else {
            return R::error(400, "Application must be specified");
        };
        let (id1, id2) = match self.new_ids(p, None) {
            Ok(x) => x,
            Err(e) => return e,
        };
        let args = p.app_args();
        let (tech, rest) = endpoint.split_once('/').unwrap_or((endpoint.as_str(), ""));
        let vars = p.vars();
        let originator = p.nonempty("originator");
        match tech {
            "Local" | "local" => {
                let target = rest.split('/').next().unwrap_or("");
                let (exten, ctx) = match target.split_once('@') {
                    Some((e, c)) => (e.to_string(), c.to_string()),
                    None => (target.to_string(), "default".to_string()),
                };
                self.make_local_pair(&id1, &id2, &exten, &ctx, Some(&app));
                self.emit_created(&id1);
                self.emit_created(&id2);
            }
            "PJSIP" | "SIP" => {
                let resource = rest.split('@').next().unwrap_or("");
                if resource.is_empty() {
                    return R::error(400, "Invalid endpoint specified");
                }
                let c = self.new_sip_channel(&id1, &format!("{tech}/{resource}"), "Down");
                self.insert_channel(c);
                self.emit_created(&id1);
            }
            _ => return R::error(400, "Invalid endpoint specified"),
        }
        if let Some(c) = self.channels.get_mut(&id1) {
            c.created_only = true;
        }
        if let Some(ap) = self.apps.get_mut(&app) {
            ap.channels.insert(id1.clone());
        }
        if let Some(o) = originator.and_then(|o| self.channels.get(&o).map(|c| c.linkedid.clone()))
        {
            for id in [&id1, &id2] {
                if let Some(c) = self.channels.get_mut(id.as_str()) {
                    c.linkedid = o.clone();
                }
            }
        }
        for (k, v, rep) in &vars {
            if *rep {
                if let Some(c) = self.channels.get_mut(&id1) {
                    c.reported.insert(k.clone());
                }
            }
            self.set_chan_var(&id1, k, v);
        }
        let resp = self.chan_json(&id1);
        // The created channel sits in Stasis (state Down) until dialed.
        self.announce_stasis(&id1, &app, &args);
        self.enter_stasis(&id1, &app, args);
        R::json(200, &resp)
    }

    fn external_media(&mut self, p: &P<'_>) -> R {
        let Some(app) = p.nonempty("app") else {
            return R::error(400, "app cannot be empty");
        };
        let enc = p
            .nonempty("encapsulation")
            .unwrap_or_else(|| "rtp".to_string());
        let Some(host) = p.nonempty("external_host") else {
            return R::error(400, "external_host is required");
        };
        let Some(format) = p.nonempty("format") else {
            return R::error(400, "format cannot be empty");
        };
        if !["ulaw", "alaw", "slin", "slin16", "g722", "gsm", "opus"].contains(&format.as_str()) {
            return R::error(400, "format not found");
        }
        if !host.contains(':') {
            return R::error(400, "external_host must be <host>:<port>");
        }
        if !["rtp", "audiosocket"].contains(&enc.as_str()) {
            return R::error(501, "Unsupported encapsulation");
        }
        let id = p.nonempty("channelId").unwrap_or_else(|| self.next_uid());
        if self.channels.contains_key(&id) {
            return R::error(409, "Channel with given unique ID already exists");
        }
        self.local_seq += 1;
        let name = format!("UnicastRTP/{host}-0x7f77f80{:05x}", self.local_seq);
        let mut c = self.new_channel(&id, &name, Tech::UnicastRtp, "Down");
        c.base_app = ("AppDial2".to_string(), "(Outgoing Line)".to_string());
        c.app_name = c.base_app.0.clone();
        c.app_data = c.base_app.1.clone();
        c.dialing = Some(format!("{host}/c({format})"));
        c.vars.insert(
            "UNICASTRTP_LOCAL_ADDRESS".to_string(),
            "127.0.0.1".to_string(),
        );
        c.vars.insert(
            "UNICASTRTP_LOCAL_PORT".to_string(),
            format!("{}", 10000 + self.local_seq * 2),
        );
        self.insert_channel(c);
        self.emit_created(&id);
        let vars = p.vars();
        self.apply_caller_and_vars(&id, None, &vars, false);
        let port = format!("{}", 10000 + self.local_seq * 2);
        self.emit_varset(Some(&id), "UNICASTRTP_LOCAL_ADDRESS", "127.0.0.1");
        self.emit_varset(Some(&id), "UNICASTRTP_LOCAL_PORT", &port);
        self.emit_dialplan(&id);
        if let Some(ap) = self.apps.get_mut(&app) {
            ap.channels.insert(id.clone());
        }
        let mut resp = self.chan_json(&id);
        resp["channelvars"] =
            json!({"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": port});
        self.emit_dial(&id, "");
        if let Some(c) = self.channels.get_mut(&id) {
            c.state = "Up";
            c.on_answer = OnAnswer::Stasis(app.clone(), Vec::new());
        }
        self.emit_state(&id);
        self.dial_answered(&id);
        R::json(200, &resp)
    }

    /// Checks the channel exists and is controllable (in Stasis, not a created-only channel).
    fn control(&self, id: &str) -> Result<&Channel, R> {
        let Some(c) = self.channels.get(id) else {
            return Err(R::error(404, "Channel not found"));
        };
        if c.created_only || (c.dialing.is_some() && c.stasis.is_some()) {
            return Err(R::error(412, "Channel in invalid state"));
        }
        if c.stasis.is_none() {
            return Err(R::error(409, "Channel not in Stasis application"));
        }
        Ok(c)
    }

    fn channel_op(&mut self, m: &str, id: &str, op: &str, sub: Option<&str>, p: &P<'_>) -> R {
        if id.is_empty() {
            return R::error(400, "Channel ID must be specified");
        }
        match (m, op, sub) {
            ("GET", "variable", None) => {
                let Some(c) = self.channels.get(id) else {
                    return R::error(404, "Channel not found");
                };
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                if v.starts_with("SHELL(") || v.starts_with("SYSTEM(") {
                    return R::error(500, "Unable to read provided function");
                }
                match self.read_chan_var(c, &v) {
                    Some(val) => R::json(200, &json!({ "value": val })),
                    None => R::error(404, "Provided variable was not found"),
                }
            }
            ("POST", "variable", None) => {
                if !self.channels.contains_key(id) {
                    return R::error(404, "Channel not found");
                }
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                let val = p.get("value").unwrap_or_default();
                if p.bool("report_events").ok().flatten() == Some(true) {
                    if let Some(c) = self.channels.get_mut(id) {
                        c.reported.insert(v.clone());
                    }
                }
                self.set_chan_var(id, &v, &val);
                R::no_content()
            }
            ("POST", "variables", None) => {
                if !self.channels.contains_key(id) {
                    return R::error(404, "Channel not found");
                }
                let vars = p.vars();
                if vars.is_empty() {
                    return R::error(400, "Variables are required");
                }
                for (k, v, rep) in vars {
                    if rep {
                        if let Some(c) = self.channels.get_mut(id) {
                            c.reported.insert(k.clone());
                        }
                    }
                    self.set_chan_var(id, &k, &v);
                }
                R::no_content()
            }
            ("GET", "variables", None) => {
                let Some(c) = self.channels.get(id) else {
                    return R::error(404, "Channel not found");
                };
                let Some(list) = p.nonempty("variables") else {
                    return R::error(400, "Variables are required");
                };
                let mut out = Map::new();
                for n in list.split(',').map(|x| x.trim()).filter(|x| !x.is_empty()) {
                    match self.read_chan_var(c, n) {
                        Some(v) => {
                            out.insert(n.to_string(), json!(v));
                        }
                        None => return R::error(404, "Provided variable was not found"),
                    }
                }
                R::json(200, &json!({ "variables": out }))
            }
            ("GET", "rtp_statistics", None) => match self.channels.get(id) {
                None => R::error(404, "Channel not found"),
                Some(c) if c.tech == Tech::Sip => R::json(200, &rtp_stats(c)),
                Some(_) => R::error(403, "Unsupported channel type"),
            },
            ("POST", "snoop", sub) => self.snoop(id, sub, p),
            ("POST", "dial", None) => self.dial(id, p),
            ("POST", "play", sub) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                self.play(&format!("channel:{id}"), sub, p)
            }
            ("POST", "record", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                self.record(&format!("channel:{id}"), p)
            }
            ("POST", "continue", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                self.continue_in_dialplan(id, p)
            }
            ("POST", "move", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                let Some(app) = p.nonempty("app") else {
                    return R::error(400, "Missing parameter app");
                };
                let args = p.app_args();
                if !self.app_is_connected(&app) {
                    // Accepted, but the channel stays where it is; its application hears
                    // about it.
                    let cur = self
                        .channels
                        .get(id)
                        .and_then(|c| c.stasis.as_ref().map(|(a, _)| a.clone()))
                        .unwrap_or_default();
                    let mut ev = self.event("ApplicationMoveFailed");
                    ev.insert("channel".to_string(), self.chan_json(id));
                    ev.insert("destination".to_string(), json!(app));
                    ev.insert("args".to_string(), json!(args));
                    self.deliver(&cur, ev);
                    return R::no_content();
                }
                self.leave_stasis(id);
                self.enter_stasis(id, &app, args);
                R::no_content()
            }
            ("POST", "redirect", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                let Some(ep) = p.nonempty("endpoint") else {
                    return R::error(400, "Required parameter 'endpoint' not provided.");
                };
                let (tech, res) = ep.split_once('/').unwrap_or((ep.as_str(), ""));
                if res.is_empty() {
                    return R::error(422, "No resource provided in endpoint");
                }
                if !self.endpoints.contains(&format!("{tech}/{res}")) {
                    return R::error(422, "Endpoint not found");
                }
                R::no_content()
            }
            ("POST", "answer", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                self.answer(id);
                R::no_content()
            }
            ("POST", "dtmf", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                let Some(digits) = p.nonempty("dtmf") else {
                    return R::error(400, "DTMF is required");
                };
                let before = match p.int("before") {
                    Ok(v) => v.unwrap_or(0).max(0) as u64,
                    Err(e) => return e,
                };
                let between = match p.int("between") {
                    Ok(v) => v.unwrap_or(100).max(0) as u64,
                    Err(e) => return e,
                };
                let dur = match p.int("duration") {
                    Ok(v) => v.unwrap_or(100).max(0) as u64,
                    Err(e) => return e,
                };
                // The far end receives them: the Local peer, or nobody (a phone).
                if let Some(peer) = self.channels.get(id).and_then(|c| c.peer.clone()) {
                    let mut at = before.saturating_add(dur);
                    for d in digits.chars().filter(|c| super::is_dtmf(*c)) {
                        self.schedule(Duration::from_millis(at), Timer::Dtmf(peer.clone(), d, dur));
                        at = at.saturating_add(dur.saturating_add(between));
                    }
                }
                R::no_content()
            }
            ("POST", "ring", None)
            | ("DELETE", "ring", None)
            | ("POST", "mute", None)
            | ("DELETE", "mute", None)
            | ("POST", "hold", None)
            | ("DELETE", "hold", None)
            | ("POST", "moh", None)
            | ("DELETE", "moh", None)
            | ("POST", "silence", None)
            | ("DELETE", "silence", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                if op == "mute" {
                    if let Some(d) = p.get("direction") {
                        if !["both", "in", "out"].contains(&d.as_str()) {
                            return R::error(400, "direction: Invalid enum value");
                        }
                    }
                }
                if op == "hold" && self.channels.get(id).is_some_and(|c| c.hold_intercept) {
                    let ty = if m == "POST" {
                        "ChannelHold"
                    } else {
                        "ChannelUnhold"
                    };
                    self.chan_event(ty, id, json!({}));
                }
                if op == "ring" && m == "POST" {
                    let ringing = self
                        .channels
                        .get(id)
                        .is_some_and(|c| c.state != "Up" && c.state != "Ringing");
                    if ringing {
                        if let Some(c) = self.channels.get_mut(id) {
                            c.state = "Ringing";
                        }
                        self.emit_state(id);
                    }
                }
                R::no_content()
            }
            ("POST", "externalMedia", None) => not_found_resource(),
            _ => {
                if self.channels.contains_key(id) {
                    method_not_allowed()
                } else {
                    not_found_resource()
                }
            }
        }
    }

    fn dial(&mut self, id: &str, p: &P<'_>) -> R {
        let Some(c) = self.channels.get(id) else {
            return R::error(404, "Channel not found");
        };
        if c.stasis.is_none() {
            return R::error(409, "Channel not in Stasis application");
        }
        if !c.created_only {
            return R::error(409, "Channel is not in the 'Down' state");
        }
        if let Some(caller) = p.nonempty("caller") {
            if !self.channels.contains_key(&caller) {
                return R::error(404, "Caller channel not found");
            }
        }
        let timeout = match p.int("timeout") {
            Ok(t) => t,
            Err(e) => return e,
        };
        let caller = p.nonempty("caller");
        let tech = c.tech;
        let name = c.name.clone();
        if let Some(c) = self.channels.get_mut(id) {
            c.dialed_by = caller;
        }
        if let Some(t) = timeout.filter(|t| *t > 0) {
            self.schedule(
                Duration::from_secs(t as u64),
                Timer::DialTimeout(id.to_string()),
            );
        }
        if let Some(c) = self.channels.get_mut(id) {
            c.created_only = false;
        }
        match tech {
            Tech::Local(_) => {
                self.schedule(Duration::ZERO, Timer::LocalStart(id.to_string()));
            }
            _ => {
                let ds = name
                    .split_once('/')
                    .map(|(_, r)| r.rsplit_once('-').map(|x| x.0).unwrap_or(r).to_string());
                if let Some(c) = self.channels.get_mut(id) {
                    c.dialing = ds;
                }
                self.emit_dial(id, "");
                if let Some(c) = self.channels.get_mut(id) {
                    c.state = "Ringing";
                }
                self.emit_state(id);
                self.emit_dial(id, "RINGING");
                let d = self.cfg.sip_answer_delay;
                self.schedule(d, Timer::SipAnswer(id.to_string()));
            }
        }
        R::no_content()
    }

    fn continue_in_dialplan(&mut self, id: &str, p: &P<'_>) -> R {
        let (cur_ctx, cur_ext, cur_prio) = match self.channels.get(id) {
            Some(c) => (c.context.clone(), c.exten.clone(), c.priority),
            None => return R::error(404, "Channel not found"),
        };
        let priority = match p.int("priority") {
            Ok(v) => v,
            Err(e) => return e,
        };
        let ctx = p.nonempty("context");
        let ext = p.nonempty("extension");
        let label = p.nonempty("label");
        let explicit = ctx.is_some() || ext.is_some() || priority.is_some() || label.is_some();
        // A new context without an extension starts at `s`.
        let ext = match (&ctx, ext) {
            (_, Some(e)) => e,
            (Some(_), None) => "s".to_string(),
            (None, None) => cur_ext,
        };
        let ctx = ctx.unwrap_or(cur_ctx);
        let prio = if let Some(l) = &label {
            match self.dialplan.label(&ctx, &ext, l) {
                Some(pr) => pr,
                None => {
                    return R::error(
                        400,
                        &format!("Requested label: {l} can not be found in context: {ctx}"),
                    )
                }
            }
        } else if let Some(pr) = priority {
            pr
        } else if explicit {
            1
        } else {
            cur_prio + 1
        };
        self.leave_stasis(id);
        if let Some(c) = self.channels.get_mut(id) {
            c.context = ctx;
            c.exten = ext;
            c.priority = prio;
            c.exec = Exec::Idle;
            c.exec_gen += 1;
        }
        let g = self.channels.get(id).map(|c| c.exec_gen).unwrap_or(0);
        // Re-enter the dialplan at exactly that priority (the timer advances first).
        if let Some(c) = self.channels.get_mut(id) {
            c.priority -= 1;
        }
        self.schedule(Duration::ZERO, Timer::Dialplan(id.to_string(), g));
        R::no_content()
    }

    fn snoop(&mut self, id: &str, sub: Option<&str>, p: &P<'_>) -> R {
        let Some(app) = p.nonempty("app") else {
            return R::error(400, "Missing parameter app");
        };
        let spy = p.get("spy").unwrap_or_else(|| "none".to_string());
        let whisper = p.get("whisper").unwrap_or_else(|| "none".to_string());
        for (n, v) in [("spy", &spy), ("whisper", &whisper)] {
            if !["none", "both", "out", "in"].contains(&v.as_str()) {
                return R::error(400, &format!("{n}: Invalid enum value"));
            }
        }
        if spy == "none" && whisper == "none" {
            return R::error(400, "Sniff direction must be specified");
        }
        if !self.channels.contains_key(id) {
            return R::error(404, "Provided channel was not found");
        }
        let sid = sub
            .map(|s| s.to_string())
            .or_else(|| p.nonempty("snoopId"))
            .unwrap_or_else(|| self.next_uid());
        if self.channels.contains_key(&sid) {
            return R::error(409, "Channel with given unique ID already exists");
        }
        let args = p.app_args();
        let name = format!("Snoop/{id}-{:08x}", self.snoop_seq);
        self.snoop_seq += 1;
        let mut c = self.new_channel(&sid, &name, Tech::Snoop, "Up");
        c.snoop_target = Some(id.to_string());
        self.insert_channel(c);
        if let Some(t) = self.channels.get_mut(id) {
            t.snoops.push(sid.clone());
        }
        self.emit_created(&sid);
        let resp = self.chan_json(&sid);
        self.announce_stasis(&sid, &app, &args);
        self.enter_stasis(&sid, &app, args);
        R::json(200, &resp)
    }

    // -----------------------------------------------------------------------------------
    // playbacks
    // -----------------------------------------------------------------------------------

    fn play(&mut self, target: &str, sub: Option<&str>, p: &P<'_>) -> R {
        let Some(media) = p.nonempty("media") else {
            return R::error(400, "Missing parameter media");
        };
        let media: Vec<String> = media.split(',').map(|s| s.trim().to_string()).collect();
        let skip = match p.int("skipms") {
            Ok(v) => v.unwrap_or(3000),
            Err(e) => return e,
        };
        let offset = match p.int("offsetms") {
            Ok(v) => v.unwrap_or(0),
            Err(e) => return e,
        };
        if skip < 0 || offset < 0 {
            return R::error(400, "Invalid parameter value");
        }
        let id = sub
            .map(|s| s.to_string())
            .or_else(|| p.nonempty("playbackId"))
            .unwrap_or_else(|| uuid_like(self.next_gen(), self.cfg.wall_clock_base_ms));
        if self.playbacks.contains_key(&id) {
            return R::error(409, "Playback with the given ID already exists");
        }
        let lang = p
            .nonempty("lang")
            .or_else(|| {
                target
                    .strip_prefix("channel:")
                    .and_then(|c| self.channels.get(c))
                    .map(|c| c.language.clone())
            })
            .unwrap_or_else(|| self.cfg.language.clone());
        let mut resp = json!({"id": id, "media_uri": media[0]});
        if let Some(n) = media.get(1) {
            resp["next_media_uri"] = json!(n);
        }
        resp["target_uri"] = json!(target);
        resp["language"] = json!(lang);
        resp["state"] = json!("queued");
        self.start_playback(
            &id,
            target,
            media,
            &lang,
            Duration::from_millis(skip as u64),
        );
        if offset > 0 {
            if let Some(pb) = self.playbacks.get(&id) {
                if pb.state == PbState::Playing {
                    let pos = Duration::from_millis(offset as u64);
                    let len = pb.length;
                    match len {
                        Some(l) if pos >= l => self.media_done(&id),
                        _ => self.pb_seek(&id, pos),
                    }
                }
            }
        }
        R {
            status: 201,
            content_type: "application/json",
            body: resp.to_string().into_bytes(),
        }
    }

    fn r_playbacks(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", [id]) => match self.playbacks.contains_key(*id) {
                true => R::json(200, &self.playback_json(id)),
                false => R::error(404, "Playback not found"),
            },
            ("DELETE", [id]) => {
                if !self.playbacks.contains_key(*id) {
                    return R::error(404, "Playback not found");
                }
                self.finish_playback(id, "done");
                R::no_content()
            }
            ("POST", [id, "control"]) => {
                let Some(op) = p.nonempty("operation") else {
                    return R::error(400, "Missing parameter operation");
                };
                let Some(pb) = self.playbacks.get(*id).cloned() else {
                    return R::error(404, "Playback not found");
                };
                if !["pause", "unpause", "restart", "reverse", "forward", "stop"]
                    .contains(&op.as_str())
                {
                    return R::error(400, "operation: Invalid enum value");
                }
                if pb.state == PbState::Queued {
                    return R::error(409, "Playback not currently playing");
                }
                let pos = self.pb_position(&pb);
                match op.as_str() {
                    "pause" => {
                        if pb.state == PbState::Playing {
                            if let Some(x) = self.playbacks.get_mut(*id) {
                                x.state = PbState::Paused;
                                x.offset = pos;
                                x.gen += 1_000_000;
                            }
                            self.talk_close(id);
                        }
                    }
                    "unpause" => {
                        if pb.state == PbState::Paused {
                            if let Some(x) = self.playbacks.get_mut(*id) {
                                x.state = PbState::Playing;
                            }
                            self.pb_seek(id, pos);
                            self.emit_playback("PlaybackStarted", id, None);
                        }
                    }
                    "restart" => {
                        if let Some(x) = self.playbacks.get_mut(*id) {
                            x.state = PbState::Playing;
                        }
                        self.pb_seek(id, Duration::ZERO);
                    }
                    "reverse" => {
                        let to = pos.saturating_sub(pb.skip);
                        self.pb_seek(id, to);
                    }
                    "forward" => {
                        let to = pos.saturating_add(pb.skip);
                        match pb.length {
                            Some(l) if to >= l => {
                                if pb.state == PbState::Playing {
                                    self.pb_seek(id, l);
                                } else if let Some(x) = self.playbacks.get_mut(*id) {
                                    x.offset = l;
                                }
                            }
                            _ => self.pb_seek(id, to),
                        }
                    }
                    _ => self.finish_playback(id, "done"),
                }
                R::no_content()
            }
            _ => not_found_resource(),
        }
    }

    // -----------------------------------------------------------------------------------
    // recordings
    // -----------------------------------------------------------------------------------

    fn record(&mut self, target: &str, p: &P<'_>) -> R {
        let Some(name) = p.nonempty("name") else {
            return R::error(400, "Recording name is required");
        };
        let Some(format) = p.nonempty("format") else {
            return R::error(400, "Recording format is required");
        };
        let max = match p.int("maxDurationSeconds") {
            Ok(v) => v.unwrap_or(0),
            Err(e) => return e,
        };
        let max_silence = match p.int("maxSilenceSeconds") {
            Ok(v) => v.unwrap_or(0),
            Err(e) => return e,
        };
        if max < 0 || max_silence < 0 {
            return R::error(400, "maxDurationSeconds must be non-negative");
        }
        let beep = match p.bool("beep") {
            Ok(b) => b.unwrap_or(false),
            Err(e) => return e,
        };
        let if_exists = p.get("ifExists").unwrap_or_else(|| "fail".to_string());
        if !["fail", "overwrite", "append"].contains(&if_exists.as_str()) {
            return R::error(400, "ifExists: Invalid enum value");
        }
        let terminate_on = p.get("terminateOn").unwrap_or_else(|| "none".to_string());
        if !self.cfg.recording_formats.contains(&format) {
            return R::error(422, "Format not supported");
        }
        if self.live.contains_key(&name) {
            return R::error(409, "Recording with the same name already in progress");
        }
        if self.stored.contains_key(&name) && if_exists == "fail" {
            return R::error(
                409,
                &format!("Recording '{name}' already exists and can not be overwritten"),
            );
        }
        let busy = match target.split_once(':') {
            Some(("channel", c)) => self
                .channels
                .get(c)
                .is_some_and(|ch| ch.recording.is_some()),
            Some(("bridge", b)) => self.bridges.get(b).is_some_and(|br| br.recording.is_some()),
            _ => false,
        };
        if busy {
            return R::error(409, "Channel is already being recorded");
        }
        let g = self.next_gen();
        self.live.insert(
            name.clone(),
            LiveRec {
                name: name.clone(),
                format: format.clone(),
                target: target.to_string(),
                state: "queued",
                started: self.now,
                accumulated: Duration::ZERO,
                max_duration: (max > 0).then(|| Duration::from_secs(max as u64)),
                max_silence: (max_silence > 0).then(|| Duration::from_secs(max_silence as u64)),
                terminate_on,
                gen: g,
                muted: false,
            },
        );
        match target.split_once(':') {
            Some(("channel", c)) => {
                if let Some(ch) = self.channels.get_mut(c) {
                    ch.recording = Some(name.clone());
                }
            }
            Some(("bridge", b)) => {
                if let Some(br) = self.bridges.get_mut(b) {
                    br.recording = Some(name.clone());
                }
            }
            _ => {}
        }
        let resp = self.live_json(&name);
        let delay = if beep {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(20)
        };
        self.schedule(delay, Timer::RecStart(name.clone(), g));
        R {
            status: 201,
            content_type: "application/json",
            body: resp.to_string().into_bytes(),
        }
    }

    fn r_recordings(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", ["live", name]) => match self.live.contains_key(*name) {
                true => R::json(200, &self.live_json(name)),
                false => R::error(404, "Recording not found"),
            },
            ("DELETE", ["live", name]) => {
                if !self.live.contains_key(*name) {
                    return R::error(404, "Recording not found");
                }
                self.finish_recording(name, "canceled");
                R::no_content()
            }
            ("POST", ["live", name, op]) | ("DELETE", ["live", name, op]) => {
                let Some(r) = self.live.get(*name).cloned() else {
                    return R::error(404, "Recording not found");
                };
                match (m, *op) {
                    ("POST", "stop") => {
                        self.finish_recording(name, "done");
                        R::no_content()
                    }
                    ("POST", "pause") => {
                        if r.state == "recording" {
                            let el = self.rec_elapsed(&r);
                            if let Some(x) = self.live.get_mut(*name) {
                                x.accumulated = el;
                                x.state = "paused";
                                x.gen += 1_000_000;
                            }
                        } else if r.state != "paused" {
                            return R::error(409, "Recording not in session");
                        }
                        R::no_content()
                    }
                    ("DELETE", "pause") => {
                        if r.state == "paused" {
                            let g = self.next_gen();
                            let now = self.now;
                            if let Some(x) = self.live.get_mut(*name) {
                                x.state = "recording";
                                x.started = now;
                                x.gen = g;
                            }
                            if let Some(mx) = r.max_duration {
                                let left = mx.saturating_sub(r.accumulated);
                                self.schedule(left, Timer::RecMax(name.to_string(), g));
                            }
                        } else if r.state != "recording" {
                            return R::error(409, "Recording not in session");
                        }
                        R::no_content()
                    }
                    ("POST", "mute") | ("DELETE", "mute") => {
                        if let Some(x) = self.live.get_mut(*name) {
                            x.muted = m == "POST";
                        }
                        R::no_content()
                    }
                    _ => not_found_resource(),
                }
            }
            ("GET", ["stored"]) => {
                let list: Vec<Value> = self
                    .stored
                    .iter()
                    .map(|(n, r)| json!({"name": n, "format": r.format}))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("GET", ["stored", name]) => match self.stored.get(*name) {
                Some(r) => R::json(200, &json!({"name": name, "format": r.format})),
                None => R::error(404, "Recording not found"),
            },
            ("DELETE", ["stored", name]) => match self.stored.remove(*name) {
                Some(_) => R::no_content(),
                None => R::error(404, "Recording not found"),
            },
            ("GET", ["stored", name, "file"]) => match self.stored.get(*name) {
                Some(r) => R {
                    status: 200,
                    content_type: content_type_for(&r.format),
                    body: audio_bytes(&r.format, r.duration_s),
                },
                None => R::error(404, "Recording not found"),
            },
            ("POST", ["stored", name, "copy"]) => {
                let Some(dest) = p.nonempty("destinationRecordingName") else {
                    return R::error(400, "Missing parameter destinationRecordingName");
                };
                let Some(r) = self.stored.get(*name).cloned() else {
                    return R::error(404, "Recording not found");
                };
                if self.stored.contains_key(&dest) {
                    return R::error(
                        409,
                        "A recording with the same name already exists on the system",
                    );
                }
                let fmt = r.format.clone();
                self.stored.insert(dest.clone(), r);
                R::json(200, &json!({"name": dest, "format": fmt}))
            }
            _ => not_found_resource(),
        }
    }

    // -----------------------------------------------------------------------------------
    // bridges
    // -----------------------------------------------------------------------------------

    fn r_bridges(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
                    .bridge_order
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
            ("GET", [id]) => match self.bridges.contains_key(*id) {
                true => R::json(200, &self.bridge_json(id)),
                false => R::error(404, "Bridge not found"),
            },
            ("POST", [id]) => self.create_bridge(id, p),
            ("DELETE", [id]) => {
                if !self.bridges.contains_key(*id) {
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

    fn create_bridge(&mut self, id: &str, p: &P<'_>) -> R {
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
        if let Some(b) = self.bridges.get(id) {
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
        self.bridges.insert(
            id.to_string(),
            super::Bridge {
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
        self.bridge_order.push(id.to_string());
        for (k, v, rep) in p.vars() {
            if let Some(b) = self.bridges.get_mut(id) {
                b.vars.insert(k.clone(), v);
                if rep {
                    b.reported.insert(k);
                }
            }
        }
        self.bridge_event("BridgeCreated", id, None, json!({}));
        R::json(200, &self.bridge_json(id))
    }

    fn bridge_op(&mut self, m: &str, id: &str, op: &str, sub: Option<&str>, p: &P<'_>) -> R {
        if !self.bridges.contains_key(id) {
            return R::error(404, "Bridge not found");
        }
        match (m, op, sub) {
            ("POST", "addChannel", None) => {
                let Some(list) = p.nonempty("channel") else {
                    return R::error(400, "Missing parameter channel");
                };
                let ids: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
                for c in &ids {
                    let Some(ch) = self.channels.get(c) else {
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
                    let Some(ch) = self.channels.get(c) else {
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
                let empty = self.bridges.get(id).is_some_and(|b| b.channels.is_empty());
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
                if !self.channels.contains_key(c) {
                    return R::error(404, "Channel not found");
                }
                if self
                    .bridges
                    .get(id)
                    .is_some_and(|b| !b.channels.iter().any(|x| x == c))
                {
                    return R::error(422, "Channel not in this bridge");
                }
                let old = self.bridges.get_mut(id).and_then(|b| {
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
                let old = self.bridges.get_mut(id).and_then(|b| {
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
                match self.bridges.get(id).and_then(|b| b.vars.get(&v)) {
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
                if let Some(b) = self.bridges.get_mut(id) {
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
                if let Some(b) = self.bridges.get_mut(id) {
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
                    match self.bridges.get(id).and_then(|b| b.vars.get(n)) {
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

    // -----------------------------------------------------------------------------------
    // sounds, endpoints, device states, user events
    // -----------------------------------------------------------------------------------

    fn r_sounds(&mut self, m: &str, s: &[&str]) -> R {
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

    fn r_endpoints(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
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
                if self.endpoints.contains(&e) {
                    R::json(200, &self.endpoint_json(&e))
                } else {
                    R::error(404, "Endpoint not found")
                }
            }
            ("PUT", [tech, res, "sendMessage"]) => {
                let e = format!("{tech}/{res}");
                if !self.endpoints.contains(&e) {
                    return R::error(404, "Endpoint not found");
                }
                self.send_message(p, Some(&e))
            }
            _ => not_found_resource(),
        }
    }

    fn send_message(&mut self, p: &P<'_>, ep: Option<&str>) -> R {
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

    fn r_device_states(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
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
                    .devices
                    .iter()
                    .map(|(n, st)| json!({"name": n, "state": st}))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("GET", [name]) => match self.devices.get(*name) {
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
                self.devices.insert(name.to_string(), st.clone());
                self.device_state_named(name, &st);
                R::no_content()
            }
            ("DELETE", [name]) => {
                if !name.starts_with("Stasis:") {
                    return R::error(409, "Cannot delete device state of non-Stasis device");
                }
                match self.devices.remove(*name) {
                    Some(_) => R::no_content(),
                    None => R::error(404, "Device not found"),
                }
            }
            _ => not_found_resource(),
        }
    }

    fn r_events(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("POST", ["user", name]) => self.user_event(name, p),
            ("POST", ["claim"]) => {
                let Some(chan) = p.nonempty("channelId") else {
                    return R::error(400, "Missing parameter channelId");
                };
                let Some(app) = p.nonempty("application") else {
                    return R::error(400, "Missing parameter application");
                };
                let Some(c) = self.channels.get(&chan) else {
                    return R::error(404, "Channel not found");
                };
                if !c.broadcast_open {
                    return R::error(409, "Channel has already been claimed");
                }
                if !self.app_is_connected(&app) {
                    return R::error(404, "Application not found");
                }
                if let Some(c) = self.channels.get_mut(&chan) {
                    c.broadcast_open = false;
                }
                let others: Vec<String> = self
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

    fn user_event(&mut self, name: &str, p: &P<'_>) -> R {
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
                        self.channels.contains_key(id).then(|| self.chan_json(id)),
                    ),
                    "bridge" => (
                        "bridge",
                        self.bridges.contains_key(id).then(|| self.bridge_json(id)),
                    ),
                    "endpoint" => (
                        "endpoint",
                        self.endpoints.contains(id).then(|| self.endpoint_json(id)),
                    ),
                    "deviceState" => (
                        "device_state",
                        self.devices
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

fn hangup_cause(p: &P<'_>) -> Result<i64, R> {
    if let Some(code) = p.nonempty("reason_code") {
        return code
            .parse::<i64>()
            .map_err(|_| R::error(400, "Invalid reason for hangup provided"));
    }
    match p.get("reason").as_deref() {
        None | Some("normal") => Ok(16),
        Some("busy") => Ok(17),
        Some("congestion") => Ok(34),
        Some("no_answer") => Ok(19),
        Some("timeout") => Ok(18),
        Some("rejected") => Ok(21),
        Some("unallocated") => Ok(1),
        Some("normal_unspecified") => Ok(31),
        Some("number_incomplete") => Ok(28),
        Some("codec_mismatch") => Ok(58),
        Some("interworking") => Ok(127),
        Some("failure") => Ok(38),
        Some("answered_elsewhere") => Ok(26),
        Some(_) => Err(R::error(400, "Invalid reason for hangup provided")),
    }
}

fn rtp_stats(c: &Channel) -> Value {
    json!({"txcount": 0, "rxcount": 0, "txploss": 0, "rxploss": 0, "remote_maxjitter": 0.0,
           "remote_minjitter": 0.0, "remote_normdevjitter": 0.0, "remote_stdevjitter": 0.0,
           "local_maxjitter": 0.0, "local_minjitter": 0.0, "local_normdevjitter": 0.0,
           "local_stdevjitter": 0.0, "txjitter": 0.0, "rxjitter": 0.0, "rtt": 0.0,
           "maxrtt": 0.0, "minrtt": 0.0, "normdevrtt": 0.0, "stdevrtt": 0.0,
           "local_ssrc": 1, "remote_ssrc": 2, "txoctetcount": 0, "rxoctetcount": 0,
           "channel_uniqueid": c.id})
}

fn content_type_for(format: &str) -> &'static str {
    match format {
        "wav" | "wav49" => "audio/wav",
        "gsm" => "audio/x-gsm",
        "ulaw" => "audio/basic",
        "alaw" => "audio/x-alaw-basic",
        "g722" => "audio/G722",
        _ => "application/octet-stream",
    }
}

/// A valid file of `secs` seconds of silence (8 kHz, 16-bit mono WAV for `wav`).
fn audio_bytes(format: &str, secs: u64) -> Vec<u8> {
    let data_len = (secs.min(600) * 16_000) as u32;
    if format != "wav" {
        return vec![0u8; data_len as usize / 2];
    }
    let mut v = Vec::with_capacity(44 + data_len as usize);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&16000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    v.resize(44 + data_len as usize, 0);
    v
}

/// A UUID-shaped id, deterministic from a counter (Asterisk generates UUIDs).
pub(super) fn uuid_like(n: u64, seed: u64) -> String {
    let a = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(n.wrapping_mul(1_442_695_040_888_963_407));
    let b = a.rotate_left(17) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        (b >> 52) as u16 & 0xfff,
        b & 0xffff_ffff_ffff
    )
}
