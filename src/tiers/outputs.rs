//! What `up` and `status` print at the end: URLs, addresses, ids.

use std::collections::BTreeMap;

use crate::plan::*;
use crate::stack::Stack;

/// What `status` and `up` print at the end, from what is known of the stack's resources
/// (`up`: what the run made and kept; `status`: what discovery found).
pub fn outputs(stack: &Stack, facts: &Facts) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let of_kind = |kind: Kind| facts.iter().filter(move |(_, f)| f.kind == kind);
    let eip = of_kind(Kind::ElasticIp).find_map(|(_, f)| f.attr("public_ip").map(str::to_string));
    if let Some(public_ip) = &eip {
        out.insert("public_ip".to_string(), public_ip.clone());
        let port = match (&stack.spec.tier, &stack.spec.swarm) {
            (crate::stack::Tier::Swarm, Some(sw)) if sw.published_port != 80 => {
                format!(":{}", sw.published_port)
            }
            _ => String::new(),
        };
        let url = match &stack.spec.domain {
            Some(d) => format!("https://{}", d.name),
            None => format!("http://{public_ip}{port}"),
        };
        out.insert("url".to_string(), url);
        if let (Some(_), Some(_)) = (&stack.spec.instance.key_pair, &stack.spec.network.ssh_from) {
            let user = if stack.spec.instance.image.starts_with("ubuntu") {
                "ubuntu"
            } else {
                "ec2-user"
            };
            out.insert("ssh".to_string(), format!("ssh {user}@{public_ip}"));
        }
        if let Some(d) = stack
            .spec
            .domain
            .as_ref()
            .filter(|d| d.hosted_zone.is_none())
        {
            out.insert(
                "dns".to_string(),
                format!("point {} (A) at {public_ip}", d.name),
            );
        }
    }
    let instance = |id: &str| {
        facts
            .get(&ResourceId::new(id))
            .filter(|f| f.kind == Kind::Instance)
    };
    if let Some(vm) = instance(super::single_vm::VM) {
        out.insert("instance_id".to_string(), vm.physical_id.clone());
    }
    if let Some(lb) = instance(super::lb_vms::LB) {
        out.insert("balancer_instance_id".to_string(), lb.physical_id.clone());
    }
    if let Some(ip) = instance(super::lb_vms::DB).and_then(|f| f.attr("ip")) {
        out.insert("database_private_ip".to_string(), ip.to_string());
    }
    for f in facts.values() {
        match (f.kind, f.attr("dns")) {
            (Kind::LoadBalancer, Some(dns_name))
                if stack.spec.tier == crate::stack::Tier::AlbAsg =>
            {
                let https = stack
                    .spec
                    .load_balancer
                    .as_ref()
                    .is_some_and(|l| l.certificate_arn.is_some());
                out.insert(
                    "url".to_string(),
                    format!("{}://{dns_name}", if https { "https" } else { "http" }),
                );
                out.insert("load_balancer_dns".to_string(), dns_name.to_string());
            }
            (Kind::DbCluster, _) => {
                if let Some(e) = f.attr("endpoint") {
                    out.insert("database_endpoint".to_string(), e.to_string());
                }
            }
            (Kind::FileSystem, _) => {
                out.insert("file_system_id".to_string(), f.physical_id.clone());
            }
            (Kind::AutoScalingGroup, _) => {
                if let (Some(instances), Some(desired)) = (f.attr("instances"), f.attr("desired")) {
                    out.insert(
                        "group_instances".to_string(),
                        format!("{instances} (desired {desired})"),
                    );
                }
            }
            _ => {}
        }
    }
    if stack.spec.tier == crate::stack::Tier::CustomScaler {
        use crate::render::custom_scaler as cs;
        let name = stack.name();
        out.insert(
            "launch_template".to_string(),
            super::custom_scaler::launch_template_name(name),
        );
        // The parameter's name only: the token itself is never read back.
        out.insert(
            "token_parameter".to_string(),
            crate::render::param_name(name, cs::TOKEN_PARAM),
        );
        let address = facts
            .get(&ResourceId::new(cs::MONITOR_ADDRESS_PARAM))
            .filter(|f| f.kind == Kind::SsmParameter)
            .and_then(|f| f.attr("value"));
        if let Some(a) = address {
            out.insert("monitor_address".to_string(), a.to_string());
        }
        // The monitor VM is its group's instance in service (the group replaces it).
        let monitor = facts
            .get(&ResourceId::new(super::custom_scaler::MONITOR))
            .filter(|f| f.kind == Kind::AutoScalingGroup)
            .and_then(|f| f.attr("in_service"))
            .and_then(|ids| ids.split(',').find(|id| !id.is_empty()));
        if let Some(m) = monitor {
            out.insert("monitor_instance_id".to_string(), m.to_string());
        }
    }
    for (prefix, key) in [
        ("web-", "web_vms"),
        ("manager-", "swarm_managers"),
        ("worker-", "swarm_workers"),
    ] {
        let n = of_kind(Kind::Instance)
            .filter(|(id, _)| id.as_str().starts_with(prefix))
            .count();
        if n > 0 {
            out.insert(key.to_string(), n.to_string());
        }
    }
    out
}
