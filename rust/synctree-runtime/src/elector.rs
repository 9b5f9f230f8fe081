//! When a follower stands for election. openraft's own timer draws one election timeout per
//! process and makes a server that once lost an election on log length wait twice the longest
//! timeout more at its next candidacy, whenever that comes: after a crash, failover then takes
//! up to three times the longest timeout. This timer replaces it (openraft's `enable_elect` is
//! off):
//!
//! ```text
//!   AppendEntries / snapshot from a leader ──▶ heard_leader()   (also restarts the timer)
//!   a vote granted ──────────────────────────▶ restart_timer()
//!   timer: silent for lease (= longest timeout) + random(shortest..longest), drawn anew each
//!   time, and a voter, not the leader ──▶ pre-vote: would a majority of voters vote for us
//!   (they too have not heard from a leader for a lease, our log is no shorter than theirs)?
//!   ──▶ yes: Raft::trigger().elect()      either way the timer starts again
//! ```
//! The pre-vote (Raft thesis 9.6) keeps a server that cannot win — its log is behind, or it is
//! cut off from a working leader — from standing: openraft orders candidates of one term by
//! node id, so such a server would otherwise keep beating an electable one, and a cut-off one
//! would depose a working leader when it comes back. openraft still decides every vote: this
//! changes when servers stand, not what Raft allows.

use crate::node::Inner;
use crate::rpc::{Rpc, RpcReply};
use futures::stream::{FuturesUnordered, StreamExt};
use openraft::{LogId, ServerState};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use synctree_raft::NodeId;
use tokio::time::Instant;

/// Instants kept as µs since an origin, so tasks and the RPC handler share them lock-free.
struct Moment {
    us: AtomicU64,
}

impl Moment {
    /// Sets it to now (never back); returns the value set.
    fn set(&self, origin: Instant) -> u64 {
        let now = origin.elapsed().as_micros() as u64;
        self.us.fetch_max(now, Ordering::Relaxed).max(now)
    }

    fn raw(&self) -> u64 {
        self.us.load(Ordering::Relaxed)
    }

    fn get(&self, origin: Instant) -> Instant {
        origin + Duration::from_micros(self.raw())
    }
}

/// When this server last heard from a leader, and when its election timer last started.
pub(crate) struct LeaderContact {
    origin: Instant,
    leader: Moment,
    timer: Moment,
}

impl LeaderContact {
    pub(crate) fn new() -> Self {
        LeaderContact {
            origin: Instant::now(),
            leader: Moment {
                us: AtomicU64::new(0),
            },
            timer: Moment {
                us: AtomicU64::new(0),
            },
        }
    }

    /// A leader reached this server.
    pub(crate) fn heard_leader(&self) {
        self.leader.set(self.origin);
        self.timer.set(self.origin);
    }

    /// How long ago a leader last reached this server (since its start if none has).
    pub(crate) fn since_leader(&self) -> Duration {
        self.leader.get(self.origin).elapsed()
    }

    /// Something else that postpones standing (a vote granted, a candidacy); returns a mark
    /// that [`restarted_since`](Self::restarted_since) compares with.
    pub(crate) fn restart_timer(&self) -> u64 {
        self.timer.set(self.origin)
    }

    /// Whether the timer restarted after `mark` (a leader was heard, a vote was granted).
    fn restarted_since(&self, mark: u64) -> bool {
        self.timer.raw() > mark
    }
}

/// Whether a majority of every voter configuration (two during a membership change, like
/// the real vote) would vote for this server now; stops asking once the answer is known.
async fn pre_vote(inner: &Arc<Inner>, configs: &[BTreeSet<NodeId>], timeout: Duration) -> bool {
    let last_log = inner.raft.data_metrics().borrow().last_log;
    let Ok(body) = rmp_serde::to_vec(&Rpc::PreVote { last_log }) else {
        return false;
    };
    let mut yes: BTreeSet<NodeId> = [inner.id].into();
    let mut no: BTreeSet<NodeId> = BTreeSet::new();
    let peers: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
    let mut asks: FuturesUnordered<_> = peers
        .iter()
        .filter(|p| **p != inner.id)
        .map(|peer| {
            let reply = inner.transport.request(*peer, body.clone(), timeout);
            async move { (*peer, reply.await) }
        })
        .collect();
    let majority =
        |c: &BTreeSet<NodeId>, of: &BTreeSet<NodeId>| c.intersection(of).count() * 2 > c.len();
    loop {
        if configs.iter().all(|c| majority(c, &yes)) {
            return true;
        }
        // Some configuration can no longer reach a majority of yes.
        if configs
            .iter()
            .any(|c| (c.len() - c.intersection(&no).count()) * 2 <= c.len())
        {
            return false;
        }
        let Some((peer, reply)) = asks.next().await else {
            return false;
        };
        let granted = matches!(
            reply.ok().and_then(|b| rmp_serde::from_slice(&b).ok()),
            Some(RpcReply::PreVote(true))
        );
        if granted {
            yes.insert(peer);
        } else {
            no.insert(peer);
        }
    }
}

impl Inner {
    /// A pre-vote: yes if this server has not heard from a leader for a lease itself (it would
    /// refuse the real vote before that) and the candidate's log is at least as long as ours.
    pub(crate) fn grants_pre_vote(&self, candidate_last_log: Option<LogId<NodeId>>) -> bool {
        let leads = self.raft.server_metrics().borrow().state == ServerState::Leader;
        let heard = self.contact.leader.get(self.contact.origin);
        if leads || Instant::now() < heard + self.lease {
            return false;
        }
        candidate_last_log >= self.raft.data_metrics().borrow().last_log
    }
}

/// Stands for election whenever the leader has been silent long enough.
pub(crate) async fn run(inner: Arc<Inner>, min: Duration, max: Duration) {
    let _ = inner.contact.restart_timer();
    loop {
        let wait = max
            + Duration::from_millis(synctree_raft::random_in(
                min.as_millis() as u64,
                max.as_millis() as u64,
            ));
        let due = inner.contact.timer.get(inner.contact.origin) + wait;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            // The timer may have restarted meanwhile: measure again, with a fresh draw.
            if inner.contact.timer.get(inner.contact.origin) + wait > Instant::now() {
                continue;
            }
        }
        let mark = inner.contact.restart_timer();
        let metrics = inner.raft.server_metrics();
        let (leads, configs) = {
            let m = metrics.borrow();
            let configs = m.membership_config.membership().get_joint_config().clone();
            (m.state == ServerState::Leader, configs)
        };
        if leads || !configs.iter().any(|c| c.contains(&inner.id)) {
            continue;
        }
        if !pre_vote(&inner, &configs, min).await {
            tracing::debug!(
                "node {}: no leader heard from for {wait:?}, but the pre-vote failed",
                inner.id
            );
            continue;
        }
        // Another candidate got this server's vote, or a leader spoke, while it asked: that
        // election goes on without a rival.
        if inner.contact.restarted_since(mark) {
            continue;
        }
        tracing::info!(
            "node {}: no leader heard from for {wait:?}; standing for election",
            inner.id
        );
        if let Err(e) = inner.raft.trigger().elect().await {
            inner.record_fatal(&e);
            return;
        }
    }
}
