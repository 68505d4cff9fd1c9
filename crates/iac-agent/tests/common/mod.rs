//! Test harness: an in-test tonic `Monitor` server on loopback (its own runtime, so it can be
//! killed outright and restarted on the same port) and a wrapper around the real agent binary.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iac_proto::{
    check_token, AckDrainReply, AckDrainRequest, DeregisterReply, DeregisterRequest, Directive,
    HeartbeatReply, HeartbeatRequest, Monitor, MonitorServer, RegisterReply, RegisterRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// The token the tests give the agent (and the admin endpoint therefore requires).
pub const TOKEN: &str = "test-token-0123456789";

/// Everything the test monitor saw.
#[derive(Default)]
pub struct Seen {
    pub registers: Vec<RegisterRequest>,
    /// Calls refused because of a wrong or missing token.
    pub refused: usize,
    pub heartbeats: Vec<(HeartbeatRequest, Instant)>,
    pub deregisters: Vec<DeregisterRequest>,
    pub acks: Vec<AckDrainRequest>,
    /// The reply side of the latest heartbeat stream, to push directives.
    replies: Option<mpsc::Sender<Result<HeartbeatReply, Status>>>,
}

struct Svc {
    token: String,
    interval_ms: u32,
    seen: Arc<Mutex<Seen>>,
    next: AtomicU64,
}

impl Svc {
    fn auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        check_token(req, &self.token).inspect_err(|_| self.seen.lock().unwrap().refused += 1)
    }
}

#[tonic::async_trait]
impl Monitor for Svc {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        self.auth(&req)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.seen.lock().unwrap().registers.push(req.into_inner());
        Ok(Response::new(RegisterReply {
            member_id: format!("m-{n}"),
            heartbeat_interval_ms: self.interval_ms,
            accepted: true,
            session: format!("session-{n}"),
        }))
    }

    type HeartbeatStream = ReceiverStream<Result<HeartbeatReply, Status>>;

    async fn heartbeat(
        &self,
        req: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        self.auth(&req)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(8);
        self.seen.lock().unwrap().replies = Some(tx);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(hb)) = inbound.message().await {
                seen.lock().unwrap().heartbeats.push((hb, Instant::now()));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterReply>, Status> {
        self.auth(&req)?;
        self.seen.lock().unwrap().deregisters.push(req.into_inner());
        Ok(Response::new(DeregisterReply {}))
    }

    async fn ack_drain(
        &self,
        req: Request<AckDrainRequest>,
    ) -> Result<Response<AckDrainReply>, Status> {
        self.auth(&req)?;
        self.seen.lock().unwrap().acks.push(req.into_inner());
        Ok(Response::new(AckDrainReply {}))
    }
}

pub struct TestMonitor {
    rt: Option<tokio::runtime::Runtime>,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

impl TestMonitor {
    pub fn start(token: &str, interval_ms: u32) -> Self {
        Self::start_on(0, token, interval_ms)
    }

    /// Starts on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16, token: &str, interval_ms: u32) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // The previous server on this port may still be releasing it: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bind 127.0.0.1:{port}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let svc = Svc {
            token: token.to_string(),
            interval_ms,
            seen: seen.clone(),
            next: AtomicU64::new(1),
        };
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(MonitorServer::new(svc))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        TestMonitor {
            rt: Some(rt),
            addr,
            seen,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the server and every connection (as a crashed monitor would).
    pub fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    pub fn send_directive(&self, directive: Directive) {
        self.send_reply(directive, 0);
    }

    /// Pushes one reply on the latest heartbeat stream (interval 0: unchanged).
    pub fn send_reply(&self, directive: Directive, heartbeat_interval_ms: u32) {
        let tx = self
            .seen
            .lock()
            .unwrap()
            .replies
            .clone()
            .expect("no heartbeat stream open");
        tx.try_send(Ok(HeartbeatReply {
            directive: directive as i32,
            heartbeat_interval_ms,
        }))
        .expect("send reply");
    }

    pub fn with<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.seen.lock().unwrap())
    }
}

impl Drop for TestMonitor {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Polls `f` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real agent binary, with its stderr collected.
pub struct Agent {
    child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// Spawns the agent with the token in IAC_AGENT_TOKEN (when given) and fast backoff; an
    /// http:// monitor (the in-test one) is allowed with `--allow-plaintext`.
    /// `IAC_AGENT_BIN` runs another build of it (e.g. the release binary, to measure memory).
    pub fn spawn(token: Option<&str>, args: &[&str]) -> Agent {
        let plaintext = args.iter().any(|a| a.starts_with("http://"));
        let mut all = args.to_vec();
        if plaintext {
            all.push("--allow-plaintext");
        }
        Agent::spawn_exactly(token, &all)
    }

    /// Spawns the agent with exactly these arguments (and fast backoff).
    pub fn spawn_exactly(token: Option<&str>, args: &[&str]) -> Agent {
        let bin = std::env::var("IAC_AGENT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_iac-agent").to_string());
        let mut cmd = Command::new(bin);
        cmd.args(["--backoff-initial-ms", "100", "--backoff-max-ms", "500"])
            .args(args)
            .env_remove("IAC_AGENT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("IAC_AGENT_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("spawn iac-agent");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Agent { child, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// The admin address the agent logged (for `--admin 127.0.0.1:0`).
    pub fn admin_addr(&self) -> String {
        const MARK: &str = "admin endpoint listening on ";
        assert!(
            self.wait_log(MARK, Duration::from_secs(10)),
            "no admin endpoint:\n{}",
            self.log()
        );
        let log = self.log();
        let rest = &log[log.find(MARK).unwrap() + MARK.len()..];
        rest.lines().next().unwrap().trim().to_string()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to the admin endpoint with the agent's token; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(
        addr,
        &format!("authorization: Bearer {TOKEN}\r\n"),
        method,
        path,
        body,
    )
}

/// One HTTP/1.1 request with these extra header lines (each ending in CRLF).
pub fn http_with(addr: &str, headers: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}
