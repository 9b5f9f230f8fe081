//! `SyncedTree`: the node that roots a replicated subtree.

use crate::backend::Backend;
use crate::config::{self, Exported, Mode};
use crate::live::{self, LiveTree};
use crate::multiplayer::SpawnerSignal;
use crate::prediction::{Predictions, Settled};
use crate::sync_request::{Failure, SyncRequest};
use crate::variant::{from_value, to_value};
use godot::classes::{INode, Node};
use godot::prelude::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use synctree_proto::{validate_name, validate_path, validate_property, Effect, Op};
use synctree_proto::{CompactString, NodeKey, Value};
use synctree_runtime::{
    Applied, Completion, Done, GameClient, Membership, MembershipChange, Server, Status,
};

/// Roots a scene subtree that is kept identical, in the same order, on every server of a
/// synctree cluster (Raft over QUIC). Nodes below it are addressed by paths relative to it.
///
/// Writes (`spawn`, `despawn`, `set_synced`) and linearizable reads (`read_synced`) return a
/// [SyncRequest]; `await request.completed`. Committed changes from every server are applied
/// to this node's children each frame, in log order, at most `max_effects_per_frame` per frame.
///
/// Configuration: command-line user args win (`-- --synctree-id=1
/// --synctree-listen=127.0.0.1:7001 --synctree-peers=2@127.0.0.1:7002,3@127.0.0.1:7003
/// --synctree-data-dir=DIR --synctree-certs=DIR | --synctree-dev-certs=DIR
/// --synctree-fsync=true --synctree-in-memory=false`), then the exported properties, then
/// project settings under `synctree/`.
///
/// Game clients: a server with a client port (`--synctree-client-listen=ADDR`, tokens from
/// `synctree/clients/tokens_file` or `--synctree-client-tokens=T1,T2`) admits players. A
/// SyncedTree given servers to connect to (`--synctree-connect=1@HOST:PORT,2@HOST:PORT
/// --synctree-token=T --synctree-ca=ca.pem`) is a game client: it shows the same tree, and its
/// calls are proposed by its server on its behalf. A client changes or despawns only nodes it
/// owns (`spawn`'s `owner`; what it spawns is its own) and spawns only `spawnable_scenes`.
#[derive(GodotClass)]
#[class(base=Node, init)]
pub struct SyncedTree {
    base: Base<Node>,
    /// This server's id in the cluster (positive). 0: take it from args or project settings.
    #[export]
    node_id: i64,
    /// QUIC address to listen on, e.g. `0.0.0.0:7001`.
    #[export]
    listen_address: GString,
    /// The other servers: `2@10.0.0.2:7001,3@10.0.0.3:7001`.
    #[export]
    peers: GString,
    /// Where the Raft log, vote and snapshots live. Default `user://synctree/<id>`.
    #[export]
    data_dir: GString,
    /// Keep the Raft state in memory only (tests): a restart forgets everything.
    #[export]
    in_memory: bool,
    /// fsync each log append before acknowledging it. Turn off only for benchmarks.
    #[export]
    #[init(val = true)]
    fsync: bool,
    /// Folder with `ca.pem` and `node-<id>.pem/.key` from `synctree certs`.
    #[export]
    certs_dir: GString,
    /// DEVELOPMENT ONLY: generate a cluster CA and certificates in this folder.
    #[export]
    dev_certs_dir: GString,
    /// Start the server when the node enters the tree.
    #[export]
    #[init(val = true)]
    autostart: bool,
    /// At most this many committed effects are applied per frame; the rest wait, in order.
    #[export]
    #[init(val = 4096)]
    max_effects_per_frame: i64,
    /// Server: UDP address of the port game clients connect to (none: no clients).
    #[export]
    client_listen: GString,
    /// Server: the scenes game clients may spawn (servers may spawn any).
    #[export]
    spawnable_scenes: PackedStringArray,
    /// Game client: the servers' client ports, `1@10.0.0.1:7101,2@10.0.0.2:7101`. Set, this
    /// SyncedTree is a client.
    #[export]
    connect_to: GString,
    /// Game client: the token the servers admit it with.
    #[export]
    token: GString,
    /// Game client: the cluster CA certificate (`ca.pem`) it checks servers against.
    #[export]
    ca_file: GString,
    /// Server: decides about a client whose token is not on the list, like
    /// SceneMultiplayer's `auth_callback`: called on the main thread as `(peer_id: int,
    /// token: String)`; return `true` to admit it, `false` or a reason (String) to refuse.
    /// Unset: such clients are refused ("invalid token"). Unanswered within 5 s: refused.
    #[var(set = set_auth_callback)]
    #[init(val = Callable::invalid())]
    auth_callback: Callable,

    backend: Option<Backend>,
    #[init(val = LiveTree::new())]
    live: LiveTree,
    /// Requests sent to the runtime, by ticket, with what they asked (for error messages).
    requests: HashMap<u64, (Gd<SyncRequest>, What)>,
    /// Finished in Raft, waiting for the live tree to reach their log index.
    /// With the request's ticket (to settle a prediction).
    waiting: BTreeMap<u64, Vec<(Gd<SyncRequest>, Variant, u64)>>,
    /// Game client: writes shown before they commit (`set_predicted`).
    predictions: Predictions<Variant>,
    /// Predictions rolled back so far (status `reconciled`).
    reconciled: u64,
    /// The peer link (rpcs, presence, eventual properties) of the running backend.
    link: Option<synctree_runtime::PeerLink>,
    /// The stamp of the eventual write each (node, property) shows: last writer wins.
    eventual: HashMap<(NodeKey, live::PropId), synctree_proto::Stamp>,
    /// Eventual writes applied (status `eventual_applied`).
    eventual_applied: u64,
    /// Failed at call time; reported next frame so `await` works.
    failed_now: Vec<(Gd<SyncRequest>, String)>,
    /// Requests the multiplayer API made (spawners, synchronizers): nobody awaits them, so
    /// a failure is logged.
    logged: std::collections::HashSet<u64>,
    /// Effects being applied, and the log index reached once they are all applied.
    current: Option<(u64, VecDeque<Effect>)>,
    live_index: u64,
    /// After a reset that mixed kept and new nodes: the children order to restore once the
    /// reset's effects (ending at that index) are applied.
    reorder: Option<(u64, Vec<(u64, u64)>)>,
    /// Main-thread time spent applying committed effects, in total (status `apply_usec`).
    apply_time: std::time::Duration,
    /// Scenes of nodes spawned from here but maybe not applied yet, for property checks.
    pending_scenes: HashMap<String, String>,
    last_status: Status,
    completions: Vec<Completion>,
    /// This frame's requests are held back, to be proposed together (see `hold_frame`).
    holding: bool,
}

/// The initial properties of a spawn: a Dictionary in GDScript, `{}` when omitted.
#[derive(GodotConvert, Clone, Debug, Default)]
#[godot(transparent)]
pub struct Props(VarDictionary);

// SAFETY: the default value is made read-only, so calls cannot mutate the shared default.
unsafe impl godot::meta::GodotImmutable for Props {
    fn into_runtime_immutable(self) -> Self {
        Props(self.0.into_read_only())
    }
}

/// What a request asked, formatted only when it fails (formatting Godot strings costs).
enum What {
    Spawn(NodePath, StringName, GString),
    Despawn(NodePath),
    Set(NodePath, StringName),
    CompareAndSet(NodePath, StringName),
    Read(NodePath, StringName),
    Membership(MembershipChange),
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Spawn(parent, name, scene) => write!(f, "spawn({parent}, {name}, {scene})"),
            What::Despawn(path) => write!(f, "despawn({path})"),
            What::Set(path, property) => write!(f, "set_synced({path}, {property})"),
            What::CompareAndSet(path, property) => {
                write!(f, "compare_and_set({path}, {property})")
            }
            What::Read(path, property) => write!(f, "read_synced({path}, {property})"),
            What::Membership(change) => write!(f, "{change}"),
        }
    }
}

