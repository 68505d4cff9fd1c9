//! `iac render`: exactly the user-data an instance receives. No AWS call.

use std::path::Path;

use super::output::Printer;
use super::{common, Exit};

pub fn run(printer: &Printer, file: &Path, files: bool) -> anyhow::Result<Exit> {
    let stack = common::load(file)?;
    let ud = crate::render::single_vm(&stack)?;
    if printer.json() {
        printer.record(&serde_json::json!({
            "event": "rendered",
            "bytes": ud.script.len(),
            "sha256": ud.sha256(),
            "script": ud.script,
            "files": ud.files.iter().map(|f| serde_json::json!({"path": f.path, "content": f.content})).collect::<Vec<_>>(),
        }));
    } else if files {
        for f in &ud.files {
            println!("==> {} <==\n{}", f.path, f.content);
        }
    } else {
        print!("{}", ud.script);
    }
    Ok(Exit::Ok)
}
