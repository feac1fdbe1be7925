//! The server authorizes every request by the caller's certificate role,
//! whatever the client library would send: raw requests for the cluster's
//! reserved keys and short ids, over plain TCP and over mutual TLS.

use std::sync::Arc;
use std::time::Duration;

use cluster_core::{ConsensusStore, Error, MemberId, WriteOp, WriteOutcome, WriteRequest, keys};
use cluster_rpc::tls::generate::CertificateAuthority;
use cluster_rpc::{Client, ClientConfig, Role, Security, Tls};
use cluster_service::{Request, Response, ServerConfig, ServiceServer};
use cluster_testkit::testsuite::fakes::{FAKE_CLUSTER_ID as CLUSTER, FakeCluster};

const LONG: Duration = Duration::from_secs(30);

fn tls(ca: &CertificateAuthority, role: Role) -> Security {
    let c = ca.issue(role, "t").unwrap();
    Security::Tls(Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap())
}

async fn server(security: Security) -> (FakeCluster, ServiceServer) {
    let cluster = FakeCluster::new(1);
    cluster.set_leader(Some(0));
    let config = ServerConfig { security, ..ServerConfig::new(CLUSTER) };
    let server = ServiceServer::bind("127.0.0.1:0", cluster.member(0), config).await.unwrap();
    (cluster, server)
}

fn raw_client(security: Security) -> Client<Request, Response> {
    Client::new(ClientConfig { cluster_id: CLUSTER.into(), security, ..ClientConfig::default() })
}

fn reserved_requests() -> Vec<Request> {
    let live = MemberId::generate();
    let write = |op| Request::Write(WriteRequest::new(op));
    vec![
        write(WriteOp::Set { key: keys::member_key(MemberId::generate()), value: vec![1] }),
        write(WriteOp::Set { key: keys::LEADER_KEY.into(), value: b"x".to_vec() }),
        write(WriteOp::Set { key: keys::voter_key(MemberId::generate()), value: vec![] }),
        write(WriteOp::ReleaseShortId { member: live }),
        write(WriteOp::AllocateShortId { member: MemberId::generate() }),
    ]
}

async fn ask(client: &Client<Request, Response>, server: &ServiceServer, request: &Request) -> Response {
    client.call(&server.local_addr().to_string(), request, LONG).await.expect("an answer")
}

#[tokio::test]
async fn over_plain_tcp_nobody_writes_the_clusters_records() {
    let (cluster, server) = server(Security::Plain).await;
    let client = raw_client(Security::Plain);
    for request in reserved_requests() {
        let answer = ask(&client, &server, &request).await;
        assert!(matches!(answer, Response::Err(Error::Forbidden(_))), "{request:?} -> {answer:?}");
    }
    // Nothing reached the store, and users' keys still work on the same connection.
    assert!(cluster.member(0).get_prefix(keys::RESERVED_PREFIX).unwrap().is_empty());
    assert!(cluster.member(0).short_ids().unwrap().is_empty());
    let user = Request::Write(WriteRequest::new(WriteOp::Set { key: "user/a".into(), value: vec![1] }));
    assert!(matches!(ask(&client, &server, &user).await, Response::Written(WriteOutcome::Set { .. })));
    let empty = Request::Write(WriteRequest::new(WriteOp::Set { key: String::new(), value: vec![1] }));
    assert!(matches!(ask(&client, &server, &empty).await, Response::Err(Error::BadRequest(_))));
    server.shutdown().await;
}

