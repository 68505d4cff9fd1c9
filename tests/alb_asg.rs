//! The alb-asg tier end to end against the emulator: every resource and its settings, rules
//! checked one by one, idempotency, in-place scaling changes, rollouts through a new launch
//! template version and an instance refresh, and `down` that keeps data unless told otherwise.

mod common;

use std::collections::BTreeMap;

use aws_sdk_autoscaling::types::{AutoScalingGroup, ScalingPolicy};
use aws_sdk_ec2::types::{LaunchTemplateVersion, ResponseLaunchTemplateData};
use aws_sdk_rds::types::DbCluster;
use base64::Engine;
use common::*;

fn up(emu: &Emulator, file: &std::path::Path) -> Run {
    let mut c = emu.iac();
    c.args(["-o", "json", "up"]).arg(file).arg("--yes");
    run_ok(c)
}

/// The stack's Auto Scaling group, if it exists.
async fn group(asg: &aws_sdk_autoscaling::Client, stack: &str) -> Option<AutoScalingGroup> {
    asg.describe_auto_scaling_groups()
        .auto_scaling_group_names(format!("{stack}-asg"))
        .send()
        .await
        .expect("describe groups")
        .auto_scaling_groups()
        .first()
        .cloned()
}

/// The scaling policies of the stack's group.
async fn policies(asg: &aws_sdk_autoscaling::Client, stack: &str) -> Vec<ScalingPolicy> {
    asg.describe_policies()
        .auto_scaling_group_name(format!("{stack}-asg"))
        .send()
        .await
        .expect("describe policies")
        .scaling_policies()
        .to_vec()
}

/// Versions of launch template `lt_id`: those named, or all of them.
async fn template_versions(
    ec2: &aws_sdk_ec2::Client,
    lt_id: &str,
    versions: &[&str],
) -> Vec<LaunchTemplateVersion> {
    let mut call = ec2
        .describe_launch_template_versions()
        .launch_template_id(lt_id);
    for v in versions {
        call = call.versions(*v);
    }
    call.send()
        .await
        .expect("describe template versions")
        .launch_template_versions()
        .to_vec()
}

/// The user-data of a template version, decoded.
fn user_data(data: &ResponseLaunchTemplateData) -> String {
    let ud = base64::engine::general_purpose::STANDARD
        .decode(data.user_data().unwrap_or_default())
        .expect("base64");
    String::from_utf8_lossy(&ud).to_string()
}

/// The stack's Aurora cluster, if it exists (describing a missing one is an error).
async fn cluster(rds: &aws_sdk_rds::Client, stack: &str) -> Option<DbCluster> {
    rds.describe_db_clusters()
        .db_cluster_identifier(format!("{stack}-db"))
        .send()
        .await
        .ok()
        .and_then(|c| c.db_clusters().first().cloned())
}

/// The value of SSM parameter `name`, if it exists.
async fn param(ssm: &aws_sdk_ssm::Client, name: &str) -> Option<String> {
    ssm.get_parameter()
        .name(name)
        .send()
        .await
        .ok()
        .and_then(|o| o.parameter().and_then(|p| p.value()).map(str::to_string))
}

