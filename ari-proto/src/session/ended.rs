//! Resources that recently received their final event, so that a subscription made after
//! the end ends at once instead of waiting for events that will never come
//! ([`Limits::max_ended_ids`](super::Limits::max_ended_ids)).
//!
//! A bounded record: the oldest id is forgotten first. One allocation per id; recording an
//! end costs one hash insertion, and routing another event costs nothing unless it creates a
//! resource while the record holds ids (one lookup then).

use std::collections::VecDeque;
use std::hash::BuildHasher;

use crate::events::{Event, ResourceKind};

struct Entry {
    kind: ResourceKind,
    id: Box<str>,
    /// Order of recording: the queue's copy of a forgotten entry no longer matches one
    /// recorded again later.
    seq: u64,
    hash: u64,
    /// For a live recording that ended with `RecordingFailed`: Asterisk's cause (empty when
    /// it gave none).
    failure: Option<Box<str>>,
}

/// The record: a hash table for lookups and the recording order for eviction.
pub(crate) struct EndedIds {
    table: hashbrown::HashTable<Entry>,
    /// `(hash, seq)` of each recording, oldest first; an entry forgotten meanwhile stays in
    /// the queue (and counts against the capacity) until it is evicted.
    order: VecDeque<(u64, u64)>,
    hasher: foldhash::fast::RandomState,
    seq: u64,
}

impl Default for EndedIds {
    fn default() -> Self {
        EndedIds {
            table: hashbrown::HashTable::new(),
            order: VecDeque::new(),
            hasher: foldhash::fast::RandomState::default(),
            seq: 0,
        }
    }
}

impl std::fmt::Debug for EndedIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndedIds")
            .field("ids", &self.table.len())
            .finish()
    }
}

impl EndedIds {
    fn hash(&self, kind: ResourceKind, id: &str) -> u64 {
        self.hasher.hash_one((kind, id))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn contains(&self, kind: ResourceKind, id: &str) -> bool {
        self.get(kind, id).is_some()
    }

    fn get(&self, kind: ResourceKind, id: &str) -> Option<&Entry> {
        if self.table.is_empty() {
            return None;
        }
        let hash = self.hash(kind, id);
        self.table
            .find(hash, |e| e.hash == hash && e.kind == kind && *e.id == *id)
    }

    /// Asterisk's cause (empty if none) when `kind`/`id` is recorded as ended by a failure
    /// (`RecordingFailed`).
    pub(crate) fn failure(&self, kind: ResourceKind, id: &str) -> Option<&str> {
        self.get(kind, id)?.failure.as_deref()
    }

    /// Records that `kind`/`id` ended, keeping at most `cap` recordings (0: none).
    pub(crate) fn record(&mut self, kind: ResourceKind, id: &str, cap: usize) {
        self.record_end(kind, id, cap, None);
    }

    /// [`EndedIds::record`], with the cause of a failure (`RecordingFailed`).
    fn record_end(&mut self, kind: ResourceKind, id: &str, cap: usize, failure: Option<&str>) {
        if cap == 0 {
            return;
        }
        self.forget(kind, id);
        while self.order.len() >= cap {
            let Some((hash, seq)) = self.order.pop_front() else {
                break;
            };
            if let Ok(e) = self.table.find_entry(hash, |e| e.seq == seq) {
                e.remove();
            }
        }
        self.seq += 1;
        let (seq, hash) = (self.seq, self.hash(kind, id));
        self.table.insert_unique(
            hash,
            Entry {
                kind,
                id: id.into(),
                seq,
                hash,
                failure: failure.map(Box::from),
            },
            |e| e.hash,
        );
        self.order.push_back((hash, seq));
    }

    /// Forgets that `kind`/`id` ended (it was created again); whether it was recorded.
    pub(crate) fn forget(&mut self, kind: ResourceKind, id: &str) -> bool {
        if self.table.is_empty() {
            return false;
        }
        let hash = self.hash(kind, id);
        match self
            .table
            .find_entry(hash, |e| e.hash == hash && e.kind == kind && *e.id == *id)
        {
            Ok(e) => {
                e.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Updates the record after `event`: its ended resource is recorded, a resource it
    /// creates again (a reused id) is forgotten.
    pub(crate) fn observe(&mut self, event: &Event, cap: usize) {
        if let Some(r) = event.ended_resource() {
            let failure = match event {
                Event::RecordingFailed(e) => Some(e.recording.cause.as_deref().unwrap_or("")),
                _ => None,
            };
            self.record_end(r.kind, r.id, cap, failure);
            return;
        }
        if self.table.is_empty() {
            return;
        }
        let created = match event {
            Event::StasisStart(e) => Some((ResourceKind::Channel, e.channel.id.as_str())),
            Event::ChannelCreated(e) => Some((ResourceKind::Channel, e.channel.id.as_str())),
            Event::BridgeCreated(e) => Some((ResourceKind::Bridge, e.bridge.id.as_str())),
            Event::PlaybackStarted(e) => Some((ResourceKind::Playback, e.playback.id.as_str())),
            Event::RecordingStarted(e) => {
                Some((ResourceKind::Recording, e.recording.name.as_str()))
            }
            _ => None,
        };
        if let Some((kind, id)) = created {
            self.forget(kind, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_ids_up_to_the_capacity() {
        let mut e = EndedIds::default();
        for i in 0..10 {
            e.record(ResourceKind::Channel, &format!("c{i}"), 4);
        }
        assert_eq!(e.len(), 4);
        assert!(!e.contains(ResourceKind::Channel, "c5"));
        for i in 6..10 {
            assert!(e.contains(ResourceKind::Channel, &format!("c{i}")), "c{i}");
        }
        assert!(!e.contains(ResourceKind::Bridge, "c9"), "kinds are apart");
    }

    #[test]
    fn forgotten_and_recorded_again_ids_stay_bounded() {
        let mut e = EndedIds::default();
        for _ in 0..100 {
            e.record(ResourceKind::Channel, "reused", 3);
            assert!(e.forget(ResourceKind::Channel, "reused"));
        }
        assert_eq!(e.len(), 0);
        assert!(e.order.len() <= 3);
        e.record(ResourceKind::Channel, "a", 3);
        e.record(ResourceKind::Channel, "a", 3);
        e.record(ResourceKind::Channel, "b", 3);
        e.record(ResourceKind::Channel, "c", 3);
        // The first "a" was recorded again: its stale place in the order is evicted first.
        assert_eq!(e.len(), 3);
        for id in ["a", "b", "c"] {
            assert!(e.contains(ResourceKind::Channel, id), "{id}");
        }
    }

    #[test]
    fn zero_capacity_records_nothing() {
        let mut e = EndedIds::default();
        e.record(ResourceKind::Playback, "p", 0);
        assert!(!e.contains(ResourceKind::Playback, "p"));
    }
}
