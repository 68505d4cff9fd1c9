//! `iac down`: delete everything tagged with the stack in reverse order, then verify.

use std::sync::Arc;

use anyhow::Context;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::{common, Exit, Global};
use crate::apply::{self, Reporter};
use crate::aws::provider::{self, Applier};
use crate::aws::{tagging, Aws};
use crate::plan::{Details, Kind, Observed};

/// The stack name and region from a file (validated) or from `--stack`.
pub fn target(src: &StackArgs, stack: Option<&str>) -> anyhow::Result<(String, Option<String>)> {
    match stack {
        Some(name) if src.is_empty() => Ok((name.to_string(), None)),
        _ if src.is_empty() => {
            Err(super::UsageError("give a stack file or --stack NAME".to_string()).into())
        }
        _ => {
            let s = src.load()?.stack;
            Ok((s.name().to_string(), s.spec.region.clone()))
        }
    }
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
    for arn in tagging::tagged_arns(aws, stack).await? {
        let gone = found
            .terminated_ids
            .iter()
            .any(|t| arn.ends_with(t.as_str()));
        let known = found
            .resources
            .iter()
            .any(|o| arn.ends_with(o.physical_id.as_str()));
        if !gone && !known {
            left.push(arn);
        }
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

/// What `down` may do.
#[derive(Debug, Clone, Copy)]
pub struct DownOptions {
    pub yes: bool,
    pub parallelism: usize,
    pub delete_data: bool,
    pub skip_final_snapshot: bool,
}

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    stack: Option<&str>,
    opts: DownOptions,
) -> anyhow::Result<Exit> {
    let DownOptions {
        yes,
        parallelism,
        delete_data,
        skip_final_snapshot,
    } = opts;
    let started = std::time::Instant::now();
    let (name, region) = target(src, stack)?;
    let aws = Aws::connect(&g.aws(), region.as_deref()).await;
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let found = provider::discover(&aws, &name)
        .await
        .with_context(|| format!("discovering the resources tagged iac:stack={name}"))?;
    let (kept, mut doomed): (Vec<Observed>, Vec<Observed>) = found
        .resources
        .iter()
        .cloned()
        .partition(|o| is_kept_data(o, delete_data));
    // custom-scaler: the instances the monitor launched go too (after the monitor, before the
    // launch template: see the provider's delete order).
    doomed.extend(found.pool.iter().cloned());
    if doomed.is_empty() {
        printer.line(format!(
            "Nothing to delete for stack `{name}` in {}.",
            aws.region
        ));
    } else {
        printer.line(printer.bold(&format!("Deleting stack `{name}` in {}:", aws.region)));
        for o in &doomed {
            printer.line(format!(
                "    - {:<15} {} ({})",
                o.kind.as_str(),
                o.id,
                o.physical_id
            ));
        }
        if !common::confirm(
            printer,
            &format!("Delete these {} resources?", doomed.len()),
            yes,
        )? {
            printer.line("Nothing done.");
            return Ok(Exit::Ok);
        }
        let mut applier = Applier::for_stack(aws.clone(), &name, reporter.clone());
        applier.skip_final_snapshot = skip_final_snapshot;
        let outcome =
            apply::run(applier.delete_nodes(&doomed), parallelism, reporter.clone()).await;
        if !outcome.ok() {
            tracing::warn!(failed = outcome.failed.len(), "some deletions failed");
        }
        // A monitor still running elsewhere (`scaler.monitor.address`) may have launched more
        // while the template existed: terminate those too.
        if !found.pool.is_empty() || doomed.iter().any(|o| o.kind == Kind::LaunchTemplate) {
            let late = provider::discover(&aws, &name)
                .await
                .with_context(|| format!("looking for instances launched during `down` of {name}"))?
                .pool;
            if !late.is_empty() {
                printer.line(format!(
                    "    {} instance(s) launched by the monitor during `down`; terminating them",
                    late.len()
                ));
                apply::run(applier.delete_nodes(&late), parallelism, reporter.clone()).await;
            }
        }
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
    common::summary(printer, "down", &aws, started);
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
