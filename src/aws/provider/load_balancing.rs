//! Elastic Load Balancing v2: target groups, application load balancers and their listeners.

use std::time::Duration;

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::aws::error::AwsError;
use crate::aws::{elbv2, Aws};
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
