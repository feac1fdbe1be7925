//! The replicated state machine: the ordered key-value map, its revision,
//! the short-id table and the request-id table that makes retries idempotent.
//!
//! [`KvState`] is the pure, deterministic part: it applies one
//! [`WriteRequest`] and says what changed. [`StateMachine`] puts it behind
//! openraft's `RaftStateMachine`, shares it with the store handle for local
//! reads, feeds the watchers and keeps the current snapshot (persisted with
//! the durable storage, so a reopened member restarts from it: openraft does
//! not load snapshots into the state machine by itself). The bytes of a
//! state, in both formats, are `format`'s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cluster_core::plan::lowest_free_short_id;
use cluster_core::{
    ClientRequestId, Error, KeyMeta, MemberId, ShortId, WatchEvent, WatchLog, WriteOp, WriteOutcome,
    WriteRequest,
};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::snapshot_data::SnapshotData;
use crate::typecfg::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, WriteResponse,
};

mod format;

/// How many answered request ids the state machine remembers. Older ones are
/// forgotten first (FIFO), the same way on every member, since eviction
/// happens inside `apply`.
pub(crate) const REMEMBERED_REQUESTS: usize = 10_000;

/// The whole replicated state, as a snapshot holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvState {
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub last_membership: StoredMembership,
    /// The user and cluster keys.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Grows by one with every change of `data`.
    pub revision: u64,
    /// The create and last-change revision of every key in `data`.
    pub meta: BTreeMap<String, KeyMeta>,
    /// Who holds which short id.
    pub short_ids: BTreeMap<MemberId, ShortId>,
    /// Answers of the last [`REMEMBERED_REQUESTS`] writes that carried a
    /// request id, oldest first.
    answered: VecDeque<(ClientRequestId, Result<WriteOutcome, Error>)>,
    /// Index of `answered` (rebuilt on load, never serialized).
    answered_index: HashMap<ClientRequestId, Result<WriteOutcome, Error>>,
    /// The bytes of every key and value in `data`, as the store quota counts
    /// them (kept up to date by every change, recomputed on load, never
    /// serialized: every member computes the same from the same log).
    pub store_bytes: u64,
}

impl KvState {
    /// Applies one write and returns its answer and the key changes it made.
    /// Deterministic: every member computes the same from the same state.
    pub fn apply_write(&mut self, req: &WriteRequest) -> (Result<WriteOutcome, Error>, Vec<WatchEvent>) {
        if let Some(id) = req.request_id
            && let Some(first) = self.answered_index.get(&id)
        {
            return (first.clone(), Vec::new());
        }
        let mut events = Vec::new();
        let outcome = self.apply_op(&req.op, &mut events);
        if let Some(id) = req.request_id {
            self.remember(id, outcome.clone());
        }
        (outcome, events)
    }

    fn remember(&mut self, id: ClientRequestId, outcome: Result<WriteOutcome, Error>) {
        self.answered.push_back((id, outcome.clone()));
        self.answered_index.insert(id, outcome);
        while self.answered.len() > REMEMBERED_REQUESTS {
            if let Some((old, _)) = self.answered.pop_front() {
                self.answered_index.remove(&old);
            }
        }
    }

    fn change(&mut self, key: &str, value: Option<Vec<u8>>, events: &mut Vec<WatchEvent>) {
        self.revision += 1;
        let revision = self.revision;
        let old = match &value {
            Some(v) => {
                self.store_bytes = self.store_bytes.saturating_add(crate::quota::entry_bytes(key, v));
                let meta = self
                    .meta
                    .entry(key.to_owned())
                    .or_insert(KeyMeta { create_revision: revision, mod_revision: revision });
                meta.mod_revision = revision;
                self.data.insert(key.to_owned(), v.clone())
            }
            None => {
                self.meta.remove(key);
                self.data.remove(key)
            }
        };
        if let Some(old) = old {
            self.store_bytes = self.store_bytes.saturating_sub(crate::quota::entry_bytes(key, &old));
        }
        events.push(WatchEvent { key: key.to_owned(), value, revision: self.revision });
    }

