//! HTTP readiness probe after `up` (never used with an endpoint override): one `GET`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status code of one `GET path` to `ip:port`, or an error.
pub(super) async fn get_status(
    ip: &str,
    port: u16,
    host: &str,
    path: &str,
) -> std::io::Result<u16> {
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
