//! The membership backend contract: gossip membership as the rest of the
//! cluster sees it. `cluster-gossip` implements it on chitchat.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::hub::{EventHub, Subscription};
use crate::id::MemberId;

/// How a member is doing, as gossip sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MemberState {
    /// Heartbeats arrive.
    Alive,
    /// It announced that it leaves.
    Left,
    /// The failure detector gave up on it.
    Failed,
}

/// A member as gossip sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its permanent id.
    pub id: MemberId,
    /// Its incarnation: grows every time the member (re)starts.
    pub generation: u64,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Its published tags (without the backend's own bookkeeping keys).
    pub tags: BTreeMap<String, String>,
    /// Alive, left or failed.
    pub state: MemberState,
}

/// A change in membership, as one subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A member became live: new, back after a failure, or restarted.
    Joined(Member),
    /// A live member changed its tags.
    Updated(Member),
    /// A member announced its departure and stopped.
    Left(Member),
    /// The failure detector declared a member dead.
    Failed(Member),
    /// This subscriber fell behind and events were dropped; here are all
    /// live members now. Compare with what you knew.
    Resync(Vec<Member>),
}

impl MembershipEvent {
    /// The member the event is about; `None` for a `Resync`, which is about all.
    pub fn member_id(&self) -> Option<MemberId> {
        match self {
            MembershipEvent::Joined(m)
            | MembershipEvent::Updated(m)
            | MembershipEvent::Left(m)
            | MembershipEvent::Failed(m) => Some(m.id),
            MembershipEvent::Resync(_) => None,
        }
    }
}

/// The live members by id: the state behind a membership [`EventHub`].
pub type MemberTable = BTreeMap<MemberId, Member>;

/// A subscription to membership events; it starts with a `Joined` event for
/// every member live when it was made.
pub type MembershipEvents = Subscription<MemberTable, MembershipEvent>;

/// A hub of membership events with the replay and resync rules above.
pub fn membership_hub(capacity: usize) -> EventHub<MemberTable, MembershipEvent> {
    EventHub::new(
        MemberTable::new(),
        capacity,
        |t| t.values().cloned().map(MembershipEvent::Joined).collect(),
        |t| MembershipEvent::Resync(t.values().cloned().collect()),
    )
}

/// Failure-detector settings (phi accrual).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureDetection {
    /// Suspicion level at which a member is declared failed; lower detects
    /// sooner and risks false failures under load.
    pub phi_threshold: f64,
    /// The heartbeat interval assumed before any was observed; keep it close
    /// to the gossip interval.
    pub initial_interval: Duration,
    /// How long a failed member is remembered (and its return recognized as
    /// the same member) before it is forgotten.
    pub dead_member_grace: Duration,
}

impl Default for FailureDetection {
    fn default() -> Self {
        FailureDetection {
            phi_threshold: 8.0,
            initial_interval: Duration::from_millis(100),
            dead_member_grace: Duration::from_secs(3600),
        }
    }
}

/// Gossip encryption as configured: raw keys (a backend brings the cipher)
/// and where the keyring is persisted. `Debug` shows how many keys, never a key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GossipEncryption {
    /// 32-byte AES-256 keys, the first primary. Empty and no keyring file
    /// holding keys: gossip is not encrypted.
    pub keys: Vec<[u8; 32]>,
    /// The keyring file; when it exists it wins over `keys` (it holds the
    /// ring as the last rotation left it).
    pub keyring_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for GossipEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipEncryption")
            .field("keys", &self.keys.len())
            .field("keyring_file", &self.keyring_file)
            .finish()
    }
}

/// What a membership backend needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipConfig {
    /// This member's id.
    pub member_id: MemberId,
    /// This incarnation; must grow across restarts (unix time in ns works).
    pub generation: u64,
    /// Members of other clusters are ignored.
    pub cluster_id: String,
    /// Where to listen; port 0 picks a free one.
    pub listen_addr: SocketAddr,
    /// The address others reach us at, if not `listen_addr` (NAT, 0.0.0.0).
    pub advertise_addr: Option<SocketAddr>,
    /// Gossip addresses of members to join (`host:port`); empty = a new cluster.
    pub seeds: Vec<String>,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// Failure detection.
    pub failure_detection: FailureDetection,
    /// The tags to publish from the start.
    pub tags: BTreeMap<String, String>,
    /// Gossip encryption (default: none).
    pub encryption: GossipEncryption,
}

