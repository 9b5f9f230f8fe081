//! Why an op was refused. Refused ops change nothing; the message names the problem.

use serde::{Deserialize, Serialize};

/// A deterministic refusal of an op by the shadow tree. Every replica refuses the same ops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("parent node '{0}' does not exist in the synced tree")]
    UnknownParent(String),
    #[error("node '{0}' does not exist in the synced tree")]
    UnknownPath(String),
    #[error("parent '{parent}' already has a child named '{name}'")]
    DuplicateName { parent: String, name: String },
    #[error("invalid node name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid node path '{path}': {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("invalid property name '{name}': {reason}")]
    InvalidProperty { name: String, reason: String },
    #[error("the SyncedTree root itself cannot be despawned or changed")]
    RootNotAllowed,
    #[error("scene path must not be empty")]
    EmptyScene,
    /// A node would hold more distinct synced properties than [`crate::MAX_PROPERTIES`].
    #[error("node '{path}' already has {max} synced properties: no more may be added")]
    TooManyProperties { path: String, max: usize },
    /// Peer `peer` changed or despawned a node that another peer owns.
    #[error("peer {peer} may not change '{path}': it is owned by {}", owner_name(*owner))]
    NotOwner { path: String, owner: u64, peer: u64 },
    /// A peer spawned a node for another owner.
    #[error("peer {peer} may not spawn a node owned by {}", owner_name(*owner))]
    ForeignOwner { owner: u64, peer: u64 },
    /// A compare-and-set found another value; `found` is what it found (`None`: never set).
    #[error("compare-and-set of '{path}'.{property} refused: expected {expected}, found {found}")]
    CompareFailed {
        path: String,
        property: String,
        expected: String,
        found: String,
    },
}

fn owner_name(owner: u64) -> String {
    if owner == crate::SERVER_PEER {
        "the servers".to_owned()
    } else {
        format!("peer {owner}")
    }
}
