//! EC2 instances that `iac up` launches itself (an Auto Scaling group's and a scaler's are
//! found as `untracked`, never adopted). A swarm node is drained through the leader before it
//! is terminated ([`Drain`]).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType, ResourceType,
    VolumeType,
};
use base64::Engine;

use super::{ignore_gone, not_mine, wait_err, Applier, Discovered, Known, Provider};
use crate::apply::events::Event;
use crate::apply::wait::{self, Backoff, Poll};
use crate::aws::ec2::{self, launched_id, of_stack, stack_filter, tag_map, tag_spec};
use crate::aws::error::{sdk as err, AwsError, ErrorClass};
use crate::aws::{tags, Aws};
use crate::plan::compare::{kind_changed, Compare, Context};
use crate::plan::diff::{instance_spec_hash, short_hash};
use crate::plan::*;

pub struct Instances;

#[async_trait::async_trait]
impl Provider for Instances {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Instance]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        let scan = discover_instances(aws, stack).await?;
        Ok(Discovered {
            resources: scan.live,
            terminated_ids: scan.terminated_ids,
            untracked: scan.untracked,
        })
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let Spec::Instance(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let sg_ids = cx.ids(&s.security_groups, "ec2:RunInstances")?;
        let spec_hash = instance_spec_hash(s);
        let mut t = cx.tags_for(&r.id, r.kind());
        t.insert(tags::SPEC_HASH.to_string(), spec_hash.clone());
        t.insert(tags::USER_DATA_SHA.to_string(), s.user_data_sha.clone());
        t.extend(cx.image_tags(&s.image_id));
        // Unique to this launch of this run (its resolved groups included), and the same for
        // every retry of it: a later run never replays a token with other parameters
        // (IdempotentParameterMismatch), and counting the terminated instances AWS still lists
        // cannot be relied on (they vanish after an hour).
        let token = short_hash(
            format!(
                "{}/{}/{}/{}/{}",
                cx.stack,
                r.id,
                spec_hash,
                sg_ids.join(","),
                cx.launch_nonce
            )
            .as_bytes(),
        );
        // A group or profile created a moment ago can be unknown to EC2 for a few seconds; the
        // same token makes every retry the same launch.
        let what = format!(
            "groups {} and instance profile {}",
            sg_ids.join(","),
            s.instance_profile.as_deref().unwrap_or("-")
        );
        let iid = cx
            .retry_fresh(&r.id, &what, || {
                run_instance(&cx.aws, s, &s.root_device, sg_ids.clone(), &t, &token)
            })
            .await?;
        cx.remember(&r.id, Known::id(&iid));
        Ok(Some(iid))
    }

    /// Running, with its private IP known to what depends on it.
    async fn wait_ready(
        &self,
        cx: &Applier,
        r: &Resource,
        physical_id: &str,
    ) -> Result<(), AwsError> {
        let private_ip = wait_instance(cx, &r.id, physical_id, "running").await?;
        cx.remember(
            &r.id,
            Known {
                physical_id: physical_id.to_string(),
                private_ip,
                ..Default::default()
            },
        );
        Ok(())
    }

    /// The only change in place: a stopped instance is started.
    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        start_instance(&cx.aws, &actual.physical_id).await?;
        wait_instance(cx, &r.id, &actual.physical_id, "running").await?;
        Ok(Some(actual.physical_id.clone()))
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        drain(cx, o).await?;
        terminate_instance(&cx.aws, &o.physical_id).await
    }

    async fn wait_gone(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        wait_instance(cx, &o.id, &o.physical_id, "terminated")
            .await
            .map(|_| ())
    }
}

/// A swarm node leaves the swarm through the leader before it is terminated, when the leader
/// stays.
async fn drain(cx: &Applier, o: &Observed) -> Result<(), AwsError> {
    let (
        Some(d),
        Details::Instance {
            private_ip: Some(ip),
            ..
        },
    ) = (&cx.drain, &o.details)
    else {
        return Ok(());
    };
    if o.id == d.leader || !cx.is_preexisting(&d.leader) {
        return Ok(());
    }
    let leader = cx.need(&d.leader, "ssm:SendCommand")?;
    cx.run_and_wait(
        &o.id,
        &leader.physical_id,
        &(d.command)(ip),
        &format!("iac: drain and remove {} before terminating it", o.id),
    )
    .await
    .map(|_| ())
}

