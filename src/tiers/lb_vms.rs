//! lb-vms: an HAProxy VM (Elastic IP) in front of N web VMs, and a database VM with its own
//! data volume. Runtime facts travel through SSM parameters under `/iac/<stack>/`:
//!
//! ```text
//! db-password (generated) ─┬─▶ db ─▶ data (volume, attached)
//!                          │     └─▶ db-host ─┐
//! lb-sg ─▶ web-sg ─▶ db-sg │                  ├─▶ web-1..N ─▶ haproxy.cfg ─▶ lb ─▶ eip ─▶ dns
//! ```
//! The balancer reads its configuration from `haproxy.cfg` at boot; when the web VMs change,
//! the parameter is rewritten and the balancer reloads through SSM Run Command, so it is never
//! replaced for a scaling change. The app's image and environment live in the `app` parameter:
//! a change updates the web VMs in place through Run Command, one at a time, each drained in
//! HAProxy first and put back once healthy.

use crate::plan::*;
use crate::render::app_spec::{self, Switch};
use crate::render::lb_vms as r;
use crate::stack::{Database, Stack};

use super::{public_tcp, security_group, tcp_rule, with_ssh, Inputs, TierError};

pub const LB_SG: &str = "lb-sg";
pub const WEB_SG: &str = "web-sg";
pub const DB_SG: &str = "db-sg";
pub const DB: &str = "db";
pub const DATA: &str = "data";
pub const LB: &str = "lb";
pub const EIP: &str = "eip";
pub const DNS: &str = "dns";

/// Machine roles: the HAProxy VM, the web VMs, the database VM.
pub const BALANCER_ROLE: &str = "balancer";
pub const WEB_ROLE: &str = "web";
pub const DATABASE_ROLE: &str = "database";

/// The balancer reads only its configuration; the web VMs the database's address and password
/// and the app's secrets; the database VM only the password. None writes: `iac` does.
pub fn roles(stack: &Stack) -> Vec<super::MachineRole> {
    let param = |leaf| super::param(stack, leaf);
    let mut web = vec![
        param(r::DB_HOST_PARAM),
        param(r::DB_PASSWORD_PARAM),
        param(app_spec::APP_PARAM),
    ];
    web.extend(super::app_secret_params(stack));
    let role = |name, reads| super::MachineRole {
        name,
        grants: RoleGrants {
            reads,
            ..Default::default()
        },
    };
    vec![
        role(BALANCER_ROLE, vec![param(r::HAPROXY_PARAM)]),
        role(WEB_ROLE, web),
        role(DATABASE_ROLE, vec![param(r::DB_PASSWORD_PARAM)]),
    ]
}

/// The database section with its defaults when the file has none.
pub fn database(stack: &Stack) -> Database {
    stack.spec.database.clone().unwrap_or_default()
}

/// Logical id of the n-th web VM (1-based).
pub fn web_id(n: u32) -> String {
    format!("web-{n}")
}

