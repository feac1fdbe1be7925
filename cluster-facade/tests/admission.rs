//! Admission: a gossip member that holds the cluster's gossip key but not a
//! member certificate of its CA naming its member id (with TLS), or that advertises the raft or
//! service address of a member (plain TCP and TLS alike), never becomes a
//! raft member, a record or a short-id holder, however true its tags look.

mod common;

use std::collections::BTreeMap;
use std::future::ready;
use std::net::SocketAddr;
use std::time::Duration;

use cluster_facade::core::member::tag;
use cluster_facade::core::{GossipEncryption, MembershipConfig};
use cluster_facade::rpc::tls::generate::CertificateAuthority;
use cluster_facade::rpc::{Role, Security, Tls};
use cluster_facade::{Cluster, ClusterConfig, GossipKey, MemberId, MemberInfo, Membership};
use cluster_gossip::Gossip;
use common::*;

fn tls(ca: &CertificateAuthority, role: Role) -> Tls {
    let c = ca.issue(role, "t").unwrap();
    Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap()
}

/// A member certificate naming `member`, as `carbon tls init` and `tls issue` make them.
fn member_tls(ca: &CertificateAuthority, member: MemberId) -> Tls {
    let c = ca.issue_member(member, "t").unwrap();
    Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap()
}

/// A member with a certificate of its own (naming a fresh member id, which it runs as).
fn member_config(ca: &CertificateAuthority, key: &GossipKey, seeds: Vec<String>) -> ClusterConfig {
    let security = Security::Tls(member_tls(ca, MemberId::generate()));
    let mut c = ClusterConfig { security, ..config(seeds, 3) };
    c.gossip_keys.0 = vec![key.to_base64()];
    c
}

/// A TLS port that completes handshakes with `tls`'s certificate and holds the connections.
async fn tls_port(tls: Tls) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls.acceptor().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(stream) = acceptor.accept(tcp).await {
                held.push(stream);
            }
        }
    });
    (port, task)
}

/// A gossip member with the cluster's key whose tags name `raft_port` as its raft endpoint.
async fn impostor(key: &GossipKey, seed: &str, raft_port: u16, template: &ClusterConfig) -> Gossip {
    phantom(Some(key), seed, raft_port, raft_port, template).await
}

/// A raw gossip participant (with the cluster's gossip key, if it has one)
/// advertising a made-up member id at `raft_port` and `service_port`.
async fn phantom(
    key: Option<&GossipKey>,
    seed: &str,
    raft_port: u16,
    service_port: u16,
    template: &ClusterConfig,
) -> Gossip {
    let id = MemberId::generate();
    let info = MemberInfo::new(id, "127.0.0.1", 1, raft_port, service_port, raft_port);
    let gossip = <Gossip as Membership>::start(MembershipConfig {
        member_id: id,
        generation: 1,
        cluster_id: template.cluster_id.clone(),
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise_addr: None,
        seeds: vec![seed.to_owned()],
        gossip_interval: Duration::from_millis(template.gossip.interval_ms),
        failure_detection: template.gossip.failure_detection(),
        tags: info.to_tags(),
        encryption: GossipEncryption {
            keys: key.map(|k| vec![*k.as_bytes()]).unwrap_or_default(),
            keyring_file: None,
        },
    })
    .await
    .unwrap();
    // Its tags now name the address it gossips at, as a real member's do.
    let port = gossip.gossip_addr().port().to_string();
    Membership::set_tags(&gossip, BTreeMap::from([(tag::GOSSIP_PORT.to_owned(), port)])).await.unwrap();
    gossip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gossip_member_without_a_member_certificate_is_never_admitted() {
    init_tracing();
    let ca = CertificateAuthority::generate("facade-test").unwrap();
    let other = CertificateAuthority::generate("facade-test").unwrap();
    let key = GossipKey::generate();
    let first = Cluster::start(member_config(&ca, &key, vec![])).await.expect("starts");
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];

    // Three impostors with the gossip key: one's raft port shows a member
    // certificate of another CA, one's a member certificate of this CA that
    // names another member (stolen, or issued for someone else), and the
    // third's never speaks TLS.
    let (foreign_port, foreign_task) = tls_port(tls(&other, Role::Member)).await;
    let foreign = impostor(&key, &seed, foreign_port, members[0].config()).await;
    let (stolen_port, stolen_task) = tls_port(member_tls(&ca, MemberId::generate())).await;
    let stolen = impostor(&key, &seed, stolen_port, members[0].config()).await;
    let (plain_port, plain_task) = {
        // A port that accepts and never speaks TLS.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (
            port,
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((s, _)) = listener.accept().await {
                    held.push(s);
                }
            }),
        )
    };
    let silent = impostor(&key, &seed, plain_port, members[0].config()).await;
    let impostors =
        [Membership::member_id(&foreign), Membership::member_id(&stolen), Membership::member_id(&silent)];
    wait_until(DEADLINE, "the leader sees the impostors in gossip", || {
        ready({
            let live = members[0].live_members();
            impostors.iter().all(|id| live.iter().any(|m| m.member_id == *id))
        })
    })
    .await;

    // Real members join after them: the housekeeping that admits them has
    // seen the impostors too.
    for _ in 0..2 {
        members.push(Cluster::start(member_config(&ca, &key, vec![seed.clone()])).await.expect("joins"));
    }
    wait_until(DEADLINE, "three members vote and are recorded", || ready(settled(&members, 3, 0))).await;
    for m in &members {
        let status = m.consensus_status();
        let records = m.members().expect("records");
        for id in impostors {
            assert!(!status.all_members().contains(&id), "impostor {id} in raft");
            assert!(records.iter().all(|r| r.member_id != id), "impostor {id} recorded");
        }
    }
    for (i, m) in members.iter().enumerate() {
        assert_eq!(
            m.member_id().to_string(),
            {
                let Security::Tls(tls) = &m.config().security else { unreachable!("TLS members") };
                tls.identity().expect("its certificate names it").member_id.to_string()
            },
            "member {i} runs as the member id its certificate names"
        );
    }
    Membership::stop(&foreign).await.unwrap();
    Membership::stop(&stolen).await.unwrap();
    Membership::stop(&silent).await.unwrap();
    foreign_task.abort();
    stolen_task.abort();
    plain_task.abort();
    shutdown_all(members).await;
}

