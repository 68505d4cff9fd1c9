//! What the boot-report tests share (included by path, beside `common` and `render_common`):
//! each role's real boot script in a sandbox whose `aws` sends the boot reports to the
//! emulator, with what the script reads at boot in place, and `iac logs` read back.
//!
//! The scripts are those `iac up` hands the instances: rendered from the stack for the VMs iac
//! launches itself, and for alb-asg's web instances the user data of the launch template that
//! `up` created in the emulator.

use std::process::Command;

use base64::Engine;
use serde_json::Value;

use crate::common::{moto_server, run, Emulator, Run, StackFile};
use crate::render_common::{tool, Sandbox, Setup, HOST_TOOLS};

/// The app's secret and the database's password: never in a report.
pub const APP_SECRET: &str = "app-s3cr3t-never-reported";
pub const DB_PASSWORD: &str = "db-pa55word-never-reported";
/// What the scaler-curl stub serves for the custom scaler's binaries (the stack file names
/// their SHA-256: see [`stack_file`]).
pub const IAC_BYTES: &str = "#!/bin/sh\necho fake iac\n";
pub const AGENT_BYTES: &str = "#!/bin/sh\necho fake iac-agent\n";
/// The worker join token the swarm stubs accept.
const WORKER_TOKEN: &str = "SWMTKN-1-stubcluster-workersecret";
const MANAGER_TOKEN: &str = "SWMTKN-1-stubcluster-managersecret";

/// Every role whose boot script reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    LbWeb,
    SwarmManager,
    SwarmWorker,
    AlbWeb,
    ScalerMonitor,
    ScalerAgent,
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
}

/// The example stack at `example` as stack `name`; the custom scaler's binaries are the ones
/// the scaler-curl stub serves.
pub fn stack_file(example: &str, name: &str, edits: &[(&str, &str)]) -> StackFile {
    let (iac, agent) = (sha256_hex(IAC_BYTES), sha256_hex(AGENT_BYTES));
    let mut all: Vec<(&str, &str)> = Vec::new();
    if example.ends_with("custom-scaler.yaml") {
        all.push((
            "0000000000000000000000000000000000000000000000000000000000000000",
            &iac,
        ));
        all.push((
            "1111111111111111111111111111111111111111111111111111111111111111",
            &agent,
        ));
    }
    all.extend_from_slice(edits);
    StackFile::from_example(example, name, &all)
}

/// The value of SSM parameter `name` in the emulator (what `up` stored); panics when missing.
async fn stored(emu: &Emulator, name: &str) -> String {
    emu.param(name)
        .await
        .unwrap_or_else(|| panic!("`up` stored no parameter {name}"))
        .1
}

/// The user data of the stack's launch template, as its instances receive it.
async fn launch_template_user_data(emu: &Emulator, stack: &str) -> String {
    let ec2 = emu.ec2().await;
    let out = ec2
        .describe_launch_template_versions()
        .launch_template_name(format!("{stack}-web"))
        .versions("$Default")
        .send()
        .await
        .expect("the stack's launch template");
    let data = out.launch_template_versions()[0]
        .launch_template_data()
        .and_then(|d| d.user_data())
        .expect("user data in the launch template");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64 user data");
    String::from_utf8(bytes).expect("a script")
}

