//! Operator requests to a running server, over QUIC with the operator's certificate
//! (`node-0`, made by `synctree certs --operator`): status and membership changes. The server
//! asked routes a change to the leader.
//!
//! ```text
//!   synctree membership --certs DIR --server 1@10.0.0.1:7001 promote 4
//!      └─ AdminClient ──QUIC (mutual TLS, identity node-0)──▶ server 1 ──▶ leader
//! ```

use crate::membership::{Membership, MembershipChange};
use crate::node::Status;
use crate::rpc::{ForwardError, Rpc, RpcReply};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use synctree_net::{handler_fn, HandlerError, QuicConfig, QuicTransport, TlsMaterial, Transport};
use synctree_raft::NodeId;

/// An operator request failed; the message says where and why.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot load the operator certificate: {0}")]
    Certs(#[from] synctree_net::CertError),
    #[error("cannot start a QUIC endpoint: {0}")]
    Start(String),
    #[error("server {server} did not answer: {reason}")]
    Unreachable { server: NodeId, reason: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed (it may still take effect): {0}")]
    Failed(String),
    #[error("server {0} sent an answer that does not fit the request")]
    Protocol(NodeId),
}

/// A connection to one server, as the operator.
pub struct AdminClient {
    runtime: tokio::runtime::Runtime,
    transport: QuicTransport,
    server: NodeId,
    timeout: Duration,
}

impl AdminClient {
    /// Loads `ca.pem` and `node-0.pem/.key` from `certs` and prepares to talk to server
    /// `server` at `addr`.
    pub fn connect(certs: &Path, server: NodeId, addr: SocketAddr) -> Result<Self, AdminError> {
        let material = TlsMaterial::load(certs, synctree_net::OPERATOR_ID)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AdminError::Start(e.to_string()))?;
        let local = SocketAddr::from(([0, 0, 0, 0], 0));
        let cfg = QuicConfig::new(synctree_net::OPERATOR_ID, local, material)
            .with_peers([(server, addr)]);
        let serves_nothing = handler_fn(|_, _| async {
            Err::<Vec<u8>, _>(HandlerError::Failed(
                "an operator tool serves no requests".into(),
            ))
        });
        let transport = runtime
            .block_on(async { QuicTransport::start(cfg, serves_nothing) })
            .map_err(|e| AdminError::Start(e.to_string()))?;
        Ok(AdminClient {
            runtime,
            transport,
            server,
            timeout: Duration::from_secs(30),
        })
    }

    fn call(&self, rpc: &Rpc) -> Result<RpcReply, AdminError> {
        let body = rmp_serde::to_vec(rpc).map_err(|e| AdminError::Start(e.to_string()))?;
        let bytes = self
            .runtime
            .block_on(self.transport.request(self.server, body, self.timeout))
            .map_err(|e| AdminError::Unreachable {
                server: self.server,
                reason: e.to_string(),
            })?;
        rmp_serde::from_slice(&bytes).map_err(|_| AdminError::Protocol(self.server))
    }

    /// The server's Raft status.
    pub fn status(&self) -> Result<Status, AdminError> {
        match self.call(&Rpc::Status)? {
            RpcReply::Status(s) => Ok(s),
            _ => Err(AdminError::Protocol(self.server)),
        }
    }

    /// Carries out a membership change (the server routes it to the leader).
    pub fn change(&self, change: MembershipChange) -> Result<Membership, AdminError> {
        match self.call(&Rpc::Membership(change))? {
            RpcReply::Membership(Ok(m)) => Ok(m),
            RpcReply::Membership(Err(ForwardError::Refused(e))) => Err(AdminError::Refused(e)),
            RpcReply::Membership(Err(ForwardError::Failed(e))) => Err(AdminError::Failed(e)),
            RpcReply::Membership(Err(ForwardError::NotLeader { leader })) => {
                Err(AdminError::Failed(format!(
                    "no leader took the change (last known leader: {leader:?})"
                )))
            }
            _ => Err(AdminError::Protocol(self.server)),
        }
    }
}

impl Drop for AdminClient {
    fn drop(&mut self) {
        let transport = self.transport.clone();
        self.runtime
            .block_on(async move { transport.shutdown().await });
    }
}
