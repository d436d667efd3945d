//! CPU time of this process and of the server (from /proc), to tell which side saturates.

use std::time::Instant;

use serde_json::{Value, json};

/// User + system CPU seconds of `pid` (`None`: this process).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// Per-CPU (busy, total) jiffies from /proc/stat; busy counts everything but idle and iowait,
/// so softirq time (loopback TCP processing) is included.
fn cpu_jiffies() -> Vec<(String, u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?.to_string();
            let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
            Some((name, total - idle, total))
        })
        .collect()
}

/// Measures the CPU used by the bench and the server between `start()` and `json()`.
pub struct CpuMeter {
    server: Option<u32>,
    t0: Instant,
    bench0: Option<f64>,
    server0: Option<f64>,
    cpus0: Vec<(String, u64, u64)>,
    /// Named groups of processes (fanout's two nodes, the brokers): each pid's CPU seconds at
    /// the start.
    groups: Vec<(String, Vec<(u32, Option<f64>)>)>,
}

impl CpuMeter {
    pub fn start(server: Option<u32>) -> CpuMeter {
        CpuMeter {
            server,
            t0: Instant::now(),
            bench0: cpu_seconds(None),
            server0: server.and_then(|p| cpu_seconds(Some(p))),
            cpus0: cpu_jiffies(),
            groups: Vec::new(),
        }
    }

    /// Also measures the processes `pids` as `name` (`{"name": [cores, ...], "name_total":
    /// cores}` in [`CpuMeter::json`]); nothing when `pids` is empty.
    pub fn group(mut self, name: &str, pids: &[u32]) -> CpuMeter {
        if !pids.is_empty() {
            let start = pids.iter().map(|&p| (p, cpu_seconds(Some(p)))).collect();
            self.groups.push((name.to_string(), start));
        }
        self
    }

    /// `{"bench": cores, "server": cores, "cpu0": busy, ...}`: average cores used by each process,
    /// and how busy each CPU of the machine was (whoever used it), over the interval.
    pub fn json(&self) -> Value {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let used = |before: Option<f64>, pid: Option<u32>| -> Value {
            match (before, cpu_seconds(pid)) {
                (Some(a), Some(b)) => (((b - a) / wall * 100.0).round() / 100.0).into(),
                _ => Value::Null,
            }
        };
        let mut out = json!({
            "bench": used(self.bench0, None),
            "server": if self.server.is_some() { used(self.server0, self.server) } else { Value::Null },
        });
        for (name, pids) in &self.groups {
            let each: Vec<Value> = pids.iter().map(|&(p, b)| used(b, Some(p))).collect();
            let total: Option<f64> = each.iter().map(Value::as_f64).sum();
            out[format!("{name}_total")] =
                total.map_or(Value::Null, |t| ((t * 100.0).round() / 100.0).into());
            out[name.as_str()] = each.into();
        }
        for ((name, busy, total), (name0, busy0, total0)) in
            cpu_jiffies().into_iter().zip(&self.cpus0)
        {
            if &name == name0 && total > *total0 {
                let f = (busy - busy0) as f64 / (total - total0) as f64;
                out[name] = ((f * 100.0).round() / 100.0).into();
            }
        }
        out
    }
}

/// Options of the quiet-machine gate (the test machine may be shared).
#[derive(clap::Args, Debug, Clone)]
pub struct QuietArgs {
    /// Before each measurement, wait until no CPU is busier than this fraction over 0.5 s
    /// (other processes on a shared machine); 0 disables the gate.
    #[arg(long, default_value_t = 0.25)]
    pub quiet_threshold: f64,
    /// Give up waiting for a quiet machine after this many seconds (and measure anyway).
    #[arg(long, default_value_t = 30.0)]
    pub quiet_max_wait: f64,
}

/// Waits until the machine is quiet (see [`QuietArgs`]); returns
/// `{"waited_s": .., "busiest_cpu": ..}` (the last sample) to record with the figures.
pub async fn wait_quiet(q: &QuietArgs) -> Value {
    if q.quiet_threshold <= 0.0 {
        return Value::Null;
    }
    let start = Instant::now();
    loop {
        let before = cpu_jiffies();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let busiest = cpu_jiffies()
            .iter()
            .zip(&before)
            .filter(|(a, b)| a.2 > b.2)
            .map(|(a, b)| (a.1 - b.1) as f64 / (a.2 - b.2) as f64)
            .fold(0.0, f64::max);
        let waited = start.elapsed().as_secs_f64();
        if busiest <= q.quiet_threshold || waited >= q.quiet_max_wait {
            return json!({
                "waited_s": (waited * 10.0).round() / 10.0,
                "busiest_cpu": (busiest * 100.0).round() / 100.0,
                "quiet": busiest <= q.quiet_threshold,
            });
        }
    }
}
