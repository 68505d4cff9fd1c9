//! Polls of many resources of one kind answered by one describe call: a read made for one
//! waiter answers the others waiting at the same time (a swarm's instances, a file system's
//! mount targets), so a round of polls costs one call however many resources are waited on.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::aws::error::AwsError;

/// How old a read may be and still answer another waiter's poll: less than the shortest pause
/// between two polls of one waiter (`Backoff`: 0.8 s), so no waiter is given the same read twice.
const SHARED_READ: Duration = Duration::from_millis(500);

/// The last read of one kind's resources (value by physical id) and the ids waited on.
pub(super) struct SharedPolls<V> {
    waiting: Mutex<BTreeSet<String>>,
    last: tokio::sync::Mutex<Option<(Instant, BTreeMap<String, V>)>>,
}

impl<V> Default for SharedPolls<V> {
    fn default() -> Self {
        SharedPolls {
            waiting: Mutex::default(),
            last: tokio::sync::Mutex::default(),
        }
    }
}

impl<V: Clone> SharedPolls<V> {
    /// `id` is waited on until the guard is dropped.
    pub(super) fn waiting(&self, id: &str) -> Waiting<'_, V> {
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id.to_string());
        }
        Waiting {
            polls: self,
            id: id.to_string(),
        }
    }

    /// `id`'s value (`None`: not listed), from a read made for another waiter in the last
    /// [`SHARED_READ`], or from a new `read` given every id waited on.
    pub(super) async fn get<F, Fut>(&self, id: &str, read: F) -> Result<Option<V>, AwsError>
    where
        F: FnOnce(BTreeSet<String>) -> Fut,
        Fut: Future<Output = Result<BTreeMap<String, V>, AwsError>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, values)) = last.as_ref() {
            if at.elapsed() < SHARED_READ {
                if let Some(v) = values.get(id) {
                    return Ok(Some(v.clone()));
                }
            }
        }
        let mut ids = self.waiting.lock().map(|w| w.clone()).unwrap_or_default();
        ids.insert(id.to_string());
        let values = read(ids).await?;
        let answer = values.get(id).cloned();
        *last = Some((Instant::now(), values));
        Ok(answer)
    }
}

/// Removes its id from those waited on when dropped.
pub(super) struct Waiting<'a, V> {
    polls: &'a SharedPolls<V>,
    id: String,
}

impl<V> Drop for Waiting<'_, V> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.polls.waiting.lock() {
            w.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_read_answers_every_waiter_and_a_missing_id_reads_again() {
        let polls: SharedPolls<String> = SharedPolls::default();
        let reads = AtomicUsize::new(0);
        let read = |ids: BTreeSet<String>| {
            reads.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(ids
                    .into_iter()
                    .filter(|i| i != "gone")
                    .map(|i| (i.clone(), format!("{i}-state")))
                    .collect())
            }
        };
        let (_a, _b) = (polls.waiting("a"), polls.waiting("b"));
        assert_eq!(
            polls.get("a", read).await.ok().flatten().as_deref(),
            Some("a-state")
        );
        // `b` was waited on when `a` read: its value comes from that read.
        assert_eq!(
            polls.get("b", read).await.ok().flatten().as_deref(),
            Some("b-state")
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Not in the last read: read again (and not listed then either).
        assert_eq!(polls.get("gone", read).await.ok().flatten(), None);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dropped_waiter_is_no_longer_read() {
        let polls: SharedPolls<()> = SharedPolls::default();
        drop(polls.waiting("a"));
        let _b = polls.waiting("b");
        let asked = std::sync::Mutex::new(BTreeSet::new());
        let read = |ids: BTreeSet<String>| {
            if let Ok(mut a) = asked.lock() {
                a.extend(ids.clone());
            }
            async move { Ok(ids.into_iter().map(|i| (i, ())).collect()) }
        };
        let _ = polls.get("b", read).await;
        let asked = asked.lock().map(|a| a.clone()).unwrap_or_default();
        assert_eq!(asked, BTreeSet::from(["b".to_string()]));
    }
}
