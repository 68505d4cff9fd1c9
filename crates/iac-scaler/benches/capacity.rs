//! Control-plane capacity: how many agents one monitor thread takes.
//!
//! The monitor (`monitor::serve`: gRPC server and control loop) runs in this process on a
//! current-thread tokio runtime on its own thread, so it can use one core at most; `iac-loadgen`
//! runs as a child process with one runtime thread and simulates the agents. The policy holds
//! throughout (min 0, max above the agent count, thresholds the simulated 20-40 % CPU never
//! crosses) and the fleet does nothing, so what is measured is registrations, heartbeats and
//! the control loop's pass over the pool.
//!
//! ```text
//! cargo bench -p iac-scaler --bench capacity
//! AGENTS=1000,5000,10000 SECS=60 cargo bench -p iac-scaler --bench capacity
//! ```
//! Knobs (environment): AGENTS (comma-separated list, default 10000), SECS (run length, ramp
//! included, default 60), RAMP (default 10), INTERVAL_MS (default 1000), CONNECTIONS (default
//! 32), LOADGEN_THREADS (default 1), TRANSPORTS (`plain,tls` by default: each agent count is
//! measured in plaintext and with TLS, side by side, for the ratio), IAC_LOADGEN_BIN (skip the
//! build).
//!
//! Each agent count runs in a fresh child process of this bench, so the resident-memory figures
//! of one run do not carry the allocator's leftovers of the previous one.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iac_scaler::config::{Mode, PolicyConfig};
use iac_scaler::fleet::{Fleet, FleetError};
use iac_scaler::health::{health_at, Health};
use iac_scaler::monitor::{serve_with, tick, ServeOptions, Shared, StatsSnapshot, TlsIdentity};
use iac_scaler::policy::{decide, PolicyState};

use common::*;

/// Launches nothing, terminates nothing, runs nothing: the bench measures the monitor alone.
struct NoFleet;

#[async_trait::async_trait]
impl Fleet for NoFleet {
    async fn launch(&self, _count: u32) -> Result<Vec<String>, FleetError> {
        Ok(Vec::new())
    }
    async fn terminate(&self, _ids: &[String]) -> Result<(), FleetError> {
        Ok(())
    }
    async fn list(&self) -> Result<Vec<String>, FleetError> {
        Ok(Vec::new())
    }
    /// The load generator's simulated agents are this fleet's instances.
    async fn owns(&self, id: &str) -> Result<bool, FleetError> {
        Ok(id.starts_with("sim-"))
    }
}

fn holding_policy(agents: u32, interval: Duration) -> PolicyConfig {
    PolicyConfig {
        min: 0,
        max: agents.saturating_mul(2).max(1),
        mode: Mode::Thresholds {
            high: 95.0,
            low: 5.0,
            out_samples: 3,
            in_samples: 3,
            step_out: 1,
            step_in: 1,
        },
        cooldown_out: Duration::from_secs(60),
        cooldown_in: Duration::from_secs(60),
        warmup: Duration::ZERO,
        heartbeat: interval,
        dead_after: interval * 5,
        boot_deadline: Duration::from_secs(300),
    }
}

struct Knobs {
    secs: u64,
    ramp: u64,
    interval_ms: u64,
    connections: u32,
    loadgen_threads: u32,
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            secs: env_num("SECS", 60),
            ramp: env_num("RAMP", 10),
            interval_ms: env_num("INTERVAL_MS", 1000),
            connections: env_num("CONNECTIONS", 32),
            loadgen_threads: env_num("LOADGEN_THREADS", 1),
        }
    }
}

const CHILD: &str = "IAC_CAPACITY_CHILD";
/// Set (to anything) in the child when it measures with TLS.
const CHILD_TLS: &str = "IAC_CAPACITY_TLS";

