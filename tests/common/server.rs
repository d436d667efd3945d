//! The real `socketshark` binary as a child process, with its JSON log lines collected.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::config::Config;
use super::util::TempDir;

/// The event text of the ready line (shark emoji U+1F988 and two spaces).
pub const READY_EVENT: &str = "\u{1F988}  ready";
/// The event text of the line carrying the actual Prometheus port.
pub const METRICS_EVENT: &str = "metrics listening";

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the server binary: `$SOCKETSHARK_BIN` if set, else Cargo's
/// `CARGO_BIN_EXE_socketshark` (set when compiling the integration tests of /work/main).
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SOCKETSHARK_BIN") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_socketshark") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "no server binary: set SOCKETSHARK_BIN (CARGO_BIN_EXE_socketshark is only set for /work/main's integration tests)"
        ),
    }
}

/// Spawns `cmd` from one long-lived helper thread with `PR_SET_PDEATHSIG = SIGKILL`, so the
/// child dies if the test process dies (the signal fires when the *spawning thread* exits, hence
/// the dedicated thread that lives as long as the process).
pub fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("child-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        kill_with_parent(&mut cmd);
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("cannot start the child-spawner thread");
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (rtx, rrx) = mpsc::channel();
    tx.send((cmd, rtx)).expect("child-spawner thread is gone");
    rrx.recv().expect("child-spawner thread is gone")
}

fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Shared store of the log lines read from the child's stderr.
struct LogStore {
    lines: Mutex<Vec<Value>>,
    raw: Mutex<Vec<String>>,
    eof: AtomicBool,
    tx: watch::Sender<usize>,
}

impl LogStore {
    fn new() -> Arc<LogStore> {
        let (tx, _) = watch::channel(0);
        Arc::new(LogStore {
            lines: Mutex::new(Vec::new()),
            raw: Mutex::new(Vec::new()),
            eof: AtomicBool::new(false),
            tx,
        })
    }

    fn dump(&self) -> String {
        let raw = self.raw.lock().unwrap();
        if raw.is_empty() {
            "  (no output)".into()
        } else {
            raw.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

fn start_log_reader(stderr: impl Read + Send + 'static, store: Arc<LogStore>, tag: String) {
    let echo = std::env::var_os("SOCKETSHARK_TEST_LOG").is_some();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            if echo {
                eprintln!("[{tag}] {line}");
            }
            let value = match serde_json::from_str::<Value>(&line) {
                Ok(v @ Value::Object(_)) => v,
                _ => json!({"raw": line}),
            };
            store.raw.lock().unwrap().push(line);
            store.lines.lock().unwrap().push(value);
            store.tx.send_modify(|n| *n += 1);
        }
        store.eof.store(true, Ordering::SeqCst);
        store.tx.send_modify(|n| *n += 1);
    });
}

struct Spawned {
    child: Child,
    dir: TempDir,
    logs: Arc<LogStore>,
    stdout: Arc<Mutex<Vec<u8>>>,
}

fn spawn_server(config_toml: &str) -> Spawned {
    let dir = TempDir::new("server");
    let cfg_path = dir.write("socketshark.toml", config_toml);
    let bin = server_bin();
    let mut cmd = Command::new(&bin);
    cmd.arg("-c")
        .arg(&cfg_path)
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        spawn_child(cmd).unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
    let logs = LogStore::new();
    start_log_reader(
        child.stderr.take().unwrap(),
        logs.clone(),
        format!("socketshark:{}", child.id()),
    );
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let sink = stdout.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    Spawned {
        child,
        dir,
        logs,
        stdout,
    }
}

/// A running `socketshark -c <tempfile>` process. Killed (SIGKILL) on Drop if still running;
/// if the test is panicking, the collected log is printed to stderr then (unless it was already
/// echoed because `SOCKETSHARK_TEST_LOG` is set).
pub struct Server {
    pid: u32,
    child: Mutex<Option<Child>>,
    exit: Mutex<Option<ExitStatus>>,
    port: u16,
    secure: bool,
    has_metrics: bool,
    logs: Arc<LogStore>,
    stdout: Arc<Mutex<Vec<u8>>>,
    config: String,
    _dir: TempDir,
}

impl Server {
    /// Writes the TOML to a temp file, starts the binary and waits (10 s) for the ready line.
    /// Panics with the collected log if the process exits first or the line does not come.
    /// `metrics_port()` works if the text mentions `prometheus`.
    pub async fn start(config_toml: &str) -> Server {
        Server::start_inner(config_toml, config_toml.contains("prometheus")).await
    }

