//! The nodes an instance knows, as their proxies' announcements tell: sans-IO (the
//! announcements and the time are passed in; the events to report come out).
//!
//! A node is down when its proxy says goodbye or stops announcing itself (three of its
//! intervals, at least `min_silence`); it is lost when it stayed down for `lost_after`: its
//! proxy did not come back, and the events of its resources will not come.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use crate::cluster::{NodeEvent, NodeInfo};
use crate::wire::Announce;

#[derive(Debug)]
struct Node {
    info: NodeInfo,
    last_seen: Instant,
    interval: Duration,
    up: bool,
    /// When (this instance's clock, and the wall clock) and why it went down (while `!up`).
    down: Option<(Instant, SystemTime, String)>,
    /// Down for longer than the lost limit (reported once per time down).
    lost: bool,
    /// Down because it went silent (not by its proxy's goodbye).
    silent: bool,
}

/// The node table. See the module docs.
#[derive(Debug)]
pub(crate) struct NodeTable {
    nodes: HashMap<String, Node>,
    /// A node is down when silent for three intervals and at least this long.
    min_silence: Duration,
    /// A node down this long is lost (`None`: never).
    lost_after: Option<Duration>,
}

impl NodeTable {
    pub(crate) fn new(min_silence: Duration, lost_after: Option<Duration>) -> NodeTable {
        NodeTable {
            nodes: HashMap::new(),
            min_silence,
            lost_after,
        }
    }

    /// The nodes up now, by id.
    pub(crate) fn up(&self) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self
            .nodes
            .values()
            .filter(|n| n.up)
            .map(|n| n.info.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Since when (wall clock) and why `node` is down, if it is known and down.
    pub(crate) fn down(&self, node: &str) -> Option<(SystemTime, String)> {
        match self.nodes.get(node) {
            Some(n) if !n.up => Some(match &n.down {
                Some((_, since, reason)) => (*since, reason.clone()),
                None => (
                    SystemTime::now(),
                    "its proxy stopped announcing itself".into(),
                ),
            }),
            _ => None,
        }
    }

    /// Whether `node` is down because its proxy went silent (not by a goodbye: a stopping
    /// proxy still answers the requests it received).
    pub(crate) fn went_silent(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| !n.up && n.silent)
    }

