//! Helpers shared by the in-process cluster tests.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use synctree_proto::{Op, Value};
use synctree_runtime::{
    Completion, Done, MemNetwork, Server, ServerConfig, StorageMode, TransportMode,
};

/// Starts server `id` of a three-server cluster on the in-memory network, with fsync'd
/// storage in `dir/n<id>` (so a restart finds its state) and a 2 s request timeout.
#[allow(dead_code)] // not every test binary uses it
pub fn start_with(id: u64, net: &MemNetwork, dir: &Path, pipeline: usize) -> Server {
    start_tuned(id, net, dir, |cfg| cfg.tuning.pipeline = pipeline)
}

/// [`start_with`], with the configuration adjusted by `tune` before the server starts.
#[allow(dead_code)] // not every test binary tunes
pub fn start_tuned(
    id: u64,
    net: &MemNetwork,
    dir: &Path,
    tune: impl FnOnce(&mut ServerConfig),
) -> Server {
    let addr = |p: u64| SocketAddr::from(([127, 0, 0, 1], 7000 + p as u16));
    let peers = (1..=3).filter(|p| *p != id).map(|p| (p, addr(p))).collect();
    let storage = StorageMode::Dir {
        dir: dir.join(format!("n{id}")),
        fsync: true,
    };
    let mut cfg = ServerConfig::new(id, peers, storage, TransportMode::Mem(net.clone()));
    cfg.request_timeout = Duration::from_secs(2);
    tune(&mut cfg);
    Server::start(cfg).expect("server starts")
}

#[allow(dead_code)]
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[allow(dead_code)]
pub fn leader_of(servers: &[&Server]) -> u64 {
    let mut leader = 0;
    wait_until("a leader all agree on", || {
        let ls: Vec<_> = servers.iter().map(|s| s.status().leader).collect();
        leader = ls[0].unwrap_or(0);
        leader != 0
            && ls.iter().all(|l| *l == Some(leader))
            && servers.iter().any(|s| s.status().is_leader)
    });
    leader
}

#[allow(dead_code)]
pub fn complete(server: &Server, ticket: u64) -> Result<Done, String> {
    let mut got = None;
    let mut buf: Vec<Completion> = Vec::new();
    wait_until("a completion", || {
        server.poll_completions(&mut buf);
        if let Some(c) = buf.iter().find(|c| c.ticket == ticket) {
            got = Some(c.result.clone());
        }
        got.is_some()
    });
    got.expect("completion").map_err(|e| e.message)
}

#[allow(dead_code)]
pub fn spawn(name: &str) -> Op {
    Op::Spawn {
        parent: String::new(),
        name: name.into(),
        scene: "Node".into(),
        props: vec![],
        owner: synctree_proto::SERVER_PEER,
    }
}

#[allow(dead_code)]
pub fn set(path: &str, v: i64) -> Op {
    Op::SetProperty {
        path: path.into(),
        property: "hp".into(),
        value: Value::Int(v),
    }
}

#[allow(dead_code)]
pub fn read(server: &Server, path: &str) -> Option<Value> {
    match complete(server, server.submit_read(path.into(), "hp".into())) {
        Ok(Done::Read { value, .. }) => value,
        other => panic!("read failed: {other:?}"),
    }
}

/// Servers of a cluster over real QUIC on loopback: free ports chosen up front, certificates
/// from `certs`, data under `dir`. Servers 1..=3 found the cluster.
#[allow(dead_code)]
pub struct QuicCluster {
    pub ports: Vec<u16>,
    pub certs: std::path::PathBuf,
    pub dir: std::path::PathBuf,
}

#[allow(dead_code)]
impl QuicCluster {
    pub fn new(servers: usize, certs: &Path, dir: &Path) -> Self {
        let ports = (0..servers)
            .map(|_| synctree_net::ports::unused_port(false).expect("a free UDP port"))
            .collect();
        QuicCluster {
            ports,
            certs: certs.to_owned(),
            dir: dir.to_owned(),
        }
    }

    pub fn addr(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[(id - 1) as usize]))
    }

    /// Starts server `id` (fsync'd storage in `dir/q<id>`); `join`: it waits to be added.
    pub fn start(&self, id: u64, join: bool) -> Server {
        self.start_tuned(id, join, |_| {})
    }

    /// [`Self::start`], with the configuration adjusted by `tune` first.
    pub fn start_tuned(&self, id: u64, join: bool, tune: impl FnOnce(&mut ServerConfig)) -> Server {
        let peers = (1..=3)
            .filter(|p| *p != id)
            .map(|p| (p, self.addr(p)))
            .collect();
        let storage = StorageMode::Dir {
            dir: self.dir.join(format!("q{id}")),
            fsync: true,
        };
        let transport = TransportMode::Quic {
            listen: self.addr(id),
            tls: synctree_runtime::TlsSource::Dir(self.certs.clone()),
        };
        let mut cfg = ServerConfig::new(id, peers, storage, transport);
        cfg.join = join;
        tune(&mut cfg);
        Server::start(cfg).expect("start over QUIC")
    }
}
