//! The provider: one module per resource kind (or close family, found by one discovery call),
//! each behind [`Provider`]: discover, create, update, wait until ready, delete, wait until
//! gone. The [`Applier`] turns plan changes into executor nodes that call them, and holds what
//! they share: what the run has learnt so far, the deadlines, the retries.
//!
//! - `discover`: every resource of a stack, found by tag or path (no local state), one
//!   concurrent call per provider asked, and the read-only look-ups the graph needs (VPC,
//!   subnets, image, zone).
//! - one module per kind: `key_pair`, `parameter`, `security_group`, `instance`, `volume`,
//!   `address` (Elastic IPs and the DNS records on them), `instance_profile`,
//!   `launch_template`, `load_balancing` (target groups, load balancers, listeners),
//!   `auto_scaling` (groups and their policies), `database` (Aurora: subnet group, cluster,
//!   instance), `file_system` (EFS and its mount targets).
//!
//! Adding a kind: its types in `plan::resource` (one `kinds!` line, its spec, its `Details`),
//! its module in this folder (its `Provider` impl and the spec's `Compare`), and a tier
//! that declares it. The module is registered by being here: `build.rs` lists the folder.

// Every file in this folder is a module, and every provider module is in `PROVIDERS`
// (`build.rs` writes both).
include!(concat!(env!("OUT_DIR"), "/providers.rs"));

pub use discover::{
    discover, discover_kinds, discover_scoped, pin_image, resolve_inputs, resolve_network,
    Discovered,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{AwsError, ErrorClass};
use super::{ssm, tags, Aws};
use crate::apply::events::{Event, Reporter};
use crate::apply::wait::{self, Backoff, Poll, WaitError};
use crate::apply::{Node, Task};
use crate::plan::*;
use crate::stack::Stack;

/// What one module does for its kinds. Every call is idempotent where AWS allows it, and
/// "already gone" on a delete is success (the [`Applier`] ignores it).
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The kinds it handles: one, or a close family that one discovery call finds.
    fn kinds(&self) -> &'static [Kind];

    /// The stack's resources of [`Provider::kinds`], found by tag or path.
    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError>;

    /// Creates `r`, remembers what its dependents read (`Applier::remember`), and returns its
    /// physical id (`None`: nothing for iac to create, e.g. a parameter instances write).
    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError>;

    /// Changes `actual` in place to match `r` (the plan said it can), waiting for whatever
    /// the change puts in motion.
    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError>;

    /// After a create: waits until `r` is what its dependents need (only that: an Aurora
    /// cluster's dependents need its endpoint, known at once, not the cluster available).
    async fn wait_ready(
        &self,
        _cx: &Applier,
        _r: &Resource,
        _physical_id: &str,
    ) -> Result<(), AwsError> {
        Ok(())
    }

    /// Starts deleting `o` (retrying while something still uses it).
    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError>;

    /// After a delete: waits until `o` is gone, when what depends on it going needs that.
    async fn wait_gone(&self, _cx: &Applier, _o: &Observed) -> Result<(), AwsError> {
        Ok(())
    }

    /// The part of creating `r` that needs none of its dependencies (allocating an address,
    /// creating a volume in its zone): the [`Applier`] starts it as soon as the stack's record
    /// of kinds is written, beside the dependencies, and [`Provider::create`] takes what it made
    /// with [`Applier::made_early`]. The future gives what is known of it. `None` (the
    /// default): nothing to start early.
    fn create_early(&self, _cx: &Applier, _r: &Resource) -> Option<Early> {
        None
    }

    /// Whether a replacement must delete the old one before creating the new one (its name
    /// is unique and kept: a key pair).
    fn deletes_before_replacing(&self) -> bool {
        false
    }

    /// Whether what a run made or changed of `kind` is known without reading it again (`up`
    /// prints and waits on what it knows; an Auto Scaling group's instances are AWS's doing).
    fn known_after_apply(&self, _kind: Kind) -> bool {
        true
    }
}

/// The early part of a create ([`Provider::create_early`]): it gives what is known of what it
/// made.
pub type Early = std::pin::Pin<Box<dyn std::future::Future<Output = EarlyOutput> + Send>>;

/// What an early part made.
pub type EarlyOutput = Result<Known, AwsError>;

/// The kinds of `changed` that `up` must read again after applying: a run cannot know them.
pub fn unknown_after_apply(changed: &BTreeSet<Kind>) -> BTreeSet<Kind> {
    changed
        .iter()
        .copied()
        .filter(|k| !provider(*k).known_after_apply(*k))
        .collect()
}

/// The module that handles `kind`.
pub(crate) fn provider(kind: Kind) -> &'static dyn Provider {
    PROVIDERS
        .iter()
        .copied()
        .find(|p| p.kinds().contains(&kind))
        // Every kind has its provider: `every_kind_has_one_provider_that_says_it_handles_it`.
        .unwrap_or_else(|| panic!("no provider in the registry handles {kind}"))
}

