//! Bridges: membership, technology, dissolving basic bridges, announcers.

use super::*;

/// The bridges that exist.
#[derive(Debug, Default)]
pub(super) struct Bridges {
    pub(super) by_id: BTreeMap<String, Bridge>,
    /// Bridges in creation order.
    pub(super) order: Vec<String>,
}

impl Sim {
    // -----------------------------------------------------------------------------------
    // Bridges
    // -----------------------------------------------------------------------------------

    pub(super) fn bridge_event(&mut self, ty: &str, b: &str, chan: Option<&str>, extra: Value) {
        let mut ev = self.event(ty);
        if let Value::Object(m) = extra {
            ev.extend(m);
        }
        ev.insert("bridge".to_string(), self.bridge_json(b));
        let mut res = vec![Res::Bridge(b.to_string())];
        if let Some(c) = chan {
            ev.insert("channel".to_string(), self.chan_json(c));
            res.push(Res::Chan(c.to_string()));
        }
        self.emit(ev, &res);
    }

    pub(super) fn update_technology(&mut self, b: &str) {
        if let Some(br) = self.bridges.by_id.get_mut(b) {
            if br.bridge_type == "mixing" && br.channels.len() > 2 {
                br.technology = "softmix".to_string();
            }
        }
    }

    pub(super) fn set_bridgepeers(&mut self, b: &str) {
        let members: Vec<String> = self.members(b);
        if members.len() < 2 {
            return;
        }
        for m in &members {
            let others: Vec<String> = members
                .iter()
                .filter(|o| *o != m)
                .filter_map(|o| self.channels.by_id.get(o).map(|c| c.name.clone()))
                .collect();
            let v = others.join(",");
            if self
                .channels
                .by_id
                .get(m)
                .and_then(|c| c.vars.get("BRIDGEPEER"))
                == Some(&v)
            {
                continue;
            }
            if let Some(c) = self.channels.by_id.get_mut(m) {
                c.vars.insert("BRIDGEPEER".to_string(), v.clone());
            }
            self.emit_varset(Some(m), "BRIDGEPEER", &v);
        }
    }

    pub(super) fn bridge_add(&mut self, b: &str, c: &str) {
        if let Some(old) = self.channels.by_id.get(c).and_then(|ch| ch.bridge.clone()) {
            if old == b {
                return;
            }
            self.bridge_remove(&old, c);
        }
        let app = self
            .channels
            .by_id
            .get(c)
            .and_then(|ch| ch.stasis.as_ref().map(|(a, _)| a.clone()));
        if let Some(a) = app.and_then(|a| self.routing.apps.get_mut(&a)) {
            *a.bridge_refs.entry(b.to_string()).or_insert(0) += 1;
        }
        if let Some(br) = self.bridges.by_id.get_mut(b) {
            br.channels.push(c.to_string());
        }
        if let Some(ch) = self.channels.by_id.get_mut(c) {
            ch.bridge = Some(b.to_string());
        }
        self.update_technology(b);
        self.bridge_event("ChannelEnteredBridge", b, Some(c), json!({}));
        self.set_bridgepeers(b);
        let members: Vec<String> = self.members(b);
        let mixing = self
            .bridges
            .by_id
            .get(b)
            .is_some_and(|br| br.bridge_type == "mixing");
        if mixing && members.len() >= 2 {
            // linkedid: the oldest wins; peeraccount: the other party's accountcode.
            let oldest = members
                .iter()
                .filter_map(|m| self.channels.by_id.get(m))
                .min_by_key(|c| (c.creation_ms, c.linkedid.clone()))
                .map(|c| c.linkedid.clone());
            let accts: Vec<(String, String)> = members
                .iter()
                .filter_map(|m| {
                    self.channels
                        .by_id
                        .get(m)
                        .map(|c| (m.clone(), c.accountcode.clone()))
                })
                .collect();
            for m in &members {
                let peer_acct = accts
                    .iter()
                    .filter(|(id, _)| id != m)
                    .map(|(_, a)| a.clone())
                    .next()
                    .unwrap_or_default();
                if let Some(c) = self.channels.by_id.get_mut(m) {
                    if let Some(l) = &oldest {
                        c.linkedid = l.clone();
                    }
                    c.peeraccount = peer_acct;
                }
            }
        }
        if members.len() == 2 {
            // Two-party bridge: each side learns who it is connected to.
            let (a, z) = (members[0].clone(), members[1].clone());
            let (an, zn) = match (self.channels.by_id.get(&a), self.channels.by_id.get(&z)) {
                (Some(x), Some(y)) => (x.caller.clone(), y.caller.clone()),
                _ => return,
            };
            if let Some(x) = self.channels.by_id.get_mut(&z) {
                x.connected = an;
            }
            self.chan_event("ChannelConnectedLine", &z, json!({}));
            if let Some(x) = self.channels.by_id.get_mut(&a) {
                x.connected = zn;
            }
            self.chan_event("ChannelConnectedLine", &a, json!({}));
        }
    }

