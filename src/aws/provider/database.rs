//! Aurora: the DB subnet group, the cluster (its password a secret RDS manages) and its
//! instance. The instance is created while the cluster is still creating (AWS allows it), and
//! nothing waits for the cluster itself: its dependents need only its endpoint and secret,
//! assigned at once.

use std::collections::BTreeSet;

use std::time::Duration;

use super::{not_mine, wait_err, Applier, Discovered, Known, Provider};
use crate::apply::events::Event;
use crate::apply::wait::{self, Backoff, Poll};
use crate::aws::error::{AwsError, ErrorClass};
use crate::aws::{rds, Aws};
use crate::plan::compare::{differs, kind_changed, protection, update_if, Compare, Context};
use crate::plan::*;

pub struct Databases;

/// How long an Aurora cluster or instance may take to be created or deleted.
const LONG: Duration = Duration::from_secs(40 * 60);

#[async_trait::async_trait]
impl Provider for Databases {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::DbSubnetGroup, Kind::DbCluster, Kind::DbInstance]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(rds::discover(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let aws = &cx.aws;
        let t = cx.tags_for(&r.id, r.kind());
        let known = match &r.spec {
            Spec::DbSubnetGroup(s) => {
                rds::create_subnet_group(aws, s, &t).await?;
                Known::id(&s.name)
            }
            Spec::DbCluster(s) => {
                let sgs = cx.ids(&s.security_groups, "rds:CreateDBCluster")?;
                let subnet_group = cx.need(&s.subnet_group, "rds:CreateDBCluster")?.physical_id;
                rds::create_cluster(aws, s, &subnet_group, sgs, &t).await?;
                // What its dependents need now is its endpoint and password secret, known from
                // the start. The parameters that hand them to the instances wait for the
                // database instances to be available (see the tier).
                let (endpoint, secret) = cluster_names(cx, &r.id, &s.identifier).await?;
                Known::id(&s.identifier)
                    .with_some("endpoint", endpoint)
                    .with_some("secret", secret)
            }
            Spec::DbInstance(s) => {
                let cluster = cx.need(&s.cluster, "rds:CreateDBInstance")?.physical_id;
                // Created while its cluster is still creating; should RDS refuse that for a
                // while (InvalidDBClusterStateFault), it is asked again.
                let what = format!("Aurora cluster {cluster} to take instance {}", s.identifier);
                wait::until(
                    &r.id,
                    &what,
                    LONG,
                    Backoff::default(),
                    cx.reporter.as_ref(),
                    || async {
                        match rds::create_instance(aws, s, &cluster, &t).await {
                            Ok(()) => Ok(Poll::Ready(())),
                            Err(e) if e.code.as_deref() == Some("InvalidDBClusterStateFault") => {
                                Ok(Poll::Pending(e.message))
                            }
                            Err(e) => Err(e),
                        }
                    },
                )
                .await
                .map_err(|e| wait_err(e, "rds:CreateDBInstance"))?;
                Known::id(&s.identifier)
            }
            _ => return Err(not_mine(r)),
        };
        let id = known.physical_id.clone();
        cx.remember(&r.id, known);
        Ok(Some(id))
    }

    /// An instance available (what reads the database waits for it).
    async fn wait_ready(
        &self,
        cx: &Applier,
        r: &Resource,
        physical_id: &str,
    ) -> Result<(), AwsError> {
        if r.kind() != Kind::DbInstance {
            return Ok(());
        }
        let what = format!("Aurora instance {physical_id} to be available");
        cx.wait_state(&r.id, &what, LONG, Some("available"), || {
            rds::instance_state(&cx.aws, physical_id)
        })
        .await
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let aws = &cx.aws;
        let known = match &r.spec {
            Spec::DbSubnetGroup(s) => {
                rds::update_subnet_group(aws, s).await?;
                Known::id(&s.name)
            }
            Spec::DbCluster(s) => {
                let sgs = cx.ids(&s.security_groups, "rds:CreateDBCluster")?;
                rds::modify_cluster(aws, s, sgs).await?;
                let what = format!("Aurora cluster {} to be available", s.identifier);
                cx.wait_state(&r.id, &what, LONG, Some("available"), || async {
                    Ok(rds::cluster_state(aws, &s.identifier).await?.map(|x| x.0))
                })
                .await?;
                let (endpoint, secret) = match rds::cluster_state(aws, &s.identifier).await? {
                    Some((_, e, sec)) => (e, sec),
                    None => (None, None),
                };
                Known::id(&s.identifier)
                    .with_some("endpoint", endpoint)
                    .with_some("secret", secret)
            }
            Spec::DbInstance(_) => Known::id(&actual.physical_id),
            _ => return Err(not_mine(r)),
        };
        let id = known.physical_id.clone();
        cx.remember(&r.id, known);
        Ok(Some(id))
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let (aws, id) = (&cx.aws, &o.physical_id);
        match o.kind {
            Kind::DbInstance => rds::delete_instance(aws, id).await,
            Kind::DbCluster => {
                let snapshot =
                    (!cx.skip_final_snapshot).then(|| format!("{id}-final-{}", unix_now()));
                rds::delete_cluster(aws, id, snapshot.as_deref()).await?;
                if let Some(snap) = &snapshot {
                    cx.reporter.event(&Event::Info {
                        message: format!("{}: final snapshot {snap} kept (restore it with the RDS console or CLI)", o.id),
                    });
                }
                Ok(())
            }
            Kind::DbSubnetGroup => {
                cx.retry_in_use(&o.id, &format!("DB subnet group {id} to be free"), || {
                    rds::delete_subnet_group(aws, id)
                })
                .await
            }
            _ => Ok(()),
        }
    }

    /// An instance gone before its cluster goes, a cluster gone before its subnet group.
    async fn wait_gone(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let (aws, id) = (&cx.aws, &o.physical_id);
        match o.kind {
            Kind::DbInstance => {
                cx.wait_state(
                    &o.id,
                    &format!("Aurora instance {id} to be deleted"),
                    LONG,
                    None,
                    || rds::instance_state(aws, id),
                )
                .await
            }
            Kind::DbCluster => {
                cx.wait_state(
                    &o.id,
                    &format!("Aurora cluster {id} to be deleted"),
                    LONG,
                    None,
                    || async { Ok(rds::cluster_state(aws, id).await?.map(|x| x.0)) },
                )
                .await
            }
            _ => Ok(()),
        }
    }
}

