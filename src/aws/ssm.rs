//! SSM Parameter Store: image aliases and secret references.

use super::error::{AwsError, ErrorClass};
use super::Aws;

/// The value of a plain (non-secret) parameter, such as the public AMI parameters.
pub async fn get_plain(aws: &Aws, name: &str) -> Result<Option<String>, AwsError> {
    match aws
        .ssm
        .get_parameter()
        .name(name)
        .with_decryption(false)
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

/// Whether a parameter exists, without reading its value.
pub async fn exists(aws: &Aws, name: &str) -> Result<bool, AwsError> {
    let out = aws
        .ssm
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .values(name)
                .build()
                .map_err(|e| {
                    AwsError::state(
                        "ssm:DescribeParameters",
                        ErrorClass::InvalidInput,
                        e.to_string(),
                    )
                })?,
        )
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ssm:DescribeParameters", e))?;
    Ok(!out.parameters().is_empty())
}
