//! The `ec2` fleet: the monitor's instances are EC2 instances launched from the stack's agent
//! launch template, tagged with the stack at creation so that `iac down` finds them and a
//! restarted monitor rebuilds its pool from them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_ec2::types::{Filter, LaunchTemplateSpecification, ResourceType};

use super::fleet::{Fleet, FleetError};
use crate::aws::ec2::{launched_id, tag_spec};
use crate::aws::error::{sdk as err, AwsError, ErrorClass};
use crate::aws::{tags, Aws};

// What marks the pool is the tier's declaration; the fleet only follows it.
pub use crate::tiers::custom_scaler::{
    launch_template_name, pool_tags, AGENT_ROLE_VALUE, POOL_VALUE, ROLE_TAG as ROLE,
    SCALER_TAG as SCALER,
};

/// Launches from the launch template, one instance per call so each gets its own subnet (spread
/// over the zones) and its own client token (a retried call never launches twice).
pub struct Ec2Fleet {
    aws: Aws,
    stack: String,
    template: String,
    subnets: Vec<String>,
    tags: BTreeMap<String, String>,
    /// Start of this monitor (ms since the epoch): with the counter, makes client tokens unique
    /// across monitor restarts.
    epoch: u64,
    next: AtomicU64,
}

impl Ec2Fleet {
    pub fn new(
        aws: Aws,
        stack: &str,
        subnets: Vec<String>,
        extra_tags: &BTreeMap<String, String>,
    ) -> Ec2Fleet {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Ec2Fleet {
            aws,
            stack: stack.to_string(),
            template: launch_template_name(stack),
            subnets,
            tags: pool_tags(stack, extra_tags),
            epoch,
            next: AtomicU64::new(0),
        }
    }

    async fn launch_one(&self) -> Result<String, AwsError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        // At most 64 ASCII characters; stack names have at most 32.
        let token = format!("{}-{}-{n}", self.stack, self.epoch);
        let mut req = self
            .aws
            .ec2
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(&self.template)
                    .version("$Latest")
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .client_token(token)
            .tag_specifications(tag_spec(ResourceType::Instance, &self.tags))
            .tag_specifications(tag_spec(ResourceType::Volume, &self.tags));
        if !self.subnets.is_empty() {
            let i = (n as usize) % self.subnets.len();
            req = req.subnet_id(&self.subnets[i]);
        }
        launched_id(req.send().await.map_err(err("ec2:RunInstances"))?)
    }
}

fn fleet_error(e: AwsError) -> FleetError {
    FleetError::Other(e.to_string())
}

#[async_trait::async_trait]
impl Fleet for Ec2Fleet {
    async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError> {
        let mut ids = Vec::new();
        for _ in 0..count {
            match self.launch_one().await {
                Ok(id) => ids.push(id),
                // What was launched so far is returned, so the pool counts it.
                Err(e) if !ids.is_empty() => {
                    tracing::error!(error = %e, launched = ids.len(), "launch stopped part-way");
                    break;
                }
                Err(e) => return Err(fleet_error(e)),
            }
        }
        Ok(ids)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        if ids.is_empty() {
            return Ok(());
        }
        // Never terminate anything that is not this stack's pool, whatever id we are given.
        let ours = self.list().await?;
        let ids: Vec<String> = ids.iter().filter(|i| ours.contains(i)).cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        match self
            .aws
            .ec2
            .terminate_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match AwsError::from_sdk("ec2:TerminateInstances", e) {
                e if e.is(ErrorClass::NotFound) => Ok(()),
                e => Err(fleet_error(e)),
            },
        }
    }

    async fn list(&self) -> Result<Vec<String>, FleetError> {
        self.pool(None).await
    }

    /// One DescribeInstances by the pool's tags: a registration for an id that is not this
    /// stack's running pool instance (another stack's, a terminated one, a made-up one) is
    /// refused. The monitor rate-limits registrations, so these calls are bounded too.
    async fn owns(&self, id: &str) -> Result<bool, FleetError> {
        Ok(self.pool(Some(id)).await?.iter().any(|i| i == id))
    }
}

impl Ec2Fleet {
    /// The stack's pending and running pool instances (only `id`, when given: a filter, not
    /// `InstanceIds`, so an unknown or malformed id is an empty answer, not an error).
    async fn pool(&self, id: Option<&str>) -> Result<Vec<String>, FleetError> {
        let filter = |name: &str, values: &[&str]| {
            Filter::builder()
                .name(name)
                .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
                .build()
        };
        let mut req = self
            .aws
            .ec2
            .describe_instances()
            .filters(filter(&format!("tag:{}", tags::STACK), &[&self.stack]))
            .filters(filter(&format!("tag:{SCALER}"), &[POOL_VALUE]))
            .filters(filter("instance-state-name", &["pending", "running"]));
        if let Some(id) = id {
            req = req.filters(filter("instance-id", &[id]));
        }
        let pages = req
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(err("ec2:DescribeInstances"))
            .map_err(fleet_error)?;
        let mut ids: Vec<String> = pages
            .iter()
            .flat_map(|p| p.reservations())
            .flat_map(|r| r.instances())
            .filter(|i| {
                let stack_tag = i.tags().iter().find(|t| t.key() == Some(tags::STACK));
                tags::belongs(stack_tag.and_then(|t| t.value()), &self.stack)
            })
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }
}
