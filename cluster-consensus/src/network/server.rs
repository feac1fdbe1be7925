//! The raft RPC listener: one task accepts, one task per connection reads
//! frames, hands each request to raft concurrently and writes answers back in
//! completion order, tagged with their request ids.
//!
//! A bad frame (another cluster or version, malformed) is answered with
//! [`RaftRpcReply::Refused`] and the connection goes on; a frame longer than
//! the limit cannot be skipped safely, so it is answered and the connection
//! closed. The listener keeps serving either way.

use std::net::IpAddr;
use std::sync::Arc;

use cluster_core::wire::{Frame, WireCodec};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::guard::RaftGuard;
use super::{RaftRpc, RaftRpcReply};
use crate::state_machine::SharedState;
use crate::typecfg::Raft;

/// How many answers may wait for the socket per connection.
const REPLY_QUEUE: usize = 256;

/// What the server needs to serve.
#[derive(Clone)]
pub struct ServerContext {
    /// The local raft.
    pub raft: Raft,
    /// The applied state (for [`RaftRpc::AppliedIndex`]).
    pub state: SharedState,
    /// The codec (cluster id and frame limit).
    pub codec: WireCodec<RaftRpcReply, RaftRpc>,
    /// Checks every request before raft sees it.
    pub guard: Arc<RaftGuard>,
}

/// Accepts connections until `cancel` fires; then ends every connection task.
pub async fn serve(listener: TcpListener, ctx: ServerContext, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let span = tracing::debug_span!("raft_conn", %peer);
                    connections.spawn(serve_connection(stream, peer.ip(), ctx.clone(), cancel.clone()).instrument(span));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "raft listener accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, peer: IpAddr, ctx: ServerContext, cancel: CancellationToken) {
    let (mut sink, mut frames) = Framed::new(stream, ctx.codec.clone()).split();
    let (tx, mut rx) = mpsc::channel::<Frame<RaftRpcReply>>(REPLY_QUEUE);
    let writer = async move {
        while let Some(frame) = rx.recv().await {
            if let Err(e) = sink.send(frame).await {
                tracing::debug!(error = %e, "raft connection write failed");
                break;
            }
        }
    };
    let ctx = Arc::new(ctx);
    let mut handlers = JoinSet::new();
    let reader = async {
        loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => break,
                item = frames.next() => item,
                Some(_) = handlers.join_next(), if !handlers.is_empty() => continue,
            };
            match item {
                None => break,
                Some(Ok(Ok(frame))) => {
                    let ctx = ctx.clone();
                    let tx = tx.clone();
                    handlers.spawn(
                        async move {
                            let body = handle(&ctx, peer, frame.body).await;
                            let _ = tx.send(Frame { request_id: frame.request_id, body }).await;
                        }
                        .in_current_span(),
                    );
                }
                Some(Ok(Err(bad))) => {
                    tracing::warn!(error = %bad, "refused a raft frame");
                    let reply = Frame {
                        request_id: bad.request_id.unwrap_or(0),
                        body: RaftRpcReply::Refused(bad.error),
                    };
                    if tx.send(reply).await.is_err() {
                        break;
                    }
                }
                Some(Err(fatal)) => {
                    // The stream cannot be resynchronized: answer, then close.
                    tracing::warn!(error = %fatal, "closing a raft connection");
                    let _ = tx.send(Frame { request_id: 0, body: RaftRpcReply::Refused(fatal) }).await;
                    break;
                }
            }
        }
        handlers.shutdown().await;
        drop(tx);
    };
    // The writer ends once the reader dropped its sender and the queue drained.
    tokio::join!(reader, writer);
}

async fn handle(ctx: &ServerContext, peer: IpAddr, rpc: RaftRpc) -> RaftRpcReply {
    if let Err(refused) = ctx.guard.check(peer, &rpc) {
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
