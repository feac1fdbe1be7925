//! The raft-safe reset, the consensus side: a member whose raft state was
//! reset refuses vote requests (with the reason) and never bootstraps,
//! catches up from the leader, and votes again only once it has applied the
//! leader's note carrying its own reset id.

#![cfg(feature = "durable")]

use std::future::ready;
use std::time::SystemTime;

use cluster_consensus::RaftStore;
use cluster_consensus::recovery::{pending_reset, reset_raft_state};
use cluster_consensus::testsuite::{RaftRequest, RaftRpc, RaftRpcReply};
use cluster_core::wire::{Frame, WireCodec};
use cluster_core::{ConsensusStore, ConsensusStoreExt, Error, MemberId, keys};
use cluster_testkit::{DEADLINE, LocalCluster, wait_until};
use futures::{SinkExt, StreamExt};
use openraft::Vote;
use openraft::raft::VoteRequest;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Sends a vote request for a made-up candidate in a far term to `store`'s raft port.
async fn ask_vote(store: &RaftStore, term: u64) -> RaftRpcReply {
    let stream = TcpStream::connect(store.raft_addr()).await.unwrap();
    let mut framed =
        Framed::new(stream, WireCodec::<RaftRequest, RaftRpcReply>::new("test-cluster", 1 << 20));
    let request = VoteRequest { vote: Vote::new(term, MemberId::generate()), last_log_id: None };
    let body = RaftRequest { to: store.member_id(), rpc: RaftRpc::Vote(request) };
    framed.send(Frame { request_id: 1, body }).await.unwrap();
    tokio::time::timeout(DEADLINE, framed.next()).await.unwrap().unwrap().unwrap().unwrap().body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_member_does_not_vote_until_the_leader_notes_it_is_out_of_the_voters() {
    cluster_testkit::init_tracing();
    let mut cluster = LocalCluster::builder(3).durable(true).start().await;
    let leader = cluster.leader().await;
    for n in 0..40 {
        leader.set(&format!("k/{n}"), vec![n]).await.unwrap();
    }
    let i = cluster.members.iter().position(|m| m.member_id() != leader.member_id()).unwrap();
    let id = cluster.members[i].member_id();
    cluster.stop(i).await;
    let dir = cluster.members[i].config.data_dir.clone().unwrap();
    let report = reset_raft_state(&dir, SystemTime::now()).unwrap();
    assert!(report.moved_to.as_ref().is_some_and(|p| p.join("raft.redb").exists()), "{report:?}");

    cluster.restart(i).await;
    let store = cluster.members[i].store.clone();
    assert_eq!(store.status().reset_pending, Some(report.reset_id.clone()));
    assert!(matches!(store.bootstrap().await, Err(Error::BadRequest(_))), "never a new cluster");
    match ask_vote(&store, 1_000).await {
        RaftRpcReply::Refused(Error::BadRequest(reason)) => {
            assert!(reason.contains("vote refused"), "{reason}")
        }
        other => panic!("a pending member answered a vote request: {other:?}"),
    }

    // It catches up from the leader all the same.
    let target = leader.applied_index();
    wait_until(DEADLINE, "caught up", || ready(store.applied_index() >= target)).await;
    assert_eq!(store.get_prefix("k/").unwrap().len(), 40);

    // A note of another reset is not for it.
    leader.set(&keys::raft_reset_key(id), b"an-older-reset".to_vec()).await.unwrap();
    let target = leader.applied_index();
    wait_until(DEADLINE, "note applied", || ready(store.applied_index() >= target)).await;
    assert_eq!(store.status().reset_pending, Some(report.reset_id.clone()));
    assert!(matches!(ask_vote(&store, 1_001).await, RaftRpcReply::Refused(_)));

    // The leader's part: out of the voters, then the note with its reset id.
    leader.demote(id).await.unwrap();
    leader.set(&keys::raft_reset_key(id), report.reset_id.clone().into_bytes()).await.unwrap();
    wait_until(DEADLINE, "reset ended", || ready(store.status().reset_pending.is_none())).await;
    assert_eq!(pending_reset(&dir).unwrap(), None, "the marker is gone");
    assert!(matches!(ask_vote(&store, 0).await, RaftRpcReply::Vote(_)), "it answers votes again");

    // The normal promotion, and it serves like any voter.
    leader.promote(id).await.unwrap();
    assert!(leader.status().voters.contains_key(&id));
    assert!(leader.set("after", vec![1]).await.unwrap());
    let target = leader.applied_index();
    wait_until(DEADLINE, "applied after", || ready(store.applied_index() >= target)).await;
    assert_eq!(store.get("after").unwrap(), Some(vec![1]));
    cluster.shutdown().await;
}
