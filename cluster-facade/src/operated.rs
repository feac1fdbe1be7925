//! The member as the operators' surface sees it: [`ClusterOf`] implements
//! `operator`'s [`Operated`] here, beside both, so that neither `cluster`
//! nor `operator` imports the other in a circle.

use std::collections::BTreeMap;
use std::future::Future;

use cluster_core::{
    ConsensusProgress, ConsensusStatus, ConsensusStore, Liveness, MemberId, MemberInfo, Membership, ShortId,
};
use cluster_service::Proxy;

use crate::ClusterError;
use crate::cluster::ClusterOf;
use crate::operator::{Metrics, Operated, Readiness};

impl<M: Membership, S: ConsensusStore> Operated for ClusterOf<M, S> {
    type Store = crate::MemberStore<S>;

    fn metrics(&self) -> &Metrics {
        ClusterOf::metrics(self)
    }

    fn readiness(&self) -> impl Future<Output = Readiness> + Send {
        ClusterOf::readiness(self)
    }

    fn consensus_status(&self) -> ConsensusStatus {
        ClusterOf::consensus_status(self)
    }

    fn consensus_progress(&self) -> impl Future<Output = ConsensusProgress> + Send {
        ClusterOf::consensus_progress(self)
    }

    fn held_short_id(&self) -> Option<ShortId> {
        *self.watch_short_id().borrow()
    }

    fn recorded_members(&self) -> Result<Vec<MemberInfo>, ClusterError> {
        ClusterOf::members(self)
    }

    fn liveness(&self) -> BTreeMap<MemberId, Liveness> {
        ClusterOf::liveness(self)
    }

    fn store(&self) -> &Proxy<crate::MemberStore<S>> {
        ClusterOf::store(self)
    }
}
