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

/// Polling cadence: quick at first, backing off to a ceiling.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            factor: 1.5,
            max: Duration::from_secs(10),
        }
    }
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
    let mut delay = backoff.first;
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
        tokio::time::sleep(delay.min(remaining).max(Duration::from_millis(10))).await;
        delay = Duration::from_secs_f64(
            (delay.as_secs_f64() * backoff.factor).min(backoff.max.as_secs_f64()),
        );
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
        // 1 + 1.5 + 2.25 + 3.4 + 5.1 + 7.6 + 10 = 30.8 s: about 7 polls, not 30.
        assert!((6..=9).contains(&polls), "polls = {polls}");
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
