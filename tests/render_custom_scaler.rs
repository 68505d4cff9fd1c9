//! Checks the custom-scaler artifacts: shellcheck for the agent and monitor boot scripts and the
//! monitor's refresh command, and runs of the scripts against a fake root with stub commands on
//! PATH (tests/stubs, with `scaler-curl` as a `curl` that serves a fake binary), which prove
//! that a binary with the wrong SHA-256 is never installed nor started, that the right one is
//! installed as a `Restart=always` unit with a root-only environment file, and that the token
//! read from SSM lands in that file and nowhere else.
//!
//! A missing tool fails the test loudly instead of skipping it.

mod render_common;

use std::fs;

use iac::render::custom_scaler::{
    agent, monitor, monitor_refresh_command, AGENT_ADDRESS_ENV, AGENT_ADDRESS_SCRIPT, AGENT_BIN,
    AGENT_CA, AGENT_ENV, AGENT_UNIT, IAC_BIN, MONITOR_ENV, MONITOR_STACK_FILE, MONITOR_TLS_CERT,
    MONITOR_TLS_KEY, MONITOR_UNIT, REFRESH_SCRIPT,
};
use iac::render::USER_DATA_LIMIT;
use iac::stack::Stack;
use render_common::{
    file, has_call, last_line, shellcheck, stack_from, tool, Sandbox, Setup, HOST_TOOLS,
};
use sha2::{Digest, Sha256};

/// What the stub `curl` serves for any https:// URL.
const AGENT_BYTES: &str = "#!/bin/sh\necho fake iac-agent\n";
const IAC_BYTES: &str = "#!/bin/sh\necho fake iac\n";
/// A token as iac generates them (URL-safe base64), and a monitor address.
const TOKEN: &str = "tOk3n-Secret_value-0123456789abcdef";
/// The shop stack's plain setting, as the app's env file carries it.
const GREETING: &str = "GREETING=it's \"quoted\" $HOME `id` # not a comment";
const MONITOR_ADDRESS: &str = "10.0.3.9:7700";
const STORED_STACK: &str = "# stored\nname: shop\n";

/// The TLS bundle `iac up` stores for the stack (key, certificate, CA), as iac generates it.
fn tls() -> iac_scaler::tls::StackTls {
    iac_scaler::tls::generate().expect("certificates")
}

fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn example() -> Stack {
    render_common::example("stacks/custom-scaler.yaml")
}

