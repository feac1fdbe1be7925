//! Resident memory under hostile input: partial giant frames and a pipeline
//! whose answers are never read. One test at a time (they measure the process).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use cluster_core::wire::{Frame, WireCodec};
use cluster_rpc::{Limits, Security};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

const MIB: u64 = 1024 * 1024;

/// The most resident memory seen while polling for `within`.
async fn peak_rss(within: Duration) -> u64 {
    let end = tokio::time::Instant::now() + within;
    let mut peak = resident_memory().expect("procfs");
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(25)).await;
        peak = peak.max(resident_memory().expect("procfs"));
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_memory() {
    partial_giant_frames().await;
    an_unread_pipeline().await;
}

/// 30 connections announce a frame of almost 16 MiB and send 512 KiB of it:
/// the server holds what arrived, not what was announced (+480 MiB before).
async fn partial_giant_frames() {
    let limits = Limits { frame_timeout: Duration::from_secs(5), ..Limits::default() };
    let (server, _) = start(limits, Security::Plain).await;
    let c = client(Security::Plain);
    echo(&c, &server).await;
    let before = resident_memory().expect("procfs");
    let part = vec![0u8; 512 * 1024];
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut s = connect_from([127, 0, 0, 2], server.local_addr()).await.expect("connect");
        s.write_all(&(16u32 * 1024 * 1024 - 4096).to_be_bytes()).await.expect("write");
        s.write_all(&part).await.expect("write");
        held.push(s);
    }
    let peak = peak_rss(Duration::from_secs(2)).await;
    let growth = peak.saturating_sub(before);
    eprintln!("partial frames: resident growth {} MiB", growth / MIB);
    assert!(growth <= 64 * MIB, "resident memory grew by {} MiB", growth / MIB);
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    // The frame timeout closes them.
    for s in &mut held {
        assert!(closed_within(s, DEADLINE).await, "a partial frame was kept open");
    }
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
    let waited = std::time::Instant::now();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters.started.load(Ordering::SeqCst);
        if now == last && now > 1 {
            break;
        }
        assert!(waited.elapsed() < DEADLINE, "the server never stopped taking requests ({now})");
        last = now;
    }
    let peak = peak_rss(Duration::from_secs(1)).await;
    let growth = peak.saturating_sub(before);
    let started = counters.started.load(Ordering::SeqCst) as u64;
    eprintln!("unread pipeline: {started} requests taken of {n}, resident growth {} MiB", growth / MIB);
    assert!(started < n, "the server read the whole pipeline of a reader that reads nothing");
    assert!(growth <= 100 * MIB, "resident memory grew by {} MiB", growth / MIB);
    // Others are served meanwhile.
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    writer.abort();
    server.shutdown().await;
}
