//! Boot reports end to end: `iac up` against the emulator, then the real boot script of each
//! role runs in the sandbox (fake root, stubs on PATH) as instances the emulator launched, with
//! an `aws` stub that sends `ssm put-parameter` of the boot reports to the emulator (through
//! boto3, the library the AWS CLI is built on). `iac logs` and `iac status` then read what the
//! real script reported. lb-vms web: ready, a failed image pull (the step and the log line), a
//! health check that never passes (failed, non-zero exit), `up --wait` on those reports. Every
//! other role (swarm manager and worker, alb-asg's web instances from the launch template's user
//! data, the custom scaler's monitor and agents): each step reported, and a failed step with its
//! log tail. No report holds a secret; `down` deletes them all.

mod common;
// Shared with the render tests, which use what this test does not.
#[allow(dead_code)]
#[path = "common/boot.rs"]
mod boot;
#[allow(dead_code)]
mod render_common;

use boot::{logs, Role, DB_PASSWORD};
use common::{instances_by_logical_id, run, run_ok, Emulator, Run, StackFile};

const STACK: &str = "br-lb";

async fn report_values(emu: &Emulator) -> Vec<String> {
    let out = emu
        .ssm()
        .await
        .get_parameters_by_path()
        .path(format!("/iac/{STACK}/boot/"))
        .send()
        .await
        .expect("list reports");
    out.parameters()
        .iter()
        .map(|p| p.value().unwrap_or_default().to_string())
        .collect()
}

