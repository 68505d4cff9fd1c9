//! Errors in a stack file, each pointing at a line and column and a YAML path.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One problem in a stack file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The stack file, as given on the command line.
    pub file: PathBuf,
    /// 1-based line; 0 when `file` is a command-line flag (`--set PATH=VALUE`).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted YAML path (`app.port`, `network.subnets[1]`); empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What would have been accepted.
    pub expected: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: the value came from the command line (`--set`), not from a file.
        if self.line == 0 {
            write!(f, "{}: ", self.file.display())?;
        } else {
            write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, "\n  expected: {expected}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

/// Every way loading a stack can fail.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("cannot read stack file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_diagnostics(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            // The first line gets its `error: ` from main, which prints the whole chain once.
            out.push_str("\nerror: ");
        }
        out.push_str(&d.to_string());
    }
    let n = diags.len();
    out.push_str(&format!(
        "\n{n} error{} in the stack file; nothing was sent to AWS",
        if n == 1 { "" } else { "s" }
    ));
    out
}
