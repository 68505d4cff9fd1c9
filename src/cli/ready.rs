//! `up` waits until the app really serves: every instance it launched has reported its boot
//! ready (`aws::boot_report`), no instance of the stack reports a failed boot, the tier's own
//! conditions hold (healthy targets, the scaler's pool), an instance refresh this `up` started
//! has ended well, and, on AWS itself, the public address answers HTTP. A live line per
//! instance says where it is (`web-1: 4/6 app (1m20s)`).
//!
//! On a failed boot, `up` stops at once and names the instance, its step and its log's tail. At
//! the deadline, it names what is missing; for an instance that never reported, it shows the
//! tail of its console output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::logs::{self, BootRow};
use super::output::Printer;
use crate::apply::wait::{self, Backoff, Poll, WaitError};
use crate::apply::{Event, Reporter};
use crate::aws::boot_report::BootState;
use crate::aws::{autoscaling, ec2, elbv2, Aws};
use crate::plan::{Facts, Kind, ResourceId};
use crate::stack::Stack;
use crate::tiers::Readiness;

/// Lines of a log or console output shown for an instance.
const TAIL_LINES: usize = 30;

/// What `up` waits for, besides what the tier asks.
pub struct WaitFor {
    /// Instances that ran before this `up` and were kept: their boot may predate boot reports,
    /// so they need not report; a failed or unfinished report still counts.
    pub kept: BTreeSet<String>,
    pub deadline: Duration,
    /// Probe the public address over HTTP (never under an endpoint override: emulated
    /// addresses are not reachable).
    pub probe_http: bool,
    /// When this `up` began (seconds since the Unix epoch): a refresh started since is its own.
    pub since_s: i64,
}

/// Why the app is not (yet) up: one line per cause, the lines under it indented.
#[derive(Debug, Default)]
struct Findings {
    /// Causes that will not go away by waiting (a failed boot, a rolled back refresh).
    fatal: Vec<String>,
    /// Instances still booting, with their current step.
    booting: Vec<String>,
    /// What else is still awaited, with the current status.
    pending: Vec<String>,
    /// Instances that never reported, by id (for their console output at the deadline).
    silent: Vec<(String, String)>,
}

