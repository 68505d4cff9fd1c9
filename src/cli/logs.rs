//! `iac logs`: each instance's boot report (state, current or failed step, the log's tail on
//! failure), read from SSM where the instance published it; `--follow` polls for new steps.
//! `iac status` shows the same per-instance state.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::table::Table;
use super::{Exit, Global};
use crate::aws::boot_report::{self, BootReport, BootState};
use crate::aws::{provider, tags, Aws};
use crate::plan::{Kind, Observed};

/// How often `--follow` looks again: the scripts report at each step, which takes seconds to
/// minutes.
const FOLLOW_POLL: Duration = Duration::from_secs(3);

/// Which instances to show.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub role: Option<String>,
    pub instance: Option<String>,
    pub follow: bool,
}

/// One instance of the stack and its report, if it sent one.
#[derive(Debug, Clone, Serialize)]
pub struct BootRow {
    /// The instance's name in the stack (`web-1`, `manager-1`, the group's name...).
    pub name: String,
    pub instance_id: String,
    /// The EC2 state (`running`, `pending`, ...).
    pub ec2_state: String,
    pub report: Option<BootReport>,
}

impl BootRow {
    /// `ready`, `failed`, ... or `no report` (not booted that far, or no report channel).
    pub fn state(&self) -> &'static str {
        self.report
            .as_ref()
            .map_or("no report", |r| r.state.as_str())
    }

    fn is_final(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r.state.is_final())
    }

    fn failed(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.state == BootState::Failed)
    }

    fn matches(&self, opts: &LogsOptions) -> bool {
        let role_ok = opts.role.as_deref().is_none_or(|role| {
            self.name == role
                || self
                    .name
                    .rsplit_once('-')
                    .is_some_and(|(base, n)| base == role && n.chars().all(|c| c.is_ascii_digit()))
        });
        let instance_ok = opts
            .instance
            .as_deref()
            .is_none_or(|i| self.instance_id == i || self.name == i);
        role_ok && instance_ok
    }
}

/// The name of an instance in the stack: its logical id; for instances a group or the scaler
/// launched, their role tag or their `Name` without the stack's prefix.
fn instance_name(stack: &str, o: &Observed) -> String {
    if let Some(id) = o.tags.get(tags::ID) {
        return id.clone();
    }
    if let Some(role) = o.tags.get(tags::ROLE) {
        return role.clone();
    }
    o.tags
        .get("Name")
        .map(|n| {
            n.strip_prefix(&format!("{stack}-"))
                .unwrap_or(n)
                .to_string()
        })
        .unwrap_or_else(|| "instance".to_string())
}

/// Every live instance of the stack with its report, by name. Reports of instances that are
/// gone (replaced, scaled in) are left out.
pub async fn rows(aws: &Aws, stack: &str) -> anyhow::Result<Vec<BootRow>> {
    let instances = [Kind::Instance].into();
    let (scan, reports) = tokio::try_join!(
        provider::discover_kinds(aws, stack, &instances),
        boot_report::list(aws, stack),
    )
    .with_context(|| format!("reading the instances and boot reports of stack {stack}"))?;
    let mut by_id: BTreeMap<String, BootReport> = reports
        .into_iter()
        .map(|r| (r.instance_id.clone(), r))
        .collect();
    let mut rows: Vec<BootRow> = scan
        .resources
        .iter()
        .chain(&scan.untracked)
        .map(|o| BootRow {
            name: instance_name(stack, o),
            instance_id: o.physical_id.clone(),
            ec2_state: o.state.clone(),
            report: by_id.remove(&o.physical_id),
        })
        .collect();
    rows.sort_by(|a, b| (&a.name, &a.instance_id).cmp(&(&b.name, &b.instance_id)));
    Ok(rows)
}

/// The `-o json` record of one instance (`iac logs`, `iac status`).
pub fn record(row: &BootRow) -> serde_json::Value {
    serde_json::json!({"event": "boot", "name": row.name, "instance_id": row.instance_id, "state": row.state(), "ec2_state": row.ec2_state, "report": row.report})
}

