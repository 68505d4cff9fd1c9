//! User-data of the single-vm tier: one bash script that installs Docker, nginx and certbot,
//! fetches secrets from SSM, starts the compose project (app + MySQL) and enables HTTPS.
//!
//! Every file the script writes is rendered here first and embedded in the script as a quoted
//! heredoc, so `iac render --files` shows exactly what lands on disk and tests can validate each
//! file with its own tool (nginx -t, docker-compose config, shellcheck).

use serde::Serialize;

use super::{
    app_environment, cert_dir, check_tier, environment, invalid, nginx_files, render, require_word,
    script_files, KeyValue, RenderError, RenderedFile, ScriptFile, UserData, ACME_ROOT, APP_ENV,
    EOF_MARK, ETC_DIR, LOG_FILE, NGINX_HTTP, NGINX_HTTPS, PROJECT_ROOT,
};
#[cfg(test)]
use super::{
    CERTBOT_RENEW_SERVICE as RENEW_SERVICE, CERTBOT_RENEW_TIMER as RENEW_TIMER,
    NGINX_DEPLOY_HOOK as DEPLOY_HOOK,
};
use crate::stack::{Stack, Tier};

const DB_ENV: &str = "/etc/iac/db.env";
/// Compose interpolation variable carrying the URL-encoded database password; the script
/// writes it to the project's `.env`, so the compose file itself never holds the password.
const DB_URL_PASSWORD_VAR: &str = "IAC_DB_PASSWORD_URLENC";

#[derive(Serialize)]
struct ComposeDb {
    image: String,
    name: String,
    user: String,
    env_file: &'static str,
    url_env: String,
    url: String,
}

/// Context of `templates/compose.yaml.j2`.
#[derive(Serialize)]
struct ComposeCtx<'a> {
    stack: &'a str,
    image: &'a str,
    port: u16,
    environment: Vec<KeyValue<'a>>,
    app_env_file: &'static str,
    database: Option<ComposeDb>,
}

#[derive(Serialize)]
struct SecretCtx<'a> {
    env: &'a str,
    ssm: &'a str,
}

#[derive(Serialize)]
struct ScriptDb<'a> {
    password_ssm: Option<&'a str>,
    env_file: &'static str,
    url_var: &'static str,
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
    log_file: &'static str,
    project_dir: String,
    etc_dir: &'static str,
    app_env: &'static str,
    nginx_http: &'static str,
    nginx_https: &'static str,
    acme_root: &'static str,
    files: Vec<ScriptFile>,
    eof: &'static str,
    secrets: Vec<SecretCtx<'a>>,
    needs_aws: bool,
    database: Option<ScriptDb<'a>>,
    domain: Option<ScriptDomain<'a>>,
    port: u16,
    health_path: &'a str,
}

/// Renders the user-data of the single-vm tier for `stack`.
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

    let compose = ComposeCtx {
        stack: &s.name,
        image: &s.app.image,
        port: s.app.port,
        environment: app_environment(&s.app),
        app_env_file: APP_ENV,
        database: s.database.as_ref().map(|db| ComposeDb {
            image: format!("mysql:{}", db.version),
            name: db.name.clone(),
            user: db.user.clone(),
            env_file: DB_ENV,
            url_env: db.url_env.clone(),
            // `:?` makes compose refuse to start rather than hand the app an empty password
            // when `.env` is missing.
            url: format!(
                "mysql+pymysql://{}:${{{DB_URL_PASSWORD_VAR}:?run the iac bootstrap to create .env}}@db:3306/{}",
                db.user, db.name
            ),
        }),
    };
    files.push((
        format!("{project_dir}/compose.yaml"),
        "644",
        render(&env, "templates/compose.yaml.j2", &compose)?,
    ));

    files.extend(nginx_files(&env, &s.name, s.app.port, s.domain.as_ref())?);

    let files = script_files(files)?;

    let secrets: Vec<SecretCtx> = s
        .app
        .secrets
        .iter()
        .map(|(env, r)| SecretCtx { env, ssm: &r.ssm })
        .collect();
    let database = s.database.as_ref().map(|db| ScriptDb {
        password_ssm: db.password.as_ref().map(|p| p.ssm.as_str()),
        env_file: DB_ENV,
        url_var: DB_URL_PASSWORD_VAR,
    });
    let needs_aws = !secrets.is_empty()
        || database
            .as_ref()
            .is_some_and(|db| db.password_ssm.is_some());
    let ctx = ScriptCtx {
        stack: &s.name,
        region: s.region.as_deref(),
        log_file: LOG_FILE,
        project_dir,
        etc_dir: ETC_DIR,
        app_env: APP_ENV,
        nginx_http: NGINX_HTTP,
        nginx_https: NGINX_HTTPS,
        acme_root: ACME_ROOT,
        files,
        eof: EOF_MARK,
        secrets,
        needs_aws,
        database,
        domain: s.domain.as_ref().map(|d| ScriptDomain {
            name: &d.name,
            email: &d.email,
            cert: format!("{}/fullchain.pem", cert_dir(&d.name)),
        }),
        port: s.app.port,
        health_path: &s.app.health_path,
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
                DEPLOY_HOOK
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
        assert_eq!(ud.files.len(), 2);
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
    fn sha256_is_hex_of_script() {
        let ud = single_vm(&example()).unwrap();
        let h = ud.sha256();
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, single_vm(&example()).unwrap().sha256(), "deterministic");
    }
}
