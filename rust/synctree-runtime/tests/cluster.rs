//! In-process three-node clusters over the in-memory network: forwarding, restarts,
//! leader changes, refusals and the "no quorum" error.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use synctree_proto::{ShadowTree, Value};
use synctree_runtime::{
    Applied, Done, MemNetwork, Server, ServerConfig, StorageMode, TlsSource, TransportMode,
};

mod common;
use common::{
    complete, leader_of, read, set, spawn, start_tuned, start_with, wait_until, QuicCluster,
};

fn start(id: u64, net: &MemNetwork, dir: &Path) -> Server {
    start_with(id, net, dir, 1)
}

/// Drains a server's applied stream into a mirror tree, as the Godot layer does.
fn drain(server: &Server, mirror: &mut ShadowTree, applied: &mut u64) {
    while let Some(a) = server.try_recv_applied() {
        match a {
            Applied::Reset { index, tree } => {
                *mirror = tree;
                *applied = index;
            }
            Applied::Effects { index, effects } => {
                for e in effects {
                    mirror
                        .apply_effect(&e)
                        .expect("committed effects apply cleanly");
                }
                *applied = index;
            }
        }
    }
}

#[test]
fn follower_write_is_forwarded_and_applied_everywhere() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let servers: Vec<Server> = (1..=3).map(|i| start(i, &net, dir.path())).collect();
    let refs: Vec<&Server> = servers.iter().collect();
    let leader = leader_of(&refs);
    let follower = servers
        .iter()
        .find(|s| s.id() != leader)
        .expect("a follower");
    let done = complete(follower, follower.submit(spawn("A"))).expect("spawn through a follower");
    let Done::Write { index, .. } = done else {
        panic!("write expected")
    };
    complete(follower, follower.submit(set("A", 7))).expect("set");
    for s in &servers {
        assert_eq!(read(s, "A"), Some(Value::Int(7)), "read on node {}", s.id());
    }
    let mut mirrors = vec![(ShadowTree::new(), 0u64); 3];
    wait_until("all live mirrors applied the writes", || {
        for (s, (m, i)) in servers.iter().zip(mirrors.iter_mut()) {
            drain(s, m, i);
        }
        mirrors
            .iter()
            .all(|(m, i)| *i > index && m.get("A", "hp") == Some(&Value::Int(7)))
    });
}

/// With several batches in consensus at once on the leader, every write still succeeds and
/// every replica applies them in the order they were made.
#[test]
fn pipelined_batches_apply_in_issue_order_everywhere() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let servers: Vec<Server> = (1..=3)
        .map(|i| start_with(i, &net, dir.path(), 4))
        .collect();
    let refs: Vec<&Server> = servers.iter().collect();
    let leader = leader_of(&refs);
    let l = servers.iter().find(|s| s.id() == leader).expect("leader");
    complete(l, l.submit(spawn("P"))).expect("spawn");
    let mut tickets = Vec::new();
    for chunk in 0..40 {
        for i in 0..25 {
            tickets.push(l.submit(set("P", chunk * 25 + i)));
        }
        // Let the proposer cut a batch, without waiting for it to commit.
        std::thread::sleep(Duration::from_micros(300));
    }
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); 3];
    let mut indexes = vec![0u64; 3];
    let mut buf = Vec::new();
    let mut ok = 0;
    wait_until("every write acknowledged and applied everywhere", || {
        l.poll_completions(&mut buf);
        for c in buf.drain(..) {
            c.result.expect("pipelined write");
            ok += 1;
        }
        for (k, s) in servers.iter().enumerate() {
            while let Some(a) = s.try_recv_applied() {
                if let Applied::Effects { index, effects } = a {
                    indexes[k] = index;
                    for e in effects {
                        if let synctree_proto::Effect::PropertySet {
                            value: Value::Int(v),
                            ..
                        } = e
                        {
                            seen[k].push(v);
                        }
                    }
                }
            }
        }
        ok == tickets.len() && seen.iter().all(|v| v.len() == tickets.len())
    });
    let issued: Vec<i64> = (0..tickets.len() as i64).collect();
    for (k, v) in seen.iter().enumerate() {
        assert_eq!(
            v,
            &issued,
            "server {} applied the writes in issue order",
            k + 1
        );
    }
    assert!(
        indexes.iter().all(|i| *i > 3),
        "several log entries: {indexes:?}"
    );
}

