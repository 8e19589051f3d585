//! Playbacks and recordings.

use super::*;

/// Playbacks, live and stored recordings.
#[derive(Debug, Default)]
pub(super) struct Media {
    pub(super) playbacks: BTreeMap<String, Playback>,
    pub(super) live: BTreeMap<String, LiveRec>,
    pub(super) stored: BTreeMap<String, StoredRec>,
    /// When prompts carried speech: (playback id, target uri, from, to). Prompts have
    /// 250 ms of silence at each end; `silence/N` carries none.
    pub(super) talk_log: VecDeque<(String, String, Duration, Duration)>,
}

impl Sim {
    // -----------------------------------------------------------------------------------
    // Playbacks
    // -----------------------------------------------------------------------------------

    pub(super) fn media_duration(&self, uri: &str) -> Option<Duration> {
        let uri = uri.trim();
        let (scheme, rest) = uri.split_once(':').unwrap_or(("sound", uri));
        match scheme {
            "sound" => {
                if let Some(d) = self.cfg.media_durations.get(rest) {
                    return Some(*d);
                }
                if let Some(n) = rest.strip_prefix("silence/") {
                    if let Ok(s) = n.parse::<u64>() {
                        return Some(Duration::from_secs(s));
                    }
                }
                self.cfg.unknown_media_duration
            }
            "recording" => self
                .media
                .stored
                .get(rest)
                .map(|r| Duration::from_secs(r.duration_s.max(1))),
            "digits" | "number" | "characters" => Some(Duration::from_millis(
                600 * rest.chars().count().max(1) as u64,
            )),
            "tone" => None,
            _ => Some(Duration::ZERO).filter(|_| false),
        }
    }

    pub(super) fn media_exists(&self, uri: &str) -> bool {
        let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
        match scheme {
            "tone" => !rest.is_empty(),
            "sound" | "recording" | "digits" | "number" | "characters" => {
                self.media_duration(uri).is_some()
            }
            _ => false,
        }
    }

    /// Creates a playback on a channel (`channel:ID`) or bridge (`bridge:ID`).
    pub(super) fn start_playback(
        &mut self,
        pb_id: &str,
        target: &str,
        media: Vec<String>,
        lang: &str,
        skip: Duration,
    ) {
        let pb = Playback {
            id: pb_id.to_string(),
            media,
            index: 0,
            target: target.to_string(),
            language: lang.to_string(),
            state: PbState::Queued,
            length: None,
            offset: Duration::ZERO,
            since: self.clock.now,
            skip,
            gen: 0,
            failed: false,
        };
        self.media.playbacks.insert(pb_id.to_string(), pb);
        let first = match target.split_once(':') {
            // Behind a recording of the channel (its command runs until the recording ends),
            // a playback waits for it.
            Some(("channel", c)) => self.channels.by_id.get_mut(c).map(|ch| {
                ch.playbacks.push_back(pb_id.to_string());
                ch.playbacks.len() == 1 && ch.recording.is_none()
            }),
            Some(("bridge", b)) => self.bridges.by_id.get_mut(b).map(|br| {
                br.playbacks.push_back(pb_id.to_string());
                br.playbacks.len() == 1
            }),
            _ => None,
        };
        if first == Some(true) {
            self.play_current(pb_id);
        }
    }

    pub(super) fn playback_res(&self, pb: &str) -> Vec<Res> {
        match self
            .media
            .playbacks
            .get(pb)
            .and_then(|p| p.target.split_once(':'))
        {
            Some(("channel", c)) => vec![Res::Chan(c.to_string())],
            Some(("bridge", b)) => vec![Res::Bridge(b.to_string())],
            _ => vec![],
        }
    }

    pub(super) fn emit_playback(&mut self, ty: &str, pb: &str, state_override: Option<&str>) {
        let mut ev = self.event(ty);
        let mut p = self.playback_json(pb);
        if let Some(s) = state_override {
            p["state"] = json!(s);
        }
        ev.insert("playback".to_string(), p);
        let res = self.playback_res(pb);
        self.emit(ev, &res);
    }

