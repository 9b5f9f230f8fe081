//! How a server is configured: identity, addresses, storage, security, Raft timing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use synctree_net::MemNetwork;
use synctree_proto::PhysicalClock;
use synctree_raft::{LogObserver, NodeId, Storage};

/// Where the Raft state lives.
#[derive(Debug, Clone)]
pub enum StorageMode {
    /// `dir/raft.redb`, fsync'd on every append unless `fsync` is false (benchmarks only:
    /// a crash can then lose acknowledged writes).
    Dir { dir: PathBuf, fsync: bool },
    /// Nothing on disk; for tests. A restart loses everything.
    InMemory,
    /// A store the caller opened and keeps: a simulation's disk, which outlives the
    /// simulated crashes of the servers started on it.
    Opened(Storage),
}

/// How servers authenticate each other.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// CA and this node's certificate from a folder made by `synctree certs`.
    Dir(PathBuf),
    /// Development: generate (or reuse) a cluster CA and certificates in this folder.
    Dev(PathBuf),
}

/// How servers reach each other.
#[derive(Clone)]
pub enum TransportMode {
    /// QUIC with mutual TLS, listening on `listen`.
    Quic { listen: SocketAddr, tls: TlsSource },
    /// The in-memory network of a test.
    Mem(MemNetwork),
}

impl std::fmt::Debug for TransportMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportMode::Quic { listen, tls } => {
                write!(f, "Quic {{ listen: {listen}, tls: {tls:?} }}")
            }
            TransportMode::Mem(_) => f.write_str("Mem"),
        }
    }
}

/// Raft timing. Defaults suit a LAN or loopback; raise them across data centres.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot (and purge the log) after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot, so a briefly lagging follower
    /// catches up from the log; one further behind is sent the snapshot.
    pub keep_logs_after_snapshot: u64,
    /// Most batches the leader has in consensus at once from its own clients (at least 1).
    /// More cuts latency under load when every server has cores to spare; on a machine
    /// that runs several servers on few cores it costs throughput (more, smaller rounds),
    /// so the default is 1.
    pub pipeline: usize,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 1000,
            pipeline: 1,
        }
    }
}

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub id: NodeId,
    /// The other voters, with their addresses (`host:port`).
    pub peers: Vec<(NodeId, SocketAddr)>,
    pub storage: StorageMode,
    pub transport: TransportMode,
    pub tuning: RaftTuning,
    /// How long a proposal or read may wait for a leader before it fails.
    pub request_timeout: Duration,
    /// Bound of the channel of applied effects to the live tree, in apply batches.
    pub applied_capacity: usize,
    /// What a simulation or test replaces; the defaults are what servers run with.
    pub hooks: Hooks,
    /// Start empty and wait to be added to a running cluster (as a learner, then promoted),
    /// instead of founding one with `peers`.
    pub join: bool,
    /// Serve game clients on a client port of their own (QUIC transport only).
    pub clients: Option<crate::ClientsConfig>,
    /// Threads of a [`crate::Server`]'s tokio runtime (at least 1). One is the default:
    /// beside Godot's main thread it was faster, in CPU per update and in throughput, where
    /// servers share few cores; more may help a server with cores to spare and many
    /// clients. Log commits run on it (a redb commit with fsync, ~0.2-1 ms); snapshots are
    /// built on tokio's blocking pool, so a large one does not hold up heartbeats.
    pub worker_threads: usize,
}

/// Seams for simulations and tests.
#[derive(Clone)]
pub struct Hooks {
    /// The physical clock under the server's HLC (default: the system clock).
    pub clock: PhysicalClock,
    /// Told of every durable change to the Raft log (default: none).
    pub log_observer: Option<Arc<dyn LogObserver>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            clock: synctree_proto::uhlc::system_time_clock,
            log_observer: None,
        }
    }
}

static CLOCK_OFFSET_NS: AtomicI64 = AtomicI64::new(0);

fn offset_clock() -> synctree_proto::uhlc::NTP64 {
    let now = synctree_proto::uhlc::system_time_clock().to_duration();
    let offset = CLOCK_OFFSET_NS.load(Ordering::Relaxed);
    let shifted = if offset >= 0 {
        now + Duration::from_nanos(offset as u64)
    } else {
        now.saturating_sub(Duration::from_nanos(offset.unsigned_abs()))
    };
    synctree_proto::uhlc::NTP64::from(shifted)
}

/// The system clock shifted by `offset_ms` (ahead if positive): a server with a wrong clock,
/// for fault tests. The offset is process-wide (every server of the process that uses this
/// clock shares the last one set).
pub fn offset_system_clock(offset_ms: i64) -> PhysicalClock {
    CLOCK_OFFSET_NS.store(offset_ms.saturating_mul(1_000_000), Ordering::Relaxed);
    offset_clock
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("log_observer", &self.log_observer.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A config with defaults for everything but identity, peers, storage and transport.
    pub fn new(
        id: NodeId,
        peers: Vec<(NodeId, SocketAddr)>,
        storage: StorageMode,
        transport: TransportMode,
    ) -> Self {
        ServerConfig {
            id,
            peers,
            storage,
            transport,
            tuning: RaftTuning::default(),
            request_timeout: Duration::from_secs(5),
            applied_capacity: 1024,
            hooks: Hooks::default(),
            join: false,
            clients: None,
            worker_threads: 1,
        }
    }
}

/// A configuration value could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {what} '{value}': {reason}")]
pub struct ConfigError {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

/// Parses `2@127.0.0.1:7002,3@127.0.0.1:7003` (empty means no peers).
pub fn parse_peers(text: &str) -> Result<Vec<(NodeId, SocketAddr)>, ConfigError> {
    let err = |value: &str, reason: String| ConfigError {
        what: "peer",
        value: value.to_owned(),
        reason,
    };
    let mut peers = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('@').ok_or_else(|| {
            err(
                item,
                "expected <id>@<host>:<port>, e.g. 2@127.0.0.1:7002".into(),
            )
        })?;
        let id = parse_id(id).map_err(|e| err(item, e.reason))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| err(item, format!("bad address: {e}")))?;
        if peers.iter().any(|(p, _)| *p == id) {
            return Err(err(item, format!("node id {id} is listed twice")));
        }
        peers.push((id, addr));
    }
    Ok(peers)
}

/// Parses a server id: a positive integer.
pub fn parse_id(text: &str) -> Result<NodeId, ConfigError> {
    let err = |reason: &str| ConfigError {
        what: "node id",
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    match text.trim().parse::<NodeId>() {
        Ok(0) => Err(err("node ids start at 1")),
        Ok(id) => Ok(id),
        Err(_) => Err(err("expected a positive integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_refuse_nonsense() {
        let peers = parse_peers("2@127.0.0.1:7002, 3@127.0.0.1:7003").expect("valid");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[1].0, 3);
        assert!(parse_peers("").expect("empty").is_empty());
        assert!(parse_peers("2:127.0.0.1:7002")
            .unwrap_err()
            .reason
            .contains("expected <id>@"));
        assert!(parse_peers("0@127.0.0.1:1")
            .unwrap_err()
            .reason
            .contains("start at 1"));
        assert!(parse_peers("2@nowhere")
            .unwrap_err()
            .reason
            .contains("bad address"));
        assert!(parse_peers("2@127.0.0.1:1,2@127.0.0.1:2")
            .unwrap_err()
            .reason
            .contains("twice"));
    }
}
