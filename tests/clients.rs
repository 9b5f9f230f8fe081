//! Game clients with real processes: three headless Godot servers, two headless Godot game
//! clients (`SyncedTree` in client mode, each on a different server) driven over their
//! control ports through the same GDScript API. What a client spawns is its own; another
//! client may not change it; an unlisted scene is refused; a flood is rate limited without
//! hurting the other client; a predicted write shows at once and, refused or overtaken, is
//! rolled back to the committed value; after a `kill -9` of its server a client resumes on
//! another and its tree matches everyone's.

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use synctree_e2e::{Cluster, ClusterConfig, Op};

fn peer_of(cluster: &Cluster, n: u64) -> Result<u64> {
    let s = cluster.client_control(n)?.status()?;
    Ok(s["peer"].as_u64().unwrap_or(0))
}

fn client_status(cluster: &Cluster, n: u64) -> Result<Value> {
    cluster.client_control(n)?.status()
}

#[test]
fn two_godot_clients_on_different_servers_share_one_tree_with_authority() -> Result<()> {
    let mut cluster = Cluster::start(ClusterConfig {
        clients: vec![2, 3],
        spawnable: vec!["Node2D".into()],
        // A small budget so a flood is quick to provoke.
        server_args: (1..=3)
            .flat_map(|id| {
                [
                    (id, "--synctree-client-rate=50".to_owned()),
                    (id, "--synctree-client-burst=50".to_owned()),
                ]
            })
            .collect(),
        ..ClusterConfig::default()
    })?;
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    let (pa, pb) = (peer_of(&cluster, 1)?, peer_of(&cluster, 2)?);
    ensure!(pa > 1 && pb > 1 && pa != pb, "peer ids {pa} {pb}");
    for (n, server) in [(1, 2), (2, 3)] {
        let s = client_status(&cluster, n)?;
        ensure!(
            s["mode"] == "client" && s["server"].as_u64() == Some(server),
            "client {n}: {s}"
        );
    }

    // The servers make the arena; client 1 spawns its player in it, through server 2.
    let r = cluster
        .control(leader)?
        .batch(&[Op::spawn("", "Arena", "Node2D")])?;
    ensure!(r.results[0].ok, "{:?}", r.results);
    let mut a = cluster.client_control(1)?;
    let mut b = cluster.client_control(2)?;
    let r = a.batch(&[Op::spawn("Arena", "PlayerA", "Node2D")])?;
    ensure!(
        r.results[0].ok,
        "client 1 spawns its player: {:?}",
        r.results
    );
    let dump = cluster.wait_all_converged(Duration::from_secs(30))?;
    ensure!(
        dump.contains(&format!("PlayerA (Node2D, owner {pa})")),
        "the player belongs to client 1 everywhere:\n{dump}"
    );

    // Client 2 may not move client 1's player, despawn it, or spawn an unlisted scene.
    let r = b.batch(&[
        Op::set("Arena/PlayerA", "position", "Vector2(9, 9)"),
        Op::despawn("Arena/PlayerA"),
        Op::spawn("Arena", "Cheat", "Node3D"),
        Op::set("Arena", "position", "Vector2(1, 1)"),
    ])?;
    let errors: Vec<&str> = r.results.iter().map(|x| x.error.as_str()).collect();
    ensure!(
        r.results.iter().all(|x| !x.ok && !x.maybe_applied),
        "{:?}",
        r.results
    );
    ensure!(
        errors[0].contains(&format!(
            "peer {pb} may not change 'Arena/PlayerA': it is owned by peer {pa}"
        )),
        "{errors:?}"
    );
    ensure!(
        errors[1].contains("may not change 'Arena/PlayerA'"),
        "{errors:?}"
    );
    ensure!(
        errors[2].contains("not on the SyncedTree's spawnable list"),
        "{errors:?}"
    );
    ensure!(errors[3].contains("owned by the servers"), "{errors:?}");

    // Its owner moves it; client 2 reads the value linearizably through server 3.
    let r = a.batch(&[Op::set("Arena/PlayerA", "position", "Vector2(3, 4)")])?;
    ensure!(r.results[0].ok, "{:?}", r.results);
    let r = b.batch(&[Op::read("Arena/PlayerA", "position")])?;
    ensure!(
        r.results[0].value.as_deref() == Some("Vector2(3, 4)"),
        "{:?}",
        r.results
    );

    // Prediction: client 2's predicted move of client 1's player shows at once, is refused,
    // and is rolled back to the committed value, reported by prediction_reconciled.
    let r = b.request(&json!({"cmd": "predict", "path": "Arena/PlayerA",
        "property": "position", "value": "Vector2(50, 50)"}))?;
    ensure!(
        r["written"] == false
            && r["shown_at_once"] == "Vector2(50, 50)"
            && r["final"] == "Vector2(3, 4)",
        "{r}"
    );
    let events = r["reconciled"].as_array().cloned().unwrap_or_default();
    ensure!(
        events.len() == 1
            && events[0]["committed"] == "Vector2(3, 4)"
            && events[0]["reason"]
                .as_str()
                .is_some_and(|x| x.contains("may not change")),
        "{r}"
    );
    // A race: client 1 predicts a move while a server moves the same player. Whichever
    // commits last wins everywhere; if that is the server's, client 1 reports a rollback.
    let racer = {
        let mut c = cluster.control(leader)?;
        std::thread::spawn(move || {
            c.batch(&[Op::set("Arena/PlayerA", "position", "Vector2(200, 200)")])
        })
    };
    let r = a.request(&json!({"cmd": "predict", "path": "Arena/PlayerA",
        "property": "position", "value": "Vector2(100, 100)"}))?;
    ensure!(
        r["written"] == true && r["shown_at_once"] == "Vector2(100, 100)",
        "{r}"
    );
    let lost = r["final"] != "Vector2(100, 100)";
    ensure!(
        !lost || r["reconciled"].as_array().map(Vec::len) == Some(1),
        "a prediction overtaken without a report: {r}"
    );
    let raced = racer.join().expect("racer thread")?;
    ensure!(raced.results[0].ok, "{:?}", raced.results);
    let dump = cluster.wait_all_converged(Duration::from_secs(30))?;
    ensure!(
        dump.contains("Vector2(200.0, 200.0)") || dump.contains("Vector2(100.0, 100.0)"),
        "{dump}"
    );
    let s = client_status(&cluster, 1)?;
    ensure!(s["predicted_pending"] == 0, "{s}");
    eprintln!(
        "prediction race: the {} write committed last",
        if dump.contains("Vector2(200.0, 200.0)") {
            "server's"
        } else {
            "client's"
        }
    );
    let r = a.batch(&[Op::set("Arena/PlayerA", "position", "Vector2(3, 4)")])?;
    ensure!(r.results[0].ok, "{:?}", r.results);

    // Client 2 floods its server: what is over its budget fails at once, saying so; client 1
    // is served meanwhile and nothing committed is lost.
    let flood: Vec<Op> = (0..300)
        .map(|i| Op::spawn("Arena", &format!("B{i}"), "Node2D"))
        .collect();
    let r = b.batch(&flood)?;
    let limited = r
        .results
        .iter()
        .filter(|x| x.error.contains("rate limit exceeded"))
        .count();
    let spawned = r.results.iter().filter(|x| x.ok).count();
    ensure!(
        limited >= 150 && spawned >= 40 && limited + spawned == 300,
        "limited {limited}, spawned {spawned}: {:?}",
        r.results.iter().find(|x| !x.ok)
    );
    let r = a.batch(&[Op::set("Arena/PlayerA", "position", "Vector2(5, 6)")])?;
    ensure!(
        r.results[0].ok,
        "client 1 during the flood: {:?}",
        r.results
    );
    let dump = cluster.wait_all_converged(Duration::from_secs(30))?;
    let b_nodes = dump
        .lines()
        .filter(|l| l.trim_start().starts_with('B') && l.contains(&format!("owner {pb}")))
        .count();
    ensure!(
        b_nodes == spawned,
        "{b_nodes} of client 2's {spawned} spawns are in the tree"
    );

    // kill -9 client 1's server: it resumes on another and catches up with what it missed.
    cluster.kill(2)?;
    let r = cluster
        .control(1)?
        .batch(&[Op::spawn("Arena", "AfterKill", "Node2D")])?;
    ensure!(r.results.iter().all(|x| x.ok), "{:?}", r.results);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = client_status(&cluster, 1)?;
        if matches!(s["server"].as_u64(), Some(1 | 3)) {
            ensure!(s["connections"].as_u64() >= Some(2), "{s}");
            break;
        }
        ensure!(Instant::now() < deadline, "client 1 did not reconnect: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = a.batch(&[Op::set("Arena/PlayerA", "position", "Vector2(7, 8)")])?;
    ensure!(
        r.results[0].ok,
        "client 1 writes after moving: {:?}",
        r.results
    );
    let dump = cluster.wait_all_converged(Duration::from_secs(30))?;
    ensure!(
        dump.contains("AfterKill") && dump.contains("Vector2(7.0, 8.0)"),
        "{dump}"
    );
    cluster.check_logs()?;
    cluster.stop();
    Ok(())
}
