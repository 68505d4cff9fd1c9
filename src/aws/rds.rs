//! RDS: DB subnet groups, Aurora MySQL clusters and their instances.
//!
//! Physical ids are names: the subnet group name, the cluster identifier, the instance
//! identifier (RDS stores all three in lower case).

use std::collections::BTreeMap;

use aws_sdk_rds::types::Tag;
use futures_util::{stream, StreamExt, TryStreamExt};

use super::error::{sdk as err, AwsError, ErrorClass, IgnoreNotFound};
use super::tags;
use super::Aws;
use crate::plan::{DbClusterSpec, DbInstanceSpec, DbSubnetGroupSpec, Details, Kind, Observed};

fn to_tags(t: &BTreeMap<String, String>) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_map(t: &[Tag]) -> BTreeMap<String, String> {
    tags::collect(t.iter().map(|t| (t.key(), t.value())))
}

/// An `Observed` when the tags belong to `stack` and carry a logical id.
fn observed(
    stack: &str,
    t: BTreeMap<String, String>,
    kind: Kind,
    physical_id: String,
    state: String,
    details: Details,
) -> Option<Observed> {
    if !tags::belongs(t.get(tags::STACK).map(String::as_str), stack) {
        return None;
    }
    Observed::tagged(t, kind, physical_id, state, details)
}

async fn list_tags(aws: &Aws, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let out = aws
        .rds
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(err("rds:ListTagsForResource"))?;
    Ok(tag_map(out.tag_list()))
}

/// DB subnet groups, Aurora clusters and DB instances tagged `iac:stack=<stack>`.
///
/// Clusters and instances carry their tags in the describe output; subnet groups do not, so
/// each subnet group named after the stack costs one ListTagsForResource. Clusters and
/// instances being deleted are not listed.
pub async fn discover(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    // The three listings at the same time.
    let clusters = async {
        aws.rds
            .describe_db_clusters()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(err("rds:DescribeDBClusters"))
    };
    let instances = async {
        aws.rds
            .describe_db_instances()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(err("rds:DescribeDBInstances"))
    };
    let (mut found, clusters, instances) =
        tokio::try_join!(subnet_groups(aws, stack), clusters, instances)?;

    for c in clusters.iter().flat_map(|p| p.db_clusters()) {
        let Some(id) = c.db_cluster_identifier() else {
            continue;
        };
        let state = c.status().unwrap_or_default().to_string();
        if state == "deleting" {
            continue;
        }
        let details = Details::DbCluster {
            endpoint: c.endpoint().map(str::to_string),
            secret_arn: c
                .master_user_secret()
                .and_then(|s| s.secret_arn())
                .map(str::to_string),
            engine_version: c.engine_version().unwrap_or_default().to_string(),
            backup_retention_days: c.backup_retention_period().unwrap_or(0),
            encrypted: c.storage_encrypted().unwrap_or(false),
            deletion_protection: c.deletion_protection().unwrap_or(false),
        };
        found.extend(observed(
            stack,
            tag_map(c.tag_list()),
            Kind::DbCluster,
            id.to_string(),
            state,
            details,
        ));
    }

    for i in instances.iter().flat_map(|p| p.db_instances()) {
        let Some(id) = i.db_instance_identifier() else {
            continue;
        };
        let state = i.db_instance_status().unwrap_or_default().to_string();
        if state == "deleting" {
            continue;
        }
        let details = Details::DbInstance {
            instance_class: i.db_instance_class().unwrap_or_default().to_string(),
            cluster: i.db_cluster_identifier().map(str::to_string),
        };
        found.extend(observed(
            stack,
            tag_map(i.tag_list()),
            Kind::DbInstance,
            id.to_string(),
            state,
            details,
        ));
    }
    Ok(found)
}

/// The stack's DB subnet groups. Their listing has no tags: those of the groups named after the
/// stack ([`tags::named_for`]) are asked together, not those of every group in the region.
async fn subnet_groups(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .rds
        .describe_db_subnet_groups()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("rds:DescribeDBSubnetGroups"))?;
    let groups: Vec<_> = pages
        .iter()
        .flat_map(|p| p.db_subnet_groups())
        .filter_map(|g| Some((g, g.db_subnet_group_name()?, g.db_subnet_group_arn()?)))
        .filter(|(_, name, _)| tags::named_for(name, stack))
        .collect();
    // At most 8 at a time: stacks named `shop`, `shop-a`, `shop-b`, ... all match `shop-`.
    let arns: Vec<String> = groups.iter().map(|(_, _, arn)| arn.to_string()).collect();
    let tagged: Vec<_> = stream::iter(arns.into_iter().map(|arn| tags_unless_gone(aws, arn)))
        .buffered(8)
        .try_collect()
        .await?;
    Ok(groups
        .into_iter()
        .zip(tagged)
        .filter_map(|((g, name, _), t)| {
            let mut subnet_ids: Vec<String> = g
                .subnets()
                .iter()
                .filter_map(|s| s.subnet_identifier().map(str::to_string))
                .collect();
            subnet_ids.sort();
            observed(
                stack,
                t?,
                Kind::DbSubnetGroup,
                name.to_string(),
                g.subnet_group_status().unwrap_or("Complete").to_string(),
                Details::DbSubnetGroup { subnet_ids },
            )
        })
        .collect())
}

