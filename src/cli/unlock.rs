//! `iac unlock`: break a stack's lock left by a run that is gone.

use std::path::Path;

use super::output::Printer;
use super::{down, Exit, Global};
use crate::aws::{lock, Aws};
use crate::lease;

pub async fn run(
    printer: &Printer,
    g: &Global,
    file: Option<&Path>,
    stack: Option<&str>,
    yes: bool,
) -> anyhow::Result<Exit> {
    let src = super::StackArgs {
        file: file.map(Path::to_path_buf),
        files: Vec::new(),
        set: Vec::new(),
    };
    let (name, region) = down::target(&src, stack)?;
    let aws = Aws::connect(&g.aws(), region.as_deref()).await;
    let Some(seen) = lock::read(&aws, &name).await? else {
        printer.line(format!("Stack `{name}` is not locked."));
        printer
            .record(&serde_json::json!({"event": "unlocked", "stack": name, "was_locked": false}));
        return Ok(Exit::Ok);
    };
    printer.line(format!(
        "Stack `{name}` is locked by {} running `{}` for {}{}.",
        seen.holder(),
        seen.operation(),
        lease::age(seen.age()),
        if seen.expired() {
            " (its lease has expired)"
        } else {
            ""
        }
    ));
    let question = format!(
        "Break the lock of stack `{name}`? If that run is still working, two runs would then change the stack at once"
    );
    if !super::output::confirm(printer, &question, yes)? {
        printer.line("Nothing done.");
        return Ok(Exit::Ok);
    }
    lock::delete(&aws, &name).await?;
    printer.line(format!("Unlocked stack `{name}`."));
    printer.record(&serde_json::json!({"event": "unlocked", "stack": name, "was_locked": true, "holder": seen.record.as_ref().map(|r| &r.holder)}));
    Ok(Exit::Ok)
}
