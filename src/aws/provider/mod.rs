//! The provider: discovers a stack's resources by tag, resolves inputs, and turns plan changes
//! into executor nodes that call the service modules.
//!
//! - `discover`: every resource of a stack, found by tag or path (no local state), and the
//!   read-only look-ups the graph needs (VPC, subnets, image, zone).
//! - this file: the [`Applier`], which builds executor nodes and applies or deletes the
//!   single-instance kinds (groups, keys, instances, addresses, records, parameters, volumes).
//! - `alb`: the same for the alb-asg kinds (load balancing, auto scaling, Aurora, EFS, IAM).

mod discover;
mod managed;

pub use discover::{
    discover, discover_kinds, discover_scoped, found_with, pin_image, resolve_inputs,
    resolve_network, Discovered,
};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{AwsError, ErrorClass};
use super::{ec2, iam, route53, ssm, tags, Aws};
use crate::apply::events::{Event, Reporter};
use crate::apply::wait::{self, Backoff, Poll, WaitError};
use crate::apply::{Node, Task};
use crate::plan::diff::{instance_spec_hash, short_hash};
use crate::plan::*;
use crate::stack::Stack;

/// Deadlines for the slow parts.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub instance_running: Duration,
    pub instance_terminated: Duration,
    /// How long a delete keeps retrying while something still uses the resource.
    pub dependency: Duration,
    /// How long a Run Command may take (a rolling service update waits for its rollout).
    pub command: Duration,
    /// How long a security group's delete keeps retrying while network interfaces still use it
    /// (a load balancer's can take 10-20 minutes to go after the load balancer).
    pub group_dependency: Duration,
    /// How long a call may be refused because something it names was created a moment ago
    /// (a security group, an instance profile) and is not visible yet.
    pub visible: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            instance_running: Duration::from_secs(600),
            instance_terminated: Duration::from_secs(600),
            dependency: Duration::from_secs(300),
            command: Duration::from_secs(1800),
            visible: Duration::from_secs(120),
            group_dependency: Duration::from_secs(1800),
        }
    }
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
    known: Arc<Mutex<BTreeMap<ResourceId, Known>>>,
    /// Resources that existed before this run and stay: only these are notified in place
    /// (a new instance reads its configuration at boot).
    preexisting: Arc<Mutex<std::collections::BTreeSet<ResourceId>>>,
    /// `down --delete-data`: also delete data volumes.
    pub delete_data: bool,
    /// Swarm: nodes are drained through the leader before they are terminated.
    pub drain: Option<Drain>,
    /// `down --skip-final-snapshot`: delete Aurora clusters without a final snapshot.
    pub skip_final_snapshot: bool,
    /// Launch templates that get a new version in this run (their groups refresh).
    lt_updated: Arc<Mutex<std::collections::BTreeSet<ResourceId>>>,
    /// The kind of each resource the plan keeps or makes, by logical id: a [`Notify`] for an
    /// Auto Scaling group goes to the group's instances.
    kinds: Arc<Mutex<BTreeMap<ResourceId, Kind>>>,
    /// The stack's `instance.image` (alias or AMI id), tagged beside the image id it resolved
    /// to on what is launched from it, so the next run can keep that image (`pin_image`).
    image: String,
    /// Part of every RunInstances client token: a new token for each `up`, the same one for
    /// every retry within it (AWS binds a token to its parameters for at least 24 hours).
    launch_nonce: String,
}

fn wait_err(e: WaitError<AwsError>, op: &str) -> AwsError {
    match e {
        WaitError::Poll(e) => e,
        WaitError::Timeout { .. } => AwsError::state(op, ErrorClass::Other, e.to_string()),
    }
}

impl Applier {
    pub fn new(aws: Aws, stack: &Stack, reporter: Arc<dyn Reporter>) -> Applier {
        Applier {
            aws,
            stack: stack.name().to_string(),
            extra_tags: stack.spec.tags.clone(),
            reporter,
            deadlines: Deadlines::default(),
            known: Arc::default(),
            preexisting: Arc::default(),
            delete_data: false,
            drain: None,
            skip_final_snapshot: false,
            lt_updated: Arc::default(),
            kinds: Arc::default(),
            image: stack.spec.instance.image.clone(),
            launch_nonce: ec2::launch_nonce(),
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
            known: Arc::default(),
            preexisting: Arc::default(),
            delete_data: false,
            drain: None,
            skip_final_snapshot: false,
            lt_updated: Arc::default(),
            kinds: Arc::default(),
            image: String::new(),
            launch_nonce: ec2::launch_nonce(),
        }
    }

