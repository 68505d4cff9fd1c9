//! `iac-agent`: the on-instance agent of iac's custom scaler.
//!
//! It registers with the monitor (retrying with capped exponential backoff and jitter while the
//! monitor is down or refuses it), then keeps a bidirectional heartbeat stream open: metrics go
//! up at the interval the monitor assigns, directives (DRAIN, DEREGISTER) come down. When the
//! stream breaks it re-registers, because a restarted monitor rebuilds its pool from
//! re-registrations. SIGTERM/SIGINT (or `POST /unregister` on the loopback admin endpoint)
//! deregisters and exits 0. With `--give-up-after SECONDS` it exits with [`GAVE_UP`] once the
//! monitor has been out of reach that long, so that its service manager starts it again and the
//! unit's start reads the monitor's address anew (a replaced monitor VM has a new one).
//!
//! Kept small on purpose (it runs on every instance): a current-thread runtime, tonic's client
//! transport, and hand-written `/proc` parsing, admin HTTP and IMDSv2 client.

mod admin;
mod imds;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use iac_proto::http::json_string;
use iac_proto::scaler::monitor_client::MonitorClient;
use iac_proto::{
    AckDrainRequest, DeregisterRequest, Directive, HeartbeatRequest, RegisterRequest,
    TokenInterceptor,
};
use tokio::sync::{mpsc, watch};
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use metrics::{ProcCpu, Profile, Simulator};

/// Logs one line to stderr (journald adds its own timestamps; tests read these lines).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("iac-agent: {}", format_args!($($arg)*))
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "iac-agent",
    version,
    about = "iac custom-scaler agent: registers with the monitor and streams heartbeats"
)]
struct Cli {
    /// The monitor's gRPC endpoint, e.g. https://10.0.0.5:7400. An http:// address is refused
    /// unless --allow-plaintext is given.
    #[arg(long)]
    monitor: String,
    /// The stack's CA certificate (PEM): the only authority the monitor's certificate may come
    /// from (no system roots).
    #[arg(long, value_name = "PEM_FILE")]
    ca_file: Option<PathBuf>,
    /// The name the monitor's certificate must carry (whatever address it is reached at).
    #[arg(long, default_value = iac_proto::MONITOR_TLS_NAME)]
    tls_name: String,
    /// Talk to the monitor without TLS: only for the local fleet, where monitor and agents run on
    /// one machine and the traffic never leaves loopback.
    #[arg(long)]
    allow_plaintext: bool,
    /// File holding the shared token (else the IAC_AGENT_TOKEN environment variable). There is
    /// deliberately no flag taking the token itself: it would show in `ps`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// This instance's id (default: asked from the EC2 instance metadata service, IMDSv2).
    #[arg(long)]
    instance_id: Option<String>,
    /// The address to announce (default: the local IP used to reach the monitor).
    #[arg(long)]
    address: Option<String>,
    /// Loopback address for the admin endpoint, e.g. 127.0.0.1:7401 (port 0 picks one).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Report simulated CPU instead of /proc: random-walk, steady:V, step:A,B,T,
    /// spike:BASE,PEAK,START,LEN or sine:MIN,MAX,PERIOD (times in seconds since start).
    #[arg(long)]
    simulate: Option<Profile>,
    /// Count the profile's times from this moment (milliseconds since the Unix epoch) instead of
    /// the agent's start, so that every agent of a fleet plays the same scenario.
    #[arg(long, value_name = "UNIX_MS")]
    simulate_since: Option<u64>,
    /// Seed for the random walk (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Random walk: maximum change in percentage points per second.
    #[arg(long, default_value_t = 5.0)]
    walk_rate: f64,
    /// Random walk: starting value.
    #[arg(long, default_value_t = 40.0)]
    walk_start: f64,
    /// Extra labels sent at registration, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// First retry delay when the monitor is unreachable or refuses us.
    #[arg(long, default_value_t = 500, hide = true)]
    backoff_initial_ms: u64,
    /// Cap on the retry delay.
    #[arg(long, default_value_t = 30_000, hide = true)]
    backoff_max_ms: u64,
    /// Exit with code 75 when the monitor has been out of reach (no registration accepted) for
    /// this long, so that the service manager restarts the agent and the restart can look up
    /// the monitor's address again. 0: retry forever.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    give_up_after: u64,
}

