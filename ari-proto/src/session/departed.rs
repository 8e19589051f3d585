//! Channels that left the application and bridges destroyed, since they were last (re)created:
//! a playback or recording the application queued on one of them whose answer is handled only
//! after that departure ([`Session::queued_on`](super::Session::queued_on)) was dropped by
//! Asterisk, and its waits end then.
//!
//! Bounded ([`Limits::max_ended_ids`](super::Limits::max_ended_ids)): the oldest departure is
//! forgotten first.

use std::collections::{HashSet, VecDeque};

use crate::events::{Event, ResourceKind};

type Key = (ResourceKind, Box<str>);

#[derive(Debug, Default)]
pub(crate) struct Departed {
    set: HashSet<Key>,
    /// Departures in order; an entry removed meanwhile stays here until evicted.
    order: VecDeque<Key>,
}

impl Departed {
    /// After routing `event`: a channel that left Stasis or was destroyed, or a bridge
    /// destroyed, departs; one (re)created or back in Stasis is present again.
    pub(crate) fn observe(&mut self, event: &Event, cap: usize) {
        let (kind, id, gone) = match event {
            Event::StasisEnd(e) => (ResourceKind::Channel, e.channel.id.as_str(), true),
            Event::ChannelDestroyed(e) => (ResourceKind::Channel, e.channel.id.as_str(), true),
            Event::BridgeDestroyed(e) => (ResourceKind::Bridge, e.bridge.id.as_str(), true),
            Event::StasisStart(e) => (ResourceKind::Channel, e.channel.id.as_str(), false),
            Event::ChannelCreated(e) => (ResourceKind::Channel, e.channel.id.as_str(), false),
            Event::BridgeCreated(e) => (ResourceKind::Bridge, e.bridge.id.as_str(), false),
            _ => return,
        };
        if !gone {
            if !self.set.is_empty() {
                self.set.remove(&(kind, Box::<str>::from(id)));
            }
            return;
        }
        if cap == 0 {
            return;
        }
        let key: Key = (kind, id.into());
        if self.set.contains(&key) {
            return;
        }
        while self.order.len() >= cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(key.clone());
        self.order.push_back(key);
    }

    pub(crate) fn contains(&self, kind: ResourceKind, id: &str) -> bool {
        !self.set.is_empty() && self.set.contains(&(kind, Box::<str>::from(id)))
    }
}
