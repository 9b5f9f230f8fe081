//! The simulation as part of the test command: 200 seeds with every fault, a replay check
//! and a fault-free baseline. A failure names its seed; `synctree-sim --reproduce SEED`
//! replays it with its trace.

use synctree_sim::{run, SimConfig};

/// Steps per seed in the test command (`synctree-sim` runs 10 000 by default).
const STEPS: u64 = 10_000;

fn seeds(from: u64, count: u64) {
    let cfg = SimConfig {
        steps: STEPS,
        ..SimConfig::default()
    };
    let mut failures = Vec::new();
    let mut ok_ops = 0;
    for seed in from..from + count {
        let outcome = run(seed, &cfg);
        eprintln!("{outcome}");
        ok_ops += outcome.stats.ops_ok;
        assert!(
            outcome.stats.faults > 0,
            "seed {seed}: no faults: {outcome}"
        );
        if !outcome.passed() {
            let tail: Vec<&String> = outcome.trace.iter().rev().take(40).collect();
            eprintln!("last events of seed {seed}:");
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
            failures.push(format!(
                "{outcome}\n  reproduce: cargo run -p synctree-sim --release -- --reproduce {seed} --steps {STEPS}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Faults stall clients at times (a majority down, a client waiting on a cut-off server),
    // but the runs as a whole must get work done.
    assert!(
        ok_ops > 200 * count,
        "only {ok_ops} operations succeeded in {count} seeds"
    );
}

// Four tests of 50 seeds, so the test runner spreads them over the cores.
#[test]
fn seeds_0001_0050() {
    seeds(1, 50);
}

#[test]
fn seeds_0051_0100() {
    seeds(51, 50);
}

#[test]
fn seeds_0101_0150() {
    seeds(101, 50);
}

#[test]
fn seeds_0151_0200() {
    seeds(151, 50);
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig {
        steps: 4_000,
        ..SimConfig::default()
    };
    let a = run(4242, &cfg);
    let b = run(4242, &cfg);
    assert!(a.passed(), "{a}");
    assert!(a.stats.faults > 0, "no faults injected: {a}");
    assert!(
        a.stats.live_checks > 10,
        "live trees were rarely compared: {a}"
    );
    assert_eq!(a.trace, b.trace, "same seed, different runs");
    assert_eq!(a.history, b.history);
    let c = run(4243, &cfg);
    assert_ne!(a.digest, c.digest, "another seed should run differently");
}

#[test]
fn without_faults_every_operation_succeeds_or_is_refused() {
    let cfg = SimConfig {
        steps: 3_000,
        faults: false,
        ..SimConfig::default()
    };
    let out = run(7, &cfg);
    assert!(out.passed(), "{out}");
    assert_eq!(out.stats.ops_unknown, 0, "{out}");
    // Every founding member stands once at start (openraft's `initialize`); then no more.
    assert!(out.stats.terms_led <= 3, "elections without faults: {out}");
    assert!(out.stats.ops_ok > 500, "{out}");
}
