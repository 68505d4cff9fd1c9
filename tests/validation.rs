//! Stack-file validation through the real binary: every malformed fixture is refused with exit 2
//! and a positioned error, before any request leaves the machine; valid stacks pass.
//!
//! Each file in `tests/fixtures/invalid/` starts with comment lines that say what must be
//! reported, so the expected position lives next to the input:
//!
//! ```text
//! # expect: LINE:COL YAML.PATH TEXT   one error block: `error: FILE:LINE:COL: YAML.PATH: ...TEXT...`
//! # expect: LINE:COL - TEXT           a document-level error (no path): `error: FILE:LINE:COL: TEXT...`
//! # expect: unreadable TEXT           the file cannot be read at all: `error: cannot read stack file ...`
//! # stderr: TEXT                      stderr must contain TEXT (a hint, a did-you-mean)
//! # not-in-output: TEXT               neither stdout nor stderr may contain TEXT (a secret value)
//! ```
//!
//! The number of `# expect:` lines is also the number of errors the file must produce.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::Command;

const EXAMPLE: &str = "stacks/bookstore-vm.yaml";
const INVALID_DIR: &str = "tests/fixtures/invalid";
const VALID_DIR: &str = "tests/fixtures/valid";
const NOTHING_SENT: &str = "nothing was sent to AWS";

// ---------------------------------------------------------------------------------------------
// Running the binary

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `iac` binary, run from the crate root with a hermetic AWS environment: dummy static
/// credentials, no profile or config file of the machine, no instance metadata, one attempt per
/// request. Even a test that goes wrong cannot reach a real account.
fn iac() -> Command {
    let mut cmd = Command::cargo_bin("iac").expect("the iac binary is built");
    cmd.current_dir(root());
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "IAC_REGION",
        "IAC_LOG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_RETRY_MODE", "standard")
        .env("AWS_CONFIG_FILE", "/nonexistent/iac-validation-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/iac-validation-test/credentials",
        )
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .timeout(Duration::from_secs(120));
    cmd
}

