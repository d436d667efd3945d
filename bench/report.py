#!/usr/bin/env python3
"""Builds bench/RESULTS.md from the JSON lines compare.sh collected (called by compare.sh)."""

import datetime
import json
import os
import platform
import subprocess

WORK = os.environ["WORK"]
OUT = os.environ["OUT"]
E = os.environ


def load(kind, scenario):
    try:
        with open(os.path.join(WORK, f"{kind}-{scenario}.json")) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "(not run)"


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(ref, ours):
    if not isinstance(ref, (int, float)) or not isinstance(ours, (int, float)) or ref == 0:
        return "n/a"
    return f"{ours / ref:.2f}x"


F1 = f"fanout {E['F1_CLIENTS']} clients / {E['F1_TOPICS']} topics"
F2 = f"fanout {E['F2_CLIENTS']} clients / {E['F2_TOPICS']} topics"
CON = f"connect {E['CONNECT_CLIENTS']} clients"
IDLE = f"idle {E['IDLE_CLIENTS']} clients x {E['IDLE_SUBS']} sub"
ECHO = f"echo {E['ECHO_CLIENTS']} clients, {E['ECHO_DURATION']} s"

# A row computed from the whole JSON line by its transform, with a ratio (a `None` path: without).
COMPUTED = ("*",)


def per_connect_us(d):
    """Server CPU time per connect + subscribe: cores used over the run / connects per second."""
    cores = get(d, "cpu_cores", "server")
    rate = d.get("connects_per_s")
    if not isinstance(cores, (int, float)) or not rate:
        return None
    return cores / rate * 1e6


# (scenario label, file, metric label, path into the JSON, kb->MiB etc. transform)
ROWS = []
for label, f in ((F1, "fanout1"), (F2, "fanout2")):
    ROWS += [
        (label, f, "max sustainable publish rate, msgs/s (p99 < 50 ms, 0 loss) ↑", ("max_rate",), None),
        (label, f, "delivered msgs/s at that rate ↑", ("max_delivered_per_s",), None),
        (label, f, "latency p50 at that rate, ms", ("best", "latency", "p50_ms"), None),
        (label, f, "latency p99 at that rate, ms", ("best", "latency", "p99_ms"), None),
        (label, f, "server CPU at that rate, cores (of 1)", ("best", "cpu_cores", "server"), None),
        (label, f, "load-tool CPU at that rate, cores (of 1)", ("best", "cpu_cores", "bench"), None),
        (label, f, "CPU 0 busy at that rate (server + its kernel/softirq time)", ("best", "cpu_cores", "cpu0"), None),
        (label, f, "CPU 1 busy at that rate (load tool + redis)", ("best", "cpu_cores", "cpu1"), None),
        (label, f, "time to connect + subscribe all clients, s ↓", ("setup_s",), None),
    ]
ROWS += [
    (CON, "connect", "connects + subscribes per second ↑", ("connects_per_s",), None),
    (CON, "connect", "connect (handshake) latency p99, ms ↓", ("connect_latency", "p99_ms"), None),
    (CON, "connect", "subscribe latency p50, ms ↓", ("subscribe_latency", "p50_ms"), None),
    (CON, "connect", "subscribe latency p99, ms ↓", ("subscribe_latency", "p99_ms"), None),
    (CON, "connect", "server CPU, cores (of 1)", ("cpu_cores", "server"), None),
    (CON, "connect", "load-tool CPU, cores (of 1)", ("cpu_cores", "bench"), None),
    (CON, "connect", "CPU 1 busy (load tool + redis)", ("cpu_cores", "cpu1"), None),
    # When CPU 1 is saturated the rate is the load tool's: the server's cost per connect is then
    # the figure that compares the servers.
    (CON, "connect", "server CPU per connect + subscribe, µs ↓", COMPUTED, lambda d: per_connect_us(d)),
    (IDLE, "idle", "RSS per connection, KiB ↓", ("rss_per_conn_kib",), None),
    (IDLE, "idle", "RSS at start, MiB ↓", ("rss_before_kib",), lambda v: v / 1024),
    (IDLE, "idle", "RSS with all clients, MiB ↓", ("rss_after_kib",), lambda v: v / 1024),
    (ECHO, "echo", "round trips per second ↑", ("round_trips_per_s",), None),
    (ECHO, "echo", "round-trip latency p50, ms ↓", ("latency", "p50_ms"), None),
    (ECHO, "echo", "round-trip latency p99, ms ↓", ("latency", "p99_ms"), None),
    (ECHO, "echo", "server CPU, cores (of 1)", ("cpu_cores", "server"), None),
    (ECHO, "echo", "load-tool CPU (clients + HTTP service), cores (of 1)", ("cpu_cores", "bench"), None),
]
SCENARIOS = [("fanout1", F1), ("fanout2", F2), ("connect", CON), ("idle", IDLE), ("echo", ECHO)]