    /// [`Server::start`] with a [`Config`].
    pub async fn start_config(cfg: &Config) -> Server {
        Server::start_inner(&cfg.toml(), cfg.has_prometheus()).await
    }

    async fn start_inner(config_toml: &str, has_metrics: bool) -> Server {
        let Spawned {
            child,
            dir,
            logs,
            stdout,
        } = spawn_server(config_toml);
        let mut server = Server {
            pid: child.id(),
            child: Mutex::new(Some(child)),
            exit: Mutex::new(None),
            port: 0,
            secure: false,
            has_metrics,
            logs,
            stdout,
            config: config_toml.to_string(),
            _dir: dir,
        };
        let mut rx = server.logs.tx.subscribe();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            rx.borrow_and_update();
            let ready = server
                .logs
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| is_event(l, READY_EVENT))
                .cloned();
            if let Some(line) = ready {
                server.port = match json_u16(&line["port"]) {
                    Some(p) => p,
                    None => panic!(
                        "ready line without a usable `port`: {line}\nlog:\n{}",
                        server.logs.dump()
                    ),
                };
                server.secure = line["secure"].as_bool().unwrap_or(false);
                return server;
            }
            if let Some(status) = server.try_wait() {
                server.wait_eof(Duration::from_secs(2)).await;
                panic!(
                    "socketshark exited ({status}) before its ready line.\nconfig:\n{config_toml}\nlog:\n{}",
                    server.logs.dump()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "socketshark did not log its ready line ({READY_EVENT:?}) within {START_TIMEOUT:?}.\nconfig:\n{config_toml}\nlog:\n{}",
                    server.logs.dump()
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
        }
    }

    /// Starts the binary with a configuration that must make it fail; waits up to `timeout`
    /// for it to exit (panics, killing it, if it does not). Returns the exit status and the
    /// whole stderr text.
    pub async fn start_expect_failure(
        config_toml: &str,
        timeout: Duration,
    ) -> (ExitStatus, String) {
        let Spawned {
            mut child,
            dir: _dir,
            logs,
            stdout: _,
        } = spawn_server(config_toml);
        let deadline = tokio::time::Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "socketshark was expected to fail but still ran after {timeout:?}.\nconfig:\n{config_toml}\nlog:\n{}",
                    logs.dump()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let eof_deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !logs.eof.load(Ordering::SeqCst) && tokio::time::Instant::now() < eof_deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let text = logs.raw.lock().unwrap().join("\n");
        (status, text)
    }

    /// The actual WebSocket port (from the ready line).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `secure` from the ready line.
    pub fn secure(&self) -> bool {
        self.secure
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `ws://127.0.0.1:PORT/` (`wss://` if the server said `secure: true`).
    pub fn ws_url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The configuration text the server was started with.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Replaces the configuration file the server reads on a reload (SIGHUP).
    pub fn rewrite_config(&self, config_toml: &str) {
        self._dir.write("socketshark.toml", config_toml);
    }

    /// The Prometheus port from the `metrics listening` line, waiting up to 5 s for it;
    /// None if the configuration has no `[metrics.prometheus]`.
    /// The publish API's port (`[api]`), from its `publish API listening` log line (10 s).
    pub async fn api_port(&self) -> u16 {
        let line = self
            .wait_log(
                |l| is_event(l, "publish API listening"),
                Duration::from_secs(10),
            )
            .await;
        match json_u16(&line["port"]) {
            Some(p) if p != 0 => p,
            _ => panic!(
                "`publish API listening` line without a usable port: {line}\nlog:\n{}",
                self.log_dump()
            ),
        }
    }

    pub async fn metrics_port(&self) -> Option<u16> {
        if !self.has_metrics {
            return None;
        }
        let line = self
            .wait_log(|l| is_event(l, METRICS_EVENT), Duration::from_secs(5))
            .await;
        match json_u16(&line["port"]) {
            Some(p) => Some(p),
            None => panic!("`{METRICS_EVENT}` line without a usable `port`: {line}"),
        }
    }

    /// Every log line so far (JSON objects; non-JSON lines as `{"raw": line}`).
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lines.lock().unwrap().clone()
    }

    /// The raw stderr text so far.
    pub fn stderr_text(&self) -> String {
        self.logs.raw.lock().unwrap().join("\n")
    }

