//! Messages between servers, encoded with rmp-serde inside one transport request each.

use crate::membership::{Membership, MembershipChange};
use crate::node::Status;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use synctree_proto::{EncodedBatch, EventualSet, OpOutcome, PeerRpc};
use synctree_raft::{NodeId, TypeConfig};

/// Largest request a server accepts from a peer (a snapshot chunk is at most 3 MiB).
pub const MAX_RPC_BYTES: usize = 64 << 20;

/// A request from one server to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower forwards a batch its clients proposed; the leader proposes it.
    Propose(EncodedBatch),
    /// A follower asks the leader for a read index (leadership confirmed by a quorum).
    ReadIndex,
    /// A membership change, for the leader (from a server, or from an operator).
    Membership(MembershipChange),
    /// This server's status (operators).
    Status,
    /// Would you vote for a candidate with this last log entry? (Raft's pre-vote: asked
    /// before standing, so a server that cannot win does not disturb the others.)
    PreVote {
        last_log: Option<openraft::LogId<NodeId>>,
    },
    /// Godot rpcs for the receiver's own game clients and stamped eventual writes for its
    /// Godot and clients (see `peers`), in the order the sender made them: the `seq`th
    /// batch the sender's run `session` sent this receiver (a batch sent again, or one that
    /// arrives after a later one, is acknowledged and not taken twice or out of order).
    Relayed {
        session: u64,
        seq: u64,
        items: Vec<Relayed>,
    },
}

/// What one server relays to another for its Godot and game clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Relayed {
    /// A Godot rpc for the receiver's own game clients.
    Rpc(PeerRpc),
    /// A stamped write of an eventual property.
    Eventual(EventualSet),
    /// The game clients connected to the sender now.
    Presence(Vec<u64>),
}

/// Why the leader did not take a forwarded proposal or read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the leader; here is who it thinks is.
    NotLeader { leader: Option<NodeId> },
    /// Refused: certainly not done, with the reason.
    Refused(String),
    /// Anything else, with the reason (it may have been done).
    Failed(String),
}

/// A committed proposal: its log index and one outcome per event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed {
    pub index: u64,
    pub outcomes: Vec<OpOutcome>,
    /// Not applied: overtaken by a later batch of the same server (see `BatchResponse`).
    pub stale: bool,
}

/// The answer to an [`Rpc`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(Result<Committed, ForwardError>),
    ReadIndex(Result<u64, ForwardError>),
    Membership(Result<Membership, ForwardError>),
    Status(Status),
    PreVote(bool),
    /// Taken (relay, presence).
    Ack,
}
