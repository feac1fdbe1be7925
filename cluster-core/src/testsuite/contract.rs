//! Contract suites: the guarantees the docs of [`ConsensusStore`] and
//! [`Membership`] state, checked against any implementation, as openraft's
//! `testing::Suite` checks its storage traits. Every backend and every fake
//! runs them, each from one test:
//!
//! ```ignore
//! #[tokio::test]
//! async fn the_raft_store_keeps_the_contract() {
//!     consensus_store_suite(|| RaftStore::open(config())).await;
//! }
//! ```
//!
//! A suite panics on the first broken guarantee, naming the check. Waits
//! have generous deadlines ([`DEADLINE`]): only a failure waits that long.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::id::MemberId;
use crate::membership::{
    FailureDetection, GossipEncryption, Member, Membership, MembershipConfig, MembershipEvent,
    MembershipEvents,
};
use crate::store::{ConsensusStore, ConsensusStoreExt, Watch, WatchEvent, WriteRequest};
use crate::testsuite::wait_until;

/// How long a suite waits for what a guarantee promises before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("contract: timed out after {DEADLINE:?} waiting for {what}"),
    }
}

fn ok<T>(check: &str, r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("contract {check}: unexpected error {e}"),
    }
}

/// Runs every [`ConsensusStore`] check, each on a fresh store from `open`
/// (a member not yet part of any cluster, shut down after its check).
pub async fn consensus_store_suite<S, F, Fut>(open: F)
where
    S: ConsensusStore,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S>>,
{
    store_bootstrap_forms_a_cluster_it_leads(ok("open", open().await)).await;
    store_writes_apply_and_answer(led(open().await).await).await;
    store_retried_request_applies_once(led(open().await).await).await;
    store_watch_sees_every_change_in_order(led(open().await).await).await;
    store_watch_from_a_revision_misses_nothing(led(open().await).await).await;
    store_short_ids_are_unique_lowest_free_and_kept(led(open().await).await).await;
    store_delete_prefix_is_one_change(led(open().await).await).await;
}

/// A store that formed its own cluster and leads it.
async fn led<S: ConsensusStore>(store: Result<S>) -> S {
    let store = ok("open", store);
    ok("bootstrap", store.bootstrap().await);
    let me = store.member_id();
    let mut status = store.status_changes();
    within("the bootstrapped member to lead", status.wait_for(|s| s.leader == Some(me)))
        .await
        .expect("status changes end only on shutdown");
    drop(status);
    store
}

async fn store_bootstrap_forms_a_cluster_it_leads<S: ConsensusStore>(store: S) {
    let check = "bootstrap";
    assert!(!ok(check, store.is_initialized().await), "contract {check}: a new store is not initialized");
    match store.write(WriteRequest::set("k", b"v".to_vec())).await {
        Err(Error::NotLeader(_)) => {}
        other => panic!(
            "contract {check}: a member of no cluster must refuse writes with NotLeader, got {other:?}"
        ),
    }
    let store = led(Ok(store)).await;
    assert!(ok(check, store.is_initialized().await), "contract {check}: initialized once bootstrapped");
    ok(check, store.bootstrap().await);
    let status = store.status();
    assert!(status.is_leader(), "contract {check}: a second bootstrap is harmless: {status:?}");
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), vec![store.member_id()]);
    ok(check, store.shutdown().await);
}

async fn store_writes_apply_and_answer<S: ConsensusStore>(store: S) {
    let check = "writes";
    assert!(ok(check, store.set("b/1", b"one".to_vec()).await), "contract {check}: a new key is created");
    assert!(!ok(check, store.set("b/1", b"uno".to_vec()).await), "contract {check}: an old key is not");
    ok(check, store.set("b/0", b"zero".to_vec()).await);
    ok(check, store.set("c/0", b"other".to_vec()).await);
    // Acknowledged means applied here (the leader applies before it answers).
    assert_eq!(ok(check, store.get("b/1")), Some(b"uno".to_vec()));
    assert_eq!(ok(check, store.consistent_get("b/1").await), Some(b"uno".to_vec()));
    let keys: Vec<String> = ok(check, store.get_prefix("b/")).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["b/0", "b/1"], "contract {check}: a prefix read is in key order");

    let cas = ok(check, store.compare_and_set("b/1", Some(b"no".to_vec()), Some(b"x".to_vec())).await);
    assert!(!cas.succeeded && cas.current == Some(b"uno".to_vec()), "contract {check}: {cas:?}");
    let cas = ok(check, store.compare_and_set("b/1", Some(b"uno".to_vec()), Some(b"dos".to_vec())).await);
    assert!(cas.succeeded && cas.current == Some(b"dos".to_vec()), "contract {check}: {cas:?}");
    let cas = ok(check, store.compare_and_set("b/new", None, Some(b"n".to_vec())).await);
    assert!(cas.succeeded, "contract {check}: expected absent on an absent key succeeds");

    assert!(ok(check, store.delete("b/1").await), "contract {check}: delete of a key that existed");
    assert!(!ok(check, store.delete("b/1").await), "contract {check}: delete of a key that did not");
    assert_eq!(ok(check, store.get("b/1")), None);
    ok(check, store.shutdown().await);
}

