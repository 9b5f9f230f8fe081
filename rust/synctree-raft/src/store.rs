//! The server's durable state: one redb database in its data directory.
//!
//! redb (pure Rust, ACID, copy-on-write B-trees with checksums, one fsync per commit) is
//! chosen over sled (unmaintained, no stable format) and RocksDB (a C++ build, much
//! heavier) because Raft needs small, ordered, atomic, durable writes and nothing more.
//! With fsync on, appended log entries reach the disk first through a journal beside it
//! (`raft.journal`, see [`crate::journal`]): one place written per sync instead of a commit's
//! scattered pages.

use crate::journal::{Journal, JOURNAL_BYTES};
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Log entries by index, each an rmp-encoded `openraft::Entry`.
pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small named records: vote, committed, last purged, snapshot meta and data.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_PURGED: &str = "last_purged";
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";
/// The last log id the stored snapshot covers (beside it, cheap to read).
pub(crate) const KEY_SNAPSHOT_LAST: &str = "snapshot_last";
/// Which cluster this data belongs to (see [`Storage::bind_cluster`]).
pub(crate) const KEY_CLUSTER: &str = "cluster";
/// The encoding of what the database holds (log entries, snapshots), as [`FORMAT`].
pub(crate) const KEY_FORMAT: &str = "format";
/// The generation of the journal's records the database may lack (see [`crate::journal`]).
pub(crate) const KEY_JOURNAL_GEN: &str = "journal_generation";
/// The random id of this database that its journal's records carry.
pub(crate) const KEY_JOURNAL_ID: &str = "journal_id";

/// The storage format this build writes and reads. A database without the record but with
/// data is format 1 (before the record existed).
///
/// - 1: ops and values with their full serde variant names.
/// - 2: ops with one-letter tags, values as msgpack scalars or `[type, payload]` (smaller log
///   entries, snapshots and client updates).
/// - 3: as 2, with the log's journal (`raft.journal`), which can hold acknowledged entries the
///   database lacks: a build that does not read it must not open the data. Format 2 data is
///   taken up as it is (it has no journal yet).
pub const FORMAT: u32 = 3;

/// How writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before a write is acknowledged (the default for servers).
    Fsync,
    /// Written to the OS, not synced: a machine crash can lose acknowledged entries.
    NoFsync,
}

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory '{path}': {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the Raft database '{path}': {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "the Raft database '{path}' ({len} bytes) is damaged and was not opened: {source}. \
         Nothing was read from it. Restore it from a backup; or remove this server from the \
         cluster (remove_server / `synctree membership remove`), empty its data directory, \
         start it with --synctree-join and add it again: it catches up from the others \
         (a voter must never come back with a forgotten log and vote)"
    )]
    Damaged {
        path: PathBuf,
        len: u64,
        source: redb::DatabaseError,
    },
    #[error("cannot initialise the Raft database '{path}': {source}")]
    Init { path: PathBuf, source: redb::Error },
    #[error("cannot use the Raft log's journal '{path}': {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the Raft log's journal '{path}' is {found}, but its database has used it: it may hold \
         acknowledged log entries the database lacks, so the data was not opened. Restore the \
         data directory from a backup; or remove this server from the cluster, empty its data \
         directory, start it with --synctree-join and add it again (it catches up from the \
         others)"
    )]
    JournalLost { path: PathBuf, found: String },
    #[error(
        "the Raft database '{path}' belongs to cluster {stored}, but this server is configured \
         for cluster {configured} (other certificates): refusing to join with another \
         cluster's data; give it an empty data directory or that cluster's certificates"
    )]
    OtherCluster {
        path: PathBuf,
        stored: String,
        configured: String,
    },
    #[error(
        "the Raft database '{path}' is in storage format {stored}, and this build of synctree \
         reads format {supported} only: nothing was read from it. Run the build that wrote it; \
         or remove this server from the cluster, empty its data directory, start it with \
         --synctree-join and add it again (it catches up from the others)"
    )]
    Format {
        path: PathBuf,
        stored: u32,
        supported: u32,
    },
}

/// The opened store, shared by the log store and the state machine.
#[derive(Clone)]
pub struct Storage {
    pub(crate) db: Arc<Database>,
    pub(crate) durability: redb::Durability,
    /// Where the database lives; `None` for an in-memory store.
    pub path: Option<PathBuf>,
    /// With fsync on: where appended entries are made durable (see [`crate::journal`]).
    pub(crate) journal: Option<Arc<Mutex<Journal>>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(p) => write!(f, "Storage({})", p.display()),
            None => f.write_str("Storage(<memory>)"),
        }
    }
}

