//! Group commit of writes: concurrent writes on the leader travel in one log
//! entry, so they share one append, one fsync per member and one round of
//! replication. (openraft 0.9 waits for each append to be durable before the
//! next, so without batching durable throughput is one write per fsync.)
//!
//! One task owns the queue: it takes every write waiting (up to a count and
//! a size), proposes them as one [`WriteBatch`], and answers each caller with
//! its own outcome. A few batches may be in flight at once.

use cluster_core::{Error, Result, WriteOp, WriteOutcome, WriteRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::IntoStoreError;
use crate::typecfg::{Raft, WriteBatch};

/// The most writes in one log entry.
const MAX_BATCH_WRITES: usize = 1024;
/// Roughly the most bytes in one log entry (a larger single write goes alone).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Batches proposed and not yet answered.
const MAX_IN_FLIGHT: usize = 2;
/// Writes waiting for a batch.
const QUEUE: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<WriteOutcome>>;

/// Roughly the encoded size of a write.
pub(crate) fn request_size(req: &WriteRequest) -> usize {
    const OVERHEAD: usize = 48;
    OVERHEAD
        + match &req.op {
            WriteOp::Set { key, value } => key.len() + value.len(),
            WriteOp::CompareAndSet { key, expected, new } => {
                key.len() + expected.as_ref().map_or(0, Vec::len) + new.as_ref().map_or(0, Vec::len)
            }
            other => other.key().map_or(0, str::len),
        }
}

/// The handle to the batching task.
#[derive(Clone)]
pub(crate) struct WriteBatcher {
    tx: mpsc::Sender<(WriteRequest, Reply)>,
}

impl WriteBatcher {
    /// Starts the batching task; it ends when `cancel` fires.
    pub(crate) fn spawn(raft: Raft, cancel: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(raft, rx, cancel).in_current_span());
        (WriteBatcher { tx }, task)
    }

    /// Proposes `req` with the writes around it; its own outcome.
    pub(crate) async fn write(&self, req: WriteRequest) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((req, reply)).await.map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<(WriteRequest, Reply)>, cancel: CancellationToken) {
    let mut in_flight = JoinSet::new();
    loop {
        // Wait for room, then for a first write.
        while in_flight.len() >= MAX_IN_FLIGHT {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = in_flight.join_next() => {}
            }
        }
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
            next = rx.recv() => match next {
                Some(w) => w,
                None => return,
            },
        };
        let mut bytes = request_size(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_WRITES && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(w) => {
                    bytes += request_size(&w.0);
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        in_flight.spawn(propose(raft, batch).in_current_span());
    }
}

async fn propose(raft: Raft, batch: Vec<(WriteRequest, Reply)>) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match raft.client_write(WriteBatch(requests)).await {
        Ok(response) if response.data.0.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(response.data.0) {
                // The caller may have given up (timeout): nothing to do.
                let _ = reply.send(outcome);
            }
        }
        Ok(response) => {
            let e = Error::Internal(format!(
                "a batch of {} writes got {} answers",
                replies.len(),
                response.data.0.len()
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            let e = e.into_store_error();
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