    fn apply_op(&mut self, op: &WriteOp, events: &mut Vec<WatchEvent>) -> Result<WriteOutcome, Error> {
        crate::quota::check_entry(op)?;
        match op {
            WriteOp::Set { key, value } => {
                let created = !self.data.contains_key(key);
                self.change(key, Some(value.clone()), events);
                Ok(WriteOutcome::Set { created })
            }
            WriteOp::Delete { key } => {
                let existed = self.data.contains_key(key);
                if existed {
                    self.change(key, None, events);
                }
                Ok(WriteOutcome::Delete { existed })
            }
            WriteOp::CompareAndSet { key, expected, new } => {
                let current = self.data.get(key);
                if current != expected.as_ref() {
                    return Ok(WriteOutcome::CompareAndSet(cluster_core::CasOutcome {
                        succeeded: false,
                        current: current.cloned(),
                    }));
                }
                if current.is_some() || new.is_some() {
                    self.change(key, new.clone(), events);
                }
                Ok(WriteOutcome::CompareAndSet(cluster_core::CasOutcome {
                    succeeded: true,
                    current: new.clone(),
                }))
            }
            WriteOp::AllocateShortId { member } => {
                if let Some(id) = self.short_ids.get(member) {
                    return Ok(WriteOutcome::ShortId(*id));
                }
                let id = lowest_free_short_id(self.short_ids.values().copied())
                    .ok_or_else(|| Error::BadRequest("every short id is taken".to_owned()))?;
                self.short_ids.insert(*member, id);
                Ok(WriteOutcome::ShortId(id))
            }
            WriteOp::ReleaseShortId { member } => {
                Ok(WriteOutcome::Released { held: self.short_ids.remove(member).is_some() })
            }
            // No key changes, so no watch event: a watcher sees the next
            // change with a revision past this one.
            WriteOp::AdvanceRevision { revision } => {
                self.revision = self.revision.max(*revision);
                Ok(WriteOutcome::Revision { revision: self.revision })
            }
            WriteOp::DeletePrefix { prefix } => Ok(self.delete_prefix(prefix, events)),
            other => Err(Error::BadRequest(format!("operation not supported by this member: {other:?}"))),
        }
    }

    /// The key changes that turn `self` into `new`, stamped with `new`'s
    /// revision (watchers see a snapshot install as these changes).
    fn diff_to(&self, new: &KvState) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        for (k, v) in &new.data {
            if self.data.get(k) != Some(v) {
                events.push(WatchEvent { key: k.clone(), value: Some(v.clone()), revision: new.revision });
            }
        }
        for k in self.data.keys() {
            if !new.data.contains_key(k) {
                events.push(WatchEvent { key: k.clone(), value: None, revision: new.revision });
            }
        }
        events.sort_by(|a, b| a.key.cmp(&b.key));
        events
    }
}

/// A snapshot as kept in memory and on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// The bytes of a [`KvState`].
    pub data: Vec<u8>,
}

/// Where snapshots are made durable (the redb storage), if anywhere.
pub(crate) trait SnapshotVault: Send + Sync + 'static {
    /// Persists `snapshot` before returning; it replaces the previous one.
    fn save(&self, snapshot: &StoredSnapshot) -> Result<(), std::io::Error>;
}

/// The state shared between the state machine and the store handle.
#[derive(Clone)]
pub(crate) struct SharedState(Arc<RwLock<KvState>>);

impl SharedState {
    /// Reads the state. Never held across an `.await`.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, KvState> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, KvState> {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The openraft state machine over a [`KvState`].
#[derive(Clone)]
pub(crate) struct StateMachine {
    state: SharedState,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    vault: Option<Arc<dyn SnapshotVault>>,
    events: Arc<WatchLog>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateMachine {
    /// A state machine starting from `snapshot` (the last persisted one) or
    /// empty (fails if the snapshot does not decode), recording applied
    /// changes in `events` (which replays from the starting state on).
    pub(crate) fn new(
        snapshot: Option<StoredSnapshot>,
        vault: Option<Arc<dyn SnapshotVault>>,
        events: Arc<WatchLog>,
    ) -> Result<Self, std::io::Error> {
        let state = match &snapshot {
            Some(s) => KvState::from_bytes(&s.data)?,
            None => KvState::default(),
        };
        events.restart_at(state.revision, Vec::new());
        Ok(StateMachine {
            state: SharedState(Arc::new(RwLock::new(state))),
            current: Arc::new(Mutex::new(snapshot)),
            vault,
            events,
        })
    }

    /// An empty in-memory state machine with its own watch log.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Self {
        StateMachine {
            state: SharedState(Arc::new(RwLock::new(KvState::default()))),
            current: Arc::new(Mutex::new(None)),
            vault: None,
            events: Arc::new(WatchLog::new(0, 1024, 1024, 1 << 20)),
        }
    }