impl Storage {
    /// Ties this data to `cluster` (an identity of the cluster, such as its CA's
    /// fingerprint): recorded on first use, refused when it names another cluster, so a
    /// server pointed at another cluster's data directory never joins with it.
    pub fn bind_cluster(&self, cluster: &str) -> Result<(), StoreError> {
        let shown = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<memory>"));
        let fail = |source: redb::Error| StoreError::Init {
            path: shown.clone(),
            source,
        };
        let mut txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
        txn.set_durability(self.durability)
            .map_err(|e| fail(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
            let stored = meta
                .get(KEY_CLUSTER)
                .map_err(|e| fail(e.into()))?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match stored {
                Some(stored) if stored != cluster => {
                    return Err(StoreError::OtherCluster {
                        path: shown.clone(),
                        stored,
                        configured: cluster.to_owned(),
                    })
                }
                Some(_) => return Ok(()),
                None => {
                    meta.insert(KEY_CLUSTER, cluster.as_bytes())
                        .map_err(|e| fail(e.into()))?;
                }
            }
        }
        txn.commit().map_err(|e| fail(e.into()))
    }

    /// An explicit in-memory store, for tests: nothing survives the process.
    pub fn in_memory() -> Result<Storage, StoreError> {
        let path = PathBuf::from("<memory>");
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        Storage::init(db, redb::Durability::None, None)
    }

    fn init(
        db: Database,
        durability: redb::Durability,
        path: Option<PathBuf>,
    ) -> Result<Storage, StoreError> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from("<memory>"));
        let fail = |source: redb::Error| StoreError::Init {
            path: shown.clone(),
            source,
        };
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let logs = txn.open_table(LOGS).map_err(|e| fail(e.into()))?;
            let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
            let stored = meta.get(KEY_FORMAT).map_err(|e| fail(e.into()))?.map(|v| {
                <[u8; 4]>::try_from(v.value())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0)
            });
            let has_data = !logs.is_empty().map_err(|e| fail(e.into()))?
                || !meta.is_empty().map_err(|e| fail(e.into()))?;
            match stored {
                Some(FORMAT) => {}
                Some(2) => {
                    meta.insert(KEY_FORMAT, FORMAT.to_be_bytes().as_slice())
                        .map_err(|e| fail(e.into()))?;
                }
                None if !has_data => {
                    meta.insert(KEY_FORMAT, FORMAT.to_be_bytes().as_slice())
                        .map_err(|e| fail(e.into()))?;
                }
                stored => {
                    return Err(StoreError::Format {
                        path: shown,
                        stored: stored.unwrap_or(1),
                        supported: FORMAT,
                    })
                }
            }
        }
        txn.commit().map_err(|e| fail(e.into()))?;
        Ok(Storage {
            db: Arc::new(db),
            durability,
            path,
            journal: None,
        })
    }
}

/// Opens (or creates) the store in `data_dir/raft.redb`.
pub fn open(data_dir: &Path, durability: Durability) -> Result<Storage, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join("raft.redb");
    let shown = path.display().to_string();
    let warned = std::sync::atomic::AtomicBool::new(false);
    // Every open verifies the checksum of every committed page: a file damaged on disk is
    // refused with an error (a plain open may trust it, or panic on it). A commit torn by a
    // crash (never fsync'd, so never acknowledged) is rolled back, loudly.
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .set_repair_callback(move |_| {
            // Called as the repair progresses: say it once.
            if warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            tracing::warn!(
                "{shown} was not closed (a crash, a kill or a power loss): back to its last \
                 synced commit; the journal then restores what was acknowledged since"
            )
        })
        .create(&path)
        .map_err(|source| match source {
            // redb names what failed (a truncation gives the lengths; a bad page checksum
            // gives no position).
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => StoreError::Damaged {
                len: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                path: path.clone(),
                source,
            },
            source => StoreError::Open {
                path: path.clone(),
                source,
            },
        })?;
    let fsync = durability == Durability::Fsync;
    let durability = match durability {
        Durability::Fsync => redb::Durability::Immediate,
        Durability::NoFsync => redb::Durability::None,
    };
    let mut storage = Storage::init(db, durability, Some(path.clone()))?;
    // Without fsync the journal is not used, but one left by a run with fsync is read.
    let journal = recover(&storage, &data_dir.join("raft.journal"), fsync)?;
    storage.journal = journal.filter(|_| fsync).map(|j| Arc::new(Mutex::new(j)));
    Ok(storage)
}