/// A stack unlike the example: values needing quotes, two secrets, region from IMDS; the
/// binaries' digests are those of what the stub `curl` serves.
fn shop() -> Stack {
    stack_from(&format!(
        r#"version: 1
name: shop
tier: custom-scaler
app:
  image: ghcr.io/example/shop:2.0
  port: 8080
  health_path: /health?deep=1&x=$y
  environment:
    GREETING: "it's \"quoted\" $HOME `id` # not a comment"
  secrets:
    SECRET_KEY: {{ ssm: /shop/secret-key }}
    DATABASE_URL: {{ ssm: /shop/database-url }}
instance:
  instance_profile: LabInstanceProfile
scaler:
  monitor:
    port: 7700
    binary: {{ url: "https://downloads.example.org/iac?v=1&arch=x86_64", sha256: {iac} }}
  agent:
    binary: {{ url: https://downloads.example.org/iac-agent, sha256: {agent} }}
    admin_port: 7799
"#,
        iac = sha256_hex(IAC_BYTES),
        agent = sha256_hex(AGENT_BYTES),
    ))
}

// ---------------------------------------------------------------------------------------------
// 1. Static checks

#[test]
fn scripts_pass_shellcheck() {
    for (name, stack) in [("example", example()), ("shop", shop())] {
        for (role, ud) in [
            ("agent", agent(&stack).expect("agent renders")),
            ("monitor", monitor(&stack).expect("monitor renders")),
        ] {
            shellcheck("bash", &format!("{name}-{role}.sh"), &ud.script);
            for f in &ud.files {
                if f.content.starts_with("#!/bin/sh\n") {
                    shellcheck("sh", "embedded.sh", &f.content);
                }
            }
        }
        // Run Command executes the refresh with /bin/sh: POSIX sh, and bash-clean as well.
        let cmd = monitor_refresh_command(&stack).expect("refresh renders");
        shellcheck("sh", "refresh.sh", &cmd);
        shellcheck(
            "bash",
            "refresh.sh",
            &cmd.replacen("#!/bin/sh", "#!/bin/bash", 1),
        );
    }
}

#[test]
fn scripts_fit_in_user_data_and_hold_no_token() {
    for stack in [example(), shop()] {
        for ud in [agent(&stack).unwrap(), monitor(&stack).unwrap()] {
            assert!(
                ud.script.len() < USER_DATA_LIMIT,
                "{} bytes",
                ud.script.len()
            );
            assert_eq!(ud.payload().unwrap(), ud.script.as_bytes());
            // Only the parameter's name: the value is read at boot.
            assert!(ud
                .script
                .contains(&format!("/iac/{}/scaler-token", stack.name())));
            for text in std::iter::once(&ud.script).chain(ud.files.iter().map(|f| &f.content)) {
                assert!(!text.contains(TOKEN));
                assert!(!text.contains("IAC_AGENT_TOKEN=$") && !text.contains("--token"));
            }
        }
    }
}

#[test]
fn units_restart_always_and_read_the_token_from_a_file() {
    let stack = shop();
    let a = agent(&stack).unwrap();
    let unit = file(&a, AGENT_UNIT);
    assert!(unit.contains("\nRestart=always\n"), "{unit}");
    assert!(
        unit.contains(&format!("\nEnvironmentFile={AGENT_ENV}\n")),
        "{unit}"
    );
    // The stack's own monitor: TLS, pinned to the stack's CA, handed over as a credential.
    assert!(
        unit.contains(&format!("\nLoadCredential=scaler-ca.pem:{AGENT_CA}\n")),
        "{unit}"
    );
    assert!(
        unit.contains(&format!(
            "\nExecStart={AGENT_BIN} --monitor https://${{IAC_MONITOR_ADDRESS}} --ca-file %d/scaler-ca.pem --admin 127.0.0.1:7799 --give-up-after 60\n"
        )),
        "{unit}"
    );
    // Every start reads the monitor's address anew, as root, keeping the last one on failure:
    // after the agent gave up on a monitor VM that was replaced, it finds the new one.
    assert!(
        unit.contains(&format!(
            "\nEnvironmentFile={AGENT_ADDRESS_ENV}\nExecStartPre=-+{AGENT_ADDRESS_SCRIPT}\n"
        )),
        "{unit}"
    );
    assert!(file(&a, AGENT_ADDRESS_SCRIPT).starts_with("#!/bin/sh\n"));
    assert!(!unit.contains("--allow-plaintext"), "{unit}");
    let m = monitor(&stack).unwrap();
    let unit = file(&m, MONITOR_UNIT);
    assert!(unit.contains("\nRestart=always\n"), "{unit}");
    assert!(
        unit.contains(&format!("\nEnvironmentFile={MONITOR_ENV}\n")),
        "{unit}"
    );
    // The root-only stack file reaches the unprivileged monitor as a systemd credential.
    assert!(unit.contains(&format!(
        "\nLoadCredential=stack.yaml:{MONITOR_STACK_FILE}\n"
    )));
    for (name, path) in [("tls.crt", MONITOR_TLS_CERT), ("tls.key", MONITOR_TLS_KEY)] {
        assert!(
            unit.contains(&format!("\nLoadCredential={name}:{path}\n")),
            "{unit}"
        );
    }
    assert!(unit.contains(&format!(
        "\nExecStart={IAC_BIN} scale --custom-monitor %d/stack.yaml --tls-cert %d/tls.crt --tls-key %d/tls.key\n"
    )));
    // Never root, and a read-only view of the system.
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.contains(&format!("\n{line}\n")), "{line}: {unit}");
    }
    assert!(!unit.contains("\nUser=root"), "{unit}");
    assert_eq!(
        file(&m, REFRESH_SCRIPT),
        monitor_refresh_command(&stack).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Stub runs

/// The custom-scaler sandbox: a fake Ubuntu root, tests/stubs with `scaler-curl` as `curl`;
/// `text` is the script to run.
fn sandbox(text: &str) -> Sandbox {
    let setup = Setup {
        host_tools: HOST_TOOLS,
        stand_ins: &[("scaler-curl", "curl")],
        env: &[
            ("IAC_HEALTH_WAIT_SECONDS", "1"),
            ("IAC_HEALTH_POLL_SECONDS", "1"),
            ("STUB_DOWNLOAD", ""),
        ],
        ..Setup::UBUNTU
    };
    Sandbox::new(&setup, text)
}

/// Whether systemctl was asked anything about `unit`.
fn unit_touched(calls: &str, unit: &str) -> bool {
    calls
        .lines()
        .any(|l| l.starts_with("systemctl ") && l.contains(unit))
}

fn agent_sandbox() -> Sandbox {
    let sb = sandbox(&agent(&shop()).unwrap().script);
    sb.param("/iac/shop/scaler-token", TOKEN);
    sb.param("/iac/shop/monitor-address", MONITOR_ADDRESS);
    sb.param("/iac/shop/scaler-ca", tls().ca_pem.trim_end());
    sb
}

#[test]
fn agent_with_the_wrong_checksum_is_refused_and_never_started() {
    let sb = agent_sandbox();
    let out = sb.run(&[("STUB_DOWNLOAD", "#!/bin/sh\necho something else\n")]);
    assert!(
        !out.status.success(),
        "a wrong checksum must fail the boot: {}",
        sb.explain(&out)
    );
    let log = sb.log();
    assert!(
        log.contains("REFUSED https://downloads.example.org/iac-agent: its SHA-256 is"),
        "{log}"
    );
    assert!(
        log.contains("iac bootstrap FAILED in step 2/7 the agent binary"),
        "{log}"
    );
    assert!(!sb.full(AGENT_BIN).exists(), "the binary was installed");
    let leftovers: Vec<_> = fs::read_dir(sb.full("/usr/local/bin"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "download left behind: {leftovers:?}");
    let calls = sb.calls();
    assert!(
        !unit_touched(&calls, "iac-agent"),
        "the agent unit was touched:\n{calls}"
    );
    assert!(!sb.full(AGENT_UNIT).exists());
    assert!(!sb.full(AGENT_ENV).exists());
    assert!(
        !calls.contains("scaler-token"),
        "the token was read although nothing will use it:\n{calls}"
    );
}

#[test]
fn agent_with_the_right_checksum_is_installed_as_a_unit() {
    let sb = agent_sandbox();
    // The monitor's address is written by the monitor VM once it boots: the script waits.
    let out = sb.run(&[
        ("STUB_DOWNLOAD", AGENT_BYTES),
        ("STUB_SSM_MISSING", "/iac/shop/monitor-address:2"),
    ]);
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        sb.explain(&out)
    );
    assert_eq!(sb.read(AGENT_BIN), AGENT_BYTES);
    assert_eq!(sb.mode(AGENT_BIN), 0o755);
    let unit = sb.read(AGENT_UNIT);
    assert!(unit.contains("\nRestart=always\n"), "{unit}");
    assert!(
        unit.contains("--admin 127.0.0.1:7799 --give-up-after 60\n"),
        "{unit}"
    );
    assert_eq!(sb.read(AGENT_ENV), format!("IAC_AGENT_TOKEN={TOKEN}\n"));
    assert_eq!(sb.mode(AGENT_ENV), 0o600);
    assert_eq!(
        sb.read(AGENT_ADDRESS_ENV),
        format!("IAC_MONITOR_ADDRESS={MONITOR_ADDRESS}\n")
    );
    assert_eq!(sb.mode(AGENT_ADDRESS_SCRIPT), 0o755);
    assert_eq!(sb.mode("/etc/iac"), 0o700);
    // The CA the monitor published, for the unit to pin.
    assert!(
        sb.read(AGENT_CA)
            .starts_with("-----BEGIN CERTIFICATE-----\n"),
        "{}",
        sb.read(AGENT_CA)
    );
    let calls = sb.calls();
    assert!(
        calls.contains("curl -fsSL --proto =https --tlsv1.2 -m 300 -o "),
        "{calls}"
    );
    assert!(has_call(&calls, "systemctl daemon-reload"), "{calls}");
    assert!(has_call(&calls, "systemctl enable iac-agent"), "{calls}");
    assert!(has_call(&calls, "systemctl restart iac-agent"), "{calls}");
    assert!(
        sb.log()
            .contains("iac-agent-address: waiting for /iac/shop/monitor-address"),
        "{}",
        sb.log()
    );
    // Ready once the agent's admin endpoint says it registered, asked with the token in a
    // header file (never in argv: assert_secrets_hidden below checks every call).
    assert!(
        sb.log().contains(&format!(
            "agent registered with the monitor at {MONITOR_ADDRESS}"
        )),
        "{}",
        sb.log()
    );
    assert_eq!(
        sb.state("admin-header"),
        format!("Authorization: Bearer {TOKEN}\n")
    );
    // The app runs with its settings and secrets, as on the lb-vms web VMs.
    sb.assert_secrets_hidden(&out, &[TOKEN, "s3cr3t-value"], GREETING);
    // Plain settings in the env file; the secret in the root-only file the container's
    // entrypoint reads.
    let app_env = sb.read("/etc/iac/app.env");
    assert_eq!(app_env, format!("{GREETING}\n"));
    let secrets = sb.read("/etc/iac/app.secrets");
    assert_eq!(
        secrets,
        "DATABASE_URL=s3cr3t-value\nSECRET_KEY=s3cr3t-value\n"
    );
    assert_eq!(sb.mode("/etc/iac/app.env"), 0o600);
    assert_eq!(sb.mode("/etc/iac/app.secrets"), 0o600);
    assert!(calls.contains("docker run -d --restart unless-stopped --name app -p 8080:8080"));
    assert!(calls.contains(" --entrypoint /run/iac/entry "), "{calls}");
    assert!(!app_env.contains(TOKEN), "the app sees the token");
    assert!(!secrets.contains(TOKEN), "the app sees the token");
    assert!(sb.log().ends_with(&format!(
        "iac bootstrap finished: app on port 8080, agent registered with the monitor at {MONITOR_ADDRESS}\n"
    )));

    // A second run (a reboot, or by hand) downloads nothing and restarts nothing.
    sb.clear_calls();
    let out = sb.run(&[("STUB_DOWNLOAD", AGENT_BYTES)]);
    assert!(out.status.success(), "re-run failed: {}", sb.explain(&out));
    let calls = sb.calls();
    assert!(
        !calls.contains("--proto =https"),
        "downloaded again:\n{calls}"
    );
    assert!(has_call(&calls, "systemctl start iac-agent"), "{calls}");
    assert!(!calls.contains("restart iac-agent"), "{calls}");

    // A new token (the parameter rewritten) restarts the agent with it.
    sb.param("/iac/shop/scaler-token", "rotated-token");
    sb.clear_calls();
    let out = sb.run(&[("STUB_DOWNLOAD", AGENT_BYTES)]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert!(has_call(&sb.calls(), "systemctl restart iac-agent"));
    assert!(sb
        .read(AGENT_ENV)
        .starts_with("IAC_AGENT_TOKEN=rotated-token\n"));
}

#[test]
fn an_agent_that_never_registers_fails_its_boot_in_the_registration_step() {
    let sb = agent_sandbox();
    let out = sb.run(&[
        ("STUB_DOWNLOAD", AGENT_BYTES),
        ("STUB_UNREGISTERED", "1"),
        ("IAC_REGISTER_WAIT_SECONDS", "1"),
    ]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let log = sb.log();
    assert!(
        log.contains("the agent has not registered with the monitor at")
            && last_line(&log).contains("FAILED in step 7/7 registration"),
        "{log}"
    );
    // The agent runs (it keeps trying); only the boot says it is not a member yet.
    assert!(has_call(&sb.calls(), "systemctl restart iac-agent"));
}

#[test]
fn agent_refuses_a_monitor_address_that_is_not_host_port() {
    let sb = agent_sandbox();
    sb.param("/iac/shop/monitor-address", "10.0.0.1:7700; reboot");
    let out = sb.run(&[("STUB_DOWNLOAD", AGENT_BYTES)]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert!(sb.log().contains("does not hold host:port"), "{}", sb.log());
    assert!(!sb.full(AGENT_ENV).exists());
    assert!(!sb.full(AGENT_ADDRESS_ENV).exists());
    assert!(!unit_touched(&sb.calls(), "iac-agent"));
}

/// The script the agent's unit runs before every start (`ExecStartPre`, with /bin/sh): one read
/// of the address, no wait; a new address replaces the old one, a missing or malformed one
/// fails and keeps the last known address.
#[test]
fn address_script_rereads_the_monitor_address_before_every_start() {
    let a = agent(&shop()).unwrap();
    let sb = sandbox(file(&a, AGENT_ADDRESS_SCRIPT));
    sb.param("/iac/shop/monitor-address", MONITOR_ADDRESS);
    let dash = tool("dash", "dash");
    // As systemd runs it: no wait configured.
    let env = [("IAC_REGION", "us-east-1"), ("IAC_PARAM_WAIT_SECONDS", "")];
    let out = sb.run_with(&dash, &[], &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert_eq!(
        sb.read(AGENT_ADDRESS_ENV),
        format!("IAC_MONITOR_ADDRESS={MONITOR_ADDRESS}\n")
    );
    assert_eq!(sb.mode(AGENT_ADDRESS_ENV), 0o600);

    // The monitor VM was replaced and published its own address.
    sb.param("/iac/shop/monitor-address", "10.0.7.42:7700");
    let out = sb.run_with(&dash, &[], &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert_eq!(
        sb.read(AGENT_ADDRESS_ENV),
        "IAC_MONITOR_ADDRESS=10.0.7.42:7700\n"
    );

    // SSM cannot be read: one attempt (a start must not hang), and the last address stays.
    let failing = [env[0], env[1], ("STUB_SSM_FAIL", "1")];
    let out = sb.run_with(&dash, &[], &failing);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("/iac/shop/monitor-address")
            .count(),
        1,
        "{}",
        sb.explain(&out)
    );
    assert_eq!(
        sb.read(AGENT_ADDRESS_ENV),
        "IAC_MONITOR_ADDRESS=10.0.7.42:7700\n"
    );
    sb.param("/iac/shop/monitor-address", "10.0.0.1:7700; reboot");
    let out = sb.run_with(&dash, &[], &env);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert_eq!(
        sb.read(AGENT_ADDRESS_ENV),
        "IAC_MONITOR_ADDRESS=10.0.7.42:7700\n"
    );
}

fn monitor_sandbox() -> Sandbox {
    let sb = sandbox(&monitor(&shop()).unwrap().script);
    sb.param("/iac/shop/scaler-token", TOKEN);
    sb.param("/iac/shop/stack-file", STORED_STACK);
    sb
}

/// The monitor's TLS files come from the bundle, root-only; the CA is published for the agents
/// from a file (never argv), and the key is nowhere else.
fn assert_tls_installed(sb: &Sandbox, out: &std::process::Output, t: &iac_scaler::tls::StackTls) {
    assert_eq!(sb.read(MONITOR_TLS_KEY), t.key_pem);
    assert_eq!(sb.read(MONITOR_TLS_CERT), t.cert_pem);
    assert_eq!(sb.mode(MONITOR_TLS_KEY), 0o600);
    let calls = sb.calls();
    assert!(
        calls.contains("aws ssm put-parameter --name /iac/shop/scaler-ca --type String --overwrite --value file://"),
        "{calls}"
    );
    let key_line = t.key_pem.lines().nth(1).expect("a key line");
    sb.assert_not_leaked(out, key_line, true);
    // The VM's own address (from the instance metadata) for the agents: a replacement VM
    // publishes its own.
    assert!(
        calls.contains("aws ssm put-parameter --name /iac/shop/monitor-address --type String --overwrite --value 10.0.1.23:7700 "),
        "{calls}"
    );
}

#[test]
fn monitor_with_the_wrong_checksum_is_refused_and_never_started() {
    let sb = monitor_sandbox();
    let out = sb.run(&[("STUB_DOWNLOAD", AGENT_BYTES)]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert!(sb
        .log()
        .contains("REFUSED https://downloads.example.org/iac?v=1&arch=x86_64"));
    assert!(!sb.full(IAC_BIN).exists());
    assert!(!unit_touched(&sb.calls(), "iac-monitor"), "{}", sb.calls());
    assert!(!sb.full(MONITOR_ENV).exists());
}

#[test]
fn monitor_installs_the_stack_file_the_token_and_the_unit() {
    let sb = monitor_sandbox();
    let t = tls();
    sb.param("/iac/shop/scaler-tls", t.bundle().trim_end());
    let out = sb.run(&[("STUB_DOWNLOAD", IAC_BYTES)]);
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        sb.explain(&out)
    );
    assert_eq!(sb.read(IAC_BIN), IAC_BYTES);
    assert_eq!(sb.mode(IAC_BIN), 0o755);
    assert_eq!(sb.read(MONITOR_STACK_FILE), STORED_STACK);
    assert_eq!(
        sb.read(MONITOR_ENV),
        format!("IAC_SCALER_TOKEN={TOKEN}\nAWS_REGION=us-east-1\n")
    );
    assert_eq!(sb.mode(MONITOR_ENV), 0o600);
    assert!(sb.read(MONITOR_UNIT).contains("\nRestart=always\n"));
    assert_eq!(sb.mode(REFRESH_SCRIPT), 0o755);
    let calls = sb.calls();
    assert!(has_call(&calls, "systemctl enable iac-monitor"), "{calls}");
    assert!(has_call(&calls, "systemctl restart iac-monitor"), "{calls}");
    sb.assert_not_leaked(&out, TOKEN, true);
    assert_tls_installed(&sb, &out, &t);
}

/// A TLS parameter that is not the bundle iac generated stops the monitor's configuration.
#[test]
fn monitor_refuses_a_tls_parameter_that_is_not_its_bundle() {
    let sb = monitor_sandbox();
    sb.param("/iac/shop/scaler-tls", "not a bundle");
    let out = sb.run(&[("STUB_DOWNLOAD", IAC_BYTES)]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert!(
        sb.log()
            .contains("does not hold the TLS key and certificates iac generated"),
        "{}",
        sb.log()
    );
    assert!(!sb.full(MONITOR_TLS_KEY).exists());
}

/// The command `iac up` sends when the stack file changes: installs it and restarts the
/// monitor; with nothing changed it restarts nothing. Run with dash, as Run Command does.
#[test]
fn refresh_command_installs_a_new_stack_file_and_restarts() {
    let stack = shop();
    let sb = sandbox(&monitor_refresh_command(&stack).unwrap());
    sb.param("/iac/shop/scaler-token", TOKEN);
    sb.param("/iac/shop/stack-file", STORED_STACK);
    let t = tls();
    sb.param("/iac/shop/scaler-tls", t.bundle().trim_end());
    let env = [("IAC_REGION", "us-east-1")];
    let out = sb.run_with(&tool("dash", "dash"), &[], &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert_eq!(sb.read(MONITOR_STACK_FILE), STORED_STACK);
    assert_eq!(sb.mode(MONITOR_ENV), 0o600);
    // The systemctl stub says the unit is active: a change restarts it.
    assert!(has_call(&sb.calls(), "systemctl restart iac-monitor"));
    sb.assert_not_leaked(&out, TOKEN, true);
    assert_tls_installed(&sb, &out, &t);

    sb.clear_calls();
    let out = sb.run_with(&tool("dash", "dash"), &[], &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert!(!sb.calls().contains("restart"), "{}", sb.calls());

    sb.param(
        "/iac/shop/stack-file",
        "# stored\nname: shop\nregion: us-east-1\n",
    );
    sb.clear_calls();
    let out = sb.run_with(&tool("dash", "dash"), &[], &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert!(has_call(&sb.calls(), "systemctl restart iac-monitor"));
    assert!(sb.read(MONITOR_STACK_FILE).ends_with("region: us-east-1\n"));
}

/// A monitor the stack names itself (`scaler.monitor.address`): iac knows no CA for it, so the
/// agents reach it in plaintext, saying so, and read no CA parameter.
#[test]
fn agents_of_a_monitor_the_stack_names_use_plaintext_and_no_ca() {
    let yaml = format!(
        r#"version: 1
name: shop
tier: custom-scaler
app:
  image: ghcr.io/example/shop:2.0
  port: 8080
instance:
  instance_profile: LabInstanceProfile
scaler:
  monitor:
    address: 10.0.3.9:7700
  agent:
    binary: {{ url: https://downloads.example.org/iac-agent, sha256: {agent} }}
"#,
        agent = sha256_hex(AGENT_BYTES),
    );
    let a = agent(&stack_from(&yaml)).unwrap();
    let unit = file(&a, AGENT_UNIT);
    assert!(
        unit.contains("--monitor http://${IAC_MONITOR_ADDRESS} --allow-plaintext"),
        "{unit}"
    );
    assert!(!unit.contains("LoadCredential"), "{unit}");
    assert!(!a.script.contains("scaler-ca"), "{}", a.script);
}
