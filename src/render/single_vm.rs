//! User-data of the single-vm tier: one bash script that installs Docker, nginx and certbot,
//! mounts the data volume (MySQL's data and `/etc/letsencrypt`), starts MySQL with compose,
//! runs the app from the app spec in SSM through the update script, and enables HTTPS.
//!
//! Every file the script writes is rendered here first and embedded in the script as a quoted
//! heredoc, so `iac render --files` shows exactly what lands on disk and tests can validate each
//! file with its own tool (nginx -t, docker-compose config, shellcheck).

use serde::Serialize;

use super::app_spec::{network, update_command, upstream_file, Switch, EXTRA_ENV, UPDATE_SCRIPT};
use super::{
    cert_dir, check_tier, environment, invalid, nginx_files, param_name, render, require_word,
    script_files, RenderError, RenderedFile, ScriptFile, UserData, ACME_ROOT, EOF_MARK, ETC_DIR,
    LOG_FILE, NGINX_HTTP, NGINX_HTTPS, PROJECT_ROOT,
};
#[cfg(test)]
use super::{
    CERTBOT_RENEW_SERVICE as RENEW_SERVICE, CERTBOT_RENEW_TIMER as RENEW_TIMER, CERTBOT_SCRIPT,
    NGINX_DEPLOY_HOOK as DEPLOY_HOOK,
};
use crate::stack::{Stack, Tier};

/// Root-only file holding the app user's password (from SSM), mounted read-only into the
/// database container as `MYSQL_PASSWORD_FILE`.
const DB_PASSWORD_FILE: &str = "/etc/iac/db-password";
/// MySQL's administrator password (under [`DATA_DIR`]), generated on the instance and kept on
/// the data volume beside the data it guards; mounted read-only as `MYSQL_ROOT_PASSWORD_FILE`.
fn db_root_password_file() -> String {
    format!("{DATA_DIR}/.iac/mysql-root-password")
}
/// Where the data volume is mounted: MySQL's data directory and `/etc/letsencrypt` live on it.
pub const DATA_DIR: &str = "/var/lib/iac-data";
/// Where iac attaches the data volume (Nitro instances show it as NVMe).
pub const DATA_DEVICE: &str = "/dev/sdf";
/// SSM parameter (SecureString) under `/iac/<stack>/`: the database password iac generates
/// when the stack names none. Read at boot, so a new VM can open the old data.
pub const DB_PASSWORD_PARAM: &str = "db-password";

#[derive(Serialize)]
struct ComposeDb {
    image: String,
    name: String,
    user: String,
    password_file: &'static str,
    root_password_file: String,
    data_dir: String,
}

/// Context of `templates/compose.yaml.j2` (the database only).
#[derive(Serialize)]
struct ComposeCtx<'a> {
    stack: &'a str,
    update_script: &'static str,
    network: String,
    database: ComposeDb,
}

#[derive(Serialize)]
struct ScriptDb<'a> {
    password_ssm: String,
    password_file: &'static str,
    root_password_file: String,
    name: &'a str,
    user: &'a str,
    url_env: &'a str,
}

#[derive(Serialize)]
struct ScriptDomain<'a> {
    name: &'a str,
    email: &'a str,
    cert: String,
}

/// Context of `userdata/single-vm.sh.j2`.
#[derive(Serialize)]
struct ScriptCtx<'a> {
    stack: &'a str,
    region: Option<&'a str>,
    /// Where the instance publishes its boot report (`templates/boot-report.sh.j2`).
    boot_reports: String,
    log_file: &'static str,
    project_dir: String,
    etc_dir: &'static str,
    nginx_http: &'static str,
    nginx_https: &'static str,
    acme_root: &'static str,
    files: Vec<ScriptFile>,
    eof: &'static str,
    database: Option<ScriptDb<'a>>,
    domain: Option<ScriptDomain<'a>>,
    port: u16,
    device: &'static str,
    data_dir: &'static str,
    update_script: &'static str,
    upstream_file: String,
    extra_env: &'static str,
}

