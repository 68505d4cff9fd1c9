//! Where discovery looks. A stack is found by its tags, service by service; asking every
//! service on every run costs a dozen round trips that most tiers do not need. So each stack
//! keeps a record of the kinds of resources it has (a parameter under its path), and discovery
//! asks for the kinds the stack file declares plus those the record names. The record is part
//! of the desired graph: it grows when a kind is added and shrinks, one run later, when the
//! resources of a kind are gone, so a kind the file stops using is still found and deleted.

use std::collections::BTreeSet;

use super::{Details, Kind, Observed, ParamValue, Resource, Spec, SsmParameterSpec};

/// The record's leaf under `/iac/<stack>/`.
pub const RECORD: &str = "discovery-kinds";

/// Kinds looked for in every stack, whatever its file says: security groups and instances (a
/// stray or externally launched instance is always seen), and parameters (the record's own kind).
pub const ALWAYS: [Kind; 3] = [Kind::SecurityGroup, Kind::Instance, Kind::SsmParameter];

/// The record's value: the kinds, by name, comma-separated.
pub fn text(kinds: &BTreeSet<Kind>) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The kinds the record names. `None` when there is no record or it names a kind this version
/// does not know (then every service is asked).
pub fn recorded(observed: &[Observed]) -> Option<BTreeSet<Kind>> {
    let value = observed.iter().find_map(|o| match &o.details {
        Details::SsmParameter {
            value: Some(v),
            secure: false,
        } if o.kind == Kind::SsmParameter && o.id.as_str() == RECORD => Some(v),
        _ => None,
    })?;
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|name| Kind::ALL.into_iter().find(|k| k.as_str() == name))
        .collect()
}

/// The kinds `desired` declares.
pub fn declared(desired: &[Resource]) -> BTreeSet<Kind> {
    desired.iter().map(Resource::kind).collect()
}

/// The record as a resource: the kinds declared, and the kinds still observed (to be deleted by
/// this run; the next run, finding none, drops them).
pub fn record(param_name: String, desired: &[Resource], observed: &[Observed]) -> Resource {
    let mut kinds = declared(desired);
    kinds.insert(Kind::SsmParameter);
    kinds.extend(
        observed
            .iter()
            .filter(|o| !(o.kind == Kind::SsmParameter && o.id.as_str() == RECORD))
            .map(|o| o.kind),
    );
    kinds.retain(|k| !ALWAYS.contains(k) || *k == Kind::SsmParameter);
    Resource::new(
        RECORD,
        Spec::SsmParameter(SsmParameterSpec {
            name: param_name,
            secure: false,
            value: ParamValue::Template {
                text: text(&kinds),
                refs: Vec::new(),
            },
            notify: Vec::new(),
        }),
        &[],
    )
}

/// Adds the record to `desired`, written before anything of a kind it names is created (the
/// kinds always looked for need not wait), so a run killed halfway leaves no resource of a kind
/// the next run would not look for.
pub fn add_record(desired: &mut Vec<Resource>, param_name: String, observed: &[Observed]) {
    let record = record(param_name, desired, observed);
    for r in desired.iter_mut().filter(|r| !ALWAYS.contains(&r.kind())) {
        r.deps.push(record.id.clone());
    }
    desired.push(record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ResourceId;

    fn param(id: &str, value: &str) -> Observed {
        Observed {
            id: ResourceId::new(id),
            kind: Kind::SsmParameter,
            physical_id: format!("/iac/s/{id}"),
            state: "present".into(),
            details: Details::SsmParameter {
                value: Some(value.into()),
                secure: false,
            },
            tags: Default::default(),
        }
    }

    #[test]
    fn kinds_not_always_looked_for_wait_for_the_record() {
        let param = |id: &str| {
            Resource::new(
                id,
                Spec::SsmParameter(SsmParameterSpec {
                    name: format!("/iac/s/{id}"),
                    secure: false,
                    value: ParamValue::Template {
                        text: String::new(),
                        refs: Vec::new(),
                    },
                    notify: Vec::new(),
                }),
                &[],
            )
        };
        let mut volume = param("data");
        volume.spec = Spec::Volume(crate::plan::VolumeSpec {
            size_gb: 8,
            availability_zone: "us-east-1a".into(),
            attach_to: ResourceId::new("vm"),
            device: "/dev/sdf".into(),
            keep_on_down: true,
            protected: false,
        });
        let mut desired = vec![param("app"), volume];
        add_record(&mut desired, "/iac/s/kinds".into(), &[]);
        let deps: Vec<(&str, Vec<&str>)> = desired
            .iter()
            .map(|r| (r.id.as_str(), r.deps.iter().map(|d| d.as_str()).collect()))
            .collect();
        assert_eq!(
            deps,
            vec![("app", vec![]), ("data", vec![RECORD]), (RECORD, vec![]),]
        );
    }

    #[test]
    fn the_record_reads_back_what_it_wrote() {
        let kinds = BTreeSet::from([Kind::LoadBalancer, Kind::DbCluster, Kind::SsmParameter]);
        let read = recorded(&[param(RECORD, &text(&kinds))]);
        assert_eq!(read, Some(kinds));
    }

    #[test]
    fn no_record_or_an_unknown_kind_means_every_service() {
        assert_eq!(recorded(&[param("app", "x")]), None);
        assert_eq!(recorded(&[param(RECORD, "volume,warp-drive")]), None);
    }

    #[test]
    fn the_record_keeps_observed_kinds_until_they_are_gone() {
        let mut vol = param("data", "");
        vol.kind = Kind::Volume;
        let r = record("/iac/s/kinds".into(), &[], &[vol]);
        let Spec::SsmParameter(s) = &r.spec else {
            panic!("a parameter")
        };
        assert_eq!(
            s.value,
            ParamValue::Template {
                text: "ssm-parameter,volume".into(),
                refs: Vec::new()
            }
        );
        let r = record("/iac/s/kinds".into(), &[], &[]);
        let Spec::SsmParameter(s) = &r.spec else {
            panic!("a parameter")
        };
        assert_eq!(
            s.value,
            ParamValue::Template {
                text: "ssm-parameter".into(),
                refs: Vec::new()
            }
        );
    }
}
