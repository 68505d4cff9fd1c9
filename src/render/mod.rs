//! Rendering of boot scripts (EC2 user-data) and the files they write.
//!
//! Templates are embedded at compile time (`templates/`, `userdata/`) and rendered with minijinja
//! in strict-undefined mode, each from its own typed context, so a typo in a template is a render
//! error rather than an empty string in a production script. Secrets are only ever referenced
//! by SSM parameter name; the instance fetches them at boot.

pub mod alb_asg;
pub mod app_spec;
pub mod custom_scaler;
mod filters;
pub mod lb_vms;
pub mod pins;
mod script_head;
pub mod single_vm;
pub mod swarm;

use std::io::Write;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::stack::{App, Domain, Stack, Tier};

pub use filters::shell_quote_str;
pub use single_vm::single_vm;

/// EC2's limit on raw (before base64) user-data bytes.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed to render (a bug in iac, or a value a template cannot carry).
    #[error("rendering template `{name}` failed: {source:#}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    /// The stack holds a value that cannot be placed safely into the rendered files.
    #[error("cannot render `{field}`: {message}")]
    Invalid { field: String, message: String },
    /// Even gzip-compressed, the user-data exceeds what EC2 accepts.
    #[error("user-data is {bytes} bytes even gzip-compressed; EC2 accepts at most {limit} bytes (shorten app.environment)")]
    TooLarge { bytes: usize, limit: usize },
    /// Compressing the user-data failed.
    #[error("compressing user-data failed: {0}")]
    Compress(#[from] std::io::Error),
}

/// One file the boot script writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the instance.
    pub path: String,
    /// Full content, ending with a newline.
    pub content: String,
}

/// A file embedded in a boot script as a quoted heredoc (`write_file PATH MODE <<'EOF'`).
#[derive(Debug, Serialize)]
pub(crate) struct ScriptFile {
    pub path: String,
    pub mode: &'static str,
    pub content: String,
}

impl From<ScriptFile> for RenderedFile {
    fn from(f: ScriptFile) -> Self {
        RenderedFile {
            path: f.path,
            content: f.content,
        }
    }
}

/// Heredoc delimiter for embedded files; checked not to occur as a line in any of them.
pub(crate) const EOF_MARK: &str = "IAC_FILE_EOF";

/// Turns `(path, mode, content)` into heredoc-ready files: each ends with a newline (the
/// delimiter needs its own line) and none holds a line equal to [`EOF_MARK`].
pub(crate) fn script_files(
    files: Vec<(String, &'static str, String)>,
) -> Result<Vec<ScriptFile>, RenderError> {
    files
        .into_iter()
        .map(|(path, mode, mut content)| {
            if content.lines().any(|line| line == EOF_MARK) {
                return Err(invalid(
                    &path,
                    format!("a line equal to the heredoc delimiter {EOF_MARK}"),
                ));
            }
            if !content.ends_with('\n') {
                content.push('\n');
            }
            Ok(ScriptFile {
                path,
                mode,
                content,
            })
        })
        .collect()
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> RenderError {
    RenderError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The stack is of `tier` (`what` names the script asked for) and its name is a plain word.
pub(crate) fn check_tier(stack: &Stack, tier: Tier, what: &str) -> Result<(), RenderError> {
    let s = &stack.spec;
    if s.tier != tier {
        return Err(invalid(
            "tier",
            format!(
                "{} {what} asked for a `{}` stack",
                tier.as_str(),
                s.tier.as_str()
            ),
        ));
    }
    require_word("name", &s.name, "-")
}

/// One `KEY=value` line of an env file (or entry of a compose `environment:` map).
#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: &'a str,
}

/// The app's plain settings, in key order.
fn app_environment(app: &App) -> Vec<KeyValue<'_>> {
    app.environment
        .iter()
        .map(|(key, value)| KeyValue { key, value })
        .collect()
}

/// The app's secrets: variable name and SSM parameter name, in key order.
fn app_secrets(app: &App) -> Vec<KeyValue<'_>> {
    app.secrets
        .iter()
        .map(|(key, r)| KeyValue { key, value: &r.ssm })
        .collect()
}

/// The app's settings and secret names can be written to the env file Docker's `--env-file`
/// reads: variable names are plain words, values hold no line break.
fn check_app_env_file(app: &App) -> Result<(), RenderError> {
    for (key, value) in &app.environment {
        require_word("app.environment", key, "_")?;
        if value.contains(['\n', '\r', '\0']) {
            return Err(invalid(
                &format!("app.environment.{key}"),
                "a line break cannot be carried by Docker's --env-file",
            ));
        }
    }
    for key in app.secrets.keys() {
        require_word("app.secrets", key, "_")?;
    }
    Ok(())
}

