//! openraft's storage conformance suite against the redb log store and state machine,
//! on a real fsync'd database in a temporary directory and on the in-memory mode.

#![allow(clippy::result_large_err)] // openraft's StorageError

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use synctree_raft::{open, Durability, LogStore, NodeId, StateMachine, Storage, TypeConfig};
use tokio::sync::mpsc;

struct OnDisk;
struct InMemory;

async fn build(storage: Storage) -> Result<(LogStore, StateMachine), StorageError<NodeId>> {
    // The receiver is dropped: the suite does not look at applied effects.
    let (tx, _rx) = mpsc::channel(16);
    let (sm, _shared) = StateMachine::open(storage.clone(), tx, None).await?;
    Ok((LogStore::new(storage), sm))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = open(dir.path(), Durability::Fsync).expect("open store");
        let (log, sm) = build(storage).await?;
        Ok((dir, log, sm))
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for InMemory {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<NodeId>> {
        let (log, sm) = build(Storage::in_memory().expect("memory store")).await?;
        Ok(((), log, sm))
    }
}

#[test]
fn conformance_on_disk_fsync() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(OnDisk)
}

#[test]
fn conformance_in_memory() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(InMemory)
}
