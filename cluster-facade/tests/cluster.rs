//! The facade's scenarios: the Go package's, and more. Each starts real
//! members in this process on loopback, with ports from the OS.

mod common;

use std::collections::BTreeSet;
use std::future::ready;

use cluster_facade::core::keys;
use cluster_facade::{Cluster, ClusterError, GridEventKind, RaftRole, ShortId};
use common::*;

fn short_ids(members: &[Cluster]) -> BTreeSet<u32> {
    members.iter().map(|m| m.short_id().get()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_get_ids_1_and_2_and_both_vote() {
    init_tracing();
    let members = start_cluster(2, 3).await;
    assert_eq!(short_ids(&members), BTreeSet::from([1, 2]));
    assert_eq!(members[0].short_id(), ShortId::new(1).unwrap());
    wait_until(DEADLINE, "both members vote and are recorded", || ready(settled(&members, 2, 0))).await;
    // The leader key names the first member, which formed the cluster.
    let leader_key = members[1].store().get(keys::LEADER_KEY).unwrap().unwrap();
    assert_eq!(String::from_utf8(leader_key).unwrap(), members[0].member_id().to_string());
    assert!(members[1].store().get(&keys::voter_key(members[1].member_id())).unwrap().is_some());
    shutdown_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grid_events_show_joins_with_ids_and_addresses_then_leaves() {
    init_tracing();
    let mut members = start_cluster(2, 3).await;
    let mut events = members[0].grid_events();
    let mut joined = BTreeSet::new();
    while joined.len() < 2 {
        let e = tokio::time::timeout(DEADLINE, events.recv()).await.expect("a grid event").expect("open");
        assert_eq!(e.kind, GridEventKind::Joined);
        let m = members.iter().find(|m| m.member_id() == e.member_id).expect("a known member");
        assert_eq!((e.short_id, e.grid_addr.clone()), (m.short_id(), m.addresses().grid.to_string()));
        joined.insert(e.short_id);
    }
    let second = members.pop().unwrap();
    let gone = second.short_id();
    second.shutdown().await.unwrap();
    let e = tokio::time::timeout(DEADLINE, events.recv()).await.expect("a grid event").expect("open");
    assert_eq!((e.kind, e.short_id), (GridEventKind::Left, gone));
    shutdown_all(members).await;
}

async fn leader_failover(n: usize) {
    let mut members = start_cluster(n, 3).await;
    let voters_wanted = 3.min(n);
    wait_until(DEADLINE, "the cluster settles", || {
        ready(settled(&members, voters_wanted, n - voters_wanted))
    })
    .await;
    let before: Vec<_> = members.iter().map(|m| (m.member_id(), m.raft_role())).collect();
    for i in 0..20 {
        members[0].store().set(&format!("before/{i}"), vec![i]).await.unwrap();
    }
    let l = leader(&members).unwrap();
    let old = members.remove(l);
    let old_id = old.member_id();
    old.abort().await.unwrap();

    let left = members.len();
    wait_until(DEADLINE, "a new leader, the old one removed, voters restored", || {
        ready({
            leader(&members).is_some_and(|l| {
                let s = members[l].consensus_status();
                !s.all_members().contains(&old_id) && s.voters.len() == voters_wanted.min(left)
            })
        })
    })
    .await;
    if n > 3 {
        let promoted = members.iter().any(|m| {
            m.raft_role().votes()
                && before.iter().any(|(id, r)| *id == m.member_id() && *r == RaftRole::Nonvoter)
        });
        assert!(promoted, "a nonvoter took the old leader's place");
    }
    // Writes keep working, from every member, and nothing acknowledged was lost.
    for (i, m) in members.iter().enumerate() {
        m.store().set(&format!("after/{i}"), vec![1]).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(members[0].store().consistent_get(&format!("before/{i}")).await.unwrap(), Some(vec![i]));
    }
    // Out of raft, the old leader is listed as failed (a nonvoter's record
    // with its short id) until its short id is reaped.
    wait_until(DEADLINE, "the old leader is recorded as failed", || {
        ready(leader(&members).is_some_and(|l| {
            members[l].liveness().get(&old_id) == Some(&cluster_facade::Liveness::Failed)
                && members[l].members().is_ok_and(|r| {
                    r.iter().all(|m| m.member_id != old_id || m.raft_role == RaftRole::Nonvoter)
                })
        }))
    })
    .await;
    shutdown_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_stopped_in_a_cluster_of_voters() {
    init_tracing();
    leader_failover(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_stopped_with_nonvoters_promotes_one() {
    init_tracing();
    leader_failover(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seven_members_three_voters_and_a_failed_voter_is_replaced() {
    init_tracing();
    // Every member a replica (the default bound is 5): 3 voters, 4 nonvoters.
    let mut members = start_cluster_with(7, 3, |c| c.replicas = 7).await;
    wait_until(DEADLINE, "3 voters and 4 nonvoters", || ready(settled(&members, 3, 4))).await;
    assert_eq!(short_ids(&members).len(), 7, "short ids are distinct");
    // A voter that does not lead fails.
    let l = leader(&members).unwrap();
    let v = (0..members.len()).find(|i| *i != l && members[*i].raft_role() == RaftRole::Voter).unwrap();
    let failed = members.remove(v);
    let failed_id = failed.member_id();
    failed.abort().await.unwrap();
    wait_until(DEADLINE, "back to 3 voters without the failed one", || {
        ready({
            leader(&members).is_some_and(|l| {
                let s = members[l].consensus_status();
                s.voters.len() == 3 && !s.all_members().contains(&failed_id) && s.nonvoters.len() == 3
            })
        })
    })
    .await;
    shutdown_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_leave_frees_the_short_id_for_the_next_member() {
    init_tracing();
    let mut members = start_cluster(3, 3).await;
    wait_until(DEADLINE, "3 voters", || ready(settled(&members, 3, 0))).await;
    let leaving = members.pop().unwrap();
    let (freed, gone_id) = (leaving.short_id(), leaving.member_id());
    leaving.shutdown().await.unwrap();
    wait_until(DEADLINE, "the short id is freed", || {
        ready({
            members[0].consensus_status().voters.len() == 2
                && members[0].members().is_ok_and(|r| r.iter().all(|m| m.member_id != gone_id))
        })
    })
    .await;
    let seed = members[0].addresses().gossip.to_string();
    let next = Cluster::start(config(vec![seed], 3)).await.unwrap();
    assert_eq!(next.short_id(), freed);
    members.push(next);
    shutdown_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_member_keeps_its_member_id_and_short_id() {
    init_tracing();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let with_dir = |i: usize, seeds: Vec<String>| {
        let mut c = config(seeds, 3);
        c.data_dir = Some(dirs[i].path().to_path_buf());
        c
    };
    let first = Cluster::start(with_dir(0, vec![])).await.unwrap();
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for i in 1..3 {
        members.push(Cluster::start(with_dir(i, vec![seed.clone()])).await.unwrap());
    }
    wait_until(DEADLINE, "3 voters", || ready(settled(&members, 3, 0))).await;
    members[0].store().set("kept", b"yes".to_vec()).await.unwrap();
    // A voter that does not lead crashes and comes back from its directory
    // before its grace period runs out.
    let l = leader(&members).unwrap();
    let i = (0..3).find(|i| *i != l).unwrap();
    let m = members.remove(i);
    let (id, short, old_raft) = (m.member_id(), m.short_id(), m.addresses().raft);
    m.abort().await.unwrap();
    let seed = members[0].addresses().gossip.to_string();
    let back = Cluster::start(with_dir(i, vec![seed])).await.unwrap();
    assert_eq!((back.member_id(), back.short_id()), (id, short));
    // It came back on new ports: writes made after its return must reach it.
    assert_ne!(back.addresses().raft, old_raft, "the restart picked new ports");
    members[0].store().set("after", b"restart".to_vec()).await.unwrap();
    wait_until(DEADLINE, "the restarted member has the data from before and after", || {
        let s = back.store().clone();
        async move {
            s.get("kept").ok().flatten() == Some(b"yes".to_vec())
                && s.get("after").ok().flatten() == Some(b"restart".to_vec())
        }
    })
    .await;
    members.push(back);
    shutdown_all(members).await;
}

#[tokio::test]
async fn a_bad_configuration_is_refused_with_every_problem_named() {
    let mut c = config(vec!["nope".into()], 0);
    c.host = "".into();
    match Cluster::start(c).await {
        Err(ClusterError::Config(errs)) => {
            let text = errs.to_string();
            for field in ["host", "seeds[0]", "num_voters"] {
                assert!(text.contains(field), "{field} missing from: {text}");
            }
        }
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("a bad configuration started a member"),
    }
}
