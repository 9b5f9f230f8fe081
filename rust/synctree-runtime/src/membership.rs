//! Membership changes at runtime, carried out on the leader (forwarded like writes):
//!
//! ```text
//!   AddLearner{id, addr}  the new server (started with `join`) receives the log, votes on nothing
//!   Promote{id}           once it has caught up, it becomes a voter (joint consensus)
//!   Remove{id}            a voter or learner leaves (a dead server is removed this way)
//! ```
//! Each change is one membership entry in the log; a refused change says why and changes
//! nothing.

use crate::handler::not_leader;
use crate::node::Inner;
use crate::rpc::ForwardError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use synctree_raft::NodeId;

/// A change of the set of servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add server `id`, reachable at `addr` (its QUIC address), as a learner.
    AddLearner { id: NodeId, addr: String },
    /// Make learner `id` a voter once it has caught up with the leader.
    Promote { id: NodeId },
    /// Remove server `id` (voter or learner).
    Remove { id: NodeId },
}

impl std::fmt::Display for MembershipChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipChange::AddLearner { id, addr } => write!(f, "add learner {id} at {addr}"),
            MembershipChange::Promote { id } => write!(f, "promote {id} to voter"),
            MembershipChange::Remove { id } => write!(f, "remove {id}"),
        }
    }
}

/// The membership after a change: the log index of its entry, voters and learners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// A learner this close to the leader's last log entry may be promoted.
const PROMOTE_LAG: u64 = 64;
/// How long a promotion waits for a learner to catch up before it is refused (at most half
/// the request timeout, so the answer reaches the asker in time).
const PROMOTE_WAIT: Duration = Duration::from_secs(3);

impl Inner {
    /// Carries out `change`; this node must be the leader.
    pub(crate) async fn membership_local(
        &self,
        change: &MembershipChange,
    ) -> Result<Membership, ForwardError> {
        // The effective membership (the latest appended, maybe not committed yet), as Raft
        // holds it: the metrics show the committed one, which may lag a change under way.
        let view = self
            .raft
            .with_raft_state(|st| {
                let effective = st.membership_state.effective();
                let m = effective.membership();
                (
                    st.server_state == ServerState::Leader,
                    m.voter_ids().collect::<BTreeSet<NodeId>>(),
                    m.learner_ids().collect::<BTreeSet<NodeId>>(),
                    effective.log_id().map(|l| l.index).unwrap_or(0),
                )
            })
            .await;
        let (leads, voters, learners, index) = match view {
            Ok(v) => v,
            Err(e) => {
                self.record_fatal(&e);
                return Err(ForwardError::NotLeader { leader: None });
            }
        };
        if !leads {
            return Err(not_leader(self.raft.metrics().borrow().current_leader));
        }
        // A leader that was just removed still leads until it hands over; it must not start
        // another change (openraft requires the leader to be a member).
        if !voters.contains(&self.id) {
            return Err(not_leader(None));
        }
        let current = Membership {
            index,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
        };
        let changes: ChangeMembers<NodeId, BasicNode> = match change {
            MembershipChange::AddLearner { id, addr } => {
                addr.parse::<SocketAddr>().map_err(|e| {
                    ForwardError::Refused(format!("invalid address '{addr}' for server {id}: {e}"))
                })?;
                if *id == synctree_net::OPERATOR_ID {
                    return Err(ForwardError::Refused("server ids start at 1".into()));
                }
                if voters.contains(id) {
                    return Err(ForwardError::Refused(format!(
                        "server {id} is already a voter"
                    )));
                }
                if learners.contains(id) {
                    return Ok(current);
                }
                let mut nodes = BTreeMap::new();
                nodes.insert(*id, BasicNode { addr: addr.clone() });
                ChangeMembers::AddNodes(nodes)
            }
            MembershipChange::Promote { id } => {
                if voters.contains(id) {
                    return Ok(current);
                }
                if !learners.contains(id) {
                    return Err(ForwardError::Refused(format!(
                        "server {id} is not a learner: add it with add_learner first"
                    )));
                }
                self.wait_caught_up(*id).await?;
                ChangeMembers::AddVoterIds([*id].into())
            }
            MembershipChange::Remove { id } => {
                if voters.contains(id) {
                    if voters.len() == 1 {
                        return Err(ForwardError::Refused(format!(
                            "server {id} is the last voter; a cluster needs one"
                        )));
                    }
                    ChangeMembers::RemoveVoters([*id].into())
                } else if learners.contains(id) {
                    ChangeMembers::RemoveNodes([*id].into())
                } else {
                    return Err(ForwardError::Refused(format!(
                        "server {id} is not a member"
                    )));
                }
            }
        };
        tracing::info!("membership change on leader {}: {change}", self.id);
        // A change is two log entries (joint, then final configuration) made by this one
        // call: it runs on a task of its own so that a caller who stops waiting (request
        // timeout) does not cut it between the two and leave the cluster in joint consensus.
        let raft = self.raft.clone();
        let change_task = tokio::spawn(async move { raft.change_membership(changes, false).await });
        let result = match change_task.await {
            Ok(r) => r,
            Err(e) => {
                return Err(ForwardError::Failed(format!(
                    "{change} was interrupted: {e}"
                )))
            }
        };
        match result {
            Ok(resp) => {
                let (voters, learners) = match &resp.membership {
                    Some(m) => (m.voter_ids().collect(), m.learner_ids().collect()),
                    None => (Vec::new(), Vec::new()),
                };
                Ok(Membership {
                    index: resp.log_id.index,
                    voters,
                    learners,
                })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ForwardError::Refused(format!("{change} refused: {e}")))
            }
            // Raft stopped here (shutting down, or a fatal error): ask elsewhere (the change
            // checks the membership again there).
            Err(RaftError::Fatal(e)) => {
                self.record_fatal(&e);
                Err(ForwardError::NotLeader { leader: None })
            }
        }
    }

    /// Waits until learner `id` has replicated close to the leader's last entry.
    async fn wait_caught_up(&self, id: NodeId) -> Result<(), ForwardError> {
        let deadline = tokio::time::Instant::now() + PROMOTE_WAIT.min(self.request_timeout / 2);
        let mut metrics = self.raft.metrics();
        loop {
            let (matched, last) = {
                let m = metrics.borrow_and_update();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index);
                (matched, m.last_log_index.unwrap_or(0))
            };
            if matched.is_some_and(|i| i + PROMOTE_LAG >= last) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ForwardError::Refused(format!(
                    "server {id} is still catching up ({} of {last} entries replicated); \
                     try again when it has",
                    matched.map_or("none".to_owned(), |i| i.to_string())
                )));
            }
            if let Ok(Err(_)) = tokio::time::timeout(left, metrics.changed()).await {
                // Raft stopped here: let the change be asked elsewhere.
                return Err(ForwardError::NotLeader { leader: None });
            }
        }
    }
}
