//! The monitor: a gRPC server the agents register with and stream heartbeats to, a membership
//! table driven by heartbeat deadlines, and a control loop that applies the pure policy through a
//! [`Fleet`]. Agents push; the monitor never connects to instance addresses.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use super::stats::StatsSnapshot;
use super::stats::{add, Stats};

use iac_proto::{
    check_token, AckDrainReply, AckDrainRequest, DeregisterReply, DeregisterRequest, Directive,
    HeartbeatReply, HeartbeatRequest, Monitor, RegisterReply, RegisterRequest,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::fleet::Fleet;
use super::policy::{decide, health_at, Decision, Health, Member, PolicyConfig, PolicyState};

/// Samples kept per member (the policy looks at recent ones only).
const SAMPLES: usize = 32;
/// Timeline rows kept in memory (about a day at one decision per second); older ones are dropped.
const TIMELINE_ROWS: usize = 100_000;

/// One member of the pool.
struct Entry {
    member: Member,
    /// Where directives to this member's heartbeat stream go.
    replies: Option<mpsc::Sender<Result<HeartbeatReply, Status>>>,
    /// Drain asked at this time; terminated once acknowledged or after the drain deadline.
    drain_since: Option<Duration>,
    drained: bool,
    /// Highest heartbeat sequence number seen since the last registration.
    last_seq: u64,
}

/// A line of the timeline: every decision with the load and pool size it was taken on.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    pub t: Duration,
    pub avg_load: Option<f64>,
    pub pool: u32,
    pub decision: String,
}

/// The membership table and the policy's state.
pub struct Pool {
    entries: BTreeMap<String, Entry>,
    state: PolicyState,
    pub timeline: Vec<TimelineRow>,
}

impl Pool {
    fn record(&mut self, row: TimelineRow) {
        if self.timeline.len() >= TIMELINE_ROWS {
            self.timeline.drain(..TIMELINE_ROWS / 10);
        }
        self.timeline.push(row);
    }

    /// Members that count towards capacity: every one not being drained.
    fn active(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| e.drain_since.is_none())
    }
}

/// What the gRPC handlers, the admin API and the control loop share.
pub struct Shared {
    pub policy: PolicyConfig,
    token: String,
    /// How long a draining member may take to acknowledge before it is terminated anyway.
    pub drain_deadline: Duration,
    started: Instant,
    pool: Mutex<Pool>,
    stats: Stats,
    /// Serialises everything that calls the fleet (control loop, manual add), so that the
    /// maximum holds even when a manual add races a scale-out.
    fleet_ops: tokio::sync::Mutex<()>,
}

/// A manual action refused, or failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AdminError {
    #[error("the pool is at its maximum of {0}")]
    AtMax(u32),
    #[error("the pool is at its minimum of {0}")]
    AtMin(u32),
    #[error("no member `{0}` in the pool")]
    NotFound(String),
    #[error("`{0}` is already being drained")]
    Draining(String),
    #[error("the fleet failed: {0}")]
    Fleet(String),
    #[error("monitor state poisoned")]
    Poisoned,
}

impl Shared {
    /// A monitor that gives draining members ten heartbeat intervals to acknowledge.
    pub fn new(policy: PolicyConfig, token: &str) -> Arc<Shared> {
        let drain = policy.heartbeat * 10;
        Shared::with_drain_deadline(policy, token, drain)
    }

