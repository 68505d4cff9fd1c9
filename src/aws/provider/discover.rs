//! Discovery by tag, and the read-only look-ups a tier's graph needs.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::try_join_all;

use super::Provider;
use crate::apply::events::{Event, Reporter};
use crate::aws::error::{AwsError, ErrorClass};
use crate::aws::{ec2, rds, route53, ssm, tags, Aws};
use crate::plan::scope;
use crate::plan::*;
use crate::stack::model::ImagePolicy;
use crate::stack::validate::IMAGE_ALIASES;
use crate::stack::Stack;

/// Everything tagged with a stack.
#[derive(Debug, Default, Clone)]
pub struct Discovered {
    pub resources: Vec<Observed>,
    pub terminated_ids: Vec<String>,
    /// Live instances tagged with the stack but without an `iac:id`: launched on the stack's
    /// behalf by something else (an Auto Scaling group, a scaler's monitor). Not part of
    /// `resources`: `up` and `plan` neither adopt nor delete them; the tier that launches them
    /// says which are its own (`tiers::custom_scaler::pool`).
    pub untracked: Vec<Observed>,
}

impl Discovered {
    /// Nothing at all was found of the kinds asked for (its security groups, instances and
    /// parameters always, the record among them): the stack is new. Every stack has a security
    /// group, and `down` deletes only parameters, profiles and key pairs after its groups.
    pub fn is_new(&self) -> bool {
        self.resources.is_empty() && self.untracked.is_empty()
    }

    /// Resources found by a kind that is never launched on the stack's behalf.
    pub fn of(resources: Vec<Observed>) -> Discovered {
        Discovered {
            resources,
            ..Default::default()
        }
    }

    /// Adds what another call or round found. The resources stay in the order the kinds are
    /// declared (`status`, `down` and the cost estimate list them so), whatever order the
    /// providers are registered or asked in.
    fn absorb(&mut self, more: Discovered) {
        self.resources.extend(more.resources);
        self.terminated_ids.extend(more.terminated_ids);
        self.untracked.extend(more.untracked);
        // Stable: resources of one kind keep the order they were found in.
        self.resources.sort_by_key(|o| o.kind);
    }
}

/// Finds every resource of `stack` through its tags (no local state), in every service.
pub async fn discover(aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
    discover_kinds(aws, stack, &Kind::ALL.into_iter().collect()).await
}

/// Finds the resources of `stack` of the kinds `wanted` (what the stack file declares), and of
/// the kinds the stack's [`scope`] record names (what it had before: a resource of a kind the
/// file no longer uses must still be found, to be deleted). A stack without the record (made
/// by an older iac, or the record deleted by hand) is looked for in every service.
pub async fn discover_scoped(
    aws: &Aws,
    stack: &str,
    wanted: &BTreeSet<Kind>,
) -> Result<Discovered, AwsError> {
    let asked: BTreeSet<Kind> = wanted.iter().copied().chain(scope::ALWAYS).collect();
    let mut found = discover_kinds(aws, stack, &asked).await?;
    // On a new stack, a leftover of a kind the file no longer declares, on a stack otherwise
    // gone, is left to `down`, which sweeps every service. A stack made by an older iac,
    // without a record, is looked for in every service.
    let recorded = match scope::recorded(&found.resources) {
        Some(kinds) => kinds,
        None if found.is_new() => BTreeSet::new(),
        None => Kind::ALL.into(),
    };
    let missing: BTreeSet<Kind> = recorded.difference(&found_with(&asked)).copied().collect();
    if !missing.is_empty() {
        found.absorb(discover_kinds(aws, stack, &missing).await?);
    }
    Ok(found)
}

/// Every kind the discovery calls for `kinds` find.
fn found_with(kinds: &BTreeSet<Kind>) -> BTreeSet<Kind> {
    super::providers_of(kinds)
        .flat_map(|p| p.kinds().iter().copied())
        .collect()
}

