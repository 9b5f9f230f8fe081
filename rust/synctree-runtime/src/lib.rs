//! The synctree server runtime: owns a tokio runtime, runs the Raft group over the
//! transport, batches and forwards proposals, serves linearizable reads, and hands
//! committed effects to the thread that owns the live scene tree.
//!
//! ```text
//!  main thread                         tokio (this crate)
//!  ───────────                         ──────────────────
//!  submit(op) ─► stamp (HLC) ─► queue ─► batcher: one batch in flight per server
//!                                          ├─ leader here: raft.client_write(batch)
//!                                          └─ else: Rpc::Propose ─► leader (QUIC)
//!  poll_completions() ◄──────── outcome per op (with the log index it committed at)
//!  try_recv_applied() ◄──────── Applied { index, effects } from the state machine, in order
//!  status() ◄────────────────── openraft metrics
//! ```
//! Nothing here touches Godot: the main thread polls, never blocks on Raft.

mod admin;
mod clients;
mod config;
mod elector;
mod game_client;
mod handler;
mod held;
mod membership;
mod network;
mod node;
mod peers;
mod pipe;
mod proposer;
mod quorum;
mod rpc;
mod server;

pub use admin::{AdminClient, AdminError};
pub use clients::{anonymous_token, peer_id_of, AuthRequest, ClientsConfig};
pub use config::{
    offset_system_clock, parse_id, parse_peers, ConfigError, Hooks, RaftTuning, ServerConfig,
    StorageMode, TlsSource, TransportMode,
};
pub use game_client::{ClientStatus, GameClient, GameClientConfig};
pub use membership::{Membership, MembershipChange};
pub use node::{Node, Status};
pub use peers::PeerLink;
pub use pipe::{FramePipe, Pulled};
pub use proposer::{Completion, Done, RequestError};
pub use server::{Server, StartError};
pub use synctree_net::MemNetwork;
pub use synctree_raft::{Applied, NodeId, SharedState};
