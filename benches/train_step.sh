#!/usr/bin/env bash
# Training-step time of the Fashion-MNIST EfficientNet in burn (CPU) against PyTorch eager on
# the same network, batch and optimiser, measured in one run; prints both and the ratio.
# PyTorch comes from PyPI into .cache/torch-venv (about 3 GB with its CUDA libraries; the
# CPU path is what is timed). Usage: benches/train_step.sh [BATCH ...]   (default: 64 256)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/torch-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==2.9.0"
fi
cargo build --release --bench train_step --quiet
bench=$(ls -t target/release/deps/train_step-* | grep -v '\.d$' | head -1)
batches=("$@"); [ ${#batches[@]} -eq 0 ] && batches=(64 256)
for b in "${batches[@]}"; do
  rust=$("$bench" "$b" 10)
  torch=$(echo "$rust" | "$venv/bin/python" benches/train_step.py)
  python3 - "$rust" "$torch" <<'PY'
import json, sys
r, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"batch {r['batch']}, {r['params']} parameters, {r['resolution']}x{r['resolution']}x1:")
print(f"  {r['framework']:<45} {r['median_ms']:8.1f} ms/step")
print(f"  {t['framework']:<45} {t['median_ms']:8.1f} ms/step")
print(f"  burn / PyTorch: {r['median_ms'] / t['median_ms']:.2f}x")
PY
done