fn main() {
    if !invoked_by_cargo_bench() {
        eprintln!(
            "capacity: a benchmark; run it with `cargo bench -p iac-scaler --bench capacity`"
        );
        return;
    }
    if let Ok(n) = std::env::var(CHILD) {
        let agents = n.parse().expect("IAC_CAPACITY_CHILD is an agent count");
        let tls = std::env::var_os(CHILD_TLS).is_some();
        println!("{}", measure(agents, &Knobs::from_env(), tls));
        return;
    }
    let counts: Vec<u32> = std::env::var("AGENTS")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("AGENTS is a comma-separated list of numbers")
        })
        .collect();
    let k = Knobs::from_env();
    let loadgen = release_binary("iac-loadgen", "iac-loadgen", "IAC_LOADGEN_BIN");
    let exe = std::env::current_exe().expect("the bench's own path");
    let transports: Vec<String> = std::env::var("TRANSPORTS")
        .unwrap_or_else(|_| "plain,tls".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for n in counts {
        for transport in &transports {
            let tls = match transport.as_str() {
                "plain" => false,
                "tls" => true,
                other => panic!("TRANSPORTS: `{other}` is neither plain nor tls"),
            };
            eprintln!(
                "capacity: {n} agents ({transport}), {} ms heartbeats, {} connections, {} s ({} s ramp)",
                k.interval_ms, k.connections, k.secs, k.ramp
            );
            let mut child = Command::new(&exe);
            child
                .arg("--bench")
                .env(CHILD, n.to_string())
                .env("IAC_LOADGEN_BIN", &loadgen)
                .stderr(Stdio::inherit());
            if tls {
                child.env(CHILD_TLS, "1");
            }
            let out = child.output().expect("cannot run the measuring child");
            assert!(out.status.success(), "the {n}-agent {transport} run failed");
            let text = String::from_utf8_lossy(&out.stdout);
            rows.push(text.trim().to_string());
        }
    }
    println!(
        "\n| agents | transport | heartbeats/s handled (sent) | monitor thread CPU | handling p50 / p99 / max \
         | probe RTT p50 / p99 / max | control-loop tick | suspect at one tick | RSS before → steady | register p50 / p99 | refused | stale \
         | stream errors | loadgen CPU / send lag p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

/// What one sample of the monitor looks like.
struct Sample {
    at: Instant,
    monitor_cpu: f64,
    loadgen_cpu: f64,
    stats: StatsSnapshot,
}

/// One run with `agents` simulated agents; returns the table row.
fn measure(agents: u32, k: &Knobs, tls: bool) -> String {
    let loadgen = std::env::var("IAC_LOADGEN_BIN").expect("the parent passes IAC_LOADGEN_BIN");
    let interval = Duration::from_millis(k.interval_ms);
    let shared = Shared::new(holding_policy(agents, interval), TOKEN);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let monitor_shared = shared.clone();
    // TLS as deployed: the stack's CA and the monitor's certificate; the generator pins the CA.
    let stack_tls = tls.then(|| iac_scaler::tls::generate().expect("certificates"));
    let ca_file = std::env::temp_dir().join(format!("iac-capacity-ca-{}.pem", std::process::id()));
    if let Some(t) = &stack_tls {
        std::fs::write(&ca_file, &t.ca_pem).expect("write the CA");
    }
    let options = ServeOptions {
        tls: stack_tls.as_ref().map(|t| TlsIdentity {
            cert_pem: t.cert_pem.clone(),
            key_pem: t.key_pem.clone(),
        }),
        ..ServeOptions::default()
    };
    let scheme = if tls { "https" } else { "http" };
    let monitor = std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind a loopback port");
                let addr = listener.local_addr().expect("its address");
                ready_tx
                    .send((thread_id(), format!("{scheme}://{addr}")))
                    .expect("the bench waits for the address");
                let fleet: Arc<dyn Fleet> = Arc::new(NoFleet);
                serve_with(
                    monitor_shared,
                    fleet,
                    listener,
                    None,
                    &options,
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await
                .expect("the monitor serves");
            });
        })
        .expect("spawn the monitor thread");
    let (tid, url) = ready_rx.recv().expect("the monitor thread starts");
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_mib();

    let mut loadgen_cmd = Command::new(&loadgen);
    if tls {
        loadgen_cmd.arg("--ca-file").arg(&ca_file);
    }
    let child = loadgen_cmd
        .args(["--monitor", &url])
        .args(["--agents", &agents.to_string()])
        .args(["--interval-ms", &k.interval_ms.to_string()])
        .args(["--connections", &k.connections.to_string()])
        .args(["--ramp-secs", &k.ramp.to_string()])
        .args(["--duration-secs", &k.secs.to_string()])
        .args(["--threads", &k.loadgen_threads.to_string()])
        .env("IAC_AGENT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {loadgen}: {e}"));
    let started = Instant::now();
    let monitor_stat = format!("/proc/self/task/{tid}/stat");
    let loadgen_stat = format!("/proc/{}/stat", child.id());
    let sample = || Sample {
        at: Instant::now(),
        monitor_cpu: cpu_seconds(&monitor_stat).expect("the monitor thread's stat"),
        loadgen_cpu: cpu_seconds(&loadgen_stat).unwrap_or(f64::NAN),
        stats: shared.stats(),
    };
    // The steady window: from five seconds after the ramp (late registrations settled) to two
    // seconds before the generator stops.
    let from = Duration::from_secs(k.ramp + 5);
    let to = Duration::from_secs(k.secs.saturating_sub(2));
    assert!(
        to > from + Duration::from_secs(5),
        "SECS must exceed RAMP + 12"
    );
    std::thread::sleep(from.saturating_sub(started.elapsed()));
    let a = sample();
    std::thread::sleep(to.saturating_sub(started.elapsed()));
    let b = sample();
    let rss_steady = rss_mib();
    let suspect = count_suspect(&shared);
    let out = child
        .wait_with_output()
        .expect("the load generator finishes");
    // Timed once the generator has stopped, so that these extra passes (each stalls the monitor
    // thread like its own tick does) do not show in the probe's round trips; the members are
    // still in the pool (dead only after five silent intervals).
    let tick = time_control_loop(&shared);
    assert!(out.status.success(), "iac-loadgen failed: {}", out.status);
    let summary = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("loadgen: {summary}");
    let _ = stop_tx.send(());
    let _ = monitor.join();

    let window = (b.at - a.at).as_secs_f64();
    let handled = (b.stats.heartbeats - a.stats.heartbeats) as f64 / window;
    let cpu = 100.0 * (b.monitor_cpu - a.monitor_cpu) / window;
    let loadgen_cpu = 100.0 * (b.loadgen_cpu - a.loadgen_cpu) / window;
    let s = &b.stats;
    let j = |key: &str| json_num(&summary, key);
    // The generator reports milliseconds; shown like the bench's own figures.
    let jm = |key: &str| ms(Duration::from_secs_f64(j(key).max(0.0) / 1e3));
    let _ = std::fs::remove_file(&ca_file);
    let transport = if tls { "TLS" } else { "plaintext" };
    format!(
        "| {agents} | {transport} | {handled:.0} ({:.0}) | {cpu:.0} % | {} / {} / {} µs | {} / {} / {} ms \
         | {} ms | {suspect} | {rss_before:.1} → {rss_steady:.1} MiB | {} / {} ms | {} | {} | {} \
         | {loadgen_cpu:.0} % / {} ms |",
        j("heartbeats_per_s"),
        us(s.handle_p50),
        us(s.handle_p99),
        us(s.handle_max),
        jm("probe_p50_ms"),
        jm("probe_p99_ms"),
        jm("probe_max_ms"),
        ms(tick),
        jm("register_p50_ms"),
        jm("register_p99_ms"),
        s.refused,
        s.stale,
        j("stream_errors"),
        jm("send_lag_p99_ms"),
    )
}

