//! `iac-loadgen`: simulates many `iac-agent`s against one custom-scaler monitor, to measure
//! how many agents a monitor can take.
//!
//! Agent `i` (instance id `sim-0000i`) starts at `i / agents × ramp`, registers, then streams
//! heartbeats at the interval with a slowly moving CPU value. The agents share
//! `--connections` HTTP/2 connections (a real fleet has one per agent; sharing keeps the
//! generator itself cheap). A probe sends a harmless `AckDrain` for an unknown member every
//! `--probe-ms` and times the round trip: heartbeats get no reply, so this is what shows how
//! long a request waits in the monitor under load. At the end it prints one JSON line.

mod agent;

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use iac_proto::{AckDrainRequest, MonitorClient};
use tokio::time::Instant;
use tonic::transport::Endpoint;

use agent::{Client, Counters, Run};
use iac_scaler::histogram::Histogram;

#[derive(Parser, Debug)]
#[command(
    name = "iac-loadgen",
    version,
    about = "Simulates N iac agents (register + heartbeat streams) against one monitor"
)]
struct Cli {
    /// The monitor's gRPC endpoint, e.g. http://127.0.0.1:7700. The token comes from the
    /// IAC_AGENT_TOKEN environment variable, as for the agent.
    #[arg(long)]
    monitor: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    agents: u32,
    /// Heartbeat interval of every agent, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    interval_ms: u64,
    /// HTTP/2 connections the agents share (agent i uses connection i mod N).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Agents start evenly spread over this many seconds.
    #[arg(long, default_value_t = 10)]
    ramp_secs: u64,
    /// Total run time, ramp included; the achieved rate is measured after the ramp.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Round-trip probe period in milliseconds (0: no probe).
    #[arg(long, default_value_t = 100)]
    probe_ms: u64,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// The monitor's CA (PEM), for an https:// monitor: TLS as real agents speak it.
    #[arg(long, value_name = "PEM_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Print progress to stderr every this many seconds (0: never).
    #[arg(long, default_value_t = 10)]
    progress_secs: u64,
}

