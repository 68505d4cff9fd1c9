//! desired × observed → plan. Pure: no I/O, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::compare::Context;
use super::managed::LaunchTemplateSpec;
use super::resource::*;
use super::{Action, Change, Plan};

/// Short content hash used in tags (`iac:spec-hash`, `iac:key-fingerprint`).
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The content hash a launch template's latest version is compared by.
pub fn launch_template_hash(s: &LaunchTemplateSpec) -> String {
    short_hash(serde_json::to_string(s).unwrap_or_default().as_bytes())
}

/// Hash of the instance settings that cannot change in place. Security groups are compared
/// separately (their ids are only known once they exist). The hop limit counts only when the
/// stack raises it, so instances made before it existed are not replaced for it.
pub fn instance_spec_hash(s: &InstanceSpec) -> String {
    let mut key = serde_json::json!({
        "type": s.instance_type,
        "image": s.image_id,
        "key": s.key_name,
        "subnet": s.subnet_id,
        "profile": s.instance_profile,
        "disk": s.disk_gb,
        "user_data": s.user_data_sha,
    });
    if s.metadata_hop_limit != 1 {
        key["metadata_hop_limit"] = s.metadata_hop_limit.into();
    }
    short_hash(key.to_string().as_bytes())
}

/// Computes the plan for `stack`.
pub fn diff(stack: &str, desired: &[Resource], actual: &[Observed]) -> Plan {
    let mut by_id: BTreeMap<(Kind, &ResourceId), Vec<&Observed>> = BTreeMap::new();
    for o in actual {
        by_id.entry((o.kind, &o.id)).or_default().push(o);
    }
    let mut changes: Vec<Change> = Vec::new();
    let mut extra: Vec<Change> = Vec::new();
    // Physical ids of resources that stay as they are, for resolving references.
    let mut kept_physical: BTreeMap<&ResourceId, &Observed> = BTreeMap::new();
    // Resources that will be new after `up` (created or replaced).
    let mut renewed: BTreeSet<&ResourceId> = BTreeSet::new();
    // Resources changed in place (a new launch template version, …).
    let mut updated: BTreeSet<&ResourceId> = BTreeSet::new();

    for r in desired {
        let found = by_id.remove(&(r.kind(), &r.id)).unwrap_or_default();
        let (chosen, duplicates) = choose(r, found);
        for d in duplicates {
            extra.push(Change {
                id: d.id.clone(),
                kind: d.kind,
                action: Action::Delete {
                    reason: format!("duplicate of {} (left by an interrupted run)", r.id),
                },
                desired: None,
                actual: Some(d.clone()),
            });
        }
        let action = match chosen {
            None if is_written_by_instances(r) => Action::Keep,
            None => Action::Create,
            Some(o) => r.spec.compare(
                o,
                &Context {
                    kept: &kept_physical,
                    renewed: &renewed,
                    updated: &updated,
                },
            ),
        };
        if matches!(action, Action::Update { .. }) {
            updated.insert(&r.id);
        }
        match (&action, chosen) {
            (Action::Create | Action::Replace { .. }, _) => {
                renewed.insert(&r.id);
            }
            (_, Some(o)) => {
                kept_physical.insert(&r.id, o);
            }
            _ => {}
        }
        changes.push(Change {
            id: r.id.clone(),
            kind: r.kind(),
            action,
            desired: Some(r.clone()),
            actual: chosen.cloned(),
        });
    }
    for (_, rest) in by_id {
        for o in rest {
            extra.push(Change {
                id: o.id.clone(),
                kind: o.kind,
                action: Action::Delete {
                    reason: "no longer in the stack file".to_string(),
                },
                desired: None,
                actual: Some(o.clone()),
            });
        }
    }
    // Deletions run last, most dependent kinds first.
    extra.sort_by(|a, b| b.kind.cmp(&a.kind).then(a.id.cmp(&b.id)));
    changes.extend(extra);
    let data_loss = super::data::notes(&mut changes);
    Plan {
        stack: stack.to_string(),
        changes,
        data_loss,
    }
}

/// Picks the observed resource to keep among those sharing a logical id; the rest are
/// duplicates. Prefers one that already matches the spec, then one that is running.
fn choose<'a>(
    r: &Resource,
    mut found: Vec<&'a Observed>,
) -> (Option<&'a Observed>, Vec<&'a Observed>) {
    if found.len() <= 1 {
        return (found.pop(), Vec::new());
    }
    let score = |o: &Observed| -> (bool, bool, String) {
        let matches = match (&r.spec, &o.details) {
            (Spec::Instance(s), Details::Instance { spec_hash, .. }) => {
                spec_hash.as_deref() == Some(instance_spec_hash(s).as_str())
            }
            _ => true,
        };
        (
            matches,
            o.state == "running" || o.state == "available",
            o.physical_id.clone(),
        )
    };
    found.sort_by_key(|o| std::cmp::Reverse(score(o)));
    let chosen = found.remove(0);
    (Some(chosen), found)
}

/// Why a group whose template did not change still needs an update: it runs another version
/// than the template's default (an instance refresh failed or rolled back, so AWS left the
/// group on the version before), or a moving `$Default` / `$Latest` from an older iac (a
/// numbered version is what makes AWS's automatic rollback possible).
pub fn group_behind_template(group: &Observed, template: Option<&&Observed>) -> Option<String> {
    let Details::AutoScalingGroup {
        launch_template_version: runs,
        ..
    } = &group.details
    else {
        return None;
    };
    let Details::LaunchTemplate {
        default_version, ..
    } = &template?.details
    else {
        return None;
    };
    match runs.parse::<i64>() {
        Ok(v) if v == *default_version => None,
        Ok(v) => Some(format!(
            "runs launch template version {v}, the template's default is {default_version} (an instance refresh failed or rolled back): instance refresh to {default_version}"
        )),
        Err(_) => Some(format!(
            "launch template version {runs} becomes {default_version}, a number, so that a failed instance refresh rolls back"
        )),
    }
}

