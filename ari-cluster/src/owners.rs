//! Which application instance owns which resource, as the proxy sees it.
//!
//! An instance owns a channel it took the `StasisStart` of (a claim), or a resource it created
//! (from the REST request's path and query before it is sent, from the response after), and
//! the resources an event pairs with one it owns (the peer of its `Dial`, a bridge its channel
//! entered). Ownership ends with the resource's final event, or a linger after `StasisEnd`
//! (Asterisk may send nothing more for the channel). The table is bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_proto::events::ResourceKind;

/// How long a channel stays owned after its `StasisEnd` (a `continue` may bring it back).
pub(crate) const STASIS_END_LINGER: Duration = Duration::from_secs(5);

/// The kinds with owners, as an index into [`Owners`]' maps.
fn slot(kind: ResourceKind) -> Option<usize> {
    match kind {
        ResourceKind::Channel => Some(0),
        ResourceKind::Bridge => Some(1),
        ResourceKind::Playback => Some(2),
        ResourceKind::Recording => Some(3),
        _ => None,
    }
}

/// What [`Owners::release`] forgot: how many resources, and the channels and bridges.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    pub(crate) n: usize,
    pub(crate) channels: Vec<Box<str>>,
    pub(crate) bridges: Vec<Box<str>>,
}

/// The table: one map per kind, so that a lookup borrows the id (no allocation per event).
#[derive(Debug)]
pub(crate) struct Owners {
    maps: [HashMap<Box<str>, Arc<str>>; 4],
    ending: VecDeque<(Instant, Box<str>)>,
    max: usize,
    pub(crate) refused: u64,
}

impl Owners {
    pub(crate) fn new(max: usize) -> Owners {
        Owners {
            maps: Default::default(),
            ending: VecDeque::new(),
            max,
            refused: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }

    pub(crate) fn get(&self, kind: ResourceKind, id: &str) -> Option<&Arc<str>> {
        self.maps[slot(kind)?].get(id)
    }

    /// Records `owner` for the resource unless it has one.
    pub(crate) fn claim(&mut self, kind: ResourceKind, id: &str, owner: &Arc<str>) {
        let Some(i) = slot(kind) else {
            return;
        };
        if self.maps[i].contains_key(id) {
            return;
        }
        if self.len() >= self.max {
            self.refused += 1;
            return;
        }
        self.maps[i].insert(id.into(), owner.clone());
    }

    pub(crate) fn remove(&mut self, kind: ResourceKind, id: &str) {
        if let Some(i) = slot(kind) {
            self.maps[i].remove(id);
        }
    }

    /// Empties the table, giving back every resource with its owner (Asterisk restarted).
    pub(crate) fn take_all(&mut self) -> Vec<(ResourceKind, Box<str>, Arc<str>)> {
        const KINDS: [ResourceKind; 4] = [
            ResourceKind::Channel,
            ResourceKind::Bridge,
            ResourceKind::Playback,
            ResourceKind::Recording,
        ];
        self.ending.clear();
        let mut out = Vec::with_capacity(self.len());
        for (kind, map) in KINDS.into_iter().zip(&mut self.maps) {
            out.extend(map.drain().map(|(id, owner)| (kind, id, owner)));
        }
        out
    }

    /// Forgets every resource `owner` owns; how many, and the channels and the bridges among
    /// them.
    pub(crate) fn release(&mut self, owner: &str) -> Released {
        let mut released = Released::default();
        for (i, map) in self.maps.iter_mut().enumerate() {
            let before = map.len();
            map.retain(|id, o| {
                let keep = &**o != owner;
                if !keep && i == 0 {
                    released.channels.push(id.clone());
                } else if !keep && i == 1 {
                    released.bridges.push(id.clone());
                }
                keep
            });
            released.n += before - map.len();
        }
        released
    }

    /// The channel left the application: forgotten after [`STASIS_END_LINGER`].
    pub(crate) fn ending(&mut self, now: Instant, id: &str) {
        if self.maps[0].contains_key(id) {
            self.ending.push_back((now + STASIS_END_LINGER, id.into()));
        }
    }

    /// Forgets the channels whose linger has passed.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.ending.front() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.ending.pop_front() {
                self.maps[0].remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_owner_wins_and_the_table_is_bounded() {
        let mut o = Owners::new(2);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        o.claim(ResourceKind::Channel, "1", &a);
        o.claim(ResourceKind::Channel, "1", &b);
        assert_eq!(o.get(ResourceKind::Channel, "1").map(|s| &**s), Some("a"));
        o.claim(ResourceKind::Bridge, "1", &b);
        assert_eq!(o.get(ResourceKind::Bridge, "1").map(|s| &**s), Some("b"));
        o.claim(ResourceKind::Playback, "p", &b);
        assert_eq!(o.refused, 1);
        assert!(o.get(ResourceKind::Playback, "p").is_none());
        o.claim(ResourceKind::Endpoint, "PJSIP/x", &a);
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn stasis_end_lingers() {
        let mut o = Owners::new(10);
        let a: Arc<str> = "a".into();
        let t0 = Instant::now();
        o.claim(ResourceKind::Channel, "1", &a);
        o.ending(t0, "1");
        o.expire(t0);
        assert!(o.get(ResourceKind::Channel, "1").is_some());
        o.expire(t0 + STASIS_END_LINGER);
        assert!(o.get(ResourceKind::Channel, "1").is_none());
    }

    #[test]
    fn releasing_an_owner_forgets_only_its_resources() {
        let mut o = Owners::new(10);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        o.claim(ResourceKind::Channel, "1", &a);
        o.claim(ResourceKind::Bridge, "x", &a);
        o.claim(ResourceKind::Channel, "2", &b);
        let released = o.release("a");
        assert_eq!(released.n, 2);
        assert_eq!(released.channels, vec![Box::<str>::from("1")]);
        assert_eq!(released.bridges, vec![Box::<str>::from("x")]);
        assert!(o.get(ResourceKind::Channel, "1").is_none());
        assert!(o.get(ResourceKind::Bridge, "x").is_none());
        assert_eq!(o.get(ResourceKind::Channel, "2").map(|s| &**s), Some("b"));
        assert_eq!(o.release("a"), Released::default());
    }
}
