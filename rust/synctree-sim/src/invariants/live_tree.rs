//! The live tree follows the log: a tree built only from the stream of committed effects
//! (what a server's scene tree applies, frame by frame) takes every effect cleanly and equals
//! the replicated tree whenever both are at the same log index.

use super::Violation;
use std::collections::HashMap;
use synctree_proto::ShadowTree;
use synctree_raft::{Applied, NodeId, SharedState};

const NAME: &str = "live tree";

struct Mirror {
    incarnation: u64,
    tree: ShadowTree,
    index: u64,
    /// The index last compared with the replicated tree.
    checked: u64,
}

/// One mirror per running server, fed its applied stream.
#[derive(Default)]
pub struct LiveTrees {
    mirrors: HashMap<NodeId, Mirror>,
    compared: u64,
}

impl LiveTrees {
    /// Applies what server `node` (in its start `incarnation`) sent its live tree.
    pub fn apply(
        &mut self,
        node: NodeId,
        incarnation: u64,
        applied: Applied,
    ) -> Result<(), Violation> {
        let mirror = self.mirrors.entry(node).or_insert_with(|| Mirror {
            incarnation,
            tree: ShadowTree::new(),
            index: 0,
            checked: 0,
        });
        if mirror.incarnation != incarnation {
            // A restart: the new process's live tree starts empty.
            *mirror = Mirror {
                incarnation,
                tree: ShadowTree::new(),
                index: 0,
                checked: 0,
            };
        }
        match applied {
            Applied::Reset { index, tree } => {
                mirror.tree = tree;
                mirror.index = index;
            }
            Applied::Effects { index, effects } => {
                if index < mirror.index {
                    return Err(Violation::new(
                        NAME,
                        format!(
                            "server {node}'s live tree was sent index {index} after {}",
                            mirror.index
                        ),
                    )
                    .at(index));
                }
                for e in &effects {
                    mirror.tree.apply_effect(e).map_err(|err| {
                        Violation::new(
                            NAME,
                            format!("server {node}: a committed effect at {index} does not apply: {err}"),
                        )
                        .at(index)
                    })?;
                }
                mirror.index = index;
            }
        }
        Ok(())
    }

    /// How many times a live tree was compared with its replicated tree.
    pub fn compared(&self) -> u64 {
        self.compared
    }

    /// Compares server `node`'s live mirror with its replicated tree, if both are at the same
    /// index (and that index was not compared yet).
    pub fn compare(&mut self, node: NodeId, state: &SharedState) -> Result<(), Violation> {
        let Some(mirror) = self.mirrors.get_mut(&node) else {
            return Ok(());
        };
        let index = state.last_applied.map(|l| l.index).unwrap_or(0);
        if index != mirror.index || mirror.checked == index {
            return Ok(());
        }
        mirror.checked = index;
        self.compared += 1;
        let (live, replicated) = (mirror.tree.dump(), state.tree.dump());
        if live == replicated {
            return Ok(());
        }
        Err(Violation::new(
            NAME,
            format!(
                "server {node} at index {index}: the live tree differs from the replicated one\n\
                 --- live:\n{live}--- replicated:\n{replicated}"
            ),
        )
        .at(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synctree_proto::Op;

    fn spawn(name: &str) -> Op {
        Op::Spawn {
            parent: String::new(),
            name: name.into(),
            scene: "Node".into(),
            props: vec![],
            owner: synctree_proto::SERVER_PEER,
        }
    }

    #[test]
    fn a_live_tree_that_misses_an_effect_is_caught() {
        let mut replicated = SharedState::default();
        let a = replicated.tree.apply(&spawn("A")).expect("A");
        let b = replicated.tree.apply(&spawn("B")).expect("B");
        replicated.last_applied = Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            2,
        ));
        let mut live = LiveTrees::default();
        live.apply(
            1,
            1,
            Applied::Effects {
                index: 2,
                effects: vec![a.clone(), b],
            },
        )
        .expect("applies");
        live.compare(1, &replicated).expect("equal");
        live.apply(
            2,
            1,
            Applied::Effects {
                index: 2,
                effects: vec![a],
            },
        )
        .expect("applies");
        let v = live.compare(2, &replicated).expect_err("B is missing");
        assert!(v.detail.contains("differs"), "{v}");
    }
}