/// The tags of a resource; `None` when it was deleted since it was listed.
async fn tags_unless_gone(
    aws: &Aws,
    arn: String,
) -> Result<Option<BTreeMap<String, String>>, AwsError> {
    list_tags(aws, &arn).await.ignore_not_found()
}

/// Creates a DB subnet group, tagged at creation. Returns its name as RDS stores it.
pub async fn create_subnet_group(
    aws: &Aws,
    s: &DbSubnetGroupSpec,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let out = aws
        .rds
        .create_db_subnet_group()
        .db_subnet_group_name(&s.name)
        .db_subnet_group_description(&s.description)
        .set_subnet_ids(Some(s.subnet_ids.clone()))
        .set_tags(Some(to_tags(tags_)))
        .send()
        .await
        .map_err(err("rds:CreateDBSubnetGroup"))?;
    Ok(out
        .db_subnet_group()
        .and_then(|g| g.db_subnet_group_name())
        .unwrap_or(&s.name)
        .to_string())
}

/// Sets the subnets and description of a subnet group.
pub async fn update_subnet_group(aws: &Aws, s: &DbSubnetGroupSpec) -> Result<(), AwsError> {
    aws.rds
        .modify_db_subnet_group()
        .db_subnet_group_name(&s.name)
        .db_subnet_group_description(&s.description)
        .set_subnet_ids(Some(s.subnet_ids.clone()))
        .send()
        .await
        .map(|_| ())
        .map_err(err("rds:ModifyDBSubnetGroup"))
}

pub async fn delete_subnet_group(aws: &Aws, name: &str) -> Result<(), AwsError> {
    aws.rds
        .delete_db_subnet_group()
        .db_subnet_group_name(name)
        .send()
        .await
        .map(|_| ())
        .map_err(err("rds:DeleteDBSubnetGroup"))
}

/// Whether new clusters can be created with `engine` `version` in the region: DescribeDBEngineVersions
/// lists only available versions unless asked for all, so a deprecated one is not found.
pub async fn engine_version_available(
    aws: &Aws,
    engine: &str,
    version: &str,
) -> Result<bool, AwsError> {
    let out = aws
        .rds
        .describe_db_engine_versions()
        .engine(engine)
        .engine_version(version)
        .send()
        .await;
    match out {
        Ok(o) => Ok(!o.db_engine_versions().is_empty()),
        Err(e) => match AwsError::from_sdk("rds:DescribeDBEngineVersions", e) {
            e if e.is(ErrorClass::NotFound) => Ok(false),
            e => Err(e),
        },
    }
}

/// Creates an Aurora cluster: storage encrypted, master password managed by RDS in Secrets
/// Manager (never seen by `iac`), tags copied to snapshots, no deletion protection, tagged at
/// creation. Returns (writer endpoint, secret ARN); on real AWS either may still be missing
/// right after creation.
pub async fn create_cluster(
    aws: &Aws,
    s: &DbClusterSpec,
    subnet_group: &str,
    security_group_ids: Vec<String>,
    tags_: &BTreeMap<String, String>,
) -> Result<(Option<String>, Option<String>), AwsError> {
    let out = aws
        .rds
        .create_db_cluster()
        .db_cluster_identifier(&s.identifier)
        .engine(&s.engine)
        .set_engine_version(s.engine_version.clone())
        .database_name(&s.database_name)
        .master_username(&s.master_username)
        .manage_master_user_password(true)
        .storage_encrypted(true)
        .db_subnet_group_name(subnet_group)
        .set_vpc_security_group_ids(Some(security_group_ids))
        .backup_retention_period(s.backup_retention_days)
        .port(i32::from(s.port))
        .copy_tags_to_snapshot(true)
        .deletion_protection(s.deletion_protection)
        .set_tags(Some(to_tags(tags_)))
        .send()
        .await
        .map_err(err("rds:CreateDBCluster"))?;
    let c = out.db_cluster();
    Ok((
        c.and_then(|c| c.endpoint()).map(str::to_string),
        c.and_then(|c| c.master_user_secret())
            .and_then(|m| m.secret_arn())
            .map(str::to_string),
    ))
}

/// (status, writer endpoint, secret ARN) of a cluster; `None` when it does not exist.
pub async fn cluster_state(
    aws: &Aws,
    id: &str,
) -> Result<Option<(String, Option<String>, Option<String>)>, AwsError> {
    let out = aws
        .rds
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await
        .map_err(err("rds:DescribeDBClusters"))
        .ignore_not_found()?;
    Ok(out.and_then(|o| {
        o.db_clusters().first().map(|c| {
            (
                c.status().unwrap_or_default().to_string(),
                c.endpoint().map(str::to_string),
                c.master_user_secret()
                    .and_then(|m| m.secret_arn())
                    .map(str::to_string),
            )
        })
    }))
}