# Browser-like clients (issue 19): every client offers permessage-deflate and inflates.
F1D = f"fanout {E['F1_CLIENTS']} clients / {E['F1_TOPICS']} topics, deflate"
IDLED = f"idle {E['IDLE_CLIENTS']} clients x {E['IDLE_SUBS']} sub, deflate"
WB = f"wirebytes {E.get('WB_MESSAGES', '1000')} records, no offer"
WBD = f"wirebytes {E.get('WB_MESSAGES', '1000')} records, deflate"


def negotiated(d):
    """The extension as answered: "no" (declined), the parameters, or None when not run."""
    neg = get(d, "deflate")
    if not isinstance(neg, dict):
        return None
    if not neg.get("negotiated"):
        return "no"
    answers = [a for a in neg.get("answers") or [] if a]
    mixed = neg.get("clients_declined") or 0
    text = "; ".join(answers) if answers else "yes"
    text = text.replace("permessage-deflate; ", "").replace("permessage-deflate", "yes")
    return f"{text} ({mixed} clients declined)" if mixed else text


DEFLATE_ROWS = [
    (F1D, "fanout1_deflate", "max sustainable publish rate, msgs/s ↑", ("max_rate",), None),
    (F1D, "fanout1_deflate", "delivered msgs/s at that rate ↑", ("max_delivered_per_s",), None),
    (F1D, "fanout1_deflate", "latency p99 at that rate, ms", ("best", "latency", "p99_ms"), None),
    (F1D, "fanout1_deflate", "server CPU at that rate, cores (of 1)", ("best", "cpu_cores", "server"), None),
    (F1D, "fanout1_deflate", "load-tool CPU at that rate, cores (of 1)", ("best", "cpu_cores", "bench"), None),
    (F1D, "fanout1_deflate", "bytes on the wire per delivered message ↓", ("best", "wire_bytes_per_message"), None),
    (F1D, "fanout1_deflate", "extension negotiated (server's answer)", None, negotiated),
    (IDLED, "idle_deflate", "RSS per connection, KiB ↓", ("rss_per_conn_kib",), None),
    (IDLED, "idle_deflate", "extension negotiated (server's answer)", None, negotiated),
    (WB, "wirebytes", "bytes on the wire per message (mean) ↓", ("wire_bytes_per_message",), None),
    (WB, "wirebytes", "JSON message as sent, bytes (mean)", ("message_bytes_per_message",), None),
    (WBD, "wirebytes_deflate", "bytes on the wire per message (mean) ↓", ("wire_bytes_per_message",), None),
    (WBD, "wirebytes_deflate", "JSON message after inflating, bytes (mean)", ("message_bytes_per_message",), None),
    (WBD, "wirebytes_deflate", "compression ratio (JSON bytes / wire bytes) ↑", ("compression_ratio",), None),
    (WBD, "wirebytes_deflate", "messages compressed (of those received)", ("compressed_messages",), None),
    (WBD, "wirebytes_deflate", "extension negotiated (server's answer)", None, negotiated),
]
DEFLATE_SCENARIOS = [("fanout1_deflate", F1D), ("idle_deflate", IDLED), ("wirebytes", WB), ("wirebytes_deflate", WBD)]


KINDS = ("ref", "ours", "bare")


def ran(scenarios):
    """The scenarios of the list with a result from any server."""
    return [(f, label) for f, label in scenarios if any(load(k, f) for k in KINDS)]


def bare_ran(scenarios):
    """Whether the bare forwarder (compare.sh --with-bare) has a result in these scenarios."""
    return any(load("bare", f) for f, _ in scenarios)


