//! The provider: discovers a stack's resources by tag, resolves inputs, and turns plan changes
//! into executor nodes that call the service modules.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{AwsError, ErrorClass};
use super::{autoscaling, ec2, efs, elbv2, iam, rds, route53, ssm, tags, Aws};
use crate::apply::events::{Event, Reporter};
use crate::apply::wait::{self, Backoff, Poll, WaitError};
use crate::apply::{Node, Task};
use crate::plan::diff::{instance_spec_hash, short_hash};
use crate::plan::*;
use crate::stack::validate::IMAGE_ALIASES;
use crate::stack::Stack;
use crate::tiers::Inputs;

/// Deadlines for the slow parts.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub instance_running: Duration,
    pub instance_terminated: Duration,
    /// How long a delete keeps retrying while something still uses the resource.
    pub dependency: Duration,
    /// How long a Run Command may take (a rolling service update waits for its rollout).
    pub command: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            instance_running: Duration::from_secs(600),
            instance_terminated: Duration::from_secs(600),
            dependency: Duration::from_secs(300),
            command: Duration::from_secs(1800),
        }
    }
}

/// Everything tagged with a stack.
#[derive(Debug, Default, Clone)]
pub struct Discovered {
    pub resources: Vec<Observed>,
    pub terminated_per_id: BTreeMap<String, u32>,
    pub terminated_ids: Vec<String>,
}

