//! openraft's network over the RPC layer's client: one multiplexed
//! connection per peer address, shared by every openraft client of that peer,
//! so votes, heartbeats and snapshot chunks never wait behind each other.
//! Each call is bounded by openraft's `hard_ttl`; a peer that cannot be
//! reached (or refuses our frames) is reported as `Unreachable`, so openraft
//! backs off.

use std::time::Duration;

use cluster_core::{Endpoints, Error, MemberId};
use cluster_rpc::RpcError;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, RPCTypes};

use super::{RaftRequest, RaftRpc, RaftRpcReply};
use crate::typecfg::{Entry, TypeConfig};

/// The RPC client of the raft port: one connection per peer address.
pub(crate) type RaftClient = cluster_rpc::Client<RaftRequest, RaftRpcReply>;

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No answer within the time allowed.
    Timeout,
    /// The request could not be encoded within the frame limit.
    TooLarge(RpcError),
    /// The peer could not be reached, closed the connection or refused the frame.
    Unreachable(RpcError),
    /// The peer refused the request with a typed error.
    Refused(Error),
}

/// Sends `rpc` for member `to` at `addr` and waits for its answer, at most `ttl`.
pub(crate) async fn call(
    client: &RaftClient,
    addr: &str,
    to: MemberId,
    rpc: RaftRpc,
    ttl: Duration,
) -> Result<RaftRpcReply, CallError> {
    match client.call(addr, &RaftRequest { to, rpc }, ttl).await {
        Ok(RaftRpcReply::Refused(e)) => Err(CallError::Refused(e)),
        Ok(RaftRpcReply::Guarded(e)) => Err(CallError::Refused(Error::BadRequest(e.to_string()))),
        Ok(reply) => Ok(reply),
        Err(RpcError::Timeout { .. }) => Err(CallError::Timeout),
        Err(e @ RpcError::Encode(_)) => Err(CallError::TooLarge(e)),
        Err(e) => Err(CallError::Unreachable(e)),
    }
}

/// openraft's network factory: a client per peer over the shared RPC client.
pub(crate) struct NetworkFactory {
    member_id: MemberId,
    client: RaftClient,
    limits: BatchLimits,
}

/// Bounds of what raft sends in one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// The most bytes of entries in one AppendEntries (a single larger
    /// entry still goes alone).
    pub max_append_bytes: usize,
}

impl NetworkFactory {
    /// The factory of `member_id`, sending through `client`.
    pub(crate) fn new(member_id: MemberId, client: RaftClient, limits: BatchLimits) -> Self {
        NetworkFactory { member_id, client, limits }
    }
}

/// Roughly the encoded size of an entry: enough to split batches early.
pub(crate) fn approx_size(entry: &Entry) -> usize {
    const OVERHEAD: usize = 64;
    match &entry.payload {
        EntryPayload::Normal(batch) => batch.0.iter().map(crate::batcher::request_size).sum(),
        EntryPayload::Membership(m) => OVERHEAD * (1 + m.nodes().count()),
        EntryPayload::Blank => OVERHEAD,
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: MemberId, node: &Endpoints) -> PeerClient {
        PeerClient {
            member_id: self.member_id,
            target,
            addr: node.raft_addr.clone(),
            client: self.client.clone(),
            limits: self.limits,
        }
    }
}

/// The raft RPC client of one peer.
pub(crate) struct PeerClient {
    member_id: MemberId,
    target: MemberId,
    addr: String,
    client: RaftClient,
    limits: BatchLimits,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<MemberId, Endpoints, RaftError<MemberId, E>>;

impl PeerClient {
    fn fail<E: std::error::Error>(&self, action: RPCTypes, ttl: Duration, e: CallError) -> RpcErr<E> {
        match e {
            CallError::Timeout => {
                RPCError::Timeout(Timeout { action, id: self.member_id, target: self.target, timeout: ttl })
            }
            CallError::TooLarge(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Refused(e) => RPCError::Unreachable(Unreachable::new(&e)),
        }
    }

    fn unexpected<E: std::error::Error>(&self, reply: &RaftRpcReply) -> RpcErr<E> {
        let e = Error::Malformed(format!("unexpected answer from {}: {reply:?}", self.target));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RpcErr> {
        let entries = rpc.entries.len() as u64;
        // openraft bounds an AppendEntries by the heartbeat interval: keep
        // each request small enough to travel in that time.
        let ttl = option.hard_ttl();
        let size: usize = rpc.entries.iter().map(approx_size).sum();
        if entries > 1 && size > self.limits.max_append_bytes {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)));
        }
        match call(&self.client, &self.addr, self.target, RaftRpc::AppendEntries(rpc), ttl).await {
            Ok(RaftRpcReply::AppendEntries(Ok(r))) => Ok(r),
            Ok(RaftRpcReply::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(&other)),
            Err(CallError::TooLarge(_)) if entries > 1 => {
                // openraft sends fewer entries per request next time.
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)))
            }
            Err(e) => Err(self.fail(RPCTypes::AppendEntries, ttl, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, RpcErr<InstallSnapshotError>> {
        let ttl = option.hard_ttl();
        match call(&self.client, &self.addr, self.target, RaftRpc::InstallSnapshot(rpc), ttl).await {
            Ok(RaftRpcReply::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(RaftRpcReply::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.fail(RPCTypes::InstallSnapshot, ttl, e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RpcErr> {
        let ttl = option.hard_ttl();
        match call(&self.client, &self.addr, self.target, RaftRpc::Vote(rpc), ttl).await {
            Ok(RaftRpcReply::Vote(Ok(r))) => Ok(r),
            Ok(RaftRpcReply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.fail(RPCTypes::Vote, ttl, e)),
        }
    }
}
