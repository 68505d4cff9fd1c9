//! desired × observed → plan. Pure: no I/O, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::managed::{LaunchTemplateSpec, ListenerAction};
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
            Some(o) => {
                match compare_balancing_and_scaling(r, o, &kept_physical, &renewed, &updated) {
                    Some(a) => a,
                    None => compare(r, o, &kept_physical, &renewed),
                }
            }
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

fn compare(
    r: &Resource,
    o: &Observed,
    kept: &BTreeMap<&ResourceId, &Observed>,
    renewed: &BTreeSet<&ResourceId>,
) -> Action {
    match (&r.spec, &o.details) {
        (Spec::KeyPair(s), Details::KeyPair { fingerprint_tag }) => {
            if fingerprint_tag.as_deref()
                == Some(short_hash(s.public_key.trim().as_bytes()).as_str())
            {
                Action::Keep
            } else {
                Action::Replace {
                    reasons: vec!["public key changed".to_string()],
                }
            }
        }
        (Spec::SecurityGroup(s), Details::SecurityGroup { vpc_id, ingress }) => {
            if &s.vpc_id != vpc_id {
                return Action::Replace {
                    reasons: vec![format!("vpc {vpc_id} → {}", s.vpc_id)],
                };
            }
            let want: BTreeSet<_> = s.ingress.iter().map(rule_key).collect();
            let have: BTreeSet<_> = ingress.iter().map(rule_key).collect();
            let mut reasons: Vec<String> = Vec::new();
            for rule in s.ingress.iter().filter(|x| !have.contains(&rule_key(x))) {
                reasons.push(format!("+ ingress {rule}"));
            }
            for rule in ingress.iter().filter(|x| !want.contains(&rule_key(x))) {
                reasons.push(format!("- ingress {rule}"));
            }
            if reasons.is_empty() {
                Action::Keep
            } else {
                Action::Update { reasons }
            }
        }
        (
            Spec::Instance(s),
            Details::Instance {
                instance_type,
                image_id,
                key_name,
                security_group_ids,
                spec_hash,
                ..
            },
        ) => {
            let mut reasons = Vec::new();
            if &s.instance_type != instance_type {
                reasons.push(format!("type {instance_type} → {}", s.instance_type));
            }
            if &s.image_id != image_id {
                reasons.push(format!("image {image_id} → {}", s.image_id));
            }
            if &s.key_name != key_name {
                reasons.push(format!(
                    "key pair {} → {}",
                    key_name.as_deref().unwrap_or("none"),
                    s.key_name.as_deref().unwrap_or("none")
                ));
            }
            let wanted_groups: Option<BTreeSet<&str>> = s
                .security_groups
                .iter()
                .map(|g| kept.get(g).map(|o| o.physical_id.as_str()))
                .collect();
            let have_groups: BTreeSet<&str> =
                security_group_ids.iter().map(String::as_str).collect();
            if wanted_groups.as_ref() != Some(&have_groups) {
                reasons.push("security groups changed".to_string());
            }
            if reasons.is_empty() && spec_hash.as_deref() != Some(instance_spec_hash(s).as_str()) {
                reasons.push("user-data or launch settings changed".to_string());
            }
            if !reasons.is_empty() {
                Action::Replace { reasons }
            } else if o.state == "stopped" {
                Action::Update {
                    reasons: vec!["instance is stopped: start it".to_string()],
                }
            } else {
                Action::Keep
            }
        }
        (Spec::ElasticIp(s), Details::ElasticIp { instance_id, .. }) => {
            if renewed.contains(&s.instance) {
                return Action::Update {
                    reasons: vec![format!("associate with the new {}", s.instance)],
                };
            }
            let want = kept.get(&s.instance).map(|o| o.physical_id.as_str());
            if want.is_some() && instance_id.as_deref() != want {
                Action::Update {
                    reasons: vec![format!(
                        "associate with {} (now {})",
                        want.unwrap_or("?"),
                        instance_id.as_deref().unwrap_or("unassociated")
                    )],
                }
            } else {
                Action::Keep
            }
        }
        (Spec::DnsRecord(s), Details::DnsRecord { zone_id, values }) => {
            if &s.zone_id != zone_id {
                return Action::Replace {
                    reasons: vec![format!("hosted zone {zone_id} → {}", s.zone_id)],
                };
            }
            let want = match &kept.get(&s.target).map(|o| &o.details) {
                Some(Details::ElasticIp { public_ip, .. }) => Some(public_ip.clone()),
                _ => None,
            };
            match want {
                Some(ip) if values == &vec![ip.clone()] => Action::Keep,
                Some(ip) => Action::Update {
                    reasons: vec![format!("A {} → {ip}", values.join(","))],
                },
                None => Action::Update {
                    reasons: vec!["point at the new Elastic IP".to_string()],
                },
            }
        }
        (Spec::SsmParameter(s), Details::SsmParameter { value, secure }) => {
            if s.secure != *secure {
                return Action::Replace {
                    reasons: vec![format!(
                        "type {} → {}",
                        param_type(*secure),
                        param_type(s.secure)
                    )],
                };
            }
            match &s.value {
                ParamValue::Generated
                | ParamValue::GeneratedTls { .. }
                | ParamValue::WrittenByInstances => Action::Keep,
                ParamValue::Template { text, refs } => match resolve_template(text, refs, kept) {
                    Some(want) if value.as_deref() == Some(want.as_str()) => Action::Keep,
                    Some(_) => Action::Update {
                        reasons: vec!["value changed".to_string()],
                    },
                    None => Action::Update {
                        reasons: vec![format!(
                            "value depends on new {}",
                            refs.iter()
                                .filter(|r| !kept.contains_key(r))
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )],
                    },
                },
            }
        }
        (
            Spec::Volume(s),
            Details::Volume {
                attached_to,
                availability_zone,
                protected,
                ..
            },
        ) => {
            // A volume attaches only to instances in its own zone.
            if !s.availability_zone.is_empty() && &s.availability_zone != availability_zone {
                return Action::Replace {
                    reasons: vec![format!(
                        "zone {availability_zone} → {}",
                        s.availability_zone
                    )],
                };
            }
            let mut reasons = Vec::new();
            if *protected != s.protected {
                reasons.push(protection(s.protected));
            }
            if renewed.contains(&s.attach_to) {
                reasons.push(format!("attach to the new {}", s.attach_to));
            } else if let Some(o) = kept.get(&s.attach_to) {
                if attached_to.as_deref() != Some(o.physical_id.as_str()) {
                    reasons.push(format!("attach to {}", o.physical_id));
                }
            }
            update_if(reasons)
        }
        _ => Action::Replace {
            reasons: vec!["kind changed".to_string()],
        },
    }
}

