#!/usr/bin/env bash
# Shutdown time with many open sessions (issue: "exit 0 within a bounded time even with 10k open
# sessions"):
#   bash bench/shutdown.sh                 # 10000 sessions x 1 subscription, release build
#   CLIENTS=2000 bash bench/shutdown.sh
#   NO_BUILD=1 bash bench/shutdown.sh      # use the binaries already in target/release
# Starts a redis-server and the bench's HTTP service on free ports, then our server with two
# services: `plain` (no callbacks) and `cb` (`before_unsubscribe` and `on_unsubscribe` pointing at
# the bench service, so shutdown makes 2 HTTP calls per session). For each service in turn it
# opens CLIENTS sessions with one distinct subscription each (`socketshark-bench idle`, which
# holds them for --settle seconds), waits until Redis holds all CLIENTS channels, sends SIGTERM
# and reports, as one JSON line per run, the time from the signal to the process's exit and its
# exit status (must be 0). Needs `ulimit -n` above CLIENTS.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-10000}

command -v redis-server >/dev/null || { echo "shutdown: redis-server not found on PATH" >&2; exit 1; }
if [ "$(ulimit -n)" -le "$((CLIENTS + 100))" ]; then
  ulimit -n "$((CLIENTS + 1000))" 2>/dev/null || {
    echo "shutdown: ulimit -n is $(ulimit -n); $CLIENTS sessions need more" >&2
    exit 1
  }
fi
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p socketshark
  cargo build --release -p socketshark-bench
fi
SERVER=$PWD/target/release/socketshark
BENCH=$PWD/target/release/socketshark-bench
for bin in "$SERVER" "$BENCH"; do
  [ -x "$bin" ] || { echo "shutdown: $bin not built (cargo build --release --workspace)" >&2; exit 1; }
done

. bench/lib.sh
bench_init shutdown
start_redis ""
SERVICE_PORT=$(free_port)
"$BENCH" service --port "$SERVICE_PORT" 2>"$WORK/service.log" &
PIDS+=($!)

for service in plain cb; do
  server_config "$WORK/server.toml"
  cat >>"$WORK/server.toml" <<EOF
[services.plain]
require_authentication = false
[services.cb]
require_authentication = false
before_unsubscribe = "http://127.0.0.1:$SERVICE_PORT/echo"
on_unsubscribe = "http://127.0.0.1:$SERVICE_PORT/echo"
EOF
  start_server "$SERVER" "$WORK/server.toml" ""

  "$BENCH" idle --url "ws://127.0.0.1:$PORT/" --clients "$CLIENTS" --subs 1 --service "$service" \
    --server-pid "$SERVER_PID" --settle 600 --quiet-threshold 0 >"$WORK/idle.out" 2>&1 &
  BENCH_PID=$!
  PIDS+=("$BENCH_PID")
  channels=0
  for _ in $(seq 1200); do
    channels=$(redis-cli -p "$REDIS_PORT" eval "return #redis.call('pubsub','channels')" 0)
    [ "$channels" -ge "$CLIENTS" ] && break
    sleep 0.1
  done
  if [ "$channels" -lt "$CLIENTS" ]; then
    echo "shutdown: only $channels of $CLIENTS subscriptions after 120 s" >&2
    cat "$WORK/idle.out" >&2
    exit 1
  fi
  sleep 1
  start=$(date +%s.%N)
  kill -TERM "$SERVER_PID"
  set +e
  wait "$SERVER_PID"
  status=$?
  set -e
  end=$(date +%s.%N)
  kill "$BENCH_PID" 2>/dev/null || true
  wait "$BENCH_PID" 2>/dev/null || true
  python3 -c "import json,sys; print(json.dumps({'scenario': 'shutdown', 'service': sys.argv[1], \
'callbacks_per_session': 0 if sys.argv[1] == 'plain' else 2, 'sessions': int(sys.argv[2]), \
'seconds': round(float(sys.argv[4]) - float(sys.argv[3]), 3), 'exit_status': int(sys.argv[5])}))" \
    "$service" "$CLIENTS" "$start" "$end" "$status"
  if [ "$status" != 0 ]; then
    tail -20 "$WORK/server.log" >&2
    exit 1
  fi
done
