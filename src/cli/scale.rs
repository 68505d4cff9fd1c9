//! `iac scale`: run the custom scaler's monitor (`--custom-monitor`), talk to a running one
//! (`status`, `add`, `remove`), or replay a load trace through the stack's policy (`simulate`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::output::Printer;
use super::table::Table;
use super::{Exit, Global, UsageError};
use crate::aws::Aws;
use crate::scaler::fleet::{Fleet, LocalFleet};
use crate::scaler::monitor::{self, timeline_csv, timeline_report, Shared};
use crate::scaler::simulate::{self, SimOptions};
use crate::scaler::{admin, ec2};
use crate::stack::model::{FleetKind, ScalerConf};
use crate::stack::{Stack, Tier};

/// The environment variable that carries the shared token (never a flag: `ps` shows flags).
pub const TOKEN_ENV: &str = "IAC_SCALER_TOKEN";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ScaleArgs {
    /// Run the monitor of this custom-scaler stack until interrupted (SIGINT / SIGTERM).
    #[arg(long, value_name = "STACK_FILE")]
    pub custom_monitor: Option<PathBuf>,
    /// Override the stack's `scaler.fleet`: `ec2` or `local` (agent processes on this machine).
    #[arg(long, value_parser = ["ec2", "local"])]
    pub fleet: Option<String>,
    /// Local fleet: the `iac-agent` binary (default: beside this `iac`, then on PATH).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Local fleet: an extra argument for every agent, repeatable (e.g. `--agent-arg=--simulate
    /// --agent-arg=sine:300`).
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Address of the gRPC endpoint (default: 0.0.0.0:<scaler.monitor.port> for ec2,
    /// 127.0.0.1:<port> for the local fleet).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Write the timeline here as `timeline.csv` and `timeline.svg`, refreshed every few seconds
    /// and on exit.
    #[arg(long, value_name = "DIR")]
    pub timeline: Option<PathBuf>,
    /// Serve the agents over TLS with this certificate (PEM; with --tls-key). Agents pin the CA
    /// that signed it (`iac-agent --ca-file`) and check the name `iac-monitor` on it.
    #[arg(long, value_name = "PEM_FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM), in a file only the monitor's user can read.
    #[arg(long, value_name = "PEM_FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Stop after this many seconds (demos and CI); default: run until interrupted.
    #[arg(long, value_name = "SECONDS")]
    pub stop_after: Option<u64>,
    #[command(subcommand)]
    pub action: Option<ScaleAction>,
}

#[derive(Debug, Subcommand)]
pub enum ScaleAction {
    /// Show the running monitor's pool (through its loopback admin API).
    Status { file: PathBuf },
    /// Launch one more instance (refused at `scaler.max`).
    Add { file: PathBuf },
    /// Drain, then terminate one instance (refused at `scaler.min`).
    Remove { file: PathBuf, id: String },
    /// Replay a load trace (`seconds,load` CSV) through the stack's policy in virtual time, beside
    /// a fixed-threshold loop and the Kubernetes HPA rule.
    Simulate {
        file: PathBuf,
        /// The trace: `seconds,load` rows, load in percent of one instance.
        #[arg(long)]
        trace: PathBuf,
        /// Seconds from launch until a new instance serves.
        #[arg(long, default_value_t = 60)]
        boot_secs: u64,
        /// Per-instance load counted as "above the threshold" in the report.
        #[arg(long, default_value_t = 70.0)]
        threshold: f64,
        /// Write each controller's timeline as CSV and SVG into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

pub async fn run(printer: &Printer, g: &Global, args: &ScaleArgs) -> anyhow::Result<Exit> {
    match (&args.custom_monitor, &args.action) {
        (Some(file), None) => monitor_main(printer, g, file, args).await,
        (None, Some(ScaleAction::Status { file })) => status(printer, g, file).await,
        (None, Some(ScaleAction::Add { file })) => {
            let (code, body) = call(g, file, "POST", "/members").await?;
            answer(printer, code, &body, "launched")
        }
        (None, Some(ScaleAction::Remove { file, id })) => {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(UsageError(format!("`{id}` is not an instance id")).into());
            }
            let (code, body) = call(g, file, "DELETE", &format!("/members/{id}")).await?;
            answer(printer, code, &body, "draining, then terminating")
        }
        (
            None,
            Some(ScaleAction::Simulate {
                file,
                trace,
                boot_secs,
                threshold,
                out,
            }),
        ) => simulate_main(printer, file, trace, *boot_secs, *threshold, out.as_deref()),
        _ => Err(UsageError(
            "say what to do: `iac scale --custom-monitor STACK_FILE`, or `iac scale status|add|remove|simulate STACK_FILE`".into(),
        )
        .into()),
    }
}

/// The stack and its `scaler` section; a stack of another tier is a usage error.
fn scaler_stack(file: &Path) -> anyhow::Result<(Stack, ScalerConf)> {
    let stack = crate::stack::load(file)?;
    if stack.spec.tier != Tier::CustomScaler {
        return Err(UsageError(format!(
            "{}: `iac scale` works on custom-scaler stacks; this one is `{}`",
            file.display(),
            stack.spec.tier.as_str()
        ))
        .into());
    }
    let conf = stack.spec.scaler.clone().unwrap_or_default();
    Ok((stack, conf))
}

fn fleet_kind(conf: &ScalerConf, flag: Option<&str>) -> FleetKind {
    match flag {
        Some("local") => FleetKind::Local,
        Some("ec2") => FleetKind::Ec2,
        _ => conf.fleet,
    }
}

/// Where the local fleet's token lives between a monitor and `iac scale status` on one machine:
/// a directory only this user can enter (`$XDG_RUNTIME_DIR/iac`, else `$TMPDIR/iac-<uid>`),
/// never a predictable path in a shared directory that another user could create first.
fn local_token_file(stack: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self")
        .context("finding this user's id (/proc/self)")?
        .uid();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("iac"),
        _ => std::env::temp_dir().join(format!("iac-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    // Whoever made it (us earlier, or someone else first) must be us, and nobody else may look in.
    let meta =
        std::fs::symlink_metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(UsageError(format!(
            "{} must be a directory owned by you and closed to others (mode 0700); remove it and retry",
            dir.display()
        ))
        .into());
    }
    Ok(dir.join(format!("{stack}.scaler-token")))
}

/// The shared token: `IAC_SCALER_TOKEN`; else, for the local fleet, this machine's token file
/// (created by the monitor); else the stack's SSM SecureString that `iac up` generated.
async fn token(
    g: &Global,
    stack: &Stack,
    kind: FleetKind,
    create_local: bool,
) -> anyhow::Result<String> {
    if let Ok(t) = std::env::var(TOKEN_ENV) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    if kind == FleetKind::Local {
        let path = local_token_file(stack.name())?;
        if let Ok(t) = std::fs::read_to_string(&path) {
            return Ok(t.trim().to_string());
        }
        if !create_local {
            return Err(UsageError(format!(
                "no token: set {TOKEN_ENV}, or start the monitor first (it writes {})",
                path.display()
            ))
            .into());
        }
        let t = crate::aws::ssm::generate_password()?;
        write_private(&path, &t)?;
        return Ok(t);
    }
    let aws = Aws::connect(&g.aws(), stack.spec.region.as_deref()).await;
    let name = format!(
        "{}{}",
        crate::aws::ssm::stack_path(stack.name()),
        crate::render::custom_scaler::TOKEN_PARAM
    );
    crate::aws::ssm::get_secure(&aws, &name)
        .await
        .with_context(|| format!("reading the scaler token {name}"))?
        .with_context(|| {
            format!("no scaler token at {name}: run `iac up` first, or set {TOKEN_ENV}")
        })
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn admin_addr(conf: &ScalerConf) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = conf.monitor.admin.parse().map_err(|_| {
        UsageError(format!(
            "scaler.monitor.admin `{}` is not an ip:port address",
            conf.monitor.admin
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(UsageError(format!(
            "scaler.monitor.admin `{addr}` is not a loopback address: the admin API never leaves this machine"
        ))
        .into());
    }
    Ok(addr)
}

fn agent_binary(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("iac-agent")));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("iac-agent"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            UsageError(
                "the local fleet needs the iac-agent binary: build it (`cargo build -p iac-agent`) or pass --agent-bin".into(),
            )
            .into()
        })
}

async fn monitor_main(
    printer: &Printer,
    g: &Global,
    file: &Path,
    args: &ScaleArgs,
) -> anyhow::Result<Exit> {
    let (stack, conf) = scaler_stack(file)?;
    let kind = fleet_kind(&conf, args.fleet.as_deref());
    let admin = admin_addr(&conf)?;
    let listen = args.listen.unwrap_or_else(|| {
        let ip = match kind {
            FleetKind::Ec2 => std::net::Ipv4Addr::UNSPECIFIED,
            FleetKind::Local => std::net::Ipv4Addr::LOCALHOST,
        };
        SocketAddr::from((ip, conf.monitor.port))
    });
    let token = token(g, &stack, kind, true).await?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            Some(monitor::TlsIdentity {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
            })
        }
        _ => None,
    };
    if tls.is_some() && kind == FleetKind::Local {
        return Err(UsageError(
            "--tls-cert is for agents on other machines: the local fleet's agents talk to the monitor on loopback (plaintext)".into(),
        )
        .into());
    }
    let policy = conf.policy();
    let shared = Shared::with_drain_deadline(
        policy,
        &token,
        Duration::from_secs(u64::from(conf.drain_timeout_s)),
    );
    let grpc = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening for agents on {listen}"))?;
    let grpc_addr = grpc.local_addr().context("reading the gRPC address")?;
    let admin_listener = tokio::net::TcpListener::bind(admin)
        .await
        .with_context(|| format!("listening for the admin API on {admin}"))?;
    let fleet: Arc<dyn Fleet> = match kind {
        FleetKind::Local => {
            let agent = agent_binary(args.agent_bin.as_deref())?;
            let url = format!("http://{grpc_addr}");
            Arc::new(LocalFleet::new(
                agent,
                &url,
                &token,
                args.agent_args.clone(),
            ))
        }
        FleetKind::Ec2 => {
            let aws = Aws::connect(&g.aws(), stack.spec.region.as_deref()).await;
            let (_, subnets) = crate::aws::provider::resolve_network(&aws, &stack.spec)
                .await
                .context("finding the stack's subnets")?;
            let subnets = subnets.into_iter().map(|(id, _)| id).collect();
            Arc::new(ec2::Ec2Fleet::new(
                aws,
                stack.name(),
                subnets,
                &stack.spec.tags,
            ))
        }
    };
    printer.line(format!(
        "monitor for `{}`: agents → {grpc_addr}, admin API → http://{admin} ({} fleet, pool {}..={})",
        stack.name(),
        kind.as_str(),
        conf.min,
        conf.max
    ));
    printer.record(&serde_json::json!({"event": "monitor", "stack": stack.name(), "grpc": grpc_addr.to_string(), "admin": admin.to_string(), "fleet": kind.as_str()}));

    let writer = args.timeline.clone().map(|dir| {
        let shared = shared.clone();
        let name = stack.name().to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Err(e) = write_timeline(&dir, &name, &shared) {
                    tracing::warn!(error = %e, "writing the timeline");
                }
            }
        })
    });
    let stop_after = args.stop_after;
    let shutdown = async move {
        let timer = async {
            match stop_after {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = sigterm() => {},
            _ = timer => {},
        }
    };
    let options = monitor::ServeOptions {
        tls,
        ..Default::default()
    };
    monitor::serve_with(
        shared.clone(),
        fleet.clone(),
        grpc,
        Some(admin_listener),
        &options,
        shutdown,
    )
    .await
    .context("running the monitor")?;
    if let Some(w) = writer {
        w.abort();
    }
    if let Some(dir) = &args.timeline {
        write_timeline(dir, stack.name(), &shared)?;
        printer.line(format!(
            "timeline: {} and {}",
            dir.join("timeline.csv").display(),
            dir.join("timeline.svg").display()
        ));
    }
    let s = shared.stats();
    let left = match kind {
        // Local agents are this process's children: they stop with it.
        FleetKind::Local => "the local agents stop with it",
        FleetKind::Ec2 => "the pool's instances keep running, and the next monitor adopts them",
    };
    printer.line(format!(
        "stopped: {} launched, {} terminated, {} heartbeats, {} refused; {left}",
        s.launches, s.terminations, s.heartbeats, s.refused
    ));
    drop(fleet);
    Ok(Exit::Ok)
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

fn write_timeline(dir: &Path, stack: &str, shared: &Shared) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rows = shared.timeline();
    // Write then rename, so a reader never sees half a file.
    for (name, content) in [
        ("timeline.csv", timeline_csv(&rows)),
        (
            "timeline.svg",
            crate::scaler::plot::timeline_svg(
                &timeline_report(&rows),
                &format!("{stack}: average load and pool size"),
            ),
        ),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(name))
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

async fn call(g: &Global, file: &Path, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let (stack, conf) = scaler_stack(file)?;
    let addr = admin_addr(&conf)?;
    let token = token(g, &stack, conf.fleet, false).await?;
    Ok(admin::request(addr, &token, method, path).await?)
}

fn answer(printer: &Printer, code: u16, body: &str, what: &str) -> anyhow::Result<Exit> {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::json!({"raw": body}));
    if printer.json() {
        printer.record(&serde_json::json!({"event": "scale", "status": code, "answer": value}));
    }
    if (200..300).contains(&code) {
        if !printer.json() {
            let id = value
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            printer.line(format!("{id}: {what}"));
        }
        return Ok(Exit::Ok);
    }
    let msg = value
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or(body)
        .to_string();
    if code == 409 {
        // At a bound, or already draining: the request itself was the problem.
        return Err(UsageError(format!("refused: {msg}")).into());
    }
    anyhow::bail!("the monitor answered {code}: {msg}")
}

