//! Log matching: two logs holding an entry with the same index and term hold the same entry,
//! and agree on everything before it.
//!
//! Every log store tells this invariant of each durable change (as a `LogObserver`), so it
//! keeps each server's durable log (positions and digests). Entries are compared with every
//! other log's entry at the same position; the whole-prefix half follows by induction from
//! also comparing the term of the entry just before. After a crash, the log found on disk
//! must be the one this invariant last saw.

use super::{show, Position, Term, Violation};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use synctree_raft::{LogObserver, LogRecord, NodeId};

const NAME: &str = "log matching";

/// One server's durable log as observed.
#[derive(Debug, Default, Clone)]
struct NodeLog {
    /// index -> (leader id, digest)
    entries: BTreeMap<u64, (Term, u64)>,
    /// Entries up to this index were purged (covered by a snapshot); its leader id if known.
    purged: Option<(u64, Option<Term>)>,
}

impl NodeLog {
    /// The term of the entry before `index`, if this log knows it.
    fn prev_term(&self, index: u64) -> Option<Term> {
        let prev = index.checked_sub(1)?;
        if let Some((term, _)) = self.entries.get(&prev) {
            return Some(*term);
        }
        match self.purged {
            Some((i, term)) if i == prev => term,
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    logs: BTreeMap<NodeId, NodeLog>,
    /// Every position ever held by some log: (digest, term of the entry before, who).
    seen: HashMap<Position, (u64, Option<Term>, NodeId)>,
    /// Entries removed by truncation: (who, position); committed ones must never be.
    truncated: Vec<(NodeId, Position)>,
    violations: Vec<Violation>,
}

/// The shared record of every server's durable log.
#[derive(Clone, Default)]
pub struct LogMatching {
    state: Arc<Mutex<State>>,
}

/// Whether a log holds a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    Holds,
    /// Purged up to this index (the position is in its snapshot, if it is at or below it).
    Purged(u64),
    /// The log has another entry (or nothing: `None`) at that index.
    Lacks(Option<Term>),
}

struct Observer {
    node: NodeId,
    shared: LogMatching,
}

impl LogMatching {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The observer to give server `node`'s log store.
    pub fn observer(&self, node: NodeId) -> Arc<dyn LogObserver> {
        Arc::new(Observer {
            node,
            shared: self.clone(),
        })
    }

    /// Forgets `node`'s log: it was given a fresh, empty disk.
    pub fn forget(&self, node: NodeId) {
        self.lock().logs.remove(&node);
    }

    /// Violations found since the last call.
    pub fn take_violations(&self) -> Vec<Violation> {
        std::mem::take(&mut self.lock().violations)
    }

    /// Entries removed by truncation since the last call.
    pub fn take_truncated(&self) -> Vec<(NodeId, Position)> {
        std::mem::take(&mut self.lock().truncated)
    }

    /// Whether `node`'s durable log holds `pos`.
    pub fn contains(&self, node: NodeId, pos: Position) -> Containment {
        let state = self.lock();
        let Some(log) = state.logs.get(&node) else {
            return Containment::Lacks(None);
        };
        match log.entries.get(&pos.0) {
            Some((term, _)) if *term == pos.1 => Containment::Holds,
            Some((term, _)) => Containment::Lacks(Some(*term)),
            None => match log.purged {
                Some((i, _)) if i >= pos.0 => Containment::Purged(i),
                _ => Containment::Lacks(None),
            },
        }
    }

    /// Compares what `node`'s storage holds after a crash with what was observed durable.
    pub fn check_recovered(&self, node: NodeId, on_disk: &[LogRecord]) -> Result<(), Violation> {
        let state = self.lock();
        let observed: Vec<(u64, Term, u64)> = state
            .logs
            .get(&node)
            .map(|l| l.entries.iter().map(|(i, (t, d))| (*i, *t, *d)).collect())
            .unwrap_or_default();
        let found: Vec<(u64, Term, u64)> = on_disk
            .iter()
            .map(|r| (r.index, (r.term, r.leader), r.digest))
            .collect();
        if observed == found {
            return Ok(());
        }
        let first = observed
            .iter()
            .zip(&found)
            .position(|(a, b)| a != b)
            .unwrap_or(observed.len().min(found.len()));
        Err(Violation::new(
            NAME,
            format!(
                "server {node}'s log changed across a crash: {} entries durable before, {} \
                 found on disk, first difference at position {first} ({:?} vs {:?})",
                observed.len(),
                found.len(),
                observed.get(first),
                found.get(first)
            ),
        ))
    }

