#!/usr/bin/env bash
# A CPU PyTorch environment for tests and benches that compare Hardy with PyTorch code
# (torchattacks' AutoAttack attacks on a model converted with onnx2torch, see
# scripts/autoattack_reference.py). Prints the directory to put on PYTHONPATH, and nothing
# else on stdout; progress goes to stderr.
#
#   dir=$(scripts/torch-env.sh) && PYTHONPATH="$dir" python3 scripts/autoattack_reference.py ...
#
# Everything comes from PyPI with pip, installed once (`pip install --no-deps --target`) into
# ${HARDY_CACHE_DIR:-<user cache dir>/hardy}/torch-cpu-<versions>-<python tag>, the cache root
# that engine::provision::cache_root() uses, and reused while its `.complete` marker is there.
# Idempotent and safe to run from parallel tests (one flock around the install).
#
# Why not plain `pip install torch`: PyPI's Linux x86_64 torch wheel is the CUDA build, and its
# dependencies pull about 3.2 GB of nvidia-* and triton wheels that a CPU run never calls; PyPI
# has no CPU-only torch for Linux x86_64 (the CPU wheels live on another index this machine
# does not reach). Installed with --no-deps, `import torch` fails because libtorch*.so name
# libcudart.so.12, libcublas.so.12, ... as DT_NEEDED. So this script writes tiny stand-ins for
# exactly those libraries into torch/lib (found through its $ORIGIN rpath): each has the
# library's soname and version node and defines, as a function that returns error 100
# (cudaErrorNoDevice), every symbol the torch libraries import from it, read with readelf.
# The CPU code paths never call them; torch.cuda.is_available() is False. The result is one
# 900 MB download (1.7 GB on disk) instead of 4.1 GB (5.5 GB on disk).
# Needs: python3 (3.10+) with pip, and on Linux x86_64 also cc and readelf (binutils).
# HARDY_PYTHON picks the interpreter, as engine::provision does.
set -euo pipefail

TORCH_VERSION=2.9.0
# Pinned, all installed without dependency resolution: torch's own runtime deps, onnx2torch's
# (onnx, torchvision, numpy) and torchattacks' imports (scipy; tqdm and requests are optional).
PACKAGES=(
  "torch==${TORCH_VERSION}"
  "torchvision==0.24.0"
  "torchattacks==3.5.1"
  "onnx2torch==1.5.15"
  "onnx==1.23.2"
  "protobuf==7.36.2"
  "ml_dtypes==0.7.0"
  "numpy==2.4.6"
  "scipy==1.17.1"
  "pillow==13.0.0"
  "filelock==4.3.2"
  "typing_extensions==4.16.0"
  "sympy==1.14.0"
  "mpmath==1.3.0"
  "networkx==3.6.1"
  "jinja2==3.1.6"
  "markupsafe==3.0.4"
  "fsspec==2026.9.0"
)

python=${HARDY_PYTHON:-python3}

# shellcheck source=scripts/cache-root.sh
source "$(dirname "${BASH_SOURCE[0]}")/cache-root.sh"
root=$(hardy_cache_root)

pytag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
# The directory name changes with any pin, so an old environment is never reused by mistake.
pins_hash=$(printf '%s\n' "${PACKAGES[@]}" | cksum | cut -d' ' -f1)
dir=$root/torch-cpu-${TORCH_VERSION}-${pytag}-${pins_hash}
marker=$dir/.complete

check() {
  PYTHONPATH="$1" "$python" - <<'PY'
import torch, torchattacks, onnx2torch, onnx, numpy
torch.set_num_threads(1)
x = torch.linspace(-1, 1, 12).reshape(3, 4).requires_grad_()
(x.relu() ** 2).sum().backward()
assert torch.allclose(x.grad, 2 * x.detach().relu()), "autograd check failed"
assert not torch.cuda.is_available()
PY
}

hardy_cache_claim "$dir" || exit 0

work=$dir.partial
rm -rf "$work" "$dir"
echo "torch-env: installing ${PACKAGES[*]} into $dir (about 900 MB download)" >&2
start=$(date +%s)
if ! "$python" -m pip install --quiet --no-deps --no-cache-dir --only-binary=:all: \
  --disable-pip-version-check --root-user-action=ignore --target "$work" "${PACKAGES[@]}" >&2; then
  echo "torch-env: pip could not install ${PACKAGES[0]} and the rest from PyPI into $work" \
    "(offline, or PyPI unreachable?); nothing was kept" >&2
  rm -rf "$work"
  exit 1
fi

lib=$work/torch/lib
if [ "$(uname -s)" = Linux ] && [ -e "$lib/libtorch_cuda.so" ]; then
  echo "torch-env: writing stand-ins for the CUDA libraries torch links to" >&2
  "$python" - "$work" <<'PY'