/// The exit code after `--give-up-after` (EX_TEMPFAIL: try again, from a fresh start).
pub const GAVE_UP: i32 = 75;

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected KEY=VALUE")),
    }
}

/// Why the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Signal,
    Admin,
}

impl Stop {
    fn reason(self) -> &'static str {
        match self {
            Stop::Signal => "signal",
            Stop::Admin => "admin",
        }
    }
}

/// State shared by the heartbeat loop and the admin endpoint.
pub struct Shared {
    instance_id: String,
    /// The agent's token, which the admin endpoint also requires.
    token: String,
    cpu_override: Mutex<Option<f64>>,
    member_id: Mutex<Option<String>>,
    /// f64 bit patterns, so reads need no lock.
    last_cpu: AtomicU64,
    last_mem: AtomicU64,
    last_seq: AtomicU64,
    connected: AtomicBool,
    draining: AtomicBool,
    stop: watch::Sender<Option<Stop>>,
}

impl Shared {
    fn set_override(&self, v: Option<f64>) {
        // A poisoned lock only means another task panicked mid-assignment of an Option<f64>.
        *self.cpu_override.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    fn cpu_override(&self) -> Option<f64> {
        *self.cpu_override.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_member(&self, id: Option<String>) {
        *self.member_id.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    fn request_stop(&self, why: Stop) {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(why);
                true
            } else {
                false
            }
        });
    }

    fn status_json(&self) -> String {
        let member = self
            .member_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let num = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        format!(
            "{{\"instance_id\":{},\"member_id\":{},\"connected\":{},\"draining\":{},\
             \"last_cpu\":{},\"last_mem\":{},\"last_seq\":{},\"override\":{}}}",
            json_string(&self.instance_id),
            member.as_deref().map_or("null".to_string(), json_string),
            self.connected.load(Ordering::Relaxed),
            self.draining.load(Ordering::Relaxed),
            num(&self.last_cpu),
            num(&self.last_mem),
            self.last_seq.load(Ordering::Relaxed),
            self.cpu_override()
                .map_or("null".to_string(), |v| v.to_string()),
        )
    }
}

/// The load source: real /proc counters or a simulated profile.
enum Source {
    Proc(ProcCpu),
    Sim(Simulator),
}

struct Load {
    source: Source,
    started: Instant,
    /// Seconds of the scenario already played when this agent started.
    offset: f64,
}

impl Load {
    fn cpu(&mut self) -> f64 {
        match &mut self.source {
            Source::Proc(p) => p.sample(),
            Source::Sim(s) => s.sample(self.offset + self.started.elapsed().as_secs_f64()),
        }
    }
}

type Client = MonitorClient<InterceptedService<Channel, TokenInterceptor>>;

/// Capped exponential backoff with jitter (each delay uniform in [d/2, d]), so a fleet of agents
/// does not reconnect in lockstep after a monitor restart.
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: metrics::Rng,
}

impl Backoff {
    fn new(initial_ms: u64, max_ms: u64, seed: u64) -> Self {
        let initial = Duration::from_millis(initial_ms.max(1));
        Backoff {
            initial,
            max: Duration::from_millis(max_ms.max(initial_ms)),
            current: initial,
            rng: metrics::Rng::new(seed),
        }
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d.mul_f64(0.5 + 0.5 * self.rng.next_f64())
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads the token from the file or the environment; trims the newline files usually end with.
fn load_token(cli: &Cli) -> Result<String, String> {
    let raw = match &cli.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?,
        None => std::env::var("IAC_AGENT_TOKEN")
            .map_err(|_| "no token: pass --token-file PATH or set IAC_AGENT_TOKEN".to_string())?,
    };
    Ok(raw.trim().to_string())
}

/// The monitor's endpoint: TLS pinned to the stack's CA for https://, plaintext only when
/// explicitly allowed.
fn endpoint(cli: &Cli) -> Result<Endpoint, String> {
    let e = Endpoint::from_shared(cli.monitor.clone())
        .map_err(|e| format!("bad --monitor {}: {e}", cli.monitor))?
        .connect_timeout(Duration::from_secs(3))
        // Detect a monitor host that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    match cli.monitor.split_once("://").map(|(scheme, _)| scheme) {
        Some("https") => {
            let path = cli.ca_file.as_ref().ok_or(
                "an https:// monitor needs --ca-file (the stack's CA, the only one trusted)",
            )?;
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                .domain_name(cli.tls_name.clone());
            e.tls_config(tls).map_err(|e| format!("TLS: {e}"))
        }
        Some("http") if cli.allow_plaintext => Ok(e),
        Some("http") => Err(format!(
            "--monitor {} is plaintext: use https:// with --ca-file, or --allow-plaintext for a \
             local fleet on loopback",
            cli.monitor
        )),
        _ => Err(format!(
            "bad --monitor {}: expected https://HOST:PORT",
            cli.monitor
        )),
    }
}

