//! Membership at runtime with real processes, through GDScript (`SyncedTree.add_learner`,
//! `promote_to_voter`, `remove_server`, driven over the control port): a fourth headless Godot
//! server started with `--synctree-join` is added as a learner, catches up over QUIC, becomes
//! a voter; a voter killed for good is removed; writes go on and every dump converges.
//! (The operator command `synctree membership` does the same over QUIC in
//! rust/synctree-runtime/tests/membership.rs.)

use anyhow::{ensure, Result};
use serde_json::Value;
use std::time::Duration;
use synctree_e2e::{parse_dump, Cluster, ClusterConfig, Op};

fn ids(v: &Value, key: &str) -> Vec<u64> {
    v[key]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[test]
fn a_server_joins_through_gdscript_and_a_dead_one_is_removed() -> Result<()> {
    let mut cluster = Cluster::start(ClusterConfig::default())?;
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    let ops: Vec<Op> = (0..50)
        .map(|i| Op::spawn("", &format!("N{i}"), "Node2D"))
        .collect();
    let reply = cluster.control(leader)?.batch(&ops)?;
    ensure!(
        reply.results.iter().all(|r| r.ok),
        "spawns failed: {:?}",
        reply.results
    );

    let four = cluster.add_joining_server()?;
    let address = format!("127.0.0.1:{}", cluster.server(four).quic_port);
    // Asked on a follower: its SyncedTree routes the change to the leader.
    let follower = cluster
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != four)
        .unwrap_or(1);
    let m = cluster
        .control(follower)?
        .membership("add_learner", four, &address)?;
    ensure!(ids(&m, "learners") == vec![four], "after add_learner: {m}");
    let dump = cluster.wait_converged(Duration::from_secs(60))?;
    ensure!(dump.contains("N49"), "the learner did not receive the tree");
    let m = cluster.control(follower)?.membership("promote", four, "")?;
    ensure!(
        ids(&m, "voters") == vec![1, 2, 3, four],
        "after promote: {m}"
    );

    // A voter dies for good (the leader, to make it harder): removed through server 4.
    let victim = cluster.wait_leader(Duration::from_secs(30))?;
    cluster.kill(victim)?;
    cluster.wait_leader(Duration::from_secs(30))?;
    let m = cluster.control(four)?.membership("remove", victim, "")?;
    let expected: Vec<u64> = [1, 2, 3, four]
        .into_iter()
        .filter(|i| *i != victim)
        .collect();
    ensure!(ids(&m, "voters") == expected, "after remove: {m}");
    let err = cluster
        .control(four)?
        .membership("remove", 9, "")
        .expect_err("not a member");
    ensure!(err.to_string().contains("not a member"), "{err:#}");

    let reply = cluster
        .control(four)?
        .batch(&[Op::despawn("N0"), Op::spawn("", "After", "Node")])?;
    ensure!(
        reply.results.iter().all(|r| r.ok),
        "writes after the change: {:?}",
        reply.results
    );
    let dump = cluster.wait_converged(Duration::from_secs(60))?;
    let nodes = parse_dump(&dump);
    ensure!(
        nodes.contains_key("After") && !nodes.contains_key("N0") && nodes.len() == 50,
        "dump after the writes: {dump}"
    );
    cluster.check_logs()
}
