//! What keeps one caller from steering the monitor: the server's limits, the registration rate
//! limit, the session secrets that bind a member id to whoever registered it, and logs that cap
//! caller-supplied fields and say each kind of refusal at most once a second.

use std::fmt::Write as _;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::Refusal;

/// Limits of the gRPC server. The defaults fit a fleet of thousands of agents on one monitor
/// (`iac-loadgen` shares 32 connections between 10,000 simulated agents, so a connection may
/// carry hundreds of streams).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest message tonic decodes; larger ones are refused before any handler runs.
    pub max_decoded: usize,
    /// Largest message a handler accepts (its encoded size); larger ones are refused and counted.
    pub max_message: usize,
    /// HTTP/2 streams one connection may hold open at once.
    pub streams_per_connection: u32,
    /// Requests one connection may have in flight (a heartbeat stream counts until it is open).
    pub concurrency_per_connection: usize,
    /// Deadline of a unary call, and of opening a stream.
    pub request_timeout: Duration,
    /// HTTP/2 pings on idle connections, and how long an answer may take before the connection
    /// (and its streams) is dropped.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Largest header block (the token travels there; nothing legitimate needs more).
    pub max_header_list: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decoded: 64 * 1024,
            max_message: 4 * 1024,
            streams_per_connection: 1024,
            concurrency_per_connection: 256,
            request_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_header_list: 8 * 1024,
        }
    }
}

/// Longest caller-supplied text a log line carries.
const LOGGED_FIELD: usize = 64;

/// A caller-supplied field as a log line may show it: at most 64 characters, control and
/// non-ASCII characters replaced, so a caller can neither flood nor forge log lines.
pub fn capped(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(LOGGED_FIELD)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > LOGGED_FIELD {
        out.push('…');
    }
    out
}

/// A token bucket: `rate` per second, up to `burst` at once.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> RateLimit {
        RateLimit {
            rate,
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token; false when none is left.
    pub fn allow(&self) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        let (tokens, last) = *b;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *b = (tokens - 1.0, now);
            true
        } else {
            *b = (tokens, now);
            false
        }
    }
}

/// Refusals are logged at most once a second per reason, with how many were not logged since;
/// every one is counted in the stats.
pub struct RefusalLog {
    /// Per reason: the second (since `started`) of the last line, plus one (0: never).
    last: [AtomicU64; Refusal::ALL.len()],
    suppressed: [AtomicU64; Refusal::ALL.len()],
    started: Instant,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            last: Default::default(),
            suppressed: Default::default(),
            started: Instant::now(),
        }
    }
}

impl RefusalLog {
    pub fn note(&self, why: Refusal, caller: &str) {
        let Some(i) = Refusal::ALL.iter().position(|r| *r == why) else {
            return;
        };
        let second = self.started.elapsed().as_secs() + 1;
        let last = self.last[i].load(Ordering::Relaxed);
        if last == second
            || self.last[i]
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed[i].swap(0, Ordering::Relaxed);
        tracing::warn!(
            reason = why.as_str(),
            caller = %capped(caller),
            suppressed,
            "refused an RPC"
        );
    }
}

/// A fresh session secret: 128 bits from the kernel's generator, as hex.
pub fn new_session() -> std::io::Result<String> {
    static URANDOM: OnceLock<std::io::Result<std::fs::File>> = OnceLock::new();
    let file = URANDOM
        .get_or_init(|| std::fs::File::open("/dev/urandom"))
        .as_ref()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let mut bytes = [0u8; 16];
    (&*file).read_exact(&mut bytes)?;
    let mut out = String::with_capacity(32);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_fields_are_capped_and_cleaned() {
        assert_eq!(capped("10.0.0.1"), "10.0.0.1");
        assert_eq!(capped("a\nb\u{1b}c"), "a?b?c");
        let long = "x".repeat(10_000);
        assert_eq!(capped(&long).chars().count(), LOGGED_FIELD + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_at_its_rate() {
        let r = RateLimit::new(10.0, 5.0);
        assert_eq!((0..100).filter(|_| r.allow()).count(), 5);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..100).filter(|_| r.allow()).count(), 5);
    }

    #[test]
    fn sessions_are_long_and_distinct() {
        let a = new_session().expect("urandom");
        let b = new_session().expect("urandom");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
