//! Virtual physical clocks, one per simulated server, each with its own skew.
//!
//! A server's HLC takes its physical time from a plain `fn() -> NTP64`, so each server id gets
//! its own function (a const-generic instance) reading the virtual time of the simulation's
//! tokio runtime plus that server's skew, kept in a thread local: the simulation runs on one
//! thread.

use std::cell::{Cell, RefCell};
use std::time::Duration;
use synctree_proto::uhlc::NTP64;
use synctree_proto::PhysicalClock;
use tokio::time::Instant;

/// Servers a simulation can have (ids 1..=MAX_SERVERS).
pub const MAX_SERVERS: usize = 7;

/// The virtual wall clock starts here (2026-01-01 UTC), whatever the host's clock says.
const EPOCH: Duration = Duration::from_secs(1_767_225_600);

thread_local! {
    static START: Cell<Option<Instant>> = const { Cell::new(None) };
    static SKEW_NS: RefCell<[i64; MAX_SERVERS + 1]> = const { RefCell::new([0; MAX_SERVERS + 1]) };
}

/// Starts the virtual wall clock of this thread at the runtime's current instant, with
/// no skew. Call inside the simulation's runtime.
pub fn reset() {
    START.with(|s| s.set(Some(Instant::now())));
    SKEW_NS.with(|s| *s.borrow_mut() = [0; MAX_SERVERS + 1]);
}

/// Virtual time since [`reset`].
pub fn elapsed() -> Duration {
    START.with(|s| s.get().map(|s| s.elapsed()).unwrap_or_default())
}

/// Sets how far server `id`'s clock is ahead (positive) or behind (negative), in ns.
pub fn set_skew(id: u64, skew_ns: i64) {
    SKEW_NS.with(|s| s.borrow_mut()[id as usize] = skew_ns);
}

/// Server `id`'s skew, in ns.
pub fn skew(id: u64) -> i64 {
    SKEW_NS.with(|s| s.borrow()[id as usize])
}

fn now_of(id: usize) -> NTP64 {
    let base = EPOCH + elapsed();
    let skew = SKEW_NS.with(|s| s.borrow()[id]);
    let ns = (base.as_nanos() as i64).saturating_add(skew).max(0) as u64;
    NTP64::from(Duration::from_nanos(ns))
}

fn clock_of<const ID: usize>() -> NTP64 {
    now_of(ID)
}

const CLOCKS: [PhysicalClock; MAX_SERVERS + 1] = [
    clock_of::<0>,
    clock_of::<1>,
    clock_of::<2>,
    clock_of::<3>,
    clock_of::<4>,
    clock_of::<5>,
    clock_of::<6>,
    clock_of::<7>,
];

/// The physical clock of server `id` (1..=[`MAX_SERVERS`]).
pub fn physical(id: u64) -> PhysicalClock {
    CLOCKS[id as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn skewed_clocks_follow_virtual_time() {
        reset();
        set_skew(2, 300_000_000);
        set_skew(3, -200_000_000);
        let (a, b, c) = (physical(1)(), physical(2)(), physical(3)());
        assert_eq!(
            b.to_duration() - a.to_duration(),
            Duration::from_millis(300)
        );
        assert!(a.to_duration() - c.to_duration() >= Duration::from_millis(199));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let later = physical(1)();
        let step = later.to_duration() - a.to_duration();
        assert!(step >= Duration::from_secs(5) && step < Duration::from_millis(5001));
    }
}
