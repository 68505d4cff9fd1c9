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

/// The monitor process, stopped if the test fails before it stops by itself: SIGTERM first, so
/// that its local agents stop with it, SIGKILL if it does not exit.
struct Monitor(Child);

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_status(stack: &Path, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    wait_status_with(iac, stack, want)
}

/// [`wait_status`] with `iac` as `base` makes it.
fn wait_status_with(
    base: impl Fn() -> Command,
    stack: &Path,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let mut c = base();
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
    // The token the monitor was given in its environment is not passed on to its agents.
    let procs = processes();
    let agents = agents_of(&procs, monitor.0.id());
    assert_eq!(agents.len(), 2);
    hidden_from(&agents, TOKEN);

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

/// `iac` without a token in its environment, its runtime files under `runtime`.
fn iac_in(runtime: &Path) -> Command {
    let mut c = iac();
    c.env_remove("IAC_SCALER_TOKEN")
        .env("XDG_RUNTIME_DIR", runtime);
    c
}

/// A process: its id, its parent's id, its command line and its environment.
type Process = (u32, u32, Vec<u8>, Vec<u8>);

/// Every process this user can look at.
fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let dir = entry.path();
        let (Ok(stat), Ok(cmdline), Ok(environ)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read(dir.join("cmdline")),
            std::fs::read(dir.join("environ")),
        ) else {
            continue; // gone, or another user's
        };
        // The parent's id is the second field after the command name, which ends at the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, cmdline, environ));
    }
    out
}

/// The agent processes the monitor `pid` runs.
fn agents_of(procs: &[Process], pid: u32) -> Vec<Process> {
    let agents: Vec<Process> = procs.iter().filter(|p| p.1 == pid).cloned().collect();
    for (_, _, cmdline, _) in &agents {
        let cmdline = String::from_utf8_lossy(cmdline);
        assert!(cmdline.contains("iac-agent"), "not an agent: {cmdline}");
    }
    agents
}

/// Fails if `token` is in a command line or an environment of `procs`.
fn hidden_from(procs: &[Process], token: &str) {
    let shows = |bytes: &[u8]| bytes.windows(token.len()).any(|w| w == token.as_bytes());
    for (pid, _, cmdline, environ) in procs {
        let what = String::from_utf8_lossy(cmdline).replace('\0', " ");
        assert!(
            !shows(cmdline),
            "the token is in the command line of {pid}: {what}"
        );
        assert!(
            !shows(environ),
            "the token is in the environment of {pid}: {what}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_local_fleets_token_lives_in_a_private_directory_and_in_no_argv_or_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tempfile::tempdir().expect("runtime dir");
    let stack = local_stack(dir.path(), free_port(), free_port());
    let mut c = iac_in(runtime.path());
    c.args(["scale", "--custom-monitor"])
        .arg(&stack)
        .args(["--fleet", "local", "--stop-after", "120", "--agent-bin"])
        .arg(common::agent_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut monitor = Monitor(c.spawn().expect("start the monitor"));
    // The agents registered and stream heartbeats: the token reached them.
    let base = || iac_in(runtime.path());
    wait_status_with(base, &stack, |p| {
        p["pool"] == 2
            && p["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["state"] == "healthy"))
    });

    // The monitor made the token in $XDG_RUNTIME_DIR/iac, closed to everyone else.
    let private = runtime.path().join("iac");
    let file = private.join("cli-scaler.scaler-token");
    assert_eq!(mode(&private), 0o700);
    assert_eq!(mode(&file), 0o600);
    let token = std::fs::read_to_string(&file).expect("token file");
    let token = token.trim();
    assert!(token.len() >= 16, "{token:?}");
    // Nothing of it in a shared temporary directory.
    let shared_tmp = std::env::temp_dir();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").expect("/proc/self").uid()
    };
    assert!(!shared_tmp
        .join(format!("iac-{uid}/cli-scaler.scaler-token"))
        .exists());

    // No process shows it: not in a command line, not in an environment.
    let procs = processes();
    assert_eq!(agents_of(&procs, monitor.0.id()).len(), 2);
    hidden_from(&procs, token);

    let stopped = Command::new("kill")
        .args(["-TERM", &monitor.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(stopped.success());
    assert!(monitor.0.wait().expect("monitor exit").success());
}

#[test]
fn a_runtime_directory_open_to_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = tempfile::tempdir().expect("TMPDIR");
    let stack = local_stack(dir.path(), free_port(), free_port());
    // Without $XDG_RUNTIME_DIR the token goes to $TMPDIR/iac-<uid>; one made by someone else
    // first (here: open to everyone) is refused, not used.
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").expect("/proc/self").uid()
    };
    let planted = tmp.path().join(format!("iac-{uid}"));
    std::fs::create_dir(&planted).expect("mkdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let mut c = iac();
    c.env_remove("IAC_SCALER_TOKEN")
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", tmp.path())
        .args(["scale", "--custom-monitor"])
        .arg(&stack)
        .args(["--fleet", "local", "--stop-after", "1", "--agent-bin"])
        .arg(common::agent_bin());
    let (code, _, err) = output(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mode 0700"), "{err}");
    assert_eq!(std::fs::read_dir(&planted).expect("read").count(), 0);
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
