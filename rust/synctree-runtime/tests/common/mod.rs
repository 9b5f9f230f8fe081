//! Helpers shared by the in-process cluster tests.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use synctree_runtime::{MemNetwork, Server, ServerConfig, StorageMode, TransportMode};

/// Starts server `id` of a three-server cluster on the in-memory network, with fsync'd
/// storage in `dir/n<id>` (so a restart finds its state) and a 2 s request timeout.
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
