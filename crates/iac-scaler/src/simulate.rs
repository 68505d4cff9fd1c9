//! Offline replay of a load trace in virtual time, to judge a [`PolicyConfig`] before it runs a
//! real fleet and to compare it with two baselines: a naive fixed-threshold scaler and the
//! Kubernetes HPA rule.
//!
//! The model is deliberately small. The trace gives the total demand in percent of one instance;
//! it is spread evenly over the instances that serve (capped at 100 % each, the rest is unmet
//! demand); a launched instance serves only `boot_time` later; a terminated one stops at once.
//! Every controller starts with its minimum pool, already serving and warmed up.

use std::collections::VecDeque;
use std::time::Duration;

use super::policy::{decide, Decision, Health, Member, Mode, PolicyConfig, PolicyState};
use super::trace::load_at;

pub use super::plot::{timeline_csv, timeline_svg};
pub use super::trace::{load_trace, TraceError};

/// How the simulation is run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Decision period of the policy (the heartbeat); the world is stepped at `min(tick, 1 s)`.
    pub tick: Duration,
    /// Launch → registered and serving.
    pub boot_time: Duration,
    /// Per-instance load (CPU %) that counts as overloaded in the report.
    pub threshold: f64,
}

/// What happened during one replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimReport {
    /// Time during which the per-instance load was above `SimOptions::threshold`.
    pub seconds_above_threshold: f64,
    /// Sum of instances × time, booting ones included (they are paid for).
    pub instance_seconds: f64,
    pub max_instances: u32,
    /// Every action taken (holds are left out), at trace time.
    pub decisions: Vec<(Duration, String)>,
    /// One entry per world step: (trace time, per-instance load, instances).
    pub timeline: Vec<(Duration, f64, u32)>,
}

/// Replays `trace` under the policy in `cfg`.
pub fn simulate(trace: &[(Duration, f64)], cfg: &PolicyConfig, opts: &SimOptions) -> SimReport {
    // The monitor's clock starts `warmup` before the trace, so the initial pool (registered at
    // monitor time 0) is already warmed up when the trace begins.
    let mut ctl = PolicyController {
        cfg: cfg.clone(),
        state: PolicyState::default(),
        origin: cfg.warmup,
    };
    run(trace, opts, cfg.min.max(1), opts.tick, &mut ctl)
}

/// Baseline: every second, add one instance when the highest member load is at least 70 %, remove
/// one when the lowest is below 20 %; minimum 2, no maximum, no cooldown, no warm-up.
pub fn baseline_fixed_threshold(trace: &[(Duration, f64)], opts: &SimOptions) -> SimReport {
    run(
        trace,
        opts,
        FIXED_MIN,
        Duration::from_secs(1),
        &mut FixedThreshold,
    )
}

/// Baseline: the Kubernetes HPA rule every 15 s, `desired = ceil(n · avg / target)` with a 10 %
/// tolerance, a 300 s scale-down stabilisation window and the default scale-up limit (double or
/// +4 per period). Not-yet-ready instances count as 0 % when scaling up and 100 % when scaling
/// down, as the HPA does. Min, max and target come from `cfg` (thresholds mode: their midpoint).
pub fn baseline_hpa(trace: &[(Duration, f64)], cfg: &PolicyConfig, opts: &SimOptions) -> SimReport {
    let target = match cfg.mode {
        Mode::TargetTracking { target, .. } => target,
        Mode::Thresholds { high, low, .. } => (high + low) / 2.0,
    };
    let mut ctl = Hpa {
        min: cfg.min.max(1),
        max: cfg.max.max(1),
        target,
        history: VecDeque::new(),
    };
    run(trace, opts, cfg.min.max(1), HPA_PERIOD, &mut ctl)
}

/// The policy and both baselines on the same trace, in that order.
pub fn compare(
    trace: &[(Duration, f64)],
    cfg: &PolicyConfig,
    opts: &SimOptions,
) -> Vec<(String, SimReport)> {
    vec![
        ("policy".to_string(), simulate(trace, cfg, opts)),
        (
            "fixed-threshold".to_string(),
            baseline_fixed_threshold(trace, opts),
        ),
        ("hpa".to_string(), baseline_hpa(trace, cfg, opts)),
    ]
}

