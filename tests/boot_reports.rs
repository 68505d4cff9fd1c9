//! Boot reports end to end: `iac up` (lb-vms) against the emulator, then the real rendered boot
//! script of the web VMs runs in the sandbox (fake root, stubs on PATH) as each of the
//! instances the emulator launched, with an `aws` stub that sends `ssm put-parameter` of the
//! boot reports to the emulator (through boto3, the library the AWS CLI is built on). `iac
//! logs` and `iac status` then read what the real script reported: ready, a failed image pull
//! (the step and the log line), a health check that never passes (failed, non-zero exit). No
//! report holds a secret; `down` deletes them all.

mod common;
// Shared with the render tests, which use what this test does not.
#[allow(dead_code)]
mod render_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{instances_by_logical_id, moto_server, run, run_ok, Emulator, StackFile};
use render_common::{manifest_dir, Sandbox, Setup, HOST_TOOLS};
use serde_json::Value;

const STACK: &str = "br-lb";
const DB_PASSWORD: &str = "db-pa55word-never-reported";

/// `aws`: boot reports go to the emulator; every other call is the usual stub's.
const AWS_FORWARD: &str = r#"#!/bin/bash
if [ "${1:-} ${2:-}" = "ssm put-parameter" ]; then
  name='' value='' prev=''
  for a in "$@"; do
    case $prev in --name) name=$a ;; --value) value=$a ;; esac
    prev=$a
  done
  case $name in
    /iac/*/boot/*)
      printf 'aws %s\n' "$*" >>"$STUB_LOG"
      exec "$STUB_PYTHON" -c '
import sys, boto3
name, path, url = sys.argv[1:4]
ssm = boto3.client("ssm", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
ssm.put_parameter(Name=name, Value=open(path).read(), Type="String", Overwrite=True)
' "$name" "${value#file://}" "$STUB_EMULATOR"
      ;;
  esac
fi
exec "$STUB_REAL_AWS" "$@"
"#;

/// The web VMs' script in a sandbox whose `aws` (once installed) publishes boot reports to
/// the emulator named at run time (`boot_as`).
fn web_sandbox(stack: &iac::stack::Stack) -> Sandbox {
    let setup = Setup {
        host_tools: HOST_TOOLS,
        // Installed by the script's first step: the reports wait for it.
        missing: &["aws"],
        extra_stubs: &[("aws", AWS_FORWARD)],
        env: &[
            ("IAC_HEALTH_WAIT_SECONDS", "1"),
            ("IAC_HEALTH_POLL_SECONDS", "1"),
            ("IAC_RETRY_SLEEP", "0"),
        ],
        ..Setup::UBUNTU
    };
    let script = iac::render::lb_vms::web(stack).expect("web renders").script;
    let sb = Sandbox::new(&setup, &script);
    // The usual aws stub answers the reads, from the sandbox's parameter files.
    let real = sb.base.join("aws-stub");
    fs::create_dir_all(&real).unwrap();
    for f in ["aws", "_lib.sh"] {
        fs::copy(manifest_dir().join("tests/stubs").join(f), real.join(f)).unwrap();
        fs::set_permissions(real.join(f), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let p = |leaf: &str| iac::render::param_name(STACK, leaf);
    sb.param(&p("app"), &iac::render::app_spec::app_spec(stack).unwrap());
    sb.param(&p("db-host"), "10.0.9.9");
    sb.param(&p("db-password"), DB_PASSWORD);
    sb
}

/// Runs the script as instance `id`.
fn boot_as(emu: &Emulator, sb: &Sandbox, id: &str, env: &[(&str, &str)]) -> std::process::Output {
    let python = moto_server().with_file_name("python");
    let real = sb.base.join("aws-stub/aws");
    let mut all: Vec<(&str, &str)> = vec![
        ("STUB_INSTANCE_ID", id),
        ("STUB_EMULATOR", &emu.url),
        ("STUB_PYTHON", python.to_str().unwrap()),
        ("STUB_REAL_AWS", real.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    sb.run(&all)
}

/// The `boot` records of `iac -o json logs` (and its exit code).
fn logs(emu: &Emulator, file: &StackFile, args: &[&str]) -> (i32, Vec<Value>) {
    let mut c = emu.iac();
    c.args(["-o", "json", "logs"]).arg(file.path()).args(args);
    let r = run(c);
    let boots = r
        .records()
        .into_iter()
        .filter(|v| v["event"] == "boot")
        .collect();
    (r.code, boots)
}

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
    let (code, boots) = logs(&emu, &file, &[]);
    assert_eq!(code, 0);
    assert_eq!(boots.len(), ids.len(), "{boots:?}");
    assert!(boots.iter().all(|b| b["state"] == "no report"), "{boots:?}");

    // web-1 boots: every step succeeds.
    let sb = web_sandbox(&stack);
    let out = boot_as(&emu, &sb, web1, &[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    let (code, boots) = logs(&emu, &file, &["--instance", "web-1"]);
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
    let sb2 = web_sandbox(&stack);
    let out = boot_as(&emu, &sb2, web2, &[("STUB_PULL_FAIL", "1")]);
    assert!(!out.status.success(), "{}", sb2.explain(&out));
    let (code, boots) = logs(&emu, &file, &["--role", "web"]);
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
    let (code, _) = logs(&emu, &file, &["--role", "web", "--follow"]);
    assert_eq!(code, 1);

    // The same VM again, whose new app never passes its health check: failed, non-zero.
    let out = boot_as(&emu, &sb2, web2, &[("STUB_UNHEALTHY_PORT", "5001")]);
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
            !v.contains(DB_PASSWORD) && !v.contains("s3cr3t-value"),
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
    let sb1 = web_sandbox(&stack);
    let out = boot_as(&emu, &sb1, &ids["web-1"], &[]);
    assert!(out.status.success(), "{}", sb1.explain(&out));
    let sb2 = web_sandbox(&stack);
    let out = boot_as(&emu, &sb2, &ids["web-2"], &[("STUB_PULL_FAIL", "1")]);
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
    let out = boot_as(
        &emu,
        &sb2,
        &ids["web-2"],
        &[("STUB_UNHEALTHY_PORT", "5001")],
    );
    assert!(!out.status.success(), "{}", sb2.explain(&out));
    let r = up_wait(&emu, &file, "10m");
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("boot FAILED in step 4/4 app") && r.stderr.contains("is not healthy"),
        "{}",
        r.stderr
    );

    // web-2 boots again, and this time well: the app is up.
    let out = boot_as(&emu, &sb2, &ids["web-2"], &[]);
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
/// answers the refresh calls as AWS does) and fails when the refresh ends rolled back, with
/// AWS's reason.
#[tokio::test(flavor = "multi_thread")]
async fn up_fails_when_the_instance_refresh_it_started_rolls_back() {
    let emu = Emulator::start();
    let reason = "Rollback completed: the new instances failed their health checks";
    let strict = common::StrictAws::start(
        &emu,
        serde_json::json!({"refresh": {"outcome": "RollbackSuccessful", "reason": reason, "after": 1}}),
    );
    let name = "br-asg";
    let file = StackFile::from_example("stacks/bookstore-asg.yaml", name, &[]);
    let iac = |args: &[&str]| {
        let mut c = emu.iac_at(&strict.url);
        c.arg("up").arg(file.path()).arg("--yes").args(args);
        run(c)
    };
    let r = iac(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // A new image: a new template version and a refresh, which rolls back.
    file.rewrite(&[("bookstore:1.0.0", "bookstore:1.1.0")]);
    let r = iac(&["--wait", "--wait-timeout", "10m"]);
    eprintln!("{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}\n{}", r.stdout, r.stderr);
    // To the new template version, with AWS's automatic rollback to the one the group ran.
    assert!(
        all.contains("rolling instance refresh refresh-1 to launch template version 2 started")
            && all.contains("rolls back to version 1 if it fails"),
        "{all}"
    );
    // Followed while it ran, then the outcome with AWS's reason.
    assert!(
        all.contains("instance refresh refresh-1: InProgress"),
        "{all}"
    );
    assert!(
        r.stderr.contains(&format!(
            "instance refresh refresh-1 of {name}-asg ended RollbackSuccessful: {reason}"
        )),
        "{}",
        r.stderr
    );

    // AWS left the group on version 1: the next plan says so and refreshes again.
    let mut plan = emu.iac_at(&strict.url);
    plan.args(["plan"]).arg(file.path());
    let r = run(plan);
    assert!(
        r.stdout.contains(
            "runs launch template version 1, the template's default is 2 (an instance refresh failed or rolled back)"
        ),
        "{}\n{}",
        r.stdout,
        r.stderr
    );

    let mut down = emu.iac_at(&strict.url);
    down.args(["down"])
        .arg(file.path())
        .args(["--yes", "--delete-data", "--skip-final-snapshot"]);
    let r = run(down);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}