    /// What the process wrote to stdout so far (the spec says: nothing).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).to_string()
    }

    /// The collected log, one line per entry (for panic messages).
    pub fn log_dump(&self) -> String {
        self.logs.dump()
    }

    /// Number of log lines so far: pass it to [`Server::wait_log_since`] /
    /// [`Server::logs_since`] to look only at later lines.
    pub fn log_mark(&self) -> usize {
        self.logs.lines.lock().unwrap().len()
    }

    /// Log lines from index `mark` on.
    pub fn logs_since(&self, mark: usize) -> Vec<Value> {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .skip(mark)
            .cloned()
            .collect()
    }

    /// Lines whose `event` equals `event`.
    pub fn find_logs(&self, event: &str) -> Vec<Value> {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| is_event(l, event))
            .cloned()
            .collect()
    }

    /// Is there a line whose `event` equals `event`?
    pub fn has_log(&self, event: &str) -> bool {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| is_event(l, event))
    }

    /// Number of lines whose `event` equals `event`.
    pub fn count_log(&self, event: &str) -> usize {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| is_event(l, event))
            .count()
    }

    /// Waits for the first line (from the start of the log) matching `pred`; panics with the
    /// log on timeout.
    pub async fn wait_log(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.wait_log_since(0, pred, timeout).await
    }

    /// Waits for the first line with index ≥ `mark` matching `pred`.
    pub async fn wait_log_since(
        &self,
        mark: usize,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let mut rx = self.logs.tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next = mark;
        loop {
            rx.borrow_and_update();
            {
                let lines = self.logs.lines.lock().unwrap();
                if let Some(l) = lines.iter().skip(next).find(|l| pred(l)) {
                    return l.clone();
                }
                next = next.max(lines.len());
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "no matching socketshark log line within {timeout:?}. log:\n{}",
                    self.logs.dump()
                );
            }
        }
    }

    /// Waits for a line whose `event` equals `event`.
    pub async fn wait_event(&self, event: &str, timeout: Duration) -> Value {
        self.wait_log(|l| is_event(l, event), timeout).await
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGINT`, ...) unless the process has exited.
    pub fn signal(&self, sig: libc::c_int) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
            unsafe {
                libc::kill(self.pid as libc::pid_t, sig);
            }
        }
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        if let Some(s) = *self.exit.lock().unwrap() {
            return Some(s);
        }
        let mut guard = self.child.lock().unwrap();
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(Some(s)) => {
                *self.exit.lock().unwrap() = Some(s);
                Some(s)
            }
            _ => None,
        }
    }

    /// Exit status if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.try_wait()
    }

    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    async fn wait_eof(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.logs.eof.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the process to exit (panics with the log on timeout; the process is then
    /// killed by Drop). The stderr reader is drained before returning, so `logs()` is complete.
    pub async fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                self.wait_eof(Duration::from_secs(2)).await;
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "socketshark did not exit within {timeout:?}. log:\n{}",
                    self.logs.dump()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then [`Server::wait_exit`]; asserts exit status 0.
    pub async fn stop(&self, timeout: Duration) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(timeout).await;
        assert!(
            status.success(),
            "socketshark exited with {status}. log:\n{}",
            self.logs.dump()
        );
    }

    /// SIGKILL and reap.
    pub fn kill(&self) {
        if self.try_wait().is_some() {
            return;
        }
        let mut guard = self.child.lock().unwrap();
        if let Some(child) = guard.as_mut() {
            let _ = child.kill();
            if let Ok(s) = child.wait() {
                *self.exit.lock().unwrap() = Some(s);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let running = guard
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if running {
            let child = guard.as_mut().unwrap();
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() && std::env::var_os("SOCKETSHARK_TEST_LOG").is_none() {
            let raw = self.logs.raw.lock().unwrap_or_else(|e| e.into_inner());
            let skip = raw.len().saturating_sub(300);
            eprintln!(
                "---- socketshark (pid {}) log, last {} line(s) ----",
                self.pid,
                raw.len() - skip
            );
            for l in raw.iter().skip(skip) {
                eprintln!("{l}");
            }
            eprintln!("---- end of socketshark log ----");
        }
    }
}

/// Does the log line's `event` equal `event`?
pub fn is_event(line: &Value, event: &str) -> bool {
    line.get("event").and_then(Value::as_str) == Some(event)
}

fn json_u16(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
