//! Version-independent pieces shared by the `v09` and `v010` spike binaries, so that the
//! only thing that differs between the two benchmarks is the openraft version and the
//! glue code its API forces on us.
//!
//! - [`LogWriter`]: the durable, group-committing append-only log file writer thread.
//! - [`save_vote_file`]: write + fdatasync of the vote.
//! - [`Req`] / [`Resp`]: application data.
//! - [`Args`], [`run_bench`], [`Stats`]: CLI parsing and the client-side benchmark loop.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Application data
// ---------------------------------------------------------------------------------------------

/// A `set key = value` command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Req {
    pub key: String,
    pub value: String,
}

impl fmt::Display for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set {}", self.key)
    }
}

/// Response of applying a [`Req`]: the previous value, if any.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resp {
    pub prev: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Durable log writer (group commit)
// ---------------------------------------------------------------------------------------------

/// Called by the writer thread once the record is durable (or failed).
pub type FlushCallback = Box<dyn FnOnce(io::Result<()>) + Send + 'static>;

struct WriteReq {
    bytes: Vec<u8>,
    callback: Option<FlushCallback>,
}

/// Process-wide counters, summed over all nodes.
pub static SYNC_CALLS: AtomicU64 = AtomicU64::new(0);
pub static RECORDS_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Handle to a dedicated std thread that owns an append-only file.
///
/// Each [`LogWriter::submit`] enqueues a record. The thread blocks for the first record, then
/// drains every record already queued, writes them with one `write_all`, calls `sync_data`
/// once (unless `fsync == false`) and then runs the callbacks in submission order.
#[derive(Clone)]
pub struct LogWriter {
    tx: std_mpsc::Sender<WriteReq>,
}

impl LogWriter {
    pub fn spawn(path: &Path, fsync: bool) -> io::Result<LogWriter> {
        Self::spawn_with_delay(path, fsync, Duration::ZERO)
    }

    /// Like [`LogWriter::spawn`], but sleeps `extra` after every sync (diagnostic: simulates a
    /// slower disk on one node).
    pub fn spawn_with_delay(path: &Path, fsync: bool, extra: Duration) -> io::Result<LogWriter> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = std_mpsc::channel::<WriteReq>();
        let name = format!("log-writer-{}", path.display());
        std::thread::Builder::new().name(name).spawn(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut batch: Vec<WriteReq> = Vec::with_capacity(64);
            while let Ok(first) = rx.recv() {
                batch.push(first);
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                buf.clear();
                for r in &batch {
                    buf.extend_from_slice(&r.bytes);
                }
                let mut res = file.write_all(&buf);
                if res.is_ok() && fsync {
                    res = file.sync_data();
                    SYNC_CALLS.fetch_add(1, Ordering::Relaxed);
                }
                if !extra.is_zero() {
                    std::thread::sleep(extra);
                }
                RECORDS_WRITTEN.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for r in batch.drain(..) {
                    if let Some(cb) = r.callback {
                        let r2 = match &res {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        };
                        cb(r2);
                    }
                }
            }
        })?;
        Ok(LogWriter { tx })
    }

    /// Enqueue `bytes`; `callback` is invoked from the writer thread after the data is durable.
    pub fn submit(&self, bytes: Vec<u8>, callback: Option<FlushCallback>) -> io::Result<()> {
        self.tx
            .send(WriteReq { bytes, callback })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "log writer thread is gone"))
    }
}

