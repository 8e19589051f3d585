//! Dialplan execution (one priority at a time, on timers) and DTMF.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // Dialplan execution
    // -----------------------------------------------------------------------------------

    pub(super) fn advance_priority(&mut self, id: &str) {
        if let Some(c) = self.channels.by_id.get_mut(id) {
            c.priority += 1;
        }
    }

    /// Runs dialplan priorities from the channel's current location until one blocks.
    pub(super) fn run_dialplan(&mut self, id: &str) {
        for _ in 0..1000 {
            let Some(c) = self.channels.by_id.get(id) else {
                return;
            };
            if c.hanging_up {
                return;
            }
            let line = self
                .dialplan
                .find(&c.context, &c.exten, c.priority)
                .cloned();
            let Some(line) = line else {
                // Ran off the end of the dialplan.
                if let Some(c) = self.channels.by_id.get_mut(id) {
                    c.app_name.clear();
                    c.app_data.clear();
                    c.exec = Exec::Idle;
                }
                self.remote_hangup(id, 0);
                return;
            };
            let data = self.substitute(id, &line.data);
            self.set_dialplan_app(id, &line.app, &data);
            if let Some(c) = self.channels.by_id.get_mut(id) {
                c.exec = Exec::Idle;
                c.ran_pbx = true;
            }
            self.emit_dialplan(id);
            let args = dialplan::split_args(&data);
            let arg0 = args.first().cloned().unwrap_or_default();
            match line.app.to_ascii_lowercase().as_str() {
                "answer" => {
                    let was_up = self.channels.by_id.get(id).is_some_and(|c| c.state == "Up");
                    self.answer(id);
                    if !was_up && self.channels.by_id.contains_key(id) {
                        // __ast_answer waits up to 500 ms for media to start flowing.
                        self.wait_then_continue(id, Duration::from_millis(500));
                        return;
                    }
                }
                "hangup" => {
                    let cause = arg0.trim().parse::<i64>().unwrap_or(16);
                    self.remote_hangup(id, cause);
                    return;
                }
                "ringing" => {
                    if let Some(c) = self.channels.by_id.get_mut(id) {
                        if c.state != "Up" {
                            c.state = "Ringing";
                        }
                    }
                    self.emit_state(id);
                    let peer = self.channels.by_id.get(id).and_then(|c| c.peer.clone());
                    if let Some(p) = peer {
                        if self
                            .channels
                            .by_id
                            .get(&p)
                            .is_some_and(|pc| pc.dialing.is_some() && pc.state != "Up")
                        {
                            if let Some(pc) = self.channels.by_id.get_mut(&p) {
                                pc.state = "Ringing";
                            }
                            self.emit_state(&p);
                            self.emit_dial(&p, "RINGING");
                        }
                    }
                }
                "set" | "msetvar" => {
                    if let Some((k, v)) = data.split_once('=') {
                        self.set_chan_var(id, k.trim(), v);
                    }
                }
                "userevent" => {
                    let mut ue = Map::new();
                    for kv in args.iter().skip(1) {
                        if let Some((k, v)) = kv.split_once(':') {
                            ue.insert(k.trim().to_string(), json!(v.trim()));
                        }
                    }
                    ue.insert("eventname".to_string(), json!(arg0));
                    let mut ev = self.event("ChannelUserevent");
                    ev.insert("eventname".to_string(), json!(arg0));
                    ev.insert("userevent".to_string(), Value::Object(ue));
                    ev.insert("channel".to_string(), self.chan_json(id));
                    self.emit(ev, &[Res::Chan(id.to_string())]);
                }
                "wait" => {
                    let secs = arg0.trim().parse::<f64>().unwrap_or(0.0).max(0.0);
                    self.wait_then_continue(id, Duration::from_secs_f64(secs.min(1e9)));
                    return;
                }
                "playback" | "background" => {
                    let total = arg0
                        .split('&')
                        .map(|s| self.media_duration(s).unwrap_or(Duration::ZERO))
                        .fold(Duration::ZERO, Duration::saturating_add);
                    self.wait_then_continue(id, total);
                    return;
                }
                "amd" => {
                    let (status, cause) = self.amd_verdict(id);
                    if let Some(c) = self.channels.by_id.get_mut(id) {
                        c.vars.insert("AMDSTATUS".to_string(), status.to_string());
                        c.vars.insert("AMDCAUSE".to_string(), cause);
                    }
                    self.wait_then_continue(id, Duration::from_secs(2));
                    return;
                }
                "senddtmf" => {
                    let peer = self.channels.by_id.get(id).and_then(|c| c.peer.clone());
                    let digits: Vec<char> = arg0.chars().filter(|c| is_dtmf(*c)).collect();
                    let dur = args
                        .get(2)
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(self.cfg.dtmf_duration_ms);
                    let between = args
                        .get(1)
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(250);
                    let step = Duration::from_millis(dur.saturating_add(between));
                    if let Some(p) = peer {
                        for (i, d) in digits.iter().enumerate() {
                            let at = Duration::from_millis(dur.saturating_mul(2)).saturating_add(
                                step.saturating_mul(i.min(u32::MAX as usize) as u32),
                            );
                            self.schedule(at, Timer::Dtmf(p.clone(), *d, dur));
                        }
                    }
                    self.wait_then_continue(
                        id,
                        step.saturating_mul(digits.len().min(u32::MAX as usize) as u32),
                    );
                    return;
                }
                "goto" => {
                    let (ctx, exten, prio) = match args.len() {
                        3 => (args[0].clone(), args[1].clone(), args[2].clone()),
                        2 => (
                            self.channels
                                .by_id
                                .get(id)
                                .map(|c| c.context.clone())
                                .unwrap_or_default(),
                            args[0].clone(),
                            args[1].clone(),
                        ),
                        _ => (
                            self.channels
                                .by_id
                                .get(id)
                                .map(|c| c.context.clone())
                                .unwrap_or_default(),
                            self.channels
                                .by_id
                                .get(id)
                                .map(|c| c.exten.clone())
                                .unwrap_or_default(),
                            arg0.clone(),
                        ),
                    };
                    let p = prio
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .or_else(|| self.dialplan.label(&ctx, &exten, prio.trim()))
                        .unwrap_or(1);
                    if let Some(c) = self.channels.by_id.get_mut(id) {
                        c.context = ctx;
                        c.exten = exten;
                        c.priority = p;
                    }
                    continue;
                }
                "stasis" => {
                    let app = arg0.clone();
                    let rest: Vec<String> = args.iter().skip(1).cloned().collect();
                    self.enter_stasis(id, &app, rest);
                    return;
                }
                "stasisbroadcast" => {
                    // StasisBroadcast(timeout_ms[,app_filter]): offer the call (CallBroadcast)
                    // to every matching application; the first claim takes it.
                    let timeout = arg0.trim().parse::<u64>().unwrap_or(500);
                    let filter = args.get(1).cloned().unwrap_or_default();
                    let targets: Vec<String> = self
                        .routing
                        .apps
                        .iter()
                        .filter(|(n, a)| {
                            a.connected
                                && (filter.is_empty()
                                    || regex::re_match(filter.trim_start_matches('^'), n))
                        })
                        .map(|(n, _)| n.clone())
                        .collect();
                    if let Some(c) = self.channels.by_id.get_mut(id) {
                        c.vars
                            .insert("STASISSTATUS".to_string(), "TIMEOUT".to_string());
                        c.broadcast_open = true;
                    }
                    let (caller, called) = self
                        .channels
                        .by_id
                        .get(id)
                        .map(|c| (c.caller.1.clone(), c.exten.clone()))
                        .unwrap_or_default();
                    for t in targets {
                        let mut ev = self.event("CallBroadcast");
                        ev.insert("channel".to_string(), self.chan_json(id));
                        ev.insert("caller".to_string(), json!(caller));
                        ev.insert("called".to_string(), json!(called));
                        self.deliver(&t, ev);
                    }
                    self.wait_then_continue(id, Duration::from_millis(timeout));
                    return;
                }
                "dial" => {
                    let timeout = args.get(1).and_then(|t| t.trim().parse::<u64>().ok());
                    if self.dialplan_dial(id, &arg0, timeout) {
                        return;
                    }
                }
                "bridge" => {
                    let target = arg0.replace("\\;", ";");
                    let x = args.get(1).is_some_and(|o| o.contains('x'));
                    if self.dialplan_bridge(id, &target, x) {
                        return;
                    }
                }
                "echo" | "musiconhold" | "bridgewait" | "park" | "confbridge" | "waitexten" => {
                    if let Some(c) = self.channels.by_id.get_mut(id) {
                        c.exec = Exec::Parked;
                    }
                    return;
                }
                _ => {}
            }
            if self.channels.by_id.get(id).is_none_or(|c| c.hanging_up) {
                return;
            }
            self.advance_priority(id);
        }
    }

    /// What AMD() decides from the audio reaching the channel: a long greeting is a
    /// MACHINE, a short word followed by silence is a HUMAN, silence is a MACHINE.
    pub(super) fn amd_verdict(&self, id: &str) -> (&'static str, String) {
        let media = self.heard_media(id);
        let mut t = Duration::ZERO;
        let mut speech = Duration::ZERO;
        let mut initial_silence = Duration::ZERO;
        for m in &media {
            let d = self.media_duration(m).unwrap_or(Duration::ZERO);
            if m.contains("silence/") {
                if speech.is_zero() {
                    initial_silence += d;
                } else if speech < Duration::from_millis(1500) && d >= Duration::from_millis(800) {
                    return ("HUMAN", format!("HUMAN-{}-800", speech.as_millis()));
                }
            } else {
                speech += d;
                if speech >= Duration::from_millis(1500) {
                    return (
                        "MACHINE",
                        format!("MAXWORDLENGTH-{}-1500", speech.as_millis()),
                    );
                }
            }
            t += d;
        }
        if !speech.is_zero() {
            return ("HUMAN", format!("HUMAN-{}-800", speech.as_millis()));
        }
        let _ = (t, initial_silence);
        ("MACHINE", "INITIALSILENCE-2500-2500".to_string())
    }

    /// Media another party is playing toward this channel (through its Local peer's
    /// bridge, a snoop, or the peer's own dialplan Playback).
    pub(super) fn heard_media(&self, id: &str) -> Vec<String> {
        let mut sources: Vec<String> = Vec::new();
        let Some(c) = self.channels.by_id.get(id) else {
            return Vec::new();
        };
        let mut near = vec![id.to_string()];
        if let Some(p) = &c.peer {
            near.push(p.clone());
        }
        for n in &near {
            if let Some(b) = self.channels.by_id.get(n).and_then(|x| x.bridge.clone()) {
                for m in self.members(&b) {
                    if !near.contains(&m) {
                        sources.push(m);
                    }
                }
            }
        }
        let mut media = Vec::new();
        for s in sources {
            // a snoop hears its target; a Local half hears its peer's dialplan
            let who = self
                .channels
                .by_id
                .get(&s)
                .and_then(|x| x.snoop_target.clone())
                .unwrap_or(s);
            let mut cands = vec![who.clone()];
            if let Some(p) = self.channels.by_id.get(&who).and_then(|x| x.peer.clone()) {
                cands.push(p);
            }
            for w in cands {
                let Some(x) = self.channels.by_id.get(&w) else {
                    continue;
                };
                if x.app_name.eq_ignore_ascii_case("Playback") {
                    media.extend(x.app_data.split('&').map(|m| format!("sound:{m}")));
                }
                for pb in &x.playbacks {
                    if let Some(p) = self.media.playbacks.get(pb) {
                        media.extend(p.media.iter().cloned());
                    }
                }
            }
        }
        media
    }

    /// Dial(Local/…|PJSIP/…): creates the callee, which is bridged with the caller once it
    /// answers. Returns false (dialplan goes on, DIALSTATUS=CHANUNAVAIL) when it cannot.
    pub(super) fn dialplan_dial(
        &mut self,
        caller: &str,
        target: &str,
        timeout: Option<u64>,
    ) -> bool {
        let first = target.split('&').next().unwrap_or("").trim().to_string();
        let (tech, rest) = first.split_once('/').unwrap_or((first.as_str(), ""));
        let tech = if self.channels.by_id.len() >= self.cfg.max_channels {
            "" // out of resources: the dial fails like an allocation failure
        } else {
            tech
        };
        let callee = self.next_uid();
        match tech {
            "Local" => {
                let t = rest.split('/').next().unwrap_or("");
                let (exten, ctx) = t.split_once('@').unwrap_or((t, "default"));
                let other = self.next_uid();
                self.make_local_pair(&callee, &other, exten, ctx, None);
                self.emit_created(&callee);
                self.emit_created(&other);
            }
            "PJSIP" | "SIP" if !rest.is_empty() => {
                let ep = format!("{tech}/{}", rest.split('@').next().unwrap_or(rest));
                let c = self.new_sip_channel(&callee, &ep, "Down");
                self.insert_channel(c);
                self.emit_created(&callee);
            }
            _ => {
                if let Some(c) = self.channels.by_id.get_mut(caller) {
                    c.vars
                        .insert("DIALSTATUS".to_string(), "CHANUNAVAIL".to_string());
                }
                return false;
            }
        }
        if let Some(c) = self.channels.by_id.get_mut(&callee) {
            c.base_app = ("AppDial".to_string(), "(Outgoing Line)".to_string());
            c.app_name = c.base_app.0.clone();
            c.app_data = c.base_app.1.clone();
            c.dialed_by = Some(caller.to_string());
            c.on_answer = OnAnswer::BridgeWith(caller.to_string());
        }
        if let Some(c) = self.channels.by_id.get_mut(caller) {
            c.exec = Exec::InApp;
            c.exec_gen += 1;
        }
        if tech == "Local" {
            self.schedule(Duration::ZERO, Timer::LocalStart(callee.clone()));
        } else {
            if let Some(c) = self.channels.by_id.get_mut(&callee) {
                c.dialing = Some(rest.to_string());
            }
            self.emit_dial(&callee, "");
            if let Some(c) = self.channels.by_id.get_mut(&callee) {
                c.state = "Ringing";
            }
            self.emit_state(&callee);
            self.emit_dial(&callee, "RINGING");
            let d = self.cfg.sip_answer_delay;
            self.schedule(d, Timer::SipAnswer(callee.clone()));
        }
        if let Some(t) = timeout.filter(|t| *t > 0) {
            self.schedule(Duration::from_secs(t), Timer::DialTimeout(callee));
        }
        true
    }

    /// Bridge(channel[,x]): takes `target` out of wherever it is (its Stasis bridge, its
    /// Stasis application) into a basic bridge with `me`.
    pub(super) fn dialplan_bridge(&mut self, me: &str, target: &str, hangup_after: bool) -> bool {
        if target == me || !self.channels.by_id.contains_key(target) {
            if let Some(c) = self.channels.by_id.get_mut(me) {
                c.vars
                    .insert("BRIDGERESULT".to_string(), "NONEXISTENT".to_string());
            }
            return false;
        }
        if let Some(b) = self
            .channels
            .by_id
            .get(target)
            .and_then(|c| c.bridge.clone())
        {
            self.bridge_remove(&b, target);
        }
        if self
            .channels
            .by_id
            .get(target)
            .is_some_and(|c| c.stasis.is_some())
        {
            self.leave_stasis(target);
        }
        if let Some(c) = self.channels.by_id.get_mut(target) {
            c.exec = Exec::InApp;
            c.exec_gen += 1;
            c.hangup_after_bridge = hangup_after;
        }
        if let Some(c) = self.channels.by_id.get_mut(me) {
            c.exec = Exec::InApp;
            c.exec_gen += 1;
        }
        self.answer(me);
        self.basic_bridge(&[me.to_string(), target.to_string()], "Bridge");
        true
    }

    /// Runs the `h` extension of a channel that ran dialplan and is hanging up.
    pub(super) fn run_h_exten(&mut self, id: &str) {
        let ctx = match self.channels.by_id.get_mut(id) {
            Some(c) if c.ran_pbx => {
                c.ran_pbx = false;
                c.context.clone()
            }
            _ => return,
        };
        if self.dialplan.resolve_exten(&ctx, "h").as_deref() != Some("h") {
            return;
        }
        for prio in 1..100 {
            let Some(line) = self.dialplan.find(&ctx, "h", prio).cloned() else {
                break;
            };
            let data = self.substitute(id, &line.data);
            if let Some(c) = self.channels.by_id.get_mut(id) {
                c.exten = "h".to_string();
                c.priority = prio;
            }
            self.set_dialplan_app(id, &line.app, &data);
            self.emit_dialplan(id);
            if line.app.eq_ignore_ascii_case("set") {
                if let Some((k, v)) = data.split_once('=') {
                    self.set_chan_var(id, k.trim(), v);
                }
            }
            if line.app.eq_ignore_ascii_case("hangup") {
                break;
            }
        }
    }

    pub(super) fn wait_then_continue(&mut self, id: &str, d: Duration) {
        let g = match self.channels.by_id.get_mut(id) {
            Some(c) => {
                c.exec = Exec::Waiting;
                c.exec_gen += 1;
                c.exec_gen
            }
            None => return,
        };
        self.schedule(d, Timer::Dialplan(id.to_string(), g));
    }

    // -----------------------------------------------------------------------------------
    // DTMF
    // -----------------------------------------------------------------------------------

    pub(super) fn dtmf_received(&mut self, id: &str, digit: char, dur: u64) {
        if self.channels.by_id.get(id).is_none_or(|c| c.hanging_up) {
            return;
        }
        self.chan_event(
            "ChannelDtmfReceived",
            id,
            json!({"digit": digit.to_string(), "duration_ms": dur}),
        );
        self.media_ws_dtmf(id, digit);
        // terminateOn of a recording on this channel
        if let Some(r) = self
            .channels
            .by_id
            .get(id)
            .and_then(|c| c.recording.clone())
        {
            // Only while it records: not before its command runs, nor during the beep
            // (played with no escape digits).
            let now = self.clock.now;
            let stop = self
                .media
                .live
                .get(&r)
                .filter(|l| l.state == "recording" && l.started <= now)
                .is_some_and(|l| match l.terminate_on.as_str() {
                    "any" => true,
                    "none" | "" => false,
                    t => t.contains(digit),
                });
            if stop {
                self.finish_recording(&r, "done");
            }
        }
    }
}
