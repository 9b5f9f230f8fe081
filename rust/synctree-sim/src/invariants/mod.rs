//! The invariants a simulation checks, one per file. Each keeps what it has seen and is
//! told of what happens (samples of every server each step, log changes as they become
//! durable, completed writes); a breach is a [`Violation`] naming the invariant.
//!
//! ```text
//!   log store ──appended/truncated/purged──▶ log_matching ──(per-node logs)──▶ committed_never_lost
//!   every step: Raft metrics + state machine ──▶ election_safety, state_machine_safety,
//!                                                trees_equal, committed_never_lost
//!   completed writes (stamp, index) ──▶ hlc_order
//!   committed effects (the live tree's stream) ──▶ live_tree
//! ```

mod committed_never_lost;
mod election_safety;
pub mod hlc_order;
mod live_tree;
mod log_matching;
mod state_machine_safety;
mod trees_equal;

pub use committed_never_lost::CommittedNeverLost;
pub use election_safety::ElectionSafety;
pub use hlc_order::HlcOrder;
pub use live_tree::LiveTrees;
pub use log_matching::{Containment, LogMatching};
pub use state_machine_safety::StateMachineSafety;
pub use trees_equal::TreesEqual;

use std::fmt;
use synctree_raft::NodeId;

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
    /// The log index it concerns, if one (reports then show every server's entry there).
    pub index: Option<u64>,
}

impl Violation {
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            detail: detail.into(),
            index: None,
        }
    }

    pub fn at(mut self, index: u64) -> Self {
        self.index = Some(index);
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// openraft's leader id, `(term, node id)`: openraft lets candidates of one term compete
/// and orders them by node id too, so this pair plays the part of Raft's term.
pub type Term = (u64, NodeId);

/// A log position: (index, leader id of the entry).
pub type Position = (u64, Term);

/// A leader id as openraft prints it.
pub fn show(t: Term) -> String {
    format!("T{}-N{}", t.0, t.1)
}

/// One server as seen at one step.
#[derive(Debug, Clone)]
pub struct NodeSample {
    pub id: NodeId,
    /// Counts the server's starts: state that may go back on a restart is compared within one.
    pub incarnation: u64,
    /// Its vote: the leader id it follows or stands as.
    pub term: Term,
    pub is_leader: bool,
    /// The last entry its state machine applied.
    pub applied: Option<Position>,
}
