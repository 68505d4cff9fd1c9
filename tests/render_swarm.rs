//! Checks the swarm tier's scripts with the real tools: shellcheck for the boot scripts and the
//! Run Command scripts, and runs of them against a fake root with stub commands (tests/stubs/,
//! with `swarm-docker` and `swarm-aws` standing in for docker and aws, keeping state in files).
//!
//! A missing tool fails the test loudly instead of skipping it: a skipped check looks exactly
//! like a passing one in CI output.

mod render_common;

use std::fs;
use std::path::PathBuf;

use iac::render::swarm::{
    self, drain_command, manager, param_name, service_apply_command, service_spec, status_command,
    worker, LEADER_ADDR_PARAM, MANAGER_TOKEN_PARAM, SERVICE_PARAM, SERVICE_SCRIPT,
    WORKER_TOKEN_PARAM,
};
use iac::render::{UserData, USER_DATA_LIMIT};
use iac::stack::Stack;
use render_common::{
    count_calls, last_line, position, shellcheck, stack_from, tool, Sandbox, Setup,
};

const SECRET_VALUE: &str = "s3cr3t-swarm-value";
const WORKER_TOKEN: &str = "SWMTKN-1-stubcluster-workersecret";
const MANAGER_TOKEN: &str = "SWMTKN-1-stubcluster-managersecret";
const STUB_PRIVATE_IP: &str = "10.0.1.23";
const LEADER_IP: &str = "10.0.1.10";
const SHOP_DOMAIN: &str = "shop.example.net";

// ---------------------------------------------------------------------------------------------
// Stacks

fn example() -> Stack {
    render_common::example("stacks/bookstore-swarm.yaml")
}

/// A stack unlike the example: values needing quotes, two secrets, region from IMDS, three
/// managers, an optional domain.
fn shop_yaml(domain: bool) -> String {
    let mut yaml = r#"version: 1
name: shop
tier: swarm
app:
  image: ghcr.io/example/shop:2.0
  port: 8080
  health_path: /health?deep=1&x=$y
  environment:
    GREETING: "it's \"quoted\" $HOME `id` & ${MORE} # not a comment"
    EMPTY: ""
  secrets:
    SECRET_KEY: { ssm: /shop/secret-key }
    SIGNING_SALT: { ssm: /shop/signing-salt }
instance:
  instance_profile: LabInstanceProfile
swarm:
  managers: 3
  workers: 2
  replicas: 3
  published_port: 8000
  update: { parallelism: 2, delay_s: 5 }
"#
    .to_string();
    if domain {
        yaml.push_str(&format!(
            "domain:\n  name: {SHOP_DOMAIN}\n  email: \"o'brien@example.net\"\n"
        ));
    }
    yaml
}

fn shop(domain: bool) -> Stack {
    stack_from(&shop_yaml(domain))
}

/// Every boot script of a stack, named.
fn all_scripts(stack: &Stack) -> Vec<(String, UserData)> {
    vec![
        ("manager-1".into(), manager(stack, 1).expect("manager-1")),
        ("manager-2".into(), manager(stack, 2).expect("manager-2")),
        ("worker".into(), worker(stack).expect("worker")),
    ]
}

