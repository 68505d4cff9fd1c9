//! Specs of the managed-service resources (load balancing, auto scaling, Aurora, EFS) and
//! launch templates, whichever tier declares them.

use serde::Serialize;

use super::resource::ResourceId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbSubnetGroupSpec {
    pub name: String,
    pub description: String,
    pub subnet_ids: Vec<String>,
}

/// An Aurora MySQL cluster: always storage-encrypted, master password managed by RDS in
/// Secrets Manager (never seen by `iac`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbClusterSpec {
    pub identifier: String,
    pub engine: String,
    /// `None`: RDS picks its current default version for the engine.
    pub engine_version: Option<String>,
    pub database_name: String,
    pub master_username: String,
    pub subnet_group: ResourceId,
    pub security_groups: Vec<ResourceId>,
    pub backup_retention_days: i32,
    pub port: u16,
    /// `protect: true`: RDS refuses to delete the cluster, and `down` refuses the stack.
    pub deletion_protection: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbInstanceSpec {
    pub identifier: String,
    pub cluster: ResourceId,
    pub instance_class: String,
    pub engine: String,
}

/// An encrypted EFS file system, idempotent through its creation token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSystemSpec {
    pub creation_token: String,
    /// Data: `down` keeps it unless `--delete-data`.
    pub keep_on_down: bool,
    /// `protect: true`: tagged `iac:protected=true`; `down` refuses the stack.
    pub protected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountTargetSpec {
    pub file_system: ResourceId,
    pub subnet_id: String,
    pub security_groups: Vec<ResourceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroupSpec {
    /// At most 32 characters.
    pub name: String,
    pub port: u16,
    pub vpc_id: String,
    pub health_path: String,
    pub healthy_threshold: i32,
    pub unhealthy_threshold: i32,
    pub interval_s: i32,
    pub timeout_s: i32,
    /// HTTP codes that count as healthy, e.g. `200-399`.
    pub matcher: String,
    pub deregistration_delay_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadBalancerSpec {
    /// At most 32 characters.
    pub name: String,
    pub subnet_ids: Vec<String>,
    pub security_groups: Vec<ResourceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerAction {
    /// Forward to a target group.
    Forward(ResourceId),
    /// HTTP 301 to HTTPS on 443.
    RedirectHttps,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerSpec {
    pub load_balancer: ResourceId,
    pub port: u16,
    pub action: ListenerAction,
    /// ACM certificate for HTTPS listeners.
    pub certificate_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchTemplateSpec {
    pub name: String,
    pub image_id: String,
    pub root_device: String,
    pub instance_type: String,
    pub key_name: Option<String>,
    pub instance_profile: Option<String>,
    pub security_groups: Vec<ResourceId>,
    pub disk_gb: u32,
    /// IMDSv2 response hop limit: 1 unless the stack raises it.
    pub metadata_hop_limit: u8,
    #[serde(skip)]
    pub user_data: Vec<u8>,
    pub user_data_sha: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoScalingGroupSpec {
    pub name: String,
    pub launch_template: ResourceId,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub subnet_ids: Vec<String>,
    pub target_groups: Vec<ResourceId>,
    pub health_check_grace_s: u32,
    pub scale_in_protection: bool,
    /// Instance refresh: the share of capacity that stays in service during a rollout.
    pub min_healthy_percent: u32,
    pub warmup_s: u32,
    /// The role its instances play in the stack: tagged on each (their name in `iac logs`).
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingPolicySpec {
    pub name: String,
    pub group: ResourceId,
    /// Target average CPU, percent.
    pub cpu_target: f64,
    pub warmup_s: u32,
}

// Target values are finite numbers from a validated file, so equality is total here.
impl Eq for ScalingPolicySpec {}
