//! The monitor's admin API: a small HTTP/1.1 server (one request per connection) on a loopback
//! address, every request authenticated with the stack's token (`Authorization: Bearer …`).
//!
//! - `GET /members`: the pool as JSON (bounds, and each member's state, load and age).
//! - `POST /members`: launch one member (409 at the maximum).
//! - `DELETE /members/<id>`: drain, then terminate that member (409 at the minimum).
//! - `GET /metrics`: counters, the heartbeat-handling histogram and pool gauges, in the
//!   Prometheus text format.
//!
//! [`request`] is the matching client, used by `iac scale status|add|remove`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iac_proto::http::{self, json_string};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::fleet::Fleet;
use super::monitor::{health_name, AdminError, Shared};

/// Requests or responses larger than this are refused: nothing legitimate comes close.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Serves the admin API until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, fleet: Arc<dyn Fleet>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (shared, fleet) = (shared.clone(), fleet.clone());
                tokio::spawn(async move {
                    // A stuck client must not hold a task forever; a launch may take a while.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(120),
                        handle(stream, &shared, fleet.as_ref()),
                    )
                    .await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One parsed request.
struct HttpRequest {
    method: String,
    path: String,
    authorization: Option<String>,
}

async fn handle(mut stream: TcpStream, shared: &Shared, fleet: &dyn Fleet) {
    let (status, content_type, body) = match read_request(&mut stream).await {
        Ok(req) => route(&req, shared, fleet).await,
        Err(msg) => (400, JSON, json_error(msg)),
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

const JSON: &str = "application/json";
const PROMETHEUS: &str = "text/plain; version=0.0.4";

async fn route(
    req: &HttpRequest,
    shared: &Shared,
    fleet: &dyn Fleet,
) -> (u16, &'static str, String) {
    let authorized = req
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| shared.token_matches(t.trim()));
    if !authorized {
        shared.count_refused();
        tracing::warn!(method = %req.method, path = %req.path, "admin: refused a request without the token");
        return (401, JSON, json_error("missing or wrong bearer token"));
    }
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("GET", "/members") => (200, JSON, members_json(shared)),
        ("POST", "/members") => match shared.add_member(fleet).await {
            Ok(id) => (201, JSON, format!("{{\"launched\":{}}}", json_string(&id))),
            Err(e) => (admin_status(&e), JSON, json_error(&e.to_string())),
        },
        ("GET", "/metrics") => (200, PROMETHEUS, shared.prometheus()),
        ("DELETE", p) if p.starts_with("/members/") => {
            let id = &p["/members/".len()..];
            match shared.remove_member(id).await {
                Ok(()) => (202, JSON, format!("{{\"draining\":{}}}", json_string(id))),
                Err(e) => (admin_status(&e), JSON, json_error(&e.to_string())),
            }
        }
        (_, "/members" | "/metrics") => (405, JSON, json_error("method not allowed")),
        _ => (404, JSON, json_error("not found")),
    }
}

fn admin_status(e: &AdminError) -> u16 {
    match e {
        AdminError::AtMax(_) | AdminError::AtMin(_) | AdminError::Draining(_) => 409,
        AdminError::NotFound(_) => 404,
        AdminError::Fleet(_) => 502,
        AdminError::Poisoned => 500,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        502 => "Bad Gateway",
        _ => "Error",
    }
}

fn members_json(shared: &Shared) -> String {
    let now = shared.uptime();
    let views = shared.member_views();
    let active = views.iter().filter(|v| !v.draining).count();
    let mut out = format!(
        "{{\"pool\":{active},\"min\":{},\"max\":{},\"uptime_s\":{:.1},\"members\":[",
        shared.policy.min,
        shared.policy.max,
        now.as_secs_f64()
    );
    for (i, v) in views.iter().enumerate() {
        let m = &v.member;
        let state = if v.draining {
            "draining"
        } else {
            health_name(m.health)
        };
        let load = m.load.map_or("null".to_string(), |l| format!("{l:.1}"));
        let _ = write!(
            out,
            "{}{{\"id\":{},\"state\":\"{state}\",\"load\":{load},\"age_s\":{:.1},\"registered\":{}}}",
            if i == 0 { "" } else { "," },
            json_string(&m.id),
            now.saturating_sub(m.launched_at).as_secs_f64(),
            m.registered_at.is_some()
        );
    }
    out.push_str("]}");
    out
}

fn json_error(msg: &str) -> String {
    format!("{{\"error\":{}}}", json_string(msg))
}

async fn read_request(stream: &mut TcpStream) -> Result<HttpRequest, &'static str> {
    let msg = http::read_message(stream, MAX_MESSAGE).await?;
    let (method, path) = msg.start();
    if method.is_empty() || path.is_empty() {
        return Err("no request line");
    }
    // Requests carry no body worth reading: every route is addressed by method and path.
    Ok(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        authorization: msg.header("authorization").map(str::to_string),
    })
}

/// A failed admin call, from the client's side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the monitor's admin API at {addr}: {source} (is `iac scale --custom-monitor` running on this machine?)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin API at {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("bad answer from the admin API: {0}")]
    Protocol(String),
}

/// Sends one request to the admin API; returns the status code and the body.
pub async fn request(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
) -> Result<(u16, String), ClientError> {
    let call = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let msg = http::read_message(&mut stream, MAX_MESSAGE)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let status: u16 = msg
            .start()
            .1
            .parse()
            .map_err(|_| ClientError::Protocol(format!("no status in `{}`", msg.head)))?;
        let body = msg.body;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(150), call)
        .await
        .map_err(|_| ClientError::Timeout(addr))?
}
