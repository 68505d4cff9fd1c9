//! The custom-scaler tier end to end against the emulator: the two security groups (the
//! monitor's port open to the agents' group only), the generated token as a SecureString, the
//! stack file and the monitor's address in SSM, the monitor VM, the agents' launch template; a
//! pool instance launched the way the monitor launches them is left alone by `up` and `plan`,
//! listed by `status` and terminated by `down`, which leaves nothing tagged with the stack.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};
use common::*;

fn iac_json(emu: &Emulator, args: &[&str], file: &std::path::Path) -> Run {
    let mut c = emu.iac();
    c.args(["-o", "json"]).args(args).arg(file);
    run_ok(c)
}

fn up(emu: &Emulator, file: &std::path::Path) -> Run {
    let mut c = emu.iac();
    c.args(["-o", "json", "up"]).arg(file).arg("--yes");
    run_ok(c)
}

/// The launch template `<stack>-agent`: its tags and the data of its default version, with the
/// user-data decoded (and inflated when gzip-compressed).
async fn launch_template(
    ec2: &aws_sdk_ec2::Client,
    stack: &str,
) -> (
    Vec<Tag>,
    aws_sdk_ec2::types::ResponseLaunchTemplateData,
    String,
) {
    let lts = ec2
        .describe_launch_templates()
        .launch_template_names(format!("{stack}-agent"))
        .send()
        .await
        .expect("the agents' launch template exists");
    assert_eq!(lts.launch_templates().len(), 1);
    let lt = &lts.launch_templates()[0];
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_id(lt.launch_template_id().expect("id"))
        .versions("$Default")
        .send()
        .await
        .expect("versions");
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .expect("data")
        .clone();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data.user_data().unwrap_or_default())
        .expect("base64");
    let ud = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .expect("gzip");
        s
    } else {
        String::from_utf8(raw).expect("utf-8 user-data")
    };
    (lt.tags().to_vec(), data, ud)
}

