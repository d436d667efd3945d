//! An in-process HTTP server playing the services' callback endpoints.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A scripted answer of the mock service.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    /// Close the TCP connection without sending anything (after `delay`).
    pub close: bool,
}

impl Reply {
    /// 200, `application/json`, the serialised value.
    pub fn json(value: Value) -> Reply {
        Reply {
            status: 200,
            content_type: Some("application/json".into()),
            body: value.to_string().into_bytes(),
            headers: Vec::new(),
            delay: Duration::ZERO,
            close: false,
        }
    }

    /// `{"status": "ok"}`
    pub fn ok() -> Reply {
        Reply::json(serde_json::json!({"status": "ok"}))
    }

    /// `{"status": "ok", "data": data}`
    pub fn ok_data(data: Value) -> Reply {
        Reply::json(serde_json::json!({"status": "ok", "data": data}))
    }

    /// `{"status": "error"}`
    pub fn error() -> Reply {
        Reply::json(serde_json::json!({"status": "error"}))
    }

    /// `{"status": "error", "error": text}`
    pub fn error_text(text: &str) -> Reply {
        Reply::json(serde_json::json!({"status": "error", "error": text}))
    }

    /// The ticket-validation success of the test configuration:
    /// `{"status": "ok", "session_id": session_id}`.
    pub fn auth_ok(session_id: &str) -> Reply {
        Reply::json(serde_json::json!({"status": "ok", "session_id": session_id}))
    }