async fn store_delete_prefix_is_one_change<S: ConsensusStore>(store: S) {
    let check = "delete prefix";
    for key in ["d/1", "d/2", "d/3", "dx", "e"] {
        ok(check, store.set(key, b"v".to_vec()).await);
    }
    let (before, _) = ok(check, store.get_prefix_with_revision("d/"));
    let mut watch = store.watch("");
    let deleted = ok(check, store.write(WriteRequest::delete_prefix("d/")).await);
    assert_eq!(ok(check, deleted.into_deleted()), 3, "contract {check}: it answers how many keys it deleted");
    let (after, left) = ok(check, store.get_prefix_with_revision("d"));
    assert_eq!(left, vec![("dx".to_owned(), b"v".to_vec())], "contract {check}: only the keys under it go");
    if before > 0 {
        assert_eq!(after, before + 1, "contract {check}: one change, one revision");
    }
    for key in ["d/1", "d/2", "d/3"] {
        let event = next_event(check, &mut watch).await;
        assert_eq!((event.key.as_str(), event.value.as_ref()), (key, None), "contract {check}: {event:?}");
        if before > 0 {
            assert_eq!(event.revision, after, "contract {check}: every delete at the one revision");
        }
    }
    let none = ok(check, store.write(WriteRequest::delete_prefix("d/")).await);
    assert_eq!(ok(check, none.into_deleted()), 0, "contract {check}: nothing left to delete");
    match store.write(WriteRequest::delete_prefix("")).await {
        Err(Error::BadRequest(_)) => {}
        other => panic!("contract {check}: the empty prefix must be refused, got {other:?}"),
    }
    assert!(ok(check, store.get("e")).is_some(), "contract {check}: a refused delete deletes nothing");
    ok(check, store.shutdown().await);
}

async fn store_retried_request_applies_once<S: ConsensusStore>(store: S) {
    let check = "retried request";
    let first = WriteRequest::set("r", b"first".to_vec());
    let answer = ok(check, store.write(first.clone()).await);
    ok(check, store.set("r", b"second".to_vec()).await);
    let retried = ok(check, store.write(first).await);
    assert_eq!(retried, answer, "contract {check}: a retry gets the first answer");
    assert_eq!(
        ok(check, store.get("r")),
        Some(b"second".to_vec()),
        "contract {check}: a retry is not applied again"
    );
    ok(check, store.shutdown().await);
}

async fn next_event(check: &str, watch: &mut Watch) -> WatchEvent {
    match within("a watch event", watch.recv()).await {
        Some(Ok(e)) => e,
        other => panic!("contract {check}: the watch of {:?} gave {other:?}", watch.prefix()),
    }
}

async fn store_watch_sees_every_change_in_order<S: ConsensusStore>(store: S) {
    let check = "watch";
    let mut watch = store.watch("w/");
    ok(check, store.set("w/a", b"1".to_vec()).await);
    ok(check, store.set("x/a", b"elsewhere".to_vec()).await);
    ok(check, store.set("w/b", b"2".to_vec()).await);
    ok(check, store.delete("w/a").await);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(check, &mut watch).await);
    }
    let changes: Vec<(&str, Option<&[u8]>)> =
        seen.iter().map(|e| (e.key.as_str(), e.value.as_deref())).collect();
    assert_eq!(
        changes,
        [("w/a", Some(&b"1"[..])), ("w/b", Some(&b"2"[..])), ("w/a", None)],
        "contract {check}: every change under the prefix, in order, nothing else"
    );
    assert!(
        seen.windows(2).all(|w| w[0].revision < w[1].revision),
        "contract {check}: revisions grow: {seen:?}"
    );
    let (revision, entries) = ok(check, store.get_prefix_with_revision("w/"));
    assert_eq!(entries, vec![("w/b".to_owned(), b"2".to_vec())]);
    if revision != 0 {
        assert_eq!(revision, seen[2].revision, "contract {check}: the read is of the last revision");
    }
    ok(check, store.shutdown().await);
}

