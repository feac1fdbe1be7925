//! [`ClientView`]: a client member's copy of the cluster's records (every
//! key under `carbon-grid/`: members, short ids, roles), fed by a watch
//! from a replica ([`crate::client_feed`]).
//!
//! A client member holds no raft log, yet its members, short ids, grid
//! events and the status it routes by are read locally, from this view. The
//! view holds the records as of one revision of the store: a replica's
//! records read at a revision, then every change of them after it, in
//! revision order. It never goes back: a state older than the one it served
//! is refused, a change it already holds is ignored.
//!
//! Why only the records: every key would cost each client member, and the
//! replica that feeds it, work on every write of the cluster — measured at
//! 100 members (95 client members) as ~12 µs of CPU per write per client
//! member, which made the whole grid's throughput fall with its size. User
//! keys are read at a replica instead
//! ([`ConsensusStore::remote_reads`](cluster_core::ConsensusStore::remote_reads)).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use cluster_core::{
    ConsensusStatus, Endpoints, Entries, Error, KeyMeta, LeaderHint, MemberId, Result, ShortId, Watch,
    WatchEvent, WatchLog, keys,
};
use tokio::sync::watch;

/// A watcher may fall this many changes behind (as a replica's store allows).
const WATCH_CAPACITY: usize = 4096;
/// Changes remembered for watches from a past revision.
const WATCH_HISTORY_EVENTS: usize = 10_000;
/// Bytes of keys and values remembered for watches from a past revision.
const WATCH_HISTORY_BYTES: usize = 16 << 20;

/// One key of the view.
#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    /// Known for keys changed since the view first synced; a state read
    /// from a replica carries no revisions per key.
    meta: Option<KeyMeta>,
}

#[derive(Debug, Default)]
struct State {
    /// The store's revision this view is at.
    revision: u64,
    /// True once a replica's state was installed.
    synced: bool,
    entries: BTreeMap<String, Entry>,
    bytes: u64,
    /// What the records say, decoded once per change of a record: read on
    /// every routed operation and every change of the view.
    records: Option<Records>,
}

/// The cluster's records, decoded.
#[derive(Debug, Clone)]
struct Records {
    /// The status they describe (its `member_id` and `store_bytes` are set when read).
    status: ConsensusStatus,
    short_ids: BTreeMap<MemberId, ShortId>,
}

/// A client member's copy of the store; see the module doc.
pub(crate) struct ClientView {
    state: Mutex<State>,
    log: WatchLog,
    /// The revision after every change, for those who wait on the view.
    revision: watch::Sender<u64>,
}

impl Default for ClientView {
    fn default() -> Self {
        ClientView {
            state: Mutex::new(State::default()),
            log: WatchLog::new(0, WATCH_CAPACITY, WATCH_HISTORY_EVENTS, WATCH_HISTORY_BYTES),
            revision: watch::channel(0).0,
        }
    }
}

impl ClientView {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revision the view is at.
    pub(crate) fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// True once it holds a replica's state.
    pub(crate) fn synced(&self) -> bool {
        self.lock().synced
    }

