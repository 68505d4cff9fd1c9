//! `iac up`: plan, confirm, apply along the graph, delete what is no longer wanted, report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::{common, locked, plan, probe, Exit, Global};
use crate::apply::{self, Event, Reporter};
use crate::aws::provider::{self, Applier};
use crate::aws::Aws;
use crate::stack::Loaded;

/// What `up` may do.
#[derive(Debug, Clone, Copy)]
pub struct UpOptions {
    pub yes: bool,
    pub parallelism: usize,
    pub no_wait: bool,
    /// Apply even changes that destroy data without moving it (`--allow-data-loss`).
    pub allow_data_loss: bool,
    /// How long to wait for another run's lock (zero: fail at once, exit code 5).
    pub lock_wait: Duration,
    /// Move the image alias to its newest image (`--refresh-image`).
    pub refresh_image: bool,
}

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    opts: UpOptions,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let (loaded, aws) = plan::connect(g, src, reporter.as_ref()).await?;
    let name = loaded.stack.name().to_string();
    let work = converge(
        printer,
        loaded,
        aws.clone(),
        reporter.clone(),
        opts,
        started,
    );
    locked::run(&aws, &name, "up", opts.lock_wait, &reporter, work).await
}

/// Discovers, plans, confirms and applies (holding the stack lock).
async fn converge(
    printer: &Printer,
    loaded: Loaded,
    aws: Aws,
    reporter: Arc<dyn Reporter>,
    opts: UpOptions,
    started: std::time::Instant,
) -> anyhow::Result<Exit> {
    let UpOptions {
        yes,
        parallelism,
        no_wait,
        allow_data_loss,
        refresh_image,
        ..
    } = opts;
    let planned = plan::compute_with(loaded, aws, reporter.clone(), refresh_image).await?;
    let summary = planned.plan.summary();
    let aws = planned.aws.clone();
    if summary.has_changes() {
        plan::print_values(printer, &planned.provenance);
        plan::print(printer, &planned.plan);
        if !planned.plan.data_loss.is_empty() && !allow_data_loss {
            return Err(super::UsageError(format!(
                "refusing to apply: {} change(s) above would destroy data without moving it; back the data up, then run again with --allow-data-loss (see the README: data)",
                planned.plan.data_loss.len()
            ))
            .into());
        }
        let question = format!("Apply these changes to stack `{}`?", planned.stack.name());
        if !common::confirm(printer, &question, yes)? {
            printer.line("Nothing done.");
            return Ok(Exit::Ok);
        }
        let mut applier = Applier::new(aws.clone(), &planned.stack, reporter.clone());
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
