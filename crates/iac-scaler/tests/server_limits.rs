//! The gRPC server's limits other than message sizes, seen from the outside over loopback:
//! streams per connection, requests in flight per connection, the size of a request's headers,
//! the request deadline and the keepalive pings. Each test runs the monitor with the limits `iac scale` serves with
//! ([`Limits::default`]), changed only where a test needs another limit out of its way.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wire::{
    self, Frame, Wire, ACK, CANCEL, HEADERS, PING, PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM,
};
use common::{client, policy, registration, start, wait_for, Listed, TOKEN};
use iac_scaler::fleet::{Fleet, FleetError};
use iac_scaler::monitor::{Limits, ServeOptions, Shared};
use iac_scaler::stats::Refusal;
use prost::Message as _;
use tokio::sync::Semaphore;
use tonic::Code;

/// A fleet that runs nothing and answers whether it owns an instance whose id starts with
/// `stall-` only when the test lets it (one answer per permit).
struct Stalling {
    runs_nothing: Listed,
    gate: Semaphore,
    /// Ids asked about, in order.
    asked: Mutex<Vec<String>>,
    /// Questions given up by the server before they were answered.
    abandoned: AtomicUsize,
}

/// Counts an unanswered question when the server drops it.
struct Abandoned<'a>(&'a AtomicUsize);

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Default for Stalling {
    fn default() -> Self {
        Stalling {
            runs_nothing: Listed(Vec::new()),
            gate: Semaphore::new(0),
            asked: Mutex::default(),
            abandoned: AtomicUsize::default(),
        }
    }
}

impl Stalling {
    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("asked").clone()
    }
}

#[async_trait::async_trait]
impl Fleet for Stalling {
    async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError> {
        self.runs_nothing.launch(count).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        self.runs_nothing.terminate(ids).await
    }
    async fn list(&self) -> Result<Vec<String>, FleetError> {
        self.runs_nothing.list().await
    }
    async fn owns(&self, id: &str) -> Result<bool, FleetError> {
        self.asked.lock().expect("asked").push(id.to_string());
        if id.starts_with("stall-") {
            let pending = Abandoned(&self.abandoned);
            let permit = self.gate.acquire().await;
            std::mem::forget(pending);
            permit
                .map_err(|e| FleetError::Other(e.to_string()))?
                .forget();
        }
        Ok(false)
    }
}

/// A monitor with these limits (pool of at most 200, so that the registration rate limit lets
/// hundreds of calls through); its state and address.
async fn monitor(limits: Limits, fleet: Arc<dyn Fleet>) -> (Arc<Shared>, SocketAddr) {
    let mut p = policy(Duration::from_secs(1));
    p.max = 200;
    start(p, fleet, ServeOptions { limits, tls: None }).await
}

