//! Fault scenarios against real `carbon agent` processes: each runs a recorded
//! client workload while it injects faults one at a time, waits for the cluster to
//! recover after each, and ends with the checker and every invariant (see
//! `integration_tests::harness::invariants`).
//!
//! Two scenarios run at a time (`CARBON_FAULTS_PARALLEL=1`: one at a time).
//! The two partition scenarios (one with a client member cut off) and the
//! three behind the network proxy (delay and loss, a one-way cut, a slow
//! follower) need root and `ip netns`, and skip with a message elsewhere. Two
//! scenarios run 7 members with 3 replicas (issue 24): four client members,
//! through which the workload sends most of its operations. `RUST_LOG` is passed to the agents (their logs
//! are kept with the history when a scenario fails); each proxied scenario
//! prints its proxy's seed (`CARBON_PROXY_SEED` repeats its choices).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cluster_core::RaftRole;
use cluster_core::testsuite::{DEADLINE, holds_within, init_tracing, wait_until};
use cluster_service::ServiceClient;
use integration_tests::harness::cluster::ClusterSpec;
use integration_tests::harness::netns::NetLab;
use integration_tests::harness::proxy::{LinkRule, LinkStats};
use integration_tests::harness::run::{FaultRun, RunSpec, Summary};
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// How many scenarios run at once: `$CARBON_FAULTS_PARALLEL`, else 2. Each
/// runs four or five agent processes, but mostly waits on them (pacing,
/// elections, recoveries), so two at a time fit a 2-core machine and halve the
/// suite's time; the verdicts never depend on timing.
fn parallel() -> usize {
    std::env::var("CARBON_FAULTS_PARALLEL").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2)
}

/// A slot to run a scenario in (see [`parallel`]).
async fn slot() -> SemaphorePermit<'static> {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(parallel())).acquire().await.expect("the semaphore is never closed")
}

/// Starts a scenario: in a slot, with logs, its cluster running.
async fn begin(spec: RunSpec) -> (SemaphorePermit<'static>, FaultRun) {
    let slot = slot().await;
    init_tracing();
    let run = FaultRun::start(spec).await.expect("the cluster starts");
    (slot, run)
}

/// Pacing between faults: lets the workload run; never a correctness wait.
const PACE: Duration = Duration::from_secs(2);

fn spec(name: &str, members: usize, voters: usize) -> RunSpec {
    let mut spec = RunSpec::new(name, ClusterSpec::new(members, voters));
    spec.workload.clients = 4;
    spec.workload.keys = 4;
    spec.workload.pace = Duration::from_millis(10);
    spec.workload.max_duration = Duration::from_secs(300);
    spec
}

fn report(summary: &Summary) {
    eprintln!("{summary}");
    summary.assert_ok();
}

/// The end of every scenario: the workload runs a last while, then the
/// checker and every invariant judge the run.
async fn end(run: FaultRun) {
    run.pace(PACE).await;
    report(&run.finish().await);
}

/// The leader the live members agree on.
async fn leader_of(run: &mut FaultRun) -> usize {
    run.wait_leader().await.expect("a leader")
}

/// Kills member `i` (SIGKILL), lets the cluster recover without it, restarts
/// it, and lets the cluster recover with it.
async fn kill_and_restart(run: &mut FaultRun, i: usize) {
    run.kill(i).expect("kill");
    run.recover().await;
    run.restart(i).await.expect("restart");
    run.recover().await;
}

/// Pauses member `i` (SIGSTOP) for `pause`, resumes it, and lets the cluster recover.
async fn pause_for(run: &mut FaultRun, i: usize, pause: Duration) {
    run.pause(i).expect("pause");
    run.pace(pause).await;
    run.resume(i).expect("resume");
    run.recover().await;
}

