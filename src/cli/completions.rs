//! `iac completions SHELL` and `iac man`: generated from the same clap definitions that parse
//! the arguments, so they cannot drift from the real flags.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Exit};

/// Shells `iac completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

impl From<CompletionShell> for Shell {
    fn from(s: CompletionShell) -> Shell {
        match s {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
            CompletionShell::Powershell => Shell::PowerShell,
        }
    }
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: CompletionShell) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(Shell::from(shell), &mut cmd, "iac", &mut out);
    std::io::stdout()
        .lock()
        .write_all(&out)
        .context("writing the completion script")?;
    Ok(Exit::Ok)
}

/// Prints the man page (roff) on stdout: `iac man > iac.1`.
pub fn man() -> anyhow::Result<Exit> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("rendering the man page")?;
    std::io::stdout()
        .lock()
        .write_all(&out)
        .context("writing the man page")?;
    Ok(Exit::Ok)
}
