//! `iac plan`: discover, diff, print. Also the first half of `up`.

use std::sync::Arc;

use anyhow::Context;

use super::output::{Format, Printer};
use super::stack_args::StackArgs;
use super::table::Table;
use super::{Exit, Global};
use crate::apply::{Recorder, Reporter};
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
    let mut look_ups = LookUps::start(&aws, &loaded.stack, reporter.clone());
    compute_with(loaded, aws, &mut look_ups, reporter, refresh_image, None).await
}

/// The account look-ups a plan needs (VPC, subnets, image, key pair, zone, secrets), started
/// ahead: they read nothing of the stack, so `up` runs them while it takes the stack lock.
/// Dropped before they finish (the lock is held elsewhere, Ctrl-C), they stop. What they report
/// (a missing secret, an emulator's stand-in image) is held back until [`LookUps::finish`], so a
/// run refused by the lock says only that.
pub struct LookUps {
    task: tokio::task::JoinHandle<anyhow::Result<plan::Inputs>>,
    /// Their answer, once finished (`up` may plan twice: without the lock, then holding it).
    done: Option<plan::Inputs>,
    held: Arc<Recorder>,
    reporter: Arc<dyn Reporter>,
}

impl LookUps {
    pub fn start(aws: &Aws, stack: &Stack, reporter: Arc<dyn Reporter>) -> LookUps {
        let (aws, stack) = (aws.clone(), stack.clone());
        let held = Arc::new(Recorder::default());
        let events = held.clone();
        let task = tokio::spawn(async move {
            provider::resolve_inputs(&aws, &stack, events.as_ref())
                .await
                .with_context(|| {
                    format!(
                        "looking up the account's VPC, image and zone for stack `{}`",
                        stack.name()
                    )
                })
        });
        LookUps {
            task,
            done: None,
            held,
            reporter,
        }
    }

    async fn finish(&mut self) -> anyhow::Result<plan::Inputs> {
        if let Some(inputs) = &self.done {
            return Ok(inputs.clone());
        }
        let inputs = (&mut self.task).await;
        for event in self.held.take() {
            self.reporter.event(&event);
        }
        let inputs = inputs.context("the account look-ups stopped")??;
        self.done = Some(inputs.clone());
        Ok(inputs)
    }
}

