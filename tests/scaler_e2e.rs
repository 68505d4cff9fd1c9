//! The monitor with the local fleet: real `iac-agent` processes talking gRPC over loopback.
//! A load step set through the agents' `/metric` scales out within two heartbeat intervals, a
//! killed agent is replaced, a call without the token is refused, a restarted monitor adopts the
//! running pool and launches nothing, and the admin API holds the pool's bounds.

mod common;

use common::{agent_bin, free_port};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU32, Ordering};

use iac::scaler::fleet::{Fleet, FleetError, LocalFleet};
use iac::scaler::monitor::{run, serve, MonitorService, Shared};
use iac::scaler::policy::{Health, Mode, PolicyConfig};
use iac::scaler::stats::Refusal;
use iac_proto::{MonitorServer, RegisterRequest};
use tokio_stream::wrappers::TcpListenerStream;

const TOKEN: &str = "test-token-0123456789";

fn policy() -> PolicyConfig {
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
        cooldown_out: Duration::from_secs(3),
        cooldown_in: Duration::from_secs(3),
        warmup: Duration::ZERO,
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_millis(800),
        boot_deadline: Duration::from_secs(10),
    }
}

fn set_metric(port: u16, cpu: f64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("agent admin endpoint");
    let body = format!("{{\"cpu\": {cpu}}}");
    write!(s, "POST /metric HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 2"),
        "metric override refused: {out}"
    );
}

async fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fleet_scales_out_on_load_and_replaces_a_killed_agent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shared = Shared::new(policy(), TOKEN);
    let fleet = Arc::new(LocalFleet::new(
        agent_bin(),
        &url,
        TOKEN,
        vec!["--simulate".into(), "steady:10".into()],
    ));
    let svc = MonitorService::new(shared.clone(), fleet.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(MonitorServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let loop_fleet: Arc<dyn Fleet> = fleet.clone();
    let runner = tokio::spawn(run(shared.clone(), loop_fleet, async move {
        let _ = stop_rx.await;
    }));

    // The pool fills to min, and both agents register.
    let registered = |shared: &Shared| {
        shared
            .members()
            .iter()
            .filter(|m| m.registered_at.is_some() && m.load.is_some())
            .count()
    };
    wait_for("two registered agents", Duration::from_secs(15), || {
        registered(&shared) == 2
    })
    .await;
    assert_eq!(fleet.list().await.expect("list").len(), 2);

    // Filling the pool to min was a scale-out: let its cooldown pass, so what is measured next
    // is the reaction to load alone.
    tokio::time::sleep(policy().cooldown_out).await;
    // A load step: scale-out within two heartbeat intervals of the load crossing.
    for port in fleet.admin_ports().values() {
        set_metric(*port, 95.0);
    }
    let reacted = wait_for("a scale-out launch", Duration::from_secs(5), || {
        fleet.admin_ports().len() >= 3
    })
    .await;
    eprintln!("scale-out {reacted:?} after the load step");
    // How fast is the reaction benchmark's question (`cargo bench -p iac-scaler --bench
    // reaction`, BENCHMARKS.md): a wall-clock bound here would only measure how busy the machine
    // running the tests is.

    // A killed agent is detected (dead after 800 ms without heartbeats) and replaced.
    let ports = fleet.admin_ports();
    let victim = ports.keys().next().expect("an agent").clone();
    let pid = fleet.pid(&victim).expect("pid");
    let killed_at = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill -9");
    wait_for(
        "the killed agent to be replaced",
        Duration::from_secs(5),
        || !fleet.admin_ports().contains_key(&victim),
    )
    .await;
    wait_for("a replacement", Duration::from_secs(5), || {
        fleet.admin_ports().len() >= 3
    })
    .await;
    // Dead after `dead_after` of silence, acted on at the next decision (the reaction benchmark
    // measures it).
    let replaced = killed_at.elapsed();
    eprintln!("replacement launched {replaced:?} after kill -9");
    assert!(shared.members().len() <= policy().max as usize);

    // A quiet period: scale-in, but only once the scale-out's cooldown has passed.
    wait_for("all three reporting load", Duration::from_secs(10), || {
        registered(&shared) == 3
    })
    .await;
    for port in fleet.admin_ports().values() {
        set_metric(*port, 5.0);
    }
    wait_for("a scale-in to min", Duration::from_secs(10), || {
        fleet.admin_ports().len() == 2
    })
    .await;
    let rows = shared.timeline();
    let last_out = rows
        .iter()
        .filter(|r| r.decision.starts_with("scale out"))
        .map(|r| r.t)
        .max()
        .expect("a scale-out");
    let first_in = rows
        .iter()
        .find(|r| r.decision.starts_with("scale in"))
        .map(|r| r.t)
        .expect("a scale-in");
    assert!(
        first_in >= last_out + policy().cooldown_out,
        "scale-in at {first_in:?} inside the cooldown after the scale-out at {last_out:?}"
    );

    // A call without the token is refused, counted as such, and registers nobody. (The pool's
    // size is no witness: a drained member may still be leaving it.)
    let refused_before = shared.stats().refused_by[&Refusal::Token];
    let mut client = iac_proto::MonitorClient::connect(url.clone())
        .await
        .expect("connect");
    let refused = client
        .register(RegisterRequest {
            instance_id: "intruder".into(),
            address: "127.0.0.1".into(),
            version: "0".into(),
            labels: Default::default(),
        })
        .await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        shared.stats().refused_by[&Refusal::Token],
        refused_before + 1
    );
    assert!(!shared.members().iter().any(|m| m.id == "intruder"));

    // Every decision is on the timeline.
    let csv = iac::scaler::monitor::timeline_csv(&shared.timeline());
    assert!(
        csv.contains("scale out +1: ") && csv.contains("\"replace local-"),
        "{csv}"
    );

    let _ = stop_tx.send(());
    let _ = runner.await;
}