/// The local IP the kernel would use to reach the monitor (a connected UDP socket sends nothing).
async fn local_address(monitor: &str) -> Option<String> {
    let rest = monitor.split_once("://").map_or(monitor, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let target = tokio::net::lookup_host(authority).await.ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    Some(sock.local_addr().ok()?.ip().to_string())
}

fn main() {
    let cli = Cli::parse();
    // One thread is plenty for a heartbeat every few seconds and keeps memory low.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(cli));
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let token = match load_token(&cli) {
        Ok(t) => t,
        Err(e) => {
            log!("{e}");
            return 2;
        }
    };
    let interceptor = match iac_proto::token_interceptor(&token) {
        Ok(i) => i,
        Err(e) => {
            log!("bad token: {e}");
            return 2;
        }
    };
    let endpoint = match endpoint(&cli) {
        Ok(e) => e,
        Err(e) => {
            log!("{e}");
            return 2;
        }
    };
    if let Some(admin) = cli.admin {
        if !admin.ip().is_loopback() {
            log!("--admin {admin} refused: the admin endpoint listens on loopback only");
            return 2;
        }
    }

    let (stop_tx, mut stop_rx) = watch::channel(None);
    let instance_id = match &cli.instance_id {
        Some(id) => id.clone(),
        None => match imds::instance_id().await {
            Ok(id) => id,
            Err(e) => {
                log!("no --instance-id and {e}");
                return 1;
            }
        },
    };
    let shared = Arc::new(Shared {
        instance_id: instance_id.clone(),
        token: token.clone(),
        cpu_override: Mutex::new(None),
        member_id: Mutex::new(None),
        last_cpu: AtomicU64::new(0f64.to_bits()),
        last_mem: AtomicU64::new(0f64.to_bits()),
        last_seq: AtomicU64::new(0),
        connected: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        stop: stop_tx,
    });

    if let Some(admin) = cli.admin {
        match tokio::net::TcpListener::bind(admin).await {
            Ok(listener) => {
                let bound = listener
                    .local_addr()
                    .map_or(admin.to_string(), |a| a.to_string());
                log!("admin endpoint listening on {bound}");
                tokio::spawn(admin::serve(listener, shared.clone()));
            }
            Err(e) => {
                log!("cannot listen on --admin {admin}: {e}");
                return 2;
            }
        }
    }
    spawn_signal_handler(shared.clone());

    let address = match &cli.address {
        Some(a) => a.clone(),
        None => local_address(&cli.monitor).await.unwrap_or_default(),
    };
    let seed = cli
        .seed
        .unwrap_or_else(|| unix_ms() ^ u64::from(std::process::id()));
    let mut load = Load {
        source: match &cli.simulate {
            Some(p) => Source::Sim(Simulator::new(
                p.clone(),
                seed,
                cli.walk_rate,
                cli.walk_start,
            )),
            None => Source::Proc(ProcCpu::new()),
        },
        started: Instant::now(),
        offset: cli
            .simulate_since
            .map_or(0.0, |since| unix_ms().saturating_sub(since) as f64 / 1000.0),
    };
    let mut backoff = Backoff::new(
        cli.backoff_initial_ms,
        cli.backoff_max_ms,
        seed.rotate_left(17),
    );
    let request = RegisterRequest {
        instance_id,
        address,
        version: env!("CARGO_PKG_VERSION").to_string(),
        labels: cli.labels.iter().cloned().collect(),
    };

    let give_up = (cli.give_up_after > 0).then(|| Duration::from_secs(cli.give_up_after));
    loop {
        // Register (retrying), unless asked to stop first: then there is nothing to undo.
        let registered = tokio::select! {
            r = register(&endpoint, &interceptor, &request, &mut backoff, give_up) => r,
            _ = stop_rx.wait_for(Option::is_some) => {
                log!("stopping before registration completed");
                return 0;
            }
        };
        let Some((mut client, member_id, interval, session)) = registered else {
            log!(
                "the monitor at {} has been out of reach for {} s; exiting (code {GAVE_UP}) so that the agent is started again with the monitor's current address",
                cli.monitor,
                cli.give_up_after
            );
            return GAVE_UP;
        };
        shared.set_member(Some(member_id.clone()));
        shared.draining.store(false, Ordering::Relaxed);
        log!("registered as member {member_id}, heartbeat every {interval} ms");

        let outcome = heartbeats(
            &mut client,
            &member_id,
            &session,
            interval,
            &shared,
            &mut load,
            &mut stop_rx,
        )
        .await;
        shared.connected.store(false, Ordering::Relaxed);
        match outcome {
            Outcome::Stop(reason) => {
                deregister(&mut client, &member_id, &session, reason).await;
                return 0;
            }
            Outcome::Broken(why) => {
                log!("heartbeat stream broke ({why}); re-registering");
                shared.set_member(None);
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_rx.wait_for(Option::is_some) => {
                        // Best effort: the monitor may be back and still know us.
                        deregister(&mut client, &member_id, &session, "signal").await;
                        return 0;
                    }
                }
            }
        }
    }
}

