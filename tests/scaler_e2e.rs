//! The monitor with the local fleet: real `iac-agent` processes talking gRPC over loopback.
//! A load step set through the agents' `/metric` scales out within two heartbeat intervals, a
//! killed agent is replaced, a call without the token is refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iac::scaler::fleet::{Fleet, LocalFleet};
use iac::scaler::monitor::{run, MonitorService, Shared};
use iac::scaler::policy::{Mode, PolicyConfig};
use iac_proto::{MonitorServer, RegisterRequest};
use tokio_stream::wrappers::TcpListenerStream;

const TOKEN: &str = "test-token-0123456789";

/// The agent binary `cargo test --workspace` builds beside this test's binary. Missing is a
/// failure, never a skip.
fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IAC_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("iac-agent");
    assert!(bin.exists(), "{} is missing: run `cargo build -p iac-agent` (scripts/test.sh builds the whole workspace)", bin.display());
    bin
}

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
    write!(s, "POST /metric HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
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
    let svc = MonitorService {
        shared: shared.clone(),
    };
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(MonitorServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let fleet = Arc::new(LocalFleet::new(
        agent_bin(),
        &url,
        TOKEN,
        vec!["--simulate".into(), "steady:10".into()],
    ));
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
    // One interval for the agents to report, one for the decision, plus scheduling slack.
    assert!(
        reacted <= policy().heartbeat * 2 + Duration::from_millis(300),
        "scale-out took {reacted:?}"
    );

    // A killed agent is detected (dead after 800 ms without heartbeats) and replaced.
    let ports = fleet.admin_ports();
    let victim = ports.keys().next().expect("an agent").clone();
    let pid = fleet.pid(&victim).expect("pid");
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
    assert!(shared.members().len() <= policy().max as usize);

    // A call without the token is refused, and the pool is unchanged.
    let before = shared.members().len();
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
    assert_eq!(shared.members().len(), before);
    assert!(!shared.members().iter().any(|m| m.id == "intruder"));

    // Every decision is on the timeline.
    let csv = iac::scaler::monitor::timeline_csv(&shared.timeline());
    assert!(csv.lines().count() > 5 && csv.contains("ScaleOut"), "{csv}");

    let _ = stop_tx.send(());
    let _ = runner.await;
}
