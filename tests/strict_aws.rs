//! `iac` under the strict layer (tests/proxy/strict_aws.py): the rules real AWS enforces and the
//! emulator does not. Each test names the rule and fails without the fix it covers.

mod common;

use common::*;
use serde_json::json;

/// moto's two Ubuntu images: the one the alias resolves to at first, and a newer build.
const OLDER: &str = "ami-1e749f67";
const NEWER: &str = "ami-785db401";

fn table(ami: &str) -> serde_json::Value {
    json!({"parameters": {UBUNTU_2404: ami}, "fresh_seconds": 3})
}

fn up(strict: &StrictAws, emu: &Emulator, file: &std::path::Path, extra: &[&str]) -> Run {
    let mut c = emu.iac_at(&strict.url);
    c.arg("up")
        .arg(file)
        .args(["--yes", "--no-wait"])
        .args(extra);
    run_ok(c)
}

fn down(strict: &StrictAws, emu: &Emulator, file: &std::path::Path) -> Run {
    let mut c = emu.iac_at(&strict.url);
    c.arg("down")
        .arg(file)
        .args(["--yes", "--delete-data", "--skip-final-snapshot"]);
    let r = run(c);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

/// Rule: the public image parameter moves when a newer image is published. An unchanged file
/// replaces nothing; `plan` says a newer image exists; `--refresh-image` moves on purpose.
#[tokio::test]
async fn a_newer_image_for_the_alias_replaces_nothing_until_refresh_image() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let stack = StackFile::example("pinned", &[]);
    up(&strict, &emu, stack.path(), &[]);
    let ec2 = emu.ec2().await;
    let first = instances_by_logical_id(&ec2, "pinned").await;
    let vm = &first["vm"];
    assert_eq!(vm.image_id(), Some(OLDER));
    let t = tag_map(vm.tags());
    assert_eq!(t.get("iac:image-id").map(String::as_str), Some(OLDER));
    assert_eq!(t.get("iac:image").map(String::as_str), Some("ubuntu-24.04"));

    strict.set(table(NEWER));
    let mut plan = emu.iac_at(&strict.url);
    plan.arg("plan")
        .arg(stack.path())
        .arg("--detailed-exitcode");
    let plan = run(plan);
    assert_eq!(
        plan.code, 0,
        "no changes expected:\n{}\n{}",
        plan.stdout, plan.stderr
    );
    let said = format!("{}{}", plan.stdout, plan.stderr);
    assert!(
        said.contains("a newer image is available") && said.contains(NEWER),
        "{said}"
    );
    let again = up(&strict, &emu, stack.path(), &[]);
    assert!(again.stdout.contains("No changes"), "{}", again.stdout);
    let same = instances_by_logical_id(&ec2, "pinned").await;
    assert_eq!(same["vm"].instance_id(), vm.instance_id());

    let mut preview = emu.iac_at(&strict.url);
    preview
        .arg("plan")
        .arg(stack.path())
        .args(["--detailed-exitcode", "--refresh-image"]);
    let preview = run(preview);
    assert_eq!(preview.code, 3, "{}\n{}", preview.stdout, preview.stderr);
    assert!(
        preview.stdout.contains(&format!("image {OLDER} → {NEWER}")),
        "{}",
        preview.stdout
    );
    up(&strict, &emu, stack.path(), &["--refresh-image"]);
    let moved = instances_by_logical_id(&ec2, "pinned").await;
    let vm2 = &moved["vm"];
    assert_ne!(vm2.instance_id(), vm.instance_id());
    assert_eq!(vm2.image_id(), Some(NEWER));
    assert_eq!(
        tag_map(vm2.tags()).get("iac:image-id").map(String::as_str),
        Some(NEWER)
    );
    // Releasing an associated Elastic IP and deleting a group still attached are refused: `down`
    // disassociates and terminates first.
    down(&strict, &emu, stack.path());
}

