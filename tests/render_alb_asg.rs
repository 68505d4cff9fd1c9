//! Checks the alb-asg boot script with the real tools: shellcheck, and runs against a fake root
//! with stub commands (tests/stubs/): the EFS mount retried until the mount target answers (and
//! given up on, loudly, after the bound), /etc/fstab written once, the database secret landing
//! in the env file only, the container started from that env file with the file system mounted.
//!
//! A missing tool fails the test loudly instead of skipping it: a skipped check looks exactly
//! like a passing one in CI output.

mod render_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use iac::render::alb_asg::{
    mount_path, param_name, web, DB_ENDPOINT_PARAM, DB_SECRET_PARAM, DOCKER_DROP_IN, EFS_ID_PARAM,
};
use iac::render::USER_DATA_LIMIT;
use iac::stack::Stack;
use render_common::{count_calls, last_line, shellcheck, tool, Sandbox, Setup};

const EFS_ID: &str = "fs-0123456789abcdef0";
const DB_ENDPOINT: &str = "shop.cluster-c1a2b3.us-east-1.rds.amazonaws.com";
const DB_SECRET_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-1a2b3c4d-AbCdEf";
/// The secret RDS manages, as `get-secret-value --query SecretString --output text` prints it.
const DB_SECRET: &str = r#"{"username":"admin","password":"p@ss w0rd!"}"#;
const DB_PASSWORD: &str = "p@ss w0rd!";
const DB_PASSWORD_URLENC: &str = "p%40ss%20w0rd%21";
/// The same from jq before 1.7, whose `@uri` leaves `!*'()` as they are (equally valid in the
/// userinfo of a URL).
const DB_PASSWORD_URLENC_OLD_JQ: &str = "p%40ss%20w0rd!";
const APP_SECRET: &str = "app-s3cr3t-value";
const APP_ENV: &str = "/etc/iac/app.env";
const APP_SECRETS: &str = "/etc/iac/app.secrets";
const FINISHED: &str = "iac bootstrap finished";

// ---------------------------------------------------------------------------------------------
// Stacks

/// Variants of the test stack.
#[derive(Clone, Copy)]
struct Opts {
    /// `region: us-east-1` in the file (else the instance asks IMDS).
    region: bool,
    /// Plain settings and an SSM secret for the app.
    settings: bool,
    /// `shared_storage.mount_path`, when given.
    mount: Option<&'static str>,
}

const FULL: Opts = Opts {
    region: true,
    settings: true,
    mount: None,
};

fn shop_yaml(o: Opts) -> String {
    let mut yaml = String::from("version: 1\nname: shop\n");
    if o.region {
        yaml.push_str("region: us-east-1\n");
    }
    yaml.push_str(
        r#"tier: alb-asg
app:
  image: ghcr.io/example/shop:2.0
  port: 8080
  health_path: /health?deep=1&x=$y
"#,
    );
    if o.settings {
        yaml.push_str(
            r#"  environment:
    GREETING: "it's \"quoted\" $HOME `id` & ${MORE} # not a comment"
    EMPTY: ""
  secrets:
    SECRET_KEY: { ssm: /shop/secret-key }
"#,
        );
    }
    yaml.push_str(
        r#"network:
  vpc: default
instance:
  image: amazon-linux-2023
  instance_profile: LabInstanceProfile
database:
  engine: aurora-mysql
  version: 8.0.mysql_aurora.3.05.2
  name: shop
  user: shopadmin
  url_env: SQLALCHEMY_DATABASE_URI
"#,
    );
    if let Some(m) = o.mount {
        yaml.push_str(&format!("shared_storage:\n  mount_path: {m}\n"));
    }
    yaml
}

/// Loads the stack through the real loader, so the variants are validated too.
fn shop(o: Opts) -> Stack {
    let yaml = shop_yaml(o);
    match iac::stack::parse(Path::new("shop.yaml"), &yaml) {
        Ok(stack) => stack,
        Err(e) => panic!("test stack does not load: {e}\n{yaml}"),
    }
}

