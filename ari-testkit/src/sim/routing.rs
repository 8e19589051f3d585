//! Event emission and routing to applications (subscriptions, filters).

use super::*;

/// Registered applications and the events produced, addressed, not yet drained.
#[derive(Debug, Default)]
pub(super) struct Routing {
    pub(super) apps: BTreeMap<String, App>,
    pub(super) out: Vec<Outgoing>,
    /// Applications served by per-call outbound connections (see `outbound.rs`).
    pub(super) per_call_apps: BTreeSet<String>,
}

impl Sim {
    // -----------------------------------------------------------------------------------
    // Event emission and routing
    // -----------------------------------------------------------------------------------

    pub(super) fn event(&self, ty: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".to_string(), json!(ty));
        m.insert("timestamp".to_string(), json!(self.ts()));
        m
    }

    /// Emits `ev` (type + fields) to every application subscribed to one of `res`, and
    /// to every `subscribeAll` application.
    pub(super) fn emit(&mut self, mut ev: Map<String, Value>, res: &[Res]) {
        ev.insert("asterisk_id".to_string(), json!(self.cfg.asterisk_id));
        let targets: Vec<String> = self
            .routing
            .apps
            .iter()
            .filter(|(name, a)| a.connected && (a.subscribe_all || self.app_sees(name, a, res)))
            .map(|(n, _)| n.clone())
            .collect();
        for t in targets {
            self.deliver(&t, ev.clone());
        }
    }

    /// Delivers one event to one application, through its event filter.
    pub(super) fn deliver(&mut self, app: &str, mut ev: Map<String, Value>) {
        let Some(a) = self.routing.apps.get(app) else {
            return;
        };
        if !a.connected {
            return;
        }
        ev.insert("application".to_string(), json!(app));
        if !ev.contains_key("asterisk_id") {
            ev.insert("asterisk_id".to_string(), json!(self.cfg.asterisk_id));
        }
        let v = Value::Object(ev);
        let matches = |f: &Value| filter_matches(f, &v);
        if !a.allowed.is_empty() && !a.allowed.iter().any(matches) {
            return;
        }
        if a.disallowed.iter().any(matches) {
            return;
        }
        self.routing.out.push(Outgoing {
            app: app.to_string(),
            event: v,
        });
    }

    pub(super) fn app_sees(&self, name: &str, a: &App, res: &[Res]) -> bool {
        res.iter().any(|r| match r {
            Res::Chan(id) => {
                a.all_kinds.contains("channel")
                    || a.channels.contains(id)
                    || self.channels.by_id.get(id).is_some_and(|c| {
                        c.stasis.as_ref().is_some_and(|(s, _)| s == name)
                            || c.endpoint.as_ref().is_some_and(|e| a.endpoints.contains(e))
                    })
            }
            Res::Bridge(id) => {
                a.all_kinds.contains("bridge")
                    || a.bridges.contains(id)
                    || a.bridge_refs.get(id).is_some_and(|n| *n > 0)
            }
            Res::Device(d) => a.all_kinds.contains("deviceState") || a.devices.contains(d),
        })
    }

    pub(super) fn chan_event(&mut self, ty: &str, id: &str, extra: Value) {
        let mut ev = self.event(ty);
        if let Value::Object(m) = extra {
            ev.extend(m);
        }
        ev.insert("channel".to_string(), self.chan_json(id));
        self.emit(ev, &[Res::Chan(id.to_string())]);
    }

    pub(super) fn emit_created(&mut self, id: &str) {
        self.chan_event("ChannelCreated", id, json!({}));
    }

    pub(super) fn emit_dialplan(&mut self, id: &str) {
        let (app, data) = match self.channels.by_id.get(id) {
            Some(c) => (c.app_name.clone(), c.app_data.clone()),
            None => return,
        };
        self.chan_event(
            "ChannelDialplan",
            id,
            json!({"dialplan_app": app, "dialplan_app_data": data}),
        );
    }

    pub(super) fn emit_state(&mut self, id: &str) {
        self.chan_event("ChannelStateChange", id, json!({}));
    }

    pub(super) fn emit_varset(&mut self, id: Option<&str>, var: &str, value: &str) {
        match id {
            Some(id) => self.chan_event(
                "ChannelVarset",
                id,
                json!({"variable": var, "value": value}),
            ),
            None => {
                let mut ev = self.event("ChannelVarset");
                ev.insert("variable".to_string(), json!(var));
                ev.insert("value".to_string(), json!(value));
                self.emit(ev, &[]);
            }
        }
    }
}
