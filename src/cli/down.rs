//! `iac down`: delete everything tagged with the stack in reverse order, then verify.

use std::sync::Arc;

use anyhow::Context;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::table::Table;
use super::{locked, Exit, Global};
use crate::apply::{self, Reporter};
use crate::aws::provider::{self, Applier};
use crate::aws::{boot_report, lock, tagging, Aws};
use crate::plan::{Details, Kind, Observed};
use crate::tiers;

/// The stack name and region from a file (validated) or from `--stack`.
pub fn target(src: &StackArgs, stack: Option<&str>) -> anyhow::Result<(String, Option<String>)> {
    match stack {
        Some(name) if src.is_empty() => {
            check_stack_name(name)?;
            Ok((name.to_string(), None))
        }
        _ if src.is_empty() => {
            Err(super::UsageError("give a stack file or --stack NAME".to_string()).into())
        }
        _ => {
            let s = src.load()?.stack;
            Ok((s.name().to_string(), s.spec.region.clone()))
        }
    }
}

/// `--stack NAME` follows the same rules as the file's `name`, so that it is always matched
/// exactly: EC2's tag filters would read `*` and `?` as wildcards. Checked before any AWS call.
pub fn check_stack_name(name: &str) -> anyhow::Result<()> {
    if crate::stack::validate::is_valid_stack_name(name) {
        return Ok(());
    }
    Err(super::UsageError(format!(
        "--stack `{name}` is not a valid stack name: {}\n  help: stack names are matched exactly, never as patterns; give the name from the stack file's `name:`",
        crate::stack::validate::STACK_NAME_RULE
    ))
    .into())
}

/// What is still tagged with the stack: discovered resources and any ARN the tagging API
/// lists (minus terminated instances, which linger for a while).
pub async fn leftovers(aws: &Aws, stack: &str) -> anyhow::Result<Vec<String>> {
    let found = provider::discover(aws, stack).await?;
    let mut left: Vec<String> = found
        .resources
        .iter()
        .map(|o| format!("{} {} ({})", o.kind, o.id, o.physical_id))
        .collect();
    // The stack lock is tagged with the stack too; `down` removes it last, after this check.
    let lock = format!(":parameter{}", lock::name(stack));
    for arn in tagging::tagged_arns(aws, stack).await? {
        if arn.ends_with(&lock) {
            continue;
        }
        let gone = found
            .terminated_ids
            .iter()
            .any(|t| arn.ends_with(t.as_str()));
        let known = found
            .resources
            .iter()
            .any(|o| arn.ends_with(o.physical_id.as_str()));
        if gone || known {
            continue;
        }
        // An instance terminated long enough ago that DescribeInstances no longer lists it by
        // tag may still be listed by the tagging API for a while: ask for it by id.
        if let Some((_, id)) = arn.split_once(":instance/") {
            let state = crate::aws::ec2::instance_state_ip(aws, id).await?;
            if state.is_none_or(|(s, _)| s == "terminated") {
                continue;
            }
        }
        left.push(arn);
    }
    Ok(left)
}

/// Data volumes `down` keeps unless `--delete-data`.
fn is_kept_data(o: &Observed, delete_data: bool) -> bool {
    !delete_data
        && matches!(
            o.details,
            Details::Volume {
                keep_on_down: true,
                ..
            } | Details::FileSystem {
                keep_on_down: true,
                ..
            }
        )
}

/// `protect: true` lives on the resources: while any carries it, `down` deletes nothing.
fn refuse_protected(stack: &str, found: &[Observed]) -> anyhow::Result<()> {
    let protected: Vec<String> = found
        .iter()
        .filter(|o| o.is_protected())
        .map(|o| format!("{} {} ({})", o.kind, o.id, o.physical_id))
        .collect();
    if protected.is_empty() {
        return Ok(());
    }
    Err(super::UsageError(format!(
        "stack `{stack}` is protected (`protect: true`): {}; `down` deletes nothing of it, with or without --delete-data\n  help: set `protect: false` in the stack file and run `iac up` first; removing the key alone changes nothing until that `up`",
        protected.join(", ")
    ))
    .into())
}

/// What `down` may do.
#[derive(Debug, Clone, Copy)]
pub struct DownOptions {
    pub yes: bool,
    pub parallelism: usize,
    pub delete_data: bool,
    pub skip_final_snapshot: bool,
    /// How long to wait for another run's lock (zero: fail at once, exit code 5).
    pub lock_wait: std::time::Duration,
    /// `--dependency-timeout`: how long a deletion retries while something still uses the
    /// resource, security groups included (`None`: the provider's own deadlines).
    pub dependency_timeout: Option<std::time::Duration>,
}

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    stack: Option<&str>,
    opts: DownOptions,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let (name, region) = target(src, stack)?;
    let aws = Aws::connect(&g.aws(), region.as_deref()).await;
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let work = delete(printer, &aws, &name, reporter.clone(), opts, started);
    locked::run(&aws, &name, "down", opts.lock_wait, &reporter, work).await
}