/// The example stack shipped in stacks/.
fn example() -> Stack {
    render_common::example("stacks/bookstore-asg.yaml")
}

fn variants() -> Vec<(String, Stack)> {
    let mut out = vec![("example".to_string(), example())];
    for region in [false, true] {
        for settings in [false, true] {
            for mount in [None, Some("/srv/shop-media")] {
                let o = Opts {
                    region,
                    settings,
                    mount,
                };
                out.push((
                    format!("r{region}-s{settings}-m{}", mount.is_some()),
                    shop(o),
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tools

/// The system's python3 (a version manager's shim on PATH needs its own environment, which the
/// sandbox clears).
fn python3() -> PathBuf {
    let system = PathBuf::from("/usr/bin/python3");
    if system.is_file() {
        system
    } else {
        tool("python3", "python3")
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The rendered script

#[test]
fn script_passes_shellcheck_in_every_variant() {
    for (name, stack) in variants() {
        shellcheck(
            "bash",
            &format!("alb-web-{name}.sh"),
            &web(&stack).unwrap().script,
        );
    }
}

#[test]
fn script_fits_in_user_data() {
    for (name, stack) in variants() {
        let ud = web(&stack).unwrap();
        let len = ud.script.len();
        eprintln!("{name}: {len} bytes");
        assert!(len < USER_DATA_LIMIT, "{name}: {len} bytes");
        assert_eq!(ud.payload().unwrap(), ud.script.as_bytes());
    }
}

#[test]
fn rendered_output_holds_parameter_names_only() {
    let stack = shop(FULL);
    let ud = web(&stack).unwrap();
    for leaf in [EFS_ID_PARAM, DB_ENDPOINT_PARAM, DB_SECRET_PARAM] {
        let name = param_name("shop", leaf);
        assert!(ud.script.contains(&name), "{name} missing");
    }
    assert!(ud
        .script
        .contains("add_secret SECRET_KEY /shop/secret-key\n"));
    for value in [
        DB_PASSWORD,
        DB_PASSWORD_URLENC,
        APP_SECRET,
        EFS_ID,
        DB_ENDPOINT,
        "arn:aws:secretsmanager:us",
    ] {
        assert!(!ud.script.contains(value), "{value} in the script");
        for f in &ud.files {
            assert!(!f.content.contains(value), "{value} in {}", f.path);
        }
    }
    // Values reach the container through the env file only.
    assert!(ud.script.contains("--env-file \"$APP_ENV\""));
    assert!(!ud.script.contains(" -e "));
    assert!(ud.script.starts_with("#!/bin/bash\n"));
    assert_eq!(mount_path(&stack), "/mnt/shared");
    let drop_in = ud.files.iter().find(|f| f.path == DOCKER_DROP_IN).unwrap();
    assert!(drop_in
        .content
        .contains("[Unit]\nRequiresMountsFor=/mnt/shared\n"));
}

// ---------------------------------------------------------------------------------------------
// 2. Stub runs

/// Host tools the script (and the stubs) may use; anything else is a stub or missing, so the
/// script can never touch the real system.
const HOST_TOOLS: &[&str] = &[
    "awk",
    "cat",
    "chmod",
    "cmp",
    "cp",
    "date",
    "grep",
    "head",
    "install",
    "ln",
    "mkdir",
    "mv",
    "od",
    "readlink",
    "rm",
    "sed",
    "sha256sum",
    "sleep",
    "tail",
    "tee",
    "touch",
    "tr",
];

/// Stubs left out unless a test wants them: the mount helpers (the packages install them) and
/// the other tiers' variants.
const NOT_PRESENT: &[&str] = &["mount.efs", "mount.nfs4", "swarm-aws", "swarm-docker"];

/// Puts `real` on the sandbox's PATH as `name`, recording its argv in the call log like a stub.
fn recording_wrapper(dir: &Path, name: &str, real: &Path) {
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "#!/bin/bash\n{{ printf '%s' {name}; printf ' %s' \"$@\"; printf '\\n'; }} >>\"$STUB_LOG\"\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Which JSON tool the sandbox offers the script.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Json {
    Python,
    Jq,
}

/// A fake root with an os-release of `os_id` (`ubuntu` or `amzn`), the three runtime
/// parameters and the app's SSM secret in place.
fn sandbox(stack: &Stack, os_id: &str, json: Json) -> Sandbox {
    let setup = Setup {
        os_id,
        host_tools: HOST_TOOLS,
        missing: NOT_PRESENT,
        env: &[
            ("IAC_HEALTH_WAIT_SECONDS", "1"),
            ("IAC_MOUNT_WAIT_SECONDS", "30"),
            ("STUB_SECRET_STRING", DB_SECRET),
        ],
        ..Setup::UBUNTU
    };
    let sb = Sandbox::new(&setup, &web(stack).expect("web renders").script);
    match json {
        Json::Python => recording_wrapper(&sb.host, "python3", &python3()),
        Json::Jq => recording_wrapper(&sb.host, "jq", &tool("jq", "jq")),
    }
    sb.param(&param_name("shop", EFS_ID_PARAM), EFS_ID);
    sb.param(&param_name("shop", DB_ENDPOINT_PARAM), DB_ENDPOINT);
    sb.param(&param_name("shop", DB_SECRET_PARAM), DB_SECRET_ARN);
    sb.param("/shop/secret-key", APP_SECRET);
    sb
}

/// Lines of /etc/fstab that mount `mount` (comments aside).
fn fstab_lines<'a>(fstab: &'a str, mount: &str) -> Vec<&'a str> {
    fstab
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| l.split_whitespace().nth(1) == Some(mount))
        .collect()
}

const EFS_LINE: &str = "fs-0123456789abcdef0:/ /mnt/shared efs _netdev,nofail,tls 0 0";
const NFS_LINE: &str = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com:/ /mnt/shared nfs4 \
     nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport,_netdev,nofail 0 0";

fn expected_run(sb: &Sandbox, mount: &str) -> String {
    format!(
        "docker run -d --restart unless-stopped --name app -p 8080:8080 --env-file {} \
         -v {}:/run/iac/entry:ro -v {}:/run/secrets/iac.env:ro --entrypoint /run/iac/entry \
         -v {}:{mount} --log-opt max-size=10m --log-opt max-file=3 ghcr.io/example/shop:2.0 \
         python3 /app/app.py",
        sb.full(APP_ENV).display(),
        sb.full("/etc/iac/app-entry").display(),
        sb.full(APP_SECRETS).display(),
        sb.full(mount).display()
    )
}

#[test]
fn amazon_linux_retries_the_mount_then_runs_the_app() {
    let sb = sandbox(&shop(FULL), "amzn", Json::Python);
    // An fstab with other entries, one for the mount point left by an older file system.
    fs::write(
        sb.full("/etc/fstab"),
        "UUID=abc / xfs defaults 0 0\n# /mnt/shared was here\nfs-0old:/ /mnt/shared efs _netdev 0 0\n",
    )
    .unwrap();
    sb.run_ok(&[("STUB_MOUNT_FAIL", "3")]);
    let calls = sb.calls();
    assert!(
        calls.contains("dnf -q -y install amazon-efs-utils"),
        "{calls}"
    );
    assert_eq!(
        count_calls(&calls, "mount "),
        4,
        "three failures, then success:\n{calls}"
    );
    let log = sb.log();
    assert!(
        log.contains("mounting fs-0123456789abcdef0 at /mnt/shared failed (attempt 3)"),
        "{log}"
    );
    assert!(log.contains("mount.nfs4: Connection timed out"), "{log}");
    let fstab = sb.read("/etc/fstab");
    assert_eq!(fstab_lines(&fstab, "/mnt/shared"), [EFS_LINE], "{fstab}");
    assert!(fstab.starts_with("UUID=abc / xfs defaults 0 0\n# /mnt/shared was here\n"));
    // The mount happened through fstab, after systemd re-read it.
    let reload = calls.find("systemctl daemon-reload").unwrap();
    let mount = calls
        .find(&format!("mount {}\n", sb.full("/mnt/shared").display()))
        .unwrap();
    assert!(reload < mount, "{calls}");
    assert!(sb.full("/mnt/shared").is_dir());
    // Docker waits for the file system after a reboot.
    assert!(sb
        .read(DOCKER_DROP_IN)
        .contains("RequiresMountsFor=/mnt/shared\n"));
    // The app: env file, container.
    assert_eq!(sb.mode(APP_ENV), 0o600);
    assert_eq!(sb.mode("/etc/iac"), 0o700);
    assert_eq!(
        sb.read(APP_ENV),
        "EMPTY=\nGREETING=it's \"quoted\" $HOME `id` & ${MORE} # not a comment\n"
    );
    assert_eq!(sb.mode(APP_SECRETS), 0o600);
    assert_eq!(
        sb.read(APP_SECRETS),
        format!(
            "SECRET_KEY={APP_SECRET}\n\
             SQLALCHEMY_DATABASE_URI=mysql+pymysql://admin:{DB_PASSWORD_URLENC}@{DB_ENDPOINT}:3306/shop\n"
        )
    );
    let runs: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("docker run "))
        .collect();
    assert_eq!(runs, [expected_run(&sb, "/mnt/shared")]);
    assert!(calls.contains(&format!(
        "aws secretsmanager get-secret-value --secret-id {DB_SECRET_ARN} --query SecretString --output text --region us-east-1"
    )));
    assert!(last_line(&sb.log()).contains(FINISHED), "{}", sb.log());

    // Re-run: fstab untouched, nothing mounted again, the container kept.
    sb.clear_calls();
    sb.run_ok(&[]);
    assert_eq!(sb.read("/etc/fstab"), fstab);
    let calls = sb.calls();
    assert_eq!(count_calls(&calls, "mount "), 0, "{calls}");
    assert_eq!(count_calls(&calls, "docker run"), 0, "{calls}");
    assert!(sb.log().contains("/mnt/shared is mounted already"));
    assert!(sb.log().contains("app container is up to date"));
    assert!(last_line(&sb.log()).contains(FINISHED));

    // After a reboot the mount is gone: mounted again from the same single fstab line.
    fs::remove_dir_all(sb.base.join("stub-state")).unwrap();
    sb.clear_calls();
    sb.run_ok(&[]);
    assert_eq!(sb.read("/etc/fstab"), fstab);
    assert_eq!(count_calls(&sb.calls(), "mount "), 1);
    assert_eq!(count_calls(&sb.calls(), "docker run"), 1);
}

#[test]
fn ubuntu_without_efs_utils_mounts_over_nfs() {
    // No region in the stack: the instance asks IMDS, and the NFS host name carries it.
    let stack = shop(Opts {
        region: false,
        settings: false,
        mount: None,
    });
    let sb = sandbox(&stack, "ubuntu", Json::Python);
    sb.run_ok(&[]);
    let calls = sb.calls();
    assert!(calls.contains("apt-cache show amazon-efs-utils"), "{calls}");
    assert!(
        calls.contains("install --no-install-recommends nfs-common"),
        "{calls}"
    );
    assert!(!calls.contains("install --no-install-recommends amazon-efs-utils"));
    assert!(calls.contains("/latest/meta-data/placement/region"));
    assert!(
        calls.contains("X-aws-ec2-metadata-token-ttl-seconds"),
        "IMDSv2"
    );
    assert_eq!(
        fstab_lines(&sb.read("/etc/fstab"), "/mnt/shared"),
        [NFS_LINE]
    );
    assert_eq!(sb.read(APP_ENV), "");
    assert_eq!(
        sb.read(APP_SECRETS),
        format!("SQLALCHEMY_DATABASE_URI=mysql+pymysql://admin:{DB_PASSWORD_URLENC}@{DB_ENDPOINT}:3306/shop\n")
    );
    assert!(last_line(&sb.log()).contains(FINISHED));
}

#[test]
fn example_boots_on_ubuntu() {
    let stack = example();
    let sb = sandbox(&stack, "ubuntu", Json::Python);
    sb.param("/bookstore/secret-key", APP_SECRET);
    for leaf in [EFS_ID_PARAM, DB_ENDPOINT_PARAM, DB_SECRET_PARAM] {
        let from = sb
            .ssm_dir
            .join(param_name("shop", leaf).trim_start_matches('/'));
        sb.param(
            &param_name("bookstore-asg", leaf),
            &fs::read_to_string(from).unwrap(),
        );
    }
    let first = sb.run_ok(&[]);
    assert_eq!(
        fstab_lines(&sb.read("/etc/fstab"), "/mnt/shared"),
        [NFS_LINE]
    );
    assert_eq!(sb.read(APP_ENV), "FLASK_ENV=production\n");
    assert_eq!(
        sb.read(APP_SECRETS),
        format!(
            "SECRET_KEY={APP_SECRET}\n\
             DATABASE_URL=mysql+pymysql://admin:{DB_PASSWORD_URLENC}@{DB_ENDPOINT}:3306/bookstore\n"
        )
    );
    let calls = sb.calls();
    let runs: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("docker run "))
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].contains(" -p 5000:5000 "));
    assert_secret_only_in_secrets_file(&sb, &[first], "FLASK_ENV=production");
    assert!(last_line(&sb.log()).contains(FINISHED));
}

#[test]
fn ubuntu_with_efs_utils_available_uses_it() {
    let stack = shop(Opts {
        region: true,
        settings: false,
        mount: Some("/srv/shop-media"),
    });
    let sb = sandbox(&stack, "ubuntu", Json::Python);
    sb.run_ok(&[("STUB_APT_KNOWN", "amazon-efs-utils")]);
    let calls = sb.calls();
    assert!(
        calls.contains("install --no-install-recommends amazon-efs-utils"),
        "{calls}"
    );
    assert!(!calls.contains("nfs-common"));
    assert_eq!(
        fstab_lines(&sb.read("/etc/fstab"), "/srv/shop-media"),
        ["fs-0123456789abcdef0:/ /srv/shop-media efs _netdev,nofail,tls 0 0"]
    );
    assert!(sb.full("/srv/shop-media").is_dir());
    assert!(sb
        .read(DOCKER_DROP_IN)
        .contains("RequiresMountsFor=/srv/shop-media\n"));
    let runs: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("docker run "))
        .collect();
    assert_eq!(runs, [expected_run(&sb, "/srv/shop-media")]);
}