impl Drop for LookUps {
    fn drop(&mut self) {
        self.task.abort();
    }
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

/// What [`discover`] found, and the kinds the stack file declares (which it looked for).
pub struct Found {
    discovered: provider::Discovered,
    wanted: std::collections::BTreeSet<plan::Kind>,
}

/// Discovers what is tagged with `stack`: the kinds its file declares, and those its record
/// names.
pub async fn discover(aws: &Aws, stack: &Stack) -> anyhow::Result<Found> {
    let wanted = tiers::kinds(stack)?;
    let discovered = discover_kinds(aws, stack.name(), wanted.clone()).await?;
    Ok(Found { discovered, wanted })
}

async fn discover_kinds(
    aws: &Aws,
    name: &str,
    kinds: std::collections::BTreeSet<plan::Kind>,
) -> anyhow::Result<provider::Discovered> {
    provider::discover_scoped(aws, name, &kinds)
        .await
        .with_context(|| format!("discovering the resources tagged iac:stack={name}"))
}

/// Finishes the look-ups, discovers (unless `found` is given by [`discover`]) and diffs.
pub async fn compute_with(
    loaded: Loaded,
    aws: Aws,
    look_ups: &mut LookUps,
    reporter: Arc<dyn Reporter>,
    refresh_image: bool,
    found: Option<Found>,
) -> anyhow::Result<Planned> {
    let Loaded { stack, provenance } = loaded;
    // The stack file names the kinds to look for, so discovery runs beside the look-ups.
    let (mut inputs, Found { discovered, wanted }) = match found {
        Some(f) => (look_ups.finish().await?, f),
        None => tokio::try_join!(look_ups.finish(), discover(&aws, &stack))?,
    };
    // The image the graph is built with may still move to the one the stack runs (below).
    let mut desired = tiers::desired(&stack, &inputs)?;
    let declared = plan::scope::declared(&desired);
    let discovered = if declared.is_subset(&wanted) {
        discovered
    } else {
        // Not expected (`tiers::kinds` builds the same graph): asked again rather than missed.
        discover_kinds(&aws, stack.name(), declared).await?
    };
    let latest = inputs.clone();
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
    if inputs != latest {
        desired = tiers::desired(&stack, &inputs)?;
    }
    plan::scope::add_record(
        &mut desired,
        crate::render::param_name(stack.name(), plan::scope::RECORD),
        &discovered.resources,
    );
    let plan = plan::diff(stack.name(), &desired, &discovered.resources);
    Ok(Planned {
        stack,
        provenance,
        aws,
        plan,
    })
}

/// The changes a plan lists for people: every change, and the unchanged resources that exist
/// only with `show_unchanged` (parameters the instances write themselves are not shown until
/// they exist).
fn listed(plan: &Plan, show_unchanged: bool) -> Vec<&plan::Change> {
    plan.changes
        .iter()
        .filter(|c| c.action.is_change() || (show_unchanged && c.actual.is_some()))
        .collect()
}

/// Why a change is planned, one line per reason (nothing for a create or a keep).
fn reasons(action: &Action) -> &[String] {
    match action {
        Action::Update { reasons } | Action::Replace { reasons } => reasons,
        Action::Delete { reason } => std::slice::from_ref(reason),
        Action::Create | Action::Keep => &[],
    }
}

/// The plan's closing line: the counts, and how to see the unchanged resources it left out.
fn summary_line(plan: &Plan, show_unchanged: bool) -> String {
    let hidden = !show_unchanged
        && plan
            .changes
            .iter()
            .any(|c| !c.action.is_change() && c.actual.is_some());
    let hint = if hidden {
        " (`--show-unchanged` lists them)"
    } else {
        ""
    };
    format!("{}{hint}.", plan.summary())
}

/// Prints a plan for people: the changes, unchanged resources as a count (listed too with
/// `show_unchanged`). With `-o json`, one `plan` record that holds every resource.
pub fn print(printer: &Printer, plan: &Plan, show_unchanged: bool) {
    if printer.json() {
        printer.record(&serde_json::json!({"event": "plan", "stack": plan.stack, "changes": plan.changes, "data_loss": plan.data_loss, "summary": plan.summary()}));
        return;
    }
    printer.line(printer.bold(&format!("Plan for stack `{}`:", plan.stack)));
    let shown = listed(plan, show_unchanged);
    if shown.is_empty() {
        printer.line("  No changes.");
    }
    let mut table = Table::new(2).right(0);
    for c in &shown {
        let physical = c
            .actual
            .as_ref()
            .map(|a| format!("({})", a.physical_id))
            .unwrap_or_default();
        table.row([c.action.symbol(), c.kind.as_str(), c.id.as_str(), &physical]);
    }
    for (c, line) in shown.iter().zip(table.lines().1) {
        printer.line(line);
        for r in reasons(&c.action) {
            printer.line(format!("        {r}"));
        }
    }
    for loss in &plan.data_loss {
        printer.line(format!("  data loss: {loss}"));
    }
    printer.line(summary_line(plan, show_unchanged));
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
    let mut table = Table::new(2);
    for v in values {
        table.row([
            v.path.clone(),
            format!("= {}", v.value),
            format!("<- {}", v.from),
        ]);
    }
    printer.table(&table);
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
    let mut table = Table::new(2).right(2);
    for l in &e.lines {
        table.row([
            l.id.as_str(),
            &l.what,
            &cost::dollars(l.monthly_cents),
            l.plus.as_deref().unwrap_or_default(),
        ]);
    }
    let unknown = match e.unknown {
        0 => String::new(),
        n => format!("(+ {n} unknown)"),
    };
    table.row(["Total", "", &cost::dollars(Some(e.total_cents)), &unknown]);
    printer.table(&table);
}

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    detailed: bool,
    refresh_image: bool,
    show_unchanged: bool,
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
            show_unchanged,
        ));
    } else {
        print_values(printer, &planned.provenance);
        print(printer, &planned.plan, show_unchanged);
        print_cost(printer, &planned.aws.region, &items);
    }
    super::output::summary(printer, "plan", &planned.aws, started);
    Ok(if detailed && planned.plan.summary().has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}

/// The plan as GitHub-flavoured Markdown: the same rows as the text plan (changes; unchanged
/// resources with `show_unchanged`), values from outside the file, the cost.
pub fn markdown(
    plan: &Plan,
    values: &[Provenance],
    estimate: Option<&cost::Estimate>,
    show_unchanged: bool,
) -> String {
    // A `|` inside a cell would end it.
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut md = format!("### Plan for stack `{}`\n\n", plan.stack);
    let shown = listed(plan, show_unchanged);
    if shown.is_empty() {
        md.push_str("No changes.\n");
    } else {
        md.push_str("| action | kind | id | AWS id | why |\n|---|---|---|---|---|\n");
        for c in shown {
            let why = reasons(&c.action).join("; ");
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
    md.push_str(&format!("\n**{}**\n", summary_line(plan, show_unchanged)));
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