/// Finds every resource of `stack` through its tags (no local state).
pub async fn discover(aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
    let (keys, groups, instances, addresses, volumes, params) = tokio::try_join!(
        ec2::discover_key_pairs(aws, stack),
        ec2::discover_security_groups(aws, stack),
        ec2::discover_instances(aws, stack),
        ec2::discover_addresses(aws, stack),
        ec2::discover_volumes(aws, stack),
        ssm::discover(aws, stack),
    )?;
    let (profiles, templates, balancing, groups_as, databases, files) = tokio::try_join!(
        iam::discover(aws, stack),
        ec2::discover_launch_templates(aws, stack),
        elbv2::discover(aws, stack),
        autoscaling::discover(aws, stack),
        rds::discover(aws, stack),
        efs::discover(aws, stack),
    )?;
    let mut records = Vec::new();
    for a in &addresses {
        let Some(tag) = a.tags.get(tags::DNS_RECORD) else {
            continue;
        };
        let Some((zone_id, name)) = tag.split_once('/') else {
            continue;
        };
        match route53::get_a_record(aws, zone_id, name).await {
            Ok(Some((values, _))) => records.push(Observed {
                id: ResourceId::new(crate::tiers::single_vm::DNS),
                kind: Kind::DnsRecord,
                physical_id: format!("{zone_id}/{name}"),
                state: "present".to_string(),
                details: Details::DnsRecord {
                    zone_id: zone_id.to_string(),
                    values,
                },
                tags: BTreeMap::new(),
            }),
            Ok(None) => {}
            Err(e) if e.is(ErrorClass::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let mut resources = keys;
    resources.extend(params);
    resources.extend(groups);
    resources.extend(volumes);
    resources.extend(profiles);
    resources.extend(templates);
    resources.extend(balancing);
    resources.extend(groups_as);
    resources.extend(databases);
    resources.extend(files);
    resources.extend(instances.live);
    resources.extend(addresses);
    resources.extend(records);
    Ok(Discovered {
        resources,
        terminated_per_id: instances.terminated_per_id,
        terminated_ids: instances.terminated_ids,
    })
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
    let network = async {
        let vpc_id = if s.network.vpc == "default" {
            ec2::default_vpc(aws).await?
        } else if ec2::vpc_exists(aws, &s.network.vpc).await? {
            s.network.vpc.clone()
        } else {
            return Err(AwsError::state(
                "ec2:DescribeVpcs",
                ErrorClass::NotFound,
                format!("VPC {} does not exist in {}", s.network.vpc, aws.region),
            ));
        };
        let subnets = if s.network.subnets.is_empty() {
            ec2::subnets(aws, &vpc_id).await?
        } else {
            ec2::subnets_by_id(aws, &s.network.subnets).await?
        };
        Ok((vpc_id, subnets))
    };
    let image = async {
        let image_id = resolve_image(aws, &s.instance.image, reporter).await?;
        let root_device = ec2::image_root_device(aws, &image_id).await?;
        Ok((image_id, root_device))
    };
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
        for name in refs {
            if !ssm::exists(aws, name).await? {
                reporter.event(&Event::Warning {
                    message: format!("SSM parameter {name} does not exist yet; the instance reads it at boot, so create it first (aws ssm put-parameter --type SecureString --name {name} ...)"),
                });
            }
        }
        Ok(())
    };
    let ((vpc_id, subnets), (image_id, root_device), (), hosted_zone_id, ()) =
        tokio::try_join!(network, image, key, zone, secrets)?;
    Ok(Inputs {
        vpc_id,
        subnet_id: subnets.first().map(|(id, _)| id.clone()),
        subnets,
        image_id,
        root_device,
        hosted_zone_id,
    })
}

/// Alias → AMI through the public SSM parameter. Emulators lack some public parameters; with an
/// endpoint override only, the newest matching image the endpoint knows is used instead, loudly.
async fn resolve_image(
    aws: &Aws,
    image: &str,
    reporter: &dyn Reporter,
) -> Result<String, AwsError> {
    let Some((alias, param)) = IMAGE_ALIASES.iter().find(|(a, _)| *a == image) else {
        return Ok(image.to_string());
    };
    if let Some(ami) = ssm::get_plain(aws, param).await? {
        return Ok(ami);
    }
    if let Some(endpoint) = &aws.endpoint_override {
        let (owner, pattern) = if alias.starts_with("ubuntu") {
            ("099720109477", "*ubuntu*")
        } else {
            ("amazon", "al2023-ami-*")
        };
        if let Some(ami) = ec2::newest_image(aws, owner, pattern).await? {
            reporter.event(&Event::Warning {
                message: format!("{endpoint} does not publish {param}; using its newest {pattern} image {ami} for `{alias}` (emulator only)"),
            });
            return Ok(ami);
        }
    }
    Err(AwsError::state("ssm:GetParameter", ErrorClass::NotFound, format!("public parameter {param} (image alias `{alias}`) is not available in {}; give an AMI id instead", aws.region)))
}

/// Physical facts learnt while applying, read by the nodes that depend on them.
#[derive(Debug, Default, Clone)]
pub struct Known {
    pub physical_id: String,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    /// What templates can refer to (see `plan::attrs_of`).
    pub attrs: BTreeMap<String, String>,
}

/// Builds executor nodes for a plan.
#[derive(Clone)]
pub struct Applier {
    pub aws: Aws,
    pub stack: String,
    pub extra_tags: BTreeMap<String, String>,
    pub reporter: Arc<dyn Reporter>,
    pub deadlines: Deadlines,
    pub terminated_per_id: BTreeMap<String, u32>,
    known: Arc<Mutex<BTreeMap<ResourceId, Known>>>,
    /// Resources that existed before this run and stay: only these are notified in place
    /// (a new instance reads its configuration at boot).
    preexisting: Arc<Mutex<std::collections::BTreeSet<ResourceId>>>,
    /// `down --delete-data`: also delete data volumes.
    pub delete_data: bool,
    /// Swarm: nodes are drained through the leader before they are terminated.
    pub drain: Option<crate::tiers::Drain>,
    /// `down --skip-final-snapshot`: delete Aurora clusters without a final snapshot.
    pub skip_final_snapshot: bool,
    /// Launch templates that get a new version in this run (their groups refresh).
    lt_updated: Arc<Mutex<std::collections::BTreeSet<ResourceId>>>,
}

fn wait_err(e: WaitError<AwsError>, op: &str) -> AwsError {
    match e {
        WaitError::Poll(e) => e,
        WaitError::Timeout { .. } => AwsError::state(op, ErrorClass::Other, e.to_string()),
    }
}

impl Applier {
    pub fn new(
        aws: Aws,
        stack: &Stack,
        reporter: Arc<dyn Reporter>,
        discovered: &Discovered,
    ) -> Applier {
        Applier {
            aws,
            stack: stack.name().to_string(),
            extra_tags: stack.spec.tags.clone(),
            reporter,
            deadlines: Deadlines::default(),
            terminated_per_id: discovered.terminated_per_id.clone(),
            known: Arc::default(),
            preexisting: Arc::default(),
            delete_data: false,
            drain: None,
            skip_final_snapshot: false,
            lt_updated: Arc::default(),
        }
    }

    /// For `down`, which has no stack file.
    pub fn for_stack(aws: Aws, stack: &str, reporter: Arc<dyn Reporter>) -> Applier {
        Applier {
            aws,
            stack: stack.to_string(),
            extra_tags: BTreeMap::new(),
            reporter,
            deadlines: Deadlines::default(),
            terminated_per_id: BTreeMap::new(),
            known: Arc::default(),
            preexisting: Arc::default(),
            delete_data: false,
            drain: None,
            skip_final_snapshot: false,
            lt_updated: Arc::default(),
        }
    }

    fn remember(&self, id: &ResourceId, mut k: Known) {
        k.attrs
            .entry("id".to_string())
            .or_insert_with(|| k.physical_id.clone());
        if let Some(ip) = &k.private_ip {
            k.attrs
                .entry("ip".to_string())
                .or_insert_with(|| ip.clone());
        }
        if let Ok(mut m) = self.known.lock() {
            m.insert(id.clone(), k);
        }
    }

    fn lookup(&self, id: &ResourceId) -> Option<Known> {
        self.known.lock().ok().and_then(|m| m.get(id).cloned())
    }

    fn need(&self, id: &ResourceId, op: &str) -> Result<Known, AwsError> {
        self.lookup(id).ok_or_else(|| {
            AwsError::state(
                op,
                ErrorClass::Other,
                format!("{id} is not available (did it fail?)"),
            )
        })
    }

    fn tags_for(&self, id: &ResourceId, kind: Kind) -> BTreeMap<String, String> {
        tags::identity(&self.stack, id, kind, &self.extra_tags)
    }

    /// Nodes for the create/update phase and for the delete phase, in that order.
    pub fn nodes(&self, plan: &Plan) -> (Vec<Node<AwsError>>, Vec<Node<AwsError>>) {
        if let Ok(mut u) = self.lt_updated.lock() {
            u.extend(
                plan.changes
                    .iter()
                    .filter(|c| {
                        c.kind == Kind::LaunchTemplate && matches!(c.action, Action::Update { .. })
                    })
                    .map(|c| c.id.clone()),
            );
        }
        if let Ok(mut pre) = self.preexisting.lock() {
            pre.extend(
                plan.changes
                    .iter()
                    .filter(|c| matches!(c.action, Action::Keep | Action::Update { .. }))
                    .map(|c| c.id.clone()),
            );
        }
        for c in &plan.changes {
            if let (Some(a), false) = (
                &c.actual,
                matches!(c.action, Action::Replace { .. } | Action::Delete { .. }),
            ) {
                self.remember(&c.id, known_of(a));
            }
        }
        let mut apply = Vec::new();
        let mut delete = Vec::new();
        for c in &plan.changes {
            match (&c.action, &c.desired, &c.actual) {
                (Action::Keep, _, _) => {}
                (Action::Create, Some(d), _) => apply.push(self.node(d, "create", None)),
                (Action::Update { .. }, Some(d), Some(a)) => {
                    apply.push(self.node(d, "update", Some(a.clone())))
                }
                (Action::Replace { .. }, Some(d), Some(a)) => {
                    if d.kind() == Kind::KeyPair {
                        // Key names are unique: the old key must go before the new one is imported.
                        apply.push(self.node(d, "replace", Some(a.clone())));
                    } else {
                        apply.push(self.node(d, "create", None));
                        delete.push(self.delete_node(a, "#old"));
                    }
                }
                (Action::Delete { .. }, _, Some(a)) => delete.push(self.delete_node(a, "")),
                _ => {}
            }
        }
        order_deletes(&mut delete);
        (apply, delete)
    }

    fn node(&self, r: &Resource, action: &str, actual: Option<Observed>) -> Node<AwsError> {
        let this = self.clone();
        let r2 = r.clone();
        let action_s = action.to_string();
        Node {
            id: r.id.clone(),
            kind: r.kind(),
            action: action.to_string(),
            deps: r.deps.clone(),
            order_only: false,
            task: Box::new(move || -> Task<AwsError> {
                Box::pin(async move { this.apply_one(&r2, &action_s, actual).await })
            }),
        }
    }

    /// Deletion nodes for everything observed (for `down`), most dependent kinds first.
    pub fn delete_nodes(&self, observed: &[Observed]) -> Vec<Node<AwsError>> {
        let mut nodes: Vec<_> = observed.iter().map(|o| self.delete_node(o, "")).collect();
        order_deletes(&mut nodes);
        nodes
    }

    fn delete_node(&self, o: &Observed, suffix: &str) -> Node<AwsError> {
        let this = self.clone();
        let o2 = o.clone();
        Node {
            // Physical ids keep duplicates of one logical id apart.
            id: ResourceId::new(format!("{}{suffix} ({})", o.id, o.physical_id)),
            kind: o.kind,
            action: "delete".to_string(),
            deps: Vec::new(),
            order_only: true,
            task: Box::new(move || -> Task<AwsError> {
                Box::pin(async move {
                    this.delete_one(&o2)
                        .await
                        .map(|_| Some(o2.physical_id.clone()))
                })
            }),
        }
    }

    async fn apply_one(
        &self,
        r: &Resource,
        action: &str,
        actual: Option<Observed>,
    ) -> Result<Option<String>, AwsError> {
        let aws = &self.aws;
        let tags_ = self.tags_for(&r.id, r.kind());
        match (&r.spec, action) {
            (Spec::KeyPair(s), _) => {
                if action == "replace" {
                    ec2::delete_key_pair(aws, &s.key_name).await?;
                }
                let mut t = tags_;
                t.insert(
                    tags::KEY_FINGERPRINT.to_string(),
                    short_hash(s.public_key.trim().as_bytes()),
                );
                ec2::import_key_pair(aws, &s.key_name, &s.public_key, &t).await.map_err(|e| {
                    if e.is(ErrorClass::AlreadyExists) {
                        AwsError::state("ec2:ImportKeyPair", ErrorClass::AlreadyExists, format!("a key pair named `{}` exists and was not imported by this stack; drop `public_key_file` to use it as is, or pick another name", s.key_name))
                    } else {
                        e
                    }
                })?;
                self.remember(
                    &r.id,
                    Known {
                        physical_id: s.key_name.clone(),
                        public_ip: None,
                        private_ip: None,
                        ..Default::default()
                    },
                );
                Ok(Some(s.key_name.clone()))
            }
            (Spec::SsmParameter(s), _) => {
                let value = match &s.value {
                    ParamValue::Generated if action != "create" => return Ok(Some(s.name.clone())),
                    ParamValue::WrittenByInstances => return Ok(None),
                    ParamValue::Generated => ssm::generate_password()?,
                    ParamValue::Template { text, refs } => {
                        fill_template(text, refs, &|id| self.lookup(id).map(|k| k.attrs))
                            .ok_or_else(|| {
                                AwsError::state(
                                    "ssm:PutParameter",
                                    ErrorClass::Other,
                                    format!(
                                        "{}: a resource it refers to is not available yet",
                                        r.id
                                    ),
                                )
                            })?
                    }
                };
                let create_tags = (action == "create")
                    .then(|| ssm::param_tags(&self.stack, &r.id, &self.extra_tags));
                ssm::put(aws, &s.name, &value, s.secure, create_tags.as_ref()).await.map_err(|e| {
                    if e.is(ErrorClass::AlreadyExists) {
                        AwsError::state("ssm:PutParameter", ErrorClass::AlreadyExists, format!("parameter {} exists but was not found under the stack's path; delete it", s.name))
                    } else {
                        e
                    }
                })?;
                self.remember(
                    &r.id,
                    Known {
                        physical_id: s.name.clone(),
                        public_ip: None,
                        private_ip: None,
                        ..Default::default()
                    },
                );
                if let Some(n) = &s.notify {
                    let pre = self
                        .preexisting
                        .lock()
                        .map(|p| p.contains(&n.instance))
                        .unwrap_or(false);
                    if action != "create" && pre {
                        let target = self.need(&n.instance, "ssm:SendCommand")?;
                        self.run_and_wait(&r.id, &target.physical_id, &n.command, &n.comment)
                            .await?;
                    }
                }
                Ok(Some(s.name.clone()))
            }
            (Spec::Volume(s), _) => {
                let instance = self.need(&s.attach_to, "ec2:AttachVolume")?;
                let vid = match actual {
                    Some(a) => {
                        if let Details::Volume {
                            attached_to: Some(old),
                            ..
                        } = &a.details
                        {
                            if old != &instance.physical_id {
                                ignore_gone(ec2::detach_volume(aws, &a.physical_id).await)?;
                            }
                        }
                        a.physical_id
                    }
                    None => {
                        let mut t = tags_.clone();
                        if s.keep_on_down {
                            t.insert(tags::DATA.to_string(), "true".to_string());
                        }
                        ec2::create_volume(aws, &s.availability_zone, s.size_gb, &t).await?
                    }
                };
                self.remember(
                    &r.id,
                    Known {
                        physical_id: vid.clone(),
                        public_ip: None,
                        private_ip: None,
                        ..Default::default()
                    },
                );
                self.wait_volume(&r.id, &vid, "available").await?;
                ec2::attach_volume(aws, &vid, &instance.physical_id, &s.device).await?;
                Ok(Some(vid))
            }
            (Spec::SecurityGroup(s), "create") => {
                let gid = ec2::create_security_group(aws, &s.group_name, &s.description, &s.vpc_id, &tags_).await.map_err(|e| {
                    if e.is(ErrorClass::AlreadyExists) {
                        AwsError::state("ec2:CreateSecurityGroup", ErrorClass::AlreadyExists, format!("a security group named `{}` exists in {} but is not tagged with this stack; delete or rename it", s.group_name, s.vpc_id))
                    } else {
                        e
                    }
                })?;
                self.remember(
                    &r.id,
                    Known {
                        physical_id: gid.clone(),
                        public_ip: None,
                        private_ip: None,
                        ..Default::default()
                    },
                );
                ec2::reconcile_ingress(aws, &gid, &s.ingress, &[], &self.group_ids()).await?;
                Ok(Some(gid))
            }
            (Spec::SecurityGroup(s), _) => {
                let a = actual.ok_or_else(|| {
                    AwsError::state("ec2:SecurityGroup", ErrorClass::Other, "nothing to update")
                })?;
                let have = match &a.details {
                    Details::SecurityGroup { ingress, .. } => ingress.clone(),
                    _ => Vec::new(),
                };
                ec2::reconcile_ingress(aws, &a.physical_id, &s.ingress, &have, &self.group_ids())
                    .await?;
                Ok(Some(a.physical_id))
            }
            (Spec::Instance(s), "create") => {
                let sg_ids = s
                    .security_groups
                    .iter()
                    .map(|g| self.need(g, "ec2:RunInstances").map(|k| k.physical_id))
                    .collect::<Result<Vec<_>, _>>()?;
                let spec_hash = instance_spec_hash(s);
                let mut t = tags_;
                t.insert(tags::SPEC_HASH.to_string(), spec_hash.clone());
                t.insert(tags::USER_DATA_SHA.to_string(), s.user_data_sha.clone());
                let generation = self
                    .terminated_per_id
                    .get(r.id.as_str())
                    .copied()
                    .unwrap_or(0);
                let token = short_hash(
                    format!("{}/{}/{}/{}", self.stack, r.id, spec_hash, generation).as_bytes(),
                );
                // A profile created a moment ago takes a few seconds to be usable by EC2
                // (IAM is eventually consistent): retry that one refusal within a deadline.
                let what = format!(
                    "instance profile {} to be usable by EC2",
                    s.instance_profile.as_deref().unwrap_or("-")
                );
                let iid = wait::until(
                    &r.id,
                    &what,
                    Duration::from_secs(120),
                    Backoff::default(),
                    self.reporter.as_ref(),
                    || async {
                        match ec2::run_instance(aws, s, &s.root_device, sg_ids.clone(), &t, &token)
                            .await
                        {
                            Ok(iid) => Ok(Poll::Ready(iid)),
                            Err(e)
                                if e.is(ErrorClass::InvalidInput)
                                    && e.message
                                        .to_ascii_lowercase()
                                        .contains("instance profile") =>
                            {
                                Ok(Poll::Pending(e.message))
                            }
                            Err(e) => Err(e),
                        }
                    },
                )
                .await
                .map_err(|e| wait_err(e, "ec2:RunInstances"))?;
                let private_ip = self.wait_instance(&r.id, &iid, "running").await?;
                self.remember(
                    &r.id,
                    Known {
                        physical_id: iid.clone(),
                        public_ip: None,
                        private_ip,
                        ..Default::default()
                    },
                );
                Ok(Some(iid))
            }
            (Spec::Instance(_), _) => {
                let a = actual.ok_or_else(|| {
                    AwsError::state("ec2:StartInstances", ErrorClass::Other, "nothing to update")
                })?;
                ec2::start_instance(aws, &a.physical_id).await?;
                self.wait_instance(&r.id, &a.physical_id, "running").await?;
                Ok(Some(a.physical_id))
            }
            (Spec::ElasticIp(s), _) => {
                let instance = self.need(&s.instance, "ec2:AssociateAddress")?;
                let (alloc, ip) = match actual {
                    Some(a) => {
                        let ip = match &a.details {
                            Details::ElasticIp { public_ip, .. } => public_ip.clone(),
                            _ => String::new(),
                        };
                        (a.physical_id, ip)
                    }
                    None => ec2::allocate_address(aws, &tags_).await?,
                };
                self.remember(
                    &r.id,
                    Known {
                        physical_id: alloc.clone(),
                        public_ip: Some(ip),
                        private_ip: None,
                        ..Default::default()
                    },
                );
                ec2::associate_address(aws, &alloc, &instance.physical_id).await?;
                Ok(Some(alloc))
            }
            (Spec::DnsRecord(s), _) => {
                let eip = self.need(&s.target, "route53:ChangeResourceRecordSets")?;
                let ip = eip.public_ip.clone().unwrap_or_default();
                // Tag the address first: if we die right after the record is written, `down`
                // still finds the record through it.
                let mut t = BTreeMap::new();
                t.insert(
                    tags::DNS_RECORD.to_string(),
                    format!("{}/{}", s.zone_id, s.name),
                );
                ec2::set_tags(aws, &eip.physical_id, &t).await?;
                route53::upsert_a(aws, &s.zone_id, &s.name, &ip, s.ttl).await?;
                Ok(Some(format!("{} A {ip}", s.name)))
            }
            (other, _) => self.apply_alb(r, other, action, actual, tags_).await,
        }
    }

    fn group_ids(&self) -> BTreeMap<ResourceId, String> {
        self.known
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, k)| k.physical_id.starts_with("sg-"))
                    .map(|(id, k)| (id.clone(), k.physical_id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for an instance state; returns its private IP once there.
    async fn wait_instance(
        &self,
        id: &ResourceId,
        iid: &str,
        want: &str,
    ) -> Result<Option<String>, AwsError> {
        let deadline = if want == "running" {
            self.deadlines.instance_running
        } else {
            self.deadlines.instance_terminated
        };
        let what = format!("instance {iid} to be {want}");
        wait::until(id, &what, deadline, Backoff::default(), self.reporter.as_ref(), || async {
            let found = ec2::instance_state_ip(&self.aws, iid).await?;
            let (state, ip) = match found {
                Some((s, ip)) => (Some(s), ip),
                None => (None, None),
            };
            Ok(match state.as_deref() {
                Some(s) if s == want => Poll::Ready(ip),
                None if want == "terminated" => Poll::Ready(None),
                Some("terminated") if want == "running" => {
                    return Err(AwsError::state("ec2:DescribeInstances", ErrorClass::Other, format!("instance {iid} terminated while starting; check its console output and quotas")))
                }
                other => Poll::Pending(other.unwrap_or("unknown").to_string()),
            })
        })
        .await
        .map_err(|e| wait_err(e, "ec2:DescribeInstances"))
    }

    /// Sends a shell script through Run Command and waits for it to succeed; returns its output.
    pub async fn run_and_wait(
        &self,
        id: &ResourceId,
        instance_id: &str,
        script: &str,
        comment: &str,
    ) -> Result<String, AwsError> {
        let cmd = ssm::run_shell(&self.aws, instance_id, script, comment).await?;
        self.reporter.event(&Event::Info {
            message: format!("{id}: sent `{comment}` to {instance_id} (command {cmd})"),
        });
        let what = format!("command {cmd} on {instance_id}");
        wait::until(
            id,
            &what,
            self.deadlines.command,
            Backoff::default(),
            self.reporter.as_ref(),
            || async {
                Ok(match ssm::invocation(&self.aws, &cmd, instance_id).await? {
                    ssm::Invocation::Succeeded(out) => Poll::Ready(out),
                    ssm::Invocation::Running(s) => Poll::Pending(s),
                    ssm::Invocation::Failed(e) => {
                        return Err(AwsError::state(
                            "ssm:SendCommand",
                            ErrorClass::Other,
                            format!("`{comment}` failed on {instance_id}: {e}"),
                        ))
                    }
                })
            },
        )
        .await
        .map_err(|e| wait_err(e, "ssm:GetCommandInvocation"))
    }

    /// Waits until a volume is in `want` state (`available` after create or detach).
    async fn wait_volume(&self, id: &ResourceId, vid: &str, want: &str) -> Result<(), AwsError> {
        let what = format!("volume {vid} to be {want}");
        wait::until(
            id,
            &what,
            self.deadlines.dependency,
            Backoff::default(),
            self.reporter.as_ref(),
            || async {
                Ok(match ec2::volume_state(&self.aws, vid).await? {
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

    /// Deletes one resource; "already gone" is success, "still in use" is retried until the
    /// dependency deadline.
    pub async fn delete_one(&self, o: &Observed) -> Result<(), AwsError> {
        let aws = &self.aws;
        let res = match (&o.kind, &o.details) {
            (Kind::DnsRecord, Details::DnsRecord { zone_id, .. }) => {
                let name = o
                    .physical_id
                    .split_once('/')
                    .map(|(_, n)| n)
                    .unwrap_or(&o.physical_id);
                route53::delete_a(aws, zone_id, name).await
            }
            (Kind::ElasticIp, Details::ElasticIp { association_id, .. }) => {
                if let Some(assoc) = association_id {
                    ignore_gone(ec2::disassociate_address(aws, assoc).await)?;
                }
                self.retry_in_use(&o.id, &format!("Elastic IP {}", o.physical_id), || {
                    ec2::release_address(aws, &o.physical_id)
                })
                .await
            }
            (Kind::Instance, details) => {
                if let (
                    Some(d),
                    Details::Instance {
                        private_ip: Some(ip),
                        ..
                    },
                ) = (&self.drain, details)
                {
                    let leader_stays = o.id != d.leader
                        && self
                            .preexisting
                            .lock()
                            .map(|p| p.contains(&d.leader))
                            .unwrap_or(false);
                    if leader_stays {
                        let leader = self.need(&d.leader, "ssm:SendCommand")?;
                        self.run_and_wait(
                            &o.id,
                            &leader.physical_id,
                            &(d.command)(ip),
                            &format!("iac: drain and remove {} before terminating it", o.id),
                        )
                        .await?;
                    }
                }
                ignore_gone(ec2::terminate_instance(aws, &o.physical_id).await)?;
                self.wait_instance(&o.id, &o.physical_id, "terminated")
                    .await
                    .map(|_| ())
            }
            (Kind::SecurityGroup, _) => {
                self.retry_in_use(
                    &o.id,
                    &format!("security group {} to be free", o.physical_id),
                    || ec2::delete_security_group(aws, &o.physical_id),
                )
                .await
            }
            (Kind::KeyPair, _) => ec2::delete_key_pair(aws, &o.physical_id).await,
            (Kind::SsmParameter, _) => ssm::delete(aws, &o.physical_id).await,
            (Kind::InstanceProfile, Details::InstanceProfile { role, .. }) => {
                iam::delete(aws, &o.physical_id, role.as_deref()).await
            }
            (
                Kind::ScalingPolicy
                | Kind::AutoScalingGroup
                | Kind::LaunchTemplate
                | Kind::Listener
                | Kind::LoadBalancer
                | Kind::TargetGroup
                | Kind::DbInstance
                | Kind::DbCluster
                | Kind::DbSubnetGroup
                | Kind::MountTarget
                | Kind::FileSystem,
                _,
            ) => self.delete_alb(o).await,
            (Kind::Volume, _) => {
                // Read the attachment now: the instance it was on may have been terminated by
                // an earlier node of this same run, which detaches it.
                if let Some((_, Some(_))) = ec2::volume_state(aws, &o.physical_id).await? {
                    ignore_gone(ec2::detach_volume(aws, &o.physical_id).await)?;
                    self.wait_volume(&o.id, &o.physical_id, "available").await?;
                }
                self.retry_in_use(
                    &o.id,
                    &format!("volume {} to be free", o.physical_id),
                    || ec2::delete_volume(aws, &o.physical_id),
                )
                .await
            }
            _ => Ok(()),
        };
        ignore_gone(res)
    }

    async fn retry_in_use<F, Fut>(
        &self,
        id: &ResourceId,
        what: &str,
        mut op: F,
    ) -> Result<(), AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), AwsError>>,
    {
        wait::until(
            id,
            what,
            self.deadlines.dependency,
            Backoff::default(),
            self.reporter.as_ref(),
            || {
                let fut = op();
                async move {
                    match fut.await {
                        Ok(()) => Ok(Poll::Ready(())),
                        Err(e) if e.is(ErrorClass::DependencyViolation) => {
                            Ok(Poll::Pending(format!("in use: {}", e.message)))
                        }
                        Err(e) => Err(e),
                    }
                }
            },
        )
        .await
        .map_err(|e| wait_err(e, "delete"))
    }
}

fn ignore_gone(r: Result<(), AwsError>) -> Result<(), AwsError> {
    match r {
        Err(e) if e.is(ErrorClass::NotFound) => Ok(()),
        other => other,
    }
}

fn known_of(o: &Observed) -> Known {
    let (public_ip, private_ip) = match &o.details {
        Details::ElasticIp { public_ip, .. } => (Some(public_ip.clone()), None),
        Details::Instance {
            public_ip,
            private_ip,
            ..
        } => (public_ip.clone(), private_ip.clone()),
        _ => (None, None),
    };
    Known {
        physical_id: o.physical_id.clone(),
        public_ip,
        private_ip,
        attrs: attrs_of(o),
    }
}

/// Deletion order: a node waits for every node of a kind created after its own (reverse of
/// the creation order), so instances go before their security groups, addresses before
/// instances, records before addresses.
fn order_deletes(nodes: &mut [Node<AwsError>]) {
    let by_kind: Vec<(Kind, ResourceId)> = nodes.iter().map(|n| (n.kind, n.id.clone())).collect();
    for n in nodes.iter_mut() {
        // A failed deletion must not stop the others: each retries what is still in use.
        n.order_only = true;
        n.deps = by_kind
            .iter()
            .filter(|(k, _)| *k > n.kind)
            .map(|(_, id)| id.clone())
            .collect();
    }
}

/// What `status` and `up` print at the end.
pub fn outputs(stack: &Stack, found: &[Observed]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let eip = found.iter().find_map(|o| match &o.details {
        Details::ElasticIp { public_ip, .. } => Some(public_ip.clone()),
        _ => None,
    });
    if let Some(public_ip) = &eip {
        out.insert("public_ip".to_string(), public_ip.clone());
        let port = match (&stack.spec.tier, &stack.spec.swarm) {
            (crate::stack::Tier::Swarm, Some(sw)) if sw.published_port != 80 => {
                format!(":{}", sw.published_port)
            }
            _ => String::new(),
        };
        let url = match &stack.spec.domain {
            Some(d) => format!("https://{}", d.name),
            None => format!("http://{public_ip}{port}"),
        };
        out.insert("url".to_string(), url);
        if let (Some(_), Some(_)) = (&stack.spec.instance.key_pair, &stack.spec.network.ssh_from) {
            let user = if stack.spec.instance.image.starts_with("ubuntu") {
                "ubuntu"
            } else {
                "ec2-user"
            };
            out.insert("ssh".to_string(), format!("ssh {user}@{public_ip}"));
        }
        if let Some(d) = stack
            .spec
            .domain
            .as_ref()
            .filter(|d| d.hosted_zone.is_none())
        {
            out.insert(
                "dns".to_string(),
                format!("point {} (A) at {public_ip}", d.name),
            );
        }
    }
    let instance = |id: &str| {
        found
            .iter()
            .find(|o| o.kind == Kind::Instance && o.id.as_str() == id)
    };
    if let Some(vm) = instance(crate::tiers::single_vm::VM) {
        out.insert("instance_id".to_string(), vm.physical_id.clone());
    }
    if let Some(lb) = instance(crate::tiers::lb_vms::LB) {
        out.insert("balancer_instance_id".to_string(), lb.physical_id.clone());
    }
    if let Some(Details::Instance {
        private_ip: Some(ip),
        ..
    }) = instance(crate::tiers::lb_vms::DB).map(|o| &o.details)
    {
        out.insert("database_private_ip".to_string(), ip.clone());
    }
    for o in found {
        match &o.details {
            Details::LoadBalancer { dns_name, .. }
                if stack.spec.tier == crate::stack::Tier::AlbAsg =>
            {
                let https = stack
                    .spec
                    .load_balancer
                    .as_ref()
                    .is_some_and(|l| l.certificate_arn.is_some());
                out.insert(
                    "url".to_string(),
                    format!("{}://{dns_name}", if https { "https" } else { "http" }),
                );
                out.insert("load_balancer_dns".to_string(), dns_name.clone());
            }
            Details::DbCluster {
                endpoint: Some(e), ..
            } => {
                out.insert("database_endpoint".to_string(), e.clone());
            }
            Details::FileSystem { .. } => {
                out.insert("file_system_id".to_string(), o.physical_id.clone());
            }
            Details::AutoScalingGroup {
                instances, desired, ..
            } => {
                out.insert(
                    "group_instances".to_string(),
                    format!("{instances} (desired {desired})"),
                );
            }
            _ => {}
        }
    }
    for (prefix, key) in [
        ("web-", "web_vms"),
        ("manager-", "swarm_managers"),
        ("worker-", "swarm_workers"),
    ] {
        let n = found
            .iter()
            .filter(|o| o.kind == Kind::Instance && o.id.as_str().starts_with(prefix))
            .count();
        if n > 0 {
            out.insert(key.to_string(), n.to_string());
        }
    }
    out
}

impl Applier {
    fn ids(&self, refs: &[ResourceId], op: &str) -> Result<Vec<String>, AwsError> {
        refs.iter()
            .map(|g| self.need(g, op).map(|k| k.physical_id))
            .collect()
    }

    /// Polls `state` until it answers `want` (or `None` for "gone"), within `deadline`.
    async fn wait_state<F, Fut>(
        &self,
        id: &ResourceId,
        what: &str,
        deadline: Duration,
        want: Option<&str>,
        mut state: F,
    ) -> Result<(), AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, AwsError>>,
    {
        wait::until(
            id,
            what,
            deadline,
            Backoff::default(),
            self.reporter.as_ref(),
            || {
                let fut = state();
                async move {
                    let now = fut.await?;
                    Ok(match (now.as_deref(), want) {
                        (None, None) => Poll::Ready(()),
                        (Some(s), Some(w)) if s == w => Poll::Ready(()),
                        (Some(s), _) if s.contains("fail") || s == "error" => {
                            return Err(AwsError::state(
                                "wait",
                                ErrorClass::Other,
                                format!("{what}: state {s}"),
                            ))
                        }
                        (s, _) => Poll::Pending(s.unwrap_or("gone").to_string()),
                    })
                }
            },
        )
        .await
        .map_err(|e| wait_err(e, "wait"))
    }

    /// The alb-asg tier's kinds (load balancing, auto scaling, Aurora, EFS).
    async fn apply_alb(
        &self,
        r: &Resource,
        spec: &Spec,
        action: &str,
        actual: Option<Observed>,
        t: BTreeMap<String, String>,
    ) -> Result<Option<String>, AwsError> {
        let aws = &self.aws;
        let create = actual.is_none() || action == "create";
        let physical = actual.as_ref().map(|a| a.physical_id.clone());
        let long = Duration::from_secs(40 * 60);
        let known = |physical_id: String, attrs: &[(&str, Option<String>)]| Known {
            physical_id,
            attrs: attrs
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
                .collect(),
            ..Default::default()
        };
        let out = match spec {
            Spec::InstanceProfile(s) => {
                let hash = short_hash(serde_json::to_string(s).unwrap_or_default().as_bytes());
                if create {
                    let mut t = t.clone();
                    t.insert(tags::SPEC_HASH.to_string(), hash);
                    iam::create(aws, s, &t).await?;
                } else {
                    iam::put_policies(aws, s).await?;
                    iam::tag_role(aws, &s.name, tags::SPEC_HASH, &hash).await?;
                }
                s.name.clone()
            }
            Spec::DbSubnetGroup(s) => {
                if create {
                    rds::create_subnet_group(aws, s, &t).await?;
                } else {
                    rds::update_subnet_group(aws, s).await?;
                }
                s.name.clone()
            }
            Spec::DbCluster(s) => {
                let sgs = self.ids(&s.security_groups, "rds:CreateDBCluster")?;
                if create {
                    let subnet_group = self
                        .need(&s.subnet_group, "rds:CreateDBCluster")?
                        .physical_id;
                    rds::create_cluster(aws, s, &subnet_group, sgs, &t).await?;
                } else {
                    rds::modify_cluster(aws, s, sgs).await?;
                }
                let what = format!("Aurora cluster {} to be available", s.identifier);
                self.wait_state(&r.id, &what, long, Some("available"), || async {
                    Ok(rds::cluster_state(aws, &s.identifier).await?.map(|x| x.0))
                })
                .await?;
                let (endpoint, secret) = match rds::cluster_state(aws, &s.identifier).await? {
                    Some((_, e, sec)) => (e, sec),
                    None => (None, None),
                };
                self.remember(
                    &r.id,
                    known(
                        s.identifier.clone(),
                        &[("endpoint", endpoint), ("secret", secret)],
                    ),
                );
                return Ok(Some(s.identifier.clone()));
            }
            Spec::DbInstance(s) => {
                if create {
                    let cluster = self.need(&s.cluster, "rds:CreateDBInstance")?.physical_id;
                    rds::create_instance(aws, s, &cluster, &t).await?;
                    let what = format!("Aurora instance {} to be available", s.identifier);
                    self.wait_state(&r.id, &what, long, Some("available"), || {
                        rds::instance_state(aws, &s.identifier)
                    })
                    .await?;
                }
                s.identifier.clone()
            }
            Spec::FileSystem(s) => {
                let id = match physical {
                    Some(p) => p,
                    None => {
                        let mut t = t.clone();
                        if s.keep_on_down {
                            t.insert(tags::DATA.to_string(), "true".to_string());
                        }
                        efs::create_file_system(aws, s, &t).await?
                    }
                };
                let what = format!("file system {id} to be available");
                self.wait_state(
                    &r.id,
                    &what,
                    Duration::from_secs(600),
                    Some("available"),
                    || efs::file_system_state(aws, &id),
                )
                .await?;
                id
            }
            Spec::MountTarget(s) => match physical {
                Some(p) => p,
                None => {
                    let fs = self
                        .need(&s.file_system, "efs:CreateMountTarget")?
                        .physical_id;
                    let sgs = self.ids(&s.security_groups, "efs:CreateMountTarget")?;
                    let id = efs::create_mount_target(aws, &fs, &s.subnet_id, sgs).await?;
                    let what = format!("mount target {id} in {} to be available", s.subnet_id);
                    self.wait_state(
                        &r.id,
                        &what,
                        Duration::from_secs(600),
                        Some("available"),
                        || efs::mount_target_state(aws, &id),
                    )
                    .await?;
                    id
                }
            },
            Spec::TargetGroup(s) => match physical {
                Some(arn) if !create => {
                    elbv2::update_target_group(aws, &arn, s).await?;
                    arn
                }
                _ => elbv2::create_target_group(aws, s, &t).await?,
            },
            Spec::LoadBalancer(s) => {
                let sgs = self.ids(&s.security_groups, "elbv2:CreateLoadBalancer")?;
                let (arn, dns) = match (&actual, create) {
                    (Some(a), false) => {
                        elbv2::set_load_balancer_security_groups(aws, &a.physical_id, sgs).await?;
                        let dns = match &a.details {
                            Details::LoadBalancer { dns_name, .. } => dns_name.clone(),
                            _ => String::new(),
                        };
                        (a.physical_id.clone(), dns)
                    }
                    _ => elbv2::create_load_balancer(aws, s, sgs, &t).await?,
                };
                let what = format!("load balancer {} to be active", s.name);
                self.wait_state(
                    &r.id,
                    &what,
                    Duration::from_secs(900),
                    Some("active"),
                    || elbv2::load_balancer_state(aws, &arn),
                )
                .await?;
                self.remember(&r.id, known(arn.clone(), &[("dns", Some(dns))]));
                return Ok(Some(arn));
            }
            Spec::Listener(s) => {
                let tg = match &s.action {
                    ListenerAction::Forward(tg) => {
                        Some(self.need(tg, "elbv2:CreateListener")?.physical_id)
                    }
                    ListenerAction::RedirectHttps => None,
                };
                match physical {
                    Some(arn) if !create => {
                        elbv2::modify_listener(aws, &arn, s, tg.as_deref()).await?;
                        arn
                    }
                    _ => {
                        let lb = self
                            .need(&s.load_balancer, "elbv2:CreateListener")?
                            .physical_id;
                        elbv2::create_listener(aws, &lb, s, tg.as_deref(), &t).await?
                    }
                }
            }
            Spec::LaunchTemplate(s) => {
                let sgs = self.ids(&s.security_groups, "ec2:CreateLaunchTemplate")?;
                let hash = crate::tiers::alb_asg::launch_template_hash(s);
                match physical {
                    Some(id) if !create => {
                        let v = ec2::new_launch_template_version(aws, &id, s, sgs).await?;
                        let mut tag = BTreeMap::new();
                        tag.insert(tags::SPEC_HASH.to_string(), hash);
                        ec2::set_tags(aws, &id, &tag).await?;
                        self.reporter.event(&Event::Info {
                            message: format!(
                                "{}: launch template {id} version {v} is the new default",
                                r.id
                            ),
                        });
                        id
                    }
                    _ => {
                        let mut t = t.clone();
                        t.insert(tags::SPEC_HASH.to_string(), hash);
                        ec2::create_launch_template(aws, s, sgs, &t).await?
                    }
                }
            }
            Spec::AutoScalingGroup(s) => {
                let lt = self
                    .need(&s.launch_template, "autoscaling:CreateAutoScalingGroup")?
                    .physical_id;
                if create {
                    let tgs = self.ids(&s.target_groups, "autoscaling:CreateAutoScalingGroup")?;
                    let mut t = t.clone();
                    t.insert(tags::DESIRED.to_string(), s.desired.to_string());
                    autoscaling::create_group(aws, s, &lt, "$Default", tgs, &t).await?;
                } else {
                    // Only a change of the stack's desired capacity is applied: the live value
                    // belongs to the scaling policy between runs.
                    let applied = actual
                        .as_ref()
                        .and_then(|a| a.tags.get(tags::DESIRED))
                        .and_then(|d| d.parse::<u32>().ok());
                    let desired = (applied != Some(s.desired)).then_some(s.desired);
                    autoscaling::update_group(aws, s, &lt, "$Default", desired).await?;
                    if desired.is_some() {
                        autoscaling::set_group_tag(
                            aws,
                            &s.name,
                            tags::DESIRED,
                            &s.desired.to_string(),
                        )
                        .await?;
                    }
                    let refresh = self
                        .preexisting
                        .lock()
                        .map(|p| !p.contains(&s.launch_template))
                        .unwrap_or(false)
                        || self
                            .lt_updated
                            .lock()
                            .map(|u| u.contains(&s.launch_template))
                            .unwrap_or(false);
                    if refresh {
                        match autoscaling::start_instance_refresh(aws, &s.name, s.min_healthy_percent, s.warmup_s).await {
                            Ok(id) => self.reporter.event(&Event::Info {
                                message: format!("{}: rolling instance refresh {id} started (min healthy {}%); `iac status` shows its progress", r.id, s.min_healthy_percent),
                            }),
                            // Emulators (moto 5.2.5) do not implement instance refreshes and
                            // answer with a bare server error; real AWS always does.
                            Err(e) if aws.endpoint_override.is_some() && e.code.is_none() && e.class == ErrorClass::Other => self.reporter.event(&Event::Warning {
                                message: format!("{}: the endpoint cannot start an instance refresh ({}); instances get the new template version when they are replaced", r.id, e.op),
                            }),
                            Err(e) => return Err(e),
                        }
                    }
                }
                s.name.clone()
            }
            Spec::ScalingPolicy(s) => {
                let group = self
                    .need(&s.group, "autoscaling:PutScalingPolicy")?
                    .physical_id;
                autoscaling::put_cpu_policy(aws, s, &group).await?;
                s.name.clone()
            }
            other => {
                return Err(AwsError::state(
                    "apply",
                    ErrorClass::Other,
                    format!("{} ({}) has no provider", r.id, other.kind()),
                ))
            }
        };
        self.remember(&r.id, known(out.clone(), &[]));
        Ok(Some(out))
    }

    /// Deletes one alb-asg resource and waits until it is gone.
    async fn delete_alb(&self, o: &Observed) -> Result<(), AwsError> {
        let aws = &self.aws;
        let id = &o.physical_id;
        let long = Duration::from_secs(40 * 60);
        match (&o.kind, &o.details) {
            (Kind::ScalingPolicy, Details::ScalingPolicy { group, .. }) => {
                let name = if id.starts_with("arn:") {
                    format!("{group}-cpu")
                } else {
                    id.clone()
                };
                autoscaling::delete_policy(aws, group, &name).await
            }
            (Kind::AutoScalingGroup, _) => {
                autoscaling::delete_group(aws, id).await?;
                let what = format!("Auto Scaling group {id} and its instances to be gone");
                self.wait_state(&o.id, &what, Duration::from_secs(1200), None, || async {
                    Ok(if autoscaling::group_exists(aws, id).await? {
                        Some("deleting".to_string())
                    } else {
                        None
                    })
                })
                .await
            }
            (Kind::LaunchTemplate, _) => ec2::delete_launch_template(aws, id).await,
            (Kind::Listener, _) => elbv2::delete_listener(aws, id).await,
            (Kind::LoadBalancer, _) => {
                elbv2::delete_load_balancer(aws, id).await?;
                self.wait_state(
                    &o.id,
                    &format!("load balancer {id} to be gone"),
                    Duration::from_secs(900),
                    None,
                    || elbv2::load_balancer_state(aws, id),
                )
                .await
            }
            (Kind::TargetGroup, _) => {
                self.retry_in_use(&o.id, &format!("target group {id} to be free"), || {
                    elbv2::delete_target_group(aws, id)
                })
                .await
            }
            (Kind::DbInstance, _) => {
                rds::delete_instance(aws, id).await?;
                self.wait_state(
                    &o.id,
                    &format!("Aurora instance {id} to be deleted"),
                    long,
                    None,
                    || rds::instance_state(aws, id),
                )
                .await
            }
            (Kind::DbCluster, _) => {
                let snapshot =
                    (!self.skip_final_snapshot).then(|| format!("{id}-final-{}", unix_now()));
                rds::delete_cluster(aws, id, snapshot.as_deref()).await?;
                if let Some(snap) = &snapshot {
                    self.reporter.event(&Event::Info {
                        message: format!("{}: final snapshot {snap} kept (restore it with the RDS console or CLI)", o.id),
                    });
                }
                self.wait_state(
                    &o.id,
                    &format!("Aurora cluster {id} to be deleted"),
                    long,
                    None,
                    || async { Ok(rds::cluster_state(aws, id).await?.map(|x| x.0)) },
                )
                .await
            }
            (Kind::DbSubnetGroup, _) => {
                self.retry_in_use(&o.id, &format!("DB subnet group {id} to be free"), || {
                    rds::delete_subnet_group(aws, id)
                })
                .await
            }
            (Kind::MountTarget, _) => {
                efs::delete_mount_target(aws, id).await?;
                self.wait_state(
                    &o.id,
                    &format!("mount target {id} to be deleted"),
                    Duration::from_secs(600),
                    None,
                    || efs::mount_target_state(aws, id),
                )
                .await
            }
            (Kind::FileSystem, _) => {
                self.retry_in_use(&o.id, &format!("file system {id} to be free"), || {
                    efs::delete_file_system(aws, id)
                })
                .await
            }
            _ => Ok(()),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