/// A gossip membership backend.
///
/// Guarantees an implementation gives:
/// - after [`start`](Membership::start) returns, the member gossips with its
///   seeds and publishes its tags; the handle reports the bound address;
/// - tag changes reach every live member;
/// - every subscription starts with the live members as `Joined`, then sees
///   each change once: no duplicate events when nothing changed; a restarted
///   member (same id, higher generation) is one member, reported `Joined`
///   again after it was reported `Failed` or `Left`;
/// - a slow subscriber never blocks gossip; it receives `Resync` instead of a gap;
/// - [`leave`](Membership::leave) makes peers report `Left`, not `Failed`,
///   and returns within a bounded time even when no peer is reachable;
/// - members of another cluster id are never merged in.
pub trait Membership: Send + Sync + Sized + 'static {
    /// Starts gossiping and joins the seeds.
    fn start(config: MembershipConfig) -> impl Future<Output = Result<Self>> + Send;

    /// This member's id.
    fn member_id(&self) -> MemberId;

    /// The address gossip is bound to (the real port when 0 was asked).
    fn gossip_addr(&self) -> SocketAddr;

    /// Sets (adds or overwrites) some of this member's tags.
    fn set_tags(&self, tags: BTreeMap<String, String>) -> impl Future<Output = Result<()>> + Send;

    /// Removes some of this member's tags.
    fn remove_tags(&self, names: Vec<String>) -> impl Future<Output = Result<()>> + Send;

    /// The live members now, this member included.
    fn members(&self) -> Vec<Member>;

    /// A new subscription to membership events.
    fn subscribe(&self) -> MembershipEvents;

    /// Announces that this member leaves, waits (bounded) until peers heard
    /// it, and stops gossiping.
    fn leave(&self) -> impl Future<Output = Result<()>> + Send;

    /// Stops gossiping at once, without announcing it (peers will see a failure).
    fn stop(&self) -> impl Future<Output = Result<()>> + Send;

    /// This member's live gossip keyring, for the operators' keyring requests
    /// (`carbon keys list | install | use | remove`). `None`, the default,
    /// when gossip is not encrypted or the backend has no keyring.
    fn keyring_control(&self) -> Option<Arc<dyn KeyringControl>> {
        None
    }

    /// Whether this member may start its own gossip rounds less often the
    /// larger the cluster: a client member, which the cluster needs to hear
    /// from less often than the replicas. It still answers every round the
    /// others start. The default ignores it (every member at full pace).
    fn set_light_pace(&self, light: bool) {
        let _ = light;
    }

    /// What the backend saw that would keep this member from joining, in
    /// words a user can act on (e.g. gossip it could not authenticate: the
    /// gossip key does not match the cluster's). `None`, the default, when
    /// it saw nothing of the kind. Asked when a start times out.
    fn join_problem(&self) -> Option<String> {
        None
    }
}

/// A change to one member's gossip keyring, as serf's `keys` command makes it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyringChange {
    /// Add a key that opens datagrams; the primary still seals them.
    Install([u8; 32]),
    /// Make an installed key primary: it seals every datagram from now on.
    Use([u8; 32]),
    /// Drop a key that is not primary: datagrams sealed with it no longer open.
    Remove([u8; 32]),
}

impl KeyringChange {
    /// The key the change names.
    pub fn key(&self) -> &[u8; 32] {
        match self {
            KeyringChange::Install(k) | KeyringChange::Use(k) | KeyringChange::Remove(k) => k,
        }
    }

    /// `install`, `use` or `remove`, for messages.
    pub fn verb(&self) -> &'static str {
        match self {
            KeyringChange::Install(_) => "install",
            KeyringChange::Use(_) => "use",
            KeyringChange::Remove(_) => "remove",
        }
    }
}

/// `Debug` never shows a key.
impl std::fmt::Debug for KeyringChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyringChange::{}(..)", self.verb())
    }
}

/// One member's gossip keyring: the primary first. `Debug` shows how many
/// keys, never a key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringState {
    /// Every installed key; the first seals, all open.
    pub keys: Vec<[u8; 32]>,
    /// Whether the change asked for changed the ring (false for a key
    /// already installed, already primary or already gone; and for a list).
    pub changed: bool,
}

impl std::fmt::Debug for KeyringState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringState")
            .field("keys", &self.keys.len())
            .field("changed", &self.changed)
            .finish()
    }
}

/// A member's live gossip keyring as the service reaches it. Every change is
/// persisted (when the ring has a file) before it takes effect.
pub trait KeyringControl: Send + Sync + std::fmt::Debug + 'static {
    /// The ring now.
    fn list(&self) -> KeyringState;
    /// Applies `change`; a key that is not installed, or removing the
    /// primary, is [`Error::BadRequest`](crate::Error::BadRequest).
    fn apply(&self, change: KeyringChange) -> Result<KeyringState>;
}
