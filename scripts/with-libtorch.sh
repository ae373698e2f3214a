#!/usr/bin/env bash
# Runs a command with LIBTORCH set to the libtorch that the trainer's `tch` feature links: the
# one inside PyPI's torch==2.9.0 wheel (the version tch 0.22 / burn-tch 0.22 expect), which
# scripts/torch-env.sh installs once into Hardy's cache (a 900 MB download, 1.7 GB on disk,
# shared with the tests that compare against PyTorch). Its CUDA libraries are stand-ins, so
# what is built here trains on the CPU; `--device cuda` needs a libtorch with real CUDA
# libraries at run time (README "Not done yet").
#
#   scripts/with-libtorch.sh cargo build --release --features tch
#   scripts/with-libtorch.sh cargo test -p hardy-trainer --features tch
#
# A LIBTORCH already set (an unpacked libtorch 2.9.0) is kept as it is.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${LIBTORCH:-}" ]; then
  if ! env=$("$here/torch-env.sh"); then
    echo "with-libtorch: the tch feature links LibTorch 2.9.0 from PyPI's torch==2.9.0 wheel," \
      "and scripts/torch-env.sh could not install it (see above: offline, or PyPI unreachable?)." \
      "Run it again with network access, or set LIBTORCH to an unpacked libtorch 2.9.0." >&2
    exit 1
  fi
  export LIBTORCH=$env/torch
fi
exec "$@"
