//! Membership at runtime: a server started with `join` is added as a learner, catches up,
//! is promoted to voter; a dead voter is removed; the cluster keeps committing. Then the
//! same through the `synctree membership` command over real QUIC, as an operator.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use synctree_proto::Value;
use synctree_runtime::{
    Done, MemNetwork, Membership, MembershipChange, Server, ServerConfig, StorageMode,
    TransportMode,
};

mod common;
use common::{complete, leader_of, read, set, spawn, start_with, wait_until, QuicCluster};

fn change(server: &Server, change: MembershipChange) -> Result<Membership, String> {
    match complete(server, server.submit_membership(change))? {
        Done::Membership(m) => Ok(m),
        other => panic!("membership change answered {other:?}"),
    }
}

fn joiner(id: u64, net: &MemNetwork, dir: &Path) -> Server {
    let peers = (1..=3)
        .map(|p| (p, SocketAddr::from(([127, 0, 0, 1], 7000 + p as u16))))
        .collect();
    let storage = StorageMode::Dir {
        dir: dir.join(format!("n{id}")),
        fsync: true,
    };
    let mut cfg = ServerConfig::new(id, peers, storage, TransportMode::Mem(net.clone()));
    cfg.join = true;
    Server::start(cfg).expect("joiner starts")
}

#[test]
fn a_joining_server_becomes_a_voter_and_a_dead_one_is_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = MemNetwork::new();
    let mut servers: Vec<Server> = (1..=3)
        .map(|i| start_with(i, &net, dir.path(), 1))
        .collect();
    let leader = leader_of(&servers.iter().collect::<Vec<_>>());
    let follower_id = servers
        .iter()
        .map(|s| s.id())
        .find(|id| *id != leader && *id != 2);
    let follower_id = follower_id.expect("a follower other than 2");
    let follower = &servers[(follower_id - 1) as usize];
    complete(follower, follower.submit(spawn("A"))).expect("spawn");
    complete(follower, follower.submit(set("A", 1))).expect("set");

    let four = joiner(4, &net, dir.path());
    assert!(four.status().voters.is_empty(), "a joiner founds nothing");
    // Asked on a follower: forwarded to the leader.
    let m = change(
        follower,
        MembershipChange::AddLearner {
            id: 4,
            addr: "127.0.0.1:7004".into(),
        },
    )
    .expect("add learner");
    assert_eq!(
        (m.voters.as_slice(), m.learners.as_slice()),
        (&[1, 2, 3][..], &[4][..])
    );
    // The learner receives the log: what was written before it joined is there.
    wait_until("the learner catches up", || {
        four.inspect(|s| s.tree.get("A", "hp") == Some(&Value::Int(1)))
    });
    let m = change(follower, MembershipChange::Promote { id: 4 }).expect("promote");
    assert_eq!(m.voters, vec![1, 2, 3, 4]);
    assert!(m.learners.is_empty());
    wait_until("4 sees itself a voter", || {
        four.status().voters.contains(&4)
    });

    // Server 2 dies for good (if it led, another takes over); it is removed.
    let victim = 2;
    let at = servers.iter().position(|s| s.id() == victim).expect("2");
    net.unregister(victim);
    servers.remove(at).shutdown();
    let rest: Vec<&Server> = servers.iter().chain([&four]).collect();
    leader_of(&rest);
    let m = change(&four, MembershipChange::Remove { id: victim }).expect("remove 2");
    assert_eq!(m.voters, vec![1, 3, 4]);
    complete(&four, four.submit(set("A", 2))).expect("write after the change");
    for s in &rest {
        assert_eq!(read(s, "A"), Some(Value::Int(2)));
    }

    // Bad changes are refused, naming the problem, and change nothing.
    let refusals = [
        (MembershipChange::Promote { id: 9 }, "not a learner"),
        (MembershipChange::Remove { id: 9 }, "not a member"),
        (
            MembershipChange::AddLearner {
                id: 3,
                addr: "127.0.0.1:7003".into(),
            },
            "already a voter",
        ),
        (
            MembershipChange::AddLearner {
                id: 7,
                addr: "nowhere".into(),
            },
            "invalid address",
        ),
    ];
    for (bad, says) in refusals {
        let err = change(&four, bad.clone()).expect_err("refused");
        assert!(err.contains(says), "{bad}: {err}");
    }
    assert_eq!(four.status().voters, vec![1, 3, 4]);
}

fn synctree(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synctree"))
        .args(args)
        .output()
        .expect("run synctree");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_operator_command_changes_membership_over_quic() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().expect("utf-8 path");
    let (ok, text) = synctree(&[
        "certs",
        "--out",
        certs_arg,
        "--nodes",
        "1,2,3,4",
        "--operator",
    ]);
    assert!(ok, "{text}");
    let quic = QuicCluster::new(4, &certs, dir.path());
    let addr_of = |id: u64| quic.addr(id);
    let start = |id: u64, join: bool| quic.start(id, join);
    let mut servers: Vec<Server> = (1..=3).map(|id| start(id, false)).collect();
    leader_of(&servers.iter().collect::<Vec<_>>());
    complete(&servers[0], servers[0].submit(spawn("Q"))).expect("spawn");
    let four = start(4, true);
    let at = |id: u64| format!("{id}@{}", addr_of(id));
    let admin = |server: u64, args: &[&str]| {
        let server = at(server);
        let mut all = vec!["membership", "--certs", certs_arg, "--server", &server];
        all.extend_from_slice(args);
        synctree(&all)
    };

    let (ok, text) = admin(1, &["show"]);
    assert!(ok && text.contains("voters [1, 2, 3]"), "{text}");
    let four_addr = addr_of(4).to_string();
    let (ok, text) = admin(2, &["add-learner", "4", &four_addr]);
    assert!(ok && text.contains("learners [4]"), "{text}");
    wait_until("4 catches up over QUIC", || {
        four.inspect(|s| s.tree.contains("Q"))
    });
    let (ok, text) = admin(3, &["promote", "4"]);
    assert!(ok && text.contains("voters [1, 2, 3, 4]"), "{text}");

    // Server 1 goes away for good; the operator removes it through server 4.
    let one = servers.remove(0);
    one.shutdown();
    let rest: Vec<&Server> = servers.iter().chain([&four]).collect();
    leader_of(&rest);
    let (ok, text) = admin(4, &["remove", "1"]);
    assert!(ok && text.contains("voters [2, 3, 4]"), "{text}");
    complete(&four, four.submit(set("Q", 5))).expect("write after removing 1");
    let (ok, text) = admin(4, &["remove", "9"]);
    assert!(!ok && text.contains("not a member"), "{text}");

    // Without the operator's certificate the command refuses to start, naming the file.
    let (ok, text) = synctree(&[
        "membership",
        "--certs",
        dir.path().join("missing").to_str().expect("utf-8"),
        "--server",
        &at(2),
        "show",
    ]);
    assert!(!ok && text.contains("ca.pem"), "{text}");
}