/// One concurrent round of discovery calls: those of the providers of `kinds`, each asked once.
pub async fn discover_kinds(
    aws: &Aws,
    stack: &str,
    kinds: &BTreeSet<Kind>,
) -> Result<Discovered, AwsError> {
    let providers: Vec<&dyn Provider> = super::providers_of(kinds).collect();
    // Every call at once: they are independent, and each service answers at its own pace.
    let found = try_join_all(providers.iter().map(|p| p.discover(aws, stack))).await?;
    let mut all = Discovered::default();
    for d in found {
        all.absorb(d);
    }
    Ok(all)
}

/// The stack's VPC (`default` or an id that must exist) and its subnets as (id, zone): one per
/// zone, only in zones that offer every instance type the stack uses (DescribeInstanceTypeOfferings:
/// us-east-1e offers no t3, for one). Listed subnets are checked the same way and refused, not
/// skipped, when they break either rule.
pub async fn resolve_network(
    aws: &Aws,
    spec: &crate::stack::model::StackFile,
) -> Result<(String, Vec<(String, String)>), AwsError> {
    let network = &spec.network;
    let types = instance_types(spec);
    // The zones offering the types depend on nothing else: asked beside the VPC and subnets.
    let vpc_and_subnets = async {
        if network.vpc == "default" && network.subnets.is_empty() {
            return ec2::default_vpc_subnets(aws).await;
        }
        let vpc_id = if network.vpc == "default" {
            ec2::default_vpc(aws).await?
        } else if ec2::vpc_exists(aws, &network.vpc).await? {
            network.vpc.clone()
        } else {
            return Err(AwsError::state(
                "ec2:DescribeVpcs",
                ErrorClass::NotFound,
                format!("VPC {} does not exist in {}", network.vpc, aws.region),
            ));
        };
        let subnets = if network.subnets.is_empty() {
            ec2::subnets(aws, &vpc_id).await?
        } else {
            ec2::subnets_by_id(aws, &network.subnets).await?
        };
        Ok((vpc_id, subnets))
    };
    let ((vpc_id, subnets), offered) =
        tokio::try_join!(vpc_and_subnets, ec2::zones_offering(aws, &types))?;
    let subnets =
        usable_subnets(subnets, &offered, !network.subnets.is_empty(), &types).map_err(|m| {
            AwsError::state(
                "ec2:DescribeInstanceTypeOfferings",
                ErrorClass::InvalidInput,
                m,
            )
        })?;
    Ok((vpc_id, subnets))
}

/// Every instance type the stack launches: `instance.type` and the per-role overrides.
fn instance_types(s: &crate::stack::model::StackFile) -> Vec<String> {
    let mut types = std::collections::BTreeSet::from([s.instance.instance_type.clone()]);
    types.extend(s.web.as_ref().and_then(|w| w.instance_type.clone()));
    types.extend(s.balancer.as_ref().and_then(|b| b.instance_type.clone()));
    types.extend(s.database.as_ref().and_then(|d| d.instance_type.clone()));
    types.extend(
        s.scaler
            .as_ref()
            .and_then(|sc| sc.monitor.instance_type.clone()),
    );
    types.into_iter().collect()
}

/// The subnets to use: in zones of `offered`, one per zone (a load balancer takes one subnet per
/// zone, EFS one mount target per zone). `listed` subnets break a rule with an error instead.
fn usable_subnets(
    subnets: Vec<(String, String)>,
    offered: &std::collections::BTreeSet<String>,
    listed: bool,
    types: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (id, zone) in subnets {
        if !offered.contains(&zone) {
            if listed {
                return Err(format!(
                    "subnet {id} is in {zone}, which does not offer {}; list subnets in {}",
                    types.join(", "),
                    zones_text(offered)
                ));
            }
            continue;
        }
        if let Some(first) = seen.get(&zone) {
            if listed {
                return Err(format!("subnets {first} and {id} are both in {zone}; list one subnet per zone (a load balancer and EFS take one per zone)"));
            }
            continue;
        }
        seen.insert(zone.clone(), id.clone());
        out.push((id, zone));
    }
    if out.is_empty() {
        return Err(format!(
            "no subnet of the VPC is in a zone that offers {} (zones that do: {})",
            types.join(", "),
            zones_text(offered)
        ));
    }
    Ok(out)
}

