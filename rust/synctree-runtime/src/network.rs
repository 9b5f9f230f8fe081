//! openraft's network, carried by a [`Transport`] (QUIC in servers, in-memory in tests).

use crate::rpc::{Rpc, RpcReply};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use std::sync::Arc;
use std::time::Duration;
use synctree_net::{NetError, Transport};
use synctree_raft::{NodeId, TypeConfig};

/// Makes one [`PeerClient`] per replication target; they share the transport.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(crate) transport: Arc<dyn Transport>,
    /// First wait before replicating again to an unreachable peer (doubles up to
    /// `backoff_max`).
    pub(crate) backoff: Duration,
    /// Longest wait between attempts: below the election timeout, so a peer that comes
    /// back hears from its leader before it would stand for election itself.
    pub(crate) backoff_max: Duration,
    /// Where replies are recorded (whether a leader is in touch with a quorum).
    pub(crate) answers: Arc<crate::quorum::PeerAnswers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        if let Ok(addr) = node.addr.parse() {
            self.transport.set_peer(target, addr);
        }
        PeerClient {
            target,
            transport: self.transport.clone(),
            backoff: self.backoff,
            backoff_max: self.backoff_max,
            answers: self.answers.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    transport: Arc<dyn Transport>,
    backoff: Duration,
    backoff_max: Duration,
    answers: Arc<crate::quorum::PeerAnswers>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<RpcReply, RpcErr<E>> {
        let body = rmp_serde::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = self
            .transport
            .request(self.target, body, option.hard_ttl())
            .await
            .map_err(|e| match &e {
                NetError::Unreachable { .. }
                | NetError::UnknownPeer(_)
                | NetError::Shutdown { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                // Not ready yet: wait as for an unreachable peer (openraft retries other
                // failures at once, which spins against a peer that is restarting).
                NetError::Remote { message, .. } if message == crate::handler::STARTING => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        self.answers.answered(self.target);
        rmp_serde::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    fn unexpected<E: std::error::Error>(&self, reply: &RpcReply) -> RpcErr<E> {
        let msg = format!(
            "node {} answered with the wrong reply kind: {reply:?}",
            self.target
        );
        RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// openraft waits a constant 500 ms after a failed RPC to an unreachable peer; a peer
    /// that restarted would then hear from its leader only that much later, time out and
    /// stand for election (disrupting the cluster). Start at one heartbeat and double up to
    /// half the shortest election timeout.
    fn backoff(&self) -> Backoff {
        let first = self.backoff.max(Duration::from_millis(1));
        let max = self.backoff_max.max(first);
        Backoff::new((0u32..).map(move |i| first.saturating_mul(1 << i.min(16)).min(max)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.call(Rpc::AppendEntries(rpc), &option).await? {
            RpcReply::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.call(Rpc::InstallSnapshot(rpc), &option).await? {
            RpcReply::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(Rpc::Vote(rpc), &option).await? {
            RpcReply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }
}
