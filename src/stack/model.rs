//! The stack file as written by the user (format v1).
//!
//! Strict serde: every struct denies unknown fields, so a typo is an error, not a silently ignored
//! key. Defaults live here too; semantic checks live in `validate`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole stack file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    /// Format version of this file. Only `1` exists.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Stack name: every resource is tagged `iac:stack=<name>`. Lowercase letters, digits and
    /// hyphens, starting with a letter, at most 32 characters (it prefixes AWS names with limits).
    pub name: String,
    /// AWS region. Falls back to `--region`, then `AWS_REGION` / the profile, then `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Deployment tier.
    pub tier: Tier,
    /// The containerized application.
    pub app: App,
    /// Where the instances live and who may reach them.
    #[serde(default)]
    pub network: Network,
    /// The virtual machine(s).
    #[serde(default)]
    pub instance: Instance,
    /// Public domain name and HTTPS.
    #[serde(default)]
    pub domain: Option<Domain>,
    /// The application's database.
    #[serde(default)]
    pub database: Option<Database>,
    /// lb-vms: the web VMs behind the balancer.
    #[serde(default)]
    pub web: Option<WebPool>,
    /// lb-vms: the HAProxy VM.
    #[serde(default)]
    pub balancer: Option<Balancer>,
    /// swarm: the cluster and the service.
    #[serde(default)]
    pub swarm: Option<Swarm>,
    /// alb-asg: the Auto Scaling group and its target-tracking policy.
    #[serde(default)]
    pub scaling: Option<Scaling>,
    /// alb-asg: the application load balancer.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerConf>,
    /// alb-asg: the EFS file system mounted on every instance.
    #[serde(default)]
    pub shared_storage: Option<SharedStorage>,
    /// custom-scaler: the monitor, its scaling policy and the agents.
    #[serde(default)]
    pub scaler: Option<ScalerConf>,
    /// Extra tags put on every resource (besides the `iac:*` identity tags).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Protect the stack's data: Aurora deletion protection on, the data volume and the EFS file
    /// system tagged `iac:protected=true`. `down` refuses a protected stack (exit 2) until an
    /// `up` with `protect: false` has lifted it: the protection lives on the resources.
    #[serde(default)]
    pub protect: bool,
}

fn default_version() -> u32 {
    1
}

/// Deployment tier: how the application is laid out on AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// One VM: docker compose (app + MySQL), nginx, certbot, Elastic IP, DNS record.
    SingleVm,
    /// Launch template, ALB, Auto Scaling group, Aurora MySQL, EFS.
    AlbAsg,
    /// Docker Swarm managers and workers running the app as a replicated service.
    Swarm,
    /// Agents on each instance report load to a monitor that scales the pool.
    CustomScaler,
    /// HAProxy in front of web VMs and a database VM.
    LbVms,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::SingleVm => "single-vm",
            Tier::AlbAsg => "alb-asg",
            Tier::Swarm => "swarm",
            Tier::CustomScaler => "custom-scaler",
            Tier::LbVms => "lb-vms",
        }
    }
}

/// The application container.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Container image, e.g. `ghcr.io/acme/bookstore:1.4.2`.
    pub image: String,
    /// Port the container listens on.
    #[serde(default = "default_app_port")]
    pub port: u16,
    /// Path answered with 2xx/3xx when the app is healthy (it should touch the database).
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Plain environment variables. Never put secrets here: use `secrets`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Environment variables whose values are read at boot from SSM Parameter Store
    /// (SecureString), e.g. `SECRET_KEY: { ssm: /bookstore/secret-key }`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
}

fn default_app_port() -> u16 {
    5000
}

fn default_health_path() -> String {
    "/".to_string()
}

/// A reference to a secret held by AWS, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an SSM parameter (usually a SecureString), starting with `/`.
    pub ssm: String,
}