/// Response headers or a reset, by stream, until every stream in `ids` has one.
async fn answers(wire: &mut Wire, ids: &BTreeSet<u32>) -> BTreeMap<u32, Frame> {
    let mut got = BTreeMap::new();
    while !ids.iter().all(|id| got.contains_key(id)) {
        let f = wire
            .until("an answer on every stream", |f| {
                ids.contains(&f.stream) && (f.kind == HEADERS || f.kind == RST_STREAM)
            })
            .await;
        got.entry(f.stream).or_insert(f);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_1024_streams_and_more_are_refused() {
    let limits = Limits::default();
    assert_eq!(limits.streams_per_connection, 1024);
    let (shared, addr) = monitor(limits, Arc::new(Listed(Vec::new()))).await;
    let mut wire = Wire::connect(addr, true).await;
    // 1024 heartbeat streams that stay open (they never send a message), then one more.
    let mut open = BTreeSet::new();
    for _ in 0..1024 {
        open.insert(wire.call("Heartbeat", TOKEN, None).await);
    }
    let extra = wire.call("Heartbeat", TOKEN, None).await;
    let mut all = open.clone();
    all.insert(extra);
    let got = answers(&mut wire, &all).await;
    for id in &open {
        assert_eq!(got[id].kind, HEADERS, "stream {id}: {:?}", got[id]);
    }
    assert_eq!(
        got[&extra].code(),
        Some(REFUSED_STREAM),
        "{:?}",
        got[&extra]
    );
    // Once a stream closes, its slot takes a new one.
    let first = *open.first().expect("a stream");
    wire.send(RST_STREAM, 0, first, &CANCEL.to_be_bytes()).await;
    let deadline = tokio::time::Instant::now() + wire::PATIENCE;
    loop {
        let id = wire.call("Heartbeat", TOKEN, None).await;
        let got = answers(&mut wire, &BTreeSet::from([id])).await;
        if got[&id].kind == HEADERS {
            break;
        }
        assert_eq!(got[&id].code(), Some(REFUSED_STREAM), "{:?}", got[&id]);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's slot never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Streams that never spoke changed nothing.
    assert!(shared.members().is_empty());
    assert_eq!(shared.stats().refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_has_at_most_256_requests_in_flight_and_the_next_waits_for_a_slot() {
    let limits = Limits {
        // Out of the way: the stalled calls must outlive the test's steps.
        request_timeout: Duration::from_secs(3600),
        ..Limits::default()
    };
    let in_flight = limits.concurrency_per_connection;
    assert_eq!(in_flight, 256);
    let fleet = Arc::new(Stalling::default());
    let (shared, addr) = monitor(limits, fleet.clone()).await;
    let mut wire = Wire::connect(addr, true).await;
    // 257 registrations on one connection, each stalled in the fleet until the test says.
    for i in 0..=in_flight {
        let message = registration(&format!("stall-{i:03}")).encode_to_vec();
        wire.call("Register", TOKEN, Some(&message)).await;
    }
    // Every one of them has been read by the server (the PING after them was answered).
    wire.sync().await;
    wait_for("256 registrations in the handler", || {
        fleet.asked().len() >= in_flight
    })
    .await;
    // Other connections are served meanwhile...
    let mut other = client(&format!("http://{addr}")).await;
    for i in 0..20 {
        let status = other
            .register(registration(&format!("i-other-{i}")))
            .await
            .expect_err("not the fleet's");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    // ...but the 257th call of the first connection still waits for a slot.
    let asked = fleet.asked();
    assert_eq!(
        asked.iter().filter(|id| id.starts_with("stall-")).count(),
        in_flight,
        "{asked:?}"
    );
    // One stalled call finishes: the waiting one takes its slot.
    fleet.gate.add_permits(1);
    wait_for("the 257th registration in the handler", || {
        fleet
            .asked()
            .iter()
            .filter(|id| id.starts_with("stall-"))
            .count()
            == in_flight + 1
    })
    .await;
    fleet.gate.add_permits(in_flight);
    wait_for("every registration answered", || {
        shared.stats().refused_by[&Refusal::NotInFleet] == (in_flight + 1 + 20) as u64
    })
    .await;
    assert!(shared.members().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stalled_past_the_request_timeout_is_cancelled() {
    let limits = Limits::default();
    assert_eq!(limits.request_timeout, Duration::from_secs(10));
    let fleet = Arc::new(Stalling::default());
    let (shared, addr) = monitor(limits, fleet.clone()).await;
    let mut c = client(&format!("http://{addr}")).await;
    // The fleet never answers: the server gives up on the call (the client sets no deadline).
    let status = tokio::time::timeout(wire::PATIENCE, c.register(registration("stall-forever")))
        .await
        .expect("the server never gave up on the call")
        .expect_err("cancelled");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "Timeout expired");
    // The handler was dropped with it, mid-question; nothing was registered.
    assert_eq!(fleet.abandoned.load(Ordering::SeqCst), 1);
    assert!(shared.members().is_empty());
    assert_eq!(shared.stats().registrations, 0);
    // The connection is still usable.
    let status = c.register(registration("i-x")).await.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_pinged_and_dropped_when_they_do_not_answer() {
    let limits = Limits::default();
    assert_eq!(limits.keepalive_interval, Duration::from_secs(10));
    assert_eq!(limits.keepalive_timeout, Duration::from_secs(5));
    let (_, addr) = monitor(limits, Arc::new(Listed(Vec::new()))).await;
    let mut silent = Wire::connect(addr, false).await;
    let mut answering = Wire::connect(addr, true).await;
    let is_ping = |f: &Frame| f.kind == PING && f.flags & ACK == 0;
    // The silent connection is pinged, and closed when it does not answer.
    silent.until("a keepalive ping", is_ping).await;
    loop {
        match silent.next().await {
            None => break,
            Some(f) => assert!(
                f.kind == wire::GOAWAY || is_ping(&f),
                "unexpected after the unanswered ping: {f:?}"
            ),
        }
    }
    // The one that answers is pinged again (a connection that had not answered would have been
    // closed before a second ping), and still serves calls.
    answering.until("a first ping", is_ping).await;
    answering.until("a second ping", is_ping).await;
    let id = answering.call("Heartbeat", TOKEN, None).await;
    let got = answers(&mut answering, &BTreeSet::from([id])).await;
    assert_eq!(got[&id].kind, HEADERS, "{:?}", got[&id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_over_8_kib_are_refused() {
    let limits = Limits::default();
    assert_eq!(limits.max_header_list, 8 * 1024);
    let (shared, addr) = monitor(limits, Arc::new(Listed(Vec::new()))).await;
    let mut wire = Wire::connect(addr, true).await;
    let small = "a".repeat(7 * 1024);
    let big = "a".repeat(9 * 1024);
    let fits = wire
        .call_with("Heartbeat", TOKEN, &[("x-pad", &small)], None)
        .await;
    let over = wire
        .call_with("Heartbeat", TOKEN, &[("x-pad", &big)], None)
        .await;
    // The server resets the oversized one (after a 431) before any handler runs.
    let (mut answer, mut reset) = (None, None);
    while answer.is_none() || reset.is_none() {
        let f = wire
            .until("answers on both streams", |f| {
                f.stream == fits || f.stream == over
            })
            .await;
        if f.stream == fits {
            answer.get_or_insert(f);
        } else if f.kind == RST_STREAM {
            reset = Some(f);
        }
    }
    let (answer, reset) = (answer.expect("answer"), reset.expect("reset"));
    assert_eq!(answer.kind, HEADERS, "{answer:?}");
    // (h2 resets it as a protocol error; refused would do as well.)
    assert!(
        matches!(reset.code(), Some(PROTOCOL_ERROR | REFUSED_STREAM)),
        "{reset:?}"
    );
    assert_eq!(shared.stats().refused, 0);
}
