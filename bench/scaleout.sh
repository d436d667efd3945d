#!/usr/bin/env bash
# Scale-out benchmark (issue 16): two socketshark nodes sharing the same clients over one Redis,
# over a 3-shard Redis Cluster (sharded pub/sub) and over NATS; the same fan-out load on each.
#
#   bash bench/scaleout.sh            # full run, appends a section to bench/RESULTS.md (~10 min)
#   bash bench/scaleout.sh --quick    # small sizes, one round (< 2 min after the build); writes
#                                     # the section to $TMPDIR/socketshark-scaleout-quick.md
#
# Options: --quick, --out FILE (the section is appended to FILE), --only LIST (comma-separated
#          subset of redis,cluster,nats), --rounds N (each round runs every broker once, in
#          turn; default 2, 1 with --quick; the report gives min-max ranges), --note TEXT,
#          --no-build (use the binaries in target/release, or $CARGO_TARGET_DIR/release).
# Environment: QUIET_THRESHOLD (0.25) and QUIET_MAX_WAIT (10 s; 2 s with --quick): the
# quiet-machine gate before each measurement (0 disables it); SOURCE_COMMIT: the commit the
# binaries were built from, for the report (default: this checkout's HEAD, marked when src/ or
# the manifests have uncommitted changes).
#
# For each broker: start the broker(s), then two nodes (both pinned to CPU 0 with taskset), then
# the load tool on CPU 1 with the broker(s): `fanout --search` (highest publish rate with
# p99 < 50 ms, no loss) and one fixed-rate step, both against the two nodes (the subscribers of
# each topic are spread over the nodes, so every message is delivered by both); then stop
# everything. Requires redis-server/redis-cli 7 and nats-server on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
OUT=""
ONLY="redis,cluster,nats"
ROUNDS=""
NOTE=""
BUILD=1
ARGS_ORIG=$(printf '%q ' "$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --note) NOTE="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
for b in ${ONLY//,/ }; do
  case "$b" in redis|cluster|nats) ;; *) echo "--only: redis, cluster, nats" >&2; exit 2 ;; esac
done

if [ "$QUICK" = 1 ]; then
  CLIENTS=400; TOPICS=200
  SEARCH_START=4000; STEP=1; BISECT=1; WARMUP=0.5
  FIXED_RATE=5000; FIXED_DURATION=2
  ROUNDS=${ROUNDS:-1}
  QUIET_WAIT=${QUIET_MAX_WAIT:-2}
  OUT=${OUT:-${TMPDIR:-/tmp}/socketshark-scaleout-quick.md}
else
  CLIENTS=2000; TOPICS=1000
  SEARCH_START=2000; STEP=3; BISECT=4; WARMUP=1
  FIXED_RATE=20000; FIXED_DURATION=10
  ROUNDS=${ROUNDS:-2}
  QUIET_WAIT=${QUIET_MAX_WAIT:-10}
  OUT=${OUT:-$ROOT/bench/RESULTS.md}
fi
P99_LIMIT=50
QUIET="--quiet-threshold ${QUIET_THRESHOLD:-0.25} --quiet-max-wait $QUIET_WAIT"

log() { echo "[scaleout $(date +%H:%M:%S)] $*" >&2; }

for cmd in redis-server redis-cli nats-server taskset python3; do
  command -v "$cmd" >/dev/null || { echo "scaleout: $cmd not found on PATH" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/socketshark-scaleout.XXXXXX)
# Everything started here, killed at exit (brokers, nodes).
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# SIGTERM, then SIGKILL after 10 s; forgets the pids.
stop_pids() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  local keep=() k
  for k in "${PIDS[@]}"; do
    case " $* " in *" $k "*) ;; *) keep+=("$k") ;; esac
  done
  PIDS=("${keep[@]}")
}