pub fn desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    let s = &stack.spec;
    let db = database(stack);
    let count = s.web.as_ref().map(|w| w.count).unwrap_or(0);
    let subnet = |n: usize| {
        inputs
            .subnets
            .get(n % inputs.subnets.len().max(1))
            .map(|(id, _)| id.clone())
    };
    // Security groups, least privilege, then the generated database password.
    let mut out = vec![
        security_group(
            stack,
            inputs,
            LB_SG,
            "balancer",
            with_ssh(
                stack,
                [public_tcp(80, "http"), public_tcp(443, "https")].concat(),
            ),
            &[],
        ),
        security_group(
            stack,
            inputs,
            WEB_SG,
            "web",
            with_ssh(
                stack,
                vec![tcp_rule(
                    s.app.port,
                    Source::Group(ResourceId::new(LB_SG)),
                    "app from the balancer",
                )],
            ),
            &[LB_SG],
        ),
        security_group(
            stack,
            inputs,
            DB_SG,
            "database",
            with_ssh(
                stack,
                vec![tcp_rule(
                    r::database_port(stack).unwrap_or(r::MYSQL_PORT),
                    Source::Group(ResourceId::new(WEB_SG)),
                    "database from the web VMs",
                )],
            ),
            &[WEB_SG],
        ),
        super::stack_param(
            stack,
            r::DB_PASSWORD_PARAM,
            true,
            ParamValue::Generated,
            None,
            &[],
        ),
    ];
    let db_ud = r::database(stack)?;
    out.push(Resource::new(
        DB,
        Spec::Instance(super::instance_spec(
            stack,
            inputs,
            DATABASE_ROLE,
            db.instance_type.as_ref(),
            DB_SG,
            subnet(0),
            &db_ud,
        )?),
        &[DB_SG, r::DB_PASSWORD_PARAM],
    ));
    out.push(Resource::new(
        DATA,
        Spec::Volume(VolumeSpec {
            size_gb: db.volume_gb,
            availability_zone: inputs
                .subnets
                .first()
                .map(|(_, az)| az.clone())
                .unwrap_or_default(),
            attach_to: ResourceId::new(DB),
            device: r::DATA_DEVICE.to_string(),
            keep_on_down: true,
            protected: stack.spec.protect,
        }),
        &[DB],
    ));
    out.push(super::stack_param(
        stack,
        r::DB_HOST_PARAM,
        false,
        ParamValue::Template {
            text: ip_placeholder(DB),
            refs: vec![ResourceId::new(DB)],
        },
        None,
        &[DB],
    ));

    // The app's spec: a change updates the web VMs in place, one at a time, each taken out of
    // the balancer while it switches (web VMs created in this run read it at boot instead).
    let mut app = super::stack_param(
        stack,
        app_spec::APP_PARAM,
        false,
        ParamValue::Template {
            text: app_spec::app_spec(stack)?,
            refs: Vec::new(),
        },
        None,
        &[],
    );
    if let Spec::SsmParameter(p) = &mut app.spec {
        p.notify = (1..=count)
            .map(|n| {
                let id = web_id(n);
                Notify {
                    instance: ResourceId::new(&id),
                    command: app_spec::update_command(stack, Switch::Port),
                    comment: format!("iac: update the app on {id} in place (health-checked)"),
                    around: Some(Around {
                        instance: ResourceId::new(LB),
                        before: r::server_state_command(stack, &id, true),
                        after: r::server_state_command(stack, &id, false),
                        comment: format!("iac: drain {id} in HAProxy / put it back"),
                    }),
                }
            })
            .collect();
    }
    out.push(app);

    let web_ud = r::web(stack)?;
    let mut web_ids = Vec::new();
    for n in 1..=count {
        let id = web_id(n);
        out.push(Resource::new(
            &id,
            Spec::Instance(super::instance_spec(
                stack,
                inputs,
                WEB_ROLE,
                s.web.as_ref().and_then(|w| w.instance_type.as_ref()),
                WEB_SG,
                subnet(n as usize - 1),
                &web_ud,
            )?),
            &[
                WEB_SG,
                r::DB_HOST_PARAM,
                r::DB_PASSWORD_PARAM,
                app_spec::APP_PARAM,
            ],
        ));
        web_ids.push(id);
    }

    let backends: Vec<r::Backend> = web_ids
        .iter()
        .map(|id| r::Backend {
            name: id.clone(),
            address: ip_placeholder(id),
        })
        .collect();
    let web_refs: Vec<&str> = web_ids.iter().map(String::as_str).collect();
    out.push(super::stack_param(
        stack,
        r::HAPROXY_PARAM,
        false,
        ParamValue::Template {
            text: r::haproxy_config(stack, &backends)?,
            refs: web_ids.iter().map(ResourceId::new).collect(),
        },
        Some(Notify {
            instance: ResourceId::new(LB),
            command: r::balancer_reload_command(stack),
            comment: "iac: reload haproxy with the new backend list".to_string(),
            around: None,
        }),
        &web_refs,
    ));

    let lb_ud = r::balancer(stack)?;
    out.push(Resource::new(
        LB,
        Spec::Instance(super::instance_spec(
            stack,
            inputs,
            BALANCER_ROLE,
            s.balancer.as_ref().and_then(|b| b.instance_type.as_ref()),
            LB_SG,
            subnet(0),
            &lb_ud,
        )?),
        &[LB_SG, r::HAPROXY_PARAM],
    ));
    out.push(Resource::new(
        EIP,
        Spec::ElasticIp(ElasticIpSpec {
            instance: ResourceId::new(LB),
        }),
        &[LB],
    ));
    out.extend(super::dns_record(stack, inputs, DNS, EIP));
    Ok(out)
}
