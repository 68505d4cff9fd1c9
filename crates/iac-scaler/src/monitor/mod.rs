//! The monitor: a gRPC server the agents register with and stream heartbeats to, a membership
//! table driven by heartbeat deadlines, and a control loop that applies the pure policy through a
//! [`Fleet`]. Agents push; the monitor never connects to instance addresses.
//!
//! Split by responsibility: [`state`] (the table and what the admin API may do to it),
//! [`service`] (the gRPC handlers) and [`control`] (the control loop); this module starts them.

mod control;
mod guard;
mod service;
mod state;

use std::sync::Arc;

use tonic::codegen::http;

pub use super::stats::StatsSnapshot;
pub use control::{run, tick};
pub use guard::Limits;
pub use service::MonitorService;
pub use state::{
    health_name, timeline_csv, timeline_report, AdminError, MemberView, Pool, Shared, TimelineRow,
};

use super::fleet::Fleet;

/// Failure to start the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot list the fleet's instances, so the pool cannot be rebuilt without risking launching twice: {0}")]
    List(String),
    #[error("the admin endpoint must listen on a loopback address, not {0}")]
    AdminNotLoopback(std::net::SocketAddr),
    #[error("cannot read the listening address: {0}")]
    Io(#[from] std::io::Error),
    #[error("the monitor's TLS certificate or key is unusable: {0}")]
    Tls(String),
}

/// The monitor's TLS identity: its certificate (chain) and private key, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(..)")
    }
}

/// How the gRPC endpoint is served.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub limits: Limits,
    /// TLS (rustls); `None` serves plaintext, which only the local fleet may use.
    pub tls: Option<TlsIdentity>,
}

/// The tonic server with the monitor's limits: what `serve` runs, and what tests and
/// benchmarks that drive the service directly should run too. (TLS is done before tonic sees a
/// connection: see [`crate::tls::incoming`].)
pub fn grpc_server(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.streams_per_connection)
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .http2_max_header_list_size(limits.max_header_list)
        .tcp_nodelay(true)
}

/// The gRPC service with the decoding limit of `limits`. A unary request beyond that limit is
/// refused by tonic before any handler runs; it is counted (and logged) as oversized all the
/// same.
pub fn grpc_service(svc: MonitorService, limits: &Limits) -> CountingUndecodable {
    let shared = svc.shared.clone();
    CountingUndecodable {
        inner: iac_proto::MonitorServer::new(svc).max_decoding_message_size(limits.max_decoded),
        shared,
    }
}

/// The monitor's gRPC service, counting the requests tonic refused to decode: their answer is
/// a trailers-only `OUT_OF_RANGE`, which no handler of the monitor ever gives. (On a heartbeat
/// stream, the handler sees the decoding error itself and counts it.)
#[derive(Clone)]
pub struct CountingUndecodable {
    inner: iac_proto::MonitorServer<MonitorService>,
    shared: Arc<Shared>,
}

impl tonic::server::NamedService for CountingUndecodable {
    const NAME: &'static str =
        <iac_proto::MonitorServer<MonitorService> as tonic::server::NamedService>::NAME;
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<B> tonic::codegen::Service<http::Request<B>> for CountingUndecodable
where
    iac_proto::MonitorServer<MonitorService>: tonic::codegen::Service<
        http::Request<B>,
        Response = HttpResponse,
        Error = std::convert::Infallible,
    >,
    <iac_proto::MonitorServer<MonitorService> as tonic::codegen::Service<http::Request<B>>>::Future:
        Send + 'static,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<HttpResponse, std::convert::Infallible>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let answer = self.inner.call(req);
        let shared = self.shared.clone();
        Box::pin(async move {
            let response = answer.await?;
            let code = response.headers().get("grpc-status");
            if code.is_some_and(|c| c.as_bytes() == b"11") {
                shared.refuse(crate::stats::Refusal::Oversized, &peer);
            }
            Ok(response)
        })
    }
}

/// [`serve_with`] plaintext and with the default limits (the local fleet, tests, benchmarks).
pub async fn serve(
    shared: Arc<Shared>,
    fleet: Arc<dyn Fleet>,
    grpc: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MonitorError> {
    serve_with(
        shared,
        fleet,
        grpc,
        admin,
        &ServeOptions::default(),
        shutdown,
    )
    .await
}

/// Rebuilds the pool from what the fleet runs before deciding anything, then serves gRPC (and
/// the admin API, when given a loopback listener) and runs the control loop until `shutdown`
/// resolves.
pub async fn serve_with(
    shared: Arc<Shared>,
    fleet: Arc<dyn Fleet>,
    grpc: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    options: &ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MonitorError> {
    if let Some(a) = &admin {
        let addr = a.local_addr()?;
        if !addr.ip().is_loopback() {
            return Err(MonitorError::AdminNotLoopback(addr));
        }
    }
    // A bad certificate or key fails the start, before anything is adopted or decided.
    let acceptor = match &options.tls {
        Some(id) => Some(
            crate::tls::acceptor(&id.cert_pem, &id.key_pem)
                .map_err(|e| MonitorError::Tls(e.to_string()))?,
        ),
        None => None,
    };
    let running = fleet
        .list()
        .await
        .map_err(|e| MonitorError::List(e.to_string()))?;
    if !running.is_empty() {
        tracing::info!(instances = ?running, "adopted the fleet's running instances");
    }
    shared.adopt(&running);
    let svc = MonitorService::with_limits(shared.clone(), fleet.clone(), options.limits.clone());
    let router = grpc_server(&options.limits).add_service(grpc_service(svc, &options.limits));
    let server = match acceptor {
        None => tokio::spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
        ),
        Some(acceptor) => {
            let s = shared.clone();
            let refused: Arc<dyn Fn(&str) + Send + Sync> =
                Arc::new(move |peer: &str| s.refuse(crate::stats::Refusal::Tls, peer));
            tokio::spawn(router.serve_with_incoming(crate::tls::incoming(grpc, acceptor, refused)))
        }
    };
    let admin_task =
        admin.map(|l| tokio::spawn(super::admin::serve(l, shared.clone(), fleet.clone())));
    run(shared, fleet, shutdown).await;
    // Open heartbeat streams would hold a graceful shutdown forever: stop at once, the agents
    // reconnect to the next monitor.
    server.abort();
    if let Some(t) = admin_task {
        t.abort();
    }
    Ok(())
}