/// One table row per instance: name, id, boot state and step.
pub fn summary_cells(row: &BootRow) -> [String; 4] {
    let detail = match &row.report {
        None => format!("(EC2: {})", row.ec2_state),
        Some(r) if r.state == BootState::Failed => format!(
            "in step {} (exit {}), at {}",
            r.step,
            r.exit.map_or_else(|| "?".to_string(), |c| c.to_string()),
            r.updated
        ),
        Some(r) if r.state == BootState::Ready => format!("since {}", r.updated),
        Some(r) => format!("{} (since {})", r.step, r.updated),
    };
    [
        row.name.clone(),
        row.instance_id.clone(),
        row.state().to_string(),
        detail,
    ]
}

/// What has been shown of each instance, so `--follow` prints only what is new.
#[derive(Default)]
struct Shown {
    steps: BTreeMap<String, (usize, Option<BootState>)>,
}

impl Shown {
    /// Prints what `row` adds to what was shown (`line`: its row of the table); `false` when
    /// nothing changed.
    fn show(&mut self, printer: &Printer, row: &BootRow, line: &str, first: bool) -> bool {
        let state = row.report.as_ref().map(|r| r.state);
        let steps = row.report.as_ref().map_or(0, |r| r.steps.len());
        let before = self.steps.insert(row.instance_id.clone(), (steps, state));
        if before == Some((steps, state)) {
            return false;
        }
        if printer.json() {
            printer.record(&record(row));
            return true;
        }
        match (&row.report, before) {
            // Follow: the steps begun since the last look, then the outcome.
            (Some(r), Some((seen, _))) if !first => {
                for s in r.steps.iter().skip(seen) {
                    printer.line(format!(
                        "{} {}: {} ({})",
                        row.name, row.instance_id, s.name, s.at
                    ));
                }
                if r.state.is_final() {
                    printer.line(line);
                }
            }
            _ => printer.line(line),
        }
        if let Some(r) = row.report.as_ref().filter(|r| r.state == BootState::Failed) {
            for l in &r.log {
                printer.line(format!("    | {l}"));
            }
        }
        true
    }
}

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    opts: LogsOptions,
) -> anyhow::Result<Exit> {
    let stack = src.load()?.stack;
    let name = stack.name().to_string();
    let aws = Aws::connect(&g.aws(), stack.spec.region.as_deref()).await;
    let mut shown = Shown::default();
    let mut first = true;
    loop {
        let rows: Vec<BootRow> = rows(&aws, &name)
            .await?
            .into_iter()
            .filter(|r| r.matches(&opts))
            .collect();
        if rows.is_empty() {
            anyhow::bail!(
                "no running instance of stack `{name}`{}{}\n  help: `iac status` lists the stack's instances",
                opts.role.as_deref().map(|r| format!(" with role `{r}`")).unwrap_or_default(),
                opts.instance.as_deref().map(|i| format!(" named `{i}`")).unwrap_or_default(),
            );
        }
        let mut table = Table::new(0).header(&["NAME", "INSTANCE", "BOOT", "STEP"]);
        for row in &rows {
            table.row(summary_cells(row));
        }
        let (header, lines) = table.lines();
        if let Some(header) = header.filter(|_| first && !printer.json()) {
            printer.line(printer.bold(&header));
        }
        for (row, line) in rows.iter().zip(&lines) {
            shown.show(printer, row, line, first);
        }
        first = false;
        // Done when not following, or when every instance's script has exited.
        if !opts.follow || rows.iter().all(BootRow::is_final) {
            return Ok(if rows.iter().any(BootRow::failed) {
                Exit::Failure
            } else {
                Exit::Ok
            });
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, id: &str) -> BootRow {
        BootRow {
            name: name.to_string(),
            instance_id: id.to_string(),
            ec2_state: "running".to_string(),
            report: None,
        }
    }

    #[test]
    fn a_role_matches_its_numbered_instances_only() {
        let opts = |role: &str| LogsOptions {
            role: Some(role.to_string()),
            ..Default::default()
        };
        assert!(row("web-1", "i-1").matches(&opts("web")));
        assert!(row("web", "i-1").matches(&opts("web")));
        assert!(!row("web-1", "i-1").matches(&opts("we")));
        assert!(!row("webx-1", "i-1").matches(&opts("web")));
        assert!(row("manager-1", "i-1").matches(&opts("manager-1")));
        let by_instance = LogsOptions {
            instance: Some("i-2".to_string()),
            ..Default::default()
        };
        assert!(!row("web-1", "i-1").matches(&by_instance));
        assert!(row("web-2", "i-2").matches(&by_instance));
    }
}
