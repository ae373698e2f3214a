#!/usr/bin/env bash
# Corruption speed, Hardy vs the Python port, per 224x224 image at severity 3, single-threaded.
# Usage: benches/corrupt_speed.sh [PYTHON]   (PYTHON: an interpreter with imagecorruptions-imaug
# 1.1.5 and numba installed; default /work/py-corrupt/bin/python. To make one:
#   python3 -m venv /tmp/py-corrupt && /tmp/py-corrupt/bin/pip install imagecorruptions-imaug==1.1.5 numba)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-/work/py-corrupt/bin/python}
out=$(mktemp -d)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 RAYON_NUM_THREADS=1
"$PY" -W ignore scripts/corruption_speed.py > "$out/python.json"
cargo bench -p hardy-corrupt --bench corrupt_speed -- "$out/python.json"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) cores ($(grep -m1 '^flags' /proc/cpuinfo | grep -ow 'avx2\|avx512f\|avx512vl\|avx512bw' | tr '\n' ' ')present), load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -sr), $("$PY" -c 'import sys; print("Python", sys.version.split()[0])'), $(rustc --version)"
