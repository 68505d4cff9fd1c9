//! The monitor over TLS, on loopback: agents that pin the stack's CA get in; a plaintext
//! client, a client trusting another CA, and an expired certificate are refused at the
//! handshake, counted, and never reach the pool.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{policy, registration, start, wait_for, Listed, TOKEN};
use iac_proto::MonitorClient;
use iac_scaler::fleet::Fleet;
use iac_scaler::monitor::{serve_with, ServeOptions, Shared, TlsIdentity};
use iac_scaler::stats::Refusal;
use iac_scaler::tls::{generate, generate_between, StackTls};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// A monitor serving TLS with `tls`'s certificate; returns its state and port.
async fn tls_monitor(tls: &StackTls) -> (Arc<Shared>, u16) {
    let fleet: Arc<dyn Fleet> = Arc::new(Listed(vec!["i-a".into()]));
    let options = ServeOptions {
        tls: Some(TlsIdentity {
            cert_pem: tls.cert_pem.clone(),
            key_pem: tls.key_pem.clone(),
        }),
        ..ServeOptions::default()
    };
    let (shared, addr) = start(policy(Duration::from_secs(1)), fleet, options).await;
    (shared, addr.port())
}

/// Registers `i-a` over `endpoint`; the error's text when the call fails.
async fn register(endpoint: Endpoint) -> Result<(), String> {
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut c = MonitorClient::with_interceptor(
        channel,
        iac_proto::token_interceptor(TOKEN).expect("token"),
    );
    c.register(registration("i-a"))
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn pinned(port: u16, ca_pem: &str) -> Endpoint {
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name(iac_proto::MONITOR_TLS_NAME),
        )
        .expect("tls config")
}

fn tls_refusals(shared: &Shared) -> u64 {
    shared.stats().refused_by[&Refusal::Tls]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_pinning_the_stacks_ca_get_through() {
    let stack = generate().expect("certificates");
    let (shared, port) = tls_monitor(&stack).await;

    // Plaintext to a TLS monitor: the handshake fails, counted; nothing registered.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).expect("endpoint");
    register(plain).await.expect_err("plaintext refused");
    wait_for("the plaintext connection counted", || {
        tls_refusals(&shared) >= 1
    })
    .await;

    // A client that trusts another CA (a wrong certificate, from its point of view).
    let other = generate().expect("another CA");
    let err = register(pinned(port, &other.ca_pem))
        .await
        .expect_err("another CA refused");
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
    wait_for("the untrusted handshake counted", || {
        tls_refusals(&shared) >= 2
    })
    .await;

    assert_eq!(shared.stats().registrations, 0);
    assert!(shared.members().iter().all(|m| m.registered_at.is_none()));

    // The stack's CA, pinned: in.
    register(pinned(port, &stack.ca_pem))
        .await
        .expect("a pinned client registers");
    assert_eq!(shared.stats().registrations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let expired = generate_between(2000, 2001).expect("certificates");
    let (shared, port) = tls_monitor(&expired).await;
    let err = register(pinned(port, &expired.ca_pem))
        .await
        .expect_err("expired refused");
    assert!(err.to_lowercase().contains("expired"), "{err}");
    wait_for("the handshake counted", || tls_refusals(&shared) >= 1).await;
    assert_eq!(shared.stats().registrations, 0);
    assert!(shared.members().iter().all(|m| m.registered_at.is_none()));
}

#[tokio::test]
async fn a_bad_key_fails_the_start() {
    let stack = generate().expect("certificates");
    let other = generate().expect("another");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let options = ServeOptions {
        tls: Some(TlsIdentity {
            cert_pem: stack.cert_pem.clone(),
            key_pem: "not a key".into(),
        }),
        ..ServeOptions::default()
    };
    let shared = Shared::new(policy(Duration::from_secs(1)), TOKEN);
    let fleet: Arc<dyn Fleet> = Arc::new(Listed(vec![]));
    let err = serve_with(
        shared,
        fleet,
        listener,
        None,
        &options,
        std::future::pending(),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("private key"), "{err}");
    // A key that does not match the certificate is refused too.
    assert!(iac_scaler::tls::acceptor(&stack.cert_pem, &other.key_pem).is_err());
}