/// Values that end up unquoted in paths, config directives or URLs must be plain words. The
/// stack validator already guarantees this; the check keeps the renderer safe on its own.
pub(crate) fn require_word(field: &str, value: &str, extra: &str) -> Result<(), RenderError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || extra.contains(ch));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{value}` holds characters that cannot be placed here safely"),
        ))
    }
}

/// The certificate directory certbot creates for `domain`.
pub(crate) fn cert_dir(domain: &str) -> String {
    format!("/etc/letsencrypt/live/{domain}")
}

/// The SSM parameter `leaf` of stack `stack`: `/iac/<stack>/<leaf>`. Runtime facts of the
/// multi-VM tiers travel through these.
pub fn param_name(stack: &str, leaf: &str) -> String {
    format!("/iac/{stack}/{leaf}")
}

/// Where each instance publishes its boot report (`templates/boot-report.sh.j2`): one
/// parameter per instance, this path followed by the instance id.
pub fn boot_reports_path(stack: &str) -> String {
    param_name(stack, "boot/")
}

// ---------------------------------------------------------------------------------------------
// Where every tier's boot script puts things on the instance (the shared head of the multi-VM
// tiers, templates/script-head.sh.j2, uses them for its own files too)

/// Where the app's project lives: `/opt/iac/<stack>` (for compose, the directory name becomes
/// the project name).
pub(crate) const PROJECT_ROOT: &str = "/opt/iac";
/// Root-only directory for env files holding secrets (mode 700, files 600).
pub(crate) const ETC_DIR: &str = "/etc/iac";
/// The app's environment file.
pub(crate) const APP_ENV: &str = "/etc/iac/app.env";
/// The boot script's log.
pub(crate) const LOG_FILE: &str = "/var/log/iac-bootstrap.log";

// ---------------------------------------------------------------------------------------------
// nginx in front of the app, with Let's Encrypt (single-vm; the swarm tier's managers)

/// Both nginx variants are staged here; the boot script copies one of them into `conf.d`.
pub(crate) const NGINX_HTTP: &str = "/etc/iac/nginx/http.conf";
pub(crate) const NGINX_HTTPS: &str = "/etc/iac/nginx/https.conf";
/// certbot's webroot, served by nginx under `/.well-known/acme-challenge/`.
pub(crate) const ACME_ROOT: &str = "/var/www/letsencrypt";
pub(crate) const CERTBOT_RENEW_SERVICE: &str = "/etc/systemd/system/iac-certbot-renew.service";
pub(crate) const CERTBOT_RENEW_TIMER: &str = "/etc/systemd/system/iac-certbot-renew.timer";
pub(crate) const NGINX_DEPLOY_HOOK: &str =
    "/etc/letsencrypt/renewal-hooks/deploy/iac-reload-nginx.sh";
/// Obtains the certificate (the boot script; the timer when none exists yet) or renews it.
pub const CERTBOT_SCRIPT: &str = "/usr/local/sbin/iac-certbot";

#[derive(Serialize)]
struct TlsCtx {
    cert: String,
    key: String,
}

/// Context of `templates/nginx-site.conf.j2`; `tls: None` renders the HTTP-only variant.
#[derive(Serialize)]
struct NginxCtx<'a> {
    stack: &'a str,
    server_name: &'a str,
    port: u16,
    /// Proxy to this nginx upstream instead of `127.0.0.1:<port>` (single-vm: the app update
    /// switches it between two containers).
    upstream: Option<&'a str>,
    acme_root: &'static str,
    tls: Option<TlsCtx>,
}

/// Context of the certbot renewal unit, timer and deploy hook.
#[derive(Serialize)]
struct RenewCtx<'a> {
    stack: &'a str,
}

/// Context of `templates/iac-certbot.sh.j2`.
#[derive(Serialize)]
pub(crate) struct CertbotCtx<'a> {
    pub stack: &'a str,
    pub domain: &'a str,
    pub email: &'a str,
    /// The file whose presence means a certificate is installed.
    pub cert: String,
    pub acme_root: &'static str,
    /// certbot's own server on this loopback port (behind HAProxy) instead of nginx's webroot.
    pub acme_port: Option<u16>,
    /// Run after a first certificate (HAProxy's deploy hook) instead of switching nginx's site.
    pub hook: Option<&'static str>,
    /// The live nginx site, and the staged variants copied onto it.
    pub site: String,
    pub https_conf: &'static str,
    pub http_conf: &'static str,
}

/// The [`CERTBOT_SCRIPT`] file.
pub(crate) fn certbot_script(
    env: &Environment,
    ctx: &CertbotCtx,
) -> Result<(String, &'static str, String), RenderError> {
    Ok((
        CERTBOT_SCRIPT.to_string(),
        "755",
        render(env, "templates/iac-certbot.sh.j2", ctx)?,
    ))
}

/// The files of an nginx site proxying to `127.0.0.1:<port>`, as `(path, mode, content)`: the
/// HTTP variant ([`NGINX_HTTP`]); with a domain also the HTTPS variant ([`NGINX_HTTPS`]), the
/// certbot renewal service and timer and the deploy hook that reloads nginx.
pub(crate) fn nginx_files(
    env: &Environment,
    stack: &str,
    port: u16,
    upstream: Option<&str>,
    domain: Option<&Domain>,
) -> Result<Vec<(String, &'static str, String)>, RenderError> {
    let server_name = domain.map_or("_", |d| d.name.as_str());
    let nginx = |tls| NginxCtx {
        stack,
        server_name,
        port,
        upstream,
        acme_root: ACME_ROOT,
        tls,
    };
    let mut files = vec![(
        NGINX_HTTP.to_string(),
        "644",
        render(env, "templates/nginx-site.conf.j2", &nginx(None))?,
    )];
    if let Some(d) = domain {
        let dir = cert_dir(&d.name);
        let tls = TlsCtx {
            cert: format!("{dir}/fullchain.pem"),
            key: format!("{dir}/privkey.pem"),
        };
        files.push((
            NGINX_HTTPS.to_string(),
            "644",
            render(env, "templates/nginx-site.conf.j2", &nginx(Some(tls)))?,
        ));
        let renew = RenewCtx { stack };
        for (path, mode, name) in [
            (
                CERTBOT_RENEW_SERVICE,
                "644",
                "templates/iac-certbot-renew.service.j2",
            ),
            (
                CERTBOT_RENEW_TIMER,
                "644",
                "templates/iac-certbot-renew.timer.j2",
            ),
            (
                NGINX_DEPLOY_HOOK,
                "755",
                "templates/certbot-deploy-hook.sh.j2",
            ),
        ] {
            files.push((path.to_string(), mode, render(env, name, &renew)?));
        }
        let certbot = CertbotCtx {
            stack,
            domain: &d.name,
            email: &d.email,
            cert: format!("{dir}/fullchain.pem"),
            acme_root: ACME_ROOT,
            acme_port: None,
            hook: None,
            site: format!("/etc/nginx/conf.d/iac-{stack}.conf"),
            https_conf: NGINX_HTTPS,
            http_conf: NGINX_HTTP,
        };
        files.push(certbot_script(env, &certbot)?);
    }
    Ok(files)
}

/// The rendered user-data of one instance.
#[derive(Debug, Clone)]
pub struct UserData {
    /// Exactly what `iac render` prints: the full bash boot script.
    pub script: String,
    /// The individual files the script writes (for tests and `iac render --files`).
    pub files: Vec<RenderedFile>,
}

impl UserData {
    /// The bytes sent to EC2: the script itself when it fits in [`USER_DATA_LIMIT`], else
    /// gzip-compressed (cloud-init detects and inflates gzip); an error when even that is too big.
    pub fn payload(&self) -> Result<Vec<u8>, RenderError> {
        payload_of(self.script.as_bytes())
    }

    /// sha256 hex of the script, put on the instance as a tag to detect user-data changes.
    pub fn sha256(&self) -> String {
        format!("{:x}", Sha256::digest(self.script.as_bytes()))
    }
}

fn payload_of(script: &[u8]) -> Result<Vec<u8>, RenderError> {
    if script.len() <= USER_DATA_LIMIT {
        return Ok(script.to_vec());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(script)?;
    let bytes = gz.finish()?;
    if bytes.len() > USER_DATA_LIMIT {
        return Err(RenderError::TooLarge {
            bytes: bytes.len(),
            limit: USER_DATA_LIMIT,
        });
    }
    Ok(bytes)
}

/// Every embedded template, by name. Names keep their real file names so errors point at files.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "templates/iac-certbot.sh.j2",
        include_str!("../../templates/iac-certbot.sh.j2"),
    ),
    (
        "templates/certbot-install.sh.j2",
        include_str!("../../templates/certbot-install.sh.j2"),
    ),
    (
        "templates/compose-install.sh.j2",
        include_str!("../../templates/compose-install.sh.j2"),
    ),
    (
        "templates/app-container.sh.j2",
        include_str!("../../templates/app-container.sh.j2"),
    ),
    (
        "templates/app-secrets.sh.j2",
        include_str!("../../templates/app-secrets.sh.j2"),
    ),
    (
        "templates/app-update.sh.j2",
        include_str!("../../templates/app-update.sh.j2"),
    ),
    (
        "templates/data-volume.sh.j2",
        include_str!("../../templates/data-volume.sh.j2"),
    ),
    (
        "userdata/single-vm.sh.j2",
        include_str!("../../userdata/single-vm.sh.j2"),
    ),
    (
        "templates/compose.yaml.j2",
        include_str!("../../templates/compose.yaml.j2"),
    ),
    (
        "templates/nginx-site.conf.j2",
        include_str!("../../templates/nginx-site.conf.j2"),
    ),
    (
        "templates/iac-certbot-renew.service.j2",
        include_str!("../../templates/iac-certbot-renew.service.j2"),
    ),
    (
        "templates/iac-certbot-renew.timer.j2",
        include_str!("../../templates/iac-certbot-renew.timer.j2"),
    ),
    (
        "templates/certbot-deploy-hook.sh.j2",
        include_str!("../../templates/certbot-deploy-hook.sh.j2"),
    ),
    // Boot-script steps shared by the tiers (all environments start from this one).
    (
        "templates/boot-report.sh.j2",
        include_str!("../../templates/boot-report.sh.j2"),
    ),
    (
        "templates/nginx-sites.sh.j2",
        include_str!("../../templates/nginx-sites.sh.j2"),
    ),
    (
        "templates/https-dns-check.sh.j2",
        include_str!("../../templates/https-dns-check.sh.j2"),
    ),
    (
        "templates/certbot-webroot.sh.j2",
        include_str!("../../templates/certbot-webroot.sh.j2"),
    ),
];

/// The shared template environment: strict undefined, no HTML/JSON auto-escaping (we emit
/// shell, YAML and nginx syntax and escape explicitly with filters), block tags trimmed so
/// `{% if %}` lines leave no blank lines behind.
fn environment() -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_filter("shell_quote", filters::shell_quote);
    env.add_filter("yaml_str", filters::yaml_str);
    env.add_filter("compose_str", filters::compose_str);
    env.add_global("pins", minijinja::Value::from_serialize(pins::pins()));
    env.add_global("certbot_script", CERTBOT_SCRIPT);
    add_templates(&mut env, TEMPLATES)?;
    Ok(env)
}

/// The shared environment plus a tier's own templates.
fn tier_environment(
    templates: &'static [(&'static str, &'static str)],
) -> Result<Environment<'static>, RenderError> {
    let mut env = environment()?;
    add_templates(&mut env, templates)?;
    Ok(env)
}

fn add_templates(
    env: &mut Environment<'static>,
    templates: &'static [(&'static str, &'static str)],
) -> Result<(), RenderError> {
    for (name, source) in templates {
        env.add_template(name, source)
            .map_err(|source| RenderError::Template {
                name: (*name).to_string(),
                source,
            })?;
    }
    Ok(())
}

/// Renders template `name` with a typed context.
fn render<C: Serialize>(env: &Environment, name: &str, ctx: &C) -> Result<String, RenderError> {
    let wrap = |source| RenderError::Template {
        name: name.to_string(),
        source,
    };
    env.get_template(name)
        .map_err(wrap)?
        .render(ctx)
        .map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payload_is_the_script() {
        assert_eq!(payload_of(b"#!/bin/bash\n").unwrap(), b"#!/bin/bash\n");
    }

    #[test]
    fn large_compressible_payload_is_gzip() {
        let script = "echo hello\n".repeat(4000);
        let bytes = payload_of(script.as_bytes()).unwrap();
        assert!(bytes.len() <= USER_DATA_LIMIT);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .unwrap();
        assert_eq!(out, script);
    }

    #[test]
    fn incompressible_payload_is_refused() {
        // A hash chain is incompressible enough to stay above the limit after gzip.
        let mut script = String::new();
        let mut h = Sha256::digest(b"seed");
        while script.len() < 3 * USER_DATA_LIMIT {
            script.push_str(&format!("{h:x}"));
            h = Sha256::digest(h);
        }
        match payload_of(script.as_bytes()) {
            Err(RenderError::TooLarge { bytes, limit }) => {
                assert!(bytes > limit);
                assert_eq!(limit, USER_DATA_LIMIT);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn all_templates_parse() {
        environment().unwrap();
    }
}