fn rel_path(path: &NodePath) -> Result<String, String> {
    let s = path.to_string();
    let s = s.strip_prefix("./").unwrap_or(&s);
    if s == "." || s.is_empty() {
        return Ok(String::new());
    }
    if s.starts_with('/') {
        return Err(format!(
            "path '{s}' must be relative to the SyncedTree, not absolute"
        ));
    }
    if s.contains(':') {
        return Err(format!(
            "path '{s}' must name a node, not a property (no ':')"
        ));
    }
    validate_path(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// Who is told of applied effects, read once per frame (see `SyncedTree::apply_one`).
struct Listening {
    property: bool,
    spawn: bool,
    despawn: bool,
    synchronizers: bool,
}

#[godot_api]
impl INode for SyncedTree {
    fn enter_tree(&mut self) {
        crate::multiplayer::register_tree(Some(self.to_gd().instance_id()));
        // Committed changes are applied when the frame begins (SceneTree's `process_frame`),
        // before any node's `_process` and before scripts awaiting `process_frame` resume: game
        // code always sees this frame's replicated state, as with SceneMultiplayer's poll.
        let pump = self.frame_callable();
        let mut tree = self.base().get_tree();
        if !tree.is_connected("process_frame", &pump) {
            tree.connect("process_frame", &pump);
        }
        live::watch_detaches(&mut tree);
    }

    fn ready(&mut self) {
        if self.autostart {
            self.start();
        }
    }

    fn exit_tree(&mut self) {
        crate::multiplayer::register_tree(None);
        let pump = self.frame_callable();
        let mut tree = self.base().get_tree();
        if tree.is_connected("process_frame", &pump) {
            tree.disconnect("process_frame", &pump);
        }
        self.stop();
    }
}

#[godot_api]
impl SyncedTree {
    /// A node was spawned in the live tree (from any server).
    #[signal]
    fn node_spawned(path: NodePath, node: Gd<Node>);
    /// A node was despawned from the live tree.
    #[signal]
    fn node_despawned(path: NodePath);
    /// A committed property value was applied to the live tree.
    #[signal]
    fn property_applied(path: NodePath, property: StringName, value: Variant);
    /// The Raft leader changed (0: none known).
    #[signal]
    fn leader_changed(leader_id: i64);
    /// Leader, term or membership changed; the argument is `status()`.
    #[signal]
    fn status_changed(status: VarDictionary);
    /// Game client: a predicted write did not end as shown (refused, or another write was
    /// committed after it); the property now shows `committed` (or a newer pending write of
    /// this client). `reason` says which.
    #[signal]
    fn prediction_reconciled(
        path: NodePath,
        property: StringName,
        predicted: Variant,
        committed: Variant,
        reason: GString,
    );

    /// Game client: show this client's `set_synced` writes of `property` of the node at
    /// `path` at once, before they commit, then reconcile with the committed order: a write
    /// refused, or overtaken by one committed after it, is rolled back to the committed value
    /// (newer writes of this client still pending are shown again), and
    /// `prediction_reconciled` reports it. Returns false (with an error) on a server, whose
    /// tree always shows committed state.
    #[func]
    fn set_predicted(
        &mut self,
        path: NodePath,
        property: StringName,
        #[opt(default = true)] enabled: bool,
    ) -> bool {
        if !self.is_client() {
            godot_error!("set_predicted: prediction is for game clients; a server shows committed state only");
            return false;
        }
        match rel_path(&path) {
            Ok(p) if !p.is_empty() => {
                self.predictions.enable(&p, &property.to_string(), enabled);
                true
            }
            Ok(_) => {
                godot_error!("set_predicted: the SyncedTree itself has no synced properties");
                false
            }
            Err(e) => {
                godot_error!("set_predicted: {e}");
                false
            }
        }
    }

    /// Starts this server (done automatically in `_ready` when `autostart`). Returns false
    /// and reports the error if the configuration is invalid or the server cannot start.
    #[func]
    fn start(&mut self) -> bool {
        if self.backend.is_some() {
            return true;
        }
        let exported = self.exported();
        let cfg = match config::resolve(&exported) {
            Ok(cfg) => cfg,
            Err(e) => {
                godot_error!("SyncedTree: cannot start: {e}");
                return false;
            }
        };
        match cfg {
            Mode::Unconfigured => {
                godot_print!(
                    "synctree: no server id and no servers to connect to: waiting for the game's \
                     multiplayer peer (a server peer starts a one-server cluster, a client peer \
                     connects through it)"
                );
                true
            }
            Mode::Server(cfg) => match self.start_server(*cfg) {
                Ok(()) => true,
                Err(e) => {
                    godot_error!("SyncedTree: {e}");
                    false
                }
            },
            Mode::Client(cfg) => {
                let servers: Vec<String> = cfg
                    .servers
                    .iter()
                    .map(|(id, a)| format!("{id}@{a}"))
                    .collect();
                match GameClient::connect(cfg) {
                    Ok(client) => {
                        godot_print!("synctree: game client connecting to {}", servers.join(", "));
                        self.install(Backend::Client(client));
                        true
                    }
                    Err(e) => {
                        godot_error!("SyncedTree: the game client cannot start: {e}");
                        false
                    }
                }
            }
        }
    }

    /// Stops this server. Committed state stays in its data directory.
    #[func]
    fn stop(&mut self) {
        // Requests held back this frame are dropped with the server (and fail below).
        self.holding = false;
        if let Some(backend) = self.backend.take() {
            crate::multiplayer::install_link(None);
            self.link = None;
            backend.shutdown();
        }
        let stopped = "the SyncedTree server stopped before the request completed";
        let mut pending: Vec<_> = self
            .requests
            .drain()
            .map(|(_, (r, what))| {
                let message = format!("{what}: {stopped}");
                let failure = Failure {
                    message,
                    maybe_applied: true,
                };
                (r, Err(failure))
            })
            .collect();
        // Committed, but this tree will not apply their entries now.
        pending.extend(
            std::mem::take(&mut self.waiting)
                .into_values()
                .flatten()
                .map(|(r, _, _)| {
                    let failure = Failure {
                        message: format!("committed, but {stopped} here"),
                        maybe_applied: true,
                    };
                    (r, Err(failure))
                }),
        );
        self.finish_all(pending);
        // Predicted writes will not settle: show the committed values again.
        for s in self.predictions.clear() {
            self.show_settled(s, stopped);
        }
    }

    #[func]
    fn set_auth_callback(&mut self, callback: Callable) {
        self.auth_callback = callback;
        self.sync_auth();
    }

    /// True while the server runs (on a game client: while it is started).
    #[func]
    fn is_running(&self) -> bool {
        self.backend.is_some()
    }

    /// True if this SyncedTree is a game client (it connects to servers).
    #[func]
    fn is_client(&self) -> bool {
        matches!(self.backend, Some(Backend::Client(_)))
    }

    /// True on a game client while it is connected to a server.
    #[func]
    fn is_client_connected(&self) -> bool {
        self.backend
            .as_ref()
            .and_then(Backend::client_status)
            .is_some_and(|s| s.server.is_some())
    }

    /// This process's peer id, as owners and Godot's multiplayer authority use it: 1 on a
    /// server, the client's own id on a game client (0 until a server welcomed it).
    #[func]
    fn peer_id(&self) -> i64 {
        self.backend.as_ref().map(|b| b.peer_id()).unwrap_or(0) as i64
    }

    /// Spawns an instance of `scene` (a `res://` PackedScene path or a Node class name such as
    /// `Node2D`) named `name` under `parent` (relative to this node; `^"."` for this node),
    /// then sets `props` on it, everywhere, in commit order. `owner` is the peer that may
    /// change or despawn it besides the servers, and its multiplayer authority: 0 means the
    /// caller (the servers, 1, on a server; the client itself on a game client, which may
    /// spawn only for itself).
    #[func]
    fn spawn(
        &mut self,
        parent: NodePath,
        name: StringName,
        scene: GString,
        #[opt(default = &Props::default())] props: Props,
        #[opt(default = 0)] owner: i64,
    ) -> Gd<SyncRequest> {
        let what = What::Spawn(parent.clone(), name.clone(), scene.clone());
        let op = (|| {
            let owner = match (owner, self.is_client()) {
                (o, _) if !(0..=i64::from(i32::MAX)).contains(&o) => {
                    return Err(format!(
                        "invalid owner {o}: peer ids are 1..2147483647 (0: the caller)"
                    ))
                }
                (0, false) => synctree_proto::SERVER_PEER,
                (o, _) => o as u64,
            };
            let parent = rel_path(&parent)?;
            let name = name.to_string();
            validate_name(&name).map_err(|e| e.to_string())?;
            let scene = scene.to_string();
            self.live.scenes.check(&scene)?;
            let mut list = Vec::new();
            for (k, v) in props.0.iter_shared() {
                let key = match k.get_type() {
                    VariantType::STRING | VariantType::STRING_NAME => k.to_string(),
                    _ => return Err(format!("property names in props must be Strings, got {k}")),
                };
                validate_property(&key).map_err(|e| e.to_string())?;
                if !self.live.scenes.has_property(&scene, &key) {
                    return Err(format!("scene '{scene}' has no property '{key}'"));
                }
                let value = to_value(&v).map_err(|e| format!("property '{key}': {e}"))?;
                list.push((key, value));
            }
            self.pending_scenes
                .insert(synctree_proto::join(&parent, &name), scene.clone());
            Ok(Op::Spawn {
                parent,
                name,
                scene,
                props: list,
                owner,
            })
        })();
        self.submit(what, op)
    }

    /// Despawns the node at `path` and its subtree, everywhere.
    #[func]
    fn despawn(&mut self, path: NodePath) -> Gd<SyncRequest> {
        let what = What::Despawn(path.clone());
        let op = rel_path(&path).and_then(|p| {
            if p.is_empty() {
                Err("the SyncedTree itself cannot be despawned".into())
            } else {
                Ok(Op::Despawn { path: p })
            }
        });
        self.submit(what, op)
    }

    /// Sets `property` of the node at `path` to `value`, everywhere, in commit order.
    #[func]
    fn set_synced(
        &mut self,
        path: NodePath,
        property: StringName,
        value: Variant,
    ) -> Gd<SyncRequest> {
        let what = What::Set(path.clone(), property.clone());
        let target = self.property_target(&path, &property, &value);
        let predicted = match &target {
            Ok((p, prop, _)) if self.predictions.is_enabled(p, prop) => self.live.key_of(p),
            _ => None,
        };
        let op = target.map(|(path, property, value)| Op::SetProperty {
            path,
            property,
            value,
        });
        let (req, ticket) = self.submit_ticket(what, op);
        if let (Some(key), Some(ticket), Some(mut node)) = (
            predicted,
            ticket,
            predicted.and_then(|k| self.live.node_of(k)),
        ) {
            let id = self.live.intern(&property.to_string());
            let target = self.live.target(id).clone();
            // The property's getter and setter are game code, which may call this tree.
            let shown = {
                let _reentrant = self.base_mut();
                target.get(&node)
            };
            self.predictions
                .predict(ticket, key, id, shown, value.clone());
            let _reentrant = self.base_mut();
            target.set(&mut node, &value);
        }
        req
    }

    /// Sets `property` of the node at `path` to `value` with EVENTUAL consistency: outside
    /// the log, so it never waits for a quorum nor delays strong writes. The writer's server
    /// stamps it with its hybrid logical clock and every server and client applies it, the
    /// writer included; where writes cross, the latest stamp wins everywhere (last writer
    /// wins), so replicas that received the same writes show the same value. Not durable
    /// and not resent: it travels as unreliable datagrams (client to server, server to
    /// server, server to client), so a replica may miss a write and show an older value
    /// until the next write of the property (between servers a property's last write is
    /// sent again reliably once it has been quiet for 200 ms); a server or client that was
    /// not connected when it was sent never sees it, and it is not in snapshots or dumps'
    /// guarantees. For high-rate cosmetic state (positions sent every frame); do not mix
    /// with `set_synced` on the same property. A game client may
    /// write only nodes it owns (others' writes are dropped by its server, with a log
    /// line). Returns false, with the reason in the log, if the call itself is invalid.
    #[func]
    fn set_eventual(&mut self, path: NodePath, property: StringName, value: Variant) -> bool {
        self.eventual_write(path, property, value, true)
    }

    /// Sets `property` of the node at `path` to `value` only if its committed value is
    /// `expected` at that point of the log (`null` matches a property never synced). The
    /// request fails, saying what it found, if another value was there: a lock-free way to
    /// update shared state (counters, ownership) from several servers.
    #[func]
    fn compare_and_set(
        &mut self,
        path: NodePath,
        property: StringName,
        expected: Variant,
        value: Variant,
    ) -> Gd<SyncRequest> {
        let what = What::CompareAndSet(path.clone(), property.clone());
        let op =
            self.property_target(&path, &property, &value)
                .and_then(|(path, property, value)| {
                    let expected = if expected.is_nil() {
                        None
                    } else {
                        Some(to_value(&expected).map_err(|e| format!("expected value: {e}"))?)
                    };
                    Ok(Op::CompareAndSet {
                        path,
                        property,
                        expected,
                        value,
                    })
                });
        self.submit(what, op)
    }

    /// Adds server `id`, reachable at `address` (its QUIC address, e.g. `10.0.0.4:7001`), to
    /// the cluster as a learner: it receives the log but does not vote yet. Start that server
    /// with `--synctree-join` (or `synctree/network/join`) and the current servers as its
    /// peers. Completes with `{index, voters, learners}` once the change is committed.
    #[func]
    fn add_learner(&mut self, id: i64, address: GString) -> Gd<SyncRequest> {
        let change = server_id(id).map(|id| MembershipChange::AddLearner {
            id,
            addr: address.to_string(),
        });
        self.submit_membership(change)
    }

    /// Makes learner `id` a voter, once it has caught up with the leader (refused, saying
    /// how far it is, if it has not within a few seconds).
    #[func]
    fn promote_to_voter(&mut self, id: i64) -> Gd<SyncRequest> {
        let change = server_id(id).map(|id| MembershipChange::Promote { id });
        self.submit_membership(change)
    }

    /// Removes server `id` (voter or learner) from the cluster, e.g. one that died for good.
    /// The last voter cannot be removed.
    #[func]
    fn remove_server(&mut self, id: i64) -> Gd<SyncRequest> {
        let change = server_id(id).map(|id| MembershipChange::Remove { id });
        self.submit_membership(change)
    }

    /// Reads the committed value of `property` of the node at `path`, linearizably (through
    /// the leader's read index). The result is null if the property was never synced.
    #[func]
    fn read_synced(&mut self, path: NodePath, property: StringName) -> Gd<SyncRequest> {
        let what = What::Read(path.clone(), property.clone());
        let req = SyncRequest::new();
        let property = property.to_string();
        let checked = rel_path(&path).and_then(|p| self.check_property(&p, &property).map(|()| p));
        match (checked, &self.backend) {
            (Err(e), _) => self.failed_now.push((req.clone(), format!("{what}: {e}"))),
            (Ok(_), None) => self
                .failed_now
                .push((req.clone(), format!("{what}: {}", not_running()))),
            (Ok(p), Some(_)) => {
                self.hold_frame();
                let ticket = self
                    .backend
                    .as_ref()
                    .map_or(0, |b| b.submit_read(p, property));
                self.requests.insert(ticket, (req.clone(), what));
            }
        }
        req
    }

    /// Internal: applies what was committed, at the start of each frame (connected to
    /// SceneTree's `process_frame` while this node is in the tree). Do not call.
    #[func]
    fn _synctree_frame(&mut self) {
        live::check_detach_watch(&mut self.base().get_tree());
        self.pump();
    }

    /// Internal: proposes the requests held back this frame (deferred by `hold_frame`).
    /// Do not call.
    #[func]
    fn _synctree_release(&mut self) {
        self.holding = false;
        if let Some(backend) = self.backend.as_ref() {
            backend.release();
        }
    }

    /// Benchmark: the main-thread cost of applying committed property events to the node at
    /// `path` (the same code path as committed effects, signals included when connected)
    /// beside plain `Object.set` calls of the same values. Runs `rounds` alternating rounds
    /// of `count` of each, so both see the same machine, and returns
    /// `{count, rounds, apply_usec, raw_set_usec}`: the fastest round of each, in
    /// microseconds. It changes this server's live tree outside the log (the property ends
    /// at `count - 1` here only, and a predicted write of it pending here would be
    /// reconciled against these values): use it on a scratch node.
    #[func]
    fn measure_apply_cost(
        &mut self,
        path: NodePath,
        property: StringName,
        count: i64,
        #[opt(default = 5)] rounds: i64,
    ) -> VarDictionary {
        let mut d = VarDictionary::new();
        let mut root = self.to_gd().upcast::<Node>();
        let Ok(rel) = rel_path(&path) else { return d };
        let Some(key) = self.live.key_of(&rel) else {
            godot_error!("measure_apply_cost: '{path}' is not a synced node");
            return d;
        };
        let Some(mut node) = self.live.node_at(&rel) else {
            godot_error!("measure_apply_cost: no live node at '{path}'");
            return d;
        };
        let count = count.max(1);
        let rounds = rounds.max(1);
        let prop = CompactString::from(property.to_string());
        let on = self.listening();
        let mut touched = Vec::new();
        let (mut best_raw, mut best_apply) = (u128::MAX, u128::MAX);
        for _ in 0..rounds {
            // A `property_applied` handler (game code) may have freed it.
            if !node.is_instance_valid() {
                godot_error!("measure_apply_cost: '{path}' was freed while measuring");
                return d;
            }
            let started = std::time::Instant::now();
            for i in 0..count {
                node.set(&property, &i.to_variant());
            }
            best_raw = best_raw.min(started.elapsed().as_micros());
            // Effects arrive ready-made from the state machine; build them before timing.
            let effects: Vec<Effect> = (0..count)
                .map(|i| Effect::PropertySet {
                    node: key,
                    property: prop.clone(),
                    value: Value::Int(i),
                })
                .collect();
            let started = std::time::Instant::now();
            for effect in effects {
                self.apply_one(&mut root, effect, &on, &mut touched);
            }
            self.notify_synchronized(&mut touched);
            best_apply = best_apply.min(started.elapsed().as_micros());
        }
        d.set("count", count);
        d.set("rounds", rounds);
        d.set("apply_usec", best_apply as i64);
        d.set("raw_set_usec", best_raw as i64);
        d
    }

    /// Benchmark: the main-thread cost of applying `count` committed spawns of `scene` (the
    /// same code path as committed effects, signals included when connected) beside a plain
    /// instantiate + name + `add_child` of as many instances, in `rounds` alternating rounds.
    /// Returns `{count, rounds, apply_usec, add_child_usec}`: the fastest round of each, in
    /// microseconds. The spawns go under the synced node `parent` (the SyncedTree itself
    /// when empty), whose MultiplayerSpawners, if any, are told of them, running their
    /// handlers (game code) in the timed part: name a parent no spawner watches to time
    /// synctree alone, as the plain `add_child` runs none. The spawned nodes are despawned
    /// again outside the log (not timed): use it on a server whose tree is not being compared.
    #[func]
    fn measure_spawn_cost(
        &mut self,
        scene: GString,
        count: i64,
        #[opt(default = 5)] rounds: i64,
        #[opt(default = "")] parent: GString,
    ) -> VarDictionary {
        let mut d = VarDictionary::new();
        let scene = scene.to_string();
        if let Err(e) = self.live.scenes.check(&scene) {
            godot_error!("measure_spawn_cost: {e}");
            return d;
        }
        let parent_key = match rel_path(&NodePath::from(&parent)) {
            Ok(p) if p.is_empty() => synctree_proto::ROOT_KEY,
            Ok(p) => match self.live.key_of(&p) {
                Some(key) => key,
                None => {
                    godot_error!("measure_spawn_cost: '{p}' is not a synced node");
                    return d;
                }
            },
            Err(e) => {
                godot_error!("measure_spawn_cost: {e}");
                return d;
            }
        };
        let mut root = self.to_gd().upcast::<Node>();
        let count = count.max(1) as u64;
        let rounds = rounds.max(1);
        let on = self.listening();
        let mut touched = Vec::new();
        // Keys far above any the state machine hands out.
        let base_key = u64::MAX / 2;
        let (mut best_plain, mut best_apply) = (u128::MAX, u128::MAX);
        for round in 0..rounds {
            let mut holder = Node::new_alloc();
            root.add_child(&holder);
            let started = std::time::Instant::now();
            for i in 0..count {
                let Some(mut node) = self.live.scenes.instantiate(&scene) else {
                    break;
                };
                node.set_name(format!("Plain{i}").as_str());
                holder.add_child(&node);
            }
            best_plain = best_plain.min(started.elapsed().as_micros());
            holder.queue_free();

            let effects: Vec<Effect> = (0..count)
                .map(|i| Effect::Spawned {
                    node: base_key + i,
                    parent: parent_key,
                    name: format!("SpawnCost{round}_{i}"),
                    scene: scene.clone(),
                    props: Vec::new(),
                    owner: synctree_proto::SERVER_PEER,
                })
                .collect();
            let started = std::time::Instant::now();
            for effect in effects {
                self.apply_one(&mut root, effect, &on, &mut touched);
            }
            best_apply = best_apply.min(started.elapsed().as_micros());
            // Despawned the same way, so whoever heard of the spawns hears of these.
            for i in 0..count {
                let despawn = Effect::Despawned { node: base_key + i };
                self.apply_one(&mut root, despawn, &on, &mut touched);
            }
        }
        d.set("count", count as i64);
        d.set("rounds", rounds);
        d.set("apply_usec", best_apply as i64);
        d.set("add_child_usec", best_plain as i64);
        d
    }

    /// True if this server is the Raft leader.
    #[func]
    fn is_leader(&self) -> bool {
        self.last_status.is_leader
    }

    /// The id of the leader this server knows of; 0 if none.
    #[func]
    fn leader_id(&self) -> i64 {
        self.last_status.leader.unwrap_or(0) as i64
    }

    /// The current Raft term.
    #[func]
    fn term(&self) -> i64 {
        self.last_status.term as i64
    }

    /// The highest log index known to be committed.
    #[func]
    fn commit_index(&self) -> i64 {
        self.last_status.commit_index as i64
    }

    /// The log index the live scene tree has applied.
    #[func]
    fn applied_index(&self) -> i64 {
        self.live_index as i64
    }

    /// Number of synced nodes in the live tree.
    #[func]
    fn node_count(&self) -> i64 {
        self.live.len() as i64
    }

    /// Canonical text of the live replicated subtree: names, order, scenes and synced
    /// property values. Replicas at the same applied index have equal dumps.
    #[func]
    fn dump(&self) -> GString {
        GString::from(self.live.dump(&self.to_gd().upcast::<Node>()).as_str())
    }

    /// `{id, leader, is_leader, term, commit, applied, raft_applied, last_log, voters, learners,
    /// nodes, running, apply_usec, relay_datagrams, relay_eventual_reliably, ...}`; `apply_usec`
    /// is the main-thread time spent applying committed changes since start, in microseconds;
    /// the `relay_` counts are the eventual writes this server sent the others: datagrams,
    /// writes that went reliably instead (no connection yet, too large), and quiet
    /// properties' last writes sent again reliably (`relay_eventual_settled`).
    #[func]
    fn status(&self) -> VarDictionary {
        let s = &self.last_status;
        let mut d = VarDictionary::new();
        d.set("id", self.node_id);
        d.set("running", self.backend.is_some());
        d.set("peer", self.peer_id());
        if let Some(c) = self.backend.as_ref().and_then(Backend::client_status) {
            d.set("mode", "client");
            d.set("server", c.server.unwrap_or(0) as i64);
            d.set("connections", c.connections as i64);
            d.set("last_error", c.last_error.unwrap_or_default().as_str());
            d.set("refused", c.refused.unwrap_or_default().as_str());
        } else {
            d.set("mode", "server");
        }
        d.set("leader", s.leader.unwrap_or(0) as i64);
        d.set("is_leader", s.is_leader);
        d.set("term", s.term as i64);
        d.set("commit", s.commit_index as i64);
        d.set("applied", self.live_index as i64);
        d.set("raft_applied", s.applied_index as i64);
        d.set("last_log", s.last_log_index as i64);
        d.set("voters", &ids(&s.voters));
        d.set("learners", &ids(&s.learners));
        d.set("nodes", self.live.len() as i64);
        d.set("apply_usec", self.apply_time.as_micros() as i64);
        d.set("predicted_pending", self.predictions.pending() as i64);
        d.set("eventual_applied", self.eventual_applied as i64);
        d.set("reconciled", self.reconciled as i64);
        d.set("relay_datagrams", s.relay_datagrams as i64);
        d.set("relay_eventual_reliably", s.relay_eventual_reliably as i64);
        d.set("relay_eventual_settled", s.relay_eventual_settled as i64);
        d
    }
}

fn ids(list: &[u64]) -> PackedInt64Array {
    let v: Vec<i64> = list.iter().map(|v| *v as i64).collect();
    PackedInt64Array::from(v.as_slice())
}

/// `{index, voters, learners}` of a membership change's result.
fn membership_dict(m: &Membership) -> VarDictionary {
    let mut d = VarDictionary::new();
    d.set("index", m.index as i64);
    d.set("voters", &ids(&m.voters));
    d.set("learners", &ids(&m.learners));
    d
}

fn server_id(id: i64) -> Result<u64, String> {
    u64::try_from(id)
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("invalid server id {id}: ids are positive"))
}

fn not_running() -> String {
    "the SyncedTree server is not running (start() failed or was not called)".into()
}

impl SyncedTree {
    /// Tells the server whether unknown tokens go to `auth_callback`.
    fn sync_auth(&self) {
        if let Some(server) = self.backend.as_ref().and_then(Backend::server) {
            server.enable_auth(self.auth_callback.is_valid());
        }
    }

    /// Answers the clients waiting for `auth_callback`.
    fn authenticate(&mut self) {
        let Some(server) = self.backend.as_ref().and_then(Backend::server) else {
            return;
        };
        let mut waiting = Vec::new();
        while let Some(req) = server.try_recv_auth() {
            waiting.push(req);
        }
        for req in waiting {
            let callback = self.auth_callback.clone();
            if !callback.is_valid() {
                req.answer(Err("invalid token".into()));
                continue;
            }
            let args = [(req.peer as i64).to_variant(), req.token.to_variant()];
            let verdict = {
                let _reentrant = self.base_mut();
                callback.call(&args)
            };
            let result = match verdict.get_type() {
                VariantType::BOOL if verdict.to::<bool>() => Ok(()),
                VariantType::STRING | VariantType::STRING_NAME => {
                    let reason = verdict.to_string();
                    Err(if reason.is_empty() {
                        "refused by the auth callback".into()
                    } else {
                        reason
                    })
                }
                _ => Err("refused by the auth callback".into()),
            };
            req.answer(result);
        }
    }

    fn exported(&self) -> Exported {
        Exported {
            node_id: self.node_id,
            listen_address: self.listen_address.to_string(),
            peers: self.peers.to_string(),
            data_dir: self.data_dir.to_string(),
            in_memory: self.in_memory,
            fsync: self.fsync,
            certs_dir: self.certs_dir.to_string(),
            dev_certs_dir: self.dev_certs_dir.to_string(),
            client_listen: self.client_listen.to_string(),
            spawnable_scenes: self
                .spawnable_scenes
                .as_slice()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            connect_to: self.connect_to.to_string(),
            token: self.token.to_string(),
            ca_file: self.ca_file.to_string(),
        }
    }

    fn start_server(&mut self, cfg: synctree_runtime::ServerConfig) -> Result<(), String> {
        let id = cfg.id;
        let server = Server::start(cfg).map_err(|e| format!("server {id} cannot start: {e}"))?;
        if let Some(addr) = server.local_addr() {
            godot_print!("synctree: server {id} listening on {addr} (QUIC)");
        }
        if let Some(addr) = server.client_addr() {
            godot_print!("synctree: server {id} serves game clients on {addr}");
        }
        self.node_id = id as i64;
        self.install(Backend::Server(server));
        Ok(())
    }

    /// The game created a server multiplayer peer: this process serves clients through it.
    /// A SyncedTree not running yet starts as a one-server cluster (in memory unless a data
    /// directory is configured).
    pub(crate) fn serve_peer(&mut self) -> Result<(), String> {
        match &self.backend {
            Some(Backend::Server(_)) => Ok(()),
            Some(Backend::Client(_)) => Err(
                "the game created a server multiplayer peer, but this SyncedTree is a game client"
                    .into(),
            ),
            None => {
                let cfg = config::resolve_one_server(&self.exported())?;
                let storage = match &cfg.storage {
                    synctree_runtime::StorageMode::InMemory => "in memory".to_owned(),
                    _ => "on disk".to_owned(),
                };
                godot_print!(
                    "synctree: the game created a server multiplayer peer: server {} starts \
                     ({} server(s) configured besides it, state {storage})",
                    cfg.id,
                    cfg.peers.len()
                );
                self.start_server(cfg)
            }
        }
    }

    /// A new client on the game's server multiplayer peer: its session with this server.
    pub(crate) fn attach_peer(&self, who: String) -> Result<synctree_runtime::FramePipe, String> {
        match &self.backend {
            Some(Backend::Server(s)) => s.attach_client(who),
            _ => Err("this SyncedTree is not a running server".into()),
        }
    }

    /// The game connected a client multiplayer peer: this SyncedTree becomes a game client
    /// whose session travels through it. Its token is the configured one, else a fresh
    /// anonymous one (admitted by servers that list no tokens).
    pub(crate) fn connect_over_peer(&mut self) -> Result<synctree_runtime::FramePipe, String> {
        match &self.backend {
            Some(Backend::Server(_)) => {
                return Err(
                    "the game connected a client multiplayer peer, but this process \
                            runs a synctree server"
                        .into(),
                )
            }
            Some(Backend::Client(c)) => {
                let status = c.status();
                if status.ended.is_none() && status.refused.is_none() {
                    return Err("the game connected a client multiplayer peer, but this \
                                SyncedTree already connects to servers (--synctree-connect, \
                                or an earlier peer still connected)"
                        .into());
                }
                // The last connection through a peer is over: this one starts afresh.
                self.stop();
            }
            None => {}
        }
        let token = config::client_token(&self.exported())
            .unwrap_or_else(synctree_runtime::anonymous_token);
        let (client, pipe) = GameClient::over_pipe(token)
            .map_err(|e| format!("the game client cannot start: {e}"))?;
        godot_print!("synctree: game client connecting through the game's multiplayer peer");
        self.install(Backend::Client(client));
        Ok(pipe)
    }

    /// Takes `backend` as this SyncedTree's, and offers its peer link to the multiplayer API.
    fn install(&mut self, backend: Backend) {
        let link = backend.peer_link();
        crate::multiplayer::install_link(Some((link.clone(), self.to_gd())));
        self.link = Some(link);
        // Eventual stamps are a server's HLC stamps on a server and a client's own order on
        // a client: a new backend starts its comparisons over.
        self.eventual.clear();
        if let Some(server) = backend.server() {
            if self.base().is_inside_tree() {
                server.set_tree_path(&self.base().get_path().to_string());
            }
        }
        self.backend = Some(backend);
        self.sync_auth();
    }

    /// Applies eventual writes that arrived, last writer (by HLC stamp) winning.
    fn apply_eventual(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        let mut touched: Vec<InstanceId> = Vec::new();
        for _ in 0..self.max_effects_per_frame.max(1) {
            let Some(set) = link.try_recv_eventual() else {
                break;
            };
            let (Some(key), Some(stamp)) = (self.live.key_of(&set.path), set.stamp) else {
                continue; // not (or no longer) a synced node here
            };
            // Only properties the node has: a name is interned for good, so made-up ones
            // (a client streaming new names) are not kept.
            let by_scene = !set.property.contains(':')
                && self
                    .live
                    .scene_of(&set.path)
                    .map(str::to_owned)
                    .is_some_and(|scene| self.live.scenes.has_property(&scene, &set.property));
            let known = by_scene
                || self
                    .live
                    .node_of(key)
                    .is_some_and(|n| live::Target::of(&set.property).exists_on(&n));
            if !known {
                continue;
            }
            let id = self.live.intern(&set.property);
            let newer = self.eventual.get(&(key, id)).is_none_or(|s| *s < stamp);
            if !newer {
                continue;
            }
            self.eventual.insert((key, id), stamp);
            if let Some(mut node) = self.live.node_of(key) {
                self.live.target(id).set(&mut node, &from_value(&set.value));
                self.eventual_applied += 1;
                let root = node.instance_id();
                if crate::multiplayer::has_synchronizers() && !touched.contains(&root) {
                    touched.push(root);
                }
            }
        }
        if !touched.is_empty() {
            let me = self.peer_id() as i32;
            let _reentrant = self.base_mut();
            crate::multiplayer::notify_synchronized(&touched, me);
        }
    }

    /// The synced path of `node` (a descendant of this SyncedTree), if it is one.
    fn synced_path_of(&self, node: &Gd<Node>) -> Option<String> {
        let rel = self.base().get_path_to(node).to_string();
        (!rel.starts_with("..") && !rel.is_empty() && rel != ".").then_some(rel)
    }

    /// (Multiplayer API, servers) The synced nodes `roots` game client `peer` may not see
    /// (MultiplayerSynchronizer visibility): its feed leaves them out while it is connected
    /// here. Nodes not synced are ignored.
    pub(crate) fn set_client_view(&self, peer: u64, roots: &[Gd<Node>]) {
        let Some(server) = self.backend.as_ref().and_then(Backend::server) else {
            return;
        };
        let keys = roots
            .iter()
            .filter_map(|n| self.synced_path_of(n))
            .filter_map(|p| self.live.key_of(&p))
            .collect();
        // Where the SyncedTree is now (rpcs of hidden nodes are told apart by it).
        server.set_tree_path(&self.base().get_path().to_string());
        server.set_client_view(peer, keys);
    }

    /// True if `node` is a synced node synctree placed (a committed spawn).
    pub(crate) fn is_synced_node(&self, node: &Gd<Node>) -> bool {
        self.synced_path_of(node)
            .is_some_and(|p| self.live.instance_at(&p) == Some(node.instance_id()))
    }

    /// True if this server leads (a server-side synchronizer replicates from the leader's
    /// game state only).
    pub(crate) fn leads(&self) -> bool {
        self.last_status.is_leader
    }

    /// (Multiplayer API) A MultiplayerSpawner's authority added `node` under its spawn path:
    /// spawn it everywhere. Here the committed spawn adopts the node itself.
    pub(crate) fn replicate_spawn(
        &mut self,
        node: Gd<Node>,
        props: Vec<(String, Value)>,
        custom_scene: Option<String>,
    ) {
        let Some(path) = self.synced_path_of(&node) else {
            godot_warn!("synctree: MultiplayerSpawner spawned '{}' outside the SyncedTree: not replicated (its spawn_path must be the SyncedTree or below it)", node.get_path());
            return;
        };
        if self.live.key_of(&path).is_some() {
            return; // placed by synctree itself (a committed spawn)
        }
        let name = node.get_name().to_string();
        if name.contains('@') {
            // Godot renamed it: a node of its name is already synced here.
            godot_warn!(
                "synctree: '{path}' duplicates a synced node's name; freed, not replicated"
            );
            let mut node = node;
            node.queue_free();
            return;
        }
        let (parent, _) = synctree_proto::split_parent(&path).unwrap_or(("", ""));
        let scene = custom_scene.unwrap_or_else(|| node.get_scene_file_path().to_string());
        let authority = node.get_multiplayer_authority();
        let owner = if authority <= 1 {
            synctree_proto::SERVER_PEER
        } else {
            authority as u64
        };
        self.live.expect_adoption(&path, node);
        let what = What::Spawn(
            NodePath::from(parent),
            StringName::from(name.as_str()),
            GString::from(scene.as_str()),
        );
        let op = Op::Spawn {
            parent: parent.to_owned(),
            name,
            scene,
            props,
            owner,
        };
        if let (_, Some(ticket)) = self.submit_ticket(what, Ok(op)) {
            self.logged.insert(ticket);
        }
    }

    /// (Multiplayer API) A node a MultiplayerSpawner tracked left the tree (`path` as it was):
    /// despawn it everywhere if the game freed it (not if synctree did).
    pub(crate) fn replicate_despawn(&mut self, path: &str, instance: InstanceId) {
        if self.live.instance_at(path) != Some(instance) {
            return;
        }
        let what = What::Despawn(NodePath::from(path));
        if let (_, Some(ticket)) = self.submit_ticket(
            what,
            Ok(Op::Despawn {
                path: path.to_owned(),
            }),
        ) {
            self.logged.insert(ticket);
        }
    }

    /// (Multiplayer API) A MultiplayerSynchronizer's authority has a new value of `property`
    /// of `node`: set it everywhere (a game client predicts it meanwhile).
    pub(crate) fn replicate_property(&mut self, node: &Gd<Node>, property: &str, value: &Variant) {
        let Some(path) = self.synced_path_of(node) else {
            return;
        };
        if self.live.key_of(&path).is_none() {
            return;
        }
        if self.is_client() && !self.predictions.is_enabled(&path, property) {
            self.predictions.enable(&path, property, true);
        }
        // Nobody awaits it: the next change of the property is sent all the same.
        let _ = self.set_synced(
            NodePath::from(path.as_str()),
            StringName::from(property),
            value.clone(),
        );
    }

    /// [`set_eventual`](Self::set_eventual); `show_here` sets the node here at once too.
    fn eventual_write(
        &mut self,
        path: NodePath,
        property: StringName,
        value: Variant,
        show_here: bool,
    ) -> bool {
        let checked = rel_path(&path).and_then(|p| {
            let key = self
                .live
                .key_of(&p)
                .ok_or_else(|| format!("no synced node at '{p}'"))?;
            // The link knows this peer's id without copying the client's status.
            let me = self.link.as_ref().map_or(0, |l| l.unique_id());
            if self.is_client() && self.live.owner_of(key) != Some(me) {
                return Err(format!("this client (peer {me}) does not own '{p}'"));
            }
            validate_property(&property.to_string()).map_err(|e| e.to_string())?;
            let v = to_value(&value).map_err(|e| format!("property '{property}': {e}"))?;
            Ok((p, key, v))
        });
        let (p, key, v) = match (checked, &self.link) {
            (Ok(c), Some(_)) => c,
            (Ok(_), None) => {
                godot_error!("set_eventual({path}, {property}): {}", not_running());
                return false;
            }
            (Err(e), _) => {
                godot_error!("set_eventual({path}, {property}): {e}");
                return false;
            }
        };
        // The writer sees its own write at once; the stamped copy comes back to order it.
        if let (true, Some(mut node)) = (show_here, self.live.node_of(key)) {
            let id = self.live.intern(&property.to_string());
            self.live.target(id).clone().set(&mut node, &value);
        }
        if let Some(link) = &self.link {
            link.send_eventual(p, property.to_string(), v);
        }
        true
    }

    /// (Multiplayer API) A synchronizer's authority changed an `always` property of `node`:
    /// an eventual write.
    pub(crate) fn replicate_eventual(&mut self, node: &Gd<Node>, property: &str, value: &Variant) {
        let Some(path) = self.synced_path_of(node) else {
            return;
        };
        if self.live.key_of(&path).is_none() {
            return;
        }
        // The node shows the value already: sent only (setting it again would run the
        // game's setter from inside the multiplayer API's poll).
        self.eventual_write(
            NodePath::from(path.as_str()),
            StringName::from(property),
            value.clone(),
            false,
        );
    }

    fn submit_membership(&mut self, change: Result<MembershipChange, String>) -> Gd<SyncRequest> {
        let req = SyncRequest::new();
        match (change, self.backend.as_ref().map(Backend::server)) {
            (Err(e), _) => self
                .failed_now
                .push((req.clone(), format!("membership change: {e}"))),
            (Ok(_), None) => self
                .failed_now
                .push((req.clone(), format!("membership change: {}", not_running()))),
            (Ok(_), Some(None)) => self.failed_now.push((
                req.clone(),
                "membership change: a game client cannot change the cluster's membership".into(),
            )),
            (Ok(change), Some(Some(server))) => {
                let ticket = server.submit_membership(change.clone());
                self.requests
                    .insert(ticket, (req.clone(), What::Membership(change)));
            }
        }
        req
    }

    fn submit(&mut self, what: What, op: Result<Op, String>) -> Gd<SyncRequest> {
        self.submit_ticket(what, op).0
    }

    /// Submits `op`; the ticket is `None` if it failed at once.
    fn submit_ticket(
        &mut self,
        what: What,
        op: Result<Op, String>,
    ) -> (Gd<SyncRequest>, Option<u64>) {
        let req = SyncRequest::new();
        let ticket = match (op, &self.backend) {
            (Err(e), _) => {
                self.failed_now.push((req.clone(), format!("{what}: {e}")));
                None
            }
            (Ok(_), None) => {
                self.failed_now
                    .push((req.clone(), format!("{what}: {}", not_running())));
                None
            }
            (Ok(op), Some(_)) => {
                self.hold_frame();
                let ticket = self.backend.as_ref().map_or(0, |b| b.submit(op));
                self.requests.insert(ticket, (req.clone(), what));
                Some(ticket)
            }
        };
        (req, ticket)
    }

    /// Requests made are held back until the deferred calls of this frame run (right after
    /// the scripts that run now), then go together: a server proposes them in one log
    /// entry, a client sends them in one write (its server then proposes them together). A
    /// game's loop of `spawn` calls commits in one consensus round, not a round for the
    /// first call and another for the rest.
    fn hold_frame(&mut self) {
        if self.holding {
            return;
        }
        if let Some(backend) = self.backend.as_ref() {
            backend.hold();
            self.holding = true;
            self.base_mut().call_deferred("_synctree_release", &[]);
        }
    }

    /// Checks a property write on the main thread: the path, the property name, the value's
    /// type, and (when the node is known here) that the node has the property.
    fn property_target(
        &mut self,
        path: &NodePath,
        property: &StringName,
        value: &Variant,
    ) -> Result<(String, String, Value), String> {
        let path = rel_path(path)?;
        if path.is_empty() {
            return Err(
                "properties of the SyncedTree itself are not synced; target a node below it".into(),
            );
        }
        let property = property.to_string();
        validate_property(&property).map_err(|e| e.to_string())?;
        let value = to_value(value).map_err(|e| format!("property '{property}': {e}"))?;
        self.check_property(&path, &property)?;
        Ok((path, property, value))
    }

    fn check_property(&mut self, path: &str, property: &str) -> Result<(), String> {
        if property.contains(':') {
            // A property path (`Sprite:modulate`): checked on the live node, if there is one.
            let target = live::Target::of(property);
            return match self.live.node_at(path) {
                Some(n) if !target.exists_on(&n) => Err(format!(
                    "node '{path}' has no property path '{property}' (no such child, or it has no such property)"
                )),
                _ => Ok(()),
            };
        }
        if let Some(scene) = self.live.scene_of(path).map(str::to_owned) {
            if self.live.scenes.has_property(&scene, property)
                || self
                    .live
                    .node_at(path)
                    .is_some_and(|n| live::property_names(&n).contains(property))
            {
                return Ok(());
            }
            return Err(format!(
                "node '{path}' ({scene}) has no property '{property}'"
            ));
        }
        if let Some(scene) = self.pending_scenes.get(path).cloned() {
            if !self.live.scenes.has_property(&scene, property) {
                return Err(format!(
                    "node '{path}' ({scene}) has no property '{property}'"
                ));
            }
        }
        // Unknown here: the state machine decides (and refuses an unknown path).
        Ok(())
    }

    fn frame_callable(&self) -> Callable {
        Callable::from_object_method(&self.to_gd(), "_synctree_frame")
    }

    /// Runs each frame: status, completions, then committed effects within the frame budget.
    fn pump(&mut self) {
        let Some(server) = self.backend.as_ref() else {
            self.flush_failed();
            return;
        };
        let status = server.status();
        let mut completions = std::mem::take(&mut self.completions);
        server.poll_completions(&mut completions);
        let leader_changed = status.leader != self.last_status.leader;
        let status_changed = leader_changed
            || status.term != self.last_status.term
            || status.voters != self.last_status.voters
            || status.learners != self.last_status.learners;
        self.last_status = status;
        if leader_changed {
            let leader = self.last_status.leader.unwrap_or(0) as i64;
            self.emit(|t| t.signals().leader_changed().emit(leader));
        }
        if status_changed {
            let s = self.status();
            self.emit(|t| t.signals().status_changed().emit(&s));
        }

        // Requests that finish this frame without waiting for the live tree.
        let mut finished = Vec::new();
        for c in completions.drain(..) {
            let Some((req, what)) = self.requests.remove(&c.ticket) else {
                continue;
            };
            match c.result {
                Err(e) => {
                    if self.logged.remove(&c.ticket) {
                        godot_warn!("synctree: {what}: {e}");
                    }
                    if let Some(s) = self.predictions.settle(c.ticket) {
                        self.show_settled(s, &e.message);
                    }
                    finished.push((
                        req,
                        Err(Failure {
                            message: format!("{what}: {e}"),
                            maybe_applied: e.uncertain,
                        }),
                    ))
                }
                Ok(Done::Write { index, .. }) => {
                    self.logged.remove(&c.ticket);
                    self.waiting
                        .entry(index)
                        .or_default()
                        .push((req, Variant::nil(), c.ticket))
                }
                Ok(Done::Read { index, value }) => {
                    let v = value.as_ref().map(from_value).unwrap_or_default();
                    self.waiting
                        .entry(index)
                        .or_default()
                        .push((req, v, c.ticket));
                }
                // Nothing for the live tree to apply: done now.
                Ok(Done::Membership(m)) => {
                    finished.push((req, Ok(membership_dict(&m).to_variant())))
                }
            }
        }
        self.completions = completions;
        self.finish_all(finished);

        self.authenticate();
        let t = std::time::Instant::now();
        self.apply_effects();
        self.apply_eventual();
        self.apply_time += t.elapsed();
        self.flush_waiting();
        self.flush_failed();
    }

    fn apply_effects(&mut self) {
        let mut budget = self.max_effects_per_frame.max(1) as usize;
        let mut root = self.to_gd().upcast::<Node>();
        let on = self.listening();
        let mut touched: Vec<NodeKey> = Vec::new();
        while budget > 0 {
            if self.current.is_none() {
                let next = self.backend.as_ref().and_then(|s| s.try_recv_applied());
                match next {
                    None => break,
                    Some(Applied::Effects { index, effects }) => {
                        self.current = Some((index, effects.into()))
                    }
                    Some(Applied::Reset { index, tree }) => {
                        // Nodes that stay keep their identity; those that went are freed.
                        let live::Reconciled {
                            effects,
                            removed,
                            order,
                        } = self.live.reconcile(&tree);
                        self.reorder = order.map(|o| (index, o));
                        for r in removed {
                            if let live::Applied::Despawned { path, .. } = r {
                                if on.despawn {
                                    self.signals().node_despawned().emit(&path.get());
                                }
                            }
                        }
                        self.current = Some((index, effects.into()));
                    }
                }
            }
            let Some(index) = self.current.as_ref().map(|(i, _)| *i) else {
                break;
            };
            while budget > 0 {
                let Some(effect) = self.current.as_mut().and_then(|(_, e)| e.pop_front()) else {
                    break;
                };
                budget -= 1;
                self.apply_one(&mut root, effect, &on, &mut touched);
            }
            if self.current.as_ref().is_some_and(|(_, e)| e.is_empty()) {
                self.live_index = index;
                self.current = None;
                if let Some((_, order)) = self.reorder.take_if(|(i, _)| *i == index) {
                    self.live.restore_order(&order);
                }
            }
        }
        self.notify_synchronized(&mut touched);
    }

    /// What applying an effect must tell, read once per frame.
    fn listening(&self) -> Listening {
        let connected = |signal: &str| !self.base().get_signal_connection_list(signal).is_empty();
        Listening {
            property: connected("property_applied"),
            spawn: connected("node_spawned"),
            despawn: connected("node_despawned"),
            synchronizers: crate::multiplayer::has_synchronizers(),
        }
    }

    /// Applies one committed effect to the live tree, with what follows from it: signals,
    /// spawners told, predictions reconciled. A written node goes into `touched` (its
    /// synchronizers are told once per frame, see [`SyncedTree::notify_synchronized`]).
    #[inline(always)]
    fn apply_one(
        &mut self,
        root: &mut Gd<Node>,
        effect: Effect,
        on: &Listening,
        touched: &mut Vec<NodeKey>,
    ) {
        // Property events are most of them: applied in place, the effect not moved.
        if let Effect::PropertySet {
            node,
            property,
            value,
        } = &effect
        {
            let plain = !property.is_heap_allocated() && value.owns_no_heap();
            if let live::Applied::Set {
                node,
                property,
                value,
            } = self.live.set_property(*node, property, value)
            {
                self.after_set(node, property, value, on, touched);
            }
            if plain {
                // Nothing to free: skip the effect's out-of-line drop glue.
                std::mem::forget(effect);
            }
            return;
        }
        self.apply_structural(root, effect, on, touched);
    }

    /// [`SyncedTree::apply_one`] for a spawn or a despawn.
    #[inline(never)]
    fn apply_structural(
        &mut self,
        root: &mut Gd<Node>,
        effect: Effect,
        on: &Listening,
        touched: &mut Vec<NodeKey>,
    ) {
        // A spawner's spawn_function is game code that may call this SyncedTree.
        let made = self
            .live
            .custom_spawn(root, &effect)
            .map(|(spawner, data)| {
                let _reentrant = self.base_mut();
                crate::multiplayer::custom_instance(&spawner, &data)
            });
        match self.live.apply_made(root, effect, made) {
            live::Applied::Spawned { key, node, adopted } => {
                crate::multiplayer::note_fresh(node.instance_id_unchecked());
                if !self.pending_scenes.is_empty() {
                    if let Some(p) = self.live.path_of(key) {
                        self.pending_scenes.remove(p);
                    }
                }
                // Its `_ready` (game code) may have freed it.
                if on.spawn && node.is_instance_valid() {
                    if let Some(path) = self.live.node_path(key) {
                        self.signals().node_spawned().emit(&path, &node);
                    }
                }
                if !adopted && crate::multiplayer::has_spawners() {
                    let _reentrant = self.base_mut();
                    crate::multiplayer::notify_spawner(SpawnerSignal::Spawned, &node);
                }
            }
            live::Applied::Despawned { path, removed } => {
                if on.despawn {
                    self.signals().node_despawned().emit(&path.get());
                }
                if let Some((node, parent)) = removed.filter(|_| crate::multiplayer::has_spawners())
                {
                    let _reentrant = self.base_mut();
                    crate::multiplayer::notify_spawner_of(&parent, SpawnerSignal::Despawned, &node);
                }
            }
            live::Applied::Set {
                node,
                property,
                value,
            } => self.after_set(node, property, value, on, touched),
            live::Applied::Nothing => {}
        }
    }

    /// What follows a committed property applied: a prediction reconciled, the signal, the
    /// node's synchronizers told (at the end of the frame).
    #[inline(always)]
    fn after_set(
        &mut self,
        node: NodeKey,
        property: live::PropId,
        value: Variant,
        on: &Listening,
        touched: &mut Vec<NodeKey>,
    ) {
        if let Some(show) = self.predictions.committed(node, property, &value) {
            if show != value {
                if let Some(mut n) = self.live.node_of(node) {
                    self.live.target(property).set(&mut n, &show);
                }
            }
        }
        if on.property {
            self.emit_property_applied(node, property, &value);
        }
        if on.synchronizers {
            touched.push(node);
        }
    }

    /// Emits `synchronized` on the synchronizers of the nodes written this frame.
    fn notify_synchronized(&mut self, touched: &mut Vec<NodeKey>) {
        if touched.is_empty() {
            return;
        }
        touched.sort_unstable();
        touched.dedup();
        let roots: Vec<InstanceId> = touched
            .drain(..)
            .filter_map(|key| self.live.node_of(key))
            .map(|n| n.instance_id())
            .collect();
        if !roots.is_empty() {
            let me = self.peer_id() as i32;
            let _reentrant = self.base_mut();
            crate::multiplayer::notify_synchronized(&roots, me);
        }
    }

    fn flush_waiting(&mut self) {
        let still = self.waiting.split_off(&(self.live_index + 1));
        let ready = std::mem::replace(&mut self.waiting, still);
        let mut done = Vec::new();
        for (req, value, ticket) in ready.into_values().flatten() {
            if let Some(s) = self.predictions.settle_committed(ticket) {
                self.show_settled(s, "another write to it was committed after this one");
            }
            done.push((req, Ok(value)));
        }
        self.finish_all(done);
    }

    /// Shows what a settled prediction leaves, and reports a rollback.
    fn show_settled(&mut self, s: Settled<Variant>, reason: &str) {
        let Some(mut node) = self.live.node_of(s.node) else {
            return;
        };
        let name = self.live.prop_name(s.property).clone();
        let target = self.live.target(s.property).clone();
        {
            // The setter is game code, which may call this tree.
            let _reentrant = self.base_mut();
            target.set(&mut node, &s.show);
        }
        if s.rolled_back {
            self.reconciled += 1;
            if let Some(path) = self.live.node_path(s.node) {
                let reason = GString::from(reason);
                self.emit(|t| {
                    t.signals().prediction_reconciled().emit(
                        &path,
                        &name,
                        &s.predicted,
                        &s.show,
                        &reason,
                    )
                });
            }
        }
    }

    fn flush_failed(&mut self) {
        let failed = std::mem::take(&mut self.failed_now)
            .into_iter()
            .map(|(req, e)| (req, Err(Failure::refused(e))))
            .collect();
        self.finish_all(failed);
    }

    fn emit_property_applied(&mut self, node: NodeKey, property: live::PropId, value: &Variant) {
        let Some(path) = self.live.node_path(node) else {
            return;
        };
        let name = self.live.prop_name(property).clone();
        self.emit(|t| t.signals().property_applied().emit(&path, &name, value));
    }

    /// Emits a signal of this node while allowing handlers to call back into it (GDScript
    /// connected to a signal, or resumed by `await`, may call `set_synced` right away).
    fn emit(&mut self, f: impl FnOnce(&mut Gd<SyncedTree>)) {
        let mut this = self.to_gd();
        let _reentrant = self.base_mut();
        f(&mut this);
    }

    /// Completes requests, allowing the resumed GDScript to call back into this node.
    fn finish_all(&mut self, list: Vec<(Gd<SyncRequest>, Result<Variant, Failure>)>) {
        if list.is_empty() {
            return;
        }
        let _reentrant = self.base_mut();
        for (mut req, outcome) in list {
            SyncRequest::finish(&mut req, outcome);
        }
    }
}
