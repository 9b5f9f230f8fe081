//! `SyncedMultiplayerAPI`: synctree's replacement for SceneMultiplayer.
//!
//! It takes part through the running `SyncedTree` of this process (servers: the cluster's
//! peer 1; game clients: their own peer id), whose [`PeerLink`] carries rpcs and presence:
//!
//! ```text
//!   node.rpc("m", args) ─▶ _rpc: @rpc config of m (script + node) ─▶ call_local? run here
//!                        └▶ PeerLink::send ─▶ (client) its server ─▶ target peers, any server
//!   poll(): presence diff ─▶ peer_connected / peer_disconnected / connected_to_server
//!           PeerLink::try_recv ─▶ mode check (any_peer / authority) ─▶ node.callv, with
//!                                 get_remote_sender_id() = the sender
//! ```
//!
//! The game's `multiplayer_peer` (ENet, WebSocket, WebRTC) carries client sessions when the
//! game sets one (see `peer_transport`): a server peer makes this process a synctree server
//! serving clients through it, a client peer a game client of the server it reached.
//!
//! Transfer modes: a reliable rpc travels on the client's stream; an unreliable or
//! unreliable_ordered one as a QUIC datagram (or an unreliable packet of the game's peer) when
//! it fits in one, and between servers reliably. The receiver drops an unreliable_ordered rpc
//! older than the newest it ran from the same sender on the same channel.
//!
//! Scene replication goes through the SyncedTree's log instead of SceneMultiplayer's packets:
//!
//! ```text
//!   MultiplayerSpawner (authority) ─ object_configuration_add(node, spawner) ─▶ queued
//!        poll(): spawn op (parent, name, scene, owner = node's authority, spawn properties)
//!                the committed spawn adopts the node here, instances it everywhere else
//!   tracked node leaves the tree ─ object_configuration_remove ─▶ despawn op (if the game
//!        freed it; nothing if synctree did)
//!   MultiplayerSynchronizer ─ object_configuration_add(root, sync) on every peer
//!        poll(): where the synchronizer's authority runs (on servers: the leader):
//!          `always` properties, every replication_interval, if changed (or 1 s old):
//!              eventual writes (unreliable, last writer wins), as SceneMultiplayer's sync
//!          `on change` properties, every delta_interval, if changed: through the log
//!              (game clients predict their own), as SceneMultiplayer's reliable watch
//! ```

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use godot::classes::scene_replication_config::ReplicationMode;
use godot::classes::{
    Engine, IMultiplayerApiExtension, MultiplayerApiExtension, MultiplayerPeer, MultiplayerSpawner,
    MultiplayerSynchronizer, Node, OfflineMultiplayerPeer, SceneTree, Script,
};
use godot::global::{bytes_to_var, var_to_bytes, Error};
use godot::prelude::*;
use synctree_proto::{Delivery, PeerRpc, Value, MAX_REQUEST_BYTES};
use synctree_runtime::PeerLink;

use crate::live;
use crate::peer_transport::{Note, PeerTransport};
use crate::synced_tree::SyncedTree;
use crate::variant::to_value;

thread_local! {
    /// The link of the SyncedTree running in this process (the main thread's), and that
    /// SyncedTree.
    static LINK: RefCell<Option<(PeerLink, InstanceId)>> = const { RefCell::new(None) };
    /// The SyncedTree in the scene tree, running or not (the one a multiplayer peer starts).
    static TREE: std::cell::Cell<Option<InstanceId>> = const { std::cell::Cell::new(None) };
}

thread_local! {
    /// MultiplayerSpawners in the scene tree (seen through SceneTree's `node_added`).
    static SPAWNERS: RefCell<Vec<InstanceId>> = const { RefCell::new(Vec::new()) };
    /// Nodes a wrapped `spawn_function` made since the last poll: node -> (spawner, data).
    static CUSTOM: RefCell<HashMap<InstanceId, (InstanceId, Variant)>> =
        RefCell::new(HashMap::new());
}

thread_local! {
    /// MultiplayerSynchronizers by the root node they replicate.
    static SYNC_ROOTS: RefCell<HashMap<InstanceId, Vec<InstanceId>>> =
        RefCell::new(HashMap::new());
}

/// True if any MultiplayerSynchronizer is configured.
pub fn has_synchronizers() -> bool {
    SYNC_ROOTS.with(|s| !s.borrow().is_empty())
}

/// Emits `synchronized` on the synchronizers of the synced nodes `roots` whose committed
/// properties were just applied, where this process is not the synchronizer's authority (as
/// SceneMultiplayer does on the peers that receive a sync).
pub fn notify_synchronized(roots: &[InstanceId], me: i32) {
    let syncs: Vec<InstanceId> = SYNC_ROOTS.with(|s| {
        let s = s.borrow();
        roots
            .iter()
            .filter_map(|r| s.get(r))
            .flatten()
            .copied()
            .collect()
    });
    for id in syncs {
        if let Ok(mut sync) = Gd::<MultiplayerSynchronizer>::try_from_instance_id(id) {
            if sync.get_multiplayer_authority() != me {
                sync.emit_signal("synchronized", &[]);
            }
        }
    }
}

thread_local! {
    /// Spawners by the node they spawn under (refreshed at each poll), so a spawn that
    /// synctree carries out finds its spawners with one lookup.
    static SPAWN_NODES: RefCell<HashMap<InstanceId, Vec<InstanceId>>> =
        RefCell::new(HashMap::new());
}

thread_local! {
    /// Nodes spawned here moments ago (replicated by a spawner, or applied from the log),
    /// and when: an rpc of one (or of a node below one) is marked `fresh`.
    static FRESH: RefCell<HashMap<InstanceId, Instant>> = RefCell::new(HashMap::new());
}