/// Networking.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `default` (the account's default VPC) or a VPC id (`vpc-…`).
    #[serde(default = "default_vpc")]
    pub vpc: String,
    /// Subnet ids. Empty: the default subnets of the VPC.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// CIDR allowed to reach port 22. Absent: port 22 stays closed.
    #[serde(default)]
    pub ssh_from: Option<String>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            vpc: default_vpc(),
            subnets: Vec::new(),
            ssh_from: None,
        }
    }
}

fn default_vpc() -> String {
    "default".to_string()
}

/// The virtual machine.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// EC2 instance type.
    #[serde(default = "default_instance_type", rename = "type")]
    pub instance_type: String,
    /// An alias (`ubuntu-24.04`, `ubuntu-22.04`, `amazon-linux-2023`) resolved through AWS's
    /// public SSM parameters, or an AMI id (`ami-…`).
    #[serde(default = "default_image")]
    pub image: String,
    /// Key pair: an existing name (`vockey` on AWS Academy), or a public key file to import.
    #[serde(default)]
    pub key_pair: Option<KeyPair>,
    /// Root volume size in GiB (encrypted gp3).
    #[serde(default = "default_disk_gb")]
    pub disk_gb: u32,
    /// Existing instance profile name, e.g. `LabInstanceProfile`, or `create`: `iac` then
    /// creates a role and profile limited to the stack's SSM parameters, Run Command and the
    /// database secret (not possible on AWS Academy, which forbids creating IAM roles).
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// What an image alias means once the stack runs: `pinned` (default) keeps the image id the
    /// instances were created from, so a newly published image never replaces them by itself
    /// (`iac up --refresh-image` moves on purpose); `latest` follows the alias on every `up`.
    #[serde(default)]
    pub image_policy: ImagePolicy,
    /// How many network hops an instance metadata (IMDSv2) answer may travel. 1, the default,
    /// keeps the instance's credentials away from its containers; more lets a container read
    /// them (warned about).
    #[serde(default = "default_hop_limit")]
    pub metadata_hop_limit: u8,
}

fn default_hop_limit() -> u8 {
    1
}

impl Default for Instance {
    fn default() -> Self {
        Instance {
            instance_type: default_instance_type(),
            image: default_image(),
            key_pair: None,
            disk_gb: default_disk_gb(),
            instance_profile: None,
            image_policy: ImagePolicy::default(),
            metadata_hop_limit: default_hop_limit(),
        }
    }
}

/// Whether an image alias is resolved once (and kept) or on every run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImagePolicy {
    /// Keep the image id the stack's instances run; say when a newer one is published.
    #[default]
    Pinned,
    /// Resolve the alias on every run: a newly published image replaces the instances.
    Latest,
}

fn default_instance_type() -> String {
    "t3.micro".to_string()
}

fn default_image() -> String {
    "ubuntu-24.04".to_string()
}

fn default_disk_gb() -> u32 {
    20
}

/// A key pair for SSH.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    /// Key pair name. With `public_key_file`, the name `iac` imports the key under.
    pub name: String,
    /// Path (relative to the stack file) of an OpenSSH public key to import.
    #[serde(default)]
    pub public_key_file: Option<String>,
}

/// lb-vms: the web VMs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebPool {
    /// How many web VMs run the app. Changing it adds or removes VMs and updates the balancer
    /// in place.
    pub count: u32,
    /// Instance type of the web VMs (default: `instance.type`).
    #[serde(default, rename = "type")]
    pub instance_type: Option<String>,
}

/// lb-vms: the HAProxy VM.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Balancer {
    /// Instance type of the balancer (default: `instance.type`).
    #[serde(default, rename = "type")]
    pub instance_type: Option<String>,
}

