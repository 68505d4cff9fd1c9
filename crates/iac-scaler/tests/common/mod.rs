//! What the monitor's integration tests share: a fleet of fixed instances, a policy that holds
//! the pool as it is, and a registration.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use iac_proto::RegisterRequest;
use iac_scaler::config::{Mode, PolicyConfig};
use iac_scaler::fleet::{Fleet, FleetError};

pub const TOKEN: &str = "token-0123456789abcdef";

/// A fleet that runs exactly the instances it was given (like EC2 instances a monitor
/// launched earlier); it never launches anything.
pub struct Listed(pub Vec<String>);

#[async_trait::async_trait]
impl Fleet for Listed {
    async fn launch(&self, _count: u32) -> Result<Vec<String>, FleetError> {
        Ok(Vec::new())
    }
    async fn terminate(&self, _ids: &[String]) -> Result<(), FleetError> {
        Ok(())
    }
    async fn list(&self) -> Result<Vec<String>, FleetError> {
        Ok(self.0.clone())
    }
    async fn owns(&self, id: &str) -> Result<bool, FleetError> {
        Ok(self.0.iter().any(|i| i == id))
    }
}

/// The instances of `Listed`, launched after the monitor started: it admits them, but has
/// nothing to adopt at its start.
pub struct Unlisted(pub Listed);

#[async_trait::async_trait]
impl Fleet for Unlisted {
    async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError> {
        self.0.launch(count).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        self.0.terminate(ids).await
    }
    async fn list(&self) -> Result<Vec<String>, FleetError> {
        Ok(Vec::new())
    }
    async fn owns(&self, id: &str) -> Result<bool, FleetError> {
        self.0.owns(id).await
    }
}

/// Holds the pool as it is: no scaling, pool of 0..=4; heartbeats every `hb`.
pub fn policy(hb: Duration) -> PolicyConfig {
    PolicyConfig {
        min: 0,
        max: 4,
        mode: Mode::Thresholds {
            high: 99.0,
            low: 1.0,
            out_samples: 3,
            in_samples: 3,
            step_out: 1,
            step_in: 1,
        },
        cooldown_out: Duration::from_secs(600),
        cooldown_in: Duration::from_secs(600),
        warmup: Duration::ZERO,
        heartbeat: hb,
        dead_after: hb * 50,
        boot_deadline: Duration::from_secs(600),
    }
}

pub fn registration(id: &str) -> RegisterRequest {
    RegisterRequest {
        instance_id: id.into(),
        address: "127.0.0.1".into(),
        version: "test".into(),
        labels: Default::default(),
    }
}
