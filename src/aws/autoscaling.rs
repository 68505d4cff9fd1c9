//! EC2 Auto Scaling: groups launched from a launch template, instance refreshes and
//! target-tracking CPU policies.
//!
//! A group's physical id is its name. Scaling policies have no tags: they belong to their group,
//! and the CPU policy is recognised by its name, `<group name>-cpu` ([`cpu_policy_name`]).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_autoscaling::types::{
    DesiredConfiguration, Filter, LaunchTemplateSpecification, LifecycleState, MetricType,
    PredefinedMetricSpecification, RefreshPreferences, RefreshStrategy, ScaleInProtectedInstances,
    Tag, TargetTrackingConfiguration,
};

use super::error::{sdk as err, AwsError, ErrorClass};
use super::tags;
use super::Aws;
use crate::plan::{AutoScalingGroupSpec, Details, Kind, Observed, ResourceId, ScalingPolicySpec};

/// The logical id of a group's CPU target-tracking policy.
pub const CPU_POLICY_ID: &str = "cpu-policy";

/// How long [`start_instance_refresh`] waits for a cancelled refresh to let go of the group.
const REFRESH_CANCEL_DEADLINE: Duration = Duration::from_secs(600);

/// The name of a group's CPU policy.
pub fn cpu_policy_name(group: &str) -> String {
    format!("{group}-cpu")
}

/// Group tags: all propagate to the instances the group launches except `iac:id` and
/// `iac:kind`, since those instances are not resources of the stack by themselves.
fn group_tags(group: &str, t: &BTreeMap<String, String>) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .resource_id(group)
                .resource_type("auto-scaling-group")
                .key(k)
                .value(v)
                .propagate_at_launch(k != tags::ID && k != tags::KIND && k != tags::DESIRED)
                .build()
        })
        .collect()
}

/// Auto Scaling groups tagged `iac:stack=<stack>` (logical id from their `iac:id` tag) and
/// their CPU policies (logical id [`CPU_POLICY_ID`]).
///
/// A group being deleted (`Status: Delete in progress`) is reported with state `deleting`, others
/// with `active`. A policy's `tags` are its group's, with `iac:id` and `iac:kind` set to the
/// policy's (policies cannot carry tags). Policies with other names are not the stack's and are
/// not reported.
pub async fn discover(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let groups: Vec<_> = aws
        .autoscaling
        .describe_auto_scaling_groups()
        .filters(
            Filter::builder()
                .name(format!("tag:{}", tags::STACK))
                .values(stack)
                .build(),
        )
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("autoscaling:DescribeAutoScalingGroups"))?
        .into_iter()
        .flat_map(|p| p.auto_scaling_groups().to_vec())
        .collect();
    let mut out = Vec::new();
    for g in &groups {
        let Some(name) = g.auto_scaling_group_name() else {
            continue;
        };
        let t: BTreeMap<String, String> = g
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect();
        // The filter already holds, but an emulator or a later tag change may disagree.
        if !tags::belongs(t.get(tags::STACK).map(String::as_str), stack) {
            continue;
        }
        let Some(id) = t.get(tags::ID).cloned() else {
            continue;
        };
        let state = if g.status().is_some_and(|s| s.starts_with("Delete")) {
            "deleting"
        } else {
            "active"
        };
        out.push(Observed {
            id: ResourceId::new(id),
            kind: Kind::AutoScalingGroup,
            physical_id: name.to_string(),
            state: state.to_string(),
            details: Details::AutoScalingGroup {
                min: g.min_size().unwrap_or(0).max(0) as u32,
                max: g.max_size().unwrap_or(0).max(0) as u32,
                desired: g.desired_capacity().unwrap_or(0).max(0) as u32,
                applied_desired: t.get(tags::DESIRED).and_then(|d| d.parse().ok()),
                launch_template_version: g
                    .launch_template()
                    .and_then(|l| l.version())
                    .unwrap_or("$Default")
                    .to_string(),
                target_group_arns: g.target_group_arns().to_vec(),
                health_check_type: g.health_check_type().unwrap_or_default().to_string(),
                health_check_grace_s: g.health_check_grace_period().unwrap_or(0).max(0) as u32,
                scale_in_protection: g.new_instances_protected_from_scale_in().unwrap_or(false),
                instances: g.instances().len() as u32,
                in_service: in_service_ids(g),
            },
            tags: t.clone(),
        });
        let policy_name = cpu_policy_name(name);
        for p in policies(aws, name).await? {
            if p.policy_name() != Some(policy_name.as_str()) {
                continue;
            }
            let mut pt = t.clone();
            pt.insert(tags::ID.to_string(), CPU_POLICY_ID.to_string());
            pt.insert(
                tags::KIND.to_string(),
                Kind::ScalingPolicy.as_str().to_string(),
            );
            out.push(Observed {
                id: ResourceId::new(CPU_POLICY_ID),
                kind: Kind::ScalingPolicy,
                physical_id: p.policy_arn().unwrap_or(&policy_name).to_string(),
                state: if p.enabled() == Some(false) {
                    "disabled"
                } else {
                    "active"
                }
                .to_string(),
                details: Details::ScalingPolicy {
                    group: name.to_string(),
                    cpu_target: p
                        .target_tracking_configuration()
                        .and_then(|c| c.target_value())
                        .map(|v| format!("{v}")),
                    warmup_s: p.estimated_instance_warmup(),
                },
                tags: pt,
            });
        }
    }
    Ok(out)
}