#[test]
fn gives_up_loudly_when_efs_never_mounts() {
    let sb = sandbox(&shop(FULL), "amzn", Json::Python);
    let out = sb.run(&[
        ("STUB_MOUNT_FAIL", "always"),
        ("IAC_MOUNT_WAIT_SECONDS", "2"),
        ("IAC_RETRY_SLEEP", "1"),
    ]);
    assert!(!out.status.success(), "must fail: {}", sb.explain(&out));
    let log = sb.log();
    assert!(
        log.contains("EFS file system fs-0123456789abcdef0 did not mount at /mnt/shared within 2s"),
        "{log}"
    );
    let failed = last_line(&log);
    assert!(
        failed.contains("iac bootstrap FAILED in step 3/6 shared storage (exit 1)"),
        "{log}"
    );
    let calls = sb.calls();
    let mounts = count_calls(&calls, "mount ");
    assert!(
        (2..=4).contains(&mounts),
        "bounded, with backoff: {mounts}\n{calls}"
    );
    // Nothing after the mount ran: no secret read, no env file, no container.
    assert!(!calls.contains("secretsmanager"), "{calls}");
    assert!(!calls.contains("docker run"), "{calls}");
    assert!(!sb.full(APP_ENV).exists());
    assert!(!log.contains(FINISHED));
    assert_eq!(
        fstab_lines(&sb.read("/etc/fstab"), "/mnt/shared"),
        [EFS_LINE]
    );
}

