//! The single-vm tier end to end against the emulator: what `up` creates and how, that a second
//! `up` changes nothing, in-place updates and replacements, `down`, and a `up` killed part-way.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn tags(t: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    t.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn assert_identity(t: &BTreeMap<String, String>, stack: &str, id: &str) {
    assert_eq!(
        t.get("iac:stack").map(String::as_str),
        Some(stack),
        "tags: {t:?}"
    );
    assert_eq!(t.get("iac:id").map(String::as_str), Some(id), "tags: {t:?}");
    assert_eq!(
        t.get("managed-by").map(String::as_str),
        Some("iac"),
        "tags: {t:?}"
    );
}

async fn addresses(ec2: &aws_sdk_ec2::Client, stack: &str) -> Vec<aws_sdk_ec2::types::Address> {
    ec2.describe_addresses()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("describe addresses")
        .addresses()
        .to_vec()
}

/// (protocol, from, to, cidr) of every ingress range.
fn ingress(g: &aws_sdk_ec2::types::SecurityGroup) -> Vec<(String, i32, i32, String)> {
    let mut v: Vec<_> = g
        .ip_permissions()
        .iter()
        .flat_map(|p| {
            let v4 = p.ip_ranges().iter().map(|r| r.cidr_ip());
            let v6 = p.ipv6_ranges().iter().map(|r| r.cidr_ipv6());
            v4.chain(v6).map(move |cidr| {
                (
                    p.ip_protocol().unwrap_or_default().to_string(),
                    p.from_port().unwrap_or(-1),
                    p.to_port().unwrap_or(-1),
                    cidr.unwrap_or_default().to_string(),
                )
            })
        })
        .collect();
    v.sort();
    v
}

