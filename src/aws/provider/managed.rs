//! Applying and deleting the managed-service kinds, whichever tier declares them: load
//! balancing, launch templates, auto scaling, Aurora and EFS (and the IAM profile of
//! `instance_profile: create`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::apply::events::Event;
use crate::apply::wait::{self, Backoff, Poll};
use crate::aws::error::{AwsError, ErrorClass};
use crate::aws::{autoscaling, ec2, efs, elbv2, iam, rds, tags};
use crate::plan::diff::short_hash;
use crate::plan::*;

use super::{wait_err, Applier, Known};

impl Applier {
    fn ids(&self, refs: &[ResourceId], op: &str) -> Result<Vec<String>, AwsError> {
        refs.iter()
            .map(|g| self.need(g, op).map(|k| k.physical_id))
            .collect()
    }

    /// Polls `state` until it answers `want` (or `None` for "gone"), within `deadline`.
    async fn wait_state<F, Fut>(
        &self,
        id: &ResourceId,
        what: &str,
        deadline: Duration,
        want: Option<&str>,
        mut state: F,
    ) -> Result<(), AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, AwsError>>,
    {
        wait::until(
            id,
            what,
            deadline,
            Backoff::default(),
            self.reporter.as_ref(),
            || {
                let fut = state();
                async move {
                    let now = fut.await?;
                    Ok(match (now.as_deref(), want) {
                        (None, None) => Poll::Ready(()),
                        (Some(s), Some(w)) if s == w => Poll::Ready(()),
                        (Some(s), _) if s.contains("fail") || s == "error" => {
                            return Err(AwsError::state(
                                "wait",
                                ErrorClass::Other,
                                format!("{what}: state {s}"),
                            ))
                        }
                        (s, _) => Poll::Pending(s.unwrap_or("gone").to_string()),
                    })
                }
            },
        )
        .await
        .map_err(|e| wait_err(e, "wait"))
    }

    /// Waits until a new Aurora cluster has its writer endpoint and the ARN of the password
    /// secret RDS manages (both assigned while it is still creating), and returns them.
    async fn cluster_names(
        &self,
        id: &ResourceId,
        cluster: &str,
        deadline: Duration,
    ) -> Result<(Option<String>, Option<String>), AwsError> {
        let aws = &self.aws;
        let what = format!("Aurora cluster {cluster}'s endpoint and password secret");
        wait::until(
            id,
            &what,
            deadline,
            Backoff::default(),
            self.reporter.as_ref(),
            || async {
                Ok(match rds::cluster_state(aws, cluster).await? {
                    Some((state, _, _)) if state.contains("fail") => {
                        return Err(AwsError::state(
                            "rds:DescribeDBClusters",
                            ErrorClass::Other,
                            format!("{what}: state {state}"),
                        ))
                    }
                    Some((_, Some(e), Some(sec))) => Poll::Ready((Some(e), Some(sec))),
                    Some((state, _, _)) => Poll::Pending(state),
                    None => Poll::Pending("not listed yet".to_string()),
                })
            },
        )
        .await
        .map_err(|e| wait_err(e, "rds:DescribeDBClusters"))
    }

