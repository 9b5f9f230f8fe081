//! `synctree-sim`: runs seeds of the deterministic simulation.
//!
//! ```text
//!   synctree-sim --seeds 200 --seed 1        seeds 1..=200, in parallel; failing seeds printed
//!   synctree-sim --reproduce 1234            that seed again, with its whole trace
//! ```

use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use synctree_sim::{run, Outcome, SimConfig};

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of a synctree cluster under faults")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 50)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run only this seed, printing its trace (and, with --history-out, its history).
    #[arg(long, value_name = "SEED")]
    reproduce: Option<u64>,
    /// Steps (1 ms of virtual time each) of workload and faults per seed.
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    #[arg(long, default_value_t = 3)]
    servers: u64,
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// No faults (a baseline).
    #[arg(long)]
    no_faults: bool,
    /// Seeds run at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Where --reproduce writes the run's history.
    #[arg(long, value_name = "FILE")]
    history_out: Option<std::path::PathBuf>,
}

fn config(args: &Args) -> SimConfig {
    SimConfig {
        servers: args.servers,
        steps: args.steps,
        clients: args.clients,
        faults: !args.no_faults,
        ..SimConfig::default()
    }
}

fn reproduce_hint(seed: u64, args: &Args) -> String {
    format!(
        "synctree-sim --reproduce {seed} --steps {} --servers {} --clients {}{}",
        args.steps,
        args.servers,
        args.clients,
        if args.no_faults { " --no-faults" } else { "" }
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = config(&args);
    if let Some(seed) = args.reproduce {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let outcome = run(seed, &cfg);
        for line in &outcome.trace {
            println!("{line}");
        }
        if let Some(path) = &args.history_out {
            std::fs::write(path, &outcome.history)?;
        }
        println!("{outcome}");
        std::process::exit(if outcome.passed() { 0 } else { 1 });
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicU64::new(args.seed);
    let end = args.seed + args.seeds;
    let failed: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let outcome = run(seed, &cfg);
                if outcome.passed() {
                    println!("{outcome}");
                } else {
                    println!("{outcome}\n  reproduce: {}", reproduce_hint(seed, &args));
                    failed.lock().expect("results").push(outcome);
                }
            });
        }
    });
    let took = started.elapsed();
    let failed = failed.into_inner().expect("results");
    let per_minute = args.seeds as f64 / took.max(Duration::from_millis(1)).as_secs_f64() * 60.0;
    println!(
        "{} seeds of {} steps in {:.1} s ({per_minute:.0} seeds/minute on {jobs} threads): {} failed",
        args.seeds,
        args.steps,
        took.as_secs_f64(),
        failed.len()
    );
    for f in &failed {
        println!(
            "FAILED seed {}: reproduce with `{}`",
            f.seed,
            reproduce_hint(f.seed, &args)
        );
    }
    std::process::exit(if failed.is_empty() { 0 } else { 1 });
}
