//! What the live scene tree must do after the shadow tree applied an op.

use crate::Value;
use serde::{Deserialize, Serialize};

/// A change to carry out on the live scene tree, in log order, on the main thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Instance `scene` as the last child of `parent`, named `name`, and set `props` on it.
    Spawned {
        parent: String,
        name: String,
        scene: String,
        props: Vec<(String, Value)>,
    },
    /// Free the node at `path` and its subtree.
    Despawned { path: String },
    /// Set `property` of the node at `path` to `value`.
    PropertySet {
        path: String,
        property: String,
        value: Value,
    },
}
