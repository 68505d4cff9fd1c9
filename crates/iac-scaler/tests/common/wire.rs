//! A bare HTTP/2 client that writes frames itself: what tonic's client never does (open more
//! streams than the server allows, leave its pings unanswered) is how the server's limits show
//! from the outside.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Mutex};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// RST_STREAM codes.
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;

/// What a test waits for at most before it fails (nothing is timed: a healthy run takes a
/// fraction of it).
pub const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM frame.
    pub fn code(&self) -> Option<u32> {
        (self.kind == RST_STREAM && self.payload.len() == 4).then(|| {
            u32::from_be_bytes([
                self.payload[0],
                self.payload[1],
                self.payload[2],
                self.payload[3],
            ])
        })
    }
}

/// One HTTP/2 connection. A reader task acknowledges the server's SETTINGS, answers its PINGs
/// when asked to, and hands every frame (those too) to [`Wire::next`].
pub struct Wire {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    frames: mpsc::UnboundedReceiver<Frame>,
    next_stream: u32,
}

impl Wire {
    /// Connects, sends the preface and (empty) SETTINGS.
    pub async fn connect(addr: SocketAddr, answer_pings: bool) -> Wire {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut r, mut w) = tcp.into_split();
        // The preface goes first, before the reader may acknowledge the server's SETTINGS.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        w.write_all(&hello).await.expect("write the preface");
        let writer = Arc::new(Mutex::new(w));
        let (tx, frames) = mpsc::unbounded_channel();
        let answers = writer.clone();
        tokio::spawn(async move {
            loop {
                let mut head = [0u8; 9];
                if r.read_exact(&mut head).await.is_err() {
                    break;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if r.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let f = Frame {
                    kind: head[3],
                    flags: head[4],
                    stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                    payload,
                };
                let reply = match f.kind {
                    SETTINGS if f.flags & ACK == 0 => Some((SETTINGS, Vec::new())),
                    PING if f.flags & ACK == 0 && answer_pings => Some((PING, f.payload.clone())),
                    _ => None,
                };
                if let Some((kind, body)) = reply {
                    let mut w = answers.lock().await;
                    if w.write_all(&frame(kind, ACK, 0, &body)).await.is_err() {
                        break;
                    }
                }
                if tx.send(f).is_err() {
                    break;
                }
            }
        });
        Wire {
            writer,
            frames,
            next_stream: 1,
        }
    }

    pub async fn write(&self, bytes: &[u8]) {
        self.writer
            .lock()
            .await
            .write_all(bytes)
            .await
            .expect("write to the monitor");
    }

    pub async fn send(&self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.write(&frame(kind, flags, stream, payload)).await;
    }

    /// Opens a gRPC call to `method` of the monitor with the token; the request stays open
    /// (no END_STREAM) unless `message` is given, which is sent as its only message.
    pub async fn call(&mut self, method: &str, token: &str, message: Option<&[u8]>) -> u32 {
        self.call_with(method, token, &[], message).await
    }

    /// [`Wire::call`] with these headers added.
    pub async fn call_with(
        &mut self,
        method: &str,
        token: &str,
        extra: &[(&str, &str)],
        message: Option<&[u8]>,
    ) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut headers = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", &format!("/iac.scaler.v1.Monitor/{method}")),
            (":authority", "monitor"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("authorization", &format!("Bearer {token}")),
        ] {
            literal(&mut headers, name, value);
        }
        for (name, value) in extra {
            literal(&mut headers, name, value);
        }
        let mut bytes = frame(HEADERS, END_HEADERS, id, &headers);
        if let Some(m) = message {
            let mut body = vec![0u8];
            body.extend((m.len() as u32).to_be_bytes());
            body.extend(m);
            bytes.extend(frame(DATA, END_STREAM, id, &body));
        }
        self.write(&bytes).await;
        id
    }

    /// The next frame; `None` once the server closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(PATIENCE, self.frames.recv())
            .await
            .expect("the monitor said nothing for a minute")
    }

    /// Frames until `f` is the one wanted; panics if the connection ends first, or if it takes
    /// longer than [`PATIENCE`] (keepalive pings alone never end the wait).
    pub async fn until(&mut self, what: &str, mut wanted: impl FnMut(&Frame) -> bool) -> Frame {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                match self.frames.recv().await {
                    Some(f) if wanted(&f) => return f,
                    Some(_) => {}
                    None => panic!("the connection closed while waiting for {what}"),
                }
            }
        });
        found
            .await
            .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
    }

    /// Sends a PING and waits for its answer: every frame written before it has been read by
    /// the server. Frames that arrive meanwhile are returned.
    pub async fn sync(&mut self) -> Vec<Frame> {
        let tag = *b"synced!!";
        self.send(PING, 0, 0, &tag).await;
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(f) if f.kind == PING && f.flags & ACK != 0 && f.payload == tag => return seen,
                Some(f) => seen.push(f),
                None => panic!("the connection closed before the PING was answered: {seen:?}"),
            }
        }
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK literal header field without indexing, new name, no Huffman coding.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        integer(out, s.len(), 7);
        out.extend(s.as_bytes());
    }
}

/// An HPACK integer with an `n`-bit prefix (the prefix's other bits zero).
fn integer(out: &mut Vec<u8>, mut v: usize, n: u32) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(v as u8);
        return;
    }
    out.push(max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}
