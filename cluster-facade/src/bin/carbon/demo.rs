//! `carbon demo`: a local cluster in this process, a tour of what it does,
//! and a leader failover.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cluster_facade::rpc::tls::generate::CertificateAuthority;
use cluster_facade::rpc::{Security, Tls};
use cluster_facade::{Cluster, ClusterConfig, GossipKey, GossipKeys, RaftRole};

use crate::exit::Failure;
use crate::table::members_table;

/// Flags of `carbon demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How many members to start (at least 3: the tour stops the leader).
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// How many of them vote (at least 3, so a quorum survives the leader).
    #[arg(long, default_value_t = 3)]
    pub voters: usize,
    /// How many keys to write.
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
}

const WAIT: Duration = Duration::from_secs(60);

/// The fewest members (and voters) the tour's failover works with.
const MIN_MEMBERS: usize = 3;

pub(crate) async fn run(args: DemoArgs) -> Result<(), Failure> {
    // The tour stops the leader and waits for a new one: the voters left
    // must be a majority of the voters, which takes 3 (2 of 2 is not).
    if args.members < MIN_MEMBERS {
        return Err(Failure::usage(format!(
            "--members must be at least {MIN_MEMBERS}: the demo stops the leader, and the others need a quorum to elect a new one"
        )));
    }
    if args.voters < MIN_MEMBERS {
        return Err(Failure::usage(format!(
            "--voters must be at least {MIN_MEMBERS}: with fewer, the voters left after the leader stops are no quorum"
        )));
    }
    tour(args).await.map_err(Failure::other)
}

/// The demo cluster's gossip key, made fresh for each run.
fn demo_key() -> &'static GossipKey {
    static KEY: std::sync::OnceLock<GossipKey> = std::sync::OnceLock::new();
    KEY.get_or_init(GossipKey::generate)
}

/// The demo cluster's certificate authority, made in memory for each run.
fn demo_ca() -> &'static CertificateAuthority {
    static CA: std::sync::OnceLock<CertificateAuthority> = std::sync::OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate("carbon-demo").expect("a CA can be made in memory"))
}

/// Mutual TLS with a member certificate of its own for each member: it
/// names a fresh member id, which the member then runs as.
fn member_tls() -> anyhow::Result<Security> {
    let ca = demo_ca();
    let cert = ca.issue_member(cluster_facade::MemberId::generate(), "demo-member")?;
    Ok(Security::Tls(Tls::from_pem(ca.cert_pem(), &cert.cert_pem, &cert.key_pem)?))
}

fn config(seeds: Vec<String>, voters: usize) -> ClusterConfig {
    let mut c = ClusterConfig {
        security: member_tls().expect("a member certificate can be made in memory"),
        seeds,
        num_voters: voters,
        cluster_id: "carbon-demo".into(),
        gossip_keys: GossipKeys(vec![demo_key().to_base64()]),
        ..Default::default()
    };
    // Quick failure handling, so the tour does not drag. A failed member
    // leaves raft after this grace; it stays listed as failed until its
    // short id is reaped (60 s by default).
    c.timeouts.failure_grace_ms = 1_000;
    c.timeouts.leave_ms = 3_000;
    c
}

/// Colour and cursor codes only when stdout is a terminal: a file or a pipe
/// gets plain text.
fn tty() -> bool {
    std::io::stdout().is_terminal()
}

fn step(n: usize, total: usize, text: &str) {
    if tty() {
        println!("\n\x1b[1m[{n}/{total}] {text}\x1b[0m");
    } else {
        println!("\n[{n}/{total}] {text}");
    }
}

fn ok(text: &str) {
    if tty() {
        println!("  \x1b[32m✓\x1b[0m {text}");
    } else {
        println!("  ✓ {text}");
    }
}

