//! Checks the single-vm user-data with the real tools that will consume it: shellcheck for the
//! boot script, `nginx -t` for both site variants, `docker-compose config` for the compose file,
//! and a run of the script itself against a fake root with stub commands (tests/stubs/).
//!
//! A missing tool fails the test loudly instead of skipping it: a skipped check looks exactly
//! like a passing one in CI output.

mod render_common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use iac::render::{single_vm, RenderError, UserData, USER_DATA_LIMIT};
use iac::stack::Stack;
use render_common::{
    check_output, file, last_line, manifest_dir, ran, shellcheck, stack_from, tool, Sandbox, Setup,
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
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {};\n}}\n",
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
    assert!(site.contains("proxy_pass http://127.0.0.1:5000;"));
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

/// Validates a rendered compose file with Debian's docker-compose (`config -q`): env files
/// under /etc/iac/ are moved into `dir`, a `.env` provides the interpolated password. Returns
/// the failing `config -q` run, or else the `config` run whose output shows the result.
fn compose_config(compose: &str, dir: &Path, dot_env: Option<&str>) -> Output {
    let compose = compose.replace("/etc/iac/", &format!("{}/", dir.display()));
    fs::write(dir.join("compose.yaml"), compose).unwrap();
    fs::write(dir.join("app.env"), "SECRET_KEY='dummy'\n").unwrap();
    fs::write(
        dir.join("db.env"),
        "MYSQL_ROOT_PASSWORD='dummy'\nMYSQL_PASSWORD='dummy'\n",
    )
    .unwrap();
    if let Some(text) = dot_env {
        fs::write(dir.join(".env"), text).unwrap();
    }
    let run = |quiet: bool| {
        let mut cmd = Command::new(tool("docker-compose", "docker-compose"));
        cmd.arg("-f").arg(dir.join("compose.yaml")).arg("config");
        if quiet {
            cmd.arg("-q");
        }
        cmd.current_dir(dir)
            .env_remove("IAC_DB_PASSWORD_URLENC")
            .output()
            .unwrap()
    };
    let quiet = run(true);
    if !quiet.status.success() {
        return quiet;
    }
    run(false)
}

#[test]
fn compose_file_passes_docker_compose_config() {
    let ud = render(&example());
    let compose = file(&ud, &compose_path("bookstore-vm"));
    assert!(compose.contains("\"127.0.0.1:5000:5000\""));
    assert!(compose.contains("condition: service_healthy"));
    assert!(compose.contains("mysqladmin"));
    assert!(compose
        .contains("\"DATABASE_URL\": \"mysql+pymysql://bookstore:${IAC_DB_PASSWORD_URLENC:?"));
    let dir = TempDir::new().unwrap();
    let out = compose_config(
        compose,
        dir.path(),
        Some("IAC_DB_PASSWORD_URLENC='p%40ss'\n"),
    );
    check_output("docker-compose config", &out);
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(
        config.contains("mysql+pymysql://bookstore:p%40ss@db:3306/bookstore"),
        "password interpolated from .env:\n{config}"
    );
    assert!(config.contains("mysql:8.0"));
    assert!(config.contains("/var/lib/mysql"));
}

#[test]
fn compose_refuses_to_start_without_the_password_file() {
    let ud = render(&example());
    let dir = TempDir::new().unwrap();
    let out = compose_config(file(&ud, &compose_path("bookstore-vm")), dir.path(), None);
    assert!(
        !out.status.success(),
        "compose must fail without .env rather than give the app an empty password"
    );
}

