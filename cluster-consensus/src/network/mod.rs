//! Raft RPC over the project's one RPC layer (`cluster-rpc`): the messages
//! ([`RaftRpc`], [`RaftRpcReply`]), openraft's network over the RPC client
//! ([`client`]), the raft port's handler ([`server`]) and the checks every
//! request passes before openraft sees it ([`guard`]).
//!
//! The raft port accepts members only when TLS is on; its limits (connections,
//! requests in flight, frame size and timeouts) are the RPC layer's.

pub(crate) mod client;
pub(crate) mod guard;
pub(crate) mod server;

use cluster_core::{Error, MemberId};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::typecfg::TypeConfig;

/// A request on the raft port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(not(feature = "testsuite"), allow(unreachable_pub))] // tests write it raw: `crate::testsuite`
pub enum RaftRpc {
    /// Log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A vote request of a candidate.
    Vote(VoteRequest<MemberId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// The index this member applied up to (used to wait for a nonvoter to catch up).
    AppliedIndex,
}

/// A [`RaftRpc`] with the member it is meant for, as it travels on the raft
/// port. The receiving member refuses a request meant for another member:
/// when two members answer at one address (a copied configuration, a
/// phantom in gossip), nothing sent to one is ever counted as the other's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(not(feature = "testsuite"), allow(unreachable_pub))] // tests write it raw: `crate::testsuite`
pub struct RaftRequest {
    /// The member the sender means to reach.
    pub to: MemberId,
    /// The request.
    pub rpc: RaftRpc,
}

/// The answer to a [`RaftRpc`], with the request's id.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(not(feature = "testsuite"), allow(unreachable_pub))] // tests write it raw: `crate::testsuite`
pub enum RaftRpcReply {
    /// Answer to [`RaftRpc::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>),
    /// Answer to [`RaftRpc::Vote`].
    Vote(Result<VoteResponse<MemberId>, RaftError<MemberId>>),
    /// Answer to [`RaftRpc::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<MemberId>, RaftError<MemberId, InstallSnapshotError>>),
    /// Answer to [`RaftRpc::AppliedIndex`].
    AppliedIndex(Option<u64>),
    /// The frame was refused (another cluster or version, malformed, too large, timed out…).
    Refused(Error),
    /// The request was refused by the [`guard`](guard::RaftGuard) before raft saw it.
    Guarded(guard::GuardError),
}

impl cluster_rpc::Answer for RaftRpcReply {
    fn refused(error: Error) -> Self {
        RaftRpcReply::Refused(error)
    }

    fn into_refusal(self) -> Result<Error, Self> {
        match self {
            RaftRpcReply::Refused(e) => Ok(e),
            other => Err(other),
        }
    }
}
