//! Real processes under faults, Jepsen-style: three headless Godot servers over real QUIC,
//! six clients (two per server, through the control port) doing writes, linearizable reads and
//! compare-and-sets while faults come from outside; each history must be linearizable
//! (`synctree-check`), every server must answer afterwards, and their trees must converge.
//!
//! ```text
//!   kills:        kill -9 the leader, restart it; then a follower; then the next leader
//!   partition:    servers reach each other through a UDP relay; cut the leader off (both
//!                 ways) — the minority refuses writes with "no quorum" — heal; then a one-way
//!                 cut; server 3's clock runs 400 ms ahead the whole time
//! ```
//! (The relay stands in for network namespaces, which need root; it is what CI runs.)

use anyhow::{ensure, Context, Result};
use std::thread;
use std::time::{Duration, Instant};
use synctree_e2e::{ClientRun, Cluster, ClusterConfig, Op, Recorder};

const NODES: [&str; 3] = ["K0", "K1", "K2"];
/// Written only by the nemesis, on the minority side (outside the clients' history).
const MINORITY: &str = "M";
const HOLDER: &str = "res://tests/fixtures/holder.tscn";
const RUN: Duration = Duration::from_secs(11);
const ELECTION: Duration = Duration::from_secs(30);

fn spawn_registers(cluster: &Cluster) -> Result<()> {
    let leader = cluster.wait_leader(ELECTION)?;
    let names: Vec<&str> = NODES.iter().copied().chain([MINORITY]).collect();
    let ops: Vec<Op> = names.iter().map(|n| Op::spawn("", n, HOLDER)).collect();
    let reply = cluster.control(leader)?.batch(&ops)?;
    for (n, r) in names.iter().zip(&reply.results) {
        ensure!(r.ok, "spawn {n}: {}", r.error);
    }
    Ok(())
}

/// Runs the clients for [`RUN`] while `nemesis` acts on the cluster, then heals, reads every
/// register on every server, checks the history and the convergence of the dumps.
fn run_with(cluster: &mut Cluster, nemesis: impl FnOnce(&mut Cluster) -> Result<()>) -> Result<()> {
    spawn_registers(cluster)?;
    let servers: Vec<(u64, u16)> = cluster
        .servers
        .iter()
        .map(|s| (s.id, s.control_port))
        .collect();
    let nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let clients: Vec<ClientRun> = (0..6)
        .map(|id| ClientRun {
            id,
            servers: servers.clone(),
            nodes: nodes.clone(),
        })
        .collect();
    let rec = Recorder::default();
    let until = Instant::now() + RUN;
    let nemesis_result = thread::scope(|s| {
        for c in &clients {
            let rec = &rec;
            s.spawn(move || c.run(rec, until));
        }
        nemesis(cluster)
    });
    nemesis_result.context("nemesis")?;
    if let Some(relay) = cluster.relay() {
        relay.heal();
    }
    for id in cluster.ids() {
        if !cluster.server(id).is_running() {
            cluster.restart(id)?;
        }
    }
    cluster.wait_leader(ELECTION)?;
    for c in &clients[..1] {
        c.final_reads(&rec, Duration::from_secs(30))?;
    }
    let report = rec.check();
    eprintln!(
        "history: writes ok {} / unknown {} / fail {}, reads ok {}, cas ok {} / fail {} / unknown {}",
        rec.count(Some("write"), "ok"),
        rec.count(Some("write"), "unknown"),
        rec.count(Some("write"), "fail"),
        rec.count(Some("read"), "ok"),
        rec.count(Some("cas"), "ok"),
        rec.count(Some("cas"), "fail"),
        rec.count(Some("cas"), "unknown"),
    );
    let report = report?;
    eprintln!("{report}");
    ensure!(
        rec.count(Some("write"), "ok") > 30 && rec.count(Some("read"), "ok") > 30,
        "too little happened"
    );
    cluster.wait_converged(Duration::from_secs(60))?;
    cluster.check_logs()
}

#[test]
fn leader_and_follower_kills_history_is_linearizable() -> Result<()> {
    let mut cluster = Cluster::start(ClusterConfig::default())?;
    run_with(&mut cluster, |cluster| {
        for round in 0..3 {
            thread::sleep(Duration::from_millis(2000));
            let leader = cluster.wait_leader(ELECTION)?;
            // Twice the leader, once a follower.
            let (victim, role) = if round == 1 {
                (leader % 3 + 1, "follower")
            } else {
                (leader, "leader")
            };
            eprintln!("nemesis: kill -9 {role} {victim}");
            cluster.kill(victim)?;
            thread::sleep(Duration::from_millis(1500));
            eprintln!("nemesis: restart {victim}");
            cluster.restart(victim)?;
        }
        Ok(())
    })
}

#[test]
fn partitions_and_a_skewed_clock_history_is_linearizable() -> Result<()> {
    let config = ClusterConfig {
        relay: true,
        server_args: vec![(3, "--synctree-clock-offset-ms=400".into())],
        ..ClusterConfig::default()
    };
    let mut cluster = Cluster::start(config)?;
    run_with(&mut cluster, |cluster| {
        thread::sleep(Duration::from_millis(2000));
        let leader = cluster.wait_leader(ELECTION)?;
        let others: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
        eprintln!("nemesis: partition [{leader}] | {others:?}");
        let relay = cluster.relay().context("relay")?;
        relay.partition(&[leader], &others);
        // The cut-off leader has no quorum: its writes fail, saying so, and may not apply.
        let mut control = cluster.control(leader)?;
        let reply = control.batch(&[Op::set(MINORITY, "v", "-1")])?;
        let r = &reply.results[0];
        ensure!(!r.ok, "a write on the minority side succeeded");
        ensure!(
            r.error.contains("no quorum"),
            "unclear minority error: {}",
            r.error
        );
        thread::sleep(Duration::from_millis(1000));
        relay.heal();
        eprintln!("nemesis: healed; dropped {} packets", relay.dropped());
        ensure!(relay.dropped() > 0, "the partition dropped nothing");
        thread::sleep(Duration::from_millis(1500));
        let leader = cluster.wait_leader(ELECTION)?;
        let follower = others
            .into_iter()
            .find(|i| *i != leader)
            .unwrap_or(leader % 3 + 1);
        eprintln!("nemesis: one-way cut {leader} -> {follower}");
        let relay = cluster.relay().context("relay")?;
        relay.block(leader, follower);
        thread::sleep(Duration::from_millis(2000));
        relay.heal();
        Ok(())
    })
}
