//! Channels that left Stasis: when their subscriptions end unless another event of them comes
//! ([`SessionConfig::stasis_end_linger`](super::SessionConfig::stasis_end_linger)).
//!
//! Asterisk sends no `ChannelDestroyed` to an application for a channel it only followed
//! because the channel was in its Stasis (an incoming call that hung up or went back to the
//! dialplan): its last event is `StasisEnd`. Without this, the subscriptions of such a channel
//! would live for ever.

use std::collections::BTreeMap;
use std::time::Instant;

/// Deadlines of lingering channels: a map for lookups and an ordered queue for expiry, so
/// each operation is O(log n) however many channels linger.
#[derive(Debug, Default)]
pub(crate) struct Linger {
    by_id: BTreeMap<Box<str>, (Instant, u64)>,
    queue: BTreeMap<(Instant, u64), Box<str>>,
    seq: u64,
}

impl Linger {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn set(&mut self, id: &str, at: Instant) {
        self.remove(id);
        self.seq += 1;
        let key = (at, self.seq);
        let id: Box<str> = id.into();
        self.queue.insert(key, id.clone());
        self.by_id.insert(id, key);
    }

    /// Restarts the linger of `id` if it is lingering.
    pub(crate) fn touch(&mut self, id: &str, at: Instant) {
        if self.by_id.contains_key(id) {
            self.set(id, at);
        }
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(key) = self.by_id.remove(id) {
            self.queue.remove(&key);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.by_id.clear();
        self.queue.clear();
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// The next channel whose linger is over at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Box<str>> {
        let (&key, _) = self.queue.first_key_value()?;
        if key.0 > now {
            return None;
        }
        let id = self.queue.remove(&key)?;
        self.by_id.remove(&id);
        Some(id)
    }
}