/// Rule: a ClientToken stays bound to its parameters for 24 hours, while terminated instances
/// drop out of DescribeInstances after about an hour. `up`, `down`, an hour, `up` again must not
/// replay the first launch's token with the new security groups.
#[tokio::test]
async fn up_after_down_and_an_hour_launches_with_a_new_client_token() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let stack = StackFile::example("token", &[]);
    up(&strict, &emu, stack.path(), &[]);
    down(&strict, &emu, stack.path());
    let mut later = table(OLDER);
    later["forget_terminated"] = json!(true);
    strict.set(later);
    up(&strict, &emu, stack.path(), &[]);
    let ec2 = emu.ec2().await;
    assert_eq!(live_instances(&ec2, "token").await.len(), 1);
    down(&strict, &emu, stack.path());
}

/// Rule: a just-created security group or instance profile is not visible to EC2 for a few
/// seconds (InvalidGroup.NotFound, "Invalid IAM Instance Profile name"). `up` retries them.
#[tokio::test]
async fn up_rides_out_groups_and_profiles_that_are_not_visible_yet() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let stack = StackFile::example(
        "fresh",
        &[(
            "instance_profile: LabInstanceProfile",
            "instance_profile: create",
        )],
    );
    let r = up(&strict, &emu, stack.path(), &[]);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("visible"),
        "the retries are reported:\n{said}"
    );
    let ec2 = emu.ec2().await;
    assert_eq!(live_instances(&ec2, "fresh").await.len(), 1);
    down(&strict, &emu, stack.path());
}

/// A VPC with one subnet in a zone that does not offer t3 (us-east-1e) and one that does.
async fn vpc_with_a_t3_less_zone(emu: &Emulator) -> (String, String, String) {
    let ec2 = emu.ec2().await;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .expect("vpc");
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let mut ids = Vec::new();
    for (cidr, zone) in [("10.9.1.0/24", "us-east-1e"), ("10.9.2.0/24", "us-east-1a")] {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .expect("subnet");
        ids.push(
            s.subnet()
                .and_then(|s| s.subnet_id())
                .expect("id")
                .to_string(),
        );
    }
    (vpc_id, ids[0].clone(), ids[1].clone())
}

/// Rule: RunInstances into a zone that does not offer the type fails (`Unsupported`). lb-vms
/// spreads four VMs over the VPC's subnets; only the zone that offers t3.micro is used, and a
/// listed subnet in the other zone is refused before anything is created.
#[tokio::test]
async fn instances_go_only_to_zones_that_offer_their_type() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let (vpc, in_e, in_a) = vpc_with_a_t3_less_zone(&emu).await;
    let stack = StackFile::from_example(
        "stacks/bookstore-lb-vms.yaml",
        "zones",
        &[("  vpc: default", &format!("  vpc: {vpc}"))],
    );
    up(&strict, &emu, stack.path(), &[]);
    let ec2 = emu.ec2().await;
    let vms = live_instances(&ec2, "zones").await;
    assert_eq!(vms.len(), 4);
    assert!(vms.iter().all(|i| i.subnet_id() == Some(in_a.as_str())));
    // Rule: a group still named by another group's rule cannot be deleted (DependencyViolation).
    // `down` revokes the rules between the groups first, so no group waits for another.
    let gone = down(&strict, &emu, stack.path());
    let said = format!("{}{}", gone.stdout, gone.stderr);
    assert!(!said.contains("waiting for security group"), "{said}");

    let listed = StackFile::from_example(
        "stacks/bookstore-lb-vms.yaml",
        "listed",
        &[(
            "  vpc: default",
            &format!("  vpc: {vpc}\n  subnets: [{in_e}, {in_a}]"),
        )],
    );
    let mut plan = emu.iac_at(&strict.url);
    plan.arg("plan").arg(listed.path());
    let r = run(plan);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "subnet {in_e} is in us-east-1e, which does not offer t3.micro"
        )),
        "{}",
        r.stderr
    );
}

