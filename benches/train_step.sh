#!/usr/bin/env bash
# Training-step time of the Fashion-MNIST EfficientNet on burn's two backends (flex, pure Rust;
# tch, LibTorch 2.9.0) against PyTorch eager on the same network, batch and optimiser, measured
# in one run; prints the three and the ratios to PyTorch.
# PyTorch 2.9.0 comes from PyPI into Hardy's cache through scripts/torch-env.sh (the CPU build,
# 900 MB download): its Python package times PyTorch eager, and its libtorch is what the bench
# links for tch (scripts/with-libtorch.sh).
# Usage: benches/train_step.sh [BATCH ...]   (default: 64 256)
set -euo pipefail
cd "$(dirname "$0")/.."
torch_env=$(scripts/torch-env.sh)
export LIBTORCH=$torch_env/torch
bench=$(cargo build --release --bench train_step --features tch --message-format=json --quiet |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train_step" and m.get("executable"):
        print(m["executable"])')
batches=("$@"); [ ${#batches[@]} -eq 0 ] && batches=(64 256)
for b in "${batches[@]}"; do
  flex=$("$bench" "$b" 10 flex)
  tch=$("$bench" "$b" 10 tch)
  torch=$(echo "$flex" | PYTHONPATH=$torch_env python3 benches/train_step.py)
  python3 - "$flex" "$tch" "$torch" <<'PY'
import json, sys
flex, tch, torch = (json.loads(a) for a in sys.argv[1:])
print(f"batch {flex['batch']}, {flex['params']} parameters, {flex['resolution']}x{flex['resolution']}x1:")
for r in (flex, tch, torch):
    print(f"  {r['framework']:<48} {r['median_ms']:8.1f} ms/step  {r['median_ms'] / torch['median_ms']:5.2f}x PyTorch")
PY
done
