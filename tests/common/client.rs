//! A WebSocket test client with a background reader (pings are answered while the reader runs).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};

/// Default timeout of [`Client::recv`].
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Any byte stream a WebSocket can run over (plain TCP, a TLS stream, ...).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// What the background reader saw.
#[derive(Debug)]
enum Event {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame: (code, reason); None = close frame without status code.
    Close(Option<(u16, String)>),
    /// End of the stream; Some(error) if it ended with an error (e.g. reset without close).
    End(Option<String>),
}

/// Control frames seen by the reader.
#[derive(Default, Debug)]
struct Control {
    pings: Vec<(Instant, Vec<u8>)>,
    pongs: Vec<(Instant, Vec<u8>)>,
}

/// A data frame as returned by [`Client::recv_frame`].
#[derive(Debug, Clone, PartialEq)]
pub enum DataFrame {
    Text(String),
    Binary(Vec<u8>),
}

/// A WebSocket client connected to the server under test.
///
/// A background task reads the socket continuously: data frames are queued for `recv*`,
/// Ping frames are answered automatically (tungstenite queues the Pong and flushes it on the next
/// read) and recorded, close frames are answered. [`Client::pause_reading`] stops the reader
/// (no pongs, nothing consumed) to simulate an unresponsive client.
///
/// Dropping the client drops the TCP connection without a close frame (abrupt disconnect).
pub struct Client {
    sink: SplitSink<Ws, Message>,
    rx: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
    paused: watch::Sender<bool>,
    control: Arc<Mutex<Control>>,
    control_rx: watch::Receiver<u64>,
    /// Data frames read but not yet consumed (kept by `wait_for`), in arrival order.
    buffer: VecDeque<DataFrame>,
    close_frame: Option<Option<(u16, String)>>,
    ended: Option<Option<String>>,
}

impl Client {
    /// Connects (5 s timeout); panics on failure.
    pub async fn connect(url: &str) -> Client {
        match Client::try_connect(url).await {
            Ok(c) => c,
            Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
        }
    }

    /// Connects; Err(description) if the TCP connection or the handshake fails (5 s timeout).
    pub async fn try_connect(url: &str) -> Result<Client, String> {
        Client::try_connect_with_headers(url, &[]).await
    }

