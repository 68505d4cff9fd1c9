//! Checks the custom-scaler artifacts: shellcheck for the agent and monitor boot scripts and the
//! monitor's refresh command, and runs of the scripts against a fake root with stub commands on
//! PATH (tests/stubs, plus a `curl` that serves a fake binary), which prove that a binary with
//! the wrong SHA-256 is never installed nor started, that the right one is installed as a
//! `Restart=always` unit with a root-only environment file, and that the token read from SSM
//! lands in that file and nowhere else.
//!
//! A missing tool fails the test loudly instead of skipping it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iac::render::custom_scaler::{
    agent, monitor, monitor_refresh_command, AGENT_BIN, AGENT_ENV, AGENT_UNIT, IAC_BIN,
    MONITOR_ENV, MONITOR_STACK_FILE, MONITOR_UNIT, REFRESH_SCRIPT,
};
use iac::render::{UserData, USER_DATA_LIMIT};
use iac::stack::Stack;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// What the stub `curl` serves for any https:// URL.
const AGENT_BYTES: &str = "#!/bin/sh\necho fake iac-agent\n";
const IAC_BYTES: &str = "#!/bin/sh\necho fake iac\n";
/// A token as iac generates them (URL-safe base64), and a monitor address.
const TOKEN: &str = "tOk3n-Secret_value-0123456789abcdef";
const MONITOR_ADDRESS: &str = "10.0.3.9:7700";
const STORED_STACK: &str = "# stored\nname: shop\n";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn example() -> Stack {
    iac::stack::load(&manifest_dir().join("stacks/custom-scaler.yaml")).expect("example loads")
}

/// Loads a stack from YAML text through the real loader, so variants are validated too.
fn stack_from(yaml: &str) -> Stack {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("stack.yaml");
    fs::write(&path, yaml).unwrap();
    match iac::stack::load(&path) {
        Ok(stack) => stack,
        Err(e) => panic!("test stack does not load: {e}\n{yaml}"),
    }
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

fn file<'a>(ud: &'a UserData, path: &str) -> &'a str {
    match ud.files.iter().find(|f| f.path == path) {
        Some(f) => &f.content,
        None => panic!("no rendered file {path}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{name} not found: run .ci/run or apt-get install {package}"))
}

