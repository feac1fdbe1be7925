//! The proxy on loopback (no root needed): Linux routes all of 127.0.0.0/8 to
//! `lo`, so each member gets a source IP (127.0.0.10 + i) and a front IP
//! (127.0.0.100 + i) of its own. Member 1's real ports are a TCP listener and a
//! UDP socket of the test; the test speaks as member 0 from its source IP.
//!
//! Timing is only ever checked from below (a delayed byte cannot arrive
//! sooner than its delay, however loaded the machine); counts are checked
//! exactly, against the generator of the same seed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cluster_core::testsuite::{DEADLINE, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::time::Instant;

use super::link::{Fate, Links};
use super::*;

fn source_ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i))
}

fn front_ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 100 + i))
}

/// Route numbers of every member.
const TCP: usize = 0;
const UDP: usize = 1;

/// Member 1's real ports, and a proxy for members 0 and 1.
struct Lab {
    proxy: Proxy,
    listener: TcpListener,
    backend_udp: Arc<UdpSocket>,
}

async fn lab(seed: u64) -> Lab {
    let listener = TcpListener::bind((source_ip(1), 0)).await.expect("a listener");
    let backend_udp = UdpSocket::bind((source_ip(1), 0)).await.expect("a UDP socket");
    let member = |i: u8, tcp: SocketAddr, udp: SocketAddr| ProxiedMember {
        source_ip: source_ip(i),
        front_ip: front_ip(i),
        routes: vec![
            Route { protocol: Protocol::Tcp, front_port: 0, backend: tcp },
            Route { protocol: Protocol::Udp, front_port: 0, backend: udp },
        ],
    };
    // Member 0's real ports are never reached: the test speaks for it.
    let nowhere = SocketAddr::new(source_ip(0), 9);
    let members = vec![
        member(0, nowhere, nowhere),
        member(1, listener.local_addr().expect("bound"), backend_udp.local_addr().expect("bound")),
    ];
    let proxy = Proxy::start(ProxySpec { members, seed: Some(seed) }).expect("the proxy starts");
    Lab { proxy, listener, backend_udp: Arc::new(backend_udp) }
}

impl Lab {
    /// A connection from member 0 to member 1 through the proxy: (member 0's
    /// end, member 1's end, the address member 1 sees it from).
    async fn connect(&self) -> (TcpStream, TcpStream, SocketAddr) {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket.bind(SocketAddr::new(source_ip(0), 0)).expect("bind to member 0's IP");
        let ours = socket.connect(self.proxy.front(1, TCP)).await.expect("connects to the proxy");
        let (theirs, seen_from) = self.listener.accept().await.expect("the proxy connects through");
        (ours, theirs, seen_from)
    }

    /// A UDP socket of member 0.
    async fn member0_udp(&self) -> UdpSocket {
        UdpSocket::bind((source_ip(0), 0)).await.expect("a UDP socket")
    }
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf)).await.expect("in time").expect("reads");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_tcp_bytes_and_datagrams_for_at_least_its_length() {
    let lab = lab(1).await;
    let delay = Duration::from_millis(250);
    lab.proxy.set(0, 1, LinkRule::delayed(delay, Duration::from_millis(50)));
    let floor = Duration::from_millis(200);

    let (mut ours, mut theirs, seen_from) = lab.connect().await;
    assert_eq!(seen_from.ip(), front_ip(0), "member 1 sees member 0 at member 0's front IP");
    let sent = Instant::now();
    ours.write_all(b"hello").await.expect("writes");
    assert_eq!(read_exactly(&mut theirs, 5).await, b"hello");
    assert!(sent.elapsed() >= floor, "TCP bytes arrived after {:?}, before the delay", sent.elapsed());

    let udp = lab.member0_udp().await;
    let sent = Instant::now();
    udp.send_to(b"gossip", lab.proxy.front(1, UDP)).await.expect("sends");
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(DEADLINE, lab.backend_udp.recv_from(&mut buf))
        .await
        .expect("in time")
        .expect("recv");
    assert_eq!(&buf[..n], b"gossip");
    assert_eq!(from.ip(), front_ip(0));
    assert!(sent.elapsed() >= floor, "the datagram arrived after {:?}, before the delay", sent.elapsed());
    let stats = lab.proxy.stats(0, 1);
    assert_eq!((stats.datagrams, stats.tcp_bytes), (1, 5), "{stats:?}");
    assert_eq!(lab.proxy.stats(1, 0), LinkStats::default(), "nothing went the other way");
}