/// Two phantoms with the cluster's gossip key: one advertises m2's raft and
/// service addresses, the other m3's raft address only. The same process
/// answers there as m2 (m3): admitted, it would count twice in every quorum.
/// Neither is ever recorded, in raft, or given a short id; the members
/// joining after them are, and m2 and m3 keep their places.
async fn phantoms_with_duplicate_addresses_are_never_admitted(
    make_config: impl Fn(Vec<String>) -> ClusterConfig,
    key: Option<&GossipKey>,
) {
    let first = Cluster::start(make_config(vec![])).await.expect("starts");
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for _ in 0..2 {
        members.push(Cluster::start(make_config(vec![seed.clone()])).await.expect("joins"));
    }
    wait_until(DEADLINE, "three members vote and are recorded", || ready(settled(&members, 3, 0))).await;

    // A port of its own for the second phantom's service address, held so no one else gets it.
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (m2, m3) = (members[1].addresses(), members[2].addresses());
    let both = phantom(key, &seed, m2.raft.port(), m2.service.port(), members[0].config()).await;
    let raft_only =
        phantom(key, &seed, m3.raft.port(), own.local_addr().unwrap().port(), members[0].config()).await;
    let phantoms = [Membership::member_id(&both), Membership::member_id(&raft_only)];
    wait_until(DEADLINE, "every member sees both phantoms in gossip", || {
        ready(members.iter().all(|m| {
            let live = m.live_members();
            phantoms.iter().all(|id| live.iter().any(|l| l.member_id == *id))
        }))
    })
    .await;

    // A real member joins after them: the housekeeping that admits it has
    // seen the phantoms too.
    members.push(Cluster::start(make_config(vec![seed.clone()])).await.expect("joins"));
    wait_until(DEADLINE, "four members are recorded, three voting", || ready(settled(&members, 3, 1))).await;
    assert_eq!(members[3].short_id().get(), 4, "a phantom took a short id");
    // Followers apply the last records a moment after the leader.
    wait_until(DEADLINE, "every member applied the four records", || {
        ready(members.iter().all(|m| m.members().is_ok_and(|r| r.len() >= 4)))
    })
    .await;
    for m in &members {
        let status = m.consensus_status();
        let records = m.members().expect("records");
        assert_eq!(records.len(), 4, "records: {records:?}");
        for id in phantoms {
            assert!(!status.all_members().contains(&id), "phantom {id} in raft");
            assert!(records.iter().all(|r| r.member_id != id), "phantom {id} recorded");
        }
        for real in &members[1..3] {
            assert!(status.voters.contains_key(&real.member_id()), "{} lost its vote", real.member_id());
        }
    }
    Membership::stop(&both).await.unwrap();
    Membership::stop(&raft_only).await.unwrap();
    shutdown_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_a_phantom_with_a_members_address_is_never_admitted() {
    init_tracing();
    phantoms_with_duplicate_addresses_are_never_admitted(|seeds| config(seeds, 3), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_a_phantom_with_a_members_address_is_never_admitted() {
    init_tracing();
    let ca = CertificateAuthority::generate("facade-test").unwrap();
    let key = GossipKey::generate();
    phantoms_with_duplicate_addresses_are_never_admitted(|seeds| member_config(&ca, &key, seeds), Some(&key))
        .await;
}
