//! Client-side prediction: a game client shows its own writes to opted-in properties at once,
//! then reconciles with the committed order.
//!
//! ```text
//!   set_synced (predicted) ─▶ show the value now, remember it as pending (in call order)
//!   committed value applied ─▶ remember it; while writes are pending, show the newest again
//!   a pending write settles ─▶ drop it; if it was the newest, show the committed value
//!                              (or the newest still pending); if that differs from what was
//!                              predicted, the prediction was rolled back: report it
//! ```
//! Settling happens once the live tree has applied the write's log index, so the committed
//! value seen then already includes the write and everything ordered before it.
//!
//! This module only keeps the books (no Godot calls), so it is tested on its own.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::live::PropId;
use synctree_proto::NodeKey;

/// One predicted property of one node.
struct Target<V> {
    committed: V,
    /// Writes not settled yet, in the order they were made.
    pending: VecDeque<(u64, V)>,
}

/// What to show after a predicted write settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled<V> {
    pub node: NodeKey,
    pub property: PropId,
    /// The value to show now (the committed one, or a newer write still pending).
    pub show: V,
    /// What the settled write had shown.
    pub predicted: V,
    /// The display changes away from the prediction: a rollback to report.
    pub rolled_back: bool,
}

/// The books of one SyncedTree's predictions.
pub struct Predictions<V> {
    /// Opted-in (path, property) pairs.
    enabled: HashSet<(String, String)>,
    targets: HashMap<(NodeKey, PropId), Target<V>>,
    tickets: HashMap<u64, (NodeKey, PropId)>,
}

impl<V> Default for Predictions<V> {
    fn default() -> Self {
        Predictions {
            enabled: HashSet::new(),
            targets: HashMap::new(),
            tickets: HashMap::new(),
        }
    }
}

impl<V: Clone + PartialEq> Predictions<V> {
    pub fn enable(&mut self, path: &str, property: &str, on: bool) {
        let k = (path.to_owned(), property.to_owned());
        if on {
            self.enabled.insert(k);
        } else {
            self.enabled.remove(&k);
        }
    }

    pub fn is_enabled(&self, path: &str, property: &str) -> bool {
        !self.enabled.is_empty()
            && self
                .enabled
                .contains(&(path.to_owned(), property.to_owned()))
    }

    /// Writes not settled yet.
    pub fn pending(&self) -> usize {
        self.tickets.len()
    }

    /// A predicted write `ticket` of `value` was made; `shown` is what the node shows now
    /// (its committed value when nothing is pending). The caller shows `value`.
    pub fn predict(&mut self, ticket: u64, node: NodeKey, property: PropId, shown: V, value: V) {
        let target = self
            .targets
            .entry((node, property))
            .or_insert_with(|| Target {
                committed: shown,
                pending: VecDeque::new(),
            });
        target.pending.push_back((ticket, value));
        self.tickets.insert(ticket, (node, property));
    }

    /// A committed value was applied to a node; returns the value to show instead, while
    /// writes of this client are pending.
    #[inline]
    pub fn committed(&mut self, node: NodeKey, property: PropId, value: &V) -> Option<V> {
        if self.targets.is_empty() {
            return None;
        }
        let target = self.targets.get_mut(&(node, property))?;
        target.committed = value.clone();
        target.pending.back().map(|(_, v)| v.clone())
    }

    /// Write `ticket` was committed and its log index applied here. A client's writes
    /// commit in the order it made them or not at all (one server forwards them in order),
    /// so the committed value now follows every earlier write of this client to the same
    /// property too: those settle with it, silently (their outcomes may arrive later, or
    /// earlier writes of one log entry after later ones). `None` if it was not a predicted
    /// write or already settled.
    pub fn settle_committed(&mut self, ticket: u64) -> Option<Settled<V>> {
        let key = *self.tickets.get(&ticket)?;
        let target = self.targets.get_mut(&key)?;
        let pos = target.pending.iter().position(|(t, _)| *t == ticket)?;
        for (earlier, _) in target.pending.drain(..pos) {
            self.tickets.remove(&earlier);
        }
        self.settle(ticket)
    }

    /// Every pending write ends unsettled (the SyncedTree stopped): what to show on each
    /// predicted property, its committed value.
    pub fn clear(&mut self) -> Vec<Settled<V>> {
        self.tickets.clear();
        self.targets
            .drain()
            .filter_map(|((node, property), target)| {
                let (_, predicted) = target.pending.back()?.clone();
                Some(Settled {
                    node,
                    property,
                    rolled_back: predicted != target.committed,
                    show: target.committed,
                    predicted,
                })
            })
            .collect()
    }