fn spawn_signal_handler(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (term, int) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                log!("cannot install signal handlers: {e}");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => log!("SIGTERM received"),
            _ = int.recv() => log!("SIGINT received"),
        }
        shared.request_stop(Stop::Signal);
    });
}

/// Registers, retrying with backoff: a monitor that is down, restarting or refusing our token
/// is logged and retried (the operator may fix the token while we wait), forever or, with
/// `give_up`, until that long has passed without success (`None`).
async fn register(
    endpoint: &Endpoint,
    interceptor: &TokenInterceptor,
    request: &RegisterRequest,
    backoff: &mut Backoff,
    give_up: Option<Duration>,
) -> Option<(Client, String, u32, String)> {
    let deadline = give_up.map(|g| tokio::time::Instant::now() + g);
    loop {
        let attempt = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| format!("cannot reach the monitor: {e}"))?;
            let mut client = MonitorClient::with_interceptor(channel, interceptor.clone());
            let reply =
                tokio::time::timeout(Duration::from_secs(10), client.register(request.clone()))
                    .await
                    .map_err(|_| "register timed out".to_string())?
                    .map_err(|s| match s.code() {
                        tonic::Code::Unauthenticated => {
                            format!(
                                "the monitor refused our token (Unauthenticated: {})",
                                s.message()
                            )
                        }
                        _ => format!("register failed: {:?}: {}", s.code(), s.message()),
                    })?
                    .into_inner();
            if !reply.accepted {
                return Err("the monitor did not accept the registration (yet)".to_string());
            }
            if reply.member_id.is_empty() {
                return Err("the monitor sent an empty member id".to_string());
            }
            Ok((
                client,
                reply.member_id,
                reply.heartbeat_interval_ms,
                reply.session,
            ))
        };
        match attempt.await {
            Ok((client, member, interval, session)) => {
                backoff.reset();
                return Some((client, member, clamp_interval(interval), session));
            }
            Err(e) => {
                let mut delay = backoff.next_delay();
                if let Some(end) = deadline {
                    let left = end.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        log!("{e}");
                        return None;
                    }
                    delay = delay.min(left);
                }
                log!("{e}; retrying in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// 0 means "default"; very small values would flood the monitor, huge ones look like death.
fn clamp_interval(ms: u32) -> u32 {
    if ms == 0 {
        5_000
    } else {
        ms.clamp(50, 300_000)
    }
}

enum Outcome {
    Stop(&'static str),
    Broken(String),
}

async fn heartbeats(
    client: &mut Client,
    member_id: &str,
    session: &str,
    interval_ms: u32,
    shared: &Shared,
    load: &mut Load,
    stop_rx: &mut watch::Receiver<Option<Stop>>,
) -> Outcome {
    let (tx, rx) = mpsc::channel::<HeartbeatRequest>(4);
    let mut seq = 0u64;
    let mut sample = |seq: u64| {
        let cpu = shared.cpu_override().unwrap_or_else(|| load.cpu());
        let mem = metrics::read_mem_percent();
        shared.last_cpu.store(cpu.to_bits(), Ordering::Relaxed);
        shared.last_mem.store(mem.to_bits(), Ordering::Relaxed);
        shared.last_seq.store(seq, Ordering::Relaxed);
        HeartbeatRequest {
            member_id: member_id.to_string(),
            seq,
            cpu_percent: cpu,
            mem_percent: mem,
            app_metric: None,
            sent_unix_ms: unix_ms(),
            draining: shared.draining.load(Ordering::Relaxed),
            session: session.to_string(),
        }
    };
    // Queue the first heartbeat before opening the stream, so a monitor that waits for the
    // first message before answering with headers still gets one.
    seq += 1;
    if tx.try_send(sample(seq)).is_err() {
        return Outcome::Broken("cannot queue the first heartbeat".to_string());
    }
    let opened = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(10), client.heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))) => r,
        r = stop_rx.wait_for(Option::is_some) => return Outcome::Stop(stop_reason(r)),
    };
    let mut inbound = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Outcome::Broken(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => return Outcome::Broken("opening the heartbeat stream timed out".to_string()),
    };
    shared.connected.store(true, Ordering::Relaxed);

    let mut period = Duration::from_millis(u64::from(interval_ms));
    let mut ticker = new_ticker(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                seq += 1;
                if tx.send(sample(seq)).await.is_err() {
                    return Outcome::Broken("the request stream closed".to_string());
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(reply)) => {
                    if reply.heartbeat_interval_ms != 0 {
                        let new = Duration::from_millis(u64::from(clamp_interval(reply.heartbeat_interval_ms)));
                        if new != period {
                            log!("heartbeat interval changed to {} ms", new.as_millis());
                            period = new;
                            ticker = new_ticker(period);
                        }
                    }
                    match Directive::try_from(reply.directive) {
                        Ok(Directive::None) => {}
                        Ok(Directive::Drain) => {
                            if !shared.draining.swap(true, Ordering::Relaxed) {
                                log!("DRAIN received; acknowledging");
                            }
                            let ack = client.ack_drain(AckDrainRequest {
                                member_id: member_id.to_string(),
                                session: session.to_string(),
                            });
                            match tokio::time::timeout(Duration::from_secs(10), ack).await {
                                Ok(Ok(_)) => log!("drain acknowledged"),
                                Ok(Err(s)) => log!("AckDrain failed: {:?}: {}", s.code(), s.message()),
                                Err(_) => log!("AckDrain timed out"),
                            }
                        }
                        Ok(Directive::Deregister) => {
                            log!("DEREGISTER received");
                            return Outcome::Stop("directive");
                        }
                        Err(_) => log!("ignoring unknown directive {}", reply.directive),
                    }
                }
                Ok(None) => return Outcome::Broken("the monitor closed the stream".to_string()),
                Err(s) => return Outcome::Broken(format!("{:?}: {}", s.code(), s.message())),
            },
            r = stop_rx.wait_for(Option::is_some) => return Outcome::Stop(stop_reason(r)),
        }
    }
}

