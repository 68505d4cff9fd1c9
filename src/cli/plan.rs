//! `iac plan`: discover, diff, print. Also the first half of `up`.

use std::sync::Arc;

use anyhow::Context;

use super::common;
use super::output::{Format, Printer};
use super::stack_args::StackArgs;
use super::{Exit, Global};
use crate::apply::Reporter;
use crate::aws::provider;
use crate::aws::Aws;
use crate::cost;
use crate::plan::{self, Action, Plan};
use crate::stack::{Loaded, Provenance, Stack};
use crate::tiers;

/// A computed plan and what it took to compute it.
pub struct Planned {
    pub stack: Stack,
    /// Values that came from the environment, `--set` or an overlay, and from where.
    pub provenance: Vec<Provenance>,
    pub aws: Aws,
    pub plan: Plan,
}

/// Validates the file (before any AWS call), then looks up inputs, discovers and diffs.
/// `refresh_image` (`--refresh-image`) moves an image alias to its newest image even when the
/// stack keeps the one it runs (`instance.image_policy: pinned`).
pub async fn compute(
    g: &Global,
    src: &StackArgs,
    reporter: Arc<dyn Reporter>,
    refresh_image: bool,
) -> anyhow::Result<Planned> {
    let (loaded, aws) = connect(g, src, reporter.as_ref()).await?;
    compute_with(loaded, aws, reporter, refresh_image).await
}

/// Validates the files and sets up the clients (no request yet): what `up` does before it
/// takes the stack lock.
pub async fn connect(
    g: &Global,
    src: &StackArgs,
    reporter: &dyn Reporter,
) -> anyhow::Result<(Loaded, Aws)> {
    let loaded = src.load()?;
    let stack = &loaded.stack;
    for message in crate::stack::warnings::warnings(stack) {
        reporter.event(&crate::apply::Event::Warning { message });
    }
    if let Some(why) = tiers::custom_scaler::not_deployable(stack) {
        return Err(super::UsageError(why).into());
    }
    let aws = Aws::connect(&g.aws(), stack.spec.region.as_deref()).await;
    Ok((loaded, aws))
}

/// Looks up inputs, discovers and diffs.
pub async fn compute_with(
    loaded: Loaded,
    aws: Aws,
    reporter: Arc<dyn Reporter>,
    refresh_image: bool,
) -> anyhow::Result<Planned> {
    let Loaded { stack, provenance } = loaded;
    let mut inputs = provider::resolve_inputs(&aws, &stack, reporter.as_ref())
        .await
        .with_context(|| {
            format!(
                "looking up the account's VPC, image and zone for stack `{}`",
                stack.name()
            )
        })?;
    let discovered = provider::discover(&aws, stack.name())
        .await
        .with_context(|| {
            format!(
                "discovering the resources tagged iac:stack={}",
                stack.name()
            )
        })?;
    provider::pin_image(
        &aws,
        &stack,
        &mut inputs,
        &discovered,
        refresh_image,
        reporter.as_ref(),
    )
    .await
    .with_context(|| format!("looking up the image stack `{}` runs", stack.name()))?;
    let desired = tiers::desired(&stack, &inputs)?;
    let plan = plan::diff(stack.name(), &desired, &discovered.resources);
    Ok(Planned {
        stack,
        provenance,
        aws,
        plan,
    })
}

/// Prints a plan for people, or as one JSON record.
pub fn print(printer: &Printer, plan: &Plan) {
    if printer.json() {
        printer.record(&serde_json::json!({"event": "plan", "stack": plan.stack, "changes": plan.changes, "data_loss": plan.data_loss, "summary": plan.summary()}));
        return;
    }
    printer.line(printer.bold(&format!("Plan for stack `{}`:", plan.stack)));
    // Parameters the instances write themselves are not shown until they exist.
    for c in plan
        .changes
        .iter()
        .filter(|c| c.action.is_change() || c.actual.is_some())
    {
        let physical = c
            .actual
            .as_ref()
            .map(|a| format!(" ({})", a.physical_id))
            .unwrap_or_default();
        printer.line(format!(
            "  {:>3} {:<15} {}{}",
            c.action.symbol(),
            c.kind.as_str(),
            c.id,
            physical
        ));
        match &c.action {
            Action::Update { reasons } | Action::Replace { reasons } => {
                for r in reasons {
                    printer.line(format!("          {r}"));
                }
            }
            Action::Delete { reason } => printer.line(format!("          {reason}")),
            _ => {}
        }
    }
    for loss in &plan.data_loss {
        printer.line(format!("  data loss: {loss}"));
    }
    printer.line(format!("{}.", plan.summary()));
}

/// Values that did not come as written from the first stack file, and where they came from.
pub fn print_values(printer: &Printer, values: &[Provenance]) {
    if values.is_empty() {
        return;
    }
    if printer.json() {
        printer.record(&serde_json::json!({"event": "values", "values": values}));
        return;
    }
    printer.line(printer.bold("Values from outside the stack file:"));
    let width = values.iter().map(|v| v.path.len()).max().unwrap_or(0);
    for v in values {
        printer.line(format!("  {:width$} = {}  <- {}", v.path, v.value, v.from));
    }
}

