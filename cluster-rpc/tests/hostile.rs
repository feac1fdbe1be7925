//! Hostile input against a server, with real sockets: each test holds the
//! hostile connections while checking that callers from 127.0.0.1 (the
//! members) are still served.

use std::future::ready;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use cluster_core::wire::{Frame, WireCodec};
use cluster_rpc::{Limits, RpcError, Security};
use cluster_testkit::rpc::CALL_DEADLINE as DEADLINE;
use cluster_testkit::rpc::*;
use cluster_testkit::testsuite::net::{closed_within, connect_from, held_open, idle_connections};
use cluster_testkit::wait_until;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_another_host_do_not_starve_members() {
    let limits = Limits { max_handshakes_per_ip: 50, ..Limits::default() };
    let handshake_timeout = limits.handshake_timeout;
    let (server, _) = start(limits, Security::Plain).await;
    let addr = server.local_addr();
    // 300 idle connections from another host: at most 50 are held (as
    // handshakes, never as regular places), the rest closed at once.
    let mut attackers = idle_connections([127, 0, 0, 2], addr, 300).await.expect("connect");
    let held = held_open(&mut attackers, Duration::from_secs(1)).await;
    assert!(held <= 50, "{held} connections held for one address");
    // The members' traffic goes on while they are held.
    let c = client(Security::Plain);
    for _ in 0..20 {
        assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    }
    // None of them sent a frame: each is closed by the handshake timeout.
    let held = held_open(&mut attackers, handshake_timeout + DEADLINE).await;
    assert_eq!(held, 0, "idle connections kept past the handshake timeout");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_authenticate_give_their_place_to_new_ones() {
    let limits = Limits {
        max_handshakes: 16,
        max_handshakes_per_ip: 16,
        handshake_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let (server, _) = start(limits, Security::Plain).await;
    let mut idle = idle_connections([127, 0, 0, 2], server.local_addr(), 16).await.expect("connect");
    // Every handshake place is taken; a new caller still gets in: the
    // oldest idle connection gives its place up.
    let c = client(Security::Plain);
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    assert_eq!(held_open(&mut idle, Duration::from_secs(1)).await, 15, "one idle connection closed");
    assert!(closed_within(&mut idle[0], Duration::from_secs(1)).await, "the oldest one went");
    server.shutdown().await;
}

/// The refusal a call got, whatever form it came in.
fn refusal(answer: Result<Said, cluster_rpc::RpcError>) -> cluster_core::Error {
    match answer {
        Ok(Said::Refused(e)) | Err(cluster_rpc::RpcError::Refused { error: e, .. }) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_over_the_connection_cap_get_a_typed_refusal_after_their_first_frame() {
    let limits = Limits { max_connections: 2, max_client_connections: 1, ..Limits::default() };
    let (server, _) = start(limits, Security::Plain).await;
    let addr = server.local_addr().to_string();
    let first = client(Security::Plain);
    let second = client(Security::Plain);
    assert_eq!(echo(&first, &server).await, Said::Echo("hi".into()));
    assert_eq!(echo(&second, &server).await, Said::Echo("hi".into()));
    let third = client(Security::Plain);
    match refusal(third.call(&addr, &Ask::Echo("hi".into()), DEADLINE).await) {
        cluster_core::Error::Unreachable(m) => assert!(m.contains("too many connections"), "{m}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // The place is free again once one of them goes.
    drop(first);
    wait_until(DEADLINE, "a place for the third caller", || {
        let (third, addr) = (&third, &addr);
        async move { matches!(third.call(addr, &Ask::Echo("hi".into()), DEADLINE).await, Ok(Said::Echo(_))) }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_closed_by_the_frame_timeout() {
    let limits = Limits { frame_timeout: Duration::from_secs(1), ..Limits::default() };
    let (server, _) = start(limits, Security::Plain).await;
    let addr = server.local_addr();
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = connect_from([127, 0, 0, 2], addr).await.expect("connect");
        s.write_all(&100u32.to_be_bytes()).await.expect("write");
        slow.push(s);
    }
    // One byte a second from each, while it is open.
    let tricklers: Vec<_> = slow
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                for _ in 0..60 {
                    if s.write_all(&[0]).await.is_err() {
                        return true;
                    }
                    if closed_within(&mut s, Duration::from_secs(1)).await {
                        return true;
                    }
                }
                false
            })
        })
        .collect();
    let c = client(Security::Plain);
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    for t in tricklers {
        assert!(t.await.expect("trickler"), "a slow sender was still open after 60 s");
    }
    // Closed by the 1 s frame timeout, not by the end of the trickle.
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_to_a_members_only_port_are_capped() {
    let limits = Limits { max_connections: 512, max_client_connections: 256, ..Limits::default() };
    let (raft_like, _) = start_with(limits, Security::Plain, cluster_rpc::Access::MembersOnly).await;
    let (other, _) = start(Limits::default(), Security::Plain).await;
    let addr = raft_like.local_addr();
    let mut attackers = Vec::new();
    // 3,000 from 12 addresses (250 each: under the per-address cap of 256).
    for i in 0..3000u32 {
        let source = [127, 0, 1, 2 + (i % 12) as u8];
        attackers.push(connect_from(source, addr).await.expect("connect"));
    }
    // None authenticates: they hold handshake places only, at most 256.
    let held = held_open(&mut attackers, Duration::from_secs(3)).await;
    assert!(held <= 256, "{held} connections held at once");
    // Descriptors of this process: the attackers' 3,000 plus at most the 256 held.
    let fds = std::fs::read_dir("/proc/self/fd").expect("procfs").count();
    assert!(fds < 3000 + 256 + 200, "{fds} descriptors open");
    // The process keeps answering on its other server.
    let c = client(Security::Plain);
    assert_eq!(echo(&c, &other).await, Said::Echo("hi".into()));
    drop(attackers);
    // Once they are gone, the port serves again.
    assert_eq!(echo(&c, &raft_like).await, Said::Echo("hi".into()));
    raft_like.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_per_connection() {
    let limits = Limits { max_in_flight_per_connection: 8, ..Limits::default() };
    let (server, counters) = start(limits, Security::Plain).await;
    let stream = tokio::net::TcpStream::connect(server.local_addr()).await.expect("connect");
    let mut raw = Framed::new(stream, WireCodec::<Ask, Said>::new(CLUSTER, 1 << 20));
    for id in 1..=100 {
        raw.feed(Frame { request_id: id, body: Ask::Hang }).await.expect("send");
    }
    raw.flush().await.expect("flush");
    wait_until(DEADLINE, "8 requests to start", || ready(counters.started.load(Ordering::SeqCst) >= 8)).await;
    // Another connection is served; the stalled one started no more than 8.
    let c = client(Security::Plain);
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    assert_eq!(counters.started.load(Ordering::SeqCst), 9);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_frames_get_typed_answers_and_garbage_closes() {
    let (server, counters) = start(Limits::default(), Security::Plain).await;
    let addr = server.local_addr();
    // Another cluster: answered under its own cluster id, never naming ours.
    let stranger: cluster_rpc::Client<Ask, Said> = cluster_rpc::Client::new(cluster_rpc::ClientConfig {
        cluster_id: "elsewhere".into(),
        ..Default::default()
    });
    let answer = stranger.call(&addr.to_string(), &Ask::Echo("x".into()), DEADLINE).await.expect("an answer");
    match answer {
        Said::Refused(e @ cluster_core::Error::ClusterMismatch { .. }) => {
            assert!(!e.to_string().contains(CLUSTER), "{e}")
        }
        other => panic!("expected a cluster mismatch, got {other:?}"),
    }
    // Another version: refused with its request id, the connection goes on.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut raw = Framed::new(stream, WireCodec::<Ask, Said>::new(CLUSTER, 1 << 20));
    let mut body =
        cluster_core::wire::encode_body(CLUSTER, &Frame { request_id: 5, body: Ask::WhoAmI }, 1 << 20)
            .expect("encode");
    body[4] = 9;
    let mut buf = BytesMut::new();
    buf.put_u32(body.len() as u32);
    buf.extend_from_slice(&body);
    raw.get_mut().write_all(&buf).await.expect("write");
    let reply = tokio::time::timeout(DEADLINE, raw.next()).await.expect("in time").expect("open");
    let reply = reply.expect("a frame").expect("of our cluster");
    assert_eq!(reply.request_id, 5);
    assert!(matches!(reply.body, Said::Refused(cluster_core::Error::VersionMismatch { found: 9, .. })));
    raw.send(Frame { request_id: 6, body: Ask::WhoAmI }).await.expect("send");
    let reply = tokio::time::timeout(DEADLINE, raw.next()).await.expect("in time").expect("open");
    assert_eq!(reply.expect("a frame").expect("ours"), Frame { request_id: 6, body: Said::Caller(None) });
    // Garbage: refused under id 0, then closed.
    raw.get_mut().write_all(&[0, 0, 0, 4, b'J', b'U', b'N', b'K']).await.expect("write");
    let reply = tokio::time::timeout(DEADLINE, raw.next()).await.expect("in time").expect("open");
    let reply = reply.expect("a frame").expect("ours");
    assert_eq!(reply.request_id, 0);
    assert!(matches!(reply.body, Said::Refused(cluster_core::Error::TruncatedFrame { .. })), "{reply:?}");
    assert!(tokio::time::timeout(DEADLINE, raw.next()).await.expect("in time").is_none(), "closed");
    assert_eq!(counters.started.load(Ordering::SeqCst), 1, "only the good request ran");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_and_a_dropped_stream_is_cancelled_at_the_server() {
    let (server, counters) = start(Limits::default(), Security::Plain).await;
    let addr = server.local_addr().to_string();
    let c = client(Security::Plain);
    let items: Vec<_> =
        c.stream(&addr, &Ask::Count { n: 5, forever: false }).await.expect("stream").collect().await;
    let items: Vec<Said> = items.into_iter().map(|r| r.expect("an item")).collect();
    assert_eq!(items, (0..5).map(Said::Item).collect::<Vec<_>>());
    wait_until(DEADLINE, "the ended stream to be dropped", || {
        ready(counters.streams_dropped.load(Ordering::SeqCst) == 1)
    })
    .await;

    let mut endless = c.stream(&addr, &Ask::Count { n: 3, forever: true }).await.expect("stream");
    for i in 0..3 {
        assert_eq!(endless.next().await.expect("an item").expect("ok"), Said::Item(i));
    }
    drop(endless);
    wait_until(DEADLINE, "the cancelled stream to be dropped", || {
        ready(counters.streams_dropped.load(Ordering::SeqCst) == 2)
    })
    .await;
    // A call on the same connection still works.
    assert_eq!(echo(&c, &server).await, Said::Echo("hi".into()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_has_a_deadline_and_shutdown_ends_every_connection() {
    let (server, _) = start(Limits::default(), Security::Plain).await;
    let addr = server.local_addr().to_string();
    let c = client(Security::Plain);
    let hung = c.call(&addr, &Ask::Hang, Duration::from_millis(200)).await;
    assert!(matches!(hung, Err(RpcError::Timeout { .. })), "{hung:?}");
    let mut open = tokio::net::TcpStream::connect(server.local_addr()).await.expect("connect");
    tokio::time::timeout(DEADLINE, server.shutdown()).await.expect("shutdown in time");
    assert!(closed_within(&mut open, DEADLINE).await);
    let after = c.call(&addr, &Ask::Echo("x".into()), DEADLINE).await;
    assert!(matches!(after, Err(RpcError::Connect { .. } | RpcError::Closed { .. })), "{after:?}");
}
