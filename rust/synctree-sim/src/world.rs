//! The simulated servers: each a [`Node`] on the one simulation runtime, over one in-memory
//! network, on a store that outlives its crashes.

use crate::clock;
use crate::config::SimConfig;
use crate::invariants::{LogMatching, NodeSample, Violation};
use std::net::SocketAddr;
use std::time::Duration;
use synctree_raft::{NodeId, Storage};
use synctree_runtime::{
    Completion, MemNetwork, Node, RaftTuning, ServerConfig, StorageMode, TransportMode,
};

/// One server slot: its disk always, its running node when up.
pub struct Slot {
    pub id: NodeId,
    storage: Storage,
    pub node: Option<Node>,
    /// Starts so far.
    pub incarnation: u64,
    /// Starts empty and waits to be added (a spare, or a server given a fresh disk).
    join: bool,
    /// Removed from the cluster: stays down until it is added again.
    pub retired: bool,
}

pub struct World {
    pub net: MemNetwork,
    pub slots: Vec<Slot>,
    pub logs: LogMatching,
    peers: Vec<NodeId>,
    tuning: RaftTuning,
    request_timeout: Duration,
}

impl World {
    /// Creates the disks and starts every server.
    pub async fn start(seed: u64, cfg: &SimConfig, logs: LogMatching) -> anyhow::Result<World> {
        assert!(
            (1..=clock::MAX_SERVERS as u64).contains(&cfg.servers),
            "1..={} servers",
            clock::MAX_SERVERS
        );
        assert!(
            cfg.servers + cfg.spares <= clock::MAX_SERVERS as u64,
            "at most {} servers and spares",
            clock::MAX_SERVERS
        );
        let peers: Vec<NodeId> = (1..=cfg.servers).collect();
        let mut slots = Vec::new();
        for id in 1..=cfg.servers + cfg.spares {
            slots.push(Slot {
                id,
                storage: Storage::in_memory()?,
                node: None,
                incarnation: 0,
                join: id > cfg.servers,
                retired: false,
            });
        }
        let tuning = RaftTuning {
            snapshot_every: cfg.snapshot_every,
            keep_logs_after_snapshot: cfg.snapshot_every / 4,
            ..RaftTuning::default()
        };
        let mut world = World {
            net: MemNetwork::with_seed(seed ^ 0x6e65_7477_6f72_6b00),
            slots,
            logs,
            peers,
            tuning,
            request_timeout: Duration::from_millis(1500),
        };
        for i in 0..cfg.servers as usize {
            world.restart(i).await.map_err(|v| anyhow::anyhow!("{v}"))?;
        }
        Ok(world)
    }

    pub fn address(id: NodeId) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16))
    }

    /// Starts server `i` from its disk; the log found there must be the one last observed.
    pub async fn restart(&mut self, i: usize) -> Result<(), Violation> {
        let slot = &mut self.slots[i];
        if slot.node.is_some() || slot.retired {
            return Ok(());
        }
        let on_disk = synctree_raft::log_records(&slot.storage)
            .map_err(|e| Violation::new("storage", format!("server {}: {e}", slot.id)))?;
        self.logs.check_recovered(slot.id, &on_disk)?;
        let peers = self
            .peers
            .iter()
            .filter(|p| **p != slot.id)
            .map(|p| (*p, Self::address(*p)))
            .collect();
        let mut cfg = ServerConfig::new(
            slot.id,
            peers,
            StorageMode::Opened(slot.storage.clone()),
            TransportMode::Mem(self.net.clone()),
        );
        cfg.tuning = self.tuning.clone();
        cfg.request_timeout = self.request_timeout;
        cfg.hooks.clock = clock::physical(slot.id);
        cfg.hooks.log_observer = Some(self.logs.observer(slot.id));
        cfg.join = slot.join;
        let node = Node::start(cfg)
            .await
            .map_err(|e| Violation::new("restart", format!("server {}: {e}", slot.id)))?;
        slot.node = Some(node);
        slot.incarnation += 1;
        Ok(())
    }

    /// Crashes server `i`: it vanishes from the network, its tasks stop, its disk stays.
    pub async fn crash(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if let Some(node) = slot.node.take() {
            self.net.unregister(slot.id);
            node.stop().await;
        }
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &Slot, &Node)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (i, s, n)))
    }

    /// Servers that crashed and will come back (not spares never started, not retired ones).
    pub fn down(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| {
                let s = &self.slots[*i];
                s.node.is_none() && !s.retired && s.incarnation > 0
            })
            .collect()
    }

    /// Takes server `i` out for good (it was removed from the cluster): down, not restarted.
    pub async fn retire(&mut self, i: usize) {
        self.crash(i).await;
        self.slots[i].retired = true;
    }

    /// Starts server `i` as a new, empty server waiting to be added (a fresh disk: whatever
    /// it held before is gone, as when a machine is replaced).
    pub async fn start_fresh(&mut self, i: usize) -> Result<(), Violation> {
        self.crash(i).await;
        let slot = &mut self.slots[i];
        slot.storage = Storage::in_memory()
            .map_err(|e| Violation::new("storage", format!("server {}: {e}", slot.id)))?;
        slot.join = true;
        slot.retired = false;
        self.logs.forget(slot.id);
        self.restart(i).await
    }

    /// The membership as the running server that applied most sees it: (voters, learners).
    pub fn members(&self) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
        self.running()
            .map(|(_, _, n)| n.status())
            .filter(|s| !s.voters.is_empty())
            .max_by_key(|s| s.applied_index)
            .map(|s| (s.voters, s.learners))
    }

    /// Running servers that are voters or learners.
    pub fn running_members(&self) -> Vec<usize> {
        let Some((voters, learners)) = self.members() else {
            return Vec::new();
        };
        self.running()
            .filter(|(_, s, _)| voters.contains(&s.id) || learners.contains(&s.id))
            .map(|(i, _, _)| i)
            .collect()
    }

    /// Every running server's finished requests: (server, incarnation, completion).
    pub fn poll_completions(&self) -> Vec<(NodeId, u64, Completion)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (_, slot, node) in self.running() {
            node.poll_completions(&mut buf);
            out.extend(buf.drain(..).map(|c| (slot.id, slot.incarnation, c)));
        }
        out
    }

    /// What the invariants look at: every running server's Raft state.
    pub fn sample(&self) -> Result<Vec<NodeSample>, Violation> {
        let mut out = Vec::with_capacity(self.slots.len());
        for (_, slot, node) in self.running() {
            let status = node.status();
            if let Some(fatal) = status.fatal {
                return Err(Violation::new(
                    "liveness",
                    format!("server {} stopped on a fatal error: {fatal}", slot.id),
                ));
            }
            let applied = node.inspect(|s| {
                s.last_applied
                    .map(|l| (l.index, (l.leader_id.term, l.leader_id.node_id)))
            });
            out.push(NodeSample {
                id: slot.id,
                incarnation: slot.incarnation,
                term: status.vote,
                is_leader: status.is_leader,
                applied,
            });
        }
        Ok(out)
    }

    /// Every server's log entry at `index`, one line each (for reports).
    pub fn describe_entries(&self, index: u64) -> String {
        let mut out = String::new();
        for slot in &self.slots {
            let entry = synctree_raft::describe_entry(&slot.storage, index);
            out.push_str(&format!(
                "\n  server {}: {}",
                slot.id,
                entry.as_deref().unwrap_or("-")
            ));
        }
        out
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.slots.iter().any(|s| s.id == id && s.node.is_some())
    }

    pub fn index_of(&self, id: NodeId) -> usize {
        (id - 1) as usize
    }
}