async fn store_watch_from_a_revision_misses_nothing<S: ConsensusStore>(store: S) {
    let check = "watch from a revision";
    ok(check, store.set("f/before", b"0".to_vec()).await);
    let (revision, _) = ok(check, store.get_prefix_with_revision("f/"));
    let mut next = ok(check, store.watch_from("f/", Some(revision + 1)));
    ok(check, store.set("f/a", b"1".to_vec()).await);
    ok(check, store.set("f/b", b"2".to_vec()).await);
    let a = next_event(check, &mut next).await;
    let b = next_event(check, &mut next).await;
    assert_eq!((a.key.as_str(), b.key.as_str()), ("f/a", "f/b"), "contract {check}");
    assert!(a.revision > revision && b.revision > a.revision, "contract {check}: {revision} {a:?} {b:?}");
    // From a past revision: replayed in order, or refused as forgotten.
    match store.watch_from("f/", Some(a.revision)) {
        Ok(mut replay) => {
            assert_eq!(next_event(check, &mut replay).await, a, "contract {check}: replay");
            assert_eq!(next_event(check, &mut replay).await, b, "contract {check}: replay");
        }
        Err(Error::Compacted { requested, .. }) => assert_eq!(requested, a.revision),
        Err(e) => panic!("contract {check}: a past revision is replayed or Compacted, got {e}"),
    }
    ok(check, store.shutdown().await);
}

async fn store_short_ids_are_unique_lowest_free_and_kept<S: ConsensusStore>(store: S) {
    let check = "short ids";
    let (a, b, c) = (MemberId::generate(), MemberId::generate(), MemberId::generate());
    let before = ok(check, store.short_ids());
    let first = crate::plan::lowest_free_short_id(before.values().copied()).expect("a free id");
    let got_a = ok(check, store.allocate_short_id(a).await);
    assert_eq!(got_a, first, "contract {check}: the lowest free id");
    let got_b = ok(check, store.allocate_short_id(b).await);
    assert_ne!(got_a, got_b, "contract {check}: never one id twice");
    assert_eq!(ok(check, store.allocate_short_id(a).await), got_a, "contract {check}: a holder keeps its id");
    assert!(ok(check, store.release_short_id(a).await), "contract {check}: a held id is released");
    assert!(!ok(check, store.release_short_id(a).await), "contract {check}: released once");
    assert_eq!(ok(check, store.allocate_short_id(c).await), got_a, "contract {check}: a freed id is reused");
    let held = ok(check, store.short_ids());
    assert_eq!(held.get(&b), Some(&got_b));
    assert_eq!(held.get(&c), Some(&got_a));
    assert!(!held.contains_key(&a));
    ok(check, store.shutdown().await);
}

/// A member of the suite: `n`-th of a cluster, seeded on `seed`.
fn member_config(cluster_id: &str, seed: Option<SocketAddr>, n: usize) -> MembershipConfig {
    MembershipConfig {
        member_id: MemberId::generate(),
        generation: 1,
        cluster_id: cluster_id.to_owned(),
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise_addr: None,
        seeds: seed.map(|s| s.to_string()).into_iter().collect(),
        gossip_interval: Duration::from_millis(100),
        failure_detection: FailureDetection {
            phi_threshold: 8.0,
            initial_interval: Duration::from_millis(100),
            dead_member_grace: Duration::from_secs(3600),
        },
        tags: BTreeMap::from([("n".to_owned(), n.to_string())]),
        encryption: GossipEncryption::default(),
    }
}

/// The next event about `id` (a `Resync` fails the check: nothing here is slow).
async fn next_about(check: &str, sub: &mut MembershipEvents, id: MemberId) -> MembershipEvent {
    within("a membership event", async {
        loop {
            match sub.recv().await {
                Some(e) if e.member_id() == Some(id) => return e,
                Some(MembershipEvent::Resync(_)) => panic!("contract {check}: an unexpected resync"),
                Some(_) => {}
                None => panic!("contract {check}: the subscription ended"),
            }
        }
    })
    .await
}

