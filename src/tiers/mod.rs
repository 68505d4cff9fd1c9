//! Tiers declare the resources a stack needs. They never call AWS: what must be looked up first
//! (VPC, subnets, image, hosted zone) arrives as [`Inputs`].

pub mod alb_asg;
pub mod custom_scaler;
pub mod lb_vms;
mod outputs;
pub mod single_vm;
pub mod swarm;

pub use outputs::outputs;

use crate::plan::{
    IngressRule, InstanceProfileSpec, Kind, Observed, Resource, ResourceId, RoleGrants,
    SecurityGroupSpec, Source, Spec,
};
use crate::render::RenderError;
use crate::stack::{Stack, Tier};

pub use crate::plan::Inputs;

/// A TCP rule opening one port to `source`.
pub(crate) fn tcp_rule(port: u16, source: Source, description: &str) -> IngressRule {
    IngressRule {
        protocol: "tcp".to_string(),
        from_port: port,
        to_port: port,
        source,
        description: description.to_string(),
    }
}

/// Where a public port is open from: every IPv4 and every IPv6 address (IPv6 clients reach
/// the app wherever the subnet and the load balancer have IPv6; elsewhere the rule is inert).
pub(crate) const ANYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// TCP `port` open to the world, over IPv4 and IPv6.
pub(crate) fn public_tcp(port: u16, description: &str) -> Vec<IngressRule> {
    ANYWHERE
        .iter()
        .map(|cidr| tcp_rule(port, Source::Cidr((*cidr).to_string()), description))
        .collect()
}

/// `rules` plus SSH from `network.ssh_from` when the stack opens it.
pub(crate) fn with_ssh(stack: &Stack, mut rules: Vec<IngressRule>) -> Vec<IngressRule> {
    if let Some(cidr) = &stack.spec.network.ssh_from {
        rules.push(tcp_rule(22, Source::Cidr(cidr.clone()), "ssh"));
    }
    rules
}

/// The stack's security group `id` for `role` (named `<stack>-<role>`) in the stack's VPC.
pub(crate) fn security_group(
    stack: &Stack,
    inputs: &Inputs,
    id: &str,
    role: &str,
    ingress: Vec<IngressRule>,
    deps: &[&str],
) -> Resource {
    Resource::new(
        id,
        Spec::SecurityGroup(SecurityGroupSpec {
            group_name: format!("{}-{role}", stack.name()),
            description: format!("iac stack {}: {role}", stack.name()),
            vpc_id: inputs.vpc_id.clone(),
            ingress,
        }),
        deps,
    )
}

/// An instance of the stack with the shared `instance` settings, the profile of its machine
/// `role`, an optional per-role type, one security group and the given user-data.
#[allow(clippy::too_many_arguments)]
pub(crate) fn instance_spec(
    stack: &Stack,
    inputs: &Inputs,
    role: &str,
    instance_type: Option<&String>,
    security_group: &str,
    subnet: Option<String>,
    ud: &crate::render::UserData,
) -> Result<crate::plan::InstanceSpec, TierError> {
    let s = &stack.spec;
    Ok(crate::plan::InstanceSpec {
        instance_type: instance_type
            .cloned()
            .unwrap_or_else(|| s.instance.instance_type.clone()),
        image_id: inputs.image_id.clone(),
        root_device: inputs.root_device.clone(),
        key_name: s.instance.key_pair.as_ref().map(|k| k.name.clone()),
        security_groups: vec![crate::plan::ResourceId::new(security_group)],
        subnet_id: subnet,
        instance_profile: profile_name(stack, role),
        disk_gb: s.instance.disk_gb,
        metadata_hop_limit: s.instance.metadata_hop_limit,
        user_data: ud.payload()?,
        user_data_sha: ud.sha256(),
    })
}