/// The values of the A record `name` in the seeded example.org zone, if it exists.
async fn a_record(emu: &Emulator, name: &str) -> Option<Vec<String>> {
    let r53 = emu.route53().await;
    let zones = r53
        .list_hosted_zones_by_name()
        .dns_name("example.org.")
        .send()
        .await
        .expect("zones");
    let zone = zones.hosted_zones()[0].id().to_string();
    let records = r53
        .list_resource_record_sets()
        .hosted_zone_id(&zone)
        .send()
        .await
        .expect("records");
    records
        .resource_record_sets()
        .iter()
        .find(|r| r.name().eq_ignore_ascii_case(name) && r.r#type().as_str() == "A")
        .map(|r| {
            r.resource_records()
                .iter()
                .map(|v| v.value().to_string())
                .collect()
        })
}

fn up(emu: &Emulator, file: &std::path::Path) -> Run {
    let mut c = emu.iac();
    c.args(["-o", "json", "up"]).arg(file).arg("--yes");
    run_ok(c)
}

fn down(emu: &Emulator, stack: &str) -> Run {
    let mut c = emu.iac();
    c.args([
        "-o",
        "json",
        "down",
        "--stack",
        stack,
        "--yes",
        "--delete-data",
    ]);
    run_ok(c)
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_every_resource_as_specified_and_down_removes_them() {
    let emu = Emulator::start();
    let stack = "vm-full";
    let file = StackFile::example(stack, &[]);
    // Every command's output, checked for secret values once the stack is down.
    let mut runs = Runs::default();
    let r = runs.keep("up", up(&emu, file.path()));
    let outputs = r.record("outputs")["outputs"].clone();
    // The record of the kinds the stack has is written before anything of a kind discovery
    // does not always look for (the volume, the address, the DNS record) is started, so a run
    // killed halfway leaves nothing the next run's discovery would miss.
    let events = r.records();
    let recorded = events
        .iter()
        .position(|e| e["event"] == "done" && e["id"] == "discovery-kinds")
        .expect("the record was written");
    for id in ["data", "eip", "dns"] {
        let started = events
            .iter()
            .position(|e| e["event"] == "started" && e["id"] == id)
            .unwrap_or_else(|| panic!("{id} was not created"));
        assert!(recorded < started, "{id}: {events:#?}");
    }

    let ec2 = emu.ec2().await;
    // Security group: web from anywhere, SSH only from ssh_from, nothing else.
    let sgs = security_groups(&ec2, stack).await;
    assert_eq!(sgs.len(), 1);
    let sg = &sgs[0];
    assert_identity(&tags(sg.tags()), stack, "web-sg");
    assert_eq!(
        ingress(sg),
        vec![
            ("tcp".into(), 22, 22, "203.0.113.0/24".into()),
            ("tcp".into(), 80, 80, "0.0.0.0/0".into()),
            ("tcp".into(), 80, 80, "::/0".into()),
            ("tcp".into(), 443, 443, "0.0.0.0/0".into()),
            ("tcp".into(), 443, 443, "::/0".into()),
        ]
    );

    // Instance: one, IMDSv2 required, key, profile, the group, tags, encrypted gp3 root volume.
    let vms = live_instances(&ec2, stack).await;
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    let vm_id = vm.instance_id().expect("id").to_string();
    assert_identity(&tags(vm.tags()), stack, "vm");
    assert_eq!(
        vm.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    assert_eq!(vm.key_name(), Some("vockey"));
    assert_eq!(vm.instance_type().map(|t| t.as_str()), Some("t3.small"));
    assert!(vm
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .is_some_and(|a| a.ends_with("LabInstanceProfile")));
    assert_eq!(
        vm.security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .collect::<Vec<_>>(),
        vec![sg.group_id().expect("sg id")]
    );
    assert_eq!(outputs["instance_id"], vm_id.as_str());
    // The root volume (the data volume is checked on its own below).
    let vol_ids: Vec<String> = vm
        .block_device_mappings()
        .iter()
        .filter(|b| b.device_name() == vm.root_device_name())
        .filter_map(|b| b.ebs().and_then(|e| e.volume_id()).map(str::to_string))
        .collect();
    assert_eq!(vol_ids.len(), 1);
    let vols = ec2
        .describe_volumes()
        .set_volume_ids(Some(vol_ids))
        .send()
        .await
        .expect("volumes");
    let vol = &vols.volumes()[0];
    assert_eq!(vol.encrypted(), Some(true));
    assert_eq!(vol.size(), Some(20));
    assert_eq!(vol.volume_type().map(|t| t.as_str()), Some("gp3"));
    // The data volume: encrypted gp3, 8 GB, tagged as data, in the VM's zone and attached to it.
    let data = assert_data_volume_on(&ec2, stack, "vm").await;
    assert_eq!(data.size(), Some(8));
    assert_eq!(data.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_ne!(data.volume_id(), vol.volume_id(), "not the root volume");

    // User-data: exactly what `iac render` prints, and no secret value in it.
    let ud = ec2
        .describe_instance_attribute()
        .instance_id(&vm_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("user data");
    let encoded = ud
        .user_data()
        .and_then(|v| v.value())
        .expect("user-data present");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    let mut render = emu.iac();
    render.arg("render").arg(file.path());
    let rendered = runs.keep("render", run_ok(render)).stdout;
    // Large scripts go gzip-compressed (EC2's 16 KB limit); cloud-init unpacks them.
    let decoded = if decoded.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&decoded[..])
            .read_to_end(&mut text)
            .expect("gunzip user-data");
        text
    } else {
        decoded
    };
    assert_eq!(String::from_utf8_lossy(&decoded), rendered);
    let secret = emu.secure_value("/bookstore/secret-key").await;
    assert!(
        !rendered.contains(&secret),
        "the secret value leaked into the user-data"
    );
    // The secret is referenced by name in the app's spec parameter (read at boot and on each
    // update), never by value.
    let spec = emu.secure_value(&format!("/iac/{stack}/app")).await;
    assert!(spec.contains("=/bookstore/secret-key"), "{spec}");
    assert!(
        !spec.contains(&secret),
        "the secret value leaked into the app spec"
    );
    assert!(!r.stdout.contains(&secret) && !r.stderr.contains(&secret));

    // Elastic IP: tagged, associated with the instance, and the DNS record points at it.
    let eips = addresses(&ec2, stack).await;
    assert_eq!(eips.len(), 1);
    let eip = &eips[0];
    assert_identity(&tags(eip.tags()), stack, "eip");
    assert_eq!(eip.instance_id(), Some(vm_id.as_str()));
    let ip = eip.public_ip().expect("ip").to_string();
    assert_eq!(outputs["public_ip"], ip.as_str());
    assert_eq!(outputs["url"], "https://books.example.org");
    assert_eq!(
        a_record(&emu, "books.example.org.").await,
        Some(vec![ip.clone()])
    );

    // A second `up` makes no mutating call at all.
    let again = runs.keep("up (again)", up(&emu, file.path()));
    let summary = again.record("summary");
    assert_eq!(
        summary["mutating_calls"],
        serde_json::json!({}),
        "second up mutated: {summary}"
    );
    assert!(summary["api_calls_total"].as_u64().unwrap_or(0) > 0);

    // `plan` (as data) and `status` of the stack as it is: nothing to do, every resource shown.
    let mut c = emu.iac();
    c.args(["-o", "json", "plan"]).arg(file.path());
    let plan = runs.keep("-o json plan", run_ok(c));
    assert_eq!(plan.record("plan")["summary"]["keep"], 8, "{}", plan.stdout);
    let mut c = emu.iac();
    c.arg("status").arg(file.path());
    let status = runs.keep("status", run_ok(c));
    assert!(status.stdout.contains(&vm_id), "{}", status.stdout);

    // The secrets, read before `down` deletes the stack's: the database password, the app's
    // secret, nothing guessed from a name.
    let secrets = Secrets::read(&emu, stack).await;
    for name in [
        "/bookstore/secret-key",
        &format!("/iac/{stack}/db-password"),
    ] {
        assert!(secrets.names().contains(&name), "{:?}", secrets.names());
    }

    // `down` from the stack name alone removes everything, including the record.
    let d = runs.keep("down --delete-data", down(&emu, stack));
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
    assert!(security_groups(&ec2, stack).await.is_empty());
    assert!(live_instances(&ec2, stack).await.is_empty());
    assert!(addresses(&ec2, stack).await.is_empty());
    assert_eq!(a_record(&emu, "books.example.org.").await, None);
    // Deletion ran in reverse dependency order.
    let order: Vec<String> = d
        .records()
        .iter()
        .filter(|e| e["event"] == "done")
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    // (The data volume goes after the instance it was attached to; the parameters the instance
    // read, and the record of the kinds discovery reads, go last.)
    assert_eq!(
        order,
        vec![
            "dns-record",
            "elastic-ip",
            "instance",
            "volume",
            "security-group",
            "ssm-parameter",
            "ssm-parameter",
            "ssm-parameter"
        ]
    );
    // No command printed a secret, nor a part of one.
    assert_eq!(
        runs.commands(),
        [
            "up",
            "render",
            "up (again)",
            "-o json plan",
            "status",
            "down --delete-data"
        ]
    );
    runs.assert_no_secret(&secrets);
}

/// The secret check can fail: a secret printed whole, a part of one, or one broken across
/// lines, on either stream, is caught; output without one passes.
#[tokio::test(flavor = "multi_thread")]
async fn secret_check_catches_a_leak() {
    let emu = Emulator::start();
    let secrets = Secrets::read(&emu, "vm-leak").await;
    assert!(
        secrets.names().contains(&"/bookstore/secret-key"),
        "{:?}",
        secrets.names()
    );
    let secret = emu.secure_value("/bookstore/secret-key").await;
    assert!(secret.len() > 2 * LEAK_WINDOW, "{secret}");
    let fake = |stdout: String, stderr: String| Run {
        code: 0,
        stdout,
        stderr,
    };
    let clean = fake(
        "Plan for stack `vm-leak`:\n  + ssm-parameter db-password\n".into(),
        "reading /bookstore/secret-key\n".into(),
    );
    secrets.assert_absent(&[&clean]);
    let (a, b) = secret.split_at(secret.len() / 2);
    let leaks = [
        fake(format!("SECRET_KEY={secret}\n"), String::new()),
        fake(
            String::new(),
            format!("error: bad value `{}`", &secret[3..3 + LEAK_WINDOW]),
        ),
        fake(format!("key:\n  {a}\n  {b}\n"), String::new()),
    ];
    for leak in &leaks {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            secrets.assert_absent(&[&clean, leak])
        }));
        let message = caught.expect_err("the leak went unnoticed");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("/bookstore/secret-key"),
            "the failure names the secret: {message}"
        );
    }
    // Through the scenario's own path too.
    let mut runs = Runs::default();
    runs.keep("status", clean.clone());
    runs.keep("plan", leaks[0].clone());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runs.assert_no_secret(&secrets)
    }));
    let message = caught.expect_err("the leak went unnoticed");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("`plan`"),
        "the failure names the command: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_is_data_and_detailed_exitcode_says_whether_there_are_changes() {
    let emu = Emulator::start();
    let file = StackFile::example("vm-plan", &[]);
    let mut c = emu.iac();
    c.args(["-o", "json", "plan", "--detailed-exitcode"])
        .arg(file.path());
    let r = run(c);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let plan = r.record("plan");
    // The security group, the app spec and database password parameters, the VM, its data
    // volume, the Elastic IP, the DNS record, and the record of the kinds discovery reads.
    assert_eq!(plan["summary"]["create"], 8);
    // plan made no mutating call.
    assert_eq!(r.record("summary")["mutating_calls"], serde_json::json!({}));
    assert!(live_instances(&emu.ec2().await, "vm-plan").await.is_empty());
    up(&emu, file.path());
    let mut c = emu.iac();
    c.args(["plan", "--detailed-exitcode"]).arg(file.path());
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("8 unchanged"), "{}", r.stdout);

    // Discovery asked only the services the stack uses (its record names them).
    let mut c = emu.iac();
    c.args(["-o", "json", "plan"]).arg(file.path());
    let r = run_ok(c);
    let calls = r.record("summary")["api_calls"].clone();
    let services: std::collections::BTreeSet<&str> = calls
        .as_object()
        .expect("api_calls")
        .keys()
        .filter_map(|k| k.split(':').next())
        .collect();
    assert_eq!(
        services,
        ["ec2", "route53", "ssm"].into_iter().collect(),
        "{calls}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_change_updates_the_group_in_place_and_app_change_updates_the_vm_in_place_keeping_its_data(
) {
    let emu = Emulator::start();
    let stack = "vm-change";
    let file = StackFile::example(stack, &[]);
    // Every command's output, checked for secret values once the stack is down.
    let mut runs = Runs::default();
    runs.keep("up", up(&emu, file.path()));
    let mut secrets = Secrets::read(&emu, stack).await;
    let ec2 = emu.ec2().await;
    let sg_before = security_groups(&ec2, stack).await[0]
        .group_id()
        .map(str::to_string);
    let vm_before = live_instances(&ec2, stack).await[0]
        .instance_id()
        .map(str::to_string);

    file.rewrite(&[("ssh_from: 203.0.113.0/24", "ssh_from: 198.51.100.7/32")]);
    let mut c = emu.iac();
    c.arg("plan").arg(file.path());
    let p = runs.keep("plan (ssh_from)", run_ok(c));
    assert!(
        p.stdout.contains("+ ingress tcp/22 from 198.51.100.7/32"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("- ingress tcp/22 from 203.0.113.0/24"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("1 to update, 0 to replace"),
        "{}",
        p.stdout
    );
    runs.keep("up (ssh_from)", up(&emu, file.path()));
    let sgs = security_groups(&ec2, stack).await;
    assert_eq!(sgs.len(), 1);
    assert_eq!(
        sgs[0].group_id().map(str::to_string),
        sg_before,
        "the group was replaced, not updated"
    );
    assert!(ingress(&sgs[0]).contains(&("tcp".into(), 22, 22, "198.51.100.7/32".into())));
    assert!(!ingress(&sgs[0]).iter().any(|r| r.3 == "203.0.113.0/24"));
    assert_eq!(
        live_instances(&ec2, stack).await[0]
            .instance_id()
            .map(str::to_string),
        vm_before
    );

    // A new image and a new variable: applied in place through Run Command, nothing replaced.
    let volumes = data_volumes(&ec2, stack).await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].1, vm_before, "the data volume is on the VM");
    file.rewrite(&[("bookstore:1.0.0", "bookstore:1.0.1")]);
    let text = std::fs::read_to_string(file.path()).unwrap();
    let text = text.replace(
        "  environment:\n",
        "  environment:\n    FEATURE_X: \"on\"\n",
    );
    std::fs::write(file.path(), text).unwrap();
    let r = runs.keep("up (image, variable)", up(&emu, file.path()));
    assert_eq!(r.record("plan")["summary"]["replace"], 0, "{}", r.stdout);
    assert_eq!(r.record("plan")["summary"]["update"], 1, "{}", r.stdout);
    let vms = live_instances(&ec2, stack).await;
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].instance_id().map(str::to_string), vm_before);
    let spec = emu.secure_value(&format!("/iac/{stack}/app")).await;
    assert!(
        spec.contains("IMAGE=ghcr.io/example/bookstore:1.0.1\n"),
        "{spec}"
    );
    assert!(spec.contains("ENV_FEATURE_X=on\n"), "{spec}");
    let sent = emu
        .ssm()
        .await
        .list_commands()
        .send()
        .await
        .expect("commands");
    let update = sent
        .commands()
        .iter()
        .find(|c| {
            c.comment()
                .unwrap_or_default()
                .contains("update the app in place")
        })
        .expect("the update was sent through Run Command");
    assert_eq!(update.instance_ids(), [vm_before.clone().unwrap()]);
    assert_eq!(data_volumes(&ec2, stack).await, volumes, "still attached");

    // A new instance type must replace the VM: the data volume moves to the new one (the old
    // one stopped first), before the old one is terminated; the address follows.
    file.rewrite(&[("type: t3.small", "type: t3.medium")]);
    let mut c = emu.iac();
    c.arg("plan").arg(file.path());
    let p = runs.keep("plan (type)", run_ok(c));
    assert!(
        p.stdout
            .contains("the data volume (data) moves to the new VM"),
        "{}",
        p.stdout
    );
    let r = runs.keep("up (type)", up(&emu, file.path()));
    assert_eq!(r.record("plan")["summary"]["replace"], 1);
    let vms = live_instances(&ec2, stack).await;
    assert_eq!(
        vms.len(),
        1,
        "exactly one live instance after a replacement"
    );
    let vm_after = vms[0].instance_id().map(str::to_string);
    assert_ne!(vm_after, vm_before);
    let moved = data_volumes(&ec2, stack).await;
    assert_eq!(moved, vec![(volumes[0].0.clone(), vm_after.clone())]);
    let done: Vec<String> = r
        .records()
        .iter()
        .filter(|e| e["event"] == "done")
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let attached = done
        .iter()
        .position(|id| id == "data")
        .expect("volume moved");
    let terminated = done
        .iter()
        .position(|id| id.starts_with("vm#old"))
        .expect("old vm terminated");
    assert!(attached < terminated, "{done:?}");
    assert_eq!(
        addresses(&ec2, stack).await[0]
            .instance_id()
            .map(str::to_string),
        vm_after
    );

    // `down` keeps the data volume (exit 4) and a later `up` adopts it; `--delete-data`
    // removes it. (The secrets are read again before each `down`: it deletes the stack's, and
    // the next `up` generates a new database password.)
    secrets.merge(Secrets::read(&emu, stack).await);
    assert!(
        secrets
            .names()
            .contains(&format!("/iac/{stack}/db-password").as_str()),
        "{:?}",
        secrets.names()
    );
    let vol_id = moved[0].0.clone();
    let d = runs.keep("down", iac_down(&emu, &emu.url, stack, &[]));
    assert_down_kept_data(&ec2, stack, &d, &vol_id).await;
    let again = runs.keep("up (after down)", up(&emu, file.path()));
    assert_data_volume_adopted(&ec2, stack, &vol_id, "vm", &again).await;
    let adopter = live_instances(&ec2, stack).await[0]
        .instance_id()
        .map(str::to_string);
    assert_ne!(adopter, vm_after, "a new VM");
    secrets.merge(Secrets::read(&emu, stack).await);
    runs.keep("down --delete-data", down(&emu, stack));
    assert!(data_volumes(&ec2, stack).await.is_empty());
    assert_eq!(runs.0.len(), 9, "{:?}", runs.commands());
    runs.assert_no_secret(&secrets);
}

