//! EBS data volumes: created blank in their instance's zone, encrypted, attached; moved to a
//! replacement instance (the old one stopped first, so the database on it shuts down cleanly);
//! kept by `down` unless `--delete-data` (the caller leaves them out).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, VolumeType};

use super::instance::release_volume;
use super::{ignore_gone, not_mine, wait_err, Applier, Discovered, Early, Known, Provider};
use crate::apply::wait::{self, Backoff, Poll};
use crate::aws::ec2::{self, of_stack, stack_filter, tag_map, tag_spec};
use crate::aws::error::{sdk as err, AwsError, ErrorClass};
use crate::aws::{tags, Aws};
use crate::plan::compare::{kind_changed, protection, update_if, Compare, Context};
use crate::plan::*;

pub struct Volumes;

#[async_trait::async_trait]
impl Provider for Volumes {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Volume]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(discover_volumes(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        attach(cx, r, None).await
    }

    /// The volume is made in its zone (and becomes `available`) while its instance launches.
    fn create_early(&self, cx: &Applier, r: &Resource) -> Option<Early> {
        let Spec::Volume(s) = &r.spec else {
            return None;
        };
        let (cx, id, s, t) = (
            cx.clone(),
            r.id.clone(),
            s.clone(),
            new_volume_tags(cx, r, s),
        );
        Some(Box::pin(async move {
            let vid = create_volume(&cx.aws, &s.availability_zone, s.size_gb, &t).await?;
            wait_volume(&cx, &id, &vid, "available").await?;
            Ok(Known::id(&vid))
        }))
    }

    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        attach(cx, r, Some(actual)).await
    }

    /// Detached first (the instance it was on may have been terminated by an earlier node of
    /// this same run, which detaches it: the attachment is read now).
    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let aws = &cx.aws;
        if let Some((_, Some(on))) = volume_state(aws, &o.physical_id).await? {
            ignore_gone(detach_volume(aws, &o.physical_id, &on).await)?;
            wait_volume(cx, &o.id, &o.physical_id, "available").await?;
        }
        cx.retry_in_use(
            &o.id,
            &format!("volume {} to be free", o.physical_id),
            || delete_volume(aws, &o.physical_id),
        )
        .await
    }
}

/// The volume of `r` attached to its instance: `actual`, moved from another instance when it
/// is on one, or a new one.
async fn attach(
    cx: &Applier,
    r: &Resource,
    actual: Option<&Observed>,
) -> Result<Option<String>, AwsError> {
    let Spec::Volume(s) = &r.spec else {
        return Err(not_mine(r));
    };
    let aws = &cx.aws;
    let instance = cx.need(&s.attach_to, "ec2:AttachVolume")?;
    // The volume, and whether it is `available` already (its early part waited for that).
    let (vid, available) = match actual {
        Some(a) => {
            if let Details::Volume {
                attached_to,
                protected,
                ..
            } = &a.details
            {
                if *protected != s.protected {
                    ec2::set_protected(aws, &a.physical_id, s.protected).await?;
                }
                match attached_to {
                    // A protection change only: nothing to move.
                    Some(old) if old == &instance.physical_id => {
                        cx.remember(&r.id, Known::id(&a.physical_id));
                        return Ok(Some(a.physical_id.clone()));
                    }
                    Some(old) => {
                        // Moving to a new instance: stop the old one first, so the database
                        // on the volume is shut down cleanly and nothing writes while it is
                        // detached (a mounted volume can stay `busy` or be left inconsistent).
                        // The old one is terminated later, in the delete phase.
                        release_volume(cx, &r.id, old).await?;
                        ignore_gone(detach_volume(aws, &a.physical_id, old).await)?;
                    }
                    None => {}
                }
            }
            (a.physical_id.clone(), false)
        }
        None => match cx.made_early(&r.id).await {
            Some(made) => (made?.physical_id, true),
            None => {
                let t = new_volume_tags(cx, r, s);
                let vid = create_volume(aws, &s.availability_zone, s.size_gb, &t).await?;
                (vid, false)
            }
        },
    };
    cx.remember(&r.id, Known::id(&vid));
    if !available {
        wait_volume(cx, &r.id, &vid, "available").await?;
    }
    attach_volume(aws, &vid, &instance.physical_id, &s.device).await?;
    Ok(Some(vid))
}

/// The tags a new volume is made with: the stack's, and whether `down` keeps it and whether it
/// is protected.
fn new_volume_tags(cx: &Applier, r: &Resource, s: &VolumeSpec) -> BTreeMap<String, String> {
    let mut t = cx.tags_for(&r.id, r.kind());
    if s.keep_on_down {
        t.insert(tags::DATA.to_string(), "true".to_string());
    }
    if s.protected {
        t.insert(tags::PROTECTED.to_string(), "true".to_string());
    }
    t
}

/// Waits until a volume is in `want` state (`available` after create or detach).
async fn wait_volume(cx: &Applier, id: &ResourceId, vid: &str, want: &str) -> Result<(), AwsError> {
    let what = format!("volume {vid} to be {want}");
    wait::until(
        id,
        &what,
        cx.deadlines.dependency,
        Backoff::default(),
        cx.reporter.as_ref(),
        || async {
            Ok(match volume_state(&cx.aws, vid).await? {
                Some((state, _)) if state == want => Poll::Ready(()),
                Some((state, _)) => Poll::Pending(state),
                None => {
                    return Err(AwsError::state(
                        "ec2:DescribeVolumes",
                        ErrorClass::NotFound,
                        format!("volume {vid} disappeared"),
                    ))
                }
            })
        },
    )
    .await
    .map_err(|e| wait_err(e, "ec2:DescribeVolumes"))
}

