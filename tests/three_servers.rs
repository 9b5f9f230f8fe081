//! Three headless Godot servers over real QUIC keep one SyncedTree identical: concurrent writes
//! from every server, a follower killed (-9) and restarted from its data directory, then the
//! leader killed: every write that completed successfully is present on every server.
//!
//! ```text
//!   spawn 1000 ─┐ from servers 1, 2, 3 at once (one thread each, each owning a third of the nodes)
//!   set 10 000 ─┤
//!   despawn 100 ┘ ─▶ dumps identical, 900 nodes, every value as written
//!   kill -9 follower, keep writing, restart it ─▶ it catches up, dumps identical
//!   kill -9 leader, keep writing ─▶ new leader, writes continue, nothing acknowledged is lost
//! ```

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};
use synctree_e2e::{parse_dump, Cluster, ClusterConfig, Control, Op};

const NODES: usize = 1000;
const SETS: usize = 10_000;
const DESPAWNS: usize = 100;
const BATCH: usize = 200;
const CONVERGE: Duration = Duration::from_secs(60);
const ELECTION: Duration = Duration::from_secs(30);

/// What the driver knows about one node's `position`.
#[derive(Debug, Default)]
struct NodeModel {
    alive: bool,
    /// Canonical text of the last value whose write completed successfully.
    acknowledged: String,
    /// Values written after it whose outcome is unknown (refused during an election, or sent
    /// to a server that was killed): each may or may not have been applied.
    uncertain: Vec<String>,
}

#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, NodeModel>,
}

impl Model {
    fn record(&mut self, node: &str, value: &str, outcome: Option<bool>) {
        let n = self.nodes.entry(node.to_owned()).or_default();
        match outcome {
            Some(true) => {
                n.acknowledged = value.to_owned();
                n.uncertain.clear();
            }
            _ => n.uncertain.push(value.to_owned()),
        }
    }

