//! Simulated time, ids and the timer table.

use super::*;

/// Simulated time and the timer table.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// Time since the server started; never goes back.
    pub(super) now: Duration,
    /// Tie-breaker of timers due at the same instant (insertion order).
    pub(super) seq: u64,
    /// Generation counter for timers that can be invalidated.
    pub(super) gen: u64,
    pub(super) timers: BTreeMap<(Duration, u64), Timer>,
}

/// Id counters (uniqueids, Local and Snoop channel names).
#[derive(Debug, Default)]
pub(super) struct Ids {
    pub(super) uid: u64,
    pub(super) local_seq: u64,
    pub(super) snoop_seq: u64,
}

impl Sim {
    // -----------------------------------------------------------------------------------
    // time, ids, timers
    // -----------------------------------------------------------------------------------

    pub(super) fn advance(&mut self, now: Duration) {
        if now > self.clock.now {
            self.clock.now = now;
        }
    }

    pub(super) fn wall_ms(&self) -> u64 {
        self.cfg
            .wall_clock_base_ms
            .saturating_add(self.clock.now.as_millis() as u64)
    }

    pub(super) fn ts(&self) -> String {
        time::format_ms(self.wall_ms())
    }

    pub(super) fn next_uid(&mut self) -> String {
        let id = format!("{}.{}", self.wall_ms() / 1000, self.ids.uid);
        self.ids.uid += 1;
        id
    }

    pub(super) fn next_gen(&mut self) -> u64 {
        self.clock.gen += 1;
        self.clock.gen
    }

    pub(super) fn schedule(&mut self, after: Duration, t: Timer) {
        self.clock.seq += 1;
        self.clock
            .timers
            .insert((self.clock.now.saturating_add(after), self.clock.seq), t);
    }

    pub(super) fn fire(&mut self, t: Timer) {
        match t {
            Timer::Dialplan(id, g) => {
                if self
                    .channels
                    .by_id
                    .get(&id)
                    .is_some_and(|c| c.exec_gen == g && !c.hanging_up)
                {
                    self.advance_priority(&id);
                    self.run_dialplan(&id);
                }
            }
            Timer::MediaEnd(pb, g) => {
                if self.media.playbacks.get(&pb).is_some_and(|p| p.gen == g) {
                    self.media_done(&pb);
                }
            }
            Timer::RecMax(name, g) => {
                if self.media.live.get(&name).is_some_and(|r| r.gen == g) {
                    self.finish_recording(&name, "done");
                }
            }
            Timer::RecStart(name, g) => {
                if self.media.live.get(&name).is_some_and(|r| r.gen == g) {
                    self.recording_started(&name);
                }
            }
            Timer::Dtmf(id, d, dur) => self.dtmf_received(&id, d, dur),
            Timer::SipAnswer(id) => {
                if self
                    .channels
                    .by_id
                    .get(&id)
                    .is_some_and(|c| c.state != "Up" && !c.hanging_up)
                {
                    self.answer(&id);
                }
            }
            Timer::CallerHangup(id) => {
                if self.channels.by_id.contains_key(&id) {
                    self.remote_hangup(&id, 16);
                }
            }
            Timer::CallerAbandon(id) => {
                if self
                    .channels
                    .by_id
                    .get(&id)
                    .is_some_and(|c| c.state != "Up")
                {
                    self.remote_hangup(&id, 16);
                }
            }
            Timer::LocalStart(id) => self.local_start(&id),
            Timer::DialTimeout(id) => {
                let ringing = self
                    .channels
                    .by_id
                    .get(&id)
                    .is_some_and(|c| c.dialing.is_some() && c.state != "Up" && !c.hanging_up);
                if ringing {
                    self.emit_dial(&id, "NOANSWER");
                    if let Some(c) = self.channels.by_id.get_mut(&id) {
                        c.dialing = None;
                    }
                    let caller = self
                        .channels
                        .by_id
                        .get(&id)
                        .and_then(|c| c.dialed_by.clone());
                    self.remote_hangup(&id, 19);
                    if let Some(x) = caller {
                        self.resume_after_app(&x, "NOANSWER");
                    }
                }
            }
        }
    }
}