/// A launch template `name` of the stack with the shared `instance` settings, the profile of
/// its machine `role`, an optional per-role type, one security group and the given user-data.
pub(crate) fn launch_template_spec(
    stack: &Stack,
    inputs: &Inputs,
    name: String,
    role: &str,
    instance_type: Option<&String>,
    security_group: &str,
    ud: &crate::render::UserData,
) -> Result<crate::plan::LaunchTemplateSpec, TierError> {
    let s = &stack.spec;
    Ok(crate::plan::LaunchTemplateSpec {
        name,
        image_id: inputs.image_id.clone(),
        root_device: inputs.root_device.clone(),
        instance_type: instance_type
            .cloned()
            .unwrap_or_else(|| s.instance.instance_type.clone()),
        key_name: s.instance.key_pair.as_ref().map(|k| k.name.clone()),
        instance_profile: profile_name(stack, role),
        security_groups: vec![crate::plan::ResourceId::new(security_group)],
        disk_gb: s.instance.disk_gb,
        metadata_hop_limit: s.instance.metadata_hop_limit,
        user_data: ud.payload()?,
        user_data_sha: ud.sha256(),
    })
}

/// A parameter under the stack's SSM path.
pub(crate) fn stack_param(
    stack: &Stack,
    leaf: &str,
    secure: bool,
    value: crate::plan::ParamValue,
    notify: Option<crate::plan::Notify>,
    deps: &[&str],
) -> Resource {
    Resource::new(
        leaf,
        crate::plan::Spec::SsmParameter(crate::plan::SsmParameterSpec {
            name: crate::render::param_name(stack.name(), leaf),
            secure,
            value,
            notify: notify.into_iter().collect(),
        }),
        deps,
    )
}

/// The optional Route 53 A record pointing the stack's domain at its Elastic IP `eip`.
pub(crate) fn dns_record(stack: &Stack, inputs: &Inputs, id: &str, eip: &str) -> Option<Resource> {
    let domain = stack.spec.domain.as_ref()?;
    let zone_id = inputs.hosted_zone_id.as_ref()?;
    Some(Resource::new(
        id,
        crate::plan::Spec::DnsRecord(crate::plan::DnsRecordSpec {
            zone_id: zone_id.clone(),
            name: domain.name.trim_end_matches('.').to_string(),
            ttl: 300,
            target: crate::plan::ResourceId::new(eip),
        }),
        &[eip],
    ))
}

/// What "the app came up" means for a tier, for `up` to wait on (after every instance it
/// launched has reported its boot ready).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Readiness {
    /// The port the public address answers HTTP on (single-vm, lb-vms, swarm: the `url`
    /// output's host; alb-asg: the load balancer's name). `None`: no one public address.
    pub http_port: Option<u16>,
    /// alb-asg: healthy targets the target group must have.
    pub healthy_targets: Option<u32>,
    /// Instances of this name (the custom scaler's `agent` pool) that must have reported
    /// their boot ready, besides every instance `up` launched.
    pub ready_at_least: Option<(&'static str, u32)>,
}

/// The live instances launched on the stack's behalf (discovery's `untracked`), each named
/// after what launched it: the custom scaler's pool ([`custom_scaler::pool`]), the Auto
/// Scaling group of `resources` whose name it carries, else `untracked`.
pub fn launched(untracked: &[Observed], resources: &[Observed]) -> Vec<Observed> {
    let pool = custom_scaler::pool(untracked);
    untracked
        .iter()
        .map(|o| {
            if let Some(p) = pool.iter().find(|p| p.physical_id == o.physical_id) {
                return p.clone();
            }
            let group = o.tags.get(crate::plan::tags::ASG_NAME).and_then(|name| {
                resources
                    .iter()
                    .find(|g| g.kind == Kind::AutoScalingGroup && &g.physical_id == name)
            });
            Observed {
                id: group
                    .map(|g| g.id.clone())
                    .unwrap_or_else(|| ResourceId::new("untracked")),
                ..o.clone()
            }
        })
        .collect()
}

/// The readiness conditions of the stack's tier.
pub fn readiness(stack: &Stack) -> Readiness {
    let s = &stack.spec;
    let http_port = match s.tier {
        Tier::Swarm => Some(s.swarm.as_ref().map_or(80, |sw| {
            if s.domain.is_some() {
                80
            } else {
                sw.published_port
            }
        })),
        Tier::SingleVm | Tier::LbVms | Tier::AlbAsg => Some(80),
        Tier::CustomScaler => None,
    };
    Readiness {
        http_port,
        healthy_targets: match s.tier {
            Tier::AlbAsg => Some(s.scaling.as_ref().map_or(1, |sc| sc.min.max(1))),
            _ => None,
        },
        ready_at_least: match s.tier {
            Tier::CustomScaler => Some((
                custom_scaler::AGENT_ROLE_VALUE,
                s.scaler.as_ref().map_or(1, |sc| sc.min),
            )),
            _ => None,
        },
    }
}

