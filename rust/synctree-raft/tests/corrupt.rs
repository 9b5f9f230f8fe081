//! A data directory damaged on disk: the server must refuse it, naming the file, never
//! start with entries silently lost or invented.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
use synctree_raft::{open, Durability, LogStore, TypeConfig};

fn entries(n: u64) -> Vec<Entry<TypeConfig>> {
    (1..=n)
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Blank,
        })
        .collect()
}

async fn fill(dir: &std::path::Path, n: u64) {
    let storage = open(dir, Durability::Fsync).expect("open");
    let mut log = LogStore::new(storage);
    for e in entries(n) {
        log.blocking_append(vec![e]).await.expect("append");
    }
}

async fn reopen(dir: &std::path::Path) -> Result<u64, String> {
    let storage = open(dir, Durability::Fsync).map_err(|e| e.to_string())?;
    let mut log = LogStore::new(storage);
    let state = log.get_log_state().await.map_err(|e| e.to_string())?;
    let n = state.last_log_id.map(|l| l.index).unwrap_or(0);
    let all = log
        .try_get_log_entries(1..=n)
        .await
        .map_err(|e| e.to_string())?;
    Ok(all.len() as u64)
}

#[tokio::test]
async fn truncated_data_dir_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    fill(dir.path(), 200).await;
    assert_eq!(reopen(dir.path()).await, Ok(200), "intact reopen");
    let file = dir.path().join("raft.redb");
    let len = std::fs::metadata(&file).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    let err = reopen(dir.path())
        .await
        .expect_err("a truncated log is refused");
    // redb's reason gives the offset the file stops at and the length it should have.
    assert!(
        err.contains("raft.redb") && err.contains("truncated") && err.contains("file_len="),
        "{err}"
    );
}

#[tokio::test]
async fn garbled_data_dir_is_refused_or_intact_never_panics() {
    for at in [4u64, 3, 2] {
        let dir = tempfile::tempdir().expect("tmp");
        fill(dir.path(), 200).await;
        let file = dir.path().join("raft.redb");
        let mut bytes = std::fs::read(&file).expect("read");
        let from = bytes.len() / at as usize;
        for b in bytes.iter_mut().skip(from).take(4096) {
            *b ^= 0x5a;
        }
        std::fs::write(&file, bytes).expect("write");
        // A plain redb open could panic here; ours checks every page first.
        match reopen(dir.path()).await {
            Err(e) => assert!(
                e.contains("raft.redb") && e.contains("damaged") && e.contains("bytes"),
                "the error names the file and its size: {e}"
            ),
            Ok(n) => assert_eq!(
                n, 200,
                "opened (the damage hit free space): nothing missing"
            ),
        }
    }
}