/// Rule: a volume detached while its instance still has it mounted stays `busy` on AWS. When
/// the lb-vms database VM is replaced, the old one is stopped before its data volume moves.
#[tokio::test]
async fn a_database_vm_is_stopped_before_its_data_volume_moves() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let stack = StackFile::from_example("stacks/bookstore-lb-vms.yaml", "dbmove", &[]);
    up(&strict, &emu, stack.path(), &[]);
    let ec2 = emu.ec2().await;
    let old = instances_by_logical_id(&ec2, "dbmove").await["db"].clone();
    stack.rewrite(&[(
        "  engine: mysql                  # or mongodb",
        "  engine: mysql\n  type: t3.small",
    )]);
    let r = up(&strict, &emu, stack.path(), &[]);
    assert!(r.stderr.contains("stopping"), "{}", r.stderr);
    let new = instances_by_logical_id(&ec2, "dbmove").await["db"].clone();
    assert_ne!(new.instance_id(), old.instance_id());
    let volumes = ec2
        .describe_volumes()
        .filters(stack_filter("dbmove"))
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:iac:data")
                .values("true")
                .build(),
        )
        .send()
        .await
        .expect("volumes");
    let attached: Vec<_> = volumes
        .volumes()
        .iter()
        .flat_map(|v| v.attachments())
        .filter_map(|a| a.instance_id())
        .collect();
    assert_eq!(attached, [new.instance_id().unwrap_or_default()]);
    down(&strict, &emu, stack.path());
}

/// Rule: a load balancer takes one subnet per zone (`InvalidConfigurationRequest`), and a file
/// system one mount target per zone (`MountTargetConflict`). In a VPC with two subnets in one
/// zone, alb-asg gives both exactly one subnet per zone.
#[tokio::test]
async fn a_load_balancer_and_mount_targets_get_one_subnet_per_zone() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let ec2 = emu.ec2().await;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.8.0.0/16")
        .send()
        .await
        .expect("vpc");
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id");
    let mut zone_of = std::collections::BTreeMap::new();
    for (cidr, zone) in [
        ("10.8.1.0/24", "us-east-1a"),
        ("10.8.2.0/24", "us-east-1a"),
        ("10.8.3.0/24", "us-east-1b"),
    ] {
        let s = ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .expect("subnet");
        let id = s.subnet().and_then(|s| s.subnet_id()).expect("subnet id");
        zone_of.insert(id.to_string(), zone);
    }
    let stack = StackFile::from_example(
        "stacks/bookstore-asg.yaml",
        "perzone",
        &[(
            "  vpc: default                  # the default VPC's subnets span several zones",
            &format!("  vpc: {vpc}"),
        )],
    );
    up(&strict, &emu, stack.path(), &[]);

    let config = emu.config().await;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let lbs = elb.describe_load_balancers().send().await.expect("lbs");
    let lb = lbs
        .load_balancers()
        .iter()
        .find(|l| l.vpc_id() == Some(vpc))
        .expect("the stack's load balancer");
    let lb_zones: Vec<_> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name())
        .collect();
    assert_eq!(lb_zones.len(), 2, "{lb_zones:?}");
    assert!(lb_zones.contains(&"us-east-1a") && lb_zones.contains(&"us-east-1b"));

    let efs = aws_sdk_efs::Client::new(&config);
    let fss = file_systems(&efs, "perzone").await;
    let fs = fss.first().expect("the stack's file system");
    let targets = efs
        .describe_mount_targets()
        .file_system_id(fs.file_system_id())
        .send()
        .await
        .expect("mount targets");
    let mut zones: Vec<_> = targets
        .mount_targets()
        .iter()
        .map(|m| zone_of[m.subnet_id()])
        .collect();
    zones.sort_unstable();
    assert_eq!(zones, ["us-east-1a", "us-east-1b"]);
    down(&strict, &emu, stack.path());
}

/// The error code a call was refused with, or `accepted`.
fn refusal<T, E: aws_sdk_ec2::error::ProvideErrorMetadata>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "accepted".to_string(),
        Err(e) => e.code().unwrap_or("no code").to_string(),
    }
}

