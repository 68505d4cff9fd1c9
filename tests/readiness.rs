//! `up` waits for the tier's own conditions, against the emulator, with `--wait` standing in for
//! a cloud that boots the instances: the real boot scripts report from the sandbox (see
//! tests/common/boot.rs), and what else the tier waits for is set through the emulator's own
//! API or by real processes.
//!
//! - alb-asg: at least `scaling.min` healthy targets. moto reports every registered target
//!   `healthy` unless its instance is stopped (`unused`, `Target.InvalidState`): it runs no
//!   health checks. So a target is made unhealthy the one way its API offers, by stopping the
//!   instance (StopInstances), which is also what a target of a stopped instance reports on
//!   AWS.
//! - custom-scaler: at least `scaler.min` members of the monitor's pool. An agent's boot is
//!   ready once the monitor made it a member; here the monitor is iac's own, in this process,
//!   launching the pool into the emulator through its EC2 fleet, and the agents are real
//!   `iac-agent` processes registering over gRPC on loopback, their boot scripts asking their
//!   real admin endpoints. Meanwhile `up`'s live line shows the step an instance is in, and
//!   `iac logs --follow` prints each new step and the outcome as the reports arrive.

#[allow(dead_code)]
#[path = "common/boot.rs"]
mod boot;
mod common;
#[allow(dead_code)]
mod render_common;

use std::time::{Duration, Instant};

use boot::Role;
use common::{Emulator, Run, StackFile};

/// Boots every instance `iac logs --role ROLE` lists with the role's real script; each must
/// succeed.
async fn boot_all(emu: &Emulator, file: &StackFile, name: &str, role: Role) -> Vec<String> {
    let stack = iac::stack::load(file.path()).expect("stack loads");
    let ids = boot::role_instances(emu, file, name);
    let env = boot::run_env(role);
    for id in &ids {
        let sb = boot::sandbox(emu, &stack, role).await;
        let out = sb.run_as(id, &boot::refs(&env));
        assert!(out.status.success(), "{id}: {}", sb.explain(&out));
    }
    ids
}

