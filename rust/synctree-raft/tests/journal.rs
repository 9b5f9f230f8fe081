//! With fsync on, appended entries are durable through the journal, not the database: a
//! kill at any moment must leave every acknowledged entry, and nothing truncated or purged.
//!
//! A kill is what remains on disk when the process dies, and redb, on opening, goes back
//! to its last synced commit (its unsynced commits are in the file but not in its header).
//! So a copy of the data directory taken while the store is open, between two calls, is
//! exactly what a kill at that moment leaves.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
use redb::{ReadableDatabase, ReadableTableMetadata};
use std::path::Path;
use synctree_proto::EncodedBatch;
use synctree_raft::{open, Durability, LogStore, TypeConfig};

fn entry(term: u64, index: u64, bytes: usize) -> Entry<TypeConfig> {
    let payload = format!("t{term} i{index} ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(bytes.max(8))
        .collect::<Vec<u8>>();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(EncodedBatch::from_bytes(payload)),
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// What a kill now would leave: the data directory as it is on disk.
fn killed_copy(dir: &Path, files: &[&str]) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tmp");
    for f in files {
        std::fs::copy(dir.join(f), copy.path().join(f)).expect("copy");
    }
    copy
}

const BOTH: &[&str] = &["raft.redb", "raft.journal"];

/// (term, index, payload length) of every entry after reopening `dir`, and the last purged
/// index.
async fn reopened(dir: &Path) -> (Vec<(u64, u64, usize)>, Option<u64>) {
    reopened_as(dir, Durability::Fsync).await
}

/// [`reopened`] with `durability`.
async fn reopened_as(dir: &Path, durability: Durability) -> (Vec<(u64, u64, usize)>, Option<u64>) {
    let mut log = LogStore::new(open(dir, durability).expect("reopen"));
    let state = log.get_log_state().await.expect("state");
    let last = state.last_log_id.map(|l| l.index).unwrap_or(0);
    let entries = log.try_get_log_entries(0..=last).await.expect("read");
    let out = entries
        .iter()
        .map(|e| {
            let len = match &e.payload {
                EntryPayload::Normal(b) => b.len(),
                _ => 0,
            };
            (e.log_id.leader_id.term, e.log_id.index, len)
        })
        .collect();
    (out, state.last_purged_log_id.map(|l| l.index))
}

fn expected(
    term: u64,
    indexes: std::ops::RangeInclusive<u64>,
    len: usize,
) -> Vec<(u64, u64, usize)> {
    indexes.map(|i| (term, i, len)).collect()
}

#[tokio::test]
async fn acknowledged_appends_survive_a_kill() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = LogStore::new(open(dir.path(), Durability::Fsync).expect("open"));
    for i in 1..=50 {
        log.blocking_append(vec![entry(1, i, 100)])
            .await
            .expect("append");
    }
    let killed = killed_copy(dir.path(), BOTH);
    assert_eq!(
        reopened(killed.path()).await,
        (expected(1, 1..=50, 100), None)
    );
    // The database alone has lost them: the journal is what kept them.
    let alone = killed_copy(dir.path(), &["raft.redb"]);
    let db = redb::Database::create(alone.path().join("raft.redb")).expect("redb");
    let logs: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("logs");
    let txn = db.begin_read().expect("read");
    let in_db = txn.open_table(logs).expect("logs").len().expect("len");
    assert!(
        in_db < 50,
        "the database alone had every entry: the test kills nothing"
    );
    drop((txn, db));
    // A server restarted without fsync reads the journal a run with fsync left.
    let unsynced = killed_copy(dir.path(), BOTH);
    assert_eq!(
        reopened_as(unsynced.path(), Durability::NoFsync).await,
        (expected(1, 1..=50, 100), None)
    );
    // So a store whose journal went missing, or lost its end, is refused, not opened short.
    let missing = killed_copy(dir.path(), &["raft.redb"]);
    let err = open(missing.path(), Durability::Fsync).expect_err("journal missing");
    let text = err.to_string();
    assert!(
        text.contains("raft.journal") && text.contains("missing"),
        "{text}"
    );
    let short = killed_copy(dir.path(), BOTH);
    let journal = std::fs::OpenOptions::new()
        .write(true)
        .open(short.path().join("raft.journal"))
        .expect("journal");
    journal.set_len(4096).expect("shorten");
    let err = open(short.path(), Durability::Fsync).expect_err("journal short");
    let text = err.to_string();
    assert!(
        text.contains("raft.journal") && text.contains("4096 bytes"),
        "{text}"
    );
    // And the restored entries are in the database for good: a second kill keeps them.
    let again = killed_copy(killed.path(), BOTH);
    assert_eq!(
        reopened(again.path()).await,
        (expected(1, 1..=50, 100), None)
    );
}

