//! Reaction time and failure detection of the monitor with real agents.
//!
//! Every repetition starts a fresh monitor (`monitor::serve`) and a local fleet of two real
//! `iac-agent` processes (release build) that report a steady 40 % CPU; the fleet is wrapped so
//! that every `launch` call is timestamped. The pool starts at its minimum (two agents adopted
//! at start-up), so no earlier scale-out puts a cooldown in the way.
//! - reaction: both agents are told through their admin endpoint (`POST /metric`) to report
//!   95 %; measured from just before the first request to the fleet's `launch` call.
//! - failure detection: one agent gets SIGKILL; measured from just before the signal to the
//!   `launch` call of its replacement.
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

use iac_scaler::config::{Mode, PolicyConfig};
use iac_scaler::fleet::{Fleet, FleetError, LocalFleet};
use iac_scaler::monitor::{serve, Shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
}

/// A running monitor with its two adopted agents.
struct Setup {
    shared: Arc<Shared>,
    fleet: Arc<Recording>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(agent: &Path, cfg: PolicyConfig) -> Setup {
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
    // Started before the monitor, which adopts them: the pool is at min from the first tick.
    local.launch(2).await.expect("start two agents");
    let fleet = Arc::new(Recording {
        inner: local,
        launches: Mutex::new(Vec::new()),
    });
    let shared = Shared::new(cfg, TOKEN);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (s, f): (_, Arc<dyn Fleet>) = (shared.clone(), fleet.clone());
    let server = tokio::spawn(async move {
        serve(s, f, listener, None, async move {
            let _ = stop_rx.await;
        })
        .await
        .expect("the monitor serves");
    });
    Setup {
        shared,
        fleet,
        stop,
        server,
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
        "POST /metric HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

/// A phase in [0, period) that differs between repetitions, so the event does not always land
/// at the same point of the agents' and the control loop's cycles.
fn jitter(period: Duration, rep: u32) -> Duration {
    let nanos = u64::from(rep).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    period.mul_f64((nanos % 1000) as f64 / 1000.0)
}

async fn trial(agent: &Path, cfg: &PolicyConfig, what: Trial, rep: u32) -> Duration {
    let setup = start(agent, cfg.clone()).await;
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
    // A few heartbeats in, then a phase that varies between repetitions.
    tokio::time::sleep(cfg.heartbeat * 2 + jitter(cfg.heartbeat, rep)).await;
    let ports = setup.fleet.inner.admin_ports();
    let t0 = Instant::now();
    match what {
        Trial::Reaction => {
            futures_join(ports.values().map(|p| set_metric(*p, 95.0))).await;
        }
        Trial::FailureDetection => {
            let victim = ports.keys().next().expect("an agent");
            let pid = setup.fleet.inner.pid(victim).expect("its pid");
            // SAFETY: kill(2) on a child process of ours.
            let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill -9 {pid}");
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
    let _ = setup.server.await;
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
    let mut rows = Vec::new();
    for hb in heartbeats {
        let cfg = policy(Duration::from_millis(hb), dead_factor);
        for what in [Trial::Reaction, Trial::FailureDetection] {
            let mut samples = Vec::new();
            for rep in 0..reps {
                let d = rt.block_on(trial(&agent, &cfg, what, rep));
                eprintln!("heartbeat {hb} ms, {}: {} ms", name(what), ms(d));
                samples.push(d);
            }
            samples.sort();
            rows.push(format!(
                "| {} | {hb} ms | {} ms | {} | {} ms | {} ms | {} ms | {} ms |",
                name(what),
                cfg.dead_after.as_millis(),
                samples.len(),
                ms(percentile(&samples, 0.5)),
                ms(percentile(&samples, 0.9)),
                ms(*samples.last().expect("at least one repetition")),
                ms(*samples.first().expect("at least one repetition")),
            ));
        }
    }
    println!("\n| measurement | heartbeat | dead after | runs | p50 | p90 | max | min |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn name(t: Trial) -> &'static str {
    match t {
        Trial::Reaction => "reaction (load step → launch)",
        Trial::FailureDetection => "failure detection (SIGKILL → replacement launch)",
    }
}
