//! # cluster-core
//!
//! The model of Carbon Grid Cluster, shared by every other crate. It knows no
//! network and no backend; it owns:
//!
//! - **identity**: [`MemberId`] (a ULID, the member's permanent id, also its
//!   raft and gossip node id), [`ShortId`] (a small positive integer assigned
//!   through consensus) and [`ClientRequestId`] (makes retried writes idempotent);
//! - **metadata**: [`MemberInfo`] in its two forms, gossip tags and bincode bytes;
//!   [`RaftRole`];
//! - the **consensus key layout** in [`keys`];
//! - **events**: [`GridMemberEvent`] for the grid, [`MembershipEvent`] for
//!   gossip, and [`EventHub`], the replay-then-follow fan-out both use;
//! - the **backend contracts**: [`Membership`] (gossip) and
//!   [`ConsensusStore`] (the raft key-value store), each with its guarantees,
//!   [`ConsensusBackend`] (how a store is opened, with its network settings
//!   typed), and in [`admin`] what a running member answers beyond its store;
//! - **pure planning** in [`plan`]: the lowest free short id, the voter
//!   plan that keeps the wanted number of voters without risking quorum,
//!   the record plan and the departure clock (time is an input);
//! - with the `testsuite` feature, the shared **test kit** in `testsuite`:
//!   fakes of both backends and the contract suites every backend passes;
//! - the **wire codec** in [`wire`], used by every TCP protocol, and the text
//!   form of a gossip key in [`gossip_key`];
//! - [`Error`], the one error type of the contracts.
//!
//! ```
//! use cluster_core::{keys, plan, MemberId, MemberInfo, ShortId};
//!
//! // A member describes itself…
//! let me = MemberInfo::new(MemberId::generate(), "127.0.0.1", 7946, 7000, 7001, 5701);
//! // …in gossip as tags, in the consensus store as bytes under its key.
//! let tags = me.to_tags();
//! let key = keys::member_key(me.member_id);
//! assert_eq!(keys::parse_member_key(&key).unwrap(), me.member_id);
//! assert_eq!(MemberInfo::from_tags(me.member_id, &tags).unwrap(), me);
//!
//! // The state machine picks the lowest free short id.
//! let used = [1, 3].map(|n| ShortId::new(n).unwrap());
//! assert_eq!(plan::lowest_free_short_id(used), ShortId::new(2).ok());
//! ```

pub mod admin;
pub mod error;
pub mod event;
pub mod gossip_key;
pub mod hub;
pub mod id;
pub mod keys;
pub mod member;
pub mod membership;
pub mod plan;
pub mod role;
pub mod store;
#[cfg(feature = "testsuite")]
pub mod testsuite;
mod watch_log;
pub mod wire;

pub use admin::{MemberAdmin, ServiceObserver};
pub use error::{Error, ErrorKind, IoKind, LeaderHint, Quota, Result};
pub use event::{GridEventKind, GridMemberEvent};
pub use hub::{EventHub, Subscription};
pub use id::{ClientRequestId, IdError, MemberId, ShortId};
pub use member::MemberInfo;
pub use membership::{
    FailureDetection, GossipEncryption, KeyringChange, KeyringControl, KeyringState, Member, MemberState,
    MemberTable, Membership, MembershipConfig, MembershipEvent, MembershipEvents,
};
pub use role::RaftRole;
pub use store::{
    CasOutcome, ConsensusBackend, ConsensusConfig, ConsensusLimits, ConsensusProgress, ConsensusStatus,
    ConsensusStore, ConsensusStoreExt, Endpoints, Entries, KeyMeta, KeyScope, Liveness, MemberStatus,
    RaftTiming, RemoteReads, Watch, WatchEvent, WatchLog, WriteOp, WriteOutcome, WriteRequest, Writer,
};
