//! Each step of the start on its own, with the kit's fakes where a backend
//! is needed (paused time where a step waits).

use std::net::{IpAddr, Ipv4Addr};

use cluster_core::testsuite::config::consensus_config;
use cluster_core::testsuite::fakes::{FakeMembership, FakeStore};
use cluster_core::{ConsensusStore, MemberInfo};

use super::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn fake_store() -> FakeStore {
    FakeStore::open(consensus_config("fake", "127.0.0.1:1", None)).await.expect("a fake store")
}

#[test]
fn resolving_parses_the_hosts_and_refuses_a_bad_one() {
    let config = ClusterConfig { advertise_host: Some("10.0.0.7".into()), ..ClusterConfig::default() };
    let (_, host, advertised) = resolve(config).expect("resolved");
    assert_eq!((host, advertised), (LOOPBACK, "10.0.0.7".parse::<IpAddr>().unwrap()));
    let bad = ClusterConfig { host: "not-an-address".into(), ..ClusterConfig::default() };
    assert!(matches!(resolve(bad), Err(ClusterError::Start { stage: "config", .. })));
}

#[tokio::test]
async fn binding_holds_every_port_and_advertises_the_ones_picked() {
    let config = ClusterConfig { http_port: Some(0), ..ClusterConfig::default() };
    let advertised: IpAddr = "10.0.0.7".parse().unwrap();
    let ports = bind_ports(LOOPBACK, advertised, &config).await.expect("bound");
    assert_eq!(ports.service_addr, SocketAddr::new(advertised, ports.service.local_addr().unwrap().port()));
    let grid = ports.grid_listener.as_ref().expect("a picked grid port is held");
    assert_eq!(grid.local_addr().unwrap().port(), ports.grid_port);
    let (http, http_addr) = ports.http.as_ref().expect("the HTTP port is on");
    assert_eq!(http_addr.port(), http.local_addr().unwrap().port());
    // A port held by this member is refused to the next one.
    let taken = ClusterConfig { service_port: ports.service_addr.port(), ..ClusterConfig::default() };
    let again = bind_ports(LOOPBACK, advertised, &taken).await;
    assert!(matches!(again, Err(ClusterError::Start { stage: "service", .. })));
}

#[tokio::test]
async fn the_first_member_forms_raft_and_a_joiner_or_a_known_member_does_not() {
    let first = fake_store().await;
    assert!(find_or_form_raft(&first, &[]).await.expect("formed"));
    assert!(first.status().is_leader());
    // Already part of a cluster: nothing to form.
    assert!(!find_or_form_raft(&first, &[]).await.expect("known"));
    // A joiner waits for the leader to add it.
    let joiner = fake_store().await;
    assert!(!find_or_form_raft(&joiner, &["127.0.0.1:7946".to_owned()]).await.expect("joining"));
    assert!(!joiner.is_initialized().await.unwrap() && joiner.status().leader.is_none());
}

#[tokio::test]
async fn joining_gossip_announces_the_record_with_the_real_gossip_port() {
    let store = fake_store().await;
    find_or_form_raft(&store, &[]).await.expect("formed");
    let config = ClusterConfig { cluster_id: "fake".into(), ..ClusterConfig::default() };
    let service: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let membership: FakeMembership =
        join_gossip(&config, &store, LOOPBACK, LOOPBACK, (service, 5701)).await.expect("joined");
    let me = membership.members().into_iter().find(|m| m.id == store.member_id()).expect("itself");
    let info = MemberInfo::from_tags(me.id, &me.tags).expect("a record in the tags");
    assert_eq!(info.gossip_port, membership.gossip_addr().port(), "port 0 was replaced by the real one");
    assert_eq!((info.service_port, info.grid_port), (7001, 5701));
    assert_eq!(info.raft_role, RaftRole::Leader, "the member that formed raft leads it");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_short_id_returns_it_or_says_what_is_missing() {
    let store = fake_store().await;
    let config = ClusterConfig { cluster_id: "fake".into(), ..ClusterConfig::default() };
    let membership: FakeMembership =
        join_gossip(&config, &store, LOOPBACK, LOOPBACK, ("127.0.0.1:1".parse().unwrap(), 1))
            .await
            .expect("joined");
    let (tx, rx) = watch::channel(None);
    // Nobody leads: the timeout says so.
    let waited = Duration::from_secs(5);
    match wait_for_short_id(&store, &membership, rx.clone(), waited).await {
        Err(ClusterError::StartTimeout { detail, .. }) => assert!(detail.contains("no leader"), "{detail}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Housekeeping reports the id: the wait ends with it.
    let id = ShortId::new(3).unwrap();
    tx.send_replace(Some(id));
    assert_eq!(wait_for_short_id(&store, &membership, rx, waited).await.expect("held"), id);
}
