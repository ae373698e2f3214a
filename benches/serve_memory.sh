#!/usr/bin/env bash
# Serving memory: `hardy serve`'s resident memory per model and max_batch_size, idle and under
# load, through benches/peers.sh (same servers, bodies, load generator and RSS sampling). For
# each batch size it serves each model with `--max-batch-size B`, measures the Hardy rows at
# c=64 (every connection sending one image at a time, so batches fill up to B), and prints one
# table: RSS idle (after the server's warm-up with a full batch), RSS peak under the load, their
# ratio, and req/s. See benches/README.md#serving-memory.
#
#   benches/serve_memory.sh                                  # cargo build --release, all sizes
#   HARDY_BIN=target/release/hardy MEMORY_BATCHES="8 32" benches/serve_memory.sh
#
# Environment: HARDY_BIN, MEMORY_BATCHES (default "1 2 4 8 16 32"), MEMORY_CONCURRENCY (64),
# PEERS_MODELS, PEERS_SECONDS (default here 8), PEERS_WARMUP (2); the JSON of each batch size
# goes to target/bench-memory-B.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${HARDY_BIN:-}" ]; then
  cargo build --release --quiet --bin hardy
  export HARDY_BIN=$PWD/target/release/hardy
fi
read -r -a batches <<<"${MEMORY_BATCHES:-1 2 4 8 16 32}"
files=()
for b in "${batches[@]}"; do
  out=target/bench-memory-$b.json
  HARDY_FLAGS="--max-batch-size $b" PEERS_SYSTEMS="hardy-v1 hardy-v2" \
    PEERS_CONCURRENCY=${MEMORY_CONCURRENCY:-64} PEERS_REPS=1 PEERS_SECONDS=${PEERS_SECONDS:-8} \
    PEERS_OUT=$out benches/peers.sh >/dev/null
  files+=("$b=$out")
done
py=$(scripts/peers-env.sh)/bin/python
"$py" - "${files[@]}" <<'PY'
import json, sys
rows = []
for arg in sys.argv[1:]:
    b, path = arg.split("=", 1)
    d = json.load(open(path))
    for model, m in d["models"].items():
        for system, f in m["systems"].items():
            (c, fig), = f["concurrency"].items()
            rows.append((model, int(b), system, f["rss_idle_mb"], f["rss_peak_mb"], fig["req_per_s"], c))
print("| model | max_batch_size | system | RSS idle MB | RSS peak MB | peak / idle | req/s |")
print("|---|---|---|---|---|---|---|")
for model, b, system, idle, peak, rps, c in sorted(rows):
    print(f"| {model} | {b} | {system} | {idle:.0f} | {peak:.0f} | {peak / idle:.2f}x | {rps:,.0f} |")
print(f"\nLoad: c={rows[0][6]}, one image per request. RSS: the server process; idle after the warm-up.")
PY
