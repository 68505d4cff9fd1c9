//! EC2 calls shared by several kinds and by the commands: networks, images, tags, an
//! instance's state and console output. What belongs to one kind lives in its provider module
//! (`provider::instance`, `provider::security_group`, …).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use base64::Engine;

use super::error::{sdk as err, AwsError, ErrorClass};
use super::tags;
use super::Aws;

pub(crate) fn stack_filter(stack: &str) -> Filter {
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
pub(crate) fn of_stack(t: &[Tag], stack: &str) -> bool {
    tags::belongs(
        t.iter()
            .find(|t| t.key() == Some(tags::STACK))
            .and_then(|t| t.value()),
        stack,
    )
}

pub(crate) fn tag_map(t: &[Tag]) -> BTreeMap<String, String> {
    tags::collect(t.iter().map(|t| (t.key(), t.value())))
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
    let listed = list_subnets(aws, Some(vpc_id)).await?;
    Ok(default_first(listed.iter()))
}

/// The account's default VPC and its subnets (as `subnets` gives them), from one listing of
/// the region's subnets: the VPC holding the default-for-AZ subnets is the default one. Only
/// when no subnet is default-for-AZ is the default VPC asked for, to tell a default VPC without
/// default subnets from none.
pub async fn default_vpc_subnets(aws: &Aws) -> Result<(String, Vec<(String, String)>), AwsError> {
    let listed = list_subnets(aws, None).await?;
    let vpc_id = match listed
        .iter()
        .find(|s| s.default_for_az() == Some(true))
        .and_then(|s| s.vpc_id())
    {
        Some(v) => v.to_string(),
        None => default_vpc(aws).await?,
    };
    let subnets = default_first(listed.iter().filter(|s| s.vpc_id() == Some(&vpc_id)));
    Ok((vpc_id, subnets))
}

async fn list_subnets(
    aws: &Aws,
    vpc_id: Option<&str>,
) -> Result<Vec<aws_sdk_ec2::types::Subnet>, AwsError> {
    let vpc = vpc_id.map(|v| Filter::builder().name("vpc-id").values(v).build());
    let pages = aws
        .ec2
        .describe_subnets()
        .set_filters(vpc.map(|f| vec![f]))
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("ec2:DescribeSubnets"))?;
    Ok(pages
        .into_iter()
        .flat_map(|p| p.subnets.unwrap_or_default())
        .collect())
}

/// (subnet id, zone) pairs, default-for-AZ subnets first, then by id.
fn default_first<'a>(
    subnets: impl Iterator<Item = &'a aws_sdk_ec2::types::Subnet>,
) -> Vec<(String, String)> {
    let mut out: Vec<(bool, String, String)> = subnets
        .filter_map(|s| {
            Some((
                !s.default_for_az().unwrap_or(false),
                s.subnet_id()?.to_string(),
                s.availability_zone().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, id, az)| (id, az)).collect()
}

/// The availability zones of the region that offer every one of `types`.
pub async fn zones_offering(aws: &Aws, types: &[String]) -> Result<BTreeSet<String>, AwsError> {
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
        .try_collect()
        .await
        .map_err(err("ec2:DescribeInstanceTypeOfferings"))?;
    let mut by_zone: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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

/// An AMI, with what launching it needs besides its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    /// `/dev/sda1` on Ubuntu, `/dev/xvda` on Amazon Linux.
    pub root_device: String,
}

impl Image {
    fn of(i: &aws_sdk_ec2::types::Image) -> Option<Image> {
        Some(Image {
            id: i.image_id()?.to_string(),
            root_device: i.root_device_name().unwrap_or("/dev/xvda").to_string(),
        })
    }
}

/// One AMI by id.
pub async fn image(aws: &Aws, image_id: &str) -> Result<Image, AwsError> {
    let out = aws
        .ec2
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .map_err(err("ec2:DescribeImages"))?;
    out.images().iter().find_map(Image::of).ok_or_else(|| {
        AwsError::state(
            "ec2:DescribeImages",
            ErrorClass::NotFound,
            format!("image {image_id} does not exist in {}", aws.region),
        )
    })
}

/// The newest image of `owner` whose name matches `pattern` (DescribeImages wildcards).
pub async fn newest_image(
    aws: &Aws,
    owner: &str,
    pattern: &str,
) -> Result<Option<Image>, AwsError> {
    let out = aws
        .ec2
        .describe_images()
        .owners(owner)
        .filters(Filter::builder().name("name").values(pattern).build())
        .send()
        .await
        .map_err(err("ec2:DescribeImages"))?;
    Ok(out
        .images()
        .iter()
        .filter_map(|i| Some((i.creation_date().unwrap_or_default(), Image::of(i)?)))
        .max_by(|(a, x), (b, y)| (a, &x.id).cmp(&(b, &y.id)))
        .map(|(_, image)| image))
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

/// Filters selecting `ids` by `name` (`instance-id`, `volume-id`): one per 200 ids, the most a
/// filter takes.
fn id_filters(name: &str, ids: &BTreeSet<String>) -> Vec<Filter> {
    let ids: Vec<String> = ids.iter().cloned().collect();
    ids.chunks(200)
        .map(|chunk| {
            Filter::builder()
                .name(name)
                .set_values(Some(chunk.to_vec()))
                .build()
        })
        .collect()
}

/// The state and private IP of each of `ids` that EC2 lists (one call, by filter: an id EC2
/// does not know yet is left out rather than failing the others).
pub async fn instance_states(
    aws: &Aws,
    ids: &BTreeSet<String>,
) -> Result<BTreeMap<String, (String, Option<String>)>, AwsError> {
    let mut states = BTreeMap::new();
    for filter in id_filters("instance-id", ids) {
        let pages = aws
            .ec2
            .describe_instances()
            .filters(filter)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(err("ec2:DescribeInstances"))?;
        for i in pages
            .iter()
            .flat_map(|p| p.reservations())
            .flat_map(|r| r.instances())
        {
            if let (Some(id), Some(state)) = (i.instance_id(), i.state().and_then(|s| s.name())) {
                states.insert(
                    id.to_string(),
                    (
                        state.as_str().to_string(),
                        i.private_ip_address().map(str::to_string),
                    ),
                );
            }
        }
    }
    Ok(states)
}

/// The size in GiB of each of `ids` that EC2 lists (by filter, 200 ids a call, no call for no
/// ids: a volume deleted meanwhile is left out rather than failing the others).
pub async fn volume_sizes(
    aws: &Aws,
    ids: &BTreeSet<String>,
) -> Result<BTreeMap<String, u32>, AwsError> {
    let mut sizes = BTreeMap::new();
    for filter in id_filters("volume-id", ids) {
        let pages = aws
            .ec2
            .describe_volumes()
            .filters(filter)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(err("ec2:DescribeVolumes"))?;
        sizes.extend(
            pages
                .iter()
                .flat_map(|p| p.volumes())
                .filter_map(|v| Some((v.volume_id()?.to_string(), v.size()?.max(0) as u32))),
        );
    }
    Ok(sizes)
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
