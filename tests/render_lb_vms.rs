//! Checks the lb-vms artifacts with the real tools that consume them: shellcheck for the three
//! boot scripts and the HAProxy refresh command, `haproxy -c` for haproxy.cfg in each stage, and
//! runs of the scripts against a fake root with stub commands (tests/stubs/).
//!
//! A missing tool fails the test loudly instead of skipping it: a skipped check looks exactly
//! like a passing one in CI output.

mod render_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use iac::render::app_spec::{app_spec, update_command, Switch, APP_PARAM};
use iac::render::lb_vms::{
    self, balancer, balancer_reload_command, database, haproxy_config, param_name, web, Backend,
    DATA_DEVICE, DB_HOST_PARAM, DB_PASSWORD_PARAM, HAPROXY_PARAM,
};
use iac::render::{UserData, USER_DATA_LIMIT};
use iac::stack::Stack;
use render_common::{
    check_output, count_calls, file, last_line, position, ran, shellcheck, stack_from, tool,
    Sandbox, Setup, HOST_TOOLS,
};
use tempfile::TempDir;

const SECRET_VALUE: &str = "s3cr3t-value";
/// A database password needing URL encoding, SQL escaping and shell care.
const DB_PASSWORD: &str = r#"p@ss w'rd$x\y"%"#;
const DB_PASSWORD_URLENC: &str = "p%40ss%20w%27rd%24x%5Cy%22%25";
const DB_HOST: &str = "10.0.2.15";
const STUB_PUBLIC_IP: &str = "198.51.100.7";
const STUB_PRIVATE_IP: &str = "10.0.1.23";
const SHOP_DOMAIN: &str = "shop.example.net";

// ---------------------------------------------------------------------------------------------
// Stacks

fn example() -> Stack {
    render_common::example("stacks/bookstore-lb-vms.yaml")
}

/// A stack unlike the example: values needing quotes, two secrets, region from IMDS, an
/// optional domain, either engine.
fn shop_yaml(domain: bool, engine: &str) -> String {
    let mut yaml = format!(
        r#"version: 1
name: shop
tier: lb-vms
app:
  image: ghcr.io/example/shop:2.0
  port: 8080
  health_path: /health?deep=1&x=$y
  environment:
    GREETING: "it's \"quoted\" $HOME `id` & ${{MORE}} # not a comment"
    EMPTY: ""
  secrets:
    SECRET_KEY: {{ ssm: /shop/secret-key }}
    SIGNING_SALT: {{ ssm: /shop/signing-salt }}
network:
  vpc: default
instance:
  instance_profile: LabInstanceProfile
web:
  count: 3
database:
  engine: {engine}
  version: "8.0"
  name: shop
  user: shop_app
  url_env: SQLALCHEMY_DATABASE_URI
"#
    );
    if domain {
        yaml.push_str(&format!(
            "domain:\n  name: {SHOP_DOMAIN}\n  email: \"o'brien@example.net\"\n"
        ));
    }
    yaml
}

fn shop(domain: bool, engine: &str) -> Stack {
    stack_from(&shop_yaml(domain, engine))
}

fn backends(n: usize) -> Vec<Backend> {
    (1..=n)
        .map(|i| Backend {
            name: format!("web-{i}"),
            address: format!("10.0.1.{}", 10 + i),
        })
        .collect()
}