/// A stack made before single-vm had a data volume keeps MySQL on its VM's own disk. A change
/// that replaces that VM would delete the data: `plan` says so under data loss, `up` refuses
/// (exit 2) before any change, and goes ahead only with `--allow-data-loss`.
#[tokio::test(flavor = "multi_thread")]
async fn a_vm_made_before_its_data_volume_is_not_replaced_without_allow_data_loss() {
    let emu = Emulator::start();
    let stack = "vm-old";
    let file = StackFile::example(stack, &[]);
    up(&emu, file.path());
    let ec2 = emu.ec2().await;
    let vm = live_instances(&ec2, stack).await[0]
        .instance_id()
        .map(str::to_string);
    // What an older iac left: the VM without its data volume.
    for (vid, attached) in data_volumes(&ec2, stack).await {
        ec2.detach_volume()
            .volume_id(&vid)
            .set_instance_id(attached)
            .force(true)
            .send()
            .await
            .expect("detach");
        ec2.delete_volume()
            .volume_id(&vid)
            .send()
            .await
            .expect("delete");
    }
    file.rewrite(&[("type: t3.small", "type: t3.medium")]);

    let mut c = emu.iac();
    c.arg("plan").arg(file.path());
    let p = run_ok(c);
    assert!(
        p.stdout.contains("its data is on its own disk"),
        "{}",
        p.stdout
    );
    let mut c = emu.iac();
    c.args(["up", "--yes"]).arg(file.path());
    let r = run(c);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("--allow-data-loss"), "{}", r.stderr);
    let now = live_instances(&ec2, stack).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].instance_id().map(str::to_string), vm, "untouched");
    assert!(
        data_volumes(&ec2, stack).await.is_empty(),
        "nothing created"
    );

    let mut c = emu.iac();
    c.args(["up", "--yes", "--allow-data-loss"])
        .arg(file.path());
    run_ok(c);
    let now = live_instances(&ec2, stack).await;
    assert_eq!(now.len(), 1);
    let new_vm = now[0].instance_id().map(str::to_string);
    assert_ne!(new_vm, vm, "replaced once allowed");
    let vols = data_volumes(&ec2, stack).await;
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0].1, new_vm, "the new VM has its data volume");
    down(&emu, stack);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_the_domain_deletes_the_record() {
    let emu = Emulator::start();
    let stack = "vm-nodns";
    let file = StackFile::example(stack, &[]);
    up(&emu, file.path());
    file.rewrite(&[("  hosted_zone: example.org", "")]);
    let r = up(&emu, file.path());
    assert_eq!(r.record("plan")["summary"]["delete"], 1);
    assert_eq!(a_record(&emu, "books.example.org.").await, None);
    down(&emu, stack);
}