    /// The state, shared with whoever reads it locally.
    pub(crate) fn shared(&self) -> SharedState {
        self.state.clone()
    }

    fn publish(&self, events: Vec<WatchEvent>) {
        self.events.publish(events);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (state, last_applied, last_membership) = {
            let s = self.state.read();
            (s.clone(), s.last_applied, s.last_membership.clone())
        };
        // CPU-heavy for large states: keep it off the async workers.
        let (state, data) = tokio::task::spawn_blocking(move || {
            let data = state.to_bytes();
            (state, data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let data = data.map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, state.revision),
            None => format!("none-{}", state.revision),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        if let Some(vault) = self.vault.clone() {
            let to_save = stored.clone();
            tokio::task::spawn_blocking(move || vault.save(&to_save))
                .await
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        }
        let data = stored.data.clone();
        *lock(&self.current) = Some(stored);
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotData::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = self.state.read();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<WriteResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut answers = Vec::new();
        let mut events = Vec::new();
        {
            let mut s = self.state.write();
            for entry in entries {
                s.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => answers.push(WriteResponse::default()),
                    EntryPayload::Normal(batch) => {
                        let mut outcomes = Vec::with_capacity(batch.0.len());
                        for req in &batch.0 {
                            let (outcome, changed) = s.apply_write(req);
                            events.extend(changed);
                            outcomes.push(outcome);
                        }
                        answers.push(WriteResponse(outcomes));
                    }
                    EntryPayload::Membership(m) => {
                        s.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        answers.push(WriteResponse::default());
                    }
                }
            }
        }
        self.publish(events);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(SnapshotData::receiving(|bytes| KvState::from_bytes(bytes).map(drop))))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut new_state = KvState::from_bytes(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // The metadata is authoritative for what the snapshot covers.
        new_state.last_applied = meta.last_log_id;
        new_state.last_membership = meta.last_membership.clone();
        let stored = StoredSnapshot { meta: meta.clone(), data };
        if let Some(vault) = self.vault.clone() {
            let to_save = stored.clone();
            let sig = meta.signature();
            tokio::task::spawn_blocking(move || vault.save(&to_save))
                .await
                .map_err(|e| StorageIOError::write_snapshot(Some(sig.clone()), &e))?
                .map_err(|e| StorageIOError::write_snapshot(Some(sig), &e))?;
        }
        let (revision, events) = {
            let mut s = self.state.write();
            let events = s.diff_to(&new_state);
            let revision = new_state.revision;
            *s = new_state;
            (revision, events)
        };
        *lock(&self.current) = Some(stored);
        // The revisions the snapshot skipped over cannot be replayed.
        self.events.restart_at(revision, events);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(lock(&self.current).as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(SnapshotData::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &[u8], id: Option<ClientRequestId>) -> WriteRequest {
        WriteRequest { op: WriteOp::Set { key: key.into(), value: value.to_vec() }, request_id: id }
    }

    #[test]
    fn set_delete_answer_created_and_existed() {
        let mut s = KvState::default();
        assert_eq!(s.apply_write(&set("a", b"1", None)).0, Ok(WriteOutcome::Set { created: true }));
        assert_eq!(s.apply_write(&set("a", b"2", None)).0, Ok(WriteOutcome::Set { created: false }));
        let del = WriteRequest { op: WriteOp::Delete { key: "a".into() }, request_id: None };
        assert_eq!(s.apply_write(&del).0, Ok(WriteOutcome::Delete { existed: true }));
        let (out, events) = s.apply_write(&del);
        assert_eq!(out, Ok(WriteOutcome::Delete { existed: false }));
        assert!(events.is_empty());
        assert_eq!(s.revision, 3);
    }

    #[test]
    fn retried_request_is_applied_once_and_answered_the_same() {
        let mut s = KvState::default();
        let id = ClientRequestId::generate();
        let first = s.apply_write(&set("a", b"1", Some(id))).0;
        let _ = s.apply_write(&set("a", b"2", None));
        let retry = s.apply_write(&set("a", b"1", Some(id)));
        assert_eq!(retry.0, first);
        assert!(retry.1.is_empty());
        assert_eq!(s.data["a"], b"2");
    }

    #[test]
    fn remembered_requests_are_bounded_fifo() {
        let mut s = KvState::default();
        let first = ClientRequestId::generate();
        let _ = s.apply_write(&set("k", b"x", Some(first)));
        for i in 0..REMEMBERED_REQUESTS {
            let _ = s.apply_write(&set(&format!("k{i}"), b"x", Some(ClientRequestId::generate())));
        }
        assert_eq!(s.answered.len(), REMEMBERED_REQUESTS);
        assert!(!s.answered_index.contains_key(&first));
        // Forgotten: applied again.
        assert_eq!(s.apply_write(&set("k", b"x", Some(first))).0, Ok(WriteOutcome::Set { created: false }));
    }

    #[test]
    fn short_ids_lowest_free_idempotent_released() {
        let mut s = KvState::default();
        let (a, b, c) = (MemberId::from(1), MemberId::from(2), MemberId::from(3));
        let alloc = |m| WriteRequest { op: WriteOp::AllocateShortId { member: m }, request_id: None };
        let release = |m| WriteRequest { op: WriteOp::ReleaseShortId { member: m }, request_id: None };
        let id = |n| Ok(WriteOutcome::ShortId(ShortId::new(n).unwrap()));
        assert_eq!(s.apply_write(&alloc(a)).0, id(1));
        assert_eq!(s.apply_write(&alloc(b)).0, id(2));
        assert_eq!(s.apply_write(&alloc(a)).0, id(1));
        assert_eq!(s.apply_write(&release(a)).0, Ok(WriteOutcome::Released { held: true }));
        assert_eq!(s.apply_write(&release(a)).0, Ok(WriteOutcome::Released { held: false }));
        assert_eq!(s.apply_write(&alloc(c)).0, id(1));
    }

    #[test]
    fn every_key_keeps_its_create_and_mod_revision_also_through_a_snapshot() {
        let mut s = KvState::default();
        let meta = |s: &KvState, k: &str| s.meta.get(k).map(|m| (m.create_revision, m.mod_revision));
        let _ = s.apply_write(&set("a", b"1", None)); // 1
        let _ = s.apply_write(&set("b", b"1", None)); // 2
        let _ = s.apply_write(&set("a", b"2", None)); // 3
        assert_eq!((meta(&s, "a"), meta(&s, "b")), (Some((1, 3)), Some((2, 2))));
        let delete = WriteRequest { op: WriteOp::Delete { key: "a".into() }, request_id: None };
        let _ = s.apply_write(&delete); // 4
        assert_eq!(meta(&s, "a"), None);
        let _ = s.apply_write(&set("a", b"3", None)); // 5: created anew
        assert_eq!(meta(&s, "a"), Some((5, 5)));
        let back = KvState::from_bytes(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_revision_advances_never_goes_back_and_touches_no_key() {
        let mut s = KvState::default();
        let _ = s.apply_write(&set("a", b"1", None));
        let advance = |r| WriteRequest { op: WriteOp::AdvanceRevision { revision: r }, request_id: None };
        let (outcome, events) = s.apply_write(&advance(57));
        assert_eq!((outcome, events), (Ok(WriteOutcome::Revision { revision: 57 }), Vec::new()));
        assert_eq!(s.apply_write(&advance(3)).0, Ok(WriteOutcome::Revision { revision: 57 }));
        assert_eq!(s.data.len(), 1);
        let (_, events) = s.apply_write(&set("b", b"2", None));
        assert_eq!(events[0].revision, 58);
    }

    #[test]
    fn snapshot_bytes_restore_everything() {
        let mut s = KvState::default();
        let _ = s.apply_write(&set("a", b"1", Some(ClientRequestId::generate())));
        let _ = s.apply_write(&WriteRequest {
            op: WriteOp::AllocateShortId { member: MemberId::from(9) },
            request_id: None,
        });
        let back = KvState::from_bytes(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.answered_index, s.answered_index);
        let mut bytes = s.to_bytes().unwrap();
        bytes.push(0);
        assert!(KvState::from_bytes(&bytes).is_err());
    }
}
