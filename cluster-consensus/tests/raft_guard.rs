//! Hostile raft input, sent as raw frames built with core's wire codec, to a
//! real 3-member cluster: forged terms, snapshot chunks far past what was
//! received, votes from made-up members; and writes past the quotas. Each is
//! refused with a typed answer, and every member keeps serving (also after a
//! restart, for the durable cluster).

use std::net::SocketAddr;

use cluster_consensus::RaftStore;
use cluster_consensus::testsuite::{GuardError, TERM_STEP};
use cluster_consensus::testsuite::{RaftRequest, RaftRpc, RaftRpcReply};
use cluster_consensus::{LogId, TypeConfig, Vote};
use cluster_core::testsuite::net::resident_memory;
use cluster_core::wire::{Frame, WireCodec};
use cluster_core::{
    ConsensusBackend, ConsensusLimits, ConsensusStore, ConsensusStoreExt, Error, MemberId, Quota,
};
use cluster_testkit::{DEADLINE, LocalCluster, wait_until};
use futures::{SinkExt, StreamExt};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, SnapshotMeta};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const CLUSTER: &str = "test-cluster";

/// Sends one request for member `m` on a fresh connection and reads its answer.
async fn call(m: &RaftStore, rpc: RaftRpc) -> RaftRpcReply {
    call_to(m.raft_addr(), m.member_id(), rpc).await
}

/// Sends one request meant for member `to` to `addr` and reads its answer.
async fn call_to(addr: SocketAddr, to: MemberId, rpc: RaftRpc) -> RaftRpcReply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut framed = Framed::new(stream, WireCodec::<RaftRequest, RaftRpcReply>::new(CLUSTER, 1 << 24));
    framed.send(Frame { request_id: 1, body: RaftRequest { to, rpc } }).await.expect("send");
    let answer = tokio::time::timeout(DEADLINE, framed.next()).await.expect("an answer in time");
    answer.expect("an answer").expect("a frame").expect("of this cluster").body
}

/// The bytes of `rpc` as a frame on the wire.
fn frame_len(rpc: RaftRpc) -> usize {
    let mut buf = bytes::BytesMut::new();
    let mut codec = WireCodec::<RaftRequest, RaftRpcReply>::new(CLUSTER, 1 << 24);
    let body = RaftRequest { to: MemberId::generate(), rpc };
    tokio_util::codec::Encoder::encode(&mut codec, Frame { request_id: 1, body }, &mut buf).unwrap();
    buf.len()
}

fn guarded(reply: &RaftRpcReply) -> Option<&GuardError> {
    match reply {
        RaftRpcReply::Guarded(e) => Some(e),
        _ => None,
    }
}

fn log_id(term: u64, leader: MemberId, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, leader), index)
}

fn raft_alive(m: &RaftStore) -> bool {
    m.raft().metrics().borrow().running_state.is_ok()
}

/// Every member is alive, with a sane term, and applies a new write.
async fn every_member_serves(cluster: &LocalCluster, key: &str) {
    let leader = cluster.leader().await;
    assert!(leader.set(key, vec![1]).await.expect("a write after the attack"));
    let index = leader.applied_index().unwrap();
    cluster.wait_applied(index).await;
    for m in &cluster.members {
        assert!(raft_alive(m), "raft of {} stopped", m.member_id());
        assert!(m.status().term < 1000, "term of {} moved to {}", m.member_id(), m.status().term);
        assert_eq!(m.get(key).unwrap(), Some(vec![1]));
    }
}

