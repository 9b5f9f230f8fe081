//! The state machine: applies committed batches to the shadow tree, answers each event's
//! outcome, and streams the resulting effects, in log order, to whoever drives the live
//! scene tree (a bounded channel: a slow main thread slows applying, never reorders it).

use crate::feed::Feed;
use crate::log_store::{decode, encode};
use crate::store::{Storage, KEY_SNAPSHOT, KEY_SNAPSHOT_LAST, META};
use crate::types::{BatchResponse, NodeId, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, RwLock};
use synctree_proto::{Clock, Effect, EntryEffects, OpOutcome, ShadowTree, Stamp};
use tokio::sync::mpsc;

/// What the live tree must do, in log order.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Apply these effects; afterwards the live tree is at log index `index`.
    Effects { index: u64, effects: Vec<Effect> },
    /// Replace the whole synced subtree by `tree` (start-up from a snapshot, or a snapshot
    /// installed from the leader); afterwards the live tree is at `index`.
    Reset { index: u64, tree: ShadowTree },
}

/// The committed state, readable by the runtime (linearizable reads) while Raft applies.
#[derive(Debug, Default)]
pub struct SharedState {
    pub tree: ShadowTree,
    pub sessions: Sessions,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The newest stamp of every event applied so far (also across snapshots), so a
    /// restarted server's clock starts past everything it had applied.
    pub max_stamp: Option<Stamp>,
}

/// Outcomes kept per proposing server: more than the batches a server has in flight.
pub const SESSION_WINDOW: usize = 64;

/// What the state machine remembers of one proposing server, so a retried batch is
/// answered, never applied twice, and batches from one server apply in `seq` order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The `seq` of its last applied batch: a batch at or below it is never applied.
    pub last_seq: u64,
    /// `(seq, outcomes)` of its last [`SESSION_WINDOW`] applied batches.
    pub recent: VecDeque<(u64, Vec<OpOutcome>)>,
}

/// Sessions by proposing server id.
pub type Sessions = BTreeMap<u64, Session>;

/// What a snapshot holds besides its meta.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    tree: ShadowTree,
    sessions: Sessions,
    #[serde(default)]
    max_stamp: Option<Stamp>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The last log id covered by the snapshot stored in `meta_table`, if any.
