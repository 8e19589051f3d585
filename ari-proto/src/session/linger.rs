//! Channels that left Stasis: when their subscriptions end unless another event of them comes
//! ([`SessionConfig::stasis_end_linger`](super::SessionConfig::stasis_end_linger)).
//!
//! Asterisk sends no `ChannelDestroyed` to an application for a channel it only followed
//! because the channel was in its Stasis (an incoming call that hung up or went back to the
//! dialplan): its last event is `StasisEnd`. Without this, the subscriptions of such a channel
//! would live for ever.
//!
//! Two of these are kept: the channels still followed (their subscriptions end with the
//! linger) and the channels nobody followed any more (only recorded as ended when it is over,
//! so that a handle taken late does not wait for ever).
//!
//! A third one holds the bridges the application destroyed
//! ([`Session::bridge_destroyed`](super::Session::bridge_destroyed)): Asterisk sends their
//! `BridgeDestroyed` only to applications subscribed to the bridge.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Deadlines of lingering channels: a hash map for lookups and an ordered queue for expiry.
/// A lookup by id hashes the id and compares one key (an ordered map of ids compared ~log2 n
/// ids, each in a heap block of its own: with thousands of channels lingering, each one a
/// cache miss); the queue is ordered by `(deadline, sequence)`, compared without reading
/// any id. Each operation is O(log n) at worst however many channels linger.
#[derive(Debug, Default)]
pub(crate) struct Linger {
    by_id: HashMap<Box<str>, (Instant, u64), foldhash::fast::RandomState>,
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

    pub(crate) fn contains(&self, id: &str) -> bool {
        !self.by_id.is_empty() && self.by_id.contains_key(id)
    }

    pub(crate) fn set(&mut self, id: &str, at: Instant) {
        if !self.reset(id, at) {
            self.seq += 1;
            let key = (at, self.seq);
            let id: Box<str> = id.into();
            self.queue.insert(key, id.clone());
            self.by_id.insert(id, key);
        }
    }

    /// Restarts the linger of `id` if it is lingering.
    pub(crate) fn touch(&mut self, id: &str, at: Instant) {
        self.reset(id, at);
    }

    /// Moves the deadline of `id` to `at` if it is lingering (one lookup, no allocation);
    /// returns whether it was.
    fn reset(&mut self, id: &str, at: Instant) -> bool {
        let Some(key) = self.by_id.get_mut(id) else {
            return false;
        };
        self.seq += 1;
        let old = std::mem::replace(key, (at, self.seq));
        let name = self.queue.remove(&old).unwrap_or_else(|| id.into());
        self.queue.insert((at, self.seq), name);
        true
    }

    pub(crate) fn remove(&mut self, id: &str) {
        self.take(id);
    }

    /// Stops the linger of `id`; its deadline if it was lingering.
    pub(crate) fn take(&mut self, id: &str) -> Option<Instant> {
        if self.by_id.is_empty() {
            return None;
        }
        let key = self.by_id.remove(id)?;
        self.queue.remove(&key);
        Some(key.0)
    }

    /// Stops every linger, giving back each id and deadline.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (Box<str>, Instant)> + '_ {
        self.by_id.clear();
        std::mem::take(&mut self.queue)
            .into_iter()
            .map(|((at, _), id)| (id, at))
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
