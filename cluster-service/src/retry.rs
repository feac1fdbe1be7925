//! The one retry loop of the crate, run by [`Router`](crate::Router) for both
//! its forms: attempts bounded in time, an overall deadline,
//! backoff with jitter between attempts, and a quick hop when an answer names
//! a new leader.

use std::future::Future;
use std::time::Duration;

use cluster_core::{Error, LeaderHint, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How long to wait between two attempts of one operation: exponential growth
/// from `initial` to `max`, each delay drawn at random between half and all of
/// its value, so that callers that failed together do not retry together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Backoff {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The growth factor from one delay to the next.
    pub multiplier: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(500), multiplier: 2 }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (0 for the first), with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1).saturating_pow(attempt.min(32));
        let base = self.initial.saturating_mul(factor).min(self.max);
        let half = base / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter_ns == 0 { 0 } else { rand::rng().random_range(0..=jitter_ns) };
        half + Duration::from_nanos(jitter)
    }
}

/// When to give up on one operation and on one attempt of it.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    /// What is being done, for error messages.
    pub(crate) what: &'static str,
    /// The whole operation, all attempts and pauses included.
    pub(crate) op_timeout: Duration,
    /// One attempt.
    pub(crate) attempt_timeout: Duration,
    /// The pauses between attempts.
    pub(crate) backoff: Backoff,
}

/// What an attempt knows about the attempts before it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 0 for the first attempt.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) number: u32,
    /// The error of the previous attempt, if any.
    pub(crate) last_error: Option<Error>,
}

impl Attempt {
    /// The leader named by the previous attempt's answer, if any.
    pub(crate) fn hint(&self) -> Option<&LeaderHint> {
        match &self.last_error {
            Some(Error::NotLeader(Some(hint))) => Some(hint),
            _ => None,
        }
    }
}

/// Consecutive attempts that follow a new leader hint without pausing.
const QUICK_HOPS: u32 = 3;

/// Runs `attempt` until it succeeds, fails with an error that retrying cannot
/// fix, or the operation's deadline passes. Between attempts it calls `pause`
/// with the backoff delay (which may return early, e.g. when a new leader is
/// known), except right after an answer that names a leader not tried yet.
pub(crate) async fn retry<T, A, AF, P, PF>(policy: &RetryPolicy, mut attempt: A, mut pause: P) -> Result<T>
where
    A: FnMut(Attempt) -> AF,
    AF: Future<Output = Result<T>>,
    P: FnMut(Duration) -> PF,
    PF: Future<Output = ()>,
{
    let deadline = Instant::now() + policy.op_timeout;
    let mut last_error: Option<Error> = None;
    let mut last_hint: Option<LeaderHint> = None;
    let mut quick_hops = 0;
    for number in 0u32.. {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(give_up(policy, number, last_error));
        }
        let timeout = remaining.min(policy.attempt_timeout);
        let this = Attempt { number, last_error: last_error.take() };
        let error = match tokio::time::timeout(timeout, attempt(this)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !e.is_retryable() => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => Error::Timeout(format!("{}: an attempt took longer than {timeout:?}", policy.what)),
        };
        tracing::debug!(what = policy.what, attempt = number, %error, "attempt failed, retrying");
        let new_hint = match &error {
            Error::NotLeader(Some(h)) if h.service_addr.is_some() => {
                let fresh = last_hint.as_ref() != Some(h);
                last_hint = Some(h.clone());
                fresh
            }
            _ => false,
        };
        last_error = Some(error);
        let delay = if new_hint && quick_hops < QUICK_HOPS {
            quick_hops += 1;
            Duration::ZERO
        } else {
            quick_hops = 0;
            policy.backoff.delay(number)
        };
        let delay = delay.min(deadline.saturating_duration_since(Instant::now()));
        if !delay.is_zero() {
            pause(delay).await;
        }
    }
    Err(give_up(policy, u32::MAX, last_error))
}