    /// Starts playing the current media item of a playback.
    pub(super) fn play_current(&mut self, pb: &str) {
        let (first_on_bridge, bridge_target) = match self.media.playbacks.get(pb) {
            // Stopped while queued: its turn finishes it (`PlaybackFinished`, `done`) and the
            // next command runs.
            Some(p) if p.state == PbState::Canceled => {
                self.finish_playback(pb, "done");
                return;
            }
            Some(p) => (
                p.index == 0,
                p.target.strip_prefix("bridge:").map(|b| b.to_string()),
            ),
            None => return,
        };
        let g = self.next_gen();
        let now = self.clock.now;
        let Some(p) = self.media.playbacks.get(pb) else {
            return;
        };
        let uri = p.media.get(p.index).cloned().unwrap_or_default();
        let exists = self.media_exists(&uri);
        let len = self.media_duration(&uri);
        let Some(p) = self.media.playbacks.get_mut(pb) else {
            return;
        };
        p.state = PbState::Playing;
        p.gen = g;
        p.offset = Duration::ZERO;
        p.since = now;
        p.length = len;
        if !exists {
            p.failed = true;
        }
        if p.index == 0 || !exists {
            // continuing media announce themselves through PlaybackContinuing + Started
        }
        if first_on_bridge {
            if let Some(b) = bridge_target {
                let n = self.announcer_name("ARI");
                self.announcer(&b, Some(&n));
            }
        }
        self.emit_playback("PlaybackStarted", pb, None);
        if !exists {
            self.finish_playback(pb, "failed");
            return;
        }
        if let Some(l) = len {
            self.schedule(l, Timer::MediaEnd(pb.to_string(), g));
        }
        self.talk_open(pb, Duration::ZERO);
    }

    /// Records when the current media of `pb`, playing from `pos`, carries speech.
    pub(super) fn talk_open(&mut self, pb: &str, pos: Duration) {
        self.talk_close(pb);
        let Some(p) = self.media.playbacks.get(pb) else {
            return;
        };
        let uri = p.media.get(p.index).cloned().unwrap_or_default();
        let (Some(len), false) = (p.length, uri.contains("silence/")) else {
            return;
        };
        let pad = Duration::from_millis(250);
        let from = pos.max(pad);
        let to = len.saturating_sub(pad);
        if to > from {
            let start = self.clock.now + (from - pos);
            let end = self.clock.now + (to - pos);
            let target = p.target.clone();
            self.media
                .talk_log
                .push_back((pb.to_string(), target, start, end));
            if self.media.talk_log.len() > 10_000 {
                self.media.talk_log.pop_front();
            }
        }
    }

    /// The playback stopped or paused: its speech ends now.
    pub(super) fn talk_close(&mut self, pb: &str) {
        let now = self.clock.now;
        for e in self
            .media
            .talk_log
            .iter_mut()
            .filter(|e| e.0 == pb && e.3 > now)
        {
            e.3 = now.max(e.2);
        }
    }

