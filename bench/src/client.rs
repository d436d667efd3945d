//! WebSocket clients speaking the SocketShark protocol, plus the shared error counters.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::deflate_ws::{DeflateWs, MessageStats};

pub type Ws = WebSocketStream<TcpStream>;

/// Microseconds since the Unix epoch (the clock publishers and clients share).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    pub async fn resolve(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("only ws:// URLs are supported: {url}"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let hostport = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let addr = tokio::net::lookup_host(&hostport)
            .await
            .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {hostport}"))?;
        Ok(Target {
            url: url.to_string(),
            addr,
        })
    }

    /// TCP connect + WebSocket handshake, with small buffers (thousands of clients).
    pub async fn connect(&self) -> Result<Ws, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0);
        let (ws, _resp) =
            tokio_tungstenite::client_async_with_config(self.url.as_str(), stream, Some(config))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        Ok(ws)
    }

    /// A tungstenite client, or with `deflate` a browser-like one (offers permessage-deflate).
    pub async fn connect_any(&self, deflate: bool) -> Result<AnyWs, String> {
        if deflate {
            DeflateWs::connect(self.addr, &self.url, true)
                .await
                .map(AnyWs::Deflate)
        } else {
            self.connect().await.map(AnyWs::Plain)
        }
    }
}

/// A client connection as the scenarios use it: read frames, send JSON, close.
pub trait Conn: Send + Sized {
    fn next_frame(&mut self) -> impl Future<Output = Frame> + Send;
    fn send_json(&mut self, v: &Value) -> impl Future<Output = Result<(), String>> + Send;
    fn close(self) -> impl Future<Output = ()> + Send;
}

impl Conn for Ws {
    fn next_frame(&mut self) -> impl Future<Output = Frame> + Send {
        next_frame(self)
    }
    fn send_json(&mut self, v: &Value) -> impl Future<Output = Result<(), String>> + Send {
        send_json(self, v)
    }
    fn close(self) -> impl Future<Output = ()> + Send {
        close(self)
    }
}

impl Conn for DeflateWs {
    async fn next_frame(&mut self) -> Frame {
        match self.next_message().await {
            Ok((true, payload)) => match String::from_utf8(payload) {
                Ok(t) => classify(&t),
                Err(_) => Frame::Closed("invalid UTF-8 in a text message".into()),
            },
            Ok((false, payload)) => match std::str::from_utf8(&payload) {
                Ok(t) => classify(t),
                Err(_) => Frame::Other(json!({"binary": payload.len()})),
            },
            Err(e) => Frame::Closed(e),
        }
    }
    async fn send_json(&mut self, v: &Value) -> Result<(), String> {
        self.send_text(&v.to_string()).await
    }
    fn close(self) -> impl Future<Output = ()> + Send {
        DeflateWs::close(self)
    }
}

/// Either kind of client (`--deflate` picks the browser-like one).
pub enum AnyWs {
    Plain(Ws),
    Deflate(DeflateWs),
}

impl AnyWs {
    /// Wire figures of the last data message read (browser-like clients only).
    pub fn last_message(&self) -> Option<MessageStats> {
        match self {
            AnyWs::Plain(_) => None,
            AnyWs::Deflate(ws) => Some(ws.last),
        }
    }

    pub fn as_deflate(&self) -> Option<&DeflateWs> {
        match self {
            AnyWs::Plain(_) => None,
            AnyWs::Deflate(ws) => Some(ws),
        }
    }
}

impl Conn for AnyWs {
    async fn next_frame(&mut self) -> Frame {
        match self {
            AnyWs::Plain(ws) => next_frame(ws).await,
            AnyWs::Deflate(ws) => ws.next_frame().await,
        }
    }
    async fn send_json(&mut self, v: &Value) -> Result<(), String> {
        match self {
            AnyWs::Plain(ws) => send_json(ws, v).await,
            AnyWs::Deflate(ws) => ws.send_json(v).await,
        }
    }
    async fn close(self) {
        match self {
            AnyWs::Plain(ws) => close(ws).await,
            AnyWs::Deflate(ws) => Conn::close(ws).await,
        }
    }
}

/// Error counters shared by every client task; the scenario prints them with its figures.
#[derive(Default)]
pub struct Errors {
    pub connect: AtomicU64,
    pub error_replies: AtomicU64,
    pub disconnects: AtomicU64,
    pub timeouts: AtomicU64,
    pub unexpected: AtomicU64,
    pub publish: AtomicU64,
    samples: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Connect,
    ErrorReply,
    Disconnect,
    Timeout,
    Unexpected,
    Publish,
}

impl Errors {
    pub fn add(&self, kind: Kind, what: impl FnOnce() -> String) {
        let counter = match kind {
            Kind::Connect => &self.connect,
            Kind::ErrorReply => &self.error_replies,
            Kind::Disconnect => &self.disconnects,
            Kind::Timeout => &self.timeouts,
            Kind::Unexpected => &self.unexpected,
            Kind::Publish => &self.publish,
        };
        counter.fetch_add(1, Relaxed);
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 5 {
            samples.push(what());
        }
    }

    pub fn total(&self) -> u64 {
        [
            &self.connect,
            &self.error_replies,
            &self.disconnects,
            &self.timeouts,
            &self.unexpected,
            &self.publish,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "total": self.total(),
            "connect": self.connect.load(Relaxed),
            "error_replies": self.error_replies.load(Relaxed),
            "disconnects": self.disconnects.load(Relaxed),
            "timeouts": self.timeouts.load(Relaxed),
            "unexpected_frames": self.unexpected.load(Relaxed),
            "publish": self.publish.load(Relaxed),
            "samples": *self.samples.lock().unwrap(),
        })
    }
}