/// Waits until `cond` holds, showing what it waits for and for how long.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let tty = tty();
    if !tty {
        println!("  … {what}");
    }
    loop {
        if cond() {
            if tty {
                print!("\r\x1b[2K");
            }
            return Ok(start.elapsed());
        }
        if start.elapsed() > WAIT {
            bail!("gave up after {WAIT:?}: {what}");
        }
        if tty {
            print!("\r\x1b[2K  … {what} ({:.1} s)", start.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn voters(members: &[Cluster]) -> usize {
    members.iter().filter(|m| m.raft_role().votes()).count()
}

fn leader_of(members: &[Cluster]) -> Option<usize> {
    members.iter().position(|m| m.raft_role() == RaftRole::Leader)
}

async fn tour(args: DemoArgs) -> anyhow::Result<()> {
    let total = 6;
    let wanted = args.voters.min(args.members);
    println!(
        "Carbon Grid Cluster demo: {} members, {} voters, in this process on 127.0.0.1",
        args.members, wanted
    );
    println!("Gossip is encrypted with a key generated for this run (key id {}).", demo_key().id());
    println!(
        "Raft and the service speak mutual TLS, with a CA and certificates made in memory for this run."
    );

    step(1, total, &format!("Starting {} members", args.members));
    let started = Instant::now();
    let first = Cluster::start(config(vec![], args.voters)).await.context("starting the first member")?;
    ok(&format!(
        "member #{} formed the cluster ({:.2} s)",
        first.short_id(),
        started.elapsed().as_secs_f64()
    ));
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for i in 1..args.members {
        let t = Instant::now();
        let m = Cluster::start(config(vec![seed.clone()], args.voters))
            .await
            .with_context(|| format!("starting member {}", i + 1))?;
        ok(&format!("member #{} joined ({:.2} s)", m.short_id(), t.elapsed().as_secs_f64()));
        members.push(m);
    }

    step(2, total, &format!("Balancing: {wanted} voters, the rest nonvoters"));
    let took = wait_for("waiting for the leader to promote voters and record every member", || {
        voters(&members) == wanted
            && members[0]
                .members()
                .is_ok_and(|r| r.len() == members.len() && r.iter().all(|m| m.short_id.is_some()))
    })
    .await?;
    ok(&format!("balanced after {:.2} s", took.as_secs_f64()));
    println!("{}", members_table(&members[0].members()?, &members[0].liveness()));

    let via = members
        .iter()
        .position(|m| m.raft_role() == RaftRole::Nonvoter)
        .or_else(|| members.iter().position(|m| m.raft_role() == RaftRole::Voter))
        .context("no member to write through")?;
    let via_role = members[via].raft_role();
    step(
        3,
        total,
        &format!("Writing {} keys through #{} (a {via_role})", args.keys, members[via].short_id()),
    );
    let store = members[via].store().clone();
    let t = Instant::now();
    for k in 0..args.keys {
        store.set(&format!("demo/key-{k:02}"), format!("value-{k:02}").into_bytes()).await?;
    }
    ok(&format!("{} writes forwarded to the leader in {:.1} ms", args.keys, t.elapsed().as_secs_f64() * 1e3));
    for k in 0..args.keys {
        let got = store.consistent_get(&format!("demo/key-{k:02}")).await?;
        if got != Some(format!("value-{k:02}").into_bytes()) {
            bail!("demo/key-{k:02} read back as {got:?}");
        }
    }
    ok(&format!("read back all {} keys with linearizable reads", args.keys));

    let leader = leader_of(&members).context("no leader")?;
    let old = members.remove(leader);
    let via = if via > leader { via - 1 } else { via };
    let (old_short, old_id) = (old.short_id(), old.member_id());
    step(4, total, &format!("Stopping the leader #{old_short} abruptly (as a crash would)"));
    let crash = Instant::now();
    old.abort().await?;
    wait_for("waiting for a new leader", || leader_of(&members).is_some()).await?;
    let new_leader = leader_of(&members).context("no leader")?;
    ok(&format!(
        "#{} leads, {:.2} s after the crash",
        members[new_leader].short_id(),
        crash.elapsed().as_secs_f64()
    ));
    let before: Vec<_> = members.iter().map(|m| m.raft_role()).collect();
    let expect = wanted.min(members.len());
    // The records follow raft: every member listed in its role, the old
    // leader as a nonvoter (out of raft; listed until its short id is reaped).
    let recorded = |records: &[cluster_facade::MemberInfo]| {
        members
            .iter()
            .all(|m| records.iter().any(|r| r.member_id == m.member_id() && r.raft_role == m.raft_role()))
            && records.iter().all(|r| r.member_id != old_id || r.raft_role == RaftRole::Nonvoter)
    };
    wait_for("waiting for the old leader to be removed and the voters restored", || {
        voters(&members) == expect
            && !members[new_leader].consensus_status().all_members().contains(&old_id)
            && members[new_leader].members().is_ok_and(|r| recorded(&r))
    })
    .await?;
    for (m, was) in members.iter().zip(before) {
        if was == RaftRole::Nonvoter && m.raft_role().votes() {
            ok(&format!("#{} was promoted to voter", m.short_id()));
        }
    }
    ok(&format!("{expect} voters again, {:.2} s after the crash", crash.elapsed().as_secs_f64()));

    step(5, total, "The cluster after the failover");
    println!("{}", members_table(&members[new_leader].members()?, &members[new_leader].liveness()));
    println!(
        "  #{old_short} is listed as failed until its short id is reaped, or `carbon force-leave` names it."
    );
    for k in 0..args.keys {
        let got = members[via].store().consistent_get(&format!("demo/key-{k:02}")).await?;
        if got != Some(format!("value-{k:02}").into_bytes()) {
            bail!("demo/key-{k:02} lost in the failover: {got:?}");
        }
    }
    ok(&format!("all {} keys are still there (read through #{})", args.keys, members[via].short_id()));

    step(6, total, "Leaving gracefully");
    let n = members.len();
    for m in members {
        let short = m.short_id();
        m.shutdown().await.with_context(|| format!("shutting down #{short}"))?;
        ok(&format!("#{short} left"));
    }
    println!("\nDone: {n} members left cleanly.");
    Ok(())
}
