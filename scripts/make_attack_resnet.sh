#!/usr/bin/env bash
# Regenerates eval/tests/data/attack/trainer-resnet-d.onnx with Hardy's trainer (see
# scripts/make_attack_resnet.rs). Run from the repository root.
set -euo pipefail
cp scripts/make_attack_resnet.rs examples/make_attack_resnet.rs
trap 'rm -f examples/make_attack_resnet.rs' EXIT
cargo run --example make_attack_resnet -- "$PWD/eval/tests/data/attack/trainer-resnet-d.onnx"
