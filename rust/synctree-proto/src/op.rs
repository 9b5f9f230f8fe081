//! Ops, the events that carry them through the log, and their outcomes.

use crate::{ApplyError, CodecError, Stamp, Value};
use serde::{Deserialize, Serialize};

/// A change to the synced tree. Paths are relative to the SyncedTree root (`""`).
/// Variants travel with one-letter tags (in every log entry and client write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Instance `scene` (a `res://` PackedScene path, or a class name such as `Node2D`) as a
    /// child named `name` of `parent`, then set `props` on it, in order. `owner` is the peer
    /// that may change or despawn it besides the servers ([`SERVER_PEER`]: servers only).
    #[serde(rename = "S")]
    Spawn {
        parent: String,
        name: String,
        scene: String,
        props: Vec<(String, Value)>,
        owner: u64,
    },
    /// Remove the node at `path` and its whole subtree.
    #[serde(rename = "D")]
    Despawn { path: String },
    /// Set `property` of the node at `path`.
    #[serde(rename = "P")]
    SetProperty {
        path: String,
        property: String,
        value: Value,
    },
    /// Set `property` of the node at `path` to `value` only if it holds `expected` now
    /// (`None`: it was never set); else refused with [`ApplyError::CompareFailed`].
    #[serde(rename = "C")]
    CompareAndSet {
        path: String,
        property: String,
        expected: Option<Value>,
        value: Value,
    },
}

impl Op {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Spawn { .. } => "spawn",
            Op::Despawn { .. } => "despawn",
            Op::SetProperty { .. } => "set_property",
            Op::CompareAndSet { .. } => "compare_and_set",
        }
    }
}

/// Identifies one op proposal across the cluster: the proposing server and its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpId {
    pub origin: u64,
    pub seq: u64,
}

/// The peer id of the servers, as Godot's multiplayer API numbers them: the owner of what
/// servers spawn, and the author of what they propose on their own behalf.
pub const SERVER_PEER: u64 = 1;

/// An op as it travels through the log: stamped by the proposing server's HLC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: OpId,
    pub stamp: Stamp,
    /// On whose behalf the op was proposed: [`SERVER_PEER`] for a server's own calls, else
    /// the game client's peer id. Authority is checked against it when the op applies.
    pub peer: u64,
    pub op: Op,
}

/// What one Raft log entry carries: the events a server proposed together, applied in
/// order. Each event succeeds or fails on its own.
///
/// `origin` and `seq` make retries idempotent: a server has at most one batch in flight and
/// its `seq` only grows (it is the batch's HLC time), so the state machine applies a batch
/// whose `seq` it has already seen from `origin` only once and answers the retry with the
/// first outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub origin: u64,
    pub seq: u64,
    pub events: Vec<Event>,
}

/// The committed outcome of one event: applied, or refused with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpOutcome {
    pub id: OpId,
    pub result: Result<(), ApplyError>,
}

/// Largest encoded batch a server decodes (a batch holds at most a few thousand events).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// A [`Batch`] encoded once, by the server that proposes it. These bytes travel to the
/// leader, into every server's log and to every follower unchanged; only the state machine
/// decodes them, once per server. Clones share the bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodedBatch(bytes::Bytes);

impl EncodedBatch {
    /// Encodes `batch`.
    pub fn encode(batch: &Batch) -> Result<Self, CodecError> {
        crate::encode(batch).map(|b| EncodedBatch(b.into()))
    }

    /// Decodes the batch; fails on bytes that are not one (which every replica sees alike).
    pub fn decode(&self) -> Result<Batch, CodecError> {
        crate::decode(&self.0, MAX_BATCH_BYTES)
    }

    /// Wraps bytes that should hold an encoded batch (tests, fuzzing).
    pub fn from_bytes(bytes: impl Into<bytes::Bytes>) -> Self {
        EncodedBatch(bytes.into())
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for EncodedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedBatch({} bytes)", self.0.len())
    }
}