/// The strict layer itself: each rule answers with AWS's own error code, so no test above can
/// pass because a rule silently never fired (the load balancer and mount target rules once did,
/// their EC2 lookups being sent to the wrong service).
#[tokio::test]
async fn the_strict_layer_refuses_what_aws_refuses() {
    use aws_sdk_ec2::types::{IpPermission, UserIdGroupPair};
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, json!({"fresh_seconds": 2}));
    let config = sdk_config(&strict.url).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let efs = aws_sdk_efs::Client::new(&config);
    let vpc = ec2.create_vpc().cidr_block("10.7.0.0/16").send().await;
    let vpc = vpc
        .expect("vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("id")
        .to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [
        ("10.7.1.0/24", "us-east-1a"),
        ("10.7.2.0/24", "us-east-1a"),
        ("10.7.3.0/24", "us-east-1e"),
    ] {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(zone);
        let s = s.send().await.expect("subnet");
        subnets.push(
            s.subnet()
                .and_then(|s| s.subnet_id())
                .expect("id")
                .to_string(),
        );
    }
    let (a1, a2, e1) = (&subnets[0], &subnets[1], &subnets[2]);
    let launch = |subnet: &str, itype: &str| {
        ec2.run_instances()
            .image_id(OLDER)
            .instance_type(itype.into())
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
    };
    let group = |name: &str| {
        ec2.create_security_group()
            .group_name(name)
            .description("strict layer test")
            .vpc_id(&vpc)
    };

    assert_eq!(refusal(launch(e1, "t3.micro").send().await), "Unsupported");
    let g1 = group("g1").send().await.expect("group");
    let g1 = g1.group_id().expect("id").to_string();
    let fresh = launch(a1, "t3.micro").security_group_ids(&g1).send().await;
    assert_eq!(refusal(fresh), "InvalidGroup.NotFound");
    let g2 = group("g2").send().await.expect("group");
    let g2 = g2.group_id().expect("id").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;

    let first = launch(a1, "t3.micro").client_token("tok-1").send().await;
    let iid = first.expect("launch").instances()[0]
        .instance_id()
        .expect("id")
        .to_string();
    let replay = launch(a1, "t3.small").client_token("tok-1").send().await;
    assert_eq!(refusal(replay), "IdempotentParameterMismatch");

    let lb = elb
        .create_load_balancer()
        .name("lb-1")
        .subnets(a1)
        .subnets(a2);
    assert_eq!(refusal(lb.send().await), "InvalidConfigurationRequest");
    let fs = efs
        .create_file_system()
        .creation_token("strict")
        .send()
        .await;
    let fs = fs.expect("file system").file_system_id().to_string();
    let mount = |subnet: &str| {
        efs.create_mount_target()
            .file_system_id(&fs)
            .subnet_id(subnet)
    };
    mount(a1).send().await.expect("first mount target");
    assert_eq!(refusal(mount(a2).send().await), "MountTargetConflict");

    let pair = UserIdGroupPair::builder().group_id(&g1).build();
    let rule = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(80)
        .to_port(80)
        .user_id_group_pairs(pair)
        .build();
    let allow = ec2
        .authorize_security_group_ingress()
        .group_id(&g2)
        .ip_permissions(rule);
    allow.send().await.expect("rule");
    let delete = ec2.delete_security_group().group_id(&g1).send().await;
    assert_eq!(refusal(delete), "DependencyViolation");

    let eip = ec2.allocate_address().send().await.expect("address");
    let eip = eip.allocation_id().expect("id").to_string();
    let assoc = ec2
        .associate_address()
        .allocation_id(&eip)
        .instance_id(&iid);
    assoc.send().await.expect("associate");
    let release = ec2.release_address().allocation_id(&eip).send().await;
    assert_eq!(refusal(release), "InvalidIPAddress.InUse");
}

