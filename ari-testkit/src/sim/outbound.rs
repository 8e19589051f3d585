//! ARI outbound WebSocket, per-call connections (`connection_type = per_call_config`): the
//! simulator's half. A channel entering `Stasis(<app>)` for an application listed in a
//! per-call outbound configuration, with no application of that name registered, gets a
//! temporary application named `<app>:<channel name>`, registered at once (its first event
//! is `ApplicationRegistered`); the server opens the connection for it (see
//! `crate::outbound`). The ~500 ms Asterisk waits before StasisStart is the server's.

use super::*;

impl Sim {
    /// The applications served by per-call outbound connections (`apps` of an
    /// `outbound_websocket` whose client has `connection_type = per_call_config`).
    pub fn set_per_call_apps<S: AsRef<str>>(&mut self, apps: &[S]) {
        self.routing.per_call_apps = apps.iter().map(|a| a.as_ref().to_string()).collect();
    }

    /// The application a channel entering `Stasis(app)` goes to: `app` itself, or for a
    /// per-call application not registered otherwise, `<app>:<channel name>`, registered
    /// now with its `ApplicationRegistered` as first event.
    pub(super) fn stasis_target(&mut self, id: &str, app: &str) -> String {
        let registered = self.routing.apps.get(app).is_some_and(|a| a.connected);
        if registered || !self.routing.per_call_apps.contains(app) {
            return app.to_string();
        }
        let Some(name) = self.channels.by_id.get(id).map(|c| c.name.clone()) else {
            return app.to_string();
        };
        let per_call = format!("{app}:{name}");
        let a = self.routing.apps.entry(per_call.clone()).or_default();
        a.connected = true;
        let ev = self.event("ApplicationRegistered");
        self.deliver(&per_call, ev);
        per_call
    }

    /// The per-call connection of `app` (`<app>:<channel name>`) could not be made within
    /// the configured attempts: as in Asterisk, the channel leaves Stasis marked failed
    /// (`STASISSTATUS=FAILED`); the simulated dialplan then hangs it up.
    pub fn per_call_failed(&mut self, now: Duration, app: &str) {
        self.advance(now);
        let ids: Vec<String> = self
            .channels
            .by_id
            .iter()
            .filter(|(_, c)| c.stasis.as_ref().is_some_and(|(a, _)| a == app))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(c) = self.channels.by_id.get_mut(&id) {
                c.stasis = None;
                c.vars
                    .insert("STASISSTATUS".to_string(), "FAILED".to_string());
            }
            self.remote_hangup(&id, 16);
        }
        self.routing.apps.remove(app);
    }
}
