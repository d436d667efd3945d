#!/usr/bin/env bash
# Side-by-side benchmark: the original SocketShark 0.5.0 (Python) vs this Rust socketshark.
#
#   bash bench/compare.sh            # full run, writes bench/RESULTS.md (about 10 minutes)
#   bash bench/compare.sh --quick    # smaller sizes, a smoke run of the whole pipeline
#
# Options: --quick, --out FILE (default bench/RESULTS.md), --only ref|ours|bare,
#          --with-bare (a third contender, socketshark-bare: a bare tokio server that only
#          forwards Redis messages to sockets, the physical-limit line of the fan-out; it runs
#          fanout1, fanout2, connect and idle only; about 4 more minutes; implied by --only bare),
#          --scenarios LIST (comma-separated subset of fanout1,fanout2,connect,idle,echo and of
#          the browser-like ones: fanout1_deflate,idle_deflate,wirebytes,wirebytes_deflate;
#          default: all but fanout1_deflate; "all": every one),
#          --note TEXT (added to the report), --no-build (use the binaries in target/release,
#          or in $CARGO_TARGET_DIR/release when that is set).
# Environment: REF_VENV=/path/to/venv (default: /work/venv if it has socketshark, else a venv
# created under ${XDG_CACHE_HOME:-~/.cache}/socketshark-bench/venv); QUIET_THRESHOLD (0.25) and
# QUIET_MAX_WAIT (30 s): the quiet-machine gate before each measurement (0 disables it);
# WRITE_COALESCE: our ws.write_coalesce (default: the server's default).
# IDLE_SUBS: subscriptions per client in the idle scenarios (default 1; each a channel of its own).
# CONNECT_CLIENTS: clients of the connect scenario (default 5000, as in issue 12; 500 with --quick).
# SERVER_CPU_LIMIT: cap every server at this many cores (e.g. 0.5) with a cgroup CPU quota (root,
# cgroup v1 or v2), so that the server and not the load tool is the bottleneck when the load
# tool saturates its own core (connect on a 2-core machine; bench/README.md).
#
# Each server runs pinned to CPU 0 (taskset -c 0); the load tool and the dedicated redis-server
# share CPU 1. Every scenario gets a freshly started server. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
OUT="$ROOT/bench/RESULTS.md"
ONLY=""
WITH_BARE=0
# fanout1_deflate is not in the default list: it adds about two more searches (~2-3 min).
DEFAULT_SCENARIOS="fanout1,fanout2,connect,idle,echo,idle_deflate,wirebytes,wirebytes_deflate"
SCENARIOS=$DEFAULT_SCENARIOS
NOTE=""
BUILD=1
ARGS_ORIG=$(printf '%q ' "$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --with-bare) WITH_BARE=1 ;;
    --scenarios) SCENARIOS="$2"; shift ;;
    --note) NOTE="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$ONLY" = bare ]; then WITH_BARE=1; fi
case "$ONLY" in ""|ref|ours|bare) ;; *) echo "--only: ref, ours or bare" >&2; exit 2 ;; esac
# The scenarios socketshark-bare can serve (it knows only `subscribe`: no callbacks, no deflate).
BARE_SCENARIOS="fanout1,fanout2,connect,idle"
if [ "$SCENARIOS" = all ]; then SCENARIOS="$DEFAULT_SCENARIOS,fanout1_deflate"; fi

if [ "$QUICK" = 1 ]; then
  F1_CLIENTS=200;  F1_TOPICS=10;   F1_START=25;  F1_STEP=1.5
  F2_CLIENTS=1000; F2_TOPICS=1000; F2_START=250; F2_STEP=1.5
  BISECT=2
  CONNECT_CLIENTS=${CONNECT_CLIENTS:-500}
  IDLE_CLIENTS=500; IDLE_SUBS=${IDLE_SUBS:-1}
  ECHO_CLIENTS=20; ECHO_DURATION=3
  WB_MESSAGES=1000
else
  F1_CLIENTS=1000;  F1_TOPICS=10;    F1_START=25;  F1_STEP=3
  F2_CLIENTS=10000; F2_TOPICS=10000; F2_START=500; F2_STEP=3
  BISECT=4
  CONNECT_CLIENTS=${CONNECT_CLIENTS:-5000}
  IDLE_CLIENTS=2000; IDLE_SUBS=${IDLE_SUBS:-1}
  ECHO_CLIENTS=50; ECHO_DURATION=10
  WB_MESSAGES=1000