    /// Every live node is in the dump with an allowed value, and nothing else is.
    fn check(&self, dump: &str, what: &str) -> Result<()> {
        let nodes = parse_dump(dump);
        let alive: Vec<(&String, &NodeModel)> =
            self.nodes.iter().filter(|(_, n)| n.alive).collect();
        ensure!(
            nodes.len() == alive.len(),
            "{what}: dump has {} nodes, the driver expects {}",
            nodes.len(),
            alive.len()
        );
        let mut lost = Vec::new();
        for (name, model) in alive {
            let Some(node) = nodes.get(name) else {
                bail!("{what}: node {name} is missing from the dump");
            };
            let got = node
                .props
                .get("position")
                .map(String::as_str)
                .unwrap_or("<none>");
            if got != model.acknowledged && !model.uncertain.iter().any(|u| u == got) {
                lost.push(format!(
                    "{name}.position = {got}, expected {} (or one of {:?})",
                    model.acknowledged, model.uncertain
                ));
            }
        }
        ensure!(
            lost.is_empty(),
            "{what}: {} acknowledged writes are not in the dump, e.g.\n{}",
            lost.len(),
            lost.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
        Ok(())
    }
}

/// Canonical dump text of `Vector2(x, y)` with integral coordinates.
fn canonical_v2(x: u32, y: u32) -> String {
    format!("Vector2({:?}, {:?})", x as f32, y as f32)
}

fn node_name(i: usize) -> String {
    format!("N{i:04}")
}

/// Server (1-based) owning node `i`: it spawns it, and its writer thread is the only one that
/// writes it, so each node's writes are ordered.
fn owner(i: usize, servers: usize) -> u64 {
    (i % servers) as u64 + 1
}

struct Shared {
    model: Mutex<Model>,
    /// Control ports of servers that may be written to, by id.
    live: Mutex<BTreeMap<u64, u16>>,
    seq: AtomicU32,
    stop: AtomicBool,
}

/// Sets `position` of `nodes` (cyclically, distinct nodes within a batch) through server
/// `preferred` while it is live, else through another live server. Stops after `total` sets,
/// or when `stop` is raised if `total` is None. Returns (acknowledged, not acknowledged).
fn write_positions(
    shared: &Shared,
    preferred: u64,
    nodes: &[usize],
    total: Option<usize>,
    strict: bool,
) -> Result<(usize, usize)> {
    let mut conn: Option<(u64, Control)> = None;
    let (mut acked, mut unacked, mut done, mut cursor) = (0, 0, 0, 0);
    let batch_len = BATCH.min(nodes.len());
    let retry_until = Instant::now() + ELECTION;
    while total.is_none_or(|t| done < t) && !(total.is_none() && shared.stop.load(Ordering::SeqCst))
    {
        let n = total.map_or(batch_len, |t| batch_len.min(t - done));
        let mut sets = Vec::with_capacity(n);
        for _ in 0..n {
            let i = nodes[cursor % nodes.len()];
            cursor += 1;
            let seq = shared.seq.fetch_add(1, Ordering::SeqCst);
            sets.push((node_name(i), i as u32, seq));
        }
        let ops: Vec<Op> = sets
            .iter()
            .map(|(name, i, seq)| Op::set(name, "position", &format!("Vector2({i}, {seq})")))
            .collect();
        // (Re)connect when there is no connection or its server left the live set.
        let live_port = |id: u64| shared.live.lock().unwrap().get(&id).copied();
        if conn.as_ref().is_none_or(|(id, _)| live_port(*id).is_none()) {
            let target = if live_port(preferred).is_some() {
                Some(preferred)
            } else {
                shared.live.lock().unwrap().keys().next().copied()
            };
            let Some(id) = target else {
                bail!("no live server to write to")
            };
            let port = live_port(id).unwrap_or_default();
            conn = Some((id, Control::connect(port, Duration::from_secs(5))?));
        }
        let (id, control) = conn.as_mut().expect("connected above");
        let reply = control.batch(&ops);
        let mut model = shared.model.lock().unwrap();
        match reply {
            Ok(reply) => {
                let mut failed = Vec::new();
                for ((name, i, seq), r) in sets.iter().zip(&reply.results) {
                    model.record(name, &canonical_v2(*i, *seq), Some(r.ok));
                    if r.ok {
                        acked += 1;
                    } else {
                        unacked += 1;
                        failed.push(r.error.clone());
                    }
                }
                if strict && !failed.is_empty() {
                    if Instant::now() > retry_until {
                        bail!(
                            "server {id}: {} sets failed, e.g. {}",
                            failed.len(),
                            failed[0]
                        );
                    }
                    drop(model);
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
            Err(e) => {
                // The server died mid-batch (or the connection broke): outcomes unknown.
                for (name, i, seq) in &sets {
                    model.record(name, &canonical_v2(*i, *seq), None);
                }
                unacked += sets.len();
                let dead = *id;
                conn = None;
                if strict {
                    return Err(e.context(format!("writing through server {dead}")));
                }
            }
        }
        done += n;
    }
    Ok((acked, unacked))
}

/// One writer thread per owner group, all at once.
fn write_round(
    shared: &Shared,
    servers: usize,
    per_thread: Option<usize>,
    strict: bool,
) -> Result<(usize, usize)> {
    let groups: Vec<Vec<usize>> = (1..=servers as u64)
        .map(|s| {
            let model = shared.model.lock().unwrap();
            (0..NODES)
                .filter(|&i| owner(i, servers) == s)
                .filter(|&i| model.nodes.get(&node_name(i)).is_some_and(|n| n.alive))
                .collect()
        })
        .collect();
    let results: Vec<Result<(usize, usize)>> = thread::scope(|scope| {
        let handles: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(g, nodes)| {
                scope
                    .spawn(move || write_positions(shared, g as u64 + 1, nodes, per_thread, strict))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("writer thread panicked")))
            .collect()
    });
    let mut sum = (0, 0);
    for r in results {
        let (a, u) = r?;
        sum.0 += a;
        sum.1 += u;
    }
    Ok(sum)
}

/// Spawns the nodes (or despawns `selected` ones) from their owners' servers at once.
fn spawn_or_despawn(shared: &Shared, servers: usize, despawn: bool) -> Result<()> {
    thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (1..=servers as u64)
            .map(|s| {
                scope.spawn(move || -> Result<()> {
                    let port = shared.live.lock().unwrap()[&s];
                    let mut control = Control::connect(port, Duration::from_secs(5))?;
                    let mine: Vec<usize> = (0..NODES)
                        .filter(|&i| owner(i, servers) == s)
                        .filter(|&i| !despawn || i % (NODES / DESPAWNS) == 0)
                        .collect();
                    for chunk in mine.chunks(BATCH) {
                        let ops: Vec<Op> = chunk
                            .iter()
                            .map(|&i| {
                                if despawn {
                                    Op::despawn(&node_name(i))
                                } else {
                                    let scene = if i % 10 == 5 {
                                        "res://demo_world.tscn"
                                    } else {
                                        "Node2D"
                                    };
                                    let mut op = Op::spawn("", &node_name(i), scene);
                                    if let Op::Spawn { props, .. } = &mut op {
                                        props.push(("position".into(), format!("Vector2({i}, 0)")));
                                    }
                                    op
                                }
                            })
                            .collect();
                        let reply = control.batch(&ops).with_context(|| format!("server {s}"))?;
                        let mut model = shared.model.lock().unwrap();
                        for (&i, r) in chunk.iter().zip(&reply.results) {
                            ensure!(
                                r.ok,
                                "server {s}: {} of {} failed: {}",
                                if despawn { "despawn" } else { "spawn" },
                                node_name(i),
                                r.error
                            );
                            let n = model.nodes.entry(node_name(i)).or_default();
                            if despawn {
                                n.alive = false;
                            } else {
                                n.alive = true;
                                n.acknowledged = canonical_v2(i as u32, 0);
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|_| bail!("thread panicked"))?;
        }
        Ok(())
    })
}

fn converge_and_check(cluster: &Cluster, shared: &Shared, what: &str) -> Result<String> {
    let dump = cluster
        .wait_converged(CONVERGE)
        .with_context(|| what.to_owned())?;
    shared.model.lock().unwrap().check(&dump, what)?;
    Ok(dump)
}

/// Kills server `victim` with -9 half a second into a round of writes from every server, lets
/// the writes go on for 1.5 s more, and returns (acknowledged, not acknowledged).
fn kill_while_writing(
    cluster: &mut Cluster,
    shared: &Shared,
    servers: usize,
    victim: u64,
    role: &str,
    say: &dyn Fn(&str),
) -> Result<(usize, usize)> {
    let counts = thread::scope(|scope| -> Result<(usize, usize)> {
        let writers = scope.spawn(|| write_round(shared, servers, None, false));
        thread::sleep(Duration::from_millis(500));
        shared.live.lock().unwrap().remove(&victim);
        cluster.kill(victim)?;
        say(&format!("killed {role} {victim} (-9) while writing"));
        thread::sleep(Duration::from_millis(1500));
        shared.stop.store(true, Ordering::SeqCst);
        writers.join().unwrap_or_else(|_| bail!("writers panicked"))
    });
    shared.stop.store(false, Ordering::SeqCst);
    counts
}

fn follower_of(cluster: &Cluster, leader: u64) -> u64 {
    cluster
        .live_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower")
}

fn run(cluster: &mut Cluster, t0: Instant) -> Result<()> {
    let servers = cluster.servers.len();
    let say = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let leader = cluster.wait_leader(ELECTION)?;
    say(&format!("cluster ready, leader {leader}"));
    let shared = Shared {
        model: Mutex::new(Model::default()),
        live: Mutex::new(
            cluster
                .servers
                .iter()
                .map(|s| (s.id, s.control_port))
                .collect(),
        ),
        seq: AtomicU32::new(1),
        stop: AtomicBool::new(false),
    };

    spawn_or_despawn(&shared, servers, false)?;
    say(&format!("spawned {NODES} nodes from {servers} servers"));
    let (acked, _) = write_round(&shared, servers, Some(SETS.div_ceil(servers)), true)?;
    ensure!(acked >= SETS, "only {acked} of {SETS} sets acknowledged");
    say(&format!("set {acked} properties from {servers} servers"));
    spawn_or_despawn(&shared, servers, true)?;
    say(&format!("despawned {DESPAWNS} nodes"));
    let dump = converge_and_check(cluster, &shared, "after the concurrent writes")?;
    let count = parse_dump(&dump).len();
    ensure!(
        count == NODES - DESPAWNS,
        "converged dump has {count} nodes, expected {}",
        NODES - DESPAWNS
    );
    say(&format!(
        "all {servers} dumps identical: {count} nodes, every value as written"
    ));

    // A follower dies while writes go on, and comes back from its data directory.
    let leader = cluster.wait_leader(ELECTION)?;
    let victim = follower_of(cluster, leader);
    let (acked, unacked) = kill_while_writing(cluster, &shared, servers, victim, "follower", &say)?;
    say(&format!(
        "writes during the follower's death: {acked} acknowledged, {unacked} not"
    ));
    let (acked, _) = write_round(&shared, servers, Some(300), true)?;
    say(&format!("{acked} more writes through the two live servers"));
    cluster.restart(victim)?;
    shared
        .live
        .lock()
        .unwrap()
        .insert(victim, cluster.server(victim).control_port);
    converge_and_check(
        cluster,
        &shared,
        &format!("after restarting follower {victim}"),
    )?;
    say(&format!(
        "follower {victim} restarted from its data directory and caught up"
    ));

    // The leader dies while writes go on: a new one is elected and nothing acknowledged is lost.
    let leader = cluster.wait_leader(ELECTION)?;
    let (acked, unacked) = kill_while_writing(cluster, &shared, servers, leader, "leader", &say)?;
    say(&format!(
        "writes during the election: {acked} acknowledged, {unacked} not"
    ));
    let new_leader = cluster.wait_leader(ELECTION)?;
    ensure!(
        new_leader != leader,
        "leader {leader} was killed but is still named leader"
    );
    say(&format!("new leader {new_leader}"));
    let (acked, _) = write_round(&shared, servers, Some(300), true)?;
    say(&format!(
        "{acked} writes through the new leader and its follower"
    ));
    converge_and_check(cluster, &shared, "on the two survivors")?;
    cluster.restart(leader)?;
    shared
        .live
        .lock()
        .unwrap()
        .insert(leader, cluster.server(leader).control_port);
    converge_and_check(
        cluster,
        &shared,
        &format!("after restarting the old leader {leader}"),
    )?;
    say("old leader restarted and caught up; every acknowledged write is on all three servers");
    cluster.check_logs()
}

#[test]
fn three_servers_stay_identical() {
    let t0 = Instant::now();
    let mut cluster = match Cluster::start(ClusterConfig::default()) {
        Ok(c) => c,
        Err(e) => panic!("{e:#}"),
    };
    eprintln!(
        "servers started in {:.1}s, logs in {}",
        t0.elapsed().as_secs_f64(),
        cluster.dir().display()
    );
    let outcome = run(&mut cluster, t0);
    if let Err(e) = outcome {
        let tails = cluster.log_tails(40);
        let dir = cluster.keep_dir();
        cluster.stop();
        panic!("{e:#}\n{tails}\n(logs kept in {})", dir.display());
    }
    cluster.stop();
    eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
}