    fn appended(&self, node: NodeId, records: &[LogRecord]) {
        let mut state = self.lock();
        let State {
            logs,
            seen,
            violations,
            ..
        } = &mut *state;
        let log = logs.entry(node).or_default();
        for r in records {
            let term = (r.term, r.leader);
            let prev = log.prev_term(r.index);
            if let Some((had, digest)) = log.entries.get(&r.index) {
                if (*had, *digest) != (term, r.digest) {
                    violations.push(
                        Violation::new(
                            NAME,
                            format!(
                                "server {node} overwrote entry {} ({}) with one of {} without \
                                 truncating it first",
                                r.index,
                                show(*had),
                                show(term)
                            ),
                        )
                        .at(r.index),
                    );
                }
            }
            log.entries.insert(r.index, (term, r.digest));
            let pos = (r.index, term);
            match seen.get(&pos) {
                None => {
                    seen.insert(pos, (r.digest, prev, node));
                }
                Some((digest, _, other)) if *digest != r.digest => {
                    violations.push(
                        Violation::new(
                            NAME,
                            format!(
                                "entry {} of {} differs between servers {other} and {node}",
                                r.index,
                                show(term)
                            ),
                        )
                        .at(r.index),
                    );
                }
                Some((_, Some(p), other)) if prev.is_some_and(|q| q != *p) => {
                    violations.push(
                        Violation::new(
                            NAME,
                            format!(
                                "entry {} of {} follows {} on server {other} but {} on server \
                             {node}: the logs disagree before it",
                                r.index,
                                show(term),
                                show(*p),
                                show(prev.unwrap_or_default())
                            ),
                        )
                        .at(r.index),
                    );
                }
                Some((_, None, _)) if prev.is_some() => {
                    // Learn the predecessor from the log that knows it.
                    if let Some(e) = seen.get_mut(&pos) {
                        e.1 = prev;
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn truncated(&self, node: NodeId, index: u64) {
        let mut state = self.lock();
        let State {
            logs, truncated, ..
        } = &mut *state;
        let log = logs.entry(node).or_default();
        let removed = log.entries.split_off(&index);
        truncated.extend(removed.into_iter().map(|(i, (t, _))| (node, (i, t))));
    }

    fn purged(&self, node: NodeId, index: u64) {
        let mut state = self.lock();
        let log = state.logs.entry(node).or_default();
        let term = log.entries.get(&index).map(|(t, _)| *t).or_else(|| {
            // Purged again at the same index: keep the term learnt the first time.
            log.purged.filter(|(i, _)| *i == index).and_then(|(_, t)| t)
        });
        log.entries = log.entries.split_off(&(index + 1));
        if log.purged.is_none_or(|(i, _)| i <= index) {
            log.purged = Some((index, term));
        }
    }
}

impl LogObserver for Observer {
    fn appended(&self, entries: &[LogRecord]) {
        self.shared.appended(self.node, entries);
    }
    fn truncated(&self, index: u64) {
        self.shared.truncated(self.node, index);
    }
    fn purged(&self, index: u64) {
        self.shared.purged(self.node, index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, term: u64, digest: u64) -> LogRecord {
        LogRecord {
            index,
            term,
            leader: 1,
            digest,
        }
    }

    #[test]
    fn equal_logs_pass_and_a_different_entry_at_one_position_is_caught() {
        let lm = LogMatching::default();
        let (a, b) = (lm.observer(1), lm.observer(2));
        a.appended(&[rec(0, 0, 10), rec(1, 1, 11), rec(2, 1, 12)]);
        b.appended(&[rec(0, 0, 10), rec(1, 1, 11)]);
        assert!(lm.take_violations().is_empty());
        b.appended(&[rec(2, 1, 99)]);
        let v = lm.take_violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("entry 2 of T1-N1"), "{}", v[0]);
    }

    #[test]
    fn a_differing_prefix_is_caught_at_the_next_equal_position() {
        let lm = LogMatching::default();
        let (a, b) = (lm.observer(1), lm.observer(2));
        a.appended(&[rec(1, 1, 11), rec(2, 2, 12), rec(3, 3, 13)]);
        b.appended(&[rec(1, 1, 11), rec(2, 1, 22), rec(3, 3, 13)]);
        let v = lm.take_violations();
        assert!(
            v.iter().any(|v| v.detail.contains("disagree before")),
            "{v:?}"
        );
    }

    #[test]
    fn truncation_and_purge_update_the_view_and_recovery_is_compared() {
        let lm = LogMatching::default();
        let a = lm.observer(1);
        a.appended(&[rec(1, 1, 11), rec(2, 1, 12), rec(3, 1, 13)]);
        a.truncated(3);
        a.appended(&[rec(3, 2, 23)]);
        assert!(lm.take_violations().is_empty());
        assert_eq!(lm.take_truncated(), vec![(1, (3, (1, 1)))]);
        a.purged(2);
        assert_eq!(lm.contains(1, (1, (1, 1))), Containment::Purged(2));
        assert_eq!(lm.contains(1, (3, (2, 1))), Containment::Holds);
        assert_eq!(
            lm.contains(1, (3, (1, 1))),
            Containment::Lacks(Some((2, 1)))
        );
        lm.check_recovered(1, &[rec(3, 2, 23)]).expect("same log");
        let v = lm.check_recovered(1, &[]).expect_err("an entry vanished");
        assert!(v.detail.contains("changed across a crash"), "{v}");
    }
}