impl StackFile {
    /// The stack file as another machine reads it (the custom scaler's monitor VM): the parsed
    /// file with its defaults, comments and unset keys dropped, and without `public_key_file` (a
    /// path on this machine). It loads and validates like the original.
    pub fn portable_yaml(&self) -> Result<String, String> {
        let mut copy = self.clone();
        if let Some(kp) = copy.instance.key_pair.as_mut() {
            kp.public_key_file = None;
        }
        let mut v = serde_json::to_value(&copy).map_err(|e| e.to_string())?;
        strip_nulls(&mut v);
        let body = yaml_serde::to_string(&v).map_err(|e| e.to_string())?;
        Ok(format!(
            "# Stack `{}` as `iac up` stored it for the monitor: edit the original and run `iac up`.\n{body}",
            self.name
        ))
    }
}

fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Ports Docker Swarm itself uses (so the app cannot publish them): (protocol, port, what).
pub const SWARM_PORTS: &[(&str, u16, &str)] = &[
    ("tcp", 2377, "swarm management"),
    ("tcp", 7946, "swarm gossip"),
    ("udp", 7946, "swarm gossip"),
    ("udp", 4789, "overlay network (VXLAN)"),
];

/// swarm: Docker Swarm managers and workers, and the app as a replicated service.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// Managers: 1, 3 or 5 (an odd number keeps a Raft quorum).
    #[serde(default = "default_managers")]
    pub managers: u32,
    /// Workers that run the service's tasks.
    #[serde(default = "default_workers")]
    pub workers: u32,
    #[serde(default)]
    pub manager_type: Option<String>,
    #[serde(default)]
    pub worker_type: Option<String>,
    /// Tasks of the service.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Where tasks run: `workers` (default), `managers` or `any`.
    #[serde(default)]
    pub placement: Placement,
    /// Port published on every node by the routing mesh. With a domain, nginx on the managers
    /// takes 80/443 and forwards to it, so it must then be another port.
    #[serde(default = "default_published_port")]
    pub published_port: u16,
    /// Rolling update policy.
    #[serde(default)]
    pub update: UpdatePolicy,
}

impl Default for Swarm {
    fn default() -> Self {
        Swarm {
            managers: default_managers(),
            workers: default_workers(),
            manager_type: None,
            worker_type: None,
            replicas: default_replicas(),
            placement: Placement::default(),
            published_port: default_published_port(),
            update: UpdatePolicy::default(),
        }
    }
}

/// Where the service's tasks may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    #[default]
    Workers,
    Managers,
    Any,
}

/// How a new image or replica count rolls out.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Tasks updated at a time.
    #[serde(default = "default_update_parallelism")]
    pub parallelism: u32,
    /// Seconds between batches.
    #[serde(default = "default_update_delay")]
    pub delay_s: u32,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            parallelism: default_update_parallelism(),
            delay_s: default_update_delay(),
        }
    }
}

fn default_managers() -> u32 {
    1
}

fn default_workers() -> u32 {
    2
}

fn default_replicas() -> u32 {
    2
}

fn default_published_port() -> u16 {
    80
}

fn default_update_parallelism() -> u32 {
    1
}

fn default_update_delay() -> u32 {
    10
}

/// alb-asg: group sizes, target tracking and rollouts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    #[serde(default = "default_min")]
    pub min: u32,
    #[serde(default = "default_max")]
    pub max: u32,
    #[serde(default = "default_min")]
    pub desired: u32,
    /// Target average CPU in percent, in (0, 100].
    #[serde(default = "default_cpu_target")]
    pub cpu_target: f64,
    /// Seconds a new instance's metrics are ignored, and the refresh's warm-up.
    #[serde(default = "default_warmup")]
    pub warmup_s: u32,
    /// Seconds before the load balancer's health checks count for a new instance.
    #[serde(default = "default_grace")]
    pub health_check_grace_s: u32,
    /// New instances are protected from scale-in.
    #[serde(default)]
    pub scale_in_protection: bool,
    /// During an instance refresh, the share of capacity kept in service.
    #[serde(default = "default_min_healthy")]
    pub min_healthy_percent: u32,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            min: default_min(),
            max: default_max(),
            desired: default_min(),
            cpu_target: default_cpu_target(),
            warmup_s: default_warmup(),
            health_check_grace_s: default_grace(),
            scale_in_protection: false,
            min_healthy_percent: default_min_healthy(),
        }
    }
}

