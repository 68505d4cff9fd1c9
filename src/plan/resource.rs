//! Resource identity, desired specs and observed state.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

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
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Kinds of AWS resources `iac` manages. The order of the variants is the order of creation
/// between kinds; deletion runs in reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    KeyPair,
    SecurityGroup,
    Instance,
    ElasticIp,
    DnsRecord,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::KeyPair,
        Kind::SecurityGroup,
        Kind::Instance,
        Kind::ElasticIp,
        Kind::DnsRecord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KeyPair => "key-pair",
            Kind::SecurityGroup => "security-group",
            Kind::Instance => "instance",
            Kind::ElasticIp => "elastic-ip",
            Kind::DnsRecord => "dns-record",
        }
    }
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

/// What a resource should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Spec {
    KeyPair(KeyPairSpec),
    SecurityGroup(SecurityGroupSpec),
    Instance(InstanceSpec),
    ElasticIp(ElasticIpSpec),
    DnsRecord(DnsRecordSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::KeyPair(_) => Kind::KeyPair,
            Spec::SecurityGroup(_) => Kind::SecurityGroup,
            Spec::Instance(_) => Kind::Instance,
            Spec::ElasticIp(_) => Kind::ElasticIp,
            Spec::DnsRecord(_) => Kind::DnsRecord,
        }
    }
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

/// Kind-specific observed attributes that the diff compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Details {
    KeyPair {
        fingerprint_tag: Option<String>,
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
}
