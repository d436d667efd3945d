//! A private `redis-server` process per test.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::util::{TempDir, free_port};

const NOT_FOUND: &str = "redis-server not found: install it (apt-get install -y redis-server)";

/// A `redis-server` on its own port (127.0.0.1), no persistence (until [`Redis::keep_data`]),
/// cwd a temp dir. Killed (SIGKILL) on Drop. All methods take `&self`, so it can be shared
/// freely.
pub struct Redis {
    port: u16,
    dir: TempDir,
    /// Restarts load the append-only file (set by [`Redis::keep_data`]).
    persistent: AtomicBool,
    child: Mutex<Option<Child>>,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Redis {
    /// Starts a server on a free port and waits until it answers PING (10 s).
    /// Panics if `redis-server` is not on PATH.
    pub async fn start() -> Redis {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = TempDir::new("redis");
            let port = free_port();
            let child = spawn_redis(&dir, port, false);
            let redis = Redis {
                port,
                dir,
                persistent: AtomicBool::new(false),
                child: Mutex::new(Some(child)),
                conn: tokio::sync::Mutex::new(None),
            };
            match redis.wait_ready(Duration::from_secs(10)).await {
                Ok(()) => return redis,
                // Most likely the port was taken meanwhile: drop (kill) it and try another one.
                Err(log) => last_log = log,
            }
        }
        panic!("could not start redis-server (5 attempts); last output:\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// Waits until the process answers PING; Err(log) if it exited or did not answer in time.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}):\n{}",
                    self.server_log()
                ));
            }
            if let Ok(mut c) = connect(self.port, Duration::from_millis(500)).await {
                let info: Result<String, _> =
                    redis::cmd("INFO").arg("server").query_async(&mut c).await;
                if let Ok(info) = info {
                    // Make sure the server answering is ours, not another test's on a port
                    // that was briefly free.
                    let pid = info
                        .lines()
                        .find_map(|l| l.strip_prefix("process_id:"))
                        .and_then(|p| p.trim().parse::<u32>().ok());
                    if pid.is_some() && pid == self.pid() {
                        *self.conn.lock().await = Some(c);
                        return Ok(());
                    }
                    return Err(format!(
                        "port {} answered by another redis-server (pid {pid:?})",
                        self.port
                    ));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "redis-server did not answer PING within {timeout:?}:\n{}",
                    self.server_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn try_wait(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().unwrap();
        let child = guard.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// The redis-server's own output (stdout + stderr).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Runs one command on a (cached) connection; reconnects once on failure.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut last_err = String::new();
        for _ in 0..2 {
            let mut guard = self.conn.lock().await;
            if guard.is_none() {
                match connect(self.port, Duration::from_secs(2)).await {
                    Ok(c) => *guard = Some(c),
                    Err(e) => {
                        last_err = e.to_string();
                        continue;
                    }
                }
            }
            let conn = guard.as_mut().unwrap();
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            match cmd.query_async::<T>(conn).await {
                Ok(v) => return v,
                Err(e) => {
                    last_err = e.to_string();
                    *guard = None;
                }
            }
        }
        panic!(
            "redis command {args:?} on port {} failed: {last_err}",
            self.port
        );
    }

    /// Runs an arbitrary command given as byte arguments (e.g. non-UTF-8 payloads).
    pub async fn query_bytes(&self, args: &[&[u8]]) -> redis::Value {
        let mut last_err = String::new();
        for _ in 0..2 {
            let mut guard = self.conn.lock().await;
            if guard.is_none() {
                match connect(self.port, Duration::from_secs(2)).await {
                    Ok(c) => *guard = Some(c),
                    Err(e) => {
                        last_err = e.to_string();
                        continue;
                    }
                }
            }
            let conn = guard.as_mut().unwrap();
            let mut cmd =
                redis::cmd(std::str::from_utf8(args[0]).expect("command name must be UTF-8"));
            for a in &args[1..] {
                cmd.arg(*a);
            }
            match cmd.query_async::<redis::Value>(conn).await {
                Ok(v) => return v,
                Err(e) => {
                    last_err = e.to_string();
                    *guard = None;
                }
            }
        }
        panic!("redis command on port {} failed: {last_err}", self.port);
    }

    /// PUBLISH; returns the number of receivers (Redis clients subscribed to the channel).
    pub async fn publish(&self, channel: &str, payload: &str) -> i64 {
        self.query(&["PUBLISH", channel, payload]).await
    }

    /// PUBLISH of the JSON serialisation of `payload`.
    pub async fn publish_json(&self, channel: &str, payload: &serde_json::Value) -> i64 {
        self.publish(channel, &payload.to_string()).await
    }

    /// PUBLISH of arbitrary bytes (e.g. invalid UTF-8).
    pub async fn publish_bytes(&self, channel: &str, payload: &[u8]) -> i64 {
        match self
            .query_bytes(&[b"PUBLISH", channel.as_bytes(), payload])
            .await
        {
            redis::Value::Int(n) => n,
            other => panic!("unexpected PUBLISH answer {other:?}"),
        }
    }

    /// `PUBSUB CHANNELS`, sorted.
    pub async fn pubsub_channels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.query(&["PUBSUB", "CHANNELS"]).await;
        v.sort();
        v
    }

    /// `PUBSUB NUMSUB channel` → number of subscribers of that channel.
    pub async fn numsub(&self, channel: &str) -> i64 {
        let v: Vec<redis::Value> = self.query(&["PUBSUB", "NUMSUB", channel]).await;
        match v.get(1) {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("unexpected PUBSUB NUMSUB answer {other:?}"),
        }
    }

    /// Polls `PUBSUB CHANNELS` (every 10 ms) until it equals `expected` as a set; panics with the
    /// actual set on timeout.
    pub async fn wait_channels(&self, expected: &[&str], timeout: Duration) {
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        want.dedup();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.pubsub_channels().await;
            if got == want {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("PUBSUB CHANNELS: expected {want:?} within {timeout:?}, got {got:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Number of connected clients (`CLIENT LIST`), including the harness's own connection.
    pub async fn client_count(&self) -> usize {
        let list: String = self.query(&["CLIENT", "LIST"]).await;
        list.lines().filter(|l| !l.trim().is_empty()).count()
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the pid of our own (not yet reaped) child.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }

    /// Kills the process (SIGKILL) and reaps it. Idempotent.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(mut g) = self.conn.try_lock() {
            *g = None;
        }
    }

    /// Turns on the append-only file (`appendfsync always`) and waits until it is written, so
    /// that a [`Redis::restart`], even after a SIGKILL, comes back with every write it
    /// acknowledged.
    pub async fn keep_data(&self) {
        let _: () = self.query(&["CONFIG", "SET", "appendonly", "yes"]).await;
        self.persistent.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = self.query(&["INFO", "persistence"]).await;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            if field("aof_enabled") == "1"
                && field("aof_rewrite_in_progress") == "0"
                && field("aof_rewrite_scheduled") == "0"
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis did not write its append-only file within 10 s:\n{info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP: the server stops answering anything (connections stay open).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Redis::freeze`].
    pub fn unfreeze(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Stops the server (if running) and starts a new one on the same port; waits for PING.
    pub async fn restart(&self) {
        self.stop();
        *self.conn.lock().await = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let child = spawn_redis(
                &self.dir,
                self.port,
                self.persistent.load(Ordering::Relaxed),
            );
            *self.child.lock().unwrap() = Some(child);
            match self.wait_ready(Duration::from_secs(10)).await {
                Ok(()) => return,
                Err(log) => {
                    self.stop();
                    if tokio::time::Instant::now() >= deadline {
                        panic!(
                            "could not restart redis-server on port {}: {log}",
                            self.port
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// True while the process has not exited (a frozen server counts as running).
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().unwrap();
        match guard.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn connect(port: u16, timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

fn spawn_redis(dir: &TempDir, port: u16, persistent: bool) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("redis.log"))
        .expect("cannot create redis.log");
    let log2 = log.try_clone().expect("cannot clone redis.log handle");
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        if persistent { "yes" } else { "no" },
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
    ])
    .current_dir(dir.path())
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log2);
    match super::server::spawn_child(cmd) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{NOT_FOUND}"),
        Err(e) => panic!("cannot spawn redis-server: {e}"),
    }
}
