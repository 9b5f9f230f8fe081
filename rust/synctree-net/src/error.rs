//! Error types of the crate: one per concern, each message naming the peer or file involved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::NodeId;

/// Why a [`Transport::request`](crate::Transport::request) did not produce a response.
///
/// Recoverable by nature: the caller (Raft) retries later. Cheap to clone so one failure can be
/// handed to several waiters.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// No connection to the peer could be made or kept (down, partitioned, wrong certificate).
    #[error("node {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer the request was for.
        peer: NodeId,
        /// What went wrong, for logs.
        reason: String,
    },
    /// The peer did not answer within the caller's timeout.
    #[error("request to node {peer} timed out after {after:?}")]
    Timeout {
        /// The peer the request was for.
        peer: NodeId,
        /// The timeout the caller gave.
        after: Duration,
    },
    /// The peer's handler understood the request but failed it ([`HandlerError::Failed`]).
    #[error("node {peer} failed the request: {message}")]
    Remote {
        /// The peer that answered.
        peer: NodeId,
        /// The handler's error text, verbatim.
        message: String,
    },
    /// The peer broke the wire protocol, or closed the connection because we did.
    #[error("protocol error with node {peer}: {reason}")]
    Protocol {
        /// The peer involved.
        peer: NodeId,
        /// What was violated.
        reason: String,
    },
    /// No address is known for this node; see [`Transport::set_peer`](crate::Transport::set_peer).
    #[error("no address known for node {0}")]
    UnknownPeer(NodeId),
    /// This transport was shut down (or its node crashed, in the in-memory network).
    #[error("the transport of node {local} is shut down")]
    Shutdown {
        /// The node that owns this transport.
        local: NodeId,
    },
}

impl NetError {
    /// The peer this error is about, if it is about one.
    pub fn peer(&self) -> Option<NodeId> {
        match self {
            NetError::Unreachable { peer, .. }
            | NetError::Timeout { peer, .. }
            | NetError::Remote { peer, .. }
            | NetError::Protocol { peer, .. } => Some(*peer),
            NetError::UnknownPeer(peer) => Some(*peer),
            NetError::Shutdown { .. } => None,
        }
    }
}

/// What a [`Handler`](crate::Handler) reports instead of a response.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// The request could not be decoded: the transport closes that connection and logs the reason.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request was understood but failed; the error text goes back to the caller.
    #[error("{0}")]
    Failed(String),
}

/// Why [`QuicTransport::start`](crate::QuicTransport::start) could not start.
#[derive(thiserror::Error, Debug)]
pub enum StartError {
    /// `start` must run inside a tokio runtime (it spawns the accept loop).
    #[error("QuicTransport::start must be called inside a tokio runtime")]
    NoRuntime,
    /// The UDP socket could not be bound or set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid QUIC configuration: {0}")]
    Config(String),
    /// The TLS material does not make a usable configuration.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    /// The certificate names another node than the configured id.
    #[error("configured as node {configured} but the certificate is for node {in_cert}")]
    IdMismatch {
        /// `QuicConfig::id`.
        configured: NodeId,
        /// The id in the certificate's `node-<id>.synctree` name.
        in_cert: NodeId,
    },
}

/// A TLS configuration or certificate problem.
#[derive(thiserror::Error, Debug, Clone)]
pub enum TlsError {
    /// rustls refused the configuration (e.g. key does not match certificate).
    #[error("rustls rejected the configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate verifier could not be built (e.g. unusable CA certificate).
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(String),
    /// The rustls configuration lacks what QUIC requires (TLS 1.3, an initial cipher suite).
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
    /// The certificate is not valid X.509 DER.
    #[error("certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The certificate carries no `node-<id>.synctree` DNS name.
    #[error("certificate carries no node-<id>.synctree name")]
    NoNodeName,
    /// The certificate names several different nodes.
    #[error("certificate names several nodes: {0:?}")]
    AmbiguousNodeName(Vec<NodeId>),
    /// The peer presented no certificate (cannot happen when client auth is enforced).
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// No certificate was given for this node.
    #[error("the certificate chain is empty")]
    EmptyChain,
}

/// A problem creating or loading certificate files.
#[derive(thiserror::Error, Debug)]
pub enum CertError {
    /// A required file does not exist.
    #[error("missing file {}", path.display())]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists but holds no usable PEM item of the expected kind.
    #[error("{}: bad PEM ({reason})", path.display())]
    Pem {
        /// The bad file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A certificate file holds a certificate that is unusable for us.
    #[error("{}: {source}", path.display())]
    Certificate {
        /// The bad file.
        path: PathBuf,
        /// What was wrong with the certificate.
        source: TlsError,
    },
    /// A node certificate names another node than the one asked for.
    #[error("{}: certificate is for node {found}, expected node {expected}", path.display())]
    WrongNode {
        /// The certificate file.
        path: PathBuf,
        /// The node id asked for.
        expected: NodeId,
        /// The node id in the certificate.
        found: NodeId,
    },
    /// Generating or signing a key or certificate failed.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Refusing to overwrite an existing CA (every node certificate depends on it).
    #[error("{} already exists; refusing to replace the cluster CA", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Another process held the lock and did not finish in time.
    #[error(
        "gave up after {waited:?} waiting for another process to create the files guarded by {}; \
         delete it if no other server is starting",
        lock.display()
    )]
    LockTimeout {
        /// The lock file.
        lock: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
}