pub use crate::plan::{Drain, DrainCommand};

/// The drain hook of a stack's tier, if it has one.
pub fn drain(stack: &Stack) -> Option<Drain> {
    match stack.spec.tier {
        Tier::Swarm => Some(swarm::drain(stack)),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("tier `{0}` is not available in this version of iac")]
    NotImplemented(&'static str),
    /// The stack is valid but describes nothing `iac up` deploys.
    #[error("{0}")]
    Unsupported(String),
    #[error("SSM parameter {name} would hold {size} bytes; the standard tier holds {SSM_STANDARD_MAX} (fewer web VMs or a shorter configuration fit)")]
    ParameterTooLarge { name: String, size: usize },
}

use crate::stack::validate::SSM_STANDARD_VALUE_MAX as SSM_STANDARD_MAX;

/// Refuses parameter values (`haproxy.cfg`, the swarm service spec, ...) that do not fit the
/// standard tier. Placeholders are longer than the addresses that replace them, so the text
/// as declared is an upper bound.
fn check_param_sizes(resources: &[Resource]) -> Result<(), TierError> {
    for r in resources {
        if let Spec::SsmParameter(crate::plan::SsmParameterSpec {
            name,
            value: crate::plan::ParamValue::Template { text, .. },
            ..
        }) = &r.spec
        {
            if text.len() > SSM_STANDARD_MAX {
                return Err(TierError::ParameterTooLarge {
                    name: name.clone(),
                    size: text.len(),
                });
            }
        }
    }
    Ok(())
}

/// One machine role of a tier: the instances that share an instance profile, and what their
/// boot scripts and commands read and write. Declared by each tier; `aws::iam` writes the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRole {
    /// `vm`, `web`, `manager-1`, `workers`, `monitor`, ...: the role and profile are named
    /// `<stack>-<name>`.
    pub name: &'static str,
    pub grants: RoleGrants,
}

/// Logical id of the instance profile `iac` creates for machine role `role`.
pub fn profile_id(role: &str) -> String {
    format!("profile-{role}")
}

/// The instance profile of the stack's `role` instances: the one named in the file (one for
/// every role: `iac` cannot change it), or the one `iac` creates for the role
/// (`<stack>-<role>`).
pub fn profile_name(stack: &Stack, role: &str) -> Option<String> {
    match stack.spec.instance.instance_profile.as_deref() {
        Some("create") => Some(format!("{}-{role}", stack.name())),
        other => other.map(str::to_string),
    }
}

/// The full name of the stack parameter `leaf`.
pub(crate) fn param(stack: &Stack, leaf: &str) -> String {
    crate::render::param_name(stack.name(), leaf)
}

/// The SSM parameters the app's secrets come from: read by the role that starts the app.
pub(crate) fn app_secret_params(stack: &Stack) -> Vec<String> {
    stack
        .spec
        .app
        .secrets
        .values()
        .map(|r| r.ssm.clone())
        .collect()
}

/// The machine roles of the stack's tier. Every boot script reports its boot, so every role
/// may publish its instances' boot reports.
pub fn roles(stack: &Stack) -> Vec<MachineRole> {
    let mut roles = match stack.spec.tier {
        Tier::SingleVm => single_vm::roles(stack),
        Tier::LbVms => lb_vms::roles(stack),
        Tier::Swarm => swarm::roles(stack),
        Tier::AlbAsg => alb_asg::roles(stack),
        Tier::CustomScaler => custom_scaler::roles(stack),
    };
    for r in &mut roles {
        r.grants.boot_reports = Some(crate::render::boot_reports_path(stack.name()));
    }
    roles
}