    /// An announcer channel (`Announcer/ARI…;2`) joins or leaves a bridge for a bridge
    /// playback or music on hold: members see BRIDGEPEER change.
    pub(super) fn announcer(&mut self, b: &str, name: Option<&str>) {
        let members: Vec<String> = self.members(b);
        for m in &members {
            let mut peers: Vec<String> = members
                .iter()
                .filter(|o| *o != m)
                .filter_map(|o| self.channels.by_id.get(o).map(|c| c.name.clone()))
                .collect();
            if let Some(n) = name {
                peers.insert(0, n.to_string());
            } else if peers.is_empty() {
                continue;
            }
            let v = peers.join(",");
            if let Some(c) = self.channels.by_id.get_mut(m) {
                c.vars.insert("BRIDGEPEER".to_string(), v.clone());
            }
            self.emit_varset(Some(m), "BRIDGEPEER", &v);
        }
    }

    pub(super) fn announcer_name(&mut self, kind: &str) -> String {
        self.ids.local_seq += 1;
        format!("Announcer/{kind}-{:08x};2", self.ids.local_seq)
    }

    pub(super) fn bridge_remove(&mut self, b: &str, c: &str) {
        let present = self
            .bridges
            .by_id
            .get(b)
            .is_some_and(|br| br.channels.iter().any(|x| x == c));
        if !present {
            return;
        }
        if let Some(br) = self.bridges.by_id.get_mut(b) {
            br.channels.retain(|x| x != c);
        }
        if let Some(ch) = self.channels.by_id.get_mut(c) {
            ch.bridge = None;
        }
        let had_peer = self
            .channels
            .by_id
            .get(c)
            .and_then(|ch| ch.vars.get("BRIDGEPEER"))
            .is_some_and(|v| !v.is_empty());
        if had_peer {
            if let Some(ch) = self.channels.by_id.get_mut(c) {
                ch.vars.insert("BRIDGEPEER".to_string(), String::new());
            }
            self.emit_varset(Some(c), "BRIDGEPEER", "");
        }
        let vs = self
            .bridges
            .by_id
            .get(b)
            .and_then(|br| br.video_source.clone());
        if vs.as_deref() == Some(c) {
            if let Some(br) = self.bridges.by_id.get_mut(b) {
                br.video_source = None;
                br.video_mode = "talker".to_string();
            }
            self.bridge_event(
                "BridgeVideoSourceChanged",
                b,
                None,
                json!({"old_video_source_id": c}),
            );
        }
        self.bridge_event("ChannelLeftBridge", b, Some(c), json!({}));
        let dissolve = self
            .bridges
            .by_id
            .get(b)
            .is_some_and(|br| br.class == "basic" && !br.dissolving && br.channels.len() < 2);
        if dissolve {
            let rest: Vec<String> = self.members(b);
            if let Some(br) = self.bridges.by_id.get_mut(b) {
                br.dissolving = true;
            }
            for m in &rest {
                self.bridge_remove(b, m);
            }
            self.bridge_event("BridgeDestroyed", b, None, json!({}));
            self.bridges.by_id.remove(b);
            self.bridges.order.retain(|x| x != b);
            for m in rest.iter().chain(std::iter::once(&c.to_string())) {
                self.resume_after_app(m, "ANSWER");
            }
        }
    }

