//! The server and the client against fake stores: every request kind, bad
//! input, concurrency on one connection, following the leader, idempotent
//! retries, the slow-reader bound, shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use cluster_core::wire::{Frame, WireCodec};
use cluster_core::{ConsensusStore, Error, MemberId, MemberInfo, WriteOp, WriteOutcome, WriteRequest, keys};
use cluster_service::protocol::{CONNECTION_ERROR_ID, ClientCodec};
use cluster_service::{
    Backoff, Request, Response, RouterOptions, ServerConfig, ServiceClient, ServiceServer,
};
use cluster_testkit::testsuite::fakes::{FAKE_CLUSTER_ID as CLUSTER, FakeCluster, FakeStore};
use cluster_testkit::wait_until;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, Framed};

const LONG: Duration = Duration::from_secs(30);

async fn start(store: Arc<FakeStore>) -> ServiceServer {
    ServiceServer::bind("127.0.0.1:0", store, ServerConfig::new(CLUSTER)).await.unwrap()
}

fn options() -> RouterOptions {
    let mut o = RouterOptions::new(CLUSTER);
    o.op_timeout = LONG;
    o.backoff = Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(50), multiplier: 2 };
    o
}

fn client(server: &ServiceServer) -> ServiceClient {
    ServiceClient::new([server.local_addr().to_string()], options()).unwrap()
}

/// A raw connection speaking the protocol, for bad-input tests.
async fn raw(server: &ServiceServer) -> Framed<TcpStream, ClientCodec> {
    Framed::new(TcpStream::connect(server.local_addr()).await.unwrap(), ClientCodec::new(CLUSTER, 1 << 20))
}

async fn next_answer(conn: &mut Framed<TcpStream, ClientCodec>) -> Frame<Response> {
    tokio::time::timeout(LONG, conn.next()).await.expect("an answer in time").expect("open").unwrap().unwrap()
}

/// Reads until the server closes the connection; returns every answer.
async fn answers_until_closed(stream: &mut TcpStream) -> Vec<Frame<Response>> {
    let mut buf = Vec::new();
    tokio::time::timeout(LONG, stream.read_to_end(&mut buf)).await.expect("closed in time").unwrap();
    let mut codec = ClientCodec::new(CLUSTER, 1 << 20);
    let mut bytes = BytesMut::from(&buf[..]);
    let mut out = Vec::new();
    while let Some(item) = codec.decode(&mut bytes).unwrap() {
        out.push(item.unwrap());
    }
    out
}

/// A second connection is still served.
async fn still_serves(server: &ServiceServer) {
    let c = client(server);
    c.set("still", "ok").await.unwrap();
    assert_eq!(c.get("still").await.unwrap(), Some(b"ok".to_vec()));
}

