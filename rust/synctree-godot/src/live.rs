//! The live side: carries committed effects out on the scene tree (main thread only),
//! knows which Godot node each synced node is, and dumps the live tree canonically.

use crate::variant::{from_value, to_value};
use godot::classes::{ClassDb, Node, PackedScene, ResourceLoader, SceneTree};
use godot::prelude::*;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use synctree_proto::{
    write_node_header, write_property, Effect, NodeKey, Value, ROOT_KEY, SERVER_PEER,
};

/// Scenes and their property names, loaded once.
#[derive(Default)]
pub struct SceneCache {
    scenes: HashMap<String, Option<Gd<PackedScene>>>,
    props: HashMap<String, HashSet<String>>,
}

/// The scene of a node a MultiplayerSpawner's `spawn_function` made: this prefix, then the
/// spawner's absolute node path (the same in every process of the game).
pub const SPAWNER_SCENE: &str = "spawner:";
/// The property carrying a custom spawn's `data` (passed to the spawn function on every
/// replica, never set on the node).
pub const SPAWN_DATA: &str = "@spawn_data";

fn is_resource_path(scene: &str) -> bool {
    scene.starts_with("res://") || scene.starts_with("uid://") || scene.starts_with("user://")
}

impl SceneCache {
    fn packed(&mut self, scene: &str) -> Option<Gd<PackedScene>> {
        self.scenes
            .entry(scene.to_owned())
            .or_insert_with(|| {
                let mut loader = ResourceLoader::singleton();
                if !loader.exists(scene) {
                    return None;
                }
                loader
                    .load(scene)
                    .and_then(|r| r.try_cast::<PackedScene>().ok())
            })
            .clone()
    }

    /// Checks that `scene` can be instanced: a loadable PackedScene path or a Node class.
    pub fn check(&mut self, scene: &str) -> Result<(), String> {
        if is_resource_path(scene) {
            match self.packed(scene) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "scene '{scene}' does not load (missing file, or not a PackedScene)"
                )),
            }
        } else {
            let db = ClassDb::singleton();
            let class = StringName::from(scene);
            if db.class_exists(&class)
                && db.can_instantiate(&class)
                && db.is_parent_class(&class, "Node")
            {
                Ok(())
            } else {
                Err(format!("scene '{scene}' is neither a res:// PackedScene path nor an instantiable Node class"))
            }
        }
    }

    /// Makes a new instance of `scene`.
    pub fn instantiate(&mut self, scene: &str) -> Option<Gd<Node>> {
        if is_resource_path(scene) {
            self.packed(scene)?.instantiate()
        } else {
            ClassDb::singleton()
                .instantiate(scene)
                .try_to::<Gd<Node>>()
                .ok()
        }
    }

    /// True if instances of `scene` have `property` (script variables included).
    pub fn has_property(&mut self, scene: &str, property: &str) -> bool {
        if !self.props.contains_key(scene) {
            let mut names = HashSet::new();
            if let Some(node) = self.instantiate(scene) {
                names = property_names(&node);
                node.free();
            }
            self.props.insert(scene.to_owned(), names);
        }
        self.props.get(scene).is_some_and(|p| p.contains(property))
    }
}

/// The names of every property of `node`, script variables included.
pub fn property_names(node: &Gd<Node>) -> HashSet<String> {
    node.get_property_list()
        .iter_shared()
        .filter_map(|d| d.get("name").map(|n| n.to_string()))
        .collect()
}

/// What applying one effect did, for signals. Paths and names come from the live tree's
/// caches, so a signal costs no string conversion.
pub enum Applied {
    Spawned {
        key: NodeKey,
        node: Gd<Node>,
        /// The node the game placed itself (a MultiplayerSpawner authority's), not made here.
        adopted: bool,
    },
    Despawned {
        path: LazyPath,
        /// The node and its parent, if the node was still alive (synctree removed it).
        removed: Option<(Gd<Node>, Gd<Node>)>,
    },
    Set {
        node: NodeKey,
        property: PropId,
        value: Variant,
    },
    Nothing,
}

