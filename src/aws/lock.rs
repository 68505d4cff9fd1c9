//! The stack lock, held in the account as the SSM parameter `/iac/<stack>/lock`.
//!
//! Why SSM Parameter Store: every `iac` user already needs it (the stack's parameters live
//! there), it is in every account including AWS Academy ones, a standard parameter costs
//! nothing, it can be tagged with the stack, and `PutParameter` without `Overwrite` is an atomic
//! create-if-absent (`ParameterAlreadyExists` otherwise). DynamoDB's conditional writes would
//! also do, but would need a table that outlives every stack, and its own permissions.
//!
//! - **Take:** create the parameter without `Overwrite`. When it exists and its lease has
//!   expired (judged from AWS's `LastModifiedDate`, see `lease`), take it over by overwriting it
//!   and keep it only if the version AWS gave that write directly follows the expired one we
//!   read, and that expired version is still what we read (so the parameter was not deleted and
//!   recreated meanwhile). Of several runs taking over the same expired lease exactly one gets
//!   that version; the others report the winner as the holder.
//! - **Renew:** read, check the record is still ours, overwrite. The residual window between the
//!   read and the write is harmless: nobody may take the lock over while our lease runs, and the
//!   holder never renews once it has stopped counting on its lease (margins in `lease`).
//! - **Release:** read, check, delete; `down` thereby removes it last. A run that lost its lease
//!   never deletes (someone else may hold the lock by then).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_ssm::types::{ParameterType, Tag};
use tokio::sync::watch;

use super::error::{AwsError, ErrorClass, IgnoreNotFound};
use super::{ssm, tags, Aws};
use crate::apply::{Event, Reporter};
use crate::lease::{self, Record};
use crate::plan::ResourceId;

/// The parameter holding `stack`'s lock (under the stack's path, so the console shows it with
/// the stack; discovery leaves it out).
pub fn name(stack: &str) -> String {
    format!("{}lock", ssm::stack_path(stack))
}

/// The lease in effect: `IAC_LOCK_LEASE_SECS` (undocumented, for tests that must not wait
/// minutes for a killed holder's lease to run out) or the default.
pub fn lease_from_env() -> Duration {
    std::env::var("IAC_LOCK_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(lease::DEFAULT_LEASE)
}

/// Another run holds the stack (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("stack `{stack}` is locked by another run: {holder} has been running `{operation}` for {age}{}\n  help: wait for it with `--lock-wait 10m`; if that run is gone for good, break the lock with `iac unlock STACK_FILE --yes` (or `iac unlock --stack {stack} --yes`)", waited.map(|w| format!(" (waited {})", lease::age(w))).unwrap_or_default())]
pub struct LockHeld {
    pub stack: String,
    pub holder: String,
    pub operation: String,
    pub age: String,
    pub waited: Option<Duration>,
}

/// The lock parameter as read.
#[derive(Debug, Clone)]
pub struct Seen {
    /// None when the value is not a lock record (written by hand?): treated as held until it
    /// is older than the default lease.
    pub record: Option<Record>,
    pub raw: String,
    pub version: i64,
    /// AWS's timestamp of the write, Unix seconds.
    pub written: f64,
}

impl Seen {
    fn lease(&self) -> Duration {
        self.record
            .as_ref()
            .map(Record::lease)
            .unwrap_or(lease::DEFAULT_LEASE)
    }

    pub fn expired(&self) -> bool {
        lease::expired(self.lease(), self.written, now_unix())
    }

    /// Who holds it, for messages.
    pub fn holder(&self) -> String {
        match &self.record {
            Some(r) => r.holder.to_string(),
            None => format!("an unreadable lock record (version {})", self.version),
        }
    }

    pub fn operation(&self) -> String {
        self.record
            .as_ref()
            .map(|r| r.operation.clone())
            .unwrap_or_else(|| "?".to_string())
    }

    /// How long the holder has been at it.
    pub fn age(&self) -> Duration {
        let since = self
            .record
            .as_ref()
            .map(|r| r.started as f64)
            .unwrap_or(self.written);
        Duration::from_secs_f64((now_unix() - since).max(0.0))
    }

    /// When the lease ends (others may take it over once the margin has passed too).
    pub fn expires_in(&self) -> f64 {
        self.written + self.lease().as_secs_f64() - now_unix()
    }

    fn held_error(&self, stack: &str, waited: Option<Duration>) -> LockHeld {
        LockHeld {
            stack: stack.to_string(),
            holder: self.holder(),
            operation: self.operation(),
            age: lease::age(self.age()),
            waited,
        }
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The lock's current value, or None when nobody holds it.
pub async fn read(aws: &Aws, stack: &str) -> Result<Option<Seen>, AwsError> {
    read_selector(aws, &name(stack)).await
}

async fn read_selector(aws: &Aws, selector: &str) -> Result<Option<Seen>, AwsError> {
    let out = match aws.ssm.get_parameter().name(selector).send().await {
        Ok(o) => o,
        Err(e) => {
            return match AwsError::from_sdk("ssm:GetParameter", e) {
                e if e.is(ErrorClass::NotFound) => Ok(None),
                e => Err(e),
            }
        }
    };
    Ok(out.parameter().map(seen))
}

/// The lock and another parameter of the stack (`other`), in one read: who holds the lock (if
/// anyone), and whether `other` exists.
pub async fn read_beside(
    aws: &Aws,
    stack: &str,
    other: &str,
) -> Result<(Option<Seen>, bool), AwsError> {
    let lock = name(stack);
    let out = aws
        .ssm
        .get_parameters()
        .names(&lock)
        .names(other)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ssm:GetParameters", e))?;
    let named = |n: &str| out.parameters().iter().find(|p| p.name() == Some(n));
    Ok((named(&lock).map(seen), named(other).is_some()))
}

fn seen(p: &aws_sdk_ssm::types::Parameter) -> Seen {
    let raw = p.value().unwrap_or_default().to_string();
    Seen {
        record: Record::from_json(&raw),
        raw,
        version: p.version(),
        written: p
            .last_modified_date()
            .map(|d| d.as_secs_f64())
            .unwrap_or_else(now_unix),
    }
}

/// Creates the parameter if absent; false when it exists.
async fn create(aws: &Aws, stack: &str, record: &Record) -> Result<bool, AwsError> {
    let mut t = tags::stack_tags(stack, "lock", &BTreeMap::new());
    t.insert(tags::ID.to_string(), "lock".to_string());
    let tag_list = t
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            AwsError::state("ssm:PutParameter", ErrorClass::InvalidInput, e.to_string())
        })?;
    aws.calls.bookkeeping("ssm:PutParameter");
    let res = aws
        .ssm
        .put_parameter()
        .name(name(stack))
        .value(record.to_json())
        .r#type(ParameterType::String)
        .description("iac stack lock: who runs `up`/`down` on this stack")
        .set_tags(Some(tag_list))
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) => match AwsError::from_sdk("ssm:PutParameter", e) {
            e if e.is(ErrorClass::AlreadyExists) => Ok(false),
            e => Err(e),
        },
    }
}

