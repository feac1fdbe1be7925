//! The raft RPC client: one multiplexed TCP connection per peer address,
//! shared by every openraft client of that peer. Requests carry ids, answers
//! are matched by id, so votes, heartbeats and snapshot chunks never wait
//! behind each other. Each call is bounded by openraft's `hard_ttl`; a peer
//! that cannot be reached (or refuses our frames) is reported as
//! `Unreachable`, so openraft backs off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::wire::{Frame, WireCodec};
use cluster_core::{Endpoints, Error, MemberId};
use futures::{SinkExt, StreamExt};
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
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{RaftRpc, RaftRpcReply};
use crate::typecfg::{Entry, TypeConfig};

/// Requests that may queue for one connection's socket.
const REQUEST_QUEUE: usize = 1024;

type ReplyTx = oneshot::Sender<Result<RaftRpcReply, Error>>;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No answer within the time allowed.
    Timeout,
    /// The request could not be encoded within the frame limit.
    TooLarge(Error),
    /// The peer could not be reached, closed the connection or refused the frame.
    Unreachable(Error),
}

#[derive(Clone)]
struct Conn {
    tx: mpsc::Sender<(RaftRpc, ReplyTx)>,
}

/// Connections to peers by address; clones share them.
#[derive(Clone)]
pub struct ConnPool {
    codec: WireCodec<RaftRpc, RaftRpcReply>,
    conns: Arc<Mutex<HashMap<String, Conn>>>,
    cancel: CancellationToken,
}

impl ConnPool {
    /// A pool speaking `codec`; its connections end when `cancel` fires.
    pub fn new(codec: WireCodec<RaftRpc, RaftRpcReply>, cancel: CancellationToken) -> Self {
        ConnPool { codec, conns: Arc::default(), cancel }
    }

    fn cached(&self, addr: &str) -> Option<Conn> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.get(addr).filter(|c| !c.tx.is_closed()).cloned()
    }

    async fn connection(&self, addr: &str) -> Result<Conn, Error> {
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let stream =
            TcpStream::connect(addr).await.map_err(|e| Error::Unreachable(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let conn = Conn { tx };
        let span = tracing::debug_span!("raft_client_conn", peer = %addr);
        tokio::spawn(run_connection(stream, self.codec.clone(), rx, self.cancel.clone()).instrument(span));
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have connected meanwhile; keep one.
        let kept = conns.entry(addr.to_owned()).or_insert_with(|| conn.clone());
        if kept.tx.is_closed() {
            *kept = conn.clone();
        }
        Ok(kept.clone())
    }

    /// Sends `rpc` to `addr` and waits for its answer, at most `ttl`.
    pub async fn call(&self, addr: &str, rpc: RaftRpc, ttl: Duration) -> Result<RaftRpcReply, CallError> {
        let attempt = async {
            let conn = self.connection(addr).await.map_err(CallError::Unreachable)?;
            let (reply_tx, reply_rx) = oneshot::channel();
            conn.tx.send((rpc, reply_tx)).await.map_err(|_| {
                CallError::Unreachable(Error::Unreachable(format!("{addr}: connection closed")))
            })?;
            match reply_rx.await {
                Ok(Ok(RaftRpcReply::Refused(e))) => Err(CallError::Unreachable(e)),
                Ok(Ok(RaftRpcReply::Guarded(e))) => {
                    Err(CallError::Unreachable(Error::BadRequest(e.to_string())))
                }
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e @ (Error::FrameTooLarge { .. } | Error::Encode(_)))) => Err(CallError::TooLarge(e)),
                Ok(Err(e)) => Err(CallError::Unreachable(e)),
                Err(_) => {
                    Err(CallError::Unreachable(Error::Unreachable(format!("{addr}: connection closed"))))
                }
            }
        };
        tokio::time::timeout(ttl, attempt).await.unwrap_or(Err(CallError::Timeout))
    }
}

async fn run_connection(
    stream: TcpStream,
    codec: WireCodec<RaftRpc, RaftRpcReply>,
    mut requests: mpsc::Receiver<(RaftRpc, ReplyTx)>,
    cancel: CancellationToken,
) {
    let mut framed = Framed::new(stream, codec);
    let mut pending: HashMap<u64, ReplyTx> = HashMap::new();
    let mut next_id: u64 = 1;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            request = requests.recv() => {
                let Some((rpc, reply)) = request else { break };
                if reply.is_closed() {
                    // The caller timed out: do not spend the encoding and the bandwidth.
                    continue;
                }
                let id = next_id;
                next_id = next_id.wrapping_add(1).max(1);
                match framed.send(Frame { request_id: id, body: rpc }).await {
                    Ok(()) => {
                        pending.insert(id, reply);
                    }
                    // Refused before a byte was written: the connection is fine.
                    Err(e @ (Error::FrameTooLarge { .. } | Error::Encode(_))) => {
                        let _ = reply.send(Err(e));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "raft connection write failed");
                        let _ = reply.send(Err(e));
                        break;
                    }
                }
            }
            frame = framed.next() => match frame {
                Some(Ok(Ok(frame))) => {
                    if let Some(reply) = pending.remove(&frame.request_id) {
                        let _ = reply.send(Ok(frame.body));
                    }
                }
                Some(Ok(Err(bad))) => {
                    tracing::warn!(error = %bad, "bad frame from a raft peer");
                    match bad.request_id.and_then(|id| pending.remove(&id)) {
                        Some(reply) => {
                            let _ = reply.send(Err(bad.error));
                        }
                        None => break,
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "raft connection read failed");
                    break;
                }
                None => break,
            },
        }
    }
    // Dropping `pending` tells every waiting caller the connection is gone.
}

/// openraft's network factory: a client per peer over the shared pool.
pub struct NetworkFactory {
    member_id: MemberId,
    pool: ConnPool,
    limits: Limits,
}

/// Bounds of the raft transport.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest frame.
    pub max_frame_len: usize,
    /// The most bytes of entries in one AppendEntries (a single larger
    /// entry still goes alone).
    pub max_append_bytes: usize,
}

impl NetworkFactory {
    /// The factory of `member_id`, sending through `pool`.
    pub fn new(member_id: MemberId, pool: ConnPool, limits: Limits) -> Self {
        NetworkFactory { member_id, pool, limits }
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
            pool: self.pool.clone(),
            limits: self.limits,
        }
    }
}

/// The raft RPC client of one peer.
pub struct PeerClient {
    member_id: MemberId,
    target: MemberId,
    addr: String,
    pool: ConnPool,
    limits: Limits,
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
        match self.pool.call(&self.addr, RaftRpc::AppendEntries(rpc), ttl).await {
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
        match self.pool.call(&self.addr, RaftRpc::InstallSnapshot(rpc), ttl).await {
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
        match self.pool.call(&self.addr, RaftRpc::Vote(rpc), ttl).await {
            Ok(RaftRpcReply::Vote(Ok(r))) => Ok(r),
            Ok(RaftRpcReply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => Err(self.fail(RPCTypes::Vote, ttl, e)),
        }
    }
}