/// What one run of the binary did.
struct Run {
    /// The command line, for messages.
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "`iac {}` exited with {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

fn run(args: &[&str]) -> Run {
    let out = iac().args(args).output().expect("iac runs");
    Run {
        args: args.join(" "),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `.yaml` files of a fixture folder, as paths relative to the crate root, sorted.
fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .map(|p| {
            format!(
                "{dir}/{}",
                p.file_name().expect("file name").to_string_lossy()
            )
        })
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// Fixture directives

#[derive(Debug)]
enum Expect {
    /// An error block at a position; `path` is `None` for document-level errors.
    At {
        line: usize,
        column: usize,
        path: Option<String>,
        text: String,
    },
    /// The file cannot be read as text.
    Unreadable { text: String },
}

#[derive(Debug)]
struct Fixture {
    file: String,
    expects: Vec<Expect>,
    stderr_has: Vec<String>,
    never_printed: Vec<String>,
}

/// Reads the directives from the leading comment block of a fixture.
fn fixture(file: &str) -> Fixture {
    let bytes =
        std::fs::read(root().join(file)).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
    let text = String::from_utf8_lossy(&bytes);
    let mut fx = Fixture {
        file: file.to_string(),
        expects: Vec::new(),
        stderr_has: Vec::new(),
        never_printed: Vec::new(),
    };
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(rest) = line.strip_prefix("# expect:") {
            fx.expects.push(parse_expect(file, rest.trim()));
        } else if let Some(rest) = line.strip_prefix("# stderr:") {
            fx.stderr_has.push(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("# not-in-output:") {
            fx.never_printed.push(rest.trim().to_string());
        }
    }
    assert!(
        !fx.expects.is_empty(),
        "{file}: no `# expect:` line at the top of the file"
    );
    fx
}

fn parse_expect(file: &str, spec: &str) -> Expect {
    let bad = || -> ! { panic!("{file}: malformed directive `# expect: {spec}`") };
    let (first, rest) = spec.split_once(' ').unwrap_or_else(|| bad());
    if first == "unreadable" {
        return Expect::Unreadable {
            text: rest.trim().to_string(),
        };
    }
    let (line, column) = first.split_once(':').unwrap_or_else(|| bad());
    let (path, text) = rest.trim().split_once(' ').unwrap_or_else(|| bad());
    Expect::At {
        line: line.parse().unwrap_or_else(|_| bad()),
        column: column.parse().unwrap_or_else(|_| bad()),
        path: (path != "-").then(|| path.to_string()),
        text: text.trim().to_string(),
    }
}

/// Everything wrong with how `run` refused `fx` (empty when it did exactly what the fixture says).
fn rejection_problems(fx: &Fixture, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |what: String| problems.push(format!("{}: {what}", run.args));
    if run.code != Some(2) {
        problem(format!(
            "exit code {:?}, expected 2 (invalid input)",
            run.code
        ));
    }
    if !run.stdout.trim().is_empty() {
        problem("printed on stdout; a refused stack prints only errors, on stderr".to_string());
    }
    let lines: Vec<&str> = run.stderr.lines().collect();
    let mut positioned = 0;
    for expect in &fx.expects {
        match expect {
            Expect::At {
                line,
                column,
                path,
                text,
            } => {
                positioned += 1;
                let location = format!("{}:{line}:{column}: ", fx.file);
                let head = match path {
                    Some(p) => format!("{location}{p}: "),
                    None => location.clone(),
                };
                // The block may carry the `error: ` prefix or not; that is checked separately so
                // each failure says exactly what is off.
                let found = lines.iter().find(|l| {
                    let l = l.strip_prefix("error: ").unwrap_or(l);
                    match path {
                        Some(_) => l.starts_with(&head) && l[head.len()..].contains(text.as_str()),
                        None => l.starts_with(&format!("{head}{text}")),
                    }
                });
                match found {
                    None if !run.stderr.contains(&location) => {
                        problem(format!("no error at `{location}` (expected `{head}...{text}...`)"))
                    }
                    None => problem(format!(
                        "an error is at `{location}` but not `{head}` with the message containing `{text}`{}",
                        if path.is_none() { " (document-level: no YAML path, message starts with it)" } else { "" }
                    )),
                    Some(l) if !l.starts_with("error: ") => {
                        problem(format!("the error block `{l}` does not start with `error: `"))
                    }
                    Some(_) => {}
                }
            }
            Expect::Unreadable { text } => {
                let head = format!("error: cannot read stack file {}: ", fx.file);
                match lines.iter().find(|l| l.starts_with(&head)) {
                    None => problem(format!("no line starting with `{head}`")),
                    Some(l) if l.matches(text.as_str()).count() != 1 => problem(format!(
                        "`{text}` should appear exactly once in `{l}` (the cause is printed more than once?)"
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    if positioned > 0 {
        let summary = format!(
            "{positioned} error{} in the stack file; {NOTHING_SENT}",
            if positioned == 1 { "" } else { "s" }
        );
        if !lines.contains(&summary.as_str()) {
            problem(format!(
                "no summary line `{summary}` (one error per `# expect:` line)"
            ));
        }
    }
    for text in &fx.stderr_has {
        if !run.stderr.contains(text.as_str()) {
            problem(format!("stderr does not contain `{text}`"));
        }
    }
    for text in &fx.never_printed {
        if run.stderr.contains(text.as_str()) || run.stdout.contains(text.as_str()) {
            problem(format!(
                "the output echoes `{text}`, which must never be printed"
            ));
        }
    }
    if !problems.is_empty() {
        problems.push(run.describe());
    }
    problems
}

fn invalid_fixtures() -> Vec<Fixture> {
    let files = yaml_files(INVALID_DIR);
    assert!(
        files.len() >= 14,
        "expected at least 14 invalid fixtures, found {}",
        files.len()
    );
    files.iter().map(|f| fixture(f)).collect()
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Invalid stacks

#[test]
fn validate_rejects_every_invalid_fixture_at_the_expected_position() {
    let mut problems = Vec::new();
    for fx in invalid_fixtures() {
        problems.extend(rejection_problems(&fx, &run(&["validate", &fx.file])));
    }
    assert_no_problems(problems);
}

/// Accepts connections, counts them and closes each at once (so an SDK request fails fast).
fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (endpoint, count)
}

/// `plan` and `up` load the file the same way: same refusal, same diagnostics.
#[test]
fn plan_and_up_reject_every_invalid_fixture() {
    let (endpoint, _) = counting_listener();
    let mut problems = Vec::new();
    for fx in invalid_fixtures() {
        for args in [
            vec!["plan", &fx.file, "--endpoint-url", &endpoint],
            vec!["up", &fx.file, "--yes", "--endpoint-url", &endpoint],
        ] {
            problems.extend(rejection_problems(&fx, &run(&args)));
        }
    }
    assert_no_problems(problems);
}

#[test]
fn no_aws_call_before_the_stack_is_valid() {
    let (endpoint, connections) = counting_listener();
    let mut wrong_exit = Vec::new();
    for fx in invalid_fixtures() {
        for args in [
            vec!["plan", &fx.file, "--endpoint-url", &endpoint],
            vec!["up", &fx.file, "--yes", "--endpoint-url", &endpoint],
        ] {
            let r = run(&args);
            if r.code != Some(2) {
                wrong_exit.push(r.describe());
            }
        }
    }
    // A connection already in the kernel's backlog is counted once the thread accepts it.
    std::thread::sleep(Duration::from_millis(500));
    let early = connections.load(Ordering::SeqCst);
    assert_eq!(
        early, 0,
        "invalid stacks opened {early} connection(s) to the AWS endpoint before being refused"
    );
    assert!(
        wrong_exit.is_empty(),
        "expected exit 2:\n{}",
        wrong_exit.join("\n")
    );

    // Control: a valid stack does reach the endpoint, so the count above is zero only because
    // nothing was sent. The listener closes every connection unanswered: the plan fails (exit 1).
    let control = run(&["plan", EXAMPLE, "--endpoint-url", &endpoint]);
    assert_eq!(
        control.code,
        Some(1),
        "the control plan should fail against an endpoint that never answers\n{}",
        control.describe()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        connections.load(Ordering::SeqCst) >= 1,
        "the control plan of a valid stack never connected to {endpoint}: the zero count above proves nothing\n{}",
        control.describe()
    );
}

#[test]
fn unknown_key_suggests_the_key_it_resembles() {
    let file = format!("{INVALID_DIR}/unknown-key-typo.yaml");
    let r = run(&["validate", &file]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("app.imgae: unknown key `imgae`"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("help: did you mean `image`?"),
        "{}",
        r.describe()
    );
}

#[test]
fn unknown_tier_suggests_the_tier_it_resembles() {
    let file = format!("{INVALID_DIR}/unknown-tier.yaml");
    let r = run(&["validate", &file]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("tier: unknown value `single_vm`"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("help: did you mean `single-vm`?"),
        "{}",
        r.describe()
    );
}

#[test]
fn transposed_short_key_gets_a_suggestion() {
    // `vcp` for `vpc`: the most common typo (two swapped letters) in a three-letter key.
    let file = format!("{INVALID_DIR}/short-key-typo.yaml");
    let r = run(&["validate", &file]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("network.vcp: unknown key `vcp`"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("did you mean `vpc`?"), "{}", r.describe());
}

#[test]
fn access_key_is_reported_at_its_line_and_never_echoed() {
    let file = format!("{INVALID_DIR}/aws-access-key.yaml");
    let text = std::fs::read_to_string(root().join(&file)).expect("fixture reads");
    let (index, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| !l.starts_with('#') && l.contains("AKIA"))
        .expect("the fixture holds an access key id");
    let key = line.split_once(':').expect("a `KEY: value` line").1.trim();
    assert_eq!(key.len(), 20, "an access key id is 20 characters: {key}");
    let at = format!("{file}:{}:", index + 1);
    let key_body = &key[4..];
    let endpoint = "http://127.0.0.1:9"; // never reached: the file is refused first
    for args in [
        vec!["validate", file.as_str()],
        vec!["-o", "json", "validate", file.as_str()],
        vec!["plan", file.as_str(), "--endpoint-url", endpoint],
        vec!["up", file.as_str(), "--yes", "--endpoint-url", endpoint],
    ] {
        let r = run(&args);
        assert_eq!(r.code, Some(2), "{}", r.describe());
        assert!(
            r.stderr.contains(&at),
            "the error should point at line {} ({at})\n{}",
            index + 1,
            r.describe()
        );
        assert!(r.stderr.contains("AWS access key id"), "{}", r.describe());
        let out = format!("{}{}", r.stdout, r.stderr);
        assert!(
            !out.contains(key),
            "the access key id is echoed\n{}",
            r.describe()
        );
        assert!(
            !out.contains(key_body),
            "part of the access key id is echoed\n{}",
            r.describe()
        );
    }
}

#[test]
fn several_errors_are_reported_together() {
    let fx = fixture(&format!("{INVALID_DIR}/several-errors.yaml"));
    assert!(
        fx.expects.len() >= 3,
        "the fixture should hold at least 3 independent errors"
    );
    let r = run(&["validate", &fx.file]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    let blocks: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("{}:", fx.file)))
        .collect();
    assert_eq!(
        blocks.len(),
        fx.expects.len(),
        "one block per error\n{}",
        r.describe()
    );
    for block in &blocks {
        assert!(
            block.starts_with("error: "),
            "every error block starts with `error: `: `{block}`\n{}",
            r.describe()
        );
    }
    assert!(
        r.stderr.contains(&format!(
            "{} errors in the stack file; {NOTHING_SENT}",
            fx.expects.len()
        )),
        "{}",
        r.describe()
    );
}

#[test]
fn missing_stack_file_is_a_usage_error_reported_once() {
    let file = "tests/fixtures/invalid/no-such-stack.yaml";
    assert!(!root().join(file).exists());
    let r = run(&["validate", file]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr
            .starts_with(&format!("error: cannot read stack file {file}: ")),
        "{}",
        r.describe()
    );
    let cause = "No such file or directory";
    assert_eq!(
        r.stderr.matches(cause).count(),
        1,
        "the cause should be printed once\n{}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Valid stacks

#[test]
fn example_stack_is_valid() {
    let r = run(&["validate", EXAMPLE]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("valid single-vm stack `bookstore-vm`"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.trim().is_empty(), "{}", r.describe());
}

#[test]
fn custom_scaler_example_is_valid() {
    let r = run(&["validate", "stacks/custom-scaler.yaml"]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout
            .contains("valid custom-scaler stack `bookstore-scaler`"),
        "{}",
        r.describe()
    );
}

/// A local-fleet stack is valid (for `iac scale`) but has nothing to deploy: `plan` and `up`
/// refuse it as a usage error before any request.
#[test]
fn local_fleet_is_refused_by_plan_and_up_before_any_call() {
    let (endpoint, connections) = counting_listener();
    let file = format!("{VALID_DIR}/custom-scaler-local-fleet.yaml");
    for args in [
        vec!["plan", file.as_str(), "--endpoint-url", &endpoint],
        vec!["up", file.as_str(), "--yes", "--endpoint-url", &endpoint],
    ] {
        let r = run(&args);
        assert_eq!(r.code, Some(2), "{}", r.describe());
        assert!(
            r.stderr.contains("iac scale --custom-monitor"),
            "{}",
            r.describe()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// Every policy problem of a `scaler` section is reported at once, each at its own key.
#[test]
fn scaler_policy_errors_are_reported_together() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join("pool.yaml");
    let sha = "ab".repeat(32);
    let yaml = [
        "name: pool",
        "tier: custom-scaler",
        "app:",
        "  image: nginx:1",
        "instance:",
        "  instance_profile: LabInstanceProfile",
        "scaler:",
        "  min: 9",
        "  max: 3",
        "  high: 10",
        "  low: 20",
        "  heartbeat_ms: 20",
        "  monitor:",
        "    address: 0.0.0.0:7700",
        "  agent:",
        &format!("    binary: {{ url: https://example.org/a, sha256: {sha} }}"),
        "",
    ]
    .join("\n");
    std::fs::write(&file, yaml).expect("write the stack");
    let path = file.to_string_lossy().into_owned();
    let r = run(&["validate", &path]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    for (at, what) in [
        ("8:8", "scaler.min"),
        ("11:8", "scaler.low"),
        ("12:17", "scaler.heartbeat_ms"),
        ("14:14", "scaler.monitor.address"),
    ] {
        let head = format!("error: {path}:{at}: {what}: ");
        assert!(r.stderr.contains(&head), "no `{head}`\n{}", r.describe());
    }
    assert!(
        r.stderr
            .contains("4 errors in the stack file; nothing was sent to AWS"),
        "{}",
        r.describe()
    );
}

#[test]
fn every_valid_fixture_is_valid() {
    let files = yaml_files(VALID_DIR);
    assert!(
        files.len() >= 3,
        "expected at least 3 valid fixtures, found {}",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .map(|f| run(&["validate", f]))
        .filter(|r| r.code != Some(0) || !r.stdout.contains(": valid "))
        .map(|r| r.describe())
        .collect();
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

#[test]
fn json_validate_prints_one_valid_event() {
    let r = run(&["-o", "json", "validate", EXAMPLE]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let lines: Vec<&str> = r.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON object on stdout\n{}",
        r.describe()
    );
    let event: serde_json::Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", r.describe()));
    assert!(event.is_object(), "{}", r.describe());
    assert_eq!(event["event"], "valid", "{}", r.describe());
    assert_eq!(event["stack"], "bookstore-vm", "{}", r.describe());
    assert_eq!(event["tier"], "single-vm", "{}", r.describe());
}

#[test]
fn schema_is_json_describing_the_stack_file() {
    let r = run(&["schema"]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let schema: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", r.describe()));
    let properties = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no `properties`\n{}", r.describe()));
    for key in [
        "app", "name", "tier", "network", "instance", "domain", "database",
    ] {
        assert!(
            properties.contains_key(key),
            "`properties` lacks `{key}`\n{}",
            r.describe()
        );
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for key in ["name", "tier", "app"] {
        assert!(
            required.contains(&key),
            "`{key}` should be required\n{}",
            r.describe()
        );
    }
}
