//! `/playbacks` and starting playbacks on channels and bridges.

use super::*;

impl Sim {
    // -----------------------------------------------------------------------------------
    // playbacks
    // -----------------------------------------------------------------------------------

    pub(super) fn play(&mut self, target: &str, sub: Option<&str>, p: &P<'_>) -> R {
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
        if self.media.playbacks.contains_key(&id) {
            return R::error(409, "Playback with the given ID already exists");
        }
        let lang = p
            .nonempty("lang")
            .or_else(|| {
                target
                    .strip_prefix("channel:")
                    .and_then(|c| self.channels.by_id.get(c))
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
            if let Some(pb) = self.media.playbacks.get(&id) {
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

    pub(super) fn r_playbacks(&mut self, m: &str, s: &[&str], p: &P<'_>) -> R {
        match (m, s) {
            ("GET", [id]) => match self.media.playbacks.contains_key(*id) {
                true => R::json(200, &self.playback_json(id)),
                false => R::error(404, "Playback not found"),
            },
            ("DELETE", [id]) => {
                let Some(state) = self.media.playbacks.get(*id).map(|p| p.state) else {
                    return R::error(404, "Playback not found");
                };
                match state {
                    // `playback_cancel`: marked, nothing published; it finishes at its turn.
                    PbState::Queued => {
                        if let Some(p) = self.media.playbacks.get_mut(*id) {
                            p.state = PbState::Canceled;
                        }
                    }
                    // `playback_noop`: stopping it again changes nothing.
                    PbState::Canceled => {}
                    PbState::Playing | PbState::Paused => self.finish_playback(id, "done"),
                }
                R::no_content()
            }
            ("POST", [id, "control"]) => {
                let Some(op) = p.nonempty("operation") else {
                    return R::error(400, "Missing parameter operation");
                };
                let Some(pb) = self.media.playbacks.get(*id).cloned() else {
                    return R::error(404, "Playback not found");
                };
                // The operations of the API description (stopping is `DELETE playbacks/{id}`).
                if !["pause", "unpause", "restart", "reverse", "forward"].contains(&op.as_str()) {
                    return R::error(400, "operation: Invalid enum value");
                }
                // `res_stasis_playback`'s operations table: queued, only `restart` (nothing to
                // do); paused, only `pause` (nothing to do) and `unpause`.
                let allowed = match pb.state {
                    PbState::Queued => op == "restart",
                    PbState::Paused => op == "pause" || op == "unpause",
                    PbState::Canceled => false,
                    PbState::Playing => true,
                };
                if !allowed {
                    return R::error(409, &format!("Can only {op} while media is playing"));
                }
                if pb.state == PbState::Queued {
                    return R::no_content();
                }
                let pos = self.pb_position(&pb);
                match op.as_str() {
                    "pause" if pb.state == PbState::Playing => {
                        if let Some(x) = self.media.playbacks.get_mut(*id) {
                            x.state = PbState::Paused;
                            x.offset = pos;
                            x.gen += 1_000_000;
                        }
                        self.talk_close(id);
                    }
                    "unpause" if pb.state == PbState::Paused => {
                        if let Some(x) = self.media.playbacks.get_mut(*id) {
                            x.state = PbState::Playing;
                        }
                        self.pb_seek(id, pos);
                        self.emit_playback("PlaybackStarted", id, None);
                    }
                    // `pause` of a paused one and `unpause` of a playing one: nothing to do.
                    "pause" | "unpause" => {}
                    "restart" => self.pb_seek(id, Duration::ZERO),
                    "reverse" => {
                        let to = pos.saturating_sub(pb.skip);
                        self.pb_seek(id, to);
                    }
                    "forward" => {
                        let to = pos.saturating_add(pb.skip);
                        self.pb_seek(id, pb.length.map_or(to, |l| to.min(l)));
                    }
                    _ => {}
                }
                R::no_content()
            }
            _ => not_found_resource(),
        }
    }
}
