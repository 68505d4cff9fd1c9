//! User-data and Run Command scripts of the swarm tier: one or more managers and N workers that
//! form a Docker Swarm by themselves, and the app as a replicated service behind the routing mesh.
//!
//! Everything travels through SSM parameters under `/iac/<stack>/`: manager-1 initialises the
//! swarm and writes both join tokens ([`MANAGER_TOKEN_PARAM`], [`WORKER_TOKEN_PARAM`], as
//! SecureStrings, through a root-only file, never an argument) and its address
//! ([`LEADER_ADDR_PARAM`]); the other nodes wait (bounded) for them and join once. iac writes the
//! service spec ([`SERVICE_PARAM`], [`service_spec`]) and has the leader apply it with
//! [`service_apply_command`], which manager-1 also installs as [`SERVICE_SCRIPT`] and runs at boot
//! to create the service. The user-data depends on neither the image nor the replica count, so
//! changing them rolls the service instead of replacing instances.

use std::net::Ipv4Addr;

use minijinja::Environment;
use serde::Serialize;

pub use super::param_name;
use super::script_head::ScriptHead;
use super::{
    cert_dir, invalid, nginx_files, render, require_word, tier_environment, RenderError, UserData,
    ACME_ROOT, NGINX_HTTP, NGINX_HTTPS,
};
use crate::stack::{Placement, Stack, Swarm, Tier};

/// SSM parameter (SecureString): the manager join token, written by manager-1.
pub const MANAGER_TOKEN_PARAM: &str = "swarm/manager-token";
/// SSM parameter (SecureString): the worker join token, written by manager-1.
pub const WORKER_TOKEN_PARAM: &str = "swarm/worker-token";
/// SSM parameter (String): manager-1's private IPv4 address, written by manager-1.
pub const LEADER_ADDR_PARAM: &str = "swarm/leader-addr";
/// SSM parameter (String): the service spec ([`service_spec`]), written by iac.
pub const SERVICE_PARAM: &str = "service";
/// Installed on every manager; the same text as [`service_apply_command`].
pub const SERVICE_SCRIPT: &str = "/usr/local/sbin/iac-swarm-service";
/// Swarm's management port, where nodes join.
pub const SWARM_PORT: u16 = 2377;
/// How long manager-1 waits for the domain to point at its Elastic IP before it asks for a
/// certificate; the other managers look once.
const DNS_WAIT_FIRST: u32 = 600;

/// The service's name: `<stack>-app`.
pub fn service_name(stack: &Stack) -> String {
    format!("{}-app", stack.name())
}

/// The service's overlay network: `<stack>-net`.
pub fn network_name(stack: &Stack) -> String {
    format!("{}-net", stack.name())
}

/// Templates of this tier, added to the shared environment. The lb-vms tier's common head is
/// reused as it is (it is registered under its own name here too).
const SWARM_TEMPLATES: &[(&str, &str)] = &[
    (
        "templates/script-head.sh.j2",
        include_str!("../../templates/script-head.sh.j2"),
    ),
    (
        "templates/swarm-node.sh.j2",
        include_str!("../../templates/swarm-node.sh.j2"),
    ),
    (
        "templates/swarm-https.sh.j2",
        include_str!("../../templates/swarm-https.sh.j2"),
    ),
    (
        "templates/swarm-service.sh.j2",
        include_str!("../../templates/swarm-service.sh.j2"),
    ),
    (
        "templates/swarm-drain.sh.j2",
        include_str!("../../templates/swarm-drain.sh.j2"),
    ),
    (
        "templates/swarm-status.sh.j2",
        include_str!("../../templates/swarm-status.sh.j2"),
    ),
    (
        "userdata/swarm-manager.sh.j2",
        include_str!("../../userdata/swarm-manager.sh.j2"),
    ),
    (
        "userdata/swarm-worker.sh.j2",
        include_str!("../../userdata/swarm-worker.sh.j2"),
    ),
];

fn swarm_environment() -> Result<Environment<'static>, RenderError> {
    tier_environment(SWARM_TEMPLATES)
}

/// Renders one of the Run Command scripts. Every stack value in them goes through
/// `shell_quote`, so the only possible failure is a broken embedded template, which the unit
/// tests rule out.
fn command<C: Serialize>(name: &str, ctx: &C) -> String {
    swarm_environment()
        .and_then(|env| render(&env, name, ctx))
        .unwrap_or_else(|e| panic!("the embedded template {name} failed: {e}"))
}

/// The stack's swarm section, defaults filled in.
fn settings(stack: &Stack) -> Swarm {
    stack.spec.swarm.clone().unwrap_or_default()
}