/// Waits for an instance state; returns its private IP once there.
pub(super) async fn wait_instance(
    cx: &Applier,
    id: &ResourceId,
    iid: &str,
    want: &str,
) -> Result<Option<String>, AwsError> {
    let deadline = if want == "running" {
        cx.deadlines.instance_running
    } else {
        cx.deadlines.instance_terminated
    };
    let what = format!("instance {iid} to be {want}");
    let polls = &cx.instance_polls;
    let _waiting = polls.waiting(iid);
    wait::until(id, &what, deadline, Backoff::default(), cx.reporter.as_ref(), || async {
        let found = polls
            .get(iid, |ids| async move { ec2::instance_states(&cx.aws, &ids).await })
            .await?;
        let (state, ip) = match found {
            Some((s, ip)) => (Some(s), ip),
            None => (None, None),
        };
        Ok(match state.as_deref() {
            Some(s) if s == want => Poll::Ready(ip),
            // Gone counts as stopped too: all a stop is wanted for is that it runs no more.
            None if want != "running" => Poll::Ready(None),
            Some("terminated") if want == "stopped" => Poll::Ready(None),
            Some("terminated") if want == "running" => {
                return Err(AwsError::state("ec2:DescribeInstances", ErrorClass::Other, format!("instance {iid} terminated while starting; check its console output and quotas")))
            }
            other => Poll::Pending(other.unwrap_or("unknown").to_string()),
        })
    })
    .await
    .map_err(|e| wait_err(e, "ec2:DescribeInstances"))
}

/// The states of the instances being waited on (state and private IP by instance id), read for
/// all of them at once: one DescribeInstances per round however many instances a run waits for
/// (a swarm's managers and workers, lb-vms' web VMs).
pub(super) type InstancePolls = super::polls::SharedPolls<(String, Option<String>)>;

/// Stops the instance a data volume moves away from, before the detach: the database on
/// it still has the volume mounted, and AWS leaves a volume detached from under a mounted
/// file system `busy` indefinitely. Stopping shuts the database down cleanly and unmounts;
/// the instance is being replaced anyway (it is terminated once its successor runs).
pub(super) async fn release_volume(
    cx: &Applier,
    id: &ResourceId,
    instance_id: &str,
) -> Result<(), AwsError> {
    let state = ec2::instance_state_ip(&cx.aws, instance_id).await?;
    if !matches!(state, Some((ref s, _)) if s == "running" || s == "pending" || s == "stopping") {
        return Ok(());
    }
    cx.reporter.event(&Event::Info {
        message: format!(
            "{id}: stopping {instance_id} so that the data volume is unmounted before it moves"
        ),
    });
    ignore_gone(stop_instance(&cx.aws, instance_id).await)?;
    wait_instance(cx, id, instance_id, "stopped")
        .await
        .map(|_| ())
}

/// The stack's instances, split into live and gone.
#[derive(Debug, Default)]
pub struct InstanceScan {
    pub live: Vec<Observed>,
    /// Terminated (or terminating) instances, which DescribeInstances lists for about an hour.
    pub terminated_ids: Vec<String>,
    /// Live instances tagged with the stack but without `iac:id`: launched by something of the
    /// stack rather than by `iac up` (an Auto Scaling group, the custom scaler's monitor). Their
    /// `id` is empty; the caller decides what they are.
    pub untracked: Vec<Observed>,
}

