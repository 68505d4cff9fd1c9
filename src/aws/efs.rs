//! EFS: encrypted file systems and their mount targets.
//!
//! Physical ids: the file system id (`fs-…`) and the mount target id (`fsmt-…`). Mount targets
//! cannot be tagged; they are found through their file system, and their logical id is
//! `mount-<subnet id>`.

use std::collections::BTreeMap;

use aws_sdk_efs::types::{LifeCycleState, PerformanceMode, Tag, ThroughputMode};

use super::error::{sdk as err, AwsError, ErrorClass, IgnoreNotFound};
use super::tags;
use super::Aws;
use crate::plan::{Details, FileSystemSpec, Kind, Observed, ResourceId};

fn tag_map(t: &[Tag]) -> BTreeMap<String, String> {
    t.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

fn gone(state: &LifeCycleState) -> bool {
    matches!(state, LifeCycleState::Deleting | LifeCycleState::Deleted)
}

/// Mount targets of one file system, as described (paginated).
async fn mount_targets(
    aws: &Aws,
    fs_id: &str,
) -> Result<Vec<aws_sdk_efs::types::MountTargetDescription>, AwsError> {
    let pages = aws
        .efs
        .describe_mount_targets()
        .file_system_id(fs_id)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("efs:DescribeMountTargets"))?;
    Ok(pages
        .into_iter()
        .flat_map(|p| p.mount_targets.unwrap_or_default())
        .collect())
}

/// File systems tagged `iac:stack=<stack>` (logical id from `iac:id`) and their mount targets
/// (logical id `mount-<subnet id>`, no tags). Deleted and deleting ones are not listed.
pub async fn discover(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .efs
        .describe_file_systems()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("efs:DescribeFileSystems"))?;
    let mut found = Vec::new();
    for fs in pages.iter().flat_map(|p| p.file_systems()) {
        let t = tag_map(fs.tags());
        if !tags::belongs(t.get(tags::STACK).map(String::as_str), stack)
            || gone(fs.life_cycle_state())
        {
            continue;
        }
        let Some(id) = t.get(tags::ID).cloned() else {
            continue;
        };
        let fs_id = fs.file_system_id().to_string();
        let targets = match mount_targets(aws, &fs_id).await {
            Ok(m) => m,
            // Deleted between the two calls.
            Err(e) if e.is(ErrorClass::NotFound) => continue,
            Err(e) => return Err(e),
        };
        let keep_on_down = t.get(tags::DATA).is_some_and(|d| d == "true");
        let protected = t.get(tags::PROTECTED).is_some_and(|d| d == "true");
        found.push(Observed {
            id: ResourceId::new(id),
            kind: Kind::FileSystem,
            physical_id: fs_id.clone(),
            state: fs.life_cycle_state().as_str().to_string(),
            details: Details::FileSystem {
                encrypted: fs.encrypted().unwrap_or(false),
                keep_on_down,
                protected,
            },
            tags: t,
        });
        for m in targets.iter().filter(|m| !gone(m.life_cycle_state())) {
            found.push(Observed {
                id: ResourceId::mount_target(m.subnet_id()),
                kind: Kind::MountTarget,
                physical_id: m.mount_target_id().to_string(),
                state: m.life_cycle_state().as_str().to_string(),
                details: Details::MountTarget {
                    file_system_id: fs_id.clone(),
                    subnet_id: m.subnet_id().to_string(),
                },
                tags: BTreeMap::new(),
            });
        }
    }
    Ok(found)
}

/// The id of the file system created with `creation_token`, if any.
async fn file_system_by_token(aws: &Aws, creation_token: &str) -> Result<Option<String>, AwsError> {
    let out = aws
        .efs
        .describe_file_systems()
        .creation_token(creation_token)
        .send()
        .await
        .map_err(err("efs:DescribeFileSystems"))?;
    Ok(out
        .file_systems()
        .first()
        .map(|f| f.file_system_id().to_string()))
}

/// Creates an encrypted, general-purpose, elastic-throughput file system, tagged at creation
/// (plus `iac:data=true` when `keep_on_down`). Idempotent through the creation token: when a
/// file system with that token exists already, its id is returned.
pub async fn create_file_system(
    aws: &Aws,
    s: &FileSystemSpec,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let mut t = tags_.clone();
    if s.keep_on_down {
        t.insert(tags::DATA.to_string(), "true".to_string());
    }
    if s.protected {
        t.insert(tags::PROTECTED.to_string(), "true".to_string());
    }
    let tag_list = t
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            AwsError::state(
                "efs:CreateFileSystem",
                ErrorClass::InvalidInput,
                e.to_string(),
            )
        })?;
    let out = aws
        .efs
        .create_file_system()
        .creation_token(&s.creation_token)
        .encrypted(true)
        .performance_mode(PerformanceMode::GeneralPurpose)
        .throughput_mode(ThroughputMode::Elastic)
        .set_tags(Some(tag_list))
        .send()
        .await;
    match out {
        Ok(o) => Ok(o.file_system_id().to_string()),
        Err(e) => {
            let e = AwsError::from_sdk("efs:CreateFileSystem", e);
            if e.code.as_deref() != Some("FileSystemAlreadyExists") {
                return Err(e);
            }
            match file_system_by_token(aws, &s.creation_token).await? {
                Some(id) => Ok(id),
                None => Err(e),
            }
        }
    }
}