fn default_min() -> u32 {
    2
}

fn default_max() -> u32 {
    6
}

fn default_cpu_target() -> f64 {
    50.0
}

fn default_warmup() -> u32 {
    120
}

fn default_grace() -> u32 {
    300
}

fn default_min_healthy() -> u32 {
    90
}

/// alb-asg: the load balancer, its listeners and the target group's health checks.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConf {
    /// ACM certificate ARN: adds an HTTPS listener and makes port 80 redirect to it.
    #[serde(default)]
    pub certificate_arn: Option<String>,
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
    #[serde(default = "default_interval")]
    pub interval_s: u32,
    #[serde(default = "default_timeout")]
    pub timeout_s: u32,
    /// Seconds a target drains before it is deregistered.
    #[serde(default = "default_dereg")]
    pub deregistration_delay_s: u32,
}

impl Default for LoadBalancerConf {
    fn default() -> Self {
        LoadBalancerConf {
            certificate_arn: None,
            healthy_threshold: default_healthy(),
            unhealthy_threshold: default_unhealthy(),
            interval_s: default_interval(),
            timeout_s: default_timeout(),
            deregistration_delay_s: default_dereg(),
        }
    }
}

fn default_healthy() -> u32 {
    2
}

fn default_unhealthy() -> u32 {
    3
}

fn default_interval() -> u32 {
    15
}

fn default_timeout() -> u32 {
    5
}

fn default_dereg() -> u32 {
    30
}

/// alb-asg: shared storage on EFS.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedStorage {
    /// Where every instance mounts the file system (also mounted into the container).
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
}

fn default_mount_path() -> String {
    "/mnt/shared".to_string()
}

/// Public DNS name and HTTPS.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// Fully qualified domain name, e.g. `books.example.org`.
    pub name: String,
    /// Contact email for Let's Encrypt.
    pub email: String,
    /// Route 53 hosted zone (id `Z…` or name `example.org`). Absent: point the name at the
    /// Elastic IP yourself; `status` prints the address.
    #[serde(default)]
    pub hosted_zone: Option<String>,
}

/// The application's database.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Database engine: `mysql` (single-vm: a container beside the app), or `mysql` / `mongodb`
    /// on the lb-vms database VM.
    #[serde(default = "default_engine")]
    pub engine: String,
    /// Engine version, e.g. `8.0`.
    #[serde(default = "default_engine_version")]
    pub version: String,
    /// Database (schema) name.
    #[serde(default = "default_db_name")]
    pub name: String,
    /// Application user.
    #[serde(default = "default_db_user")]
    pub user: String,
    /// SSM parameter holding the password. Absent: a password is generated on the instance and
    /// never leaves it.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Environment variable through which the app receives its database URL.
    #[serde(default = "default_url_env")]
    pub url_env: String,
    /// lb-vms: size in GiB of the database VM's data volume (kept by `down` unless
    /// `--delete-data`).
    #[serde(default = "default_volume_gb")]
    pub volume_gb: u32,
    /// lb-vms: instance type of the database VM (default: `instance.type`).
    #[serde(default, rename = "type")]
    pub instance_type: Option<String>,
    /// alb-asg: Aurora instance class, e.g. `db.t3.medium`.
    #[serde(default = "default_instance_class")]
    pub instance_class: String,
    /// alb-asg: Aurora instances in the cluster (the first is the writer).
    #[serde(default = "default_db_instances")]
    pub instances: u32,
    /// alb-asg: days of automated backups.
    #[serde(default = "default_backup_days")]
    pub backup_retention_days: u32,
}

fn default_instance_class() -> String {
    "db.t3.medium".to_string()
}

fn default_db_instances() -> u32 {
    1
}

fn default_backup_days() -> u32 {
    7
}

