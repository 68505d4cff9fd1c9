//! Every tier's `up` and `down` through a proxy (bench/slow_proxy.py) that answers 10 % of the
//! calls with the service's throttling error and 5 % with a bare 503: both succeed, with the
//! same resources as a clean run, on `iac`'s own retry budget (the test environment's
//! `AWS_MAX_ATTEMPTS=2` is removed for these runs).

mod common;

use std::collections::BTreeSet;

use common::*;

fn iac(emu: &Emulator, url: &str, args: &[&str], file: &std::path::Path) -> Run {
    let mut c = emu.iac_at(url);
    c.env_remove("AWS_MAX_ATTEMPTS")
        .args(["-o", "json"])
        .args(args)
        .arg(file);
    run(c)
}

/// The stack's resources as (kind, logical id), from `status`.
fn census(emu: &Emulator, file: &std::path::Path) -> BTreeSet<(String, String)> {
    let r = iac(emu, &emu.url, &["status"], file);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.record("status")["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_string(),
                o["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `up` then `down` of `example`: once straight to the emulator, once through the faults.
async fn same_as_clean(example: &str, prefix: &str, seed: u64) {
    let emu = Emulator::start();
    let clean = StackFile::from_example(example, &format!("{prefix}-clean"), &[]);
    let faulty = StackFile::from_example(example, &format!("{prefix}-faulty"), &[]);

    let up = iac(&emu, &emu.url, &["up", "--yes"], clean.path());
    assert_eq!(up.code, 0, "clean up: {}", up.stderr);
    let want = census(&emu, clean.path());
    let down_args = ["down", "--yes", "--skip-final-snapshot"];
    let clean_down = iac(&emu, &emu.url, &down_args, clean.path());

    let proxy = AwsProxy::faulty(&emu, 0.10, 0.05, seed);
    let up = iac(&emu, &proxy.url, &["up", "--yes"], faulty.path());
    assert_eq!(up.code, 0, "up through the faults: {}", up.stderr);
    assert_eq!(
        census(&emu, faulty.path()),
        want,
        "same resources as the clean run"
    );
    let down = iac(&emu, &proxy.url, &down_args, faulty.path());
    assert_eq!(
        down.code, clean_down.code,
        "down through the faults:\n{}\nclean:\n{}",
        down.stderr, clean_down.stderr
    );
    let (throttled, unavailable) = proxy.injected();
    assert!(
        throttled > 0 && unavailable > 0,
        "the proxy injected faults: {throttled} throttled, {unavailable} unavailable"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn single_vm_through_throttling() {
    same_as_clean("stacks/bookstore-vm.yaml", "th-vm", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lb_vms_through_throttling() {
    same_as_clean("stacks/bookstore-lb-vms.yaml", "th-lb", 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_through_throttling() {
    same_as_clean("stacks/bookstore-swarm.yaml", "th-sw", 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alb_asg_through_throttling() {
    same_as_clean("stacks/bookstore-asg.yaml", "th-asg", 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_through_throttling() {
    same_as_clean("stacks/custom-scaler.yaml", "th-cs", 5).await;
}

/// An endpoint nobody answers on: `plan` fails with exit 1 and one error line plus its hint,
/// naming the call and the cause, never the SDK's Debug dump of the error chain.
#[test]
fn an_unreachable_endpoint_is_one_clear_line() {
    let emu = Emulator::start();
    let stack = StackFile::example("nowhere", &[]);
    let closed = format!("http://127.0.0.1:{}", free_port());
    // The test environment's AWS_MAX_ATTEMPTS=2 stays: the retry budget is not under test.
    let mut c = emu.iac_at(&closed);
    c.arg("plan").arg(stack.path());
    let r = run(c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stderr);
    assert!(lines[0].starts_with("error: "), "{}", r.stderr);
    assert!(
        lines[0].contains("failed: no answer: Connection refused"),
        "{}",
        r.stderr
    );
    assert!(lines[1].trim_start().starts_with("help: "), "{}", r.stderr);
    for dump in ["DispatchFailure", "ConnectorError", "{ ", "Some("] {
        assert!(!r.stderr.contains(dump), "{dump} in {}", r.stderr);
    }
}
