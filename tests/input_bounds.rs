//! Bounded input and output: a stack file larger than 1 MiB or nested deeper than 64 levels is
//! refused with exit 2 and a position (without reading the rest, and without the YAML
//! scanner's quadratic cost), and a closed pipe ends every printing command successfully.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with no way to reach AWS: these commands make no call, and could not.
fn iac() -> Command {
    let mut cmd = Command::cargo_bin("iac").expect("the iac binary is built");
    cmd.current_dir(root())
        .env_remove("IAC_LOG")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .env("CI", "true");
    cmd
}

/// `iac validate FILE`: (exit code, stderr).
fn validate(file: &Path) -> (Option<i32>, String) {
    let out = iac()
        .args(["validate"])
        .arg(file)
        .output()
        .expect("iac runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const HEAD: &str = "name: big\ntier: single-vm\napp:\n  image: nginx:1.27\n";

#[test]
fn a_file_over_one_mebibyte_is_refused_at_the_byte_that_crosses_the_bound() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    // Comment lines of 64 bytes: byte 1 MiB starts line 16385 (after the 4-line head, minus
    // what the head takes).
    let line = format!("#{}\n", "x".repeat(62));
    let mut text = HEAD.to_string();
    while text.len() <= 1024 * 1024 {
        text.push_str(&line);
    }
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, &text).expect("write");
    let (code, stderr) = validate(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("larger than 1024 KiB"), "{stderr}");
    let before = &text[..1024 * 1024];
    let want_line = before.matches('\n').count() + 1;
    let want_col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    assert!(
        stderr.contains(&format!("big.yaml:{want_line}:{want_col}:")),
        "want {want_line}:{want_col}\n{stderr}"
    );
    assert!(stderr.contains("nothing was sent to AWS"), "{stderr}");

    // 40 MB: refused the same way (only the first MiB is ever read).
    let huge = dir.path().join("huge.yaml");
    let chunk = line.repeat(16 * 1024);
    let mut f = std::fs::File::create(&huge).expect("create");
    use std::io::Write;
    f.write_all(HEAD.as_bytes()).expect("write");
    for _ in 0..40 {
        f.write_all(chunk.as_bytes()).expect("write");
    }
    drop(f);
    let (code, stderr) = validate(&huge);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("larger than 1024 KiB"), "{stderr}");
}

#[test]
fn a_file_at_the_size_bound_is_read() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let mut text = HEAD.to_string();
    let line = format!("#{}\n", "x".repeat(62));
    while text.len() + line.len() <= 1024 * 1024 {
        text.push_str(&line);
    }
    let file = dir.path().join("ok.yaml");
    std::fs::write(&file, &text).expect("write");
    let (code, stderr) = validate(&file);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn deep_flow_nesting_is_refused_at_the_first_bracket_too_deep() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    // 400 KB of brackets: the scanner alone would never finish; refused at bracket 65.
    for n in [65usize, 400 * 1024] {
        let text = format!("{HEAD}tags: {}\n", "[".repeat(n));
        let file = dir.path().join(format!("deep-{n}.yaml"));
        std::fs::write(&file, &text).expect("write");
        let (code, stderr) = validate(&file);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("nests deeper than 64 levels"), "{stderr}");
        // `tags: ` is 6 characters: the 65th bracket is at column 6 + 65.
        assert!(stderr.contains(&format!("deep-{n}.yaml:5:71:")), "{stderr}");
    }
}

#[test]
fn deep_block_nesting_is_refused_with_its_line() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let mut text = format!("{HEAD}tags:\n");
    for level in 1..=200 {
        text.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
    }
    text.push_str(&format!("{}x: 1\n", " ".repeat(201)));
    let file = dir.path().join("deep-block.yaml");
    std::fs::write(&file, &text).expect("write");
    let (code, stderr) = validate(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nests deeper than 64 levels"), "{stderr}");
    // The top mapping is level 1, `tags` level 2, `k1` level 3: level 65 is `k63`'s value,
    // which starts on line 5 + 63 or 64 depending on where the parser marks it.
    let line: usize = stderr
        .split("deep-block.yaml:")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no position\n{stderr}"));
    assert!((66..=70).contains(&line), "line {line}\n{stderr}");
}

#[test]
fn a_closed_pipe_is_success_for_every_printing_command() {
    for args in [
        vec!["schema"],
        vec!["render", "stacks/bookstore-vm.yaml"],
        vec!["render", "stacks/bookstore-swarm.yaml", "--files"],
        vec!["-o", "json", "render", "stacks/bookstore-lb-vms.yaml"],
        vec!["validate", "stacks/bookstore-vm.yaml"],
        vec![
            "scale",
            "simulate",
            "stacks/custom-scaler.yaml",
            "--trace",
            "bench/traces/spike.csv",
        ],
    ] {
        let mut c = iac();
        c.args(&args);
        common::assert_closed_pipe_is_success(c);
    }
}
