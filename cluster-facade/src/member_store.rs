//! [`MemberStore`]: the store of one member, replica or client member.
//!
//! Every member runs its raft node, but only the members of the bounded
//! replica set are in raft (`replicas` in [`ClusterConfig`](crate::ClusterConfig));
//! the raft node of a client member stays uninitialized and idle: it sends
//! nothing and is sent nothing. `MemberStore` serves what the member is now:
//!
//! - a **replica** (raft lists it): its raft store, as before;
//! - a **client member**: its [`ClientView`] of the cluster's records (under
//!   `carbon-grid/`) for members, short ids and the status (the leader and
//!   the replicas, as the records name them); every other key it reads at a
//!   replica ([`ConsensusStore::remote_reads`]: the member's router sends
//!   those reads and watches there, no older than what it showed before);
//!   writes, consistent reads and raft changes answer "not leader" with the
//!   leader the records name, so the member's router forwards them there.
//!
//! A member moves from client to replica once raft lists it, the records
//! name it a voter or nonvoter, and its own raft state caught up with what
//! its view served (the leader adds it only once it caught up); it moves
//! back when raft no longer lists it, or the leader it knows says it is not
//! in raft any more (a surplus replica taken out may never hear of it): from
//! then on it serves from its view, never from its stale raft state.
//!
//! **Its own reads follow what the leader answered it.** When the leader
//! answers a write or a linearizable read that this member's router
//! forwarded, the next local read through that router first learns the
//! leader's applied revision (one stale read at the leader, which applied
//! the write before it answered) and waits until this member's state —
//! view or raft — reached it. A member's local reads so never miss its own
//! acknowledged writes nor what its linearizable reads returned, and the
//! floor only grows, so they never go backwards either. A client member's
//! reads at replicas ask for at least that floor and the revision its
//! earlier reads at replicas were served at, so they never go backwards
//! either; its records, which move only when the records change, are read
//! again at a replica when they are behind the floor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cluster_core::{
    ConsensusProgress, ConsensusStatus, ConsensusStore, Endpoints, Entries, Error, KeyMeta, KeyScope,
    MemberId, RemoteReads, Result, ShortId, Watch, WriteOutcome, WriteRequest,
};
use cluster_service::{RouterOptions, ServiceClient};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::client_feed::{self, ReplicaSource};
use crate::client_view::ClientView;

mod reads;

/// How often a replica that does not lead asks the leader whether it is
/// still in raft, and looks again at its mode without other news.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A prefix no key starts with: to read only a store's revision.
const REVISION_PROBE: &str = "\u{0}";

/// One member's store: its raft store while it is a replica, its client
/// view while it is a client member. See the module doc.
pub struct MemberStore<S> {
    raft: Arc<S>,
    view: Arc<ClientView>,
    client: AtomicBool,
    /// Set once this member left the replica set (raft stopped listing it,
    /// or the leader said so): from then on only the records bring it back.
    left: AtomicBool,
    status: watch::Sender<ConsensusStatus>,
    stop: watch::Sender<bool>,
    /// How this member reaches other members' services (set by `run`).
    options: OnceLock<RouterOptions>,
    /// The service address of the leader whose last answer to this
    /// member's router the next local read must catch up with.
    answered_by: Mutex<Option<String>>,
    /// The revision this member's local reads must show at least.
    read_floor: AtomicU64,
    /// The highest revision this member's reads at replicas were served at:
    /// the next ones must show it at least (its records need not: they
    /// move only when the records change, and stay readable while no
    /// replica can be reached).
    seen_floor: AtomicU64,
    /// The replicas gossip's tags name (set by `run`), before the records do.
    tagged_replicas: OnceLock<ReplicaSource>,
    /// The client the read barrier last asked a revision with, and its address.
    asked: Mutex<Option<(String, ServiceClient)>>,
}

impl<S: ConsensusStore> MemberStore<S> {
    /// Wraps an open raft store; a member that raft lists starts as a replica.
    pub(crate) fn new(raft: S) -> Self {
        let raft = Arc::new(raft);
        let status = raft.status();
        let client = status.role().is_none();
        MemberStore {
            raft,
            view: Arc::new(ClientView::default()),
            client: AtomicBool::new(client),
            left: AtomicBool::new(false),
            status: watch::channel(status).0,
            stop: watch::channel(false).0,
            options: OnceLock::new(),
            answered_by: Mutex::new(None),
            read_floor: AtomicU64::new(0),
            seen_floor: AtomicU64::new(0),
            tagged_replicas: OnceLock::new(),
            asked: Mutex::new(None),
        }
    }

    /// The revision of the state this member's local reads serve now.
    fn local_revision(&self) -> u64 {
        if self.is_client() { self.view.revision() } else { self.raft_revision() }
    }

    /// True while this member is a client member.
    pub fn is_client(&self) -> bool {
        self.client.load(Ordering::Acquire)
    }

    /// The raft store under it.
    pub fn raft(&self) -> &Arc<S> {
        &self.raft
    }