    /// `iac:image` and `iac:image-id` for what is launched from `image_id`.
    fn image_tags(&self, image_id: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (tags::IMAGE.to_string(), self.image.clone()),
            (tags::IMAGE_ID.to_string(), image_id.to_string()),
        ])
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
        if let Ok(mut kinds) = self.kinds.lock() {
            kinds.extend(
                plan.changes
                    .iter()
                    .filter(|c| c.desired.is_some())
                    .map(|c| (c.id.clone(), c.kind)),
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
    /// `launched` tells the instances launched from the stack's templates by something other
    /// than iac (a scaler's pool): they go after the stack's own instances (which may launch
    /// more until they are gone) and before the templates.
    pub fn delete_nodes(
        &self,
        observed: &[Observed],
        launched: &dyn Fn(&Observed) -> bool,
    ) -> Vec<Node<AwsError>> {
        // What the deletions refer to by logical id (the groups a rule names) is known.
        for o in observed {
            self.remember(&o.id, known_of(o));
        }
        let mut nodes: Vec<_> = observed.iter().map(|o| self.delete_node(o, "")).collect();
        order_deletes(&mut nodes);
        let pool: Vec<bool> = observed
            .iter()
            .map(|o| o.kind == Kind::Instance && launched(o))
            .collect();
        order_pool_deletes(&mut nodes, &pool);
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
                    ParamValue::Generated | ParamValue::GeneratedTls { .. }
                        if action != "create" =>
                    {
                        return Ok(Some(s.name.clone()))
                    }
                    ParamValue::WrittenByInstances => return Ok(None),
                    ParamValue::Generated => ssm::generate_password()?,
                    ParamValue::GeneratedTls { server_name } => {
                        iac_scaler::tls::generate_for(server_name)
                            .map_err(|e| {
                                AwsError::state(
                                    "ssm:PutParameter",
                                    ErrorClass::Other,
                                    e.to_string(),
                                )
                            })?
                            .bundle()
                    }
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
                if action != "create" {
                    let previous = match actual.as_ref().map(|a| &a.details) {
                        Some(Details::SsmParameter {
                            value: Some(v),
                            secure: false,
                        }) if v != &value => Some(v.clone()),
                        _ => None,
                    };
                    self.notify_all(&r.id, s, previous).await?;
                }
                Ok(Some(s.name.clone()))
            }
            (Spec::Volume(s), _) => {
                let instance = self.need(&s.attach_to, "ec2:AttachVolume")?;
                let vid = match actual {
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
                                    self.remember(
                                        &r.id,
                                        Known {
                                            physical_id: a.physical_id.clone(),
                                            ..Default::default()
                                        },
                                    );
                                    return Ok(Some(a.physical_id));
                                }
                                Some(old) => {
                                    // Moving to a new instance: stop the old one first, so the
                                    // database on the volume is shut down cleanly and nothing
                                    // writes while it is detached (a mounted volume can stay
                                    // `busy` or be left inconsistent). The old one is terminated
                                    // later, in the delete phase.
                                    self.release_volume(&r.id, old).await?;
                                    ignore_gone(
                                        ec2::detach_volume(aws, &a.physical_id, old).await,
                                    )?;
                                }
                                None => {}
                            }
                        }
                        a.physical_id
                    }
                    None => {
                        let mut t = tags_.clone();
                        if s.keep_on_down {
                            t.insert(tags::DATA.to_string(), "true".to_string());
                        }
                        if s.protected {
                            t.insert(tags::PROTECTED.to_string(), "true".to_string());
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
                let groups = self.group_ids();
                self.retry_fresh(&r.id, &format!("security group {gid}"), || {
                    ec2::reconcile_ingress(aws, &gid, &s.ingress, &[], &groups)
                })
                .await?;
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
                t.extend(self.image_tags(&s.image_id));
                // Unique to this launch of this run (its resolved groups included), and the
                // same for every retry of it: a later run never replays a token with other
                // parameters (IdempotentParameterMismatch), and counting the terminated
                // instances AWS still lists cannot be relied on (they vanish after an hour).
                let token = short_hash(
                    format!(
                        "{}/{}/{}/{}/{}",
                        self.stack,
                        r.id,
                        spec_hash,
                        sg_ids.join(","),
                        self.launch_nonce
                    )
                    .as_bytes(),
                );
                // A group or profile created a moment ago can be unknown to EC2 for a few
                // seconds; the same token makes every retry the same launch.
                let what = format!(
                    "groups {} and instance profile {}",
                    sg_ids.join(","),
                    s.instance_profile.as_deref().unwrap_or("-")
                );
                let iid = self
                    .retry_fresh(&r.id, &what, || {
                        ec2::run_instance(aws, s, &s.root_device, sg_ids.clone(), &t, &token)
                    })
                    .await?;
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
                t.insert(tags::DNS_ID.to_string(), r.id.to_string());
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

    fn is_preexisting(&self, id: &ResourceId) -> bool {
        self.preexisting
            .lock()
            .map(|p| p.contains(id))
            .unwrap_or(false)
    }

    /// Sends a changed parameter's commands one at a time (only to instances that existed
    /// before this run: new ones read the value at boot). When one fails, the parameter goes
    /// back to `previous` and the commands already sent are sent again, so every instance runs
    /// the last good value; the error names the step that failed.
    async fn notify_all(
        &self,
        id: &ResourceId,
        s: &SsmParameterSpec,
        previous: Option<String>,
    ) -> Result<(), AwsError> {
        let due: Vec<&Notify> = s
            .notify
            .iter()
            .filter(|n| self.is_preexisting(&n.instance))
            .collect();
        for (i, n) in due.iter().enumerate() {
            let Err(e) = self.notify_one(id, n).await else {
                continue;
            };
            let Some(previous) = &previous else {
                return Err(e);
            };
            ssm::put(&self.aws, &s.name, previous, s.secure, None).await?;
            self.reporter.event(&Event::Info {
                message: format!("{id}: set {} back to its last good value", s.name),
            });
            for done in &due[..i] {
                if let Err(again) = self.notify_one(id, done).await {
                    self.reporter.event(&Event::Info {
                        message: format!("{id}: rolling back failed too: {}", again.message),
                    });
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// The instances a command for `target` goes to: the instance itself, or the instances an
    /// Auto Scaling group has in service now (it may have replaced one since discovery).
    async fn command_targets(&self, target: &ResourceId) -> Result<Vec<String>, AwsError> {
        let known = self.need(target, "ssm:SendCommand")?;
        let kind = self.kinds.lock().ok().and_then(|k| k.get(target).copied());
        if kind == Some(Kind::AutoScalingGroup) {
            super::autoscaling::in_service_instances(&self.aws, &known.physical_id).await
        } else {
            Ok(vec![known.physical_id])
        }
    }

    /// One [`Notify`]: `around.before`, the command (to each of its targets, one at a time),
    /// then `around.after` (also after a failure).
    async fn notify_one(&self, id: &ResourceId, n: &Notify) -> Result<(), AwsError> {
        let targets = self.command_targets(&n.instance).await?;
        if targets.is_empty() {
            // A group between instances: the next one reads the new value at boot.
            self.reporter.event(&Event::Info {
                message: format!(
                    "{id}: {} has no instance in service; its next one reads the new value at boot",
                    n.instance
                ),
            });
            return Ok(());
        }
        let around = match &n.around {
            Some(a) if self.is_preexisting(&a.instance) => {
                let other = self.need(&a.instance, "ssm:SendCommand")?;
                let comment = format!("{} ({}: before)", a.comment, n.instance);
                self.run_and_wait(id, &other.physical_id, &a.before, &comment)
                    .await?;
                Some((a, other))
            }
            _ => None,
        };
        let mut result = Ok(());
        for target in &targets {
            result = self
                .run_and_wait(id, target, &n.command, &n.comment)
                .await
                .map(|_| ());
            if result.is_err() {
                break;
            }
        }
        if let Some((a, other)) = around {
            let comment = format!("{} ({}: after)", a.comment, n.instance);
            self.run_and_wait(id, &other.physical_id, &a.after, &comment)
                .await?;
        }
        result.map(|_| ())
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
                            format!(
                                "`{comment}` failed on {instance_id}: {}",
                                e.lines()
                                    .rev()
                                    .find(|l| !l.trim().is_empty())
                                    .unwrap_or(&e)
                                    .trim()
                            ),
                        ))
                    }
                })
            },
        )
        .await
        .map_err(|e| wait_err(e, "ssm:GetCommandInvocation"))
    }

    /// Stops the instance a data volume moves away from, before the detach: the database on
    /// it still has the volume mounted, and AWS leaves a volume detached from under a mounted
    /// file system `busy` indefinitely. Stopping shuts the database down cleanly and unmounts;
    /// the instance is being replaced anyway (it is terminated once its successor runs).
    async fn release_volume(&self, id: &ResourceId, instance_id: &str) -> Result<(), AwsError> {
        let state = ec2::instance_state_ip(&self.aws, instance_id).await?;
        if !matches!(state, Some((ref s, _)) if s == "running" || s == "pending" || s == "stopping")
        {
            return Ok(());
        }
        self.reporter.event(&Event::Info {
            message: format!(
                "{id}: stopping {instance_id} so that the data volume is unmounted before it moves"
            ),
        });
        ignore_gone(ec2::stop_instance(&self.aws, instance_id).await)?;
        self.wait_instance(id, instance_id, "stopped")
            .await
            .map(|_| ())
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
                self.revoke_group_rules(o).await?;
                let what = format!(
                    "security group {} to be free (up to {} min: network interfaces of a deleted load balancer or instance can take that long to go)",
                    o.physical_id,
                    self.deadlines.group_dependency.as_secs() / 60
                );
                let in_use = |e: &AwsError| e.is(ErrorClass::DependencyViolation);
                self.retry_while(
                    &o.id,
                    &what,
                    self.deadlines.group_dependency,
                    in_use,
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
                if let Some((_, Some(on))) = ec2::volume_state(aws, &o.physical_id).await? {
                    ignore_gone(ec2::detach_volume(aws, &o.physical_id, &on).await)?;
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

    /// Revokes the rules of every group in `observed` that name another group, before any
    /// deletion (`down`): a group another one still refers to cannot be deleted, so one group
    /// held up (by a load balancer's network interfaces, which can take 10-20 minutes to go)
    /// would otherwise hold up the others.
    pub async fn revoke_group_references(&self, observed: &[Observed]) -> Result<(), AwsError> {
        for o in observed {
            self.remember(&o.id, known_of(o));
        }
        for o in observed.iter().filter(|o| o.kind == Kind::SecurityGroup) {
            self.revoke_group_rules(o).await?;
        }
        Ok(())
    }

    /// Revokes the ingress rules of group `o` whose source is another group.
    async fn revoke_group_rules(&self, o: &Observed) -> Result<(), AwsError> {
        let Details::SecurityGroup { ingress, .. } = &o.details else {
            return Ok(());
        };
        let keep: Vec<IngressRule> = ingress
            .iter()
            .filter(|r| matches!(r.source, Source::Cidr(_)))
            .cloned()
            .collect();
        if keep.len() == ingress.len() {
            return Ok(());
        }
        let groups = self.group_ids();
        ignore_gone(
            ec2::reconcile_ingress(&self.aws, &o.physical_id, &keep, ingress, &groups).await,
        )
    }

    async fn retry_in_use<F, Fut>(&self, id: &ResourceId, what: &str, op: F) -> Result<(), AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), AwsError>>,
    {
        let in_use = |e: &AwsError| e.is(ErrorClass::DependencyViolation);
        self.retry_while(id, what, self.deadlines.dependency, in_use, op)
            .await
    }

    /// Runs a call that refers to something created a moment ago, retrying within a short
    /// deadline while AWS answers that it cannot see it yet (`AwsError::is_not_yet_visible`).
    async fn retry_fresh<T, F, Fut>(
        &self,
        id: &ResourceId,
        what: &str,
        op: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        let what = format!("{what} to be visible (eventual consistency)");
        self.retry_while(
            id,
            &what,
            self.deadlines.visible,
            AwsError::is_not_yet_visible,
            op,
        )
        .await
    }

    /// `op` until it succeeds, fails with an error `retry` does not accept, or `deadline` passes.
    async fn retry_while<T, F, Fut>(
        &self,
        id: &ResourceId,
        what: &str,
        deadline: Duration,
        retry: impl Fn(&AwsError) -> bool,
        mut op: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        wait::until(
            id,
            what,
            deadline,
            Backoff::default(),
            self.reporter.as_ref(),
            || {
                let fut = op();
                let retry = &retry;
                async move {
                    match fut.await {
                        Ok(v) => Ok(Poll::Ready(v)),
                        Err(e) if retry(&e) => Ok(Poll::Pending(e.message)),
                        Err(e) => Err(e),
                    }
                }
            },
        )
        .await
        .map_err(|e| wait_err(e, "retry"))
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

/// custom-scaler: the instances the monitor launched (`pool[i]` for `nodes[i]`) are terminated
/// after the stack's other instances and Auto Scaling groups (a monitor, on an instance or as a
/// group's instance, would replace them; groups go first by kind order) and before the launch
/// template they come from (which reverse kind order would delete first).
fn order_pool_deletes(nodes: &mut [Node<AwsError>], pool: &[bool]) {
    if !pool.iter().any(|p| *p) {
        return;
    }
    let ids = |want: &dyn Fn(&Node<AwsError>, bool) -> bool| -> Vec<ResourceId> {
        nodes
            .iter()
            .zip(pool)
            .filter(|(n, p)| want(n, **p))
            .map(|(n, _)| n.id.clone())
            .collect()
    };
    let pool_ids = ids(&|_, p| p);
    let templates = ids(&|n, _| n.kind == Kind::LaunchTemplate);
    let others = ids(&|n, p| !p && n.kind == Kind::Instance);
    for (n, is_pool) in nodes.iter_mut().zip(pool) {
        match n.kind {
            Kind::Instance => {
                n.deps.retain(|d| !templates.contains(d));
                if *is_pool {
                    n.deps.extend(others.iter().cloned());
                }
            }
            Kind::LaunchTemplate => n.deps.extend(pool_ids.iter().cloned()),
            _ => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: Kind) -> Node<AwsError> {
        Node {
            id: ResourceId::new(id),
            kind,
            action: "delete".to_string(),
            deps: Vec::new(),
            order_only: true,
            task: Box::new(|| -> Task<AwsError> { Box::pin(async { Ok(None) }) }),
        }
    }

    fn deps(nodes: &[Node<AwsError>], id: &str) -> Vec<String> {
        let n = nodes.iter().find(|n| n.id.as_str() == id).expect(id);
        let mut d: Vec<String> = n.deps.iter().map(|d| d.to_string()).collect();
        d.sort();
        d
    }

    #[test]
    fn pool_goes_after_the_monitor_and_before_its_template() {
        let mut nodes = vec![
            node("agents-sg", Kind::SecurityGroup),
            node("monitor", Kind::Instance),
            node("pool-1", Kind::Instance),
            node("pool-2", Kind::Instance),
            node("agent-lt", Kind::LaunchTemplate),
        ];
        order_deletes(&mut nodes);
        order_pool_deletes(&mut nodes, &[false, false, true, true, false]);
        assert_eq!(deps(&nodes, "monitor"), Vec::<String>::new());
        assert_eq!(deps(&nodes, "pool-1"), ["monitor"]);
        assert_eq!(deps(&nodes, "agent-lt"), ["pool-1", "pool-2"]);
        assert_eq!(
            deps(&nodes, "agents-sg"),
            ["agent-lt", "monitor", "pool-1", "pool-2"]
        );
    }

    #[test]
    fn pool_goes_after_the_monitor_group_and_before_the_templates() {
        let mut nodes = vec![
            node("monitor-sg", Kind::SecurityGroup),
            node("monitor", Kind::AutoScalingGroup),
            node("monitor-lt", Kind::LaunchTemplate),
            node("pool-1", Kind::Instance),
            node("agent-lt", Kind::LaunchTemplate),
        ];
        order_deletes(&mut nodes);
        order_pool_deletes(&mut nodes, &[false, false, false, true, false]);
        assert_eq!(deps(&nodes, "monitor"), Vec::<String>::new());
        assert_eq!(deps(&nodes, "pool-1"), ["monitor"]);
        assert_eq!(deps(&nodes, "agent-lt"), ["monitor", "pool-1"]);
        assert_eq!(
            deps(&nodes, "monitor-sg"),
            ["agent-lt", "monitor", "monitor-lt", "pool-1"]
        );
    }

    #[test]
    fn without_a_pool_the_order_is_by_kind() {
        let mut nodes = vec![
            node("monitor", Kind::Instance),
            node("agent-lt", Kind::LaunchTemplate),
        ];
        order_deletes(&mut nodes);
        order_pool_deletes(&mut nodes, &[false, false]);
        assert_eq!(deps(&nodes, "monitor"), ["agent-lt"]);
        assert_eq!(deps(&nodes, "agent-lt"), Vec::<String>::new());
    }
}
