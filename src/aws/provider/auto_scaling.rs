//! Auto Scaling groups and their target-tracking policies. A group's template change rolls
//! out by an instance refresh that AWS rolls back when it fails (followed by `up`'s wait); an
//! endpoint without instance refreshes (a capability checked once per run) gets the new
//! version at once.

use std::time::Duration;

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::apply::events::Event;
use crate::aws::error::AwsError;
use crate::aws::{autoscaling, tags, Aws};
use crate::plan::compare::{differs, kind_changed, update_if, Compare, Context};
use crate::plan::diff::group_behind_template;
use crate::plan::*;

pub struct AutoScaling;

/// How long a group's deletion (with its instances) may take.
const GROUP_GONE: Duration = Duration::from_secs(1200);

#[async_trait::async_trait]
impl Provider for AutoScaling {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::AutoScalingGroup, Kind::ScalingPolicy]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(autoscaling::discover(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let aws = &cx.aws;
        let name = match &r.spec {
            Spec::AutoScalingGroup(s) => {
                let (lt, version) = template(cx, s)?;
                let tgs = cx.ids(&s.target_groups, "autoscaling:CreateAutoScalingGroup")?;
                let mut t = cx.tags_for(&r.id, r.kind());
                t.insert(tags::DESIRED.to_string(), s.desired.to_string());
                t.insert(tags::ROLE.to_string(), s.role.clone());
                // The launch template's instance profile may have been created a moment ago.
                cx.retry_fresh(&r.id, "the launch template's instance profile", || {
                    autoscaling::create_group(aws, s, &lt, &version, tgs.clone(), &t)
                })
                .await?;
                s.name.clone()
            }
            Spec::ScalingPolicy(s) => put_policy(cx, s).await?,
            _ => return Err(not_mine(r)),
        };
        cx.remember(&r.id, Known::id(&name));
        Ok(Some(name))
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let aws = &cx.aws;
        let s = match &r.spec {
            Spec::AutoScalingGroup(s) => s,
            Spec::ScalingPolicy(s) => {
                let name = put_policy(cx, s).await?;
                cx.remember(&r.id, Known::id(&name));
                return Ok(Some(name));
            }
            _ => return Err(not_mine(r)),
        };
        let (lt, version) = template(cx, s)?;
        // Only a change of the stack's desired capacity is applied: the live value
        // belongs to the scaling policy between runs.
        let (applied, runs) = match &actual.details {
            Details::AutoScalingGroup {
                applied_desired,
                launch_template_version,
                ..
            } => (*applied_desired, launch_template_version.clone()),
            _ => (None, "$Default".to_string()),
        };
        let desired = (applied != Some(s.desired)).then_some(s.desired);
        let updated = cx
            .lt_updated
            .lock()
            .map(|u| u.contains(&s.launch_template))
            .unwrap_or(false);
        // A template made in this run (replaced): the group's old one is gone.
        let renewed = cx
            .preexisting
            .lock()
            .map(|p| !p.contains(&s.launch_template))
            .unwrap_or(false);
        let numbered = runs.parse::<i64>().is_ok();
        // A new version or template, or a group left behind by a refresh that
        // failed or rolled back: an instance refresh moves it. Otherwise the group
        // takes the template's version as it is (from `$Default`, the same content).
        let refresh = updated || renewed || (numbered && runs != version);
        // AWS can roll back only to a numbered version of the same template.
        let rollback = numbered && !renewed;
        // The refresh moves the group to the new version and, when it fails, AWS
        // rolls back to the one it ran: until then the group keeps that one.
        let keep = if refresh && rollback { &runs } else { &version };
        autoscaling::update_group(aws, s, &lt, keep, desired).await?;
        if desired.is_some() {
            autoscaling::set_group_tag(aws, &s.name, tags::DESIRED, &s.desired.to_string()).await?;
        }
        if refresh {
            match autoscaling::refreshes_missing(aws, &s.name).await? {
                None => {
                    let to = autoscaling::Desired {
                        launch_template_id: lt.clone(),
                        version: version.clone(),
                        auto_rollback: rollback,
                    };
                    let id = autoscaling::start_instance_refresh(
                        aws,
                        &s.name,
                        s.min_healthy_percent,
                        s.warmup_s,
                        Some(&to),
                    )
                    .await?;
                    cx.reporter.event(&Event::Info {
                        message: format!("{}: rolling instance refresh {id} to launch template version {version} started (min healthy {}%{}); `iac status` shows its progress", r.id, s.min_healthy_percent, if rollback { format!(", rolls back to version {runs} if it fails") } else { String::new() }),
                    });
                }
                // The group takes the new version at once; its instances get it
                // when they are replaced.
                Some(autoscaling::RefreshesMissing { why, first }) => {
                    autoscaling::update_group(aws, s, &lt, &version, None).await?;
                    if first {
                        cx.reporter.event(&Event::Warning {
                            message: format!("the endpoint does not implement instance refreshes ({why}); a group takes its new launch template version at once and its instances get it when they are replaced"),
                        });
                    }
                    cx.reporter.event(&Event::Info {
                        message: format!("{}: now on launch template version {version}, without an instance refresh", r.id),
                    });
                }
            }
        }
        cx.remember(&r.id, Known::id(&s.name));
        Ok(Some(s.name.clone()))
    }

    /// A group's instances are launched by AWS after the call: read again.
    fn known_after_apply(&self, kind: Kind) -> bool {
        kind != Kind::AutoScalingGroup
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let (aws, id) = (&cx.aws, &o.physical_id);
        match (o.kind, &o.details) {
            (Kind::ScalingPolicy, Details::ScalingPolicy { group, .. }) => {
                let name = if id.starts_with("arn:") {
                    format!("{group}-cpu")
                } else {
                    id.clone()
                };
                autoscaling::delete_policy(aws, group, &name).await
            }
            (Kind::AutoScalingGroup, _) => autoscaling::delete_group(aws, id).await,
            _ => Ok(()),
        }
    }

    /// A group gone with its instances (their security groups are free only then).
    async fn wait_gone(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        if o.kind != Kind::AutoScalingGroup {
            return Ok(());
        }
        let (aws, id) = (&cx.aws, &o.physical_id);
        let what = format!("Auto Scaling group {id} and its instances to be gone");
        cx.wait_state(&o.id, &what, GROUP_GONE, None, || async {
            Ok(if autoscaling::group_exists(aws, id).await? {
                Some("deleting".to_string())
            } else {
                None
            })
        })
        .await
    }
}