    /// Connects sending extra handshake headers (e.g. `("Origin", "http://x")`).
    pub async fn try_connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, String> {
        let (host, port) = host_port(url)?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| format!("TCP connect to {host}:{port} timed out"))?
        .map_err(|e| format!("TCP connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Client::try_connect_stream_with_headers(url, tcp, headers).await
    }

    /// WebSocket handshake over an already connected stream (e.g. a TLS stream); `url` gives
    /// the request target and Host header.
    pub async fn try_connect_stream(url: &str, stream: impl Io) -> Result<Client, String> {
        Client::try_connect_stream_with_headers(url, stream, &[]).await
    }

    async fn try_connect_stream_with_headers(
        url: &str,
        stream: impl Io,
        headers: &[(&str, &str)],
    ) -> Result<Client, String> {
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("bad URL {url}: {e}"))?;
        for (k, v) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                k.parse().map_err(|_| format!("bad header name {k}"))?;
            req.headers_mut().insert(
                name,
                HeaderValue::from_str(v).map_err(|_| format!("bad header value {v}"))?,
            );
        }
        let boxed: Box<dyn Io> = Box::new(stream);
        let (ws, _resp) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::client_async_with_config(req, boxed, None),
        )
        .await
        .map_err(|_| "WebSocket handshake timed out".to_string())?
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
        Ok(Client::from_ws(ws))
    }

    fn from_ws(ws: Ws) -> Client {
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (paused, paused_rx) = watch::channel(false);
        let control = Arc::new(Mutex::new(Control::default()));
        let (control_tx, control_rx) = watch::channel(0u64);
        let reader = tokio::spawn(read_loop(
            stream,
            tx,
            paused_rx,
            control.clone(),
            control_tx,
        ));
        Client {
            sink,
            rx,
            reader,
            paused,
            control,
            control_rx,
            buffer: VecDeque::new(),
            close_frame: None,
            ended: None,
        }
    }

    // ------------------------------------------------------------------ sending

    /// Sends any tungstenite message; panics if the connection is broken.
    pub async fn send_message(&mut self, msg: Message) {
        if let Err(e) = self.try_send_message(msg).await {
            panic!("WebSocket send failed: {e}");
        }
    }

    /// Sends a message; Err(description) if the connection is broken.
    pub async fn try_send_message(&mut self, msg: Message) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(5), self.sink.send(msg))
            .await
            .map_err(|_| "send timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    /// Sends the JSON value as a text frame.
    pub async fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.send_message(Message::text(s)).await;
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.send_message(Message::binary(b)).await;
    }

    /// A text frame whose payload need not be valid UTF-8 (for close-1007 tests).
    pub async fn send_text_bytes(&mut self, b: Vec<u8>) {
        self.send_message(Message::Frame(Frame::message(
            b,
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
    }

    /// One message split over several frames (first frame text/binary, then continuations).
    pub async fn send_fragmented(&mut self, parts: &[&[u8]], binary: bool) {
        assert!(!parts.is_empty());
        let first = if binary { Data::Binary } else { Data::Text };
        for (i, p) in parts.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Data(first)
            } else {
                OpCode::Data(Data::Continue)
            };
            let fin = i == parts.len() - 1;
            self.send_message(Message::Frame(Frame::message(p.to_vec(), op, fin)))
                .await;
        }
    }

    pub async fn send_ping(&mut self, payload: Vec<u8>) {
        self.send_message(Message::Ping(payload.into())).await;
    }

    /// Sends the JSON value and returns the next message ([`Client::recv`]).
    pub async fn request(&mut self, v: &Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    // ------------------------------------------------------------------ receiving

    /// Next event from the reader (None on timeout).
    async fn next_event(&mut self, deadline: tokio::time::Instant) -> Option<Event> {
        if let Some(end) = &self.ended {
            return Some(Event::End(end.clone()));
        }
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Err(_) => None,
            Ok(Some(ev)) => {
                match &ev {
                    Event::Close(f) => self.close_frame = Some(f.clone()),
                    Event::End(e) => self.ended = Some(e.clone()),
                    _ => {}
                }
                Some(ev)
            }
            Ok(None) => {
                self.ended = Some(Some("reader task ended".into()));
                Some(Event::End(Some("reader task ended".into())))
            }
        }
    }

    fn describe_close(&self) -> String {
        match (&self.close_frame, &self.ended) {
            (Some(Some((code, reason))), _) => {
                format!("closed by the server (code {code}, reason {reason:?})")
            }
            (Some(None), _) => "closed by the server (close frame without code)".into(),
            (None, Some(Some(e))) => format!("connection ended without close frame: {e}"),
            (None, _) => "connection ended without close frame".into(),
        }
    }

    /// Next data frame within `timeout`; None on timeout; panics if the connection closes.
    pub async fn recv_frame_timeout(&mut self, timeout: Duration) -> Option<DataFrame> {
        if let Some(f) = self.buffer.pop_front() {
            return Some(f);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match self.next_event(deadline).await {
            None => None,
            Some(Event::Text(t)) => Some(DataFrame::Text(t)),
            Some(Event::Binary(b)) => Some(DataFrame::Binary(b)),
            Some(Event::Close(_)) | Some(Event::End(_)) => {
                panic!(
                    "expected a message, but the WebSocket was {}",
                    self.describe_close()
                )
            }
        }
    }

    /// Next data frame (5 s timeout, panics on timeout or close).
    pub async fn recv_frame(&mut self) -> DataFrame {
        match self.recv_frame_timeout(RECV_TIMEOUT).await {
            Some(f) => f,
            None => panic!("no message from the server within {RECV_TIMEOUT:?}"),
        }
    }

    /// Next message parsed as JSON (text or binary frame), within `timeout`; None on timeout.
    /// Panics if the connection closes or the frame is not JSON.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Value> {
        self.recv_frame_timeout(timeout).await.map(parse_frame)
    }

    /// Next message parsed as JSON (5 s timeout; panics with a clear message on timeout/close).
    pub async fn recv(&mut self) -> Value {
        match self.recv_timeout(RECV_TIMEOUT).await {
            Some(v) => v,
            None => panic!("no message from the server within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next `n` messages.
    pub async fn recv_n(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            match self.recv_timeout(RECV_TIMEOUT).await {
                Some(v) => out.push(v),
                None => {
                    panic!("expected {n} messages, got {i} within {RECV_TIMEOUT:?} each: {out:?}")
                }
            }
        }
        out
    }

    /// Every message arriving until the connection has been quiet for `quiet`.
    pub async fn recv_all(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.recv_timeout(quiet).await {
            out.push(v);
        }
        out
    }

    /// Panics if any data frame arrives (or the connection closes) within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(f) = self.buffer.pop_front() {
            panic!("expected silence, but a message was already pending: {f:?}");
        }
        let deadline = tokio::time::Instant::now() + d;
        match self.next_event(deadline).await {
            None => {}
            Some(Event::Text(t)) => panic!("expected silence for {d:?}, got message: {t}"),
            Some(Event::Binary(b)) => {
                panic!("expected silence for {d:?}, got binary message: {b:?}")
            }
            Some(Event::Close(_)) | Some(Event::End(_)) => {
                panic!(
                    "expected silence for {d:?}, but the WebSocket was {}",
                    self.describe_close()
                )
            }
        }
    }

    /// Waits for a message matching `pred`, keeping the non-matching ones (in order) for later
    /// `recv*` calls. Panics on timeout (listing the skipped messages) or close.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let idx = self
            .buffer
            .iter()
            .position(|f| pred(&parse_frame(f.clone())));
        if let Some(i) = idx {
            return parse_frame(self.buffer.remove(i).unwrap());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match self.next_event(deadline).await {
                None => panic!(
                    "no matching message within {timeout:?}; skipped: {:?}",
                    self.buffer
                        .iter()
                        .cloned()
                        .map(parse_frame)
                        .collect::<Vec<_>>()
                ),
                Some(Event::Text(t)) => DataFrame::Text(t),
                Some(Event::Binary(b)) => DataFrame::Binary(b),
                Some(Event::Close(_)) | Some(Event::End(_)) => panic!(
                    "waiting for a matching message, but the WebSocket was {}; skipped: {:?}",
                    self.describe_close(),
                    self.buffer
                        .iter()
                        .cloned()
                        .map(parse_frame)
                        .collect::<Vec<_>>()
                ),
            };
            let v = parse_frame(frame.clone());
            if pred(&v) {
                return v;
            }
            self.buffer.push_back(frame);
        }
    }

    /// Messages kept by [`Client::wait_for`] and not consumed yet.
    pub fn pending(&self) -> Vec<Value> {
        self.buffer.iter().cloned().map(parse_frame).collect()
    }

    /// Waits for the server to close the connection; returns the close code (None if the close
    /// frame had no code or the connection ended without a close frame). Panics on timeout or if
    /// a data frame comes first.
    pub async fn recv_close(&mut self, timeout: Duration) -> Option<u16> {
        if let Some(f) = self.buffer.pop_front() {
            panic!("expected the connection to close, but a message was pending: {f:?}");
        }
        self.wait_close(timeout, false).await.0
    }

    /// Like [`Client::recv_close`] but skips (and returns) data frames arriving before the close.
    pub async fn recv_close_skipping_data(
        &mut self,
        timeout: Duration,
    ) -> (Option<u16>, Vec<Value>) {
        let mut skipped: Vec<Value> = self.buffer.drain(..).map(parse_frame).collect();
        let (code, more) = self.wait_close(timeout, true).await;
        skipped.extend(more);
        (code, skipped)
    }

    async fn wait_close(
        &mut self,
        timeout: Duration,
        skip_data: bool,
    ) -> (Option<u16>, Vec<Value>) {
        let mut skipped = Vec::new();
        if self.close_frame.is_some() || self.ended.is_some() {
            return (self.close_code(), skipped);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.next_event(deadline).await {
                None => panic!(
                    "the server did not close the connection within {timeout:?}; skipped: {skipped:?}"
                ),
                Some(Event::Text(t)) if !skip_data => {
                    panic!("expected the connection to close, got message: {t}")
                }
                Some(Event::Binary(b)) if !skip_data => {
                    panic!("expected the connection to close, got binary message: {b:?}")
                }
                Some(Event::Text(t)) => skipped.push(parse_frame(DataFrame::Text(t))),
                Some(Event::Binary(b)) => skipped.push(parse_frame(DataFrame::Binary(b))),
                Some(Event::Close(_)) | Some(Event::End(_)) => return (self.close_code(), skipped),
            }
        }
    }

    /// Code of the close frame received from the server, if any.
    pub fn close_code(&self) -> Option<u16> {
        match &self.close_frame {
            Some(Some((code, _))) => Some(*code),
            _ => None,
        }
    }

    /// The close frame received from the server: (code, reason).
    pub fn close_frame(&self) -> Option<(u16, String)> {
        self.close_frame.clone().flatten()
    }

    /// True once a close frame or the end of the stream has been seen by a `recv*` call
    /// (events are consumed in order, so pending data frames must be read first), or the reader
    /// has stopped.
    pub fn is_closed(&self) -> bool {
        self.close_frame.is_some() || self.ended.is_some() || self.reader.is_finished()
    }

    /// Client-initiated close (code 1000); waits up to 5 s for the server's answer / end of
    /// stream. Returns the server's close code, if any.
    pub async fn close(&mut self) -> Option<u16> {
        self.close_with(1000, "").await
    }

    /// Client-initiated close with a given code and reason.
    pub async fn close_with(&mut self, code: u16, reason: &str) -> Option<u16> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.try_send_message(Message::Close(Some(frame))).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.ended.is_none() {
            if self.next_event(deadline).await.is_none() {
                break;
            }
        }
        self.close_code()
    }

    /// Drops the TCP connection without a close frame, and waits until the socket is closed.
    pub async fn abort(mut self) {
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }

    // ------------------------------------------------------------------ control frames

    /// Stops reading the socket: pings are no longer answered and nothing is consumed.
    pub fn pause_reading(&self) {
        let _ = self.paused.send(true);
    }

    /// Resumes reading (a ping that arrived meanwhile is answered now, i.e. late).
    pub fn resume_reading(&self) {
        let _ = self.paused.send(false);
    }

    /// Number of Ping frames received from the server so far.
    pub fn pings_received(&self) -> usize {
        self.control.lock().unwrap().pings.len()
    }

    /// Arrival times and payloads of the server's pings.
    pub fn pings(&self) -> Vec<(Instant, Vec<u8>)> {
        self.control.lock().unwrap().pings.clone()
    }

    /// Pong frames received (answers to [`Client::send_ping`]).
    pub fn pongs(&self) -> Vec<(Instant, Vec<u8>)> {
        self.control.lock().unwrap().pongs.clone()
    }

    /// Waits until at least `n` pings have been received; panics on timeout.
    pub async fn wait_pings(&mut self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.control_rx.borrow_and_update();
            if self.pings_received() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, self.control_rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "expected {n} ping(s) within {timeout:?}, got {}",
                    self.pings_received()
                );
            }
        }
    }

    /// Waits until at least `n` pongs have been received; panics on timeout.
    pub async fn wait_pongs(&mut self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.control_rx.borrow_and_update();
            if self.pongs().len() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, self.control_rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "expected {n} pong(s) within {timeout:?}, got {}",
                    self.pongs().len()
                );
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn parse_frame(f: DataFrame) -> Value {
    match f {
        DataFrame::Text(t) => serde_json::from_str(&t)
            .unwrap_or_else(|e| panic!("server sent a text frame that is not JSON ({e}): {t:?}")),
        DataFrame::Binary(b) => serde_json::from_slice(&b)
            .unwrap_or_else(|e| panic!("server sent a binary frame that is not JSON ({e}): {b:?}")),
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    tx: mpsc::UnboundedSender<Event>,
    mut paused: watch::Receiver<bool>,
    control: Arc<Mutex<Control>>,
    control_tx: watch::Sender<u64>,
) {
    loop {
        if *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
            continue;
        }
        let msg = tokio::select! {
            biased;
            r = paused.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
            m = stream.next() => m,
        };
        match msg {
            None => {
                let _ = tx.send(Event::End(None));
                return;
            }
            Some(Err(e)) => {
                let _ = tx.send(Event::End(Some(e.to_string())));
                return;
            }
            Some(Ok(m)) => match m {
                Message::Text(t) => {
                    let _ = tx.send(Event::Text(t.as_str().to_string()));
                }
                Message::Binary(b) => {
                    let _ = tx.send(Event::Binary(b.to_vec()));
                }
                Message::Ping(p) => {
                    control
                        .lock()
                        .unwrap()
                        .pings
                        .push((Instant::now(), p.to_vec()));
                    control_tx.send_modify(|n| *n += 1);
                }
                Message::Pong(p) => {
                    control
                        .lock()
                        .unwrap()
                        .pongs
                        .push((Instant::now(), p.to_vec()));
                    control_tx.send_modify(|n| *n += 1);
                }
                Message::Close(f) => {
                    let f = f.map(|f| (u16::from(f.code), f.reason.as_str().to_string()));
                    let _ = tx.send(Event::Close(f));
                    // Keep reading: tungstenite flushes the close reply, then the stream ends.
                }
                Message::Frame(_) => {}
            },
        }
    }
}

/// Host and port of a `ws://` URL.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("ws://") {
        (r, 80)
    } else if let Some(r) = url.strip_prefix("wss://") {
        let _ = r;
        return Err(format!(
            "{url}: wss:// needs Client::try_connect_stream with a TLS stream"
        ));
    } else {
        return Err(format!("not a ws:// URL: {url}"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(|| format!("bad URL {url}"))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port in {url}"))?,
            None => default_port,
        };
        return Ok((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            p.parse().map_err(|_| format!("bad port in {url}"))?,
        )),
        None => Ok((authority.to_string(), default_port)),
    }
}
