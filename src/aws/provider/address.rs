//! Elastic IPs and the DNS A records that point at them (found through the address's
//! `iac:dns-record` tag, so one discovery call finds both).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::ResourceType;

use super::{ignore_gone, not_mine, Applier, Discovered, Early, Known, Provider};
use crate::aws::ec2::{self, of_stack, stack_filter, tag_map, tag_spec};
use crate::aws::error::{sdk as err, AwsError, ErrorClass};
use crate::aws::{route53, tags, Aws};
use crate::plan::compare::{kind_changed, Compare, Context};
use crate::plan::*;

pub struct Addresses;

#[async_trait::async_trait]
impl Provider for Addresses {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::ElasticIp, Kind::DnsRecord]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        let mut resources = discover_addresses(aws, stack).await?;
        let records = discover_records(aws, &resources).await?;
        resources.extend(records);
        Ok(Discovered::of(resources))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        point(cx, r, None).await
    }

    /// The address is allocated while its instance launches, and the records that will hold
    /// it are written then: a new address is a new ip, which is all they need, and the
    /// address's tags (given at allocation) already name them for `down`. A record that fails
    /// here is written again, and its error reported, by its own create.
    fn create_early(&self, cx: &Applier, r: &Resource) -> Option<Early> {
        if !matches!(r.spec, Spec::ElasticIp(_)) {
            return None;
        }
        let records = records_on(cx, &r.id);
        let (aws, t) = (cx.aws.clone(), new_address_tags(cx, r, &records));
        Some(Box::pin(async move {
            let (alloc, ip) = allocate_address(&aws, &t).await?;
            let written = futures_util::future::join_all(records.iter().map(|(id, s)| {
                let (aws, ip) = (&aws, &ip);
                async move {
                    let done = route53::upsert_a(aws, &s.zone_id, &s.name, ip, s.ttl).await;
                    done.ok().map(|()| id.clone())
                }
            }))
            .await;
            Ok(Known {
                public_ip: Some(ip),
                tags: t,
                pointed_at: written.into_iter().flatten().collect(),
                ..Known::id(&alloc)
            })
        }))
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        point(cx, r, Some(actual)).await
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let aws = &cx.aws;
        match &o.details {
            Details::DnsRecord { zone_id, .. } => {
                let name = o
                    .physical_id
                    .split_once('/')
                    .map(|(_, n)| n)
                    .unwrap_or(&o.physical_id);
                route53::delete_a(aws, zone_id, name).await
            }
            Details::ElasticIp { association_id, .. } => {
                if let Some(assoc) = association_id {
                    ignore_gone(disassociate_address(aws, assoc).await)?;
                }
                cx.retry_in_use(&o.id, &format!("Elastic IP {}", o.physical_id), || {
                    release_address(aws, &o.physical_id)
                })
                .await
            }
            _ => Ok(()),
        }
    }
}

/// The address associated with its instance, or the record pointing at its address.
async fn point(
    cx: &Applier,
    r: &Resource,
    actual: Option<&Observed>,
) -> Result<Option<String>, AwsError> {
    let aws = &cx.aws;
    match &r.spec {
        Spec::ElasticIp(s) => {
            let instance = cx.need(&s.instance, "ec2:AssociateAddress")?;
            let known = match actual {
                Some(a) => {
                    let ip = match &a.details {
                        Details::ElasticIp { public_ip, .. } => public_ip.clone(),
                        _ => String::new(),
                    };
                    Known {
                        public_ip: Some(ip),
                        tags: a.tags.clone(),
                        ..Known::id(&a.physical_id)
                    }
                }
                None => match cx.made_early(&r.id).await {
                    Some(made) => made?,
                    None => {
                        let t = new_address_tags(cx, r, &records_on(cx, &r.id));
                        let (alloc, ip) = allocate_address(aws, &t).await?;
                        Known {
                            public_ip: Some(ip),
                            tags: t,
                            ..Known::id(&alloc)
                        }
                    }
                },
            };
            let alloc = known.physical_id.clone();
            cx.remember(&r.id, known);
            associate_address(aws, &alloc, &instance.physical_id).await?;
            Ok(Some(alloc))
        }
        Spec::DnsRecord(s) => {
            let eip = cx.need(&s.target, "route53:ChangeResourceRecordSets")?;
            let ip = eip.public_ip.clone().unwrap_or_default();
            if eip.pointed_at.contains(&r.id) {
                return Ok(Some(format!("{} A {ip}", s.name)));
            }
            // The address carries the record's tags before the record is written: if we die
            // right after, `down` still finds the record through them.
            let t = record_tags(&r.id, s);
            if !t.iter().all(|(k, v)| eip.tags.get(k) == Some(v)) {
                ec2::set_tags(aws, &eip.physical_id, &t).await?;
            }
            route53::upsert_a(aws, &s.zone_id, &s.name, &ip, s.ttl).await?;
            Ok(Some(format!("{} A {ip}", s.name)))
        }
        _ => Err(not_mine(r)),
    }
}

