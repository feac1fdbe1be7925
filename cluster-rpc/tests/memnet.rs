//! The RPC layer on the in-memory network (`memnet`): calls and streams go
//! through it, its delays show in (virtual) time, partitions and one-way
//! cuts make calls fail with a typed error within their deadline and heal,
//! and its random choices replay from the seed.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cluster_rpc::memnet::{Link, MemNetwork};
use cluster_rpc::tls::generate::CertificateAuthority;
use cluster_rpc::{Access, Client, ClientConfig, Limits, Net, Role, RpcError, Security, Server, Tls};
use cluster_testkit::rpc::CALL_DEADLINE as DEADLINE;
use cluster_testkit::rpc::*;
use cluster_testkit::wait_until;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const SERVER: [u8; 4] = [10, 0, 0, 1];
const CALLER: [u8; 4] = [10, 0, 0, 2];
const SERVER_ADDR: &str = "10.0.0.1:7000";
/// A call's deadline in the tests that expect it to pass.
const CALL: Duration = Duration::from_secs(2);

fn ip(octets: [u8; 4]) -> IpAddr {
    IpAddr::from(octets)
}

/// The test handler served on host `SERVER` of `network`.
async fn start_on(network: &MemNetwork, security: Security) -> (Server, std::sync::Arc<Counters>) {
    let listener = network.host(ip(SERVER)).bind(SERVER_ADDR.parse().unwrap()).await.expect("bind");
    serve_on(listener, Limits::default(), security, Access::Anyone)
}

fn client_on(net: Net, security: Security) -> Client<Ask, Said> {
    Client::new(ClientConfig {
        cluster_id: CLUSTER.into(),
        security,
        network: net,
        ..ClientConfig::default()
    })
}

async fn echo_on(c: &Client<Ask, Said>, timeout: Duration) -> Result<Said, RpcError> {
    c.call(SERVER_ADDR, &Ask::Echo("hi".into()), timeout).await
}