fn stop_reason(r: Result<watch::Ref<'_, Option<Stop>>, watch::error::RecvError>) -> &'static str {
    r.ok().and_then(|v| *v).map_or("signal", Stop::reason)
}

fn new_ticker(period: Duration) -> tokio::time::Interval {
    // The first tick fires after one period: the stream opened with a heartbeat already.
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

async fn deregister(client: &mut Client, member_id: &str, session: &str, reason: &str) {
    let req = DeregisterRequest {
        member_id: member_id.to_string(),
        reason: reason.to_string(),
        session: session.to_string(),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.deregister(req)).await {
        Ok(Ok(_)) => log!("deregistered member {member_id} ({reason})"),
        Ok(Err(s)) => log!("deregister failed: {:?}: {}", s.code(), s.message()),
        Err(_) => log!("deregister timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_jittered_and_resets() {
        let mut b = Backoff::new(100, 1000, 1);
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        let caps = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, cap) in delays.iter().zip(caps) {
            assert!(
                *d >= cap / 2 && *d <= cap,
                "{d} not in [{}, {cap}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
    }

    #[test]
    fn labels_are_key_value() {
        assert_eq!(parse_label("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert!(parse_label("=v").is_err());
        assert!(parse_label("kv").is_err());
    }

    #[test]
    fn intervals_are_clamped() {
        assert_eq!(clamp_interval(0), 5_000);
        assert_eq!(clamp_interval(1), 50);
        assert_eq!(clamp_interval(200), 200);
        assert_eq!(clamp_interval(u32::MAX), 300_000);
    }
}
