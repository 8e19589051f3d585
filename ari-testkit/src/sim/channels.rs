//! Channel lifecycle: creation, Local pairs, answer, Stasis, hangup and destruction.

use super::*;

/// The channels that exist.
#[derive(Debug, Default)]
pub(super) struct Channels {
    pub(super) by_id: BTreeMap<String, Channel>,
    /// Channels in creation order (GET channels lists in this order).
    pub(super) order: Vec<String>,
}

impl Sim {
    // -----------------------------------------------------------------------------------
    // Channels
    // -----------------------------------------------------------------------------------

    pub(super) fn new_channel(
        &self,
        id: &str,
        name: &str,
        tech: Tech,
        state: &'static str,
    ) -> Channel {
        Channel {
            id: id.to_string(),
            name: name.to_string(),
            tech,
            state,
            protocol_id: String::new(),
            caller: (String::new(), String::new()),
            connected: (String::new(), String::new()),
            accountcode: String::new(),
            language: self.cfg.language.clone(),
            context: "default".to_string(),
            exten: "s".to_string(),
            priority: 1,
            app_name: String::new(),
            app_data: String::new(),
            base_app: (String::new(), String::new()),
            creation_ms: self.wall_ms(),
            vars: BTreeMap::new(),
            reported: BTreeSet::new(),
            linkedid: id.to_string(),
            peeraccount: String::new(),
            hold_intercept: false,
            ran_pbx: false,
            broadcast_open: false,
            dialed_by: None,
            hangup_after_bridge: false,
            stasis: None,
            bridge: None,
            peer: None,
            endpoint: None,
            exec: Exec::Idle,
            exec_gen: 0,
            on_answer: OnAnswer::Nothing,
            created_only: false,
            dialing: None,
            script: None,
            playbacks: VecDeque::new(),
            recording: None,
            snoops: Vec::new(),
            snoop_target: None,
            hanging_up: false,
        }
    }

    /// A channel of the simulated SIP phone `endpoint` (`PJSIP/alice`), which becomes known.
    pub(super) fn new_sip_channel(
        &mut self,
        id: &str,
        endpoint: &str,
        state: &'static str,
    ) -> Channel {
        self.system.endpoints.insert(endpoint.to_string());
        self.ids.local_seq += 1;
        let name = format!("{endpoint}-{:08x}", self.ids.local_seq);
        let mut c = self.new_channel(id, &name, Tech::Sip, state);
        c.endpoint = Some(endpoint.to_string());
        c.protocol_id = format!(
            "{:016x}@127.0.0.1",
            self.ids.local_seq.wrapping_mul(0x9e37_79b9)
        );
        c
    }

    /// The channel's dialplan location becomes `Stasis(app,args…)` (ChannelDialplan).
    pub(super) fn announce_stasis(&mut self, id: &str, app: &str, args: &[String]) {
        self.set_dialplan_app(id, "Stasis", &stasis_app_data(app, args));
        self.emit_dialplan(id);
    }

    pub(super) fn insert_channel(&mut self, c: Channel) {
        self.channels.order.push(c.id.clone());
        self.channels.by_id.insert(c.id.clone(), c);
    }

