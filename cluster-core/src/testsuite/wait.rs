//! Waiting on a condition with a deadline, the one way tests wait.
//!
//! A test never sleeps and hopes: it names what it waits for, gives a
//! deadline, and fails with that name when the deadline passes. Deadlines are
//! generous (the machines that run the tests are small and shared) because a
//! wait ends as soon as its condition holds.

use std::time::{Duration, Instant};

/// The deadline most waits use: long, because a wait ends as soon as its
/// condition holds and only a failing test waits this long.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often a condition is checked again: at first soon (most waits in one
/// process end within milliseconds), then less often, so that a check that
/// calls another process does not flood it.
const FIRST_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_millis(100);

/// Checks `cond` until it holds; panics naming `what` if it does not hold
/// within `within`.
///
/// The condition is async so that it can call async APIs; a plain check is
/// written `|| std::future::ready(check())`, and an async closure
/// (`async || ...`) may borrow mutably what it checks (a harness whose reads
/// take `&mut self`). Time is tokio's, so a test under `tokio::time::pause`
/// waits in paused time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::future::ready;
/// use cluster_core::testsuite::wait::{DEADLINE, wait_until};
///
/// let ready_at = tokio::time::Instant::now() + std::time::Duration::from_millis(30);
/// wait_until(DEADLINE, "the time to come", || ready(tokio::time::Instant::now() >= ready_at)).await;
/// # }
/// ```
pub async fn wait_until(within: Duration, what: &str, cond: impl AsyncFnMut() -> bool) {
    assert!(holds_within(within, cond).await, "timed out after {within:?} waiting for {what}");
}

/// The check behind [`wait_until`], for a harness that reports a timeout as
/// an error rather than a panic: true as soon as `cond` holds, false once
/// `within` passed (in tokio's time) without it holding.
pub async fn holds_within(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut poll = FIRST_POLL;
    while !cond().await {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(MAX_POLL);
    }
    true
}

/// [`wait_until`] for tests without a runtime (processes driven from plain
/// threads): checks `cond` until it holds, sleeping the thread in between.
pub fn wait_until_blocking(within: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(holds_within_blocking(within, cond), "timed out after {within:?} waiting for {what}");
}

/// The check behind [`wait_until_blocking`], for a harness that reports a
/// timeout as an error rather than a panic: true as soon as `cond` holds,
/// false once `within` passed without it holding.
pub fn holds_within_blocking(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    let mut poll = FIRST_POLL;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll);
        poll = (poll * 2).min(MAX_POLL);
    }
    true
}

#[cfg(test)]
mod tests {
    use std::future::ready;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_condition_holds() {
        let checks = AtomicUsize::new(0);
        wait_until(DEADLINE, "the third check", || ready(checks.fetch_add(1, Ordering::SeqCst) >= 2)).await;
        assert_eq!(checks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for something that never happens")]
    async fn fails_at_the_deadline_naming_what_it_waited_for() {
        wait_until(Duration::from_secs(1), "something that never happens", || ready(false)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn holds_within_answers_false_at_the_deadline_and_true_once_it_holds() {
        assert!(!holds_within(Duration::from_secs(1), || ready(false)).await);
        let checks = AtomicUsize::new(0);
        assert!(holds_within(DEADLINE, || ready(checks.fetch_add(1, Ordering::SeqCst) >= 1)).await);
    }

    #[test]
    #[should_panic(expected = "waiting for a blocked condition")]
    fn the_blocking_wait_fails_at_its_deadline() {
        wait_until_blocking(Duration::from_millis(250), "a blocked condition", || false);
    }

    #[test]
    fn the_blocking_wait_returns_once_the_condition_holds() {
        let mut checks = 0;
        wait_until_blocking(DEADLINE, "the second check", || {
            checks += 1;
            checks >= 2
        });
        assert_eq!(checks, 2);
    }
}