def rows(spec, with_bare=False):
    lines = []
    for label, f, metric, path, tr in spec:
        if not any(load(k, f) for k in KINDS):
            continue
        vals = []
        for kind in KINDS:
            d = load(kind, f)
            if path is None or path == COMPUTED:
                v = tr(d) if d is not None else None
            else:
                v = get(d, *path)
                if v is not None and tr:
                    v = tr(v)
            vals.append(v)
        no_ratio = path is None or path in NO_RATIO
        cells = [fmt(vals[0]), fmt(vals[1]), "" if no_ratio else ratio(vals[0], vals[1])]
        if with_bare:
            has = load("bare", f) is not None
            cells += [fmt(vals[2]) if has else "", "" if no_ratio or not has else ratio(vals[2], vals[1])]
        lines.append(f"| {label} | {metric} | {' | '.join(cells)} |")
    return lines


# Counts where a ratio means nothing.
NO_RATIO = [("compressed_messages",)]


def table(spec=None, scenarios=None):
    spec = ROWS if spec is None else spec
    scenarios = ran(SCENARIOS if scenarios is None else scenarios)
    if not scenarios:
        return "(none of these scenarios ran in this run)"
    with_bare = bare_ran(scenarios)
    kinds = KINDS if with_bare else KINDS[:2]
    lines = [
        "| scenario | metric | reference (Python) | ours (Rust) | ratio ours/ref |"
        + (" bare (tokio forwarder) | ratio ours/bare |" if with_bare else ""),
        "|---|---|---|---|---|" + ("---|---|" if with_bare else ""),
    ]
    lines += rows(spec, with_bare)

    def cells(vals):
        out = [fmt(vals[0]), fmt(vals[1]), ""]
        if with_bare:
            out += [fmt(vals[2]), ""]
        return " | ".join(out)

    for f, label in scenarios:
        noise = []
        for kind in kinds:
            d = load(kind, f)
            samples = [get(st, "machine_before", "busiest_cpu") for st in (get(d, "steps") or [])]
            samples.append(get(d, "machine_before", "busiest_cpu"))
            samples = [x for x in samples if isinstance(x, (int, float))]
            noise.append(max(samples) if samples else None)
        if all(n is None for n in noise):
            continue  # no quiet-machine gate in this scenario (wirebytes measures bytes)
        lines.append(f"| {label} | noise: busiest CPU just before measuring (worst step; 0 = quiet) | {cells(noise)} |")
    for f, label in scenarios:
        errs = [get(load(kind, f), "errors", "total") for kind in kinds]
        lines.append(f"| {label} | errors (disconnects, error replies, timeouts, ...) | {cells(errs)} |")
    return "\n".join(lines)


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return model, mem, nproc


def deflate_section():
    if not ran(DEFLATE_SCENARIOS):
        return ""
    sizes = [get(load(k, f), "data_bytes_per_record") for f in ("wirebytes_deflate", "wirebytes") for k in ("ours", "ref")]
    size = next((v for v in sizes if isinstance(v, (int, float))), None)
    size = f"{size:.0f} bytes" if size is not None else "about 275 bytes"
    return f"""## Browser-like clients (permessage-deflate)

Browsers always offer `permessage-deflate; client_max_window_bits` (issue 19). In these
scenarios every client of the load tool does the same (`--deflate`: the tool's own WebSocket
client, bench/src/deflate_ws.rs, which inflates RSV1 messages; its own frames are never
compressed). "extension negotiated" is the server's `Sec-WebSocket-Extensions` answer ("no" =
declined). `wirebytes` (the same client; "no offer": without the extension) sends {E.get('WB_MESSAGES', '1000')} CRM-like records ({size} of
JSON data each on average, fixed seed) to one client at {E.get('WB_RATE', '200')} msgs/s through Redis PUBLISH;
wire bytes = frame headers + payloads as read from the socket, averaged over the messages
(the first message, without a compression context yet, counts too). fanout and idle use the
sizes of `fanout1` and `idle`. The deflate client costs the load tool less per message than
tungstenite, so where the load tool is the limit a `--deflate` search can go higher than the
plain one.

{table(DEFLATE_ROWS, DEFLATE_SCENARIOS)}
"""


