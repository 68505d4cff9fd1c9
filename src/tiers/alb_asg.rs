//! alb-asg: an application load balancer in front of an Auto Scaling group of web instances
//! (launch template, target tracking on CPU), Aurora MySQL and EFS. The three branches (database,
//! file system, load balancer) share no dependency, so they are created at the same time.
//!
//! ```text
//! alb-sg ─▶ alb ─┬─▶ listener-80 (forward, or redirect to 443) ─▶ listener-443
//! tg ────────────┘
//! web-sg ─▶ db-sg ─▶ db-subnets ─▶ db ─▶ db-1..N      db ─▶ db-endpoint, db-secret-arn
//!       └─▶ efs-sg ─▶ efs ─▶ mount-<subnet>...         efs ─▶ efs-id
//! web-sg ─▶ lt ─┐
//! tg ───────────┴─▶ asg (after the mount targets) ─▶ cpu-policy
//! ```
//! Instances read the database endpoint, the secret's ARN and the file system id from SSM at
//! boot, so the launch template changes only when the app does, and each change rolls out as a
//! new template version plus an instance refresh.

use crate::plan::*;
use crate::render::{self, alb_asg as r};
use crate::stack::Stack;

use super::{public_tcp, security_group, tcp_rule, with_ssh, Inputs, TierError};

pub const ALB_SG: &str = "alb-sg";
pub const WEB_SG: &str = "web-sg";
pub const DB_SG: &str = "db-sg";
pub const EFS_SG: &str = "efs-sg";
pub const DB_SUBNETS: &str = "db-subnets";
pub const DB: &str = "db";
pub const EFS: &str = "efs";
pub const LT: &str = "lt";
pub const TG: &str = "tg";
pub const ALB: &str = "alb";
pub const ASG: &str = "asg";
pub const POLICY: &str = "cpu-policy";

fn param(stack: &Stack, leaf: &str, of: &str, attr: &str) -> Resource {
    Resource::new(
        leaf,
        Spec::SsmParameter(SsmParameterSpec {
            name: render::param_name(stack.name(), leaf),
            secure: false,
            value: ParamValue::Template {
                text: ref_placeholder(of, attr),
                refs: vec![ResourceId::new(of)],
            },
            notify: Vec::new(),
        }),
        &[of],
    )
}

pub use crate::plan::diff::launch_template_hash;

