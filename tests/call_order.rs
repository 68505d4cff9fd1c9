//! The order of `iac`'s AWS calls, not only the state they leave: every tier's `up` and `down`
//! run through the logging proxy (bench/slow_proxy.py `--calls`), and the log must show each
//! create answered before a call that names what it made was sent (a security group before the
//! instance or launch template that uses it, a target group and load balancer before their
//! listener, a cluster before its instance, the parameters an instance reads at boot before the
//! instance), and `down` in reverse. single-vm's replacement moves the address and the data
//! volume before the old VM goes; a new VM's address and volume are made while it launches.
//! `down` rides out `DependencyViolation` on a security group and, past
//! `--dependency-timeout`, fails naming the group. A second `up` of each tier's example
//! changes nothing but the lock and sends no read twice (one per kind).

mod common;

use std::time::{Duration, Instant};

use common::*;

const RUN: &str = "ec2:RunInstances";
const NEW_SG: &str = "ec2:CreateSecurityGroup";
const DEL_SG: &str = "ec2:DeleteSecurityGroup";
const RULES: &str = "ec2:AuthorizeSecurityGroupIngress";
const TERMINATE: &str = "ec2:TerminateInstances";
const PUT: &str = "ssm:PutParameter";
const DELETE_PARAM: &str = "ssm:DeleteParameter";
const NEW_LT: &str = "ec2:CreateLaunchTemplate";
const DEL_LT: &str = "ec2:DeleteLaunchTemplate";
const NEW_ASG: &str = "autoscaling:CreateAutoScalingGroup";
const DEL_ASG: &str = "autoscaling:DeleteAutoScalingGroup";

/// An emulator, the logging proxy in front of it and the example `example` as stack `stack`,
/// brought up through the proxy; the log holds that `up`.
fn up_logged(example: &str, stack: &str) -> (Emulator, AwsProxy, StackFile, Calls) {
    let emu = Emulator::start();
    let proxy = AwsProxy::logging(&emu);
    let file = StackFile::from_example(example, stack, &[]);
    iac_up(&emu, &proxy.url, file.path());
    let calls = proxy.calls();
    (emu, proxy, file, calls)
}

/// `down --delete-data` (and `extra`) through the proxy, which must leave nothing; the calls it
/// made.
fn down_logged(emu: &Emulator, proxy: &AwsProxy, stack: &str, extra: &[&str]) -> Calls {
    let before = proxy.calls().0.len();
    let mut args = vec!["--delete-data"];
    args.extend(extra);
    let d = iac_down(emu, &proxy.url, stack, &args);
    assert_eq!(d.code, 0, "{}\n{}", d.stdout, d.stderr);
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    proxy.calls().since(before)
}

fn param(stack: &str, leaf: &str) -> String {
    format!("/iac/{stack}/{leaf}")
}

/// Each security group of `groups` (by name) is deleted exactly once: no `DependencyViolation`
/// retry, so nothing used it any more.
fn each_group_deleted_once(calls: &Calls, groups: &[&str]) {
    for g in groups {
        assert_eq!(calls.of(DEL_SG, g).len(), 1, "{g}:\n{}", calls.changes());
    }
}

