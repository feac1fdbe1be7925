//! [`RateLimitedLog`]: repeated bad input from one source is logged once per
//! interval, with the count of what was not logged, so a hostile peer cannot
//! flood the logs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The most sources remembered; beyond it the oldest windows are forgotten.
const MAX_SOURCES: usize = 4096;

#[derive(Debug)]
struct Window {
    started: Instant,
    suppressed: u64,
}

/// Logs a warning per (source, kind of problem) at most once per interval.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    windows: Mutex<HashMap<(IpAddr, &'static str), Window>>,
}

impl RateLimitedLog {
    /// At most one line per source and problem per `interval` (10 s in servers).
    pub fn new(interval: Duration) -> Self {
        RateLimitedLog { interval, windows: Mutex::default() }
    }

    /// Notes one occurrence of `what` from `source`; logs it unless one was
    /// logged within the interval. Returns whether it logged, and how many
    /// occurrences the line reports as suppressed since the last one.
    pub fn note(&self, source: IpAddr, what: &'static str, detail: &dyn std::fmt::Display) -> Option<u64> {
        crate::stats::refused(what);
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_SOURCES {
            windows.retain(|_, w| now.duration_since(w.started) < self.interval);
            if windows.len() >= MAX_SOURCES {
                windows.clear();
            }
        }
        let suppressed = match windows.entry((source, what)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Window { started: now, suppressed: 0 });
                0
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let window = o.get_mut();
                if now.duration_since(window.started) < self.interval {
                    window.suppressed += 1;
                    return None;
                }
                window.started = now;
                std::mem::take(&mut window.suppressed)
            }
        };
        tracing::warn!(%source, suppressed, "{what}: {detail}");
        Some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn once_per_interval_with_a_count() {
        let log = RateLimitedLog::new(Duration::from_secs(10));
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        assert_eq!(log.note(a, "bad frame", &"x"), Some(0));
        for _ in 0..99 {
            assert_eq!(log.note(a, "bad frame", &"x"), None);
        }
        assert_eq!(log.note(b, "bad frame", &"x"), Some(0), "another source is logged on its own");
        assert_eq!(log.note(a, "slow frame", &"x"), Some(0), "another problem too");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(log.note(a, "bad frame", &"x"), Some(99));
        assert_eq!(log.note(a, "bad frame", &"x"), None);
    }
}