    pub fn with_drain_deadline(policy: PolicyConfig, token: &str, drain: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            drain_deadline: drain,
            policy,
            token: token.to_string(),
            started: Instant::now(),
            pool: Mutex::new(Pool {
                entries: BTreeMap::new(),
                state: PolicyState::new(),
                timeline: Vec::new(),
            }),
            stats: Stats::default(),
            fleet_ops: tokio::sync::Mutex::new(()),
        })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether `presented` is the token (constant time; an empty configured token matches nothing).
    pub fn token_matches(&self, presented: &str) -> bool {
        !self.token.is_empty()
            && iac_proto::constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub(crate) fn count_refused(&self) {
        add(&self.stats.refused, 1);
    }

    /// The monitor's metrics in the Prometheus text format: the counters, the handling-latency
    /// histogram, and gauges of the pool by health.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        self.stats.prometheus(&mut out);
        let now = self.now();
        let mut by_health: BTreeMap<&str, u32> =
            ["booting", "healthy", "suspect", "dead", "draining"]
                .into_iter()
                .map(|h| (h, 0))
                .collect();
        let mut loads = Vec::new();
        if let Ok(p) = self.pool.lock() {
            for e in p.entries.values() {
                let h = if e.drain_since.is_some() {
                    "draining"
                } else {
                    health_name(health_at(now, &e.member, &self.policy))
                };
                *by_health.entry(h).or_default() += 1;
                loads.extend(e.member.load.filter(|_| e.drain_since.is_none()));
            }
        }
        out.push_str("# HELP iac_monitor_members Members of the pool by state.\n# TYPE iac_monitor_members gauge\n");
        for (h, n) in &by_health {
            out.push_str(&format!("iac_monitor_members{{state=\"{h}\"}} {n}\n"));
        }
        let avg = if loads.is_empty() {
            0.0
        } else {
            loads.iter().sum::<f64>() / loads.len() as f64
        };
        out.push_str(&format!(
            "# HELP iac_monitor_average_load Average CPU % last reported by active members.\n# TYPE iac_monitor_average_load gauge\niac_monitor_average_load {avg}\n"
        ));
        out.push_str(&format!(
            "# HELP iac_monitor_pool_bounds The pool's configured bounds.\n# TYPE iac_monitor_pool_bounds gauge\niac_monitor_pool_bounds{{bound=\"min\"}} {}\niac_monitor_pool_bounds{{bound=\"max\"}} {}\n",
            self.policy.min, self.policy.max
        ));
        out
    }

    fn with_pool<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> Result<T, Status> {
        self.pool
            .lock()
            .map(|mut p| f(&mut p))
            .map_err(|_| Status::internal("monitor state poisoned"))
    }

    /// Members as the policy sees them now (health derived from their deadlines), in id order.
    pub fn members(&self) -> Vec<Member> {
        self.member_views().into_iter().map(|v| v.member).collect()
    }

    /// Members with their health now and whether they are being drained, in id order.
    pub fn member_views(&self) -> Vec<MemberView> {
        let now = self.now();
        self.pool
            .lock()
            .map(|p| {
                p.entries
                    .values()
                    .map(|e| {
                        let mut member = e.member.clone();
                        member.health = health_at(now, &member, &self.policy);
                        MemberView {
                            member,
                            draining: e.drain_since.is_some(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Seconds since the monitor started (the clock of members' times and the timeline).
    pub fn uptime(&self) -> Duration {
        self.now()
    }

    /// Launches one member by hand. Refused at the maximum, like every other path.
    pub async fn add_member(&self, fleet: &dyn Fleet) -> Result<String, AdminError> {
        let _ops = self.fleet_ops.lock().await;
        let pool = self
            .pool
            .lock()
            .map(|p| p.active().count())
            .map_err(|_| AdminError::Poisoned)?;
        if pool as u64 >= u64::from(self.policy.max) {
            return Err(AdminError::AtMax(self.policy.max));
        }
        let now = self.now();
        let ids = fleet.launch(1).await.map_err(|e| {
            add(&self.stats.fleet_errors, 1);
            AdminError::Fleet(e.to_string())
        })?;
        add(&self.stats.launches, ids.len() as u64);
        let mut p = self.pool.lock().map_err(|_| AdminError::Poisoned)?;
        for id in &ids {
            // An agent quick enough to register before the launch call returned keeps its entry.
            p.entries
                .entry(id.clone())
                .or_insert_with(|| booting(id, now));
        }
        let size = p.active().count() as u32;
        p.record(TimelineRow {
            t: now,
            avg_load: None,
            pool: size,
            decision: format!("manual add: {}", ids.join(", ")),
        });
        ids.into_iter()
            .next()
            .ok_or_else(|| AdminError::Fleet("the fleet launched nothing".into()))
    }

    /// Removes one member by hand: it is drained, then terminated by the control loop. Refused at
    /// the minimum, like every other path.
    pub async fn remove_member(&self, id: &str) -> Result<(), AdminError> {
        let _ops = self.fleet_ops.lock().await;
        let now = self.now();
        let tx = {
            let mut p = self.pool.lock().map_err(|_| AdminError::Poisoned)?;
            let pool = p.active().count() as u32;
            let e = p
                .entries
                .get(id)
                .ok_or_else(|| AdminError::NotFound(id.to_string()))?;
            if e.drain_since.is_some() {
                return Err(AdminError::Draining(id.to_string()));
            }
            if pool <= self.policy.min {
                return Err(AdminError::AtMin(self.policy.min));
            }
            let e = p
                .entries
                .get_mut(id)
                .ok_or_else(|| AdminError::NotFound(id.to_string()))?;
            e.drain_since = Some(now);
            let tx = e.replies.clone();
            p.record(TimelineRow {
                t: now,
                avg_load: None,
                pool: pool - 1,
                decision: format!("manual remove: {id}"),
            });
            tx
        };
        if let Some(tx) = tx {
            send_directive(id, &tx, Directive::Drain).await;
        }
        Ok(())
    }

    /// Every decision so far (the oldest are dropped past 100,000 rows).
    pub fn timeline(&self) -> Vec<TimelineRow> {
        self.pool
            .lock()
            .map(|p| p.timeline.clone())
            .unwrap_or_default()
    }

    /// Adds instances the fleet already runs (after a restart) as booting members, so the pool
    /// counts them and nothing is launched twice; their agents' re-registration makes them live.
    pub fn adopt(&self, ids: &[String]) {
        let now = self.now();
        if let Ok(mut p) = self.pool.lock() {
            for id in ids {
                p.entries
                    .entry(id.clone())
                    .or_insert_with(|| booting(id, now));
            }
        }
    }
}

/// A member as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub member: Member,
    pub draining: bool,
}

pub fn health_name(h: Health) -> &'static str {
    match h {
        Health::Booting => "booting",
        Health::Healthy => "healthy",
        Health::Suspect => "suspect",
        Health::Dead => "dead",
    }
}

async fn send_directive(
    id: &str,
    tx: &mpsc::Sender<Result<HeartbeatReply, Status>>,
    directive: Directive,
) {
    let reply = HeartbeatReply {
        directive: directive as i32,
        heartbeat_interval_ms: 0,
    };
    if tx.send(Ok(reply)).await.is_err() {
        tracing::warn!(member = %id, ?directive, "directive not delivered: the stream is closed");
    }
}

fn booting(id: &str, now: Duration) -> Entry {
    Entry {
        member: Member {
            id: id.to_string(),
            health: Health::Booting,
            launched_at: now,
            registered_at: None,
            last_heartbeat: None,
            load: None,
            samples: VecDeque::new(),
        },
        replies: None,
        drain_since: None,
        drained: false,
        last_seq: 0,
    }
}

/// What a heartbeat did to the pool.
enum Beat {
    Counted,
    Stale,
    Unknown,
}

/// The gRPC side.
pub struct MonitorService {
    pub shared: Arc<Shared>,
}

impl MonitorService {
    /// A malformed or unauthenticated call is refused and logged; the pool is not touched.
    fn auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        check_token(req, &self.shared.token).inspect_err(|e| {
            self.shared.count_refused();
            tracing::warn!(error = %e, "refused an RPC");
        })
    }
}

#[tonic::async_trait]
impl Monitor for MonitorService {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        if r.instance_id.is_empty()
            || r.instance_id.len() > 128
            || !r.instance_id.chars().all(|c| c.is_ascii_graphic())
        {
            self.shared.count_refused();
            tracing::warn!("refused a registration with a malformed instance id");
            return Err(Status::invalid_argument(
                "instance_id must be 1 to 128 characters",
            ));
        }
        let now = self.shared.now();
        self.shared.with_pool(|p| {
            let e = p
                .entries
                .entry(r.instance_id.clone())
                .or_insert_with(|| booting(&r.instance_id, now));
            e.member.health = Health::Healthy;
            e.member.registered_at.get_or_insert(now);
            e.member.last_heartbeat = Some(now);
            // A new registration starts a new heartbeat stream and sequence.
            e.replies = None;
            e.last_seq = 0;
        })?;
        add(&self.shared.stats.registrations, 1);
        tracing::info!(instance = %r.instance_id, address = %r.address, "registered");
        Ok(Response::new(RegisterReply {
            member_id: r.instance_id,
            heartbeat_interval_ms: self.shared.policy.heartbeat.as_millis() as u32,
            accepted: true,
        }))
    }

    type HeartbeatStream = ReceiverStream<Result<HeartbeatReply, Status>>;

    async fn heartbeat(
        &self,
        req: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        self.auth(&req)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Ok(Some(hb)) = inbound.message().await {
                let received = std::time::Instant::now();
                let now = shared.now();
                let outcome = shared
                    .with_pool(|p| match p.entries.get_mut(&hb.member_id) {
                        Some(e) if hb.seq <= e.last_seq => Beat::Stale,
                        Some(e) => {
                            if !e.replies.as_ref().is_some_and(|r| r.same_channel(&tx)) {
                                e.replies = Some(tx.clone());
                            }
                            e.last_seq = hb.seq;
                            e.member.last_heartbeat = Some(now);
                            if hb.cpu_percent.is_finite()
                                && (0.0..=100.0).contains(&hb.cpu_percent)
                                && !hb.draining
                                && e.drain_since.is_none()
                            {
                                e.member.load = Some(hb.cpu_percent);
                                e.member.samples.push_back((now, hb.cpu_percent));
                                while e.member.samples.len() > SAMPLES {
                                    e.member.samples.pop_front();
                                }
                            }
                            Beat::Counted
                        }
                        None => Beat::Unknown,
                    })
                    .unwrap_or(Beat::Unknown);
                match outcome {
                    Beat::Counted => shared.stats.heartbeat_handled(received.elapsed()),
                    Beat::Stale => {
                        // Out of order (a replayed or delayed message): ignored, pool untouched.
                        add(&shared.stats.stale, 1);
                        tracing::debug!(member = %hb.member_id, seq = hb.seq, "stale heartbeat ignored");
                    }
                    Beat::Unknown => {
                        // The member was removed (terminated or deregistered), or the monitor
                        // restarted: tell the agent to go through registration again or leave.
                        add(&shared.stats.stale, 1);
                        send_directive(&hb.member_id, &tx, Directive::Deregister).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterReply>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.shared.with_pool(|p| {
            if let Some(e) = p.entries.get_mut(&r.member_id) {
                // It leaves by itself: dead to the policy, which replaces it if the pool needs it.
                e.member.health = Health::Dead;
                e.drained = true;
            }
        })?;
        add(&self.shared.stats.deregistrations, 1);
        tracing::info!(member = %r.member_id, reason = %r.reason, "deregistered");
        Ok(Response::new(DeregisterReply {}))
    }

    async fn ack_drain(
        &self,
        req: Request<AckDrainRequest>,
    ) -> Result<Response<AckDrainReply>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.shared.with_pool(|p| {
            if let Some(e) = p.entries.get_mut(&r.member_id) {
                e.drained = true;
            }
        })?;
        Ok(Response::new(AckDrainReply {}))
    }
}

/// One turn of the control loop: decide, act through the fleet, finish drains.
pub async fn tick(shared: &Shared, fleet: &dyn Fleet) -> Decision {
    let _ops = shared.fleet_ops.lock().await;
    let now = shared.now();
    let (decision, to_drain) = {
        let Ok(mut p) = shared.pool.lock() else {
            return Decision::Hold {
                reason: "monitor state poisoned".into(),
            };
        };
        // Decided on the table itself, under the lock: copying 10,000 members with their
        // sample histories stalled the monitor for milliseconds per pass.
        let Pool { entries, state, .. } = &mut *p;
        let members: Vec<&Member> = entries
            .values()
            .filter(|e| e.drain_since.is_none())
            .map(|e| &e.member)
            .collect();
        let decision = decide(now, &members, &shared.policy, state);
        let (sum, n) = members
            .iter()
            .filter_map(|m| m.load)
            .fold((0.0, 0usize), |(s, n), l| (s + l, n + 1));
        let avg_load = (n > 0).then(|| sum / n as f64);
        let pool = members.len() as u32;
        p.record(TimelineRow {
            t: now,
            avg_load,
            pool,
            decision: describe(&decision),
        });
        let mut to_drain = Vec::new();
        if let Decision::ScaleIn { victims, .. } = &decision {
            for v in victims {
                if let Some(e) = p.entries.get_mut(v) {
                    e.drain_since = Some(now);
                    to_drain.extend(e.replies.clone().map(|tx| (v.clone(), tx)));
                }
            }
        }
        (decision, to_drain)
    };
    for (id, tx) in to_drain {
        send_directive(&id, &tx, Directive::Drain).await;
    }
    match &decision {
        Decision::ScaleOut { count, .. } => {
            launch(shared, fleet, *count, now).await;
        }
        // Terminate first, so the instance count never exceeds the maximum (nor the account's
        // quota); if terminating fails the dead stay counted and are retried.
        Decision::Replace { dead, .. } if terminate(shared, fleet, dead).await => {
            launch(shared, fleet, dead.len() as u32, now).await;
        }
        _ => {}
    }
    // Drains that finished, or took too long.
    let done: Vec<String> = shared
        .pool
        .lock()
        .map(|p| {
            p.entries
                .iter()
                .filter(|(_, e)| {
                    e.drain_since.is_some_and(|since| {
                        e.drained || now.saturating_sub(since) >= shared.drain_deadline
                    })
                })
                .map(|(id, _)| id.clone())
                .collect()
        })
        .unwrap_or_default();
    if !done.is_empty() {
        terminate(shared, fleet, &done).await;
    }
    decision
}

/// A decision as one timeline cell: the action and its reason.
fn describe(d: &Decision) -> String {
    match d {
        Decision::Hold { reason } => format!("hold: {reason}"),
        Decision::ScaleOut { count, reason } => format!("scale out +{count}: {reason}"),
        Decision::ScaleIn { victims, reason } => {
            format!("scale in {}: {reason}", victims.join(" "))
        }
        Decision::Replace { dead, reason } => format!("replace {}: {reason}", dead.join(" ")),
    }
}

/// Launches `count` members; false when the fleet failed (the next tick decides again).
async fn launch(shared: &Shared, fleet: &dyn Fleet, count: u32, now: Duration) -> bool {
    match fleet.launch(count).await {
        Ok(ids) => {
            add(&shared.stats.launches, ids.len() as u64);
            tracing::info!(instances = ?ids, "launched");
            if let Ok(mut p) = shared.pool.lock() {
                for id in ids {
                    // An agent that registered before the launch call returned (a local
                    // process starts in milliseconds) keeps its registration.
                    p.entries
                        .entry(id.clone())
                        .or_insert_with(|| booting(&id, now));
                }
            }
            true
        }
        Err(e) => {
            add(&shared.stats.fleet_errors, 1);
            tracing::error!(error = %e, "launch failed");
            false
        }
    }
}

/// Terminates members; false when the fleet failed (they stay in the pool and are retried).
async fn terminate(shared: &Shared, fleet: &dyn Fleet, ids: &[String]) -> bool {
    if let Err(e) = fleet.terminate(ids).await {
        add(&shared.stats.fleet_errors, 1);
        tracing::error!(error = %e, "terminate failed");
        return false;
    }
    add(&shared.stats.terminations, ids.len() as u64);
    tracing::info!(instances = ?ids, "terminated");
    if let Ok(mut p) = shared.pool.lock() {
        for id in ids {
            p.entries.remove(id);
        }
    }
    true
}

/// Runs the control loop until `shutdown` resolves.
pub async fn run(
    shared: Arc<Shared>,
    fleet: Arc<dyn Fleet>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut every = tokio::time::interval(shared.policy.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = every.tick() => {
                let d = tick(&shared, fleet.as_ref()).await;
                if !matches!(d, Decision::Hold { .. }) {
                    tracing::info!(decision = %describe(&d), "scaling decision");
                }
            }
        }
    }
}

/// Failure to start the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot list the fleet's instances, so the pool cannot be rebuilt without risking launching twice: {0}")]
    List(String),
    #[error("the admin endpoint must listen on a loopback address, not {0}")]
    AdminNotLoopback(std::net::SocketAddr),
    #[error("cannot read the listening address: {0}")]
    Io(#[from] std::io::Error),
}

/// Rebuilds the pool from what the fleet runs, then serves gRPC (and the admin API, when given a
/// loopback listener) and runs the control loop until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    fleet: Arc<dyn Fleet>,
    grpc: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MonitorError> {
    if let Some(a) = &admin {
        let addr = a.local_addr()?;
        if !addr.ip().is_loopback() {
            return Err(MonitorError::AdminNotLoopback(addr));
        }
    }
    let running = fleet
        .list()
        .await
        .map_err(|e| MonitorError::List(e.to_string()))?;
    if !running.is_empty() {
        tracing::info!(instances = ?running, "adopted the fleet's running instances");
    }
    shared.adopt(&running);
    let svc = MonitorService {
        shared: shared.clone(),
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(iac_proto::MonitorServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
    );
    let admin_task =
        admin.map(|l| tokio::spawn(super::admin::serve(l, shared.clone(), fleet.clone())));
    run(shared, fleet, shutdown).await;
    // Open heartbeat streams would hold a graceful shutdown forever: stop at once, the agents
    // reconnect to the next monitor.
    server.abort();
    if let Some(t) = admin_task {
        t.abort();
    }
    Ok(())
}

/// The timeline as a simulation report, for the SVG plot.
pub fn timeline_report(rows: &[TimelineRow]) -> super::simulate::SimReport {
    let mut report = super::simulate::SimReport::default();
    for r in rows {
        report
            .timeline
            .push((r.t, r.avg_load.unwrap_or(0.0), r.pool));
        if !r.decision.starts_with("hold") {
            report.decisions.push((r.t, r.decision.clone()));
        }
        report.max_instances = report.max_instances.max(r.pool);
    }
    report
}

/// The timeline as CSV: `seconds,avg_load,pool,decision`.
pub fn timeline_csv(rows: &[TimelineRow]) -> String {
    let mut out = String::from("seconds,avg_load,pool,decision\n");
    for r in rows {
        let load = r.avg_load.map(|l| format!("{l:.1}")).unwrap_or_default();
        out.push_str(&format!(
            "{:.3},{load},{},\"{}\"\n",
            r.t.as_secs_f64(),
            r.pool,
            r.decision.replace('"', "'").replace(['\n', '\r'], " ")
        ));
    }
    out
}

/// The control loop on tokio's paused clock: deadlines of minutes pass in no real time.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{cfg, s, thresholds};
    use crate::fleet::FleetError;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Launches `i-1`, `i-2`, … and records every call.
    #[derive(Default)]
    struct Recording {
        next: AtomicU32,
        launched: Mutex<Vec<String>>,
        terminated: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Fleet for Recording {
        async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError> {
            let ids: Vec<String> = (0..count)
                .map(|_| format!("i-{}", self.next.fetch_add(1, Ordering::SeqCst) + 1))
                .collect();
            self.launched.lock().unwrap().extend(ids.clone());
            Ok(ids)
        }
        async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
            self.terminated.lock().unwrap().extend(ids.iter().cloned());
            Ok(())
        }
        async fn list(&self) -> Result<Vec<String>, FleetError> {
            Ok(Vec::new())
        }
    }

    fn authed<T>(msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            "Bearer token-0123456789abcdef".parse().unwrap(),
        );
        r
    }

    async fn register(svc: &MonitorService, id: &str) {
        svc.register(authed(RegisterRequest {
            instance_id: id.into(),
            address: "10.0.0.1".into(),
            version: "t".into(),
            labels: Default::default(),
        }))
        .await
        .expect("register");
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_that_never_registers_is_replaced_after_the_boot_deadline() {
        let mut c = cfg(thresholds());
        c.min = 2;
        let shared = Shared::new(c.clone(), "token-0123456789abcdef");
        let fleet = Recording::default();
        tick(&shared, &fleet).await;
        assert_eq!(*fleet.launched.lock().unwrap(), ["i-1", "i-2"]);
        // Booting members count: nothing more is launched while they boot.
        tokio::time::advance(c.boot_deadline - s(1)).await;
        tick(&shared, &fleet).await;
        assert_eq!(fleet.launched.lock().unwrap().len(), 2);
        assert!(fleet.terminated.lock().unwrap().is_empty());
        // Past the deadline: both are dead, terminated first, then replaced one for one.
        tokio::time::advance(s(2)).await;
        let d = tick(&shared, &fleet).await;
        assert!(matches!(d, Decision::Replace { .. }), "{d:?}");
        assert_eq!(*fleet.terminated.lock().unwrap(), ["i-1", "i-2"]);
        assert_eq!(
            *fleet.launched.lock().unwrap(),
            ["i-1", "i-2", "i-3", "i-4"]
        );
        let ids: Vec<String> = shared.members().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["i-3", "i-4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_victim_that_never_acknowledges_is_terminated_at_the_drain_deadline() {
        let mut c = cfg(thresholds());
        c.min = 1;
        c.warmup = Duration::ZERO;
        let shared = Shared::with_drain_deadline(c.clone(), "token-0123456789abcdef", s(30));
        let fleet = Recording::default();
        shared.adopt(&["i-a".to_string(), "i-b".to_string()]);
        let svc = MonitorService {
            shared: shared.clone(),
        };
        register(&svc, "i-a").await;
        register(&svc, "i-b").await;
        // Low load long enough for a scale-in; the heartbeats come straight into the table.
        let beat_and_tick = || async {
            tokio::time::advance(c.heartbeat).await;
            let now = shared.now();
            shared
                .with_pool(|p| {
                    for (i, e) in p.entries.values_mut().enumerate() {
                        e.member.last_heartbeat = Some(now);
                        e.member.load = Some(5.0 + i as f64);
                        e.member.samples.push_back((now, 5.0 + i as f64));
                    }
                })
                .unwrap();
            tick(&shared, &fleet).await;
        };
        let draining = |shared: &Shared| -> Vec<String> {
            shared
                .member_views()
                .into_iter()
                .filter(|v| v.draining)
                .map(|v| v.member.id)
                .collect()
        };
        for _ in 0..4 {
            beat_and_tick().await;
            if !draining(&shared).is_empty() {
                break;
            }
        }
        let draining = draining(&shared);
        assert_eq!(draining, ["i-a"], "the least loaded is chosen");
        assert!(
            fleet.terminated.lock().unwrap().is_empty(),
            "not before the drain ends"
        );
        // It keeps beating but never acknowledges: terminated once the drain deadline has
        // passed (30 s, six heartbeats), not before.
        for _ in 0..5 {
            beat_and_tick().await;
        }
        assert!(fleet.terminated.lock().unwrap().is_empty());
        beat_and_tick().await;
        assert_eq!(*fleet.terminated.lock().unwrap(), ["i-a"]);
        assert!(fleet.launched.lock().unwrap().is_empty());
        assert_eq!(shared.stats().terminations, 1);
    }

    /// A fleet whose instance registers before the launch call returns (local agents do).
    struct Eager(MonitorService);

    #[async_trait::async_trait]
    impl Fleet for Eager {
        async fn launch(&self, _count: u32) -> Result<Vec<String>, FleetError> {
            register(&self.0, "i-fast").await;
            Ok(vec!["i-fast".to_string()])
        }
        async fn terminate(&self, _ids: &[String]) -> Result<(), FleetError> {
            Ok(())
        }
        async fn list(&self) -> Result<Vec<String>, FleetError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_registration_that_beats_the_launch_call_is_kept() {
        let mut c = cfg(thresholds());
        c.min = 1;
        let shared = Shared::new(c, "token-0123456789abcdef");
        let fleet = Eager(MonitorService {
            shared: shared.clone(),
        });
        tick(&shared, &fleet).await;
        let m = shared.members();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].health, Health::Healthy, "{m:?}");
        assert!(m[0].registered_at.is_some());
    }
}
