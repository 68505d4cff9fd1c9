//! The stack lock's lease, as pure data and decisions (the SSM I/O is in `aws::lock`).
//!
//! A lock record says who holds the stack, for what, since when, and for how long the lease runs
//! after its last write. Expiry is judged from the time AWS stamped on the last write (the
//! parameter's `LastModifiedDate`), not from the holder's clock, so two machines with different
//! clocks agree on it; each side keeps a safety margin (`margin`) so that the holder gives the
//! lock up before any other run may take it over.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The lease when nothing else is configured: long enough that a renewal delayed by throttling
/// (the retry budget is about a minute) does not lose the lock, short enough that a run killed
/// with SIGKILL blocks the next one for only a couple of minutes.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);

/// Who runs the command holding the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub user: String,
    pub host: String,
    /// The CI run, when the command runs in CI (`GITHUB_RUN_ID`, `CI_JOB_ID`, …), as `VAR=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_run: Option<String>,
    pub pid: u32,
}

impl Holder {
    /// This process, from the environment.
    pub fn current() -> Holder {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let user = env("USER")
            .or_else(|| env("USERNAME"))
            .or_else(|| env("GITHUB_ACTOR"))
            .or_else(|| env("GITLAB_USER_LOGIN"))
            .unwrap_or_else(|| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata("/proc/self")
                    .map(|m| format!("uid {}", m.uid()))
                    .unwrap_or_else(|_| "unknown".to_string())
            });
        let host = env("HOSTNAME")
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "unknown".to_string());
        const CI_IDS: &[&str] = &[
            "GITHUB_RUN_ID",
            "CI_JOB_ID",
            "BUILD_ID",
            "CIRCLE_WORKFLOW_ID",
            "BUILDKITE_BUILD_ID",
        ];
        let ci_run = CI_IDS
            .iter()
            .find_map(|k| env(k).map(|v| format!("{k}={v}")));
        Holder {
            user,
            host,
            ci_run,
            pid: std::process::id(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{} (pid {}", self.user, self.host, self.pid)?;
        if let Some(ci) = &self.ci_run {
            write!(f, ", {ci}")?;
        }
        write!(f, ")")
    }
}

/// The lock parameter's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Random, per acquisition: tells this run's writes from anyone else's.
    pub token: String,
    pub holder: Holder,
    /// `up` or `down`.
    pub operation: String,
    /// When the operation took the lock (Unix seconds, holder's clock; for display).
    pub started: u64,
    /// The lease in seconds after each write.
    pub lease_s: u64,
    /// The token of the expired record this one replaced, when it took an expired lease over.
    /// Two runs racing to take over the same expired lease both say so; the one whose write came
    /// first keeps the lock (see `aws::lock`), and the other one's write is recognised as a
    /// loser's by the winner, which writes its own record back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_over: Option<String>,
}

impl Record {
    pub fn new(operation: &str, lease: Duration, token: String, now_unix: u64) -> Record {
        Record {
            token,
            holder: Holder::current(),
            operation: operation.to_string(),
            started: now_unix,
            lease_s: lease.as_secs().max(1),
            took_over: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Option<Record> {
        serde_json::from_str(s).ok()
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_s)
    }

    /// Whether `seen` (the parameter's current value) is this run's lock: its own record, or
    /// the write of a run that lost the same take-over race (see `took_over`).
    pub fn owns(&self, seen: &Record) -> bool {
        seen.token == self.token || (self.took_over.is_some() && seen.took_over == self.took_over)
    }
}

/// The margin each side keeps against clock differences and request latency: the holder stops
/// counting on its lease this long before it ends, others wait this long after it ends.
pub fn margin(lease: Duration) -> Duration {
    lease / 6
}

/// How often the holder renews: four times per lease, so three renewals in a row can fail
/// (throttling, a network blip) before the lease is at risk.
pub fn renew_every(lease: Duration) -> Duration {
    lease / 4
}

/// Whether a record last written at `written_unix` (AWS's clock, seconds) has expired at
/// `now_unix`, as seen by a run that wants the lock.
pub fn expired(lease: Duration, written_unix: f64, now_unix: f64) -> bool {
    now_unix > written_unix + (lease + margin(lease)).as_secs_f64()
}

/// How long ago something happened, for people: `45s`, `3m12s`, `2h05m`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Parses `--lock-wait`: `90` (seconds), `30s`, `10m`, `1h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration; write e.g. `30s`, `10m` or `1h`");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &str, took_over: Option<&str>) -> Record {
        Record {
            token: token.into(),
            holder: Holder {
                user: "alice".into(),
                host: "laptop".into(),
                ci_run: Some("GITHUB_RUN_ID=42".into()),
                pid: 7,
            },
            operation: "up".into(),
            started: 1_000,
            lease_s: 60,
            took_over: took_over.map(str::to_string),
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = record("t1", Some("t0"));
        assert_eq!(Record::from_json(&r.to_json()), Some(r));
        assert_eq!(Record::from_json("not json"), None);
    }

    #[test]
    fn expiry_waits_out_the_margin_after_the_lease() {
        let lease = Duration::from_secs(60);
        assert!(!expired(lease, 1000.0, 1059.0));
        // Past the lease but inside the margin: still held.
        assert!(!expired(lease, 1000.0, 1065.0));
        assert!(expired(lease, 1000.0, 1071.0));
        // The holder renews well before it would stop counting on the lease.
        assert!(renew_every(lease) * 3 < lease - margin(lease));
    }

    #[test]
    fn a_run_owns_its_record_and_the_losers_of_its_takeover_race() {
        let mine = record("me", Some("dead"));
        assert!(mine.owns(&record("me", Some("dead"))));
        assert!(mine.owns(&record("loser", Some("dead"))));
        assert!(!mine.owns(&record("other", Some("someone-else"))));
        assert!(!mine.owns(&record("other", None)));
        // A fresh acquisition owns only its own token.
        let fresh = record("me", None);
        assert!(!fresh.owns(&record("other", None)));
    }

    #[test]
    fn holder_names_user_host_and_ci_run() {
        assert_eq!(
            record("t", None).holder.to_string(),
            "alice@laptop (pid 7, GITHUB_RUN_ID=42)"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(age(Duration::from_secs(192)), "3m12s");
        assert_eq!(age(Duration::from_secs(7500)), "2h05m");
    }
}
