//! Reading the canonical dump (`SyncedTree.dump()`): one line per node
//! `<indent><name> (<scene>)`, then its properties `<indent>  .<prop> = <value>`, two spaces
//! of indent per depth.

use std::collections::BTreeMap;

/// One node of a dump, addressed by its path relative to the SyncedTree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DumpNode {
    pub scene: String,
    /// Property name -> canonical value text.
    pub props: BTreeMap<String, String>,
}

/// Parses a dump into path -> node (paths like `A/B`). Lines it cannot read are ignored.
pub fn parse_dump(dump: &str) -> BTreeMap<String, DumpNode> {
    let mut nodes = BTreeMap::new();
    // The path of the last node seen at each depth.
    let mut stack: Vec<String> = Vec::new();
    for line in dump.lines() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        if let Some(prop) = trimmed.strip_prefix('.') {
            let depth = indent / 2;
            if depth == 0 || depth > stack.len() {
                continue;
            }
            if let Some((name, value)) = prop.split_once(" = ") {
                let owner = &stack[depth - 1];
                if let Some(node) = nodes.get_mut(owner) {
                    let node: &mut DumpNode = node;
                    node.props.insert(name.to_owned(), value.to_owned());
                }
            }
            continue;
        }
        let depth = indent / 2;
        let Some((name, scene)) = trimmed.split_once(" (") else {
            continue;
        };
        let scene = scene.strip_suffix(')').unwrap_or(scene);
        stack.truncate(depth);
        let path = match stack.last() {
            Some(parent) => format!("{parent}/{name}"),
            None => name.to_owned(),
        };
        stack.push(path.clone());
        nodes.insert(
            path,
            DumpNode {
                scene: scene.to_owned(),
                props: BTreeMap::new(),
            },
        );
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_dump() {
        let dump = "A (Node2D)\n  .position = Vector2(1.0, 2.0)\n  B (res://b.tscn)\n    .hp = 3\nC (Node)\n";
        let nodes = parse_dump(dump);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes["A"].props["position"], "Vector2(1.0, 2.0)");
        assert_eq!(nodes["A/B"].scene, "res://b.tscn");
        assert_eq!(nodes["A/B"].props["hp"], "3");
        assert!(nodes["C"].props.is_empty());
    }
}
