//! Resident memory under hostile input, with the default limits: partial
//! giant frames, pipelines whose answers are never read (small and large
//! answers). Each attack must grow the process by less than 128 MiB (the
//! bound the defaults of `Limits` promise). One test at a time (they measure
//! the process).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use cluster_core::wire::{Frame, WireCodec};
use cluster_rpc::{Limits, Security};
use cluster_testkit::rpc::CALL_DEADLINE as DEADLINE;
use cluster_testkit::rpc::*;
use cluster_testkit::testsuite::net::{closed_within, connect_from, peak_resident_memory, resident_memory};
use cluster_testkit::wait_until;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

const MIB: u64 = 1024 * 1024;
/// What no attack may grow a member by, with the default limits.
const BOUND: u64 = 128 * MIB;

/// The most resident memory seen while polling for `within`.
async fn peak_rss(within: Duration) -> u64 {
    peak_resident_memory(within).await.expect("procfs")
}

/// Waits until `counter` is at least `at_least` and did not move for half a second.
async fn settled(counter: &AtomicUsize, at_least: usize, what: &str) {
    let last = std::cell::Cell::new(usize::MAX);
    wait_until(DEADLINE, what, || {
        let last = &last;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = counter.load(Ordering::SeqCst);
            last.replace(now) == now && now >= at_least
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_memory() {
    partial_giant_frames().await;
    an_unread_pipeline().await;
    unread_pipelines_of_large_answers().await;
}

/// 30 connections announce a frame of almost 16 MiB and send 8 MiB of it:
/// large frames are read only within the server's budget for partly read
/// frames (+289 MiB before); small frames pass meanwhile.
async fn partial_giant_frames() {
    let limits = Limits { frame_timeout: Duration::from_secs(5), ..Limits::default() };
    let (server, _) = start(limits, Security::Plain).await;
    let c = client(Security::Plain);
    echo(&c, &server).await;
    let before = resident_memory().expect("procfs");
    let mut senders = Vec::new();
    for i in 0..30u8 {
        let mut s = connect_from([127, 0, 0, 2 + i % 4], server.local_addr()).await.expect("connect");
        // Each sends what the socket takes, and holds the connection.
        senders.push(tokio::spawn(async move {
            let part = vec![0u8; 8 << 20];
            let _ = s.write_all(&(16u32 * 1024 * 1024 - 4096).to_be_bytes()).await;
            let _ = s.write_all(&part).await;
            s
        }));
    }
    let peak = peak_rss(Duration::from_secs(3)).await;
    // Small frames are not held back by the large ones.
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    let growth = peak.saturating_sub(before);
    eprintln!("partial frames: resident growth {} MiB", growth / MIB);
    assert!(growth < BOUND, "resident memory grew by {} MiB", growth / MIB);
    // The frame timeout (or a refusal for want of room) closes them all.
    for sender in senders {
        let mut s =
            tokio::time::timeout(DEADLINE, sender).await.expect("the server read or closed").expect("sender");
        assert!(closed_within(&mut s, DEADLINE).await, "a partial frame was kept open");
    }
    server.shutdown().await;
}

/// 8 connections from 4 addresses each pipeline 48 requests for a 14 MiB
/// answer and never read: a connection holds at most its queue's budget (one
/// answer larger than it), the server its own budget; a request's place is
/// freed only once its answer is written, so no connection starts more than
/// its requests in flight (+726 MiB for one such connection before).
async fn unread_pipelines_of_large_answers() {
    let limits = Limits::default();
    let in_flight = limits.max_in_flight_per_connection;
    let (server, counters) = start(limits, Security::Plain).await;
    let c = client(Security::Plain);
    echo(&c, &server).await;
    let before = resident_memory().expect("procfs");
    let mut codec = WireCodec::<Ask, Said>::new(CLUSTER, 1 << 20);
    let mut pipeline = BytesMut::new();
    for id in 1..=48 {
        codec.encode(Frame { request_id: id, body: Ask::Big(14 << 20) }, &mut pipeline).expect("encode");
    }
    let pipeline = pipeline.freeze();
    let connections = 8;
    let mut held = Vec::new();
    for i in 0..connections {
        let mut s = connect_from([127, 0, 0, 2 + i % 4], server.local_addr()).await.expect("connect");
        s.write_all(&pipeline).await.expect("write");
        held.push(s);
    }
    // Until the server stops starting requests (they wait for the peers to read).
    settled(&counters.started, 0, "the server to stop starting requests").await;
    let peak = peak_rss(Duration::from_secs(2)).await;
    let growth = peak.saturating_sub(before);
    let started = counters.started.load(Ordering::SeqCst);
    eprintln!("unread large answers: {started} requests started, resident growth {} MiB", growth / MIB);
    assert!(growth < BOUND, "resident memory grew by {} MiB", growth / MIB);
    // 1 for the echo, then at most the places in flight of each connection.
    assert!(started <= 1 + connections as usize * in_flight, "{started} requests started");
    // Others are served meanwhile, large answers too once there is room.
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    drop(held);
    let addr = server.local_addr().to_string();
    wait_until(DEADLINE, "a large answer once the unread ones are gone", || {
        let c = &c;
        let addr = &addr;
        async move {
            matches!(c.call(addr, &Ask::Big(14 << 20), DEADLINE).await, Ok(Said::Echo(s)) if s.len() == 14 << 20)
        }
    })
    .await;
    server.shutdown().await;
}

/// 200,000 small valid requests pipelined on one connection, answers never
/// read: the server stops reading (backpressure) instead of growing
/// (+4.7 GiB for 1,000,000 before).
async fn an_unread_pipeline() {
    let (server, counters) = start(Limits::default(), Security::Plain).await;
    let c = client(Security::Plain);
    echo(&c, &server).await;
    let before = resident_memory().expect("procfs");
    let n = 200_000u64;
    let mut codec = WireCodec::<Ask, Said>::new(CLUSTER, 1 << 20);
    let mut pipeline = BytesMut::new();
    for id in 1..=n {
        codec.encode(Frame { request_id: id, body: Ask::Echo("x".into()) }, &mut pipeline).expect("encode");
    }
    pipeline.put_u8(0); // never completed: the connection stays busy
    let mut s = connect_from([127, 0, 0, 2], server.local_addr()).await.expect("connect");
    let writer = tokio::spawn(async move {
        let _ = s.write_all(&pipeline).await;
        s
    });
    // Wait until the server stops taking requests from it.
    settled(&counters.started, 2, "the server to stop taking requests").await;
    let peak = peak_rss(Duration::from_secs(1)).await;
    let growth = peak.saturating_sub(before);
    let started = counters.started.load(Ordering::SeqCst) as u64;
    eprintln!("unread pipeline: {started} requests taken of {n}, resident growth {} MiB", growth / MIB);
    assert!(started < n, "the server read the whole pipeline of a reader that reads nothing");
    assert!(growth < BOUND, "resident memory grew by {} MiB", growth / MIB);
    // Others are served meanwhile.
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    writer.abort();
    server.shutdown().await;
}
