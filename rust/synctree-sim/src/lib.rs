//! Deterministic simulation of a synctree cluster.
//!
//! ```text
//!   seed ──▶ one thread, one tokio runtime with virtual time (paused, jumps to the next timer)
//!              ├─ N servers: synctree_runtime::Node on an in-memory network, each on an
//!              │  in-memory redb store that outlives its crashes, each HLC on its own skewed
//!              │  virtual clock, openraft's randomness seeded
//!              ├─ nemesis (seeded): crash/restart, partitions (both ways, one way), isolation,
//!              │  loss, delay + jitter (reordering), duplicates, clock skew and jumps
//!              └─ clients (seeded): write / read / cas / spawn / despawn, history recorded
//!   every step (1 ms virtual) ──▶ invariants/, one per file; the first breach stops the run
//!   end ──▶ heal, recover, audit reads, convergence, linearizability of the history
//! ```
//!
//! The same seed replays the same run: a failure prints its seed, and
//! `synctree-sim --reproduce SEED` runs it again with its trace.

pub mod clock;
mod config;
pub mod invariants;
mod nemesis;
mod sim;
mod workload;
mod world;

pub use config::SimConfig;
pub use sim::{run, Outcome, Stats};