fn is_written_by_instances(r: &Resource) -> bool {
    matches!(&r.spec, Spec::SsmParameter(p) if p.value == ParamValue::WrittenByInstances)
}

/// Fills placeholders with the attributes of resources that stay; `None` when one of them is
/// new (its attributes are only known once it exists).
pub fn resolve_template(
    text: &str,
    refs: &[ResourceId],
    kept: &BTreeMap<&ResourceId, &Observed>,
) -> Option<String> {
    fill_template(text, refs, &|r| kept.get(r).map(|o| attrs_of(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sg(rules: Vec<IngressRule>) -> Resource {
        Resource::new(
            "web-sg",
            Spec::SecurityGroup(SecurityGroupSpec {
                group_name: "s-web".into(),
                description: "d".into(),
                vpc_id: "vpc-1".into(),
                ingress: rules,
            }),
            &[],
        )
    }

    fn rule(port: u16, cidr: &str) -> IngressRule {
        IngressRule {
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            source: Source::Cidr(cidr.into()),
            description: String::new(),
        }
    }

    fn observed_sg(rules: Vec<IngressRule>) -> Observed {
        Observed {
            id: ResourceId::new("web-sg"),
            kind: Kind::SecurityGroup,
            physical_id: "sg-1".into(),
            state: "available".into(),
            details: Details::SecurityGroup {
                vpc_id: "vpc-1".into(),
                ingress: rules,
            },
            tags: Default::default(),
        }
    }

    #[test]
    fn a_group_behind_its_templates_default_version_needs_a_refresh() {
        let observed = |kind, details| Observed {
            id: ResourceId::new("x"),
            kind,
            physical_id: "x".into(),
            state: "active".into(),
            details,
            tags: Default::default(),
        };
        let group = |runs: &str| {
            observed(
                Kind::AutoScalingGroup,
                Details::AutoScalingGroup {
                    min: 1,
                    max: 2,
                    desired: 1,
                    applied_desired: Some(1),
                    launch_template_version: runs.into(),
                    target_group_arns: vec![],
                    health_check_type: "ELB".into(),
                    health_check_grace_s: 0,
                    scale_in_protection: false,
                    instances: 1,
                    in_service: vec![],
                },
            )
        };
        let lt = observed(
            Kind::LaunchTemplate,
            Details::LaunchTemplate {
                spec_hash: None,
                latest_version: 3,
                default_version: 3,
            },
        );
        assert_eq!(group_behind_template(&group("3"), Some(&&lt)), None);
        let behind = group_behind_template(&group("2"), Some(&&lt)).expect("behind");
        assert!(behind.starts_with("runs launch template version 2, the template's default is 3"));
        let moving = group_behind_template(&group("$Default"), Some(&&lt)).expect("moving");
        assert!(moving.contains("$Default becomes 3, a number"), "{moving}");
        assert_eq!(group_behind_template(&group("2"), None), None);
    }

    #[test]
    fn missing_resources_are_created() {
        let plan = diff("s", &[sg(vec![rule(80, "0.0.0.0/0")])], &[]);
        assert_eq!(plan.changes[0].action, Action::Create);
        assert_eq!(plan.summary().create, 1);
    }

    #[test]
    fn identical_rules_are_kept_and_changed_rules_update_in_place() {
        let desired = sg(vec![rule(80, "0.0.0.0/0"), rule(22, "1.2.3.4/32")]);
        let same = diff(
            "s",
            std::slice::from_ref(&desired),
            &[observed_sg(vec![
                rule(22, "1.2.3.4/32"),
                rule(80, "0.0.0.0/0"),
            ])],
        );
        assert_eq!(same.changes[0].action, Action::Keep);
        let changed = diff(
            "s",
            &[desired],
            &[observed_sg(vec![
                rule(80, "0.0.0.0/0"),
                rule(22, "0.0.0.0/0"),
            ])],
        );
        match &changed.changes[0].action {
            Action::Update { reasons } => {
                assert!(reasons.contains(&"+ ingress tcp/22 from 1.2.3.4/32".to_string()));
                assert!(reasons.contains(&"- ingress tcp/22 from 0.0.0.0/0".to_string()));
            }
            other => panic!("expected update, got {other:?}"),
        }
    }

    #[test]
    fn orphans_and_duplicates_are_deleted() {
        let mut dup = observed_sg(vec![]);
        dup.physical_id = "sg-2".into();
        let mut orphan = observed_sg(vec![]);
        orphan.id = ResourceId::new("old-sg");
        orphan.physical_id = "sg-3".into();
        let plan = diff("s", &[sg(vec![])], &[observed_sg(vec![]), dup, orphan]);
        let deletes: Vec<_> = plan
            .changes
            .iter()
            .filter(|c| matches!(c.action, Action::Delete { .. }))
            .filter_map(|c| c.actual.as_ref().map(|a| a.physical_id.clone()))
            .collect();
        assert_eq!(deletes.len(), 2);
        assert!(deletes.contains(&"sg-3".to_string()));
        assert_eq!(plan.summary().keep, 1);
    }
}
