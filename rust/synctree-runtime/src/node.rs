//! A server's Raft node and everything around it, running on the caller's tokio runtime:
//! a [`Server`](crate::Server) gives it a runtime of its own; a simulation runs several on
//! one.

use crate::config::{ServerConfig, StorageMode, TlsSource, TransportMode};
use crate::elector::{self, LeaderContact};
use crate::handler::RpcHandler;
use crate::membership::MembershipChange;
use crate::network::NetworkFactory;
use crate::proposer::{self, Completion, Submission};
use crate::server::StartError;
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use synctree_net::{certs, QuicConfig, QuicTransport, TlsMaterial, Transport};
use synctree_proto::{Clock, Op};
use synctree_raft::{Applied, LogStore, NodeId, Raft, SharedState, StateMachine, Storage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The parts of a server that tokio tasks share.
pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<RwLock<SharedState>>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) request_timeout: Duration,
    pub(crate) pipeline: usize,
    /// Stamps this server's events (when they are proposed).
    pub(crate) clock: Arc<Clock>,
    /// When a leader was last heard from (the election timer, see `elector`).
    pub(crate) contact: LeaderContact,
    /// How long a follower stays loyal to a leader it heard from (the longest election
    /// timeout, as openraft's leader lease).
    pub(crate) lease: Duration,
    /// Why Raft stopped, if a call found it stopped on its own (a panic in its task does not
    /// reach the metrics).
    fatal: Mutex<Option<String>>,
    /// Servers whose address came with the configuration.
    configured_peers: Vec<NodeId>,
    committed: Arc<AtomicU64>,
    quic: Option<QuicTransport>,
    /// The client port, when this server serves game clients on QUIC.
    clients: Option<crate::clients::ClientListener>,
    /// When peers last answered this server's Raft RPCs.
    pub(crate) answers: Arc<crate::quorum::PeerAnswers>,
    /// Why this server is out of touch with a quorum, while it is (see `quorum`).
    pub(crate) cut_off: tokio::sync::watch::Sender<Option<String>>,
    /// What serving game clients needs, when this server serves them (on its QUIC port or
    /// through the game's transport).
    client_ctx: Option<Arc<crate::clients::Ctx>>,
    /// Game peers across the cluster, and rpcs between them.
    pub(crate) peers: Arc<crate::peers::Peers>,
    /// Clients whose token is not on the list, for the game's auth callback.
    pub(crate) auth: Arc<crate::clients::Auth>,
}

/// A point-in-time view of a server, for status getters and operators.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub is_leader: bool,
    pub term: u64,
    /// The vote this server holds: the leader id `(term, node id)` it follows or stands as
    /// (openraft orders leaders by both).
    pub vote: (u64, NodeId),
    pub last_log_index: u64,
    pub commit_index: u64,
    /// Applied to the state machine (the live tree may trail it by a frame).
    pub applied_index: u64,
    pub voters: Vec<NodeId>,
    /// Members that receive the log but do not vote (servers joining).
    pub learners: Vec<NodeId>,
    /// Why Raft stopped, if it stopped on a fatal error (storage failure, panic).
    pub fatal: Option<String>,
    /// Datagrams of eventual writes sent to the other servers since start.
    pub relay_datagrams: u64,
    /// Eventual writes relayed to another server reliably instead of by datagram (no
    /// connection open yet, too large for a datagram), since start.
    pub relay_eventual_reliably: u64,
    /// Quiet properties' last writes sent again, reliably, to another server (see
    /// `peers::SETTLE`), since start.
    pub relay_eventual_settled: u64,
}

