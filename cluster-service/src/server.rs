//! The service server: every member runs one on its service port and serves
//! its whole consensus store with it.
//!
//! Per connection, a reader task decodes requests and runs each in its own
//! task; a writer task sends the answers in the order they are ready. At most
//! [`ServerConfig::max_in_flight_per_connection`] requests of one connection
//! run or wait to be written at once: a client that stops reading its answers
//! stops the server from reading its requests (TCP pushes back), so it cannot
//! make the server grow without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_core::wire::{DEFAULT_MAX_FRAME_LEN, Frame, FrameError};
use cluster_core::{ConsensusStore, ConsensusStoreExt, Error, MemberId, MemberInfo, Result, keys};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::protocol::{CONNECTION_ERROR_ID, ForceLeft, Request, Response, ServerCodec};

/// How the server runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Frames from other clusters are answered with [`Error::ClusterMismatch`].
    pub cluster_id: String,
    /// The largest frame accepted or sent.
    pub max_frame_len: usize,
    /// Requests of one connection that may run or wait to be written at once.
    pub max_in_flight_per_connection: usize,
    /// Connections served at once; further ones are closed at once.
    pub max_connections: usize,
    /// How long the store may take for one request before the answer is
    /// [`Error::Timeout`].
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new("")
    }
}

impl ServerConfig {
    /// The defaults, for `cluster_id`.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        ServerConfig {
            cluster_id: cluster_id.into(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight_per_connection: 256,
            max_connections: 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A running service server. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct ServiceServer {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ServiceServer {
    /// Binds `addr` (port 0 picks a free port) and serves `store` on it.
    pub async fn bind<S: ConsensusStore>(
        addr: impl ToSocketAddrs,
        store: Arc<S>,
        config: ServerConfig,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::Io(format!("service bind: {e}")))?;
        Self::serve(listener, store, config)
    }

    /// Serves `store` on a bound listener.
    pub fn serve<S: ConsensusStore>(
        listener: TcpListener,
        store: Arc<S>,
        config: ServerConfig,
    ) -> Result<Self> {
        if config.max_in_flight_per_connection == 0 || config.max_connections == 0 {
            return Err(Error::BadRequest("service limits must be at least 1".into()));
        }
        let local_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let span = tracing::info_span!("service", member = %store.member_id(), addr = %local_addr);
        let task =
            tokio::spawn(accept_loop(listener, store, Arc::new(config), cancel.clone()).instrument(span));
        tracing::info!(%local_addr, "service listening");
        Ok(ServiceServer { local_addr, cancel, task: Some(task) })
    }

    /// The address bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends every connection and waits until all tasks ended.
    /// Callers with requests in flight see the connection close and retry
    /// elsewhere; writes carry request ids, so a retry is applied at most once.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServiceServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop<S: ConsensusStore>(
    listener: TcpListener,
    store: Arc<S>,
    config: Arc<ServerConfig>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        if connections.len() >= config.max_connections {
            tracing::warn!(%peer, max = config.max_connections, "too many connections, closing a new one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let span = tracing::debug_span!("connection", %peer);
        connections.spawn(serve_connection(stream, store.clone(), config.clone()).instrument(span));
    }
    drop(listener);
    // Aborts every connection task, and with them their request tasks.
    connections.shutdown().await;
    tracing::info!("service stopped");
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_connection<S: ConsensusStore>(stream: TcpStream, store: Arc<S>, config: Arc<ServerConfig>) {
    let codec = ServerCodec::new(config.cluster_id.as_str(), config.max_frame_len);
    // Separate halves: a frame is encoded when fed, so an answer too large
    // for a frame fails at once, attributed to its own request.
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, codec.clone());
    let sink = FramedWrite::new(write, codec);
    let in_flight = config.max_in_flight_per_connection;
    let (tx, rx) = mpsc::channel::<Frame<Response>>(in_flight);
    let writer = AbortOnDrop(tokio::spawn(write_answers(sink, rx).in_current_span()));
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut requests = JoinSet::new();
    loop {
        while requests.try_join_next().is_some() {}
        // Waits while `in_flight` answers are not yet written: backpressure.
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let item = tokio::select! {
            item = frames.next() => item,
            _ = tx.closed() => break,
        };
        match item {
            Some(Ok(Ok(Frame { request_id, body }))) => {
                let store = store.clone();
                let tx = tx.clone();
                let timeout = config.request_timeout;
                requests.spawn(
                    async move {
                        let kind = body.kind();
                        let answer = match tokio::time::timeout(timeout, execute(&*store, body)).await {
                            Ok(answer) => answer,
                            Err(_) => {
                                Response::Err(Error::Timeout(format!("{kind} took longer than {timeout:?}")))
                            }
                        };
                        let _ = tx.send(Frame { request_id, body: answer }).await;
                        drop(permit);
                    }
                    .in_current_span(),
                );
            }
            // A frame of a foreign cluster or version, or a request this build does
            // not know: answer it, and go on with the next frame.
            Some(Ok(Err(FrameError { request_id: Some(id), error }))) if id != CONNECTION_ERROR_ID => {
                tracing::debug!(id, %error, "bad request frame");
                if tx.send(Frame { request_id: id, body: Response::Err(error) }).await.is_err() {
                    break;
                }
            }
            // Not our protocol: say why, and close.
            Some(Ok(Err(FrameError { error, .. }))) | Some(Err(error)) => {
                tracing::debug!(%error, "closing a connection that does not speak the service protocol");
                if !matches!(error, Error::Io(_)) {
                    let _ =
                        tx.send(Frame { request_id: CONNECTION_ERROR_ID, body: Response::Err(error) }).await;
                }
                break;
            }
            None => break,
        }
    }
    drop(tx);
    // Requests already running are answered (each bounded by the request
    // timeout); the writer ends once the last answer is written.
    while requests.join_next().await.is_some() {}
    // A reader that stopped reading gets a little time, then the connection closes.
    let mut writer = writer;
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer.0).await;
}

type AnswerSink = FramedWrite<OwnedWriteHalf, ServerCodec>;

async fn write_answers(mut sink: AnswerSink, mut rx: mpsc::Receiver<Frame<Response>>) {
    while let Some(frame) = rx.recv().await {
        let request_id = frame.request_id;
        let sent = match sink.feed(frame).await {
            // The answer alone does not fit a frame (a huge prefix read): say so instead.
            Err(e @ (Error::FrameTooLarge { .. } | Error::Encode(_))) => {
                sink.feed(Frame { request_id, body: Response::Err(e) }).await
            }
            other => other,
        };
        // Write out when no further answer is ready, to batch busy connections.
        let sent = match sent {
            Ok(()) if rx.is_empty() => sink.flush().await,
            other => other,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot write answers, closing the connection");
            return;
        }
    }
    let _ = sink.close().await;
}

/// Runs one request against the local store. Writes and consistent reads are
/// executed by the store only when this member leads; otherwise the store
/// answers [`Error::NotLeader`] with the leader it knows.
pub async fn execute<S: ConsensusStore>(store: &S, request: Request) -> Response {
    let result = match request {
        Request::Get { key } => store.get(&key).map(Response::Value),
        Request::ConsistentGet { key } => store.consistent_get(&key).await.map(Response::Value),
        Request::GetPrefix { prefix } => store.get_prefix(&prefix).map(Response::Entries),
        Request::Write(write) => store.write(write).await.map(Response::Written),
        Request::Members => members(store).map(Response::Members),
        Request::Status => Ok(Response::Status(Box::new(store.status()))),
        Request::Export => export(store).await,
        Request::ForceLeave { member } => force_leave(store, member).await.map(Response::ForceLeft),
        Request::Liveness => Ok(Response::Liveness(store.liveness())),
    };
    result.unwrap_or_else(Response::Err)
}

/// The whole store, read after the leader confirmed its leadership with a
/// quorum: nothing acknowledged before the request is missing.
async fn export<S: ConsensusStore>(store: &S) -> Result<Response> {
    store.consistent_get(keys::LEADER_KEY).await?;
    let (revision, entries) = store.get_prefix_with_revision("")?;
    Ok(Response::Export { revision, entries })
}

/// Takes `member` out of raft, frees its short id and drops its records, on
/// the leader. A member still alive in gossip is added back by the leader's
/// housekeeping as a new joiner would be: stop it first.
async fn force_leave<S: ConsensusStore>(store: &S, member: MemberId) -> Result<ForceLeft> {
    let status = store.status();
    if !status.is_leader() {
        let hint = status.leader.map(|member_id| cluster_core::LeaderHint {
            member_id,
            service_addr: status.leader_service_addr().map(str::to_owned),
        });
        return Err(Error::NotLeader(hint));
    }
    if member == status.member_id {
        return Err(Error::BadRequest(format!(
            "member {member} is the leader answering this request: stop it, and force the leave through another member"
        )));
    }
    let was_in_raft = status.all_members().contains(&member);
    store.remove(member).await?;
    let held_short_id = store.release_short_id(member).await?;
    let had_record = store.delete(&keys::member_key(member)).await?;
    store.delete(&keys::voter_key(member)).await?;
    store.delete(&keys::nonvoter_key(member)).await?;
    tracing::info!(%member, was_in_raft, held_short_id, "forced leave");
    Ok(ForceLeft { was_in_raft, held_short_id, had_record })
}

/// Every [`MemberInfo`] in the local store, in member-id order. Entries that
/// do not decode are skipped (and logged): one bad record must not hide the others.
pub fn members<S: ConsensusStore>(store: &S) -> Result<Vec<MemberInfo>> {
    let entries = store.get_prefix(keys::MEMBERS_PREFIX)?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, bytes)| match MemberInfo::from_bytes(&bytes) {
            Ok(info) => Some(info),
            Err(error) => {
                tracing::warn!(%key, %error, "skipping a member record that does not decode");
                None
            }
        })
        .collect())
}
