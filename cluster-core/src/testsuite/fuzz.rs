//! What the fuzzing drivers of every crate share: counting panics anywhere in
//! the process, and the seed and frame count of a long run from its arguments.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// `[SEED] [FRAMES_PER_KIND]` from the program's arguments, with defaults
/// (seed 1, `default_frames`) for what is missing or not a number.
pub fn seed_and_frames(default_frames: u64) -> (u64, u64) {
    let mut args = std::env::args().skip(1);
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let frames = args.next().and_then(|s| s.parse().ok()).unwrap_or(default_frames);
    (seed, frames)
}