pub(crate) fn stored_snapshot_last(
    meta_table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<LogId<NodeId>>, redb::Error> {
    let corrupt = |e: rmp_serde::decode::Error| {
        redb::Error::Corrupted(format!("the stored snapshot's last log id: {e}"))
    };
    if let Some(bytes) = meta_table.get(KEY_SNAPSHOT_LAST)? {
        return rmp_serde::from_slice(bytes.value()).map_err(corrupt);
    }
    // Stored before that key existed: from the snapshot itself (its data skipped).
    let Some(bytes) = meta_table.get(KEY_SNAPSHOT)? else {
        return Ok(None);
    };
    let (meta, _): (SnapshotMeta<NodeId, BasicNode>, serde::de::IgnoredAny) =
        rmp_serde::from_slice(bytes.value()).map_err(corrupt)?;
    Ok(meta.last_log_id)
}

/// The synctree state machine of one server.
pub struct StateMachine {
    shared: Arc<RwLock<SharedState>>,
    storage: Storage,
    applied_tx: mpsc::Sender<Applied>,
    clock: Option<Arc<Clock>>,
    snapshot_count: u64,
    /// Committed entries for game clients, when this server serves them.
    feed: Option<Arc<Feed>>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(AnyError::error(e.to_string())).into()
}

impl StateMachine {
    /// Opens the state machine over `storage`, restoring the last stored snapshot. The
    /// live tree is told to reset to it first thing, so a restarted server rebuilds its scene.
    /// Applied stamps advance `clock`, so later local stamps follow every applied event.
    pub async fn open(
        storage: Storage,
        applied_tx: mpsc::Sender<Applied>,
        clock: Option<Arc<Clock>>,
    ) -> Result<(StateMachine, Arc<RwLock<SharedState>>), StorageError<NodeId>> {
        let mut state = SharedState::default();
        if let Some(snap) = read_snapshot(&storage)? {
            let data: SnapshotData = decode(&snap.data)?;
            state.tree = data.tree;
            state.sessions = data.sessions;
            state.max_stamp = data.max_stamp;
            state.last_applied = snap.meta.last_log_id;
            state.membership = snap.meta.last_membership.clone();
        }
        observe(clock.as_deref(), state.max_stamp);
        let index = state.last_applied.map(|l| l.index).unwrap_or(0);
        let _ = applied_tx
            .send(Applied::Reset {
                index,
                tree: state.tree.clone(),
            })
            .await;
        let shared = Arc::new(RwLock::new(state));
        let sm = StateMachine {
            shared: shared.clone(),
            storage,
            applied_tx,
            clock,
            snapshot_count: 0,
            feed: None,
        };
        Ok((sm, shared))
    }

    /// Publishes every applied entry to `feed` (for game clients) from now on.
    pub fn with_feed(mut self, feed: Arc<Feed>) -> Self {
        self.feed = Some(feed);
        self
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, SharedState> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, SharedState> {
        self.shared.write().unwrap_or_else(|p| p.into_inner())
    }

    fn store_snapshot(&self, snap: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let bytes = encode(snap)?;
        let fail = |e: &dyn std::error::Error| -> StorageError<NodeId> {
            StorageIOError::write_snapshot(
                Some(snap.meta.signature()),
                AnyError::error(e.to_string()),
            )
            .into()
        };
        let mut txn = self.storage.db.begin_write().map_err(|e| fail(&e))?;
        txn.set_durability(self.storage.durability)
            .map_err(|e| fail(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| fail(&e))?;
            // A snapshot built from this server's tree can finish after a newer one from
            // the leader was installed (the log is purged up to that one): keep the newer.
            let stored = stored_snapshot_last(&table).map_err(|e| fail(&e))?;
            if stored.is_some() && stored >= snap.meta.last_log_id {
                tracing::debug!(
                    "snapshot {} not stored: the stored one covers up to {stored:?}",
                    snap.meta.snapshot_id
                );
                return Ok(());
            }
            table
                .insert(KEY_SNAPSHOT, bytes.as_slice())
                .map_err(|e| fail(&e))?;
            let last = encode(&snap.meta.last_log_id)?;
            table
                .insert(KEY_SNAPSHOT_LAST, last.as_slice())
                .map_err(|e| fail(&e))?;
        }
        txn.commit().map_err(|e| fail(&e))
    }
}

/// Advances `clock` past `stamp`. A stamp too far ahead is still passed (the clock stays
/// causal) but warned of: that server's clock or this one's is off.
fn observe(clock: Option<&Clock>, stamp: Option<Stamp>) {
    if let (Some(clock), Some(stamp)) = (clock, stamp) {
        if let Err(e) = clock.observe(&stamp) {
            tracing::warn!("{e}");
        }
    }
}

fn read_snapshot(storage: &Storage) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
    let txn = storage.db.begin_read().map_err(sm_err)?;
    let table = txn.open_table(META).map_err(sm_err)?;
    match table.get(KEY_SNAPSHOT).map_err(sm_err)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let s = self.state();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut effects = Vec::new();
        let mut last_index = None;
        // (index, where its effects start in `effects`), for the client feed.
        let mut starts: Vec<(u64, usize)> = Vec::new();
        {
            let mut s = self.state_mut();
            for entry in entries {
                last_index = Some(entry.log_id.index);
                if self.feed.is_some() {
                    starts.push((entry.log_id.index, effects.len()));
                }
                s.last_applied = Some(entry.log_id);
                let mut response = BatchResponse::default();
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Membership(m) => {
                        s.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                    EntryPayload::Normal(encoded) => {
                        let batch = match encoded.decode() {
                            Ok(batch) => batch,
                            Err(e) => {
                                // Every replica refuses the same bytes alike; nothing applies.
                                tracing::error!(
                                    "log entry {} is not a batch, skipped: {e}",
                                    entry.log_id.index
                                );
                                responses.push(response);
                                continue;
                            }
                        };
                        let SharedState {
                            tree,
                            sessions,
                            max_stamp,
                            ..
                        } = &mut *s;
                        let session = sessions.entry(batch.origin).or_default();
                        if batch.seq <= session.last_seq {
                            // A retry of a batch already applied (answer it), or a batch a
                            // later one overtook (it must not apply out of order).
                            match session.recent.iter().find(|(q, _)| *q == batch.seq) {
                                Some((_, outcomes)) => response.outcomes = outcomes.clone(),
                                None => response.stale = true,
                            }
                            responses.push(response);
                            continue;
                        }
                        // One server stamps its batch's events in order: advancing past
                        // the newest advances past all (one clock update per batch).
                        let newest = batch.events.iter().map(|e| e.stamp).max();
                        observe(self.clock.as_deref(), newest);
                        *max_stamp = (*max_stamp).max(newest);
                        response.outcomes.reserve(batch.events.len());
                        for event in batch.events {
                            let result = tree
                                .apply_as(event.peer, event.op)
                                .map(|effect| effects.push(effect));
                            response.outcomes.push(OpOutcome {
                                id: event.id,
                                result,
                            });
                        }
                        session.last_seq = batch.seq;
                        session
                            .recent
                            .push_back((batch.seq, response.outcomes.clone()));
                        if session.recent.len() > SESSION_WINDOW {
                            session.recent.pop_front();
                        }
                    }
                }
                responses.push(response);
            }
            if let Some(feed) = &self.feed {
                // Still under the write lock: see `Feed::subscribe`.
                let ends = starts
                    .iter()
                    .skip(1)
                    .map(|(_, at)| *at)
                    .chain([effects.len()]);
                let entries = starts
                    .iter()
                    .zip(ends)
                    .map(|((index, from), to)| EntryEffects {
                        index: *index,
                        effects: effects[*from..to].to_vec(),
                    })
                    .collect();
                feed.publish(entries);
            }
        }
        if let Some(index) = last_index {
            // The receiver is gone only when the server is shutting down.
            let _ = self
                .applied_tx
                .send(Applied::Effects { index, effects })
                .await;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_count += 1;
        SnapshotBuilder { sm: self.handle() }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let decoded: SnapshotData = decode(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(e.to_string()),
            ))
        })?;
        self.store_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        {
            let mut s = self.state_mut();
            s.tree = decoded.tree.clone();
            s.sessions = decoded.sessions;
            s.max_stamp = decoded.max_stamp;
            s.last_applied = meta.last_log_id;
            s.membership = meta.last_membership.clone();
            if let Some(feed) = &self.feed {
                feed.reset();
            }
        }
        observe(self.clock.as_deref(), decoded.max_stamp);
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let _ = self
            .applied_tx
            .send(Applied::Reset {
                index,
                tree: decoded.tree,
            })
            .await;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(read_snapshot(&self.storage)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Builds a snapshot of the shadow tree at the last applied index and stores it durably.
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let sm = self.sm.handle();
        off_the_runtime(move || sm.snapshot_now()).await
    }
}