wait_port() { # port pid what
  for _ in $(seq 200); do
    kill -0 "$2" 2>/dev/null || break
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "$3 did not start on port $1"
  return 1
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- build ------------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  log "building (release)"
  # One at a time, so the server gets exactly its own feature set.
  cargo build --release -p socketshark >&2
  cargo build --release -p socketshark-bench >&2
fi
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
mkdir -p "$WORK/bin"
# Private copies: target/ is shared, and a rebuild during the run must not swap the binaries.
cp "$RELEASE/socketshark" "$RELEASE/socketshark-bench" "$WORK/bin/"
SERVER="$WORK/bin/socketshark"
BENCH="$WORK/bin/socketshark-bench"
BUILT=$(date -u -r "$RELEASE/socketshark" '+%Y-%m-%d %H:%M UTC')
if [ -z "${SOURCE_COMMIT:-}" ]; then
  SOURCE_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    SOURCE_COMMIT="$SOURCE_COMMIT + uncommitted changes in src/ or the manifests"
  fi
fi

# --- brokers (CPU 1) --------------------------------------------------------------------------
BROKER_PIDS=()
# No output-buffer limit for pub/sub clients: a node falling behind must show up as latency,
# not as Redis dropping its connection.
REDIS_ARGS=(--bind 127.0.0.1 --save '' --appendonly no --client-output-buffer-limit "pubsub 0 0 0")

start_redis() {
  REDIS_PORT=$(free_port)
  taskset -c 1 redis-server --port "$REDIS_PORT" "${REDIS_ARGS[@]}" \
    --logfile "$WORK/redis.log" &
  BROKER_PIDS=($!)
  PIDS+=($!)
  wait_port "$REDIS_PORT" "$!" redis-server
  BROKER_CFG="[redis]
host = \"127.0.0.1\"
port = $REDIS_PORT
channel_prefix = \"\""
  PUBLISHER=(--publisher redis --redis "redis://127.0.0.1:$REDIS_PORT/")
}

start_cluster() {
  local ports=() i p q dir
  BROKER_PIDS=()
  for i in 1 2 3; do
    p=$(free_port)
    q=$(free_port)
    dir="$WORK/cluster-$i"
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$dir" && exec taskset -c 1 redis-server --port "$p" --cluster-port "$q" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      "${REDIS_ARGS[@]}" --logfile "$dir/redis.log") &
    BROKER_PIDS+=($!)
    PIDS+=($!)
    ports+=("$p")
  done
  for i in 0 1 2; do wait_port "${ports[$i]}" "${BROKER_PIDS[$i]}" "cluster node"; done
  redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$WORK/cluster-create.log" 2>&1
  for _ in $(seq 100); do
    local ok=0
    for p in "${ports[@]}"; do
      if redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
        ok=$((ok + 1))
      fi
    done
    [ "$ok" = 3 ] && break
    sleep 0.1
  done
  [ "$ok" = 3 ] || { log "the cluster did not reach cluster_state:ok"; cat "$WORK/cluster-create.log" >&2; return 1; }
  local seeds
  seeds=$(printf '"127.0.0.1:%s", ' "${ports[@]}")
  BROKER_CFG="[redis]
cluster = [${seeds%, }]
channel_prefix = \"\""
  PUBLISHER=(--publisher cluster --cluster "$(printf '127.0.0.1:%s,' "${ports[@]}" | sed 's/,$//')")
}

start_nats() {
  local port
  port=$(free_port)
  taskset -c 1 nats-server -a 127.0.0.1 -p "$port" >"$WORK/nats.log" 2>&1 &
  BROKER_PIDS=($!)
  PIDS+=($!)
  wait_port "$port" "$!" nats-server
  BROKER_CFG="broker = \"nats\""
  NATS_CFG="[nats]
servers = [\"nats://127.0.0.1:$port\"]"
  PUBLISHER=(--publisher nats --nats "nats://127.0.0.1:$port")
}

# --- nodes (CPU 0) ----------------------------------------------------------------------------
NODE_PIDS=()
NODE_URLS=()

start_nodes() { # broker round
  local broker=$1 round=$2 n port cfg top tables
  NODE_PIDS=()
  NODE_URLS=()
  for n in a b; do
    port=$(free_port)
    cfg="$WORK/$broker-$n.toml"
    if [ "$broker" = nats ]; then top=$BROKER_CFG; tables=$NATS_CFG; else top=""; tables=$BROKER_CFG; fi
    cat >"$cfg" <<EOF
$top

[ws]
host = "127.0.0.1"
port = $port

[ws.ping]
interval = 0

[log]
level = "WARNING"
format = "json"

$tables

[services.bench]
require_authentication = false

# As in compare.sh: no event rate limit, unbounded outbound queues (a slow client is not
# disconnected), no subscription or connection cap.
[limits]
max_events_per_second = 0
max_outbound_bytes = 1073741824
max_subscriptions = 0
max_connections = 0
EOF
    taskset -c 0 "$SERVER" -c "$cfg" >"$WORK/$broker-$round-node-$n.log" 2>&1 &
    NODE_PIDS+=($!)
    PIDS+=($!)
    if ! wait_port "$port" "$!" "node $n ($broker)"; then
      cat "$WORK/$broker-$round-node-$n.log" >&2
      return 1
    fi
    NODE_URLS+=("ws://127.0.0.1:$port/")
  done
}

run_bench() { # broker round kind args...
  local broker=$1 round=$2 kind=$3
  shift 3
  local out="$WORK/r$round-$broker-$kind.json"
  echo "taskset -c 1 socketshark-bench $*" >>"$WORK/commands"
  log "$broker $kind (round $round): socketshark-bench $*"
  if ! taskset -c 1 "$BENCH" "$@" >"$out" 2>"$WORK/r$round-$broker-$kind.bench.log"; then
    log "$broker $kind: the load tool exited non-zero (see $WORK/r$round-$broker-$kind.bench.log)"
  fi
  local n
  for n in "${NODE_PIDS[@]}"; do
    kill -0 "$n" 2>/dev/null || log "$broker $kind: node $n died"
  done
  tail -c 600 "$out" >&2 || true
  echo >&2
}

contender() { # broker round
  local broker=$1 round=$2
  log "=== $broker (round $round) ==="
  if ! "start_$broker"; then stop_pids "${BROKER_PIDS[@]}"; return 0; fi
  if start_nodes "$broker" "$round"; then
    local common=(fanout $QUIET --url "$(IFS=,; echo "${NODE_URLS[*]}")" "${PUBLISHER[@]}"
      --server-pid "$(IFS=,; echo "${NODE_PIDS[*]}")"
      --broker-pid "$(IFS=,; echo "${BROKER_PIDS[*]}")"
      --clients "$CLIENTS" --topics "$TOPICS" --p99-limit-ms "$P99_LIMIT" --warmup "$WARMUP")
    run_bench "$broker" "$round" search "${common[@]}" --search --search-start "$SEARCH_START" \
      --step-duration "$STEP" --bisect "$BISECT" --retries 1
    run_bench "$broker" "$round" fixed "${common[@]}" --rate "$FIXED_RATE" \
      --duration "$FIXED_DURATION"
    # The nodes' warnings (broker trouble, slow consumers) go into the report.
    cat "$WORK/$broker-$round-node-"*.log >"$WORK/r$round-$broker-nodes.log" 2>/dev/null || true
  fi
  stop_pids "${NODE_PIDS[@]}"
  stop_pids "${BROKER_PIDS[@]}"
}

for round in $(seq "$ROUNDS"); do
  for broker in ${ONLY//,/ }; do
    contender "$broker" "$round"
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------------
export WORK OUT QUICK NOTE LOAD_START LOAD_END ARGS_ORIG ROUNDS ONLY CLIENTS TOPICS
export FIXED_RATE FIXED_DURATION P99_LIMIT STEP SEARCH_START SOURCE_COMMIT BUILT
export REDIS_VERSION="$(redis-server --version)"
export NATS_VERSION="$(nats-server --version)"
export SERVER_VERSION="$("$SERVER" --version)"
python3 - <<'PY'
import datetime, glob, json, os

E = os.environ
work, rounds = E["WORK"], int(E["ROUNDS"])
brokers = E["ONLY"].split(",")
names = {"redis": "one Redis", "cluster": "Redis Cluster, 3 masters (SSUBSCRIBE/SPUBLISH)",
         "nats": "NATS"}

def load(path):
    try:
        with open(path) as f:
            lines = [l for l in f if l.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None

def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d

def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float) and abs(x) < 100 and x != int(x):
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    return f"{int(round(x)):,}"

def rng(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"

rows, odd = [], []
for b in brokers:
    s = [load(f"{work}/r{r}-{b}-search.json") for r in range(1, rounds + 1)]
    x = [load(f"{work}/r{r}-{b}-fixed.json") for r in range(1, rounds + 1)]
    best = [get(v, "best") for v in s]
    rows.append([
        names[b],
        rng([get(v, "max_rate") for v in s]),
        rng([get(v, "max_delivered_per_s") for v in s]),
        rng([get(v, "latency", "p99_ms") for v in best]),
        rng([get(v, "cpu_cores", "servers_total") for v in best]),
        rng([get(v, "delivered_per_s") for v in x]),
        rng([get(v, "latency", "p50_ms") for v in x]),
        rng([get(v, "latency", "p99_ms") for v in x]),
        rng([(get(v, "lost") or 0) + (get(v, "duplicates") or 0) if v else None for v in x]),
        " + ".join(rng([(get(v, "cpu_cores", "servers") or [None, None])[i] for v in x])
                   for i in range(2)),
        rng([get(v, "cpu_cores", "broker_total") for v in x]),
        rng([get(v, "cpu_cores", "bench") for v in x]),
    ])
    # Anything that is not a clean delivery: loss, duplicates, errors, disconnected clients.
    for r, (sv, xv) in enumerate(zip(s, x), 1):
        if sv is None or xv is None:
            odd.append(f"{names[b]}, round {r}: no result (see the load tool's log)")
            continue
        # A client counts a message older than the last it got (same topic) as a duplicate,
        # and it is then missing from `delivered`: lost == duplicates with delivered +
        # duplicates == expected means every message arrived, some out of order.
        def trouble(label, v, always):
            lost, dups = v.get("lost") or 0, v.get("duplicates") or 0
            if not (dups or v.get("wrong_topic") or v.get("step_errors") or (always and lost)):
                return
            what = f"lost {lost}, duplicates {dups}"
            if dups and lost == dups and v.get("delivered", 0) + dups == v.get("expected"):
                what = (f"{dups} of {v.get('expected')} deliveries arrived out of order (after a "
                        f"later message of their topic; counted as duplicates and as lost)")
            odd.append(f"{names[b]}, round {r}, {label} at {fmt(v.get('rate'))} msgs/s: {what}; "
                       f"wrong topic {v.get('wrong_topic')}, errors {v.get('step_errors')}, "
                       f"p99 {v.get('latency', {}).get('p99_ms')} ms")
        trouble("fixed step", xv, True)
        if sv.get("search_aborted"):
            odd.append(f"{names[b]}, round {r}: search aborted: {sv['search_aborted']}")
        for st in sv.get("steps", []):
            trouble("search step", st, False)
        for v in (sv, xv):
            if v.get("connected") != v.get("clients"):
                odd.append(f"{names[b]}, round {r}: {v.get('connected')} of {v.get('clients')} "
                           f"clients connected")
        warn = f"{work}/r{r}-{b}-nodes.log"
        if os.path.exists(warn):
            # The first `nats connected` (logged at WARNING by design) is not trouble.
            lines = [l.strip() for l in open(warn, errors="replace")
                     if l.strip() and '"event":"nats connected"' not in l]
            if lines:
                odd.append(f"{names[b]}, round {r}: the nodes logged {len(lines)} line(s), "
                           f"first: `{lines[0][:200]}`")

fixed = f"{int(E['FIXED_RATE']):,} msgs/s for {E['FIXED_DURATION']} s"
clients, topics = int(E["CLIENTS"]), int(E["TOPICS"])
per = clients // topics
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
uname = os.uname()
header = ["broker", f"max publish rate, msgs/s (p99 < {E['P99_LIMIT']} ms, 0 loss)",
          "deliveries/s at max", "p99 at max, ms", "nodes' CPU at max, cores",
          f"{fixed}: deliveries/s", "p50, ms", "p99, ms", "lost + dups",
          "CPU node a + node b, cores", "broker CPU, cores", "load tool CPU, cores"]
out = []
out.append("")
out.append("## Scale-out: two nodes over one Redis, a 3-shard Redis Cluster, NATS (issue 16)")
out.append("")
out.append(f"- Date: {now}; mode: {'quick' if E['QUICK'] == '1' else 'full'}; "
           f"{rounds} round(s), each broker once per round in turn (ranges are min–max over the rounds)")
out.append(f"- Server: {E['SERVER_VERSION']}, release, built {E['BUILT']} from commit {E['SOURCE_COMMIT']}")
out.append(f"- Brokers: Redis {E['REDIS_VERSION'].split()[2]} (one server; or 3 cluster masters, "
           f"no replicas, each in its own process), {E['NATS_VERSION']}")
out.append(f"- Machine: {os.cpu_count()} CPUs ({cpu}), {int(mem) / 2**20:.1f} GiB RAM, "
           f"Linux {uname.release}; load average (1/5/15 min) before: {E['LOAD_START']}, "
           f"after: {E['LOAD_END']}")
out.append(f"- Command: `{('bash bench/scaleout.sh ' + E['ARGS_ORIG']).strip()}`")
out.append("- Placement: **the machine has 2 cores.** Both nodes are pinned to CPU 0 "
           "(`taskset -c 0`), so together they have one core; the broker(s) and the load tool "
           "share CPU 1. The Cluster's three shards share that one core too, so this measures "
           "each broker's overhead for the same work, not scaling: on real hardware each node "
           "and each shard would have its own cores.")
out.append(f"- Load: {clients:,} clients over {topics:,} topics ({per} per topic), the subscribers "
           f"of each topic spread over the two nodes ({clients // 2:,} clients each), so every "
           f"message is delivered once by each node. Search: the highest publish rate whose "
           f"{E['STEP']} s step (doubling from {int(E['SEARCH_START']):,} msgs/s, then bisecting) has p99 < {E['P99_LIMIT']} ms, no loss, no error; then a fixed "
           f"step of {fixed}. Publishers: pipelined PUBLISH; SPUBLISH through the redis crate's "
           f"cluster connection (one command per message, each routed to its slot's master; "
           f"different channels in flight at once, one channel's messages one after the other); NATS publish + one flush per 1 ms tick. Every message is checked: "
           f"PUBLISH/SPUBLISH must report 2 receivers (both nodes); NATS does not report.")
if E.get("NOTE"):
    out.append(f"- Note: {E['NOTE']}")
out.append("- Columns: a delivery is one message arriving at one client (2 per published message); "
           "latency is publish to arrival (a timestamp in the payload); CPU figures are cores "
           "used on average over the step (`/proc/PID/stat`), broker = the sum of the broker "
           "processes.")
out.append("")
out.append("| " + " | ".join(header) + " |")
out.append("|" + "---|" * len(header))
for r in rows:
    out.append("| " + " | ".join(r) + " |")
out.append("")
if odd:
    out.append("Not clean:")
    out.append("")
    out += [f"- {o}" for o in odd]
else:
    out.append("Every step of the fixed runs delivered every expected message exactly once; no "
               "duplicates, no errors, no client lost, nothing in the nodes' logs at WARNING.")
out.append("")
out.append("Load-tool commands (ports and pids differ per start):")
out.append("")
out.append("```")
seen = []
for l in open(f"{work}/commands"):
    if l not in seen:
        seen.append(l)
out += [l.rstrip() for l in seen[: 2 * len(brokers)]]
out.append("```")
text = "\n".join(out) + "\n"
with open(E["OUT"], "a+") as f:
    # Start on a new line after a previous section without a final newline.
    f.seek(0, 2)
    if f.tell() > 0:
        f.seek(f.tell() - 1)
        if f.read(1) != "\n":
            f.write("\n")
    f.write(text)
print(text)
PY
log "section appended to $OUT (raw figures in $WORK, kept only with KEEP_WORK=1)"