/// Why a protection change is an update.
fn protection(on: bool) -> String {
    if on {
        "protect: turn protection on".to_string()
    } else {
        "protect: turn protection off".to_string()
    }
}

fn update_if(reasons: Vec<String>) -> Action {
    if reasons.is_empty() {
        Action::Keep
    } else {
        Action::Update { reasons }
    }
}

fn differs<T: PartialEq + std::fmt::Debug>(
    reasons: &mut Vec<String>,
    what: &str,
    have: T,
    want: T,
) {
    if have != want {
        reasons.push(format!("{what} {have:?} → {want:?}"));
    }
}

/// The load balancing and auto scaling kinds. `None` for every other kind.
fn compare_balancing_and_scaling(
    r: &Resource,
    o: &Observed,
    kept: &BTreeMap<&ResourceId, &Observed>,
    renewed: &BTreeSet<&ResourceId>,
    updated: &BTreeSet<&ResourceId>,
) -> Option<Action> {
    let physical = |id: &ResourceId| kept.get(id).map(|o| o.physical_id.clone());
    Some(match (&r.spec, &o.details) {
        (Spec::DbSubnetGroup(s), Details::DbSubnetGroup { subnet_ids }) => {
            let want: BTreeSet<&String> = s.subnet_ids.iter().collect();
            let have: BTreeSet<&String> = subnet_ids.iter().collect();
            update_if(if want == have {
                vec![]
            } else {
                vec!["subnets changed".to_string()]
            })
        }
        (
            Spec::DbCluster(s),
            Details::DbCluster {
                backup_retention_days,
                deletion_protection,
                ..
            },
        ) => {
            let mut reasons = Vec::new();
            if *deletion_protection != s.deletion_protection {
                reasons.push(protection(s.deletion_protection));
            }
            differs(
                &mut reasons,
                "backup retention (days)",
                *backup_retention_days,
                s.backup_retention_days,
            );
            update_if(reasons)
        }
        (Spec::InstanceProfile(s), Details::InstanceProfile { policy_hash, .. }) => {
            let want = short_hash(serde_json::to_string(s).unwrap_or_default().as_bytes());
            update_if(if policy_hash.as_deref() == Some(want.as_str()) {
                vec![]
            } else {
                vec!["role policies changed".to_string()]
            })
        }
        (Spec::FileSystem(s), Details::FileSystem { protected, .. }) => {
            update_if(if *protected == s.protected {
                vec![]
            } else {
                vec![protection(s.protected)]
            })
        }
        (Spec::DbInstance(_), Details::DbInstance { .. })
        | (Spec::MountTarget(_), Details::MountTarget { .. }) => Action::Keep,
        (
            Spec::TargetGroup(s),
            Details::TargetGroup {
                health_path,
                healthy_threshold,
                unhealthy_threshold,
                interval_s,
                timeout_s,
                matcher,
                deregistration_delay_s,
                ..
            },
        ) => {
            let mut reasons = Vec::new();
            differs(
                &mut reasons,
                "health path",
                health_path.as_str(),
                s.health_path.as_str(),
            );
            differs(
                &mut reasons,
                "healthy threshold",
                *healthy_threshold,
                s.healthy_threshold,
            );
            differs(
                &mut reasons,
                "unhealthy threshold",
                *unhealthy_threshold,
                s.unhealthy_threshold,
            );
            differs(&mut reasons, "interval (s)", *interval_s, s.interval_s);
            differs(&mut reasons, "timeout (s)", *timeout_s, s.timeout_s);
            differs(
                &mut reasons,
                "matcher",
                matcher.as_str(),
                s.matcher.as_str(),
            );
            differs(
                &mut reasons,
                "deregistration delay (s)",
                *deregistration_delay_s,
                Some(s.deregistration_delay_s),
            );
            update_if(reasons)
        }
        (
            Spec::LoadBalancer(s),
            Details::LoadBalancer {
                security_group_ids, ..
            },
        ) => {
            let want: Option<BTreeSet<String>> = s.security_groups.iter().map(physical).collect();
            let have: BTreeSet<String> = security_group_ids.iter().cloned().collect();
            update_if(if want.as_ref() == Some(&have) {
                vec![]
            } else {
                vec!["security groups changed".to_string()]
            })
        }
        (
            Spec::Listener(s),
            Details::Listener {
                action,
                certificate_arn,
                ..
            },
        ) => {
            let want = match &s.action {
                ListenerAction::RedirectHttps => Some("redirect:https".to_string()),
                ListenerAction::Forward(tg) if renewed.contains(tg) => None,
                ListenerAction::Forward(tg) => physical(tg).map(|arn| format!("forward:{arn}")),
            };
            let mut reasons = Vec::new();
            if want.as_deref() != Some(action.as_str()) {
                reasons.push(format!(
                    "action {action} → {}",
                    want.unwrap_or_else(|| "forward to the new target group".to_string())
                ));
            }
            differs(
                &mut reasons,
                "certificate",
                certificate_arn.as_deref(),
                s.certificate_arn.as_deref(),
            );
            update_if(reasons)
        }
        (Spec::LaunchTemplate(s), Details::LaunchTemplate { spec_hash, .. }) => {
            let want = launch_template_hash(s);
            update_if(if spec_hash.as_deref() == Some(want.as_str()) {
                vec![]
            } else {
                vec!["image, type, user-data or settings changed: new template version, then a rolling instance refresh".to_string()]
            })
        }
        (
            Spec::AutoScalingGroup(s),
            Details::AutoScalingGroup {
                min,
                max,
                desired,
                applied_desired,
                health_check_grace_s,
                scale_in_protection,
                ..
            },
        ) => {
            let mut reasons = Vec::new();
            differs(&mut reasons, "min", *min, s.min);
            differs(&mut reasons, "max", *max, s.max);
            // The scaling policy moves the live capacity; compare against what iac last applied.
            differs(
                &mut reasons,
                "desired",
                applied_desired.unwrap_or(*desired),
                s.desired,
            );
            differs(
                &mut reasons,
                "health check grace (s)",
                *health_check_grace_s,
                s.health_check_grace_s,
            );
            differs(
                &mut reasons,
                "scale-in protection",
                *scale_in_protection,
                s.scale_in_protection,
            );
            if updated.contains(&s.launch_template) || renewed.contains(&s.launch_template) {
                reasons.push(format!(
                    "instance refresh (min healthy {}%)",
                    s.min_healthy_percent
                ));
            } else if let Some(why) = group_behind_template(o, kept.get(&s.launch_template)) {
                reasons.push(why);
            }
            update_if(reasons)
        }
        (
            Spec::ScalingPolicy(s),
            Details::ScalingPolicy {
                cpu_target,
                warmup_s,
                ..
            },
        ) => {
            let mut reasons = Vec::new();
            differs(
                &mut reasons,
                "CPU target",
                cpu_target.clone(),
                Some(format!("{}", s.cpu_target)),
            );
            differs(
                &mut reasons,
                "warm-up (s)",
                *warmup_s,
                Some(s.warmup_s as i32),
            );
            update_if(reasons)
        }
        _ => return None,
    })
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

fn param_type(secure: bool) -> &'static str {
    if secure {
        "SecureString"
    } else {
        "String"
    }
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

/// Rules compare without their descriptions (AWS keeps those per range, not per rule).
fn rule_key(r: &IngressRule) -> (String, u16, u16, Source) {
    (r.protocol.clone(), r.from_port, r.to_port, r.source.clone())
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
