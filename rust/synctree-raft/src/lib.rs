//! openraft glue for synctree: the type config, a durable log store on redb, and the
//! state machine that applies committed batches to the shadow tree.
//!
//! ```text
//!  client_write(Batch) ─► openraft ─► LogStore (redb: logs, vote, committed; fsync per append
//!                                  │             through the journal, see `journal`)
//!                                  └► StateMachine::apply ─► ShadowTree::apply per event
//!                                        │                        │
//!                                        ▼                        ▼
//!                                 BatchResponse (outcomes)   Applied { index, effects } ─► bounded
//!                                                            channel to the Godot main thread
//! ```
//! Snapshots (the whole shadow tree) are stored in the same database, so a restarted server
//! rebuilds its state from the last snapshot plus the committed log after it.

// openraft's StorageError is large by design; the storage traits return it.
#![allow(clippy::result_large_err)]

mod feed;
pub mod journal;
mod log_store;
mod runtime;
mod state_machine;
mod store;
mod types;

pub use feed::{Feed, FeedChunk, FeedItem, Start};
pub use log_store::{describe_entry, log_records, LogObserver, LogRecord, LogStore};
pub use runtime::{random_in, seed_thread_rng, SyncRuntime};
pub use state_machine::{Applied, Session, Sessions, SharedState, StateMachine, SESSION_WINDOW};
pub use store::{open, Durability, Storage, StoreError};
pub use types::{BatchResponse, NodeId, Raft, TypeConfig};

pub use openraft;
