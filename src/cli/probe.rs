//! HTTP readiness probe after `up` (never used with an endpoint override).

use std::time::Duration;

use anyhow::anyhow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::apply::wait::{self, Backoff, Poll};
use crate::apply::Reporter;
use crate::plan::ResourceId;

/// The status code of one `GET path` to `ip:port`, or an error.
async fn get_status(ip: &str, port: u16, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect((ip, port))).await??;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: iac-probe\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// Waits until the app answers 2xx/3xx through nginx on the instance.
pub async fn http_ready(
    ip: &str,
    port: u16,
    host: Option<&str>,
    path: &str,
    deadline: Duration,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let host = host.unwrap_or(ip);
    let what = format!("http://{host}{path} to answer");
    let id = ResourceId::new("app");
    wait::until(
        &id,
        &what,
        deadline,
        Backoff {
            first: Duration::from_secs(5),
            fraction: 0.25,
            max: Duration::from_secs(15),
        },
        reporter,
        || async {
            Ok::<_, std::convert::Infallible>(match get_status(ip, port, host, path).await {
                Ok(code) if (200..400).contains(&code) => Poll::Ready(()),
                Ok(code) => Poll::Pending(format!("HTTP {code}")),
                Err(e) => Poll::Pending(e.to_string()),
            })
        },
    )
    .await
    .map_err(|e| anyhow!("{e}; the instance is up, check /var/log/iac-bootstrap.log on it"))
}