#[test]
fn compose_file_with_awkward_values_passes_docker_compose_config() {
    let ud = render(&stack_from(&shop_yaml(true, Some(DB_WITH_PASSWORD_REF))));
    let compose = file(&ud, &compose_path("shop"));
    assert!(compose.contains("SQLALCHEMY_DATABASE_URI"));
    assert!(!compose.contains("DATABASE_URL\""));
    let dir = TempDir::new().unwrap();
    let out = compose_config(compose, dir.path(), Some("IAC_DB_PASSWORD_URLENC='x'\n"));
    check_output("docker-compose config", &out);
    let config = String::from_utf8_lossy(&out.stdout);
    // `$` reaches the container literally: the config output re-escapes it as `$$`.
    assert!(config.contains("$$HOME"), "{config}");
    assert!(config.contains("$${MORE}"), "{config}");

    let ud = render(&stack_from(&shop_yaml(false, None)));
    let compose = file(&ud, &compose_path("shop"));
    assert!(!compose.contains("db:"), "no database service:\n{compose}");
    let dir = TempDir::new().unwrap();
    check_output(
        "docker-compose config (no database)",
        &compose_config(compose, dir.path(), None),
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Size

/// Deterministic incompressible-ish text: a sha256 hash chain.
fn noise(seed: usize, len: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut out = String::new();
    let mut h = Sha256::digest(seed.to_le_bytes());
    while out.len() < len {
        out.push_str(&format!("{h:x}"));
        h = Sha256::digest(h);
    }
    out.truncate(len);
    out
}

fn with_environment(vars: &[(String, String)]) -> Stack {
    let mut yaml = String::from(
        "version: 1\nname: big\nregion: us-east-1\ntier: single-vm\nnetwork:\n  vpc: default\napp:\n  image: nginx:1\n  port: 8080\n  environment:\n",
    );
    for (k, v) in vars {
        yaml.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    stack_from(&yaml)
}

#[test]
fn example_script_fits_in_user_data() {
    let ud = render(&example());
    let len = ud.script.len();
    eprintln!("example user-data: {len} bytes (limit {USER_DATA_LIMIT})");
    assert!(len < USER_DATA_LIMIT, "{len} bytes");
    assert_eq!(
        ud.payload().unwrap(),
        ud.script.as_bytes(),
        "sent uncompressed"
    );
    assert_eq!(ud.sha256().len(), 64);
}

#[test]
fn oversized_script_is_sent_gzipped() {
    // Repetitive values: far above the limit raw, far below it compressed.
    let vars: Vec<_> = (0..400)
        .map(|i| (format!("SETTING_{i:04}"), "value ".repeat(10)))
        .collect();
    let ud = render(&with_environment(&vars));
    assert!(ud.script.len() > USER_DATA_LIMIT, "{}", ud.script.len());
    let payload = ud.payload().unwrap();
    assert!(payload.len() <= USER_DATA_LIMIT);
    assert_eq!(&payload[..2], &[0x1f, 0x8b], "gzip magic");
    let mut inflated = String::new();
    flate2::read::GzDecoder::new(&payload[..])
        .read_to_string(&mut inflated)
        .unwrap();
    assert_eq!(inflated, ud.script);
}

#[test]
fn script_too_large_even_gzipped_is_an_error() {
    let vars: Vec<_> = (0..200)
        .map(|i| (format!("SETTING_{i:04}"), noise(i, 250)))
        .collect();
    let ud = render(&with_environment(&vars));
    match ud.payload() {
        Err(RenderError::TooLarge { bytes, limit }) => {
            assert_eq!(limit, USER_DATA_LIMIT);
            assert!(bytes > limit);
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|p| p.len())),
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
    std::env::set_var("IAC_DB_PASSWORD_URLENC", planted);
    let ud = render(&stack_from(&shop_yaml(true, Some(DB_WITH_PASSWORD_REF))));
    let mut all = ud.script.clone();
    for f in &ud.files {
        all.push_str(&f.content);
    }
    for name in [
        "/shop/secret-key",
        "/shop/signing-salt",
        "/shop/db-password",
    ] {
        assert!(ud.script.contains(name), "{name} referenced");
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
        assert!(!ud.script.contains(xtrace), "{xtrace} would print secrets");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Running the script against stubs

/// Host tools the script (and the stubs) may use; anything else is a stub or missing, so the
/// script can never touch the real system.
const HOST_TOOLS: &[&str] = &[
    "awk",
    "cat",
    "chmod",
    "cmp",
    "cp",
    "date",
    "dirname",
    "head",
    "install",
    "ln",
    "mkdir",
    "mv",
    "od",
    "rm",
    "sed",
    "sha256sum",
    "sleep",
    "sort",
    "tee",
    "tr",
    "uname",
];

/// The single-vm sandbox; stubs named in `missing` are left out so the script has to install
/// them.
fn sandbox(ud: &UserData, os_id: &str, missing: &[&str]) -> Sandbox {
    let setup = Setup {
        os_id,
        host_tools: HOST_TOOLS,
        missing,
        env: &[
            ("IAC_DNS_WAIT_SECONDS", "2"),
            ("IAC_DNS_POLL_SECONDS", "1"),
            ("IAC_HEALTH_WAIT_SECONDS", "2"),
            ("STUB_PUBLIC_IP", STUB_PUBLIC_IP),
        ],
        ..Setup::UBUNTU
    };
    Sandbox::new(&setup, &ud.script)
}

#[test]
fn stub_run_example_with_dns_pointing_here() {
    let ud = render(&example());
    let sb = sandbox(&ud, "ubuntu", &[]);
    let env = [("STUB_DNS_IP", STUB_PUBLIC_IP)];
    let out = sb.run_ok(&env);
    let calls = sb.calls();
    let log = sb.log();

    // Secrets: in the root-only env file, nowhere else.
    assert_eq!(
        sb.read("/etc/iac/app.env"),
        format!("SECRET_KEY='{SECRET_VALUE}'\n")
    );
    assert_eq!(sb.mode("/etc/iac/app.env"), 0o600);
    assert_eq!(sb.mode("/etc/iac/db.env"), 0o600);
    assert_eq!(sb.mode("/etc/iac"), 0o700);
    assert!(!log.contains(SECRET_VALUE), "secret in the log:\n{log}");
    assert!(!calls.contains(SECRET_VALUE), "secret in an argv:\n{calls}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET_VALUE));
    assert!(calls.contains(
        "aws ssm get-parameter --name /bookstore/secret-key --with-decryption --query Parameter.Value --output text --region us-east-1"
    ));

    // The generated database password: in db.env and, URL-encoded, in the compose .env only.
    let db_env = sb.read("/etc/iac/db.env");
    let db_pw = db_env
        .lines()
        .find_map(|l| l.strip_prefix("MYSQL_PASSWORD='"))
        .and_then(|v| v.strip_suffix('\''))
        .expect("MYSQL_PASSWORD in db.env");
    assert_eq!(db_pw.len(), 48, "openssl rand -hex 24");
    assert!(db_env.contains("MYSQL_ROOT_PASSWORD='"));
    assert_eq!(
        sb.read("/opt/iac/bookstore-vm/.env"),
        format!("IAC_DB_PASSWORD_URLENC='{db_pw}'\n")
    );
    assert!(!log.contains(db_pw));
    assert!(!calls.contains(db_pw));

    // Files and containers.
    for f in &ud.files {
        assert_eq!(sb.read(&f.path), f.content, "{} written verbatim", f.path);
    }
    let project = sb.root.join("opt/iac/bookstore-vm");
    assert!(calls.contains("docker compose pull --quiet"));
    assert!(calls.contains("docker compose up -d --remove-orphans"));
    assert!(calls.contains(&format!("docker-cwd {}", project.display())));
    assert!(calls.contains("systemctl enable --now docker"));
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
    assert!(log.contains("HTTPS enabled for books.example.org"));
    assert!(
        last_line(&log).ends_with("iac bootstrap finished: https://books.example.org"),
        "{log}"
    );
    assert!(log.contains("== step 1/7 packages"));
    assert_eq!(sb.read("/opt/iac/bookstore-vm/bootstrap.sh"), ud.script);
}

#[test]
fn stub_run_twice_keeps_passwords_and_converges() {
    let ud = render(&example());
    let sb = sandbox(&ud, "ubuntu", &[]);
    let env = [("STUB_DNS_IP", STUB_PUBLIC_IP)];
    sb.run_ok(&env);
    let db_env = sb.read("/etc/iac/db.env");
    let dot_env = sb.read("/opt/iac/bookstore-vm/.env");
    fs::remove_file(&sb.stub_log).unwrap();

    sb.run_ok(&env);
    assert_eq!(sb.read("/etc/iac/db.env"), db_env, "passwords regenerated");
    assert_eq!(sb.read("/opt/iac/bookstore-vm/.env"), dot_env);
    let calls = sb.calls();
    assert!(!ran(&calls, "openssl"), "no new password drawn:\n{calls}");
    assert!(!ran(&calls, "certbot"), "certificate reused:\n{calls}");
    assert!(calls.contains("docker compose up -d"));
    let log = sb.log();
    assert!(log.contains("certificate for books.example.org already present"));
    assert_eq!(
        log.matches("iac bootstrap finished").count(),
        2,
        "log appended"
    );
    assert_eq!(
        sb.read("/etc/nginx/conf.d/iac-bookstore-vm.conf"),
        file(&ud, "/etc/iac/nginx/https.conf")
    );
}

#[test]
fn stub_run_with_dns_elsewhere_falls_back_to_http() {
    let ud = render(&example());
    let sb = sandbox(&ud, "ubuntu", &[]);
    sb.run_ok(&[("STUB_DNS_IP", "203.0.113.99")]);
    let log = sb.log();
    let calls = sb.calls();
    assert!(
        log.contains("HTTPS not enabled: books.example.org resolves to 203.0.113.99, not to this instance (198.51.100.7), after 2s; serving HTTP only"),
        "{log}"
    );
    assert!(!ran(&calls, "certbot"), "{calls}");
    assert!(calls.contains("getent ahostsv4 books.example.org"));
    assert_eq!(
        sb.read("/etc/nginx/conf.d/iac-bookstore-vm.conf"),
        file(&ud, "/etc/iac/nginx/http.conf")
    );
    assert!(last_line(&log).ends_with("iac bootstrap finished: http://books.example.org"));
}

#[test]
fn stub_run_with_unresolvable_domain_falls_back_to_http() {
    let ud = render(&example());
    let sb = sandbox(&ud, "ubuntu", &[]);
    sb.run_ok(&[]);
    let log = sb.log();
    assert!(
        log.contains("HTTPS not enabled: books.example.org resolves to nothing"),
        "{log}"
    );
    assert!(!ran(&sb.calls(), "certbot"));
}

#[test]
fn stub_run_with_certbot_failure_falls_back_to_http() {
    let ud = render(&example());
    let sb = sandbox(&ud, "ubuntu", &[]);
    sb.run_ok(&[("STUB_DNS_IP", STUB_PUBLIC_IP), ("STUB_CERTBOT_FAIL", "1")]);
    let log = sb.log();
    assert!(log.contains(
        "HTTPS not enabled: certbot could not obtain a certificate (see above); serving HTTP only"
    ));
    assert_eq!(
        sb.read("/etc/nginx/conf.d/iac-bookstore-vm.conf"),
        file(&ud, "/etc/iac/nginx/http.conf")
    );
}

#[test]
fn stub_run_fresh_ubuntu_installs_what_is_missing() {
    let ud = render(&stack_from(&shop_yaml(true, Some(DB_WITH_PASSWORD_REF))));
    let sb = sandbox(&ud, "ubuntu", &["docker", "nginx", "certbot", "aws"]);
    sb.run_ok(&[("STUB_DNS_IP", STUB_PUBLIC_IP)]);
    let calls = sb.calls();
    assert_eq!(
        calls.matches(" update").count(),
        1,
        "apt-get update once:\n{calls}"
    );
    for pkg in ["docker.io", "nginx", "certbot"] {
        assert!(
            calls.contains(&format!(
                "apt-get -o DPkg::Lock::Timeout=300 -q -y install --no-install-recommends {pkg}"
            )),
            "{pkg}:\n{calls}"
        );
    }
    assert!(calls.contains("snap install aws-cli --classic"), "{calls}");
    // No region in this stack: it comes from IMDS.
    assert!(calls.contains("/latest/meta-data/placement/region"));
    assert!(calls.contains("--name /shop/db-password"));
    let db_env = sb.read("/etc/iac/db.env");
    assert!(db_env.contains(&format!("MYSQL_PASSWORD='{SECRET_VALUE}'\n")));
    assert_eq!(
        sb.read("/etc/iac/app.env"),
        format!("SECRET_KEY='{SECRET_VALUE}'\nSIGNING_SALT='{SECRET_VALUE}'\n")
    );
    assert!(!sb.log().contains(SECRET_VALUE));
    assert!(!calls.contains(SECRET_VALUE));
    assert!(
        calls.contains("-m o'brien@example.net -d shop.example.net"),
        "{calls}"
    );
}

#[test]
fn stub_run_fresh_amazon_linux_uses_dnf() {
    let ud = render(&stack_from(&shop_yaml(false, Some(DB_GENERATED))));
    let sb = sandbox(&ud, "amzn", &["docker", "nginx", "aws"]);
    // Like some RPM builds, this nginx.conf has its own default server, which would clash.
    let distro_conf = "http {\n  server {\n    listen 80 default_server;\n    listen [::]:80 default_server;\n  }\n}\n";
    fs::create_dir_all(sb.root.join("etc/nginx")).unwrap();
    fs::write(sb.root.join("etc/nginx/nginx.conf"), distro_conf).unwrap();
    sb.run_ok(&[("STUB_COMPOSE_MISSING", "1")]);
    assert_eq!(
        sb.read("/etc/nginx/nginx.conf"),
        distro_conf.replace(" default_server", "")
    );
    let calls = sb.calls();
    assert!(calls.contains("dnf -q -y install docker"), "{calls}");
    assert!(calls.contains("dnf -q -y install nginx"), "{calls}");
    assert!(calls.contains("dnf -q -y install awscli-2"), "{calls}");
    // AL2023 has no compose plugin package: it is downloaded and checked against its checksum.
    let plugin = "/usr/local/lib/docker/cli-plugins/docker-compose";
    assert_eq!(sb.read(plugin), "stub compose\n");
    assert_eq!(sb.mode(plugin), 0o755);
    assert!(calls.contains(
        "https://github.com/docker/compose/releases/latest/download/docker-compose-linux-"
    ));
    assert!(!ran(&calls, "apt-get"));
    assert!(!calls.contains("certbot"), "no domain, no certbot at all");
    let log = sb.log();
    assert!(log.contains("no domain in the stack"));
    assert!(
        last_line(&log).ends_with(&format!("iac bootstrap finished: http://{STUB_PUBLIC_IP}")),
        "{log}"
    );
}

#[test]
fn stub_run_refuses_a_compose_plugin_with_a_bad_checksum() {
    let ud = render(&example());
    let sb = sandbox(&ud, "amzn", &[]);
    let out = sb.run(&[("STUB_COMPOSE_MISSING", "1"), ("STUB_COMPOSE_BAD_SUM", "x")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let log = sb.log();
    assert!(
        log.contains("docker compose download failed its checksum"),
        "{log}"
    );
    assert!(log.contains("FAILED in step 1/7 packages"), "{log}");
    assert!(!sb
        .root
        .join("usr/local/lib/docker/cli-plugins/docker-compose")
        .exists());
}

#[test]
fn stub_run_fails_loudly_when_a_secret_cannot_be_read() {
    let ud = render(&example());
    let sb = sandbox(&ud, "ubuntu", &[]);
    let out = sb.run(&[("STUB_SSM_FAIL", "1")]);
    assert!(!out.status.success(), "{}", sb.explain(&out));
    let log = sb.log();
    assert!(log.contains("FAILED in step 3/7 secrets"), "{log}");
    assert!(!sb.calls().contains("docker compose up"));
    assert!(
        !sb.root.join("etc/iac/app.env").exists(),
        "no partial env file"
    );
}
