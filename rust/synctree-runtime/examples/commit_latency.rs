//! Commit latency of the runtime alone (no Godot): three servers in one process over real
//! QUIC on loopback, fsync on unless `--no-fsync`. Prints p50/p99 of submit -> completion
//! (committed by a quorum and applied on the submitting server) with 1 and 64 in flight.
//!
//! `cargo run --release -p synctree-runtime --example commit_latency [-- --no-fsync]
//! [--throughput N] [--pipeline DEPTH]`

mod common;

use std::time::{Duration, Instant};
use synctree_proto::{Op, Value};
use synctree_runtime::{RaftTuning, Server};

fn main() -> anyhow::Result<()> {
    let fsync = !std::env::args().any(|a| a == "--no-fsync");
    let dir = tempfile::tempdir()?;
    let mut tuning = RaftTuning::default();
    if let Some(depth) = std::env::args()
        .skip_while(|a| a != "--pipeline")
        .nth(1)
        .and_then(|n| n.parse().ok())
    {
        tuning.pipeline = depth;
    }
    let cluster = common::Quic3::new(dir.path(), fsync, tuning)?;
    let servers: Vec<Option<Server>> = cluster.start_all()?.into_iter().map(Some).collect();
    let l = common::wait_leader(&servers)?;
    let leader = servers[l].as_ref().expect("leader");
    let follower = servers[(l + 1) % 3].as_ref().expect("follower");
    let spawn = Op::Spawn {
        parent: String::new(),
        name: "B".into(),
        scene: "Node".into(),
        props: vec![],
        owner: synctree_proto::SERVER_PEER,
    };
    common::run(leader, &servers, vec![spawn], 1)?;
    println!("fsync: {}", if fsync { "on" } else { "OFF" });
    if let Some(n) = std::env::args()
        .skip_while(|a| a != "--throughput")
        .nth(1)
        .and_then(|n| n.parse::<i64>().ok())
    {
        // Only the throughput run: `n` updates with 256 in flight (for profiling).
        let ops = (0..n).map(|i| Op::SetProperty {
            path: "B".into(),
            property: "v".into(),
            value: Value::Int(i),
        });
        let start = Instant::now();
        let lat = common::run(leader, &servers, ops, 256)?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "leader   in flight 256: {:.0} ops/s over {} ops",
            lat.len() as f64 / secs,
            lat.len()
        );
        return Ok(());
    }
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
            let mut lat = common::run(s, &servers, ops, inflight)?;
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
            common::drain(&servers);
            std::thread::sleep(Duration::from_micros(50));
        };
        while servers
            .iter()
            .flatten()
            .any(|s| s.status().applied_index < index)
        {
            common::drain(&servers);
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
