//! The app's spec as an SSM parameter, and the command that applies it on a VM.
//!
//! The image, the health path and the environment (plain values, and secrets by SSM name) are
//! published as `KEY=VALUE` lines ([`text`]) rather than baked into user-data, so changing them
//! never replaces an instance: swarm's leader applies its service spec with a rolling update;
//! single-vm and lb-vms web VMs run [`update_command`], which starts the new container beside
//! the old one and switches over only once it is healthy.

use serde::Serialize;

use super::{environment, invalid, param_name, render, require_word, RenderError};
use crate::stack::Stack;

/// SSM parameter (String) of single-vm and lb-vms: the app spec ([`text`]), written by iac.
pub const APP_PARAM: &str = "app";
/// Installed on the VMs; the same text as [`update_command`].
pub const UPDATE_SCRIPT: &str = "/usr/local/sbin/iac-app-update";
/// Root-only env file the boot script writes for settings that are not in the spec (the
/// database URL); appended to the app's environment.
pub const EXTRA_ENV: &str = "/etc/iac/app-extra.env";
use crate::stack::validate::SSM_STANDARD_VALUE_MAX as SSM_VALUE_LIMIT;

/// Names a secret cannot have: swarm's service script exports secrets to the docker CLI's
/// environment on updates, where these would steer the shell or the CLI.
const RESERVED_SECRET_NAMES: &[&str] = &["PATH", "HOME", "IFS", "ENV", "PWD", "SHELL", "TMPDIR"];
const RESERVED_SECRET_PREFIXES: &[&str] = &["LD_", "DOCKER_"];

/// An environment variable name Docker's env files and the scripts both carry.
pub(crate) fn check_env_name(field: &str, name: &str) -> Result<(), RenderError> {
    require_word(field, name, "_")?;
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(invalid(
            field,
            format!("`{name}` starts with a digit, which no environment variable can"),
        ));
    }
    Ok(())
}