/// Wraps a fleet and counts the instances it launched (the fleet outlives monitors, like EC2).
struct Counting {
    inner: LocalFleet,
    launched: AtomicU32,
}

#[async_trait::async_trait]
impl Fleet for Counting {
    async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError> {
        let ids = self.inner.launch(count).await?;
        self.launched.fetch_add(ids.len() as u32, Ordering::SeqCst);
        Ok(ids)
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

/// A monitor on its own runtime: shutting that runtime down drops every task and connection at
/// once, which is what a crashed or restarted monitor looks like to the agents.
fn start_monitor(
    policy: PolicyConfig,
    grpc_port: u16,
    admin_port: Option<u16>,
    fleet: Arc<dyn Fleet>,
) -> (tokio::runtime::Runtime, Arc<Shared>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let shared = Shared::new(policy, TOKEN);
    let s = shared.clone();
    rt.spawn(async move {
        let grpc = tokio::net::TcpListener::bind(("127.0.0.1", grpc_port))
            .await
            .expect("bind grpc");
        let admin = match admin_port {
            Some(p) => Some(
                tokio::net::TcpListener::bind(("127.0.0.1", p))
                    .await
                    .expect("bind admin"),
            ),
            None => None,
        };
        serve(s, fleet, grpc, admin, std::future::pending())
            .await
            .expect("monitor");
    });
    (rt, shared)
}

fn wait_sync(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn live(shared: &Shared) -> usize {
    shared
        .members()
        .iter()
        .filter(|m| m.health == Health::Healthy && m.load.is_some())
        .count()
}

fn quiet_policy(min: u32, max: u32) -> PolicyConfig {
    PolicyConfig {
        min,
        max,
        // Load never crosses these, so only bounds and deaths move the pool.
        mode: Mode::Thresholds {
            high: 99.0,
            low: 1.0,
            out_samples: 1,
            in_samples: 1,
            step_out: 1,
            step_in: 1,
        },
        ..policy()
    }
}

#[test]
fn a_restarted_monitor_adopts_the_running_pool_and_launches_nothing() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let fleet = Arc::new(Counting {
        inner: LocalFleet::new(
            agent_bin(),
            &url,
            TOKEN,
            vec![
                "--simulate".into(),
                "steady:10".into(),
                "--backoff-initial-ms".into(),
                "50".into(),
                "--backoff-max-ms".into(),
                "200".into(),
            ],
        ),
        launched: AtomicU32::new(0),
    });
    let (first, shared) = start_monitor(quiet_policy(2, 4), port, None, fleet.clone());
    wait_sync("the first monitor's pool", Duration::from_secs(15), || {
        live(&shared) == 2
    });
    assert_eq!(fleet.launched.load(Ordering::SeqCst), 2);

    // The monitor dies; its pool is only in the fleet now.
    first.shutdown_background();
    // Its port is free again once its runtime has dropped the listener.
    wait_sync("the first monitor's port", Duration::from_secs(10), || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    });

    let (second, shared) = start_monitor(quiet_policy(2, 4), port, None, fleet.clone());
    // At once: both instances adopted (booting, so they count), before any agent reconnected.
    wait_sync("the adopted pool", Duration::from_secs(2), || {
        shared.members().len() == 2
    });
    wait_sync(
        "the agents' re-registration",
        Duration::from_secs(10),
        || live(&shared) == 2,
    );
    // Several decision periods later, still nothing launched twice.
    std::thread::sleep(policy().heartbeat * 5);
    assert_eq!(
        fleet.launched.load(Ordering::SeqCst),
        2,
        "the restarted monitor launched again: {:?}",
        shared.timeline()
    );
    let mut ids: Vec<String> = shared.members().into_iter().map(|m| m.id).collect();
    ids.sort();
    assert_eq!(ids, ["local-1", "local-2"]);
    second.shutdown_background();
}

fn admin(port: u16, token: &str, method: &str, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(iac::scaler::admin::request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        token,
        method,
        path,
    ))
    .expect("admin call")
}

