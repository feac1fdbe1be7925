//! Family `profile` (not in the default run): where a durable write's time
//! goes, counted in system calls. A 3-member durable cluster takes one client
//! writing back to back at the leader while `strace -c -f` is attached to the
//! leader and to one follower; the syscall counts of each are divided by the
//! writes acknowledged in the window. strace slows every syscall, so only the
//! counts per write mean anything here, not the latency.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::Ctx;
use crate::kv::{Kv, Op, VALUE, drive, key};
use crate::procs::{CarbonCluster, have};

/// One `strace -c` table: (syscall, calls) in strace's order.
fn parse_strace(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if f.len() >= 5
            && f[0].parse::<f64>().is_ok()
            && let (Some(name), Ok(calls)) = (f.last(), f[3].parse::<u64>())
            && *name != "total"
        {
            out.push((name.to_string(), calls));
        }
    }
    out
}

async fn strace_during(
    pids: &[(String, u32)],
    ctx: &Ctx,
    secs: f64,
    kv: &Kv,
) -> Result<(u64, Vec<(String, String)>)> {
    let mut tracers = Vec::new();
    for (who, pid) in pids {
        let file = ctx.dir.join(format!("strace-{who}.txt"));
        let child = Command::new("strace")
            .args(["-c", "-f", "-p", &pid.to_string(), "-o"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn strace")?;
        tracers.push((who.clone(), child, file));
    }
    // strace needs a moment to attach to every thread.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One client, back to back; every acknowledged write counts.
    let Kv::Ours(client) = kv else { bail!("not our client") };
    let t = std::time::Instant::now();
    let mut writes = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        if client.set(&key(3_000_000 + writes), VALUE.to_vec()).await.is_ok() {
            writes += 1;
        }
    }
    let mut tables = Vec::new();
    for (who, mut child, file) in tracers {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        tables.push((who, std::fs::read_to_string(&file).unwrap_or_default()));
    }
    Ok((writes, tables))
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    if !have("strace") {
        bail!("strace is not installed");
    }
    let c = CarbonCluster::start(&ctx.carbon, &ctx.dir, 3, true, "prof").await?;
    let leader = c.leader().await?;
    let follower = (leader + 1) % 3;
    let kv = Kv::Ours(c.client(&[leader])?);
    // Warm the connections and the log before counting.
    drive(&kv, Op::Write, 1, 1.0).await?;
    let pids = vec![
        ("leader".to_string(), c.agents[leader].pid().context("leader pid")?),
        ("follower".to_string(), c.agents[follower].pid().context("follower pid")?),
    ];
    // The strace window also holds 0.5 s of idle traffic (heartbeats, gossip)
    // before the writes: a few dozen calls against thousands of writes.
    let (writes, tables) = strace_during(&pids, ctx, ctx.secs, &kv).await?;
    let mut md = format!(
        "1 client writing back to back at the leader of 3 durable members for {} s under `strace -c -f` \
         ({writes} writes acknowledged; strace slows each syscall, so only counts per write are \
         meaningful). Calls per acknowledged write:\n\n| syscall | leader | follower |\n| --- | --- | --- |\n",
        ctx.secs
    );
    let parsed: Vec<Vec<(String, u64)>> = tables.iter().map(|(_, t)| parse_strace(t)).collect();
    let mut names: Vec<String> = parsed.iter().flatten().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    let per = |t: &[(String, u64)], n: &str| t.iter().find(|x| x.0 == n).map_or(0, |x| x.1);
    names.sort_by_key(|n| std::cmp::Reverse(per(&parsed[0], n) + per(&parsed[1], n)));
    for n in names.iter().take(20) {
        let w = writes.max(1) as f64;
        let _ = writeln!(
            md,
            "| {n} | {:.2} | {:.2} |",
            per(&parsed[0], n) as f64 / w,
            per(&parsed[1], n) as f64 / w
        );
    }
    for (who, t) in &tables {
        let _ =
            write!(md, "\n<details><summary>strace -c of the {who}</summary>\n\n```\n{t}```\n</details>\n");
    }
    ctx.log(format!("profile: {writes} writes; {md}"));
    ctx.report.sections.push(("Profile of the durable write path (syscalls)".into(), md));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_strace;

    #[test]
    fn reads_calls_per_syscall_with_and_without_errors_and_skips_the_total() {
        let t = "% time     seconds  usecs/call     calls    errors syscall\n\
                 ------ ----------- ----------- --------- --------- ----------------\n \
                 56.96    1.279908          95     13409       569 futex\n  \
                 6.32    0.142014         124      1143           fdatasync\n\
                 ------ ----------- ----------- --------- --------- ----------------\n\
                 100.00    2.247071          60     37055       756 total\n";
        assert_eq!(parse_strace(t), vec![("futex".to_string(), 13409), ("fdatasync".to_string(), 1143)]);
    }
}
