//! The shadow tree: the committed state of the synced subtree, without Godot.
//!
//! It validates each op, applies it deterministically and yields the [`Effect`] the live
//! scene must carry out. Refused ops leave it unchanged.

use crate::effect::{CompactString, NodeKey, ROOT_KEY};
use crate::path::{join, validate_name, validate_path, validate_property};
use crate::{dump, ApplyError, Effect, Op, Value, SERVER_PEER};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Node {
    parent: NodeKey,
    name: String,
    scene: String,
    /// The peer that may change or despawn it besides the servers.
    owner: u64,
    props: BTreeMap<String, Value>,
    children: Vec<NodeKey>,
    /// Children by name. Names come from clients: SipHash keeps crafted collisions cheap.
    by_name: HashMap<String, NodeKey>,
}

impl Node {
    fn new(name: String, scene: String) -> Self {
        Node {
            parent: ROOT_KEY,
            name,
            scene,
            owner: SERVER_PEER,
            props: BTreeMap::new(),
            children: Vec::new(),
            by_name: HashMap::new(),
        }
    }
}

/// The most distinct synced properties one node may hold: every name is kept by every
/// replica (and interned by every live tree), so a client may not add them without bound.
pub const MAX_PROPERTIES: usize = 256;

/// The replicated tree below a SyncedTree. Equal on every replica at the same log index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowTree {
    /// By key: keys are given here, never by clients, so a fast unkeyed hash is safe.
    nodes: FxHashMap<NodeKey, Node>,
    next_key: NodeKey,
}

/// A read-only view of one node, for walking the tree.
pub struct NodeView<'a> {
    pub key: NodeKey,
    pub parent: NodeKey,
    pub path: String,
    pub depth: usize,
    pub name: &'a str,
    pub scene: &'a str,
    pub owner: u64,
    pub props: &'a BTreeMap<String, Value>,
}

