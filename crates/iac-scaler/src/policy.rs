//! The scaling policy: a pure function from (time, members, configuration, carried state) to one
//! [`Decision`]. It does no I/O and reads no clock, so the monitor's control loop, the offline
//! simulator and the tests all drive exactly the same logic with whatever time they choose.
//!
//! Order of precedence inside [`decide`]: the pool is first brought back inside `[min, max]`, then
//! dead members are replaced, and only then does load drive a scale-out or scale-in. That order
//! is what makes min/max hold on every path.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::time::Duration;

pub use super::config::{validate, Mode, PolicyConfig};
pub use super::health::{health_at, Health, Member};

/// State carried from one decision to the next; owned by the caller, opaque to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyState {
    last_scale_out: Option<Duration>,
    last_scale_in: Option<Duration>,
    /// Consecutive decisions with the average above `high` (thresholds mode).
    consecutive_high: u32,
    /// Consecutive decisions with the average below `low` (thresholds mode).
    consecutive_low: u32,
    /// Desired sizes seen within `scale_in_window` (target tracking stabilisation).
    desired_history: VecDeque<(Duration, u32)>,
}

impl PolicyState {
    pub fn new() -> Self {
        Self::default()
    }

    /// When the last scale-out was decided, if ever (for status output).
    pub fn last_scale_out(&self) -> Option<Duration> {
        self.last_scale_out
    }

    /// When the last scale-in was decided, if ever (for status output).
    pub fn last_scale_in(&self) -> Option<Duration> {
        self.last_scale_in
    }
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold {
        reason: String,
    },
    /// Launch `count` new members.
    ScaleOut {
        count: u32,
        reason: String,
    },
    /// Terminate these members.
    ScaleIn {
        victims: Vec<String>,
        reason: String,
    },
    /// Terminate these dead members and launch one replacement for each (pool size unchanged).
    Replace {
        dead: Vec<String>,
        reason: String,
    },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Hold { reason }
            | Decision::ScaleOut { reason, .. }
            | Decision::ScaleIn { reason, .. }
            | Decision::Replace { reason, .. } => reason,
        }
    }

    /// Pool size after the caller applies this decision to a pool of `pool` members.
    pub fn pool_after(&self, pool: u32) -> u32 {
        match self {
            Decision::Hold { .. } | Decision::Replace { .. } => pool,
            Decision::ScaleOut { count, .. } => pool.saturating_add(*count),
            Decision::ScaleIn { victims, .. } => pool.saturating_sub(len_u32(victims.len())),
        }
    }
}

