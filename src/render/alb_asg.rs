//! User-data of the alb-asg tier: the launch template's boot script, run by every instance of the
//! Auto Scaling group behind the application load balancer.
//!
//! Runtime facts travel through SSM parameters under `/iac/<stack>/`, written by iac: the Aurora
//! writer endpoint ([`DB_ENDPOINT_PARAM`]), the ARN of the secret RDS manages for the master user
//! ([`DB_SECRET_PARAM`]) and the EFS file system id ([`EFS_ID_PARAM`]). The script holds only
//! parameter *names*; it reads the database password from Secrets Manager at boot into the app's
//! root-only env file, the one place it lands on disk.
//!
//! The script shares its head (logging, retries, packages, IMDSv2, SSM reads) with the lb-vms
//! tier: `templates/script-head.sh.j2`.

use minijinja::Environment;
use serde::Serialize;

use super::lb_vms::MYSQL_PORT;
use super::script_head::ScriptHead;
use super::{
    app_environment, app_secrets, check_app_env_file, invalid, render, require_word,
    tier_environment, KeyValue, RenderError, UserData, APP_ENV,
};
use crate::stack::{Stack, Tier};

/// SSM parameter (String): the Aurora cluster's writer endpoint.
pub const DB_ENDPOINT_PARAM: &str = "db-endpoint";
/// SSM parameter (String): ARN of the Secrets Manager secret RDS manages for the master user
/// (JSON `{"username", "password"}`). The password itself is never in SSM nor in user-data.
pub const DB_SECRET_PARAM: &str = "db-secret-arn";
/// SSM parameter (String): the EFS file system id (`fs-…`).
pub const EFS_ID_PARAM: &str = "efs-id";
/// Where the file system is mounted when the stack does not say.
pub const DEFAULT_MOUNT_PATH: &str = "/mnt/shared";
/// The systemd drop-in that makes Docker wait for the shared file system after a reboot.
pub const DOCKER_DROP_IN: &str = "/etc/systemd/system/docker.service.d/iac-shared-storage.conf";

/// The SSM parameter `leaf` of stack `stack`: `/iac/<stack>/<leaf>` (shared with the other
/// multi-VM tiers).
pub use super::param_name;

/// Where every instance mounts the EFS file system, and the container sees it.
pub fn mount_path(stack: &Stack) -> &str {
    stack
        .spec
        .shared_storage
        .as_ref()
        .map(|s| s.mount_path.as_str())
        .unwrap_or(DEFAULT_MOUNT_PATH)
}

/// Templates of this tier, added to the shared environment.
const ALB_TEMPLATES: &[(&str, &str)] = &[
    (
        "templates/script-head.sh.j2",
        include_str!("../../templates/script-head.sh.j2"),
    ),
    (
        "userdata/alb-web.sh.j2",
        include_str!("../../userdata/alb-web.sh.j2"),
    ),
    (
        "templates/alb-docker-shared-storage.conf.j2",
        include_str!("../../templates/alb-docker-shared-storage.conf.j2"),
    ),
];

fn alb_environment() -> Result<Environment<'static>, RenderError> {
    tier_environment(ALB_TEMPLATES)
}

#[derive(Serialize)]
struct DropInCtx<'a> {
    stack: &'a str,
    mount_path: &'a str,
}

/// Context of `userdata/alb-web.sh.j2`; the first block is what `templates/script-head.sh.j2`
/// reads.
#[derive(Serialize)]
struct WebCtx<'a> {
    #[serde(flatten)]
    head: ScriptHead<'a>,
    app_env: &'static str,
    image: &'a str,
    port: u16,
    health_path: &'a str,
    environment: Vec<KeyValue<'a>>,
    secrets: Vec<KeyValue<'a>>,
    mount_path: &'a str,
    efs_param: String,
    endpoint_param: String,
    secret_param: String,
    url_env: &'a str,
    db_name: &'a str,
    db_port: u16,
}

/// What the renderer needs to hold, whatever the validator let through.
fn check(stack: &Stack) -> Result<(), RenderError> {
    ScriptHead::check(stack, Tier::AlbAsg, "user-data")?;
    check_app_env_file(&stack.spec.app)?;
    let path = mount_path(stack);
    // Unquoted in /etc/fstab and the systemd drop-in: a plain absolute path, not `/`.
    require_word("shared_storage.mount_path", path, "/._-")?;
    if !path.starts_with('/') || path.trim_end_matches('/').is_empty() || path.contains("..") {
        return Err(invalid(
            "shared_storage.mount_path",
            format!("`{path}` is not a usable mount point"),
        ));
    }
    Ok(())
}