    /// Every change of the view's revision.
    pub(crate) fn revisions(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Forgets the view's continuity: it must read a replica's state again
    /// before it serves, at `floor` or later (what this member served from
    /// elsewhere, e.g. its own raft state while it was a replica).
    pub(crate) fn resync_from(&self, floor: u64) {
        let mut state = self.lock();
        state.synced = false;
        state.revision = state.revision.max(floor);
    }

    /// Installs a replica's state at `revision`. Refused (`false`) when it
    /// is older than what the view already served. Watchers get what
    /// changed, stamped with `revision`.
    pub(crate) fn install(&self, revision: u64, entries: Entries) -> bool {
        let mut state = self.lock();
        if revision < state.revision {
            return false;
        }
        let mut events = Vec::new();
        let incoming: BTreeMap<String, Vec<u8>> = entries.into_iter().collect();
        for (key, old) in &state.entries {
            if !incoming.contains_key(key) {
                events.push(WatchEvent { key: key.clone(), value: None, revision });
            } else if incoming[key] != old.value {
                events.push(WatchEvent { key: key.clone(), value: Some(incoming[key].clone()), revision });
            }
        }
        for (key, value) in &incoming {
            if !state.entries.contains_key(key) {
                events.push(WatchEvent { key: key.clone(), value: Some(value.clone()), revision });
            }
        }
        let kept: BTreeSet<&String> = state
            .entries
            .keys()
            .filter(|k| incoming.get(*k) == state.entries.get(*k).map(|e| &e.value))
            .collect();
        let kept: BTreeSet<String> = kept.into_iter().cloned().collect();
        let mut next = BTreeMap::new();
        let mut bytes = 0u64;
        for (key, value) in incoming {
            bytes += (key.len() + value.len()) as u64;
            let meta = if kept.contains(&key) { state.entries.get(&key).and_then(|e| e.meta) } else { None };
            next.insert(key, Entry { value, meta });
        }
        state.entries = next;
        state.bytes = bytes;
        state.records = None;
        state.revision = revision;
        state.synced = true;
        drop(state);
        self.log.restart_at(revision, events);
        self.revision.send_replace(revision);
        true
    }

    /// Applies one change from the replica's watch; a change the view
    /// already holds (a repeat after a resume) is ignored. True if applied.
    pub(crate) fn apply(&self, event: WatchEvent) -> bool {
        let mut state = self.lock();
        if !state.synced || event.revision <= state.revision {
            return false;
        }
        let old = state.entries.remove(&event.key);
        if let Some(old) = &old {
            state.bytes = state.bytes.saturating_sub((event.key.len() + old.value.len()) as u64);
        }
        if let Some(value) = &event.value {
            let create_revision = match &old {
                Some(e) => e.meta.map(|m| m.create_revision),
                None => Some(event.revision),
            };
            let meta = create_revision.map(|c| KeyMeta { create_revision: c, mod_revision: event.revision });
            state.bytes += (event.key.len() + value.len()) as u64;
            state.entries.insert(event.key.clone(), Entry { value: value.clone(), meta });
        }
        if keys::is_reserved(&event.key) {
            state.records = None;
        }
        state.revision = event.revision;
        let revision = event.revision;
        drop(state);
        self.log.publish(vec![event]);
        self.revision.send_replace(revision);
        true
    }

    /// Ends every watch of the view: the member stops.
    pub(crate) fn close(&self) {
        self.log.close();
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().entries.get(key).map(|e| e.value.clone())
    }

    /// The value of `key` with its revisions, when the view knows them.
    pub(crate) fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        match self.lock().entries.get(key) {
            None => Ok(None),
            Some(Entry { value, meta: Some(meta) }) => Ok(Some((value.clone(), *meta))),
            Some(Entry { meta: None, .. }) => Err(Error::BadRequest(format!(
                "this client member's copy of the store does not know the revisions of {key:?} \
                 (unchanged since it synced with a replica): read it consistently"
            ))),
        }
    }

    /// The entries under `prefix` with the revision they are of.
    pub(crate) fn get_prefix_with_revision(&self, prefix: &str) -> (u64, Entries) {
        let state = self.lock();
        let entries = state
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        (state.revision, entries)
    }

    /// The bytes of every key and value it holds.
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Watches `prefix` in the view (see [`WatchLog::watch`]).
    pub(crate) fn watch(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        self.log.watch(prefix, from_revision)
    }

    /// The short ids the members' records carry.
    pub(crate) fn short_ids(&self) -> BTreeMap<MemberId, ShortId> {
        self.records().short_ids
    }

    /// What the cluster's records say about consensus, as `me` sees it:
    /// the leader and the voters and nonvoters with their endpoints.
    pub(crate) fn status(&self, me: MemberId) -> ConsensusStatus {
        let mut status = self.records().status;
        status.member_id = me;
        status.store_bytes = self.bytes();
        status
    }

    /// The records, decoded again only when one changed.
    fn records(&self) -> Records {
        let mut state = self.lock();
        if let Some(records) = &state.records {
            return records.clone();
        }
        let decoded = decode_records(
            state
                .entries
                .range(keys::RESERVED_PREFIX.to_owned()..)
                .take_while(|(k, _)| k.starts_with(keys::RESERVED_PREFIX))
                .map(|(k, e)| (k.as_str(), e.value.as_slice())),
        );
        state.records = Some(decoded.clone());
        decoded
    }

    /// The leader as the records name it, for a "not leader" answer.
    pub(crate) fn leader_hint(&self, me: MemberId) -> Option<LeaderHint> {
        let status = self.status(me);
        let leader = status.leader?;
        let service_addr = status.leader_service_addr().map(str::to_owned).filter(|a| !a.is_empty());
        Some(LeaderHint { member_id: leader, service_addr })
    }
}

