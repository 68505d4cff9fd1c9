//! Pieces shared by several commands.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Context;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::{Exit, UsageError};
use crate::stack::{self, Stack};

/// Loads and validates a stack file (no AWS call).
pub fn load(file: &Path) -> anyhow::Result<Stack> {
    Ok(stack::load(file)?)
}

pub fn validate(printer: &Printer, src: &StackArgs) -> anyhow::Result<Exit> {
    let s = src.load()?.stack;
    let files = src.describe();
    for w in stack::warnings::warnings(&s) {
        eprintln!("warning: {files}: {w}");
        printer.record(&serde_json::json!({"event": "warning", "message": w}));
    }
    printer.line(format!(
        "{files}: valid {} stack `{}`",
        s.spec.tier.as_str(),
        s.name()
    ));
    printer.record(&serde_json::json!({"event": "valid", "file": files, "stack": s.name(), "tier": s.spec.tier.as_str()}));
    Ok(Exit::Ok)
}

/// Asks before a destructive step: a prompt on a terminal, `--yes` anywhere else.
pub fn confirm(printer: &Printer, question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() || printer.json() {
        return Err(UsageError(format!(
            "{question}: refusing without --yes when not on a terminal"
        ))
        .into());
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{question} [y/N] ").context("writing the prompt")?;
    err.flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The final NDJSON record of a command that talked to AWS.
pub fn summary(
    printer: &Printer,
    command: &str,
    aws: &crate::aws::Aws,
    started: std::time::Instant,
) {
    let calls = aws.calls.snapshot();
    let mutating = aws.calls.mutating();
    printer.record(&serde_json::json!({
        "event": "summary",
        "command": command,
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "api_calls_total": calls.values().sum::<u64>(),
        "api_calls": calls,
        "mutating_calls": mutating,
    }));
    tracing::info!(total = calls.values().sum::<u64>(), "aws calls");
}