#[test]
fn the_admin_api_needs_the_token_and_holds_min_and_max() {
    let port = free_port();
    let admin_port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let fleet = Arc::new(LocalFleet::new(
        agent_bin(),
        &url,
        TOKEN,
        vec!["--simulate".into(), "steady:10".into()],
    ));
    let (rt, shared) = start_monitor(quiet_policy(2, 3), port, Some(admin_port), fleet.clone());
    wait_sync("the pool at min", Duration::from_secs(15), || {
        live(&shared) == 2
    });

    let (code, body) = admin(admin_port, "wrong-token-0123456789", "GET", "/members");
    assert_eq!(code, 401, "{body}");
    assert_eq!(shared.stats().refused, 1);

    let (code, body) = admin(admin_port, TOKEN, "GET", "/members");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["pool"], 2);
    assert_eq!(v["members"][0]["state"], "healthy");

    // Add one: allowed up to max, then refused.
    let (code, body) = admin(admin_port, TOKEN, "POST", "/members");
    assert_eq!(code, 201, "{body}");
    assert_eq!(fleet.admin_ports().len(), 3);
    let (code, body) = admin(admin_port, TOKEN, "POST", "/members");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("maximum of 3"), "{body}");
    assert_eq!(fleet.admin_ports().len(), 3);

    // Remove one: drained, then terminated; at min, refused.
    let (code, body) = admin(admin_port, TOKEN, "DELETE", "/members/local-1");
    assert_eq!(code, 202, "{body}");
    wait_sync(
        "local-1 drained and terminated",
        Duration::from_secs(5),
        || !fleet.admin_ports().contains_key("local-1"),
    );
    wait_sync(
        "the added agent to register",
        Duration::from_secs(10),
        || live(&shared) == 2 && shared.members().len() == 2,
    );
    let (code, body) = admin(admin_port, TOKEN, "DELETE", "/members/local-2");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("minimum of 2"), "{body}");
    let (code, _) = admin(admin_port, TOKEN, "DELETE", "/members/i-nope");
    assert_eq!(code, 404);

    let (code, metrics) = admin(admin_port, TOKEN, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("iac_monitor_members{state=\"healthy\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("iac_monitor_launches_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("iac_monitor_terminations_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("iac_monitor_heartbeat_handle_seconds_count"));
    assert!(shared.stats().heartbeats > 0);
    rt.shutdown_background();
}
