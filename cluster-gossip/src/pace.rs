//! Pacing: how often a member starts gossip rounds of its own.
//!
//! chitchat starts a round every gossip interval on every member: a Syn,
//! carrying a digest of every member, to three others, each answered with
//! a digest and a delta. A member's gossip cost is therefore the number of
//! members × the rounds per second, and grows with the cluster. A member
//! that the cluster does not need to hear from often (a client member of
//! the facade, which holds no raft log) can be [`Pace::Light`]: it starts
//! a round only every `interval × clamp(live members / LIGHT_MEMBERS, 1,
//! LIGHT_MAX_STRETCH)`, so that its own rounds cost about the same at 100
//! members as at 5. It still answers every Syn it receives, its failure
//! detector and its view keep chitchat's interval, and the members at full
//! pace keep pulling its state. A light member that acknowledges a leave
//! keeps full pace for [`HURRY`]: the leaver waits for the acknowledgements.
//!
//! What it costs: a light member's heartbeat leaves it less often (in its
//! own rounds and in its answers to the Syns it receives), so the others
//! notice its failure later: chitchat's detector waits `phi_threshold` ×
//! the mean time between its heartbeats. The stretch is capped so that a
//! light member's longest silence (one of its own periods) stays well below
//! that wait: it is never suspected while it runs.
//!
//! The gate works on the Syns chitchat hands to the socket: the Syns of one
//! round leave back to back, so Syns less than half an interval after the
//! first of a round belong to it and share its fate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A light member stretches its rounds by one interval per this many live members.
pub const LIGHT_MEMBERS: usize = 5;

/// The most a light member's rounds are stretched: its period is at most
/// this many intervals (2 s at the default 100 ms interval).
pub const LIGHT_MAX_STRETCH: u32 = 20;

/// How long a light member keeps full pace after it acknowledged a leave:
/// the leaver waits for the acknowledgements, which travel in rounds.
pub(crate) const HURRY: Duration = Duration::from_secs(5);

/// How often a member starts gossip rounds of its own; see [`crate::Gossip::set_pace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pace {
    /// A round every gossip interval (chitchat's own pace; the default).
    #[default]
    Full,
    /// Rounds further apart the larger the cluster (see the module doc).
    Light,
}

/// The time between a light member's own rounds with `live` members.
pub(crate) fn light_period(interval: Duration, live: usize) -> Duration {
    let stretch = (live / LIGHT_MEMBERS).clamp(1, LIGHT_MAX_STRETCH as usize) as u32;
    interval * stretch
}

/// The pace asked for and the live member count, shared between the
/// member's handle, its events task and its socket.
#[derive(Debug, Default)]
pub(crate) struct PaceState {
    light: AtomicBool,
    live: AtomicUsize,
    /// Full pace until then, whatever the pace asked for.
    hurry_until: std::sync::Mutex<Option<Instant>>,
}

impl PaceState {
    pub(crate) fn set(&self, pace: Pace) {
        self.light.store(pace == Pace::Light, Ordering::Relaxed);
    }

    pub(crate) fn set_live(&self, live: usize) {
        self.live.store(live, Ordering::Relaxed);
    }

    /// Full pace until `until` (a member acknowledged a leave).
    pub(crate) fn hurry_until(&self, until: Instant) {
        let mut at = self.hurry_until.lock().unwrap_or_else(|p| p.into_inner());
        *at = Some(at.map_or(until, |t| t.max(until)));
    }

    /// The time between this member's own rounds at `now`.
    pub(crate) fn period(&self, interval: Duration, now: Instant) -> Duration {
        let hurried = self.hurry_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| now < t);
        if self.light.load(Ordering::Relaxed) && !hurried {
            light_period(interval, self.live.load(Ordering::Relaxed))
        } else {
            interval
        }
    }
}

/// Decides which of chitchat's rounds leave the socket.
#[derive(Debug)]
pub(crate) struct RoundGate {
    interval: Duration,
    /// The first Syn of the current round, and whether the round is sent.
    round: Option<(Instant, bool)>,
    /// The last round sent.
    last_sent: Option<Instant>,
}

impl RoundGate {
    pub(crate) fn new(interval: Duration) -> Self {
        RoundGate { interval, round: None, last_sent: None }
    }

    /// Whether a Syn leaving at `now` is sent, with `period` between rounds.
    pub(crate) fn admit(&mut self, now: Instant, period: Duration) -> bool {
        let half = self.interval / 2;
        if let Some((started, sent)) = self.round
            && now.saturating_duration_since(started) < half
        {
            return sent;
        }
        // A new round. chitchat's ticks jitter: half an interval of slack
        // keeps a period of k intervals from becoming k + 1.
        let sent = self.last_sent.is_none_or(|last| now.saturating_duration_since(last) + half >= period);
        if sent {
            self.last_sent = Some(now);
        }
        self.round = Some((now, sent));
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(100);

    #[test]
    fn light_period_grows_with_the_cluster_and_is_capped() {
        assert_eq!(light_period(I, 0), I);
        assert_eq!(light_period(I, 9), I);
        assert_eq!(light_period(I, 30), I * 6);
        assert_eq!(light_period(I, 100), I * 20);
        assert_eq!(light_period(I, 1_000), I * LIGHT_MAX_STRETCH);
    }

    #[test]
    fn full_pace_sends_every_round() {
        let state = PaceState::default();
        state.set_live(100);
        let mut gate = RoundGate::new(I);
        let t0 = Instant::now();
        for round in 0..10u32 {
            let at = t0 + I * round;
            assert!(gate.admit(at, state.period(I, t0)), "round {round}");
            assert!(gate.admit(at + Duration::from_millis(2), state.period(I, t0)), "same round");
        }
    }

    #[test]
    fn light_pace_sends_one_round_per_period_whole() {
        let state = PaceState::default();
        state.set(Pace::Light);
        state.set_live(30); // 6 intervals
        let mut gate = RoundGate::new(I);
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for round in 0..24u32 {
            // Ticks a little late or early, as a loaded machine has them.
            let jitter = Duration::from_millis(u64::from(round % 3) * 7);
            let at = t0 + I * round + jitter;
            let first = gate.admit(at, state.period(I, t0));
            // Every Syn of a round shares the fate of its first.
            assert_eq!(gate.admit(at + Duration::from_millis(3), state.period(I, t0)), first);
            if first {
                sent.push(round);
            }
        }
        assert_eq!(sent, [0, 6, 12, 18]);
    }

    #[test]
    fn full_pace_while_hurried() {
        let state = PaceState::default();
        state.set(Pace::Light);
        state.set_live(100);
        let t0 = Instant::now();
        state.hurry_until(t0 + HURRY);
        assert_eq!(state.period(I, t0), I);
        assert_eq!(state.period(I, t0 + HURRY), I * 20);
    }

    #[test]
    fn back_to_full_pace_at_once() {
        let state = PaceState::default();
        state.set(Pace::Light);
        state.set_live(100);
        let mut gate = RoundGate::new(I);
        let t0 = Instant::now();
        assert!(gate.admit(t0, state.period(I, t0)));
        assert!(!gate.admit(t0 + I, state.period(I, t0)));
        state.set(Pace::Full);
        assert!(gate.admit(t0 + I * 2, state.period(I, t0)));
    }
}