/// Waits until a new Aurora cluster has its writer endpoint and the ARN of the password
/// secret RDS manages (both assigned while it is still creating), and returns them.
async fn cluster_names(
    cx: &Applier,
    id: &ResourceId,
    cluster: &str,
) -> Result<(Option<String>, Option<String>), AwsError> {
    let aws = &cx.aws;
    let what = format!("Aurora cluster {cluster}'s endpoint and password secret");
    wait::until(
        id,
        &what,
        LONG,
        Backoff::default(),
        cx.reporter.as_ref(),
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Compare for DbSubnetGroupSpec {
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::DbSubnetGroup { subnet_ids } = &found.details else {
            return kind_changed();
        };
        let want: BTreeSet<&String> = self.subnet_ids.iter().collect();
        let have: BTreeSet<&String> = subnet_ids.iter().collect();
        update_if(if want == have {
            vec![]
        } else {
            vec!["subnets changed".to_string()]
        })
    }
}

impl Compare for DbClusterSpec {
    /// Protection and backup retention change in place; nothing here replaces a database.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::DbCluster {
            backup_retention_days,
            deletion_protection,
            ..
        } = &found.details
        else {
            return kind_changed();
        };
        let mut reasons = Vec::new();
        if *deletion_protection != self.deletion_protection {
            reasons.push(protection(self.deletion_protection));
        }
        differs(
            &mut reasons,
            "backup retention (days)",
            *backup_retention_days,
            self.backup_retention_days,
        );
        update_if(reasons)
    }
}

impl Compare for DbInstanceSpec {
    /// Kept as found: its cluster holds what the stack file sets.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        match found.details {
            Details::DbInstance { .. } => Action::Keep,
            _ => kind_changed(),
        }
    }
}