/// One synctree Raft node with its transport, proposer and state machine, on the tokio
/// runtime it was started on.
pub struct Node {
    inner: Arc<Inner>,
    submit_tx: mpsc::UnboundedSender<Submission>,
    /// Submissions held back by [`Node::hold`], if holding.
    held: crate::held::Held<Submission>,
    completions: Mutex<std::sync::mpsc::Receiver<Completion>>,
    applied: Mutex<mpsc::Receiver<Applied>>,
    next_ticket: AtomicU64,
    local_addr: Option<std::net::SocketAddr>,
    proposer: JoinHandle<()>,
    peer_watch: JoinHandle<()>,
    elector: JoinHandle<()>,
    presence: JoinHandle<()>,
    quorum_watch: JoinHandle<()>,
    rpc_inbox: Mutex<Option<std::sync::mpsc::Receiver<synctree_proto::PeerRpc>>>,
    eventual_inbox: Mutex<Option<std::sync::mpsc::Receiver<synctree_proto::EventualSet>>>,
    /// The runtime it was started on (for work started from other threads).
    runtime: tokio::runtime::Handle,
}

impl Inner {
    /// Remembers that Raft stopped on its own (not by `stop`), for status and operators.
    pub(crate) fn record_fatal(&self, e: &openraft::error::Fatal<NodeId>) {
        if matches!(e, openraft::error::Fatal::Stopped) {
            tracing::debug!("node {}: raft stopped", self.id);
            return;
        }
        tracing::error!("node {}: raft stopped on a fatal error: {e}", self.id);
        let mut f = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert_with(|| e.to_string());
    }

    pub(crate) fn status(&self) -> Status {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let membership = m.membership_config.membership();
        Status {
            id: self.id,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            term: m.current_term,
            vote: (m.vote.leader_id.term, m.vote.leader_id.node_id),
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: self.committed.load(Ordering::Relaxed).max(applied),
            applied_index: applied,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            fatal: m
                .running_state
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .or_else(|| self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            relay_datagrams: self.peers.relay_counts.datagrams.load(Ordering::Relaxed),
            relay_eventual_reliably: self.peers.relay_counts.reliably.load(Ordering::Relaxed),
            relay_eventual_settled: self.peers.relay_counts.settled.load(Ordering::Relaxed),
        }
    }
}

/// How often connections to every member are checked and reopened if closed.
const KEEP_WARM: Duration = Duration::from_secs(1);

/// Keeps the transport in step with the membership: servers added at runtime are reachable
/// at the address they were added with, and a connection to every member stays open (so a
/// follower that stands for election, or forwards a write to a new leader, pays no
/// handshake when a leader dies).
async fn maintain_peers(inner: Arc<Inner>) {
    let mut metrics = inner.raft.server_metrics();
    let mut seen = None;
    let mut members: Vec<NodeId> = Vec::new();
    let mut warm = tokio::time::interval(KEEP_WARM);
    warm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            let m = metrics.borrow_and_update();
            let id = *m.membership_config.log_id();
            if seen != Some(id) {
                seen = Some(id);
                members.clear();
                for (peer, node) in m.membership_config.nodes() {
                    if *peer == inner.id {
                        continue;
                    }
                    members.push(*peer);
                    // Configured peers win (this server's own view of how to reach them);
                    // others are reached at the address they were added with.
                    if inner.configured_peers.contains(peer) {
                        continue;
                    }
                    match node.addr.parse::<std::net::SocketAddr>() {
                        Ok(addr) if !addr.ip().is_unspecified() => {
                            inner.transport.set_peer(*peer, addr)
                        }
                        _ => {}
                    }
                }
                warm.reset_immediately();
            }
        }
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = warm.tick() => {
                for peer in &members {
                    // A peer that is down just fails; the next tick tries again.
                    tokio::spawn(inner.transport.warm_up(*peer));
                }
            }
        }
    }
}

