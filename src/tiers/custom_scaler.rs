//! custom-scaler: a pool of app instances that a monitor of our own scales (not AWS Auto
//! Scaling). `iac up` creates what the pool needs, and the monitor VM unless the stack names a
//! monitor it runs itself; it never launches pool instances: the monitor does, with RunInstances
//! from the launch template, tagged [`pool_tags`].
//!
//! ```text
//! agents-sg ─▶ monitor-sg (monitor port from agents-sg only) ─┐
//! scaler-token (generated SecureString) ──────────────────────┼─▶ monitor-lt ─▶ monitor (group of one)
//! stack-file (the stack as the monitor reads it), scaler-tls ─┘
//! agents-sg, scaler-token, monitor-address ─▶ agent-lt
//! ```
//! **A monitor that outlives its VM.** The monitor VM is an Auto Scaling group of exactly one
//! (min = max = desired = 1, EC2 status checks, every usable subnet) launched from its own
//! template, so AWS replaces a monitor VM that dies or whose host fails, in any zone. The new VM
//! runs the same boot script: `iac scale --custom-monitor` adopts the running pool from its tags
//! before it decides anything, so nothing is launched twice.
//!
//! **A stable address: the parameter, published by the monitor VM.** The agents reach the
//! monitor at whatever `monitor-address` holds. Each monitor VM writes `<its private IP>:<port>`
//! there at boot (its role may write that parameter and the CA's, nothing else), so the
//! parameter follows a replacement; the agents verify the monitor's certificate against the
//! fixed name `iac-monitor`, never the address, so the address may move. An agent that cannot
//! reach the monitor for a minute exits (`iac-agent --give-up-after`), and its unit's start reads
//! the parameter again. The alternatives were weighed. One network interface handed from VM to
//! VM: an interface lives in one subnet, so the group would be pinned to one zone; an Auto
//! Scaling group cannot launch with an existing interface as the primary one, so each new VM
//! would attach it as a second interface itself (`ec2:AttachNetworkInterface` on the monitor's
//! role) and route its replies out of it (source-based policy routing on the instance: replies
//! leaving by the primary interface with the second one's address are dropped by the
//! source/destination check). A Route 53 private hosted zone: a billed resource (about $0.50 a
//! month) to associate with the VPC, Route 53 write rights on the monitor's role, and a TTL that
//! still delays the move; SSM already carries everything else the agents read.
//!
//! With `scaler.monitor.address` there is no monitor VM nor its group, and `monitor-address`
//! holds the given address. Pool instances carry no `iac:id`, so `up` and `plan` never adopt or
//! delete them; `down` terminates them (after the monitor group, before the launch template)
//! and `status` lists them.

use std::collections::BTreeMap;

use crate::plan::*;
use crate::render::custom_scaler as r;
use crate::render::RenderError;
use crate::stack::{FleetKind, Stack, StackFile};

use super::{public_tcp, security_group, tcp_rule, with_ssh, Inputs, TierError};

pub const AGENTS_SG: &str = "agents-sg";
pub const MONITOR_SG: &str = "monitor-sg";
/// The monitor VM's Auto Scaling group (of one), and its launch template.
pub const MONITOR: &str = "monitor";
pub const MONITOR_LT: &str = "monitor-lt";
/// How long a new monitor VM may take to pass its EC2 status checks before the group counts it
/// as unhealthy (AWS's default grace).
pub const MONITOR_GRACE_S: u32 = 300;
pub const LT: &str = "agent-lt";
/// The logical id under which discovery reports the pool's instances (they have no `iac:id`).
pub const POOL: &str = "pool";

// The tags the monitor gives every instance it launches, and the template it launches from,
// are declared here: one definition for the ec2 fleet that sets them (`scaler::ec2`) and for
// `down` that finds them.
pub use crate::plan::tags::ROLE as ROLE_TAG;
/// The value of [`ROLE_TAG`] on pool instances, and so their name in `iac logs`.
pub const AGENT_ROLE_VALUE: &str = "agent";
/// On a pool instance: it belongs to the monitor's pool (not to `iac up`'s resources).
pub const SCALER_TAG: &str = "iac:scaler";
/// The value of [`SCALER_TAG`] on the instances the monitor launched.
pub const POOL_VALUE: &str = "pool";

/// The name of a stack's agent launch template.
pub fn launch_template_name(stack: &str) -> String {
    format!("{stack}-agent")
}

/// Tags every pool instance (and its volume) carries from creation.
pub fn pool_tags(stack: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut t = tags::stack_tags(stack, AGENT_ROLE_VALUE, extra);
    t.insert(ROLE_TAG.to_string(), AGENT_ROLE_VALUE.to_string());
    t.insert(SCALER_TAG.to_string(), POOL_VALUE.to_string());
    t
}