impl NodeView<'_> {
    /// The effect that makes this node, with its properties, under its parent.
    pub fn spawned(&self) -> Effect {
        Effect::Spawned {
            node: self.key,
            parent: self.parent,
            name: self.name.to_owned(),
            scene: self.scene.to_owned(),
            owner: self.owner,
            props: self
                .props
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl Default for ShadowTree {
    fn default() -> Self {
        let mut nodes = FxHashMap::default();
        nodes.insert(ROOT_KEY, Node::new(String::new(), String::new()));
        ShadowTree {
            nodes,
            next_key: ROOT_KEY + 1,
        }
    }
}

impl ShadowTree {
    /// An empty tree: only the SyncedTree root.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of synced nodes (the root not counted).
    pub fn len(&self) -> usize {
        self.nodes.len() - 1
    }

    /// True when no node is synced.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of the node at `path`, if there is one.
    pub fn lookup(&self, path: &str) -> Option<NodeKey> {
        if path.is_empty() {
            return Some(ROOT_KEY);
        }
        let mut key = ROOT_KEY;
        for part in path.split('/') {
            key = *self.nodes.get(&key)?.by_name.get(part)?;
        }
        Some(key)
    }

    /// The keys of the synced nodes along `path`, from the root's child down, as far as they
    /// exist (`"A/B/Sprite"` with `A/B` synced gives the keys of `A` and `A/B`): what a path
    /// to a node below synced ones, synced or not, lies under.
    pub fn keys_along(&self, path: &str) -> Vec<NodeKey> {
        let mut keys = Vec::new();
        if path.is_empty() {
            return keys;
        }
        let mut key = ROOT_KEY;
        for part in path.split('/') {
            match self.nodes.get(&key).and_then(|n| n.by_name.get(part)) {
                Some(k) => {
                    key = *k;
                    keys.push(key);
                }
                None => break,
            }
        }
        keys
    }

    /// True if a node exists at `path` (the root, `""`, always does).
    pub fn contains(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    /// The scene a node was spawned from.
    pub fn scene_of(&self, path: &str) -> Option<&str> {
        let key = self.lookup(path).filter(|k| *k != ROOT_KEY)?;
        self.nodes.get(&key).map(|n| n.scene.as_str())
    }

    /// Every synced property of the node at `path`, sorted by name.
    pub fn props_of(&self, path: &str) -> Option<&BTreeMap<String, Value>> {
        let key = self.lookup(path)?;
        self.nodes.get(&key).map(|n| &n.props)
    }

    /// The committed value of a synced property, if it was ever set.
    pub fn get(&self, path: &str, property: &str) -> Option<&Value> {
        let key = self.lookup(path)?;
        self.nodes.get(&key)?.props.get(property)
    }

    /// The owner of the node at `path` ([`SERVER_PEER`] for the root).
    pub fn owner_of(&self, path: &str) -> Option<u64> {
        let key = self.lookup(path)?;
        self.nodes.get(&key).map(|n| n.owner)
    }

    /// Validates and applies one op of a server's own. On error nothing changed.
    pub fn apply(&mut self, op: &Op) -> Result<Effect, ApplyError> {
        self.apply_owned(op.clone())
    }

    /// [`ShadowTree::apply`] taking the op, so its strings move into the effect.
    pub fn apply_owned(&mut self, op: Op) -> Result<Effect, ApplyError> {
        self.apply_as(SERVER_PEER, op)
    }

    /// Applies `op` proposed on behalf of `peer`. Servers ([`SERVER_PEER`]) may do
    /// anything valid; another peer may spawn only nodes it owns, and change or despawn
    /// only nodes it owns (a despawn: the whole subtree).
    pub fn apply_as(&mut self, peer: u64, op: Op) -> Result<Effect, ApplyError> {
        match op {
            Op::Spawn {
                parent,
                name,
                scene,
                props,
                owner,
            } => {
                if peer != SERVER_PEER && owner != peer {
                    return Err(ApplyError::ForeignOwner { owner, peer });
                }
                self.spawn(&parent, name, scene, props, owner)
            }
            Op::Despawn { path } => {
                if peer != SERVER_PEER {
                    self.check_owner_subtree(&path, peer)?;
                }
                self.despawn(&path)
            }
            Op::SetProperty {
                path,
                property,
                value,
            } => {
                if peer != SERVER_PEER {
                    self.check_owner(&path, peer)?;
                }
                self.set(&path, property, value)
            }
            Op::CompareAndSet {
                path,
                property,
                expected,
                value,
            } => {
                validate_path(&path)?;
                validate_property(&property)?;
                if peer != SERVER_PEER {
                    self.check_owner(&path, peer)?;
                }
                let found = self.get(&path, &property);
                if self.contains(&path) && found != expected.as_ref() {
                    let show = |v: Option<&Value>| match v {
                        Some(v) => format!("{v:?}"),
                        None => "nothing (never set)".to_owned(),
                    };
                    return Err(ApplyError::CompareFailed {
                        expected: show(expected.as_ref()),
                        found: show(found),
                        path,
                        property,
                    });
                }
                self.set(&path, property, value)
            }
        }
    }

    /// Refuses unless `peer` owns the node at `path` (a missing node is left to the op).
    fn check_owner(&self, path: &str, peer: u64) -> Result<(), ApplyError> {
        match self.lookup(path).and_then(|k| self.nodes.get(&k)) {
            Some(n) if n.owner != peer => Err(ApplyError::NotOwner {
                path: path.to_owned(),
                owner: n.owner,
                peer,
            }),
            _ => Ok(()),
        }
    }

    /// Refuses unless `peer` owns the node at `path` and everything below it.
    fn check_owner_subtree(&self, path: &str, peer: u64) -> Result<(), ApplyError> {
        let Some(top) = self.lookup(path) else {
            return Ok(());
        };
        let mut stack = vec![(top, path.to_owned())];
        while let Some((k, p)) = stack.pop() {
            let Some(n) = self.nodes.get(&k) else {
                continue;
            };
            if n.owner != peer {
                return Err(ApplyError::NotOwner {
                    path: p,
                    owner: n.owner,
                    peer,
                });
            }
            for c in &n.children {
                if let Some(child) = self.nodes.get(c) {
                    stack.push((*c, join(&p, &child.name)));
                }
            }
        }
        Ok(())
    }

    /// Replays an effect this tree's twin produced (the live side's mirror, tests). Keys are
    /// taken as given; an effect that does not fit this tree is refused and changes nothing.
    pub fn apply_effect(&mut self, effect: &Effect) -> Result<(), ApplyError> {
        match effect {
            Effect::Spawned {
                node,
                parent,
                name,
                scene,
                props,
                owner,
            } => {
                let p = self
                    .nodes
                    .get(parent)
                    .ok_or_else(|| ApplyError::UnknownParent(format!("#{parent}")))?;
                if p.by_name.contains_key(name) || self.nodes.contains_key(node) {
                    return Err(ApplyError::DuplicateName {
                        parent: format!("#{parent}"),
                        name: name.clone(),
                    });
                }
                self.insert(*node, *parent, name.clone(), scene.clone(), props.clone());
                if let Some(n) = self.nodes.get_mut(node) {
                    n.owner = *owner;
                }
                self.next_key = self.next_key.max(node + 1);
                Ok(())
            }
            Effect::Despawned { node } => {
                if *node == ROOT_KEY || !self.nodes.contains_key(node) {
                    return Err(ApplyError::UnknownPath(format!("#{node}")));
                }
                self.remove(*node);
                Ok(())
            }
            Effect::PropertySet {
                node,
                property,
                value,
            } => match self.nodes.get_mut(node).filter(|_| *node != ROOT_KEY) {
                Some(n) => {
                    n.props.insert(property.to_string(), value.clone());
                    Ok(())
                }
                None => Err(ApplyError::UnknownPath(format!("#{node}"))),
            },
        }
    }

    fn insert(
        &mut self,
        key: NodeKey,
        parent: NodeKey,
        name: String,
        scene: String,
        props: Vec<(String, Value)>,
    ) {
        let mut node = Node::new(name.clone(), scene);
        node.parent = parent;
        node.props.extend(props);
        self.nodes.insert(key, node);
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.push(key);
            p.by_name.insert(name, key);
        }
    }

    /// Removes `key` and its subtree (not the root).
    fn remove(&mut self, key: NodeKey) {
        let mut stack = vec![key];
        let mut top = None;
        while let Some(k) = stack.pop() {
            if let Some(node) = self.nodes.remove(&k) {
                if k == key {
                    top = Some((node.parent, node.name));
                }
                stack.extend(node.children);
            }
        }
        if let Some((parent, name)) = top {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.by_name.remove(&name);
                p.children.retain(|c| *c != key);
            }
        }
    }

    fn spawn(
        &mut self,
        parent: &str,
        name: String,
        scene: String,
        props: Vec<(String, Value)>,
        owner: u64,
    ) -> Result<Effect, ApplyError> {
        validate_path(parent)?;
        validate_name(&name)?;
        if scene.is_empty() {
            return Err(ApplyError::EmptyScene);
        }
        for (prop, _) in &props {
            validate_property(prop)?;
        }
        if props.len() > MAX_PROPERTIES {
            return Err(ApplyError::TooManyProperties {
                path: join(parent, &name),
                max: MAX_PROPERTIES,
            });
        }
        let parent_key = self
            .lookup(parent)
            .ok_or_else(|| ApplyError::UnknownParent(parent.to_owned()))?;
        if self.nodes[&parent_key].by_name.contains_key(&name) {
            return Err(ApplyError::DuplicateName {
                parent: parent.to_owned(),
                name,
            });
        }
        let key = self.next_key;
        self.next_key += 1;
        self.insert(key, parent_key, name.clone(), scene.clone(), props.clone());
        if let Some(n) = self.nodes.get_mut(&key) {
            n.owner = owner;
        }
        Ok(Effect::Spawned {
            node: key,
            parent: parent_key,
            name,
            scene,
            props,
            owner,
        })
    }

    fn despawn(&mut self, path: &str) -> Result<Effect, ApplyError> {
        validate_path(path)?;
        let key = self
            .lookup(path)
            .ok_or_else(|| ApplyError::UnknownPath(path.to_owned()))?;
        if key == ROOT_KEY {
            return Err(ApplyError::RootNotAllowed);
        }
        self.remove(key);
        Ok(Effect::Despawned { node: key })
    }

    fn set(&mut self, path: &str, property: String, value: Value) -> Result<Effect, ApplyError> {
        validate_path(path)?;
        validate_property(&property)?;
        let key = self
            .lookup(path)
            .ok_or_else(|| ApplyError::UnknownPath(path.to_owned()))?;
        if key == ROOT_KEY {
            return Err(ApplyError::RootNotAllowed);
        }
        let effect_property = CompactString::from(property.as_str());
        if let Some(node) = self.nodes.get_mut(&key) {
            if let Some(v) = node.props.get_mut(&property) {
                *v = value.clone();
            } else if node.props.len() >= MAX_PROPERTIES {
                return Err(ApplyError::TooManyProperties {
                    path: path.to_owned(),
                    max: MAX_PROPERTIES,
                });
            } else {
                node.props.insert(property, value.clone());
            }
        }
        Ok(Effect::PropertySet {
            node: key,
            property: effect_property,
            value,
        })
    }

    /// Visits every node in tree order (pre-order, children in order).
    pub fn walk(&self, mut visit: impl FnMut(&NodeView<'_>)) {
        let mut stack: Vec<(NodeKey, String, usize)> = Vec::new();
        if let Some(root) = self.nodes.get(&ROOT_KEY) {
            for child in root.children.iter().rev() {
                stack.push((*child, String::new(), 0));
            }
        }
        while let Some((key, parent_path, depth)) = stack.pop() {
            let Some(node) = self.nodes.get(&key) else {
                continue;
            };
            let path = join(&parent_path, &node.name);
            for child in node.children.iter().rev() {
                stack.push((*child, path.clone(), depth + 1));
            }
            visit(&NodeView {
                key,
                parent: node.parent,
                path,
                depth,
                name: &node.name,
                scene: &node.scene,
                owner: node.owner,
                props: &node.props,
            });
        }
    }

    /// This tree without the subtrees rooted at `hidden` (what a client that may not see them
    /// is sent), and every key left out.
    pub fn without(
        &self,
        hidden: &std::collections::HashSet<NodeKey>,
    ) -> (ShadowTree, std::collections::HashSet<NodeKey>) {
        let mut tree = self.clone();
        let mut gone = std::collections::HashSet::new();
        for root in hidden {
            if *root == ROOT_KEY || !tree.nodes.contains_key(root) {
                continue;
            }
            let mut stack = vec![*root];
            while let Some(k) = stack.pop() {
                if let Some(n) = tree.nodes.get(&k) {
                    stack.extend(n.children.iter().copied());
                    gone.insert(k);
                }
            }
            let _ = tree.apply_effect(&Effect::Despawned { node: *root });
        }
        (tree, gone)
    }

    /// The effects that build this tree from an empty SyncedTree, parents first.
    pub fn to_effects(&self) -> Vec<Effect> {
        let mut effects = Vec::with_capacity(self.len());
        self.walk(|n| effects.push(n.spawned()));
        effects
    }

    /// The canonical dump (see [`crate::write_node_header`]).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        self.walk(|n| {
            dump::write_node_header(&mut out, n.depth, n.name, n.scene, n.owner);
            for (prop, value) in n.props {
                dump::write_property(&mut out, n.depth, prop, value);
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(parent: &str, name: &str) -> Op {
        Op::Spawn {
            parent: parent.into(),
            name: name.into(),
            scene: "Node".into(),
            props: vec![],
            owner: SERVER_PEER,
        }
    }

    #[test]
    fn a_node_holds_a_bounded_number_of_properties() {
        let mut t = ShadowTree::new();
        t.apply(&spawn("", "A")).expect("spawn A");
        let set = |p: String| Op::SetProperty {
            path: "A".into(),
            property: p,
            value: Value::Int(1),
        };
        for i in 0..MAX_PROPERTIES {
            t.apply(&set(format!("p{i}"))).expect("under the limit");
        }
        let before = t.clone();
        assert_eq!(
            t.apply(&set("one_more".into())),
            Err(ApplyError::TooManyProperties {
                path: "A".into(),
                max: MAX_PROPERTIES
            })
        );
        assert_eq!(t, before);
        t.apply(&set("p0".into()))
            .expect("an existing one may still change");
    }

    #[test]
    fn refused_ops_change_nothing() {
        let mut t = ShadowTree::new();
        t.apply(&spawn("", "A")).expect("spawn A");
        let before = t.clone();
        assert_eq!(
            t.apply(&spawn("", "A")),
            Err(ApplyError::DuplicateName {
                parent: "".into(),
                name: "A".into()
            })
        );
        assert_eq!(
            t.apply(&spawn("X", "B")),
            Err(ApplyError::UnknownParent("X".into()))
        );
        assert_eq!(
            t.apply(&Op::Despawn { path: "".into() }),
            Err(ApplyError::RootNotAllowed)
        );
        assert_eq!(t, before);
    }

    #[test]
    fn keys_along_a_path_stop_where_synced_nodes_end() {
        let mut t = ShadowTree::new();
        for op in [spawn("", "A"), spawn("A", "B")] {
            t.apply(&op).expect("spawn");
        }
        let (a, b) = (t.lookup("A").unwrap(), t.lookup("A/B").unwrap());
        assert_eq!(t.keys_along("A/B/Sprite/Deeper"), [a, b]);
        assert_eq!(t.keys_along("A/B"), [a, b]);
        assert_eq!(t.keys_along("A/X/B"), [a]);
        assert!(t.keys_along("").is_empty() && t.keys_along("X").is_empty());
    }

    #[test]
    fn hidden_subtrees_are_left_out_and_stay_out() {
        let mut t = ShadowTree::new();
        for op in [spawn("", "A"), spawn("A", "B"), spawn("", "C")] {
            t.apply(&op).expect("spawn");
        }
        let a = t.lookup("A").unwrap();
        let (view, gone) = t.without(&[a].into_iter().collect());
        assert_eq!(view.dump(), "C (Node)\n");
        assert_eq!(gone, [a, t.lookup("A/B").unwrap()].into_iter().collect());
        // Later effects: a child of a hidden node is hidden; others pass.
        let mut hidden = gone;
        let effects = vec![
            t.apply(&spawn("A/B", "D")).unwrap(),
            t.apply(&spawn("C", "E")).unwrap(),
            t.apply(&Op::Despawn { path: "A".into() }).unwrap(),
        ];
        let mut names = crate::NameEncoder::default();
        let mut effects = names
            .pack(crate::EntryEffects { index: 1, effects })
            .effects;
        crate::filter_hidden_wire(&mut hidden, &mut effects);
        // The name definitions of what was left out, then E's spawn.
        assert_eq!(effects.len(), 2, "{effects:?}");
        assert!(matches!(&effects[0], crate::WireEffect::Names(_)));
        assert!(matches!(&effects[1], crate::WireEffect::Spawned { name, .. } if name == "E"));
        assert!(!hidden.contains(&a), "a despawned hidden node is forgotten");
    }

    #[test]
    fn despawn_removes_subtree_and_keeps_order() {
        let mut t = ShadowTree::new();
        for op in [
            spawn("", "A"),
            spawn("A", "B"),
            spawn("A/B", "C"),
            spawn("", "D"),
        ] {
            t.apply(&op).expect("spawn");
        }
        assert_eq!(t.len(), 4);
        t.apply(&Op::Despawn { path: "A".into() }).expect("despawn");
        assert_eq!(t.len(), 1);
        assert!(!t.contains("A/B/C"));
        t.apply(&spawn("", "A")).expect("name is free again");
        assert_eq!(t.dump(), "D (Node)\nA (Node)\n");
    }

    #[test]
    fn compare_and_set_applies_only_on_the_expected_value() {
        let mut t = ShadowTree::new();
        t.apply(&spawn("", "A")).expect("spawn");
        let cas = |expected: Option<i64>, v: i64| Op::CompareAndSet {
            path: "A".into(),
            property: "hp".into(),
            expected: expected.map(Value::Int),
            value: Value::Int(v),
        };
        t.apply(&cas(None, 1)).expect("never set: matches None");
        let before = t.clone();
        let err = t.apply(&cas(None, 2)).expect_err("now it is set");
        assert!(err.to_string().contains("found Int(1)"), "{err}");
        assert_eq!(
            t.apply(&cas(Some(5), 2)).map(|_| ()),
            Err(ApplyError::CompareFailed {
                path: "A".into(),
                property: "hp".into(),
                expected: "Int(5)".into(),
                found: "Int(1)".into(),
            })
        );
        assert_eq!(t, before, "refused: nothing changed");
        t.apply(&cas(Some(1), 2)).expect("matches");
        assert_eq!(t.get("A", "hp"), Some(&Value::Int(2)));
        assert!(matches!(
            t.apply(&Op::CompareAndSet {
                path: "B".into(),
                property: "hp".into(),
                expected: None,
                value: Value::Int(1)
            }),
            Err(ApplyError::UnknownPath(_))
        ));
    }

    #[test]
    fn replayed_effects_keep_a_twin_equal() {
        let mut t = ShadowTree::new();
        let mut twin = ShadowTree::new();
        let set = |path: &str, v: i64| Op::SetProperty {
            path: path.into(),
            property: "hp".into(),
            value: Value::Int(v),
        };
        for op in [
            spawn("", "A"),
            spawn("A", "B"),
            set("A/B", 1),
            spawn("", "C"),
            set("A/B", 2),
            Op::Despawn { path: "A".into() },
            spawn("", "A"),
            set("A", 3),
            spawn("X", "refused"),
        ] {
            if let Ok(effect) = t.apply(&op) {
                twin.apply_effect(&effect).expect("replay");
            }
            assert_eq!(twin, t, "after {op:?}");
        }
        assert!(twin.apply_effect(&Effect::Despawned { node: 1 }).is_err());
        assert_eq!(twin, t, "a refused effect changes nothing");
    }

    #[test]
    fn effects_rebuild_an_equal_tree() {
        let mut t = ShadowTree::new();
        t.apply(&spawn("", "A")).expect("spawn");
        t.apply(&spawn("A", "B")).expect("spawn");
        t.apply(&Op::SetProperty {
            path: "A/B".into(),
            property: "hp".into(),
            value: Value::Int(3),
        })
        .expect("set");
        let mut rebuilt = ShadowTree::new();
        for effect in t.to_effects() {
            assert!(matches!(effect, Effect::Spawned { .. }), "only spawns");
            rebuilt.apply_effect(&effect).expect("rebuild");
        }
        assert_eq!(rebuilt, t);
    }
}
