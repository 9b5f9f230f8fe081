//! Game clients with real processes: three headless Godot servers, two headless Godot game
//! clients (`SyncedTree` in client mode, each on a different server) driven over their
//! control ports through the same GDScript API. What a client spawns is its own; another
//! client may not change it; an unlisted scene is refused; a flood is rate limited without
//! hurting the other client; a predicted write shows at once and, refused or overtaken, is
//! rolled back to the committed value; after a `kill -9` of its server a client resumes on
//! another and its tree matches everyone's. Rpcs, a MultiplayerSpawner/Synchronizer scene and
//! eventual properties run between real Godot processes.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use synctree_e2e::{client_limits, Cluster, ClusterConfig, Op, Who};

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
        server_args: client_limits(3, 50, 50),
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
    // A burst of client 1's own predicted moves in one frame commits in one entry: none is
    // rolled back, whatever order their outcomes arrive in.
    let burst: Vec<String> = (1..=6).map(|i| format!("Vector2({i}, 7)")).collect();
    let r = a.request(&json!({"cmd": "predict", "path": "Arena/PlayerA",
        "property": "position", "value": "null", "values": burst}))?;
    ensure!(
        r["written"] == true
            && r["shown_at_once"] == "Vector2(6, 7)"
            && r["final"] == "Vector2(6, 7)"
            && r["reconciled"].as_array().is_some_and(Vec::is_empty),
        "a burst of predicted writes: {r}"
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
    // Moving to another server is not leaving the cluster: client 1's game saw no peer go.
    let seen = crate::events(&mut a)?;
    ensure!(
        !seen.iter().any(|e| e.starts_with("peer_disconnected")),
        "client 1 reported peers gone while it moved: {seen:?}"
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

/// A client's server cut off from the other two (a partition between the servers; the
/// client still reaches it) can neither commit its writes nor apply anyone's: it sends the
/// client away, and the client goes on on another server.
#[test]
fn a_client_whose_server_loses_the_quorum_moves_to_another() -> Result<()> {
    let mut cluster = Cluster::start(ClusterConfig {
        relay: true,
        clients: vec![3],
        spawnable: vec!["Node2D".into()],
        ..ClusterConfig::default()
    })?;
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    let mut a = cluster.client_control(1)?;
    let r = a.batch(&[Op::spawn("", "Before", "Node2D")])?;
    ensure!(r.results[0].ok, "{:?}", r.results);
    eprintln!(
        "partition: [3] | [1, 2] (server 3 {} the leader)",
        if leader == 3 { "was" } else { "was not" }
    );
    let relay = cluster.relay().context("relay")?;
    relay.partition(&[3], &[1, 2]);
    let cut = Instant::now();
    let deadline = cut + Duration::from_secs(20);
    loop {
        let s = client_status(&cluster, 1)?;
        if matches!(s["server"].as_u64(), Some(1 | 2)) {
            eprintln!(
                "the client moved to server {} after {:?}",
                s["server"],
                cut.elapsed()
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the client stayed on the cut-off server: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = a.batch(&[Op::spawn("", "Moved", "Node2D")])?;
    ensure!(
        r.results[0].ok,
        "the client writes after moving: {:?}",
        r.results
    );
    cluster.relay().context("relay")?.heal();
    let dump = cluster.wait_all_converged(Duration::from_secs(30))?;
    ensure!(dump.contains("Before") && dump.contains("Moved"), "{dump}");
    cluster.stop();
    Ok(())
}

/// Three servers with a leader, client 1 on server 2 and client 2 on server 3 (through
/// synctree's QUIC client port, or through ENet peers the game set up), and the clients'
/// peer ids.
fn three_servers_two_clients(enet: bool) -> Result<(Cluster, u64, u64)> {
    let cluster = Cluster::start(ClusterConfig {
        clients: vec![2, 3],
        enet,
        ..ClusterConfig::default()
    })?;
    cluster.wait_leader(Duration::from_secs(30))?;
    let (pa, pb) = (peer_of(&cluster, 1)?, peer_of(&cluster, 2)?);
    Ok((cluster, pa, pb))
}

/// The rpcs Probe ran on a process: (method, sender, value).
fn probe_calls(c: &mut synctree_e2e::Control) -> Result<Vec<(String, u64, Value)>> {
    let r = c.request(&json!({"cmd": "rpc_log"}))?;
    Ok(r["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|x| {
            (
                x["method"].as_str().unwrap_or("").to_owned(),
                x["sender"].as_u64().unwrap_or(0),
                x["value"].clone(),
            )
        })
        .collect())
}

fn wait_for_call(
    c: &mut synctree_e2e::Control,
    what: &str,
    want: impl Fn(&(String, u64, Value)) -> bool,
) -> Result<Vec<(String, u64, Value)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let calls = probe_calls(c)?;
        if calls.iter().any(&want) {
            return Ok(calls);
        }
        ensure!(Instant::now() < deadline, "no {what}; calls: {calls:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rpc(c: &mut synctree_e2e::Control, to: i64, method: &str, value: i64) -> Result<i64> {
    let r = c.request(&json!({"cmd": "rpc", "to": to, "method": method, "value": value}))?;
    Ok(r["error"].as_i64().unwrap_or(-1))
}

#[test]
fn gdscript_rpcs_reach_peers_on_any_server_with_their_sender_and_mode() -> Result<()> {
    rpcs_reach_peers(false)
}

#[test]
fn gdscript_rpcs_over_enet_peers_the_game_set_up() -> Result<()> {
    rpcs_reach_peers(true)
}

fn rpcs_reach_peers(enet: bool) -> Result<()> {
    let (mut cluster, pa, pb) = three_servers_two_clients(enet)?;
    let mut a = cluster.client_control(1)?;
    let mut b = cluster.client_control(2)?;
    let mut servers: Vec<_> = (1..=3)
        .map(|id| cluster.control(id))
        .collect::<Result<_>>()?;

    // multiplayer.get_unique_id / get_peers / is_server, presence across the cluster.
    let mut both = vec![pa, pb];
    both.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ma = a.request(&json!({"cmd": "multiplayer"}))?;
        let m1 = servers[0].request(&json!({"cmd": "multiplayer"}))?;
        let peers = |m: &Value| -> Vec<u64> {
            m["peers"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()
        };
        if peers(&ma) == vec![1, pb] && peers(&m1) == both {
            ensure!(
                ma["unique_id"].as_u64() == Some(pa) && ma["is_server"] == false,
                "{ma}"
            );
            ensure!(m1["unique_id"] == 1 && m1["is_server"] == true, "{m1}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "presence: client 1 {ma}, server 1 {m1}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Client 1 (on server 2) to client 2 (on server 3): sender is client 1.
    ensure!(rpc(&mut a, pb as i64, "ping", 5)? == 0);
    wait_for_call(&mut b, "ping at client 2", |c| {
        c.0 == "ping" && c.1 == pa && c.2.as_f64() == Some(5.0)
    })?;
    // Client 1 to the servers: run once, by its own server.
    ensure!(rpc(&mut a, 1, "ping", 6)? == 0);
    wait_for_call(&mut servers[1], "ping at server 2", |c| {
        c.0 == "ping" && c.1 == pa && c.2.as_f64() == Some(6.0)
    })?;
    // A server to everyone: both clients, sender 1; authority mode accepted from it.
    ensure!(rpc(&mut servers[0], 0, "from_authority", 7)? == 0);
    for c in [&mut a, &mut b] {
        wait_for_call(c, "the server's broadcast", |c| {
            c.0 == "from_authority" && c.1 == 1 && c.2.as_f64() == Some(7.0)
        })?;
    }
    // Authority mode from a client that is not the authority: refused where it arrives
    // (rpcs arrive in order, so once the later ping is there, the refused call is not).
    ensure!(rpc(&mut a, pb as i64, "from_authority", 8)? == 0);
    ensure!(rpc(&mut a, pb as i64, "ping", 9)? == 0);
    let calls = wait_for_call(&mut b, "ping 9", |c| {
        c.0 == "ping" && c.2.as_f64() == Some(9.0)
    })?;
    ensure!(
        !calls.iter().any(|c| c.2.as_f64() == Some(8.0)),
        "an authority rpc from a client ran: {calls:?}"
    );
    // call_local to everyone: here, on client 2, and on client 1's server only.
    ensure!(rpc(&mut a, 0, "local_too", 10)? == 0);
    wait_for_call(&mut a, "local_too here", |c| {
        c.0 == "local_too" && c.1 == pa
    })?;
    wait_for_call(&mut b, "local_too at client 2", |c| {
        c.0 == "local_too" && c.1 == pa
    })?;
    wait_for_call(&mut servers[1], "local_too at server 2", |c| {
        c.0 == "local_too"
    })?;
    // unreliable_ordered (local_too, channel 2): a burst travels as datagrams; whatever
    // arrives arrives in order.
    for v in 100..120 {
        ensure!(rpc(&mut a, pb as i64, "local_too", v)? == 0);
    }
    let calls = wait_for_call(&mut b, "a burst of unreliable_ordered rpcs", |c| {
        c.0 == "local_too" && c.2.as_f64().is_some_and(|v| v >= 110.0)
    })?;
    let burst: Vec<f64> = calls
        .iter()
        .filter(|c| c.0 == "local_too")
        .filter_map(|c| c.2.as_f64())
        .filter(|v| *v >= 100.0)
        .collect();
    ensure!(
        burst.windows(2).all(|w| w[0] < w[1]),
        "unreliable_ordered rpcs ran out of order: {burst:?}"
    );
    // Client 1's game sets its networking up again (a fresh API; on QUIC, where the session
    // does not ride the game's peer): its unreliable_ordered rpcs are not taken for older
    // than those of the API before.
    if !enet {
        a.request(&json!({"cmd": "new_api"}))?;
        for v in 200..210 {
            ensure!(rpc(&mut a, pb as i64, "local_too", v)? == 0);
        }
        wait_for_call(
            &mut b,
            "unreliable_ordered rpcs of client 1's new API",
            |c| c.0 == "local_too" && c.2.as_f64().is_some_and(|v| v >= 200.0),
        )?;
    }
    // A method without @rpc is refused at the call.
    ensure!(rpc(&mut a, pb as i64, "unlisted", 11)? != 0);
    std::thread::sleep(Duration::from_millis(300));
    for (i, s) in servers.iter_mut().enumerate() {
        let calls = probe_calls(s)?;
        let expected = if i == 1 { 2 } else { 0 };
        ensure!(calls.len() == expected, "server {}: {calls:?}", i + 1);
    }
    ensure!(!probe_calls(&mut b)?.iter().any(|c| c.0 == "unlisted"));
    cluster.check_logs()?;
    cluster.stop();
    Ok(())
}

#[test]
fn a_multiplayer_spawner_and_synchronizer_scene_runs_unchanged() -> Result<()> {
    spawner_and_synchronizer(false)
}

#[test]
fn a_multiplayer_spawner_and_synchronizer_scene_runs_unchanged_over_enet() -> Result<()> {
    spawner_and_synchronizer(true)
}

fn spawner_and_synchronizer(enet: bool) -> Result<()> {
    let (mut cluster, pa, pb) = three_servers_two_clients(enet)?;

    // Server 1's game code adds client 1's player under PlayerSpawner's spawn path: it
    // appears once on every server and client, owned by client 1, with its spawn properties.
    cluster
        .control(1)?
        .request(&json!({"cmd": "spawn_player", "peer": pa}))?;
    let player = format!("{pa} (res://game/player.tscn, owner {pa})");
    let dump = wait_dump(&cluster, |d| d.contains(&player))?;
    ensure!(
        dump.lines().filter(|l| l.contains("player.tscn")).count() == 1,
        "{dump}"
    );
    ensure!(
        dump.contains(".health = 100")
            && dump.contains(&format!(".position = Vector2({}.0, 1.0)", pa % 1000)),
        "spawn properties: {dump}"
    );

    // Client 1 moves its player (game code on the authority); its synchronizer replicates.
    let r = cluster
        .client_control(1)?
        .request(&json!({"cmd": "move", "path": pa.to_string(), "position": "Vector2(40, 50)"}))?;
    ensure!(
        r["authority"] == true,
        "client 1 is its player's authority: {r}"
    );
    wait_dump(&cluster, |d| d.contains(".position = Vector2(40.0, 50.0)"))?;
    // Client 2 is not: moving it there changes nothing anywhere else.
    let r = cluster
        .client_control(2)?
        .request(&json!({"cmd": "move", "path": pa.to_string(), "position": "Vector2(-1, -1)"}))?;
    ensure!(r["authority"] == false, "{r}");
    std::thread::sleep(Duration::from_millis(500));
    for id in 1..=3 {
        let d = cluster.control(id)?.dump()?;
        ensure!(d.contains("Vector2(40.0, 50.0)"), "server {id}: {d}");
    }
    // (Client 2's local stray value is its own business; put it back for the comparisons.)
    cluster
        .client_control(2)?
        .request(&json!({"cmd": "move", "path": pa.to_string(), "position": "Vector2(40, 50)"}))?;
    // A property of a child node (`Body:modulate` in the synchronizer's config).
    cluster
        .client_control(1)?
        .request(&json!({"cmd": "set_local",
        "path": format!("{pa}/Body"), "property": "modulate", "value": "Color(1, 0, 0, 1)"}))?;
    wait_dump(&cluster, |d| {
        d.contains(".Body:modulate = Color(1.0, 0.0, 0.0, 1.0)")
    })?;
    // `on change` properties (Body:modulate) go through the log; `always` ones (position)
    // are eventual writes, as SceneMultiplayer sends them unreliably: the log still holds
    // the spawn position while every replica shows the moved one.
    let reads = cluster.control(1)?.batch(&[
        synctree_e2e::Op::read(&pa.to_string(), "Body:modulate"),
        synctree_e2e::Op::read(&pa.to_string(), "position"),
    ])?;
    ensure!(
        reads.results[0].value.as_deref() == Some("Color(1, 0, 0, 1)"),
        "{:?}",
        reads.results
    );
    ensure!(
        reads.results[1].value.as_deref() == Some(format!("Vector2({}, 1)", pa % 1000).as_str()),
        "{:?}",
        reads.results
    );

    // Eventual consistency: client 1 turns its player outside the log; every replica shows
    // it. Client 2 may not (it does not own the player).
    let r = cluster.client_control(1)?.request(
        &json!({"cmd": "eventual", "path": pa.to_string(), "property": "rotation", "value": "1.5"}),
    )?;
    ensure!(r["written"] == true, "{r}");
    let r = cluster.client_control(2)?.request(
        &json!({"cmd": "eventual", "path": pa.to_string(), "property": "rotation", "value": "3.0"}),
    )?;
    ensure!(r["written"] == false, "{r}");
    // Every replica (three servers, two clients) shows `value` as the player's rotation.
    let everywhere = |value: &str| -> Result<()> {
        let get = json!({"cmd": "get", "path": pa.to_string(), "property": "rotation"});
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for id in 1..=3 {
                seen.push(cluster.control(id)?.request(&get)?["value"].clone());
            }
            for n in 1..=2 {
                seen.push(cluster.client_control(n)?.request(&get)?["value"].clone());
            }
            if seen.iter().all(|v| v == value) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "rotation {value} everywhere: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    everywhere("1.5")?;
    // Client 1 is not sent its own writes back; a later write by a server (stamped after
    // client 1's) still reaches it and wins everywhere, and so does client 1's next one.
    for (who, value) in [(Some(3), "2.5"), (None, "0.5")] {
        let write = json!({"cmd": "eventual", "path": pa.to_string(), "property": "rotation", "value": value});
        let r = match who {
            Some(id) => cluster.control(id)?.request(&write)?,
            None => cluster.client_control(1)?.request(&write)?,
        };
        ensure!(r["written"] == true, "{r}");
        everywhere(value)?;
    }

    // A second player for client 2, which server 2's game code tells something at once by
    // an rpc (it reaches the others before the spawn, through the log, does: it waits for
    // the node there); then server 2's game code frees client 1's player.
    cluster
        .control(2)?
        .request(&json!({"cmd": "spawn_player", "peer": pb, "poke": "welcome"}))?;
    wait_dump(&cluster, |d| {
        d.contains(&format!("{pb} (res://game/player.tscn"))
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let get = json!({"cmd": "get", "path": pb.to_string(), "property": "pokes"});
        let seen = [
            cluster.client_control(1)?.request(&get)?["value"].clone(),
            cluster.client_control(2)?.request(&get)?["value"].clone(),
        ];
        if seen.iter().all(|v| v == r#"["welcome"]"#) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the rpc sent with the spawn did not run on the clients: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // PlayerSpawner's spawn_limit is 2: a third player is not replicated.
    cluster
        .control(1)?
        .request(&json!({"cmd": "spawn_player", "peer": 999}))?;
    // An rpc of it reaches the others, who have no such node and will not get one: it is
    // refused at once (only a node its sender had just spawned is waited for), and the
    // reliable rpcs after it do not wait behind it.
    std::thread::sleep(Duration::from_millis(200));
    cluster.control(1)?.request(&json!({"cmd": "node_rpc",
        "path": "999", "method": "poke", "value": "lost"}))?;
    let sent = Instant::now();
    cluster.control(1)?.request(&json!({"cmd": "node_rpc",
        "path": pb.to_string(), "method": "poke", "value": "next"}))?;
    loop {
        let get = json!({"cmd": "get", "path": pb.to_string(), "property": "pokes"});
        let v = cluster.client_control(2)?.request(&get)?["value"].clone();
        if v == r#"["welcome", "next"]"# {
            break;
        }
        ensure!(
            sent.elapsed() < Duration::from_millis(1500),
            "an rpc waited behind one of a node that will never come: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A custom spawn: BulletSpawner.spawn(data) on server 1; every other replica calls the
    // spawn_function with the same data (nothing else carries the bullet's position).
    let r = cluster
        .control(1)?
        .request(&json!({"cmd": "spawn_bullet", "id": 1, "from": "Vector2(3, 4)", "angle": 0.5}))?;
    ensure!(r["name"] == "Bullet1", "{r}");
    wait_dump(&cluster, |d| {
        d.contains("Bullet1 (spawner:/root/Server/BulletSpawner)")
    })?;
    for who in ["position", "rotation"] {
        let get = json!({"cmd": "get", "path": "Bullet1", "property": who});
        let want = if who == "position" {
            "Vector2(3, 4)"
        } else {
            "0.5"
        };
        for id in 1..=3 {
            let v = cluster.control(id)?.request(&get)?["value"].clone();
            ensure!(v == want, "server {id}: Bullet1.{who} = {v}");
        }
        for n in 1..=2 {
            let v = cluster.client_control(n)?.request(&get)?["value"].clone();
            ensure!(v == want, "client {n}: Bullet1.{who} = {v}");
        }
    }
    // BulletSpawner's spawn_limit is 3 (Godot's own check on the authority).
    for id in 2..=4 {
        let r = cluster
            .control(1)?
            .request(&json!({"cmd": "spawn_bullet", "id": id, "from": "Vector2(0, 0)"}))?;
        let want = if id < 4 {
            format!("Bullet{id}")
        } else {
            String::new()
        };
        ensure!(r["name"] == want.as_str(), "bullet {id}: {r}");
    }
    // Visibility: the servers' game code makes client 1's player visible to client 1 only
    // (public_visibility off, set_visibility_for). Client 2's tree drops it; its other nodes
    // stay the same Godot objects; client 1 keeps it. Public again: it comes back.
    let instance = |n: u64, path: &str| -> Result<u64> {
        let r = cluster
            .client_control(n)?
            .request(&json!({"cmd": "instance", "path": path}))?;
        Ok(r["id"].as_u64().unwrap_or(0))
    };
    let bullet = instance(2, "Bullet1")?;
    ensure!(bullet != 0, "client 2 holds Bullet1");
    let visibility = |public: bool| -> Result<()> {
        for id in 1..=3 {
            cluster.control(id)?.request(&json!({"cmd": "visibility",
                "path": pa.to_string(), "public": public, "peer": pa, "visible": true}))?;
        }
        Ok(())
    };
    visibility(false)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hidden = instance(2, &pa.to_string())? == 0;
        if hidden {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "client 2 still holds client 1's player"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        instance(1, &pa.to_string())? != 0,
        "client 1 lost its own player"
    );
    // An rpc of the hidden player, from a server's game code to every peer: client 1 runs
    // it; client 2, which cannot see the node, is not sent it (it would refuse it, logging
    // "no such node here"), as with SceneMultiplayer.
    cluster.control(1)?.request(&json!({"cmd": "node_rpc",
        "path": pa.to_string(), "method": "poke", "value": "seven"}))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = cluster.client_control(1)?.request(&json!({"cmd": "get",
            "path": pa.to_string(), "property": "pokes"}))?;
        if r["value"] == r#"["seven"]"# {
            break;
        }
        ensure!(Instant::now() < deadline, "client 1 never ran poke: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = cluster.log_tail_of(Who::Client(2), 400);
    let hidden = format!("/{pa} from");
    ensure!(
        !log.lines()
            .any(|l| l.contains("rpc 'poke'") && l.contains(&hidden)),
        "client 2 was sent an rpc of a node hidden from it:\n{log}"
    );
    ensure!(
        instance(2, "Bullet1")? == bullet,
        "client 2's other nodes were made again"
    );
    visibility(true)?;
    wait_dump(&cluster, |d| d.contains(&player))?;
    ensure!(instance(2, "Bullet1")? == bullet);
    cluster
        .control(2)?
        .request(&json!({"cmd": "free", "path": pa.to_string()}))?;
    let dump = cluster.wait_all_converged(Duration::from_secs(30))?;
    ensure!(!dump.contains(&player), "freed everywhere: {dump}");
    ensure!(
        !dump.contains("999 ("),
        "a spawn over the limit was replicated: {dump}"
    );
    ensure!(dump.contains("Bullet3 (spawner:"), "{dump}");
    // The spawners' signals fire where a spawn or despawn arrives, not on the peer that made
    // it (as with SceneMultiplayer).
    let has = |e: &[String], x: &str| e.iter().any(|s| s == x);
    wait_events(&cluster, "spawner signals", |a, b, s1| {
        [a, b].iter().all(|e| {
            has(e, "spawned Bullet1")
                && has(e, &format!("spawned {pa}"))
                && has(e, &format!("despawned {pa}"))
        }) && has(b, &format!("synchronized {pa}"))
            && !has(a, &format!("synchronized {pa}"))
            && !has(s1, "spawned Bullet1")
            && has(s1, &format!("spawned {pb}"))
    })?;
    ensure!(
        dump.contains(&format!("{pb} (res://game/player.tscn, owner {pb})")),
        "{dump}"
    );
    cluster.check_logs()?;
    cluster.stop();
    Ok(())
}

/// Waits until every server and client shows the same dump and `want` holds for it.
fn wait_dump(cluster: &Cluster, want: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dump = cluster.wait_all_converged(Duration::from_secs(30))?;
        if want(&dump) {
            return Ok(dump);
        }
        ensure!(Instant::now() < deadline, "not reached; last dump:\n{dump}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn multiplayer_signals_on_connection_and_refusal() -> Result<()> {
    // The servers' auth_callback (server.gd) admits guests: tokens not on the list that
    // start with "guest-". Client 2's token is neither; client 3 is a guest.
    let mut cluster = Cluster::start(ClusterConfig {
        clients: vec![2, 3, 1],
        client_tokens: vec![(2, "not-a-token".into()), (3, "guest-7".into())],
        server_args: (1..=3)
            .map(|id| (id, "--demo-guest-prefix=guest-".to_owned()))
            .collect(),
        ..ClusterConfig::default()
    })?;
    cluster.wait_leader(Duration::from_secs(30))?;
    let pa = peer_of(&cluster, 1)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = events(&mut cluster.client_control(1)?)?;
        let b = events(&mut cluster.client_control(2)?)?;
        let s1 = events(&mut cluster.control(1)?)?;
        if a.contains(&"connected_to_server".to_owned())
            && a.contains(&"peer_connected 1".to_owned())
            && b == vec!["connection_failed".to_owned()]
            && s1.contains(&format!("peer_connected {pa}"))
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "client 1 {a:?}, refused client {b:?}, server 1 {s1:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = client_status(&cluster, 2)?;
    ensure!(
        s["refused"] == "token 'not-a-token' is neither on the list nor a guest's",
        "the auth callback's reason reaches the client: {s}"
    );
    let guest = client_status(&cluster, 3)?;
    ensure!(
        guest["server"].as_u64() == Some(1) && guest["peer"].as_u64() > Some(1),
        "the auth callback admitted the guest: {guest}"
    );
    // Client 1 leaves: the servers see it go.
    cluster.client_control(1)?.quit()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events(&mut cluster.control(3)?)?.contains(&format!("peer_disconnected {pa}")) {
        ensure!(
            Instant::now() < deadline,
            "server 3 never saw client 1 leave"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.stop();
    Ok(())
}

/// The multiplayer API's signals a process saw, in order ("peer_connected 7", ...).
fn events(c: &mut synctree_e2e::Control) -> Result<Vec<String>> {
    let r = c.request(&json!({"cmd": "multiplayer"}))?;
    Ok(r["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Waits until `want` holds for the events of client 1, client 2 and the server.
fn wait_events(
    cluster: &Cluster,
    what: &str,
    want: impl Fn(&[String], &[String], &[String]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = events(&mut cluster.client_control(1)?)?;
        let b = events(&mut cluster.client_control(2)?)?;
        let s = if cluster.server(1).is_running() {
            events(&mut cluster.control(1)?)?
        } else {
            Vec::new()
        };
        if want(&a, &b, &s) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: client 1 {a:?}, client 2 {b:?}, server {s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_plain_enet_game_without_synctree_configuration_runs_on_a_one_server_cluster() -> Result<()> {
    plain_game(false, false)
}

/// The same game code and the same checks on Godot's own SceneMultiplayer: what the test
/// above asserts of SyncedMultiplayerAPI is what the built-in does.
#[test]
fn the_same_plain_enet_game_on_scene_multiplayer_behaves_the_same() -> Result<()> {
    plain_game(true, false)
}

#[test]
fn a_plain_websocket_game_runs_on_a_one_server_cluster() -> Result<()> {
    plain_game(false, true)
}

/// As a SceneMultiplayer game starts: the server creates an ENet (or WebSocket) server peer,
/// clients client peers; no --synctree-* configuration, no tokens. On SyncedMultiplayerAPI (a
/// one-server cluster) or, with `builtin`, on SceneMultiplayer itself.
fn plain_game(builtin: bool, websocket: bool) -> Result<()> {
    let mut cluster = Cluster::start(ClusterConfig {
        servers: 1,
        clients: vec![1, 1],
        enet: true,
        bare: true,
        websocket,
        all_args: if builtin {
            vec!["--demo-scene-multiplayer".into()]
        } else {
            Vec::new()
        },
        ..ClusterConfig::default()
    })?;
    let unique_id = |n: u64| -> Result<u64> {
        let r = cluster
            .client_control(n)?
            .request(&json!({"cmd": "multiplayer"}))?;
        Ok(r["unique_id"].as_u64().unwrap_or(0))
    };
    let (pa, pb) = (unique_id(1)?, unique_id(2)?);
    ensure!(pa > 1 && pb > 1 && pa != pb, "peer ids {pa}, {pb}");
    let has = |e: &[String], x: &str| e.iter().any(|s| s == x);
    wait_events(&cluster, "connections", |a, b, s| {
        has(a, "connected_to_server")
            && has(a, "peer_connected 1")
            && has(a, &format!("peer_connected {pb}"))
            && has(b, "connected_to_server")
            && has(b, &format!("peer_connected {pa}"))
            && has(s, &format!("peer_connected {pa}"))
            && has(s, &format!("peer_connected {pb}"))
    })?;

    // The server's game code spawns client 1's player (MultiplayerSpawner): it appears on
    // both clients under the same name, client 2's spawner says so, and client 1 (its
    // authority) moves it (MultiplayerSynchronizer).
    cluster
        .control(1)?
        .request(&json!({"cmd": "spawn_player", "peer": pa}))?;
    let get = |n: u64, property: &str| -> Result<Value> {
        Ok(cluster
            .client_control(n)?
            .request(&json!({"cmd": "get", "path": pa.to_string(), "property": property}))?
            ["value"]
            .clone())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(1, "health").is_err() || get(2, "health").is_err() {
        ensure!(
            Instant::now() < deadline,
            "the player never reached both clients"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(get(2, "health")? == "100", "spawn property on client 2");
    let r = cluster
        .client_control(1)?
        .request(&json!({"cmd": "move", "path": pa.to_string(), "position": "Vector2(7, 8)"}))?;
    ensure!(r["authority"] == true, "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(2, "position")? != "Vector2(7, 8)" {
        ensure!(
            Instant::now() < deadline,
            "client 2 never saw the player move"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_events(&cluster, "the spawner's signal on client 2", |_, b, _| {
        has(b, &format!("spawned {pa}"))
    })?;
    // Rpcs client to client, with the sender's id.
    let (mut a, mut b) = (cluster.client_control(1)?, cluster.client_control(2)?);
    ensure!(rpc(&mut a, pb as i64, "ping", 3)? == 0);
    wait_for_call(&mut b, "ping at client 2", |c| {
        c.0 == "ping" && c.1 == pa && c.2.as_f64() == Some(3.0)
    })?;
    cluster.check_logs()?;

    // The server goes away: both clients see server_disconnected.
    cluster.kill(1)?;
    wait_events(&cluster, "server_disconnected", |a, b, _| {
        has(a, "server_disconnected") && has(b, "server_disconnected")
    })?;
    cluster.stop();
    Ok(())
}
