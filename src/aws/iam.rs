//! IAM: the role and instance profile `iac` creates for `instance_profile: create`. Found again
//! through their path, `/iac/<stack>/`.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;

use super::error::{sdk as err, AwsError, ErrorClass, IgnoreNotFound};
use super::{tags, Aws};
use crate::plan::{Details, InstanceProfileSpec, Kind, Observed, ResourceId};

/// The trust policy: EC2 instances may assume the role.
const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// The name of the role's inline policy.
const INLINE_POLICY: &str = "iac-stack-access";

pub fn stack_path(stack: &str) -> String {
    format!("/iac/{stack}/")
}

fn iam_tags(t: &BTreeMap<String, String>) -> Result<Vec<Tag>, AwsError> {
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| AwsError::state("iam:Tag", ErrorClass::InvalidInput, e.to_string()))
        })
        .collect()
}

/// Instance profiles under the stack's path, with their role's `iac:spec-hash`.
pub async fn discover(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let out = aws
        .iam
        .list_instance_profiles()
        .path_prefix(stack_path(stack))
        .send()
        .await
        .map_err(err("iam:ListInstanceProfiles"))?;
    let mut found = Vec::new();
    // The path prefix is a filter AWS applies; check it again (emulators ignore it), together
    // with the role's stack tag, so a profile that is not the stack's is never touched.
    for p in out
        .instance_profiles()
        .iter()
        .filter(|p| p.path() == stack_path(stack))
    {
        let role = p.roles().first().map(|r| r.role_name().to_string());
        let mut t = BTreeMap::new();
        if let Some(role) = &role {
            let rt = aws
                .iam
                .list_role_tags()
                .role_name(role)
                .send()
                .await
                .map_err(err("iam:ListRoleTags"));
            if let Some(rt) = rt.ignore_not_found()? {
                t = rt
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect();
            }
        }
        if !tags::belongs(t.get(tags::STACK).map(String::as_str), stack) {
            continue;
        }
        let policy_hash = t.get(tags::SPEC_HASH).cloned();
        found.push(Observed {
            id: ResourceId::new(
                t.get(tags::ID)
                    .cloned()
                    .unwrap_or_else(|| crate::tiers::PROFILE.to_string()),
            ),
            kind: Kind::InstanceProfile,
            physical_id: p.instance_profile_name().to_string(),
            state: "available".to_string(),
            details: Details::InstanceProfile { role, policy_hash },
            tags: t,
        });
    }
    Ok(found)
}

/// Creates the role (tagged, with the policies) and the profile holding it. Idempotent: parts
/// left by an interrupted run are reused.
pub async fn create(
    aws: &Aws,
    s: &InstanceProfileSpec,
    t: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    let created = aws
        .iam
        .create_role()
        .role_name(&s.name)
        .path(&s.path)
        .assume_role_policy_document(TRUST_POLICY)
        .description("iac: instances of the stack")
        .set_tags(Some(iam_tags(t)?))
        .send()
        .await
        .map_err(err("iam:CreateRole"));
    if let Err(e) = created {
        if !e.is(ErrorClass::AlreadyExists) {
            return Err(e);
        }
    }
    put_policies(aws, s).await?;
    let profile = aws
        .iam
        .create_instance_profile()
        .instance_profile_name(&s.name)
        .path(&s.path)
        .set_tags(Some(iam_tags(t)?))
        .send()
        .await
        .map_err(err("iam:CreateInstanceProfile"));
    if let Err(e) = profile {
        if !e.is(ErrorClass::AlreadyExists) {
            return Err(e);
        }
    }
    let added = aws
        .iam
        .add_role_to_instance_profile()
        .instance_profile_name(&s.name)
        .role_name(&s.name)
        .send()
        .await
        .map_err(err("iam:AddRoleToInstanceProfile"));
    match added {
        // A profile holds one role: "limit exceeded" means ours is in it already.
        Err(e)
            if e.code.as_deref() != Some("LimitExceeded") && !e.is(ErrorClass::AlreadyExists) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Attaches the managed policies and writes the inline one.
pub async fn put_policies(aws: &Aws, s: &InstanceProfileSpec) -> Result<(), AwsError> {
    for arn in &s.managed_policies {
        aws.iam
            .attach_role_policy()
            .role_name(&s.name)
            .policy_arn(arn)
            .send()
            .await
            .map_err(err("iam:AttachRolePolicy"))?;
    }
    aws.iam
        .put_role_policy()
        .role_name(&s.name)
        .policy_name(INLINE_POLICY)
        .policy_document(&s.inline_policy)
        .send()
        .await
        .map(|_| ())
        .map_err(err("iam:PutRolePolicy"))
}

/// Records what the role's policies were made from.
pub async fn tag_role(aws: &Aws, role: &str, key: &str, value: &str) -> Result<(), AwsError> {
    let tag = Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(|e| AwsError::state("iam:TagRole", ErrorClass::InvalidInput, e.to_string()))?;
    aws.iam
        .tag_role()
        .role_name(role)
        .tags(tag)
        .send()
        .await
        .map(|_| ())
        .map_err(err("iam:TagRole"))
}

/// Removes the profile and its role with every policy. Parts already gone are fine.
pub async fn delete(aws: &Aws, name: &str, role: Option<&str>) -> Result<(), AwsError> {
    if let Some(role) = role {
        aws.iam
            .remove_role_from_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
            .map_err(err("iam:RemoveRoleFromInstanceProfile"))
            .ignore_not_found()?;
    }
    aws.iam
        .delete_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .map_err(err("iam:DeleteInstanceProfile"))
        .ignore_not_found()?;
    let role = role.unwrap_or(name);
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(err("iam:ListAttachedRolePolicies"))
        .ignore_not_found()?;
    for p in attached.iter().flat_map(|a| a.attached_policies()) {
        if let Some(arn) = p.policy_arn() {
            aws.iam
                .detach_role_policy()
                .role_name(role)
                .policy_arn(arn)
                .send()
                .await
                .map_err(err("iam:DetachRolePolicy"))
                .ignore_not_found()?;
        }
    }
    let inline = aws
        .iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(err("iam:ListRolePolicies"))
        .ignore_not_found()?;
    for p in inline.iter().flat_map(|a| a.policy_names()) {
        aws.iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(p)
            .send()
            .await
            .map_err(err("iam:DeleteRolePolicy"))
            .ignore_not_found()?;
    }
    aws.iam
        .delete_role()
        .role_name(role)
        .send()
        .await
        .map_err(err("iam:DeleteRole"))
        .ignore_not_found()?;
    Ok(())
}
