//! The Raft log and vote, durable in redb.
//!
//! Every mutating call is one redb write transaction committed with the store's durability
//! (fsync by default) before openraft is told the IO completed; calls are serialised by
//! openraft, as its storage contract asks. With fsync on, an append is the exception: its
//! transaction is not synced, its entries are synced to the journal instead (see
//! [`crate::journal`]); every other synced commit starts the journal's next generation.

use crate::store::{Storage, KEY_COMMITTED, KEY_JOURNAL_GEN, KEY_PURGED, KEY_VOTE, LOGS, META};
use crate::types::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use redb::{ReadableDatabase, ReadableTable};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most bytes of recent entries kept in memory.
const TAIL_MAX_BYTES: usize = 32 << 20;
/// Most recent entries kept in memory.
const TAIL_MAX_ENTRIES: usize = 1 << 16;

/// The newest log entries, also in memory: replication to followers and the state machine
/// read what was just appended without a database read and decode. It always ends at the
/// last entry of the log (or is empty, after a restart), and is contiguous.
#[derive(Default)]
struct Tail {
    entries: VecDeque<Entry<TypeConfig>>,
    bytes: usize,
}

fn entry_bytes(e: &Entry<TypeConfig>) -> usize {
    64 + match &e.payload {
        EntryPayload::Normal(batch) => batch.len(),
        _ => 0,
    }
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn push(&mut self, entry: Entry<TypeConfig>) {
        if let Some(last) = self.entries.back() {
            if entry.log_id.index != last.log_id.index + 1 {
                // Not contiguous (openraft truncates before overwriting): start over.
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.bytes += entry_bytes(&entry);
        self.entries.push_back(entry);
        while self.entries.len() > 1
            && (self.bytes > TAIL_MAX_BYTES || self.entries.len() > TAIL_MAX_ENTRIES)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= entry_bytes(&old);
            }
        }
    }

    /// Drops entries at `index` and after.
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            if let Some(old) = self.entries.pop_back() {
                self.bytes -= entry_bytes(&old);
            }
        }
    }

    /// Drops entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= entry_bytes(&old);
            }
        }
    }

    /// Entries `start..end` (`end` None: to the last), if all of them are here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first_index()?;
        let next = first + self.entries.len() as u64;
        let end = end.unwrap_or(next);
        if start < first || end > next {
            return None;
        }
        if start >= end {
            return Some(Vec::new());
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(self.entries.range(from..to).cloned().collect())
    }
}

/// One durable log entry as an observer sees it: where it is and a digest of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord {
    pub index: u64,
    /// The leader id of the entry (openraft's leader ids are `(term, node id)`, ordered).
    pub term: u64,
    pub leader: NodeId,
    /// A hash of the entry as stored: equal entries have equal digests.
    pub digest: u64,
}

fn record(index: u64, leader: &openraft::CommittedLeaderId<NodeId>, bytes: &[u8]) -> LogRecord {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    LogRecord {
        index,
        term: leader.term,
        leader: leader.node_id,
        digest: h.finish(),
    }
}

/// Told of every change a log store has made durable, after it is durable; the simulation
/// checks Raft's log invariants with it. Calls come in the order the changes happened.
pub trait LogObserver: Send + Sync {
    /// These entries were appended (overwriting nothing: a conflict is truncated first).
    fn appended(&self, entries: &[LogRecord]);
    /// Entries from `index` on were removed (a conflicting, uncommitted suffix).
    fn truncated(&self, index: u64);
    /// Entries up to and including `index` were removed (covered by a snapshot).
    fn purged(&self, index: u64);
}

/// Every entry in the database of `storage`, in index order (what survives a crash).
pub fn log_records(storage: &Storage) -> Result<Vec<LogRecord>, StorageError<NodeId>> {
    let txn = storage.db.begin_read().map_err(read_err)?;
    let table = txn.open_table(LOGS).map_err(read_err)?;
    let mut out = Vec::new();
    for item in table.iter().map_err(read_err)? {
        let (index, bytes) = item.map_err(read_err)?;
        let entry: Entry<TypeConfig> = decode(bytes.value())?;
        out.push(record(
            index.value(),
            &entry.log_id.leader_id,
            bytes.value(),
        ));
    }
    Ok(out)
}

/// The entry at `index` in the database of `storage`, described for a report: its log id and
/// what it carries (the events of a batch, decoded). `None` if there is no such entry.
pub fn describe_entry(storage: &Storage, index: u64) -> Option<String> {
    let txn = storage.db.begin_read().ok()?;
    let table = txn.open_table(LOGS).ok()?;
    let bytes = table.get(index).ok()??;
    let entry: Entry<TypeConfig> = decode(bytes.value()).ok()?;
    let payload = match &entry.payload {
        EntryPayload::Normal(batch) => match batch.decode() {
            Ok(b) => format!("{b:?}"),
            Err(e) => format!("undecodable batch: {e}"),
        },
        other => format!("{other:?}"),
    };
    Some(format!("{} {payload}", entry.log_id))
}