/// The instance id among a call's ids.
fn instance_in(call: &Call) -> String {
    call.ids
        .iter()
        .find(|i| i.starts_with("i-"))
        .cloned()
        .unwrap_or_else(|| panic!("no instance in {call:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn single_vm_creates_before_use_and_deletes_in_reverse() {
    let stack = "order-vm";
    let (emu, proxy, _file, calls) = up_logged("stacks/bookstore-vm.yaml", stack);
    let sg = calls.created(NEW_SG, &format!("{stack}-web"));
    let vm = calls.created(RUN, &sg);
    let eip = calls.created("ec2:AllocateAddress", "");
    let vol = calls.created("ec2:CreateVolume", "");
    calls.assert_in_order(&[(NEW_SG, &sg), (RULES, &sg), (RUN, &sg)]);
    for leaf in ["db-password", "app"] {
        calls.assert_before((PUT, &param(stack, leaf)), (RUN, &sg));
    }
    calls.assert_before((RUN, &vm), ("ec2:AssociateAddress", &vm));
    calls.assert_before(
        ("ec2:AllocateAddress", &eip),
        ("ec2:AssociateAddress", &eip),
    );
    calls.assert_before(("ec2:CreateVolume", &vol), ("ec2:AttachVolume", &vol));
    calls.assert_before((RUN, &vm), ("ec2:AttachVolume", &vm));
    calls.assert_before(
        ("ec2:AllocateAddress", &eip),
        ("route53:ChangeResourceRecordSets", "books.example.org."),
    );
    // The address is allocated with its record's tags (`iac:dns-record`, which `down` finds the
    // record by): nothing is tagged after its creation.
    let tagged = calls.of("ec2:CreateTags", "");
    assert!(tagged.is_empty(), "tagged after creation: {tagged:?}");

    let calls = down_logged(&emu, &proxy, stack, &[]);
    calls.assert_in_order(&[
        ("route53:ChangeResourceRecordSets", "books.example.org."),
        ("ec2:DisassociateAddress", ""),
        ("ec2:ReleaseAddress", &eip),
        (TERMINATE, &vm),
        (DEL_SG, &sg),
    ]);
    calls.assert_before((TERMINATE, &vm), ("ec2:DeleteVolume", &vol));
    for leaf in ["db-password", "app"] {
        calls.assert_before((TERMINATE, &vm), (DELETE_PARAM, &param(stack, leaf)));
    }
    each_group_deleted_once(&calls, &[&sg]);
}

/// A new VM's address and data volume are made while the VM launches, not after it: with
/// `RunInstances` held back by the proxy, the address is allocated, its DNS record written and
/// the volume created (and found `available`); once the VM runs, attaching them is what is
/// left.
#[tokio::test(flavor = "multi_thread")]
async fn single_vm_makes_the_address_and_volume_while_the_vm_launches() {
    let emu = Emulator::start();
    let proxy = AwsProxy::holding(&emu, 0, RUN);
    let stack = "early-vm";
    let file = StackFile::from_example("stacks/bookstore-vm.yaml", stack, &[]);
    let mut c = emu.iac_at(&proxy.url);
    c.args(["-o", "json", "up"])
        .arg(file.path())
        .arg("--yes")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut up = c.spawn().expect("spawn iac up");
    let early = [
        "ec2:AllocateAddress",
        "route53:ChangeResourceRecordSets",
        "ec2:CreateVolume",
        "ec2:DescribeVolumes",
    ];
    let calls = until_calls(&proxy, &mut up, |calls| {
        early.iter().all(|op| !calls.of(op, "").is_empty())
    })
    .await;
    assert!(calls.of(RUN, "").is_empty(), "{}", calls.changes());
    proxy.release();
    let out = up.wait_with_output().expect("wait for iac up");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = proxy.calls();
    let vm = calls.created(RUN, "");
    let eip = calls.created("ec2:AllocateAddress", "");
    let vol = calls.created("ec2:CreateVolume", "");
    // Answered before the VM was (it may have been sent while they were in flight).
    let launched = calls.of(RUN, &vm).iter().map(|c| c.end).min().unwrap_or(0);
    for (op, made) in [("ec2:AllocateAddress", &eip), ("ec2:CreateVolume", &vol)] {
        let answered = calls
            .of(op, made)
            .iter()
            .map(|c| c.end)
            .max()
            .unwrap_or(u64::MAX);
        assert!(answered < launched, "{op} {made}:\n{}", calls.changes());
    }
    calls.assert_before((RUN, &vm), ("ec2:AssociateAddress", &vm));
    calls.assert_before((RUN, &vm), ("ec2:AttachVolume", &vm));
    // Made once each, with the tags that find them (the record's on the address).
    assert_eq!(calls.of("ec2:AllocateAddress", "").len(), 1);
    assert_eq!(calls.of("ec2:CreateVolume", "").len(), 1);
    let record = calls.of("route53:ChangeResourceRecordSets", "books.example.org.");
    assert_eq!(record.len(), 1, "{}", calls.changes());
    assert!(
        calls.of("ec2:CreateTags", "").is_empty(),
        "{}",
        calls.changes()
    );
}

/// A new instance type replaces the VM: the new one is launched and takes the address before
/// the old one is terminated, and the data volume leaves the old VM only once it is stopped.
#[tokio::test(flavor = "multi_thread")]
async fn single_vm_replacement_moves_address_and_volume_before_terminating_the_old_vm() {
    let stack = "order-swap";
    let (emu, proxy, file, calls) = up_logged("stacks/bookstore-vm.yaml", stack);
    let old = calls.created(RUN, "");
    let vol = calls.created("ec2:CreateVolume", "");
    let eip = calls.created("ec2:AllocateAddress", "");
    let before = calls.0.len();

    file.rewrite(&[("type: t3.small", "type: t3.medium")]);
    let r = iac_up(&emu, &proxy.url, file.path());
    assert_eq!(r.record("plan")["summary"]["replace"], 1, "{}", r.stdout);
    let calls = proxy.calls().since(before);
    let new = calls.created(RUN, "");
    assert_ne!(new, old);
    calls.assert_in_order(&[
        (RUN, &new),
        ("ec2:AssociateAddress", &new),
        (TERMINATE, &old),
    ]);
    calls.assert_in_order(&[
        ("ec2:StopInstances", &old),
        ("ec2:DetachVolume", &old),
        ("ec2:AttachVolume", &new),
        (TERMINATE, &old),
    ]);
    // Exactly these: the address and the volume go to the new VM, and only the old one ends.
    for (op, from, to) in [
        ("ec2:AssociateAddress", &eip, &new),
        ("ec2:DetachVolume", &vol, &old),
        ("ec2:AttachVolume", &vol, &new),
        (TERMINATE, &old, &old),
        ("ec2:StopInstances", &old, &old),
    ] {
        let seen = calls.of(op, "");
        assert_eq!(seen.len(), 1, "{op}:\n{}", calls.changes());
        assert!(
            seen[0].names(from) && seen[0].names(to),
            "{op} {from} {to}: {:?}",
            seen[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lb_vms_creates_before_use_and_deletes_in_reverse() {
    let stack = "order-lb";
    let (emu, proxy, _file, calls) = up_logged("stacks/bookstore-lb-vms.yaml", stack);
    let group = |role: &str| calls.created(NEW_SG, &format!("{stack}-{role}"));
    let (lb_sg, web_sg, db_sg) = (group("balancer"), group("web"), group("database"));
    let vms = |sg: &str| -> Vec<String> {
        calls
            .of(RUN, sg)
            .iter()
            .flat_map(|c| c.created.clone())
            .collect()
    };
    let (lb, webs, db) = (vms(&lb_sg), vms(&web_sg), vms(&db_sg));
    assert_eq!((lb.len(), webs.len(), db.len()), (1, 2, 1));
    for sg in [&lb_sg, &web_sg, &db_sg] {
        calls.assert_in_order(&[(NEW_SG, sg), (RULES, sg), (RUN, sg)]);
    }
    // A rule naming another group comes after that group.
    calls.assert_before((NEW_SG, &lb_sg), (RULES, &web_sg));
    calls.assert_before((NEW_SG, &web_sg), (RULES, &db_sg));
    // What each VM reads at boot exists before it: the password before the database, whose
    // address before the web VMs, whose addresses (haproxy.cfg) before the balancer.
    calls.assert_before((PUT, &param(stack, "db-password")), (RUN, &db_sg));
    calls.assert_before((PUT, &param(stack, "app")), (RUN, &web_sg));
    calls.assert_in_order(&[
        (RUN, &db_sg),
        (PUT, &param(stack, "db-host")),
        (RUN, &web_sg),
        (PUT, &param(stack, "haproxy.cfg")),
        (RUN, &lb_sg),
    ]);
    let vol = calls.created("ec2:CreateVolume", "");
    calls.assert_before(("ec2:CreateVolume", &vol), ("ec2:AttachVolume", &vol));
    calls.assert_before((RUN, &db[0]), ("ec2:AttachVolume", &db[0]));
    calls.assert_before((RUN, &lb[0]), ("ec2:AssociateAddress", &lb[0]));
    calls.assert_before(
        ("ec2:AllocateAddress", ""),
        ("ec2:AssociateAddress", &lb[0]),
    );

    let calls = down_logged(&emu, &proxy, stack, &[]);
    calls.assert_in_order(&[
        ("ec2:DisassociateAddress", ""),
        ("ec2:ReleaseAddress", ""),
        (TERMINATE, &lb[0]),
    ]);
    let all: Vec<&String> = lb.iter().chain(&webs).chain(&db).collect();
    for vm in &all {
        for sg in [&lb_sg, &web_sg, &db_sg] {
            calls.assert_before((TERMINATE, vm), (DEL_SG, sg));
        }
        for leaf in ["db-password", "app", "db-host", "haproxy.cfg"] {
            calls.assert_before((TERMINATE, vm), (DELETE_PARAM, &param(stack, leaf)));
        }
    }
    calls.assert_before((TERMINATE, &db[0]), ("ec2:DeleteVolume", &vol));
    // The rules between the groups are revoked before any group is deleted (a group another
    // one's rule names cannot be deleted). Revokes of rules already gone fail harmlessly later.
    let revoked = Calls(
        calls
            .0
            .iter()
            .filter(|c| c.status == Some(200))
            .cloned()
            .collect(),
    );
    for (holder, named) in [(&web_sg, &lb_sg), (&db_sg, &web_sg)] {
        revoked.assert_before(("ec2:RevokeSecurityGroupIngress", holder), (DEL_SG, named));
    }
    each_group_deleted_once(&calls, &[&lb_sg, &web_sg, &db_sg]);
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_creates_before_use_and_deletes_in_reverse() {
    let stack = "order-sw";
    let (emu, proxy, _file, calls) = up_logged("stacks/bookstore-swarm.yaml", stack);
    let sg = calls.created(NEW_SG, &format!("{stack}-swarm"));
    calls.assert_in_order(&[(NEW_SG, &sg), (RULES, &sg), (RUN, &sg)]);
    calls.assert_before((PUT, &param(stack, "service")), (RUN, &sg));
    let nodes: Vec<String> = calls
        .of(RUN, &sg)
        .iter()
        .flat_map(|c| c.created.clone())
        .collect();
    assert_eq!(nodes.len(), 4, "{}", calls.changes());
    let associated = calls.of("ec2:AssociateAddress", "");
    assert_eq!(associated.len(), 1, "{}", calls.changes());
    let leader = instance_in(associated[0]);
    assert!(nodes.contains(&leader), "{leader} is no node of {nodes:?}");
    calls.assert_before((RUN, &leader), ("ec2:AssociateAddress", &leader));
    calls.assert_before(("ec2:AllocateAddress", ""), ("ec2:AssociateAddress", ""));

    let calls = down_logged(&emu, &proxy, stack, &[]);
    calls.assert_in_order(&[
        ("ec2:DisassociateAddress", ""),
        ("ec2:ReleaseAddress", ""),
        (TERMINATE, &leader),
    ]);
    for vm in &nodes {
        calls.assert_in_order(&[
            (TERMINATE, vm),
            (DEL_SG, &sg),
            (DELETE_PARAM, &param(stack, "service")),
        ]);
    }
    each_group_deleted_once(&calls, &[&sg]);
}

#[tokio::test(flavor = "multi_thread")]
async fn alb_asg_creates_before_use_and_deletes_in_reverse() {
    let stack = "order-asg";
    let (emu, proxy, _file, calls) = up_logged("stacks/bookstore-asg.yaml", stack);
    let group = |role: &str| calls.created(NEW_SG, &format!("{stack}-{role}"));
    let (alb_sg, web_sg, db_sg, efs_sg) = (group("alb"), group("web"), group("db"), group("efs"));
    let tg = calls.created("elasticloadbalancing:CreateTargetGroup", "");
    let alb = calls.created("elasticloadbalancing:CreateLoadBalancer", "");
    let lt = calls.created(NEW_LT, &web_sg);
    let fs = calls.created("elasticfilesystem:CreateFileSystem", "");
    let asg = format!("{stack}-asg");
    let cluster = format!("{stack}-db");

    // The load balancer: its group, then it and the target group, then the listener.
    calls.assert_before(
        (NEW_SG, &alb_sg),
        ("elasticloadbalancing:CreateLoadBalancer", &alb_sg),
    );
    for made in [
        ("elasticloadbalancing:CreateLoadBalancer", alb.as_str()),
        ("elasticloadbalancing:CreateTargetGroup", tg.as_str()),
    ] {
        calls.assert_before(made, ("elasticloadbalancing:CreateListener", made.1));
    }
    // The group: its template (after the web group), the target group and every mount target
    // (the instances mount the file system at boot), then the scaling policy.
    calls.assert_in_order(&[(NEW_SG, &web_sg), (NEW_LT, &web_sg), (NEW_ASG, &lt)]);
    calls.assert_before(
        ("elasticloadbalancing:CreateTargetGroup", &tg),
        (NEW_ASG, &tg),
    );
    calls.assert_before(("elasticfilesystem:CreateMountTarget", ""), (NEW_ASG, &asg));
    calls.assert_before((NEW_ASG, &asg), ("autoscaling:PutScalingPolicy", &asg));
    // The database: its group and subnet group, the cluster, its instance; the endpoint and
    // secret parameters once the cluster exists. (The instances wait for those two at boot,
    // so the group does not wait for Aurora.)
    calls.assert_in_order(&[
        (NEW_SG, &db_sg),
        ("rds:CreateDBCluster", &db_sg),
        ("rds:CreateDBInstance", &cluster),
    ]);
    calls.assert_before(
        ("rds:CreateDBSubnetGroup", &cluster),
        ("rds:CreateDBCluster", ""),
    );
    for leaf in ["db-endpoint", "db-secret-arn"] {
        calls.assert_before(
            ("rds:CreateDBCluster", &cluster),
            (PUT, &param(stack, leaf)),
        );
    }
    // The file system: its group and itself before the mount targets; its id after it.
    calls.assert_before(
        (NEW_SG, &efs_sg),
        ("elasticfilesystem:CreateMountTarget", &efs_sg),
    );
    calls.assert_before(
        ("elasticfilesystem:CreateFileSystem", &fs),
        ("elasticfilesystem:CreateMountTarget", &fs),
    );
    calls.assert_before(
        ("elasticfilesystem:CreateFileSystem", &fs),
        (PUT, &param(stack, "efs-id")),
    );

    let calls = down_logged(&emu, &proxy, stack, &["--skip-final-snapshot"]);
    calls.assert_in_order(&[
        ("autoscaling:DeletePolicy", &asg),
        (DEL_ASG, &asg),
        (DEL_LT, &lt),
        (DEL_SG, &web_sg),
    ]);
    calls.assert_in_order(&[
        ("elasticloadbalancing:DeleteListener", ""),
        ("elasticloadbalancing:DeleteLoadBalancer", &alb),
        (DEL_SG, &alb_sg),
    ]);
    calls.assert_before(
        ("elasticloadbalancing:DeleteListener", ""),
        ("elasticloadbalancing:DeleteTargetGroup", &tg),
    );
    calls.assert_before(
        (DEL_ASG, &asg),
        ("elasticloadbalancing:DeleteTargetGroup", &tg),
    );
    calls.assert_in_order(&[
        ("rds:DeleteDBInstance", ""),
        ("rds:DeleteDBCluster", &cluster),
        ("rds:DeleteDBSubnetGroup", &cluster),
        (DEL_SG, &db_sg),
    ]);
    calls.assert_in_order(&[
        ("elasticfilesystem:DeleteMountTarget", ""),
        ("elasticfilesystem:DeleteFileSystem", &fs),
    ]);
    calls.assert_before(
        ("elasticfilesystem:DeleteMountTarget", ""),
        (DEL_SG, &efs_sg),
    );
    for leaf in ["db-endpoint", "db-secret-arn", "efs-id"] {
        calls.assert_before((DEL_ASG, &asg), (DELETE_PARAM, &param(stack, leaf)));
    }
    each_group_deleted_once(&calls, &[&alb_sg, &web_sg, &db_sg, &efs_sg]);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_creates_before_use_and_deletes_in_reverse() {
    let stack = "order-cs";
    let (emu, proxy, _file, calls) = up_logged("stacks/custom-scaler.yaml", stack);
    let agents_sg = calls.created(NEW_SG, &format!("{stack}-agents"));
    let monitor_sg = calls.created(NEW_SG, &format!("{stack}-monitor"));
    let agent_lt = calls.created(NEW_LT, &format!("{stack}-agent"));
    let monitor_lt = calls.created(NEW_LT, &format!("{stack}-monitor"));
    let group = format!("{stack}-monitor");
    calls.assert_before((NEW_SG, &agents_sg), (NEW_LT, &agents_sg));
    calls.assert_before((NEW_SG, &agents_sg), (RULES, &monitor_sg));
    calls.assert_in_order(&[
        (NEW_SG, &monitor_sg),
        (NEW_LT, &monitor_sg),
        (NEW_ASG, &monitor_lt),
    ]);
    // What the monitor VM reads at boot, and the agents' template it launches from.
    for leaf in ["scaler-token", "stack-file", "scaler-tls"] {
        calls.assert_before((PUT, &param(stack, leaf)), (NEW_ASG, &group));
    }
    calls.assert_before((NEW_LT, &agent_lt), (NEW_ASG, &group));

    // A pool instance, launched as the monitor launches them: terminated after the monitor's
    // group is gone (or it could launch more) and before the template it came from.
    let pool = launch_pool_instance(&emu.ec2().await, stack).await;
    let calls = down_logged(&emu, &proxy, stack, &[]);
    calls.assert_in_order(&[(DEL_ASG, &group), (TERMINATE, &pool), (DEL_LT, &agent_lt)]);
    calls.assert_in_order(&[
        (DEL_ASG, &group),
        (DEL_LT, &monitor_lt),
        (DEL_SG, &monitor_sg),
    ]);
    calls.assert_before((DEL_LT, &agent_lt), (DEL_SG, &agents_sg));
    for leaf in ["scaler-token", "stack-file", "scaler-tls"] {
        calls.assert_before((DEL_ASG, &group), (DELETE_PARAM, &param(stack, leaf)));
    }
    each_group_deleted_once(&calls, &[&agents_sg, &monitor_sg]);
}

/// The single-vm example brought up directly, and its security group's id.
async fn vm_stack(emu: &Emulator, stack: &str) -> String {
    let file = StackFile::example(stack, &[]);
    iac_up(emu, &emu.url, file.path());
    let groups = security_groups(&emu.ec2().await, stack).await;
    assert_eq!(groups.len(), 1);
    groups[0].group_id().expect("group id").to_string()
}

/// AWS refuses to delete a group while something still uses it (`DependencyViolation`):
/// `down` asks again until it is free.
#[tokio::test(flavor = "multi_thread")]
async fn down_retries_a_security_group_in_use_until_it_is_free() {
    let emu = Emulator::start();
    let stack = "order-busy";
    let sg = vm_stack(&emu, stack).await;
    let proxy = AwsProxy::violating(&emu, DEL_SG, 3);
    let d = iac_down(&emu, &proxy.url, stack, &["--delete-data"]);
    assert_eq!(d.code, 0, "{}\n{}", d.stdout, d.stderr);
    let calls = proxy.calls();
    let attempts: Vec<(Option<u16>, Option<&str>)> = calls
        .of(DEL_SG, &sg)
        .iter()
        .map(|c| (c.status, c.error.as_deref()))
        .collect();
    let refused = (Some(400), Some("DependencyViolation"));
    assert_eq!(
        attempts,
        vec![refused, refused, refused, (Some(200), None)],
        "{}",
        calls.changes()
    );
    let left = security_groups(&emu.ec2().await, stack).await;
    assert!(left.is_empty(), "{left:?}");
}

/// A group that stays in use past `--dependency-timeout`: `down` stops asking, fails (exit 1)
/// and says on one line which group and what held it.
#[tokio::test(flavor = "multi_thread")]
async fn down_fails_naming_the_group_still_in_use_at_the_dependency_timeout() {
    let emu = Emulator::start();
    let stack = "order-stuck";
    let sg = vm_stack(&emu, stack).await;
    let proxy = AwsProxy::violating(&emu, DEL_SG, 1_000_000);
    let mut c = emu.iac_at(&proxy.url);
    c.args(["down", "--stack", stack, "--yes", "--delete-data"])
        .args(["--dependency-timeout", "3s"]);
    let started = Instant::now();
    let d = run(c);
    let took = started.elapsed();
    assert_eq!(d.code, 1, "{}\n{}", d.stdout, d.stderr);
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let failed: Vec<&str> = d.stderr.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{}", d.stderr);
    assert!(
        failed[0].starts_with(&format!("web-sg ({sg}): delete FAILED"))
            && failed[0].contains(&format!(
                "DependencyViolation: resource {sg} has a dependent object"
            )),
        "{}",
        failed[0]
    );
    assert!(
        d.stderr.contains(&format!(
            "error: 1 resource(s) tagged iac:stack={stack} remain:\n  security-group web-sg ({sg})"
        )),
        "{}",
        d.stderr
    );
    // It kept asking until the deadline, then stopped: a few attempts, none after the failure.
    let attempts = proxy.calls().of(DEL_SG, &sg).len();
    assert!((2..=10).contains(&attempts), "{attempts} attempts");
}

/// A second `up` of the unchanged example `example`: it writes nothing, not even the stack
/// lock (it reads it), and reads each kind once. No operation is sent twice, except
/// `elasticloadbalancing:DescribeTags` (load balancers and target groups, then their
/// listeners).
fn no_op_up_reads_each_kind_once(example: &str, stack: &str) {
    let (emu, proxy, file, first) = up_logged(example, stack);
    let again = iac_up(&emu, &proxy.url, file.path());
    assert_eq!(
        again.record("summary")["mutating_calls"],
        serde_json::json!({})
    );
    let calls = proxy.calls().since(first.0.len());
    let writes: Vec<&str> = calls
        .0
        .iter()
        .filter(|c| !c.is_read())
        .map(|c| c.op.as_str())
        .collect();
    assert!(writes.is_empty(), "{}", calls.changes());
    let mut sent = std::collections::BTreeMap::<&str, usize>::new();
    for c in &calls.0 {
        *sent.entry(c.op.as_str()).or_default() += 1;
    }
    let all: Vec<String> = calls
        .0
        .iter()
        .map(|c| format!("{} {:?}", c.op, c.ids))
        .collect();
    for (op, sent) in &sent {
        let allowed = match *op {
            "elasticloadbalancing:DescribeTags" => 2,
            _ => 1,
        };
        assert!(*sent <= allowed, "{op} sent {sent} times:\n{all:#?}");
    }
    // The lock is read (with the record of kinds, in one call).
    let lock = param(stack, "lock");
    assert_eq!(calls.of("ssm:GetParameters", &lock).len(), 1, "{all:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn single_vm_no_op_up_reads_each_kind_once() {
    no_op_up_reads_each_kind_once("stacks/bookstore-vm.yaml", "noop-vm");
}

#[tokio::test(flavor = "multi_thread")]
async fn lb_vms_no_op_up_reads_each_kind_once() {
    no_op_up_reads_each_kind_once("stacks/bookstore-lb-vms.yaml", "noop-lbvms");
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_no_op_up_reads_each_kind_once() {
    no_op_up_reads_each_kind_once("stacks/bookstore-swarm.yaml", "noop-swarm");
}

#[tokio::test(flavor = "multi_thread")]
async fn alb_asg_no_op_up_reads_each_kind_once() {
    no_op_up_reads_each_kind_once("stacks/bookstore-asg.yaml", "noop-asg");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_no_op_up_reads_each_kind_once() {
    no_op_up_reads_each_kind_once("stacks/custom-scaler.yaml", "noop-scaler");
}

/// `vpc: default` costs one listing of the region's subnets and no VPC read: the default VPC is
/// the one whose subnets are default for their zone. Another VPC's subnet in the same zone, made
/// first, is not used.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_vpc_and_its_subnets_come_from_one_listing() {
    let emu = Emulator::start();
    let ec2 = emu.ec2().await;
    let default_vpc = ec2
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("is-default")
                .values("true")
                .build(),
        )
        .send()
        .await
        .expect("describe vpcs")
        .vpcs()[0]
        .vpc_id()
        .expect("vpc id")
        .to_string();
    let other = ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .expect("create vpc");
    let other = other.vpc().and_then(|v| v.vpc_id()).expect("vpc id");
    ec2.create_subnet()
        .vpc_id(other)
        .cidr_block("10.9.1.0/24")
        .availability_zone("us-east-1a")
        .send()
        .await
        .expect("create subnet");
    let proxy = AwsProxy::logging(&emu);
    let stack = "order-default-vpc";
    let file = StackFile::example(stack, &[]);
    iac_up(&emu, &proxy.url, file.path());
    let calls = proxy.calls();
    let sent = |op: &str| calls.0.iter().filter(|c| c.op == op).count();
    assert_eq!(sent("ec2:DescribeSubnets"), 1, "{}", calls.changes());
    assert_eq!(sent("ec2:DescribeVpcs"), 0, "{}", calls.changes());
    let vm = &instances_by_logical_id(&ec2, stack).await["vm"];
    assert_eq!(vm.vpc_id(), Some(default_vpc.as_str()));
}
