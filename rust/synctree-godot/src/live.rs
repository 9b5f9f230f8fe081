//! The live side: carries committed effects out on the scene tree (main thread only),
//! keeps a mirror of what the live tree holds, and dumps the live tree canonically.

use crate::variant::{from_value, to_value};
use godot::classes::{ClassDb, Node, PackedScene, ResourceLoader};
use godot::prelude::*;
use std::collections::{HashMap, HashSet};
use synctree_proto::{write_node_header, write_property, Effect, Op, ShadowTree};

/// Scenes and their property names, loaded once.
#[derive(Default)]
pub struct SceneCache {
    scenes: HashMap<String, Option<Gd<PackedScene>>>,
    props: HashMap<String, HashSet<String>>,
}

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

/// What applying one effect did, for signals.
pub enum Applied {
    Spawned {
        path: String,
        node: Gd<Node>,
    },
    Despawned {
        path: String,
    },
    Set {
        path: String,
        property: String,
        value: Variant,
    },
    Nothing,
}

/// The live synced subtree under one SyncedTree node.
pub struct LiveTree {
    pub mirror: ShadowTree,
    pub scenes: SceneCache,
    /// Live nodes by synced path, so a committed effect does not resolve a NodePath.
    nodes: HashMap<String, InstanceId>,
    /// Property names as StringNames, made once.
    names: HashMap<String, StringName>,
}

fn node_at(root: &Gd<Node>, path: &str) -> Option<Gd<Node>> {
    if path.is_empty() {
        Some(root.clone())
    } else {
        root.get_node_or_null(&NodePath::from(path))
    }
}

impl LiveTree {
    pub fn new() -> Self {
        LiveTree {
            mirror: ShadowTree::new(),
            scenes: SceneCache::default(),
            nodes: HashMap::new(),
            names: HashMap::new(),
        }
    }

    /// Removes every synced node (before a reset to a snapshot).
    pub fn clear(&mut self, root: &mut Gd<Node>) {
        let mut top = Vec::new();
        self.mirror.walk(|n| {
            if n.depth == 0 {
                top.push(n.path.clone());
            }
        });
        for path in top {
            if let Some(mut node) = node_at(root, &path) {
                root.remove_child(&node);
                node.queue_free();
            }
        }
        self.mirror = ShadowTree::new();
        self.nodes.clear();
    }

    /// The live node at a synced path (the SyncedTree itself for `""`).
    pub fn node(&mut self, root: &Gd<Node>, path: &str) -> Option<Gd<Node>> {
        if path.is_empty() {
            return Some(root.clone());
        }
        if let Some(node) = self
            .nodes
            .get(path)
            .and_then(|id| Gd::<Node>::try_from_instance_id(*id).ok())
        {
            return Some(node);
        }
        let node = node_at(root, path)?;
        self.nodes.insert(path.to_owned(), node.instance_id());
        Some(node)
    }

    fn name(&mut self, property: &str) -> StringName {
        if let Some(n) = self.names.get(property) {
            return n.clone();
        }
        let n = StringName::from(property);
        self.names.insert(property.to_owned(), n.clone());
        n
    }

    /// Carries out one committed effect on the scene tree.
    pub fn apply(&mut self, root: &mut Gd<Node>, effect: Effect) -> Applied {
        match effect {
            Effect::Spawned {
                parent,
                name,
                scene,
                props,
            } => {
                let Some(mut parent_node) = self.node(root, &parent) else {
                    godot_error!("synctree: committed spawn under '{parent}', which is missing from the live tree");
                    return Applied::Nothing;
                };
                let mut node = self.scenes.instantiate(&scene).unwrap_or_else(|| {
                    godot_error!("synctree: scene '{scene}' does not instance on this server; a plain Node stands in for '{name}'");
                    Node::new_alloc()
                });
                node.set_name(name.as_str());
                for (prop, value) in &props {
                    let prop = self.name(prop);
                    node.set(&prop, &from_value(value));
                }
                parent_node.add_child(&node);
                let path = synctree_proto::join(&parent, &name);
                self.nodes.insert(path.clone(), node.instance_id());
                let _ = self.mirror.apply(&Op::Spawn {
                    parent,
                    name,
                    scene,
                    props,
                });
                Applied::Spawned { path, node }
            }
            Effect::Despawned { path } => {
                let prefix = format!("{path}/");
                self.nodes.retain(|p, _| !p.starts_with(&prefix));
                if let Some(mut node) = self.node(root, &path) {
                    if let Some(mut parent) = node.get_parent() {
                        parent.remove_child(&node);
                    }
                    node.queue_free();
                }
                self.nodes.remove(&path);
                let _ = self.mirror.apply(&Op::Despawn { path: path.clone() });
                Applied::Despawned { path }
            }
            Effect::PropertySet {
                path,
                property,
                value,
            } => {
                let variant = from_value(&value);
                let name = self.name(&property);
                match self.node(root, &path) {
                    Some(mut node) => node.set(&name, &variant),
                    None => godot_error!("synctree: committed property '{property}' of '{path}', which is missing from the live tree"),
                }
                let _ = self.mirror.apply(&Op::SetProperty {
                    path: path.clone(),
                    property: property.clone(),
                    value,
                });
                Applied::Set {
                    path,
                    property,
                    value: variant,
                }
            }
        }
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
            let Some(scene) = self.mirror.scene_of(&child_path) else {
                continue;
            };
            write_node_header(out, depth, &name, scene);
            for prop in self
                .mirror
                .props_of(&child_path)
                .into_iter()
                .flat_map(|p| p.keys())
            {
                match to_value(&child.get(prop.as_str())) {
                    Ok(v) => write_property(out, depth, prop, &v),
                    Err(e) => out.push_str(&format!("{}  .{prop} = <{e}>\n", "  ".repeat(depth))),
                }
            }
            self.dump_children(&child, &child_path, depth + 1, out);
        }
    }
}
