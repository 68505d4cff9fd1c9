//! `iac validate`: the stack file checked, with its warnings; no AWS call.

use super::output::Printer;
use super::stack_args::StackArgs;
use super::Exit;
use crate::stack;

/// Validates the stack file (or files) and prints its tier and name.
pub fn run(printer: &Printer, src: &StackArgs) -> anyhow::Result<Exit> {
    let s = src.load()?.stack;
    let files = src.describe();
    for w in stack::warnings::warnings(&s) {
        eprintln!("warning: {files}: {w}");
        printer.record(&serde_json::json!({"event": "warning", "message": w}));
    }
    printer.line(format!(
        "{files}: valid {} stack `{}`",
        s.spec.tier.as_str(),
        s.name()
    ));
    printer.record(&serde_json::json!({"event": "valid", "file": files, "stack": s.name(), "tier": s.spec.tier.as_str()}));
    Ok(Exit::Ok)
}