pub async fn discover_instances(aws: &Aws, stack: &str) -> Result<InstanceScan, AwsError> {
    let pages = aws
        .ec2
        .describe_instances()
        .filters(stack_filter(stack))
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("ec2:DescribeInstances"))?;
    let mut scan = InstanceScan::default();
    for i in pages
        .iter()
        .flat_map(|p| p.reservations())
        .flat_map(|r| r.instances())
        .filter(|i| of_stack(i.tags(), stack))
    {
        let t = tag_map(i.tags());
        let state = i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        if state == "terminated" || state == "shutting-down" {
            scan.terminated_ids
                .extend(i.instance_id().map(str::to_string));
            continue;
        }
        let details = Details::Instance {
            instance_type: i
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            image_id: i.image_id().unwrap_or_default().to_string(),
            key_name: i.key_name().map(str::to_string),
            security_group_ids: i
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect(),
            spec_hash: t.get(tags::SPEC_HASH).cloned(),
            public_ip: i.public_ip_address().map(str::to_string),
            private_ip: i.private_ip_address().map(str::to_string),
            root_volume_id: i.root_device_name().and_then(|root| {
                i.block_device_mappings()
                    .iter()
                    .find(|m| m.device_name() == Some(root))
                    .and_then(|m| m.ebs()?.volume_id())
                    .map(str::to_string)
            }),
        };
        let physical_id = i.instance_id().unwrap_or_default().to_string();
        if t.contains_key(tags::ID) {
            scan.live.extend(Observed::tagged(
                t,
                Kind::Instance,
                physical_id,
                state,
                details,
            ));
        } else {
            scan.untracked.push(Observed {
                id: ResourceId::new(""),
                kind: Kind::Instance,
                physical_id,
                state,
                details,
                tags: t,
            });
        }
    }
    Ok(scan)
}

/// Launches one instance: IMDSv2 required, encrypted gp3 root volume, tagged at creation
/// (instance and volume), idempotent through `client_token`.
pub async fn run_instance(
    aws: &Aws,
    spec: &InstanceSpec,
    root_device: &str,
    security_group_ids: Vec<String>,
    tags_: &BTreeMap<String, String>,
    client_token: &str,
) -> Result<String, AwsError> {
    let user_data = base64::engine::general_purpose::STANDARD.encode(&spec.user_data);
    let mut req = aws
        .ec2
        .run_instances()
        .image_id(&spec.image_id)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .client_token(client_token)
        .set_security_group_ids(Some(security_group_ids))
        .user_data(user_data)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_put_response_hop_limit(i32::from(spec.metadata_hop_limit))
                .build(),
        )
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(root_device)
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(spec.disk_gb as i32)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(tag_spec(ResourceType::Instance, tags_))
        .tag_specifications(tag_spec(ResourceType::Volume, tags_));
    if let Some(k) = &spec.key_name {
        req = req.key_name(k);
    }
    if let Some(s) = &spec.subnet_id {
        req = req.subnet_id(s);
    }
    if let Some(p) = &spec.instance_profile {
        req = req.iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
    }
    launched_id(req.send().await.map_err(err("ec2:RunInstances"))?)
}

/// A value unique to this process and moment, for client tokens that must differ between runs
/// (not secret: it only keeps one run's launches apart from another's).
pub fn launch_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

pub async fn start_instance(aws: &Aws, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .start_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:StartInstances"))
}

/// Stops an instance (its disks stay), so a data volume can be detached with nothing writing to it.
pub async fn stop_instance(aws: &Aws, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .stop_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:StopInstances"))
}

pub async fn terminate_instance(aws: &Aws, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:TerminateInstances"))
}

impl Compare for InstanceSpec {
    /// What an instance launched with cannot change in place (its type, image, key, groups,
    /// user-data: the spec hash); a stopped one is started.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::Instance {
            instance_type,
            image_id,
            key_name,
            security_group_ids,
            spec_hash,
            ..
        } = &found.details
        else {
            return kind_changed();
        };
        let s = self;
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
        let wanted_groups: Option<BTreeSet<&str>> =
            s.security_groups.iter().map(|g| cx.physical(g)).collect();
        let have_groups: BTreeSet<&str> = security_group_ids.iter().map(String::as_str).collect();
        if wanted_groups.as_ref() != Some(&have_groups) {
            reasons.push("security groups changed".to_string());
        }
        if reasons.is_empty() && spec_hash.as_deref() != Some(instance_spec_hash(s).as_str()) {
            reasons.push("user-data or launch settings changed".to_string());
        }
        if !reasons.is_empty() {
            Action::Replace { reasons }
        } else if found.state == "stopped" {
            Action::Update {
                reasons: vec!["instance is stopped: start it".to_string()],
            }
        } else {
            Action::Keep
        }
    }
}
