//! The canonical text form of a synced tree, shared by the shadow tree and the live
//! Godot tree so that replicas (and the model against the scene) compare as strings.
//!
//! ```text
//! Player (res://player.tscn)
//!   .health = 100
//!   .position = Vector2(1.0, 2.0)
//!   Gun (Node2D, owner 77)
//! ```
//! Children in tree order, two spaces of indent per level, properties sorted by name.

use crate::Value;

/// Appends the line of a node at `depth` (0 for children of the SyncedTree); the owner is
/// shown when it is a peer other than the servers.
pub fn write_node_header(out: &mut String, depth: usize, name: &str, scene: &str, owner: u64) {
    indent(out, depth);
    out.push_str(name);
    out.push_str(" (");
    out.push_str(scene);
    if owner != crate::SERVER_PEER {
        out.push_str(", owner ");
        out.push_str(&owner.to_string());
    }
    out.push_str(")\n");
}

/// Appends the line of a synced property of the node at `depth`.
pub fn write_property(out: &mut String, depth: usize, property: &str, value: &Value) {
    indent(out, depth + 1);
    out.push('.');
    out.push_str(property);
    out.push_str(" = ");
    out.push_str(&value.canonical());
    out.push('\n');
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}
