//! Running `up` and `down` under the stack lock: taken before discovery, renewed while the
//! command works, and released on every way out: success, failure, Ctrl-C, SIGTERM (a
//! cancelled CI job). A lost lock stops the command.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::apply::{Event, Reporter};
use crate::aws::{lock, Aws};

/// The command was stopped by a signal (exit code 130 for SIGINT, 143 for SIGTERM, as shells
/// report them).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}: stopped; the stack lock is released, and what was created is tagged, so the next `iac up` adopts it (or `iac down` removes it)")]
pub struct Interrupted {
    pub signal: &'static str,
    pub code: u8,
}

/// Runs `work` holding `stack`'s lock for `operation`.
pub async fn run<T>(
    aws: &Aws,
    stack: &str,
    operation: &str,
    wait: Duration,
    reporter: &Arc<dyn Reporter>,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    // Installed before anything else: from here on these signals no longer kill the process
    // outright, they end up in the branches below.
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let interrupted = |signal, code| -> anyhow::Error { Interrupted { signal, code }.into() };
    let lock = tokio::select! {
        l = lock::acquire(aws, stack, operation, wait, reporter.as_ref()) => l?,
        _ = int.recv() => return Err(interrupted("SIGINT", 130)),
        _ = term.recv() => return Err(interrupted("SIGTERM", 143)),
    };
    let result = tokio::select! {
        r = work => r,
        why = lock.lost() => Err(anyhow::anyhow!("stopped: lost the lock of stack `{stack}`: {why}")),
        _ = int.recv() => Err(interrupted("SIGINT", 130)),
        _ = term.recv() => Err(interrupted("SIGTERM", 143)),
    };
    if let Some(message) = lock.release().await {
        reporter.event(&Event::Warning { message });
    }
    result
}
