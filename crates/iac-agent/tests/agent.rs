//! End-to-end tests: the real `iac-agent` binary against an in-test Monitor on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{http, http_with, wait_until, Agent, TestMonitor, TOKEN};
use iac_proto::Directive;
const WAIT: Duration = Duration::from_secs(15);

fn registered(mon: &TestMonitor) -> bool {
    mon.with(|s| !s.registers.is_empty())
}

fn heartbeat_count(mon: &TestMonitor) -> usize {
    mon.with(|s| s.heartbeats.len())
}

/// An agent for `instance` (with `extra` arguments) once it has sent `mon` two heartbeats.
fn heartbeating(mon: &TestMonitor, instance: &str, extra: &[&str]) -> Agent {
    let url = mon.url();
    let mut args = vec!["--monitor", url.as_str(), "--instance-id", instance];
    args.extend_from_slice(extra);
    let agent = Agent::spawn(Some(TOKEN), &args);
    assert!(
        wait_until(WAIT, || heartbeat_count(mon) >= 2),
        "no heartbeats:\n{}",
        agent.log()
    );
    agent
}

#[test]
fn registers_with_instance_id_and_token() {
    let mon = TestMonitor::start(TOKEN, 200);
    let agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            &mon.url(),
            "--instance-id",
            "i-0abc",
            "--label",
            "role=web",
        ],
    );
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 1),
        "no heartbeat:\n{}",
        agent.log()
    );
    mon.with(|s| {
        assert_eq!(s.refused, 0, "the token was refused");
        let r = &s.registers[0];
        assert_eq!(r.instance_id, "i-0abc");
        assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
        // Default address: the local IP used to reach the (loopback) monitor.
        assert_eq!(r.address, "127.0.0.1");
        assert_eq!(r.labels.get("role").map(String::as_str), Some("web"));
        assert_eq!(s.heartbeats[0].0.member_id, "m-1");
    });
}

#[test]
fn heartbeats_arrive_at_the_assigned_interval_with_increasing_seq() {
    let mon = TestMonitor::start(TOKEN, 200);
    // The token from a file this time (with the trailing newline files usually have).
    let dir = std::env::temp_dir().join(format!("iac-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let agent = Agent::spawn(
        None,
        &[
            "--monitor",
            &mon.url(),
            "--instance-id",
            "i-hb",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 12),
        "too few heartbeats:\n{}",
        agent.log()
    );
    mon.with(|s| {
        let hb = &s.heartbeats[..12];
        for (i, (h, _)) in hb.iter().enumerate() {
            assert_eq!(h.seq, i as u64 + 1, "seq must increase by one");
            assert_eq!(h.member_id, "m-1");
            assert!((0.0..=100.0).contains(&h.cpu_percent));
            assert!(h.mem_percent > 0.0 && h.mem_percent <= 100.0);
            assert!(h.sent_unix_ms > 0);
        }
        // Mean spacing after the first (sent at once on connect) ≈ the assigned 200 ms.
        let span = hb[11].1 - hb[1].1;
        let mean = span.as_secs_f64() * 1000.0 / 10.0;
        assert!(
            (150.0..=300.0).contains(&mean),
            "mean interval {mean} ms, expected ~200"
        );
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn metric_override_changes_reported_cpu_within_one_interval() {
    let interval = Duration::from_millis(300);
    let mon = TestMonitor::start(TOKEN, 300);
    let agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            &mon.url(),
            "--instance-id",
            "i-ovr",
            "--simulate",
            "steady:10",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = agent.admin_addr();
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 2),
        "no heartbeats:\n{}",
        agent.log()
    );
    assert!(mon.with(|s| s.heartbeats.iter().all(|(h, _)| h.cpu_percent == 10.0)));

    let set_at = Instant::now();
    assert_eq!(http(&admin, "POST", "/metric", "{\"cpu\": 85.5}").0, 200);
    assert!(
        wait_until(WAIT, || mon
            .with(|s| s.heartbeats.iter().any(|(h, _)| h.cpu_percent == 85.5))),
        "override never reported"
    );
    let first = mon.with(|s| {
        s.heartbeats
            .iter()
            .find(|(h, _)| h.cpu_percent == 85.5)
            .unwrap()
            .1
    });
    let took = first - set_at;
    assert!(
        took <= interval + Duration::from_millis(250),
        "override took {took:?}"
    );

    let (code, status) = http(&admin, "GET", "/status", "");
    assert_eq!(code, 200);
    for part in [
        "\"member_id\":\"m-1\"",
        "\"connected\":true",
        "\"override\":85.5",
        "\"instance_id\":\"i-ovr\"",
    ] {
        assert!(status.contains(part), "{part} missing from {status}");
    }

    // The form syntax works too, and DELETE goes back to the simulated value.
    assert_eq!(http(&admin, "POST", "/metric", "cpu=33").0, 200);
    assert!(wait_until(WAIT, || mon.with(|s| s
        .heartbeats
        .last()
        .unwrap()
        .0
        .cpu_percent
        == 33.0)));
    assert_eq!(http(&admin, "DELETE", "/metric", "").0, 200);
    assert!(wait_until(WAIT, || mon.with(|s| s
        .heartbeats
        .last()
        .unwrap()
        .0
        .cpu_percent
        == 10.0)));
    assert_eq!(http(&admin, "POST", "/metric", "{\"cpu\": 101}").0, 400);
    assert_eq!(http(&admin, "GET", "/nope", "").0, 404);
}

#[test]
fn sigterm_deregisters_and_exits_zero() {
    let mon = TestMonitor::start(TOKEN, 200);
    let mut agent = Agent::spawn(
        Some(TOKEN),
        &["--monitor", &mon.url(), "--instance-id", "i-term"],
    );
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 1),
        "no heartbeat:\n{}",
        agent.log()
    );
    agent.signal("TERM");
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent did not exit");
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    mon.with(|s| {
        assert_eq!(s.deregisters.len(), 1);
        assert_eq!(s.deregisters[0].member_id, "m-1");
        assert_eq!(s.deregisters[0].reason, "signal");
    });
}