/// A node's path, as a NodePath only when something asks (a signal with listeners): making
/// one parses the string, which a spawn without listeners does not need.
pub struct LazyPath {
    path: String,
    cached: Option<NodePath>,
}

impl LazyPath {
    pub fn get(self) -> NodePath {
        self.cached
            .unwrap_or_else(|| NodePath::from(self.path.as_str()))
    }
}

/// What [`LiveTree::reconcile`] leaves to do.
pub struct Reconciled {
    pub effects: Vec<Effect>,
    pub removed: Vec<Applied>,
    pub order: Option<Vec<(NodeKey, NodeKey)>>,
}

/// A property name interned by the live tree.
pub type PropId = u32;

/// Where a synced property lives on its node. A name is a property of the synced node
/// (`position`), or a property path in NodePath form, as MultiplayerSynchronizer configs name
/// them: a child node's property (`Sprite:modulate`, `Arm/Hand:rotation`) or a component of
/// the node's own property (`:position:x`).
#[derive(Clone)]
pub enum Target {
    /// A name the log refuses (a path leaving the node): never applied.
    Invalid,
    Plain(StringName),
    Path {
        child: Option<NodePath>,
        /// The property and its components, as `:modulate`.
        sub: NodePath,
    },
}

impl Target {
    pub fn of(name: &str) -> Target {
        if synctree_proto::validate_property(name).is_err() {
            return Target::Invalid;
        }
        match name.split_once(':') {
            None => Target::Plain(StringName::from(name)),
            Some((child, sub)) => Target::Path {
                child: (!child.is_empty() && child != ".").then(|| NodePath::from(child)),
                sub: NodePath::from(format!(":{sub}").as_str()),
            },
        }
    }

    /// The node holding the property (the node itself, or its child), if it exists.
    fn holder(&self, node: &Gd<Node>) -> Option<Gd<Node>> {
        match self {
            Target::Path { child: Some(c), .. } => node.get_node_or_null(c),
            _ => Some(node.clone()),
        }
    }

    #[inline]
    pub fn set(&self, node: &mut Gd<Node>, value: &Variant) {
        match self {
            Target::Invalid => {}
            Target::Plain(name) => node.set(name, value),
            Target::Path { sub, .. } => {
                if let Some(mut holder) = self.holder(node) {
                    holder.set_indexed(sub, value);
                }
            }
        }
    }

    pub fn get(&self, node: &Gd<Node>) -> Variant {
        match self {
            Target::Invalid => Variant::nil(),
            Target::Plain(name) => node.get(name),
            Target::Path { sub, .. } => self
                .holder(node)
                .map(|h| h.get_indexed(sub))
                .unwrap_or_default(),
        }
    }

    /// True if `node` has this property (for a path: the child exists and has the first
    /// property named).
    pub fn exists_on(&self, node: &Gd<Node>) -> bool {
        match self {
            Target::Invalid => false,
            Target::Plain(name) => property_names(node).contains(&name.to_string()),
            Target::Path { sub, .. } => {
                let first = sub.get_subname(0).to_string();
                self.holder(node)
                    .is_some_and(|h| property_names(&h).contains(&first))
            }
        }
    }
}

/// True if the object `id` still exists. One ObjectDB lookup: the same check gdext makes
/// before each engine call, without the utility-function call of `is_instance_valid`, so
/// the per-event liveness check stays off the profile.
pub(crate) fn alive(id: InstanceId) -> bool {
    let lookup = godot::sys::interface_fn!(object_get_instance_from_id);
    // SAFETY: Godot looks the id up in its ObjectDB and returns null when it is gone; the
    // extension interface is initialised before any node exists.
    let ptr = unsafe { lookup(id.to_i64() as u64) };
    !ptr.is_null()
}