/// Every file under `dir` except those in `except` (files or whole directories), recursively.
fn files_under(dir: &Path, except: &[&Path], out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if except.contains(&path.as_path()) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files_under(&path, except, out);
        } else if meta.is_file() {
            out.push(path);
        }
    }
}

/// The database and app secrets are in the root-only file the container's entrypoint reads, and
/// nowhere else: no argv, no container environment, no log, no other file.
fn assert_secret_only_in_secrets_file(sb: &Sandbox, outs: &[Output], plain: &str) {
    let env_file = sb.full(APP_SECRETS);
    let calls = sb.calls();
    let log = sb.log();
    let container_env = sb.container_env();
    assert!(
        container_env.lines().any(|l| l == plain),
        "the stubs recorded the containers' environment:\n{container_env}"
    );
    for secret in [
        DB_PASSWORD,
        DB_PASSWORD_URLENC,
        DB_PASSWORD_URLENC_OLD_JQ,
        APP_SECRET,
    ] {
        assert!(!calls.contains(secret), "{secret} in an argv:\n{calls}");
        assert!(
            !container_env.contains(secret),
            "{secret} in a container's environment:\n{container_env}"
        );
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        for out in outs {
            assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
            assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
        }
        // The fake root, the stubs' state and the call log: no other file holds it (the stub's
        // SSM store stands for AWS).
        let mut files = Vec::new();
        files_under(&sb.base, &[&env_file, &sb.ssm_dir], &mut files);
        assert!(files.len() > 10, "{files:?}");
        for f in files {
            let bytes = fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{secret} in {}",
                f.display()
            );
        }
    }
    let env = sb.read(APP_SECRETS);
    assert!(
        env.contains(&format!("admin:{DB_PASSWORD_URLENC}@"))
            || env.contains(&format!("admin:{DB_PASSWORD_URLENC_OLD_JQ}@")),
        "{env}"
    );
    assert_eq!(sb.mode(APP_SECRETS), 0o600);
}