/// The spec: `header`, then `keys` in order, then `ENV_<NAME>=<value>` for each plain variable
/// and `SECRET_<NAME>=<ssm name>` for each secret (names only: the VM reads the values when it
/// applies the spec). Deterministic: the same stack gives the same bytes.
pub fn text(stack: &Stack, header: &str, keys: &[(&str, String)]) -> Result<String, RenderError> {
    let s = &stack.spec;
    require_word("app.image", &s.app.image, "._-/:@")?;
    let health = &s.app.health_path;
    if !health.starts_with('/') || health.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "app.health_path",
            format!("`{health}` is not a URL path (a `/`, no spaces)"),
        ));
    }
    let mut out = header.to_string();
    for (key, value) in keys {
        out.push_str(&format!("{key}={value}\n"));
    }
    for (key, value) in &s.app.environment {
        check_env_name("app.environment", key)?;
        if value.contains(['\n', '\r', '\0']) {
            return Err(invalid(
                &format!("app.environment.{key}"),
                "a line break cannot be carried by Docker's --env-file",
            ));
        }
        out.push_str(&format!("ENV_{key}={value}\n"));
    }
    for (key, secret) in &s.app.secrets {
        check_env_name("app.secrets", key)?;
        if RESERVED_SECRET_NAMES.contains(&key.as_str())
            || RESERVED_SECRET_PREFIXES.iter().any(|p| key.starts_with(p))
        {
            return Err(invalid(
                &format!("app.secrets.{key}"),
                "this name steers the shell or the docker CLI; rename the variable",
            ));
        }
        require_word(&format!("app.secrets.{key}.ssm"), &secret.ssm, "/_.-")?;
        if !secret.ssm.starts_with('/') {
            return Err(invalid(
                &format!("app.secrets.{key}.ssm"),
                "an SSM parameter name starting with `/`",
            ));
        }
        out.push_str(&format!("SECRET_{key}={}\n", secret.ssm));
    }
    if out.len() > SSM_VALUE_LIMIT {
        return Err(invalid(
            "app.environment",
            format!(
                "the app spec is {} bytes; an SSM parameter holds {SSM_VALUE_LIMIT}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// The app spec of a single-vm or lb-vms stack: `IMAGE`, `PORT` (the container's),
/// `HEALTH_PATH`, then the environment.
pub fn app_spec(stack: &Stack) -> Result<String, RenderError> {
    let s = &stack.spec;
    text(
        stack,
        &format!(
            "# iac app spec of stack {}: KEY=VALUE lines, read literally by {UPDATE_SCRIPT}.\n",
            s.name
        ),
        &[
            ("IMAGE", s.app.image.clone()),
            ("PORT", s.app.port.to_string()),
            ("HEALTH_PATH", s.app.health_path.clone()),
        ],
    )
}

/// How the update hands traffic to the new container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// single-vm: two containers take turns on two loopback ports; nginx's `iac_app` upstream
    /// (in [`upstream_file`]) points at the live one.
    Nginx,
    /// lb-vms web VMs: the balancer has drained this VM; the new container is checked on a
    /// loopback port, then takes over the app port.
    Port,
}

/// Where the update script writes nginx's `iac_app` upstream (single-vm).
pub fn upstream_file(stack: &Stack) -> String {
    format!("/etc/nginx/conf.d/iac-{}-upstream.conf", stack.name())
}

/// The second loopback port the new container is checked on: beside the app's port, never
/// nginx's 80 or 443.
pub fn alt_port(port: u16) -> u16 {
    match port.checked_add(1) {
        Some(p) if p != 80 && p != 443 => p,
        _ => port - 1,
    }
}

/// The docker network of a single-vm stack's containers (the database's compose project uses
/// it too, so the app reaches it as `db`).
pub fn network(stack: &Stack) -> String {
    format!("iac-{}", stack.name())
}

#[derive(Serialize)]
struct UpdateCtx<'a> {
    stack: &'a str,
    path: &'static str,
    param: String,
    port: u16,
    alt_port: u16,
    extra_env: &'static str,
    region: Option<&'a str>,
    switch: &'static str,
    upstream_file: String,
    network: Option<String>,
}

/// The Run Command (POSIX sh) that applies [`APP_PARAM`] on one VM: read the spec (literally)
/// and the secrets it names into a root-only env file, pull the image, start the new container
/// beside the old one, wait for its health check, switch to it ([`Switch`]), stop the old one.
/// When the new one fails its check the old one keeps serving and the script exits 1 with
/// `FAILED in step <step>` as its last line; with nothing older to keep, it switches anyway
/// and still exits 1. Exits 0 at once when the spec is what runs already. The same text the
/// VMs install as [`UPDATE_SCRIPT`] and run at boot.
pub fn update_command(stack: &Stack, switch: Switch) -> String {
    let s = &stack.spec;
    let ctx = UpdateCtx {
        stack: &s.name,
        path: UPDATE_SCRIPT,
        param: param_name(&s.name, APP_PARAM),
        port: s.app.port,
        alt_port: alt_port(s.app.port),
        extra_env: EXTRA_ENV,
        region: s.region.as_deref(),
        switch: match switch {
            Switch::Nginx => "nginx",
            Switch::Port => "port",
        },
        upstream_file: upstream_file(stack),
        network: (switch == Switch::Nginx).then(|| network(stack)),
    };
    // Every stack value in the template goes through `shell_quote`, so the only possible
    // failure is a broken embedded template, which the unit tests rule out.
    environment()
        .and_then(|env| render(&env, "templates/app-update.sh.j2", &ctx))
        .unwrap_or_else(|e| panic!("the embedded app update template failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_port_avoids_nginx_and_overflow() {
        assert_eq!(alt_port(5000), 5001);
        assert_eq!(alt_port(79), 78);
        assert_eq!(alt_port(442), 441);
        assert_eq!(alt_port(65535), 65534);
    }

    #[test]
    fn both_switches_render() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/bookstore-vm.yaml");
        let stack = crate::stack::load(&path).unwrap();
        let nginx = update_command(&stack, Switch::Nginx);
        assert!(nginx.contains("upstream iac_app"));
        assert!(nginx.contains("--network"));
        let port = update_command(&stack, Switch::Port);
        assert!(!port.contains("upstream iac_app"));
        assert!(port.contains("app-next"));
    }
}
