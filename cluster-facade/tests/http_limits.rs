//! The HTTP port lives inside `[limits]`: callers that trickle headers, hold
//! idle connections, open more than the caps allow or never finish a TLS
//! handshake are closed, and a client that plays by the rules is still
//! served meanwhile (issue 22, item 4). Raw sockets only: these are what an
//! attacker sends.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cluster_facade::rpc::tls::generate::CertificateAuthority;
use cluster_facade::rpc::{Role, Security, Tls};
use cluster_facade::{Cluster, ClusterConfig, HttpLimits};
use cluster_testkit::http::{LONG, closed_by_peer, request};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;

async fn member(limits: HttpLimits, security: Security) -> (Cluster, SocketAddr) {
    common::init_tracing();
    let mut config = ClusterConfig { http_port: Some(0), security, ..common::config(vec![], 1) };
    config.limits.http = limits;
    let member = Cluster::start(config).await.expect("the member starts");
    let http = member.addresses().http.expect("an http address");
    (member, http)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

async fn live(stream: &mut TcpStream) -> u16 {
    request(stream, "GET", "/health/live", b"").await.expect("an answer").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_closed_and_the_port_still_serves() {
    let limits = HttpLimits { http_header_timeout: Duration::from_secs(1), ..HttpLimits::default() };
    let (member, http) = member(limits, Security::Plain).await;

    // 50 callers each send half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(http).await.unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: m").await.unwrap();
        slow.push(s);
    }
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(closed_by_peer(s).await, "slow-header connection {i} is still open after {LONG:?}");
    }
    // An idle connection (no byte at all) is closed the same way.
    let mut idle = TcpStream::connect(http).await.unwrap();
    assert!(closed_by_peer(&mut idle).await, "an idle connection stays open");

    let mut fresh = TcpStream::connect(http).await.unwrap();
    assert_eq!(live(&mut fresh).await, 200);
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_caps_are_closed_while_an_established_client_is_served() {
    let limits = HttpLimits {
        http_max_connections: 12,
        http_max_connections_per_address: 4,
        http_header_timeout: Duration::from_secs(600),
        http_idle_timeout: Duration::from_secs(600),
        ..HttpLimits::default()
    };
    let (member, http) = member(limits, Security::Plain).await;
    let first: IpAddr = "127.0.0.1".parse().unwrap();

    // An operator's client, served before the flood.
    let mut operator = connect_from(first, http).await;
    assert_eq!(live(&mut operator).await, 200);

    // Per address: three more from the same address fill its four slots;
    // the fifth is closed without an answer.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(first, http).await);
    }
    let mut over = connect_from(first, http).await;
    assert!(closed_by_peer(&mut over).await, "a fifth connection from one address was kept");

    // In total: two more addresses fill the twelve slots; the next, from a
    // fourth address, is closed too.
    for from in ["127.0.0.2", "127.0.0.3"] {
        for _ in 0..4 {
            held.push(connect_from(from.parse().unwrap(), http).await);
        }
    }
    let mut over = connect_from("127.0.0.4".parse().unwrap(), http).await;
    assert!(closed_by_peer(&mut over).await, "a thirteenth connection was kept");

    // The established client is still served on its connection, and the
    // refusals are counted by the cap they met.
    assert_eq!(live(&mut operator).await, 200);
    let scrape = request(&mut operator, "GET", "/metrics", b"").await.unwrap();
    let text = String::from_utf8(scrape.body).unwrap();
    for line in [
        "carbon_http_connections_open 12",
        "carbon_http_connections_refused_total{cap=\"per_address\"} 1",
        "carbon_http_connections_refused_total{cap=\"total\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in {text}");
    }

    // Slots come back when connections end.
    drop(held);
    common::wait_until(LONG, "a slot for a new connection from a fourth address", || async {
        let mut s = connect_from("127.0.0.4".parse().unwrap(), http).await;
        request(&mut s, "GET", "/health/live", b"").await.is_ok_and(|a| a.status == 200)
    })
    .await;
    member.shutdown().await.unwrap();
}

fn issue(ca: &CertificateAuthority, role: Role) -> Tls {
    let c = ca.issue(role, "t").unwrap();
    Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap()
}

