//! The openraft type configuration of a synctree Raft group.

use crate::runtime::SyncRuntime;
use openraft::{BasicNode, Entry};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use synctree_proto::{EncodedBatch, OpOutcome};

/// Servers are numbered by the operator (`--synctree-id`), never 0.
pub type NodeId = u64;

/// What applying one batch produced: an outcome per event, in order (none when the entry
/// did not decode as a batch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub outcomes: Vec<OpOutcome>,
    /// The batch was not applied: a later batch from the same server was applied before it,
    /// and its own outcome (if it ever applied) is no longer remembered.
    pub stale: bool,
}

openraft::declare_raft_types!(
    /// The Raft types of one synctree shard.
    pub TypeConfig:
        D = EncodedBatch,
        R = BatchResponse,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = SyncRuntime,
);

/// A Raft node of a synctree shard.
pub type Raft = openraft::Raft<TypeConfig>;
