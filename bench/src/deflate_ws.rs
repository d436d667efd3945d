//! A minimal client WebSocket for browser-like clients (issue 19): it offers
//! `permessage-deflate; client_max_window_bits` in the handshake, as every browser does, and
//! inflates what the server compresses (RFC 7692). tokio-tungstenite cannot read frames with
//! RSV1 set, hence this client; the tungstenite clients stay the default.
//!
//! What it does: the HTTP upgrade (the answer's `Sec-WebSocket-Accept` is checked, its
//! `Sec-WebSocket-Extensions` parsed: absent = not negotiated), masked client frames (always
//! uncompressed: RSV1 is per message, so a client may send plain messages after negotiating),
//! a frame reader accepting RSV1 on the first frame of a data message when negotiated,
//! fragmentation, ping -> pong, close. Compressed messages are inflated with one raw-deflate
//! context per connection (context takeover), reset after each message only when the server
//! announced `server_no_context_takeover`. It also counts the bytes on the wire of every data
//! message (frame headers + payloads as read from the socket).
//!
//! Window size: zlib (and zlib-rs) cannot inflate with an 8-bit window through flate2, whose
//! `new_with_window_bits` accepts 9..=15; and zlib's deflater, asked for 8, silently uses 9 (so
//! a server that announces 8 may send distances up to 512 anyway). `server_max_window_bits=8`
//! therefore inflates with 9 bits (a larger window than the sender's is always safe).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use flate2::{Decompress, FlushDecompress, Status};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// What a browser offers (Chrome and Firefox send exactly this).
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Largest message accepted (after inflating), like the server's 1 MiB limit with margin.
const MAX_MESSAGE: usize = 16 << 20;
/// The tail a sender strips from each compressed message (RFC 7692 7.2.1) and the receiver
/// appends before inflating (7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The permessage-deflate parameters a server answered with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deflate {
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
}

impl Deflate {
    /// The window the inflater needs: the server's (default 15), at least 9 (see the module doc).
    pub fn inflate_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15).max(9)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "server_max_window_bits": self.server_max_window_bits,
            "client_max_window_bits": self.client_max_window_bits,
            "server_no_context_takeover": self.server_no_context_takeover,
            "client_no_context_takeover": self.client_no_context_takeover,
        })
    }
}

fn window_bits(name: &str, value: Option<&str>) -> Result<u8, String> {
    let v = value.ok_or_else(|| format!("{name} without a value"))?;
    // RFC 7692 7.1.2: 1*DIGIT without a leading zero, 8..=15.
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name}={v} is not a window size"));
    }
    match v.parse::<u8>() {
        Ok(n @ 8..=15) => Ok(n),
        _ => Err(format!("{name}={v} is outside 8..15")),
    }
}

/// Parses the `Sec-WebSocket-Extensions` values of a server's answer to [`OFFER`] (RFC 7692
/// 7.1): `Ok(None)` when absent or empty (declined), `Ok(Some(params))` when accepted, `Err` for
/// an answer a client must fail the connection on (an extension not offered, a parameter twice,
/// an unknown parameter, a bad window size, `client_max_window_bits` without a value).
pub fn parse_answer(values: &[&str]) -> Result<Option<Deflate>, String> {
    let mut found: Option<Deflate> = None;
    for element in values.iter().flat_map(|v| v.split(',')) {
        let mut parts = element.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        if name.is_empty() {
            continue;
        }
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            return Err(format!(
                "the server accepted an extension we did not offer: {name}"
            ));
        }
        if found.is_some() {
            return Err("permessage-deflate answered twice".into());
        }
        let mut d = Deflate::default();
        let mut seen: Vec<String> = Vec::new();
        for param in parts {
            if param.is_empty() {
                continue;
            }
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let key = key.to_ascii_lowercase();
            if seen.contains(&key) {
                return Err(format!("parameter {key} twice"));
            }
            match key.as_str() {
                "server_no_context_takeover" | "client_no_context_takeover" => {
                    if value.is_some() {
                        return Err(format!("{key} takes no value"));
                    }
                    if key.starts_with("server") {
                        d.server_no_context_takeover = true;
                    } else {
                        d.client_no_context_takeover = true;
                    }
                }
                "server_max_window_bits" => {
                    d.server_max_window_bits = Some(window_bits(&key, value)?)
                }
                "client_max_window_bits" => {
                    d.client_max_window_bits = Some(window_bits(&key, value)?)
                }
                _ => return Err(format!("unknown permessage-deflate parameter {key}")),
            }
            seen.push(key);
        }
        found = Some(d);
    }
    Ok(found)
}

