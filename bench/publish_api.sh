#!/usr/bin/env bash
# Throughput of the HTTP publish API (`POST /publish`) under wrk, for the embedded broker and
# for Redis, one message per request and batches of 100:
#   bash bench/publish_api.sh                 # 10 s per case, 32 connections, wrk on CPU 1
#   DURATION=5 CONNECTIONS=64 bash bench/publish_api.sh
#   NO_BUILD=1 bash bench/publish_api.sh
# Needs wrk (apt-get install -y wrk) and redis-server. The server runs pinned to CPU 0, wrk and
# redis-server to CPU 1. No client is subscribed: this measures the API itself (HTTP, body
# validation, hand-off to the broker: a PUBLISH with Redis); the delivery path is measured by
# `socketshark-bench fanout`. Each broker runs twice: without history, and with
# `history_size = 1000` on the service (issue 14: with Redis every message is then one EVALSHA of
# the history script instead of a PUBLISH). Prints one JSON line per case: requests/s,
# messages/s, latency (wrk's p50/p99) and non-2xx answers.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}

for tool in wrk redis-server taskset; do
  command -v "$tool" >/dev/null || { echo "publish_api: $tool not found on PATH" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p socketshark
fi
SERVER=$PWD/target/release/socketshark
for bin in "$SERVER"; do
  [ -x "$bin" ] || { echo "publish_api: $bin not built (cargo build --release --workspace)" >&2; exit 1; }
done

. bench/lib.sh
bench_init publish-api
start_redis 1

SUBSCRIPTION="bench.api"
python3 - "$WORK" "$SUBSCRIPTION" <<'PY'
import json, sys
work, sub = sys.argv[1], sys.argv[2]
one = json.dumps({"subscription": sub, "data": {"n": 1}})
batch = json.dumps([{"subscription": sub, "data": {"n": i}} for i in range(100)])
for name, body in (("one", one), ("batch", batch)):
    with open(f"{work}/{name}.lua", "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(body)}\n")
PY

for case in memory redis memory+history redis+history; do
  broker=${case%+history}
  HISTORY=""
  [ "$case" != "$broker" ] && HISTORY=$'history_size = 1000\nhistory_ttl = 300'
  API_PORT=$(free_port)
  server_config "$WORK/server.toml" "broker = \"$broker\""
  cat >>"$WORK/server.toml" <<EOF
[api]
host = "127.0.0.1"
port = $API_PORT
[limits]
max_outbound_bytes = 1073741824
[services.bench]
require_authentication = false
$HISTORY
EOF
  start_server "$SERVER" "$WORK/server.toml" 0
  for kind in one batch; do
    per=1
    [ "$kind" = batch ] && per=100
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/$kind.lua" \
      "http://127.0.0.1:$API_PORT/publish" >"$WORK/wrk-$case-$kind.txt" 2>&1
    python3 - "$WORK/wrk-$case-$kind.txt" "$case" "$kind" "$per" "$CONNECTIONS" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
case, kind, per, conns = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
broker = case.split("+")[0]
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return round(float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit], 3)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print(json.dumps({"scenario": "publish_api", "broker": broker,
    "history": case.endswith("+history"), "messages_per_request": per,
    "connections": conns, "requests_per_s": round(rps),
    "messages_per_s": round(rps * per), "latency_p50_ms": ms(lat["50"]),
    "latency_p99_ms": ms(lat["99"]), "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    "socket_errors": errors.group(1) if errors else None}))
PY
  done
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
done
