//! EC2: networks, security groups, key pairs, instances and Elastic IPs.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType, IpPermission,
    IpRange, Ipv6Range, ResourceType, Tag, TagSpecification, UserIdGroupPair, VolumeType,
};
use base64::Engine;

use super::error::{sdk as err, AwsError, ErrorClass};
use super::tags;
use super::Aws;
use crate::plan::{
    Details, IngressRule, InstanceSpec, Kind, LaunchTemplateSpec, Observed, ResourceId, Source,
};

fn stack_filter(stack: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", tags::STACK))
        .values(stack)
        .build()
}

pub fn tag_spec(rt: ResourceType, t: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(
            t.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// The exact check behind every `stack_filter` (see `tags::belongs`).
fn of_stack(t: &[Tag], stack: &str) -> bool {
    tags::belongs(
        t.iter()
            .find(|t| t.key() == Some(tags::STACK))
            .and_then(|t| t.value()),
        stack,
    )
}

fn tag_map(t: &[Tag]) -> BTreeMap<String, String> {
    t.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn observed(
    t: BTreeMap<String, String>,
    kind: Kind,
    physical_id: String,
    state: String,
    details: Details,
) -> Option<Observed> {
    let id = ResourceId::new(t.get(tags::ID)?.clone());
    Some(Observed {
        id,
        kind,
        physical_id,
        state,
        details,
        tags: t,
    })
}

/// The id of the account's default VPC in the region.
pub async fn default_vpc(aws: &Aws) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .describe_vpcs()
        .filters(Filter::builder().name("is-default").values("true").build())
        .send()
        .await
        .map_err(err("ec2:DescribeVpcs"))?;
    out.vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .map(str::to_string)
        .ok_or_else(|| {
            AwsError::state(
                "ec2:DescribeVpcs",
                ErrorClass::NotFound,
                format!(
                    "no default VPC in {}; set `network.vpc` to a VPC id",
                    aws.region
                ),
            )
        })
}

/// Checks that a VPC exists.
pub async fn vpc_exists(aws: &Aws, vpc_id: &str) -> Result<bool, AwsError> {
    let out = aws.ec2.describe_vpcs().vpc_ids(vpc_id).send().await;
    match out {
        Ok(o) => Ok(!o.vpcs().is_empty()),
        Err(e) => match AwsError::from_sdk("ec2:DescribeVpcs", e) {
            e if e.is(ErrorClass::NotFound) => Ok(false),
            e => Err(e),
        },
    }
}

/// Subnets of a VPC as (subnet id, availability zone), default-for-AZ subnets first.
pub async fn subnets(aws: &Aws, vpc_id: &str) -> Result<Vec<(String, String)>, AwsError> {
    let pages = aws
        .ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(err("ec2:DescribeSubnets"))?;
    let mut out: Vec<(bool, String, String)> = pages
        .iter()
        .flat_map(|p| p.subnets())
        .filter_map(|s| {
            Some((
                !s.default_for_az().unwrap_or(false),
                s.subnet_id()?.to_string(),
                s.availability_zone().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    out.sort();
    Ok(out.into_iter().map(|(_, id, az)| (id, az)).collect())
}

/// The availability zones of the region that offer every one of `types`.
pub async fn zones_offering(
    aws: &Aws,
    types: &[String],
) -> Result<std::collections::BTreeSet<String>, AwsError> {
    use aws_sdk_ec2::types::LocationType;
    let pages = aws
        .ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .filters(
            Filter::builder()
                .name("instance-type")
                .set_values(Some(types.to_vec()))
                .build(),
        )
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(err("ec2:DescribeInstanceTypeOfferings"))?;
    let mut by_zone: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for o in pages.iter().flat_map(|p| p.instance_type_offerings()) {
        if let (Some(zone), Some(t)) = (o.location(), o.instance_type()) {
            by_zone
                .entry(zone.to_string())
                .or_default()
                .insert(t.as_str().to_string());
        }
    }
    Ok(by_zone
        .into_iter()
        .filter(|(_, offered)| types.iter().all(|t| offered.contains(t)))
        .map(|(zone, _)| zone)
        .collect())
}

/// Whether a key pair of that name exists.
pub async fn key_pair_exists(aws: &Aws, name: &str) -> Result<bool, AwsError> {
    match aws.ec2.describe_key_pairs().key_names(name).send().await {
        Ok(o) => Ok(!o.key_pairs().is_empty()),
        Err(e) => match AwsError::from_sdk("ec2:DescribeKeyPairs", e) {
            e if e.is(ErrorClass::NotFound) => Ok(false),
            e => Err(e),
        },
    }
}

/// The root device name of an AMI (`/dev/sda1` on Ubuntu, `/dev/xvda` on Amazon Linux).
pub async fn image_root_device(aws: &Aws, image_id: &str) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .map_err(err("ec2:DescribeImages"))?;
    let image = out.images().first().ok_or_else(|| {
        AwsError::state(
            "ec2:DescribeImages",
            ErrorClass::NotFound,
            format!("image {image_id} does not exist in {}", aws.region),
        )
    })?;
    Ok(image.root_device_name().unwrap_or("/dev/xvda").to_string())
}

/// The newest image of `owner` whose name matches `pattern` (DescribeImages wildcards).
pub async fn newest_image(
    aws: &Aws,
    owner: &str,
    pattern: &str,
) -> Result<Option<String>, AwsError> {
    let out = aws
        .ec2
        .describe_images()
        .owners(owner)
        .filters(Filter::builder().name("name").values(pattern).build())
        .send()
        .await
        .map_err(err("ec2:DescribeImages"))?;
    let mut images: Vec<_> = out
        .images()
        .iter()
        .filter_map(|i| {
            Some((
                i.creation_date().unwrap_or_default().to_string(),
                i.image_id()?.to_string(),
            ))
        })
        .collect();
    images.sort();
    Ok(images.pop().map(|(_, id)| id))
}

/// Security groups tagged with the stack. Group-to-group rules are mapped back to logical ids
/// through the groups' own tags.
pub async fn discover_security_groups(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .ec2
        .describe_security_groups()
        .filters(stack_filter(stack))
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(err("ec2:DescribeSecurityGroups"))?;
    let groups: Vec<_> = pages
        .iter()
        .flat_map(|p| p.security_groups())
        .filter(|g| of_stack(g.tags(), stack))
        .collect();
    let logical: BTreeMap<String, String> = groups
        .iter()
        .filter_map(|g| {
            Some((
                g.group_id()?.to_string(),
                tag_map(g.tags()).get(tags::ID)?.clone(),
            ))
        })
        .collect();
    Ok(groups
        .iter()
        .filter_map(|g| {
            let mut ingress = Vec::new();
            for p in g.ip_permissions() {
                let protocol = p.ip_protocol().unwrap_or("-1").to_string();
                let from = p.from_port().unwrap_or(0) as u16;
                let to = p.to_port().unwrap_or(0) as u16;
                for r in p.ip_ranges() {
                    ingress.push(IngressRule {
                        protocol: protocol.clone(),
                        from_port: from,
                        to_port: to,
                        source: Source::Cidr(r.cidr_ip().unwrap_or_default().to_string()),
                        description: r.description().unwrap_or_default().to_string(),
                    });
                }
                for r in p.ipv6_ranges() {
                    ingress.push(IngressRule {
                        protocol: protocol.clone(),
                        from_port: from,
                        to_port: to,
                        source: Source::Cidr(r.cidr_ipv6().unwrap_or_default().to_string()),
                        description: r.description().unwrap_or_default().to_string(),
                    });
                }
                for pair in p.user_id_group_pairs() {
                    let gid = pair.group_id().unwrap_or_default();
                    let src = logical.get(gid).cloned().unwrap_or_else(|| gid.to_string());
                    ingress.push(IngressRule {
                        protocol: protocol.clone(),
                        from_port: from,
                        to_port: to,
                        source: Source::Group(ResourceId::new(src)),
                        description: pair.description().unwrap_or_default().to_string(),
                    });
                }
            }
            observed(
                tag_map(g.tags()),
                Kind::SecurityGroup,
                g.group_id()?.to_string(),
                "available".to_string(),
                Details::SecurityGroup {
                    vpc_id: g.vpc_id().unwrap_or_default().to_string(),
                    ingress,
                },
            )
        })
        .collect())
}

fn permission(
    rule: &IngressRule,
    group_ids: &BTreeMap<ResourceId, String>,
) -> Result<IpPermission, AwsError> {
    let b = IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .from_port(i32::from(rule.from_port))
        .to_port(i32::from(rule.to_port));
    Ok(match &rule.source {
        // An IPv6 range goes in its own list (`::/0` beside `0.0.0.0/0`).
        Source::Cidr(c) if c.contains(':') => b
            .ipv6_ranges(
                Ipv6Range::builder()
                    .cidr_ipv6(c)
                    .description(&rule.description)
                    .build(),
            )
            .build(),
        Source::Cidr(c) => b
            .ip_ranges(
                IpRange::builder()
                    .cidr_ip(c)
                    .description(&rule.description)
                    .build(),
            )
            .build(),
        Source::Group(g) => {
            let gid = group_ids.get(g).cloned().unwrap_or_else(|| g.to_string());
            if !gid.starts_with("sg-") {
                return Err(AwsError::state(
                    "ec2:AuthorizeSecurityGroupIngress",
                    ErrorClass::InvalidInput,
                    format!("security group {g} has no id yet"),
                ));
            }
            b.user_id_group_pairs(
                UserIdGroupPair::builder()
                    .group_id(gid)
                    .description(&rule.description)
                    .build(),
            )
            .build()
        }
    })
}

/// Creates a security group (tagged at creation) with its ingress rules, and removes the
/// default allow-all egress? No: egress stays open so instances can pull images and packages.
pub async fn create_security_group(
    aws: &Aws,
    name: &str,
    description: &str,
    vpc_id: &str,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc_id)
        .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags_))
        .send()
        .await
        .map_err(err("ec2:CreateSecurityGroup"))?;
    out.group_id().map(str::to_string).ok_or_else(|| {
        AwsError::state(
            "ec2:CreateSecurityGroup",
            ErrorClass::Other,
            "no group id in the answer",
        )
    })
}

/// Makes the group's ingress exactly `want`: authorizes what is missing, revokes what is extra.
pub async fn reconcile_ingress(
    aws: &Aws,
    group_id: &str,
    want: &[IngressRule],
    have: &[IngressRule],
    group_ids: &BTreeMap<ResourceId, String>,
) -> Result<(), AwsError> {
    let key = |r: &IngressRule| (r.protocol.clone(), r.from_port, r.to_port, r.source.clone());
    let missing: Vec<_> = want
        .iter()
        .filter(|w| !have.iter().any(|h| key(h) == key(w)))
        .collect();
    let extra: Vec<_> = have
        .iter()
        .filter(|h| !want.iter().any(|w| key(h) == key(w)))
        .collect();
    if !missing.is_empty() {
        let perms = missing
            .iter()
            .map(|r| permission(r, group_ids))
            .collect::<Result<Vec<_>, _>>()?;
        match aws
            .ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(perms))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let e = AwsError::from_sdk("ec2:AuthorizeSecurityGroupIngress", e);
                if !e.is(ErrorClass::AlreadyExists) {
                    return Err(e);
                }
            }
        }
    }
    if !extra.is_empty() {
        let perms = extra
            .iter()
            .map(|r| permission(r, group_ids))
            .collect::<Result<Vec<_>, _>>()?;
        aws.ec2
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(perms))
            .send()
            .await
            .map_err(err("ec2:RevokeSecurityGroupIngress"))?;
    }
    Ok(())
}

