//! Elastic Load Balancing v2: target groups, application load balancers and their listeners.

use std::collections::BTreeSet;

use std::time::Duration;

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::aws::error::AwsError;
use crate::aws::{elbv2, Aws};
use crate::plan::compare::{differs, kind_changed, update_if, Compare, Context};
use crate::plan::*;

pub struct LoadBalancing;

/// How long a load balancer may take to become active, or to go.
const LOAD_BALANCER: Duration = Duration::from_secs(900);

#[async_trait::async_trait]
impl Provider for LoadBalancing {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::TargetGroup, Kind::LoadBalancer, Kind::Listener]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(elbv2::discover(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let aws = &cx.aws;
        let t = cx.tags_for(&r.id, r.kind());
        let known = match &r.spec {
            Spec::TargetGroup(s) => Known::id(&elbv2::create_target_group(aws, s, &t).await?),
            Spec::LoadBalancer(s) => {
                let sgs = cx.ids(&s.security_groups, "elbv2:CreateLoadBalancer")?;
                let (arn, dns) = elbv2::create_load_balancer(aws, s, sgs, &t).await?;
                Known::id(&arn).with("dns", &dns)
            }
            Spec::Listener(s) => {
                let tg = forward_to(cx, s)?;
                let lb = cx
                    .need(&s.load_balancer, "elbv2:CreateListener")?
                    .physical_id;
                Known::id(&elbv2::create_listener(aws, &lb, s, tg.as_deref(), &t).await?)
            }
            _ => return Err(not_mine(r)),
        };
        let arn = known.physical_id.clone();
        cx.remember(&r.id, known);
        Ok(Some(arn))
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let aws = &cx.aws;
        let arn = &actual.physical_id;
        let mut known = Known::id(arn);
        match &r.spec {
            Spec::TargetGroup(s) => elbv2::update_target_group(aws, arn, s).await?,
            Spec::LoadBalancer(s) => {
                let sgs = cx.ids(&s.security_groups, "elbv2:CreateLoadBalancer")?;
                elbv2::set_load_balancer_security_groups(aws, arn, sgs).await?;
                if let Details::LoadBalancer { dns_name, .. } = &actual.details {
                    known = known.with("dns", dns_name);
                }
                self.wait_ready(cx, r, arn).await?;
            }
            Spec::Listener(s) => {
                let tg = forward_to(cx, s)?;
                elbv2::modify_listener(aws, arn, s, tg.as_deref()).await?;
            }
            _ => return Err(not_mine(r)),
        }
        cx.remember(&r.id, known);
        Ok(Some(arn.clone()))
    }

    /// A load balancer active (its listeners and the groups' targets need it).
    async fn wait_ready(
        &self,
        cx: &Applier,
        r: &Resource,
        physical_id: &str,
    ) -> Result<(), AwsError> {
        let Spec::LoadBalancer(s) = &r.spec else {
            return Ok(());
        };
        let what = format!("load balancer {} to be active", s.name);
        cx.wait_state(&r.id, &what, LOAD_BALANCER, Some("active"), || {
            elbv2::load_balancer_state(&cx.aws, physical_id)
        })
        .await
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let (aws, id) = (&cx.aws, &o.physical_id);
        match o.kind {
            Kind::Listener => elbv2::delete_listener(aws, id).await,
            Kind::LoadBalancer => elbv2::delete_load_balancer(aws, id).await,
            Kind::TargetGroup => {
                cx.retry_in_use(&o.id, &format!("target group {id} to be free"), || {
                    elbv2::delete_target_group(aws, id)
                })
                .await
            }
            _ => Ok(()),
        }
    }

    /// A load balancer gone (its security group and subnets are free only then).
    async fn wait_gone(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        if o.kind != Kind::LoadBalancer {
            return Ok(());
        }
        let id = &o.physical_id;
        cx.wait_state(
            &o.id,
            &format!("load balancer {id} to be gone"),
            LOAD_BALANCER,
            None,
            || elbv2::load_balancer_state(&cx.aws, id),
        )
        .await
    }
}

/// The target group's ARN a listener forwards to (none for a redirect).
fn forward_to(cx: &Applier, s: &ListenerSpec) -> Result<Option<String>, AwsError> {
    Ok(match &s.action {
        ListenerAction::Forward(tg) => Some(cx.need(tg, "elbv2:CreateListener")?.physical_id),
        ListenerAction::RedirectHttps => None,
    })
}

impl Compare for TargetGroupSpec {
    /// Its health check and deregistration delay change in place.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::TargetGroup {
            health_path,
            healthy_threshold,
            unhealthy_threshold,
            interval_s,
            timeout_s,
            matcher,
            deregistration_delay_s,
            ..
        } = &found.details
        else {
            return kind_changed();
        };
        let s = self;
        let mut reasons = Vec::new();
        differs(
            &mut reasons,
            "health path",
            health_path.as_str(),
            s.health_path.as_str(),
        );
        differs(
            &mut reasons,
            "healthy threshold",
            *healthy_threshold,
            s.healthy_threshold,
        );
        differs(
            &mut reasons,
            "unhealthy threshold",
            *unhealthy_threshold,
            s.unhealthy_threshold,
        );
        differs(&mut reasons, "interval (s)", *interval_s, s.interval_s);
        differs(&mut reasons, "timeout (s)", *timeout_s, s.timeout_s);
        differs(
            &mut reasons,
            "matcher",
            matcher.as_str(),
            s.matcher.as_str(),
        );
        differs(
            &mut reasons,
            "deregistration delay (s)",
            *deregistration_delay_s,
            Some(s.deregistration_delay_s),
        );
        update_if(reasons)
    }
}

impl Compare for LoadBalancerSpec {
    /// Its security groups change in place.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::LoadBalancer {
            security_group_ids, ..
        } = &found.details
        else {
            return kind_changed();
        };
        let want: Option<BTreeSet<&str>> = self
            .security_groups
            .iter()
            .map(|g| cx.physical(g))
            .collect();
        let have: BTreeSet<&str> = security_group_ids.iter().map(String::as_str).collect();
        update_if(if want.as_ref() == Some(&have) {
            vec![]
        } else {
            vec!["security groups changed".to_string()]
        })
    }
}

impl Compare for ListenerSpec {
    /// Its action and certificate change in place.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::Listener {
            action,
            certificate_arn,
            ..
        } = &found.details
        else {
            return kind_changed();
        };
        let want = match &self.action {
            ListenerAction::RedirectHttps => Some("redirect:https".to_string()),
            ListenerAction::Forward(tg) if cx.renewed.contains(tg) => None,
            ListenerAction::Forward(tg) => cx.physical(tg).map(|arn| format!("forward:{arn}")),
        };
        let mut reasons = Vec::new();
        if want.as_deref() != Some(action.as_str()) {
            reasons.push(format!(
                "action {action} → {}",
                want.unwrap_or_else(|| "forward to the new target group".to_string())
            ));
        }
        differs(
            &mut reasons,
            "certificate",
            certificate_arn.as_deref(),
            self.certificate_arn.as_deref(),
        );
        update_if(reasons)
    }
}