/// The error of an operation whose deadline passed.
fn give_up(policy: &RetryPolicy, attempts: u32, last: Option<Error>) -> Error {
    let what = policy.what;
    let within = policy.op_timeout;
    match last {
        Some(Error::Unreachable(e)) => {
            Error::Unreachable(format!("{what}: {attempts} attempts within {within:?}, the last: {e}"))
        }
        Some(e) => Error::Timeout(format!("{what}: {attempts} attempts within {within:?}, the last: {e}")),
        None => Error::Timeout(format!("{what}: no attempt within {within:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::MemberId;
    use proptest::prelude::*;
    use std::sync::Mutex;

    fn policy(op_ms: u64) -> RetryPolicy {
        RetryPolicy {
            what: "test",
            op_timeout: Duration::from_millis(op_ms),
            attempt_timeout: Duration::from_millis(op_ms),
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
                multiplier: 2,
            },
        }
    }

    #[test]
    fn backoff_grows_to_its_max_with_jitter() {
        let b =
            Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(100), multiplier: 2 };
        for _ in 0..100 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(5) && d0 <= Duration::from_millis(10), "{d0:?}");
            let d9 = b.delay(40);
            assert!(d9 >= Duration::from_millis(50) && d9 <= Duration::from_millis(100), "{d9:?}");
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_success_and_passes_the_last_error() {
        let seen = Mutex::new(Vec::new());
        let r = retry(
            &policy(10_000),
            |a| {
                seen.lock().unwrap().push(a.last_error.clone());
                let n = a.number;
                async move { if n < 3 { Err(Error::Unreachable(format!("{n}"))) } else { Ok(n) } }
            },
            tokio::time::sleep,
        )
        .await;
        assert_eq!(r, Ok(3));
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen[0], None);
        assert_eq!(seen[3], Some(Error::Unreachable("2".into())));
    }

    #[tokio::test]
    async fn stops_at_an_error_retrying_cannot_fix() {
        let r: Result<()> =
            retry(&policy(10_000), |_| async { Err(Error::BadRequest("no".into())) }, tokio::time::sleep)
                .await;
        assert_eq!(r, Err(Error::BadRequest("no".into())));
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let r: Result<()> =
            retry(&policy(50), |_| async { Err(Error::NotLeader(None)) }, tokio::time::sleep).await;
        assert!(matches!(r, Err(Error::Timeout(ref m)) if m.contains("not the leader")), "{r:?}");
    }

    #[tokio::test]
    async fn follows_a_new_hint_without_pausing() {
        let pauses = Mutex::new(0);
        let hint = LeaderHint { member_id: MemberId::generate(), service_addr: Some("x:1".into()) };
        let r = retry(
            &policy(10_000),
            |a| {
                let hint = hint.clone();
                async move { if a.number == 0 { Err(Error::NotLeader(Some(hint))) } else { Ok(a.number) } }
            },
            |d| {
                *pauses.lock().unwrap() += 1;
                tokio::time::sleep(d)
            },
        )
        .await;
        assert_eq!(r, Ok(1));
        assert_eq!(*pauses.lock().unwrap(), 0);
    }

    /// What one scripted attempt answers.
    #[derive(Debug, Clone)]
    enum Answer {
        Ok,
        /// Retrying may help (no leader, unreachable, slow, a hint to follow).
        Retryable(Error),
        /// Retrying cannot help.
        Final(Error),
    }

    /// An attempt: how long it takes (always less than its own timeout, so
    /// its answer is seen unless the operation's deadline cuts it) and what
    /// it answers.
    fn any_attempt() -> impl Strategy<Value = (u64, Answer)> {
        let hint = (0..3u64).prop_map(|n| {
            Error::NotLeader(Some(LeaderHint {
                member_id: MemberId::from(n),
                service_addr: Some(format!("member-{n}:7001")),
            }))
        });
        let retryable = prop_oneof![
            Just(Error::NotLeader(None)),
            Just(Error::Unreachable("down".into())),
            Just(Error::Timeout("slow".into())),
            hint,
        ];
        let fatal =
            prop_oneof![Just(Error::BadRequest("no".into())), Just(Error::Forbidden("reserved".into()))];
        let answer = prop_oneof![
            1 => Just(Answer::Ok),
            4 => retryable.prop_map(Answer::Retryable),
            1 => fatal.prop_map(Answer::Final),
        ];
        (0..100u64, answer)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// On the paused clock: whatever the attempts answer and however long
        /// they take, the loop ends by its deadline, stops at the first error
        /// retrying cannot fix, and retries every other.
        #[test]
        fn retries_only_what_may_succeed_and_never_past_the_deadline(
            script in proptest::collection::vec(any_attempt(), 1..30),
            op_ms in 1..2_000u64,
            attempt_ms in 100..500u64,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            let policy = RetryPolicy { attempt_timeout: Duration::from_millis(attempt_ms), ..policy(op_ms) };
            let calls = Mutex::new(0usize);
            let (result, elapsed) = rt.block_on(async {
                let started = Instant::now();
                let result: Result<usize> = retry(
                    &policy,
                    |a| {
                        let n = a.number as usize;
                        *calls.lock().unwrap() += 1;
                        // Past the script, the service stays unreachable.
                        let (ms, answer) = script
                            .get(n)
                            .cloned()
                            .unwrap_or((10, Answer::Retryable(Error::Unreachable("down".into()))));
                        async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            match answer {
                                Answer::Ok => Ok(n),
                                Answer::Retryable(e) | Answer::Final(e) => Err(e),
                            }
                        }
                    },
                    tokio::time::sleep,
                )
                .await;
                (result, started.elapsed())
            });
            // The timer rounds a sleep up to its next millisecond.
            let bound = policy.op_timeout + Duration::from_millis(1);
            prop_assert!(elapsed <= bound, "took {:?} of {:?}", elapsed, policy.op_timeout);
            let last = calls.into_inner().unwrap() - 1;
            // Every attempt before the last was answered, and retryably.
            for n in 0..last {
                if let Some((_, answer)) = script.get(n) {
                    prop_assert!(!matches!(answer, Answer::Final(_)), "attempt {} after a final error", n + 1);
                    prop_assert!(!matches!(answer, Answer::Ok), "attempt {} after a success", n + 1);
                }
            }
            let answer = script.get(last).map(|(_, a)| a.clone());
            match result {
                Ok(n) => prop_assert!(n == last && matches!(answer, Some(Answer::Ok))),
                // Given up: only at the deadline.
                Err(e) if e.is_retryable() => {
                    prop_assert!(matches!(e, Error::Timeout(_) | Error::Unreachable(_)), "{:?}", e);
                    prop_assert!(elapsed >= policy.op_timeout, "gave up early, at {:?}", elapsed);
                }
                Err(e) => prop_assert!(matches!(&answer, Some(Answer::Final(f)) if *f == e), "{:?}", e),
            }
        }
    }
}
