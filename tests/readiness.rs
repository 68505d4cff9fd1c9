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
//!   real admin endpoints.

#[allow(dead_code)]
#[path = "common/boot.rs"]
mod boot;
mod common;
#[allow(dead_code)]
mod render_common;

use boot::Role;
use common::{Emulator, Run, StackFile};

/// Boots every instance `iac logs --role ROLE` lists with the role's real script; each must
/// succeed.
async fn boot_all(emu: &Emulator, file: &StackFile, name: &str, role: Role) -> Vec<String> {
    let stack = iac::stack::load(file.path()).expect("stack loads");
    let ids = boot::role_instances(emu, file, name);
    let env = boot::run_env(role);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for id in &ids {
        let sb = boot::sandbox(emu, &stack, role).await;
        let out = sb.run_as(id, &env);
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
    let ids = boot_all(&emu, &file, "asg", Role::AlbWeb).await;
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