/// The lb-vms example as STACK, up (without waiting: the emulator boots nothing), with the
/// instance ids by logical id.
async fn up_lb_vms(
    emu: &Emulator,
) -> (
    StackFile,
    common::Run,
    iac::stack::Stack,
    std::collections::BTreeMap<String, String>,
) {
    let file = StackFile::from_example("stacks/bookstore-lb-vms.yaml", STACK, &[]);
    let mut up = emu.iac();
    up.args(["up"]).arg(file.path()).arg("--yes");
    let r = run_ok(up);
    let stack = iac::stack::load(file.path()).expect("stack loads");
    let ids = instances_by_logical_id(&emu.ec2().await, STACK)
        .await
        .into_iter()
        .map(|(k, i)| (k, i.instance_id().unwrap_or_default().to_string()))
        .collect();
    (file, r, stack, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_status_show_what_the_real_boot_script_reported() {
    let emu = Emulator::start();
    let (file, _, stack, ids) = up_lb_vms(&emu).await;
    let (web1, web2) = (&ids["web-1"], &ids["web-2"]);

    // Before any boot: every instance is listed, none has a report.
    let (Run { code, .. }, boots) = logs(&emu, &file, &[]);
    assert_eq!(code, 0);
    assert_eq!(boots.len(), ids.len(), "{boots:?}");
    assert!(boots.iter().all(|b| b["state"] == "no report"), "{boots:?}");

    // web-1 boots: every step succeeds.
    let sb = boot::sandbox(&emu, &stack, Role::LbWeb).await;
    let out = sb.run_as(web1, &[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    let (Run { code, .. }, boots) = logs(&emu, &file, &["--instance", "web-1"]);
    assert_eq!(code, 0, "{boots:?}");
    assert_eq!(boots.len(), 1);
    let report = &boots[0]["report"];
    assert_eq!(boots[0]["state"], "ready", "{report}");
    assert_eq!(boots[0]["instance_id"], web1.as_str());
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "1/4 packages",
            "2/4 instance metadata",
            "3/4 database",
            "4/4 app"
        ],
        "every step, the early ones buffered until the aws CLI was there"
    );
    assert!(
        report.get("log").is_none(),
        "no log tail when ready: {report}"
    );

    // web-2 boots with an image the registry does not have: failed, in the app step, with
    // the pull's error in the log tail.
    let sb2 = boot::sandbox(&emu, &stack, Role::LbWeb).await;
    let out = sb2.run_as(web2, &[("STUB_PULL_FAIL", "1")]);
    assert!(!out.status.success(), "{}", sb2.explain(&out));
    let (Run { code, .. }, boots) = logs(&emu, &file, &["--role", "web"]);
    assert_eq!(code, 1, "a failed boot fails `logs`: {boots:?}");
    assert_eq!(boots.len(), 2, "web-1 and web-2: {boots:?}");
    let failed = boots
        .iter()
        .find(|b| b["instance_id"] == web2.as_str())
        .unwrap();
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["report"]["step"], "4/4 app");
    assert_ne!(failed["report"]["exit"], 0);
    let tail: Vec<&str> = failed["report"]["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(tail.len() <= 30, "{tail:?}");
    assert!(
        tail.iter().any(|l| l.contains("manifest unknown")),
        "{tail:?}"
    );
    assert!(
        tail.iter().any(|l| l.contains("FAILED in step 4/4 app")),
        "{tail:?}"
    );

    // The same in text: the instance, the step and the log line.
    let mut c = emu.iac();
    c.args(["logs"])
        .arg(file.path())
        .args(["--instance", web2.as_str()]);
    let r = run(c);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("web-2")
            && r.stdout.contains("failed")
            && r.stdout.contains("in step 4/4 app"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("manifest unknown"), "{}", r.stdout);

    // --follow returns at once when every shown instance's script has exited.
    let (Run { code, .. }, _) = logs(&emu, &file, &["--role", "web", "--follow"]);
    assert_eq!(code, 1);

    // The same VM again, whose new app never passes its health check: failed, non-zero.
    let out = sb2.run_as(web2, &[("STUB_UNHEALTHY_PORT", "5001")]);
    assert!(!out.status.success(), "{}", sb2.explain(&out));
    let (_, boots) = logs(&emu, &file, &["--instance", web2.as_str()]);
    assert_eq!(boots[0]["state"], "failed", "{boots:?}");
    assert_eq!(boots[0]["report"]["step"], "4/4 app");
    let tail = boots[0]["report"]["log"].to_string();
    assert!(tail.contains("is not healthy"), "{tail}");

    // `status` shows each instance's boot state.
    let mut c = emu.iac();
    c.args(["-o", "json", "status"]).arg(file.path());
    let r = run_ok(c);
    let states: std::collections::BTreeMap<String, String> = r
        .records()
        .into_iter()
        .filter(|v| v["event"] == "boot")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(states["web-1"], "ready", "{states:?}");
    assert_eq!(states["web-2"], "failed", "{states:?}");
    assert_eq!(states["db"], "no report", "{states:?}");

    // No report holds a secret the scripts read (the database password, the app's secret).
    let values = report_values(&emu).await;
    assert_eq!(values.len(), 2);
    for v in &values {
        assert!(
            !v.contains(DB_PASSWORD) && !v.contains(boot::APP_SECRET),
            "{v}"
        );
    }

    // A no-op `up` leaves the reports alone; `down` deletes them.
    let mut up = emu.iac();
    up.args(["up"]).arg(file.path()).arg("--yes");
    run_ok(up);
    assert_eq!(report_values(&emu).await.len(), 2);
    let mut down = emu.iac();
    down.args(["down"])
        .arg(file.path())
        .args(["--yes", "--delete-data"]);
    let r = run(down);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(report_values(&emu).await.is_empty());
}

/// `iac up --wait` against the emulator, `--wait` standing in for the local cloud that would
/// boot the instances: the real web script, run in the sandbox as each web VM, reports to the
/// emulator's SSM, and `up` waits on those reports.
fn up_wait(emu: &Emulator, file: &StackFile, timeout: &str) -> common::Run {
    let mut c = emu.iac();
    c.args(["up"])
        .arg(file.path())
        .args(["--yes", "--wait", "--wait-timeout", timeout]);
    run(c)
}

#[tokio::test(flavor = "multi_thread")]
async fn up_waits_for_the_boot_reports_and_says_why_the_app_is_not_up() {
    let emu = Emulator::start();
    // Under an endpoint override, `up` does not wait unless told to: the emulator boots nothing.
    let (file, r, stack, ids) = up_lb_vms(&emu).await;
    assert!(
        r.stdout.contains("not waiting for the app")
            || r.stderr.contains("not waiting for the app"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );

    // web-1 boots; web-2's image pull fails: `up` stops at once (well before its deadline),
    // naming the instance, the step and the log line. The balancer and the database ran
    // before this `up` and sent no report: they are not waited for.
    let sb1 = boot::sandbox(&emu, &stack, Role::LbWeb).await;
    let out = sb1.run_as(&ids["web-1"], &[]);
    assert!(out.status.success(), "{}", sb1.explain(&out));
    let sb2 = boot::sandbox(&emu, &stack, Role::LbWeb).await;
    let out = sb2.run_as(&ids["web-2"], &[("STUB_PULL_FAIL", "1")]);
    assert!(!out.status.success(), "{}", sb2.explain(&out));
    let r = up_wait(&emu, &file, "10m");
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!("web-2 ({})", ids["web-2"]))
            && r.stderr.contains("boot FAILED in step 4/4 app")
            && r.stderr.contains("manifest unknown"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("web-1"), "web-1 is fine: {}", r.stderr);

    // web-2 boots again; its new app never passes its health check: failed too.
    let out = sb2.run_as(&ids["web-2"], &[("STUB_UNHEALTHY_PORT", "5001")]);
    assert!(!out.status.success(), "{}", sb2.explain(&out));
    let r = up_wait(&emu, &file, "10m");
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("boot FAILED in step 4/4 app") && r.stderr.contains("is not healthy"),
        "{}",
        r.stderr
    );

    // web-2 boots again, and this time well: the app is up.
    let out = sb2.run_as(&ids["web-2"], &[]);
    assert!(out.status.success(), "{}", sb2.explain(&out));
    let r = up_wait(&emu, &file, "10m");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("The app is up"), "{}", r.stdout);

    // A third web VM that never reports: the deadline, naming it, with its console output.
    file.rewrite(&[("count: 2", "count: 3")]);
    let r = up_wait(&emu, &file, "4s");
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let web3 = instances_by_logical_id(&emu.ec2().await, STACK)
        .await
        .into_iter()
        .find(|(k, _)| k == "web-3")
        .and_then(|(_, i)| i.instance_id().map(str::to_string))
        .expect("web-3 launched");
    assert!(
        r.stderr.contains("the app did not come up within")
            && r.stderr.contains(&format!("web-3 ({web3}) never reported"))
            // moto's console output: a kernel's boot lines.
            && r.stderr.contains("Kernel command line"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("web-2 ("), "{}", r.stderr);

    let mut down = emu.iac();
    down.args(["down"])
        .arg(file.path())
        .args(["--yes", "--delete-data"]);
    let r = run(down);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

/// alb-asg: `up` follows the instance refresh it started (moto has none: the strict layer
/// answers the refresh calls as AWS does, and the group's scaling activities, of which moto
/// answers none) and fails when the refresh ends rolled back, failed or cancelled, with AWS's
/// reason and the group's activities.
#[tokio::test(flavor = "multi_thread")]
async fn up_fails_when_the_instance_refresh_it_started_does_not_succeed() {
    let emu = Emulator::start();
    let activity = "Terminating EC2 instance: i-0abc, the new instance failed its ELB health check";
    let table = |outcome: &str, reason: &str| {
        serde_json::json!({
            "refresh": {"outcome": outcome, "reason": reason, "after": 1},
            "activities": [{"status": "Successful", "description": activity}],
        })
    };
    let strict = common::StrictAws::start(&emu, table("Successful", ""));
    let name = "br-asg";
    let file = StackFile::from_example("stacks/bookstore-asg.yaml", name, &[]);
    let iac = |args: &[&str]| {
        let mut c = emu.iac_at(&strict.url);
        c.arg("up").arg(file.path()).arg("--yes").args(args);
        run(c)
    };
    let r = iac(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let outcomes = [
        (
            "RollbackSuccessful",
            "Rollback completed: the new instances failed their health checks",
        ),
        (
            "Failed",
            "Instance refresh failed: the new instances failed their health checks",
        ),
        ("Cancelled", "Instance refresh was cancelled by a user"),
    ];
    for (n, (outcome, reason)) in outcomes.into_iter().enumerate() {
        strict.set(table(outcome, reason));
        // A new image: a new template version and a refresh, which does not succeed.
        let (refresh, version) = (n + 1, n + 2);
        file.rewrite(&[(
            &format!("bookstore:1.{n}.0"),
            &format!("bookstore:1.{}.0", n + 1),
        )]);
        let r = iac(&["--wait", "--wait-timeout", "10m"]);
        assert_eq!(r.code, 1, "{outcome}: {}\n{}", r.stdout, r.stderr);
        let all = format!("{}\n{}", r.stdout, r.stderr);
        // To the new template version, with AWS's automatic rollback to the one the group ran.
        assert!(
            all.contains(&format!(
                "rolling instance refresh refresh-{refresh} to launch template version {version} started"
            )) && all.contains("rolls back to version 1 if it fails"),
            "{outcome}: {all}"
        );
        // Followed while it ran, then the outcome with AWS's reason and the group's activities.
        assert!(
            all.contains(&format!("instance refresh refresh-{refresh}: InProgress")),
            "{outcome}: {all}"
        );
        assert!(
            r.stderr.contains(&format!(
                "instance refresh refresh-{refresh} of {name}-asg ended {outcome}: {reason}\n    | Successful: {activity}"
            )),
            "{outcome}: {}",
            r.stderr
        );

        // AWS left the group on version 1: the next plan says so and refreshes again.
        let mut plan = emu.iac_at(&strict.url);
        plan.args(["plan"]).arg(file.path());
        let r = run(plan);
        assert!(
            r.stdout.contains(&format!(
                "runs launch template version 1, the template's default is {version} (an instance refresh failed or rolled back)"
            )),
            "{outcome}: {}\n{}",
            r.stdout,
            r.stderr
        );
    }

    let mut down = emu.iac_at(&strict.url);
    down.args(["down"])
        .arg(file.path())
        .args(["--yes", "--delete-data", "--skip-final-snapshot"]);
    let r = run(down);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

// ---------------------------------------------------------------------------------------------
// Every role's real boot script reports

/// A role of a tier: its name in `iac logs --role`, the steps its script reports, and a way to
/// make one of them fail (the environment, the step, a line of the log's tail).
struct RoleCase {
    role: Role,
    name: &'static str,
    steps: &'static [&'static str],
    fail: Option<Fail>,
}

/// A failure: the environment that makes it, the step that fails, a line of the log's tail.
type Fail = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

/// A tier's example stack and the roles its instances boot as.
struct TierCase {
    example: &'static str,
    stack: &'static str,
    roles: &'static [RoleCase],
}

const SWARM: TierCase = TierCase {
    example: "stacks/bookstore-swarm.yaml",
    stack: "br-swarm",
    roles: &[
        RoleCase {
            role: Role::SwarmManager,
            name: "manager",
            steps: &[
                "1/5 packages",
                "2/5 instance metadata",
                "3/5 swarm",
                "4/5 join tokens and service",
                "5/5 https",
            ],
            fail: None,
        },
        RoleCase {
            role: Role::SwarmWorker,
            name: "worker",
            steps: &["1/3 packages", "2/3 instance metadata", "3/3 swarm"],
            fail: Some((
                &[("STUB_JOIN_FAIL", "always"), ("IAC_JOIN_ATTEMPTS", "2")],
                "3/3 swarm",
                "FAILED to join the swarm",
            )),
        },
    ],
};

const ALB_ASG: TierCase = TierCase {
    example: "stacks/bookstore-asg.yaml",
    stack: "br-asg",
    roles: &[RoleCase {
        role: Role::AlbWeb,
        // The group tags its instances with their role (`iac:role`).
        name: "web",
        steps: &[
            "1/6 packages",
            "2/6 instance metadata and parameters",
            "3/6 shared storage",
            "4/6 settings and secrets",
            "5/6 app container",
            "6/6 health check",
        ],
        fail: Some((
            &[("STUB_PULL_FAIL", "1")],
            "5/6 app container",
            "manifest unknown",
        )),
    }],
};

const CUSTOM_SCALER: TierCase = TierCase {
    example: "stacks/custom-scaler.yaml",
    stack: "br-scaler",
    roles: &[
        RoleCase {
            role: Role::ScalerMonitor,
            name: "monitor",
            steps: &[
                "1/4 packages",
                "2/4 the iac binary",
                "3/4 configuration",
                "4/4 the monitor",
            ],
            fail: Some((
                &[("STUB_DOWNLOAD", "#!/bin/sh\necho another build\n")],
                "2/4 the iac binary",
                "REFUSED https://",
            )),
        },
        RoleCase {
            role: Role::ScalerAgent,
            name: "agent",
            steps: &[
                "1/7 packages",
                "2/7 the agent binary",
                "3/7 settings and secrets",
                "4/7 app container",
                "5/7 health check",
                "6/7 the agent",
                "7/7 registration",
            ],
            fail: Some((
                &[("STUB_UNREGISTERED", "1")],
                "7/7 registration",
                "has not registered with the monitor",
            )),
        },
    ],
};

/// `up` of the tier's example, then each role's real boot script run as one of the role's
/// instances: `iac logs` shows the failed step and the log's tail of a run made to fail, then
/// every step of a run that succeeds, read from the emulator where the script reported.
async fn every_role_reports(tier: &TierCase) {
    let emu = Emulator::start();
    let file = boot::stack_file(tier.example, tier.stack, &[]);
    let r = boot::up(&emu, &file, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let stack = iac::stack::load(file.path()).expect("stack loads");
    if tier.stack == CUSTOM_SCALER.stack {
        // The monitor launches the pool; one instance as it would.
        common::launch_pool_instance(&emu.ec2().await, tier.stack).await;
    }
    for case in tier.roles {
        let id = &boot::role_instances(&emu, &file, case.name)[0];
        let env = boot::run_env(case.role);
        let env = boot::refs(&env);
        if let Some((fail_env, step, line)) = case.fail {
            let sb = boot::sandbox(&emu, &stack, case.role).await;
            let mut env = env.clone();
            env.extend_from_slice(fail_env);
            let out = sb.run_as(id, &env);
            assert!(!out.status.success(), "{}: {}", case.name, sb.explain(&out));
            let (r, boots) = logs(&emu, &file, &["--instance", id]);
            assert_eq!(r.code, 1, "{}: {}\n{}", case.name, r.stdout, r.stderr);
            let report = &boots[0]["report"];
            assert_eq!(boots[0]["state"], "failed", "{}: {report}", case.name);
            assert_eq!(report["step"], step, "{}: {report}", case.name);
            assert!(report["exit"].as_i64().is_some_and(|c| c != 0), "{report}");
            assert!(
                report["log"].to_string().contains(line),
                "{}: {report}",
                case.name
            );
            // In text too: the instance, the step, the log line.
            let mut c = emu.iac();
            c.arg("logs").arg(file.path()).args(["--instance", id]);
            let r = run(c);
            assert!(
                r.code == 1
                    && r.stdout.contains(id.as_str())
                    && r.stdout.contains(&format!("in step {step}"))
                    && r.stdout.contains(line),
                "{}: {}\n{}",
                case.name,
                r.stdout,
                r.stderr
            );
        }
        let sb = boot::sandbox(&emu, &stack, case.role).await;
        let out = sb.run_as(id, &env);
        assert!(out.status.success(), "{}: {}", case.name, sb.explain(&out));
        let (r, boots) = logs(&emu, &file, &["--instance", id]);
        assert_eq!(r.code, 0, "{}: {}\n{}", case.name, r.stdout, r.stderr);
        let report = &boots[0]["report"];
        assert_eq!(boots[0]["state"], "ready", "{}: {report}", case.name);
        assert_eq!(boot::steps(report), case.steps, "{}: {report}", case.name);
        assert!(report.get("log").is_none(), "{report}");
    }
    // No report holds a secret the scripts read.
    let reports = emu
        .ssm()
        .await
        .get_parameters_by_path()
        .path(format!("/iac/{}/boot/", tier.stack))
        .send()
        .await
        .expect("list reports");
    assert_eq!(reports.parameters().len(), tier.roles.len());
    for p in reports.parameters() {
        let v = p.value().unwrap_or_default();
        assert!(
            !v.contains(boot::APP_SECRET) && !v.contains(DB_PASSWORD),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_managers_and_workers_report_their_boot() {
    every_role_reports(&SWARM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alb_asg_web_instances_report_their_boot_from_the_launch_template() {
    every_role_reports(&ALB_ASG).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_monitor_and_agents_report_their_boot() {
    every_role_reports(&CUSTOM_SCALER).await;
}