#[cfg(feature = "durable")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_of_u64_max_are_refused_by_every_member_and_survive_a_restart() {
    cluster_testkit::init_tracing();
    let mut cluster = LocalCluster::builder(3).durable(true).start().await;
    let ids: Vec<MemberId> = cluster.members.iter().map(|m| m.member_id()).collect();
    for (i, m) in cluster.members.iter().enumerate() {
        let other = ids[(i + 1) % ids.len()];
        // The 61-byte heartbeat that used to panic every raft core for good.
        let append = RaftRpc::AppendEntries(AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(u64::MAX, other),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        assert!(frame_len(append.clone()) < 100);
        let reply = call(m, append).await;
        assert!(matches!(guarded(&reply), Some(GuardError::TermTooHigh { term: u64::MAX, .. })), "{reply:?}");
        // A vote for a candidate whose log is far ahead: openraft would grant and persist it.
        let vote = RaftRpc::Vote(VoteRequest {
            vote: Vote::new(u64::MAX, other),
            last_log_id: Some(log_id(u64::MAX, other, u64::MAX / 4)),
        });
        let reply = call(m, vote).await;
        assert!(matches!(guarded(&reply), Some(GuardError::TermTooHigh { .. })), "{reply:?}");
        // Just past the relative bound.
        let term = m.status().term + TERM_STEP + 1;
        let vote = RaftRpc::Vote(VoteRequest { vote: Vote::new(term, other), last_log_id: None });
        assert!(guarded(&call(m, vote).await).is_some());
    }
    every_member_serves(&cluster, "after-attack").await;

    cluster.shutdown().await;
    cluster.restart_all().await;
    every_member_serves(&cluster, "after-restart").await;
    cluster.shutdown().await;
}