/// The per-instance progress line's key and text.
fn progress(row: &BootRow, seen_for: Duration) -> String {
    match &row.report {
        None => format!("no boot report yet (EC2: {})", row.ec2_state),
        Some(r) => format!("{} ({})", r.step, short(seen_for)),
    }
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The name shown for a row: its stack name, with the instance id when several share it (the
/// instances of a group or of the scaler's pool).
fn label(row: &BootRow, rows: &[BootRow]) -> String {
    if rows.iter().filter(|r| r.name == row.name).count() > 1 {
        format!("{} {}", row.name, row.instance_id)
    } else {
        row.name.clone()
    }
}

/// A failed boot, as `up` prints it: the instance, the step, the exit code and the log's tail.
fn failed_boot(label: &str, row: &BootRow) -> Option<String> {
    let r = row
        .report
        .as_ref()
        .filter(|r| r.state == BootState::Failed)?;
    let mut text = format!(
        "{label} ({}): boot FAILED in step {} (exit {})",
        row.instance_id,
        r.step,
        r.exit.map_or_else(|| "?".to_string(), |c| c.to_string())
    );
    for l in r.log.iter().rev().take(TAIL_LINES).rev() {
        text.push_str(&format!("\n    | {l}"));
    }
    Some(text)
}

/// Tracks since when each instance has been in its current step.
#[derive(Default)]
struct Steps(BTreeMap<String, (String, Instant)>);

impl Steps {
    fn seen_for(&mut self, row: &BootRow) -> Duration {
        let step = row
            .report
            .as_ref()
            .map(|r| r.step.clone())
            .unwrap_or_default();
        let entry = self
            .0
            .entry(row.instance_id.clone())
            .or_insert_with(|| (step.clone(), Instant::now()));
        if entry.0 != step {
            *entry = (step, Instant::now());
        }
        entry.1.elapsed()
    }
}

/// Everything one look needs.
struct Watch<'a> {
    aws: &'a Aws,
    stack: &'a Stack,
    facts: &'a Facts,
    outputs: &'a BTreeMap<String, String>,
    ready: Readiness,
    wf: WaitFor,
    steps: Mutex<Steps>,
    reporter: &'a dyn Reporter,
    started: Instant,
}

/// One look at everything `up` waits for.
async fn look(w: &Watch<'_>) -> anyhow::Result<Findings> {
    let Watch {
        aws,
        stack,
        facts,
        outputs,
        ready,
        wf,
        steps,
        reporter,
        started,
    } = w;
    let deadline = wf.deadline;
    let mut f = Findings::default();
    let rows: Vec<BootRow> = logs::rows(aws, stack.name())
        .await?
        .into_iter()
        .filter(|r| r.ec2_state == "running" || r.ec2_state == "pending")
        .collect();
    for row in &rows {
        let label = label(row, &rows);
        if let Some(text) = failed_boot(&label, row) {
            f.fatal.push(text);
            continue;
        }
        let state = row.report.as_ref().map(|r| r.state);
        let kept = wf.kept.contains(&row.instance_id);
        let waiting = match state {
            Some(BootState::Ready) => false,
            None => !kept,
            Some(_) => true,
        };
        if !waiting {
            continue;
        }
        let seen_for = steps
            .lock()
            .map(|mut s| s.seen_for(row))
            .unwrap_or_default();
        let status = progress(row, seen_for);
        reporter.event(&Event::Waiting {
            id: ResourceId::new(&label),
            what: "its boot".to_string(),
            status: status.clone(),
            elapsed_s: started.elapsed().as_secs(),
            deadline_s: deadline.as_secs(),
        });
        if row.report.is_none() {
            f.silent.push((label, row.instance_id.clone()));
        } else {
            f.booting
                .push(format!("{label} ({}): {status}", row.instance_id));
        }
    }
    if let Some((name, n)) = ready.ready_at_least {
        let count = rows
            .iter()
            .filter(|r| r.name == name)
            .filter(|r| {
                r.report
                    .as_ref()
                    .is_some_and(|r| r.state == BootState::Ready)
            })
            .count();
        if count < n as usize {
            f.pending.push(format!(
                "{name}: {count} of at least {n} report their boot ready"
            ));
        }
    }
    if let (Some(n), Some(tg)) = (
        ready.healthy_targets,
        facts.values().find(|f| f.kind == Kind::TargetGroup),
    ) {
        let health = elbv2::target_health(aws, &tg.physical_id).await?;
        let healthy = health.iter().filter(|(_, s, _)| s == "healthy").count();
        if healthy < n as usize {
            let others: Vec<String> = health
                .iter()
                .filter(|(_, s, _)| s != "healthy")
                .map(|(id, s, why)| {
                    format!(
                        "{id} {s}{}",
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(" ({why})")
                        }
                    )
                })
                .collect();
            f.pending.push(format!(
                "target group {}: {healthy} of at least {n} targets healthy{}",
                target_group_name(&tg.physical_id),
                if others.is_empty() {
                    String::new()
                } else {
                    format!("; {}", others.join(", "))
                }
            ));
        }
    }
    if let Some(g) = facts.values().find(|f| f.kind == Kind::AutoScalingGroup) {
        refresh(aws, &g.physical_id, wf, &mut f).await?;
    }
    if wf.probe_http && f.fatal.is_empty() {
        if let (Some(port), Some(host)) = (
            ready.http_port,
            outputs
                .get("load_balancer_dns")
                .or_else(|| outputs.get("public_ip")),
        ) {
            let name = stack.spec.domain.as_ref().map(|d| d.name.as_str());
            let path = &stack.spec.app.health_path;
            match super::probe::get_status(host, port, name.unwrap_or(host), path).await {
                Ok(code) if (200..400).contains(&code) => {}
                Ok(code) => f
                    .pending
                    .push(format!("http://{host}:{port}{path}: HTTP {code}")),
                Err(e) => f.pending.push(format!("http://{host}:{port}{path}: {e}")),
            }
        }
    }
    Ok(f)
}

