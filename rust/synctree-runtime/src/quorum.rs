//! Whether this server is in touch with a quorum. A server cut off from one (a partition, a
//! leader whose followers went away) can neither commit its game clients' writes nor
//! apply what the others commit, so its clients would wait for as long as the cut lasts:
//! past [`cut_off_after`] it closes their connections, saying why, and they move to
//! another server of their list.
//!
//! ```text
//!   a follower ── last heard from a leader (the election timer's own record)
//!   a leader   ── answers of its peers (any Raft RPC reply) ─▶ when a majority of each
//!                 voter configuration, itself included, had last answered
//!   every 200 ms: out of touch longer than cut_off_after? ─▶ watch: Some(reason) | None
//! ```

use crate::node::Inner;
use openraft::ServerState;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synctree_raft::NodeId;

/// When each peer last answered one of this server's Raft RPCs.
#[derive(Default)]
pub(crate) struct PeerAnswers {
    at: Mutex<HashMap<NodeId, Instant>>,
}

impl PeerAnswers {
    pub(crate) fn answered(&self, peer: NodeId) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.insert(peer, Instant::now());
    }

    fn ages(&self, now: Instant) -> HashMap<NodeId, Duration> {
        let at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.iter()
            .map(|(id, t)| (*id, now.saturating_duration_since(*t)))
            .collect()
    }
}

/// How long a server may be out of touch with a quorum before its game clients are sent
/// elsewhere: well past an election (a leader lost and replaced takes ~2 election timeouts).
pub(crate) fn cut_off_after(election_max: Duration) -> Duration {
    (election_max * 6).max(Duration::from_secs(2))
}

/// How long ago a leader `me` last had a majority of every configuration in `configs` with
/// it (itself counts at once), from its peers' answer ages; a peer never heard from counts
/// as `never` ago.
pub(crate) fn leader_out_of_touch(
    me: NodeId,
    configs: &[BTreeSet<NodeId>],
    ages: &HashMap<NodeId, Duration>,
    never: Duration,
) -> Duration {
    configs
        .iter()
        .map(|config| {
            let majority = config.len() / 2 + 1;
            let needed = majority.saturating_sub(usize::from(config.contains(&me)));
            if needed == 0 {
                return Duration::ZERO;
            }
            let mut others: Vec<Duration> = config
                .iter()
                .filter(|id| **id != me)
                .map(|id| ages.get(id).copied().unwrap_or(never))
                .collect();
            others.sort_unstable();
            others.get(needed - 1).copied().unwrap_or(never)
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

/// How long this server has been out of touch with a quorum.
fn out_of_touch(inner: &Inner, started: Instant) -> Duration {
    let now = Instant::now();
    let never = now.saturating_duration_since(started);
    let metrics = inner.raft.server_metrics();
    let (leads, configs) = {
        let m = metrics.borrow();
        let configs = m.membership_config.membership().get_joint_config().clone();
        (m.state == ServerState::Leader, configs)
    };
    if leads {
        leader_out_of_touch(inner.id, &configs, &inner.answers.ages(now), never)
    } else {
        inner.contact.since_leader().min(never)
    }
}

/// Publishes on `cut_off` why this server is out of touch with a quorum (`None` while it
/// is not), checking every 200 ms.
pub(crate) async fn watch(inner: Arc<Inner>, after: Duration) {
    let cut_off = &inner.cut_off;
    let started = Instant::now();
    // The latest moment known in touch, in either role: a leader that steps down has heard
    // from no leader while it led, but was in touch a moment ago.
    let mut touched = started;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        touched = touched.max(now - out_of_touch(&inner, started).min(now - started));
        let away = now.saturating_duration_since(touched);
        let reason = (away > after).then(|| {
            format!(
                "server {} has had no quorum for {} ms: try another server",
                inner.id,
                away.as_millis()
            )
        });
        let was = cut_off.borrow().is_some();
        match (&reason, was) {
            (Some(r), false) => tracing::warn!("{r} (its game clients are sent away)"),
            (None, true) => tracing::info!("server {} is in touch with a quorum again", inner.id),
            _ => {}
        }
        if reason.is_some() != was {
            cut_off.send_replace(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_leader_is_in_touch_while_a_majority_answers() {
        let three: Vec<BTreeSet<NodeId>> = vec![[1, 2, 3].into()];
        let never = ms(9_000);
        // One of two followers answering is a majority with the leader.
        let ages = HashMap::from([(2, ms(30)), (3, ms(5_000))]);
        assert_eq!(leader_out_of_touch(1, &three, &ages, never), ms(30));
        // Neither: the more recent of the two is what the quorum waits on.
        let ages = HashMap::from([(2, ms(4_000)), (3, ms(5_000))]);
        assert_eq!(leader_out_of_touch(1, &three, &ages, never), ms(4_000));
        // Never heard from: since the start.
        assert_eq!(
            leader_out_of_touch(1, &three, &HashMap::new(), never),
            never
        );
        // Alone in its configuration: always in touch.
        let one: Vec<BTreeSet<NodeId>> = vec![[1].into()];
        assert_eq!(leader_out_of_touch(1, &one, &HashMap::new(), never), ms(0));
        // Five voters need two answers besides the leader.
        let five: Vec<BTreeSet<NodeId>> = vec![[1, 2, 3, 4, 5].into()];
        let ages = HashMap::from([(2, ms(10)), (3, ms(3_000)), (4, ms(20)), (5, ms(7_000))]);
        assert_eq!(leader_out_of_touch(1, &five, &ages, never), ms(20));
    }

    #[test]
    fn during_a_membership_change_both_configurations_count() {
        // Moving from {1, 2, 3} to {1, 4, 5}: 2 answers, but 4 and 5 do not.
        let joint: Vec<BTreeSet<NodeId>> = vec![[1, 2, 3].into(), [1, 4, 5].into()];
        let ages = HashMap::from([(2, ms(10)), (3, ms(10)), (4, ms(6_000))]);
        assert_eq!(leader_out_of_touch(1, &joint, &ages, ms(8_000)), ms(6_000));
        // A leader leaving the group (not in the new configuration) needs its majority.
        let leaving: Vec<BTreeSet<NodeId>> = vec![[1, 2, 3].into(), [2, 3, 4].into()];
        let ages = HashMap::from([(2, ms(10)), (3, ms(50)), (4, ms(6_000))]);
        assert_eq!(leader_out_of_touch(1, &leaving, &ages, ms(8_000)), ms(50));
    }
}