/// A masked client frame (FIN set, RSV bits clear: never compressed).
pub fn encode_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// What the reader produced from the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message (inflated if it was compressed).
    Data {
        text: bool,
        payload: Vec<u8>,
        /// Frame headers + payloads of its frames, as received.
        wire_bytes: u64,
        compressed: bool,
    },
    Ping(Vec<u8>),
    Pong,
    /// A close frame: its status code, if any, and reason.
    Close(Option<u16>, String),
}

/// The frame reader and message assembler, without I/O (so it can be tested on bytes).
pub struct Reader {
    deflate: Option<Deflate>,
    inflater: Option<Decompress>,
    buf: Vec<u8>,
    start: usize,
    /// The data message being assembled: opcode of its first frame, RSV1, wire bytes so far.
    msg: Option<(u8, bool, u64)>,
    msg_payload: Vec<u8>,
}

impl Reader {
    pub fn new(deflate: Option<Deflate>) -> Reader {
        Reader {
            deflate,
            inflater: None,
            buf: Vec::with_capacity(8 * 1024),
            start: 0,
            msg: None,
            msg_payload: Vec::new(),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Drops consumed bytes and leaves room to read into.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
    }

    /// The next event, `Ok(None)` when more bytes are needed, `Err` on a protocol violation or
    /// a message that does not inflate (the connection must then be failed).
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        loop {
            let avail = &self.buf[self.start..];
            if avail.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (avail[0], avail[1]);
            let (fin, rsv1, rsv23, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x30, b0 & 0x0f);
            if b1 & 0x80 != 0 {
                return Err("masked frame from the server".into());
            }
            let (len, head) = match b1 & 0x7f {
                126 if avail.len() >= 4 => (u64::from(u16::from_be_bytes([avail[2], avail[3]])), 4),
                127 if avail.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&avail[2..10]);
                    (u64::from_be_bytes(b), 10)
                }
                126 | 127 => return Ok(None),
                n => (u64::from(n), 2),
            };
            if rsv23 != 0 {
                return Err(format!("frame with RSV2/RSV3 set (byte 0 = {b0:#04x})"));
            }
            let control = opcode & 0x08 != 0;
            if control && (!fin || len > 125) {
                return Err(format!("bad control frame (opcode {opcode}, length {len})"));
            }
            if len > MAX_MESSAGE as u64 {
                return Err(format!("frame of {len} bytes"));
            }
            let total = head + len as usize;
            if avail.len() < total {
                if self.buf.capacity() - self.buf.len() < total - avail.len() {
                    self.buf.reserve(total);
                }
                return Ok(None);
            }
            let payload = &avail[head..total];
            let wire = total as u64;
            if control {
                if rsv1 {
                    return Err(format!("control frame (opcode {opcode}) with RSV1"));
                }
                let event = match opcode {
                    0x8 => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        let reason =
                            String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                        Event::Close(code, reason)
                    }
                    0x9 => Event::Ping(payload.to_vec()),
                    0xA => Event::Pong,
                    _ => return Err(format!("unknown control opcode {opcode}")),
                };
                self.start += total;
                return Ok(Some(event));
            }
            match (opcode, &mut self.msg) {
                (0x1 | 0x2, None) => {
                    if rsv1 && self.deflate.is_none() {
                        return Err("RSV1 set but permessage-deflate was not negotiated".into());
                    }
                    self.msg = Some((opcode, rsv1, wire));
                    self.msg_payload.clear();
                }
                (0x0, Some((_, _, w))) => {
                    if rsv1 {
                        return Err("RSV1 on a continuation frame".into());
                    }
                    *w += wire;
                }
                (0x1 | 0x2, Some(_)) => {
                    return Err("new data frame inside a fragmented message".into());
                }
                (0x0, None) => return Err("continuation frame without a message".into()),
                _ => return Err(format!("unknown data opcode {opcode}")),
            }
            if self.msg_payload.len() + payload.len() > MAX_MESSAGE {
                return Err("message too large".into());
            }
            self.msg_payload.extend_from_slice(payload);
            self.start += total;
            if !fin {
                continue;
            }
            let (op, compressed, wire_bytes) = self.msg.take().unwrap_or((opcode, false, wire));
            let payload = if compressed {
                self.inflate()?
            } else {
                std::mem::take(&mut self.msg_payload)
            };
            return Ok(Some(Event::Data {
                text: op == 0x1,
                payload,
                wire_bytes,
                compressed,
            }));
        }
    }

    /// Inflates the assembled compressed message (RFC 7692 7.2.2).
    fn inflate(&mut self) -> Result<Vec<u8>, String> {
        let params = self
            .deflate
            .as_ref()
            .expect("compressed only when negotiated");
        let no_takeover = params.server_no_context_takeover;
        let bits = params.inflate_window_bits();
        // Created at the first compressed message: thousands of idle clients need none.
        let d = self
            .inflater
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        self.msg_payload.extend_from_slice(&TAIL);
        let out = inflate_into(d, &self.msg_payload);
        self.msg_payload.clear();
        if no_takeover {
            d.reset(false);
        }
        out
    }
}

