//! The feed of committed effects for game clients: every entry this server applies, encoded
//! once as a client-protocol message, broadcast to the clients connected here, and kept for a
//! while so a client that moves here from another server resumes where it was.
//!
//! ```text
//!   StateMachine::apply (holding the state lock) ─► Feed::publish(entries)
//!                                                     ├─► history (bounded) ─┐
//!                                                     └─► broadcast ─────────┴─► Feed::subscribe
//! ```
//!
//! Publishing and subscribing both happen under the shared-state lock, so a subscriber's
//! starting point (a reset to the tree, or history after its cursor) and the live broadcast
//! neither overlap nor leave a gap. The feed numbers the names it sends
//! ([`synctree_proto::wire`]); a subscriber starts with every name numbered so far.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use synctree_proto::{encode, CompactString, EntryEffects, NameEncoder, ServerMessage};
use tokio::sync::broadcast;

use crate::state_machine::SharedState;

/// Committed entries kept for resumes, at most (also bounded by [`HISTORY_BYTES`]).
const HISTORY_ENTRIES: usize = 65_536;
/// Encoded bytes of history kept, at most.
const HISTORY_BYTES: usize = 64 << 20;
/// Feed items a slow client may lag behind before it is sent a reset instead.
const BROADCAST_CAPACITY: usize = 1024;

/// One published item: entries `first..=last`, encoded as a [`ServerMessage::Entries`].
#[derive(Debug, Clone)]
pub struct FeedChunk {
    pub first: u64,
    pub last: u64,
    pub bytes: Arc<Vec<u8>>,
}

/// What a subscriber receives live.
#[derive(Debug, Clone)]
pub enum FeedItem {
    Chunk(FeedChunk),
    /// The state was replaced (a snapshot was installed): subscribe again.
    Reset,
}

/// Where a new subscriber starts.
pub enum Start {
    /// Everything after the subscriber's cursor, from history (maybe empty).
    History(Vec<FeedChunk>),
    /// History does not reach back to the cursor: the whole tree at `index`.
    Reset {
        index: u64,
        tree: synctree_proto::ShadowTree,
    },
}

#[derive(Default)]
struct History {
    chunks: VecDeque<FeedChunk>,
    entries: usize,
    bytes: usize,
}

/// See the module docs. Shared by the state machine and the client listener.
pub struct Feed {
    tx: broadcast::Sender<FeedItem>,
    history: Mutex<History>,
    names: Mutex<NameEncoder>,
    /// Publish only while someone subscribes (no history for resumes from elsewhere).
    on_demand: bool,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            tx: broadcast::channel(BROADCAST_CAPACITY).0,
            history: Mutex::new(History::default()),
            names: Mutex::new(NameEncoder::default()),
            on_demand: false,
        }
    }
}

impl Feed {
    /// A feed that encodes entries only while a subscriber listens. Its history then holds
    /// only what was published since the last idle spell (a resume from before it starts
    /// from the tree).
    pub fn on_demand() -> Feed {
        Feed {
            on_demand: true,
            ..Feed::default()
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the state machine with the entries it just applied, while it still holds
    /// the shared-state write lock.
    pub(crate) fn publish(&self, entries: Vec<EntryEffects>) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first, last, count) = (first.index, last.index, entries.len());
        if self.on_demand && self.tx.receiver_count() == 0 {
            // History must stay contiguous up to the last applied entry.
            *self.history() = History::default();
            return;
        }
        let entries = {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            entries.into_iter().map(|e| names.pack(e)).collect()
        };
        let bytes = match encode(&ServerMessage::Entries(entries)) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                // Only a bug can get here (the same values were encoded into the log).
                tracing::error!("cannot encode entries {first}..={last} for clients: {e}");
                return;
            }
        };
        let chunk = FeedChunk { first, last, bytes };
        {
            let mut h = self.history();
            h.entries += count;
            h.bytes += chunk.bytes.len();
            h.chunks.push_back(chunk.clone());
            while h.chunks.len() > 1 && (h.entries > HISTORY_ENTRIES || h.bytes > HISTORY_BYTES) {
                if let Some(old) = h.chunks.pop_front() {
                    h.entries -= (old.last - old.first + 1) as usize;
                    h.bytes -= old.bytes.len();
                }
            }
        }
        // No subscribers is fine.
        let _ = self.tx.send(FeedItem::Chunk(chunk));
    }

    /// Every name numbered so far (a superset of what any chunk published until now uses).
    pub fn names(&self) -> Vec<CompactString> {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).names()
    }

    /// Called by the state machine when the state was replaced by a snapshot (holding the
    /// write lock): history no longer leads to the new state.
    pub(crate) fn reset(&self) {
        *self.history() = History::default();
        let _ = self.tx.send(FeedItem::Reset);
    }

    /// Subscribes a client whose last applied index is `after` (`None`: it has nothing).
    /// Returns where it starts, the names numbered so far (to send before anything else),
    /// and the live feed.
    pub fn subscribe(
        &self,
        shared: &RwLock<SharedState>,
        after: Option<u64>,
    ) -> (Start, Vec<CompactString>, broadcast::Receiver<FeedItem>) {
        let s = shared.read().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let index = s.last_applied.map(|l| l.index).unwrap_or(0);
        let h = self.history();
        let start = match after {
            // Already up to date (or ahead: this server is behind; live entries it has not
            // reached yet will come, and the client skips what it has).
            Some(a) if a >= index => Start::History(Vec::new()),
            Some(a) if h.chunks.front().is_some_and(|c| c.first <= a + 1) => {
                Start::History(h.chunks.iter().filter(|c| c.last > a).cloned().collect())
            }
            _ => Start::Reset {
                index,
                tree: s.tree.clone(),
            },
        };
        (start, self.names(), rx)
    }
}
