//! single-vm: one instance running the app and MySQL with docker compose behind nginx, with an
//! Elastic IP and an optional Route 53 record.
//!
//! Graph: key (optional) ─┐
//!        web-sg ─────────┤
//!        app (spec) ─────┤
//!        db-password ────┴─▶ vm ─┬─▶ data (volume, attached)
//!                                └─▶ eip ─▶ dns (optional)
//!
//! The app's image and environment live in the `app` parameter, not in user-data: a change
//! rewrites it and the VM applies it in place through Run Command (new container beside the old
//! one, health check, nginx switched, old one stopped). MySQL's data and the certificates live
//! on the `data` volume, which moves to the new VM when the VM must be replaced and which
//! `down` keeps unless `--delete-data`.

use crate::plan::*;
use crate::render;
use crate::render::app_spec::{self, Switch};
use crate::render::single_vm::{DATA_DEVICE, DB_PASSWORD_PARAM};
use crate::stack::Stack;

use super::{public_tcp, Inputs, TierError};

pub const SG: &str = "web-sg";
pub const KEY: &str = "key";
pub const VM: &str = "vm";
pub const EIP: &str = "eip";
pub const DNS: &str = "dns";
pub const DATA: &str = "data";
/// The data volume's size: MySQL's data and the certificates of a small shop.
pub const DATA_GB: u32 = 8;

fn tcp(port: u16, cidr: &str, description: &str) -> IngressRule {
    IngressRule {
        protocol: "tcp".to_string(),
        from_port: port,
        to_port: port,
        source: Source::Cidr(cidr.to_string()),
        description: description.to_string(),
    }
}

/// The security group rules: web from anywhere, SSH only from `ssh_from` (closed without it).
pub fn ingress(stack: &Stack) -> Vec<IngressRule> {
    let mut rules = [public_tcp(80, "http"), public_tcp(443, "https")].concat();
    if let Some(cidr) = &stack.spec.network.ssh_from {
        rules.push(tcp(22, cidr, "ssh"));
    }
    rules
}

pub fn desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    let name = stack.name();
    let s = &stack.spec;
    let mut out = Vec::new();
    let mut vm_deps = vec![SG];

    let key_name = match &s.instance.key_pair {
        Some(kp) => {
            if let Some(file) = &kp.public_key_file {
                // Validation has read this file already; a race that removed it is reported then.
                let public_key =
                    std::fs::read_to_string(stack.base_dir().join(file)).unwrap_or_default();
                out.push(Resource::new(
                    KEY,
                    Spec::KeyPair(KeyPairSpec {
                        key_name: kp.name.clone(),
                        public_key: public_key.trim().to_string(),
                    }),
                    &[],
                ));
                vm_deps.push(KEY);
            }
            Some(kp.name.clone())
        }
        None => None,
    };

    out.push(Resource::new(
        SG,
        Spec::SecurityGroup(SecurityGroupSpec {
            group_name: format!("{name}-web"),
            description: format!("iac stack {name}: web server"),
            vpc_id: inputs.vpc_id.clone(),
            ingress: ingress(stack),
        }),
        &[],
    ));

    out.push(super::stack_param(
        stack,
        app_spec::APP_PARAM,
        false,
        ParamValue::Template {
            text: app_spec::app_spec(stack)?,
            refs: Vec::new(),
        },
        Some(Notify {
            instance: ResourceId::new(VM),
            command: app_spec::update_command(stack, Switch::Nginx),
            comment: "iac: update the app in place (health-checked, old one kept on failure)"
                .to_string(),
            around: None,
        }),
        &[],
    ));
    vm_deps.push(app_spec::APP_PARAM);
    if s.database.as_ref().is_some_and(|d| d.password.is_none()) {
        out.push(super::stack_param(
            stack,
            DB_PASSWORD_PARAM,
            true,
            ParamValue::Generated,
            None,
            &[],
        ));
        vm_deps.push(DB_PASSWORD_PARAM);
    }

    let user_data = render::single_vm(stack)?;
    let payload = user_data.payload()?;
    out.push(Resource::new(
        VM,
        Spec::Instance(InstanceSpec {
            instance_type: s.instance.instance_type.clone(),
            image_id: inputs.image_id.clone(),
            root_device: inputs.root_device.clone(),
            key_name,
            security_groups: vec![ResourceId::new(SG)],
            subnet_id: inputs.subnet_id.clone(),
            instance_profile: super::profile_name(stack, VM),
            disk_gb: s.instance.disk_gb,
            metadata_hop_limit: s.instance.metadata_hop_limit,
            user_data: payload,
            user_data_sha: user_data.sha256(),
        }),
        &vm_deps,
    ));
    out.push(Resource::new(
        DATA,
        Spec::Volume(VolumeSpec {
            size_gb: DATA_GB,
            availability_zone: inputs
                .subnets
                .iter()
                .find(|(id, _)| Some(id) == inputs.subnet_id.as_ref())
                .or(inputs.subnets.first())
                .map(|(_, az)| az.clone())
                .unwrap_or_default(),
            attach_to: ResourceId::new(VM),
            device: DATA_DEVICE.to_string(),
            keep_on_down: true,
            protected: stack.spec.protect,
        }),
        &[VM],
    ));

    out.push(Resource::new(
        EIP,
        Spec::ElasticIp(ElasticIpSpec {
            instance: ResourceId::new(VM),
        }),
        &[VM],
    ));

    out.extend(super::dns_record(stack, inputs, DNS, EIP));
    Ok(out)
}

/// One machine role, `vm`: it reads the app's spec and secrets and the database password (the
/// stack's own, or the one the file names), and writes nothing.
pub fn roles(stack: &Stack) -> Vec<super::MachineRole> {
    let mut reads = vec![super::param(stack, app_spec::APP_PARAM)];
    reads.extend(super::app_secret_params(stack));
    if let Some(db) = &stack.spec.database {
        reads.push(match &db.password {
            Some(p) => p.ssm.clone(),
            None => super::param(stack, DB_PASSWORD_PARAM),
        });
    }
    vec![super::MachineRole {
        name: VM,
        grants: RoleGrants {
            reads,
            ..Default::default()
        },
    }]
}