async fn wait_sees<M: Membership>(check: &str, m: &M, ids: &[MemberId]) {
    wait_until(DEADLINE, &format!("contract {check}: members to see each other"), || {
        let seen: Vec<MemberId> = m.members().iter().map(|m| m.id).collect();
        std::future::ready(ids.iter().all(|id| seen.contains(id)))
    })
    .await;
}

/// Starts a member of the membership backend under test: any
/// `Fn(MembershipConfig) -> impl Future<Output = Result<M>>`, such as
/// `M::start` or a fake network's `start`.
pub trait StartMember<M> {
    /// Starts a member with `config`.
    fn start_member(&self, config: MembershipConfig) -> impl Future<Output = Result<M>>;
}

impl<M, F, Fut> StartMember<M> for F
where
    F: Fn(MembershipConfig) -> Fut,
    Fut: Future<Output = Result<M>>,
{
    fn start_member(&self, config: MembershipConfig) -> impl Future<Output = Result<M>> {
        self(config)
    }
}

/// Runs every [`Membership`] check on members started by `start` (each
/// check its own cluster id, seeded on its first member; every member
/// stopped after its check).
pub async fn membership_suite<M: Membership>(start: impl StartMember<M>) {
    let unique = MemberId::generate().to_string();
    membership_start_reports_itself(&start, &format!("start-{unique}")).await;
    membership_tags_reach_every_member_once(&start, &format!("tags-{unique}")).await;
    membership_leave_is_left_and_a_return_is_joined(&start, &format!("leave-{unique}")).await;
    membership_other_clusters_never_merge(&start, &format!("own-{unique}"), &format!("other-{unique}")).await;
}

async fn started<M: Membership>(start: &impl StartMember<M>, config: MembershipConfig) -> M {
    ok("start", within("a member to start", start.start_member(config)).await)
}

async fn membership_start_reports_itself<M: Membership>(start: &impl StartMember<M>, cluster: &str) {
    let check = "start";
    let config = member_config(cluster, None, 0);
    let id = config.member_id;
    let m = started(start, config).await;
    assert_eq!(m.member_id(), id);
    assert_ne!(m.gossip_addr().port(), 0, "contract {check}: the bound port is reported");
    // A backend may list itself only after its first round: soon, not at once.
    wait_sees(check, &m, &[id]).await;
    let me: Vec<Member> = m.members().into_iter().filter(|x| x.id == id).collect();
    assert_eq!(me.len(), 1, "contract {check}: members() includes this member");
    assert_eq!(
        me[0].tags.get("n").map(String::as_str),
        Some("0"),
        "contract {check}: its tags are published"
    );
    let mut sub = m.subscribe();
    match next_about(check, &mut sub, id).await {
        MembershipEvent::Joined(x) => assert_eq!(x.id, id),
        e => panic!("contract {check}: a subscription starts with the live members as Joined, got {e:?}"),
    }
    ok(check, m.stop().await);
}

async fn membership_tags_reach_every_member_once<M: Membership>(start: &impl StartMember<M>, cluster: &str) {
    let check = "tags";
    let a = started(start, member_config(cluster, None, 0)).await;
    let b = started(start, member_config(cluster, Some(a.gossip_addr()), 1)).await;
    let c = started(start, member_config(cluster, Some(a.gossip_addr()), 2)).await;
    let ids = [a.member_id(), b.member_id(), c.member_id()];
    for m in [&a, &b, &c] {
        wait_sees(check, m, &ids).await;
    }
    let mut subs = [b.subscribe(), c.subscribe()];
    for sub in &mut subs {
        match next_about(check, sub, a.member_id()).await {
            MembershipEvent::Joined(_) => {}
            e => panic!("contract {check}: the replay is Joined, got {e:?}"),
        }
    }
    ok(check, a.set_tags(BTreeMap::from([("color".to_owned(), "blue".to_owned())])).await);
    for sub in &mut subs {
        match next_about(check, sub, a.member_id()).await {
            MembershipEvent::Updated(m) => {
                assert_eq!(m.tags.get("color").map(String::as_str), Some("blue"), "contract {check}")
            }
            e => panic!("contract {check}: a tag change is Updated, got {e:?}"),
        }
    }
    // A second change marks the end: nothing about `a` may come between.
    ok(check, a.remove_tags(vec!["color".to_owned()]).await);
    for sub in &mut subs {
        match next_about(check, sub, a.member_id()).await {
            MembershipEvent::Updated(m) => assert!(!m.tags.contains_key("color"), "contract {check}: {m:?}"),
            e => panic!("contract {check}: one Updated per change, then the next, got {e:?}"),
        }
    }
    for m in [a, b, c] {
        ok(check, m.stop().await);
    }
}

