//! Waiting with a deadline and adaptive polling.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::events::{Event, Reporter};
use crate::plan::ResourceId;

/// The outcome of one poll.
pub enum Poll<T> {
    Ready(T),
    /// Not yet; the string says what the resource is doing.
    Pending(String),
}

/// A wait that ran out of time, or whose poll failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    #[error("timed out after {waited:?} waiting for {what} (last status: {status})")]
    Timeout {
        what: String,
        waited: Duration,
        status: String,
    },
    #[error(transparent)]
    Poll(E),
}

/// Polling cadence: the pause before the next poll is a `fraction` of the time waited so far,
/// never under `first` nor over `max`, with ±20 % jitter so that many waits do not poll in step.
/// A resource that becomes ready after T is so seen within about `fraction` × T (plus the
/// jitter) instead of up to a whole ceiling late: quick polls for quick resources, few polls for
/// slow ones.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub fraction: f64,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            fraction: 0.25,
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The pause after having waited `waited`; `jitter` is in [0, 1).
    fn pause(&self, waited: Duration, jitter: f64) -> Duration {
        let base = (waited.as_secs_f64() * self.fraction)
            .clamp(self.first.as_secs_f64(), self.max.as_secs_f64());
        Duration::from_secs_f64(base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
    }
}

/// A number in [0, 1) that differs from call to call: enough to spread polls (not for secrets).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    f64::from(nanos % 1000) / 1000.0
}

/// Polls until ready or `deadline` has passed, reporting progress as `Waiting` events.
pub async fn until<T, E, F, Fut>(
    id: &ResourceId,
    what: &str,
    deadline: Duration,
    backoff: Backoff,
    reporter: &dyn Reporter,
    mut poll: F,
) -> Result<T, WaitError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, E>>,
{
    let start = Instant::now();
    loop {
        let status = match poll().await.map_err(WaitError::Poll)? {
            Poll::Ready(v) => return Ok(v),
            Poll::Pending(s) => s,
        };
        let waited = start.elapsed();
        if waited >= deadline {
            return Err(WaitError::Timeout {
                what: what.to_string(),
                waited,
                status,
            });
        }
        reporter.event(&Event::Waiting {
            id: id.clone(),
            what: what.to_string(),
            status,
            elapsed_s: waited.as_secs(),
            deadline_s: deadline.as_secs(),
        });
        let remaining = deadline.saturating_sub(waited);
        let pause = backoff.pause(waited, jitter());
        tokio::time::sleep(pause.min(remaining).max(Duration::from_millis(10))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::events::Recorder;

    #[tokio::test(start_paused = true)]
    async fn times_out_at_the_deadline_and_backs_off() {
        let rec = Recorder::default();
        let id = ResourceId::new("x");
        let mut polls = 0;
        let res: Result<(), WaitError<()>> = until(
            &id,
            "thing",
            Duration::from_secs(30),
            Backoff::default(),
            &rec,
            || {
                polls += 1;
                async { Ok(Poll::Pending("pending".to_string())) }
            },
        )
        .await;
        assert!(matches!(res, Err(WaitError::Timeout { .. })));
        // 1 s pauses for the first 4 s, then a quarter of the time waited: 1, 1, 1, 1, 1, 1.25,
        // 1.6, 1.9, 2.4, 3, 3.8, 4.7, 5.9 → 30 s in about 13 polls (±20 % jitter), not 30.
        assert!((10..=17).contains(&polls), "polls = {polls}");
    }

    #[test]
    fn pauses_are_a_quarter_of_the_wait_between_the_bounds() {
        let b = Backoff::default();
        let s = Duration::from_secs_f64;
        assert_eq!(b.pause(s(0.0), 0.5), s(1.0));
        assert_eq!(b.pause(s(20.0), 0.5), s(5.0));
        assert_eq!(b.pause(s(600.0), 0.5), s(10.0));
        assert_eq!(b.pause(s(20.0), 0.0), s(4.0));
        assert!(b.pause(s(20.0), 0.999) < s(6.0));
    }

    /// A resource that is ready after T is seen within about a quarter of T (plus the jitter),
    /// not up to a whole 10 s ceiling late as with multiplicative backoff.
    #[tokio::test(start_paused = true)]
    async fn a_resource_is_seen_ready_soon_after_it_is() {
        for ready_after in [3u64, 6, 10, 30, 120] {
            let start = Instant::now();
            let ready_at = Duration::from_secs(ready_after);
            let seen: Result<Duration, WaitError<()>> = until(
                &ResourceId::new("x"),
                "thing",
                Duration::from_secs(900),
                Backoff::default(),
                &crate::apply::events::Silent,
                || async move {
                    let now = start.elapsed();
                    Ok(if now >= ready_at {
                        Poll::Ready(now)
                    } else {
                        Poll::Pending("no".into())
                    })
                },
            )
            .await;
            let late = seen.expect("ready") - ready_at;
            let bound = (ready_at.as_secs_f64() * 0.25 * 1.2).clamp(1.2, 12.0);
            assert!(
                late.as_secs_f64() <= bound,
                "ready after {ready_after} s, seen {late:?} late"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn returns_when_ready() {
        let id = ResourceId::new("x");
        let mut n = 0;
        let v: Result<u32, WaitError<()>> = until(
            &id,
            "thing",
            Duration::from_secs(60),
            Backoff::default(),
            &crate::apply::events::Silent,
            || {
                n += 1;
                let ready = n >= 3;
                async move {
                    Ok(if ready {
                        Poll::Ready(7)
                    } else {
                        Poll::Pending("no".into())
                    })
                }
            },
        )
        .await;
        assert_eq!(v.ok(), Some(7));
    }
}