#[tokio::test]
async fn calls_and_streams_go_through_the_in_memory_network() {
    let network = MemNetwork::new(1);
    let (server, counters) = start_on(&network, Security::Plain).await;
    assert_eq!(server.local_addr(), SERVER_ADDR.parse().unwrap());
    let c = client_on(network.host(ip(CALLER)), Security::Plain);
    assert_eq!(echo_on(&c, DEADLINE).await.expect("an answer"), Said::Echo("hi".into()));
    let items: Vec<Said> = c
        .stream(SERVER_ADDR, &Ask::Count { n: 3, forever: false })
        .await
        .expect("a stream")
        .map(|item| item.expect("an item"))
        .collect()
        .await;
    assert_eq!(items, vec![Said::Item(0), Said::Item(1), Said::Item(2)]);
    // An answer larger than a pipe's buffer comes whole.
    let big = c.call(SERVER_ADDR, &Ask::Big(1 << 20), DEADLINE).await.expect("a big answer");
    assert_eq!(big, Said::Echo("x".repeat(1 << 20)));
    assert_eq!(counters.started.load(Ordering::SeqCst), 3);
    // Nobody listens on another port: refused, typed.
    let e = c.call("10.0.0.1:7001", &Ask::Echo("hi".into()), DEADLINE).await.expect_err("nobody there");
    assert!(
        matches!(&e, RpcError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{e:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn tls_runs_over_the_in_memory_network() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let tls = |role, name| {
        let issued = ca.issue(role, name).expect("issue");
        Tls::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).expect("load")
    };
    let network = MemNetwork::new(2);
    let (server, counters) = start_on(&network, Security::Tls(tls(Role::Member, "m1"))).await;
    let member = client_on(network.host(ip(CALLER)), Security::Tls(tls(Role::Member, "m2")));
    let answer = member.call(SERVER_ADDR, &Ask::WhoAmI, DEADLINE).await.expect("an answer");
    assert_eq!(answer, Said::Caller(Some(Role::Member)));
    // A plain caller is told, in plain, that the port needs TLS.
    let plain = client_on(network.host(ip(CALLER)), Security::Plain);
    let e = echo_on(&plain, DEADLINE).await.expect_err("refused");
    assert!(
        matches!(&e, RpcError::Refused { error: cluster_core::Error::Forbidden(m), .. } if m.contains("TLS")),
        "{e:?}"
    );
    assert_eq!(counters.started.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_takes_at_least_the_links_delays() {
    let network = MemNetwork::new(3);
    let delay = Duration::from_millis(100);
    network.set_default_link(Link { delay, ..Link::default() });
    let (server, _) = start_on(&network, Security::Plain).await;
    let c = client_on(network.host(ip(CALLER)), Security::Plain);
    // Connecting is a round trip, then the request and its answer.
    let started = Instant::now();
    echo_on(&c, DEADLINE).await.expect("an answer");
    let first = started.elapsed();
    assert!(first >= 4 * delay, "{first:?}");
    // On the open connection: the request and its answer only.
    let started = Instant::now();
    echo_on(&c, DEADLINE).await.expect("an answer");
    let second = started.elapsed();
    assert!(second >= 2 * delay && second < first, "{second:?} after {first:?}");
    // One slower direction counts once.
    network.set_link(ip(SERVER), ip(CALLER), Link { delay: 5 * delay, ..Link::default() });
    let started = Instant::now();
    echo_on(&c, DEADLINE).await.expect("an answer");
    assert!(started.elapsed() >= 6 * delay, "{:?}", started.elapsed());
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_fails_calls_within_their_deadline_and_healing_restores_them() {
    let network = MemNetwork::new(4);
    let (server, _) = start_on(&network, Security::Plain).await;
    let c = client_on(network.host(ip(CALLER)), Security::Plain);
    echo_on(&c, DEADLINE).await.expect("an answer");

    network.partition(ip(SERVER), ip(CALLER));
    // On the open connection: the request stalls, the deadline ends the call.
    let started = Instant::now();
    let e = echo_on(&c, CALL).await.expect_err("partitioned");
    assert!(matches!(e, RpcError::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() <= CALL + Duration::from_millis(100), "{:?}", started.elapsed());
    // A new connection cannot be made: the connect deadline ends it.
    let fresh = client_on(network.host(ip(CALLER)), Security::Plain);
    let e = echo_on(&fresh, DEADLINE).await.expect_err("partitioned");
    assert!(
        matches!(&e, RpcError::Connect { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
        "{e:?}"
    );
    // Another host still reaches the server.
    let other = client_on(network.host(ip([10, 0, 0, 3])), Security::Plain);
    echo_on(&other, CALL).await.expect("another host is not partitioned");

    network.heal(ip(SERVER), ip(CALLER));
    for c in [&c, &fresh] {
        wait_until(DEADLINE, "calls pass after healing", || async { echo_on(c, CALL).await.is_ok() }).await;
    }
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_one_way_cut_lets_requests_in_and_keeps_answers_out() {
    let network = MemNetwork::new(5);
    let (server, counters) = start_on(&network, Security::Plain).await;
    let c = client_on(network.host(ip(CALLER)), Security::Plain);
    echo_on(&c, DEADLINE).await.expect("an answer");

    // Answers cannot come back: the request is served, the call times out.
    network.cut(ip(SERVER), ip(CALLER));
    assert!(network.is_cut(ip(SERVER), ip(CALLER)) && !network.is_cut(ip(CALLER), ip(SERVER)));
    let e = echo_on(&c, CALL).await.expect_err("no answer comes back");
    assert!(matches!(e, RpcError::Timeout { .. }), "{e:?}");
    assert_eq!(counters.started.load(Ordering::SeqCst), 2, "the request reached the server");

    // The other way: the request stalls and never reaches the server.
    network.heal_all();
    network.cut(ip(CALLER), ip(SERVER));
    let e = echo_on(&c, CALL).await.expect_err("the request cannot go out");
    assert!(matches!(e, RpcError::Timeout { .. }), "{e:?}");
    assert_eq!(counters.started.load(Ordering::SeqCst), 2, "no request reached the server");

    network.heal_all();
    wait_until(DEADLINE, "calls pass after healing", || async { echo_on(&c, CALL).await.is_ok() }).await;
    server.shutdown().await;
}

/// The outcome of each of `n` connects over a link that loses half its packets.
async fn connect_outcomes(seed: u64, n: usize) -> Vec<bool> {
    let network = MemNetwork::new(seed);
    network.set_link(ip(CALLER), ip(SERVER), Link { loss: 0.5, ..Link::default() });
    let _listener = network.host(ip(SERVER)).bind(SERVER_ADDR.parse().unwrap()).await.expect("bind");
    let caller = network.host(ip(CALLER));
    let mut outcomes = Vec::with_capacity(n);
    for _ in 0..n {
        outcomes.push(caller.connect(SERVER_ADDR).await.is_ok());
    }
    outcomes
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_losses() {
    let first = connect_outcomes(42, 64).await;
    assert_eq!(first, connect_outcomes(42, 64).await, "the same seed replays");
    assert!(first.contains(&true) && first.contains(&false), "{first:?}");
    assert_ne!(first, connect_outcomes(43, 64).await, "another seed, other losses");
}

#[tokio::test(start_paused = true)]
async fn bytes_keep_their_order_through_jitter_and_retransmissions() {
    let network = MemNetwork::new(6);
    let link = Link {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(50),
        loss: 0.2,
        retransmit: Duration::from_millis(30),
    };
    let mut listener = network.host(ip(SERVER)).bind("0.0.0.0:0".parse().unwrap()).await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    assert_eq!(addr.ip(), ip(SERVER), "the host's own address");
    let mut out = network.host(ip(CALLER)).connect(&addr.to_string()).await.expect("connect");
    let (mut inn, peer) = listener.accept().await.expect("accept");
    assert_eq!(peer.ip(), ip(CALLER));
    // Lossy from now on (a connect could be lost).
    network.set_default_link(link);
    let writer = tokio::spawn(async move {
        for i in 0..2_000u32 {
            out.write_all(&i.to_be_bytes()).await.expect("write");
        }
        out.shutdown().await.expect("shutdown");
    });
    let mut got = Vec::new();
    inn.read_to_end(&mut got).await.expect("read");
    let numbers: Vec<u32> = got.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
    assert_eq!(numbers, (0..2_000).collect::<Vec<_>>());
    writer.await.expect("the writer");
}

#[tokio::test(start_paused = true)]
async fn an_isolated_host_reaches_nobody_until_healed() {
    let network = MemNetwork::new(7);
    let (server, _) = start_on(&network, Security::Plain).await;
    let callers: Vec<Client<Ask, Said>> =
        (2..5).map(|n| client_on(network.host(ip([10, 0, 0, n])), Security::Plain)).collect();
    for c in &callers {
        echo_on(c, DEADLINE).await.expect("an answer");
    }
    network.isolate(ip(SERVER));
    for c in &callers {
        let e = echo_on(c, CALL).await.expect_err("isolated");
        assert!(matches!(e, RpcError::Timeout { .. }), "{e:?}");
    }
    network.heal_all();
    for c in &callers {
        wait_until(DEADLINE, "calls pass after healing", || async { echo_on(c, CALL).await.is_ok() }).await;
    }
    server.shutdown().await;
}