/// `spec` with its cluster placed by `place` (in network namespaces, behind
/// the proxy), or `None`, said, where this machine cannot: both need root and
/// `ip netns`.
fn in_netns(mut spec: RunSpec, place: fn(ClusterSpec) -> ClusterSpec) -> Option<RunSpec> {
    if let Some(why) = NetLab::unavailable() {
        eprintln!("skipped {:?}: needs root and ip netns ({why})", spec.name);
        return None;
    }
    spec.cluster = place(spec.cluster);
    Some(spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_repeatedly_under_load() {
    let (_slot, mut run) = begin(spec("leader killed 3 times", 5, 3)).await;
    for _ in 0..3 {
        run.pace(PACE).await;
        let leader = leader_of(&mut run).await;
        kill_and_restart(&mut run, leader).await;
    }
    end(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_member_killed_and_restarted() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let (_slot, mut run) = begin(spec("random members killed, stopped, restarted; a join", 5, 3)).await;
    for _ in 0..2 {
        run.pace(PACE).await;
        let victim = rng.random_range(0..run.cluster.len());
        run.kill(victim).expect("kill");
        run.pace(PACE).await;
        run.recover().await;
        run.restart(victim).await.expect("restart");
        run.recover().await;
    }
    // A graceful leave and a rejoin, then a new member: short ids are freed and taken.
    run.pace(PACE).await;
    let victim = rng.random_range(0..run.cluster.len());
    run.terminate(victim).expect("graceful stop");
    run.recover().await;
    run.restart(victim).await.expect("restart");
    run.recover().await;
    run.join().await.expect("a new member joins");
    run.recover().await;
    end(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_paused_beyond_the_election_timeout() {
    let (_slot, mut run) = begin(spec("leader, then a follower, paused 3 s", 5, 3)).await;
    // 3 s: beyond the election timeout (800 ms) and the failure grace (1 s).
    let pause = Duration::from_secs(3);
    run.pace(PACE).await;
    let leader = leader_of(&mut run).await;
    pause_for(&mut run, leader, pause).await;
    run.pace(PACE).await;
    let follower = (leader_of(&mut run).await + 1) % run.cluster.len();
    pause_for(&mut run, follower, pause).await;
    end(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_and_majority_partitions_then_healed() {
    let spec = spec("leader isolated, then a minority cut off", 5, 3);
    let Some(spec) = in_netns(spec, ClusterSpec::with_netns) else { return };
    let (_slot, mut run) = begin(spec).await;
    let n = run.cluster.len();

    // The leader alone on one side: the classic stale read of an isolated old leader.
    run.pace(PACE).await;
    let leader = leader_of(&mut run).await;
    let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
    run.partition(&[&[leader], &others]).expect("partition");
    // The cut is real: the majority elects a leader of its own.
    wait_until(DEADLINE, "the majority to elect a leader of its own", || async {
        let status = run.cluster.status_of(others[0]).await;
        let new_leader =
            status.ok().and_then(|s| s.leader).and_then(|l| run.cluster.index_of(&l.to_string()));
        new_leader.is_some_and(|l| l != leader)
    })
    .await;
    run.pace(Duration::from_secs(3)).await;
    run.heal().expect("heal");
    run.recover().await;

    // Two members that do not lead cut off from the three others (the leader among them).
    run.pace(PACE).await;
    let leader = leader_of(&mut run).await;
    let minority: Vec<usize> = (0..n).filter(|&i| i != leader).take(2).collect();
    let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
    run.partition(&[&minority, &majority]).expect("partition");
    run.pace(Duration::from_secs(4)).await;
    run.heal().expect("heal");
    run.recover().await;
    end(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_killed_and_restarted_from_its_data() {
    let (_slot, mut run) = begin(spec("whole cluster killed and restarted", 3, 3)).await;
    for _ in 0..2 {
        run.pace(PACE).await;
        run.fault("kill every member");
        run.cluster.kill_all().expect("kill all");
        run.restart_stopped().await.expect("every member restarts");
        run.recover().await;
    }
    end(run).await;
}

/// A member restarted from its data directory on new ports (as with ephemeral
/// ports or a rescheduled container) must be reached at the new ones: the
/// invariants check its record's ports and that it applies new writes. (Found
/// stuck before 84dfd25: the leader replicated to the old raft address forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_restarted_on_new_ports() {
    let (_slot, mut run) = begin(spec("a follower restarted on new ports", 5, 3)).await;
    run.pace(PACE).await;
    let victim = (leader_of(&mut run).await + 1) % run.cluster.len();
    run.kill(victim).expect("kill");
    run.restart_on_new_ports(victim).await.expect("restart");
    run.recover().await;
    end(run).await;
}

/// A member paused beyond the short-id reap time loses its short id to a new
/// member; when it resumes, two live members must not both hold that short id.
/// The cluster gives the resumed member a new short id and its process reports
/// it. (Found before 237d0ff: `Cluster::short_id()` was fixed at start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_id_of_a_paused_member_is_not_held_twice() {
    let mut spec = spec("a member paused beyond the short-id reap, a join meanwhile", 4, 3);
    spec.cluster.config.short_id_reap_ms = 3_000;
    let (_slot, mut run) = begin(spec).await;
    run.pace(PACE).await;
    let leader = leader_of(&mut run).await;
    let paused = (leader + 1) % run.cluster.len();
    let line = run.cluster.agent(paused).start_line().cloned().expect("started");
    run.pause(paused).expect("pause");
    // Bounded wait until the cluster no longer records the paused member.
    wait_until(DEADLINE, "the paused member to be reaped", || async {
        let records = run.cluster.members_of(leader).await.unwrap_or_default();
        !records.iter().any(|r| r.member_id.to_string() == line.member_id)
    })
    .await;
    // The short id is reaped `short_id_reap_ms` after the failure; the state
    // machine's short ids are not readable through the service, so give the reap
    // its time plus a margin (shaping the scenario, not judging it).
    run.pace(Duration::from_secs(5)).await;
    let joined = run.join().await.expect("a new member joins");
    let joined_short_id = run.cluster.agent(joined).start_line().map(|s| s.short_id);
    eprintln!("paused m{paused} held short id {}; the new m{joined} got {joined_short_id:?}", line.short_id);
    run.resume(paused).expect("resume");
    run.recover().await;
    let records = run.cluster.members_of(leader).await.unwrap_or_default();
    let recorded = records
        .iter()
        .find(|r| r.member_id.to_string() == line.member_id)
        .and_then(|r| r.short_id)
        .map(|s| u64::from(s.get()));
    // The member learns its new id once it applied the leader's log, and says
    // so on its next housekeeping tick: wait for that, bounded.
    let mut reported = None;
    holds_within(Duration::from_secs(30), async || {
        reported = run.cluster.agent(paused).start_line().map(|s| s.short_id);
        reported == recorded
    })
    .await;
    eprintln!(
        "after resuming, the cluster records m{paused} with short id {recorded:?}; it reports {reported:?}"
    );
    assert_eq!(reported, recorded, "the resumed member reports the short id the cluster gave it");
    assert_ne!(reported, joined_short_id, "two live members report the same short id");
    end(run).await;
}

/// A scenario whose members talk through the network proxy (in namespaces),
/// or `None` with the reason when this machine cannot run it.
fn proxied(name: &str) -> Option<RunSpec> {
    in_netns(spec(name, 5, 3), ClusterSpec::with_proxy)
}

/// What the proxy's links between different members did, summed, printed:
/// evidence that the members' traffic went through the proxy and was shaped.
fn link_totals(run: &FaultRun) -> LinkStats {
    let proxy = run.cluster.proxy().expect("a cluster behind the proxy");
    let mut total = LinkStats::default();
    for from in 0..proxy.members() {
        for to in (0..proxy.members()).filter(|&to| to != from) {
            let s = proxy.stats(from, to);
            total.datagrams += s.datagrams;
            total.lost += s.lost;
            total.cut += s.cut;
            total.duplicated += s.duplicated;
            total.chunks += s.chunks;
            total.retransmitted += s.retransmitted;
            total.tcp_bytes += s.tcp_bytes;
        }
    }
    eprintln!("proxy links in all: {total:?}");
    total
}

/// Waits until the workload has `more` writes acknowledged beyond those it had
/// when called: the cluster makes progress.
async fn wait_writes(run: &FaultRun, more: usize, what: &str) {
    let from = run.acknowledged_writes();
    wait_until(DEADLINE, what, || std::future::ready(run.acknowledged_writes() >= from + more)).await;
}

/// The leader killed and restarted while every link delays by 50 ± 30 ms and
/// loses 2 % (datagrams dropped, TCP chunks retransmitted after 200 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_delay_and_loss() {
    let Some(spec) = proxied("leader killed under 50 ± 30 ms delay and 2 % loss") else { return };
    let (_slot, mut run) = begin(spec).await;
    let rule = LinkRule::delayed(Duration::from_millis(50), Duration::from_millis(30)).with_loss(0.02);
    run.shape("50 ± 30 ms delay and 2 % loss on every link", |proxy| proxy.set_every(rule)).expect("shape");
    run.pace(PACE).await;
    let leader = leader_of(&mut run).await;
    kill_and_restart(&mut run, leader).await;
    let shaped = link_totals(&run);
    assert!(shaped.datagrams > 0 && shaped.chunks > 0, "the members' traffic bypassed the proxy");
    assert!(shaped.lost + shaped.retransmitted > 0, "2 % loss and nothing lost: {shaped:?}");
    end(run).await;
}

/// The leader's outbound traffic cut (it hears the others, they do not hear
/// it): the others elect a new leader and the writes go on; after the heal
/// every member converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_that_cannot_send_is_replaced() {
    let Some(spec) = proxied("the leader's outbound traffic cut, then healed") else { return };
    let (_slot, mut run) = begin(spec).await;
    let n = run.cluster.len();
    run.pace(PACE).await;
    let leader = leader_of(&mut run).await;
    let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
    run.shape(format!("m{leader} (the leader) cannot send"), |proxy| {
        proxy.set_out_of(leader, LinkRule::cut())
    })
    .expect("shape");
    wait_until(DEADLINE, "the others to agree on a leader other than the muted one", || async {
        let mut named = Vec::new();
        for &i in &others {
            let status = run.cluster.status_of(i).await;
            named.push(status.ok().and_then(|s| s.leader).and_then(|l| run.cluster.index_of(&l.to_string())));
        }
        named.iter().all(|l| l.is_some_and(|l| l != leader) && *l == named[0])
    })
    .await;
    wait_writes(&run, 20, "writes to go through the new leader").await;
    assert!(link_totals(&run).cut > 0, "the muted leader sent no datagram the proxy dropped");
    run.heal().expect("heal");
    run.recover().await;
    end(run).await;
}

/// A voter that receives everything 300 ms late, under write load: the writes
/// keep succeeding (the leader commits with the others), and it keeps up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_follower_under_write_load() {
    let Some(spec) = proxied("a follower receiving everything 300 ms late") else { return };
    let (_slot, mut run) = begin(spec).await;
    run.pace(PACE).await;
    let leader = leader_of(&mut run).await;
    let voters = run.cluster.status_of(leader).await.expect("the leader's status").voters;
    let slow = voters
        .keys()
        .filter_map(|v| run.cluster.index_of(&v.to_string()))
        .find(|&v| v != leader)
        .expect("a voter that does not lead");
    let rule = LinkRule::delayed(Duration::from_millis(300), Duration::ZERO);
    run.shape(format!("every message to m{slow} (a voter) 300 ms late"), |proxy| proxy.set_into(slow, rule))
        .expect("shape");
    wait_writes(&run, 100, "writes to go on with a slow follower").await;
    let proxy = run.cluster.proxy().expect("a cluster behind the proxy");
    let into_slow: u64 = (0..proxy.members()).map(|from| proxy.stats(from, slow).chunks).sum();
    assert!(into_slow > 0, "no raft or service traffic reached the slow member through the proxy");
    // Recovered while still slow: voters, agreement, a write, and the slow one caught up.
    run.recover().await;
    run.heal().expect("heal");
    run.recover().await;
    end(run).await;
}

/// The members that are client members (outside the bounded replica set) by
/// the leader's records, once there are as many as the bound leaves.
async fn client_members(run: &mut FaultRun) -> Vec<usize> {
    let config = &run.cluster.spec().config;
    let want = run.cluster.len().saturating_sub(config.replicas);
    let mut clients = Vec::new();
    let found = holds_within(DEADLINE, async || {
        let leader = leader_of(run).await;
        let records = run.cluster.members_of(leader).await.unwrap_or_default();
        clients = records
            .iter()
            .filter(|r| r.raft_role == RaftRole::Client)
            .filter_map(|r| run.cluster.index_of(&r.member_id.to_string()))
            .collect();
        clients.len() == want
    })
    .await;
    assert!(found, "{want} client members expected, the records name {clients:?}");
    clients
}

/// The replica set as the leader's raft sees it: voters and nonvoters.
async fn replica_set(run: &mut FaultRun) -> Option<Vec<usize>> {
    let leader = run.cluster.leader().await?;
    let status = run.cluster.status_of(leader).await.ok()?;
    let ids = status.voters.keys().chain(status.nonvoters.keys());
    Some(ids.filter_map(|m| run.cluster.index_of(&m.to_string())).collect())
}

/// Waits until the replica set is back to `bound` live members, prints how
/// long it took since `since` (the fault), and returns the set.
async fn wait_replica_set(run: &mut FaultRun, bound: usize, since: Instant, what: &str) -> Vec<usize> {
    let mut set = Vec::new();
    wait_until(DEADLINE, &format!("{what}: the replica set back to {bound} live members"), async || {
        let live = run.cluster.live();
        set = replica_set(run).await.unwrap_or_default();
        set.len() == bound && set.iter().all(|i| live.contains(i))
    })
    .await;
    let grace = Duration::from_millis(run.cluster.spec().config.failure_grace_ms);
    eprintln!(
        "{what}: replica set back to {bound} ({set:?}) in {:?} (failure grace {grace:?}; issue 24 bounds it by grace + 5 s)",
        since.elapsed()
    );
    set
}

/// "A client's local view never goes backwards": one writer sets a clock key
/// to 1, 2, 3, ... (each after the last was acknowledged) while a sampler per
/// client member reads it through that member alone (a stale read, served
/// from its local view); a value lower than one that member served before is
/// a view gone backwards.
struct ViewClock {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<(usize, u64, Vec<String>)>>,
}

const CLOCK_KEY: &str = "view-clock";

impl ViewClock {
    fn start(run: &FaultRun, clients: &[usize]) -> ViewClock {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let mut options = run.cluster.probe_options();
        options.op_timeout = Duration::from_secs(5);
        let writer = ServiceClient::new(run.cluster.service_addrs(), options).expect("a client");
        let mut tasks = Vec::new();
        {
            let (stop, written) = (stop.clone(), written.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    if writer.set(CLOCK_KEY, (n + 1).to_be_bytes().to_vec()).await.is_ok() {
                        n += 1;
                        written.store(n, Ordering::Release);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (usize::MAX, n, Vec::new())
            }));
        }
        for &i in clients {
            let client =
                run.cluster.client_of(i, run.cluster.probe_options()).expect("a client of the member");
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut seen, mut samples, mut backwards) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Acquire) {
                    if let Ok(value) = client.get_with_meta(CLOCK_KEY, false).await {
                        let v =
                            value.and_then(|(v, _)| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
                        samples += 1;
                        if v < seen {
                            backwards.push(format!("m{i} served {v} after {seen}"));
                        }
                        seen = seen.max(v);
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                (i, samples, backwards)
            }));
        }
        ViewClock { stop, written, tasks }
    }

    /// Stops the writer and the samplers; panics if a view went backwards or a
    /// client member's view never caught up with the last acknowledged value.
    async fn finish(self, run: &mut FaultRun) {
        self.stop.store(true, Ordering::Release);
        let mut backwards = Vec::new();
        let mut clients = Vec::new();
        for task in self.tasks {
            let (i, samples, b) = task.await.expect("a sampler");
            if i != usize::MAX {
                eprintln!("view clock: m{i} sampled {samples} times");
                clients.push(i);
                backwards.extend(b);
            }
        }
        assert!(backwards.is_empty(), "a client's local view went backwards: {backwards:?}");
        let last = self.written.load(Ordering::Acquire);
        eprintln!("view clock: {last} values written");
        let mut live = run.cluster.live();
        live.retain(|i| clients.contains(i));
        for i in live {
            let client =
                run.cluster.client_of(i, run.cluster.probe_options()).expect("a client of the member");
            wait_until(DEADLINE, "every live client member's view to reach the last clock value", || async {
                let v = client.get_with_meta(CLOCK_KEY, false).await.ok().flatten();
                v.and_then(|(v, _)| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0) >= last
            })
            .await;
        }
    }
}

fn with_clients(name: &str) -> RunSpec {
    // 7 members, 3 replicas (all voters): four client members. The workload
    // sends each operation to a member picked at random among all seven, so
    // most operations in the history go through client members.
    let mut spec = spec(name, 7, 3);
    spec.cluster.config.replicas = 3;
    spec.workload.clients = 3;
    spec
}

/// Issue 24, faults with client members: the replica a client's view follows
/// killed, then the leader: each time a client member is promoted and the set
/// is back to its bound (3), the cluster keeps quorum and serves, the
/// operations through client members pass the linearizability check, and no
/// client's view goes backwards or stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_killed_with_client_members() {
    let (_slot, mut run) =
        begin(with_clients("7 members, 3 replicas: a replica, then the leader, killed")).await;
    let clients = client_members(&mut run).await;
    eprintln!("client members: {clients:?}");
    let clock = ViewClock::start(&run, &clients);
    run.pace(PACE).await;
    // A replica that does not lead: client views follow the non-leader replicas first.
    let leader = leader_of(&mut run).await;
    let set = replica_set(&mut run).await.expect("a replica set");
    let follower = *set.iter().find(|&&i| i != leader).expect("a replica that does not lead");
    let killed = Instant::now();
    run.kill(follower).expect("kill");
    let healed = wait_replica_set(&mut run, 3, killed, "a replica killed").await;
    assert!(healed.iter().any(|i| clients.contains(i)), "a client member was promoted: {healed:?}");
    run.recover().await;
    run.pace(PACE).await;
    // Then the leader: a second client member promoted, quorum kept throughout.
    let leader = leader_of(&mut run).await;
    let killed = Instant::now();
    run.kill(leader).expect("kill");
    wait_replica_set(&mut run, 3, killed, "the leader killed").await;
    run.recover().await;
    wait_writes(&run, 20, "writes to go on after two replicas were lost").await;
    // Both back: the set shrinks to its bound again.
    run.restart(follower).await.expect("restart");
    run.restart(leader).await.expect("restart");
    let back = Instant::now();
    wait_replica_set(&mut run, 3, back, "the two returned").await;
    run.recover().await;
    run.pace(PACE).await;
    clock.finish(&mut run).await;
    report(&run.finish().await);
}