/// A frame received from the server.
pub enum Frame {
    /// A published bench message (`data` has `seq` and `ts`), found without a full JSON parse.
    Delivery { seq: u64, ts: u64 },
    /// Anything else, parsed.
    Other(Value),
    /// The connection is over (close frame, EOF or error, described).
    Closed(String),
}

/// Finds `"key"` followed by optional spaces, `:`, optional spaces and an unsigned integer.
fn find_u64(text: &str, key: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find(key) {
        let mut i = from + pos + key.len();
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b':' {
            i += 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let start = i;
            let mut v: u64 = 0;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                v = v.checked_mul(10)?.checked_add(u64::from(bytes[i] - b'0'))?;
                i += 1;
            }
            return (i > start).then_some(v);
        }
        from += pos + key.len();
    }
    None
}

/// Classifies a text frame: the delivery fast path for `{"event": "message", ... "seq", "ts"}`
/// without `status` (replies have one), a full parse otherwise.
pub fn classify(text: &str) -> Frame {
    let is_message =
        text.starts_with(r#"{"event":"message""#) || text.starts_with(r#"{"event": "message""#);
    if is_message && !text.contains(r#""status""#) {
        if let (Some(seq), Some(ts)) = (find_u64(text, r#""seq""#), find_u64(text, r#""ts""#)) {
            return Frame::Delivery { seq, ts };
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Frame::Other(v),
        Err(e) => Frame::Other(json!({"invalid_json": e.to_string(), "text": text})),
    }
}

/// Reads the next application frame (control frames are answered by tungstenite and skipped).
pub async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        match ws.next().await {
            None => return Frame::Closed("connection closed (EOF)".into()),
            Some(Err(e)) => return Frame::Closed(format!("read error: {e}")),
            Some(Ok(Message::Text(t))) => return classify(t.as_str()),
            Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                Ok(t) => return classify(t),
                Err(_) => return Frame::Other(json!({"binary": b.len()})),
            },
            Some(Ok(Message::Close(c))) => {
                return Frame::Closed(format!("close frame from server: {c:?}"));
            }
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn send_json(ws: &mut Ws, v: &Value) -> Result<(), String> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Sends `command` and waits (up to `timeout`) for the reply whose `event` is `event` and whose
/// `subscription` (if given) matches; deliveries arriving meanwhile are ignored. Returns the reply
/// when its status is `ok`, else a description of the failure and its error kind.
pub async fn request<C: Conn>(
    ws: &mut C,
    command: &Value,
    event: &str,
    subscription: Option<&str>,
    timeout: Duration,
) -> Result<Value, (Kind, String)> {
    ws.send_json(command)
        .await
        .map_err(|e| (Kind::Disconnect, e))?;
    let wait = async {
        loop {
            match ws.next_frame().await {
                Frame::Delivery { .. } => continue,
                Frame::Closed(why) => return Err((Kind::Disconnect, why)),
                Frame::Other(v) => {
                    let ev_ok = v.get("event").and_then(Value::as_str) == Some(event);
                    let sub_ok = subscription
                        .is_none_or(|s| v.get("subscription").and_then(Value::as_str) == Some(s));
                    if !(ev_ok && sub_ok) {
                        return Err((Kind::Unexpected, format!("unexpected frame: {v}")));
                    }
                    return if v.get("status").and_then(Value::as_str) == Some("ok") {
                        Ok(v)
                    } else {
                        Err((Kind::ErrorReply, format!("error reply: {v}")))
                    };
                }
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Err((
            Kind::Timeout,
            format!("no {event} reply within {timeout:?}"),
        )),
    }
}

/// Subscribes to `name` and waits for the ok reply.
pub async fn subscribe<C: Conn>(
    ws: &mut C,
    name: &str,
    timeout: Duration,
) -> Result<(), (Kind, String)> {
    let cmd = json!({"event": "subscribe", "subscription": name});
    request(ws, &cmd, "subscribe", Some(name), timeout)
        .await
        .map(|_| ())
}

/// Sends a close frame and waits briefly for the server's; errors are irrelevant here.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if SinkExt::close(&mut ws).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Closes many connections concurrently.
pub async fn close_all<C: Conn>(conns: Vec<C>) {
    futures_util::future::join_all(conns.into_iter().map(Conn::close)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_both_servers() {
        let rust = r#"{"event":"message","subscription":"bench.t1","data":{"seq":12,"ts":1700000000000001},"received_at":"x","queue_size":0,"sent_at":"y"}"#;
        let py = r#"{"event": "message", "subscription": "bench.t1", "data": {"seq": 12, "ts": 1700000000000001}, "received_at": "x", "queue_size": 0, "sent_at": "y"}"#;
        for t in [rust, py] {
            match classify(t) {
                Frame::Delivery { seq, ts } => {
                    assert_eq!(seq, 12);
                    assert_eq!(ts, 1_700_000_000_000_001);
                }
                _ => panic!("not a delivery: {t}"),
            }
        }
        let reply = r#"{"event": "message", "status": "ok", "data": {"seq": 3, "ts": 4}, "subscription": "echo.e1"}"#;
        assert!(matches!(classify(reply), Frame::Other(_)));
        assert!(matches!(classify("nope"), Frame::Other(_)));
    }

    #[test]
    fn find_u64_skips_prefix_matches() {
        assert_eq!(find_u64(r#"{"tsx": 1, "ts" : 7}"#, r#""ts""#), Some(7));
        assert_eq!(find_u64(r#"{"ts": "a"}"#, r#""ts""#), None);
    }
}