/// A TLS client that trusts the cluster's CA and presents no certificate,
/// as a Kubernetes probe does.
fn no_certificate(ca: &CertificateAuthority) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshakes_do_not_block_probes_and_only_health_answers_without_a_certificate() {
    let ca = CertificateAuthority::generate("http-limits").unwrap();
    let limits = HttpLimits {
        http_max_connections_per_address: 256,
        http_handshake_timeout: Duration::from_secs(2),
        ..HttpLimits::default()
    };
    let (member, http) = member(limits, Security::Tls(issue(&ca, Role::Member))).await;

    // 200 connections that never start their handshake: more than the
    // 64 handshakes the port used to run at once.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(http).await.unwrap());
    }

    // A probe without a certificate is served meanwhile, on both health routes.
    let probe = no_certificate(&ca);
    for route in ["/health/live", "/health/ready"] {
        let tcp = TcpStream::connect(http).await.unwrap();
        let mut tls = tokio::time::timeout(LONG, probe.connect(Tls::server_name(), tcp))
            .await
            .expect("the handshake finishes while 200 others idle")
            .expect("a caller without a certificate completes the handshake");
        let answer = request(&mut tls, "GET", route, b"").await.unwrap();
        assert!(matches!(answer.status, 200 | 503), "{route}: {answer:?}");
        assert!(answer.json().is_object(), "{answer:?}");
        // Every other route asks for a certificate, in JSON.
        let answer = request(&mut tls, "GET", "/v1/status", b"").await.unwrap();
        let message = answer.assert_json_error(403);
        assert!(message.contains("certificate"), "{message}");
    }

    // With a client certificate every route answers.
    let tcp = TcpStream::connect(http).await.unwrap();
    let mut tls = issue(&ca, Role::Client).connector().connect(Tls::server_name(), tcp).await.unwrap();
    assert_eq!(request(&mut tls, "GET", "/v1/status", b"").await.unwrap().status, 200);

    // The idle ones are closed at their handshake deadline.
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(closed_by_peer(s).await, "idle TLS connection {i} still open after {LONG:?}");
    }
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_closed_after_the_idle_timeout() {
    // One slot: while the greedy caller holds it, nobody else is served.
    let limits = HttpLimits {
        http_max_connections: 1,
        http_max_connections_per_address: 1,
        http_idle_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    };
    let (member, http) = member(limits, Security::Plain).await;
    member.store().set("big", vec![b'x'; 1024 * 1024]).await.unwrap();

    // Pipelines requests for a 1 MiB value and never reads an answer: the
    // member's writes block once the socket buffers are full.
    let mut greedy = TcpStream::connect(http).await.unwrap();
    for _ in 0..32 {
        greedy.write_all(b"GET /v1/kv/big?stale&raw HTTP/1.1\r\nHost: m\r\n\r\n").await.unwrap();
    }
    let mut refused = TcpStream::connect(http).await.unwrap();
    assert!(closed_by_peer(&mut refused).await, "the greedy caller does not hold the only slot");

    // The member cuts it and takes others again.
    common::wait_until(LONG, "the never-reading connection to be cut, freeing the slot", || async {
        let mut s = TcpStream::connect(http).await.unwrap();
        request(&mut s, "GET", "/health/live", b"").await.is_ok_and(|a| a.status == 200)
    })
    .await;
    drop(greedy);
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_408_in_json() {
    let limits = HttpLimits { http_request_timeout: Duration::from_secs(1), ..HttpLimits::default() };
    let (member, http) = member(limits, Security::Plain).await;
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(b"PUT /v1/kv/k HTTP/1.1\r\nHost: m\r\nContent-Length: 10\r\n\r\nhalf").await.unwrap();
    let answer = cluster_testkit::http::read_answer(&mut s).await.unwrap();
    let message = answer.assert_json_error(408);
    assert!(message.contains("http_request_timeout"), "{message}");
    assert_eq!(member.store().get("k").await.unwrap(), None, "a half body was stored");
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_heads_are_refused_and_the_member_serves_on() {
    let (member, http) = member(HttpLimits::default(), Security::Plain).await;
    let hostile: [Vec<u8>; 4] = [
        b"\x00\x01\x02 not http at all\r\n\r\n".to_vec(),
        b"GET /health/live HTTP/9.9\r\n\r\n".to_vec(),
        // A head far larger than hyper buffers: refused, never grown into.
        [b"GET /health/live HTTP/1.1\r\nX-Big: ".as_slice(), &vec![b'a'; 2 << 20], b"\r\n\r\n"].concat(),
        // A frame of the member's own RPC protocol, on the wrong port.
        [&[0, 0, 0, 64][..], &[0xCA; 64]].concat(),
    ];
    for (i, bytes) in hostile.iter().enumerate() {
        let mut s = TcpStream::connect(http).await.unwrap();
        // The member may close before all is written: that is the point.
        let _ = s.write_all(bytes).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(LONG, tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains(" 200 "), "hostile input {i} was served: {text}");
        assert!(closed_by_peer(&mut s).await, "hostile connection {i} stays open");
    }
    let mut fresh = TcpStream::connect(http).await.unwrap();
    assert_eq!(live(&mut fresh).await, 200);
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_outlives_the_idle_timeout_that_closes_an_idle_connection() {
    let limits = HttpLimits { http_idle_timeout: Duration::from_secs(1), ..HttpLimits::default() };
    let (member, http) = member(limits, Security::Plain).await;
    let mut watch = TcpStream::connect(http).await.unwrap();
    watch.write_all(b"GET /v1/watch/q/ HTTP/1.1\r\nHost: m\r\n\r\n").await.unwrap();
    let head = cluster_testkit::http::read_head(&mut watch).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // A connection opened after the watch, with no request, is closed once
    // the idle timeout passed: the watch has been quiet longer than that.
    let mut idle = TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: m\r\n\r\n").await.unwrap();
    let _ = cluster_testkit::http::read_answer(&mut idle).await.unwrap();
    assert!(closed_by_peer(&mut idle).await);

    member.store().set("q/1", b"late".to_vec()).await.unwrap();
    let mut lines = cluster_testkit::http::ChunkedLines::new();
    let line = lines.next(&mut watch).await.unwrap().expect("the quiet watch is still open");
    assert_eq!(line["key"], "q/1", "{line}");
    member.shutdown().await.unwrap();
}