    /// 200 with an arbitrary body and content type (`""` = no Content-Type header at all).
    pub fn raw(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            content_type: if content_type.is_empty() {
                None
            } else {
                Some(content_type.into())
            },
            body: body.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
            close: false,
        }
    }

    /// The JSON value gzip-compressed (stored blocks) with `Content-Encoding: gzip`.
    pub fn gzip_json(value: Value) -> Reply {
        let mut r = Reply::json(value);
        r.body = gzip_stored(&r.body);
        r.header("Content-Encoding", "gzip")
    }

    /// The JSON value zlib-wrapped (stored blocks) with `Content-Encoding: deflate`.
    pub fn deflate_json(value: Value) -> Reply {
        let mut r = Reply::json(value);
        r.body = zlib_stored(&r.body);
        r.header("Content-Encoding", "deflate")
    }

    /// Accept the connection and read the request, then close it without answering.
    pub fn close() -> Reply {
        Reply {
            close: true,
            ..Reply::ok()
        }
    }

    /// Sets the HTTP status code.
    pub fn status(mut self, code: u16) -> Reply {
        self.status = code;
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits this long before answering (or closing).
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// One request received by the mock service.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path without the query string, e.g. `/complex/before_subscribe`.
    pub path: String,
    /// Path and query as received.
    pub uri: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Value::Null` if it was not JSON (see `raw_body`).
    pub body: Value,
    pub raw_body: Vec<u8>,
    /// Arrival time (before the scripted delay).
    pub at: Instant,
    /// When the answer was about to be written (after the scripted delay); `None` while the
    /// request is still being answered. `[at, answered]` lies within the time the caller had
    /// the request in flight, whatever the scheduling delays of this process.
    pub answered: Option<Instant>,
    pub remote: SocketAddr,
}

impl Request {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    defaults: HashMap<String, Reply>,
    queues: HashMap<String, VecDeque<Reply>>,
    fallback: Option<Reply>,
}

struct Inner {
    state: Mutex<State>,
    count: watch::Sender<usize>,
}

/// The mock HTTP service (axum on 127.0.0.1:0). Any method and path is accepted. Each request
/// is answered by, in order: the next one-shot reply queued for its path ([`MockService::push`]),
/// the path's default ([`MockService::set`]), the global fallback ([`MockService::set_fallback`]),
/// else `{"status": "ok"}`.
pub struct MockService {
    port: u16,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl MockService {
    pub async fn start() -> MockService {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind mock service");
        let port = listener.local_addr().unwrap().port();
        let (count, _) = watch::channel(0usize);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            count,
        });
        let handler_inner = inner.clone();
        let app = Router::new().fallback(move |req: axum::extract::Request| {
            let inner = handler_inner.clone();
            async move { handle(inner, req).await }
        });
        let listener = KillListener { inner: listener };
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<ConnInfo>(),
            )
            .await;
        });
        MockService { port, inner, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port><path>` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        assert!(
            path.starts_with('/'),
            "mock service paths start with '/': {path:?}"
        );
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://<userinfo>@127.0.0.1:<port><path>`, e.g. userinfo `"user:secret"`.
    pub fn url_with_userinfo(&self, userinfo: &str, path: &str) -> String {
        format!("http://{userinfo}@127.0.0.1:{}{path}", self.port)
    }

    /// Default answer for `path` (used whenever its queue is empty).
    pub fn set(&self, path: &str, reply: Reply) {
        self.inner
            .state
            .lock()
            .unwrap()
            .defaults
            .insert(path.to_string(), reply);
    }

    /// Queues a one-shot answer for `path` (FIFO, consumed before the default).
    pub fn push(&self, path: &str, reply: Reply) {
        self.inner
            .state
            .lock()
            .unwrap()
            .queues
            .entry(path.to_string())
            .or_default()
            .push_back(reply);
    }

    /// Answer for every path without queue entry or default (instead of `{"status": "ok"}`).
    pub fn set_fallback(&self, reply: Reply) {
        self.inner.state.lock().unwrap().fallback = Some(reply);
    }

    /// Removes the default and the queued answers of `path`.
    pub fn reset(&self, path: &str) {
        let mut st = self.inner.state.lock().unwrap();
        st.defaults.remove(path);
        st.queues.remove(path);
    }

    /// Number of one-shot answers still queued for `path`.
    pub fn queued(&self, path: &str) -> usize {
        self.inner
            .state
            .lock()
            .unwrap()
            .queues
            .get(path)
            .map_or(0, |q| q.len())
    }

    /// Forgets the recorded requests (scripted answers are kept).
    pub fn clear(&self) {
        self.inner.state.lock().unwrap().requests.clear();
        self.inner.count.send_modify(|n| *n += 1);
    }

    /// Requests to `path`, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        self.inner
            .state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Every request, all paths, in arrival order.
    pub fn all_requests(&self) -> Vec<Request> {
        self.inner.state.lock().unwrap().requests.clone()
    }

    /// The sequence of paths called, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.inner
            .state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    /// JSON bodies of the requests to `path`, in arrival order.
    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.requests(path).into_iter().map(|r| r.body).collect()
    }

    /// Number of requests to `path`.
    pub fn calls(&self, path: &str) -> usize {
        self.inner
            .state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Total number of requests.
    pub fn total_calls(&self) -> usize {
        self.inner.state.lock().unwrap().requests.len()
    }

    /// Waits until `path` has received at least `n` requests; panics (listing every request
    /// received) on timeout. Returns the bodies of the requests to `path`.
    pub async fn wait_calls(&self, path: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let mut rx = self.inner.count.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if self.calls(path) >= n {
                return self.bodies(path);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    if self.calls(path) >= n {
                        return self.bodies(path);
                    }
                    panic!(
                        "mock service: expected at least {n} request(s) to {path} within {timeout:?}, got {}.\nAll requests:\n{}",
                        self.calls(path),
                        self.dump()
                    );
                }
            }
        }
    }

    /// Asserts that `path` is not called (beyond `n` calls already counted) during `d`.
    pub async fn expect_no_more_calls(&self, path: &str, n: usize, d: Duration) {
        tokio::time::sleep(d).await;
        let got = self.calls(path);
        assert!(
            got <= n,
            "mock service: expected at most {n} request(s) to {path}, got {got}.\nAll requests:\n{}",
            self.dump()
        );
    }

    /// One line per request: `METHOD path body`.
    pub fn dump(&self) -> String {
        let st = self.inner.state.lock().unwrap();
        if st.requests.is_empty() {
            return "  (none)".into();
        }
        st.requests
            .iter()
            .map(|r| {
                let body = if r.body.is_null() {
                    format!("raw {:?}", String::from_utf8_lossy(&r.raw_body))
                } else {
                    r.body.to_string()
                };
                format!("  {} {} {}", r.method, r.path, body)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for MockService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(inner: Arc<Inner>, req: axum::extract::Request) -> Response {
    let conn = req
        .extensions()
        .get::<ConnectInfo<ConnInfo>>()
        .map(|c| c.0.clone());
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let uri = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.to_string());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    let raw_body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let body = serde_json::from_slice(&raw_body).unwrap_or(Value::Null);
    let at = Instant::now();
    let reply = {
        let mut st = inner.state.lock().unwrap();
        st.requests.push(Request {
            method,
            path: path.clone(),
            uri,
            headers,
            body,
            raw_body,
            at,
            answered: None,
            remote: conn
                .as_ref()
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.remote),
        });
        let queued = st.queues.get_mut(&path).and_then(|q| q.pop_front());
        queued
            .or_else(|| st.defaults.get(&path).cloned())
            .or_else(|| st.fallback.clone())
            .unwrap_or_else(Reply::ok)
    };
    inner.count.send_modify(|n| *n += 1);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    {
        let mut st = inner.state.lock().unwrap();
        if let Some(r) = st
            .requests
            .iter_mut()
            .rev()
            .find(|r| r.at == at && r.path == path)
        {
            r.answered = Some(Instant::now());
        }
    }
    if reply.close {
        if let Some(c) = conn {
            c.kill.store(true, Ordering::SeqCst);
        }
        // Never written: the connection's IO now fails every read and write.
        return Response::new(Body::empty());
    }
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).expect("invalid HTTP status code");
    let h = resp.headers_mut();
    if let Some(ct) = &reply.content_type {
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_str(ct).expect("invalid content type"),
        );
    }
    for (k, v) in &reply.headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("invalid header name"),
            HeaderValue::from_str(v).expect("invalid header value"),
        );
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// A listener whose connections can be killed from the handler (Reply::close).

struct KillListener {
    inner: TcpListener,
}

#[derive(Clone, Debug)]
struct ConnInfo {
    remote: SocketAddr,
    kill: Arc<AtomicBool>,
}

impl Listener for KillListener {
    type Io = KillableIo;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (KillableIo, ConnInfo) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    return (
                        KillableIo {
                            inner: stream,
                            kill: kill.clone(),
                        },
                        ConnInfo { remote, kill },
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnInfo> {
        Ok(ConnInfo {
            remote: self.inner.local_addr()?,
            kill: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, KillListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

struct KillableIo {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed by Reply::close")
}

impl AsyncRead for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Uncompressed ("stored") gzip / zlib encodings, enough to test Content-Encoding handling.

fn deflate_stored_blocks(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65_535).collect()
    };
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        out.push(if i == last { 1 } else { 0 });
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate_stored_blocks(data));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    let mut out = vec![0x78, 0x01];
    out.extend(deflate_stored_blocks(data));
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}
