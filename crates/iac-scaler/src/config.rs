//! The scaler's configuration and its validation. Validation names the field path of every
//! problem (`scaler.min`) so the stack-file loader can point at the offending line.

use std::time::Duration;

/// How load turns into a desired pool size.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Step scaling on the average load of eligible members.
    Thresholds {
        /// Average load (CPU %) above which a decision counts as "high".
        high: f64,
        /// Average load (CPU %) below which a decision counts as "low".
        low: f64,
        /// Consecutive high decisions needed before scaling out (filters one-off peaks).
        out_samples: u32,
        /// Consecutive low decisions needed before scaling in.
        in_samples: u32,
        /// Instances added per scale-out.
        step_out: u32,
        /// Instances removed per scale-in.
        step_in: u32,
    },
    /// Keep the average load near `target`, like AWS target tracking or the Kubernetes HPA.
    TargetTracking {
        /// Desired average load (CPU %).
        target: f64,
        /// Relative dead band: no action while `|avg/target - 1| <= tolerance` (0.1 = ±10%).
        tolerance: f64,
        /// Scale-in goes only down to the highest desired size seen within this window, so a
        /// short dip does not shed capacity that the next peak needs again.
        scale_in_window: Duration,
    },
}

/// Everything the policy needs to know; validated by [`validate`] before use.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub min: u32,
    pub max: u32,
    pub mode: Mode,
    /// After a scale-out: no further scale-out, and no scale-in, for this long.
    pub cooldown_out: Duration,
    /// After a scale-in: no further scale-in for this long (scale-out stays allowed: it is urgent).
    pub cooldown_in: Duration,
    /// After registering, a member's load is ignored for this long (caches filling, JIT warming).
    pub warmup: Duration,
    /// Interval at which agents send heartbeats; one missed heartbeat makes a member suspect.
    pub heartbeat: Duration,
    /// Without a heartbeat for this long a registered member is dead.
    pub dead_after: Duration,
    /// A launched member that has not registered within this long is dead (failed boot).
    pub boot_deadline: Duration,
}

/// Checks the configuration; every problem is reported with its field path.
pub fn validate(cfg: &PolicyConfig) -> Result<(), Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut err = |field: &str, msg: String| errors.push((format!("scaler.{field}"), msg));
    if cfg.max == 0 {
        err("max", "must be at least 1".into());
    }
    if cfg.min > cfg.max {
        err(
            "min",
            format!("must not exceed scaler.max ({} > {})", cfg.min, cfg.max),
        );
    }
    if cfg.heartbeat < Duration::from_millis(100) {
        err(
            "heartbeat_ms",
            format!("must be at least 100ms (got {:?})", cfg.heartbeat),
        );
    }
    if cfg.dead_after < cfg.heartbeat.saturating_mul(2) {
        err(
            "dead_after_ms",
            format!(
                "must be at least twice scaler.heartbeat_ms ({:?} < 2 × {:?})",
                cfg.dead_after, cfg.heartbeat
            ),
        );
    }
    if cfg.boot_deadline.is_zero() {
        err("boot_deadline_s", "must be greater than zero".into());
    }
    let percent = |v: f64| v.is_finite() && v > 0.0 && v <= 100.0;
    match &cfg.mode {
        Mode::Thresholds {
            high,
            low,
            out_samples,
            in_samples,
            step_out,
            step_in,
        } => {
            if !percent(*high) {
                err("high", format!("must be in (0, 100] (got {high})"));
            }
            if !(low.is_finite() && *low >= 0.0 && *low <= 100.0) {
                err("low", format!("must be in [0, 100] (got {low})"));
            }
            if low >= high {
                err(
                    "low",
                    format!("must be below scaler.high ({low} >= {high})"),
                );
            }
            for (field, v) in [
                ("out_samples", out_samples),
                ("in_samples", in_samples),
                ("step_out", step_out),
                ("step_in", step_in),
            ] {
                if *v == 0 {
                    err(field, "must be at least 1".into());
                }
            }
        }
        Mode::TargetTracking {
            target, tolerance, ..
        } => {
            if !percent(*target) {
                err("target", format!("must be in (0, 100] (got {target})"));
            }
            if !(tolerance.is_finite() && *tolerance >= 0.0) {
                err("tolerance", format!("must be 0 or more (got {tolerance})"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn validate_names_each_field() {
        let mut c = cfg(Mode::Thresholds {
            high: 20.0,
            low: 30.0,
            out_samples: 0,
            in_samples: 1,
            step_out: 1,
            step_in: 1,
        });
        c.min = 5;
        c.max = 4;
        c.heartbeat = Duration::from_millis(50);
        c.dead_after = Duration::from_millis(90);
        let fields: Vec<String> = validate(&c).unwrap_err().into_iter().map(|e| e.0).collect();
        assert_eq!(
            fields,
            [
                "scaler.min",
                "scaler.heartbeat_ms",
                "scaler.dead_after_ms",
                "scaler.low",
                "scaler.out_samples"
            ]
        );
        assert!(validate(&cfg(thresholds())).is_ok());
        let bad = cfg(Mode::TargetTracking {
            target: 0.0,
            tolerance: -0.1,
            scale_in_window: s(60),
        });
        let fields: Vec<String> = validate(&bad)
            .unwrap_err()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(fields, ["scaler.target", "scaler.tolerance"]);
    }
}