/// A target group's name, from its ARN (`...:targetgroup/NAME/ID`); the ARN when it has none.
fn target_group_name(arn: &str) -> &str {
    arn.split_once(":targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or(arn)
}

/// The group's latest refresh, when this `up` started it: in progress is pending; failed,
/// cancelled or rolled back is fatal, with AWS's reason and the group's last activities.
async fn refresh(aws: &Aws, group: &str, wf: &WaitFor, f: &mut Findings) -> anyhow::Result<()> {
    // An endpoint without instance refreshes started none either.
    let Ok(latest) = autoscaling::observed_refresh(aws, group).await? else {
        return Ok(());
    };
    let Some(r) = latest.filter(|r| r.started_s.is_some_and(|t| t >= wf.since_s)) else {
        return Ok(());
    };
    if r.in_progress() {
        f.pending.push(format!(
            "instance refresh {}: {} ({}% done, {} instance(s) left)",
            r.id, r.status, r.percent, r.instances_to_update
        ));
    } else if !r.succeeded() {
        let mut text = format!(
            "instance refresh {} of {group} ended {}{}",
            r.id,
            r.status,
            r.reason
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        );
        if let Ok(acts) = autoscaling::activities(aws, group, 5).await {
            for (status, what) in acts {
                text.push_str(&format!("\n    | {status}: {what}"));
            }
        }
        f.fatal.push(text);
    }
    Ok(())
}

/// Waits until the stack's app is up, or fails saying why.
pub async fn wait(
    printer: &Printer,
    aws: &Aws,
    stack: &Stack,
    facts: &Facts,
    outputs: &BTreeMap<String, String>,
    wf: WaitFor,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let deadline = wf.deadline;
    let w = Watch {
        aws,
        stack,
        facts,
        outputs,
        ready: crate::tiers::readiness(stack),
        wf,
        steps: Mutex::new(Steps::default()),
        reporter,
        started: Instant::now(),
    };
    let last = Mutex::new(Findings::default());
    let id = ResourceId::new("app");
    let res = wait::until(
        &id,
        "the app to come up",
        deadline,
        Backoff {
            first: Duration::from_secs(2),
            fraction: 0.1,
            max: Duration::from_secs(10),
        },
        reporter,
        || {
            let (w, last) = (&w, &last);
            async move {
                let f = look(w).await?;
                if !f.fatal.is_empty() {
                    return Err(anyhow::anyhow!(f.fatal.join("\n")));
                }
                let booting = f.booting.len() + f.silent.len();
                if f.pending.is_empty() && booting == 0 {
                    return Ok(Poll::Ready(()));
                }
                let mut status = f.pending.clone();
                if booting > 0 {
                    status.push(format!("{booting} instance(s) booting"));
                }
                let status = status.join("; ");
                if let Ok(mut l) = last.lock() {
                    *l = f;
                }
                Ok(Poll::Pending(status))
            }
        },
    )
    .await;
    let started = w.started;
    match res {
        Ok(()) => {
            printer.line(format!(
                "The app is up ({} after the changes).",
                short(started.elapsed())
            ));
            Ok(())
        }
        Err(WaitError::Poll(e)) => Err(anyhow::anyhow!(
            "the app did not come up:\n{e}\n  help: `iac logs` shows every instance's boot; fix the cause and run `iac up` again"
        )),
        Err(WaitError::Timeout { waited, .. }) => {
            let last = last.into_inner().unwrap_or_default();
            let mut text = format!("the app did not come up within {}:", short(waited));
            for p in last.booting.iter().chain(&last.pending) {
                text.push_str(&format!("\n  {p}"));
            }
            for (label, id) in &last.silent {
                match ec2::console_tail(aws, id, TAIL_LINES).await {
                    Ok(lines) if !lines.is_empty() => {
                        text.push_str(&format!("\n  {label} ({id}) never reported; its console output ends:"));
                        for l in lines {
                            text.push_str(&format!("\n    | {l}"));
                        }
                    }
                    Ok(_) => text.push_str(&format!(
                        "\n  {label} ({id}) never reported, and EC2 has no console output for it yet"
                    )),
                    Err(e) => text.push_str(&format!(
                        "\n  {label} ({id}) never reported; its console output could not be read: {e}"
                    )),
                }
            }
            text.push_str("\n  help: `iac logs --follow` shows the boots as they go on; `iac up --wait-timeout 30m` waits longer");
            Err(anyhow::anyhow!(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::boot_report::BootReport;

    fn row(name: &str, id: &str, report: Option<&str>) -> BootRow {
        BootRow {
            name: name.to_string(),
            instance_id: id.to_string(),
            ec2_state: "running".to_string(),
            report: report.map(|r| BootReport::parse(id, r)),
        }
    }

    #[test]
    fn a_failed_boot_names_the_step_and_shows_the_last_lines_only() {
        let log: Vec<String> = (1..=40).map(|i| format!("\"line {i}\"")).collect();
        let failed = row(
            "web-2",
            "i-2",
            Some(&format!(
                r#"{{"state":"failed","step":"4/4 app","exit":3,"log":[{}]}}"#,
                log.join(",")
            )),
        );
        let text = failed_boot("web-2", &failed).expect("failed");
        assert!(text.starts_with("web-2 (i-2): boot FAILED in step 4/4 app (exit 3)"));
        assert_eq!(text.lines().count(), 1 + TAIL_LINES);
        assert!(text.ends_with("| line 40") && !text.contains("| line 10\n"));
        let running = row("web-1", "i-1", Some(r#"{"state":"running","step":"2/4"}"#));
        assert!(failed_boot("web-1", &running).is_none());
        assert!(failed_boot("web-1", &row("web-1", "i-1", None)).is_none());
    }

    #[test]
    fn instances_sharing_a_name_are_told_apart_by_id() {
        let rows = [
            row("vm", "i-0", None),
            row("web", "i-1", None),
            row("web", "i-2", None),
        ];
        assert_eq!(label(&rows[0], &rows), "vm");
        assert_eq!(label(&rows[2], &rows), "web i-2");
        assert_eq!(short(Duration::from_secs(80)), "1m20s");
        assert_eq!(short(Duration::from_secs(9)), "9s");
    }

    #[test]
    fn a_target_group_is_named_by_its_name() {
        assert_eq!(
            target_group_name(
                "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/shop-tg/0123456789abcdef"
            ),
            "shop-tg"
        );
        assert_eq!(target_group_name("tg-1"), "tg-1");
    }
}
