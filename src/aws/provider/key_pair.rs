//! Key pairs imported from `instance.public_key_file` (a key the stack only names is looked up,
//! never managed). Key names are unique in a region and kept across a replacement, so the old
//! key goes before the new one is imported.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::ResourceType;

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::aws::ec2::{of_stack, stack_filter, tag_map, tag_spec};
use crate::aws::error::{sdk as err, AwsError, ErrorClass};
use crate::aws::{tags, Aws};
use crate::plan::compare::{kind_changed, Compare, Context};
use crate::plan::diff::short_hash;
use crate::plan::*;

pub struct KeyPairs;

#[async_trait::async_trait]
impl Provider for KeyPairs {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::KeyPair]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(discover_key_pairs(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let Spec::KeyPair(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let mut t = cx.tags_for(&r.id, r.kind());
        t.insert(tags::KEY_FINGERPRINT.to_string(), fingerprint(s));
        import_key_pair(&cx.aws, &s.key_name, &s.public_key, &t)
            .await
            .map_err(|e| {
                if e.is(ErrorClass::AlreadyExists) {
                    AwsError::state("ec2:ImportKeyPair", ErrorClass::AlreadyExists, format!("a key pair named `{}` exists and was not imported by this stack; drop `public_key_file` to use it as is, or pick another name", s.key_name))
                } else {
                    e
                }
            })?;
        cx.remember(&r.id, Known::id(&s.key_name));
        Ok(Some(s.key_name.clone()))
    }

    /// A key pair's material cannot change: the plan replaces it instead.
    async fn update(
        &self,
        _cx: &Applier,
        _r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        Ok(Some(actual.physical_id.clone()))
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        delete_key_pair(&cx.aws, &o.physical_id).await
    }

    fn deletes_before_replacing(&self) -> bool {
        true
    }
}

/// Key pairs tagged with the stack (only imported ones; existing keys named by the stack are
/// not the stack's to delete).
pub async fn discover_key_pairs(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_key_pairs()
        .filters(stack_filter(stack))
        .send()
        .await
        .map_err(err("ec2:DescribeKeyPairs"))?;
    Ok(out
        .key_pairs()
        .iter()
        .filter(|k| of_stack(k.tags(), stack))
        .filter_map(|k| {
            let t = tag_map(k.tags());
            let fingerprint_tag = t.get(tags::KEY_FINGERPRINT).cloned();
            Observed::tagged(
                t,
                Kind::KeyPair,
                k.key_name()?.to_string(),
                "available".to_string(),
                Details::KeyPair { fingerprint_tag },
            )
        })
        .collect())
}

pub async fn import_key_pair(
    aws: &Aws,
    name: &str,
    public_key: &str,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    aws.ec2
        .import_key_pair()
        .key_name(name)
        .public_key_material(aws_smithy_types::Blob::new(public_key.trim().as_bytes()))
        .tag_specifications(tag_spec(ResourceType::KeyPair, tags_))
        .send()
        .await
        .map_err(err("ec2:ImportKeyPair"))?;
    Ok(name.to_string())
}

pub async fn delete_key_pair(aws: &Aws, name: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_key_pair()
        .key_name(name)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteKeyPair"))
}

/// The public key's fingerprint, tagged on the key pair when it is imported.
fn fingerprint(s: &KeyPairSpec) -> String {
    short_hash(s.public_key.trim().as_bytes())
}

impl Compare for KeyPairSpec {
    /// The public key is compared by the fingerprint tag written at import: a new key is a new
    /// key pair.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::KeyPair { fingerprint_tag } = &found.details else {
            return kind_changed();
        };
        if fingerprint_tag.as_deref() == Some(fingerprint(self).as_str()) {
            Action::Keep
        } else {
            Action::Replace {
                reasons: vec!["public key changed".to_string()],
            }
        }
    }
}