/// Data volumes of the stack (root volumes carry `iac:kind=instance` and are not listed).
pub async fn discover_volumes(aws: &Aws, stack: &str) -> Result<Vec<Observed>, AwsError> {
    let pages = aws
        .ec2
        .describe_volumes()
        .filters(stack_filter(stack))
        .filters(
            Filter::builder()
                .name(format!("tag:{}", tags::KIND))
                .values(Kind::Volume.as_str())
                .build(),
        )
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("ec2:DescribeVolumes"))?;
    Ok(pages
        .iter()
        .flat_map(|p| p.volumes())
        .filter(|v| of_stack(v.tags(), stack))
        .filter_map(|v| {
            let t = tag_map(v.tags());
            let state = v
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            if state == "deleting" || state == "deleted" {
                return None;
            }
            let details = Details::Volume {
                availability_zone: v.availability_zone().unwrap_or_default().to_string(),
                size_gb: v.size().unwrap_or(0) as u32,
                attached_to: v
                    .attachments()
                    .iter()
                    .find_map(|a| a.instance_id().map(str::to_string)),
                keep_on_down: t.get(tags::DATA).is_some_and(|d| d == "true"),
                protected: t.get(tags::PROTECTED).is_some_and(|d| d == "true"),
            };
            Observed::tagged(t, Kind::Volume, v.volume_id()?.to_string(), state, details)
        })
        .collect())
}

/// Creates an encrypted gp3 volume, tagged at creation.
pub async fn create_volume(
    aws: &Aws,
    az: &str,
    size_gb: u32,
    tags_: &BTreeMap<String, String>,
) -> Result<String, AwsError> {
    let out = aws
        .ec2
        .create_volume()
        .availability_zone(az)
        .size(size_gb as i32)
        .volume_type(VolumeType::Gp3)
        .encrypted(true)
        .tag_specifications(tag_spec(ResourceType::Volume, tags_))
        .send()
        .await
        .map_err(err("ec2:CreateVolume"))?;
    out.volume_id().map(str::to_string).ok_or_else(|| {
        AwsError::state(
            "ec2:CreateVolume",
            ErrorClass::Other,
            "no volume id in the answer",
        )
    })
}

/// The state of a volume (`creating`, `available`, `in-use`, …) and the instance it is attached to.
pub async fn volume_state(
    aws: &Aws,
    volume_id: &str,
) -> Result<Option<(String, Option<String>)>, AwsError> {
    match aws
        .ec2
        .describe_volumes()
        .volume_ids(volume_id)
        .send()
        .await
    {
        Ok(o) => Ok(o.volumes().first().map(|v| {
            (
                v.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                v.attachments()
                    .iter()
                    .find_map(|a| a.instance_id().map(str::to_string)),
            )
        })),
        Err(e) => match AwsError::from_sdk("ec2:DescribeVolumes", e) {
            e if e.is(ErrorClass::NotFound) => Ok(None),
            e => Err(e),
        },
    }
}

pub async fn attach_volume(
    aws: &Aws,
    volume_id: &str,
    instance_id: &str,
    device: &str,
) -> Result<(), AwsError> {
    aws.ec2
        .attach_volume()
        .volume_id(volume_id)
        .instance_id(instance_id)
        .device(device)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:AttachVolume"))
}

/// Detaches a volume from `instance_id` (named: the emulator fails without it once the
/// instance is stopped).
pub async fn detach_volume(aws: &Aws, volume_id: &str, instance_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .detach_volume()
        .volume_id(volume_id)
        .instance_id(instance_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DetachVolume"))
}

pub async fn delete_volume(aws: &Aws, volume_id: &str) -> Result<(), AwsError> {
    aws.ec2
        .delete_volume()
        .volume_id(volume_id)
        .send()
        .await
        .map(|_| ())
        .map_err(err("ec2:DeleteVolume"))
}

impl Compare for VolumeSpec {
    /// A volume stays in its zone; its protection and attachment change in place.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::Volume {
            attached_to,
            availability_zone,
            protected,
            ..
        } = &found.details
        else {
            return kind_changed();
        };
        // A volume attaches only to instances in its own zone.
        if !self.availability_zone.is_empty() && &self.availability_zone != availability_zone {
            return Action::Replace {
                reasons: vec![format!(
                    "zone {availability_zone} → {}",
                    self.availability_zone
                )],
            };
        }
        let mut reasons = Vec::new();
        if *protected != self.protected {
            reasons.push(protection(self.protected));
        }
        if cx.renewed.contains(&self.attach_to) {
            reasons.push(format!("attach to the new {}", self.attach_to));
        } else if let Some(instance) = cx.physical(&self.attach_to) {
            if attached_to.as_deref() != Some(instance) {
                reasons.push(format!("attach to {instance}"));
            }
        }
        update_if(reasons)
    }
}
