//! Two gossip members on loopback: the second joins the first, both print the
//! events they see, the first changes a tag, then leaves gracefully.
//!
//! ```text
//! cargo run -p cluster-gossip --example two_members
//! ```

mod demo;

use std::time::Duration;

use cluster_core::MembershipEvent;
use cluster_gossip::{Gossip, GossipConfig};

fn config(name: &str) -> GossipConfig {
    demo::quick_config().with_tag("name", name)
}

fn print_events(who: &'static str, gossip: &Gossip) -> tokio::task::JoinHandle<()> {
    let mut events = gossip.subscribe();
    tokio::spawn(async move {
        // Ends when the member stops.
        while let Some(event) = events.recv().await {
            match event {
                MembershipEvent::Joined(m) => println!("[{who}] joined  {} {:?}", m.tags["name"], m.tags),
                MembershipEvent::Updated(m) => println!("[{who}] updated {} {:?}", m.tags["name"], m.tags),
                MembershipEvent::Left(m) => println!("[{who}] left    {}", m.tags["name"]),
                MembershipEvent::Failed(m) => println!("[{who}] failed  {}", m.tags["name"]),
                other => println!("[{who}] {other:?}"),
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let alice = Gossip::start(config("alice")).await?;
    println!("alice gossips on {}", alice.gossip_addr());
    let bob = Gossip::start(config("bob").with_seeds([alice.gossip_addr().to_string()])).await?;
    println!("bob gossips on {}", bob.gossip_addr());
    let printers = [print_events("alice", &alice), print_events("bob", &bob)];

    while bob.members().len() < 2 || alice.members().len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.set_tag("mood", "curious").await?;
    while !bob.members().iter().any(|m| m.tags.contains_key("mood")) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    alice.leave().await?;
    while bob.members().len() > 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bob.stop().await?;
    for p in printers {
        p.await?;
    }
    Ok(())
}
