//! Helpers shared by the runtime examples: three servers in one process over real QUIC on
//! loopback, with dev certificates and fsync'd (or not) storage in a temp folder.

#![allow(dead_code)] // not every example uses every helper

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use synctree_proto::Op;
use synctree_runtime::{
    Completion, RaftTuning, Server, ServerConfig, StorageMode, TlsSource, TransportMode,
};

/// `n` UDP ports free on loopback right now (bound, read, released), so each server can be
/// told its peers' addresses before any of them starts.
pub fn free_udp_ports(n: usize) -> std::io::Result<Vec<u16>> {
    (0..n)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
        })
        .collect()
}

/// A three-server cluster's fixed parts: ports, the folder of certificates and data.
pub struct Quic3 {
    pub ports: Vec<u16>,
    pub dir: std::path::PathBuf,
    pub fsync: bool,
    pub tuning: RaftTuning,
}

impl Quic3 {
    /// Dev certificates for servers 1..=3 in `dir/certs`, three free ports.
    pub fn new(dir: &Path, fsync: bool, tuning: RaftTuning) -> anyhow::Result<Self> {
        for id in 1..=3 {
            synctree_net::certs::ensure_dev_cluster(&dir.join("certs"), id)?;
        }
        Ok(Quic3 {
            ports: free_udp_ports(3)?,
            dir: dir.to_owned(),
            fsync,
            tuning,
        })
    }

    fn addr(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[(id - 1) as usize]))
    }

    /// Starts server `id` (again) from its data directory `dir/n<id>`.
    pub fn start(&self, id: u64) -> anyhow::Result<Server> {
        let peers = (1..=3)
            .filter(|p| *p != id)
            .map(|p| (p, self.addr(p)))
            .collect();
        let storage = StorageMode::Dir {
            dir: self.dir.join(format!("n{id}")),
            fsync: self.fsync,
        };
        let transport = TransportMode::Quic {
            listen: self.addr(id),
            tls: TlsSource::Dir(self.dir.join("certs")),
        };
        let mut cfg = ServerConfig::new(id, peers, storage, transport);
        cfg.tuning = self.tuning.clone();
        Ok(Server::start(cfg)?)
    }

    pub fn start_all(&self) -> anyhow::Result<Vec<Server>> {
        (1..=3).map(|id| self.start(id)).collect()
    }
}

/// The index (in `servers`) of the server that leads, waiting up to 10 s for one.
pub fn wait_leader(servers: &[Option<Server>]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = servers
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.status().is_leader))
        {
            return Ok(i);
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Drops the committed effects every running server queued for its (absent) live tree.
pub fn drain(servers: &[Option<Server>]) {
    for s in servers.iter().flatten() {
        while s.try_recv_applied().is_some() {}
    }
}

/// Submits `ops` on `s` keeping `inflight` outstanding; returns each op's latency.
pub fn run(
    s: &Server,
    all: &[Option<Server>],
    ops: impl IntoIterator<Item = Op>,
    inflight: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut pending = std::collections::HashMap::new();
    let mut lat = Vec::new();
    let mut ops = ops.into_iter();
    let mut buf: Vec<Completion> = Vec::new();
    loop {
        while pending.len() < inflight {
            let Some(op) = ops.next() else { break };
            pending.insert(s.submit(op), Instant::now());
        }
        if pending.is_empty() {
            return Ok(lat);
        }
        drain(all);
        s.poll_completions(&mut buf);
        for c in buf.drain(..) {
            if let Some(t) = pending.remove(&c.ticket) {
                c.result.map_err(|e| anyhow::anyhow!(e))?;
                lat.push(t.elapsed());
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Logs to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=openraft=info`).
pub fn log_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
}