/// Rule: a deprecated Aurora version cannot create new clusters. `plan` asks
/// DescribeDBEngineVersions (answered by the strict layer from its table, as AWS lists only the
/// versions new clusters may use) and refuses the old version before anything is created.
#[tokio::test]
async fn a_deprecated_aurora_version_is_refused_by_plan() {
    let emu = Emulator::start();
    let strict = StrictAws::start(
        &emu,
        json!({
            "parameters": {UBUNTU_2404: OLDER},
            "engine_versions": {"aurora-mysql": ["8.0.mysql_aurora.3.08.2"]},
        }),
    );
    let plan = |version: &str| {
        let stack = StackFile::from_example(
            "stacks/bookstore-asg.yaml",
            "aurora",
            &[(
                "  # version: 8.0.mysql_aurora.3.08.2",
                &format!("  version: {version} #"),
            )],
        );
        let mut c = emu.iac_at(&strict.url);
        c.arg("plan").arg(stack.path());
        run(c)
    };
    let old = plan("8.0.mysql_aurora.3.05.2");
    assert_ne!(old.code, 0, "{}", old.stdout);
    assert!(
        old.stderr.contains(
            "database.version 8.0.mysql_aurora.3.05.2 is not available for new aurora-mysql clusters"
        ),
        "{}",
        old.stderr
    );
    let current = plan("8.0.mysql_aurora.3.08.2");
    assert_eq!(current.code, 0, "{}\n{}", current.stdout, current.stderr);
    assert!(
        !current.stderr.contains("not checked"),
        "{}",
        current.stderr
    );
    assert!(live_instances(&emu.ec2().await, "aurora").await.is_empty());
}

/// `iac -o json ARGS FILE` through the strict layer, whatever its exit code.
fn iac_json(strict: &StrictAws, emu: &Emulator, args: &[&str], file: &std::path::Path) -> Run {
    let mut c = emu.iac_at(&strict.url);
    c.args(["-o", "json"]).args(args).arg(file);
    run(c)
}

/// The plan's change to the one resource of `kind`.
fn change_of(r: &Run, kind: &str) -> serde_json::Value {
    let changes = r.record("plan")["changes"].clone();
    let mine: Vec<_> = changes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["kind"] == kind)
        .cloned()
        .collect();
    assert_eq!(mine.len(), 1, "one {kind} expected: {changes}");
    mine[0].clone()
}

/// Rule: the public image parameter moves. alb-asg pins the image on its launch template (tags
/// `iac:image`, `iac:image-id` on the template, the id in its version's data): a newer image
/// makes no new template version until `--refresh-image`.
#[tokio::test]
async fn a_newer_image_makes_no_new_launch_template_version() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let stack = StackFile::from_example("stacks/bookstore-asg.yaml", "ltpin", &[]);
    up(&strict, &emu, stack.path(), &[]);
    let ec2 = emu.ec2().await;
    let templates = |ec2: aws_sdk_ec2::Client| async move {
        ec2.describe_launch_templates()
            .filters(stack_filter("ltpin"))
            .send()
            .await
            .expect("templates")
            .launch_templates()
            .to_vec()
    };
    let lts = templates(ec2.clone()).await;
    assert_eq!(lts.len(), 1, "{lts:?}");
    let lt = &lts[0];
    let lt_id = lt.launch_template_id().expect("id").to_string();
    let t = tag_map(lt.tags());
    assert_eq!(t.get("iac:image-id").map(String::as_str), Some(OLDER));
    assert_eq!(t.get("iac:image").map(String::as_str), Some("ubuntu-24.04"));
    let version = |ec2: aws_sdk_ec2::Client, id: String| async move {
        let v = ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .versions("$Latest")
            .send()
            .await
            .expect("versions");
        let v = v.launch_template_versions()[0].clone();
        (
            v.version_number(),
            v.launch_template_data()
                .and_then(|d| d.image_id())
                .map(str::to_string),
        )
    };
    let (first, image) = version(ec2.clone(), lt_id.clone()).await;
    assert_eq!(image.as_deref(), Some(OLDER));

    strict.set(table(NEWER));
    let plan = iac_json(
        &strict,
        &emu,
        &["plan", "--detailed-exitcode"],
        stack.path(),
    );
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert_eq!(
        change_of(&plan, "launch-template")["action"]["action"],
        "keep"
    );
    let again = iac_json(&strict, &emu, &["up", "--yes", "--no-wait"], stack.path());
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    // Nothing to do: `up` records no plan at all, or one that keeps the template.
    if again.records().iter().any(|r| r["event"] == "plan") {
        assert_eq!(
            change_of(&again, "launch-template")["action"]["action"],
            "keep"
        );
    }
    assert!(
        again.stdout.contains("a newer image is available"),
        "{}",
        again.stdout
    );
    let mutating = again.record("summary")["mutating_calls"].clone();
    assert!(
        mutating.get("ec2:CreateLaunchTemplateVersion").is_none()
            && mutating.get("ec2:CreateLaunchTemplate").is_none(),
        "{mutating}"
    );
    assert_eq!(
        version(ec2.clone(), lt_id.clone()).await,
        (first, Some(OLDER.to_string()))
    );

    let refresh = iac_json(
        &strict,
        &emu,
        &["plan", "--detailed-exitcode", "--refresh-image"],
        stack.path(),
    );
    assert_eq!(refresh.code, 3, "{}\n{}", refresh.stdout, refresh.stderr);
    let lt_change = change_of(&refresh, "launch-template");
    assert_ne!(lt_change["action"]["action"], "keep", "{lt_change}");
    down(&strict, &emu, stack.path());
}