#[test]
fn sigint_deregisters_and_exits_zero() {
    let mon = TestMonitor::start(TOKEN, 200);
    let mut agent = Agent::spawn(
        Some(TOKEN),
        &["--monitor", &mon.url(), "--instance-id", "i-int"],
    );
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 1),
        "no heartbeat:\n{}",
        agent.log()
    );
    agent.signal("INT");
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent did not exit");
    assert_eq!(status.code(), Some(0));
    assert_eq!(mon.with(|s| s.deregisters.len()), 1);
}

#[test]
fn admin_unregister_deregisters_and_exits_zero() {
    let mon = TestMonitor::start(TOKEN, 200);
    let mut agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            &mon.url(),
            "--instance-id",
            "i-unreg",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = agent.admin_addr();
    assert!(wait_until(WAIT, || heartbeat_count(&mon) >= 1));
    assert_eq!(http(&admin, "POST", "/unregister", "").0, 200);
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent did not exit");
    assert_eq!(status.code(), Some(0));
    mon.with(|s| {
        assert_eq!(s.deregisters.len(), 1);
        assert_eq!(s.deregisters[0].reason, "admin");
    });
}

#[test]
fn wrong_token_is_refused_and_retried_without_crashing() {
    let mon = TestMonitor::start(TOKEN, 200);
    let mut agent = Agent::spawn(
        Some("not-the-token"),
        &["--monitor", &mon.url(), "--instance-id", "i-bad"],
    );
    assert!(
        wait_until(WAIT, || mon.with(|s| s.refused >= 3)),
        "the agent did not keep retrying:\n{}",
        agent.log()
    );
    assert!(agent.is_running(), "the agent crashed:\n{}", agent.log());
    assert!(
        agent.wait_log("refused our token", WAIT),
        "not logged:\n{}",
        agent.log()
    );
    assert!(!registered(&mon));
    // Stopping while still unregistered is a clean exit too.
    agent.signal("TERM");
    assert_eq!(
        agent
            .wait_exit(Duration::from_secs(10))
            .expect("no exit")
            .code(),
        Some(0)
    );
}

