//! State machine safety: no two servers apply different entries at one index, and a server's
//! applied index never goes back while it runs.

use super::{show, NodeSample, Term, Violation};
use std::collections::{BTreeMap, HashMap};
use synctree_raft::NodeId;

const NAME: &str = "state machine safety";

/// Remembers the term of the entry applied at each index, and each server's last.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: HashMap<u64, (Term, NodeId)>,
    last: BTreeMap<NodeId, (u64, u64)>,
}

impl StateMachineSafety {
    pub fn check(&mut self, nodes: &[NodeSample]) -> Result<(), Violation> {
        for n in nodes {
            let Some((index, term)) = n.applied else {
                continue;
            };
            let (first_term, who) = *self.applied.entry(index).or_insert((term, n.id));
            if first_term != term {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "index {index}: server {who} applied an entry of {}, server {} one of {}",
                        show(first_term),
                        n.id,
                        show(term)
                    ),
                ));
            }
            match self.last.insert(n.id, (n.incarnation, index)) {
                Some((inc, before)) if inc == n.incarnation && index < before => {
                    return Err(Violation::new(
                        NAME,
                        format!(
                            "server {}'s applied index went back from {before} to {index}",
                            n.id
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: u64, incarnation: u64, index: u64, term: u64) -> NodeSample {
        NodeSample {
            id,
            incarnation,
            term: (term, 1),
            is_leader: false,
            applied: Some((index, (term, 1))),
        }
    }

    #[test]
    fn different_entries_at_one_index_and_going_back_are_caught() {
        let mut s = StateMachineSafety::default();
        s.check(&[at(1, 1, 5, 2), at(2, 1, 5, 2)])
            .expect("same entry");
        assert!(s.check(&[at(3, 1, 5, 3)]).is_err());
        let mut s = StateMachineSafety::default();
        s.check(&[at(1, 1, 5, 2)]).expect("first");
        s.check(&[at(1, 2, 3, 2)])
            .expect("a restart may start lower");
        assert!(s.check(&[at(1, 2, 2, 2)]).is_err());
    }
}
