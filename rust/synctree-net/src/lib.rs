//! Request/response transport between synctree servers.
//!
//! A server sends opaque bytes to a peer and gets opaque bytes back; what the bytes mean (Raft
//! RPCs, forwarded proposals) is the business of the runtime above. Two implementations share the
//! [`Transport`] trait: QUIC with mutual TLS for real clusters ([`quic`]) and an in-memory network
//! with fault hooks for tests ([`mem`]).
//!
//! ```text
//!   caller ──request(target, body, timeout)──▶ Transport ─┐
//!                                                         │ QUIC bi-stream (mTLS, cluster CA)
//!                                                         │   or in-memory channel
//!   caller ◀──────── Ok(response) / NetError ◀────────────┤
//!                                                         ▼
//!                                      peer: Handler::handle(from, body)
//!                                            -> Ok(bytes) | HandlerError
//! ```
//!
//! Identity comes from TLS: each server holds a certificate for `node-<id>.synctree` signed by
//! the cluster CA ([`certs`], [`tls`]). A client checks it reached the node it asked for; a server
//! learns the caller's [`NodeId`] from the client certificate, so handlers never trust an id the
//! peer merely claims.
//!
//! Wire format of one request (one QUIC bidirectional stream per request):
//!
//! ```text
//!   request : u32 big-endian length | body
//!   response: u32 big-endian length | status (0 = ok, 1 = failed: body is the error text) | body
//! ```

pub mod certs;
pub mod clients;
mod error;
pub mod frame;
mod handler;
pub mod mem;
pub mod ports;
pub mod quic;
pub mod tls;
mod transport;

pub use error::{CertError, HandlerError, NetError, StartError, TlsError};
pub use handler::{handler_fn, Handler};
pub use mem::{MemNetwork, MemTransport};
pub use quic::{QuicConfig, QuicTransport};
pub use tls::TlsMaterial;
pub use transport::Transport;

/// Identifies a server in the cluster (the same id Raft uses).
pub type NodeId = u64;

/// The identity of an operator's certificate (`node-0.synctree`): it may change membership
/// and ask for status, never take part in Raft.
pub const OPERATOR_ID: NodeId = 0;
