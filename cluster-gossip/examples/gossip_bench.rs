//! Membership timings on loopback UDP: time to converge for 3, 10 and 30
//! members, the CPU the process uses while they idle, time until every other
//! member reports a stopped member failed, and time until every other member
//! reports a graceful leave; with gossip encryption off and on. Prints
//! figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p cluster-gossip --example gossip_bench -- [--encryption off|on|both] [--sizes 3,10,30] [--idle-secs 3]
//! ```
//! `GOSSIP_BENCH_ENCRYPTION` sets the default of `--encryption` (both).

use std::time::{Duration, Instant};

use cluster_core::{FailureDetection, MemberId};
use cluster_gossip::{Gossip, GossipConfig, GossipKey, Keyring};

const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(2);
const DEADLINE: Duration = Duration::from_secs(60);

fn failure_detection() -> FailureDetection {
    FailureDetection {
        phi_threshold: 8.0,
        initial_interval: GOSSIP_INTERVAL,
        dead_member_grace: Duration::from_secs(3600),
    }
}

fn config(cluster: &str, keyring: Option<&Keyring>) -> GossipConfig {
    let c = GossipConfig::default()
        .with_cluster_id(cluster)
        .with_gossip_interval(GOSSIP_INTERVAL)
        .with_failure_detection(failure_detection())
        .with_tag("role", "bench");
    match keyring {
        Some(k) => c.with_keyring(k.clone()),
        None => c,
    }
}

/// CPU time (user + system) this process used so far, from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state (3rd).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports clock ticks of 1/100 s on every common configuration.
    Some(Duration::from_millis(ticks * 10))
}

/// Polls until `cond` holds; the elapsed time since `since`, or `None` past the deadline.
async fn time_until(since: Instant, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    while !cond() {
        if since.elapsed() > DEADLINE {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
    Some(since.elapsed())
}

fn show(d: Option<Duration>) -> String {
    d.map_or_else(|| format!("> {DEADLINE:?} (gave up)"), |d| format!("{:>7.0} ms", d.as_secs_f64() * 1e3))
}

fn sees(g: &Gossip, id: MemberId) -> bool {
    g.members().iter().any(|m| m.id == id)
}

async fn run(n: usize, keyring: Option<&Keyring>, idle: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = format!("bench-{n}");
    let started = Instant::now();
    let first = Gossip::start(config(&cluster, keyring)).await?;
    let seed = first.gossip_addr().to_string();
    let mut members = vec![first];
    for _ in 1..n {
        members.push(Gossip::start(config(&cluster, keyring).with_seeds([seed.clone()])).await?);
    }
    let converge = time_until(started, || members.iter().all(|g| g.members().len() == n)).await;

    // Idle: every member gossips, nothing changes.
    let (cpu0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(idle).await;
    let idle_cpu = match (cpu0, cpu_time()) {
        (Some(a), Some(b)) => {
            format!("{:>5.1} %", (b - a).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0)
        }
        _ => "n/a".to_owned(),
    };

    // An abrupt stop: every other member must report it failed.
    let stopped = members.pop().ok_or("no member")?;
    let stopped_id = stopped.member_id();
    let t = Instant::now();
    stopped.stop().await?;
    let failed = time_until(t, || members.iter().all(|g| !sees(g, stopped_id))).await;

    // A graceful leave: every other member must report it left.
    let leaver = members.pop().ok_or("no member")?;
    let leaver_id = leaver.member_id();
    let t = Instant::now();
    leaver.leave().await?;
    let leave_call = t.elapsed();
    let left = time_until(t, || members.iter().all(|g| !sees(g, leaver_id))).await;

    println!(
        "{:<9} {n:>3} members | converge {} | idle CPU {idle_cpu} of one core | all report failed {} | all report left {} (leave() took {:.0} ms)",
        if keyring.is_some() { "encrypted" } else { "plaintext" },
        show(converge),
        show(failed),
        show(left),
        leave_call.as_secs_f64() * 1e3
    );
    for g in &members {
        g.stop().await?;
    }
    Ok(())
}

/// The options: which modes, which sizes, how long to idle.
struct Options {
    modes: Vec<bool>,
    sizes: Vec<usize>,
    idle: Duration,
}

fn options() -> Result<Options, String> {
    let mut encryption = std::env::var("GOSSIP_BENCH_ENCRYPTION").unwrap_or_else(|_| "both".to_owned());
    let mut sizes = "3,10,30".to_owned();
    let mut idle = "3".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--encryption" => encryption = value,
            "--sizes" => sizes = value,
            "--idle-secs" => idle = value,
            _ => return Err(format!("unknown option {arg}; see the example's doc")),
        }
    }
    let modes = match encryption.as_str() {
        "off" => vec![false],
        "on" => vec![true],
        "both" => vec![false, true],
        other => return Err(format!("--encryption: off, on or both, not {other:?}")),
    };
    let sizes = sizes
        .split(',')
        .map(|s| s.trim().parse::<usize>().ok().filter(|n| *n >= 3))
        .collect::<Option<Vec<_>>>()
        .ok_or("--sizes: comma-separated numbers of members, each at least 3")?;
    let idle = Duration::from_secs_f64(idle.parse::<f64>().map_err(|_| "--idle-secs: a number of seconds")?);
    Ok(Options { modes, sizes, idle })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = options()?;
    let fd = failure_detection();
    println!(
        "settings: loopback UDP, gossip interval {GOSSIP_INTERVAL:?}, phi threshold {}, initial interval {:?}, \
         all members seeded on the first, poll every {POLL:?}, {} worker threads",
        fd.phi_threshold,
        fd.initial_interval,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for &encrypted in &opts.modes {
        let keyring = encrypted.then(|| Keyring::new(GossipKey::generate()));
        for &n in &opts.sizes {
            run(n, keyring.as_ref(), opts.idle).await?;
        }
    }
    Ok(())
}
