//! `cargo xtask bench`: the speed and memory figures of the README, measured on a real
//! three-server cluster of headless Godot servers over QUIC on loopback, fsync on and off.
//!
//! Every figure comes from one run on this machine; ratios (synctree vs plain Godot calls)
//! are measured in the same run. Output: a Markdown table on stdout and in
//! `target/bench.md`.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use synctree_e2e::{Cluster, ClusterConfig, Control, Op, Who};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer samples (a smoke run of the benchmark itself).
    #[arg(long)]
    quick: bool,
    /// Build the extension with the dev profile instead of release.
    #[arg(long)]
    debug: bool,
    /// Only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Only the cluster with fsync on, or off (default: both).
    #[arg(long)]
    fsync: Option<bool>,
    /// Batches the leader keeps in consensus at once (`--synctree-pipeline`; default: the
    /// servers' own setting).
    #[arg(long)]
    pipeline: Option<usize>,
    /// Updates of the throughput run (default 100 000, 20 000 with --quick).
    #[arg(long)]
    ops: Option<usize>,
}

/// The parts of a benchmark run, for `--only`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Latency,
    Throughput,
    Spawn,
    Apply,
    /// Game clients: a client's write seen by a client on another server.
    Clients,
    /// 200 game clients (Rust, the client protocol) at 20 updates/s each.
    Load,
    /// Bytes on the wire per property update, client links and server links, beside
    /// SceneMultiplayer over ENet.
    Wire,
}

const SCENE: &str = "res://demo_world.tscn";
const PROP: &str = "health";

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One row of the latency table: p50, p99 (ms) and ops/s.
/// A table row; `rate` NaN: no throughput figure.
fn latency_row(s: &mut String, what: &str, who: &str, lat: &[f64], rate: f64) -> Result<()> {
    let rate = if rate.is_nan() {
        String::new()
    } else {
        format!("{rate:.0} ops/s")
    };
    writeln!(
        s,
        "| {what} | {who} | {:.2} ms | {:.2} ms | {rate} |",
        percentile(lat, 0.5),
        percentile(lat, 0.99),
    )?;
    Ok(())
}

/// CPU time a process used so far, threads that ended included (`/proc/PID/stat` utime +
/// stime, in the kernel's 100 Hz ticks).
fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