/// Deletes and verifies (holding the stack lock, which is released, hence removed, last).
async fn delete(
    printer: &Printer,
    aws: &Aws,
    name: &str,
    reporter: Arc<dyn Reporter>,
    opts: DownOptions,
    started: std::time::Instant,
) -> anyhow::Result<Exit> {
    let DownOptions {
        yes,
        parallelism,
        delete_data,
        skip_final_snapshot,
        ..
    } = opts;
    let aws = aws.clone();
    let name = name.to_string();
    let found = provider::discover(&aws, &name)
        .await
        .with_context(|| format!("discovering the resources tagged iac:stack={name}"))?;
    refuse_protected(&name, &found.resources)?;
    let (kept, mut doomed): (Vec<Observed>, Vec<Observed>) = found
        .resources
        .iter()
        .cloned()
        .partition(|o| is_kept_data(o, delete_data));
    // custom-scaler: the instances the monitor launched go too (after the monitor, before the
    // launch template: see the provider's delete order).
    let pool = tiers::custom_scaler::pool(&found.untracked);
    doomed.extend(pool.iter().cloned());
    if doomed.is_empty() {
        printer.line(format!(
            "Nothing to delete for stack `{name}` in {}.",
            aws.region
        ));
    } else {
        printer.line(printer.bold(&format!("Deleting stack `{name}` in {}:", aws.region)));
        let mut table = Table::new(4);
        let mut rows: Vec<&Observed> = doomed.iter().collect();
        rows.sort_by(|a, b| a.listing_key().cmp(&b.listing_key()));
        for o in rows {
            table.row([
                "-",
                o.kind.as_str(),
                o.id.as_str(),
                &format!("({})", o.physical_id),
            ]);
        }
        printer.table(&table);
        if !super::output::confirm(
            printer,
            &format!("Delete these {} resources?", doomed.len()),
            yes,
        )? {
            printer.line("Nothing done.");
            return Ok(Exit::Ok);
        }
        let mut applier = Applier::for_stack(aws.clone(), &name, reporter.clone());
        applier.skip_final_snapshot = skip_final_snapshot;
        if let Some(timeout) = opts.dependency_timeout {
            applier.deadlines.dependency = timeout;
            applier.deadlines.group_dependency = timeout;
        }
        let launched = |o: &Observed| tiers::custom_scaler::is_pool(&o.tags);
        let nodes = applier.delete_nodes(&doomed, &launched);
        applier
            .revoke_group_references(&doomed)
            .await
            .context("revoking the rules between the stack's security groups")?;
        let outcome = apply::run(nodes, parallelism, reporter.clone()).await;
        if !outcome.ok() {
            tracing::warn!(failed = outcome.failed.len(), "some deletions failed");
        }
        // A monitor still running elsewhere (`scaler.monitor.address`) may have launched more
        // while the template existed: terminate those too.
        if !pool.is_empty() || doomed.iter().any(|o| o.kind == Kind::LaunchTemplate) {
            let late = provider::discover(&aws, &name)
                .await
                .with_context(|| format!("looking for instances launched during `down` of {name}"))?
                .untracked;
            let late = tiers::custom_scaler::pool(&late);
            if !late.is_empty() {
                printer.line(format!(
                    "    {} instance(s) launched by the monitor during `down`; terminating them",
                    late.len()
                ));
                apply::run(
                    applier.delete_nodes(&late, &launched),
                    parallelism,
                    reporter.clone(),
                )
                .await;
            }
        }
    }
    // The instances' boot reports are no resources of the stack, but its own all the same.
    let reports = boot_report::delete_all(&aws, &name)
        .await
        .context("deleting the instances' boot reports")?;
    if reports > 0 {
        printer.line(format!("    deleted {reports} boot report(s)"));
    }
    let kept_ids: Vec<&str> = kept.iter().map(|o| o.physical_id.as_str()).collect();
    // Aurora snapshots are data kept on purpose (the final one), or the cluster's automated
    // backups, which AWS expires by itself.
    let (snapshots, others): (Vec<String>, Vec<String>) = leftovers(&aws, &name)
        .await
        .context("verifying that nothing is left")?
        .into_iter()
        .partition(|l| l.contains(":cluster-snapshot:"));
    let final_snapshots: Vec<String> = snapshots
        .into_iter()
        .filter(|s| !s.contains(":cluster-snapshot:rds:"))
        .collect();
    let left: Vec<String> = others
        .into_iter()
        .filter(|l| !kept_ids.iter().any(|k| l.contains(k)))
        .collect();
    let mut kept_list: Vec<String> = kept
        .iter()
        .map(|o| format!("{} {} ({})", o.kind, o.id, o.physical_id))
        .collect();
    kept_list.extend(final_snapshots.iter().map(|s| format!("snapshot {s}")));
    printer.record(&serde_json::json!({"event": "verified", "stack": name, "remaining": left, "kept": kept_list}));
    super::output::summary(printer, "down", &aws, started);
    for k in &kept_list {
        if k.starts_with("snapshot ") {
            printer.line(format!("Kept {k}: the final Aurora snapshot; restore it or delete it yourself (`--skip-final-snapshot` takes none)."));
        } else {
            printer.line(format!("Kept {k}: it holds data. A later `iac up` uses it again; `iac down --delete-data` deletes it."));
        }
    }
    if left.is_empty() && !kept_list.is_empty() {
        printer.line(format!(
            "Stack `{name}` is gone except its data (exit code 4)."
        ));
        Ok(Exit::DataKept)
    } else if left.is_empty() {
        printer.line(format!(
            "Stack `{name}` is gone: nothing else tagged iac:stack={name} remains."
        ));
        Ok(Exit::Ok)
    } else {
        eprintln!(
            "error: {} resource(s) tagged iac:stack={name} remain:",
            left.len()
        );
        for l in &left {
            eprintln!("  {l}");
        }
        eprintln!("  help: run `iac down` again; if it persists, delete them in the console");
        Ok(Exit::Failure)
    }
}
