//! Command-line interface: clap types and one module per command.

mod completions;
mod down;
mod locked;
mod logs;
pub mod output;
mod plan;
mod probe;
mod ready;
mod render;
mod scale;
mod stack_args;
mod status;
mod table;
mod unlock;
mod up;
mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::aws::AwsOptions;
pub use locked::Interrupted;
use output::{Format, Printer};
pub use stack_args::StackArgs;

/// Process exit codes (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// A failure while talking to the cloud, or resources left behind.
    Failure = 1,
    /// Invalid input or usage: nothing was sent to AWS.
    Usage = 2,
    /// `plan --detailed-exitcode`: there are changes.
    Changes = 3,
    /// `down`: everything was deleted except data kept on purpose (volumes, file systems);
    /// `--delete-data` deletes them too.
    DataKept = 4,
    /// `up` / `down`: the stack is locked by another run (see `--lock-wait`, `iac unlock`).
    Locked = 5,
}

/// `--lock-wait`, `--wait-timeout`: a duration (`30s`, `10m`, `1h`).
fn lock_wait(s: &str) -> Result<std::time::Duration, String> {
    crate::lease::parse_duration(s)
}

/// A usage error found after argument parsing (e.g. missing `--yes` off a terminal).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "iac",
    version,
    about = "Provision a containerized web app onto AWS from one YAML stack file",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// AWS region (overrides the stack file and the environment).
    #[arg(long, global = true, env = "IAC_REGION")]
    pub region: Option<String>,
    /// AWS shared-config profile.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Send AWS requests to this endpoint (LocalStack, moto). `AWS_ENDPOINT_URL` works too.
    /// HTTP readiness probes are off while an override is in effect.
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// Output format: `text` for people, `json` for NDJSON events and a final outputs object,
    /// `markdown` for a CI job summary (`plan -o markdown >> "$GITHUB_STEP_SUMMARY"`).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// More logging of iac itself (-v info, -vv debug, -vvv trace), on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also log every AWS request and response in full (the SDK's wire log). They include
    /// secrets such as the passwords and tokens iac generates: never share such a log.
    #[arg(long, global = true)]
    pub log_aws_requests: bool,
}