impl Default for Database {
    fn default() -> Self {
        Database {
            engine: default_engine(),
            version: default_engine_version(),
            name: default_db_name(),
            user: default_db_user(),
            password: None,
            url_env: default_url_env(),
            volume_gb: default_volume_gb(),
            instance_type: None,
            instance_class: default_instance_class(),
            instances: default_db_instances(),
            backup_retention_days: default_backup_days(),
        }
    }
}

fn default_volume_gb() -> u32 {
    10
}

fn default_engine() -> String {
    "mysql".to_string()
}

fn default_engine_version() -> String {
    "8.0".to_string()
}

fn default_db_name() -> String {
    "bookstore".to_string()
}

fn default_db_user() -> String {
    "bookstore".to_string()
}

fn default_url_env() -> String {
    "DATABASE_URL".to_string()
}

/// custom-scaler: the monitor's policy, where it listens and how agents are installed.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalerConf {
    /// Fewest instances in the pool (held on every path, including manual removal).
    #[serde(default = "default_scaler_min")]
    pub min: u32,
    /// Most instances in the pool (held on every path, including replacement of dead ones).
    #[serde(default = "default_scaler_max")]
    pub max: u32,
    /// `thresholds` (step scaling between `low` and `high`) or `target-tracking` (keep the
    /// average load near `target`).
    #[serde(default)]
    pub mode: ScalerMode,
    /// thresholds: average CPU % above which the pool grows.
    #[serde(default = "default_scaler_high")]
    pub high: f64,
    /// thresholds: average CPU % below which the pool shrinks; must be below `high`.
    #[serde(default = "default_scaler_low")]
    pub low: f64,
    /// thresholds: consecutive high samples before a scale-out.
    #[serde(default = "default_out_samples")]
    pub out_samples: u32,
    /// thresholds: consecutive low samples before a scale-in.
    #[serde(default = "default_in_samples")]
    pub in_samples: u32,
    /// thresholds: instances added per scale-out.
    #[serde(default = "default_step")]
    pub step_out: u32,
    /// thresholds: instances removed per scale-in.
    #[serde(default = "default_step")]
    pub step_in: u32,
    /// target-tracking: the average CPU % to keep.
    #[serde(default = "default_scaler_target")]
    pub target: f64,
    /// target-tracking: relative dead band (0.1 = no action within ±10 % of the target).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// target-tracking: scale-in keeps the largest size wanted within this many seconds.
    #[serde(default = "default_scale_in_window")]
    pub scale_in_window_s: u32,
    /// Seconds after a scale-out before the next scale-out or any scale-in.
    #[serde(default = "default_cooldown_out")]
    pub cooldown_out_s: u32,
    /// Seconds after a scale-in before the next scale-in.
    #[serde(default = "default_cooldown_in")]
    pub cooldown_in_s: u32,
    /// Seconds a newly registered instance's load is ignored.
    #[serde(default = "default_scaler_warmup")]
    pub warmup_s: u32,
    /// Milliseconds between heartbeats (at least 100).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u32,
    /// Milliseconds without a heartbeat after which an instance is dead and replaced (at least
    /// two heartbeat intervals).
    #[serde(default = "default_dead_after_ms")]
    pub dead_after_ms: u32,
    /// Seconds a launched instance has to register before it counts as a failed boot.
    #[serde(default = "default_boot_deadline")]
    pub boot_deadline_s: u32,
    /// Seconds a draining instance has to acknowledge before it is terminated anyway.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_s: u32,
    /// Where instances come from: `ec2` (launched from the stack's launch template) or `local`
    /// (agent processes on this machine, for demos and tests).
    #[serde(default)]
    pub fleet: FleetKind,
    /// The monitor: its gRPC port and admin endpoint.
    #[serde(default)]
    pub monitor: MonitorConf,
    /// How the agent binary reaches the instances.
    #[serde(default)]
    pub agent: Option<AgentConf>,
}

