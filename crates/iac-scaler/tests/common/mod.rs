//! What the monitor's integration tests share: a fleet of fixed instances, a policy that holds
//! the pool as it is, and a registration.

#![allow(dead_code)] // each test binary uses a different subset

pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iac_proto::{MonitorClient, RegisterRequest, TokenInterceptor};
use iac_scaler::config::{Mode, PolicyConfig};
use iac_scaler::fleet::{Fleet, FleetError};
use iac_scaler::monitor::{serve_with, ServeOptions, Shared};

pub const TOKEN: &str = "token-0123456789abcdef";

pub type Client =
    MonitorClient<tonic::codegen::InterceptedService<tonic::transport::Channel, TokenInterceptor>>;

/// A client of the monitor at `url` with the token.
pub async fn client(url: &str) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    MonitorClient::with_interceptor(channel, iac_proto::token_interceptor(TOKEN).expect("token"))
}

/// Serves the monitor on a loopback port with this policy, fleet and options; its state and
/// address.
pub async fn start(
    policy: PolicyConfig,
    fleet: Arc<dyn Fleet>,
    options: ServeOptions,
) -> (Arc<Shared>, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shared = Shared::new(policy, TOKEN);
    let s = shared.clone();
    tokio::spawn(async move {
        serve_with(s, fleet, listener, None, &options, std::future::pending())
            .await
            .expect("monitor")
    });
    (shared, addr)
}

pub async fn wait_for(what: &str, ok: impl Fn() -> bool) {
    // A deadline so a broken monitor fails the test instead of hanging it; nothing is timed.
    let deadline = tokio::time::Instant::now() + wire::PATIENCE;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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