/// The group's launch template and the version it is to run: a numbered one (AWS rolls a
/// failed refresh back only then), `$Default` when the template's version is unknown.
fn template(cx: &Applier, s: &AutoScalingGroupSpec) -> Result<(String, String), AwsError> {
    let template = cx.need(&s.launch_template, "autoscaling:CreateAutoScalingGroup")?;
    let version = template
        .attrs
        .get("version")
        .cloned()
        .unwrap_or_else(|| "$Default".to_string());
    Ok((template.physical_id, version))
}

async fn put_policy(cx: &Applier, s: &ScalingPolicySpec) -> Result<String, AwsError> {
    let group = cx
        .need(&s.group, "autoscaling:PutScalingPolicy")?
        .physical_id;
    autoscaling::put_cpu_policy(&cx.aws, s, &group).await?;
    Ok(s.name.clone())
}

impl Compare for AutoScalingGroupSpec {
    /// Sizes and settings change in place; a new template version is rolled out by an instance
    /// refresh.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::AutoScalingGroup {
            min,
            max,
            desired,
            applied_desired,
            health_check_grace_s,
            scale_in_protection,
            ..
        } = &found.details
        else {
            return kind_changed();
        };
        let s = self;
        let mut reasons = Vec::new();
        differs(&mut reasons, "min", *min, s.min);
        differs(&mut reasons, "max", *max, s.max);
        // The scaling policy moves the live capacity; compare against what iac last applied.
        differs(
            &mut reasons,
            "desired",
            applied_desired.unwrap_or(*desired),
            s.desired,
        );
        differs(
            &mut reasons,
            "health check grace (s)",
            *health_check_grace_s,
            s.health_check_grace_s,
        );
        differs(
            &mut reasons,
            "scale-in protection",
            *scale_in_protection,
            s.scale_in_protection,
        );
        if cx.updated.contains(&s.launch_template) || cx.renewed.contains(&s.launch_template) {
            reasons.push(format!(
                "instance refresh (min healthy {}%)",
                s.min_healthy_percent
            ));
        } else if let Some(why) = group_behind_template(found, cx.kept.get(&s.launch_template)) {
            reasons.push(why);
        }
        update_if(reasons)
    }
}

impl Compare for ScalingPolicySpec {
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::ScalingPolicy {
            cpu_target,
            warmup_s,
            ..
        } = &found.details
        else {
            return kind_changed();
        };
        let mut reasons = Vec::new();
        differs(
            &mut reasons,
            "CPU target",
            cpu_target.clone(),
            Some(format!("{}", self.cpu_target)),
        );
        differs(
            &mut reasons,
            "warm-up (s)",
            *warmup_s,
            Some(self.warmup_s as i32),
        );
        update_if(reasons)
    }
}
