# Shared by the xc2 serve tests: start `xc2 serve` on the demo model on a free loopback port, wait for
# /health, stop it with SIGTERM and check it exits 0. Sourced; expects XC2 and SRC to be set.
set -euo pipefail

MODEL="$SRC/models/xc2-shapes"
WORK=$(mktemp -d /tmp/xc2-serve-test.XXXXXX)
SERVER_PID=""
PORT=""

fail() {
  echo "FAIL: $*" >&2
  if [[ -f "$WORK/server.err" ]]; then
    echo "--- server stderr (last 20 lines) ---" >&2
    tail -n 20 "$WORK/server.err" >&2
  fi
  exit 1
}

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_server [extra xc2 serve options...]: --port 0 (a free port), read back from the server's stderr.
start_server() {
  # glibc's malloc keeps freed large blocks per arena (one arena per thread, up to 8 per core) and raises its
  # mmap threshold as they come and go; pinned down here, the server's RSS follows its live memory, which the
  # malformed-request rounds of curl_test.sh check.
  MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 \
    "$XC2" serve --model "$MODEL" --device cpu --threads 2 --port 0 "$@" >"$WORK/server.out" 2>"$WORK/server.err" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    PORT=$(grep -o 'http://127.0.0.1:[0-9]*' "$WORK/server.err" 2>/dev/null | head -n1 | sed 's/.*://') || true
    if [[ -n "$PORT" ]] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      BASE="http://127.0.0.1:$PORT"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || fail "xc2 serve exited before it was ready"
    sleep 0.1
  done
  fail "xc2 serve did not become ready"
}

# stop_server: SIGTERM, then the exit status must be 0.
stop_server() {
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=""
  [[ $rc -eq 0 ]] || fail "xc2 serve exited with $rc after SIGTERM"
}

# metric NAME: the value of an unlabelled metric in /metrics.
metric() {
  curl -sf "$BASE/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

# greedy_answer IMAGE QUESTION: what `xc2 chat --greedy` answers (IMAGE may be empty).
greedy_answer() {
  if [[ -n "$1" ]]; then
    "$XC2" chat --model "$MODEL" --device cpu --threads 2 -q --greedy --image "$1" "$2"
  else
    "$XC2" chat --model "$MODEL" --device cpu --threads 2 -q --greedy "$2"
  fi
}
