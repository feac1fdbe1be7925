//! The raft port: a [`Handler`] of the RPC layer that hands each request to
//! the local raft. [`handle`] is the one place a raft request is dispatched.

use std::net::IpAddr;
use std::sync::Arc;

use cluster_rpc::{Access, Caller, Handler, HandlerFuture, Reply, RpcError, Server, ServerConfig, Settings};

use super::guard::RaftGuard;
use super::{RaftRequest, RaftRpc, RaftRpcReply};
use crate::typecfg::Raft;

/// What the server needs to serve.
#[derive(Clone)]
pub(crate) struct ServerContext {
    /// The local raft.
    pub raft: Raft,
    /// Closed while this member's raft state reset is pending: votes are refused.
    pub votes: crate::recovery::VoteGate,
    /// Checks every request before raft sees it.
    pub guard: Arc<RaftGuard>,
}

struct RaftHandler(Arc<ServerContext>);

impl Handler for RaftHandler {
    type Request = RaftRequest;
    type Answer = RaftRpcReply;

    fn handle(&self, caller: Caller, request: RaftRequest) -> HandlerFuture<RaftRpcReply> {
        let ctx = self.0.clone();
        Box::pin(async move {
            let RaftRequest { to, rpc } = request;
            Reply::One(handle(&ctx, caller.addr.ip(), caller.member, to, rpc).await)
        })
    }
}

/// Serves raft RPC on `listener` (members only when TLS is on) until the
/// returned server is shut down.
pub(crate) fn serve(
    listener: cluster_rpc::Listener,
    ctx: ServerContext,
    cluster_id: &str,
    settings: &Settings,
) -> Result<Server, RpcError> {
    let config = ServerConfig {
        cluster_id: cluster_id.to_owned(),
        limits: settings.limits.clone(),
        security: settings.security.clone(),
        access: Access::MembersOnly,
    };
    cluster_rpc::serve(listener, RaftHandler(Arc::new(ctx)), config)
}

/// Runs one raft request against the local raft.
/// `member` is the member the caller's certificate names, if any; `to` the
/// member the caller means to reach.
pub(crate) async fn handle(
    ctx: &ServerContext,
    peer: IpAddr,
    member: Option<cluster_core::MemberId>,
    to: cluster_core::MemberId,
    rpc: RaftRpc,
) -> RaftRpcReply {
    // A member that lost its raft state must not vote (see `recovery`),
    // whoever asks: said first, as the reason that holds for every candidate.
    if let (RaftRpc::Vote(_), Some(reason)) = (&rpc, ctx.votes.refusal()) {
        return RaftRpcReply::Refused(cluster_core::Error::BadRequest(reason));
    }
    if let Err(refused) = ctx.guard.check(peer, member, to, &rpc) {
        return RaftRpcReply::Guarded(refused);
    }
    let raft = &ctx.raft;
    match rpc {
        RaftRpc::AppendEntries(req) => RaftRpcReply::AppendEntries(raft.append_entries(req).await),
        RaftRpc::Vote(req) => RaftRpcReply::Vote(raft.vote(req).await),
        RaftRpc::InstallSnapshot(req) => RaftRpcReply::InstallSnapshot(raft.install_snapshot(req).await),
        RaftRpc::AppliedIndex => {
            RaftRpcReply::AppliedIndex(raft.metrics().borrow().last_applied.map(|l| l.index))
        }
    }
}
