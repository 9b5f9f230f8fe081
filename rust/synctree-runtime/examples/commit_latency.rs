//! Commit latency of the runtime alone (no Godot): three servers in one process over real
//! QUIC on loopback, fsync on unless `--no-fsync`. Prints p50/p99 of submit -> completion
//! (committed by a quorum and applied on the submitting server) with 1 and 64 in flight.
//!
//! `cargo run --release -p synctree-runtime --example commit_latency [-- --no-fsync]`

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use synctree_proto::{Op, Value};
use synctree_runtime::{Completion, Server, ServerConfig, StorageMode, TlsSource, TransportMode};

fn main() -> anyhow::Result<()> {
    let fsync = !std::env::args().any(|a| a == "--no-fsync");
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    for id in 1..=3 {
        synctree_net::certs::ensure_dev_cluster(&certs, id)?;
    }
    let ports = common::free_udp_ports(3)?;
    let addr = |id: u64| SocketAddr::from(([127, 0, 0, 1], ports[(id - 1) as usize]));
    let servers: Vec<Server> = (1..=3u64)
        .map(|id| {
            let peers = (1..=3).filter(|p| *p != id).map(|p| (p, addr(p))).collect();
            let storage = StorageMode::Dir {
                dir: dir.path().join(format!("n{id}")),
                fsync,
            };
            let transport = TransportMode::Quic {
                listen: addr(id),
                tls: TlsSource::Dir(certs.clone()),
            };
            Server::start(ServerConfig::new(id, peers, storage, transport))
        })
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !servers.iter().any(|s| s.status().is_leader) {
        anyhow::ensure!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(10));
    }
    let leader = servers
        .iter()
        .find(|s| s.status().is_leader)
        .expect("leader");
    let follower = servers
        .iter()
        .find(|s| !s.status().is_leader)
        .expect("follower");
    let spawn = Op::Spawn {
        parent: String::new(),
        name: "B".into(),
        scene: "Node".into(),
        props: vec![],
    };
    run(leader, &servers, vec![spawn], 1)?;
    println!("fsync: {}", if fsync { "on" } else { "OFF" });
    for (who, s) in [("leader", leader), ("follower", follower)] {
        for inflight in [1usize, 64] {
            let ops: Vec<Op> = (0..500)
                .map(|i| Op::SetProperty {
                    path: "B".into(),
                    property: "v".into(),
                    value: Value::Int(i),
                })
                .collect();
            let start = Instant::now();
            let mut lat = run(s, &servers, ops, inflight)?;
            let secs = start.elapsed().as_secs_f64();
            lat.sort();
            let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
            println!(
                "{who:8} in flight {inflight:3}: p50 {:.2} ms  p99 {:.2} ms  ({:.0} ops/s)",
                p(0.5),
                p(0.99),
                lat.len() as f64 / secs
            );
        }
    }
    // Commit on the issuer vs applied on every server (followers learn the commit later).
    let mut all = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let ticket = leader.submit(Op::SetProperty {
            path: "B".into(),
            property: "w".into(),
            value: Value::Int(i),
        });
        let index = loop {
            let mut buf = Vec::new();
            leader.poll_completions(&mut buf);
            if let Some(c) = buf.into_iter().find(|c| c.ticket == ticket) {
                match c.result {
                    Ok(synctree_runtime::Done::Write { index, .. }) => break index,
                    other => anyhow::bail!("{other:?}"),
                }
            }
            drain(&servers);
            std::thread::sleep(Duration::from_micros(50));
        };
        while servers.iter().any(|s| s.status().applied_index < index) {
            drain(&servers);
            std::thread::sleep(Duration::from_micros(50));
        }
        all.push(t.elapsed());
    }
    all.sort();
    println!(
        "applied on all 3 (runtime only, 1 in flight): p50 {:.2} ms p99 {:.2} ms",
        all[100].as_secs_f64() * 1e3,
        all[197].as_secs_f64() * 1e3
    );
    Ok(())
}

/// Submits `ops` keeping `inflight` outstanding; returns each op's latency.
fn run(s: &Server, all: &[Server], ops: Vec<Op>, inflight: usize) -> anyhow::Result<Vec<Duration>> {
    let mut pending = std::collections::HashMap::new();
    let mut lat = Vec::with_capacity(ops.len());
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

/// Consumes the applied streams, as the Godot main thread does: applying blocks when
/// nobody reads them (backpressure).
fn drain(all: &[Server]) {
    for s in all {
        while s.try_recv_applied().is_some() {}
    }
}
