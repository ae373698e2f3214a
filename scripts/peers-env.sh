#!/usr/bin/env bash
# The Python serving stacks that benches/peers.sh sets beside `hardy serve`: FastAPI + uvicorn,
# KServe's ModelServer and LitServe, each running ONNX Runtime 1.31.1 (the CPU wheel, the
# version Hardy loads). Prints the virtual environment's directory, and nothing else on
# stdout; progress goes to stderr.
#
#   venv=$(scripts/peers-env.sh) && "$venv/bin/python" benches/peers/fastapi_server.py ...
#
# A virtual environment (`python3 -m venv`, so the servers' console scripts and entry points
# work as users install them), made once with pip from PyPI in
# ${HARDY_CACHE_DIR:-<user cache dir>/hardy}/peers-<python tag>-<hash of the pins>, the cache
# root that engine::provision::cache_root() uses, and reused while its `.complete` marker is
# there. Every top-level package is pinned (PACKAGES), and so is everything they pull in
# (CONSTRAINTS, the set pip resolved for CPython 3.11 on Linux x86_64 when the pins were
# chosen; a constraint only applies where a package is needed, so another Python may add
# an unpinned one). Wheels only, nothing is compiled. Idempotent and safe to run in parallel
# (one flock around the install). 71 wheels, a 100 MB download, 520 MB on disk (35 s here).
# Needs: python3 (3.10+) with the venv module (Debian: python3-venv). HARDY_PYTHON picks the
# interpreter, as engine::provision does.
set -euo pipefail

ORT_VERSION=1.31.1
PACKAGES=(
  "onnxruntime==${ORT_VERSION}"
  "numpy==2.4.6"
  "pillow==13.0.0"
  "fastapi==0.165.0"
  "uvicorn==0.55.0"
  "uvloop==0.23.0"
  "httptools==0.9.0"
  "python-multipart==0.0.34"
  "kserve==0.21.0"
  "litserve==0.2.19"
)
# What the packages above depend on, as resolved on 2026-12-07.
CONSTRAINTS=(
  "aiohappyeyeballs==2.7.1" "aiohttp==3.14.5" "aiohttp-retry==2.9.1" "aiosignal==1.4.0"
  "annotated-doc==0.0.7" "annotated-types==0.8.0" "anyio==4.16.0" "attrs==26.1.0"
  "certifi==2026.10.19.post1" "cffi==2.1.1" "charset-normalizer==3.5.3" "click==8.5.1"
  "cloudevents==1.13.0" "cryptography==51.0.1" "deprecation==2.1.0" "durationpy==0.12"
  "flatbuffers==25.12.19" "frozenlist==1.8.0" "grpc-interceptor==0.15.4" "grpcio==1.85.4"
  "grpcio-tools==1.81.1" "h11==0.16.0" "httpcore==1.0.9" "httpx==0.29.0" "idna==3.21"
  "kubernetes==37.0.3" "multidict==7.2.1" "oauthlib==4.0.1" "opentelemetry-api==1.45.3"
  "orjson==3.13.0" "packaging==26.4" "pandas==2.3.3" "prometheus-client==0.26.0"
  "propcache==0.5.4" "protobuf==6.33.6" "psutil==5.9.8" "pyasn1==0.6.5" "pycparser==3.12"
  "pydantic==2.14.4" "pydantic-core==2.50.5" "pyjwt==2.15.1" "python-dateutil==2.9.0.post0"
  "python-dotenv==1.2.4" "pytz==2026.6" "pyyaml==6.0.4" "pyzmq==27.3.0" "requests==2.34.2"
  "requests-oauthlib==2.0.0" "setuptools==84.2.1" "six==1.17.0" "starlette==1.10.0"
  "tabulate==0.10.0" "timing-asgi==0.3.2" "typing-extensions==4.16.0"
  "typing-inspection==0.4.5" "tzdata==2026.6" "urllib3==2.8.0" "watchfiles==1.3.0"
  "websocket-client==1.9.2" "websockets==17.4" "yarl==1.25.1"
)

python=${HARDY_PYTHON:-python3}

# shellcheck source=scripts/cache-root.sh
source "$(dirname "${BASH_SOURCE[0]}")/cache-root.sh"
root=$(hardy_cache_root)

pytag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
# The directory name changes with any pin, so an old environment is never reused by mistake.
pins_hash=$(printf '%s\n' "${PACKAGES[@]}" "${CONSTRAINTS[@]}" | cksum | cut -d' ' -f1)
dir=$root/peers-${pytag}-${pins_hash}
marker=$dir/.complete

check() {
  "$1/bin/python" - "$ORT_VERSION" <<'PY'
import sys
import fastapi, kserve, litserve, multipart, numpy, onnxruntime, PIL, uvicorn, uvloop, httptools
assert onnxruntime.__version__ == sys.argv[1], onnxruntime.__version__
assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
PY
}

hardy_cache_claim "$dir" || exit 0

# Made in place (a venv's scripts name their own absolute path, so it cannot be moved); the
# marker is written last, and an unfinished directory is removed before the next try.
rm -rf "$dir"
echo "peers-env: installing ${PACKAGES[*]} into $dir (about 100 MB download)" >&2
start=$(date +%s)
if ! "$python" -m venv "$dir" >&2; then
  echo "peers-env: '$python -m venv' failed (Debian: apt-get install python3-venv)" >&2
  rm -rf "$dir"
  exit 1
fi
printf '%s\n' "${CONSTRAINTS[@]}" >"$dir/constraints.txt"
if ! "$dir/bin/python" -m pip install --quiet --no-cache-dir --only-binary=:all: \
  --disable-pip-version-check --root-user-action=ignore \
  --constraint "$dir/constraints.txt" "${PACKAGES[@]}" >&2; then
  echo "peers-env: pip could not install ${PACKAGES[*]} from PyPI into $dir" \
    "(offline, or PyPI unreachable?); nothing was kept" >&2
  rm -rf "$dir"
  exit 1
fi

if ! check "$dir" >&2; then
  echo "peers-env: the environment in $dir does not import; nothing was kept" >&2
  rm -rf "$dir"
  exit 1
fi
printf '%s\n' "${PACKAGES[@]}" >"$marker"
echo "peers-env: ready in $(($(date +%s) - start)) s: $(du -sh "$dir" | cut -f1)" >&2
echo "$dir"