    fn me(&self) -> MemberId {
        self.raft.member_id()
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader(self.view.leader_hint(self.me()))
    }

    /// The raft state's revision.
    fn raft_revision(&self) -> u64 {
        self.raft.get_prefix_with_revision(REVISION_PROBE).map(|(r, _)| r).unwrap_or(0)
    }

    fn current_status(&self) -> ConsensusStatus {
        if self.is_client() { self.view.status(self.me()) } else { self.raft.status() }
    }

    fn publish_status(&self) {
        let now = self.current_status();
        self.status.send_if_modified(|held| {
            let changed = *held != now;
            *held = now;
            changed
        });
    }

    fn set_client(&self, client: bool, why: &str) {
        if self.client.swap(client, Ordering::AcqRel) != client {
            if client {
                // Never serve older than what raft served here.
                self.view.resync_from(self.raft_revision());
            }
            info!(member = %self.me(), client, why, "member mode changed");
        }
        self.publish_status();
    }

    /// Follows this member's mode until the store shuts down: runs the
    /// client feed while it is a client member, and switches modes.
    /// Ends when the store shuts down or `member_stop` turns true.
    pub(crate) async fn run(
        self: Arc<Self>,
        replicas: ReplicaSource,
        options: RouterOptions,
        mut member_stop: watch::Receiver<bool>,
    ) {
        let _ = self.options.set(options.clone());
        let _ = self.tagged_replicas.set(replicas.clone());
        let mut stop = self.stop.subscribe();
        let mut raft_changes = self.raft.status_changes();
        let mut view_changes = self.view.revisions();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut feed: Option<tokio::task::JoinHandle<()>> = None;
        let mut probe = None;
        // Decide at once (a client member starts its feed now), then on news.
        let mut checked = false;
        loop {
            self.decide(checked, &mut probe, &options, &replicas).await;
            match (self.is_client(), feed.is_some()) {
                (true, false) => {
                    let view = self.view.clone();
                    let follow = client_feed::follow(view, self.me(), replicas.clone(), options.clone());
                    feed = Some(tokio::spawn(follow));
                }
                (false, true) => {
                    if let Some(f) = feed.take() {
                        f.abort();
                    }
                }
                _ => {}
            }
            if feed.as_ref().is_some_and(|f| f.is_finished()) {
                feed = None;
            }
            checked = false;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = member_stop.wait_for(|s| *s) => break,
                changed = raft_changes.changed() => if changed.is_err() { break },
                _ = view_changes.changed() => {}
                // A client member decides on news only: its inputs (raft's status,
                // the view) all come as changes.
                _ = tick.tick(), if !self.is_client() => checked = true,
            }
        }
        if let Some(f) = feed.take() {
            f.abort();
        }
        self.view.close();
    }

    /// Switches modes when the facts say so; `checked`: a tick, time to ask
    /// the leader whether this replica is still in raft.
    async fn decide(
        &self,
        checked: bool,
        probe: &mut Option<ServiceClient>,
        options: &RouterOptions,
        replicas: &ReplicaSource,
    ) {
        let me = self.me();
        let raft = self.raft.status();
        let listed = raft.role().is_some();
        if self.is_client() {
            let records = self.view.status(me);
            let recorded = records.voters.contains_key(&me) || records.nonvoters.contains_key(&me);
            // A leader is a replica whatever its view says (a lone member
            // back from its data directory has no replica to follow), and so
            // is a member raft lists whose view never synced and that never
            // left the set: a voter back from its data directory while no
            // quorum exists has no replica to follow either, and must serve
            // its own state (its short id) to take part in the election.
            let never_left = !self.view.synced() && !self.left.load(Ordering::Acquire);
            if listed
                && (recorded || raft.is_leader() || never_left)
                && self.raft_revision() >= self.view.revision()
            {
                self.set_client(false, "added to the replica set and caught up");
                return;
            }
        } else if !listed {
            self.left.store(true, Ordering::Release);
            self.set_client(true, "raft does not list this member");
            return;
        } else if checked
            && !raft.is_leader()
            && let Some(addr) = raft
                .leader_service_addr()
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                // Raft knows no leader (a member back with a stale state): gossip's.
                .or_else(|| replicas().into_iter().find(|(_, leads)| *leads).map(|(a, _)| a))
        {
            // A replica taken out of raft may never be told (a nonvoter is
            // not sent the entry that removes it; a member that was down
            // missed it): ask the leader.
            if probe.is_none() {
                *probe = ServiceClient::remote([addr.clone()], options.clone()).ok();
            }
            if let Some(client) = probe.as_ref() {
                match client.status_of(&addr).await {
                    Ok(s) if s.leader == Some(s.member_id) && !s.all_members().contains(&me) => {
                        self.left.store(true, Ordering::Release);
                        self.set_client(true, "the leader took this member out of raft");
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => debug!(member = %me, error = %e, "cannot ask the leader about this member"),
                }
            }
        }
        self.publish_status();
    }

    /// Stops following the mode.
    fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl<S: ConsensusStore> ConsensusStore for MemberStore<S> {
    fn member_id(&self) -> MemberId {
        self.raft.member_id()
    }

    fn raft_addr(&self) -> SocketAddr {
        self.raft.raft_addr()
    }

    fn status(&self) -> ConsensusStatus {
        self.current_status()
    }

    fn status_changes(&self) -> watch::Receiver<ConsensusStatus> {
        self.status.subscribe()
    }

    async fn is_initialized(&self) -> Result<bool> {
        self.raft.is_initialized().await
    }

    async fn bootstrap(&self) -> Result<()> {
        self.raft.bootstrap().await?;
        self.set_client(false, "formed a new cluster");
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if !self.is_client() {
            return self.raft.get(key);
        }
        if !self.holds(KeyScope::Key(key)) {
            return Err(self.not_held(KeyScope::Key(key)));
        }
        Ok(self.view.get(key))
    }

    fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        if !self.is_client() {
            return self.raft.get_with_meta(key);
        }
        if !self.holds(KeyScope::Key(key)) {
            return Err(self.not_held(KeyScope::Key(key)));
        }
        self.view.get_with_meta(key)
    }

    async fn consistent_get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.consistent_get_with_meta(key).await
    }

    fn get_prefix(&self, prefix: &str) -> Result<Entries> {
        Ok(self.get_prefix_with_revision(prefix)?.1)
    }

    fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, Entries)> {
        if !self.is_client() {
            return self.raft.get_prefix_with_revision(prefix);
        }
        if !self.holds(KeyScope::Prefix(prefix)) {
            return Err(self.not_held(KeyScope::Prefix(prefix)));
        }
        Ok(self.view.get_prefix_with_revision(prefix))
    }

    fn applied_revision(&self) -> Result<u64> {
        Ok(self.local_revision())
    }

    fn remote_reads(&self, scope: KeyScope<'_>) -> Option<RemoteReads> {
        if self.holds(scope) {
            return None;
        }
        let floor = self.read_floor.load(Ordering::Acquire).max(self.seen_floor.load(Ordering::Acquire));
        Some(RemoteReads { replicas: self.replica_addrs(), min_revision: floor })
    }

    fn observed_revision(&self, revision: u64) {
        self.seen_floor.fetch_max(revision, Ordering::AcqRel);
    }

    async fn progress(&self) -> ConsensusProgress {
        if self.is_client() { ConsensusProgress::default() } else { self.raft.progress().await }
    }

    fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>> {
        if self.is_client() { Ok(self.view.short_ids()) } else { self.raft.short_ids() }
    }

    async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.consistent_get(key).await
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.write(request).await
    }

    fn watch(&self, prefix: &str) -> Watch {
        if self.is_client() {
            self.watch_from(prefix, None).unwrap_or_else(|_| Watch::ended(prefix))
        } else {
            self.raft.watch(prefix)
        }
    }

    fn watch_from(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        if !self.is_client() {
            return self.raft.watch_from(prefix, from_revision);
        }
        if !self.holds(KeyScope::Prefix(prefix)) {
            return Err(self.not_held(KeyScope::Prefix(prefix)));
        }
        self.view.watch(prefix, from_revision)
    }

    fn answered_by_leader(&self, leader_service_addr: &str) {
        *self.answered_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(leader_service_addr.to_owned());
    }

    async fn read_barrier(&self, scope: KeyScope<'_>) -> Result<()> {
        self.learn_read_floor().await?;
        if !self.holds(scope) {
            // Read at a replica, at the floor: `remote_reads` names it.
            return Ok(());
        }
        let floor = self.read_floor.load(Ordering::Acquire);
        if self.is_client() && self.view.synced() && self.view.revision() < floor {
            self.refresh_view(floor).await?;
        }
        let wait = self.options.get().map_or(Duration::from_secs(3), |o| o.attempt_timeout);
        let deadline = tokio::time::Instant::now() + wait;
        let mut view_changes = self.view.revisions();
        let mut raft_changes = self.raft.status_changes();
        while self.local_revision() < floor {
            // A closed channel brings no news: wait for the others then.
            let view_moved = async {
                if view_changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let raft_moved = async {
                if raft_changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = view_moved => {}
                _ = raft_moved => {}
                // A mode change moves reads to the other state: look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::Timeout(format!(
                        "this member's state is at revision {}, behind revision {floor} the leader answered it at",
                        self.local_revision()
                    )));
                }
            }
        }
        Ok(())
    }

    async fn add_nonvoter(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.add_nonvoter(member, endpoints).await
    }

    async fn promote(&self, member: MemberId) -> Result<()> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.promote(member).await
    }

    async fn demote(&self, member: MemberId) -> Result<()> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.demote(member).await
    }

    async fn remove(&self, member: MemberId) -> Result<()> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.remove(member).await
    }

    async fn set_endpoints(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        if self.is_client() {
            return Err(self.not_leader());
        }
        self.raft.set_endpoints(member, endpoints).await
    }

    async fn shutdown(&self) -> Result<()> {
        self.stop();
        self.view.close();
        self.raft.shutdown().await
    }
}
