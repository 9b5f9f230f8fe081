//! Project automation, the one place that does what CI does (`.ci/run` calls `cargo xtask test`).
//!
//! ```text
//!   cargo xtask build [--release]  cargo build -p synctree-godot ─▶ addons/synctree/bin/*.so
//!                                  + godot_project/.godot/extension_list.cfg
//!   cargo xtask godot              tools/provision-godot.sh ─▶ which Godot 4 is used
//!   cargo xtask demo               build + Godot + N headless servers + a driver ─▶ status table
//!   cargo xtask test               build + Godot + cargo nextest/test + GDScript runner ─▶ summary
//!   cargo xtask chaos --runs N --seed S   N simulation seeds + real-process fault runs (soak)
//! ```

mod bench;
mod build;
mod chaos;
mod demo;
mod godot;
mod load;
mod process;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "synctree project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the extension, copy it into addons/synctree/bin and prepare godot_project.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Find or provision Godot 4 and print which binary is used.
    Godot,
    /// Start headless servers on loopback, drive them, and print whether they agree.
    Demo(demo::DemoArgs),
    /// Measure latency, throughput, spawn convergence, apply cost and memory (README figures).
    Bench(bench::BenchArgs),
    /// Run every test: cargo tests and the Godot-side GDScript tests (what CI runs).
    Test(test::TestArgs),
    /// The long soak: N simulation seeds with every fault, then the real-process fault runs.
    Chaos(chaos::ChaosArgs),
}

/// The repository root (xtask lives in `<root>/rust/xtask`).
pub fn repo_root() -> PathBuf {
    synctree_e2e::repo_root()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<bool> = match cli.command {
        Command::Build { release } => build::build(release).map(|_| true),
        Command::Godot => godot::godot().map(|path| {
            println!("{}", path.display());
            true
        }),
        Command::Demo(args) => demo::demo(&args),
        Command::Test(args) => test::test(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Chaos(args) => chaos::chaos(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