/// Inflates `input` (a message + [`TAIL`]) with a sync flush, keeping `d`'s window.
fn inflate_into(d: &mut Decompress, mut input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len() * 4 + 64);
    loop {
        if out.capacity() - out.len() < 1024 {
            if out.len() >= MAX_MESSAGE {
                return Err("inflated message too large".into());
            }
            out.reserve(out.len().max(4096));
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|e| format!("inflate: {e}"))?;
        let used = (d.total_in() - in0) as usize;
        let made = d.total_out() - out0;
        input = &input[used..];
        if status == Status::StreamEnd {
            // A block with BFINAL set ended the stream: the next message starts a new one.
            d.reset(false);
            return Ok(out);
        }
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
        if used == 0 && made == 0 {
            return Err("inflate made no progress (truncated or corrupt data)".into());
        }
    }
}

/// Per-message figures of the last data message read.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageStats {
    pub wire_bytes: u64,
    /// The message's (inflated) length.
    pub payload_bytes: u64,
    pub compressed: bool,
}

/// A connection: the stream, the reader and what was negotiated.
pub struct DeflateWs {
    stream: TcpStream,
    reader: Reader,
    /// The raw `Sec-WebSocket-Extensions` answer (`None`: absent).
    answer: Option<String>,
    offered: bool,
    pub last: MessageStats,
}