impl Default for ScalerConf {
    fn default() -> Self {
        ScalerConf {
            min: default_scaler_min(),
            max: default_scaler_max(),
            mode: ScalerMode::default(),
            high: default_scaler_high(),
            low: default_scaler_low(),
            out_samples: default_out_samples(),
            in_samples: default_in_samples(),
            step_out: default_step(),
            step_in: default_step(),
            target: default_scaler_target(),
            tolerance: default_tolerance(),
            scale_in_window_s: default_scale_in_window(),
            cooldown_out_s: default_cooldown_out(),
            cooldown_in_s: default_cooldown_in(),
            warmup_s: default_scaler_warmup(),
            heartbeat_ms: default_heartbeat_ms(),
            dead_after_ms: default_dead_after_ms(),
            boot_deadline_s: default_boot_deadline(),
            drain_timeout_s: default_drain_timeout(),
            fleet: FleetKind::default(),
            monitor: MonitorConf::default(),
            agent: None,
        }
    }
}

/// How load turns into a pool size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScalerMode {
    #[default]
    Thresholds,
    TargetTracking,
}

/// Where the monitor's instances come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FleetKind {
    #[default]
    Ec2,
    Local,
}

impl FleetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetKind::Ec2 => "ec2",
            FleetKind::Local => "local",
        }
    }
}

/// The monitor process.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorConf {
    /// Port of the gRPC endpoint the agents connect to.
    #[serde(default = "default_monitor_port")]
    pub port: u16,
    /// `host:port` the agents dial. Absent: `iac up` creates a monitor VM and the agents dial
    /// its private address. With the ec2 fleet it must be reachable from the instances (not a
    /// loopback address).
    #[serde(default)]
    pub address: Option<String>,
    /// Loopback `host:port` of the admin API (`iac scale status|add|remove`, Prometheus metrics).
    #[serde(default = "default_monitor_admin")]
    pub admin: String,
    /// Instance type of the monitor VM (default: `instance.type`).
    #[serde(default, rename = "type")]
    pub instance_type: Option<String>,
    /// The `iac` binary the monitor VM runs, fetched at boot and checked against its SHA-256.
    #[serde(default)]
    pub binary: Option<Download>,
}

impl Default for MonitorConf {
    fn default() -> Self {
        MonitorConf {
            port: default_monitor_port(),
            address: None,
            admin: default_monitor_admin(),
            instance_type: None,
            binary: None,
        }
    }
}

/// The agent installed on every pool instance.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConf {
    /// The `iac-agent` binary, fetched at boot and checked against its SHA-256.
    pub binary: Download,
    /// Loopback port of the agent's admin endpoint on each instance.
    #[serde(default = "default_agent_admin_port")]
    pub admin_port: u16,
}

/// A file fetched at boot: HTTPS URL and the SHA-256 it must have.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// `https://` URL of the file.
    pub url: String,
    /// Lowercase hex SHA-256 of the file (64 characters); the instance refuses anything else.
    pub sha256: String,
}

fn default_scaler_min() -> u32 {
    2
}
fn default_scaler_max() -> u32 {
    5
}
fn default_scaler_high() -> f64 {
    75.0
}
fn default_scaler_low() -> f64 {
    15.0
}
fn default_out_samples() -> u32 {
    2
}
fn default_in_samples() -> u32 {
    5
}
fn default_step() -> u32 {
    1
}
fn default_scaler_target() -> f64 {
    50.0
}
fn default_tolerance() -> f64 {
    0.1
}
fn default_scale_in_window() -> u32 {
    300
}
fn default_cooldown_out() -> u32 {
    60
}
fn default_cooldown_in() -> u32 {
    180
}
fn default_scaler_warmup() -> u32 {
    60
}
fn default_heartbeat_ms() -> u32 {
    1000
}
fn default_dead_after_ms() -> u32 {
    5000
}
fn default_boot_deadline() -> u32 {
    300
}
fn default_drain_timeout() -> u32 {
    30
}
fn default_monitor_port() -> u16 {
    7700
}
fn default_monitor_admin() -> String {
    "127.0.0.1:7701".to_string()
}
fn default_agent_admin_port() -> u16 {
    7702
}