fn zones_text(zones: &std::collections::BTreeSet<String>) -> String {
    if zones.is_empty() {
        "none in this region".to_string()
    } else {
        zones.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Looks up what the desired graph needs from the account. Read-only.
pub async fn resolve_inputs(
    aws: &Aws,
    stack: &Stack,
    reporter: &dyn Reporter,
) -> Result<Inputs, AwsError> {
    // Four independent chains of lookups run at the same time: network, image, key pair, zone
    // and secrets. Each is a handful of sequential reads.
    let s = &stack.spec;
    let network = resolve_network(aws, s);
    let image = resolve_image(aws, &s.instance.image, reporter);
    let key = async {
        match &s.instance.key_pair {
            Some(kp) if kp.public_key_file.is_none() && !ec2::key_pair_exists(aws, &kp.name).await? => Err(AwsError::state(
                "ec2:DescribeKeyPairs",
                ErrorClass::NotFound,
                format!("key pair `{}` does not exist in {}; create it, or set `instance.key_pair.public_key_file` to import one", kp.name, aws.region),
            )),
            _ => Ok(()),
        }
    };
    let zone = async {
        match s.domain.as_ref().and_then(|d| d.hosted_zone.as_ref()) {
            Some(z) => route53::resolve_zone(aws, z).await.map(Some),
            None => Ok(None),
        }
    };
    let secrets = async {
        let mut refs: Vec<&str> = s.app.secrets.values().map(|r| r.ssm.as_str()).collect();
        refs.extend(
            s.database
                .as_ref()
                .and_then(|d| d.password.as_ref())
                .map(|p| p.ssm.as_str()),
        );
        let mut seen = std::collections::BTreeSet::new();
        refs.retain(|n| seen.insert(*n));
        // One read for all of them, not one each (none when there are none).
        let existing = ssm::existing(aws, &refs).await?;
        for name in refs.into_iter().filter(|n| !existing.contains(*n)) {
            reporter.event(&Event::Warning {
                message: format!("SSM parameter {name} does not exist yet; the instance reads it at boot, so create it first (aws ssm put-parameter --type SecureString --name {name} ...)"),
            });
        }
        Ok(())
    };
    let ((vpc_id, subnets), image, (), hosted_zone_id, (), ()) = tokio::try_join!(
        network,
        image,
        key,
        zone,
        secrets,
        check_engine_version(aws, stack, reporter)
    )?;
    Ok(Inputs {
        vpc_id,
        subnet_id: subnets.first().map(|(id, _)| id.clone()),
        subnets,
        image_id: image.id,
        root_device: image.root_device,
        hosted_zone_id,
    })
}

/// alb-asg with a pinned Aurora version: refuses one RDS no longer offers for new clusters
/// (versions are deprecated in time). Emulators may not answer the call: then it is skipped,
/// with a note, under an endpoint override only.
async fn check_engine_version(
    aws: &Aws,
    stack: &Stack,
    reporter: &dyn Reporter,
) -> Result<(), AwsError> {
    let s = &stack.spec;
    let Some((engine, version)) = s
        .database
        .as_ref()
        .filter(|d| d.engine.starts_with("aurora"))
        .and_then(|d| {
            crate::stack::validate::aurora_engine_version(&d.version).map(|v| (&d.engine, v))
        })
    else {
        return Ok(());
    };
    match rds::engine_version_available(aws, engine, &version).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AwsError::state(
            "rds:DescribeDBEngineVersions",
            ErrorClass::InvalidInput,
            format!("database.version {version} is not available for new {engine} clusters in {} (deprecated versions are refused); leave `version` out to let RDS pick its current default", aws.region),
        )),
        Err(e) => match &aws.endpoint_override {
            Some(endpoint) => {
                reporter.event(&Event::Info {
                    message: format!("database.version {version} not checked: {endpoint} does not answer DescribeDBEngineVersions ({})", e.message),
                });
                Ok(())
            }
            None => Err(e),
        },
    }
}

