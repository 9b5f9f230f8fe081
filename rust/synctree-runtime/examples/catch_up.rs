//! Catch-up of a follower that missed many writes (runtime alone, no Godot): three servers in
//! one process over real QUIC on loopback, fsync on. One follower is stopped (its data
//! directory kept, as after kill -9), the leader commits `N` property updates (default
//! 100 000, batched as they arrive), the follower restarts, and the time until it has applied
//! everything the leader had committed is printed. With the default snapshot interval the
//! follower is sent the leader's snapshot, then the log after it.
//!
//! `cargo run --release -p synctree-runtime --example catch_up [-- N [IN_FLIGHT]]`: with
//! `IN_FLIGHT` 1 every update is a log entry of its own (default 4096 in flight: batched).

mod common;

use std::time::{Duration, Instant};
use synctree_proto::{Op, Value};
use synctree_runtime::{RaftTuning, Server};

fn main() -> anyhow::Result<()> {
    common::log_if_asked();
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let in_flight: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4096);
    let dir = tempfile::tempdir()?;
    let tuning = RaftTuning::default();
    let cluster = common::Quic3::new(dir.path(), true, tuning.clone())?;
    let mut all: Vec<Option<Server>> = cluster.start_all()?.into_iter().map(Some).collect();
    let l = common::wait_leader(&all)?;
    let spawn = Op::Spawn {
        parent: String::new(),
        name: "A".into(),
        scene: "Node".into(),
        props: vec![],
        owner: synctree_proto::SERVER_PEER,
    };
    common::run(all[l].as_ref().expect("leader"), &all, [spawn], 1)?;

    let f = (l + 1) % 3;
    all[f].take().expect("follower").shutdown();
    let started = Instant::now();
    let ops = (0..n).map(|i| Op::SetProperty {
        path: "A".into(),
        property: format!("p{}", i % 100),
        value: Value::Int(i),
    });
    common::run(all[l].as_ref().expect("leader"), &all, ops, in_flight)?;
    let wrote = started.elapsed();
    let leader = all[l].as_ref().expect("leader").status();
    println!(
        "leader committed {n} updates while follower {} was down ({:.1} s, log index {})",
        f + 1,
        wrote.as_secs_f64(),
        leader.commit_index
    );

    let restarted = Instant::now();
    all[f] = Some(cluster.start(f as u64 + 1)?);
    let back = all[f].as_ref().expect("restarted");
    let deadline = Instant::now() + Duration::from_secs(60);
    while back.status().applied_index < leader.commit_index {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the follower did not catch up in 60 s"
        );
        common::drain(&all);
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = restarted.elapsed();
    let same = back.inspect(|s| s.tree.dump())
        == all[l].as_ref().expect("leader").inspect(|s| s.tree.dump());
    println!(
        "follower {} restarted and applied up to {} in {:.0} ms (start-up included; snapshot \
         every {} entries); trees equal: {same}",
        f + 1,
        leader.commit_index,
        took.as_secs_f64() * 1000.0,
        tuning.snapshot_every
    );
    anyhow::ensure!(
        same,
        "the caught-up follower's tree differs from the leader's"
    );
    Ok(())
}
