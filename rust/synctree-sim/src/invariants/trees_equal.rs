//! Replicas' trees are equal at the same applied index: servers that applied the same log
//! prefix hold the same tree (names, order, scenes, properties) and the same sessions.

use super::Violation;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use synctree_raft::{NodeId, SharedState};

const NAME: &str = "trees equal";

/// Digest of the replicated state at each applied index, as first seen.
#[derive(Debug, Default)]
pub struct TreesEqual {
    /// index -> (digest, first server seen there)
    at: HashMap<u64, (u64, NodeId)>,
    last_seen: HashMap<NodeId, u64>,
}

/// A digest of a server's replicated state, and its canonical dump.
pub fn digest(state: &SharedState) -> (u64, String) {
    let dump = state.tree.dump();
    let mut h = DefaultHasher::new();
    dump.hash(&mut h);
    format!("{:?}", state.sessions).hash(&mut h);
    (h.finish(), dump)
}

impl TreesEqual {
    /// Compares `node`'s state (applied up to `index`) with what others had there. Cheap
    /// when the server applied nothing since its last sample.
    pub fn check(&mut self, node: NodeId, state: &SharedState) -> Result<(), Violation> {
        let index = state.last_applied.map(|l| l.index).unwrap_or(0);
        if self.last_seen.insert(node, index) == Some(index) {
            return Ok(());
        }
        let (d, dump) = digest(state);
        match self.at.get(&index) {
            None => {
                self.at.insert(index, (d, node));
                Ok(())
            }
            Some((first, _)) if *first == d => Ok(()),
            Some((_, other)) => Err(Violation::new(
                NAME,
                format!(
                    "servers {other} and {node} differ at applied index {index}; server \
                     {node} holds:\n{dump}"
                ),
            )
            .at(index)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};
    use synctree_proto::Op;

    fn state(index: u64, names: &[&str]) -> SharedState {
        let mut s = SharedState {
            last_applied: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            ..Default::default()
        };
        for n in names {
            s.tree
                .apply(&Op::Spawn {
                    parent: String::new(),
                    name: (*n).into(),
                    scene: "Node".into(),
                    props: vec![],
                    owner: synctree_proto::SERVER_PEER,
                })
                .expect("spawn");
        }
        s
    }

    #[test]
    fn different_trees_at_one_index_are_caught_with_both_dumps() {
        let mut t = TreesEqual::default();
        t.check(1, &state(4, &["A", "B"])).expect("first");
        t.check(2, &state(4, &["A", "B"])).expect("equal");
        t.check(2, &state(5, &["A"])).expect("another index");
        let v = t
            .check(3, &state(4, &["B", "A"]))
            .expect_err("order differs");
        assert!(v.detail.contains("index 4"), "{v}");
    }
}