pub async fn delete_security_group(aws: &Aws, group_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_security_group()
        .group_id(group_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteSecurityGroup"))
}

/// Key pairs tagged with the stack (only imported ones; existing keys named by the stack are
/// not the stack's to delete).
pub async fn discover_key_pairs(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_key_pairs()
        .filters(stack_filter(stack))
        .send()
        .await
        .map_err(err("ec2:DescribeKeyPairs"))?;
    Ok(out
        .key_pairs()
        .iter()
        .filter(|k| of_stack(k.tags(), stack))
        .filter_map(|k| {
            let t = tag_map(k.tags());
            let fingerprint_tag = t.get(tags::KEY_FINGERPRINT).cloned();
            observed(
                t,
                Kind::KeyPair,
                k.key_name()?.to_string(),
                "available".to_string(),
                Details::KeyPair { fingerprint_tag },
            )
        })
        .collect())
}

pub async fn import_key_pair(
    aws: &Aws,
    name: &str,
    public_key: &str,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    aws.ec2
        .import_key_pair()
        .key_name(name)
        .public_key_material(aws_smithy_types::Blob::new(public_key.trim().as_bytes()))
        .tag_specifications(tag_spec(ResourceType::KeyPair, tags_))
        .send()
        .await
        .map_err(err("ec2:ImportKeyPair"))?;
    Ok(name.to_string())
}

pub async fn delete_key_pair(aws: &Aws, name: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_key_pair()
        .key_name(name)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteKeyPair"))
}

/// The stack's instances, split into live and gone.
#[derive(Debug, Default)]
pub struct InstanceScan {
    pub live: Vec<Observed>,
    /// Terminated (or terminating) instances, which DescribeInstances lists for about an hour.
    pub terminated_ids: Vec<String>,
    /// Live instances tagged with the stack but without `iac:id`: launched by something of the
    /// stack rather than by `iac up` (an Auto Scaling group, the custom scaler's monitor). Their
    /// `id` is empty; the caller decides what they are.
    pub untracked: Vec<Observed>,
}

/// Instances tagged with the stack.
/// The last `lines` lines of an instance's console output (what the kernel, cloud-init and the
/// boot script printed), when EC2 has any: it shows why an instance that never reported its
/// boot did not get that far. EC2 keeps only the most recent output, and none for a while
/// after launch.
pub async fn console_tail(
    aws: &Aws,
    instance_id: &str,
    lines: usize,
) -> Result<Vec<String>, AwsError> {
    let out = aws
        .ec2
        .get_console_output()
        .instance_id(instance_id)
        .latest(true)
        .send()
        .await
        .map_err(err("ec2:GetConsoleOutput"))?;
    let Some(encoded) = out.output() else {
        return Ok(Vec::new());
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| encoded.to_string());
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Ok(all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect())
}

pub async fn discover_instances(aws: &Aws, stack: &str) -> Result<InstanceScan, AwsError> {
    let pages = aws
        .ec2
        .describe_instances()
        .filters(stack_filter(stack))
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(err("ec2:DescribeInstances"))?;
    let mut scan = InstanceScan::default();
    for i in pages
        .iter()
        .flat_map(|p| p.reservations())
        .flat_map(|r| r.instances())
        .filter(|i| of_stack(i.tags(), stack))
    {
        let t = tag_map(i.tags());
        let state = i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        if state == "terminated" || state == "shutting-down" {
            scan.terminated_ids
                .extend(i.instance_id().map(str::to_string));
            continue;
        }
        let details = Details::Instance {
            instance_type: i
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            image_id: i.image_id().unwrap_or_default().to_string(),
            key_name: i.key_name().map(str::to_string),
            security_group_ids: i
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect(),
            spec_hash: t.get(tags::SPEC_HASH).cloned(),
            public_ip: i.public_ip_address().map(str::to_string),
            private_ip: i.private_ip_address().map(str::to_string),
        };
        let physical_id = i.instance_id().unwrap_or_default().to_string();
        if t.contains_key(tags::ID) {
            scan.live
                .extend(observed(t, Kind::Instance, physical_id, state, details));
        } else {
            scan.untracked.push(Observed {
                id: ResourceId::new(""),
                kind: Kind::Instance,
                physical_id,
                state,
                details,
                tags: t,
            });
        }
    }
    Ok(scan)
}

/// Launches one instance: IMDSv2 required, encrypted gp3 root volume, tagged at creation
/// (instance and volume), idempotent through `client_token`.
pub async fn run_instance(
    aws: &Aws,
    spec: &InstanceSpec,
    root_device: &str,
    security_group_ids: Vec<String>,
    tags_: &BTreeMap<String, String>,
    client_token: &str,
) -> Result<String, AwsError> {
    let user_data = base64::engine::general_purpose::STANDARD.encode(&spec.user_data);
    let mut req = aws
        .ec2
        .run_instances()
        .image_id(&spec.image_id)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .client_token(client_token)
        .set_security_group_ids(Some(security_group_ids))
        .user_data(user_data)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_put_response_hop_limit(i32::from(spec.metadata_hop_limit))
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(root_device)
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(spec.disk_gb as i32)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(tag_spec(ResourceType::Instance, tags_))
        .tag_specifications(tag_spec(ResourceType::Volume, tags_));
    if let Some(k) = &spec.key_name {
        req = req.key_name(k);
    }
    if let Some(s) = &spec.subnet_id {
        req = req.subnet_id(s);
    }
    if let Some(p) = &spec.instance_profile {
        req = req.iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
    }
    launched_id(req.send().await.map_err(err("ec2:RunInstances"))?)
}

/// A value unique to this process and moment, for client tokens that must differ between runs
/// (not secret: it only keeps one run's launches apart from another's).
pub fn launch_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

/// The id of the one instance a RunInstances call launched.
pub fn launched_id(
    out: aws_sdk_ec2::operation::run_instances::RunInstancesOutput,
) -> Result<String, AwsError> {
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .ok_or_else(|| {
            AwsError::state(
                "ec2:RunInstances",
                ErrorClass::Other,
                "no instance in the answer",
            )
        })
}

pub async fn start_instance(aws: &Aws, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .start_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:StartInstances"))
}

/// Stops an instance (its disks stay), so a data volume can be detached with nothing writing to it.
pub async fn stop_instance(aws: &Aws, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .stop_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:StopInstances"))
}

pub async fn terminate_instance(aws: &Aws, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:TerminateInstances"))
}

/// Elastic IPs tagged with the stack.
pub async fn discover_addresses(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_addresses()
        .filters(stack_filter(stack))
        .send()
        .await
        .map_err(err("ec2:DescribeAddresses"))?;
    Ok(out
        .addresses()
        .iter()
        .filter(|a| of_stack(a.tags(), stack))
        .filter_map(|a| {
            let details = Details::ElasticIp {
                public_ip: a.public_ip().unwrap_or_default().to_string(),
                instance_id: a.instance_id().map(str::to_string),
                association_id: a.association_id().map(str::to_string),
            };
            let state = if a.association_id().is_some() {
                "associated"
            } else {
                "allocated"
            };
            observed(
                tag_map(a.tags()),
                Kind::ElasticIp,
                a.allocation_id()?.to_string(),
                state.to_string(),
                details,
            )
        })
        .collect())
}

/// Allocates a VPC Elastic IP, tagged at creation. Returns (allocation id, public IP).
pub async fn allocate_address(
    aws: &Aws,
    tags_: &BTreeMap<String, String>,
) -> Result<(String, String), AwsError> {
    let out = aws
        .ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .tag_specifications(tag_spec(ResourceType::ElasticIp, tags_))
        .send()
        .await
        .map_err(err("ec2:AllocateAddress"))?;
    match (out.allocation_id(), out.public_ip()) {
        (Some(a), Some(ip)) => Ok((a.to_string(), ip.to_string())),
        _ => Err(AwsError::state(
            "ec2:AllocateAddress",
            ErrorClass::Other,
            "no allocation id in the answer",
        )),
    }
}

pub async fn associate_address(
    aws: &Aws,
    allocation_id: &str,
    instance_id: &str,
) -> Result<(), AwsError> {
    aws.ec2
        .associate_address()
        .allocation_id(allocation_id)
        .instance_id(instance_id)
        .allow_reassociation(true)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:AssociateAddress"))
}

pub async fn disassociate_address(aws: &Aws, association_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .disassociate_address()
        .association_id(association_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DisassociateAddress"))
}

pub async fn release_address(aws: &Aws, allocation_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .release_address()
        .allocation_id(allocation_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:ReleaseAddress"))
}

/// Adds or overwrites tags on any EC2 resource.
pub async fn set_tags(
    aws: &Aws,
    resource_id: &str,
    t: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    aws.ec2
        .create_tags()
        .resources(resource_id)
        .set_tags(Some(
            t.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:CreateTags"))
}

pub async fn remove_tag(aws: &Aws, resource_id: &str, key: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_tags()
        .resources(resource_id)
        .tags(Tag::builder().key(key).build())
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteTags"))
}

/// Sets (`protect: true`) or removes the `iac:protected` tag of an EC2 resource.
pub async fn set_protected(aws: &Aws, id: &str, on: bool) -> Result<(), AwsError> {
    if on {
        let t = BTreeMap::from([(tags::PROTECTED.to_string(), "true".to_string())]);
        set_tags(aws, id, &t).await
    } else {
        remove_tag(aws, id, tags::PROTECTED).await
    }
}

/// The user-data of an instance, decoded (for `status` and tests).
pub async fn user_data(aws: &Aws, instance_id: &str) -> Result<Vec<u8>, AwsError> {
    let out = aws
        .ec2
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .map_err(err("ec2:DescribeInstanceAttribute"))?;
    let encoded = out.user_data().and_then(|v| v.value()).unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| {
            AwsError::state(
                "ec2:DescribeInstanceAttribute",
                ErrorClass::Other,
                format!("user-data is not base64: {e}"),
            )
        })
}

/// Subnets by id as (subnet id, availability zone), in the order given.
pub async fn subnets_by_id(aws: &Aws, ids: &[String]) -> Result<Vec<(String, String)>, AwsError> {
    let out = aws
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(err("ec2:DescribeSubnets"))?;
    let found: BTreeMap<String, String> = out
        .subnets()
        .iter()
        .filter_map(|s| {
            Some((
                s.subnet_id()?.to_string(),
                s.availability_zone().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    ids.iter()
        .map(|id| {
            found
                .get(id)
                .map(|az| (id.clone(), az.clone()))
                .ok_or_else(|| {
                    AwsError::state(
                        "ec2:DescribeSubnets",
                        ErrorClass::NotFound,
                        format!("subnet {id} does not exist in {}", aws.region),
                    )
                })
        })
        .collect()
}

/// State and private IP of an instance; `None` when it does not exist.
pub async fn instance_state_ip(
    aws: &Aws,
    instance_id: &str,
) -> Result<Option<(String, Option<String>)>, AwsError> {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await;
    match out {
        Ok(o) => Ok(o
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| {
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())?;
                Some((state, i.private_ip_address().map(str::to_string)))
            })),
        Err(e) => match AwsError::from_sdk("ec2:DescribeInstances", e) {
            e if e.is(ErrorClass::NotFound) => Ok(None),
            e => Err(e),
        },
    }
}

/// Data volumes of the stack (root volumes carry `iac:kind=instance` and are not listed).
pub async fn discover_volumes(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .ec2
        .describe_volumes()
        .filters(stack_filter(stack))
        .filters(
            Filter::builder()
                .name(format!("tag:{}", tags::KIND))
                .values(Kind::Volume.as_str())
                .build(),
        )
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(err("ec2:DescribeVolumes"))?;
    Ok(pages
        .iter()
        .flat_map(|p| p.volumes())
        .filter(|v| of_stack(v.tags(), stack))
        .filter_map(|v| {
            let t = tag_map(v.tags());
            let state = v
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if state == "deleting" || state == "deleted" {
                return None;
            }
            let details = Details::Volume {
                availability_zone: v.availability_zone().unwrap_or_default().to_string(),
                size_gb: v.size().unwrap_or(0) as u32,
                attached_to: v
                    .attachments()
                    .iter()
                    .find_map(|a| a.instance_id().map(str::to_string)),
                keep_on_down: t.get(tags::DATA).is_some_and(|d| d == "true"),
                protected: t.get(tags::PROTECTED).is_some_and(|d| d == "true"),
            };
            observed(t, Kind::Volume, v.volume_id()?.to_string(), state, details)
        })
        .collect())
}

/// Creates an encrypted gp3 volume, tagged at creation.
pub async fn create_volume(
    aws: &Aws,
    az: &str,
    size_gb: u32,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .create_volume()
        .availability_zone(az)
        .size(size_gb as i32)
        .volume_type(VolumeType::Gp3)
        .encrypted(true)
        .tag_specifications(tag_spec(ResourceType::Volume, tags_))
        .send()
        .await
        .map_err(err("ec2:CreateVolume"))?;
    out.volume_id().map(str::to_string).ok_or_else(|| {
        AwsError::state(
            "ec2:CreateVolume",
            ErrorClass::Other,
            "no volume id in the answer",
        )
    })
}

/// The state of a volume (`creating`, `available`, `in-use`, …) and the instance it is attached to.
pub async fn volume_state(
    aws: &Aws,
    volume_id: &str,
) -> Result<Option<(String, Option<String>)>, AwsError> {
    match aws
        .ec2
        .describe_volumes()
        .volume_ids(volume_id)
        .send()
        .await
    {
        Ok(o) => Ok(o.volumes().first().map(|v| {
            (
                v.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                v.attachments()
                    .iter()
                    .find_map(|a| a.instance_id().map(str::to_string)),
            )
        })),
        Err(e) => match AwsError::from_sdk("ec2:DescribeVolumes", e) {
            e if e.is(ErrorClass::NotFound) => Ok(None),
            e => Err(e),
        },
    }
}

pub async fn attach_volume(
    aws: &Aws,
    volume_id: &str,
    instance_id: &str,
    device: &str,
) -> Result<(), AwsError> {
    aws.ec2
        .attach_volume()
        .volume_id(volume_id)
        .instance_id(instance_id)
        .device(device)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:AttachVolume"))
}

/// Detaches a volume from `instance_id` (named: the emulator fails without it once the
/// instance is stopped).
pub async fn detach_volume(aws: &Aws, volume_id: &str, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .detach_volume()
        .volume_id(volume_id)
        .instance_id(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DetachVolume"))
}

pub async fn delete_volume(aws: &Aws, volume_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_volume()
        .volume_id(volume_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteVolume"))
}

fn launch_template_data(
    s: &LaunchTemplateSpec,
    security_group_ids: Vec<String>,
) -> aws_sdk_ec2::types::RequestLaunchTemplateData {
    use aws_sdk_ec2::types::{
        LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
        LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
        LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData,
    };
    let mut d = RequestLaunchTemplateData::builder()
        .image_id(&s.image_id)
        .instance_type(InstanceType::from(s.instance_type.as_str()))
        .set_security_group_ids(Some(security_group_ids))
        .user_data(base64::engine::general_purpose::STANDARD.encode(&s.user_data))
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::Required)
                .http_put_response_hop_limit(i32::from(s.metadata_hop_limit))
                .build(),
        )
        .block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(&s.root_device)
                .ebs(
                    LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_size(s.disk_gb as i32)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        );
    if let Some(k) = &s.key_name {
        d = d.key_name(k);
    }
    if let Some(p) = &s.instance_profile {
        d = d.iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(p)
                .build(),
        );
    }
    d.build()
}

/// Launch templates tagged with the stack; `iac:spec-hash` says what their latest version holds.
pub async fn discover_launch_templates(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .ec2
        .describe_launch_templates()
        .filters(stack_filter(stack))
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(err("ec2:DescribeLaunchTemplates"))?;
    Ok(pages
        .iter()
        .flat_map(|p| p.launch_templates())
        .filter(|lt| of_stack(lt.tags(), stack))
        .filter_map(|lt| {
            let t = tag_map(lt.tags());
            let details = Details::LaunchTemplate {
                spec_hash: t.get(tags::SPEC_HASH).cloned(),
                latest_version: lt.latest_version_number().unwrap_or(0),
                default_version: lt.default_version_number().unwrap_or(0),
            };
            observed(
                t,
                Kind::LaunchTemplate,
                lt.launch_template_id()?.to_string(),
                "available".to_string(),
                details,
            )
        })
        .collect())
}

/// Creates a launch template (version 1), tagged at creation. Returns its id.
pub async fn create_launch_template(
    aws: &Aws,
    s: &LaunchTemplateSpec,
    security_group_ids: Vec<String>,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .create_launch_template()
        .launch_template_name(&s.name)
        .version_description("iac")
        .launch_template_data(launch_template_data(s, security_group_ids))
        .tag_specifications(tag_spec(ResourceType::LaunchTemplate, tags_))
        .send()
        .await
        .map_err(err("ec2:CreateLaunchTemplate"))?;
    out.launch_template()
        .and_then(|lt| lt.launch_template_id())
        .map(str::to_string)
        .ok_or_else(|| {
            AwsError::state(
                "ec2:CreateLaunchTemplate",
                ErrorClass::Other,
                "no launch template id in the answer",
            )
        })
}

/// Adds a version and makes it the default. Returns the new version number.
pub async fn new_launch_template_version(
    aws: &Aws,
    id: &str,
    s: &LaunchTemplateSpec,
    security_group_ids: Vec<String>,
) -> Result<i64, AwsError> {
    let out = aws
        .ec2
        .create_launch_template_version()
        .launch_template_id(id)
        .version_description("iac")
        .launch_template_data(launch_template_data(s, security_group_ids))
        .send()
        .await
        .map_err(err("ec2:CreateLaunchTemplateVersion"))?;
    let version = out
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| {
            AwsError::state(
                "ec2:CreateLaunchTemplateVersion",
                ErrorClass::Other,
                "no version number in the answer",
            )
        })?;
    aws.ec2
        .modify_launch_template()
        .launch_template_id(id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(err("ec2:ModifyLaunchTemplate"))?;
    Ok(version)
}

pub async fn delete_launch_template(aws: &Aws, id: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_launch_template()
        .launch_template_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteLaunchTemplate"))
}