#[test]
fn database_secret_lands_in_the_env_file_only() {
    for json in [Json::Python, Json::Jq] {
        let sb = sandbox(&shop(FULL), "amzn", json);
        let first = sb.run_ok(&[]);
        let calls = sb.calls();
        let parser = if json == Json::Python {
            "python3 "
        } else {
            "jq "
        };
        assert_eq!(count_calls(&calls, parser), 1, "{calls}");
        let runs: Vec<&str> = calls
            .lines()
            .filter(|l| l.starts_with("docker run "))
            .collect();
        assert_eq!(runs.len(), 1);
        assert!(runs[0].contains(&format!(" --env-file {} ", sb.full(APP_ENV).display())));
        assert!(!runs[0].contains(" -e "), "{}", runs[0]);
        // A second run reads the secret again and changes nothing.
        let second = sb.run_ok(&[]);
        assert_eq!(count_calls(&sb.calls(), "aws secretsmanager"), 2);
        assert_eq!(count_calls(&sb.calls(), "docker run"), 1);
        assert_secret_only_in_secrets_file(&sb, &[first, second], "EMPTY=");
        assert!(!sb.full("/etc/iac/app.env.tmp").exists());
    }
}

#[test]
fn changed_password_replaces_the_container() {
    let sb = sandbox(&shop(FULL), "amzn", Json::Python);
    sb.run_ok(&[]);
    sb.clear_calls();
    sb.run_ok(&[(
        "STUB_SECRET_STRING",
        r#"{"username":"admin","password":"rotated/pw+1","engine":"mysql"}"#,
    )]);
    assert!(sb.read(APP_SECRETS).contains("admin:rotated%2Fpw%2B1@"));
    let calls = sb.calls();
    assert_eq!(count_calls(&calls, "docker rm -f app"), 1, "{calls}");
    assert_eq!(count_calls(&calls, "docker run"), 1, "{calls}");
    assert!(!sb.log().contains("rotated"));
}

