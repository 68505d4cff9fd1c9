//! Everything the user sees: progress bars on a terminal, plain lines otherwise (or with
//! `CI=true`), NDJSON with `--output json`. indicatif lives only here.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use super::table::Table;
use super::UsageError;
use crate::apply::events::{Event, Reporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// GitHub-flavoured Markdown on stdout (for a CI job summary; `plan` writes tables),
    /// progress as plain lines on stderr.
    Markdown,
}

/// How to talk to the user for this run.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    /// Progress bars (a terminal on stderr, not CI).
    pub fancy: bool,
    pub color: bool,
}

impl Printer {
    pub fn new(format: Format) -> Printer {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        let tty = std::io::stderr().is_terminal();
        Printer {
            format,
            fancy: format == Format::Text && tty && !ci,
            color: tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// A line for people (stdout in text mode; nothing in JSON mode).
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.json() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", s.as_ref());
        }
    }

    /// One NDJSON object (JSON mode only).
    pub fn record<T: Serialize>(&self, value: &T) {
        if self.json() {
            if let Ok(s) = serde_json::to_string(value) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{s}");
            }
        }
    }

    pub fn bold(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// A table: its header in bold, then its rows (nothing in JSON mode).
    pub fn table(&self, table: &Table) {
        let (header, rows) = table.lines();
        if let Some(h) = header {
            self.line(self.bold(&h));
        }
        for r in rows {
            self.line(r);
        }
    }

    pub fn reporter(&self) -> Box<dyn Reporter> {
        match (self.format, self.fancy) {
            (Format::Json, _) => Box::new(JsonReporter),
            (Format::Text, true) => Box::new(BarReporter::default()),
            (Format::Text, false) | (Format::Markdown, _) => Box::new(PlainReporter),
        }
    }

    /// Prints key/value outputs.
    pub fn outputs(&self, outputs: &BTreeMap<String, String>) {
        if self.json() {
            self.record(&serde_json::json!({ "event": "outputs", "outputs": outputs }));
        } else if !outputs.is_empty() {
            self.line(self.bold("Outputs:"));
            let mut t = Table::new(2);
            for (k, v) in outputs {
                t.row([k.as_str(), v.as_str()]);
            }
            self.table(&t);
        }
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Started { id, kind, action } => format!("{id} ({kind}): {action} started"),
        Event::Waiting {
            id,
            what,
            status,
            elapsed_s,
            deadline_s,
        } => {
            format!(
                "{id}: waiting for {what}: {status} ({}s / {}s)",
                elapsed_s, deadline_s
            )
        }
        Event::Done {
            id,
            action,
            physical_id,
            elapsed_ms,
            ..
        } => format!(
            "{id}: {action} done{} ({:.1}s)",
            physical_id
                .as_deref()
                // A deletion's id already names what it deleted: `web-sg (sg-…)`.
                .filter(|p| !id.as_str().ends_with(&format!("({p})")))
                .map(|p| format!(": {p}"))
                .unwrap_or_default(),
            *elapsed_ms as f64 / 1000.0
        ),
        Event::Failed {
            id, action, error, ..
        } => format!("{id}: {action} FAILED: {error}"),
        Event::Skipped { id, because, .. } => format!("{id}: skipped because {because} failed"),
        Event::Info { message } => message.clone(),
        Event::Warning { message } => format!("warning: {message}"),
    }
}

/// Plain lines on stderr, for logs and CI.
pub struct PlainReporter;

impl Reporter for PlainReporter {
    fn event(&self, event: &Event) {
        eprintln!("{}", describe(event));
    }
}

/// NDJSON on stdout.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn event(&self, event: &Event) {
        if let Ok(s) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
        }
    }
}

/// A spinner per resource on a terminal.
#[derive(Default)]
pub struct BarReporter {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Reporter for BarReporter {
    fn event(&self, event: &Event) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let key = match event {
            Event::Started { id, .. }
            | Event::Waiting { id, .. }
            | Event::Done { id, .. }
            | Event::Failed { id, .. }
            | Event::Skipped { id, .. } => id.to_string(),
            Event::Info { .. } | Event::Warning { .. } => {
                let _ = self.multi.println(describe(event));
                return;
            }
        };
        let bar = bars.entry(key).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        match event {
            Event::Done { .. } | Event::Failed { .. } | Event::Skipped { .. } => {
                bar.finish_with_message(describe(event))
            }
            _ => bar.set_message(describe(event)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Kind, ResourceId};

    fn done(id: &str, physical_id: &str) -> String {
        describe(&Event::Done {
            id: ResourceId::new(id),
            kind: Kind::SecurityGroup,
            action: "delete".to_string(),
            physical_id: Some(physical_id.to_string()),
            elapsed_ms: 1200,
        })
    }

    #[test]
    fn a_done_line_names_the_aws_id_once() {
        assert_eq!(done("web-sg", "sg-1"), "web-sg: delete done: sg-1 (1.2s)");
        assert_eq!(
            done("web-sg (sg-1)", "sg-1"),
            "web-sg (sg-1): delete done (1.2s)"
        );
        assert_eq!(
            done("web-sg#old (sg-1)", "sg-1"),
            "web-sg#old (sg-1): delete done (1.2s)"
        );
        assert_eq!(
            done("web-sg (sg-1)", "sg-2"),
            "web-sg (sg-1): delete done: sg-2 (1.2s)"
        );
    }
}
