//! The little HTTP/1.1 the agent's and the monitor's loopback admin endpoints speak (one request
//! per connection, `content-length` bodies), shared so neither needs an HTTP framework.

use std::fmt::Write as _;

use tokio::io::{AsyncRead, AsyncReadExt};

/// One request or response: the head (start line and headers) and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub head: String,
    pub body: Vec<u8>,
}

impl Message {
    /// The start line's words: method and path of a request, version and status of a response.
    pub fn start(&self) -> (&str, &str) {
        let mut words = self
            .head
            .split("\r\n")
            .next()
            .unwrap_or("")
            .split_whitespace();
        (words.next().unwrap_or(""), words.next().unwrap_or(""))
    }

    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The most a request or response head (start line and headers) may take.
pub const MAX_HEAD: usize = 8 * 1024;

/// Reads one message: a head of at most [`MAX_HEAD`] bytes, then as much body as
/// `content-length` says (none without it), at most `max_body` bytes.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_body: usize,
) -> Result<Message, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("incomplete message");
        }
        // Only the new bytes (and the three before them, where a terminator may start) are
        // searched: rescanning the whole buffer on every chunk is quadratic.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = find(&buf[from..], b"\r\n\r\n") {
            let end = from + pos;
            if end > MAX_HEAD {
                return Err("headers too large");
            }
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err("headers too large");
        }
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| "headers are not UTF-8")?
        .to_string();
    let mut msg = Message {
        head,
        body: buf[end + 4..].to_vec(),
    };
    let length = match msg.header("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| "bad content-length")?,
        None => 0,
    };
    if length > max_body {
        return Err("body too large");
    }
    while msg.body.len() < length {
        let n = stream.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("incomplete body");
        }
        msg.body.extend_from_slice(&chunk[..n]);
    }
    msg.body.truncate(length);
    Ok(msg)
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[tokio::test]
    async fn messages_are_read_up_to_their_length() {
        let raw = b"POST /metric HTTP/1.1\r\nContent-Length: 5\r\nX: y\r\n\r\ncpu=9EXTRA";
        let m = read_message(&mut &raw[..], 1024).await.expect("message");
        assert_eq!(m.start(), ("POST", "/metric"));
        assert_eq!(m.header("x"), Some("y"));
        assert_eq!(m.body, b"cpu=9");
        let big = b"GET / HTTP/1.1\r\ncontent-length: 99999\r\n\r\n";
        assert_eq!(
            read_message(&mut &big[..], 1024).await,
            Err("body too large")
        );
        assert_eq!(
            read_message(&mut &b"GET / HTTP/1.1\r\n"[..], 1024).await,
            Err("incomplete message")
        );
        // Headers past 8 KiB are refused, whatever the body limit.
        let mut long = b"GET / HTTP/1.1\r\nx: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            read_message(&mut &long[..], 1 << 20).await,
            Err("headers too large")
        );
    }

    /// Delivers its bytes a few at a time, as a slow client would.
    struct Trickle<'a>(&'a [u8], usize);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            let (now, rest) = self.0.split_at(n);
            buf.put_slice(now);
            self.0 = rest;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_terminator_split_across_reads_is_found() {
        let raw = b"GET /status HTTP/1.1\r\nA: b\r\n\r\n";
        for step in 1..6 {
            let m = read_message(&mut Trickle(raw, step), 0)
                .await
                .expect("message");
            assert_eq!(m.start(), ("GET", "/status"), "step {step}");
        }
    }
}
