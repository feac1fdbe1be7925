//! fdatasync cost alone on this filesystem: append 200 bytes + `sync_data`, N times.
//!
//! usage: fsync-probe [DIR] [N] [THREADS]   (defaults: ./data, 2000, 1)
//!
//! With THREADS > 1, that many threads each run the loop on their own file at the same time
//! (like the 3 nodes of the spike sharing one disk); percentiles are over all samples.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "data".into()));
    let n: usize = args.next().map(|s| s.parse().expect("N")).unwrap_or(2000);
    let threads: usize = args.next().map(|s| s.parse().expect("THREADS")).unwrap_or(1);
    std::fs::create_dir_all(&dir)?;

    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let path = dir.join(format!("fsync-probe-{}-{t}.log", std::process::id()));
            std::thread::spawn(move || -> std::io::Result<Vec<u64>> {
                let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
                let rec = [b'x'; 200];
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    f.write_all(&rec)?;
                    f.sync_data()?;
                    lat.push(t.elapsed().as_micros() as u64);
                }
                std::fs::remove_file(&path)?;
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(n * threads);
    for h in handles {
        lat.extend(h.join().expect("probe thread panicked")?);
    }
    let wall = start.elapsed();

    lat.sort_unstable();
    let total = lat.len();
    let p = |q: f64| lat[(((total as f64) * q).ceil() as usize).clamp(1, total) - 1];
    println!(
        "fdatasync threads={} n={} p50_us={} p90_us={} p99_us={} mean_us={:.0} ops_s={:.0}",
        threads,
        total,
        p(0.5),
        p(0.9),
        p(0.99),
        lat.iter().sum::<u64>() as f64 / total as f64,
        total as f64 / wall.as_secs_f64()
    );
    Ok(())
}
