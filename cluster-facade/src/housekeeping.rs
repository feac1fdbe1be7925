//! The housekeeping every member runs, and the leader's part of it.
//!
//! Every member: feeds gossip events to its grid events, remembers when
//! members departed (so that whichever member becomes leader knows), and
//! keeps its own `raft_role` and `short_member_id` tags true.
//!
//! The leader, on every membership event, leadership change and tick:
//! gathers the facts (gossip, raft, the store's records), asks core's pure
//! planners what to change ([`plan_voters`], [`plan_records`], with the
//! departure clock of [`Departures`] given the time), and carries the
//! changes out one at a time. A failing change ends the round; the next
//! round plans again from fresh facts, so a leader change mid-round is safe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_core::plan::{
    AddressFacts, DepartureTimeouts, Departures, Health, PlanMember, RaftMembership, RecordChange,
    RecordFacts, Refusal, ReplicaBound, VoterChange, admit, plan_endpoint_updates, plan_records,
    plan_voters_preferring, refuse_duplicate_addresses,
};
use cluster_core::{
    ConsensusStatus, ConsensusStore, ConsensusStoreExt, Endpoints, MemberId, MemberInfo, Membership,
    MembershipEvent, MembershipEvents, RaftRole, ShortId, keys, keys::MemberRecords, member::tag,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::grid::{self, GridHub};
use crate::proof::MemberProofs;

/// The time of the departure clock: tokio's, so that tests can pause it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Settings of the housekeeping.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub num_voters: usize,
    /// The bound of the replica set (voters and nonvoters).
    pub replicas: usize,
    pub failure_grace: Duration,
    pub short_id_reap: Duration,
    pub interval: Duration,
    /// Proofs of a member certificate on a gossip member's raft endpoint.
    pub proofs: Arc<MemberProofs>,
}

pub(crate) struct Housekeeper<M, S> {
    me: MemberId,
    membership: Arc<M>,
    store: Arc<S>,
    settings: Settings,
    grid: GridHub,
    departures: Departures,
    published: (Option<RaftRole>, Option<ShortId>),
    own_short_id: watch::Sender<Option<ShortId>>,
    last_raft: Option<(Option<MemberId>, BTreeSet<MemberId>, BTreeSet<MemberId>)>,
    /// The last refusal reported per gossip member, so each is logged once.
    refused: HashMap<MemberId, String>,
    /// The reset id last published in the own tags (`Some(None)`: none).
    published_reset: Option<Option<String>>,
}

impl<M: Membership, S: ConsensusStore> Housekeeper<M, S> {
    pub(crate) fn new(
        membership: Arc<M>,
        store: Arc<S>,
        settings: Settings,
        grid: GridHub,
        own_short_id: watch::Sender<Option<ShortId>>,
    ) -> Self {
        Housekeeper {
            me: store.member_id(),
            membership,
            store,
            settings,
            grid,
            departures: Departures::new(),
            published: (None, None),
            own_short_id,
            last_raft: None,
            refused: HashMap::new(),
            published_reset: None,
        }
    }

