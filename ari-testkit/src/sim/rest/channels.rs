//! `/channels`: originate, create, external media, per-channel operations, dial, snoop.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // channels
    // -----------------------------------------------------------------------------------

    pub(super) fn r_channels(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", []) => {
                let list: Vec<Value> = self
                    .channels
                    .order
                    .iter()
                    .map(|id| self.chan_json(id))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("POST", []) => self.originate(None, p),
            ("POST", ["create"]) => self.create(p),
            ("POST", ["externalMedia"]) => self.external_media(p),
            ("GET", [id]) => match self.channels.by_id.contains_key(*id) {
                true => R::json(200, &self.chan_json(id)),
                false => R::error(404, "Channel not found"),
            },
            ("POST", [id]) => self.originate(Some(id), p),
            ("DELETE", [id]) => {
                if !self.channels.by_id.contains_key(*id) {
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

    pub(super) fn new_ids(
        &mut self,
        p: &P<'_>,
        path_id: Option<&str>,
    ) -> Result<(String, String), R> {
        if self.channels.by_id.len() >= self.cfg.max_channels {
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
        if self.channels.by_id.contains_key(&id1)
            || self.channels.by_id.contains_key(&id2)
            || id1 == id2
        {
            return Err(R::error(409, "Channel with given unique ID already exists"));
        }
        Ok((id1, id2))
    }

    pub(super) fn originate(&mut self, path_id: Option<&str>, p: &P<'_>) -> R {
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
        let caller = p
            .nonempty("callerId")
            .map(|c| crate::sim::parse_callerid(&c));
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
                    .and_then(|o| self.channels.by_id.get(&o).map(|c| c.linkedid.clone()));
                if let Some(l) = linked {
                    for id in [&id1, &id2] {
                        if let Some(c) = self.channels.by_id.get_mut(id.as_str()) {
                            c.linkedid = l.clone();
                        }
                    }
                }
                if let Some(c) = self.channels.by_id.get_mut(&id1) {
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
                    if let Some(ap) = self.routing.apps.get_mut(a) {
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
                    if let Some(ap) = self.routing.apps.get_mut(a) {
                        ap.channels.insert(id1.clone());
                    }
                }
                self.apply_caller_and_vars(&id1, caller.as_ref(), &vars, true);
                let resp = self.chan_json(&id1);
                self.emit_dial(&id1, "");
                if let Some(c) = self.channels.by_id.get_mut(&id1) {
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
    pub(in crate::sim) fn apply_caller_and_vars(
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

    pub(super) fn apply_vars(&mut self, id: &str, vars: &[(String, String, bool)]) {
        for (k, v, rep) in vars {
            if k.starts_with("CALLERID(") {
                continue;
            }
            if let Some(c) = self.channels.by_id.get_mut(id) {
                if *rep {
                    c.reported.insert(k.clone());
                }
                c.vars.insert(k.clone(), v.clone());
            }
            self.emit_varset(Some(id), k, v);
        }
    }

    pub(super) fn apply_caller(
        &mut self,
        id: &str,
        caller: Option<&(String, String)>,
        vars: &[(String, String, bool)],
    ) {
        let mut cid_var = false;
        if let Some((n, num)) = caller {
            if let Some(c) = self.channels.by_id.get_mut(id) {
                c.caller = (n.clone(), num.clone());
            }
        }
        for (k, v, _) in vars {
            if let Some(c) = self.channels.by_id.get_mut(id) {
                match k.as_str() {
                    "CALLERID(name)" => c.caller.0 = v.clone(),
                    "CALLERID(num)" | "CALLERID(number)" => c.caller.1 = v.clone(),
                    "CALLERID(all)" => c.caller = crate::sim::parse_callerid(v),
                    _ => continue,
                }
                cid_var = true;
            }
        }
        if caller.is_some() || cid_var {
            if let Some(c) = self.channels.by_id.get_mut(id) {
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

    pub(super) fn create(&mut self, p: &P<'_>) -> R {
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
        if let Some(c) = self.channels.by_id.get_mut(&id1) {
            c.created_only = true;
        }
        if let Some(ap) = self.routing.apps.get_mut(&app) {
            ap.channels.insert(id1.clone());
        }
        if let Some(o) =
            originator.and_then(|o| self.channels.by_id.get(&o).map(|c| c.linkedid.clone()))
        {
            for id in [&id1, &id2] {
                if let Some(c) = self.channels.by_id.get_mut(id.as_str()) {
                    c.linkedid = o.clone();
                }
            }
        }
        for (k, v, rep) in &vars {
            if *rep {
                if let Some(c) = self.channels.by_id.get_mut(&id1) {
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

    pub(super) fn external_media(&mut self, p: &P<'_>) -> R {
        if p.nonempty("transport").as_deref() == Some("websocket") {
            return self.external_media_websocket(super::super::media_ws::WsRequest {
                app: p.nonempty("app"),
                encapsulation: p.nonempty("encapsulation"),
                connection_type: p.nonempty("connection_type"),
                external_host: p.nonempty("external_host"),
                format: p.nonempty("format"),
                channel_id: p.nonempty("channelId"),
                transport_data: p.nonempty("transport_data"),
                direction: p.nonempty("direction"),
                data: p.nonempty("data"),
                vars: p.vars(),
            });
        }
        // Other transports: Asterisk's checks, in its order (res/ari/resource_channels.c).
        let Some(app) = p.nonempty("app") else {
            return R::error(400, "app cannot be empty");
        };
        let Some(format) = p.nonempty("format") else {
            return R::error(400, "format cannot be empty");
        };
        let enc = p
            .nonempty("encapsulation")
            .unwrap_or_else(|| "rtp".to_string());
        let transport = p.nonempty("transport").unwrap_or_else(|| "udp".to_string());
        let direction = p
            .nonempty("direction")
            .unwrap_or_else(|| "both".to_string());
        if !["both", "in", "out"].contains(&direction.as_str()) {
            return R::error(400, "Invalid direction specified");
        }
        match (enc.as_str(), transport.as_str()) {
            ("rtp", "udp") | ("audiosocket", "tcp") => {}
            _ => return R::error(501, "The encapsulation and/or transport is not supported"),
        }
        let Some(host) = p.nonempty("external_host") else {
            return R::error(400, "external_host is required");
        };
        if enc == "audiosocket" && p.nonempty("data").is_none() {
            return R::error(400, "data can not be empty");
        }
        if !["ulaw", "alaw", "slin", "slin16", "g722", "gsm", "opus"].contains(&format.as_str()) {
            return R::error(400, "format not found");
        }
        if !host.contains(':') {
            return R::error(400, "external_host must be <host>:<port>");
        }
        let id = p.nonempty("channelId").unwrap_or_else(|| self.next_uid());
        if self.channels.by_id.contains_key(&id) {
            return R::error(409, "Channel with given unique ID already exists");
        }
        self.ids.local_seq += 1;
        let audiosocket = (enc == "audiosocket").then(|| p.nonempty("data").unwrap_or_default());
        let name = match &audiosocket {
            Some(uuid) => format!("AudioSocket/{host}-{uuid}"),
            None => format!("UnicastRTP/{host}-0x7f77f80{:05x}", self.ids.local_seq),
        };
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
            format!("{}", 10000 + self.ids.local_seq * 2),
        );
        self.insert_channel(c);
        self.emit_created(&id);
        let vars = p.vars();
        self.apply_caller_and_vars(&id, None, &vars, false);
        let port = format!("{}", 10000 + self.ids.local_seq * 2);
        self.emit_varset(Some(&id), "UNICASTRTP_LOCAL_ADDRESS", "127.0.0.1");
        self.emit_varset(Some(&id), "UNICASTRTP_LOCAL_PORT", &port);
        self.emit_dialplan(&id);
        if let Some(ap) = self.routing.apps.get_mut(&app) {
            ap.channels.insert(id.clone());
        }
        let mut resp = self.chan_json(&id);
        resp["channelvars"] =
            json!({"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": port});
        let mut args = Vec::new();
        if let Some(uuid) = audiosocket {
            // Asterisk connects to the application over TCP (see sim::media_ws).
            resp["channelvars"] = json!({"AUDIOSOCKET_SERVICE": host, "AUDIOSOCKET_UUID": uuid});
            self.audiosocket_created(&id, &host, &uuid);
            args.push(uuid);
        }
        self.emit_dial(&id, "");
        if let Some(c) = self.channels.by_id.get_mut(&id) {
            c.state = "Up";
            c.on_answer = OnAnswer::Stasis(app.clone(), args);
        }
        self.emit_state(&id);
        self.dial_answered(&id);
        R::json(200, &resp)
    }

    /// Checks the channel exists and is controllable (in Stasis, not a created-only channel).
    pub(super) fn control(&self, id: &str) -> Result<&Channel, R> {
        let Some(c) = self.channels.by_id.get(id) else {
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

    pub(super) fn channel_op(
        &mut self,
        m: &str,
        id: &str,
        op: &str,
        sub: Option<&str>,
        p: &P<'_>,
    ) -> R {
        if id.is_empty() {
            return R::error(400, "Channel ID must be specified");
        }
        match (m, op, sub) {
            ("GET", "variable", None) => {
                let Some(c) = self.channels.by_id.get(id) else {
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
                if !self.channels.by_id.contains_key(id) {
                    return R::error(404, "Channel not found");
                }
                let Some(v) = p.nonempty("variable") else {
                    return R::error(400, "Variable name is required");
                };
                let val = p.get("value").unwrap_or_default();
                if p.bool("report_events").ok().flatten() == Some(true) {
                    if let Some(c) = self.channels.by_id.get_mut(id) {
                        c.reported.insert(v.clone());
                    }
                }
                self.set_chan_var(id, &v, &val);
                R::no_content()
            }
            ("POST", "variables", None) => {
                if !self.channels.by_id.contains_key(id) {
                    return R::error(404, "Channel not found");
                }
                let vars = p.vars();
                if vars.is_empty() {
                    return R::error(400, "Variables are required");
                }
                for (k, v, rep) in vars {
                    if rep {
                        if let Some(c) = self.channels.by_id.get_mut(id) {
                            c.reported.insert(k.clone());
                        }
                    }
                    self.set_chan_var(id, &k, &v);
                }
                R::no_content()
            }
            ("GET", "variables", None) => {
                let Some(c) = self.channels.by_id.get(id) else {
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
            ("GET", "rtp_statistics", None) => match self.channels.by_id.get(id) {
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
                let args = p.move_app_args();
                if !self.app_is_connected(&app) {
                    // Accepted, but the channel stays where it is; its application hears
                    // about it.
                    let cur = self
                        .channels
                        .by_id
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
                self.move_to_stasis(id, &app, args);
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
                if !self.system.endpoints.contains(&format!("{tech}/{res}")) {
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
                if let Some(peer) = self.channels.by_id.get(id).and_then(|c| c.peer.clone()) {
                    let mut at = before.saturating_add(dur);
                    for d in digits.chars().filter(|c| crate::sim::is_dtmf(*c)) {
                        self.schedule(Duration::from_millis(at), Timer::Dtmf(peer.clone(), d, dur));
                        at = at.saturating_add(dur.saturating_add(between));
                    }
                }
                R::no_content()
            }
            ("POST", "transfer_progress", None) => {
                if let Err(e) = self.control(id) {
                    return e;
                }
                // Asterisk indicates the transfer's state to the channel (a REFER's NOTIFY);
                // nothing shows on ARI. (`channel_unavailable`: the transfer target could not
                // be reached, a final state like `channel_declined`.)
                const STATES: [&str; 4] = [
                    "channel_answered",
                    "channel_progress",
                    "channel_declined",
                    "channel_unavailable",
                ];
                match p.nonempty("states") {
                    None => R::error(400, "states must not be empty"),
                    Some(s) if STATES.iter().any(|v| v.eq_ignore_ascii_case(&s)) => R::no_content(),
                    Some(_) => R::error(400, "Invalid states value"),
                }
            }
            // Early media (`progress`): indicated to the caller, no state change on ARI.
            ("POST", "progress", None)
            | ("POST", "ring", None)
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
                if op == "hold"
                    && self
                        .channels
                        .by_id
                        .get(id)
                        .is_some_and(|c| c.hold_intercept)
                {
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
                        .by_id
                        .get(id)
                        .is_some_and(|c| c.state != "Up" && c.state != "Ringing");
                    if ringing {
                        if let Some(c) = self.channels.by_id.get_mut(id) {
                            c.state = "Ringing";
                        }
                        self.emit_state(id);
                    }
                }
                R::no_content()
            }
            ("POST", "externalMedia", None) => not_found_resource(),
            _ => {
                if self.channels.by_id.contains_key(id) {
                    method_not_allowed()
                } else {
                    not_found_resource()
                }
            }
        }
    }

    pub(super) fn dial(&mut self, id: &str, p: &P<'_>) -> R {
        let Some(c) = self.channels.by_id.get(id) else {
            return R::error(404, "Channel not found");
        };
        if c.stasis.is_none() {
            return R::error(409, "Channel not in Stasis application");
        }
        if !c.created_only {
            return R::error(409, "Channel is not in the 'Down' state");
        }
        if let Some(caller) = p.nonempty("caller") {
            if !self.channels.by_id.contains_key(&caller) {
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
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.dialed_by = caller;
        }
        if let Some(t) = timeout.filter(|t| *t > 0) {
            self.schedule(
                Duration::from_secs(t as u64),
                Timer::DialTimeout(id.to_string()),
            );
        }
        if let Some(c) = self.channels.by_id.get_mut(id) {
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
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    c.dialing = ds;
                }
                self.emit_dial(id, "");
                if let Some(c) = self.channels.by_id.get_mut(id) {
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

    pub(super) fn continue_in_dialplan(&mut self, id: &str, p: &P<'_>) -> R {
        let (cur_ctx, cur_ext, cur_prio) = match self.channels.by_id.get(id) {
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
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.context = ctx;
            c.exten = ext;
            c.priority = prio;
            c.exec = Exec::Idle;
            c.exec_gen += 1;
        }
        let g = self.channels.by_id.get(id).map(|c| c.exec_gen).unwrap_or(0);
        // Re-enter the dialplan at exactly that priority (the timer advances first).
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.priority -= 1;
        }
        self.schedule(Duration::ZERO, Timer::Dialplan(id.to_string(), g));
        R::no_content()
    }

    pub(super) fn snoop(&mut self, id: &str, sub: Option<&str>, p: &P<'_>) -> R {
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
        if !self.channels.by_id.contains_key(id) {
            return R::error(404, "Provided channel was not found");
        }
        let sid = sub
            .map(|s| s.to_string())
            .or_else(|| p.nonempty("snoopId"))
            .unwrap_or_else(|| self.next_uid());
        if self.channels.by_id.contains_key(&sid) {
            return R::error(409, "Channel with given unique ID already exists");
        }
        let args = p.app_args();
        let name = format!("Snoop/{id}-{:08x}", self.ids.snoop_seq);
        self.ids.snoop_seq += 1;
        let mut c = self.new_channel(&sid, &name, Tech::Snoop, "Up");
        c.snoop_target = Some(id.to_string());
        self.insert_channel(c);
        if let Some(t) = self.channels.by_id.get_mut(id) {
            t.snoops.push(sid.clone());
        }
        self.emit_created(&sid);
        let resp = self.chan_json(&sid);
        self.announce_stasis(&sid, &app, &args);
        self.enter_stasis(&sid, &app, args);
        R::json(200, &resp)
    }
}
