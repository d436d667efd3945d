//! A raw WebSocket client over TCP: it writes hand-made frames and parses the server's frames,
//! inflating permessage-deflate ones (RSV1) with a context-takeover inflater like a browser's.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zlib_rs::{Inflate, InflateFlush};

use super::TestEnv;

pub const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A server frame as read: FIN, opcode, payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Rx {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Rx {
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, 1, "not a text frame: {self:?}");
        serde_json::from_slice(&self.payload).expect("JSON text frame")
    }

    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A raw WebSocket client: it writes bytes as given and parses what the server sends.
pub struct Raw {
    sock: TcpStream,
    buf: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
    /// The client's inflater (context takeover), when permessage-deflate was agreed.
    inflater: Option<Inflate>,
}

impl Raw {
    pub async fn connect(env: &TestEnv) -> Raw {
        Raw::connect_offering(env.server.port(), None).await
    }

    /// Connects with `offer` as the `Sec-WebSocket-Extensions` request header.
    pub async fn connect_offering(port: u16, offer: Option<&str>) -> Raw {
        let mut sock = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let request = match offer {
            None => UPGRADE.to_owned(),
            Some(o) => UPGRADE.replace(
                "\r\n\r\n",
                &format!("\r\nSec-WebSocket-Extensions: {o}\r\n\r\n"),
            ),
        };
        sock.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let extensions = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
            .map(|(_, v)| v.trim().to_owned());
        let inflater = extensions.as_ref().map(|e| {
            let bits = e
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("server_max_window_bits="))
                .next()
                .map_or(15, |b| b.parse().unwrap());
            Inflate::new(false, bits)
        });
        buf.drain(..head_end);
        Raw {
            sock,
            buf,
            extensions,
            inflater,
        }
    }

    /// The next data message (a single frame, as the server sends them), inflated when RSV1 is
    /// set; `None` at end of stream. Control frames are returned as they are.
    pub async fn recv_inflated(&mut self) -> Option<Rx> {
        let mut f = self.recv().await?;
        if f.rsv1 {
            let inf = self
                .inflater
                .as_mut()
                .expect("RSV1 without permessage-deflate");
            let mut input = std::mem::take(&mut f.payload);
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = vec![0u8; 2 << 20];
            let o0 = inf.total_out();
            inf.decompress(&input, &mut out, InflateFlush::SyncFlush)
                .expect("the server's compressed frame inflates");
            out.truncate((inf.total_out() - o0) as usize);
            f.payload = out;
        }
        Some(f)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    /// The next server frame, or `None` at end of stream; panics after 5 s.
    pub async fn recv(&mut self) -> Option<Rx> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout_at(deadline, self.sock.read(&mut chunk))
                .await
                .expect("no frame from the server within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Skips to the close frame and returns its code; asserts the server then ends the stream.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let f = self
                .recv()
                .await
                .expect("stream ended without a close frame");
            if f.opcode == 8 {
                return f.close_code();
            }
        }
    }
}

/// Parses one unmasked server frame from the start of `buf`.
fn parse(buf: &[u8]) -> Option<(Rx, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Some((
        Rx {
            fin: buf[0] & 0x80 != 0,
            rsv1: buf[0] & 0x40 != 0,
            opcode: buf[0] & 0x0F,
            payload,
        },
        at,
    ))
}

/// A masked client frame with the first byte `b0` (FIN, RSV, opcode).
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0xa1, 0x07, 0x3c, 0x5e];
    let mut out = vec![b0];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}