/// The three Run Command scripts, named.
fn commands(stack: &Stack) -> Vec<(&'static str, String)> {
    vec![
        ("service", service_apply_command(stack)),
        ("drain", drain_command(stack, "10.0.1.31")),
        ("status", status_command(stack)),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. shellcheck, sizes, no secrets

#[test]
fn boot_scripts_pass_shellcheck() {
    for (variant, stack) in [
        ("example", example()),
        ("shop", shop(false)),
        ("shop-domain", shop(true)),
    ] {
        for (role, ud) in all_scripts(&stack) {
            shellcheck("bash", &format!("{variant}-{role}.sh"), &ud.script);
            for f in &ud.files {
                if f.content.starts_with("#!/bin/sh\n") {
                    shellcheck("sh", "embedded.sh", &f.content);
                }
            }
        }
    }
}

#[test]
fn run_commands_pass_shellcheck() {
    for stack in [example(), shop(true)] {
        for (name, cmd) in commands(&stack) {
            // Run Command executes them with /bin/sh: POSIX sh, and bash-clean as well.
            shellcheck("sh", &format!("{name}.sh"), &cmd);
            let body = cmd.strip_prefix("#!/bin/sh\n").expect("a sh shebang");
            shellcheck(
                "bash",
                &format!("{name}.bash"),
                &format!("#!/bin/bash\n{body}"),
            );
        }
    }
    // Addresses that are no IPv4 are quoted and matched by address only.
    shellcheck("sh", "drain6.sh", &drain_command(&example(), "fd00::1"));
}

#[test]
fn scripts_fit_in_user_data() {
    // Workers go as they are; managers carry the service script (and with a domain nginx and
    // certbot) and go gzip-compressed when that is over the limit (cloud-init inflates it).
    for (variant, stack) in [("example", example()), ("shop-domain", shop(true))] {
        for (role, ud) in all_scripts(&stack) {
            let len = ud.script.len();
            let payload = ud.payload().expect("fits in user-data");
            eprintln!(
                "{variant} {role}: {len} bytes, payload {} bytes",
                payload.len()
            );
            assert!(payload.len() <= USER_DATA_LIMIT);
            if role == "worker" {
                assert_eq!(payload, ud.script.as_bytes(), "{role}: {len} bytes");
            }
        }
    }
    for (name, cmd) in commands(&shop(true)) {
        eprintln!("{name} command: {} bytes", cmd.len());
    }
}

#[test]
fn no_secret_values_or_service_settings_in_user_data() {
    let stack = shop(true);
    let spec = service_spec(&stack).unwrap();
    for (role, ud) in all_scripts(&stack) {
        // Secrets are only ever SSM names, and those only in the spec, which the leader reads.
        assert!(!ud.script.contains("/shop/secret-key"), "{role}");
        assert!(!ud.script.contains("SWMTKN"), "{role}");
        assert!(!ud.script.contains("it's \\\"quoted"), "{role}");
        assert!(!ud.script.contains("ghcr.io/example/shop"), "{role}");
    }
    assert!(spec.contains("SECRET_SECRET_KEY=/shop/secret-key\n"));
    assert!(spec.contains("SECRET_SIGNING_SALT=/shop/signing-salt\n"));
    for (name, cmd) in commands(&stack) {
        assert!(!cmd.contains("/shop/secret-key"), "{name}");
    }
}

#[test]
fn service_spec_is_deterministic_key_value_lines() {
    let stack = shop(false);
    let spec = service_spec(&stack).unwrap();
    assert_eq!(spec, service_spec(&stack).unwrap());
    let body: Vec<&str> = spec.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            "IMAGE=ghcr.io/example/shop:2.0",
            "REPLICAS=3",
            "PORT=8080",
            "PUBLISHED=8000",
            "CONSTRAINT=node.role==worker",
            "HEALTH_PATH=/health?deep=1&x=$y",
            "UPDATE_PARALLELISM=2",
            "UPDATE_DELAY=5",
            "ENV_EMPTY=",
            "ENV_GREETING=it's \"quoted\" $HOME `id` & ${MORE} # not a comment",
            "SECRET_SECRET_KEY=/shop/secret-key",
            "SECRET_SIGNING_SALT=/shop/signing-salt",
        ]
    );
    let mut any = shop(false);
    any.spec.swarm.as_mut().unwrap().placement = iac::stack::Placement::Any;
    assert!(service_spec(&any).unwrap().contains("\nCONSTRAINT=\n"));
    let mut managers = shop(false);
    managers.spec.swarm.as_mut().unwrap().placement = iac::stack::Placement::Managers;
    assert!(service_spec(&managers)
        .unwrap()
        .contains("\nCONSTRAINT=node.role==manager\n"));
}

// ---------------------------------------------------------------------------------------------
// Stub runs

/// Host tools the scripts (and the stubs) may use; anything else is a stub or missing, so a
/// script can never touch the real system (the real docker least of all).
const HOST_TOOLS: &[&str] = &[
    "awk",
    "cat",
    "chmod",
    "cmp",
    "cp",
    "cut",
    "date",
    "find",
    "grep",
    "head",
    "install",
    "ln",
    "mkdir",
    "mv",
    "rm",
    "sed",
    "sha256sum",
    "sleep",
    "sort",
    "tail",
    "tee",
    "timeout",
    "touch",
    "tr",
    "uname",
];

/// The swarm sandbox: a fake root with an os-release of `os_id` (`ubuntu` or `amzn`), the swarm
/// stubs standing in for docker and aws (keeping state in files); the stubs named in `missing`
/// appear only once the script installs their package. `text` is the script to run.
fn sandbox_on(os_id: &str, text: &str, missing: &[&str]) -> Sandbox {
    let setup = Setup {
        os_id,
        host_tools: HOST_TOOLS,
        missing,
        stand_ins: &[("swarm-docker", "docker"), ("swarm-aws", "aws")],
        env: &[
            ("IAC_DNS_WAIT_SECONDS", "1"),
            ("IAC_DNS_POLL_SECONDS", "1"),
            ("IAC_DRAIN_POLL_SECONDS", "0"),
            ("STUB_PRIVATE_IP", STUB_PRIVATE_IP),
        ],
        ..Setup::UBUNTU
    };
    Sandbox::new(&setup, text)
}

/// A fake Ubuntu root; `text` is the script to run.
fn sandbox(text: &str) -> Sandbox {
    sandbox_on("ubuntu", text, &[])
}