/// Whether a set of tags marks a pool instance.
pub fn is_pool(tags: &BTreeMap<String, String>) -> bool {
    tags.get(SCALER_TAG).map(String::as_str) == Some(POOL_VALUE) && !tags.contains_key(tags::ID)
}

/// The instances of `untracked` (see `Discovered::untracked`) that the monitor launched,
/// reported with the logical id [`POOL`].
pub fn pool(untracked: &[Observed]) -> Vec<Observed> {
    untracked
        .iter()
        .filter(|o| is_pool(&o.tags))
        .map(|o| Observed {
            id: ResourceId::new(POOL),
            ..o.clone()
        })
        .collect()
}

/// The stack file as the monitor VM reads it (`/iac/<stack>/stack-file`): see
/// [`StackFile::portable_yaml`].
pub fn monitor_stack_file(s: &StackFile) -> Result<String, RenderError> {
    s.portable_yaml()
        .map_err(|e| crate::render::invalid("scaler", format!("cannot store the stack file: {e}")))
}

/// Machine roles: the monitor VM, and the pool's instances (the agents).
pub const MONITOR_ROLE: &str = "monitor";
pub const AGENTS_ROLE: &str = "agents";

/// The agents read the token, the monitor's address and the app's secrets; they write nothing.
/// The monitor reads the token and its stack file, writes only its own address and the stack's
/// CA certificate, and may launch from the agent template only instances tagged as the pool
/// (handing them only the agents' role), and terminate only those.
pub fn roles(stack: &Stack) -> Vec<super::MachineRole> {
    let param = |leaf| super::param(stack, leaf);
    let managed_monitor = stack
        .spec
        .scaler
        .as_ref()
        .is_none_or(|sc| sc.monitor.address.is_none());
    let mut agents = vec![param(r::TOKEN_PARAM), param(r::MONITOR_ADDRESS_PARAM)];
    if managed_monitor {
        agents.push(param(r::CA_PARAM));
    }
    agents.extend(super::app_secret_params(stack));
    let mut out = vec![super::MachineRole {
        name: AGENTS_ROLE,
        grants: RoleGrants {
            reads: agents,
            ..Default::default()
        },
    }];
    if managed_monitor {
        let mut template_tags = BTreeMap::new();
        template_tags.insert(tags::STACK.to_string(), stack.name().to_string());
        template_tags.insert(tags::ID.to_string(), LT.to_string());
        let mut pool = BTreeMap::new();
        pool.insert(tags::STACK.to_string(), stack.name().to_string());
        pool.insert(SCALER_TAG.to_string(), POOL_VALUE.to_string());
        out.push(super::MachineRole {
            name: MONITOR_ROLE,
            grants: RoleGrants {
                reads: vec![
                    param(r::TOKEN_PARAM),
                    param(r::STACK_FILE_PARAM),
                    param(r::TLS_PARAM),
                ],
                // The stack's CA, for the agents (public; from the TLS bundle), and the
                // address the agents reach this monitor VM at (written by each new one).
                writes: vec![param(r::CA_PARAM), param(r::MONITOR_ADDRESS_PARAM)],
                pool: Some(PoolGrant {
                    template_tags,
                    pool_tags: pool,
                    pass_role_path: format!("/iac/{}/", stack.name()),
                    pass_role: super::profile_name(stack, AGENTS_ROLE).unwrap_or_default(),
                }),
                ..Default::default()
            },
        });
    }
    out
}

fn plain(text: String, refs: &[&str]) -> ParamValue {
    ParamValue::Template {
        text,
        refs: refs.iter().map(|r| ResourceId::new(*r)).collect(),
    }
}

/// Why `plan` and `up` refuse a valid custom-scaler stack before any AWS call: the local fleet
/// runs on this machine, with nothing to create on AWS.
pub fn not_deployable(stack: &Stack) -> Option<String> {
    let local = stack.spec.tier == crate::stack::Tier::CustomScaler
        && stack
            .spec
            .scaler
            .as_ref()
            .is_some_and(|s| s.fleet == FleetKind::Local);
    local.then(|| "`scaler.fleet: local` runs the agents on this machine: start them with `iac scale --custom-monitor <file>`; `iac up` and `iac plan` have nothing to create on AWS for it".to_string())
}