pub fn desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    let s = &stack.spec;
    let name = stack.name();
    let sc = s.scaling.clone().unwrap_or_default();
    let lb = s.load_balancer.clone().unwrap_or_default();
    let db = s.database.clone().unwrap_or_default();
    let subnet_ids: Vec<String> = inputs.subnets.iter().map(|(id, _)| id.clone()).collect();

    let web_rules = vec![tcp_rule(
        s.app.port,
        Source::Group(ResourceId::new(ALB_SG)),
        "app from the load balancer",
    )];
    let mut out = vec![
        security_group(
            stack,
            inputs,
            ALB_SG,
            "alb",
            [public_tcp(80, "http"), public_tcp(443, "https")].concat(),
            &[],
        ),
        security_group(
            stack,
            inputs,
            WEB_SG,
            "web",
            with_ssh(stack, web_rules),
            &[ALB_SG],
        ),
        security_group(
            stack,
            inputs,
            DB_SG,
            "db",
            vec![tcp_rule(
                3306,
                Source::Group(ResourceId::new(WEB_SG)),
                "MySQL from the web instances",
            )],
            &[WEB_SG],
        ),
        security_group(
            stack,
            inputs,
            EFS_SG,
            "efs",
            vec![tcp_rule(
                2049,
                Source::Group(ResourceId::new(WEB_SG)),
                "NFS from the web instances",
            )],
            &[WEB_SG],
        ),
        // Database branch.
        Resource::new(
            DB_SUBNETS,
            Spec::DbSubnetGroup(DbSubnetGroupSpec {
                name: format!("{name}-db"),
                description: format!("iac stack {name}: Aurora subnets"),
                subnet_ids: subnet_ids.clone(),
            }),
            &[],
        ),
        Resource::new(
            DB,
            Spec::DbCluster(DbClusterSpec {
                identifier: cluster_identifier(stack),
                engine: db.engine.clone(),
                engine_version: crate::stack::validate::aurora_engine_version(&db.version),
                database_name: db.name.clone(),
                master_username: db.user.clone(),
                subnet_group: ResourceId::new(DB_SUBNETS),
                security_groups: vec![ResourceId::new(DB_SG)],
                backup_retention_days: db.backup_retention_days as i32,
                port: 3306,
                deletion_protection: stack.spec.protect,
            }),
            &[DB_SUBNETS, DB_SG],
        ),
    ];
    for n in 1..=db.instances {
        out.push(Resource::new(
            &format!("db-{n}"),
            Spec::DbInstance(DbInstanceSpec {
                identifier: format!("{name}-db-{n}"),
                cluster: ResourceId::new(DB),
                instance_class: db.instance_class.clone(),
                engine: db.engine.clone(),
            }),
            &[DB],
        ));
    }
    // The instances read these at boot to reach the database: written once its instances are
    // available (the cluster's names are known earlier, while it creates).
    let db_instances: Vec<String> = (1..=db.instances).map(|n| format!("db-{n}")).collect();
    for (leaf, attr) in [
        (r::DB_ENDPOINT_PARAM, "endpoint"),
        (r::DB_SECRET_PARAM, "secret"),
    ] {
        let mut p = param(stack, leaf, DB, attr);
        p.deps.extend(db_instances.iter().map(ResourceId::new));
        out.push(p);
    }

    // File system branch: one mount target per subnet the group uses.
    out.push(Resource::new(
        EFS,
        Spec::FileSystem(FileSystemSpec {
            creation_token: format!("iac-{name}-efs"),
            keep_on_down: true,
            protected: stack.spec.protect,
        }),
        &[],
    ));
    let mut mounts = Vec::new();
    for subnet in &subnet_ids {
        let id = ResourceId::mount_target(subnet).to_string();
        out.push(Resource::new(
            &id,
            Spec::MountTarget(MountTargetSpec {
                file_system: ResourceId::new(EFS),
                subnet_id: subnet.clone(),
                security_groups: vec![ResourceId::new(EFS_SG)],
            }),
            &[EFS, EFS_SG],
        ));
        mounts.push(id);
    }
    out.push(param(stack, r::EFS_ID_PARAM, EFS, "id"));

    // Load balancer branch.
    out.push(Resource::new(
        TG,
        Spec::TargetGroup(TargetGroupSpec {
            name: format!("{name}-tg"),
            port: s.app.port,
            vpc_id: inputs.vpc_id.clone(),
            health_path: s.app.health_path.clone(),
            healthy_threshold: lb.healthy_threshold as i32,
            unhealthy_threshold: lb.unhealthy_threshold as i32,
            interval_s: lb.interval_s as i32,
            timeout_s: lb.timeout_s as i32,
            matcher: "200-399".to_string(),
            deregistration_delay_s: lb.deregistration_delay_s,
        }),
        &[],
    ));
    out.push(Resource::new(
        ALB,
        Spec::LoadBalancer(LoadBalancerSpec {
            name: format!("{name}-alb"),
            subnet_ids: subnet_ids.clone(),
            security_groups: vec![ResourceId::new(ALB_SG)],
        }),
        &[ALB_SG],
    ));
    let http_action = if lb.certificate_arn.is_some() {
        ListenerAction::RedirectHttps
    } else {
        ListenerAction::Forward(ResourceId::new(TG))
    };
    out.push(Resource::new(
        ResourceId::listener(80).as_str(),
        Spec::Listener(ListenerSpec {
            load_balancer: ResourceId::new(ALB),
            port: 80,
            action: http_action,
            certificate_arn: None,
        }),
        &[ALB, TG],
    ));
    if let Some(cert) = &lb.certificate_arn {
        out.push(Resource::new(
            ResourceId::listener(443).as_str(),
            Spec::Listener(ListenerSpec {
                load_balancer: ResourceId::new(ALB),
                port: 443,
                action: ListenerAction::Forward(ResourceId::new(TG)),
                certificate_arn: Some(cert.clone()),
            }),
            &[ALB, TG],
        ));
    }

    // The group.
    let ud = r::web(stack)?;
    out.push(Resource::new(
        LT,
        Spec::LaunchTemplate(super::launch_template_spec(
            stack,
            inputs,
            format!("{name}-web"),
            WEB_ROLE,
            None,
            WEB_SG,
            &ud,
        )?),
        &[WEB_SG],
    ));
    let mut asg_deps: Vec<&str> = vec![LT, TG];
    asg_deps.extend(mounts.iter().map(String::as_str));
    out.push(Resource::new(
        ASG,
        Spec::AutoScalingGroup(AutoScalingGroupSpec {
            name: format!("{name}-asg"),
            launch_template: ResourceId::new(LT),
            min: sc.min,
            max: sc.max,
            desired: sc.desired,
            subnet_ids,
            target_groups: vec![ResourceId::new(TG)],
            health_check_grace_s: sc.health_check_grace_s,
            scale_in_protection: sc.scale_in_protection,
            min_healthy_percent: sc.min_healthy_percent,
            warmup_s: sc.warmup_s,
            role: WEB_ROLE.to_string(),
        }),
        &asg_deps,
    ));
    out.push(Resource::new(
        POLICY,
        Spec::ScalingPolicy(ScalingPolicySpec {
            name: format!("{name}-asg-cpu"),
            group: ResourceId::new(ASG),
            cpu_target: sc.cpu_target,
            warmup_s: sc.warmup_s,
        }),
        &[ASG],
    ));
    Ok(out)
}

/// The Aurora cluster's identifier.
pub fn cluster_identifier(stack: &Stack) -> String {
    format!("{}-db", stack.name())
}

/// The machine role of the group's instances.
pub const WEB_ROLE: &str = "web";

/// One machine role, `web`: the file system id, the database endpoint and its secret's ARN
/// (parameters), the app's secrets, and the password secret RDS manages for this stack's own
/// cluster; it writes nothing.
pub fn roles(stack: &Stack) -> Vec<super::MachineRole> {
    let mut reads = vec![
        super::param(stack, r::EFS_ID_PARAM),
        super::param(stack, r::DB_ENDPOINT_PARAM),
        super::param(stack, r::DB_SECRET_PARAM),
    ];
    reads.extend(super::app_secret_params(stack));
    vec![super::MachineRole {
        name: WEB_ROLE,
        grants: RoleGrants {
            reads,
            db_secret_of: Some(cluster_identifier(stack)),
            ..Default::default()
        },
    }]
}