/// `role`'s real boot script in a sandbox that reports to `emu`, with what the script reads at
/// boot in place (from what `up` stored in the emulator where the sandbox's stub reads it).
pub async fn sandbox(emu: &Emulator, stack: &iac::stack::Stack, role: Role) -> Sandbox {
    let name = stack.name();
    let p = |leaf: &str| iac::render::param_name(name, leaf);
    let base = Setup {
        host_tools: HOST_TOOLS,
        env: &[
            ("IAC_HEALTH_WAIT_SECONDS", "1"),
            ("IAC_HEALTH_POLL_SECONDS", "1"),
            ("IAC_REGISTER_WAIT_SECONDS", "2"),
            ("IAC_MOUNT_WAIT_SECONDS", "30"),
            ("IAC_DNS_WAIT_SECONDS", "1"),
            ("IAC_DNS_POLL_SECONDS", "1"),
            ("IAC_DRAIN_POLL_SECONDS", "0"),
            ("STUB_PRIVATE_IP", "10.0.1.23"),
        ],
        ..Setup::UBUNTU
    };
    let swarm = Setup {
        stand_ins: &[("swarm-docker", "docker"), ("swarm-aws", "aws")],
        ..base
    };
    let scaler = Setup {
        stand_ins: &[("scaler-curl", "curl")],
        ..base
    };
    let sb = match role {
        Role::LbWeb => {
            let sb = Sandbox::new(
                &Setup {
                    // Installed by the script's first step: the reports wait for it.
                    missing: &["aws"],
                    ..base
                },
                &iac::render::lb_vms::web(stack).expect("web renders").script,
            );
            sb.param(&p("app"), &iac::render::app_spec::app_spec(stack).unwrap());
            sb.param(&p("db-host"), "10.0.9.9");
            sb.param(&p("db-password"), DB_PASSWORD);
            sb
        }
        Role::SwarmManager | Role::SwarmWorker => {
            use iac::render::swarm as s;
            let ud = if role == Role::SwarmManager {
                s::manager(stack, 1)
            } else {
                s::worker(stack)
            };
            let sb = Sandbox::new(&swarm, &ud.expect("renders").script);
            sb.param(&p(s::SERVICE_PARAM), &s::service_spec(stack).unwrap());
            if role == Role::SwarmWorker {
                sb.param(&p(s::LEADER_ADDR_PARAM), "10.0.1.10");
                sb.param(&p(s::WORKER_TOKEN_PARAM), WORKER_TOKEN);
                sb.param(&p(s::MANAGER_TOKEN_PARAM), MANAGER_TOKEN);
            }
            sb
        }
        Role::AlbWeb => {
            use iac::render::alb_asg as a;
            let sb = Sandbox::new(
                &Setup {
                    missing: &["mount.efs", "mount.nfs4"],
                    ..base
                },
                &launch_template_user_data(emu, name).await,
            );
            std::os::unix::fs::symlink(tool("jq", "jq"), sb.host.join("jq")).unwrap();
            for leaf in [a::EFS_ID_PARAM, a::DB_ENDPOINT_PARAM, a::DB_SECRET_PARAM] {
                sb.param(&p(leaf), &stored(emu, &p(leaf)).await);
            }
            sb
        }
        Role::ScalerMonitor => {
            use iac::render::custom_scaler as c;
            let sb = Sandbox::new(&scaler, &c::monitor(stack).expect("renders").script);
            for leaf in [c::TOKEN_PARAM, c::STACK_FILE_PARAM, c::TLS_PARAM] {
                sb.param(&p(leaf), &stored(emu, &p(leaf)).await);
            }
            sb
        }
        Role::ScalerAgent => {
            use iac::render::custom_scaler as c;
            let sb = Sandbox::new(&scaler, &c::agent(stack).expect("renders").script);
            sb.param(&p(c::TOKEN_PARAM), &stored(emu, &p(c::TOKEN_PARAM)).await);
            // What the monitor VM publishes at its boot.
            sb.param(&p(c::MONITOR_ADDRESS_PARAM), "10.0.3.9:7700");
            let ca = iac_scaler::tls::generate().expect("certificates").ca_pem;
            sb.param(&p(c::CA_PARAM), ca.trim_end());
            sb
        }
    };
    // The app's secret and the database's (alb-asg: the secret RDS manages).
    for (_, from) in stack.spec.app.secrets.iter() {
        sb.param(&from.ssm, APP_SECRET);
    }
    let mut sb = sb;
    sb.report_to(&emu.url, &moto_server().with_file_name("python"));
    sb
}

/// The environment a run of `role`'s script needs besides the sandbox's (the binaries the
/// custom scaler downloads; the database secret alb-asg's web instances read).
pub fn run_env(role: Role) -> Vec<(&'static str, String)> {
    match role {
        Role::ScalerMonitor => vec![("STUB_DOWNLOAD", IAC_BYTES.to_string())],
        Role::ScalerAgent => vec![("STUB_DOWNLOAD", AGENT_BYTES.to_string())],
        Role::AlbWeb => vec![(
            "STUB_SECRET_STRING",
            format!(r#"{{"username":"admin","password":"{DB_PASSWORD}"}}"#),
        )],
        _ => Vec::new(),
    }
}

/// An environment as [`crate::render_common::Sandbox::run_as`] takes it.
pub fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `iac -o json logs FILE ARGS`: the `boot` records and the run.
pub fn logs(emu: &Emulator, file: &StackFile, args: &[&str]) -> (Run, Vec<Value>) {
    let mut c = emu.iac();
    c.args(["-o", "json", "logs"]).arg(file.path()).args(args);
    let r = run(c);
    let boots = r
        .records()
        .into_iter()
        .filter(|v| v["event"] == "boot")
        .collect();
    (r, boots)
}

/// The names of a report's steps.
pub fn steps(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The instance ids `iac logs --role ROLE` lists.
pub fn role_instances(emu: &Emulator, file: &StackFile, role: &str) -> Vec<String> {
    let (r, boots) = logs(emu, file, &["--role", role]);
    let ids: Vec<String> = boots
        .iter()
        .filter_map(|b| b["instance_id"].as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        let (all, _) = logs(emu, file, &[]);
        panic!(
            "no {role} instance:\n{}\n{}\nall:\n{}",
            r.stdout, r.stderr, all.stdout
        );
    }
    ids
}

/// `iac up FILE --yes ARGS` against the emulator.
pub fn up(emu: &Emulator, file: &StackFile, args: &[&str]) -> Run {
    let mut c: Command = emu.iac();
    c.arg("up").arg(file.path()).arg("--yes").args(args);
    run(c)
}