fi
# wirebytes: one client, WB_MESSAGES records at WB_RATE msgs/s (about 5 s per server).
WB_RATE=200

# The load tool waits (at most QUIET_MAX_WAIT s) before each measurement until no CPU is busier
# than QUIET_THRESHOLD (other processes on a shared machine); 0 disables the gate.
QUIET="--quiet-threshold ${QUIET_THRESHOLD:-0.25} --quiet-max-wait ${QUIET_MAX_WAIT:-30}"

log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }

WORK=$(mktemp -d /tmp/socketshark-compare.XXXXXX)
REDIS_PID=""
SERVER_PID=""
CGROUP=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
  if [ -n "$CGROUP" ]; then sleep 0.2; rmdir "$CGROUP" 2>/dev/null || true; fi
}
trap cleanup EXIT

# --- optional CPU cap on the servers ----------------------------------------------------------
SERVER_CPU_LIMIT=${SERVER_CPU_LIMIT:-}
if [ -n "$SERVER_CPU_LIMIT" ]; then
  QUOTA_US=$(python3 -c "print(int(float('$SERVER_CPU_LIMIT') * 100000))")
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then # cgroup v2
    CGROUP=/sys/fs/cgroup/socketshark-bench-$$
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    mkdir "$CGROUP" && echo "$QUOTA_US 100000" >"$CGROUP/cpu.max" || {
      echo "compare: SERVER_CPU_LIMIT needs a writable cgroup v2 cpu controller (root)" >&2
      exit 1
    }
  else # cgroup v1
    CGROUP=/sys/fs/cgroup/cpu/socketshark-bench-$$
    mkdir "$CGROUP" && echo 100000 >"$CGROUP/cpu.cfs_period_us" &&
      echo "$QUOTA_US" >"$CGROUP/cpu.cfs_quota_us" || {
      echo "compare: SERVER_CPU_LIMIT needs a writable cgroup v1 cpu hierarchy (root)" >&2
      exit 1
    }
  fi