#[tokio::test]
async fn with_tls_only_member_certificates_write_the_clusters_records() {
    let ca = CertificateAuthority::generate(CLUSTER).unwrap();
    let (cluster, server) = server(tls(&ca, Role::Member)).await;
    let as_client = raw_client(tls(&ca, Role::Client));
    let as_member = raw_client(tls(&ca, Role::Member));
    for request in reserved_requests() {
        let answer = ask(&as_client, &server, &request).await;
        assert!(matches!(answer, Response::Err(Error::Forbidden(_))), "{request:?} -> {answer:?}");
    }
    assert!(cluster.member(0).get_prefix(keys::RESERVED_PREFIX).unwrap().is_empty());
    let force = Request::ForceLeave { member: MemberId::generate() };
    assert!(matches!(ask(&as_client, &server, &force).await, Response::Err(Error::Forbidden(_))));
    for request in reserved_requests() {
        let answer = ask(&as_member, &server, &request).await;
        assert!(!matches!(answer, Response::Err(Error::Forbidden(_))), "{request:?} -> {answer:?}");
    }
    assert!(!cluster.member(0).get_prefix(keys::RESERVED_PREFIX).unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn reads_stay_open_to_clients() {
    let ca = CertificateAuthority::generate(CLUSTER).unwrap();
    let (_cluster, server) = server(tls(&ca, Role::Member)).await;
    let as_client = raw_client(tls(&ca, Role::Client));
    let members = ask(&as_client, &server, &Request::Members).await;
    assert!(matches!(members, Response::Members(_)), "{members:?}");
    let prefix = ask(&as_client, &server, &Request::GetPrefix { prefix: keys::RESERVED_PREFIX.into() }).await;
    assert!(matches!(prefix, Response::Entries(_)), "{prefix:?}");
    server.shutdown().await;
}

/// A keyring in memory: the primary first.
#[derive(Debug, Default)]
struct FakeRing(std::sync::Mutex<Vec<[u8; 32]>>);

impl cluster_core::KeyringControl for FakeRing {
    fn list(&self) -> cluster_core::KeyringState {
        cluster_core::KeyringState { keys: self.0.lock().unwrap().clone(), changed: false }
    }

    fn apply(&self, change: cluster_core::KeyringChange) -> cluster_core::Result<cluster_core::KeyringState> {
        let mut ring = self.0.lock().unwrap();
        let key = *change.key();
        let changed = match change {
            cluster_core::KeyringChange::Install(_) if !ring.contains(&key) => {
                ring.push(key);
                true
            }
            cluster_core::KeyringChange::Remove(_) if ring.first() == Some(&key) => {
                return Err(Error::BadRequest("the primary key cannot be removed".into()));
            }
            cluster_core::KeyringChange::Remove(_) => {
                let before = ring.len();
                ring.retain(|k| *k != key);
                ring.len() != before
            }
            _ => false,
        };
        Ok(cluster_core::KeyringState { keys: ring.clone(), changed })
    }
}

/// A member's admin surface with only a keyring.
#[derive(Debug)]
struct RingAdmin(Arc<FakeRing>);

impl cluster_core::MemberAdmin for RingAdmin {
    fn liveness(&self) -> std::collections::BTreeMap<cluster_core::MemberId, cluster_core::Liveness> {
        Default::default()
    }

    fn keyring(&self) -> Option<&dyn cluster_core::KeyringControl> {
        Some(&*self.0)
    }
}

async fn keyed_server(security: Security, ring: Option<Arc<FakeRing>>) -> ServiceServer {
    let cluster = FakeCluster::new(1);
    cluster.set_leader(Some(0));
    let admin = ring.map(|r| Arc::new(RingAdmin(r)) as Arc<dyn cluster_core::MemberAdmin>);
    let config = ServerConfig { security, admin, ..ServerConfig::new(CLUSTER) };
    ServiceServer::bind("127.0.0.1:0", cluster.member(0), config).await.unwrap()
}

#[tokio::test]
async fn gossip_keys_go_to_member_certificates_only_and_never_over_plain_tcp() {
    use cluster_core::KeyringChange;
    let ring = Arc::new(FakeRing(std::sync::Mutex::new(vec![[1; 32]])));
    let install = Request::KeyringChange(KeyringChange::Install([2; 32]));

    // Over plain TCP a keyring request is refused even where a keyring exists.
    let plain = keyed_server(Security::Plain, Some(ring.clone())).await;
    for request in [Request::KeyringList, install.clone()] {
        let answer = ask(&raw_client(Security::Plain), &plain, &request).await;
        assert!(matches!(answer, Response::Err(Error::Forbidden(_))), "{request:?} -> {answer:?}");
    }
    plain.shutdown().await;

    // With TLS: a client certificate is refused, a member certificate is served.
    let ca = CertificateAuthority::generate(CLUSTER).unwrap();
    let server = keyed_server(tls(&ca, Role::Member), Some(ring.clone())).await;
    let as_client = raw_client(tls(&ca, Role::Client));
    let as_member = raw_client(tls(&ca, Role::Member));
    for request in [Request::KeyringList, install.clone()] {
        let answer = ask(&as_client, &server, &request).await;
        assert!(matches!(answer, Response::Err(Error::Forbidden(_))), "{request:?} -> {answer:?}");
    }
    assert_eq!(ring.0.lock().unwrap().len(), 1, "a refused install changed nothing");
    let answer = ask(&as_member, &server, &install).await;
    assert!(
        matches!(&answer, Response::Keyring(s) if s.changed && s.keys == vec![[1; 32], [2; 32]]),
        "{answer:?}"
    );
    let primary = ask(&as_member, &server, &Request::KeyringChange(KeyringChange::Remove([1; 32]))).await;
    assert!(matches!(primary, Response::Err(Error::BadRequest(_))), "{primary:?}");
    server.shutdown().await;

    // A member whose gossip is not encrypted says so.
    let unkeyed = keyed_server(tls(&ca, Role::Member), None).await;
    let answer = ask(&as_member, &unkeyed, &Request::KeyringList).await;
    assert!(
        matches!(&answer, Response::Err(Error::BadRequest(m)) if m.contains("--gossip-key")),
        "{answer:?}"
    );
    unkeyed.shutdown().await;
}