/// Splits `ws://host[:port]/path` into the Host header and the path.
fn host_and_path(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("only ws:// URLs are supported: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

impl DeflateWs {
    /// TCP connect + HTTP upgrade; `offer` sends [`OFFER`] (else no extension is offered, and
    /// the client is a plain one that counts wire bytes).
    pub async fn connect(
        addr: std::net::SocketAddr,
        url: &str,
        offer: bool,
    ) -> Result<DeflateWs, String> {
        let (host, path) = host_and_path(url)?;
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let key = generate_key();
        let ext = if offer {
            format!("Sec-WebSocket-Extensions: {OFFER}\r\n")
        } else {
            String::new()
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err("handshake: answer headers too long".into());
            }
            buf.reserve(1024);
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err("handshake: EOF before the answer's end".into());
            }
        };
        let head = std::str::from_utf8(&buf[..end]).map_err(|_| "handshake: non-UTF-8 answer")?;
        let answer = check_answer(head, &derive_accept_key(key.as_bytes()))?;
        let deflate = match &answer {
            Some(v) if offer => {
                parse_answer(&[v.as_str()]).map_err(|e| format!("handshake: {e}"))?
            }
            Some(v) if !v.trim().is_empty() => {
                return Err(format!(
                    "handshake: extension answered without an offer: {v}"
                ));
            }
            _ => None,
        };
        let mut reader = Reader::new(deflate);
        reader.feed(&buf[end..]);
        Ok(DeflateWs {
            stream,
            reader,
            answer,
            offered: offer,
            last: MessageStats::default(),
        })
    }

    pub fn negotiated(&self) -> Option<&Deflate> {
        self.reader.deflate.as_ref()
    }

    /// The next data message (text or binary payload); control frames are handled here.
    pub async fn next_message(&mut self) -> Result<(bool, Vec<u8>), String> {
        loop {
            match self.reader.next_event() {
                Err(e) => {
                    // Fail the connection: 1002 protocol error, or 1007 for bad deflate data.
                    let code: u16 = if e.contains("inflate") { 1007 } else { 1002 };
                    let _ = self.send_frame(0x8, &code.to_be_bytes()).await;
                    return Err(format!("protocol error: {e}"));
                }
                Ok(Some(Event::Data {
                    text,
                    payload,
                    wire_bytes,
                    compressed,
                })) => {
                    self.last = MessageStats {
                        wire_bytes,
                        payload_bytes: payload.len() as u64,
                        compressed,
                    };
                    return Ok((text, payload));
                }
                Ok(Some(Event::Ping(p))) => {
                    self.send_frame(0xA, &p).await?;
                }
                Ok(Some(Event::Pong)) => {}
                Ok(Some(Event::Close(code, reason))) => {
                    let echo = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                    let _ = self.send_frame(0x8, &echo).await;
                    return Err(format!("close frame from server: code {code:?} {reason:?}"));
                }
                Ok(None) => {
                    self.reader.compact();
                    let n = self
                        .stream
                        .read_buf(&mut self.reader.buf)
                        .await
                        .map_err(|e| format!("read error: {e}"))?;
                    if n == 0 {
                        return Err("connection closed (EOF)".into());
                    }
                }
            }
        }
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let frame = encode_frame(opcode, payload, rand::random());
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    /// Sends a close frame (1000) and waits briefly for the server's close or EOF.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if self.send_frame(0x8, &1000u16.to_be_bytes()).await.is_ok() {
                let mut sink = [0u8; 4096];
                while let Ok(n) = self.stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// Checks a `101` answer's status, `Upgrade`, `Connection` and `Sec-WebSocket-Accept`; returns
/// its `Sec-WebSocket-Extensions` (several headers joined with `, `; `None` when absent).
fn check_answer(head: &str, accept: &str) -> Result<Option<String>, String> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with("HTTP/1.1") || code != "101" {
        return Err(format!("handshake: answer {status:?}"));
    }
    let (mut upgrade, mut connection, mut accepted) = (false, false, false);
    let mut extensions: Vec<&str> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("handshake: bad header line {line:?}"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "connection" => {
                connection = value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            }
            "sec-websocket-accept" => accepted = value == accept,
            "sec-websocket-extensions" => extensions.push(value),
            _ => {}
        }
    }
    if !(upgrade && connection && accepted) {
        return Err(format!(
            "handshake: bad answer (upgrade {upgrade}, connection {connection}, accept {accepted})"
        ));
    }
    Ok((!extensions.is_empty()).then(|| extensions.join(", ")))
}

