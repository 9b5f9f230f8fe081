//! `cargo xtask demo`: N headless dedicated servers on loopback plus a driver that spawns,
//! changes and despawns nodes through every server at once, then a table of each server's
//! leader, term, commit index and node count, and whether their dumps agree.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::thread;
use std::time::{Duration, Instant};
use synctree_e2e::{Cluster, ClusterConfig, Control, Op};

const BATCH: usize = 100;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Number of servers.
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// Nodes spawned (spread over all servers).
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Property changes (spread over all servers).
    #[arg(long, default_value_t = 2000)]
    sets: usize,
    /// Build the extension with the release profile.
    #[arg(long)]
    release: bool,
    /// Run the servers with fsync off (--synctree-fsync=false).
    #[arg(long)]
    no_fsync: bool,
    /// Keep the servers' logs and data directories after the demo.
    #[arg(long)]
    keep_logs: bool,
}

/// Runs the demo; returns whether all dumps agreed.
pub fn demo(args: &DemoArgs) -> Result<bool> {
    ensure!(args.servers >= 1, "--servers must be at least 1");
    ensure!(args.nodes >= 1, "--nodes must be at least 1");
    let started = Instant::now();
    eprintln!("[1/5] building the extension...");
    crate::build::build(args.release)?;
    eprintln!("[2/5] finding Godot...");
    crate::godot::godot()?;
    eprintln!(
        "[3/5] starting {} headless servers (dev certificates, fsync {})...",
        args.servers,
        if args.no_fsync { "off" } else { "on" }
    );
    let mut cluster = Cluster::start(ClusterConfig {
        servers: args.servers,
        fsync: !args.no_fsync,
        keep_dir: args.keep_logs,
        ..ClusterConfig::default()
    })?;
    eprintln!(
        "      logs and data in {} (removed at the end unless --keep-logs or a failure)",
        cluster.dir().display()
    );
    for id in cluster.ids() {
        eprintln!("      server {id}: {}", cluster.command_line(id).join(" "));
    }
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    eprintln!(
        "      leader elected: server {leader} ({:.1} s since start)",
        started.elapsed().as_secs_f64()
    );

    eprintln!(
        "[4/5] driving: {} spawns, {} property changes, {} despawns from all servers at once...",
        args.nodes,
        args.sets,
        args.nodes / 10
    );
    let drive = drive(&cluster, args);
    let agreed = cluster.wait_converged(Duration::from_secs(30)).is_ok();

    eprintln!("[5/5] results");
    print_table(&cluster);
    let ok = match &drive {
        Ok(stats) => {
            println!(
                "writes: {} ok, {} failed in {:.2} s ({:.0} ops/s)",
                stats.ok,
                stats.failed,
                stats.elapsed.as_secs_f64(),
                (stats.ok + stats.failed) as f64 / stats.elapsed.as_secs_f64().max(1e-9)
            );
            stats.failed == 0
        }
        Err(e) => {
            println!("driver failed: {e:#}");
            false
        }
    };
    println!("dumps agree: {}", if agreed { "yes" } else { "NO" });
    let logs_ok = cluster.check_logs();
    if let Err(e) = &logs_ok {
        println!("log problems:\n{e:#}");
    }
    if !(agreed && ok && logs_ok.is_ok()) {
        let dir = cluster.keep_dir();
        println!("logs kept in {}", dir.display());
    }
    cluster.stop();
    Ok(agreed && ok && logs_ok.is_ok())
}

struct DriveStats {
    ok: usize,
    failed: usize,
    elapsed: Duration,
}

fn drive(cluster: &Cluster, args: &DemoArgs) -> Result<DriveStats> {
    let t0 = Instant::now();
    let ports: Vec<(u64, u16)> = cluster
        .servers
        .iter()
        .map(|s| (s.id, s.control_port))
        .collect();
    let servers = ports.len();
    let results: Vec<Result<(usize, usize)>> = thread::scope(|scope| {
        let handles: Vec<_> = ports
            .iter()
            .map(|&(id, port)| scope.spawn(move || drive_one(id, port, servers, args)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("driver thread panicked")))
            })
            .collect()
    });
    let mut stats = DriveStats {
        ok: 0,
        failed: 0,
        elapsed: t0.elapsed(),
    };
    for r in results {
        let (ok, failed) = r?;
        stats.ok += ok;
        stats.failed += failed;
    }
    Ok(stats)
}

