#!/usr/bin/env bash
# Lays out what goes into /opt/hardy of a runtime image, in DIR/out/:
#   hardy                  the binary (stripped)
#   libonnxruntime*.so*    ONNX Runtime next to the binary, where Hardy looks first
#                          (cpu: PyPI onnxruntime's; cuda: onnxruntime-gpu's, CUDA provider too)
#   lib/                   cuda only: the CUDA 13 and cuDNN 9 runtime libraries ONNX Runtime's
#                          CUDA provider loads, from PyPI's nvidia wheels (LD_LIBRARY_PATH)
#   models/                the repository's models/, the image's default model repository
#   healthcheck            the HEALTHCHECK command (GET /v2/health/ready, bash only)
# The ONNX Runtime wheel is fetched by `hardy setup` into Hardy's cache; the nvidia wheels by
# pip into the same cache, once. Used by docker/build.sh (offline path, binary built on the
# host) and by the Dockerfile's build stage (online path).
# Usage: docker/stage.sh cpu|cuda HARDY_BINARY DIR
set -euo pipefail
flavor=${1:?cpu or cuda}
bin=${2:?the hardy binary}
dir=${3:?output directory}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$flavor" in
  cpu) setup=(setup) ;;
  cuda) setup=(setup --gpu) ;;
  *) echo "docker/stage.sh: flavour must be cpu or cuda, not $flavor" >&2; exit 2 ;;
esac
# The CUDA 13 / cuDNN 9 libraries onnxruntime-gpu 1.31.1 asks for (its [cuda,cudnn] extras;
# cuDNN pulls cuBLAS and nvJitLink), pinned to the versions this image was tested with.
nvidia_wheels=(
  nvidia-cuda-runtime==13.5.37
  nvidia-cuda-nvrtc==13.5.37
  nvidia-cufft==12.5.0.14
  nvidia-curand==10.4.5.25
  nvidia-cudnn-cu13==9.28.1.4
  nvidia-cublas==13.10.0.20
  nvidia-nvjitlink==13.5.37
)
source "$root/scripts/cache-root.sh"
cache=$(hardy_cache_root)

out=$dir/out
rm -rf "$out"
mkdir -p "$out/models"
cp "$bin" "$out/hardy"
strip --strip-unneeded "$out/hardy" 2>/dev/null || true

# ONNX Runtime: `hardy setup` fetches the pinned wheel (a no-op when cached) and prints the
# library's path.
lib=$(env -u HARDY_OFFLINE "$bin" "${setup[@]}" | sed -n 's/^ONNX Runtime [^:]*: //p')
[ -f "$lib" ] || { echo "docker/stage.sh: hardy setup gave no library" >&2; exit 1; }
libdir=$(dirname "$lib")
cp "$libdir"/libonnxruntime.so.* "$libdir"/libonnxruntime_providers_shared.so "$out/"
if [ "$flavor" = cuda ]; then
  cp "$libdir"/libonnxruntime_providers_cuda.so "$out/"
  wheels=$cache/docker-nvidia-wheels
  if ! [ -f "$wheels/.complete" ] || [ "$(cat "$wheels/.complete")" != "${nvidia_wheels[*]}" ]; then
    rm -rf "$wheels"
    mkdir -p "$wheels"
    echo "docker/stage.sh: fetching the CUDA and cuDNN wheels from PyPI into $wheels (about 1.3 GB)" >&2
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
      -d "$wheels" "${nvidia_wheels[@]}"
    echo "${nvidia_wheels[*]}" >"$wheels/.complete"
  fi
  mkdir -p "$out/lib"
  # Each wheel keeps its libraries under nvidia/<part>/lib/; the runtime needs only the .so files.
  python3 - "$wheels" "$out/lib" <<'PY'
import glob, os, re, shutil, sys, zipfile
wheels, dest = sys.argv[1], sys.argv[2]
for whl in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if re.fullmatch(r"nvidia/[^/]+/lib/[^/]+\.so(\.[0-9]+)*", name):
                target = os.path.join(dest, os.path.basename(name))
                with z.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
PY
fi

# The shipped models, the image's default repository.
for m in "$root"/models/*/; do
  cp -r "$m" "$out/models/"
done
cp "$root/docker/healthcheck" "$out/healthcheck"
chmod 0755 "$out/hardy" "$out/healthcheck"
du -sh "$out" | sed 's/^/docker\/stage.sh: /' >&2