/// Issue 24: a client member fully isolated (in its own network namespace
/// side, cut from every member, replica or client): its local view stays (it
/// still lists the members, its stale reads never go backwards);
/// after the heal it resumes (its view catches up, never went backwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_member_cut_from_every_replica() {
    let spec = with_clients("7 members, 3 replicas: a client member isolated, then healed");
    let Some(spec) = in_netns(spec, ClusterSpec::with_netns) else { return };
    let (_slot, mut run) = begin(spec).await;
    let clients = client_members(&mut run).await;
    eprintln!("client members: {clients:?}");
    let clock = ViewClock::start(&run, &clients);
    run.pace(PACE).await;
    let cut = clients[0];
    let others: Vec<usize> = (0..run.cluster.len()).filter(|&i| i != cut).collect();
    let members_before = run.cluster.members_of(cut).await.expect("the members list").len();
    run.partition(&[&[cut], &others]).expect("partition");
    // Not asserted: the member's service answers a write with "not leader"
    // naming the leader, and a remote client follows that hint around the cut
    // (found in this scenario: the write succeeds). "Its writes fail with
    // `Unavailable`" is about the member's own `Cluster` API, which a process
    // harness cannot call. Printed, for the record.
    let alone = run.cluster.client_of(cut, run.cluster.probe_options()).expect("a client of the member");
    match alone.set("isolated", b"x".to_vec()).await {
        Ok(_) => eprintln!("a write through the isolated client member m{cut}'s service port succeeded"),
        Err(e) => eprintln!("a write through the isolated client member m{cut}: {e} (kind {:?})", e.kind()),
    }
    let members =
        run.cluster.members_of(cut).await.expect("the isolated member still serves its members list");
    assert_eq!(members.len(), members_before, "the isolated member's local view stays");
    wait_writes(&run, 20, "writes to go on without the isolated client member").await;
    // Cut beyond the failure grace (1 s): the others see it failed.
    run.pace(Duration::from_secs(3)).await;
    let members =
        run.cluster.members_of(cut).await.expect("the isolated member still serves its members list");
    assert_eq!(members.len(), members_before, "the isolated member's local view stays");
    run.heal().expect("heal");
    run.recover().await;
    run.pace(PACE).await;
    clock.finish(&mut run).await;
    report(&run.finish().await);
}
