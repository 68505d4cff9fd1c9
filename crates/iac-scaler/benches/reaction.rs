//! Reaction time and failure detection of the monitor with real agents.
//!
//! Every repetition starts a fresh monitor (the gRPC service and the control loop, `run`) and a
//! local fleet of two real `iac-agent` processes (release build) that report a steady 40 % CPU;
//! the fleet is wrapped so that every `launch` call is timestamped. The two agents are adopted
//! before the first tick, so the pool starts at its minimum and no earlier scale-out puts a
//! cooldown in the way.
//! - reaction: both agents are told through their admin endpoint (`POST /metric`) to report
//!   95 %; measured from just before the requests to the fleet's `launch` call.
//! - agent process killed: one agent gets SIGKILL; measured from just before the signal to the
//!   `launch` call of its replacement. Its heartbeat stream ends with the process, so the member
//!   is suspect at once and dead one interval later (target: at most two intervals at p90).
//! - agent silent: one agent gets SIGSTOP, so its connection stays open and nothing ends (what a
//!   network partition looks like); measured the same way: this one waits for `dead_after`.
//!
//! Where the agents' heartbeats fall within the control loop's period matters (a heartbeat
//! that arrives just after a tick waits a whole period to be looked at), so each is measured
//! twice: with the agents started at random points of the period (as instances that boot for a
//! minute are), and with the agents started right after a tick (as the local fleet's agents,
//! launched by a tick and registered milliseconds later, are).
//!
//! ```text
//! cargo bench -p iac-scaler --bench reaction
//! REPS=20 HEARTBEATS_MS=200,1000 cargo bench -p iac-scaler --bench reaction
//! ```
//! Knobs (environment): REPS (default 12), HEARTBEATS_MS (default 200,1000), DEAD_FACTOR
//! (dead_after as a multiple of the heartbeat, default 5 as in the stack defaults),
//! IAC_AGENT_BIN (skip the build).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iac_proto::MonitorServer;
use iac_scaler::config::{Mode, PolicyConfig};
use iac_scaler::fleet::{Fleet, FleetError, LocalFleet};
use iac_scaler::monitor::{run, MonitorService, Shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::TcpListenerStream;

use common::*;

/// A fleet that timestamps every `launch` call before passing it on.
struct Recording {
    inner: Arc<LocalFleet>,
    launches: Mutex<Vec<Instant>>,
}

#[async_trait::async_trait]
impl Fleet for Recording {
    async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError> {
        if let Ok(mut l) = self.launches.lock() {
            l.push(Instant::now());
        }
        self.inner.launch(count).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        self.inner.terminate(ids).await
    }
    async fn list(&self) -> Result<Vec<String>, FleetError> {
        self.inner.list().await
    }
    async fn owns(&self, id: &str) -> Result<bool, FleetError> {
        self.inner.owns(id).await
    }
}

impl Recording {
    fn first_launch_after(&self, t: Instant) -> Option<Instant> {
        self.launches
            .lock()
            .ok()
            .and_then(|l| l.iter().copied().find(|at| *at >= t))
    }
}

fn policy(heartbeat: Duration, dead_factor: u32) -> PolicyConfig {
    PolicyConfig {
        min: 2,
        max: 4,
        mode: Mode::Thresholds {
            high: 70.0,
            low: 20.0,
            out_samples: 1,
            in_samples: 3,
            step_out: 1,
            step_in: 1,
        },
        cooldown_out: Duration::from_secs(60),
        cooldown_in: Duration::from_secs(60),
        warmup: Duration::ZERO,
        heartbeat,
        dead_after: heartbeat * dead_factor,
        boot_deadline: Duration::from_secs(30),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Trial {
    Reaction,
    FailureDetection,
    Silent,
}

/// Where the agents' heartbeats fall within the control loop's period.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// Each agent starts at a random point of the period.
    Random,
    /// Both agents start right after a tick.
    AfterTick,
}

/// A running monitor with its two adopted agents.
struct Setup {
    shared: Arc<Shared>,
    fleet: Arc<Recording>,
    stop: tokio::sync::oneshot::Sender<()>,
    control: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

/// What `monitor::serve` does (adopt, serve gRPC, run the control loop), with the agents'
/// start placed within the control loop's period.
async fn start(agent: &Path, cfg: PolicyConfig, phase: Phase, rng: &mut Rng) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let local = Arc::new(LocalFleet::new(
        agent.to_path_buf(),
        &url,
        TOKEN,
        vec!["--simulate".into(), "steady:40".into()],
    ));
    let fleet = Arc::new(Recording {
        inner: local.clone(),
        launches: Mutex::new(Vec::new()),
    });
    let shared = Shared::new(cfg.clone(), TOKEN);
    // The local fleet names its instances local-1, local-2, …: adopted before the first tick,
    // they count towards the minimum while they start.
    let ids = ["local-1".to_string(), "local-2".to_string()];
    shared.adopt(&ids);
    let svc = MonitorService::new(shared.clone(), fleet.clone());
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(MonitorServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (s, f): (_, Arc<dyn Fleet>) = (shared.clone(), fleet.clone());
    // The control loop ticks at once, then every heartbeat period from now.
    let control = tokio::spawn(run(s, f, async move {
        let _ = stop_rx.await;
    }));
    let mut launched = Vec::new();
    for _ in &ids {
        if phase == Phase::Random {
            tokio::time::sleep(cfg.heartbeat.mul_f64(rng.unit())).await;
        }
        launched.extend(local.launch(1).await.expect("start an agent"));
    }
    assert_eq!(launched, ids, "the local fleet's instance names changed");
    Setup {
        shared,
        fleet,
        stop,
        control,
        server,
    }
}

/// A small deterministic generator (xorshift), seeded per run: phases and delays that differ
/// between repetitions without a dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Polls `ok` every 2 ms until it holds or `deadline` passes.
async fn wait_until(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn set_metric(port: u16, cpu: f64) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the agent's admin endpoint");
    let body = format!("{{\"cpu\": {cpu}}}");
    let req = format!(
        "POST /metric HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write /metric");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    assert!(
        out.starts_with("HTTP/1.1 2"),
        "metric override refused: {out}"
    );
}

async fn trial(
    agent: &Path,
    cfg: &PolicyConfig,
    what: Trial,
    phase: Phase,
    rng: &mut Rng,
) -> Duration {
    let setup = start(agent, cfg.clone(), phase, rng).await;
    let shared = setup.shared.clone();
    wait_until(
        "both agents registered and reporting",
        Duration::from_secs(20),
        || {
            shared
                .members()
                .iter()
                .filter(|m| m.registered_at.is_some() && m.load.is_some())
                .count()
                == 2
        },
    )
    .await;
    // A few heartbeats in, then the event at a random point of the period.
    tokio::time::sleep(cfg.heartbeat * 2 + cfg.heartbeat.mul_f64(rng.unit())).await;
    let ports = setup.fleet.inner.admin_ports();
    let t0 = Instant::now();
    match what {
        Trial::Reaction => {
            futures_join(ports.values().map(|p| set_metric(*p, 95.0))).await;
        }
        Trial::FailureDetection | Trial::Silent => {
            let victim = ports.keys().next().expect("an agent");
            let pid = setup.fleet.inner.pid(victim).expect("its pid");
            let signal = if what == Trial::Silent {
                libc::SIGSTOP
            } else {
                libc::SIGKILL
            };
            // SAFETY: kill(2) on a child process of ours.
            let rc = unsafe { libc::kill(pid as i32, signal) };
            assert_eq!(rc, 0, "kill -{signal} {pid}");
        }
    }
    let fleet = setup.fleet.clone();
    wait_until(
        "a launch",
        cfg.dead_after * 3 + Duration::from_secs(5),
        || fleet.first_launch_after(t0).is_some(),
    )
    .await;
    let took = fleet.first_launch_after(t0).expect("a launch") - t0;
    let _ = setup.stop.send(());
    let _ = setup.control.await;
    setup.server.abort();
    took
}

/// Runs the futures concurrently (both metric requests leave at once).
async fn futures_join<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        h.await.expect("the request task");
    }
}

fn main() {
    if !invoked_by_cargo_bench() {
        eprintln!(
            "reaction: a benchmark; run it with `cargo bench -p iac-scaler --bench reaction`"
        );
        return;
    }
    let reps: u32 = env_num("REPS", 12);
    let dead_factor: u32 = env_num("DEAD_FACTOR", 5);
    let heartbeats: Vec<u64> = std::env::var("HEARTBEATS_MS")
        .unwrap_or_else(|_| "200,1000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("HEARTBEATS_MS is a comma-separated list")
        })
        .collect();
    let agent: PathBuf = release_binary("iac-agent", "iac-agent", "IAC_AGENT_BIN");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id()));
    let mut rows = Vec::new();
    for hb in heartbeats {
        let cfg = policy(Duration::from_millis(hb), dead_factor);
        for what in [Trial::Reaction, Trial::FailureDetection, Trial::Silent] {
            for phase in [Phase::Random, Phase::AfterTick] {
                let mut samples = Vec::new();
                for _ in 0..reps {
                    let d = rt.block_on(trial(&agent, &cfg, what, phase, &mut rng));
                    eprintln!(
                        "heartbeat {hb} ms, {}, {}: {} ms",
                        name(what),
                        phase_name(phase),
                        ms(d)
                    );
                    samples.push(d);
                }
                samples.sort();
                rows.push(format!(
                    "| {} | {} | {hb} ms | {} ms | {} | {} ms | {} ms | {} ms | {} ms |",
                    name(what),
                    phase_name(phase),
                    cfg.dead_after.as_millis(),
                    samples.len(),
                    ms(*samples.first().expect("at least one repetition")),
                    ms(percentile(&samples, 0.5)),
                    ms(percentile(&samples, 0.9)),
                    ms(*samples.last().expect("at least one repetition")),
                ));
            }
        }
    }
    println!("\n| measurement | agents started | heartbeat | dead after | runs | min | p50 | p90 | max |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn name(t: Trial) -> &'static str {
    match t {
        Trial::Reaction => "reaction (load step → launch)",
        Trial::FailureDetection => "agent process killed (SIGKILL) → replacement launch",
        Trial::Silent => "agent silent (SIGSTOP, connection open) → replacement launch",
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Random => "at random points of the period",
        Phase::AfterTick => "right after a tick",
    }
}