impl StateMachine {
    /// Another handle on the same state and storage (for work done elsewhere).
    fn handle(&self) -> StateMachine {
        StateMachine {
            shared: self.shared.clone(),
            storage: self.storage.clone(),
            applied_tx: self.applied_tx.clone(),
            clock: self.clock.clone(),
            snapshot_count: self.snapshot_count,
            feed: self.feed.clone(),
        }
    }

    /// Copies the tree at the last applied index, encodes it and stores it durably.
    fn snapshot_now(&self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Only the copy holds the state's lock (applying waits for it); encoding a big tree
        // takes longer and needs no lock.
        let (data, last_log_id, last_membership) = {
            let s = self.state();
            let data = SnapshotData {
                tree: s.tree.clone(),
                sessions: s.sessions.clone(),
                max_stamp: s.max_stamp,
            };
            (data, s.last_applied, s.membership.clone())
        };
        let data = encode(&data)?;
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.snapshot_count),
            None => format!("empty-{}", self.snapshot_count),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.store_snapshot(&stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

/// Runs `work` (copying, encoding and storing a snapshot: long for a big tree) on tokio's
/// blocking pool when the runtime has one, so that a server's runtime (one worker by
/// default) keeps serving Raft, heartbeats included, meanwhile; inline on a current-thread
/// runtime (the simulation, which must stay deterministic).
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError<NodeId>> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| -> StorageError<NodeId> {
                    StorageIOError::write_snapshot(
                        None,
                        AnyError::error(format!("snapshot task: {e}")),
                    )
                    .into()
                })?
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use synctree_proto::{Batch, Clock, EncodedBatch, Event, Op, OpId};