#[test]
fn refused_ops_name_the_problem_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let servers: Vec<Server> = (1..=3).map(|i| start(i, &net, dir.path())).collect();
    let refs: Vec<&Server> = servers.iter().collect();
    leader_of(&refs);
    let s = &servers[0];
    complete(s, s.submit(spawn("A"))).expect("first spawn");
    let dup = complete(s, s.submit(spawn("A"))).expect_err("duplicate");
    assert!(dup.contains("already has a child named 'A'"), "{dup}");
    let missing = complete(s, s.submit(set("Nope", 1))).expect_err("unknown path");
    assert!(missing.contains("'Nope' does not exist"), "{missing}");
    let err =
        complete(s, s.submit_read("Nope".into(), "hp".into())).expect_err("read of unknown node");
    assert!(err.contains("'Nope' does not exist"), "{err}");
    assert_eq!(read(&servers[2], "A"), None, "A has no synced hp");
}

/// The running server `id`.
fn server(servers: &[Option<Server>], id: u64) -> &Server {
    servers
        .iter()
        .flatten()
        .find(|s| s.id() == id)
        .expect("running server")
}

/// Stops one follower (its data directory stays) and returns its id and slot.
fn stop_a_follower(servers: &mut [Option<Server>], net: &MemNetwork, leader: u64) -> (u64, usize) {
    let victim = (1..=3).find(|i| *i != leader).expect("follower id");
    let slot = (victim - 1) as usize;
    servers[slot].take().expect("running").shutdown();
    net.unregister(victim);
    (victim, slot)
}

#[test]
fn restarted_follower_catches_up_from_its_data_dir() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let mut servers: Vec<Option<Server>> =
        (1..=3).map(|i| Some(start(i, &net, dir.path()))).collect();
    let leader = leader_of(&servers.iter().flatten().collect::<Vec<_>>());
    let lead = servers
        .iter()
        .flatten()
        .find(|s| s.id() == leader)
        .expect("leader");
    complete(lead, lead.submit(spawn("A"))).expect("spawn");
    for v in 0..50 {
        complete(lead, lead.submit(set("A", v))).expect("set");
    }
    let (victim, slot) = stop_a_follower(&mut servers, &net, leader);
    let lead = server(&servers, leader);
    for v in 50..100 {
        complete(lead, lead.submit(set("A", v))).expect("set while a follower is down");
    }
    servers[slot] = Some(start(victim, &net, dir.path()));
    let back = servers[slot].as_ref().expect("restarted");
    let mut mirror = ShadowTree::new();
    let mut applied = 0;
    wait_until("the restarted follower's live mirror to catch up", || {
        drain(back, &mut mirror, &mut applied);
        mirror.get("A", "hp") == Some(&Value::Int(99))
    });
    assert_eq!(read(back, "A"), Some(Value::Int(99)));
}

/// A follower that was down while the leader compacted its log past it is sent the
/// leader's snapshot: its live side resets to it and ends equal to the others.
#[test]
fn lagging_follower_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let tuned = |id: u64, net: &MemNetwork| {
        start_tuned(id, net, dir.path(), |cfg| {
            cfg.tuning.snapshot_every = 20;
            cfg.tuning.keep_logs_after_snapshot = 5;
        })
    };
    let mut servers: Vec<Option<Server>> = (1..=3).map(|i| Some(tuned(i, &net))).collect();
    let leader = leader_of(&servers.iter().flatten().collect::<Vec<_>>());
    let lead = servers
        .iter()
        .flatten()
        .find(|s| s.id() == leader)
        .expect("leader");
    complete(lead, lead.submit(spawn("A"))).expect("spawn");
    let (victim, slot) = stop_a_follower(&mut servers, &net, leader);
    let lead = server(&servers, leader);
    // One entry each: far more than the log keeps behind a snapshot.
    for v in 0..120 {
        complete(lead, lead.submit(set("A", v))).expect("set while a follower is down");
    }
    servers[slot] = Some(tuned(victim, &net));
    let back = servers[slot].as_ref().expect("restarted");
    let mut mirror = ShadowTree::new();
    let mut resets = Vec::new();
    wait_until("the lagging follower to catch up", || {
        while let Some(a) = back.try_recv_applied() {
            match a {
                Applied::Reset { index, tree } => {
                    resets.push(index);
                    mirror = tree;
                }
                Applied::Effects { effects, .. } => {
                    for e in effects {
                        mirror.apply_effect(&e).expect("effect applies");
                    }
                }
            }
        }
        mirror.get("A", "hp") == Some(&Value::Int(119))
    });
    assert!(
        resets.iter().any(|i| *i > 20),
        "caught up through an installed snapshot, not the log: resets at {resets:?}"
    );
    assert_eq!(read(back, "A"), Some(Value::Int(119)));
}