    /// Write `ticket` settled without committing (refused, or its outcome unknown); `None`
    /// if it was not a predicted write.
    pub fn settle(&mut self, ticket: u64) -> Option<Settled<V>> {
        let (node, property) = self.tickets.remove(&ticket)?;
        let target = self.targets.get_mut(&(node, property))?;
        let pos = target.pending.iter().position(|(t, _)| *t == ticket)?;
        let was_newest = pos + 1 == target.pending.len();
        let (_, predicted) = target.pending.remove(pos)?;
        let show = target
            .pending
            .back()
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| target.committed.clone());
        if target.pending.is_empty() {
            self.targets.remove(&(node, property));
        }
        Some(Settled {
            node,
            property,
            rolled_back: was_newest && show != predicted,
            show,
            predicted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_prediction_changes_nothing() {
        let mut p = Predictions::default();
        p.predict(1, 7, 0, 0, 5);
        // Our own write commits: keep showing it.
        assert_eq!(p.committed(7, 0, &5), Some(5));
        let s = p.settle(1).unwrap();
        assert_eq!((s.show, s.rolled_back), (5, false));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn a_refused_prediction_rolls_back_to_the_committed_value() {
        let mut p = Predictions::default();
        p.predict(1, 7, 0, 3, 5);
        let s = p.settle(1).unwrap();
        assert_eq!((s.show, s.predicted, s.rolled_back), (3, 5, true));
    }

    #[test]
    fn a_write_ordered_after_ours_wins_and_pending_ones_are_reapplied() {
        let mut p = Predictions::default();
        p.predict(1, 7, 0, 0, 5);
        p.predict(2, 7, 0, 0, 6);
        // Ours (5) commits, then another peer's 9: we keep showing our pending 6.
        assert_eq!(p.committed(7, 0, &5), Some(6));
        assert_eq!(p.committed(7, 0, &9), Some(6));
        let s = p.settle(1).unwrap();
        assert_eq!((s.show, s.rolled_back), (6, false), "6 is still pending");
        // 6 is refused: back to the committed 9.
        let s = p.settle(2).unwrap();
        assert_eq!((s.show, s.predicted, s.rolled_back), (9, 6, true));
        assert_eq!(p.settle(2), None);
    }

    #[test]
    fn writes_of_one_entry_settle_in_any_order_without_a_rollback() {
        let mut p = Predictions::default();
        p.predict(1, 7, 0, 0, 5);
        p.predict(2, 7, 0, 0, 6);
        // One log entry holds both: applied in order, then their outcomes arrive, the
        // later write's first.
        assert_eq!(p.committed(7, 0, &5), Some(6));
        assert_eq!(p.committed(7, 0, &6), Some(6));
        let s = p.settle_committed(2).unwrap();
        assert_eq!((s.show, s.predicted, s.rolled_back), (6, 6, false));
        assert_eq!(p.settle_committed(1), None, "settled with the later write");
        assert_eq!(p.pending(), 0);
        // In order, the same.
        p.predict(3, 7, 0, 6, 7);
        p.predict(4, 7, 0, 6, 8);
        assert_eq!(p.committed(7, 0, &7), Some(8));
        assert_eq!(p.committed(7, 0, &8), Some(8));
        let s = p.settle_committed(3).unwrap();
        assert_eq!((s.show, s.rolled_back), (8, false));
        let s = p.settle_committed(4).unwrap();
        assert_eq!((s.show, s.rolled_back), (8, false));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn clearing_shows_the_committed_values() {
        let mut p = Predictions::default();
        p.predict(1, 7, 0, 3, 5);
        p.predict(2, 7, 0, 3, 6);
        p.predict(3, 8, 1, 4, 4);
        let mut cleared = p.clear();
        cleared.sort_by_key(|s| s.node);
        let got: Vec<_> = cleared
            .iter()
            .map(|s| (s.node, s.show, s.predicted, s.rolled_back))
            .collect();
        assert_eq!(got, vec![(7, 3, 6, true), (8, 4, 4, false)]);
        assert_eq!(p.pending(), 0);
        assert_eq!(p.settle_committed(2), None);
        assert_eq!(p.committed(7, 0, &9), None, "nothing predicted any more");
    }

    #[test]
    fn a_later_committed_write_rolls_our_prediction_back() {
        let mut p = Predictions::default();
        p.predict(1, 7, 0, 0, 5);
        assert_eq!(p.committed(7, 0, &5), Some(5));
        assert_eq!(p.committed(7, 0, &8), Some(5));
        let s = p.settle(1).unwrap();
        assert_eq!((s.show, s.rolled_back), (8, true));
    }
}