/// The AMI `image` names: an id, or an alias through its public SSM parameter. Emulators lack
/// some public parameters; with an endpoint override only, the newest matching image the endpoint
/// knows is used instead, loudly.
async fn resolve_image(
    aws: &Aws,
    image: &str,
    reporter: &dyn Reporter,
) -> Result<ec2::Image, AwsError> {
    let Some((alias, param)) = IMAGE_ALIASES.iter().find(|(a, _)| *a == image) else {
        return ec2::image(aws, image).await;
    };
    if let Some(ami) = ssm::get_plain(aws, param).await? {
        return ec2::image(aws, &ami).await;
    }
    if let Some(endpoint) = &aws.endpoint_override {
        let (owner, pattern) = if alias.starts_with("ubuntu") {
            ("099720109477", "*ubuntu*")
        } else {
            ("amazon", "al2023-ami-*")
        };
        if let Some(newest) = ec2::newest_image(aws, owner, pattern).await? {
            reporter.event(&Event::Warning {
                message: format!("{endpoint} does not publish {param}; using its newest {pattern} image {} for `{alias}` (emulator only)", newest.id),
            });
            return Ok(newest);
        }
    }
    Err(AwsError::state("ssm:GetParameter", ErrorClass::NotFound, format!("public parameter {param} (image alias `{alias}`) is not available in {}; give an AMI id instead", aws.region)))
}

