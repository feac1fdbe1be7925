//! The client workload of a fault test: concurrent clients sending set,
//! consistent get, compare-and-set and delete on a few keys to random members,
//! every call and outcome recorded in a [`HistoryRecorder`].
//!
//! Each operation goes to a member picked at random, so requests reach followers
//! and nonvoters and are redirected to the leader. Outcomes follow the
//! [`cluster_core::Error`] contract: an answer is a result; a clear refusal
//! (bad request, bad key, another cluster, a frame too large) certainly did not
//! take effect and is [`Outcome::Failed`]; anything else (timeout, unreachable,
//! not leader after retries, a lost connection) may or may not have taken effect
//! and is [`Outcome::Unknown`]. A client whose operation ended unknown continues
//! under a new client number, since the unknown operation may still be running.
//!
//! Written values are unique (`<client>-<n>`), which lets the checker tell every
//! write apart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use cluster_core::Error;
use cluster_service::{RouterOptions, ServiceClient};
use cluster_testkit::holds_within;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::history::{HistoryRecorder, Op, Outcome};

/// The client number of the final reads (distinct from workload clients).
pub const FINAL_READ_CLIENT: u64 = u64::MAX / 2;

/// The shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys `k0` … `k<keys-1>`.
    pub keys: usize,
    /// Operations in all, at most.
    pub max_ops: u64,
    /// Time the workload may run, at most.
    pub max_duration: Duration,
    /// The deadline of one operation, retries included ([`RouterOptions::op_timeout`]).
    pub op_timeout: Duration,
    /// A pause between two operations of one client.
    pub pace: Duration,
    /// The seed of the clients' random choices.
    pub seed: u64,
    /// Moves to `keys` fresh keys every this often (long runs: it bounds the
    /// unknown operations per key, which the checker's search is exponential in).
    pub rotate_keys_every: Option<Duration>,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            clients: 4,
            keys: 4,
            max_ops: 100_000,
            max_duration: Duration::from_secs(60),
            op_timeout: Duration::from_secs(10),
            pace: Duration::from_millis(5),
            seed: 1,
            rotate_keys_every: None,
        }
    }
}

/// The name of key `i`.
pub fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// What a workload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Operations called.
    pub ops: u64,
    /// Operations answered.
    pub ok: u64,
    /// Operations certainly not applied.
    pub failed: u64,
    /// Operations of unknown outcome.
    pub unknown: u64,
    /// Keys `k0` … `k<keys_used-1>` may have been written.
    pub keys_used: usize,
}

#[derive(Debug, Default)]
struct Counters {
    ops: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
    keys_used: AtomicUsize,
}

impl Counters {
    fn stats(&self) -> WorkloadStats {
        WorkloadStats {
            ops: self.ops.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            keys_used: self.keys_used.load(Ordering::Relaxed),
        }
    }
}

/// A running workload; [`Workload::stop`] ends it.
#[derive(Debug)]
pub struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// Clients of every member, each trying that member first (and the others after a failure).
fn clients_by_member(addrs: &[String], options: &RouterOptions) -> Result<Vec<ServiceClient>> {
    (0..addrs.len())
        .map(|first| {
            let rotated: Vec<String> = addrs[first..].iter().chain(&addrs[..first]).cloned().collect();
            ServiceClient::new(rotated, options.clone()).map_err(|e| anyhow!("{e}"))
        })
        .collect()
}

