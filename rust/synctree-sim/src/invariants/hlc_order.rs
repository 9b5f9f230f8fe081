//! HLC order: each server's stamps increase in the order its events commit (monotonic per
//! server, also across its restarts), and a server stamps an event after every event it had
//! applied when the event was submitted (causal order across servers) — whatever the skew of
//! the servers' clocks.

use super::Violation;
use std::collections::{BTreeMap, HashMap};
use synctree_proto::Stamp;
use synctree_raft::NodeId;

const NAME: &str = "hlc order";

/// A committed write as its server reported it.
#[derive(Debug, Clone, Copy)]
pub struct StampedWrite {
    pub origin: NodeId,
    /// Log index of its batch.
    pub index: u64,
    /// Order of submission on its server (orders the events of one batch).
    pub submitted: u64,
    pub stamp: Stamp,
    /// The newest stamp its server had applied when the write was submitted.
    pub floor: Option<Stamp>,
}

#[derive(Debug, Default)]
pub struct HlcOrder {
    by_origin: HashMap<NodeId, BTreeMap<(u64, u64), Stamp>>,
}

impl HlcOrder {
    pub fn check(&mut self, w: StampedWrite) -> Result<(), Violation> {
        if w.stamp.origin != w.origin {
            return Err(Violation::new(
                NAME,
                format!(
                    "server {} stamped an event as server {}",
                    w.origin, w.stamp.origin
                ),
            ));
        }
        if let Some(floor) = w.floor {
            if w.stamp.hlc <= floor.hlc {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "server {} stamped {} after applying {} (from server {}): not causal",
                        w.origin, w.stamp.hlc, floor.hlc, floor.origin
                    ),
                ));
            }
        }
        let own = self.by_origin.entry(w.origin).or_default();
        let key = (w.index, w.submitted);
        let before = own.range(..key).next_back().map(|(k, s)| (*k, *s));
        let after = own.range(key..).next().map(|(k, s)| (*k, *s));
        if let Some((k, s)) = before {
            if s.hlc >= w.stamp.hlc {
                return Err(Self::backwards(w.origin, k, s, key, w.stamp));
            }
        }
        if let Some((k, s)) = after {
            if s.hlc <= w.stamp.hlc {
                return Err(Self::backwards(w.origin, key, w.stamp, k, s));
            }
        }
        own.insert(key, w.stamp);
        Ok(())
    }

    fn backwards(
        origin: NodeId,
        k1: (u64, u64),
        s1: Stamp,
        k2: (u64, u64),
        s2: Stamp,
    ) -> Violation {
        Violation::new(
            NAME,
            format!(
                "server {origin}'s stamps go back: event at index {} was stamped {}, a later one \
                 at index {} {}",
                k1.0, s1.hlc, k2.0, s2.hlc
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synctree_proto::uhlc::{Timestamp, ID, NTP64};

    fn stamp(origin: u64, t: u64) -> Stamp {
        let id = ID::try_from(origin).expect("id");
        Stamp {
            hlc: Timestamp::new(NTP64(t), id),
            origin,
        }
    }

    fn write(origin: u64, index: u64, submitted: u64, t: u64, floor: Option<u64>) -> StampedWrite {
        StampedWrite {
            origin,
            index,
            submitted,
            stamp: stamp(origin, t),
            floor: floor.map(|f| stamp(2, f)),
        }
    }

    #[test]
    fn stamps_going_back_in_log_order_or_before_what_was_applied_are_caught() {
        let mut h = HlcOrder::default();
        h.check(write(1, 5, 1, 100, None)).expect("first");
        h.check(write(1, 5, 2, 101, Some(50)))
            .expect("same batch, later");
        h.check(write(1, 9, 3, 300, None)).expect("later entry");
        assert!(
            h.check(write(1, 7, 4, 90, None)).is_err(),
            "lower than index 5's"
        );
        assert!(
            h.check(write(1, 8, 5, 400, None)).is_err(),
            "higher than index 9's"
        );
        assert!(
            h.check(write(1, 10, 6, 350, Some(360))).is_err(),
            "not causal"
        );
        h.check(write(1, 10, 7, 361, Some(360))).expect("causal");
    }
}
