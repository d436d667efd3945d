#!/usr/bin/env bash
# JS client tests (issue 15, partial): install from the lockfile, build, smoke-test against a real server.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npx tsc -p .
git diff --exit-code -- dist   # the committed bundle must match the source
BIN=${SOCKETSHARK_BIN:-${CARGO_TARGET_DIR:-../../target}/debug/socketshark}
node --experimental-websocket test/smoke.mjs "$BIN"
node --experimental-websocket test/reconnect.mjs "$BIN"
node --experimental-websocket test/recover.mjs "$BIN"
node --experimental-websocket test/redis.mjs "$BIN"
