//! Launch templates (an Auto Scaling group's, the custom scaler's pool and monitor): a change
//! is a new version made the default, which the group then rolls out.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{InstanceType, ResourceType, VolumeType};
use base64::Engine;

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::apply::events::Event;
use crate::aws::ec2::{self, of_stack, stack_filter, tag_map, tag_spec};
use crate::aws::error::{sdk as err, AwsError, ErrorClass};
use crate::aws::{tags, Aws};
use crate::plan::compare::{kind_changed, update_if, Compare, Context};
use crate::plan::diff::launch_template_hash;
use crate::plan::*;

pub struct LaunchTemplates;

#[async_trait::async_trait]
impl Provider for LaunchTemplates {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::LaunchTemplate]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(discover_launch_templates(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let Spec::LaunchTemplate(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let sgs = cx.ids(&s.security_groups, "ec2:CreateLaunchTemplate")?;
        let mut t = cx.tags_for(&r.id, r.kind());
        t.insert(tags::SPEC_HASH.to_string(), launch_template_hash(s));
        t.extend(cx.image_tags(&s.image_id));
        let id = create_launch_template(&cx.aws, s, sgs, &t).await?;
        // A new template's only version is 1.
        cx.remember(&r.id, Known::id(&id).with("version", "1"));
        Ok(Some(id))
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let Spec::LaunchTemplate(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let id = &actual.physical_id;
        let sgs = cx.ids(&s.security_groups, "ec2:CreateLaunchTemplate")?;
        let v = new_launch_template_version(&cx.aws, id, s, sgs).await?;
        let mut tag = cx.image_tags(&s.image_id);
        tag.insert(tags::SPEC_HASH.to_string(), launch_template_hash(s));
        ec2::set_tags(&cx.aws, id, &tag).await?;
        cx.reporter.event(&Event::Info {
            message: format!(
                "{}: launch template {id} version {v} is the new default",
                r.id
            ),
        });
        cx.remember(&r.id, Known::id(id).with("version", &v.to_string()));
        Ok(Some(id.clone()))
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        delete_launch_template(&cx.aws, &o.physical_id).await
    }
}

fn launch_template_data(
    s: &LaunchTemplateSpec,
    security_group_ids: Vec<String>,
) -> aws_sdk_ec2::types::RequestLaunchTemplateData {
    use aws_sdk_ec2::types::{
        LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
        LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
        LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData,
    };
    let mut d = RequestLaunchTemplateData::builder()
        .image_id(&s.image_id)
        .instance_type(InstanceType::from(s.instance_type.as_str()))
        .set_security_group_ids(Some(security_group_ids))
        .user_data(base64::engine::general_purpose::STANDARD.encode(&s.user_data))
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::Required)
                .http_put_response_hop_limit(i32::from(s.metadata_hop_limit))
                .build(),
        )
        .block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(&s.root_device)
                .ebs(
                    LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_size(s.disk_gb as i32)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        );
    if let Some(k) = &s.key_name {
        d = d.key_name(k);
    }
    if let Some(p) = &s.instance_profile {
        d = d.iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(p)
                .build(),
        );
    }
    d.build()
}

/// Launch templates tagged with the stack; `iac:spec-hash` says what their latest version holds.
pub async fn discover_launch_templates(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .ec2
        .describe_launch_templates()
        .filters(stack_filter(stack))
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("ec2:DescribeLaunchTemplates"))?;
    Ok(pages
        .iter()
        .flat_map(|p| p.launch_templates())
        .filter(|lt| of_stack(lt.tags(), stack))
        .filter_map(|lt| {
            let t = tag_map(lt.tags());
            let details = Details::LaunchTemplate {
                spec_hash: t.get(tags::SPEC_HASH).cloned(),
                latest_version: lt.latest_version_number().unwrap_or(0),
                default_version: lt.default_version_number().unwrap_or(0),
            };
            Observed::tagged(
                t,
                Kind::LaunchTemplate,
                lt.launch_template_id()?.to_string(),
                "available".to_string(),
                details,
            )
        })
        .collect())
}

/// Creates a launch template (version 1), tagged at creation. Returns its id.
pub async fn create_launch_template(
    aws: &Aws,
    s: &LaunchTemplateSpec,
    security_group_ids: Vec<String>,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .create_launch_template()
        .launch_template_name(&s.name)
        .version_description("iac")
        .launch_template_data(launch_template_data(s, security_group_ids))
        .tag_specifications(tag_spec(ResourceType::LaunchTemplate, tags_))
        .send()
        .await
        .map_err(err("ec2:CreateLaunchTemplate"))?;
    out.launch_template()
        .and_then(|lt| lt.launch_template_id())
        .map(str::to_string)
        .ok_or_else(|| {
            AwsError::state(
                "ec2:CreateLaunchTemplate",
                ErrorClass::Other,
                "no launch template id in the answer",
            )
        })
}

/// Adds a version and makes it the default. Returns the new version number.
pub async fn new_launch_template_version(
    aws: &Aws,
    id: &str,
    s: &LaunchTemplateSpec,
    security_group_ids: Vec<String>,
) -> Result<i64, AwsError> {
    let out = aws
        .ec2
        .create_launch_template_version()
        .launch_template_id(id)
        .version_description("iac")
        .launch_template_data(launch_template_data(s, security_group_ids))
        .send()
        .await
        .map_err(err("ec2:CreateLaunchTemplateVersion"))?;
    let version = out
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| {
            AwsError::state(
                "ec2:CreateLaunchTemplateVersion",
                ErrorClass::Other,
                "no version number in the answer",
            )
        })?;
    aws.ec2
        .modify_launch_template()
        .launch_template_id(id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(err("ec2:ModifyLaunchTemplate"))?;
    Ok(version)
}

pub async fn delete_launch_template(aws: &Aws, id: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_launch_template()
        .launch_template_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteLaunchTemplate"))
}

impl Compare for LaunchTemplateSpec {
    /// A change is a new version of the template, compared by the hash tagged on it.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::LaunchTemplate { spec_hash, .. } = &found.details else {
            return kind_changed();
        };
        update_if(
            if spec_hash.as_deref() == Some(launch_template_hash(self).as_str()) {
                vec![]
            } else {
                vec!["image, type, user-data or settings changed: new template version, then a rolling instance refresh".to_string()]
            },
        )
    }
}