/// The tags a new address is allocated with: the stack's, and those of `records`, the records
/// the plan writes on it ([`records_on`]), so writing them needs no tagging call of its own.
fn new_address_tags(
    cx: &Applier,
    r: &Resource,
    records: &[(ResourceId, DnsRecordSpec)],
) -> BTreeMap<String, String> {
    let mut t = cx.tags_for(&r.id, r.kind());
    for (id, rec) in records {
        t.extend(record_tags(id, rec));
    }
    t
}

/// The records the stack wants pointed at the address `id`.
fn records_on(cx: &Applier, id: &ResourceId) -> Vec<(ResourceId, DnsRecordSpec)> {
    cx.desired()
        .into_iter()
        .filter_map(|d| match d.spec {
            Spec::DnsRecord(rec) if rec.target == *id => Some((d.id, rec)),
            _ => None,
        })
        .collect()
}

/// The tags that tie an address to the record `id` written on it.
fn record_tags(id: &ResourceId, s: &DnsRecordSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            tags::DNS_RECORD.to_string(),
            format!("{}/{}", s.zone_id, s.name),
        ),
        (tags::DNS_ID.to_string(), id.to_string()),
    ])
}

/// The records the addresses' `iac:dns-record` tags name, as they are now.
async fn discover_records(aws: &Aws, addresses: &[Observed]) -> Result<Vec<Observed>, AwsError> {
    let mut records = Vec::new();
    for a in addresses {
        let Some(tag) = a.tags.get(tags::DNS_RECORD) else {
            continue;
        };
        let Some((zone_id, name)) = tag.split_once('/') else {
            continue;
        };
        match route53::get_a_record(aws, zone_id, name).await {
            Ok(Some((values, _))) => records.push(Observed {
                id: ResourceId::new(
                    a.tags
                        .get(tags::DNS_ID)
                        .map_or(tags::LEGACY_DNS_ID, String::as_str),
                ),
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
    Ok(records)
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
            Observed::tagged(
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

impl Compare for ElasticIpSpec {
    /// An address follows its instance: a new or another instance is an association.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::ElasticIp { instance_id, .. } = &found.details else {
            return kind_changed();
        };
        if cx.renewed.contains(&self.instance) {
            return Action::Update {
                reasons: vec![format!("associate with the new {}", self.instance)],
            };
        }
        match cx.physical(&self.instance) {
            Some(want) if instance_id.as_deref() != Some(want) => Action::Update {
                reasons: vec![format!(
                    "associate with {want} (now {})",
                    instance_id.as_deref().unwrap_or("unassociated")
                )],
            },
            _ => Action::Keep,
        }
    }
}

impl Compare for DnsRecordSpec {
    /// A record holds its address's public IP; it cannot move to another hosted zone.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::DnsRecord { zone_id, values } = &found.details else {
            return kind_changed();
        };
        if &self.zone_id != zone_id {
            return Action::Replace {
                reasons: vec![format!("hosted zone {zone_id} → {}", self.zone_id)],
            };
        }
        let want = match cx.kept.get(&self.target).map(|o| &o.details) {
            Some(Details::ElasticIp { public_ip, .. }) => Some(public_ip.clone()),
            _ => None,
        };
        match want {
            Some(ip) if values == &vec![ip.clone()] => Action::Keep,
            Some(ip) => Action::Update {
                reasons: vec![format!("A {} → {ip}", values.join(","))],
            },
            None => Action::Update {
                reasons: vec!["point at the new Elastic IP".to_string()],
            },
        }
    }
}