/// One role and profile per machine role, for `instance_profile: create`.
fn profile_resources(stack: &Stack) -> Vec<Resource> {
    if stack.spec.instance.instance_profile.as_deref() != Some("create") {
        return Vec::new();
    }
    roles(stack)
        .into_iter()
        .filter_map(|role| {
            Some(Resource::new(
                &profile_id(role.name),
                Spec::InstanceProfile(InstanceProfileSpec {
                    name: profile_name(stack, role.name)?,
                    path: format!("/iac/{}/", stack.name()),
                    grants: role.grants,
                }),
                &[],
            ))
        })
        .collect()
}

/// The kinds the stack file declares, known before any look-up in the account: the graph built
/// with stand-in inputs (what kinds it has does not depend on the VPC, subnets or image, only
/// how many of them; a hosted zone the stack names is resolved or refused). So discovery can run
/// beside the look-ups.
pub fn kinds(stack: &Stack) -> Result<std::collections::BTreeSet<Kind>, TierError> {
    let subnet = |n: &str| (format!("subnet-{n}"), format!("zone-{n}"));
    let stand_in = Inputs {
        vpc_id: "vpc-0".to_string(),
        subnet_id: Some(subnet("a").0),
        subnets: vec![subnet("a"), subnet("b")],
        image_id: "ami-0".to_string(),
        root_device: "/dev/xvda".to_string(),
        hosted_zone_id: stack
            .spec
            .domain
            .as_ref()
            .and_then(|d| d.hosted_zone.as_ref())
            .map(|_| "Z0".to_string()),
    };
    Ok(crate::plan::scope::declared(&desired(stack, &stand_in)?))
}

/// The desired resources of a stack, in creation order.
pub fn desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    let mut out = tier_desired(stack, inputs)?;
    let profiles = profile_resources(stack);
    // Everything that launches instances waits for the profile it names.
    for r in &mut out {
        let named = match &r.spec {
            Spec::Instance(i) => i.instance_profile.as_deref(),
            Spec::LaunchTemplate(l) => l.instance_profile.as_deref(),
            _ => None,
        };
        let profile = profiles.iter().find(
            |p| matches!(&p.spec, Spec::InstanceProfile(s) if Some(s.name.as_str()) == named),
        );
        if let Some(p) = profile {
            r.deps.push(p.id.clone());
        }
    }
    check_param_sizes(&out)?;
    Ok(profiles.into_iter().chain(out).collect())
}

