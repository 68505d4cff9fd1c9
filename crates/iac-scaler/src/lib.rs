//! The custom scaler without the AWS SDK. Its decision core has no I/O: [`policy`] turns the membership table
//! ([`health`]) and the configuration ([`config`]) into a decision, and [`simulate`] replays a
//! load trace ([`trace`]) in virtual time to compare that policy with two baselines, rendering
//! timelines through [`plot`]; [`monitor`] adds the clock, the network and a [`fleet`]. No AWS SDK
//! here: the crate builds in seconds, so the monitor can be benchmarked in release mode cheaply;
//! the `ec2` fleet lives in `iac`.

pub mod admin;
pub mod config;
pub mod fleet;
pub mod health;
pub mod histogram;
pub mod monitor;
pub mod plot;
pub mod policy;
pub mod simulate;
pub mod stats;
pub mod tls;
pub mod trace;

/// Builders shared by the scaler's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::config::{Mode, PolicyConfig};
    use super::health::{Health, Member};

    pub fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    pub fn cfg(mode: Mode) -> PolicyConfig {
        PolicyConfig {
            min: 1,
            max: 10,
            mode,
            cooldown_out: s(60),
            cooldown_in: s(120),
            warmup: s(30),
            heartbeat: s(5),
            dead_after: s(15),
            boot_deadline: s(300),
        }
    }

    pub fn thresholds() -> Mode {
        Mode::Thresholds {
            high: 70.0,
            low: 20.0,
            out_samples: 2,
            in_samples: 3,
            step_out: 2,
            step_in: 1,
        }
    }

    /// A member registered at t=0 that heartbeats at `now` with `load`.
    pub fn healthy(id: &str, now: Duration, load: f64) -> Member {
        Member {
            id: id.into(),
            health: Health::Healthy,
            launched_at: s(0),
            registered_at: Some(s(0)),
            last_heartbeat: Some(now),
            load: Some(load),
            samples: VecDeque::new(),
            stream_lost: None,
        }
    }
}
