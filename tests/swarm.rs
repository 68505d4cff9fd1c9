//! The swarm tier end to end against the emulator: nodes and rules, the service spec and join
//! tokens in SSM, in-place service updates and drained scale-in through the leader, `down`.

mod common;

use common::*;

fn up(emu: &Emulator, file: &std::path::Path) -> Run {
    let mut c = emu.iac();
    c.args(["-o", "json", "up"]).arg(file).arg("--yes");
    run_ok(c)
}

/// iac's own reports of commands it sent, in order.
fn sent(r: &Run) -> Vec<String> {
    r.records()
        .iter()
        .filter(|e| {
            e["event"] == "info"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(": sent `"))
        })
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_up_update_scale_in_and_down() {
    let emu = Emulator::start();
    let stack = "sw-full";
    let file = StackFile::from_example("stacks/bookstore-swarm.yaml", stack, &[]);
    // Every command's output, checked for secret values once the stack is down.
    let mut runs = Runs::default();
    let r = runs.keep("up", up(&emu, file.path()));
    let ec2 = emu.ec2().await;
    let ssm = emu.ssm().await;

    // One manager and three workers, each with the cluster's group, IMDSv2 and the profile.
    let vms = instances_by_logical_id(&ec2, stack).await;
    assert_eq!(
        vms.keys().cloned().collect::<Vec<_>>(),
        vec!["manager-1", "worker-1", "worker-2", "worker-3"]
    );
    for vm in vms.values() {
        assert_eq!(
            vm.metadata_options()
                .and_then(|m| m.http_tokens())
                .map(|t| t.as_str()),
            Some("required")
        );
        assert_eq!(
            vm.security_groups()
                .iter()
                .filter_map(|g| g.group_name())
                .collect::<Vec<_>>(),
            vec![format!("{stack}-swarm")]
        );
        assert!(vm.iam_instance_profile().is_some());
        assert_eq!(tag(vm.tags(), "iac:stack").as_deref(), Some(stack));
    }

    // Rules exactly as listed: swarm ports only from the group itself.
    let groups = ec2
        .describe_security_groups()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("groups");
    assert_eq!(groups.security_groups().len(), 1);
    let g = &groups.security_groups()[0];
    let own = g.group_id().expect("id");
    let mut rules: Vec<(String, i32, String)> = Vec::new();
    for p in g.ip_permissions() {
        assert_eq!(p.from_port(), p.to_port());
        let proto = p.ip_protocol().unwrap_or_default().to_string();
        let port = p.from_port().unwrap_or(-1);
        rules.extend(p.ip_ranges().iter().map(|x| {
            (
                proto.clone(),
                port,
                x.cidr_ip().unwrap_or_default().to_string(),
            )
        }));
        rules.extend(p.ipv6_ranges().iter().map(|x| {
            (
                proto.clone(),
                port,
                x.cidr_ipv6().unwrap_or_default().to_string(),
            )
        }));
        rules.extend(p.user_id_group_pairs().iter().map(|u| {
            (
                proto.clone(),
                port,
                if u.group_id() == Some(own) {
                    "self".to_string()
                } else {
                    u.group_id().unwrap_or_default().to_string()
                },
            )
        }));
    }
    rules.sort();
    let want: Vec<(String, i32, String)> = vec![
        ("tcp".into(), 22, "203.0.113.0/24".into()),
        ("tcp".into(), 80, "0.0.0.0/0".into()),
        ("tcp".into(), 80, "::/0".into()),
        ("tcp".into(), 2377, "self".into()),
        ("tcp".into(), 7946, "self".into()),
        ("udp".into(), 4789, "self".into()),
        ("udp".into(), 7946, "self".into()),
    ];
    assert_eq!(rules, want);

    // The entry point is the first manager's Elastic IP.
    let eips = ec2
        .describe_addresses()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("addresses");
    assert_eq!(eips.addresses().len(), 1);
    assert_eq!(
        eips.addresses()[0].instance_id(),
        vms["manager-1"].instance_id()
    );

    // The service spec is a plain String parameter naming the image and the replica count, and
    // no command was sent: a new leader reads it at boot.
    let spec = ssm
        .get_parameter()
        .name(format!("/iac/{stack}/service"))
        .send()
        .await
        .expect("service spec");
    let spec = spec.parameter().expect("parameter");
    assert_eq!(spec.r#type().map(|t| t.as_str()), Some("String"));
    let spec_text = spec.value().unwrap_or_default().to_string();
    assert!(
        spec_text.contains("ghcr.io/example/bookstore:1.0.0"),
        "{spec_text}"
    );
    assert!(spec_text.lines().any(|l| l == "REPLICAS=6"), "{spec_text}");
    assert!(sent(&r).is_empty(), "{:?}", sent(&r));

    // What manager-1 does at boot: publish the join tokens (SecureString) and its address.
    for (leaf, kind, value) in [
        (
            "swarm/manager-token",
            aws_sdk_ssm::types::ParameterType::SecureString,
            "SWMTKN-1-manager",
        ),
        (
            "swarm/worker-token",
            aws_sdk_ssm::types::ParameterType::SecureString,
            "SWMTKN-1-worker",
        ),
        (
            "swarm/leader-addr",
            aws_sdk_ssm::types::ParameterType::String,
            "10.0.0.10",
        ),
    ] {
        ssm.put_parameter()
            .name(format!("/iac/{stack}/{leaf}"))
            .r#type(kind)
            .value(value)
            .send()
            .await
            .expect("put token");
    }
    // A second `up` changes nothing (the tokens belong to the stack, they are not orphans).
    let again = runs.keep("up (again)", up(&emu, file.path()));
    assert_eq!(
        again.record("summary")["mutating_calls"],
        serde_json::json!({})
    );
    let mut plan = emu.iac();
    plan.args(["plan", "--detailed-exitcode", "--show-unchanged"])
        .arg(file.path());
    let plan = runs.keep("plan --show-unchanged", run(plan));
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["ssm-parameter", "swarm/worker-token"])),
        "{}",
        plan.stdout
    );
    // The same as data, which holds every resource, the tokens among them; and `status`.
    let mut c = emu.iac();
    c.args(["-o", "json", "plan"]).arg(file.path());
    let json_plan = runs.keep("-o json plan", run_ok(c));
    let changes = json_plan.record("plan")["changes"].clone();
    assert!(
        changes
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["id"] == "swarm/worker-token")),
        "{changes}"
    );
    let mut c = emu.iac();
    c.arg("status").arg(file.path());
    let status = runs.keep("status", run_ok(c));
    for vm in vms.values() {
        let id = vm.instance_id().expect("id");
        assert!(
            status.stdout.contains(id),
            "{id} missing from:\n{}",
            status.stdout
        );
    }

    // More replicas: the spec is rewritten and the leader applies it in place.
    let leader = vms["manager-1"].instance_id().expect("leader").to_string();
    file.rewrite(&[("replicas: 6", "replicas: 8")]);
    let r = runs.keep("up (replicas)", up(&emu, file.path()));
    let msgs = sent(&r);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains(&format!("to {leader} ")), "{msgs:?}");
    assert_eq!(
        instances_by_logical_id(&ec2, stack).await.len(),
        4,
        "a service change must not touch the nodes"
    );
    let cmds = ssm.list_commands().send().await.expect("commands");
    let last = cmds
        .commands()
        .iter()
        .find(|c| c.comment().is_some_and(|m| m.contains("service")))
        .expect("service command");
    assert_eq!(last.document_name(), Some("AWS-RunShellScript"));
    let script = last
        .parameters()
        .and_then(|p| p.get("commands"))
        .map(|v| v.join("\n"))
        .unwrap_or_default();
    assert!(script.contains("docker service"), "{script}");

    // Fewer workers: worker-3 is drained through the leader, then terminated.
    let w3 = vms["worker-3"].clone();
    let w3_ip = w3.private_ip_address().expect("ip").to_string();
    file.rewrite(&[("workers: 3", "workers: 2")]);
    let r = runs.keep("up (workers)", up(&emu, file.path()));
    let events = r.records();
    let drained = events
        .iter()
        .position(|e| {
            e["event"] == "info"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("drain") && m.contains(&leader))
        })
        .expect("a drain command to the leader");
    let terminated = events
        .iter()
        .position(|e| {
            e["event"] == "done"
                && e["kind"] == "instance"
                && e["physical_id"] == w3.instance_id().unwrap_or_default()
        })
        .expect("worker-3 terminated");
    assert!(
        drained < terminated,
        "worker-3 was terminated before it was drained"
    );
    let drain_cmd = ssm.list_commands().send().await.expect("commands");
    let drain = drain_cmd
        .commands()
        .iter()
        .find(|c| c.comment().is_some_and(|m| m.contains("drain")))
        .expect("drain command");
    let script = drain
        .parameters()
        .and_then(|p| p.get("commands"))
        .map(|v| v.join("\n"))
        .unwrap_or_default();
    assert!(
        script.contains(&w3_ip),
        "the drain command does not name worker-3 ({w3_ip}):\n{script}"
    );
    let now = instances_by_logical_id(&ec2, stack).await;
    assert_eq!(
        now.keys().cloned().collect::<Vec<_>>(),
        vec!["manager-1", "worker-1", "worker-2"]
    );
    assert_eq!(now["manager-1"].instance_id(), Some(leader.as_str()));

    // `down` removes the nodes, the address, the group and every parameter (tokens included).
    // The secrets, read by value before `down` deletes them: the join tokens the leader
    // published, the app's secret.
    let secrets = Secrets::read(&emu, stack).await;
    for leaf in ["swarm/manager-token", "swarm/worker-token"] {
        let name = format!("/iac/{stack}/{leaf}");
        assert!(
            secrets.names().contains(&name.as_str()),
            "{:?}",
            secrets.names()
        );
    }
    assert!(
        secrets.names().contains(&"/bookstore/secret-key"),
        "{:?}",
        secrets.names()
    );
    let mut d = emu.iac();
    d.args(["-o", "json", "down", "--stack", stack, "--yes"]);
    let d = runs.keep("down", run_ok(d));
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    assert!(instances_by_logical_id(&ec2, stack).await.is_empty());
    let left = ssm
        .get_parameters_by_path()
        .path(format!("/iac/{stack}/"))
        .recursive(true)
        .send()
        .await
        .expect("params");
    assert!(left.parameters().is_empty(), "{:?}", left.parameters());
    // `down` drains nothing: the whole cluster goes.
    assert!(sent(&d).is_empty());
    // No command printed a secret, nor a part of one.
    assert_eq!(runs.0.len(), 8, "{:?}", runs.commands());
    runs.assert_no_secret(&secrets);
}
