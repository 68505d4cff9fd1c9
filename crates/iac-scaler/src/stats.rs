//! The monitor's counters and its heartbeat-handling latency histogram, lock-free so that
//! recording costs a few atomic adds on the hot path, and their Prometheus text rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Histogram;

/// Why a call (or one message of a stream) was refused. Each reason has its own counter, so a
/// test or an operator can tell a flood from a forged member id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// No token, or the wrong one.
    Token,
    /// A field out of bounds (instance id, address, labels).
    Malformed,
    /// An instance id the fleet neither launched nor lists.
    NotInFleet,
    /// The membership table is full (`max` plus a small margin).
    TableFull,
    /// More registrations per second than the monitor accepts.
    RateLimited,
    /// A registration for a member whose heartbeat stream is live.
    Live,
    /// A heartbeat, deregistration or drain acknowledgement without the registration's session.
    Session,
    /// A message for another member on a stream bound to one.
    OtherMember,
    /// A heartbeat whose `seq` skips ahead.
    SeqJump,
    /// A message larger than the server accepts.
    Oversized,
    /// A connection whose TLS handshake failed: plaintext, or a client that does not trust the
    /// stack's CA (or finds the certificate expired).
    Tls,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::Token,
        Refusal::Malformed,
        Refusal::NotInFleet,
        Refusal::TableFull,
        Refusal::RateLimited,
        Refusal::Live,
        Refusal::Session,
        Refusal::OtherMember,
        Refusal::SeqJump,
        Refusal::Oversized,
        Refusal::Tls,
    ];

    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Token => "token",
            Refusal::Malformed => "malformed",
            Refusal::NotInFleet => "not_in_fleet",
            Refusal::TableFull => "table_full",
            Refusal::RateLimited => "rate_limited",
            Refusal::Live => "live_stream",
            Refusal::Session => "session",
            Refusal::OtherMember => "other_member",
            Refusal::SeqJump => "seq_jump",
            Refusal::Oversized => "oversized",
            Refusal::Tls => "tls_handshake",
        }
    }
}

/// Counters of the monitor; cheap to update from any task.
pub struct Stats {
    pub heartbeats: AtomicU64,
    pub registrations: AtomicU64,
    pub deregistrations: AtomicU64,
    /// Calls (or stream messages) refused, for any [`Refusal`].
    pub refused: AtomicU64,
    /// The same, by reason (indexed like [`Refusal::ALL`]).
    refused_by: [AtomicU64; Refusal::ALL.len()],
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
    /// Refusals by reason (every reason present, zero or not).
    pub refused_by: std::collections::BTreeMap<Refusal, u64>,
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
            refused_by: Default::default(),
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
    /// Counts one refusal.
    pub fn refuse(&self, why: Refusal) {
        add(&self.refused, 1);
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            add(&self.refused_by[i], 1);
        }
    }

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
            refused_by: Refusal::ALL
                .iter()
                .zip(&self.refused_by)
                .map(|(r, c)| (*r, get(c)))
                .collect(),
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
        let name = "iac_monitor_rpc_refused_by_reason_total";
        let _ = writeln!(
            out,
            "# HELP {name} RPCs or stream messages refused, by reason.\n# TYPE {name} counter"
        );
        for (r, c) in Refusal::ALL.iter().zip(&self.refused_by) {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", r.as_str(), get(c));
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
        s.refuse(Refusal::SeqJump);
        s.refuse(Refusal::Token);
        let mut text = String::new();
        s.prometheus(&mut text);
        assert!(text.contains("iac_monitor_rpc_refused_total 2\n"), "{text}");
        assert!(
            text.contains("iac_monitor_rpc_refused_by_reason_total{reason=\"seq_jump\"} 1\n"),
            "{text}"
        );
        assert_eq!(s.snapshot().refused_by[&Refusal::Token], 1);
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
