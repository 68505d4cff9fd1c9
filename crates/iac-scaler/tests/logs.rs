//! What the monitor logs about callers, captured from its tracing output: a flood of refused
//! calls makes a line a second per reason (each saying how many it did not log) while every one
//! is counted, and what callers sent is cut short and cannot start a line of its own.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{client, policy, registration, start, Listed};
use iac_proto::MonitorClient;
use iac_scaler::fleet::Fleet;
use iac_scaler::monitor::{ServeOptions, Shared};
use iac_scaler::stats::Refusal;
use tonic::Code;

/// Everything the monitor logged in this test binary.
fn captured() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    let logs = LOGS.get_or_init(Mutex::default);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(|| Capture)
            .init()
    });
    logs
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        captured().lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that contain `needle`.
fn lines_with(needle: &str) -> Vec<String> {
    let logs = captured().lock().expect("logs");
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The number after `name=` in a line.
fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// A client on a connection of its own, with a wrong token.
async fn intruder(url: &str) -> Intruder {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let wrong = iac_proto::token_interceptor("not-the-token-0123456789").expect("token");
    MonitorClient::with_interceptor(channel, wrong)
}

type Intruder = MonitorClient<
    tonic::codegen::InterceptedService<tonic::transport::Channel, iac_proto::TokenInterceptor>,
>;

async fn monitor() -> (Arc<Shared>, String) {
    captured();
    let fleet: Arc<dyn Fleet> = Arc::new(Listed(vec!["i-a".into()]));
    let (shared, addr) = start(
        policy(Duration::from_secs(1)),
        fleet,
        ServeOptions::default(),
    )
    .await;
    (shared, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_calls_makes_a_line_a_second_and_every_one_is_counted() {
    let (shared, url) = monitor().await;
    const FLOOD: usize = 2_000;
    let mut calls = tokio::task::JoinSet::new();
    let started = Instant::now();
    for k in 0..4 {
        let c = intruder(&url).await;
        for i in (k..FLOOD).step_by(4) {
            let mut c = c.clone();
            calls.spawn(async move { c.register(registration(&format!("i-{i}"))).await });
        }
    }
    while let Some(r) = calls.join_next().await {
        let status = r.expect("a call").expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let took = started.elapsed();
    assert_eq!(shared.stats().refused_by[&Refusal::Token], FLOOD as u64);
    let lines = lines_with("reason=\"token\"");
    // At most one line per second the flood lasted (it touched at most two more seconds).
    assert!(!lines.is_empty());
    assert!(
        lines.len() as u64 <= took.as_secs() + 2,
        "{} lines in {took:?}",
        lines.len()
    );
    // A refusal a second later is logged with how many were not: every refusal is accounted for.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = intruder(&url)
        .await
        .register(registration("i-a"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    let lines = lines_with("reason=\"token\"");
    let accounted: u64 = lines.iter().map(|l| 1 + field(l, "suppressed")).sum();
    assert_eq!(accounted, FLOOD as u64 + 1, "{lines:#?}");
    assert!(shared.members().iter().all(|m| m.registered_at.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_callers_sent_is_cut_short_in_log_lines() {
    let (shared, url) = monitor().await;
    let mut c = client(&url).await;
    // A malformed id with a line break: refused, and logged on one line, cut at 64 characters.
    let forged = format!("{}\nforged: the monitor was compromised", "x".repeat(100));
    let status = c
        .register(registration(&forged))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    // An id far over the size limit: refused, logged cut short too.
    let huge = "w".repeat(10_000);
    let status = c.register(registration(&huge)).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    // An accepted registration's address (up to 256 characters) is cut short as well.
    let mut r = registration("i-a");
    r.address = format!("{}\nforged: {}", "y".repeat(60), "z".repeat(180));
    assert!(
        c.register(r)
            .await
            .expect("registered")
            .into_inner()
            .accepted
    );
    assert_eq!(shared.stats().refused_by[&Refusal::Malformed], 1);
    assert_eq!(shared.stats().refused_by[&Refusal::Oversized], 1);

    let cut = |needle: &str, shown: String| {
        let lines = lines_with(needle);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains(&shown), "{} lacks {shown}", lines[0]);
        lines[0].clone()
    };
    cut(
        "reason=\"malformed\"",
        format!("caller={}…", "x".repeat(64)),
    );
    let oversized = cut(
        "reason=\"oversized\"",
        format!("caller={}…", "w".repeat(64)),
    );
    assert!(!oversized.contains(&"w".repeat(65)));
    cut(
        "registered instance=i-a",
        format!("address={}?for…", "y".repeat(60)),
    );
    // No caller text began a line of its own.
    assert!(lines_with("forged")
        .iter()
        .all(|l| !l.starts_with("forged")));
    assert!(lines_with("zzzz").is_empty());
}