#[tokio::test]
async fn a_truncation_stays_truncated_after_a_kill() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = LogStore::new(open(dir.path(), Durability::Fsync).expect("open"));
    for i in 1..=10 {
        log.blocking_append(vec![entry(1, i, 50)])
            .await
            .expect("append");
    }
    // A new leader's log wins from index 6: 6..=10 of term 1 go, 6..=8 of term 2 come (of
    // the same size, so their records end where older ones begin).
    log.truncate(log_id(1, 6)).await.expect("truncate");
    for i in 6..=8 {
        log.blocking_append(vec![entry(2, i, 50)])
            .await
            .expect("append");
    }
    let killed = killed_copy(dir.path(), BOTH);
    let mut want = expected(1, 1..=5, 50);
    want.extend(expected(2, 6..=8, 50));
    assert_eq!(reopened(killed.path()).await, (want, None));
}

#[tokio::test]
async fn a_purge_stays_purged_after_a_kill() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = LogStore::new(open(dir.path(), Durability::Fsync).expect("open"));
    for i in 1..=20 {
        log.blocking_append(vec![entry(1, i, 40)])
            .await
            .expect("append");
    }
    log.purge(log_id(1, 10)).await.expect("purge");
    for i in 21..=25 {
        log.blocking_append(vec![entry(1, i, 40)])
            .await
            .expect("append");
    }
    let killed = killed_copy(dir.path(), BOTH);
    assert_eq!(
        reopened(killed.path()).await,
        (expected(1, 11..=25, 40), Some(10))
    );
}

#[tokio::test]
async fn appends_beyond_the_journal_size_survive_a_kill() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = LogStore::new(open(dir.path(), Durability::Fsync).expect("open"));
    // 64 KiB entries, in appends of four: the 8 MiB journal fills every 32 appends, and a
    // large append (one entry of 9 MiB) does not fit it at all.
    let mut index = 0;
    for _ in 0..50 {
        let batch: Vec<_> = (0..4)
            .map(|_| {
                index += 1;
                entry(1, index, 64 << 10)
            })
            .collect();
        log.blocking_append(batch).await.expect("append");
    }
    index += 1;
    log.blocking_append(vec![entry(1, index, 9 << 20)])
        .await
        .expect("append a large entry");
    for _ in 0..3 {
        index += 1;
        log.blocking_append(vec![entry(1, index, 64 << 10)])
            .await
            .expect("append");
    }
    let killed = killed_copy(dir.path(), BOTH);
    let (entries, purged) = reopened(killed.path()).await;
    assert_eq!(purged, None);
    assert_eq!(entries.len() as u64, index);
    for (i, (term, at, len)) in entries.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!((*term, *at), (1, i));
        assert_eq!(*len, if i == 201 { 9 << 20 } else { 64 << 10 }, "entry {i}");
    }
}

#[tokio::test]
async fn a_journal_left_beside_a_fresh_database_is_not_read_into_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = LogStore::new(open(dir.path(), Durability::Fsync).expect("open"));
    for i in 1..=20 {
        log.blocking_append(vec![entry(1, i, 60)])
            .await
            .expect("append");
    }
    drop(log);
    // The database goes (emptied, restored from elsewhere); its journal stays.
    let old = killed_copy(dir.path(), &["raft.journal"]);
    let fresh = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        old.path().join("raft.journal"),
        fresh.path().join("raft.journal"),
    )
    .expect("copy");
    let mut log = LogStore::new(open(fresh.path(), Durability::Fsync).expect("fresh"));
    let state = log.get_log_state().await.expect("state");
    assert_eq!(
        state.last_log_id, None,
        "nothing read from another database's journal"
    );
    // Its own records, of the same size and generation numbers as the old ones, and then a
    // kill: only they come back.
    for i in 1..=3 {
        log.blocking_append(vec![entry(7, i, 60)])
            .await
            .expect("append");
    }
    let killed = killed_copy(fresh.path(), BOTH);
    assert_eq!(
        reopened(killed.path()).await,
        (expected(7, 1..=3, 60), None)
    );
}

