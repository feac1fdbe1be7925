//! openraft's own storage test suite, for both storages.

use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::typecfg::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct InMemory;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for InMemory {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError> {
        Ok(((), LogStore::in_memory(), StateMachine::in_memory()))
    }
}

#[test]
fn in_memory_storage_passes_the_openraft_suite() {
    Suite::test_all(InMemory).expect("the in-memory storage passes");
}

#[cfg(feature = "durable")]
struct Durable;

#[cfg(feature = "durable")]
impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Durable {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        use std::sync::Arc;

        use crate::log_store::durable;
        use openraft::StorageIOError;

        let dir = tempfile::tempdir().map_err(|e| StorageIOError::read(&e))?;
        let opened = durable::open(&dir.path().join("raft.redb")).map_err(|e| StorageIOError::read(&e))?;
        let events = Arc::new(cluster_core::WatchLog::new(0, 16, 16, 1 << 16));
        let sm = StateMachine::new(opened.snapshot, Some(Arc::new(opened.writer.clone())), events)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok((dir, LogStore::durable(opened.log, opened.writer), sm))
    }
}

#[cfg(feature = "durable")]
#[test]
fn durable_storage_passes_the_openraft_suite() {
    Suite::test_all(Durable).expect("the durable storage passes");
}
