//! The monitor's state: the membership table, the policy's state and the timeline, shared by the
//! gRPC service, the admin API and the control loop. Manual actions (add, remove) live here too,
//! because they must respect the same bounds as the control loop.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iac_proto::{Directive, HeartbeatReply};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

use crate::fleet::Fleet;
use crate::policy::{health_at, Health, Member, PolicyConfig, PolicyState};
use crate::stats::{add, Refusal, Stats, StatsSnapshot};

use super::guard::{RateLimit, RefusalLog};

/// Samples kept per member (the policy looks at recent ones only).
pub(super) const SAMPLES: usize = 32;
/// Timeline rows kept in memory (about a day at one decision per second); older ones are dropped.
const TIMELINE_ROWS: usize = 100_000;

/// One member of the pool.
pub(super) struct Entry {
    pub(super) member: Member,
    /// Where directives to this member's heartbeat stream go; also identifies the one stream
    /// this member's heartbeats are accepted on.
    pub(super) replies: Option<mpsc::Sender<Result<HeartbeatReply, Status>>>,
    /// Drain asked at this time; terminated once acknowledged or after the drain deadline.
    pub(super) drain_since: Option<Duration>,
    pub(super) drained: bool,
    /// Highest heartbeat sequence number seen since the last registration.
    pub(super) last_seq: u64,
    /// The secret the last registration returned (empty: not registered since launch or
    /// adoption): only its holder may open this member's stream, deregister it or ack a drain.
    pub(super) session: String,
}

impl Entry {
    /// Whether a heartbeat stream of this member is open.
    pub(super) fn stream_live(&self) -> bool {
        self.replies.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Whether `presented` is this member's session (constant time).
    pub(super) fn session_matches(&self, presented: &str) -> bool {
        !self.session.is_empty()
            && iac_proto::constant_time_eq(presented.as_bytes(), self.session.as_bytes())
    }
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
    pub(super) entries: BTreeMap<String, Entry>,
    pub(super) state: PolicyState,
    pub timeline: Vec<TimelineRow>,
}

impl Pool {
    pub(super) fn record(&mut self, row: TimelineRow) {
        if self.timeline.len() >= TIMELINE_ROWS {
            self.timeline.drain(..TIMELINE_ROWS / 10);
        }
        self.timeline.push(row);
    }

    /// Members that count towards capacity: every one not being drained.
    pub(super) fn active(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| e.drain_since.is_none())
    }
}

/// What the gRPC handlers, the admin API and the control loop share.
pub struct Shared {
    pub policy: PolicyConfig,
    pub(super) token: String,
    /// How long a draining member may take to acknowledge before it is terminated anyway.
    pub drain_deadline: Duration,
    started: Instant,
    pub(super) pool: Mutex<Pool>,
    pub(super) stats: Stats,
    /// Serialises everything that calls the fleet (control loop, manual add), so that the
    /// maximum holds even when a manual add races a scale-out.
    pub(super) fleet_ops: tokio::sync::Mutex<()>,
    /// Registrations per second: a flood costs a token check each, not a fleet lookup.
    pub(super) registrations: RateLimit,
    refusals: RefusalLog,
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
        // Enough for every member to re-register within a second of a monitor restart, and
        // for a small pool to retry often; a flood beyond it is refused before any lookup.
        let registrations = (2.0 * f64::from(policy.max)).max(20.0) * 1.2;
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
            registrations: RateLimit::new(registrations, registrations),
            refusals: RefusalLog::default(),
        })
    }

    pub(super) fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The most entries the table holds: `max` plus a margin for members being drained or
    /// replaced while their successors boot. Registrations beyond it are refused.
    pub fn table_cap(&self) -> usize {
        let max = self.policy.max as usize;
        max + (max / 10).max(4)
    }

    /// Counts a refusal and logs it (at most once a second per reason).
    pub(super) fn refuse(&self, why: Refusal, caller: &str) {
        self.stats.refuse(why);
        self.refusals.note(why, caller);
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
        self.stats.refuse(Refusal::Token);
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

    pub(super) fn with_pool<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> Result<T, Status> {
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

pub(super) async fn send_directive(
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

pub(super) fn booting(id: &str, now: Duration) -> Entry {
    Entry {
        member: Member {
            id: id.to_string(),
            health: Health::Booting,
            launched_at: now,
            registered_at: None,
            last_heartbeat: None,
            load: None,
            samples: VecDeque::new(),
            stream_lost: None,
        },
        replies: None,
        drain_since: None,
        drained: false,
        last_seq: 0,
        session: String::new(),
    }
}

/// The timeline as a simulation report, for the SVG plot.
pub fn timeline_report(rows: &[TimelineRow]) -> crate::simulate::SimReport {
    let mut report = crate::simulate::SimReport::default();
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