fn explain_output(out: &Output) -> String {
    format!(
        "({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn shellcheck(shell: &str, name: &str, text: &str) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    let out = Command::new(tool("shellcheck", "shellcheck"))
        .args(["-s", shell, "--norc"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck -s {shell} {name} failed {}",
        explain_output(&out)
    );
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
    assert!(
        unit.contains(&format!(
            "\nExecStart={AGENT_BIN} --monitor http://${{IAC_MONITOR_ADDRESS}} --admin 127.0.0.1:7799\n"
        )),
        "{unit}"
    );
    let m = monitor(&stack).unwrap();
    let unit = file(&m, MONITOR_UNIT);
    assert!(unit.contains("\nRestart=always\n"), "{unit}");
    assert!(
        unit.contains(&format!("\nEnvironmentFile={MONITOR_ENV}\n")),
        "{unit}"
    );
    assert!(unit.contains(&format!(
        "\nExecStart={IAC_BIN} scale --custom-monitor {MONITOR_STACK_FILE}\n"
    )));
    assert_eq!(
        file(&m, REFRESH_SCRIPT),
        monitor_refresh_command(&stack).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Stub runs

const HOST_TOOLS: &[&str] = &[
    "awk",
    "cat",
    "chmod",
    "cmp",
    "cp",
    "date",
    "dirname",
    "grep",
    "head",
    "install",
    "ln",
    "mkdir",
    "mktemp",
    "mv",
    "readlink",
    "rm",
    "sed",
    "sha256sum",
    "sleep",
    "tail",
    "tee",
    "touch",
    "tr",
    "uname",
];

/// Serves IMDSv2 and, for any https:// URL with `-o FILE`, writes $STUB_DOWNLOAD to FILE.
const CURL_STUB: &str = r#"#!/bin/bash
# Stub (custom-scaler tests): IMDSv2 answers; any https:// download writes $STUB_DOWNLOAD.
. "${0%/*}/_lib.sh"
out=
while [ $# -gt 0 ]; do
  case $1 in
    -o) out=$2; shift ;;
    */latest/api/token) printf 'stub-imds-token' ;;
    */meta-data/placement/region) printf 'us-east-1' ;;
    */meta-data/local-ipv4) printf '10.0.1.23' ;;
    https://*) [ -z "$out" ] || printf '%s' "${STUB_DOWNLOAD:?}" >"$out" ;;
  esac
  shift
done
exit 0
"#;

struct Sandbox {
    _dir: TempDir,
    root: PathBuf,
    path: String,
    stub_log: PathBuf,
    installed: PathBuf,
    all_stubs: PathBuf,
    ssm_dir: PathBuf,
    script: PathBuf,
}

fn copy_stubs(dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(manifest_dir().join("tests/stubs")).unwrap() {
        let src = entry.unwrap().path();
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        fs::copy(&src, dst.join(&name)).unwrap();
    }
    fs::write(dst.join("curl"), CURL_STUB).unwrap();
    for entry in fs::read_dir(dst).unwrap() {
        let p = entry.unwrap().path();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Sandbox {
    fn new(text: &str) -> Sandbox {
        let dir = TempDir::new().unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/os-release"),
            "NAME=\"Test\"\nID=ubuntu\nID_LIKE=\"debian\"\nVERSION_CODENAME=noble\n",
        )
        .unwrap();
        let stubs = base.join("stubs");
        copy_stubs(&stubs);
        let all_stubs = base.join("all-stubs");
        copy_stubs(&all_stubs);
        let installed = base.join("installed");
        fs::create_dir_all(&installed).unwrap();
        let host = base.join("host");
        fs::create_dir_all(&host).unwrap();
        for t in HOST_TOOLS {
            std::os::unix::fs::symlink(tool(t, "coreutils"), host.join(t)).unwrap();
        }
        let script = base.join("user-data.sh");
        fs::write(&script, text).unwrap();
        let ssm_dir = base.join("ssm");
        fs::create_dir_all(&ssm_dir).unwrap();
        Sandbox {
            path: format!(
                "{}:{}:{}",
                installed.display(),
                stubs.display(),
                host.display()
            ),
            root,
            stub_log: base.join("calls.log"),
            installed,
            all_stubs,
            ssm_dir,
            script,
            _dir: dir,
        }
    }

    /// Makes the aws stub answer `value` for parameter `name`.
    fn param(&self, name: &str, value: &str) {
        let path = self.ssm_dir.join(name.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, value).unwrap();
    }

    fn run_with(&self, shell: &str, download: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(tool("timeout", "coreutils"));
        cmd.arg("120")
            .arg(tool(shell, shell))
            .arg(&self.script)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.root)
            .env("IAC_ROOT", &self.root)
            .env("IAC_HEALTH_WAIT_SECONDS", "1")
            .env("IAC_HEALTH_POLL_SECONDS", "1")
            .env("IAC_PARAM_WAIT_SECONDS", "30")
            .env("IAC_RETRY_SLEEP", "0")
            .env("STUB_LOG", &self.stub_log)
            .env("STUB_INSTALL_DIR", &self.installed)
            .env("STUB_ALL_DIR", &self.all_stubs)
            .env("STUB_SSM_DIR", &self.ssm_dir)
            .env("STUB_DOWNLOAD", download);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn run(&self, download: &str, env: &[(&str, &str)]) -> Output {
        self.run_with("bash", download, env)
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn read(&self, path: &str) -> String {
        let full = self.full(path);
        fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    fn mode(&self, path: &str) -> u32 {
        fs::metadata(self.full(path)).unwrap().permissions().mode() & 0o777
    }

    fn log(&self) -> String {
        fs::read_to_string(self.full("/var/log/iac-bootstrap.log")).unwrap_or_default()
    }

    fn calls(&self) -> String {
        fs::read_to_string(&self.stub_log).unwrap_or_default()
    }

    fn clear_calls(&self) {
        let _ = fs::remove_file(&self.stub_log);
    }

    fn explain(&self, out: &Output) -> String {
        format!(
            "{}\n--- bootstrap log\n{}\n--- calls\n{}",
            explain_output(out),
            self.log(),
            self.calls()
        )
    }

    /// Asserts the token appears in no argv, no log line and no output.
    fn assert_token_not_leaked(&self, out: &Output) {
        let calls = self.calls();
        let log = self.log();
        assert!(!calls.contains(TOKEN), "the token in an argv:\n{calls}");
        assert!(!log.contains(TOKEN), "the token in the log:\n{log}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(TOKEN));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(TOKEN));
    }
}

fn has_call(calls: &str, line: &str) -> bool {
    calls.lines().any(|l| l == line)
}

/// Whether systemctl was asked anything about `unit`.
fn unit_touched(calls: &str, unit: &str) -> bool {
    calls
        .lines()
        .any(|l| l.starts_with("systemctl ") && l.contains(unit))
}

fn agent_sandbox() -> Sandbox {
    let sb = Sandbox::new(&agent(&shop()).unwrap().script);
    sb.param("/iac/shop/scaler-token", TOKEN);
    sb.param("/iac/shop/monitor-address", MONITOR_ADDRESS);
    sb
}

#[test]
fn agent_with_the_wrong_checksum_is_refused_and_never_started() {
    let sb = agent_sandbox();
    let out = sb.run("#!/bin/sh\necho something else\n", &[]);
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
        log.contains("iac bootstrap FAILED in step 2/6 the agent binary"),
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
    // The monitor's address is written by iac once the monitor VM runs: the script waits.
    let out = sb.run(
        AGENT_BYTES,
        &[("STUB_SSM_MISSING", "/iac/shop/monitor-address:2")],
    );
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        sb.explain(&out)
    );
    assert_eq!(sb.read(AGENT_BIN), AGENT_BYTES);
    assert_eq!(sb.mode(AGENT_BIN), 0o755);
    let unit = sb.read(AGENT_UNIT);
    assert!(unit.contains("\nRestart=always\n"), "{unit}");
    assert!(unit.contains("--admin 127.0.0.1:7799\n"), "{unit}");
    assert_eq!(
        sb.read(AGENT_ENV),
        format!("IAC_AGENT_TOKEN={TOKEN}\nIAC_MONITOR_ADDRESS={MONITOR_ADDRESS}\n")
    );
    assert_eq!(sb.mode(AGENT_ENV), 0o600);
    assert_eq!(sb.mode("/etc/iac"), 0o700);
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
            .contains("waiting for SSM parameter /iac/shop/monitor-address"),
        "{}",
        sb.log()
    );
    // The app runs with its settings and secrets, as on the lb-vms web VMs.
    let app_env = sb.read("/etc/iac/app.env");
    assert!(app_env.contains("SECRET_KEY=s3cr3t-value\n"), "{app_env}");
    assert_eq!(sb.mode("/etc/iac/app.env"), 0o600);
    assert!(calls.contains("docker run -d --restart unless-stopped --name app -p 8080:8080"));
    assert!(!app_env.contains(TOKEN), "the app sees the token");
    sb.assert_token_not_leaked(&out);
    assert!(sb.log().ends_with(&format!(
        "iac bootstrap finished: app on port 8080, agent reporting to {MONITOR_ADDRESS}\n"
    )));

    // A second run (a reboot, or by hand) downloads nothing and restarts nothing.
    sb.clear_calls();
    let out = sb.run(AGENT_BYTES, &[]);
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
    let out = sb.run(AGENT_BYTES, &[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert!(has_call(&sb.calls(), "systemctl restart iac-agent"));
    assert!(sb
        .read(AGENT_ENV)
        .starts_with("IAC_AGENT_TOKEN=rotated-token\n"));
}

#[test]
fn agent_refuses_a_monitor_address_that_is_not_host_port() {
    let sb = agent_sandbox();
    sb.param("/iac/shop/monitor-address", "10.0.0.1:7700; reboot");
    let out = sb.run(AGENT_BYTES, &[]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert!(sb.log().contains("does not hold host:port"), "{}", sb.log());
    assert!(!sb.full(AGENT_ENV).exists());
    assert!(!unit_touched(&sb.calls(), "iac-agent"));
}

fn monitor_sandbox() -> Sandbox {
    let sb = Sandbox::new(&monitor(&shop()).unwrap().script);
    sb.param("/iac/shop/scaler-token", TOKEN);
    sb.param("/iac/shop/stack-file", STORED_STACK);
    sb
}

#[test]
fn monitor_with_the_wrong_checksum_is_refused_and_never_started() {
    let sb = monitor_sandbox();
    let out = sb.run(AGENT_BYTES, &[]);
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
    let out = sb.run(IAC_BYTES, &[]);
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
    sb.assert_token_not_leaked(&out);
}

/// The command `iac up` sends when the stack file changes: installs it and restarts the
/// monitor; with nothing changed it restarts nothing. Run with dash, as Run Command does.
#[test]
fn refresh_command_installs_a_new_stack_file_and_restarts() {
    let stack = shop();
    let sb = Sandbox::new(&monitor_refresh_command(&stack).unwrap());
    sb.param("/iac/shop/scaler-token", TOKEN);
    sb.param("/iac/shop/stack-file", STORED_STACK);
    let env = [("IAC_REGION", "us-east-1")];
    let out = sb.run_with("dash", "", &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert_eq!(sb.read(MONITOR_STACK_FILE), STORED_STACK);
    assert_eq!(sb.mode(MONITOR_ENV), 0o600);
    // The systemctl stub says the unit is active: a change restarts it.
    assert!(has_call(&sb.calls(), "systemctl restart iac-monitor"));
    sb.assert_token_not_leaked(&out);

    sb.clear_calls();
    let out = sb.run_with("dash", "", &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert!(!sb.calls().contains("restart"), "{}", sb.calls());

    sb.param(
        "/iac/shop/stack-file",
        "# stored\nname: shop\nregion: us-east-1\n",
    );
    sb.clear_calls();
    let out = sb.run_with("dash", "", &env);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert!(has_call(&sb.calls(), "systemctl restart iac-monitor"));
    assert!(sb.read(MONITOR_STACK_FILE).ends_with("region: us-east-1\n"));
}
