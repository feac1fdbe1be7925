//! Whole clusters in one process on simulated time, every fault from a seed.
//!
//! [`simulate`] runs one seed: `members` complete members (the facade's
//! [`Cluster`]: gossip, raft, the forwarding service, housekeeping) on a
//! single-threaded tokio runtime whose clock is paused — time advances only
//! when every task waits, so a run of simulated minutes takes wall seconds.
//! Gossip travels on [`cluster_gossip::sim::SimNetwork`], raft and the
//! service on [`cluster_rpc::memnet`] (each member a host `10.0.0.x`, given
//! to the facade as [`ClusterConfig::network`]), both under the seed's
//! [`Faults`]; raft draws its election timeouts from the seed
//! ([`cluster_consensus::runtime::seed_thread_rng`]). No member opens a real
//! socket: `10.0.0.x` is no local address, so a real bind would fail. A
//! nemesis cuts links one way, isolates a member, makes a bridge partition,
//! slows a member, pauses one, crashes a member and starts a replacement,
//! while clients run the workload; then every fault heals and the invariants are checked (see
//! [`checks`]). See `docs/design-notes.md` for what is deterministic and
//! what is not yet.

pub mod checks;
pub mod entropy;
pub mod faults;
pub mod workload;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_facade::{Cluster, ClusterConfig};
use cluster_gossip::sim::SimNetwork;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

pub use faults::{Faults, gossip_addr, member_ip};
use workload::{Recorder, Watched};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Every random choice comes from it.
    pub seed: u64,
    /// Members at the start.
    pub members: usize,
    /// Simulated time the workload and the nemesis run.
    pub run_for: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients use.
    pub keys: usize,
}

impl SimOptions {
    /// The default simulation of `seed` with `members` members.
    pub fn new(seed: u64, members: usize) -> Self {
        SimOptions { seed, members, run_for: Duration::from_secs(20), clients: 3, keys: 3 }
    }
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Every invariant that failed, described.
    pub violations: Vec<String>,
    /// A digest of the history and of the final state.
    pub digest: u64,
    /// Operations in the history.
    pub operations: usize,
}

/// The members of a simulation, by slot; a crashed member's slot is empty
/// until its replacement starts.
#[derive(Clone, Default)]
pub struct Members(Arc<Mutex<Vec<Option<Cluster>>>>);

impl Members {
    fn lock(&self) -> MutexGuard<'_, Vec<Option<Cluster>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The member in slot `i`, if it runs.
    pub fn get(&self, i: usize) -> Option<Cluster> {
        self.lock().get(i).cloned().flatten()
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True with no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The running members.
    pub fn running(&self) -> Vec<Cluster> {
        self.lock().iter().flatten().cloned().collect()
    }

    fn set(&self, i: usize, member: Option<Cluster>) -> Option<Cluster> {
        std::mem::replace(&mut self.lock()[i], member)
    }
}

/// Runs `count` seeds from `first`, each as [`simulate`] with `members`
/// members (and `tune` applied to its options), on `threads` threads; the
/// reports in seed order.
pub fn simulate_seeds(
    first: u64,
    count: u64,
    members: usize,
    threads: usize,
    tune: impl Fn(&mut SimOptions) + Sync,
) -> Vec<SimReport> {
    let next = std::sync::atomic::AtomicU64::new(0);
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let mut options = SimOptions::new(first.wrapping_add(i), members);
                    tune(&mut options);
                    let report = simulate(&options);
                    reports.lock().unwrap_or_else(|p| p.into_inner()).push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|r| r.seed);
    reports
}

/// The grid port every member advertises (nothing listens on it in a
/// simulation; a fixed port is never bound by the facade).
const GRID_PORT: u16 = 7000;

