//! `iac up`: plan, confirm, apply along the graph, delete what is no longer wanted, report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::{common, plan, probe, Exit, Global};
use crate::apply::{self, Event, Reporter};
use crate::aws::provider::{self, Applier};

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    yes: bool,
    parallelism: usize,
    no_wait: bool,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let planned = plan::compute(g, src, reporter.clone()).await?;
    let summary = planned.plan.summary();
    let aws = planned.aws.clone();
    if summary.has_changes() {
        plan::print_values(printer, &planned.provenance);
        plan::print(printer, &planned.plan);
        let question = format!("Apply these changes to stack `{}`?", planned.stack.name());
        if !common::confirm(printer, &question, yes)? {
            printer.line("Nothing done.");
            return Ok(Exit::Ok);
        }
        let mut applier = Applier::new(
            aws.clone(),
            &planned.stack,
            reporter.clone(),
            &planned.discovered,
        );
        applier.drain = crate::tiers::drain(&planned.stack);
        let (apply_nodes, delete_nodes) = applier.nodes(&planned.plan);
        let outcome = apply::run(apply_nodes, parallelism, reporter.clone()).await;
        if !outcome.ok() {
            common::summary(printer, "up", &aws, started);
            bail!(
                "{} operation(s) failed, {} skipped; what was created is tagged and will be adopted by the next `iac up` (or removed by `iac down`)",
                outcome.failed.len(),
                outcome.skipped.len()
            );
        }
        let outcome = apply::run(delete_nodes, parallelism, reporter.clone()).await;
        if !outcome.ok() {
            common::summary(printer, "up", &aws, started);
            bail!(
                "{} deletion(s) failed; run `iac up` again to retry",
                outcome.failed.len()
            );
        }
    } else {
        printer.line(format!(
            "No changes: stack `{}` is up to date.",
            planned.stack.name()
        ));
    }
    let found = provider::discover(&aws, planned.stack.name()).await?;
    let outputs = provider::outputs(&planned.stack, &found.resources);
    if let Some(ip) = outputs.get("public_ip") {
        if no_wait {
        } else if let Some(endpoint) = &aws.endpoint_override {
            reporter.event(&Event::Info {
                message: format!("readiness probe skipped: endpoint override {endpoint} in effect (emulated addresses are not reachable)"),
            });
        } else {
            let host = planned.stack.spec.domain.as_ref().map(|d| d.name.clone());
            probe::http_ready(
                ip,
                80,
                host.as_deref(),
                &planned.stack.spec.app.health_path,
                Duration::from_secs(900),
                reporter.as_ref(),
            )
            .await?;
        }
    }
    printer.outputs(&outputs);
    common::summary(printer, "up", &aws, started);
    Ok(Exit::Ok)
}