fn raft_config(cfg: &ServerConfig) -> Result<Arc<Config>, StartError> {
    let t = &cfg.tuning;
    let config = Config {
        cluster_name: "synctree".into(),
        heartbeat_interval: t.heartbeat.as_millis() as u64,
        election_timeout_min: t.election_min.as_millis() as u64,
        election_timeout_max: t.election_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
        max_in_snapshot_log_to_keep: t.keep_logs_after_snapshot,
        // openraft gives each AppendEntries one heartbeat interval; keep payloads small
        // enough for a catching-up follower (fsync included) to answer within it.
        max_payload_entries: 32,
        // Followers stand for election by synctree's own timer (see `elector`).
        enable_elect: false,
        // A snapshot travels in chunks, each within `install_snapshot_timeout`, and a chunk
        // that times out starts the transfer over: openraft's 3 MiB in 200 ms cannot carry
        // a big tree over a slower link, nor cover the follower's decode and fsync of the
        // last chunk, so a follower behind the purged log would never catch up.
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: (t.election_max * 10)
            .max(std::time::Duration::from_secs(3))
            .as_millis() as u64,
        ..Default::default()
    };
    Ok(Arc::new(
        config
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?,
    ))
}

impl Node {
    /// Starts a node on the current tokio runtime: opens its storage, binds its transport,
    /// joins (or founds) its Raft group with the configured voters. Returns once the node
    /// runs; a leader may come later.
    pub async fn start(cfg: ServerConfig) -> Result<Node, StartError> {
        if cfg.peers.iter().any(|(p, _)| *p == cfg.id) {
            return Err(StartError::SelfInPeers(cfg.id));
        }
        let (submit_tx, done_rx, submitter, (submit_rx, done_tx)) = proposer::queue();
        let (godot_rpcs, rpc_inbox) = std::sync::mpsc::channel();
        let (godot_eventual, eventual_inbox) = std::sync::mpsc::channel();
        let (inner, applied_rx, local_addr) =
            start_node(&cfg, submitter, (godot_rpcs, godot_eventual)).await?;
        let proposer = tokio::spawn(proposer::run(inner.clone(), submit_rx, done_tx));
        let presence = tokio::spawn(crate::peers::run_presence(inner.peers.clone()));
        let peer_watch = tokio::spawn(maintain_peers(inner.clone()));
        let elector = tokio::spawn(elector::run(
            inner.clone(),
            cfg.tuning.election_min,
            cfg.tuning.election_max,
        ));
        let quorum_watch = tokio::spawn(crate::quorum::watch(
            inner.clone(),
            crate::quorum::cut_off_after(cfg.tuning.election_max),
        ));
        Ok(Node {
            inner,
            submit_tx,
            held: Default::default(),
            completions: Mutex::new(done_rx),
            applied: Mutex::new(applied_rx),
            next_ticket: AtomicU64::new(1),
            local_addr,
            proposer,
            peer_watch,
            elector,
            presence,
            quorum_watch,
            rpc_inbox: Mutex::new(Some(rpc_inbox)),
            eventual_inbox: Mutex::new(Some(eventual_inbox)),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The QUIC address actually bound (useful with port 0), if QUIC is used.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.local_addr
    }

    /// Queues a write; returns the ticket its [`Completion`] will carry. The write is
    /// stamped when it is proposed (the completion says with what).
    pub fn submit(&self, op: Op) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.send(Submission::Write {
            ticket,
            op,
            peer: synctree_proto::SERVER_PEER,
        });
        ticket
    }

    /// Queues a linearizable read of a synced property.
    pub fn submit_read(&self, path: String, property: String) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.send(Submission::Read {
            ticket,
            path,
            property,
        });
        ticket
    }

    fn send(&self, submission: Submission) {
        let Some(submission) = self.held.keep(submission) else {
            return;
        };
        // The receiver lives as long as the node; after a stop the ticket never completes.
        let _ = self.submit_tx.send(submission);
    }

    /// Holds back what is submitted from now until [`Node::release`], to propose it in one
    /// batch. The proposer takes what is queued when it looks, so requests made one by one
    /// (a game's loop of `spawn` calls) would otherwise go as one small batch and, a
    /// consensus round later, the rest. The SyncedTree holds a frame's requests.
    pub fn hold(&self) {
        self.held.hold();
    }