/// The providers that find `kinds`, each once.
pub(super) fn providers_of(
    kinds: &BTreeSet<Kind>,
) -> impl Iterator<Item = &'static dyn Provider> + '_ {
    PROVIDERS
        .iter()
        .copied()
        .filter(|p| p.kinds().iter().any(|k| kinds.contains(k)))
}

/// What a node does with its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Update,
    /// Delete the old one, then create (see [`Provider::deletes_before_replacing`]).
    Replace,
    Delete,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Update => "update",
            Step::Replace => "replace",
            Step::Delete => "delete",
        }
    }
}

/// The error for a resource handed to a provider that does not handle its kind (a bug).
fn not_mine(r: &Resource) -> AwsError {
    AwsError::state(
        "apply",
        ErrorClass::Other,
        format!("{} ({}) reached the wrong provider", r.id, r.kind()),
    )
}

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
    /// Tags it is known to carry (as discovered, or as created by this run).
    pub tags: BTreeMap<String, String>,
    /// The DNS records this run has already pointed at it (an address's, written as soon as
    /// it was allocated).
    pub pointed_at: BTreeSet<ResourceId>,
}

impl Known {
    /// Known by its physical id only.
    fn id(physical_id: &str) -> Known {
        Known {
            physical_id: physical_id.to_string(),
            ..Default::default()
        }
    }

    /// With one more attribute for templates to read.
    fn with(mut self, key: &str, value: &str) -> Known {
        self.attrs.insert(key.to_string(), value.to_string());
        self
    }