/// All scaling policies of a group (DescribePolicies, following NextToken).
async fn policies(
    aws: &Aws,
    group: &str,
) -> Result<Vec<aws_sdk_autoscaling::types::ScalingPolicy>, AwsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = aws
            .autoscaling
            .describe_policies()
            .auto_scaling_group_name(group)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(err("autoscaling:DescribePolicies"))?;
        out.extend(resp.scaling_policies().iter().cloned());
        match resp.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// The sorted ids of a group's `InService` instances.
fn in_service_ids(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Vec<String> {
    let mut ids: Vec<String> = g
        .instances()
        .iter()
        .filter(|i| i.lifecycle_state() == Some(&LifecycleState::InService))
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The ids of the instances the group has in service now (none when the group is gone).
pub async fn in_service_instances(aws: &Aws, group: &str) -> Result<Vec<String>, AwsError> {
    let out = aws
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(err("autoscaling:DescribeAutoScalingGroups"))?;
    Ok(out
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(group))
        .map(in_service_ids)
        .unwrap_or_default())
}

/// ELB health checks for a group behind target groups; EC2 status checks for one without (a
/// group of one that replaces its instance when the instance or its host fails).
fn health_check_type(s: &AutoScalingGroupSpec) -> &'static str {
    if s.target_groups.is_empty() {
        "EC2"
    } else {
        "ELB"
    }
}

fn launch_template(id: &str, version: &str) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder()
        .launch_template_id(id)
        .version(version)
        .build()
}

/// Creates the group from launch template `launch_template_id` at `version` (a number as a
/// string, or `$Default` / `$Latest`) across the spec's subnets, attached to the target groups, with
/// ELB health checks (EC2 status checks without target groups);
/// tagged at creation (see [`group_tags`] for what propagates to instances).
pub async fn create_group(
    aws: &Aws,
    s: &AutoScalingGroupSpec,
    launch_template_id: &str,
    version: &str,
    target_group_arns: Vec<String>,
    tags_: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    aws.autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(&s.name)
        .launch_template(launch_template(launch_template_id, version))
        .min_size(s.min as i32)
        .max_size(s.max as i32)
        .desired_capacity(s.desired as i32)
        .vpc_zone_identifier(s.subnet_ids.join(","))
        .set_target_group_arns(Some(target_group_arns))
        .health_check_type(health_check_type(s))
        .health_check_grace_period(s.health_check_grace_s as i32)
        .new_instances_protected_from_scale_in(s.scale_in_protection)
        .default_instance_warmup(s.warmup_s as i32)
        .set_tags(Some(group_tags(&s.name, tags_)))
        .send()
        .await
        .map(|_| ())
        .map_err(err("autoscaling:CreateAutoScalingGroup"))
}