/// Opens the journal, puts its records of the current generation back into the database
/// and commits that (synced) with the next generation, which appends then use. Without
/// `make`, a journal that was never used is not made (`None`).
fn recover(storage: &Storage, path: &Path, make: bool) -> Result<Option<Journal>, StoreError> {
    let journal_err = |source: std::io::Error| StoreError::Journal {
        path: path.to_owned(),
        source,
    };
    let init_err = |source: redb::Error| StoreError::Init {
        path: storage.path.clone().unwrap_or_default(),
        source,
    };
    let txn = storage.db.begin_write().map_err(|e| init_err(e.into()))?;
    let read_u64 = |key: &str| -> Result<Option<u64>, StoreError> {
        Ok(txn
            .open_table(META)
            .map_err(|e| init_err(e.into()))?
            .get(key)
            .map_err(|e| init_err(e.into()))?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map(u64::from_be_bytes))
    };
    let stored = read_u64(KEY_JOURNAL_GEN)?;
    // The database's own id, which its journal records carry: made at its first journal.
    let id = match read_u64(KEY_JOURNAL_ID)? {
        Some(id) => id,
        None => {
            let id = rand08::random::<u64>();
            txn.open_table(META)
                .map_err(|e| init_err(e.into()))?
                .insert(KEY_JOURNAL_ID, id.to_be_bytes().as_slice())
                .map_err(|e| init_err(e.into()))?;
            id
        }
    };
    // Only a journal that was never used may be missing or short (a crash while it was
    // first written): one in use may hold acknowledged entries.
    if stored.is_some() {
        let found = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing".to_owned()),
            Err(e) => return Err(journal_err(e)),
            Ok(m) if m.len() < JOURNAL_BYTES => Some(format!(
                "{} bytes where {JOURNAL_BYTES} were written",
                m.len()
            )),
            Ok(_) => None,
        };
        if let Some(found) = found {
            return Err(StoreError::JournalLost {
                path: path.to_owned(),
                found,
            });
        }
    }
    if !make && stored.is_none() && !path.exists() {
        return Ok(None);
    }
    let mut journal = Journal::open(path, JOURNAL_BYTES, id).map_err(journal_err)?;
    let generation = stored.unwrap_or(0);
    txn.open_table(META)
        .map_err(|e| init_err(e.into()))?
        .insert(KEY_JOURNAL_GEN, (generation + 1).to_be_bytes().as_slice())
        .map_err(|e| init_err(e.into()))?;
    let records = journal.records(generation).map_err(journal_err)?;
    {
        let mut logs = txn.open_table(LOGS).map_err(|e| init_err(e.into()))?;
        for (index, bytes) in &records {
            logs.insert(*index, bytes.as_slice())
                .map_err(|e| init_err(e.into()))?;
        }
    }
    txn.commit().map_err(|e| init_err(e.into()))?;
    if let (Some((first, _)), Some((last, _))) = (records.first(), records.last()) {
        tracing::info!(
            "{}: log entries {first}..={last} restored from the journal",
            path.display()
        );
    }
    journal.restart(generation + 1);
    Ok(Some(journal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_of_another_format_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = open(dir.path(), Durability::Fsync).expect("open");
        s.bind_cluster("ca-sha256:aaaa").expect("data");
        drop(s);
        open(dir.path(), Durability::Fsync).expect("same format");
        // A database of format 1 has data and no format record.
        let db = Database::create(dir.path().join("raft.redb")).expect("redb");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .remove(KEY_FORMAT)
            .expect("remove");
        txn.commit().expect("commit");
        drop(db);
        let err = open(dir.path(), Durability::Fsync).expect_err("format 1");
        let text = err.to_string();
        assert!(
            text.contains("raft.redb") && text.contains("format 1") && text.contains("format 3"),
            "{text}"
        );
    }

    #[test]
    fn data_of_another_cluster_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = open(dir.path(), Durability::Fsync).expect("open");
        s.bind_cluster("ca-sha256:aaaa")
            .expect("first use records it");
        s.bind_cluster("ca-sha256:aaaa").expect("same cluster");
        drop(s);
        let s = open(dir.path(), Durability::Fsync).expect("reopen");
        let err = s
            .bind_cluster("ca-sha256:bbbb")
            .expect_err("another cluster");
        let text = err.to_string();
        assert!(
            text.contains("raft.redb") && text.contains("aaaa") && text.contains("bbbb"),
            "{text}"
        );
        s.bind_cluster("ca-sha256:aaaa").expect("still its own");
    }
}