/// The Raft log store of one server. Cloning shares the database and the in-memory tail.
#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
    committed: Arc<AtomicU64>,
    tail: Arc<Mutex<Tail>>,
    observer: Option<Arc<dyn LogObserver>>,
}

impl LogStore {
    /// A log store over an opened [`Storage`].
    pub fn new(storage: Storage) -> Self {
        LogStore {
            storage,
            committed: Arc::new(AtomicU64::new(0)),
            tail: Arc::new(Mutex::new(Tail::default())),
            observer: None,
        }
    }

    /// This store, telling `observer` of every durable change.
    pub fn with_observer(mut self, observer: Arc<dyn LogObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// After a failed write the database and the tail may disagree: the database is the
    /// truth, so the tail is dropped.
    fn forget_tail_on_error<T>(
        &self,
        result: Result<T, StorageError<NodeId>>,
    ) -> Result<T, StorageError<NodeId>> {
        if result.is_err() {
            *self.tail() = Tail::default();
        }
        result
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest log index known committed, as openraft last reported it (for status).
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// One transaction committed with the store's durability. With a journal, it also
    /// records the journal's next generation, which appends use once it is on disk.
    fn write<T>(
        &self,
        err: fn(AnyError) -> StorageIOError<NodeId>,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StorageError<NodeId>> {
        let mut journal = self
            .storage
            .journal
            .as_ref()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()));
        let next = journal.as_ref().map(|j| j.generation() + 1);
        let run = || -> Result<T, AnyError> {
            let mut txn = self
                .storage
                .db
                .begin_write()
                .map_err(|e| AnyError::new(&e))?;
            txn.set_durability(self.storage.durability)
                .map_err(|e| AnyError::new(&e))?;
            let out = body(&txn).map_err(|e| AnyError::new(&e))?;
            if let Some(next) = next {
                txn.open_table(META)
                    .map_err(|e| AnyError::new(&e))?
                    .insert(KEY_JOURNAL_GEN, next.to_be_bytes().as_slice())
                    .map_err(|e| AnyError::new(&e))?;
            }
            txn.commit().map_err(|e| AnyError::new(&e))?;
            Ok(out)
        };
        let out = run().map_err(err)?;
        if let (Some(journal), Some(next)) = (journal.as_mut(), next) {
            journal.restart(next);
        }
        Ok(out)
    }

    /// Appends `encoded` with fsync on: synced to the journal, then committed to the
    /// database without a sync. An append larger than what is left of the journal is
    /// committed with a sync instead (which starts the journal again).
    fn append_journaled(
        &self,
        encoded: &[(u64, Vec<u8>)],
    ) -> Option<Result<(), StorageError<NodeId>>> {
        let journal = self.storage.journal.as_ref()?;
        let mut journal = journal.lock().unwrap_or_else(|p| p.into_inner());
        let io_err = |e: AnyError| -> StorageError<NodeId> { StorageIOError::write_logs(e).into() };
        match journal.append(encoded.iter().map(|(i, b)| (*i, b.as_slice()))) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                return Some(Err(io_err(AnyError::error(format!(
                    "writing the journal '{}': {e}",
                    journal.path().display()
                )))))
            }
        }
        let result = self.write_unsynced(|txn| {
            let mut table = txn.open_table(LOGS)?;
            for (index, bytes) in encoded {
                table.insert(*index, bytes.as_slice())?;
            }
            Ok(())
        });
        Some(result.map_err(io_err))
    }

    /// One transaction committed without a sync: on disk with the next synced commit.
    fn write_unsynced(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), AnyError> {
        let mut txn = self
            .storage
            .db
            .begin_write()
            .map_err(|e| AnyError::new(&e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| AnyError::new(&e))?;
        body(&txn).map_err(|e| AnyError::new(&e))?;
        txn.commit().map_err(|e| AnyError::new(&e))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError<NodeId>> {
        let fail = |e: &dyn std::error::Error| -> StorageError<NodeId> {
            StorageIOError::read(AnyError::error(format!(
                "reading '{key}' from the Raft database: {e}"
            )))
            .into()
        };
        let txn = self.storage.db.begin_read().map_err(|e| fail(&e))?;
        let table = txn.open_table(META).map_err(|e| fail(&e))?;
        match table.get(key).map_err(|e| fail(&e))? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        err: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = encode(value)?;
        self.write(err, |txn| {
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError<NodeId>> {
    rmp_serde::to_vec(value).map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError<NodeId>> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        StorageIOError::read(AnyError::error(format!(
            "corrupt record in the Raft database: {e}"
        )))
        .into()
    })
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let from = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match end {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.tail().get(from, to) {
            return Ok(entries);
        }
        let txn = self.storage.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(read_err)? {
            let (_, bytes) = item.map_err(read_err)?;
            out.push(decode(bytes.value())?);
        }
        Ok(out)
    }
}

/// How long a purge waits for the snapshot it follows to be stored.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl LogStore {
    /// Waits while a stored snapshot is older than `upto` (one being installed), up to
    /// [`SNAPSHOT_WAIT`].
    async fn await_snapshot(&self, upto: LogId<NodeId>) {
        let stored = || -> Option<LogId<NodeId>> {
            let txn = self.storage.db.begin_read().ok()?;
            let table = txn.open_table(META).ok()?;
            crate::state_machine::stored_snapshot_last(&table)
                .ok()
                .flatten()
        };
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        while stored().is_some_and(|s| s.index < upto.index) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "purging the log up to {} although the stored snapshot ends before it \
                     ({SNAPSHOT_WAIT:?} waited for the newer one)",
                    upto.index
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(KEY_PURGED)?;
        let txn = self.storage.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((_, bytes)) => Some(decode::<Entry<TypeConfig>>(bytes.value())?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(KEY_VOTE, vote, StorageIOError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(KEY_VOTE)
    }

    /// The committed index is a hint (openraft can always learn it again), so it is written
    /// without its own fsync: it becomes durable with the next synced commit.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.committed
            .fetch_max(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        let bytes = encode(&committed)?;
        self.write_unsynced(|txn| {
            txn.open_table(META)?
                .insert(KEY_COMMITTED, bytes.as_slice())?;
            Ok(())
        })
        .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed = self
            .get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?
            .flatten();
        self.committed
            .fetch_max(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| Ok((e.log_id.index, encode(e)?)))
            .collect::<Result<Vec<_>, StorageError<NodeId>>>()?;
        let result = match self.append_journaled(&encoded) {
            Some(result) => result,
            None => self.write(StorageIOError::write_logs, |txn| {
                let mut table = txn.open_table(LOGS)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            }),
        };
        match &result {
            Ok(()) => {
                if let Some(o) = &self.observer {
                    let records: Vec<LogRecord> = entries
                        .iter()
                        .zip(&encoded)
                        .map(|(e, (i, b))| record(*i, &e.log_id.leader_id, b))
                        .collect();
                    o.appended(&records);
                }
                let mut tail = self.tail();
                for e in entries {
                    tail.push(e);
                }
                drop(tail);
                callback.log_io_completed(Ok(()))
            }
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.tail().truncate(log_id.index);
        let result = self.write(StorageIOError::write_logs, |txn| {
            let mut table = txn.open_table(LOGS)?;
            table.retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        });
        if let (Ok(()), Some(o)) = (&result, &self.observer) {
            o.truncated(log_id.index);
        }
        self.forget_tail_on_error(result)
    }

    /// Purges up to `log_id`. openraft purges right after handing a received snapshot to
    /// the state machine, which stores it only once decoded: a crash in between left the log
    /// purged past the stored snapshot, the entries in between nowhere, and the server
    /// unable to start. So while the stored snapshot is older than `log_id`, the purge (and
    /// with it openraft's next log writes) waits for the newer one, up to
    /// [`SNAPSHOT_WAIT`]. With no snapshot stored it purges at once (a fresh server's first
    /// snapshot: openraft's storage suite purges so).
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.await_snapshot(log_id).await;
        let bytes = encode(&Some(log_id))?;
        self.tail().purge(log_id.index);
        let result = self.write(StorageIOError::write_logs, |txn| {
            txn.open_table(META)?.insert(KEY_PURGED, bytes.as_slice())?;
            let mut table = txn.open_table(LOGS)?;
            table.retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        });
        if let (Ok(()), Some(o)) = (&result, &self.observer) {
            o.purged(log_id.index);
        }
        self.forget_tail_on_error(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn tail_serves_only_ranges_it_holds_whole() {
        let mut t = Tail::default();
        assert_eq!(indexes(t.get(0, None)), None, "empty: go to the database");
        for i in 5..10 {
            t.push(entry(i));
        }
        assert_eq!(indexes(t.get(5, None)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(t.get(7, Some(9))), Some(vec![7, 8]));
        assert_eq!(indexes(t.get(9, Some(9))), Some(vec![]));
        assert_eq!(indexes(t.get(4, Some(7))), None, "starts before the tail");
        assert_eq!(indexes(t.get(6, Some(11))), None, "ends after the log");
        t.truncate(8);
        assert_eq!(indexes(t.get(5, None)), Some(vec![5, 6, 7]));
        t.purge(5);
        assert_eq!(indexes(t.get(6, None)), Some(vec![6, 7]));
        t.push(entry(12));
        assert_eq!(
            indexes(t.get(12, None)),
            Some(vec![12]),
            "a gap starts over"
        );
        assert_eq!(indexes(t.get(6, None)), None);
    }

    #[test]
    fn tail_is_bounded() {
        let mut t = Tail::default();
        for i in 1..=(TAIL_MAX_ENTRIES as u64 + 10) {
            t.push(entry(i));
        }
        assert_eq!(t.entries.len(), TAIL_MAX_ENTRIES);
        assert_eq!(t.first_index(), Some(11));
        assert_eq!(t.bytes, TAIL_MAX_ENTRIES * 64);
    }
}
