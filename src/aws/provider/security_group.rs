//! Security groups and their ingress rules, reconciled rule by rule (a rule may name another
//! group of the stack by logical id).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, ResourceType, UserIdGroupPair};

use super::{ignore_gone, known_of, not_mine, Applier, Discovered, Known, Provider};
use crate::aws::ec2::{of_stack, stack_filter, tag_map, tag_spec};
use crate::aws::error::{sdk as err, AwsError, ErrorClass};
use crate::aws::{tags, Aws};
use crate::plan::compare::{kind_changed, update_if, Compare, Context};
use crate::plan::*;

pub struct SecurityGroups;

#[async_trait::async_trait]
impl Provider for SecurityGroups {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::SecurityGroup]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(discover_security_groups(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let Spec::SecurityGroup(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let aws = &cx.aws;
        let t = cx.tags_for(&r.id, r.kind());
        let gid = create_security_group(aws, &s.group_name, &s.description, &s.vpc_id, &t)
            .await
            .map_err(|e| {
                if e.is(ErrorClass::AlreadyExists) {
                    AwsError::state("ec2:CreateSecurityGroup", ErrorClass::AlreadyExists, format!("a security group named `{}` exists in {} but is not tagged with this stack; delete or rename it", s.group_name, s.vpc_id))
                } else {
                    e
                }
            })?;
        cx.remember(&r.id, Known::id(&gid));
        let groups = cx.group_ids();
        cx.retry_fresh(&r.id, &format!("security group {gid}"), || {
            reconcile_ingress(aws, &gid, &s.ingress, &[], &groups)
        })
        .await?;
        Ok(Some(gid))
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let Spec::SecurityGroup(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let have = match &actual.details {
            Details::SecurityGroup { ingress, .. } => ingress.clone(),
            _ => Vec::new(),
        };
        reconcile_ingress(
            &cx.aws,
            &actual.physical_id,
            &s.ingress,
            &have,
            &cx.group_ids(),
        )
        .await?;
        Ok(Some(actual.physical_id.clone()))
    }

    /// Its rules that name other groups go first (so it holds up none of them), then the group,
    /// retried while network interfaces still use it.
    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        revoke_group_rules(cx, o).await?;
        let what = format!(
            "security group {} to be free (up to {} min: network interfaces of a deleted load balancer or instance can take that long to go)",
            o.physical_id,
            cx.deadlines.group_dependency.as_secs() / 60
        );
        let in_use = |e: &AwsError| e.is(ErrorClass::DependencyViolation);
        cx.retry_while(&o.id, &what, cx.deadlines.group_dependency, in_use, || {
            delete_security_group(&cx.aws, &o.physical_id)
        })
        .await
    }
}

impl Applier {
    /// Revokes the rules of every group in `observed` that name another group, before any
    /// deletion (`down`): a group another one still refers to cannot be deleted, so one group
    /// held up (by a load balancer's network interfaces, which can take 10-20 minutes to go)
    /// would otherwise hold up the others.
    pub async fn revoke_group_references(&self, observed: &[Observed]) -> Result<(), AwsError> {
        for o in observed {
            self.remember(&o.id, known_of(o));
        }
        for o in observed.iter().filter(|o| o.kind == Kind::SecurityGroup) {
            revoke_group_rules(self, o).await?;
        }
        Ok(())
    }
}

/// Revokes the ingress rules of group `o` whose source is another group.
async fn revoke_group_rules(cx: &Applier, o: &Observed) -> Result<(), AwsError> {
    let Details::SecurityGroup { ingress, .. } = &o.details else {
        return Ok(());
    };
    let keep: Vec<IngressRule> = ingress
        .iter()
        .filter(|r| matches!(r.source, Source::Cidr(_)))
        .cloned()
        .collect();
    if keep.len() == ingress.len() {
        return Ok(());
    }
    let groups = cx.group_ids();
    ignore_gone(reconcile_ingress(&cx.aws, &o.physical_id, &keep, ingress, &groups).await)
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
        .try_collect()
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
            Observed::tagged(
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

impl Compare for SecurityGroupSpec {
    /// Rules change in place; a group cannot move to another VPC.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::SecurityGroup { vpc_id, ingress } = &found.details else {
            return kind_changed();
        };
        if &self.vpc_id != vpc_id {
            return Action::Replace {
                reasons: vec![format!("vpc {vpc_id} → {}", self.vpc_id)],
            };
        }
        let want: BTreeSet<_> = self.ingress.iter().map(rule_key).collect();
        let have: BTreeSet<_> = ingress.iter().map(rule_key).collect();
        let mut reasons: Vec<String> = Vec::new();
        for rule in self.ingress.iter().filter(|x| !have.contains(&rule_key(x))) {
            reasons.push(format!("+ ingress {rule}"));
        }
        for rule in ingress.iter().filter(|x| !want.contains(&rule_key(x))) {
            reasons.push(format!("- ingress {rule}"));
        }
        update_if(reasons)
    }
}

/// Rules compare without their descriptions (AWS keeps those per range, not per rule).
fn rule_key(r: &IngressRule) -> (String, u16, u16, Source) {
    (r.protocol.clone(), r.from_port, r.to_port, r.source.clone())
}
