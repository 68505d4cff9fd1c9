//! What the instances of one machine role may do, declared by the tier as data. The provider
//! (`aws::iam`) turns it into the role's policy; nothing here knows a tier or IAM's syntax.

use std::collections::BTreeMap;

use serde::Serialize;

/// The rights of one machine role (a web VM, a swarm worker, the scaler's monitor...). Every
/// role may also talk to the Systems Manager agent's channels, so that `iac` can reach it with
/// Run Command; everything else is listed here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoleGrants {
    /// SSM parameters (full names) its boot script or its commands read.
    pub reads: Vec<String>,
    /// SSM parameters it publishes. Empty for every role but the one that owns a fact (swarm's
    /// first manager and its join tokens).
    pub writes: Vec<String>,
    /// The path (`/iac/<stack>/boot/`) under which each of its instances publishes its boot
    /// report, a parameter named after the instance. Set for every role of a stack.
    pub boot_reports: Option<String>,
    /// The Aurora cluster (identifier) whose password secret, managed by RDS, it reads.
    pub db_secret_of: Option<String>,
    /// Launching and terminating a pool of instances (the custom scaler's monitor).
    pub pool: Option<PoolGrant>,
}

/// The right to launch instances from one launch template and to terminate them again, and
/// nothing else: no other template, no instance without the pool's tags, no tag added after
/// launch, no other role handed to what it launches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolGrant {
    /// Tags that identify the one launch template it may launch from.
    pub template_tags: BTreeMap<String, String>,
    /// Tags every instance (and volume) it launches must carry in the launch request, and that
    /// an instance must carry to be terminated by it.
    pub pool_tags: BTreeMap<String, String>,
    /// Path and name of the only role it may pass to what it launches (the pool's own role).
    pub pass_role_path: String,
    pub pass_role: String,
}