fn main() {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        rt.worker_threads(cli.threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iac-loadgen: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(summary) => {
            // A closed stdout (piped into `head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{summary}");
        }
        Err(e) => {
            eprintln!("iac-loadgen: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(cli: Cli) -> Result<String, String> {
    if cli.agents == 0 || cli.connections == 0 || cli.interval_ms == 0 {
        return Err("--agents, --connections and --interval-ms must be at least 1".into());
    }
    let token = std::env::var("IAC_AGENT_TOKEN")
        .map_err(|_| "no token: set IAC_AGENT_TOKEN".to_string())?;
    let interceptor = iac_proto::token_interceptor(token.trim())
        .map_err(|e| format!("bad IAC_AGENT_TOKEN: {e}"))?;
    let mut endpoint = Endpoint::from_shared(cli.monitor.clone())
        .map_err(|e| format!("bad --monitor {}: {e}", cli.monitor))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(path) = &cli.ca_file {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            .domain_name(iac_proto::MONITOR_TLS_NAME);
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    // Each `connect` opens its own HTTP/2 connection; clones of a channel share it.
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..cli.connections {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", cli.monitor))?;
        clients.push(MonitorClient::with_interceptor(
            channel,
            interceptor.clone(),
        ));
    }

    let begin = Instant::now();
    let ramp = Duration::from_secs(cli.ramp_secs);
    let duration = Duration::from_secs(cli.duration_secs);
    // Without a steady window (duration ≤ ramp) the whole run counts.
    let steady_from = if duration > ramp { begin + ramp } else { begin };
    let run = Arc::new(Run {
        interval: Duration::from_millis(cli.interval_ms),
        steady_from,
        until: begin + duration,
        counters: Counters::default(),
    });
    let mut tasks = Vec::with_capacity(cli.agents as usize);
    for i in 0..cli.agents {
        let client = clients[(i % cli.connections) as usize].clone();
        let start = begin + ramp.mul_f64(f64::from(i) / f64::from(cli.agents));
        tasks.push(tokio::spawn(agent::simulate(i, client, start, run.clone())));
    }
    let probe = Arc::new(Histogram::default());
    let prober = (cli.probe_ms > 0).then(|| {
        tokio::spawn(probe_loop(
            clients.clone(),
            Duration::from_millis(cli.probe_ms),
            run.clone(),
            probe.clone(),
        ))
    });
    let reporter = (cli.progress_secs > 0).then(|| {
        tokio::spawn(progress(
            Duration::from_secs(cli.progress_secs),
            begin,
            run.clone(),
        ))
    });
    for t in tasks {
        // A panicking agent task is a bug in this tool; the others' counts still stand.
        let _ = t.await;
    }
    if let Some(p) = prober {
        let _ = p.await;
    }
    if let Some(r) = reporter {
        r.abort();
    }
    Ok(summary(&cli, &run, &probe))
}

/// One `AckDrain` for a member that does not exist, every `period`, over each connection in
/// turn: the monitor authenticates it and looks the member up under the pool lock, like a
/// heartbeat, and answers.
async fn probe_loop(clients: Vec<Client>, period: Duration, run: Arc<Run>, h: Arc<Histogram>) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0usize;
    loop {
        ticker.tick().await;
        if Instant::now() >= run.until {
            return;
        }
        let mut client = clients[i % clients.len()].clone();
        i += 1;
        let asked = Instant::now();
        let call = client.ack_drain(AckDrainRequest {
            member_id: "iac-loadgen-probe".into(),
            session: String::new(),
        });
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), call).await {
            // Only the steady window: the ramp's registrations are another workload.
            if asked >= run.steady_from {
                h.record(asked.elapsed());
            }
        }
    }
}

async fn progress(every: Duration, begin: Instant, run: Arc<Run>) {
    let c = &run.counters;
    let mut last = 0;
    let mut ticker = tokio::time::interval_at(begin + every, every);
    loop {
        ticker.tick().await;
        let sent = c.heartbeats_sent.load(Ordering::Relaxed);
        eprintln!(
            "iac-loadgen: t={:>3}s registered={} heartbeats/s={:.0} stream_errors={} register_failed={}",
            begin.elapsed().as_secs(),
            c.registered.load(Ordering::Relaxed),
            (sent - last) as f64 / every.as_secs_f64(),
            c.stream_errors.load(Ordering::Relaxed),
            c.register_failed.load(Ordering::Relaxed),
        );
        last = sent;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The one-line JSON summary (hand-written: every value is a number, no escaping needed).
fn summary(cli: &Cli, run: &Run, probe: &Histogram) -> String {
    let c = &run.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let steady_secs = run
        .until
        .saturating_duration_since(run.steady_from)
        .as_secs_f64();
    let rate = if steady_secs > 0.0 {
        get(&c.heartbeats_steady) as f64 / steady_secs
    } else {
        0.0
    };
    let expected = f64::from(cli.agents) * 1000.0 / cli.interval_ms as f64;
    format!(
        "{{\"agents\":{},\"interval_ms\":{},\"connections\":{},\"registered\":{},\
         \"register_failed\":{},\"reregistered\":{},\"heartbeats_sent\":{},\"stream_errors\":{},\
         \"deregister_directives\":{},\"steady_secs\":{:.1},\"heartbeats_per_s\":{:.1},\
         \"expected_per_s\":{:.1},\"register_p50_ms\":{},\"register_p99_ms\":{},\
         \"register_max_ms\":{},\"probe_count\":{},\"probe_p50_ms\":{},\"probe_p99_ms\":{},\
         \"probe_max_ms\":{},\"send_lag_p99_ms\":{},\"send_lag_max_ms\":{}}}",
        cli.agents,
        cli.interval_ms,
        cli.connections,
        get(&c.registered),
        get(&c.register_failed),
        get(&c.reregistered),
        get(&c.heartbeats_sent),
        get(&c.stream_errors),
        get(&c.deregister_directives),
        steady_secs,
        rate,
        expected,
        ms(c.register_latency.quantile(0.5)),
        ms(c.register_latency.quantile(0.99)),
        ms(c.register_latency.max()),
        probe.count(),
        ms(probe.quantile(0.5)),
        ms(probe.quantile(0.99)),
        ms(probe.max()),
        ms(c.send_lag.quantile(0.99)),
        ms(c.send_lag.max()),
    )
}