    fn entry(index: u64, batch: &Batch) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(EncodedBatch::encode(batch).expect("encode")),
        }
    }

    fn batch(clock: &Clock, origin: u64, seq: u64, name: &str) -> Batch {
        Batch {
            origin,
            seq,
            events: vec![Event {
                id: OpId { origin, seq },
                stamp: clock.stamp(),
                op: Op::Spawn {
                    parent: String::new(),
                    name: name.into(),
                    scene: "Node".into(),
                    props: vec![],
                    owner: synctree_proto::SERVER_PEER,
                },
                peer: synctree_proto::SERVER_PEER,
            }],
        }
    }

    #[tokio::test]
    async fn batches_apply_once_and_in_seq_order_per_server() {
        let (tx, mut rx) = mpsc::channel(64);
        let (mut sm, shared) = StateMachine::open(Storage::in_memory().expect("mem"), tx, None)
            .await
            .expect("open");
        let clock = Clock::new(9, std::time::Duration::from_millis(500));
        let first = batch(&clock, 7, 10, "A");
        let r = sm.apply([entry(1, &first)]).await.expect("apply");
        assert!(r[0].outcomes[0].result.is_ok(), "{r:?}");
        // The same batch again (a retry): answered with the first outcome, not applied again
        // (applying it again would refuse a duplicate name).
        let again = sm.apply([entry(2, &first)]).await.expect("apply");
        assert_eq!(again[0].outcomes, r[0].outcomes);
        assert!(!again[0].stale);
        // Another server's batch with the same seq is its own.
        let other = sm
            .apply([entry(3, &batch(&clock, 8, 10, "B"))])
            .await
            .expect("apply");
        assert!(other[0].outcomes[0].result.is_ok(), "{other:?}");
        // seq 12 applies; seq 11 arriving after it is stale and does not apply.
        let later = sm
            .apply([entry(4, &batch(&clock, 7, 12, "C"))])
            .await
            .expect("apply");
        assert!(later[0].outcomes[0].result.is_ok());
        let overtaken = sm
            .apply([entry(5, &batch(&clock, 7, 11, "D"))])
            .await
            .expect("apply");
        assert!(overtaken[0].stale && overtaken[0].outcomes.is_empty());
        // The retry of seq 10 is still answered from the window.
        let late_retry = sm.apply([entry(6, &first)]).await.expect("apply");
        assert_eq!(late_retry[0].outcomes, r[0].outcomes);
        let s = shared.read().expect("state");
        assert_eq!(s.tree.dump(), "A (Node)\nB (Node)\nC (Node)\n");
        assert_eq!(s.sessions[&7].last_seq, 12);
        drop(s);
        // Effects went out once per applied spawn.
        let mut spawned = 0;
        while let Ok(a) = rx.try_recv() {
            if let Applied::Effects { effects, .. } = a {
                spawned += effects.len();
            }
        }
        assert_eq!(spawned, 3);
    }

    fn meta_at(index: u64) -> SnapshotMeta<NodeId, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: Default::default(),
            snapshot_id: format!("s{index}"),
        }
    }

    /// A snapshot built here can finish after a newer one was installed from the leader;
    /// and openraft purges the log as soon as it hands a received snapshot over, before it
    /// is stored: the stored snapshot and the log must still cover every entry.
    #[tokio::test]
    async fn the_log_is_never_purged_past_the_stored_snapshot() {
        use crate::LogStore;
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::tempdir().expect("tmp");
        let storage = crate::open(dir.path(), crate::Durability::Fsync).expect("open");
        let (tx, _rx) = mpsc::channel(64);
        let (sm, _) = StateMachine::open(storage.clone(), tx, None)
            .await
            .expect("open");
        let mut log = LogStore::new(storage.clone());
        let entries: Vec<_> = (1..=60)
            .map(|i| Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Blank,
            })
            .collect();
        openraft::storage::RaftLogStorageExt::blocking_append(&mut log, entries)
            .await
            .expect("append");
        let stored = |storage: &Storage| {
            let txn = storage.db.begin_read().expect("read");
            let table = txn.open_table(META).expect("meta");
            stored_snapshot_last(&table).expect("meta").map(|l| l.index)
        };
        let snap = |index| StoredSnapshot {
            meta: meta_at(index),
            data: vec![1, 2, 3],
        };
        sm.store_snapshot(&snap(40)).expect("store 40");
        // Snapshot 60 is received and handed over; openraft purges to 60 at once: the purge
        // waits until 60 is stored.
        let purging = tokio::spawn(async move {
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), 60))
                .await
                .expect("purge");
            log
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !purging.is_finished(),
            "purged before the snapshot was stored"
        );
        let log_now = LogStore::new(storage.clone())
            .get_log_state()
            .await
            .expect("state");
        assert_eq!(log_now.last_purged_log_id, None, "nothing purged yet");
        sm.store_snapshot(&snap(60)).expect("store 60");
        let mut log = purging.await.expect("purge ends");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(60));
        // A build of 50, started before, ends now: 60 stays.
        sm.store_snapshot(&snap(50)).expect("store 50");
        assert_eq!(stored(&storage), Some(60));
    }
}
