//! What the render tests share: the real tools (a missing one fails the test loudly instead of
//! skipping it: a skipped check looks exactly like a passing one in CI output), shellcheck, the
//! test stacks, and the sandbox a rendered script runs in: a fake root, the stubs of
//! tests/stubs on PATH recording their argv in a call log, and a few host tools, so a script
//! can never touch the real system.
//!
//! Included (`mod render_common;`) by the render tests only; not every one of them uses every
//! item, hence the `allow(dead_code)` on those.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iac::render::UserData;
use iac::stack::Stack;
use tempfile::TempDir;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Stacks and rendered files

/// An example stack shipped in stacks/, e.g. `example("stacks/bookstore-vm.yaml")`.
pub fn example(path: &str) -> Stack {
    iac::stack::load(&manifest_dir().join(path)).expect("example loads")
}

/// Loads a stack from YAML text through the real loader, so variants are validated too.
#[allow(dead_code)]
pub fn stack_from(yaml: &str) -> Stack {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("stack.yaml");
    fs::write(&path, yaml).unwrap();
    match iac::stack::load(&path) {
        Ok(stack) => stack,
        Err(e) => panic!("test stack does not load: {e}\n{yaml}"),
    }
}

/// The rendered file at `path`, or a panic naming the files there are.
#[allow(dead_code)]
pub fn file<'a>(ud: &'a UserData, path: &str) -> &'a str {
    match ud.files.iter().find(|f| f.path == path) {
        Some(f) => &f.content,
        None => panic!(
            "no rendered file {path}; have {:?}",
            ud.files.iter().map(|f| &f.path).collect::<Vec<_>>()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

/// Finds `name` on PATH or in the usual directories (nginx and haproxy live in /usr/sbin), or
/// panics with how to install it.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{name} not found: run .ci/run or apt-get install {package}"))
}

pub fn explain_output(out: &Output) -> String {
    format!(
        "({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn check_output(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed {}",
        explain_output(out)
    );
}

/// `shellcheck -s shell` on `text`, saved as `name`.
pub fn shellcheck(shell: &str, name: &str, text: &str) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    let out = Command::new(tool("shellcheck", "shellcheck"))
        .args(["-s", shell, "--norc"])
        .arg(&path)
        .output()
        .unwrap();
    check_output(&format!("shellcheck -s {shell} {name}"), &out);
}

// ---------------------------------------------------------------------------------------------
// The sandbox

/// Host tools most boot scripts (and the stubs) may use; anything else is a stub or missing,
/// so a script can never touch the real system.
#[allow(dead_code)]
pub const HOST_TOOLS: &[&str] = &[
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
    "od",
    "readlink",
    "rm",
    "sed",
    "sha256sum",
    "sleep",
    "sort",
    "tail",
    "tee",
    "touch",
    "tr",
    "uname",
];

/// How a tier's sandbox differs from the others'.
#[derive(Clone, Copy)]
pub struct Setup<'a> {
    /// `ID` in the fake /etc/os-release: `ubuntu` or `amzn`.
    pub os_id: &'a str,
    /// Host tools the script (and the stubs) may use; anything else is a stub or missing.
    pub host_tools: &'a [&'a str],
    /// Stubs left off PATH: they appear (from STUB_ALL_DIR) only once the script installs
    /// their package.
    pub missing: &'a [&'a str],
    /// Stubs playing another command, `(file in tests/stubs, command)`; the command's own stub
    /// is left out.
    pub stand_ins: &'a [(&'a str, &'a str)],
    /// Stubs of the tier's own, `(command, script text)`, replacing any of the same name.
    pub extra_stubs: &'a [(&'a str, &'a str)],
    /// Environment every run gets (a run's own `env` comes after, and wins).
    pub env: &'a [(&'a str, &'a str)],
}

impl Setup<'static> {
    /// An Ubuntu root with tests/stubs as they are; a tier fills in its tools and environment.
    pub const UBUNTU: Setup<'static> = Setup {
        os_id: "ubuntu",
        host_tools: &[],
        missing: &[],
        stand_ins: &[],
        extra_stubs: &[],
        env: &[],
    };
}