    /// With `key` when `value` is known.
    fn with_some(self, key: &str, value: Option<String>) -> Known {
        match value {
            Some(v) => self.with(key, &v),
            None => self,
        }
    }
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
    /// The stack's `instance.image` (alias or AMI id), tagged beside the image id it resolved
    /// to on what is launched from it, so the next run can keep that image (`pin_image`).
    image: String,
    /// Part of every RunInstances client token: a new token for each `up`, the same one for
    /// every retry within it (AWS binds a token to its parameters for at least 24 hours).
    launch_nonce: String,
    /// The instances being waited on, polled together.
    instance_polls: Arc<instance::InstancePolls>,
    /// The mount targets being waited on, polled together (by file system).
    mount_target_polls: Arc<file_system::MountTargetPolls>,
    /// The resources the plan keeps or makes, as desired, by logical id: a provider may look at
    /// the resources related to the one it makes (an address is tagged with the records written
    /// on it; a [`Notify`] for an Auto Scaling group goes to the group's instances).
    desired: Arc<Mutex<BTreeMap<ResourceId, Resource>>>,
    /// New resources whose early part ([`Provider::create_early`]) waits for the record of
    /// kinds to be written.
    early_pending: Arc<Mutex<Vec<Resource>>>,
    /// The early parts started, by logical id, until their create takes them.
    early: Arc<Mutex<BTreeMap<ResourceId, tokio::task::JoinHandle<EarlyOutput>>>>,
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
            extra_tags: stack.spec.tags.clone(),
            image: stack.spec.instance.image.clone(),
            ..Applier::for_stack(aws, stack.name(), reporter)
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
            image: String::new(),
            launch_nonce: instance::launch_nonce(),
            instance_polls: Arc::default(),
            mount_target_polls: Arc::default(),
            desired: Arc::default(),
            early_pending: Arc::default(),
            early: Arc::default(),
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
        if let Some(ip) = &k.public_ip {
            k.attrs
                .entry("public_ip".to_string())
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

    /// The resources the plan keeps or makes (see [`Applier::nodes`]).
    fn desired(&self) -> Vec<Resource> {
        self.desired
            .lock()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The kind of a resource the plan keeps or makes.
    fn desired_kind(&self, id: &ResourceId) -> Option<Kind> {
        self.desired.lock().ok()?.get(id).map(Resource::kind)
    }

    fn tags_for(&self, id: &ResourceId, kind: Kind) -> BTreeMap<String, String> {
        tags::identity(&self.stack, id, kind, &self.extra_tags)
    }

    /// What the run knows of every resource the plan keeps or makes, once applied: what `up`
    /// prints and waits on, without reading it again (see [`unknown_after_apply`]).
    pub fn facts(&self, plan: &Plan) -> Facts {
        plan.changes
            .iter()
            .filter(|c| c.desired.is_some())
            .filter_map(|c| {
                let kept = c
                    .actual
                    .as_ref()
                    .filter(|_| matches!(c.action, Action::Keep | Action::Update { .. }));
                let k = self.lookup(&c.id).or_else(|| kept.map(known_of))?;
                Some((
                    c.id.clone(),
                    Fact {
                        kind: c.kind,
                        physical_id: k.physical_id,
                        attrs: k.attrs,
                    },
                ))
            })
            .collect()
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
        if let Ok(mut desired) = self.desired.lock() {
            desired.extend(
                plan.changes
                    .iter()
                    .filter_map(|c| c.desired.clone())
                    .map(|r| (r.id.clone(), r)),
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
        // What can be started early waits for the record of kinds when this run writes it
        // (nothing of a kind it does not name yet may exist before it), else starts now.
        let record = ResourceId::new(scope::RECORD);
        if let Ok(mut pending) = self.early_pending.lock() {
            pending.extend(
                plan.changes
                    .iter()
                    .filter(|c| matches!(c.action, Action::Create))
                    .filter_map(|c| c.desired.clone()),
            );
        }
        let writes_record = plan
            .changes
            .iter()
            .any(|c| c.id == record && matches!(c.action, Action::Create | Action::Update { .. }));
        if !writes_record {
            self.start_early();
        }
        let mut apply = Vec::new();
        let mut delete = Vec::new();
        for c in &plan.changes {
            match (&c.action, &c.desired, &c.actual) {
                (Action::Keep, _, _) => {}
                (Action::Create, Some(d), _) => apply.push(self.node(d, Step::Create, None)),
                (Action::Update { .. }, Some(d), Some(a)) => {
                    apply.push(self.node(d, Step::Update, Some(a.clone())))
                }
                (Action::Replace { .. }, Some(d), Some(a)) => {
                    if provider(d.kind()).deletes_before_replacing() {
                        apply.push(self.node(d, Step::Replace, Some(a.clone())));
                    } else {
                        apply.push(self.node(d, Step::Create, None));
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

    fn node(&self, r: &Resource, step: Step, actual: Option<Observed>) -> Node<AwsError> {
        let this = self.clone();
        let r2 = r.clone();
        Node {
            id: r.id.clone(),
            kind: r.kind(),
            action: step.as_str().to_string(),
            deps: r.deps.clone(),
            order_only: false,
            task: Box::new(move || -> Task<AwsError> {
                Box::pin(async move { this.apply(&r2, step, actual).await })
            }),
        }
    }

    /// One step for `r`, through its kind's provider.
    async fn apply(
        &self,
        r: &Resource,
        step: Step,
        actual: Option<Observed>,
    ) -> Result<Option<String>, AwsError> {
        let p = provider(r.kind());
        let out = match (step, &actual) {
            (Step::Update, Some(a)) => p.update(self, r, a).await?,
            _ => {
                if let (Step::Replace, Some(a)) = (step, &actual) {
                    self.delete(a).await?;
                }
                let out = p.create(self, r).await?;
                if let Some(physical_id) = &out {
                    p.wait_ready(self, r, physical_id).await?;
                }
                out
            }
        };
        // The record of kinds is written: what waited for it can start.
        if r.id.as_str() == scope::RECORD {
            self.start_early();
        }
        Ok(out)
    }

    /// Starts the early parts of the pending new resources ([`Provider::create_early`]).
    fn start_early(&self) {
        let pending = self
            .early_pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for r in pending {
            if let Some(work) = provider(r.kind()).create_early(self, &r) {
                if let Ok(mut early) = self.early.lock() {
                    early.insert(r.id.clone(), tokio::spawn(work));
                }
            }
        }
    }

    /// What the early part of creating `id` made, once it is done; `None` when none was
    /// started (the create then does all of it).
    pub async fn made_early(&self, id: &ResourceId) -> Option<EarlyOutput> {
        let started = self.early.lock().ok()?.remove(id)?;
        Some(started.await.unwrap_or_else(|e| {
            Err(AwsError::state(
                "create",
                ErrorClass::Other,
                format!("the early part of creating {id} stopped: {e}"),
            ))
        }))
    }

    /// Deletes one resource and waits until it is gone; "already gone" is success, "still in
    /// use" is retried until the dependency deadline.
    pub async fn delete(&self, o: &Observed) -> Result<(), AwsError> {
        let p = provider(o.kind);
        ignore_gone(p.delete(self, o).await)?;
        ignore_gone(p.wait_gone(self, o).await)
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
            action: Step::Delete.as_str().to_string(),
            deps: Vec::new(),
            order_only: true,
            task: Box::new(move || -> Task<AwsError> {
                Box::pin(
                    async move { this.delete(&o2).await.map(|_| Some(o2.physical_id.clone())) },
                )
            }),
        }
    }

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

    fn is_preexisting(&self, id: &ResourceId) -> bool {
        self.preexisting
            .lock()
            .map(|p| p.contains(id))
            .unwrap_or(false)
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
        tags: o.tags.clone(),
        pointed_at: BTreeSet::new(),
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
            action: Step::Delete.as_str().to_string(),
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
    fn every_kind_has_one_provider_that_says_it_handles_it() {
        for k in Kind::ALL {
            let claimed: Vec<&[Kind]> = super::PROVIDERS
                .iter()
                .map(|p| p.kinds())
                .filter(|kinds| kinds.contains(&k))
                .collect();
            assert_eq!(claimed.len(), 1, "{k:?} is handled by {claimed:?}");
            assert_eq!(provider(k).kinds(), claimed[0], "{k:?}");
        }
        // Each provider handles something, so discovery asks it for something.
        for p in super::PROVIDERS {
            assert!(!p.kinds().is_empty());
        }
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
