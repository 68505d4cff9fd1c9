//! IAM: the role and instance profile `iac` creates for `instance_profile: create`. Found again
//! through their path, `/iac/<stack>/`.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;
use serde_json::{json, Value};

use super::error::{sdk as err, AwsError, ErrorClass, IgnoreNotFound};
use super::{tags, Aws};
use crate::plan::{
    Details, InstanceProfileSpec, Kind, Observed, PoolGrant, ResourceId, RoleGrants,
};

/// The trust policy: EC2 instances may assume the role.
const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// The name of the role's inline policy.
const INLINE_POLICY: &str = "iac-stack-access";

/// What the Systems Manager agent needs for Run Command, and nothing more: registering and
/// heartbeating (`UpdateInstanceInformation`), the association poll it makes whether or not
/// there are any, and the message channels commands arrive and answer through. This replaces
/// the managed `AmazonSSMManagedInstanceCore`, which also reads every parameter in the account.
pub const RUN_COMMAND_ACTIONS: &[&str] = &[
    "ssm:UpdateInstanceInformation",
    "ssm:ListInstanceAssociations",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
];

fn param_arn(name: &str) -> String {
    format!("arn:aws:ssm:*:*:parameter/{}", name.trim_start_matches('/'))
}

/// `{"aws:RequestTag/k": v, ...}` (or `aws:ResourceTag`) for every tag of `tags`.
fn tag_conditions(kind: &str, tags: &BTreeMap<String, String>) -> serde_json::Map<String, Value> {
    tags.iter()
        .map(|(k, v)| (format!("aws:{kind}/{k}"), Value::from(v.as_str())))
        .collect()
}

/// The role's one policy document, made from what its tier declared. Every right to change
/// something names its resources or carries a condition; only reads that IAM cannot scope
/// (EC2's Describe calls) are on `*`.
pub fn policy_document(g: &RoleGrants) -> Value {
    let mut statements = vec![json!({
        "Sid": "RunCommandAgent",
        "Effect": "Allow",
        "Action": RUN_COMMAND_ACTIONS,
        "Resource": "*",
    })];
    let mut reads: Vec<String> = g
        .reads
        .iter()
        .chain(&g.writes)
        .map(|n| param_arn(n))
        .collect();
    reads.sort();
    reads.dedup();
    if !reads.is_empty() {
        statements.push(json!({
            "Sid": "ReadParameters",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:GetParameters"],
            "Resource": reads,
        }));
    }
    if !g.writes.is_empty() {
        statements.push(json!({
            "Sid": "WriteParameters",
            "Effect": "Allow",
            "Action": ["ssm:PutParameter"],
            "Resource": g.writes.iter().map(|n| param_arn(n)).collect::<Vec<_>>(),
        }));
    }
    if let Some(path) = &g.boot_reports {
        // Write-only, and only parameters named like an instance under the stack's boot path.
        // IAM has no policy variable that resolves to the caller's bare instance id:
        // `${ec2:SourceInstanceARN}` is the whole instance ARN and `${aws:userid}` is
        // `<role id>:<instance id>`, and a parameter name can hold no `:`. So the prefix is
        // the narrowest grant: an instance of the stack could overwrite another's report, and
        // nothing else.
        statements.push(json!({
            "Sid": "PublishBootReport",
            "Effect": "Allow",
            "Action": ["ssm:PutParameter"],
            "Resource": param_arn(&format!("{path}i-*")),
        }));
    }
    if let Some(cluster) = &g.db_secret_of {
        // RDS names its secrets `rds!cluster-<uuid>` and tags them with the cluster's ARN: the
        // tag is what ties a secret to this stack's cluster.
        statements.push(json!({
            "Sid": "ReadDatabaseSecret",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": "arn:aws:secretsmanager:*:*:secret:rds!cluster-*",
            "Condition": {"StringLike": {
                "aws:ResourceTag/aws:rds:primaryDBClusterArn": format!("arn:aws:rds:*:*:cluster:{cluster}"),
            }},
        }));
    }
    if let Some(p) = &g.pool {
        statements.extend(pool_statements(p));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The pool's rights: RunInstances only through a launch template (`ec2:LaunchTemplate` is
/// present only then), only the template tagged as the pool's, and only for instances and
/// volumes whose request carries the pool's tags; tags only as part of that launch; terminate
/// only what carries the pool's tags; pass only the pool's own role.
fn pool_statements(p: &PoolGrant) -> Vec<Value> {
    let from_a_template =
        json!({"ArnLike": {"ec2:LaunchTemplate": "arn:aws:ec2:*:*:launch-template/*"}});
    let mut tagged_request = serde_json::Map::new();
    tagged_request.insert(
        "ArnLike".to_string(),
        json!({"ec2:LaunchTemplate": "arn:aws:ec2:*:*:launch-template/*"}),
    );
    tagged_request.insert(
        "StringEquals".to_string(),
        Value::Object(tag_conditions("RequestTag", &p.pool_tags)),
    );
    vec![
        json!({
            "Sid": "LaunchTaggedPoolInstances",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
            "Condition": tagged_request,
        }),
        json!({
            "Sid": "LaunchFromThePoolTemplate",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": ["arn:aws:ec2:*:*:launch-template/*"],
            "Condition": {"StringEquals": tag_conditions("ResourceTag", &p.template_tags)},
        }),
        json!({
            "Sid": "LaunchIntoTheTemplatesNetwork",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": [
                "arn:aws:ec2:*:*:subnet/*",
                "arn:aws:ec2:*:*:network-interface/*",
                "arn:aws:ec2:*:*:security-group/*",
                "arn:aws:ec2:*:*:key-pair/*",
                "arn:aws:ec2:*::image/*",
            ],
            "Condition": from_a_template,
        }),
        json!({
            "Sid": "TagOnlyAtLaunch",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        }),
        json!({
            "Sid": "TerminatePoolInstances",
            "Effect": "Allow",
            "Action": ["ec2:TerminateInstances"],
            "Resource": ["arn:aws:ec2:*:*:instance/*"],
            "Condition": {"StringEquals": tag_conditions("ResourceTag", &p.pool_tags)},
        }),
        json!({
            "Sid": "FindThePool",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeInstances",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcs",
            ],
            "Resource": "*",
        }),
        json!({
            "Sid": "PassOnlyThePoolRole",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": format!("arn:aws:iam::*:role{}{}", p.pass_role_path, p.pass_role),
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        }),
    ]
}

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
                    .unwrap_or_else(|| p.instance_profile_name().to_string()),
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

/// Writes the role's one inline policy, and detaches any managed policy (a role made by an
/// older `iac` had `AmazonSSMManagedInstanceCore`, which reads every parameter in the account).
pub async fn put_policies(aws: &Aws, s: &InstanceProfileSpec) -> Result<(), AwsError> {
    detach_managed(aws, &s.name).await?;
    aws.iam
        .put_role_policy()
        .role_name(&s.name)
        .policy_name(INLINE_POLICY)
        .policy_document(policy_document(&s.grants).to_string())
        .send()
        .await
        .map(|_| ())
        .map_err(err("iam:PutRolePolicy"))
}

async fn detach_managed(aws: &Aws, role: &str) -> Result<(), AwsError> {
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
    Ok(())
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
    detach_managed(aws, role).await?;
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
