//! Encrypted gossip on loopback: two members share a key and find each other;
//! a third with another key knocks and is refused; then the key is rotated
//! (install, use, remove) without either member noticing.
//!
//! ```text
//! cargo run -p cluster-gossip --example encrypted
//! ```

mod demo;

use std::time::Duration;

use cluster_gossip::{Gossip, GossipConfig, GossipKey, Keyring};
use cluster_testkit::holds_within;

fn config(ring: &Keyring) -> GossipConfig {
    demo::quick_config().with_keyring(ring.clone())
}

/// Polls until `cond` holds, for at most 10 s (the kit's [`holds_within`]).
async fn wait(what: &str, cond: impl Fn() -> bool) -> Result<(), String> {
    if holds_within(Duration::from_secs(10), || std::future::ready(cond())).await {
        Ok(())
    } else {
        Err(format!("gave up waiting until {what}"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A key is 32 random bytes; share its base64 form with every member.
    let key = GossipKey::generate();
    let ring = Keyring::from_base64([key.to_base64()])?;
    println!("cluster key id {} (the id is public; the key is not)", key.id());

    let first = Gossip::start(config(&ring)).await?;
    let seed = first.gossip_addr().to_string();
    let second = Gossip::start(config(&ring).with_seeds([seed.clone()])).await?;
    wait("both members see each other", || first.members().len() == 2 && second.members().len() == 2).await?;
    println!("two members with the key: converged");

    let outsider = Gossip::start(config(&Keyring::new(GossipKey::generate())).with_seeds([seed])).await?;
    wait("the outsider was refused a few times", || first.datagram_stats().unauthenticated >= 5).await?;
    println!(
        "outsider with another key: first member sees {} members, dropped {:?}",
        first.members().len(),
        first.datagram_stats().unauthenticated
    );
    outsider.stop().await?;

    // Rotation: install everywhere, use everywhere, remove everywhere.
    let next = GossipKey::generate();
    let rings = [first.keyring().ok_or("keyed")?, second.keyring().ok_or("keyed")?];
    for r in rings {
        r.install(next.clone())?;
    }
    for r in rings {
        r.use_key(&next)?;
    }
    for r in rings {
        r.remove(&key)?;
    }
    let before = second.datagram_stats().accepted;
    wait("gossip flows under the new key", || second.datagram_stats().accepted > before + 10).await?;
    println!("rotated to key {}: still {} members", next.id(), second.members().len());

    first.leave().await?;
    second.stop().await?;
    Ok(())
}
