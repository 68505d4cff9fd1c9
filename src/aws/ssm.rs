//! SSM: image aliases, secret references, the stack's own parameters and Run Command.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ssm::types::{ParameterType, Tag};

use super::error::{AwsError, ErrorClass};
use super::{tags, Aws};

use crate::plan::{Details, Kind, Observed, ResourceId};

pub use crate::stack::validate::SSM_STANDARD_VALUE_MAX as STANDARD_VALUE_MAX;

/// The path under which a stack's parameters live; discovery lists it, `down` empties it.
pub fn stack_path(stack: &str) -> String {
    format!("/iac/{stack}/")
}

/// The value of a plain (non-secret) parameter, such as the public AMI parameters.
pub async fn get_plain(aws: &Aws, name: &str) -> Result<Option<String>, AwsError> {
    get(aws, name, false).await
}

/// The decrypted value of a SecureString (the scaler's token, which its monitor needs). Never
/// print or log it.
pub async fn get_secure(aws: &Aws, name: &str) -> Result<Option<String>, AwsError> {
    get(aws, name, true).await
}

async fn get(aws: &Aws, name: &str, decrypt: bool) -> Result<Option<String>, AwsError> {
    match aws
        .ssm
        .get_parameter()
        .name(name)
        .with_decryption(decrypt)
        .send()
        .await
    {
        Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
        Err(e) => match AwsError::from_sdk("ssm:GetParameter", e) {
            e if e.is(ErrorClass::NotFound) => Ok(None),
            e => Err(e),
        },
    }
}

/// Which of `names` exist, without reading their values: one `DescribeParameters` per 50 names
/// (the most a filter takes; none for no names), its pages followed. A name matches with or
/// without its leading `/`.
pub async fn existing(aws: &Aws, names: &[&str]) -> Result<BTreeSet<String>, AwsError> {
    const OP: &str = "ssm:DescribeParameters";
    let bare = |n: &str| n.trim_start_matches('/').to_string();
    let mut found = BTreeSet::new();
    for chunk in names.chunks(50) {
        let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .set_values(Some(chunk.iter().map(|n| n.to_string()).collect()))
            .build()
            .map_err(|e| AwsError::state(OP, ErrorClass::InvalidInput, e.to_string()))?;
        let pages = aws
            .ssm
            .describe_parameters()
            .parameter_filters(filter)
            .max_results(50)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsError::from_sdk(OP, e))?;
        found.extend(
            pages
                .iter()
                .flat_map(|p| p.parameters())
                .filter_map(|p| p.name())
                .map(bare),
        );
    }
    Ok(names
        .iter()
        .filter(|n| found.contains(&bare(n)))
        .map(|n| n.to_string())
        .collect())
}

/// The stack's parameters (everything under its path, including ones instances wrote, such as
/// swarm join tokens). SecureString values are not decrypted.
pub async fn discover(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let path = stack_path(stack);
    // The stack lock lives under the same path but is no resource of the stack: `up` must not
    // delete it as unwanted, `down` removes it last (see `lock`).
    let lock = super::lock::name(stack);
    // Boot reports are the instances' own (see `boot_report`): `down` deletes them apart.
    let reports = super::boot_report::path(stack);
    let pages = aws
        .ssm
        .get_parameters_by_path()
        .path(&path)
        .recursive(true)
        .with_decryption(false)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("ssm:GetParametersByPath", e))?;
    Ok(pages
        .iter()
        .flat_map(|p| p.parameters())
        .filter(|p| p.name() != Some(lock.as_str()))
        .filter(|p| !p.name().is_some_and(|n| n.starts_with(&reports)))
        .filter_map(|p| {
            let name = p.name()?.to_string();
            let secure = p.r#type() == Some(&ParameterType::SecureString);
            let leaf = name.strip_prefix(&path).unwrap_or(&name).to_string();
            Some(Observed {
                id: ResourceId::new(leaf),
                kind: Kind::SsmParameter,
                physical_id: name,
                state: "present".to_string(),
                details: Details::SsmParameter {
                    value: if secure {
                        None
                    } else {
                        p.value().map(str::to_string)
                    },
                    secure,
                },
                tags: BTreeMap::new(),
            })
        })
        .collect())
}

/// Creates (tagged) or overwrites a parameter. The value is never logged.
pub async fn put(
    aws: &Aws,
    name: &str,
    value: &str,
    secure: bool,
    create_tags: Option<&BTreeMap<String, String>>,
) -> Result<(), AwsError> {
    let mut req = aws
        .ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(if secure {
            ParameterType::SecureString
        } else {
            ParameterType::String
        })
        .description("managed by iac");
    match create_tags {
        Some(t) => {
            let mut tag_list = Vec::new();
            for (k, v) in t {
                tag_list.push(Tag::builder().key(k).value(v).build().map_err(|e| {
                    AwsError::state("ssm:PutParameter", ErrorClass::InvalidInput, e.to_string())
                })?);
            }
            req = req.set_tags(Some(tag_list));
        }
        None => req = req.overwrite(true),
    }
    req.send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("ssm:PutParameter", e))
}

pub async fn delete(aws: &Aws, name: &str) -> Result<(), AwsError> {
    aws.ssm
        .delete_parameter()
        .name(name)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("ssm:DeleteParameter", e))
}

/// Runs a shell script on an instance through SSM Run Command; returns the command id.
pub async fn run_shell(
    aws: &Aws,
    instance_id: &str,
    script: &str,
    comment: &str,
) -> Result<String, AwsError> {
    let out = aws
        .ssm
        .send_command()
        .instance_ids(instance_id)
        .document_name("AWS-RunShellScript")
        .comment(comment.chars().take(100).collect::<String>())
        .parameters("commands", vec![script.to_string()])
        .timeout_seconds(1800)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ssm:SendCommand", e))?;
    Ok(out
        .command()
        .and_then(|c| c.command_id())
        .unwrap_or_default()
        .to_string())
}

/// A random password for generated SecureStrings: 32 characters from the OS's random source.
pub fn generate_password() -> Result<String, AwsError> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| {
            AwsError::state(
                "ssm:PutParameter",
                ErrorClass::Other,
                format!("cannot read /dev/urandom: {e}"),
            )
        })?;
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Tags of a stack parameter: the identity tags (so the tagging API and the console show them).
pub fn param_tags(
    stack: &str,
    id: &ResourceId,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    tags::identity(stack, id, Kind::SsmParameter, extra)
}

/// Where a Run Command invocation stands.
pub enum Invocation {
    Running(String),
    Succeeded(String),
    Failed(String),
}

/// The status of a command on one instance (stdout on success, stderr on failure).
pub async fn invocation(
    aws: &Aws,
    command_id: &str,
    instance_id: &str,
) -> Result<Invocation, AwsError> {
    let out = match aws
        .ssm
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(instance_id)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) => {
            let e = AwsError::from_sdk("ssm:GetCommandInvocation", e);
            // Right after SendCommand the invocation may not be visible yet.
            if e.code.as_deref() == Some("InvocationDoesNotExist") {
                return Ok(Invocation::Running("not started".to_string()));
            }
            return Err(e);
        }
    };
    let status = out
        .status()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    Ok(match status.as_str() {
        "Success" => Invocation::Succeeded(
            out.standard_output_content()
                .unwrap_or_default()
                .to_string(),
        ),
        "Failed" | "Cancelled" | "TimedOut" | "Cancelling" => Invocation::Failed(format!(
            "{status}: {}",
            out.standard_error_content().unwrap_or_default().trim()
        )),
        other => Invocation::Running(other.to_string()),
    })
}