/// What a set of deflate-mode clients negotiated, for the JSON output.
#[derive(Default)]
pub struct Negotiation {
    offered: AtomicU64,
    negotiated: AtomicU64,
    declined: AtomicU64,
    /// Distinct `Sec-WebSocket-Extensions` answers (at most 5) and the first parsed parameters.
    answers: Mutex<(Vec<Option<String>>, Option<Value>)>,
}

impl Negotiation {
    pub fn record(&self, ws: &DeflateWs) {
        if ws.offered {
            self.offered.fetch_add(1, Relaxed);
        }
        match ws.negotiated() {
            Some(_) => self.negotiated.fetch_add(1, Relaxed),
            None => self.declined.fetch_add(1, Relaxed),
        };
        let mut a = self.answers.lock().unwrap();
        if a.0.len() < 5 && !a.0.contains(&ws.answer) {
            a.0.push(ws.answer.clone());
        }
        if a.1.is_none() {
            a.1 = ws.negotiated().map(Deflate::to_json);
        }
    }

    pub fn any_negotiated(&self) -> bool {
        self.negotiated.load(Relaxed) > 0
    }

    pub fn to_json(&self) -> Value {
        let a = self.answers.lock().unwrap();
        let offered = self.offered.load(Relaxed);
        json!({
            "offer": if offered > 0 { Some(OFFER) } else { None },
            "clients_offered": offered,
            "negotiated": self.negotiated.load(Relaxed) > 0,
            "clients_negotiated": self.negotiated.load(Relaxed),
            "clients_declined": self.declined.load(Relaxed),
            "answers": a.0,
            "params": a.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn answer_parser() {
        assert_eq!(parse_answer(&[]), Ok(None));
        assert_eq!(parse_answer(&[""]), Ok(None));
        let py = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12";
        assert_eq!(
            parse_answer(&[py]),
            Ok(Some(Deflate {
                server_max_window_bits: Some(12),
                client_max_window_bits: Some(12),
                ..Deflate::default()
            }))
        );
        let ours = "permessage-deflate; server_max_window_bits=12; client_no_context_takeover";
        let d = parse_answer(&[ours]).unwrap().unwrap();
        assert_eq!(d.server_max_window_bits, Some(12));
        assert!(d.client_no_context_takeover && !d.server_no_context_takeover);
        let d = parse_answer(&[
            "PerMessage-Deflate;server_no_context_takeover; server_max_window_bits=\"8\"",
        ])
        .unwrap()
        .unwrap();
        assert!(d.server_no_context_takeover);
        assert_eq!(d.inflate_window_bits(), 9);
        assert_eq!(
            parse_answer(&["permessage-deflate"])
                .unwrap()
                .unwrap()
                .inflate_window_bits(),
            15
        );
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=012",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert!(parse_answer(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn handshake_answer() {
        let accept = derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate; \
             server_max_window_bits=12\r\nSec-WebSocket-Extensions: \r\n\r\n"
        );
        let got = check_answer(&ok, &accept).unwrap().unwrap();
        assert!(parse_answer(&[&got]).unwrap().is_some());
        let plain = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
             sec-websocket-accept: {accept}\r\n\r\n"
        );
        assert_eq!(check_answer(&plain, &accept), Ok(None));
        assert!(check_answer(&plain.replace("101", "400"), &accept).is_err());
        assert!(check_answer(&plain, "wrong").is_err());
    }

    /// Server-side frames: one message compressed with a sync flush, the tail stripped.
    fn deflate_msg(c: &mut Compress, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    fn server_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn message(text: &str, i: u32) -> String {
        format!(
            r#"{{"event": "message", "subscription": "bench.w", "data": {{"n": {i}, "text": "{text}"}}}}"#
        )
    }

    #[test]
    fn inflate_with_context_takeover() {
        let params = parse_answer(&[
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ])
        .unwrap();
        let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
        let mut r = Reader::new(params);
        let mut sizes = Vec::new();
        for i in 0..20 {
            let text = message("the same words again and again", i);
            let z = deflate_msg(&mut c, &text);
            let frame = server_frame(true, true, 0x1, &z);
            // Fed one byte at a time: the reader must wait for whole frames.
            for b in &frame {
                r.feed(std::slice::from_ref(b));
            }
            match r.next_event().unwrap() {
                Some(Event::Data {
                    text: true,
                    payload,
                    wire_bytes,
                    compressed: true,
                }) => {
                    assert_eq!(String::from_utf8(payload).unwrap(), text);
                    assert_eq!(wire_bytes, frame.len() as u64);
                    sizes.push(wire_bytes);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(r.next_event(), Ok(None));
        }
        // Context takeover: later messages refer to earlier ones and are much smaller.
        assert!(sizes[19] * 2 < sizes[0], "{sizes:?}");
    }

    #[test]
    fn fragments_plain_messages_control_frames() {
        let params = parse_answer(&["permessage-deflate; server_no_context_takeover"]).unwrap();
        let mut r = Reader::new(params);
        let text = message("fragmented", 1);
        // A compressed message in three fragments (RSV1 on the first only), a ping between.
        let mut c = Compress::new(Compression::default(), false);
        let z = deflate_msg(&mut c, &text);
        let (a, rest) = z.split_at(3);
        let (b, d) = rest.split_at(rest.len() / 2);
        let mut bytes = server_frame(false, true, 0x1, a);
        bytes.extend(server_frame(false, false, 0x0, b));
        bytes.extend(server_frame(true, false, 0x9, b"hi"));
        bytes.extend(server_frame(true, false, 0x0, d));
        let wire = bytes.len() as u64 - 4;
        // Then a plain message (RSV1 is per message), then a compressed one from a fresh
        // context (server_no_context_takeover: the compressor is reset too), then close.
        let plain = message("plain", 2);
        bytes.extend(server_frame(true, false, 0x1, plain.as_bytes()));
        let mut c2 = Compress::new(Compression::default(), false);
        let again = message("fragmented", 3);
        bytes.extend(server_frame(true, true, 0x1, &deflate_msg(&mut c2, &again)));
        bytes.extend(server_frame(
            true,
            false,
            0x8,
            &[0x03, 0xe8, b'b', b'y', b'e'],
        ));
        r.feed(&bytes);
        assert_eq!(r.next_event(), Ok(Some(Event::Ping(b"hi".to_vec()))));
        assert_eq!(
            r.next_event(),
            Ok(Some(Event::Data {
                text: true,
                payload: text.into_bytes(),
                wire_bytes: wire,
                compressed: true
            }))
        );
        match r.next_event() {
            Ok(Some(Event::Data {
                payload,
                compressed: false,
                ..
            })) => {
                assert_eq!(payload, plain.as_bytes())
            }
            other => panic!("{other:?}"),
        }
        match r.next_event() {
            Ok(Some(Event::Data {
                payload,
                compressed: true,
                ..
            })) => {
                assert_eq!(payload, again.as_bytes())
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.next_event(),
            Ok(Some(Event::Close(Some(1000), "bye".into())))
        );
    }

    #[test]
    fn protocol_errors() {
        let text = message("x", 1);
        let mut c = Compress::new(Compression::default(), false);
        let z = deflate_msg(&mut c, &text);
        // RSV1 without negotiation.
        let mut r = Reader::new(None);
        r.feed(&server_frame(true, true, 0x1, &z));
        assert!(r.next_event().is_err());
        // RSV1 on a continuation frame.
        let mut r = Reader::new(Some(Deflate::default()));
        r.feed(&server_frame(false, false, 0x1, b"ab"));
        r.feed(&server_frame(true, true, 0x0, b"cd"));
        assert!(r.next_event().is_err());
        // Garbage that does not inflate.
        let mut r = Reader::new(Some(Deflate::default()));
        r.feed(&server_frame(
            true,
            true,
            0x1,
            &[0xff, 0xff, 0xff, 0xff, 0x01],
        ));
        assert!(r.next_event().unwrap_err().contains("inflate"));
        // A masked server frame, a fragmented ping, RSV2.
        for bad in [
            vec![0x81, 0x81, 0, 0, 0, 0, b'a'],
            vec![0x09, 0x00],
            vec![0xa1, 0x00],
        ] {
            let mut r = Reader::new(Some(Deflate::default()));
            r.feed(&bad);
            assert!(r.next_event().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_frames_are_masked() {
        let f = encode_frame(0x1, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        // RFC 6455 5.7: a single-frame masked text message "Hello".
        assert_eq!(
            f,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let long = encode_frame(0x1, &[0u8; 300], [0; 4]);
        assert_eq!(&long[..4], &[0x81, 0xfe, 0x01, 0x2c]);
        assert_eq!(long.len(), 4 + 4 + 300);
    }

    /// Reads one masked client frame: (opcode, unmasked payload).
    async fn read_client_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(h[1] & 0x80, 0x80, "client frames are masked");
        assert_eq!(h[0] & 0x70, 0, "client frames are not compressed");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.unwrap();
                usize::from(u16::from_be_bytes(b))
            }
            n => usize::from(n),
        };
        let mut mask = [0u8; 4];
        s.read_exact(&mut mask).await.unwrap();
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.unwrap();
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (h[0] & 0x0f, p)
    }

    /// The I/O path against a fake server: the offer is sent, frames arriving in the same read
    /// as the handshake answer are kept, a ping is answered, two messages inflate with context
    /// takeover and a 10-bit window, the client's text and close frames arrive masked.
    #[tokio::test]
    async fn against_a_fake_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first = message("same again", 1);
        let second = message("same again", 2);
        let (f, s2) = (first.clone(), second.clone());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while !req.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                req.push(b[0]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(req.contains(&format!("Sec-WebSocket-Extensions: {OFFER}\r\n")));
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate; \
                 server_max_window_bits=10; client_no_context_takeover\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            let mut c = Compress::new_with_window_bits(Compression::default(), false, 10);
            out.extend(server_frame(true, false, 0x9, b"p1"));
            out.extend(server_frame(true, true, 0x1, &deflate_msg(&mut c, &f)));
            let z2 = deflate_msg(&mut c, &s2);
            out.extend(server_frame(true, true, 0x1, &z2));
            s.write_all(&out).await.unwrap();
            assert_eq!(read_client_frame(&mut s).await, (0xA, b"p1".to_vec()));
            assert_eq!(read_client_frame(&mut s).await, (0x1, b"hello".to_vec()));
            let (op, p) = read_client_frame(&mut s).await;
            assert_eq!((op, p.as_slice()), (0x8, &1000u16.to_be_bytes()[..]));
            s.write_all(&server_frame(true, false, 0x8, &1000u16.to_be_bytes()))
                .await
                .unwrap();
            z2.len() as u64 + 2
        });
        let url = format!("ws://{addr}/");
        let mut ws = DeflateWs::connect(addr, &url, true).await.unwrap();
        let d = ws.negotiated().unwrap().clone();
        assert_eq!(d.server_max_window_bits, Some(10));
        assert!(d.client_no_context_takeover);
        assert_eq!(ws.next_message().await.unwrap(), (true, first.into_bytes()));
        assert!(ws.last.compressed);
        assert_eq!(
            ws.next_message().await.unwrap(),
            (true, second.clone().into_bytes())
        );
        assert_eq!(ws.last.payload_bytes, second.len() as u64);
        ws.send_text("hello").await.unwrap();
        let wire_second = ws.last.wire_bytes;
        ws.close().await;
        assert_eq!(server.await.unwrap(), wire_second);
    }
}
