//! Membership bound to the fleet, over real gRPC on loopback: every forged or abusive call is
//! refused, counted under its reason, and leaves the pool as it was.

use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{client, policy, registration, start, wait_for, Client, Listed, Unlisted};
use iac_proto::{DeregisterRequest, HeartbeatReply, HeartbeatRequest};
use iac_scaler::config::PolicyConfig;
use iac_scaler::fleet::Fleet;
use iac_scaler::health::Health;
use iac_scaler::monitor::{ServeOptions, Shared};
use iac_scaler::stats::Refusal;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

/// A monitor whose fleet runs `i-a` and `i-b`, and a client with the token.
async fn monitor(hb: Duration) -> (Arc<Shared>, Client, String) {
    let fleet = Arc::new(Listed(vec!["i-a".into(), "i-b".into()]));
    let (shared, c, url) = monitor_of(policy(hb), fleet).await;
    // The control loop's first pass adopts the fleet's instances: a test starts from the table
    // that pass leaves, not from the empty one before it.
    wait_for("the fleet's two instances in the table", || {
        shared.members().len() == 2
    })
    .await;
    (shared, c, url)
}

/// A monitor with this policy and fleet, and a client with the token.
async fn monitor_of(policy: PolicyConfig, fleet: Arc<dyn Fleet>) -> (Arc<Shared>, Client, String) {
    let (shared, addr) = start(policy, fleet, ServeOptions::default()).await;
    let url = format!("http://{addr}");
    (shared, client(&url).await, url)
}

fn beat(member: &str, session: &str, seq: u64, cpu: f64) -> HeartbeatRequest {
    HeartbeatRequest {
        member_id: member.into(),
        seq,
        cpu_percent: cpu,
        mem_percent: 10.0,
        app_metric: None,
        sent_unix_ms: 0,
        draining: false,
        session: session.into(),
    }
}

/// Registers `id` and returns its session.
async fn register(c: &mut Client, id: &str) -> String {
    let r = c
        .register(registration(id))
        .await
        .expect("register")
        .into_inner();
    assert!(r.accepted);
    assert_eq!(r.session.len(), 32);
    r.session
}