    pub(super) fn set_dialplan_app(&mut self, id: &str, app: &str, data: &str) {
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.app_name = app.to_string();
            c.app_data = data.to_string();
        }
    }

    /// Creates both halves of `Local/exten@ctx` (not yet announced).
    pub(super) fn make_local_pair(
        &mut self,
        id1: &str,
        id2: &str,
        exten: &str,
        ctx: &str,
        _app: Option<&str>,
    ) {
        self.ids.local_seq += 1;
        let base = format!("Local/{exten}@{ctx}-{:08x}", self.ids.local_seq);
        let mut c1 = self.new_channel(id1, &format!("{base};1"), Tech::Local(1), "Down");
        let mut c2 = self.new_channel(id2, &format!("{base};2"), Tech::Local(2), "Ring");
        for c in [&mut c1, &mut c2] {
            c.context = ctx.to_string();
            c.exten = exten.to_string();
        }
        c1.peer = Some(id2.to_string());
        c2.peer = Some(id1.to_string());
        c2.linkedid = id1.to_string();
        c1.endpoint = Some(format!("Local/{exten}@{ctx}"));
        self.insert_channel(c1);
        self.insert_channel(c2);
    }

    /// The `;2` half starts its dialplan; the `;1` half is being dialed.
    pub(super) fn local_start(&mut self, id1: &str) {
        let Some(id2) = self.channels.by_id.get(id1).and_then(|c| c.peer.clone()) else {
            return;
        };
        let (ctx, exten) = match self.channels.by_id.get(&id2) {
            Some(c) => (c.context.clone(), c.exten.clone()),
            None => return,
        };
        let dialstring = format!("{exten}@{ctx}");
        let exists = self.dialplan.resolve_exten(&ctx, &exten).is_some();
        if exists || self.cfg.unknown_extension_answers {
            if let Some(c) = self.channels.by_id.get_mut(id1) {
                c.dialing = Some(dialstring.clone());
            }
            self.emit_dial(id1, "");
        }
        if exists {
            if let Some(c) = self.channels.by_id.get_mut(&id2) {
                c.priority = 1;
            }
            self.run_dialplan(&id2);
        } else if self.cfg.unknown_extension_answers {
            // A Local channel into an unknown context answers and stays up.
            self.set_dialplan_app(&id2, "Answer", "");
            self.emit_dialplan(&id2);
            self.answer(&id2);
            if self.channels.by_id.contains_key(&id2) {
                self.set_dialplan_app(&id2, "Wait", "");
                if let Some(c) = self.channels.by_id.get_mut(&id2) {
                    c.exec = Exec::Parked;
                }
            }
        } else {
            // Real Asterisk: no such extension, the pair is torn down and the Local device
            // reads INVALID. A created channel waiting in Stasis leaves it first and is
            // destroyed with cause 16; an originated one goes with cause 0.
            let device = format!("Local/{exten}@{ctx}");
            let in_stasis = self
                .channels
                .by_id
                .get(id1)
                .is_some_and(|c| c.stasis.is_some());
            if in_stasis {
                // the failed half inherits the Stasis variables before it goes
                self.emit_varset(Some(&id2), "STASISSTATUS", "");
                self.leave_stasis(id1);
                self.destroy_quiet(&id2, 0);
                self.destroy_quiet(id1, 16);
                self.device_state_named(&device, "INVALID");
                self.device_state_named(&device, "INVALID");
            } else {
                self.destroy_quiet(&id2, 0);
                self.device_state_named(&device, "INVALID");
                self.destroy_quiet(id1, 0);
                self.device_state_named(&device, "INVALID");
            }
        }
    }

    /// Ids of the channels in bridge `b` (none if it does not exist).
    pub(super) fn members(&self, b: &str) -> Vec<String> {
        self.bridges
            .by_id
            .get(b)
            .map(|br| br.channels.clone())
            .unwrap_or_default()
    }

    pub(super) fn device_state_named(&mut self, name: &str, state: &str) {
        let mut ev = self.event("DeviceStateChanged");
        ev.insert(
            "device_state".to_string(),
            json!({"name": name, "state": state}),
        );
        self.emit(ev, &[Res::Device(name.to_string())]);
    }

    pub(super) fn emit_dial(&mut self, peer: &str, status: &str) {
        let Some(ds) = self
            .channels
            .by_id
            .get(peer)
            .and_then(|c| c.dialing.clone())
        else {
            return;
        };
        let caller = self
            .channels
            .by_id
            .get(peer)
            .and_then(|c| c.dialed_by.clone())
            .filter(|c| self.channels.by_id.contains_key(c));
        let mut ev = self.event("Dial");
        ev.insert("dialstatus".to_string(), json!(status));
        ev.insert("forward".to_string(), json!(""));
        ev.insert("dialstring".to_string(), json!(ds));
        let mut res = vec![Res::Chan(peer.to_string())];
        if let Some(c) = caller {
            ev.insert("caller".to_string(), self.chan_json(&c));
            res.push(Res::Chan(c));
        }
        ev.insert("peer".to_string(), self.chan_json(peer));
        self.emit(ev, &res);
    }

    /// Answers a channel (and, for Local channels, its other half).
    pub(super) fn answer(&mut self, id: &str) {
        let Some(c) = self.channels.by_id.get_mut(id) else {
            return;
        };
        if c.state == "Up" {
            return;
        }
        c.state = "Up";
        let peer = c.peer.clone();
        let script = c.script.clone();
        let is_sip_dialed = c.tech == Tech::Sip && c.dialing.is_some();
        self.emit_state(id);
        self.device_state_for(id, "INUSE");
        if is_sip_dialed {
            self.dial_answered(id);
        }
        if let Some(s) = script {
            self.start_script(id, &s);
        }
        if let Some(p) = peer {
            let needs = self.channels.by_id.get(&p).is_some_and(|c| c.state != "Up");
            if needs {
                if let Some(c) = self.channels.by_id.get_mut(&p) {
                    c.state = "Up";
                }
                self.emit_state(&p);
                self.device_state_for(&p, "INUSE");
                self.dial_answered(&p);
            }
        }
    }

    /// The far end of a dialed channel answered: Dial ANSWER and what comes next.
    pub(super) fn dial_answered(&mut self, id: &str) {
        let dialing = self.channels.by_id.get(id).and_then(|c| c.dialing.clone());
        if dialing.is_none() {
            return;
        }
        self.emit_dial(id, "ANSWER");
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.dialing = None;
        }
        let on = self
            .channels
            .by_id
            .get_mut(id)
            .map(|c| std::mem::replace(&mut c.on_answer, OnAnswer::Nothing))
            .unwrap_or(OnAnswer::Nothing);
        match on {
            OnAnswer::Nothing => {}
            OnAnswer::Stasis(app, args) => self.enter_stasis(id, &app, args),
            OnAnswer::Dialplan(ctx, exten, prio) => {
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    c.context = ctx;
                    c.exten = exten;
                    c.priority = prio;
                }
                self.run_dialplan(id);
            }
            OnAnswer::BridgeWith(caller) => {
                if !self.channels.by_id.contains_key(&caller) {
                    return;
                }
                if let Some(c) = self.channels.by_id.get_mut(&caller) {
                    c.vars
                        .insert("DIALSTATUS".to_string(), "ANSWER".to_string());
                }
                self.answer(&caller);
                self.basic_bridge(&[id.to_string(), caller], "Dial");
            }
        }
    }

    pub(super) fn start_script(&mut self, id: &str, s: &Script) {
        let mut at = s.dtmf_delay;
        for d in s.dtmf.chars().filter(|c| is_dtmf(*c)) {
            self.schedule(
                at,
                Timer::Dtmf(id.to_string(), d, self.cfg.dtmf_duration_ms),
            );
            at = at.saturating_add(s.dtmf_interval);
        }
        if let Some(h) = s.hangup_after_answer {
            self.schedule(h, Timer::CallerHangup(id.to_string()));
        }
    }

    /// Puts a channel into Stasis(app, args): STASISSTATUS, StasisStart.
    pub(super) fn enter_stasis(&mut self, id: &str, app: &str, args: Vec<String>) {
        self.enter_stasis_as(id, app, args, true);
    }

    /// A channel moved to `app` (`POST channels/{id}/move`): StasisStart for `app`, but
    /// the channel runs the same dialplan application as before, `Stasis()` with the first
    /// application's name (Asterisk moves it inside that `Stasis()`, no dialplan
    /// application runs: its `dialplan.app_data` still names the first application).
    pub(super) fn move_to_stasis(&mut self, id: &str, app: &str, args: Vec<String>) {
        self.enter_stasis_as(id, app, args, false);
    }

    fn enter_stasis_as(&mut self, id: &str, app: &str, args: Vec<String>, runs_stasis: bool) {
        let app = &self.stasis_target(id, app);
        let active = self.routing.apps.get(app).is_some_and(|a| a.connected);
        if !self.channels.by_id.contains_key(id) {
            return;
        }
        if runs_stasis {
            self.set_dialplan_app(id, "Stasis", &stasis_app_data(app, &args));
        }
        if !active {
            // Stasis() fails for an unregistered application and the dialplan goes on.
            if let Some(c) = self.channels.by_id.get_mut(id) {
                c.vars
                    .insert("STASISSTATUS".to_string(), "FAILED".to_string());
            }
            self.emit_varset(Some(id), "STASISSTATUS", "FAILED");
            let in_dialplan = self.channels.by_id.get(id).is_some_and(|c| {
                self.dialplan
                    .find(&c.context, &c.exten, c.priority)
                    .is_some()
            });
            if in_dialplan {
                self.advance_priority(id);
                self.run_dialplan(id);
            } else {
                self.remote_hangup(id, 16);
            }
            return;
        }
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.vars.insert("STASISSTATUS".to_string(), String::new());
        }
        self.emit_varset(Some(id), "STASISSTATUS", "");
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.stasis = Some((app.to_string(), args.clone()));
            c.exec = Exec::InStasis;
            c.exec_gen += 1;
        }
        // StasisStart/StasisEnd go to the application itself only (app_send), never to
        // other subscribers or subscribeAll connections.
        let mut ev = self.event("StasisStart");
        ev.insert("args".to_string(), json!(args));
        ev.insert("channel".to_string(), self.chan_json(id));
        self.deliver(app, ev);
    }

    /// Leaves Stasis (StasisEnd, STASISSTATUS=SUCCESS); the caller decides what follows.
    pub(super) fn leave_stasis(&mut self, id: &str) {
        let Some(c) = self.channels.by_id.get(id) else {
            return;
        };
        let Some(app) = c.stasis.as_ref().map(|(a, _)| a.clone()) else {
            return;
        };
        let bridge = c.bridge.clone();
        if c.hanging_up && bridge.is_some() {
            self.drop_queued_playbacks(id);
        }
        if let Some(b) = bridge {
            self.bridge_remove(&b, id);
        }
        self.stop_channel_media(id);
        let mut ev = self.event("StasisEnd");
        ev.insert("channel".to_string(), self.chan_json(id));
        self.deliver(&app, ev);
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.stasis = None;
            c.vars
                .insert("STASISSTATUS".to_string(), "SUCCESS".to_string());
        }
        self.emit_varset(Some(id), "STASISSTATUS", "SUCCESS");
    }

    pub(super) fn stop_channel_media(&mut self, id: &str) {
        let pbs: Vec<String> = self
            .channels
            .by_id
            .get(id)
            .map(|c| c.playbacks.iter().cloned().collect())
            .unwrap_or_default();
        for pb in pbs {
            self.finish_playback(&pb, "done");
        }
        if let Some(r) = self
            .channels
            .by_id
            .get(id)
            .and_then(|c| c.recording.clone())
        {
            self.finish_recording(&r, "done");
        }
    }

    /// Hangup requested through ARI (DELETE channels/{id}) with a Q.850 cause.
    pub(super) fn ari_hangup(&mut self, id: &str, cause: i64) {
        if self.channels.by_id.get(id).is_none_or(|c| c.hanging_up) {
            return;
        }
        self.chan_event(
            "ChannelHangupRequest",
            id,
            json!({"cause": 32, "soft": true}),
        );
        let lingering_snoop = self.channels.by_id.get(id).is_some_and(|c| {
            c.tech == Tech::Snoop
                && c.snoop_target
                    .as_ref()
                    .is_some_and(|t| self.channels.by_id.contains_key(t))
        });
        if lingering_snoop {
            // A snoop channel leaves Stasis at once but is only destroyed when the channel
            // it spies on goes away (as the recording shows).
            if let Some(c) = self.channels.by_id.get_mut(id) {
                c.hanging_up = true;
            }
            self.leave_everything(id);
            return;
        }
        if self.media_ws_hangup_closes_first(id, cause) {
            return;
        }
        self.teardown(id, cause, true);
    }

    /// The party on a channel (or its dialplan) hangs up.
    pub(super) fn remote_hangup(&mut self, id: &str, cause: i64) {
        if self.channels.by_id.get(id).is_none_or(|c| c.hanging_up) {
            return;
        }
        let is_local = matches!(
            self.channels.by_id.get(id).map(|c| c.tech),
            Some(Tech::Local(_))
        );
        if !is_local {
            self.chan_event("ChannelHangupRequest", id, json!({"cause": cause}));
        }
        if self.media_ws_hangup_closes_first(id, cause) {
            return;
        }
        self.teardown(id, cause, false);
    }

    /// Tears a channel down: leaves bridge/Stasis, the Local peer goes too, ChannelDestroyed.
    pub(super) fn teardown(&mut self, id: &str, cause: i64, peer_after: bool) {
        let Some(c) = self.channels.by_id.get_mut(id) else {
            return;
        };
        c.hanging_up = true;
        c.exec_gen += 1;
        let peer = c.peer.clone();
        let snoops = c.snoops.clone();
        let is_local = matches!(c.tech, Tech::Local(_));
        let peer_alive = peer
            .as_ref()
            .is_some_and(|p| self.channels.by_id.get(p).is_some_and(|pc| !pc.hanging_up));
        if is_local && peer_alive && !peer_after {
            // The far end learns first (queued hangup), then this half goes away.
            if let Some(p) = &peer {
                self.chan_event("ChannelHangupRequest", p, json!({"cause": cause}));
            }
            self.leave_everything(id);
            self.destroy(id, cause);
            if let Some(p) = &peer {
                if let Some(pc) = self.channels.by_id.get_mut(p) {
                    pc.hanging_up = true;
                    pc.exec_gen += 1;
                }
                self.leave_everything(p);
                // The other half takes over the hangup cause (an empty one reads as 16).
                self.destroy(p, if cause == 0 { 16 } else { cause });
            }
        } else {
            self.leave_everything(id);
            if is_local && peer_alive {
                if let Some(p) = &peer {
                    self.chan_event("ChannelHangupRequest", p, json!({"cause": 16}));
                    self.chan_event(
                        "ChannelHangupRequest",
                        p,
                        json!({"cause": 16, "soft": true}),
                    );
                    if let Some(pc) = self.channels.by_id.get_mut(p) {
                        pc.hanging_up = true;
                        pc.exec_gen += 1;
                    }
                    self.leave_everything(p);
                    self.destroy_local_half(p, 16);
                }
            }
            self.destroy(id, cause);
        }
        let _ = snoops;
    }

    pub(super) fn leave_everything(&mut self, id: &str) {
        self.run_h_exten(id);
        if self
            .channels
            .by_id
            .get(id)
            .is_some_and(|c| c.stasis.is_some())
        {
            self.leave_stasis(id);
        } else {
            if let Some(b) = self.channels.by_id.get(id).and_then(|c| c.bridge.clone()) {
                self.bridge_remove(&b, id);
            }
            self.stop_channel_media(id);
        }
        if let Some(c) = self.channels.by_id.get_mut(id) {
            let (a, d) = c.base_app.clone();
            c.app_name = a;
            c.app_data = d;
        }
    }

    pub(super) fn destroy(&mut self, id: &str, cause: i64) {
        if !self.channels.by_id.contains_key(id) {
            return;
        }
        self.media_ws_destroyed(id);
        self.hangup_snoops(id);
        // A callee that goes away unanswered ends its caller's Dial().
        let unanswered_caller = self
            .channels
            .by_id
            .get(id)
            .filter(|c| c.state != "Up")
            .and_then(|c| c.dialed_by.clone());
        if let Some(x) = unanswered_caller {
            let status = match cause {
                17 => "BUSY",
                34 => "CONGESTION",
                1 | 3 | 27 | 38 => "CHANUNAVAIL",
                _ => "NOANSWER",
            };
            self.resume_after_app(&x, status);
        }
        if self.channels.by_id.get(id).is_some_and(|c| c.state == "Up") {
            let st = match self.channels.by_id.get(id).map(|c| c.tech) {
                Some(Tech::UnicastRtp) => "UNKNOWN",
                _ => "NOT_INUSE",
            };
            self.device_state_for(id, st);
        }
        self.chan_event(
            "ChannelDestroyed",
            id,
            json!({"cause": cause, "cause_txt": cause_txt(cause)}),
        );
        self.remove_channel(id);
    }

    /// Destroys the far half of a Local pair: ChannelDestroyed, then the caller id update
    /// Asterisk publishes while the channel is being freed.
    pub(super) fn destroy_local_half(&mut self, id: &str, cause: i64) {
        if !self.channels.by_id.contains_key(id) {
            return;
        }
        self.hangup_snoops(id);
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.caller = (String::new(), String::new());
        }
        self.chan_event(
            "ChannelDestroyed",
            id,
            json!({"cause": cause, "cause_txt": cause_txt(cause)}),
        );
        self.chan_event(
            "ChannelCallerId",
            id,
            json!({"caller_presentation": 67, "caller_presentation_txt": "Number Unavailable"}),
        );
        self.remove_channel(id);
    }

    /// Snoop channels go away with the channel they spy on.
    pub(super) fn hangup_snoops(&mut self, id: &str) {
        let snoops = self
            .channels
            .by_id
            .get(id)
            .map(|c| c.snoops.clone())
            .unwrap_or_default();
        for s in snoops {
            match self.channels.by_id.get(&s).map(|c| c.hanging_up) {
                Some(false) => {
                    self.chan_event("ChannelHangupRequest", &s, json!({"cause": 16}));
                    self.teardown(&s, 16, true);
                }
                // hung up through ARI earlier and lingering: gone now
                Some(true) => self.destroy(&s, 16),
                None => {}
            }
        }
    }

    /// Destroys without hangup requests (failed dial into a missing extension).
    pub(super) fn destroy_quiet(&mut self, id: &str, cause: i64) {
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.hanging_up = true;
        }
        self.leave_everything(id);
        self.destroy(id, cause);
    }

    pub(super) fn remove_channel(&mut self, id: &str) {
        if let Some(c) = self.channels.by_id.remove(id) {
            if let Some(t) = c.snoop_target {
                if let Some(tc) = self.channels.by_id.get_mut(&t) {
                    tc.snoops.retain(|s| s != id);
                }
            }
        }
        self.channels.order.retain(|c| c != id);
        for a in self.routing.apps.values_mut() {
            a.channels.remove(id);
        }
        let stale: Vec<String> = self
            .routing
            .apps
            .iter()
            .filter(|(n, a)| {
                !a.connected
                    && !self
                        .channels
                        .by_id
                        .values()
                        .any(|c| c.stasis.as_ref().is_some_and(|(s, _)| s == *n))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in stale {
            self.routing.apps.remove(&n);
        }
    }
}
