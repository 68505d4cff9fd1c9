//! `iac status`: every resource of the stack, its state, and the outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::table::Table;
use super::{down, Exit, Global};

use crate::apply::Reporter;
use crate::aws::provider::Applier;
use crate::aws::{ec2, provider, Aws, AwsError};
use crate::plan::{Details, Kind, Observed};
use crate::stack::{Stack, Tier};

pub async fn run(
    printer: &Printer,
    g: &Global,
    src: &StackArgs,
    stack: Option<&str>,
) -> anyhow::Result<Exit> {
    let started = std::time::Instant::now();
    let (name, region) = down::target(src, stack)?;
    let aws = Aws::connect(&g.aws(), region.as_deref()).await;
    // The kinds the stack recorded at its last `up` (every service when it has no record).
    let found = provider::discover_scoped(&aws, &name, &Default::default())
        .await
        .with_context(|| format!("discovering the resources tagged iac:stack={name}"))?;
    let pool = crate::tiers::custom_scaler::pool(&found.untracked);
    let loaded = if src.is_empty() {
        None
    } else {
        Some(src.load()?.stack)
    };
    lock_report(printer, &aws, &name).await?;
    let outputs = match &loaded {
        Some(stack) => crate::tiers::outputs(stack, &crate::plan::facts_of(&found.resources)),
        None => Default::default(),
    };
    if printer.json() {
        printer.record(&serde_json::json!({"event": "status", "stack": name, "region": aws.region, "resources": found.resources, "pool": pool}));
    } else if found.resources.is_empty() && pool.is_empty() {
        printer.line(format!(
            "Stack `{name}` has no resources in {}.",
            aws.region
        ));
    } else {
        printer.line(printer.bold(&format!("Stack `{name}` in {}:", aws.region)));
        // In creation order, the same on every run; the AWS id last: ARNs are long.
        let mut rows: Vec<&Observed> = found.resources.iter().collect();
        rows.sort_by(|a, b| a.listing_key().cmp(&b.listing_key()));
        let mut t = Table::new(2).header(&["KIND", "ID", "STATE", "AWS ID"]);
        for o in rows {
            t.row([o.kind.as_str(), o.id.as_str(), &o.state, &o.physical_id]);
        }
        printer.table(&t);
    }
    monitor_report(printer, &found.resources);
    if !printer.json() && !pool.is_empty() {
        pool_report(printer, &pool);
    }
    boot_states(printer, &aws, &name).await;
    let launched = crate::tiers::launched(&found.untracked, &found.resources);
    let root_gb = root_volume_sizes(&aws, found.resources.iter().chain(&launched))
        .await
        .context("reading the size of the instances' root volumes")?;
    super::plan::print_cost(
        printer,
        &aws.region,
        &crate::cost::items_from_observed(&found.resources, &launched, &root_gb),
    );
    printer.outputs(&outputs);
    if let Some(stack) = loaded.as_ref().filter(|s| s.spec.tier == Tier::Swarm) {
        swarm_report(printer, &aws, stack, &found.resources).await;
    }
    if loaded.as_ref().is_some_and(|s| s.spec.tier == Tier::AlbAsg) {
        group_report(printer, &aws, &found.resources).await?;
    }
    super::output::summary(printer, "status", &aws, started);
    Ok(Exit::Ok)
}

/// The size of the root volume of each of `instances`.
async fn root_volume_sizes(
    aws: &Aws,
    instances: impl Iterator<Item = &Observed>,
) -> Result<BTreeMap<String, u32>, AwsError> {
    let ids: BTreeSet<String> = instances
        .filter_map(|o| match &o.details {
            Details::Instance { root_volume_id, .. } => root_volume_id.clone(),
            _ => None,
        })
        .collect();
    ec2::volume_sizes(aws, &ids).await
}

/// Nodes and service replicas as the swarm leader reports them, through SSM Run Command (the
/// same channel updates use; no SSH). A failure here is reported, not fatal.
async fn swarm_report(printer: &Printer, aws: &Aws, stack: &Stack, found: &[Observed]) {
    let Some(leader) = found
        .iter()
        .find(|o| o.kind == Kind::Instance && o.id.as_str() == crate::tiers::swarm::LEADER)
    else {
        return;
    };
    let reporter: Arc<dyn Reporter> = Arc::from(printer.reporter());
    let applier = Applier::for_stack(aws.clone(), stack.name(), reporter);
    let script = crate::render::swarm::status_command(stack);
    match applier.run_and_wait(&leader.id, &leader.physical_id, &script, "iac: swarm status").await {
        Ok(out) if printer.json() => printer.record(&serde_json::json!({"event": "swarm_status", "leader": leader.physical_id, "output": out})),
        Ok(out) if out.trim().is_empty() => printer.line(format!("Swarm (from {}): no report yet", leader.physical_id)),
        Ok(out) => {
            printer.line(printer.bold(&format!("Swarm (from {}):", leader.physical_id)));
            for l in out.lines() {
                printer.line(format!("  {l}"));
            }
        }
        Err(e) => printer.line(format!("Swarm: the leader did not report: {e}")),
    }
}

