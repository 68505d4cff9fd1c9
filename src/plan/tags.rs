//! Identity tags: how `iac` finds what it made without any local state. Plain data, here so
//! that tiers can declare them and providers write and read them.

use std::collections::BTreeMap;

use super::resource::{Kind, ResourceId};

pub const STACK: &str = "iac:stack";
pub const ID: &str = "iac:id";
pub const KIND: &str = "iac:kind";
pub const MANAGED_BY: &str = "managed-by";
pub const SPEC_HASH: &str = "iac:spec-hash";
pub const USER_DATA_SHA: &str = "iac:user-data-sha";
pub const KEY_FINGERPRINT: &str = "iac:key-fingerprint";
/// On an Auto Scaling group: the desired capacity `iac` last applied. The live value moves with
/// the scaling policy; only a change of the stack's own value is applied again.
pub const DESIRED: &str = "iac:desired";
/// On data that `down` keeps unless `--delete-data`.
pub const DATA: &str = "iac:data";
/// On data the stack file protects (`protect: true`): `down` refuses the stack while any
/// resource carries it. Aurora clusters use their own deletion protection instead.
pub const PROTECTED: &str = "iac:protected";
/// On instances and launch templates: the stack's `instance.image` (an alias or an AMI id) and
/// the image id it resolved to when they were made. With `image_policy: pinned`, the next run
/// keeps that id even when the alias has moved on (see `provider::pin_image`).
pub const IMAGE: &str = "iac:image";
pub const IMAGE_ID: &str = "iac:image-id";
/// AWS's own tag on the instances an Auto Scaling group launches: the group's name.
pub const ASG_NAME: &str = "aws:autoscaling:groupName";
/// On an instance a group or the scaler launched: its role in the stack (its name in `iac logs`,
/// what `iac logs --role` selects).
pub const ROLE: &str = "iac:role";
/// On an Elastic IP: the Route 53 record pointing at it, `<zone id>/<name>` (records have no tags).
pub const DNS_RECORD: &str = "iac:dns-record";
/// On an Elastic IP, beside [`DNS_RECORD`]: the record's logical id.
pub const DNS_ID: &str = "iac:dns-id";
/// The logical id of a record written before [`DNS_ID`] existed (every tier called it `dns`).
pub const LEGACY_DNS_ID: &str = "dns";

/// Whether a resource whose `iac:stack` tag is `value` belongs to `stack`. Tag filters (EC2's
/// `tag:` filters, the tagging API) read `*` and `?` as wildcards; every lookup by tag checks the
/// returned tag with this as well, so a pattern that slipped past validation matches nothing.
pub fn belongs(value: Option<&str>, stack: &str) -> bool {
    value == Some(stack)
}

/// Whether a resource named `name` may belong to `stack`, before its tags are read. The names
/// `iac` gives its security groups, load balancers, target groups, RDS identifiers, launch
/// templates, groups and profiles start with `<stack>-` (a test holds every example's graph to
/// it). Listings without tags (RDS subnet groups, load balancers, target groups) are narrowed
/// with this, so that the tags of other stacks' and the user's resources are never asked for;
/// the tags still decide ([`belongs`]): `shop-` also matches stack `shop-test`'s names.
pub fn named_for(name: &str, stack: &str) -> bool {
    name.strip_prefix(stack)
        .is_some_and(|rest| rest.starts_with('-'))
}

/// A resource's tags as SDKs list them (key and value, each optional), as a map. An entry with
/// no key is left out; one with no value maps to "".
pub fn collect<'a>(
    pairs: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((k?.to_string(), v.unwrap_or_default().to_string())))
        .collect()
}

/// The tags everything `iac` makes for `stack` carries (its resources, the instances a scaler
/// launches, the lock): `extra`, the name `<stack>-<name>`, the stack and `managed-by`.
pub fn stack_tags(
    stack: &str,
    name: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut t = extra.clone();
    t.insert("Name".to_string(), format!("{stack}-{name}"));
    t.insert(STACK.to_string(), stack.to_string());
    t.insert(MANAGED_BY.to_string(), "iac".to_string());
    t
}

/// The tags every resource of `stack` carries, plus the user's extra tags.
pub fn identity(
    stack: &str,
    id: &ResourceId,
    kind: Kind,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut t = stack_tags(stack, id.as_str(), extra);
    t.insert(ID.to_string(), id.to_string());
    t.insert(KIND.to_string(), kind.as_str().to_string());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_name_belongs() {
        assert!(belongs(Some("bookstore-vm"), "bookstore-vm"));
        assert!(!belongs(Some("bookstore-vm"), "bookstore-*"));
        assert!(!belongs(Some("bookstore-vm"), "bookstore-?m"));
        assert!(!belongs(Some("bookstore-vm2"), "bookstore-vm"));
        assert!(!belongs(None, "bookstore-vm"));
    }

    #[test]
    fn a_name_after_the_stack_starts_with_its_name_and_a_hyphen() {
        assert!(named_for("shop-db", "shop"));
        assert!(
            named_for("shop-test-db", "shop"),
            "narrows; the tags decide"
        );
        assert!(!named_for("shop", "shop"));
        assert!(!named_for("shopping-db", "shop"));
        assert!(!named_for("default", "shop"));
        assert!(!named_for("other-shop-db", "shop"));
    }

    #[test]
    fn listed_tags_without_a_key_are_dropped_and_without_a_value_are_empty() {
        let t = collect([
            (Some(ID), Some("web-sg")),
            (None, Some("orphan")),
            (Some("Name"), None),
        ]);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[ID], "web-sg");
        assert_eq!(t["Name"], "");
    }

    #[test]
    fn only_what_carries_a_logical_id_is_observed() {
        use crate::plan::{Details, Observed};
        let details = Details::KeyPair {
            fingerprint_tag: None,
        };
        let found = |t| {
            Observed::tagged(
                t,
                Kind::KeyPair,
                "k".into(),
                "present".into(),
                details.clone(),
            )
        };
        let tagged = found(collect([(Some(ID), Some("key"))])).expect("tagged");
        assert_eq!(tagged.id, ResourceId::new("key"));
        assert_eq!(tagged.tags[ID], "key");
        assert_eq!(found(collect([(Some(STACK), Some("s"))])), None);
    }
}