/// Launches one pool instance the way the monitor does: RunInstances from the launch template,
/// tagged at creation with the pool tags and no `iac:id`.
async fn launch_pool_instance(ec2: &aws_sdk_ec2::Client, stack: &str) -> String {
    let tags: Vec<Tag> = [
        ("Name", format!("{stack}-agent")),
        ("iac:stack", stack.to_string()),
        ("iac:role", "agent".to_string()),
        ("iac:scaler", "pool".to_string()),
        ("managed-by", "iac".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| Tag::builder().key(k).value(v).build())
    .collect();
    let out = ec2
        .run_instances()
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name(format!("{stack}-agent"))
                .version("$Default")
                .build(),
        )
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .expect("launch from the template");
    out.instances()[0]
        .instance_id()
        .expect("instance id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_up_pool_and_down() {
    let emu = Emulator::start();
    let stack = "cs-full";
    let file = StackFile::from_example("stacks/custom-scaler.yaml", stack, &[]);
    let r = up(&emu, file.path());
    let ec2 = emu.ec2().await;

    // Groups: the app port from anywhere on the agents (no load balancer in front of them), the
    // monitor's gRPC port only from the agents' group, SSH only from ssh_from.
    let ssh = (22, "203.0.113.0/24".to_string());
    let want: BTreeMap<String, Vec<(i32, String)>> = [
        (
            "agents-sg".to_string(),
            vec![
                ssh.clone(),
                (5000, "0.0.0.0/0".into()),
                (5000, "::/0".into()),
            ],
        ),
        (
            "monitor-sg".to_string(),
            vec![ssh.clone(), (7700, "group:agents-sg".into())],
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(group_rules(&ec2, stack).await, want);

    // The monitor VM: IMDSv2, the instance profile, in the monitor's group.
    let vms = live_instances(&ec2, stack).await;
    assert_eq!(vms.len(), 1, "only the monitor: `up` launches no pool");
    let monitor = vms.first().expect("monitor");
    assert_eq!(tag(monitor.tags(), "iac:id").as_deref(), Some("monitor"));
    assert_eq!(
        monitor
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    assert!(monitor
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .is_some_and(|a| a.ends_with("LabInstanceProfile")));
    assert_eq!(
        monitor
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name())
            .collect::<Vec<_>>(),
        vec![format!("{stack}-monitor")]
    );
    let monitor_ip = monitor
        .private_ip_address()
        .expect("private ip")
        .to_string();

    // SSM: the token a SecureString, the monitor's address, the stack file for the monitor.
    let (kind, token) = emu
        .param(&format!("/iac/{stack}/scaler-token"))
        .await
        .expect("token parameter");
    assert_eq!(kind, "SecureString");
    assert!(token.len() >= 24, "a generated token");
    assert_eq!(
        emu.param(&format!("/iac/{stack}/monitor-address")).await,
        Some(("String".to_string(), format!("{monitor_ip}:7700")))
    );
    let (kind, stored) = emu
        .param(&format!("/iac/{stack}/stack-file"))
        .await
        .expect("stack file parameter");
    assert_eq!(kind, "String");
    assert!(stored.contains(&format!("name: {stack}")), "{stored}");
    assert!(!stored.contains(&token));

    // The launch template: IMDSv2, encrypted gp3, the agents' group, the profile, the key, the
    // stack's tags; the user-data checks the agent's SHA-256 and holds no token.
    let (lt_tags, data, ud) = launch_template(&ec2, stack).await;
    assert_eq!(tag(&lt_tags, "iac:stack").as_deref(), Some(stack));
    assert_eq!(tag(&lt_tags, "iac:id").as_deref(), Some("agent-lt"));
    assert_eq!(tag(&lt_tags, "managed-by").as_deref(), Some("iac"));
    assert_eq!(
        data.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    let ebs = data.block_device_mappings()[0].ebs().expect("ebs");
    assert_eq!(ebs.encrypted(), Some(true));
    assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some("LabInstanceProfile")
    );
    assert_eq!(data.key_name(), Some("vockey"));
    let agents_sg = ec2
        .describe_security_groups()
        .filters(stack_filter(stack))
        .filters(
            Filter::builder()
                .name("tag:iac:id")
                .values("agents-sg")
                .build(),
        )
        .send()
        .await
        .expect("agents group")
        .security_groups()[0]
        .group_id()
        .map(str::to_string);
    assert_eq!(
        data.security_group_ids().to_vec(),
        vec![agents_sg.expect("group id")]
    );
    assert!(ud.contains("sha256sum"), "the user-data checks the agent");
    assert!(
        ud.contains("1111111111111111111111111111111111111111111111111111111111111111"),
        "the agent's expected digest is in the user-data"
    );
    assert!(ud.contains(&format!("/iac/{stack}/scaler-token")));
    assert!(!ud.contains(&token), "the token is in the user-data");
    assert!(!r.stdout.contains(&token) && !r.stderr.contains(&token));

    // Outputs name the address, the token's parameter (never its value), the template.
    let outputs = &r.record("outputs")["outputs"];
    assert_eq!(outputs["monitor_address"], format!("{monitor_ip}:7700"));
    assert_eq!(
        outputs["token_parameter"],
        format!("/iac/{stack}/scaler-token")
    );
    assert_eq!(outputs["launch_template"], format!("{stack}-agent"));

    // A second `up` makes no mutating call.
    let again = up(&emu, file.path());
    assert_eq!(
        again.record("summary")["mutating_calls"],
        serde_json::json!({})
    );

    // The monitor launches a pool instance: `up` and `plan` leave it alone, `status` lists it.
    let pooled = launch_pool_instance(&ec2, stack).await;
    let third = up(&emu, file.path());
    assert_eq!(
        third.record("summary")["mutating_calls"],
        serde_json::json!({}),
        "up touched the pool"
    );
    assert!(live_instances(&ec2, stack)
        .await
        .iter()
        .any(|i| i.instance_id() == Some(pooled.as_str())));
    let mut plan = emu.iac();
    plan.args(["plan", "--detailed-exitcode"]).arg(file.path());
    let plan = run(plan);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let status = iac_json(&emu, &["status"], file.path());
    let pool = status.record("status")["pool"].clone();
    assert_eq!(pool.as_array().map(Vec::len), Some(1), "{pool}");
    assert_eq!(pool[0]["physical_id"], pooled.as_str());
    let mut text_status = emu.iac();
    text_status.arg("status").arg(file.path());
    let text_status = run_ok(text_status);
    assert!(
        text_status
            .stdout
            .contains("Pool launched by the monitor: 1 instance(s)")
            && text_status.stdout.contains(&pooled),
        "{}",
        text_status.stdout
    );

    // `down` terminates the monitor, then the pool, then the template, and leaves nothing.
    let mut d = emu.iac();
    d.args(["-o", "json", "down", "--stack", stack, "--yes"]);
    let d = run_ok(d);
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    assert!(
        d.stdout.contains(&format!("pool ({pooled})")),
        "down reports the pool instance:\n{}",
        d.stdout
    );
    let finished: Vec<String> = d
        .records()
        .iter()
        .filter(|e| e["event"] == "done")
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let at = |prefix: &str| {
        finished
            .iter()
            .position(|id| id.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `done` for {prefix} in {finished:?}"))
    };
    assert!(at("monitor ") < at("pool "), "{finished:?}");
    assert!(at("pool ") < at("agent-lt "), "{finished:?}");
    assert!(at("agent-lt ") < at("agents-sg "), "{finished:?}");
    assert!(live_instances(&ec2, stack).await.is_empty());
    let lts = ec2
        .describe_launch_templates()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("templates");
    assert!(lts.launch_templates().is_empty());
    let groups = ec2
        .describe_security_groups()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("groups");
    assert!(groups.security_groups().is_empty());
    assert!(emu
        .param(&format!("/iac/{stack}/scaler-token"))
        .await
        .is_none());
}

/// With `scaler.monitor.address` the stack has no monitor VM nor its group: the agents dial the
/// given address. The monitor, run by hand with the ec2 fleet, reads the token from SSM and
/// launches the pool from the template; a second one adopts it; `down` terminates it.
#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_with_own_monitor_creates_no_monitor_vm() {
    let emu = Emulator::start();
    let stack = "cs-own";
    let admin = free_port();
    let file = StackFile::from_example(
        "stacks/custom-scaler.yaml",
        stack,
        &[(
            "    type: t3.micro\n",
            &format!(
                "    type: t3.micro\n    address: 10.0.42.7:7700\n    admin: 127.0.0.1:{admin}\n"
            ),
        )],
    );
    let r = up(&emu, file.path());
    let ec2 = emu.ec2().await;
    assert!(live_instances(&ec2, stack).await.is_empty());
    assert_eq!(
        group_rules(&ec2, stack)
            .await
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["agents-sg"]
    );
    assert_eq!(
        emu.param(&format!("/iac/{stack}/monitor-address")).await,
        Some(("String".to_string(), "10.0.42.7:7700".to_string()))
    );
    assert!(emu
        .param(&format!("/iac/{stack}/stack-file"))
        .await
        .is_none());
    assert_eq!(
        r.record("outputs")["outputs"]["monitor_address"],
        "10.0.42.7:7700"
    );
    launch_template(&ec2, stack).await;

    // The monitor as users run it, with the ec2 fleet: the token comes from the SecureString
    // `up` generated, and the pool (min 2) is launched from the template with the pool tags.
    let mut m = emu.iac();
    m.env_remove("IAC_SCALER_TOKEN")
        .args(["-o", "json", "scale", "--custom-monitor"])
        .arg(file.path())
        .args(["--listen", "127.0.0.1:0", "--stop-after", "3"]);
    let m = run_ok(m);
    assert_eq!(m.record("monitor")["fleet"], "ec2");
    let pool = live_instances(&ec2, stack).await;
    assert_eq!(pool.len(), 2, "{pool:#?}");
    for i in pool.iter() {
        assert_eq!(tag(i.tags(), "iac:scaler").as_deref(), Some("pool"));
        assert_eq!(tag(i.tags(), "iac:role").as_deref(), Some("agent"));
        assert_eq!(tag(i.tags(), "iac:id"), None);
    }
    // A second monitor adopts them (they never register here: their agents are not real, so
    // the boot deadline of 300 s is far away) and launches nothing more.
    let mut m = emu.iac();
    m.env_remove("IAC_SCALER_TOKEN")
        .args(["scale", "--custom-monitor"])
        .arg(file.path())
        .args(["--listen", "127.0.0.1:0", "--stop-after", "2"]);
    run_ok(m);
    assert_eq!(live_instances(&ec2, stack).await.len(), 2);

    let mut d = emu.iac();
    d.args(["-o", "json", "down", "--stack", stack, "--yes"]);
    let d = run_ok(d);
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    assert!(live_instances(&ec2, stack).await.is_empty());
}