/// In-place changes, applied immediately: backup retention and security groups.
pub async fn modify_cluster(
    aws: &Aws,
    s: &DbClusterSpec,
    security_group_ids: Vec<String>,
) -> Result<(), AwsError> {
    aws.rds
        .modify_db_cluster()
        .db_cluster_identifier(&s.identifier)
        .backup_retention_period(s.backup_retention_days)
        .set_vpc_security_group_ids(Some(security_group_ids))
        .deletion_protection(s.deletion_protection)
        .apply_immediately(true)
        .send()
        .await
        .map(|_| ())
        .map_err(err("rds:ModifyDBCluster"))
}

/// Deletes a cluster (its instances must be gone). `final_snapshot`: `Some(id)` takes a final
/// cluster snapshot with that identifier; `None` skips it.
pub async fn delete_cluster(
    aws: &Aws,
    id: &str,
    final_snapshot: Option<&str>,
) -> Result<(), AwsError> {
    let req = aws.rds.delete_db_cluster().db_cluster_identifier(id);
    let req = match final_snapshot {
        Some(snap) => req
            .skip_final_snapshot(false)
            .final_db_snapshot_identifier(snap),
        None => req.skip_final_snapshot(true),
    };
    req.send()
        .await
        .map(|_| ())
        .map_err(err("rds:DeleteDBCluster"))
}

/// Creates a DB instance in a cluster (it inherits the cluster's subnet group, security groups
/// and storage encryption), never publicly accessible, tagged at creation.
pub async fn create_instance(
    aws: &Aws,
    s: &DbInstanceSpec,
    cluster_id: &str,
    tags_: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    aws.rds
        .create_db_instance()
        .db_instance_identifier(&s.identifier)
        .db_instance_class(&s.instance_class)
        .engine(&s.engine)
        .db_cluster_identifier(cluster_id)
        .publicly_accessible(false)
        .set_tags(Some(to_tags(tags_)))
        .send()
        .await
        .map(|_| ())
        .map_err(err("rds:CreateDBInstance"))
}

/// The status of a DB instance; `None` when it does not exist.
pub async fn instance_state(aws: &Aws, id: &str) -> Result<Option<String>, AwsError> {
    let out = aws
        .rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .map_err(err("rds:DescribeDBInstances"))
        .ignore_not_found()?;
    Ok(out.and_then(|o| {
        o.db_instances()
            .first()
            .map(|i| i.db_instance_status().unwrap_or_default().to_string())
    }))
}

/// Deletes a cluster member. Aurora instances take no final snapshot of their own (the data is
/// the cluster's), so no snapshot parameter is sent; automated backups are kept.
pub async fn delete_instance(aws: &Aws, id: &str) -> Result<(), AwsError> {
    aws.rds
        .delete_db_instance()
        .db_instance_identifier(id)
        .delete_automated_backups(false)
        .send()
        .await
        .map(|_| ())
        .map_err(err("rds:DeleteDBInstance"))
}

/// Identifiers of the cluster snapshots (manual and automated) whose identifier starts with
/// `prefix`, sorted.
pub async fn cluster_snapshots(aws: &Aws, prefix: &str) -> Result<Vec<String>, AwsError> {
    let pages = aws
        .rds
        .describe_db_cluster_snapshots()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("rds:DescribeDBClusterSnapshots"))?;
    let mut out: Vec<String> = pages
        .iter()
        .flat_map(|p| p.db_cluster_snapshots())
        .filter_map(|s| s.db_cluster_snapshot_identifier())
        .filter(|id| id.starts_with(prefix))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(mut e: AwsError) -> AwsError {
        e.class = e
            .code
            .as_deref()
            .map(super::super::error::classify_code)
            .unwrap_or(e.class);
        e
    }

    fn with_code(code: &str) -> AwsError {
        classified(AwsError {
            op: "rds:Test".to_string(),
            class: ErrorClass::Other,
            code: Some(code.to_string()),
            message: String::new(),
        })
    }

    #[test]
    fn rds_codes() {
        for c in [
            "DBClusterNotFoundFault",
            "DBSubnetGroupNotFoundFault",
            "DBClusterSnapshotNotFoundFault",
            "DBInstanceNotFound",
        ] {
            assert!(with_code(c).is(ErrorClass::NotFound), "{c}");
        }
        for c in [
            "InvalidDBClusterStateFault",
            "InvalidDBInstanceState",
            "InvalidDBSubnetGroupStateFault",
        ] {
            assert!(with_code(c).is(ErrorClass::DependencyViolation), "{c}");
        }
        assert!(with_code("DBClusterAlreadyExistsFault").is(ErrorClass::AlreadyExists));
        assert!(with_code("DBSubnetGroupAlreadyExists").is(ErrorClass::AlreadyExists));
        assert!(with_code("InvalidParameterValue").is(ErrorClass::InvalidInput));
    }
}
