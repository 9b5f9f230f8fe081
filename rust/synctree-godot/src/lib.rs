//! The synctree GDExtension: `SyncedTree`, `SyncRequest` and `SyncedMultiplayerAPI`.
//!
//! ```text
//!  GDScript ─► SyncedTree.spawn/despawn/set_synced/read_synced ─► SyncRequest
//!                 │ validate now (types, scenes, properties)        ▲ completed(ok, result)
//!                 ▼                                                 │
//!            synctree-runtime (tokio: Raft over QUIC)               │
//!                 │ committed effects (bounded channel)             │
//!                 ▼                                                 │
//!  SyncedTree._process: apply at most N effects per frame ──────────┘ (after the live tree
//!                       onto the live scene tree, emit signals          reached the op's index)
//! ```
//! No tokio task touches a Godot object; the main thread polls.

mod backend;
mod config;
mod live;
mod multiplayer;
mod peer_transport;
mod prediction;
mod sync_request;
mod synced_tree;
mod variant;

use godot::prelude::*;

struct SyncTreeExtension;

#[gdextension]
unsafe impl ExtensionLibrary for SyncTreeExtension {
    fn on_stage_init(stage: InitStage) {
        if stage == InitStage::Scene {
            init_logging();
        }
    }
}

/// Logs from the Rust side go to stderr, filtered by `SYNCTREE_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNCTREE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,quinn=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
