//! Raft over mutual TLS: members replicate with member certificates handed
//! down through `ConsensusBackend::open_with`; a client certificate is refused
//! on the raft port.

use std::future::ready;
use std::time::Duration;

use cluster_consensus::RaftStore;
use cluster_consensus::testsuite::{RaftRequest, RaftRpc, RaftRpcReply};
use cluster_core::{ConsensusBackend, ConsensusStore, ConsensusStoreExt, Error};
use cluster_rpc::tls::generate::CertificateAuthority;
use cluster_rpc::{Client, ClientConfig, Role, RpcError, Security, Settings, Tls};
use cluster_testkit::{DEADLINE, member_config as config, wait_until};

fn tls(ca: &CertificateAuthority, role: Role, name: &str) -> Tls {
    let issued = ca.issue(role, name).expect("issue");
    Tls::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).expect("load")
}

async fn open(ca: &CertificateAuthority, name: &str) -> RaftStore {
    let network = Settings { security: Security::Tls(tls(ca, Role::Member, name)), ..Settings::default() };
    RaftStore::open_with(config(None), network).await.expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_replicate_over_tls_and_a_client_certificate_is_refused() {
    cluster_testkit::init_tracing();
    let ca = CertificateAuthority::generate("test-cluster").expect("ca");
    let first = open(&ca, "m1").await;
    first.bootstrap().await.expect("bootstrap");
    let second = open(&ca, "m2").await;
    wait_until(DEADLINE, "a leader", || ready(first.status().is_leader())).await;
    first.add_nonvoter(second.member_id(), second.endpoints().clone()).await.expect("add over TLS");
    first.promote(second.member_id()).await.expect("promote");
    assert!(first.set("over-tls", vec![7]).await.expect("write"));
    let index = first.applied_index();
    wait_until(DEADLINE, "the second member to apply", || ready(second.applied_index() >= index)).await;
    assert_eq!(second.get("over-tls").expect("read"), Some(vec![7]));

    // A client certificate of the same CA: refused on the raft port, clearly.
    let client: Client<RaftRequest, RaftRpcReply> = Client::new(ClientConfig {
        cluster_id: "test-cluster".into(),
        security: Security::Tls(tls(&ca, Role::Client, "c1")),
        ..ClientConfig::default()
    });
    let r = client
        .call(
            &second.raft_addr().to_string(),
            &RaftRequest { to: second.member_id(), rpc: RaftRpc::AppliedIndex },
            DEADLINE,
        )
        .await;
    assert!(matches!(r, Err(RpcError::Refused { error: Error::Forbidden(_), .. })), "{r:?}");
    // Plain TCP: refused too.
    let plain: Client<RaftRequest, RaftRpcReply> =
        Client::new(ClientConfig { cluster_id: "test-cluster".into(), ..ClientConfig::default() });
    let r = plain
        .call(
            &second.raft_addr().to_string(),
            &RaftRequest { to: second.member_id(), rpc: RaftRpc::AppliedIndex },
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(r, Err(RpcError::Refused { error: Error::Forbidden(_), .. })), "{r:?}");

    second.shutdown().await.expect("shutdown");
    first.shutdown().await.expect("shutdown");
}