    /// Hands what was held to the proposer, in order, to go in one batch (in batches of at
    /// most the largest batch).
    pub fn release(&self) {
        let mut held = self.held.take();
        while !held.is_empty() {
            let rest = held.split_off(held.len().min(crate::proposer::MAX_BATCH_EVENTS));
            let _ = self.submit_tx.send(Submission::Many(held));
            held = rest;
        }
    }

    /// Moves finished requests into `out` without blocking.
    pub fn poll_completions(&self, out: &mut Vec<Completion>) {
        let rx = self.completions.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(rx.try_iter());
    }

    /// The next batch of committed effects for the live tree, if any, in log order.
    pub fn try_recv_applied(&self) -> Option<Applied> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_recv()
            .ok()
    }

    /// Reads the committed state (tree, sessions, last applied) as the state machine has it.
    pub fn inspect<T>(&self, f: impl FnOnce(&SharedState) -> T) -> T {
        f(&self.inner.shared.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The current Raft status.
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Queues a membership change (carried out by the leader); the completion carries
    /// [`Done::Membership`](crate::Done::Membership).
    pub fn submit_membership(&self, change: MembershipChange) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.send(Submission::Membership { ticket, change });
        ticket
    }

    /// Stops Raft, the proposer and the transport. Committed state is in the store.
    pub async fn stop(&self) {
        self.proposer.abort();
        self.peer_watch.abort();
        self.elector.abort();
        self.presence.abort();
        self.quorum_watch.abort();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        if let Some(c) = &self.inner.clients {
            c.stop();
        }
        if let Some(q) = &self.inner.quic {
            q.shutdown().await;
        }
    }

    /// This server's end of the game peers' rpcs and presence (for the multiplayer API).
    /// The first call takes the rpcs for this server; later calls get a link that sends
    /// only.
    pub fn peer_link(&self) -> crate::PeerLink {
        let inbox = crate::peers::take_inbox(&self.rpc_inbox);
        let eventual_inbox = crate::peers::take_inbox(&self.eventual_inbox);
        let (send, all, eventual) = (
            self.inner.peers.clone(),
            self.inner.peers.clone(),
            self.inner.peers.clone(),
        );
        crate::PeerLink::new(
            synctree_proto::SERVER_PEER,
            std::sync::Arc::new(move |rpc| send.server_sent(rpc)),
            std::sync::Arc::new(move || all.all()),
            inbox,
            crate::peers::EventualLink {
                send: std::sync::Arc::new(move |set| eventual.eventual(set, true)),
                inbox: eventual_inbox,
                admit: None,
            },
        )
    }

    /// Sends clients whose token is not on the list to the game ([`Node::try_recv_auth`])
    /// instead of refusing them.
    pub fn enable_auth(&self, on: bool) {
        self.inner.auth.enable(on);
    }

    /// The next client waiting for the game's decision, if any.
    pub fn try_recv_auth(&self) -> Option<crate::AuthRequest> {
        self.inner.auth.try_recv()
    }

    /// Starts serving a game client whose frames travel through the game's own transport
    /// (see [`crate::FramePipe`]); `who` names it in logs. Fails if this server was started
    /// without a client configuration ([`ServerConfig::clients`]).
    pub fn attach_client(&self, who: String) -> Result<crate::FramePipe, String> {
        match &self.inner.client_ctx {
            Some(ctx) => {
                let _guard = self.runtime.enter();
                Ok(crate::clients::attach(ctx.clone(), who))
            }
            None => Err(format!(
                "server {} does not serve game clients (it has no client configuration)",
                self.inner.id
            )),
        }
    }

    /// Sets the synced subtrees (roots, by node key) game client `peer` may not see, as the
    /// game decides on this server: while it is connected here, its feed leaves them out
    /// (it is sent the tree as it may see it again at each change).
    pub fn set_client_view(&self, peer: u64, hidden: std::collections::HashSet<u64>) {
        if let Some(ctx) = &self.inner.client_ctx {
            ctx.views.set(peer, hidden);
        }
    }

    /// Tells the client sessions where the SyncedTree is in the server's scene tree (its
    /// absolute path), so an rpc of a node hidden from a client is not delivered to it.
    pub fn set_tree_path(&self, path: &str) {
        if let Some(ctx) = &self.inner.client_ctx {
            *ctx.tree_path.write().unwrap_or_else(|p| p.into_inner()) = Some(path.to_owned());
        }
    }

    /// The client port actually bound, if this server serves game clients.
    pub fn client_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.clients.as_ref().and_then(|c| c.local_addr())
    }
}

