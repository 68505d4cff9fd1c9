//! Counts every AWS request (each HTTP attempt, retries included) by operation, for `--output json` summaries, tests ("a second `up`
//! makes no mutating call") and the benchmark.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::ConfigBag;

/// Calls made so far, keyed `service:Operation`.
#[derive(Debug, Default)]
pub struct CallLog {
    counts: Mutex<BTreeMap<String, u64>>,
    /// Calls made for the run's own bookkeeping (the stack lock), not to change the stack:
    /// left out of [`CallLog::mutating`], so "a second `up` makes no mutating call" stays true.
    bookkeeping: Mutex<BTreeMap<String, u64>>,
}

/// Operation name prefixes that change something.
const MUTATING: &[&str] = &[
    "Create",
    "Run",
    "Allocate",
    "Associate",
    "Authorize",
    "Revoke",
    "Import",
    "Delete",
    "Terminate",
    "Release",
    "Change",
    "Put",
    "Modify",
    "Disassociate",
    "Start",
    "Stop",
    "Update",
    "Register",
    "Deregister",
    "Attach",
    "Detach",
    "Tag",
    "Untag",
    "Reboot",
];

pub fn is_mutating(operation: &str) -> bool {
    let op = operation.rsplit(':').next().unwrap_or(operation);
    MUTATING.iter().any(|p| op.starts_with(p))
}

impl CallLog {
    fn record(&self, key: String) {
        if let Ok(mut m) = self.counts.lock() {
            *m.entry(key).or_insert(0) += 1;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Marks one call of `operation` as bookkeeping (the lock's own writes).
    pub fn bookkeeping(&self, operation: &str) {
        if let Ok(mut m) = self.bookkeeping.lock() {
            *m.entry(operation.to_string()).or_insert(0) += 1;
        }
    }

    /// Mutating calls made to change the stack (bookkeeping calls left out).
    pub fn mutating(&self) -> BTreeMap<String, u64> {
        let own = self
            .bookkeeping
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        self.snapshot()
            .into_iter()
            .filter(|(k, _)| is_mutating(k))
            .map(|(k, n)| {
                let n = n.saturating_sub(own.get(&k).copied().unwrap_or(0));
                (k, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The SDK interceptor feeding a [`CallLog`].
#[derive(Debug, Clone)]
pub struct Counter(pub Arc<CallLog>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "iac-call-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            let service = meta.service().to_ascii_lowercase().replace(' ', "");
            tracing::debug!(service = %service, operation = meta.name(), "aws call");
            self.0.record(format!("{service}:{}", meta.name()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_operations() {
        assert!(is_mutating("ec2:RunInstances"));
        assert!(is_mutating("route53:ChangeResourceRecordSets"));
        assert!(!is_mutating("ec2:DescribeInstances"));
        assert!(!is_mutating("ssm:GetParameter"));
    }
}
