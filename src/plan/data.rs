//! What a plan does to data: the notes that make a replacement say where the data goes, and the
//! changes that would destroy it, which `up` refuses unless `--allow-data-loss`.

use super::resource::*;
use super::{Action, Change};

/// Says what happens to data: a replaced instance whose data volume is kept gets the reason
/// "the data volume moves to the new VM"; an instance replaced while its data volume does not
/// exist yet (it kept its data on its own disk), a data volume that cannot follow its instance,
/// and a data volume or file system no longer wanted are returned as data losses.
pub fn notes(changes: &mut [Change]) -> Vec<String> {
    let mut moves: Vec<(ResourceId, ResourceId)> = Vec::new();
    let mut loss = Vec::new();
    let action_of = |changes: &[Change], id: &ResourceId| {
        changes
            .iter()
            .find(|c| &c.id == id && c.kind == Kind::Instance)
            .map(|c| c.action.clone())
    };
    for c in changes.iter() {
        let kept_data = matches!(
            c.actual.as_ref().map(|a| &a.details),
            Some(
                Details::Volume {
                    keep_on_down: true,
                    ..
                } | Details::FileSystem {
                    keep_on_down: true,
                    ..
                }
            )
        );
        match (&c.action, &c.desired) {
            (Action::Delete { .. }, _) if kept_data => loss.push(format!(
                "{} {} ({}): deleting it deletes the data on it",
                c.kind,
                c.id,
                c.actual.as_ref().map_or("", |a| a.physical_id.as_str())
            )),
            (Action::Replace { reasons }, _) if kept_data => loss.push(format!(
                "{} {}: {}; a new one would be empty",
                c.kind,
                c.id,
                reasons.join(", ")
            )),
            (
                action,
                Some(Resource {
                    spec: Spec::Volume(v),
                    ..
                }),
            ) if v.keep_on_down => {
                if let Some(Action::Replace { .. }) = action_of(changes, &v.attach_to) {
                    if matches!(action, Action::Create) {
                        loss.push(format!(
                            "instance {}: its data is on its own disk (it was made before its data volume `{}`); replacing it deletes that data",
                            v.attach_to, c.id
                        ));
                    } else {
                        moves.push((v.attach_to.clone(), c.id.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    for (instance, volume) in moves {
        if let Some(Change {
            action: Action::Replace { reasons },
            ..
        }) = changes
            .iter_mut()
            .find(|c| c.id == instance && c.kind == Kind::Instance)
        {
            reasons.push(format!("the data volume ({volume}) moves to the new VM"));
        }
    }
    loss
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::diff::diff;
    use super::*;

    fn vm(instance_type: &str) -> Resource {
        Resource::new(
            "vm",
            Spec::Instance(InstanceSpec {
                instance_type: instance_type.to_string(),
                image_id: "ami-1".to_string(),
                root_device: "/dev/sda1".to_string(),
                key_name: None,
                security_groups: Vec::new(),
                subnet_id: None,
                instance_profile: None,
                disk_gb: 8,
                metadata_hop_limit: 1,
                user_data: Vec::new(),
                user_data_sha: "u".to_string(),
            }),
            &[],
        )
    }

    fn volume() -> Resource {
        Resource::new(
            "data",
            Spec::Volume(VolumeSpec {
                size_gb: 8,
                availability_zone: "us-east-1a".to_string(),
                attach_to: ResourceId::new("vm"),
                device: "/dev/sdf".to_string(),
                keep_on_down: true,
                protected: false,
            }),
            &["vm"],
        )
    }

    fn observed_vm() -> Observed {
        let Spec::Instance(s) = vm("t3.micro").spec else {
            unreachable!()
        };
        Observed {
            id: ResourceId::new("vm"),
            kind: Kind::Instance,
            physical_id: "i-old".to_string(),
            state: "running".to_string(),
            details: Details::Instance {
                instance_type: "t3.micro".to_string(),
                image_id: "ami-1".to_string(),
                key_name: None,
                security_group_ids: Vec::new(),
                spec_hash: Some(super::super::diff::instance_spec_hash(&s)),
                public_ip: None,
                private_ip: None,
                root_volume_id: None,
            },
            tags: BTreeMap::new(),
        }
    }

    fn observed_volume(az: &str) -> Observed {
        Observed {
            id: ResourceId::new("data"),
            kind: Kind::Volume,
            physical_id: "vol-1".to_string(),
            state: "in-use".to_string(),
            details: Details::Volume {
                availability_zone: az.to_string(),
                size_gb: 8,
                attached_to: Some("i-old".to_string()),
                keep_on_down: true,
                protected: false,
            },
            tags: BTreeMap::new(),
        }
    }

    fn reasons(plan: &super::super::Plan, id: &str) -> Vec<String> {
        match &plan
            .changes
            .iter()
            .find(|c| c.id.as_str() == id)
            .unwrap()
            .action
        {
            Action::Replace { reasons } | Action::Update { reasons } => reasons.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_replaced_vm_says_its_data_volume_moves() {
        let plan = diff(
            "s",
            &[vm("t3.small"), volume()],
            &[observed_vm(), observed_volume("us-east-1a")],
        );
        assert!(plan.data_loss.is_empty(), "{:?}", plan.data_loss);
        assert!(reasons(&plan, "vm")
            .contains(&"the data volume (data) moves to the new VM".to_string()));
        assert_eq!(reasons(&plan, "data"), ["attach to the new vm"]);
    }

    #[test]
    fn a_vm_made_before_its_data_volume_cannot_be_replaced_silently() {
        let plan = diff("s", &[vm("t3.small"), volume()], &[observed_vm()]);
        assert_eq!(plan.data_loss.len(), 1);
        assert!(plan.data_loss[0].contains("its data is on its own disk"));
    }

    #[test]
    fn an_unchanged_vm_without_its_volume_loses_nothing() {
        let plan = diff("s", &[vm("t3.micro"), volume()], &[observed_vm()]);
        assert!(plan.data_loss.is_empty());
    }

    #[test]
    fn a_data_volume_no_longer_wanted_or_in_another_zone_is_data_loss() {
        let plan = diff(
            "s",
            &[vm("t3.micro")],
            &[observed_vm(), observed_volume("us-east-1a")],
        );
        assert_eq!(plan.data_loss.len(), 1);
        assert!(plan.data_loss[0].contains("vol-1"));
        let plan = diff(
            "s",
            &[vm("t3.micro"), volume()],
            &[observed_vm(), observed_volume("us-east-1b")],
        );
        assert_eq!(plan.data_loss.len(), 1);
        assert!(plan.data_loss[0].contains("zone us-east-1b"));
    }
}
