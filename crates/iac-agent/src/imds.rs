//! The instance id from EC2's instance metadata service, IMDSv2 (session token first), over a
//! hand-written HTTP/1.1 exchange: only used when `--instance-id` is absent.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMDS: &str = "169.254.169.254:80";

async fn request(raw: String) -> Result<String, String> {
    let mut stream = TcpStream::connect(IMDS)
        .await
        .map_err(|e| format!("connect {IMDS}: {e}"))?;
    stream
        .write_all(raw.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // `connection: close` below, so the body ends at EOF; cap it, ids and tokens are tiny.
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8(response).map_err(|_| "non-UTF-8 response".to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    Ok(body.trim().to_string())
}

/// PUT /latest/api/token, then GET /latest/meta-data/instance-id with that token.
pub async fn instance_id() -> Result<String, String> {
    let fetch = async {
        let token = request(
            "PUT /latest/api/token HTTP/1.1\r\nhost: 169.254.169.254\r\n\
             x-aws-ec2-metadata-token-ttl-seconds: 300\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_string(),
        )
        .await?;
        let id = request(format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nhost: 169.254.169.254\r\n\
             x-aws-ec2-metadata-token: {token}\r\nconnection: close\r\n\r\n"
        ))
        .await?;
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(format!("unexpected instance id {id:?}"));
        }
        Ok(id)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| "instance metadata service timed out".to_string())?
        .map_err(|e| format!("instance metadata service: {e}"))
}
