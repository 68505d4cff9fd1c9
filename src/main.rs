//! `iac` binary: parse, run, map the error to an exit code, print it once.

use std::process::ExitCode;

use clap::Parser;
use iac::cli::{self, Cli, Exit, Interrupted, UsageError};
use iac::stack::StackError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    init_tracing(cli.global.verbose, cli.global.log_aws_requests);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failure as u8);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(i) = err.chain().find_map(|e| e.downcast_ref::<Interrupted>()) {
        return i.code;
    }
    if err
        .chain()
        .any(|e| e.downcast_ref::<iac::aws::lock::LockHeld>().is_some())
    {
        return Exit::Locked as u8;
    }
    let usage = err.chain().any(|e| {
        e.downcast_ref::<UsageError>().is_some()
            || matches!(
                e.downcast_ref::<StackError>(),
                Some(StackError::Invalid(_)) | Some(StackError::Read { .. })
            )
    });
    if usage {
        Exit::Usage as u8
    } else {
        Exit::Failure as u8
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Targets that log AWS requests and responses, bodies included (so the secrets `iac` generates
/// and stores): kept quiet unless `--log-aws-requests` asks for them, whatever `-v` or `IAC_LOG`
/// say. A directive matches every target it prefixes (`aws` covers `aws_smithy_runtime`,
/// `aws_sdk_ssm`, ...).
const WIRE_TARGETS: &[&str] = &["aws", "hyper", "h2", "rustls", "tower", "reqwest"];

/// The log filter: `-v` info, `-vv` debug, `-vvv` trace, all for iac's own crates only;
/// `IAC_LOG` replaces it. The SDK's wire log only with `--log-aws-requests`.
fn log_filter(verbose: u8, env: Option<&str>, wire: bool) -> String {
    let mut filter = match (env, verbose) {
        (Some(env), _) => env.to_string(),
        (None, 0) => "warn".to_string(),
        (None, 1) => "iac=info".to_string(),
        (None, 2) => "iac=debug".to_string(),
        (None, _) => "iac=trace".to_string(),
    };
    for target in WIRE_TARGETS {
        let level = if wire { "trace" } else { "warn" };
        filter.push_str(&format!(",{target}={level}"));
    }
    filter
}

fn init_tracing(verbose: u8, wire: bool) {
    if wire {
        // Said before anything is logged, and on stderr whatever the output format.
        eprintln!(
            "warning: --log-aws-requests logs every AWS request and response in full, including \
             the passwords and tokens iac generates; never share or keep this log"
        );
    }
    let env = std::env::var("IAC_LOG").ok().filter(|v| !v.is_empty());
    let directives = log_filter(verbose, env.as_deref(), wire);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter(verbose, None, wire)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_wire_log_needs_its_own_flag() {
        assert_eq!(
            log_filter(3, None, false).split(',').next(),
            Some("iac=trace")
        );
        for f in [
            log_filter(3, None, false),
            log_filter(0, Some("trace"), false),
        ] {
            assert!(f.contains(",aws=warn"), "{f}");
            assert!(!f.contains("aws=trace"), "{f}");
        }
        assert!(log_filter(0, None, true).contains(",aws=trace"));
    }
}
