//! The custom scaler. Its core (policy, simulation, monitor, admin API, local fleet) is the
//! `iac-scaler` crate, which has no AWS SDK; this module adds what needs the stack file or AWS:
//! the policy read from a stack's `scaler` section and the `ec2` fleet.

pub mod ec2;

pub use iac_scaler::{admin, config, fleet, health, monitor, plot, policy, simulate, stats, trace};

use std::time::Duration;

use crate::stack::model::{ScalerConf, ScalerMode};
use config::{Mode, PolicyConfig};

/// The policy a stack file's `scaler` section describes (check it with [`config::validate`]).
pub fn policy_from_stack(s: &ScalerConf) -> PolicyConfig {
    let secs = |v: u32| Duration::from_secs(u64::from(v));
    let millis = |v: u32| Duration::from_millis(u64::from(v));
    PolicyConfig {
        min: s.min,
        max: s.max,
        mode: match s.mode {
            ScalerMode::Thresholds => Mode::Thresholds {
                high: s.high,
                low: s.low,
                out_samples: s.out_samples,
                in_samples: s.in_samples,
                step_out: s.step_out,
                step_in: s.step_in,
            },
            ScalerMode::TargetTracking => Mode::TargetTracking {
                target: s.target,
                tolerance: s.tolerance,
                scale_in_window: secs(s.scale_in_window_s),
            },
        },
        cooldown_out: secs(s.cooldown_out_s),
        cooldown_in: secs(s.cooldown_in_s),
        warmup: secs(s.warmup_s),
        heartbeat: millis(s.heartbeat_ms),
        dead_after: millis(s.dead_after_ms),
        boot_deadline: secs(s.boot_deadline_s),
    }
}
