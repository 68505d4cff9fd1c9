//! The stack lock against the emulator: concurrent `up` runs through a proxy adding 150 ms per
//! call, a holder killed with SIGKILL, Ctrl-C and SIGTERM, `status` and `unlock`; exact stack
//! names for `--stack`; a protected stack and `down --delete-data` (alb-asg and lb-vms); the lock
//! parameter's tags; `down` and `plan` while an `up` holds the lock; lease renewal by a holder
//! outliving its lease; the CI run id in the holder record; no look-up warning from a run the
//! lock refuses.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LOCK_LOST: i32 = 5;

fn up_cmd(
    emu: &Emulator,
    url: &str,
    file: &std::path::Path,
    extra: &[&str],
) -> std::process::Command {
    let mut c = emu.iac_at(url);
    // `iac`'s own retry budget: two busy runs and a slow proxy on a shared machine.
    c.env_remove("AWS_MAX_ATTEMPTS")
        .arg("up")
        .arg(file)
        .arg("--yes")
        .args(extra);
    c
}

fn spawn(mut c: std::process::Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iac")
}

fn finish(child: Child) -> Run {
    let out = child.wait_with_output().expect("wait for iac");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// The lock parameter's value, if it exists.
async fn lock_value(emu: &Emulator, stack: &str) -> Option<String> {
    emu.ssm()
        .await
        .get_parameter()
        .name(format!("/iac/{stack}/lock"))
        .send()
        .await
        .ok()
        .and_then(|o| o.parameter().and_then(|p| p.value()).map(str::to_string))
}

/// Waits until `holder` holds the stack's lock (failing with its output if it ended first).
async fn until_locked(emu: &Emulator, stack: &str, holder: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = lock_value(emu, stack).await {
            return v;
        }
        if let Ok(Some(status)) = holder.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("the holder ended ({status}) before taking the lock of {stack}:\n{err}");
        }
        assert!(Instant::now() < deadline, "nobody took the lock of {stack}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every live resource of the stack in EC2, by kind and logical id, with how many of each.
async fn ec2_census(emu: &Emulator, stack: &str) -> Vec<(String, usize)> {
    let ec2 = emu.ec2().await;
    let mut out = Vec::new();
    let vms = live_instances(&ec2, stack).await;
    let mut ids: Vec<String> = vms.iter().filter_map(|i| tag(i.tags(), "iac:id")).collect();
    ids.sort();
    out.push((format!("instances {ids:?}"), vms.len()));
    out.push(("groups".into(), group_rules(&ec2, stack).await.len()));
    let eips = ec2
        .describe_addresses()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("addresses");
    out.push(("addresses".into(), eips.addresses().len()));
    out
}

fn one_of_each() -> Vec<(String, usize)> {
    vec![
        ("instances [\"vm\"]".into(), 1),
        ("groups".into(), 1),
        ("addresses".into(), 1),
    ]
}

/// What a run that kept the lock left: one of each EC2 resource, and the lock released.
async fn assert_one_of_each_unlocked(emu: &Emulator, stack: &str) {
    assert_eq!(ec2_census(emu, stack).await, one_of_each());
    assert_eq!(lock_value(emu, stack).await, None, "the lock is released");
}

/// The run ended refused by the stack's lock, and said so.
fn assert_refused_by_the_lock(r: &Run, stack: &str) {
    assert_eq!(r.code, LOCK_LOST, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("stack `{stack}` is locked by another run")),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_up_from_scratch_one_wins_the_other_names_the_holder() {
    let emu = Emulator::start();
    let proxy = AwsProxy::slow(&emu, 150);
    let stack = "lk-scratch";
    let file = StackFile::example(stack, &[]);
    let a = spawn(up_cmd(&emu, &proxy.url, file.path(), &[]));
    let b = spawn(up_cmd(&emu, &proxy.url, file.path(), &[]));
    let (a, b) = (finish(a), finish(b));
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(codes, [0, LOCK_LOST], "a:\n{}\nb:\n{}", a.stderr, b.stderr);
    let loser = if a.code == LOCK_LOST { &a } else { &b };
    assert_refused_by_the_lock(loser, stack);
    assert!(
        loser.stderr.contains("running `up` for")
            && loser.stderr.contains("--lock-wait 10m")
            && loser.stderr.contains("iac unlock"),
        "{}",
        loser.stderr
    );
    assert_one_of_each_unlocked(&emu, stack).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_up_with_lock_wait_and_an_instance_replacement_leave_one_instance() {
    let emu = Emulator::start();
    let proxy = AwsProxy::slow(&emu, 150);
    let stack = "lk-replace";
    let file = StackFile::example(stack, &[]);
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    let before = live_instances(&emu.ec2().await, stack).await;
    // A new instance type replaces the instance.
    file.rewrite(&[("type: t3.small", "type: t3.medium")]);
    let a = spawn(up_cmd(
        &emu,
        &proxy.url,
        file.path(),
        &["--lock-wait", "5m"],
    ));
    let b = spawn(up_cmd(
        &emu,
        &proxy.url,
        file.path(),
        &["--lock-wait", "5m"],
    ));
    let (a, b) = (finish(a), finish(b));
    assert_eq!(
        (a.code, b.code),
        (0, 0),
        "a:\n{}\nb:\n{}",
        a.stderr,
        b.stderr
    );
    // One of them waited, with a progress line naming the holder.
    assert!(
        [&a, &b].iter().any(|r| r
            .stderr
            .contains(&format!("waiting for the lock of stack `{stack}`: held by"))),
        "a:\n{}\nb:\n{}",
        a.stderr,
        b.stderr
    );
    assert_eq!(ec2_census(&emu, stack).await, one_of_each());
    let after = live_instances(&emu.ec2().await, stack).await;
    assert_ne!(before[0].instance_id(), after[0].instance_id(), "replaced");
    assert_eq!(
        after[0].instance_type().map(|t| t.as_str()),
        Some("t3.medium")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_killed_with_sigkill_is_taken_over_once_its_lease_expires() {
    let emu = Emulator::start();
    let proxy = AwsProxy::slow(&emu, 300);
    let stack = "lk-killed";
    let file = StackFile::example(stack, &[]);
    let mut c = up_cmd(&emu, &proxy.url, file.path(), &[]);
    c.env("IAC_LOCK_LEASE_SECS", "3");
    // The emulator loads its SSM backend on the first call (seconds): not while the holder runs.
    assert_eq!(lock_value(&emu, stack).await, None);
    let mut holder = spawn(c);
    let record = until_locked(&emu, stack, &mut holder).await;
    holder.kill().expect("SIGKILL the holder");
    let _ = holder.wait();
    let pid = holder.id().to_string();
    assert!(
        record.contains(&pid),
        "the record names the holder: {record}"
    );
    // Right away the lease still runs: the next `up` is refused.
    let refused = run(up_cmd(&emu, &emu.url, file.path(), &[]));
    assert_eq!(refused.code, LOCK_LOST, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("pid {pid}")),
        "{}",
        refused.stderr
    );
    // Waiting for it: the lease expires and is taken over, with a warning naming the old holder.
    let mut c = up_cmd(&emu, &emu.url, file.path(), &["--lock-wait", "2m"]);
    c.env("IAC_LOCK_LEASE_SECS", "3");
    let r = run_ok(c);
    assert!(
        r.stderr
            .contains(&format!("took over the lock of stack `{stack}`"))
            && r.stderr.contains(&format!("pid {pid}")),
        "{}",
        r.stderr
    );
    assert_one_of_each_unlocked(&emu, stack).await;
}

async fn interrupt_releases_the_lock(signal: &str, code: i32) {
    let emu = Emulator::start();
    // The run stays at its RunInstances until the signal: it is interrupted mid-way, always.
    let proxy = AwsProxy::holding(&emu, 0, "ec2:RunInstances");
    let stack = format!("lk-{}", signal.to_ascii_lowercase());
    let file = StackFile::example(&stack, &[]);
    // The emulator loads its SSM backend on the first call (seconds): not while the holder runs.
    assert_eq!(lock_value(&emu, &stack).await, None);
    let mut holder = spawn(up_cmd(&emu, &proxy.url, file.path(), &[]));
    until_locked(&emu, &stack, &mut holder).await;
    // `status` does not take the lock, and shows it.
    let mut c = emu.iac();
    c.arg("status").arg(file.path());
    let status = run_ok(c);
    assert!(
        status.stdout.contains("Locked by") && status.stdout.contains("running `up`"),
        "{}",
        status.stdout
    );
    let kill = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &holder.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let r = finish(holder);
    assert_eq!(r.code, code, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("interrupted by SIG{signal}")),
        "{}",
        r.stderr
    );
    assert_eq!(
        lock_value(&emu, &stack).await,
        None,
        "released on SIG{signal}"
    );
    // And the next `up` goes through at once, adopting what was made.
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    assert_eq!(ec2_census(&emu, &stack).await, one_of_each());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_the_lock() {
    interrupt_releases_the_lock("TERM", 143).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_releases_the_lock() {
    interrupt_releases_the_lock("INT", 130).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unlock_breaks_a_lock_left_behind() {
    let emu = Emulator::start();
    let proxy = AwsProxy::slow(&emu, 300);
    let stack = "lk-unlock";
    let file = StackFile::example(stack, &[]);
    // The emulator loads its SSM backend on the first call (seconds): not while the holder runs.
    assert_eq!(lock_value(&emu, stack).await, None);
    let mut holder = spawn(up_cmd(&emu, &proxy.url, file.path(), &[]));
    until_locked(&emu, stack, &mut holder).await;
    holder.kill().expect("SIGKILL");
    let _ = holder.wait();
    let mut c = emu.iac();
    c.args(["unlock", "--stack", stack]);
    let refused = run(c);
    assert_eq!(
        refused.code, 2,
        "needs --yes off a terminal: {}",
        refused.stderr
    );
    assert!(lock_value(&emu, stack).await.is_some());
    let mut c = emu.iac();
    c.args(["unlock", "--stack", stack, "--yes"]);
    let r = run_ok(c);
    assert!(r.stdout.contains("running `up`"), "{}", r.stdout);
    assert_eq!(lock_value(&emu, stack).await, None);
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
}

#[tokio::test(flavor = "multi_thread")]
async fn patterns_are_refused_as_stack_names_and_touch_nothing() {
    let emu = Emulator::start();
    let stack = "bookshop";
    let file = StackFile::example(stack, &[]);
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    let census = ec2_census(&emu, stack).await;
    // Nothing listens at this address: a usage error must come before any AWS call.
    let dead = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["down", "--stack", "book*", "--yes"],
        vec!["down", "--stack", "bookshop?", "--yes", "--delete-data"],
        vec!["status", "--stack", "*"],
        vec!["status", "--stack", "book shop"],
        vec!["unlock", "--stack", "[b]ookshop", "--yes"],
    ] {
        for url in [&emu.url, &dead] {
            let mut c = emu.iac_at(url);
            c.args(&args);
            let r = run(c);
            assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
            assert!(
                r.stderr.contains("is not a valid stack name")
                    && r.stderr.contains("matched exactly"),
                "{args:?}: {}",
                r.stderr
            );
        }
    }
    assert_eq!(ec2_census(&emu, stack).await, census);
    assert_eq!(census, one_of_each());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_stack_survives_down_delete_data_until_an_up_lifts_protection() {
    let emu = Emulator::start();
    let stack = "lk-protected";
    let file = StackFile::from_example("stacks/bookstore-asg.yaml", stack, &[]);
    let text = std::fs::read_to_string(file.path()).expect("read");
    std::fs::write(file.path(), format!("{text}\nprotect: true\n")).expect("write");
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    let aws = emu.aws().await;
    let cluster = || async {
        aws.rds
            .describe_db_clusters()
            .db_cluster_identifier(format!("{stack}-db"))
            .send()
            .await
            .expect("cluster")
            .db_clusters()[0]
            .clone()
    };
    let fs_tags = || async {
        let fss = aws.efs.describe_file_systems().send().await.expect("efs");
        let fs = fss
            .file_systems()
            .iter()
            .find(|f| {
                f.tags()
                    .iter()
                    .any(|t| t.key() == "iac:stack" && t.value() == stack)
            })
            .expect("the stack's file system")
            .clone();
        fs.tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(cluster().await.deletion_protection(), Some(true));
    assert_eq!(
        fs_tags().await.get("iac:protected").map(String::as_str),
        Some("true")
    );

    let down = |extra: &[&str]| {
        let mut c = emu.iac();
        c.arg("down").arg(file.path()).args(["--yes"]).args(extra);
        run(c)
    };
    let r = down(&["--delete-data", "--skip-final-snapshot"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("stack `{stack}` is protected"))
            && r.stderr.contains("protect: false"),
        "{}",
        r.stderr
    );
    // Removing the key alone changes nothing: the protection is on the resources.
    std::fs::write(file.path(), &text).expect("write");
    assert_eq!(down(&[]).code, 2);
    assert_eq!(cluster().await.status(), Some("available"));
    assert!(fs_tags().await.contains_key("iac:stack"));
    assert_eq!(
        lock_value(&emu, stack).await,
        None,
        "released after the refusal"
    );

    // `up` with `protect: false` lifts it; then `down --delete-data` deletes everything.
    std::fs::write(file.path(), format!("{text}\nprotect: false\n")).expect("write");
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    assert_eq!(cluster().await.deletion_protection(), Some(false));
    assert!(!fs_tags().await.contains_key("iac:protected"));
    let r = down(&["--delete-data", "--skip-final-snapshot"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        lock_value(&emu, stack).await,
        None,
        "`down` removes the lock last"
    );
}

/// The lock parameter's (value, version), if it exists.
async fn lock_param(emu: &Emulator, stack: &str) -> Option<(String, i64)> {
    emu.ssm()
        .await
        .get_parameter()
        .name(format!("/iac/{stack}/lock"))
        .send()
        .await
        .ok()
        .and_then(|o| {
            o.parameter()
                .map(|p| (p.value().unwrap_or_default().to_string(), p.version()))
        })
}

/// Starts an `up` of a new stack with `env` that stays at its `RunInstances` (held by a proxy)
/// until [`finish_held`], and waits until it holds the lock; returns it with the lock's value
/// and the proxy. How long it holds the lock is up to the test, not to timing.
async fn held_holder(
    emu: &Emulator,
    stack: &str,
    file: &StackFile,
    env: &[(&str, &str)],
) -> (Child, String, AwsProxy) {
    // The emulator loads its SSM backend on the first call (seconds): not while the holder runs.
    assert_eq!(lock_value(emu, stack).await, None);
    let proxy = AwsProxy::holding(emu, 0, "ec2:RunInstances");
    let mut c = up_cmd(emu, &proxy.url, file.path(), &[]);
    c.envs(env.iter().copied());
    let mut holder = spawn(c);
    let record = until_locked(emu, stack, &mut holder).await;
    (holder, record, proxy)
}

/// Lets a [`held_holder`] go on, and waits for it to end.
fn finish_held(holder: Child, proxy: &AwsProxy) -> Run {
    proxy.release();
    finish(holder)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_parameter_is_tagged_with_its_stack() {
    let emu = Emulator::start();
    let stack = "lk-tagged";
    let file = StackFile::example(stack, &[]);
    let (holder, _, proxy) = held_holder(&emu, stack, &file, &[]).await;
    let tags = emu
        .ssm()
        .await
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(format!("/iac/{stack}/lock"))
        .send()
        .await
        .expect("list tags of the lock parameter");
    let tags: std::collections::BTreeMap<_, _> = tags
        .tag_list()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    assert_eq!(
        tags.get("iac:stack").map(String::as_str),
        Some(stack),
        "{tags:?}"
    );
    let r = finish_held(holder, &proxy);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lock_value(&emu, stack).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_is_refused_while_an_up_holds_the_lock_and_deletes_nothing() {
    let emu = Emulator::start();
    let stack = "lk-down";
    let file = StackFile::example(stack, &[]);
    let (holder, _, proxy) = held_holder(&emu, stack, &file, &[]).await;
    let pid = holder.id().to_string();
    let mut c = emu.iac();
    c.arg("down").arg(file.path()).arg("--yes");
    let refused = run(c);
    assert_refused_by_the_lock(&refused, stack);
    assert!(
        refused.stderr.contains(&format!("pid {pid}"))
            && refused.stderr.contains("running `up` for"),
        "{}",
        refused.stderr
    );
    // The holder goes on undisturbed and everything it made is still there.
    let r = finish_held(holder, &proxy);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_one_of_each_unlocked(&emu, stack).await;
}

/// A run the lock refuses says only that: what its look-ups found (here a secret not created
/// yet) is held back until the lock is held, and then shown (by the holder).
#[tokio::test(flavor = "multi_thread")]
async fn a_run_refused_by_the_lock_shows_no_look_up_warning() {
    let emu = Emulator::start();
    let stack = "lk-quiet";
    let missing = "/lk-quiet/not-created";
    let file = StackFile::example(stack, &[("/bookstore/secret-key", missing)]);
    let (holder, _, proxy) = held_holder(&emu, stack, &file, &[]).await;
    let refused = run(up_cmd(&emu, &emu.url, file.path(), &[]));
    assert_refused_by_the_lock(&refused, stack);
    let warning = format!("SSM parameter {missing} does not exist yet");
    assert!(!refused.stderr.contains(&warning), "{}", refused.stderr);
    let r = finish_held(holder, &proxy);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr.matches(&warning).count(), 1, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_does_not_take_the_lock() {
    let emu = Emulator::start();
    let stack = "lk-plan";
    let file = StackFile::example(stack, &[]);
    // A long lease: no renewal changes the record while `plan` runs.
    let (holder, _, proxy) =
        held_holder(&emu, stack, &file, &[("IAC_LOCK_LEASE_SECS", "600")]).await;
    let before = lock_param(&emu, stack).await.expect("the lock is held");
    let mut c = emu.iac();
    c.arg("plan").arg(file.path());
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        lock_param(&emu, stack).await,
        Some(before),
        "`plan` left the lock alone"
    );
    let r = finish_held(holder, &proxy);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lock_value(&emu, stack).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_running_longer_than_its_lease_renews_it_and_keeps_the_lock() {
    let emu = Emulator::start();
    let stack = "lk-renew";
    let file = StackFile::example(stack, &[]);
    let lease = Duration::from_secs(3);
    let env = [("IAC_LOCK_LEASE_SECS", "3")];
    let (mut holder, _, proxy) = held_holder(&emu, stack, &file, &env).await;
    let locked_at = Instant::now();
    let (_, first) = lock_param(&emu, stack).await.expect("held");
    // Past the lease and its margin since the first write, with at least one renewal seen.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, version) = lock_param(&emu, stack).await.expect("the lock is kept");
        if version > first && locked_at.elapsed() > lease + lease / 2 {
            break;
        }
        if holder.try_wait().expect("holder").is_some() {
            let r = finish(holder);
            panic!(
                "the holder ended ({}) before a renewal past its lease was seen:\n{}",
                r.code, r.stderr
            );
        }
        assert!(Instant::now() < deadline, "the lock was never renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(holder.try_wait().expect("holder").is_none());
    let pid = holder.id().to_string();
    let mut c = up_cmd(&emu, &emu.url, file.path(), &[]);
    c.envs(env);
    let refused = run(c);
    assert_eq!(refused.code, LOCK_LOST, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("pid {pid}")),
        "{}",
        refused.stderr
    );
    let r = finish_held(holder, &proxy);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_one_of_each_unlocked(&emu, stack).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_holder_record_names_the_github_run() {
    let emu = Emulator::start();
    let stack = "lk-ci";
    let file = StackFile::example(stack, &[]);
    let (holder, record, proxy) =
        held_holder(&emu, stack, &file, &[("GITHUB_RUN_ID", "4242")]).await;
    assert!(record.contains("GITHUB_RUN_ID=4242"), "{record}");
    let mut c = up_cmd(&emu, &emu.url, file.path(), &[]);
    c.env_remove("GITHUB_RUN_ID");
    let refused = run(c);
    assert_eq!(refused.code, LOCK_LOST, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("GITHUB_RUN_ID=4242"),
        "{}",
        refused.stderr
    );
    let r = finish_held(holder, &proxy);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_lb_vms_stack_keeps_its_data_volume_and_vms_on_down_delete_data() {
    let emu = Emulator::start();
    let stack = "lk-protected-vms";
    let file = StackFile::from_example("stacks/bookstore-lb-vms.yaml", stack, &[]);
    let text = std::fs::read_to_string(file.path()).expect("read");
    std::fs::write(file.path(), format!("{text}\nprotect: true\n")).expect("write");
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    let ec2 = emu.ec2().await;
    let volumes = data_volumes(&ec2, stack).await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let vol_id = volumes[0].0.clone();
    let vol_tags = || async {
        let out = ec2
            .describe_volumes()
            .volume_ids(&vol_id)
            .send()
            .await
            .expect("the data volume");
        tag_map(out.volumes()[0].tags())
    };
    assert_eq!(
        vol_tags().await.get("iac:protected").map(String::as_str),
        Some("true")
    );
    let vms = |v: Vec<aws_sdk_ec2::types::Instance>| {
        let mut ids: Vec<String> = v
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    let before = vms(live_instances(&ec2, stack).await);
    assert_eq!(before.len(), 4, "{before:?}");

    let mut c = emu.iac();
    c.arg("down")
        .arg(file.path())
        .args(["--yes", "--delete-data"]);
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("stack `{stack}` is protected")),
        "{}",
        r.stderr
    );
    assert_eq!(
        data_volumes(&ec2, stack).await,
        volumes,
        "the data volume is kept"
    );
    assert_eq!(
        vol_tags().await.get("iac:stack").map(String::as_str),
        Some(stack)
    );
    assert_eq!(
        vms(live_instances(&ec2, stack).await),
        before,
        "no VM deleted"
    );
    assert_eq!(
        lock_value(&emu, stack).await,
        None,
        "released after the refusal"
    );
}

/// An `up` with nothing to change takes no lock: another `up` of the stack, stopped halfway
/// through its reads, neither holds it up nor refuses it, and neither writes the lock.
#[tokio::test(flavor = "multi_thread")]
async fn no_op_ups_at_the_same_time_both_succeed_without_the_lock() {
    let emu = Emulator::start();
    let stack = "lk-noop";
    let file = StackFile::example(stack, &[]);
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    let proxy = AwsProxy::holding(&emu, 0, "ec2:DescribeInstances");
    let mut first = spawn(up_cmd(&emu, &proxy.url, file.path(), &[]));
    let lock = format!("/iac/{stack}/lock");
    // The first run has read (or, were it to take it, written) the lock, and waits for its
    // instances' answer.
    until_calls(&proxy, &mut first, |calls| {
        !calls.of("ssm:GetParameters", &lock).is_empty()
            || !calls.of("ssm:PutParameter", &lock).is_empty()
    })
    .await;
    let second = run(up_cmd(&emu, &emu.url, file.path(), &[]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stdout.contains("No changes"), "{}", second.stdout);
    let first = finish_held(first, &proxy);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains("No changes"), "{}", first.stdout);
    let calls = proxy.calls();
    assert!(
        calls.of("ssm:PutParameter", &lock).is_empty(),
        "{}",
        calls.changes()
    );
    assert_eq!(lock_value(&emu, stack).await, None);
}

/// A lock held by someone else still stops an `up` with nothing to change: it may be a run
/// halfway through changing the stack, so what the reads see is not an answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_no_op_up_is_refused_while_the_lock_is_held() {
    let emu = Emulator::start();
    let stack = "lk-noop-held";
    let file = StackFile::example(stack, &[]);
    run_ok(up_cmd(&emu, &emu.url, file.path(), &[]));
    emu.ssm()
        .await
        .put_parameter()
        .name(format!("/iac/{stack}/lock"))
        .value("held by hand")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("write a lock by hand");
    let refused = run(up_cmd(&emu, &emu.url, file.path(), &[]));
    assert_refused_by_the_lock(&refused, stack);
    assert!(!refused.stdout.contains("No changes"), "{}", refused.stdout);
    assert_eq!(
        lock_value(&emu, stack).await.as_deref(),
        Some("held by hand")
    );
}