fn check(stack: &Stack, what: &str) -> Result<(), RenderError> {
    ScriptHead::check(stack, Tier::Swarm, what)?;
    let s = &stack.spec;
    if let Some(d) = &s.domain {
        require_word("domain.name", &d.name, ".-")?;
        let port = settings(stack).published_port;
        if matches!(port, 80 | 443) {
            return Err(invalid(
                "swarm.published_port",
                format!("with a domain, nginx on the managers listens on {port}"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Boot scripts

#[derive(Serialize)]
struct HttpsCtx<'a> {
    name: &'a str,
    email: &'a str,
    cert: String,
    dns_wait: u32,
}

/// Context of `userdata/swarm-manager.sh.j2` and `userdata/swarm-worker.sh.j2` (and of
/// `templates/script-head.sh.j2`, which they include).
#[derive(Serialize)]
struct NodeCtx<'a> {
    #[serde(flatten)]
    head: ScriptHead<'a>,
    leader_param: String,
    manager_token_param: String,
    worker_token_param: String,
    swarm_port: u16,
    first: bool,
    service_script: &'static str,
    published_port: u16,
    nginx_http: &'static str,
    nginx_https: &'static str,
    acme_root: &'static str,
    domain: Option<HttpsCtx<'a>>,
}

fn node_ctx<'a>(
    stack: &'a Stack,
    role: &'static str,
    files: Vec<(String, &'static str, String)>,
) -> Result<NodeCtx<'a>, RenderError> {
    let s = &stack.spec;
    Ok(NodeCtx {
        head: ScriptHead::new(stack, role, files)?,
        leader_param: param_name(&s.name, LEADER_ADDR_PARAM),
        manager_token_param: param_name(&s.name, MANAGER_TOKEN_PARAM),
        worker_token_param: param_name(&s.name, WORKER_TOKEN_PARAM),
        swarm_port: SWARM_PORT,
        first: false,
        service_script: SERVICE_SCRIPT,
        published_port: settings(stack).published_port,
        nginx_http: NGINX_HTTP,
        nginx_https: NGINX_HTTPS,
        acme_root: ACME_ROOT,
        domain: None,
    })
}

/// The boot script of manager `index` (1-based). Manager 1 installs Docker, initialises the swarm
/// (once: an active node is left alone), publishes both join tokens and its address to SSM and
/// creates the service from [`SERVICE_PARAM`]; the others wait for the manager token and join.
/// With a domain, every manager runs nginx on 80/443 in front of the published port, and the one
/// the name points to (manager-1, with the Elastic IP) gets a certificate. The scripts of
/// managers 2, 3, ... are identical.
pub fn manager(stack: &Stack, index: u32) -> Result<UserData, RenderError> {
    check(stack, "manager user-data")?;
    if index == 0 {
        return Err(invalid("manager index", "managers are numbered from 1"));
    }
    let s = &stack.spec;
    let first = index == 1;
    let env = swarm_environment()?;
    let mut files = vec![(
        SERVICE_SCRIPT.to_string(),
        "755",
        render(&env, "templates/swarm-service.sh.j2", &service_ctx(stack))?,
    )];
    files.extend(nginx_files(
        &env,
        &s.name,
        settings(stack).published_port,
        None,
        s.domain.as_ref(),
    )?);
    if s.domain.is_none() {
        // Without a domain there is no nginx: the routing mesh serves the published port.
        files.truncate(1);
    }
    let mut ctx = node_ctx(stack, if first { "manager-1" } else { "manager" }, files)?;
    ctx.first = first;
    ctx.domain = s.domain.as_ref().map(|d| HttpsCtx {
        name: &d.name,
        email: &d.email,
        cert: format!("{}/fullchain.pem", cert_dir(&d.name)),
        dns_wait: if first { DNS_WAIT_FIRST } else { 0 },
    });
    let script = render(&env, "userdata/swarm-manager.sh.j2", &ctx)?;
    Ok(UserData {
        script,
        files: ctx.head.into_files(),
    })
}

/// A worker's boot script: Docker, then wait for the leader's address and the worker token and
/// join the swarm once (retried, then a FAILED line and a non-zero exit).
pub fn worker(stack: &Stack) -> Result<UserData, RenderError> {
    check(stack, "worker user-data")?;
    let env = swarm_environment()?;
    let ctx = node_ctx(stack, "worker", Vec::new())?;
    let script = render(&env, "userdata/swarm-worker.sh.j2", &ctx)?;
    Ok(UserData {
        script,
        files: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// The service

/// The constraint that places the service's tasks.
fn constraint(placement: Placement) -> &'static str {
    match placement {
        Placement::Workers => "node.role==worker",
        Placement::Managers => "node.role==manager",
        Placement::Any => "",
    }
}

/// The content iac writes to [`SERVICE_PARAM`]: `KEY=VALUE` lines that the service script reads
/// literally (never sources). `IMAGE`, `REPLICAS`, `PORT` (the container's), `PUBLISHED`,
/// `CONSTRAINT` (empty for any node), `HEALTH_PATH`, `UPDATE_PARALLELISM`, `UPDATE_DELAY`
/// (seconds), then `ENV_<NAME>=<value>` for each plain variable and `SECRET_<NAME>=<ssm name>`
/// for each secret: names only, the leader reads the values at apply time. Deterministic: the
/// same stack gives the same bytes.
pub fn service_spec(stack: &Stack) -> Result<String, RenderError> {
    check(stack, "service spec")?;
    let s = &stack.spec;
    let sw = settings(stack);
    super::app_spec::text(
        stack,
        &format!(
            "# iac service spec of stack {}: KEY=VALUE lines, read literally by {SERVICE_SCRIPT}.\n",
            s.name
        ),
        &[
            ("IMAGE", s.app.image.clone()),
            ("REPLICAS", sw.replicas.to_string()),
            ("PORT", s.app.port.to_string()),
            ("PUBLISHED", sw.published_port.to_string()),
            ("CONSTRAINT", constraint(sw.placement).to_string()),
            ("HEALTH_PATH", s.app.health_path.clone()),
            ("UPDATE_PARALLELISM", sw.update.parallelism.to_string()),
            ("UPDATE_DELAY", sw.update.delay_s.to_string()),
        ],
    )
}

/// Context of `templates/swarm-service.sh.j2`.
#[derive(Serialize)]
struct ServiceCtx<'a> {
    stack: &'a str,
    path: &'static str,
    param: String,
    service: String,
    network: String,
    region: Option<&'a str>,
}

fn service_ctx(stack: &Stack) -> ServiceCtx<'_> {
    ServiceCtx {
        stack: stack.name(),
        path: SERVICE_SCRIPT,
        param: param_name(stack.name(), SERVICE_PARAM),
        service: service_name(stack),
        network: network_name(stack),
        region: stack.spec.region.as_deref(),
    }
}

/// The shell script (POSIX sh) iac sends with SSM Run Command (AWS-RunShellScript) to the leader
/// after rewriting [`SERVICE_PARAM`]: reads the spec, creates the overlay network when missing,
/// then `docker service create` when the service is absent, else a rolling `docker service
/// update` (`--image`, `--replicas`, env, constraint and ports as they differ; parallelism,
/// delay, `--update-failure-action rollback`), waiting for it (bounded) and exiting non-zero
/// when it was rolled back. Secrets are read from SSM on the leader into a root-only env file
/// (create) or the docker CLI's environment (update), never an argument. The same text manager-1
/// installs as [`SERVICE_SCRIPT`] and runs at boot with `create-only`.
pub fn service_apply_command(stack: &Stack) -> String {
    command("templates/swarm-service.sh.j2", &service_ctx(stack))
}

// ---------------------------------------------------------------------------------------------
// Drain and status

#[derive(Serialize)]
struct DrainCtx<'a> {
    stack: &'a str,
    address: &'a str,
    host: String,
}

/// The Run Command (POSIX sh) for the leader before the node at `private_ip` is terminated: find
/// the node by address or EC2 hostname (`ip-a-b-c-d`), `docker node update --availability drain`,
/// wait (bounded, 5 min) until it runs no task, demote it when it is a manager, `docker node rm
/// --force`. Exits 0 when no node matches (gone already).
pub fn drain_command(stack: &Stack, private_ip: &str) -> String {
    let host = private_ip
        .parse::<Ipv4Addr>()
        .map(|ip| format!("ip-{}", ip.to_string().replace('.', "-")))
        .unwrap_or_default();
    let ctx = DrainCtx {
        stack: stack.name(),
        address: private_ip,
        host,
    };
    command("templates/swarm-drain.sh.j2", &ctx)
}

#[derive(Serialize)]
struct StatusCtx<'a> {
    stack: &'a str,
    service: String,
}

/// The Run Command (POSIX sh) for `iac status`: one tab-separated record per line, its type
/// first: `swarm STATE MANAGER NODE-ID`, then (on a manager) `node ID HOSTNAME ADDRESS ROLE
/// STATE AVAILABILITY MANAGER-STATUS ENGINE` per node, `service NAME MODE REPLICAS IMAGE PORTS`,
/// and for the stack's service `update NAME STATE MESSAGE` and `task NAME NODE DESIRED CURRENT
/// ERROR` per task. Exits 1 on a node that is not a manager.
pub fn status_command(stack: &Stack) -> String {
    let ctx = StatusCtx {
        stack: stack.name(),
        service: service_name(stack),
    };
    command("templates/swarm-status.sh.j2", &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(extra: &str) -> Stack {
        let yaml = format!(
            "version: 1\nname: shop\ntier: swarm\napp:\n  image: nginx:1\n  port: 8080\n{extra}"
        );
        Stack {
            path: "shop.yaml".into(),
            spec: yaml_serde::from_str(&yaml).unwrap(),
        }
    }

    #[test]
    fn all_templates_parse() {
        swarm_environment().unwrap();
    }

    #[test]
    fn names() {
        let s = stack("");
        assert_eq!(
            param_name("shop", WORKER_TOKEN_PARAM),
            "/iac/shop/swarm/worker-token"
        );
        assert_eq!(service_name(&s), "shop-app");
        assert_eq!(network_name(&s), "shop-net");
    }

    #[test]
    fn spec_defaults() {
        let spec = service_spec(&stack("")).unwrap();
        let lines: Vec<&str> = spec.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "IMAGE=nginx:1",
                "REPLICAS=2",
                "PORT=8080",
                "PUBLISHED=80",
                "CONSTRAINT=node.role==worker",
                "HEALTH_PATH=/",
                "UPDATE_PARALLELISM=1",
                "UPDATE_DELAY=10",
            ]
        );
    }

    #[test]
    fn spec_refuses_what_it_cannot_carry() {
        let bad = [
            "  environment: { A: \"x\\ny\" }\n",
            "  environment: { 1A: x }\n",
            "  secrets: { PATH: { ssm: /x } }\n",
            "  secrets: { DOCKER_HOST: { ssm: /x } }\n",
            "  secrets: { A: { ssm: \"/x y\" } }\n",
            "  health_path: \"/a b\"\n",
        ];
        for extra in bad {
            // `app:` is the last section of the base stack: these lines extend it.
            let s = stack(extra);
            assert!(
                matches!(service_spec(&s), Err(RenderError::Invalid { .. })),
                "{extra}"
            );
        }
        let big = format!("  environment: {{ BIG: \"{}\" }}\n", "x".repeat(5000));
        assert!(service_spec(&stack(&big)).is_err());
    }

    #[test]
    fn other_tiers_and_domain_on_port_80_are_refused() {
        let mut s = stack("");
        s.spec.tier = Tier::LbVms;
        assert!(manager(&s, 1).is_err());
        assert!(worker(&s).is_err());
        assert!(service_spec(&s).is_err());
        let s = stack("domain: { name: shop.example.net, email: ops@example.net }\n");
        assert!(manager(&s, 1).is_err());
        assert!(manager(&stack(""), 0).is_err());
    }

    #[test]
    fn manager_scripts_beyond_the_first_are_identical() {
        let s = stack("swarm: { managers: 3 }\n");
        assert_eq!(
            manager(&s, 2).unwrap().script,
            manager(&s, 3).unwrap().script
        );
        assert_ne!(
            manager(&s, 1).unwrap().script,
            manager(&s, 2).unwrap().script
        );
    }

    #[test]
    fn user_data_does_not_depend_on_the_service() {
        let a = stack("");
        let mut b = stack("swarm: { replicas: 7, update: { parallelism: 3 } }\n");
        b.spec.app.image = "nginx:2".into();
        assert_eq!(
            manager(&a, 1).unwrap().sha256(),
            manager(&b, 1).unwrap().sha256()
        );
        assert_eq!(worker(&a).unwrap().sha256(), worker(&b).unwrap().sha256());
        assert_ne!(service_spec(&a).unwrap(), service_spec(&b).unwrap());
    }

    #[test]
    fn installed_service_script_is_the_apply_command() {
        let s = stack("");
        let ud = manager(&s, 2).unwrap();
        assert_eq!(ud.files.len(), 1);
        assert_eq!(ud.files[0].path, SERVICE_SCRIPT);
        assert_eq!(ud.files[0].content, service_apply_command(&s));
    }

    #[test]
    fn drain_hostname() {
        let s = stack("");
        assert!(drain_command(&s, "10.0.1.5").contains("host=ip-10-0-1-5\n"));
        assert!(drain_command(&s, "fd00::1").contains("host=''\n"));
    }
}
