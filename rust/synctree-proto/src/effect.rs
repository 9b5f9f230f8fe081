//! What the live scene tree must do after the shadow tree applied an op.

use crate::Value;
pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Names one node of a [`crate::ShadowTree`]: given at spawn, never reused, equal on every
/// replica (it is part of the replicated state). The SyncedTree root is [`ROOT_KEY`].
///
/// Effects name nodes by key rather than path, so the live tree finds the node it must
/// change with one integer lookup instead of resolving a path.
pub type NodeKey = u64;

/// The key of the SyncedTree root itself.
pub const ROOT_KEY: NodeKey = 0;

/// A change to carry out on the live scene tree, in log order, on the main thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Instance `scene` as the last child of node `parent`, named `name`, set `props` on it,
    /// give it multiplayer authority `owner`, and know it as `node` from now on.
    #[serde(rename = "S")]
    Spawned {
        node: NodeKey,
        parent: NodeKey,
        name: String,
        scene: String,
        props: Vec<(String, Value)>,
        owner: u64,
    },
    /// Free `node` and its subtree.
    #[serde(rename = "D")]
    Despawned { node: NodeKey },
    /// Set `property` of `node` to `value`. The name is inline when short (most are), so
    /// the main thread frees no heap string per property event.
    #[serde(rename = "P")]
    PropertySet {
        node: NodeKey,
        property: CompactString,
        value: Value,
    },
}