fn rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU time used so far by a process's main thread and by all its live threads, in seconds
/// (`/proc/PID/task/*/schedstat`, nanoseconds on a CPU).
fn cpu_secs(pid: Option<u32>) -> (f64, f64) {
    let Some(pid) = pid else {
        return (f64::NAN, f64::NAN);
    };
    let on_cpu = |task: &std::path::Path| {
        std::fs::read_to_string(task.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map(|ns| ns / 1e9)
    };
    let tasks = std::path::PathBuf::from(format!("/proc/{pid}/task"));
    let main = on_cpu(&tasks.join(pid.to_string())).unwrap_or(f64::NAN);
    let all = std::fs::read_dir(&tasks)
        .map(|d| d.flatten().filter_map(|t| on_cpu(&t.path())).sum())
        .unwrap_or(f64::NAN);
    (main, all)
}

fn ok(reply: Value, what: &str) -> Result<Value> {
    ensure!(reply["ok"] == json!(true), "{what} failed: {reply}");
    Ok(reply)
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

/// An unobserved throughput run: updates/s, CPU per update of each server as (main thread,
/// whole process) in microseconds, log entries it took.
struct Throughput {
    rate: f64,
    cpu: Vec<(f64, f64)>,
    entries: u64,
}

struct Bench {
    cluster: Cluster,
    /// Synced nodes after the setup spawns (spawn rounds despawn back to this).
    setup_nodes: u64,
    ctl: HashMap<Who, Control>,
    next_value: i64,
}

impl Bench {
    fn new(cluster: Cluster, ctl: HashMap<Who, Control>, setup_nodes: u64) -> Bench {
        Bench {
            cluster,
            ctl,
            next_value: 1,
            setup_nodes,
        }
    }

    fn req(&mut self, who: impl Into<Who>, request: Value) -> Result<Value> {
        let what = request["cmd"].as_str().unwrap_or("request").to_owned();
        let ctl = self
            .ctl
            .get_mut(&who.into())
            .context("no control connection")?;
        ok(ctl.request(&request)?, &what)
    }

    /// `request` on every server.
    fn all(&mut self, request: Value) -> Result<Vec<Value>> {
        let ids: Vec<Who> = self.cluster.ids().into_iter().map(Who::Server).collect();
        self.each(&ids, request)
    }

    fn each(&mut self, who: &[Who], request: Value) -> Result<Vec<Value>> {
        who.iter().map(|w| self.req(*w, request.clone())).collect()
    }

    /// Sets B.health to `start`, `start + 1`, ... `count` times on `on` with `inflight`
    /// outstanding (the bench.gd `set_load` command); every set must succeed.
    fn set_load(
        &mut self,
        on: Who,
        path: &str,
        start: i64,
        count: usize,
        inflight: usize,
    ) -> Result<Value> {
        let load = self.req(
            on,
            json!({"cmd": "set_load", "path": path, "property": PROP, "start": start,
                   "count": count, "inflight": inflight}),
        )?;
        ensure!(
            load["failed"] == json!(0),
            "set_load: {} failed: {}",
            load["failed"],
            load["first_error"]
        );
        Ok(load)
    }

    /// Latency call -> applied on all live trees, in ms, for `count` sets of B with
    /// `inflight` outstanding, issued on server `on`. Returns (sorted latencies, ops/s on the
    /// issuer).
    fn set_latency(&mut self, on: u64, count: usize, inflight: usize) -> Result<(Vec<f64>, f64)> {
        let servers: Vec<Who> = self.cluster.ids().into_iter().map(Who::Server).collect();
        self.latency(Who::Server(on), &servers, "B", count, inflight)
    }

    /// Latency call on `on` -> applied on every one of `watchers`, in ms, for `count` sets
    /// of `path` with `inflight` outstanding. Returns (sorted latencies, ops/s on `on`).
    fn latency(
        &mut self,
        on: Who,
        watchers: &[Who],
        path: &str,
        count: usize,
        inflight: usize,
    ) -> Result<(Vec<f64>, f64)> {
        let start = self.next_value;
        self.next_value += count as i64;
        self.each(
            watchers,
            json!({"cmd": "watch_property", "path": path, "property": PROP}),
        )?;
        let load = self.set_load(on, path, start, count, inflight)?;
        let calls = ints(&load["calls_usec"]);
        // The others may still be applying the last values.
        let deadline = Instant::now() + Duration::from_secs(30);
        let last = start + count as i64 - 1;
        let applied: Vec<HashMap<i64, i64>> = loop {
            let results = self.each(watchers, json!({"cmd": "watch_result", "stop": false}))?;
            let maps: Vec<HashMap<i64, i64>> = results
                .iter()
                .map(|r| {
                    ints(&r["values"])
                        .into_iter()
                        .zip(ints(&r["usec"]))
                        .collect()
                })
                .collect();
            if maps.iter().all(|m| m.contains_key(&last)) || Instant::now() > deadline {
                self.each(watchers, json!({"cmd": "watch_result"}))?;
                break maps;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut lat = Vec::with_capacity(count);
        for (i, call) in calls.iter().enumerate() {
            let v = start + i as i64;
            let last = applied
                .iter()
                .map(|m| m.get(&v).copied())
                .collect::<Option<Vec<_>>>();
            if let Some(times) = last {
                lat.push((times.into_iter().max().unwrap_or(0) - call) as f64 / 1000.0);
            }
        }
        ensure!(
            lat.len() * 100 >= count * 99,
            "only {} of {count} values were seen applied everywhere",
            lat.len()
        );
        lat.sort_by(f64::total_cmp);
        let secs = (load["end_usec"].as_i64().unwrap_or(0)
            - load["start_usec"].as_i64().unwrap_or(0)) as f64
            / 1e6;
        Ok((lat, count as f64 / secs.max(1e-9)))
    }

    /// `count` sets with 256 in flight on `on`, nothing watching each update: returns
    /// (updates/s from the first call until the last value is on every live tree, CPU per
    /// update of each server as (main thread, whole process) in microseconds).
    fn set_throughput(&mut self, on: u64, count: usize) -> Result<Throughput> {
        let start = self.next_value;
        self.next_value += count as i64;
        let pids: Vec<Option<u32>> = self
            .cluster
            .ids()
            .iter()
            .map(|id| self.cluster.pid(*id))
            .collect();
        let before: Vec<(f64, f64)> = pids.iter().map(|p| cpu_secs(*p)).collect();
        let first_index = self.req(on, json!({"cmd": "status"}))?["status"]["commit"]
            .as_u64()
            .unwrap_or(0);
        let load = self.set_load(Who::Server(on), "B", start, count, 256)?;
        let last = start + count as i64 - 1;
        let seen =
            self.all(json!({"cmd": "wait_value", "path": "B", "property": PROP, "value": last}))?;
        let after: Vec<(f64, f64)> = pids.iter().map(|p| cpu_secs(*p)).collect();
        let entries = self.req(on, json!({"cmd": "status"}))?["status"]["commit"]
            .as_u64()
            .unwrap_or(0)
            - first_index;
        let end = seen
            .iter()
            .filter_map(|r| r["usec"].as_i64())
            .chain(load["end_usec"].as_i64())
            .max()
            .unwrap_or(0);
        let secs = (end - load["start_usec"].as_i64().unwrap_or(0)) as f64 / 1e6;
        let per_update = before
            .iter()
            .zip(&after)
            .map(|(b, a)| {
                (
                    (a.0 - b.0) * 1e6 / count as f64,
                    (a.1 - b.1) * 1e6 / count as f64,
                )
            })
            .collect();
        Ok(Throughput {
            rate: count as f64 / secs.max(1e-9),
            cpu: per_update,
            entries,
        })
    }

    /// A measure of synctree's apply path beside its plain-Godot counterpart, in one request:
    /// (`apply_usec`, the field `baseline`).
    fn paired(&mut self, on: u64, request: Value, baseline: &str) -> Result<(f64, f64)> {
        let r = self.req(on, request)?;
        let field = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        Ok((field("apply_usec"), field(baseline)))
    }

    /// Main-thread time each server has spent applying committed changes, in ms.
    fn apply_ms(&mut self) -> Result<Vec<f64>> {
        Ok(self
            .all(json!({"cmd": "status"}))?
            .iter()
            .map(|r| r["status"]["apply_usec"].as_f64().unwrap_or(f64::NAN) / 1000.0)
            .collect())
    }

    /// ms from issuing `n` spawns in one frame on `on` until every live tree holds all `n`,
    /// and the most main-thread time a server spent applying them (ms).
    fn spawn_convergence(&mut self, on: u64, n: usize, round: usize) -> Result<(f64, f64)> {
        let servers: Vec<Who> = self.cluster.ids().into_iter().map(Who::Server).collect();
        self.spawn_convergence_to(on, &servers, n, round)
    }

    /// `n` spawns in one frame on server `on` until every one of `watchers` holds them:
    /// (ms, the slowest server's main-thread apply time in ms).
    fn spawn_convergence_to(
        &mut self,
        on: u64,
        watchers: &[Who],
        n: usize,
        round: usize,
    ) -> Result<(f64, f64)> {
        let prefix = format!("S{round}_");
        let applied_before = self.apply_ms()?;
        self.each(
            watchers,
            json!({"cmd": "watch_spawns", "prefix": prefix, "count": n}),
        )?;
        let load = self.req(
            on,
            json!({"cmd": "spawn_load", "prefix": prefix, "count": n, "scene": SCENE}),
        )?;
        ensure!(
            load["failed"] == json!(0),
            "spawn_load: {} failed",
            load["failed"]
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = loop {
            let r = self.each(watchers, json!({"cmd": "watch_spawns_result"}))?;
            if r.iter().all(|x| x["seen"].as_u64() == Some(n as u64)) {
                break r
                    .iter()
                    .map(|x| x["done_usec"].as_i64().unwrap_or(0))
                    .max()
                    .unwrap_or(0);
            }
            if Instant::now() > deadline {
                bail!("spawns of {n} did not converge: {r:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let apply = self
            .apply_ms()?
            .iter()
            .zip(&applied_before)
            .map(|(a, b)| a - b)
            .fold(0.0, f64::max);
        let ops: Vec<Op> = (0..n)
            .map(|i| Op::despawn(&format!("{prefix}{i}")))
            .collect();
        self.ctl
            .get_mut(&Who::Server(on))
            .context("control")?
            .batch(&ops)?;
        // Every server has applied the despawns before the next measurement starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .all(json!({"cmd": "status"}))?
            .iter()
            .any(|r| r["status"]["nodes"].as_u64().unwrap_or(0) > self.setup_nodes)
        {
            ensure!(
                Instant::now() < deadline,
                "despawns of {n} not applied everywhere"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((
            (done - load["start_usec"].as_i64().unwrap_or(0)) as f64 / 1000.0,
            apply,
        ))
    }
}

pub fn bench(args: &BenchArgs) -> Result<bool> {
    eprintln!(
        "[bench] building the extension ({})...",
        if args.debug { "dev" } else { "release" }
    );
    crate::build::build(!args.debug)?;
    crate::godot::godot()?;
    let mut out = String::new();
    writeln!(
        out,
        "Measured by `cargo xtask bench` on {} ({} cores), {}.\n",
        machine(),
        num_cpus(),
        today()
    )?;
    for fsync in [true, false] {
        if args.fsync.is_some_and(|f| f != fsync) {
            continue;
        }
        let only_clients = args
            .only
            .iter()
            .all(|p| matches!(p, Part::Clients | Part::Load | Part::Wire))
            && !args.only.is_empty();
        if !only_clients {
            eprintln!(
                "[bench] fsync {}: starting three servers...",
                if fsync { "on" } else { "off" }
            );
            let section = run_cluster(fsync, args)?;
            out.push_str(&section);
        }
        if fsync && (args.only.is_empty() || args.only.contains(&Part::Clients)) {
            eprintln!("[bench] game clients: three servers and two clients...");
            out.push_str(&run_clients(args)?);
        }
        if fsync && (args.only.is_empty() || args.only.contains(&Part::Wire)) {
            eprintln!("[bench] bytes on the wire per property update...");
            out.push_str(&run_wire(args)?);
        }
        if fsync && (args.only.is_empty() || args.only.contains(&Part::Load)) {
            out.push_str(&run_load(args)?);
        }
    }
    println!("{out}");
    let path = crate::repo_root().join("target").join("bench.md");
    std::fs::write(&path, &out)?;
    eprintln!("[bench] written to {}", path.display());
    Ok(true)
}

/// The demo scene without the GDScript handlers that record multiplayer signals for the
/// tests (a handler per spawn and per spawner; the SceneMultiplayer baseline has none).
fn bench_config() -> ClusterConfig {
    ClusterConfig {
        all_args: vec!["--demo-no-event-log".into()],
        ..ClusterConfig::default()
    }
}

fn run_cluster(fsync: bool, args: &BenchArgs) -> Result<String> {
    let quick = args.quick;
    let part = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let cluster = Cluster::start(ClusterConfig {
        fsync,
        server_args: args
            .pipeline
            .map(|d| {
                (1..=3)
                    .map(|id| (id, format!("--synctree-pipeline={d}")))
                    .collect()
            })
            .unwrap_or_default(),
        ..bench_config()
    })?;
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|i| *i != leader)
        .context("follower")?;
    let ctl = cluster
        .ids()
        .into_iter()
        .map(|id| Ok((Who::Server(id), cluster.control(id)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let mut b = Bench::new(cluster, ctl, 2);
    let idle: Vec<f64> = b
        .cluster
        .ids()
        .iter()
        .map(|id| rss_mib(b.cluster.pid(*id)))
        .collect();
    let setup = [Op::spawn("", "B", SCENE), Op::spawn("", "Scratch", SCENE)];
    let reply = b
        .ctl
        .get_mut(&Who::Server(leader))
        .context("control")?
        .batch(&setup)?;
    ensure!(
        reply.results.iter().all(|r| r.ok),
        "setup spawns failed: {:?}",
        reply.results
    );

    let mut s = String::new();
    let label = if fsync {
        "fsync on"
    } else {
        "fsync OFF (a crash can lose acknowledged writes)"
    };
    writeln!(s, "### Three servers, one shard, {label}\n")?;
    writeln!(s, "| measure | issued on | p50 | p99 | throughput |")?;
    writeln!(s, "| --- | --- | --- | --- | --- |")?;
    let scale = if quick { 1 } else { 4 };
    for (who, id) in [("leader", leader), ("follower", follower)] {
        for (inflight, count) in [(1usize, 250 * scale), (64, 2500 * scale)] {
            if !part(Part::Latency) {
                continue;
            }
            eprintln!("[bench]   set_synced latency, {inflight} in flight on the {who}...");
            let (lat, rate) = b.set_latency(id, count, inflight)?;
            let what = format!(
                "`set_synced` call -> applied on all 3 live trees, {inflight} in flight ({count} ops)"
            );
            latency_row(&mut s, &what, who, &lat, rate)?;
        }
    }
    let total = args.ops.unwrap_or(if quick { 20_000 } else { 100_000 });
    let mut cpu_note = String::new();
    if part(Part::Throughput) {
        eprintln!("[bench]   throughput, 256 in flight, {total} ops on the leader...");
        let (lat, rate) = b.set_latency(leader, total, 256)?;
        let what = format!(
            "`set_synced` 256 in flight ({total} ops), every update timed by a GDScript signal handler on each server"
        );
        latency_row(&mut s, &what, "leader", &lat, rate)?;
        eprintln!("[bench]   throughput, 256 in flight, {total} ops on the leader, unobserved...");
        let Throughput { rate, cpu, entries } = b.set_throughput(leader, total)?;
        writeln!(
            s,
            "| `set_synced` throughput, 256 in flight ({total} ops), first call -> last value on all 3 live trees | leader | | | **{rate:.0} ops/s** |",
        )?;
        let ids = b.cluster.ids();
        let per: Vec<String> = ids
            .iter()
            .zip(&cpu)
            .map(|(id, (main, all))| {
                let role = if *id == leader {
                    " (leader, issuing)"
                } else {
                    ""
                };
                format!("server {id}{role} {all:.1} us ({main:.1} on the main thread)")
            })
            .collect();
        let sum: f64 = cpu.iter().map(|c| c.1).sum();
        write!(
            cpu_note,
            "Unobserved throughput run: {entries} log entries ({:.0} updates per entry); CPU per update: {}; {sum:.1} us in all, on {} cores.\n\n",
            total as f64 / entries.max(1) as f64,
            per.join(", "),
            num_cpus()
        )?;
    }
    let after: Vec<f64> = b
        .cluster
        .ids()
        .iter()
        .map(|id| rss_mib(b.cluster.pid(*id)))
        .collect();
    writeln!(s)?;
    s.push_str(&cpu_note);

    if part(Part::Spawn) {
        writeln!(s, "| spawn N in one frame -> all 3 live trees hold N | synctree | plain `add_child` of N (floor) | ratio | main-thread apply of the N spawns, slowest server | its ratio to the floor |")?;
        writeln!(s, "| --- | --- | --- | --- | --- | --- |")?;
        for (round, n) in [10usize, 100, 1000].into_iter().enumerate() {
            eprintln!("[bench]   spawn convergence of {n}...");
            let mut conv = Vec::new();
            let mut floor = Vec::new();
            let mut apply = Vec::new();
            for rep in 0..if quick { 1 } else { 3 } {
                let (c, a) = b.spawn_convergence(leader, n, round * 10 + rep)?;
                conv.push(c);
                apply.push(a);
                let base = b.req(
                    leader,
                    json!({"cmd": "add_child_baseline", "count": n, "scene": SCENE}),
                )?;
                floor.push(base["usec"].as_f64().unwrap_or(f64::NAN) / 1000.0);
            }
            conv.sort_by(f64::total_cmp);
            floor.sort_by(f64::total_cmp);
            apply.sort_by(f64::total_cmp);
            let (c, f, a) = (
                percentile(&conv, 0.5),
                percentile(&floor, 0.5),
                percentile(&apply, 0.5),
            );
            writeln!(
                s,
                "| N = {n} (median of {}) | {c:.1} ms | {f:.1} ms | {:.2}x | {a:.1} ms | {:.2}x |",
                conv.len(),
                c / f,
                a / f
            )?;
        }
        writeln!(s)?;
    }

    if part(Part::Apply) {
        eprintln!("[bench]   main-thread apply cost...");
        let (apply, raw) = b.paired(
            leader,
            json!({"cmd": "apply_cost", "path": "Scratch", "property": PROP, "count": 20_000, "rounds": 10}),
            "raw_set_usec",
        )?;
        writeln!(
            s,
            "Main-thread cost of applying one committed property event (the frame's own path): {:.3} us, beside {:.3} us for a raw `Object.set` ({:.2}x; fastest of 10 alternating rounds of 20 000 each).\n",
            apply / 2e4,
            raw / 2e4,
            apply / raw
        )?;
        eprintln!("[bench]   main-thread spawn apply cost...");
        let (apply, plain) = b.paired(
            leader,
            json!({"cmd": "spawn_cost", "scene": SCENE, "count": 1000, "rounds": 10, "parent": "Scratch"}),
            "add_child_usec",
        )?;
        writeln!(
            s,
            "Main-thread cost of applying 1000 committed spawns (the frame's own path, under a node no MultiplayerSpawner watches): {:.2} ms, beside {:.2} ms for a plain instantiate + name + `add_child` of 1000 ({:.2}x; fastest of 10 alternating rounds).\n",
            apply / 1e3,
            plain / 1e3,
            apply / plain
        )?;
    }
    writeln!(
        s,
        "Resident memory per server: idle {}; after {} committed ops {} (MiB; snapshots every 10 000 entries keep the log bounded).\n",
        fmt_list(&idle),
        b.next_value - 1,
        fmt_list(&after)
    )?;
    b.cluster.check_logs()?;
    Ok(s)
}

/// Three servers (fsync on) and two headless Godot game clients, client 1 on server 2 and
/// client 2 on server 3: a client's `set_synced` until the other client applied it.
/// Three servers, client 1 on server 2 and client 2 on server 3, rate limits out of the way
/// (measuring the path, not the per-client limit).
fn two_clients_config() -> ClusterConfig {
    ClusterConfig {
        clients: vec![2, 3],
        spawnable: vec![SCENE.into()],
        server_args: synctree_e2e::client_limits(3, 1_000_000, 1_000_000),
        ..bench_config()
    }
}

/// Controls of the cluster's servers and two clients, and node CB owned by client 1 (a
/// client may change only what it owns) on every replica.
fn two_clients_bench(cluster: Cluster) -> Result<Bench> {
    let mut ctl = [1, 2]
        .into_iter()
        .map(|n| Ok((Who::Client(n), cluster.client_control(n)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    for id in cluster.ids() {
        ctl.insert(Who::Server(id), cluster.control(id)?);
    }
    let mut b = Bench::new(cluster, ctl, 1);
    let reply = b
        .ctl
        .get_mut(&Who::Client(1))
        .context("control")?
        .batch(&[Op::spawn("", "CB", SCENE)])?;
    ensure!(reply.results.iter().all(|r| r.ok), "{:?}", reply.results);
    b.cluster.wait_all_converged(Duration::from_secs(30))?;
    Ok(b)
}

fn run_clients(args: &BenchArgs) -> Result<String> {
    let scale = if args.quick { 1 } else { 4 };
    let cluster = Cluster::start(two_clients_config())?;
    let leader = cluster.wait_leader(Duration::from_secs(30))?;
    let mut b = two_clients_bench(cluster)?;
    let mut s = String::new();
    writeln!(
        s,
        "### Game clients: three servers (fsync on), two headless Godot clients
"
    )?;
    writeln!(s, "| measure | issued on | p50 | p99 | throughput |")?;
    writeln!(s, "| --- | --- | --- | --- | --- |")?;
    eprintln!("[bench]   built-in SceneMultiplayer over ENet, client -> client...");
    let count = 250 * scale;
    let lat = scene_multiplayer_latency(count)?;
    latency_row(
        &mut s,
        &format!("Godot's SceneMultiplayer over ENet (one server, two clients): a MultiplayerSynchronizer property set on client 1 -> applied on client 2, one change per 10 ms ({count} changes)"),
        "client 1",
        &lat,
        f64::NAN,
    )?;
    for (inflight, count) in [(1usize, 250 * scale), (64, 2500 * scale)] {
        eprintln!("[bench]   client -> client latency, {inflight} in flight...");
        let (lat, rate) = b.latency(Who::Client(1), &[Who::Client(2)], "CB", count, inflight)?;
        let what = format!(
            "`set_synced` on client 1 (server 2) -> applied on client 2 (server 3), committed by a quorum, {inflight} in flight ({count} ops)"
        );
        latency_row(&mut s, &what, "client 1", &lat, rate)?;
    }
    writeln!(s)?;
    writeln!(s, "| spawn N in one frame on the leader -> both clients hold N | synctree | SceneMultiplayer (ENet, MultiplayerSpawner) | plain `add_child` of N on a client (floor) |")?;
    writeln!(s, "| --- | --- | --- | --- |")?;
    let clients = [Who::Client(1), Who::Client(2)];
    for (round, n) in [10usize, 100, 1000].into_iter().enumerate() {
        eprintln!("[bench]   spawn convergence of {n} on the clients...");
        let (mut ours, mut theirs, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..if args.quick { 1 } else { 3 } {
            ours.push(
                b.spawn_convergence_to(leader, &clients, n, 100 + round * 10 + rep)?
                    .0,
            );
            theirs.push(scene_multiplayer_spawn(n)?);
            let base = b.req(
                Who::Client(1),
                json!({"cmd": "add_child_baseline", "count": n, "scene": SCENE}),
            )?;
            floor.push(base["usec"].as_f64().unwrap_or(f64::NAN) / 1000.0);
        }
        for v in [&mut ours, &mut theirs, &mut floor] {
            v.sort_by(f64::total_cmp);
        }
        writeln!(
            s,
            "| N = {n} (median of {}) | {:.1} ms | {:.1} ms | {:.1} ms |",
            ours.len(),
            percentile(&ours, 0.5),
            percentile(&theirs, 0.5),
            percentile(&floor, 0.5)
        )?;
    }
    writeln!(s)?;
    b.cluster.check_logs()?;
    Ok(s)
}

/// Many game clients (Rust, the client protocol) on three Godot servers (fsync on), each
/// owning a node and setting one of its properties 20 times a second: each write's latency
/// from the call to its committed outcome at the client, and each server's CPU.
fn run_load(args: &BenchArgs) -> Result<String> {
    let (clients, secs) = if args.quick {
        (50usize, 5u64)
    } else {
        (200, 20)
    };
    let tokens: Vec<String> = (0..clients).map(|i| format!("load-{i}-token")).collect();
    eprintln!("[bench] load: three servers, {clients} clients at 20 updates/s for {secs} s...");
    let cluster = Cluster::start(ClusterConfig {
        extra_tokens: tokens.clone(),
        spawnable: vec![SCENE.into()],
        ..bench_config()
    })?;
    cluster.wait_leader(Duration::from_secs(30))?;
    let ca = cluster.dir().join("certs").join("ca.pem");
    let ports: Vec<(u64, std::net::SocketAddr)> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, ([127, 0, 0, 1], cluster.server(id).client_port).into()))
        .collect();
    let pids: Vec<Option<u32>> = cluster.ids().iter().map(|id| cluster.pid(*id)).collect();
    let me = std::process::id();
    let mut before: Option<(Vec<f64>, f64, Instant)> = None;
    let plan = crate::load::LoadPlan {
        servers: &ports,
        ca,
        tokens: &tokens,
        scene: SCENE,
        property: PROP,
        tick: Duration::from_millis(50),
        duration: Duration::from_secs(secs),
    };
    let result = crate::load::run(plan, || {
        before = Some((
            pids.iter().map(|p| cpu_secs(*p).1).collect(),
            process_cpu_secs(me),
            Instant::now(),
        ))
    })?;
    let (cpu_before, own_before, started) = before.context("the load never started")?;
    let wall = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| (cpu_secs(*p).1 - before) / wall * 100.0)
        .collect();
    let own = (process_cpu_secs(me) - own_before) / wall * 100.0;
    let mut lat = result.latencies;
    lat.sort_by(f64::total_cmp);
    let mut s = String::new();
    writeln!(
        s,
        "### Load: {clients} game clients (Rust, client protocol) on three servers (fsync on), 20 updates/s each, {secs} s
"
    )?;
    writeln!(
        s,
        "{} writes completed ({} failed, {} unanswered at the end): call -> committed outcome at the client p50 {:.2} ms, p99 {:.2} ms; server CPU {} % of one core; the load generator (same 2 cores; one thread; it reads past the entries each client is sent instead of applying them) {own:.0} %.
",
        lat.len(),
        result.failed,
        result.unanswered,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        cpu.iter().map(|c| format!("{c:.0}")).collect::<Vec<_>>().join(" / ")
    )?;
    cluster.check_logs()?;
    Ok(s)
}

/// What one wire measurement counted: the four client links (writer up / down, reader up /
/// down), the links between the servers, and how many updates went through.
struct Wire {
    links: [synctree_e2e::Traffic; 4],
    servers: synctree_e2e::Traffic,
    updates: usize,
}

/// Client 1 sets PROP of CB to `first`, `first + 1`, ... every 10 ms (`count` changes,
/// strong or eventual) and client 2 applies each; the relays count every datagram from the
/// first change until client 2 holds the last value.
fn wire_ours(b: &mut Bench, first: i64, count: usize, eventual: bool) -> Result<Wire> {
    use synctree_e2e::{client_link, Traffic};
    b.req(
        Who::Client(2),
        json!({"cmd": "watch_property", "path": "CB", "property": PROP, "poll": eventual}),
    )?;
    let load = b.req(
        Who::Client(1),
        json!({"cmd": "set_load", "path": "CB", "property": PROP, "start": first,
               "count": count, "inflight": 64, "interval_usec": 10_000, "eventual": eventual}),
    )?;
    ensure!(
        load["failed"] == json!(0),
        "set_load: {} failed: {}",
        load["failed"],
        load["first_error"]
    );
    let since = load["start_usec"].as_i64().unwrap_or(0);
    let last = first + count as i64 - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    let until = loop {
        let r = b.req(
            Who::Client(2),
            json!({"cmd": "watch_result", "stop": false}),
        )?;
        let values = ints(&r["values"]);
        if let Some(i) = values.iter().position(|v| *v == last) {
            break ints(&r["usec"])[i];
        }
        ensure!(
            Instant::now() < deadline,
            "client 2 never applied value {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    b.req(Who::Client(2), json!({"cmd": "watch_result"}))?;
    let (c1, c2) = (client_link(1), client_link(2));
    let clients = b.cluster.client_relay().context("client relay")?;
    let links = [
        clients.traffic(c1, 2, since, until),
        clients.traffic(2, c1, since, until),
        clients.traffic(c2, 3, since, until),
        clients.traffic(3, c2, since, until),
    ];
    let relay = b.cluster.relay().context("server relay")?;
    let mut servers = Traffic::default();
    for from in 1..=3 {
        for to in 1..=3 {
            if from != to {
                let t = relay.traffic(from, to, since, until);
                servers.datagrams += t.datagrams;
                servers.bytes += t.bytes;
            }
        }
    }
    Ok(Wire {
        links,
        servers,
        updates: count,
    })
}

/// The same over SceneMultiplayer and ENet (`godot_project/baseline`, one server), with its
/// synchronizer in `mode` (`on_change` or `always`).
fn wire_theirs(count: usize, mode: &str) -> Result<Wire> {
    use synctree_e2e::client_link;
    let ([_, one, two], relay) = run_baseline(
        &[
            format!("--baseline-count={count}"),
            format!("--baseline-mode={mode}"),
        ],
        true,
    )?;
    let relay = relay.context("baseline relay")?;
    let (writer, reader, sender, receiver) = if one["sender"] == true {
        (1, 2, &one, &two)
    } else {
        (2, 1, &two, &one)
    };
    let sent = ints(&sender["sent"]);
    let received: Vec<i64> = receiver["received"]
        .as_object()
        .context("received")?
        .values()
        .filter_map(Value::as_i64)
        .collect();
    let (since, until) = (
        sent.first().copied().unwrap_or(0),
        received.iter().copied().max().unwrap_or(0),
    );
    let (w, r) = (client_link(writer), client_link(reader));
    Ok(Wire {
        links: [
            relay.traffic(w, 1, since, until),
            relay.traffic(1, w, since, until),
            relay.traffic(r, 1, since, until),
            relay.traffic(1, r, since, until),
        ],
        servers: Default::default(),
        updates: received.len().max(1),
    })
}

/// Bytes on the wire per property update: client 1 sets a property of its node every 10 ms
/// and client 2 (on another server) applies each value; the relays count every UDP datagram
/// on the clients' links and between the servers, in the window from the first set to the
/// last value applied. Strong writes beside SceneMultiplayer's `on change` (reliable) sync,
/// eventual writes beside its `always` (unreliable) sync; the same scene on SceneMultiplayer
/// over ENet (one server, two clients) goes through the same relay.
fn run_wire(args: &BenchArgs) -> Result<String> {
    let count = if args.quick { 200 } else { 1000 };
    let cluster = Cluster::start(ClusterConfig {
        relay: true,
        client_relay: true,
        ..two_clients_config()
    })?;
    cluster.wait_leader(Duration::from_secs(30))?;
    let mut b = two_clients_bench(cluster)?;
    let strong = wire_ours(&mut b, 1, count, false)?;
    eprintln!("[bench]   eventual writes...");
    let eventual = wire_ours(&mut b, count as i64 + 1, count, true)?;
    b.cluster.check_logs()?;
    drop(b);
    eprintln!("[bench]   the same over SceneMultiplayer (ENet)...");
    let on_change = wire_theirs(count, "on_change")?;
    let always = wire_theirs(count, "always")?;

    let per = |t: &synctree_e2e::Traffic, n: usize| t.wire_bytes() as f64 / n as f64;
    let row = |s: &mut String, what: &str, w: &Wire| -> Result<()> {
        let (t, n) = (&w.links, w.updates);
        writeln!(
            s,
            "| {what} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {:.2} |",
            per(&t[0], n),
            per(&t[1], n),
            per(&t[3], n),
            per(&t[2], n),
            t.iter().map(|x| per(x, n)).sum::<f64>(),
            t.iter().map(|x| x.datagrams).sum::<u64>() as f64 / n as f64,
        )?;
        Ok(())
    };
    let mut s = String::new();
    writeln!(
        s,
        "### Bytes on the wire per property update (one int property, a change every 10 ms)\n"
    )?;
    writeln!(
        s,
        "Bytes per update with IPv4 + UDP headers, counted by a UDP relay on each link from the \
         first change to the last one applied by the other client ({count} changes).\n"
    )?;
    writeln!(
        s,
        "| | writer's link: up / down | reader's link: down / up | all client links | datagrams |"
    )?;
    writeln!(s, "| --- | --- | --- | --- | --- |")?;
    row(
        &mut s,
        "synctree, `set_synced` (QUIC client port; writer on server 2, reader on server 3)",
        &strong,
    )?;
    row(
        &mut s,
        "SceneMultiplayer over ENet (one server), `on change` sync",
        &on_change,
    )?;
    row(&mut s, "synctree, `set_eventual` (same)", &eventual)?;
    row(
        &mut s,
        "SceneMultiplayer over ENet (one server), `always` sync every 10 ms",
        &always,
    )?;
    for (what, w) in [("strong", &strong), ("eventual", &eventual)] {
        writeln!(
            s,
            "\nBetween synctree's three servers in the same window ({what}: Raft replication or \
             relayed writes, heartbeats, presence): {:.1} bytes and {:.2} datagrams per update.",
            w.servers.wire_bytes() as f64 / w.updates as f64,
            w.servers.datagrams as f64 / w.updates as f64
        )?;
    }
    writeln!(s)?;
    Ok(s)
}

/// Godot's own replication for comparison (`godot_project/baseline`): an ENet server and two
/// clients; a synchronized property set `count` times on one client, each timed until the
/// other applied it. Returns the sorted latencies in ms.
fn scene_multiplayer_latency(count: usize) -> Result<Vec<f64>> {
    let [_, one, two] = run_baseline(&[format!("--baseline-count={count}")], false)?.0;
    let (sender, receiver) = if one["sender"] == true {
        (one, two)
    } else {
        (two, one)
    };
    let sent = ints(&sender["sent"]);
    let received = receiver["received"].as_object().context("received")?;
    let mut lat: Vec<f64> = sent
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let got = received.get(&(i + 1).to_string())?.as_i64()?;
            Some((got - t) as f64 / 1000.0)
        })
        .collect();
    ensure!(
        lat.len() * 100 >= count * 95,
        "SceneMultiplayer delivered only {} of {count} changes",
        lat.len()
    );
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// Godot's own spawn replication for comparison: the ENet server adds `n` instances under a
/// MultiplayerSpawner's path in one frame; ms until both clients hold all of them.
fn scene_multiplayer_spawn(n: usize) -> Result<f64> {
    let [server, one, two] = run_baseline(&[format!("--baseline-spawn={n}")], false)?.0;
    let start = server["spawn_start"].as_i64().unwrap_or(0);
    let done = [&one, &two]
        .iter()
        .map(|c| c["spawn_done"].as_i64().unwrap_or(0))
        .collect::<Vec<_>>();
    ensure!(
        start > 0 && done.iter().all(|d| *d > 0),
        "SceneMultiplayer spawn of {n} did not complete: server {server}, clients {one} {two}"
    );
    Ok((done.into_iter().max().unwrap_or(0) - start) as f64 / 1000.0)
}

/// Runs `godot_project/baseline` (an ENet server, then two clients) with `args` and returns
/// what the server and the two clients recorded. With `relay`, each client reaches the server through a
/// [`Relay`] link (client `client_link(n)` to server 1), returned for its traffic.
fn run_baseline(args: &[String], relay: bool) -> Result<([Value; 3], Option<synctree_e2e::Relay>)> {
    let godot = synctree_e2e::godot_binary()?;
    let dir = tempfile::tempdir()?;
    let port = synctree_net::ports::unused_port(false)?;
    let relay = if relay {
        Some(synctree_e2e::Relay::links(&[
            (synctree_e2e::client_link(1), 1, port),
            (synctree_e2e::client_link(2), 1, port),
        ])?)
    } else {
        None
    };
    let run = |role: &str, n: usize| -> Result<std::process::Child> {
        let log = std::fs::File::create(dir.path().join(format!("{role}-{n}.log")))?;
        let connect = relay
            .as_ref()
            .filter(|_| role == "client")
            .map(|r| r.addr(synctree_e2e::client_link(n as u64), 1).port())
            .unwrap_or(port);
        Ok(std::process::Command::new(&godot)
            .args(["--headless", "--path"])
            .arg(synctree_e2e::godot_project())
            .args(["res://baseline/baseline.tscn", "--"])
            .arg(format!("--baseline-role={role}"))
            .arg(format!("--baseline-port={port}"))
            .arg(format!("--baseline-connect-port={connect}"))
            .args(args)
            .arg("--baseline-interval-ms=10")
            .arg(format!(
                "--baseline-out={}",
                dir.path().join(format!("{role}-{n}.json")).display()
            ))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    };
    let mut children = vec![run("server", 0)?];
    std::thread::sleep(Duration::from_millis(500));
    children.push(run("client", 1)?);
    children.push(run("client", 2)?);
    let deadline = Instant::now() + Duration::from_secs(90);
    for c in &mut children {
        while c.try_wait()?.is_none() {
            if Instant::now() > deadline {
                c.kill().ok();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let read = |role: &str, n: usize| -> Result<Value> {
        let path = dir.path().join(format!("{role}-{n}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            let log = std::fs::read_to_string(dir.path().join(format!("{role}-{n}.log")))
                .unwrap_or_default();
            format!("the baseline {role} {n} wrote no results; its log:\n{log}")
        })?;
        Ok(serde_json::from_str(&text)?)
    };
    Ok((
        [read("server", 0)?, read("client", 1)?, read("client", 2)?],
        relay,
    ))
}

fn fmt_list(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpu}, {}",
        std::fs::read_to_string("/etc/debian_version")
            .map(|v| format!("Debian {}", v.trim()))
            .unwrap_or_default()
    )
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