    /// An announcement (or a goodbye) received at `now` (`wall`: the wall clock then); the
    /// events it causes.
    pub(crate) fn announce(
        &mut self,
        a: &Announce,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<NodeEvent> {
        let mut out = Vec::new();
        let info = NodeInfo {
            id: a.node.clone(),
            apps: a.apps.clone(),
            asterisk_version: a.asterisk_version.clone(),
            connected: a.connected,
        };
        let interval = Duration::from_millis(a.interval_ms.clamp(10, 3_600_000));
        if !a.up {
            if let Some(n) = self.nodes.get_mut(&a.node) {
                if n.up {
                    n.up = false;
                    n.silent = false;
                    let reason = "its proxy stopped".to_string();
                    n.down = Some((now, wall, reason.clone()));
                    out.push(NodeEvent::Down {
                        id: a.node.clone(),
                        reason,
                    });
                }
            }
            return out;
        }
        let entry = self.nodes.entry(a.node.clone()).or_insert_with(|| Node {
            info: info.clone(),
            last_seen: now,
            interval,
            up: false,
            down: None,
            lost: false,
            silent: false,
        });
        let link_changed = entry.up && entry.info.connected != info.connected;
        entry.info = info.clone();
        entry.last_seen = now;
        entry.interval = interval;
        if link_changed {
            out.push(NodeEvent::Asterisk {
                id: info.id.clone(),
                connected: info.connected,
            });
        }
        if !entry.up {
            entry.up = true;
            entry.down = None;
            entry.lost = false;
            out.push(NodeEvent::Up(info));
        }
        out
    }

    /// The time is `now` (`wall`: the wall clock then): the nodes silent too long go down
    /// (their [`NodeEvent::Down`] events), and the ids of the nodes down for longer than the
    /// lost limit, newly lost (each once per time down; the caller ends their resources and
    /// reports [`NodeEvent::Lost`]).
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        wall: SystemTime,
    ) -> (Vec<NodeEvent>, Vec<String>) {
        let mut events = Vec::new();
        let mut lost = Vec::new();
        for (id, n) in self.nodes.iter_mut() {
            let limit = (n.interval * 3).max(self.min_silence);
            let silent = now.saturating_duration_since(n.last_seen);
            if n.up && silent > limit {
                n.up = false;
                n.silent = true;
                let reason = format!("no announcement for {} ms", silent.as_millis());
                n.down = Some((now, wall, reason.clone()));
                events.push(NodeEvent::Down {
                    id: id.clone(),
                    reason,
                });
            }
            if let (false, false, Some(after), Some((since, _, _))) =
                (n.up, n.lost, self.lost_after, &n.down)
            {
                if now.saturating_duration_since(*since) >= after {
                    n.lost = true;
                    lost.push(id.clone());
                }
            }
        }
        lost.sort();
        (events, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(node: &str, up: bool) -> Announce {
        Announce {
            node: node.to_string(),
            apps: vec!["hello".into()],
            asterisk_version: "22.5.0".into(),
            proxy_version: "0".into(),
            interval_ms: 100,
            connected: true,
            up,
            startup_time: String::new(),
        }
    }

    #[test]
    fn a_silent_node_goes_down_then_is_lost_once_after_the_limit() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let s = Duration::from_secs;
        let mut table = NodeTable::new(s(2), Some(s(10)));
        let ev = table.announce(&announce("a", true), t0, wall);
        assert!(matches!(&ev[..], [NodeEvent::Up(i)] if i.id == "a"));
        table.announce(&announce("b", true), t0, wall);

        // Silent 2 s: not down yet (at least min_silence). Then down, not lost.
        let (ev, lost) = table.expire(t0 + s(2), wall);
        assert!(ev.is_empty() && lost.is_empty());
        table.announce(&announce("b", true), t0 + s(2), wall);
        let (ev, lost) = table.expire(t0 + s(3), wall);
        assert!(
            matches!(&ev[..], [NodeEvent::Down { id, .. }] if id == "a"),
            "{ev:?}"
        );
        assert!(lost.is_empty());
        assert!(table.down("a").is_some());
        assert!(table.went_silent("a"));
        assert!(table.down("b").is_none());
        assert!(!table.went_silent("b"));

        // Lost 10 s after it went down, once.
        let (ev, lost) = table.expire(t0 + s(12), wall);
        assert!(lost.is_empty());
        // b, silent since 2 s, goes down at 12 s.
        assert!(
            matches!(&ev[..], [NodeEvent::Down { id, .. }] if id == "b"),
            "{ev:?}"
        );
        let (ev, lost) = table.expire(t0 + s(13), wall);
        assert_eq!(lost, ["a"]);
        assert!(ev.is_empty(), "{ev:?}");
        let (_, lost) = table.expire(t0 + s(20), wall);
        assert!(lost.is_empty(), "reported once");
        table.announce(&announce("b", true), t0 + s(20), wall);

        // Back, then down and lost again: reported again.
        let ev = table.announce(&announce("a", true), t0 + s(21), wall);
        assert!(matches!(&ev[..], [NodeEvent::Up(_)]));
        let ev = table.announce(&announce("a", false), t0 + s(22), wall);
        assert!(matches!(&ev[..], [NodeEvent::Down { reason, .. }] if reason.contains("stopped")));
        assert!(!table.went_silent("a"), "a goodbye");
        let (_, lost) = table.expire(t0 + s(31), wall);
        assert!(lost.is_empty());
        let (_, lost) = table.expire(t0 + s(32), wall);
        assert_eq!(lost, ["a"]);
    }

    #[test]
    fn without_a_lost_limit_a_node_is_never_lost() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut table = NodeTable::new(Duration::from_secs(2), None);
        table.announce(&announce("a", true), t0, wall);
        let (ev, _) = table.expire(t0 + Duration::from_secs(3), wall);
        assert_eq!(ev.len(), 1);
        let (_, lost) = table.expire(t0 + Duration::from_secs(1_000_000), wall);
        assert!(lost.is_empty());
    }

    #[test]
    fn a_link_change_is_reported_while_up() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut table = NodeTable::new(Duration::from_secs(2), None);
        table.announce(&announce("a", true), t0, wall);
        let mut a = announce("a", true);
        a.connected = false;
        let ev = table.announce(&a, t0, wall);
        assert!(
            matches!(&ev[..], [NodeEvent::Asterisk { id, connected: false }] if id == "a"),
            "{ev:?}"
        );
        assert!(!table.up()[0].connected);
    }
}
