//! # cluster-gossip
//!
//! Gossip membership on [chitchat](https://docs.rs/chitchat): members find each
//! other through seed addresses, publish string tags, and every member learns
//! who **joined**, **updated** its tags, **left** gracefully or **failed**.
//! It is the membership backend of Carbon Grid Cluster (it implements
//! [`cluster_core::Membership`]) and is usable on its own.
//!
//! What it owns:
//! - [`GossipConfig`]: core's [`MembershipConfig`](cluster_core::MembershipConfig)
//!   (member id, the chitchat node id; generation, cluster id, listen/advertise
//!   address (port 0 = a free port), seeds, gossip interval, failure detection,
//!   initial tags, encryption keys), plus the transport (UDP, or chitchat's
//!   in-memory [`ChannelTransport`] for tests) and gossip's own bounds;
//! - [`Gossip`]: the running member — own tags, live members, subscriptions,
//!   graceful [`leave`](Gossip::leave) and abrupt [`stop`](Gossip::stop);
//! - the events: each subscription first receives the live members as
//!   `Joined`, then each change once, through core's [`EventHub`](cluster_core::EventHub)
//!   (bounded, with a `Resync` for a subscriber that fell behind). Members are
//!   keyed by member id; a restarted member (higher generation) is the same
//!   member, reported `Joined` again;
//! - pacing ([`Pace`], [`Gossip::set_pace`]): a light member starts its own
//!   gossip rounds less often the larger the cluster, so that its gossip
//!   costs about the same at 100 members as at 10; it still answers every
//!   round the others start;
//! - graceful leave, which chitchat lacks: a reserved key (see
//!   [`RESERVED_PREFIX`]) announces it, peers acknowledge it, and peers report
//!   the member `Left` rather than `Failed`;
//! - the UDP socket under chitchat, and with it **encryption**, which chitchat
//!   lacks too. With a [`Keyring`] ([`GossipConfig::with_keyring`]), every
//!   datagram is sealed with AES-256-GCM under the ring's primary key (a
//!   random 96-bit nonce each; the key id and the cluster id bound as
//!   associated data), and a datagram no key of the ring opens is dropped
//!   before anything decompresses or parses it. Keys rotate without downtime
//!   like serf's: [`KeyringHandle::install`] the new key on every member,
//!   [`use_key`](KeyringHandle::use_key) it on every member, then
//!   [`remove`](KeyringHandle::remove) the old one; with
//!   [`GossipConfig::with_keyring_file`] the ring survives restarts;
//! - checks on every datagram, encrypted or not, before chitchat sees it: its
//!   structure, and a bound on what its zstd blocks expand to (chitchat's own
//!   decoder has none). Dropped datagrams are counted
//!   ([`Gossip::datagram_stats`]) and logged at most once per 10 s per source.
//!
//! Without a keyring, anyone who can send to the gossip port can read the
//! members' tags and join: chitchat compares the cluster id of a Syn only,
//! and applies a SynAck or an Ack from anyone. Use a keyring on any network
//! you do not fully trust (`examples/encrypted.rs`).
//!
//! ```
//! use std::time::Duration;
//! use cluster_core::{FailureDetection, MembershipEvent};
//! use cluster_gossip::{Gossip, GossipConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cluster_gossip::GossipError> {
//! let fast = |c: GossipConfig| {
//!     c.with_gossip_interval(Duration::from_millis(50)).with_failure_detection(FailureDetection {
//!         initial_interval: Duration::from_millis(50),
//!         ..FailureDetection::default()
//!     })
//! };
//! let first = Gossip::start(fast(GossipConfig::default().with_tag("role", "cache"))).await?;
//! let second = Gossip::start(fast(GossipConfig::default().with_seeds([first.gossip_addr().to_string()]))).await?;
//!
//! // The second member learns about the first, with its tags.
//! let mut events = second.subscribe();
//! loop {
//!     match events.recv().await {
//!         Some(MembershipEvent::Joined(m)) if m.id == first.member_id() => {
//!             assert_eq!(m.tags["role"], "cache");
//!             break;
//!         }
//!         Some(_) => continue,
//!         None => unreachable!("the member is running"),
//!     }
//! }
//! first.leave().await?; // `second` reports it Left
//! second.stop().await?;
//! # Ok(())
//! # }
//! ```

mod codec;
mod config;
mod datagram;
mod drop_log;
mod error;
mod events;
mod gossip;
mod keyring;
mod keys;
mod leave;
mod member;
mod pace;
mod seal;
pub mod sim;
mod socket;
mod transport;

pub use chitchat::transport::ChannelTransport;
pub use config::{GossipConfig, GossipTransport, generation_now};
pub use error::{GossipError, Result};
pub use gossip::Gossip;
pub use keyring::{GossipKey, KEY_LEN, KeyId, Keyring, KeyringHandle};
pub use keys::{RESERVED_PREFIX, is_reserved};
pub use pace::{LIGHT_MAX_STRETCH, LIGHT_MEMBERS, Pace};
pub use socket::DatagramStats;