/// Route 53 names are case-insensitive: a capitalised domain and zone find their record again
/// (the next plan changes nothing) and `down` deletes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_capitalised_domain_is_the_same_record() {
    let emu = Emulator::start();
    let stack = "vm-case";
    let file = StackFile::example(
        stack,
        &[
            ("  name: books.example.org", "  name: Books.Example.ORG"),
            ("  hosted_zone: example.org", "  hosted_zone: Example.Org"),
        ],
    );
    up(&emu, file.path());
    assert!(a_record(&emu, "books.example.org.").await.is_some());
    let mut plan = emu.iac();
    plan.arg("plan").arg(file.path()).arg("--detailed-exitcode");
    let plan = run(plan);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    down(&emu, stack);
    assert_eq!(a_record(&emu, "books.example.org.").await, None);
}

/// `up` killed with SIGKILL part-way, then run again: exactly one of everything.
#[tokio::test(flavor = "multi_thread")]
async fn up_killed_part_way_converges_without_duplicates() {
    let emu = Emulator::start();
    let stack = "vm-crash";
    let file = StackFile::example(stack, &[]);
    // Slow every call down so the kill lands in the middle of the run.
    let proxy = SlowProxy::start(emu.port, Duration::from_millis(150));
    let mut c = emu.iac_at(&proxy.url);
    c.args(["-o", "json", "up"])
        .arg(file.path())
        .arg("--yes")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn iac up");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let started_vm = line.contains("\"event\":\"started\"") && line.contains("\"id\":\"vm\"");
        seen.push(line);
        if started_vm {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // The proxy holds each request back: what the killed run sent (its RunInstances among
    // them) reaches the emulator only now. Real AWS would match the retried launch by its
    // client token; the emulator does not, so the next run starts once all of it has landed.
    proxy.wait_idle(Duration::from_secs(30));
    assert!(
        seen.iter()
            .any(|l| l.contains("\"event\":\"done\"") && l.contains("web-sg")),
        "killed too early: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("\"event\":\"outputs\"")),
        "the run finished before the kill"
    );

    // The killed run still holds the stack lock (its lease would expire by itself): break it
    // as the README says, then converge.
    let mut unlock = emu.iac();
    unlock.args(["unlock", "--stack", stack, "--yes"]);
    run_ok(unlock);
    let ec2 = emu.ec2().await;
    up(&emu, file.path());
    assert_eq!(security_groups(&ec2, stack).await.len(), 1);
    assert_eq!(live_instances(&ec2, stack).await.len(), 1);
    assert_eq!(addresses(&ec2, stack).await.len(), 1);
    let again = up(&emu, file.path());
    assert_eq!(
        again.record("summary")["mutating_calls"],
        serde_json::json!({})
    );
    let d = down(&emu, stack);
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn down_without_yes_off_a_terminal_is_refused() {
    let emu = Emulator::start();
    let file = StackFile::example("vm-confirm", &[]);
    up(&emu, file.path());
    let mut c = emu.iac();
    c.args(["down", "--stack", "vm-confirm"])
        .stdin(Stdio::null());
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(
        live_instances(&emu.ec2().await, "vm-confirm").await.len(),
        1
    );
    down(&emu, "vm-confirm");
}

