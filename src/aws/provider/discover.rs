//! Discovery by tag, and the read-only look-ups a tier's graph needs.

use std::collections::BTreeMap;

use crate::apply::events::{Event, Reporter};
use crate::aws::error::{AwsError, ErrorClass};
use crate::aws::{autoscaling, ec2, efs, elbv2, iam, rds, route53, ssm, tags, Aws};
use crate::plan::*;
use crate::stack::validate::IMAGE_ALIASES;
use crate::stack::Stack;
use crate::tiers::Inputs;

/// Everything tagged with a stack.
#[derive(Debug, Default, Clone)]
pub struct Discovered {
    pub resources: Vec<Observed>,
    pub terminated_per_id: BTreeMap<String, u32>,
    pub terminated_ids: Vec<String>,
    /// custom-scaler: the instances the monitor launched (tagged `iac:scaler=pool`, no `iac:id`),
    /// reported with the logical id `pool`. Not part of `resources`: `up` and `plan` neither
    /// adopt nor delete them; `down` terminates them and `status` lists them.
    pub pool: Vec<Observed>,
}

/// Finds every resource of `stack` through its tags (no local state).
pub async fn discover(aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
    let (keys, groups, instances, addresses, volumes, params) = tokio::try_join!(
        ec2::discover_key_pairs(aws, stack),
        ec2::discover_security_groups(aws, stack),
        ec2::discover_instances(aws, stack),
        ec2::discover_addresses(aws, stack),
        ec2::discover_volumes(aws, stack),
        ssm::discover(aws, stack),
    )?;
    let (profiles, templates, balancing, groups_as, databases, files) = tokio::try_join!(
        iam::discover(aws, stack),
        ec2::discover_launch_templates(aws, stack),
        elbv2::discover(aws, stack),
        autoscaling::discover(aws, stack),
        rds::discover(aws, stack),
        efs::discover(aws, stack),
    )?;
    let mut records = Vec::new();
    for a in &addresses {
        let Some(tag) = a.tags.get(tags::DNS_RECORD) else {
            continue;
        };
        let Some((zone_id, name)) = tag.split_once('/') else {
            continue;
        };
        match route53::get_a_record(aws, zone_id, name).await {
            Ok(Some((values, _))) => records.push(Observed {
                id: ResourceId::new(crate::tiers::single_vm::DNS),
                kind: Kind::DnsRecord,
                physical_id: format!("{zone_id}/{name}"),
                state: "present".to_string(),
                details: Details::DnsRecord {
                    zone_id: zone_id.to_string(),
                    values,
                },
                tags: BTreeMap::new(),
            }),
            Ok(None) => {}
            Err(e) if e.is(ErrorClass::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let mut resources = keys;
    resources.extend(params);
    resources.extend(groups);
    resources.extend(volumes);
    resources.extend(profiles);
    resources.extend(templates);
    resources.extend(balancing);
    resources.extend(groups_as);
    resources.extend(databases);
    resources.extend(files);
    resources.extend(instances.live);
    resources.extend(addresses);
    resources.extend(records);
    let pool = instances
        .untracked
        .into_iter()
        .filter(|o| crate::tiers::custom_scaler::is_pool(&o.tags))
        .map(|o| Observed {
            id: ResourceId::new(crate::tiers::custom_scaler::POOL),
            ..o
        })
        .collect();
    Ok(Discovered {
        resources,
        terminated_per_id: instances.terminated_per_id,
        terminated_ids: instances.terminated_ids,
        pool,
    })
}

/// The stack's VPC (`default` or an id that must exist) and its subnets as (id, zone): the
/// given ones, or every subnet of the VPC.
pub async fn resolve_network(
    aws: &Aws,
    network: &crate::stack::model::Network,
) -> Result<(String, Vec<(String, String)>), AwsError> {
    let vpc_id = if network.vpc == "default" {
        ec2::default_vpc(aws).await?
    } else if ec2::vpc_exists(aws, &network.vpc).await? {
        network.vpc.clone()
    } else {
        return Err(AwsError::state(
            "ec2:DescribeVpcs",
            ErrorClass::NotFound,
            format!("VPC {} does not exist in {}", network.vpc, aws.region),
        ));
    };
    let subnets = if network.subnets.is_empty() {
        ec2::subnets(aws, &vpc_id).await?
    } else {
        ec2::subnets_by_id(aws, &network.subnets).await?
    };
    Ok((vpc_id, subnets))
}

/// Looks up what the desired graph needs from the account. Read-only.
pub async fn resolve_inputs(
    aws: &Aws,
    stack: &Stack,
    reporter: &dyn Reporter,
) -> Result<Inputs, AwsError> {
    // Four independent chains of lookups run at the same time: network, image, key pair, zone
    // and secrets. Each is a handful of sequential reads.
    let s = &stack.spec;
    let network = resolve_network(aws, &s.network);
    let image = async {
        let image_id = resolve_image(aws, &s.instance.image, reporter).await?;
        let root_device = ec2::image_root_device(aws, &image_id).await?;
        Ok((image_id, root_device))
    };
    let key = async {
        match &s.instance.key_pair {
            Some(kp) if kp.public_key_file.is_none() && !ec2::key_pair_exists(aws, &kp.name).await? => Err(AwsError::state(
                "ec2:DescribeKeyPairs",
                ErrorClass::NotFound,
                format!("key pair `{}` does not exist in {}; create it, or set `instance.key_pair.public_key_file` to import one", kp.name, aws.region),
            )),
            _ => Ok(()),
        }
    };
    let zone = async {
        match s.domain.as_ref().and_then(|d| d.hosted_zone.as_ref()) {
            Some(z) => route53::resolve_zone(aws, z).await.map(Some),
            None => Ok(None),
        }
    };
    let secrets = async {
        let mut refs: Vec<&str> = s.app.secrets.values().map(|r| r.ssm.as_str()).collect();
        refs.extend(
            s.database
                .as_ref()
                .and_then(|d| d.password.as_ref())
                .map(|p| p.ssm.as_str()),
        );
        for name in refs {
            if !ssm::exists(aws, name).await? {
                reporter.event(&Event::Warning {
                    message: format!("SSM parameter {name} does not exist yet; the instance reads it at boot, so create it first (aws ssm put-parameter --type SecureString --name {name} ...)"),
                });
            }
        }
        Ok(())
    };
    let ((vpc_id, subnets), (image_id, root_device), (), hosted_zone_id, ()) =
        tokio::try_join!(network, image, key, zone, secrets)?;
    Ok(Inputs {
        vpc_id,
        subnet_id: subnets.first().map(|(id, _)| id.clone()),
        subnets,
        image_id,
        root_device,
        hosted_zone_id,
    })
}

/// Alias → AMI through the public SSM parameter. Emulators lack some public parameters; with an
/// endpoint override only, the newest matching image the endpoint knows is used instead, loudly.
async fn resolve_image(
    aws: &Aws,
    image: &str,
    reporter: &dyn Reporter,
) -> Result<String, AwsError> {
    let Some((alias, param)) = IMAGE_ALIASES.iter().find(|(a, _)| *a == image) else {
        return Ok(image.to_string());
    };
    if let Some(ami) = ssm::get_plain(aws, param).await? {
        return Ok(ami);
    }
    if let Some(endpoint) = &aws.endpoint_override {
        let (owner, pattern) = if alias.starts_with("ubuntu") {
            ("099720109477", "*ubuntu*")
        } else {
            ("amazon", "al2023-ami-*")
        };
        if let Some(ami) = ec2::newest_image(aws, owner, pattern).await? {
            reporter.event(&Event::Warning {
                message: format!("{endpoint} does not publish {param}; using its newest {pattern} image {ami} for `{alias}` (emulator only)"),
            });
            return Ok(ami);
        }
    }
    Err(AwsError::state("ssm:GetParameter", ErrorClass::NotFound, format!("public parameter {param} (image alias `{alias}`) is not available in {}; give an AMI id instead", aws.region)))
}
