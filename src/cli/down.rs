//! `iac down`: delete everything tagged with the stack in reverse order, then verify.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::output::Printer;
use super::{common, Exit, Global};
use crate::apply::{self, Reporter};
use crate::aws::provider::{self, Applier};
use crate::aws::{tagging, Aws};

/// The stack name and region from a file (validated) or from `--stack`.
pub fn target(
    file: Option<&Path>,
    stack: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    match (file, stack) {
        (Some(f), _) => {
            let s = common::load(f)?;
            Ok((s.name().to_string(), s.spec.region.clone()))
        }
        (None, Some(name)) => Ok((name.to_string(), None)),
        (None, None) => {
            Err(super::UsageError("give a stack file or --stack NAME".to_string()).into())
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

pub async fn run(
    printer: &Printer,
    g: &Global,
    file: Option<&Path>,
    stack: Option<&str>,
    yes: bool,
    parallelism: usize,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let (name, region) = target(file, stack)?;
    let aws = Aws::connect(&g.aws(), region.as_deref()).await;
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let found = provider::discover(&aws, &name)
        .await
        .with_context(|| format!("discovering the resources tagged iac:stack={name}"))?;
    if found.resources.is_empty() {
        printer.line(format!(
            "Nothing tagged with stack `{name}` in {}.",
            aws.region
        ));
    } else {
        printer.line(printer.bold(&format!("Deleting stack `{name}` in {}:", aws.region)));
        for o in &found.resources {
            printer.line(format!(
                "    - {:<15} {} ({})",
                o.kind.as_str(),
                o.id,
                o.physical_id
            ));
        }
        if !common::confirm(
            printer,
            &format!("Delete these {} resources?", found.resources.len()),
            yes,
        )? {
            printer.line("Nothing done.");
            return Ok(Exit::Ok);
        }
        let applier = Applier::for_stack(aws.clone(), &name, reporter.clone());
        let outcome = apply::run(
            applier.delete_nodes(&found.resources),
            parallelism,
            reporter.clone(),
        )
        .await;
        if !outcome.ok() {
            tracing::warn!(failed = outcome.failed.len(), "some deletions failed");
        }
    }
    let left = leftovers(&aws, &name)
        .await
        .context("verifying that nothing is left")?;
    printer.record(&serde_json::json!({"event": "verified", "stack": name, "remaining": left}));
    common::summary(printer, "down", &aws, started);
    if left.is_empty() {
        printer.line(format!(
            "Stack `{name}` is gone: nothing tagged iac:stack={name} remains."
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