#[test]
fn leader_crash_elects_a_new_leader_and_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let mut servers: Vec<Option<Server>> =
        (1..=3).map(|i| Some(start(i, &net, dir.path()))).collect();
    let old = leader_of(&servers.iter().flatten().collect::<Vec<_>>());
    let any = servers.iter().flatten().next().expect("server");
    complete(any, any.submit(spawn("A"))).expect("spawn");
    complete(any, any.submit(set("A", 1))).expect("set before crash");
    servers[(old - 1) as usize]
        .take()
        .expect("leader")
        .shutdown();
    net.unregister(old);
    let rest: Vec<&Server> = servers.iter().flatten().collect();
    let new = leader_of(&rest);
    assert_ne!(new, old);
    complete(rest[0], rest[0].submit(set("A", 2))).expect("write after failover");
    for s in &rest {
        assert_eq!(read(s, "A"), Some(Value::Int(2)));
    }
}

#[test]
fn minority_side_refuses_writes_with_no_quorum_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let servers: Vec<Server> = (1..=3).map(|i| start(i, &net, dir.path())).collect();
    leader_of(&servers.iter().collect::<Vec<_>>());
    net.isolate(3);
    // Node 3 may still believe in the old leader for a moment; either way the write fails.
    let err = complete(&servers[2], servers[2].submit(spawn("Lonely"))).expect_err("no quorum");
    assert!(err.contains("no quorum"), "{err}");
    net.heal(3);
    let rest: Vec<&Server> = servers.iter().collect();
    leader_of(&rest);
    assert!(complete(
        &servers[0],
        servers[0].submit_read("Lonely".into(), "hp".into())
    )
    .is_err());
}

#[test]
fn three_servers_over_real_quic_with_generated_certs() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("certs");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_synctree"))
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--nodes", "1,2,3"])
        .status()
        .expect("run synctree certs");
    assert!(status.success());
    let quic = QuicCluster::new(3, &certs, dir.path());
    let servers: Vec<Server> = (1..=3u64).map(|id| quic.start(id, false)).collect();
    leader_of(&servers.iter().collect::<Vec<_>>());
    let s = &servers[1];
    complete(s, s.submit(spawn("Q"))).expect("spawn over QUIC");
    complete(s, s.submit(set("Q", 42))).expect("set over QUIC");
    for s in &servers {
        assert_eq!(read(s, "Q"), Some(Value::Int(42)));
    }
}

/// A server pointed at the data directory of another cluster (other CA) refuses to start.
#[test]
fn data_of_another_cluster_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let quic = |certs: &str| {
        let storage = StorageMode::Dir {
            dir: data.clone(),
            fsync: true,
        };
        let transport = TransportMode::Quic {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: TlsSource::Dev(dir.path().join(certs)),
        };
        ServerConfig::new(1, vec![], storage, transport)
    };
    Server::start(quic("certs-a"))
        .expect("first start")
        .shutdown();
    Server::start(quic("certs-a"))
        .expect("same cluster again")
        .shutdown();
    let err = Server::start(quic("certs-b"))
        .err()
        .expect("another cluster's CA is refused")
        .to_string();
    assert!(
        err.contains("belongs to cluster") && err.contains("raft.redb"),
        "{err}"
    );
}