fn chunk(
    vote: Vote,
    meta: &SnapshotMeta<MemberId, cluster_core::Endpoints>,
    offset: u64,
    len: usize,
) -> RaftRpc {
    RaftRpc::InstallSnapshot(InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: meta.clone(),
        offset,
        data: vec![0xAB; len],
        done: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_past_the_bytes_received_are_refused_without_allocating() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    let follower =
        cluster.members.iter().find(|m| m.member_id() != leader.member_id()).unwrap().store.clone();
    let metrics = leader.raft().metrics().borrow().clone();
    let vote = Vote::new_committed(metrics.current_term, leader.member_id());
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(metrics.current_term, leader.member_id(), 1_000_000)),
        last_membership: (*metrics.membership_config).clone(),
        snapshot_id: "forged".to_owned(),
    };
    let before = resident_memory().expect("procfs");

    let first = call(&follower, chunk(vote, &meta, 0, 1024)).await;
    assert!(guarded(&first).is_none(), "a first chunk from the leader goes through: {first:?}");
    let far = call(&follower, chunk(vote, &meta, 1 << 40, 1024)).await;
    assert!(matches!(guarded(&far), Some(GuardError::SnapshotTooLarge { .. })), "{far:?}");
    let gap = call(&follower, chunk(vote, &meta, 4096, 1024)).await;
    assert_eq!(
        guarded(&gap),
        Some(&GuardError::SnapshotOffset { snapshot_id: "forged".into(), offset: 4096, expected: 1024 })
    );
    // From a made-up member at the current term.
    let stranger = Vote::new_committed(metrics.current_term, MemberId::generate());
    let reply = call(&follower, chunk(stranger, &meta, 0, 1024)).await;
    // Refused: its term already has a leader.
    assert!(matches!(guarded(&reply), Some(GuardError::TwoLeadersInTerm { .. })), "{reply:?}");

    let grown = resident_memory().expect("procfs").saturating_sub(before);
    assert!(grown < 256 << 20, "memory grew by {grown} bytes");

    // A whole forged snapshot that does not decode: refused when its last
    // chunk arrives, before the state machine (whose error would stop raft).
    let garbage = RaftRpc::InstallSnapshot(InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta { snapshot_id: "garbage".into(), ..meta.clone() },
        offset: 0,
        data: b"not a snapshot".to_vec(),
        done: true,
    });
    let reply = call(&follower, garbage).await;
    assert!(matches!(reply, RaftRpcReply::InstallSnapshot(Err(_))), "{reply:?}");
    assert!(raft_alive(&follower));
    every_member_serves(&cluster, "after-snapshot-chunks").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_and_entries_from_made_up_members_elect_nobody() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    let term = leader.status().term;
    let stranger = MemberId::generate();
    for m in &cluster.members {
        // A vote request is openraft's to weigh (a lagging or removed member
        // learns the term from its answer); the leader's lease refuses it.
        let vote = RaftRpc::Vote(VoteRequest {
            vote: Vote::new(m.status().term + 1, stranger),
            last_log_id: Some(log_id(term, leader.member_id(), 1_000_000)),
        });
        let reply = call(m, vote).await;
        assert!(!matches!(reply, RaftRpcReply::Vote(Ok(ref v)) if v.vote_granted), "{reply:?}");
        // Replication claiming the term whose leader every member knows: forged.
        let append = RaftRpc::AppendEntries(AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(m.status().term, stranger),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        let reply = call(m, append).await;
        assert!(matches!(guarded(&reply), Some(GuardError::TwoLeadersInTerm { .. })), "{reply:?}");
    }
    assert!(cluster.members.iter().all(|m| m.status().leader != Some(stranger)), "the stranger never leads");
    every_member_serves(&cluster, "after-strangers").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_4_mib_are_refused_and_nothing_reaches_the_log() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    let log_before = leader.status().last_log_index;
    let before = resident_memory().expect("procfs");
    let value = vec![0x5A; 4 << 20];
    for i in 0..40 {
        let refused = leader.set(&format!("big{i}"), value.clone()).await;
        assert_eq!(
            refused,
            Err(Error::QuotaExceeded {
                quota: Quota::ValueBytes,
                size: 4 << 20,
                limit: ConsensusLimits::default().max_value_bytes as u64
            })
        );
    }
    drop(value);
    assert_eq!(leader.status().last_log_index, log_before, "nothing was proposed");
    let grown = resident_memory().expect("procfs").saturating_sub(before);
    assert!(grown < 128 << 20, "memory grew by {grown} bytes");
    // A value under the limit still goes through.
    assert!(leader.set("under-limit", vec![1; 64 << 10]).await.unwrap());
    let too_long_key = "k".repeat(ConsensusLimits::default().max_key_bytes + 1);
    assert!(matches!(
        leader.set(&too_long_key, vec![1]).await,
        Err(Error::QuotaExceeded { quota: Quota::KeyBytes, .. })
    ));
    assert!(matches!(leader.set("", vec![1]).await, Err(Error::BadRequest(_))));
    every_member_serves(&cluster, "after-big-values").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_writes_keeps_reads_and_deletes_and_recovers() {
    cluster_testkit::init_tracing();
    let limits = ConsensusLimits {
        max_key_bytes: 64,
        max_value_bytes: 1000,
        max_store_bytes: 20_000,
        ..ConsensusLimits::default()
    };
    let cluster = LocalCluster::builder(3).limits(limits).start().await;
    let leader = cluster.leader().await;
    let mut written = 0;
    let refused = loop {
        match leader.set(&format!("k{written:03}"), vec![7; 1000]).await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100, "the store quota never refused a write");
    };
    assert!(
        matches!(refused, Error::QuotaExceeded { quota: Quota::StoreBytes, limit: 20_000, .. }),
        "{refused}"
    );
    assert_eq!(written, 19, "19 × 1004 bytes fit in 20,000");
    assert!(leader.status().quota_alarm);
    assert!(leader.status().store_bytes <= 20_000);
    let index = leader.applied_index().unwrap();
    cluster.wait_applied(index).await;
    for m in &cluster.members {
        assert!(m.status().quota_alarm, "member {} shows the alarm", m.member_id());
    }
    // Reads and deletes work; writes that do not grow the store too.
    assert_eq!(leader.consistent_get("k000").await.unwrap(), Some(vec![7; 1000]));
    assert_eq!(cluster.members[1].get("k001").unwrap(), Some(vec![7; 1000]));
    assert!(!leader.set("k000", vec![8; 10]).await.unwrap(), "a shrinking write is admitted");
    assert!(leader.delete("k001").await.unwrap());
    assert!(leader.delete("k002").await.unwrap());
    assert!(!leader.status().quota_alarm, "the alarm is lowered once there is room");
    assert!(leader.set("after", vec![7; 1000]).await.unwrap());
    cluster.shutdown().await;
}