    /// Speech heard by a recording of `target` between `from` and now.
    pub(super) fn talk_heard(&self, target: &str, from: Duration) -> Duration {
        let mut sources: BTreeSet<String> = BTreeSet::new();
        let mut near: Vec<String> = Vec::new();
        match target.split_once(':') {
            Some(("channel", c)) => {
                near.push(c.to_string());
                if let Some(p) = self.channels.by_id.get(c).and_then(|x| x.peer.clone()) {
                    sources.insert(format!("channel:{p}"));
                    near.push(p);
                }
            }
            Some(("bridge", b)) => {
                sources.insert(format!("bridge:{b}"));
                for m in self.members(b) {
                    if let Some(p) = self.channels.by_id.get(&m).and_then(|x| x.peer.clone()) {
                        sources.insert(format!("channel:{p}"));
                    }
                }
            }
            _ => {}
        }
        for n in &near {
            if let Some(b) = self.channels.by_id.get(n).and_then(|x| x.bridge.clone()) {
                sources.insert(format!("bridge:{b}"));
                for m in self.members(&b) {
                    if near.contains(&m) {
                        continue;
                    }
                    if let Some(p) = self.channels.by_id.get(&m).and_then(|x| x.peer.clone()) {
                        sources.insert(format!("channel:{p}"));
                    }
                }
            }
        }
        self.media
            .talk_log
            .iter()
            .filter(|e| sources.contains(&e.1))
            .map(|e| {
                let s = e.2.max(from);
                let t = e.3.min(self.clock.now);
                t.saturating_sub(s)
            })
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    pub(super) fn media_done(&mut self, pb: &str) {
        let Some(p) = self.media.playbacks.get(pb) else {
            return;
        };
        if p.index + 1 < p.media.len() {
            self.emit_playback("PlaybackContinuing", pb, Some("continuing"));
            if let Some(p) = self.media.playbacks.get_mut(pb) {
                p.index += 1;
            }
            self.play_current(pb);
        } else {
            self.finish_playback(pb, "done");
        }
    }

    /// Ends a playback (`done`, `failed`, `canceled`) and starts the next queued one.
    pub(super) fn finish_playback(&mut self, pb: &str, state: &str) {
        let Some(p) = self.media.playbacks.get(pb) else {
            return;
        };
        let was_queued = matches!(p.state, PbState::Queued | PbState::Canceled);
        let target = p.target.clone();
        // A queued playback stopped is `canceled` in Asterisk, which it reports as `done`
        // (`res_stasis_playback`'s `state_to_string`: stopped, complete and canceled "really
        // just mean 'done'").
        self.emit_playback("PlaybackFinished", pb, Some(state));
        self.talk_close(pb);
        self.media.playbacks.remove(pb);
        if !was_queued {
            if let Some(b) = target.strip_prefix("bridge:") {
                self.announcer(b, None);
            }
        }
        let next = match target.split_once(':') {
            Some(("channel", c)) => {
                let rec = self
                    .channels
                    .by_id
                    .get(c)
                    .and_then(|ch| ch.recording.clone());
                let next = self.channels.by_id.get_mut(c).and_then(|ch| {
                    let head = ch.playbacks.front().map(|h| h == pb).unwrap_or(false);
                    ch.playbacks.retain(|x| x != pb);
                    if head {
                        ch.playbacks.front().cloned()
                    } else {
                        None
                    }
                });
                match rec {
                    // A recording of the channel was queued after `pb`: the playbacks queued
                    // before it go first, then it, then the rest.
                    Some(r) => self.playback_done_before_recording(&r, pb, next),
                    None => next,
                }
            }
            Some(("bridge", b)) => self.bridges.by_id.get_mut(b).and_then(|br| {
                let head = br.playbacks.front().map(|h| h == pb).unwrap_or(false);
                br.playbacks.retain(|x| x != pb);
                if head {
                    br.playbacks.front().cloned()
                } else {
                    None
                }
            }),
            _ => None,
        };
        if let Some(n) = next {
            self.play_current(&n);
        }
    }

    /// A bridged channel hangs up: the playbacks queued on it that have not started go without
    /// an event. In a bridge, Asterisk plays a channel's playback through the bridge channel
    /// (`play_uri` queues it there and waits); when the channel hangs up, the bridge channel
    /// leaves and frees its queued actions unplayed, so the next queued `play_uri`, run by the
    /// channel's Stasis thread right after, finds nothing to play on and publishes nothing
    /// (`res_stasis_playback.c`, `bridge_channel.c`). The playing one finishes (`done`), as
    /// in the test suite's `channels/playback/to_channel_in_bridge_hangup`. (A channel out of
    /// a bridge runs each queued playback against the hung-up channel: `PlaybackStarted` then
    /// `PlaybackFinished` at once, before `StasisEnd`.)
    pub(super) fn drop_queued_playbacks(&mut self, channel: &str) {
        let playbacks = &self.media.playbacks;
        let queued: Vec<String> = self
            .channels
            .by_id
            .get(channel)
            .map(|c| {
                c.playbacks
                    .iter()
                    .filter(|pb| {
                        playbacks
                            .get(*pb)
                            .is_some_and(|p| matches!(p.state, PbState::Queued | PbState::Canceled))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if queued.is_empty() {
            return;
        }
        for pb in &queued {
            self.media.playbacks.remove(pb);
        }
        if let Some(c) = self.channels.by_id.get_mut(channel) {
            c.playbacks.retain(|pb| !queued.contains(pb));
        }
    }

    /// Position in the current media.
    pub(super) fn pb_position(&self, p: &Playback) -> Duration {
        match p.state {
            PbState::Playing => p
                .offset
                .saturating_add(self.clock.now.saturating_sub(p.since)),
            _ => p.offset,
        }
    }

    /// Re-arms the media-end timer from a new position.
    pub(super) fn pb_seek(&mut self, pb: &str, pos: Duration) {
        let g = self.next_gen();
        let now = self.clock.now;
        let Some(p) = self.media.playbacks.get_mut(pb) else {
            return;
        };
        p.offset = pos;
        p.since = now;
        p.gen = g;
        if p.state == PbState::Playing {
            if let Some(l) = p.length {
                let left = l.saturating_sub(pos);
                self.schedule(left, Timer::MediaEnd(pb.to_string(), g));
            }
            self.talk_open(pb, pos);
        } else {
            self.talk_close(pb);
        }
    }

    // -----------------------------------------------------------------------------------
    // Recordings
    // -----------------------------------------------------------------------------------

    pub(super) fn rec_res(&self, name: &str) -> Vec<Res> {
        match self
            .media
            .live
            .get(name)
            .and_then(|r| r.target.split_once(':'))
        {
            Some(("channel", c)) => vec![Res::Chan(c.to_string())],
            Some(("bridge", b)) => vec![Res::Bridge(b.to_string())],
            _ => vec![],
        }
    }

    pub(super) fn recording_started(&mut self, name: &str) {
        let playbacks = &self.media.playbacks;
        let Some(r) = self.media.live.get_mut(name) else {
            return;
        };
        r.ahead.retain(|pb| playbacks.contains_key(pb));
        if !r.ahead.is_empty() {
            // Its turn comes once the playbacks queued before it are over.
            r.blocked = true;
            return;
        }
        // A channel in a bridge cannot be recorded (record the bridge, or snoop): Asterisk
        // accepted the request (201) and fails the recording when it would start.
        let bridged = match self
            .media
            .live
            .get(name)
            .and_then(|r| r.target.split_once(':'))
        {
            Some(("channel", c)) => self
                .channels
                .by_id
                .get(c)
                .is_some_and(|ch| ch.bridge.is_some()),
            _ => false,
        };
        if bridged {
            self.end_recording(
                name,
                "failed",
                Some("Cannot record channel while in bridge"),
            );
            return;
        }
        let g = self.next_gen();
        let now = self.clock.now;
        let Some(r) = self.media.live.get_mut(name) else {
            return;
        };
        // The beep plays after `RecordingStarted`; the audio (and its duration) counts from
        // the beep's end.
        r.state = "recording";
        r.started = now + r.beep;
        r.gen = g;
        let max = r.max_duration.map(|m| m + r.beep);
        let mut ev = self.event("RecordingStarted");
        ev.insert("recording".to_string(), self.live_json(name));
        let res = self.rec_res(name);
        self.emit(ev, &res);
        if let Some(m) = max {
            self.schedule(m, Timer::RecMax(name.to_string(), g));
        }
    }

    /// `pb`, a playback of the recording `rec`'s channel, is over; `next` is the channel's
    /// next playback. Returns the one to play now: `next` if it was queued before the
    /// recording, else none (it waits for the recording, which starts once nothing is left
    /// ahead of it).
    fn playback_done_before_recording(
        &mut self,
        rec: &str,
        pb: &str,
        next: Option<String>,
    ) -> Option<String> {
        let Some(r) = self.media.live.get_mut(rec) else {
            return next;
        };
        r.ahead.retain(|x| x != pb);
        if next.as_ref().is_some_and(|n| r.ahead.contains(n)) {
            return next;
        }
        if r.blocked && r.ahead.is_empty() {
            r.blocked = false;
            let (delay, g) = (r.start_delay, r.gen);
            self.schedule(delay, Timer::RecStart(rec.to_string(), g));
        }
        None
    }

    pub(super) fn rec_elapsed(&self, r: &LiveRec) -> Duration {
        match r.state {
            "recording" => r.accumulated + self.clock.now.saturating_sub(r.started),
            _ => r.accumulated,
        }
    }

    /// Ends a live recording; `done` stores it, `canceled` discards it.
    pub(super) fn finish_recording(&mut self, name: &str, state: &'static str) {
        self.end_recording(name, state, None);
    }

    /// Ends a live recording; a `failed` one carries `cause`.
    pub(super) fn end_recording(&mut self, name: &str, state: &'static str, cause: Option<&str>) {
        let Some(r) = self.media.live.get(name) else {
            return;
        };
        // Its command had not run yet (queued behind the channel's playbacks, or not picked
        // up; `canceled` is a disregarded stop: not started either) when the channel or bridge
        // went away: Asterisk drops the queued command (`control_flush_queue`) and the
        // recording with it, without an event.
        if matches!(r.state, "queued" | "canceled") && state == "done" {
            self.drop_unstarted_recording(name);
            return;
        }
        let elapsed = self.rec_elapsed(r);
        let dur = elapsed.as_secs();
        let format = r.format.clone();
        let target = r.target.clone();
        let mut rj = self.live_json(name);
        rj["state"] = json!(state);
        let ty = if state == "failed" {
            "RecordingFailed"
        } else {
            "RecordingFinished"
        };
        if state == "done" {
            rj["duration"] = json!(dur);
            if r.max_silence.is_some() {
                let from = self.clock.now.saturating_sub(elapsed);
                let talk = self.talk_heard(&target, from).min(elapsed).as_secs();
                rj["talking_duration"] = json!(talk);
                rj["silence_duration"] = json!(dur.saturating_sub(talk));
            }
        }
        if state == "failed" {
            if let Some(c) = cause {
                rj["cause"] = json!(c);
            }
        }
        let mut ev = self.event(ty);
        ev.insert("recording".to_string(), rj);
        let res = self.rec_res(name);
        self.emit(ev, &res);
        self.media.live.remove(name);
        if state == "done" {
            self.media.stored.insert(
                name.to_string(),
                StoredRec {
                    format,
                    duration_s: dur,
                },
            );
        }
        self.release_recording_target(name, &target);
    }

    /// A recording whose command never ran: gone without an event (its live record too).
    fn drop_unstarted_recording(&mut self, name: &str) {
        let Some(r) = self.media.live.remove(name) else {
            return;
        };
        self.release_recording_target(name, &r.target);
    }

    /// The recording `name` of `target` is over: the target can be recorded again, and a
    /// channel's playbacks queued behind it play.
    fn release_recording_target(&mut self, name: &str, target: &str) {
        match target.split_once(':') {
            Some(("channel", c)) => {
                let mut waiting = None;
                if let Some(ch) = self.channels.by_id.get_mut(c) {
                    if ch.recording.as_deref() == Some(name) {
                        ch.recording = None;
                        // The playbacks queued behind the recording now play.
                        waiting = ch.playbacks.front().cloned();
                    }
                }
                if let Some(pb) = waiting {
                    if self
                        .media
                        .playbacks
                        .get(&pb)
                        .is_some_and(|p| matches!(p.state, PbState::Queued | PbState::Canceled))
                    {
                        self.play_current(&pb);
                    }
                }
            }
            Some(("bridge", b)) => {
                if let Some(br) = self.bridges.by_id.get_mut(b) {
                    if br.recording.as_deref() == Some(name) {
                        br.recording = None;
                    }
                }
            }
            _ => {}
        }
    }
}