/// Rules of every group of the stack, by group name suffix, as (port, source) where the source
/// is a CIDR or `group:<suffix>`.
async fn rules(ec2: &aws_sdk_ec2::Client, stack: &str) -> BTreeMap<String, Vec<(i32, String)>> {
    let groups = ec2
        .describe_security_groups()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("groups");
    let names: BTreeMap<String, String> = groups
        .security_groups()
        .iter()
        .map(|g| {
            (
                g.group_id().unwrap_or_default().to_string(),
                g.group_name()
                    .unwrap_or_default()
                    .trim_start_matches(&format!("{stack}-"))
                    .to_string(),
            )
        })
        .collect();
    groups
        .security_groups()
        .iter()
        .map(|g| {
            let mut v = Vec::new();
            for p in g.ip_permissions() {
                let port = p.from_port().unwrap_or(-1);
                assert_eq!(p.from_port(), p.to_port());
                v.extend(
                    p.ip_ranges()
                        .iter()
                        .map(|r| (port, r.cidr_ip().unwrap_or_default().to_string())),
                );
                v.extend(
                    p.ipv6_ranges()
                        .iter()
                        .map(|r| (port, r.cidr_ipv6().unwrap_or_default().to_string())),
                );
                v.extend(p.user_id_group_pairs().iter().map(|u| {
                    (
                        port,
                        format!("group:{}", names[u.group_id().unwrap_or_default()]),
                    )
                }));
            }
            v.sort();
            (names[g.group_id().unwrap_or_default()].clone(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alb_asg_up_change_rollout_and_down() {
    let emu = Emulator::start();
    let stack = "asg-full";
    let file = StackFile::from_example("stacks/bookstore-asg.yaml", stack, &[]);
    // Every command's output, checked for secret values once the stack is down.
    let mut runs = Runs::default();
    let r = runs.keep("up", up(&emu, file.path()));
    let cfg = emu.config().await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&cfg);
    let asg = aws_sdk_autoscaling::Client::new(&cfg);
    let rds = aws_sdk_rds::Client::new(&cfg);
    let efs = aws_sdk_efs::Client::new(&cfg);
    let ssm = aws_sdk_ssm::Client::new(&cfg);

    // Independent branches ran side by side: database, file system and load balancer work
    // overlapped (a later branch started before an earlier one finished).
    let events = r.records();
    let first = |ev: &str, id: &str| {
        events
            .iter()
            .position(|e| e["event"] == ev && e["id"] == id)
            .unwrap_or_else(|| panic!("no {ev} for {id}"))
    };
    assert!(
        first("started", "alb") < first("done", "db"),
        "the load balancer waited for the database"
    );
    assert!(
        first("started", "efs") < first("done", "db"),
        "the file system waited for the database"
    );

    // Security groups, least privilege: the world (IPv4 and IPv6) only on the load balancer.
    let want: BTreeMap<String, Vec<(i32, String)>> = [
        (
            "alb".to_string(),
            vec![
                (80, "0.0.0.0/0".into()),
                (80, "::/0".into()),
                (443, "0.0.0.0/0".into()),
                (443, "::/0".into()),
            ],
        ),
        (
            "web".to_string(),
            vec![(22, "203.0.113.0/24".into()), (5000, "group:alb".into())],
        ),
        ("db".to_string(), vec![(3306, "group:web".into())]),
        ("efs".to_string(), vec![(2049, "group:web".into())]),
    ]
    .into_iter()
    .collect();
    assert_eq!(rules(&ec2, stack).await, want);

    // Launch template: IMDSv2, encrypted root volume, the web group, no secret in the user-data.
    let lts = ec2
        .describe_launch_templates()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("templates");
    assert_eq!(lts.launch_templates().len(), 1);
    let lt_id = lts.launch_templates()[0]
        .launch_template_id()
        .expect("lt id")
        .to_string();
    let versions = template_versions(&ec2, &lt_id, &[]).await;
    assert_eq!(versions.len(), 1);
    let data = versions[0].launch_template_data().expect("data");
    assert_eq!(
        data.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    let ebs = data.block_device_mappings()[0].ebs().expect("ebs");
    assert_eq!(ebs.encrypted(), Some(true));
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some("LabInstanceProfile")
    );
    let ud = user_data(data);
    assert!(
        ud.contains("db-secret-arn") && ud.contains("efs-id"),
        "the user-data reads its facts from SSM"
    );
    assert!(
        !ud.to_ascii_lowercase().contains("password="),
        "no password in the user-data"
    );

    // Target group, load balancer, listener.
    let tgs = elb
        .describe_target_groups()
        .names(format!("{stack}-tg"))
        .send()
        .await
        .expect("tg");
    let tg = &tgs.target_groups()[0];
    let tg_arn = tg.target_group_arn().expect("arn").to_string();
    assert_eq!(tg.port(), Some(5000));
    assert_eq!(tg.health_check_path(), Some("/book/catalog"));
    assert_eq!(tg.healthy_threshold_count(), Some(2));
    assert_eq!(tg.unhealthy_threshold_count(), Some(3));
    let attrs = elb
        .describe_target_group_attributes()
        .target_group_arn(&tg_arn)
        .send()
        .await
        .expect("attrs");
    let dereg = attrs
        .attributes()
        .iter()
        .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
        .and_then(|a| a.value());
    assert_eq!(dereg, Some("30"));
    let lbs = elb
        .describe_load_balancers()
        .names(format!("{stack}-alb"))
        .send()
        .await
        .expect("alb");
    let lb = &lbs.load_balancers()[0];
    assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
    let zones: std::collections::BTreeSet<_> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name())
        .collect();
    assert!(zones.len() >= 2, "the load balancer spans {zones:?}");
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
        .send()
        .await
        .expect("listeners");
    assert_eq!(listeners.listeners().len(), 1);
    assert_eq!(listeners.listeners()[0].port(), Some(80));
    assert_eq!(
        listeners.listeners()[0].default_actions()[0].target_group_arn(),
        Some(tg_arn.as_str())
    );

    // The group and its policy.
    let g = group(&asg, stack).await.expect("the group");
    assert_eq!(
        (g.min_size(), g.max_size(), g.desired_capacity()),
        (Some(2), Some(6), Some(2))
    );
    assert_eq!(g.target_group_arns(), std::slice::from_ref(&tg_arn));
    assert_eq!(g.health_check_type(), Some("ELB"));
    assert_eq!(g.health_check_grace_period(), Some(300));
    assert_eq!(
        g.launch_template().and_then(|l| l.launch_template_id()),
        Some(lt_id.as_str())
    );
    assert!(g
        .vpc_zone_identifier()
        .is_some_and(|z| z.split(',').count() >= 2));
    let propagated: Vec<_> = g
        .tags()
        .iter()
        .filter(|t| t.propagate_at_launch() == Some(true))
        .filter_map(|t| t.key())
        .collect();
    assert!(
        propagated.contains(&"iac:stack") && !propagated.contains(&"iac:id"),
        "{propagated:?}"
    );
    let tracking = policies(&asg, stack).await;
    assert_eq!(tracking.len(), 1);
    let p = &tracking[0];
    assert_eq!(p.policy_type(), Some("TargetTrackingScaling"));
    assert_eq!(
        p.target_tracking_configuration()
            .and_then(|t| t.target_value()),
        Some(50.0)
    );
    assert_eq!(p.estimated_instance_warmup(), Some(120));

    // Aurora: encrypted, backups, password managed by RDS; the endpoint handed to the app.
    let c = cluster(&rds, stack).await.expect("the cluster");
    assert_eq!(c.storage_encrypted(), Some(true));
    assert_eq!(c.backup_retention_period(), Some(7));
    assert_eq!(c.engine(), Some("aurora-mysql"));
    assert!(
        c.master_user_secret()
            .and_then(|s| s.secret_arn())
            .is_some(),
        "the password is managed by RDS"
    );
    let endpoint = c.endpoint().expect("endpoint").to_string();
    assert_eq!(
        param(&ssm, &format!("/iac/{stack}/db-endpoint")).await,
        Some(endpoint.clone())
    );
    let insts = rds.describe_db_instances().send().await.expect("instances");
    let mine: Vec<_> = insts
        .db_instances()
        .iter()
        .filter(|i| i.db_cluster_identifier() == Some(&format!("{stack}-db")))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].db_instance_class(), Some("db.t3.medium"));
    assert_eq!(
        r.record("outputs")["outputs"]["database_endpoint"],
        endpoint.as_str()
    );
    // The password RDS manages is in Secrets Manager, and neither it nor any other secret
    // value is in what `up` printed (checked by value, not by the name of a field).
    let master_secret = c
        .master_user_secret()
        .and_then(|s| s.secret_arn())
        .expect("the secret's ARN")
        .to_string();
    let mut secrets = Secrets::read(&emu, stack).await;
    assert!(
        secrets
            .names()
            .iter()
            .any(|n| !n.starts_with('/') && master_secret.contains(n)),
        "the managed password ({master_secret}) was not read: {:?}",
        secrets.names()
    );
    assert!(
        secrets.names().contains(&"/bookstore/secret-key"),
        "{:?}",
        secrets.names()
    );
    secrets.assert_absent(&[&r]);

    // EFS: encrypted, a mount target in every subnet of the group.
    let fss = file_systems(&efs, stack).await;
    assert_eq!(fss.len(), 1);
    let fs = &fss[0];
    assert_eq!(fs.encrypted(), Some(true));
    let fs_id = fs.file_system_id().to_string();
    assert_eq!(
        param(&ssm, &format!("/iac/{stack}/efs-id")).await,
        Some(fs_id.clone())
    );
    let mts = efs
        .describe_mount_targets()
        .file_system_id(&fs_id)
        .send()
        .await
        .expect("mount targets");
    let mt_subnets: std::collections::BTreeSet<String> = mts
        .mount_targets()
        .iter()
        .map(|m| m.subnet_id().to_string())
        .collect();
    let group_subnets: std::collections::BTreeSet<String> = g
        .vpc_zone_identifier()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(mt_subnets, group_subnets);
    // The load balancer is in exactly the group's subnets.
    let lb_subnets: std::collections::BTreeSet<String> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id())
        .map(str::to_string)
        .collect();
    assert_eq!(lb_subnets, group_subnets);

    // A second `up`: no mutating call, and its outputs come from what its plan saw, not from a
    // second discovery (one DescribeInstances, one DescribeAutoScalingGroups).
    let again = runs.keep("up (again)", up(&emu, file.path()));
    let summary = again.record("summary");
    assert_eq!(summary["mutating_calls"], serde_json::json!({}));
    for op in [
        "ec2:DescribeInstances",
        "autoscaling:DescribeAutoScalingGroups",
        "elasticloadbalancingv2:DescribeLoadBalancers",
    ] {
        assert_eq!(
            summary["api_calls"][op], 1,
            "{op}: {}",
            summary["api_calls"]
        );
    }
    assert!(
        again.stdout.contains("load_balancer_dns"),
        "the outputs are there: {}",
        again.stdout
    );
    // `plan` (as data) has nothing to do; `status` shows the group and the database.
    let mut c = emu.iac();
    c.args(["-o", "json", "plan"]).arg(file.path());
    let plan = runs.keep("-o json plan", run_ok(c));
    let counts = plan.record("plan")["summary"].clone();
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
    for name in [format!("{stack}-asg"), endpoint.clone()] {
        assert!(
            status.stdout.contains(&name),
            "{name} missing from:\n{}",
            status.stdout
        );
    }

    // Sizes and the CPU target change in place: no new template version, no refresh.
    file.rewrite(&[
        ("desired: 2", "desired: 3"),
        ("cpu_target: 50", "cpu_target: 60"),
    ]);
    let r = runs.keep("up (sizes)", up(&emu, file.path()));
    let summary = &r.record("plan")["summary"];
    assert_eq!(
        (
            summary["update"].as_u64(),
            summary["replace"].as_u64(),
            summary["create"].as_u64()
        ),
        (Some(2), Some(0), Some(0)),
        "{summary}"
    );
    let mutating = r.record("summary")["mutating_calls"].clone();
    assert!(
        mutating.get("ec2:CreateLaunchTemplateVersion").is_none()
            && mutating.get("autoscaling:StartInstanceRefresh").is_none(),
        "{mutating}"
    );
    assert_eq!(
        group(&asg, stack).await.and_then(|g| g.desired_capacity()),
        Some(3)
    );
    let tracking = policies(&asg, stack).await;
    assert_eq!(tracking.len(), 1);
    assert_eq!(
        tracking[0]
            .target_tracking_configuration()
            .and_then(|t| t.target_value()),
        Some(60.0)
    );

    // A new image: a new template version (the default) and a rolling instance refresh.
    file.rewrite(&[("bookstore:1.0.0", "bookstore:1.1.0")]);
    let r = runs.keep("up (image)", up(&emu, file.path()));
    let mutating = r.record("summary")["mutating_calls"].clone();
    assert_eq!(mutating["ec2:CreateLaunchTemplateVersion"], 1, "{mutating}");
    // moto 5.2.5 does not implement instance refreshes: iac finds out from its answer to
    // DescribeInstanceRefreshes (no error code), says so once, and starts none.
    assert!(
        mutating.get("autoscaling:StartInstanceRefresh").is_none(),
        "{mutating}"
    );
    let warnings: Vec<String> = r
        .records()
        .iter()
        .filter(|e| e["event"] == "warning")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .filter(|m| m.contains("instance refresh"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("the endpoint does not implement instance refreshes (autoscaling:DescribeInstanceRefreshes failed: HTTP 500"),
        "{warnings:?}"
    );
    assert!(
        mutating.get("ec2:CreateLaunchTemplate").is_none()
            && mutating.get("autoscaling:CreateAutoScalingGroup").is_none(),
        "{mutating}"
    );
    let lt = ec2
        .describe_launch_templates()
        .launch_template_ids(&lt_id)
        .send()
        .await
        .expect("lt");
    assert_eq!(lt.launch_templates()[0].default_version_number(), Some(2));
    let v2 = template_versions(&ec2, &lt_id, &["2"]).await;
    let ud2 = user_data(v2[0].launch_template_data().expect("data"));
    assert!(ud2.contains("bookstore:1.1.0"));
    // The group runs the new version, a number (the emulator cannot refresh: the group takes
    // it at once), and the next plan has nothing to do. (Through the strict layer: moto lists a
    // launch template's tags as they were at its creation, not the new version's spec hash.)
    assert_eq!(
        group(&asg, stack).await.and_then(|g| g
            .launch_template()
            .and_then(|l| l.version().map(str::to_string))),
        Some("2".to_string())
    );
    let strict = StrictAws::start(&emu, serde_json::json!({}));
    let mut p = emu.iac_at(&strict.url);
    p.args(["plan"]).arg(file.path()).arg("--detailed-exitcode");
    let p = runs.keep("plan --detailed-exitcode", run(p));
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);

    // `down`: a final snapshot and the file system are kept (exit 4); nothing else is left.
    secrets.merge(Secrets::read(&emu, stack).await);
    let mut d = emu.iac();
    d.args(["-o", "json", "down", "--stack", stack, "--yes"]);
    let d = runs.keep("down", run(d));
    assert_eq!(d.code, 4, "{}\n{}", d.stdout, d.stderr);
    let verified = d.record("verified");
    assert_eq!(verified["remaining"], serde_json::json!([]));
    let kept = verified["kept"].as_array().cloned().unwrap_or_default();
    assert!(
        kept.iter()
            .any(|k| k.as_str().is_some_and(|k| k.contains(&fs_id))),
        "{kept:?}"
    );
    assert!(
        kept.iter()
            .any(|k| k.as_str().is_some_and(|k| k.contains("final"))),
        "{kept:?}"
    );
    let snaps = rds
        .describe_db_cluster_snapshots()
        .db_cluster_identifier(format!("{stack}-db"))
        .send()
        .await
        .expect("snapshots");
    assert!(snaps.db_cluster_snapshots().iter().any(|s| s
        .db_cluster_snapshot_identifier()
        .is_some_and(|i| i.contains("final"))));
    assert!(cluster(&rds, stack).await.is_none());
    assert!(group(&asg, stack).await.is_none());
    assert_eq!(
        efs.describe_file_systems()
            .file_system_id(&fs_id)
            .send()
            .await
            .expect("efs kept")
            .file_systems()
            .len(),
        1
    );
    // No command printed a secret, nor a part of one.
    assert_eq!(runs.0.len(), 8, "{:?}", runs.commands());
    runs.assert_no_secret(&secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_with_skip_final_snapshot_and_delete_data_leaves_nothing() {
    let emu = Emulator::start();
    let stack = "asg-gone";
    let file = StackFile::from_example("stacks/bookstore-asg.yaml", stack, &[]);
    up(&emu, file.path());
    let mut d = emu.iac();
    d.args([
        "-o",
        "json",
        "down",
        "--stack",
        stack,
        "--yes",
        "--skip-final-snapshot",
        "--delete-data",
    ]);
    let d = run_ok(d);
    let verified = d.record("verified");
    assert_eq!(verified["remaining"], serde_json::json!([]));
    assert_eq!(verified["kept"], serde_json::json!([]));
    let cfg = emu.config().await;
    let rds = aws_sdk_rds::Client::new(&cfg);
    let snaps = rds
        .describe_db_cluster_snapshots()
        .snapshot_type("manual")
        .send()
        .await
        .expect("snapshots");
    assert!(
        snaps.db_cluster_snapshots().is_empty(),
        "{:?}",
        snaps.db_cluster_snapshots()
    );
    let efs = aws_sdk_efs::Client::new(&cfg);
    assert!(file_systems(&efs, stack).await.is_empty());
}

/// The scaling policy owns the live capacity: an `up` with no change to the stack's desired
/// count leaves a scaled-out group alone, while a change of the stack's value is applied.
#[tokio::test(flavor = "multi_thread")]
async fn up_does_not_undo_what_the_scaling_policy_did() {
    let emu = Emulator::start();
    let stack = "asg-policy";
    let file = StackFile::from_example("stacks/bookstore-asg.yaml", stack, &[]);
    up(&emu, file.path());
    let asg = aws_sdk_autoscaling::Client::new(&emu.config().await);
    // What target tracking does under load.
    asg.set_desired_capacity()
        .auto_scaling_group_name(format!("{stack}-asg"))
        .desired_capacity(5)
        .send()
        .await
        .expect("scale out");
    let r = up(&emu, file.path());
    assert_eq!(r.record("summary")["mutating_calls"], serde_json::json!({}));
    let desired = || async { group(&asg, stack).await.and_then(|g| g.desired_capacity()) };
    assert_eq!(desired().await, Some(5));
    // Raising max alone keeps the policy's capacity; a new desired count in the file is applied.
    file.rewrite(&[("max: 6", "max: 7")]);
    up(&emu, file.path());
    assert_eq!(desired().await, Some(5));
    file.rewrite(&[("desired: 2", "desired: 3")]);
    up(&emu, file.path());
    assert_eq!(desired().await, Some(3));
}
