//! `iac plan`: discover, diff, print. Also the first half of `up`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::common;
use super::output::Printer;
use super::{Exit, Global};
use crate::apply::Reporter;
use crate::aws::provider;
use crate::aws::Aws;
use crate::plan::{self, Action, Plan};
use crate::stack::Stack;
use crate::tiers;

/// A computed plan and what it took to compute it.
pub struct Planned {
    pub stack: Stack,
    pub aws: Aws,
    pub plan: Plan,
}

/// Validates the file (before any AWS call), then looks up inputs, discovers and diffs.
/// `refresh_image` (`--refresh-image`) moves an image alias to its newest image even when the
/// stack keeps the one it runs (`instance.image_policy: pinned`).
pub async fn compute(
    g: &Global,
    file: &Path,
    reporter: Arc<dyn Reporter>,
    refresh_image: bool,
) -> anyhow::Result<Planned> {
    let (stack, aws) = connect(g, file, reporter.as_ref()).await?;
    compute_with(stack, aws, reporter, refresh_image).await
}

/// Validates the file and sets up the clients (no request yet): what `up` does before it takes
/// the stack lock.
pub async fn connect(
    g: &Global,
    file: &Path,
    reporter: &dyn Reporter,
) -> anyhow::Result<(Stack, Aws)> {
    let stack = common::load(file)?;
    for message in crate::stack::warnings::warnings(&stack) {
        reporter.event(&crate::apply::Event::Warning { message });
    }
    if let Some(why) = tiers::custom_scaler::not_deployable(&stack) {
        return Err(super::UsageError(why).into());
    }
    let aws = Aws::connect(&g.aws(), stack.spec.region.as_deref()).await;
    Ok((stack, aws))
}

/// Looks up inputs, discovers and diffs.
pub async fn compute_with(
    stack: Stack,
    aws: Aws,
    reporter: Arc<dyn Reporter>,
    refresh_image: bool,
) -> anyhow::Result<Planned> {
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
    Ok(Planned { stack, aws, plan })
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

pub async fn run(
    printer: &Printer,
    g: &Global,
    file: &Path,
    detailed: bool,
    refresh_image: bool,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let planned = compute(g, file, reporter, refresh_image).await?;
    print(printer, &planned.plan);
    common::summary(printer, "plan", &planned.aws, started);
    Ok(if detailed && planned.plan.summary().has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