/// Member slot `i`'s configuration: its own address on both simulated
/// networks, raft's timing fitted to the seed's link delays (an election
/// timeout well above a round trip, as a real deployment would set it).
fn config(i: usize, faults: &Faults) -> ClusterConfig {
    let mut config = ClusterConfig {
        cluster_id: "sim".into(),
        host: member_ip(i).to_string(),
        gossip_port: gossip_addr(i).port(),
        grid_port: GRID_PORT,
        http_port: None,
        network: faults.net(i),
        ..ClusterConfig::default()
    };
    // openraft bounds an AppendEntries by the heartbeat interval: it must
    // hold a connect and a request, each a round trip with jitter.
    let one_way = faults.max_delay().as_millis() as u64 * 3 / 2 + 20;
    config.raft.heartbeat_ms = config.raft.heartbeat_ms.max(4 * one_way + 50);
    config.raft.election_timeout_min_ms =
        config.raft.election_timeout_min_ms.max(5 * config.raft.heartbeat_ms);
    config.raft.election_timeout_max_ms = 2 * config.raft.election_timeout_min_ms;
    // A connect and the proof of a member's identity that follows it are
    // bounded by the connect timeout: it must hold both round trips too.
    config.limits.connect_timeout =
        config.limits.connect_timeout.max(std::time::Duration::from_millis(8 * one_way));
    config.timeouts.start_ms = 120_000;
    if i > 0 {
        config.seeds = vec![gossip_addr(0).to_string()];
    }
    config.timeouts.failure_grace_ms = 3_000;
    config.timeouts.short_id_reap_ms = 10_000;
    config
}

/// Runs one seed on a runtime of its own, on a new thread (see [`entropy`]:
/// a thread keeps the randomness it drew first).
pub fn simulate(options: &SimOptions) -> SimReport {
    let seed = options.seed;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name(format!("sim-{seed}")).spawn_scoped(scope, || {
            entropy::seed_thread(Some(seed));
            let report = simulate_here(options);
            entropy::seed_thread(None);
            report
        });
        match thread.map(|t| t.join()) {
            Ok(Ok(report)) => report,
            Ok(Err(_)) => SimReport::failed(seed, "the simulation panicked".into()),
            Err(e) => SimReport::failed(seed, format!("no thread: {e}")),
        }
    })
}

impl SimReport {
    fn failed(seed: u64, why: String) -> Self {
        SimReport { seed, violations: vec![why], digest: 0, operations: 0 }
    }
}

fn simulate_here(options: &SimOptions) -> SimReport {
    let faults = Faults::new(options.seed);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()
    {
        Ok(r) => r,
        Err(e) => {
            return SimReport {
                seed: options.seed,
                violations: vec![format!("no runtime: {e}")],
                digest: 0,
                operations: 0,
            };
        }
    };
    cluster_consensus::runtime::seed_thread_rng(Some(options.seed));
    cluster_core::id::seed_thread_member_ids(Some(options.seed));
    SimNetwork::install(Some(SimNetwork::new(Arc::new(faults.clone()))));
    let report = runtime.block_on(run(options, faults));
    drop(runtime);
    SimNetwork::install(None);
    cluster_consensus::runtime::seed_thread_rng(None);
    cluster_core::id::seed_thread_member_ids(None);
    report
}

async fn run(options: &SimOptions, faults: Faults) -> SimReport {
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x5eed);
    let mut violations = Vec::new();
    let members = Members::default();
    for i in 0..options.members {
        members.lock().push(None);
        match tokio::time::timeout(Duration::from_secs(150), Cluster::start(config(i, &faults))).await {
            Ok(Ok(member)) => {
                members.set(i, Some(member));
            }
            Ok(Err(e)) => violations.push(format!("member {i} did not start: {e}")),
            Err(_) => violations.push(format!("member {i} did not start in 150 s")),
        }
    }
    if !violations.is_empty() {
        stop_all(&members).await;
        return SimReport { seed: options.seed, violations, digest: 0, operations: 0 };
    }

    let recorder = Recorder::new();
    let until = Instant::now() + options.run_for;
    let watched: Vec<Arc<Mutex<Watched>>> = (0..options.members).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, into) in watched.iter().enumerate() {
        tasks.push(tokio::spawn(workload::watch(members.clone(), i, into.clone())));
    }
    let clients: Vec<_> = (0..options.clients)
        .map(|c| {
            let seed = rng.random();
            tokio::spawn(workload::client(
                recorder.clone(),
                members.clone(),
                c as u64,
                options.keys,
                seed,
                until,
            ))
        })
        .collect();
    let nemesis_seed = rng.random();
    nemesis(&members, &faults, nemesis_seed, until).await;
    for client in clients {
        let _ = client.await;
    }
    faults.heal();

    let final_state = checks::after_heal(&members, &recorder, options).await;
    violations.extend(final_state.violations);
    let history = recorder.history();
    violations.extend(checks::history(&history, &recorder));
    violations.extend(checks::watches(&watched));
    if !violations.is_empty() {
        violations.push(format!("faults at the end: {}", faults.describe()));
    }
    stop_all(&members).await;
    for task in tasks {
        task.abort();
    }
    let digest = checks::digest(&history, &final_state.summary);
    SimReport { seed: options.seed, violations, digest, operations: history.operations.len() }
}