async fn membership_leave_is_left_and_a_return_is_joined<M: Membership>(
    start: &impl StartMember<M>,
    cluster: &str,
) {
    let check = "leave";
    let a = started(start, member_config(cluster, None, 0)).await;
    let config = member_config(cluster, Some(a.gossip_addr()), 1);
    let mut again = config.clone();
    let b = started(start, config).await;
    wait_sees(check, &a, &[a.member_id(), b.member_id()]).await;
    let mut sub = a.subscribe();
    let _ = next_about(check, &mut sub, b.member_id()).await;
    ok(check, within("leave to return", b.leave()).await);
    match next_about(check, &mut sub, b.member_id()).await {
        MembershipEvent::Left(m) => assert_eq!(m.id, b.member_id()),
        e => panic!("contract {check}: a leave is reported Left, not {e:?}"),
    }
    assert!(
        !a.members().iter().any(|m| m.id == b.member_id()),
        "contract {check}: a left member is not live"
    );
    // The same member restarts: one member, Joined again, a higher generation.
    again.generation += 1;
    let b2 = started(start, again).await;
    match next_about(check, &mut sub, b2.member_id()).await {
        MembershipEvent::Joined(m) => assert_eq!(m.generation, 2, "contract {check}: {m:?}"),
        e => panic!("contract {check}: a member back after leaving is Joined, got {e:?}"),
    }
    let live: Vec<MemberId> = a.members().iter().map(|m| m.id).filter(|id| *id == b2.member_id()).collect();
    assert_eq!(live.len(), 1, "contract {check}: a restarted member is one member");
    ok(check, b2.stop().await);
    ok(check, a.stop().await);
}

async fn membership_other_clusters_never_merge<M: Membership>(
    start: &impl StartMember<M>,
    cluster: &str,
    other: &str,
) {
    let check = "cluster id";
    let a = started(start, member_config(cluster, None, 0)).await;
    let mut sub = a.subscribe();
    let foreign = started(start, member_config(other, Some(a.gossip_addr()), 1)).await;
    // A member of the right cluster started after it marks the time: once
    // it is seen, the foreign one had its chance to be merged.
    let b = started(start, member_config(cluster, Some(a.gossip_addr()), 2)).await;
    wait_sees(check, &a, &[b.member_id()]).await;
    wait_sees(check, &b, &[a.member_id()]).await;
    while let Some(e) = sub.try_recv() {
        assert_ne!(e.member_id(), Some(foreign.member_id()), "contract {check}: {e:?}");
    }
    for m in [&a, &b] {
        assert!(!m.members().iter().any(|x| x.id == foreign.member_id()), "contract {check}: merged");
    }
    assert!(
        !foreign.members().iter().any(|x| x.id == a.member_id()),
        "contract {check}: merged the other way"
    );
    ok(check, foreign.stop().await);
    ok(check, b.stop().await);
    ok(check, a.stop().await);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConsensusConfig;
    use crate::testsuite::fakes::{FakeNetwork, FakeStore};

    fn config() -> ConsensusConfig {
        ConsensusConfig {
            member_id: MemberId::generate(),
            cluster_id: "fake".to_owned(),
            raft_listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: "127.0.0.1".to_owned(),
            service_addr: "127.0.0.1:1".to_owned(),
            data_dir: None,
            timing: Default::default(),
            max_frame_len: crate::wire::DEFAULT_MAX_FRAME_LEN,
            rpc_timeout: Duration::from_secs(1),
            limits: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_fake_store_keeps_the_store_contract() {
        consensus_store_suite(|| FakeStore::open(config())).await;
    }

    #[tokio::test]
    async fn the_fake_membership_keeps_the_membership_contract() {
        let net = FakeNetwork::default();
        membership_suite(|c| net.start(c)).await;
    }
}