async fn status(printer: &Printer, g: &Global, file: &Path) -> anyhow::Result<Exit> {
    let (code, body) = call(g, file, "GET", "/members").await?;
    if code != 200 {
        return answer(printer, code, &body, "");
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).context("the monitor's member list is not JSON")?;
    if printer.json() {
        printer.record(&serde_json::json!({"event": "scale-status", "pool": v}));
        return Ok(Exit::Ok);
    }
    printer.line(format!(
        "pool {} (min {}, max {}), monitor up {}s",
        v["pool"], v["min"], v["max"], v["uptime_s"]
    ));
    if let Some(members) = v["members"].as_array() {
        let mut table = Table::new(2).right(2);
        for m in members {
            let load = m["load"]
                .as_f64()
                .map_or("-".to_string(), |l| format!("{l:.1}%"));
            table.row([
                m["id"].as_str().unwrap_or_default().to_string(),
                m["state"].as_str().unwrap_or_default().to_string(),
                format!("load {load}"),
                format!("age {}s", m["age_s"]),
            ]);
        }
        printer.table(&table);
    }
    Ok(Exit::Ok)
}

fn simulate_main(
    printer: &Printer,
    file: &Path,
    trace_path: &Path,
    boot_secs: u64,
    threshold: f64,
    out: Option<&Path>,
) -> anyhow::Result<Exit> {
    let (stack, conf) = scaler_stack(file)?;
    if !(threshold.is_finite() && threshold > 0.0 && threshold <= 100.0) {
        return Err(UsageError(format!(
            "--threshold {threshold} is not a percentage in (0, 100]"
        ))
        .into());
    }
    let text = std::fs::read_to_string(trace_path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", trace_path.display())))?;
    let trace = simulate::load_trace(&text)
        .map_err(|e| UsageError(format!("{}: {e}", trace_path.display())))?;
    let policy = conf.policy();
    let opts = SimOptions {
        tick: policy.heartbeat,
        boot_time: Duration::from_secs(boot_secs),
        threshold,
    };
    let reports = simulate::compare(&trace, &policy, &opts);
    if printer.json() {
        for (name, r) in &reports {
            printer.record(&serde_json::json!({
                "event": "simulation", "controller": name,
                "seconds_above_threshold": r.seconds_above_threshold,
                "instance_seconds": r.instance_seconds,
                "max_instances": r.max_instances,
                "actions": r.decisions.len(),
            }));
        }
    } else {
        printer.line(format!(
            "{} on {} ({} rows, {} s boot, threshold {threshold} %):",
            stack.name(),
            trace_path.display(),
            trace.len(),
            boot_secs
        ));
        let mut table = Table::new(2)
            .header(&[
                "controller",
                "seconds above thresh.",
                "instance-seconds",
                "peak instances",
                "actions",
            ])
            .right(1)
            .right(2)
            .right(3)
            .right(4);
        for (name, r) in &reports {
            table.row([
                name.to_string(),
                format!("{:.0}", r.seconds_above_threshold),
                format!("{:.0}", r.instance_seconds),
                r.max_instances.to_string(),
                r.decisions.len().to_string(),
            ]);
        }
        printer.table(&table);
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, r) in &reports {
            std::fs::write(dir.join(format!("{name}.csv")), simulate::timeline_csv(r))
                .with_context(|| format!("writing into {}", dir.display()))?;
            std::fs::write(
                dir.join(format!("{name}.svg")),
                simulate::timeline_svg(r, &format!("{}: {name}", stack.name())),
            )
            .with_context(|| format!("writing into {}", dir.display()))?;
        }
    }
    Ok(Exit::Ok)
}