/// Brings the group's sizes, launch template version, health check grace, scale-in protection
/// and default warm-up to the spec. Instances already running keep their version until an
/// instance refresh replaces them. (Target groups cannot change through this call.)
pub async fn update_group(
    aws: &Aws,
    s: &AutoScalingGroupSpec,
    launch_template_id: &str,
    version: &str,
    desired: Option<u32>,
) -> Result<(), AwsError> {
    aws.autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(&s.name)
        .launch_template(launch_template(launch_template_id, version))
        .min_size(s.min as i32)
        .max_size(s.max as i32)
        .set_desired_capacity(desired.map(|d| d as i32))
        .health_check_type(health_check_type(s))
        .health_check_grace_period(s.health_check_grace_s as i32)
        .new_instances_protected_from_scale_in(s.scale_in_protection)
        .default_instance_warmup(s.warmup_s as i32)
        .send()
        .await
        .map(|_| ())
        .map_err(err("autoscaling:UpdateAutoScalingGroup"))
}

/// Starts a rolling replacement of all the group's instances (after a new launch template
/// version), keeping `min_healthy_percent` of the capacity in service, each new instance counted
/// after `warmup_s`. Scale-in protected instances are replaced too (otherwise the refresh would
/// wait an hour for them and fail). With `to`, the refresh moves the group to that version
/// (AWS saves it on the group when the refresh succeeds) and, with `auto_rollback`, AWS puts
/// back the version the group ran when it fails. SkipMatching is off on purpose: a group on
/// `$Default` or `$Latest` keeps its saved configuration when a new version becomes the default,
/// so skip matching could count the old instances as matching and replace nothing. Returns the
/// refresh id.
///
/// If a refresh is already in progress, it is **cancelled and a new one started**: the running
/// one may be rolling to an older version. Cancelling takes a while (AWS finishes the
/// replacements under way), so the start is retried with backoff (2 s doubling to 15 s) for up
/// to ten minutes, then fails as `DependencyViolation`.
pub async fn start_instance_refresh(
    aws: &Aws,
    group: &str,
    min_healthy_percent: u32,
    warmup_s: u32,
    to: Option<&Desired>,
) -> Result<String, AwsError> {
    const OP: &str = "autoscaling:StartInstanceRefresh";
    let deadline = tokio::time::Instant::now() + REFRESH_CANCEL_DEADLINE;
    let mut delay = Duration::from_secs(2);
    let mut cancelled = false;
    loop {
        let res = aws
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .strategy(RefreshStrategy::Rolling)
            .preferences(
                RefreshPreferences::builder()
                    .min_healthy_percentage(min_healthy_percent as i32)
                    .instance_warmup(warmup_s as i32)
                    .skip_matching(false)
                    .scale_in_protected_instances(ScaleInProtectedInstances::Refresh)
                    .set_auto_rollback(to.map(|d| d.auto_rollback))
                    .build(),
            )
            .set_desired_configuration(to.map(|d| {
                DesiredConfiguration::builder()
                    .launch_template(launch_template(&d.launch_template_id, &d.version))
                    .build()
            }))
            .send()
            .await
            .map_err(err(OP));
        match res {
            Ok(o) => {
                return o.instance_refresh_id().map(str::to_string).ok_or_else(|| {
                    AwsError::state(OP, ErrorClass::Other, "no refresh id in the answer")
                })
            }
            Err(e) if e.code.as_deref() == Some("InstanceRefreshInProgress") => {
                if !cancelled {
                    cancel_instance_refresh(aws, group).await?;
                    cancelled = true;
                }
                if tokio::time::Instant::now() + delay > deadline {
                    return Err(AwsError::state(
                        OP,
                        ErrorClass::DependencyViolation,
                        format!(
                            "the instance refresh of {group} in progress was cancelled but is \
                             still running after {} s",
                            REFRESH_CANCEL_DEADLINE.as_secs()
                        ),
                    ));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a refresh moves the group to: a launch template version and, when the group ran a
/// numbered version, AWS's automatic rollback to it if the refresh fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub launch_template_id: String,
    pub version: String,
    pub auto_rollback: bool,
}

/// Cancels the group's refresh in progress; fine when there is none.
async fn cancel_instance_refresh(aws: &Aws, group: &str) -> Result<(), AwsError> {
    match aws
        .autoscaling
        .cancel_instance_refresh()
        .auto_scaling_group_name(group)
        .send()
        .await
        .map_err(err("autoscaling:CancelInstanceRefresh"))
    {
        Ok(_) => Ok(()),
        Err(e) if e.is(ErrorClass::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One instance refresh, as DescribeInstanceRefreshes tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    pub id: String,
    /// `Pending`, `InProgress`, `Successful`, `Failed`, `Cancelling`, `Cancelled`,
    /// `RollbackInProgress`, `RollbackFailed`, `RollbackSuccessful`, `Baking`.
    pub status: String,
    pub percent: i32,
    pub instances_to_update: i32,
    /// Why it is in that status (AWS's words), when it says.
    pub reason: Option<String>,
    /// When it started, in seconds since the Unix epoch.
    pub started_s: Option<i64>,
}

impl Refresh {
    /// Still moving: `up` keeps following it.
    pub fn in_progress(&self) -> bool {
        matches!(
            self.status.as_str(),
            "Pending" | "InProgress" | "Cancelling" | "RollbackInProgress" | "Baking"
        )
    }

    /// Ended with the new configuration on every instance.
    pub fn succeeded(&self) -> bool {
        self.status == "Successful"
    }
}

/// The endpoint does not implement instance refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshesMissing {
    /// The endpoint's answer that showed it.
    pub why: String,
    /// Set for the one caller (per run) that found out, which reports it.
    pub first: bool,
}

/// Whether the endpoint lacks instance refreshes: known from an earlier answer in this
/// run, or asked (see [`observed_refresh`]).
pub async fn refreshes_missing(
    aws: &Aws,
    group: &str,
) -> Result<Option<RefreshesMissing>, AwsError> {
    Ok(observed_refresh(aws, group).await?.err())
}

/// The group's latest instance refresh, or `Err(RefreshesMissing)` when the endpoint does
/// not implement them. The Auto Scaling API names every error it returns; an answer without an
/// error code (moto 5.2.5 answers each action it lacks with a bare HTTP 500, after the retries)
/// is not that API's, so the call is missing. That is learnt once per run and remembered on
/// `aws`; any other error is an error.
pub async fn observed_refresh(
    aws: &Aws,
    group: &str,
) -> Result<Result<Option<Refresh>, RefreshesMissing>, AwsError> {
    let known = &aws.capabilities.instance_refresh;
    if let Some(Some(why)) = known.get() {
        return Ok(Err(RefreshesMissing {
            why: why.clone(),
            first: false,
        }));
    }
    match latest_refresh(aws, group).await {
        Ok(r) => {
            // Already known as supported, or this answer says so.
            let _ = known.set(None);
            Ok(Ok(r))
        }
        Err(e) if e.code.is_none() && e.class == ErrorClass::Other => {
            let why = e.line();
            let first = known.set(Some(why.clone())).is_ok();
            Ok(Err(RefreshesMissing { why, first }))
        }
        Err(e) => Err(e),
    }
}

/// The group's latest instance refresh; `None` when it never had one.
pub async fn latest_refresh(aws: &Aws, group: &str) -> Result<Option<Refresh>, AwsError> {
    let out = aws
        .autoscaling
        .describe_instance_refreshes()
        .auto_scaling_group_name(group)
        .max_records(1)
        .send()
        .await
        .map_err(err("autoscaling:DescribeInstanceRefreshes"))?;
    Ok(out.instance_refreshes().first().map(|r| Refresh {
        id: r.instance_refresh_id().unwrap_or_default().to_string(),
        status: r
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        percent: r.percentage_complete().unwrap_or(0),
        instances_to_update: r.instances_to_update().unwrap_or(0),
        reason: r.status_reason().map(str::to_string),
        started_s: r.start_time().map(|t| t.secs()),
    }))
}

/// The group's most recent scaling activities as (status code, description), newest first,
/// at most `n`.
pub async fn activities(
    aws: &Aws,
    group: &str,
    n: usize,
) -> Result<Vec<(String, String)>, AwsError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let out = aws
        .autoscaling
        .describe_scaling_activities()
        .auto_scaling_group_name(group)
        .max_records(n.min(100) as i32)
        .send()
        .await
        .map_err(err("autoscaling:DescribeScalingActivities"))?;
    Ok(out
        .activities()
        .iter()
        .take(n)
        .map(|a| {
            (
                a.status_code()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                a.description().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// Deletes the group with ForceDelete, which terminates its instances. The group lingers
/// (`Delete in progress`) until they are gone: wait with [`group_exists`].
pub async fn delete_group(aws: &Aws, group: &str) -> Result<(), AwsError> {
    aws.autoscaling
        .delete_auto_scaling_group()
        .auto_scaling_group_name(group)
        .force_delete(true)
        .send()
        .await
        .map(|_| ())
        .map_err(err("autoscaling:DeleteAutoScalingGroup"))
}

/// Whether the group exists (a group being deleted still does).
pub async fn group_exists(aws: &Aws, group: &str) -> Result<bool, AwsError> {
    match aws
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(err("autoscaling:DescribeAutoScalingGroups"))
    {
        Ok(o) => Ok(o
            .auto_scaling_groups()
            .iter()
            .any(|g| g.auto_scaling_group_name() == Some(group))),
        Err(e) if e.is(ErrorClass::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates or updates (the same call) the group's target-tracking policy on average CPU.
/// Returns the policy ARN (read back with DescribePolicies when the answer lacks it).
pub async fn put_cpu_policy(
    aws: &Aws,
    s: &ScalingPolicySpec,
    group: &str,
) -> Result<String, AwsError> {
    const OP: &str = "autoscaling:PutScalingPolicy";
    let out = aws
        .autoscaling
        .put_scaling_policy()
        .auto_scaling_group_name(group)
        .policy_name(&s.name)
        .policy_type("TargetTrackingScaling")
        .estimated_instance_warmup(s.warmup_s as i32)
        .target_tracking_configuration(
            TargetTrackingConfiguration::builder()
                .predefined_metric_specification(
                    PredefinedMetricSpecification::builder()
                        .predefined_metric_type(MetricType::AsgAverageCpuUtilization)
                        .build(),
                )
                .target_value(s.cpu_target)
                .build(),
        )
        .send()
        .await
        .map_err(err(OP))?;
    if let Some(arn) = out.policy_arn().filter(|a| !a.is_empty()) {
        return Ok(arn.to_string());
    }
    // Some endpoints (moto 5.2.5) answer without the ARN: read it back.
    let described = aws
        .autoscaling
        .describe_policies()
        .auto_scaling_group_name(group)
        .policy_names(&s.name)
        .send()
        .await
        .map_err(err("autoscaling:DescribePolicies"))?;
    described
        .scaling_policies()
        .iter()
        .find(|p| p.policy_name() == Some(s.name.as_str()))
        .and_then(|p| p.policy_arn())
        .map(str::to_string)
        .ok_or_else(|| AwsError::state(OP, ErrorClass::Other, "no policy ARN in the answer"))
}

pub async fn delete_policy(aws: &Aws, group: &str, policy_name: &str) -> Result<(), AwsError> {
    aws.autoscaling
        .delete_policy()
        .auto_scaling_group_name(group)
        .policy_name(policy_name)
        .send()
        .await
        .map(|_| ())
        .map_err(err("autoscaling:DeletePolicy"))
}

/// Sets one tag on a group, not propagated to its instances.
pub async fn set_group_tag(aws: &Aws, group: &str, key: &str, value: &str) -> Result<(), AwsError> {
    aws.autoscaling
        .create_or_update_tags()
        .tags(
            Tag::builder()
                .resource_id(group)
                .resource_type("auto-scaling-group")
                .key(key)
                .value(value)
                .propagate_at_launch(false)
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(err("autoscaling:CreateOrUpdateTags"))
}
