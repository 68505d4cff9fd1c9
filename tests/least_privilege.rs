//! Least privilege, read back from the emulator: with `instance_profile: create`, every tier's
//! machine roles are created one per role, and what IAM holds is checked against what each role
//! needs (no managed policy, no parameter outside its read set, writes only where a role
//! publishes besides its instances' boot reports (write-only, under the stack's boot path),
//! secrets only in alb-asg, the monitor's EC2 rights all conditioned); every instance
//! and launch template has an IMDS hop limit of 1; a `-vvv` log of `up` holds none of the
//! secrets `up` generated; `down` removes every role.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;

/// One statement of a role's policy, with `Action` and `Resource` as lists.
#[derive(Debug)]
struct Statement {
    actions: Vec<String>,
    resources: Vec<String>,
    condition: Option<Value>,
}

impl Statement {
    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| {
            a == action
                || a == "*"
                || a.strip_suffix('*')
                    .is_some_and(|prefix| action.starts_with(prefix))
        })
    }
}

/// A role `iac` created: its name and the statements of all its policies.
#[derive(Debug)]
struct Role {
    name: String,
    statements: Vec<Statement>,
}

impl Role {
    /// Parameter names (without `arn:...:parameter`) that `action` is allowed on.
    fn params(&self, action: &str) -> BTreeSet<String> {
        self.statements
            .iter()
            .filter(|s| s.allows(action))
            .flat_map(|s| &s.resources)
            .map(|r| match r.split_once(":parameter") {
                Some((_, name)) => name.to_string(),
                None => r.clone(),
            })
            .collect()
    }

    fn allows(&self, action: &str) -> bool {
        self.statements.iter().any(|s| s.allows(action))
    }

    /// Parameters it may write besides its instances' boot reports (checked apart, in
    /// `assert_general`).
    fn writes(&self, stack: &str) -> BTreeSet<String> {
        let mut w = self.params("ssm:PutParameter");
        w.remove(&boot_reports(stack));
        w
    }
}