/// What the store must hold: every acknowledged entry, as (term, index, length), the last
/// purged index and the last saved vote.
#[derive(Debug, Default, Clone, PartialEq)]
struct Model {
    entries: Vec<(u64, u64, usize)>,
    purged: Option<u64>,
    vote: Option<openraft::Vote<u64>>,
}

impl Model {
    fn next_index(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.1)
            .or(self.purged)
            .unwrap_or(0)
            + 1
    }
}

/// A random mix of appends (small to larger than the journal), truncations, purges and
/// votes, killed at random moments between calls; each kill's copy is opened and compared
/// with what was acknowledged, and the run goes on from the reopened store, so later kills
/// land on a store that recovered (it commits what it replays and starts a new generation).
/// A kill inside a call, or a missing fsync, is not what this finds (the copy reads the
/// page cache): those are the unit tests' torn records and the e2e kill -9 runs.
async fn random_run(seed: u64) {
    use rand08::{Rng, SeedableRng};
    let mut rng = rand08::rngs::StdRng::seed_from_u64(seed);
    let mut dir = tempfile::tempdir().expect("tmp");
    let mut log = LogStore::new(open(dir.path(), Durability::Fsync).expect("open"));
    let mut model = Model::default();
    let mut term = 1;
    let mut kills = 0;
    for step in 0..160 {
        let roll = rng.gen_range(0..100);
        if roll < 70 {
            let n = rng.gen_range(1..=5);
            let batch: Vec<_> = (0..n)
                .map(|k| {
                    let len = match rng.gen_range(0..100) {
                        0..=59 => rng.gen_range(8..2_000),
                        60..=96 => rng.gen_range(2_000..200_000),
                        97..=98 => rng.gen_range(1 << 20..3 << 20),
                        _ => rng.gen_range(8 << 20..9 << 20),
                    };
                    let index = model.next_index() + k;
                    (term, index, len)
                })
                .collect();
            let entries: Vec<_> = batch.iter().map(|(t, i, l)| entry(*t, *i, *l)).collect();
            log.blocking_append(entries).await.expect("append");
            model.entries.extend(batch);
        } else if roll < 80 && !model.entries.is_empty() {
            // A new leader's log replaces ours from some index on.
            let at = rng.gen_range(0..model.entries.len());
            let (t, i, _) = model.entries[at];
            log.truncate(log_id(t, i)).await.expect("truncate");
            model.entries.truncate(at);
            term += 1;
        } else if roll < 88 && !model.entries.is_empty() {
            let at = rng.gen_range(0..model.entries.len());
            let (t, i, _) = model.entries[at];
            log.purge(log_id(t, i)).await.expect("purge");
            model.entries.drain(..=at);
            model.purged = Some(i);
        } else if roll < 94 {
            term += 1;
            let vote = openraft::Vote::new(term, rng.gen_range(1..=3));
            log.save_vote(&vote).await.expect("vote");
            model.vote = Some(vote);
        } else {
            kills += 1;
            let killed = killed_copy(dir.path(), BOTH);
            drop(log);
            let (entries, purged) = reopened(killed.path()).await;
            let mut reopened_log =
                LogStore::new(open(killed.path(), Durability::Fsync).expect("reopen"));
            let vote = reopened_log.read_vote().await.expect("vote");
            let got = Model {
                entries,
                purged,
                vote,
            };
            assert!(
                got == model,
                "seed {seed}, step {step}, kill {kills}: reopened {} entries (purged {:?}, vote {:?}), acknowledged {} (purged {:?}, vote {:?}); first difference at {:?}",
                got.entries.len(),
                got.purged,
                got.vote,
                model.entries.len(),
                model.purged,
                model.vote,
                got.entries
                    .iter()
                    .zip(&model.entries)
                    .position(|(a, b)| a != b)
            );
            log = reopened_log;
            dir = killed;
        }
    }
    assert!(kills > 0, "seed {seed} never killed");
}

#[tokio::test]
async fn random_operations_killed_at_random_lose_nothing_acknowledged() {
    for seed in 0..6 {
        random_run(seed).await;
    }
}
