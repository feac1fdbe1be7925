//! Every task a member spawns ends on stop, leave and drop, and the socket is released.

use std::net::UdpSocket;

use cluster_gossip::{Gossip, GossipTransport};
use cluster_testkit::gossip::*;
use cluster_testkit::{DEADLINE, init_tracing, wait_until};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

async fn wait_tasks(baseline: usize) {
    wait_until(DEADLINE, "every spawned task ended", || async { alive_tasks() == baseline }).await;
}

#[tokio::test]
async fn stop_leave_and_drop_end_every_task() {
    init_tracing();
    let baseline = alive_tasks();
    let members = start_cluster(3, "shutdown", GossipTransport::Udp).await;
    assert!(alive_tasks() > baseline);
    wait_converged(&members.iter().collect::<Vec<_>>(), &members.iter().map(Gossip::member_id).collect())
        .await;
    let mut sub = members[0].subscribe();
    let [a, b, c]: [Gossip; 3] = members.try_into().unwrap_or_else(|_| unreachable!());
    let addr = a.gossip_addr();

    b.leave().await.expect("leaves");
    a.stop().await.expect("stops");
    // The subscription drains what was published, then ends.
    while sub.recv().await.is_some() {}
    // The UDP port is free again.
    UdpSocket::bind(addr).expect("the port was released");
    drop(c);
    wait_tasks(baseline).await;
    // Stopping twice is fine; subscribing after stop gives an ended subscription.
    a.stop().await.expect("stops again");
    assert!(a.subscribe().recv().await.is_none());
}