    /// A channel whose Dial()/Bridge() ended goes on in the dialplan (or hangs up for
    /// Bridge(…,x)).
    pub(super) fn resume_after_app(&mut self, id: &str, dialstatus: &str) {
        let Some(c) = self.channels.by_id.get_mut(id) else {
            return;
        };
        if c.hanging_up || c.exec != Exec::InApp {
            return;
        }
        c.exec = Exec::Waiting;
        c.exec_gen += 1;
        let g = c.exec_gen;
        if c.app_name.eq_ignore_ascii_case("Dial") {
            c.vars
                .insert("DIALSTATUS".to_string(), dialstatus.to_string());
        }
        if c.hangup_after_bridge {
            self.schedule(Duration::ZERO, Timer::CallerHangup(id.to_string()));
        } else {
            self.schedule(Duration::ZERO, Timer::Dialplan(id.to_string(), g));
        }
    }

    /// A basic bridge (dialplan Dial()/Bridge()) holding `members`.
    pub(super) fn basic_bridge(&mut self, members: &[String], creator: &str) {
        let id = rest::uuid_like(self.next_gen(), self.cfg.wall_clock_base_ms);
        self.bridges.by_id.insert(
            id.clone(),
            Bridge {
                id: id.clone(),
                class: "basic",
                creator: creator.to_string(),
                dissolving: false,
                technology: "simple_bridge".to_string(),
                bridge_type: "mixing".to_string(),
                name: String::new(),
                channels: Vec::new(),
                creation_ms: self.wall_ms(),
                video_mode: "talker".to_string(),
                video_source: None,
                playbacks: VecDeque::new(),
                recording: None,
                vars: BTreeMap::new(),
                reported: BTreeSet::new(),
            },
        );
        self.bridges.order.push(id.clone());
        self.bridge_event("BridgeCreated", &id, None, json!({}));
        for m in members {
            self.bridge_add(&id, m);
        }
    }

    /// DeviceStateChanged for the device behind a channel (`Local/exten@ctx` twice, as
    /// Asterisk publishes it for both halves; `PJSIP/alice`; `UnicastRTP/host`).
    pub(super) fn device_state_for(&mut self, id: &str, state: &str) {
        let Some(c) = self.channels.by_id.get(id) else {
            return;
        };
        let (name, times) = match c.tech {
            Tech::Local(1) => (format!("Local/{}@{}", c.exten, c.context), 2),
            Tech::Local(_) => return,
            Tech::Sip => match &c.endpoint {
                Some(e) => (e.clone(), 1),
                None => return,
            },
            Tech::UnicastRtp => (
                c.name
                    .rsplit_once('-')
                    .map(|(a, _)| a.to_string())
                    .unwrap_or_else(|| c.name.clone()),
                1,
            ),
            Tech::Snoop | Tech::WebSocket => return,
        };
        // Local channels are named after where they were dialed, not where they are now.
        let name = match (c.tech, c.name.rsplit_once('-')) {
            (Tech::Local(_), Some((base, _))) => base.to_string(),
            _ => name,
        };
        for _ in 0..times {
            self.device_state_named(&name, state);
        }
    }

    /// A channel taken out of a bridge through ARI (removeChannel, bridge destroyed): its
    /// application drops the bridge subscription that adding the channel took.
    pub(super) fn bridge_remove_by_ari(&mut self, b: &str, c: &str) {
        let app = self
            .channels
            .by_id
            .get(c)
            .and_then(|ch| ch.stasis.as_ref().map(|(a, _)| a.clone()));
        self.bridge_remove(b, c);
        if let Some(a) = app.and_then(|a| self.routing.apps.get_mut(&a)) {
            if let Some(n) = a.bridge_refs.get_mut(b) {
                *n = n.saturating_sub(1);
            }
        }
    }

    pub(super) fn destroy_bridge(&mut self, b: &str) {
        let members: Vec<String> = self.members(b);
        for m in members {
            self.bridge_remove_by_ari(b, &m);
        }
        let pbs: Vec<String> = self
            .bridges
            .by_id
            .get(b)
            .map(|br| br.playbacks.iter().cloned().collect())
            .unwrap_or_default();
        for pb in pbs {
            self.finish_playback(&pb, "done");
        }
        if let Some(r) = self
            .bridges
            .by_id
            .get(b)
            .and_then(|br| br.recording.clone())
        {
            self.finish_recording(&r, "done");
        }
        self.bridge_event("BridgeDestroyed", b, None, json!({}));
        self.bridges.by_id.remove(b);
        self.bridges.order.retain(|x| x != b);
        for a in self.routing.apps.values_mut() {
            a.bridges.remove(b);
            a.bridge_refs.remove(b);
        }
    }
}
