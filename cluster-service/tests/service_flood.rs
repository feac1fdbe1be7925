//! A row of the table on the service port: 1,100 idle connections
//! from another host to the leader's service port, while writes and
//! consistent reads through every member keep working (the followers forward
//! to that same port from 127.0.0.1, whose place the flood cannot take).

use std::time::Duration;

use cluster_core::testsuite::net::{held_open, idle_connections};
use cluster_testkit::{LocalCluster, init_tracing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_leaders_service_port_do_not_stop_forwarding() {
    init_tracing();
    let cluster = LocalCluster::start(3, 0).await;
    let leader = &cluster.members[cluster.leader_index().await];
    let addr: std::net::SocketAddr = leader.service_addr.parse().expect("an address");
    let mut flood = idle_connections([127, 0, 0, 2], addr, 1100).await.expect("connect");
    let held = held_open(&mut flood, Duration::from_secs(3)).await;
    assert!(held <= 256, "{held} connections held from one address");
    for (i, m) in cluster.members.iter().enumerate() {
        let key = format!("k{i}");
        assert!(m.proxy.set(&key, "v").await.expect("a write through every member"));
        assert_eq!(m.proxy.consistent_get(&key).await.expect("a consistent read"), Some(b"v".to_vec()));
        assert!(m.client().set(&format!("c{i}"), "v").await.expect("a client write through every member"));
    }
    drop(flood);
    cluster.shutdown().await;
}