/// The share of server `id`: nodes `i` with `i % servers == id - 1`.
fn drive_one(id: u64, port: u16, servers: usize, args: &DemoArgs) -> Result<(usize, usize)> {
    let mut control = Control::connect(port, Duration::from_secs(5))?;
    let mine: Vec<usize> = (0..args.nodes)
        .filter(|i| i % servers == (id - 1) as usize)
        .collect();
    let (mut ok, mut failed) = (0, 0);
    let mut run = |control: &mut Control, ops: Vec<Op>, what: &str| -> Result<()> {
        for chunk in ops.chunks(BATCH) {
            let reply = control
                .batch(chunk)
                .with_context(|| format!("server {id}: {what}"))?;
            for r in &reply.results {
                if r.ok {
                    ok += 1;
                } else {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("      server {id}: {what} failed: {}", r.error);
                    }
                }
            }
        }
        Ok(())
    };

    let t = Instant::now();
    let spawns: Vec<Op> = mine
        .iter()
        .map(|&i| {
            let scene = if i.is_multiple_of(2) {
                "res://demo_world.tscn"
            } else {
                "Node2D"
            };
            let mut op = Op::spawn("", &name(i), scene);
            if let Op::Spawn { props, .. } = &mut op {
                props.push((
                    "position".into(),
                    format!("Vector2({}, {})", i % 20 * 50, i / 20 * 50),
                ));
            }
            op
        })
        .collect();
    run(&mut control, spawns, "spawn")?;
    eprintln!(
        "      server {id}: spawned {} nodes in {:.0} ms",
        mine.len(),
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let share = args.sets / servers + usize::from((id as usize) <= args.sets % servers);
    let mut sets = Vec::with_capacity(share);
    if !mine.is_empty() {
        for k in 0..share {
            let i = mine[k % mine.len()];
            let round = k / mine.len();
            let op = match (i.is_multiple_of(2), round % 3) {
                (true, 0) => Op::set(
                    &name(i),
                    "health",
                    &format!("{}", 100 - (round as i64 % 100)),
                ),
                (true, 1) => Op::set(
                    &name(i),
                    "color",
                    &format!("Color({}, 0.5, 0.25, 1)", (k % 4) as f32 / 4.0),
                ),
                (false, 1) => Op::set(&name(i), "rotation", &format!("{}", (k % 8) as f32 * 0.25)),
                _ => Op::set(
                    &name(i),
                    "position",
                    &format!("Vector2({}, {})", k % 1000, round),
                ),
            };
            sets.push(op);
        }
    }
    // Each batch touches distinct nodes, so its ops commute and the result is deterministic.
    let per_batch = BATCH.min(mine.len().max(1));
    for chunk in sets.chunks(per_batch) {
        run(&mut control, chunk.to_vec(), "set")?;
    }
    eprintln!(
        "      server {id}: {} property changes in {:.0} ms",
        sets.len(),
        t.elapsed().as_secs_f64() * 1e3
    );

    let despawns: Vec<Op> = mine
        .iter()
        .filter(|&&i| i.is_multiple_of(10))
        .map(|&i| Op::despawn(&name(i)))
        .collect();
    let n = despawns.len();
    run(&mut control, despawns, "despawn")?;
    eprintln!("      server {id}: despawned {n} nodes");
    Ok((ok, failed))
}

fn name(i: usize) -> String {
    format!("Unit{i:04}")
}

fn print_table(cluster: &Cluster) {
    let dumps = cluster.dumps();
    let hashes: Vec<Option<u64>> = dumps
        .iter()
        .map(|(_, d)| {
            d.as_ref().ok().map(|d| {
                let mut h = DefaultHasher::new();
                d.hash(&mut h);
                h.finish()
            })
        })
        .collect();
    // The most common dump is the reference.
    let reference = hashes
        .iter()
        .flatten()
        .max_by_key(|h| hashes.iter().filter(|x| x.as_ref() == Some(h)).count())
        .copied();
    println!();
    println!(
        "{:>6} {:>6} {:>5} {:>8} {:>8} {:>6} {:>10} {:>8}",
        "server", "leader", "term", "commit", "applied", "nodes", "dump", "agrees"
    );
    for ((id, status), hash) in cluster.statuses().into_iter().zip(hashes) {
        let get = |s: &Value, k: &str| {
            s.get(k)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into())
        };
        match status {
            Ok(s) => println!(
                "{:>6} {:>6} {:>5} {:>8} {:>8} {:>6} {:>10} {:>8}",
                id,
                get(&s, "leader"),
                get(&s, "term"),
                get(&s, "commit"),
                get(&s, "applied"),
                get(&s, "nodes"),
                hash.map(|h| format!("{:08x}", h >> 32))
                    .unwrap_or_else(|| "?".into()),
                if hash.is_some() && hash == reference {
                    "yes"
                } else {
                    "NO"
                }
            ),
            Err(e) => println!("{id:>6} unreachable: {e:#}"),
        }
    }
    println!();
}
