//! Resource identity, desired specs and observed state.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::compare::{Compare, Context};
use super::managed::*;
use super::Action;

/// The logical id of a resource within its stack (`web-sg`, `instance`, …), stored in the
/// `iac:id` tag. Stable across runs: it is how `up` finds what it made before.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourceId(pub String);

impl ResourceId {
    pub fn new(s: impl Into<String>) -> Self {
        ResourceId(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A load balancer's listener on `port` (also the id discovery gives a listener without an
    /// `iac:id` tag).
    pub fn listener(port: u16) -> Self {
        ResourceId(format!("listener-{port}"))
    }

    /// A file system's mount target in `subnet_id` (mount targets cannot be tagged).
    pub fn mount_target(subnet_id: &str) -> Self {
        ResourceId(format!("mount-{subnet_id}"))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Declares the kinds of AWS resources `iac` manages, each with the type of its desired spec and
/// the name it goes by (in tags, plans and the stack's record of kinds): [`Kind`], [`Kind::ALL`],
/// [`Kind::as_str`], [`Spec`] and [`Spec::kind`] all come from this one list, so none of them
/// can miss a kind.
macro_rules! kinds {
    ($($kind:ident($spec:ident) = $name:literal,)+) => {
        /// Kinds of AWS resources `iac` manages. The order of the variants is the order of
        /// creation between kinds; deletion runs in reverse.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum Kind {
            $($kind,)+
        }

        impl Kind {
            /// Every kind, in the order of creation.
            pub const ALL: [Kind; [$($name),+].len()] = [$(Kind::$kind),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)+
                }
            }
        }

        /// What a resource should be.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        pub enum Spec {
            $($kind($spec),)+
        }

        impl Spec {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Spec::$kind(_) => Kind::$kind,)+
                }
            }

            /// How this spec compares with what was found of it: its kind's [`Compare`],
            /// which every spec type must implement.
            pub fn compare(&self, found: &Observed, cx: &Context) -> Action {
                match self {
                    $(Spec::$kind(s) => s.compare(found, cx),)+
                }
            }
        }
    };
}

kinds! {
    KeyPair(KeyPairSpec) = "key-pair",
    InstanceProfile(InstanceProfileSpec) = "instance-profile",
    SsmParameter(SsmParameterSpec) = "ssm-parameter",
    SecurityGroup(SecurityGroupSpec) = "security-group",
    DbSubnetGroup(DbSubnetGroupSpec) = "db-subnet-group",
    FileSystem(FileSystemSpec) = "file-system",
    MountTarget(MountTargetSpec) = "mount-target",
    DbCluster(DbClusterSpec) = "db-cluster",
    DbInstance(DbInstanceSpec) = "db-instance",
    Volume(VolumeSpec) = "volume",
    Instance(InstanceSpec) = "instance",
    TargetGroup(TargetGroupSpec) = "target-group",
    LoadBalancer(LoadBalancerSpec) = "load-balancer",
    Listener(ListenerSpec) = "listener",
    LaunchTemplate(LaunchTemplateSpec) = "launch-template",
    AutoScalingGroup(AutoScalingGroupSpec) = "auto-scaling-group",
    ScalingPolicy(ScalingPolicySpec) = "scaling-policy",
    ElasticIp(ElasticIpSpec) = "elastic-ip",
    DnsRecord(DnsRecordSpec) = "dns-record",
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where an ingress rule admits traffic from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Cidr(String),
    /// Another security group of the same stack, by logical id.
    Group(ResourceId),
}

/// One inbound rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IngressRule {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub from_port: u16,
    pub to_port: u16,
    pub source: Source,
    pub description: String,
}

