//! swarm: managers and workers that form a Docker Swarm by themselves, and the app as a
//! replicated service behind the routing mesh.
//!
//! ```text
//! swarm-sg ─┬─▶ manager-1 (initialises, publishes join tokens to SSM) ─▶ eip ─▶ dns
//! service ──┘   manager-2.., worker-1..N (wait for the tokens, then join)
//! ```
//! The service's spec lives in the `service` parameter: a change to the image or the replica
//! count rewrites it and the leader applies it in place (SSM Run Command, rolling update).
//! Nodes removed by a smaller count are drained and removed from the swarm through the leader
//! before they are terminated.

use std::sync::Arc;

use crate::plan::*;
use crate::render::swarm as r;
use crate::stack::Stack;

use super::{public_tcp, Drain, Inputs, TierError};

pub const SG: &str = "swarm-sg";
pub const LEADER: &str = "manager-1";
pub const EIP: &str = "eip";
pub const DNS: &str = "dns";

pub use crate::stack::model::SWARM_PORTS;

/// Machine roles: the first manager (it initialises the swarm and is the leader `iac` talks
/// to), the other managers, the workers.
pub const LEADER_ROLE: &str = "manager-1";
pub const MANAGERS_ROLE: &str = "managers";
pub const WORKERS_ROLE: &str = "workers";

/// Only manager-1 writes: the two join tokens and its address. It also reads the service spec
/// and the app's secrets (it creates and updates the service). The other managers read the
/// manager token and the address; the workers the worker token and the address, so a worker
/// can never join as a manager.
pub fn roles(stack: &Stack) -> Vec<super::MachineRole> {
    let param = |leaf| super::param(stack, leaf);
    let mut leader_reads = vec![param(r::SERVICE_PARAM)];
    leader_reads.extend(super::app_secret_params(stack));
    let joins = |token| RoleGrants {
        reads: vec![param(r::LEADER_ADDR_PARAM), param(token)],
        ..Default::default()
    };
    let sw = stack.spec.swarm.clone().unwrap_or_default();
    let mut out = vec![super::MachineRole {
        name: LEADER_ROLE,
        grants: RoleGrants {
            reads: leader_reads,
            writes: vec![
                param(r::MANAGER_TOKEN_PARAM),
                param(r::WORKER_TOKEN_PARAM),
                param(r::LEADER_ADDR_PARAM),
            ],
            ..Default::default()
        },
    }];
    if sw.managers > 1 {
        out.push(super::MachineRole {
            name: MANAGERS_ROLE,
            grants: joins(r::MANAGER_TOKEN_PARAM),
        });
    }
    if sw.workers > 0 {
        out.push(super::MachineRole {
            name: WORKERS_ROLE,
            grants: joins(r::WORKER_TOKEN_PARAM),
        });
    }
    out
}

pub fn manager_id(n: u32) -> String {
    format!("manager-{n}")
}

pub fn worker_id(n: u32) -> String {
    format!("worker-{n}")
}

fn rule(protocol: &str, port: u16, source: Source, description: &str) -> IngressRule {
    IngressRule {
        protocol: protocol.to_string(),
        from_port: port,
        to_port: port,
        source,
        description: description.to_string(),
    }
}

/// The cluster's one security group: swarm traffic only from itself, the app from anywhere.
pub fn ingress(stack: &Stack) -> Vec<IngressRule> {
    let s = &stack.spec;
    let mut rules: Vec<IngressRule> = SWARM_PORTS
        .iter()
        .map(|(proto, port, what)| rule(proto, *port, Source::Group(ResourceId::new(SG)), what))
        .collect();
    if s.domain.is_some() {
        rules.extend(public_tcp(80, "http (nginx on the managers)"));
        rules.extend(public_tcp(443, "https (nginx on the managers)"));
    } else {
        let port = s.swarm.as_ref().map(|w| w.published_port).unwrap_or(80);
        rules.extend(public_tcp(port, "the app through the routing mesh"));
    }
    if let Some(cidr) = &s.network.ssh_from {
        rules.push(rule("tcp", 22, Source::Cidr(cidr.clone()), "ssh"));
    }
    rules
}

/// Drain through the leader before terminating a node.
pub fn drain(stack: &Stack) -> Drain {
    let stack = stack.clone();
    Drain {
        leader: ResourceId::new(LEADER),
        command: Arc::new(move |ip: &str| r::drain_command(&stack, ip)),
    }
}

pub fn desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    let s = &stack.spec;
    let sw = s.swarm.clone().unwrap_or_default();
    let subnet = |n: usize| {
        inputs
            .subnets
            .get(n % inputs.subnets.len().max(1))
            .map(|(id, _)| id.clone())
    };
    let mut out = vec![
        Resource::new(
            SG,
            Spec::SecurityGroup(SecurityGroupSpec {
                group_name: format!("{}-swarm", stack.name()),
                description: format!("iac stack {}: swarm nodes", stack.name()),
                vpc_id: inputs.vpc_id.clone(),
                ingress: ingress(stack),
            }),
            &[],
        ),
        super::stack_param(
            stack,
            r::SERVICE_PARAM,
            false,
            ParamValue::Template {
                text: r::service_spec(stack)?,
                refs: Vec::new(),
            },
            Some(Notify {
                instance: ResourceId::new(LEADER),
                command: r::service_apply_command(stack),
                comment: "iac: apply the service spec (rolling update)".to_string(),
                around: None,
            }),
            &[],
        ),
    ];
    // Written by manager-1 at boot; listed so they are the stack's (and `down` removes them).
    for (leaf, secure) in [
        (r::MANAGER_TOKEN_PARAM, true),
        (r::WORKER_TOKEN_PARAM, true),
        (r::LEADER_ADDR_PARAM, false),
    ] {
        out.push(super::stack_param(
            stack,
            leaf,
            secure,
            ParamValue::WrittenByInstances,
            None,
            &[],
        ));
    }
    for n in 1..=sw.managers {
        let id = manager_id(n);
        let ud = r::manager(stack, n)?;
        // The first manager reads the service spec at boot; the others only need the group.
        let deps: &[&str] = if n == 1 {
            &[SG, r::SERVICE_PARAM]
        } else {
            &[SG]
        };
        out.push(Resource::new(
            &id,
            Spec::Instance(super::instance_spec(
                stack,
                inputs,
                if n == 1 { LEADER_ROLE } else { MANAGERS_ROLE },
                sw.manager_type.as_ref(),
                SG,
                subnet(n as usize - 1),
                &ud,
            )?),
            deps,
        ));
    }
    let worker_ud = r::worker(stack)?;
    for n in 1..=sw.workers {
        let id = worker_id(n);
        out.push(Resource::new(
            &id,
            Spec::Instance(super::instance_spec(
                stack,
                inputs,
                WORKERS_ROLE,
                sw.worker_type.as_ref(),
                SG,
                subnet(n as usize - 1),
                &worker_ud,
            )?),
            &[SG],
        ));
    }
    out.push(Resource::new(
        EIP,
        Spec::ElasticIp(ElasticIpSpec {
            instance: ResourceId::new(LEADER),
        }),
        &[LEADER],
    ));
    out.extend(super::dns_record(stack, inputs, DNS, EIP));
    Ok(out)
}
