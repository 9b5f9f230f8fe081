//! Committed never lost: an entry once committed stays in the log (or the snapshot) of every
//! later leader, and no server truncates it away.
//!
//! An entry is known committed when some server applied it; the committing leader's term is
//! at most that server's term at that moment, so every leader of a higher term must hold it.

use super::{show, Containment, LogMatching, NodeSample, Position, Term, Violation};
use std::collections::{BTreeMap, HashMap};
use synctree_raft::NodeId;

const NAME: &str = "committed never lost";

#[derive(Debug, Default)]
pub struct CommittedNeverLost {
    /// index -> leader id of every entry known committed.
    committed: HashMap<u64, Term>,
    /// For each leader id that knew of commits: the highest entry it knew committed (a
    /// leader of a higher id must hold it, and by log matching all before it).
    facts: BTreeMap<Term, Position>,
}

impl CommittedNeverLost {
    /// Entries truncated since the last step must not be committed ones; then learns what
    /// `nodes` applied, and checks that every leader holds what it must.
    pub fn check(
        &mut self,
        nodes: &[NodeSample],
        logs: &LogMatching,
        truncated: &[(NodeId, Position)],
    ) -> Result<(), Violation> {
        for (node, (index, term)) in truncated {
            if self.committed.get(index) == Some(term) {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "server {node} truncated committed entry {index} ({})",
                        show(*term)
                    ),
                ));
            }
        }
        for n in nodes {
            if let Some(pos) = n.applied {
                self.learn(pos, n.term);
            }
        }
        for leader in nodes.iter().filter(|n| n.is_leader) {
            let Some(pos) = self
                .facts
                .range(..leader.term)
                .map(|(_, pos)| pos)
                .max_by_key(|pos| pos.0)
            else {
                continue;
            };
            match logs.contains(leader.id, *pos) {
                Containment::Holds => {}
                Containment::Purged(upto) if upto >= pos.0 => {}
                other => {
                    return Err(Violation::new(
                        NAME,
                        format!(
                            "leader {} ({}) lacks committed entry {} ({}): {other:?}",
                            leader.id,
                            show(leader.term),
                            pos.0,
                            show(pos.1)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    fn learn(&mut self, pos: Position, known_term: Term) {
        if self.committed.insert(pos.0, pos.1).is_some() {
            return;
        }
        let best = self.facts.entry(known_term).or_insert(pos);
        if pos.0 > best.0 {
            *best = pos;
        }
    }

    /// Entries known committed.
    pub fn count(&self) -> usize {
        self.committed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synctree_raft::LogRecord;

    fn node(id: u64, term: u64, leader: bool, applied: Option<(u64, u64)>) -> NodeSample {
        NodeSample {
            id,
            incarnation: 1,
            term: (term, id),
            is_leader: leader,
            applied: applied.map(|(i, t)| (i, (t, 1))),
        }
    }

    fn rec(index: u64, term: u64) -> LogRecord {
        LogRecord {
            index,
            term,
            leader: 1,
            digest: index * 100 + term,
        }
    }

    #[test]
    fn a_leader_without_a_committed_entry_and_truncating_one_are_caught() {
        let logs = LogMatching::default();
        logs.observer(1).appended(&[rec(1, 1), rec(2, 1)]);
        logs.observer(2).appended(&[rec(1, 1)]);
        let mut c = CommittedNeverLost::default();
        c.check(&[node(1, 1, true, Some((2, 1)))], &logs, &[])
            .expect("the leader that committed it");
        // Server 2 leads term 2 without entry 2: committed entries were lost.
        let v = c
            .check(&[node(2, 2, true, None)], &logs, &[])
            .expect_err("lost");
        assert!(v.detail.contains("lacks committed entry 2"), "{v}");
        let v = c
            .check(&[], &logs, &[(3, (2, (1, 1)))])
            .expect_err("truncated");
        assert!(v.detail.contains("truncated committed entry 2"), "{v}");
        c.check(&[], &logs, &[(3, (2, (7, 3)))])
            .expect("an uncommitted entry at that index may go");
    }
}