#[test]
fn unreadable_or_malformed_secret_fails_without_an_env_file() {
    for (env, message) in [
        (
            [
                ("STUB_SECRET_FAIL", "always"),
                ("STUB_SECRET_STRING", DB_SECRET),
            ],
            "cannot read the database secret arn:aws:secretsmanager:",
        ),
        (
            [
                ("STUB_SECRET_FAIL", "0"),
                (
                    "STUB_SECRET_STRING",
                    r#"{"username":null,"password":"p@ss w0rd!"}"#,
                ),
            ],
            "the database secret is not JSON with a username and a password",
        ),
        (
            [
                ("STUB_SECRET_FAIL", "0"),
                ("STUB_SECRET_STRING", "p@ss w0rd!"),
            ],
            "the database secret is not JSON with a username and a password",
        ),
    ] {
        for json in [Json::Python, Json::Jq] {
            let sb = sandbox(&shop(FULL), "amzn", json);
            let out = sb.run(&env);
            assert!(!out.status.success(), "must fail: {}", sb.explain(&out));
            let log = sb.log();
            assert!(log.contains(message), "{log}");
            assert!(
                last_line(&log).contains("FAILED in step 4/6 settings and secrets"),
                "{log}"
            );
            assert!(!sb.full(APP_ENV).exists());
            assert!(!sb.full(APP_SECRETS).exists());
            assert!(!sb.full("/etc/iac/app.env.tmp").exists());
            assert!(!sb.calls().contains("docker run"));
            assert!(!log.contains(DB_PASSWORD));
        }
    }
}

