//! The replicated-tree model of synctree. No I/O, no async, no Godot.
//!
//! ```text
//!   Op (spawn / despawn / set property)      Event { stamp: HLC + origin, id, op }
//!        │  validated + stamped by a server        │ encoded with rmp-serde (codec)
//!        ▼                                         ▼
//!   ShadowTree::apply(&op) ──► Effect (what the live scene tree must do)
//!        │                     or ApplyError (nothing changed)
//!        ▼
//!   ShadowTree::dump() ──► canonical text, equal on every replica at the same index
//! ```
//!
//! Every replica applies the same committed events in the same order, so the shadow tree
//! and the effects it yields are deterministic. The Godot layer turns effects into
//! `add_child` / `queue_free` / `set` on the main thread.

mod client;
mod clock;
mod codec;
mod compact;
mod dump;
mod effect;
mod error;
pub mod fuzz;
mod op;
mod path;
mod tree;
mod value;
pub mod wire;

pub use client::{
    seq_after, ClientCursor, ClientRequest, Delivery, EntryEffects, EventualName, EventualSet,
    HandleValue, Hello, Outcome, PeerRpc, PropertyHandles, Request, Resume, ServerMessage, Update,
    CLIENT_PROTOCOL_VERSION, MAX_EVENTUAL_HANDLES, MAX_HELLO_BYTES, MAX_PROPERTY_HANDLES,
    MAX_REQUEST_BYTES,
};
pub use clock::{Clock, ClockError, PhysicalClock, Stamp};
pub use codec::{decode, encode, CodecError, MAX_DECODE_DEPTH};
pub use dump::{write_node_header, write_property};
pub use effect::{CompactString, Effect, NodeKey, ROOT_KEY};
pub use error::ApplyError;
pub use op::{Batch, EncodedBatch, Event, Op, OpId, OpOutcome, MAX_BATCH_BYTES, SERVER_PEER};
pub use path::{join, split_parent, validate_name, validate_path, validate_property, ROOT};
pub use tree::{NodeView, ShadowTree, MAX_PROPERTIES};
pub use uhlc;
pub use value::{Value, ValueKind, MAX_VALUE_DEPTH};
pub use wire::{filter_hidden_wire, NameDecoder, NameEncoder, WireEffect, WireEntry, WireName};