/// `instance.image_policy: latest`: the alias is resolved on every run, so once it moves `plan`
/// replaces the instance without `--refresh-image`, and `up` moves it to the new image.
#[tokio::test]
async fn image_policy_latest_follows_the_alias_without_refresh_image() {
    let emu = Emulator::start();
    let strict = StrictAws::start(&emu, table(OLDER));
    let stack = StackFile::example(
        "latest",
        &[(
            "  image: ubuntu-24.04\n",
            "  image: ubuntu-24.04\n  image_policy: latest\n",
        )],
    );
    up(&strict, &emu, stack.path(), &[]);
    let ec2 = emu.ec2().await;
    let first = instances_by_logical_id(&ec2, "latest").await["vm"].clone();
    assert_eq!(first.image_id(), Some(OLDER));

    strict.set(table(NEWER));
    let mut plan = emu.iac_at(&strict.url);
    plan.arg("plan")
        .arg(stack.path())
        .arg("--detailed-exitcode");
    let plan = run(plan);
    assert_eq!(plan.code, 3, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains(&format!("image {OLDER} → {NEWER}")),
        "{}",
        plan.stdout
    );
    let said = format!("{}{}", plan.stdout, plan.stderr);
    assert!(said.contains("instance.image_policy: latest"), "{said}");
    assert!(!said.contains("a newer image is available"), "{said}");
    let json = iac_json(&strict, &emu, &["plan"], stack.path());
    assert_eq!(
        change_of(&json, "instance")["action"]["action"],
        "replace",
        "{}",
        json.stdout
    );

    up(&strict, &emu, stack.path(), &[]);
    let moved = instances_by_logical_id(&ec2, "latest").await["vm"].clone();
    assert_ne!(moved.instance_id(), first.instance_id());
    assert_eq!(moved.image_id(), Some(NEWER));
    assert_eq!(
        tag_map(moved.tags())
            .get("iac:image-id")
            .map(String::as_str),
        Some(NEWER)
    );
    down(&strict, &emu, stack.path());
}

/// An endpoint that does not answer DescribeDBEngineVersions (a bare HTTP 500, no AWS error
/// code, as an emulator that lacks the call answers): under an endpoint override the check of a
/// pinned Aurora version is skipped with a note, and `plan` goes on.
#[tokio::test]
async fn an_unanswered_engine_version_check_is_skipped_with_a_note() {
    let emu = Emulator::start();
    let strict = StrictAws::start(
        &emu,
        json!({
            "parameters": {UBUNTU_2404: OLDER},
            "unanswered": ["DescribeDBEngineVersions"],
        }),
    );
    let stack = StackFile::from_example(
        "stacks/bookstore-asg.yaml",
        "unchecked",
        &[(
            "  # version: 8.0.mysql_aurora.3.08.2",
            "  version: 8.0.mysql_aurora.3.08.2 #",
        )],
    );
    let mut c = emu.iac_at(&strict.url);
    c.arg("plan").arg(stack.path());
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains(&format!(
            "database.version 8.0.mysql_aurora.3.08.2 not checked: {} does not answer DescribeDBEngineVersions",
            strict.url
        )),
        "{said}"
    );
    assert!(
        r.stdout.contains("db-cluster") && r.stdout.contains(" to create,"),
        "the plan goes on:\n{}",
        r.stdout
    );
    assert!(live_instances(&emu.ec2().await, "unchecked")
        .await
        .is_empty());
}