impl fmt::Display for IngressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = if self.from_port == self.to_port {
            self.from_port.to_string()
        } else {
            format!("{}-{}", self.from_port, self.to_port)
        };
        match &self.source {
            Source::Cidr(c) => write!(f, "{}/{} from {}", self.protocol, ports, c),
            Source::Group(g) => write!(f, "{}/{} from group {}", self.protocol, ports, g),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroupSpec {
    pub group_name: String,
    pub description: String,
    pub vpc_id: String,
    pub ingress: Vec<IngressRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPairSpec {
    pub key_name: String,
    /// OpenSSH public key text.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceSpec {
    pub instance_type: String,
    pub image_id: String,
    /// Root device of the image, for the encrypted root volume mapping.
    pub root_device: String,
    /// The key pair name (an existing one, or the one a `KeyPair` resource imports).
    pub key_name: Option<String>,
    pub security_groups: Vec<ResourceId>,
    pub subnet_id: Option<String>,
    pub instance_profile: Option<String>,
    pub disk_gb: u32,
    /// IMDSv2 response hop limit: 1 unless the stack raises it.
    pub metadata_hop_limit: u8,
    /// The user-data payload, as sent (possibly gzip-compressed).
    #[serde(skip)]
    pub user_data: Vec<u8>,
    /// sha256 of the rendered script, kept as a tag to detect changes.
    pub user_data_sha: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElasticIpSpec {
    pub instance: ResourceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecordSpec {
    pub zone_id: String,
    /// Fully qualified name, without the trailing dot.
    pub name: String,
    pub ttl: i64,
    /// The Elastic IP whose address the A record holds.
    pub target: ResourceId,
}

/// The value of an SSM parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamValue {
    /// Text in which `iac-ip-of-<id>.invalid` stands for the private IP of instance `<id>`, known once it
    /// runs (a database address, a balancer's backend list).
    Template { text: String, refs: Vec<ResourceId> },
    /// A random password generated by `iac` when the parameter is created, then never read,
    /// printed or changed.
    Generated,
    /// A TLS server bundle generated by `iac` when the parameter is created, then never read,
    /// printed or changed: the private key, the certificate for `server_name` and the CA that
    /// signed it (PEM, in that order). The CA's own key is not kept.
    GeneratedTls { server_name: String },
    /// Written by the stack's instances (swarm join tokens): `iac` never creates or compares it,
    /// but it belongs to the stack, so it is not an orphan and `down` deletes it.
    WrittenByInstances,
}

/// The placeholder for an attribute of another resource in a [`ParamValue::Template`]: a name
/// under the reserved `.invalid` domain, so it passes renderers' address checks and can never be
/// real. Attributes: `ip` (an instance's private IP), `endpoint` and `secret` (a database
/// cluster's writer endpoint and secret ARN), `id` (the physical id).
pub fn ref_placeholder(id: &str, attr: &str) -> String {
    format!("iac-{attr}-of-{id}.invalid")
}

/// The placeholder for an instance's private IP.
pub fn ip_placeholder(id: &str) -> String {
    ref_placeholder(id, "ip")
}

/// The attributes of an observed resource that templates, outputs and readiness read: `id`
/// (physical), `ip` (private), `public_ip`, `dns`, `endpoint`, `secret`, `version` (a launch
/// template's default), `value` (a plain parameter's), and a group's `desired`, `instances` and
/// `in_service` (comma-separated ids).
pub fn attrs_of(o: &Observed) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("id".to_string(), o.physical_id.clone());
    let mut set = |k: &str, v: &str| {
        a.insert(k.to_string(), v.to_string());
    };
    match &o.details {
        Details::Instance {
            private_ip,
            public_ip,
            ..
        } => {
            private_ip.iter().for_each(|ip| set("ip", ip));
            public_ip.iter().for_each(|ip| set("public_ip", ip));
        }
        Details::ElasticIp { public_ip, .. } => set("public_ip", public_ip),
        Details::DbCluster {
            endpoint,
            secret_arn,
            ..
        } => {
            endpoint.iter().for_each(|e| set("endpoint", e));
            secret_arn.iter().for_each(|s| set("secret", s));
        }
        Details::LoadBalancer { dns_name, .. } => set("dns", dns_name),
        Details::LaunchTemplate {
            default_version, ..
        } => set("version", &default_version.to_string()),
        Details::SsmParameter {
            value: Some(v),
            secure: false,
        } => set("value", v),
        Details::AutoScalingGroup {
            desired,
            instances,
            in_service,
            ..
        } => {
            set("desired", &desired.to_string());
            set("instances", &instances.to_string());
            set("in_service", &in_service.join(","));
        }
        _ => {}
    }
    a
}

/// What is known of one resource, after a run or from discovery: its kind, physical id and
/// [`attrs_of`]. What `up` and `status` print and what `up` waits for are read from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub kind: Kind,
    pub physical_id: String,
    pub attrs: BTreeMap<String, String>,
}

impl Fact {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// Facts by logical id.
pub type Facts = BTreeMap<ResourceId, Fact>;

/// The facts of what discovery found (resources with a logical id).
pub fn facts_of(found: &[Observed]) -> Facts {
    found
        .iter()
        .map(|o| {
            (
                o.id.clone(),
                Fact {
                    kind: o.kind,
                    physical_id: o.physical_id.clone(),
                    attrs: attrs_of(o),
                },
            )
        })
        .collect()
}

/// Fills the placeholders of `refs` in `text`; `None` when one is still unknown.
pub fn fill_template(
    text: &str,
    refs: &[ResourceId],
    attrs: &dyn Fn(&ResourceId) -> Option<BTreeMap<String, String>>,
) -> Option<String> {
    let mut out = text.to_string();
    for r in refs {
        let a = attrs(r)?;
        for (k, v) in &a {
            out = out.replace(&ref_placeholder(r.as_str(), k), v);
        }
        if out.contains(&format!("-of-{}.invalid", r.as_str())) {
            return None;
        }
    }
    Some(out)
}

/// A command sent through SSM Run Command after a parameter changes, so a running instance picks
/// the new value up in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notify {
    /// An instance, or an Auto Scaling group: the command then goes to each instance the group
    /// has in service at that moment (one at a time), whichever it replaced since discovery.
    pub instance: ResourceId,
    pub command: String,
    pub comment: String,
    /// Commands sent to another instance just before and after this one (lb-vms: take the web
    /// VM out of the balancer, then put it back), so it is updated while it serves no one.
    pub around: Option<Around>,
}

/// See [`Notify::around`]. `after` also runs when `command` fails: the old app still serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Around {
    pub instance: ResourceId,
    pub before: String,
    pub after: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SsmParameterSpec {
    /// Full name, under `/iac/<stack>/`.
    pub name: String,
    /// SecureString (encrypted) rather than String.
    pub secure: bool,
    pub value: ParamValue,
    /// Sent in order, one at a time, after the value changed. When one fails, the parameter is
    /// set back to its previous value and those already sent are sent again, so every instance
    /// returns to the last good value.
    pub notify: Vec<Notify>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSpec {
    pub size_gb: u32,
    pub availability_zone: String,
    /// The instance it is attached to, and as which device.
    pub attach_to: ResourceId,
    pub device: String,
    /// Data that `down` keeps unless `--delete-data`.
    pub keep_on_down: bool,
    /// `protect: true`: tagged `iac:protected=true`; `down` refuses the stack.
    pub protected: bool,
}

/// An IAM role and instance profile of the same name for one machine role, created when the
/// stack asks for `instance_profile: create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceProfileSpec {
    pub name: String,
    /// `/iac/<stack>/`: how the profile is found again (IAM lists by path).
    pub path: String,
    /// What the role's instances may do; the provider writes it as the role's only policy.
    pub grants: super::RoleGrants,
}

/// A desired resource: a node of the stack's graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub id: ResourceId,
    pub spec: Spec,
    /// Resources that must exist before this one.
    pub deps: Vec<ResourceId>,
}