/// Target health, the group's instance refresh and its recent activities.
async fn group_report(printer: &Printer, aws: &Aws, found: &[Observed]) -> anyhow::Result<()> {
    use crate::aws::{autoscaling, elbv2};
    let mut report = serde_json::Map::new();
    if let Some(tg) = found.iter().find(|o| o.kind == Kind::TargetGroup) {
        let health = elbv2::target_health(aws, &tg.physical_id).await?;
        let mut t = Table::new(2);
        for (id, state, reason) in &health {
            t.row([id, state, reason]);
        }
        if !t.is_empty() {
            printer.line(printer.bold("Targets:"));
            printer.table(&t);
        }
        report.insert("targets".into(), serde_json::json!(health));
    }
    if let Some(g) = found.iter().find(|o| o.kind == Kind::AutoScalingGroup) {
        // Best effort: a report that cannot be read does not hide the rest of the status.
        let refresh = match autoscaling::observed_refresh(aws, &g.physical_id).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(autoscaling::RefreshesMissing { why, .. })) => {
                printer.line(format!(
                    "Instance refresh: not implemented by the endpoint ({why})"
                ));
                report.insert("refresh_error".into(), why.into());
                Ok(None)
            }
            Err(e) => Err(e),
        };
        match refresh {
            Ok(Some(r)) => {
                printer.line(format!(
                    "Instance refresh: {} ({}% complete){}",
                    r.status,
                    r.percent,
                    r.reason
                        .as_deref()
                        .map(|w| format!(": {w}"))
                        .unwrap_or_default()
                ));
                report.insert(
                    "refresh".into(),
                    serde_json::json!({"status": r.status, "percent": r.percent, "reason": r.reason}),
                );
            }
            Ok(None) => {}
            Err(e) => {
                printer.line(format!("Instance refresh: unknown ({})", e.line()));
                report.insert("refresh_error".into(), e.line().into());
            }
        }
        match autoscaling::activities(aws, &g.physical_id, 5).await {
            Ok(acts) => {
                let mut t = Table::new(2);
                for (status, what) in &acts {
                    t.row([status, what]);
                }
                if !t.is_empty() {
                    printer.line(printer.bold("Recent group activities:"));
                    printer.table(&t);
                }
                report.insert("activities".into(), serde_json::json!(acts));
            }
            Err(e) => {
                printer.line(format!("Group activities: unknown ({})", e.line()));
                report.insert("activities_error".into(), e.line().into());
            }
        }
    }
    report.insert("event".into(), "group_status".into());
    printer.record(&serde_json::Value::Object(report));
    Ok(())
}

/// Each instance's boot state, from the reports the instances publish (`iac logs` shows the
/// steps and, on failure, the log). A failure here is reported, not fatal.
async fn boot_states(printer: &Printer, aws: &Aws, stack: &str) {
    match super::logs::rows(aws, stack).await {
        Ok(rows) if printer.json() => {
            for row in &rows {
                printer.record(&super::logs::record(row));
            }
        }
        Ok(rows) if rows.is_empty() => {}
        Ok(rows) => {
            printer.line(printer.bold("Boot (details: iac logs):"));
            let mut t = Table::new(2);
            for row in &rows {
                t.row(super::logs::summary_cells(row));
            }
            printer.table(&t);
        }
        Err(e) => printer.line(format!("Boot reports: unknown ({e:#})")),
    }
}

/// custom-scaler: the monitor VM's group of one, its capacity and the instance it has now.
fn monitor_report(printer: &Printer, found: &[Observed]) {
    let Some((group, desired, in_service)) = found.iter().find_map(|o| match &o.details {
        crate::plan::Details::AutoScalingGroup {
            desired,
            in_service,
            ..
        } if o.id.as_str() == crate::tiers::custom_scaler::MONITOR => {
            Some((&o.physical_id, *desired, in_service))
        }
        _ => None,
    }) else {
        return;
    };
    if printer.json() {
        printer.record(&serde_json::json!({"event": "monitor_group", "group": group, "desired": desired, "in_service": in_service}));
        return;
    }
    let now = if in_service.is_empty() {
        "none (the group is replacing it)".to_string()
    } else {
        in_service.join(", ")
    };
    printer.line(printer.bold(&format!(
        "Monitor group {group}: desired {desired}, {} in service; monitor VM: {now}",
        in_service.len()
    )));
}

/// custom-scaler: the instances the monitor launched (not resources of `iac up`).
fn pool_report(printer: &Printer, pool: &[Observed]) {
    let running = pool.iter().filter(|o| o.state == "running").count();
    printer.line(printer.bold(&format!(
        "Pool launched by the monitor: {} instance(s), {running} running:",
        pool.len()
    )));
    let mut t = Table::new(2);
    for o in pool {
        let ip = match &o.details {
            crate::plan::Details::Instance { private_ip, .. } => private_ip.as_deref(),
            _ => None,
        };
        t.row([o.physical_id.as_str(), &o.state, ip.unwrap_or("-")]);
    }
    printer.table(&t);
}

/// Who holds the stack lock, if anyone (status does not take it).
async fn lock_report(printer: &Printer, aws: &Aws, stack: &str) -> anyhow::Result<()> {
    let Some(seen) = crate::aws::lock::read(aws, stack).await? else {
        return Ok(());
    };
    let age = crate::lease::age(seen.age());
    let lease = if seen.expired() {
        "lease expired: the next `up` or `down` takes it over".to_string()
    } else if seen.expires_in() >= 0.0 {
        format!("lease renewed, ends in {:.0}s", seen.expires_in())
    } else {
        "lease just ended".to_string()
    };
    if printer.json() {
        printer.record(&serde_json::json!({"event": "lock", "stack": stack, "holder": seen.record.as_ref().map(|r| &r.holder), "operation": seen.operation(), "age_s": seen.age().as_secs(), "expired": seen.expired()}));
    } else {
        printer.line(format!(
            "Locked by {} running `{}` for {age} ({lease}).",
            seen.holder(),
            seen.operation()
        ));
    }
    Ok(())
}