pub fn desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    let s = &stack.spec;
    let sc = s.scaler.clone().unwrap_or_default();
    if let Some(why) = not_deployable(stack) {
        return Err(TierError::Unsupported(why));
    }
    let managed_monitor = sc.monitor.address.is_none();
    // The pool has no load balancer in front of it: the app's port is open to the world.
    let mut out = vec![
        security_group(
            stack,
            inputs,
            AGENTS_SG,
            "agents",
            with_ssh(
                stack,
                public_tcp(s.app.port, "app (no load balancer in front)"),
            ),
            &[],
        ),
        super::stack_param(
            stack,
            r::TOKEN_PARAM,
            true,
            ParamValue::Generated,
            None,
            &[],
        ),
    ];
    if managed_monitor {
        // The monitor's TLS key, certificate and CA (read by the monitor only), and the CA
        // certificate the monitor publishes for the agents to pin.
        out.push(super::stack_param(
            stack,
            r::TLS_PARAM,
            true,
            ParamValue::GeneratedTls {
                server_name: iac_proto::MONITOR_TLS_NAME.to_string(),
            },
            None,
            &[],
        ));
        out.push(super::stack_param(
            stack,
            r::CA_PARAM,
            false,
            ParamValue::WrittenByInstances,
            None,
            &[],
        ));
        out.push(security_group(
            stack,
            inputs,
            MONITOR_SG,
            "monitor",
            with_ssh(
                stack,
                vec![tcp_rule(
                    sc.monitor.port,
                    Source::Group(ResourceId::new(AGENTS_SG)),
                    "gRPC from the agents",
                )],
            ),
            &[AGENTS_SG],
        ));
        out.push(super::stack_param(
            stack,
            r::STACK_FILE_PARAM,
            false,
            plain(monitor_stack_file(s)?, &[]),
            Some(Notify {
                instance: ResourceId::new(MONITOR),
                command: r::monitor_refresh_command(stack)?,
                comment: "iac: install the new stack file and restart the monitor".to_string(),
                around: None,
            }),
            &[],
        ));
        let ud = r::monitor(stack)?;
        out.push(Resource::new(
            MONITOR_LT,
            Spec::LaunchTemplate(super::launch_template_spec(
                stack,
                inputs,
                format!("{}-monitor", stack.name()),
                MONITOR_ROLE,
                sc.monitor.instance_type.as_ref(),
                MONITOR_SG,
                &ud,
            )?),
            &[
                MONITOR_SG,
                r::TOKEN_PARAM,
                r::STACK_FILE_PARAM,
                r::TLS_PARAM,
            ],
        ));
        out.push(Resource::new(
            MONITOR,
            Spec::AutoScalingGroup(AutoScalingGroupSpec {
                name: format!("{}-monitor", stack.name()),
                launch_template: ResourceId::new(MONITOR_LT),
                min: 1,
                max: 1,
                desired: 1,
                // Any zone: a replacement is not bound to the zone of the VM it replaces.
                subnet_ids: inputs.subnets.iter().map(|(id, _)| id.clone()).collect(),
                target_groups: Vec::new(),
                health_check_grace_s: MONITOR_GRACE_S,
                scale_in_protection: false,
                // A new template version replaces the one VM: there is no second to keep.
                min_healthy_percent: 0,
                warmup_s: 60,
                role: MONITOR_ROLE.to_string(),
            }),
            &[MONITOR_LT],
        ));
        // Each monitor VM writes its own address here at boot (see the module's doc).
        out.push(super::stack_param(
            stack,
            r::MONITOR_ADDRESS_PARAM,
            false,
            ParamValue::WrittenByInstances,
            None,
            &[],
        ));
    } else {
        let address = sc.monitor.address.clone().unwrap_or_default();
        out.push(super::stack_param(
            stack,
            r::MONITOR_ADDRESS_PARAM,
            false,
            plain(address, &[]),
            None,
            &[],
        ));
    }
    let ud = r::agent(stack)?;
    out.push(Resource::new(
        LT,
        Spec::LaunchTemplate(super::launch_template_spec(
            stack,
            inputs,
            launch_template_name(stack.name()),
            AGENTS_ROLE,
            None,
            AGENTS_SG,
            &ud,
        )?),
        // The monitor launches from the template as soon as it exists: everything an agent
        // reads at boot is there first.
        &[AGENTS_SG, r::TOKEN_PARAM, r::MONITOR_ADDRESS_PARAM],
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn stack(monitor: &str) -> Stack {
        let yaml = format!(
            "name: pool\ntier: custom-scaler\napp:\n  image: nginx:1\n  port: 8080\n\
             network:\n  ssh_from: 203.0.113.0/24\n\
             instance:\n  instance_profile: LabInstanceProfile\n  key_pair: {{ name: vockey }}\n\
             scaler:\n  max: 4\n  agent:\n    binary: {{ url: https://example.org/iac-agent, sha256: {SHA} }}\n\
             {monitor}"
        );
        crate::stack::parse(std::path::Path::new("pool.yaml"), &yaml).expect("valid")
    }

    fn inputs() -> Inputs {
        Inputs {
            vpc_id: "vpc-1".into(),
            subnet_id: Some("subnet-1".into()),
            subnets: vec![
                ("subnet-1".into(), "us-east-1a".into()),
                ("subnet-2".into(), "us-east-1b".into()),
            ],
            image_id: "ami-1".into(),
            root_device: "/dev/sda1".into(),
            hosted_zone_id: None,
        }
    }

    fn find<'a>(rs: &'a [Resource], id: &str) -> &'a Resource {
        rs.iter().find(|r| r.id.as_str() == id).expect(id)
    }

    #[test]
    fn managed_monitor_graph() {
        let s = stack(&format!(
            "  monitor:\n    type: t3.small\n    binary: {{ url: https://example.org/iac, sha256: {SHA} }}\n"
        ));
        let rs = desired(&s, &inputs()).unwrap();
        let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                AGENTS_SG,
                "scaler-token",
                "scaler-tls",
                "scaler-ca",
                MONITOR_SG,
                "stack-file",
                MONITOR_LT,
                MONITOR,
                "monitor-address",
                LT
            ]
        );
        let Spec::SecurityGroup(m) = &find(&rs, MONITOR_SG).spec else {
            panic!("group")
        };
        assert_eq!(
            m.ingress[0].source,
            Source::Group(ResourceId::new(AGENTS_SG))
        );
        assert_eq!(m.ingress[0].from_port, 7700);
        assert!(m
            .ingress
            .iter()
            .all(|r| !matches!(&r.source, Source::Cidr(c) if super::super::ANYWHERE.contains(&c.as_str()))));
        // The monitor VM writes its own address: iac never does.
        let Spec::SsmParameter(addr) = &find(&rs, "monitor-address").spec else {
            panic!("param")
        };
        assert_eq!(addr.value, ParamValue::WrittenByInstances);
        // A group of exactly one, from the monitor's own template, in every usable subnet.
        let Spec::AutoScalingGroup(g) = &find(&rs, MONITOR).spec else {
            panic!("group")
        };
        assert_eq!((g.min, g.max, g.desired), (1, 1, 1));
        assert_eq!(g.name, "pool-monitor");
        assert_eq!(g.launch_template, ResourceId::new(MONITOR_LT));
        assert!(g.target_groups.is_empty());
        assert_eq!(g.subnet_ids, ["subnet-1", "subnet-2"]);
        let Spec::LaunchTemplate(mlt) = &find(&rs, MONITOR_LT).spec else {
            panic!("monitor lt")
        };
        assert_eq!(mlt.name, "pool-monitor");
        assert_eq!(mlt.security_groups, [ResourceId::new(MONITOR_SG)]);
        assert_eq!(mlt.instance_type, "t3.small");
        // A stack-file change restarts the monitor on the group's instance.
        let Spec::SsmParameter(file) = &find(&rs, "stack-file").spec else {
            panic!("param")
        };
        assert_eq!(file.notify[0].instance, ResourceId::new(MONITOR));
        let Spec::SsmParameter(token) = &find(&rs, "scaler-token").spec else {
            panic!("param")
        };
        assert!(token.secure);
        assert_eq!(token.name, "/iac/pool/scaler-token");
        let Spec::LaunchTemplate(lt) = &find(&rs, LT).spec else {
            panic!("lt")
        };
        assert_eq!(lt.name, "pool-agent");
        assert_eq!(lt.key_name.as_deref(), Some("vockey"));
        assert_eq!(lt.instance_profile.as_deref(), Some("LabInstanceProfile"));
        // The stored stack file loads and validates as it is.
        let Spec::SsmParameter(file) = &find(&rs, "stack-file").spec else {
            panic!("param")
        };
        let ParamValue::Template { text, .. } = &file.value else {
            panic!("text")
        };
        let again = crate::stack::parse(std::path::Path::new("/etc/iac/stack.yaml"), text)
            .expect("the stored stack file is valid");
        assert_eq!(again.spec.scaler.map(|s| s.max), Some(4));
        assert!(!text.contains("null"));
    }

    #[test]
    fn given_monitor_address() {
        let s = stack("  monitor:\n    address: 10.0.9.9:7700\n");
        let rs = desired(&s, &inputs()).unwrap();
        let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [AGENTS_SG, "scaler-token", "monitor-address", LT]);
        let Spec::SsmParameter(addr) = &find(&rs, "monitor-address").spec else {
            panic!("param")
        };
        assert_eq!(
            addr.value,
            ParamValue::Template {
                text: "10.0.9.9:7700".into(),
                refs: vec![]
            }
        );
    }

    #[test]
    fn pool_tags_mark_pool_instances_only() {
        let t = pool_tags("pool", &BTreeMap::new());
        assert!(is_pool(&t));
        assert_eq!(t.get("iac:role").map(String::as_str), Some("agent"));
        let mut with_id = t.clone();
        with_id.insert("iac:id".into(), "monitor".into());
        assert!(!is_pool(&with_id));
    }
}
