//! [`Operated`]: what the operators' surface needs of a member. The member
//! (`ClusterOf`, in `operated.rs`) implements it, so this module never
//! names the member's internals and the dependency runs one way: the
//! member starts the server, the server asks through this trait.

use std::collections::BTreeMap;
use std::future::Future;

use cluster_core::{
    ConsensusProgress, ConsensusStatus, ConsensusStore, Liveness, MemberId, MemberInfo, ShortId,
};
use cluster_service::Proxy;

use super::{Metrics, Readiness};
use crate::ClusterError;

/// A member as the HTTP API sees it.
pub(crate) trait Operated: Send + Sync + 'static {
    /// The member's consensus store.
    type Store: ConsensusStore;

    /// The member's metrics.
    fn metrics(&self) -> &Metrics;
    /// Whether it can serve now.
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;
    /// Consensus as it knows it.
    fn consensus_status(&self) -> ConsensusStatus;
    /// How far along consensus is.
    fn consensus_progress(&self) -> impl Future<Output = ConsensusProgress> + Send;
    /// Its short id, once it holds one.
    fn held_short_id(&self) -> Option<ShortId>;
    /// Every member the store records.
    fn recorded_members(&self) -> Result<Vec<MemberInfo>, ClusterError>;
    /// Gossip's view of every member.
    fn liveness(&self) -> BTreeMap<MemberId, Liveness>;
    /// The store handle its users get (leader-routed).
    fn store(&self) -> &Proxy<Self::Store>;
}