/// Decides what to do at `now`. `state` must be the one returned to the previous call (start
/// with [`PolicyState::default`]); the caller is expected to apply every non-`Hold` decision.
/// `members` may be owned or borrowed, so the monitor decides on its table without copying it.
pub fn decide<M: Borrow<Member>>(
    now: Duration,
    members: &[M],
    cfg: &PolicyConfig,
    state: &mut PolicyState,
) -> Decision {
    let members: Vec<&Member> = members.iter().map(Borrow::borrow).collect();
    let members = members.as_slice();
    let health: Vec<Health> = members.iter().map(|m| health_at(now, m, cfg)).collect();
    let pool = len_u32(members.len());

    // 1. Bounds first: nothing below may leave the pool outside [min, max].
    if pool > cfg.max {
        let victims = pick_victims(now, members, &health, cfg, pool - cfg.max);
        state.last_scale_in = Some(now);
        state.reset_streaks();
        return Decision::ScaleIn {
            victims,
            reason: format!("pool of {pool} is above max {}", cfg.max),
        };
    }
    if pool < cfg.min {
        state.last_scale_out = Some(now);
        state.reset_streaks();
        return Decision::ScaleOut {
            count: cfg.min - pool,
            reason: format!("pool of {pool} is below min {}", cfg.min),
        };
    }

    // 2. Dead members: replace one for one, which keeps the (already in-bounds) pool size.
    let dead: Vec<String> = members
        .iter()
        .zip(&health)
        .filter(|(_, h)| **h == Health::Dead)
        .map(|(m, _)| m.id.clone())
        .collect();
    if !dead.is_empty() {
        return Decision::Replace {
            reason: format!("{} dead member(s): {}", dead.len(), dead.join(", ")),
            dead,
        };
    }

    // 3. Load. Only healthy, warmed-up members with a reading after their warm-up count.
    let loads: Vec<f64> = members
        .iter()
        .zip(&health)
        .filter(|(_, h)| **h == Health::Healthy)
        .filter_map(|(m, _)| eligible_load(now, m, cfg))
        .collect();
    if loads.is_empty() {
        state.reset_streaks();
        return hold("no warmed-up healthy member reports load".into());
    }
    let avg = loads.iter().sum::<f64>() / loads.len() as f64;
    // Members that carry load now (registered, alive); booting ones will share it once they serve.
    let serving = len_u32(
        health
            .iter()
            .filter(|h| matches!(h, Health::Healthy | Health::Suspect))
            .count(),
    );

    match &cfg.mode {
        Mode::Thresholds {
            high,
            low,
            out_samples,
            in_samples,
            step_out,
            step_in,
        } => {
            if avg > *high {
                state.consecutive_high = state.consecutive_high.saturating_add(1);
                state.consecutive_low = 0;
            } else if avg < *low {
                state.consecutive_low = state.consecutive_low.saturating_add(1);
                state.consecutive_high = 0;
            } else {
                state.reset_streaks();
                return hold(format!("average load {avg:.1}% is within [{low}, {high}]"));
            }
            if state.consecutive_high >= *out_samples {
                let why = format!(
                    "average load {avg:.1}% above {high}% for {} decisions",
                    state.consecutive_high
                );
                match scale_out(now, pool, pool.saturating_add(*step_out), cfg, state, why) {
                    Decision::ScaleOut { count, reason } => {
                        state.consecutive_high = 0;
                        Decision::ScaleOut { count, reason }
                    }
                    other => other,
                }
            } else if state.consecutive_low >= *in_samples {
                let why = format!(
                    "average load {avg:.1}% below {low}% for {} decisions",
                    state.consecutive_low
                );
                let target = pool.saturating_sub(*step_in);
                match scale_in(now, members, &health, pool, target, cfg, state, why) {
                    Decision::ScaleIn { victims, reason } => {
                        state.consecutive_low = 0;
                        Decision::ScaleIn { victims, reason }
                    }
                    other => other,
                }
            } else {
                hold(format!(
                    "average load {avg:.1}%: {} high / {} low decision(s) in a row",
                    state.consecutive_high, state.consecutive_low
                ))
            }
        }
        Mode::TargetTracking {
            target,
            tolerance,
            scale_in_window,
        } => {
            let ratio = avg / target;
            let desired = if (ratio - 1.0).abs() <= *tolerance {
                pool
            } else {
                // The demand now carried by `serving` members, spread at `target` each. Booting
                // members are not in the product (they carry nothing yet) but are in `pool`, so
                // capacity already on its way is never launched twice.
                let raw = (f64::from(serving) * ratio).ceil();
                if raw >= f64::from(cfg.max) {
                    cfg.max
                } else {
                    (raw.max(0.0) as u32).clamp(cfg.min, cfg.max)
                }
            };
            let horizon = now.saturating_sub(*scale_in_window);
            state.desired_history.retain(|(t, _)| *t >= horizon);
            state.desired_history.push_back((now, desired));
            let stabilised = state
                .desired_history
                .iter()
                .map(|(_, d)| *d)
                .max()
                .unwrap_or(desired);
            let why = format!("average load {avg:.1}% vs target {target}%");
            if desired > pool {
                scale_out(now, pool, desired, cfg, state, why)
            } else if stabilised < pool {
                let why = format!("{why}; highest desired within window is {stabilised}");
                scale_in(now, members, &health, pool, stabilised, cfg, state, why)
            } else if desired < pool {
                hold(format!(
                    "{why}: desired {desired}, held at {stabilised} by the scale-in window"
                ))
            } else {
                hold(format!("{why}: pool of {pool} is right"))
            }
        }
    }
}

impl PolicyState {
    fn reset_streaks(&mut self) {
        self.consecutive_high = 0;
        self.consecutive_low = 0;
    }
}

