//! Failover time of the runtime alone (no Godot): three servers in one process over real
//! QUIC on loopback, fsync on. Repeatedly stops the leader (its process state is dropped,
//! its data directory kept, as after kill -9), times until a write submitted on a survivor
//! right then commits, restarts the stopped server, and waits for it to catch up.
//! Prints p50 / p99 / max over the kills, with the election timeouts used.
//!
//! `cargo run --release -p synctree-runtime --example failover [-- KILLS [HEARTBEAT_MS
//! ELECTION_MIN_MS ELECTION_MAX_MS]]` (default 20 kills, the default timing 50 / 150-300 ms).

mod common;

use std::time::{Duration, Instant};
use synctree_proto::{Op, Value};
use synctree_runtime::{RaftTuning, Server};

/// Submits `op` on `s` and waits for its completion, draining every applied stream.
fn write(s: &Server, all: &[Option<Server>], op: Op) -> anyhow::Result<()> {
    common::run(s, all, [op], 1).map(|_| ())
}

fn leader(all: &[Option<Server>]) -> Option<usize> {
    all.iter()
        .position(|s| s.as_ref().is_some_and(|s| s.status().is_leader))
}

fn main() -> anyhow::Result<()> {
    common::log_if_asked();
    let arg = |i: usize| std::env::args().nth(i).and_then(|a| a.parse::<u64>().ok());
    let kills = arg(1).unwrap_or(20) as usize;
    let mut t = RaftTuning::default();
    if let (Some(h), Some(min), Some(max)) = (arg(2), arg(3), arg(4)) {
        t.heartbeat = Duration::from_millis(h);
        t.election_min = Duration::from_millis(min);
        t.election_max = Duration::from_millis(max);
    }
    let dir = tempfile::tempdir()?;
    let cluster = common::Quic3::new(dir.path(), true, t.clone())?;
    let mut all: Vec<Option<Server>> = cluster.start_all()?.into_iter().map(Some).collect();
    common::wait_leader(&all)?;
    let first = leader(&all).expect("leader");
    let spawn = Op::Spawn {
        parent: String::new(),
        name: "A".into(),
        scene: "Node".into(),
        props: vec![],
        owner: synctree_proto::SERVER_PEER,
    };
    write(all[first].as_ref().expect("leader"), &all, spawn)?;
    let mut times = Vec::new();
    for k in 0..kills {
        let Some(l) = leader(&all) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let survivor = (l + 1) % 3;
        // The leader's Raft stops at once; tearing down its runtime takes a while in process
        // (a kill -9 takes none), so it happens on another thread while the clock runs.
        let victim = all[l].take().expect("leader");
        let killed_at = Instant::now();
        let stopper = std::thread::spawn(move || victim.shutdown());
        let set = Op::SetProperty {
            path: "A".into(),
            property: "hp".into(),
            value: Value::Int(k as i64),
        };
        write(all[survivor].as_ref().expect("survivor"), &all, set)?;
        times.push(killed_at.elapsed());
        tracing::info!(
            "kill {k}: leader {} stopped, write committed after {:?}",
            l + 1,
            killed_at.elapsed()
        );
        let _ = stopper.join();
        // Bring it back and let it catch up before the next kill.
        all[l] = Some(cluster.start(l as u64 + 1)?);
        let back = all[l].as_ref().expect("restarted");
        let target = all[survivor]
            .as_ref()
            .expect("survivor")
            .status()
            .commit_index;
        let deadline = Instant::now() + Duration::from_secs(10);
        while back.status().applied_index < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "restarted server did not catch up"
            );
            common::drain(&all);
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
    println!(
        "failover (leader stopped -> next write committed), {} kills, heartbeat {} ms, election timeout {}-{} ms: p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        times.len(),
        t.heartbeat.as_millis(),
        t.election_min.as_millis(),
        t.election_max.as_millis(),
        pick(0.5),
        pick(0.99),
        ms(*times.last().expect("a kill"))
    );
    Ok(())
}
