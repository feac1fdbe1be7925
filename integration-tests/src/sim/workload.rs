//! The simulation's clients: set, compare-and-set, delete, linearizable and
//! local reads through random members, recorded on simulated time, and one
//! watch per member.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_core::{CasOutcome, Error, WatchEvent};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::Members;
use crate::harness::client::outcome_of_error;
use crate::history::{History, Op, Operation, Outcome};

/// The prefix of the workload's keys.
pub const KEY_PREFIX: &str = "sim/";

/// The deadline of one client operation.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The history of one simulation, on simulated time.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
    /// Values a local read saw that no client ever wrote.
    pub(crate) phantom_reads: Arc<Mutex<Vec<String>>>,
    written: Arc<Mutex<BTreeSet<Vec<u8>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    /// An empty history starting now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            operations: Arc::default(),
            phantom_reads: Arc::default(),
            written: Arc::default(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The operations so far.
    pub fn history(&self) -> History {
        History::new(lock(&self.operations).clone())
    }

    /// Runs `op` on `key` through member `member` and records it.
    pub async fn run(&self, members: &Members, member: usize, client: u64, key: &str, op: Op) -> Outcome {
        if let Op::Set { value } | Op::Cas { new: Some(value), .. } = &op {
            lock(&self.written).insert(value.clone());
        }
        let call = self.now();
        let Some(cluster) = members.get(member) else {
            return Outcome::Failed;
        };
        let store = cluster.store();
        let work = async {
            match &op {
                Op::Set { value } => {
                    store.set(key, value.clone()).await.map(|created| Outcome::SetOk { created })
                }
                Op::Get => store.consistent_get(key).await.map(Outcome::GetOk),
                Op::Delete => store.delete(key).await.map(|existed| Outcome::DeleteOk { existed }),
                Op::Cas { expected, new } => {
                    store.compare_and_set(key, expected.clone(), new.clone()).await.map(|o| cas_outcome(&o))
                }
            }
        };
        let outcome = match tokio::time::timeout(OP_TIMEOUT, work).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => outcome_of_error(&e),
            Err(_) => Outcome::Unknown,
        };
        let ret = (!outcome.is_unknown()).then(|| self.now());
        if !matches!(outcome, Outcome::Failed) {
            let operation =
                Operation { client, key: key.to_owned(), op, call, ret, outcome: outcome.clone() };
            lock(&self.operations).push(operation);
        }
        outcome
    }

    /// A local (possibly stale) read: not part of the linearizable history,
    /// but it must return a value some client wrote.
    pub async fn local_read(&self, members: &Members, member: usize, key: &str) {
        let Some(cluster) = members.get(member) else { return };
        if let Ok(Some(value)) = cluster.store().get(key).await
            && !lock(&self.written).contains(&value)
        {
            lock(&self.phantom_reads).push(format!("{key} = {}", String::from_utf8_lossy(&value)));
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

fn cas_outcome(outcome: &CasOutcome) -> Outcome {
    Outcome::CasOk { succeeded: outcome.succeeded, current: outcome.current.clone() }
}

/// One client: random operations on `keys` keys through random members until `until`.
pub async fn client(recorder: Recorder, members: Members, id: u64, keys: usize, seed: u64, until: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = id;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let key = format!("{KEY_PREFIX}{}", rng.random_range(0..keys));
        let member = rng.random_range(0..members.len());
        let value = format!("c{id}-{n}").into_bytes();
        let op = match rng.random_range(0..100) {
            0..35 => Op::Set { value },
            35..50 => {
                let expected =
                    if rng.random_bool(0.3) { None } else { Some(format!("c{id}-{}", n - 1).into_bytes()) };
                Op::Cas { expected, new: Some(value) }
            }
            50..60 => Op::Delete,
            60..90 => Op::Get,
            _ => {
                recorder.local_read(&members, member, &key).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
                continue;
            }
        };
        if recorder.run(&members, member, client, &key, op).await.is_unknown() {
            // The unknown operation may still take effect: go on as a new client.
            client += 1 << 32;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
    }
}

/// What one member's watch saw.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    /// The events, in order.
    pub events: Vec<(u64, String, Option<Vec<u8>>)>,
    /// Why it ended early, if it did.
    pub ended: Option<String>,
}

/// Follows the workload's keys through member `member` until its watch ends.
pub async fn watch(members: Members, member: usize, into: Arc<Mutex<Watched>>) {
    let Some(cluster) = members.get(member) else { return };
    let mut watch = Box::pin(cluster.store().watch(KEY_PREFIX, None));
    while let Some(event) = watch.next().await {
        let mut watched = lock(&into);
        match event {
            Ok(WatchEvent { key, value, revision }) => watched.events.push((revision, key, value)),
            Err(e) => {
                watched.ended = Some(describe(&e));
                return;
            }
        }
    }
}

fn describe(e: &Error) -> String {
    format!("{:?}: {e}", e.kind())
}
