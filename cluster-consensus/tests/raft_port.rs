//! Bad input on the raft port: a typed refusal or a closed connection, and
//! the member keeps serving.

use std::future::ready;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use cluster_consensus::testsuite::{RaftRequest, RaftRpc, RaftRpcReply};
use cluster_core::testsuite::net::{
    connect_from, held_open, idle_connections, peak_resident_memory, resident_memory,
};
use cluster_core::wire::{Frame, WireCodec};
use cluster_core::{ConsensusStore, ConsensusStoreExt, Error};
use cluster_testkit::{DEADLINE, LocalCluster};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Framed};

const CLUSTER: &str = "test-cluster";

/// Reads one answer frame (decoded as this cluster) from a raw stream, or `None` if closed.
async fn read_reply(stream: &mut TcpStream) -> Option<Frame<RaftRpcReply>> {
    let mut codec = WireCodec::<RaftRequest, RaftRpcReply>::new(CLUSTER, 1 << 20);
    let mut buf = BytesMut::new();
    loop {
        if let Some(item) = codec.decode(&mut buf).expect("a well-formed answer") {
            return Some(item.expect("an answer of this cluster"));
        }
        let n = tokio::time::timeout(DEADLINE, stream.read_buf(&mut buf))
            .await
            .expect("an answer in time")
            .ok()?;
        if n == 0 {
            return None;
        }
    }
}

fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32);
    out.extend_from_slice(body);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_refused_and_the_member_keeps_serving() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(1).start().await;
    let store = cluster.leader().await;
    let addr = store.raft_addr();

    // Garbage that looks like a frame: refused as not ours, then the connection is closed.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&raw_frame(b"GARBAGE-GARBAGE-GARBAGE")).await.unwrap();
    let reply = read_reply(&mut raw).await.expect("an answer");
    assert!(matches!(reply.body, RaftRpcReply::Refused(Error::BadMagic)), "{:?}", reply.body);
    assert!(read_reply(&mut raw).await.is_none(), "the connection is closed");

    // A frame of another cluster: refused with its request id, answered under
    // the sender's cluster id, never naming ours; the connection goes on.
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut foreign =
        Framed::new(stream, WireCodec::<RaftRequest, RaftRpcReply>::new("another-cluster", 1 << 20));
    foreign
        .send(Frame {
            request_id: 42,
            body: RaftRequest { to: store.member_id(), rpc: RaftRpc::AppliedIndex },
        })
        .await
        .unwrap();
    let reply = tokio::time::timeout(DEADLINE, foreign.next()).await.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(reply.request_id, 42);
    match &reply.body {
        RaftRpcReply::Refused(e @ Error::ClusterMismatch { found }) => {
            assert_eq!(found, "another-cluster");
            assert!(!e.to_string().contains(CLUSTER), "the refusal names our cluster: {e}");
        }
        other => panic!("expected a cluster mismatch, got {other:?}"),
    }
    foreign
        .send(Frame {
            request_id: 43,
            body: RaftRequest { to: store.member_id(), rpc: RaftRpc::AppliedIndex },
        })
        .await
        .unwrap();
    let reply = tokio::time::timeout(DEADLINE, foreign.next()).await.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(reply.request_id, 43);

    // An oversized length: refused, then the connection is closed.
    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let reply = read_reply(&mut big).await.expect("an answer before closing");
    assert!(matches!(reply.body, RaftRpcReply::Refused(Error::FrameTooLarge { .. })), "{:?}", reply.body);
    assert!(read_reply(&mut big).await.is_none(), "the connection is closed");

    // Random bytes, then a hang-up.
    let mut noise = TcpStream::connect(addr).await.unwrap();
    noise.write_all(&[0, 0, 0, 3, 1, 2, 3, 0xff, 0xff]).await.unwrap();
    drop(noise);

    // The member still serves raft RPC and writes.
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut good = Framed::new(stream, WireCodec::<RaftRequest, RaftRpcReply>::new(CLUSTER, 1 << 20));
    good.send(Frame {
        request_id: 7,
        body: RaftRequest { to: store.member_id(), rpc: RaftRpc::AppliedIndex },
    })
    .await
    .unwrap();
    let answer = tokio::time::timeout(DEADLINE, good.next()).await.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(answer.request_id, 7);
    assert!(matches!(answer.body, RaftRpcReply::AppliedIndex(Some(_))));
    assert!(store.set("still", vec![1]).await.unwrap());
    assert_eq!(store.consistent_get("still").await.unwrap(), Some(vec![1]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_cluster_is_unreachable() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(1).start().await;
    let leader = cluster.leader().await;
    let mut cfg = cluster_testkit::member_config(None);
    cfg.cluster_id = "another-cluster".to_owned();
    let stranger = cluster_consensus::RaftStore::open(cfg).await.unwrap();
    // The leader's frames are refused by the stranger: it never catches up.
    let add = tokio::time::timeout(
        Duration::from_secs(3),
        leader.add_nonvoter(stranger.member_id(), stranger.endpoints().clone()),
    )
    .await;
    assert!(!matches!(add, Ok(Ok(()))), "a foreign member cannot catch up");
    assert_eq!(stranger.applied_index(), None);
    stranger.shutdown().await.unwrap();
    leader.remove(stranger.member_id()).await.unwrap();
    assert!(leader.set("k", vec![1]).await.unwrap());
    cluster.shutdown().await;
}

/// Two rows of the table on the raft port: thousands of idle
/// connections from another host, and 200,000 small valid requests pipelined
/// with answers never read. The member keeps replicating and answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_floods_and_an_unread_pipeline_leave_the_member_serving() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    let follower = cluster.members.iter().find(|m| m.member_id() != leader.member_id()).expect("a follower");
    let addr = follower.raft_addr();

    // 2,000 idle connections from one other host: at most 64 are held, as handshakes.
    let mut idle = idle_connections([127, 0, 0, 2], addr, 2000).await.expect("connect");
    let held = held_open(&mut idle, Duration::from_secs(3)).await;
    assert!(held <= 64, "{held} connections held from one address (as handshakes, max_handshakes_per_ip)");
    assert!(leader.set("during-flood", vec![1]).await.unwrap());

    // 200,000 valid requests, answers never read.
    let before = resident_memory().expect("procfs");
    let mut codec = WireCodec::<RaftRequest, RaftRpcReply>::new(CLUSTER, 1 << 20);
    let mut pipeline = BytesMut::new();
    for id in 1..=200_000u64 {
        tokio_util::codec::Encoder::encode(
            &mut codec,
            Frame {
                request_id: id,
                body: RaftRequest { to: leader.member_id(), rpc: RaftRpc::AppliedIndex },
            },
            &mut pipeline,
        )
        .unwrap();
    }
    let mut unread = connect_from([127, 0, 0, 3], addr).await.expect("connect");
    let writer = tokio::spawn(async move {
        let _ = unread.write_all(&pipeline).await;
        unread
    });
    let peak = peak_resident_memory(Duration::from_secs(3)).await.expect("procfs");
    let growth = peak.saturating_sub(before) >> 20;
    eprintln!("raft port, unread pipeline: resident growth {growth} MiB");
    assert!(growth <= 100, "resident memory grew by {growth} MiB");
    // The follower still replicates: a write through the leader reaches it.
    assert!(leader.set("during-pipeline", vec![2]).await.unwrap());
    let index = leader.applied_index();
    cluster_testkit::wait_until(cluster_testkit::DEADLINE, "the follower to apply", || {
        ready(follower.applied_index() >= index)
    })
    .await;
    assert_eq!(follower.get("during-pipeline").unwrap(), Some(vec![2]));
    writer.abort();
    drop(idle);
    cluster.shutdown().await;
}
