//! The monitor: a gRPC server the agents register with and stream heartbeats to, a membership
//! table driven by heartbeat deadlines, and a control loop that applies the pure policy through a
//! [`Fleet`]. Agents push; the monitor never connects to instance addresses.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iac_proto::{
    check_token, AckDrainReply, AckDrainRequest, DeregisterReply, DeregisterRequest, Directive,
    HeartbeatReply, HeartbeatRequest, Monitor, RegisterReply, RegisterRequest,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::fleet::Fleet;
use super::policy::{decide, Decision, Health, Member, PolicyConfig, PolicyState};

/// Samples kept per member (the policy looks at recent ones only).
const SAMPLES: usize = 32;

/// One member of the pool.
struct Entry {
    member: Member,
    /// Where directives to this member's heartbeat stream go.
    replies: Option<mpsc::Sender<Result<HeartbeatReply, Status>>>,
    /// Drain asked at this time; terminated once acknowledged or after the drain deadline.
    drain_since: Option<Duration>,
    drained: bool,
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

/// What the gRPC handlers and the control loop share.
pub struct Shared {
    pub policy: PolicyConfig,
    token: String,
    /// How long a draining member may take to acknowledge before it is terminated anyway.
    pub drain_deadline: Duration,
    started: Instant,
    pool: Mutex<Pool>,
}

impl Shared {
    pub fn new(policy: PolicyConfig, token: &str) -> Arc<Shared> {
        Arc::new(Shared {
            drain_deadline: policy.heartbeat * 10,
            policy,
            token: token.to_string(),
            started: Instant::now(),
            pool: Mutex::new(Pool {
                entries: BTreeMap::new(),
                state: PolicyState::new(),
                timeline: Vec::new(),
            }),
        })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn with_pool<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> Result<T, Status> {
        self.pool
            .lock()
            .map(|mut p| f(&mut p))
            .map_err(|_| Status::internal("monitor state poisoned"))
    }

    /// Members as the policy sees them: id, health, load, in id order.
    pub fn members(&self) -> Vec<Member> {
        self.pool
            .lock()
            .map(|p| p.entries.values().map(|e| e.member.clone()).collect())
            .unwrap_or_default()
    }

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
    }
}

/// The gRPC side.
pub struct MonitorService {
    pub shared: Arc<Shared>,
}

impl MonitorService {
    /// A malformed or unauthenticated call is refused and logged; the pool is not touched.
    fn auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        check_token(req, &self.shared.token)
            .inspect_err(|e| tracing::warn!(error = %e, "refused an RPC"))
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
        if r.instance_id.is_empty() || r.instance_id.len() > 128 {
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
        })?;
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
                let now = shared.now();
                let known = shared
                    .with_pool(|p| match p.entries.get_mut(&hb.member_id) {
                        Some(e) => {
                            e.replies.get_or_insert_with(|| tx.clone());
                            e.member.last_heartbeat = Some(now);
                            if hb.cpu_percent.is_finite()
                                && (0.0..=100.0).contains(&hb.cpu_percent)
                                && !hb.draining
                            {
                                e.member.load = Some(hb.cpu_percent);
                                e.member.samples.push_back((now, hb.cpu_percent));
                                while e.member.samples.len() > SAMPLES {
                                    e.member.samples.pop_front();
                                }
                            }
                            true
                        }
                        None => false,
                    })
                    .unwrap_or(false);
                if !known {
                    // Stale: the member was removed (terminated or deregistered). Tell it to go.
                    let _ = tx
                        .send(Ok(HeartbeatReply {
                            directive: Directive::Deregister as i32,
                            heartbeat_interval_ms: 0,
                        }))
                        .await;
                    break;
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
    let now = shared.now();
    let (decision, to_drain) = {
        let Ok(mut p) = shared.pool.lock() else {
            return Decision::Hold {
                reason: "monitor state poisoned".into(),
            };
        };
        let members: Vec<Member> = p
            .entries
            .values()
            .filter(|e| e.drain_since.is_none())
            .map(|e| e.member.clone())
            .collect();
        let Pool { state, .. } = &mut *p;
        let decision = decide(now, &members, &shared.policy, state);
        let loads: Vec<f64> = members.iter().filter_map(|m| m.load).collect();
        let avg_load = (!loads.is_empty()).then(|| loads.iter().sum::<f64>() / loads.len() as f64);
        p.timeline.push(TimelineRow {
            t: now,
            avg_load,
            pool: members.len() as u32,
            decision: format!("{decision:?}"),
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
        if tx
            .send(Ok(HeartbeatReply {
                directive: Directive::Drain as i32,
                heartbeat_interval_ms: 0,
            }))
            .await
            .is_err()
        {
            tracing::warn!(member = %id, "drain directive not delivered");
        }
    }
    match &decision {
        Decision::ScaleOut { count, .. } => launch(shared, fleet, *count, now).await,
        Decision::Replace { dead, .. } => {
            terminate(shared, fleet, dead).await;
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

async fn launch(shared: &Shared, fleet: &dyn Fleet, count: u32, now: Duration) {
    match fleet.launch(count).await {
        Ok(ids) => {
            if let Ok(mut p) = shared.pool.lock() {
                for id in ids {
                    p.entries.insert(id.clone(), booting(&id, now));
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "launch failed"),
    }
}

async fn terminate(shared: &Shared, fleet: &dyn Fleet, ids: &[String]) {
    if let Err(e) = fleet.terminate(ids).await {
        tracing::error!(error = %e, "terminate failed");
        return;
    }
    if let Ok(mut p) = shared.pool.lock() {
        for id in ids {
            p.entries.remove(id);
        }
    }
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
                    tracing::info!(decision = ?d, "scaling decision");
                }
            }
        }
    }
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
            r.decision.replace('"', "'")
        ));
    }
    out
}
