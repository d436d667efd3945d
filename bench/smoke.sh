#!/usr/bin/env bash
# CI smoke check of the delivery path under (light) load:
#   bash bench/smoke.sh            # debug build (reuses what `cargo test` built)
#   PROFILE=release bash bench/smoke.sh
#   NO_BUILD=1 bash bench/smoke.sh # use the binaries already in target/$PROFILE
# Starts a redis-server on a free port and our server on a free port (`ws.port = 0`, the port is
# read from the JSON ready line), then runs `socketshark-bench fanout --smoke`: 50 clients on 5
# topics, 200 messages; exits non-zero unless every expected message (200 x 10 subscribers)
# arrived exactly once with no error. There is no timing assertion.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-debug}

command -v redis-server >/dev/null || { echo "smoke: redis-server not found on PATH" >&2; exit 1; }

if [ "$PROFILE" = release ]; then FLAG=--release; else FLAG=; fi
# Built one at a time so the server keeps exactly its own dependency features.
if [ -z "${NO_BUILD:-}" ]; then
  cargo build $FLAG -p socketshark
  cargo build $FLAG -p socketshark-bench
fi
SERVER="target/$PROFILE/socketshark"
BENCH="target/$PROFILE/socketshark-bench"

. bench/lib.sh
bench_init smoke
start_redis ""

server_config "$WORK/smoke.toml"
cat >>"$WORK/smoke.toml" <<EOF
[services.bench]
require_authentication = false
EOF
start_server "$SERVER" "$WORK/smoke.toml" ""

set +e
"$BENCH" fanout --smoke --url "ws://127.0.0.1:$PORT/" --redis "redis://127.0.0.1:$REDIS_PORT/"
STATUS=$?
set -e
if [ "$STATUS" = 0 ]; then
  echo "bench smoke: 1 passed, 0 failed"
else
  echo "bench smoke: 0 passed, 1 failed" >&2
  tail -20 "$WORK/server.log" >&2
fi
exit "$STATUS"
