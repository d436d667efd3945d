#!/usr/bin/env bash
# Fault-injection suite (issue #13): Redis SIGKILL + restart and SIGSTOP, failing HTTP
# services, connection churn, slow and hostile clients, each against our server under load.
#
#   bash bench/faults.sh            # full form: release build, the issue's loads (~8 min),
#                                   #   writes the "Fault injection" section of bench/RESULTS.md
#   bash bench/faults.sh --short    # CI form: debug build (reuses what `cargo test` built),
#                                   #   small loads, outcomes and zero loss only (< 3 min)
#   SERVER=/path/to/socketshark bash bench/faults.sh    # test that binary (no server build)
#   NO_BUILD=1 ...                  # use the binaries already in target/$PROFILE
#   ONLY=redis-kill,hostile ...     # a subset of: redis-kill, redis-stop, redis-kill-reconnect,
#                                   #   redis-stop-reconnect, service, churn, hostile
#   OUT=FILE ...                    # full form: where the section goes (default bench/RESULTS.md)
#   NOTE=TEXT ...                   # a sentence added to the section
#   SERVER_COMMIT=abc1234 ...       # the commit SERVER was built from, for the section (default HEAD)
#
# Placement: the server on CPU 0, the load tool and redis-server on CPU 1 (when there are at
# least 2 CPUs). The tool starts redis-server and the server itself (restarting both in the
# redis-kill row), and prints one JSON line per row on stdout and the table on stderr. Exit
# status: 0 when every row had its documented outcome (and, in the full form, met its timing
# targets), 1 otherwise, 2 on a setup error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SHORT=""
for arg in "$@"; do
  case "$arg" in
    --short) SHORT=1 ;;
    *) echo "faults: unknown argument $arg (use --short)" >&2; exit 2 ;;
  esac
done
if [ -n "$SHORT" ]; then PROFILE=${PROFILE:-debug}; else PROFILE=${PROFILE:-release}; fi
if [ "$PROFILE" = release ]; then FLAG=--release; else FLAG=; fi

command -v redis-server >/dev/null || { echo "faults: redis-server not found on PATH (apt-get install -y redis-server)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "faults: redis-cli not found on PATH" >&2; exit 1; }

# Built one at a time so the server keeps exactly its own dependency features.
if [ -z "${NO_BUILD:-}" ]; then
  if [ -z "${SERVER:-}" ]; then cargo build $FLAG -p socketshark; fi
  cargo build $FLAG -p socketshark-bench
fi
SERVER=${SERVER:-target/$PROFILE/socketshark}
BENCH="target/$PROFILE/socketshark-bench"
[ -x "$SERVER" ] || { echo "faults: server binary $SERVER not found" >&2; exit 2; }
[ -x "$BENCH" ] || { echo "faults: $BENCH not found" >&2; exit 2; }

STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d /tmp/socketshark-faults.XXXXXX)
# Copies, so that a rebuild in the shared target/ during the run cannot swap them.
cp "$SERVER" "$WORK/socketshark"
cp "$BENCH" "$WORK/socketshark-bench"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=0; LOAD_CPU=1; PIN="taskset -c 1"
else
  SERVER_CPU=""; LOAD_CPU=""; PIN=""
fi

ARGS=(faults --server "$WORK/socketshark" --work "$WORK" --markdown "$WORK/table.md"
      --server-cpu "$SERVER_CPU" --load-cpu "$LOAD_CPU")
[ -n "$SHORT" ] && ARGS+=(--short)
[ -n "${ONLY:-}" ] && ARGS+=(--only "$ONLY")

echo "faults: $([ -n "$SHORT" ] && echo short || echo full) form, server $SERVER ($PROFILE), work directory $WORK" >&2
set +e
$PIN "$WORK/socketshark-bench" "${ARGS[@]}" | tee "$WORK/rows.jsonl"
STATUS=${PIPESTATUS[0]}
set -e

if [ -z "$SHORT" ] && [ -s "$WORK/table.md" ]; then
  OUT=${OUT:-$ROOT/bench/RESULTS.md}
  # SERVER_COMMIT names the commit a given SERVER binary was built from (default: HEAD).
  COMMIT=${SERVER_COMMIT:-}
  if [ -z "$COMMIT" ]; then
    COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
      COMMIT="$COMMIT + uncommitted changes in src/"
    fi
  fi
  {
    echo "## Fault injection"
    echo
    echo "- Date: $STARTED; \`bash bench/faults.sh\` (full form); server built from commit $COMMIT"
    echo "- Server: \`$SERVER\` ($PROFILE, built $(date -u -r "$SERVER" '+%Y-%m-%d %H:%M UTC'))"
    echo "- Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr); load average (1/5/15 min) before the run: $LOADAVG_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Placement: server pinned to CPU ${SERVER_CPU:-any}, load tool and redis-server to CPU ${LOAD_CPU:-any}; Redis $(redis-server --version | grep -o 'v=[0-9.]*')"
    if [ -n "${NOTE:-}" ]; then echo; echo "$NOTE"; fi
    echo
    cat "$WORK/table.md"
  } >"$WORK/section.md"
  python3 - "$OUT" "$WORK/section.md" <<'PY'
import sys
out, section = sys.argv[1], open(sys.argv[2]).read()
try:
    text = open(out).read()
except FileNotFoundError:
    text = ""
start = text.find("\n## Fault injection\n")
if start >= 0:
    end = text.find("\n## ", start + 1)
    rest = text[end:] if end >= 0 else "\n"
    text = text[:start] + "\n" + section + rest
else:
    text = text.rstrip("\n") + "\n\n" + section
open(out, "w").write(text)
PY
  echo "faults: wrote the section \"Fault injection\" of $OUT" >&2
fi

if [ "$STATUS" = 0 ]; then
  echo "bench faults: all rows passed (logs in $WORK)" >&2
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
else
  echo "bench faults: FAILED (status $STATUS); server logs, configs and rows in $WORK" >&2
fi
exit "$STATUS"