/// The LifeCycleState of a file system; `None` when it does not exist.
pub async fn file_system_state(aws: &Aws, id: &str) -> Result<Option<String>, AwsError> {
    let out = aws
        .efs
        .describe_file_systems()
        .file_system_id(id)
        .send()
        .await
        .map_err(err("efs:DescribeFileSystems"))
        .ignore_not_found()?;
    Ok(out.and_then(|o| {
        o.file_systems()
            .first()
            .map(|f| f.life_cycle_state().as_str().to_string())
    }))
}

/// Sets (`protect: true`) or removes the `iac:protected` tag of a file system.
pub async fn set_protected(aws: &Aws, id: &str, on: bool) -> Result<(), AwsError> {
    if on {
        let tag = Tag::builder()
            .key(tags::PROTECTED)
            .value("true")
            .build()
            .map_err(|e| {
                AwsError::state("efs:TagResource", ErrorClass::InvalidInput, e.to_string())
            })?;
        aws.efs
            .tag_resource()
            .resource_id(id)
            .tags(tag)
            .send()
            .await
            .map(|_| ())
            .map_err(err("efs:TagResource"))
    } else {
        aws.efs
            .untag_resource()
            .resource_id(id)
            .tag_keys(tags::PROTECTED)
            .send()
            .await
            .map(|_| ())
            .map_err(err("efs:UntagResource"))
    }
}

/// Deletes a file system (its mount targets must be gone: `FileSystemInUse` is classified as
/// a dependency violation, to retry).
pub async fn delete_file_system(aws: &Aws, id: &str) -> Result<(), AwsError> {
    aws.efs
        .delete_file_system()
        .file_system_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("efs:DeleteFileSystem"))
}

/// Creates a mount target of `fs_id` in `subnet_id`. Idempotent: when the file system already
/// has a mount target in that subnet, its id is returned.
pub async fn create_mount_target(
    aws: &Aws,
    fs_id: &str,
    subnet_id: &str,
    security_group_ids: Vec<String>,
) -> Result<String, AwsError> {
    let out = aws
        .efs
        .create_mount_target()
        .file_system_id(fs_id)
        .subnet_id(subnet_id)
        .set_security_groups(Some(security_group_ids))
        .send()
        .await
        .map_err(err("efs:CreateMountTarget"));
    match out {
        Ok(o) => Ok(o.mount_target_id().to_string()),
        Err(e) if e.code.as_deref() == Some("MountTargetConflict") => {
            let existing = mount_targets(aws, fs_id)
                .await?
                .into_iter()
                .find(|m| m.subnet_id() == subnet_id && !gone(m.life_cycle_state()));
            match existing {
                Some(m) => Ok(m.mount_target_id().to_string()),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The life-cycle state of every mount target of file system `fs`, by mount target id (none
/// once the file system is gone).
pub async fn mount_target_states(
    aws: &Aws,
    fs: &str,
) -> Result<BTreeMap<String, String>, AwsError> {
    Ok(mount_targets(aws, fs)
        .await
        .ignore_not_found()?
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m.mount_target_id().to_string(),
                m.life_cycle_state().as_str().to_string(),
            )
        })
        .collect())
}

pub async fn delete_mount_target(aws: &Aws, id: &str) -> Result<(), AwsError> {
    aws.efs
        .delete_mount_target()
        .mount_target_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("efs:DeleteMountTarget"))
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
            op: "efs:Test".to_string(),
            class: ErrorClass::Other,
            code: Some(code.to_string()),
            message: String::new(),
        })
    }

    #[test]
    fn efs_codes() {
        assert!(with_code("FileSystemNotFound").is(ErrorClass::NotFound));
        assert!(with_code("MountTargetNotFound").is(ErrorClass::NotFound));
        assert!(with_code("FileSystemInUse").is(ErrorClass::DependencyViolation));
        assert!(with_code("FileSystemAlreadyExists").is(ErrorClass::AlreadyExists));
        assert!(with_code("MountTargetConflict").is(ErrorClass::InvalidInput));
    }
}