    /// Runs until `stop` turns true or gossip ends.
    pub(crate) async fn run(mut self, mut events: MembershipEvents, mut stop: watch::Receiver<bool>) {
        let mut status = self.store.status_changes();
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A short id changes together with the cluster's records (an
        // allocation is followed by the member's record, a forced leave
        // deletes it): following the records' changes keeps grid events and
        // the own short id in step with the state machine, without polling
        // and without re-reading short ids on user writes.
        let mut records = self.store.watch(keys::RESERVED_PREFIX);
        let mut records_open = true;
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                event = events.recv() => match event {
                    Some(event) => self.track(&event),
                    None => break,
                },
                change = records.recv(), if records_open => {
                    // A change, or missed changes (lagged): read the state again either way.
                    records_open = change.is_some();
                    self.refresh_short_ids();
                    continue;
                }
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // The applied index moves with every write: act only on
                    // changes of leader or raft membership.
                    let s = status.borrow_and_update();
                    let raft = (s.leader, s.voters.keys().copied().collect(), s.nonvoters.keys().copied().collect());
                    drop(s);
                    if self.last_raft.as_ref() == Some(&raft) {
                        continue;
                    }
                    self.last_raft = Some(raft);
                    // The member may have changed between replica and client
                    // member: follow the records where they are served now.
                    records = self.store.watch(keys::RESERVED_PREFIX);
                    records_open = true;
                }
                _ = tick.tick() => {}
                // A grace or reap timeout ends: act on it now, not a tick later.
                _ = tokio::time::sleep_until(self.next_deadline()) => {}
            }
            self.refresh_short_ids();
            self.publish_own_tags().await;
            self.publish_reset_tag().await;
            if self.store.status().is_leader() {
                self.reconcile().await;
            }
        }
        debug!(member = %self.me, "housekeeping stopped");
    }

    /// When the departure clock next changes a decision, or far away.
    fn next_deadline(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match self.departures.next_deadline(now.into_std(), &self.timeouts()) {
            Some(at) => tokio::time::Instant::from_std(at),
            // No timer to wait for: an hour, then look again.
            None => now + Duration::from_secs(3600),
        }
    }

    fn track(&mut self, event: &MembershipEvent) {
        self.departures.observe(event, now());
    }

    /// Brings grid events and this member's own short id in line with the
    /// short ids the state machine holds.
    fn refresh_short_ids(&mut self) {
        let Ok(short_ids) = self.store.short_ids() else { return };
        grid::refresh(&self.grid, &self.membership.members(), &short_ids);
        let mine = short_ids.get(&self.me).copied();
        self.own_short_id.send_if_modified(|held| {
            let changed = *held != mine;
            *held = mine;
            changed
        });
    }

    /// Keeps this member's `raft_role` and `short_member_id` tags true.
    /// Runs after [`refresh_short_ids`](Self::refresh_short_ids), whose view
    /// of this member's short id it publishes.
    async fn publish_own_tags(&mut self) {
        let role = self.store.status().role();
        let short_id = *self.own_short_id.borrow();
        // A client member gossips lightly once it has joined (its short id
        // held): the replicas keep full pace, for failure detection and joins.
        self.membership.set_light_pace(role.is_none() && short_id.is_some());
        if (role, short_id) == self.published {
            return;
        }
        let mut tags = BTreeMap::new();
        // Out of raft: a client member (one that joins is, until it is added).
        tags.insert(tag::RAFT_ROLE.to_owned(), role.unwrap_or(RaftRole::Client).to_string());
        if let Some(id) = short_id {
            tags.insert(tag::SHORT_ID.to_owned(), id.to_string());
        }
        let removed = self.published.1.is_some() && short_id.is_none();
        let result = match self.membership.set_tags(tags).await {
            Ok(()) if removed => self.membership.remove_tags(vec![tag::SHORT_ID.to_owned()]).await,
            other => other,
        };
        match result {
            Ok(()) => self.published = (role, short_id),
            Err(e) => warn!(member = %self.me, error = %e, "cannot publish own tags"),
        }
    }

    /// Keeps this member's `raft_reset_pending` tag true: present with the
    /// reset id while its raft state reset is pending, absent otherwise.
    async fn publish_reset_tag(&mut self) {
        let pending = self.store.status().reset_pending;
        if self.published_reset.as_ref() == Some(&pending) {
            return;
        }
        let result = match &pending {
            Some(id) => {
                self.membership
                    .set_tags(BTreeMap::from([(tag::RAFT_RESET_PENDING.to_owned(), id.clone())]))
                    .await
            }
            None => self.membership.remove_tags(vec![tag::RAFT_RESET_PENDING.to_owned()]).await,
        };
        match result {
            Ok(()) => self.published_reset = Some(pending),
            Err(e) => warn!(member = %self.me, error = %e, "cannot publish the reset tag"),
        }
    }

    /// The live members whose raft state reset is pending, with their reset ids.
    fn pending_resets(&self) -> BTreeMap<MemberId, String> {
        self.membership
            .members()
            .into_iter()
            .filter(|m| m.id != self.me)
            .filter_map(|m| m.tags.get(tag::RAFT_RESET_PENDING).map(|id| (m.id, id.clone())))
            .collect()
    }

    /// The leader's part of a raft-safe reset (see `cluster_consensus::recovery`):
    /// a member with a pending reset is taken out of the voters; once it is
    /// a nonvoter, the note with its reset id tells it that it may vote
    /// again; notes of members no longer pending are deleted.
    async fn handle_resets(
        &self,
        pending: &BTreeMap<MemberId, String>,
        status: &ConsensusStatus,
        live: &BTreeMap<MemberId, MemberInfo>,
    ) -> cluster_core::Result<()> {
        for (id, reset_id) in pending {
            if status.voters.contains_key(id) {
                // Only when the other voters can commit it alone: a change that
                // cannot commit would stall every write behind it.
                let others: Vec<&MemberId> = status.voters.keys().filter(|v| *v != id).collect();
                let healthy = others.iter().filter(|v| **v == &self.me || live.contains_key(v)).count();
                if healthy * 2 <= others.len() {
                    debug!(member = %self.me, of = %id, "reset voter kept until the other voters are healthy");
                    continue;
                }
                info!(member = %self.me, of = %id, reset = %reset_id, "raft state of a voter was reset: demoting it");
                self.store.demote(*id).await?;
            } else if status.nonvoters.contains_key(id) {
                let key = keys::raft_reset_key(*id);
                if self.store.get(&key)?.as_deref() != Some(reset_id.as_bytes()) {
                    info!(member = %self.me, of = %id, reset = %reset_id, "reset member is out of the voters");
                    self.store.set(&key, reset_id.clone().into_bytes()).await?;
                }
            }
        }
        for (key, _) in self.store.get_prefix(keys::RAFT_RESET_PREFIX)? {
            if keys::parse_raft_reset_key(&key).is_ok_and(|id| !pending.contains_key(&id)) {
                self.store.delete(&key).await?;
            }
        }
        Ok(())
    }

    fn timeouts(&self) -> DepartureTimeouts {
        DepartureTimeouts {
            failure_grace: self.settings.failure_grace,
            short_id_reap: self.settings.short_id_reap,
        }
    }

    /// One round of the leader's housekeeping.
    async fn reconcile(&mut self) {
        let now = now();
        let live = self.admitted();
        let status = self.store.status();
        // A member in raft that gossip does not show, and whose departure this
        // member never saw (it became leader later): its clock starts now.
        for id in status.all_members() {
            if id != self.me && !live.contains_key(&id) {
                self.departures.note_missing(id, now);
            }
        }
        // A member that restarted on other ports is reached at the new ones.
        let in_raft: BTreeMap<MemberId, Endpoints> =
            status.voters.iter().chain(&status.nonvoters).map(|(id, e)| (*id, e.clone())).collect();
        let live_infos: Vec<MemberInfo> = live.values().cloned().collect();
        for (id, endpoints) in plan_endpoint_updates(&live_infos, &in_raft) {
            info!(member = %self.me, of = %id, raft = %endpoints.raft_addr, "member moved: new raft endpoints");
            if let Err(e) = self.store.set_endpoints(id, endpoints).await {
                debug!(member = %self.me, error = %e, "endpoint update failed; next round retries");
                return;
            }
        }
        let status = self.store.status();
        let pending = self.pending_resets();
        if let Err(e) = self.handle_resets(&pending, &status, &live).await {
            // The rest of the round does not depend on it.
            debug!(member = %self.me, error = %e, "reset handling failed; next round retries");
        }
        let status = self.store.status();
        if let Err(e) = self.balance_voters(&status, &live, &pending, now).await {
            debug!(member = %self.me, error = %e, "voter change failed; next round retries");
            return;
        }
        // Records follow short ids, which follow raft membership: re-plan
        // at once while the last round changed something.
        for _ in 0..4 {
            match self.update_records(&live, now).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    debug!(member = %self.me, error = %e, "record update failed; next round retries");
                    return;
                }
            }
        }
        // Forget departures that left no trace.
        let status = self.store.status();
        let short_ids = self.store.short_ids().unwrap_or_default();
        let known = status.all_members();
        self.departures.retain(|id| known.contains(&id) || short_ids.contains_key(&id));
    }

    /// The live gossip members that pass admission ([`admit`]), advertise
    /// no address another member holds ([`refuse_duplicate_addresses`])
    /// and, with TLS, proved a member certificate on their raft endpoint
    /// (unless raft already reaches them there): only they can become raft
    /// members, hold short ids or have records. A refusal is logged once per
    /// member and reason; missing tags (a member starting) only at debug.
    fn admitted(&mut self) -> BTreeMap<MemberId, MemberInfo> {
        let mut admitted = BTreeMap::new();
        let mut refused = HashMap::new();
        let status = self.store.status();
        let in_raft: BTreeMap<MemberId, Endpoints> =
            status.voters.iter().chain(&status.nonvoters).map(|(id, e)| (*id, e.clone())).collect();
        let members = self.membership.members();
        let mut candidates = Vec::new();
        let mut refusals = Vec::new();
        for m in &members {
            match admit(m) {
                Ok(info) => candidates.push(info),
                Err(refusal) => refusals.push((m.id, refusal)),
            }
        }
        let short_ids = self.store.short_ids().unwrap_or_default();
        let mut duplicates = refuse_duplicate_addresses(&AddressFacts {
            leader: self.me,
            candidates: &candidates,
            raft: &in_raft,
            short_ids: &short_ids,
        });
        for info in candidates {
            if let Some(refusal) = duplicates.remove(&info.member_id) {
                refusals.push((info.member_id, refusal));
                continue;
            }
            let raft_addr = info.raft_addr();
            if info.member_id == self.me
                || in_raft.get(&info.member_id).map(|e| e.raft_addr.as_str()) == Some(raft_addr.as_str())
                || self.settings.proofs.proven(info.member_id, &raft_addr)
            {
                admitted.insert(info.member_id, info);
            }
        }
        for (id, refusal) in refusals {
            let reason = refusal.to_string();
            if self.refused.get(&id) != Some(&reason) {
                if matches!(refusal, Refusal::Tags(_)) {
                    debug!(member = %self.me, of = %id, %reason, "gossip member not admitted yet");
                } else {
                    warn!(member = %self.me, of = %id, %reason, "gossip member refused");
                }
            }
            refused.insert(id, reason);
        }
        self.refused = refused;
        self.settings.proofs.retain(|id| members.iter().any(|m| m.id == *id));
        admitted
    }

    async fn balance_voters(
        &self,
        status: &ConsensusStatus,
        live: &BTreeMap<MemberId, MemberInfo>,
        pending: &BTreeMap<MemberId, String>,
        now: Instant,
    ) -> cluster_core::Result<()> {
        let ids: BTreeSet<MemberId> = live.keys().copied().chain(status.all_members()).collect();
        let members: Vec<PlanMember> = ids
            .into_iter()
            .map(|id| PlanMember {
                id,
                raft: if status.voters.contains_key(&id) {
                    RaftMembership::Voter
                } else if status.nonvoters.contains_key(&id) {
                    RaftMembership::Nonvoter
                } else {
                    RaftMembership::Absent
                },
                health: match self.departures.health(
                    id,
                    id == self.me || live.contains_key(&id),
                    now,
                    &self.timeouts(),
                ) {
                    // In raft with a pending reset: kept, never promoted, not counted on.
                    Health::Healthy if pending.contains_key(&id) && status.all_members().contains(&id) => {
                        Health::Suspect
                    }
                    health => health,
                },
            })
            .collect();
        let bound = ReplicaBound { voters: self.settings.num_voters, replicas: self.settings.replicas };
        let (replicas, members) = crate::replicas::plan(members, live, bound, self.me);
        for change in plan_voters_preferring(&members, bound.voters, self.me, &replicas.voter_preference) {
            info!(member = %self.me, ?change, "raft membership change");
            match change {
                VoterChange::AddNonvoter(id) => {
                    let Some(info) = live.get(&id) else { continue };
                    let endpoints =
                        Endpoints { raft_addr: info.raft_addr(), service_addr: info.service_addr() };
                    self.store.add_nonvoter(id, endpoints).await?
                }
                VoterChange::Promote(id) => self.store.promote(id).await?,
                VoterChange::Demote(id) => self.store.demote(id).await?,
                VoterChange::Remove(id) => self.store.remove(id).await?,
            }
        }
        Ok(())
    }

    /// One round of record changes; returns how many were made.
    async fn update_records(
        &self,
        live: &BTreeMap<MemberId, MemberInfo>,
        now: Instant,
    ) -> cluster_core::Result<usize> {
        let status = self.store.status();
        let ids_under = |prefix: &str, parse: fn(&str) -> cluster_core::Result<MemberId>| {
            self.store
                .get_prefix(prefix)
                .map(|kvs| kvs.iter().filter_map(|(k, _)| parse(k).ok()).collect::<BTreeSet<_>>())
        };
        let records = MemberRecords::decode(self.store.get_prefix(keys::MEMBERS_PREFIX)?);
        for (key, error) in &records.rejected {
            // Treated as absent: the planner rewrites a member's record.
            debug!(member = %self.me, %key, %error, "not a member record");
        }
        let leader_key = self
            .store
            .get(keys::LEADER_KEY)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse().ok());
        let facts = RecordFacts {
            leader: self.me,
            // Every admitted member gets records: those out of raft as client members.
            live: live.values().cloned().collect(),
            voters: status.voters.keys().copied().collect(),
            nonvoters: status.nonvoters.keys().copied().collect(),
            clients: live.keys().filter(|id| !status.all_members().contains(id)).copied().collect(),
            short_ids: self.store.short_ids()?,
            recorded: records.members,
            voter_keys: ids_under(keys::VOTERS_PREFIX, keys::parse_voter_key)?,
            nonvoter_keys: ids_under(keys::NONVOTERS_PREFIX, keys::parse_nonvoter_key)?,
            leader_key,
            released: self.departures.released(now, &self.timeouts()),
        };
        let plan = plan_records(&facts);
        let made = plan.len();
        for change in plan {
            debug!(member = %self.me, ?change, "record change");
            let s = &self.store;
            match change {
                RecordChange::AllocateShortId(id) => {
                    let short = s.allocate_short_id(id).await?;
                    info!(member = %self.me, of = %id, short_id = %short, "short id allocated");
                }
                RecordChange::ReleaseShortId(id) => {
                    s.release_short_id(id).await?;
                    info!(member = %self.me, of = %id, "short id released");
                }
                RecordChange::PutMember(m) => {
                    s.set(&keys::member_key(m.member_id), m.to_bytes()).await?;
                }
                RecordChange::DeleteMember(id) => {
                    s.delete(&keys::member_key(id)).await?;
                }
                RecordChange::PutVoterKey(id) => {
                    s.set(&keys::voter_key(id), Vec::new()).await?;
                }
                RecordChange::DeleteVoterKey(id) => {
                    s.delete(&keys::voter_key(id)).await?;
                }
                RecordChange::PutNonvoterKey(id) => {
                    s.set(&keys::nonvoter_key(id), Vec::new()).await?;
                }
                RecordChange::DeleteNonvoterKey(id) => {
                    s.delete(&keys::nonvoter_key(id)).await?;
                }
                RecordChange::PutLeader(id) => {
                    s.set(keys::LEADER_KEY, id.to_string().into_bytes()).await?;
                }
            }
        }
        Ok(made)
    }
}

#[cfg(test)]
mod tests;