/// How many nodes have left the SceneTree in this process (its `node_removed` signal),
/// once [`watch_detaches`] has connected it; `u64::MAX` until then. Godot removes a node
/// from the tree before it frees it (and before freeing its children), so a node seen alive
/// and inside the tree while this count stood at `n` is still alive as long as it stands at
/// `n`: a committed event then needs no ObjectDB lookup (gdext's per-call checks, which made
/// one, are off in release builds).
static DETACHES: AtomicU64 = AtomicU64::new(u64::MAX);

thread_local! {
    /// The `node_removed` handler, once connected.
    static DETACH_HANDLER: RefCell<Option<Callable>> = const { RefCell::new(None) };
}

/// Connects SceneTree's `node_removed` to [`DETACHES`] (once per process; the handler is
/// one atomic increment, so every removal of the game pays ~nothing).
pub fn watch_detaches(tree: &mut Gd<SceneTree>) {
    if DETACHES.load(Ordering::Relaxed) != u64::MAX {
        return;
    }
    let removed = Callable::from_fn("synctree_node_removed", |_| {
        DETACHES.fetch_add(1, Ordering::Relaxed);
    });
    tree.connect("node_removed", &removed);
    DETACH_HANDLER.with(|h| *h.borrow_mut() = Some(removed));
    DETACHES.store(0, Ordering::Relaxed);
}

/// Once per frame, before committed effects are applied: a handler that game code
/// disconnected is connected again, and the count moves on, so no node seen before counts
/// as seen since. (Game code that blocks the SceneTree's signals, frees a synced node and
/// unblocks them between two frames is not caught: the frame itself needs them unblocked.)
pub fn check_detach_watch(tree: &mut Gd<SceneTree>) {
    let Some(handler) = DETACH_HANDLER.with(|h| h.borrow().clone()) else {
        return;
    };
    if !tree.is_connected("node_removed", &handler) {
        tree.connect("node_removed", &handler);
        DETACHES.fetch_add(1, Ordering::Relaxed);
    }
}

/// One synced node as the live tree knows it.
struct LiveNode {
    node: Gd<Node>,
    id: InstanceId,
    /// The [`DETACHES`] count when the node was last seen alive inside the tree.
    seen: u64,
    parent: NodeKey,
    path: String,
    /// Made on first use (see [`LazyPath`]).
    node_path: Option<NodePath>,
    scene: String,
    /// The peer that owns it (its multiplayer authority).
    owner: u64,
    children: Vec<NodeKey>,
    /// Its synced properties (set at spawn or since), in first-set order.
    synced: Vec<PropId>,
}

#[cold]
fn missing_for_property(property: &str, key: NodeKey) {
    godot_error!(
        "synctree: committed property '{property}' of node #{key}, which is missing from the live tree"
    );
}

#[cold]
fn freed_for_property(property: &str, path: &str) {
    godot_error!(
        "synctree: committed property '{property}' of '{path}', which was freed outside synctree"
    );
}

impl LiveNode {
    /// True if the Godot node still exists: no lookup while no node has left the tree since
    /// it was last seen inside it (see [`DETACHES`]).
    fn still_alive(&mut self) -> bool {
        let detaches = DETACHES.load(Ordering::Relaxed);
        if self.seen == detaches && detaches != u64::MAX {
            return true;
        }
        if !alive(self.id) {
            return false;
        }
        if self.node.is_inside_tree() {
            self.seen = detaches;
        }
        true
    }
}

