//! A running server: start-up, status, shutdown.

use crate::config::ServerConfig;
use crate::node::Node;
use std::time::Duration;
use synctree_raft::NodeId;

/// The server could not start; the message names the part that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Store(#[from] synctree_raft::StoreError),
    #[error("cannot open the Raft state: {0}")]
    State(String),
    #[error("TLS certificates: {0}")]
    Certs(#[from] synctree_net::CertError),
    #[error("cannot start the QUIC endpoint: {0}")]
    Transport(#[from] synctree_net::StartError),
    #[error("invalid Raft configuration: {0}")]
    Raft(String),
    #[error("node id {0} also appears among its own peers")]
    SelfInPeers(NodeId),
}

/// One synctree server: a [`Node`] on a tokio runtime of its own (everything a `Node` does,
/// a `Server` does, through `Deref`).
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    node: Node,
}

impl Server {
    /// Starts a server: a runtime, then [`Node::start`] on it.
    pub fn start(cfg: ServerConfig) -> Result<Server, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads.max(1))
            .thread_name(format!("synctree-{}", cfg.id))
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let node = runtime.block_on(Node::start(cfg))?;
        Ok(Server {
            runtime: Some(runtime),
            node,
        })
    }

    /// Stops Raft, closes the transport and the runtime. Committed state is on disk.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.block_on(self.node.stop());
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl std::ops::Deref for Server {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