/// With member certificates that name their member, a connection speaks
/// for its certificate's member only: a member-certified caller claiming
/// another member's vote is refused with a typed answer before raft sees
/// it, and the member keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_caller_cannot_speak_for_another_member() {
    use cluster_rpc::tls::generate::CertificateAuthority;
    use cluster_rpc::{Security, Settings, Tls};
    cluster_testkit::init_tracing();
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let tls = |id: MemberId| {
        let c = ca.issue_member(id, "m").expect("issue");
        Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).expect("load")
    };
    let config = cluster_testkit::member_config(None);
    let network = Settings { security: Security::Tls(tls(config.member_id)), ..Default::default() };
    let store = RaftStore::open_with(config, network).await.expect("open");
    store.bootstrap().await.expect("bootstrap");
    wait_until(DEADLINE, "the lone member to lead", || std::future::ready(store.status().is_leader())).await;

    // The caller holds a member certificate of the cluster's CA naming `holder`.
    let (holder, victim) = (MemberId::generate(), MemberId::generate());
    let send = |claimed: MemberId| {
        let connector = tls(holder).connector();
        let (addr, to) = (store.raft_addr(), store.member_id());
        async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let stream = connector.connect(Tls::server_name(), tcp).await.expect("handshake");
            let mut framed =
                Framed::new(stream, WireCodec::<RaftRequest, RaftRpcReply>::new(CLUSTER, 1 << 24));
            let rpc = RaftRpc::Vote(VoteRequest { vote: Vote::new(3, claimed), last_log_id: None });
            framed.send(Frame { request_id: 1, body: RaftRequest { to, rpc } }).await.expect("send");
            let answer = tokio::time::timeout(DEADLINE, framed.next()).await.expect("an answer in time");
            answer.expect("an answer").expect("a frame").expect("of this cluster").body
        }
    };
    let reply = send(victim).await;
    assert_eq!(
        guarded(&reply),
        Some(&GuardError::NotTheSender { claimed: victim, certified: holder }),
        "{reply:?}"
    );
    // Claiming itself passes this check (openraft answers a stranger's vote).
    let reply = send(holder).await;
    assert!(!matches!(guarded(&reply), Some(GuardError::NotTheSender { .. })), "{reply:?}");
    assert!(store.set("after", vec![1]).await.expect("a write after the attempt"));
    store.shutdown().await.expect("shutdown");
}

/// Two members answering at one address (a copied configuration, a phantom
/// in gossip that advertises a member's raft port): a request meant for one
/// is never taken by the other, whatever it asks, and raft carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_meant_for_another_member_is_refused_before_raft() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    let phantom = MemberId::generate();
    for m in &cluster.members {
        let term = m.status().term;
        let vote =
            RaftRpc::Vote(VoteRequest { vote: Vote::new(term + 1, leader.member_id()), last_log_id: None });
        let append = RaftRpc::AppendEntries(AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader.member_id()),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        });
        for rpc in [vote, append, RaftRpc::AppliedIndex] {
            let reply = call_to(m.raft_addr(), phantom, rpc).await;
            assert_eq!(
                guarded(&reply),
                Some(&GuardError::NotTheTarget { to: phantom, receiver: m.member_id() }),
                "{reply:?}"
            );
        }
        // The same question meant for the member itself is answered.
        assert!(matches!(call(m, RaftRpc::AppliedIndex).await, RaftRpcReply::AppliedIndex(_)));
    }
    every_member_serves(&cluster, "after-misdirected").await;
    cluster.shutdown().await;
}
