# Helpers shared by the bench scripts (sourced, not run): a work directory cleaned up at exit,
# free ports, a dedicated redis-server, and our server started on a free port.
#
#   bench_init NAME         WORK=/tmp/socketshark-NAME.XXXXXX; kills every pid in PIDS at exit
#                           and removes WORK (unless KEEP_WORK is set)
#   free_port               prints a free TCP port on 127.0.0.1
#   start_redis CPU [ARGS]  redis-server on a free port (pinned to CPU unless it is ""), sets
#                           REDIS_PORT once it answers PING
#   server_config FILE [TOP] [WS]
#                           writes our base config to FILE: TOP (top-level keys), [ws] on
#                           127.0.0.1 port 0 plus the lines WS, pings off, JSON logs at INFO,
#                           [redis] on REDIS_PORT without prefix; append tables with cat >>
#   start_server BIN CONFIG CPU
#                           starts BIN -c CONFIG (pinned to CPU unless ""), its log in
#                           $WORK/server.log; sets SERVER_PID, and PORT from the ready line
#                           (the config has ws.port = 0); exits 1 with the log if it never gets ready
#   start_bare BIN CPU      the same for socketshark-bare (bench/src/bin/bare.rs) on REDIS_PORT

bench_init() {
  WORK=$(mktemp -d "/tmp/socketshark-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The command prefix that pins to CPU $1 (nothing when $1 is empty). Used as
# `$(pin "$cpu") cmd ... &`, so that $! is the command itself (taskset execs it), not a subshell.
pin() {
  if [ -n "$1" ]; then echo "taskset -c $1"; fi
}

start_redis() {
  local cpu=$1
  shift
  REDIS_PORT=$(free_port)
  $(pin "$cpu") redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no "$@" \
    >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not answer on port $REDIS_PORT:" >&2
  cat "$WORK/redis.log" >&2
  exit 1
}

server_config() {
  cat >"$1" <<EOF
${2:-}
[ws]
host = "127.0.0.1"
port = 0
${3:-}
[ws.ping]
interval = 0
[log]
level = "INFO"
format = "json"
[redis]
host = "127.0.0.1"
port = $REDIS_PORT
channel_prefix = ""
EOF
}

start_server() {
  local bin=$1 config=$2 cpu=$3
  : >"$WORK/server.log"
  $(pin "$cpu") "$bin" -c "$config" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_ready
}

# socketshark-bare (the bench's bare tokio forwarder) on a free port, talking to REDIS_PORT.
start_bare() {
  local bin=$1 cpu=$2
  : >"$WORK/server.log"
  $(pin "$cpu") "$bin" --host 127.0.0.1 --port 0 --redis-url "redis://127.0.0.1:$REDIS_PORT/" \
    >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_ready
}

# Waits for the ready line (with its "port") in $WORK/server.log; sets PORT.
wait_ready() {
  PORT=""
  for _ in $(seq 200); do
    PORT=$(grep -a 'ready' "$WORK/server.log" | grep -o '"port":[0-9]*' | head -1 | cut -d: -f2 || true)
    [ -n "$PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "the server did not become ready; its log:" >&2
  cat "$WORK/server.log" >&2
  exit 1
}