impl Resource {
    pub fn new(id: &str, spec: Spec, deps: &[&str]) -> Self {
        Resource {
            id: ResourceId::new(id),
            spec,
            deps: deps.iter().map(|d| ResourceId::new(*d)).collect(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }
}

/// Observed state of a resource, as discovered by its tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Logical id from the `iac:id` tag.
    pub id: ResourceId,
    pub kind: Kind,
    /// The AWS id (`sg-…`, `i-…`, `eipalloc-…`, key name, record name).
    pub physical_id: String,
    /// Lifecycle state as AWS reports it (`running`, `available`, …).
    pub state: String,
    pub details: Details,
    /// All tags on the resource.
    #[serde(skip)]
    pub tags: BTreeMap<String, String>,
}

impl Observed {
    /// The order resources are listed in for people (`status`, `down`): by kind in creation
    /// order, then by logical id and AWS id, the same on every run whatever order AWS answered in.
    pub fn listing_key(&self) -> (Kind, &ResourceId, &str) {
        (self.kind, &self.id, &self.physical_id)
    }

    /// What discovery found, under the logical id its `iac:id` tag gives; `None` without that
    /// tag (not a resource `iac` made, or one whose tags are not written yet).
    pub fn tagged(
        tags: BTreeMap<String, String>,
        kind: Kind,
        physical_id: String,
        state: String,
        details: Details,
    ) -> Option<Self> {
        Some(Observed {
            id: ResourceId::new(tags.get(super::tags::ID)?.clone()),
            kind,
            physical_id,
            state,
            details,
            tags,
        })
    }