/// The estimated monthly cost of `items` in `region`, as lines and a total (or a JSON record).
pub fn print_cost(printer: &Printer, region: &str, items: &[cost::Item]) {
    let table = match cost::PriceTable::shipped() {
        Ok(t) => t,
        Err(e) => {
            printer.line(format!(
                "Estimated cost: unavailable (the price table does not parse: {e})"
            ));
            return;
        }
    };
    let e = cost::estimate(&table, region, items);
    if printer.json() {
        printer.record(&serde_json::json!({"event": "cost", "estimate": e}));
        return;
    }
    if e.lines.is_empty() {
        return;
    }
    printer.line(printer.bold(&format!(
        "Estimated monthly cost (on-demand, {}, prices as of {}):",
        e.region, e.as_of
    )));
    let width = e.lines.iter().map(|l| l.id.len()).max().unwrap_or(0).max(5);
    for l in &e.lines {
        let plus = l
            .plus
            .as_deref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default();
        printer.line(format!(
            "  {:width$}  {:<28} {:>10}{plus}",
            l.id,
            l.what,
            cost::dollars(l.monthly_cents)
        ));
    }
    let unknown = match e.unknown {
        0 => String::new(),
        n => format!(" (+ {n} unknown)"),
    };
    printer.line(format!(
        "  {:width$}  {:<28} {:>10}{unknown}",
        "Total",
        "",
        cost::dollars(Some(e.total_cents))
    ));
}

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    detailed: bool,
    refresh_image: bool,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let planned = compute(g, src, reporter, refresh_image).await?;
    let desired: Vec<_> = planned
        .plan
        .changes
        .iter()
        .filter_map(|c| c.desired.clone())
        .collect();
    let items = cost::items_from_resources(&desired);
    if printer.format == Format::Markdown {
        let estimate = cost::PriceTable::shipped()
            .ok()
            .map(|t| cost::estimate(&t, &planned.aws.region, &items));
        printer.line(markdown(
            &planned.plan,
            &planned.provenance,
            estimate.as_ref(),
        ));
    } else {
        print_values(printer, &planned.provenance);
        print(printer, &planned.plan);
        print_cost(printer, &planned.aws.region, &items);
    }
    common::summary(printer, "plan", &planned.aws, started);
    Ok(if detailed && planned.plan.summary().has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}

/// The plan as GitHub-flavoured Markdown: changes, values from outside the file, the cost.
pub fn markdown(plan: &Plan, values: &[Provenance], estimate: Option<&cost::Estimate>) -> String {
    // A `|` inside a cell would end it.
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut md = format!("### Plan for stack `{}`\n\n", plan.stack);
    let shown: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| c.action.is_change() || c.actual.is_some())
        .collect();
    if shown.is_empty() {
        md.push_str("No resources.\n");
    } else {
        md.push_str("| action | kind | id | AWS id | why |\n|---|---|---|---|---|\n");
        for c in shown {
            let why = match &c.action {
                Action::Update { reasons } | Action::Replace { reasons } => reasons.join("; "),
                Action::Delete { reason } => reason.clone(),
                _ => String::new(),
            };
            let physical = c
                .actual
                .as_ref()
                .map(|a| a.physical_id.as_str())
                .unwrap_or("");
            md.push_str(&format!(
                "| `{}` | {} | `{}` | {} | {} |\n",
                c.action.symbol(),
                c.kind.as_str(),
                c.id,
                cell(physical),
                cell(&why)
            ));
        }
    }
    md.push_str(&format!("\n**{}.**\n", plan.summary()));
    if !values.is_empty() {
        md.push_str(
            "\n#### Values from outside the stack file\n\n| path | value | from |\n|---|---|---|\n",
        );
        for v in values {
            md.push_str(&format!(
                "| `{}` | `{}` | {} |\n",
                v.path,
                cell(&v.value),
                cell(&v.from)
            ));
        }
    }
    if let Some(e) = estimate.filter(|e| !e.lines.is_empty()) {
        md.push_str(&format!(
            "\n#### Estimated monthly cost (on-demand, {}, prices as of {})\n\n| id | what | per month |\n|---|---|---:|\n",
            e.region, e.as_of
        ));
        for l in &e.lines {
            let plus = l
                .plus
                .as_deref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default();
            md.push_str(&format!(
                "| `{}` | {} | {}{} |\n",
                l.id,
                cell(&l.what),
                cost::dollars(l.monthly_cents),
                plus
            ));
        }
        let unknown = match e.unknown {
            0 => String::new(),
            n => format!(" (+ {n} unknown)"),
        };
        md.push_str(&format!(
            "| **total** | | **{}**{unknown} |\n",
            cost::dollars(Some(e.total_cents))
        ));
    }
    md
}
