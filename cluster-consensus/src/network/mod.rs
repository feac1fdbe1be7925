//! Raft RPC over TCP with core's [`WireCodec`](cluster_core::wire::WireCodec):
//! the messages ([`RaftRpc`], [`RaftRpcReply`]), the multiplexed client
//! ([`client`]), the listener ([`server`]) and the checks every request
//! passes before openraft sees it ([`guard`]).

pub mod client;
pub mod guard;
pub mod server;

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

/// The answer to a [`RaftRpc`], with the request's id.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RaftRpcReply {
    /// Answer to [`RaftRpc::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>),
    /// Answer to [`RaftRpc::Vote`].
    Vote(Result<VoteResponse<MemberId>, RaftError<MemberId>>),
    /// Answer to [`RaftRpc::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<MemberId>, RaftError<MemberId, InstallSnapshotError>>),
    /// Answer to [`RaftRpc::AppliedIndex`].
    AppliedIndex(Option<u64>),
    /// The frame was refused (another cluster or version, malformed, too large…).
    Refused(Error),
    /// The request was refused by the [`guard`](guard::RaftGuard) before raft saw it.
    Guarded(guard::GuardError),
}