/// Members the policy sees as suspect (more than one interval since their last heartbeat)
/// at one moment of the steady window. Copying the pool stalls the monitor thread once, for
/// about as long as one of its own ticks.
fn count_suspect(shared: &Shared) -> usize {
    let now = shared.uptime();
    shared
        .members()
        .iter()
        .filter(|m| health_at(now, m, &shared.policy) == Health::Suspect)
        .count()
}

/// The control loop's pass over the full pool: the median of five `tick` calls made from this
/// thread (each a Hold). Also prints where the time goes: copying the pool out of the lock, and
/// the policy itself.
fn time_control_loop(shared: &Shared) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let mut took: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(tick(shared, &NoFleet));
            t.elapsed()
        })
        .collect();
    took.sort();
    let t = Instant::now();
    let members = shared.members();
    let copied = t.elapsed();
    let t = Instant::now();
    let decision = decide(
        shared.uptime(),
        &members,
        &shared.policy,
        &mut PolicyState::new(),
    );
    let decided = t.elapsed();
    eprintln!(
        "control loop over {} members: tick {} ms (members() copy {} ms, decide {} ms: {})",
        members.len(),
        ms(took[2]),
        ms(copied),
        ms(decided),
        decision.reason()
    );
    took[2]
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

/// A number from the load generator's one-line JSON summary (flat, numbers only).
fn json_num(line: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    line.find(&pat)
        .and_then(|i| {
            let rest = &line[i + pat.len()..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest[..end].trim().parse().ok()
        })
        .unwrap_or(f64::NAN)
}
