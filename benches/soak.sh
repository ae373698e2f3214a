#!/usr/bin/env bash
# Soak: `hardy serve` (release build) on the shipped models/ under a saturating mix of good,
# malformed and hung-up requests for 10 minutes, its RSS sampled every second; or, with
# --flood, maximal request bodies from 32 clients for 60 s. The load is benches/soak.py
# (Python 3 standard library only); this script builds, starts the server on a free loopback
# port, waits until it is ready, runs the load, then stops the server with SIGTERM and checks
# that it exits 0.
#
# Usage: benches/soak.sh [soak.py options]        e.g. --duration 600 --clients 16
#        benches/soak.sh --flood [--duration 60 --clients 32]
# Environment:
#   SERVE_FLAGS  extra flags for `hardy serve` (also reported by soak.py as the budgets), e.g.
#                SERVE_FLAGS="--max-inflight-body-bytes 536870912 --max-queue-images 2048"
#   HARDY_BIN    the binary to run instead of target/release/hardy (then nothing is built)
#   SOAK_MODEL   the model to load (default fashion-mnist-effnet)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HARDY_BIN:-target/release/hardy}
if [ -z "${HARDY_BIN:-}" ]; then
  cargo build --release --quiet --bin hardy
fi
model=${SOAK_MODEL:-fashion-mnist-effnet}
logs=$(mktemp -d "${TMPDIR:-/tmp}/hardy-soak.XXXXXX")
read -r -a flags <<< "${SERVE_FLAGS:-}"

"$bin" serve --host 127.0.0.1 --port 0 --model-repository models "${flags[@]}" \
  >"$logs/stdout" 2>"$logs/stderr" &
pid=$!
cleanup() { kill -KILL "$pid" 2>/dev/null || true; }
trap cleanup EXIT
echo "hardy serve: pid $pid, flags: ${SERVE_FLAGS:-(none)}; logs in $logs"

fail() {
  echo "soak.sh: $*" >&2
  tail -n 20 "$logs/stderr" >&2 || true
  exit 1
}

# The port, from the one line the server prints on stdout (at most 120 s).
addr=
for _ in $(seq 1200); do
  addr=$(sed -n 's|^hardy serve: listening on http://\([^ ]*\).*|\1|p' "$logs/stdout" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || fail "the server exited before listening (bad flag in SERVE_FLAGS?)"
  sleep 0.1
done
[ -n "$addr" ] || fail "no listening line in 120 s"

# Ready once every model has loaded (at most 300 s).
ready=
for _ in $(seq 3000); do
  if curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr/v2/health/ready" | grep -q '^200$'; then
    ready=1
    break
  fi
  kill -0 "$pid" 2>/dev/null || fail "the server exited while loading"
  sleep 0.1
done
[ -n "$ready" ] || fail "not ready in 300 s"

rc=0
python3 benches/soak.py --url "http://$addr" --pid "$pid" --model "$model" \
  --server-flags "${SERVE_FLAGS:-}" "$@" || rc=$?

# SIGTERM: the server drains and must exit 0 (its --shutdown-timeout is 30 s by default).
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "soak.sh: the server did not exit within 60 s of SIGTERM; killed" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rc=1
  fi
fi
status=0
wait "$pid" || status=$?
trap - EXIT
if [ "$status" -ne 0 ]; then
  echo "soak.sh: the server exited with status $status" >&2
  tail -n 20 "$logs/stderr" >&2
  [ "$rc" -ne 0 ] || rc=1
else
  echo "hardy serve: exited 0 after SIGTERM"
fi
exit "$rc"
