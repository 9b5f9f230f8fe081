//! Serves requests from peers: Raft RPCs, forwarded proposals and read-index requests.

use crate::node::Inner;
use crate::rpc::{ForwardError, Relayed, Rpc, RpcReply, MAX_RPC_BYTES};
use futures::future::BoxFuture;
use futures::FutureExt;
use openraft::raft::AppendEntriesResponse;
use std::sync::{Arc, OnceLock};
use synctree_net::{Handler, HandlerError, NodeId, OPERATOR_ID};

/// What a server answers while it is still starting (its peers back off as from an
/// unreachable one).
pub(crate) const STARTING: &str = "server is still starting";

/// The transport's handler. It exists before the Raft node (the transport must be up to
/// build it), so it holds the node in a cell filled once start-up completes.
#[derive(Default)]
pub(crate) struct RpcHandler {
    pub(crate) inner: OnceLock<Arc<Inner>>,
}

impl Handler for RpcHandler {
    fn handle(
        &self,
        from: NodeId,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>> {
        let inner = self.inner.get().cloned();
        async move {
            let Some(inner) = inner else {
                return Err(HandlerError::Failed(STARTING.into()));
            };
            if body.len() > MAX_RPC_BYTES {
                return Err(HandlerError::Malformed(format!(
                    "request of {} bytes exceeds the limit of {MAX_RPC_BYTES}",
                    body.len()
                )));
            }
            let rpc: Rpc = rmp_serde::from_slice(&body).map_err(|e| {
                HandlerError::Malformed(format!("undecodable request from node {from}: {e}"))
            })?;
            if from == OPERATOR_ID && !matches!(rpc, Rpc::Membership(_) | Rpc::Status) {
                return Err(HandlerError::Failed(
                    "an operator certificate may change membership and ask for status, \
                     nothing else"
                        .into(),
                ));
            }
            let reply = serve(&inner, from, rpc).await;
            rmp_serde::to_vec(&reply)
                .map_err(|e| HandlerError::Failed(format!("cannot encode reply: {e}")))
        }
        .boxed()
    }

    /// Eventual writes another server relayed (unreliable: a lost one is superseded by the
    /// next write of its property).
    fn datagram(&self, from: NodeId, body: Vec<u8>) {
        let Some(inner) = self.inner.get() else {
            return;
        };
        if from == OPERATOR_ID {
            return;
        }
        match crate::rpc::unpack_datagram(&body) {
            Ok(sets) => {
                for set in sets {
                    inner.peers.eventual(set, false);
                }
            }
            Err(e) => tracing::warn!(
                node = inner.id,
                "dropped a datagram from server {from}: {e}"
            ),
        }
    }
}

async fn serve(inner: &Inner, from: NodeId, rpc: Rpc) -> RpcReply {
    match rpc {
        // A leader that reached this server (or a vote it granted) restarts its election
        // timer (see `elector`).
        Rpc::AppendEntries(req) => {
            let r = inner.raft.append_entries(req).await;
            if matches!(
                r,
                Ok(AppendEntriesResponse::Success
                    | AppendEntriesResponse::PartialSuccess(_)
                    | AppendEntriesResponse::Conflict)
            ) {
                inner.contact.heard_leader();
            }
            RpcReply::AppendEntries(r)
        }
        Rpc::Vote(req) => {
            let r = inner.raft.vote(req).await;
            if r.as_ref().is_ok_and(|v| v.vote_granted) {
                let _ = inner.contact.restart_timer();
            }
            RpcReply::Vote(r)
        }
        Rpc::InstallSnapshot(req) => {
            let r = inner.raft.install_snapshot(req).await;
            if r.is_ok() {
                inner.contact.heard_leader();
            }
            RpcReply::InstallSnapshot(r)
        }
        Rpc::Propose(batch) => RpcReply::Propose(inner.write_local(batch).await),
        Rpc::ReadIndex => RpcReply::ReadIndex(inner.read_index_local().await),
        // An operator may ask any server (it routes the change to the leader); a server only
        // forwards to the one it believes leads.
        Rpc::Membership(change) if from == OPERATOR_ID => {
            RpcReply::Membership(inner.membership(change).await.map_err(|e| {
                if e.uncertain {
                    ForwardError::Failed(e.message)
                } else {
                    ForwardError::Refused(e.message)
                }
            }))
        }
        Rpc::Membership(change) => RpcReply::Membership(inner.membership_local(&change).await),
        Rpc::Status => RpcReply::Status(inner.status()),
        Rpc::PreVote { last_log } => RpcReply::PreVote(inner.grants_pre_vote(last_log)),
        Rpc::Relayed {
            session,
            seq,
            items,
        } => {
            if !inner.peers.relay_is_new(from, session, seq) {
                return RpcReply::Ack;
            }
            for item in items {
                match item {
                    Relayed::Rpc(rpc) => inner.peers.relayed(rpc),
                    Relayed::Eventual(set) => inner.peers.eventual(set, false),
                    Relayed::Presence(list) => inner.peers.heard(from, list),
                }
            }
            RpcReply::Ack
        }
    }
}

/// Maps a local openraft refusal to what a forwarding peer needs to know.
pub(crate) fn not_leader(leader: Option<NodeId>) -> ForwardError {
    ForwardError::NotLeader { leader }
}