/// Persist the vote: overwrite a small file, then `sync_data` (skipped when `fsync == false`).
/// Called inline from `save_vote()` in both versions; it only happens at elections.
pub fn save_vote_file(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    if fsync {
        f.sync_data()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Args {
    /// Concurrent clients.
    pub clients: usize,
    /// Writes per client (measured).
    pub per_client: usize,
    /// Sequential warm-up writes before measuring.
    pub warmup: usize,
    /// Whether the log writer calls `sync_data`.
    pub fsync: bool,
    /// Base data dir; each run creates `<data>/<ver>-<pid>-<nanos>/<node>` under it.
    pub data: PathBuf,
    /// Keep the data dir after the run.
    pub keep: bool,
    /// Diagnostic: extra sleep after each sync on node 1 (the leader) only.
    pub leader_sync_delay: Duration,
}

impl Args {
    pub fn parse() -> Args {
        let mut a = Args {
            clients: 1,
            per_client: 0,
            warmup: 200,
            fsync: true,
            data: PathBuf::from("data"),
            keep: false,
            leader_sync_delay: Duration::ZERO,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut val = || it.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
            match arg.as_str() {
                "--clients" => a.clients = val().parse().unwrap_or_else(|_| usage("bad --clients")),
                "--n" => a.per_client = val().parse().unwrap_or_else(|_| usage("bad --n")),
                "--warmup" => a.warmup = val().parse().unwrap_or_else(|_| usage("bad --warmup")),
                "--data" => a.data = PathBuf::from(val()),
                "--no-fsync" => a.fsync = false,
                "--keep" => a.keep = true,
                "--leader-sync-delay-us" => {
                    let us = val().parse().unwrap_or_else(|_| usage("bad --leader-sync-delay-us"));
                    a.leader_sync_delay = Duration::from_micros(us)
                }
                "-h" | "--help" => usage(""),
                other => usage(&format!("unknown arg {other}")),
            }
        }
        if a.per_client == 0 {
            // Defaults from the brief: 1 client x 3000, or 16 clients x 1000.
            a.per_client = if a.clients == 1 { 3000 } else { 1000 };
        }
        a
    }
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("error: {msg}");
    }
    eprintln!("usage: <bin> [--clients C] [--n WRITES_PER_CLIENT] [--warmup W] [--no-fsync] [--data DIR] [--keep] [--leader-sync-delay-us US]");
    std::process::exit(2)
}

/// Create a fresh per-run directory with one sub-dir per node.
pub fn make_run_dir(base: &Path, ver: &str, node_ids: &[u64]) -> io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = base.join(format!("{ver}-{}-{nanos}", std::process::id()));
    for id in node_ids {
        std::fs::create_dir_all(dir.join(id.to_string()))?;
    }
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// Benchmark loop
// ---------------------------------------------------------------------------------------------

pub struct Stats {
    pub lat_us: Vec<u64>,
    pub wall: Duration,
}

impl Stats {
    fn pct(sorted: &[u64], p: f64) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let idx = ((sorted.len() as f64) * p).ceil() as usize;
        sorted[idx.clamp(1, sorted.len()) - 1]
    }

    /// One machine-readable line.
    pub fn line(&mut self, ver: &str, args: &Args) -> String {
        self.lat_us.sort_unstable();
        let n = self.lat_us.len();
        let mean = self.lat_us.iter().sum::<u64>() as f64 / n.max(1) as f64;
        let ops = n as f64 / self.wall.as_secs_f64();
        format!(
            "{ver} {}{} clients={} n={} p50_us={} p90_us={} p99_us={} max_us={} mean_us={:.0} ops_s={:.0} syncs={} records={}",
            if args.fsync { "fsync" } else { "nofsync" },
            if args.leader_sync_delay.is_zero() {
                String::new()
            } else {
                format!("+leaderdelay{}us", args.leader_sync_delay.as_micros())
            },
            args.clients,
            n,
            Self::pct(&self.lat_us, 0.50),
            Self::pct(&self.lat_us, 0.90),
            Self::pct(&self.lat_us, 0.99),
            self.lat_us.last().copied().unwrap_or(0),
            mean,
            ops,
            SYNC_CALLS.load(Ordering::Relaxed),
            RECORDS_WRITTEN.load(Ordering::Relaxed),
        )
    }
}

/// 16-byte key.
pub fn key(client: usize, i: usize) -> String {
    format!("c{client:02}-{i:012}")
}

/// 100-byte value.
pub fn value(client: usize, i: usize) -> String {
    format!("{:0>100}", client * 1_000_000 + i)
}

/// Warm up with `args.warmup` sequential writes, then run `args.clients` concurrent tokio tasks,
/// each doing `args.per_client` sequential writes through `write`, timing each one.
///
/// `write` performs one `client_write` on the leader and panics on error.
pub async fn run_bench<F, Fut>(args: &Args, write: F) -> Stats
where
    F: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for i in 0..args.warmup {
        write(Req { key: key(99, i), value: value(99, i) }).await;
    }
    // Counters are reported for the measured phase only.
    SYNC_CALLS.store(0, Ordering::Relaxed);
    RECORDS_WRITTEN.store(0, Ordering::Relaxed);

    let start = Instant::now();
    let mut handles = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let write = write.clone();
        let n = args.per_client;
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let t = Instant::now();
                write(Req { key: key(c, i), value: value(c, i) }).await;
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut lat_us = Vec::with_capacity(args.clients * args.per_client);
    for h in handles {
        lat_us.extend(h.await.expect("client task panicked"));
    }
    Stats { lat_us, wall: start.elapsed() }
}
