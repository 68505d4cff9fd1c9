//! `iac up`: plan, confirm, apply along the graph, delete what is no longer wanted, report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::output::Printer;
use super::stack_args::StackArgs;
use super::{locked, plan, ready, Exit, Global};
use crate::apply::{self, Event, Reporter};
use crate::aws::provider::{self, Applier};
use crate::aws::Aws;
use crate::stack::Loaded;

/// Whether `up` waits for the app to come up (see `ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `--no-wait`.
    No,
    /// On AWS; not under an endpoint override (an emulator boots nothing by itself).
    Auto,
    /// `--wait`: also under an endpoint override (a local cloud boots the emulator's instances).
    Always,
}

/// What `up` may do.
#[derive(Debug, Clone, Copy)]
pub struct UpOptions {
    pub yes: bool,
    pub parallelism: usize,
    pub wait: Wait,
    pub wait_timeout: Duration,
    /// Apply even changes that destroy data without moving it (`--allow-data-loss`).
    pub allow_data_loss: bool,
    /// How long to wait for another run's lock (zero: fail at once, exit code 5).
    pub lock_wait: Duration,
    /// Move the image alias to its newest image (`--refresh-image`).
    pub refresh_image: bool,
    /// List the unchanged resources in the plan too (`--show-unchanged`).
    pub show_unchanged: bool,
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
    // The look-ups read only the account, so they run while the lock is taken.
    let look_ups = plan::LookUps::start(&aws, &loaded.stack, reporter.clone());
    let work = converge(
        printer,
        loaded,
        aws.clone(),
        look_ups,
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
    look_ups: plan::LookUps,
    reporter: Arc<dyn Reporter>,
    opts: UpOptions,
    started: std::time::Instant,
) -> anyhow::Result<Exit> {
    let UpOptions {
        yes,
        parallelism,
        allow_data_loss,
        refresh_image,
        show_unchanged,
        ..
    } = opts;
    // A refresh AWS says started after this (by its clock, so a minute of margin for this
    // machine's) is this run's to follow. Only the group's latest refresh is looked at, and a
    // new one replaces any in progress, so the margin cannot make another run's refresh ours.
    let since_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        - 60;
    let planned =
        plan::compute_with(loaded, aws, look_ups, reporter.clone(), refresh_image).await?;
    // The instances that run now and stay: they need not report a boot they may have done
    // before boot reports existed.
    let kept: std::collections::BTreeSet<String> = planned
        .plan
        .changes
        .iter()
        .filter(|c| c.kind == crate::plan::Kind::Instance)
        .filter(|c| {
            matches!(
                c.action,
                crate::plan::Action::Keep | crate::plan::Action::Update { .. }
            )
        })
        .filter_map(|c| c.actual.as_ref().map(|a| a.physical_id.clone()))
        .collect();
    let summary = planned.plan.summary();
    let aws = planned.aws.clone();
    let mut applier = Applier::new(aws.clone(), &planned.stack, reporter.clone());
    if summary.has_changes() {
        plan::print_values(printer, &planned.provenance);
        plan::print(printer, &planned.plan, show_unchanged);
        if !planned.plan.data_loss.is_empty() && !allow_data_loss {
            return Err(super::UsageError(format!(
                "refusing to apply: {} change(s) above would destroy data without moving it; back the data up, then run again with --allow-data-loss (see the README: data)",
                planned.plan.data_loss.len()
            ))
            .into());
        }
        let question = format!("Apply these changes to stack `{}`?", planned.stack.name());
        if !super::output::confirm(printer, &question, yes)? {
            printer.line("Nothing done.");
            return Ok(Exit::Ok);
        }
        applier.drain = crate::tiers::drain(&planned.stack);
        let (apply_nodes, delete_nodes) = applier.nodes(&planned.plan);
        let outcome = apply::run(apply_nodes, parallelism, reporter.clone()).await;
        if !outcome.ok() {
            super::output::summary(printer, "up", &aws, started);
            bail!(
                "{} operation(s) failed, {} skipped; what was created is tagged and will be adopted by the next `iac up` (or removed by `iac down`)",
                outcome.failed.len(),
                outcome.skipped.len()
            );
        }
        let outcome = apply::run(delete_nodes, parallelism, reporter.clone()).await;
        if !outcome.ok() {
            super::output::summary(printer, "up", &aws, started);
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
    // What the stack is now: what the plan kept and the run made, as the run knows it; only
    // what a run cannot know (a new Auto Scaling group's instances) is read again.
    let mut facts = applier.facts(&planned.plan);
    let changed: std::collections::BTreeSet<crate::plan::Kind> = planned
        .plan
        .changes
        .iter()
        .filter(|c| c.action.is_change())
        .map(|c| c.kind)
        .collect();
    let unknown = provider::unknown_after_apply(&changed);
    if !unknown.is_empty() {
        let fresh = provider::discover_kinds(&aws, planned.stack.name(), &unknown)
            .await
            .context("reading what this run created")?
            .resources;
        facts.extend(
            crate::plan::facts_of(&fresh)
                .into_iter()
                .filter(|(_, f)| unknown.contains(&f.kind)),
        );
    }
    let outputs = crate::tiers::outputs(&planned.stack, &facts);
    match (opts.wait, &aws.endpoint_override) {
        (Wait::No, _) => {}
        (Wait::Auto, Some(endpoint)) => reporter.event(&Event::Info {
            message: format!("not waiting for the app: endpoint override {endpoint} in effect (an emulator boots nothing by itself; --wait waits for the boot reports of a local cloud)"),
        }),
        (_, endpoint) => {
            let wf = ready::WaitFor {
                kept,
                deadline: opts.wait_timeout,
                probe_http: endpoint.is_none(),
                since_s,
            };
            let waited = ready::wait(
                printer,
                &aws,
                &planned.stack,
                &facts,
                &outputs,
                wf,
                reporter.as_ref(),
            )
            .await;
            if let Err(e) = waited {
                printer.outputs(&outputs);
                super::output::summary(printer, "up", &aws, started);
                return Err(e);
            }
        }
    }
    printer.outputs(&outputs);
    super::output::summary(printer, "up", &aws, started);
    Ok(Exit::Ok)
}