    /// Whether `protect: true` is on this resource (see the stack file's `protect`).
    pub fn is_protected(&self) -> bool {
        matches!(
            self.details,
            Details::Volume {
                protected: true,
                ..
            } | Details::FileSystem {
                protected: true,
                ..
            } | Details::DbCluster {
                deletion_protection: true,
                ..
            }
        )
    }
}

/// Kind-specific observed attributes that the diff compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Details {
    KeyPair {
        fingerprint_tag: Option<String>,
    },
    InstanceProfile {
        role: Option<String>,
        /// `iac:spec-hash` on the role: its policies as last applied.
        policy_hash: Option<String>,
    },
    SsmParameter {
        /// The value, for plain String parameters; never read for SecureStrings.
        value: Option<String>,
        secure: bool,
    },
    Volume {
        availability_zone: String,
        size_gb: u32,
        attached_to: Option<String>,
        /// `iac:data=true`: kept by `down` unless `--delete-data`.
        keep_on_down: bool,
        /// `iac:protected=true`.
        protected: bool,
    },
    SecurityGroup {
        vpc_id: String,
        /// Rules with group sources already mapped back to logical ids where possible.
        ingress: Vec<IngressRule>,
    },
    Instance {
        instance_type: String,
        image_id: String,
        key_name: Option<String>,
        security_group_ids: Vec<String>,
        spec_hash: Option<String>,
        public_ip: Option<String>,
        private_ip: Option<String>,
        /// The EBS volume at its root device, deleted with it (what `status` prices beside it).
        root_volume_id: Option<String>,
    },
    ElasticIp {
        public_ip: String,
        instance_id: Option<String>,
        association_id: Option<String>,
    },
    DnsRecord {
        zone_id: String,
        values: Vec<String>,
    },
    DbSubnetGroup {
        subnet_ids: Vec<String>,
    },
    DbCluster {
        /// Writer endpoint.
        endpoint: Option<String>,
        /// The Secrets Manager secret RDS keeps the master password in.
        secret_arn: Option<String>,
        engine_version: String,
        backup_retention_days: i32,
        encrypted: bool,
        deletion_protection: bool,
    },
    DbInstance {
        instance_class: String,
        cluster: Option<String>,
    },
    FileSystem {
        encrypted: bool,
        keep_on_down: bool,
        /// `iac:protected=true`.
        protected: bool,
    },
    MountTarget {
        file_system_id: String,
        subnet_id: String,
    },
    TargetGroup {
        port: u16,
        health_path: String,
        healthy_threshold: i32,
        unhealthy_threshold: i32,
        interval_s: i32,
        timeout_s: i32,
        matcher: String,
        deregistration_delay_s: Option<u32>,
    },
    LoadBalancer {
        dns_name: String,
        scheme: String,
        subnet_ids: Vec<String>,
        security_group_ids: Vec<String>,
    },
    Listener {
        load_balancer_arn: String,
        port: u16,
        /// `forward:<target group arn>` or `redirect:https`.
        action: String,
        certificate_arn: Option<String>,
    },
    LaunchTemplate {
        /// `iac:spec-hash` of the latest version's content.
        spec_hash: Option<String>,
        latest_version: i64,
        default_version: i64,
    },
    AutoScalingGroup {
        min: u32,
        max: u32,
        desired: u32,
        /// The desired capacity `iac` last applied (the `iac:desired` tag): the scaling policy
        /// moves the live one between runs, so a change of the stack file is seen against this.
        applied_desired: Option<u32>,
        /// The launch template version the group uses (`$Latest`, `$Default` or a number).
        launch_template_version: String,
        target_group_arns: Vec<String>,
        health_check_type: String,
        health_check_grace_s: u32,
        scale_in_protection: bool,
        instances: u32,
        /// The ids of its instances in service (`InService`), sorted: what `status` shows and
        /// what a command for the group goes to.
        in_service: Vec<String>,
    },
    ScalingPolicy {
        group: String,
        cpu_target: Option<String>,
        warmup_s: Option<i32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_goes_by_the_same_name_in_json_and_in_tags() {
        for k in Kind::ALL {
            assert_eq!(
                serde_json::to_value(k).expect("a kind serializes"),
                serde_json::json!(k.as_str())
            );
        }
    }
}
