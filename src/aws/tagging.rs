//! Resource Groups Tagging API: the last check after `down` that nothing tagged is left.

use aws_sdk_resourcegroupstagging::types::TagFilter;

use super::error::AwsError;
use super::tags;
use super::Aws;

/// ARNs of every resource the tagging API knows with `iac:stack=<stack>`.
pub async fn tagged_arns(aws: &Aws, stack: &str) -> Result<Vec<String>, AwsError> {
    let pages = aws
        .tagging
        .get_resources()
        .tag_filters(TagFilter::builder().key(tags::STACK).values(stack).build())
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("tagging:GetResources", e))?;
    Ok(pages
        .iter()
        .flat_map(|p| p.resource_tag_mapping_list())
        .filter(|m| {
            let stack_tag = m.tags().iter().find(|t| t.key() == tags::STACK);
            tags::belongs(stack_tag.map(|t| t.value()), stack)
        })
        .filter_map(|m| m.resource_arn().map(str::to_string))
        .collect())
}
