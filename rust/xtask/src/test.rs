//! `cargo xtask test`: the one test command (CI's `.ci/run` calls exactly this).
//!
//! build the extension ─▶ find Godot (exported as GODOT4_BIN) ─▶ cargo nextest (or cargo test)
//! over the workspace, end-to-end tests included ─▶ the GDScript runner inside headless Godot
//! ─▶ summary; fails if any stage failed or Godot printed `SCRIPT ERROR` or a Rust panic.

use crate::process::{cargo, run_captured};
use anyhow::Result;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use synctree_e2e::godot_project;

const GODOT_TESTS_TIMEOUT: Duration = Duration::from_secs(600);
const FATAL_MARKERS: [&str; 3] = ["SCRIPT ERROR", "panicked", "[panic "];

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only the Godot-side GDScript tests (skip the cargo tests).
    #[arg(long, conflicts_with = "cargo_only")]
    godot_only: bool,
    /// Only the cargo tests (skip the GDScript tests).
    #[arg(long)]
    cargo_only: bool,
}

/// Runs every stage; returns whether all passed.
pub fn test(args: &TestArgs) -> Result<bool> {
    let started = Instant::now();
    crate::build::build(false)?;
    let godot = crate::godot::godot()?;
    let mut summary: Vec<(String, bool)> = Vec::new();

    if !args.godot_only {
        let nextest = cargo()
            .args(["nextest", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let mut cmd = cargo();
        cmd.current_dir(crate::repo_root());
        let name = if nextest {
            cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
            "cargo nextest run --workspace"
        } else {
            cmd.args(["test", "--workspace", "--no-fail-fast"]);
            "cargo test --workspace"
        };
        eprintln!(
            "xtask: {name} (cargo-nextest {})...",
            if nextest { "found" } else { "not installed" }
        );
        let ok = cmd.status().is_ok_and(|s| s.success());
        summary.push((name.to_owned(), ok));
    }

    if !args.cargo_only {
        eprintln!("xtask: Godot-side tests (godot --headless --path godot_project -s res://tests/runner.gd)...");
        let project = godot_project();
        let captured = run_captured(
            Command::new(&godot)
                .current_dir(&project)
                // Panics keep their backtraces; gdext's borrow tracking stops capturing one
                // per bind (see tests/support/cluster.rs).
                .env("RUST_LIB_BACKTRACE", "0")
                .args(["--headless", "--path"])
                .arg(&project)
                .args(["-s", "res://tests/runner.gd"]),
            GODOT_TESTS_TIMEOUT,
        )?;
        let counts = captured
            .output
            .lines()
            .rev()
            .find(|l| l.contains(" passed, ") && l.trim_end().ends_with(" failed"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| "no summary line".to_owned());
        let mut problems = Vec::new();
        match captured.status {
            Some(s) if s.success() => {}
            Some(s) => problems.push(s.to_string()),
            None => problems.push(format!("timed out after {GODOT_TESTS_TIMEOUT:?}")),
        }
        for marker in FATAL_MARKERS {
            let n = captured.output.matches(marker).count();
            if n > 0 {
                problems.push(format!("{n} x '{marker}' in the output"));
            }
        }
        let label = if problems.is_empty() {
            format!("Godot tests ({counts})")
        } else {
            format!("Godot tests ({counts}; {})", problems.join(", "))
        };
        summary.push((label, problems.is_empty()));
    }

    let all_ok = summary.iter().all(|(_, ok)| *ok);
    println!();
    println!(
        "== cargo xtask test: summary ({:.0} s) ==",
        started.elapsed().as_secs_f64()
    );
    for (what, ok) in &summary {
        println!("  {:<6} {what}", if *ok { "ok" } else { "FAILED" });
    }
    println!(
        "cargo xtask test: {}",
        if all_ok { "PASSED" } else { "FAILED" }
    );
    Ok(all_ok)
}