"""Writes a stand-in for each CUDA library that torch/lib's libraries need but that is not
installed: same soname, same version nodes, and every imported symbol defined as a function
returning 100 (cudaErrorNoDevice); *GetErrorString/*GetErrorName return a static string."""
import collections, os, re, subprocess, sys, tempfile

site = sys.argv[1]
lib = os.path.join(site, "torch", "lib")
# libcaffe2_nvrtc and libtorch_cuda_linalg are dlopen'ed only when CUDA is used.
lazy = {"libcaffe2_nvrtc.so", "libtorch_cuda_linalg.so"}
objs = [os.path.join(lib, f) for f in os.listdir(lib) if f.endswith(".so") and f not in lazy]
# torch._C and the extensions of packages built against torch (torchvision) import from them too.
for package in ("torch", "torchvision"):
    top = os.path.join(site, package)
    if os.path.isdir(top):
        objs += [os.path.join(top, f) for f in os.listdir(top) if f.endswith(".so")]
# Libraries a wheel bundles (torch/lib, auditwheel's <package>.libs) are not missing.
present = set(os.listdir(lib))
for entry in os.listdir(site):
    if entry.endswith(".libs"):
        present.update(os.listdir(os.path.join(site, entry)))


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


needed, version_file, undefined, defined = set(), {}, set(), set()
for obj in objs:
    needed.update(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", readelf("-d", obj)))
    current = None
    for line in readelf("-V", obj).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Name: (\S+)\s+Flags", line)
        if m and current:
            version_file[m.group(1)] = current
    for line in readelf("--dyn-syms", obj).splitlines():
        p = line.split()
        if len(p) < 8 or not p[0].endswith(":"):
            continue
        name, _, version = p[7].partition("@")
        version = version.lstrip("@")
        if p[6] == "UND":
            undefined.add((name, version, p[3]))
        else:
            defined.add(name)

# The CUDA libraries the loader would fail on: named by torch's libraries, not shipped in torch/lib.
missing = sorted(n for n in needed if n not in present and re.match(r"lib(cu|nv|nccl)", n))
# Unversioned imports (cuFile*, cusparseLt*, nccl*) go to the library with the longest matching
# prefix; versioned ones to the library that defines their version node.
prefixes = {"cuFile": "libcufile", "cusparseLt": "libcusparseLt", "cusparse": "libcusparse",
            "nccl": "libnccl", "nvshmem": "libnvshmem", "curand": "libcurand", "cufft": "libcufft",
            "cupti": "libcupti", "cudnn": "libcudnn", "cublasLt": "libcublasLt", "cublas": "libcublas",
            "cuda": "libcudart"}
symbols = collections.defaultdict(lambda: collections.defaultdict(set))  # soname -> version -> names
for name, version, kind in undefined:
    if not name or name in defined:
        continue
    if version:
        owner = version_file.get(version)
        if owner in missing:
            symbols[owner][version].add(name)
    elif kind == "FUNC":
        matches = [p for p in prefixes if name.startswith(p)]
        if matches:
            stem = prefixes[max(matches, key=len)]
            owner = next((so for so in missing if so.split(".so")[0] == stem), None)
            if owner:
                symbols[owner][""].add(name)

with tempfile.TemporaryDirectory() as tmp:
    for so in missing:
        by_version = symbols.get(so, {})
        names = sorted(set().union(*by_version.values())) if by_version else []
        source = ['static const char stub_message[] = "CUDA is not installed (Hardy CPU stand-in)";']
        for name in names:
            if name.endswith(("GetErrorString", "GetErrorName")):
                source.append(f"const char *{name}(void) {{ return stub_message; }}")
            else:
                source.append(f"int {name}(void) {{ return 100; }}")
        source.append("int hardy_cuda_stand_in(void) { return 100; }")
        # Version nodes as imported; unversioned imports (which bind to any default version)
        # and the marker symbol go into a node named after the library.
        nodes = {v: set(m) for v, m in by_version.items() if v}
        nodes.setdefault(next(iter(nodes), so), set()).update(by_version.get("", set()) | {"hardy_cuda_stand_in"})
        script = [f"{v} {{ global: {' '.join(m + ';' for m in sorted(ms))} }};" for v, ms in nodes.items()]
        c_path, map_path = os.path.join(tmp, so + ".c"), os.path.join(tmp, so + ".map")
        with open(c_path, "w") as f:
            f.write("\n".join(source) + "\n")
        with open(map_path, "w") as f:
            f.write("\n".join(script) + "\n")
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O1", "-o", os.path.join(lib, so), f"-Wl,-soname,{so}",
             f"-Wl,--version-script={map_path}", c_path],
            check=True,
        )
        print(f"torch-env: stand-in {so}: {len(names)} symbols", file=sys.stderr)
PY
fi

check "$work" >&2
mv "$work" "$dir"
printf '%s\n' "${PACKAGES[@]}" >"$marker"
echo "torch-env: ready in $(($(date +%s) - start)) s: $(du -sh "$dir" | cut -f1)" >&2
echo "$dir"