#[test]
fn monitor_restart_leads_to_reregistration() {
    let mon = TestMonitor::start(TOKEN, 200);
    let port = mon.addr.port();
    let agent = heartbeating(&mon, "i-restart", &[]);
    mon.kill();
    // Down for a while: the agent must notice and retry without exiting.
    assert!(
        agent.wait_log("re-registering", WAIT),
        "break not noticed:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mon2 = TestMonitor::start_on(port, TOKEN, 200);
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon2) >= 2),
        "no re-registration after restart:\n{}",
        agent.log()
    );
    mon2.with(|s| {
        assert_eq!(s.registers[0].instance_id, "i-restart");
        // The restarted monitor numbers members from 1 again: heartbeats use the new id.
        assert_eq!(s.heartbeats.last().unwrap().0.member_id, "m-1");
        assert_eq!(
            s.heartbeats[0].0.seq, 1,
            "seq restarts with the new registration"
        );
    });
}

/// With `--give-up-after`, a monitor that went away and stays away makes the agent exit with
/// 75 (its systemd unit starts it again, and the start reads the monitor's address anew), and
/// only after that long: a monitor back within it is simply registered with again.
#[test]
fn a_monitor_gone_for_longer_than_give_up_after_makes_the_agent_exit_75() {
    let mon = TestMonitor::start(TOKEN, 200);
    let mut agent = heartbeating(&mon, "i-moved", &["--give-up-after", "3"]);
    mon.kill();
    assert!(
        agent.wait_log("re-registering", WAIT),
        "break not noticed:\n{}",
        agent.log()
    );
    let broke = Instant::now();
    let status = agent.wait_exit(WAIT).expect("the agent did not give up");
    assert_eq!(status.code(), Some(75), "{}", agent.log());
    assert!(
        broke.elapsed() >= Duration::from_millis(2500),
        "gave up after {:?}, before --give-up-after",
        broke.elapsed()
    );
    assert!(
        agent
            .log()
            .contains("has been out of reach for 3 s; exiting (code 75)"),
        "{}",
        agent.log()
    );
}

/// A monitor that never answers from the start: the same exit, with no registration ever.
#[test]
fn an_unreachable_monitor_at_start_is_given_up_on_too() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let started = Instant::now();
    let mut agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            &format!("http://127.0.0.1:{port}"),
            "--instance-id",
            "i-nowhere",
            "--give-up-after",
            "2",
        ],
    );
    let status = agent.wait_exit(WAIT).expect("the agent did not give up");
    assert_eq!(status.code(), Some(75), "{}", agent.log());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn drain_directive_leads_to_ack_drain() {
    let mon = TestMonitor::start(TOKEN, 200);
    let agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            &mon.url(),
            "--instance-id",
            "i-drain",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = agent.admin_addr();
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 1),
        "no heartbeat:\n{}",
        agent.log()
    );
    assert!(mon.with(|s| s.heartbeats.iter().all(|(h, _)| !h.draining)));
    mon.send_directive(Directive::Drain);
    assert!(
        wait_until(WAIT, || mon.with(|s| s.acks.len() == 1)),
        "no AckDrain:\n{}",
        agent.log()
    );
    assert_eq!(mon.with(|s| s.acks[0].member_id.clone()), "m-1");
    // Still heartbeating, now flagged as draining (not available capacity).
    let n = heartbeat_count(&mon);
    assert!(wait_until(WAIT, || mon.with(|s| s.heartbeats.len()
        > n + 1
        && s.heartbeats.last().unwrap().0.draining)));
    assert!(http(&admin, "GET", "/status", "")
        .1
        .contains("\"draining\":true"));
}

#[test]
fn deregister_directive_deregisters_and_exits_zero() {
    let mon = TestMonitor::start(TOKEN, 200);
    let mut agent = Agent::spawn(
        Some(TOKEN),
        &["--monitor", &mon.url(), "--instance-id", "i-dereg"],
    );
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 1),
        "no heartbeat:\n{}",
        agent.log()
    );
    mon.send_directive(Directive::Deregister);
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent did not exit");
    assert_eq!(status.code(), Some(0));
    mon.with(|s| {
        assert_eq!(s.deregisters.len(), 1);
        assert_eq!(s.deregisters[0].reason, "directive");
    });
}