impl Drop for Node {
    /// Stops this node's own tasks. Raft and the transport stop only with [`Node::stop`]
    /// (a `Server` calls it when dropped): call it before dropping a `Node`.
    fn drop(&mut self) {
        self.proposer.abort();
        self.peer_watch.abort();
        self.elector.abort();
        self.presence.abort();
        self.quorum_watch.abort();
    }
}

type Started = (
    Arc<Inner>,
    mpsc::Receiver<Applied>,
    Option<std::net::SocketAddr>,
);

async fn start_node(
    cfg: &ServerConfig,
    submitter: proposer::Submitter,
    (godot_rpcs, godot_eventual): (
        std::sync::mpsc::Sender<synctree_proto::PeerRpc>,
        std::sync::mpsc::Sender<synctree_proto::EventualSet>,
    ),
) -> Result<Started, StartError> {
    let peers = crate::peers::Peers::new(cfg.id, godot_rpcs, godot_eventual);
    let auth = Arc::new(crate::clients::Auth::default());
    let material = match &cfg.transport {
        TransportMode::Mem(_) => None,
        TransportMode::Quic { tls, .. } => Some(match tls {
            TlsSource::Dir(dir) => TlsMaterial::load(dir, cfg.id)?,
            TlsSource::Dev(dir) => certs::ensure_dev_cluster(dir, cfg.id)?,
        }),
    };
    // Servers of one cluster share its CA; the in-memory network is one test cluster.
    let cluster = material
        .as_ref()
        .map(TlsMaterial::cluster_id)
        .unwrap_or_else(|| "in-memory-network".to_owned());
    let storage = match &cfg.storage {
        StorageMode::InMemory => Storage::in_memory()?,
        StorageMode::Opened(storage) => storage.clone(),
        StorageMode::Dir { dir, fsync } => {
            let durability = if *fsync {
                synctree_raft::Durability::Fsync
            } else {
                synctree_raft::Durability::NoFsync
            };
            if !*fsync {
                tracing::warn!(
                    "fsync is OFF for node {}: a crash can lose acknowledged writes",
                    cfg.id
                );
            }
            synctree_raft::open(dir, durability)?
        }
    };
    storage.bind_cluster(&cluster)?;
    let clock = Arc::new(Clock::with_physical(
        cfg.id,
        Clock::DEFAULT_MAX_DELTA,
        cfg.hooks.clock,
    ));
    let (applied_tx, applied_rx) = mpsc::channel(cfg.applied_capacity.max(1));
    let (mut sm, shared) = StateMachine::open(storage.clone(), applied_tx, Some(clock.clone()))
        .await
        .map_err(|e| StartError::State(e.to_string()))?;
    let cut_off = tokio::sync::watch::Sender::new(None);
    let mut client_ctx = None;
    if let Some(c) = &cfg.clients {
        // Without a client port, clients come only through the game's transport: entries
        // are encoded for them only while one is connected.
        let feed = Arc::new(match c.listen {
            Some(_) => synctree_raft::Feed::default(),
            None => synctree_raft::Feed::on_demand(),
        });
        sm = sm.with_feed(feed.clone());
        client_ctx = Some(Arc::new(crate::clients::Ctx {
            auth: auth.clone(),
            server: cfg.id,
            cluster: cluster.clone(),
            cfg: c.clone(),
            feed,
            shared: shared.clone(),
            submitter,
            peers: peers.clone(),
            views: Default::default(),
            tree_path: Default::default(),
            cut_off: cut_off.subscribe(),
        }));
    }
    let clients = match (&client_ctx, &material) {
        (Some(ctx), Some(material)) => match ctx.cfg.listen {
            Some(listen) => Some(crate::clients::ClientListener::start(
                listen,
                material,
                ctx.clone(),
            )?),
            None => None,
        },
        (Some(ctx), None) if ctx.cfg.listen.is_some() => {
            return Err(StartError::Raft(
                "a QUIC client port needs the QUIC transport (its TLS certificates)".into(),
            ))
        }
        _ => None,
    };
    let mut log_store = LogStore::new(storage);
    if let Some(observer) = &cfg.hooks.log_observer {
        log_store = log_store.with_observer(observer.clone());
    }
    let committed = log_store.committed_index();

    let handler = Arc::new(RpcHandler::default());
    let (transport, quic, local_addr): (Arc<dyn Transport>, _, _) = match &cfg.transport {
        TransportMode::Mem(net) => (Arc::new(net.register(cfg.id, handler.clone())), None, None),
        TransportMode::Quic { listen, .. } => {
            let material = material.ok_or_else(|| {
                StartError::Raft("internal error: QUIC without TLS material".into())
            })?;
            let qcfg =
                QuicConfig::new(cfg.id, *listen, material).with_peers(cfg.peers.iter().copied());
            let quic = QuicTransport::start(qcfg, handler.clone())?;
            let addr = quic.local_addr().ok();
            (Arc::new(quic.clone()), Some(quic), addr)
        }
    };
    for (id, addr) in &cfg.peers {
        transport.set_peer(*id, *addr);
    }
    let answers = Arc::new(crate::quorum::PeerAnswers::default());
    let network = NetworkFactory {
        transport: transport.clone(),
        backoff: cfg.tuning.heartbeat,
        backoff_max: cfg.tuning.election_min / 2,
        answers: answers.clone(),
    };
    let raft = Raft::new(cfg.id, raft_config(cfg)?, network, log_store, sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let inner = Arc::new(Inner {
        id: cfg.id,
        raft,
        shared,
        transport,
        request_timeout: cfg.request_timeout,
        pipeline: cfg.tuning.pipeline.max(1),
        clock,
        contact: LeaderContact::new(),
        lease: cfg.tuning.election_max,
        fatal: Mutex::new(None),
        configured_peers: cfg.peers.iter().map(|(id, _)| *id).collect(),
        committed,
        quic,
        clients,
        answers,
        cut_off,
        client_ctx,
        peers,
        auth,
    });
    let _ = handler.inner.set(inner.clone());
    inner.peers.attach(&inner);

    let initialized = inner
        .raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if !initialized && cfg.join {
        tracing::info!(
            "node {} starts empty to join a running cluster: add it from the leader \
             (add_learner {} <address>, then promote {})",
            cfg.id,
            cfg.id,
            cfg.id
        );
    } else if !initialized {
        // Every founding member proposes the same membership as entry 0; openraft accepts
        // that on a pristine node and refuses it harmlessly once the group has formed. The
        // entries must be identical on every server (log matching: one index and term, one
        // entry), so they name the voters without addresses: founding members reach each
        // other through their configured peers, and an address a server knows only of
        // itself (its bind address) would differ from what its peers were told.
        let members: BTreeMap<NodeId, BasicNode> = std::iter::once(cfg.id)
            .chain(cfg.peers.iter().map(|(id, _)| *id))
            .map(|id| (id, BasicNode::default()))
            .collect();
        if let Err(e) = inner.raft.initialize(members).await {
            tracing::info!("node {} not initialising the group: {e}", cfg.id);
        }
    }
    tracing::info!(
        "synctree node {} started ({:?}, {:?})",
        cfg.id,
        cfg.storage,
        cfg.transport
    );
    Ok((inner, applied_rx, local_addr))
}