def main():
    tbl = table()
    dtbl = deflate_section()
    model, mem, nproc = machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (smaller sizes)" if E.get("QUICK") == "1" else "full"
    cmds = {}
    for kind in KINDS:
        try:
            with open(os.path.join(WORK, f"{kind}.commands")) as f:
                cmds[kind] = f.read().strip()
        except OSError:
            cmds[kind] = "(not run)"
    raw = []
    for f, _ in SCENARIOS + DEFLATE_SCENARIOS:
        for kind in KINDS:
            d = load(kind, f)
            if d is not None:
                raw.append(f"{kind} {f}: {json.dumps(d)}")
    note = E.get("NOTE", "")
    limit = E.get("SERVER_CPU_LIMIT", "")
    limit_note = (
        f"\n- **CPU cap: every server limited to {limit} core** (cgroup CPU quota, "
        "`SERVER_CPU_LIMIT`), so that the server and not the load tool is the bottleneck."
        if limit
        else ""
    )
    bare_note = ""
    bare_cmds = ""
    if bare_ran(SCENARIOS):
        bare_note = """
"bare (tokio forwarder)" is `socketshark-bare` (bench/src/bin/bare.rs, `compare.sh --with-bare`):
the physical-limit line of the fan-out (issue 12), a tokio-tungstenite server that only answers
`subscribe` (one Redis SUBSCRIBE per new channel on one shared PUBSUB connection) and forwards
every published message as `{"event":"message","subscription":S,"data":D}` (one JSON parse and
one serialisation per message, one write per delivered message), with no protocol beyond that:
no authentication, callbacks, filters, limits, pings or unsubscribe. Pinned to CPU 0 like the
others. It runs the fan-out, connect and idle scenarios only. ratio ours/bare < 1 means ours
delivers less (or, for RSS and latency, uses less) than the bare forwarder.
"""
        bare_cmds = f"""
Bare forwarder (`{read(os.path.join(WORK, "bare.cmdline"))}`):

```
{cmds['bare']}
```
"""
    doc = f"""# Benchmark results: SocketShark 0.5.0 (Python) vs socketshark (Rust)

- Date: {now}; mode: {mode}
- Machine: {nproc} CPUs ({model}), {mem} RAM, {platform.system()} {platform.release()}
- Load average (1/5/15 min) before: {E.get('LOAD_START')}, after: {E.get('LOAD_END')}
- Reference: {E.get('REF_VERSIONS')}, {E.get('PY_VERSION')}; ours: {E.get('OURS_VERSION')}, {E.get('RUSTC_VERSION')}, release profile
- Redis: {E.get('REDIS_VERSION')}
- Command: `bash bench/compare.sh {E.get('ARGS_ORIG', '').strip()}`
- Placement: each server pinned to CPU 0 (`taskset -c 0`), so it has one core; the load tool
  (`socketshark-bench`, one tokio worker) and the dedicated redis-server share CPU 1. Every
  scenario runs against a freshly started server. Both servers: `ws.ping` disabled, log level
  WARNING/WARN, services `bench` (no callbacks, no authentication) and `echo` (`on_message` =
  the load tool's own HTTP service).{limit_note}

{note}
{bare_note}
{tbl}

ratio = ours / reference. ↑ higher is better, ↓ lower is better. "max sustainable publish rate" is
the highest published rate (round-robin over the topics) at which a {E.get('F1_TOPICS')}-topic /
{E.get('F2_TOPICS')}-topic step delivered every message exactly once with p99 end-to-end latency
(publish to client receive) under 50 ms, found by doubling then bisecting (see each step in the raw
figures). When the load-tool CPU is close to 1.0 core, the load tool (not the server) limits the
figure.

{dtbl}
## Commands

Reference (each line runs against a fresh reference server):

```
{cmds['ref']}
```

Ours:

```
{cmds['ours']}
```
{bare_cmds}
## Configurations

The last configuration each server ran with (ports change with every start):

```python
{read(os.path.join(WORK, "refconf", "bench_ref_settings.py"))}
```

```toml
{read(os.path.join(WORK, "ours.toml"))}
```

## Raw figures

<details><summary>one JSON line per scenario and server</summary>

```
{chr(10).join(raw)}
```

</details>
"""
    # bench/faults.sh owns the "Fault injection" section at the end of the same file: keep it.
    if os.path.exists(OUT):
        old = read(OUT)
        at = old.find("\n## Fault injection\n")
        if at >= 0:
            doc = doc.rstrip("\n") + "\n" + old[at:]
    with open(OUT, "w") as f:
        f.write(doc)
    print(tbl)
    if dtbl:
        print(dtbl)


main()
