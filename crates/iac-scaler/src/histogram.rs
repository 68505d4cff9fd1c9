//! A lock-free latency histogram: many tasks record, anyone reads quantiles. Buckets are eight
//! per doubling (about 9 % wide), which is finer than the run-to-run noise of a benchmark on a
//! shared two-core machine. The monitor records its heartbeat handling in one, and the load
//! generator its round trips.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Eight buckets per doubling from 1 µs: index 215 is about 2^27 µs (134 s), beyond any timeout.
const BUCKETS: usize = 216;
const PER_DOUBLING: usize = 8;

fn upper_bound_us(i: usize) -> f64 {
    2f64.powf(i as f64 / PER_DOUBLING as f64)
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= 1.0 {
        return 0;
    }
    ((us.log2() * PER_DOUBLING as f64).ceil() as usize).min(BUCKETS - 1)
}

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        self.buckets[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }

    /// Cumulative counts at one bound per doubling (1 µs, 2 µs, 4 µs, … in seconds), for the
    /// Prometheus exposition; the last bucket, which also holds everything beyond, shows only in
    /// `+Inf`, i.e. in [`Histogram::count`].
    pub fn cumulative_per_doubling(&self) -> Vec<(f64, u64)> {
        let mut seen = 0;
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter().enumerate().take(BUCKETS - 1) {
            seen += b.load(Ordering::Relaxed);
            if i % PER_DOUBLING == 0 {
                out.push((upper_bound_us(i) / 1e6, seen));
            }
        }
        out
    }

    /// The bucket bound below which a share `q` of the recordings fall (never above the maximum
    /// seen); zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_secs_f64(upper_bound_us(i) / 1e6).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_bound_the_recorded_values_within_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        for _ in 0..99 {
            h.record(Duration::from_micros(200));
        }
        h.record(Duration::from_millis(40));
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5);
        assert!(p50 >= Duration::from_micros(200), "{p50:?}");
        assert!(p50 < Duration::from_micros(220), "{p50:?}");
        assert!(h.quantile(0.99) < Duration::from_micros(220));
        assert_eq!(h.quantile(1.0), Duration::from_millis(40));
        assert_eq!(h.max(), Duration::from_millis(40));
    }

    #[test]
    fn extremes_land_in_the_first_and_last_buckets() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_secs(100_000)), BUCKETS - 1);
    }
}
