//! `/recordings`: live and stored recordings.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // recordings
    // -----------------------------------------------------------------------------------

    pub(super) fn record(&mut self, target: &str, p: &P<'_>) -> R {
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
        if self.media.live.contains_key(&name) {
            // Asterisk answers both conflicts (this one, and the stored recording with
            // `ifExists=fail` below) with the same `EEXIST` message.
            return R::error(
                409,
                &format!("Recording '{name}' already exists and can not be overwritten"),
            );
        }
        if self.media.stored.contains_key(&name) && if_exists == "fail" {
            return R::error(
                409,
                &format!("Recording '{name}' already exists and can not be overwritten"),
            );
        }
        let busy = match target.split_once(':') {
            Some(("channel", c)) => self
                .channels
                .by_id
                .get(c)
                .is_some_and(|ch| ch.recording.is_some()),
            Some(("bridge", b)) => self
                .bridges
                .by_id
                .get(b)
                .is_some_and(|br| br.recording.is_some()),
            _ => false,
        };
        if busy {
            return R::error(409, "Channel is already being recorded");
        }
        // `RecordingStarted` comes when the command runs (`res_stasis_recording`'s
        // `record_file` publishes it before `ast_play_and_record_full`); the beep (the `beep`
        // sound, 450 ms by default) plays after it, then the audio is recorded.
        let beep = if beep {
            self.cfg
                .media_durations
                .get("beep")
                .copied()
                .unwrap_or(Duration::from_millis(450))
        } else {
            Duration::ZERO
        };
        let delay = Duration::from_millis(20);
        // A channel runs its commands one after the other: the playbacks already queued on
        // it play first.
        let ahead: Vec<String> = match target.split_once(':') {
            Some(("channel", c)) => self
                .channels
                .by_id
                .get(c)
                .map(|ch| ch.playbacks.iter().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let g = self.next_gen();
        self.media.live.insert(
            name.clone(),
            LiveRec {
                name: name.clone(),
                format: format.clone(),
                target: target.to_string(),
                state: "queued",
                started: self.clock.now,
                accumulated: Duration::ZERO,
                max_duration: (max > 0).then(|| Duration::from_secs(max as u64)),
                max_silence: (max_silence > 0).then(|| Duration::from_secs(max_silence as u64)),
                terminate_on,
                gen: g,
                muted: false,
                ahead,
                blocked: false,
                start_delay: delay,
                beep,
            },
        );
        match target.split_once(':') {
            Some(("channel", c)) => {
                if let Some(ch) = self.channels.by_id.get_mut(c) {
                    ch.recording = Some(name.clone());
                }
            }
            Some(("bridge", b)) => {
                if let Some(br) = self.bridges.by_id.get_mut(b) {
                    br.recording = Some(name.clone());
                }
            }
            _ => {}
        }
        let resp = self.live_json(&name);
        self.schedule(delay, Timer::RecStart(name.clone(), g));
        R {
            status: 201,
            content_type: "application/json",
            body: resp.to_string().into_bytes(),
        }
    }

    /// `stop` or `cancel` of a recording that has not started yet (`queued`: its channel is
    /// busy, e.g. playing, or the command is not picked up yet). Asterisk disregards it: the
    /// state becomes `canceled` and nothing else happens; when its turn comes the recording
    /// starts anyway (`RecordingStarted`, state `recording`) and runs to its own end
    /// (`maxDurationSeconds`, silence, DTMF, hangup, or a later `stop`), as
    /// `res_stasis_recording`'s `recording_disregard` does. A second `stop`/`cancel` before
    /// it starts finds no operation for `canceled`: 409.
    fn disregard_recording(&mut self, name: &str) -> R {
        if let Some(r) = self.media.live.get_mut(name) {
            r.state = "canceled";
        }
        R::no_content()
    }

    pub(super) fn r_recordings(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", ["live", name]) => match self.media.live.contains_key(*name) {
                true => R::json(200, &self.live_json(name)),
                false => R::error(404, "Recording not found"),
            },
            ("DELETE", ["live", name]) => {
                let Some(state) = self.media.live.get(*name).map(|r| r.state) else {
                    return R::error(404, "Recording not found");
                };
                match state {
                    "queued" => self.disregard_recording(name),
                    "canceled" => R::error(409, "Recording not in session"),
                    _ => {
                        self.finish_recording(name, "canceled");
                        R::no_content()
                    }
                }
            }
            ("POST", ["live", name, op]) | ("DELETE", ["live", name, op]) => {
                let Some(r) = self.media.live.get(*name).cloned() else {
                    return R::error(404, "Recording not found");
                };
                match (m, *op) {
                    ("POST", "stop") => match r.state {
                        "queued" => self.disregard_recording(name),
                        "canceled" => R::error(409, "Recording not in session"),
                        _ => {
                            self.finish_recording(name, "done");
                            R::no_content()
                        }
                    },
                    ("POST", "pause") => {
                        if r.state == "recording" {
                            let el = self.rec_elapsed(&r);
                            if let Some(x) = self.media.live.get_mut(*name) {
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
                            let now = self.clock.now;
                            if let Some(x) = self.media.live.get_mut(*name) {
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
                        if !matches!(r.state, "recording" | "paused") {
                            return R::error(409, "Recording not in session");
                        }
                        if let Some(x) = self.media.live.get_mut(*name) {
                            x.muted = m == "POST";
                        }
                        R::no_content()
                    }
                    _ => not_found_resource(),
                }
            }
            ("GET", ["stored"]) => {
                let list: Vec<Value> = self
                    .media
                    .stored
                    .iter()
                    .map(|(n, r)| json!({"name": n, "format": r.format}))
                    .collect();
                R::json(200, &Value::Array(list))
            }
            ("GET", ["stored", name]) => match self.media.stored.get(*name) {
                Some(r) => R::json(200, &json!({"name": name, "format": r.format})),
                None => R::error(404, "Recording not found"),
            },
            ("DELETE", ["stored", name]) => match self.media.stored.remove(*name) {
                Some(_) => R::no_content(),
                None => R::error(404, "Recording not found"),
            },
            ("GET", ["stored", name, "file"]) => match self.media.stored.get(*name) {
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
                let Some(r) = self.media.stored.get(*name).cloned() else {
                    return R::error(404, "Recording not found");
                };
                if self.media.stored.contains_key(&dest) {
                    return R::error(
                        409,
                        "A recording with the same name already exists on the system",
                    );
                }
                let fmt = r.format.clone();
                self.media.stored.insert(dest.clone(), r);
                R::json(200, &json!({"name": dest, "format": fmt}))
            }
            _ => not_found_resource(),
        }
    }
}
