//! `iac status`: every resource of the stack, its state, and the outputs.

use std::path::Path;

use anyhow::Context;

use super::output::Printer;
use super::{common, down, Exit, Global};
use crate::aws::{provider, Aws};

pub async fn run(
    printer: &Printer,
    g: &Global,
    file: Option<&Path>,
    stack: Option<&str>,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let (name, region) = down::target(file, stack)?;
    let aws = Aws::connect(&g.aws(), region.as_deref()).await;
    let found = provider::discover(&aws, &name)
        .await
        .with_context(|| format!("discovering the resources tagged iac:stack={name}"))?;
    let outputs = match file {
        Some(f) => provider::outputs(&common::load(f)?, &found.resources),
        None => Default::default(),
    };
    if printer.json() {
        printer.record(&serde_json::json!({"event": "status", "stack": name, "region": aws.region, "resources": found.resources}));
    } else if found.resources.is_empty() {
        printer.line(format!(
            "Stack `{name}` has no resources in {}.",
            aws.region
        ));
    } else {
        printer.line(printer.bold(&format!("Stack `{name}` in {}:", aws.region)));
        printer.line(format!(
            "  {:<15} {:<10} {:<28} {}",
            "KIND", "ID", "AWS ID", "STATE"
        ));
        for o in &found.resources {
            printer.line(format!(
                "  {:<15} {:<10} {:<28} {}",
                o.kind.as_str(),
                o.id,
                o.physical_id,
                o.state
            ));
        }
    }
    printer.outputs(&outputs);
    common::summary(printer, "status", &aws, started);
    Ok(Exit::Ok)
}