fn hold(reason: String) -> Decision {
    Decision::Hold { reason }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn within(now: Duration, since: Option<Duration>, period: Duration) -> bool {
    since.is_some_and(|t| now.saturating_sub(t) < period)
}

/// A member's load if it is past warm-up: the last reading if taken after warm-up ended, else
/// the newest sample that was (a reading from inside warm-up says nothing about steady state).
fn eligible_load(now: Duration, m: &Member, cfg: &PolicyConfig) -> Option<f64> {
    let warm_from = m.registered_at?.saturating_add(cfg.warmup);
    if now < warm_from {
        return None;
    }
    let last = match (m.last_heartbeat, m.load) {
        (Some(t), Some(load)) if t >= warm_from => Some(load),
        _ => m
            .samples
            .iter()
            .rev()
            .find(|(t, _)| *t >= warm_from)
            .map(|(_, l)| *l),
    };
    // Agents are outside our control: a NaN or negative reading is ignored, not averaged.
    last.filter(|l| l.is_finite() && *l >= 0.0)
}

fn scale_out(
    now: Duration,
    pool: u32,
    wanted: u32,
    cfg: &PolicyConfig,
    state: &mut PolicyState,
    why: String,
) -> Decision {
    let to = wanted.min(cfg.max);
    if to <= pool {
        return hold(format!("{why}; already at max {}", cfg.max));
    }
    if within(now, state.last_scale_out, cfg.cooldown_out) {
        return hold(format!("{why}; in scale-out cooldown"));
    }
    state.last_scale_out = Some(now);
    Decision::ScaleOut {
        count: to - pool,
        reason: format!("{why}: {pool} → {to}"),
    }
}

#[allow(clippy::too_many_arguments)] // all borrowed context of one decision; a struct adds nothing
fn scale_in(
    now: Duration,
    members: &[&Member],
    health: &[Health],
    pool: u32,
    wanted: u32,
    cfg: &PolicyConfig,
    state: &mut PolicyState,
    why: String,
) -> Decision {
    let to = wanted.max(cfg.min);
    if to >= pool {
        return hold(format!("{why}; already at min {}", cfg.min));
    }
    if within(now, state.last_scale_out, cfg.cooldown_out) {
        return hold(format!("{why}; too soon after a scale-out"));
    }
    if within(now, state.last_scale_in, cfg.cooldown_in) {
        return hold(format!("{why}; in scale-in cooldown"));
    }
    state.last_scale_in = Some(now);
    Decision::ScaleIn {
        victims: pick_victims(now, members, health, cfg, pool - to),
        reason: format!("{why}: {pool} → {to}"),
    }
}

/// The `count` members to terminate: dead, then booting, then suspect (they give least for
/// their cost), then the least loaded; ties broken by id so the choice is deterministic.
/// "Loaded" means the load the policy is allowed to see: a warming-up member counts as 0, so
/// its unreliable readings cannot steer the choice either.
fn pick_victims<M: Borrow<Member>>(
    now: Duration,
    members: &[M],
    health: &[Health],
    cfg: &PolicyConfig,
    count: u32,
) -> Vec<String> {
    let rank = |h: Health| match h {
        Health::Dead => 0,
        Health::Booting => 1,
        Health::Suspect => 2,
        Health::Healthy => 3,
    };
    let mut order: Vec<(u8, f64, &str)> = members
        .iter()
        .map(Borrow::borrow)
        .zip(health)
        .map(|(m, h)| {
            let load = eligible_load(now, m, cfg).unwrap_or(0.0);
            (rank(*h), load, m.id.as_str())
        })
        .collect();
    order.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then_with(|| a.2.cmp(b.2))
    });
    order
        .into_iter()
        .take(count as usize)
        .map(|(_, _, id)| id.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn thresholds_need_consecutive_samples_and_respect_cooldown() {
        let c = cfg(thresholds());
        let mut st = PolicyState::default();
        let at = |t| vec![healthy("a", s(t), 90.0), healthy("b", s(t), 80.0)];
        assert!(matches!(
            decide(s(100), &at(100), &c, &mut st),
            Decision::Hold { .. }
        ));
        let d = decide(s(105), &at(105), &c, &mut st);
        assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d:?}");
        // Still high, two more decisions, but inside cooldown_out.
        decide(s(110), &at(110), &c, &mut st);
        let d = decide(s(115), &at(115), &c, &mut st);
        assert!(d.reason().contains("cooldown"), "{d:?}");
        assert_eq!(st.last_scale_out(), Some(s(105)));
    }

    #[test]
    fn a_dip_resets_the_streak() {
        let c = cfg(thresholds());
        let mut st = PolicyState::default();
        decide(s(100), &[healthy("a", s(100), 90.0)], &c, &mut st);
        decide(s(105), &[healthy("a", s(105), 50.0)], &c, &mut st);
        let d = decide(s(110), &[healthy("a", s(110), 90.0)], &c, &mut st);
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    }

    #[test]
    fn no_scale_in_inside_cooldown_out() {
        let c = cfg(thresholds());
        let mut st = PolicyState {
            last_scale_out: Some(s(100)),
            ..PolicyState::default()
        };
        let low = |t| vec![healthy("a", s(t), 5.0), healthy("b", s(t), 5.0)];
        for t in [110, 120, 130, 140] {
            let d = decide(s(t), &low(t), &c, &mut st);
            assert!(matches!(d, Decision::Hold { .. }), "t={t}: {d:?}");
        }
        let d = decide(s(160), &low(160), &c, &mut st);
        assert_eq!(
            d,
            Decision::ScaleIn {
                victims: vec!["a".into()],
                reason: d.reason().into()
            }
        );
    }

    #[test]
    fn victims_are_booting_first_then_least_loaded_by_id() {
        let now = s(100);
        let mut boot = healthy("z-boot", now, 0.0);
        boot.registered_at = None;
        boot.launched_at = s(90);
        let members = vec![
            healthy("c", now, 10.0),
            healthy("b", now, 3.0),
            healthy("a", now, 3.0),
            boot,
        ];
        let c = cfg(thresholds());
        let health: Vec<Health> = members.iter().map(|m| health_at(now, m, &c)).collect();
        assert_eq!(
            pick_victims(now, &members, &health, &c, 3),
            ["z-boot", "a", "b"]
        );
    }

    #[test]
    fn bounds_come_first() {
        let mut c = cfg(thresholds());
        c.min = 3;
        let d = decide::<Member>(s(10), &[], &c, &mut PolicyState::default());
        assert!(matches!(d, Decision::ScaleOut { count: 3, .. }), "{d:?}");
        c.min = 0;
        c.max = 1;
        let members = vec![healthy("a", s(100), 99.0), healthy("b", s(100), 1.0)];
        let d = decide(s(100), &members, &c, &mut PolicyState::default());
        assert_eq!(d.pool_after(2), 1);
        assert!(matches!(d, Decision::ScaleIn { ref victims, .. } if victims == &["b"]));
    }

    #[test]
    fn dead_members_are_replaced_before_load_is_considered() {
        let c = cfg(thresholds());
        let mut dead = healthy("d", s(0), 0.0);
        dead.last_heartbeat = Some(s(0));
        let members = vec![healthy("a", s(100), 99.0), dead];
        let d = decide(s(100), &members, &c, &mut PolicyState::default());
        assert!(
            matches!(d, Decision::Replace { ref dead, .. } if dead == &["d"]),
            "{d:?}"
        );
    }

    #[test]
    fn warming_up_members_are_ignored() {
        let c = cfg(thresholds());
        let mut st = PolicyState::default();
        let mut m = healthy("a", s(100), 99.0);
        m.registered_at = Some(s(80)); // warm until 110
        for t in [100, 105] {
            m.last_heartbeat = Some(s(t));
            let d = decide(s(t), std::slice::from_ref(&m), &c, &mut st);
            assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        }
        // Past warm-up, a reading taken during warm-up is still ignored.
        m.last_heartbeat = Some(s(108));
        let d = decide(s(111), std::slice::from_ref(&m), &c, &mut st);
        assert!(d.reason().contains("no warmed-up"), "{d:?}");
    }

    #[test]
    fn target_tracking_sizes_to_target_and_counts_booting_capacity() {
        let c = cfg(Mode::TargetTracking {
            target: 50.0,
            tolerance: 0.1,
            scale_in_window: s(60),
        });
        let mut st = PolicyState::default();
        let mut members = vec![healthy("a", s(100), 100.0), healthy("b", s(100), 100.0)];
        let d = decide(s(100), &members, &c, &mut st);
        assert!(matches!(d, Decision::ScaleOut { count: 2, .. }), "{d:?}");
        for id in ["c", "d"] {
            let mut b = healthy(id, s(100), 0.0);
            b.registered_at = None;
            b.launched_at = s(100);
            members.push(b);
        }
        // Same load a moment later: the two booting members already cover it.
        let mut st2 = PolicyState::default();
        let d = decide(s(101), &members, &c, &mut st2);
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
    }

    #[test]
    fn target_tracking_tolerance_and_stabilisation() {
        let c = cfg(Mode::TargetTracking {
            target: 50.0,
            tolerance: 0.1,
            scale_in_window: s(60),
        });
        let mut st = PolicyState::default();
        let four = |t, load| -> Vec<Member> {
            ["a", "b", "c", "d"]
                .iter()
                .map(|id| healthy(id, s(t), load))
                .collect()
        };
        let d = decide(s(100), &four(100, 54.0), &c, &mut st);
        assert!(d.reason().contains("is right"), "{d:?}");
        // Load halves: desired 2, but 4 was desired within the window.
        let d = decide(s(130), &four(130, 25.0), &c, &mut st);
        assert!(d.reason().contains("scale-in window"), "{d:?}");
        let d = decide(s(161), &four(161, 25.0), &c, &mut st);
        assert!(
            matches!(d, Decision::ScaleIn { ref victims, .. } if victims.len() == 2),
            "{d:?}"
        );
    }
}