fn all(r: &Run) -> String {
    format!("{}\n{}", r.stdout, r.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn alb_asg_up_waits_for_scaling_min_healthy_targets() {
    let emu = Emulator::start();
    let name = "rd-asg";
    let file = boot::stack_file("stacks/bookstore-asg.yaml", name, &[]);
    let r = boot::up(&emu, &file, &[]);
    assert_eq!(r.code, 0, "{}", all(&r));
    // The group's instances (scaling.min: 2) boot with the launch template's script.
    let ids = boot_all(&emu, &file, "web", Role::AlbWeb).await;
    assert_eq!(ids.len(), 2, "{ids:?}");

    // The group registered them with the target group; the emulator says healthy.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&emu.config().await);
    let tg = elb
        .describe_target_groups()
        .names(format!("{name}-tg"))
        .send()
        .await
        .expect("the target group");
    let tg_arn = tg.target_groups()[0]
        .target_group_arn()
        .expect("arn")
        .to_string();
    let health = |elb: aws_sdk_elasticloadbalancingv2::Client, arn: String| async move {
        let out = elb
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .expect("target health");
        let mut v: Vec<(String, String)> = out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                (
                    d.target().and_then(|t| t.id()).unwrap_or_default().into(),
                    d.target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut want: Vec<(String, String)> = ids
        .iter()
        .map(|i| (i.clone(), "healthy".to_string()))
        .collect();
    want.sort();
    assert_eq!(health(elb.clone(), tg_arn.clone()).await, want);

    // Enough healthy targets, every boot ready: the app is up.
    let r = boot::up(&emu, &file, &["--wait", "--wait-timeout", "2m"]);
    assert_eq!(r.code, 0, "{}", all(&r));
    assert!(r.stdout.contains("The app is up"), "{}", all(&r));

    // One instance stopped: its target is no longer healthy (1 of at least 2).
    let ec2 = emu.ec2().await;
    ec2.stop_instances()
        .instance_ids(&ids[1])
        .send()
        .await
        .expect("stop an instance");
    let h = health(elb.clone(), tg_arn.clone()).await;
    assert!(
        h.contains(&(ids[1].clone(), "unused".to_string())),
        "the emulator still calls the stopped instance's target healthy: {h:?}"
    );
    let r = boot::up(&emu, &file, &["--wait", "--wait-timeout", "5s"]);
    assert_eq!(r.code, 1, "{}", all(&r));
    assert!(
        r.stderr.contains("the app did not come up within")
            && r.stderr.contains(&format!(
                "target group {name}-tg: 1 of at least 2 targets healthy; {} unused (Target.InvalidState)",
                ids[1]
            )),
        "{}",
        r.stderr
    );
}

/// A real `iac-agent` for pool instance `id`, registering with the monitor at `grpc`, its
/// admin endpoint on `admin`; killed on drop.
struct Agent(std::process::Child);

impl Agent {
    fn start(grpc: u16, id: &str, admin: u16, token: &str) -> Agent {
        let child = std::process::Command::new(common::agent_bin())
            .args(["--monitor", &format!("http://127.0.0.1:{grpc}")])
            .arg("--allow-plaintext")
            .args(["--instance-id", id])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--simulate", "steady:50"])
            .env("IAC_AGENT_TOKEN", token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start iac-agent");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits, with a generous deadline, until `ok` holds.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut ok: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `iac logs FILE --instance ID --follow`, its stdout read line by line as it comes.
struct Follow {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follow {
    fn start(emu: &Emulator, file: &StackFile, id: &str) -> Follow {
        let mut c = emu.iac();
        c.arg("logs")
            .arg(file.path())
            .args(["--instance", id, "--follow"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().expect("start iac logs --follow");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follow {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line holding `text` (a generous deadline: no timing is asserted).
    fn line_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line with `{text}` from `iac logs --follow` ({e}); it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn exit_code(&mut self) -> i32 {
        self.child.wait().ok().and_then(|s| s.code()).unwrap_or(-1)
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_up_waits_for_min_members_of_the_monitor() {
    let emu = Emulator::start();
    let name = "rd-scaler";
    let file = boot::stack_file("stacks/custom-scaler.yaml", name, &[]);
    let r = boot::up(&emu, &file, &[]);
    assert_eq!(r.code, 0, "{}", all(&r));
    let stack = iac::stack::load(file.path()).expect("stack loads");
    let conf = stack.spec.scaler.as_ref().expect("a scaler");
    assert_eq!(conf.min, 2);
    // The monitor VM boots with its real script.
    boot_all(&emu, &file, "monitor", Role::ScalerMonitor).await;

    // iac's monitor, with the stack's policy and token, launching the pool into the emulator.
    let token = emu
        .secure_value(&iac::render::param_name(name, "scaler-token"))
        .await;
    let shared = iac::scaler::monitor::Shared::new(conf.policy(), &token);
    let fleet = std::sync::Arc::new(iac::scaler::ec2::Ec2Fleet::new(
        emu.aws().await,
        name,
        Vec::new(),
        &Default::default(),
    ));
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc_port = grpc.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = tokio::spawn(iac::scaler::monitor::serve(
        shared.clone(),
        fleet,
        grpc,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    eventually("the monitor's pool of min instances", || {
        let n = shared.members().len();
        async move { n >= 2 }
    })
    .await;
    let mut pool: Vec<String> = shared.members().into_iter().map(|m| m.id).collect();
    pool.sort();
    let (a, b) = (pool[0].clone(), pool[1].clone());

    let stack_sb = |role| boot::sandbox(&emu, &stack, role);
    let curl = render_common::tool("curl", "curl");
    let env_for = |admin: u16| {
        let mut env = boot::run_env(Role::ScalerAgent);
        env.push(("STUB_ADMIN_URL", format!("http://127.0.0.1:{admin}")));
        env.push(("STUB_REAL_CURL", curl.display().to_string()));
        env.push(("IAC_REGISTER_WAIT_SECONDS", "600".to_string()));
        env
    };

    // Agent a registers; its boot script's last step finds its member id: ready.
    let (admin_a, admin_b) = (common::free_port(), common::free_port());
    let _agent_a = Agent::start(grpc_port, &a, admin_a, &token);
    let sb_a = stack_sb(Role::ScalerAgent).await;
    let out = sb_a.run_as(&a, &boot::refs(&env_for(admin_a)));
    assert!(out.status.success(), "{}", sb_a.explain(&out));

    // `iac logs --follow` on instance b, which has sent no report yet.
    let mut follow = Follow::start(&emu, &file, &b);
    follow.line_with("no report");

    // Instance b boots, but no agent runs there yet: its script waits in its last step. The
    // follow prints each step as it comes.
    let sb_b = stack_sb(Role::ScalerAgent).await;
    let mut script_b = sb_b.spawn_as(&b, &boot::refs(&env_for(admin_b)));
    follow.line_with(&format!("agent {b}: 1/7 packages ("));
    follow.line_with(&format!("agent {b}: 7/7 registration ("));

    // One member of at least two by the deadline: up fails, saying so and where b is.
    let r = boot::up(&emu, &file, &["--wait", "--wait-timeout", "5s"]);
    assert_eq!(r.code, 1, "{}", all(&r));
    assert!(
        r.stderr.contains("the app did not come up within")
            && r.stderr
                .contains("agent: 1 of at least 2 report their boot ready")
            && r.stderr
                .contains(&format!("agent {b} ({b}): 7/7 registration")),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(&format!("({a})")), "{}", r.stderr);
    // Its live line said where b was.
    assert!(
        all(&r).contains(&format!(
            "agent {b}: waiting for its boot: 7/7 registration ("
        )),
        "{}",
        all(&r)
    );

    // b's agent starts and registers; its script ends ready; up succeeds.
    let _agent_b = Agent::start(grpc_port, &b, admin_b, &token);
    let status = tokio::task::spawn_blocking(move || script_b.wait())
        .await
        .expect("join")
        .expect("wait for b's script");
    assert!(status.success(), "{}", sb_b.log());
    // The follow prints b's outcome, and ends: every shown instance's script has exited.
    let line = follow.line_with(&b);
    assert!(line.contains("ready"), "{line}");
    assert_eq!(follow.exit_code(), 0);
    let r = boot::up(&emu, &file, &["--wait", "--wait-timeout", "2m"]);
    assert_eq!(r.code, 0, "{}", all(&r));
    assert!(r.stdout.contains("The app is up"), "{}", all(&r));
    assert_eq!(
        shared
            .members()
            .iter()
            .filter(|m| m.registered_at.is_some())
            .count(),
        2
    );

    let _ = stop.send(());
    let _ = monitor.await;
}
