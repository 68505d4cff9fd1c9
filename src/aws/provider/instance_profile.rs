//! The IAM role and instance profile of `instance_profile: create` (least privilege: the
//! policies the tier declares, nothing else). Its spec hash is tagged on the role.

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::aws::error::AwsError;
use crate::aws::{iam, tags, Aws};
use crate::plan::compare::{kind_changed, update_if, Compare, Context};
use crate::plan::diff::short_hash;
use crate::plan::*;

pub struct InstanceProfiles;

fn spec_hash(s: &InstanceProfileSpec) -> String {
    short_hash(serde_json::to_string(s).unwrap_or_default().as_bytes())
}

#[async_trait::async_trait]
impl Provider for InstanceProfiles {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::InstanceProfile]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(iam::discover(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let Spec::InstanceProfile(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let mut t = cx.tags_for(&r.id, r.kind());
        t.insert(tags::SPEC_HASH.to_string(), spec_hash(s));
        iam::create(&cx.aws, s, &t).await?;
        cx.remember(&r.id, Known::id(&s.name));
        Ok(Some(s.name.clone()))
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        _actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let Spec::InstanceProfile(s) = &r.spec else {
            return Err(not_mine(r));
        };
        iam::put_policies(&cx.aws, s).await?;
        iam::tag_role(&cx.aws, &s.name, tags::SPEC_HASH, &spec_hash(s)).await?;
        cx.remember(&r.id, Known::id(&s.name));
        Ok(Some(s.name.clone()))
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let Details::InstanceProfile { role, .. } = &o.details else {
            return Ok(());
        };
        iam::delete(&cx.aws, &o.physical_id, role.as_deref()).await
    }
}

impl Compare for InstanceProfileSpec {
    /// The role's policies are compared by the hash tagged on the role when they were written.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::InstanceProfile { policy_hash, .. } = &found.details else {
            return kind_changed();
        };
        update_if(
            if policy_hash.as_deref() == Some(spec_hash(self).as_str()) {
                vec![]
            } else {
                vec!["role policies changed".to_string()]
            },
        )
    }
}