/// The web instances' boot script: Docker, the EFS client and the AWS CLI; the three runtime
/// facts from SSM (bounded wait); EFS mounted through /etc/fstab (retried until the mount target
/// answers, bounded); the env file with app settings, SSM secrets and the database URL built
/// from the secret RDS manages; the app container with the file system mounted into it.
pub fn web(stack: &Stack) -> Result<UserData, RenderError> {
    check(stack)?;
    let s = &stack.spec;
    let Some(db) = &s.database else {
        return Err(invalid(
            "database",
            "the alb-asg tier needs a `database` section for its Aurora cluster",
        ));
    };
    if !matches!(db.engine.as_str(), "aurora-mysql" | "mysql") {
        return Err(invalid(
            "database.engine",
            format!(
                "engine `{}` is not available in the alb-asg tier",
                db.engine
            ),
        ));
    }
    require_word("database.name", &db.name, "_")?;
    require_word("database.url_env", &db.url_env, "_")?;
    let env = alb_environment()?;
    let mount = mount_path(stack);
    let drop_in = DropInCtx {
        stack: &s.name,
        mount_path: mount,
    };
    let files = vec![(
        DOCKER_DROP_IN.to_string(),
        "644",
        render(
            &env,
            "templates/alb-docker-shared-storage.conf.j2",
            &drop_in,
        )?,
    )];
    let ctx = WebCtx {
        head: ScriptHead::new(stack, "web", files)?,
        app_env: APP_ENV,
        image: &s.app.image,
        port: s.app.port,
        health_path: &s.app.health_path,
        environment: app_environment(&s.app),
        secrets: app_secrets(&s.app),
        mount_path: mount,
        efs_param: param_name(&s.name, EFS_ID_PARAM),
        endpoint_param: param_name(&s.name, DB_ENDPOINT_PARAM),
        secret_param: param_name(&s.name, DB_SECRET_PARAM),
        url_env: &db.url_env,
        db_name: &db.name,
        db_port: MYSQL_PORT,
    };
    let script = render(&env, "userdata/alb-web.sh.j2", &ctx)?;
    Ok(UserData {
        script,
        files: ctx.head.into_files(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(extra: &str) -> Stack {
        let yaml = format!(
            "version: 1\nname: shop\ntier: alb-asg\napp:\n  image: nginx:1\n  port: 8080\n{extra}"
        );
        Stack {
            path: "shop.yaml".into(),
            spec: yaml_serde::from_str(&yaml).unwrap(),
        }
    }

    const DB: &str = "database:\n  engine: aurora-mysql\n  version: 8.0.mysql_aurora.3.05.2\n";

    #[test]
    fn all_templates_parse() {
        alb_environment().unwrap();
    }

    #[test]
    fn param_names_and_mount_path() {
        assert_eq!(param_name("shop", EFS_ID_PARAM), "/iac/shop/efs-id");
        assert_eq!(
            param_name("shop", DB_SECRET_PARAM),
            "/iac/shop/db-secret-arn"
        );
        assert_eq!(mount_path(&stack(DB)), "/mnt/shared");
        let s = stack(&format!("{DB}shared_storage:\n  mount_path: /srv/media\n"));
        assert_eq!(mount_path(&s), "/srv/media");
        let ud = web(&s).unwrap();
        assert!(ud.script.contains("SHARED=/srv/media\n"));
        assert!(ud.files[0]
            .content
            .contains("RequiresMountsFor=/srv/media\n"));
    }

    #[test]
    fn header_names_this_tier() {
        let ud = web(&stack(DB)).unwrap();
        let second = ud.script.lines().nth(1).unwrap();
        assert!(second.contains("web VM (alb-asg tier)"), "{second}");
        assert!(!ud.script.contains("lb-vms"));
    }

    #[test]
    fn refuses_what_it_cannot_render() {
        assert!(matches!(web(&stack("")), Err(RenderError::Invalid { .. })));
        for bad in ["/", "/a b", "relative", "/mnt/../etc", "/mnt/$x"] {
            let s = stack(&format!("{DB}shared_storage:\n  mount_path: \"{bad}\"\n"));
            assert!(matches!(web(&s), Err(RenderError::Invalid { .. })), "{bad}");
        }
        let mut s = stack(DB);
        s.spec.tier = Tier::LbVms;
        assert!(matches!(web(&s), Err(RenderError::Invalid { .. })));
        let s = stack("database:\n  engine: postgres\n");
        assert!(matches!(web(&s), Err(RenderError::Invalid { .. })));
    }
}
