#!/usr/bin/env bash
# Where the server's CPU goes during a fan-out: `perf record` of our server under a fixed load.
#   bash bench/profile.sh                     # 1000 clients / 10 topics at 6000 msgs/s, 8 s
#   CLIENTS=10000 TOPICS=10000 RATE=40000 bash bench/profile.sh
#   NO_BUILD=1 bash bench/profile.sh          # use the binaries already in target/release
#   WRITE_COALESCE=0 bash bench/profile.sh    # ws.write_coalesce (default 0.005 s)
#   SYSCALLS=1 bash bench/profile.sh          # count the server's socket syscalls per second instead
#   BARE=1 bash bench/profile.sh              # profile socketshark-bare (the bare tokio forwarder)
#   CALLGRAPH=dwarf bash bench/profile.sh     # call graphs through DWARF (release builds have no
#                                             # frame pointers: `-g` alone names no callers)
# Same placement as compare.sh: server on CPU 0, load tool and redis-server on CPU 1. Prints the
# load tool's JSON line, the share of the server's samples per DSO (kernel vs our binary vs libc)
# and the top symbols (self time), and leaves perf.data in the work directory it names.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-1000}
TOPICS=${TOPICS:-10}
RATE=${RATE:-6000}
DURATION=${DURATION:-8}

for tool in redis-server perf taskset; do
  command -v "$tool" >/dev/null || { echo "profile: $tool not found on PATH" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p socketshark
  cargo build --release -p socketshark-bench
fi
RELEASE=${CARGO_TARGET_DIR:-$PWD/target}/release
SERVER=$RELEASE/socketshark
BENCH=$RELEASE/socketshark-bench

. bench/lib.sh
KEEP_WORK=1 # perf.data stays
bench_init profile
start_redis 1 --client-output-buffer-limit 'pubsub 0 0 0'

server_config "$WORK/server.toml" "" "write_coalesce = ${WRITE_COALESCE:-0.005}"
cat >>"$WORK/server.toml" <<EOF
[limits]
max_events_per_second = 0
max_outbound_bytes = 1073741824
max_subscriptions = 0
max_connections = 0
[services.bench]
require_authentication = false
EOF
if [ -n "${BARE:-}" ]; then
  start_bare "$RELEASE/socketshark-bare" 0
else
  start_server "$SERVER" "$WORK/server.toml" 0
fi

# Publishing starts once every client is subscribed (under a second for 10 000 on ours): the
# recording starts 3 s after Redis holds every topic and lasts half the publishing window.
taskset -c 1 "$BENCH" fanout --url "ws://127.0.0.1:$PORT/" --redis "redis://127.0.0.1:$REDIS_PORT/" \
  --clients "$CLIENTS" --topics "$TOPICS" --rate "$RATE" --duration "$DURATION" \
  --server-pid "$SERVER_PID" --quiet-threshold 0 >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH_PID=$!
PIDS+=("$BENCH_PID")
for _ in $(seq 600); do
  n=$(redis-cli -p "$REDIS_PORT" eval "return #redis.call('pubsub','channels')" 0)
  [ "$n" -ge "$TOPICS" ] && break
  sleep 0.1
done
sleep 3
if [ -n "${SYSCALLS:-}" ]; then
  # Count the server's socket syscalls instead of sampling (tracepoints work where hardware
  # counters do not).
  perf stat -x, -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait' \
    -p "$SERVER_PID" -o "$WORK/syscalls.csv" -- sleep $((DURATION / 2)) 2>"$WORK/perf.err" || true
  wait "$BENCH_PID" || true
  cat "$WORK/bench.json"
  echo "--- server syscalls per second (over $((DURATION / 2)) s)"
  awk -F, -v d=$((DURATION / 2)) '/syscalls:/ { printf "%-32s %12.0f\n", $3, $1 / d }' "$WORK/syscalls.csv"
  exit 0
fi
perf record -q --call-graph "${CALLGRAPH:-fp}" -p "$SERVER_PID" -o "$WORK/perf.data" -- sleep $((DURATION / 2)) 2>"$WORK/perf.err" || true
wait "$BENCH_PID" || true
cat "$WORK/bench.json"
echo "--- server samples by DSO"
perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed -n '1,8p'
echo "--- top symbols (self)"
# sed, not head: head would end the pipe early and, under pipefail, the script.
perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | sed -n '1,30p'
echo "(perf data: $WORK/perf.data)"
