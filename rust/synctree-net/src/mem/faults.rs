//! The fault model of the in-memory network: which links are cut, how slow and lossy they are.

use std::collections::HashSet;
use std::time::Duration;

use crate::NodeId;

/// How long a request to an unreachable node takes to fail by default: long enough to behave
/// like a network, short enough that tests do not wait for their timeouts.
pub(super) const DEFAULT_UNREACHABLE_AFTER: Duration = Duration::from_millis(10);

/// Link state and knobs; lives behind the network's mutex.
#[derive(Debug)]
pub(super) struct Faults {
    isolated: HashSet<NodeId>,
    /// One-way cuts: `(from, to)` means messages from `from` to `to` are lost.
    blocked: HashSet<(NodeId, NodeId)>,
    /// One-way latency added to every message.
    pub delay: Duration,
    /// Up to this much more latency, drawn per message (so messages overtake each other).
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a message is lost.
    drop_rate: f64,
    /// Probability in `[0, 1]` that a request is delivered twice.
    duplicate_rate: f64,
    /// Probability in `[0, 1]` that a datagram (only) is lost, on top of the above.
    datagram_drop_rate: f64,
    /// How long a message to an unreachable node takes to fail.
    pub unreachable_after: Duration,
    rng: SplitMix64,
}

impl Faults {
    pub(super) fn new(seed: u64) -> Self {
        Faults {
            isolated: HashSet::new(),
            blocked: HashSet::new(),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            datagram_drop_rate: 0.0,
            unreachable_after: DEFAULT_UNREACHABLE_AFTER,
            rng: SplitMix64(seed),
        }
    }

    pub(super) fn isolate(&mut self, id: NodeId) {
        self.isolated.insert(id);
    }

    /// Reconnects `id`: lifts its isolation and every one-way block to or from it.
    pub(super) fn heal(&mut self, id: NodeId) {
        self.isolated.remove(&id);
        self.blocked.retain(|&(from, to)| from != id && to != id);
    }

    pub(super) fn heal_all(&mut self) {
        self.isolated.clear();
        self.blocked.clear();
    }

    pub(super) fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub(super) fn unblock(&mut self, from: NodeId, to: NodeId) {
        self.blocked.remove(&(from, to));
    }

    pub(super) fn set_drop_rate(&mut self, rate: f64) {
        self.drop_rate = probability(rate);
    }

    pub(super) fn set_duplicate_rate(&mut self, rate: f64) {
        self.duplicate_rate = probability(rate);
    }

    pub(super) fn set_datagram_drop_rate(&mut self, rate: f64) {
        self.datagram_drop_rate = probability(rate);
    }

    /// Whether this datagram is lost on top of [`loss`](Self::loss).
    pub(super) fn datagram_lost(&mut self) -> bool {
        self.datagram_drop_rate > 0.0 && self.rng.next_f64() < self.datagram_drop_rate
    }

    /// The latency of one message: the fixed delay plus its share of jitter.
    pub(super) fn latency(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return self.delay;
        }
        self.delay + self.jitter.mul_f64(self.rng.next_f64())
    }

    /// Whether this request is delivered a second time.
    pub(super) fn duplicated(&mut self) -> bool {
        self.duplicate_rate > 0.0 && self.rng.next_f64() < self.duplicate_rate
    }

    /// Why a message from `from` to `to` is lost right now, if it is. Draws from the seeded
    /// random sequence only when a drop rate is set, so runs without loss stay deterministic.
    pub(super) fn loss(&mut self, from: NodeId, to: NodeId) -> Option<String> {
        if self.isolated.contains(&from) {
            return Some(format!("node {from} is isolated"));
        }
        if self.isolated.contains(&to) {
            return Some(format!("node {to} is isolated"));
        }
        if self.blocked.contains(&(from, to)) {
            return Some(format!("link {from} -> {to} is blocked"));
        }
        if self.drop_rate > 0.0 && self.rng.next_f64() < self.drop_rate {
            return Some(format!("message {from} -> {to} was dropped"));
        }
        None
    }
}

fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// A tiny deterministic generator (SplitMix64): same seed, same drops.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_one_way_and_heal_clears_them() {
        let mut faults = Faults::new(1);
        faults.block(1, 2);
        assert!(faults.loss(1, 2).is_some());
        assert!(faults.loss(2, 1).is_none());
        faults.isolate(3);
        assert!(faults.loss(1, 3).is_some() && faults.loss(3, 1).is_some());
        faults.heal(1);
        faults.heal(3);
        assert!(faults.loss(1, 2).is_none() && faults.loss(1, 3).is_none());
    }

    #[test]
    fn drops_follow_the_seed() {
        let run = |seed| {
            let mut faults = Faults::new(seed);
            faults.set_drop_rate(0.5);
            (0..64)
                .map(|_| faults.loss(1, 2).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let dropped = run(7).iter().filter(|d| **d).count();
        assert!(
            (16..=48).contains(&dropped),
            "{dropped} of 64 dropped at rate 0.5"
        );
    }
}
