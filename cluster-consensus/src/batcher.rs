//! Group commit of writes: concurrent writes on the leader travel in one log
//! entry, so they share one append, one fsync per member and one round of
//! replication. (openraft 0.9 waits for each append to be durable before the
//! next, so without batching durable throughput is one write per fsync.)
//!
//! One task owns the queue: it takes every write waiting (up to a count and
//! a size), proposes them as one [`WriteBatch`], and answers each caller with
//! its own outcome. A few batches may be in flight at once.
//!
//! Where a batch goes is [`Propose`]: raft in production, a fake in the
//! tests, which check every write is answered once, with its own answer, in
//! batches that keep the order writes came in.

use std::future::Future;

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

/// Where a batch goes.
pub(crate) trait Propose: Clone + Send + Sync + 'static {
    /// Proposes `batch` as one log entry; once applied, one answer per
    /// write, in the batch's order.
    fn propose(&self, batch: WriteBatch) -> impl Future<Output = Result<Vec<Result<WriteOutcome>>>> + Send;
}

impl Propose for Raft {
    async fn propose(&self, batch: WriteBatch) -> Result<Vec<Result<WriteOutcome>>> {
        self.client_write(batch).await.map(|r| r.data.0).map_err(IntoStoreError::into_store_error)
    }
}

/// The handle to the batching task.
#[derive(Clone)]
pub(crate) struct WriteBatcher {
    tx: mpsc::Sender<(WriteRequest, Reply)>,
}

impl WriteBatcher {
    /// Starts the batching task; it ends when `cancel` fires.
    pub(crate) fn spawn(to: impl Propose, cancel: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(to, rx, cancel).in_current_span());
        (WriteBatcher { tx }, task)
    }

    /// Proposes `req` with the writes around it; its own outcome.
    pub(crate) async fn write(&self, req: WriteRequest) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((req, reply)).await.map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

async fn run(to: impl Propose, mut rx: mpsc::Receiver<(WriteRequest, Reply)>, cancel: CancellationToken) {
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
        in_flight.spawn(propose(to.clone(), batch).in_current_span());
    }
}

async fn propose(to: impl Propose, batch: Vec<(WriteRequest, Reply)>) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match to.propose(WriteBatch(requests)).await {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(answers) {
                // The caller may have given up (timeout): nothing to do.
                let _ = reply.send(outcome);
            }
        }
        Ok(answers) => {
            let e =
                Error::Internal(format!("a batch of {} writes got {} answers", replies.len(), answers.len()));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use cluster_core::ShortId;
    use proptest::prelude::*;

    use super::*;

    /// How the fake log answers a batch.
    #[derive(Debug, Clone, Copy)]
    enum Answers {
        /// Write `w{i}` is answered `ShortId(i + 1)`: its own answer.
        Each,
        /// One answer short.
        Short,
        /// The proposal fails.
        Fail,
    }

    /// A log that records the batches proposed, in the order proposed.
    #[derive(Clone)]
    struct FakeLog {
        batches: Arc<Mutex<Vec<Vec<WriteRequest>>>>,
        answers: Answers,
    }

    fn own_answer(req: &WriteRequest) -> WriteOutcome {
        let i: u32 = req.op.key().and_then(|k| k.strip_prefix('w')).and_then(|n| n.parse().ok()).unwrap();
        WriteOutcome::ShortId(ShortId::new(i + 1).unwrap())
    }

    impl Propose for FakeLog {
        async fn propose(&self, batch: WriteBatch) -> Result<Vec<Result<WriteOutcome>>> {
            self.batches.lock().unwrap().push(batch.0.clone());
            tokio::task::yield_now().await;
            match self.answers {
                Answers::Each => Ok(batch.0.iter().map(|r| Ok(own_answer(r))).collect()),
                Answers::Short => Ok(batch.0.iter().skip(1).map(|r| Ok(own_answer(r))).collect()),
                Answers::Fail => Err(Error::Timeout("the fake log".into())),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Writes come in (with pauses that let batches go out between them):
        /// each is answered exactly once, with its own answer; batches hold
        /// the writes in the order they came in and stay within their bounds.
        /// (On one thread the batches also reach the log in order; on many,
        /// two batches in flight may swap, which is still linearizable: no
        /// write in either was answered before the other was sent.)
        #[test]
        fn every_write_is_answered_once_with_its_own_answer_in_order(
            values in proptest::collection::vec((0..600usize, any::<bool>()), 1..1500),
            answers in prop_oneof![Just(Answers::Each), Just(Answers::Short), Just(Answers::Fail)],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let log = FakeLog { batches: Arc::default(), answers };
            let requests: Vec<WriteRequest> = values
                .iter()
                .enumerate()
                .map(|(i, (len, _))| WriteRequest {
                    op: WriteOp::Set { key: format!("w{i}"), value: vec![0; *len] },
                    request_id: None,
                })
                .collect();
            let outcomes = rt.block_on(async {
                let cancel = CancellationToken::new();
                let (batcher, task) = WriteBatcher::spawn(log.clone(), cancel.clone());
                let mut waiting = Vec::new();
                for (req, (_, pause)) in requests.iter().zip(&values) {
                    let (reply, answer) = oneshot::channel();
                    batcher.tx.send((req.clone(), reply)).await.expect("the batcher runs");
                    waiting.push(answer);
                    if *pause {
                        tokio::task::yield_now().await;
                    }
                }
                let mut outcomes = Vec::new();
                for answer in waiting {
                    outcomes.push(answer.await.expect("every write is answered"));
                }
                cancel.cancel();
                task.await.expect("the batcher ends");
                outcomes
            });
            let batches = log.batches.lock().unwrap().clone();
            let proposed: Vec<WriteRequest> = batches.iter().flatten().cloned().collect();
            prop_assert_eq!(&proposed, &requests, "each write proposed once, in the order it came in");
            for batch in &batches {
                prop_assert!(!batch.is_empty() && batch.len() <= MAX_BATCH_WRITES);
                let before_last: usize = batch[..batch.len() - 1].iter().map(request_size).sum();
                prop_assert!(before_last < MAX_BATCH_BYTES, "a batch of {} bytes took more", before_last);
            }
            for (req, outcome) in requests.iter().zip(outcomes) {
                match answers {
                    Answers::Each => prop_assert_eq!(outcome, Ok(own_answer(req))),
                    Answers::Short => prop_assert!(matches!(outcome, Err(Error::Internal(_)))),
                    Answers::Fail => prop_assert_eq!(outcome, Err(Error::Timeout("the fake log".into()))),
                }
            }
        }
    }
}