const FIXED_MIN: u32 = 2;
const FIXED_HIGH: f64 = 70.0;
const FIXED_LOW: f64 = 20.0;
const HPA_PERIOD: Duration = Duration::from_secs(15);
const HPA_TOLERANCE: f64 = 0.1;
const HPA_WINDOW: Duration = Duration::from_secs(300);

/// One simulated instance; times are on the trace clock.
struct Instance {
    id: String,
    launched_at: Duration,
    ready_at: Duration,
    /// Part of the starting pool: registered long before the trace begins.
    initial: bool,
}

struct World {
    instances: Vec<Instance>,
    next_id: u64,
    boot_time: Duration,
}

impl World {
    fn serving(&self, t: Duration) -> usize {
        self.instances.iter().filter(|i| i.ready_at <= t).count()
    }

    /// Per-instance load: the total spread over serving instances, capped at 100 %.
    fn per_instance_load(&self, t: Duration, total: f64) -> f64 {
        match self.serving(t) {
            0 if total > 0.0 => 100.0,
            0 => 0.0,
            n => (total / n as f64).min(100.0),
        }
    }

    fn launch(&mut self, t: Duration, count: u32) {
        for _ in 0..count {
            self.next_id += 1;
            self.instances.push(Instance {
                id: format!("i-{:04}", self.next_id),
                launched_at: t,
                ready_at: t + self.boot_time,
                initial: false,
            });
        }
    }

    fn terminate(&mut self, ids: &[String]) {
        self.instances.retain(|i| !ids.contains(&i.id));
    }

    /// The newest `count` instances, not-yet-serving ones first (what a naive scaler removes).
    fn newest(&self, t: Duration, count: usize) -> Vec<String> {
        let mut order: Vec<&Instance> = self.instances.iter().collect();
        order.sort_by_key(|i| (i.ready_at <= t, std::cmp::Reverse(i.launched_at)));
        order.iter().take(count).map(|i| i.id.clone()).collect()
    }
}

/// A scaler under test: called once per period with the current per-instance load.
trait Controller {
    /// Changes `world` and returns a description of what it did, if anything.
    fn act(&mut self, t: Duration, load: f64, world: &mut World) -> Option<String>;
}

fn run(
    trace: &[(Duration, f64)],
    opts: &SimOptions,
    initial: u32,
    period: Duration,
    ctl: &mut dyn Controller,
) -> SimReport {
    let mut report = SimReport::default();
    let Some(&(last, _)) = trace.last() else {
        return report;
    };
    // Guard against a zero tick from unvalidated options: it would never advance.
    let step = opts
        .tick
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(10));
    let period = period.max(step);
    let end = last + step;
    let mut world = World {
        instances: Vec::new(),
        next_id: 0,
        boot_time: opts.boot_time,
    };
    world.launch(Duration::ZERO, initial);
    for i in &mut world.instances {
        i.ready_at = Duration::ZERO;
        i.initial = true;
    }
    let mut next_decision = Duration::ZERO;
    let mut t = Duration::ZERO;
    while t < end {
        let total = load_at(trace, t);
        if t >= next_decision {
            let load = world.per_instance_load(t, total);
            if let Some(what) = ctl.act(t, load, &mut world) {
                report.decisions.push((t, what));
            }
            next_decision += period;
        }
        let load = world.per_instance_load(t, total);
        let n = u32::try_from(world.instances.len()).unwrap_or(u32::MAX);
        if load > opts.threshold {
            report.seconds_above_threshold += step.as_secs_f64();
        }
        report.instance_seconds += f64::from(n) * step.as_secs_f64();
        report.max_instances = report.max_instances.max(n);
        report.timeline.push((t, load, n));
        t += step;
    }
    report
}

struct PolicyController {
    cfg: PolicyConfig,
    state: PolicyState,
    /// Monitor time at trace time zero.
    origin: Duration,
}

