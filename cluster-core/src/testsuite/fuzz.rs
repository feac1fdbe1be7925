//! What the fuzzing drivers of every crate share: counting panics anywhere in
//! the process, and the frame of a long run (its arguments, its runtime, its
//! verdict).

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Replaces the panic hook with one that counts every panic of the process
/// (on any thread: a server task panicking is what a fuzzer looks for) and
/// prints the first five; `FUZZ_BACKTRACE` set prints the first one's backtrace.
pub fn count_panics() {
    std::panic::set_hook(Box::new(|info| {
        let n = PANICS.fetch_add(1, Ordering::SeqCst);
        if n < 5 {
            eprintln!("PANIC: {info}");
        }
        if n == 0 && std::env::var_os("FUZZ_BACKTRACE").is_some() {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

/// Panics counted since [`count_panics`].
pub fn panics() -> u64 {
    PANICS.load(Ordering::SeqCst)
}

/// The `main` of a long fuzz run (an example program): reads
/// `[SEED] [FRAMES_PER_KIND]` from the arguments (seed 1 and `default_frames`
/// when missing), counts panics, runs `run(seed, frames)` on two worker
/// threads, and succeeds only if it returned true and nothing panicked.
pub fn long_run<F, Fut>(default_frames: u64, run: F) -> ExitCode
where
    F: FnOnce(u64, u64) -> Fut,
    Fut: Future<Output = bool>,
{
    let (seed, frames) = seed_and_frames(default_frames);
    count_panics();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let held = runtime.block_on(run(seed, frames));
    let panics = panics();
    println!("seed {seed}, {frames} frames per kind: {:.1?}; panics: {panics}", started.elapsed());
    if held && panics == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// `[SEED] [FRAMES_PER_KIND]` from the program's arguments, with defaults
/// (seed 1, `default_frames`) for what is missing or not a number.
fn seed_and_frames(default_frames: u64) -> (u64, u64) {
    let mut args = std::env::args().skip(1);
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let frames = args.next().and_then(|s| s.parse().ok()).unwrap_or(default_frames);
    (seed, frames)
}