/// Decodes the cluster's records (keys under `carbon-grid/`).
fn decode_records<'a>(records: impl Iterator<Item = (&'a str, &'a [u8])>) -> Records {
    let mut members = BTreeMap::new();
    let mut voters = BTreeSet::new();
    let mut nonvoters = BTreeSet::new();
    let mut leader = None;
    for (key, value) in records {
        if let Ok(id) = keys::parse_voter_key(key) {
            voters.insert(id);
        } else if let Ok(id) = keys::parse_nonvoter_key(key) {
            nonvoters.insert(id);
        } else if key == keys::LEADER_KEY {
            leader = std::str::from_utf8(value).ok().and_then(|s| s.parse::<MemberId>().ok());
        } else if let Ok(info) = keys::decode_member_record(key, value) {
            members.insert(info.member_id, info);
        }
    }
    let endpoints = |id: &MemberId| {
        members
            .get(id)
            .map(|m: &cluster_core::MemberInfo| Endpoints {
                raft_addr: m.raft_addr(),
                service_addr: m.service_addr(),
            })
            .unwrap_or_default()
    };
    let status = ConsensusStatus {
        leader,
        voters: voters.iter().map(|id| (*id, endpoints(id))).collect(),
        nonvoters: nonvoters.iter().map(|id| (*id, endpoints(id))).collect(),
        ..ConsensusStatus::default()
    };
    let short_ids = members.iter().filter_map(|(id, m)| m.short_id.map(|s| (*id, s))).collect();
    Records { status, short_ids }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, value: Option<&str>, revision: u64) -> WatchEvent {
        WatchEvent { key: key.into(), value: value.map(|v| v.as_bytes().to_vec()), revision }
    }

    #[test]
    fn a_view_never_goes_back_and_ignores_repeats() {
        let view = ClientView::default();
        assert!(!view.apply(ev("a", Some("1"), 1)), "nothing applies before a state is installed");
        assert!(view.install(5, vec![("a".into(), b"1".to_vec())]));
        assert!(view.apply(ev("b", Some("2"), 6)));
        assert!(!view.apply(ev("b", Some("old"), 6)), "a repeat is ignored");
        assert!(!view.install(4, vec![]), "an older state is refused");
        assert_eq!(view.get("b"), Some(b"2".to_vec()));
        assert_eq!(view.revision(), 6);
        // Revisions are known for keys changed since the sync only.
        assert_eq!(
            view.get_with_meta("b").unwrap().unwrap().1,
            KeyMeta { create_revision: 6, mod_revision: 6 }
        );
        assert!(view.get_with_meta("a").is_err());
        assert!(view.apply(ev("a", None, 7)));
        assert_eq!(view.get_prefix_with_revision(""), (7, vec![("b".into(), b"2".to_vec())]));
        // After a resync it serves nothing older than the floor.
        view.resync_from(9);
        assert!(!view.synced());
        assert!(!view.install(8, vec![]));
        assert!(view.install(9, vec![]));
    }

    #[tokio::test]
    async fn watchers_see_every_change_and_what_an_install_changed() {
        let view = ClientView::default();
        assert!(view.install(3, vec![("k/a".into(), b"1".to_vec()), ("k/b".into(), b"1".to_vec())]));
        let mut watch = view.watch("k/", None).unwrap();
        assert!(view.apply(ev("k/a", Some("2"), 4)));
        assert_eq!(watch.recv().await.unwrap().unwrap(), ev("k/a", Some("2"), 4));
        // A new state at 9: b deleted, c created, a unchanged.
        assert!(view.install(9, vec![("k/a".into(), b"2".to_vec()), ("k/c".into(), b"3".to_vec())]));
        assert_eq!(watch.recv().await.unwrap().unwrap(), ev("k/b", None, 9));
        assert_eq!(watch.recv().await.unwrap().unwrap(), ev("k/c", Some("3"), 9));
        assert!(matches!(view.watch("k/", Some(5)), Err(Error::Compacted { .. })));
    }

    #[test]
    fn the_status_comes_from_the_records() {
        let view = ClientView::default();
        let (l, n) = (MemberId::from(1), MemberId::from(2));
        let mut leader = cluster_core::MemberInfo::new(l, "127.0.0.1", 1, 2, 3, 4);
        leader.short_id = ShortId::new(1).ok();
        let entries = vec![
            (keys::LEADER_KEY.to_owned(), l.to_string().into_bytes()),
            (keys::member_key(l), leader.to_bytes()),
            (keys::nonvoter_key(n), Vec::new()),
            (keys::voter_key(l), Vec::new()),
        ];
        assert!(view.install(2, entries));
        let me = MemberId::from(9);
        let status = view.status(me);
        assert_eq!(status.leader, Some(l));
        assert_eq!(status.leader_service_addr(), Some("127.0.0.1:3"));
        assert!(status.nonvoters.contains_key(&n) && status.role().is_none());
        assert_eq!(view.short_ids(), BTreeMap::from([(l, ShortId::new(1).unwrap())]));
        assert_eq!(view.leader_hint(me).unwrap().service_addr.as_deref(), Some("127.0.0.1:3"));
    }
}