/// Injected faults (every third connection answered 503 and closed) do not break `up` or
/// `down`: the SDK's retries and the engine ride them out, and the result is the same stack.
#[tokio::test(flavor = "multi_thread")]
async fn up_and_down_ride_out_injected_faults() {
    let emu = Emulator::start();
    let stack = "vm-faults";
    let file = StackFile::example(stack, &[]);
    let proxy = FlakyProxy::start(emu.port, 3);
    let mut c = emu.iac_at(&proxy.url);
    c.args(["-o", "json", "up"])
        .arg(file.path())
        .arg("--yes")
        .env("AWS_MAX_ATTEMPTS", "6");
    run_ok(c);
    assert!(
        proxy.refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no fault was injected"
    );
    let ec2 = emu.ec2().await;
    assert_eq!(security_groups(&ec2, stack).await.len(), 1);
    assert_eq!(live_instances(&ec2, stack).await.len(), 1);
    assert_eq!(addresses(&ec2, stack).await.len(), 1);
    let mut d = emu.iac_at(&proxy.url);
    d.args([
        "-o",
        "json",
        "down",
        "--stack",
        stack,
        "--yes",
        "--delete-data",
    ])
    .env("AWS_MAX_ATTEMPTS", "6");
    let d = run_ok(d);
    assert_eq!(d.record("verified")["remaining"], serde_json::json!([]));
}