impl Controller for PolicyController {
    fn act(&mut self, t: Duration, load: f64, world: &mut World) -> Option<String> {
        let now = self.origin + t;
        let members: Vec<Member> = world
            .instances
            .iter()
            .map(|i| {
                let registered = i.ready_at <= t;
                // Initial instances were registered at monitor time 0, the others on the trace
                // clock shifted by `origin`.
                let (launched_at, ready_at) = if i.initial {
                    (Duration::ZERO, Duration::ZERO)
                } else {
                    (self.origin + i.launched_at, self.origin + i.ready_at)
                };
                Member {
                    id: i.id.clone(),
                    health: Health::Healthy,
                    launched_at,
                    registered_at: registered.then_some(ready_at),
                    last_heartbeat: registered.then_some(now),
                    load: registered.then_some(load),
                    samples: VecDeque::new(),
                    stream_lost: None,
                }
            })
            .collect();
        let decision = decide(now, &members, &self.cfg, &mut self.state);
        match &decision {
            Decision::Hold { .. } => return None,
            Decision::ScaleOut { count, .. } => world.launch(t, *count),
            Decision::ScaleIn { victims, .. } => world.terminate(victims),
            Decision::Replace { dead, .. } => {
                world.terminate(dead);
                world.launch(t, u32::try_from(dead.len()).unwrap_or(u32::MAX));
            }
        }
        Some(describe(&decision))
    }
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Hold { reason } => format!("hold: {reason}"),
        Decision::ScaleOut { count, reason } => format!("out +{count}: {reason}"),
        Decision::ScaleIn { victims, reason } => {
            format!("in -{} ({}): {reason}", victims.len(), victims.join(" "))
        }
        Decision::Replace { dead, reason } => format!("replace {}: {reason}", dead.join(" ")),
    }
}

struct FixedThreshold;

impl Controller for FixedThreshold {
    fn act(&mut self, t: Duration, load: f64, world: &mut World) -> Option<String> {
        // Load is spread evenly, so the highest and the lowest member load are both `load`.
        if world.serving(t) == 0 {
            return None;
        }
        if load >= FIXED_HIGH {
            world.launch(t, 1);
            Some(format!("out +1: highest load {load:.1}% >= {FIXED_HIGH}%"))
        } else if load < FIXED_LOW && world.instances.len() > FIXED_MIN as usize {
            let victims = world.newest(t, 1);
            world.terminate(&victims);
            Some(format!("in -1: lowest load {load:.1}% < {FIXED_LOW}%"))
        } else {
            None
        }
    }
}

struct Hpa {
    min: u32,
    max: u32,
    target: f64,
    /// Recommendations within the scale-down stabilisation window.
    history: VecDeque<(Duration, u32)>,
}

impl Controller for Hpa {
    fn act(&mut self, t: Duration, load: f64, world: &mut World) -> Option<String> {
        let n = world.instances.len();
        let ready = world.serving(t);
        if ready == 0 {
            return None;
        }
        let unready = (n - ready) as f64;
        let ratio = load / self.target;
        let adjusted = if unready > 0.0 && ratio > 1.0 + HPA_TOLERANCE {
            (load * ready as f64) / n as f64 / self.target
        } else if unready > 0.0 && ratio < 1.0 - HPA_TOLERANCE {
            (load * ready as f64 + 100.0 * unready) / n as f64 / self.target
        } else {
            ratio
        };
        let current = u32::try_from(n).unwrap_or(u32::MAX);
        let recommended = if (adjusted - 1.0).abs() <= HPA_TOLERANCE {
            current
        } else {
            let raw = (adjusted * n as f64).ceil().min(f64::from(u32::MAX)) as u32;
            let up_limit = current.saturating_mul(2).max(current.saturating_add(4));
            raw.min(up_limit).clamp(self.min, self.max)
        };
        let horizon = t.saturating_sub(HPA_WINDOW);
        self.history.retain(|(at, _)| *at >= horizon);
        self.history.push_back((t, recommended));
        let desired = if recommended > current {
            recommended
        } else {
            self.history
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(recommended)
                .min(current)
        };
        if desired > current {
            world.launch(t, desired - current);
            Some(format!("out {current} → {desired}: average {load:.1}%"))
        } else if desired < current {
            let victims = world.newest(t, (current - desired) as usize);
            world.terminate(&victims);
            Some(format!("in {current} → {desired}: average {load:.1}%"))
        } else {
            None
        }
    }
}
