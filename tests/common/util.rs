//! Small helpers: temp dirs, ports, sleeping, timestamps, raw HTTP, Prometheus text.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A directory under `std::env::temp_dir()` with a unique name, removed (recursively) on Drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/socketshark-test-<prefix>-<pid>-<n>-<nanos>`.
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "socketshark-test-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
pub fn free_port() -> u16 {
    // Never hand out the same port twice in this process: two tests that pick the same free
    // port before either binds it would otherwise share (and kill) each other's servers.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind 127.0.0.1:0");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A port on 127.0.0.1 where nothing listens, for the whole test process: a TCP socket is bound
/// to it but never `listen()`s (connections are refused), and it is never closed, so no other
/// test can get that port.
pub fn unreachable_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        // SAFETY: plain socket syscalls on a fresh fd with properly initialised arguments.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket() failed");
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = 0;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(
                fd,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                len,
            );
            assert_eq!(rc, 0, "bind() failed");
            let mut out: libc::sockaddr_in = std::mem::zeroed();
            let mut out_len = len;
            let rc = libc::getsockname(
                fd,
                &mut out as *mut libc::sockaddr_in as *mut libc::sockaddr,
                &mut out_len,
            );
            assert_eq!(rc, 0, "getsockname() failed");
            // The fd is deliberately leaked: the port stays reserved until the process exits.
            u16::from_be(out.sin_port)
        }
    })
}

/// `http://127.0.0.1:<unreachable_port()><path>`: every connection attempt is refused.
pub fn unreachable_url(path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", unreachable_port())
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Awaits `fut`, panicking with `what` if it takes longer than `timeout`.
pub async fn within<T>(timeout: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {timeout:?}: {what}"),
    }
}

/// Polls `cond` every 10 ms until it is true; panics with `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `s` looks like Python's `isoformat()` of an aware UTC datetime:
/// `2026-11-24T21:13:15.563448+00:00` or, with zero microseconds, `2026-11-24T21:13:15+00:00`.
pub fn assert_iso_utc(s: &str) {
    assert!(
        iso_utc_micros(s).is_some(),
        "not an ISO-8601 UTC timestamp of the form YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00: {s:?}"
    );
}

/// Like [`assert_iso_utc`] for a JSON value (must be a string).
pub fn assert_iso_utc_value(v: &serde_json::Value) {
    match v.as_str() {
        Some(s) => assert_iso_utc(s),
        None => panic!("expected an ISO-8601 UTC timestamp string, got {v}"),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00` into microseconds since the Unix epoch.
/// Returns None for anything else (other offsets, wrong digit counts, `Z`, ...).
pub fn iso_utc_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let rest = s.strip_suffix("+00:00")?;
    let (main, frac) = match rest.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (rest, None),
    };
    if main.len() != 19 || b.len() < 25 {
        return None;
    }
    let m = main.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &main[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if m[4] != b'-' || m[7] != b'-' || m[10] != b'T' || m[13] != b':' || m[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, se) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let micros = match frac {
        None => 0,
        Some(f) if f.len() == 6 && f.bytes().all(|c| c.is_ascii_digit()) => {
            f.parse::<i64>().ok()?
        }
        Some(_) => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000) + micros)
}

/// Current time in microseconds since the Unix epoch (to compare with [`iso_utc_micros`]).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A parsed HTTP/1.x response from [`http_get`] / [`http_raw`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes to 127.0.0.1:port and returns everything the peer sends back until it closes
/// the connection or `timeout` passes (whatever arrived by then). Runs on a blocking thread.
pub async fn tcp_exchange(port: u16, request: Vec<u8>, timeout: Duration) -> Vec<u8> {
    tokio::task::spawn_blocking(move || {
        let mut s = StdTcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
        s.set_read_timeout(Some(timeout)).ok();
        let _ = s.write_all(&request);
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        while std::time::Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        out
    })
    .await
    .expect("tcp_exchange thread panicked")
}

/// Parses a raw HTTP/1.x response (handles `Transfer-Encoding: chunked`).
pub fn parse_http_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_txt = String::from_utf8_lossy(&rest[..pos]).to_string();
            let size = usize::from_str_radix(size_txt.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[pos + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// `GET path` on 127.0.0.1:port (HTTP/1.1, `Connection: close`); panics if no HTTP answer
/// arrives within 5 s.
pub async fn http_get(port: u16, path: &str) -> HttpResponse {
    http_get_with(port, path, &[]).await
}

/// Like [`http_get`] with extra request headers (e.g. `("Accept", "application/openmetrics-text")`).
pub async fn http_get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let raw = tcp_exchange(port, req.into_bytes(), Duration::from_secs(5)).await;
    parse_http_response(&raw).unwrap_or_else(|| {
        panic!(
            "no valid HTTP response from 127.0.0.1:{port}{path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Value of one sample in Prometheus text exposition, e.g.
/// `prom_value(text, "socketshark_connection_count")` or
/// `prom_value(text, r#"socketshark_event_success_counter{event="ping",status="success"}"#)`.
/// Labels must be written in the order the exposition uses. None if the sample is absent.
pub fn prom_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(sample)?;
        if !rest.starts_with(' ') {
            return None;
        }
        let v = rest.split_whitespace().next()?;
        match v {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => v.parse().ok(),
        }
    })
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), with a `Content-Length`
/// body; returns the parsed response.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let raw = tcp_exchange(port, req, secs(10.0)).await;
    parse_http_response(&raw).unwrap_or_else(|| {
        panic!(
            "no valid HTTP response to {method} {path} on 127.0.0.1:{port}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}
