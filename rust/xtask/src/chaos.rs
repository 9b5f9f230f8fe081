//! `cargo xtask chaos --runs N --seed S`: the long soak.
//!
//! ```text
//!   synctree-sim (release) seeds S..S+N, 10 000 steps each, every fault ─▶ failing seeds with
//!       their `--reproduce` line
//!   then --real R times: the real-process fault runs (tests/faults.rs: kill -9 of the leader,
//!       relay partitions, a skewed clock), each history checked
//! ```

use crate::process::{cargo, run};
use anyhow::Result;
use std::time::Instant;

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Simulation seeds to run.
    #[arg(long, default_value_t = 1000)]
    runs: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Steps (1 ms of virtual time each) per seed.
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    /// Times to repeat the real-process fault runs (headless Godot servers) afterwards.
    #[arg(long, default_value_t = 1)]
    real: u32,
}

pub fn chaos(args: &ChaosArgs) -> Result<bool> {
    let started = Instant::now();
    eprintln!(
        "xtask: simulation, seeds {}..{} x {} steps (release build)...",
        args.seed,
        args.seed + args.runs,
        args.steps
    );
    let sim_ok = cargo()
        .current_dir(crate::repo_root())
        .args(["run", "--release", "--quiet", "-p", "synctree-sim", "--"])
        .args(["--seeds", &args.runs.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    let mut real_ok = true;
    if args.real > 0 {
        crate::build::build(false)?;
        crate::godot::godot()?;
        for i in 1..=args.real {
            eprintln!(
                "xtask: real-process fault runs, round {i} of {}...",
                args.real
            );
            let mut cmd = cargo();
            cmd.current_dir(crate::repo_root()).args([
                "nextest",
                "run",
                "-p",
                "synctree-e2e",
                "--test",
                "faults",
                "--no-fail-fast",
            ]);
            if run(&mut cmd).is_err() {
                real_ok = false;
            }
        }
    }
    eprintln!(
        "== cargo xtask chaos ({:.0} s) ==\n  {}  simulation: {} seeds from {}\n  {}  real-process fault runs: {} round(s)",
        started.elapsed().as_secs_f64(),
        if sim_ok { "ok    " } else { "FAILED" },
        args.runs,
        args.seed,
        if real_ok { "ok    " } else { "FAILED" },
        args.real
    );
    Ok(sim_ok && real_ok)
}
