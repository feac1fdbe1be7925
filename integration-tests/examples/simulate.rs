//! Runs whole simulated clusters, one per seed (see `integration_tests::sim`).
//!
//! ```text
//! cargo run --release -p integration-tests --example simulate -- --seeds N [--first-seed S] [--members M]
//! cargo run --release -p integration-tests --example simulate -- --seed S [--members M]
//! ```
//!
//! With `--seeds`, every failing seed prints `seed S: <what failed>` and the
//! run ends with `simulate: N seeds, V violations` (V counts the failing
//! seeds; exit status 1 if V > 0). With `--seed`, one seed runs and prints
//! `history digest <hex>`. `--threads T` sets the worker threads (default:
//! the cores); `--run-for SECS` the simulated seconds of workload per seed
//! (default 20).

use std::process::ExitCode;
use std::time::Instant;

use integration_tests::sim::{SimOptions, simulate, simulate_seeds};

// Randomness without a seam (chitchat's peer choice, hash keys) from the seed.
integration_tests::interpose_getrandom!();

struct Args {
    seeds: Option<u64>,
    first_seed: u64,
    seed: Option<u64>,
    members: usize,
    threads: usize,
    run_for: Option<u64>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: None,
        first_seed: 0,
        seed: None,
        members: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        run_for: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let text = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            text.parse().map_err(|_| format!("{name}: not a number: {text}"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = Some(value("--seeds")?),
            "--first-seed" => args.first_seed = value("--first-seed")?,
            "--seed" => args.seed = Some(value("--seed")?),
            "--members" => args.members = value("--members")? as usize,
            "--threads" => args.threads = value("--threads")? as usize,
            "--run-for" => args.run_for = Some(value("--run-for")?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.seeds.is_none() == args.seed.is_none() {
        return Err("give either --seeds N or --seed S".into());
    }
    if !(1..=9).contains(&args.members) {
        return Err("--members must be 1 to 9".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    // `RUST_LOG=...` shows the members' logs (on simulated time, with `--seed`).
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "simulate: {e}\nusage: simulate --seeds N [--first-seed S] [--members M] [--threads T] | --seed S [--members M]"
            );
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let mut options = SimOptions::new(seed, args.members);
        if let Some(secs) = args.run_for {
            options.run_for = std::time::Duration::from_secs(secs);
        }
        let report = simulate(&options);
        for v in &report.violations {
            println!("seed {seed}: {v}");
        }
        println!("{} operations", report.operations);
        println!("history digest {:016x}", report.digest);
        return if report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let count = args.seeds.unwrap_or(0);
    let started = Instant::now();
    let reports = simulate_seeds(args.first_seed, count, args.members, args.threads, |o| {
        if let Some(secs) = args.run_for {
            o.run_for = std::time::Duration::from_secs(secs);
        }
    });
    let mut failing = 0u64;
    for report in &reports {
        if !report.violations.is_empty() {
            failing += 1;
            println!("seed {}: {}", report.seed, report.violations.join("; "));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{count} seeds in {secs:.1} s ({:.0} seeds per hour)", count as f64 * 3600.0 / secs.max(0.001));
    println!("simulate: {count} seeds, {failing} violations");
    if failing > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