#[test]
fn waits_for_parameters_then_gives_up() {
    let efs = param_name("shop", EFS_ID_PARAM);
    let sb = sandbox(&shop(FULL), "amzn", Json::Python);
    sb.run_ok(&[("STUB_SSM_MISSING", &format!("{efs}:2"))]);
    assert_eq!(
        count_calls(&sb.calls(), &format!("aws ssm get-parameter --name {efs} ")),
        3
    );
    assert!(sb.log().contains(&format!(
        "waiting for SSM parameter {efs}: An error occurred (ParameterNotFound)"
    )));
    assert!(last_line(&sb.log()).contains(FINISHED));

    let sb = sandbox(&shop(FULL), "amzn", Json::Python);
    let out = sb.run(&[
        ("STUB_SSM_MISSING", &format!("{efs}:1000")),
        ("IAC_PARAM_WAIT_SECONDS", "1"),
        ("IAC_RETRY_SLEEP", "1"),
    ]);
    assert!(!out.status.success());
    let log = sb.log();
    assert!(
        log.contains(&format!("SSM parameter {efs} still unreadable after 1s")),
        "{log}"
    );
    assert!(last_line(&log).contains("FAILED in step 2/6"), "{log}");
    assert!(!sb.calls().contains("mount "));
}

#[test]
fn refuses_parameters_that_are_not_what_they_claim() {
    for (leaf, value, message) in [
        (
            EFS_ID_PARAM,
            "fs-123; reboot",
            "does not hold a file system id",
        ),
        (
            DB_ENDPOINT_PARAM,
            "db.example.com/x",
            "does not hold a host name",
        ),
        (
            DB_SECRET_PARAM,
            "my-secret",
            "does not hold a Secrets Manager ARN",
        ),
    ] {
        let sb = sandbox(&shop(FULL), "amzn", Json::Python);
        sb.param(&param_name("shop", leaf), value);
        let out = sb.run(&[]);
        assert!(!out.status.success(), "{leaf}: {}", sb.explain(&out));
        assert!(sb.log().contains(message), "{}", sb.log());
        assert!(!sb.calls().contains("mount "));
    }
}
