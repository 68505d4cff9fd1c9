//! Elastic Load Balancing v2: target groups, application load balancers and listeners.
//!
//! Everything is tagged at creation (listeners too) and found again through DescribeTags; the
//! physical id of every resource is its ARN.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, IpAddressType, LoadBalancerSchemeEnum,
    LoadBalancerTypeEnum, Matcher, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum, Tag, TargetGroupAttribute, TargetTypeEnum,
};
use futures_util::future::try_join_all;

use super::error::{sdk as err, AwsError, ErrorClass, IgnoreNotFound};
use super::tags;
use super::Aws;
use crate::plan::{
    Details, Kind, ListenerAction, ListenerSpec, LoadBalancerSpec, Observed, ResourceId,
    TargetGroupSpec,
};

/// The TLS policy of HTTPS listeners: TLS 1.3 and 1.2 only.
pub const SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";
/// The target group attribute holding the deregistration delay.
const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";
/// DescribeTags accepts at most 20 ARNs per call.
const TAG_BATCH: usize = 20;

fn elb_tags(t: &BTreeMap<String, String>) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_map(t: &[Tag]) -> BTreeMap<String, String> {
    tags::collect(t.iter().map(|t| (t.key(), t.value())))
}

/// Tags of many resources, by ARN (DescribeTags in batches of 20). A resource deleted since it
/// was listed fails its whole batch with a not-found error: that batch is then asked ARN by ARN,
/// leaving the vanished ones out.
async fn tags_of(
    aws: &Aws,
    arns: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
    let mut out = BTreeMap::new();
    for batch in arns.chunks(TAG_BATCH) {
        match describe_tags(aws, batch).await {
            Ok(t) => out.extend(t),
            Err(e) if e.is(ErrorClass::NotFound) => {
                for arn in batch {
                    match describe_tags(aws, std::slice::from_ref(arn)).await {
                        Ok(t) => out.extend(t),
                        Err(e) if e.is(ErrorClass::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

async fn describe_tags(
    aws: &Aws,
    arns: &[String],
) -> Result<Vec<(String, BTreeMap<String, String>)>, AwsError> {
    let resp = aws
        .elbv2
        .describe_tags()
        .set_resource_arns(Some(arns.to_vec()))
        .send()
        .await
        .map_err(err("elasticloadbalancing:DescribeTags"))?;
    Ok(resp
        .tag_descriptions()
        .iter()
        .filter_map(|d| Some((d.resource_arn()?.to_string(), tag_map(d.tags()))))
        .collect())
}

fn in_stack(t: &BTreeMap<String, String>, stack: &str) -> bool {
    tags::belongs(t.get(tags::STACK).map(String::as_str), stack)
}

/// The listener action in the same string form as `Details::Listener.action`:
/// `forward:<target group arn>`, or `redirect:https` when there is no target group.
pub fn action_key(target_group_arn: Option<&str>) -> String {
    match target_group_arn {
        Some(arn) => format!("forward:{arn}"),
        None => "redirect:https".to_string(),
    }
}

/// The key of an observed default action (the first one).
fn observed_action_key(actions: &[Action]) -> String {
    let Some(a) = actions.first() else {
        return String::new();
    };
    match a.r#type() {
        Some(ActionTypeEnum::Forward) => {
            let tg = a.target_group_arn().map(str::to_string).or_else(|| {
                a.forward_config()
                    .and_then(|f| f.target_groups().first())
                    .and_then(|t| t.target_group_arn())
                    .map(str::to_string)
            });
            format!("forward:{}", tg.unwrap_or_default())
        }
        Some(ActionTypeEnum::Redirect) => format!(
            "redirect:{}",
            a.redirect_config()
                .and_then(|r| r.protocol())
                .unwrap_or("#{protocol}")
                .to_ascii_lowercase()
        ),
        Some(t) => t.as_str().to_string(),
        None => String::new(),
    }
}

/// Target groups, load balancers and listeners tagged `iac:stack=<stack>`.
///
/// Load balancers and target groups are listed at the same time, and the tags of those named
/// after the stack ([`tags::named_for`]) read together, not those of every one in the region;
/// then the stack's target groups' attributes and its load balancers' listeners are all asked at
/// once. Listeners' logical id comes from their `iac:id` tag, falling back to
/// `ResourceId::listener` (by port) for an untagged one.
pub async fn discover(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let lbs = async {
        aws.elbv2
            .describe_load_balancers()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(err("elasticloadbalancing:DescribeLoadBalancers"))
    };
    let tgs = async {
        aws.elbv2
            .describe_target_groups()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(err("elasticloadbalancing:DescribeTargetGroups"))
    };
    let (lbs, tgs) = tokio::try_join!(lbs, tgs)?;
    let named = |name: Option<&str>| name.is_some_and(|n| tags::named_for(n, stack));
    let lbs: Vec<_> = lbs
        .into_iter()
        .flat_map(|p| p.load_balancers.unwrap_or_default())
        .filter(|l| named(l.load_balancer_name()))
        .collect();
    let tgs: Vec<_> = tgs
        .into_iter()
        .flat_map(|p| p.target_groups.unwrap_or_default())
        .filter(|t| named(t.target_group_name()))
        .collect();
    let arns: Vec<String> = tgs
        .iter()
        .filter_map(|t| t.target_group_arn().map(str::to_string))
        .chain(
            lbs.iter()
                .filter_map(|l| l.load_balancer_arn().map(str::to_string)),
        )
        .collect();
    let mut all_tags = tags_of(aws, &arns).await?;
    let mut ours = |arn: Option<&str>| {
        let arn = arn?;
        let t = all_tags.remove(arn).unwrap_or_default();
        in_stack(&t, stack).then(|| (arn.to_string(), t))
    };
    let stack_tgs: Vec<_> = tgs
        .iter()
        .filter_map(|tg| Some((tg, ours(tg.target_group_arn())?)))
        .collect();
    let stack_lbs: Vec<_> = lbs
        .iter()
        .filter_map(|lb| Some((lb, ours(lb.load_balancer_arn())?)))
        .collect();
    let (target_groups, listeners) = tokio::try_join!(
        try_join_all(
            stack_tgs
                .into_iter()
                .map(|(tg, (arn, t))| target_group(aws, tg, arn, t))
        ),
        try_join_all(stack_lbs.iter().map(|(_, (arn, _))| listeners_of(aws, arn))),
    )?;
    let mut out: Vec<Observed> = target_groups.into_iter().flatten().collect();
    for (lb, (arn, t)) in stack_lbs {
        let details = Details::LoadBalancer {
            dns_name: lb.dns_name().unwrap_or_default().to_string(),
            scheme: lb
                .scheme()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            subnet_ids: lb
                .availability_zones()
                .iter()
                .filter_map(|z| z.subnet_id().map(str::to_string))
                .collect(),
            security_group_ids: lb.security_groups().to_vec(),
        };
        let state = lb
            .state()
            .and_then(|s| s.code())
            .map(|c| c.as_str().to_string())
            .unwrap_or_default();
        out.extend(Observed::tagged(t, Kind::LoadBalancer, arn, state, details));
    }
    out.extend(listeners.into_iter().flatten());
    Ok(out)
}

/// One of the stack's target groups, with its deregistration delay; `None` when it was deleted
/// since it was listed.
async fn target_group(
    aws: &Aws,
    tg: &aws_sdk_elasticloadbalancingv2::types::TargetGroup,
    arn: String,
    t: BTreeMap<String, String>,
) -> Result<Option<Observed>, AwsError> {
    let Some(deregistration_delay_s) = deregistration_delay(aws, &arn).await.ignore_not_found()?
    else {
        return Ok(None);
    };
    let details = Details::TargetGroup {
        port: tg.port().unwrap_or(0) as u16,
        health_path: tg.health_check_path().unwrap_or_default().to_string(),
        healthy_threshold: tg.healthy_threshold_count().unwrap_or(0),
        unhealthy_threshold: tg.unhealthy_threshold_count().unwrap_or(0),
        interval_s: tg.health_check_interval_seconds().unwrap_or(0),
        timeout_s: tg.health_check_timeout_seconds().unwrap_or(0),
        matcher: tg
            .matcher()
            .and_then(|m| m.http_code())
            .unwrap_or_default()
            .to_string(),
        deregistration_delay_s,
    };
    Ok(Observed::tagged(
        t,
        Kind::TargetGroup,
        arn,
        "available".to_string(),
        details,
    ))
}

/// The listeners of one of the stack's load balancers; none when it was deleted since it was
/// listed (so were its listeners).
async fn listeners_of(aws: &Aws, lb_arn: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .elbv2
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("elasticloadbalancing:DescribeListeners"));
    let Some(pages) = pages.ignore_not_found()? else {
        return Ok(Vec::new());
    };
    let listeners: Vec<_> = pages
        .into_iter()
        .flat_map(|p| p.listeners.unwrap_or_default())
        .collect();
    let arns: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.listener_arn().map(str::to_string))
        .collect();
    let mut listener_tags = tags_of(aws, &arns).await?;
    Ok(listeners
        .iter()
        .filter_map(|l| {
            let arn = l.listener_arn()?;
            let port = l.port().unwrap_or(0) as u16;
            let t = listener_tags.remove(arn).unwrap_or_default();
            let id = t
                .get(tags::ID)
                .map_or_else(|| ResourceId::listener(port), ResourceId::new);
            Some(Observed {
                id,
                kind: Kind::Listener,
                physical_id: arn.to_string(),
                state: "available".to_string(),
                details: Details::Listener {
                    load_balancer_arn: lb_arn.to_string(),
                    port,
                    action: observed_action_key(l.default_actions()),
                    certificate_arn: l
                        .certificates()
                        .first()
                        .and_then(|c| c.certificate_arn())
                        .map(str::to_string),
                },
                tags: t,
            })
        })
        .collect())
}

/// The deregistration delay of a target group, in seconds.
async fn deregistration_delay(aws: &Aws, arn: &str) -> Result<Option<u32>, AwsError> {
    let out = aws
        .elbv2
        .describe_target_group_attributes()
        .target_group_arn(arn)
        .send()
        .await
        .map_err(err("elasticloadbalancing:DescribeTargetGroupAttributes"))?;
    Ok(out
        .attributes()
        .iter()
        .find(|a| a.key() == Some(DEREGISTRATION_DELAY))
        .and_then(|a| a.value())
        .and_then(|v| v.parse().ok()))
}

async fn set_deregistration_delay(aws: &Aws, arn: &str, seconds: u32) -> Result<(), AwsError> {
    aws.elbv2
        .modify_target_group_attributes()
        .target_group_arn(arn)
        .attributes(
            TargetGroupAttribute::builder()
                .key(DEREGISTRATION_DELAY)
                .value(seconds.to_string())
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(err("elasticloadbalancing:ModifyTargetGroupAttributes"))
}

/// Creates an HTTP target group of instances with the spec's health check, tagged at creation,
/// then sets its deregistration delay. Returns its ARN.
pub async fn create_target_group(
    aws: &Aws,
    s: &TargetGroupSpec,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let out = aws
        .elbv2
        .create_target_group()
        .name(&s.name)
        .protocol(ProtocolEnum::Http)
        .port(i32::from(s.port))
        .vpc_id(&s.vpc_id)
        .target_type(TargetTypeEnum::Instance)
        .health_check_enabled(true)
        .health_check_protocol(ProtocolEnum::Http)
        .health_check_port("traffic-port")
        .health_check_path(&s.health_path)
        .healthy_threshold_count(s.healthy_threshold)
        .unhealthy_threshold_count(s.unhealthy_threshold)
        .health_check_interval_seconds(s.interval_s)
        .health_check_timeout_seconds(s.timeout_s)
        .matcher(Matcher::builder().http_code(&s.matcher).build())
        .set_tags(Some(elb_tags(tags_)))
        .send()
        .await
        .map_err(err("elasticloadbalancing:CreateTargetGroup"))?;
    let arn = out
        .target_groups()
        .first()
        .and_then(|t| t.target_group_arn())
        .map(str::to_string)
        .ok_or_else(|| {
            AwsError::state(
                "elasticloadbalancing:CreateTargetGroup",
                ErrorClass::Other,
                "no target group in the answer",
            )
        })?;
    set_deregistration_delay(aws, &arn, s.deregistration_delay_s).await?;
    Ok(arn)
}

/// Brings a target group's health check and deregistration delay to the spec (port, protocol
/// and VPC cannot change in place).
pub async fn update_target_group(
    aws: &Aws,
    arn: &str,
    s: &TargetGroupSpec,
) -> Result<(), AwsError> {
    aws.elbv2
        .modify_target_group()
        .target_group_arn(arn)
        .health_check_enabled(true)
        .health_check_protocol(ProtocolEnum::Http)
        .health_check_port("traffic-port")
        .health_check_path(&s.health_path)
        .healthy_threshold_count(s.healthy_threshold)
        .unhealthy_threshold_count(s.unhealthy_threshold)
        .health_check_interval_seconds(s.interval_s)
        .health_check_timeout_seconds(s.timeout_s)
        .matcher(Matcher::builder().http_code(&s.matcher).build())
        .send()
        .await
        .map_err(err("elasticloadbalancing:ModifyTargetGroup"))?;
    set_deregistration_delay(aws, arn, s.deregistration_delay_s).await
}

pub async fn delete_target_group(aws: &Aws, arn: &str) -> Result<(), AwsError> {
    aws.elbv2
        .delete_target_group()
        .target_group_arn(arn)
        .send()
        .await
        .map(|_| ())
        .map_err(err("elasticloadbalancing:DeleteTargetGroup"))
}

/// Creates an internet-facing IPv4 application load balancer, tagged at creation.
/// Returns (ARN, DNS name).
pub async fn create_load_balancer(
    aws: &Aws,
    s: &LoadBalancerSpec,
    security_group_ids: Vec<String>,
    tags_: &BTreeMap<String, String>,
) -> Result<(String, String), AwsError> {
    let out = aws
        .elbv2
        .create_load_balancer()
        .name(&s.name)
        .r#type(LoadBalancerTypeEnum::Application)
        .scheme(LoadBalancerSchemeEnum::InternetFacing)
        .ip_address_type(IpAddressType::Ipv4)
        .set_subnets(Some(s.subnet_ids.clone()))
        .set_security_groups(Some(security_group_ids))
        .set_tags(Some(elb_tags(tags_)))
        .send()
        .await
        .map_err(err("elasticloadbalancing:CreateLoadBalancer"))?;
    let lb = out.load_balancers().first();
    match (
        lb.and_then(|l| l.load_balancer_arn()),
        lb.and_then(|l| l.dns_name()),
    ) {
        (Some(arn), Some(dns)) => Ok((arn.to_string(), dns.to_string())),
        _ => Err(AwsError::state(
            "elasticloadbalancing:CreateLoadBalancer",
            ErrorClass::Other,
            "no load balancer in the answer",
        )),
    }
}

/// The state of a load balancer (`provisioning`, `active`, `active_impaired`, `failed`);
/// `None` when it does not exist.
pub async fn load_balancer_state(aws: &Aws, arn: &str) -> Result<Option<String>, AwsError> {
    let out = aws
        .elbv2
        .describe_load_balancers()
        .load_balancer_arns(arn)
        .send()
        .await
        .map_err(err("elasticloadbalancing:DescribeLoadBalancers"))
        .ignore_not_found()?;
    Ok(out.and_then(|o| {
        o.load_balancers().first().map(|l| {
            l.state()
                .and_then(|s| s.code())
                .map(|c| c.as_str().to_string())
                .unwrap_or_default()
        })
    }))
}

pub async fn set_load_balancer_security_groups(
    aws: &Aws,
    arn: &str,
    ids: Vec<String>,
) -> Result<(), AwsError> {
    aws.elbv2
        .set_security_groups()
        .load_balancer_arn(arn)
        .set_security_groups(Some(ids))
        .send()
        .await
        .map(|_| ())
        .map_err(err("elasticloadbalancing:SetSecurityGroups"))
}

pub async fn delete_load_balancer(aws: &Aws, arn: &str) -> Result<(), AwsError> {
    aws.elbv2
        .delete_load_balancer()
        .load_balancer_arn(arn)
        .send()
        .await
        .map(|_| ())
        .map_err(err("elasticloadbalancing:DeleteLoadBalancer"))
}

/// The default action of a listener.
fn default_action(
    op: &str,
    s: &ListenerSpec,
    target_group_arn: Option<&str>,
) -> Result<Action, AwsError> {
    match &s.action {
        ListenerAction::Forward(tg) => {
            let arn = target_group_arn.ok_or_else(|| {
                AwsError::state(
                    op,
                    ErrorClass::InvalidInput,
                    format!("target group {tg} has no ARN yet"),
                )
            })?;
            Ok(Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(arn)
                .build())
        }
        ListenerAction::RedirectHttps => Ok(Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol("HTTPS")
                    .port("443")
                    .host("#{host}")
                    .path("/#{path}")
                    .query("#{query}")
                    .status_code(RedirectActionStatusCodeEnum::Http301)
                    .build(),
            )
            .build()),
    }
}

/// Creates a listener, tagged at creation: HTTPS with the certificate and [`SSL_POLICY`] when
/// the spec has a certificate, HTTP otherwise. `target_group_arn` is the resolved ARN for
/// forward actions (`None` for a redirect to HTTPS). Returns its ARN.
pub async fn create_listener(
    aws: &Aws,
    lb_arn: &str,
    s: &ListenerSpec,
    target_group_arn: Option<&str>,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    const OP: &str = "elasticloadbalancing:CreateListener";
    let mut req = aws
        .elbv2
        .create_listener()
        .load_balancer_arn(lb_arn)
        .port(i32::from(s.port))
        .default_actions(default_action(OP, s, target_group_arn)?)
        .set_tags(Some(elb_tags(tags_)));
    req = match &s.certificate_arn {
        Some(cert) => req
            .protocol(ProtocolEnum::Https)
            .ssl_policy(SSL_POLICY)
            .certificates(Certificate::builder().certificate_arn(cert).build()),
        None => req.protocol(ProtocolEnum::Http),
    };
    let out = req.send().await.map_err(err(OP))?;
    out.listeners()
        .first()
        .and_then(|l| l.listener_arn())
        .map(str::to_string)
        .ok_or_else(|| AwsError::state(OP, ErrorClass::Other, "no listener in the answer"))
}

/// Brings a listener's port, protocol, certificate and default action to the spec.
pub async fn modify_listener(
    aws: &Aws,
    arn: &str,
    s: &ListenerSpec,
    target_group_arn: Option<&str>,
) -> Result<(), AwsError> {
    const OP: &str = "elasticloadbalancing:ModifyListener";
    let mut req = aws
        .elbv2
        .modify_listener()
        .listener_arn(arn)
        .port(i32::from(s.port))
        .default_actions(default_action(OP, s, target_group_arn)?);
    req = match &s.certificate_arn {
        Some(cert) => req
            .protocol(ProtocolEnum::Https)
            .ssl_policy(SSL_POLICY)
            .certificates(Certificate::builder().certificate_arn(cert).build()),
        None => req.protocol(ProtocolEnum::Http),
    };
    req.send().await.map(|_| ()).map_err(err(OP))
}

pub async fn delete_listener(aws: &Aws, arn: &str) -> Result<(), AwsError> {
    aws.elbv2
        .delete_listener()
        .listener_arn(arn)
        .send()
        .await
        .map(|_| ())
        .map_err(err("elasticloadbalancing:DeleteListener"))
}

/// The targets of a target group as (target id, state, reason), for `status`. The reason is the
/// reason code (`Elb.InitialHealthChecking`, `Target.ResponseCodeMismatch`, …), or the
/// description when there is no code, or empty for a healthy target.
pub async fn target_health(
    aws: &Aws,
    tg_arn: &str,
) -> Result<Vec<(String, String, String)>, AwsError> {
    let out = aws
        .elbv2
        .describe_target_health()
        .target_group_arn(tg_arn)
        .send()
        .await
        .map_err(err("elasticloadbalancing:DescribeTargetHealth"))?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .map(|d| {
            let id = d
                .target()
                .and_then(|t| t.id())
                .unwrap_or_default()
                .to_string();
            let h = d.target_health();
            let state = h
                .and_then(|h| h.state())
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            let reason = h
                .and_then(|h| h.reason().map(|r| r.as_str().to_string()))
                .or_else(|| h.and_then(|h| h.description()).map(str::to_string))
                .unwrap_or_default();
            (id, state, reason)
        })
        .collect())
}
