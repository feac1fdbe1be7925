//! A short run of the service fuzz (the long one is `examples/service_fuzz.rs`):
//! random and mutated frames never panic the server, and it serves after.

use std::time::Duration;

use cluster_core::testsuite::fuzz::{count_panics, panics};
use cluster_service::{RouterOptions, ServerConfig, ServiceClient, ServiceServer};
use cluster_testkit::testsuite::fakes::{FAKE_CLUSTER_ID as CLUSTER, FakeCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_never_panic_the_service() {
    count_panics();
    let cluster = FakeCluster::new(1);
    cluster.set_leader(Some(0));
    let server =
        ServiceServer::bind("127.0.0.1:0", cluster.member(0), ServerConfig::new(CLUSTER)).await.unwrap();
    cluster.set_service_addr(0, server.local_addr());
    let report = cluster_testkit::fuzz::service::feed(server.local_addr(), CLUSTER, 7, 2_000, 2_000).await;
    assert_eq!((report.random, report.mutated), (2_000, 2_000));
    // Mutated frames whose header still reads are answered, one by one.
    assert!(report.answered > 500, "{report:?}");
    assert_eq!(panics(), 0, "{report:?}");

    // It still serves, and nothing reserved was written by the garbage.
    let mut options = RouterOptions::new(CLUSTER);
    options.op_timeout = Duration::from_secs(30);
    let client = ServiceClient::new([server.local_addr().to_string()], options).unwrap();
    client.set("after", "fuzz").await.unwrap();
    assert_eq!(client.get("after").await.unwrap(), Some(b"fuzz".to_vec()));
    let reserved = client.get_prefix(cluster_core::keys::RESERVED_PREFIX).await.unwrap();
    assert!(reserved.is_empty(), "{reserved:?}");
    server.shutdown().await;
}
