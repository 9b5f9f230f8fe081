//! Hybrid logical clock stamps (uhlc) for events: monotonic per server and causally
//! ordered across servers, because every server observes the stamps it applies.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An HLC timestamp plus the id of the server that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub hlc: uhlc::Timestamp,
    pub origin: u64,
}

impl Stamp {
    /// The stamp with HLC time `time` (NTP64 bits) made by server `origin` (whose clock's
    /// HLC id is `origin`, see [`Clock::with_physical`]).
    pub fn from_parts(time: u64, origin: u64) -> Stamp {
        let id = uhlc::ID::try_from(origin.max(1)).unwrap_or_else(|_| uhlc::ID::rand());
        Stamp {
            hlc: uhlc::Timestamp::new(uhlc::NTP64(time), id),
            origin,
        }
    }
}

/// Serde for stamps sent to game clients: `(time, origin)`, 10 to 20 bytes where the full
/// HLC timestamp takes 30 (its id is the origin's, so it is rebuilt from it).
pub mod compact_stamp {
    use super::Stamp;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(stamp: &Stamp, s: S) -> Result<S::Ok, S::Error> {
        (stamp.hlc.get_time().as_u64(), stamp.origin).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Stamp, D::Error> {
        let (time, origin) = <(u64, u64)>::deserialize(d)?;
        Ok(Stamp::from_parts(time, origin))
    }

    /// The same for an optional stamp.
    pub mod option {
        use super::Stamp;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(stamp: &Option<Stamp>, s: S) -> Result<S::Ok, S::Error> {
            stamp
                .map(|st| (st.hlc.get_time().as_u64(), st.origin))
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Stamp>, D::Error> {
            Ok(<Option<(u64, u64)>>::deserialize(d)?.map(|(t, o)| Stamp::from_parts(t, o)))
        }
    }
}

/// A stamp from another server is too far ahead of our physical clock.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timestamp from server {origin} is ahead of this server's clock by more than the allowed {max_delta_ms} ms: {detail}")]
pub struct ClockError {
    pub origin: u64,
    pub max_delta_ms: u64,
    pub detail: String,
}

/// One server's hybrid logical clock.
///
/// uhlc refuses to move past a remote stamp more than `max_delta` ahead of the physical
/// clock. Causality must hold all the same (an event made after applying another must be
/// stamped after it), so such a stamp is remembered as a floor: until the physical clock
/// passes it, new stamps are the floor plus one tick, and the refusal is reported.
pub struct Clock {
    hlc: uhlc::HLC,
    origin: u64,
    max_delta: Duration,
    /// The time (NTP64 bits) every new stamp must exceed; 0 when uhlc alone suffices.
    floor: AtomicU64,
}

/// A physical clock: the time now, as NTP64.
pub type PhysicalClock = fn() -> uhlc::NTP64;

impl Clock {
    /// Default bound on how far ahead a remote stamp may be (uhlc's default is 500 ms).
    pub const DEFAULT_MAX_DELTA: Duration = Duration::from_millis(500);

    /// A clock for server `origin` on the system's physical clock.
    pub fn new(origin: u64, max_delta: Duration) -> Self {
        Self::with_physical(origin, max_delta, uhlc::system_time_clock)
    }

    /// A clock whose physical time comes from `physical` (simulation, tests).
    pub fn with_physical(origin: u64, max_delta: Duration, physical: PhysicalClock) -> Self {
        let mut builder = uhlc::HLCBuilder::new()
            .with_max_delta(max_delta)
            .with_clock(physical);
        // uhlc ids must be non-zero; server ids are too, but stay total.
        if let Ok(id) = uhlc::ID::try_from(origin.max(1)) {
            builder = builder.with_id(id);
        }
        Clock {
            hlc: builder.build(),
            origin,
            max_delta,
            floor: AtomicU64::new(0),
        }
    }

    /// The id of the server this clock belongs to.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// A new stamp, strictly greater than every stamp made or observed before.
    pub fn stamp(&self) -> Stamp {
        let mut hlc = self.hlc.new_timestamp();
        let time = hlc.get_time().as_u64();
        if let Ok(floor) = self
            .floor
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                (time <= f).then_some(f + 1)
            })
        {
            hlc = uhlc::Timestamp::new(uhlc::NTP64(floor + 1), *hlc.get_id());
        }
        Stamp {
            hlc,
            origin: self.origin,
        }
    }

    /// Advances this clock past a stamp seen from another server.
    /// A stamp too far ahead is an error (one of the two clocks is off), yet later stamps
    /// still follow it.
    pub fn observe(&self, stamp: &Stamp) -> Result<(), ClockError> {
        self.hlc.update_with_timestamp(&stamp.hlc).map_err(|e| {
            self.floor
                .fetch_max(stamp.hlc.get_time().as_u64(), Ordering::AcqRel);
            ClockError {
                origin: stamp.origin,
                max_delta_ms: self.max_delta.as_millis() as u64,
                detail: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_per_server() {
        let clock = Clock::new(7, Clock::DEFAULT_MAX_DELTA);
        let mut last = clock.stamp();
        for _ in 0..100_000 {
            let next = clock.stamp();
            assert!(next > last, "{next:?} <= {last:?}");
            assert_eq!(next.origin, 7);
            last = next;
        }
    }

    #[test]
    fn observing_orders_causally() {
        let a = Clock::new(1, Clock::DEFAULT_MAX_DELTA);
        let b = Clock::new(2, Clock::DEFAULT_MAX_DELTA);
        for _ in 0..1000 {
            let sent = a.stamp();
            b.observe(&sent).expect("clocks are in sync");
            let reply = b.stamp();
            assert!(reply.hlc > sent.hlc);
            a.observe(&reply).expect("clocks are in sync");
            assert!(a.stamp().hlc > reply.hlc);
        }
    }

    fn far_future() -> uhlc::NTP64 {
        let now = uhlc::system_time_clock();
        now + uhlc::NTP64::from(Duration::from_secs(60))
    }

    #[test]
    fn refuses_stamps_beyond_max_delta() {
        let skewed = Clock::with_physical(3, Clock::DEFAULT_MAX_DELTA, far_future);
        let local = Clock::new(4, Clock::DEFAULT_MAX_DELTA);
        let ahead = skewed.stamp();
        let err = local
            .observe(&ahead)
            .expect_err("60 s ahead must be refused");
        assert_eq!(err.origin, 3);
        assert!(err.to_string().contains("server 3"), "{err}");
        // Refused, yet causal: what the local server stamps next follows it, in order.
        let mut last = local.stamp();
        assert!(last.hlc > ahead.hlc);
        for _ in 0..1000 {
            let next = local.stamp();
            assert!(next > last);
            last = next;
        }
    }
}

#[cfg(test)]
mod compact_tests {
    use super::*;

    #[test]
    fn a_compact_stamp_is_the_stamp_a_clock_made() {
        let clock = Clock::new(7, Clock::DEFAULT_MAX_DELTA);
        let stamp = clock.stamp();
        #[derive(Serialize, Deserialize)]
        struct W(#[serde(with = "compact_stamp")] Stamp);
        let bytes = crate::encode(&W(stamp)).unwrap();
        let full = crate::encode(&stamp).unwrap();
        let back: W = crate::decode(&bytes, 1024).unwrap();
        assert_eq!(back.0, stamp);
        assert!(
            bytes.len() < full.len() / 2,
            "{} vs {}",
            bytes.len(),
            full.len()
        );
    }
}