#[test]
fn non_loopback_admin_and_missing_token_are_refused() {
    let mut agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            "http://127.0.0.1:9",
            "--instance-id",
            "i-x",
            "--admin",
            "0.0.0.0:0",
        ],
    );
    assert_eq!(
        agent
            .wait_exit(Duration::from_secs(10))
            .expect("no exit")
            .code(),
        Some(2)
    );
    assert!(agent.wait_log("loopback only", WAIT), "{}", agent.log());

    let mut agent = Agent::spawn(
        None,
        &["--monitor", "http://127.0.0.1:9", "--instance-id", "i-x"],
    );
    assert_eq!(
        agent
            .wait_exit(Duration::from_secs(10))
            .expect("no exit")
            .code(),
        Some(2)
    );
    assert!(agent.wait_log("no token", WAIT), "{}", agent.log());
}

/// Resident memory after ~5 s of heartbeats (printed; run with --nocapture to see it). The
/// bound is generous for debug builds; the release number is in the crate's report.
#[test]
fn resident_memory_stays_small() {
    let mon = TestMonitor::start(TOKEN, 200);
    let agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            &mon.url(),
            "--instance-id",
            "i-mem",
            "--simulate",
            "random-walk",
            "--seed",
            "1",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    assert!(wait_until(WAIT, || heartbeat_count(&mon) >= 1));
    std::thread::sleep(Duration::from_secs(5));
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("iac-agent VmRSS after 5 s: {kb} kB");
    assert!(kb < 20 * 1024, "VmRSS {kb} kB");
}

#[test]
fn interval_change_from_the_monitor_is_applied() {
    let mon = TestMonitor::start(TOKEN, 1000);
    let agent = Agent::spawn(
        Some(TOKEN),
        &["--monitor", &mon.url(), "--instance-id", "i-ivl"],
    );
    assert!(
        wait_until(WAIT, || heartbeat_count(&mon) >= 1),
        "no heartbeat:\n{}",
        agent.log()
    );
    mon.send_reply(Directive::None, 100);
    assert!(
        agent.wait_log("heartbeat interval changed to 100 ms", WAIT),
        "{}",
        agent.log()
    );
    let n = heartbeat_count(&mon);
    // At 1 s this would take 10 s; at 100 ms about one second.
    assert!(
        wait_until(Duration::from_secs(4), || heartbeat_count(&mon) >= n + 10),
        "interval not applied:\n{}",
        agent.log()
    );
}

#[test]
fn the_admin_endpoint_wants_the_token_and_small_headers() {
    let mon = TestMonitor::start(TOKEN, 200);
    let agent = Agent::spawn(
        Some(TOKEN),
        &[
            "--monitor",
            &mon.url(),
            "--instance-id",
            "i-admin",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = agent.admin_addr();
    for headers in [
        String::new(),
        "authorization: Bearer wrong\r\n".to_string(),
        format!("authorization: {TOKEN}\r\n"),
    ] {
        let (code, body) = http_with(&admin, &headers, "POST", "/unregister", "");
        assert_eq!(code, 401, "{headers:?}: {body}");
        let (code, _) = http_with(&admin, &headers, "POST", "/metric", "cpu=100");
        assert_eq!(code, 401);
        // Reading the status needs it too: it names the member and its load.
        let (code, body) = http_with(&admin, &headers, "GET", "/status", "");
        assert_eq!(code, 401, "{headers:?}: {body}");
        assert!(!body.contains("i-admin"), "{body}");
    }
    // Refused requests changed nothing: still registered, no override.
    let (code, status) = http(&admin, "GET", "/status", "");
    assert_eq!(code, 200);
    assert!(status.contains("\"override\":null"), "{status}");
    // Headers beyond 8 KiB are refused before the token is even looked at.
    let big = format!("x-pad: {}\r\n", "a".repeat(9 * 1024));
    assert_eq!(http_with(&admin, &big, "GET", "/status", "").0, 400);
    assert!(mon.with(|s| s.deregisters.is_empty()));
}

#[test]
fn a_plaintext_monitor_needs_the_flag_and_tls_needs_the_ca() {
    let mon = TestMonitor::start(TOKEN, 200);
    let url = mon.url();
    for args in [
        vec!["--monitor", url.as_str(), "--instance-id", "i-plain"],
        vec!["--monitor", "https://127.0.0.1:9", "--instance-id", "i-tls"],
    ] {
        let mut agent = Agent::spawn_exactly(Some(TOKEN), &args);
        let code = agent.wait_exit(Duration::from_secs(10)).expect("no exit");
        assert_eq!(code.code(), Some(2), "{}", agent.log());
    }
    assert!(!registered(&mon));
}