/// The live synced subtree under one SyncedTree node: the Godot nodes by [`NodeKey`], so a
/// committed effect costs one integer lookup, and what the dump needs (scenes, which
/// properties are synced).
#[derive(Default)]
pub struct LiveTree {
    pub scenes: SceneCache,
    nodes: FxHashMap<NodeKey, LiveNode>,
    /// Keys by synced path, for calls that name a node by path. Paths come from clients:
    /// SipHash keeps crafted collisions cheap.
    by_path: HashMap<String, NodeKey>,
    /// Property names interned: id by name, and the StringName of each id. A fast unkeyed
    /// hash (one lookup per committed property event); names come from servers, which check
    /// them against the node's properties when they propose. Revisit when clients propose.
    prop_ids: FxHashMap<String, PropId>,
    /// The property interned last.
    last_prop: Option<PropId>,
    prop_names: Vec<(String, StringName, Target)>,
    /// Nodes the game placed itself, by the path their committed spawn will name.
    adopt: HashMap<String, Gd<Node>>,
}

impl LiveTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of synced nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Brings the live tree to `tree` (a reset: a client's first state, a reconnection, a
    /// change of what it may see) keeping the Godot nodes that are still there as they were
    /// (same key, parent, path and scene): only nodes that went away are freed. Returns the
    /// effects still to apply, parents first: spawns of the new nodes, and the values of the
    /// kept ones; and, when kept and new nodes mix, the children order to restore once those
    /// effects are applied ([`LiveTree::restore_order`]).
    pub fn reconcile(&mut self, tree: &synctree_proto::ShadowTree) -> Reconciled {
        let mut keep: HashSet<NodeKey> = HashSet::new();
        let mut effects = Vec::with_capacity(tree.len());
        let mut order: Vec<(NodeKey, NodeKey)> = Vec::with_capacity(tree.len());
        tree.walk(|n| {
            order.push((n.parent, n.key));
            let kept = self.nodes.get(&n.key).is_some_and(|l| {
                l.parent == n.parent
                    && l.path == n.path
                    && l.scene == n.scene
                    && l.owner == n.owner
                    && alive(l.id)
                    && (n.parent == ROOT_KEY || keep.contains(&n.parent))
            });
            if kept {
                keep.insert(n.key);
                effects.extend(
                    n.props
                        .iter()
                        .filter(|(p, _)| *p != SPAWN_DATA)
                        .map(|(p, v)| Effect::PropertySet {
                            node: n.key,
                            property: p.as_str().into(),
                            value: v.clone(),
                        }),
                );
            } else {
                effects.push(n.spawned());
            }
        });
        // Free the topmost nodes that go (their subtrees go with them).
        let gone: Vec<NodeKey> = self
            .nodes
            .iter()
            .filter(|(k, n)| {
                !keep.contains(k) && (n.parent == ROOT_KEY || keep.contains(&n.parent))
            })
            .map(|(k, _)| *k)
            .collect();
        let removed = gone.into_iter().map(|k| self.despawn(k)).collect();
        let mixed = !keep.is_empty() && keep.len() < order.len();
        Reconciled {
            effects,
            removed,
            order: mixed.then_some(order),
        }
    }

    /// Puts synced children in the order `order` lists them (parent, child; in tree order),
    /// after a reset spawned new nodes beside kept ones (a new node is added last).
    pub fn restore_order(&mut self, order: &[(NodeKey, NodeKey)]) {
        for (_, child) in order {
            if let Some(mut parent) = self.node_of(*child).and_then(|n| n.get_parent()) {
                if let Some(node) = self.node_of(*child) {
                    parent.move_child(&node, -1);
                }
            }
        }
    }

    /// The scene of the synced node at `path`, if the live tree holds one there.
    pub fn scene_of(&self, path: &str) -> Option<&str> {
        let key = self.by_path.get(path)?;
        self.nodes.get(key).map(|n| n.scene.as_str())
    }

    /// The live Godot node of the synced node at `path`.
    pub fn node_at(&self, path: &str) -> Option<Gd<Node>> {
        let key = self.by_path.get(path)?;
        self.nodes
            .get(key)
            .filter(|n| alive(n.id))
            .map(|n| n.node.clone())
    }

    #[inline]
    pub fn intern(&mut self, property: &str) -> PropId {
        // Committed writes come in runs of one property (positions, health): the last one
        // named is compared before any hashing.
        if let Some(id) = self.last_prop {
            if self.prop_names[id as usize].0 == property {
                return id;
            }
        }
        self.intern_slow(property)
    }

    #[inline(never)]
    fn intern_slow(&mut self, property: &str) -> PropId {
        if let Some(id) = self.prop_ids.get(property) {
            self.last_prop = Some(*id);
            return *id;
        }
        let id = self.prop_names.len() as PropId;
        self.prop_names.push((
            property.to_owned(),
            StringName::from(property),
            Target::of(property),
        ));
        self.prop_ids.insert(property.to_owned(), id);
        id
    }

    /// The StringName of an interned property.
    pub fn prop_name(&self, id: PropId) -> &StringName {
        &self.prop_names[id as usize].1
    }

    /// Where an interned property lives on its node.
    pub fn target(&self, id: PropId) -> &Target {
        &self.prop_names[id as usize].2
    }

    /// The live Godot node of a synced node, if it is still alive.
    pub fn node_of(&self, key: NodeKey) -> Option<Gd<Node>> {
        self.nodes
            .get(&key)
            .filter(|n| alive(n.id))
            .map(|n| n.node.clone())
    }

    /// The owner peer of a synced node.
    pub fn owner_of(&self, key: NodeKey) -> Option<u64> {
        self.nodes.get(&key).map(|n| n.owner)
    }

    /// The instance of the synced node at `path`, if any.
    pub fn instance_at(&self, path: &str) -> Option<InstanceId> {
        self.by_path
            .get(path)
            .and_then(|k| self.nodes.get(k))
            .map(|n| n.id)
    }

    /// A node the game placed at `path` itself (a MultiplayerSpawner's): the committed spawn
    /// of that path takes it instead of making an instance, if its scene matches.
    pub fn expect_adoption(&mut self, path: &str, node: Gd<Node>) {
        self.adopt.insert(path.to_owned(), node);
    }

    /// The key of the synced node at `path`.
    pub fn key_of(&self, path: &str) -> Option<NodeKey> {
        self.by_path.get(path).copied()
    }

    /// The synced path of a node, relative to the SyncedTree.
    pub fn path_of(&self, key: NodeKey) -> Option<&str> {
        self.nodes.get(&key).map(|n| n.path.as_str())
    }

    /// The NodePath of a synced node (for signals).
    pub fn node_path(&mut self, key: NodeKey) -> Option<NodePath> {
        let n = self.nodes.get_mut(&key)?;
        Some(
            n.node_path
                .get_or_insert_with(|| NodePath::from(n.path.as_str()))
                .clone(),
        )
    }

    /// A committed custom spawn this replica makes itself rather than adopts: the path of
    /// the spawner whose `spawn_function` makes the node, and the data to call it with. The
    /// caller runs the function where game code may call back into the SyncedTree, then
    /// hands the node to [`LiveTree::apply_made`].
    pub fn custom_spawn(&self, root: &Gd<Node>, effect: &Effect) -> Option<(String, Variant)> {
        let Effect::Spawned {
            parent,
            name,
            scene,
            props,
            ..
        } = effect
        else {
            return None;
        };
        let spawner = scene.strip_prefix(SPAWNER_SCENE)?;
        // A missing parent: nothing is made (the spawn logs it).
        if *parent != ROOT_KEY
            && !self
                .nodes
                .get(parent)
                .is_some_and(|p| p.node.is_instance_valid())
        {
            return None;
        }
        if !self.adopt.is_empty() {
            let parent_path = match *parent {
                ROOT_KEY => String::new(),
                key => self.nodes.get(&key)?.path.clone(),
            };
            let path = synctree_proto::join(&parent_path, name);
            if let Some(n) = self.adopt.get(&path).filter(|n| n.is_instance_valid()) {
                let parent_node = match *parent {
                    ROOT_KEY => Some(root.clone()),
                    key => self.nodes.get(&key).map(|p| p.node.clone()),
                };
                if n.get_parent() == parent_node {
                    return None; // adopted: the authority made it already
                }
            }
        }
        let data = props
            .iter()
            .find(|(p, _)| p == SPAWN_DATA)
            .map(|(_, v)| from_value(v))
            .unwrap_or_default();
        Some((spawner.to_owned(), data))
    }

    /// Carries out one committed effect on the scene tree, with the node a custom spawn's
    /// function `made`, if any (see
    /// [`LiveTree::custom_spawn`]); without it, the function is called from here.
    pub fn apply_made(
        &mut self,
        root: &mut Gd<Node>,
        effect: Effect,
        made: Option<Result<Gd<Node>, String>>,
    ) -> Applied {
        match effect {
            spawned @ Effect::Spawned { .. } => self.spawn(root, spawned, made),
            Effect::Despawned { node: key } => self.despawn(key),
            Effect::PropertySet {
                node: key,
                property,
                value,
            } => self.set_property(key, &property, &value),
        }
    }

    /// A committed property event: the hot path (one per replicated write), kept small.
    #[inline]
    pub fn set_property(&mut self, key: NodeKey, property: &str, value: &Value) -> Applied {
        if property == SPAWN_DATA {
            return Applied::Nothing; // only ever passed to a spawn function
        }
        let id = self.intern(property);
        let Some(n) = self.nodes.get_mut(&key) else {
            missing_for_property(property, key);
            return Applied::Nothing;
        };
        if !n.still_alive() {
            freed_for_property(property, &n.path);
            return Applied::Nothing;
        }
        if !n.synced.contains(&id) {
            n.synced.push(id);
        }
        let value = from_value(value);
        self.prop_names[id as usize].2.set(&mut n.node, &value);
        Applied::Set {
            node: key,
            property: id,
            value,
        }
    }

    #[inline(never)]
    fn spawn(
        &mut self,
        root: &Gd<Node>,
        spawned: Effect,
        premade: Option<Result<Gd<Node>, String>>,
    ) -> Applied {
        let Effect::Spawned {
            node: key,
            parent,
            name,
            scene,
            props,
            owner,
        } = spawned
        else {
            return Applied::Nothing;
        };
        let (mut parent_node, parent_path) = if parent == ROOT_KEY {
            (root.clone(), String::new())
        } else {
            match self.nodes.get(&parent) {
                Some(p) if p.node.is_instance_valid() => (p.node.clone(), p.path.clone()),
                _ => {
                    godot_error!("synctree: committed spawn of '{name}' under node #{parent}, which is missing from the live tree");
                    return Applied::Nothing;
                }
            }
        };
        let path = synctree_proto::join(&parent_path, &name);
        // Usually nothing waits for adoption: skip the lookup then (the spawn path is hot).
        let waiting = if self.adopt.is_empty() {
            None
        } else {
            self.adopt.remove(&path)
        };
        let custom = scene.strip_prefix(SPAWNER_SCENE);
        let adopted = match waiting {
            Some(n)
                if n.is_instance_valid()
                    && n.get_parent().as_ref() == Some(&parent_node)
                    && (custom.is_some() || n.get_scene_file_path().to_string() == scene) =>
            {
                Some(n)
            }
            Some(mut n) if n.is_instance_valid() => {
                // Another server's spawn of the same path won with another scene.
                n.queue_free();
                None
            }
            _ => None,
        };
        let is_adopted = adopted.is_some();
        let mut node = match adopted {
            Some(n) => {
                if let Some(Ok(mut extra)) = premade {
                    extra.queue_free();
                }
                n
            }
            None => {
                let made = match (premade, custom) {
                    (Some(made), _) => made,
                    (None, Some(spawner)) => {
                        let data = props
                            .iter()
                            .find(|(p, _)| p == SPAWN_DATA)
                            .map(|(_, v)| from_value(v))
                            .unwrap_or_default();
                        crate::multiplayer::custom_instance(spawner, &data)
                    }
                    (None, None) => self
                        .scenes
                        .instantiate(&scene)
                        .ok_or_else(|| format!("scene '{scene}' does not instance on this server")),
                };
                let mut n = made.unwrap_or_else(|e| {
                    godot_error!("synctree: {e}; a plain Node stands in for '{name}'");
                    Node::new_alloc()
                });
                n.set_name(name.as_str());
                n
            }
        };
        let mut synced = Vec::with_capacity(props.len());
        for (prop, value) in &props {
            if prop == SPAWN_DATA {
                continue;
            }
            let id = self.intern(prop);
            self.prop_names[id as usize]
                .2
                .set(&mut node, &from_value(value));
            if !synced.contains(&id) {
                synced.push(id);
            }
        }
        if owner != SERVER_PEER {
            // Godot's own notion of ownership: `is_multiplayer_authority()` holds on the
            // owning client, and children spawned in the scene inherit it.
            node.set_multiplayer_authority(i32::try_from(owner).unwrap_or(i32::MAX));
        }
        if !is_adopted {
            parent_node.add_child(&node);
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.push(key);
        }
        self.by_path.insert(path.clone(), key);
        self.nodes.insert(
            key,
            LiveNode {
                id: node.instance_id(),
                seen: u64::MAX,
                node: node.clone(),
                parent,
                path,
                node_path: None,
                scene,
                owner,
                children: Vec::new(),
                synced,
            },
        );
        Applied::Spawned {
            key,
            node,
            adopted: is_adopted,
        }
    }

    #[inline(never)]
    fn despawn(&mut self, key: NodeKey) -> Applied {
        let Some(top) = self.nodes.get(&key) else {
            godot_error!(
                "synctree: committed despawn of node #{key}, which is missing from the live tree"
            );
            return Applied::Nothing;
        };
        let path = LazyPath {
            path: top.path.clone(),
            cached: top.node_path.clone(),
        };
        let parent = top.parent;
        // The game may have freed it already (a MultiplayerSpawner's node it despawned):
        // cloning a handle to a freed object is an error, so look first.
        let mut removed = None;
        if alive(top.id) {
            let mut node = top.node.clone();
            if let Some(mut p) = node.get_parent() {
                p.remove_child(&node);
                removed = Some((node.clone(), p));
            }
            node.queue_free();
        }
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            if let Some(n) = self.nodes.remove(&k) {
                self.by_path.remove(&n.path);
                stack.extend(n.children);
            }
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.retain(|c| *c != key);
        }
        Applied::Despawned { path, removed }
    }

    /// The canonical dump of the LIVE tree: live children in live order, live values of the
    /// synced properties; equal across replicas that applied the same log prefix.
    pub fn dump(&self, root: &Gd<Node>) -> String {
        let mut out = String::new();
        self.dump_children(root, "", 0, &mut out);
        out
    }

    fn dump_children(&self, node: &Gd<Node>, path: &str, depth: usize, out: &mut String) {
        for child in node.get_children().iter_shared() {
            let name = child.get_name().to_string();
            let child_path = synctree_proto::join(path, &name);
            let Some(live) = self
                .by_path
                .get(&child_path)
                .and_then(|k| self.nodes.get(k))
            else {
                continue;
            };
            write_node_header(out, depth, &name, &live.scene, live.owner);
            let mut props: Vec<&(String, StringName, Target)> = live
                .synced
                .iter()
                .map(|id| &self.prop_names[*id as usize])
                .collect();
            props.sort_by(|a, b| a.0.cmp(&b.0));
            for (prop, _, target) in props {
                match to_value(&target.get(&child)) {
                    Ok(v) => write_property(out, depth, prop, &v),
                    Err(e) => out.push_str(&format!("{}  .{prop} = <{e}>\n", "  ".repeat(depth))),
                }
            }
            self.dump_children(&child, &child_path, depth + 1, out);
        }
    }
}