/// The one pattern a role may write through: its instances' boot reports.
fn boot_reports(stack: &str) -> String {
    format!("/iac/{stack}/boot/i-*")
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// IAM returns policy documents URL-encoded.
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The roles under the stack's path `/iac/<stack>/`, by name, with their policies. Asserts that
/// none has a managed policy attached (the managed SSM policy reads every parameter).
async fn roles(emu: &Emulator, stack: &str) -> BTreeMap<String, Role> {
    let iam = aws_sdk_iam::Client::new(&emu.config().await);
    let path = format!("/iac/{stack}/");
    let listed = iam.list_roles().send().await.expect("list roles");
    let mut out = BTreeMap::new();
    // The emulator ignores PathPrefix: the path is checked here.
    for r in listed.roles().iter().filter(|r| r.path() == path) {
        let name = r.role_name().to_string();
        let attached = iam
            .list_attached_role_policies()
            .role_name(&name)
            .send()
            .await
            .expect("attached policies");
        assert!(
            attached.attached_policies().is_empty(),
            "{name} has managed policies: {:?}",
            attached.attached_policies()
        );
        let inline = iam
            .list_role_policies()
            .role_name(&name)
            .send()
            .await
            .expect("inline policies");
        let mut statements = Vec::new();
        for p in inline.policy_names() {
            let doc = iam
                .get_role_policy()
                .role_name(&name)
                .policy_name(p)
                .send()
                .await
                .expect("policy");
            let doc: Value =
                serde_json::from_str(&url_decode(doc.policy_document())).expect("policy JSON");
            for s in doc["Statement"].as_array().expect("statements") {
                assert_eq!(s["Effect"], "Allow", "{s}");
                statements.push(Statement {
                    actions: list(&s["Action"]),
                    resources: list(&s["Resource"]),
                    condition: s.get("Condition").cloned(),
                });
            }
        }
        out.insert(name.clone(), Role { name, statements });
    }
    out
}

/// What holds for every role of every tier.
fn assert_general(role: &Role, secrets_allowed: bool, stack: &str) {
    // Its instances publish their boot reports: write-only, in a statement of its own that
    // covers only instance-named parameters under the stack's boot path.
    let boot = boot_reports(stack);
    let report_grants: Vec<&Statement> = role
        .statements
        .iter()
        .filter(|s| {
            s.resources
                .iter()
                .any(|r| r.ends_with(&format!(":parameter{boot}")))
        })
        .collect();
    assert_eq!(
        report_grants.len(),
        1,
        "{}: boot report grants {report_grants:?}",
        role.name
    );
    assert_eq!(
        report_grants[0].actions,
        vec!["ssm:PutParameter".to_string()],
        "{}",
        role.name
    );
    assert_eq!(report_grants[0].resources.len(), 1, "{}", role.name);
    let boot_path = format!("/iac/{stack}/boot/");
    for action in [
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:DeleteParameter",
    ] {
        assert!(
            !role
                .params(action)
                .iter()
                .any(|p| p.starts_with(&boot_path)),
            "{}: {action} on the boot reports",
            role.name
        );
    }
    for s in role
        .statements
        .iter()
        .filter(|s| !std::ptr::eq(*s, report_grants[0]))
    {
        assert!(
            !s.actions.iter().any(|a| a == "*" || a.ends_with(":*")),
            "{}: a wildcard action: {s:?}",
            role.name
        );
        // Reads and writes of parameters name their parameters (the region and account may be
        // any: the names are the stack's own).
        if s.actions
            .iter()
            .any(|a| a.starts_with("ssm:") && a.contains("Parameter"))
        {
            for r in &s.resources {
                let name = r.split_once(":parameter/").map(|(_, n)| n);
                assert!(
                    name.is_some_and(|n| !n.contains('*')),
                    "{}: parameters matched by a pattern: {r}",
                    role.name
                );
            }
        }
        // No launch, terminate or tag right without a condition.
        for a in [
            "ec2:RunInstances",
            "ec2:TerminateInstances",
            "ec2:CreateTags",
        ] {
            if s.allows(a) {
                assert!(
                    s.condition
                        .as_ref()
                        .is_some_and(|c| c.as_object().is_some_and(|o| !o.is_empty())),
                    "{}: {a} without a condition: {s:?}",
                    role.name
                );
            }
        }
        if s.allows("iam:PassRole") {
            assert!(
                s.resources
                    .iter()
                    .all(|r| !r.ends_with(":role/*") && r != "*"),
                "{}: PassRole on any role: {s:?}",
                role.name
            );
        }
    }
    assert!(
        role.allows("ssm:UpdateInstanceInformation") && role.allows("ec2messages:GetMessages"),
        "{}: Run Command's agent rights are missing",
        role.name
    );
    assert!(!role.allows("ssm:GetParametersByPath"), "{}", role.name);
    assert_eq!(
        role.allows("secretsmanager:GetSecretValue"),
        secrets_allowed,
        "{}: secrets access",
        role.name
    );
}

/// Every instance and launch template of the stack has IMDSv2 with a hop limit of 1, and each
/// instance uses the profile of its machine role (`<stack>-<role>`).
async fn assert_hop_limit_and_profiles(
    emu: &Emulator,
    stack: &str,
    role_of: &dyn Fn(&str) -> String,
) {
    let ec2 = emu.ec2().await;
    // Instances a group or the monitor launched have no `iac:id`: they go by their role tag.
    let vms: Vec<(String, _)> = live_instances(&ec2, stack)
        .await
        .into_iter()
        .map(|i| {
            let id = tag(i.tags(), "iac:id").unwrap_or_else(|| "launched".to_string());
            (id, i)
        })
        .collect();
    for (id, vm) in &vms {
        let md = vm.metadata_options().expect("metadata options");
        assert_eq!(md.http_put_response_hop_limit(), Some(1), "{id}");
        if id == "launched" {
            // The emulator gives group-launched instances no profile: their template is
            // checked below.
            continue;
        }
        let arn = vm
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .unwrap_or_default();
        let want = format!("/iac/{stack}/{stack}-{}", role_of(id));
        assert!(arn.ends_with(&want), "{id}: profile {arn}, want {want}");
    }
    let lts = ec2
        .describe_launch_templates()
        .filters(stack_filter(stack))
        .send()
        .await
        .expect("launch templates");
    for lt in lts.launch_templates() {
        let versions = ec2
            .describe_launch_template_versions()
            .launch_template_id(lt.launch_template_id().unwrap_or_default())
            .send()
            .await
            .expect("versions");
        for v in versions.launch_template_versions() {
            let md = v
                .launch_template_data()
                .and_then(|d| d.metadata_options())
                .expect("metadata options");
            assert_eq!(
                md.http_put_response_hop_limit(),
                Some(1),
                "{:?}",
                lt.launch_template_name()
            );
        }
    }
}

/// `iac -vvv up --yes`, which must succeed; its whole output.
fn up_traced(emu: &Emulator, file: &std::path::Path) -> String {
    let mut c = emu.iac();
    c.args(["-vvv", "-o", "json", "up"]).arg(file).arg("--yes");
    let r = run_ok(c);
    format!("{}\n{}", r.stdout, r.stderr)
}

fn down(emu: &Emulator, stack: &str) {
    let mut d = emu.iac();
    d.args([
        "-o",
        "json",
        "down",
        "--stack",
        stack,
        "--yes",
        "--delete-data",
        "--skip-final-snapshot",
    ]);
    let r = run(d);
    assert!(r.code == 0 || r.code == 4, "{}\n{}", r.stdout, r.stderr);
}

fn with_create(example: &str, stack: &str) -> StackFile {
    StackFile::from_example(
        example,
        stack,
        &[(
            "instance_profile: LabInstanceProfile",
            "instance_profile: create",
        )],
    )
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

fn p(stack: &str, leaf: &str) -> String {
    format!("/iac/{stack}/{leaf}")
}

#[tokio::test(flavor = "multi_thread")]
async fn single_vm_role_reads_only_its_secrets() {
    let emu = Emulator::start();
    let stack = "lp-vm";
    let file = with_create("stacks/bookstore-vm.yaml", stack);
    up_traced(&emu, file.path());
    let roles = roles(&emu, stack).await;
    assert_eq!(
        roles.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{stack}-vm")]
    );
    let vm = &roles[&format!("{stack}-vm")];
    assert_general(vm, false, stack);
    assert!(vm.writes(stack).is_empty(), "{vm:?}");
    let reads = vm.params("ssm:GetParameter");
    assert!(reads.contains("/bookstore/secret-key"), "{reads:?}");
    // The app's spec, which the in-place update reads on the VM.
    assert!(reads.contains(&format!("/iac/{stack}/app")), "{reads:?}");
    assert!(
        reads
            .iter()
            .all(|r| r.starts_with(&format!("/iac/{stack}/")) || r.starts_with("/bookstore/")),
        "{reads:?}"
    );
    assert_hop_limit_and_profiles(&emu, stack, &|_| "vm".to_string()).await;
    down(&emu, stack);
    assert!(roles_gone(&emu, stack).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn lb_vms_roles_read_only_what_their_vm_reads_and_none_writes() {
    let emu = Emulator::start();
    let stack = "lp-lb";
    let file = with_create("stacks/bookstore-lb-vms.yaml", stack);
    let log = up_traced(&emu, file.path());
    let roles = roles(&emu, stack).await;
    let name = |r: &str| format!("{stack}-{r}");
    assert_eq!(
        roles.keys().cloned().collect::<BTreeSet<_>>(),
        set(&[name("balancer"), name("web"), name("database")])
    );
    for r in roles.values() {
        assert_general(r, false, stack);
        assert!(r.writes(stack).is_empty(), "{} writes: {r:?}", r.name);
    }
    let reads = |r: &str| roles[&name(r)].params("ssm:GetParameter");
    assert_eq!(reads("balancer"), set(&[p(stack, "haproxy.cfg")]));
    assert_eq!(reads("database"), set(&[p(stack, "db-password")]));
    let web = reads("web");
    assert!(
        web.contains(&p(stack, "db-host"))
            && web.contains(&p(stack, "db-password"))
            && web.contains(&p(stack, "app")),
        "{web:?}"
    );
    assert!(!web.contains(&p(stack, "haproxy.cfg")), "{web:?}");
    assert_hop_limit_and_profiles(&emu, stack, &|id| match id {
        "lb" => "balancer".to_string(),
        "db" => "database".to_string(),
        _ => "web".to_string(),
    })
    .await;
    // The generated database password never appears in a -vvv log of `up`.
    let password = emu.secure_value(&p(stack, "db-password")).await;
    assert!(
        password.len() >= 16,
        "a generated password: {}",
        password.len()
    );
    assert!(
        !log.contains(&password),
        "the -vvv log holds the generated password"
    );
    down(&emu, stack);
    assert!(roles_gone(&emu, stack).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_workers_cannot_read_the_manager_token_and_only_manager_1_writes() {
    let emu = Emulator::start();
    let stack = "lp-sw";
    let file = with_create("stacks/bookstore-swarm.yaml", stack);
    up_traced(&emu, file.path());
    let roles = roles(&emu, stack).await;
    let name = |r: &str| format!("{stack}-{r}");
    let managers = roles.contains_key(&name("managers"));
    let mut want = vec![name("manager-1"), name("workers")];
    if managers {
        want.push(name("managers"));
    }
    assert_eq!(roles.keys().cloned().collect::<BTreeSet<_>>(), set(&want));
    for r in roles.values() {
        assert_general(r, false, stack);
    }
    let workers = &roles[&name("workers")];
    let reads = workers.params("ssm:GetParameter");
    assert_eq!(
        reads,
        set(&[
            p(stack, "swarm/leader-addr"),
            p(stack, "swarm/worker-token")
        ])
    );
    assert!(!reads.contains(&p(stack, "swarm/manager-token")));
    assert!(workers.writes(stack).is_empty(), "{workers:?}");
    let leader = &roles[&name("manager-1")];
    assert_eq!(
        leader.writes(stack),
        set(&[
            p(stack, "swarm/leader-addr"),
            p(stack, "swarm/manager-token"),
            p(stack, "swarm/worker-token"),
        ])
    );
    if managers {
        assert!(roles[&name("managers")].writes(stack).is_empty());
    }
    assert_hop_limit_and_profiles(&emu, stack, &|id| match id {
        "manager-1" => "manager-1".to_string(),
        id if id.starts_with("manager-") => "managers".to_string(),
        _ => "workers".to_string(),
    })
    .await;
    down(&emu, stack);
    assert!(roles_gone(&emu, stack).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn alb_asg_role_reads_only_its_own_clusters_secret() {
    let emu = Emulator::start();
    let stack = "lp-asg";
    let file = with_create("stacks/bookstore-asg.yaml", stack);
    up_traced(&emu, file.path());
    let roles = roles(&emu, stack).await;
    let web = &roles[&format!("{stack}-web")];
    assert_eq!(roles.len(), 1);
    assert_general(web, true, stack);
    assert!(web.writes(stack).is_empty());
    let secret = web
        .statements
        .iter()
        .find(|s| s.allows("secretsmanager:GetSecretValue"))
        .expect("the secret statement");
    let condition = secret.condition.as_ref().expect("a condition").to_string();
    assert!(
        condition.contains("aws:rds:primaryDBClusterArn")
            && condition.contains(&format!("cluster:{stack}-db\"")),
        "{condition}"
    );
    let reads = web.params("ssm:GetParameter");
    for leaf in ["db-endpoint", "db-secret-arn", "efs-id"] {
        assert!(reads.contains(&p(stack, leaf)), "{reads:?}");
    }
    assert_hop_limit_and_profiles(&emu, stack, &|_| "web".to_string()).await;
    down(&emu, stack);
    assert!(roles_gone(&emu, stack).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_scaler_monitor_launches_only_tagged_pool_instances_from_its_template() {
    let emu = Emulator::start();
    let stack = "lp-cs";
    let file = with_create("stacks/custom-scaler.yaml", stack);
    let log = up_traced(&emu, file.path());
    let roles = roles(&emu, stack).await;
    let name = |r: &str| format!("{stack}-{r}");
    assert_eq!(
        roles.keys().cloned().collect::<BTreeSet<_>>(),
        set(&[name("monitor"), name("agents")])
    );
    for r in roles.values() {
        assert_general(r, false, stack);
    }
    let agents = &roles[&name("agents")];
    // TLS: the monitor alone reads its key and certificates, and publishes the CA certificate
    // the agents pin; the agents read that CA and write nothing.
    assert!(agents.writes(stack).is_empty(), "{agents:?}");
    assert!(agents
        .params("ssm:GetParameter")
        .contains(&p(stack, "scaler-ca")));
    assert!(!agents
        .params("ssm:GetParameter")
        .contains(&p(stack, "scaler-tls")));
    assert!(agents
        .params("ssm:GetParameter")
        .contains(&p(stack, "monitor-address")));
    // Each monitor VM publishes its own address (a replacement VM its new one): the monitor
    // writes exactly that parameter and the CA's, the agents read it.
    let monitor_role = &roles[&name("monitor")];
    assert_eq!(
        monitor_role.writes(stack),
        set(&[p(stack, "scaler-ca"), p(stack, "monitor-address")])
    );
    assert!(monitor_role
        .params("ssm:GetParameter")
        .contains(&p(stack, "scaler-tls")));
    for a in [
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "ec2:CreateTags",
        "iam:PassRole",
    ] {
        assert!(!agents.allows(a), "the agents may {a}");
    }
    let monitor = &roles[&name("monitor")];
    let conditions = |action: &str| -> String {
        monitor
            .statements
            .iter()
            .filter(|s| s.allows(action))
            .map(|s| {
                format!(
                    "{:?} {}",
                    s.resources,
                    s.condition.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let run = conditions("ec2:RunInstances");
    assert!(run.contains("ec2:LaunchTemplate"), "{run}");
    assert!(
        run.contains(&format!("\"aws:RequestTag/iac:stack\":\"{stack}\"")),
        "{run}"
    );
    assert!(
        run.contains("\"aws:RequestTag/iac:scaler\":\"pool\""),
        "{run}"
    );
    assert!(
        run.contains("\"aws:ResourceTag/iac:id\":\"agent-lt\""),
        "{run}"
    );
    let tags = conditions("ec2:CreateTags");
    assert!(
        tags.contains("\"ec2:CreateAction\":\"RunInstances\""),
        "{tags}"
    );
    let term = conditions("ec2:TerminateInstances");
    assert!(
        term.contains(&format!("\"aws:ResourceTag/iac:stack\":\"{stack}\"")),
        "{term}"
    );
    assert!(
        term.contains("\"aws:ResourceTag/iac:scaler\":\"pool\""),
        "{term}"
    );
    let pass: Vec<&String> = monitor
        .statements
        .iter()
        .filter(|s| s.allows("iam:PassRole"))
        .flat_map(|s| &s.resources)
        .collect();
    assert_eq!(pass.len(), 1);
    assert!(
        pass[0].ends_with(&format!(":role/iac/{stack}/{}", name("agents"))),
        "{pass:?}"
    );
    assert_hop_limit_and_profiles(&emu, stack, &|_| "monitor".to_string()).await;
    // The monitor VM is launched by its group from the monitor's template, with the monitor's
    // profile; the pool from the agents' template, with the agents'.
    let ec2 = emu.ec2().await;
    for (template, role) in [("monitor", "monitor"), ("agent", "agents")] {
        let versions = ec2
            .describe_launch_template_versions()
            .launch_template_name(format!("{stack}-{template}"))
            .versions("$Default")
            .send()
            .await
            .expect("template versions");
        let profile = versions.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.iam_instance_profile())
            .and_then(|p| p.name())
            .map(str::to_string);
        assert_eq!(profile, Some(name(role)), "{template}");
    }
    let token = emu.secure_value(&p(stack, "scaler-token")).await;
    assert!(token.len() >= 16);
    assert!(!log.contains(&token), "the -vvv log holds the scaler token");
    // The TLS bundle iac generated: a key, the monitor's certificate and the CA; the key is in
    // no log.
    let bundle = emu.secure_value(&p(stack, "scaler-tls")).await;
    assert!(
        bundle.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{}",
        bundle.len()
    );
    assert_eq!(bundle.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    let key_line = bundle.lines().nth(1).expect("a key line");
    assert!(
        !log.contains(key_line),
        "the -vvv log holds the monitor's TLS key"
    );
    // openssl agrees: the certificate is signed by the CA, for the name the agents verify.
    let blocks: Vec<String> = bundle
        .split_inclusive("-----\n")
        .collect::<String>()
        .split("-----BEGIN ")
        .filter(|b| !b.is_empty())
        .map(|b| format!("-----BEGIN {b}"))
        .collect();
    assert_eq!(blocks.len(), 3, "{}", blocks.len());
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, ca) = (dir.path().join("cert.pem"), dir.path().join("ca.pem"));
    std::fs::write(&cert, &blocks[1]).expect("write");
    std::fs::write(&ca, &blocks[2]).expect("write");
    let verify = std::process::Command::new("openssl")
        .args([
            "verify",
            "-verify_hostname",
            iac_proto::MONITOR_TLS_NAME,
            "-CAfile",
        ])
        .arg(&ca)
        .arg(&cert)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    down(&emu, stack);
    assert!(roles_gone(&emu, stack).await);
}

async fn roles_gone(emu: &Emulator, stack: &str) -> bool {
    let iam = aws_sdk_iam::Client::new(&emu.config().await);
    let listed = iam.list_roles().send().await.expect("list roles");
    let left: Vec<_> = listed
        .roles()
        .iter()
        .filter(|r| r.path() == format!("/iac/{stack}/"))
        .map(|r| r.role_name().to_string())
        .collect();
    assert!(left.is_empty(), "roles left by down: {left:?}");
    let profiles = iam.list_instance_profiles().send().await.expect("profiles");
    profiles
        .instance_profiles()
        .iter()
        .all(|p| p.path() != format!("/iac/{stack}/"))
}