async fn stop_all(members: &Members) {
    for i in 0..members.len() {
        if let Some(member) = members.set(i, None) {
            let _ = tokio::time::timeout(Duration::from_secs(30), member.abort()).await;
        }
    }
}

/// Faults until `until`: one at a time, each held for a few seconds, then healed.
async fn nemesis(members: &Members, faults: &Faults, seed: u64, until: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = members.len();
    while Instant::now() + Duration::from_secs(2) < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
        let victim = rng.random_range(0..n);
        let hold = Duration::from_millis(rng.random_range(1_000..4_000));
        match rng.random_range(0..6) {
            // One way: the victim hears everyone, nobody hears it.
            0 => (0..n).filter(|&j| j != victim).for_each(|j| faults.cut(victim, j)),
            // Isolated both ways.
            1 => (0..n).filter(|&j| j != victim).for_each(|j| {
                faults.cut(victim, j);
                faults.cut(j, victim);
            }),
            // A bridge: two sides that reach each other only through the victim.
            2 => {
                let side = |j: usize| (j + n - victim) % n <= n / 2;
                for a in (0..n).filter(|&a| a != victim) {
                    for b in (0..n).filter(|&b| b != victim && side(b) != side(a)) {
                        faults.cut(a, b);
                    }
                }
            }
            // Slow: every datagram from or to the victim takes 300–800 ms longer.
            3 => faults.slow(victim, Duration::from_millis(rng.random_range(300..800))),
            // Paused: nothing reaches or leaves it for the hold, then what waited arrives.
            4 => faults.pause(victim, hold),
            // A crash, and a replacement member in its slot after the hold.
            _ => {
                if !survivable(members, victim) {
                    continue;
                }
                if let Some(member) = members.set(victim, None) {
                    let _ = tokio::time::timeout(Duration::from_secs(30), member.abort()).await;
                    tokio::time::sleep(hold).await;
                    let mut config = config(victim, faults);
                    config.seeds =
                        (0..n).filter(|&j| j != victim).map(|j| gossip_addr(j).to_string()).collect();
                    if let Ok(Ok(member)) =
                        tokio::time::timeout(Duration::from_secs(150), Cluster::start(config)).await
                    {
                        members.set(victim, Some(member));
                    }
                }
                continue;
            }
        }
        tokio::time::sleep(hold).await;
        faults.heal();
    }
}

/// True if crashing the member in slot `victim` leaves a majority of the
/// raft voters running in every running member's view. A crash loses a
/// member for good here (no simulated disk yet: its replacement is a new
/// member), and no raft cluster recovers from losing a majority of its
/// voters for good: the nemesis crashes no such member, as a real crash
/// followed by a restart from the member's disk would not lose it.
fn survivable(members: &Members, victim: usize) -> bool {
    let Some(doomed) = members.get(victim).map(|m| m.member_id()) else { return true };
    let running = members.running();
    let alive: std::collections::BTreeSet<_> =
        running.iter().map(|m| m.member_id()).filter(|id| *id != doomed).collect();
    running.iter().all(|m| {
        let voters = m.consensus_status().voters;
        voters.keys().filter(|id| alive.contains(id)).count() * 2 > voters.len()
    })
}