    /// The alb-asg tier's kinds (load balancing, auto scaling, Aurora, EFS).
    pub(super) async fn apply_alb(
        &self,
        r: &Resource,
        spec: &Spec,
        action: &str,
        actual: Option<Observed>,
        t: BTreeMap<String, String>,
    ) -> Result<Option<String>, AwsError> {
        let aws = &self.aws;
        let create = actual.is_none() || action == "create";
        let physical = actual.as_ref().map(|a| a.physical_id.clone());
        let long = Duration::from_secs(40 * 60);
        let known = |physical_id: String, attrs: &[(&str, Option<String>)]| Known {
            physical_id,
            attrs: attrs
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
                .collect(),
            ..Default::default()
        };
        // What the resource's dependents read besides its id (a template's version).
        let mut attrs: Vec<(&str, Option<String>)> = Vec::new();
        let out = match spec {
            Spec::InstanceProfile(s) => {
                let hash = short_hash(serde_json::to_string(s).unwrap_or_default().as_bytes());
                if create {
                    let mut t = t.clone();
                    t.insert(tags::SPEC_HASH.to_string(), hash);
                    iam::create(aws, s, &t).await?;
                } else {
                    iam::put_policies(aws, s).await?;
                    iam::tag_role(aws, &s.name, tags::SPEC_HASH, &hash).await?;
                }
                s.name.clone()
            }
            Spec::DbSubnetGroup(s) => {
                if create {
                    rds::create_subnet_group(aws, s, &t).await?;
                } else {
                    rds::update_subnet_group(aws, s).await?;
                }
                s.name.clone()
            }
            Spec::DbCluster(s) => {
                let sgs = self.ids(&s.security_groups, "rds:CreateDBCluster")?;
                let (endpoint, secret) = if create {
                    let subnet_group = self
                        .need(&s.subnet_group, "rds:CreateDBCluster")?
                        .physical_id;
                    rds::create_cluster(aws, s, &subnet_group, sgs, &t).await?;
                    // Its instances are created while it is still creating (AWS allows it):
                    // what its dependents need now is its endpoint and password secret, known
                    // from the start. The parameters that hand them to the instances wait for
                    // the database instances to be available (see the tier).
                    self.cluster_names(&r.id, &s.identifier, long).await?
                } else {
                    rds::modify_cluster(aws, s, sgs).await?;
                    let what = format!("Aurora cluster {} to be available", s.identifier);
                    self.wait_state(&r.id, &what, long, Some("available"), || async {
                        Ok(rds::cluster_state(aws, &s.identifier).await?.map(|x| x.0))
                    })
                    .await?;
                    match rds::cluster_state(aws, &s.identifier).await? {
                        Some((_, e, sec)) => (e, sec),
                        None => (None, None),
                    }
                };
                self.remember(
                    &r.id,
                    known(
                        s.identifier.clone(),
                        &[("endpoint", endpoint), ("secret", secret)],
                    ),
                );
                return Ok(Some(s.identifier.clone()));
            }
            Spec::DbInstance(s) => {
                if create {
                    let cluster = self.need(&s.cluster, "rds:CreateDBInstance")?.physical_id;
                    // Created while its cluster is still creating; should RDS refuse that for
                    // a while (InvalidDBClusterStateFault), it is asked again.
                    let what =
                        format!("Aurora cluster {cluster} to take instance {}", s.identifier);
                    wait::until(
                        &r.id,
                        &what,
                        long,
                        Backoff::default(),
                        self.reporter.as_ref(),
                        || async {
                            match rds::create_instance(aws, s, &cluster, &t).await {
                                Ok(()) => Ok(Poll::Ready(())),
                                Err(e)
                                    if e.code.as_deref() == Some("InvalidDBClusterStateFault") =>
                                {
                                    Ok(Poll::Pending(e.message))
                                }
                                Err(e) => Err(e),
                            }
                        },
                    )
                    .await
                    .map_err(|e| wait_err(e, "rds:CreateDBInstance"))?;
                    let what = format!("Aurora instance {} to be available", s.identifier);
                    self.wait_state(&r.id, &what, long, Some("available"), || {
                        rds::instance_state(aws, &s.identifier)
                    })
                    .await?;
                }
                s.identifier.clone()
            }
            Spec::FileSystem(s) => {
                let id = match physical {
                    Some(p) => {
                        // The only in-place change: `protect`.
                        efs::set_protected(aws, &p, s.protected).await?;
                        p
                    }
                    None => {
                        let mut t = t.clone();
                        if s.keep_on_down {
                            t.insert(tags::DATA.to_string(), "true".to_string());
                        }
                        efs::create_file_system(aws, s, &t).await?
                    }
                };
                let what = format!("file system {id} to be available");
                self.wait_state(
                    &r.id,
                    &what,
                    Duration::from_secs(600),
                    Some("available"),
                    || efs::file_system_state(aws, &id),
                )
                .await?;
                id
            }
            Spec::MountTarget(s) => match physical {
                Some(p) => p,
                None => {
                    let fs = self
                        .need(&s.file_system, "efs:CreateMountTarget")?
                        .physical_id;
                    let sgs = self.ids(&s.security_groups, "efs:CreateMountTarget")?;
                    let id = efs::create_mount_target(aws, &fs, &s.subnet_id, sgs).await?;
                    let what = format!("mount target {id} in {} to be available", s.subnet_id);
                    self.wait_state(
                        &r.id,
                        &what,
                        Duration::from_secs(600),
                        Some("available"),
                        || efs::mount_target_state(aws, &id),
                    )
                    .await?;
                    id
                }
            },
            Spec::TargetGroup(s) => match physical {
                Some(arn) if !create => {
                    elbv2::update_target_group(aws, &arn, s).await?;
                    arn
                }
                _ => elbv2::create_target_group(aws, s, &t).await?,
            },
            Spec::LoadBalancer(s) => {
                let sgs = self.ids(&s.security_groups, "elbv2:CreateLoadBalancer")?;
                let (arn, dns) = match (&actual, create) {
                    (Some(a), false) => {
                        elbv2::set_load_balancer_security_groups(aws, &a.physical_id, sgs).await?;
                        let dns = match &a.details {
                            Details::LoadBalancer { dns_name, .. } => dns_name.clone(),
                            _ => String::new(),
                        };
                        (a.physical_id.clone(), dns)
                    }
                    _ => elbv2::create_load_balancer(aws, s, sgs, &t).await?,
                };
                let what = format!("load balancer {} to be active", s.name);
                self.wait_state(
                    &r.id,
                    &what,
                    Duration::from_secs(900),
                    Some("active"),
                    || elbv2::load_balancer_state(aws, &arn),
                )
                .await?;
                self.remember(&r.id, known(arn.clone(), &[("dns", Some(dns))]));
                return Ok(Some(arn));
            }
            Spec::Listener(s) => {
                let tg = match &s.action {
                    ListenerAction::Forward(tg) => {
                        Some(self.need(tg, "elbv2:CreateListener")?.physical_id)
                    }
                    ListenerAction::RedirectHttps => None,
                };
                match physical {
                    Some(arn) if !create => {
                        elbv2::modify_listener(aws, &arn, s, tg.as_deref()).await?;
                        arn
                    }
                    _ => {
                        let lb = self
                            .need(&s.load_balancer, "elbv2:CreateListener")?
                            .physical_id;
                        elbv2::create_listener(aws, &lb, s, tg.as_deref(), &t).await?
                    }
                }
            }
            Spec::LaunchTemplate(s) => {
                let sgs = self.ids(&s.security_groups, "ec2:CreateLaunchTemplate")?;
                let hash = crate::plan::diff::launch_template_hash(s);
                match physical {
                    Some(id) if !create => {
                        let v = ec2::new_launch_template_version(aws, &id, s, sgs).await?;
                        attrs.push(("version", Some(v.to_string())));
                        let mut tag = self.image_tags(&s.image_id);
                        tag.insert(tags::SPEC_HASH.to_string(), hash);
                        ec2::set_tags(aws, &id, &tag).await?;
                        self.reporter.event(&Event::Info {
                            message: format!(
                                "{}: launch template {id} version {v} is the new default",
                                r.id
                            ),
                        });
                        id
                    }
                    _ => {
                        let mut t = t.clone();
                        t.insert(tags::SPEC_HASH.to_string(), hash);
                        t.extend(self.image_tags(&s.image_id));
                        // A new template's only version is 1.
                        attrs.push(("version", Some("1".to_string())));
                        ec2::create_launch_template(aws, s, sgs, &t).await?
                    }
                }
            }
            Spec::AutoScalingGroup(s) => {
                let template =
                    self.need(&s.launch_template, "autoscaling:CreateAutoScalingGroup")?;
                let lt = template.physical_id.clone();
                // The group runs a numbered version (AWS rolls a failed refresh back only
                // then); `$Default` when the template's version is unknown.
                let version = template
                    .attrs
                    .get("version")
                    .cloned()
                    .unwrap_or_else(|| "$Default".to_string());
                if create {
                    let tgs = self.ids(&s.target_groups, "autoscaling:CreateAutoScalingGroup")?;
                    let mut t = t.clone();
                    t.insert(tags::DESIRED.to_string(), s.desired.to_string());
                    // The launch template's instance profile may have been created a moment ago.
                    self.retry_fresh(&r.id, "the launch template's instance profile", || {
                        autoscaling::create_group(aws, s, &lt, &version, tgs.clone(), &t)
                    })
                    .await?;
                } else {
                    // Only a change of the stack's desired capacity is applied: the live value
                    // belongs to the scaling policy between runs.
                    let applied = actual
                        .as_ref()
                        .and_then(|a| a.tags.get(tags::DESIRED))
                        .and_then(|d| d.parse::<u32>().ok());
                    let desired = (applied != Some(s.desired)).then_some(s.desired);
                    let runs = match actual.as_ref().map(|a| &a.details) {
                        Some(Details::AutoScalingGroup {
                            launch_template_version,
                            ..
                        }) => launch_template_version.clone(),
                        _ => "$Default".to_string(),
                    };
                    let updated = self
                        .lt_updated
                        .lock()
                        .map(|u| u.contains(&s.launch_template))
                        .unwrap_or(false);
                    // A template made in this run (replaced): the group's old one is gone.
                    let renewed = self
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
                        autoscaling::set_group_tag(
                            aws,
                            &s.name,
                            tags::DESIRED,
                            &s.desired.to_string(),
                        )
                        .await?;
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
                                self.reporter.event(&Event::Info {
                                    message: format!("{}: rolling instance refresh {id} to launch template version {version} started (min healthy {}%{}); `iac status` shows its progress", r.id, s.min_healthy_percent, if rollback { format!(", rolls back to version {runs} if it fails") } else { String::new() }),
                                });
                            }
                            // The group takes the new version at once; its instances get it
                            // when they are replaced.
                            Some(autoscaling::RefreshesMissing { why, first }) => {
                                autoscaling::update_group(aws, s, &lt, &version, None).await?;
                                if first {
                                    self.reporter.event(&Event::Warning {
                                        message: format!("the endpoint does not implement instance refreshes ({why}); a group takes its new launch template version at once and its instances get it when they are replaced"),
                                    });
                                }
                                self.reporter.event(&Event::Info {
                                    message: format!("{}: now on launch template version {version}, without an instance refresh", r.id),
                                });
                            }
                        }
                    }
                }
                s.name.clone()
            }
            Spec::ScalingPolicy(s) => {
                let group = self
                    .need(&s.group, "autoscaling:PutScalingPolicy")?
                    .physical_id;
                autoscaling::put_cpu_policy(aws, s, &group).await?;
                s.name.clone()
            }
            other => {
                return Err(AwsError::state(
                    "apply",
                    ErrorClass::Other,
                    format!("{} ({}) has no provider", r.id, other.kind()),
                ))
            }
        };
        self.remember(&r.id, known(out.clone(), &attrs));
        Ok(Some(out))
    }

    /// Deletes one alb-asg resource and waits until it is gone.
    pub(super) async fn delete_alb(&self, o: &Observed) -> Result<(), AwsError> {
        let aws = &self.aws;
        let id = &o.physical_id;
        let long = Duration::from_secs(40 * 60);
        match (&o.kind, &o.details) {
            (Kind::ScalingPolicy, Details::ScalingPolicy { group, .. }) => {
                let name = if id.starts_with("arn:") {
                    format!("{group}-cpu")
                } else {
                    id.clone()
                };
                autoscaling::delete_policy(aws, group, &name).await
            }
            (Kind::AutoScalingGroup, _) => {
                autoscaling::delete_group(aws, id).await?;
                let what = format!("Auto Scaling group {id} and its instances to be gone");
                self.wait_state(&o.id, &what, Duration::from_secs(1200), None, || async {
                    Ok(if autoscaling::group_exists(aws, id).await? {
                        Some("deleting".to_string())
                    } else {
                        None
                    })
                })
                .await
            }
            (Kind::LaunchTemplate, _) => ec2::delete_launch_template(aws, id).await,
            (Kind::Listener, _) => elbv2::delete_listener(aws, id).await,
            (Kind::LoadBalancer, _) => {
                elbv2::delete_load_balancer(aws, id).await?;
                self.wait_state(
                    &o.id,
                    &format!("load balancer {id} to be gone"),
                    Duration::from_secs(900),
                    None,
                    || elbv2::load_balancer_state(aws, id),
                )
                .await
            }
            (Kind::TargetGroup, _) => {
                self.retry_in_use(&o.id, &format!("target group {id} to be free"), || {
                    elbv2::delete_target_group(aws, id)
                })
                .await
            }
            (Kind::DbInstance, _) => {
                rds::delete_instance(aws, id).await?;
                self.wait_state(
                    &o.id,
                    &format!("Aurora instance {id} to be deleted"),
                    long,
                    None,
                    || rds::instance_state(aws, id),
                )
                .await
            }
            (Kind::DbCluster, _) => {
                let snapshot =
                    (!self.skip_final_snapshot).then(|| format!("{id}-final-{}", unix_now()));
                rds::delete_cluster(aws, id, snapshot.as_deref()).await?;
                if let Some(snap) = &snapshot {
                    self.reporter.event(&Event::Info {
                        message: format!("{}: final snapshot {snap} kept (restore it with the RDS console or CLI)", o.id),
                    });
                }
                self.wait_state(
                    &o.id,
                    &format!("Aurora cluster {id} to be deleted"),
                    long,
                    None,
                    || async { Ok(rds::cluster_state(aws, id).await?.map(|x| x.0)) },
                )
                .await
            }
            (Kind::DbSubnetGroup, _) => {
                self.retry_in_use(&o.id, &format!("DB subnet group {id} to be free"), || {
                    rds::delete_subnet_group(aws, id)
                })
                .await
            }
            (Kind::MountTarget, _) => {
                efs::delete_mount_target(aws, id).await?;
                self.wait_state(
                    &o.id,
                    &format!("mount target {id} to be deleted"),
                    Duration::from_secs(600),
                    None,
                    || efs::mount_target_state(aws, id),
                )
                .await
            }
            (Kind::FileSystem, _) => {
                self.retry_in_use(&o.id, &format!("file system {id} to be free"), || {
                    efs::delete_file_system(aws, id)
                })
                .await
            }
            _ => Ok(()),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