/// Copies the stubs `setup` asks for into `dst` (leaving out `skip`), executable whatever the
/// checkout did to the exec bits.
fn copy_stubs(dst: &Path, setup: &Setup, skip: &[&str]) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(manifest_dir().join("tests/stubs")).unwrap() {
        let src = entry.unwrap().path();
        let file = src.file_name().unwrap().to_string_lossy().into_owned();
        let name = match setup.stand_ins.iter().find(|(f, _)| *f == file) {
            Some((_, command)) => command.to_string(),
            None if setup.stand_ins.iter().any(|(_, c)| *c == file) => continue,
            None => file,
        };
        if skip.contains(&name.as_str()) {
            continue;
        }
        fs::copy(&src, dst.join(&name)).unwrap();
        fs::set_permissions(dst.join(&name), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (name, text) in setup.extra_stubs {
        if skip.contains(name) {
            continue;
        }
        fs::write(dst.join(name), text).unwrap();
        fs::set_permissions(dst.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A script in a fake root, run with `IAC_ROOT` pointing there and PATH limited to the stubs
/// (recording every argv in the call log) and the host tools.
pub struct Sandbox {
    _dir: TempDir,
    /// The temp dir holding everything below (stub state lives in `stub-state/`).
    #[allow(dead_code)]
    pub base: PathBuf,
    /// The fake root.
    pub root: PathBuf,
    /// PATH of a run: installed, then stubs, then host tools.
    pub path: String,
    /// Where the stubs of package managers put what they install (first on PATH).
    pub installed: PathBuf,
    /// Every stub, off PATH, where "installing" a missing one links it from.
    pub all_stubs: PathBuf,
    /// The host tools' links.
    #[allow(dead_code)]
    pub host: PathBuf,
    /// The stubs' call log: one line per call, the command and its arguments.
    pub stub_log: PathBuf,
    /// SSM parameters the aws stubs answer, one file per parameter path.
    pub ssm_dir: PathBuf,
    /// The script under test.
    pub script: PathBuf,
    env: Vec<(String, String)>,
}

impl Sandbox {
    pub fn new(setup: &Setup, text: &str) -> Sandbox {
        let dir = TempDir::new().unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        let like = if setup.os_id == "amzn" {
            "fedora"
        } else {
            "debian"
        };
        fs::write(
            root.join("etc/os-release"),
            format!(
                "NAME=\"Test\"\nID={}\nID_LIKE=\"{like}\"\nVERSION_CODENAME=noble\n",
                setup.os_id
            ),
        )
        .unwrap();
        let stubs = base.join("stubs");
        copy_stubs(&stubs, setup, setup.missing);
        let all_stubs = base.join("all-stubs");
        copy_stubs(&all_stubs, setup, &[]);
        let installed = base.join("installed");
        fs::create_dir_all(&installed).unwrap();
        let host = base.join("host");
        fs::create_dir_all(&host).unwrap();
        for t in setup.host_tools {
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
            installed,
            all_stubs,
            host,
            stub_log: base.join("calls.log"),
            ssm_dir,
            script,
            env: setup
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            base,
            _dir: dir,
        }
    }

    /// Makes the aws stub answer `value` for SSM parameter `name`.
    #[allow(dead_code)]
    pub fn param(&self, name: &str, value: &str) {
        let path = self.ssm_dir.join(name.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, value).unwrap();
    }

    /// The value of SSM parameter `name`, if it exists.
    #[allow(dead_code)]
    pub fn read_param(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.ssm_dir.join(name.trim_start_matches('/'))).ok()
    }

    /// Sets a stub state file (see tests/stubs).
    #[allow(dead_code)]
    pub fn set_state(&self, name: &str, value: &str) {
        let dir = self.base.join("stub-state");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), value).unwrap();
    }

    /// A stub state file, empty when absent.
    #[allow(dead_code)]
    pub fn state(&self, name: &str) -> String {
        fs::read_to_string(self.base.join("stub-state").join(name)).unwrap_or_default()
    }

    /// Sends the boot reports of this sandbox's script to the emulator at `url`: the sandbox's
    /// `aws` (whichever stub plays it, installed yet or not) moves aside behind
    /// [`REPORT_FORWARD`], which writes the reports into the emulator's SSM with `python`
    /// (boto3, the library the AWS CLI is built on) and hands every other call to that stub.
    /// Reports are sent only by a run that says which instance it is ([`Sandbox::run_as`]).
    #[allow(dead_code)]
    pub fn report_to(&mut self, url: &str, python: &Path) {
        let real = self.base.join("aws-stub");
        fs::create_dir_all(&real).unwrap();
        for f in ["aws", "_lib.sh"] {
            fs::copy(self.all_stubs.join(f), real.join(f)).unwrap();
            fs::set_permissions(real.join(f), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let stubs = self.base.join("stubs");
        for dir in [&self.all_stubs, &stubs] {
            let aws = dir.join("aws");
            if dir == &self.all_stubs || aws.exists() {
                fs::write(&aws, REPORT_FORWARD).unwrap();
                fs::set_permissions(&aws, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        for (k, v) in [
            ("STUB_EMULATOR", url.to_string()),
            ("STUB_PYTHON", python.display().to_string()),
            ("STUB_REAL_AWS", real.join("aws").display().to_string()),
        ] {
            self.env.push((k.to_string(), v));
        }
    }

    /// Runs the script with bash as EC2 instance `id` (the instance id the metadata stub
    /// answers, which boot reports are named by).
    #[allow(dead_code)]
    pub fn run_as(&self, id: &str, env: &[(&str, &str)]) -> Output {
        let mut all = vec![("STUB_INSTANCE_ID", id)];
        all.extend_from_slice(env);
        self.run(&all)
    }

    /// Starts the script with bash as EC2 instance `id`, in the background (its output is
    /// discarded: the log and the reports tell what it did).
    #[allow(dead_code)]
    pub fn spawn_as(&self, id: &str, env: &[(&str, &str)]) -> std::process::Child {
        let mut all = vec![("STUB_INSTANCE_ID", id)];
        all.extend_from_slice(env);
        self.command(&tool("bash", "bash"), &[], &all)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs the script with `shell` and `args` (under `timeout 120`), in a cleared environment:
    /// the sandbox's, the tier's, then `env`.
    pub fn run_with(&self, shell: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(shell, args, env).output().unwrap()
    }

    fn command(&self, shell: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(tool("timeout", "coreutils"));
        cmd.arg("120")
            .arg(shell)
            .arg(&self.script)
            .args(args)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.root)
            .env("IAC_ROOT", &self.root)
            // No pause between retries; a missing parameter gives up within a test's patience.
            .env("IAC_RETRY_SLEEP", "0")
            .env("IAC_PARAM_WAIT_SECONDS", "30")
            .env("STUB_LOG", &self.stub_log)
            .env("STUB_INSTALL_DIR", &self.installed)
            .env("STUB_ALL_DIR", &self.all_stubs)
            .env("STUB_SSM_DIR", &self.ssm_dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the script with bash.
    pub fn run(&self, env: &[(&str, &str)]) -> Output {
        self.run_with(&tool("bash", "bash"), &[], env)
    }

    /// Runs the script with bash and asserts it succeeded.
    #[allow(dead_code)]
    pub fn run_ok(&self, env: &[(&str, &str)]) -> Output {
        let out = self.run(env);
        assert!(
            out.status.success(),
            "script failed: {}",
            self.explain(&out)
        );
        out
    }

    /// `path` of the fake root.
    pub fn full(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    #[allow(dead_code)]
    pub fn read(&self, path: &str) -> String {
        let full = self.full(path);
        fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    /// The permission bits of `path` in the fake root.
    #[allow(dead_code)]
    pub fn mode(&self, path: &str) -> u32 {
        fs::metadata(self.full(path)).unwrap().permissions().mode() & 0o777
    }

    /// The bootstrap log, empty when absent.
    pub fn log(&self) -> String {
        fs::read_to_string(self.full("/var/log/iac-bootstrap.log")).unwrap_or_default()
    }

    /// The call log, empty when nothing was called.
    pub fn calls(&self) -> String {
        fs::read_to_string(&self.stub_log).unwrap_or_default()
    }

    #[allow(dead_code)]
    pub fn clear_calls(&self) {
        let _ = fs::remove_file(&self.stub_log);
    }

    /// A failed run, with the bootstrap log and the calls.
    pub fn explain(&self, out: &Output) -> String {
        format!(
            "{}\n--- bootstrap log\n{}\n--- calls\n{}",
            explain_output(out),
            self.log(),
            self.calls()
        )
    }

    /// What the stubs saw given to containers' environments (`docker run -e/--env-file`,
    /// compose's `environment:`/`env_file:`, `docker service --env/--env-add/--env-file`), one
    /// `NAME=VALUE` a line: what `docker inspect` would show.
    #[allow(dead_code)]
    pub fn container_env(&self) -> String {
        fs::read_to_string(self.base.join("container-env.log")).unwrap_or_default()
    }

    /// Asserts none of `secrets` reached a recorded argv, a container's environment, the log or
    /// the output, and that the recording worked (`plain`, a non-secret `NAME=VALUE` the
    /// containers do get, is in the environment).
    #[allow(dead_code)]
    pub fn assert_secrets_hidden(&self, out: &Output, secrets: &[&str], plain: &str) {
        let env = self.container_env();
        assert!(
            env.lines().any(|l| l == plain),
            "the stubs recorded no {plain} in the containers' environment:\n{env}"
        );
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(
                !env.contains(secret),
                "{secret} in a container's environment:\n{env}"
            );
            self.assert_not_leaked(out, secret, true);
        }
    }

    /// Asserts `secret` appears in none of the places a careless script would leak it to: the
    /// log, the output, and (where `argv_too`) the recorded argv.
    #[allow(dead_code)]
    pub fn assert_not_leaked(&self, out: &Output, secret: &str, argv_too: bool) {
        let calls = self.calls();
        let log = self.log();
        if argv_too {
            assert!(!calls.contains(secret), "{secret} in an argv:\n{calls}");
        }
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
    }
}

/// `aws` for the boot-report tests ([`Sandbox::report_to`]): `ssm put-parameter` of a boot
/// report goes to the emulator at `$STUB_EMULATOR`; every other call to the sandbox's own stub.
pub const REPORT_FORWARD: &str = r#"#!/bin/bash
if [ "${1:-} ${2:-}" = "ssm put-parameter" ]; then
  name='' value='' prev=''
  for a in "$@"; do
    case $prev in --name) name=$a ;; --value) value=$a ;; esac
    prev=$a
  done
  case $name in
    /iac/*/boot/*)
      printf 'aws %s\n' "$*" >>"$STUB_LOG"
      exec "$STUB_PYTHON" -c '
import sys, boto3
name, path, url = sys.argv[1:4]
ssm = boto3.client("ssm", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
ssm.put_parameter(Name=name, Value=open(path).read(), Type="String", Overwrite=True)
' "$name" "${value#file://}" "$STUB_EMULATOR"
      ;;
  esac
fi
exec "$STUB_REAL_AWS" "$@"
"#;

// ---------------------------------------------------------------------------------------------
// The call log

/// Whether stub `cmd` was run (a line of the call log starts with it).
#[allow(dead_code)]
pub fn ran(calls: &str, cmd: &str) -> bool {
    calls.lines().any(|l| l.split(' ').next() == Some(cmd))
}

/// Whether `line` is exactly one of the calls.
#[allow(dead_code)]
pub fn has_call(calls: &str, line: &str) -> bool {
    calls.lines().any(|l| l == line)
}

/// How many calls start with `prefix`.
#[allow(dead_code)]
pub fn count_calls(calls: &str, prefix: &str) -> usize {
    calls.lines().filter(|l| l.starts_with(prefix)).count()
}

/// Index of the first call starting with `prefix`.
#[allow(dead_code)]
pub fn position(calls: &str, prefix: &str) -> usize {
    calls
        .lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call `{prefix}`:\n{calls}"))
}

#[allow(dead_code)]
pub fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}
