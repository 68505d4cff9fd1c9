//! What users see, snapshotted: the plan of every example stack, a status table, what `down`
//! lists, the help texts; and how plan shows unchanged resources, how status reports a call the
//! endpoint does not support. Snapshots are normalised (ids, ARNs, the emulator's port), keeping each
//! value's width so that a table's alignment is part of what is checked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use regex::{Captures, Regex};

/// `text` with what varies from run to run replaced by `x`s of the same width: EC2 and EFS
/// ids, the random parts of ARNs and of RDS endpoints, the time in a final snapshot's name and
/// the emulator's port.
fn normalise(text: &str) -> String {
    let same_width = |caps: &Captures| {
        let prefix = caps.get(1).map_or("", |m| m.as_str());
        let random = caps.get(2).map_or("", |m| m.as_str());
        format!("{prefix}{}", "x".repeat(random.chars().count()))
    };
    let patterns = [
        // i-0123…, sg-…, subnet-…, fs-…, fsmt-…, ami-…, lt-…, eipalloc-…, vol-…
        r"\b((?:i|sg|subnet|vpc|fs|fsmt|ami|lt|eipalloc|eipassoc|vol|eni|igw|rtb)-)([0-9a-f]{8,17})\b",
        // The hex id that ends an ELB ARN part (target group, load balancer, listener).
        r"(:(?:targetgroup|loadbalancer/app|listener/app)/[a-z0-9-]+/(?:[0-9a-f]{16}/)?)([0-9a-f]{16})",
        r"(/app/[a-z0-9-]+/)([0-9a-f]{16})",
        // A UUID (scaling policies).
        r"()([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
        // An RDS endpoint's random part.
        r"(\.cluster-(?:ro-)?)([a-z0-9]{12})\b",
        // The emulator's port.
        r"(127\.0\.0\.1:)([0-9]+)",
        // The time in the name of a final Aurora snapshot.
        r"(-final-)([0-9]{10})\b",
    ];
    let mut out = text.to_string();
    for p in patterns {
        let re = Regex::new(p).expect("a valid pattern");
        out = re.replace_all(&out, same_width).into_owned();
    }
    out
}

/// stdout and stderr of a finished command, normalised, with its exit code.
fn shown(r: &Run) -> String {
    normalise(&format!(
        "exit code: {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    ))
}

/// The example stacks (stacks/*.yaml), by file stem.
fn examples() -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("stacks"))
        .expect("stacks/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            (stem, p)
        })
        .collect();
    files.sort();
    files
}

fn iac_run(emu: &Emulator, args: &[&str], file: &Path) -> Run {
    let mut c = emu.iac();
    c.args(args).arg(file);
    run(c)
}