/// Opens a heartbeat stream; the sender feeds it.
async fn stream(c: &mut Client) -> (mpsc::Sender<HeartbeatRequest>, Streaming<HeartbeatReply>) {
    let (tx, rx) = mpsc::channel(16);
    let replies = c
        .heartbeat(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    (tx, replies)
}

fn refused(shared: &Shared, why: Refusal) -> u64 {
    shared.stats().refused_by[&why]
}

fn member(shared: &Shared, id: &str) -> iac_scaler::health::Member {
    shared
        .members()
        .into_iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("no member {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_id_the_fleet_does_not_run_is_refused() {
    let (shared, mut c, _) = monitor(Duration::from_secs(1)).await;
    let before = shared.members();
    for fake in ["i-fake", "i-c", "local-99"] {
        let status = c.register(registration(fake)).await.expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    assert_eq!(refused(&shared, Refusal::NotInFleet), 3);
    assert_eq!(shared.members(), before);
    assert_eq!(shared.stats().registrations, 0);
    // Malformed ids never reach the fleet.
    for bad in ["", "two words", &"x".repeat(200)] {
        let status = c.register(registration(bad)).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(refused(&shared, Refusal::Malformed), 3);
    // An instance the fleet runs is admitted.
    register(&mut c, "i-a").await;
    assert_eq!(member(&shared, "i-a").health, Health::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_speaks_for_one_member_with_its_session_and_in_sequence() {
    let (shared, mut c, _) = monitor(Duration::from_secs(1)).await;
    let a = register(&mut c, "i-a").await;
    let b = register(&mut c, "i-b").await;

    // Without the session, a stream cannot speak for a member: refused, and closed.
    let (tx, mut replies) = stream(&mut c).await;
    tx.send(beat("i-b", "0123456789abcdef0123456789abcdef", 1, 99.0))
        .await
        .expect("send");
    let status = replies.message().await.expect_err("closed with an error");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(refused(&shared, Refusal::Session), 1);
    assert_eq!(member(&shared, "i-b").load, None);

    // A's stream: its own heartbeats count; B's id on it is refused, even with B's session.
    let (tx, _replies) = stream(&mut c).await;
    tx.send(beat("i-a", &a, 1, 30.0)).await.expect("send");
    tx.send(beat("i-b", &b, 1, 99.0)).await.expect("send");
    // A seq jump would make every later heartbeat look stale: refused, and A goes on.
    tx.send(beat("i-a", &a, u64::MAX, 99.0))
        .await
        .expect("send");
    tx.send(beat("i-a", &a, 2, 40.0)).await.expect("send");
    wait_for("A's second heartbeat", || shared.stats().heartbeats == 2).await;
    assert_eq!(refused(&shared, Refusal::OtherMember), 1);
    assert_eq!(refused(&shared, Refusal::SeqJump), 1);
    assert_eq!(member(&shared, "i-a").load, Some(40.0));
    assert_eq!(member(&shared, "i-b").load, None);

    // While A's stream is open, nobody can re-register A (that would take its session).
    let status = c.register(registration("i-a")).await.expect_err("refused");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(refused(&shared, Refusal::Live), 1);

    // Deregistering another member needs its session.
    let status = c
        .deregister(DeregisterRequest {
            member_id: "i-b".into(),
            reason: "forged".into(),
            session: a.clone(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(refused(&shared, Refusal::Session), 2);
    assert_ne!(member(&shared, "i-b").health, Health::Dead);
    assert_eq!(shared.members().len(), 2);
    assert_eq!(shared.stats().deregistrations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_is_refused_and_counted() {
    let (shared, c, url) = monitor(Duration::from_secs(1)).await;
    let before = shared.members();
    const FLOOD: usize = 10_000;
    // Eight connections, 10,000 registrations sent as fast as the client goes.
    let mut clients = vec![c];
    for _ in 1..8 {
        clients.push(client(&url).await);
    }
    let mut tasks = Vec::new();
    for (k, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut calls = tokio::task::JoinSet::new();
            for i in (k..FLOOD).step_by(8) {
                let mut c = c.clone();
                calls.spawn(async move { c.register(registration(&format!("i-{i:05}"))).await });
            }
            let mut codes = Vec::new();
            while let Some(r) = calls.join_next().await {
                let r = r.expect("a registration task");
                codes.push(r.expect_err("every flood registration is refused").code());
            }
            codes
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.extend(t.await.expect("flood task"));
    }
    assert_eq!(codes.len(), FLOOD);
    let limited = refused(&shared, Refusal::RateLimited);
    let not_ours = refused(&shared, Refusal::NotInFleet);
    assert!(limited > 0, "the rate limit never applied");
    assert_eq!(limited + not_ours, FLOOD as u64);
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Code::ResourceExhausted)
            .count() as u64,
        limited
    );
    assert_eq!(shared.members(), before);
    assert_eq!(shared.stats().registrations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_and_counted() {
    let (shared, mut c, _) = monitor(Duration::from_secs(1)).await;
    // Above the handler's limit (4 KiB): refused and counted.
    let mut big = registration("i-a");
    big.address = "x".repeat(16 * 1024);
    let status = c.register(big).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(refused(&shared, Refusal::Oversized), 1);
    // Above what tonic decodes (64 KiB): refused before any handler runs, and counted too.
    let mut huge = registration("i-a");
    huge.labels.insert("k".into(), "v".repeat(1024 * 1024));
    let status = c.register(huge).await.expect_err("refused");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(refused(&shared, Refusal::Oversized), 2);
    assert!(shared.members().iter().all(|m| m.registered_at.is_none()));
    assert_eq!(shared.stats().registrations, 0);

    // On a stream: an oversized heartbeat is refused, counted, and ends the stream.
    let a = register(&mut c, "i-a").await;
    let (tx, _replies) = stream(&mut c).await;
    tx.send(beat("i-a", &a, 1, 10.0)).await.expect("send");
    let mut huge = beat("i-a", &a, 2, 99.0);
    huge.member_id = "i".repeat(100 * 1024);
    tx.send(huge).await.expect("send");
    wait_for("the oversized heartbeat refused", || {
        refused(&shared, Refusal::Oversized) == 3
    })
    .await;
    assert_eq!(member(&shared, "i-a").load, Some(10.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_without_deregister_is_suspect_at_once_and_dead_one_interval_later() {
    let hb = Duration::from_millis(300);
    let (shared, mut c, _) = monitor(hb).await;
    let a = register(&mut c, "i-a").await;
    let (tx, replies) = stream(&mut c).await;
    tx.send(beat("i-a", &a, 1, 10.0)).await.expect("send");
    wait_for("the first heartbeat", || shared.stats().heartbeats == 1).await;
    let health = |shared: &Shared| {
        let now = shared.uptime();
        iac_scaler::health::health_at(now, &member(shared, "i-a"), &shared.policy)
    };
    assert_eq!(health(&shared), Health::Healthy);
    // The agent dies: its stream ends (no Deregister).
    drop(tx);
    drop(replies);
    wait_for("suspect", || health(&shared) != Health::Healthy).await;
    // Long before dead_after (50 intervals): one interval after the stream ended.
    wait_for("dead", || health(&shared) == Health::Dead).await;
    // Dead because the stream ended, not because dead_after passed.
    let mut m = member(&shared, "i-a");
    // `members()` shows the health now; the recorded one was never set to dead.
    m.health = Health::Healthy;
    let lost = m.stream_lost.expect("the loss is recorded");
    let at = |t| iac_scaler::health::health_at(t, &m, &shared.policy);
    assert_eq!(at(lost), Health::Suspect);
    assert_eq!(at(lost + hb + Duration::from_millis(1)), Health::Dead);
    // A new registration and stream bring it back.
    let a = register(&mut c, "i-a").await;
    let (tx, _replies) = stream(&mut c).await;
    tx.send(beat("i-a", &a, 1, 10.0)).await.expect("send");
    wait_for("healthy again", || health(&shared) == Health::Healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_beyond_the_tables_cap_are_refused_and_counted() {
    // A pool of at most 4 holds at most 4 + 4 entries. Heartbeats every 10 s, so that the
    // control loop's drain of members beyond max (at its next pass) frees nothing meanwhile.
    let mut p = policy(Duration::from_secs(10));
    p.max = 4;
    // The fleet launched 12 instances since the monitor started: those refused are refused for
    // the table, not as strangers.
    let ids: Vec<String> = (0..12).map(|i| format!("i-{i:02}")).collect();
    let (shared, mut c, _) = monitor_of(p, Arc::new(Unlisted(Listed(ids.clone())))).await;
    assert!(shared.members().is_empty());
    let cap = shared.table_cap();
    assert_eq!(cap, 8);
    for id in &ids[..cap] {
        register(&mut c, id).await;
    }
    let before = shared.members();
    assert_eq!(before.len(), cap);
    for id in &ids[cap..] {
        let status = c.register(registration(id)).await.expect_err("refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{id}: {status:?}");
    }
    assert_eq!(
        refused(&shared, Refusal::TableFull),
        (ids.len() - cap) as u64
    );
    assert_eq!(refused(&shared, Refusal::NotInFleet), 0);
    assert_eq!(shared.members(), before);
    assert_eq!(shared.stats().registrations, cap as u64);
    // A member already in the table may still register again (after a lost stream): the cap
    // keeps strangers out, not the pool's own members.
    register(&mut c, &ids[0]).await;
    assert_eq!(shared.members().len(), cap);
    assert_eq!(
        refused(&shared, Refusal::TableFull),
        (ids.len() - cap) as u64
    );
}