/// The outcome recorded for an error: see the module documentation.
pub fn outcome_of_error(error: &Error) -> Outcome {
    match error {
        Error::BadRequest(_)
        | Error::BadKey { .. }
        | Error::ClusterMismatch { .. }
        | Error::FrameTooLarge { .. }
        | Error::VersionMismatch { .. }
        | Error::BadMagic => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

impl Workload {
    /// Starts `spec.clients` clients against the members at `addrs`.
    pub fn start(
        addrs: &[String],
        cluster_id: &str,
        recorder: HistoryRecorder,
        spec: WorkloadSpec,
    ) -> Result<Workload> {
        let mut options = crate::harness::security::client_options(cluster_id);
        options.op_timeout = spec.op_timeout;
        options.attempt_timeout = spec.op_timeout.min(Duration::from_secs(3));
        let clients = clients_by_member(addrs, &options)?;
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let deadline = started + spec.max_duration;
        counters.keys_used.store(spec.keys.max(1), Ordering::Relaxed);
        let tasks = (0..spec.clients)
            .map(|c| {
                let run = ClientRun {
                    number: c as u64,
                    clients: clients.clone(),
                    recorder: recorder.clone(),
                    counters: counters.clone(),
                    spec: spec.clone(),
                    rng: StdRng::seed_from_u64(spec.seed.wrapping_mul(1_000_003).wrapping_add(c as u64)),
                    seen: BTreeMap::new(),
                };
                tokio::spawn(run.run(stop_rx.clone(), started, deadline))
            })
            .collect();
        Ok(Workload { stop, tasks, counters })
    }

    /// What the workload did so far.
    pub fn stats(&self) -> WorkloadStats {
        self.counters.stats()
    }

    /// True once every client has ended (operation or time budget spent).
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Ends the workload: each client finishes its current operation and stops.
    pub async fn stop(self) -> WorkloadStats {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.counters.stats()
    }
}

struct ClientRun {
    number: u64,
    clients: Vec<ServiceClient>,
    recorder: HistoryRecorder,
    counters: Arc<Counters>,
    spec: WorkloadSpec,
    rng: StdRng,
    /// The last value this client saw per key, for compare-and-set's expectation.
    seen: BTreeMap<String, Option<Vec<u8>>>,
}

impl ClientRun {
    async fn run(mut self, stop: watch::Receiver<bool>, started: Instant, deadline: Instant) {
        let mut generation = 0u64;
        let mut n = 0u64;
        loop {
            if *stop.borrow() || Instant::now() >= deadline {
                return;
            }
            if self.counters.ops.fetch_add(1, Ordering::Relaxed) >= self.spec.max_ops {
                self.counters.ops.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            n += 1;
            let id = self.number + 1_000 * generation;
            let keys = self.spec.keys.max(1);
            let epoch = match self.spec.rotate_keys_every {
                Some(every) if !every.is_zero() => {
                    (started.elapsed().as_millis() / every.as_millis()) as usize
                }
                _ => 0,
            };
            self.counters.keys_used.fetch_max((epoch + 1) * keys, Ordering::Relaxed);
            let key = key_name(epoch * keys + self.rng.random_range(0..keys));
            let member = self.rng.random_range(0..self.clients.len());
            let value = format!("{id}-{n}").into_bytes();
            let op = match self.rng.random_range(0..100) {
                0..35 => Op::Set { value },
                35..70 => Op::Get,
                70..90 => {
                    let expected = self.seen.get(&key).cloned().flatten();
                    Op::Cas { expected, new: Some(value) }
                }
                _ => Op::Delete,
            };
            let outcome = self.execute(id, &key, member, op).await;
            match outcome {
                Outcome::Unknown => {
                    self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    generation += 1;
                }
                Outcome::Failed => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    self.counters.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !self.spec.pace.is_zero() {
                tokio::time::sleep(self.spec.pace).await;
            }
        }
    }

    async fn execute(&mut self, id: u64, key: &str, member: usize, op: Op) -> Outcome {
        let client = &self.clients[member];
        let token = self.recorder.begin(id, key, op.clone());
        let outcome = match op {
            Op::Set { value } => match client.set(key, value.clone()).await {
                Ok(created) => {
                    self.seen.insert(key.to_owned(), Some(value));
                    Outcome::SetOk { created }
                }
                Err(e) => outcome_of_error(&e),
            },
            Op::Get => match client.consistent_get(key).await {
                Ok(value) => {
                    self.seen.insert(key.to_owned(), value.clone());
                    Outcome::GetOk(value)
                }
                Err(e) => outcome_of_error(&e),
            },
            Op::Delete => match client.delete(key).await {
                Ok(existed) => {
                    self.seen.insert(key.to_owned(), None);
                    Outcome::DeleteOk { existed }
                }
                Err(e) => outcome_of_error(&e),
            },
            Op::Cas { expected, new } => match client.compare_and_set(key, expected, new).await {
                Ok(cas) => {
                    self.seen.insert(key.to_owned(), cas.current.clone());
                    Outcome::CasOk { succeeded: cas.succeeded, current: cas.current }
                }
                Err(e) => outcome_of_error(&e),
            },
        };
        self.recorder.end(token, outcome.clone());
        outcome
    }
}

/// Reads every key with a consistent get once the faults are over, recording each
/// read in the history, so that the checker also judges the final state: an
/// acknowledged write that is lost makes the final read non-linearizable. Each key
/// is retried until `deadline`; the values read are returned.
pub async fn final_reads(
    addrs: &[String],
    cluster_id: &str,
    recorder: &HistoryRecorder,
    keys: usize,
    deadline: Duration,
) -> Result<BTreeMap<String, Option<Vec<u8>>>> {
    let mut options = crate::harness::security::client_options(cluster_id);
    options.op_timeout = Duration::from_secs(5);
    let client = ServiceClient::new(addrs.to_vec(), options).map_err(|e| anyhow!("{e}"))?;
    let until = Instant::now() + deadline;
    let mut values = BTreeMap::new();
    for k in 0..keys {
        let key = key_name(k);
        // Every attempt is in the history, the failed ones as unknown.
        let (read, last) = (std::sync::Mutex::new(None), std::sync::Mutex::new(None));
        let (client, key_ref, read_ref, last_ref) = (&client, &key, &read, &last);
        let attempt = move || async move {
            let token = recorder.begin(FINAL_READ_CLIENT, key_ref.as_str(), Op::Get);
            match client.consistent_get(key_ref).await {
                Ok(value) => {
                    recorder.end(token, Outcome::GetOk(value.clone()));
                    *read_ref.lock().unwrap() = Some(value);
                    true
                }
                Err(e) => {
                    recorder.end(token, Outcome::Unknown);
                    *last_ref.lock().unwrap() = Some(e);
                    false
                }
            }
        };
        if !holds_within(until.saturating_duration_since(Instant::now()), attempt).await {
            let e = last.into_inner().unwrap().map_or_else(String::new, |e| e.to_string());
            return Err(anyhow!("no consistent read of {key} within {deadline:?}: {e}"));
        }
        values.insert(key, read.into_inner().unwrap().flatten());
    }
    Ok(values)
}
