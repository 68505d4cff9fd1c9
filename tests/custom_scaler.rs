//! The custom-scaler tier end to end against the emulator: the two security groups (the
//! monitor's port open to the agents' group only), the generated token as a SecureString, the
//! stack file in SSM, the monitor VM as an Auto Scaling group of one that replaces a dead VM,
//! the agents' launch template; a changed stack file restarts the monitor on the group's
//! current instance; pool instances launched the way the monitor launches them are left alone
//! by `up` and `plan`, listed by `status`, adopted by a monitor started against them, and
//! terminated by `down`, which leaves nothing tagged with the stack.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use aws_sdk_ec2::types::{Filter, Tag};
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

/// The launch template `name`: its tags and the data of its default version, with the
/// user-data decoded (and inflated when gzip-compressed).
async fn launch_template(
    ec2: &aws_sdk_ec2::Client,
    name: &str,
) -> (
    Vec<Tag>,
    aws_sdk_ec2::types::ResponseLaunchTemplateData,
    String,
) {
    let lts = ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
        .expect("the launch template exists");
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

/// The monitor VM's Auto Scaling group (`<stack>-monitor`).
async fn monitor_group(
    asg: &aws_sdk_autoscaling::Client,
    stack: &str,
) -> aws_sdk_autoscaling::types::AutoScalingGroup {
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(format!("{stack}-monitor"))
        .send()
        .await
        .expect("describe groups");
    assert_eq!(out.auto_scaling_groups().len(), 1, "{out:?}");
    out.auto_scaling_groups()[0].clone()
}

/// The ids of the group's instances in service.
fn in_service(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Vec<String> {
    g.instances()
        .iter()
        .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

/// The scripts of the Run Command invocations sent so far.
async fn commands(emu: &Emulator) -> Vec<String> {
    let out = emu
        .ssm()
        .await
        .list_commands()
        .send()
        .await
        .expect("list commands");
    out.commands()
        .iter()
        .map(|c| {
            c.parameters()
                .and_then(|p| p.get("commands"))
                .map(|v| v.join("\n"))
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_up_pool_and_down() {
    let emu = Emulator::start();
    let stack = "cs-full";
    let admin = free_port();
    let file = StackFile::from_example(
        "stacks/custom-scaler.yaml",
        stack,
        &[(
            "    type: t3.micro\n",
            &format!("    type: t3.micro\n    admin: 127.0.0.1:{admin}\n"),
        )],
    );
    // Every command's output, checked for secret values once the stack is down.
    let mut runs = Runs::default();
    let r = runs.keep("up", up(&emu, file.path()));
    let ec2 = emu.ec2().await;
    let asg = aws_sdk_autoscaling::Client::new(&emu.config().await);

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
    let group_id = |id: &'static str| {
        let ec2 = ec2.clone();
        async move {
            ec2.describe_security_groups()
                .filters(stack_filter(stack))
                .filters(Filter::builder().name("tag:iac:id").values(id).build())
                .send()
                .await
                .expect("group")
                .security_groups()[0]
                .group_id()
                .map(str::to_string)
                .expect("group id")
        }
    };

    // The monitor VM: an Auto Scaling group of exactly one, from its own launch template, with
    // EC2 health checks (no load balancer) over every usable subnet, so a replacement may come
    // up in any zone. The emulator launches its instance at once.
    let g = monitor_group(&asg, stack).await;
    assert_eq!(
        (g.min_size(), g.max_size(), g.desired_capacity()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(g.health_check_type(), Some("EC2"));
    assert!(g.target_group_arns().is_empty());
    assert_eq!(
        g.launch_template().and_then(|l| l.launch_template_name()),
        Some(format!("{stack}-monitor").as_str())
    );
    assert!(
        g.vpc_zone_identifier()
            .unwrap_or_default()
            .split(',')
            .count()
            > 1,
        "{:?}",
        g.vpc_zone_identifier()
    );
    let first = in_service(&g);
    assert_eq!(first.len(), 1, "{g:?}");
    let vms = live_instances(&ec2, stack).await;
    assert_eq!(vms.len(), 1, "only the monitor: `up` launches no pool");
    let monitor = vms.first().expect("monitor");
    assert_eq!(monitor.instance_id(), Some(first[0].as_str()));
    // The group's tags reach its instance, but not `iac:id`: the VM is the group's, not a
    // resource of the stack by itself, and not a pool instance either.
    assert_eq!(
        tag(monitor.tags(), "Name").as_deref(),
        Some(format!("{stack}-monitor").as_str())
    );
    assert_eq!(tag(monitor.tags(), "iac:id"), None);
    assert_eq!(tag(monitor.tags(), "iac:scaler"), None);

    // Its template: IMDSv2, the instance profile, the monitor's group, and a boot script that
    // runs `iac scale --custom-monitor` (which adopts the pool before deciding anything) and
    // publishes the VM's own address.
    let (mlt_tags, mdata, mud) = launch_template(&ec2, &format!("{stack}-monitor")).await;
    assert_eq!(tag(&mlt_tags, "iac:id").as_deref(), Some("monitor-lt"));
    assert_eq!(
        mdata
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    assert_eq!(
        mdata.iam_instance_profile().and_then(|p| p.name()),
        Some("LabInstanceProfile")
    );
    assert_eq!(
        mdata.security_group_ids().to_vec(),
        vec![group_id("monitor-sg").await]
    );
    assert!(
        mud.contains("ExecStart=/usr/local/bin/iac scale --custom-monitor %d/stack.yaml"),
        "{mud}"
    );
    assert!(
        mud.contains(&format!("address_param=/iac/{stack}/monitor-address")),
        "{mud}"
    );

    // SSM: the token a SecureString, the stack file for the monitor. The monitor's address is
    // the monitor VM's to write, at boot: `up` never writes it.
    let (kind, token) = emu
        .param(&format!("/iac/{stack}/scaler-token"))
        .await
        .expect("token parameter");
    assert_eq!(kind, "SecureString");
    // Generated: 24 random bytes, URL-safe base64 without padding.
    assert_eq!(token.len(), 32, "a generated token: {token}");
    assert!(token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(
        emu.param(&format!("/iac/{stack}/monitor-address")).await,
        None
    );
    let (kind, stored) = emu
        .param(&format!("/iac/{stack}/stack-file"))
        .await
        .expect("stack file parameter");
    assert_eq!(kind, "String");
    assert!(stored.contains(&format!("name: {stack}")), "{stored}");
    assert!(!stored.contains(&token));
    assert!(
        !mud.contains(&token),
        "the token is in the monitor's user-data"
    );

    // The agents' launch template: IMDSv2, encrypted gp3, the agents' group, the profile, the
    // key, the stack's tags; the user-data checks the agent's SHA-256 and holds no token.
    let (lt_tags, data, ud) = launch_template(&ec2, &format!("{stack}-agent")).await;
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
    assert_eq!(
        data.security_group_ids().to_vec(),
        vec![group_id("agents-sg").await]
    );
    assert!(ud.contains("sha256sum"), "the user-data checks the agent");
    assert!(
        ud.contains("1111111111111111111111111111111111111111111111111111111111111111"),
        "the agent's expected digest is in the user-data"
    );
    assert!(ud.contains(&format!("/iac/{stack}/scaler-token")));
    assert!(ud.contains("--give-up-after 60"), "{ud}");
    assert!(!ud.contains(&token), "the token is in the user-data");
    assert!(!r.stdout.contains(&token) && !r.stderr.contains(&token));

    // Outputs name the token's parameter (never its value), the template and the monitor VM.
    let outputs = &r.record("outputs")["outputs"];
    assert_eq!(
        outputs["token_parameter"],
        format!("/iac/{stack}/scaler-token")
    );
    assert_eq!(outputs["launch_template"], format!("{stack}-agent"));
    assert_eq!(outputs["monitor_instance_id"], first[0].as_str());

    // The monitor VM publishes its address (as its refresh script does at boot); a second `up`
    // leaves it alone and makes no mutating call.
    let published = format!("{}:7700", monitor.private_ip_address().expect("private ip"));
    emu.ssm()
        .await
        .put_parameter()
        .name(format!("/iac/{stack}/monitor-address"))
        .value(&published)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("the VM's put");
    let again = runs.keep("up (again)", up(&emu, file.path()));
    assert_eq!(
        again.record("summary")["mutating_calls"],
        serde_json::json!({})
    );
    assert_eq!(
        again.record("outputs")["outputs"]["monitor_address"],
        published.as_str()
    );

    // The monitor VM dies (terminated under the group): the group launches a replacement. The
    // emulator replaces a group's instance as soon as it is terminated, whether through EC2's
    // TerminateInstances, as here, or Auto Scaling's TerminateInstanceInAutoScalingGroup with
    // ShouldDecrementDesiredCapacity=false; AWS does the same after its EC2 health check
    // (SetInstanceHealth is not implemented by the emulator).
    ec2.terminate_instances()
        .instance_ids(&first[0])
        .send()
        .await
        .expect("terminate the monitor VM");
    let g = monitor_group(&asg, stack).await;
    let second = in_service(&g);
    assert_eq!(second.len(), 1, "{g:?}");
    assert_ne!(second, first, "the group did not replace its instance");
    let vms = live_instances(&ec2, stack).await;
    assert_eq!(
        vms.iter()
            .filter_map(|i| i.instance_id())
            .collect::<Vec<_>>(),
        vec![second[0].as_str()]
    );
    // Nothing for `up` to do: the group is what the stack says.
    let after = runs.keep("up (monitor replaced)", up(&emu, file.path()));
    assert_eq!(
        after.record("summary")["mutating_calls"],
        serde_json::json!({})
    );
    // `status` shows the group, its capacity and the instance it has now.
    let mut text_status = emu.iac();
    text_status.arg("status").arg(file.path());
    let text_status = runs.keep("status", run_ok(text_status));
    assert!(
        text_status.stdout.contains(&format!(
            "Monitor group {stack}-monitor: desired 1, 1 in service; monitor VM: {}",
            second[0]
        )),
        "{}",
        text_status.stdout
    );
    let status = runs.keep("-o json status", iac_json(&emu, &["status"], file.path()));
    let group_record = status.record("monitor_group");
    assert_eq!(group_record["desired"], 1);
    assert_eq!(group_record["in_service"], serde_json::json!(second));
    assert_eq!(
        status.record("outputs")["outputs"]["monitor_instance_id"],
        second[0].as_str()
    );

    // A changed stack file restarts the monitor in place: the refresh command goes to the
    // instance the group has now.
    file.rewrite(&[("  high: 75 ", "  high: 80 ")]);
    let changed = runs.keep("up (stack file)", up(&emu, file.path()));
    assert_eq!(
        changed.record("summary")["api_calls"]["ssm:SendCommand"],
        1,
        "{}",
        changed.record("summary")
    );
    // (The emulator lists every instance it knows under any command's InstanceIds, so what
    // was sent where is read from iac's own report of each command it sent.)
    let sent: Vec<&str> = changed
        .stdout
        .lines()
        .filter(|l| l.contains("sent `iac: install the new stack file and restart the monitor` to"))
        .collect();
    assert_eq!(sent.len(), 1, "{}", changed.stdout);
    assert!(
        sent[0].contains(&format!("to {} (command", second[0])),
        "{}",
        sent[0]
    );
    let listed = commands(&emu).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].contains("iac: installs the custom-scaler monitor's configuration"),
        "{}",
        listed[0]
    );
    assert!(emu
        .param(&format!("/iac/{stack}/stack-file"))
        .await
        .is_some_and(|(_, v)| v.contains("high: 80")));

    // The monitor launches pool instances: `up` and `plan` leave them alone, `status` lists them.
    let pooled = [
        launch_pool_instance(&ec2, stack).await,
        launch_pool_instance(&ec2, stack).await,
    ];
    let third = runs.keep("up (pool)", up(&emu, file.path()));
    assert_eq!(
        third.record("summary")["mutating_calls"],
        serde_json::json!({}),
        "up touched the pool"
    );
    let mut plan = emu.iac();
    plan.args(["plan", "--detailed-exitcode"]).arg(file.path());
    let plan = runs.keep("plan (pool)", run(plan));
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let json_plan = runs.keep(
        "-o json plan (pool)",
        iac_json(&emu, &["plan"], file.path()),
    );
    let counts = json_plan.record("plan")["summary"].clone();
    assert_eq!(
        [
            &counts["create"],
            &counts["update"],
            &counts["replace"],
            &counts["delete"]
        ],
        [&serde_json::json!(0); 4],
        "{counts}"
    );
    let status = runs.keep(
        "-o json status (pool)",
        iac_json(&emu, &["status"], file.path()),
    );
    let pool = status.record("status")["pool"].clone();
    assert_eq!(pool.as_array().map(Vec::len), Some(2), "{pool}");
    let mut text_status = emu.iac();
    text_status.arg("status").arg(file.path());
    let text_status = runs.keep("status (pool)", run_ok(text_status));
    assert!(
        text_status
            .stdout
            .contains("Pool launched by the monitor: 2 instance(s)")
            && pooled.iter().all(|p| text_status.stdout.contains(p)),
        "{}",
        text_status.stdout
    );

    // What the replacement VM runs, `iac scale --custom-monitor` with the ec2 fleet, adopts the
    // running pool (min 2) from its tags before deciding anything: it launches nothing, and
    // leaves the monitor VM (not a pool instance) alone.
    let mut m = emu.iac();
    m.env_remove("IAC_SCALER_TOKEN")
        .args(["-o", "json", "scale", "--custom-monitor"])
        .arg(file.path())
        .args(["--listen", "127.0.0.1:0", "--stop-after", "2"]);
    let m = runs.keep("-o json scale --custom-monitor", run_ok(m));
    assert_eq!(m.record("monitor")["fleet"], "ec2");
    let mut live: Vec<String> = live_instances(&ec2, stack)
        .await
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    live.sort();
    let mut want: Vec<String> = pooled.iter().chain(&second).cloned().collect();
    want.sort();
    assert_eq!(live, want, "the monitor launched or terminated something");

    // `down` deletes the monitor's group (its instance with it), then the pool, then the
    // templates, and leaves nothing.
    // The secrets, read by value before `down` deletes them: the token the monitor decrypted
    // (and every agent reads), the private key of the monitor's TLS bundle, the app's secret.
    let secrets = Secrets::read(&emu, stack).await;
    for name in [
        "/bookstore/secret-key",
        &format!("/iac/{stack}/scaler-token"),
        &format!("/iac/{stack}/scaler-tls"),
    ] {
        assert!(secrets.names().contains(&name), "{:?}", secrets.names());
    }
    let mut d = emu.iac();
    d.args(["-o", "json", "down", "--stack", stack, "--yes"]);
    let d = runs.keep("down", run_ok(d));
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    for p in &pooled {
        assert!(
            d.stdout.contains(&format!("pool ({p})")),
            "down reports the pool instance:\n{}",
            d.stdout
        );
    }
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
    assert!(at("monitor ") < at("monitor-lt "), "{finished:?}");
    assert!(at("agent-lt ") < at("agents-sg "), "{finished:?}");
    assert!(live_instances(&ec2, stack).await.is_empty());
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(format!("{stack}-monitor"))
        .send()
        .await
        .expect("groups");
    assert!(groups.auto_scaling_groups().is_empty());
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
    for leaf in ["scaler-token", "monitor-address", "stack-file"] {
        assert!(
            emu.param(&format!("/iac/{stack}/{leaf}")).await.is_none(),
            "{leaf}"
        );
    }
    // No command printed a secret, nor a part of one.
    assert_eq!(runs.0.len(), 13, "{:?}", runs.commands());
    runs.assert_no_secret(&secrets);
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
    // Every command's output, checked for secret values once the stack is down.
    let mut runs = Runs::default();
    let r = runs.keep("up", up(&emu, file.path()));
    let ec2 = emu.ec2().await;
    assert!(live_instances(&ec2, stack).await.is_empty());
    let groups = aws_sdk_autoscaling::Client::new(&emu.config().await)
        .describe_auto_scaling_groups()
        .send()
        .await
        .expect("groups");
    assert!(groups.auto_scaling_groups().is_empty(), "{groups:?}");
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
    launch_template(&ec2, &format!("{stack}-agent")).await;
    // `plan` (as data) has nothing to do; `status` names the monitor's address.
    let json_plan = runs.keep("-o json plan", iac_json(&emu, &["plan"], file.path()));
    let counts = json_plan.record("plan")["summary"].clone();
    assert_eq!(
        [
            &counts["create"],
            &counts["update"],
            &counts["replace"],
            &counts["delete"]
        ],
        [&serde_json::json!(0); 4],
        "{counts}"
    );
    let mut c = emu.iac();
    c.arg("status").arg(file.path());
    let status = runs.keep("status", run_ok(c));
    assert!(
        status.stdout.contains("10.0.42.7:7700"),
        "{}",
        status.stdout
    );

    // The monitor as users run it, with the ec2 fleet: the token comes from the SecureString
    // `up` generated, and the pool (min 2) is launched from the template with the pool tags.
    let mut m = emu.iac();
    m.env_remove("IAC_SCALER_TOKEN")
        .args(["-o", "json", "scale", "--custom-monitor"])
        .arg(file.path())
        .args(["--listen", "127.0.0.1:0", "--stop-after", "3"]);
    let m = runs.keep("-o json scale --custom-monitor", run_ok(m));
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
    runs.keep("scale --custom-monitor (again)", run_ok(m));
    assert_eq!(live_instances(&ec2, stack).await.len(), 2);

    // The secrets, read by value before `down` deletes them.
    let secrets = Secrets::read(&emu, stack).await;
    for name in [
        "/bookstore/secret-key",
        &format!("/iac/{stack}/scaler-token"),
    ] {
        assert!(secrets.names().contains(&name), "{:?}", secrets.names());
    }

    let mut d = emu.iac();
    d.args(["-o", "json", "down", "--stack", stack, "--yes"]);
    let d = runs.keep("down", run_ok(d));
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    assert!(live_instances(&ec2, stack).await.is_empty());
    // No command printed a secret, nor a part of one.
    assert_eq!(runs.0.len(), 6, "{:?}", runs.commands());
    runs.assert_no_secret(&secrets);
}