/// Overwrites the parameter; returns the version AWS gave this write.
async fn overwrite(aws: &Aws, stack: &str, record: &Record) -> Result<i64, AwsError> {
    aws.calls.bookkeeping("ssm:PutParameter");
    aws.ssm
        .put_parameter()
        .name(name(stack))
        .value(record.to_json())
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map(|o| o.version())
        .map_err(|e| AwsError::from_sdk("ssm:PutParameter", e))
}

/// Deletes the lock whoever holds it (`iac unlock`).
pub async fn delete(aws: &Aws, stack: &str) -> Result<(), AwsError> {
    aws.calls.bookkeeping("ssm:DeleteParameter");
    ssm::delete(aws, &name(stack))
        .await
        .ignore_not_found()
        .map(|_| ())
}

/// What one attempt to take the lock found.
enum Attempt {
    /// Ours: the record written and the moment before the write (the lease counts from there).
    Taken {
        record: Record,
        sent: Instant,
        took_over: Option<Seen>,
    },
    Held(Seen),
    /// The parameter changed under us (deleted between two reads): try again at once.
    Again,
}

async fn attempt(
    aws: &Aws,
    stack: &str,
    operation: &str,
    lease: Duration,
) -> Result<Attempt, AwsError> {
    let token = ssm::generate_password()?;
    let mut record = Record::new(operation, lease, token, now_unix() as u64);
    let sent = Instant::now();
    if create(aws, stack, &record).await? {
        return Ok(Attempt::Taken {
            record,
            sent,
            took_over: None,
        });
    }
    let Some(seen) = read(aws, stack).await? else {
        return Ok(Attempt::Again);
    };
    if !seen.expired() {
        return Ok(Attempt::Held(seen));
    }
    record.took_over = Some(match &seen.record {
        Some(r) => r.token.clone(),
        None => format!("unreadable-v{}", seen.version),
    });
    let sent = Instant::now();
    let version = overwrite(aws, stack, &record).await?;
    let previous = read_selector(aws, &format!("{}:{}", name(stack), seen.version)).await?;
    if version == seen.version + 1 && previous.is_some_and(|p| p.raw == seen.raw) {
        return Ok(Attempt::Taken {
            record,
            sent,
            took_over: Some(seen),
        });
    }
    // Another run's take-over came first: it wrote the version right after the expired one.
    let winner = read_selector(aws, &format!("{}:{}", name(stack), seen.version + 1)).await?;
    Ok(match winner {
        Some(w) => Attempt::Held(w),
        None => Attempt::Again,
    })
}

/// A held lock, renewed in the background until released.
pub struct Lock {
    aws: Aws,
    stack: String,
    record: Record,
    /// Until when this run may count on the lease (updated by each renewal).
    valid_until: watch::Receiver<Instant>,
    /// Set (with the reason) when the lock was lost: broken by `iac unlock`, or taken over
    /// after renewals failed for a whole lease.
    lost: watch::Receiver<Option<String>>,
    renewer: tokio::task::JoinHandle<()>,
}