/// Renders the user-data of the single-vm tier for `stack`. It holds neither the image nor the
/// environment (those are in the app spec parameter), so changing them updates the app in place.
pub fn single_vm(stack: &Stack) -> Result<UserData, RenderError> {
    check_tier(stack, Tier::SingleVm, "user-data")?;
    let s = &stack.spec;
    if let Some(d) = &s.domain {
        require_word("domain.name", &d.name, ".-")?;
    }
    if let Some(db) = &s.database {
        require_word("database.name", &db.name, "_")?;
        require_word("database.user", &db.user, "_")?;
        require_word("database.version", &db.version, ".")?;
        require_word("database.url_env", &db.url_env, "_")?;
        // The mysql image refuses to start with MYSQL_USER=root: catch it here, not at boot.
        if db.user.eq_ignore_ascii_case("root") {
            return Err(invalid(
                "database.user",
                "`root` is MySQL's administrator; the app needs its own user",
            ));
        }
    }

    let env = environment()?;
    let project_dir = format!("{PROJECT_ROOT}/{}", s.name);
    let mut files: Vec<(String, &'static str, String)> = Vec::new();

    if let Some(db) = &s.database {
        let compose = ComposeCtx {
            stack: &s.name,
            update_script: UPDATE_SCRIPT,
            network: network(stack),
            database: ComposeDb {
                image: format!("mysql:{}", db.version),
                name: db.name.clone(),
                user: db.user.clone(),
                password_file: DB_PASSWORD_FILE,
                root_password_file: db_root_password_file(),
                data_dir: format!("{DATA_DIR}/mysql"),
            },
        };
        files.push((
            format!("{project_dir}/compose.yaml"),
            "644",
            render(&env, "templates/compose.yaml.j2", &compose)?,
        ));
    }
    let upstream = "iac_app";
    files.extend(nginx_files(
        &env,
        &s.name,
        s.app.port,
        Some(upstream),
        s.domain.as_ref(),
    )?);
    files.push((
        UPDATE_SCRIPT.to_string(),
        "755",
        update_command(stack, Switch::Nginx),
    ));

    let files = script_files(files)?;
    let database = s.database.as_ref().map(|db| ScriptDb {
        password_ssm: db
            .password
            .as_ref()
            .map_or_else(|| param_name(&s.name, DB_PASSWORD_PARAM), |p| p.ssm.clone()),
        password_file: DB_PASSWORD_FILE,
        root_password_file: db_root_password_file(),
        name: &db.name,
        user: &db.user,
        url_env: &db.url_env,
    });
    let ctx = ScriptCtx {
        stack: &s.name,
        region: s.region.as_deref(),
        boot_reports: super::boot_reports_path(&s.name),
        log_file: LOG_FILE,
        project_dir,
        etc_dir: ETC_DIR,
        nginx_http: NGINX_HTTP,
        nginx_https: NGINX_HTTPS,
        acme_root: ACME_ROOT,
        files,
        eof: EOF_MARK,
        database,
        domain: s.domain.as_ref().map(|d| ScriptDomain {
            name: &d.name,
            email: &d.email,
            cert: format!("{}/fullchain.pem", cert_dir(&d.name)),
        }),
        port: s.app.port,
        device: DATA_DEVICE,
        data_dir: DATA_DIR,
        update_script: UPDATE_SCRIPT,
        upstream_file: upstream_file(stack),
        extra_env: EXTRA_ENV,
    };
    let script = render(&env, "userdata/single-vm.sh.j2", &ctx)?;
    let files = ctx.files.into_iter().map(RenderedFile::from).collect();
    Ok(UserData { script, files })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn example() -> Stack {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/bookstore-vm.yaml");
        crate::stack::load(&path).unwrap()
    }

    #[test]
    fn example_script_snapshot() {
        let ud = single_vm(&example()).unwrap();
        insta::assert_snapshot!("bookstore_vm_script", ud.script);
    }

    #[test]
    fn example_files_are_listed() {
        let ud = single_vm(&example()).unwrap();
        let paths: Vec<&str> = ud.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/opt/iac/bookstore-vm/compose.yaml",
                NGINX_HTTP,
                NGINX_HTTPS,
                RENEW_SERVICE,
                RENEW_TIMER,
                DEPLOY_HOOK,
                CERTBOT_SCRIPT,
                UPDATE_SCRIPT,
            ]
        );
        for f in &ud.files {
            assert!(ud.script.contains(&f.content), "{} embedded", f.path);
        }
    }

    #[test]
    fn no_domain_means_no_https_files() {
        let mut stack = example();
        stack.spec.domain = None;
        let ud = single_vm(&stack).unwrap();
        assert_eq!(ud.files.len(), 3);
        assert!(ud.files[1].content.contains("server_name _;"));
        assert!(!ud.script.contains("certbot"));
    }

    #[test]
    fn other_tiers_are_refused() {
        let mut stack = example();
        stack.spec.tier = Tier::Swarm;
        assert!(matches!(
            single_vm(&stack),
            Err(RenderError::Invalid { .. })
        ));
    }

    #[test]
    fn unsafe_domain_is_refused() {
        let mut stack = example();
        if let Some(d) = stack.spec.domain.as_mut() {
            d.name = "x.org; include /etc/passwd".to_string();
        }
        assert!(matches!(
            single_vm(&stack),
            Err(RenderError::Invalid { .. })
        ));
    }

    #[test]
    fn user_data_does_not_depend_on_the_image_or_the_environment() {
        let mut stack = example();
        let before = single_vm(&stack).unwrap().script;
        stack.spec.app.image = "ghcr.io/example/bookstore:9.9.9".to_string();
        stack
            .spec
            .app
            .environment
            .insert("FEATURE".to_string(), "on".to_string());
        assert_eq!(single_vm(&stack).unwrap().script, before);
    }

    #[test]
    fn sha256_is_hex_of_script() {
        let ud = single_vm(&example()).unwrap();
        let h = ud.sha256();
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, single_vm(&example()).unwrap().sha256(), "deterministic");
    }
}
