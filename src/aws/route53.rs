//! Route 53: the stack's A record. Records cannot be tagged, so the Elastic IP they point at
//! carries an `iac:dns-record` tag naming them.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use super::error::{AwsError, ErrorClass};
use super::Aws;

/// `name` as Route 53 answers it: absolute and in lowercase (DNS names are case-insensitive;
/// asking in the answer's spelling also finds it where a listing starts at the given name).
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// Whether two DNS names are the same: Route 53 compares names case-insensitively and answers
/// them in lowercase, so `Books.Example.org` in a stack file is `books.example.org.` there.
fn same_name(answered: &str, wanted: &str) -> bool {
    fqdn(answered).eq_ignore_ascii_case(&fqdn(wanted))
}

/// Resolves a hosted zone given as an id (`Z…`) or a name to its bare id.
pub async fn resolve_zone(aws: &Aws, zone: &str) -> Result<String, AwsError> {
    let looks_like_id = zone.starts_with('Z') && !zone.contains('.');
    if looks_like_id {
        let out = aws
            .route53
            .get_hosted_zone()
            .id(zone)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("route53:GetHostedZone", e))?;
        return Ok(out
            .hosted_zone()
            .map(|z| bare_id(z.id()))
            .unwrap_or_else(|| zone.to_string()));
    }
    let out = aws
        .route53
        .list_hosted_zones_by_name()
        .dns_name(fqdn(zone))
        .max_items(5)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("route53:ListHostedZonesByName", e))?;
    out.hosted_zones()
        .iter()
        .find(|z| same_name(z.name(), zone) && !z.config().is_some_and(|c| c.private_zone()))
        .map(|z| bare_id(z.id()))
        .ok_or_else(|| {
            AwsError::state(
                "route53:ListHostedZonesByName",
                ErrorClass::NotFound,
                format!(
                    "no public hosted zone named {zone}; create it or remove `domain.hosted_zone`"
                ),
            )
        })
}

fn bare_id(id: &str) -> String {
    id.trim_start_matches("/hostedzone/").to_string()
}

/// The values of the A record `name`, if it exists.
pub async fn get_a_record(
    aws: &Aws,
    zone_id: &str,
    name: &str,
) -> Result<Option<(Vec<String>, i64)>, AwsError> {
    let out = aws
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .start_record_name(fqdn(name))
        .start_record_type(RrType::A)
        .max_items(1)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("route53:ListResourceRecordSets", e))?;
    Ok(out
        .resource_record_sets()
        .iter()
        .find(|r| same_name(r.name(), name) && r.r#type() == &RrType::A)
        .map(|r| {
            (
                r.resource_records()
                    .iter()
                    .map(|v| v.value().to_string())
                    .collect(),
                r.ttl().unwrap_or(300),
            )
        }))
}

/// A request the SDK's builders refused (a required field missing): a bug in the request.
fn invalid(e: aws_sdk_route53::error::BuildError) -> AwsError {
    AwsError::state(
        "route53:ChangeResourceRecordSets",
        ErrorClass::InvalidInput,
        e.to_string(),
    )
}

async fn change(
    aws: &Aws,
    zone_id: &str,
    action: ChangeAction,
    name: &str,
    values: &[String],
    ttl: i64,
) -> Result<(), AwsError> {
    let records = values
        .iter()
        .map(|v| ResourceRecord::builder().value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let set = ResourceRecordSet::builder()
        .name(fqdn(name))
        .r#type(RrType::A)
        .ttl(ttl)
        .set_resource_records(Some(records))
        .build()
        .map_err(invalid)?;
    let batch = ChangeBatch::builder()
        .changes(
            Change::builder()
                .action(action)
                .resource_record_set(set)
                .build()
                .map_err(invalid)?,
        )
        .comment("managed by iac")
        .build()
        .map_err(invalid)?;
    aws.route53
        .change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(batch)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("route53:ChangeResourceRecordSets", e))
}

/// Creates or updates the A record.
pub async fn upsert_a(
    aws: &Aws,
    zone_id: &str,
    name: &str,
    ip: &str,
    ttl: i64,
) -> Result<(), AwsError> {
    change(
        aws,
        zone_id,
        ChangeAction::Upsert,
        name,
        &[ip.to_string()],
        ttl,
    )
    .await
}

/// Deletes the A record if it exists (Route 53 wants the exact current values).
pub async fn delete_a(aws: &Aws, zone_id: &str, name: &str) -> Result<(), AwsError> {
    match get_a_record(aws, zone_id, name).await {
        Ok(Some((values, ttl))) => {
            change(aws, zone_id, ChangeAction::Delete, name, &values, ttl).await
        }
        Ok(None) => Ok(()),
        Err(e) if e.is(ErrorClass::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::same_name;

    #[test]
    fn names_are_compared_without_case_or_trailing_dot() {
        assert!(same_name("books.example.org.", "Books.Example.ORG"));
        assert!(same_name("books.example.org", "books.example.org."));
        assert!(!same_name("books.example.org.", "book.example.org"));
    }
}