#[test]
fn normalising_keeps_widths_and_the_words_around() {
    let text = "  sg-0123456789abcdef0  i-0123456789abcdef0 ami-785db401 http://127.0.0.1:24117 \
        arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/b-alb/9f27e983893a4ae2/7ac7c3d76009157d";
    let n = normalise(text);
    assert_eq!(n.len(), text.len());
    assert_eq!(
        n,
        "  sg-xxxxxxxxxxxxxxxxx  i-xxxxxxxxxxxxxxxxx ami-xxxxxxxx http://127.0.0.1:xxxxx \
        arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/b-alb/xxxxxxxxxxxxxxxx/xxxxxxxxxxxxxxxx"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_of_every_example_stack_against_a_fresh_account() {
    let emu = Emulator::start();
    let stacks = examples();
    assert!(stacks.len() >= 6, "{stacks:?}");
    for (stem, path) in &stacks {
        // plan makes no mutating call, so every stack sees the account as it was seeded.
        let r = iac_run(&emu, &["plan"], path);
        insta::assert_snapshot!(format!("plan-{stem}"), shown(&r));
    }
    let vm = root().join("stacks/bookstore-vm.yaml");
    let r = iac_run(&emu, &["-o", "markdown", "plan"], &vm);
    insta::assert_snapshot!("plan-markdown-bookstore-vm", shown(&r));
}

/// What a call the endpoint does not implement looks like: the emulator answers
/// DescribeInstanceRefreshes with a bare HTTP 500 (an HTML page). `status` says the endpoint
/// lacks the call and which answer showed it, on one line, and goes on; no SDK Debug dump
/// anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn status_after_up_and_a_call_the_endpoint_does_not_support() {
    let emu = Emulator::start();
    let file = root().join("stacks/bookstore-asg.yaml");
    let up = iac_run(&emu, &["up", "--yes"], &file);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);

    let r = iac_run(&emu, &["status"], &file);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let refresh: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("Instance refresh:"))
        .collect();
    assert_eq!(
        refresh,
        vec!["Instance refresh: not implemented by the endpoint (autoscaling:DescribeInstanceRefreshes failed: HTTP 500 without an error message)"],
        "{}",
        r.stdout
    );
    for text in [&r.stdout, &r.stderr] {
        for dump in [
            "ServiceError",
            "SdkError",
            "ErrorMetadata",
            "raw: Response",
            "source:",
            "<html",
            "Internal Server Error",
        ] {
            assert!(!text.contains(dump), "`{dump}` in:\n{text}");
        }
    }
    // The group's instances cost money too: priced by their type, on one line.
    assert!(
        r.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("asg (instances)")
                && l.contains("2 x instance t3.micro")),
        "{}",
        r.stdout
    );
    insta::assert_snapshot!("status-bookstore-asg", shown(&r));

    // The same with -o json: the failure is a field of the group's record, one line.
    let json = iac_run(&emu, &["-o", "json", "status"], &file);
    assert_eq!(
        json.record("group_status")["refresh_error"],
        "autoscaling:DescribeInstanceRefreshes failed: HTTP 500 without an error message"
    );
}

/// `plan` lists changes and counts unchanged resources; `--show-unchanged` lists them too;
/// `-o json` holds every resource; Markdown shows the same rows as text.
#[tokio::test(flavor = "multi_thread")]
async fn plan_counts_unchanged_resources_and_lists_them_on_request() {
    let emu = Emulator::start();
    let file = StackFile::example("vm-shown", &[]);
    let up = iac_run(&emu, &["up", "--yes"], file.path());
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    file.rewrite(&[("ssh_from: 203.0.113.0/24", "ssh_from: 198.51.100.0/24")]);

    // The resource rows of a text plan (a reason is indented deeper than any row), as
    // "symbol kind id" ("kind id (aws id)" for an unchanged one).
    let changed = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("  ") && l.len() - l.trim_start().len() < 8)
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let plain = iac_run(&emu, &["plan"], file.path());
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let plan_part = plain
        .stdout
        .split("Estimated monthly cost")
        .next()
        .unwrap_or_default();
    assert_eq!(
        changed(plan_part),
        vec!["~ security-group web-sg"],
        "{plan_part}"
    );
    assert!(
        plan_part.contains(
            "0 to create, 1 to update, 0 to replace, 0 to delete, 7 unchanged (`--show-unchanged` lists them)."
        ),
        "{plan_part}"
    );

    let all = iac_run(&emu, &["plan", "--show-unchanged"], file.path());
    let plan_part = all
        .stdout
        .split("Estimated monthly cost")
        .next()
        .unwrap_or_default();
    let rows = changed(plan_part);
    assert_eq!(rows.len(), 8, "{plan_part}");
    assert!(rows.contains(&"~ security-group web-sg".to_string()));
    assert!(
        rows.iter().any(|r| r.starts_with("instance vm (i-")),
        "{rows:?}"
    );
    assert!(
        plan_part.contains("7 unchanged.") && !plan_part.contains("--show-unchanged"),
        "{plan_part}"
    );

    let json = iac_run(&emu, &["-o", "json", "plan"], file.path());
    let changes = json.record("plan")["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(changes.len(), 8, "{changes:?}");
    assert_eq!(
        changes
            .iter()
            .filter(|c| c["action"]["action"] == "keep")
            .count(),
        7,
        "{changes:?}"
    );

    let md = iac_run(&emu, &["-o", "markdown", "plan"], file.path());
    let rows: Vec<&str> = md
        .stdout
        .lines()
        .take_while(|l| !l.starts_with("####"))
        .filter(|l| l.starts_with("| `"))
        .collect();
    assert_eq!(rows.len(), 1, "{}", md.stdout);
    assert!(
        rows[0].starts_with("| `~` | security-group | `web-sg` |"),
        "{}",
        rows[0]
    );
    assert!(md
        .stdout
        .contains("7 unchanged (`--show-unchanged` lists them)."));
    let md_all = iac_run(
        &emu,
        &["-o", "markdown", "plan", "--show-unchanged"],
        file.path(),
    );
    let rows = md_all
        .stdout
        .lines()
        .take_while(|l| !l.starts_with("####"))
        .filter(|l| l.starts_with("| `"))
        .count();
    assert_eq!(rows, 8, "{}", md_all.stdout);
}