fi
# `in_cgroup cmd ... &`: cmd runs in the background, in the servers' cgroup when
# SERVER_CPU_LIMIT is set, and $! is cmd itself (the subshell execs it).
in_cgroup() {
  if [ -n "$CGROUP" ]; then echo "$BASHPID" >"$CGROUP/cgroup.procs"; fi
  exec "$@"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Enough file descriptors for 10000 clients on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "file-descriptor limit: $(ulimit -n); work dir: $WORK"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- build ------------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  log "building (release)"
  # Built separately so the server binary gets exactly its own feature set.
  cargo build --release -p socketshark >&2
  cargo build --release -p socketshark-bench >&2
fi
# Private copies: target/ is shared, and a rebuild during the run must not swap the binaries.
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
mkdir -p "$WORK/bin"
cp "$RELEASE/socketshark" "$RELEASE/socketshark-bench" "$WORK/bin/"
RUST_BIN="$WORK/bin/socketshark"
BENCH="$WORK/bin/socketshark-bench"
BARE_BIN="$WORK/bin/socketshark-bare"
if [ "$WITH_BARE" = 1 ]; then
  if [ ! -x "$RELEASE/socketshark-bare" ]; then
    echo "compare: $RELEASE/socketshark-bare not found (build -p socketshark-bench)" >&2
    exit 1
  fi
  cp "$RELEASE/socketshark-bare" "$WORK/bin/"
fi
OURS_VERSION="$("$RUST_BIN" --version) (binary built $(date -u -r "$RELEASE/socketshark" '+%Y-%m-%d %H:%M UTC'))"

# --- reference venv ---------------------------------------------------------------------------
REF_VENV="${REF_VENV:-}"
if [ -z "$REF_VENV" ]; then
  if [ -x /work/venv/bin/socketshark ]; then
    REF_VENV=/work/venv
  else
    REF_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/socketshark-bench/venv"
  fi
fi
if ! "$REF_VENV/bin/python" -c 'import socketshark, websockets, aioredis' 2>/dev/null; then
  log "creating the reference venv in $REF_VENV"
  python3 -m venv "$REF_VENV"
  "$REF_VENV/bin/pip" install -q socketshark==0.5.0 setuptools aioredis==1.3.1 websockets==13.1
fi
REF_VERSIONS=$("$REF_VENV/bin/python" -c '
import importlib.metadata as m
print(", ".join(f"{p} {m.version(p)}" for p in ("socketshark", "websockets", "aioredis")))')
PY_VERSION=$("$REF_VENV/bin/python" --version 2>&1)
log "reference: $REF_VENV ($REF_VERSIONS, $PY_VERSION)"

# --- redis ------------------------------------------------------------------------------------
REDIS_PORT=$(free_port)
# No output-buffer limit for pub/sub clients: a server falling behind must show up as latency,
# not as Redis dropping its connection.
taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --client-output-buffer-limit "pubsub 0 0 0" --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then break; fi
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
log "redis-server $(redis-server --version | grep -o 'v=[^ ]*') on port $REDIS_PORT"

# --- servers ----------------------------------------------------------------------------------
WS_PORT=""
SERVICE_PORT=""

write_config() { # kind
  local kind=$1
  if [ "$kind" = ref ]; then
    mkdir -p "$WORK/refconf"
    cat >"$WORK/refconf/bench_ref_settings.py" <<EOF
# SocketShark 0.5.0 settings module (equivalent to ours.toml).
WS_HOST = '127.0.0.1'
WS_PORT = $WS_PORT
WS_PING = {'interval': 0, 'timeout': 15}
LOG = {'level': 'WARNING'}
REDIS = {'host': '127.0.0.1', 'port': $REDIS_PORT, 'channel_prefix': '',
         'ping_interval': 10, 'ping_timeout': 5}
SERVICES = {
    'bench': {'require_authentication': False},
    'echo': {'require_authentication': False,
             'on_message': 'http://127.0.0.1:$SERVICE_PORT/echo'},
}
EOF
  else
    cat >"$WORK/ours.toml" <<EOF
[ws]
host = "127.0.0.1"
port = $WS_PORT
${WRITE_COALESCE:+write_coalesce = $WRITE_COALESCE}

[ws.ping]
interval = 0

[log]
level = "WARN"
format = "json"

[redis]
host = "127.0.0.1"
port = $REDIS_PORT
channel_prefix = ""
ping_interval = 10
ping_timeout = 5

[services.bench]
require_authentication = false

[services.echo]
require_authentication = false
on_message = "http://127.0.0.1:$SERVICE_PORT/echo"
EOF
    # The reference has no per-session limits: no event rate limit (the echo clients send as
    # fast as they can), unbounded outbound queues (a slow client is not disconnected), no
    # subscription or connection cap. Older builds without [limits] reject the table: drop it.
    cat >"$WORK/limits.toml" <<EOF

[limits]
max_events_per_second = 0
max_outbound_bytes = 1073741824
max_subscriptions = 0
max_connections = 0
EOF
    cat "$WORK/ours.toml" "$WORK/limits.toml" >"$WORK/ours-limits.toml"
    if "$RUST_BIN" --check-config -c "$WORK/ours-limits.toml" >/dev/null 2>&1; then
      mv "$WORK/ours-limits.toml" "$WORK/ours.toml"
    else
      rm -f "$WORK/ours-limits.toml"
    fi
  fi
}

start_server() { # kind scenario
  local kind=$1 scenario=$2
  WS_PORT=$(free_port)
  SERVICE_PORT=$(free_port)
  if [ "$kind" != bare ]; then write_config "$kind"; fi
  local logf="$WORK/$kind-$scenario.server.log"
  if [ "$kind" = bare ]; then
    # No configuration: a port, Redis, no channel prefix (as the others).
    echo "socketshark-bare --host 127.0.0.1 --port $WS_PORT --redis-url $REDIS_URL" \
      >"$WORK/bare.cmdline"
    in_cgroup taskset -c 0 "$BARE_BIN" --host 127.0.0.1 --port "$WS_PORT" --redis-url "$REDIS_URL" \
      >"$logf" 2>&1 &
  elif [ "$kind" = ref ]; then
    in_cgroup env PYTHONPATH="$WORK/refconf" taskset -c 0 "$REF_VENV/bin/socketshark" \
      -c bench_ref_settings \
      >"$logf" 2>&1 &
  else
    in_cgroup taskset -c 0 "$RUST_BIN" -c "$WORK/ours.toml" >"$logf" 2>&1 &
  fi
  SERVER_PID=$!
  for _ in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$WS_PORT") 2>/dev/null; then
      sleep 0.5 # let it settle before measuring its RSS
      return 0
    fi
    sleep 0.1
  done
  log "$kind server did not start; its log:"
  cat "$logf" >&2
  return 1
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

run_bench() { # kind scenario args...
  local kind=$1 scenario=$2
  shift 2
  local out="$WORK/$kind-$scenario.json"
  echo "taskset -c 1 socketshark-bench $*" >>"$WORK/$kind.commands"
  log "$kind $scenario: socketshark-bench $*"
  if ! taskset -c 1 "$BENCH" "$@" >"$out" 2>"$WORK/$kind-$scenario.bench.log"; then
    log "$kind $scenario: load tool exited non-zero (see $WORK/$kind-$scenario.bench.log)"
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "$kind $scenario: the server died; its log:"
    tail -20 "$WORK/$kind-$scenario.server.log" >&2
  fi
  tail -1 "$out" >&2 || true
}

scenario() { # kind name args...
  local kind=$1 name=$2
  shift 2
  case ",$SCENARIOS," in *",$name,"*) ;; *) return 0 ;; esac
  if [ "$kind" = bare ]; then
    case ",$BARE_SCENARIOS," in *",$name,"*) ;; *) return 0 ;; esac
  fi
  if start_server "$kind" "$name"; then
    local url="ws://127.0.0.1:$WS_PORT/"
    # Substitute the per-start placeholders.
    local args=()
    for a in "$@"; do
      a=${a//@URL@/$url}
      a=${a//@PID@/$SERVER_PID}
      a=${a//@SPORT@/$SERVICE_PORT}
      args+=("$a")
    done
    run_bench "$kind" "$name" "${args[@]}"
  fi
  stop_server
}

run_all() { # kind
  local kind=$1
  : >"$WORK/$kind.commands"
  scenario "$kind" fanout1 fanout $QUIET --url @URL@ --redis "$REDIS_URL" --server-pid @PID@ \
    --clients "$F1_CLIENTS" --topics "$F1_TOPICS" --search --search-start "$F1_START" \
    --step-duration "$F1_STEP" --bisect "$BISECT"
  scenario "$kind" fanout2 fanout $QUIET --url @URL@ --redis "$REDIS_URL" --server-pid @PID@ \
    --clients "$F2_CLIENTS" --topics "$F2_TOPICS" --search --search-start "$F2_START" \
    --step-duration "$F2_STEP" --bisect "$BISECT"
  scenario "$kind" connect connect $QUIET --url @URL@ --server-pid @PID@ --clients "$CONNECT_CLIENTS"
  scenario "$kind" idle idle $QUIET --url @URL@ --server-pid @PID@ --clients "$IDLE_CLIENTS" \
    --subs "$IDLE_SUBS"
  scenario "$kind" echo echo $QUIET --url @URL@ --server-pid @PID@ --service-port @SPORT@ \
    --clients "$ECHO_CLIENTS" --duration "$ECHO_DURATION"
  # Browser-like clients (issue 19): every client offers permessage-deflate and inflates.
  scenario "$kind" fanout1_deflate fanout --deflate $QUIET --url @URL@ --redis "$REDIS_URL" \
    --server-pid @PID@ --clients "$F1_CLIENTS" --topics "$F1_TOPICS" --search \
    --search-start "$F1_START" --step-duration "$F1_STEP" --bisect "$BISECT"
  scenario "$kind" idle_deflate idle --deflate $QUIET --url @URL@ --server-pid @PID@ \
    --clients "$IDLE_CLIENTS" --subs "$IDLE_SUBS"
  scenario "$kind" wirebytes wirebytes --url @URL@ --redis "$REDIS_URL" \
    --messages "$WB_MESSAGES" --rate "$WB_RATE"
  scenario "$kind" wirebytes_deflate wirebytes --deflate --url @URL@ --redis "$REDIS_URL" \
    --messages "$WB_MESSAGES" --rate "$WB_RATE"
}

KINDS="ref ours"
if [ "$WITH_BARE" = 1 ]; then KINDS="ref ours bare"; fi
for kind in $KINDS; do
  if [ -n "$ONLY" ] && [ "$ONLY" != "$kind" ]; then continue; fi
  log "=== $kind ==="
  run_all "$kind"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------------
export SERVER_CPU_LIMIT
export WORK OUT QUICK NOTE LOAD_START LOAD_END REF_VERSIONS PY_VERSION ARGS_ORIG
export F1_CLIENTS F1_TOPICS F2_CLIENTS F2_TOPICS CONNECT_CLIENTS IDLE_CLIENTS IDLE_SUBS
export ECHO_CLIENTS ECHO_DURATION OURS_VERSION WB_MESSAGES WB_RATE
export RUSTC_VERSION="$(rustc --version)"
export REDIS_VERSION="$(redis-server --version)"
python3 "$ROOT/bench/report.py"
log "report written to $OUT (raw figures in $WORK)"
