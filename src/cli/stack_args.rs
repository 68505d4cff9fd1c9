//! The stack-file arguments every stack command takes: a positional file, overlays and `--set`.

use std::path::PathBuf;

use clap::Args;

use super::UsageError;
use crate::stack::{self, Loaded, Sources};

#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// The stack file (or give -f, repeatable, for overlays).
    #[arg(value_name = "STACK_FILE")]
    pub file: Option<PathBuf>,
    /// A stack file; repeat to overlay later files on earlier ones (mappings merge, lists and
    /// scalars are replaced). After STACK_FILE when both are given.
    #[arg(short = 'f', long = "file", id = "stack_files", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Set a value after the files are merged, as `path.to.key=value` (repeatable); validated
    /// like the file.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
}

impl StackArgs {
    /// True when no stack file was given (commands that also take `--stack NAME`).
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.files.is_empty()
    }

    pub fn sources(&self) -> Result<Sources, UsageError> {
        if self.is_empty() {
            return Err(UsageError(
                "give a stack file: STACK_FILE, or -f FILE (repeatable, for overlays)".into(),
            ));
        }
        Ok(Sources {
            files: self.file.iter().chain(&self.files).cloned().collect(),
            sets: self.set.clone(),
        })
    }

    /// Reads, merges, interpolates (from this process's environment) and validates, including
    /// that every file `iac` renders from the stack can be rendered (so no AWS call is made for
    /// a stack whose user-data or app spec could never be written).
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let env = |name: &str| std::env::var(name).ok();
        Ok(stack::layers::load(
            &self.sources()?,
            &env,
            &super::render::findings,
        )?)
    }

    /// The files, for messages.
    pub fn describe(&self) -> String {
        let files: Vec<String> = self
            .file
            .iter()
            .chain(&self.files)
            .map(|f| f.display().to_string())
            .collect();
        files.join(" + ")
    }
}