/// The help texts, at a fixed width (clap wraps to the terminal's, or to `COLUMNS`).
#[test]
fn help_texts() {
    for (name, args) in [
        ("help-iac", vec!["--help"]),
        ("help-up", vec!["up", "--help"]),
    ] {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("iac"));
        c.args(&args)
            .env("COLUMNS", "100")
            .env("LINES", "50")
            .env_remove("IAC_REGION")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("CLICOLOR_FORCE");
        let r = run(c);
        assert_eq!(r.code, 0, "{}", r.stderr);
        insta::assert_snapshot!(name, r.stdout);
    }
}

/// A closed pipe (`iac … | head -0`) ends the commands that talk to AWS successfully too,
/// without a panic or a "Broken pipe" error, and without leaving the stack's lock behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_is_success_for_the_commands_that_talk_to_aws() {
    let emu = Emulator::start();
    let file = StackFile::example("pipe-vm", &[]);
    for args in [
        vec!["-o", "json", "up", "--yes"],
        vec!["up", "--yes"],
        vec!["plan"],
        vec!["-o", "json", "plan"],
        vec!["status"],
        vec!["logs"],
    ] {
        let mut c = emu.iac();
        c.args(&args).arg(file.path());
        assert_closed_pipe_is_success(c);
    }
    assert!(
        emu.ssm()
            .await
            .get_parameter()
            .name("/iac/pipe-vm/lock")
            .send()
            .await
            .is_err(),
        "the lock was left behind"
    );
}

/// `down` lists what it deletes by kind, then by id (the same on every run, whatever order AWS
/// answered in), names each AWS id once in its progress lines, and says what data it kept.
#[tokio::test(flavor = "multi_thread")]
async fn down_lists_what_it_deletes_in_a_stable_order() {
    let emu = Emulator::start();
    let file = StackFile::from_example("stacks/bookstore-asg.yaml", "bookstore-asg", &[]);
    let up = iac_run(&emu, &["up", "--yes", "--no-wait"], file.path());
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    let d = iac_run(&emu, &["down", "--yes"], file.path());
    let done: Vec<&str> = d
        .stderr
        .lines()
        .filter(|l| l.contains(": delete done"))
        .collect();
    assert!(done.len() > 10, "{}", d.stderr);
    for l in done {
        assert!(!l.contains("delete done:"), "the AWS id twice: {l}");
    }
    let listed = d
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("- "));
    let keys: Vec<(String, String)> = listed
        .map(|l| {
            let mut w = l.split_whitespace().skip(1);
            (w.next().unwrap_or("").into(), w.next().unwrap_or("").into())
        })
        .collect();
    let ids_in_kind_order = keys
        .windows(2)
        .all(|w| w[0].0 != w[1].0 || w[0].1 <= w[1].1);
    assert!(ids_in_kind_order, "{}", d.stdout);
    insta::assert_snapshot!(
        "down-bookstore-asg",
        normalise(&format!("exit code: {}\n--- stdout\n{}", d.code, d.stdout))
    );
}
