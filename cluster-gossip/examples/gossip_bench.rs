//! Membership timings on loopback UDP: time to converge for 3, 10 and 30
//! members, time until every other member reports a stopped member failed, and
//! time until every other member reports a graceful leave. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release -p cluster-gossip --example gossip_bench
//! ```

use std::time::{Duration, Instant};

use cluster_core::{FailureDetection, MemberId};
use cluster_gossip::{Gossip, GossipConfig};

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

fn config(cluster: &str) -> GossipConfig {
    GossipConfig::default()
        .with_cluster_id(cluster)
        .with_gossip_interval(GOSSIP_INTERVAL)
        .with_failure_detection(failure_detection())
        .with_tag("role", "bench")
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

async fn run(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = format!("bench-{n}");
    let started = Instant::now();
    let first = Gossip::start(config(&cluster)).await?;
    let seed = first.gossip_addr().to_string();
    let mut members = vec![first];
    for _ in 1..n {
        members.push(Gossip::start(config(&cluster).with_seeds([seed.clone()])).await?);
    }
    let converge = time_until(started, || members.iter().all(|g| g.members().len() == n)).await;

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
        "{n:>3} members | converge {} | all report failed {} | all report left {} (leave() took {:.0} ms)",
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fd = failure_detection();
    println!(
        "settings: loopback UDP, gossip interval {GOSSIP_INTERVAL:?}, phi threshold {}, initial interval {:?}, \
         all members seeded on the first, poll every {POLL:?}, {} worker threads",
        fd.phi_threshold,
        fd.initial_interval,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for n in [3, 10, 30] {
        run(n).await?;
    }
    Ok(())
}