#[tokio::test]
async fn every_request_kind_roundtrips() {
    cluster_testkit::init_tracing();
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    cluster.set_service_addr(0, server.local_addr());
    let c = client(&server);

    assert!(c.set("a/1", "one").await.unwrap());
    assert!(!c.set("a/1", "uno").await.unwrap());
    assert!(c.set("a/2", "two").await.unwrap());
    assert!(c.set("b", "bee").await.unwrap());
    assert_eq!(c.get("a/1").await.unwrap(), Some(b"uno".to_vec()));
    assert_eq!(c.consistent_get("b").await.unwrap(), Some(b"bee".to_vec()));
    assert_eq!(c.get("none").await.unwrap(), None);
    assert_eq!(
        c.get_prefix("a/").await.unwrap(),
        vec![("a/1".to_owned(), b"uno".to_vec()), ("a/2".to_owned(), b"two".to_vec())]
    );
    let cas = c.compare_and_set("b", Some(b"bee".to_vec()), Some(b"wasp".to_vec())).await.unwrap();
    assert!(cas.succeeded);
    let cas = c.compare_and_set("b", Some(b"bee".to_vec()), None).await.unwrap();
    assert_eq!((cas.succeeded, cas.current), (false, Some(b"wasp".to_vec())));
    assert!(c.delete("b").await.unwrap());
    assert!(!c.delete("b").await.unwrap());

    // Reserved keys are refused to users; the cluster writes them through the
    // leader's own store, and over plain TCP the server refuses them to anyone.
    assert!(matches!(c.set("carbon-grid/x", "no").await, Err(Error::Forbidden(_))));
    let info = MemberInfo::new(MemberId::generate(), "127.0.0.1", 1, 2, 3, 4);
    let op = WriteOp::Set { key: keys::member_key(info.member_id), value: info.to_bytes() };
    assert!(matches!(c.write(WriteRequest::new(op.clone())).await, Err(Error::Forbidden(_))));
    let leader = cluster.member(0);
    leader.write(WriteRequest::new(op)).await.unwrap();
    let garbage = WriteOp::Set { key: keys::member_key(MemberId::generate()), value: vec![1, 2, 3] };
    leader.write(WriteRequest::new(garbage)).await.unwrap();
    assert_eq!(c.members().await.unwrap(), vec![info]);
    let short = c.write(WriteRequest::new(WriteOp::AllocateShortId { member: leader.id })).await;
    assert!(matches!(short, Err(Error::Forbidden(_))), "{short:?}");
    let short = leader.write(WriteRequest::new(WriteOp::AllocateShortId { member: leader.id })).await;
    assert!(matches!(short, Ok(WriteOutcome::ShortId(_))));

    let status = c.status().await.unwrap();
    assert_eq!(status.leader, Some(cluster.member(0).id));
    assert!(status.is_leader());
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_is_answered_on_the_connection_id_then_closed() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let garbage = b"this is no frame of ours at all";
    s.write_all(&(garbage.len() as u32).to_be_bytes()).await.unwrap();
    s.write_all(garbage).await.unwrap();
    let answers = answers_until_closed(&mut s).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].request_id, CONNECTION_ERROR_ID);
    assert_eq!(answers[0].body, Response::Err(Error::BadMagic));
    still_serves(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_shorter_than_its_header_is_answered_then_closed() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(&[0, 0, 0, 3, b'C', b'G', b'C']).await.unwrap();
    let answers = answers_until_closed(&mut s).await;
    assert!(matches!(
        answers[..],
        [Frame { request_id: 0, body: Response::Err(Error::TruncatedFrame { .. }) }]
    ));
    still_serves(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_inside_a_frame_closes_quietly() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    // Announces 100 bytes, sends 10, then ends its side.
    s.write_all(&[0, 0, 0, 100]).await.unwrap();
    s.write_all(&[7; 10]).await.unwrap();
    s.shutdown().await.unwrap();
    let answers = answers_until_closed(&mut s).await;
    assert!(answers.is_empty(), "{answers:?}");
    still_serves(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_length_is_answered_then_closed() {
    let cluster = FakeCluster::new(1);
    let mut config = ServerConfig::new(CLUSTER);
    config.limits.max_frame_len = 1024;
    let server = ServiceServer::bind("127.0.0.1:0", cluster.member(0), config).await.unwrap();
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let answers = answers_until_closed(&mut s).await;
    assert!(
        matches!(
            answers[..],
            [Frame { request_id: 0, body: Response::Err(Error::FrameTooLarge { max: 1024, .. }) }]
        ),
        "{answers:?}"
    );
    still_serves(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_foreign_cluster_is_refused_and_the_connection_goes_on() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    let stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut foreign = Framed::new(stream, WireCodec::<Request, Response>::new("elsewhere", 1 << 20));
    foreign.send(Frame { request_id: 5, body: Request::Status }).await.unwrap();
    // The answer is framed under the sender's cluster id: ours is never shown.
    let answer = tokio::time::timeout(LONG, foreign.next()).await.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(answer.request_id, 5);
    assert_eq!(answer.body, Response::Err(Error::ClusterMismatch { found: "elsewhere".into() }));
    let stream = foreign.into_inner();
    let mut ours = Framed::new(stream, ClientCodec::new(CLUSTER, 1 << 20));
    ours.send(Frame { request_id: 6, body: Request::Get { key: "k".into() } }).await.unwrap();
    assert_eq!(next_answer(&mut ours).await, Frame { request_id: 6, body: Response::Value(None) });
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_request_kind_is_refused_and_the_connection_goes_on() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    // A good frame whose request variant is patched to one this build does not know.
    let mut buf = BytesMut::new();
    ClientCodec::new(CLUSTER, 1 << 20)
        .encode(Frame { request_id: 11, body: Request::Status }, &mut buf)
        .unwrap();
    let header = 4 + 4 + 2 + 8 + 1 + CLUSTER.len();
    assert_eq!(buf.len(), header + 1, "Status is a one-byte payload");
    buf[header] = 99;
    let mut conn = raw(&server).await;
    conn.get_mut().write_all(&buf).await.unwrap();
    let answer = next_answer(&mut conn).await;
    assert_eq!(answer.request_id, 11);
    assert!(matches!(answer.body, Response::Err(Error::Malformed(_))), "{answer:?}");
    conn.send(Frame { request_id: 12, body: Request::Get { key: "k".into() } }).await.unwrap();
    assert_eq!(next_answer(&mut conn).await.request_id, 12);
    server.shutdown().await;
}

#[tokio::test]
async fn one_connection_carries_many_concurrent_requests_answered_in_any_order() {
    let cluster = FakeCluster::new(1);
    cluster.shared().max_write_delay = Some(Duration::from_millis(20));
    let server = start(cluster.member(0)).await;
    let mut conn = raw(&server).await;
    let n = 64u64;
    for i in 1..=n {
        let op = WriteOp::Set { key: format!("k{i}"), value: i.to_le_bytes().to_vec() };
        conn.feed(Frame { request_id: i, body: Request::Write(WriteRequest::new(op)) }).await.unwrap();
    }
    conn.flush().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let a = next_answer(&mut conn).await;
        assert_eq!(a.body, Response::Written(WriteOutcome::Set { created: true }));
        ids.push(a.request_id);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=n).collect::<Vec<_>>());
    // The client shares one connection between concurrent callers.
    let c = client(&server);
    let calls = (1..=n).map(|i| {
        let c = c.clone();
        async move { c.consistent_get(&format!("k{i}")).await.map(|v| (i, v)) }
    });
    for r in futures::future::join_all(calls).await {
        let (i, v) = r.unwrap();
        assert_eq!(v, Some(i.to_le_bytes().to_vec()));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_follows_the_leader() {
    let cluster = FakeCluster::new(3);
    let mut servers = Vec::new();
    for i in 0..3 {
        let s = start(cluster.member(i)).await;
        cluster.set_service_addr(i, s.local_addr());
        servers.push(s);
    }
    cluster.set_leader(Some(2));
    // The client knows only member 0, a follower.
    let c = client(&servers[0]);
    assert!(c.set("x", "1").await.unwrap());
    assert_eq!(c.consistent_get("x").await.unwrap(), Some(b"1".to_vec()));
    cluster.set_leader(Some(1));
    assert!(!c.set("x", "2").await.unwrap());
    // No leader for a while: the write waits for one.
    cluster.set_leader(None);
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.set("y", "3").await }
    });
    wait_until(LONG, "the write to be refused", || {
        let refused: u64 = cluster.members.iter().map(|m| m.refusals.load(Ordering::SeqCst)).sum();
        async move { refused > 0 }
    })
    .await;
    cluster.set_leader(Some(0));
    assert!(pending.await.unwrap().unwrap());
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_reuses_the_request_id_and_gets_the_first_answer() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    cluster.shared().lose_answers = 2;
    let c = client(&server);
    // The first attempt creates the key; its answer (created) is what the caller sees.
    assert!(c.set("once", "v").await.unwrap());
    // A write sent as a raw request gets an id too.
    cluster.shared().lose_answers = 2;
    match c.request(Request::Write(WriteRequest::set("raw", "v"))).await.unwrap() {
        Response::Written(outcome) => assert!(outcome.into_created().unwrap()),
        other => panic!("a write answered with {other:?}"),
    }
    {
        let s = cluster.shared();
        assert_eq!(s.applied, 2);
        assert_eq!(s.arrivals.len(), 2, "one request id for all attempts of a write");
        assert_eq!(s.arrivals.values().copied().collect::<Vec<_>>(), vec![3, 3]);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_gives_up_at_its_deadline_when_nobody_answers() {
    // A port nobody listens on: bind, note it, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut o = options();
    o.op_timeout = Duration::from_millis(300);
    let c = ServiceClient::new([addr.to_string()], o).unwrap();
    let started = std::time::Instant::now();
    let r = c.get("k").await;
    assert!(matches!(r, Err(Error::Unreachable(_))), "{r:?}");
    assert!(started.elapsed() < LONG);
    assert!(ServiceClient::new(Vec::<String>::new(), options()).is_err());
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_make_the_server_grow() {
    let cluster = FakeCluster::new(1);
    let big = vec![7u8; 256 * 1024];
    cluster.shared().data.insert("big".into(), big.clone());
    let mut config = ServerConfig::new(CLUSTER);
    config.limits.max_in_flight_per_connection = 4;
    let store = cluster.member(0);
    let server = ServiceServer::bind("127.0.0.1:0", store.clone(), config).await.unwrap();

    // 400 small requests for a 256 KiB answer each (100 MiB of answers), never read.
    let n = 400u64;
    let mut conn = raw(&server).await;
    for i in 1..=n {
        conn.feed(Frame { request_id: i, body: Request::Get { key: "big".into() } }).await.unwrap();
    }
    conn.flush().await.unwrap();
    // The server reads requests only as fast as answers leave: it stalls once the
    // socket buffers are full, far below 400 answers.
    let mut last = u64::MAX;
    wait_until(LONG, "the server to stall", || {
        let now = store.gets.load(Ordering::SeqCst);
        let stalled = now == last && now > 0;
        last = now;
        async move {
            if !stalled {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            stalled
        }
    })
    .await;
    let served = store.gets.load(Ordering::SeqCst);
    assert!(served < n / 2, "{served} answers produced for a reader that reads nothing");
    // Other connections are served meanwhile.
    assert_eq!(client(&server).get("big").await.unwrap().map(|v| v.len()), Some(big.len()));
    // Once it reads, the answers come (the first ones are checked: decoding
    // 100 MiB in a debug build would only make the test slow).
    for _ in 0..20 {
        assert_eq!(next_answer(&mut conn).await.body, Response::Value(Some(big.clone())));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends_connections() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    let addr = server.local_addr();
    let mut conn = raw(&server).await;
    conn.send(Frame { request_id: 1, body: Request::Status }).await.unwrap();
    next_answer(&mut conn).await;
    tokio::time::timeout(LONG, server.shutdown()).await.expect("shutdown in time");
    // The open connection is ended…
    assert!(tokio::time::timeout(LONG, conn.next()).await.unwrap().is_none());
    // …and no new one is accepted.
    assert!(TcpStream::connect(addr).await.is_err());
    // A request too large for a frame fails alone, the client goes on.
    let mut small = ServerConfig::new(CLUSTER);
    small.limits.max_frame_len = 4096;
    let server = ServiceServer::bind("127.0.0.1:0", cluster.member(0), small).await.unwrap();
    let mut o = options();
    o.max_frame_len = 4096;
    let c = ServiceClient::new([server.local_addr().to_string()], o).unwrap();
    assert!(matches!(c.set("huge", vec![0u8; 8192]).await, Err(Error::FrameTooLarge { .. })));
    assert!(c.set("small", "ok").await.unwrap());
    server.shutdown().await;
}

#[tokio::test]
async fn an_answer_too_large_for_a_frame_is_an_error_and_the_connection_goes_on() {
    let cluster = FakeCluster::new(1);
    for i in 0..3 {
        cluster.shared().data.insert(format!("p/{i}"), vec![1; 2048]);
    }
    let mut config = ServerConfig::new(CLUSTER);
    config.limits.max_frame_len = 4096;
    let server = ServiceServer::bind("127.0.0.1:0", cluster.member(0), config).await.unwrap();
    let mut o = options();
    o.max_frame_len = 4096;
    let c = ServiceClient::new([server.local_addr().to_string()], o).unwrap();
    let r = c.get_prefix("p/").await;
    assert!(matches!(r, Err(Error::FrameTooLarge { max: 4096, .. })), "{r:?}");
    assert_eq!(c.get("p/1").await.unwrap().map(|v| v.len()), Some(2048));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_of_another_cluster_is_told_so_at_once() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    let mut o = options();
    o.cluster_id = "elsewhere".into();
    let c = ServiceClient::new([server.local_addr().to_string()], o).unwrap();
    let r = c.get("k").await;
    // A typed refusal, which does not name the server's cluster.
    assert!(matches!(r, Err(Error::ClusterMismatch { .. })), "{r:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_client_ends_its_connection() {
    let cluster = FakeCluster::new(1);
    let server = start(cluster.member(0)).await;
    // A relay that shows when the client's side of the connection closes.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = ServiceClient::new([relay.local_addr().unwrap().to_string()], options()).unwrap();
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.status().await }
    });
    let (mut from_client, _) = tokio::time::timeout(LONG, relay.accept()).await.unwrap().unwrap();
    let mut to_server = TcpStream::connect(server.local_addr()).await.unwrap();
    let relayed = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut from_client, &mut to_server).await;
    });
    assert!(pending.await.unwrap().is_ok());
    drop(c);
    // The relay ends once the client closed its side.
    tokio::time::timeout(LONG, relayed).await.expect("the client closed its connection").unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_a_freed_place_is_reused() {
    let cluster = FakeCluster::new(1);
    let mut config = ServerConfig::new(CLUSTER);
    config.limits.max_connections = 1;
    config.limits.max_client_connections = 1;
    let server = ServiceServer::bind("127.0.0.1:0", cluster.member(0), config).await.unwrap();
    let mut first = raw(&server).await;
    first.send(Frame { request_id: 1, body: Request::Status }).await.unwrap();
    next_answer(&mut first).await;
    // The second is closed at once, without an answer.
    let mut second = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(answers_until_closed(&mut second).await.is_empty());
    drop(first);
    // Once the first is gone, its place is free again.
    wait_until(LONG, "a new connection to be served", || async {
        let mut o = options();
        o.op_timeout = Duration::from_millis(200);
        let c = ServiceClient::new([server.local_addr().to_string()], o).unwrap();
        c.status().await.is_ok()
    })
    .await;
    server.shutdown().await;
}
