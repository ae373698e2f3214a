#!/usr/bin/env bash
# One attack step (forward + backward through Hardy's gradient graph, ONNX Runtime) against a
# forward pass of the same model and batch, and against PyTorch CPU autograd on the same
# network (converted by onnx2torch), same batch and thread count; prints the table and the
# ratios. Models: the shipped fashion-mnist-effnet and fashion-mnist-resnet-meal, and
# EfficientNet-Lite0 imported into target/attack-step by `hardy import lite0`.
# PyTorch, onnx and onnx2torch come from PyPI into .cache/torch-venv (the venv of
# benches/train_step.sh). Usage: benches/attack_step.sh [attack_step flags], e.g.
#   benches/attack_step.sh --models effnet --reps 21
#   benches/attack_step.sh --profile target/attack-step/profile   (ORT profile, no torch)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/torch-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, onnx, onnx2torch" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==2.9.0" "onnx==1.23.2" "onnx2torch==1.5.15"
fi
cargo build --release --bench attack_step --quiet
bench=$(ls -t target/release/deps/attack_step-* | grep -v '\.d$' | head -1)
if [[ " $* " == *" --profile "* ]]; then
  exec "$bench" "$@"
fi
lines=$("$bench" "$@")
echo "$lines" | "$venv/bin/python" benches/attack_step.py