fn tier_desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    match stack.spec.tier {
        Tier::SingleVm => single_vm::desired(stack, inputs),
        Tier::LbVms => lb_vms::desired(stack, inputs),
        Tier::Swarm => swarm::desired(stack, inputs),
        Tier::AlbAsg => alb_asg::desired(stack, inputs),
        Tier::CustomScaler => custom_scaler::desired(stack, inputs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ParamValue, SsmParameterSpec};

    fn example(file: &str) -> Stack {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("stacks")
            .join(file);
        crate::stack::load(&path).expect("the example loads")
    }

    /// The example stack files (`stacks/*.yaml`), by name.
    fn example_files() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("stacks/")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|f| f.ends_with(".yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        files
    }

    #[test]
    fn the_kinds_known_from_the_file_are_those_of_the_graph_with_any_inputs() {
        for f in example_files() {
            let stack = example(&f);
            let known = match kinds(&stack) {
                Ok(known) => known,
                // Refused with any inputs (a local fleet has nothing on AWS).
                Err(e) => {
                    assert!(matches!(e, TierError::Unsupported(_)), "{f}: {e}");
                    continue;
                }
            };
            let one_subnet = Inputs {
                vpc_id: "vpc-1234".to_string(),
                subnet_id: Some("subnet-9".to_string()),
                subnets: vec![("subnet-9".to_string(), "us-east-1a".to_string())],
                image_id: "ami-abcdef".to_string(),
                root_device: "/dev/sda1".to_string(),
                hosted_zone_id: known.contains(&Kind::DnsRecord).then(|| "Z123".to_string()),
            };
            let graph = desired(&stack, &one_subnet).expect("the graph");
            assert_eq!(known, crate::plan::scope::declared(&graph), "{f}");
        }
    }

    #[test]
    fn each_tier_says_what_up_waits_for() {
        let vm = readiness(&example("bookstore-vm.yaml"));
        assert_eq!(vm.http_port, Some(80));
        assert_eq!((vm.healthy_targets, vm.ready_at_least), (None, None));
        let asg_stack = example("bookstore-asg.yaml");
        let asg = readiness(&asg_stack);
        let min = asg_stack.spec.scaling.as_ref().map(|s| s.min);
        assert_eq!((asg.http_port, asg.healthy_targets), (Some(80), min));
        let swarm_stack = example("bookstore-swarm.yaml");
        let published = swarm_stack.spec.swarm.as_ref().map(|s| s.published_port);
        let swarm = readiness(&swarm_stack);
        assert_eq!(
            swarm.http_port,
            if swarm_stack.spec.domain.is_some() {
                Some(80)
            } else {
                published
            }
        );
        let scaler_stack = example("custom-scaler.yaml");
        let scaler = readiness(&scaler_stack);
        assert_eq!(scaler.http_port, None);
        assert_eq!(
            scaler.ready_at_least,
            Some((
                "agent",
                scaler_stack.spec.scaler.as_ref().map_or(0, |s| s.min)
            ))
        );
    }

    fn param(len: usize) -> Resource {
        Resource::new(
            "haproxy.cfg",
            Spec::SsmParameter(SsmParameterSpec {
                name: "/iac/s/haproxy.cfg".into(),
                secure: false,
                value: ParamValue::Template {
                    text: "x".repeat(len),
                    refs: Vec::new(),
                },
                notify: Vec::new(),
            }),
            &[],
        )
    }

    /// Every name a tier gives a resource that is unique in the account starts with `<stack>-`:
    /// discovery narrows the untagged listings (RDS subnet groups, load balancers, target
    /// groups) by it ([`crate::plan::tags::named_for`]).
    #[test]
    fn every_example_names_its_resources_after_the_stack() {
        let inputs = Inputs {
            vpc_id: "vpc-1".to_string(),
            subnet_id: Some("subnet-1".to_string()),
            subnets: vec![
                ("subnet-1".to_string(), "us-east-1a".to_string()),
                ("subnet-2".to_string(), "us-east-1b".to_string()),
            ],
            image_id: "ami-1".to_string(),
            root_device: "/dev/xvda".to_string(),
            hosted_zone_id: Some("Z1".to_string()),
        };
        let mut named = 0;
        let mut kinds = std::collections::BTreeSet::new();
        for file in example_files() {
            let stack = example(&file);
            let Ok(graph) = desired(&stack, &inputs) else {
                continue;
            };
            for r in &graph {
                let name = match &r.spec {
                    Spec::SecurityGroup(s) => &s.group_name,
                    Spec::DbSubnetGroup(s) => &s.name,
                    Spec::DbCluster(s) => &s.identifier,
                    Spec::DbInstance(s) => &s.identifier,
                    Spec::TargetGroup(s) => &s.name,
                    Spec::LoadBalancer(s) => &s.name,
                    Spec::LaunchTemplate(s) => &s.name,
                    Spec::AutoScalingGroup(s) => &s.name,
                    Spec::InstanceProfile(s) => &s.name,
                    _ => continue,
                };
                named += 1;
                kinds.insert(r.kind());
                assert!(
                    crate::plan::tags::named_for(name, &stack.spec.name),
                    "{file}: {} is named {name}",
                    r.id
                );
            }
        }
        assert!(named >= 8, "{named}");
        // The examples cover every kind whose listing is narrowed by name.
        for kind in [Kind::DbSubnetGroup, Kind::LoadBalancer, Kind::TargetGroup] {
            assert!(kinds.contains(&kind), "no example has a {kind}: {kinds:?}");
        }
    }

    #[test]
    fn parameters_must_fit_the_standard_tier() {
        assert!(check_param_sizes(&[param(SSM_STANDARD_MAX)]).is_ok());
        let err = check_param_sizes(&[param(SSM_STANDARD_MAX + 1)]).unwrap_err();
        assert!(err.to_string().contains("4097 bytes"), "{err}");
    }
}
