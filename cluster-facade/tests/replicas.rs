//! The bounded replica set: raft on `replicas` members, every other member
//! a client member that works like any other. In-process members on loopback.

mod common;

use std::collections::BTreeSet;
use std::future::ready;

use cluster_facade::{Cluster, RaftRole};
use common::*;
use futures::StreamExt;

/// The members raft holds, by the leader's view.
fn in_raft(members: &[Cluster]) -> Option<BTreeSet<cluster_facade::MemberId>> {
    let l = leader(members)?;
    Some(members[l].consensus_status().all_members())
}

/// The leader's raft holds `replicas` members (3 voters), and its records
/// show every member with a short id, the others as clients.
fn bounded(members: &[Cluster], replicas: usize) -> bool {
    let Some(l) = leader(members) else { return false };
    let s = members[l].consensus_status();
    s.voters.len() == 3
        && s.all_members().len() == replicas
        && members[l].members().is_ok_and(|r| {
            r.len() == members.len()
                && r.iter().all(|m| {
                    m.short_id.is_some()
                        && match s.role_of(m.member_id) {
                            Some(role) => role == m.raft_role,
                            None => m.raft_role == RaftRole::Client,
                        }
                })
        })
        && members.iter().all(|m| {
            let replica = s.all_members().contains(&m.member_id());
            replica == (m.raft_role() != RaftRole::Client)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seven_members_with_three_replicas_four_clients_that_work_like_any_member() {
    init_tracing();
    let mut members = start_cluster_with(7, 3, |c| c.replicas = 3).await;
    wait_until(DEADLINE, "3 replicas, 4 client members, all recorded", || ready(bounded(&members, 3))).await;
    let replicas = in_raft(&members).unwrap();
    let clients: Vec<usize> =
        (0..members.len()).filter(|i| !replicas.contains(&members[*i].member_id())).collect();
    assert_eq!(clients.len(), 4);
    let ids: BTreeSet<u32> = members.iter().map(|m| m.short_id().get()).collect();
    assert_eq!(ids, (1..=7).collect(), "every member holds a distinct short id");
    for &c in &clients {
        let m = &members[c];
        // Outside raft (the leader's raft lists it in no role), and it knows it.
        assert_eq!(m.raft_role(), RaftRole::Client);
        // Its gossip tag says so too (once gossip carried it to member 0),
        // and its members are the cluster's records (once its view has them).
        wait_until(DEADLINE, "its tag says client, its view lists all 7", || {
            let tags = members[0].live_members();
            let tagged = tags.iter().any(|t| t.member_id == m.member_id() && t.raft_role == RaftRole::Client);
            ready(tagged && m.members().is_ok_and(|r| r.len() == 7))
        })
        .await;
    }

    // A client member writes, reads consistently, compares and sets, and
    // reads locally what it wrote once its view has it.
    let client = members[clients[0]].clone();
    assert!(client.store().set("user/a", "1").await.unwrap());
    assert_eq!(client.store().consistent_get("user/a").await.unwrap(), Some(b"1".to_vec()));
    let cas =
        client.store().compare_and_set("user/a", Some(b"1".to_vec()), Some(b"2".to_vec())).await.unwrap();
    assert!(cas.succeeded);
    wait_until(DEADLINE, "the client's view has its write", || async {
        client.store().get("user/a").await.unwrap() == Some(b"2".to_vec())
    })
    .await;

    // A watch through a client member sees every write, in order, across
    // the failure of a replica, with no gap and no repeat.
    let watcher = members[clients[1]].clone();
    // From the revision it read: a client member's watch of user keys is a
    // replica's, which starts when first polled.
    let (from, _) = watcher.store().get_prefix_with_revision("w/").await.unwrap();
    let stream = watcher.store().watch("w/", Some(from + 1));
    let writer = members[clients[2]].clone();
    for i in 0..10u8 {
        writer.store().set(&format!("w/{i:02}"), vec![i]).await.unwrap();
    }
    let l = leader(&members).unwrap();
    let victim = (0..members.len())
        .find(|i| *i != l && replicas.contains(&members[*i].member_id()))
        .expect("a replica that does not lead");
    let victim_id = members[victim].member_id();
    members.remove(victim).abort().await.unwrap();
    // The set heals: a client member takes the failed replica's place.
    wait_until(DEADLINE, "3 replicas again, without the failed one", || {
        ready(in_raft(&members).is_some_and(|r| r.len() == 3 && !r.contains(&victim_id)))
    })
    .await;
    wait_until(DEADLINE, "3 voters again", || {
        ready(leader(&members).is_some_and(|l| members[l].consensus_status().voters.len() == 3))
    })
    .await;
    for i in 10..20u8 {
        writer.store().set(&format!("w/{i:02}"), vec![i]).await.unwrap();
    }
    let events: Vec<_> =
        tokio::time::timeout(DEADLINE, stream.take(20).collect::<Vec<_>>()).await.expect("20 events");
    let keys: Vec<String> = events.iter().map(|e| e.as_ref().expect("an event").key.clone()).collect();
    assert_eq!(keys, (0..20).map(|i| format!("w/{i:02}")).collect::<Vec<_>>(), "no gap, no repeat");
    let revisions: Vec<u64> = events.iter().map(|e| e.as_ref().unwrap().revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "revisions only grow: {revisions:?}");
    // Every client member reads every write.
    for m in members.iter().filter(|m| m.raft_role() == RaftRole::Client) {
        wait_until(DEADLINE, "a client member reads the last write", || async {
            m.store().get("w/19").await.unwrap() == Some(vec![19])
        })
        .await;
    }
    shutdown_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_replica_is_replaced_and_back_it_serves_as_a_client_from_its_view() {
    init_tracing();
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let with_dir = |i: usize, seeds: Vec<String>| {
        let mut c = config(seeds, 3);
        c.replicas = 3;
        c.data_dir = Some(dirs[i].path().to_path_buf());
        c
    };
    let first = Cluster::start(with_dir(0, vec![])).await.unwrap();
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for i in 1..5 {
        members.push(Cluster::start(with_dir(i, vec![seed.clone()])).await.unwrap());
    }
    wait_until(DEADLINE, "3 replicas, 2 client members", || ready(bounded(&members, 3))).await;
    members[0].store().set("k", b"before").await.unwrap();

    // A voter that does not lead crashes, past its grace period.
    let l = leader(&members).unwrap();
    let replicas = in_raft(&members).unwrap();
    let i = (0..5).find(|i| *i != l && replicas.contains(&members[*i].member_id())).unwrap();
    let m = members.remove(i);
    let (id, short) = (m.member_id(), m.short_id());
    m.abort().await.unwrap();
    wait_until(DEADLINE, "a client member took its place as a voter", || {
        ready(leader(&members).is_some_and(|l| {
            let s = members[l].consensus_status();
            s.voters.len() == 3 && s.all_members().len() == 3 && !s.all_members().contains(&id)
        }))
    })
    .await;
    members[0].store().set("k", b"while it was down").await.unwrap();

    // Back from its directory, its raft state still says it votes: it is a
    // client member now, and serves what the cluster holds, not that state.
    let seed = members[0].addresses().gossip.to_string();
    let back = Cluster::start(with_dir(i, vec![seed])).await.unwrap();
    assert_eq!((back.member_id(), back.short_id()), (id, short));
    wait_until(DEADLINE, "it serves as a client member, from its view", || async {
        back.raft_role() == RaftRole::Client
            && back.store().get("k").await.unwrap() == Some(b"while it was down".to_vec())
    })
    .await;
    members.push(back);
    wait_until(DEADLINE, "the set is at its bound, every member recorded", || ready(bounded(&members, 3)))
        .await;
    // It works like any member: it writes, and reads what others write.
    let back = members.last().unwrap().clone();
    back.store().set("from-back", b"1").await.unwrap();
    members[0].store().set("k", b"after").await.unwrap();
    wait_until(DEADLINE, "its view follows", || async {
        back.store().get("k").await.unwrap() == Some(b"after".to_vec())
    })
    .await;
    shutdown_all(members).await;
}

/// A failed voter that no client member can replace (three members, the
/// default bound of 5) leaves raft after its failure grace, not when its
/// short id is reaped: the reap here is ten minutes away, longer than the
/// test may wait. It stays listed as failed, with its short id, until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_leader_no_client_can_replace_leaves_raft_after_its_grace_not_its_reap() {
    init_tracing();
    let mut members = start_cluster_with(3, 3, |c| c.timeouts.short_id_reap_ms = 600_000).await;
    wait_until(DEADLINE, "three voters, all recorded", || ready(bounded(&members, 3))).await;
    let l = leader(&members).unwrap();
    let old = members.remove(l);
    let (old_id, old_short) = (old.member_id(), old.short_id());
    old.abort().await.unwrap();
    wait_until(DEADLINE, "a new leader, the old one out of raft, two voters", || {
        ready(leader(&members).is_some_and(|l| {
            let s = members[l].consensus_status();
            !s.all_members().contains(&old_id) && s.voters.len() == 2
        }))
    })
    .await;
    wait_until(DEADLINE, "it is listed as a nonvoter with its short id until the reap", || {
        ready(leader(&members).is_some_and(|l| {
            members[l].members().is_ok_and(|r| {
                r.iter().any(|m| {
                    m.member_id == old_id
                        && m.raft_role == RaftRole::Nonvoter
                        && m.short_id == Some(old_short)
                })
            })
        }))
    })
    .await;
    // Writes keep working through both members.
    for m in &members {
        m.store().set("after", b"1").await.unwrap();
    }
    shutdown_all(members).await;
}

/// A client member's stale reads (served from its local view) never miss a
/// write acknowledged through the same member, nor a value a linearizable
/// read through it returned, and never go backwards in revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_members_stale_reads_follow_its_own_writes_and_linearizable_reads() {
    init_tracing();
    let members = start_cluster_with(5, 3, |c| c.replicas = 3).await;
    wait_until(DEADLINE, "3 replicas, 2 client members", || ready(bounded(&members, 3))).await;
    let clients: Vec<&Cluster> = members.iter().filter(|m| m.raft_role() == RaftRole::Client).collect();
    let (client, other) = (clients[0].store(), clients[1].store());
    let mut last_seen = 0u64;
    for i in 1..=100u64 {
        // Read your writes: a write acknowledged through this member.
        client.set("ryw", i.to_be_bytes().to_vec()).await.unwrap();
        let got = client.get("ryw").await.unwrap().map(|v| u64::from_be_bytes(v.try_into().unwrap()));
        assert_eq!(got, Some(i), "a stale read right after the member's own write #{i}");
        // A linearizable read through this member of another member's write.
        other.set("lin", i.to_be_bytes().to_vec()).await.unwrap();
        let seen = client.consistent_get("lin").await.unwrap().expect("written");
        let seen = u64::from_be_bytes(seen.try_into().unwrap());
        assert_eq!(seen, i);
        let (revision, entries) = client.get_prefix_with_revision("lin").await.unwrap();
        assert_eq!(entries.len(), 1);
        let got = u64::from_be_bytes(entries[0].1.clone().try_into().unwrap());
        assert!(got >= seen, "a stale read missed what a linearizable read returned: {got} < {seen}");
        assert!(revision >= last_seen, "the member's reads went back: revision {revision} after {last_seen}");
        last_seen = revision;
    }
    shutdown_all(members).await;
}
