//! The monitor's counters and its heartbeat-handling latency histogram, lock-free so that
//! recording costs a few atomic adds on the hot path, and their Prometheus text rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Histogram;

/// Counters of the monitor; cheap to update from any task.
pub struct Stats {
    pub heartbeats: AtomicU64,
    pub registrations: AtomicU64,
    pub deregistrations: AtomicU64,
    /// Calls refused: no or wrong token, malformed request.
    pub refused: AtomicU64,
    /// Heartbeats ignored: from a member no longer in the pool, or out of order.
    pub stale: AtomicU64,
    pub launches: AtomicU64,
    pub terminations: AtomicU64,
    pub fleet_errors: AtomicU64,
    handle: Histogram,
    handle_sum_ns: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    pub heartbeats: u64,
    pub registrations: u64,
    pub deregistrations: u64,
    pub refused: u64,
    pub stale: u64,
    pub launches: u64,
    pub terminations: u64,
    pub fleet_errors: u64,
    /// Heartbeat handling latency (message received → membership updated), bucket upper bounds.
    pub handle_p50: Duration,
    pub handle_p99: Duration,
    pub handle_max: Duration,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            heartbeats: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
            deregistrations: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            launches: AtomicU64::new(0),
            terminations: AtomicU64::new(0),
            fleet_errors: AtomicU64::new(0),
            handle: Histogram::default(),
            handle_sum_ns: AtomicU64::new(0),
        }
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// Records one handled heartbeat and how long handling it took.
    pub fn heartbeat_handled(&self, took: Duration) {
        add(&self.heartbeats, 1);
        self.handle.record(took);
        add(
            &self.handle_sum_ns,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            heartbeats: get(&self.heartbeats),
            registrations: get(&self.registrations),
            deregistrations: get(&self.deregistrations),
            refused: get(&self.refused),
            stale: get(&self.stale),
            launches: get(&self.launches),
            terminations: get(&self.terminations),
            fleet_errors: get(&self.fleet_errors),
            handle_p50: self.handle.quantile(0.50),
            handle_p99: self.handle.quantile(0.99),
            handle_max: self.handle.max(),
        }
    }

    /// Counters and the latency histogram in the Prometheus text format (version 0.0.4).
    pub fn prometheus(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, c) in [
            (
                "iac_monitor_heartbeats_total",
                "Heartbeats handled.",
                &self.heartbeats,
            ),
            (
                "iac_monitor_registrations_total",
                "Successful registrations.",
                &self.registrations,
            ),
            (
                "iac_monitor_deregistrations_total",
                "Deregistrations asked by agents.",
                &self.deregistrations,
            ),
            (
                "iac_monitor_rpc_refused_total",
                "RPCs refused (no or wrong token, malformed).",
                &self.refused,
            ),
            (
                "iac_monitor_heartbeats_stale_total",
                "Heartbeats ignored (unknown member or out of order).",
                &self.stale,
            ),
            (
                "iac_monitor_launches_total",
                "Instances launched.",
                &self.launches,
            ),
            (
                "iac_monitor_terminations_total",
                "Instances terminated.",
                &self.terminations,
            ),
            (
                "iac_monitor_fleet_errors_total",
                "Failed fleet calls (launch, terminate, list).",
                &self.fleet_errors,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(c)
            );
        }
        let name = "iac_monitor_heartbeat_handle_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a heartbeat's arrival to the membership update.\n# TYPE {name} histogram"
        );
        for (le, count) in self.handle.cumulative_per_doubling() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le:e}\"}} {count}");
        }
        let cumulative = self.handle.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.handle_sum_ns) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_and_bound_the_values() {
        let s = Stats::default();
        for _ in 0..98 {
            s.heartbeat_handled(Duration::from_micros(10));
        }
        s.heartbeat_handled(Duration::from_millis(3));
        s.heartbeat_handled(Duration::from_millis(3));
        let snap = s.snapshot();
        assert_eq!(snap.heartbeats, 100);
        assert!(snap.handle_p50 >= Duration::from_micros(10));
        assert!(snap.handle_p50 < Duration::from_micros(13), "{snap:?}");
        assert!(snap.handle_p99 >= Duration::from_millis(3), "{snap:?}");
        assert!(snap.handle_p99 < Duration::from_micros(3600), "{snap:?}");
        assert_eq!(snap.handle_max, Duration::from_millis(3));
    }

    #[test]
    fn prometheus_histogram_is_cumulative_and_counts_everything() {
        let s = Stats::default();
        s.heartbeat_handled(Duration::from_micros(5));
        s.heartbeat_handled(Duration::from_secs(100));
        add(&s.refused, 2);
        let mut text = String::new();
        s.prometheus(&mut text);
        assert!(text.contains("iac_monitor_rpc_refused_total 2\n"), "{text}");
        assert!(text.contains("iac_monitor_heartbeat_handle_seconds_count 2\n"));
        assert!(text.contains("iac_monitor_heartbeat_handle_seconds_bucket{le=\"+Inf\"} 2\n"));
        let buckets: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("iac_monitor_heartbeat_handle_seconds_bucket"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets.first(), Some(&0));
    }
}
