//! The local admin endpoint: a deliberately tiny HTTP/1.1 server (one request per connection)
//! on a loopback address, so the agent needs no HTTP framework. Every request must carry the
//! agent's token (`Authorization: Bearer <token>`, the token the agent itself was given):
//! loopback alone would let any local user set the load or deregister the instance.
//!
//! - `POST /metric` with `{"cpu": 85.5}` or `cpu=85.5`: override the reported CPU.
//! - `DELETE /metric`: clear the override.
//! - `POST /unregister`: deregister and exit.
//! - `GET /status`: JSON with the member id, last load and connection state.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::{Shared, Stop};

/// Request bodies larger than this are refused (headers are capped at 8 KiB by the reader):
/// nothing legitimate comes close.
const MAX_BODY: usize = 16 * 1024;

/// Serves the admin endpoint until the process exits.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    // A stuck client must not hold a task forever.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), handle(stream, shared)).await;
                });
            }
            Err(e) => {
                crate::log!("admin: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, shared: Arc<Shared>) {
    let (status, body) = match read_request(&mut stream).await {
        Ok(req) if !authorized(req.authorization.as_deref(), &shared.token) => {
            crate::log!("admin: refused a request without the token");
            (401, json_error("missing or wrong bearer token"))
        }
        Ok(req) => route(&req.method, &req.path, &req.body, &shared),
        Err(msg) => (400, json_error(msg)),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

async fn read_request(stream: &mut TcpStream) -> Result<Request, &'static str> {
    let msg = iac_proto::http::read_message(stream, MAX_BODY).await?;
    let (method, path) = msg.start();
    if method.is_empty() || path.is_empty() {
        return Err("no request line");
    }
    let (method, path) = (method.to_string(), path.to_string());
    let authorization = msg.header("authorization").map(str::to_string);
    let body = String::from_utf8(msg.body).map_err(|_| "body is not UTF-8")?;
    Ok(Request {
        method,
        path,
        authorization,
        body,
    })
}

/// Whether the `Authorization` header carries `token` (constant time).
fn authorized(header: Option<&str>, token: &str) -> bool {
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| {
            !token.is_empty() && iac_proto::constant_time_eq(t.trim().as_bytes(), token.as_bytes())
        })
}

fn route(method: &str, path: &str, body: &str, shared: &Shared) -> (u16, String) {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("POST" | "PUT", "/metric") => match parse_cpu(body) {
            Some(cpu) => {
                shared.set_override(Some(cpu));
                crate::log!("admin: cpu override set to {cpu}");
                (200, format!("{{\"override\":{cpu}}}"))
            }
            None => (
                400,
                json_error("expected {\"cpu\": N} or cpu=N with N in [0, 100]"),
            ),
        },
        ("DELETE", "/metric") => {
            shared.set_override(None);
            crate::log!("admin: cpu override cleared");
            (200, "{\"override\":null}".to_string())
        }
        ("POST", "/unregister") => {
            shared.request_stop(Stop::Admin);
            (200, "{\"unregistering\":true}".to_string())
        }
        ("GET", "/status") => (200, shared.status_json()),
        (_, "/metric" | "/unregister" | "/status") => (405, json_error("method not allowed")),
        _ => (404, json_error("not found")),
    }
}

fn json_error(msg: &str) -> String {
    format!("{{\"error\":{}}}", iac_proto::http::json_string(msg))
}

/// Accepts `{"cpu": 85.5}` (any whitespace) or a form body `cpu=85.5`; the value must be a
/// finite percentage.
pub fn parse_cpu(body: &str) -> Option<f64> {
    let body = body.trim();
    let number = if let Some(inner) = body.strip_prefix('{').and_then(|b| b.strip_suffix('}')) {
        // A single-key object is all we accept, so a split on the first ':' suffices.
        let (key, value) = inner.split_once(':')?;
        if key.trim() != "\"cpu\"" {
            return None;
        }
        value.trim()
    } else {
        body.split('&')
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.trim() == "cpu"))?
            .1
            .trim()
    };
    let v: f64 = number.parse().ok()?;
    (v.is_finite() && (0.0..=100.0).contains(&v)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::{authorized, parse_cpu};

    #[test]
    fn only_the_bearer_token_authorizes() {
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        for h in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
        ] {
            assert!(!authorized(h, "s3cret"), "{h:?}");
        }
        assert!(!authorized(Some("Bearer "), ""));
    }

    #[test]
    fn metric_bodies() {
        assert_eq!(parse_cpu("{\"cpu\": 85.5}"), Some(85.5));
        assert_eq!(parse_cpu(" {\"cpu\":0} \n"), Some(0.0));
        assert_eq!(parse_cpu("cpu=85.5"), Some(85.5));
        assert_eq!(parse_cpu("x=1&cpu=100"), Some(100.0));
        for bad in [
            "",
            "{}",
            "{\"mem\": 5}",
            "{\"cpu\": \"x\"}",
            "cpu=101",
            "cpu=-1",
            "cpu=NaN",
            "85",
        ] {
            assert_eq!(parse_cpu(bad), None, "{bad}");
        }
    }
}
