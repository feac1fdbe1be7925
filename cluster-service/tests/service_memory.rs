//! Resident memory of a member under unread watches: connections that open
//! many watches replaying large values and never read a byte. A watch is a
//! cursor over the member's history (no copy of it), and the RPC layer
//! queues a bounded number of answer bytes per connection and per port, so
//! the member grows by less than 128 MiB (+683 MiB before).

use std::time::Duration;

use bytes::BytesMut;
use cluster_core::testsuite::net::{connect_from, peak_resident_memory, resident_memory};
use cluster_core::wire::{Frame, WireCodec};
use cluster_service::{Request, Response};
use cluster_testkit::{LOCAL_CLUSTER_ID as CLUSTER, LocalCluster, init_tracing};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_watches_replaying_large_values_stay_within_the_byte_bounds() {
    init_tracing();
    let cluster = LocalCluster::start(1, 0).await;
    let member = &cluster.members[0];
    let client = member.client();
    let (revision, _) = client.get_prefix_with_revision("big/").await.expect("list");
    for i in 0..10 {
        let value = vec![b'a' + i as u8; 1400 * 1024];
        member.proxy.set(&format!("big/{i}"), value).await.expect("a 1.4 MiB write");
    }
    let before = resident_memory().expect("procfs");

    // 7 connections × 64 watches, each replaying the ten values, never read.
    let mut codec = WireCodec::<Request, Response>::new(CLUSTER, 1 << 20);
    let mut requests = BytesMut::new();
    for id in 1..=64 {
        let watch = Request::Watch { prefix: "big/".into(), from_revision: Some(revision + 1) };
        codec.encode(Frame { request_id: id, body: watch }, &mut requests).expect("encode");
    }
    let addr: std::net::SocketAddr = member.service_addr.parse().expect("an address");
    let mut held = Vec::new();
    for i in 0..7u8 {
        let mut s = connect_from([127, 0, 0, 2 + i % 4], addr).await.expect("connect");
        s.write_all(&requests).await.expect("write");
        held.push(s);
    }
    let peak = peak_resident_memory(Duration::from_secs(5)).await.expect("procfs").max(before);
    let growth = peak.saturating_sub(before);
    eprintln!("unread watches: resident growth {} MiB", growth / MIB);
    assert!(growth < 128 * MIB, "resident memory grew by {} MiB", growth / MIB);

    // The member still serves, large values included.
    assert!(member.proxy.set("after", "v").await.expect("a write"));
    let entries = client.get_prefix("big/").await.expect("a list of the large values");
    assert_eq!(entries.len(), 10);
    drop(held);
    cluster.shutdown().await;
}
