//! The processes a fault run drives: a dedicated redis-server and our server (both started,
//! signalled, restarted and watched from here), plus /proc and /metrics readings.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn pinned(cpu: &Option<String>, program: &str) -> Command {
    match cpu {
        Some(c) if !c.is_empty() => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started; no memory is shared.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A redis-server on a fixed port (so the server's config stays valid across restarts).
pub struct Redis {
    pub port: u16,
    cpu: Option<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn new(port: u16, cpu: Option<String>, work: &Path) -> Redis {
        Redis {
            port,
            cpu,
            log: work.join(format!("redis-{port}.log")),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts redis-server and waits until it answers PING (10 s).
    pub async fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = pinned(&self.cpu, "redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--client-output-buffer-limit", "pubsub 0 0 0"])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        self.child = Some(child);
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ping = async {
                let mut c = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut c).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "redis-server on port {} did not answer PING within 10 s (log {})",
            self.port,
            self.log.display()
        ))
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            signal(pid, sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs one command on a fresh connection (1 s timeout).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let q = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            cmd.query_async::<T>(&mut c).await
        };
        match tokio::time::timeout(Duration::from_secs(2), q).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("redis query timed out".into()),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
        self.kill();
    }
}

/// One line of the server's stderr, with the time this process read it.
pub struct LogLine {
    pub at: Instant,
    pub text: String,
}

#[derive(Default)]
struct ServerState {
    /// Every line but the two per-session info lines (`connection open` / `connection closed`).
    lines: Vec<LogLine>,
    session_lines: u64,
    panics: Vec<String>,
    exited: Option<(Instant, Option<i32>)>,
}

/// Our server, started with `BIN -c CONFIG`, its stderr read by a thread (every line is also
/// appended to a log file in the work directory).
pub struct Server {
    pub pid: u32,
    state: Arc<Mutex<ServerState>>,
}

impl Server {
    pub fn start(
        bin: &str,
        config: &Path,
        cpu: &Option<String>,
        log: &Path,
    ) -> Result<Server, String> {
        let mut child = pinned(cpu, bin)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the server {bin}: {e}"))?;
        let pid = child.id();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let st = state.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(text) = line else { break };
                let at = Instant::now();
                let _ = writeln!(file, "{text}");
                let mut s = st.lock().unwrap();
                if text.contains("panicked") {
                    s.panics.push(text.clone());
                }
                if text.contains("\"connection open\"") || text.contains("\"connection closed\"") {
                    s.session_lines += 1;
                } else {
                    s.lines.push(LogLine { at, text });
                }
            }
        });
        let st = state.clone();
        std::thread::spawn(move || {
            let status = child.wait().ok().and_then(|s| s.code());
            st.lock().unwrap().exited = Some((Instant::now(), status));
        });
        Ok(Server { pid, state })
    }

    /// Waits for the ready line; returns the WebSocket port it names.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<u16, String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.state.lock().unwrap();
                for l in &s.lines {
                    if l.text.contains("ready") {
                        if let Some(port) = json_u64(&l.text, "port") {
                            return Ok(port as u16);
                        }
                    }
                }
                if let Some((_, code)) = s.exited {
                    let tail: Vec<&str> = s
                        .lines
                        .iter()
                        .rev()
                        .take(10)
                        .map(|l| l.text.as_str())
                        .collect();
                    return Err(format!(
                        "the server exited ({code:?}) before it was ready; last lines: {tail:?}"
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err("the server did not log its ready line in time".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// When the first line containing `needle` was read (waits up to `timeout`).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.find_log(needle) {
                return Some(at);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn find_log(&self, needle: &str) -> Option<Instant> {
        let s = self.state.lock().unwrap();
        s.lines
            .iter()
            .find(|l| l.text.contains(needle))
            .map(|l| l.at)
    }

    pub fn panics(&self) -> Vec<String> {
        self.state.lock().unwrap().panics.clone()
    }

    pub fn exited(&self) -> Option<(Instant, Option<i32>)> {
        self.state.lock().unwrap().exited
    }

    /// Waits for the process to exit (up to `timeout`).
    pub async fn wait_exit(&self, timeout: Duration) -> Option<(Instant, Option<i32>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.exited() {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) -> Option<i32> {
        if self.exited().is_none() {
            signal(self.pid, libc::SIGTERM);
        }
        match self.wait_exit(grace).await {
            Some((_, code)) => code,
            None => {
                signal(self.pid, libc::SIGKILL);
                self.wait_exit(Duration::from_secs(5))
                    .await
                    .and_then(|e| e.1)
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited().is_none() {
            signal(self.pid, libc::SIGKILL);
        }
    }
}

/// Finds `"key":` followed by an unsigned integer in a JSON line (no full parse).
fn json_u64(text: &str, key: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get(key)?.as_u64()
}

/// What /proc says about a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

pub fn proc_stats(pid: u32) -> Result<ProcStats, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?;
    Ok(ProcStats {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds,
    })
}

impl ProcStats {
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({"rss_kib": self.rss_kib, "threads": self.threads, "fds": self.fds})
    }
}

/// `GET /metrics` on 127.0.0.1:PORT: every sample, keyed by `name{labels}`.
pub async fn scrape(port: u16) -> Result<BTreeMap<String, f64>, String> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .map_err(|_| "metrics scrape timed out".to_string())?
        .map_err(|e| format!("metrics scrape: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.rsplit_once(' ') {
            if let Ok(v) = v.parse::<f64>() {
                out.insert(k.to_string(), v);
            }
        }
    }
    Ok(out)
}

/// The sum of every sample of the family `name` (all label sets).
pub fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Established IPv4 TCP connections (in this network namespace) whose remote port is `port`:
/// with only the server calling the bench's HTTP service, its pooled keep-alive connections.
pub fn established_to(port: u16) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[3] == "01"
                && f[2]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count() as u64
}