/// Notes that `node` was just spawned here (while a multiplayer link is installed).
pub fn note_fresh(node: InstanceId) {
    if LINK.with(|l| l.borrow().is_some()) {
        FRESH.with(|f| f.borrow_mut().insert(node, Instant::now()));
    }
}

thread_local! {
    /// SceneTree's `node_added` is watched (once per process, whatever API instances exist).
    static WATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn add_spawner(id: InstanceId) {
    SPAWNERS.with(|s| {
        let mut s = s.borrow_mut();
        if !s.contains(&id) {
            s.push(id);
        }
    });
}

/// True if a MultiplayerSpawner has a spawn node (so spawn notifications may go somewhere).
pub fn has_spawners() -> bool {
    SPAWN_NODES.with(|s| !s.borrow().is_empty())
}

fn spawners() -> Vec<Gd<MultiplayerSpawner>> {
    SPAWNERS.with(|s| {
        let mut s = s.borrow_mut();
        s.retain(|id| Gd::<MultiplayerSpawner>::try_from_instance_id(*id).is_ok());
        s.iter()
            .filter_map(|id| Gd::try_from_instance_id(*id).ok())
            .collect()
    })
}

/// The node a spawner adds its nodes under.
fn spawn_node(spawner: &Gd<MultiplayerSpawner>) -> Option<Gd<Node>> {
    let path = spawner.get_spawn_path();
    if path.is_empty() || !spawner.is_inside_tree() {
        return None;
    }
    spawner.get_node_or_null(&path)
}

/// Emits `signal` (`spawned` / `despawned`) with `node` on the spawners whose spawn node is
/// `node`'s parent, as SceneMultiplayer does on the peers that receive a spawn.
/// Nothing happens if game code (a handler of an earlier signal) freed `node` meanwhile.
pub fn notify_spawner(signal: SpawnerSignal, node: &Gd<Node>) {
    // Game code may have freed it (a `_ready`, a `node_spawned` handler): its id, unchecked
    // (`instance_id()` panics on a freed object), is looked up first.
    if !crate::live::alive(node.instance_id_unchecked()) {
        return;
    }
    if let Some(parent) = node.get_parent() {
        notify_spawner_of(&parent, signal, node);
    }
}

/// The two signals synctree emits on a MultiplayerSpawner.
#[derive(Clone, Copy)]
pub enum SpawnerSignal {
    Spawned,
    Despawned,
}

thread_local! {
    /// Their names, made once (a name from a `&str` is hashed and looked up in Godot's
    /// table at every emission).
    static SPAWNER_SIGNALS: [StringName; 2] =
        [StringName::from("spawned"), StringName::from("despawned")];
}

/// [`notify_spawner`] for a node already taken out of `parent`. Each spawner's handlers are
/// game code: the next spawner is told only while `node` and `parent` still exist.
pub fn notify_spawner_of(parent: &Gd<Node>, signal: SpawnerSignal, node: &Gd<Node>) {
    let (parent_id, node_id) = (parent.instance_id_unchecked(), node.instance_id_unchecked());
    if !crate::live::alive(parent_id) || !crate::live::alive(node_id) {
        return;
    }
    let ids = SPAWN_NODES.with(|s| s.borrow().get(&parent_id).cloned());
    let Some(ids) = ids else {
        return;
    };
    let name = SPAWNER_SIGNALS.with(|n| n[signal as usize].clone());
    let arg = node.to_variant();
    for id in ids {
        if !crate::live::alive(node_id) || !crate::live::alive(parent_id) {
            return;
        }
        if let Ok(mut spawner) = Gd::<MultiplayerSpawner>::try_from_instance_id(id) {
            spawner.emit_signal(&name, std::slice::from_ref(&arg));
        }
    }
}

/// A node made by the `spawn_function` of the spawner at `spawner_path` (absolute) for
/// `data`: how a custom spawn is carried out on every replica but its authority.
pub fn custom_instance(spawner_path: &str, data: &Variant) -> Result<Gd<Node>, String> {
    let spawner = scene_root()
        .and_then(|r| r.get_node_or_null(spawner_path))
        .and_then(|n| n.try_cast::<MultiplayerSpawner>().ok())
        .ok_or_else(|| format!("no MultiplayerSpawner at {spawner_path} for a custom spawn"))?;
    let function = spawner.get_spawn_function();
    if !function.is_valid() {
        return Err(format!(
            "the MultiplayerSpawner at {spawner_path} has no valid spawn_function"
        ));
    }
    function
        .call(std::slice::from_ref(data))
        .try_to::<Gd<Node>>()
        .map_err(|_| {
            format!("the spawn_function of {spawner_path} did not return a Node for {data}")
        })
}

/// A SyncedTree entering (`Some`) or leaving (`None`) the scene tree.
pub fn register_tree(id: Option<InstanceId>) {
    TREE.with(|t| t.set(id));
}

fn registered_tree() -> Option<Gd<SyncedTree>> {
    Gd::try_from_instance_id(TREE.with(|t| t.get())?).ok()
}

/// Makes `link` the one SyncedMultiplayerAPI uses (a SyncedTree starting), or none (it
/// stopping). One SyncedTree per process takes part in multiplayer.
pub fn install_link(link: Option<(PeerLink, Gd<SyncedTree>)>) {
    LINK.with(|l| *l.borrow_mut() = link.map(|(link, tree)| (link, tree.instance_id())));
}

fn link() -> Option<PeerLink> {
    LINK.with(|l| l.borrow().as_ref().map(|(link, _)| link.clone()))
}

fn synced_tree() -> Option<Gd<SyncedTree>> {
    let id = LINK.with(|l| l.borrow().as_ref().map(|(_, id)| *id))?;
    Gd::try_from_instance_id(id).ok()
}

/// A spawner's notification, handled at the next poll (never inside Godot's call).
enum Tracked {
    /// A node and the spawner that tracks it.
    Added(InstanceId, InstanceId),
    /// Left the tree; its synced path as it was then.
    Removed(InstanceId, String),
}

/// What configures a node in `object_configuration_add/remove`.
enum Configured {
    Synchronizer(Gd<MultiplayerSynchronizer>),
    Spawner(Gd<MultiplayerSpawner>),
}

/// The node and what configures it, for the configurations this API replicates.
fn configured(
    object: Option<Gd<Object>>,
    configuration: Variant,
) -> Option<(Gd<Node>, Configured)> {
    let node = object?.try_cast::<Node>().ok()?;
    let configuration = configuration.try_to::<Gd<Object>>().ok()?;
    let configuration = match configuration.try_cast::<MultiplayerSpawner>() {
        Ok(spawner) => return Some((node, Configured::Spawner(spawner))),
        Err(other) => other,
    };
    let sync = configuration.try_cast::<MultiplayerSynchronizer>().ok()?;
    Some((node, Configured::Synchronizer(sync)))
}

/// A MultiplayerSynchronizer being served: what its authority sent last.
struct Synced {
    sync: InstanceId,
    root: InstanceId,
    /// What was sent last of each property, and when.
    sent: HashMap<String, (Variant, Instant)>,
    /// When `always` properties were last looked at (every `replication_interval`) ...
    last_sync: Option<Instant>,
    /// ... and `on change` ones (every `delta_interval`).
    last_watch: Option<Instant>,
}

/// An `always` property is sent again this often even if unchanged, as SceneMultiplayer
/// keeps sending it: a lost datagram is healed, a late joiner catches up.
const REFRESH: Duration = Duration::from_secs(1);

/// The properties of a synchronizer's config as synced property names (`position`, or a path
/// such as `Sprite:modulate`), with their spawn flag and replication mode.
fn sync_properties(sync: &Gd<MultiplayerSynchronizer>) -> Vec<(String, bool, ReplicationMode)> {
    let Some(mut config) = sync.get_replication_config() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in config.get_properties().iter_shared() {
        let text = path.to_string();
        if !text.contains(':') {
            continue; // a node without a property: nothing to replicate
        }
        // A property of the root is named plainly (`position`); a component of one keeps
        // NodePath's form (`:position:x`), as does a child's property (`Sprite:modulate`).
        let own = text.strip_prefix('.').unwrap_or(&text);
        let name = match own.strip_prefix(':') {
            Some(plain) if !plain.contains(':') => plain,
            _ => own,
        };
        let mode = config.property_get_replication_mode(&path);
        out.push((name.to_owned(), config.property_get_spawn(&path), mode));
    }
    out
}

/// Godot's rpc modes (`MultiplayerAPI.RPCMode`).
const RPC_MODE_DISABLED: i64 = 0;
const RPC_MODE_ANY_PEER: i64 = 1;
const RPC_MODE_AUTHORITY: i64 = 2;

/// An `@rpc` declaration.
struct RpcConfig {
    mode: i64,
    call_local: bool,
    delivery: Delivery,
    channel: u8,
}

/// Godot's transfer modes (`MultiplayerPeer.TransferMode`) as synctree deliveries.
fn delivery_of(transfer_mode: i64) -> Delivery {
    match transfer_mode {
        0 => Delivery::Unreliable,
        1 => Delivery::UnreliableOrdered,
        _ => Delivery::Reliable,
    }
}

/// Logs why `rpc` does not run here.
fn refuse_rpc(rpc: &PeerRpc, why: &str) {
    godot_error!(
        "SyncedMultiplayerAPI: rpc '{}' on {} from peer {} refused: {why}",
        rpc.method,
        rpc.path,
        rpc.from
    )
}

/// Whether two rpcs travel in one ordered stream (same sender and channel, reliable).
fn same_stream(a: &PeerRpc, b: &PeerRpc) -> bool {
    a.delivery == Delivery::Reliable && (a.from, a.channel) == (b.from, b.channel)
}

/// The `@rpc` configuration of `method` on `node`: its script's, else the node's own
/// (`Node.rpc_config`).
fn rpc_config(node: &Gd<Node>, method: &StringName) -> Option<RpcConfig> {
    let from_script = node
        .get_script()
        .and_then(|s| s.try_cast::<Script>().ok())
        .map(|s| s.get_rpc_config());
    for config in [from_script, Some(node.get_node_rpc_config())]
        .into_iter()
        .flatten()
    {
        let Ok(dict) = config.try_to::<VarDictionary>() else {
            continue;
        };
        let entry = dict
            .get(&method.to_variant())
            .or_else(|| dict.get(&method.to_string().to_variant()));
        let Some(entry) = entry else {
            continue;
        };
        let Ok(entry) = entry.try_to::<VarDictionary>() else {
            continue;
        };
        let int = |k: &str| entry.get(k).and_then(|v| v.try_to::<i64>().ok());
        return Some(RpcConfig {
            mode: int("rpc_mode").unwrap_or(RPC_MODE_AUTHORITY),
            call_local: entry
                .get("call_local")
                .and_then(|v| v.try_to::<bool>().ok())
                .unwrap_or(false),
            delivery: delivery_of(int("transfer_mode").unwrap_or(2)),
            channel: int("channel").unwrap_or(0).clamp(0, 255) as u8,
        });
    }
    None
}

fn scene_root() -> Option<Gd<Node>> {
    let tree = Engine::singleton()
        .get_main_loop()?
        .try_cast::<SceneTree>()
        .ok()?;
    tree.get_root().map(|w| w.upcast())
}

/// A MultiplayerAPI for games running on a synctree cluster, installed with
/// `get_tree().set_multiplayer(SyncedMultiplayerAPI.new())` (or the addon's autoload).
/// A dedicated server is peer 1, as with SceneMultiplayer; a game client's id derives from its
/// token and is the same whichever server it is connected to. `get_peers()` lists the peers
/// connected to any server of the cluster; `rpc()` honours `@rpc` (any_peer / authority,
/// call_local) and reaches a peer wherever it is connected. Without a running SyncedTree it
/// answers as a lone server.
#[derive(GodotClass)]
#[class(tool, base=MultiplayerApiExtension)]
pub struct SyncedMultiplayerAPI {
    base: Base<MultiplayerApiExtension>,
    peer: Option<Gd<MultiplayerPeer>>,
    remote_sender: i32,
    tracked: Vec<Tracked>,
    syncs: Vec<Synced>,
    /// Peers announced with `peer_connected` (sorted).
    known: Vec<u64>,
    /// `connected_to_server` was emitted (game clients).
    connected: bool,
    /// `connection_failed` or `server_disconnected` was emitted (the servers refused it).
    ended: bool,
    /// Sessions carried by the game's multiplayer peer.
    transport: PeerTransport,
    /// Nodes each spawner (the authority's) replicated and still tracks: its `spawn_limit`.
    spawned: HashMap<InstanceId, HashSet<InstanceId>>,
    /// The SceneTree's `node_added` is connected (spawner discovery).
    watching: bool,
    /// The spawn functions this API wrapped (to learn each custom spawn's data), by spawner.
    wrappers: HashMap<InstanceId, Callable>,
    /// The next sequence number of this peer's unreliable_ordered rpcs, by channel.
    next_seq: HashMap<u8, u32>,
    /// The newest unreliable_ordered rpc run, by (sender, channel): older ones are dropped.
    newest: HashMap<(u64, u8), u32>,
    /// Servers: the clients told of roots they may not see, and when visibility was last
    /// looked at.
    viewed: HashSet<u64>,
    views_checked: Option<Instant>,
    /// Reliable rpcs of nodes not here yet that their sender had just spawned (the spawn
    /// reaches the others through the log, after the rpc), with when they arrived, and those
    /// of the same sender and channel behind them: run once the node is applied, in order,
    /// or refused after [`RPC_HOLD`].
    held: VecDeque<(PeerRpc, Instant)>,
    /// Synchronizers removed while `synchronize` ran game code with the list taken out.
    removed_syncs: Vec<InstanceId>,
}

/// How long a reliable rpc waits for its node to be applied here.
const RPC_HOLD: Duration = Duration::from_secs(3);

/// Reliable rpcs waiting for their node, at most (older ones are refused past it).
const RPC_HELD_MAX: usize = 4096;

/// How often a server looks at its synchronizers' visibility.
const VIEW_EVERY: Duration = Duration::from_millis(100);

#[godot_api]
impl IMultiplayerApiExtension for SyncedMultiplayerAPI {
    fn init(base: Base<MultiplayerApiExtension>) -> Self {
        SyncedMultiplayerAPI {
            base,
            // As SceneMultiplayer: an offline peer until the game sets one, so spawners and
            // synchronizers see a multiplayer peer.
            peer: Some(OfflineMultiplayerPeer::new_gd().upcast()),
            remote_sender: 0,
            tracked: Vec::new(),
            syncs: Vec::new(),
            known: Vec::new(),
            connected: false,
            ended: false,
            transport: PeerTransport::new(),
            spawned: HashMap::new(),
            watching: false,
            wrappers: HashMap::new(),
            next_seq: HashMap::new(),
            newest: HashMap::new(),
            viewed: HashSet::new(),
            views_checked: None,
            held: VecDeque::new(),
            removed_syncs: Vec::new(),
        }
    }

    fn poll(&mut self) -> Error {
        if let Some(mut peer) = self.peer.clone() {
            peer.poll();
            if let Some(Note::ConnectionFailed) = self.transport.pump(&mut peer, registered_tree())
            {
                godot_error!("SyncedMultiplayerAPI: the multiplayer peer could not connect");
                self.ended = true;
                self.base_mut().emit_signal("connection_failed", &[]);
            }
        }
        self.watch_spawners();
        FRESH.with(|f| {
            let mut f = f.borrow_mut();
            if !f.is_empty() {
                f.retain(|_, at| at.elapsed() < RPC_HOLD);
            }
        });
        let Some(link) = link() else {
            return Error::OK;
        };
        self.presence(&link);
        self.replicate();
        // Those waiting for their node first (it may have been applied since), then new ones;
        // rpcs that arrive while these run wait for the next poll.
        self.retry_held();
        let mut budget = 4096;
        while budget > 0 {
            let Some(rpc) = link.try_recv() else { break };
            budget -= 1;
            self.deliver(rpc);
        }
        Error::OK
    }

    /// As SceneMultiplayer: the game's peer carries this process's traffic. A server peer
    /// (unique id 1) makes this process a synctree server serving clients through it; a
    /// client peer, once connected, makes it a game client of the server at the other end.
    fn set_multiplayer_peer(&mut self, peer: Option<Gd<MultiplayerPeer>>) {
        self.peer = peer;
        self.transport = PeerTransport::new();
        // A new peer is a new connection: its signals come again.
        self.connected = false;
        self.ended = false;
    }

    fn get_multiplayer_peer(&mut self) -> Option<Gd<MultiplayerPeer>> {
        self.peer.clone()
    }

    fn get_unique_id(&self) -> i32 {
        // Games ask this all the time (`is_multiplayer_authority()`): no clone of the link.
        if let Some(id) = LINK.with(|l| l.borrow().as_ref().map(|(link, _)| link.unique_id())) {
            return id as i32;
        }
        match &self.peer {
            Some(peer) => peer.get_unique_id(),
            // A dedicated server without a peer is the authority, like SceneMultiplayer's 1.
            None => 1,
        }
    }

    fn get_peer_ids(&self) -> PackedInt32Array {
        let ids: Vec<i32> = link()
            .map(|l| l.peers().into_iter().map(|p| p as i32).collect())
            .unwrap_or_default();
        PackedInt32Array::from(ids.as_slice())
    }

    fn rpc(
        &mut self,
        peer: i32,
        object: Option<Gd<Object>>,
        method: StringName,
        args: VarArray,
    ) -> Error {
        match self.send_rpc(peer, object, &method, args) {
            Ok(()) => Error::OK,
            Err((code, message)) => {
                godot_error!("SyncedMultiplayerAPI: rpc '{method}': {message}");
                code
            }
        }
    }

    fn get_remote_sender_id(&self) -> i32 {
        self.remote_sender
    }

    fn object_configuration_add(
        &mut self,
        object: Option<Gd<Object>>,
        configuration: Variant,
    ) -> Error {
        // Godot first calls this with a null object (the root's configuration): nothing to do.
        match configured(object, configuration) {
            Some((node, Configured::Synchronizer(sync))) => {
                SYNC_ROOTS.with(|s| {
                    s.borrow_mut()
                        .entry(node.instance_id())
                        .or_default()
                        .push(sync.instance_id())
                });
                self.syncs.push(Synced {
                    sync: sync.instance_id(),
                    root: node.instance_id(),
                    sent: Default::default(),
                    last_sync: None,
                    last_watch: None,
                })
            }
            Some((node, Configured::Spawner(spawner))) => self
                .tracked
                .push(Tracked::Added(node.instance_id(), spawner.instance_id())),
            None => {}
        }
        Error::OK
    }

    fn object_configuration_remove(
        &mut self,
        object: Option<Gd<Object>>,
        configuration: Variant,
    ) -> Error {
        match configured(object, configuration) {
            Some((node, Configured::Synchronizer(sync))) => {
                let id = sync.instance_id();
                self.syncs.retain(|s| s.sync != id);
                // Removed while `synchronize` has the list out: dropped when it is back.
                self.removed_syncs.push(id);
                SYNC_ROOTS.with(|s| {
                    let mut s = s.borrow_mut();
                    if let Some(list) = s.get_mut(&node.instance_id()) {
                        list.retain(|x| *x != id);
                        if list.is_empty() {
                            s.remove(&node.instance_id());
                        }
                    }
                });
            }
            Some((node, Configured::Spawner(spawner))) => {
                if let Some(set) = self.spawned.get_mut(&spawner.instance_id()) {
                    set.remove(&node.instance_id());
                }
                // Still in the tree (tree_exiting): take its synced path now.
                let path = synced_tree().and_then(|t| {
                    let rel = t.get_path_to(&node).to_string();
                    (!rel.starts_with("..")).then_some(rel)
                });
                if let Some(path) = path {
                    self.tracked
                        .push(Tracked::Removed(node.instance_id(), path));
                }
            }
            None => {}
        }
        Error::OK
    }
}

impl SyncedMultiplayerAPI {
    fn send_rpc(
        &mut self,
        peer: i32,
        object: Option<Gd<Object>>,
        method: &StringName,
        args: VarArray,
    ) -> Result<(), (Error, String)> {
        let link = link().ok_or((
            Error::ERR_UNCONFIGURED,
            "no SyncedTree is running in this process".to_owned(),
        ))?;
        let node = object.and_then(|o| o.try_cast::<Node>().ok()).ok_or((
            Error::ERR_INVALID_PARAMETER,
            "rpcs are called on nodes".to_owned(),
        ))?;
        let config = rpc_config(&node, method).ok_or((
            Error::ERR_INVALID_PARAMETER,
            format!(
                "not declared with @rpc on {} (the script's rpc config has no such method)",
                node.get_path()
            ),
        ))?;
        if config.mode == RPC_MODE_DISABLED {
            return Err((
                Error::ERR_INVALID_PARAMETER,
                "its rpc mode is disabled".into(),
            ));
        }
        let me = link.unique_id() as i64;
        let peer = i64::from(peer);
        let reaches_me = peer == 0 || peer == me || (peer < 0 && -peer != me);
        if peer == me && !config.call_local {
            return Err((
                Error::ERR_INVALID_PARAMETER,
                "an rpc to this peer itself needs call_local".into(),
            ));
        }
        // Read before the local call: game code may free the node.
        let path = node.get_path().to_string();
        let fresh = self.is_fresh(&node);
        if reaches_me && config.call_local {
            self.call_as(&node, method, &args, me as i32);
        }
        if peer == me {
            return Ok(());
        }
        let bytes = var_to_bytes(&args.to_variant()).to_vec();
        if bytes.len() > MAX_REQUEST_BYTES - 1024 {
            return Err((
                Error::ERR_INVALID_PARAMETER,
                format!(
                    "its arguments take {} bytes; an rpc carries at most {} bytes",
                    bytes.len(),
                    MAX_REQUEST_BYTES - 1024
                ),
            ));
        }
        link.send(PeerRpc {
            from: 0,
            to: peer,
            path,
            method: method.to_string(),
            args: bytes,
            delivery: config.delivery,
            channel: config.channel,
            seq: self.next_seq(config.delivery, config.channel),
            fresh,
        });
        Ok(())
    }

    /// True if `node`, or a node it lies under, was spawned here moments ago or waits to be
    /// replicated by a spawner with room under its `spawn_limit`.
    fn is_fresh(&self, node: &Gd<Node>) -> bool {
        let mut at = Some(node.clone());
        while let Some(n) = at {
            let id = n.instance_id();
            if FRESH.with(|f| f.borrow().get(&id).is_some_and(|t| t.elapsed() < RPC_HOLD)) {
                return true;
            }
            let pending = self.tracked.iter().any(|t| match t {
                Tracked::Added(added, spawner) if *added == id => {
                    Gd::<MultiplayerSpawner>::try_from_instance_id(*spawner).is_ok_and(|s| {
                        let limit = s.get_spawn_limit();
                        let count = self.spawned.get(spawner).map_or(0, |t| t.len());
                        limit == 0 || count < limit as usize
                    })
                }
                _ => false,
            });
            if pending {
                return true;
            }
            at = n.get_parent();
        }
        false
    }

    /// The sequence number of this peer's next rpc sent with `delivery` on `channel` (only
    /// unreliable_ordered ones need one). A channel's numbers start from the wall clock in
    /// ms: receivers keep the newest number of a sender for as long as it stays in the
    /// cluster, so a game that makes a new API (or restarts) within that time goes on above
    /// its old numbers (unless it sent over 1000 a second), not below them and dropped.
    fn next_seq(&mut self, delivery: Delivery, channel: u8) -> u32 {
        if delivery != Delivery::UnreliableOrdered {
            return 0;
        }
        let next = self.next_seq.entry(channel).or_insert_with(|| {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            ms as u32
        });
        *next = next.wrapping_add(1);
        *next
    }

    /// Runs an rpc that arrived, if its node declares it and the sender may call it.
    fn deliver(&mut self, rpc: PeerRpc) {
        // Ordered per client sender (servers all send as peer 1, each with its own count).
        if rpc.delivery == Delivery::UnreliableOrdered && rpc.from != synctree_proto::SERVER_PEER {
            let key = (rpc.from, rpc.channel);
            // Wrapping comparison: a sequence within half the range ahead is newer (the
            // first one heard from a sender is, whatever its number).
            if let Some(newest) = self.newest.get(&key) {
                if rpc.seq.wrapping_sub(*newest) as i32 <= 0 {
                    return; // overtaken by a newer one: dropped, as Godot does
                }
            }
            self.newest.insert(key, rpc.seq);
        }
        let reliable = rpc.delivery == Delivery::Reliable;
        // Behind an earlier reliable rpc of the same sender and channel that waits: in order.
        if reliable && self.held.iter().any(|(h, _)| same_stream(h, &rpc)) {
            return self.hold(rpc, Instant::now());
        }
        let Some(node) = scene_root().and_then(|r| r.get_node_or_null(rpc.path.as_str())) else {
            // Only a node the sender spawned moments ago may still be on its way.
            if reliable && rpc.fresh {
                return self.hold(rpc, Instant::now());
            }
            return refuse_rpc(&rpc, "no such node here");
        };
        self.run(rpc, node);
    }

    /// Keeps a reliable rpc until its node is applied here.
    fn hold(&mut self, rpc: PeerRpc, since: Instant) {
        if self.held.len() >= RPC_HELD_MAX {
            // The newest goes: an older one dropped would let later ones of its stream run
            // before it.
            return refuse_rpc(&rpc, "too many rpcs wait for nodes not applied here");
        }
        self.held.push_back((rpc, since));
    }

    /// Runs the held rpcs whose node is here now, in order per sender and channel; refuses
    /// those that waited [`RPC_HOLD`].
    fn retry_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut blocked: Vec<(u64, u8)> = Vec::new();
        for (rpc, since) in std::mem::take(&mut self.held) {
            let stream = (rpc.from, rpc.channel);
            if blocked.contains(&stream) {
                self.held.push_back((rpc, since));
                continue;
            }
            match scene_root().and_then(|r| r.get_node_or_null(rpc.path.as_str())) {
                Some(node) => self.run(rpc, node),
                None if since.elapsed() >= RPC_HOLD => refuse_rpc(
                    &rpc,
                    &format!("no such node here (waited {} s for it)", RPC_HOLD.as_secs()),
                ),
                None => {
                    blocked.push(stream);
                    self.held.push_back((rpc, since));
                }
            }
        }
    }

    /// Runs `rpc` on `node` if its `@rpc` configuration allows the sender.
    fn run(&mut self, rpc: PeerRpc, node: Gd<Node>) {
        let refuse = |why: String| refuse_rpc(&rpc, &why);
        let method = StringName::from(rpc.method.as_str());
        let Some(config) = rpc_config(&node, &method) else {
            return refuse("the method is not declared with @rpc".into());
        };
        let authority = node.get_multiplayer_authority();
        match config.mode {
            RPC_MODE_ANY_PEER => {}
            RPC_MODE_AUTHORITY if i64::from(authority) == rpc.from as i64 => {}
            RPC_MODE_AUTHORITY => {
                return refuse(format!(
                    "only its multiplayer authority (peer {authority}) may call it"
                ))
            }
            _ => return refuse("its rpc mode is disabled".into()),
        }
        let args = bytes_to_var(&PackedByteArray::from(rpc.args.as_slice()));
        let Ok(args) = args.try_to::<VarArray>() else {
            return refuse("its arguments do not decode to an Array".into());
        };
        self.call_as(&node, &method, &args, rpc.from as i32);
    }

    /// Calls `method` on `node` with `get_remote_sender_id()` = `sender`, letting the called
    /// script use this API meanwhile.
    fn call_as(&mut self, node: &Gd<Node>, method: &StringName, args: &VarArray, sender: i32) {
        let before = std::mem::replace(&mut self.remote_sender, sender);
        let mut node = node.clone();
        {
            let _reentrant = self.base_mut();
            node.callv(method, args);
        }
        self.remote_sender = before;
    }

    /// Replicates what spawners and synchronizers reported (outside Godot's calls into this
    /// API, so the SyncedTree is free to use).
    fn replicate(&mut self) {
        let Some(mut tree) = synced_tree() else {
            self.tracked.clear();
            CUSTOM.with(|c| c.borrow_mut().clear());
            return;
        };
        let mut custom = CUSTOM.with(|c| std::mem::take(&mut *c.borrow_mut()));
        for t in std::mem::take(&mut self.tracked) {
            match t {
                Tracked::Added(id, spawner) => {
                    let (Ok(node), Ok(spawner)) = (
                        Gd::<Node>::try_from_instance_id(id),
                        Gd::<MultiplayerSpawner>::try_from_instance_id(spawner),
                    ) else {
                        continue;
                    };
                    if !node.is_inside_tree() {
                        continue;
                    }
                    if tree.bind().is_synced_node(&node) {
                        // Placed by synctree (another replica's spawn): tracked, no more.
                        self.spawned
                            .entry(spawner.instance_id())
                            .or_default()
                            .insert(id);
                        continue;
                    }
                    let count = self
                        .spawned
                        .get(&spawner.instance_id())
                        .map_or(0, |t| t.len());
                    let limit = spawner.get_spawn_limit();
                    if limit > 0 && count >= limit as usize {
                        godot_error!(
                            "SyncedMultiplayerAPI: spawn limit reached ({limit}) on {}: {} is not replicated",
                            spawner.get_path(),
                            node.get_path()
                        );
                        continue;
                    }
                    note_fresh(id);
                    let mut props = self.spawn_properties(&node);
                    let mut scene = None;
                    if let Some((_, data)) = custom
                        .remove(&id)
                        .filter(|(s, _)| *s == spawner.instance_id())
                    {
                        match to_value(&data) {
                            Ok(v) => props.insert(0, (live::SPAWN_DATA.to_owned(), v)),
                            Err(e) => {
                                godot_error!(
                                    "SyncedMultiplayerAPI: the spawn data of {} is not replicated: {e}",
                                    node.get_path()
                                );
                                continue;
                            }
                        }
                        scene = Some(format!("{}{}", live::SPAWNER_SCENE, spawner.get_path()));
                    }
                    self.spawned
                        .entry(spawner.instance_id())
                        .or_default()
                        .insert(id);
                    tree.bind_mut().replicate_spawn(node, props, scene);
                }
                Tracked::Removed(id, path) => tree.bind_mut().replicate_despawn(&path, id),
            }
        }
        self.synchronize(&mut tree);
        self.update_views(&tree);
    }

    /// Servers: tells the SyncedTree which synchronizer roots each client may not see (a
    /// synchronizer without public visibility shows its root only to the peers it was
    /// `set_visibility_for`). Visibility filters (callables) are not readable by an extension
    /// and are not applied.
    fn update_views(&mut self, tree: &Gd<SyncedTree>) {
        let Some(link) = link() else { return };
        if link.unique_id() != synctree_proto::SERVER_PEER {
            return;
        }
        let now = Instant::now();
        if self
            .views_checked
            .is_some_and(|t| now.duration_since(t) < VIEW_EVERY)
        {
            return;
        }
        self.views_checked = Some(now);
        let private: Vec<(Gd<MultiplayerSynchronizer>, Gd<Node>)> = self
            .syncs
            .iter()
            .filter_map(|s| {
                let sync = Gd::<MultiplayerSynchronizer>::try_from_instance_id(s.sync).ok()?;
                let root = Gd::<Node>::try_from_instance_id(s.root).ok()?;
                (!sync.is_visibility_public()).then_some((sync, root))
            })
            .collect();
        let peers = link.peers();
        // Peers that left: their views are cleared (and so forgotten by the runtime).
        let gone: Vec<u64> = self
            .viewed
            .iter()
            .filter(|p| !peers.contains(p))
            .copied()
            .collect();
        for peer in gone {
            tree.bind().set_client_view(peer, &[]);
            self.viewed.remove(&peer);
        }
        for peer in peers {
            if peer == synctree_proto::SERVER_PEER {
                continue;
            }
            let hidden: Vec<Gd<Node>> = private
                .iter()
                .filter(|(sync, _)| !sync.get_visibility_for(peer as i32))
                .map(|(_, root)| root.clone())
                .collect();
            if hidden.is_empty() && !self.viewed.contains(&peer) {
                continue;
            }
            // (The runtime ignores a view that did not change; roots not synced yet are
            // left out until they are.)
            tree.bind().set_client_view(peer, &hidden);
            if hidden.is_empty() {
                self.viewed.remove(&peer);
            } else {
                self.viewed.insert(peer);
            }
        }
    }

    /// Finds MultiplayerSpawners (SceneTree's `node_added`, and those already in the tree),
    /// and wraps each one's `spawn_function` so a custom spawn's `data` can be replicated.
    fn watch_spawners(&mut self) {
        if !self.watching {
            let Some(root) = scene_root() else { return };
            self.watching = true;
            let found = root
                .find_children_ex("*")
                .type_("MultiplayerSpawner")
                .owned(false)
                .done();
            for n in found.iter_shared() {
                add_spawner(n.instance_id());
            }
            if !WATCHING.with(|w| w.replace(true)) {
                let added = Callable::from_fn("synctree_node_added", |args| {
                    if let Some(node) = args.first().and_then(|a| a.try_to::<Gd<Node>>().ok()) {
                        if node.is_class("MultiplayerSpawner") {
                            add_spawner(node.instance_id());
                        }
                    }
                });
                root.get_tree().connect("node_added", &added);
            }
        }
        let spawners = spawners();
        self.wrappers
            .retain(|id, _| spawners.iter().any(|s| s.instance_id() == *id));
        let mut by_node: HashMap<InstanceId, Vec<InstanceId>> = HashMap::new();
        for spawner in &spawners {
            if let Some(node) = spawn_node(spawner) {
                by_node
                    .entry(node.instance_id())
                    .or_default()
                    .push(spawner.instance_id());
            }
        }
        SPAWN_NODES.with(|s| *s.borrow_mut() = by_node);
        for mut spawner in spawners {
            let function = spawner.get_spawn_function();
            let id = spawner.instance_id();
            if !function.is_valid() || self.wrappers.get(&id) == Some(&function) {
                continue;
            }
            let wrapper = Callable::from_fn("synctree_spawn_function", move |args| {
                let data = args.first().map(|v| (*v).clone()).unwrap_or_default();
                let made = function.call(std::slice::from_ref(&data));
                if let Ok(node) = made.try_to::<Gd<Node>>() {
                    CUSTOM.with(|c| c.borrow_mut().insert(node.instance_id(), (id, data)));
                }
                made
            });
            spawner.set_spawn_function(&wrapper);
            self.wrappers.insert(id, wrapper);
        }
    }

    /// The spawn properties of the synchronizers rooted at `node`, as they are now.
    fn spawn_properties(&self, node: &Gd<Node>) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for s in self.syncs.iter().filter(|s| s.root == node.instance_id()) {
            let Ok(sync) = Gd::<MultiplayerSynchronizer>::try_from_instance_id(s.sync) else {
                continue;
            };
            for (property, spawn, _) in sync_properties(&sync) {
                if !spawn {
                    continue;
                }
                match to_value(&live::Target::of(&property).get(node)) {
                    Ok(v) => out.push((property, v)),
                    Err(e) => godot_warn!(
                        "synctree: spawn property '{property}' of {} not replicated: {e}",
                        node.get_path()
                    ),
                }
            }
        }
        out
    }

    /// Sends what changed on the synchronizers this process is the authority of.
    fn synchronize(&mut self, tree: &mut Gd<SyncedTree>) {
        let leads = tree.bind().leads();
        // Not `is_multiplayer_authority()`: it asks this API for the unique id, and this API
        // is busy (borrowed) right now.
        let me = link().map(|l| l.unique_id() as i32).unwrap_or(1);
        let now = Instant::now();
        // Reading and writing the properties runs game code (getters; a predicted write's
        // setter), which may call this API (`is_multiplayer_authority()`) and add or remove
        // synchronizers: the list is taken out and this API left open to such calls.
        let mut syncs = std::mem::take(&mut self.syncs);
        self.removed_syncs.clear();
        let reentrant = self.base_mut();
        for s in &mut syncs {
            let (Ok(sync), Ok(root)) = (
                Gd::<MultiplayerSynchronizer>::try_from_instance_id(s.sync),
                Gd::<Node>::try_from_instance_id(s.root),
            ) else {
                continue;
            };
            if !sync.is_inside_tree() || sync.get_multiplayer_authority() != me {
                continue;
            }
            if me == 1 && !leads {
                continue; // server-owned: the leader's game state is replicated
            }
            let due = |last: Option<Instant>, every: f64| {
                last.is_none_or(|t| {
                    now.duration_since(t) >= Duration::from_secs_f64(every.max(0.0))
                })
            };
            let sync_due = due(s.last_sync, sync.get_replication_interval());
            let watch_due = due(s.last_watch, sync.get_delta_interval());
            if sync_due {
                s.last_sync = Some(now);
            }
            if watch_due {
                s.last_watch = Some(now);
            }
            for (property, _, mode) in sync_properties(&sync) {
                // Replicating runs game code (a predicted write calls the property's
                // setter), which may free the node.
                if !root.is_instance_valid() {
                    break;
                }
                let value = live::Target::of(&property).get(&root);
                let sent = s.sent.get(&property);
                let changed = sent.is_none_or(|(v, _)| *v != value);
                if mode == ReplicationMode::ALWAYS && sync_due {
                    // `always` (SceneMultiplayer's unreliable sync): an eventual write.
                    let stale = sent.is_none_or(|(_, at)| now.duration_since(*at) >= REFRESH);
                    if changed || stale {
                        tree.bind_mut().replicate_eventual(&root, &property, &value);
                        s.sent.insert(property, (value, now));
                    }
                } else if mode == ReplicationMode::ON_CHANGE && watch_due && changed {
                    // `on change` (SceneMultiplayer's reliable watch): through the log.
                    tree.bind_mut().replicate_property(&root, &property, &value);
                    s.sent.insert(property, (value, now));
                }
            }
        }
        drop(reentrant);
        // Those registered meanwhile come after; those removed meanwhile go.
        let removed = std::mem::take(&mut self.removed_syncs);
        syncs.retain(|s| !removed.contains(&s.sync));
        syncs.append(&mut self.syncs);
        self.syncs = syncs;
        self.syncs
            .retain(|s| Gd::<MultiplayerSynchronizer>::try_from_instance_id(s.sync).is_ok());
    }

    /// Announces peers that came and went, and a game client's first connection.
    fn presence(&mut self, link: &PeerLink) {
        let now = link.peers();
        let mut events: Vec<(&str, u64)> = Vec::new();
        for p in &self.known {
            if now.binary_search(p).is_err() {
                events.push(("peer_disconnected", *p));
                // It starts counting again when it comes back.
                self.newest.retain(|(from, _), _| from != p);
            }
        }
        for p in &now {
            if self.known.binary_search(p).is_err() {
                events.push(("peer_connected", *p));
            }
        }
        let client = link.unique_id() != synctree_proto::SERVER_PEER;
        let first_connection = client && !self.connected && now.contains(&1);
        // A client moves to another server on its own when its server goes away; it ends
        // only when the servers refuse it (its token): connection_failed if it never got in,
        // server_disconnected if it had.
        let ended = match link.refused() {
            Some(reason) if client && !self.ended => {
                self.ended = true;
                godot_error!("SyncedMultiplayerAPI: disconnected from the servers: {reason}");
                Some(if self.connected {
                    "server_disconnected"
                } else {
                    "connection_failed"
                })
            }
            _ => None,
        };
        self.known = now;
        if first_connection {
            self.connected = true;
        }
        let mut base = self.base_mut();
        if first_connection {
            base.emit_signal("connected_to_server", &[]);
        }
        if let Some(signal) = ended {
            base.emit_signal(signal, &[]);
        }
        for (signal, peer) in events {
            base.emit_signal(signal, &[(peer as i64).to_variant()]);
        }
    }
}