/// Every script of a stack, named, for the checks that apply to all of them.
fn all_scripts(stack: &Stack) -> Vec<(String, UserData)> {
    vec![
        (
            "balancer".into(),
            balancer(stack).expect("balancer renders"),
        ),
        ("web".into(), web(stack).expect("web renders")),
        (
            "database".into(),
            database(stack).expect("database renders"),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. shellcheck

#[test]
fn scripts_pass_shellcheck_for_the_example() {
    for (role, ud) in all_scripts(&example()) {
        shellcheck("bash", &format!("bookstore-lb-{role}.sh"), &ud.script);
    }
}

#[test]
fn scripts_pass_shellcheck_in_every_variant() {
    for engine in ["mysql", "mongodb"] {
        for domain in [false, true] {
            for (role, ud) in all_scripts(&shop(domain, engine)) {
                shellcheck(
                    "bash",
                    &format!("shop-{engine}-{domain}-{role}.sh"),
                    &ud.script,
                );
                // Embedded files that are scripts get their own check.
                for f in &ud.files {
                    if f.content.starts_with("#!/bin/sh\n") {
                        shellcheck("sh", "embedded.sh", &f.content);
                    }
                }
            }
        }
    }
}

#[test]
fn reload_command_passes_shellcheck() {
    for stack in [example(), shop(true, "mysql")] {
        let cmd = balancer_reload_command(&stack);
        // Run Command executes it with /bin/sh: it must be POSIX sh, and bash-clean as well.
        shellcheck("sh", "reload.sh", &cmd);
        shellcheck("bash", "reload.sh", &format!("#!/bin/bash\n{cmd}"));
    }
}

#[test]
fn scripts_fit_in_user_data() {
    for engine in ["mysql", "mongodb"] {
        for (role, ud) in all_scripts(&shop(true, engine)) {
            let len = ud.script.len();
            eprintln!("{engine} {role}: {len} bytes");
            assert!(len < USER_DATA_LIMIT, "{role}: {len} bytes");
            assert_eq!(ud.payload().unwrap(), ud.script.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. haproxy -c

/// A throwaway self-signed certificate in HAProxy's format (chain then key, one file).
fn self_signed_pem(dir: &Path, domain: &str) -> PathBuf {
    let out = Command::new(tool("openssl", "openssl"))
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={domain}")])
        .arg("-keyout")
        .arg(dir.join("privkey.pem"))
        .arg("-out")
        .arg(dir.join("fullchain.pem"))
        .output()
        .unwrap();
    check_output("openssl req -x509", &out);
    let mut pem = fs::read_to_string(dir.join("fullchain.pem")).unwrap();
    pem.push_str(&fs::read_to_string(dir.join("privkey.pem")).unwrap());
    let path = dir.join(format!("{domain}.pem"));
    fs::write(&path, pem).unwrap();
    path
}

/// Runs `haproxy -c` on `config`; returns its combined output.
fn haproxy_c(config: &str, dir: &Path) -> String {
    let path = dir.join("haproxy.cfg");
    fs::write(&path, config).unwrap();
    let out = Command::new(tool("haproxy", "haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    check_output(&format!("haproxy -c on\n{config}\n"), &out);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What iac-haproxy-refresh does without a certificate: cut the marked HTTPS block.
fn without_https_block(config: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in config.lines() {
        if line.contains("# iac-https-begin") {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if line.contains("# iac-https-end") {
            skipping = false;
        }
    }
    out
}

fn assert_no_warnings(output: &str, config: &str) {
    assert!(
        !output.contains("[WARNING]"),
        "haproxy -c warns:\n{output}\n{config}"
    );
}

#[test]
fn haproxy_config_with_domain_passes_haproxy_c() {
    let stack = shop(true, "mysql");
    let config = haproxy_config(&stack, &backends(3)).unwrap();
    for i in 1..=3 {
        let line = format!(
            "    server web-{i} 10.0.1.{}:8080 check inter 5s fall 3 rise 2\n",
            10 + i
        );
        assert!(config.contains(&line), "{line}\n{config}");
    }
    assert!(config.contains("    balance roundrobin\n"));
    // The health path holds `$` and `&`: single-quoted, HAProxy takes it literally.
    assert!(
        config.contains("    option httpchk GET '/health?deep=1&x=$y' HTTP/1.1\n"),
        "{config}"
    );
    assert!(config.contains(&format!("    http-check send hdr Host {SHOP_DOMAIN}\n")));
    assert!(config.contains("    http-check expect status 200-399\n"));
    assert!(config.contains("    default_backend app\n"));
    assert!(config.contains("    use_backend acme if acme\n"));
    assert!(config.contains("    server certbot 127.0.0.1:8888\n"));
    assert!(
        config.contains("    http-request redirect scheme https code 301 if !{ ssl_fc } !acme\n")
    );

    // The stats page listens on the loopback interface only.
    let binds: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("bind "))
        .collect();
    assert_eq!(
        binds,
        [
            "bind :80",
            &format!("bind :443 ssl crt /etc/haproxy/certs/{SHOP_DOMAIN}.pem alpn h2,http/1.1"),
            "bind 127.0.0.1:8404"
        ]
    );
    let stats = &config[config.find("listen stats").expect("stats section")..];
    assert!(stats.contains("    bind 127.0.0.1:8404\n"));
    assert!(stats.contains("    stats enable\n"));
    assert!(stats.contains("    stats uri /stats\n"));

    // With the certificate: valid, no warnings.
    let dir = TempDir::new().unwrap();
    let pem = self_signed_pem(dir.path(), SHOP_DOMAIN);
    let with_cert = config.replace(
        &format!("/etc/haproxy/certs/{SHOP_DOMAIN}.pem"),
        &pem.display().to_string(),
    );
    let out = haproxy_c(&with_cert, dir.path());
    assert_no_warnings(&out, &with_cert);

    // Before the certificate exists, the refresh script cuts the HTTPS block: still valid,
    // no 443 and no redirect, ACME challenges still routed to certbot.
    let http_only = without_https_block(&config);
    assert!(!http_only.contains("443"));
    assert!(!http_only.contains("redirect"));
    assert!(http_only.contains("use_backend acme if acme"));
    let out = haproxy_c(&http_only, dir.path());
    assert_no_warnings(&out, &http_only);
}

#[test]
fn haproxy_config_without_domain_passes_haproxy_c() {
    let stack = example();
    let config = haproxy_config(&stack, &backends(3)).unwrap();
    assert!(!config.contains("443"));
    assert!(!config.contains("iac-https"));
    assert!(!config.contains("acme"));
    assert!(config.contains("    option httpchk GET /book/catalog HTTP/1.1\n"));
    assert!(config.contains("    http-check send hdr Host localhost\n"));
    assert!(config.contains("    server web-2 10.0.1.12:5000 check inter 5s fall 3 rise 2\n"));
    let dir = TempDir::new().unwrap();
    let out = haproxy_c(&config, dir.path());
    assert_no_warnings(&out, &config);
}

#[test]
fn haproxy_config_without_backends_is_valid() {
    let dir = TempDir::new().unwrap();
    let config = haproxy_config(&example(), &[]).unwrap();
    assert!(!config.contains("    server "));
    haproxy_c(&config, dir.path());
    let config = haproxy_config(&shop(true, "mongodb"), &[]).unwrap();
    haproxy_c(&without_https_block(&config), dir.path());
}

#[test]
fn haproxy_config_is_deterministic_and_small() {
    let stack = shop(true, "mysql");
    let a = haproxy_config(&stack, &backends(3)).unwrap();
    assert_eq!(a, haproxy_config(&stack, &backends(3)).unwrap());
    // A standard SSM parameter holds 4 KB; the validator allows 20 web VMs.
    let big = haproxy_config(&stack, &backends(20)).unwrap();
    assert!(big.len() < 4096, "{} bytes", big.len());
}

#[test]
fn haproxy_health_path_with_quote_stays_literal() {
    let mut stack = example();
    stack.spec.app.health_path = "/it's#ok".to_string();
    let config = haproxy_config(&stack, &backends(1)).unwrap();
    assert!(
        config.contains(r"option httpchk GET '/it'\''s#ok' HTTP/1.1"),
        "{config}"
    );
    let dir = TempDir::new().unwrap();
    haproxy_c(&config, dir.path());
    stack.spec.app.health_path = "/a b".to_string();
    assert!(haproxy_config(&stack, &backends(1)).is_err());
}

// ---------------------------------------------------------------------------------------------
// Stub runs

/// The lb-vms sandbox; stubs named in `missing` are left out so the script has to install
/// them. `text` is the script to run.
fn sandbox(text: &str, os_id: &str, missing: &[&str]) -> Sandbox {
    let setup = Setup {
        os_id,
        host_tools: HOST_TOOLS,
        missing,
        env: &[
            ("IAC_DNS_WAIT_SECONDS", "2"),
            ("IAC_DNS_POLL_SECONDS", "1"),
            ("IAC_HEALTH_WAIT_SECONDS", "1"),
            ("IAC_HEALTH_POLL_SECONDS", "1"),
            ("IAC_DEVICE_WAIT_SECONDS", "1"),
            ("IAC_DEVICE_POLL_SECONDS", "1"),
            ("IAC_DB_START_SECONDS", "5"),
            ("STUB_PUBLIC_IP", STUB_PUBLIC_IP),
            ("STUB_PRIVATE_IP", STUB_PRIVATE_IP),
        ],
        ..Setup::UBUNTU
    };
    Sandbox::new(&setup, text)
}

// ---------------------------------------------------------------------------------------------
// 3. The reload command

const OLD_CONFIG: &str = "# the running config\n";

fn reload_sandbox(stack: &Stack, new_config: &str) -> Sandbox {
    let sb = sandbox(&balancer_reload_command(stack), "ubuntu", &[]);
    sb.param(&param_name(stack.name(), HAPROXY_PARAM), new_config);
    fs::create_dir_all(sb.full("/etc/haproxy")).unwrap();
    fs::write(sb.full("/etc/haproxy/haproxy.cfg"), OLD_CONFIG).unwrap();
    sb
}

#[test]
fn reload_command_installs_a_valid_config_and_reloads() {
    let stack = example();
    let config = haproxy_config(&stack, &backends(3)).unwrap();
    // Run Command uses /bin/sh, which is dash on Ubuntu; bash must work as well.
    for shell in [tool("dash", "dash"), tool("bash", "bash")] {
        let sb = reload_sandbox(&stack, &config);
        let out = sb.run_with(&shell, &[], &[]);
        assert!(out.status.success(), "{}", sb.explain(&out));
        assert_eq!(sb.read("/etc/haproxy/haproxy.cfg"), config);
        assert_eq!(sb.mode("/etc/haproxy/haproxy.cfg"), 0o644);
        let calls = sb.calls();
        assert!(calls.contains(
            "aws ssm get-parameter --name /iac/bookstore-lb/haproxy.cfg --query Parameter.Value --output text --region us-east-1"
        ), "{calls}");
        let check = calls
            .lines()
            .position(|l| l.starts_with("haproxy -c -f "))
            .expect("validated");
        let reload = calls
            .lines()
            .position(|l| l == "systemctl reload haproxy")
            .expect("reloaded");
        assert!(check < reload, "validated before the reload:\n{calls}");
        let installed = format!(
            "haproxy -c -f {}",
            sb.full("/etc/haproxy/haproxy.cfg").display()
        );
        assert!(
            !calls.lines().any(|l| l == installed),
            "validates the new file, not the installed one:\n{calls}"
        );
        let leftovers: Vec<_> = fs::read_dir(sb.full("/etc/haproxy"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["haproxy.cfg"], "temporary files removed");

        // Unchanged: nothing to reload.
        fs::remove_file(&sb.stub_log).unwrap();
        let out = sb.run_with(&shell, &[], &[]);
        assert!(out.status.success(), "{}", sb.explain(&out));
        assert!(!sb.calls().contains("systemctl reload"), "{}", sb.calls());
    }
}

#[test]
fn reload_command_keeps_the_old_config_when_invalid() {
    let stack = example();
    let config = haproxy_config(&stack, &backends(2)).unwrap();
    for shell in [tool("dash", "dash"), tool("bash", "bash")] {
        let sb = reload_sandbox(&stack, &config);
        let out = sb.run_with(&shell, &[], &[("STUB_HAPROXY_INVALID", "1")]);
        assert!(!out.status.success(), "must fail: {}", sb.explain(&out));
        assert_eq!(sb.read("/etc/haproxy/haproxy.cfg"), OLD_CONFIG);
        let calls = sb.calls();
        assert!(!calls.contains("systemctl reload"), "{calls}");
        assert!(!calls.contains("systemctl restart"), "{calls}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("stub: parsing error"), "{stderr}");
        assert!(stderr.contains("is invalid"), "{stderr}");
        let leftovers = fs::read_dir(sb.full("/etc/haproxy")).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files removed");
    }
}

#[test]
fn reload_command_waits_for_the_parameter_then_gives_up() {
    let stack = example();
    let config = haproxy_config(&stack, &backends(1)).unwrap();
    let sb = reload_sandbox(&stack, &config);
    let out = sb.run_with(
        &tool("dash", "dash"),
        &[],
        &[("STUB_SSM_MISSING", "/iac/bookstore-lb/haproxy.cfg:2")],
    );
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert_eq!(count_calls(&sb.calls(), "aws ssm get-parameter"), 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "waiting for /iac/bookstore-lb/haproxy.cfg: An error occurred (ParameterNotFound)"
    ));
    assert_eq!(sb.read("/etc/haproxy/haproxy.cfg"), config);

    let sb = reload_sandbox(&stack, &config);
    let out = sb.run_with(
        &tool("dash", "dash"),
        &[],
        &[
            ("STUB_SSM_MISSING", "/iac/bookstore-lb/haproxy.cfg:1000"),
            ("IAC_PARAM_WAIT_SECONDS", "1"),
            ("IAC_RETRY_SLEEP", "1"),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read /iac/bookstore-lb/haproxy.cfg after 1s"));
    assert_eq!(sb.read("/etc/haproxy/haproxy.cfg"), OLD_CONFIG);
}

#[test]
fn reload_command_cuts_https_until_the_certificate_exists() {
    let stack = shop(true, "mysql");
    let config = haproxy_config(&stack, &backends(2)).unwrap();
    let sb = reload_sandbox(&stack, &config);
    let out = sb.run(&[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    // No region in this stack: it comes from IMDS.
    assert!(sb.calls().contains("/latest/meta-data/placement/region"));
    assert_eq!(
        sb.read("/etc/haproxy/haproxy.cfg"),
        without_https_block(&config)
    );

    let pem = format!("/etc/haproxy/certs/{SHOP_DOMAIN}.pem");
    fs::create_dir_all(sb.full("/etc/haproxy/certs")).unwrap();
    fs::write(sb.full(&pem), "cert and key\n").unwrap();
    fs::remove_file(&sb.stub_log).unwrap();
    let out = sb.run(&[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    assert_eq!(sb.read("/etc/haproxy/haproxy.cfg"), config);
    assert!(sb.calls().contains("systemctl reload haproxy"));
}

#[test]
fn reload_command_validates_with_the_real_haproxy() {
    // Before the certificate exists: the refresh cuts the HTTPS block and the real `haproxy -c`
    // accepts what is left; a broken parameter is refused by it and the old config stays.
    let stack = shop(true, "mongodb");
    let config = haproxy_config(&stack, &backends(3)).unwrap();
    for (value, ok) in [
        (config.clone(), true),
        (
            config.replace("balance roundrobin", "balance nonsense"),
            false,
        ),
    ] {
        let sb = reload_sandbox(&stack, &value);
        fs::remove_file(sb.base.join("stubs/haproxy")).unwrap();
        std::os::unix::fs::symlink(tool("haproxy", "haproxy"), sb.installed.join("haproxy"))
            .unwrap();
        let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
        assert_eq!(out.status.success(), ok, "{}", sb.explain(&out));
        let installed = sb.read("/etc/haproxy/haproxy.cfg");
        if ok {
            assert_eq!(installed, without_https_block(&config));
            assert!(sb.calls().contains("systemctl reload haproxy"));
        } else {
            assert_eq!(installed, OLD_CONFIG);
            assert!(
                String::from_utf8_lossy(&out.stderr)
                    .contains("Fatal errors found in configuration"),
                "{}",
                sb.explain(&out)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Boot scripts against stubs

fn db_params(sb: &Sandbox, stack: &str) {
    let spec = if stack == "shop" {
        app_spec(&shop(false, "mysql"))
    } else {
        app_spec(&example())
    };
    sb.param(&param_name(stack, APP_PARAM), &spec.unwrap());
    sb.param(&param_name(stack, DB_HOST_PARAM), DB_HOST);
    sb.param(&param_name(stack, DB_PASSWORD_PARAM), DB_PASSWORD);
}

#[test]
fn web_waits_for_the_database_address_then_runs_the_app() {
    let ud = web(&shop(false, "mysql")).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    db_params(&sb, "shop");
    let out = sb.run_ok(&[("STUB_SSM_MISSING", "/iac/shop/db-host:3")]);
    let calls = sb.calls();
    let log = sb.log();

    assert_eq!(
        count_calls(&calls, "aws ssm get-parameter --name /iac/shop/db-host "),
        4,
        "{calls}"
    );
    assert!(calls.contains("aws ssm get-parameter --name /iac/shop/db-password --with-decryption --query Parameter.Value --output text --region us-east-1"));
    assert!(
        log.contains(
            "waiting for SSM parameter /iac/shop/db-host: An error occurred (ParameterNotFound)"
        ),
        "{log}"
    );

    sb.assert_secrets_hidden(
        &out,
        &[DB_PASSWORD, DB_PASSWORD_URLENC, SECRET_VALUE],
        "EMPTY=",
    );
    // Plain settings in the env file Docker reads (literal KEY=value lines); the secrets and the
    // database URL in the root-only file the container's entrypoint reads.
    let env_file = sb.read("/etc/iac/app.env.app");
    assert_eq!(
        env_file,
        "EMPTY=\nGREETING=it's \"quoted\" $HOME `id` & ${MORE} # not a comment\n"
    );
    let secrets = sb.read("/etc/iac/app.secrets.app");
    assert_eq!(
        secrets,
        format!(
            "SECRET_KEY={SECRET_VALUE}\nSIGNING_SALT={SECRET_VALUE}\n\
             SQLALCHEMY_DATABASE_URI=mysql+pymysql://shop_app:{DB_PASSWORD_URLENC}@{DB_HOST}:3306/shop\n"
        )
    );
    assert_eq!(sb.mode("/etc/iac/app.env.app"), 0o600);
    assert_eq!(sb.mode("/etc/iac/app.secrets.app"), 0o600);
    assert_eq!(sb.mode("/etc/iac"), 0o700);

    // The new container is checked on a loopback port, then takes over the app's port.
    let steps = [
        "docker pull -q ghcr.io/example/shop:2.0",
        "docker run -d --name app-next",
        "curl -fs -o /dev/null -m 5 http://127.0.0.1:8081/",
        "docker run -d --name app --restart unless-stopped -p 8080:8080",
        "docker rm -f app-old app-next",
    ];
    let at: Vec<usize> = steps.iter().map(|s| position(&calls, s)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}\n{calls}");
    assert!(calls.contains("systemctl enable --now docker"));
    assert!(
        !ran(&calls, "apt-get"),
        "everything was installed:\n{calls}"
    );
    assert!(log.contains("== step 4/4 app"));
    assert_eq!(sb.read("/opt/iac/shop/bootstrap.sh"), ud.script);

    // A re-run with nothing changed keeps the container.
    fs::remove_file(&sb.stub_log).unwrap();
    sb.run_ok(&[]);
    let calls = sb.calls();
    assert!(!calls.contains("docker run"), "{calls}");
    assert!(sb.log().contains("nothing to do"));

    // A new image that fails its health check: the old container keeps the port.
    let mut broken = shop(false, "mysql");
    broken.spec.app.image = "ghcr.io/example/shop:broken".to_string();
    sb.param("/iac/shop/app", &app_spec(&broken).unwrap());
    fs::remove_file(&sb.stub_log).unwrap();
    let update = update_command(&broken, Switch::Port);
    fs::write(&sb.script, &update).unwrap();
    let out = sb.run_with(
        &tool("dash", "dash"),
        &[],
        &[("STUB_UNHEALTHY_PORT", "8081")],
    );
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let calls = sb.calls();
    assert!(!calls.contains("docker stop app"), "{calls}");
    assert!(calls.contains("docker rm -f app-next"), "{calls}");
    assert_eq!(sb.state("container-app"), "running\n");
}

#[test]
fn web_with_mongodb_gets_a_mongodb_url() {
    let ud = web(&shop(true, "mongodb")).unwrap();
    let sb = sandbox(&ud.script, "amzn", &["docker", "aws"]);
    db_params(&sb, "shop");
    let out = sb.run_ok(&[]);
    assert!(sb.read("/etc/iac/app-extra.env").contains(&format!(
        "SQLALCHEMY_DATABASE_URI=mongodb://shop_app:{DB_PASSWORD_URLENC}@{DB_HOST}:27017/shop\n"
    )));
    let calls = sb.calls();
    assert!(calls.contains("dnf -q -y install docker"), "{calls}");
    assert!(calls.contains("dnf -q -y install awscli-2"), "{calls}");
    // No region in the stack: from IMDS.
    assert!(calls.contains("/latest/meta-data/placement/region"));
    sb.assert_not_leaked(&out, DB_PASSWORD, true);
}

#[test]
fn web_gives_up_when_the_database_address_never_comes() {
    let ud = web(&example()).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    db_params(&sb, "bookstore-lb");
    let out = sb.run(&[
        ("STUB_SSM_MISSING", "/iac/bookstore-lb/db-host:1000"),
        ("IAC_PARAM_WAIT_SECONDS", "1"),
        ("IAC_RETRY_SLEEP", "1"),
    ]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let log = sb.log();
    assert!(
        log.contains("SSM parameter /iac/bookstore-lb/db-host still unreadable after 1s"),
        "{log}"
    );
    assert!(log.contains("FAILED in step 3/4 database"), "{log}");
    assert!(!sb.calls().contains("docker run"));
    assert!(
        !sb.full("/etc/iac/app-extra.env").exists(),
        "no partial env file"
    );
}

/// Disks as `lsblk -dnrpo NAME,TYPE,MODEL` prints them on a Nitro instance: the root disk, the
/// data volume, and an instance-store disk that must never be touched.
const NITRO_DISKS: &str = "/dev/nvme0n1 disk Amazon\\x20Elastic\\x20Block\\x20Store\n\
                           /dev/nvme1n1 disk Amazon\\x20Elastic\\x20Block\\x20Store\n\
                           /dev/nvme2n1 disk Amazon\\x20EC2\\x20NVMe\\x20Instance\\x20Storage";
const STUB_UUID: &str = "3f1c2a9e-5b7d-4e11-9c0a-5d2f8e6b7a10";

#[test]
fn database_mysql_formats_a_blank_volume_once_and_creates_the_user() {
    let ud = database(&shop(false, "mysql")).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &["mysqld", "mysql", "mysqladmin"]);
    db_params(&sb, "shop");
    let env = [("STUB_DISKS", NITRO_DISKS)];
    let out = sb.run_ok(&env);
    let calls = sb.calls();
    let log = sb.log();

    assert!(calls.contains("lsblk -dnrpo NAME,TYPE,MODEL"));
    assert_eq!(count_calls(&calls, "mkfs"), 1, "{calls}");
    assert!(
        calls.contains("mkfs.ext4 -q -L iac-data /dev/nvme1n1"),
        "{calls}"
    );
    assert!(calls.contains("blkid -p -o value -s TYPE /dev/nvme1n1"));
    let fstab_line = format!("UUID={STUB_UUID} /var/lib/mysql ext4 defaults,nofail,noatime 0 2\n");
    assert_eq!(sb.read("/etc/fstab"), fstab_line);
    let data = sb.full("/var/lib/mysql");
    assert!(calls.contains(&format!("mount {}", data.display())));
    // Mounted before the package goes in, so MySQL initialises its data on the volume.
    let mount_at = calls.find("mount ").unwrap();
    let install_at = calls
        .find("install --no-install-recommends mysql-server")
        .expect("mysql-server installed");
    assert!(mount_at < install_at, "{calls}");

    let cnf = sb.read("/etc/my.cnf.d/zz-iac.cnf");
    assert!(
        cnf.contains(&format!("bind-address = {STUB_PRIVATE_IP}\n")),
        "{cnf}"
    );
    assert!(calls.contains("systemctl restart mysql"));
    assert!(calls.contains("mysqladmin --silent ping"));

    // The password reaches mysql on stdin, escaped for SQL; never as an argument.
    assert!(calls.contains("mysql --protocol=socket -u root"));
    let sql = sb.state("mysql-stdin");
    let sql_pw = DB_PASSWORD.replace('\\', "\\\\").replace('\'', "''");
    assert_eq!(
        sql,
        format!(
            "CREATE DATABASE IF NOT EXISTS `shop`;\n\
             CREATE USER IF NOT EXISTS 'shop_app'@'%' IDENTIFIED BY '{sql_pw}';\n\
             ALTER USER 'shop_app'@'%' IDENTIFIED BY '{sql_pw}';\n\
             GRANT ALL PRIVILEGES ON `shop`.* TO 'shop_app'@'%';\n"
        )
    );
    sb.assert_not_leaked(&out, DB_PASSWORD, true);
    sb.assert_not_leaked(&out, &sql_pw, true);
    assert!(
        last_line(&log).ends_with(&format!(
            "iac bootstrap finished: mysql database shop on {STUB_PRIVATE_IP}:3306"
        )),
        "{log}"
    );

    // Second run: mounted already; no format, fstab untouched, user statements idempotent.
    fs::remove_file(&sb.stub_log).unwrap();
    sb.run_ok(&env);
    let calls = sb.calls();
    assert!(!ran(&calls, "mkfs.ext4"), "{calls}");
    assert!(!ran(&calls, "mount"), "{calls}");
    assert_eq!(sb.read("/etc/fstab"), fstab_line);
    assert!(sb.log().contains("/var/lib/mysql is mounted already"));
    assert!(
        !calls.contains("systemctl restart mysql"),
        "config unchanged:\n{calls}"
    );
    assert_eq!(
        sb.state("mysql-stdin")
            .matches("CREATE USER IF NOT EXISTS")
            .count(),
        2
    );

    // After a reboot that did not mount it (say the volume came late): the filesystem is kept
    // and fstab still has one line.
    fs::remove_file(sb.base.join("stub-state").join(format!(
        "mnt{}",
        data.display().to_string().replace('/', "_")
    )))
    .unwrap();
    fs::remove_file(&sb.stub_log).unwrap();
    sb.run_ok(&env);
    let calls = sb.calls();
    assert!(!ran(&calls, "mkfs.ext4"), "{calls}");
    assert!(ran(&calls, "mount"), "{calls}");
    assert_eq!(sb.read("/etc/fstab"), fstab_line);
    assert!(sb
        .log()
        .contains("holds a ext4 filesystem: keeping its data"));
}

#[test]
fn database_keeps_an_existing_filesystem() {
    let ud = database(&example()).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    db_params(&sb, "bookstore-lb");
    fs::create_dir_all(sb.full("/etc/mysql/mysql.conf.d")).unwrap();
    fs::create_dir_all(sb.full("/var/lib/mysql/mysql")).unwrap();
    fs::write(
        sb.full("/etc/fstab"),
        "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n",
    )
    .unwrap();
    sb.run_ok(&[("STUB_DISKS", NITRO_DISKS), ("STUB_BLKID_FS", "xfs")]);
    let calls = sb.calls();
    assert!(!ran(&calls, "mkfs.ext4"), "{calls}");
    assert!(
        !ran(&calls, "mysqld"),
        "data directory initialised already:\n{calls}"
    );
    assert_eq!(
        sb.read("/etc/fstab"),
        format!("LABEL=cloudimg-rootfs / ext4 defaults 0 1\nUUID={STUB_UUID} /var/lib/mysql xfs defaults,nofail,noatime 0 2\n")
    );
    assert!(sb
        .read("/etc/mysql/mysql.conf.d/zz-iac.cnf")
        .contains("bind-address = 10.0.1.23"));
    assert!(!ran(&calls, "apt-get"), "{calls}");
}

#[test]
fn database_never_guesses_between_disks() {
    let ud = database(&example()).unwrap();

    // No data volume attached: wait (bounded), then fail without touching anything.
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    db_params(&sb, "bookstore-lb");
    let out = sb.run(&[]);
    assert!(!out.status.success());
    let log = sb.log();
    assert!(
        log.contains(&format!("no data volume at {DATA_DEVICE} after 1s")),
        "{log}"
    );
    assert!(log.contains("FAILED in step 3/5 data volume"), "{log}");
    assert!(!ran(&sb.calls(), "mkfs.ext4"));

    // Two unused EBS disks: refuse.
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    db_params(&sb, "bookstore-lb");
    let two = format!("{NITRO_DISKS}\n/dev/nvme3n1 disk Amazon\\x20Elastic\\x20Block\\x20Store");
    let out = sb.run(&[("STUB_DISKS", &two)]);
    assert!(!out.status.success());
    assert!(
        sb.log()
            .contains("two unused disks, /dev/nvme1n1 and /dev/nvme3n1"),
        "{}",
        sb.log()
    );
    assert!(!ran(&sb.calls(), "mkfs.ext4"));
    assert!(!sb.full("/etc/fstab").exists());
}

#[test]
fn database_mongodb_adds_the_repo_and_creates_users_without_argv_passwords() {
    let ud = database(&shop(true, "mongodb")).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &["mongod", "mongosh", "aws"]);
    db_params(&sb, "shop");
    let env = [("STUB_DISKS", NITRO_DISKS)];
    let out = sb.run_ok(&env);
    let calls = sb.calls();

    assert!(calls.contains("mkfs.ext4 -q -L iac-data /dev/nvme1n1"));
    assert!(sb.read("/etc/fstab").contains(" /var/lib/mongodb ext4 "));
    assert!(
        calls.contains("https://pgp.mongodb.com/server-8.0.asc"),
        "{calls}"
    );
    assert_eq!(
        sb.read("/etc/apt/sources.list.d/mongodb-org-8.0.list"),
        "deb [ signed-by=/usr/share/keyrings/mongodb-server-8.0.gpg ] https://repo.mongodb.org/apt/ubuntu noble/mongodb-org/8.0 multiverse\n"
    );
    assert!(
        calls.contains("install --no-install-recommends mongodb-org"),
        "{calls}"
    );
    // apt-get update runs after the repo was added.
    let repo_at = calls.find("gpg --batch").unwrap();
    let update_at = calls
        .rfind("apt-get -o DPkg::Lock::Timeout=300 -q -y update")
        .unwrap();
    assert!(repo_at < update_at, "{calls}");

    let conf = sb.read("/etc/mongod.conf");
    assert!(conf.contains("  dbPath: /var/lib/mongodb\n"), "{conf}");
    assert!(
        conf.contains(&format!("  bindIp: 127.0.0.1,{STUB_PRIVATE_IP}\n")),
        "{conf}"
    );
    assert!(conf.contains("  authorization: enabled\n"));
    assert!(calls.contains("systemctl restart mongod"));

    let js = file(&ud, "/etc/iac/mongo-users.js");
    assert_eq!(sb.read("/etc/iac/mongo-users.js"), js);
    assert_eq!(sb.mode("/etc/iac/mongo-users.js"), 0o600);
    assert!(js.contains(r#"const name = "shop";"#));
    assert!(js.contains(r#"const user = "shop_app";"#));
    assert!(calls.contains(&format!(
        "mongosh --quiet --norc mongodb://127.0.0.1:27017/admin --file {}",
        sb.full("/etc/iac/mongo-users.js").display()
    )));
    // The passwords arrived through mongosh's environment.
    let admin_pw = sb.read("/var/lib/mongodb/.iac/admin-password");
    assert_eq!(admin_pw.trim().len(), 48);
    assert_eq!(sb.mode("/var/lib/mongodb/.iac/admin-password"), 0o600);
    assert_eq!(sb.mode("/var/lib/mongodb/.iac"), 0o700);
    assert_eq!(
        sb.state("mongosh-env"),
        format!("admin={}\ndb={DB_PASSWORD}\n", admin_pw.trim())
    );
    sb.assert_not_leaked(&out, DB_PASSWORD, true);
    sb.assert_not_leaked(&out, admin_pw.trim(), true);

    // Second run: same administrator password, no new repo, no format.
    fs::remove_file(&sb.stub_log).unwrap();
    sb.run_ok(&env);
    let calls = sb.calls();
    assert!(!ran(&calls, "mkfs.ext4"));
    assert!(!ran(&calls, "apt-get"), "{calls}");
    assert!(!calls.contains("systemctl restart mongod"), "{calls}");
    assert_eq!(sb.read("/var/lib/mongodb/.iac/admin-password"), admin_pw);
}

#[test]
fn database_mongodb_on_amazon_linux_uses_the_yum_repo() {
    let ud = database(&shop(false, "mongodb")).unwrap();
    let sb = sandbox(&ud.script, "amzn", &["mongod", "mongosh"]);
    db_params(&sb, "shop");
    sb.run_ok(&[("STUB_DISKS", NITRO_DISKS)]);
    let repo = sb.read("/etc/yum.repos.d/mongodb-org-8.0.repo");
    assert!(
        repo.contains(
            "baseurl=https://repo.mongodb.org/yum/amazon/2023/mongodb-org/8.0/$basearch/\n"
        ),
        "{repo}"
    );
    // dnf trusts the key checked against the pinned fingerprint, from a local file.
    assert!(
        repo.contains("gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-mongodb-8.0\n"),
        "{repo}"
    );
    assert!(sb.full("/etc/pki/rpm-gpg/RPM-GPG-KEY-mongodb-8.0").exists());
    assert!(sb.calls().contains("dnf -q -y install mongodb-org"));
}

#[test]
fn database_mongodb_refuses_a_signing_key_with_another_fingerprint() {
    for os in ["ubuntu", "amzn"] {
        let ud = database(&shop(false, "mongodb")).unwrap();
        let sb = sandbox(&ud.script, os, &["mongod", "mongosh"]);
        db_params(&sb, "shop");
        let out = sb.run(&[
            ("STUB_DISKS", NITRO_DISKS),
            ("STUB_GPG_FPR", "0123456789ABCDEF0123456789ABCDEF01234567"),
        ]);
        assert!(!out.status.success(), "{}", sb.explain(&out));
        let log = sb.log();
        assert!(
            log.contains("MongoDB's signing key has fingerprint 0123456789ABCDEF0123456789ABCDEF01234567, not the pinned 4B0752C1BCA238C0B4EE14DC41DE058A4E7DCA05: refusing it"),
            "{log}"
        );
        let calls = sb.calls();
        assert!(!calls.contains("install mongodb-org"), "{calls}");
        assert!(!sb
            .full("/etc/apt/sources.list.d/mongodb-org-8.0.list")
            .exists());
        assert!(!sb.full("/etc/yum.repos.d/mongodb-org-8.0.repo").exists());
    }
    // A series without a pinned key is refused when rendering.
    let mut stack = shop(false, "mongodb");
    if let Some(db) = stack.spec.database.as_mut() {
        db.version = "4.4".to_string();
    }
    let err = database(&stack).unwrap_err().to_string();
    assert!(
        err.contains("no pinned signing key for MongoDB 4.4"),
        "{err}"
    );
}

#[test]
fn balancer_with_domain_gets_a_certificate_and_keeps_https() {
    let stack = shop(true, "mysql");
    let ud = balancer(&stack).unwrap();
    let config = haproxy_config(&stack, &backends(3)).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &["haproxy", "certbot", "aws"]);
    sb.param("/iac/shop/haproxy.cfg", &config);
    let stats = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status\n\
                 app,web-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP\napp,web-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN\n\
                 app,BACKEND,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP";
    let env = [
        ("STUB_DNS_IP", STUB_PUBLIC_IP),
        ("STUB_SSM_MISSING", "/iac/shop/haproxy.cfg:2"),
        ("STUB_HAPROXY_STATS", stats),
    ];
    let out = sb.run_ok(&env);
    let calls = sb.calls();
    let log = sb.log();

    for pkg in ["haproxy", "certbot"] {
        assert!(
            calls.contains(&format!("install --no-install-recommends {pkg}")),
            "{calls}"
        );
    }
    assert!(calls.contains("snap install aws-cli --classic"));
    assert_eq!(
        sb.read("/usr/local/sbin/iac-haproxy-refresh"),
        balancer_reload_command(&stack)
    );
    assert_eq!(sb.mode("/usr/local/sbin/iac-haproxy-refresh"), 0o755);
    assert_eq!(sb.mode("/etc/haproxy/certs"), 0o700);
    assert!(
        log.contains("waiting for /iac/shop/haproxy.cfg: An error occurred (ParameterNotFound)"),
        "{log}"
    );

    assert!(calls.contains(
        "certbot certonly --standalone --http-01-port 8888 --http-01-address 127.0.0.1 --non-interactive --agree-tos --no-eff-email -m o'brien@example.net -d shop.example.net --keep-until-expiring"
    ), "{calls}");
    // The deploy hook combined chain and key into HAProxy's pem, root-only.
    let pem = format!("/etc/haproxy/certs/{SHOP_DOMAIN}.pem");
    assert_eq!(sb.read(&pem), "stub-cert\nstub-key\n");
    assert_eq!(sb.mode(&pem), 0o600);
    // First the HTTP-only config, then (with the pem) the whole one, reloaded gracefully.
    assert_eq!(sb.read("/etc/haproxy/haproxy.cfg"), config);
    assert!(calls.contains("systemctl reload haproxy"), "{calls}");
    assert!(calls.contains("systemctl enable --now iac-certbot-renew.timer"));
    assert_eq!(
        file(&ud, "/etc/systemd/system/iac-certbot-renew.timer"),
        sb.read("/etc/systemd/system/iac-certbot-renew.timer")
    );
    assert!(log.contains("HTTPS enabled for shop.example.net"), "{log}");
    assert!(log.contains("web VMs up: 1/2"), "{log}");
    assert!(
        last_line(&log).ends_with("iac bootstrap finished: https://shop.example.net"),
        "{log}"
    );
    sb.assert_not_leaked(&out, "stub-key", true);

    // Re-run: the certificate is reused, the config is current, nothing reloads.
    fs::remove_file(&sb.stub_log).unwrap();
    sb.run_ok(&[("STUB_HAPROXY_STATS", stats)]);
    let calls = sb.calls();
    assert!(!ran(&calls, "certbot"), "{calls}");
    assert!(!calls.contains("systemctl reload haproxy"), "{calls}");
    assert!(sb
        .log()
        .contains("certificate for shop.example.net already present"));
}

#[test]
fn balancer_falls_back_to_http_when_dns_points_elsewhere() {
    let stack = shop(true, "mysql");
    let ud = balancer(&stack).unwrap();
    let config = haproxy_config(&stack, &backends(2)).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    sb.param("/iac/shop/haproxy.cfg", &config);
    sb.run_ok(&[("STUB_DNS_IP", "203.0.113.99")]);
    let log = sb.log();
    assert!(log.contains("HTTPS not enabled: shop.example.net resolves to 203.0.113.99, not to this instance (198.51.100.7), after 2s; serving HTTP only"), "{log}");
    assert!(!ran(&sb.calls(), "certbot"));
    assert_eq!(
        sb.read("/etc/haproxy/haproxy.cfg"),
        without_https_block(&config)
    );
    assert!(log.contains("no web VM healthy yet"), "{log}");
    assert!(last_line(&log).ends_with("iac bootstrap finished: http://shop.example.net"));
}

#[test]
fn balancer_falls_back_to_http_when_certbot_fails() {
    let stack = shop(true, "mysql");
    let ud = balancer(&stack).unwrap();
    let config = haproxy_config(&stack, &backends(2)).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    sb.param("/iac/shop/haproxy.cfg", &config);
    sb.run_ok(&[("STUB_DNS_IP", STUB_PUBLIC_IP), ("STUB_CERTBOT_FAIL", "1")]);
    assert!(sb.log().contains(
        "HTTPS not enabled: certbot could not obtain a certificate (see above); serving HTTP only"
    ));
    assert_eq!(
        sb.read("/etc/haproxy/haproxy.cfg"),
        without_https_block(&config)
    );
    assert!(!sb
        .full(&format!("/etc/haproxy/certs/{SHOP_DOMAIN}.pem"))
        .exists());
}

#[test]
fn balancer_without_domain_serves_http() {
    let stack = example();
    let ud = balancer(&stack).unwrap();
    assert_eq!(ud.files.len(), 1, "only the refresh script");
    assert!(!ud.script.contains("certbot"));
    let config = haproxy_config(&stack, &backends(2)).unwrap();
    let sb = sandbox(&ud.script, "amzn", &["haproxy"]);
    sb.param("/iac/bookstore-lb/haproxy.cfg", &config);
    sb.run_ok(&[]);
    let calls = sb.calls();
    assert!(calls.contains("dnf -q -y install haproxy"), "{calls}");
    assert_eq!(sb.read("/etc/haproxy/haproxy.cfg"), config);
    assert!(sb.log().contains("no domain in the stack"));
    assert!(
        last_line(&sb.log()).ends_with(&format!("iac bootstrap finished: http://{STUB_PUBLIC_IP}"))
    );
}

#[test]
fn balancer_fails_loudly_on_an_invalid_config() {
    let stack = example();
    let ud = balancer(&stack).unwrap();
    let sb = sandbox(&ud.script, "ubuntu", &[]);
    sb.param("/iac/bookstore-lb/haproxy.cfg", "garbage\n");
    let out = sb.run(&[("STUB_HAPROXY_INVALID", "1")]);
    assert!(!out.status.success());
    let log = sb.log();
    assert!(log.contains("FAILED in step 3/5 haproxy config"), "{log}");
    assert!(!sb.full("/etc/haproxy/haproxy.cfg").exists());
}

#[test]
fn deploy_hook_rebuilds_the_pem_and_reloads() {
    let stack = shop(true, "mysql");
    let ud = balancer(&stack).unwrap();
    let hook = file(
        &ud,
        "/etc/letsencrypt/renewal-hooks/deploy/iac-haproxy-pem.sh",
    );
    let sb = sandbox(hook, "ubuntu", &[]);
    let live = sb.full("/etc/letsencrypt/live/shop.example.net");
    fs::create_dir_all(&live).unwrap();
    fs::write(live.join("fullchain.pem"), "renewed-chain\n").unwrap();
    fs::write(live.join("privkey.pem"), "renewed-key\n").unwrap();
    let config = haproxy_config(&stack, &backends(1)).unwrap();
    fs::create_dir_all(sb.full("/etc/haproxy")).unwrap();
    fs::write(sb.full("/etc/haproxy/haproxy.cfg"), &config).unwrap();
    let out = sb.run_with(&tool("dash", "dash"), &[], &[]);
    assert!(out.status.success(), "{}", sb.explain(&out));
    let pem = format!("/etc/haproxy/certs/{SHOP_DOMAIN}.pem");
    assert_eq!(sb.read(&pem), "renewed-chain\nrenewed-key\n");
    assert_eq!(sb.mode(&pem), 0o600);
    let calls = sb.calls();
    assert!(ran(&calls, "haproxy"));
    assert!(calls.contains("systemctl reload haproxy"));
}

// ---------------------------------------------------------------------------------------------
// 5. No secrets in the rendered output

#[test]
fn rendered_output_holds_parameter_names_only() {
    let planted = "planted-Value-9f8e7d";
    std::env::set_var("SECRET_KEY", planted);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", planted);
    std::env::set_var("IAC_DB_PASSWORD", planted);
    for engine in ["mysql", "mongodb"] {
        let stack = shop(true, engine);
        let mut all = String::new();
        for (_, ud) in all_scripts(&stack) {
            all.push_str(&ud.script);
            for f in &ud.files {
                all.push_str(&f.content);
            }
            for xtrace in ["set -x", "set -o xtrace", "bash -x", "set -vx", "set -xv"] {
                assert!(!ud.script.contains(xtrace), "{xtrace} would print secrets");
            }
        }
        all.push_str(&balancer_reload_command(&stack));
        all.push_str(&iac::render::app_spec::app_spec(&stack).unwrap());
        all.push_str(&haproxy_config(&stack, &backends(2)).unwrap());
        for name in [
            "/shop/secret-key",
            "/shop/signing-salt",
            "/iac/shop/db-password",
            "/iac/shop/db-host",
        ] {
            assert!(all.contains(name), "{name} referenced");
        }
        assert!(!all.contains(planted));
        for needle in [
            "AKIA",
            "ASIA",
            "aws_secret_access_key",
            "AWS_SECRET_ACCESS_KEY",
            SECRET_VALUE,
            DB_PASSWORD,
        ] {
            assert!(!all.contains(needle), "{needle} in rendered output");
        }
    }
    // The constants iac and the scripts agree on.
    assert_eq!(
        lb_vms::param_name("shop", DB_PASSWORD_PARAM),
        "/iac/shop/db-password"
    );
    assert_eq!(DATA_DEVICE, "/dev/sdf");
}

#[test]
fn balancer_renewal_timer_obtains_a_missing_certificate_then_renews() {
    let stack = shop(true, "mysql");
    let ud = balancer(&stack).unwrap();
    let script = file(&ud, iac::render::CERTBOT_SCRIPT);
    shellcheck("sh", "iac-certbot", script);
    let unit = file(&ud, "/etc/systemd/system/iac-certbot-renew.service");
    assert!(
        unit.contains("\nExecStart=/usr/local/sbin/iac-certbot\n"),
        "{unit}"
    );
    let sb = sandbox(script, "ubuntu", &[]);
    // The deploy hook (tested on its own above) builds HAProxy's pem: here it records its run.
    let hook = sb.full("/etc/letsencrypt/renewal-hooks/deploy/iac-haproxy-pem.sh");
    fs::create_dir_all(hook.parent().unwrap()).unwrap();
    fs::write(
        &hook,
        "#!/bin/sh\nmkdir -p \"$IAC_ROOT/etc/haproxy/certs\"\necho pem >\"$IAC_ROOT/etc/haproxy/certs/shop.example.net.pem\"\necho hook >>\"$STUB_LOG\"\n",
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dash = tool("dash", "dash");

    // No certificate (boot missed it): a failed run changes nothing; the next obtains it
    // through certbot's server behind HAProxy, then the hook installs it.
    let out = sb.run_with(&dash, &[], &[("STUB_CERTBOT_FAIL", "1")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert!(!sb.calls().contains("hook"));
    sb.clear_calls();
    let out = sb.run_with(&dash, &[], &[]);
    check_output("iac-certbot", &out);
    let calls = sb.calls();
    assert!(calls.contains(
        "certbot certonly --standalone --http-01-port 8888 --http-01-address 127.0.0.1 --non-interactive --agree-tos --no-eff-email -m o'brien@example.net -d shop.example.net --keep-until-expiring\n"
    ), "{calls}");
    assert!(
        position(&calls, "certbot certonly") < position(&calls, "hook"),
        "{calls}"
    );

    // Installed: the timer only renews.
    sb.clear_calls();
    let out = sb.run_with(&dash, &[], &[]);
    check_output("iac-certbot renew", &out);
    let calls = sb.calls();
    assert!(calls.contains("certbot renew --quiet\n"), "{calls}");
    assert!(!calls.contains("certonly"), "{calls}");
}
