//! Figure 6: idle cost per member: resident memory (VmRSS) and CPU (utime +
//! stime over an idle window) of 3 `carbon agent` processes (durable), 3 etcd
//! processes and 3 serf agents, all started together and left idle.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::Ctx;
use crate::procs::{CarbonCluster, EtcdCluster, SerfAgent, spawn_serf, wait_listening};
use crate::report::{Better, Measured, Row};

/// Linux's clock tick for /proc/<pid>/stat times (what [`cpu_ticks`] counts in).
pub const TICKS_PER_S: f64 = 100.0;

/// CPU ticks (utime + stime) of a process.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = s.rsplit_once(')').ok_or_else(|| anyhow!("bad stat"))?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let ut: u64 = f.get(11).context("utime")?.parse()?;
    let st: u64 = f.get(12).context("stime")?.parse()?;
    Ok(ut + st)
}

pub fn rss_mib(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
    let kb: f64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kb / 1024.0)
}

/// Per pid: (RSS MiB at the end, CPU % of one core over the window).
async fn sample(groups: &[Vec<u32>], window: Duration) -> Vec<Result<(Vec<f64>, Vec<f64>)>> {
    let before: Vec<Vec<Option<u64>>> =
        groups.iter().map(|g| g.iter().map(|&p| cpu_ticks(p).ok()).collect()).collect();
    tokio::time::sleep(window).await;
    groups
        .iter()
        .zip(before)
        .map(|(g, b)| {
            let mut rss = Vec::new();
            let mut cpu = Vec::new();
            for (&pid, b) in g.iter().zip(b) {
                let b = b.ok_or_else(|| anyhow!("pid {pid} gone"))?;
                let a = cpu_ticks(pid)?;
                cpu.push((a - b) as f64 / TICKS_PER_S / window.as_secs_f64() * 100.0);
                rss.push(rss_mib(pid)?);
            }
            Ok((rss, cpu))
        })
        .collect()
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let window = Duration::from_secs(10);
    let ours = CarbonCluster::start(&ctx.carbon, &ctx.dir, 3, true, "idle").await;
    let etcd = if ctx.have_etcd {
        Some(EtcdCluster::start(&ctx.dir, 3, "idle").await.map_err(|e| format!("{e:#}")))
    } else {
        None
    };
    let serf: Option<Result<Vec<SerfAgent>, String>> = if ctx.have_serf {
        let dir = ctx.dir.join("serf-idle");
        std::fs::create_dir_all(&dir)?;
        let mut v = Vec::new();
        let mut err = None;
        for i in 0..3 {
            let join = v.first().map(|a: &SerfAgent| a.bind.clone());
            match spawn_serf(&dir, &format!("idle-{i}"), join.as_deref()) {
                Ok(a) => {
                    if i == 0 {
                        let _ = wait_listening(&a.rpc, Duration::from_secs(10)).await;
                    }
                    v.push(a)
                }
                Err(e) => err = Some(format!("{e:#}")),
            }
        }
        Some(match err {
            Some(e) => Err(e),
            None => Ok(v),
        })
    } else {
        None
    };
    // Settle, then measure all three groups in the same window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let groups = vec![
        ours.as_ref().map(|c| c.pids()).unwrap_or_default(),
        etcd.as_ref().and_then(|e| e.as_ref().ok()).map(|e| e.pids()).unwrap_or_default(),
        serf.as_ref()
            .and_then(|s| s.as_ref().ok())
            .map(|s| s.iter().filter_map(|a| a.proc.pid()).collect())
            .unwrap_or_default(),
    ];
    let mut got = sample(&groups, window).await.into_iter();
    let to = |r: Option<Result<(Vec<f64>, Vec<f64>)>>, why: Option<String>| -> (Measured, Measured) {
        match (why, r) {
            (Some(w), _) => (Measured::NotMeasured(w.clone()), Measured::NotMeasured(w)),
            (None, Some(Ok((rss, cpu)))) => {
                (Measured::from_samples(&rss, "rss"), Measured::from_samples(&cpu, "cpu"))
            }
            (None, Some(Err(e))) => {
                (Measured::NotMeasured(format!("{e:#}")), Measured::NotMeasured(format!("{e:#}")))
            }
            (None, None) => {
                (Measured::NotMeasured("no sample".into()), Measured::NotMeasured("no sample".into()))
            }
        }
    };
    let ours_why = ours.as_ref().err().map(|e| format!("{e:#}"));
    let etcd_why = match &etcd {
        None => Some("etcd not installed".to_string()),
        Some(Err(e)) => Some(e.clone()),
        Some(Ok(_)) => None,
    };
    let serf_why = match &serf {
        None => Some("serf not installed".to_string()),
        Some(Err(e)) => Some(e.clone()),
        Some(Ok(_)) => None,
    };
    let (o_rss, o_cpu) = to(got.next(), ours_why);
    let (e_rss, e_cpu) = to(got.next(), etcd_why);
    let (s_rss, s_cpu) = to(got.next(), serf_why);
    ctx.log(format!("idle ours {o_rss:?} {o_cpu:?}; etcd {e_rss:?} {e_cpu:?}; serf {s_rss:?} {s_cpu:?}"));
    let row = |metric: &str, unit: &str, ours: Measured, peer_name: &str, peer: Measured| Row {
        figure: "6 idle".into(),
        case: "per member of 3, idle (ours: carbon agent, durable)".into(),
        metric: metric.into(),
        unit: unit.into(),
        better: Better::Lower,
        ours,
        peer_name: peer_name.into(),
        peer_case: format!("per {peer_name} process of 3, idle"),
        peer: Some(peer),
        note: String::new(),
    };
    let w = window.as_secs();
    ctx.report.rows.push(row("resident memory (VmRSS)", "MiB", o_rss.clone(), "etcd", e_rss));
    ctx.report.rows.push(row(&format!("CPU over {w} s idle"), "% of a core", o_cpu.clone(), "etcd", e_cpu));
    ctx.report.rows.push(row("resident memory (VmRSS)", "MiB", o_rss, "serf", s_rss));
    ctx.report.rows.push(row(&format!("CPU over {w} s idle"), "% of a core", o_cpu, "serf", s_cpu));
    Ok(())
}
