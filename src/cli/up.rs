//! `iac up`: plan, confirm, apply along the graph, delete what is no longer wanted, report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::output::Printer;
use super::stack_args::StackArgs;
use super::{locked, plan, ready, Exit, Global};
use crate::apply::{self, Event, Recorder, Reporter};
use crate::aws::provider::{self, Applier};
use crate::aws::{lock, Aws};
use crate::plan::scope;
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
    let since_s = refresh_since();
    // The lock is read first (with the record of kinds): for a new stack or a lock held, its
    // answer alone decides that the run takes the lock. The look-ups read only the account,
    // so they run meanwhile.
    let lock_read = tokio::spawn({
        let (aws, record) = (aws.clone(), crate::render::param_name(&name, scope::RECORD));
        let name = name.clone();
        async move { lock::read_beside(&aws, &name, &record).await }
    });
    let mut look_ups = plan::LookUps::start(&aws, &loaded.stack, reporter.clone());
    let lock_read = async {
        lock_read
            .await
            .context("the lock's read stopped")?
            .with_context(|| format!("reading the lock of stack `{name}`"))
    };
    if let Some(planned) =
        unchanged(&loaded, &aws, lock_read, &mut look_ups, &reporter, opts).await?
    {
        let applier = Applier::new(planned.aws.clone(), &planned.stack, reporter.clone());
        return finish(
            printer, &planned, &applier, &reporter, opts, since_s, started,
        )
        .await;
    }
    let work = converge(
        printer,
        loaded,
        aws.clone(),
        look_ups,
        reporter.clone(),
        opts,
        (since_s, started),
    );
    locked::run(&aws, &name, "up", opts.lock_wait, &reporter, work).await
}

/// The plan, when the stack has nothing to change and no run holds its lock. It is made
/// without the lock, so a run with nothing to do writes nothing (not even the lock), and does
/// not queue behind, or refuse, another run with nothing to do. A lock held (or left behind),
/// a new stack (no record of kinds yet) or a change give `None`: the lock is taken and the
/// stack discovered again under it. Unlocked reads may interleave with a run that takes the
/// lock meanwhile; reads that all find the stack as the file wants it answer as if this run had
/// gone first.
async fn unchanged(
    loaded: &Loaded,
    aws: &Aws,
    lock_read: impl std::future::Future<Output = anyhow::Result<(Option<lock::Seen>, bool)>>,
    look_ups: &mut plan::LookUps,
    reporter: &Arc<dyn Reporter>,
    opts: UpOptions,
) -> anyhow::Result<Option<plan::Planned>> {
    // The discovery runs beside the lock's read, and is dropped when that read decides.
    let discovery = plan::discover(aws, &loaded.stack);
    tokio::pin!(lock_read, discovery);
    let mut found = None;
    let (held, recorded) = loop {
        tokio::select! {
            read = &mut lock_read => break read?,
            f = &mut discovery, if found.is_none() => found = Some(f?),
        }
    };
    if held.is_some() || !recorded {
        return Ok(None);
    }
    let found = match found {
        Some(f) => f,
        None => discovery.await?,
    };
    // What planning reports (an image alias that moved) is said once, by the plan applied.
    let planning = Arc::new(Recorder::default());
    let planned = plan::compute_with(
        loaded.clone(),
        aws.clone(),
        look_ups,
        planning.clone(),
        opts.refresh_image,
        Some(found),
    )
    .await?;
    if planned.plan.summary().has_changes() {
        return Ok(None);
    }
    for event in planning.take() {
        reporter.event(&event);
    }
    Ok(Some(planned))
}

/// From when a run may count an instance refresh as its own: one AWS says started after this
/// (by its clock, so a minute of margin for this machine's). Only the group's latest refresh
/// is looked at, and a new one replaces any in progress, so the margin cannot make another
/// run's refresh ours.
fn refresh_since() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        - 60
}

/// Discovers, plans, confirms and applies (holding the stack lock).
async fn converge(
    printer: &Printer,
    loaded: Loaded,
    aws: Aws,
    mut look_ups: plan::LookUps,
    reporter: Arc<dyn Reporter>,
    opts: UpOptions,
    (since_s, started): (i64, std::time::Instant),
) -> anyhow::Result<Exit> {
    let UpOptions {
        yes,
        parallelism,
        allow_data_loss,
        refresh_image,
        show_unchanged,
        ..
    } = opts;
    let planned = plan::compute_with(
        loaded,
        aws,
        &mut look_ups,
        reporter.clone(),
        refresh_image,
        None,
    )
    .await?;
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
    }
    finish(
        printer, &planned, &applier, &reporter, opts, since_s, started,
    )
    .await
}

/// Reports what the stack is once the plan is applied (or that it had nothing to change): its
/// outputs and, when `up` waits, whether the app came up.
async fn finish(
    printer: &Printer,
    planned: &plan::Planned,
    applier: &Applier,
    reporter: &Arc<dyn Reporter>,
    opts: UpOptions,
    since_s: i64,
    started: std::time::Instant,
) -> anyhow::Result<Exit> {
    if !planned.plan.summary().has_changes() {
        printer.line(format!(
            "No changes: stack `{}` is up to date.",
            planned.stack.name()
        ));
    }
    let aws = &planned.aws;
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
        let fresh = provider::discover_kinds(aws, planned.stack.name(), &unknown)
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
                aws,
                &planned.stack,
                &facts,
                &outputs,
                wf,
                reporter.as_ref(),
            )
            .await;
            if let Err(e) = waited {
                printer.outputs(&outputs);
                super::output::summary(printer, "up", aws, started);
                return Err(e);
            }
        }
    }
    printer.outputs(&outputs);
    super::output::summary(printer, "up", aws, started);
    Ok(Exit::Ok)
}