impl Global {
    pub fn aws(&self) -> AwsOptions {
        AwsOptions {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a stack file without calling AWS.
    Validate {
        #[command(flatten)]
        src: StackArgs,
    },
    /// Show what `up` would change.
    Plan {
        #[command(flatten)]
        src: StackArgs,
        /// Exit 0 when there is nothing to do, 3 when there are changes.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Show what moving the image alias to its newest image would replace.
        #[arg(long)]
        refresh_image: bool,
        /// Also list the resources that stay as they are (by default only counted; `-o json`
        /// always holds every resource).
        #[arg(long)]
        show_unchanged: bool,
    },
    /// Create or converge a stack.
    Up {
        #[command(flatten)]
        src: StackArgs,
        /// Do not ask for confirmation (required when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// How many resource operations may run at once. A new VM's Elastic IP and data
        /// volume are started beside them, as soon as the run may create them.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallelism: u16,
        /// Return once the changes are applied, without waiting for the instances to report
        /// their boot and the app to answer.
        #[arg(long, conflicts_with = "wait")]
        no_wait: bool,
        /// Wait for the boot reports even under an endpoint override (an emulator whose
        /// instances a local cloud boots; scripts/realboot). Without it, an endpoint override
        /// skips the wait: an emulator boots nothing by itself.
        #[arg(long)]
        wait: bool,
        /// How long to wait for the app to come up (`90s`, `15m`, `1h`).
        #[arg(long, value_name = "DURATION", value_parser = lock_wait, default_value = "15m")]
        wait_timeout: std::time::Duration,
        /// Apply even changes that destroy data without moving it (the plan lists them as
        /// `data loss`); refused without this flag.
        #[arg(long)]
        allow_data_loss: bool,
        /// When another run holds the stack lock, wait this long for it (`30s`, `10m`, `1h`)
        /// instead of failing at once with exit code 5.
        #[arg(long, value_name = "DURATION", value_parser = lock_wait, default_value = "0")]
        lock_wait: std::time::Duration,
        /// Move the image alias (`ubuntu-24.04`, ...) to its newest image, replacing the
        /// instances that run an older one (the stack otherwise keeps the image it runs).
        #[arg(long)]
        refresh_image: bool,
        /// Also list the resources that stay as they are in the plan shown before applying (by
        /// default only counted).
        #[arg(long)]
        show_unchanged: bool,
    },
    /// Delete everything tagged with the stack, then check that nothing is left.
    Down {
        /// The stack file(s) (or use --stack).
        #[command(flatten)]
        src: StackArgs,
        /// The stack name, when the file is gone.
        #[arg(long, conflicts_with_all = ["file", "stack_files", "set"])]
        stack: Option<String>,
        /// Do not ask for confirmation (required when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// How many deletions may run at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallelism: u16,
        /// Also delete data: volumes and file systems (kept by default, so a later `up` finds
        /// the data again).
        #[arg(long)]
        delete_data: bool,
        /// Delete Aurora clusters without taking a final snapshot first.
        #[arg(long)]
        skip_final_snapshot: bool,
        /// When another run holds the stack lock, wait this long for it (`30s`, `10m`, `1h`)
        /// instead of failing at once with exit code 5.
        #[arg(long, value_name = "DURATION", value_parser = lock_wait, default_value = "0")]
        lock_wait: std::time::Duration,
        /// How long a deletion keeps retrying while AWS says something still uses the resource
        /// (DependencyViolation) before `down` fails (`30s`, `10m`, `1h`; by default 5 minutes,
        /// and 30 for security groups, whose load balancer's interfaces can take 20 to go).
        #[arg(long, value_name = "DURATION", value_parser = lock_wait)]
        dependency_timeout: Option<std::time::Duration>,
    },
    /// Break a stack's lock left by a run that is gone (a lost laptop, a killed CI job).
    Unlock {
        /// The stack file (or use --stack).
        #[arg(required_unless_present = "stack")]
        file: Option<PathBuf>,
        /// The stack name.
        #[arg(long, conflicts_with = "file")]
        stack: Option<String>,
        /// Do not ask for confirmation (required when not on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Show each resource of the stack, its state and the outputs.
    Status {
        #[command(flatten)]
        src: StackArgs,
        /// The stack name, when the file is gone.
        #[arg(long, conflicts_with_all = ["file", "stack_files", "set"])]
        stack: Option<String>,
    },
    /// Show each instance's boot report: its state (starting, running, ready, failed), its
    /// current or failed step and, when it failed, the end of its boot log. Exits 1 when a
    /// shown instance's boot failed.
    Logs {
        #[command(flatten)]
        src: StackArgs,
        /// Only the instances of this role: `web` shows web-1, web-2... (names as in the NAME
        /// column).
        #[arg(long)]
        role: Option<String>,
        /// Only this instance: its EC2 id or its name.
        #[arg(long)]
        instance: Option<String>,
        /// Keep looking (every 3s), printing each step as it is reported, until every shown
        /// instance is ready or failed.
        #[arg(long)]
        follow: bool,
    },
    /// Print exactly the user-data an instance receives.
    Render {
        #[command(flatten)]
        src: StackArgs,
        /// Print each file the script writes instead of the script.
        #[arg(long)]
        files: bool,
        /// For tiers with several kinds of VM: which one (lb-vms: balancer, web, database;
        /// swarm: manager-1, manager, worker).
        #[arg(long)]
        role: Option<String>,
    },
    /// The custom scaler: run its monitor (`--custom-monitor STACK_FILE`), show or change a running
    /// monitor's pool (`status`, `add`, `remove`), or replay a load trace (`simulate`).
    Scale(Box<scale::ScaleArgs>),
    /// Print the JSON Schema of stack files (for editors).
    Schema,
    /// Print a shell completion script: `iac completions bash > /etc/bash_completion.d/iac`.
    Completions {
        #[arg(value_enum)]
        shell: completions::CompletionShell,
    },
    /// Print the man page (roff): `iac man > iac.1; man -l iac.1`.
    Man,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let printer = Printer::new(cli.global.output);
    let g = &cli.global;
    match &cli.command {
        Command::Validate { src } => validate::run(&printer, src),
        Command::Plan {
            src,
            detailed_exitcode,
            refresh_image,
            show_unchanged,
        } => {
            plan::run(
                &printer,
                g,
                src,
                *detailed_exitcode,
                *refresh_image,
                *show_unchanged,
            )
            .await
        }
        Command::Up {
            src,
            yes,
            parallelism,
            no_wait,
            wait,
            wait_timeout,
            allow_data_loss,
            lock_wait,
            refresh_image,
            show_unchanged,
        } => {
            let opts = up::UpOptions {
                yes: *yes,
                parallelism: usize::from(*parallelism),
                wait: if *no_wait {
                    up::Wait::No
                } else if *wait {
                    up::Wait::Always
                } else {
                    up::Wait::Auto
                },
                wait_timeout: *wait_timeout,
                allow_data_loss: *allow_data_loss,
                lock_wait: *lock_wait,
                refresh_image: *refresh_image,
                show_unchanged: *show_unchanged,
            };
            up::run(&printer, g, src, opts).await
        }
        Command::Down {
            src,
            stack,
            yes,
            parallelism,
            delete_data,
            skip_final_snapshot,
            lock_wait,
            dependency_timeout,
        } => {
            let opts = down::DownOptions {
                yes: *yes,
                parallelism: usize::from(*parallelism),
                delete_data: *delete_data,
                skip_final_snapshot: *skip_final_snapshot,
                lock_wait: *lock_wait,
                dependency_timeout: *dependency_timeout,
            };
            down::run(&printer, g, src, stack.as_deref(), opts).await
        }
        Command::Unlock { file, stack, yes } => {
            unlock::run(&printer, g, file.as_deref(), stack.as_deref(), *yes).await
        }
        Command::Status { src, stack } => status::run(&printer, g, src, stack.as_deref()).await,
        Command::Logs {
            src,
            role,
            instance,
            follow,
        } => {
            let opts = logs::LogsOptions {
                role: role.clone(),
                instance: instance.clone(),
                follow: *follow,
            };
            logs::run(&printer, g, src, opts).await
        }
        Command::Render { src, files, role } => render::run(&printer, src, *files, role.as_deref()),
        Command::Scale(args) => scale::run(&printer, g, args).await,
        Command::Completions { shell } => completions::completions(*shell),
        Command::Man => completions::man(),
        Command::Schema => {
            use std::io::Write;
            // A closed pipe (`iac schema | head`) is an error here, which main treats as success.
            writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::to_string_pretty(&crate::stack::json_schema())?
            )?;
            Ok(Exit::Ok)
        }
    }
}
