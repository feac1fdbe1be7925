//! Percentiles of one run and the median/min/max over repetitions.

use std::time::Duration;

use serde::Serialize;

/// One repetition's latencies, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<u64>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }

    /// The `p` quantile (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&mut self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1;
        Some(self.0[i] as f64 / 1e3)
    }
}

/// Median, min and max of one figure over its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    /// `None` when there is no sample.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        Some(Summary { median, min: s[0], max: s[n - 1], samples: samples.to_vec() })
    }
}