// ---------------------------------------------------------------------------------------------
// 2. manager-1

#[test]
fn manager_1_initialises_once_and_publishes_tokens_and_address() {
    let stack = shop(false);
    let ud = manager(&stack, 1).unwrap();
    let sb = sandbox(&ud.script);
    sb.param(
        &param_name("shop", SERVICE_PARAM),
        &service_spec(&stack).unwrap(),
    );
    sb.param("/shop/secret-key", SECRET_VALUE);
    sb.param("/shop/signing-salt", "salty");
    let out = sb.run_ok(&[]);
    let calls = sb.calls();
    let log = sb.log();
    // No secret in an argv, the service's environment, the log or the output.
    let secret = assert_service_secrets_hidden(&sb, &out, "EMPTY=");

    assert_eq!(count_calls(&calls, "docker swarm init"), 1, "{calls}");
    assert!(calls.contains("docker swarm init --advertise-addr 10.0.1.23\n"));
    assert!(calls.contains("systemctl enable --now docker"));
    // Both tokens as SecureStrings, through a file; the address as a String.
    let worker_param = param_name("shop", WORKER_TOKEN_PARAM);
    let manager_param = param_name("shop", MANAGER_TOKEN_PARAM);
    let leader_param = param_name("shop", LEADER_ADDR_PARAM);
    let token_file = sb.full("/etc/iac/.swarm-token");
    for param in [&worker_param, &manager_param] {
        let call = format!(
            "aws ssm put-parameter --name {param} --type SecureString --value file://{} --overwrite --region us-east-1",
            token_file.display()
        );
        assert!(calls.contains(&call), "{call}\n{calls}");
    }
    assert!(calls.contains(&format!(
        "aws ssm put-parameter --name {leader_param} --type String --value 10.0.1.23 --overwrite --region us-east-1"
    )));
    assert_eq!(sb.read_param(&worker_param).unwrap(), WORKER_TOKEN);
    assert_eq!(sb.read_param(&manager_param).unwrap(), MANAGER_TOKEN);
    assert_eq!(sb.read_param(&leader_param).unwrap(), STUB_PRIVATE_IP);
    assert_eq!(
        sb.state("put-modes"),
        format!("{worker_param} 600\n{manager_param} 600\n"),
        "token files are root-only"
    );
    assert!(!token_file.exists(), "token file removed");
    // The address is published after the tokens: joiners read it first.
    let leader_at = position(
        &calls,
        &format!("aws ssm put-parameter --name {leader_param}"),
    );
    assert!(
        position(
            &calls,
            &format!("aws ssm put-parameter --name {manager_param}")
        ) < leader_at
    );
    for token in [WORKER_TOKEN, MANAGER_TOKEN, "workersecret", "managersecret"] {
        sb.assert_not_leaked(&out, token, true);
    }

    // The service, created from the spec: overlay network first, secrets through an env file.
    assert!(calls.contains("docker network create --driver overlay shop-net\n"));
    let create = calls
        .lines()
        .find(|l| l.starts_with("docker service create"))
        .expect("service created");
    assert!(position(&calls, "docker network create") < position(&calls, "docker service create"));
    for flag in [
        "--detach",
        "--name shop-app",
        "--network shop-net",
        "--replicas 3",
        "--publish published=8000,target=8080",
        "--constraint node.role==worker",
        "--update-parallelism 2",
        "--update-delay 5s",
        "--update-failure-action rollback",
        "--health-cmd if command -v curl",
        "curl -fsS -m 5 -o /dev/null 'http://127.0.0.1:8080/health?deep=1&x=$y'",
        "--env-file ",
        "--config source=shop-app-entry-",
        ",target=/run/iac/entry,mode=0555 --entrypoint /run/iac/entry ",
    ] {
        assert!(create.contains(flag), "{flag}:\n{create}");
    }
    // The tasks start through the entrypoint, which runs the image's own command.
    assert!(
        create.ends_with(" ghcr.io/example/shop:2.0 python3 /app/app.py"),
        "{create}"
    );
    assert!(
        create.contains(&format!(
            "--secret source={secret},target=iac.env,mode=0400 "
        )),
        "{create}"
    );
    assert!(calls.contains(&format!("docker secret create {secret} -\n")));
    assert_eq!(
        sb.container_env(),
        "EMPTY=\nGREETING=it's \"quoted\" $HOME `id` & ${MORE} # not a comment\n"
    );
    let leftovers: Vec<_> = fs::read_dir(sb.full("/etc/iac"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("service."))
        .collect();
    assert!(leftovers.is_empty(), "env files removed: {leftovers:?}");
    let installed = fs::read_to_string(sb.full(SERVICE_SCRIPT)).unwrap();
    assert_eq!(installed, service_apply_command(&stack));
    assert!(
        last_line(&log).contains("iac bootstrap finished: swarm manager-1, app at http://"),
        "{log}"
    );

    // A second run (or a reboot): nothing is initialised, published or created again.
    sb.clear_calls();
    let out = sb.run_ok(&[]);
    let calls = sb.calls();
    assert!(!calls.contains("docker swarm init"), "{calls}");
    assert!(!calls.contains("put-parameter"), "{calls}");
    assert!(!calls.contains("docker service create"), "{calls}");
    assert!(!calls.contains("docker service update"), "{calls}");
    let log = sb.log();
    assert!(log.contains("not initialising it again"), "{log}");
    assert!(
        log.contains("service shop-app exists: left as it is"),
        "{log}"
    );
    for token in [WORKER_TOKEN, MANAGER_TOKEN] {
        sb.assert_not_leaked(&out, token, true);
    }

    // A rotated token is published again; the other one is not.
    sb.param(&worker_param, "SWMTKN-1-old");
    sb.clear_calls();
    sb.run_ok(&[]);
    let calls = sb.calls();
    assert_eq!(count_calls(&calls, "aws ssm put-parameter"), 1, "{calls}");
    assert!(calls.contains(&format!("put-parameter --name {worker_param} ")));
    assert_eq!(sb.read_param(&worker_param).unwrap(), WORKER_TOKEN);
}

#[test]
fn manager_1_warns_about_a_foreign_leader_and_refuses_a_worker_node() {
    let stack = example();
    let ud = manager(&stack, 1).unwrap();
    let sb = sandbox(&ud.script);
    sb.param(
        &param_name("bookstore-swarm", SERVICE_PARAM),
        &service_spec(&stack).unwrap(),
    );
    sb.param("/bookstore/secret-key", SECRET_VALUE);
    sb.param(
        &param_name("bookstore-swarm", LEADER_ADDR_PARAM),
        "10.9.9.9",
    );
    sb.run_ok(&[]);
    assert!(sb
        .log()
        .contains("WARNING: SSM parameter /iac/bookstore-swarm/swarm/leader-addr names 10.9.9.9"));

    let sb = sandbox(&ud.script);
    sb.set_state("swarm-state", "active");
    sb.set_state("swarm-role", "worker");
    let out = sb.run(&[]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert!(sb.log().contains("in a swarm as a worker"), "{}", sb.log());
    assert!(!sb.calls().contains("docker swarm init"));
}

// ---------------------------------------------------------------------------------------------
// 3. workers and other managers

fn joinable(sb: &Sandbox, stack: &str) {
    sb.param(&param_name(stack, LEADER_ADDR_PARAM), LEADER_IP);
    sb.param(&param_name(stack, WORKER_TOKEN_PARAM), WORKER_TOKEN);
    sb.param(&param_name(stack, MANAGER_TOKEN_PARAM), MANAGER_TOKEN);
}

/// The docker secrets the service script created (the swarm-docker stub's state): name and
/// content of each.
fn docker_secrets(sb: &Sandbox) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fs::read_dir(sb.base.join("stub-state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_prefix("secret-").map(str::to_string))
        .map(|name| {
            let content = sb.state(&format!("secret-{name}"));
            (name, content)
        })
        .collect();
    out.sort();
    out
}

/// The service's secrets went into one docker secret (on stdin) that the tasks' entrypoint
/// reads, never into an argument, the service's environment, the log or the output; `plain`
/// is a setting the service's environment does carry.
fn assert_service_secrets_hidden(sb: &Sandbox, out: &std::process::Output, plain: &str) -> String {
    sb.assert_secrets_hidden(out, &[SECRET_VALUE, "salty"], plain);
    let secrets = docker_secrets(sb);
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let (name, content) = &secrets[0];
    assert!(name.starts_with("shop-app-env-"), "{name}");
    assert_eq!(
        content,
        &format!("SECRET_KEY={SECRET_VALUE}\nSIGNING_SALT=salty\n")
    );
    name.clone()
}

/// How many joins went to the Docker API (the curl stub's POST /swarm/join).
fn joins(calls: &str) -> usize {
    calls
        .lines()
        .filter(|l| l.starts_with("curl ") && l.ends_with(" http://localhost/swarm/join"))
        .count()
}

/// The last join went to the Docker API on the local socket, with `token` in a root-only body
/// file (removed afterwards), never in an argument.
fn assert_joined_with(sb: &Sandbox, out: &std::process::Output, token: &str) {
    sb.assert_not_leaked(out, token, true);
    assert_eq!(
        sb.state("join-body"),
        format!(
            "{{\"ListenAddr\":\"0.0.0.0:2377\",\"AdvertiseAddr\":\"{STUB_PRIVATE_IP}\",\
             \"RemoteAddrs\":[\"{LEADER_IP}:2377\"],\"JoinToken\":\"{token}\"}}"
        )
    );
    assert_eq!(sb.state("join-body-mode"), "600\n");
    assert!(!sb.full("/etc/iac/.join-body").exists());
    let calls = sb.calls();
    assert!(
        calls.contains(" --unix-socket /var/run/docker.sock -X POST "),
        "{calls}"
    );
    assert!(!calls.contains("docker swarm join"), "{calls}");
}

#[test]
fn worker_waits_for_the_leader_then_joins_once() {
    let ud = worker(&shop(false)).unwrap();
    for missing in [LEADER_ADDR_PARAM, WORKER_TOKEN_PARAM] {
        let sb = sandbox(&ud.script);
        joinable(&sb, "shop");
        let name = param_name("shop", missing);
        let out = sb.run_ok(&[("STUB_SSM_MISSING", &format!("{name}:3"))]);
        let calls = sb.calls();
        let log = sb.log();
        sb.assert_not_leaked(&out, WORKER_TOKEN, true);
        assert_eq!(
            count_calls(&calls, &format!("aws ssm get-parameter --name {name} ")),
            4,
            "{calls}"
        );
        assert!(
            log.contains(&format!(
                "waiting for SSM parameter {name}: An error occurred (ParameterNotFound)"
            )),
            "{log}"
        );
        assert_eq!(joins(&calls), 1, "{calls}");
        assert_joined_with(&sb, &out, WORKER_TOKEN);
        assert!(
            log.contains("joined the swarm at 10.0.1.10:2377 as a worker"),
            "{log}"
        );
        assert!(last_line(&log).ends_with("iac bootstrap finished: swarm worker at 10.0.1.23"));
        assert!(!calls.contains("put-parameter"));

        sb.clear_calls();
        sb.run_ok(&[]);
        let calls = sb.calls();
        assert_eq!(joins(&calls), 0, "{calls}");
        assert!(sb.log().contains("in the swarm already: not joining again"));
    }
}

#[test]
fn worker_on_amazon_linux_installs_docker_and_the_aws_cli() {
    let ud = worker(&shop(false)).unwrap();
    let sb = sandbox_on("amzn", &ud.script, &["docker", "aws"]);
    joinable(&sb, "shop");
    sb.run_ok(&[]);
    let calls = sb.calls();
    assert!(calls.contains("dnf -q -y install docker\n"), "{calls}");
    assert!(calls.contains("dnf -q -y install awscli-2\n"), "{calls}");
    assert!(!calls.contains("apt-get"), "{calls}");
    assert_eq!(joins(&calls), 1, "{calls}");
    // No region in the stack: from IMDS.
    assert!(calls.contains("/latest/meta-data/placement/region"));
}

#[test]
fn worker_retries_a_failed_join_then_succeeds() {
    let ud = worker(&shop(false)).unwrap();
    let sb = sandbox(&ud.script);
    joinable(&sb, "shop");
    let out = sb.run_ok(&[("STUB_JOIN_FAIL", "2")]);
    let calls = sb.calls();
    let log = sb.log();
    assert_eq!(joins(&calls), 3, "{calls}");
    assert!(
        log.contains("joining the swarm at 10.0.1.10:2377 failed (attempt 1, state inactive)"),
        "{log}"
    );
    // docker's error quotes the token: it is masked before it is logged.
    assert!(log.contains("with token <token>"), "{log}");
    assert!(log.contains("joined the swarm at 10.0.1.10:2377 as a worker"));
    assert_joined_with(&sb, &out, WORKER_TOKEN);
}

#[test]
fn worker_gives_up_after_the_bound_with_a_failed_line() {
    let ud = worker(&example()).unwrap();
    let sb = sandbox(&ud.script);
    joinable(&sb, "bookstore-swarm");
    let out = sb.run(&[("STUB_JOIN_FAIL", "always"), ("IAC_JOIN_ATTEMPTS", "3")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let calls = sb.calls();
    let log = sb.log();
    assert_eq!(joins(&calls), 3, "{calls}");
    assert!(
        log.contains("FAILED to join the swarm at 10.0.1.10:2377 as a worker after 3 attempts"),
        "{log}"
    );
    assert!(
        log.contains("iac bootstrap FAILED in step 3/3 swarm"),
        "{log}"
    );
    sb.assert_not_leaked(&out, WORKER_TOKEN, true);
}

#[test]
fn worker_gives_up_when_the_tokens_never_come() {
    let ud = worker(&example()).unwrap();
    let sb = sandbox(&ud.script);
    let out = sb.run(&[("IAC_PARAM_WAIT_SECONDS", "1"), ("IAC_RETRY_SLEEP", "1")]);
    assert!(!out.status.success());
    let log = sb.log();
    assert!(
        log.contains(
            "SSM parameter /iac/bookstore-swarm/swarm/leader-addr still unreadable after 1s"
        ),
        "{log}"
    );
    assert!(log.contains("FAILED in step 3/3 swarm"), "{log}");
    assert_eq!(joins(&sb.calls()), 0);
}

#[test]
fn other_managers_join_with_the_manager_token() {
    let stack = shop(true);
    let ud = manager(&stack, 2).unwrap();
    let sb = sandbox(&ud.script);
    joinable(&sb, "shop");
    let out = sb.run_ok(&[]);
    let calls = sb.calls();
    let log = sb.log();
    assert_joined_with(&sb, &out, MANAGER_TOKEN);
    assert!(!calls.contains("docker swarm init"));
    assert!(!calls.contains("put-parameter"));
    assert!(!calls.contains("docker service"));
    assert!(
        log.contains("joined the swarm at 10.0.1.10:2377 as a manager"),
        "{log}"
    );
    // nginx in front of the published port; this manager does not hold the name's address.
    let site = fs::read_to_string(sb.full("/etc/nginx/conf.d/iac-shop.conf")).unwrap();
    assert!(site.contains("proxy_pass http://127.0.0.1:8000;"), "{site}");
    assert!(log.contains("HTTPS not enabled"), "{log}");

    sb.clear_calls();
    sb.run_ok(&[]);
    assert_eq!(joins(&sb.calls()), 0);
}

#[test]
fn manager_1_with_a_domain_gets_a_certificate() {
    let stack = shop(true);
    let ud = manager(&stack, 1).unwrap();
    let sb = sandbox(&ud.script);
    sb.param(
        &param_name("shop", SERVICE_PARAM),
        &service_spec(&stack).unwrap(),
    );
    sb.param("/shop/secret-key", SECRET_VALUE);
    sb.param("/shop/signing-salt", "salty");
    sb.run_ok(&[("STUB_DNS_IP", "198.51.100.7")]);
    let calls = sb.calls();
    let log = sb.log();
    assert!(calls.contains("certbot certonly --webroot"), "{calls}");
    assert!(
        log.contains(&format!("HTTPS enabled for {SHOP_DOMAIN}")),
        "{log}"
    );
    let site = fs::read_to_string(sb.full("/etc/nginx/conf.d/iac-shop.conf")).unwrap();
    assert!(site.contains("listen 443 ssl"), "{site}");
    assert!(
        last_line(&log).ends_with(&format!("app at https://{SHOP_DOMAIN}")),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The service apply command

fn service_sandbox(stack: &Stack) -> Sandbox {
    let sb = sandbox(&service_apply_command(stack));
    sb.param(
        &param_name(stack.name(), SERVICE_PARAM),
        &service_spec(stack).unwrap(),
    );
    sb.param("/shop/secret-key", SECRET_VALUE);
    sb.param("/shop/signing-salt", "salty");
    sb.set_state("swarm-state", "active");
    sb.set_state("swarm-role", "manager");
    sb
}

fn shells() -> [PathBuf; 2] {
    // Run Command uses /bin/sh, which is dash on Ubuntu; bash must work as well.
    [tool("dash", "dash"), tool("bash", "bash")]
}

#[test]
fn apply_creates_the_service_when_absent() {
    let stack = shop(false);
    for shell in shells() {
        let sb = service_sandbox(&stack);
        let out = sb.run_with(&shell, &[], &[]);
        assert!(out.status.success(), "{}", sb.explain(&out));
        let calls = sb.calls();
        assert!(calls.contains(
            "aws ssm get-parameter --name /iac/shop/service --query Parameter.Value --output text --region us-east-1"
        ), "{calls}");
        assert!(
            calls.contains("/latest/meta-data/placement/region"),
            "region from IMDS"
        );
        let create = calls
            .lines()
            .find(|l| l.starts_with("docker service create"))
            .expect("created");
        for flag in [
            "--replicas 3",
            "--constraint node.role==worker",
            "--publish published=8000,target=8080",
            "--update-parallelism 2",
            "--update-delay 5s",
            "--update-failure-action rollback",
        ] {
            assert!(create.contains(flag), "{flag}: {create}");
        }
        assert!(!calls.contains("docker service update"));
        assert_service_secrets_hidden(&sb, &out, "EMPTY=");
    }
}

#[test]
fn apply_updates_an_existing_service_in_place() {
    let stack = shop(false);
    for shell in shells() {
        let sb = service_sandbox(&stack);
        sb.set_state("service", "");
        sb.set_state("network-shop-net", "");
        sb.set_state(
            "service-env",
            &format!("GREETING=old\nOLD_VAR=x\nSECRET_KEY={SECRET_VALUE}-old\n"),
        );
        sb.set_state("service-constraints", "node.role==manager\n");
        sb.set_state("service-ports", "8000:8080 ");
        sb.set_state("service-secrets", "shop-app-env-0ld\n");
        sb.set_state("secret-shop-app-env-0ld", "SECRET_KEY=old\n");
        let out = sb.run_with(&shell, &[], &[]);
        assert!(out.status.success(), "{}", sb.explain(&out));
        let calls = sb.calls();
        assert!(!calls.contains("docker service create"), "{calls}");
        assert!(!calls.contains("docker network create"), "{calls}");
        let update = calls
            .lines()
            .find(|l| l.starts_with("docker service update"))
            .expect("updated");
        assert!(
            update.starts_with(
                "docker service update --detach=false --quiet --image ghcr.io/example/shop:2.0 --replicas 3 "
            ),
            "{update}"
        );
        for flag in [
            "--update-parallelism 2",
            "--update-delay 5s",
            "--update-failure-action rollback",
            "--constraint-rm node.role==manager",
            "--constraint-add node.role==worker",
            "--env-rm OLD_VAR",
            // A secret an older version put in the environment leaves it.
            "--env-rm SECRET_KEY",
            "--env-add EMPTY=",
            "--env-add GREETING=it's \"quoted\" $HOME `id` & ${MORE} # not a comment",
            "--secret-rm shop-app-env-0ld ",
            "--config-add source=shop-app-entry-",
            "--entrypoint /run/iac/entry --args 'python3' '/app/app.py' ",
        ] {
            assert!(update.contains(flag), "{flag}: {update}");
        }
        assert!(!update.contains("--publish"), "ports unchanged: {update}");
        assert!(!update.contains("--env-add SECRET_KEY"), "{update}");
        assert!(update.ends_with(" shop-app"), "{update}");
        // The new secret version replaces the old one, which is then removed.
        let secret = assert_service_secrets_hidden(&sb, &out, "EMPTY=");
        assert!(
            update.contains(&format!(
                "--secret-add source={secret},target=iac.env,mode=0400 "
            )),
            "{update}"
        );
        assert!(
            calls.contains("docker secret rm shop-app-env-0ld\n"),
            "{calls}"
        );
        let leftovers: Vec<_> = fs::read_dir(sb.full("/etc/iac"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn apply_changes_ports_and_reports_a_rollback() {
    let stack = example();
    let sb = sandbox(&service_apply_command(&stack));
    sb.param(
        &param_name("bookstore-swarm", SERVICE_PARAM),
        &service_spec(&stack).unwrap(),
    );
    sb.param("/bookstore/secret-key", SECRET_VALUE);
    sb.set_state("swarm-state", "active");
    sb.set_state("swarm-role", "manager");
    sb.set_state("service", "");
    sb.set_state("network-bookstore-swarm-net", "");
    sb.set_state("service-constraints", "node.role==worker\n");
    sb.set_state("service-ports", "8080:5000 ");
    let out = sb.run_with(&tool("dash", "dash"), &[], &[("STUB_UPDATE_FAIL", "1")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let calls = sb.calls();
    let update = calls
        .lines()
        .find(|l| l.starts_with("docker service update"))
        .expect("updated");
    assert!(
        update.contains("--publish-rm 5000 --publish-add published=80,target=5000"),
        "{update}"
    );
    assert!(
        !update.contains("--constraint-"),
        "constraint unchanged: {update}"
    );
    assert!(update.contains("--replicas 6"), "{update}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAILED: the update of bookstore-swarm-app failed"),
        "{stderr}"
    );
    assert!(stderr.contains("rolled back"), "{stderr}");
}

#[test]
fn apply_create_only_leaves_an_existing_service_alone() {
    let stack = shop(false);
    let sb = service_sandbox(&stack);
    sb.set_state("service", "");
    sb.set_state("network-shop-net", "");
    let out = sb.run_with(&tool("dash", "dash"), &["create-only"], &[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    let calls = sb.calls();
    assert!(!calls.contains("docker service update"), "{calls}");
    assert!(!calls.contains("docker service create"), "{calls}");
    assert!(
        !calls.contains("/shop/secret-key"),
        "no secret read: {calls}"
    );
}

#[test]
fn apply_refuses_a_tampered_spec_and_a_worker_node() {
    let stack = shop(false);
    let sb = service_sandbox(&stack);
    let spec = service_spec(&stack)
        .unwrap()
        .replace("REPLICAS=3", "REPLICAS=3; rm -rf /");
    sb.param("/iac/shop/service", &spec);
    let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REPLICAS is not a number"));
    assert!(!sb.calls().contains("docker service"));

    let sb = service_sandbox(&stack);
    sb.set_state("swarm-role", "worker");
    let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a swarm manager"));
}

// ---------------------------------------------------------------------------------------------
// 5. Drain and status

const NODES: &str = "mgr1\t10.0.1.10\tip-10-0-1-10\t10.0.1.10:2377\tmanager\tready\n\
                     wrk1\t10.0.1.31\tip-10-0-1-31\t\tworker\tready\n\
                     wrk2\t10.0.1.32\tip-10-0-1-32\t\tworker\tready\n\
                     mgr2\t0.0.0.0\tip-10-0-1-11.ec2.internal\t10.0.1.11:2377\tmanager\tready\n";

fn drain_sandbox(ip: &str) -> Sandbox {
    let sb = sandbox(&drain_command(&example(), ip));
    sb.set_state("swarm-state", "active");
    sb.set_state("swarm-role", "manager");
    sb.set_state("nodes", NODES);
    sb.set_state("tasks-wrk1", "2");
    sb.set_state("tasks-mgr2", "1");
    sb
}

#[test]
fn drain_drains_waits_then_removes() {
    for shell in shells() {
        let sb = drain_sandbox("10.0.1.31");
        let out = sb.run_with(&shell, &[], &[]);
        assert!(out.status.success(), "{}", sb.explain(&out));
        let calls = sb.calls();
        let drain = position(&calls, "docker node update --availability drain wrk1");
        let polls: Vec<usize> = calls
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("docker node ps wrk1"))
            .map(|(i, _)| i)
            .collect();
        let rm = position(&calls, "docker node rm --force wrk1");
        assert_eq!(
            polls.len(),
            3,
            "two tasks end, one poll each, then none:\n{calls}"
        );
        assert!(drain < polls[0] && polls[2] < rm, "{calls}");
        assert!(!calls.contains("demote"), "{calls}");
        assert_eq!(count_calls(&calls, "docker node update"), 1, "{calls}");
        assert!(!sb.state("nodes").contains("wrk1"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("removed node wrk1 (10.0.1.31) from the swarm"),
            "{stderr}"
        );

        // Again: the node is gone, nothing to do.
        sb.clear_calls();
        let out = sb.run_with(&shell, &[], &[]);
        assert!(out.status.success(), "{}", sb.explain(&out));
        assert!(!sb.calls().contains("docker node update"), "{}", sb.calls());
        assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to drain"));
    }
}

#[test]
fn drain_finds_a_manager_by_hostname_and_demotes_it() {
    let sb = drain_sandbox("10.0.1.11");
    let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    let calls = sb.calls();
    let demote = position(&calls, "docker node demote mgr2");
    assert!(position(&calls, "docker node update --availability drain mgr2") < demote);
    assert!(demote < position(&calls, "docker node rm --force mgr2"));
}

#[test]
fn drain_gives_up_waiting_after_the_bound() {
    let sb = drain_sandbox("10.0.1.31");
    sb.set_state("tasks-wrk1", "1000");
    let out = sb.run_with(
        &tool("dash", "dash"),
        &[],
        &[
            ("IAC_DRAIN_WAIT_SECONDS", "1"),
            ("IAC_DRAIN_POLL_SECONDS", "1"),
        ],
    );
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("after 1s; removing it anyway"));
    assert!(sb.calls().contains("docker node rm --force wrk1"));
}

#[test]
fn drain_refuses_the_leader_itself() {
    let sb = drain_sandbox("10.0.1.10");
    sb.set_state("nodes", &NODES.replace("mgr1\t", "self-node\t"));
    let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
    assert!(!out.status.success());
    assert!(!sb.calls().contains("docker node rm"));
}

#[test]
fn status_prints_tab_separated_records() {
    let sb = sandbox(&status_command(&example()));
    sb.set_state("swarm-state", "active");
    sb.set_state("swarm-role", "manager");
    sb.set_state("nodes", NODES);
    sb.set_state("service", "");
    let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0], ["swarm", "active", "true", "self-node"]);
    let nodes: Vec<&Vec<&str>> = lines.iter().filter(|l| l[0] == "node").collect();
    assert_eq!(nodes.len(), 4, "{stdout}");
    assert_eq!(
        nodes[1],
        &[
            "node",
            "wrk1",
            "ip-10-0-1-31",
            "10.0.1.31",
            "worker",
            "ready",
            "active",
            "",
            "27.0.0"
        ]
    );
    assert!(lines.iter().any(|l| l[0] == "service"), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l[0] == "update" && l[1] == "bookstore-swarm-app"),
        "{stdout}"
    );
    assert!(lines.iter().any(|l| l[0] == "task"), "{stdout}");

    // A node that is no manager says so and fails.
    sb.set_state("swarm-role", "worker");
    let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("swarm\tactive\tfalse\t"));
}

#[test]
fn exported_names_match_the_module() {
    // The tier and the tests agree on the parameter layout.
    assert_eq!(
        param_name("shop", swarm::SERVICE_PARAM),
        "/iac/shop/service"
    );
    assert_eq!(
        param_name("shop", LEADER_ADDR_PARAM),
        "/iac/shop/swarm/leader-addr"
    );
}