/// Takes `stack`'s lock for `operation`, waiting up to `wait` (with a progress event every poll)
/// while another run holds it.
pub async fn acquire(
    aws: &Aws,
    stack: &str,
    operation: &str,
    wait: Duration,
    reporter: &dyn Reporter,
) -> anyhow::Result<Lock> {
    let lease = lease_from_env();
    let started = Instant::now();
    let poll = lease::renew_every(lease).clamp(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        match attempt(aws, stack, operation, lease).await? {
            Attempt::Taken {
                record,
                sent,
                took_over,
            } => {
                if let Some(old) = took_over {
                    reporter.event(&Event::Warning {
                        message: format!(
                            "took over the lock of stack `{stack}` from {} (`{}`, started {} ago): its lease expired {} ago without renewal; that run was killed or lost its connection",
                            old.holder(),
                            old.operation(),
                            lease::age(old.age()),
                            lease::age(Duration::from_secs_f64((-old.expires_in()).max(0.0))),
                        ),
                    });
                }
                return Ok(Lock::hold(
                    aws.clone(),
                    stack,
                    record,
                    sent + lease - lease::margin(lease),
                ));
            }
            Attempt::Held(seen) => {
                let waited = started.elapsed();
                if waited >= wait {
                    let waited = (!wait.is_zero()).then_some(waited);
                    return Err(seen.held_error(stack, waited).into());
                }
                reporter.event(&Event::Waiting {
                    id: ResourceId::new("lock"),
                    what: format!("the lock of stack `{stack}`"),
                    status: format!(
                        "held by {} running `{}` for {}",
                        seen.holder(),
                        seen.operation(),
                        lease::age(seen.age())
                    ),
                    elapsed_s: waited.as_secs(),
                    deadline_s: wait.as_secs(),
                });
                tokio::time::sleep(poll.min(wait - waited)).await;
            }
            Attempt::Again => {}
        }
    }
}

impl Lock {
    fn hold(aws: Aws, stack: &str, record: Record, valid_until: Instant) -> Lock {
        let (until_tx, until_rx) = watch::channel(valid_until);
        let (lost_tx, lost_rx) = watch::channel(None);
        let renewer = tokio::spawn(renew_loop(
            aws.clone(),
            stack.to_string(),
            record.clone(),
            until_tx,
            lost_tx,
        ));
        Lock {
            aws,
            stack: stack.to_string(),
            record,
            valid_until: until_rx,
            lost: lost_rx,
            renewer,
        }
    }

    /// Resolves with the reason once the lock is lost; never otherwise.
    pub async fn lost(&self) -> String {
        let mut rx = self.lost.clone();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                // The renewer ended without losing the lock: wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops renewing and deletes the lock, if it is still ours and its lease still runs.
    /// Returns a warning when it could not.
    pub async fn release(self) -> Option<String> {
        self.renewer.abort();
        let _ = self.renewer.await;
        if let Some(why) = self.lost.borrow().clone() {
            return Some(format!("the lock was not released: {why}"));
        }
        if Instant::now() >= *self.valid_until.borrow() {
            return Some(format!(
                "the lock of stack `{}` was not released: its lease ran out before it could be renewed; it expires by itself",
                self.stack
            ));
        }
        match read(&self.aws, &self.stack).await {
            Ok(Some(seen)) if seen.record.as_ref().is_some_and(|r| self.record.owns(r)) => {
                match delete(&self.aws, &self.stack).await {
                    Ok(()) => None,
                    Err(e) => Some(format!("releasing the lock: {e}")),
                }
            }
            Ok(Some(seen)) => Some(format!(
                "the lock of stack `{}` is now held by {}; left as it is",
                self.stack,
                seen.holder()
            )),
            Ok(None) => None,
            Err(e) => Some(format!("releasing the lock: {e}")),
        }
    }
}

async fn renew_loop(
    aws: Aws,
    stack: String,
    record: Record,
    until: watch::Sender<Instant>,
    lost: watch::Sender<Option<String>>,
) {
    let lease = record.lease();
    let every = lease::renew_every(lease);
    loop {
        tokio::time::sleep(every).await;
        if Instant::now() >= *until.borrow() {
            let _ = lost.send(Some(format!(
                "its lease ({}s) ran out: renewals failed for too long",
                lease.as_secs()
            )));
            return;
        }
        match read(&aws, &stack).await {
            Ok(None) => {
                let _ = lost.send(Some(
                    "it was removed by someone else (`iac unlock`?)".to_string(),
                ));
                return;
            }
            Ok(Some(seen)) if !seen.record.as_ref().is_some_and(|r| record.owns(r)) => {
                let _ = lost.send(Some(format!("it was taken over by {}", seen.holder())));
                return;
            }
            Ok(Some(_)) => {
                // Re-check: the read may have taken long (retries).
                if Instant::now() >= *until.borrow() {
                    continue;
                }
                let sent = Instant::now();
                match overwrite(&aws, &stack, &record).await {
                    Ok(_) => {
                        let _ = until.send(sent + lease - lease::margin(lease));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the stack lock failed; retrying")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the stack lock failed; retrying"),
        }
    }
}
