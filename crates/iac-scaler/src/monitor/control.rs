//! The control loop: each pass decides on the membership table with the pure policy, acts
//! through the [`Fleet`] and finishes drains.

use std::sync::Arc;
use std::time::Duration;

use iac_proto::Directive;

use super::state::{booting, send_directive, Pool, Shared, TimelineRow};
use crate::fleet::Fleet;
use crate::policy::{decide, Decision, Member};
use crate::stats::add;

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

/// The control loop on tokio's paused clock: deadlines of minutes pass in no real time.
#[cfg(test)]
mod tests {
    use super::super::MonitorService;
    use super::*;
    use crate::fixtures::{cfg, s, thresholds};
    use crate::fleet::FleetError;
    use crate::policy::Health;
    use iac_proto::{Monitor, RegisterRequest};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use tonic::Request;

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
        /// Owns whatever registers: these tests are about the control loop, not admission.
        async fn owns(&self, _id: &str) -> Result<bool, FleetError> {
            Ok(true)
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
        let svc = MonitorService::new(shared.clone(), Arc::new(Recording::default()));
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
        async fn owns(&self, id: &str) -> Result<bool, FleetError> {
            Ok(id == "i-fast")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_registration_that_beats_the_launch_call_is_kept() {
        let mut c = cfg(thresholds());
        c.min = 1;
        let shared = Shared::new(c, "token-0123456789abcdef");
        let fleet = Eager(MonitorService::new(
            shared.clone(),
            Arc::new(Recording::default()),
        ));
        tick(&shared, &fleet).await;
        let m = shared.members();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].health, Health::Healthy, "{m:?}");
        assert!(m[0].registered_at.is_some());
    }
}
