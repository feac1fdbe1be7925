//! Chitchat membership keeps the `Membership` contract (the kit's suite,
//! the one the fake membership passes too), over loopback UDP.

use cluster_core::Membership;
use cluster_core::testsuite::contract::membership_suite;
use cluster_gossip::Gossip;

#[tokio::test]
async fn chitchat_membership_keeps_the_contract() {
    membership_suite(<Gossip as Membership>::start).await;
}