/// Sends `count` datagrams as member 0 to member 1, in small batches (a burst
/// would overflow loopback socket buffers, a loss the proxy did not choose).
async fn send_datagrams(lab: &Lab, count: u64) {
    let udp = lab.member0_udp().await;
    for i in 0..count {
        udp.send_to(&i.to_le_bytes(), lab.proxy.front(1, UDP)).await.expect("sends");
        if i % 32 == 31 {
            let seen = i + 1;
            wait_until(DEADLINE, "the proxy to take the batch", || {
                std::future::ready(lab.proxy.stats(0, 1).datagrams == seen)
            })
            .await;
        }
    }
    wait_until(DEADLINE, "the proxy to take every datagram", || {
        std::future::ready(lab.proxy.stats(0, 1).datagrams == count)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagram_loss_and_duplication_follow_the_seed() {
    const SEED: u64 = 26;
    const COUNT: u64 = 2_000;
    let rule = LinkRule::clean().with_loss(0.2).with_duplicate(0.1);
    let lab = lab(SEED).await;
    lab.proxy.set(0, 1, rule);
    // Member 1 reads as datagrams come, so that its socket buffer never overflows.
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let (socket, received) = (lab.backend_udp.clone(), received.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while socket.recv_from(&mut buf).await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    send_datagrams(&lab, COUNT).await;

    // The same seed, the same fates: replay the link's generator without a network.
    let model = Links::new(SEED, vec![source_ip(0), source_ip(1)]);
    model.set(0, 1, rule);
    for _ in 0..COUNT {
        let _ = model.datagram(Some(0), Some(1));
    }
    let stats = lab.proxy.stats(0, 1);
    assert_eq!(stats, model.stats(0, 1), "the proxy's fates are the seed's");
    // And they are what was asked for, roughly.
    assert!((300..=500).contains(&stats.lost), "lost {} of {COUNT} at 20 %", stats.lost);
    assert!((100..=220).contains(&stats.duplicated), "duplicated {} of {COUNT} at 10 %", stats.duplicated);
    let delivered = COUNT - stats.lost + stats.duplicated;
    wait_until(DEADLINE, "every delivered datagram to arrive", || {
        std::future::ready(received.load(Ordering::Relaxed) == delivered)
    })
    .await;
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_cut_stops_one_direction_until_healed() {
    let lab = lab(2).await;
    let (mut ours, mut theirs, _) = lab.connect().await;
    lab.proxy.set(1, 0, LinkRule::cut());

    // Member 0 is still heard...
    ours.write_all(b"ping").await.expect("writes");
    assert_eq!(read_exactly(&mut theirs, 4).await, b"ping");
    // ...but member 1's answer is held by the proxy (it read it) and not delivered.
    theirs.write_all(b"pong").await.expect("writes");
    wait_until(DEADLINE, "the proxy to read the answer", || {
        std::future::ready(lab.proxy.stats(1, 0).tcp_bytes == 4)
    })
    .await;
    let mut buf = [0u8; 4];
    let early = tokio::time::timeout(Duration::from_millis(300), ours.read(&mut buf)).await;
    assert!(early.is_err(), "bytes crossed a cut link: {early:?}");

    // Datagrams: member 1's answers are dropped while cut.
    let udp = lab.member0_udp().await;
    udp.send_to(b"syn", lab.proxy.front(1, UDP)).await.expect("sends");
    let mut dbuf = [0u8; 64];
    let (n, relay) = tokio::time::timeout(DEADLINE, lab.backend_udp.recv_from(&mut dbuf))
        .await
        .expect("member 1 hears member 0")
        .expect("recv");
    assert_eq!(&dbuf[..n], b"syn");
    lab.backend_udp.send_to(b"ack 1", relay).await.expect("sends");
    wait_until(DEADLINE, "the proxy to drop the answer", || {
        std::future::ready(lab.proxy.stats(1, 0).cut == 1)
    })
    .await;

    lab.proxy.heal();
    assert_eq!(lab.proxy.rule(1, 0), LinkRule::clean());
    assert_eq!(read_exactly(&mut ours, 4).await, b"pong", "the held bytes arrive once healed");
    lab.backend_udp.send_to(b"ack 2", relay).await.expect("sends");
    let (n, from) =
        tokio::time::timeout(DEADLINE, udp.recv_from(&mut dbuf)).await.expect("in time").expect("recv");
    assert_eq!(&dbuf[..n], b"ack 2", "the cut datagram is lost; the next one arrives");
    assert_eq!(from, lab.proxy.front(1, UDP), "answers come from member 1's front address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bytes_keep_their_order_under_jitter_and_loss() {
    let lab = lab(3).await;
    let rule = LinkRule::delayed(Duration::from_millis(5), Duration::from_millis(5)).with_loss(0.05);
    lab.proxy.set_every(rule);
    let (ours, mut theirs, _) = lab.connect().await;
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let echo = tokio::spawn(async move {
        let (mut read, mut write) = theirs.split();
        tokio::io::copy(&mut read, &mut write).await
    });
    let (mut read, mut write) = ours.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        // Writes of uneven sizes, so the proxy's chunks do not line up with them.
        for piece in to_send.chunks(3_000) {
            write.write_all(piece).await.expect("writes");
        }
        write.shutdown().await.expect("shuts down");
    });
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, read.read_to_end(&mut back)).await.expect("in time").expect("reads");
    writer.await.expect("the writer ends");
    echo.await.expect("the echo ends").expect("the echo copies");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes came back out of order");
    let stats = lab.proxy.stats(0, 1);
    assert_eq!(stats.tcp_bytes, data.len() as u64);
    assert!(stats.retransmitted > 0 || stats.chunks < 20, "no modelled loss in {} chunks", stats.chunks);
}

#[test]
fn a_members_link_to_itself_and_a_clients_traffic_are_never_shaped() {
    let links = Links::new(7, vec![source_ip(0), source_ip(1)]);
    links.set(0, 0, LinkRule::cut());
    links.set(0, 1, LinkRule::cut());
    assert_eq!(links.datagram(Some(0), Some(0)), Fate::Deliver(vec![Duration::ZERO]));
    assert_eq!(links.datagram(None, Some(1)), Fate::Deliver(vec![Duration::ZERO]));
    assert_eq!(links.datagram(Some(1), None), Fate::Deliver(vec![Duration::ZERO]));
    assert_eq!(links.datagram(Some(0), Some(1)), Fate::Cut);
    assert_eq!(links.member_of(source_ip(1)), Some(1));
    assert_eq!(links.member_of(front_ip(1)), None, "a front IP is nobody's source");
}

#[test]
fn delays_stay_within_the_jitter_and_a_lost_chunk_waits_for_its_retransmission() {
    let links = Links::new(8, vec![source_ip(0), source_ip(1)]);
    let (delay, jitter) = (Duration::from_millis(50), Duration::from_millis(30));
    links.set(0, 1, LinkRule::delayed(delay, jitter));
    for _ in 0..1_000 {
        let d = links.chunk(Some(0), Some(1), 1);
        assert!(d >= delay - jitter && d <= delay + jitter, "{d:?}");
        match links.datagram(Some(0), Some(1)) {
            Fate::Deliver(d) => assert!(d[0] >= delay - jitter && d[0] <= delay + jitter, "{d:?}"),
            other => panic!("a clean rule dropped a datagram: {other:?}"),
        }
    }
    links.set(0, 1, LinkRule::clean().with_loss(1.0));
    // Every copy lost: six retransmissions, 200 + 400 + … + 6400 ms.
    assert_eq!(links.chunk(Some(0), Some(1), 1), Duration::from_millis(12_600));
    assert_eq!(links.stats(0, 1).retransmitted, 6);
}
