//! What one simulated run looks like.

use std::time::Duration;

/// The shape of a run; the seed decides everything else.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Raft voters at start (3 or 5).
    pub servers: u64,
    /// Further server slots the nemesis may add (as learner, then voter) and remove.
    pub spares: u64,
    /// Steps of workload and faults; a step is `tick` of virtual time.
    pub steps: u64,
    pub tick: Duration,
    /// Concurrent clients, each one operation at a time.
    pub clients: u64,
    /// Whether the nemesis injects faults (crashes, partitions, loss, skew, ...).
    pub faults: bool,
    /// Largest clock skew a server gets, either way.
    pub max_skew: Duration,
    /// Snapshot after this many log entries (small, so snapshots and catch-up by snapshot
    /// happen in every run).
    pub snapshot_every: u64,
    /// After the faults end, how long (virtual) the cluster has to recover and answer a
    /// final read on every server.
    pub recovery: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            servers: 3,
            spares: 2,
            steps: 10_000,
            tick: Duration::from_millis(1),
            clients: 4,
            faults: true,
            max_skew: Duration::from_millis(400),
            snapshot_every: 200,
            recovery: Duration::from_secs(10),
        }
    }
}
