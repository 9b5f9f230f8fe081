//! Election safety: at most one leader per term. openraft's terms are leader ids
//! `(term, node id)` (candidates of one term compete, the higher id wins), so the check is
//! that every leader holds a vote naming itself, and no leader id has two leaders.

use super::{show, NodeSample, Term, Violation};
use std::collections::BTreeMap;
use synctree_raft::NodeId;

const NAME: &str = "election safety";

/// Remembers who led each term.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    /// Records the leaders among `nodes`.
    pub fn check(&mut self, nodes: &[NodeSample]) -> Result<(), Violation> {
        for n in nodes.iter().filter(|n| n.is_leader) {
            if n.term.1 != n.id {
                return Err(Violation::new(
                    NAME,
                    format!("server {} leads under the vote {}", n.id, show(n.term)),
                ));
            }
            let first = *self.leaders.entry(n.term).or_insert(n.id);
            if first != n.id {
                return Err(Violation::new(
                    NAME,
                    format!("{} has two leaders: {} and {}", show(n.term), first, n.id),
                ));
            }
        }
        Ok(())
    }

    /// Terms that had a leader.
    pub fn terms_led(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(id: u64, term: u64, voted: u64) -> NodeSample {
        NodeSample {
            id,
            incarnation: 1,
            term: (term, voted),
            is_leader: true,
            applied: None,
        }
    }

    #[test]
    fn a_second_leader_in_one_term_is_caught() {
        let mut e = ElectionSafety::default();
        e.check(&[leader(1, 2, 1)]).expect("one leader");
        e.check(&[leader(1, 2, 1), leader(2, 3, 2)])
            .expect("new term");
        e.check(&[leader(3, 3, 3)])
            .expect("a higher id in one term is another leader id");
        let v = e
            .check(&[leader(3, 2, 1)])
            .expect_err("leads under another's vote");
        assert!(v.detail.contains("T2-N1"), "{v}");
    }
}