/// `instance.image_policy: pinned` (the default): when the stack's instances or launch templates
/// were made from an image the alias no longer resolves to, the graph keeps that image, so a
/// newly published image never replaces anything by itself, and the user is told a newer one
/// exists. `refresh` (`--refresh-image`) or `image_policy: latest` moves to the newest on purpose.
pub async fn pin_image(
    aws: &Aws,
    stack: &Stack,
    inputs: &mut Inputs,
    discovered: &Discovered,
    refresh: bool,
    reporter: &dyn Reporter,
) -> Result<(), AwsError> {
    let image = &stack.spec.instance.image;
    if !IMAGE_ALIASES.iter().any(|(a, _)| *a == image.as_str()) {
        return Ok(());
    }
    let Some(pinned) = pinned_image(image, &discovered.resources) else {
        return Ok(());
    };
    let latest = inputs.image_id.clone();
    if pinned == latest {
        return Ok(());
    }
    if refresh || stack.spec.instance.image_policy == ImagePolicy::Latest {
        let why = if refresh {
            "--refresh-image"
        } else {
            "instance.image_policy: latest"
        };
        reporter.event(&Event::Info {
            message: format!("`{image}` now resolves to {latest} (the stack runs {pinned}); with {why} the instances move to it"),
        });
        return Ok(());
    }
    match ec2::image(aws, &pinned).await {
        Ok(kept) => {
            reporter.event(&Event::Info {
                message: format!("a newer image is available for `{image}`: {latest} (the stack keeps {pinned}); `iac up --refresh-image` moves to it, replacing the instances"),
            });
            inputs.image_id = kept.id;
            inputs.root_device = kept.root_device;
        }
        Err(e) if e.is(ErrorClass::NotFound) => reporter.event(&Event::Warning {
            message: format!("the stack's image {pinned} is no longer available; moving to {latest} (`{image}`), which replaces the instances"),
        }),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The image id the stack's instances and launch templates were made from with `image` (the
/// most common one). Instances made before the `iac:image` tag existed count by their image id.
fn pinned_image(image: &str, resources: &[Observed]) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in resources {
        let id = match (
            o.tags.get(tags::IMAGE),
            o.tags.get(tags::IMAGE_ID),
            &o.details,
        ) {
            (Some(label), Some(id), _) if label == image => id.as_str(),
            // Made from another `instance.image`: the file changed, that is a move on purpose.
            (Some(_), _, _) => continue,
            (None, _, Details::Instance { image_id, .. }) if !image_id.is_empty() => {
                image_id.as_str()
            }
            _ => continue,
        };
        *counts.entry(id).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(id, n)| (*n, *id))
        .map(|(id, _)| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(kind: Kind, tags_: &[(&str, &str)], image_id: &str) -> Observed {
        let details = match kind {
            Kind::Instance => Details::Instance {
                instance_type: "t3.micro".into(),
                image_id: image_id.into(),
                key_name: None,
                security_group_ids: Vec::new(),
                spec_hash: None,
                public_ip: None,
                private_ip: None,
                root_volume_id: None,
            },
            _ => Details::LaunchTemplate {
                spec_hash: None,
                latest_version: 1,
                default_version: 1,
            },
        };
        Observed {
            id: ResourceId::new("x"),
            kind,
            physical_id: "x".into(),
            state: "running".into(),
            details,
            tags: tags_
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn what_a_second_round_finds_is_listed_in_kind_order_too() {
        let named = |kind, id: &str| Observed {
            id: ResourceId::new(id),
            ..observed(kind, &[], "")
        };
        let mut found = Discovered::of(vec![
            named(Kind::SecurityGroup, "web-sg"),
            named(Kind::Instance, "web-1"),
            named(Kind::Instance, "web-2"),
        ]);
        found.absorb(Discovered::of(vec![named(Kind::LaunchTemplate, "lt")]));
        found.absorb(Discovered::of(vec![named(Kind::KeyPair, "key")]));
        let listed: Vec<(Kind, &str)> = found
            .resources
            .iter()
            .map(|o| (o.kind, o.id.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                (Kind::KeyPair, "key"),
                (Kind::SecurityGroup, "web-sg"),
                (Kind::Instance, "web-1"),
                (Kind::Instance, "web-2"),
                (Kind::LaunchTemplate, "lt"),
            ]
        );
    }

    #[test]
    fn the_pin_is_the_image_the_stack_was_made_from() {
        let lt = observed(
            Kind::LaunchTemplate,
            &[(tags::IMAGE, "ubuntu-24.04"), (tags::IMAGE_ID, "ami-old")],
            "",
        );
        assert_eq!(
            pinned_image("ubuntu-24.04", std::slice::from_ref(&lt)).as_deref(),
            Some("ami-old")
        );
        // Another alias in the file is a move on purpose: nothing pinned.
        assert_eq!(pinned_image("ubuntu-22.04", &[lt]), None);
        // An instance from before the tag existed pins its own image.
        let legacy = observed(Kind::Instance, &[], "ami-legacy");
        assert_eq!(
            pinned_image("ubuntu-24.04", &[legacy]).as_deref(),
            Some("ami-legacy")
        );
        assert_eq!(pinned_image("ubuntu-24.04", &[]), None);
    }

    fn subnets(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn subnets_are_kept_one_per_zone_where_the_type_is_offered() {
        let offered =
            std::collections::BTreeSet::from(["us-east-1a".to_string(), "us-east-1b".to_string()]);
        let types = ["t3.micro".to_string()];
        let found = subnets(&[
            ("subnet-e", "us-east-1e"),
            ("subnet-a1", "us-east-1a"),
            ("subnet-a2", "us-east-1a"),
            ("subnet-b", "us-east-1b"),
        ]);
        assert_eq!(
            usable_subnets(found.clone(), &offered, false, &types),
            Ok(subnets(&[
                ("subnet-a1", "us-east-1a"),
                ("subnet-b", "us-east-1b")
            ]))
        );
        let err = usable_subnets(found, &offered, true, &types).unwrap_err();
        assert!(
            err.contains("subnet-e is in us-east-1e, which does not offer t3.micro"),
            "{err}"
        );
        let twice = subnets(&[("subnet-a1", "us-east-1a"), ("subnet-a2", "us-east-1a")]);
        let err = usable_subnets(twice, &offered, true, &types).unwrap_err();
        assert!(err.contains("both in us-east-1a"), "{err}");
        let none = subnets(&[("subnet-e", "us-east-1e")]);
        assert!(usable_subnets(none, &offered, false, &types).is_err());
    }
}
