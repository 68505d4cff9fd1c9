//! `iac scale` as users run it: the monitor with the local fleet of real agent processes,
//! `status` / `add` / `remove` through its admin API, the live timeline files, and `simulate` on a
//! recorded trace (bad rows named, exit 2).

mod common;

use common::{free_port, root};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "cli-test-token-0123456789";

fn iac() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("iac"));
    c.current_dir(root())
        .env("CI", "true")
        .env("IAC_SCALER_TOKEN", TOKEN)
        .env_remove("AWS_ENDPOINT_URL");
    c
}

fn output(mut c: Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run iac");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A local-fleet custom-scaler stack with its ports on this machine.
fn local_stack(dir: &Path, grpc: u16, admin: u16) -> PathBuf {
    let text = format!(
        "name: cli-scaler
tier: custom-scaler
app:
  image: ghcr.io/acme/bookstore:1.0.0
  port: 5000
  health_path: /book/catalog
instance:
  instance_profile: LabInstanceProfile
scaler:
  fleet: local
  min: 2
  max: 3
  high: 80
  low: 5
  heartbeat_ms: 200
  dead_after_ms: 1000
  warmup_s: 0
  cooldown_out_s: 0
  monitor:
    port: {grpc}
    admin: 127.0.0.1:{admin}
"
    );
    let path = dir.join("cli-scaler.yaml");
    std::fs::write(&path, text).expect("write stack");
    path
}

/// The monitor process, killed if the test fails before it stops by itself.
struct Monitor(Child);

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_status(stack: &Path, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let mut c = iac();
        c.args(["-o", "json", "scale", "status"]).arg(stack);
        let (code, out, err) = output(c);
        if code == 0 {
            let v: serde_json::Value = out
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .find(|v: &serde_json::Value| v["event"] == "scale-status")
                .unwrap_or_else(|| panic!("no scale-status record in {out}"));
            if want(&v["pool"]) {
                return v["pool"].clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "status never matched; last: {code} {out} {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn monitor_with_the_local_fleet_status_add_remove_and_timeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = free_port();
    let stack = local_stack(dir.path(), free_port(), admin);
    let timeline = dir.path().join("timeline");
    let agent = common::agent_bin();
    let mut c = iac();
    c.args(["scale", "--custom-monitor"])
        .arg(&stack)
        .args(["--fleet", "local", "--stop-after", "120", "--timeline"])
        .arg(&timeline)
        .arg("--agent-bin")
        .arg(&agent)
        .args(["--agent-arg=--simulate", "--agent-arg=steady:30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut monitor = Monitor(c.spawn().expect("start the monitor"));

    let pool = wait_status(&stack, |p| {
        p["pool"] == 2
            && p["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["state"] == "healthy"))
    });
    assert_eq!(pool["min"], 2);

    // Text status names each member.
    let mut c = iac();
    c.args(["scale", "status"]).arg(&stack);
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pool 2 (min 2, max 3)") && out.contains("local-1"),
        "{out}"
    );

    let mut c = iac();
    c.args(["scale", "add"]).arg(&stack);
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("local-3: launched"), "{out}");
    let mut c = iac();
    c.args(["scale", "add"]).arg(&stack);
    let (code, _, err) = output(c);
    assert_eq!(code, 2, "adding beyond max is refused: {err}");
    assert!(err.contains("maximum of 3"), "{err}");

    let mut c = iac();
    c.args(["scale", "remove"]).arg(&stack).arg("local-1");
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "{out}{err}");
    wait_status(&stack, |p| {
        p["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["id"] != "local-1"))
    });

    // Without the right token nothing is shown.
    let mut c = iac();
    c.env("IAC_SCALER_TOKEN", "not-the-token-0123456789")
        .args(["scale", "status"])
        .arg(&stack);
    let (code, _, err) = output(c);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");

    // SIGTERM stops it cleanly: the timeline is written on the way out.
    let killed = Command::new("kill")
        .args(["-TERM", &monitor.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let status = monitor.0.wait().expect("monitor exit");
    assert!(status.success(), "the monitor failed");
    let csv = std::fs::read_to_string(timeline.join("timeline.csv")).expect("timeline.csv");
    assert!(csv.starts_with("seconds,avg_load,pool,decision\n"), "{csv}");
    assert!(csv.contains("manual add: local-3"), "{csv}");
    assert!(csv.contains("manual remove: local-1"), "{csv}");
    assert!(csv.contains("hold: average load 30.0%"), "{csv}");
    let svg = std::fs::read_to_string(timeline.join("timeline.svg")).expect("timeline.svg");
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
}

#[test]
fn simulate_compares_the_policy_with_both_baselines_and_names_bad_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = local_stack(dir.path(), 7700, 7701);
    let mut c = iac();
    c.args(["scale", "simulate"])
        .arg(&stack)
        .args(["--trace", "bench/traces/spike.csv", "--out"])
        .arg(dir.path().join("sim"));
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "{err}");
    for controller in ["policy", "fixed-threshold", "hpa"] {
        assert!(out.contains(controller), "{out}");
        assert!(dir.path().join(format!("sim/{controller}.svg")).exists());
    }
    let mut c = iac();
    c.args(["-o", "json", "scale", "simulate"])
        .arg(&stack)
        .args(["--trace", "bench/traces/spike.csv"]);
    let (code, out, _) = output(c);
    assert_eq!(code, 0);
    let records: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert!(
            r["instance_seconds"].as_f64().is_some_and(|v| v > 0.0),
            "{r}"
        );
        assert!(r["seconds_above_threshold"].as_f64().is_some(), "{r}");
    }

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "seconds,load\n0,50\n1,60\n2,lots\n").expect("write");
    let mut c = iac();
    c.args(["scale", "simulate"])
        .arg(&stack)
        .arg("--trace")
        .arg(&bad);
    let (code, _, err) = output(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("row 4"), "{err}");
}
